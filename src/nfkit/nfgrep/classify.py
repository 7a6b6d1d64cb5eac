"""Classify the flows of capture files: packets -> flows -> streams -> engine -> results.

Owns: the per-packet loop that ties the capture reader, the flow table, TCP
reassembly and the engine together, and the per-flow result records.
Must not know: how signatures match (the engine), how files are framed
(capture), how flows are hashed (flow).

Per packet: decode, one flow-table lookup, counters.  While a flow is being
classified its TCP payload goes through reassembly (one `TcpStream` per
direction) and the in-order bytes to the engine; UDP datagrams go to the
engine as they are.  Once the engine is done with a flow (classified, or every
candidate gave up), its streams are dropped and later packets cost only the
lookup and the counters.  A flow also stops being fed after a reassembly hole
(matching across missing bytes would be guesswork) or once ``max_inspect``
bytes went by in each direction.

Client and server: the side that sent the SYN (TCP) or the first datagram
(UDP).  For a TCP flow whose handshake was not captured the side with the
lower port is taken as the server: a guess, flagged ``guessed_sides`` in the
result.

Memory (docs/nfgrep.md, "Resource bounds"): a flow that has sent no payload
yet (a half-open TCP flow, say) keeps no engine or reassembly state, only its
flow-table entry and a few bytes in this module's per-slot arrays (the
sequence number of each side's SYN among them); the engine is started on its
first payload.  Everything a run holds is estimated against ``max_memory``:
``FLOW_BYTES`` per tracked flow (the flow table's bound is lowered so that
tracked flows alone fit), ``ACTIVE_BYTES`` per flow the engine looks at, the
bytes the engine may hold for it and what reassembly keeps waiting.  Past the
budget, the flow the engine looks at that was idle the longest is given up on
(kept, counted, reported with ``evicted``), oldest first, until the estimate
fits again.
"""

from __future__ import annotations

import json
import mmap
import operator
import os
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _quoted
from typing import Any

import numpy as np

from nfkit.flow.table import END_FLUSHED, IPPROTO_TCP, IPPROTO_UDP, TRANSPORT_NAMES, FlowTable
from nfkit.flow.tcpstate import (
    CLIENT_IS_REPLY,
    REPLIED,
    TCP_EVENT,
    TCP_NEXT,
    TCP_STRIDE,
    TH_SYN,
    TcpEvent,
)
from nfkit.flow.timeouts import Timeouts
from nfkit.nfgrep import pipeline
from nfkit.nfgrep.batch import Batch, from_frames, stable_order
from nfkit.nfgrep.capture import (
    CaptureReader,
    CaptureStop,
    Decoded,
    address_text,
    decode,
    endpoint_text,
)
from nfkit.nfgrep.reassembly import Reassembler, TcpStream

_FIN_SYN_RST = 0x07
_FIN_RST = 0x05
_STREAMED = (IPPROTO_TCP, IPPROTO_UDP)  # transports the engine reads
# per-slot marks
_GAP, _GUESSED, _WAITING, _CLIENT_REPLY, _EVICTED = 1, 2, 4, 8, 16
_SYN_SEEN = (32, 64)  # the SYN of the client (0) / server (1) side was seen
_REPORTED = 128  # the flow's decision went to ``on_flow`` already

FLOW_BYTES = 256     # bound per tracked flow, engine not started (measured ~165: docs/nfgrep.md)
ACTIVE_BYTES = 4096  # bound per flow the engine looks at (measured ~3,450), bytes held aside
MAX_MEMORY = 512 << 20  # default budget of a run
ENGINE_WINDOW = 16384  # bytes the engine keeps per direction at most (engine.WINDOW)
BATCH = 65536  # frames parsed at once by `read`
SPAN = 64 << 20  # bytes of a pcap file whose records are found at once (`pcap_records`)
RUN_MIN = 8  # a flow decided mid-piece has its next packets counted in bulk from this many on
WALK_SLICE = 1024  # frames whose columns the walk turns into Python lists at once
RESLICE = 64  # a run this long counted in bulk: the walk takes a new slice without it
UNIT_HEAD = 4  # frames of each flow whose columns the flow-major walk takes at once
FIRST_FEED = True  # a waiting flow's first payload fed before it has streams (`_first_payload`)
SLOTS_STEP = 4096  # per-slot arrays grow by this many slots at once (`_created`)
PIECE_MAX = 65536  # frames a piece may grow to over sweeps that end no flow (`_batch`)
QUIET_MARGIN = 1e-3  # seconds: a sweep this close to a possible timeout is a cut (float rounding)


@dataclass
class FlowResult:
    """One flow as `classify` reports it.

    ``packets`` and ``bytes`` are [client to server, server to client]; bytes
    count IP packets (headers included, link layer excluded).
    """

    proto: str
    client: str
    server: str
    app: str | None
    fields: dict[str, str]
    packets: list[int]
    bytes: list[int]
    chain: list[str] = field(default_factory=list)
    first: float = 0.0
    last: float = 0.0
    guessed_sides: bool = False
    gap: bool = False
    evicted: bool = False  # the engine was stopped early by the memory budget
    order: int = 0
    decided: float | None = None  # capture time of the deciding packet (None: ended undecided)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"proto": self.proto, "client": self.client, "server": self.server,
                               "app": self.app or "unknown", "fields": self.fields,
                               "packets": self.packets, "bytes": self.bytes}
        if self.evicted:
            out["evicted"] = True
        return out

    def json_line(self) -> str:
        """``json.dumps(self.as_json())``, written directly (`json_lines` of this flow alone)."""
        return FlowResult.json_lines([self])[0][:-1]

    @staticmethod
    def json_lines(flows: Sequence[FlowResult]) -> list[str]:
        """Each flow's `json_line` and a newline (the quoted names written once for all)."""
        heads: dict[str, str] = {}
        tails: dict[str | None, str] = {}
        lines = []
        for r in flows:
            fields, p, b, proto, app = r.fields, r.packets, r.bytes, r.proto, r.app
            try:
                head = heads.get(proto)
                tail = tails.get(app)
                if head is None:
                    head = heads[proto] = '{"proto": ' + _quoted(proto) + ', "client": '
                if tail is None:
                    tail = tails[app] = ', "app": ' + _quoted(app or "unknown") + ', "fields": {'
                inner = ", ".join([_quoted(k) + ": " + _quoted(v) for k, v in fields.items()])
                lines.append(f'{head}{_quoted(r.client)}, "server": {_quoted(r.server)}{tail}{inner}}}, '
                             f'"packets": [{int(p[0])}, {int(p[1])}], "bytes": [{int(b[0])}, {int(b[1])}]'
                             + (', "evicted": true}\n' if r.evicted else "}\n"))
            except TypeError:  # something that is not text (a field, say): json's own way
                lines.append(json.dumps(r.as_json()) + "\n")
        return lines


@dataclass
class ClassifyReport:
    """Everything one run found: flows (in order of first packet), damage, counts."""

    flows: list[FlowResult]
    stops: list[CaptureStop]
    packets: int = 0
    skipped: int = 0  # frames that were not IP or were cut short
    evicted: int = 0  # flows ended early because the flow table was full
    gaps: int = 0
    budget_evicted: int = 0  # flows the engine gave up on to stay within max_memory
    max_memory: int = MAX_MEMORY
    notes: list[str] = field(default_factory=list)  # e.g. a parse worker that died (results unchanged)


_ORDER = operator.attrgetter("order")  # (the report's sort key)


class _Work:
    """A flow the engine still looks at."""

    __slots__ = ("st", "streams", "client_dir", "budget", "held")

    def __init__(self, st: Any, streams: list[TcpStream] | None, client_dir: int, budget: int) -> None:
        self.st = st
        self.streams = streams
        self.client_dir = client_dir
        self.budget = [budget, budget]
        self.held = 0  # estimate of the bytes the engine keeps for this flow


class Classifier:
    """Runs packets through a flow table and an engine; collects `FlowResult`s.

    ``engine`` is an `nfkit.nfgrep.engine.Engine` (or anything with its
    ``new_flow``/``feed`` interface).  Feed it captures with `read()` (or
    frames with `packet()`), then call `finish()`.
    """

    def __init__(self, engine: Any, max_flows: int = 1 << 20, timeouts: Timeouts | None = None,
                 max_inspect: int = 65536, reassembler: Reassembler | None = None,
                 max_memory: int = MAX_MEMORY, lazy: bool = True,
                 on_flow: Callable[[FlowResult], None] | None = None, flow_major: bool = True,
                 jobs: int = 1) -> None:
        if max_memory < FLOW_BYTES + ACTIVE_BYTES:
            raise ValueError(f"classify: max_memory must be at least {FLOW_BYTES + ACTIVE_BYTES} bytes")
        self.engine = engine
        self.max_memory = max_memory
        # tracked flows alone always fit in the budget
        self.table = FlowTable(max_flows=max(1, min(max_flows, (max_memory - ACTIVE_BYTES) // FLOW_BYTES)),
                               timeouts=timeouts, on_end=self._ended)
        self.reassembler = reassembler or Reassembler(max_total=min(64 << 20, max_memory // 4))
        self.max_inspect = max_inspect
        # lazy: the engine starts on a flow's first payload (needs engine.expecting());
        # otherwise at the flow's first packet (nfgrep test shows every flow)
        self.lazy = lazy
        # called with each flow as the engine decides it (its counts so far), or as it
        # ends when it never was: a live run prints flows as they come
        self.on_flow = on_flow
        # `read` may walk a piece's undecided flows one after the other (`_BulkState._walk`)
        self.flow_major = flow_major
        # processes a pcap file's `read` may use: 1 this one alone; more, parse workers
        # (`nfkit.nfgrep.pipeline`, for files big enough to pay); 0 one per core
        self.jobs = jobs
        self.notes: list[str] = []  # what a run did otherwise than asked (a parse worker died)
        self.budget_evicted = 0
        self._held = 0  # sum of _Work.held
        self._isn = (array("L"), array("L"))  # per slot: the SYN's sequence number, per side
        self.results: list[FlowResult] = []
        self.stops: list[CaptureStop] = []
        self.packets = 0
        self.skipped = 0
        # the index of the packet being tracked: the engine dates expectations with it, and a
        # flow sees those announced before its first packet (so a walk may go flow by flow)
        self._clock = 0
        self._work: dict[int, _Work] = {}
        self._verdicts: dict[int, tuple[str | None, dict[str, str], list[str], bool]] = {}
        self._first = array("d")
        self._order = array("Q")
        self._marks = bytearray()  # per slot: _GAP, _GUESSED, _WAITING, ... (above)
        self._flows_seen = 0
        self._bulk: _BulkState | None = None  # while `read` walks a batch
        self._monotone = True  # no packet came earlier than one before it (`_batch`)
        self._latest = float("-inf")

    # -- per packet -----------------------------------------------------------

    def packet(self, ts: float, link: int, frame: bytes) -> int:
        """Account for one captured frame (the per-packet path; `read` takes frames in batches).

        Returns ``slot * 2 + direction`` when the frame's flow no longer needs
        the engine, else -1.
        """
        pkt = decode(link, frame)
        self._clock = self.packets
        self.packets += 1
        if pkt is None:
            self.skipped += 1
            return -1
        code = self._track(ts, pkt)
        return code if self._decided(code >> 1) else -1

    def _decided(self, slot: int) -> bool:
        """Is the engine done with this flow (its packets need only the flow table)?"""
        return slot not in self._work and not self._marks[slot] & _WAITING

    def _track(self, ts: float, pkt: Decoded, code: int = -1) -> int:
        """One decoded packet through the flow table and, while undecided, the engine.

        ``code``: the packet was already counted by `FlowTable.step` (its
        flow is known); -2: its flow is known not to be in the table (and no
        sweep is due).  Returns ``slot * 2 + direction`` of the packet's flow.
        """
        proto, src, dst, sport, dport, flags, seq, payload, size = pkt
        if code < 0:
            table = self.table
            if code == -2:
                code = table.add(proto, src, dst, sport, dport, ts, size, flags)
            else:
                code = table.track(proto, src, dst, sport, dport, ts, size, flags)
            if table.created:
                self._created(code >> 1, proto, ts, flags, sport, dport)
        return self._follow(code, proto, flags, seq, payload)

    def _follow(self, code: int, proto: int, flags: int, seq: int, payload: bytes) -> int:
        """`_track` of a packet its flow table counted already (``code``: its flow's slot * 2
        + direction): reassembly and the engine while the flow is undecided.  Returns ``code``."""
        slot = code >> 1
        work = self._work.get(slot)
        if work is None:
            marks = self._marks[slot]
            if not marks & _WAITING:
                return code
            d = (code & 1) ^ (1 if marks & _CLIENT_REPLY else 0)
            if not payload:
                if flags & TH_SYN and proto == IPPROTO_TCP and not marks & _SYN_SEEN[d]:
                    # a stream starts after its SYN: keep only the number until payload comes
                    self._isn[d][slot] = seq
                    self._marks[slot] = marks | _SYN_SEEN[d]
                if not flags & _FIN_RST or proto != IPPROTO_TCP:
                    return code
            if payload and not flags & _FIN_SYN_RST and FIRST_FEED:
                # the common flow: its first payload, often all the engine needs
                return self._first_payload(slot, proto, d, marks, flags, seq, payload, code)
            work = self._start(slot, proto, False)
            if work is None:
                return code
        else:
            d = (code & 1) ^ work.client_dir  # 0: client to server
            # least recently fed last: the budget gives up on the first ones
            del self._work[slot]
            self._work[slot] = work
        self._track_work(slot, work, d, flags, seq, payload)
        return code

    def _track_work(self, slot: int, work: _Work, d: int, flags: int, seq: int, payload: bytes,
                    fed: bool = False) -> None:
        """`_track` of a flow the engine looks at (``fed``: its bytes went to the engine
        already, in order, and through its stream)."""
        streams = work.streams
        if fed:
            data = payload
        elif streams is not None:
            if not payload and not flags & _FIN_SYN_RST:
                return
            stream = streams[d]
            gaps = stream.gaps
            data = stream.segment(seq, flags, payload)
            if stream.gaps != gaps:
                self._marks[slot] |= _GAP
                self._settle(slot, work)
                return
        else:
            data = payload
        if data:
            st = work.st
            if not fed:
                engine = self.engine
                engine.now = self._clock
                engine.feed(st, d, data)
            budget = work.budget
            budget[d] -= len(data)
            if st.done or (budget[0] <= 0 and budget[1] <= 0):
                self._settle(slot, work)
                return
            inspect = self.max_inspect
            held = min(inspect - budget[0], ENGINE_WINDOW) + min(inspect - budget[1], ENGINE_WINDOW)
            if held != work.held:
                self._held += held - work.held
                work.held = held
                if self._used() > self.max_memory:
                    self._shed()
        elif streams is not None and self._used() > self.max_memory:
            self._shed()  # bytes past a hole wait in reassembly: they count too

    def _used(self) -> int:
        """The memory estimate the budget is checked against (see the module docstring)."""
        return (self.table.count * FLOW_BYTES + len(self._work) * ACTIVE_BYTES + self._held
                + self.reassembler.buffered)

    def _shed(self) -> None:
        """Give up on the flows idle the longest until the estimate fits the budget."""
        work = self._work
        while work and self._used() > self.max_memory:
            slot = next(iter(work))
            self._marks[slot] |= _EVICTED
            self.budget_evicted += 1
            self._settle(slot, work[slot])

    def _created(self, slot: int, proto: int, ts: float, flags: int, sport: int,
                 dport: int) -> None:
        table = self.table
        if len(self._first) <= slot:  # the per-slot arrays grow a few thousand slots at a time
            more = slot + 1 - len(self._first) + SLOTS_STEP
            self._first.extend(array("d", bytes(8 * more)))
            self._order.extend(array("Q", bytes(8 * more)))
            self._marks.extend(bytes(more))
            self._isn[0].extend(array("L", bytes(self._isn[0].itemsize * more)))
            self._isn[1].extend(array("L", bytes(self._isn[1].itemsize * more)))
        self._first[slot] = ts
        self._order[slot] = self._flows_seen
        self._flows_seen += 1
        marks = _GUESSED if proto == IPPROTO_TCP and not flags & TH_SYN else 0
        if self._work and self._used() > self.max_memory:  # one more tracked flow
            self._shed()
        if proto != IPPROTO_TCP and proto != IPPROTO_UDP:
            self._marks[slot] = marks
            return
        if table.state[slot] & CLIENT_IS_REPLY:
            marks |= _CLIENT_REPLY
        self._marks[slot] = marks | _WAITING
        # the table stores the tuple in this first packet's direction
        if not self.lazy or self.engine.expecting(
                "tcp" if proto == IPPROTO_TCP else "udp", sport if marks & _CLIENT_REPLY else dport,
                self._clock):
            self._start(slot, proto, True)

    def _first_payload(self, slot: int, proto: int, d: int, marks: int, flags: int, seq: int,
                       payload: bytes, code: int) -> int:
        """`_track` of a waiting flow's first payload packet (no SYN, FIN or RST; direction
        ``d``): the engine gets the bytes before the flow has streams or a `_Work`, and a
        flow it decides at once never gets them.  Returns ``code``.

        The same as starting the engine (`_start`) and going on in `_track`, when
        the bytes are in order (reassembly would hand them over whole) and one
        more flow for the engine stays within the budget (no flow is shed on
        the way); otherwise that is what is done.
        """
        if proto == IPPROTO_TCP and marks & _SYN_SEEN[d] and seq != (self._isn[d][slot] + 1) & 0xFFFFFFFF \
                or self._used() + ACTIVE_BYTES > self.max_memory:
            work = self._start(slot, proto, False)
            if work is not None:
                self._track_work(slot, work, d, flags, seq, payload)
            return code
        st = self._engine_flow(slot, proto, False, marks)
        if st is None:
            return code
        engine = self.engine
        engine.now = self._clock
        engine.feed(st, d, payload)
        if st.done:
            self._verdicts[slot] = (st.app, st.fields, st.chain, True)
            if self.on_flow is not None:
                self._report(slot)
            return code
        work = self._attach(slot, proto, st, marks)
        if work is None:  # (not reached: the budget was checked)
            return code
        if work.streams is not None:
            work.streams[d].segment(seq, flags, payload)  # in order: gives ``payload`` back
        self._track_work(slot, work, d, flags, seq, payload, fed=True)
        return code

    def _start(self, slot: int, proto: int, first: bool) -> _Work | None:
        """Start the engine on a waiting flow; None when it is decided at once.

        ``first``: at the flow's first packet, where an expectation may label
        it; later (lazy start) expectations were already looked up then.
        """
        marks = self._marks[slot]
        st = self._engine_flow(slot, proto, first, marks)
        if st is None:
            return None
        return self._attach(slot, proto, st, marks)

    def _engine_flow(self, slot: int, proto: int, first: bool, marks: int) -> Any:
        """The engine's state for a waiting flow (``marks`` its marks); None when it is decided
        at once (by an expectation)."""
        self._marks[slot] = marks & ~_WAITING
        _, src, dst, sport, dport = self.table.fields_of(slot)
        if marks & _CLIENT_REPLY:
            src, dst, sport, dport = dst, src, dport, sport
        transport = "tcp" if proto == IPPROTO_TCP else "udp"
        st = self.engine.new_flow(transport=transport, client_port=sport, server_port=dport,
                                  client_addr=address_text(src), server_addr=address_text(dst),
                                  expected=first, since=self._clock if first else None)
        if st.done:
            self._verdicts[slot] = (st.app, st.fields, st.chain, False)
            if self.on_flow is not None:
                self._report(slot)
            return None
        return st

    def _attach(self, slot: int, proto: int, st: Any, marks: int) -> _Work | None:
        """The flow's streams and `_Work` beside the engine's state ``st``; None when the
        budget gave it up at once."""
        client_dir = 1 if marks & _CLIENT_REPLY else 0
        streams = None
        if proto == IPPROTO_TCP:
            streams = [self.reassembler.stream(), self.reassembler.stream()]
            for d in (0, 1):
                if marks & _SYN_SEEN[d]:
                    streams[d].segment(self._isn[d][slot], TH_SYN, b"")
        self._work[slot] = _Work(st, streams, client_dir, self.max_inspect)
        if self._used() > self.max_memory:
            self._shed()
        return self._work.get(slot)

    def _settle(self, slot: int, work: _Work) -> None:
        """The engine is done with this flow: keep the verdict, drop the rest."""
        st = work.st
        self._verdicts[slot] = (st.app, st.fields, st.chain, True)
        if work.streams is not None:
            for s in work.streams:
                s.release()
        self._held -= work.held
        del self._work[slot]
        if self.on_flow is not None:
            self._report(slot)

    def _report(self, slot: int) -> None:
        """Hand the flow's decision, with its counts so far, to ``on_flow`` (once)."""
        app, fields, chain, _ = self._verdicts[slot]
        self._marks[slot] |= _REPORTED
        r = self._result(slot, app, dict(fields), list(chain))
        r.decided = self.table.last[slot]
        self.on_flow(r)  # type: ignore[misc]  # only called when set

    def _result(self, slot: int, app: str | None, fields: dict[str, str],
                chain: list[str]) -> FlowResult:
        """The flow in ``slot`` as reported, with its counts as they are now."""
        table = self.table
        proto, src, dst, sport, dport = table.fields_of(slot)
        marks = self._marks[slot]
        (p0, p1), (o0, o1) = table.packets, table.octets
        if table.state[slot] & CLIENT_IS_REPLY:
            client, server = endpoint_text(dst, dport), endpoint_text(src, sport)
            packets, octets = [p1[slot], p0[slot]], [o1[slot], o0[slot]]
        else:
            client, server = endpoint_text(src, sport), endpoint_text(dst, dport)
            packets, octets = [p0[slot], p1[slot]], [o0[slot], o1[slot]]
        # (positional: keywords cost a third of the record)
        return FlowResult(TRANSPORT_NAMES.get(proto) or str(proto), client, server, app, fields, packets,
                          octets, chain, self._first[slot], table.last[slot], bool(marks & _GUESSED),
                          bool(marks & _GAP), bool(marks & _EVICTED), self._order[slot])

    def _ended(self, slot: int, reason: str) -> None:
        if self._bulk is not None:
            self._bulk.ended(slot)
        work = self._work.get(slot)
        if work is not None:
            self._settle(slot, work)
        app, fields, chain, _ = self._verdicts.pop(slot, (None, {}, [], False))
        result = self._result(slot, app, fields, chain)
        self.results.append(result)
        if self.on_flow is not None and not self._marks[slot] & _REPORTED:
            self.on_flow(result)
        self._marks[slot] = 0

    def _flushed(self, slots: list[int]) -> None:
        """`_ended` of every flow left at the end of a run (``slots`` in the order the flow
        table ends them, `FlowTable.flush`): the same results, in one pass."""
        if self.on_flow is not None or self._bulk is not None:
            for slot in slots:  # (reports interleave with settling: one flow after the other)
                self._ended(slot, END_FLUSHED)
            return
        for slot, w in list(self._work.items()):  # (in any order: nothing is reported)
            self._settle(slot, w)
        marks, pop, append, result = self._marks, self._verdicts.pop, self.results.append, self._result
        for slot in slots:
            app, fields, chain, _ = pop(slot, (None, {}, [], False))
            append(result(slot, app, fields, chain))
            marks[slot] = 0

    # -- whole files ---------------------------------------------------------------

    def read(self, path: str | os.PathLike[str],
             progress: Callable[[int, int], None] | None = None,
             ahead: pipeline.Ahead | None = None) -> CaptureReader:
        """Classify every packet of one capture; damage is recorded in ``stops``.

        Frames are taken in batches of `BATCH` (see `_batch`): their headers
        are parsed at once (`nfkit.nfgrep.batch`), and packets of flows the
        engine is done with are counted in bulk.  The result is the one
        `read_each` (every frame through `packet`) gives.  ``ahead``: the
        file opened and its parse workers started (`pipeline.start`).
        """
        mapped: tuple[bytes, int, struct.Struct, float] | None
        if ahead is not None:
            reader, mapped = ahead.reader, ahead.mapped
        else:
            reader = CaptureReader(path)
            mapped = reader.pcap_map()
        if mapped is None:
            frames: list[tuple[float, int, bytes]] = []
            for frame in reader:
                frames.append(frame)
                if len(frames) >= BATCH:
                    self._batch(from_frames(frames))
                    frames = []
                    if progress is not None:
                        progress(reader.position, reader.size)
            if frames:
                self._batch(from_frames(frames))
        else:
            data, link, rec, divisor = mapped
            pos, n = self._read_pcap(reader, data, link, rec, divisor, progress, ahead)
            reader.packets = n
            reader.position = pos
            try:
                data.close()  # type: ignore[attr-defined]  # the mapping (every frame used was copied out)
            except BufferError:
                pass
        if progress is not None:
            progress(reader.size, reader.size)
        if reader.stop is not None:
            self.stops.append(reader.stop)
        return reader

    def _read_pcap(self, reader: CaptureReader, data: bytes, link: int, rec: struct.Struct,
                   divisor: float, progress: Callable[[int, int], None] | None,
                   ahead: pipeline.Ahead | None = None) -> tuple[int, int]:
        """Walk a mapped pcap file batch by batch; returns (position, records read).

        With parse workers (``ahead``'s, or with ``jobs`` other than 1 for a
        file of `pipeline.PIPELINE_MIN` bytes or more, started here) the
        batches are found and parsed ahead of the walk
        (`nfkit.nfgrep.pipeline`); the walk takes them in the same order.
        """
        items: Iterator[pipeline.Parsed | tuple[int, int, int]]
        if ahead is not None:
            front = ahead.pipeline.front
            items = ahead.pipeline.batches(self.notes)
        else:
            front = pipeline.PcapFront(data, link, rec, divisor, BATCH, SPAN, reader.path)
            workers = pipeline.workers_for(self.jobs) if len(data) >= pipeline.PIPELINE_MIN else 0
            items = pipeline.parsed(front, workers, self.notes) if workers else front.batches()
        total = 0
        released = 0
        try:
            for item in items:
                assert isinstance(item, pipeline.Parsed)
                b, after = item.batch, item.after
                del item  # a worker reuses the batch's slot once nothing here holds it
                self._batch(b)
                total += b.n
                del b
                # the pages read so far are not needed again: resident memory stays a batch's
                done = after // mmap.PAGESIZE * mmap.PAGESIZE
                if done > released:
                    data.madvise(mmap.MADV_DONTNEED, released, done - released)  # type: ignore[attr-defined]
                    released = done
                if progress is not None:
                    progress(after, reader.size)
        finally:
            items.close()  # type: ignore[attr-defined]
        pos = front.pos
        if pos != len(data):
            reader.packets = total
            reader.stopped_at(data, pos, rec)
        return pos, total

    def feed(self, frames: Sequence[tuple[float, int, bytes]]) -> None:
        """Classify frames given as ``(timestamp, link type, frame)`` (a live ring's, say)."""
        if frames:
            self._batch(from_frames(frames))

    def read_each(self, path: str | os.PathLike[str]) -> CaptureReader:
        """Classify one capture frame by frame through `packet` (the reference for `read`)."""
        reader = CaptureReader(path)
        for ts, link, frame in reader:
            self.packet(ts, link, frame)
        if reader.stop is not None:
            self.stops.append(reader.stop)
        return reader

    def _batch(self, b: Batch) -> None:
        """Classify one batch of frames, in order, with the result of `packet` per frame.

        The batch is cut where the flow table would sweep for timeouts (so
        no flow ends by timeout inside a piece).  In each piece, the packets
        of a flow the engine is done with are counted in bulk up to a SYN
        that reopens its tuple: numpy sums per flow and direction, the TCP
        state changes among them (FIN, RST, the ACKs that answer them, the
        reply flag) applied in order for all such flows at once (`_scan`),
        then its state, timeout class, last-seen time and place in the idle
        order are set as the packets would have left them.  Every other
        packet goes through `_track` in capture order; when one leaves its
        flow decided, the flow's next packets of the piece are counted in
        bulk the same way (after the walk, all such flows at once).
        """
        n = b.n
        self.packets += n
        valid = np.flatnonzero(b.valid)
        self.skipped += n - len(valid)
        if not len(valid):
            return
        table = self.table
        vts = b.ts[valid]
        peak = np.maximum.accumulate(vts)
        # times never went back so far: the table's idle lists are in time order (`quiet_until`)
        self._monotone = self._monotone and float(vts[0]) >= self._latest and bool((peak == vts).all())
        self._latest = max(self._latest, float(peak[-1]))
        sweeps = []
        at = 0
        due = table._next_sweep
        while True:
            j = at + int(np.searchsorted(peak[at:], due, side="left"))
            if j >= len(valid):
                break
            sweeps.append(j)
            due = float(vts[j]) + table.sweep_interval
            at = j + 1
        times = vts[sweeps].tolist()
        ends = [*sweeps[1:], len(valid)]  # where the piece begun at each sweep would end
        bulk = _BulkState(self, b)
        self._bulk = bulk
        try:
            lo, k, interval = 0, 0, table.sweep_interval
            while lo < len(valid):
                if k < len(sweeps) and sweeps[k] == lo:
                    table._next_sweep = times[k] + interval
                    table.expire(times[k])
                    k += 1
                if self._monotone and k < len(sweeps):
                    # sweeps that can end no flow are no cut: the piece goes on over them (up to
                    # PIECE_MAX frames), only their schedule is kept
                    quiet = table.quiet_until(float(vts[lo])) - QUIET_MARGIN
                    skipped = k
                    while k < len(sweeps) and times[k] < quiet and ends[k] - lo <= PIECE_MAX:
                        k += 1
                    if k > skipped:
                        table._next_sweep = times[k - 1] + interval
                hi = sweeps[k] if k < len(sweeps) else len(valid)
                bulk.piece(valid[lo:hi])
                lo = hi
        finally:
            self._bulk = None

    def finish(self) -> ClassifyReport:
        """End every flow and return the report (flows in order of first packet)."""
        self.table.flush(self._flushed)
        flows = sorted(self.results, key=_ORDER)
        return ClassifyReport(flows=flows, stops=list(self.stops), packets=self.packets,
                              skipped=self.skipped, evicted=self.table.evicted,
                              gaps=self.reassembler.gaps, budget_evicted=self.budget_evicted,
                              max_memory=self.max_memory, notes=list(self.notes))


_TCP_NEXT = np.array(TCP_NEXT, dtype=np.int64)
# TCP_NEXT with two more columns per state byte: a packet of another transport, each way
# (the reply flag is its only change)
_SCAN_STRIDE = TCP_STRIDE + 2
_SCAN_NEXT = np.concatenate(
    [_TCP_NEXT.reshape(256, TCP_STRIDE), np.arange(256)[:, None],
     (np.arange(256) | REPLIED)[:, None]], axis=1).ravel()
_TCP_EVENT = np.array(TCP_EVENT, dtype=np.int64)
_ZERO = np.zeros(1, dtype=np.intp)  # the start of the only lane


def _row_frame(buf: bytes, slow: dict[int, Decoded], i: int, proto: int, at: int, alen: int,
               sport: int, dport: int, flags: int, seq: int, ps: int, pe: int, size: int) -> Decoded:
    """Frame ``i`` as `Batch.decoded` gives it, from a walk's row of its values (its
    addresses at ``at``, ``alen`` bytes each; its payload ``ps:pe``)."""
    pkt = slow.get(i)
    if pkt is None:
        pkt = (proto, buf[at:at + alen], buf[at + alen:at + 2 * alen], sport, dport, flags, seq,
               buf[ps:pe] if pe > ps else b"", size)
    return pkt


class _BulkState:
    """What `Classifier._batch` knows of one batch: each flow key's slot, and the bulk counts.

    Owns the bookkeeping that makes bulk counting give what packet-by-packet
    counting gives: ``slot_of[g]`` is the flow-table slot of key group ``g``
    (-2 not looked up yet, -1 no flow), ``flip[g]`` turns a frame's
    orientation into the flow's direction, and per piece the frame index of
    each slot's last packet counted in bulk and through `_track`.  What the
    walk asks of every frame (TCP event, SYN, lone ACK, read by the engine)
    is taken once for the whole batch, a piece gathering its frames' part.
    """

    def __init__(self, owner: Classifier, b: Batch) -> None:
        self.owner = owner
        self.b = b
        self.base = owner.packets - b.n  # the packet index of the batch's frame 0
        self.slot_of = [-2] * b.ngroups
        self.flip = [0] * b.ngroups
        self.group_of: dict[int, int] = {}
        self.careful_last: dict[int, int] = {}
        self.bulk_last: dict[int, int] = {}
        tcp = b.proto == IPPROTO_TCP
        event = _TCP_EVENT[b.flags & 0xFF]
        # a frame's column in `_SCAN_NEXT` (its direction added): its TCP event, or not TCP
        self.scan_code = np.where(tcp, event * 2, TCP_STRIDE)
        self.syn = tcp & (event == TcpEvent.SYN)
        self.ack = ~tcp | (event == TcpEvent.ACK)  # a frame no state but the reply flag sees
        reads = (b.pend > b.pstart) | ((b.flags & _FIN_SYN_RST) != 0)  # the engine reads it
        if b.slow:
            reads[np.fromiter(b.slow, dtype=np.int64)] = True
        self.reads = reads

    def ended(self, slot: int) -> None:
        """A flow ends mid-piece: its last-seen time as its packets left it; its key is free."""
        bi = self.bulk_last.pop(slot, -1)
        if bi > self.careful_last.pop(slot, -1):
            self.owner.table.last[slot] = float(self.b.ts[bi])
        g = self.group_of.pop(slot, None)
        if g is not None and self.slot_of[g] == slot:
            self.slot_of[g] = -1

    def _lookup(self, groups: list[int]) -> None:
        """Look the flows of key groups ``groups`` up in the table (by each one's first frame),
        in that order; a frame's columns taken for all of them at once."""
        b = self.b
        firsts = b.first[groups]
        find, slot_of, slow, buf = self.owner.table.find, self.slot_of, b.slow, b.buf
        for g, i, proto, sport, dport, at, alen, o in zip(
                groups, firsts.tolist(), b.proto[firsts].tolist(), b.sport[firsts].tolist(),
                b.dport[firsts].tolist(), b.addr_at[firsts].tolist(),
                np.where(b.v6[firsts], 16, 4).tolist(), b.orient[firsts].tolist(), strict=True):
            p = slow.get(i)
            if p is None:
                code = find(proto, buf[at:at + alen], buf[at + alen:at + 2 * alen], sport, dport)
            else:
                code = find(p[0], p[1], p[2], p[3], p[4])
            if code < 0:
                slot_of[g] = -1
            else:
                self._placed(g, code, o)

    def _placed(self, g: int, code: int, o: int) -> int:
        """Key group ``g`` is the flow of table ``code`` (slot and direction; ``o`` the
        orientation of the frame that gave it): its slot, now the group's."""
        s = code >> 1
        if self.slot_of[g] != s:
            self.slot_of[g] = s
            self.group_of[s] = g
        self.flip[g] = (code & 1) ^ o
        return s

    def _count(self, slots: list[int], lanes: np.ndarray | None, frames: np.ndarray,
               direction: np.ndarray, starts: np.ndarray | None = None) -> None:
        """Count packets in bulk: ``frames[k]`` is a packet of flow ``slots[lanes[k]]`` in ``direction[k]``.

        Lanes are numbered from 0 in ascending order, each non-empty, each
        lane's frames in capture order; ``starts`` (when the caller has it)
        is where each lane begins in ``frames``.  The sums are taken lane by
        lane over the contiguous lanes (`np.add.reduceat`) and added to the
        table's counters through numpy views of them.
        """
        table = self.owner.table
        n = len(frames)
        if starts is None:
            assert lanes is not None
            starts = _ZERO if len(slots) == 1 else np.flatnonzero(np.r_[True, lanes[1:] != lanes[:-1]])
        ends = np.append(starts[1:], n)
        sizes = self.b.size[frames]
        total = ends - starts
        n1 = np.add.reduceat(direction, starts)
        b_all = np.add.reduceat(sizes, starts)
        b1 = np.add.reduceat(sizes * direction, starts)
        at = np.array(slots, dtype=np.intp)
        for column, add in ((table.packets[0], total - n1), (table.packets[1], n1),
                            (table.octets[0], b_all - b1), (table.octets[1], b1)):
            np.add.at(np.frombuffer(column, dtype=np.uint64), at, add.astype(np.uint64))
        bulk_last = self.bulk_last
        get = bulk_last.get
        for s, i in zip(slots, frames[ends - 1].tolist(), strict=True):
            if i > get(s, -1):
                bulk_last[s] = i

    def _scan(self, lanes: np.ndarray, start: np.ndarray, frames: np.ndarray,
              direction: np.ndarray, ordered: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """How far the packets of flows the engine is done with can be counted in bulk.

        ``frames`` (in capture order) belong to lanes (``lanes[k]`` is the
        lane of ``frames[k]``, a flow; ``direction`` its direction);
        ``start[l]`` is lane ``l``'s state byte (-1: not counted in bulk).
        The state changes of each lane's packets (TCP transitions, the
        reply flag) are applied in order, all lanes at once, one change per
        lane a round: a flow makes a few changes (its teardown), not one per
        packet.  Returns, per lane, the position in ``frames`` of its first
        packet that must be taken one by one (a SYN that reopens a closed
        tuple: the flow ends there; ``len(frames)`` when none) and the state
        byte its packets before that leave.  ``ordered``: ``lanes`` ascend (each
        lane's frames together), so a round finds each lane's first change
        without sorting.
        """
        n = len(frames)
        cur = start.copy()
        stop = np.full(len(start), n, dtype=np.int64)
        rest = np.flatnonzero(start[lanes] >= 0)
        if not len(rest):
            return stop, cur
        code = self.scan_code[frames[rest]] + direction[rest]
        ln = lanes[rest]
        while len(rest):
            was = cur[ln]
            nxt = _SCAN_NEXT[was * _SCAN_STRIDE + code]
            change = np.flatnonzero(nxt != was)
            if not len(change):
                break
            # each lane's first change (``change`` is in capture order)
            if ordered:
                moved = ln[change]
                edge = np.empty(len(moved), dtype=bool)
                edge[0] = True
                np.not_equal(moved[1:], moved[:-1], out=edge[1:])
                first = np.flatnonzero(edge)
                hit = moved[first]
            else:
                hit, first = np.unique(ln[change], return_index=True)
            at = change[first]
            new = nxt[at]
            reopen = new < 0
            stop[hit[reopen]] = rest[at[reopen]]
            cur[hit[~reopen]] = new[~reopen]
            # what is left: the packets after each changing lane's change
            after = np.full(len(start), n, dtype=np.int64)
            after[hit[~reopen]] = rest[at[~reopen]]
            keep = rest > after[ln]
            rest, code, ln = rest[keep], code[keep], ln[keep]
        return stop, cur

    def _bulk(self, frames: np.ndarray, groups: np.ndarray,
              start_state: np.ndarray) -> np.ndarray | None:
        """Count in bulk the frames of the groups with a start state (``start_state[g] >= 0``,
        the state byte of the group's flow), each up to its first frame that reopens the tuple
        (`_scan`); returns which of ``frames`` (in capture order) were counted (None: none)."""
        slot_of, table = self.slot_of, self.owner.table
        n = len(frames)
        sel = np.flatnonzero(start_state[groups] >= 0)
        if not len(sel):
            return None
        frames, groups = frames[sel], groups[sel]
        direction = self.b.orient[frames] ^ np.array(self.flip, dtype=np.int64)[groups]
        stop, end_state = self._scan(groups, start_state, frames, direction)
        counted = np.arange(len(frames)) < stop[groups]
        for g in np.flatnonzero(end_state != start_state).tolist():
            table.set_state(slot_of[g], int(end_state[g]))
        bulk = None
        if counted.any():
            bg = groups[counted]
            bf = frames[counted]
            bd = direction[counted]
            order = stable_order(bg, self.b.ngroups)
            bg, bf, bd = bg[order], bf[order], bd[order]
            new = np.ones(len(bg), dtype=bool)
            new[1:] = bg[1:] != bg[:-1]
            starts = np.flatnonzero(new)
            self._count([slot_of[g] for g in bg[starts].tolist()], None, bf, bd, starts)
            bulk = np.zeros(n, dtype=bool)
            bulk[sel[counted]] = True
        return bulk

    def piece(self, frames: np.ndarray) -> None:
        """Classify the valid frames ``frames`` (in capture order; no timeout sweep among them)."""
        owner, b = self.owner, self.b
        table = owner.table
        state = table.state
        slot_of = self.slot_of
        groups = b.group[frames]
        # (np.unique would import numpy.ma, ~8 ms, to ask whether ``groups`` is masked)
        counts = np.bincount(groups, minlength=b.ngroups)
        present = np.flatnonzero(counts).tolist()
        start_state = np.full(b.ngroups, -1, dtype=np.int64)
        unknown = [g for g in present if slot_of[g] == -2]
        if unknown:
            self._lookup(unknown)
        for g in present:
            s = slot_of[g]
            if s >= 0 and owner._decided(s):
                start_state[g] = state[s]
        # a full table evicts the longest idle flow: then every packet goes the careful way
        bulk_ok = table.count + len(frames) < table.max_flows
        counted = self._bulk(frames, groups, start_state) if bulk_ok else None
        if counted is None:
            self._walk(frames, bulk_ok, groups, counts)
        else:
            self._walk(frames[~counted], bulk_ok)
        # last-seen times and the idle order as the packets left them
        last = table.last
        touched = dict(self.careful_last)
        bulk_last = self.bulk_last
        at = np.fromiter(bulk_last.values(), dtype=np.intp, count=len(bulk_last))
        for (s, i), t in zip(bulk_last.items(), b.ts[at].tolist(), strict=True):
            if i > touched.get(s, -1):
                last[s] = t
                touched[s] = i
        tails, tclass = table._tails, table.tclass
        for s in sorted(touched, key=touched.__getitem__):
            if tails[tclass[s]] != s:
                table.touch(s)
        self.careful_last.clear()
        self.bulk_last.clear()

    def _flow_major_fits(self, frames: np.ndarray) -> bool:
        """May the walk of ``frames`` go flow by flow and give what capture order gives?

        Only what one flow does to the others depends on the order: an
        expectation (dated, see the engine), and the bounds.  Those are safe
        when no bound can be reached in this piece: even if every frame
        started a flow and its engine and every byte stayed held and
        buffered, the memory budget and reassembly's total would not be
        exceeded.  A caller told of each decision as it comes (``on_flow``)
        gets them in capture order.
        """
        owner = self.owner
        if not owner.flow_major or owner.on_flow is not None:
            return False
        ip_bytes = int(self.b.size[frames].sum())  # at least the payload of each frame
        reassembler = owner.reassembler
        return (owner._used() + len(frames) * (FLOW_BYTES + ACTIVE_BYTES) + 2 * ip_bytes
                <= owner.max_memory
                and reassembler.buffered + ip_bytes <= reassembler.max_total)

    def _walk(self, frames: np.ndarray, bulk_ok: bool, groups: np.ndarray | None = None,
              counts: np.ndarray | None = None) -> None:
        """Frames one by one through `_track`; a flow decided on the way goes to bulk counting.

        The packets of a flow decided on the way that follow in the piece are
        counted in bulk: when none of them is a SYN (none can reopen the
        tuple), after the walk, every such flow at once (`_defer`); else at
        once, up to the SYN that reopens (`_scan`).  Flow by flow
        (`_walk_flows`) when `_flow_major_fits`, else in capture order.
        ``groups`` and ``counts``: the frames' key groups and the frames per
        group, when the caller has them.
        """
        owner, b = self.owner, self.b
        if not len(frames):
            return
        if groups is None or counts is None:
            groups = b.group[frames]
            counts = np.bincount(groups, minlength=b.ngroups)
        order = stable_order(groups, b.ngroups)
        by_group = frames[order]
        # per frame: where its group ends in ``order`` (a count, not a search)
        group_ends = np.cumsum(counts)
        ends = group_ends[groups]
        rank = np.empty(len(frames), dtype=np.int64)
        rank[order] = np.arange(len(frames))
        # per frame: does a SYN follow in its group (one that could reopen the tuple)?
        syn = self.syn[frames]
        last_syn = np.full(b.ngroups, -1, dtype=np.int64)
        np.maximum.at(last_syn, groups[syn], rank[syn])
        if (last_syn > group_ends - counts).any():
            syn_ahead = last_syn[groups] > rank
        else:
            syn_ahead = np.zeros(len(frames), dtype=bool)  # no SYN but a group's first frame
        run_end: dict[int, int] = {}
        deferred: list[tuple[int, int, int, int]] = []  # (slot, group, first rank, end rank)
        track, decided, step, work = owner._track, owner._decided, owner.table.step, owner._work
        slot_of, flip, careful_last, placed = self.slot_of, self.flip, self.careful_last, self._placed
        orient, buf, slow, base = b.orient, b.buf, b.slow, self.base
        counted = np.zeros(b.n, dtype=bool)  # frames of a run counted in bulk

        def careful(i: int, g: int, r: int, end: int, ahead: bool, proto: int, sport: int,
                    dport: int, flags: int, seq: int, ps: int, pe: int, size: int, at: int,
                    alen: int, o: int, ts: float) -> int:
            """One frame; 0, or (its flow decided) 1 when the flow's next frames here are
            counted or deferred, 2 when also marked in ``counted`` (worth a new slice)."""
            stop = run_end.get(g)
            if stop is not None and i < stop:
                return 0
            s = slot_of[g]
            code = -1
            if s >= 0:
                code = step(s, o ^ flip[g], proto, ts, size, flags)
            if code < 0 or not decided(s):
                if code >= 0 and pe <= ps and not flags & _FIN_SYN_RST and proto in _STREAMED \
                        and i not in slow:
                    # no payload, no SYN, FIN or RST: to an undecided flow the packet is only
                    # its latest (``_track`` would do no more than this)
                    w = work.pop(s, None)
                    if w is not None:
                        work[s] = w
                    careful_last[s] = i
                    return 0
                pkt = _row_frame(buf, slow, i, proto, at, alen, sport, dport, flags, seq, ps, pe, size)
                owner._clock = base + i
                s = placed(g, track(ts, pkt, code), o)
            careful_last[s] = i
            if not bulk_ok or end - r <= 1 or not decided(s):
                return 0
            if not ahead:
                deferred.append((s, g, r + 1, end))
                run_end[g] = b.n
                if end - r > RESLICE:
                    counted[by_group[r + 1:end]] = True
                    return 2
                return 1
            if end - r > RUN_MIN:
                rest = by_group[r + 1:end]
                direction = orient[rest] ^ flip[g]
                was = owner.table.state[s]
                upto, now = self._scan(np.zeros(len(rest), dtype=np.int64),
                                       np.array([was], dtype=np.int64), rest, direction)
                q = int(upto[0])
                if q:
                    self._count([s], np.zeros(q, dtype=np.int64), rest[:q], direction[:q])
                    if int(now[0]) != was:
                        owner.table.set_state(s, int(now[0]))
                    run_end[g] = int(rest[q]) if q < len(rest) else b.n
                    counted[rest[:q]] = True
                    return 2 if q >= RESLICE else 1
            return 0

        extra = (groups, rank, ends, syn_ahead)
        if bulk_ok and self._flow_major_fits(frames):
            self._walk_flows(frames, extra, order, syn, careful)
        else:
            # columns go to Python lists a slice at a time, without the frames counted meanwhile
            lo = 0
            while lo < len(frames):
                todo = np.arange(lo, min(lo + WALK_SLICE, len(frames)))
                lo = todo[-1] + 1
                todo = todo[~counted[frames[todo]]]
                at_frames = frames[todo]
                for k, row in enumerate(zip(at_frames.tolist(), *(c[todo].tolist() for c in extra),
                                            *b.columns(at_frames), strict=True)):
                    if careful(*row) == 2:  # the slice's lists hold many counted frames
                        lo = int(todo[k]) + 1
                        break
        if deferred:
            self._defer(deferred, by_group)

    def _walk_flows(self, frames: np.ndarray, extra: tuple[np.ndarray, ...], order: np.ndarray,
                    syn: np.ndarray, careful: Callable[..., int]) -> None:
        """`_walk` flow by flow: each flow's frames one after the other, flows in the order of
        their first frame.

        A flow begins only at its key's first frame in the piece or at a SYN
        (a reopened tuple), so the frames of each key are cut at every SYN
        into units, and the units taken in the order of their first frame:
        flows are created in capture order and each flow's frames come in
        their order; the engine's expectations are dated (`Engine.now`), so
        what one flow announces reaches only the flows begun after it.

        A key with no SYN after its first frame here holds one flow: only its
        lead (the frame that creates the flow, or a SYN that may reopen it)
        goes through the flow table now, the engine gets the frames it reads
        (payload, SYN, FIN, RST) up to the decision, and every other frame of
        the key is counted in bulk after the walk (`_bulk`).  Keys with a SYN
        later go frame by frame (``careful``).  Columns become Python lists
        for each unit's first `UNIT_HEAD` frames at once, the rest of a unit
        a slice at a time when it needs them.
        """
        owner, b = self.owner, self.b
        groups = extra[0]
        n = len(frames)
        sorted_groups = groups[order]
        begins = np.empty(n, dtype=bool)  # a group's first frame (in ``order``)
        begins[0] = True
        begins[1:] = sorted_groups[1:] != sorted_groups[:-1]
        syn_sorted = syn[order]
        starts = np.flatnonzero(syn_sorted | begins)
        lengths = np.diff(np.append(starts, n))
        by_first = stable_order(order[starts], n)
        if (by_first[1:] > by_first[:-1]).all():
            visit = order  # the units are in the order of their first frame already
        else:
            starts, lengths = starts[by_first], lengths[by_first]
            visit = order[np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(n)]
        firsts = order[begins]  # each group's first frame
        lead = np.zeros(n, dtype=bool)
        lead[firsts[(np.array(self.slot_of, dtype=np.int64)[groups[firsts]] < 0) | syn[firsts]]] = True
        reopened = sorted_groups[syn_sorted & ~begins]  # keys with a SYN after their first frame
        if len(reopened):
            syn_later = np.zeros(b.ngroups, dtype=bool)
            syn_later[reopened] = True
            one = ~syn_later[groups]
            keep = (~one | lead | self.reads[frames])[visit]
        else:
            one = np.ones(n, dtype=bool)  # (most pieces)
            keep = (lead | self.reads[frames])[visit]
        kept = np.add.reduceat(keep, np.cumsum(lengths) - lengths, dtype=np.intp)  # per unit
        visit = visit[keep]
        if len(visit):
            bounds = np.r_[0, np.cumsum(kept[kept > 0])]  # where each unit begins in ``visit``
            heads = np.minimum(np.diff(bounds), UNIT_HEAD)
            head_at = np.repeat(bounds[:-1], heads) + (np.arange(heads.sum()) - np.repeat(
                np.cumsum(heads) - heads, heads))
            rows = self._rows(frames, extra, one, lead, visit[head_at])
            track, follow, decided = owner._track, owner._follow, owner._decided
            slot_of, flip, careful_last, placed = self.slot_of, self.flip, self.careful_last, \
                self._placed
            buf, slow, base = b.buf, b.slow, self.base
            taken = 0
            for u_lo, u_hi, head in zip(bounds[:-1].tolist(), bounds[1:].tolist(), heads.tolist(),
                                        strict=True):
                part = rows[taken:taken + head]
                taken += head
                at_place = u_lo + head
                while True:
                    done = False
                    for (i, g, r, end, ahead, single, leads, proto, sport, dport, flags, seq, ps, pe,
                         size, at, alen, o, ts) in part:
                        if not single:
                            if careful(i, g, r, end, ahead, proto, sport, dport, flags, seq, ps, pe,
                                       size, at, alen, o, ts):
                                done = True
                                break
                            continue
                        owner._clock = base + i
                        if leads:
                            pkt = _row_frame(buf, slow, i, proto, at, alen, sport, dport, flags, seq,
                                             ps, pe, size)
                            # a key found in no flow (`_lookup`) begins one: no lookup again
                            s = placed(g, track(ts, pkt, -2 if slot_of[g] == -1 else -1), o)
                            careful_last[s] = i
                        else:  # counted in bulk after the walk: only what the engine reads
                            s = slot_of[g]
                            p = slow.get(i)
                            follow(s * 2 + (o ^ flip[g]), proto, flags, seq,
                                   (buf[ps:pe] if pe > ps else b"") if p is None else p[7])
                        if decided(s):
                            done = True
                            break
                    if done or at_place >= u_hi:
                        break
                    more = visit[at_place:min(at_place + WALK_SLICE, u_hi)]
                    at_place += len(more)
                    part = self._rows(frames, extra, one, lead, more)
        # a key of one flow: every frame but its lead counted now, in bulk
        rest = (one & ~lead if len(reopened) else ~lead)[order]
        if rest.any():
            self._count_flows(frames[order][rest], sorted_groups[rest])
        work = owner._work
        if work:
            # the budget's idle order (least recently fed first) as capture order leaves it:
            # an undecided flow is the latest as of its last frame
            careful_last, bulk_last = self.careful_last, self.bulk_last
            latest = {s: max(careful_last.get(s, -1), bulk_last.get(s, -1))
                      for s in (*careful_last, *bulk_last) if s in work}
            for s in sorted(latest, key=latest.__getitem__):
                work[s] = work.pop(s)

    def _count_flows(self, frames: np.ndarray, groups: np.ndarray) -> None:
        """Count in bulk ``frames`` of keys holding one flow each (no SYN among them, so none
        reopens it), ordered by group and in capture order within one, as packet-by-packet
        counting would, from the state each flow is in now.

        Only the frames that may change a flow's state go through `_scan`: all
        but ACKs, and of each run of ACKs between them the first one each way
        (from any state a flow can reach, the later ACKs of a run change
        nothing: tests/flow/test_table.py checks it over the whole table).  A
        UDP flow's only change is its first reply.
        """
        b, table, slot_of = self.b, self.owner.table, self.slot_of
        new = np.ones(len(groups), dtype=bool)
        new[1:] = groups[1:] != groups[:-1]
        starts = np.flatnonzero(new)
        keys = groups[starts]
        slots = [slot_of[g] for g in keys.tolist()]
        flips = np.array(self.flip, dtype=np.int64)[keys]
        direction = b.orient[frames] ^ np.repeat(flips, np.diff(starts, append=len(groups)))
        was = np.array([table.state[s] for s in slots], dtype=np.int64)
        start = np.full(b.ngroups, -1, dtype=np.int64)  # `_scan`'s lanes: the groups
        start[keys] = was
        ack = self.ack[frames]
        breaks = ~ack | new  # each begins a run (of the ACKs after it; a flow's first frame begins one)
        # the first ACK of a run one way: the run's first ACK, and the first that turns the other way
        begins = ack.copy()
        begins[1:] &= breaks[1:] | ~ack[:-1]
        turn = np.zeros(len(frames), dtype=bool)
        turn[1:] = ack[1:] & (direction[1:] != direction[:-1])
        turn &= ~begins
        may = ~ack | begins
        at = np.flatnonzero(turn)
        if len(at):
            run = np.searchsorted(np.flatnonzero(breaks), at, side="right")
            first = np.ones(len(at), dtype=bool)
            first[1:] = run[1:] != run[:-1]
            may[at[first]] = True
        _, now = self._scan(groups[may], start, frames[may], direction[may], ordered=True)
        now = now[keys]
        self._count(slots, None, frames, direction, starts)
        for k in np.flatnonzero(now != was).tolist():
            table.set_state(slots[k], int(now[k]))

    def _rows(self, frames: np.ndarray, extra: tuple[np.ndarray, ...], one: np.ndarray,
              lead: np.ndarray, places: np.ndarray) -> list[tuple[Any, ...]]:
        """The walk's row per frame ``frames[p]`` for each p of ``places``: frame index, group,
        rank, group end, SYN ahead, one-flow key, lead, then `Batch.columns`."""
        at_frames = frames[places]
        groups, rank, ends, syn_ahead = extra
        return list(zip(at_frames.tolist(), groups[places].tolist(), rank[places].tolist(),
                        ends[places].tolist(), syn_ahead[places].tolist(), one[places].tolist(),
                        lead[places].tolist(), *self.b.columns(at_frames), strict=True))

    def _defer(self, runs: list[tuple[int, int, int, int]], by_group: np.ndarray) -> None:
        """Count the runs the walk left (no SYN among them): all flows at once, state changes too."""
        table = self.owner.table
        slots, gs, firsts, ends = (np.array(c, dtype=np.int64) for c in zip(*runs, strict=True))
        lengths = ends - firsts
        lanes = np.repeat(np.arange(len(runs)), lengths)
        starts = np.cumsum(lengths) - lengths
        rest = by_group[np.repeat(firsts - starts, lengths) + np.arange(len(lanes))]
        flips = np.array(self.flip, dtype=np.int64)[gs]
        direction = self.b.orient[rest] ^ flips[lanes]
        was = np.array([table.state[s] for s in slots.tolist()], dtype=np.int64)
        _, now = self._scan(lanes, was, rest, direction, ordered=True)
        slot_list = slots.tolist()
        self._count(slot_list, lanes, rest, direction, starts)
        for k in np.flatnonzero(now != was).tolist():
            table.set_state(slot_list[k], int(now[k]))


def classify(paths: Sequence[str | os.PathLike[str]], rules: Iterable[str] | None = None,
             progress: Callable[[str, int, int], None] | None = None, **options: Any) -> ClassifyReport:
    """Classify the flows of capture files read one after the other (one flow table).

    ``rules``: signature files or directories (None: the shipped library).
    Raises `InputError` for a file that is not a capture, or bad rules.
    """
    from nfkit.nfgrep.engine import Engine
    from nfkit.nfgrep.loader import load_rules

    jobs = options.get("jobs", 1)
    # the first file's parse workers start now: they parse while the rules load
    ahead = pipeline.start(paths[0], jobs, BATCH, SPAN) if paths and jobs != 1 else None
    try:
        engine = Engine(load_rules(list(rules) if rules else None))
        classifier = Classifier(engine, **options)
        for i, path in enumerate(paths):
            cb = None
            if progress is not None:
                name = os.fspath(path)
                cb = lambda done, total, _n=name: progress(_n, done, total)  # noqa: E731
            classifier.read(path, cb, ahead if i == 0 else None)
    finally:
        if ahead is not None:
            ahead.pipeline.close()
    return classifier.finish()
