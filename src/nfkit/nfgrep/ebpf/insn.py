"""eBPF instructions as data: the encoding tables, an assembler with labels, a disassembler.

This module owns the instruction set's encoding (classes, sizes, modes, ALU
and jump operations as tables, one truth for the encoder and the listing),
`Insn` (one 8-byte slot, or the two slots of a 64-bit load), `Assembler`
(emits instructions, resolves labels into jump offsets and call targets when
the program is finished) and `disassemble`.  It knows nothing of bpf(2) nor
of nfgrep.

Encoding (kernel Documentation/bpf/standardization/instruction-set.rst):
``opcode u8 | dst_reg:4 src_reg:4 | offset s16 | imm s32``, little endian;
``lddw`` takes two slots, the second holding the high 32 bits of imm.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

from nfkit.errors import InputError

SLOT = struct.Struct("<BBhi")

# instruction classes
CLASSES = {"ld": 0x00, "ldx": 0x01, "st": 0x02, "stx": 0x03, "alu": 0x04, "jmp": 0x05,
           "jmp32": 0x06, "alu64": 0x07}
CLASS_NAMES = {v: k for k, v in CLASSES.items()}
# load/store size and mode
SIZES = {"w": 0x00, "h": 0x08, "b": 0x10, "dw": 0x18}
SIZE_NAMES = {v: k for k, v in SIZES.items()}
SIZE_BYTES = {"b": 1, "h": 2, "w": 4, "dw": 8}
MODE_IMM, MODE_MEM = 0x00, 0x60
SRC_K, SRC_X = 0x00, 0x08
# ALU operations (bits 4-7)
ALU_OPS = {"add": 0x00, "sub": 0x10, "mul": 0x20, "div": 0x30, "or": 0x40, "and": 0x50,
           "lsh": 0x60, "rsh": 0x70, "neg": 0x80, "mod": 0x90, "xor": 0xa0, "mov": 0xb0,
           "arsh": 0xc0, "end": 0xd0}
ALU_NAMES = {v: k for k, v in ALU_OPS.items()}
ALU_SYMBOLS = {"add": "+=", "sub": "-=", "mul": "*=", "div": "/=", "or": "|=", "and": "&=",
               "lsh": "<<=", "rsh": ">>=", "mod": "%=", "xor": "^=", "mov": "=",
               "arsh": "s>>="}
# jump operations (bits 4-7)
JMP_OPS = {"ja": 0x00, "jeq": 0x10, "jgt": 0x20, "jge": 0x30, "jset": 0x40, "jne": 0x50,
           "jsgt": 0x60, "jsge": 0x70, "call": 0x80, "exit": 0x90, "jlt": 0xa0, "jle": 0xb0,
           "jslt": 0xc0, "jsle": 0xd0}
JMP_NAMES = {v: k for k, v in JMP_OPS.items()}
JMP_SYMBOLS = {"jeq": "==", "jgt": ">", "jge": ">=", "jset": "&", "jne": "!=", "jsgt": "s>",
               "jsge": "s>=", "jlt": "<", "jle": "<=", "jslt": "s<", "jsle": "s<="}
# src_reg of special instructions
PSEUDO_MAP_FD = 1   # lddw: imm is a map fd
PSEUDO_FUNC = 4     # lddw: imm is the relative slot of a subprogram (a callback)
PSEUDO_CALL = 1     # call: imm is the relative slot of a subprogram

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
FP = R10


@dataclass
class Insn:
    """One instruction: one slot, or two for ``lddw`` (``wide``).

    ``target`` names a label to resolve into ``off`` (jumps) or ``imm``
    (subprogram calls and callback addresses) when the program is assembled.
    """

    op: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    wide: bool = False
    target: str | None = None

    @property
    def slots(self) -> int:
        return 2 if self.wide else 1

    def encode(self) -> bytes:
        regs = (self.src << 4) | self.dst
        if self.wide:
            low = self.imm & 0xFFFFFFFF
            high = (self.imm >> 32) & 0xFFFFFFFF
            return SLOT.pack(self.op, regs, self.off, _s32(low)) + SLOT.pack(0, 0, 0, _s32(high))
        return SLOT.pack(self.op, regs, self.off, self.imm)


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def encode(insns: list[Insn]) -> bytes:
    """The program's bytes, as bpf(BPF_PROG_LOAD) takes them."""
    return b"".join(i.encode() for i in insns)


def decode(blob: bytes) -> list[Insn]:
    """Bytes -> instructions (a ``lddw`` and its second slot become one Insn)."""
    if len(blob) % 8:
        raise InputError(f"eBPF program of {len(blob)} bytes: not a whole number of instructions")
    out: list[Insn] = []
    i = 0
    while i < len(blob):
        op, regs, off, imm = SLOT.unpack_from(blob, i)
        if op == CLASSES["ld"] | SIZES["dw"] | MODE_IMM:
            if i + 16 > len(blob):
                raise InputError(f"eBPF program: lddw at slot {i // 8} lacks its second slot")
            high = SLOT.unpack_from(blob, i + 8)[3]
            out.append(Insn(op, regs & 15, regs >> 4, off,
                            (imm & 0xFFFFFFFF) | ((high & 0xFFFFFFFF) << 32), wide=True))
            i += 16
            continue
        out.append(Insn(op, regs & 15, regs >> 4, off, imm))
        i += 8
    return out


# ---------------------------------------------------------------- constructors

def alu64(name: str, dst: int, src: int | None = None, imm: int = 0) -> Insn:
    """``dst OP= src`` (a register) or ``dst OP= imm`` on 64 bits."""
    code = CLASSES["alu64"] | ALU_OPS[name] | (SRC_X if src is not None else SRC_K)
    return Insn(code, dst, src or 0, 0, imm)


def alu32(name: str, dst: int, src: int | None = None, imm: int = 0) -> Insn:
    code = CLASSES["alu"] | ALU_OPS[name] | (SRC_X if src is not None else SRC_K)
    return Insn(code, dst, src or 0, 0, imm)


def mov(dst: int, src: int) -> Insn:
    return alu64("mov", dst, src)


def movi(dst: int, imm: int) -> Insn:
    """A 32-bit signed constant, sign extended (use `lddw` for others)."""
    return alu64("mov", dst, imm=imm)


def lddw(dst: int, imm: int, src: int = 0) -> Insn:
    return Insn(CLASSES["ld"] | SIZES["dw"] | MODE_IMM, dst, src, 0, imm, wide=True)


def ld_map(dst: int, map_fd: int) -> Insn:
    return lddw(dst, map_fd, PSEUDO_MAP_FD)


def ld_func(dst: int, label: str) -> Insn:
    """The address of a subprogram (a bpf_loop callback)."""
    insn = lddw(dst, 0, PSEUDO_FUNC)
    insn.target = label
    return insn


def ldx(size: str, dst: int, src: int, off: int) -> Insn:
    return Insn(CLASSES["ldx"] | SIZES[size] | MODE_MEM, dst, src, off)


def stx(size: str, dst: int, off: int, src: int) -> Insn:
    return Insn(CLASSES["stx"] | SIZES[size] | MODE_MEM, dst, src, off)


def st(size: str, dst: int, off: int, imm: int) -> Insn:
    return Insn(CLASSES["st"] | SIZES[size] | MODE_MEM, dst, 0, off, imm)


def bswap(dst: int, bits: int) -> Insn:
    """Host (little endian) to big endian: the kernel's ``be16/be32/be64``."""
    return Insn(CLASSES["alu"] | ALU_OPS["end"] | SRC_X, dst, 0, 0, bits)


def jmp(name: str, dst: int, label: str, src: int | None = None, imm: int = 0) -> Insn:
    """``if dst OP src|imm goto label`` (64-bit compare)."""
    code = CLASSES["jmp"] | JMP_OPS[name] | (SRC_X if src is not None else SRC_K)
    return Insn(code, dst, src or 0, 0, imm, target=label)


def ja(label: str) -> Insn:
    return Insn(CLASSES["jmp"] | JMP_OPS["ja"], target=label)


def call(helper: int) -> Insn:
    return Insn(CLASSES["jmp"] | JMP_OPS["call"], imm=helper)


def call_local(label: str) -> Insn:
    return Insn(CLASSES["jmp"] | JMP_OPS["call"], src=PSEUDO_CALL, target=label)


def exit_() -> Insn:
    return Insn(CLASSES["jmp"] | JMP_OPS["exit"])


# ---------------------------------------------------------------- assembler

class Assembler:
    """Collects instructions and labels; `finish` resolves every label into offsets.

    Labels are names; a jump to a label not placed, or a label placed twice,
    is an error naming it (a compiler bug, never a user's).
    """

    def __init__(self) -> None:
        self.insns: list[Insn] = []
        self.labels: dict[str, int] = {}  # label -> instruction index
        self.comments: dict[int, str] = {}  # instruction index -> note for the listing

    # one counter for every assembler, so code spliced from several never clashes
    _counter = itertools.count(1)

    def fresh(self, stem: str = "L") -> str:
        return f"{stem}.{next(Assembler._counter)}"

    def emit(self, *insns: Insn) -> None:
        self.insns.extend(insns)

    def label(self, name: str) -> None:
        if name in self.labels:
            raise AssertionError(f"eBPF assembler: label {name} placed twice")
        self.labels[name] = len(self.insns)

    def note(self, text: str) -> None:
        """A comment shown in the listing before the next instruction."""
        here = len(self.insns)
        self.comments[here] = self.comments[here] + "; " + text if here in self.comments else text

    def prune(self, entries: set[str]) -> None:
        """Drop the instructions no path reaches from index 0 or the ``entries`` labels
        (the kernel refuses unreachable code); labels move to the next kept instruction."""
        ja_op = CLASSES["jmp"] | JMP_OPS["ja"]
        exit_op = CLASSES["jmp"] | JMP_OPS["exit"]
        call_op = CLASSES["jmp"] | JMP_OPS["call"]
        seen = [False] * len(self.insns)
        work = [0] + [self.labels[e] for e in entries]
        while work:
            i = work.pop()
            if i >= len(self.insns) or seen[i]:
                continue
            seen[i] = True
            insn = self.insns[i]
            if insn.op == exit_op:
                continue
            if insn.target is not None and not insn.wide and insn.op != call_op:
                work.append(self.labels[insn.target])
                if insn.op == ja_op:
                    continue
            work.append(i + 1)
        new_index = []
        kept = 0
        for i in range(len(self.insns)):
            new_index.append(kept)
            kept += seen[i]
        new_index.append(kept)
        self.labels = {name: new_index[at] for name, at in self.labels.items()}
        comments: dict[int, str] = {}
        for at, text in self.comments.items():
            where = new_index[at]
            comments[where] = comments[where] + "; " + text if where in comments else text
        self.comments = comments
        self.insns = [insn for i, insn in enumerate(self.insns) if seen[i]]

    def finish(self) -> list[Insn]:
        """Resolve labels: jump offsets and relative call/callback targets, in slots."""
        slot_of = []
        n = 0
        for insn in self.insns:
            slot_of.append(n)
            n += insn.slots
        slot_of.append(n)
        for i, insn in enumerate(self.insns):
            if insn.target is None:
                continue
            if insn.target not in self.labels:
                raise AssertionError(f"eBPF assembler: label {insn.target} never placed")
            delta = slot_of[self.labels[insn.target]] - (slot_of[i] + 1)
            if insn.wide or insn.src == PSEUDO_CALL and insn.op == CLASSES["jmp"] | JMP_OPS["call"]:
                insn.imm = delta
            else:
                if not -32768 <= delta <= 32767:
                    raise AssertionError(f"eBPF assembler: jump to {insn.target} out of range")
                insn.off = delta
        return self.insns

    def slot_comments(self) -> dict[int, str]:
        """Comments keyed by slot number (what `disassemble` takes)."""
        out: dict[int, str] = {}
        n = 0
        for i, insn in enumerate(self.insns):
            if i in self.comments:
                out[n] = self.comments[i]
            n += insn.slots
        return out


# ---------------------------------------------------------------- listing

def _reg(r: int) -> str:
    return "fp" if r == FP else f"r{r}"


def describe(insn: Insn, slot: int = 0, helpers: dict[int, str] | None = None) -> str:
    """One instruction in the kernel verifier's notation (``r1 = *(u32 *)(r2 +4)``)."""
    cls = insn.op & 0x07
    cname = CLASS_NAMES[cls]
    if cname in ("alu", "alu64"):
        opname = ALU_NAMES.get(insn.op & 0xF0, "?")
        w = "" if cname == "alu64" else "w"
        dst = f"{w}{insn.dst}" if w else _reg(insn.dst)
        if opname == "end":
            return f"r{insn.dst} = {'be' if insn.op & SRC_X else 'le'}{insn.imm} r{insn.dst}"
        if opname == "neg":
            return f"{dst} = -{dst}"
        src = (f"{w}{insn.src}" if w else _reg(insn.src)) if insn.op & SRC_X else str(insn.imm)
        return f"{dst} {ALU_SYMBOLS.get(opname, opname)} {src}"
    if cname in ("jmp", "jmp32"):
        opname = JMP_NAMES.get(insn.op & 0xF0, "?")
        if opname == "exit":
            return "exit"
        if opname == "call":
            if insn.src == PSEUDO_CALL:
                return f"call pc{insn.imm:+d} (slot {slot + 1 + insn.imm})"
            name = (helpers or {}).get(insn.imm)
            return f"call {name or insn.imm}#{insn.imm}" if name else f"call #{insn.imm}"
        if opname == "ja":
            return f"goto pc{insn.off:+d} (slot {slot + 1 + insn.off})"
        src = _reg(insn.src) if insn.op & SRC_X else str(insn.imm)
        w = "w" if cname == "jmp32" else "r"
        return (f"if {w}{insn.dst} {JMP_SYMBOLS.get(opname, opname)} {src} goto pc{insn.off:+d} "
                f"(slot {slot + 1 + insn.off})")
    size = SIZE_NAMES.get(insn.op & 0x18, "?")
    ctype = {"b": "u8", "h": "u16", "w": "u32", "dw": "u64"}[size]
    if cname == "ld" and insn.wide:
        if insn.src == PSEUDO_MAP_FD:
            return f"r{insn.dst} = map[fd {insn.imm}]"
        if insn.src == PSEUDO_FUNC:
            return f"r{insn.dst} = func pc{insn.imm:+d} (slot {slot + 1 + insn.imm})"
        return f"r{insn.dst} = {insn.imm:#x} ll"
    if cname == "ldx":
        return f"r{insn.dst} = *({ctype} *)({_reg(insn.src)} {insn.off:+d})"
    if cname == "stx":
        return f"*({ctype} *)({_reg(insn.dst)} {insn.off:+d}) = r{insn.src}"
    if cname == "st":
        return f"*({ctype} *)({_reg(insn.dst)} {insn.off:+d}) = {insn.imm}"
    return f"<opcode {insn.op:#04x}>"


def disassemble(insns: list[Insn], comments: dict[int, str] | None = None,
                helpers: dict[int, str] | None = None) -> str:
    """A listing, one instruction per line with its slot number; comments in between."""
    lines = []
    slot = 0
    for insn in insns:
        if comments and slot in comments:
            lines.append(f"      ; {comments[slot]}")
        lines.append(f"{slot:5d}: {describe(insn, slot, helpers)}")
        slot += insn.slots
    return "\n".join(lines) + "\n"
