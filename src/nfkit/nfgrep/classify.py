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

import ipaddress
import os
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nfkit.flow.table import IPPROTO_TCP, IPPROTO_UDP, TRANSPORT_NAMES, FlowTable, FlowTuple
from nfkit.flow.tcpstate import CLIENT_IS_REPLY, REPLIED, TCP_EVENT, TCP_NEXT, TCP_STRIDE, TH_SYN
from nfkit.flow.timeouts import Timeouts
from nfkit.nfgrep.capture import MAX_RECORD, CaptureReader, CaptureStop, decode
from nfkit.nfgrep.reassembly import Reassembler, TcpStream

_FIN_SYN_RST = 0x07
_FIN_RST = 0x05
# per-slot marks
_GAP, _GUESSED, _WAITING, _CLIENT_REPLY, _EVICTED = 1, 2, 4, 8, 16
_SYN_SEEN = (32, 64)  # the SYN of the client (0) / server (1) side was seen

FLOW_BYTES = 256     # bound per tracked flow, engine not started (measured ~165: docs/nfgrep.md)
ACTIVE_BYTES = 4096  # bound per flow the engine looks at (measured ~3,450), bytes held aside
MAX_MEMORY = 512 << 20  # default budget of a run
ENGINE_WINDOW = 16384  # bytes the engine keeps per direction at most (engine.WINDOW)


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

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"proto": self.proto, "client": self.client, "server": self.server,
                               "app": self.app or "unknown", "fields": self.fields,
                               "packets": self.packets, "bytes": self.bytes}
        if self.evicted:
            out["evicted"] = True
        return out


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


class _Work:
    """A flow the engine still looks at."""

    __slots__ = ("st", "streams", "client_dir", "budget", "held")

    def __init__(self, st: Any, streams: list[TcpStream] | None, client_dir: int, budget: int) -> None:
        self.st = st
        self.streams = streams
        self.client_dir = client_dir
        self.budget = [budget, budget]
        self.held = 0  # estimate of the bytes the engine keeps for this flow


def _addr(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


class Classifier:
    """Runs packets through a flow table and an engine; collects `FlowResult`s.

    ``engine`` is an `nfkit.nfgrep.engine.Engine` (or anything with its
    ``new_flow``/``feed`` interface).  Feed it captures with `read()` (or
    frames with `packet()`), then call `finish()`.
    """

    def __init__(self, engine: Any, max_flows: int = 1 << 20, timeouts: Timeouts | None = None,
                 max_inspect: int = 65536, reassembler: Reassembler | None = None,
                 max_memory: int = MAX_MEMORY, lazy: bool = True) -> None:
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
        self.budget_evicted = 0
        self._held = 0  # sum of _Work.held
        self._isn = (array("L"), array("L"))  # per slot: the SYN's sequence number, per side
        self.results: list[FlowResult] = []
        self.stops: list[CaptureStop] = []
        self.packets = 0
        self.skipped = 0
        self._work: dict[int, _Work] = {}
        self._verdicts: dict[int, tuple[str | None, dict[str, str], list[str], bool]] = {}
        self._first = array("d")
        self._order = array("Q")
        self._marks = bytearray()  # per slot: _GAP, _GUESSED, _WAITING, ... (above)
        self._flows_seen = 0
        # fast path: raw address+port bytes -> slot*2+direction, per TCP (0) and UDP (1),
        # only for flows the engine is done with; bounded, cleared whenever a flow ends
        self._recent: tuple[dict[bytes, int], dict[bytes, int]] = ({}, {})

    # -- per packet -----------------------------------------------------------

    def packet(self, ts: float, link: int, frame: bytes) -> int:
        """Account for one captured frame.

        Returns ``slot * 2 + direction`` when the frame's flow no longer needs
        the engine (so later packets may take the fast path), else -1.
        """
        pkt = decode(link, frame)
        self.packets += 1
        if pkt is None:
            self.skipped += 1
            return -1
        proto, src, dst, sport, dport, flags, seq, payload, size = pkt
        table = self.table
        code = table.track(proto, src, dst, sport, dport, ts, size, flags)
        slot = code >> 1
        if table.created:
            self._created(slot, proto, ts, flags, sport, dport)
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
                    return -1
            work = self._start(slot, proto, False)
            if work is None:
                return -1
        else:
            d = (code & 1) ^ work.client_dir  # 0: client to server
            # least recently fed last: the budget gives up on the first ones
            del self._work[slot]
            self._work[slot] = work
        streams = work.streams
        if streams is not None:
            if not payload and not flags & _FIN_SYN_RST:
                return -1
            stream = streams[d]
            gaps = stream.gaps
            data = stream.segment(seq, flags, payload)
            if stream.gaps != gaps:
                self._marks[slot] |= _GAP
                self._settle(slot, work)
                return -1
        else:
            data = payload
        if data:
            st = work.st
            self.engine.feed(st, d, data)
            budget = work.budget
            budget[d] -= len(data)
            if st.done or (budget[0] <= 0 and budget[1] <= 0):
                self._settle(slot, work)
                return -1
            inspect = self.max_inspect
            held = min(inspect - budget[0], ENGINE_WINDOW) + min(inspect - budget[1], ENGINE_WINDOW)
            if held != work.held:
                self._held += held - work.held
                work.held = held
                if self._used() > self.max_memory:
                    self._shed()
        return -1

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
        while len(self._first) <= slot:
            self._first.append(0.0)
            self._order.append(0)
            self._marks.append(0)
            self._isn[0].append(0)
            self._isn[1].append(0)
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
                "tcp" if proto == IPPROTO_TCP else "udp", sport if marks & _CLIENT_REPLY else dport):
            self._start(slot, proto, True)

    def _start(self, slot: int, proto: int, first: bool) -> _Work | None:
        """Start the engine on a waiting flow; None when it is decided at once.

        ``first``: at the flow's first packet, where an expectation may label
        it; later (lazy start) expectations were already looked up then.
        """
        marks = self._marks[slot]
        self._marks[slot] = marks & ~_WAITING
        t = self.table.tuple_of(slot)
        client_dir = 1 if marks & _CLIENT_REPLY else 0
        if client_dir:
            t = t.reversed()
        transport = "tcp" if proto == IPPROTO_TCP else "udp"
        st = self.engine.new_flow(transport=transport, client_port=t.sport, server_port=t.dport,
                                  client_addr=_addr(t.src), server_addr=_addr(t.dst),
                                  expected=first)
        if st.done:
            self._verdicts[slot] = (st.app, dict(st.fields), list(st.chain), False)
            return None
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
        self._verdicts[slot] = (st.app, dict(st.fields), list(st.chain), True)
        if work.streams is not None:
            for s in work.streams:
                s.release()
        self._held -= work.held
        del self._work[slot]

    def _ended(self, slot: int, reason: str) -> None:
        table = self.table
        self._recent[0].clear()  # a slot is about to be reused
        self._recent[1].clear()
        work = self._work.get(slot)
        if work is not None:
            self._settle(slot, work)
        app, fields, chain, _ = self._verdicts.pop(slot, (None, {}, [], False))
        t: FlowTuple = table.tuple_of(slot)
        st = table.state[slot]
        c = 1 if st & CLIENT_IS_REPLY else 0
        if c:
            t = t.reversed()
        s = 1 - c
        guessed = bool(self._marks[slot] & _GUESSED)
        self.results.append(FlowResult(
            proto=TRANSPORT_NAMES.get(t.proto, str(t.proto)),
            client=t.endpoint(0), server=t.endpoint(1), app=app, fields=fields,
            packets=[table.packets[c][slot], table.packets[s][slot]],
            bytes=[table.octets[c][slot], table.octets[s][slot]],
            chain=chain, first=self._first[slot], last=table.last[slot],
            guessed_sides=guessed, gap=bool(self._marks[slot] & _GAP),
            evicted=bool(self._marks[slot] & _EVICTED), order=self._order[slot]))
        self._marks[slot] = 0

    # -- whole files ---------------------------------------------------------------

    def read(self, path: str | os.PathLike[str],
             progress: Callable[[int, int], None] | None = None) -> CaptureReader:
        """Classify every packet of one capture; damage is recorded in ``stops``.

        Packets of flows the engine is done with, in plain IPv4 or IPv6 over
        Ethernet, SLL2 or raw IP, without SYN/FIN/RST and without a state
        change, take a fast path: a bounded cache from their address and port
        bytes to the flow's slot, then the counters.  Everything else goes
        through `packet()`; both paths count the same things.
        """
        reader = CaptureReader(path)
        packet = self.packet
        table = self.table
        last, state, tclass, tails = table.last, table.state, table.tclass, table._tails
        packets, octets = table.packets, table.octets
        tcp_cache, udp_cache = self._recent
        tcp_next, tcp_event, stride = TCP_NEXT, TCP_EVENT, TCP_STRIDE
        touch = table.touch
        n = fast = 0
        next_sweep = table._next_sweep
        mapped = reader.pcap_map()
        if mapped is not None:  # pcap: walk the mapped file here, no generator per packet
            buf, link, rec, divisor = mapped
            unpack_rec = rec.unpack_from
            rlen = rec.size
            limit = len(buf)
            pos = 24
            spans = None
        else:
            spans = reader.spans()
            pos = limit = rlen = 0
        while True:
            if spans is None:
                if pos + rlen > limit:
                    if pos != limit:
                        reader.packets = n
                        reader.stopped_at(buf, pos, rec)
                    break
                sec, frac, caplen, _wire = unpack_rec(buf, pos)
                start = pos + rlen
                end = start + caplen
                if caplen > MAX_RECORD or end > limit:
                    reader.packets = n
                    reader.stopped_at(buf, pos, rec)
                    break
                pos = end
                ts = sec + frac / divisor
            else:
                try:
                    ts, link, buf, start, end = next(spans)
                except StopIteration:
                    break
            n += 1
            if progress is not None and not n & 0x3FFF:
                progress(reader.position if spans is not None else pos, reader.size)
            try:
                if link == 1:
                    off = start + 14
                    et = buf[start + 12] << 8 | buf[start + 13]
                elif link == 276:
                    off = start + 20
                    et = buf[start] << 8 | buf[start + 1]
                elif link == 101:
                    off = start
                    et = 0x0800 if buf[start] >> 4 == 4 else 0x86DD
                else:
                    off = start
                    et = 0
                if et == 0x0800:
                    if buf[off] != 0x45 or buf[off + 6] & 0x3F or buf[off + 7]:
                        proto = -1
                    else:
                        proto = buf[off + 9]
                        key = buf[off + 12:off + 24]
                        size = buf[off + 2] << 8 | buf[off + 3]
                        flags = buf[off + 33] if proto == 6 else 0
                elif et == 0x86DD:
                    proto = buf[off + 6]
                    key = buf[off + 8:off + 44]
                    size = 40 + (buf[off + 4] << 8 | buf[off + 5])
                    flags = buf[off + 53] if proto == 6 else 0
                else:
                    proto = -1
                if off + 24 > end or (et == 0x86DD and off + 54 > end):
                    proto = -1  # cut short: let the careful path look at it
            except IndexError:
                proto = -1
            if proto == 6:
                cache = tcp_cache
            elif proto == 17:
                cache = udp_cache
            else:
                packet(ts, link, buf[start:end])
                next_sweep = table._next_sweep
                continue
            code = cache.get(key, -1)
            if code >= 0 and not flags & _FIN_SYN_RST and ts < next_sweep:
                s = code >> 1
                d = code & 1
                st = state[s]
                if proto == 6:
                    ok = tcp_next[st * stride + tcp_event[flags] * 2 + d] == st
                else:
                    ok = not d or bool(st & REPLIED)
                if ok:
                    last[s] = ts
                    packets[d][s] += 1
                    octets[d][s] += size
                    if tails[tclass[s]] != s:
                        touch(s)
                    fast += 1
                    continue
            code = packet(ts, link, buf[start:end])
            next_sweep = table._next_sweep
            if code >= 0:
                if len(cache) >= 4096:
                    cache.clear()
                cache[key] = code
        if spans is None:
            reader.packets = n
            reader.position = pos
            try:
                buf.close()  # type: ignore[attr-defined]  # the mapping (every frame used was copied out)
            except BufferError:
                pass
        self.packets += fast
        if progress is not None:
            progress(reader.size, reader.size)
        if reader.stop is not None:
            self.stops.append(reader.stop)
        return reader

    def finish(self) -> ClassifyReport:
        """End every flow and return the report (flows in order of first packet)."""
        self.table.flush()
        flows = sorted(self.results, key=lambda r: r.order)
        return ClassifyReport(flows=flows, stops=list(self.stops), packets=self.packets,
                              skipped=self.skipped, evicted=self.table.evicted,
                              gaps=self.reassembler.gaps, budget_evicted=self.budget_evicted,
                              max_memory=self.max_memory)


def classify(paths: Sequence[str | os.PathLike[str]], rules: Iterable[str] | None = None,
             progress: Callable[[str, int, int], None] | None = None, **options: Any) -> ClassifyReport:
    """Classify the flows of capture files read one after the other (one flow table).

    ``rules``: signature files or directories (None: the shipped library).
    Raises `InputError` for a file that is not a capture, or bad rules.
    """
    from nfkit.nfgrep.engine import Engine
    from nfkit.nfgrep.loader import load_rules

    engine = Engine(load_rules(list(rules) if rules else None))
    classifier = Classifier(engine, **options)
    for path in paths:
        cb = None
        if progress is not None:
            name = os.fspath(path)
            cb = lambda done, total, _n=name: progress(_n, done, total)  # noqa: E731
        classifier.read(path, cb)
    return classifier.finish()
