"""Checked tree (tree.py) -> Program (bytecode.py).

This module owns the translation of statements and expressions into the
stack instruction set, and the constant pools (strings, integers, literal
sets, number names), each value stored once.  It trusts the checker: a tree
that reached it is well formed.  `compile_file`/`compile_text` are the
entry points that parse, check and compile in one call.
"""

from __future__ import annotations

from pathlib import Path

from nfkit.nfgrep import tree as t
from nfkit.nfgrep.bytecode import (
    BINOPS,
    CMPS,
    OPCODES,
    TCP,
    UDP,
    Instr,
    LiteralSet,
    Program,
    ProtocolCode,
    StepCode,
)
from nfkit.nfgrep.errors import NfgrepSyntaxError
from nfkit.nfgrep.parser import MAX_FILE, parse_rules
from nfkit.nfgrep.verifier import MAX_CODE

OP = OPCODES
POOL = 0xFFFF  # entries of each constant pool: a u16 count in the .nfgb format (0xffff: none)


class Compiler:
    """Builds one Program from one checked rule file."""

    def __init__(self, origin: str) -> None:
        self.program = Program(origin=origin)
        self._strings: dict[bytes, int] = {}
        self._ints: dict[int, int] = {}
        self._sets: dict[tuple[bool, tuple[int, ...]], int] = {}
        self.variables: list[str] = []
        self.code: list[Instr] = []
        self.length_final = True
        self.at = t.Where(1, 1)  # the declaration or statement being compiled, for errors

    def too_big(self, what: str, limit: int) -> NfgrepSyntaxError:
        return NfgrepSyntaxError(self.program.origin, self.at,
                                 f"more than {limit} {what} in one file (the .nfgb format's "
                                 "limit): split the file")

    # -- pools
    def string(self, value: bytes | str) -> int:
        if isinstance(value, str):
            value = value.encode("ascii")
        if value not in self._strings:
            if len(self.program.strings) == POOL - 1:
                raise self.too_big("distinct strings and names", POOL - 1)
            self._strings[value] = len(self.program.strings)
            self.program.strings.append(value)
        return self._strings[value]

    def integer(self, value: int) -> int:
        if value not in self._ints:
            if len(self.program.ints) == POOL:
                raise self.too_big("distinct integers", POOL)
            self._ints[value] = len(self.program.ints)
            self.program.ints.append(value)
        return self._ints[value]

    def literal_set(self, literals: list[bytes], nocase: bool) -> int:
        key = (nocase, tuple(self.string(lit.lower() if nocase else lit) for lit in literals))
        if key not in self._sets:
            if len(self.program.sets) == POOL:
                raise self.too_big("distinct literal sets", POOL)
            self._sets[key] = len(self.program.sets)
            self.program.sets.append(LiteralSet(nocase, list(key[1])))
        return self._sets[key]

    def emit(self, op: str, a: int = 0, b: int = 0, c: int = 0) -> None:
        self.code.append(Instr(OP[op], a, b, c))

    # -- declarations
    def compile(self, rules: t.RuleFile) -> Program:
        for proto in rules.protocols:
            self.at = proto.at
            self.variables = proto.variables
            transports = sum(TCP if tr == "tcp" else UDP for tr in proto.transports)
            steps = []
            for step in proto.steps:
                self.code = []
                self.stmts(step.body)
                if len(self.code) > MAX_CODE:
                    raise NfgrepSyntaxError(self.program.origin, step.at,
                                            f"{step.name} compiles to {len(self.code)} "
                                            f"instructions: at most {MAX_CODE}; split it")
                self.at = proto.at
                steps.append(StepCode(self.string(step.name), step.watch, step.direction,
                                      self.code))
            self.program.protocols.append(ProtocolCode(
                self.string(proto.name), transports,
                None if proto.after is None else self.string(proto.after), list(proto.ports),
                [self.string(v) for v in proto.variables], steps))
        return self.program

    # -- statements
    def stmts(self, body: list[t.Stmt]) -> None:
        for s in body:
            self.stmt(s)

    def stmt(self, s: t.Stmt) -> None:
        self.at = s.at
        if isinstance(s, t.Match):
            if s.offset is not None:
                self.expr(s.offset)
            self.emit("MATCH", self.literal_set(s.literals, s.nocase),
                      0 if s.offset is None else 1)
        elif isinstance(s, t.Find):
            before = 0 if s.before is None else self.string(s.before.lower() if s.nocase
                                                            else s.before) + 1
            self.emit("FIND", self.literal_set(s.literals, s.nocase), s.within, before)
        elif isinstance(s, t.Compare):
            # "length >= E" (or "E <= length"), E not depending on length: once true it
            # stays true as data comes, so it may hold early; other uses of length wait
            # for the final data (on TCP the stream only grows)
            monotone = (isinstance(s.left, t.Length) and s.op in (">=", ">")
                        and not _grows(s.right)) or \
                       (isinstance(s.right, t.Length) and s.op in ("<=", "<")
                        and not _grows(s.left))
            self.length_final = not monotone
            self.expr(s.left)
            self.expr(s.right)
            self.length_final = True
            self.emit("CMP", CMPS.index(s.op), int(monotone))
        elif isinstance(s, t.InRange):
            self.expr(s.value)
            self.emit("RANGE", self.integer(s.low), self.integer(s.high), 0)
        elif isinstance(s, t.SetCursor):
            self.expr(s.offset)
            self.emit("SETPOS")
        elif isinstance(s, t.Skip):
            self.expr(s.count)
            self.emit("SKIP")
        elif isinstance(s, t.Let):
            self.expr(s.value)
            self.emit("LET", self.variables.index(s.name))
        elif isinstance(s, t.KeepUntil):
            self.emit("KEEP_UNTIL", self.string(s.field), self.string(s.terminator), s.within)
        elif isinstance(s, t.KeepBytes):
            self.expr(s.count)
            self.emit("KEEP_BYTES", self.string(s.field))
        elif isinstance(s, t.KeepNumber):
            self.expr(s.value)
            index = 0
            if s.names is not None:
                if len(self.program.maps) == POOL or len(s.names) > POOL:
                    raise self.too_big("number-name maps (or names in one map)", POOL)
                self.program.maps.append([(k, self.string(v)) for k, v in sorted(s.names.items())])
                index = len(self.program.maps)
            self.emit("KEEP_INT", self.string(s.field), index)
        elif isinstance(s, t.KeepLabels):
            self.emit("KEEP_LABELS", self.string(s.field))
        elif isinstance(s, t.Expect):
            mode = {"client": 0, "server": 1}.get(s.to if isinstance(s.to, str) else "", 2)
            if isinstance(s.to, list):
                for e in s.to:
                    self.expr(e)
            self.expr(s.port)
            self.emit("EXPECT", self.string(s.label), TCP if s.transport == "tcp" else UDP, mode)
        elif isinstance(s, t.FieldIs):
            self.emit("FIELD_IS", self.string(s.field), self.literal_set(s.literals, s.nocase))
        elif isinstance(s, t.Optional):
            self.emit("OPT_BEGIN")
            self.stmts(s.body)
            self.emit("OPT_END")
        elif isinstance(s, t.Repeat):
            if s.region is not None:
                self.expr(s.region)
            self.emit("LOOP_BEGIN", s.limit, int(s.region is not None))
            self.stmts(s.body)
            self.emit("LOOP_END")
        elif isinstance(s, t.GiveUp):
            self.emit("GIVEUP")
        else:  # pragma: no cover - the checker admits nothing else
            raise AssertionError(f"unknown statement {s!r}")

    # -- expressions
    def expr(self, e: t.Expr) -> None:
        if isinstance(e, t.Num):
            self.emit("PUSH_INT", self.integer(e.value))
        elif isinstance(e, t.Var):
            self.emit("PUSH_VAR", self.variables.index(e.name))
        elif isinstance(e, t.Here):
            self.emit("PUSH_HERE")
        elif isinstance(e, t.Length):
            self.emit("PUSH_LENGTH", int(self.length_final))
        elif isinstance(e, t.Read):
            if e.offset is not None:
                self.expr(e.offset)
            self.emit("READ", e.width, int(e.little), int(e.offset is not None))
        elif isinstance(e, t.Decimal):
            self.emit("DECIMAL", e.digits)
        elif isinstance(e, t.BinOp):
            self.expr(e.left)
            self.expr(e.right)
            self.emit("BINOP", BINOPS.index(e.op))
        else:  # pragma: no cover
            raise AssertionError(f"unknown expression {e!r}")


def _grows(e: t.Expr) -> bool:
    """Whether a value depends on how much data has arrived (so a false test may turn true)."""
    if isinstance(e, t.Length):
        return True
    if isinstance(e, t.BinOp):
        return _grows(e.left) or _grows(e.right)
    if isinstance(e, t.Read) and e.offset is not None:
        return _grows(e.offset)
    return False


def compile_text(text: str, origin: str = "<rules>") -> Program:
    """Parse, check and compile rule text; raises NfgrepSyntaxError."""
    return Compiler(origin).compile(parse_rules(text, origin))


def compile_file(path: str | Path) -> Program:
    """Parse, check and compile a .nfg file; raises NfgrepSyntaxError or InputError."""
    from nfkit.errors import InputError

    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(4 * MAX_FILE + 1)  # UTF-8: at most 4 bytes a character
        text = raw.decode("utf-8")
    except OSError as exc:
        raise InputError(f"{p}: cannot read rule file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: cannot read rule file: not UTF-8 text (byte {exc.start})") from None
    if len(raw) > 4 * MAX_FILE:
        raise InputError(f"{p}: rule file larger than {4 * MAX_FILE} bytes: split it")
    return compile_text(text, str(p))
