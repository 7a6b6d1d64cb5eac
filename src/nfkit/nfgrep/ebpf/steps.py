"""One nfgrep step -> one eBPF subprogram (its instructions appended to an Assembler).

This module owns the translation of the stack bytecode (bytecode.py) into
eBPF for a single step, with the same meaning as codegen.py's Python: the
cursor, the region a repeat confines reads to, optional blocks that forgive
a failure, repeats, literal matches and searches.  It does not know flows,
maps or the decision: the program (program.py) calls each step's subprogram
and stores its result.

Calling convention of a step subprogram::

    no arguments (the frame is in the scratch map); r0 on return:
    HELD (the step holds; the frame's cursor is where it ended), FAIL,
    NEED (more data would decide: the engine waits too), GIVE_UP or
    UNSURE (the kernel cannot tell what the engine would answer: a literal
    cut by the packet's end, a number past 64 bits, a step not translated)

Inside, r9 holds the frame, r7 the payload buffer (a per-CPU map value of
BUF + PAD bytes, looked up again in each callback), r6 the step's result
while it unwinds.  The bytecode's operand stack lives in registers r1..r4
(the register allocator below: stack slot d is register SLOTS[d]); slots past
those (the nfgrep verifier allows MAX_STACK) are spilled to the frame, in the
per-CPU scratch map, and loaded into r6 / r8 when an instruction uses them.
r0 and r5 are scratch.  Helper calls (bpf_loop) happen only
between statements, where the operand stack is empty, so nothing live is
clobbered.  Loops (searches, repeats, DNS labels) are bpf_loop callbacks: the
kernel verifier checks each body once instead of once per iteration.

Frame layout (u64 slots from r9): n (bytes of payload held), p (cursor), E
(region end), FINAL (1 on UDP: no more data will come), then the protocol's
variables, the operand stack's spill slots, then per-block save slots
allocated by `Frame.slot` (at most MAX_FRAME bytes in all; the scratch map's
value is sized to the largest step's frame).  The frame
lives in the scratch map's value, not on the stack: the kernel verifier does
not track values in map memory, so the states of the many paths through a
step's blocks look alike to it and are pruned (on the stack each path's
exact cursor would keep them apart, past the verifier's complexity limit).

Every read of the buffer is checked at run time against n and E first (the
step's semantics), then its offset is masked with BUF - 1 so the kernel
verifier sees an access inside the map value (the mask never changes an
offset that passed the check, since n <= BUF).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nfkit.nfgrep.bytecode import BINOPS, CMPS, MAX_KEEP_BYTES, OPS, Block, Instr, Program, nest
from nfkit.nfgrep.ebpf.insn import (
    FP,
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    Assembler,
    alu64,
    call,
    exit_,
    ja,
    jmp,
    ld_func,
    ld_map,
    lddw,
    ldx,
    mov,
    movi,
    st,
    stx,
)
from nfkit.nfgrep.ebpf.spec import HELPER
from nfkit.nfgrep.verifier import MAX_STACK

HELD, FAIL, NEED, GIVE_UP, UNSURE = 0, 1, 2, 3, 4
BUF = 2048          # payload bytes the kernel program examines per packet (a power of two)
PAD = 16            # bytes after BUF so a masked offset plus a read width stays inside
BIG = 1 << 62       # "no region" (codegen.BIG)
SLOTS = (R1, R2, R3, R4)  # the register allocator: operand stack slot d lives in SLOTS[d]
SPILLS = MAX_STACK - len(SLOTS)  # deeper slots: spilled to the frame (per-CPU map memory)
MAX_FRAME = 4096    # bytes of step frame at most (the per-CPU scratch map's value holds it)

CTX_SLOT = -16      # in each subprogram's stack: the scratch value's address, bpf_loop's context
# fixed frame slots (F_KEY: the scratch map's key, 0, so subprograms need no stack)
F_N, F_P, F_E, F_FINAL, F_KEY, F_VARS = 0, 8, 16, 24, 32, 40


class Unsupported(Exception):
    """A step this back end does not translate (it answers UNSURE: userspace decides)."""


@dataclass
class Frame:
    """The step frame's layout: fixed slots, variables, then save slots by bump allocation."""

    nvars: int
    fields: int = 0  # bytes for captured fields and `field ... is` values (FieldSlots)
    top: int = 0
    used: int = 0

    def __post_init__(self) -> None:
        self.top = self.fields_at + self.fields
        self.used = self.top

    @property
    def fields_at(self) -> int:
        """Where the step's field slots start (after the variables and the spill slots)."""
        return F_VARS + 8 * self.nvars + 8 * SPILLS

    def var(self, i: int) -> int:
        return F_VARS + 8 * i

    def spill(self, d: int) -> int:
        """Where operand stack slot ``d`` (past the registers) lives."""
        return F_VARS + 8 * self.nvars + 8 * (d - len(SLOTS))

    def slot(self) -> int:
        off = self.top
        self.top += 8
        self.used = max(self.used, self.top)
        if self.top > MAX_FRAME:
            raise Unsupported(f"the step needs more than {MAX_FRAME} bytes of frame")
        return off


FIELD_BYTES = 32  # bytes of a captured field the flow entry holds (longer: userspace decides)
# a `field ... is` value in the frame: status (0 known, else UNSURE), length, bytes
IS_STATUS, IS_LEN, IS_BYTES, IS_SIZE = 0, 8, 16, 16 + FIELD_BYTES
# a field a step captures, in the frame: start and end offsets in the buffer, status
KEPT_START, KEPT_END, KEPT_STATUS, KEPT_SIZE = 0, 8, 16, 24
NOT_KEPT, KEPT, KEPT_UNREADABLE = 0, 1, 2  # KEPT_STATUS (and the flow entry's status byte)


@dataclass
class FieldSlots:
    """Where one step's captured fields and `field ... is` values live in its frame (offsets
    from the frame): ``kept`` for the fields later protocols test, ``tested`` for the
    values its own `field ... is` statements compare."""

    kept: dict[str, int] = field(default_factory=dict)
    tested: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def layout(base: int, kept: list[str], tested: list[str]) -> FieldSlots:
        slots = FieldSlots()
        for f in kept:
            slots.kept[f] = base + KEPT_SIZE * len(slots.kept)
        at = base + KEPT_SIZE * len(kept)
        for f in tested:
            slots.tested[f] = at + IS_SIZE * len(slots.tested)
        return slots

    @staticmethod
    def size(kept: list[str], tested: list[str]) -> int:
        return KEPT_SIZE * len(kept) + IS_SIZE * len(tested)


def _sets(block: Block) -> set[int]:
    """The variables a block may set (what a failed optional or repeat restores)."""
    out: set[int] = set()
    for item in block.items:
        if isinstance(item, Block):
            out |= _sets(item)
        elif OPS[item.op].name == "LET":
            out.add(item.a)
    return out


def live_in(code: list[Instr]) -> set[int]:
    """Variables a step may read before setting them (values from earlier steps, or 0)."""
    out: set[int] = set()
    assigned: set[int] = set()
    depth = 0
    for ins in code:
        name = OPS[ins.op].name
        if name in ("OPT_BEGIN", "LOOP_BEGIN"):
            depth += 1
        elif name in ("OPT_END", "LOOP_END"):
            depth -= 1
        elif name == "PUSH_VAR" and ins.a not in assigned:
            out.add(ins.a)
        elif name == "LET" and depth == 0:
            # only a top-level LET surely runs (a failed block restores what it set)
            assigned.add(ins.a)
    return out


class StepCompiler:
    """Emits one step's subprogram into a shared assembler (callbacks go to ``tail``)."""

    def __init__(self, asm: Assembler, tail: list[tuple[str, Assembler]], program: Program,
                 nvars: int, scratch_fd: int, name: str, frame_off: int,
                 fields: FieldSlots | None = None) -> None:
        self.frame_off = frame_off
        self.asm = asm
        self.tail = tail
        self.program = program
        self.fields = fields or FieldSlots()
        self.frame = Frame(nvars, FieldSlots.size(list(self.fields.kept), list(self.fields.tested)))
        self.scratch_fd = scratch_fd
        self.name = name

    # -- helpers --------------------------------------------------------------
    def src(self, a: Assembler, d: int, tmp: int) -> int:
        """The register holding operand slot ``d``: its own, or ``tmp`` loaded from its spill
        slot (slots past r1..r4 live in the frame)."""
        if d < len(SLOTS):
            return SLOTS[d]
        a.emit(ldx("dw", tmp, R9, self.frame.spill(d)))
        return tmp

    def dst(self, d: int, tmp: int) -> int:
        """The register to compute operand slot ``d`` into (then `put`)."""
        return SLOTS[d] if d < len(SLOTS) else tmp

    def put(self, a: Assembler, d: int, reg: int) -> None:
        """Operand slot ``d`` computed in ``reg``: stored to its spill slot when it has one."""
        if d >= len(SLOTS):
            a.emit(stx("dw", R9, self.frame.spill(d), reg))

    def const(self, a: Assembler, reg: int, value: int) -> None:
        if -(1 << 31) <= value < (1 << 31):
            a.emit(movi(reg, value))
        else:
            a.emit(lddw(reg, value & ((1 << 64) - 1)))

    def load_buffer(self, a: Assembler) -> None:
        """r7 = the payload buffer, r9 = the frame (both in the per-CPU scratch map's value,
        key 0); on failure the step answers UNSURE."""
        ok = a.fresh("buf")
        a.emit(st("w", FP, -8, 0), mov(R2, FP), alu64("add", R2, imm=-8),
               ld_map(R1, self.scratch_fd), call(HELPER["map_lookup_elem"]))
        a.emit(jmp("jne", R0, ok, imm=0), movi(R0, UNSURE), exit_())
        a.label(ok)
        a.emit(mov(R7, R0), mov(R9, R0), alu64("add", R9, imm=self.frame_off),
               stx("dw", FP, CTX_SLOT, R7))

    def byte_at(self, a: Assembler, dst: int, pos: int) -> None:
        """dst = buf[pos] (pos already checked against n; masked for the kernel verifier)."""
        a.emit(mov(dst, pos), alu64("and", dst, imm=BUF - 1), alu64("add", dst, R7),
               ldx("b", dst, dst, 0))

    def short(self, a: Assembler, end: int, fail: str) -> None:
        """Guard: the offset in register ``end`` must not pass the data nor the region.

        When it does: FAIL on final data or past the region, else NEED.  Uses r0, r5.
        """
        ok = a.fresh("in")
        # r0 = min(n, E)
        a.emit(ldx("dw", R0, R9, F_N), ldx("dw", R5, R9, F_E),
               jmp("jle", R0, ok + "_cmp", src=R5), mov(R0, R5))
        a.label(ok + "_cmp")
        a.emit(jmp("jle", end, ok, src=R0))
        a.emit(ldx("dw", R0, R9, F_FINAL), jmp("jne", R0, fail + "_f", imm=0))
        a.emit(jmp("jgt", end, fail + "_f", src=R5))
        a.emit(movi(R6, NEED), ja(fail))
        a.label(ok)

    # -- the step -------------------------------------------------------------
    def compile(self, code: list[Instr], label: str) -> None:
        """The subprogram at ``label``: r1 = frame; r0 = result."""
        a = self.asm
        a.label(label)
        a.note(f"step {self.name}")
        mark = len(self.tail)
        try:
            body = Assembler()
            self._prologue(body)
            done = body.fresh("done")
            self.block(body, nest(code), 0, done)
            body.emit(movi(R6, HELD), ja(done))
            fail_target(body, done)
            body.emit(mov(R0, R6), exit_())
        except Unsupported as exc:
            del self.tail[mark:]
            a.note(f"not translated ({exc}): always to userspace")
            a.emit(movi(R0, UNSURE), exit_())
            return
        splice(a, body)

    def _prologue(self, a: Assembler) -> None:
        self.load_buffer(a)
        for off in self.fields.kept.values():
            a.emit(st("dw", R9, off + KEPT_STATUS, NOT_KEPT))

    def block(self, a: Assembler, block: Block, d: int, fail: str) -> int:
        """Statements of a block; a failure sets r6 and jumps to ``fail``."""
        for item in block.items:
            if isinstance(item, Block):
                if item.kind == "OPT_BEGIN":
                    self.optional(a, item, fail)
                else:
                    d = self.repeat(a, item, d, fail)
                continue
            d = self.instr(a, item, d, fail)
        return d

    def optional(self, a: Assembler, block: Block, fail: str) -> None:
        mark = self.frame.top
        saves = self.save(a, block)
        inner = a.fresh("optfail")
        end = a.fresh("optend")
        self.block(a, block, 0, inner)
        a.emit(ja(end))
        fail_target(a, inner)
        a.emit(jmp("jne", R6, fail, imm=FAIL))  # NEED and GIVE_UP leave the step
        self.restore(a, saves)
        a.label(end)
        self.frame.top = mark  # the block's save slots are free again

    def save(self, a: Assembler, block: Block) -> list[tuple[int, int]]:
        pairs = [(F_P, self.frame.slot())]
        for v in sorted(_sets(block)):
            pairs.append((self.frame.var(v), self.frame.slot()))
        for off in self.fields.kept.values():  # a failed block forgets what it kept
            for k in (KEPT_START, KEPT_END, KEPT_STATUS):
                pairs.append((off + k, self.frame.slot()))
        for src, dst in pairs:
            a.emit(ldx("dw", R0, R9, src), stx("dw", R9, dst, R0))
        return pairs

    def restore(self, a: Assembler, pairs: list[tuple[int, int]]) -> None:
        for dst, src in pairs:
            a.emit(ldx("dw", R0, R9, src), stx("dw", R9, dst, R0))

    def callback(self, stem: str) -> tuple[str, Assembler]:
        """A new bpf_loop callback: (label, its assembler); r9 = frame, r7 = buffer on entry."""
        cb = Assembler()
        label = f"{self.name}.{stem}{len(self.tail)}"
        self.tail.append((label, cb))
        # the buffer's address comes through bpf_loop's context (the caller's stack slot
        # holding it), not from a map lookup per iteration
        cb.emit(mov(R6, R1), ldx("dw", R7, R2, 0), mov(R9, R7),
                alu64("add", R9, imm=self.frame_off), stx("dw", FP, CTX_SLOT, R7))
        return label, cb

    def loop_call(self, a: Assembler, label: str, count_reg: int) -> None:
        """bpf_loop(count, callback, NULL, 0): the callback finds the frame in the map."""
        a.emit(mov(R1, count_reg), ld_func(R2, label), mov(R3, FP),
               alu64("add", R3, imm=CTX_SLOT), movi(R4, 0), call(HELPER["loop"]))

    def repeat(self, a: Assembler, block: Block, d: int, fail: str) -> int:
        assert block.begin is not None
        count, region = block.begin.a, block.begin.b
        mark = self.frame.top
        r_slot = self.frame.slot()
        e_save = None
        if region:
            d -= 1
            e_save = self.frame.slot()
            v = self.src(a, d, R8)
            a.emit(ldx("dw", R0, R9, F_E), stx("dw", R9, e_save, R0))
            # q = p + len; if q < E: E = q (len may be huge: saturate instead of wrapping)
            skip = a.fresh("reg")
            a.emit(lddw(R5, BIG), jmp("jge", v, skip, src=R5), ldx("dw", R5, R9, F_P),
                   alu64("add", R5, v), jmp("jge", R5, skip, src=R0), stx("dw", R9, F_E, R5))
            a.label(skip)
        a.emit(st("dw", R9, r_slot, 0))
        label, cb = self.callback("repeat")
        # one iteration: (if region and p >= E: stop) save; body; on failure restore and stop
        stop = cb.fresh("stop")
        if region:
            cb.emit(ldx("dw", R0, R9, F_P), ldx("dw", R5, R9, F_E), jmp("jge", R0, stop, src=R5))
        saves = self.save(cb, block)
        p_saved = saves[0][1]
        inner = cb.fresh("bodyfail")
        self.block(cb, block, 0, inner)
        # held: stop when the cursor did not move
        cb.emit(ldx("dw", R0, R9, F_P), ldx("dw", R5, R9, p_saved), jmp("jeq", R0, stop, src=R5),
                movi(R0, 0), exit_())
        fail_target(cb, inner)
        out = cb.fresh("keep")
        cb.emit(jmp("jeq", R6, out, imm=FAIL), stx("dw", R9, r_slot, R6), ja(stop))
        cb.label(out)
        self.restore(cb, saves)
        cb.label(stop)
        cb.emit(movi(R0, 1), exit_())
        a.emit(movi(R0, count))
        self.loop_call(a, label, R0)
        if e_save is not None:
            a.emit(ldx("dw", R0, R9, e_save), stx("dw", R9, F_E, R0))
        a.emit(ldx("dw", R6, R9, r_slot), jmp("jne", R6, fail, imm=0))
        self.frame.top = mark
        return d

    # -- literals ---------------------------------------------------------------
    def literal(self, index: int) -> bytes:
        return self.program.strings[index]

    def compare(self, a: Assembler, pos: int, lit: bytes, nocase: bool, miss: str) -> None:
        """Jump to ``miss`` unless buf[pos:pos+len(lit)] is lit (already known in range).

        Compared 4, 2 or 1 bytes at a time; without case, letters are OR-ed with 0x20
        (the literal is lower case), which matches both cases of a letter and nothing else.
        """
        j = 0
        while j < len(lit):
            width = 4 if len(lit) - j >= 4 else 2 if len(lit) - j >= 2 else 1
            size = {4: "w", 2: "h", 1: "b"}[width]
            chunk = lit[j:j + width]
            want = int.from_bytes(chunk, "little")
            ormask = 0
            if nocase:
                for k, ch in enumerate(chunk):
                    if 0x61 <= ch <= 0x7A:
                        ormask |= 0x20 << (8 * k)
            a.emit(mov(R0, pos))
            if j:
                a.emit(alu64("add", R0, imm=j))
            a.emit(alu64("and", R0, imm=BUF - 1), alu64("add", R0, R7), ldx(size, R0, R0, 0))
            if ormask:
                a.emit(alu64("or", R0, imm=ormask))
            self.const(a, R5, want)
            a.emit(jmp("jne", R0, miss, src=R5))
            j += width

    def prefix(self, a: Assembler, start: int, lit: bytes, nocase: bool, miss: str,
               fail: str) -> None:
        """The data ends inside the literal: NEED if the bytes there are begin it, else
        ``miss``.  Byte by byte, each checked against n first."""
        for j, ch in enumerate(lit):
            a.emit(ldx("dw", R3, R9, start))
            if j:
                a.emit(alu64("add", R3, imm=j))
            a.emit(ldx("dw", R5, R9, F_N), movi(R6, NEED), jmp("jge", R3, fail, src=R5))
            self.byte_at(a, R0, R3)
            if nocase and 0x61 <= ch <= 0x7A:
                a.emit(alu64("or", R0, imm=0x20))
            a.emit(jmp("jne", R0, miss, imm=ch))
        # the whole literal was there after all (cannot happen: k > n)
        a.emit(movi(R6, UNSURE), ja(fail))

    def match(self, a: Assembler, set_index: int, pos_reg: int | None, fail: str) -> None:
        """MATCH: the first literal of the set, in order, at the cursor or the popped offset."""
        ls = self.program.sets[set_index]
        mark = self.frame.top
        start = self.frame.slot()
        if pos_reg is None:
            a.emit(ldx("dw", R0, R9, F_P), stx("dw", R9, start, R0))
        else:
            a.emit(stx("dw", R9, start, pos_reg))
        done = a.fresh("matched")
        for si in ls.strings:
            lit = self.literal(si)
            nxt = a.fresh("nextlit")
            # k = start + len; k > E: next literal; k > n: on final data the next literal,
            # else NEED when the bytes there are begin the literal (codegen._match)
            a.emit(ldx("dw", R4, R9, start), lddw(R5, BIG), jmp("jge", R4, fail + "_f", src=R5),
                   alu64("add", R4, imm=len(lit)), ldx("dw", R5, R9, F_E),
                   jmp("jgt", R4, nxt, src=R5), ldx("dw", R5, R9, F_N))
            inrange = a.fresh("full")
            a.emit(jmp("jle", R4, inrange, src=R5))
            a.emit(ldx("dw", R0, R9, F_FINAL), jmp("jne", R0, nxt, imm=0))
            self.prefix(a, start, lit, ls.nocase, nxt, fail)
            a.label(inrange)
            a.emit(ldx("dw", R3, R9, start))
            self.compare(a, R3, lit, ls.nocase, nxt)
            a.emit(stx("dw", R9, F_P, R4), ja(done))
            a.label(nxt)
        a.emit(movi(R6, FAIL), ja(fail))
        a.label(done)
        self.frame.top = mark

    def search(self, a: Assembler, lits: list[bytes], nocase: bool, within: int,
               before: bytes | None, fail: str) -> None:
        """FIND (and KEEP_UNTIL): the literal ending first within ``within`` bytes of the
        cursor, unless ``before`` ends first.  codegen._find's meaning, positions scanned by
        a bpf_loop callback that stops once no later start can end earlier."""
        fr = self.frame
        mark = fr.top
        stop_s, hard_s = fr.slot(), fr.slot()
        found = [fr.slot() for _ in lits]
        found_b = fr.slot() if before is not None else None
        # hard = min(p + within, E); stop = min(hard, n)
        a.emit(ldx("dw", R1, R9, F_P), alu64("add", R1, imm=within), ldx("dw", R0, R9, F_E))
        h = a.fresh("h")
        a.emit(jmp("jle", R1, h, src=R0), mov(R1, R0))
        a.label(h)
        a.emit(stx("dw", R9, hard_s, R1), ldx("dw", R0, R9, F_N))
        s = a.fresh("s")
        a.emit(jmp("jle", R1, s, src=R0), mov(R1, R0))
        a.label(s)
        a.emit(stx("dw", R9, stop_s, R1))
        for slot in found + ([found_b] if found_b is not None else []):
            a.emit(st("dw", R9, slot, 0))
        # count = stop - p (no positions when p >= stop)
        a.emit(ldx("dw", R0, R9, F_P))
        none = a.fresh("nopos")
        a.emit(jmp("jge", R0, none, src=R1), alu64("sub", R1, R0))
        label, cb = self.callback("find")
        # position = p + index (r6: the index, saved on entry)
        cb.emit(ldx("dw", R3, R9, F_P), alu64("add", R3, R6))
        brk = cb.fresh("brk")
        # stop scanning once a literal was found ending at or before this position
        for slot in found:
            nxt = cb.fresh("bf")
            cb.emit(ldx("dw", R0, R9, slot), jmp("jeq", R0, nxt, imm=0),
                    jmp("jge", R3, brk, src=R0))
            cb.label(nxt)
        for lit, slot in list(zip(lits, found, strict=True)) + (
                [(before, found_b)] if before is not None and found_b is not None else []):
            nxt = cb.fresh("lit")
            cb.emit(ldx("dw", R0, R9, slot), jmp("jne", R0, nxt, imm=0),
                    mov(R4, R3), alu64("add", R4, imm=len(lit)), ldx("dw", R0, R9, stop_s),
                    jmp("jgt", R4, nxt, src=R0))
            self.compare(cb, R3, lit, nocase, nxt)
            cb.emit(stx("dw", R9, slot, R4))
            cb.label(nxt)
        cb.emit(movi(R0, 0), exit_())
        cb.label(brk)
        cb.emit(movi(R0, 1), exit_())
        self.loop_call(a, label, R1)
        a.label(none)
        # best = the smallest end found (0: none)
        a.emit(movi(R1, 0))
        for slot in found:
            nxt = a.fresh("min")
            a.emit(ldx("dw", R0, R9, slot), jmp("jeq", R0, nxt, imm=0), jmp("jeq", R1, nxt + "_t", imm=0),
                   jmp("jge", R0, nxt, src=R1))
            a.label(nxt + "_t")
            a.emit(mov(R1, R0))
            a.label(nxt)
        if found_b is not None:
            # before found ending by min(stop, best) (its scan already stopped at best)
            nob = a.fresh("nob")
            a.emit(ldx("dw", R0, R9, found_b), jmp("jeq", R0, nob, imm=0),
                   jmp("jeq", R1, fail + "_fail", imm=0), jmp("jle", R0, fail + "_fail", src=R1))
            a.label(nob)
        hit = a.fresh("hit")
        a.emit(jmp("jne", R1, hit, imm=0))
        # nothing: FAIL when final or the window is complete, else NEED
        a.emit(ldx("dw", R0, R9, F_FINAL), jmp("jne", R0, fail + "_fail", imm=0),
               ldx("dw", R0, R9, stop_s), ldx("dw", R5, R9, hard_s),
               jmp("jge", R0, fail + "_fail", src=R5), movi(R6, NEED), ja(fail))
        a.label(hit)
        a.emit(stx("dw", R9, F_P, R1))
        fr.top = mark

    # -- one instruction --------------------------------------------------------
    def instr(self, a: Assembler, ins: Instr, d: int, fail: str) -> int:
        info = OPS[ins.op]
        name, x, y, z = info.name, ins.a, ins.b, ins.c
        p = self.program
        if name in ("PUSH_INT", "PUSH_VAR", "PUSH_HERE"):
            r = self.dst(d, R8)
            if name == "PUSH_INT":
                self.const(a, r, p.ints[x])
            else:
                a.emit(ldx("dw", r, R9, self.frame.var(x) if name == "PUSH_VAR" else F_P))
            self.put(a, d, r)
            return d + 1
        if name == "PUSH_LENGTH":
            if x:  # decided on the final data only
                a.emit(ldx("dw", R0, R9, F_FINAL), movi(R6, NEED), jmp("jeq", R0, fail, imm=0))
            r = self.dst(d, R8)
            a.emit(ldx("dw", r, R9, F_N))
            self.put(a, d, r)
            return d + 1
        if name == "READ":
            width, little, popped = x, y, z
            if width > 8:
                raise Unsupported(f"a {width}-byte read")
            if popped:
                d -= 1
                q = self.src(a, d, R6)
            else:
                q = self.dst(d, R6)
                a.emit(ldx("dw", q, R9, F_P))
            out = q
            # end = q + width, saturating (q may be any 64-bit value)
            end = R8
            a.emit(lddw(end, BIG), jmp("jge", q, fail + "_f", src=end), mov(end, q),
                   alu64("add", end, imm=width))
            self.short(a, end, fail)
            # value from bytes, built in r5 with r0 as the byte
            a.emit(movi(R5, 0))
            order = range(width - 1, -1, -1) if little else range(width)
            for k in order:
                a.emit(alu64("lsh", R5, imm=8), mov(R0, q))
                if k:
                    a.emit(alu64("add", R0, imm=k))
                a.emit(alu64("and", R0, imm=BUF - 1), alu64("add", R0, R7), ldx("b", R0, R0, 0),
                       alu64("or", R5, R0))
            a.emit(stx("dw", R9, F_P, end), mov(out, R5))
            self.put(a, d, out)
            return d + 1
        if name == "DECIMAL":
            digits = x
            out = self.dst(d, R8)
            q = R5
            mark = self.frame.top
            lim_slot = self.frame.slot()
            a.emit(ldx("dw", q, R9, F_P), mov(R0, q), alu64("add", R0, imm=digits),
                   ldx("dw", out, R9, F_E))
            lm = a.fresh("lim")
            a.emit(jmp("jge", R0, lm, src=out), mov(out, R0))
            a.label(lm)
            a.emit(stx("dw", R9, lim_slot, out), movi(out, 0))
            stop = a.fresh("digits")
            for _ in range(min(digits, 20)):
                a.emit(ldx("dw", R0, R9, lim_slot), jmp("jge", q, stop, src=R0),
                       ldx("dw", R0, R9, F_N), jmp("jge", q, stop, src=R0))
                self.byte_at(a, R0, q)
                a.emit(alu64("sub", R0, imm=48), jmp("jgt", R0, stop, imm=9),
                       alu64("mul", out, imm=10), alu64("add", out, R0), alu64("add", q, imm=1))
            a.label(stop)
            # q < lim and q >= n and not final: NEED; q == p: FAIL; 20 digits: UNSURE (past u64)
            ok = a.fresh("dec")
            a.emit(ldx("dw", R0, R9, lim_slot), jmp("jge", q, ok + "_n", src=R0),
                   ldx("dw", R0, R9, F_N), jmp("jlt", q, ok + "_n", src=R0),
                   ldx("dw", R0, R9, F_FINAL), movi(R6, NEED), jmp("jeq", R0, fail, imm=0))
            a.label(ok + "_n")
            a.emit(ldx("dw", R0, R9, F_P), jmp("jeq", q, fail + "_fail", src=R0),
                   mov(R6, q), alu64("sub", R6, R0), jmp("jge", R6, ok + "_big", imm=20),
                   stx("dw", R9, F_P, q), ja(ok))
            a.label(ok + "_big")
            a.emit(movi(R6, UNSURE), ja(fail))
            a.label(ok)
            self.put(a, d, out)
            self.frame.top = mark
            return d + 1
        if name == "BINOP":
            rhs = self.src(a, d - 1, R8)
            lhs = self.src(a, d - 2, R6)
            op = BINOPS[x]
            if op in ("<<", ">>"):
                a.emit(alu64("and", rhs, imm=63))
            alu = {"+": "add", "-": "sub", "*": "mul", "&": "and", "|": "or", "<<": "lsh",
                   ">>": "rsh"}[op]
            a.emit(alu64(alu, lhs, rhs))
            self.put(a, d - 2, lhs)
            return d - 1
        if name == "CMP":
            rhs = self.src(a, d - 1, R8)
            lhs = self.src(a, d - 2, R6)
            holds = a.fresh("cmp")
            jname = {"==": "jeq", "!=": "jne", "<": "jlt", "<=": "jle", ">": "jgt",
                     ">=": "jge"}[CMPS[x]]
            a.emit(jmp(jname, lhs, holds, src=rhs))
            self.fail_or_wait(a, bool(y), fail)
            a.label(holds)
            return d - 2
        if name == "RANGE":
            v = self.src(a, d - 1, R6)
            lo, hi = p.ints[x], p.ints[y]
            bad = a.fresh("range")
            self.const(a, R5, lo)
            a.emit(jmp("jlt", v, bad, src=R5))
            self.const(a, R5, hi)
            ok = a.fresh("inrange")
            a.emit(jmp("jle", v, ok, src=R5))
            a.label(bad)
            self.fail_or_wait(a, bool(z), fail)
            a.label(ok)
            return d - 1
        if name == "MATCH":
            if y:
                d -= 1
                self.match(a, x, self.src(a, d, R6), fail)
            else:
                self.match(a, x, None, fail)
            return d
        if name == "FIND":
            ls = p.sets[x]
            self.search(a, [self.literal(i) for i in ls.strings], ls.nocase, y,
                        self.literal(z - 1) if z else None, fail)
            return d
        if name in ("SETPOS", "SKIP", "KEEP_BYTES"):
            v = self.src(a, d - 1, R8)
            if name == "KEEP_BYTES":
                a.emit(movi(R6, FAIL), jmp("jgt", v, fail, imm=MAX_KEEP_BYTES))
            if name != "SETPOS":
                a.emit(lddw(R5, BIG), jmp("jge", v, fail + "_f", src=R5),
                       ldx("dw", R0, R9, F_P), alu64("add", v, R0))
            else:
                a.emit(lddw(R5, BIG), jmp("jge", v, fail + "_f", src=R5))
            self.short(a, v, fail)
            kept = self.fields.kept.get(p.text(x)) if name == "KEEP_BYTES" else None
            if kept is not None:
                a.emit(ldx("dw", R0, R9, F_P), stx("dw", R9, kept + KEPT_START, R0),
                       stx("dw", R9, kept + KEPT_END, v), st("dw", R9, kept + KEPT_STATUS, KEPT))
            a.emit(stx("dw", R9, F_P, v))
            return d - 1
        if name == "LET":
            a.emit(stx("dw", R9, self.frame.var(x), self.src(a, d - 1, R6)))
            return d - 1
        if name == "KEEP_UNTIL":
            term = self.literal(y)
            kept = self.fields.kept.get(p.text(x))
            if kept is not None:
                a.emit(ldx("dw", R0, R9, F_P), stx("dw", R9, kept + KEPT_START, R0))
            self.search(a, [term], False, z + len(term), None, fail)
            if kept is not None:
                a.emit(ldx("dw", R0, R9, F_P), alu64("sub", R0, imm=len(term)),
                       stx("dw", R9, kept + KEPT_END, R0), st("dw", R9, kept + KEPT_STATUS, KEPT))
            return d
        if name in ("KEEP_INT", "KEEP_LABELS"):
            if name == "KEEP_LABELS":
                self.labels(a, fail)
            kept = self.fields.kept.get(p.text(x))
            if kept is not None:  # a number's text, dotted labels: not rebuilt in the kernel
                a.emit(st("dw", R9, kept + KEPT_STATUS, KEPT_UNREADABLE))
            return d - 1 if name == "KEEP_INT" else d
        if name == "FIELD_IS":
            self.field_is(a, p.text(x), p.sets[y].strings, p.sets[y].nocase, fail)
            return d
        if name == "GIVEUP":
            a.emit(movi(R6, GIVE_UP), ja(fail))
            return d
        raise Unsupported(f"{name} (not translated to eBPF)")

    def field_is(self, a: Assembler, name: str, strings: list[int], nocase: bool,
                 fail: str) -> None:
        """FIELD_IS: the value the program put in the frame (the field as the flow's verdicts
        so far kept it) is one of the literals; UNSURE when the program could not know it.

        The engine compares text (UTF-8 decoded, lowered with `nocase`); with literals all
        ASCII, equal bytes are equal text exactly, but for `nocase` a non-ASCII byte could
        lower to ASCII (U+212A KELVIN SIGN is "k"): such a value is UNSURE."""
        at = self.fields.tested.get(name)
        lits = [self.literal(i) for i in strings]
        if at is None or any(b > 0x7F for lit in lits for b in lit):
            raise Unsupported(f"field {name} is: a literal that is not ASCII")
        a.emit(ldx("dw", R0, R9, at + IS_STATUS), movi(R6, UNSURE), jmp("jne", R0, fail, imm=0),
               ldx("dw", R5, R9, at + IS_LEN))
        if nocase:
            ascii_ok = a.fresh("ascii")
            for k in range(FIELD_BYTES):
                a.emit(jmp("jle", R5, ascii_ok, imm=k), ldx("b", R0, R9, at + IS_BYTES + k),
                       jmp("jgt", R0, fail, imm=0x7F))
            a.label(ascii_ok)
        done = a.fresh("fieldis")
        for lit in lits:
            nxt = a.fresh("notlit")
            a.emit(ldx("dw", R5, R9, at + IS_LEN), jmp("jne", R5, nxt, imm=len(lit)))
            j = 0
            while j < len(lit):
                width = 4 if len(lit) - j >= 4 else 2 if len(lit) - j >= 2 else 1
                chunk = lit[j:j + width]
                ormask = sum(0x20 << (8 * k) for k, ch in enumerate(chunk)
                             if nocase and 0x61 <= ch <= 0x7A)
                a.emit(ldx({4: "w", 2: "h", 1: "b"}[width], R0, R9, at + IS_BYTES + j))
                if ormask:
                    a.emit(alu64("or", R0, imm=ormask))
                a.emit(movi(R5, int.from_bytes(chunk, "little")) if width < 4 else
                       lddw(R5, int.from_bytes(chunk, "little")), jmp("jne", R0, nxt, src=R5))
                j += width
            a.emit(ja(done))
            a.label(nxt)
        a.emit(ja(fail + "_fail"))
        a.label(done)

    def fail_or_wait(self, a: Assembler, grows: bool, fail: str) -> None:
        if grows:
            a.emit(ldx("dw", R0, R9, F_FINAL), jmp("jne", R0, fail + "_fail", imm=0),
                   movi(R6, NEED), ja(fail))
        else:
            a.emit(ja(fail + "_fail"))

    def labels(self, a: Assembler, fail: str) -> None:
        """KEEP_LABELS: length-prefixed labels at the cursor up to a zero byte (codegen._labels)."""
        mark = self.frame.top
        q_s, total_s, r_s = self.frame.slot(), self.frame.slot(), self.frame.slot()
        a.emit(ldx("dw", R0, R9, F_P), stx("dw", R9, q_s, R0), st("dw", R9, total_s, 0),
               st("dw", R9, r_s, FAIL))
        label, cb = self.callback("labels")
        res = cb.fresh("res")
        # r_s: FAIL (set before), NEED, or HELD with the cursor stored
        cb.emit(ldx("dw", R3, R9, q_s), ldx("dw", R0, R9, F_E), jmp("jge", R3, res + "_fail", src=R0),
                ldx("dw", R0, R9, F_N), jmp("jge", R3, res + "_short", src=R0))
        self.byte_at(cb, R4, R3)
        held = cb.fresh("zero")
        cb.emit(jmp("jeq", R4, held, imm=0), jmp("jgt", R4, res + "_fail", imm=63),
                ldx("dw", R0, R9, total_s), alu64("add", R0, R4), alu64("add", R0, imm=1),
                stx("dw", R9, total_s, R0), jmp("jgt", R0, res + "_fail", imm=255),
                alu64("add", R3, imm=1), alu64("add", R3, R4),
                ldx("dw", R0, R9, F_E), jmp("jgt", R3, res + "_fail", src=R0),
                ldx("dw", R0, R9, F_N), jmp("jgt", R3, res + "_short", src=R0),
                stx("dw", R9, q_s, R3), movi(R0, 0), exit_())
        cb.label(held)
        cb.emit(alu64("add", R3, imm=1), stx("dw", R9, q_s, R3), st("dw", R9, r_s, HELD),
                movi(R0, 1), exit_())
        cb.label(res + "_short")
        cb.emit(ldx("dw", R0, R9, F_FINAL), jmp("jne", R0, res + "_fail", imm=0),
                st("dw", R9, r_s, NEED), movi(R0, 1), exit_())
        cb.label(res + "_fail")
        cb.emit(st("dw", R9, r_s, FAIL), movi(R0, 1), exit_())
        a.emit(movi(R0, 128))
        self.loop_call(a, label, R0)
        a.emit(ldx("dw", R6, R9, r_s), jmp("jne", R6, fail, imm=HELD))
        a.emit(ldx("dw", R0, R9, q_s), stx("dw", R9, F_P, R0))
        self.frame.top = mark


def fail_target(a: Assembler, label: str) -> None:
    """Place ``label`` (r6 holds the result) after ``label_f`` = ``label_fail``, which set
    r6 = FAIL first: the two ways code leaves a block.  Only reached by jumps."""
    a.label(label + "_f")
    a.label(label + "_fail")
    a.emit(movi(R6, FAIL))
    a.label(label)


def splice(dst: Assembler, src: Assembler) -> None:
    """Append a finished body's instructions, labels and notes to another assembler."""
    base = len(dst.insns)
    for name, at in src.labels.items():
        dst.labels[name] = at + base
    for at, text in src.comments.items():
        dst.comments[at + base] = text
    dst.insns.extend(src.insns)
