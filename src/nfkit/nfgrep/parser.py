"""Text of an nfgrep rule file -> checked tree (tree.py).

This module owns the lexer, the recursive-descent parser and the checker that
runs on the tree before anything is compiled (names defined before use, limits
in range, steps before watches).  Every error is an `NfgrepSyntaxError` naming
the file, line and column and saying what to write instead.  The grammar is in
docs/nfgrep.md; keep the two in step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nfkit.nfgrep import tree as t
from nfkit.nfgrep.bytecode import MAX_LITERAL
from nfkit.nfgrep.errors import NfgrepSyntaxError
from nfkit.nfgrep.verifier import (
    MAX_DEPTH,
    MAX_FIND,
    MAX_KEEP_UNTIL,
    MAX_REPEAT,
    MAX_SET,
    MAX_STEPS,
    MAX_VARIABLES,
)

# Limits a rule may not exceed: the verifier's own, enforced on bytecode too.
MAX_FIND_WITHIN = MAX_FIND
MAX_KEEP_WITHIN = MAX_KEEP_UNTIL
# Input sizes (docs/nfgrep.md, "Resource bounds"): past them the parser stops with one
# error naming file:line:column and the limit, before any work grows with the input.
MAX_FILE = 1 << 20  # characters of rule text in one file
MAX_NAME = 64  # characters of a name (the verifier's NAME)
MAX_NUMBER = 24  # characters of a number (digits, 0x and '_'): 64-bit values fit
MAX_NESTING = 32  # parentheses and 'at' offsets nested in one expression
MAX_TERMS = 256  # values in one expression (numbers, variables, reads, ...)
MAX_PORTS = 255  # port hints of one protocol (a u8 in the .nfgb format)
MAX_PROTOCOLS = 1024  # protocols in one file
U64 = (1 << 64) - 1

READ_TYPE = re.compile(r"u(8|16|24|32|40|48|56|64)(be|le)?\Z")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
NAME_CHARS = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")

RESERVED = {
    "protocol", "over", "ports", "after", "step", "watch", "from", "at", "any", "of", "find",
    "within", "before", "nocase", "let", "skip", "keep", "until", "bytes", "labels", "as",
    "expect", "to", "port", "optional", "repeat", "up", "give", "here", "length", "decimal",
    "in", "tcp", "udp", "client", "server", "either", "field", "is",
}

COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")
# binary operators by precedence level, loosest first
LEVELS = (("|",), ("&",), ("<<", ">>"), ("+", "-"), ("*",))


@dataclass
class Token:
    kind: str  # NAME, INT, STRING, OP, NL, EOF
    text: str
    value: object
    where: t.Where


_ESCAPES = {"n": 10, "r": 13, "t": 9, "0": 0, "\\": 92, '"': 34}


def tokenize(text: str, path: str) -> list[Token]:
    """Split rule text into tokens; raises NfgrepSyntaxError on a bad character or string."""
    tokens: list[Token] = []
    line, line_start, i, depth = 1, 0, 0, 0
    size = len(text)
    if size > MAX_FILE:
        raise NfgrepSyntaxError(path, t.Where(1, 1), f"the file has {size} characters: at most "
                                f"{MAX_FILE} in one rule file; split it")
    while i < size:
        c = text[i]
        where = t.Where(line, i - line_start + 1)
        if c == "\n":
            if depth == 0:
                tokens.append(Token("NL", "newline", None, where))
            line += 1
            line_start = i + 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif c == "#":
            while i < size and text[i] != "\n":
                i += 1
        elif c == '"':
            out = bytearray()
            i += 1
            while True:
                if i >= size or text[i] == "\n":
                    raise NfgrepSyntaxError(path, where, "string not closed: add a '\"' "
                                            "before the end of the line")
                ch = text[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\":
                    esc = text[i + 1] if i + 1 < size else ""
                    if esc in _ESCAPES:
                        out.append(_ESCAPES[esc])
                        i += 2
                    elif esc == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", text[i + 2:i + 4]):
                        out.append(int(text[i + 2:i + 4], 16))
                        i += 4
                    else:
                        raise NfgrepSyntaxError(
                            path, t.Where(line, i - line_start + 1),
                            f"unknown escape '\\{esc}' in string: use \\r \\n \\t \\0 \\\\ \\\" "
                            "or \\xHH")
                else:
                    code = ord(ch)
                    if code > 126 or code < 32:
                        raise NfgrepSyntaxError(
                            path, t.Where(line, i - line_start + 1),
                            f"character {ch!r} in string: write bytes outside printable "
                            "ASCII as \\xHH")
                    out.append(code)
                    i += 1
            tokens.append(Token("STRING", text[where.col - 1 + line_start:i], bytes(out), where))
        elif "0" <= c <= "9":
            m = re.compile(r"0[xX][0-9A-Fa-f_]+|[0-9_]+").match(text, i)
            assert m is not None
            word = m.group(0)
            end = m.end()
            if end < size and (text[end].isalnum() or text[end] == "_"):
                raise NfgrepSyntaxError(path, where, f"bad number {text[i:end + 1]!r}: write "
                                        "decimal digits or 0x followed by hex digits")
            if len(word) > MAX_NUMBER:
                raise NfgrepSyntaxError(path, where, f"number of {len(word)} characters: at "
                                        f"most {MAX_NUMBER} (values are 64 bits)")
            digits = word.replace("_", "")
            value = int(digits[2:], 16) if digits[:2].lower() == "0x" else int(digits, 10)
            tokens.append(Token("INT", word, value, where))
            i = end
        elif "a" <= c <= "z" or "A" <= c <= "Z" or c == "_":
            m = NAME_CHARS.match(text, i)
            assert m is not None
            word = m.group(0).rstrip("-")
            if len(word) > MAX_NAME:
                raise NfgrepSyntaxError(path, where, f"name {word[:16]!r}... is {len(word)} "
                                        f"characters long: at most {MAX_NAME}")
            tokens.append(Token("NAME", word, word, where))
            i += len(word)
        else:
            for op in ("..", "==", "!=", "<=", ">=", "<<", ">>", "<", ">", "=", "+", "-", "*",
                       "&", "|", ",", ";", "{", "}", "(", ")", ":"):
                if text.startswith(op, i):
                    break
            else:
                raise NfgrepSyntaxError(path, where, f"unexpected character {c!r}")
            if op == "(":
                depth += 1
            elif op == ")":
                depth = max(0, depth - 1)
            tokens.append(Token("OP", op, op, where))
            i += len(op)
    tokens.append(Token("EOF", "end of file", None, t.Where(line, i - line_start + 1)))
    return tokens


def _describe(tok: Token) -> str:
    if tok.kind in ("NL", "EOF"):
        return tok.text
    if len(tok.text) > 40:  # a long string literal is not echoed whole
        return f"'{tok.text[:40]}...'"
    return f"'{tok.text}'"


class Parser:
    """Recursive-descent parser over the token list; one instance per file."""

    def __init__(self, text: str, path: str = "<rules>") -> None:
        self.path = path
        self.tokens = tokenize(text, path)
        self.i = 0
        self.blocks = 0  # optional/repeat blocks open around the current statement
        self.nesting = 0  # parentheses and 'at' offsets open in the current expression
        self.terms = 0  # values in the current expression

    # -- token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def error(self, message: str, tok: Token | None = None) -> NfgrepSyntaxError:
        return NfgrepSyntaxError(self.path, (tok or self.tok).where, message)

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "EOF":
            self.i += 1
        return tok

    def is_word(self, word: str) -> bool:
        return self.tok.kind == "NAME" and self.tok.text == word

    def is_op(self, op: str) -> bool:
        return self.tok.kind == "OP" and self.tok.text == op

    def skip_nl(self) -> None:
        while self.tok.kind == "NL":
            self.i += 1

    def word(self, word: str, why: str) -> Token:
        if not self.is_word(word):
            raise self.error(f"expected '{word}' {why}, found {_describe(self.tok)}")
        return self.advance()

    def op(self, op: str, why: str) -> Token:
        if not self.is_op(op):
            raise self.error(f"expected '{op}' {why}, found {_describe(self.tok)}")
        return self.advance()

    def name(self, what: str) -> Token:
        tok = self.tok
        if tok.kind != "NAME" or tok.text in RESERVED:
            raise self.error(f"expected {what}, found {_describe(tok)}")
        return self.advance()

    def integer(self, what: str, low: int, high: int) -> int:
        tok = self.tok
        if tok.kind != "INT":
            raise self.error(f"expected {what} (a number), found {_describe(tok)}")
        value = int(tok.value)  # type: ignore[call-overload]
        if not low <= value <= high:
            raise self.error(f"{what} {value} is out of range: use {low} to {high}")
        self.advance()
        return value

    def string(self, what: str) -> bytes:
        tok = self.tok
        if tok.kind != "STRING":
            raise self.error(f"expected {what} (a \"quoted\" string), found {_describe(tok)}")
        value: bytes = tok.value  # type: ignore[assignment]
        if not value:
            raise self.error(f"{what} is empty: a literal needs at least one byte")
        if len(value) > MAX_LITERAL:
            raise self.error(f"{what} is {len(value)} bytes long: at most {MAX_LITERAL}")
        self.advance()
        return value

    # -- file and declarations
    def parse(self) -> t.RuleFile:
        protocols: list[t.Protocol] = []
        self.skip_nl()
        while self.tok.kind != "EOF":
            if len(protocols) == MAX_PROTOCOLS:
                raise self.error(f"more than {MAX_PROTOCOLS} protocols in one file: split it")
            protocols.append(self.protocol())
            self.skip_nl()
        return t.RuleFile(self.path, protocols)

    def transport(self) -> str:
        tok = self.tok
        if tok.kind == "NAME" and tok.text in ("tcp", "udp"):
            self.advance()
            return tok.text
        raise self.error(f"expected a transport 'tcp' or 'udp', found {_describe(tok)}")

    def protocol(self) -> t.Protocol:
        start = self.word("protocol", "to start a protocol declaration")
        name = self.name("the protocol's name after 'protocol'").text
        self.skip_nl()
        self.word("over", f"after 'protocol {name}' (as in: protocol {name} over tcp)")
        transports = [self.transport()]
        while self.is_op(","):
            self.advance()
            transports.append(self.transport())
        ports: list[int] = []
        after = None
        self.skip_nl()
        if self.is_word("ports"):
            self.advance()
            ports.append(self.integer("a port", 1, 65535))
            while self.is_op(","):
                self.advance()
                self.skip_nl()
                if len(ports) == MAX_PORTS:
                    raise self.error(f"more than {MAX_PORTS} port hints in protocol {name}")
                ports.append(self.integer("a port", 1, 65535))
            self.skip_nl()
        if self.is_word("after"):
            self.advance()
            after = self.name("the name of the protocol this one runs after").text
            self.skip_nl()
        self.op("{", f"to open the body of protocol {name}")
        steps: list[t.Step] = []
        self.skip_nl()
        while not self.is_op("}"):
            if self.tok.kind == "EOF":
                raise self.error(f"protocol {name} is not closed: add '}}'")
            if len(steps) == MAX_STEPS:
                raise self.error(f"more than {MAX_STEPS} steps and watches in protocol {name}")
            steps.append(self.step())
            self.skip_nl()
        self.advance()
        return t.Protocol(name, transports, ports, after, steps, start.where)

    def step(self) -> t.Step:
        tok = self.tok
        if not (self.is_word("step") or self.is_word("watch")):
            raise self.error(f"expected 'step' or 'watch', found {_describe(tok)}")
        self.advance()
        name = self.name(f"a name for the {tok.text} (as in: {tok.text} request from client)").text
        self.word("from", f"after '{tok.text} {name}' (from client, from server or from either)")
        d = self.tok
        directions = {"client": t.CLIENT, "server": t.SERVER, "either": t.EITHER}
        if d.kind != "NAME" or d.text not in directions:
            raise self.error(f"expected 'client', 'server' or 'either' after 'from', "
                             f"found {_describe(d)}")
        self.advance()
        self.skip_nl()
        self.op("{", f"to open {tok.text} {name}")
        body = self.body(f"{tok.text} {name}")
        return t.Step(name, tok.text == "watch", directions[d.text], body, tok.where)

    def body(self, what: str) -> list[t.Stmt]:
        """Statements up to the closing '}' (consumed); the '{' is already consumed."""
        stmts: list[t.Stmt] = []
        while True:
            while self.tok.kind == "NL" or self.is_op(";"):
                self.advance()
            if self.is_op("}"):
                self.advance()
                return stmts
            if self.tok.kind == "EOF":
                raise self.error(f"{what} is not closed: add '}}'")
            stmts.append(self.statement())
            if not (self.tok.kind == "NL" or self.is_op(";") or self.is_op("}")):
                raise self.error(f"expected the end of the statement (a new line or ';'), found "
                                 f"{_describe(self.tok)}")

    def block(self, what: str) -> list[t.Stmt]:
        """The body of an optional or repeat block, at most MAX_DEPTH deep."""
        if self.blocks == MAX_DEPTH:
            raise self.error(f"blocks nested deeper than {MAX_DEPTH}: flatten them")
        self.blocks += 1
        body = self.body(what)
        self.blocks -= 1
        return body

    # -- statements
    def literals(self) -> tuple[list[bytes], bool]:
        lits = [self.string("a literal")]
        while self.is_op(","):
            self.advance()
            self.skip_nl()
            if len(lits) == MAX_SET:
                raise self.error(f"more than {MAX_SET} literals in one 'any of'")
            lits.append(self.string("a literal after ','"))
        nocase = False
        if self.is_word("nocase"):
            self.advance()
            nocase = True
        return lits, nocase

    def statement(self) -> t.Stmt:
        tok = self.tok
        w = tok.where
        if tok.kind == "STRING" or self.is_word("any"):
            if self.is_word("any"):
                self.advance()
                self.word("of", "after 'any' (as in: any of \"GET \", \"POST \" at 0)")
                lits, nocase = self.literals()
            else:
                lits, nocase = [self.string("a literal")], False
                if self.is_word("nocase"):
                    self.advance()
                    nocase = True
                if self.is_op(","):
                    raise self.error("several literals need 'any of' before the first one")
            offset = None
            if self.is_word("at"):
                self.advance()
                offset = self.expr()
            return t.Match(lits, nocase, offset, w)
        if tok.kind == "NAME":
            word = tok.text
            if word == "at":
                self.advance()
                return t.SetCursor(self.expr(), w)
            if word == "find":
                self.advance()
                if self.is_word("any"):
                    self.advance()
                    self.word("of", "after 'find any'")
                    lits, nocase = self.literals()
                else:
                    lits, nocase = [self.string("the literal to find")], False
                    if self.is_word("nocase"):
                        self.advance()
                        nocase = True
                self.word("within", "after the literal of 'find': every search is bounded "
                          "(as in: find \"\\r\\n\" within 1024)")
                within = self.integer("the 'within' bound", 1, MAX_FIND_WITHIN)
                before = None
                if self.is_word("before"):
                    self.advance()
                    before = self.string("the literal after 'before'")
                return t.Find(lits, nocase, within, before, w)
            if word == "let":
                self.advance()
                name = self.name("a variable name after 'let'")
                self.op("=", f"after 'let {name.text}'")
                return t.Let(name.text, self.expr(), w)
            if word == "skip":
                self.advance()
                return t.Skip(self.expr(), w)
            if word == "keep":
                return self.keep()
            if word == "expect":
                return self.expect()
            if word == "optional":
                self.advance()
                self.op("{", "after 'optional'")
                return t.Optional(self.block("optional block"), w)
            if word == "repeat":
                self.advance()
                self.word("up", "after 'repeat' (as in: repeat up to 16 { ... })")
                self.word("to", "after 'repeat up'")
                limit = self.integer("the repeat bound", 1, MAX_REPEAT)
                region = None
                if self.is_word("within"):
                    self.advance()
                    region = self.expr()
                self.op("{", "to open the repeated block")
                return t.Repeat(limit, region, self.block("repeat block"), w)
            if word == "field":
                self.advance()
                field = self.name("a field name after 'field'").text
                self.word("is", f"after 'field {field}' (as in: field alpn is \"h2\")")
                if self.is_word("any"):
                    self.advance()
                    self.word("of", "after 'any'")
                    lits, nocase = self.literals()
                else:
                    lits, nocase = [self.string("the value the field must have")], False
                    if self.is_word("nocase"):
                        self.advance()
                        nocase = True
                return t.FieldIs(field, lits, nocase, w)
            if word == "give":
                self.advance()
                self.word("up", "after 'give'")
                return t.GiveUp(w)
        left = self.expr()
        if self.is_word("in"):
            self.advance()
            low_tok = self.tok
            low = self.integer("the low end of the range", 0, U64)
            self.op("..", "between the ends of a range (as in: u8 at 0 in 1..3)")
            high = self.integer("the high end of the range", 0, U64)
            if high < low:
                raise self.error(f"empty range {low}..{high}: the low end comes first", low_tok)
            return t.InRange(left, low, high, w)
        if self.tok.kind == "OP" and self.tok.text in COMPARISONS:
            op = self.advance().text
            return t.Compare(op, left, self.expr(), w)
        raise self.error(f"expected a comparison (==, !=, <, <=, >, >=) or 'in LOW..HIGH' after "
                         f"the value, found {_describe(self.tok)}", self.tok)

    def keep(self) -> t.Stmt:
        w = self.advance().where
        field = self.name("a field name after 'keep'").text
        if not IDENT.match(field):
            raise self.error(f"field name {field!r}: use letters, digits and '_'")
        if self.is_word("until"):
            self.advance()
            term = self.string("the terminator after 'until'")
            within = 256
            if self.is_word("within"):
                self.advance()
                within = self.integer("the 'within' bound", 1, MAX_KEEP_WITHIN)
            return t.KeepUntil(field, term, within, w)
        if self.is_word("bytes"):
            self.advance()
            return t.KeepBytes(field, self.expr(), w)
        if self.is_word("labels"):
            self.advance()
            return t.KeepLabels(field, w)
        if self.is_op("="):
            self.advance()
            value = self.expr()
            names = None
            if self.is_word("as"):
                self.advance()
                self.op("{", "after 'as' (as in: as { 0x0303: \"1.2\" })")
                names = {}
                self.skip_nl()
                while not self.is_op("}"):
                    key = self.integer("a number to name", 0, U64)
                    self.op(":", "between a number and its name")
                    text = self.string("the name for the number")
                    names[key] = text.decode("ascii")
                    self.skip_nl()
                    if self.is_op(","):
                        self.advance()
                        self.skip_nl()
                    elif not self.is_op("}"):
                        raise self.error(f"expected ',' or '}}' in the names, found "
                                         f"{_describe(self.tok)}")
                self.advance()
            return t.KeepNumber(field, value, names, w)
        raise self.error(f"expected 'until', 'bytes', 'labels' or '=' after 'keep {field}', "
                         f"found {_describe(self.tok)}")

    def expect(self) -> t.Stmt:
        w = self.advance().where
        label = self.name("the label of the expected flow after 'expect'").text
        self.word("over", f"after 'expect {label}' (as in: expect {label} over tcp to server "
                  "port p)")
        transport = self.transport()
        self.word("to", "before the expected flow's address (client, server or (a, b, c, d))")
        to: str | list[t.Expr]
        if self.is_word("client") or self.is_word("server"):
            to = self.advance().text
        elif self.is_op("("):
            self.advance()
            to = [self.expr()]
            for _ in range(3):
                self.op(",", "between the four numbers of an IPv4 address")
                to.append(self.expr())
            self.op(")", "after the four numbers of the address")
        else:
            raise self.error(f"expected 'client', 'server' or '(a, b, c, d)' after 'to', found "
                             f"{_describe(self.tok)}")
        self.word("port", "before the expected flow's port")
        return t.Expect(label, transport, to, self.expr(), w)

    # -- expressions
    def expr(self) -> t.Expr:
        """One whole expression, at most MAX_TERMS values and MAX_NESTING levels deep."""
        self.terms = 0
        self.nesting = 0
        return self.binary(0)

    def binary(self, level: int) -> t.Expr:
        if level == len(LEVELS):
            return self.primary()
        left = self.binary(level + 1)
        while self.tok.kind == "OP" and self.tok.text in LEVELS[level]:
            tok = self.advance()
            right = self.binary(level + 1)
            left = t.BinOp(tok.text, left, right, tok.where)
        return left

    def nested(self) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.error(f"expression nested deeper than {MAX_NESTING} (parentheses and "
                             "'at' offsets): use 'let' for the inner parts")

    def primary(self) -> t.Expr:
        if self.is_op("("):
            self.advance()
            self.nested()
            inner = self.binary(0)
            self.op(")", "to close '('")
            self.nesting -= 1
            return inner
        tok = self.tok
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise self.error(f"expression of more than {MAX_TERMS} values: use 'let' for parts "
                             "of it")
        if tok.kind == "INT":
            self.advance()
            value = int(tok.value)  # type: ignore[call-overload]
            if value > U64:
                raise self.error(f"number {value} does not fit in 64 bits", tok)
            return t.Num(value, tok.where)
        if tok.kind == "NAME":
            m = READ_TYPE.match(tok.text)
            if m:
                width = int(m.group(1)) // 8
                if width > 1 and not m.group(2):
                    raise self.error(f"'{tok.text}' needs a byte order: write {tok.text}be "
                                     f"(big endian, network order) or {tok.text}le")
                if width == 1 and m.group(2):
                    raise self.error("'u8' has no byte order: write u8")
                self.advance()
                offset = None
                if self.is_word("at"):
                    self.advance()
                    self.nested()
                    offset = self.primary()
                    self.nesting -= 1
                return t.Read(width, m.group(2) == "le", offset, tok.where)
            if tok.text == "here":
                self.advance()
                return t.Here(tok.where)
            if tok.text == "length":
                self.advance()
                return t.Length(tok.where)
            if tok.text == "decimal":
                self.advance()
                return t.Decimal(20, tok.where)
            if tok.text not in RESERVED:
                self.advance()
                return t.Var(tok.text, tok.where)
        raise self.error(f"expected a value (a number, a variable, here, length, decimal or a "
                         f"read such as u16be), found {_describe(tok)}")


# ---------------------------------------------------------------- checker

class Checker:
    """Checks a parsed file: names defined before use, limits, order of steps and watches."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: t.Where, message: str) -> NfgrepSyntaxError:
        return NfgrepSyntaxError(self.path, where, message)

    def check(self, rules: t.RuleFile) -> t.RuleFile:
        seen: dict[tuple[str, str], t.Protocol] = {}
        for proto in rules.protocols:
            for tr in proto.transports:
                if (proto.name, tr) in seen:
                    other = seen[(proto.name, tr)]
                    raise self.fail(proto.at, f"protocol {proto.name} over {tr} is already "
                                    f"declared at {other.at}: give one of them another name")
                seen[(proto.name, tr)] = proto
            if len(set(proto.transports)) != len(proto.transports):
                raise self.fail(proto.at, f"protocol {proto.name} names a transport twice")
            if proto.after == proto.name:
                raise self.fail(proto.at, f"protocol {proto.name} cannot run after itself")
            self.protocol(proto)
        return rules

    def protocol(self, proto: t.Protocol) -> None:
        if not any(not s.watch for s in proto.steps):
            raise self.fail(proto.at, f"protocol {proto.name} has no step: add at least one "
                            "'step NAME from client|server|either { ... }'")
        names: dict[str, t.Step] = {}
        watching = False
        variables: list[str] = []
        for step in proto.steps:
            if step.name in names:
                raise self.fail(step.at, f"step {step.name} is already declared at "
                                f"{names[step.name].at} in protocol {proto.name}")
            names[step.name] = step
            if step.watch:
                watching = True
            elif watching:
                raise self.fail(step.at, f"step {step.name} comes after a watch: put the "
                                "watches after all the steps of the protocol")
            self.stmts(step.body, variables, 0)
        if len(variables) > MAX_VARIABLES:
            raise self.fail(proto.at, f"protocol {proto.name} uses {len(variables)} variables: "
                            f"at most {MAX_VARIABLES}")
        proto.variables = variables

    def stmts(self, body: list[t.Stmt], variables: list[str], depth: int) -> None:
        for stmt in body:
            self.stmt(stmt, variables, depth)

    def stmt(self, s: t.Stmt, variables: list[str], depth: int) -> None:
        if isinstance(s, t.Match):
            if s.offset is not None:
                self.expr(s.offset, variables)
        elif isinstance(s, t.Compare):
            self.expr(s.left, variables)
            self.expr(s.right, variables)
        elif isinstance(s, t.InRange):
            self.expr(s.value, variables)
        elif isinstance(s, (t.SetCursor,)):
            self.expr(s.offset, variables)
        elif isinstance(s, t.Skip):
            self.expr(s.count, variables)
        elif isinstance(s, t.Let):
            self.expr(s.value, variables)
            if READ_TYPE.match(s.name):
                raise self.fail(s.at, f"variable name {s.name!r} is a read type: pick another")
            if not IDENT.match(s.name):
                raise self.fail(s.at, f"variable name {s.name!r}: use letters, digits and '_' "
                                "(write a - b with spaces for a subtraction)")
            if s.name not in variables:
                variables.append(s.name)
        elif isinstance(s, t.KeepBytes):
            self.expr(s.count, variables)
        elif isinstance(s, t.FieldIs):
            if not IDENT.match(s.field):
                raise self.fail(s.at, f"field name {s.field!r}: use letters, digits and '_'")
        elif isinstance(s, t.KeepNumber):
            self.expr(s.value, variables)
        elif isinstance(s, t.Expect):
            if not IDENT.match(s.label.replace("-", "_")):
                raise self.fail(s.at, f"label {s.label!r}: use letters, digits, '_' and '-'")
            if isinstance(s.to, list):
                for e in s.to:
                    self.expr(e, variables)
            self.expr(s.port, variables)
        elif isinstance(s, (t.Optional, t.Repeat)):
            if depth + 1 > MAX_DEPTH:
                raise self.fail(s.at, f"blocks nested deeper than {MAX_DEPTH}: flatten them")
            if isinstance(s, t.Repeat) and s.region is not None:
                self.expr(s.region, variables)
            self.stmts(s.body, variables, depth + 1)

    def expr(self, e: t.Expr, variables: list[str]) -> None:
        if isinstance(e, t.Var):
            if e.name not in variables:
                hint = ""
                if "-" in e.name:
                    hint = " (write a - b with spaces for a subtraction)"
                raise self.fail(e.at, f"unknown variable {e.name!r}: define it first with "
                                f"'let {e.name.split('-')[0]} = ...' in this or an earlier step"
                                + hint)
        elif isinstance(e, t.BinOp):
            self.expr(e.left, variables)
            self.expr(e.right, variables)
        elif isinstance(e, t.Read) and e.offset is not None:
            self.expr(e.offset, variables)


def parse_rules(text: str, path: str = "<rules>") -> t.RuleFile:
    """Parse and check the text of a rule file.

    Raises NfgrepSyntaxError (an InputError) naming path:line:column and the fix.
    """
    rules = Parser(text, path).parse()
    return Checker(path).check(rules)
