"""Follow one packet through a loaded classifier's instructions, in Python: which path,
how many eBPF instructions, which helper calls.

This module owns a small interpreter for the instructions nfkit's programs use
(64-bit ALU, byte swaps, jumps, loads and stores, 64-bit immediates, map
references, local calls, the helpers `map_lookup_elem`, `skb_load_bytes`,
`ktime_get_coarse_ns` and `ktime_get_ns`),
over regions of memory (the stack, the packet, the skb context, map values).
It answers "what does a packet cost" where the kernel gives no counter
(instruction counts need `kernel.bpf_stats_enabled` or hardware counters,
neither available to nfkit on a shared machine): the bench quotes it, and the
tests hold the decided-flow path to one map lookup.  Map lookups read the
loaded classifier's real maps (a copy of the value: the interpreter never
writes the kernel's maps); a path that reaches a helper it does not model
stops with `TraceStop` naming it.  It is not a verifier and not the kernel:
the kernel runs the program; this reads it.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nfkit.nfgrep.ebpf.insn import (
    ALU_NAMES,
    CLASS_NAMES,
    JMP_NAMES,
    PSEUDO_CALL,
    PSEUDO_FUNC,
    PSEUDO_MAP_FD,
    SIZE_BYTES,
    SIZE_NAMES,
    decode,
    encode,
)
from nfkit.nfgrep.ebpf.spec import HELPER, HELPER_NAMES, SKB_DATA, SKB_DATA_END

if TYPE_CHECKING:
    from nfkit.nfgrep.ebpf.program import Classifier

MASK64 = (1 << 64) - 1
STACK = 512
NONNULL = 1 << 40  # where a pointer compared with a number is taken to point


class TraceStop(Exception):
    """The path reached something the interpreter does not model (named in the message)."""


@dataclass(frozen=True)
class Ptr:
    """A pointer: a region of memory and an offset in it."""

    region: bytearray
    off: int

    def __add__(self, n: int) -> Ptr:
        return Ptr(self.region, self.off + n)


@dataclass(frozen=True)
class Func:
    """A subprogram's address (a bpf_loop callback), by slot."""

    slot: int


Value = int | Ptr | Func


@dataclass
class Path:
    """What one run followed: instructions executed and the helpers called, in order."""

    executed: int = 0
    helpers: list[str] = field(default_factory=list)
    verdict: int = 0
    mark: int = 0


def _signed(v: int) -> int:
    return v - (1 << 64) if v & (1 << 63) else v


def run(insns_bytes: bytes, maps: dict[int, object], packet: bytes, mark: int = 0,
        limit: int = 100_000, linear: int | None = None) -> Path:
    """Run the program (its encoded instructions) on one packet.  ``maps``: map fd -> a
    `bpf.Map` (looked up for real) or a bytearray (a map value every key finds);
    ``linear``: bytes of the packet in the skb's linear data (default all: data_end is
    then the packet's end; skb_load_bytes reads every byte)."""
    insns = decode(insns_bytes)
    at: dict[int, int] = {}
    slot = 0
    for i, ins in enumerate(insns):
        at[slot] = i
        slot += ins.slots
    slots = [0]
    for ins in insns:
        slots.append(slots[-1] + ins.slots)
    pkt = bytearray(packet)
    ctx = bytearray(192)
    struct.pack_into("<II", ctx, 0, len(pkt), 0)
    struct.pack_into("<I", ctx, 8, mark)
    spilled: dict[tuple[int, int], Ptr] = {}
    path = Path()
    regs: list[Value] = [0] * 11
    regs[1] = Ptr(ctx, 0)
    regs[10] = Ptr(bytearray(STACK), STACK)

    def callback(pc: int, args: list[Value]) -> Value:
        """A bpf_loop callback: a function run to its exit, on a stack of its own."""
        return execute(pc, [0, *args, *[0] * (5 - len(args)), 0, 0, 0, 0, Ptr(bytearray(STACK), STACK)])

    def execute(pc: int, regs: list[Value]) -> Value:
        frames: list[tuple[int, list[Value]]] = []
        while True:
            step = _one(pc, regs, frames)
            if step is None:
                return regs[0]
            pc = step

    def _one(pc: int, regs: list[Value], frames: list[tuple[int, list[Value]]]) -> int | None:
        path.executed += 1
        if path.executed > limit:
            raise TraceStop(f"more than {limit} instructions")
        ins = insns[pc]
        cls = CLASS_NAMES[ins.op & 7]
        nxt = pc + 1
        if cls in ("alu64", "alu"):
            name = ALU_NAMES[ins.op & 0xF0]
            if name == "mov" and ins.op & 0x08 and isinstance(regs[ins.src], Func):
                regs[ins.dst] = regs[ins.src]
                return nxt
            src = _data(regs[ins.src]) if ins.op & 0x08 else ins.imm & MASK64
            dst = _data(regs[ins.dst])
            if name == "end":
                assert isinstance(dst, int)
                width = ins.imm // 8
                regs[ins.dst] = int.from_bytes((dst & ((1 << ins.imm) - 1)).to_bytes(width, "little"),
                                               "big")
            elif name == "mov":
                regs[ins.dst] = src if cls == "alu64" or isinstance(src, Ptr) else src & 0xFFFFFFFF
            elif isinstance(dst, Ptr) or isinstance(src, Ptr):
                if name == "add" and isinstance(dst, Ptr) and isinstance(src, int):
                    regs[ins.dst] = dst + _signed(src)
                elif name == "add" and isinstance(dst, int) and isinstance(src, Ptr):
                    regs[ins.dst] = src + _signed(dst)
                elif name == "sub" and isinstance(dst, Ptr) and isinstance(src, Ptr):
                    regs[ins.dst] = (dst.off - src.off) & MASK64
                elif name == "sub" and isinstance(dst, Ptr) and isinstance(src, int):
                    regs[ins.dst] = dst + -_signed(src)
                else:
                    raise TraceStop(f"pointer arithmetic {name} at slot {slots[pc]}")
            else:
                assert isinstance(src, int) and isinstance(dst, int)
                ops = {"add": dst + src, "sub": dst - src, "mul": dst * src, "or": dst | src,
                       "and": dst & src, "xor": dst ^ src, "lsh": dst << (src & 63),
                       "rsh": (dst & MASK64) >> (src & 63),
                       "div": dst // src if src else 0, "mod": dst % src if src else dst}
                if name not in ops:
                    raise TraceStop(f"ALU {name} at slot {slots[pc]}")
                v = ops[name] & MASK64
                regs[ins.dst] = v if cls == "alu64" else v & 0xFFFFFFFF
        elif cls == "ld":  # lddw
            if ins.src == PSEUDO_FUNC:
                regs[ins.dst] = Func(slots[pc] + 1 + ins.imm)
            elif ins.src == PSEUDO_MAP_FD:
                regs[ins.dst] = ins.imm  # the map's fd stands for the map
            else:
                regs[ins.dst] = ins.imm & MASK64
        elif cls == "ldx":
            size = SIZE_BYTES[SIZE_NAMES[ins.op & 0x18]]
            base = regs[ins.src]
            if not isinstance(base, Ptr):
                raise TraceStop(f"load through a non-pointer at slot {slots[pc]}")
            off = base.off + ins.off
            if base.region is ctx and off in (SKB_DATA, SKB_DATA_END):
                end = len(pkt) if linear is None else min(linear, len(pkt))
                regs[ins.dst] = Ptr(pkt, 0 if off == SKB_DATA else end)
            elif size == 8 and (id(base.region), off) in spilled:
                regs[ins.dst] = spilled[(id(base.region), off)]
            else:
                if off < 0 or off + size > len(base.region):
                    raise TraceStop(f"load outside its region at slot {slots[pc]}")
                regs[ins.dst] = int.from_bytes(base.region[off:off + size], "little")
        elif cls in ("stx", "st"):
            size = SIZE_BYTES[SIZE_NAMES[ins.op & 0x18]]
            base = regs[ins.dst]
            if not isinstance(base, Ptr):
                raise TraceStop(f"store through a non-pointer at slot {slots[pc]}")
            off = base.off + ins.off
            val = _data(regs[ins.src]) if cls == "stx" else ins.imm & MASK64
            key = (id(base.region), off)
            if isinstance(val, Ptr):
                spilled[key] = val
                val = 0
            else:
                spilled.pop(key, None)
            if off < 0 or off + size > len(base.region):
                raise TraceStop(f"store outside its region at slot {slots[pc]}")
            base.region[off:off + size] = (val & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        elif cls == "jmp":
            name = JMP_NAMES[ins.op & 0xF0]
            if name == "exit":
                if not frames:
                    return None
                nxt, saved = frames.pop()
                regs[6:10] = saved[6:10]
                regs[10] = saved[10]
            elif name == "call":
                if ins.src == PSEUDO_CALL:
                    frames.append((nxt, list(regs)))
                    regs[10] = Ptr(bytearray(STACK), STACK)
                    nxt = at[slots[pc] + 1 + ins.imm]
                else:
                    path.helpers.append(HELPER_NAMES.get(ins.imm, str(ins.imm)))
                    if ins.imm == HELPER["loop"]:
                        count, fn = regs[1], regs[2]
                        if not isinstance(fn, Func) or not isinstance(count, int):
                            raise TraceStop(f"bpf_loop without a callback at slot {slots[pc]}")
                        done = 0
                        while done < count:
                            done += 1
                            if callback(at[fn.slot], [done - 1, regs[3]]) == 1:
                                break
                        regs[0] = done
                    else:
                        regs[0] = _helper(ins.imm, regs, maps, pkt)
                    regs[1:6] = [0] * 5
            elif name == "ja":
                nxt = at[slots[pc] + 1 + ins.off]
            else:
                a = _data(regs[ins.dst])
                b = _data(regs[ins.src]) if ins.op & 0x08 else ins.imm & MASK64
                if isinstance(a, Ptr) and isinstance(b, Ptr):  # two packet pointers
                    av, bv = a.off, b.off
                elif isinstance(a, Ptr) or isinstance(b, Ptr):  # a pointer is never null
                    av = NONNULL + a.off if isinstance(a, Ptr) else a
                    bv = NONNULL + b.off if isinstance(b, Ptr) else b
                else:
                    av, bv = a, b
                if _taken(name, av, bv):
                    nxt = at[slots[pc] + 1 + ins.off]
        else:
            raise TraceStop(f"instruction class {cls} at slot {slots[pc]}")
        return nxt

    r0 = execute(0, regs)
    path.verdict = r0 if isinstance(r0, int) else -1
    path.mark = struct.unpack_from("<I", ctx, 8)[0]
    return path


def _data(v: Value) -> int | Ptr:
    if isinstance(v, Func):
        raise TraceStop("a subprogram's address used as data")
    return v


def _taken(name: str, a: int, b: int) -> bool:
    ua, ub, sa, sb = a & MASK64, b & MASK64, _signed(a & MASK64), _signed(b & MASK64)
    return {"jeq": ua == ub, "jne": ua != ub, "jgt": ua > ub, "jge": ua >= ub, "jlt": ua < ub,
            "jle": ua <= ub, "jset": bool(ua & ub), "jsgt": sa > sb, "jsge": sa >= sb,
            "jslt": sa < sb, "jsle": sa <= sb}[name]


def _bytes_at(p: Value, size: int) -> bytes:
    if not isinstance(p, Ptr):
        raise TraceStop("a helper's argument is not a pointer")
    return bytes(p.region[p.off:p.off + size])


def _helper(helper: int, regs: list[Value], maps: dict[int, object], pkt: bytearray) -> Value:
    if helper == HELPER["map_lookup_elem"]:
        m = maps.get(int(regs[1]))  # type: ignore[arg-type]
        if isinstance(m, bytearray):
            return Ptr(m, 0)
        if m is None:
            raise TraceStop(f"map fd {regs[1]} not given")
        key = _bytes_at(regs[2], m.key_size)  # type: ignore[attr-defined]
        value = m.lookup(key)  # type: ignore[attr-defined]
        return 0 if value is None else Ptr(bytearray(value), 0)
    if helper in (HELPER["map_update_elem"], HELPER["map_delete_elem"]):
        m = maps.get(int(regs[1]))  # type: ignore[arg-type]  # the trace writes no map:
        if m is None or isinstance(m, bytearray):              # as if it had been written
            raise TraceStop(f"map fd {regs[1]} not given")
        _bytes_at(regs[2], m.key_size)  # type: ignore[attr-defined]
        if helper == HELPER["map_update_elem"]:
            _bytes_at(regs[3], m.value_size)  # type: ignore[attr-defined]
        return 0
    if helper == HELPER["skb_load_bytes"]:
        off, size, dst = int(regs[2]), int(regs[4]), regs[3]  # type: ignore[arg-type]
        if off + size > len(pkt) or not isinstance(dst, Ptr):
            return (-14) & MASK64
        dst.region[dst.off:dst.off + size] = pkt[off:off + size]
        return 0
    if helper == HELPER["ktime_get_coarse_ns"]:  # CLOCK_MONOTONIC_COARSE: at most a tick
        return time.monotonic_ns()               # behind this clock
    if helper == HELPER["ktime_get_ns"]:
        return time.monotonic_ns()
    raise TraceStop(f"helper {HELPER_NAMES.get(helper, helper)} (not modelled)")


def trace_packet(classifier: Classifier, packet: bytes, linear: int | None = None) -> Path:
    """One packet through a loaded `program.Classifier`, its maps read (never written)."""
    maps: dict[int, object] = {classifier.flows.fd: classifier.flows,
                               classifier.expected.fd: classifier.expected,
                               classifier.first.fd: classifier.first,
                               classifier.scratch.fd: bytearray(classifier.compiled.scratch_size + 64)}
    return run(encode(classifier.compiled.insns), maps, packet, linear=linear)


__all__ = ["Path", "Ptr", "TraceStop", "run", "trace_packet"]
