"""Reading big libnftables JSON rule files as text templates.

This module owns the fast path of `nfkit rules load|check`.  A file of tens of
thousands of rules is mostly a few rule *shapes*: the same statements with
other addresses and ports.  The first rule of a shape is read as JSON by the
general reader (jsonfmt); its exact text becomes a template, a regular
expression whose only variable parts are the compared values ("right" of each
match).  Later rules of that shape are matched as text, and their values go
to the encoder in columns (`messages.Encoder.rule_run`), which patches them into
the message encoded once for the shape.  Anything else, and any rule whose
text differs from every template in more than those values, is read by the
general reader, so the commands mean the same either way; a document this
reader does not follow is handed back whole to the general reader, which also
reports syntax errors.
"""

from __future__ import annotations

import functools
import json
import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice, repeat
from typing import Any

from nfkit.nftables.jsonfmt import Command, item_command, load_json, no_gc, order_commands
from nfkit.nftables.model import FAMILIES, Rule
from nfkit.nftables.shapes import leaf_class, learn, leaves, value_regex

_HEAD = re.compile(r'\s*\{\s*"nftables"\s*:\s*\[\s*')
_END = re.compile(r'\]\s*\}\s*\Z')
_SEP = re.compile(r'\s*(?:,\s*|(?=\]))')
# After a templated rule: its separator, or the end of the array ahead.
_TAIL = r'(?:\s*,\s*|(?=\s*\]))'
_TOKEN = re.compile(r'(\s+)|("(?:[^"\\]|\\.)*")|(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null)'
                    r'|([{}\[\]:,])')
_INT = re.compile(r'-?(?:0|[1-9]\d*)\Z')
# JSON strings hold no raw control characters; a row that does is left to the
# general reader (which reports it).
_SLOT_STR = r'"([^"\\@\x00-\x1f][^"\\\x00-\x1f]*)"'
_SLOT_INT = r'(-?(?:0|[1-9]\d*))'
_HANDLE = r'(?:0|[1-9]\d*)'
_BODY_KEYS = {"family", "table", "chain", "expr"}
_MAX_SHAPES = 64


def consecutive(pattern: re.Pattern[Any], data: Any, pos: int, endpos: int | None = None
                ) -> list[re.Match[Any]]:
    """Matches of ``pattern`` one right after another from ``pos`` (each where the
    previous ended), found by the regex scanner without Python per match."""
    sc = pattern.scanner(data, pos) if endpos is None else pattern.scanner(  # type: ignore[attr-defined]
        data, pos, endpos)
    return list(iter(sc.match, None))


@dataclass(slots=True)
class RuleRun:
    """Consecutive rules of one shape read from a file (a command's object).

    ``sample`` is the first rule; ``matches`` holds each rule's text match (its
    groups are the compared values, of ``kinds`` int or str); ``first_item`` is
    the index of the first in the "nftables" array."""

    sample: Rule
    key: Any
    kinds: tuple[type, ...]
    text: str
    first_item: int
    matches: list[re.Match[str]] = field(default_factory=list)
    # The far half of a split scan: its value columns already encoded (one bytes
    # per slot) and each rule's offset in ``text``, instead of ``matches``.
    packed: list[bytes] | None = None
    row_starts: array[int] | None = None
    end: int = -1  # where the far half's text ends
    near_packed: list[bytes] | None = None  # the near half's columns, for its own run
    template: Any = None  # the learned shape's RuleTemplate (`_Shape.template`)
    places: list[int] = field(default_factory=list)  # each place's column
    parse: list[Any] = field(default_factory=list)  # each column's text -> value
    # Rule k of a run not read from JSON text (nft text: `nfttext`), for errors and
    # the rows the template does not take.
    row_rule: Any = None
    group_names: list[str] | None = None  # each column's group (None: the j+1-th)

    def encoded(self) -> tuple[list[Any], set[int]]:
        """Per place of the template, the values encoded (bytes of n values or a list
        of bytes), and the rows a value did not fit (the general path's work)."""
        return encode_places(self.template, self.places, self.parse,
                             {g: self.column(g) for g in set(self.places)})

    def column(self, j: int) -> list[str]:
        """Compared value ``j`` of every rule, as text."""
        g = j + 1 if self.group_names is None else self.group_names[j]
        return list(map(re.Match.group, self.matches, repeat(g)))

    # What the rest of the transaction layer asks of a rule command's object.
    @property
    def family(self) -> str:
        return self.sample.family

    @property
    def table(self) -> str:
        return self.sample.table

    @property
    def chain(self) -> str:
        return self.sample.chain

    @property
    def expr(self) -> list[dict[str, Any]]:
        return self.sample.expr

    def __len__(self) -> int:
        return len(self.row_starts) if self.row_starts is not None else len(self.matches)

    def rule(self, k: int) -> Rule:
        """Rule ``k`` of the run, read by the general reader (for errors and fallbacks)."""
        if self.row_rule is not None:
            return self.row_rule(self, k)  # type: ignore[no-any-return]
        start = self.row_starts[k] if self.row_starts is not None else self.matches[k].start()
        obj, _end = json.JSONDecoder().raw_decode(self.text, start)
        c = item_command(self.first_item + k, obj)
        assert c is not None
        return c.obj  # type: ignore[no-any-return]

    def __str__(self) -> str:
        return str(self.rule(0))


class _Shape:
    """One text template: the compiled pattern and what its first rule was.

    A new shape is a candidate: its pattern lets every value that may be a slot
    (`shapes.leaf_class`) vary.  When a second rule matches it, the shape is
    learned from the compiler (`shapes.learn`): the values that are not slots
    become literal text, and the pattern is made again."""

    __slots__ = ("pattern", "key", "kinds", "listing", "sample", "hits", "prefix", "slots",
                 "tokens", "template", "places", "parse", "obj", "dead")

    def __init__(self, pattern: re.Pattern[str], key: Any, kinds: tuple[type, ...],
                 listing: bool, sample: Rule, prefix: str) -> None:
        self.pattern = pattern
        self.prefix = prefix  # the text before the first value: where a rule may start
        self.slots: Any = None  # the value encoders, compiled when a scan is split
        self.key = key
        self.kinds = kinds
        self.listing = listing
        self.sample = sample
        self.hits = 0
        self.tokens: list[tuple[str, int]] = []  # (regex part, leaf index or -1)
        self.template: Any = None  # a learned shape's RuleTemplate; None: a candidate
        self.places: list[int] = []  # each place's group (slot) index
        self.parse: list[Any] = []  # each group's text -> value (int or str)
        self.obj: Any = None  # the first rule's JSON item
        self.dead = False  # a candidate the compiler gave no template


def _rule_body(obj: Any) -> tuple[dict[str, Any], bool] | None:
    """(rule body, listing form) of an item a template may describe, else None."""
    if type(obj) is not dict or len(obj) != 1:
        return None
    (key, body), = obj.items()
    listing = key == "rule"
    if not listing:
        if key != "add" or type(body) is not dict or len(body) != 1 or "rule" not in body:
            return None
        body = body["rule"]
    if type(body) is not dict or not _BODY_KEYS <= set(body):
        return None
    extra = set(body) - _BODY_KEYS
    if extra and (extra != {"handle"} or not listing or type(body["handle"]) is not int):
        return None
    if (body["family"] not in FAMILIES or type(body["table"]) is not str
            or type(body["chain"]) is not str or type(body["expr"]) is not list):
        return None
    return body, listing


def make_shape(obj: Any, text: str, start: int, end: int, sample: Rule) -> _Shape | None:
    """A candidate template from item ``obj`` whose text is ``text[start:end]``, or
    None when the item is not a rule that one can describe."""
    rb = _rule_body(obj)
    if rb is None:
        return None
    body, listing = rb
    all_leaves = leaves(obj)
    expr_at = len(all_leaves[0][0]) - len(leaves(body)[0][0])  # depth of the body
    tokens: list[tuple[str, int]] = []
    pos = start
    k = 0  # the leaf of the next scalar token
    j = 0  # its index among the statements' leaves
    pending_string: str | None = None
    pending_ws = ""
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None:
            return None
        ws, string, lit, punct = m.groups()
        tok = m.group(0)
        pos = m.end()
        if ws is not None:
            if pending_string is not None:
                pending_ws += tok
            else:
                tokens.append((re.escape(tok), -1))
            continue
        if pending_string is not None:  # a string before ':' is a key, else a value
            if punct == ":":
                tokens.append((re.escape(pending_string), -1))
            else:
                if not _value_token(tokens, all_leaves, k, j, expr_at, pending_string):
                    return None
                j += _in_expr(all_leaves[k][0], expr_at)
                k += 1
            if pending_ws:
                tokens.append((re.escape(pending_ws), -1))
            pending_string, pending_ws = None, ""
        if string is not None:
            pending_string = tok
            continue
        if punct is not None:
            tokens.append((re.escape(tok), -1))
            continue
        if not _value_token(tokens, all_leaves, k, j, expr_at, tok):
            return None
        j += _in_expr(all_leaves[k][0], expr_at)
        k += 1
    if pending_string is not None or k != len(all_leaves):
        return None
    sh = _Shape(re.compile(""), None, (), listing, sample, "")
    sh.tokens = tokens
    sh.obj = obj
    _compile_pattern(sh, None)
    check = sh.pattern.match(text, start)
    if check is None or check.end() < end:
        return None
    return sh


def _in_expr(path: tuple[Any, ...], expr_at: int) -> int:
    return 1 if len(path) > expr_at and path[expr_at] == "expr" else 0


def _value_token(tokens: list[tuple[str, int]], all_leaves: list[Any], k: int, j: int,
                 expr_at: int, tok: str) -> bool:
    """Append value token ``tok`` (leaf ``k``; statement leaf ``j``): a handle is any
    number, a statement's value that may be a slot is marked, the rest is literal."""
    if k >= len(all_leaves):
        return False
    path, value = all_leaves[k]
    if json.loads(tok) != value or type(json.loads(tok)) is not type(value):
        return False
    if len(path) == expr_at + 1 and path[-1] == "handle":
        tokens.append((_HANDLE, -2))  # any handle: not literal text (nor a prefix)
    elif _in_expr(path, expr_at) and leaf_class(value) is not None:
        tokens.append((re.escape(tok), j))
    else:
        tokens.append((re.escape(tok), -1))
    return True


def _compile_pattern(sh: _Shape, slots: set[int] | None) -> None:
    """The shape's pattern: statement leaves in ``slots`` (None: every candidate) as
    groups of their class, the rest literal."""
    expr_leaves = leaves(_rule_body(sh.obj)[0]["expr"])  # type: ignore[index]
    parts: list[str] = []
    parse: list[Any] = []
    group_of: dict[int, int] = {}
    prefix_end: int | None = None
    for part, j in sh.tokens:
        if j == -2 and prefix_end is None:
            prefix_end = len(parts)
        if j < 0 or (slots is not None and j not in slots):
            parts.append(part)
            continue
        cls = leaf_class(expr_leaves[j][1])
        assert cls is not None
        if prefix_end is None:
            prefix_end = len(parts)
        rx = value_regex(cls)
        group_of[j] = len(parse)
        if cls[0] == "int":
            parts.append(f"({rx})")
            parse.append(int)
        else:
            parts.append(f'"({rx[1:-1]})"')
            parse.append(str)
    sh.pattern = re.compile("".join(parts) + _TAIL)
    sh.parse = parse
    sh.kinds = tuple(parse)
    sh.key = (slots is not None, "".join(parts))
    # the literal text before the first value (a rule start); unescaped tokens
    sh.prefix = "".join(re.sub(r"\\(.)", r"\1", p) for p in parts[:prefix_end or 0]) \
        if prefix_end else ""
    sh.slots = None
    sh.places = []
    if slots is not None:
        sh.places = [group_of[j] for j in sorted(group_of)]


def _learn(sh: _Shape, compilers: dict[tuple[str, str], Any]) -> bool:
    """Learn candidate ``sh`` from the compiler (see `_Shape`); False when it has no
    template (then its rules go the general way)."""
    from nfkit.nftables.compiler import RuleCompiler
    from nfkit.nftables.templates import RuleTemplate

    r = sh.sample
    fam_table = (r.family, r.table)

    def compile_expr(expr: list[Any]) -> bytes | None:
        rc = RuleCompiler(r.family, r.table, queue_mode=_no_queue)
        try:
            exprs, anon = rc.compile(expr)
        except Exception:  # any refusal: not a template; the general path reports it
            return None
        return None if anon else b"".join(exprs)

    compilers.setdefault(fam_table, None)
    tpl = learn(r.expr, compile_expr)
    if tpl is None:
        return False
    slot_leaves = {s.leaf for s in tpl.slots}
    _compile_pattern(sh, slot_leaves)
    # groups are in leaf order; each place takes its slot's group
    order = sorted(slot_leaves)
    group = {leaf: g for g, leaf in enumerate(order)}
    places = tpl.places()
    sh.places = [group[tpl.slots[k].leaf] for _o, _w, k in places]
    sh.template = RuleTemplate(r.family, r.table, r.chain, tpl.statics,
                               [(tpl.slots[k].encode, w, None) for _o, w, k in places])
    sh.slots = True
    return True


def _no_queue() -> str:
    raise LookupError("queue statements are not templated")


def load_json_runs(text: str | bytes, offload: Offload | None = None) -> list[Command]:
    """The commands of libnftables JSON text, as `jsonfmt.load_json` reads them, except that
    consecutive rules of one shape may come back as one command holding a `RuleRun`
    (read as text templates, for `run_commands`) instead of one `Rule` each.

    ``offload`` is the loader's offer of a second CPU: called with a function, it
    runs it elsewhere and returns a handle whose ``result()`` is what the function
    returned (None if it failed) and whose ``discard()`` abandons it; raising
    OSError declines.  With it, the far half of a long run (more than `SPLIT_MIN`
    of text left) is scanned there.  Raises InputError as load_json does."""
    if isinstance(text, str):
        with no_gc():
            cmds = scan(text, offload)
        if cmds is not None:
            return order_commands(cmds)
    return load_json(text)


def scan(text: str, offload: Offload | None = None) -> list[Command] | None:
    """The commands of a libnftables JSON document, rules of recurring shapes as
    `RuleRun`s; None when the document is not one this reader follows (then the
    general reader reads it, and reports its syntax errors).  ``offload``: see
    `load_json_runs`."""
    head = _HEAD.match(text)
    if head is None:
        return None
    pos = head.end()
    cmds: list[Command] = []
    shapes: list[_Shape] = []
    decode = json.JSONDecoder().raw_decode
    last: _Shape | None = None
    compilers: dict[tuple[str, str], Any] = {}
    alone_until = -1  # items before this offset are read one by one (no shape)
    i = 0
    while True:
        # Rules of a known shape (most often the one just seen), as many as follow
        # each other: the scanner matches them one after another in C.
        ms: list[re.Match[str]] = []
        far: RuleRun | None = None
        if pos >= alone_until:
            if last is not None:
                ms, far = _rows(last, text, pos, i, offload)
            if not ms:
                for sh in shapes:
                    if sh is not last:
                        ms, far = _rows(sh, text, pos, i, offload)
                        if ms:
                            last = sh
                            break
        if ms:
            assert last is not None
            if last.template is None:
                # A candidate: learned when it recurs; a rule alone, or rules of a
                # shape without a template, are read one by one.
                if len(ms) >= 2 and not last.dead and _learn(last, compilers):
                    if len(consecutive(last.pattern, text, pos, ms[1].end())) == 2:
                        continue  # scanned again with the learned pattern
                    # Its rules differ in values the template fixes (a prefix length,
                    # a name): no run of them, so none is learned again.
                    _compile_pattern(last, None)
                    last.template = None
                    last.dead = True
                last.dead = last.dead or len(ms) >= 2
                if len(ms) >= 2:  # `_rows` gave a live candidate's first two alone
                    ms = consecutive(last.pattern, text, pos)
                alone_until = ms[-1].end()
                last = None
                continue
            last.hits += len(ms)
            run = _new_run(cmds, last, text, i)
            run.matches = ms
            pos = ms[-1].end()
            i += len(ms)
            if far is not None:
                run.packed, far.near_packed = far.near_packed, None
                cmds.append(Command("add", "rule", far, None, last.listing))
                pos = far.end
                i += len(far)
            continue
        if _END.match(text, pos):
            j = pos - 1
            while text[j].isspace():
                j -= 1
            if text[j] == ",":
                return None  # a trailing comma: let the general reader say where
            return cmds
        try:
            obj, end = decode(text, pos)
        except json.JSONDecodeError:
            return None
        sep = _SEP.match(text, end)
        if sep is None:
            return None
        c = item_command(i, obj)
        if c is not None and c.kind == "rule" and len(shapes) >= _MAX_SHAPES:
            # Room is made only by shapes that never recurred; with none, no new
            # shape is even made (its tokenizing would be wasted).
            unused = [k for k, old in enumerate(shapes) if old.hits <= 1]
            if unused:
                del shapes[unused[0]]
        new = make_shape(obj, text, pos, end, c.obj) \
            if (c is not None and c.kind == "rule" and len(shapes) < _MAX_SHAPES
                and pos >= alone_until) else None
        if new is not None:
            shapes.append(new)
            last = new
            # Its own text is the first of the shape: the loop's next turn takes it
            # and every rule of the shape that follows.
            continue
        last = None
        if c is not None:
            cmds.append(c)
        pos = sep.end()
        i += 1


# A run is split between this process and the loader's offload when this much
# text is left (about 14,000 rules of 290 bytes).
SPLIT_MIN = 4 << 20
_CHUNK = 1 << 16
Offload = Callable[[Callable[[], Any]], Any]


def _rows(sh: _Shape, text: str, pos: int, i: int, offload: Offload | None
          ) -> tuple[list[re.Match[str]], RuleRun | None]:
    """The rules of shape ``sh`` that follow each other from ``pos``, as matches.

    With much text left and an ``offload`` from the loader, the far half of the
    run (from a rule start found by the shape's prefix) is scanned and encoded
    there, while this process scans the near half up to there; the far half is
    used only if the near half ends exactly where it begins (so it was a rule
    start), and comes back as a second, pre-encoded RuleRun.

    A candidate that may still be learned gives its first two rules alone: that is
    all learning needs, and a learned shape scans its run again."""
    if sh.template is None and not sh.dead:
        sc = sh.pattern.scanner(text, pos)  # type: ignore[attr-defined]
        return list(islice(iter(sc.match, None), 2)), None
    if offload is None or sh.template is None or not sh.prefix or len(text) - pos < SPLIT_MIN:
        return consecutive(sh.pattern, text, pos), None
    # A first chunk: most runs end within it (a file of many shapes), and only a
    # run that goes on past it is worth a second process.
    ms = consecutive(sh.pattern, text, pos, pos + _CHUNK)
    if not ms:
        return ms, None
    p = ms[-1].end()
    if sh.pattern.match(text, p) is None:
        return ms, None
    b = text.find(sh.prefix, p + (len(text) - p) // 2)
    if b < 0:
        return ms + consecutive(sh.pattern, text, p), None
    try:
        far = offload(functools.partial(_far_rows, sh, text, b))
    except OSError:  # no process to spare: one scan
        return ms + consecutive(sh.pattern, text, p), None
    ms += consecutive(sh.pattern, text, p, b)
    if ms[-1].end() != b:
        far.discard()
        return ms, None
    near = _encode_rows(sh, ms)  # while the far process does the same for its half
    got = far.result()
    if got is None:  # the far process could not do it all: scan on from here
        return ms + consecutive(sh.pattern, text, b), None
    end, packed, starts = got
    return ms, RuleRun(sh.sample, sh.key, sh.kinds, text, i + len(ms), packed=packed,
                       row_starts=starts, end=end, near_packed=near, template=sh.template,
                       places=sh.places, parse=sh.parse)


def _encode_rows(sh: _Shape, ms: list[re.Match[str]]) -> list[bytes] | None:
    """The value columns of rules ``ms`` encoded (one bytes per place), or None when
    a value needs the general path."""
    cols = [list(map(re.Match.group, ms, repeat(g + 1))) for g in range(len(sh.parse))]
    enc, bad = encode_places(sh.template, sh.places, sh.parse, cols)
    if bad:
        return None
    return [c if type(c) is bytes else b"".join(c) for c in enc]


def encode_places(tpl: Any, places: list[int], parse: list[Any], cols: Any
                  ) -> tuple[list[Any], set[int]]:
    """Text value columns -> per place of template ``tpl``, the values encoded, and the
    rows whose value does not fit its place."""
    from nfkit.nftables.messages import ARRAY_CODE, in_byte_order

    out: list[Any] = []
    bad: set[int] = set()
    for (encode, width, _op), g in zip(tpl.slots, places, strict=True):
        col = cols[g]
        if parse[g] not in (int, str):  # a reader's own parser: a refusal is a bad row
            out.append(_encode_each(encode, width, col, bad, parse[g]))
            continue
        if parse[g] is int:
            order = "big" if encode(1)[-1:] == b"\x01" else "little"
            code = ARRAY_CODE.get(width)
            if code is not None and width > 1:
                try:
                    a = array(code, map(int, col))
                except (OverflowError, ValueError):
                    pass
                else:
                    out.append(in_byte_order(a, order == "big").tobytes())
                    continue
            values: Any = map(int, col)
        else:
            values = col
        out.append(_encode_each(encode, width, values, bad))
    return out, bad


def _encode_each(encode: Callable[[Any], bytes], width: int, values: Any, bad: set[int],
                 parse: Callable[[str], Any] | None = None) -> list[bytes]:
    """Each of ``values`` encoded (after ``parse``, a reader's own parser, if given);
    a value refused, or encoded to another width, is zeros and its row goes into ``bad``."""
    if parse is None and type(values) is list:
        # All of them in one map (no Python per value) when every one fits; else one
        # by one, to find the rows that do not (the same bytes either way).
        try:
            enc = list(map(encode, values))
        except (OverflowError, OSError, ValueError, UnicodeError, TypeError):
            pass
        else:
            if set(map(len, enc)) <= {width}:
                return enc
    enc = []
    for k, v in enumerate(values):
        try:
            b = encode(v if parse is None else parse(v))
        except (OverflowError, OSError, ValueError, UnicodeError, TypeError):
            b = b""
        if len(b) != width:
            b = bytes(width)
            bad.add(k)
        enc.append(b)
    return enc


def _far_rows(sh: _Shape, text: str, b: int) -> Any:
    """The far half of a split run (see `_rows`): (end offset, packed columns, rule
    offsets), or None when a value needs the general path (the near side then scans
    on, in order).  Runs wherever the loader's ``offload`` runs it."""
    ms = consecutive(sh.pattern, text, b)
    packed = _encode_rows(sh, ms) if ms else None
    if packed is None:
        return None
    return ms[-1].end(), packed, array("q", map(re.Match.start, ms))


def _new_run(cmds: list[Command], sh: _Shape, text: str, i: int) -> RuleRun:
    run = RuleRun(sh.sample, sh.key, sh.kinds, text, i, template=sh.template,
                  places=sh.places, parse=sh.parse)
    cmds.append(Command("add", "rule", run, None, sh.listing))
    return run
