"""nfgrep live: classify flows in the packet path (NFQUEUE), mark them, step aside.

Owns: the kernel objects of the live mode (its own tables, `live_ruleset`),
the per-queue worker that decides each flow from its first packets
(`FlowJudge`, sans I/O: packets in, verdict marks and decisions out; `Worker`
binds the queue), and the daemon (`LiveService`) that installs the tables,
runs one worker process per queue and reports status and metrics.  Must not
know: how signatures match (the engine), the queue's wire format (nfqueue).

In the kernel (tables ``ip nfkit_nfgrep`` and ``ip6 nfkit_nfgrep``, installed
in one transaction, replaced if a killed run left a different copy, removed
on exit):

    chain queue_pre { type filter hook prerouting priority -140
        iifname "lo" return                      # loopback was queued on output
        ct mark & MASK != 0 return               # decided: never to userspace again
        tcp flags & syn == syn return            # no bytes for the engine: SYNs,
        ip length 52 tcp doff 8 tcp flags & (fin|syn|rst) == 0 return   # bare ACKs (one
        ...                                      # rule per TCP header length)
        ct direction reply meta mark set meta mark | DIRECTION   # tells the worker
        meta l4proto { tcp, udp } queue num A[-B] bypass }
    chain queue_out { type filter hook output priority -140; the same without lo }
    chain label_pre / label_out { ... priority -130
        meta mark & MASK == 0 return
        meta mark & MASK == DIRECTION meta mark set meta mark & ~DIRECTION return  # bypassed
        meta mark & MASK == ID ct mark set ct mark & ~MASK | ID ct label set ID   # per app
    }

A queue range is balanced by the NFQUEUE target's flow hash (cpu-fanout off):
both directions of a connection hash alike, so a connection stays on one queue
and one worker.  ``bypass``: when no worker listens, packets pass.  The
queue is bound fail-open (a full queue lets packets pass), with GSO packets
taken whole, and a copy range bounded by what the engine reads.

Per flow, the worker feeds the engine (TCP through reassembly, one stream per
direction) until it decides; the deciding packet's verdict carries the app id
in its mark (NFQA_MARK, the user's other mark bits kept), which the label
chain copies into the conntrack mark and label.  A flow still undecided after
``max_packets`` packets or ``max_bytes`` payload bytes is marked ``unknown``:
the cost per flow is bounded and afterwards its packets stay in the kernel.
"""

from __future__ import annotations

import ctypes
import gc
import ipaddress
import itertools
import json
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nfkit.errors import InputError, NfkitError
from nfkit.nfgrep.capture import address_text, decode, endpoint_text
from nfkit.nfgrep.reassembly import Reassembler
from nfkit.nfgrep.registry import (
    CONNLABEL_CONF,
    DEFAULT_MARK_MASK,
    HANDOVER,
    Registry,
    direction_bit,
    mark_shift,
)
from nfkit.nfqueue.wire import MARK_HEADER, VERDICT_ID_MARK, VERDICT_ID_MARK_AT, VERDICT_STRIDE, verdict_block
from nfkit.service.daemon import Service

log = logging.getLogger("nfkit.nfgrep.live")

TABLE = "nfkit_nfgrep"
FAMILIES = ("ip", "ip6")
QUEUE_PRIORITY = -140   # after conntrack (-200) and mangle (-150)
LABEL_PRIORITY = -130   # right after the queue: before the user's filter chains (0)
MAX_PACKETS = 24
MAX_BYTES = 4096
HEADROOM = 120          # IP and TCP headers with options, before the payload
MAX_FLOWS = 65536
DECIDED_HOLD = 2.0      # seconds a decision answers for packets queued before it took effect
# a TCP packet within the hold belongs to the decided connection when its sequence number is
# at most this far past where that direction's stream was when it was decided (or this far
# before: a retransmission); elsewhere it is a new connection on the same tuple (SYNs never
# reach the queue: its start is told by its initial sequence number).  Not random: Linux,
# as RFC 6528 has it, picks a hash of the tuple plus a clock of 64 ns ticks, so the same
# tuple reopened t seconds later starts about t * 15.6 million further on.  1 MiB ahead is
# 67 ms of that clock (2**24 was 1.07 s: wrk reusing its ports every 1.7 s inherited a
# third of its connections' decisions unlooked at) and far more than a decided flow has in
# flight: it is decided within its first `MAX_PACKETS` packets / `MAX_BYTES` bytes, while
# its sender's window is a few segments.
SAME_CONNECTION_AHEAD = 1 << 20
SAME_CONNECTION_BEHIND = 1 << 20
IDLE = 60.0
BACKENDS = ("auto", "ebpf", "queue")
FIRST_SWEEP_S = 5.0  # how often the daemon frees the eBPF first-bytes entries of flows gone
_LINK_RAW = 101
_TH_FIN_RST = 0x05
_TH_SYN = 0x02
# an IPv4 header without options, then TCP's ports, sequence number, data offset and flags (UDP:
# its ports; the rest is not read): version+IHL, total length, fragment, protocol, addresses, ports
_IP4_L4 = struct.Struct(">BxH2xHxB2x4s4s2s2sI4xBB")

# per-worker counters in shared memory: these, then one per app id (0-127)
COUNTERS = ("packets", "flows", "decided", "unknown", "enobufs", "refused", "verdicts",
            "undecided_dropped", "decide_us_total")
_NAPP = 128
DEFAULT_NICE = -10    # the queue workers' nice value (see run_worker)
PUBLISH_S = 0.05     # the worker's counters reach the status readers this often (at most)
_STRIDE = len(COUNTERS) + _NAPP


# -- the kernel's side ---------------------------------------------------------------

def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _field(proto: str, name: str) -> dict[str, Any]:
    return {"payload": {"protocol": proto, "field": name}}


def _no_bytes_for_the_engine(family: str) -> list[list[dict[str, Any]]]:
    """Matches for TCP packets userspace has no use for, which stay in the kernel: SYNs
    (the client is the side conntrack calls original, which the direction bit tells; each
    stream starts at its first byte) and bare ACKs (no payload, no SYN/FIN/RST), told by
    length: the IP length is exactly the headers' (one rule per TCP header length)."""
    flags = _field("tcp", "flags")
    out = [[_match({"&": [flags, 0x02]}, 0x02)]]
    for doff in range(5, 16):
        if family == "ip":
            sizes = [_match(_field("ip", "hdrlength"), 5), _match(_field("ip", "length"), 20 + 4 * doff)]
        else:  # the payload length: the TCP header right after the fixed IPv6 header
            sizes = [_match(_field("ip6", "nexthdr"), "tcp"), _match(_field("ip6", "length"), 4 * doff)]
        out.append([*sizes, _match(_field("tcp", "doff"), doff), _match({"&": [flags, 0x07]}, 0)])
    return out


def live_ruleset(queues: tuple[int, int], mask: int, registry: Registry,
                 families: Sequence[str] = FAMILIES, handover: bool = False) -> Any:
    """The live mode's tables (see the module docstring) as one `Ruleset`.

    ``handover``: the eBPF back end classifies in tc; the queue takes only the
    flows it hands over (packet mark HANDOVER under the mask, remembered in the
    ct mark until the worker's decision replaces it)."""
    from nfkit.nftables import Ruleset

    shift = mark_shift(mask)
    direction = direction_bit(mask)
    first, last = queues
    num: Any = first if first == last else {"range": [first, last]}
    ct_mark = {"ct": {"key": "mark"}}
    meta_mark = {"meta": {"key": "mark"}}
    rs = Ruleset()
    for fam in families:
        t = rs.table(fam, TABLE)
        for hook, suffix in (("prerouting", "pre"), ("output", "out")):
            q = rs.chain(t, f"queue_{suffix}", type="filter", hook=hook, prio=QUEUE_PRIORITY,
                         policy="accept")
            if hook == "prerouting":
                rs.rule(q, _match({"meta": {"key": "iifname"}}, "lo"), {"return": None})
            if handover:
                given = HANDOVER << shift
                if hook == "prerouting":  # the kernel program's hand-over, kept in the ct mark
                    rs.rule(q, _match({"&": [meta_mark, mask]}, given),
                            _match({"&": [ct_mark, mask]}, 0),
                            {"mangle": {"key": ct_mark,
                                        "value": {"|": [{"&": [ct_mark, ~mask & 0xFFFFFFFF]}, given]}}})
                rs.rule(q, _match({"&": [ct_mark, mask]}, given, "!="), {"return": None})
                rs.rule(q, {"mangle": {"key": meta_mark, "value": {"&": [meta_mark, ~mask & 0xFFFFFFFF]}}})
            else:
                rs.rule(q, _match({"&": [ct_mark, mask]}, 0, "!="), {"return": None})
            for rule in _no_bytes_for_the_engine(fam):
                rs.rule(q, *rule, {"return": None})
            rs.rule(q, _match({"ct": {"key": "direction"}}, "reply"),
                    {"mangle": {"key": meta_mark, "value": {"|": [meta_mark, direction]}}})
            rs.rule(q, _match({"meta": {"key": "l4proto"}}, {"set": ["tcp", "udp"]}),
                    {"queue": {"num": num, "flags": "bypass"}})
            lab = rs.chain(t, f"label_{suffix}", type="filter", hook=hook, prio=LABEL_PRIORITY,
                           policy="accept")
            rs.rule(lab, _match({"&": [meta_mark, mask]}, 0), {"return": None})
            if handover:  # handed over, the queue undecided yet (or it bypassed): the value goes
                rs.rule(lab, _match({"&": [meta_mark, mask]}, HANDOVER << shift),
                        {"mangle": {"key": meta_mark, "value": {"&": [meta_mark, ~mask & 0xFFFFFFFF]}}},
                        {"return": None})
                # the kernel marks every packet of a decided flow: once conntrack has the app,
                # the rest return here (one rule, not the per-app list and two ct writes)
                rs.rule(lab, _match({"&": [ct_mark, mask]}, 0, "!="),
                        _match({"&": [ct_mark, mask]}, HANDOVER << shift, "!="), {"return": None})
            # bypassed (nobody listened): the direction bit goes, the user's bits stay
            rs.rule(lab, _match({"&": [meta_mark, mask]}, direction),
                    {"mangle": {"key": meta_mark, "value": {"&": [meta_mark, ~direction & 0xFFFFFFFF]}}},
                    {"return": None})
            for name, app_id in sorted(registry.ids.items(), key=lambda kv: kv[1]):
                value = app_id << shift
                rs.rule(lab, _match({"&": [meta_mark, mask]}, value),
                        {"mangle": {"key": ct_mark,
                                    "value": {"|": [{"&": [ct_mark, ~mask & 0xFFFFFFFF]}, value]}}},
                        {"mangle": {"key": {"ct": {"key": "label"}}, "value": app_id}},
                        comment=f"nfgrep {name}")
    return rs


def install(queues: tuple[int, int], mask: int, registry: Registry,
            families: Sequence[str] = FAMILIES, handover: bool = False) -> None:
    """Install the live tables in one transaction: each family's table as nfkit's own
    (`nfkit.service.owntable`), a leftover of a killed run replaced, an identical one kept."""
    from nfkit.nftables import run_commands
    from nfkit.service.owntable import Owned

    cmds: list[Any] = []
    for fam in families:
        cmds += Owned(fam, TABLE).changes(live_ruleset(queues, mask, registry, (fam,), handover))
    if cmds:
        run_commands(cmds)


def remove(families: Sequence[str] = FAMILIES) -> None:
    """Remove the live tables (absent is fine), one commit per family."""
    from nfkit.service.owntable import Owned

    for fam in families:
        Owned(fam, TABLE).remove()


# -- deciding flows (sans I/O) ---------------------------------------------------------

@dataclass
class Decision:
    """One flow decided: what `--json` prints."""

    proto: str
    client: str
    server: str
    app: str
    fields: dict[str, str]
    packets: int
    bytes: int
    seconds: float  # from the flow's first packet to the decision
    queue: int = 0
    chain: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"proto": self.proto, "client": self.client, "server": self.server, "app": self.app,
                "fields": self.fields, "packets": self.packets, "bytes": self.bytes,
                "decision_ms": round(self.seconds * 1000, 3), "queue": self.queue}


class _Flow:
    __slots__ = ("client", "st", "streams", "packets", "bytes", "first", "last", "cut", "starts",
                 "missed", "announced", "ends")

    def __init__(self, client: bytes, st: Any, streams: list[Any] | None, now: float) -> None:
        self.client = client
        self.st = st
        self.streams = streams  # TCP: one stream per direction, made at its first segment
        self.packets = 0
        self.bytes = 0
        self.first = now
        self.last = now
        self.cut = False
        # per direction, the sequence number of its first byte when known (the eBPF back
        # end saw the SYNs), and whether bytes before what reached userspace were missed
        self.starts: tuple[int | None, int | None] = (None, None)
        self.missed = False
        self.announced: set[Any] | None = None  # expectations passed on (to the eBPF classifier)
        self.ends: list[int | None] = [None, None]  # TCP: per direction, the sequence after its last byte


# what `FlowJudge.triage` leaves for `FlowJudge.judge`: the decoded packet, its flow key, when
_Seen = tuple[Any, bytes, bytes, tuple[Any, ...], float]
ENGINE = -1  # `FlowJudge.triage`: the packet goes to the engine


class FlowJudge:
    """Decides flows from their packets: `packet()` returns the app id to mark, or 0.

    ``engine`` is an `nfkit.nfgrep.engine.Engine`.  Decided flows are kept
    (bounded) so that packets already queued when the decision was made get
    the same mark.  `packet` is `triage` (no engine work: a packet of a flow
    decided already, or one the judge does not read) then, when it says
    `ENGINE`, `judge`; a worker gives the first kind their verdicts before it
    runs the engine on the others.
    """

    def __init__(self, engine: Any, registry: Registry, max_packets: int = MAX_PACKETS,
                 max_bytes: int = MAX_BYTES, max_flows: int = MAX_FLOWS,
                 on_decision: Callable[[Decision], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 stream_starts: Callable[[int, bytes, bytes], tuple[int | None, int | None]] | None = None,
                 stream_prefix: Callable[[int, bytes, bytes], list[tuple[int, bytes]]] | None = None,
                 ) -> None:
        self.engine = engine
        # (proto, client, server endpoints) -> each direction's first sequence number if known:
        # a flow handed over after the kernel read a direction's first bytes is marked unknown
        self.stream_starts = stream_starts
        # (proto, client, server) -> the payloads the kernel let pass before it handed the
        # flow over (each direction's first, as (direction, bytes) in their order): read
        # first, as if they had been queued
        self.stream_prefix = stream_prefix
        # each expectation a flow announces, once (the eBPF back end's kernel map learns it)
        self.on_expectation: Callable[[Any], None] | None = None
        self.registry = registry
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.max_flows = max_flows
        self.on_decision = on_decision
        self.clock = clock
        self.reassembler = Reassembler(max_buffer=max(max_bytes, 4096), max_total=32 << 20)
        self.flows: dict[tuple[Any, ...], _Flow] = {}
        # decided flows, for packets queued before their verdict came: (app id, when, client,
        # each direction's sequence after its last byte seen, or None: see `_same_connection`)
        self.decided: dict[tuple[Any, ...], tuple[int, float, bytes, list[int | None]]] = {}
        self.unknown_id = registry.id(None)
        self._names: dict[int, str] = {}  # id -> name, as `Registry.name` (the first name)
        for name, i in registry.ids.items():
            self._names.setdefault(i, name)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.apps = [0] * _NAPP
        self.queue = 0

    def packet(self, ip: bytes, cut: bool = False, reply: bool | None = None) -> int:
        """One IP packet (``cut``: its copy was shorter than the packet; ``reply``: it goes
        from server to client, as conntrack says; None: unknown, the first packet's sender
        or a SYN's is the client); the app id its verdict should carry (0: none, the flow
        is still being looked at)."""
        app_id, seen = self.triage(ip)
        if app_id != ENGINE:
            return app_id
        return self.judge(seen, cut, reply)  # type: ignore[arg-type]

    def triage(self, ip: bytes) -> tuple[int, _Seen | None]:
        """A first look at one packet, no engine work: (the app id of its flow, decided
        already, or 0 for a packet the judge does not read, None) or (`ENGINE`, what
        `judge` needs)."""
        self.counts["packets"] += 1
        d = decode(_LINK_RAW, ip)
        if d is None:
            return 0, None
        proto = d[0]
        if proto != 6 and proto != 17:
            return 0, None
        a = d[1] + d[3].to_bytes(2, "big")
        b = d[2] + d[4].to_bytes(2, "big")
        key = (proto, a, b) if a < b else (proto, b, a)
        now = self.clock()
        if self.decided:
            done = self.decided.get(key)
            if done is not None and self.held(done, key, proto, a, d[6], now) != ENGINE:
                return done[0], None
        return ENGINE, (d, a, b, key, now)

    def held(self, done: tuple[int, float, bytes, list[int | None]], key: tuple[Any, ...], proto: int,
             source: bytes, seq: int, now: float) -> int:
        """A packet (from ``source``, at ``seq`` if TCP) of a flow decided as ``done``: that
        decision's app id while it holds for the packet, else `ENGINE` (the decision is
        forgotten: a new connection on the same addresses and ports)."""
        if now - done[1] <= DECIDED_HOLD and (proto != 6 or _same_connection(done, source, seq)):
            return done[0]
        del self.decided[key]
        return ENGINE

    def judge(self, seen: _Seen, cut: bool = False, reply: bool | None = None) -> int:
        """The rest of `packet` for a packet `triage` sent to the engine."""
        d, a, b, key, now = seen
        done = self.decided.get(key)
        if done is not None and now - done[1] <= DECIDED_HOLD:
            return done[0]  # decided by a packet before it in the same batch
        proto, _, _, _, _, flags, seq, payload, _ = d
        flow = self.flows.get(key)
        if flow is None:
            if reply is not None:
                client = b if reply else a
            elif proto == 6 and flags & _TH_SYN and flags & 0x10:
                client = b  # a SYN-ACK: the other side opened
            else:
                client = a
            server = b if client is a else a
            st = self.engine.new_flow(transport="tcp" if proto == 6 else "udp",
                                      client_port=int.from_bytes(client[-2:], "big"),
                                      server_port=int.from_bytes(server[-2:], "big"),
                                      client_addr=address_text(client[:-2]), server_addr=address_text(server[:-2]))
            flow = _Flow(client, st, [None, None] if proto == 6 else None, now)
            if proto == 6 and self.stream_starts is not None:
                flow.starts = self.stream_starts(proto, client, server)
            if len(self.flows) >= self.max_flows:
                for old in _oldest(self.flows, self.max_flows):
                    self._expire(old, "undecided_dropped")
            self.flows[key] = flow
            self.counts["flows"] += 1
            if self.stream_prefix is not None:
                self._prefix(flow, proto, client, server)
        flow.packets += 1
        flow.bytes += len(payload)
        flow.last = now
        direction = 0 if a == flow.client else 1
        if proto == 6:
            flow.ends[direction] = (seq + len(payload) + (flags & 1)) & 0xFFFFFFFF
        st = flow.st
        if not st.done:
            streams = flow.streams
            if streams is not None:
                stream = streams[direction]
                if stream is None:
                    stream = streams[direction] = self.reassembler.stream()
                start = flow.starts[direction]
                if payload and not stream.started and start is not None and seq != start:
                    flow.missed = True  # this direction's first bytes went by before the hand-over
                data = stream.segment(seq, flags, payload)
            else:
                data = payload
            if cut:
                flow.cut = True  # the bytes past this copy's end never come: decide now
            if data:
                self.engine.feed(st, direction, data)
                if st.expectations and self.on_expectation is not None:
                    if flow.announced is None:
                        flow.announced = set()
                    for x in st.expectations:
                        if x not in flow.announced:
                            flow.announced.add(x)
                            self.on_expectation(x)
        if st.done or flow.cut or flow.missed or flow.packets >= self.max_packets or flow.bytes >= self.max_bytes \
                or (proto == 6 and flags & _TH_FIN_RST):
            return self._decide(key, flow, now, proto)
        return 0

    def _prefix(self, flow: _Flow, proto: int, client: bytes, server: bytes) -> None:
        """A new flow's bytes that passed in the kernel before its hand-over, fed first
        (in the order they came; a direction's packets one after the other)."""
        for direction, data in self.stream_prefix(proto, client, server):  # type: ignore[misc]
            flow.packets += 1
            flow.bytes += len(data)
            if flow.streams is not None:
                start = flow.starts[direction]
                if start is None:  # cannot happen: the kernel keeps bytes after a SYN only
                    flow.missed = True
                    continue
                stream = flow.streams[direction]
                if stream is None:
                    stream = flow.streams[direction] = self.reassembler.stream()
                else:  # the direction's next packet: right after the last one kept
                    end = flow.ends[direction]
                    start = start if end is None else end
                data = stream.segment(start, 0, data)
                flow.ends[direction] = (start + len(data)) & 0xFFFFFFFF
            if data and not flow.st.done:
                self.engine.feed(flow.st, direction, data)

    def _decide(self, key: tuple[Any, ...], flow: _Flow, now: float, proto: int) -> int:
        st = flow.st
        # None: every candidate gave up, the bound came first, or the stream's start was missed
        app = None if flow.missed else st.app
        try:
            app_id = self.registry.id(app)
        except KeyError:  # the registry is built from the same rules: cannot happen
            raise InputError(f"application {app!r} has no id in the registry") from None
        del self.flows[key]
        if flow.streams is not None:
            for s in flow.streams:
                if s is not None:
                    s.release()
        decided = self.decided
        if len(decided) >= self.max_flows:
            for old in _oldest(decided, self.max_flows):
                del decided[old]
        decided[key] = (app_id, now, flow.client, flow.ends)
        c = self.counts
        c["decided"] += 1
        if app_id == self.unknown_id:
            c["unknown"] += 1
        self.apps[app_id] += 1
        seconds = now - flow.first
        c["decide_us_total"] += int(seconds * 1e6)
        if self.on_decision is not None:
            server = key[2] if key[1] == flow.client else key[1]
            self.on_decision(Decision(
                "tcp" if proto == 6 else "udp", endpoint_text(flow.client[:-2], int.from_bytes(flow.client[-2:], "big")),
                endpoint_text(server[:-2], int.from_bytes(server[-2:], "big")),
                self._names.get(app_id) or "unknown", dict(st.fields), flow.packets, flow.bytes,
                seconds, self.queue, list(st.chain)))
        return app_id

    def _expire(self, key: tuple[Any, ...], counter: str) -> None:
        flow = self.flows.pop(key)
        if flow.streams is not None:
            for s in flow.streams:
                if s is not None:
                    s.release()
        self.counts[counter] += 1

    def sweep(self, idle: float = IDLE) -> None:
        """Forget undecided flows idle for ``idle`` seconds (they ended unseen)."""
        now = self.clock()
        for key in [k for k, f in self.flows.items() if now - f.last > idle]:
            self._expire(key, "undecided_dropped")


def _oldest(table: dict[Any, Any], bound: int) -> list[Any]:
    """The oldest keys of a full ``table`` (bounded at ``bound``, filled in time order) to
    drop at once: a sixteenth of it.  Not one a time by ``next(iter(table))``: a dict
    emptied at its front keeps the deleted slots until it is rebuilt, and each such call
    walks all of them (about 20 us a call at 65,536 entries, every decision of a worker at
    its bound: `test_a_full_decision_table_costs_no_more_per_flow`)."""
    return list(itertools.islice(table, max(1, bound // 16)))


def _same_connection(done: tuple[int, float, bytes, list[int | None]], source: bytes, seq: int) -> bool:
    """Does a TCP packet from ``source`` with sequence number ``seq`` belong to the decided
    connection ``done`` (in flight when it was decided) rather than to a new one on the same
    tuple?  A direction never seen before the decision cannot tell: the decision holds."""
    end = done[3][0 if source == done[2] else 1]
    if end is None:
        return True
    ahead = (seq - end) & 0xFFFFFFFF
    return ahead < SAME_CONNECTION_AHEAD or ahead > (1 << 32) - SAME_CONNECTION_BEHIND


# -- one worker per queue ----------------------------------------------------------------

@dataclass
class LiveOptions:
    queues: tuple[int, int] = (0, 0)
    rules: list[str] | None = None
    mark_mask: int = DEFAULT_MARK_MASK
    max_packets: int = MAX_PACKETS
    max_bytes: int = MAX_BYTES
    json: bool = False
    connlabel: str = CONNLABEL_CONF
    maxlen: int = 4096
    backend: str = "auto"  # "auto": ebpf where the kernel allows it, else queue
    interfaces: list[str] | None = None  # ebpf: tcx ingress here (None: all but loopback)
    nice: int = DEFAULT_NICE  # the queue workers' scheduling priority


def _die_with_parent() -> None:
    """The worker ends when the daemon does (also on SIGKILL): the queue must free up."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


AUTOGROUP = "/proc/self/autogroup"


def _own_scheduling_group(num: int, nice: int, path: str = AUTOGROUP) -> None:
    """Give the worker a scheduling group of its own, at ``nice``.

    Where the kernel groups tasks by session for the CPU (CONFIG_SCHED_AUTOGROUP,
    tasks outside a cpu cgroup of their own), a nice value ranks a task only within its
    session's group, and every group gets an equal share: at nice -10 a worker on a
    machine running other sessions got a quarter of a CPU and its packets waited
    (bench/nfgrep-live/README.md).  The worker takes a session of its own first, so the
    group reniced is its own, never the terminal session it was started from.
    """
    if not os.path.exists(path):  # a kernel without autogroups: the nice value is enough
        return
    try:
        os.setsid()
        with open(path, "w") as f:
            f.write(str(nice))
    except OSError as exc:
        log.warning("queue %d: worker scheduling group (nice %d) not set: %s", num, nice,
                    exc.strerror or exc)


def kernel_starts(classifier: Any) -> Callable[[int, bytes, bytes], tuple[int | None, int | None]]:
    """Each direction's first sequence number as the eBPF classifier's flow entry has it."""
    def starts(proto: int, client: bytes, server: bytes) -> tuple[int | None, int | None]:
        e = classifier.flow(client[:-2], server[:-2], int.from_bytes(client[-2:], "big"),
                            int.from_bytes(server[-2:], "big"), proto)
        if e is None:
            return None, None
        return ((e.isns[0] + 1) & 0xFFFFFFFF if e.syns & 1 else None,
                (e.isns[1] + 1) & 0xFFFFFFFF if e.syns & 2 else None)
    return starts


def kernel_prefix(classifier: Any) -> Callable[[int, bytes, bytes], list[tuple[int, bytes]]]:
    """The first bytes of each direction the eBPF classifier let pass before it handed the
    flow over (`Classifier.first_bytes`)."""
    def prefix(proto: int, client: bytes, server: bytes) -> list[tuple[int, bytes]]:
        try:
            return classifier.first_bytes(client[:-2], server[:-2], int.from_bytes(client[-2:], "big"),
                                          int.from_bytes(server[-2:], "big"), proto)
        except (NfkitError, OSError) as exc:  # the flow's start then missed: marked unknown
            log.warning("first bytes of a handed-over flow not read: %s", exc)
            return []
    return prefix


def _kernel_expect(classifier: Any) -> Callable[[Any], None]:
    """Pass an expectation the engine learnt (FTP data) to the eBPF classifier's map: the
    announced flow is decided in the kernel at its first packet."""
    def expect(x: Any) -> None:
        if x.addr is None or x.label not in classifier.compiled.apps:
            return  # no address to key on: the kernel classifies that flow as any other
        try:
            classifier.expect(ipaddress.ip_address(x.addr).packed, x.port,
                              6 if x.transport == "tcp" else 17, x.label)
        except (NfkitError, OSError) as exc:  # the map full: the flow is classified as any other
            log.warning("expectation %s:%s not passed to the kernel: %s", x.addr, x.port, exc)
    return expect


def run_worker(num: int, opts: LiveOptions, registry: Registry, shared: Any, slot: int,
               ready: Any, classifier: Any = None) -> None:
    """Serve queue ``num`` until SIGTERM (a worker process's whole life)."""
    _die_with_parent()
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from nfkit.netlink.specs import nfqueue as Q
    from nfkit.nfgrep.engine import Engine
    from nfkit.nfgrep.loader import load_rules
    from nfkit.nfqueue import Queue

    engine = Engine(load_rules(opts.rules))
    mask = opts.mark_mask

    def emit(dec: Decision) -> None:
        os.write(1, (json.dumps(dec.as_json()) + "\n").encode())

    judge = FlowJudge(engine, registry, opts.max_packets, opts.max_bytes,
                      on_decision=emit if opts.json else None,
                      stream_starts=None if classifier is None else kernel_starts(classifier),
                      stream_prefix=None if classifier is None else kernel_prefix(classifier))
    judge.queue = num
    if classifier is not None:
        judge.on_expectation = _kernel_expect(classifier)
    copy_range = min(0xFFFF, opts.max_bytes + HEADROOM)
    queue = Queue(num, copy_range=copy_range, maxlen=opts.maxlen,
                  flags=Q.NFQA_CFG_F_FAIL_OPEN | Q.NFQA_CFG_F_GSO)
    # what was loaded lives as long as the worker: out of the collector's sight, and the
    # young generation collected less often (a pause is a packet's added latency)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    # packets wait in the kernel until this process runs: on a busy machine it should get
    # the CPU when they come (conntrackd's `Nice` for the same reason)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, opts.nice)
    except OSError as exc:  # no CAP_SYS_NICE: the worker runs at the inherited priority
        log.warning("queue %d: worker priority (nice %d) not set: %s", num, opts.nice, exc.strerror)
    _own_scheduling_group(num, opts.nice)
    ready.set()
    # the receive blocks in recvmmsg itself (no poll call before it) for at most PUBLISH_S:
    # SIGTERM ends the wait at once (EINTR), the counters reach the status readers in time
    queue.set_receive_timeout(PUBLISH_S)
    server = BatchServer(judge, mask, num, queue.send_verdicts)
    base = slot * _STRIDE
    now = time.monotonic()
    next_sweep = now + 5
    published = 0.0
    dirty = False
    receive = queue.receive_packets
    try:
        while not stopping:
            pkts = receive(True)
            if pkts:
                server.packets(queue.datagram_buffer, pkts)
                dirty = True
            now = time.monotonic()
            if dirty and now - published >= PUBLISH_S:
                # the status readers' copy, a few times a second: not a cost per packet
                c = judge.counts
                c["enobufs"] = queue.enobufs
                c["refused"] = queue.refused
                c["verdicts"] = queue.verdicts
                for i, name in enumerate(COUNTERS):
                    shared[base + i] = c[name]
                for i, n in enumerate(judge.apps):
                    if n:
                        shared[base + len(COUNTERS) + i] = n
                published = now
                dirty = False
            if now > next_sweep:
                judge.sweep()
                next_sweep = now + 5
    finally:
        queue.close()


class BatchServer:
    """The verdicts of what one receive brought (sans I/O): queued packets in
    (`Queue.receive_packets`: id, mark, cap_len, where the IP packet lies in a buffer),
    verdict messages out through ``send(block, count)`` (`Queue.send_verdicts`).

    Per packet of IPv4 without options, its IP and TCP or UDP headers are read by one
    struct (others by the generic decoder); a packet of a flow decided already costs a
    dict lookup and its verdict, written into a block of verdict messages made once (only
    the packet id and mark change).  Those verdicts go first, in one sendmsg; then each
    other packet goes to the engine, the verdicts written since the last engine run sent
    just before the next one runs: a verdict never waits for the engine's work on another
    packet, and a packet decided by one before it in the batch rides in its sendmsg.  No
    packet waits for more to come: a batch is what one receive returned.
    """

    def __init__(self, judge: FlowJudge, mask: int, queue: int,
                 send: Callable[[memoryview, int], None], capacity: int = 128) -> None:
        self.judge = judge
        self.send = send
        self.shift = mark_shift(mask)
        self.keep = ~mask & 0xFFFFFFFF
        self.direction = direction_bit(mask)
        self.capacity = capacity  # verdicts per sendmsg at most
        self.block = verdict_block(queue, capacity)
        self.view = memoryview(self.block)

    def packets(self, buf: bytearray | bytes, pkts: list[tuple[int, int, int, int, int]]) -> None:
        """Judge these packets (``(id, mark, cap_len or -1, start, stop)``, each IP packet
        ``buf[start:stop]``) and send their verdicts."""
        judge = self.judge
        decided = judge.decided
        unpack_ip = _IP4_L4.unpack_from
        pack = VERDICT_ID_MARK.pack_into
        block, capacity, send, view = self.block, self.capacity, self.send, self.view
        direction, keep, shift = self.direction, self.keep, self.shift
        now = judge.clock()
        later: list[tuple[int, int, bool, _Seen]] = []
        k = 0  # verdicts written, not sent yet
        fast = 0

        def put(pid: int, mark: int, app_id: int) -> None:
            """Write a packet's verdict: its app's id under the mask, else the direction bit gone."""
            nonlocal k
            if app_id:
                mark = (mark & keep) | (app_id << shift)
            elif mark & direction:
                mark &= ~direction
            pack(block, k * VERDICT_STRIDE + VERDICT_ID_MARK_AT, pid, MARK_HEADER, mark)
            k += 1
            if k == capacity:
                flush()

        def flush() -> None:
            nonlocal k
            if k:
                send(view[:k * VERDICT_STRIDE], k)
                k = 0

        for pid, mark, cap_len, start, stop in pkts:
            app_id = ENGINE
            size = stop - start
            vihl = buf[start] if size >= _IP4_L4.size else 0
            if vihl == 0x45:
                vihl, total, frag, proto, src, dst, sport, dport, seq, doff, flags = unpack_ip(buf, start)
                if frag & 0x1FFF or not (proto == 6 and size >= 40 or proto == 17):
                    vihl = 0
            if vihl == 0x45:
                fast += 1
                a = src + sport
                b = dst + dport
                key = (proto, a, b) if a < b else (proto, b, a)
                done = decided.get(key) if decided else None
                if done is not None:
                    app_id = judge.held(done, key, proto, a, seq, now)
                if app_id == ENGINE:
                    end = start + total if 20 <= total <= size else stop
                    if proto == 6:
                        payload = bytes(buf[start + 20 + (doff >> 4) * 4:end])
                    else:
                        payload = bytes(buf[start + 28:end])
                        seq = flags = 0
                    later.append((pid, mark, cap_len > size, (
                        (proto, src, dst, int.from_bytes(sport, "big"), int.from_bytes(dport, "big"), flags, seq,
                         payload, end - start), a, b, key, now)))
                    continue
            else:  # IPv6, IP options, a fragment, another transport: the generic decoder
                app_id, seen = judge.triage(bytes(buf[start:stop]))
                if app_id == ENGINE:
                    later.append((pid, mark, cap_len > size, seen))  # type: ignore[arg-type]
                    continue
            put(pid, mark, app_id)
        judge.counts["packets"] += fast
        flush()
        judge_ = judge.judge
        for pid, mark, cut, seen in later:
            done = decided.get(seen[3])
            if done is not None and now - done[1] <= DECIDED_HOLD:
                app_id = done[0]  # decided by a packet before it in this batch
            else:
                flush()
                app_id = judge_(seen, cut, bool(mark & direction))
            put(pid, mark, app_id)
        flush()


# -- the daemon --------------------------------------------------------------------------

class LiveService(Service):
    """`nfkit nfgrep live`: tables in, one worker process per queue, tables out."""

    name = "nfgrep"

    def __init__(self, opts: LiveOptions) -> None:
        from nfkit.nfgrep.loader import app_names
        from nfkit.nfgrep.registry import merge_connlabel

        self.opts = opts
        first, last = opts.queues
        if not 0 <= first <= last <= 0xFFFF:
            raise InputError(f"--queues {first}:{last}: queue numbers 0-65535, first <= last")
        if opts.max_packets < 1 or opts.max_bytes < 1:
            raise InputError("--max-packets and --max-bytes must be at least 1")
        mark_shift(opts.mark_mask)
        names = app_names(opts.rules)  # loads (and checks) the rule files before anything is installed
        self.registry = merge_connlabel(names, opts.connlabel)
        self.ctx = multiprocessing.get_context("fork")
        self.nqueues = last - first + 1
        self.shared = self.ctx.Array("q", self.nqueues * _STRIDE, lock=False)
        # what workers that ended had counted: counters never go back when one restarts
        self.carried = [0] * (self.nqueues * _STRIDE)
        self.workers: dict[int, Any] = {}
        self.restarts = 0
        self.started = time.time()
        self.installed = False
        if opts.backend not in BACKENDS:
            raise InputError(f"--backend {opts.backend!r}: one of {', '.join(BACKENDS)}")
        self.backend = "queue" if opts.backend == "queue" else "ebpf"
        self.backend_note = "asked for" if opts.backend != "auto" else ""
        self.classifier: Any = None
        self.interfaces: list[str] = []
        self._selector: selectors.BaseSelector | None = None
        self.metrics_registry = self._metrics()

    def _load_ebpf(self) -> None:
        """The eBPF classifier loaded and attached (tcx ingress on each interface); with
        ``--backend auto``, a kernel that refuses any of it leaves the queue back end."""
        from nfkit.nfgrep.ebpf.program import Classifier, load_verified

        names = self.opts.interfaces or [n for _, n in socket.if_nameindex() if n != "lo"]
        if not names:  # the kernel program would see nothing: every flow would pass unclassified
            if self.opts.backend == "ebpf":
                raise InputError("--backend ebpf: no interface but loopback to attach to; "
                                 "give --interface or use --backend queue")
            self.backend, self.backend_note = "queue", "no interface but loopback to attach to"
            return
        try:
            cl = Classifier(load_verified(self.opts.rules), mark_mask=self.opts.mark_mask,
                            registry=self.registry)
        except (NfkitError, OSError) as exc:
            if self.opts.backend == "ebpf":
                raise
            self.backend, self.backend_note = "queue", f"the kernel refused the eBPF classifier: {exc}"
            return
        try:
            for name in names:
                cl.attach(name, "ingress")
        except (NfkitError, OSError) as exc:
            cl.close()
            if self.opts.backend == "ebpf" or isinstance(exc, InputError):
                raise
            self.backend, self.backend_note = "queue", f"tcx attachment refused: {exc}"
            return
        self.classifier, self.interfaces = cl, names
        if not self.backend_note:
            self.backend_note = "the kernel allows it"

    def start(self, selector: selectors.BaseSelector) -> None:
        self._selector = selector
        if self.backend == "ebpf":
            self._load_ebpf()
        install(self.opts.queues, self.opts.mark_mask, self.registry,
                handover=self.classifier is not None)
        self.installed = True
        for slot in range(self.nqueues):
            self._spawn(slot)
        log.info("classifying on queue(s) %d-%d with %d application(s), mark mask %#x",
                 self.opts.queues[0], self.opts.queues[1], len(self.registry.ids), self.opts.mark_mask)
        if self.classifier is not None:
            log.info("back end ebpf (%s): tcx ingress on %s; the queue takes handed-over flows only",
                     self.backend_note, ", ".join(self.interfaces) or "no interface")
        else:
            log.info("back end queue (%s)", self.backend_note or "the default where eBPF is not chosen")

    def _spawn(self, slot: int) -> None:
        num = self.opts.queues[0] + slot
        ready = self.ctx.Event()
        proc = self.ctx.Process(target=run_worker, name=f"nfgrep-live-q{num}",
                                args=(num, self.opts, self.registry, self.shared, slot, ready,
                                      self.classifier))
        proc.start()
        deadline = time.monotonic() + 30
        while not ready.wait(0.05):
            if not proc.is_alive() or time.monotonic() > deadline:
                proc.join(1)
                from nfkit.errors import CapabilityError
                raise CapabilityError(f"queue {num}: the worker did not start (exit {proc.exitcode}); "
                                      "is another program bound to it?")
        self.workers[slot] = proc
        assert self._selector is not None
        self._selector.register(proc.sentinel, selectors.EVENT_READ, lambda s=slot: self._ended(s))

    def _ended(self, slot: int) -> None:
        proc = self.workers.pop(slot)
        assert self._selector is not None
        self._selector.unregister(proc.sentinel)
        proc.join()
        base = slot * _STRIDE
        for i in range(base, base + _STRIDE):
            self.carried[i] += self.shared[i]
            self.shared[i] = 0
        self.restarts += 1
        log.warning("worker of queue %d ended (exit %s); starting it again (packets passed meanwhile: "
                    "bypass)", self.opts.queues[0] + slot, proc.exitcode)
        self._spawn(slot)

    def stop(self) -> None:
        for proc in self.workers.values():
            if proc.is_alive():
                proc.terminate()
        for proc in self.workers.values():
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.workers.clear()
        if self.classifier is not None:  # links, program and maps (traffic then flows unmarked)
            self.classifier.close()
            self.classifier = None
        if self.installed:
            remove()
            self.installed = False

    def tick(self) -> float | None:
        if self.classifier is None:
            return None
        # the kernel's first-bytes map is a plain hash (full, it hands new open flows over at
        # once): the entries of flows no hand-over can read any more are freed here
        try:
            self.classifier.sweep_first()
        except (NfkitError, OSError) as exc:
            log.warning("eBPF first-bytes map not swept: %s", exc)
        return FIRST_SWEEP_S

    def counters(self) -> list[dict[str, int]]:
        out = []
        for slot in range(self.nqueues):
            base = slot * _STRIDE
            now = [self.shared[i] + self.carried[i] for i in range(base, base + _STRIDE)]
            row = {name: int(now[i]) for i, name in enumerate(COUNTERS)}
            row["apps"] = {self.registry.name(i) or str(i): int(now[len(COUNTERS) + i])  # type: ignore[assignment]
                           for i in range(_NAPP) if now[len(COUNTERS) + i]}
            out.append(row)
        return out

    def status(self) -> dict[str, Any]:
        from nfkit.nfqueue import queue_counters

        kernel = queue_counters()
        per = self.counters()
        queues = []
        for slot, row in enumerate(per):
            num = self.opts.queues[0] + slot
            k = kernel.get(num, {})
            proc = self.workers.get(slot)
            queues.append({"queue": num, "pid": proc.pid if proc else None, **row,
                           "kernel": {n: k.get(n) for n in ("waiting", "dropped", "user_dropped",
                                                            "id_sequence")}})
        total = {n: sum(r[n] for r in per) for n in COUNTERS}
        apps: dict[str, int] = {}
        for r in per:
            for n, v in r["apps"].items():  # type: ignore[attr-defined]
                apps[n] = apps.get(n, 0) + v
        decided = total["decided"]
        return {"queues": queues, "total": total, "apps": apps,
                "mean_decision_ms": round(total["decide_us_total"] / decided / 1000, 3) if decided else None,
                "backend": self.backend, "backend_reason": self.backend_note,
                "interfaces": self.interfaces, "kernel_flows": self._kernel_flows(),
                "mark_mask": f"{self.opts.mark_mask:#x}", "restarts": self.restarts,
                "uptime": round(time.time() - self.started, 1), "table": TABLE}

    def _kernel_flows(self) -> dict[str, Any] | None:
        """The eBPF classifier's flow map now: entries per state and decided per app; and
        its counters since loading (`Classifier.counts`: every decision, where the map's
        entries are replaced by reopened tuples and evicted)."""
        cl = self.classifier
        if cl is None:
            return None
        from nfkit.nfgrep.ebpf.program import STATE_NAMES, entry_of

        states: dict[str, int] = {}
        apps: dict[str, int] = {}
        for key in cl.flows.keys():
            raw = cl.flows.lookup(key)
            if raw is None:
                continue
            e = entry_of(cl, raw)
            state = STATE_NAMES.get(e.state, str(e.state))
            states[state] = states.get(state, 0) + 1
            if e.app is not None:
                apps[e.app] = apps.get(e.app, 0) + 1
        # open flows' first bytes kept for a late hand-over, of the map's size (full: new
        # open flows are handed over at their first payload, `first bytes map full`)
        first = {"entries": len(cl.first.keys()), "size": cl.first_entries}
        return {"states": states, "apps": apps, "counts": cl.counts(), "first_bytes": first}

    def _metrics(self) -> Any:
        from prometheus_client import CollectorRegistry
        from prometheus_client.core import CounterMetricFamily

        service = self

        class _Collector:
            def collect(self) -> Any:
                rows = service.counters()
                for name, help_ in (("packets", "packets that reached the queue"),
                                    ("flows", "flows looked at"),
                                    ("decided", "flows decided"), ("unknown", "flows marked unknown"),
                                    ("enobufs", "receive queue overruns (ENOBUFS) survived"),
                                    ("refused", "verdicts the kernel refused")):
                    m = CounterMetricFamily(f"nfkit_nfgrep_{name}", help_, labels=["queue"])
                    for slot, r in enumerate(rows):
                        m.add_metric([str(service.opts.queues[0] + slot)], r[name])
                    yield m
                m = CounterMetricFamily("nfkit_nfgrep_app_flows", "flows decided per application",
                                        labels=["app"])
                apps: dict[str, int] = {}
                for r in rows:
                    for n, v in r["apps"].items():  # type: ignore[attr-defined]
                        apps[n] = apps.get(n, 0) + v
                for n, v in sorted(apps.items()):
                    m.add_metric([n], v)
                yield m

        reg = CollectorRegistry()
        reg.register(_Collector())  # type: ignore[arg-type]
        return reg
