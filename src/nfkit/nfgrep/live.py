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
import json
import logging
import multiprocessing
import os
import selectors
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nfkit.errors import InputError
from nfkit.nfgrep.capture import decode
from nfkit.nfgrep.reassembly import Reassembler
from nfkit.nfgrep.registry import CONNLABEL_CONF, DEFAULT_MARK_MASK, Registry, direction_bit, mark_shift
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
IDLE = 60.0
_LINK_RAW = 101
_TH_FIN_RST = 0x05
_TH_SYN = 0x02

# per-worker counters in shared memory: these, then one per app id (0-127)
COUNTERS = ("packets", "flows", "decided", "unknown", "enobufs", "refused", "verdicts",
            "undecided_dropped", "decide_us_total")
_NAPP = 128
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
                 families: Sequence[str] = FAMILIES) -> Any:
    """The live mode's tables (see the module docstring) as one `Ruleset`."""
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
            families: Sequence[str] = FAMILIES) -> None:
    """Install the live tables in one transaction: each family's table as nfkit's own
    (`nfkit.service.owntable`), a leftover of a killed run replaced, an identical one kept."""
    from nfkit.nftables import run_commands
    from nfkit.service.owntable import Owned

    cmds: list[Any] = []
    for fam in families:
        cmds += Owned(fam, TABLE).changes(live_ruleset(queues, mask, registry, (fam,)))
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
    __slots__ = ("client", "st", "streams", "packets", "bytes", "first", "last", "cut")

    def __init__(self, client: bytes, st: Any, streams: Any, now: float) -> None:
        self.client = client
        self.st = st
        self.streams = streams
        self.packets = 0
        self.bytes = 0
        self.first = now
        self.last = now
        self.cut = False


def _endpoint(addr: bytes, port: int) -> str:
    ip = ipaddress.ip_address(addr)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


class FlowJudge:
    """Decides flows from their packets: `packet()` returns the app id to mark, or 0.

    ``engine`` is an `nfkit.nfgrep.engine.Engine`.  Decided flows are kept
    (bounded) so that packets already queued when the decision was made get
    the same mark.
    """

    def __init__(self, engine: Any, registry: Registry, max_packets: int = MAX_PACKETS,
                 max_bytes: int = MAX_BYTES, max_flows: int = MAX_FLOWS,
                 on_decision: Callable[[Decision], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.registry = registry
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.max_flows = max_flows
        self.on_decision = on_decision
        self.clock = clock
        self.reassembler = Reassembler(max_buffer=max(max_bytes, 4096), max_total=32 << 20)
        self.flows: dict[tuple[Any, ...], _Flow] = {}
        # decided flows, for packets queued before their verdict came: (app id, when)
        self.decided: dict[tuple[Any, ...], tuple[int, float]] = {}
        self.unknown_id = registry.id(None)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.apps = [0] * _NAPP
        self.queue = 0

    def packet(self, ip: bytes, cut: bool = False, reply: bool | None = None) -> int:
        """One IP packet (``cut``: its copy was shorter than the packet; ``reply``: it goes
        from server to client, as conntrack says; None: unknown, the first packet's sender
        or a SYN's is the client); the app id its verdict should carry (0: none, the flow
        is still being looked at)."""
        c = self.counts
        c["packets"] += 1
        d = decode(_LINK_RAW, ip)
        if d is None:
            return 0
        proto, src, dst, sport, dport, flags, seq, payload, _ = d
        if proto != 6 and proto != 17:
            return 0
        a = src + sport.to_bytes(2, "big")
        b = dst + dport.to_bytes(2, "big")
        key = (proto, a, b) if a < b else (proto, b, a)
        now = self.clock()
        done = self.decided.get(key)
        if done is not None:
            if now - done[1] <= DECIDED_HOLD:
                return done[0]
            del self.decided[key]  # a new connection on the same addresses and ports
        flow = self.flows.get(key)
        if flow is None:
            if reply is not None:
                client = b if reply else a
            elif proto == 6 and flags & _TH_SYN and flags & 0x10:
                client = b  # a SYN-ACK: the other side opened
            else:
                client = a
            server = b if client is a else a
            cport = int.from_bytes(client[-2:], "big")
            sport_ = int.from_bytes(server[-2:], "big")
            st = self.engine.new_flow(transport="tcp" if proto == 6 else "udp", client_port=cport,
                                      server_port=sport_,
                                      client_addr=str(ipaddress.ip_address(client[:-2])),
                                      server_addr=str(ipaddress.ip_address(server[:-2])))
            streams = None
            if proto == 6:
                streams = (self.reassembler.stream(), self.reassembler.stream())
            flow = _Flow(client, st, streams, now)
            if len(self.flows) >= self.max_flows:
                self._expire(next(iter(self.flows)), "undecided_dropped")
            self.flows[key] = flow
            c["flows"] += 1
        flow.packets += 1
        flow.bytes += len(payload)
        flow.last = now
        direction = 0 if a == flow.client else 1
        st = flow.st
        if not st.done:
            if flow.streams is not None:
                data = flow.streams[direction].segment(seq, flags, payload)
            else:
                data = payload
            if cut:
                flow.cut = True  # the bytes past this copy's end never come: decide now
            if data:
                self.engine.feed(st, direction, data)
        if st.done or flow.cut or flow.packets >= self.max_packets or flow.bytes >= self.max_bytes \
                or (proto == 6 and flags & _TH_FIN_RST):
            return self._decide(key, flow, now, proto)
        return 0

    def _decide(self, key: tuple[Any, ...], flow: _Flow, now: float, proto: int) -> int:
        st = flow.st
        app = st.app  # None: every candidate gave up, or the bound came first: unknown
        try:
            app_id = self.registry.id(app)
        except KeyError:  # the registry is built from the same rules: cannot happen
            raise InputError(f"application {app!r} has no id in the registry") from None
        del self.flows[key]
        if flow.streams is not None:
            for s in flow.streams:
                s.release()
        if len(self.decided) >= self.max_flows:
            del self.decided[next(iter(self.decided))]
        self.decided[key] = (app_id, now)
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
                "tcp" if proto == 6 else "udp", _endpoint(flow.client[:-2], int.from_bytes(flow.client[-2:], "big")),
                _endpoint(server[:-2], int.from_bytes(server[-2:], "big")),
                self.registry.name(app_id) or "unknown", dict(st.fields), flow.packets, flow.bytes,
                seconds, self.queue, list(st.chain)))
        return app_id

    def _expire(self, key: tuple[Any, ...], counter: str) -> None:
        flow = self.flows.pop(key)
        if flow.streams is not None:
            for s in flow.streams:
                s.release()
        self.counts[counter] += 1

    def sweep(self, idle: float = IDLE) -> None:
        """Forget undecided flows idle for ``idle`` seconds (they ended unseen)."""
        now = self.clock()
        for key in [k for k, f in self.flows.items() if now - f.last > idle]:
            self._expire(key, "undecided_dropped")


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


def _die_with_parent() -> None:
    """The worker ends when the daemon does (also on SIGKILL): the queue must free up."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_worker(num: int, opts: LiveOptions, registry: Registry, shared: Any, slot: int,
               ready: Any) -> None:
    """Serve queue ``num`` until SIGTERM (a worker process's whole life)."""
    _die_with_parent()
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from nfkit.netlink.specs import nfqueue as Q
    from nfkit.nfgrep.engine import Engine
    from nfkit.nfgrep.loader import load_rules
    from nfkit.nfqueue import NF_ACCEPT, Queue

    engine = Engine(load_rules(opts.rules))
    mask = opts.mark_mask
    shift = mark_shift(mask)
    keep = ~mask & 0xFFFFFFFF
    direction = direction_bit(mask)

    def emit(dec: Decision) -> None:
        if opts.json:
            os.write(1, (json.dumps(dec.as_json()) + "\n").encode())

    judge = FlowJudge(engine, registry, opts.max_packets, opts.max_bytes, on_decision=emit)
    judge.queue = num
    copy_range = min(0xFFFF, opts.max_bytes + HEADROOM)
    queue = Queue(num, copy_range=copy_range, maxlen=opts.maxlen,
                  flags=Q.NFQA_CFG_F_FAIL_OPEN | Q.NFQA_CFG_F_GSO)
    # what was loaded lives as long as the worker: out of the collector's sight, and the
    # young generation collected less often (a pause is a packet's added latency)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    ready.set()
    sel = selectors.DefaultSelector()
    sel.register(queue.fileno(), selectors.EVENT_READ)
    # SIGTERM wakes the select at once (Python would resume it after the handler)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    sel.register(wake_r, selectors.EVENT_READ)
    base = slot * _STRIDE
    next_sweep = time.monotonic() + 5
    packet = judge.packet
    try:
        while not stopping:
            sel.select(1.0)
            last_plain = -1
            plain = 0
            for pkt in queue.packets():
                mark = pkt.mark
                app_id = packet(pkt.payload, pkt.cap_len is not None and pkt.cap_len > len(pkt.payload),
                                bool(mark & direction))
                if app_id:
                    queue.verdict(pkt.id, NF_ACCEPT, (mark & keep) | (app_id << shift))
                elif mark & direction:
                    queue.verdict(pkt.id, NF_ACCEPT, mark & ~direction)
                else:
                    last_plain = pkt.id
                    plain += 1
            if plain:
                if plain == 1:
                    queue.verdict(last_plain, NF_ACCEPT)
                else:
                    # every earlier packet of this queue had its verdict above, or gets this one
                    queue.batch_verdict(last_plain, NF_ACCEPT)
            queue.flush()
            c = judge.counts
            c["enobufs"] = queue.enobufs
            c["refused"] = queue.refused
            c["verdicts"] = queue.verdicts
            for i, name in enumerate(COUNTERS):
                shared[base + i] = c[name]
            for i, n in enumerate(judge.apps):
                if n:
                    shared[base + len(COUNTERS) + i] = n
            now = time.monotonic()
            if now > next_sweep:
                judge.sweep()
                next_sweep = now + 5
    finally:
        queue.close()


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
        self._selector: selectors.BaseSelector | None = None
        self.metrics_registry = self._metrics()

    def start(self, selector: selectors.BaseSelector) -> None:
        self._selector = selector
        install(self.opts.queues, self.opts.mark_mask, self.registry)
        self.installed = True
        for slot in range(self.nqueues):
            self._spawn(slot)
        log.info("classifying on queue(s) %d-%d with %d application(s), mark mask %#x",
                 self.opts.queues[0], self.opts.queues[1], len(self.registry.ids), self.opts.mark_mask)

    def _spawn(self, slot: int) -> None:
        num = self.opts.queues[0] + slot
        ready = self.ctx.Event()
        proc = self.ctx.Process(target=run_worker, name=f"nfgrep-live-q{num}",
                                args=(num, self.opts, self.registry, self.shared, slot, ready))
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
        if self.installed:
            remove()
            self.installed = False

    def tick(self) -> float | None:
        return None

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
                "mark_mask": f"{self.opts.mark_mask:#x}", "restarts": self.restarts,
                "uptime": round(time.time() - self.started, 1), "table": TABLE}

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
