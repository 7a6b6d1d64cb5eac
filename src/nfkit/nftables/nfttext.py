"""nft's native syntax in: the text of /etc/nftables.conf -> libnftables JSON commands.

This module owns reading nft's text (``nft -f FILE``) into the command form of
libnftables JSON ({"nftables": [{"add": {...}}, {"flush": {"ruleset": null}}, ...]})
that `jsonfmt` reads, so that the model, the encoding and the transaction are
shared with the JSON reader.  It resolves what only the text has: ``include``
(files and globs, searched as nft 1.0.6 searches them), ``define``/``$variables``,
block scopes, priorities spelt as names, times spelt with units.  It knows no
netlink and no kernel: values stay symbolic (``ssh``, ``established``) for the
encoder to resolve, as nft's JSON parser leaves them.

The grammar (nft.lark, LALR) fixes the structure; rules and properties are read
word by word here, the way nft's parser decides by keyword.  Every error is
nft's form: ``file:line:col-col: Error: cause``, the line, a caret line.
"""

from __future__ import annotations

import glob
import os
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from typing import Any, NamedTuple

from nfkit.errors import InputError, NfkitError
from nfkit.nftables.expressions import EXTHDR_FIELDS
from nfkit.nftables.jsonfmt import looks_like_json  # noqa: F401  (nfttext's, before jsonfmt had it)
from nfkit.nftables.model import FAMILIES, Rule
from nfkit.nftables.shapes import IPV4_RE
from nfkit.nftables.types import CT, META, PAYLOAD, T

DEFAULT_INCLUDE_PATH = "/etc"  # nft 1.0.6's built-in include path, searched before -I ones
MAX_INCLUDE_DEPTH = 16


# ---- source positions and errors -------------------------------------------------

@dataclass(slots=True)
class Source:
    """One file (or stdin) read: its name as given and its lines, for error display."""

    name: str
    text: str
    parent: tuple[Source, int, int, int] | None = None  # (includer, line, col, end col)
    appended_newline: bool = False  # the file's last line had none

    def line(self, n: int) -> str:
        lines = self.text.split("\n")
        return lines[n - 1] if 0 < n <= len(lines) else ""


@dataclass(slots=True)
class Tok:
    """One token of an item list: kind (the grammar's terminal name), text, position."""

    kind: str
    text: str
    src: Source
    line: int
    col: int
    end: int  # last column (inclusive)


@dataclass(slots=True)
class Group:
    """A brace group of items (an anonymous set or map, elements), split at commas."""

    elems: list[list[Any]]
    src: Source
    line: int
    col: int
    end: int
    text: str = "{"
    kind: str = "group"


Item = Tok | Group


def located(src: Source, line: int, col: int, end: int, msg: str) -> InputError:
    """An InputError in nft's form: location, cause, the line, carets under the part."""
    head = ""
    p = src.parent
    first = True
    while p is not None:
        inc, pl, pc, pe = p
        head += f"{'In file included from' if first else '                 from'} " \
                f"{inc.name}:{pl}:{pc}-{pe}:\n"
        first = False
        p = inc.parent
    end = max(end, col)
    text = src.line(line)
    # Tabs kept under tabs (as nft does), so the carets line up however tabs show.
    pad = "".join("\t" if ch == "\t" else " " for ch in text[:col - 1])
    return InputError(f"{head}{src.name}:{line}:{col}-{end}: Error: {msg}\n{text}\n"
                      f"{pad}{' ' * (col - 1 - len(pad))}{'^' * (end - col + 1)}")


def at(it: Item, msg: str) -> InputError:
    return located(it.src, it.line, it.col, it.end, msg)


# ---- the grammar --------------------------------------------------------------------

def _parser(line_lexer: bool = True) -> Any:
    """The LALR parser of nft.lark; with ``line_lexer``, a chain's simple rule lines
    reach the parser as one RULELINE token each (see `_LineLexer`)."""
    return _make_parser(line_lexer)


@lru_cache(maxsize=2)
def _make_parser(line_lexer: bool) -> Any:
    from lark import Lark

    from nfkit.nftables.lalrtables import OPTIONS, grammar_text, shipped

    grammar = grammar_text()
    # the tables shipped with nfkit when they are this grammar's (see lalrtables)
    parser = shipped(grammar) or Lark(grammar, **OPTIONS)
    if line_lexer:
        _install_line_lexer(parser)
    return parser


# ---- the line lexer -------------------------------------------------------------------
#
# Most of a big file is rule lines, and most of the time lark spends is per token
# (lexing, then one parser step each).  Where the parser expects a chain's line,
# a line without braces, comments, continuations or includes is handed over
# whole as one RULELINE token; its tokens are cut by one regex made of the same
# terminals (nft.lark's, in lark's own order of precedence), so the items are
# those lark would have made.

ITEM_TERMINALS = ("WORD", "NUMBER", "NUMWORD", "STRING", "VAR", "SETREF", "RAWPAYLOAD", "IP4",
                  "IP6", "MAC", "CLASSID", "OP")
# A line may hold brace groups (anonymous sets) closed on it, not nested; a set's
# "elements = { ... }" is the grammar's own (elements_line).
_LINE_BODY = (r'(?!(?:include|define|redefine|undefine)\b)(?!elements\b[^\n{}]*\{)'
              r'(?:[^\n{}#;\\"\s]|"[^"\n]*")'
              r'(?:[^\n{}#;\\"]|"[^"\n]*"|\{(?:[^\n{}#;\\"]|"[^"\n]*")*\})*?')
_RULE_LINE = re.compile(rf'([ \t]*)({_LINE_BODY})[ \t]*(?=[\n;}}#])')
# The simple lines that follow one, each where _RULE_LINE would match it (the same
# characters, read greedily: a line ends at the same terminator), in one match.
# Written as "plain (special plain)*" (a string or a brace group is the special part,
# told apart by its first character), so every line has one reading and a greedy match
# never backtracks far.  No possessive quantifiers: Python 3.11.2 (Debian 12's) matches
# them wrongly here (an empty line handed to the parser), which 3.11.7 does not.
_PLAIN = r'[^\n{}#;\\"]*'
_MORE_LINES = re.compile(r'(?:\n[ \t]*(?!(?:include|define|redefine|undefine)\b)'
                         r'(?!elements\b[^\n{}]*\{)'
                         rf'(?=[^{{}}#;\\\s]){_PLAIN}(?:(?:"[^"\n]*"'
                         rf'|\{{{_PLAIN}(?:"[^"\n]*"{_PLAIN})*\}}){_PLAIN})*(?=[\n;}}#]))*')


# Where a line of _MORE_LINES cannot start (a blank line, a keyword's), for `_run_end`.
_NO_MORE_LINE = re.compile(r'\n[ \t]*(?![ \t])(?:\s|(?:include|define|redefine|undefine|elements)\b)')
_SPECIAL = '{}#;\\"'


def _run_end(text: str, pos: int, nexts: list[int]) -> int:
    """Where ``_MORE_LINES.match(text, pos)`` ends, most of the way without it: the
    lines before the first that holds one of `_SPECIAL` or starts as `_NO_MORE_LINE`
    are each one of its lines, found by str.find (``nexts``: each special character's
    next place seen so far, kept by the caller across runs) and one search of line
    starts; the regex reads on from that line (~8 instead of ~25 ms for 80,000 lines)."""
    if text[pos:pos + 1] == "\n":
        n = len(text)
        for k, ch in enumerate(_SPECIAL):
            if nexts[k] < pos:
                i = text.find(ch, pos)
                nexts[k] = n if i < 0 else i
        stop = min(nexts)
        blank = _NO_MORE_LINE.search(text, pos, stop)
        if blank is not None:
            stop = blank.start()
        pos = text.rfind("\n", pos, stop + 1)  # that line's start
    return _MORE_LINES.match(text, pos).end()  # type: ignore[union-attr]  # matches ""


def _install_line_lexer(parser: Any) -> None:
    from lark.lexer import ContextualLexer

    frontend = parser.parser
    lexer = getattr(frontend, "lexer", None)
    table = getattr(getattr(frontend, "parser", None), "_parse_table", None)
    if type(lexer) is not ContextualLexer or table is None:
        return  # another lark: every token goes through lark (slower, same result)
    states = frozenset(s for s, acc in table.states.items()
                       if "RULELINE" in acc and "CHAIN" not in acc)
    terms = sorted((t for t in parser.terminals if t.name in ITEM_TERMINALS),
                   key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name))
    alternatives = [(t.name, t.pattern.to_regexp()) for t in terms]
    scanner = re.compile("|".join(f"(?P<{n}>{rx})" for n, rx in alternatives)
                         + r"|(?P<_WS>[ \t\f]+)")
    frontend.lexer = _LineLexer(lexer, states, scanner, alternatives)


def _split_run(run: Any, fast: Any, src: Source, bulk: Any = None) -> Iterator[Any]:
    """A RULELINE run of several lines -> one `line` tree per line, positions kept;
    a line ``fast(body, line, col, src)`` takes (returns True) makes none, nor do
    the lines ``bulk(text, pos, line, col, src)`` takes at once (it returns how far
    it read and how many lines, or None)."""
    from lark import Token, Tree

    text = str(run)
    line, col = run.line, run.column
    pos, n = 0, len(text)
    while True:
        if bulk is not None:
            got = bulk(text, pos, line, col, src)
            if got is not None:
                pos, k = got
                line += k
                col = 1
                if pos > n or (pos == n and text[n - 1:] != "\n"):
                    return
                continue
        nl = text.find("\n", pos)
        seg = text[pos:nl] if nl >= 0 else text[pos:]
        body = seg.lstrip(" \t\f")
        col += len(seg) - len(body)
        body = body.rstrip(" \t\f")
        if fast is None or not fast(body, line, col, src):
            yield Tree("line", [Token("RULELINE", body, None, line, col, line, col + len(body))])
        if nl < 0:
            return
        pos = nl + 1
        line += 1
        col = 1


class _LineLexer:
    """lark's contextual lexer, with whole rule lines where the parser expects one."""

    def __init__(self, inner: Any, line_states: frozenset[int], scanner: re.Pattern[str],
                 alternatives: list[tuple[str, str]]) -> None:
        self.inner = inner
        self.alternatives = alternatives
        self.lexers = inner.lexers
        self.line_states = line_states
        self.scanner = scanner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def lex(self, lexer_state: Any, parser_state: Any) -> Any:
        from lark.exceptions import UnexpectedCharacters, UnexpectedToken
        from lark.lexer import Token

        text = lexer_state.text.text
        ctr = lexer_state.line_ctr
        match = _RULE_LINE.match
        states = self.line_states
        nexts = [-1] * len(_SPECIAL)
        try:
            while True:
                if parser_state.position in states:
                    m = match(text, ctr.char_pos)
                    if m is not None:
                        ctr.feed(m.group(1), False)
                        start, end = ctr.char_pos, m.end(2)
                        # The simple lines that follow join it: one token for a run.
                        more = _run_end(text, m.end(), nexts)
                        if more > m.end():
                            end = more
                            while text[end - 1] in " \t":  # the last line's own end
                                end -= 1
                        body = text[start:end]
                        tok = Token("RULELINE", body, start, ctr.line, ctr.column)
                        ctr.feed(body)
                        lexer_state.last_token = tok
                        yield tok
                        continue
                yield self.lexers[parser_state.position].next_token(lexer_state, parser_state)
        except EOFError:
            pass
        except UnexpectedCharacters as exc:
            # As lark's contextual lexer: a token of another context is an unexpected
            # token (a '}' where a newline must come), not junk.
            try:
                last = lexer_state.last_token
                root = self.inner.root_lexer
                tok = root.next_token(lexer_state, parser_state)
            except UnexpectedCharacters:
                raise exc from None
            raise UnexpectedToken(tok, exc.allowed, state=parser_state, token_history=[last],
                                  terminals_by_name=root.terminals_by_name) from None


_TERMINAL_TEXT = {"_SEP": "newline", "$END": "end of file", "LBRACE": "'{'", "RBRACE": "'}'",
                  "EQUAL": "'='"}


def _parse(src: Source, start: str, line_lexer: bool = True) -> Any:
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    try:
        return _parser(line_lexer).parse(src.text, start=start)
    except UnexpectedToken as exc:
        tok = exc.token
        if tok.type == "$END":  # nft points past the last newline
            line = src.text.count("\n") + (0 if src.appended_newline else 1)
            raise located(src, line, 1, 1, "syntax error, unexpected end of file") from None
        what = "newline" if tok.type == "_SEP" and tok == "\n" else (
            "semicolon" if tok.type == "_SEP" else
            f"'{tok!s}'" if len(tok) == 1 and not tok.isalnum() else f"{tok!s}")
        raise located(src, tok.line or 1, tok.column or 1,
                      (tok.end_column or (tok.column or 1) + 1) - 1,
                      f"syntax error, unexpected {what}") from None
    except UnexpectedCharacters as exc:
        raise located(src, exc.line, exc.column, exc.column,
                      "syntax error, unexpected junk") from None
    except UnexpectedEOF:
        n = src.text.count("\n")
        raise located(src, n, 1, 1, "syntax error, unexpected end of file") from None


# ---- values -------------------------------------------------------------------------

_TIME_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")
BYTE_UNITS = ("bytes", "kbytes", "mbytes")  # nft 1.0.6 knows no gbytes
RATE_UNITS = ("second", "minute", "hour", "day", "week")


def time_seconds(text: str) -> int | float | None:
    """``1h30m`` -> 5400 (seconds; milliseconds make a float); None if not a time."""
    m = _TIME_RE.match(text)
    if not m or not any(m.groups()):
        return None
    d, h, mi, s, ms = (int(g) if g else 0 for g in m.groups())
    total = ((d * 24 + h) * 60 + mi) * 60 + s
    return total + ms / 1000 if ms else total


def _number(text: str) -> int:
    return int(text, 0)


# ---- knowledge of nft's words ------------------------------------------------------

_PROTOS = {p for p, _ in PAYLOAD}
# Headers nft knows beyond the encoder's payload table: fields are passed on by name.
_MORE_PROTOS = {"arp", "vlan", "gre", "comp", "ah", "esp", "igmp", "dccp", "sctp", "udplite",
                "th", "ip6", "icmpv6", "icmp"}
_META_BARE = {"mark", "iif", "oif", "iifname", "oifname", "iiftype", "oiftype", "skuid", "skgid",
              "nftrace", "rtclassid", "ibrname", "obrname", "ibriport", "obriport", "pkttype",
              "cpu", "iifgroup", "oifgroup", "cgroup", "ipsec"}
_CT_DIRS = ("original", "reply")
_OPS = {"==": "==", "!=": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">=",
        "eq": "==", "ne": "!=", "lt": "<", "gt": ">", "le": "<=", "ge": ">="}
_BINOPS = {"&": "&", "|": "|", "^": "^", "<<": "<<", ">>": ">>",
           "and": "&", "or": "|", "xor": "^", "lshift": "<<", "rshift": ">>"}
_VERDICTS = ("accept", "drop", "continue", "return")
_NAT_FLAGS = ("random", "fully-random", "persistent", "netmap")
_LOG_FLAG_WORDS = {"tcp": {"sequence": "tcp sequence", "options": "tcp options"},
                   "ip": {"options": "ip options"}}

PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
              "srcnat": 100}
BRIDGE_PRIORITIES = {"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300}


def _dtype_of(left: Any) -> str | None:
    """The datatype name of a left-hand expression, where nfkit's tables know it."""
    if not isinstance(left, dict) or len(left) != 1:
        return None
    (k, v), = left.items()
    if k == "payload" and "protocol" in v:
        row = PAYLOAD.get((v["protocol"], v["field"]))
        return row[3] if row else None
    if k == "meta":
        m = META.get(v["key"])
        return m[1] if m else None
    if k == "ct":
        c = CT.get(v["key"])
        return c[1] if c else None
    if k == "fib" and v.get("result") == "type":
        return "fib_addrtype"
    return None


# Datatypes a typeof may not name as a set's type (sizes nft takes from the expression).
_NO_SET_TYPES = frozenset(("integer", "hinteger", "string", "verdict", "time"))
# ... but for a typeof, which takes the width of its integer fields from the expression
_WIDTH_FROM_EXPR = frozenset(("integer", "hinteger"))


def _is_bitmask(left: Any) -> bool:
    name = _dtype_of(left)
    return name is not None and name in T and T[name].kind == "bitmask"


# ---- the reader of one rule (or property line): a cursor over items -------------------

class Cursor:
    """Items of one line, read left to right; errors point at the item they name."""

    __slots__ = ("items", "i", "last", "marking")

    def __init__(self, items: list[Item], last: Item) -> None:
        self.items = items
        self.i = 0
        self.last = last  # where "unexpected end" points
        self.marking = False  # integers read become _Markers (see rule templates)

    def peek(self, k: int = 0) -> Item | None:
        j = self.i + k
        return self.items[j] if j < len(self.items) else None

    def word(self, k: int = 0) -> str | None:
        """The text of the item ``k`` ahead if it is a word (or an operator), else None."""
        it = self.peek(k)
        return it.text if isinstance(it, Tok) and it.kind in ("WORD", "OP", "OBJKIND") else None

    def at_end(self) -> bool:
        return self.i >= len(self.items)

    def take(self) -> Item:
        it = self.peek()
        if it is None:
            end = self.last
            raise located(end.src, end.line, end.end + 1, end.end + 1,
                          "syntax error, unexpected end of statement")
        self.i += 1
        self.last = it
        return it

    def accept(self, *words: str) -> str | None:
        w = self.word()
        if w is not None and w in words:
            self.i += 1
            self.last = self.items[self.i - 1]
            return w
        return None

    def expect(self, *words: str) -> str:
        w = self.accept(*words)
        if w is None:
            raise self.unexpected(f"expecting {' or '.join(words)}")
        return w

    def unexpected(self, expecting: str = "") -> InputError:
        it = self.peek()
        if it is None:
            end = self.last
            return located(end.src, end.line, end.end + 1, end.end + 1,
                           "syntax error, unexpected end of statement"
                           + (f", {expecting}" if expecting else ""))
        text = "newline" if it.text == "\n" else it.text
        return at(it, f"syntax error, unexpected {text}" + (f", {expecting}" if expecting else ""))

    def name(self) -> str:
        it = self.take()
        if not isinstance(it, Tok) or it.kind not in ("WORD", "STRING", "NUMBER", "NUMWORD",
                                                       "OBJKIND"):
            raise at(it, f"syntax error, unexpected {it.text}, expecting string")
        return _unquote(it.text)

    def carried(self) -> str:
        """A name the statement only carries (a log prefix): marked when quoted."""
        it = self.peek()
        if self.marking and isinstance(it, Tok) and it.kind == "STRING" and it.text[:2] != '"@':
            self.i += 1
            return _Marker(self.i - 1)  # type: ignore[return-value]
        return self.name()

    def integer(self) -> int:
        it = self.take()
        if isinstance(it, Tok) and it.kind == "NUMBER":
            if self.marking:
                return _Marker(self.i - 1)  # type: ignore[return-value]
            return _number(it.text)
        if isinstance(it, Tok) and it.text == "-":
            nxt = self.take()
            if isinstance(nxt, Tok) and nxt.kind == "NUMBER":
                return -_number(nxt.text)
        raise at(it, f"syntax error, unexpected {it.text}, expecting number")

    def time(self) -> int | float:
        it = self.take()
        if isinstance(it, Tok) and it.kind == "NUMBER":
            return _number(it.text)
        if isinstance(it, Tok) and it.kind in ("NUMWORD", "STRING"):
            t = time_seconds(_unquote(it.text))
            if t is not None:
                return t
        raise at(it, f"Wrong time format: {it.text}")


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == '"' and text[-1] == '"' else text


def _group(items: list[Item], src: Source, line: int, col: int, close_col: int,
           close_line: int | None = None) -> Group:
    """The brace group at ``line``:``col`` of ``items`` (its elements split at commas);
    an empty one is nft's syntax error at the closing brace."""
    elems: list[list[Item]] = [[]]
    for it in items:
        if isinstance(it, Tok) and it.kind == "OP" and it.text == ",":
            elems.append([])
        elif isinstance(it, Tok) and it.kind == "_SEP":
            continue
        else:
            elems[-1].append(it)
    elems = [e for e in elems if e]
    if not elems:
        raise located(src, close_line or line, close_col, close_col, "syntax error, unexpected '}'")
    return Group(elems, src, line, col, col)


# ---- rule templates ---------------------------------------------------------------------
#
# A big file repeats a few rule shapes with other values.  The first rule of a
# shape is read a second time with its values replaced by markers; the marked
# statements become a builder (a lambda whose body is their literal, a marker
# read as ``v[i]``, the value of item i); the next rules of that shape call the
# builder with their values instead of being read again.  A value the reader
# looks at (rather than carries) compares a marker, which refuses: such a shape
# is always read in full; one it computes with (a TypeError) too.  An integer the
# reader takes (a prefix length, a rate) is marked as well; a value it takes another
# way stays fixed in the template: a rule with another one is read in full.

_BRACES = frozenset(("LBRACE", "RBRACE"))
_VALUE_KINDS = frozenset(("NUMBER", "IP4", "IP6", "MAC", "CLASSID", "STRING", "NUMWORD"))


class NotTemplatable(Exception):
    """A marker was compared: the rule's meaning depends on the value itself."""


class _Marker:
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __eq__(self, other: object) -> bool:
        raise NotTemplatable

    def __hash__(self) -> int:
        raise NotTemplatable

    def __bool__(self) -> bool:
        raise NotTemplatable


def _slot_value(kind: str, text: str) -> Any:
    """A value token as the statements hold it (what `Exprs.primary` makes of it)."""
    if kind == "NUMBER":
        return _number(text)
    if kind == "STRING":
        return _unquote(text)
    if kind == "NUMWORD":
        t = time_seconds(text)
        return text if t is None else t
    return text


def _literal(node: Any) -> str:
    """Python source of marked statements: literals only, a marker as ``v[i]``."""
    t = type(node)
    if t is _Marker:
        return f"v[{node.index}]"
    if t is dict:
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in node.items()) + "}"
    if t is list:
        return "[" + ", ".join(map(_literal, node)) + "]"
    if t in (str, int, float, bool) or node is None:
        return repr(node)
    raise NotTemplatable


def _builder(marked: Any) -> Any:
    # Only literals (repr of str/int/float/bool/None) and v[i] reach the source.
    code = compile("lambda v: " + _literal(marked), "<nft rule template>", "eval")
    return eval(code, {"__builtins__": {}})  # noqa: S307


@dataclass(slots=True)
class Template:
    build: Any  # values by item index -> statements
    fixed: list[tuple[int, str]]  # value items the reader looked at: must be these texts
    comment: str | None
    family: str
    kinds: list[str]  # each item's terminal ("STRING@": a string read as a set reference)
    texts: list[str]  # each item's text in the rule the template was made from
    line_re: Any = None  # a whole line of this shape (made on first use)
    checks: tuple[str, ...] = ()  # groups that must read as in `texts`
    check_texts: Any = None
    values: tuple[tuple[int, str, str], ...] = ()  # (item index, kind, group) of each value

    def compile_line(self, alternatives: list[tuple[str, str]]) -> None:
        """The regex of a line of this shape: each token as the scanner would cut it
        (its terminal's pattern, no earlier alternative matching there)."""
        names = [n for n, _ in alternatives]
        if any(("STRING" if k == "STRING@" else k) not in names for k in self.kinds):
            self.line_re = re.compile(r"(?!)")  # a token the scanner does not make
            return
        parts = []
        fixed = dict(self.fixed)
        checks: list[str] = []
        values: list[tuple[int, str, str]] = []
        terms: list[tuple[str, str]] = []
        for i, kind in enumerate(self.kinds):
            term = "STRING" if kind == "STRING@" else kind
            k = names.index(term)
            guard = '(?="@)' if kind == "STRING@" else ('(?!"@)' if kind == "STRING" else "")
            if term not in _VALUE_KINDS or i in fixed:
                checks.append(f"t{i}")
                # its text is checked after the match: the regex may as well be the text
                parts.append(f"{guard}(?P<t{i}>{re.escape(self.texts[i])})")
            else:
                values.append((i, term, f"t{i}"))
                parts.append(f"{guard}(?P<t{i}>{alternatives[k][1]})")
            terms.append((f"t{i}", term))
        ws = "[ \\t\\f]*"
        self.line_re = _ScannedLine(re.compile(ws.join(parts) + "$"), terms)
        self.checks = tuple(checks)
        texts = tuple(self.texts[int(c[1:])] for c in checks)
        self.check_texts = texts[0] if len(texts) == 1 else texts
        self.values = tuple(values)

    def read_line(self, text: str) -> list[Any] | None:
        """The statements of ``text`` if it is a line of this shape, else None."""
        m = self.line_re.match(text)
        if m is None or (self.checks and m.group(*self.checks) != self.check_texts):
            return None
        vals: list[Any] = [None] * len(self.kinds)
        for i, kind, group in self.values:
            vals[i] = _slot_value(kind, m.group(group))
        return self.build(vals)  # type: ignore[no-any-return]


# ---- anonymous-set lines ---------------------------------------------------------------
#
# A rule line with one anonymous set (``tcp dport { 22, 80, 443 } accept``) is read in
# full the first time its text around the set is seen; reading it again with the set's
# elements as a marker (`_AnonMarking`) gives its statements as a function of the
# elements, when the reading never looked at them.  Later lines with the same text
# around a set of plain values (a value, a range ``a-b``, a prefix ``a/n``) are cut
# by the scanner and built from that function; anything else is read in full.

_ANON_VALUE_KINDS = frozenset(("NUMBER", "IP4", "IP6", "MAC", "CLASSID", "STRING", "NUMWORD",
                               "WORD"))


def _anon_key(fam: str, text: str) -> tuple[tuple[str, str, str], str] | None:
    """((family, text before the set, text after it), the set's inner text) of a line
    with one brace group and no $variable, else None."""
    i = text.find("{")
    j = text.find("}")
    if i <= 0 or j < i or text.find("{", i + 1) >= 0 or text.find("}", j + 1) >= 0 \
            or "$" in text:
        return None
    return (fam, text[:i], text[j + 1:]), text[i + 1:j]


def _tokens(text: str) -> list[tuple[str, str]] | None:
    """The tokens of ``text`` as (terminal, text), cut as lark's scanner cuts them, blanks
    dropped; None where the scanner cannot cut it whole."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _parser().parser.lexer.scanner.finditer(text):
        if m.start() != pos:
            return None
        pos = m.end()
        if m.lastgroup != "_WS":
            out.append((m.lastgroup, m.group()))  # type: ignore[arg-type]
    return out if pos == len(text) else None


def _anon_elements(inner: str) -> list[Any] | None:
    """The elements of a set's inner text as `Exprs.elements` reads them, when each is
    a plain value, a range or a prefix (else None: the line is read in full)."""
    tokens = _tokens(inner)
    if tokens is None:
        return None
    elems: list[list[tuple[str, str]]] = [[]]
    for kind, w in tokens:
        if kind == "OP" and w == ",":
            elems.append([])
        else:
            elems[-1].append((kind, w))
    out: list[Any] = []
    for e in elems:
        if not e:
            continue
        k0, t0 = e[0]
        if k0 not in _ANON_VALUE_KINDS or t0[:2] == '"@':
            return None
        v = _slot_value(k0, t0)
        if len(e) == 1:
            out.append(v)
            continue
        if len(e) != 3 or e[1][0] != "OP":
            return None
        k2, t2 = e[2]
        if e[1][1] == "-" and k2 in _ANON_VALUE_KINDS and t2[:2] != '"@':
            out.append({"range": [v, _slot_value(k2, t2)]})
        elif e[1][1] == "/" and k2 == "NUMBER":
            out.append({"prefix": {"addr": v, "len": _number(t2)}})
        else:
            return None
    return out or None


class _ScannedLine:
    """A template's line regex whose every token is then checked to be the one the
    scanner cuts there (its terminal, its end): what the regex would say with each
    token guarded by the earlier alternatives, compiled in a fraction of the time."""

    __slots__ = ("regex", "terms")

    def __init__(self, regex: re.Pattern[str], terms: list[tuple[str, str]]) -> None:
        self.regex = regex
        self.terms = terms

    def match(self, text: str) -> re.Match[str] | None:
        m = self.regex.match(text)
        if m is None:
            return None
        scan = _parser().parser.lexer.scanner.match
        for group, term in self.terms:
            t = scan(text, m.start(group))
            if t is None or t.lastgroup != term or t.end() != m.end(group):
                return None
        return m


# ---- expressions -----------------------------------------------------------------------

class Exprs:
    """nft expressions -> libnftables JSON expressions (selectors and values)."""

    def __init__(self, family: str) -> None:
        self.family = family
        self.marking: Cursor | None = None  # values of this cursor become _Markers

    # selectors: what a packet, its metadata or its connection holds
    def selector(self, c: Cursor) -> Any | None:
        """A selector at the cursor (consumed), or None (nothing consumed)."""
        w = c.word()
        it = c.peek()
        if isinstance(it, Tok) and it.kind == "RAWPAYLOAD" and not it.text[1].isdigit():
            c.take()
            base, off, ln = it.text[1:].split(",")
            return {"payload": {"base": base, "offset": int(off), "len": int(ln)}}
        if w is None:
            return None
        w1 = c.word(1)
        ext = self._exthdr(c, w, w1)
        if ext is not None:
            return ext
        if w in _PROTOS or w in _MORE_PROTOS:
            if w1 is not None and ((w, w1) in PAYLOAD or (w not in _PROTOS and w1.isidentifier()
                                                          and w1 not in _STMT_WORDS)):
                if w1 in ("set", "map", "vmap"):
                    return None
                c.i += 2
                field = w1
                if w == "arp" and field in ("saddr", "daddr") and c.word() in ("ip", "ether"):
                    field += " " + c.expect("ip", "ether")
                return {"payload": {"protocol": w, "field": field}}
            return None
        if w == "meta":
            c.i += 1
            key = c.name()
            return {"meta": {"key": key}}
        if w == "ipsec" and w1 in ("in", "out"):
            return self._ipsec(c)
        if w in _META_BARE:
            c.i += 1
            return {"meta": {"key": w}}
        if w == "ct":
            return self._ct(c)
        if w == "numgen":
            c.i += 1
            mode = c.expect("inc", "random")
            c.expect("mod")
            body: dict[str, Any] = {"mode": mode, "mod": c.integer()}
            if c.accept("offset"):
                body["offset"] = c.integer()
            return {"numgen": body}
        if w in ("jhash", "symhash"):
            c.i += 1
            hb: dict[str, Any] = {}
            if w == "jhash":
                hb["expr"] = self.concat(c, selectors_only=True)
            c.expect("mod")
            hb["mod"] = c.integer()
            while True:
                if c.accept("seed"):
                    hb["seed"] = c.integer()
                elif c.accept("offset"):
                    hb["offset"] = c.integer()
                else:
                    break
            return {w: hb}
        if w == "fib":
            c.i += 1
            flags = [c.expect("saddr", "daddr", "mark", "iif", "oif")]
            while c.accept("."):
                flags.append(c.expect("saddr", "daddr", "mark", "iif", "oif"))
            result = c.expect("oif", "oifname", "type")
            return {"fib": {"result": result, "flags": flags}}
        if w == "rt":
            c.i += 1
            rb: dict[str, Any] = {}
            if c.word() in ("ip", "ip6"):
                rb["family"] = c.name()
            rb["key"] = c.name()
            return {"rt": rb}
        if w == "socket":
            c.i += 1
            key = c.name()
            sb: dict[str, Any] = {"key": key}
            if key == "cgroupv2":
                c.expect("level")
                sb["level"] = c.integer()
            return {"socket": sb}
        if w == "osf":
            c.i += 1
            ob: dict[str, Any] = {}
            if c.accept("ttl"):
                ob["ttl"] = c.name()
            ob["key"] = c.expect("name", "version")
            return {"osf": ob}
        return None

    def _ipsec(self, c: Cursor) -> Any:
        """`ipsec in|out [spnum N] reqid|spi|ip saddr|ip6 daddr...` (consumed)."""
        c.i += 1
        body: dict[str, Any] = {"key": "", "dir": c.expect("in", "out")}
        if c.accept("spnum"):
            body["spnum"] = c.integer()
        if c.word() in ("ip", "ip6"):
            body["family"] = c.name()
            body["key"] = c.expect("saddr", "daddr")
        else:
            body["key"] = c.expect("reqid", "spi")
        # nft's JSON order: key, family, dir, spnum (0 when not given)
        return {"ipsec": {"key": body["key"], **({"family": body["family"]} if "family" in body
                                                 else {}),
                          "dir": body["dir"], "spnum": body.get("spnum", 0)}}

    def _exthdr(self, c: Cursor, w: str, w1: str | None) -> Any | None:
        """`exthdr frag`, `frag more-fragments`, `rt type`, `tcp option maxseg size`,
        `ip option rr ptr` (consumed), or None."""
        if w in ("tcp", "ip") and w1 == "option" or w == "sctp" and w1 == "chunk":
            kind = f"{w} {w1}"
            c.i += 2
            if kind == "tcp option":
                # a raw option, `tcp option @kind,offset,length`, or `tcp option KIND exists`
                it = c.peek()
                if isinstance(it, Tok) and it.kind == "RAWPAYLOAD" and it.text[1].isdigit():
                    c.take()
                    kind_num, off, ln = map(int, it.text[1:].split(","))
                    return {kind: {"base": kind_num, "offset": off, "len": ln}}
                if isinstance(it, Tok) and it.kind == "NUMBER" and it.text.isdigit() \
                        and c.word(1) in ("exists", "missing"):
                    c.take()
                    return {kind: {"base": int(it.text), "offset": 0, "len": 8}}
            body = {"name": c.name()}
            nxt = c.word()
            if nxt is not None and nxt not in ("exists", "missing", "set") \
                    and not nxt.isdigit() and nxt not in _STMT_WORDS:
                body["field"] = c.name()
            return {kind: body}
        if w == "exthdr" and w1 is not None:
            c.i += 2
            return {"exthdr": {"name": w1}}
        if (w, w1) in (("srh", "sid"), ("rt0", "addr")) and c.word(2) == "[":
            c.i += 3  # srh sid[2], rt0 addr[1]: the field's name holds its index
            n = c.integer()
            c.expect("]")
            return {"exthdr": {"name": w, "field": f"{w1}[{n}]"}}
        names = {n for (k, n) in EXTHDR_FIELDS if k == "exthdr"}
        if w in names and w1 is not None and w1 in EXTHDR_FIELDS[("exthdr", w)][1] \
                or w == "frag" and w1 in ("frag-off", "more-fragments", "reserved2"):
            c.i += 2
            return {"exthdr": {"name": w, "field": w1}}
        return None

    def _ct(self, c: Cursor) -> Any | None:
        w1 = c.word(1)
        if w1 in ("count", "helper", "timeout", "expectation") and c.word(2) == "set":
            return None
        if w1 == "count":
            return None
        c.i += 1
        body: dict[str, Any] = {}
        if c.word() in _CT_DIRS:
            body["dir"] = c.name()
        key = c.name()
        if key in ("ip", "ip6") and c.word() in ("saddr", "daddr"):
            key += " " + c.name()
        body = {"key": key, **body}
        return {"ct": body}

    def concat(self, c: Cursor, selectors_only: bool = False) -> Any:
        """selector or value, joined by '.'."""
        parts = [self.binop(c, selectors_only)]
        while c.word() == ".":
            c.i += 1
            parts.append(self.binop(c, selectors_only))
        key = parts[0] if len(parts) == 1 else {"concat": parts}
        if c.word() == "map":  # "a . b map {...}": the map's key is the whole concatenation
            c.i += 1
            key = {"map": {"key": key, "data": self.map_data(c)}}
        return key

    def binop(self, c: Cursor, selectors_only: bool = False) -> Any:
        left = self.selector(c)
        if left is None:
            if selectors_only:
                raise c.unexpected()
            left = self.value(c)
        while c.word() in _BINOPS:
            op = _BINOPS[c.word() or ""]
            c.i += 1
            right = self.value(c)
            left = {op: [left, right]}
        return left

    def map_data(self, c: Cursor) -> Any:
        it = c.take()
        if isinstance(it, Tok) and it.kind == "SETREF":
            return it.text
        if isinstance(it, Group):
            return {"set": self.elements(it, is_map=True)}
        raise at(it, f"syntax error, unexpected {it.text}, expecting set or map")

    # values: constants as nft's JSON parser takes them (symbols left to the encoder)
    def value(self, c: Cursor) -> Any:
        """One value with its range, prefix and bitwise-or forms."""
        v = self.primary(c)
        w = c.word()
        if w == "-":
            c.i += 1
            v = {"range": [v, self.primary(c)]}
        elif w == "/" and isinstance(c.peek(1), Tok) and c.peek(1).kind == "NUMBER":  # type: ignore[union-attr]
            c.i += 1
            v = {"prefix": {"addr": v, "len": c.integer()}}
        return v

    def primary(self, c: Cursor) -> Any:
        it = c.take()
        if isinstance(it, Group):
            return {"set": self.elements(it, is_map=False)}
        k = it.kind
        if self.marking is c and k in _VALUE_KINDS:
            return _Marker(c.i - 1)
        if k == "NUMBER":
            return _number(it.text)
        if k in ("IP4", "IP6", "MAC", "CLASSID"):
            return it.text
        if k == "STRING":
            return _unquote(it.text)
        if k == "SETREF":
            return it.text
        if k == "NUMWORD":
            t = time_seconds(it.text)
            return t if t is not None else it.text
        if k == "WORD":
            return it.text
        if it.text == "-":
            nxt = c.take()
            if isinstance(nxt, Tok) and nxt.kind == "NUMBER":
                return -_number(nxt.text)
            raise at(nxt, f"syntax error, unexpected {nxt.text}")
        if it.text == "[":  # [ip6 address]
            v = self.primary(c)
            c.expect("]")
            return v
        if it.text == "(":
            v = self.rhs(c)
            c.expect(")")
            return v
        raise at(it, f"syntax error, unexpected {it.text}")

    def rhs(self, c: Cursor) -> Any:
        """A right-hand side: values joined by '.', lists joined by ',' or '|'."""
        v = self._rhs_concat(c)
        if c.word() in (",", "|"):
            vals = [v]
            while c.word() in (",", "|"):
                c.i += 1
                vals.append(self._rhs_concat(c))
            flat: list[Any] = []
            for x in vals:
                flat += x if isinstance(x, list) else [x]
            return flat
        return v

    def _rhs_concat(self, c: Cursor) -> Any:
        parts = [self.value(c)]
        while c.word() == ".":
            c.i += 1
            parts.append(self.value(c))
        return parts[0] if len(parts) == 1 else {"concat": parts}

    def verdict(self, c: Cursor) -> Any:
        w = c.word()
        if w in _VERDICTS:
            c.i += 1
            return {w: None}
        if w in ("jump", "goto"):
            c.i += 1
            return {w: {"target": c.name()}}
        return None

    def elements(self, g: Group, is_map: bool) -> list[Any]:
        """A brace group's elements (nested groups from $variables flattened)."""
        out: list[Any] = []
        for items in g.elems:
            if len(items) == 1 and isinstance(items[0], Group):
                out += self.elements(items[0], is_map)
                continue
            c = Cursor(items, items[0])
            key = self._rhs_concat(c)
            opts = self.elem_options(c)
            if is_map or c.word() == ":":
                c.expect(":")
                data = self.verdict(c)
                if data is None:
                    data = self._rhs_concat(c)
                    opts.update(self.elem_options(c))
                out.append([{"elem": {"val": key, **opts}} if opts else key, data])
            else:
                out.append({"elem": {"val": key, **opts}} if opts else key)
            if not c.at_end():
                raise c.unexpected("expecting comma or '}'")
        return out

    def elem_options(self, c: Cursor) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        while True:
            w = c.word()
            if w in ("timeout", "expires"):
                c.i += 1
                opts[w] = c.time()
            elif w == "comment":
                c.i += 1
                opts["comment"] = c.name()
            elif w == "counter":
                c.i += 1
                cb = {"packets": 0, "bytes": 0}
                if c.accept("packets"):
                    cb["packets"] = c.integer()
                    c.expect("bytes")
                    cb["bytes"] = c.integer()
                opts["counter"] = cb
            else:
                return opts


# nft's evaluator matches the ICMP type before a field only some types have.
_ICMP_FIELD_TYPES = {("icmp", "id"), ("icmp", "sequence"), ("icmpv6", "id"),
                     ("icmpv6", "sequence")}


def _icmp_dependencies(stmts: list[Any]) -> list[Any]:
    """Put ``icmp type { echo-reply, echo-request }`` before a match on an echo's id
    or sequence number (unless a type match is there already), as nft does."""
    typed: set[str] = set()
    out: list[Any] = []
    for st in stmts:
        m = st.get("match") if isinstance(st, dict) else None
        p = m["left"].get("payload") if m and isinstance(m["left"], dict) else None
        if p and "protocol" in p:
            proto = p["protocol"]
            if p["field"] == "type":
                typed.add(proto)
            elif (proto, p["field"]) in _ICMP_FIELD_TYPES and proto not in typed:
                typed.add(proto)
                out.append({"match": {"op": "==", "left": {"payload": {
                    "protocol": proto, "field": "type"}},
                    "right": {"set": ["echo-reply", "echo-request"]}}})
        out.append(st)
    return out


# Statements nft 1.0.6 lets nothing follow (its STMT_F_TERMINAL): verdicts but
# continue, reject, queue, NAT.
_TERMINAL_STMTS = frozenset(("accept", "drop", "return", "jump", "goto", "reject", "queue",
                             "snat", "dnat", "masquerade", "redirect"))

_STMT_WORDS = {"accept", "drop", "continue", "return", "jump", "goto", "counter", "log", "limit",
               "quota", "reject", "snat", "dnat", "masquerade", "redirect", "notrack", "queue",
               "dup", "fwd", "set", "map", "vmap", "comment", "meta", "ct", "mark", "tproxy",
               "synproxy", "update", "add", "delete", "meter"}


# ---- statements ----------------------------------------------------------------------

class Statements(Exprs):
    """A rule's items -> its statements (libnftables JSON) and comment."""

    def rule(self, items: list[Item], last: Item) -> tuple[list[Any], str | None]:
        return self.rule_from(Cursor(items, last))

    def rule_from(self, c: Cursor) -> tuple[list[Any], str | None]:
        stmts: list[Any] = []
        comment = None
        terminal = False
        while not c.at_end():
            if c.word() == "comment":
                c.i += 1
                comment = c.name()
                if not c.at_end():
                    raise c.unexpected()
                break
            if terminal:  # nft refuses what could never run
                it = c.peek()
                assert it is not None
                raise at(it, "Statement after terminal statement has no effect")
            st = self.statement(c)
            terminal = next(iter(st)) in _TERMINAL_STMTS
            stmts.append(st)
        return _icmp_dependencies(stmts), comment

    def statement(self, c: Cursor) -> Any:
        v = self.verdict(c)
        if v is not None:
            return v
        w = c.word()
        fn = getattr(self, "_st_" + w.replace("-", "_"), None) if w else None
        if fn is not None:
            r = fn(c)
            if r is not None:
                return r
        left = self.selector(c)
        if left is None:
            raise c.unexpected()
        return self._after_left(c, left)

    def _after_left(self, c: Cursor, left: Any) -> Any:
        while c.word() in _BINOPS:
            bop = _BINOPS[c.word() or ""]
            c.i += 1
            left = {bop: [left, self.rhs_value_for_binop(c)]}
        while c.word() == ".":
            c.i += 1
            nxt = self.selector(c)
            if nxt is None:
                raise c.unexpected("expecting a selector")
            parts = left["concat"] if "concat" in left else [left]
            left = {"concat": [*parts, nxt]}
        w = c.word()
        if w == "set":
            c.i += 1
            value = self.concat(c)
            if c.word() == ",":  # `ct event set new,related`: a list of flags
                value = [value]
                while c.accept(","):
                    value.append(self.concat(c))
            return {"mangle": {"key": left, "value": value}}
        if w == "vmap":
            c.i += 1
            return {"vmap": {"key": left, "data": self.map_data(c)}}
        op: str | None = None
        if w in _OPS:
            op = _OPS[w]
            c.i += 1
        right = self.rhs(c)
        if c.word() == "/":  # "tcp flags syn / syn,ack": the value under a mask
            c.i += 1
            left = {"&": [left, self.rhs(c)]}
            op = op or "=="
        if isinstance(left, dict) and next(iter(left), None) in (
                "fib", "exthdr", "tcp option", "ip option", "sctp chunk") \
                and right in ("missing", "exists"):
            right = right == "exists"
        if op is None:
            if isinstance(right, dict) and "set" in right or \
                    isinstance(right, str) and right.startswith("@"):
                op = "=="
            else:
                op = "in" if _is_bitmask(left) else "=="
        return {"match": {"op": op, "left": left, "right": right}}

    def rhs_value_for_binop(self, c: Cursor) -> Any:
        it = c.peek()
        if isinstance(it, Tok) and it.text == "(":
            return self.primary(c)
        return self.value(c)

    # ---- one method per statement keyword
    def _st_counter(self, c: Cursor) -> Any:
        c.i += 1
        if c.accept("name"):
            return {"counter": self._objname(c)}
        if c.accept("packets"):
            body = {"packets": c.integer(), "bytes": 0}
            if c.accept("bytes"):
                body["bytes"] = c.integer()
            return {"counter": body}
        return {"counter": None}

    def _objname(self, c: Cursor) -> Any:
        """An object's name, or an expression choosing it (``udp dport map {...}``)."""
        it = c.peek()
        if isinstance(it, Tok) and it.kind == "STRING":
            return c.name()
        return self.concat(c)

    def _st_notrack(self, c: Cursor) -> Any:
        c.i += 1
        return {"notrack": None}

    def _st_log(self, c: Cursor) -> Any:
        c.i += 1
        body: dict[str, Any] = {}
        while True:
            w = c.word()
            if w == "prefix":
                c.i += 1
                body["prefix"] = c.carried()
            elif w == "level":
                c.i += 1
                body["level"] = c.name()
            elif w in ("group", "snaplen", "queue-threshold"):
                c.i += 1
                body[w] = c.integer()
            elif w == "flags":
                c.i += 1
                flags: list[str] = []
                while True:
                    f = c.name()
                    if f in _LOG_FLAG_WORDS:
                        names = _LOG_FLAG_WORDS[f]
                        flags.append(names[c.expect(*names)])
                        while c.word() == "," and c.word(1) in names:
                            c.i += 1
                            flags.append(names[c.name()])
                    else:
                        flags.append(f)
                    if c.word() == "," and c.word(1) in ("tcp", "ip", "skuid", "ether", "all"):
                        c.i += 1
                        continue
                    break
                body["flags"] = flags[0] if len(flags) == 1 else flags
            else:
                break
        return {"log": body or None}

    def _st_limit(self, c: Cursor) -> Any:
        c.i += 1
        if c.accept("name"):
            return {"limit": self._objname(c)}
        c.expect("rate")
        return {"limit": self.limit_body(c)}

    def limit_body(self, c: Cursor) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if c.accept("over"):
            body["inv"] = True
        elif c.accept("until"):
            pass
        rate = c.integer()
        unit = c.accept(*BYTE_UNITS)
        c.expect("/")
        body = {"rate": rate, "per": c.expect(*RATE_UNITS), **body}
        if unit:
            body["rate_unit"] = unit
        if c.accept("burst"):
            body["burst"] = c.integer()
            bu = c.accept("packets", *BYTE_UNITS)
            if unit:
                body["burst_unit"] = bu or "bytes"
        elif unit:
            body["burst"] = 0
        return body

    def _st_quota(self, c: Cursor) -> Any:
        c.i += 1
        if c.accept("name"):
            return {"quota": self._objname(c)}
        return {"quota": self.quota_body(c)}

    def quota_body(self, c: Cursor) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if c.accept("over"):
            body["inv"] = True
        elif c.accept("until"):
            pass
        body = {"val": c.integer(), "val_unit": c.expect(*BYTE_UNITS), **body}
        if c.accept("used"):
            body["used"] = c.integer()
            body["used_unit"] = c.expect(*BYTE_UNITS)
        return body

    def _st_reject(self, c: Cursor) -> Any:
        c.i += 1
        if not c.accept("with"):
            return {"reject": None}
        kind = c.expect("icmp", "icmpv6", "icmpx", "tcp")
        if kind == "tcp":
            c.expect("reset")
            return {"reject": {"type": "tcp reset"}}
        c.accept("type")
        it = c.take()
        code: Any = _number(it.text) if isinstance(it, Tok) and it.kind == "NUMBER" \
            else _unquote(it.text)
        return {"reject": {"type": kind, "expr": code}}

    def _nat(self, c: Cursor, kind: str) -> Any:
        c.i += 1
        body: dict[str, Any] = {}
        if c.word() in ("ip", "ip6") and kind in ("snat", "dnat") and c.word(1) in ("to", "prefix"):
            body["family"] = c.name()
        if c.accept("to") or (kind in ("snat", "dnat") and not c.at_end()
                              and c.word() not in _NAT_FLAGS):
            if c.word() == ":":
                c.i += 1
                body["port"] = self._nat_value(c)
            else:
                if kind in ("snat", "dnat") and c.accept("prefix"):
                    c.expect("to")  # `snat [ip6] prefix to P`: netmap
                    body.setdefault("flags", []).append("netmap")
                body["addr"] = self._nat_value(c)
                if c.word() == ":":
                    c.i += 1
                    body["port"] = self._nat_value(c)
        flags: list[str] = list(body.pop("flags", []))
        while True:
            f = c.accept(*_NAT_FLAGS)
            if f is None:
                break
            flags.append(f)
            c.accept(",")
        if flags:
            body["flags"] = flags[0] if len(flags) == 1 else flags
        return {kind: body or None}

    def _nat_value(self, c: Cursor) -> Any:
        sel = self.selector(c)
        if sel is not None:
            c_left = sel
            while c.word() == ".":
                c.i += 1
                nxt = self.selector(c)
                if nxt is None:
                    raise c.unexpected()
                parts = c_left["concat"] if "concat" in c_left else [c_left]
                c_left = {"concat": [*parts, nxt]}
            c.expect("map")
            return {"map": {"key": c_left, "data": self.map_data(c)}}
        return self.value(c)

    def _st_snat(self, c: Cursor) -> Any:
        return self._nat(c, "snat")

    def _st_dnat(self, c: Cursor) -> Any:
        return self._nat(c, "dnat")

    def _st_masquerade(self, c: Cursor) -> Any:
        return self._nat(c, "masquerade")

    def _st_redirect(self, c: Cursor) -> Any:
        return self._nat(c, "redirect")

    def _st_ct(self, c: Cursor) -> Any | None:
        w1, w2 = c.word(1), c.word(2)
        if w1 in ("helper", "timeout", "expectation") and w2 == "set":
            c.i += 3
            return {f"ct {w1}": self._objname(c)}
        if w1 == "count":
            c.i += 2
            inv = bool(c.accept("over"))
            body: dict[str, Any] = {"val": c.integer()}
            if inv:
                body["inv"] = True
            return {"ct count": body}
        return None

    def _st_dup(self, c: Cursor) -> Any:
        c.i += 1
        c.expect("to")
        body: dict[str, Any] = {"addr": self.value(c)}
        if c.accept("device"):
            body["dev"] = c.name()
        return {"dup": body}

    def _st_fwd(self, c: Cursor) -> Any:
        c.i += 1
        body: dict[str, Any] = {}
        if c.word() in ("ip", "ip6"):
            body["family"] = c.name()
        c.expect("to")
        first = self.value(c)
        if c.accept("device"):
            body["addr"] = first
            body["dev"] = c.name()
        else:
            body["dev"] = first
        return {"fwd": body}

    def _st_queue(self, c: Cursor) -> Any:
        c.i += 1
        body: dict[str, Any] = {}
        flags: list[str] = []
        while True:
            w = c.word()
            if w in ("num", "to"):
                c.i += 1
                body["num"] = self.value(c)
            elif w in ("bypass", "fanout"):
                c.i += 1
                flags.append(w)
                c.accept(",")
            elif w == "flags":
                c.i += 1
                flags.append(c.name())
                while c.accept(","):
                    flags.append(c.name())
            else:
                break
        if flags:
            body["flags"] = flags[0] if len(flags) == 1 else flags
        return {"queue": body or None}

    def _set_stmt(self, c: Cursor, op: str) -> Any:
        c.i += 1
        it = c.take()
        if not (isinstance(it, Tok) and it.kind == "SETREF"):
            raise at(it, f"syntax error, unexpected {it.text}, expecting set reference")
        g = c.take()
        if not isinstance(g, Group) or len(g.elems) != 1:
            raise at(g, "syntax error, expecting { element }")
        inner = Cursor(g.elems[0], g)
        elem = self.concat(inner, selectors_only=True)
        opts: dict[str, Any] = {}
        stmts: list[Any] = []
        while not inner.at_end():
            w = inner.word()
            if w in ("timeout", "expires"):
                inner.i += 1
                opts[w] = inner.time()
            else:
                stmts.append(self.statement(inner))
        body: dict[str, Any] = {"op": op, "elem": {"elem": {"val": elem, **opts}} if opts
                                else elem, "set": it.text}
        if stmts:
            body["stmt"] = stmts
        return {"set": body}

    def _st_meter(self, c: Cursor) -> Any:
        """`meter NAME [size N] { KEY [timeout T] STATEMENT }`, as nft's JSON has it."""
        c.i += 1
        body: dict[str, Any] = {"name": c.name()}
        size = None
        if c.accept("size"):
            size = c.integer()
        g = c.take()
        if not isinstance(g, Group) or len(g.elems) != 1:
            raise at(g, "syntax error, expecting { key statement }")
        inner = Cursor(g.elems[0], g)
        key = self.concat(inner, selectors_only=True)
        if inner.word() == "timeout":
            inner.i += 1
            key = {"elem": {"val": key, "timeout": inner.time()}}
        body["key"] = key
        body["stmt"] = self.statement(inner)
        if not inner.at_end():
            raise at(inner.peek() or g, "syntax error: a meter carries one statement")
        if size is not None:
            body["size"] = size
        return {"meter": body}

    def _st_add(self, c: Cursor) -> Any:
        return self._set_stmt(c, "add")

    def _st_update(self, c: Cursor) -> Any:
        return self._set_stmt(c, "update")

    def _st_delete(self, c: Cursor) -> Any:
        return self._set_stmt(c, "delete")

    def _st_tproxy(self, c: Cursor) -> Any:
        c.i += 1
        body: dict[str, Any] = {}
        if c.word() in ("ip", "ip6"):
            body["family"] = c.name()
        c.expect("to")
        if c.word() == ":":
            c.i += 1
            body["port"] = self.value(c)
        else:
            body["addr"] = self.value(c)
            if c.accept(":"):
                body["port"] = self.value(c)
        return {"tproxy": body}

    def _st_synproxy(self, c: Cursor) -> Any:
        c.i += 1
        if c.accept("name"):  # a reference to a synproxy object
            return {"synproxy": c.name()}
        body: dict[str, Any] = {}
        flags: list[str] = []
        while True:
            w = c.word()
            if w in ("mss", "wscale"):
                c.i += 1
                body[w] = c.integer()
            elif w in ("timestamp", "sack-perm"):
                c.i += 1
                flags.append(w)
            else:
                break
        if flags:
            body["flags"] = flags
        return {"synproxy": body or None}


class _AnonMarking(Statements):
    """Statements whose one anonymous set's elements read as a marker (``v[0]``)."""

    group: Group | None = None

    def elements(self, g: Group, is_map: bool) -> list[Any]:
        if g is self.group and not is_map:
            return _Marker(0)  # type: ignore[return-value]
        return super().elements(g, is_map)


# ---- files, blocks and commands ----------------------------------------------------------

@dataclass
class Scope:
    """Variables of one block (nft's defines are block-scoped)."""

    defines: dict[str, list[Item]] = field(default_factory=dict)
    parent: Scope | None = None

    def lookup(self, name: str) -> list[Item] | None:
        s: Scope | None = self
        while s is not None:
            if name in s.defines:
                return s.defines[name]
            s = s.parent
        return None


class Pos(NamedTuple):
    """Where a command starts (its first token)."""

    line: int
    column: int
    end_column: int


def _pos(tree: Any) -> Pos:
    """The position of the first token under ``tree`` (lark keeps no positions on trees
    here: propagating them doubles the parse time)."""
    from lark import Token

    for tok in tree.scan_values(lambda v: isinstance(v, Token)):
        return Pos(tok.line, tok.column, tok.end_column)
    return Pos(1, 1, 2)


_NO_TEMPLATE = object()


class _Sentinel:
    """Item ``index``'s value, where a template's statements put it (see `_text_slots`)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


@dataclass(slots=True)
class LearnedLine:
    """A line template (`Template`) learned from the compiler (`shapes.learn`) in one
    chain: the NEWRULE template, each place's item, and the items whose text must be
    the sample's (values the shape fixes: a prefix length, a name)."""

    template: Any  # templates.RuleTemplate
    places: list[int]  # item index of each place
    parse: list[Any]  # by item index: text -> value (None: not a slot)
    fixed: tuple[str, ...]  # groups whose text must equal `texts`
    texts: Any
    bulk: Any = None  # whole lines of this template, one after another (see `_bulk_re`)
    lengths: tuple[tuple[str, int], ...] = ()  # (group, its length) of text of one length
    sample: Any = None  # the first rule read by it (every run's sample: validated once)

    def fits(self, m: re.Match[str]) -> bool:
        """Line ``m`` (of the line template) has the values this template fixes."""
        return (not self.fixed or m.group(*self.fixed) == self.texts) and all(
            len(m.group(g)) == n for g, n in self.lengths)


class TextRun:
    """Consecutive rule lines of one learned template in one chain (becomes a
    `bulkjson.RuleRun` for the encoder): their line matches and where they are."""

    __slots__ = ("tpl", "learned", "family", "table", "chain", "src", "matches", "segments")

    def __init__(self, tpl: Template, learned: LearnedLine, family: str, table: str,
                 chain: str, src: Source) -> None:
        self.tpl = tpl
        self.learned = learned
        self.family, self.table, self.chain = family, table, chain
        self.src = src
        self.matches: list[re.Match[str]] = []
        # (first row, its line, its column or 0: the match's own indent) of each
        # stretch of consecutive lines
        self.segments: list[tuple[int, int, int]] = []

    def add(self, m: re.Match[str], line: int, col: int) -> None:
        self.segments.append((len(self.matches), line, col))
        self.matches.append(m)

    def takes(self, m: re.Match[str] | None) -> bool:
        ln = self.learned
        return m is not None and (not self.tpl.checks or m.group(*self.tpl.checks)
                                  == self.tpl.check_texts) and ln.fits(m)

    def where(self, k: int) -> tuple[int, int]:
        """(line, column) of row ``k``."""
        first, line, col = next(s for s in reversed(self.segments) if s[0] <= k)
        if k != first or not col:
            whole = self.matches[k].group(0)
            col = 1 + len(whole) - len(whole.lstrip(" \t\f"))
        return line + k - first, col

    def statements(self, k: int) -> list[Any]:
        vals: list[Any] = [None] * len(self.tpl.kinds)
        m = self.matches[k]
        for i, kind, group in self.tpl.values:
            vals[i] = _slot_value(kind, m.group(group))
        return self.tpl.build(vals)  # type: ignore[no-any-return]

    def rule(self, run: Any, k: int) -> Any:
        from nfkit.nftables.model import Rule

        return Rule(self.family, self.table, self.chain, self.statements(k),
                    source=f"{self.src.name}:{self.where(k)[0]}")

    def as_rule_run(self, packed: list[bytes] | None = None) -> Any:
        """The run for the encoder (``packed``: its value columns, if encoded already)."""
        from nfkit.nftables.bulkjson import RuleRun

        ln = self.learned
        if ln.sample is None:
            ln.sample = self.rule(None, 0)
        run = RuleRun(ln.sample, ("nft", id(self.tpl)), (), "", 0,
                      template=ln.template, places=ln.places, parse=ln.parse,
                      row_rule=self.rule,
                      group_names=_group_names(len(self.tpl.kinds)))
        run.matches = self.matches
        if packed is None:
            packed = _packed(ln, self.matches)
        if packed is not None:
            run.packed = packed
            run.row_starts = range(len(self.matches))  # type: ignore[assignment]  # only counted
        return run


@lru_cache(maxsize=64)
def _group_names(n: int) -> list[str]:
    """The value groups of a template of ``n`` items (one list for every run: read only)."""
    return [f"t{i}" for i in range(n)]


def packed_runs(runs: list[TextRun]) -> dict[int, list[bytes]]:
    """The value columns of every run of one learned template encoded in one go, cut
    per run (by id of the run); a run whose template's columns do not all encode is
    left out (encoded on its own)."""
    by_learned: dict[int, list[TextRun]] = {}
    for run in runs:
        by_learned.setdefault(id(run.learned), []).append(run)
    out: dict[int, list[bytes]] = {}
    for group in by_learned.values():
        if len(group) < 2:
            continue
        ms = [m for run in group for m in run.matches]
        cols = _packed(group[0].learned, ms)
        if cols is None:
            continue
        widths = [w for _e, w, _o in group[0].learned.template.slots]
        k = 0
        for run in group:
            n = len(run.matches)
            out[id(run)] = [c[k * w:(k + n) * w] for c, w in zip(cols, widths, strict=True)]
            k += n
    return out


def _packed(ln: LearnedLine, ms: list[re.Match[str]]) -> list[bytes] | None:
    """The value columns of lines ``ms`` encoded at once (one bytes a place), or None
    when a value does not fit its place (then `RuleRun.encoded` finds which)."""
    from nfkit.nftables.messages import ARRAY_CODE, in_byte_order

    out: list[bytes] = []
    n = len(ms)
    try:
        for (encode, width, _op), item in zip(ln.template.slots, ln.places, strict=True):
            col = list(map(re.Match.group, ms, repeat(f"t{item}")))
            parse = ln.parse[item]
            if parse is _int_value and width in ARRAY_CODE and width > 1:
                try:
                    a = array(ARRAY_CODE[width], map(int, col))
                except ValueError:  # hexadecimal
                    a = array(ARRAY_CODE[width], map(_number, col))
                if n and min(a) <= 0:
                    return None
                out.append(in_byte_order(a, encode(1)[-1:] == b"\x01").tobytes())
                continue
            if parse is _ipv4_value:  # inet_pton takes exactly what IPV4_RE does
                b = b"".join(map(encode, col))
            else:
                b = b"".join(map(encode, map(parse, col)))
            if len(b) != n * width:
                return None
            out.append(b)
    except (OverflowError, OSError, ValueError, UnicodeError, TypeError):
        return None
    return out


def _int_value(text: str) -> int:
    v = _number(text)
    if v <= 0:  # a learned int slot takes positive numbers only (as the JSON reader's)
        raise ValueError(text)
    return v


def _ipv4_value(text: str) -> str:
    if _IPV4_FULL(text) is None:
        raise ValueError(text)
    return text


_IPV4_FULL = re.compile(IPV4_RE + r"\Z").match
# An IPv4 slot of a line template takes what nft.lark's IP4 terminal lexes (the line
# has the template's tokens whatever the address's digits), and `_ipv4_value` refuses
# what is no address: that line is then read alone.  IPV4_RE's alternations here were
# ~1/3 of the scan of a file of address rules.
_IP4_TOKEN = r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+"


def _ipv6_value(text: str) -> str:
    from nfkit.nftables.shapes import IPV6_RE

    if re.fullmatch(IPV6_RE, text) is None:
        raise ValueError(text)
    return text


def _text_value(text: str) -> str:
    return _unquote(text) if text[:1] == '"' else text


def learn_line(tpl: Template, family: str, table: str, chain: str, m: re.Match[str]
               ) -> LearnedLine | None:
    """The template of lines of ``tpl`` from the compiler, learned from line match ``m``
    (the first of a run), or None when the compiler gives none (then each line goes
    the general way)."""
    from nfkit.nftables.compiler import RuleCompiler
    from nfkit.nftables.shapes import learn, leaves
    from nfkit.nftables.templates import RuleTemplate

    vals: list[Any] = [None] * len(tpl.kinds)
    for i, kind, group in tpl.values:
        vals[i] = _slot_value(kind, m.group(group))
    stmts = tpl.build(vals)
    marks: list[Any] = [_Sentinel(i) for i in range(len(tpl.kinds))]
    marked = tpl.build(marks)
    mleaves = leaves(marked)
    sleaves = leaves(stmts)
    if [p for p, _ in mleaves] != [p for p, _ in sleaves]:
        return None

    def compile_expr(expr: list[Any]) -> bytes | None:
        rc = RuleCompiler(family, table, queue_mode=_no_queue)
        try:
            exprs, anon = rc.compile(expr)
        except Exception:  # any refusal: no template; the general path reports it
            return None
        return None if anon else b"".join(exprs)

    shape = learn(stmts, compile_expr)
    if shape is None:
        return None
    value_items = {i for i, _k, _g in tpl.values}
    # A slot the line template keeps constant (a word it checks, as a jump's chain):
    # its sample value goes into the template's bytes.
    constant = [k for k, s in enumerate(shape.slots)
                if type(mleaves[s.leaf][1]) is not _Sentinel
                or mleaves[s.leaf][1].index not in value_items]
    if constant:
        shape = shape.fixing(constant, [sleaves[shape.slots[k].leaf][1] for k in constant])
    parse: list[Any] = [None] * len(tpl.kinds)
    fixed: list[str] = []
    slot_leaves = {s.leaf: s for s in shape.slots}
    for j, (_path, mark) in enumerate(mleaves):
        if type(mark) is not _Sentinel:
            if j in slot_leaves:
                return None  # a slot the line does not give: not a line template
            continue
        i = mark.index
        if i not in value_items:
            continue  # checked by the line template itself
        s = slot_leaves.get(j)
        if s is None:
            fixed.append(f"t{i}")
            continue
        kind = s.cls[0].removesuffix("net")  # a prefix's address reads as an address
        parse[i] = {"int": _int_value, "ipv4": _ipv4_value, "ipv6": _ipv6_value}.get(
            kind, _text_value)
    places = [mleaves[shape.slots[k].leaf][1].index for _o, _w, k in shape.places()]
    texts = tuple(m.group(g) for g in fixed)
    rt = RuleTemplate(family, table, chain, shape.statics,
                      [(shape.slots[k].encode, w, None) for _o, w, k in shape.places()])
    slot_class = {mleaves[s.leaf][1].index: s.cls for s in shape.slots}
    # a text slot of one length takes text of that length only (quotes included)
    lengths = tuple((f"t{i}", len(m.group(f"t{i}"))) for i, c in slot_class.items()
                    if c[0] == "text" and len(c) == 2)
    return LearnedLine(rt, places, parse, tuple(fixed), texts[0] if len(texts) == 1 else texts,
                       _bulk_re(tpl, m.group(0), value_items, slot_class), lengths)


# A slot's value token, by (its class, the token's terminal), and what may not follow it.
_BULK_VALUE = {("int", "NUMBER"): r"(?:0x[0-9a-fA-F]+|[1-9][0-9]*)(?![0-9A-Za-z_.:])",
               ("ipv4", "IP4"): None, ("ipv6", "IP6"): None, ("text", "STRING"): None}


def _bulk_re(tpl: Template, sample: str, value_items: set[int],
             slot_class: dict[int, tuple[Any, ...]]) -> re.Pattern[str] | None:
    """Whole lines like ``sample`` (a line of ``tpl``), with any indent, ending in a
    newline or the end: its tokens literal (value items as named groups), each slot
    a value of its class, whitespace where the sample has it.  None when a slot's
    token is not one this knows (then lines go one by one)."""
    from nfkit.nftables.shapes import IPV6_RE, value_regex

    parts = [r"[ \t\f]*"]
    i = 0
    for tm in _parser().parser.lexer.scanner.finditer(sample):
        if tm.lastgroup == "_WS":
            parts.append(r"[ \t\f]+")
            continue
        tok = tm.group()
        cls = slot_class.get(i)
        if cls is not None:
            if cls[0] in ("ipv4net", "ipv6net"):
                cls = (cls[0][:4],)
            key = (cls[0], tpl.kinds[i])
            if key not in _BULK_VALUE:
                return None
            rx = {"int": _BULK_VALUE[("int", "NUMBER")],
                  "ipv4": _IP4_TOKEN + r"(?![0-9.])",
                  "ipv6": IPV6_RE + r"(?![0-9a-fA-F:.])",
                  "text": value_regex(cls)}[cls[0]]
            parts.append(f"(?P<t{i}>{rx})")
        elif i in value_items:
            parts.append(f"(?P<t{i}>{re.escape(tok)})")
        else:
            parts.append(re.escape(tok))
        i += 1
    if i != len(tpl.kinds):
        return None
    parts.append(r"[ \t\f]*(?:\n|\Z)")
    return re.compile("".join(parts))


def _no_queue() -> str:
    raise LookupError("queue statements are not templated")


@dataclass(slots=True)
class Located:
    """A JSON command and where in the text it came from."""

    item: dict[str, Any]
    src: Source
    line: int
    col: int


class Reader:
    """Reads nft text (with its includes) into libnftables JSON commands."""

    def __init__(self, include_paths: tuple[str, ...] | list[str] = (),
                 templates: bool = True, line_lexer: bool = True) -> None:
        self.include_paths = [DEFAULT_INCLUDE_PATH, *include_paths]
        self.use_templates = templates
        self.line_lexer = line_lexer
        self.out: list[Located] = []
        self.scope = Scope()
        self.depth = 0
        self.templates: dict[tuple[Any, ...], Any] = {}
        self.last: Template | None = None  # the template the last rule line used
        # The run the last rule line may continue: (template, chain, index in out).
        self.open_run: tuple[Any, ...] | None = None
        self.learned: dict[tuple[Any, ...], list[LearnedLine | None]] = {}
        self.chain_learned: dict[tuple[str, ...], list[tuple[Template, LearnedLine]]] = {}
        # learned template (by id) -> the one whose run followed its run last time
        self.follows: dict[int, tuple[Template, LearnedLine, str]] = {}
        # anonymous-set lines: (family, text before the set, text after it) ->
        # (statements from the set's elements, comment), or None: read in full
        self.anon: dict[tuple[Any, ...], Any] = {}

    # -- tokens
    def items(self, tree: Any, src: Source) -> list[Item]:
        """The items of an `items` (or `group`) tree, $variables replaced."""
        out: list[Item] = []
        for ch in tree.children:
            if hasattr(ch, "data"):  # a group
                out.append(self.group(ch, src))
                continue
            if ch.type in _BRACES:
                continue
            if ch.type == "VAR":
                val = self.scope.lookup(ch[1:])
                if val is None:
                    raise located(src, ch.line, ch.column + 1, ch.end_column - 1,
                                  f"unknown identifier '{ch[1:]}'")
                out += val
                continue
            out.append(Tok(ch.type, str(ch), src, ch.line, ch.column, ch.end_column - 1))
        return out

    def line_items(self, line: Any, src: Source) -> list[Item]:
        """The items of a `line` tree: its `items`, or its RULELINE cut by the scanner."""
        ch = line.children[0]
        if hasattr(ch, "data"):
            return self.items(ch, src)
        scan = _parser().parser.lexer.scanner.match
        out: list[Item] = []
        col0, ln, text = ch.column, ch.line, str(ch)
        pos = 0
        opened: tuple[list[Item], int] | None = None  # items before a brace, its column
        while pos < len(text):
            m = scan(text, pos)
            if m is None:
                c = text[pos]
                if c == "{" and opened is None:
                    opened = (out, col0 + pos)
                    out = []
                elif c == "}" and opened is not None:
                    before, bcol = opened
                    before.append(_group(out, src, ln, bcol, col0 + pos))
                    out, opened = before, None
                else:
                    break
                pos += 1
                continue
            pos = m.end()
            kind = m.lastgroup
            if kind == "_WS":
                continue
            word = m.group()
            if kind == "VAR":
                val = self.scope.lookup(word[1:])
                if val is None:
                    raise located(src, ln, col0 + m.start() + 1, col0 + pos - 1,
                                  f"unknown identifier '{word[1:]}'")
                out += val
                continue
            out.append(Tok(kind, word, src, ln, col0 + m.start(), col0 + pos - 1))  # type: ignore[arg-type]
        if pos != len(text) or opened is not None:
            raise located(src, ln, col0 + pos, col0 + pos, "syntax error, unexpected junk")
        return out

    def group(self, tree: Any, src: Source) -> Group:
        pos = _pos(tree)
        close = tree.children[-1]
        return _group(self.items(tree, src), src, pos.line, pos.column, close.column,
                      close.line)

    # -- files
    def read_text(self, text: str, name: str, parent: tuple[Source, int, int, int] | None = None,
                  start: str = "start", ctx: Any = None) -> None:
        bare = not text.endswith("\n")
        src = Source(name, text + "\n" if bare else text, parent, bare)
        tree = _parse(src, start, self.line_lexer)
        if start == "start":
            self.commands(tree.children, src)
        elif start == "table_lines":
            self.table_lines(tree.children, src, ctx)
        else:
            self.body_lines(tree.children, src, ctx)

    def include(self, tree: Any, src: Source, start: str = "start", ctx: Any = None) -> None:
        kw, tok = tree.children
        name = _unquote(str(tok))
        end = tok.end_column - 1
        loc = (src, kw.line, kw.column, end)
        if self.depth >= MAX_INCLUDE_DEPTH:
            raise located(src, kw.line, kw.column, end,
                          f"Include nested too deeply, max {MAX_INCLUDE_DEPTH} levels")
        for path in self._resolve(name, src, loc):
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise located(src, kw.line, kw.column, end,
                              f"Could not read {path}: {exc}") from None
            self.depth += 1
            try:
                self.read_text(text, path, loc, start, ctx)
            finally:
                self.depth -= 1

    def _resolve(self, name: str, src: Source, loc: tuple[Source, int, int, int]) -> list[str]:
        """The files an include names, as nft 1.0.6 finds them: a path starting with
        '/', './' or '../' as given (relative to the current directory), any other
        searched in the include paths (/etc, then each -I: the first file found; a
        glob: every match of every path, the last path's first, each path's sorted);
        a glob may match nothing."""
        is_glob = any(ch in name for ch in "*?[")
        if name.startswith(("/", "./", "../")):
            candidates = [name]
        elif is_glob:  # nft stacks each path's matches: the last path's are read first
            candidates = [os.path.join(p, name) for p in reversed(self.include_paths)]
        else:
            candidates = [os.path.join(p, name) for p in self.include_paths]
        found: list[str] = []
        for cand in candidates:
            if is_glob:
                found += [p for p in sorted(glob.glob(cand)) if not os.path.isdir(p)]
            elif os.path.exists(cand):
                if not os.path.isdir(cand):
                    found.append(cand)
                if not is_glob:
                    break
        if not found and not is_glob and not any(os.path.isdir(c) for c in candidates):
            raise located(src, loc[1], loc[2], loc[3], f"File not found: {name}")
        return found

    # -- defines
    def define(self, tree: Any, src: Source) -> None:
        """``define``, ``redefine`` (in this block's scope) or ``undefine``."""
        kind = tree.data
        name_tok = tree.children[0]
        name = _unquote(str(name_tok))
        if kind == "undefine":
            s: Scope | None = self.scope
            while s is not None and name not in s.defines:
                s = s.parent
            if s is not None:  # nft 1.0.6 lets an unknown name pass
                del s.defines[name]
            return
        if kind == "define" and name in self.scope.defines:
            raise located(src, name_tok.line, name_tok.column, name_tok.end_column - 1,
                          f"redefinition of symbol '{name}'")
        self.scope.defines[name] = self.items(tree.children[1], src)

    def emit(self, verb: str, kind: str, body: Any, src: Source, pos: Pos) -> None:
        self.out.append(Located({verb: {kind: body}}, src, pos.line, pos.column))

    # -- top level
    def commands(self, children: list[Any], src: Source) -> None:
        for t in children:
            if t.data in ("define", "redefine", "undefine"):
                self.define(t, src)
            elif t.data == "include":
                self.include(t, src)
            else:
                self.command(t, src)

    def _spec(self, tree: Any, src: Source) -> list[Tok]:
        toks = []
        for ch in tree.children:
            if ch.type == "VAR":
                val = self.scope.lookup(ch[1:])
                if val is None:
                    raise located(src, ch.line, ch.column + 1, ch.end_column - 1,
                                  f"unknown identifier '{ch[1:]}'")
                toks += [v for v in val if isinstance(v, Tok)]
            else:
                toks.append(Tok(ch.type, str(ch), src, ch.line, ch.column, ch.end_column - 1))
        return toks

    def _family_names(self, toks: list[Tok], n: int, what: str, last: Any) -> tuple[str, list[str]]:
        """[family] name1 ... name_n from a command's spec."""
        names = [_unquote(t.text) for t in toks]
        fam = "ip"
        if len(names) == n + 1 and names[0] in FAMILIES:
            fam = names.pop(0)
        elif len(names) == n + 1 and toks[0].kind == "WORD":
            raise at(toks[0], f"syntax error, unexpected {toks[0].text}")
        if len(names) != n:
            it = toks[n] if len(toks) > n else (toks[-1] if toks else last)
            raise at(it, f"syntax error, {what} expected")
        return fam, names

    def command(self, t: Any, src: Source) -> None:
        verb = "add"
        ch = t.children
        if ch[0].data == "verb":
            verb = str(ch[0].children[0])
            ch = ch[1:]
        obj = ch[0]
        kind = obj.data
        m = _pos(obj)
        whole = Tok("WORD", kind, src, m.line, m.column, m.end_column - 1)
        if kind == "rule":
            self.rule_command(verb, obj, src)
            return
        if kind == "ruleset":
            if verb != "flush":
                raise at(whole, f"syntax error, unexpected ruleset after {verb}")
            self.emit("flush", "ruleset", None, src, m)
            return
        args = list(obj.children)
        ckind = kind
        if kind == "obj":
            ckind = str(args.pop(0).children[0])
        elif kind == "ctobj":
            ckind = "ct " + str(args.pop(0))
        spec = self._spec(args.pop(0), src)
        blk = args[0] if args else None
        if kind == "table":
            if verb in ("delete", "destroy") and len(spec) >= 2 and spec[-2].text == "handle":
                fam, _ = self._family_names(spec[:-1], 1, "table name", whole)
                self.emit(verb, "table", {"family": fam, "handle": _number(spec[-1].text)},
                          src, m)
                return
            fam, (name,) = self._family_names(spec, 1, "table name", whole)
            tbody: dict[str, Any] = {"family": fam, "name": name}
            self.emit(verb, "table", tbody, src, m)
            if blk is not None:
                self.push()
                try:
                    self.table_lines(blk.children, src, (fam, name, tbody))
                finally:
                    self.pop()
            return
        if kind == "element":
            fam, (table, name) = self._family_names(spec, 2, "set name", whole)
            g = self.group(blk, src)
            is_map = any(isinstance(x, Tok) and x.text == ":" for e in g.elems for x in e)
            elems = Statements(fam).elements(g, is_map)
            self.emit(verb, "element", {"family": fam, "table": table, "name": name,
                                        "elem": elems}, src, m)
            return
        if verb in ("delete", "destroy") and len(spec) >= 2 and spec[-2].text == "handle":
            fam, (table,) = self._family_names(spec[:-2], 1, "table name", whole)
            self.emit(verb, ckind, {"family": fam, "table": table,
                                    "handle": _number(spec[-1].text)}, src, m)
            return
        fam, (table, name) = self._family_names(spec, 2, f"{kind} name", whole)
        if kind == "chain":
            self.chain(verb, fam, table, name, blk, src, m)
        elif kind in ("set", "map"):
            self.set(verb, kind, fam, table, name, blk, src, m)
        elif kind == "flowtable":
            raise at(whole, "flowtables are not supported by nfkit (this kernel has none)")
        else:
            self.obj(verb, ckind, fam, table, name, blk, src, m)

    def push(self) -> None:
        self.scope = Scope(parent=self.scope)

    def pop(self) -> None:
        assert self.scope.parent is not None
        self.scope = self.scope.parent

    def rule_stmts(self, fam: str, items: list[Item], last: Item) -> tuple[list[Any], str | None]:
        """A rule's statements and comment, from a template of its shape when there is one."""
        if not self.use_templates:
            return Statements(fam).rule(items, last)
        key_parts: list[Any] = [fam]
        for it in items:
            if isinstance(it, Group):
                return Statements(fam).rule(items, last)
            # A quoted "@name" reads as a set reference: a shape of its own.
            key_parts.append((it.kind if it.text[:2] != '"@' else "STRING@")
                             if it.kind in _VALUE_KINDS else it.text)
        key = tuple(key_parts)
        tpl = self.templates.get(key)
        if tpl is not None:
            if tpl is not _NO_TEMPLATE and all(
                    items[i].text == text for i, text in tpl.fixed):
                return tpl.build([_slot_value(it.kind, it.text) for it in items]), tpl.comment
            return Statements(fam).rule(items, last)
        stmts, comment = Statements(fam).rule(items, last)  # errors come from a full read
        st = Statements(fam)
        c = Cursor(items, last)
        st.marking = c
        c.marking = True
        try:
            marked, _ = st.rule_from(c)
            build = _builder(marked)
        except (NotTemplatable, TypeError):  # a marker compared, or computed with
            self.templates[key] = _NO_TEMPLATE
            return stmts, comment
        slots = set(re.findall(r"v\[(\d+)\]", _literal(marked)))
        fixed = [(i, it.text) for i, it in enumerate(items)
                 if it.kind in _VALUE_KINDS and str(i) not in slots]
        kinds = ["STRING@" if it.kind == "STRING" and it.text[:2] == '"@' else it.kind
                 for it in items]
        self.templates[key] = self.last = Template(
            build, fixed, comment, fam, kinds, [it.text for it in items])
        return stmts, comment

    def rule_line(self, fam: str, text: str) -> tuple[list[Any], str | None] | None:
        """A RULELINE's statements straight from its shape's template (no items made),
        or None when it has none (then it is read the usual way)."""
        last = self.last
        if last is not None and last.family == fam:
            if last.line_re is None:
                last.compile_line(_parser().parser.lexer.alternatives)
            stmts = last.read_line(text)
            if stmts is not None:
                return stmts, last.comment
        key_parts: list[Any] = [fam]
        texts: list[str] = []
        vals: list[Any] = []
        tokens = _tokens(text)
        if tokens is None:
            return None
        for kind, w in tokens:
            if kind in _VALUE_KINDS:
                key_parts.append(kind if w[:2] != '"@' else "STRING@")
                vals.append(_slot_value(kind, w))
            elif kind == "VAR":
                return None
            else:
                key_parts.append(w)
                vals.append(None)
            texts.append(w)
        tpl = self.templates.get(tuple(key_parts))
        if tpl is None or tpl is _NO_TEMPLATE:
            return None
        for i, t in tpl.fixed:
            if texts[i] != t:
                return None
        self.last = tpl
        return tpl.build(vals), tpl.comment

    def learn_anon(self, fam: str, text: str, items: list[Item]) -> None:
        """The template of rule line ``text`` (just read in full) if it has one anonymous
        set of plain values: its statements with the set's elements as a slot, learned
        by reading them marked (a rule whose reading looks at the elements has none)."""
        key = _anon_key(fam, text)
        if key is None or key[0] in self.anon:
            return
        groups = [it for it in items if isinstance(it, Group)]
        build = None
        if len(groups) == 1:
            st = _AnonMarking(fam)
            st.group = groups[0]
            try:
                marked, comment = st.rule(items, items[-1])
                source = _literal(marked)
                if source.count("v[0]") == 1 and "v[" not in source.replace("v[0]", ""):
                    build = (_builder(marked), comment)
            except (NotTemplatable, TypeError, NfkitError):
                build = None
        self.anon[key[0]] = build

    def anon_line(self, fam: str, text: str) -> tuple[list[Any], str | None] | None:
        """Rule line ``text`` with one anonymous set of plain values (`_anon_elements`)
        from the template its shape learned (`learn_anon`), or None: read in full."""
        key = _anon_key(fam, text)
        if key is None:
            return None
        build = self.anon.get(key[0])
        if build is None:
            return None
        elems = _anon_elements(key[1])
        if elems is None:
            return None
        stmts, comment = build
        return stmts([elems]), comment

    def run_line(self, text: str, ln: int, col: int, lsrc: Source, where: tuple[str, ...]
                 ) -> bool:
        """Take rule line ``text`` into the run the previous line opened, if it is one
        of its template in the same chain (learned from the compiler when a run
        starts); False leaves it to the usual way."""
        assert self.open_run is not None
        tpl, run_where, idx, first = self.open_run
        if run_where != where or idx != len(self.out) - 1:
            self.open_run = None
            return False
        m = tpl.line_re.match(text)
        item = self.out[idx].item
        if type(item) is TextRun:
            if not item.takes(m):
                self.open_run = None
                return False
        else:
            # The second line of a run: the previous one (a plain rule) joins it.
            m0 = tpl.line_re.match(first)
            if m is None or m0 is None:
                self.open_run = None
                return False
            learned = self._learned(tpl, where, m0)
            if learned is None:
                self.open_run = None
                return False
            item = TextRun(tpl, learned, where[0], where[1], where[2], lsrc)
            if not item.takes(m0) or not item.takes(m):
                self.open_run = None
                return False
            prev = self.out[idx]
            item.add(m0, prev.line, prev.col)
            self.out[idx] = Located(item, prev.src, prev.line, prev.col)  # type: ignore[arg-type]
        item.add(m, ln, col)  # type: ignore[arg-type]
        return True

    def run_lines(self, text: str, pos: int, ln: int, col: int, lsrc: Source,
                  where: tuple[str, ...]) -> tuple[int, int] | None:
        """The lines of one learned template of this chain from ``text[pos:]`` (a
        RULELINE run of the lexer), matched one after another in C, into the open
        run or a new one: (where they end, how many); None when none is."""
        from nfkit.nftables.bulkjson import consecutive

        nl = text.find("\n", pos)
        if text.find("{", pos, nl if nl >= 0 else len(text)) >= 0:
            return None  # no template has a brace group
        run: Any = None
        ms: list[re.Match[str]] = []
        after: Any = None  # the learned template of the run that ends here
        if self.open_run is not None:
            _tpl, run_where, idx, _first = self.open_run
            if run_where == where and idx == len(self.out) - 1:
                run = self.out[idx].item
                if type(run) is TextRun and run.learned.bulk is not None and run.src is lsrc:
                    last = run.matches[-1] if run.matches else None
                    if last is not None and last.end() == pos and last.string is text:
                        after = run.learned  # its lines stopped matching right here
                    else:
                        ms = consecutive(run.learned.bulk, text, pos)
        if not ms:
            run = None
            # the learned templates whose sample line starts with this line's word,
            # the one that followed this run's template last time first
            head = text[pos:pos + 64]
            start = pos + len(head) - len(head.lstrip(" \t\f"))
            end = text.find(" ", start, start + 64)
            word = text[start:end] if end > 0 else ""
            candidates = self.chain_learned.get((*where, word), ())
            nxt = self.follows.get(id(after)) if after is not None else None
            if nxt is not None and nxt[2] == word:
                candidates = (nxt[:2], *candidates)
            for tpl, learned in candidates:
                if learned.bulk.match(text, pos) is None:
                    continue
                ms = consecutive(learned.bulk, text, pos)
                if ms:
                    if after is not None:
                        self.follows[id(after)] = (tpl, learned, word)
                    run = TextRun(tpl, learned, where[0], where[1], where[2], lsrc)
                    self.out.append(Located(run, lsrc, ln, col))  # type: ignore[arg-type]
                    self.open_run = (tpl, where, len(self.out) - 1, "")
                    break
            if run is None:
                return None
        run.segments.append((len(run.matches), ln, col if pos == 0 else 0))
        run.matches += ms
        return ms[-1].end(), len(ms)

    def _learned(self, tpl: Template, where: tuple[str, ...], m: re.Match[str]
                 ) -> LearnedLine | None:
        """A learned template of ``tpl`` in chain ``where`` whose fixed values are
        line ``m``'s, learned now if none is (a few per template at most)."""
        known = self.learned.setdefault((id(tpl), *where), [])
        for ln in known:
            if ln is not None and ln.fits(m):
                return ln
        if len(known) >= 16:  # a few per template (prefix lengths, text lengths)
            return None
        ln = learn_line(tpl, where[0], where[1], where[2], m)
        known.append(ln)
        if ln is not None and ln.bulk is not None:
            first = m.group(0).lstrip(" \t\f").split(" ", 1)[0]
            self.chain_learned.setdefault((*where, first), []).append((tpl, ln))
        return ln

    def rule_command(self, verb: str, obj: Any, src: Source) -> None:
        items = self.items(obj.children[0], src)
        c = Cursor(items, items[-1])
        names: list[str] = []
        fam = "ip"
        if c.word() in FAMILIES and len(items) > 3:
            fam = c.name()
        names = [c.name(), c.name()]
        body: dict[str, Any] = {"family": fam, "table": names[0], "chain": names[1]}
        pos = c.accept("handle", "position", "index")
        if pos:
            n = c.integer()
            if verb in ("replace", "delete"):
                body["handle"] = n
            else:
                body["index" if pos == "index" else "position"] = n
        if verb == "delete":
            if "handle" not in body:
                raise c.unexpected("expecting handle")
            if not c.at_end():
                raise c.unexpected()
            self.emit("delete", "rule", body, src, _pos(obj))
            return
        if c.at_end():
            raise c.unexpected()
        stmts, comment = self.rule_stmts(fam, items[c.i:], items[-1])
        body["expr"] = stmts
        if comment is not None:
            body["comment"] = comment
        self.emit(verb, "rule", body, src, _pos(obj))

    # -- blocks
    def _lines(self, children: list[Any], src: Source, ctx: Any, one_line: Any,
               start: str) -> None:
        fast = getattr(one_line, "fast", None)  # a chain's template path: no tree a line
        bulk = getattr(one_line, "bulk", None)  # and its runs of lines, read at once
        for t in children:
            if not hasattr(t, "data"):  # a block's braces
                continue
            if t.data == "line" and not hasattr(t.children[0], "data") and "\n" in t.children[0]:
                for sub in _split_run(t.children[0], fast, src, bulk):
                    one_line(sub, src, ctx)
                continue
            if t.data in ("define", "redefine", "undefine"):
                self.define(t, src)
            elif t.data == "include":
                self.include(t, src, start, ctx)
            else:
                one_line(t, src, ctx)

    def table_lines(self, children: list[Any], src: Source, ctx: Any) -> None:
        self._lines(children, src, ctx, self.table_line, "table_lines")

    def body_lines(self, children: list[Any], src: Source, ctx: Any) -> None:
        self._lines(children, src, ctx, ctx[0], "body_lines")

    def table_line(self, t: Any, src: Source, ctx: Any) -> None:
        fam, table, tbody = ctx
        k = t.data
        if k == "line":
            items = self.line_items(t, src)
            c = Cursor(items, items[-1])
            w = c.word()
            if w == "flags":
                c.i += 1
                flags = [c.name()]
                while c.accept(","):
                    flags.append(c.name())
                tbody["flags"] = flags[0] if len(flags) == 1 else flags
            elif w == "comment":
                c.i += 1
                tbody["comment"] = c.name()
            else:
                raise c.unexpected()
            if not c.at_end():
                raise c.unexpected()
            return
        name = _unquote(str(t.children[-2]))
        blk = t.children[-1]
        tpos = _pos(t)
        if k == "tchain":
            self.chain("add", fam, table, name, blk, src, tpos)
        elif k in ("tset", "tmap"):
            self.set("add", k[1:], fam, table, name, blk, src, tpos)
        elif k == "tflowtable":
            raise located(src, tpos.line, tpos.column, tpos.end_column - 1,
                          "flowtables are not supported by nfkit (this kernel has none)")
        elif k == "tobj":
            self.obj("add", str(t.children[0].children[0]), fam, table, name, blk, src, tpos)
        elif k == "tctobj":
            self.obj("add", "ct " + str(t.children[0]), fam, table, name, blk, src, tpos)

    def _block_lines(self, blk: Any, src: Source, on_line: Any) -> None:
        if blk is None:
            return
        self.push()
        try:
            self._lines(blk.children, src, (on_line,), on_line, "body_lines")
        finally:
            self.pop()

    def chain(self, verb: str, fam: str, table: str, name: str, blk: Any, src: Source,
              meta: Pos) -> None:
        body: dict[str, Any] = {"family": fam, "table": table, "name": name}
        idx = len(self.out)
        self.emit(verb, "chain", body, src, meta)
        if verb in ("delete", "destroy", "flush"):
            return

        def line(t: Any, lsrc: Source, _ctx: Any) -> None:
            ch = t.children[0]
            if not hasattr(ch, "data") and fast(str(ch), ch.line, ch.column, lsrc):
                return
            items = self.line_items(t, lsrc)
            c = Cursor(items, items[-1])
            w = c.word()
            if w == "type" and c.word(2) == "hook":
                c.i += 1
                body["type"] = c.name()
                c.expect("hook")
                body["hook"] = c.name()
                while True:
                    if c.accept("device"):
                        body["dev"] = self._dev(c)
                    elif c.word() == "devices" and c.word(1) == "=":
                        c.i += 2
                        body["dev"] = self._dev(c)
                    elif c.accept("priority"):
                        body["prio"] = self._priority(c, fam, body["hook"])
                    else:
                        break
                if "prio" not in body:
                    raise c.unexpected("expecting priority")
            elif w == "policy":
                c.i += 1
                body["policy"] = c.expect("accept", "drop")
            elif w == "comment" and c.word(2) is None and len(items) == 2:
                c.i += 1
                body["comment"] = c.name()
            elif w == "devices" and c.word(1) == "=":
                c.i += 2
                body["dev"] = self._dev(c)
            else:
                stmts, comment = self.rule_stmts(fam, items, items[-1])
                if self.use_templates and not hasattr(ch, "data"):
                    self.learn_anon(fam, str(ch), items)
                rb: dict[str, Any] = {"family": fam, "table": table, "chain": name,
                                      "expr": stmts}
                if comment is not None:
                    rb["comment"] = comment
                first = items[0]
                self.emit("add", "rule", rb, lsrc, Pos(first.line, first.col, first.end + 1))
                return
            if not c.at_end():
                raise c.unexpected()

        def fast(text: str, ln: int, col: int, lsrc: Source) -> bool:
            if not self.use_templates:
                return False
            if "{" in text:  # an anonymous set's line: its own templates (`AnonLine`)
                hit = self.anon_line(fam, text)
                if hit is None:
                    return False
                rb: dict[str, Any] = {"family": fam, "table": table, "chain": name, "expr": hit[0]}
                if hit[1] is not None:
                    rb["comment"] = hit[1]
                self.emit("add", "rule", rb, lsrc, Pos(ln, col, col))
                return True
            if self.open_run is not None and self.run_line(text, ln, col, lsrc, where):
                return True
            # a line on its own (a comment after it): a learned template of this chain
            if self.run_lines(text, 0, ln, col, lsrc, where) is not None:
                return True
            hit = self.rule_line(fam, text)
            if hit is None:
                return False
            tpl = self.last
            if hit[1] is None and tpl is not None and self.learned.get((id(tpl), *where)):
                # a template learned here before, with other fixed values (a prefix
                # length): learned for these now, the line is the start of a run
                m = tpl.line_re.match(text)
                if m is not None and self._learned(tpl, where, m) is not None and \
                        self.run_lines(text, 0, ln, col, lsrc, where) is not None:
                    return True
            rb = {"family": fam, "table": table, "chain": name, "expr": hit[0]}
            if hit[1] is not None:
                rb["comment"] = hit[1]
            self.emit("add", "rule", rb, lsrc, Pos(ln, col, col + len(text)))
            if hit[1] is None and self.last is not None:
                self.open_run = (self.last, where, len(self.out) - 1, text)
            return True

        where = (fam, table, name)

        def bulk(text: str, pos: int, ln: int, col: int, lsrc: Source) -> Any:
            return self.run_lines(text, pos, ln, col, lsrc, where) \
                if self.use_templates else None

        line.bulk = bulk  # type: ignore[attr-defined]

        line.fast = fast  # type: ignore[attr-defined]
        self._block_lines(blk, src, line)
        if "hook" in body and verb == "add" and self.out[idx].item[verb]["chain"] is body:
            body.setdefault("policy", "accept")

    def _dev(self, c: Cursor) -> Any:
        it = c.take()
        if isinstance(it, Group):
            devs = [_unquote(e[0].text) for e in it.elems if isinstance(e[0], Tok)]
            return devs[0] if len(devs) == 1 else devs
        return _unquote(it.text)

    def _priority(self, c: Cursor, fam: str, hook: str) -> int:
        it = c.peek()
        if isinstance(it, Tok) and it.kind in ("WORD", "STRING"):
            c.i += 1
            names = BRIDGE_PRIORITIES if fam == "bridge" else PRIORITIES
            base = names.get(_unquote(it.text))
            if base is None:
                raise at(it, f"'{_unquote(it.text)}' is invalid priority in this context.")
            if c.word() in ("+", "-"):
                sign = 1 if c.take().text == "+" else -1
                return base + sign * c.integer()
            return base
        return c.integer()

    def set(self, verb: str, kind: str, fam: str, table: str, name: str, blk: Any, src: Source,
            meta: Pos) -> None:
        body: dict[str, Any] = {"family": fam, "table": table, "name": name}
        idx = len(self.out)
        self.emit(verb, kind, body, src, meta)
        if verb in ("delete", "destroy", "flush"):
            return
        st = Statements(fam)
        pending_elems: list[Any] = []

        def line(t: Any, lsrc: Source, _ctx: Any) -> None:
            if t.data == "elements_line":
                pending_elems.extend(st.elements(self.group(t.children[-1], lsrc),
                                                 kind == "map"))
                return
            items = self.line_items(t, lsrc)
            c = Cursor(items, items[-1])
            w = c.expect("type", "typeof", "flags", "elements", "timeout", "gc-interval", "size",
                         "policy", "counter", "comment", "auto-merge")
            if w == "type":
                types = [c.name()]
                while c.accept("."):
                    types.append(c.name())
                body["type"] = types[0] if len(types) == 1 else types
                if c.accept(":"):
                    if kind != "map":
                        raise at(c.last, "syntax error, unexpected colon")
                    data = [c.name()]
                    while c.accept("."):
                        data.append(c.name())
                    body["map"] = " . ".join(data)
            elif w == "typeof":
                body["type"], body["typeof"] = self._typeof(c, st)
                if c.accept(":"):
                    if kind != "map":
                        raise at(c.last, "syntax error, unexpected colon")
                    if c.accept("verdict"):
                        body["map"] = "verdict"
                    else:
                        dtype, body["map-typeof"] = self._typeof(c, st)
                        body["map"] = dtype if isinstance(dtype, str) else " . ".join(dtype)
            elif w == "flags":
                flags = [c.name()]
                while c.accept(","):
                    flags.append(c.name())
                body["flags"] = flags
            elif w == "elements":
                c.expect("=")
                g = c.take()
                if not isinstance(g, Group):
                    raise at(g, f"syntax error, unexpected {g.text}, expecting '{{'")
                pending_elems.extend(st.elements(g, kind == "map"))
            elif w in ("timeout", "gc-interval"):
                body[w] = c.time()
            elif w == "size":
                body["size"] = c.integer()
            elif w == "policy":
                body["policy"] = c.expect("performance", "memory")
            elif w == "counter":
                body["stmt"] = [{"counter": None}]
            elif w == "comment":
                body["comment"] = c.name()
            elif w == "auto-merge":
                body["auto-merge"] = True
            if not c.at_end():
                raise c.unexpected()

        self._block_lines(blk, src, line)
        if pending_elems:
            body["elem"] = pending_elems
        if verb == "add" and "type" not in body and self.out[idx].item[verb][kind] is body:
            raise located(src, meta.line, meta.column, meta.end_column - 1,
                          f"{kind} definition does not specify key")

    def _typeof(self, c: Cursor, st: Statements) -> tuple[str | list[str], Any]:
        """``typeof EXPR [. EXPR]`` -> the datatype names nft derives (one, or a list
        for a concatenation), and the expression (nft keeps its typeof record in the
        set's user data, for its text listing: `messages` writes it as nft does)."""
        first = c.peek()
        expr = st.concat(c, selectors_only=True)
        parts = expr["concat"] if isinstance(expr, dict) and "concat" in expr else [expr]
        names = []
        for p in parts:
            name = _dtype_of(p)
            # (an integer field's width is the expression's: see compiler.set_key_types)
            if name is None or name not in T or name in _NO_SET_TYPES - _WIDTH_FROM_EXPR:
                assert first is not None
                raise at(first, "typeof of this expression is not supported by nfkit: use type")
            names.append(name)
        return (names[0] if len(names) == 1 else names), expr

    def obj(self, verb: str, kind: str, fam: str, table: str, name: str, blk: Any, src: Source,
            meta: Pos) -> None:
        body: dict[str, Any] = {"family": fam, "table": table, "name": name}
        self.emit(verb, kind, body, src, meta)
        if verb in ("delete", "destroy", "reset"):
            return
        st = Statements(fam)

        def line(t: Any, lsrc: Source, _ctx: Any) -> None:
            items = self.line_items(t, lsrc)
            c = Cursor(items, items[-1])
            if c.word() == "comment":
                c.i += 1
                body["comment"] = c.name()
            elif kind == "counter":
                if c.accept("packets"):
                    body["packets"] = c.integer()
                if c.accept("bytes"):
                    body["bytes"] = c.integer()
            elif kind == "quota":
                q = st.quota_body(c)
                mult = {"bytes": 1, "kbytes": 1024, "mbytes": 1024 ** 2, "gbytes": 1024 ** 3}
                body["bytes"] = q["val"] * mult[q["val_unit"]]
                if "used" in q:
                    body["used"] = q["used"] * mult[q["used_unit"]]
                if q.get("inv"):
                    body["inv"] = True
            elif kind == "limit":
                c.expect("rate")
                body.update(st.limit_body(c))  # the keys of nft's JSON (rate_unit, ...)
            elif kind == "ct helper":
                while not c.at_end():
                    w = c.expect("type", "protocol", "l3proto")
                    body[w] = c.name()
            elif kind == "ct expectation":
                w = c.expect("protocol", "dport", "timeout", "size", "l3proto")
                if w == "timeout":  # milliseconds in nft's JSON
                    body[w] = int(c.time() * 1000)
                else:
                    body[w] = c.integer() if w in ("dport", "size") else c.name()
            elif kind == "ct timeout":
                w = c.expect("protocol", "l3proto", "policy")
                if w == "policy":
                    c.expect("=")
                    g = c.take()
                    if not isinstance(g, Group):
                        raise at(g, "syntax error, expecting {")
                    policy = body.setdefault("policy", {})
                    for el in g.elems:
                        ec = Cursor(el, g)
                        state = ec.name()
                        ec.expect(":")
                        policy[state] = ec.integer()
                        if not ec.at_end():
                            raise ec.unexpected()
                else:
                    body[w] = c.name()
            elif kind == "synproxy":
                while not c.at_end():
                    w = c.expect("mss", "wscale", "timestamp", "sack-perm")
                    if w in ("mss", "wscale"):
                        body[w] = c.integer()
                    else:
                        body.setdefault("flags", []).append(w)
            else:
                raise at(items[0], f"{kind} objects are not supported by nfkit")
            if not c.at_end():
                raise c.unexpected()

        self._block_lines(blk, src, line)


# ---- entry points --------------------------------------------------------------------------

def read_nft(text: str, name: str = "-", include_paths: tuple[str, ...] | list[str] = ()
             ) -> list[Located]:
    """nft text -> its commands as libnftables JSON items, each with its source position.

    Raises InputError in nft's form (file:line:col, the line, carets) for a syntax
    error, an unknown variable, a missing include or a value nfkit cannot read."""
    r = Reader(include_paths)
    r.read_text(text, name)
    return r.out


def to_json(text: str, name: str = "-", include_paths: tuple[str, ...] | list[str] = ()
            ) -> dict[str, Any]:
    """nft text -> a libnftables JSON command document ({"nftables": [...]})."""
    return {"nftables": [x.item for x in expanded(read_nft(text, name, include_paths))]}


def expanded(out: list[Located]) -> list[Located]:
    """``out`` (of `read_nft`) with each run of lines (`TextRun`) as one JSON rule
    command a line, at its line and column."""
    items: list[Located] = []
    for x in out:
        if type(x.item) is not TextRun:
            items.append(x)
            continue
        run = x.item
        for k in range(len(run.matches)):
            line, col = run.where(k)
            items.append(Located({"add": {"rule": {
                "family": run.family, "table": run.table, "chain": run.chain,
                "expr": run.statements(k)}}}, run.src, line, col))
    return items


class NftCommands(list[Any]):
    """`jsonfmt.Command`s read from nft text, with where each object came from."""

    where: dict[int, Located]  # id(command's object) -> its position in the text

    def locate(self, exc: NfkitError) -> NfkitError:
        """The kernel's refusal ``exc`` in nft's form, at the line of the object it
        names (as nft reports it), or ``exc`` itself when it names none of them."""
        for e in getattr(exc, "errors", ()):
            what = e.what
            loc = self.where.get(id(what))
            if loc is None and isinstance(what, str):
                loc = next((self.where[id(c.obj)] for c in self
                            if id(c.obj) in self.where and str(c.obj) == what), None)
            if loc is not None:
                end = len(loc.src.line(loc.line))
                return located(loc.src, loc.line, loc.col, max(end, loc.col), str(exc))
            if isinstance(what, str):  # a row of a run of lines: found by its text
                for c in self:
                    run = getattr(getattr(c.obj, "row_rule", None), "__self__", None)
                    if type(run) is not TextRun:
                        continue
                    for k in range(len(run.matches)):
                        if str(run.rule(None, k)) == what:
                            line, col = run.where(k)
                            end = len(run.src.line(line))
                            return located(run.src, line, col, max(end, col), str(exc))
        return exc


def load_nft(text: str, name: str = "-", include_paths: tuple[str, ...] | list[str] = ()
             ) -> NftCommands:
    """nft text -> `jsonfmt.Command`s in an order the kernel accepts (as `jsonfmt.load_json`).

    A rule remembers its file and line, so an error the encoder finds later names
    them; `NftCommands.locate` puts the kernel's refusal at its line."""
    from nfkit.nftables.jsonfmt import Command, item_command, no_gc, order_commands

    with no_gc():
        located_items = read_nft(text, name, include_paths)
        try:
            cmds: list[Command] = []
            packed = packed_runs([x.item for x in located_items  # type: ignore[misc]
                                  if type(x.item) is TextRun])
            for i, x in enumerate(located_items):
                if type(x.item) is TextRun:
                    cmds.append(Command("add", "rule", x.item.as_rule_run(packed.get(id(x.item)))))
                    continue
                c = item_command(i, x.item)
                if c is not None:
                    cmds.append(c)
            cmds = order_commands(cmds)
        except InputError as exc:
            m = re.search(r"#(\d+)", str(exc))
            if m is None or int(m.group(1)) >= len(located_items):
                raise
            loc = located_items[int(m.group(1))]
            raise located(loc.src, loc.line, loc.col, loc.col, str(exc)) from None
        out = NftCommands(cmds)
        out.where = {}
        for cmd in cmds:
            if cmd.kind == "rule" and type(cmd.obj) is not Rule:  # a run: its rows know
                continue
            if cmd.kind == "rule":
                src = cmd.obj.source
                i = src if isinstance(src, int) else int(str(src).lstrip("#"))
                loc = located_items[i]
                cmd.obj.source = f"{loc.src.name}:{loc.line}"
                out.where[id(cmd.obj)] = loc
        # Other objects (few): by the JSON body they were made from, on their names.
        others = [c for c in cmds if c.kind != "rule"]
        for x in located_items:
            if type(x.item) is TextRun:
                continue
            (verb, inner), = x.item.items()
            (kind, body), = inner.items()
            if kind == "rule":
                continue
            for cmd in others:
                if cmd.kind == kind and cmd.verb == verb and id(cmd.obj) not in out.where \
                        and _same_object(cmd.obj, body):
                    out.where[id(cmd.obj)] = x
                    break
        return out


def _same_object(obj: Any, body: Any) -> bool:
    if not isinstance(body, dict):
        return obj is None
    for attr in ("family", "table", "name"):
        if attr in body and getattr(obj, attr, body[attr]) != body[attr]:
            return False
    return True
