"""The nfgrep instruction set, the program object and the .nfgb binary file format.

This module owns the opcode table (one truth: names, operands, stack effect,
cost), `Program` and its parts, `encode`/`decode` of .nfgb files and the
human listing (`disassemble`).  It checks only the *shape* of a file (magic,
version, checksum, lengths); whether a program is safe to run is the
verifier's job (verifier.py).

File layout (all integers little endian), version 1:

    header   magic b"NFGB" | version u16 | flags u16 (0) | payload length u32 | crc32 u32
    payload  strings  u16 n, n x (u16 len, bytes)
             ints     u16 n, n x u64
             sets     u16 n, n x (u8 flags (bit 0 nocase), u8 count, count x u16 string)
             maps     u16 n, n x (u16 count, count x (u64 key, u16 string))
             protocols u16 n, n x protocol
    protocol u16 name | u8 transports (bit 0 tcp, bit 1 udp) | u16 after (0xffff none)
             | u8 nports, nports x u16 | u8 nvars, nvars x u16 name
             | u8 nsteps, nsteps x step
    step     u16 name | u8 kind (0 step, 1 watch) | u8 direction (0 client, 1 server, 2 either)
             | u16 ninstr, ninstr x instruction
    instruction  u8 opcode | u32 a | u32 b | u32 c        (13 bytes)
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from nfkit.nfgrep.errors import BytecodeError

MAGIC = b"NFGB"
VERSION = 1  # the format and instruction set: decode refuses any other
# The compiler's revision, as CPython re's MAGIC: bump it whenever the compiler emits
# different code for the same text.  It is written into every .nfgb header (files
# from before it was, read 0) and cached compilations are keyed on it (loader.py),
# so an entry made by another compiler is never used.
COMPILER_VERSION = 1
NONE16 = 0xFFFF
HEADER = struct.Struct("<4sHHII")
INSTR = struct.Struct("<BIII")
TCP, UDP = 1, 2

# The most bytes one instruction may examine, part of the instruction set (the verifier
# refuses programs past them, the costs below count on them).
MAX_LITERAL = 255  # bytes of one literal
MAX_KEEP_BYTES = 1024  # bytes KEEP_BYTES copies
MAX_LABELS = 255  # bytes KEEP_LABELS walks


def _one(p: Program, a: int, b: int, c: int) -> int:
    return 1


def _set_bytes(p: Program, index: int) -> int:
    return sum(len(p.strings[i]) for i in p.sets[index].strings)


def _find_cost(p: Program, a: int, b: int, c: int) -> int:
    """Each literal (and the 'before' one) tried at up to b positions, each up to its length."""
    extra = len(p.strings[c - 1]) if c else 0
    return 1 + (len(p.sets[a].strings) + (1 if c else 0)) * (b + MAX_LITERAL + extra)


@dataclass(frozen=True)
class OpInfo:
    """One opcode: its name, what its operands mean, stack effect, cost and documentation.

    ``cost(program, a, b, c)``: the cost units of one execution, 1 plus the
    bytes it may examine; the verifier sums them into a step's bound, the
    code generator counts them when a program runs with counting on.
    """

    code: int
    name: str
    operands: tuple[str, ...]
    pops: int | str  # a number, or the name of the operand that decides it
    pushes: int
    doc: str
    cost: Callable[[Program, int, int, int], int] = _one


# opcode table: the single truth for the compiler, the verifier, the code generator and docs
OPS: dict[int, OpInfo] = {op.code: op for op in (
    OpInfo(0x01, "PUSH_INT", ("int",), 0, 1, "push ints[a]"),
    OpInfo(0x02, "PUSH_VAR", ("var",), 0, 1, "push variable a"),
    OpInfo(0x03, "PUSH_HERE", (), 0, 1, "push the cursor (offset from the step's start)"),
    OpInfo(0x04, "PUSH_LENGTH", ("final",), 0, 1,
           "push the bytes available from the step's start (a=1: wait until no more may come)"),
    OpInfo(0x05, "READ", ("width", "order", "mode"), "mode", 1,
           "read an unsigned integer of a bytes (b: 0 big, 1 little endian) at the cursor "
           "(c=0) or at the popped offset (c=1); the cursor moves after it",
           lambda p, a, b, c: 1 + a),
    OpInfo(0x06, "DECIMAL", ("digits",), 0, 1,
           "read 1 to a ASCII decimal digits at the cursor as a number", lambda p, a, b, c: 1 + a),
    OpInfo(0x07, "BINOP", ("binop",), 2, 1, "pop y, x; push x OP y modulo 2**64"),
    OpInfo(0x10, "CMP", ("cmp", "grows"), 2, 0,
           "pop y, x; the step fails unless x OP y (b=1: waits instead while data may come)"),
    OpInfo(0x11, "RANGE", ("int", "int", "grows"), 1, 0,
           "pop x; the step fails unless ints[a] <= x <= ints[b]"),
    OpInfo(0x12, "MATCH", ("set", "mode"), "mode", 0,
           "the first literal of set a at the cursor (b=0) or at the popped offset (b=1)",
           lambda p, a, b, c: 1 + _set_bytes(p, a)),
    OpInfo(0x13, "FIND", ("set", "within", "before"), 0, 0,
           "search set a ending within b bytes of the cursor; c=string+1 must not come first",
           _find_cost),
    OpInfo(0x14, "SETPOS", (), 1, 0, "pop an offset; move the cursor there"),
    OpInfo(0x15, "SKIP", (), 1, 0, "pop a count; move the cursor that many bytes on"),
    OpInfo(0x16, "LET", ("var",), 1, 0, "pop a value into variable a"),
    OpInfo(0x20, "KEEP_UNTIL", ("string", "string", "within"), 0, 0,
           "keep field a: bytes from the cursor to literal b, found within c bytes",
           lambda p, a, b, c: 1 + c + len(p.strings[b])),
    OpInfo(0x21, "KEEP_BYTES", ("string",), 1, 0, "pop n; keep field a: n bytes at the cursor",
           lambda p, a, b, c: 1 + MAX_KEEP_BYTES),
    OpInfo(0x22, "KEEP_INT", ("string", "map"), 1, 0,
           "pop x; keep field a: x in decimal, or its name in maps[b-1] when b > 0"),
    OpInfo(0x23, "KEEP_LABELS", ("string",), 0, 0,
           "keep field a: length-prefixed labels at the cursor joined with dots",
           lambda p, a, b, c: 1 + MAX_LABELS),
    OpInfo(0x24, "EXPECT", ("string", "transport", "addr"), "addr", 0,
           "pop port (and 4 octets when c=2); announce flow label a over b to the client "
           "(c=0), the server (c=1) or the popped IPv4 address (c=2)"),
    OpInfo(0x25, "GIVEUP", (), 0, 0, "this protocol gives up on the flow"),
    OpInfo(0x26, "FIELD_IS", ("string", "set"), 0, 0,
           "the step fails unless field a, kept by the flow's verdicts so far, is in set b",
           lambda p, a, b, c: 1 + _set_bytes(p, b)),
    OpInfo(0x30, "OPT_BEGIN", (), 0, 0, "start a block whose failure is forgiven"),
    OpInfo(0x31, "OPT_END", (), 0, 0, "end of an optional block"),
    OpInfo(0x32, "LOOP_BEGIN", ("count", "region"), "region", 0,
           "repeat the block up to a times; b=1: pop a length, the block stays inside it"),
    OpInfo(0x33, "LOOP_END", (), 0, 0, "end of a repeated block"),
)}
OPCODES: dict[str, int] = {op.name: code for code, op in OPS.items()}

BINOPS = ("+", "-", "*", "&", "|", "<<", ">>")
CMPS = ("==", "!=", "<", "<=", ">", ">=")
DIRECTIONS = ("client", "server", "either")


@dataclass
class Instr:
    op: int
    a: int = 0
    b: int = 0
    c: int = 0


@dataclass
class Block:
    """A step's code as nested blocks: the step itself, and each optional part or
    loop (``begin`` is its OPT_BEGIN / LOOP_BEGIN) with the instructions inside.
    Every back end translates steps from this shape (`nest`)."""

    kind: str  # "step", "OPT_BEGIN" or "LOOP_BEGIN"
    begin: Instr | None
    items: list[Instr | Block] = field(default_factory=list)


def nest(code: list[Instr]) -> Block:
    """A step's instructions as nested blocks (the verifier has checked the pairing)."""
    root = Block("step", None)
    stack = [root]
    for ins in code:
        name = OPS[ins.op].name
        if name in ("OPT_BEGIN", "LOOP_BEGIN"):
            block = Block(name, ins)
            stack[-1].items.append(block)
            stack.append(block)
        elif name in ("OPT_END", "LOOP_END"):
            stack.pop()
        else:
            stack[-1].items.append(ins)
    return root


@dataclass
class LiteralSet:
    nocase: bool
    strings: list[int]


@dataclass
class StepCode:
    name: int
    watch: bool
    direction: int
    code: list[Instr]


@dataclass
class ProtocolCode:
    name: int
    transports: int
    after: int | None
    ports: list[int]
    variables: list[int]
    steps: list[StepCode]


@dataclass
class Program:
    """A compiled rule file: constant pools and protocols (string fields are pool indexes)."""

    strings: list[bytes] = field(default_factory=list)
    ints: list[int] = field(default_factory=list)
    sets: list[LiteralSet] = field(default_factory=list)
    maps: list[list[tuple[int, int]]] = field(default_factory=list)
    protocols: list[ProtocolCode] = field(default_factory=list)
    origin: str = "<program>"
    compiler: int = COMPILER_VERSION  # the compiler revision that made it (from the header when read)

    def text(self, index: int) -> str:
        return self.strings[index].decode("ascii", "replace")


# ---------------------------------------------------------------- encoding

def encode(program: Program) -> bytes:
    """Serialize a program to the .nfgb format (header with checksum included).

    Raises BytecodeError for a program whose counts or values do not fit the
    format's fields (the compiler refuses such rule files first).
    """
    try:
        return _encode(program)
    except struct.error as exc:
        raise BytecodeError(f"{program.origin}: the program does not fit the .nfgb format "
                            f"({exc})") from None


def _encode(program: Program) -> bytes:
    out = bytearray()
    u8, u16, u64 = struct.Struct("<B"), struct.Struct("<H"), struct.Struct("<Q")
    out += u16.pack(len(program.strings))
    for s in program.strings:
        out += u16.pack(len(s)) + s
    out += u16.pack(len(program.ints))
    for v in program.ints:
        out += u64.pack(v)
    out += u16.pack(len(program.sets))
    for ls in program.sets:
        out += u8.pack(1 if ls.nocase else 0) + u8.pack(len(ls.strings))
        for i in ls.strings:
            out += u16.pack(i)
    out += u16.pack(len(program.maps))
    for m in program.maps:
        out += u16.pack(len(m))
        for key, name in m:
            out += u64.pack(key) + u16.pack(name)
    out += u16.pack(len(program.protocols))
    for p in program.protocols:
        out += u16.pack(p.name) + u8.pack(p.transports)
        out += u16.pack(NONE16 if p.after is None else p.after)
        out += u8.pack(len(p.ports)) + b"".join(u16.pack(x) for x in p.ports)
        out += u8.pack(len(p.variables)) + b"".join(u16.pack(x) for x in p.variables)
        out += u8.pack(len(p.steps))
        for sc in p.steps:
            out += u16.pack(sc.name) + u8.pack(1 if sc.watch else 0) + u8.pack(sc.direction)
            out += u16.pack(len(sc.code))
            for ins in sc.code:
                out += INSTR.pack(ins.op, ins.a, ins.b, ins.c)
    payload = bytes(out)
    return HEADER.pack(MAGIC, VERSION, program.compiler, len(payload), zlib.crc32(payload)) + payload


class _Reader:
    def __init__(self, data: bytes, origin: str) -> None:
        self.data = data
        self.pos = 0
        self.origin = origin

    def take(self, fmt: struct.Struct, what: str) -> tuple[int, ...]:
        end = self.pos + fmt.size
        if end > len(self.data):
            raise BytecodeError(f"{self.origin}: truncated in {what} at byte "
                                f"{HEADER.size + self.pos}")
        values = fmt.unpack_from(self.data, self.pos)
        self.pos = end
        return values  # type: ignore[no-any-return]

    def bytes(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise BytecodeError(f"{self.origin}: truncated in {what} at byte "
                                f"{HEADER.size + self.pos}")
        value = self.data[self.pos:end]
        self.pos = end
        return value


_U8, _U16, _U64 = struct.Struct("<B"), struct.Struct("<H"), struct.Struct("<Q")


def decode(blob: bytes, origin: str = "<nfgb>") -> Program:
    """Parse a .nfgb file into a Program (not yet verified).

    Raises BytecodeError on a wrong magic, an unknown version, a checksum
    mismatch, a truncated or over-long file.
    """
    if len(blob) < HEADER.size:
        raise BytecodeError(f"{origin}: {len(blob)} bytes is too short for an nfgrep program")
    magic, version, compiler, length, crc = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise BytecodeError(f"{origin}: not an nfgrep program (magic {magic!r}, "
                            f"expected {MAGIC!r})")
    if version != VERSION:
        raise BytecodeError(f"{origin}: bytecode version {version} is not supported "
                            f"(this nfkit reads version {VERSION}): recompile the .nfg file")
    payload = blob[HEADER.size:]
    if len(payload) != length:
        raise BytecodeError(f"{origin}: payload is {len(payload)} bytes, header says {length}")
    if zlib.crc32(payload) != crc:
        raise BytecodeError(f"{origin}: checksum mismatch (file corrupted)")
    r = _Reader(payload, origin)
    prog = Program(origin=origin, compiler=compiler)
    (n,) = r.take(_U16, "string count")
    for _ in range(n):
        (size,) = r.take(_U16, "string length")
        prog.strings.append(r.bytes(size, "string"))
    (n,) = r.take(_U16, "integer count")
    for _ in range(n):
        prog.ints.append(r.take(_U64, "integer")[0])
    (n,) = r.take(_U16, "literal set count")
    for _ in range(n):
        (flags8,) = r.take(_U8, "literal set flags")
        (count,) = r.take(_U8, "literal set size")
        prog.sets.append(LiteralSet(bool(flags8 & 1),
                                    [r.take(_U16, "literal set")[0] for _ in range(count)]))
        if flags8 & ~1:
            raise BytecodeError(f"{origin}: literal set {len(prog.sets) - 1} has unknown "
                                f"flags {flags8:#x}")
    (n,) = r.take(_U16, "map count")
    for _ in range(n):
        (count,) = r.take(_U16, "map size")
        entries = []
        for _ in range(count):
            (key,) = r.take(_U64, "map key")
            (name,) = r.take(_U16, "map name")
            entries.append((key, name))
        prog.maps.append(entries)
    (n,) = r.take(_U16, "protocol count")
    for _ in range(n):
        (name,) = r.take(_U16, "protocol name")
        (transports,) = r.take(_U8, "transports")
        (after,) = r.take(_U16, "after")
        (nports,) = r.take(_U8, "port count")
        ports = [r.take(_U16, "port")[0] for _ in range(nports)]
        (nvars,) = r.take(_U8, "variable count")
        variables = [r.take(_U16, "variable name")[0] for _ in range(nvars)]
        (nsteps,) = r.take(_U8, "step count")
        steps = []
        for _ in range(nsteps):
            (sname,) = r.take(_U16, "step name")
            (kind,) = r.take(_U8, "step kind")
            (direction,) = r.take(_U8, "step direction")
            (ninstr,) = r.take(_U16, "instruction count")
            code = [Instr(*r.take(INSTR, "instruction")) for _ in range(ninstr)]
            if kind > 1:
                raise BytecodeError(f"{origin}: step kind {kind} is unknown")
            steps.append(StepCode(sname, kind == 1, direction, code))
        prog.protocols.append(ProtocolCode(name, transports, None if after == NONE16 else after,
                                           ports, variables, steps))
    if r.pos != len(payload):
        raise BytecodeError(f"{origin}: {len(payload) - r.pos} bytes of garbage after the "
                            "last protocol")
    return prog


# ---------------------------------------------------------------- listing

def _lit(program: Program, index: int) -> str:
    if 0 <= index < len(program.strings):
        return repr(program.strings[index])[1:]
    return f"<bad string {index}>"


def describe_instr(program: Program, ins: Instr) -> str:
    """One instruction as text: opcode name and its operands spelled out."""
    info = OPS.get(ins.op)
    if info is None:
        return f"<unknown opcode {ins.op:#x}>"
    parts = []
    for kind, value in zip(info.operands, (ins.a, ins.b, ins.c), strict=False):
        if kind == "int":
            parts.append(str(program.ints[value]) if value < len(program.ints) else f"?{value}")
        elif kind == "var":
            parts.append(f"v{value}")
        elif kind == "set":
            if value < len(program.sets):
                ls = program.sets[value]
                text = ", ".join(_lit(program, i) for i in ls.strings)
                parts.append(f"[{text}]" + (" nocase" if ls.nocase else ""))
            else:
                parts.append(f"<bad set {value}>")
        elif kind == "string":
            parts.append(_lit(program, value))
        elif kind == "before":
            if value:
                parts.append("before " + _lit(program, value - 1))
        elif kind == "binop":
            parts.append(BINOPS[value] if value < len(BINOPS) else f"?{value}")
        elif kind == "cmp":
            parts.append(CMPS[value] if value < len(CMPS) else f"?{value}")
        elif kind == "order":
            parts.append("le" if value else "be")
        elif kind == "mode":
            parts.append("at popped offset" if value else "at cursor")
        elif kind == "final":
            if value:
                parts.append("(final data only)")
        elif kind == "grows":
            if value:
                parts.append("(waits for data)")
        elif kind == "transport":
            parts.append({TCP: "tcp", UDP: "udp"}.get(value, f"?{value}"))
        elif kind == "addr":
            parts.append({0: "to client", 1: "to server", 2: "to popped address"}
                         .get(value, f"?{value}"))
        elif kind == "map":
            if value:
                parts.append(f"map {value - 1}")
        elif kind == "region":
            if value:
                parts.append("within popped length")
        else:
            parts.append(f"{kind} {value}")
    return f"{info.name:<12} " + " ".join(parts)


def disassemble(program: Program, costs: dict[tuple[int, int], int] | None = None) -> str:
    """A readable listing of a program, one instruction per line, blocks indented."""
    lines = [f"nfgb version {VERSION} (compiler {program.compiler}): {len(program.protocols)} protocol(s), "
             f"{len(program.strings)} strings, {len(program.ints)} integers, "
             f"{len(program.sets)} literal sets"]
    for pi, proto in enumerate(program.protocols):
        transports = [n for bit, n in ((TCP, "tcp"), (UDP, "udp")) if proto.transports & bit]
        head = f"protocol {_lit(program, proto.name)} over {', '.join(transports)}"
        if proto.ports:
            head += " ports " + ", ".join(map(str, proto.ports))
        if proto.after is not None:
            head += f" after {_lit(program, proto.after)}"
        lines.append(head)
        if proto.variables:
            lines.append("  variables: " + ", ".join(
                f"v{i}={_lit(program, n)}" for i, n in enumerate(proto.variables)))
        for si, step in enumerate(proto.steps):
            direction = DIRECTIONS[step.direction] if step.direction < 3 else "?"
            head = f"  {'watch' if step.watch else 'step'} {_lit(program, step.name)} " \
                   f"from {direction}"
            if costs is not None and (pi, si) in costs:
                head += f"  (cost bound {costs[(pi, si)]})"
            lines.append(head)
            depth = 0
            for n, ins in enumerate(step.code):
                if ins.op in (OPCODES["OPT_END"], OPCODES["LOOP_END"]):
                    depth = max(0, depth - 1)
                lines.append(f"    {n:4d}  " + "  " * depth + describe_instr(program, ins))
                if ins.op in (OPCODES["OPT_BEGIN"], OPCODES["LOOP_BEGIN"]):
                    depth += 1
    return "\n".join(lines) + "\n"
