"""nfgrep programs -> one eBPF classifier (tc / sched_cls), its maps, and its decisions.

This module owns the kernel program's design: the flow map (key and value
layouts, `flow_key` computes the same key in Python), the per-packet path
(headers, flow lookup, direction, the signature steps on a payload) and the
decision that mirrors the userspace engine (engine.py) for the flows it can
decide alone.  Steps are translated by steps.py; this module calls them.

How the kernel program decides (and when it does not)
------------------------------------------------------
The engine runs each candidate's steps in order over each direction's
reassembled stream.  The kernel program sees packets, not streams, so it
examines the *first payload packet of each direction* and nothing else: every
step that is the first of its protocol in its direction starts at stream
offset 0, which is that packet's first byte, and runs there when the packet
passes (its outcome, held / failed / to userspace, is stored in the flow's
entry).  A step that starts later in a stream (a second step in the same
direction), reads a variable an earlier step has not set yet, or needs more
bytes than the packet holds has no outcome the kernel can trust: it is
"to userspace".  After each such packet the engine's decision is replayed
from the stored outcomes with the engine's own rules (candidates in the
order port hints and first-direction give them, the first to hold its last
step wins, then the protocols declared `after` it, watches that announce
expectations).  Whenever the replay reaches an outcome the kernel cannot
trust, the whole flow is marked for userspace (MARK_USERSPACE): the kernel
never decides what the engine might decide otherwise.  An open flow keeps each
direction's first payload in the first-bytes map for a later hand-over, and a
direction's later packets that a waiting candidate may read too (`later_readers`,
FIRST_PACKETS per flow); one it cannot keep (a gap, the bound, a full map) hands
the flow over at that packet: the queue path always gets every byte the engine
needs.  TCP flows whose SYN
was not seen, retransmitted or out-of-order first segments, UDP datagrams
longer than BUF and flows of protocols announcing expectations (FTP: the
data connection is userspace's) go to userspace too.

Flow map: an LRU hash (FLOW_ENTRIES entries, the oldest flow evicted first),
key = the symmetric one-tuple of the flow table's design (flow/): the lower
and the higher endpoint (address, port) of the two, the protocol and family,
so both directions find one entry.  The value holds the state, the mark,
who is client, the initial sequence numbers, the step outcomes and the
variables later steps read, and the time of the flow's last packet: a packet
after the flow's idle timeout (the flow table's `Timeouts`, per transport and
what the entry knows of the state: `_Builder.idle`) starts a new flow there.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from nfkit.errors import InputError
from nfkit.flow.timeouts import Timeouts
from nfkit.nfgrep.bytecode import OPCODES, OPS, TCP, UDP, Instr, Program
from nfkit.nfgrep.codegen import first_bytes
from nfkit.nfgrep.ebpf.bpf import BpfError, Link, Map, Prog
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
    Insn,
    alu64,
    bswap,
    call,
    call_local,
    disassemble,
    exit_,
    ja,
    jmp,
    ld_map,
    lddw,
    ldx,
    mov,
    movi,
    st,
    stx,
)
from nfkit.nfgrep.ebpf.spec import (
    BPF_ANY,
    BPF_NOEXIST,
    HELPER,
    HELPER_NAMES,
    SKB_DATA,
    SKB_DATA_END,
    SKB_MARK,
    TC_ACT_OK,
)
from nfkit.nfgrep.ebpf.steps import (
    BIG,
    BUF,
    F_E,
    F_FINAL,
    F_N,
    F_P,
    F_VARS,
    FAIL,
    FIELD_BYTES,
    GIVE_UP,
    HELD,
    IS_BYTES,
    IS_LEN,
    IS_STATUS,
    KEPT,
    KEPT_END,
    KEPT_START,
    KEPT_STATUS,
    KEPT_UNREADABLE,
    NEED,
    NOT_KEPT,
    PAD,
    FieldSlots,
    Frame,
    StepCompiler,
    live_in,
    splice,
)
from nfkit.nfgrep.registry import DEFAULT_MARK_MASK, HANDOVER, SHIPPED, UNKNOWN, Registry, mark_shift
from nfkit.nfgrep.verifier import Verified

FLOW_ENTRIES = 65536  # flows the kernel map tracks at once (LRU: the least recent goes)
EXPECT_ENTRIES = 4096  # announced flows userspace may hand to the kernel (engine.MAX_EXPECTATIONS)
KEY_SIZE = 40
EXPECT_KEY_SIZE = 20  # server address (16), server port (network order), protocol, family
# the payload packets of a flow still open after them that the engine may read (the bytes
# the queue path reads first when the flow is handed over later): each direction's first,
# and later ones a waiting candidate may read (`later_readers`), FIRST_PACKETS at most per
# flow; key = flow key + the packet's index in the flow's kept packets (u64, V_NKEPT),
# value = BUF bytes, their length with the direction above it (u64: n | dir << 32), the
# flow's stamp (u64, V_BORN: an entry of an earlier flow on the same tuple is never read
# as this one's).  A plain hash, not an LRU: a full map refuses the entry, and the program
# then hands that flow over at once, where an LRU would silently drop another open flow's
# bytes (`Classifier.sweep_first` frees the entries of flows gone)
FIRST_ENTRIES = 4096
FIRST_PACKETS = 8  # packets kept per flow (both directions); one more: handed over at it
FIRST_GRACE_S = 10.0  # a handed-over or closed flow's entries outlive its last packet by this much
FIRST_KEY_SIZE = KEY_SIZE + 8
FIRST_VALUE_SIZE = BUF + 16
# flow states
UNDECIDED, DECIDED, USERSPACE, NO_APP, REFINING = 0, 1, 2, 3, 4
STATE_NAMES = {UNDECIDED: "undecided", DECIDED: "decided", USERSPACE: "userspace",
               NO_APP: "no app", REFINING: "decided, refining"}
# step outcomes stored per flow (O_NEED: the engine waits for more of that direction's bytes;
# O_UNKNOWN: the kernel cannot tell what the engine answered)
PENDING, O_HELD, O_FAIL, O_UNKNOWN, O_NEED = 0, 1, 2, 3, 4
# the flow's mark code (V_MARK), put in the packet mark at the mask's lowest bit as the
# live mode puts an app id (registry.py): an app id, `unknown` (no app, as the live mode's
# bound), or the hand-over value (0xFE: id 126 with the live mode's direction bit, which
# no app id and no queued packet's mark can be)
MARK_USERSPACE = HANDOVER
MARK_NONE = SHIPPED[UNKNOWN]
MARK_MASK = DEFAULT_MARK_MASK
# flow value layout
V_STATE, V_CLIENT_LO, V_SEEN, V_FIRST, V_MARK, V_ISN0, V_ISN1, V_SYN, V_WINNER = \
    0, 1, 2, 3, 4, 8, 12, 16, 17
V_NEEDDIR, V_MORE = 18, 19  # directions a live candidate waits more data on; that had more
FIELD_SIZE = 8 + FIELD_BYTES  # a kept field in the entry: status, length, 6 spare, bytes
V_CLOSED = 20  # TCP: bit 0 the client's FIN seen, bit 1 the server's, bit 2 a RST
V_REPLIED = 21  # 1 once the server side sent a packet (UDP: the flow table's REPLIED)
V_NKEPT = 22  # payload packets kept in the first-bytes map (their indexes: 0 .. V_NKEPT - 1)
V_LAST = 24  # bpf_ktime_get_coarse_ns of the flow's last packet (its idle timeout counts from it)
V_HINTED = 32
V_LIVE = 40  # the candidates (or the winner's children) still waiting when the flow stayed open
V_BORN = 48  # the flow's stamp (bpf_ktime_get_ns at its first kept bytes; 0: none kept)
V_NEXT = 56  # TCP: each direction's next sequence number after its kept bytes (u32, client's first)
V_OUT = 64
# per-CPU counters (flows): new entries, of them tuples reopened, handed to userspace, done
# with no app, decided by an expectation, handed over because the first-bytes map was full,
# then decided per protocol (C_DECIDED + index)
C_NEW, C_REOPENED, C_USERSPACE, C_NO_APP, C_EXPECTED, C_FIRST_FULL, C_DECIDED = range(7)
COUNTER_NAMES = ("new", "reopened", "userspace", "no app", "expected", "first bytes map full")
# main program stack (fp-relative)
S_KEY = -48        # the flow key (40 bytes)
S_FIRSTDIR = -8    # right after it: the kept packet's index, making the first-bytes map's key
F_LEN, F_STAMP = BUF, BUF + 8  # in a first-bytes value (and in the scratch value's PAD)
S_SRC, S_DST = -80, -64  # endpoints (16 bytes each, 8-aligned)
S_HDR = -128       # IP header bytes (48)
S_L4 = -152        # TCP/UDP header bytes (24)
S_MISC = -224      # 9 u64 slots: see below
M_PAYOFF, M_PAYLEN, M_N, M_PROTO, M_SPORT, M_DPORT, M_SRCLO, M_FLAGS, M_DIR = range(9)
S_MAPKEY = -232    # the scratch map's key (0)
S_UPDATE = -240    # the new entry's map_update_elem flags (BPF_NOEXIST, or BPF_ANY: reopened)


def _misc(i: int) -> int:
    return S_MISC + 8 * i


def registry_for(names: list[str]) -> Registry:
    """The ids of the live mode's registry for these protocols (and ftp-data, which
    expectations give), connlabel.conf read, never written (`merge_connlabel(write=False)`)."""
    from nfkit.nfgrep.registry import merge_connlabel

    return merge_connlabel([*names, "ftp-data"], write=False)


def flow_key(src: bytes, dst: bytes, sport: int, dport: int, proto: int) -> tuple[bytes, bool]:
    """The kernel map's key for a packet, and whether its source is the lower endpoint."""
    family = 4 if len(src) == 4 else 6
    a, b = src.ljust(16, b"\0"), dst.ljust(16, b"\0")
    sp = int.from_bytes(struct.pack("!H", sport), "little")
    dp = int.from_bytes(struct.pack("!H", dport), "little")
    ea = (int.from_bytes(a[:8], "little"), int.from_bytes(a[8:], "little"), sp)
    eb = (int.from_bytes(b[:8], "little"), int.from_bytes(b[8:], "little"), dp)
    src_lo = ea <= eb
    lo, hi = (a, b) if src_lo else (b, a)
    plo, phi = (sport, dport) if src_lo else (dport, sport)
    key = lo + hi + struct.pack("!HH", plo, phi) + bytes([proto, family, 0, 0])
    return key, src_lo


@dataclass
class SigInfo:
    """One protocol of the loaded programs, as the kernel program sees it."""

    index: int
    name: str
    program: Program
    proto: int  # index in program.protocols
    transports: int
    ports: list[int]
    after: str | None
    steps: list[int]  # indexes of non-watch steps in the protocol
    out: list[int] = field(default_factory=list)  # outcome byte offset per step
    persist: dict[int, int] = field(default_factory=dict)  # var -> value offset
    announces: bool = False
    children: list[int] = field(default_factory=list)
    # fields some loaded protocol's `field ... is` tests, kept by this one's steps:
    keeps: dict[str, list[int]] = field(default_factory=dict)  # field -> its steps (index in steps)
    watch_keeps: set[str] = field(default_factory=set)  # ... kept by its watches (not followed)
    fields: dict[str, int] = field(default_factory=dict)  # field -> value offset (FIELD_SIZE)
    chain: list[int] | None = None  # the protocols it runs after, nearest first (None: ambiguous)


@dataclass
class Compiled:
    """A generated classifier: instructions, listing notes and the layout its maps need."""

    insns: list[Insn]
    comments: dict[int, str]
    sigs: list[SigInfo]
    apps: dict[str, int]
    value_size: int
    translated: dict[str, str]  # "proto.step" -> "yes" or why not
    functions: list[tuple[int, str]]  # (first slot, name) of each subprogram, main first
    scratch_size: int
    owners: list[tuple[int, str]]  # (first slot, what the code from there belongs to)
    counters: int = 0  # offset of the per-CPU counters in the scratch map's value

    def owner(self, slot: int) -> str:
        """The protocol and step (or the packet path) an instruction belongs to."""
        found = self.owners[0][1]
        for start, name in self.owners:
            if start > slot:
                break
            found = name
        return found

    def listing(self) -> str:
        return disassemble(self.insns, self.comments, HELPER_NAMES)


class _Builder:
    def __init__(self, verified: list[Verified], flows_fd: int, scratch_fd: int,
                 mark_mask: int = MARK_MASK, expect_fd: int = 0,
                 registry: Registry | None = None, timeouts: Timeouts | None = None,
                 first_fd: int = 0) -> None:
        self.timeouts = timeouts or Timeouts()
        self.expect_fd = expect_fd
        self.first_fd = first_fd
        self.shift = mark_shift(mark_mask)
        self.flows_fd = flows_fd
        self.scratch_fd = scratch_fd
        self.mark_mask = mark_mask
        self.sigs: list[SigInfo] = []
        for v in verified:
            p = v.program
            for pi, proto in enumerate(p.protocols):
                steps = [si for si, s in enumerate(proto.steps) if not s.watch]
                announces = any(ins.op == OPCODES["EXPECT"] for s in proto.steps for ins in s.code)
                self.sigs.append(SigInfo(len(self.sigs), p.text(proto.name), p, pi,
                                         proto.transports, list(proto.ports),
                                         None if proto.after is None else p.text(proto.after),
                                         steps, announces=announces))
        if len(self.sigs) > 63:
            raise InputError(f"{len(self.sigs)} protocols: the eBPF back end takes at most 63")
        for s in self.sigs:
            if s.after is not None:
                for parent in self.sigs:
                    if parent.name == s.after and parent.transports & s.transports:
                        parent.children.append(s.index)
        self.fields_of_steps()
        reg = registry if registry is not None else registry_for([s.name for s in self.sigs])
        self.apps = {n: i for n, i in reg.ids.items()
                     if n == "ftp-data" or any(s.name == n for s in self.sigs)}
        off = V_OUT
        for s in self.sigs:
            s.out = list(range(off, off + len(s.steps)))
            off += len(s.steps)
        off = (off + 7) & ~7
        for s in self.sigs:
            code = s.program.protocols[s.proto].steps
            later: set[int] = set()
            for si in s.steps[1:]:
                later |= live_in(code[si].code)
            for var in sorted(later):
                s.persist[var] = off
                off += 8
        for s in self.sigs:
            for name in sorted(s.keeps):
                s.fields[name] = off
                off += FIELD_SIZE
        self.value_size = off
        self.whole = self.handed_whole()
        # the scratch map's value: payload buffer, new-entry template, then three u64
        # masks (classified, stuck, waiting) the decision builds and the directions needing
        # more data: in map memory, so the kernel verifier does not follow each combination
        # of bits apart; then the step frame, as large as the largest step needs
        # per-CPU counters first (no atomic operation needed): C_* then one per protocol
        self.cnt = (BUF + PAD + off + 7) & ~7
        self.mk = self.cnt + 8 * (C_DECIDED + len(self.sigs))
        self.fr = self.mk + 32
        # the packet path writes the frame's fixed slots and variables before any step runs
        self.frame_used = max([Frame(len(s.program.protocols[s.proto].variables)).used
                               for s in self.sigs] + [F_VARS])
        self.asm = Assembler()
        self.tail: list[tuple[str, Assembler]] = []
        self.step_labels: dict[tuple[int, int], str] = {}
        self.translated: dict[str, str] = {}

    def fields_of_steps(self) -> None:
        """Which steps keep the fields `field ... is` tests, each protocol's chain of
        parents, and each step's field slots in the frame (steps.FieldSlots)."""
        tested: set[str] = set()
        for s in self.sigs:
            for step in s.program.protocols[s.proto].steps:
                tested |= _field_names(s.program, step.code, ("FIELD_IS",))
        self.step_fields: dict[tuple[int, int], FieldSlots] = {}
        for s in self.sigs:
            proto = s.program.protocols[s.proto]
            for i, si in enumerate(s.steps):
                for name in _field_names(s.program, proto.steps[si].code, KEEPS) & tested:
                    s.keeps.setdefault(name, []).append(i)
            for step in proto.steps:
                if step.watch:
                    s.watch_keeps |= _field_names(s.program, step.code, KEEPS) & tested
            chain: list[int] | None = []
            cur = s
            while cur.after is not None and chain is not None and len(chain) < len(self.sigs):
                parents = [p for p in self.sigs if p.name == cur.after and p.transports & cur.transports]
                if len(parents) != 1:
                    chain = None
                    break
                cur = parents[0]
                chain.append(cur.index)
            s.chain = chain
            base = Frame(len(proto.variables)).fields_at
            for i, si in enumerate(s.steps):
                self.step_fields[(s.index, i)] = FieldSlots.layout(
                    base, sorted(n for n, steps in s.keeps.items() if i in steps),
                    sorted(_field_names(s.program, proto.steps[si].code, ("FIELD_IS",))))

    def rerunnable(self, s: SigInfo, i: int) -> bool:
        """Whether step ``i`` of ``s`` runs again when its parent wins (`rerun_field_tests`):
        it reads no data, only fields, numbers and variables no earlier step sets."""
        code = s.program.protocols[s.proto].steps[s.steps[i]].code
        return _reads_no_data(code) and not (i and live_in(code) & set(s.persist))

    def handed_whole(self) -> list[SigInfo]:
        """The protocols whose flows go to userspace whole, from their first payload packet,
        while they are candidates: the roots of a protocol with a `field ... is` test the
        kernel may be unable to answer once the parent wins, known at load time (a step
        that reads data testing a field some parent keeps: a keeping step may hold after
        it ran, and its packet is gone by then; a field a parent keeps by a watch, by
        `keep NAME = E` or `keep NAME labels`; an ambiguous parent).  Handed over when the
        parent wins, the queue path would have missed the flow's first bytes and could only
        mark it `unknown`; handed over from the start, it decides as the engine does."""
        roots: set[int] = set()
        for s in self.sigs:
            unsure = False
            parents = [self.sigs[p] for p in s.chain] if s.chain is not None else []
            for i in range(len(s.steps)):
                tested = set(self.step_fields[(s.index, i)].tested)
                if not tested:
                    continue
                kept = set().union(*(set(p.keeps) | p.watch_keeps for p in parents))
                text = set().union(*(_field_names(p.program, st.code, ("KEEP_INT", "KEEP_LABELS"))
                                     for p in parents for st in p.program.protocols[p.proto].steps))
                watched = set().union(*(p.watch_keeps for p in parents))
                if s.chain is None or tested & (watched | text) or \
                        not self.rerunnable(s, i) and tested & kept:
                    unsure = True
            if not unsure:
                continue
            if s.chain is not None and s.chain:
                roots.add(s.chain[-1])
            else:  # ambiguous: every root it may run after
                roots |= {r.index for r in self.sigs if r.after is None and r.transports & s.transports}
        return [self.sigs[r] for r in sorted(roots)]

    def field_value(self, s: SigInfo, name: str, at: int) -> None:
        """Before a step testing field ``name`` runs: the field's value, as the engine would
        see it once the protocols ``s`` runs after have won, into the frame at ``at`` (from
        r7): from the nearest of them that kept it, when each of its steps keeping it has
        held (so no later step can change it); else the step's test is UNSURE."""
        a = self.asm
        unsure, done = a.fresh("fieldunsure"), a.fresh("fieldvalue")
        for anc in s.chain if s.chain is not None else [None]:
            parent = None if anc is None else self.sigs[anc]
            if parent is None or name in parent.watch_keeps:
                a.emit(ja(unsure))
                break
            if name not in parent.keeps:
                continue
            for i in parent.keeps[name]:
                a.emit(ldx("b", R1, R8, parent.out[i]), jmp("jne", R1, unsure, imm=O_HELD))
            off, nxt = parent.fields[name], a.fresh("notkept")
            a.emit(ldx("b", R1, R8, off), jmp("jeq", R1, nxt, imm=NOT_KEPT),
                   jmp("jne", R1, unsure, imm=KEPT), st("dw", R7, at + IS_STATUS, 0),
                   ldx("b", R1, R8, off + 1), stx("dw", R7, at + IS_LEN, R1))
            for k in range(0, FIELD_BYTES, 8):
                a.emit(ldx("dw", R1, R8, off + 8 + k), stx("dw", R7, at + IS_BYTES + k, R1))
            a.emit(ja(done))
            a.label(nxt)
        else:  # kept by none of them: the engine's empty value
            a.emit(st("dw", R7, at + IS_STATUS, 0), st("dw", R7, at + IS_LEN, 0), ja(done))
        a.label(unsure)
        a.emit(st("dw", R7, at + IS_STATUS, 1))
        a.label(done)

    def keep_field(self, s: SigInfo, name: str, at: int) -> None:
        """After a step held: the field it kept (frame slot ``at``, from r7) into the flow
        entry, FIELD_BYTES at most (longer, or not rebuilt in the kernel: unreadable)."""
        a = self.asm
        off = s.fields[name]
        skip, unread = a.fresh("keptnone"), a.fresh("keptunread")
        a.emit(ldx("dw", R1, R7, at + KEPT_STATUS), jmp("jeq", R1, skip, imm=NOT_KEPT),
               jmp("jne", R1, unread, imm=KEPT), ldx("dw", R2, R7, at + KEPT_END),
               ldx("dw", R3, R7, at + KEPT_START), alu64("sub", R2, R3),
               jmp("jgt", R2, unread, imm=FIELD_BYTES), st("b", R8, off, KEPT),
               stx("b", R8, off + 1, R2))
        for k in range(0, FIELD_BYTES, 8):
            a.emit(mov(R4, R3), alu64("add", R4, imm=k), alu64("and", R4, imm=BUF - 1),
                   alu64("add", R4, R7), ldx("dw", R5, R4, 0), stx("dw", R8, off + 8 + k, R5))
        a.emit(ja(skip))
        a.label(unread)
        a.emit(st("b", R8, off, KEPT_UNREADABLE))
        a.label(skip)

    # -- small pieces ----------------------------------------------------------
    def scratch(self) -> None:
        """r7 = the per-CPU scratch map's value (payload buffer, template, frame, masks)."""
        a = self.asm
        a.emit(st("dw", FP, S_MAPKEY, 0), mov(R2, FP), alu64("add", R2, imm=S_MAPKEY),
               ld_map(R1, self.scratch_fd), call(HELPER["map_lookup_elem"]),
               jmp("jeq", R0, "pass", imm=0), mov(R7, R0))

    def header(self, off_reg: int | None, off_imm: int, stack: int, size: int,
               out: str) -> None:
        """``size`` header bytes at a packet offset onto the stack: read in place when the
        skb's linear data holds them (direct packet access, no helper call), else copied
        by bpf_skb_load_bytes; ``out`` when the packet is shorter."""
        a = self.asm
        slow, done = a.fresh("hdrslow"), a.fresh("hdr")
        a.emit(ldx("w", R3, R6, SKB_DATA), ldx("w", R2, R6, SKB_DATA_END))
        if off_reg is not None:
            a.emit(alu64("add", R3, off_reg))
        elif off_imm:
            a.emit(alu64("add", R3, imm=off_imm))
        a.emit(mov(R4, R3), alu64("add", R4, imm=size), jmp("jgt", R4, slow, src=R2))
        k = 0
        while k < size:
            width = 8 if size - k >= 8 else 4 if size - k >= 4 else 2 if size - k >= 2 else 1
            sz = {8: "dw", 4: "w", 2: "h", 1: "b"}[width]
            a.emit(ldx(sz, R1, R3, k), stx(sz, FP, stack + k, R1))
            k += width
        a.emit(ja(done))
        a.label(slow)
        self.load_bytes(off_reg, off_imm, stack, size, out)
        a.label(done)

    def load_bytes(self, off_reg: int | None, off_imm: int, stack: int, size: int,
                   out: str) -> None:
        a = self.asm
        a.emit(mov(R1, R6))
        if off_reg is not None:
            a.emit(mov(R2, off_reg))
        else:
            a.emit(movi(R2, off_imm))
        a.emit(mov(R3, FP), alu64("add", R3, imm=stack), movi(R4, size),
               call(HELPER["skb_load_bytes"]), jmp("jslt", R0, out, imm=0))

    def be16(self, dst: int, base: int, off: int) -> None:
        self.asm.emit(ldx("h", dst, base, off), bswap(dst, 16))

    def count(self, slot: int) -> None:
        """One more in a per-CPU counter (the scratch map's value, in r7)."""
        off = self.cnt + 8 * slot
        self.asm.emit(ldx("dw", R1, R7, off), alu64("add", R1, imm=1), stx("dw", R7, off, R1))

    def set_state(self, state: int, mark: int, then: str, counter: int | None = None) -> None:
        a = self.asm
        if counter is not None:
            self.count(counter)
        a.emit(st("b", R8, V_STATE, state), st("w", R8, V_MARK, mark), ja(then))

    # -- the program -----------------------------------------------------------
    def build(self) -> Compiled:
        a = self.asm
        a.note("entry: r6 = skb, r7 = payload buffer, r8 = flow entry, r9 = step frame")
        a.emit(mov(R6, R1))
        # a decided flow's packet costs the headers read in place and one map lookup: the
        # scratch map (payload buffer, template, frame) is looked up only when needed
        self.parse()
        self.lookup_flow()
        self.per_packet()
        self.decide()
        self.keep_first()
        # verdict: write the flow's mark into the packet mark, pass
        a.label("apply")
        a.note("apply the flow's mark to the packet (only the mask's bits)")
        keep = ~self.mark_mask & 0xFFFFFFFF
        # refining (a winner's children wait): no app yet in the packet, as the queue path
        # marks none before the engine is done; the label chain keeps the first app it
        # copies into the conntrack mark, so the parent's would stick where a child wins
        a.emit(ldx("w", R1, R8, V_MARK), ldx("b", R3, R8, V_STATE),
               jmp("jne", R3, "markcode", imm=REFINING), movi(R1, 0))
        a.label("markcode")
        a.emit(alu64("lsh", R1, imm=self.shift),
               alu64("and", R1, imm=_s32(self.mark_mask)),
               ldx("w", R2, R6, SKB_MARK), alu64("and", R2, imm=_s32(keep)),
               alu64("or", R2, R1), stx("w", R6, SKB_MARK, R2))
        a.label("pass")
        a.emit(movi(R0, TC_ACT_OK), exit_())
        # a packet (not a flow) for userspace: no entry to keep, only its mark
        a.label("pktuser")
        a.emit(ldx("w", R2, R6, SKB_MARK), alu64("and", R2, imm=_s32(keep)),
               alu64("or", R2, imm=_s32(MARK_USERSPACE << self.shift & self.mark_mask)), stx("w", R6, SKB_MARK, R2),
               ja("pass"))
        for s in self.sigs:
            code = s.program.protocols[s.proto].steps
            for i, si in enumerate(s.steps):
                label = self.step_labels.get((s.index, i))
                if label is None:
                    continue
                nvars = len(s.program.protocols[s.proto].variables)
                sc = StepCompiler(a, self.tail, s.program, nvars, self.scratch_fd,
                                  f"{s.name}.{s.program.text(code[si].name)}", self.fr,
                                  self.step_fields[(s.index, i)])
                before = len(a.insns)
                sc.compile(code[si].code, label)
                self.frame_used = max(self.frame_used, sc.frame.used)
                key = f"{s.name}.{s.program.text(code[si].name)}"
                self.translated[key] = "yes" if len(a.insns) - before > 2 else \
                    a.comments.get(before, "not translated")
        for label, cb in self.tail:
            a.label(label)
            splice(a, cb)
        a.prune(set(self.step_labels.values()) | {label for label, _ in self.tail})
        insns = a.finish()
        # subprograms: main, then every target of a local call or a callback address
        targets = {insn.target for insn in insns if insn.target is not None and
                   (insn.wide or insn.src == 1 and insn.op == 0x85)}
        # instruction index -> slot for the listing ranges
        slots = []
        n = 0
        for insn in insns:
            slots.append(n)
            n += insn.slots
        slots.append(n)
        owners = [(0, "the packet path (headers, flow entry, decision)")]
        for (si, i), label in self.step_labels.items():
            sig = self.sigs[si]
            step = sig.program.protocols[sig.proto].steps[sig.steps[i]]
            owners.append((slots[a.labels[label]],
                           f"protocol {sig.name} step {sig.program.text(step.name)}"))
        for label, _cb in self.tail:
            owner = label.rsplit(".", 1)[0]
            sig_name, _, step_name = owner.partition(".")
            owners.append((slots[a.labels[label]],
                           f"protocol {sig_name} step {step_name} (loop body)"))
        owners.sort()
        functions = [(0, "nfgrep_main")] + sorted(
            (slots[a.labels[t]], "f_" + "".join(ch if ch.isalnum() else "_" for ch in t))
            for t in targets if t is not None)
        return Compiled(insns, a.slot_comments(), self.sigs, self.apps, self.value_size,
                        self.translated, functions, self.fr + self.frame_used, owners,
                        self.cnt)

    def parse(self) -> None:
        """Ethernet, IPv4 (no fragments) or IPv6 (no extension headers), TCP or UDP."""
        a = self.asm
        a.note("parse: ethernet, IPv4/IPv6, TCP/UDP (anything else passes untouched)")
        self.header(None, 0, S_HDR, 14, "pass")
        self.be16(R1, FP, S_HDR + 12)
        a.emit(jmp("jeq", R1, "ipv4", imm=0x0800), jmp("jeq", R1, "ipv6", imm=0x86DD), ja("pass"))
        a.label("ipv4")
        self.header(None, 14, S_HDR, 20, "pass")
        a.emit(ldx("b", R1, FP, S_HDR), alu64("and", R1, imm=15), alu64("lsh", R1, imm=2),
               jmp("jlt", R1, "pass", imm=20))
        self.be16(R2, FP, S_HDR + 6)
        # fragments: their flow cannot be found from here, userspace reassembles
        a.emit(alu64("and", R2, imm=0x3FFF), jmp("jne", R2, "pktuser", imm=0))
        a.emit(ldx("b", R2, FP, S_HDR + 9), stx("dw", FP, _misc(M_PROTO), R2))
        self.be16(R3, FP, S_HDR + 2)
        a.emit(alu64("add", R3, imm=14), stx("dw", FP, _misc(M_PAYLEN), R3))  # end of IP data
        a.emit(alu64("add", R1, imm=14), stx("dw", FP, _misc(M_PAYOFF), R1))  # L4 offset
        for base, at in ((S_SRC, 12), (S_DST, 16)):
            a.emit(ldx("w", R2, FP, S_HDR + at), stx("dw", FP, base, R2), st("dw", FP, base + 8, 0))
        a.emit(movi(R5, 4), stx("dw", FP, _misc(M_FLAGS), R5), ja("l4"))
        a.label("ipv6")
        self.header(None, 14, S_HDR, 40, "pass")
        a.emit(ldx("b", R2, FP, S_HDR + 6), stx("dw", FP, _misc(M_PROTO), R2))
        self.be16(R3, FP, S_HDR + 4)
        a.emit(alu64("add", R3, imm=54), stx("dw", FP, _misc(M_PAYLEN), R3))
        a.emit(movi(R1, 54), stx("dw", FP, _misc(M_PAYOFF), R1))
        for base, at in ((S_SRC, 8), (S_DST, 24)):  # 8-aligned on the stack: whole words
            for k in (0, 8):
                a.emit(ldx("dw", R2, FP, S_HDR + at + k), stx("dw", FP, base + k, R2))
        a.emit(movi(R5, 6), stx("dw", FP, _misc(M_FLAGS), R5))
        a.label("l4")
        # r1 = L4 offset; TCP: 20 bytes, UDP: 8
        a.emit(ldx("dw", R2, FP, _misc(M_PROTO)), jmp("jeq", R2, "tcp", imm=6),
               jmp("jeq", R2, "udp", imm=17))
        # IPv6 extension headers (hop-by-hop, routing, fragment, destination options,
        # AH): the transport header is further on; this program does not walk them
        for nh in (0, 43, 44, 51, 60):
            a.emit(jmp("jeq", R2, "pktuser", imm=nh))
        a.emit(ja("pass"))
        a.label("tcp")
        a.emit(ldx("dw", R8, FP, _misc(M_PAYOFF)))
        self.header(R8, 0, S_L4, 20, "pass")
        a.emit(ldx("b", R1, FP, S_L4 + 12), alu64("rsh", R1, imm=4), alu64("lsh", R1, imm=2),
               jmp("jlt", R1, "pass", imm=20), alu64("add", R8, R1))
        a.emit(ldx("b", R1, FP, S_L4 + 13), alu64("lsh", R1, imm=8),
               ldx("dw", R2, FP, _misc(M_FLAGS)), alu64("or", R1, R2),
               stx("dw", FP, _misc(M_FLAGS), R1), ja("ports"))
        a.label("udp")
        a.emit(ldx("dw", R8, FP, _misc(M_PAYOFF)))
        self.header(R8, 0, S_L4, 8, "pass")
        a.emit(alu64("add", R8, imm=8))
        a.label("ports")
        # r8 = payload offset; payload length = min(IP end, skb->len) - offset
        a.emit(stx("dw", FP, _misc(M_PAYOFF), R8), ldx("dw", R1, FP, _misc(M_PAYLEN)),
               movi(R2, 0), jmp("jle", R1, "plen", src=R8), mov(R2, R1), alu64("sub", R2, R8))
        a.label("plen")
        a.emit(stx("dw", FP, _misc(M_PAYLEN), R2), ldx("w", R3, R6, 0), movi(R4, 0),
               jmp("jle", R3, "caplen", src=R8), mov(R4, R3), alu64("sub", R4, R8))
        a.label("caplen")
        a.emit(jmp("jle", R4, "nmin", src=R2), mov(R4, R2))
        a.label("nmin")
        a.emit(stx("dw", FP, _misc(M_N), R4))
        a.emit(ldx("h", R1, FP, S_L4), stx("dw", FP, _misc(M_SPORT), R1),
               ldx("h", R2, FP, S_L4 + 2), stx("dw", FP, _misc(M_DPORT), R2))

    def lookup_flow(self) -> None:
        """The symmetric key: the lower endpoint first; find or create the flow's entry."""
        a = self.asm
        a.note("flow key: (lower endpoint, higher endpoint, proto, family)")
        a.emit(movi(R5, 1))  # source is the lower endpoint
        a.emit(ldx("dw", R1, FP, S_SRC), ldx("dw", R2, FP, S_DST), jmp("jlt", R1, "srclo", src=R2),
               jmp("jgt", R1, "srchi", src=R2), ldx("dw", R1, FP, S_SRC + 8),
               ldx("dw", R2, FP, S_DST + 8), jmp("jlt", R1, "srclo", src=R2),
               jmp("jgt", R1, "srchi", src=R2), ldx("dw", R1, FP, _misc(M_SPORT)),
               ldx("dw", R2, FP, _misc(M_DPORT)), jmp("jle", R1, "srclo", src=R2))
        a.label("srchi")
        a.emit(movi(R5, 0))
        a.label("srclo")
        a.emit(stx("dw", FP, _misc(M_SRCLO), R5))
        lo_hi = ((S_SRC, S_DST, M_SPORT, M_DPORT), (S_DST, S_SRC, M_DPORT, M_SPORT))
        for which, (lo, hi, plo, phi) in enumerate(lo_hi):
            label = "keysrc" if which == 0 else "keydst"
            a.label(label)
            if which == 0:
                a.emit(jmp("jeq", R5, "keydst", imm=0))
            for k in (0, 8):
                a.emit(ldx("dw", R1, FP, lo + k), stx("dw", FP, S_KEY + k, R1),
                       ldx("dw", R1, FP, hi + k), stx("dw", FP, S_KEY + 16 + k, R1))
            a.emit(ldx("dw", R1, FP, _misc(plo)), ldx("dw", R2, FP, _misc(phi)),
                   alu64("lsh", R2, imm=16), alu64("or", R1, R2))
            a.emit(ja("keytail") if which == 0 else ja("keytail"))
        a.label("keytail")
        # r1 = ports; proto, family above them
        a.emit(ldx("dw", R2, FP, _misc(M_PROTO)), alu64("lsh", R2, imm=32), alu64("or", R1, R2),
               ldx("dw", R2, FP, _misc(M_FLAGS)), alu64("and", R2, imm=0xFF),
               alu64("lsh", R2, imm=40), alu64("or", R1, R2), stx("dw", FP, S_KEY + 32, R1))
        a.emit(ld_map(R1, self.flows_fd), mov(R2, FP), alu64("add", R2, imm=S_KEY),
               call(HELPER["map_lookup_elem"]), mov(R8, R0), jmp("jeq", R0, "miss", imm=0))
        self.idle()
        # TCP FIN, RST, SYN on a known flow: the only packets of a decided flow that do more
        a.emit(ldx("dw", R1, FP, _misc(M_FLAGS)), jmp("jset", R1, "tcpctl", imm=0x07 << 8),
               ja("known"))
        self.reopen()
        a.label("miss")
        a.emit(st("dw", FP, S_UPDATE, BPF_NOEXIST))
        a.label("newflow")
        self.new_flow()
        a.label("known")

    def idle(self) -> None:
        """A known entry idle longer than its flow's timeout (the flow table's `Timeouts`, per transport
        and state, as docs/nfgrep.md tabulates) has ended: the packet starts a new flow in the same entry.
        Else the entry's last-seen time is now, and a packet from the server side marks it
        replied."""
        a = self.asm
        t = self.timeouts
        a.note("idle timeout: a flow idle longer than its class's timeout has ended")
        ns = {name: int(getattr(t, name) * 1e9) for name in (
            "udp", "udp_stream", "tcp_close", "tcp_last_ack", "tcp_close_wait", "tcp_established",
            "tcp_syn_sent", "generic")}
        a.emit(call(HELPER["ktime_get_coarse_ns"]), ldx("dw", R1, R8, V_LAST), mov(R2, R0),
               alu64("sub", R2, R1), ldx("dw", R4, FP, _misc(M_PROTO)),
               jmp("jeq", R4, "idleudp", imm=17), jmp("jeq", R4, "idletcp", imm=6),
               lddw(R3, ns["generic"]), ja("idlecmp"))
        a.label("idleudp")
        a.emit(lddw(R3, ns["udp"]), ldx("b", R5, R8, V_REPLIED), jmp("jeq", R5, "idlecmp", imm=0),
               lddw(R3, ns["udp_stream"]), ja("idlecmp"))
        a.label("idletcp")
        # closing: RST, both FINs, one FIN (each the shorter of the states it may be)
        a.emit(ldx("b", R5, R8, V_CLOSED), lddw(R3, ns["tcp_close"]),
               jmp("jset", R5, "idlecmp", imm=4), alu64("and", R5, imm=3),
               lddw(R3, ns["tcp_last_ack"]), jmp("jeq", R5, "idlecmp", imm=3),
               lddw(R3, ns["tcp_close_wait"]), jmp("jne", R5, "idlecmp", imm=0),
               # open: only the client's SYN seen, else established (or picked up mid-stream)
               ldx("b", R5, R8, V_SYN), lddw(R3, ns["tcp_established"]),
               jmp("jne", R5, "idlecmp", imm=1), lddw(R3, ns["tcp_syn_sent"]))
        a.label("idlecmp")
        a.emit(jmp("jle", R2, "alive", src=R3), st("dw", FP, S_UPDATE, BPF_ANY), ja("newflow"))
        a.label("alive")
        a.emit(stx("dw", R8, V_LAST, R0), ldx("dw", R4, FP, _misc(M_SRCLO)),
               ldx("b", R5, R8, V_CLIENT_LO), jmp("jeq", R4, "fromclient", src=R5),
               st("b", R8, V_REPLIED, 1))
        a.label("fromclient")

    def reopen(self) -> None:
        """A closed TCP flow's tuple used again (the flow table's REOPEN, flow/tcpstate.py):
        FINs and RSTs are remembered; the client's pure SYN after a RST or both FINs
        starts a new flow in the same entry, so it is classified afresh (a port reused
        soon after, as a busy client does, never inherits the last connection's app)."""
        a = self.asm
        a.label("tcpctl")
        a.emit(alu64("rsh", R1, imm=8), jmp("jset", R1, "ctlsyn", imm=0x02))
        # FIN or RST: this direction's FIN bit (1: the client's), 4 for a RST
        a.emit(movi(R3, 1), ldx("dw", R4, FP, _misc(M_SRCLO)), ldx("b", R5, R8, V_CLIENT_LO),
               jmp("jeq", R4, "finside", src=R5), movi(R3, 2))
        a.label("finside")
        a.emit(mov(R2, R1), alu64("and", R2, imm=0x04), alu64("or", R3, R2),
               ldx("b", R2, R8, V_CLOSED), alu64("or", R2, R3), stx("b", R8, V_CLOSED, R2),
               ja("known"))
        a.label("ctlsyn")
        # a pure SYN from the client side of a flow that ended (RST, or both FINs)
        a.emit(jmp("jset", R1, "known", imm=0x10), ldx("b", R2, R8, V_CLOSED),
               jmp("jset", R2, "reopen", imm=4), alu64("and", R2, imm=3),
               jmp("jne", R2, "known", imm=3))
        a.label("reopen")
        a.emit(ldx("dw", R4, FP, _misc(M_SRCLO)), ldx("b", R5, R8, V_CLIENT_LO),
               jmp("jne", R4, "known", src=R5), st("dw", FP, S_UPDATE, BPF_ANY), ja("newflow"))

    def new_flow(self) -> None:
        """A new entry: the client is the sender of the first packet (TCP: of a SYN)."""
        a = self.asm
        a.note("new flow: entry built in the scratch map's template area, inserted")
        self.scratch()
        tpl = BUF + PAD
        for off in range(0, self.value_size, 8):
            a.emit(st("dw", R7, tpl + off, 0))
        # the client: the sender of the first packet (on UDP as in the flow table, whose
        # port rule applies to TCP picked up mid-stream only, which goes to userspace here)
        a.emit(ldx("dw", R1, FP, _misc(M_SRCLO)), stx("b", R7, tpl + V_CLIENT_LO, R1))
        a.emit(st("w", R7, tpl + V_MARK, 0), call(HELPER["ktime_get_coarse_ns"]),
               stx("dw", R7, tpl + V_LAST, R0))
        # TCP: only a flow that starts with a pure SYN is the kernel's to classify
        a.emit(ldx("dw", R1, FP, _misc(M_PROTO)), jmp("jne", R1, "hints", imm=6),
               ldx("dw", R1, FP, _misc(M_FLAGS)), alu64("rsh", R1, imm=8),
               alu64("and", R1, imm=0x12), jmp("jeq", R1, "hints", imm=0x02),
               st("b", R7, tpl + V_STATE, USERSPACE), st("w", R7, tpl + V_MARK, MARK_USERSPACE))
        a.label("hints")
        # an announced flow (an expectation userspace learnt, e.g. FTP data): decided at once
        a.note("expected flows: (server address, port, protocol) in the expectations map")
        a.emit(ldx("dw", R1, FP, S_DST), stx("dw", FP, S_HDR, R1), ldx("dw", R1, FP, S_DST + 8),
               stx("dw", FP, S_HDR + 8, R1), ldx("dw", R1, FP, _misc(M_DPORT)),
               ldx("dw", R2, FP, _misc(M_PROTO)), alu64("lsh", R2, imm=16), alu64("or", R1, R2),
               ldx("dw", R2, FP, _misc(M_FLAGS)), alu64("and", R2, imm=0xFF),
               alu64("lsh", R2, imm=24), alu64("or", R1, R2), stx("dw", FP, S_HDR + 16, R1))
        a.emit(ld_map(R1, self.expect_fd), mov(R2, FP), alu64("add", R2, imm=S_HDR),
               call(HELPER["map_lookup_elem"]), jmp("jeq", R0, "noexpect", imm=0),
               ldx("w", R1, R0, 0), stx("w", R7, tpl + V_MARK, R1),
               st("b", R7, tpl + V_STATE, DECIDED),
               ldx("dw", R1, R7, self.cnt + 8 * C_EXPECTED), alu64("add", R1, imm=1),
               stx("dw", R7, self.cnt + 8 * C_EXPECTED, R1),
               ld_map(R1, self.expect_fd), mov(R2, FP), alu64("add", R2, imm=S_HDR),
               call(HELPER["map_delete_elem"]))
        a.label("noexpect")
        # port hints: the protocols listing the client's or the server's port (symmetric)
        a.emit(ldx("dw", R1, FP, _misc(M_SPORT)), ldx("dw", R2, FP, _misc(M_DPORT)))
        for s in self.sigs:
            if not s.ports:
                continue
            yes, no = a.fresh("hint"), a.fresh("nohint")
            for port in s.ports:
                raw = int.from_bytes(struct.pack("!H", port), "little")
                a.emit(jmp("jeq", R1, yes, imm=raw), jmp("jeq", R2, yes, imm=raw))
            a.emit(ja(no))
            a.label(yes)
            # accumulated in map memory: the verifier need not follow each combination
            a.emit(ldx("dw", R3, R7, tpl + V_HINTED), lddw(R4, 1 << s.index), alu64("or", R3, R4),
                   stx("dw", R7, tpl + V_HINTED, R3))
            a.label(no)
        self.count(C_NEW)
        fresh = a.fresh("fresh")
        a.emit(ldx("dw", R1, FP, S_UPDATE), jmp("jne", R1, fresh, imm=BPF_ANY))
        self.count(C_REOPENED)
        a.label(fresh)
        a.emit(ld_map(R1, self.flows_fd), mov(R2, FP), alu64("add", R2, imm=S_KEY), mov(R3, R7),
               alu64("add", R3, imm=tpl), ldx("dw", R4, FP, S_UPDATE),
               call(HELPER["map_update_elem"]))
        a.emit(ld_map(R1, self.flows_fd), mov(R2, FP), alu64("add", R2, imm=S_KEY),
               call(HELPER["map_lookup_elem"]), mov(R8, R0), jmp("jeq", R0, "pass", imm=0))

    def per_packet(self) -> None:
        a = self.asm
        a.note("decided flows: the mark only; undecided: first payload packet per direction")
        a.emit(ldx("b", R1, R8, V_STATE), jmp("jeq", R1, "open", imm=UNDECIDED),
               jmp("jne", R1, "apply", imm=REFINING))
        a.label("open")
        self.scratch()
        # direction: 0 from the client
        a.emit(ldx("dw", R1, FP, _misc(M_SRCLO)), ldx("b", R2, R8, V_CLIENT_LO), movi(R9, 1),
               jmp("jne", R1, "dir", src=R2), movi(R9, 0))
        a.label("dir")
        # TCP: SYNs give each direction's initial sequence number
        a.emit(ldx("dw", R1, FP, _misc(M_PROTO)), jmp("jne", R1, "data", imm=6),
               ldx("dw", R1, FP, _misc(M_FLAGS)), alu64("rsh", R1, imm=8),
               jmp("jset", R1, "data", imm=0x04 | 0x01),  # RST, FIN: nothing to learn
               jmp("jset", R1, "syn", imm=0x02), ja("data"))
        a.label("syn")
        a.emit(ldx("dw", R2, FP, _misc(M_N)), jmp("jne", R2, "touser", imm=0),  # data on a SYN
               ldx("w", R3, FP, S_L4 + 4), bswap(R3, 32), ldx("b", R4, R8, V_SYN),
               jmp("jne", R9, "synsrv", imm=0),
               stx("w", R8, V_ISN0, R3), alu64("or", R4, imm=1), stx("b", R8, V_SYN, R4),
               ja("apply"))
        a.label("synsrv")
        a.emit(stx("w", R8, V_ISN1, R3), alu64("or", R4, imm=2), stx("b", R8, V_SYN, R4),
               ja("apply"))
        a.label("data")
        a.emit(ldx("dw", R2, FP, _misc(M_N)), jmp("jeq", R2, "apply", imm=0))
        # a direction's later packets: a candidate that may read them makes the flow
        # userspace's at the first of them (`later_readers`: the queue path then has every
        # byte, the first packet from the first-bytes map); else they change nothing (its
        # steps ran on its first packet), but are remembered
        a.emit(ldx("b", R3, R8, V_SEEN), mov(R4, R9), alu64("add", R4, imm=1),
               jset_reg(R3, R4, "later"), ja("firstdata"))
        a.label("later")
        a.emit(ldx("b", R3, R8, V_NEEDDIR), jset_reg(R3, R4, "touser"),
               ldx("b", R3, R8, V_MORE), alu64("or", R3, R4), stx("b", R8, V_MORE, R3))
        self.later_readers()
        a.emit(ja("apply"))
        self.keep_later()
        a.label("firstdata")
        # TCP: the first payload must follow the SYN (else a retransmission or a gap)
        a.emit(ldx("dw", R1, FP, _misc(M_PROTO)), jmp("jne", R1, "udpsize", imm=6),
               ldx("b", R4, R8, V_SYN), mov(R5, R9), alu64("add", R5, imm=1),
               jset_reg(R4, R5, "synok"), ja("touser"))
        a.label("synok")
        a.emit(ldx("w", R3, FP, S_L4 + 4), bswap(R3, 32), ldx("w", R4, R8, V_ISN0),
               jmp("jeq", R9, "isn", imm=0), ldx("w", R4, R8, V_ISN1))
        a.label("isn")
        a.emit(alu64("add", R4, imm=1), lddw(R5, 0xFFFFFFFF),
               alu64("and", R4, R5), jmp("jne", R3, "touser", src=R4), ja("copy"))
        a.label("udpsize")
        # UDP: the whole datagram, or userspace
        a.emit(ldx("dw", R3, FP, _misc(M_PAYLEN)), jmp("jne", R3, "touser", src=R2),
               jmp("jgt", R3, "touser", imm=BUF))
        a.label("copy")
        # seen |= this direction; the first direction is remembered for the candidates' order
        a.emit(ldx("b", R3, R8, V_SEEN), jmp("jne", R3, "notfirst", imm=0),
               stx("b", R8, V_FIRST, R9))
        a.label("notfirst")
        a.emit(mov(R4, R9), alu64("add", R4, imm=1), alu64("or", R3, R4), stx("b", R8, V_SEEN, R3))
        # the payload into the buffer: n = min(payload, BUF) bytes
        a.emit(ldx("dw", R4, FP, _misc(M_N)), jmp("jle", R4, "ncap", imm=BUF), movi(R4, BUF))
        a.label("ncap")
        a.emit(stx("dw", FP, _misc(M_N), R4), jmp("jeq", R4, "apply", imm=0))
        a.emit(mov(R1, R6), ldx("dw", R2, FP, _misc(M_PAYOFF)), mov(R3, R7),
               call(HELPER["skb_load_bytes"]), jmp("jslt", R0, "touser", imm=0))
        # the step frame: n, region, final (UDP), key 0
        a.emit(stx("dw", FP, _misc(M_DIR), R9))  # the direction, kept across calls
        a.emit(ldx("dw", R1, FP, _misc(M_N)), stx("dw", R7, self.fr + F_N, R1),
               movi(R1, 0), ldx("dw", R2, FP, _misc(M_PROTO)),
               jmp("jne", R2, "tcpfinal", imm=17), movi(R1, 1))
        a.label("tcpfinal")
        a.emit(stx("dw", R7, self.fr + F_FINAL, R1))
        self.run_steps()

    def first_steps(self, s: SigInfo, d: int) -> tuple[list[int], bool]:
        """The steps of ``s`` that run on direction ``d``'s first payload packet (its first
        in that direction), and whether any other step reads ``d`` (it starts later in
        that direction's stream: the engine would read ``d``'s later bytes)."""
        proto = s.program.protocols[s.proto]
        seen_dirs: set[int] = set()
        firsts, later = [], False
        for i, si in enumerate(s.steps):
            sd = proto.steps[si].direction
            if sd != d and sd != 2:
                seen_dirs.add(sd)
                continue
            if sd == d and d not in seen_dirs and 2 not in seen_dirs:
                firsts.append(i)
            else:
                later = True
            seen_dirs.add(sd)
        return firsts, later

    def lineage(self, s: SigInfo) -> int:
        """The bits of ``s`` and of the protocols it runs after (all protocols when that
        chain is ambiguous): ``s`` may still run while any of them waits."""
        if s.chain is None:
            return (1 << len(self.sigs)) - 1
        return sum(1 << i for i in {s.index, *s.chain})

    def later_readers(self) -> None:
        """A later payload packet of direction r9 in an open flow: kept for a later
        hand-over (`keep_later`) if a candidate still waiting (V_LIVE), or a protocol that
        runs after one, may read it: one with a step starting later in that direction, or
        whose step on the direction's first packet did not hold (unknown, or needing
        more).  Else it passes: the engine's decision does not depend on it."""
        a = self.asm
        a.note("a later packet: kept if a waiting candidate may read it")
        done = a.fresh("nolater")
        a.emit(ldx("dw", R3, R8, V_LIVE), jmp("jeq", R3, done, imm=0))
        for d in (0, 1):
            other = a.fresh("laterdir")
            if d == 0:
                a.emit(jmp("jne", R9, other, imm=0))
            later = 0
            for s in self.sigs:
                firsts, reads_later = self.first_steps(s, d)
                if reads_later:
                    later |= self.lineage(s)
                for i in firsts:
                    held = a.fresh("heldfirst")
                    a.emit(ldx("b", R1, R8, s.out[i]), jmp("jeq", R1, held, imm=O_HELD),
                           lddw(R5, self.lineage(s)), jset_reg(R3, R5, "keeplater"))
                    a.label(held)
            if later:
                a.emit(lddw(R5, later), jset_reg(R3, R5, "keeplater"))
            a.emit(ja(done))
            a.label(other)
        a.label(done)

    def run_steps(self) -> None:
        """Each step that reads the start of this direction runs; its outcome is stored."""
        a = self.asm
        for d in (0, 1):
            a.label(f"dir{d}")
            if d == 0:
                a.emit(ldx("dw", R1, FP, _misc(M_DIR)), jmp("jne", R1, "dir1", imm=0))
            a.note(f"steps reading the {'client' if d == 0 else 'server'}'s first bytes")
            # the protocols others run after first: a `field ... is` then finds the fields
            # they kept from this very packet
            for s in sorted(self.sigs, key=lambda s: len(s.chain or [])):
                proto = s.program.protocols[s.proto]
                firsts, _ = self.first_steps(s, d)
                for i, si in enumerate(s.steps):
                    if proto.steps[si].direction in (d, 2):
                        self.one_step(s, i, si, i in firsts, d)
            a.emit(ja("decide"))

    def one_step(self, s: SigInfo, i: int, si: int, first: bool, d: int) -> None:
        a = self.asm
        out = s.out[i]
        name = f"{s.name}.{s.program.text(s.program.protocols[s.proto].steps[si].name)}"
        skip = a.fresh("skip")
        # not this flow's transport: the step never runs (replay drops the protocol)
        tr = s.transports
        if tr != TCP | UDP:
            a.emit(ldx("dw", R1, FP, _misc(M_PROTO)),
                   jmp("jne", R1, skip, imm=6 if tr == TCP else 17))
        if not first:
            a.note(f"{name}: starts later in the stream: to userspace if reached")
            a.emit(st("b", R8, out, O_UNKNOWN))
            a.label(skip)
            return
        code = s.program.protocols[s.proto].steps[si].code
        needs_before = i > 0 and (bool(live_in(code) & set(s.persist)) or bool(tr & UDP))
        unknown = a.fresh("unknown")
        if needs_before:
            # its variables (or, on UDP, its turn) come from the earlier steps: all must hold
            for j in range(i):
                a.emit(ldx("b", R1, R8, s.out[j]), jmp("jne", R1, unknown, imm=O_HELD))
        self.first_byte(s.program, code, out, skip)
        a.note(f"run {name}")
        nvars = len(s.program.protocols[s.proto].variables)
        for v in range(nvars):
            if v in s.persist:
                a.emit(ldx("dw", R1, R8, s.persist[v]), stx("dw", R7, self.fr + F_VARS + 8 * v, R1))
            else:
                a.emit(st("dw", R7, self.fr + F_VARS + 8 * v, 0))
        a.emit(st("dw", R7, self.fr + F_P, 0), lddw(R1, BIG), stx("dw", R7, self.fr + F_E, R1))
        slots = self.step_fields[(s.index, i)]
        for fname, at in slots.tested.items():
            self.field_value(s, fname, self.fr + at)
        label = f"step.{s.index}.{i}"
        self.step_labels[(s.index, i)] = label
        a.emit(call_local(label))
        held, fail, need = a.fresh("held"), a.fresh("fail"), a.fresh("need")
        a.emit(jmp("jeq", R0, held, imm=HELD), jmp("jeq", R0, fail, imm=FAIL),
               jmp("jeq", R0, fail, imm=GIVE_UP), jmp("jne", R0, unknown, imm=NEED))
        # NEED on a packet the buffer (or the capture) cut: the engine had more bytes
        a.label(need)
        a.emit(ldx("dw", R1, FP, _misc(M_N)), ldx("dw", R2, FP, _misc(M_PAYLEN)),
               jmp("jlt", R1, unknown, src=R2), st("b", R8, out, O_NEED), ja(skip))
        a.label(held)
        a.emit(st("b", R8, out, O_HELD))
        for v, off in s.persist.items():
            a.emit(ldx("dw", R1, R7, self.fr + F_VARS + 8 * v), stx("dw", R8, off, R1))
        for fname, at in slots.kept.items():
            self.keep_field(s, fname, self.fr + at)
        a.emit(ja(skip))
        a.label(fail)
        a.emit(st("b", R8, out, O_FAIL), ja(skip))
        a.label(unknown)
        a.emit(st("b", R8, out, O_UNKNOWN))
        a.label(skip)

    def first_byte(self, program: Program, code: list[Instr], out: int, skip: str) -> None:
        """A step whose first test reads the data's first byte (codegen.first_bytes, the
        engine's own filter) fails at once on a byte it cannot start with: the step, its
        scratch lookups and its loops are not run (most candidates, on most first packets).
        The step runs at stream offset 0 on a packet with data (n >= 1)."""
        allowed = first_bytes(program, code)
        if allowed is None or len(allowed) == 256:
            return
        a = self.asm
        words = [sum(1 << (b & 63) for b in allowed if b >> 6 == w) for w in range(4)]
        run, fails = a.fresh("firstok"), a.fresh("firstbad")
        a.emit(ldx("b", R1, R7, 0), mov(R2, R1), alu64("rsh", R2, imm=6),
               alu64("and", R1, imm=63), movi(R3, 1), alu64("lsh", R3, R1))
        for w, mask in enumerate(words):
            if mask:
                nxt = a.fresh("word")
                a.emit(jmp("jne", R2, nxt, imm=w), lddw(R4, mask), jset_reg(R3, R4, run),
                       ja(fails))
                a.label(nxt)
        a.label(fails)
        a.emit(st("b", R8, out, O_FAIL), ja(skip))
        a.label(run)

    def rerun_field_tests(self, s: SigInfo) -> None:
        """Its parent has won: a step of ``s`` that reads no data, only fields (`field ...
        is`, numbers, variables), and whose test was unknown on its packet (a step of the
        parent keeping the field had not held yet) runs again now, when the fields are the
        ones the engine gives it; as in the engine, once its direction has data."""
        a = self.asm
        proto = s.program.protocols[s.proto]
        for i, si in enumerate(s.steps):
            label = self.step_labels.get((s.index, i))
            step = proto.steps[si]
            slots = self.step_fields[(s.index, i)]
            if label is None or not slots.tested or not _reads_no_data(step.code) or \
                    i and live_in(step.code) & set(s.persist):
                continue
            skip, run = a.fresh("norerun"), a.fresh("rerun")
            a.emit(ldx("b", R1, R8, s.out[i]), jmp("jne", R1, skip, imm=O_UNKNOWN),
                   ldx("b", R1, R8, V_SEEN))
            if step.direction == 2:
                a.emit(jmp("jeq", R1, skip, imm=0))
            else:
                a.emit(jmp("jset", R1, run, imm=1 << step.direction), ja(skip))
            a.label(run)
            a.note(f"{s.name}.{s.program.text(step.name)} again: its parent won")
            for v in range(len(proto.variables)):
                a.emit(st("dw", R7, self.fr + F_VARS + 8 * v, 0))
            a.emit(st("dw", R7, self.fr + F_P, 0), lddw(R1, BIG), stx("dw", R7, self.fr + F_E, R1))
            for fname, at in slots.tested.items():
                self.field_value(s, fname, self.fr + at)
            held, failed = a.fresh("reheld"), a.fresh("refailed")
            a.emit(call_local(label), jmp("jeq", R0, held, imm=HELD),
                   jmp("jeq", R0, failed, imm=FAIL), jmp("jeq", R0, failed, imm=GIVE_UP), ja(skip))
            a.label(held)
            a.emit(st("b", R8, s.out[i], O_HELD))
            for v, off in s.persist.items():
                a.emit(ldx("dw", R1, R7, self.fr + F_VARS + 8 * v), stx("dw", R8, off, R1))
            a.emit(ja(skip))
            a.label(failed)
            a.emit(st("b", R8, s.out[i], O_FAIL))
            a.label(skip)

    # -- the decision ------------------------------------------------------------
    def status(self, s: SigInfo, classified: str, dead: str, waiting: str, stuck: str) -> None:
        """Replay one protocol's outcomes: jump to the label of what it is now."""
        a = self.asm
        tr = s.transports
        if tr != TCP | UDP:
            a.emit(ldx("dw", R0, FP, _misc(M_PROTO)),
                   jmp("jne", R0, dead, imm=6 if tr == TCP else 17))
        proto = s.program.protocols[s.proto]
        for i, out in enumerate(s.out):
            sd = proto.steps[s.steps[i]].direction
            nxt = a.fresh("o")
            a.emit(ldx("b", R0, R8, out), jmp("jeq", R0, waiting, imm=PENDING),
                   jmp("jeq", R0, dead, imm=O_FAIL), jmp("jeq", R0, nxt, imm=O_HELD),
                   jmp("jne", R0, stuck, imm=O_NEED))
            if sd == 2:
                a.emit(ja(stuck))
            else:
                # waits for more of direction sd: stuck if more already came (the engine
                # would have run it on those bytes), else waiting on sd
                a.emit(ldx("b", R0, R8, V_MORE), jmp("jset", R0, stuck, imm=1 << sd),
                       ldx("dw", R0, R7, self.mk + 24), alu64("or", R0, imm=1 << sd),
                       stx("dw", R7, self.mk + 24, R0), ja(waiting))
            a.label(nxt)
        a.emit(ja(classified))

    def masks(self, group: list[SigInfo]) -> None:
        """r1 = classified, r2 = stuck, r3 = waiting: bit masks over a group of protocols."""
        a = self.asm
        mk = self.mk
        a.emit(st("dw", R7, mk, 0), st("dw", R7, mk + 8, 0), st("dw", R7, mk + 16, 0),
               st("dw", R7, mk + 24, 0))
        for s in group:
            c, dead, w, stk, nxt = (a.fresh(x) for x in ("c", "dead", "w", "stuck", "next"))
            self.status(s, c, dead, w, stk)
            for lab, off in ((c, mk), (stk, mk + 8), (w, mk + 16)):
                a.label(lab)
                a.emit(ldx("dw", R1, R7, off), lddw(R4, 1 << s.index), alu64("or", R1, R4),
                       stx("dw", R7, off, R1), ja(nxt))
            a.label(dead)
            a.label(nxt)
        a.emit(ldx("dw", R1, R7, mk), ldx("dw", R2, R7, mk + 8), ldx("dw", R3, R7, mk + 16))

    def decide(self) -> None:
        a = self.asm
        a.label("decide")
        a.note("replay the engine's decision from the stored outcomes")
        a.emit(ldx("b", R1, R8, V_STATE), jmp("jeq", R1, "refine", imm=REFINING))
        if self.whole:
            # the flow's first payload packet (only its direction seen): a candidate whose
            # child the kernel may not answer takes the whole flow to userspace now
            a.note("protocols handed over whole while candidates (handed_whole)")
            later = a.fresh("notfirstpkt")
            a.emit(ldx("b", R1, R8, V_SEEN), ldx("dw", R2, FP, _misc(M_DIR)),
                   alu64("add", R2, imm=1), jmp("jne", R1, later, src=R2))
            for s in self.whole:
                dead = a.fresh("notcandidate")
                self.status(s, "touser", dead, "touser", "touser")
                a.label(dead)
            a.label(later)
        roots = [s for s in self.sigs if s.after is None]
        self.masks(roots)
        # the candidates' order: port-hinted before the others; within each, those admitted
        # on the first direction after those admitted on the second (engine._admit)
        a.emit(ldx("dw", R4, R8, V_HINTED), ldx("b", R5, R8, V_FIRST))
        f_masks = []
        for d in (0, 1):
            m = 0
            for s in roots:
                sd = s.program.protocols[s.proto].steps[s.steps[0]].direction
                if sd in (d, 2):
                    m |= 1 << s.index
            f_masks.append(m)
        # r5 = F: the protocols admitted on the first direction
        a.emit(jmp("jne", R5, "f1", imm=0), lddw(R5, f_masks[0]), ja("fset"))
        a.label("f1")
        a.emit(lddw(R5, f_masks[1]))
        a.label("fset")
        # groups: H & ~F, H & F, ~H & F, ~H & ~F; in each, by load order, the first
        # candidate that classified wins, unless one the kernel cannot read comes first
        for g in range(4):
            a.emit(mov(R0, R5))
            if g in (0, 3):
                a.emit(alu64("xor", R0, imm=-1))
            if g in (0, 1):
                a.emit(alu64("and", R0, R4))
            else:
                a.emit(mov(R9, R4), alu64("xor", R9, imm=-1), alu64("and", R0, R9))
            a.emit(mov(R9, R0), alu64("and", R9, R1), alu64("and", R0, R2))
            for s in roots:
                a.emit(lddw(R3, 1 << s.index), jset_reg(R0, R3, "touser"),
                       jset_reg(R9, R3, f"won.{s.index}"))
        self.undecided()
        # a winner: its children (protocols `after` it), recursively
        a.label("refine")
        a.emit(ldx("b", R1, R8, V_WINNER))
        for s in self.sigs:
            a.emit(jmp("jeq", R1, f"chain.{s.index}", imm=s.index + 1))
        a.emit(ja("touser"))
        for s in self.sigs:
            a.label(f"won.{s.index}")
            a.emit(st("b", R8, V_WINNER, s.index + 1), ja(f"chain.{s.index}"))
            a.label(f"chain.{s.index}")
            app = self.apps[s.name]
            if s.children:
                if s.transports & UDP:  # children wait for the next datagram: userspace's
                    a.emit(ldx("dw", R1, FP, _misc(M_PROTO)), jmp("jeq", R1, "touser", imm=17))
                kids = [self.sigs[c] for c in s.children]
                for kid in kids:
                    self.rerun_field_tests(kid)
                self.masks(kids)
                for c in kids:
                    a.emit(lddw(R9, 1 << c.index), jset_reg(R2, R9, "touser"),
                           jset_reg(R1, R9, f"won.{c.index}"))
                refining = a.fresh("refining")
                a.emit(jmp("jne", R3, refining, imm=0))
                self.final(s, app)
                a.label(refining)
                a.emit(ldx("dw", R1, R7, self.mk + 24), stx("b", R8, V_NEEDDIR, R1),
                       ldx("dw", R1, R7, self.mk + 16), stx("dw", R8, V_LIVE, R1))
                self.set_state(REFINING, app, "keepfirst")
            else:
                self.final(s, app)
        a.label("touser")
        self.set_state(USERSPACE, MARK_USERSPACE, "apply", C_USERSPACE)

    def keep_first(self) -> None:
        """The flow stays open after its direction's first payload packet (candidates, or
        the winner's children, wait): that packet's bytes into the first-bytes map, for
        the queue path to read first should the flow be handed over later (it then
        decides as the engine, which saw them).  A first packet longer than the buffer,
        or a map that refuses the entry (full: FIRST_ENTRIES open flows' bytes kept):
        the flow is handed over at this packet, so userspace sees it from its start."""
        a = self.asm
        a.label("keepfirst")
        a.note("an open flow: this direction's first bytes kept for a later hand-over")
        a.emit(ldx("dw", R1, FP, _misc(M_N)), ldx("dw", R2, FP, _misc(M_PAYLEN)),
               jmp("jne", R1, "touser", src=R2))
        # r1 = n, the packet's whole payload in the buffer: kept as the flow's next packet
        a.label("keepstore")
        a.emit(ldx("b", R2, R8, V_NKEPT), jmp("jge", R2, "touser", imm=FIRST_PACKETS),
               stx("dw", FP, S_FIRSTDIR, R2), ldx("dw", R3, FP, _misc(M_DIR)),
               alu64("lsh", R3, imm=32), alu64("or", R3, R1), stx("dw", R7, F_LEN, R3),
               # the flow's stamp, made at its first kept bytes (a reused tuple's new flow
               # gets a new one: the old flow's entries are never read as its own)
               ldx("dw", R1, R8, V_BORN), jmp("jne", R1, "stamped", imm=0),
               call(HELPER["ktime_get_ns"]), stx("dw", R8, V_BORN, R0), mov(R1, R0))
        a.label("stamped")
        a.emit(stx("dw", R7, F_STAMP, R1),
               ld_map(R1, self.first_fd), mov(R2, FP), alu64("add", R2, imm=S_KEY), mov(R3, R7),
               movi(R4, BPF_ANY), call(HELPER["map_update_elem"]), jmp("jeq", R0, "kept", imm=0))
        self.count(C_FIRST_FULL)  # the map full (the only refusal of a valid insert)
        a.emit(ja("touser"))
        a.label("kept")
        # TCP: the direction's next sequence number, which a later packet kept must start at
        a.emit(ldx("b", R1, R8, V_NKEPT), alu64("add", R1, imm=1), stx("b", R8, V_NKEPT, R1),
               ldx("dw", R1, FP, _misc(M_PROTO)), jmp("jne", R1, "apply", imm=6),
               ldx("w", R3, FP, S_L4 + 4), bswap(R3, 32), ldx("dw", R1, FP, _misc(M_N)),
               alu64("add", R3, R1), ldx("dw", R2, FP, _misc(M_DIR)),
               jmp("jne", R2, "keptnext1", imm=0), stx("w", R8, V_NEXT, R3), ja("apply"))
        a.label("keptnext1")
        a.emit(stx("w", R8, V_NEXT + 4, R3), ja("apply"))
        # decided (an app or none) on a direction's first payload packet: the packets
        # kept while the flow was open are not needed any more
        a.label("forget")
        for k in range(FIRST_PACKETS):
            a.emit(ldx("b", R1, R8, V_NKEPT), jmp("jle", R1, "apply", imm=k),
                   st("dw", FP, S_FIRSTDIR, k), ld_map(R1, self.first_fd), mov(R2, FP),
                   alu64("add", R2, imm=S_KEY), call(HELPER["map_delete_elem"]))
        a.emit(ja("apply"))

    def keep_later(self) -> None:
        """A later payload packet a waiting candidate may read (`later_readers`): kept
        beside the direction's first, whole and (TCP) right after the bytes kept before it;
        else (a gap, a retransmission, a packet longer than the buffer, FIRST_PACKETS
        kept already, the map full) the flow is handed over at this packet, so the queue
        path still has every byte from the map and the packets from this one on."""
        a = self.asm
        a.label("keeplater")
        a.note("a later packet a waiting candidate may read: kept, else the flow is handed over")
        a.emit(stx("dw", FP, _misc(M_DIR), R9),
               ldx("dw", R1, FP, _misc(M_PROTO)), jmp("jne", R1, "laterwhole", imm=6),
               ldx("w", R3, FP, S_L4 + 4), bswap(R3, 32), ldx("w", R4, R8, V_NEXT),
               jmp("jeq", R9, "laternext", imm=0), ldx("w", R4, R8, V_NEXT + 4))
        a.label("laternext")
        a.emit(jmp("jne", R3, "touser", src=R4))
        a.label("laterwhole")
        a.emit(ldx("dw", R4, FP, _misc(M_N)), ldx("dw", R2, FP, _misc(M_PAYLEN)),
               jmp("jne", R4, "touser", src=R2), jmp("jgt", R4, "touser", imm=BUF),
               jmp("jeq", R4, "apply", imm=0),
               mov(R1, R6), ldx("dw", R2, FP, _misc(M_PAYOFF)), mov(R3, R7),
               call(HELPER["skb_load_bytes"]), jmp("jslt", R0, "touser", imm=0),
               ldx("dw", R1, FP, _misc(M_N)), ja("keepstore"))

    def undecided(self) -> None:
        """No winner: candidates still waiting keep the flow open (remembering the
        directions some wait more data on), else it is done with no app."""
        a = self.asm
        a.emit(ldx("dw", R3, R7, self.mk + 16), jmp("jeq", R3, "noapp", imm=0))
        for s in self.sigs:
            if not s.announces or not s.out:
                continue
            # a candidate that announces expectations (FTP) held its first step and still
            # runs: the flow will be userspace's, so it is from this packet on (userspace
            # then reads each direction from its first byte)
            skip = a.fresh("noannounce")
            a.emit(ldx("b", R2, R8, s.out[0]), jmp("jne", R2, skip, imm=O_HELD),
                   lddw(R2, 1 << s.index), jset_reg(R3, R2, "touser"))
            a.label(skip)
        a.emit(ldx("dw", R1, R7, self.mk + 24), stx("b", R8, V_NEEDDIR, R1),
               stx("dw", R8, V_LIVE, R3))
        # a candidate waits for more of *this* packet's direction (a segmented first
        # message): only reassembly can go on, so userspace takes the flow from this
        # packet on (it then reads this direction from its first byte)
        a.emit(ldx("dw", R2, FP, _misc(M_DIR)), alu64("add", R2, imm=1),
               jset_reg(R1, R2, "touser"), ja("keepfirst"))
        a.label("noapp")
        self.set_state(NO_APP, MARK_NONE, "forget", C_NO_APP)

    def final(self, s: SigInfo, app: int) -> None:
        if s.announces:  # the expectations it announces are userspace's to learn
            self.set_state(USERSPACE, MARK_USERSPACE, "apply", C_USERSPACE)
        else:
            self.set_state(DECIDED, app, "forget", C_DECIDED + s.index)


KEEPS = ("KEEP_UNTIL", "KEEP_BYTES", "KEEP_INT", "KEEP_LABELS")
# instructions that read neither the data nor the cursor: a step made of them alone decides
# the same on any data
NO_DATA = frozenset(("PUSH_INT", "PUSH_VAR", "BINOP", "CMP", "RANGE", "LET", "FIELD_IS",
                     "OPT_BEGIN", "OPT_END", "GIVEUP"))


def _reads_no_data(code: list[Instr]) -> bool:
    return all(OPS[ins.op].name in NO_DATA for ins in code)


def _field_names(program: Program, code: list[Instr], ops: tuple[str, ...]) -> set[str]:
    """The fields the instructions named ``ops`` (keeps, or FIELD_IS) of a step name."""
    return {program.text(ins.a) for ins in code if OPS[ins.op].name in ops}


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def jset_reg(reg: int, mask_reg: int, label: str) -> Insn:
    """``if reg & mask_reg goto label``."""
    return jmp("jset", reg, label, src=mask_reg)


def load_verified(paths: list[str] | None = None) -> list[Verified]:
    """The verified programs of rule files or directories (None: the shipped library), in
    the order `nfkit.nfgrep.loader.load_rules` loads them.  Raises InputError."""
    from nfkit.nfgrep.loader import load_program, rule_files
    from nfkit.nfgrep.verifier import verify

    return [verify(load_program(f)) for f in rule_files(paths)]


def compile_rules(verified: list[Verified], flows_fd: int = 0, scratch_fd: int = 0,
                  mark_mask: int = MARK_MASK, expect_fd: int = 0,
                  registry: Registry | None = None, timeouts: Timeouts | None = None,
                  first_fd: int = 0) -> Compiled:
    """Generate the classifier for verified nfgrep programs (map fds: 0 for a listing);
    app ids from ``registry`` (default: `registry_for` the programs' protocols); idle
    timeouts from ``timeouts`` (default: the flow table's, `Timeouts()`)."""
    return _Builder(verified, flows_fd, scratch_fd, mark_mask, expect_fd, registry,
                    timeouts, first_fd).build()


class Classifier:
    """The loaded classifier: its maps and program (closed together)."""

    def __init__(self, verified: list[Verified], flow_entries: int = FLOW_ENTRIES,
                 mark_mask: int = MARK_MASK, log_level: int = 0,
                 registry: Registry | None = None, timeouts: Timeouts | None = None,
                 first_entries: int = FIRST_ENTRIES) -> None:
        self.links: list[Link] = []
        self.mark_mask = mark_mask
        self.timeouts = timeouts or Timeouts()
        layout = compile_rules(verified, mark_mask=mark_mask, registry=registry)
        self.flows = Map("BPF_MAP_TYPE_LRU_HASH", KEY_SIZE, layout.value_size, flow_entries,
                         "nfgrep_flows")
        self.scratch = Map("BPF_MAP_TYPE_PERCPU_ARRAY", 4, layout.scratch_size, 1,
                           "nfgrep_scratch")
        self.expected = Map("BPF_MAP_TYPE_HASH", EXPECT_KEY_SIZE, 4, EXPECT_ENTRIES,
                            "nfgrep_expect")
        self.first_entries = first_entries
        self.first = Map("BPF_MAP_TYPE_HASH", FIRST_KEY_SIZE, FIRST_VALUE_SIZE,
                         first_entries, "nfgrep_first")
        try:
            self.compiled = compile_rules(verified, self.flows.fd, self.scratch.fd, mark_mask,
                                          self.expected.fd, registry, timeouts, self.first.fd)
            try:
                self.prog = Prog("BPF_PROG_TYPE_SCHED_CLS", self.compiled.insns, "nfgrep_cls",
                                 functions=self.compiled.functions, log_level=log_level)
            except BpfError as exc:
                raise self._refused(exc) from None
        except BaseException:
            self.flows.close()
            self.scratch.close()
            self.expected.close()
            self.first.close()
            raise

    def _refused(self, exc: BpfError) -> BpfError:
        """The kernel's refusal named after the protocol and step its last instruction is in."""
        found = re.findall(r"^(\d+): \(", exc.log, re.M)
        where = "the classifier"
        if found:
            slot = int(found[-1])
            where = f"{self.compiled.owner(slot)} (instruction {slot})"
        return BpfError(f"nfgrep eBPF program refused by the kernel verifier in {where}",
                        exc.errno, exc.log)

    def attach(self, interface: str | int, direction: str) -> Link:
        """Attach to an interface of the calling thread's network namespace with a tcx
        link (``direction``: "ingress" or "egress").  The link is this process's: it goes,
        and the program with it, on `close` or when the process ends (even killed)."""
        if direction not in ("ingress", "egress"):
            raise InputError(f"direction {direction!r}: use ingress or egress")
        if isinstance(interface, str):
            try:
                ifindex = socket.if_nametoindex(interface)
            except OSError:
                raise InputError(f"interface {interface}: no such interface") from None
        else:
            ifindex = interface
        link = Link(self.prog, ifindex, "BPF_TCX_INGRESS" if direction == "ingress"
                    else "BPF_TCX_EGRESS")
        self.links.append(link)
        return link

    def close(self) -> None:
        """Unload: links first (traffic then flows unclassified), then the program and its
        maps, which go with their last descriptor."""
        for link in self.links:
            link.close()
        self.links = []
        self.prog.close()
        self.flows.close()
        self.scratch.close()
        self.expected.close()
        self.first.close()

    def counts(self) -> dict[str, Any]:
        """The program's per-CPU counters summed: flows new, reopened, handed to userspace,
        done with no app, decided by an expectation, handed over because the first-bytes
        map was full (counted in ``userspace`` too), and ``decided`` per app (every
        decision since loading, unlike the flow map, whose entries are replaced by a
        reopened tuple and evicted)."""
        values = self.scratch.lookup_cpus(b"\0\0\0\0") or []
        cnt = self.compiled.counters
        total = [sum(struct.unpack_from("<Q", v, cnt + 8 * i)[0] for v in values)
                 for i in range(C_DECIDED + len(self.compiled.sigs))]
        out: dict[str, Any] = dict(zip(COUNTER_NAMES, total, strict=False))
        decided: dict[str, int] = {}
        for s in self.compiled.sigs:
            app = s.name if s.name in self.compiled.apps else "?"
            decided[app] = decided.get(app, 0) + total[C_DECIDED + s.index]
        out["decided"] = {k: v for k, v in decided.items() if v}
        return out

    def expect(self, server: bytes, port: int, proto: int, app: str) -> None:
        """Announce a flow (what userspace learnt, e.g. from an FTP control connection): the
        next new flow to ``server``:``port`` is decided as ``app`` at its first packet."""
        key = server.ljust(16, b"\0") + struct.pack("!H", port) + bytes(
            [proto, 4 if len(server) == 4 else 6])
        self.expected.update(key, struct.pack("<I", self.compiled.apps[app]))

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flow(self, src: bytes, dst: bytes, sport: int, dport: int, proto: int) -> FlowEntry | None:
        """The kernel's entry for a flow (either direction's tuple), or None."""
        key, _ = flow_key(src, dst, sport, dport, proto)
        raw = self.flows.lookup(key)
        return None if raw is None else entry_of(self, raw)

    def first_bytes(self, client: bytes, server: bytes, cport: int, sport: int,
                    proto: int) -> list[tuple[int, bytes]]:
        """The payload packets the kernel kept while the flow was open (each direction's
        first, and the later ones a waiting candidate could read), as (direction, bytes)
        (0: the client's) in the order they came, taken out of the map: what the queue
        path reads first when the flow is handed over.  Entries left by an earlier flow
        on the same tuple (their stamp not this flow's) are dropped; the list stops
        before a packet missing (swept), so what it gives has no gap."""
        key, _ = flow_key(client, server, cport, sport, proto)
        e = self.flows.lookup(key)
        if e is None:
            return []
        born = struct.unpack_from("<Q", e, V_BORN)[0]
        out: list[tuple[int, bytes]] = []
        whole = True
        for k in range(e[V_NKEPT]):
            kk = key + struct.pack("<Q", k)
            raw = self.first.lookup(kk)
            if raw is None:
                whole = False
                continue
            self.first.delete(kk)
            length, stamp = struct.unpack_from("<QQ", raw, F_LEN)
            if whole and born and stamp == born:
                out.append((length >> 32, raw[:min(length & 0xFFFFFFFF, BUF)]))
            else:
                whole = False
        return out

    def sweep_first(self, now_ns: int | None = None) -> int:
        """Delete the first-bytes entries no hand-over can read any more (the map is a
        plain hash: a full one makes the kernel hand new open flows over at once): those
        of flows gone from the flow map, reopened since (another stamp) or decided; of
        flows handed over or closed (a RST, a FIN each way) once idle FIRST_GRACE_S (the
        queue path reads them at the hand-over packet, on its way as the flow turns);
        of open flows idle past their timeout.  ``now_ns``: CLOCK_MONOTONIC (the
        entries' clock).  Returns how many were deleted."""
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) if now_ns is None else now_ns
        gone = 0
        for k in self.first.keys():
            raw = self.first.lookup(k)  # before the flow: a newer flow's entry is newer still
            if raw is None:
                continue
            e = self.flows.lookup(k[:KEY_SIZE])
            if e is None or e[V_STATE] in (DECIDED, NO_APP) or \
                    struct.unpack_from("<Q", raw, F_STAMP)[0] != struct.unpack_from("<Q", e, V_BORN)[0]:
                gone += self.first.delete(k)
                continue
            idle = now - struct.unpack_from("<Q", e, V_LAST)[0]
            ended = e[V_STATE] == USERSPACE or e[V_CLOSED] & 4 or e[V_CLOSED] & 3 == 3
            if idle > (int(FIRST_GRACE_S * 1e9) if ended else self._idle_ns(k[36], e)):
                gone += self.first.delete(k)
        return gone

    def _idle_ns(self, proto: int, e: bytes) -> int:
        """The idle timeout the program gives this open flow entry (`_Builder.idle`)."""
        t = self.timeouts
        if proto == 17:
            seconds = t.udp_stream if e[V_REPLIED] else t.udp
        elif proto == 6:
            closed = e[V_CLOSED] & 3
            seconds = t.tcp_close_wait if closed else \
                t.tcp_established if e[V_SYN] != 1 else t.tcp_syn_sent
        else:
            seconds = t.generic
        return int(seconds * 1e9)

    def packet_mark(self, code: int) -> int:
        """The packet-mark bits a flow's mark code (an app id, MARK_NONE, MARK_USERSPACE)
        becomes under the classifier's mask."""
        return code << mark_shift(self.mark_mask) & self.mark_mask


def entry_of(classifier: Classifier, raw: bytes) -> FlowEntry:
    """A flow map value, read."""
    names = {v: k for k, v in classifier.compiled.apps.items()}
    winner = raw[V_WINNER]
    code = struct.unpack_from("<I", raw, V_MARK)[0]
    return FlowEntry(raw[V_STATE], code, classifier.compiled.sigs[winner - 1].name if winner else None,
                     names.get(code) if raw[V_STATE] in (DECIDED, REFINING) else None,
                     raw[V_SYN], struct.unpack_from("<II", raw, V_ISN0))


@dataclass
class FlowEntry:
    state: int
    mark: int           # the mark code (an app id, MARK_NONE, MARK_USERSPACE), before the shift
    winner: str | None  # the protocol the replay chose (also for flows sent to userspace)
    app: str | None     # the app of the mark (None for userspace / no app)
    syns: int = 0       # SYNs seen: bit 0 the client's, bit 1 the server's
    isns: tuple[int, int] = (0, 0)  # their initial sequence numbers (client, server)

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, str(self.state))


__all__ = ["Classifier", "Compiled", "FlowEntry", "compile_rules", "entry_of", "flow_key", "registry_for",
           "load_verified",
           "FLOW_ENTRIES", "MARK_NONE", "MARK_USERSPACE", "STATE_NAMES"]
