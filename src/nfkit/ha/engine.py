"""The sync engine: kernel events -> peers, peers -> kernel (conntrackd 1.4.7's sync mode).

Owns: the internal cache (this node's entries, as its kernel reported them),
the external cache (the peers' entries, when not injected at once), which
kernel event becomes which message to which peer, what a peer's message does
here, and the commands conntrackd's clients give (commit, flush, resync, bulk
send, reset timers).  Peers are `Peer`s: a session (FTFW, NOTRACK, ALARM:
anything with `enqueue`, `transmit`, `tick`, `receive`) and a way to send a
datagram; the engine never opens a socket of the sync link, so a cluster layer
can run one engine with a session per peer on transports of its own.

Rules kept as conntrackd keeps them:
- kernel events caused by the engine's own injections are ignored (by the
  netlink port id they carry: the kernel drops them, `Injector.hide_own_events`,
  and any that came through would be skipped here), so a peer's entry is never
  echoed back;
- a destroy event of an entry this node never synced is not sent;
- received entries go to the kernel as `nfkit.ha.inject` says (or to the
  external cache until `commit`);
- a peer that says HELLO for the first time (it started, or restarted) gets
  this node's whole internal cache (a HELLO from a peer never heard, from one
  that had finished its handshake, or whose number does not follow the last
  one heard), and RESYNC requests are answered with it.
Must not know: conntrackd.conf, the daemon's loop, the control socket.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import operator
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from nfkit.conntrack.expect import Expectation, ExpectEvents, ExpectTable
from nfkit.conntrack.model import Entry
from nfkit.conntrack.table import ConntrackTable, EventStream
from nfkit.errors import DecodeError, EventsLost, InputError
from nfkit.ha import convert, fastpath, wire
from nfkit.ha.ftfw import Apply, ResyncRequested, Stats
from nfkit.ha.inject import DEL, NEW, UPD, Change, Injector
from nfkit.ha.spec import Flag, MsgType
from nfkit.netlink import mmsg
from nfkit.netlink.consts import NFNL_SUBSYS_CTNETLINK, NLM_F_CREATE, NLM_F_EXCL
from nfkit.netlink.specs.ctnetlink import IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_NEW

log = logging.getLogger("nfkit.ha")

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
FLUSH_EVERY = 512  # kernel events read between two sends (checked after each read's run of one size)
VECTOR_RUN = 8  # the fewest events in a row a vector says (shorter runs are walked)
_NLMSG = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, port id
_NFHDR = 20  # nlmsghdr + nfgenmsg, then the attributes
_CREATE_EXCL = NLM_F_CREATE | NLM_F_EXCL  # how the kernel flags a NEW event (else an update)
_SECOND = operator.itemgetter(1)
_CT_EVENT_TYPE = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW  # a NEW or an update event's nlmsg type
_KIND_OF = {MsgType.CT_NEW: NEW, MsgType.CT_UPD: UPD, MsgType.CT_DEL: DEL,
            MsgType.EXP_NEW: NEW, MsgType.EXP_UPD: UPD, MsgType.EXP_DEL: DEL}
_KINDS = [_KIND_OF.get(MsgType(t), "") if t in set(MsgType) else "" for t in range(16)]  # by type number: an enum's hash is slow
_HELLO = int(Flag.HELLO)
RESTART_QUIET_S = 1.5  # a HELLO after this much silence is a restarted peer's (extra bulk sends are harmless)
_CT_TYPE = {NEW: int(MsgType.CT_NEW), UPD: int(MsgType.CT_UPD), DEL: int(MsgType.CT_DEL)}
_CT_NEW, _CT_UPD, _CT_DEL = int(MsgType.CT_NEW), int(MsgType.CT_UPD), int(MsgType.CT_DEL)
_EXP_TYPE = {NEW: MsgType.EXP_NEW, UPD: MsgType.EXP_UPD, DEL: MsgType.EXP_DEL}


def _runs(sizes: list[int]) -> list[tuple[int, int, int]]:
    """(first, end, size) of each run of equal ``sizes``, in order."""
    out = []
    first = 0
    for i in range(1, len(sizes) + 1):
        if i == len(sizes) or sizes[i] != sizes[first]:
            out.append((first, i, sizes[first]))
            first = i
    return out


class Session(Protocol):
    stats: Stats

    def enqueue(self, key: Any, message: wire.StateMessage) -> None: ...
    def enqueue_many(self, words: list[tuple[Any, wire.StateMessage]]) -> None: ...
    def enqueue_words(self, words: dict[Any, wire.Word]) -> None: ...
    def request_resync(self) -> None: ...
    def transmit(self, now: float) -> list[wire.Message]: ...
    def transmit_datagrams(self, now: float, limit: int) -> list[bytes]: ...
    def tick(self, now: float) -> None: ...
    def receive(self, msg: wire.Message) -> list[Any]: ...
    @property
    def resend_queue_depth(self) -> int: ...


@dataclass
class LinkStats:
    bytes_sent: int = 0
    bytes_recv: int = 0
    packets_sent: int = 0
    packets_recv: int = 0
    send_errors: int = 0
    recv_errors: int = 0
    malformed: int = 0


@dataclass
class Peer:
    """One peer: its session and how to send it a datagram (returns False when sending failed)."""

    name: str
    session: Session
    send: Callable[[bytes], bool]
    link: LinkStats = field(default_factory=LinkStats)
    last_seq: int | None = None  # the number of the last message heard from the peer
    handshake_done: bool = False  # the peer's last message said no HELLO (it heard our HELLO_BACK)
    last_heard: float | None = None
    datagram_limit: int = 1472


@dataclass
class CacheStats:
    created: int = 0
    updated: int = 0
    destroyed: int = 0


@dataclass
class Selection:
    """Which kernel entries are synced (conntrackd's Filter block)."""

    protocols: frozenset[int] = frozenset()
    protocols_accept: bool | None = None
    networks: list[Net] = field(default_factory=list)
    networks_accept: bool | None = None
    tcp_states: frozenset[int] = frozenset()
    states_accept: bool | None = None

    def __post_init__(self) -> None:
        self._hit = functools.lru_cache(maxsize=65536)(self._address_hit)

    def _address_hit(self, address: str | bytes) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in self.networks if net.version == ip.version)

    @functools.cached_property
    def hosts_ignored(self) -> frozenset[bytes] | None:
        """For a selection that only ignores single addresses (conntrackd's usual `Address
        Ignore` of its own addresses), those addresses as bytes (`accepts_raw` is then
        "neither address in the set"); None for any other."""
        if self.protocols_accept is not None or self.states_accept is not None or self.networks_accept is not False \
                or any(net.prefixlen != net.max_prefixlen for net in self.networks):
            return None
        return frozenset(net.network_address.packed for net in self.networks)

    @property
    def everything(self) -> bool:
        return self.protocols_accept is None and self.networks_accept is None and self.states_accept is None

    def accepts(self, e: Entry) -> bool:
        return self.accepts_raw(e.proto, e.orig.src, e.orig.dst, e.state)

    def accepts_raw(self, proto: int, src: str | bytes, dst: str | bytes, state: int | None) -> bool:
        """Whether an entry is synced, from its protocol, original addresses (as text or
        bytes: `ipaddress` reads both) and TCP state."""
        if self.protocols_accept is not None and (proto in self.protocols) != self.protocols_accept:
            return False
        if self.networks_accept is not None:
            hit = self._hit(src) or self._hit(dst)
            if hit != self.networks_accept:
                return False
        if self.states_accept is not None and proto == 6 and state is not None:
            if (state in self.tcp_states) != self.states_accept:
                return False
        return True


@dataclass
class Options:
    external_cache: bool = False
    window_tracking: bool = False
    commit_timeout: int = 0
    purge_timeout: int = 60
    refresh_time: float | None = None  # ALARM: every entry sent again this often
    cache_timeout: float | None = None  # ALARM: an external entry not refreshed this long is dropped
    hello_bulk: bool = True  # send the whole cache to a peer heard saying HELLO for the first time
    internal_cache: bool = True  # False: DisableInternalCache (NOTRACK): events said as they happen
    events_rcvbuf: int = 16 << 20  # the event socket's buffer (NetlinkBufferSize, at least 16 MB)
    events_rcvbuf_max: int = 16 << 20  # grown to this on overruns (NetlinkBufferSizeMaxGrowth)
    # in a burst of kernel events, read them at most this often (the first event after a quiet
    # spell is read at once): fewer, fuller reads cost the sender ~13 % less CPU per event
    # in bench/ha/run, for at most this much added delay; 0: read as soon as woken
    event_batch_s: float = 0.002
    # ExpectationSync: False (none), True (all) or the helpers whose expectations are synced
    expectations: bool | list[str] = False

    def syncs(self, x: Expectation) -> bool:
        e = self.expectations
        return e is True or (isinstance(e, list) and x.helper in e)


class SyncEngine:
    """One node's sync engine over ``table`` (its namespace's kernel table)."""

    def __init__(self, table: ConntrackTable, options: Options, selection: Selection | None = None) -> None:
        self.table = table
        self.options = options
        self.selection = selection or Selection()
        self.peers: list[Peer] = []
        # this node's entries as the body of the message that says them (`fastpath.entry_key`)
        self.internal: dict[Any, bytes] = {}
        self.internal_since: dict[Any, float] = {}
        self.external: dict[Any, Entry] = {}
        self.external_since: dict[Any, float] = {}
        self.internal_stats = CacheStats()
        self.external_stats = CacheStats()
        self.events_received = 0
        self.events_filtered = 0
        self.events_own = 0
        self.unsendable = 0
        self.overruns = 0
        self.kernel_resyncs = 0
        self.started = time.time()
        self.injector = Injector(table, window_tracking=options.window_tracking,
                                 commit_timeout=options.commit_timeout)
        self.events: EventStream | None = None
        self.exp_events: ExpectEvents | None = None
        self.events_rcvbuf = options.events_rcvbuf
        self.internal_exp: dict[Any, Expectation] = {}
        self.internal_exp_alive: set[Any] = set()  # found again by a resync: said with EXP_UPD
        self.external_exp: dict[Any, Expectation] = {}
        self._last_refresh = time.monotonic()
        self._receiver: mmsg.BatchReceiver | mmsg.SingleReceiver | None = None  # of `events`
        self._events_read_at = 0.0  # when the last read of kernel events ended (monotonic)
        self._event_plans: dict[int, tuple[Any, fastpath.EventFunction | None]] = {}  # id(layout) ->
        self._create_plans: dict[int, tuple[wire.BodyShape, fastpath.CreatePlan | None]] = {}
        # the walk's last event: (layout, attributes' length, family, its event function)
        self._last_event: tuple[Any, int, int, fastpath.EventFunction | None] = (None, -1, -1, None)
        # datagram size -> the vector that says such datagrams (None: walk them)
        self._vectors: dict[int, fastpath.EventVector | None] = {}

    # ---- setup ---------------------------------------------------------

    def add_peer(self, peer: Peer) -> None:
        self.peers.append(peer)

    def subscribe(self) -> EventStream:
        """Start listening to kernel events, then read the table into the internal cache."""
        self.events_rcvbuf = self.options.events_rcvbuf
        self.events = self.table.events(resync=False, rcvbuf=self.events_rcvbuf)
        self.injector.hide_own_events(self.events.sock.sock)
        if self.options.expectations:
            self.exp_events = ExpectTable(self.table).events()
            self.injector.hide_own_events(self.exp_events.sock.sock)
        self.resync_with_kernel()
        return self.events

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
        if self.exp_events is not None:
            self.exp_events.close()
        self.injector.close()

    # ---- kernel -> peers ---------------------------------------------------

    def on_kernel_events(self) -> None:
        """Read the kernel's waiting events; queue what they say for every peer; send.

        The datagrams are walked here: each message's values are unpacked by the
        conntrack decoder's layout and turned into the message body by the layout's
        plan (`nfkit.ha.fastpath`); an entry is built only for shapes without one.
        Reads whose datagrams are all one event of a layout seen before (a burst of new
        entries) wait as rows of an array and are said together by the layout's
        `fastpath.EventVector`, a few whole-array steps for hundreds of events."""
        assert self.events is not None
        if self._receiver is None:
            self._receiver = mmsg.receiver(self.events.sock.sock)
        pause = self.options.event_batch_s
        if pause:
            # in a burst (the last read ended less than `pause` ago), let events gather
            gap = time.monotonic() - self._events_read_at
            if gap < pause:
                time.sleep(pause - gap)
        receive = self._receiver.receive  # many events a call, each in its slot of one buffer
        buf = self._receiver.buffer
        slots = self._receiver.slots
        slot_size = getattr(self._receiver, "slot_size", 0)
        vectors = self._vectors
        run: list[tuple[str, Any, bytes]] = []  # planned words not yet handed to `_local_bodies`
        rows: fastpath.EventVector | None = None  # the vector whose first `rows_n` rows wait to be said
        rows_n = 0
        received = 0
        unsent = 0  # datagrams read since the last send

        def say_rows() -> None:  # the rows waiting, said before anything read after them
            nonlocal rows, rows_n, received
            if rows is not None:
                received = self._said_rows(rows, rows_n, run, received)
                rows, rows_n = None, 0

        try:
            while True:
                datagrams = receive()  # raises EventsLost
                if not datagrams:
                    break
                n = len(datagrams)
                size = datagrams[0][1]
                if len({*map(_SECOND, datagrams)}) == 1:
                    groups: Any = ((0, n, size),)
                else:  # runs of datagrams of one size
                    groups = _runs([d[1] for d in datagrams])
                for first, end, size in groups:
                    vec = vectors.get(size) if slot_size else None
                    if vec is not None:
                        if vec is not rows or rows_n + end - first > vec.CAPACITY:
                            say_rows()
                        vec.take(rows_n, np.frombuffer(buf, np.uint8, end * slot_size).reshape(end, slot_size)[first:])
                        rows, rows_n = vec, rows_n + end - first
                    else:
                        say_rows()
                        received = self._walk(buf, datagrams[first:end], run, received)
                        if slot_size and size not in vectors and datagrams[end - 1][1] == size:
                            self._learn_vector(buf, datagrams[end - 1][0], size)
                    unsent += end - first
                    if unsent >= FLUSH_EVERY:  # a long burst: send as it is read
                        say_rows()
                        self._local_bodies(run)
                        run.clear()
                        self.flush()
                        unsent = 0
                if n < slots:  # the queue was empty: no call to hear it again
                    break
            say_rows()
            self._local_bodies(run)
        except EventsLost:
            say_rows()
            self._local_bodies(run)  # read before the overrun: the resync then says the rest
            self.overruns += 1
            log.warning("netlink event socket overrun: resync with the kernel table")
            self._drain(self.events)
            self.resync_with_kernel(send=True)
        finally:
            self.events_received += received
            self._events_read_at = time.monotonic()
        self.flush()

    def _walk(self, buf: Any, datagrams: list[tuple[int, int]], run: list[tuple[str, Any, bytes]],
              received: int) -> int:
        """The events in ``datagrams`` of ``buf``, one by one: planned words onto ``run``,
        the rest through the entry path, in order.  Returns ``received`` plus the events read."""
        own = self.injector.portid
        unpack = _NLMSG.unpack_from
        by_len = self.table.decoder.shapes.by_len
        plans = self._event_plans
        sel = self.selection
        # the last event's layout and its function: a burst is mostly of one shape
        last, last_len, last_family, event = self._last_event
        miss, filtered = fastpath.MISS, fastpath.FILTERED
        try:
            for off, n in datagrams:
                end = off + n
                while off + _NFHDR <= end:
                    length, mtype, flags, _seq, pid = unpack(buf, off)
                    if length < _NFHDR or off + length > end:
                        log.warning("malformed ctnetlink event of %d bytes dropped", length)
                        break
                    step = (length + 3) & ~3
                    if mtype >> 8 != NFNL_SUBSYS_CTNETLINK:
                        off += step
                        continue
                    received += 1
                    if pid == own and own:
                        self.events_own += 1
                        off += step
                        continue
                    if mtype & 0xFF == IPCTNL_MSG_CT_DELETE:
                        kind = DEL
                    elif flags & _CREATE_EXCL == _CREATE_EXCL:
                        kind = NEW
                    else:
                        kind = UPD
                    aoff, alen = off + _NFHDR, length - _NFHDR
                    off += step
                    family = buf[aoff - 4]
                    # the layout's function checks the headers, reads the values, selects and
                    # says the word in one call
                    word = event(buf, aoff, kind) if alen == last_len and family == last_family \
                        and event is not None else miss
                    if word is miss:
                        for lay in by_len.get(alen, ()):
                            if lay.headers(buf, aoff) == lay.expected and lay.tag == family:
                                break
                        else:
                            try:
                                lay, _values = self.table.decoder.layout(buf, aoff, alen, family)
                            except DecodeError as exc:
                                log.warning("ctnetlink event dropped: %s", exc)
                                continue
                        got = plans.get(id(lay))
                        if got is None or got[0] is not lay:
                            if len(plans) > 4096:
                                plans.clear()
                            got = plans[id(lay)] = (lay, fastpath.event_function(
                                lay, family, sel.everything, sel.hosts_ignored, sel.accepts_raw))
                        last, last_len, last_family, event = lay, alen, family, got[1]
                        word = event(buf, aoff, kind) if event is not None else None
                        if word is miss:  # (cannot be: the function tests the headers just tested)
                            word = None
                    if word is None:  # a shape or an entry without a plan: the entry path
                        self._local_bodies(run)  # in order
                        run.clear()
                        self._entry_event(kind, last.build(last.unpack(buf, aoff)))
                    elif word is filtered:
                        self.events_filtered += 1
                    else:
                        run.append(word)  # type: ignore[arg-type]
        finally:
            self._last_event = (last, last_len, last_family, event)
        return received

    def _learn_vector(self, buf: Any, off: int, size: int) -> None:
        """After a walk: the vector of datagrams of ``size`` bytes, from the last event's
        layout and protocol if that event (at ``off``) filled its datagram; kept only once
        it says that event as the layout's function did (else None: those datagrams are
        walked)."""
        lay, alen, family, event = self._last_event
        if lay is None or event is None or alen + _NFHDR != size:
            return
        if not self.options.internal_cache:  # every event said as it happens, NEW or UPD by its kind
            self._vectors[size] = None
            return
        word = event(buf, off + _NFHDR, NEW)
        if not isinstance(word, tuple):
            return  # not an event the plan says (NAT, filtered, ...): learn from a later one
        key, body = word[1], word[2]
        sel = self.selection
        vec = fastpath.event_vector(lay, family, sel.everything, sel.hosts_ignored, _CT_EVENT_TYPE,
                                    key[len(key) - 11])  # (the key's protocol: before the ports and 6 zeros)
        if vec is None:
            self._vectors[size] = None
            return
        vec.take(0, np.frombuffer(buf, np.uint8, size, off).reshape(1, size))
        if not vec.says(1, self.injector.portid)[0]:
            return
        said = vec.words(0, 1)
        if said[0] != [key] or said[1] != [body] or said[3][0, 8:].tobytes() != body:
            log.warning("the batch plan of a %d-byte event differs from its event plan: not used", size)
            self._vectors[size] = None
            return
        self._vectors[size] = vec

    def _said_rows(self, vec: fastpath.EventVector, n: int, run: list[tuple[str, Any, bytes]], received: int) -> int:
        """The first ``n`` rows of ``vec`` (events of whole reads, one a row), in order: runs
        of rows it says (at least `VECTOR_RUN`) said by it, the others walked one by one.
        Returns ``received`` plus them."""
        ok = vec.says(n, self.injector.portid)
        if ok.all():
            runs = [(0, n, True)]
        else:  # where the rows said turn to rows walked and back
            cuts = [0, *(np.flatnonzero(ok[1:] != ok[:-1]) + 1).tolist(), n]
            runs = [(a, b, bool(ok[a]) and b - a >= VECTOR_RUN) for a, b in zip(cuts, cuts[1:], strict=False)]
        size = vec.length
        for a, b, said in runs:
            if not said:
                part = vec.rows[a:b, :size].tobytes()
                received = self._walk(part, [(i * size, size) for i in range(b - a)], run, received)
                continue
            self._local_bodies(run)  # in order
            run.clear()
            keys, bodies, filtered, array = vec.words(a, b)
            self.events_filtered += filtered
            if keys:
                self._local_block(keys, bodies, array)
            received += b - a
        return received

    def _entry_event(self, kind: str, e: Entry) -> None:
        """An event of a shape without a plan: through the entry (`convert`)."""
        if not self.selection.accepts(e):
            self.events_filtered += 1
            return
        self._local(kind, e)

    def _drain(self, events: EventStream | ExpectEvents) -> None:
        """Empty an overrun event socket before reading the table again.  The kernel reports
        an overrun once, then drops silently until the queue has been emptied: a dump made
        with the queue still full would miss what was dropped after it."""
        if self.events_rcvbuf < self.options.events_rcvbuf_max:  # as conntrackd grows its buffer
            self.events_rcvbuf = min(2 * self.events_rcvbuf, self.options.events_rcvbuf_max)
            events.sock.ensure_rcvbuf(self.events_rcvbuf)
        while True:
            try:
                for _ in events.pending():
                    pass
                return
            except EventsLost:
                continue

    def on_expect_events(self) -> None:
        """Read the kernel's waiting expectation events; queue EXP messages; send."""
        assert self.exp_events is not None
        own = self.injector.portid
        try:
            for kind, x, pid in self.exp_events.pending():
                if pid == own and own:
                    self.events_own += 1
                    continue
                if not self.options.syncs(x):
                    self.events_filtered += 1
                    continue
                self._local_exp(kind, x)
        except EventsLost:
            self.overruns += 1
            self._drain(self.exp_events)
            self.resync_with_kernel(send=True)
        self.flush()

    def _local_exp(self, kind: str, x: Expectation) -> None:
        key = ("exp", x.key)
        if not self.options.internal_cache:  # said as it happens (internal_bypass.c)
            self._send_exp(key, x, _EXP_TYPE[kind])
            return
        if kind == DEL:
            if self.internal_exp.pop(key, None) is not None:
                self.internal_exp_alive.discard(key)
                self._send_exp(key, x, MsgType.EXP_DEL)
            return
        self.internal_exp[key] = x  # a new event: the expectation is new again
        self.internal_exp_alive.discard(key)
        self._send_exp(key, x, MsgType.EXP_NEW)

    def _send_exp(self, key: Any, x: Expectation, mtype: MsgType, peer: Peer | None = None) -> None:
        try:
            msg = convert.from_expectation(x, mtype)
        except InputError as exc:
            self.unsendable += 1
            log.warning("not synced: %s", exc)
            return
        for p in [peer] if peer else self.peers:
            p.session.enqueue(key, msg)

    def _local(self, kind: str, e: Entry) -> None:
        key = fastpath.entry_key(e)
        if kind == DEL and key not in self.internal and self.options.internal_cache:
            return  # never synced: nothing to take back
        body = self._body(e)
        if body is not None:
            self._local_body(kind, key, body)

    def _local_body(self, kind: str, key: Any, body: bytes) -> None:
        self._local_bodies([(kind, key, body)])

    def _local_block(self, keys: list[Any], bodies: list[bytes], array: Any) -> None:
        """`_local_bodies` of NEW or update events said by a vector (``array``: the bodies
        as rows), the cache updated and the words queued a block at once.  Only with the
        internal cache: without it `_learn_vector` makes no vector."""
        internal, since = self.internal, self.internal_since
        n = len(keys)
        now = time.time()
        before = len(internal)
        internal.update(zip(keys, bodies, strict=True))
        if len(internal) - before == n:  # all new (and so no key twice): one pass over the big dict
            types: int | list[int] = _CT_NEW
            new: Any = keys
        else:  # (`internal_since` holds the keys `internal` held before)
            if len(set(keys)) != n:  # a repeated entry: undone, then word by word as the walk's words
                for k in keys:
                    if k not in since:
                        internal.pop(k, None)
                self._local_bodies([(UPD, k, b) for k, b in zip(keys, bodies, strict=True)])
                return
            types = [_CT_UPD if k in since else _CT_NEW for k in keys]
            new = [k for k, t in zip(keys, types, strict=True) if t == _CT_NEW]
        since.update(dict.fromkeys(new, now))
        self.internal_stats.created += len(new)
        self.internal_stats.updated += len(keys) - len(new)
        block = wire.Words(keys, types, bodies, array)
        for p in self.peers:
            enqueue = getattr(p.session, "enqueue_block", None)
            if enqueue is not None:
                enqueue(block)
            else:
                p.session.enqueue_words(block.as_dict())

    def _local_bodies(self, words: list[tuple[str, Any, bytes]]) -> None:
        """This node's entries said by the kernel, (kind, key, body) in order: into the
        internal cache and every peer's queue (the event loop hands them over in runs)."""
        internal_cache = self.options.internal_cache
        internal, since = self.internal, self.internal_since
        now = time.time()
        # each session's queue, in order; a later word on an entry replaces an earlier one
        out: dict[Any, wire.Word] = {}
        created = updated = destroyed = 0
        for kind, key, body in words:
            if not internal_cache:  # every event said as it happens (internal_bypass.c)
                mtype = _CT_TYPE[kind]
                if kind == DEL:
                    destroyed += 1
                elif kind == NEW:
                    created += 1
                else:
                    updated += 1
            elif kind == DEL:
                if internal.pop(key, None) is None:
                    continue  # never synced: nothing to take back
                since.pop(key, None)
                destroyed += 1
                mtype = _CT_DEL
            else:
                if key in internal:
                    updated += 1
                    mtype = _CT_UPD
                else:
                    created += 1
                    since[key] = now
                    mtype = _CT_NEW
                internal[key] = body
            if key in out:
                del out[key]
            out[key] = (key, mtype, body)
        stats = self.internal_stats
        stats.created += created
        stats.updated += updated
        stats.destroyed += destroyed
        if out:
            last = len(self.peers) - 1
            for i, p in enumerate(self.peers):
                p.session.enqueue_words(out if i == last else dict(out))  # (a session may keep it)

    def _body(self, e: Entry) -> bytes | None:
        """The body of the message that says ``e`` (None, counted, when it cannot be said)."""
        try:
            return convert.from_entry(e).body
        except InputError as exc:
            self.unsendable += 1
            log.warning("not synced: %s", exc)
            return None

    def _send_body(self, key: Any, mtype: MsgType, body: bytes, peer: Peer | None = None) -> None:
        msg = wire.StateMessage(mtype, body=body)
        for p in [peer] if peer else self.peers:
            p.session.enqueue(key, msg)

    def internal_entries(self) -> dict[Any, Entry]:
        """The internal cache as entries (for `conntrackd -i`)."""
        return {key: convert.to_entry(wire.StateMessage(MsgType.CT_NEW, body=body))
                for key, body in self.internal.items()}

    def bulk(self, peer: Peer | None = None) -> int:
        """Queue every entry of the internal cache (to ``peer``, or to all); an expectation
        goes as EXP_NEW, or EXP_UPD once a resync with the kernel found it again, as
        conntrackd sends a cache object by its status.  Without the internal cache
        (DisableInternalCache), every entry of the kernel table the Filter accepts, as
        CT_NEW (sync-notrack.c's kernel_resync)."""
        if not self.options.internal_cache:
            n = 0
            for e in self.table.entries():
                body = self._body(e) if self.selection.accepts(e) else None
                if body is not None:
                    self._send_body(fastpath.entry_key(e), MsgType.CT_NEW, body, peer)
                    n += 1
            return n
        for key, body in self.internal.items():
            self._send_body(key, MsgType.CT_UPD, body, peer)
        for key, x in self.internal_exp.items():
            self._send_exp(key, x, MsgType.EXP_UPD if key in self.internal_exp_alive else MsgType.EXP_NEW, peer)
        return len(self.internal)

    def flush(self, now: float | None = None) -> None:
        """Send what the sessions have queued."""
        now = time.monotonic() if now is None else now
        for p in self.peers:
            for dg in p.session.transmit_datagrams(now, p.datagram_limit):
                if p.send(dg):
                    p.link.packets_sent += 1
                    p.link.bytes_sent += len(dg)
                else:
                    p.link.send_errors += 1

    def tick(self, now: float | None = None) -> None:
        """Heartbeats, ACKs owed, ALARM refreshes; then send."""
        now = time.monotonic() if now is None else now
        o = self.options
        if o.refresh_time and now - self._last_refresh >= o.refresh_time:
            self._last_refresh = now
            self.bulk()
        if o.cache_timeout and self.external:
            cut = time.time() - o.cache_timeout
            for key in [k for k, t in self.external_since.items() if t < cut]:
                self.external.pop(key, None)
                self.external_since.pop(key, None)
                self.external_stats.destroyed += 1
        for p in self.peers:
            p.session.tick(now)
        self.flush(now)

    # ---- peers -> kernel ---------------------------------------------------

    def on_datagram(self, peer: Peer, data: bytes, now: float | None = None) -> None:
        """A datagram from ``peer``: through its session, into the kernel (or external cache)."""
        self.on_datagrams(peer, [data], now)

    def on_datagrams(self, peer: Peer, datagrams: list[bytes], now: float | None = None) -> None:
        """Datagrams from ``peer``, in order; what they say goes to the kernel in one batch
        (several hundred entries a sendmsg rather than a datagram's twenty)."""
        now = time.monotonic() if now is None else now
        p = peer
        changes: list[Change] = []
        exp_changes: list[tuple[str, Expectation]] = []
        bulk = False
        for data in datagrams:
            p.link.packets_recv += 1
            p.link.bytes_recv += len(data)
            try:
                msgs = wire.decode_datagram(data)
            except DecodeError as exc:
                p.link.malformed += 1
                log.debug("malformed datagram from %s dropped: %s", p.name, exc)
                continue
            # silent for longer than conntrackd's ALIVE period (one a second): it stopped
            quiet = p.last_heard is not None and now - p.last_heard >= RESTART_QUIET_S
            p.last_heard = now
            for m in msgs:
                # the peer (re)started and knows nothing: a HELLO from a peer never heard, from
                # one that had finished its handshake (said no more HELLO), or that does not
                # continue its numbering.  Not the numbering alone: conntrackd starts at the Unix
                # time and a quiet one sends one message a second, so a restarted one can go on
                # from the number after its last; and a peer stopped before its handshake
                # finished (it never sent a message without HELLO) is known by its silence
                # before this HELLO.  A peer repeating HELLO until it hears HELLO_BACK (at
                # least once a second) is told once.
                if m.flags & _HELLO:
                    if self.options.hello_bulk and (p.last_seq is None or p.handshake_done or quiet
                                                    or m.seq != (p.last_seq + 1) & 0xFFFFFFFF):
                        bulk = True
                    p.handshake_done = False
                else:
                    p.handshake_done = True
                p.last_seq = m.seq
                for ev in p.session.receive(m):
                    if isinstance(ev, Apply):
                        self._remote(ev.message, changes, exp_changes)
                    elif isinstance(ev, ResyncRequested):
                        log.info("resync requested by %s", p.name)
                        bulk = True
        if changes:
            self.injector.apply_changes(changes)
        if exp_changes:  # after the entries: an expectation needs its master in the table
            self.injector.apply_expectations(exp_changes)
        if bulk:
            self.bulk(p)
        self.flush(now)

    def _remote(self, msg: wire.StateMessage, changes: list[Change],
                exp_changes: list[tuple[str, Expectation]]) -> None:
        if msg.type > MsgType.CT_DEL:  # (not `in CT_TYPES`: an enum's hash is slow)
            self._remote_exp(msg, exp_changes)
            return
        kind = _KINDS[msg.type]
        shape = msg.shape
        if shape is not None and not self.options.external_cache:  # NEW, UPD and DEL alike
            got = self._create_plans.get(id(shape))
            if got is None or got[0] is not shape:
                got = self._create_plans[id(shape)] = (shape, fastpath.create_plan(shape))
            planned = got[1](shape.values(msg.body, 0)) if got[1] is not None else None
            if planned is not None:  # the entry is made only if the kernel refuses the create
                changes.append((kind, planned[0], functools.partial(convert.to_entry, msg), planned))
                return
        try:
            e = convert.to_entry(msg)
        except DecodeError as exc:
            log.debug("entry dropped: %s", exc)
            return
        if not self.options.external_cache:
            changes.append((kind, fastpath.entry_key(e), e, None))
            return
        key = e.key
        if kind == DEL:
            if self.external.pop(key, None) is not None:
                self.external_since.pop(key, None)
                self.external_stats.destroyed += 1
            return
        if key in self.external:
            self.external_stats.updated += 1
        else:
            self.external_stats.created += 1
        self.external[key] = e
        self.external_since[key] = time.time()

    def _remote_exp(self, msg: wire.StateMessage, exp_changes: list[tuple[str, Expectation]]) -> None:
        try:
            x = convert.to_expectation(msg)
        except DecodeError as exc:
            log.debug("expectation dropped: %s", exc)
            return
        kind = _KIND_OF[msg.type]
        if not self.options.external_cache:
            exp_changes.append((kind, x))
        elif kind == DEL:
            self.external_exp.pop(x.key, None)
        else:
            self.external_exp[x.key] = x

    # ---- commands (conntrackd's clients) -----------------------------------

    def commit(self) -> int:
        """Put the external cache into the kernel table; returns how many entries."""
        entries = list(self.external.values())
        self.injector.apply((UPD, Entry(e.orig, e.reply, status=e.status, state=e.state, timeout=e.timeout,
                                        mark=e.mark, zone=e.zone, labels=e.labels, helper=e.helper,
                                        vtags=e.vtags))
                            for e in entries)
        self.injector.apply_expectations((UPD, x) for x in list(self.external_exp.values()))
        return len(entries)

    def flush_caches(self, internal: bool = True, external: bool = True) -> None:
        if internal and not self.options.internal_cache:
            # no cache to flush: the kernel entries it would hold go (internal_bypass.c's
            # flush, nl_flush_conntrack_table_selective: those the Filter accepts)
            self.table.delete_many([e for e in self.table.entries() if self.selection.accepts(e)])
        elif internal:
            self.internal.clear()
            self.internal_since.clear()
        if external:
            self.external.clear()
            self.external_since.clear()
            self.external_exp.clear()

    def resync_with_kernel(self, send: bool = False) -> int:
        """Read the kernel table into the internal cache (``send``: queue what changed).

        Expectations found again become "alive" and are said with EXP_UPD, new ones with
        EXP_NEW, vanished ones with EXP_DEL (internal_cache.c's resync and purge).
        Without the internal cache there is nothing to read into: nothing is done."""
        self.kernel_resyncs += 1
        if not self.options.internal_cache:
            return 0
        seen = set()
        now = time.time()
        for e in self.table.entries():
            if not self.selection.accepts(e):
                continue
            body = self._body(e)
            if body is None:
                continue
            key = fastpath.entry_key(e)
            seen.add(key)
            if key not in self.internal:
                self.internal_since[key] = now
                self.internal_stats.created += 1
            self.internal[key] = body
            if send:
                self._send_body(key, MsgType.CT_UPD, body)
        for key in [k for k in self.internal if k not in seen]:
            body = self.internal.pop(key)
            self.internal_since.pop(key, None)
            if send:
                self._send_body(key, MsgType.CT_DEL, body)
        if self.options.expectations:
            self._resync_expectations(send)
        return len(seen)

    def _resync_expectations(self, send: bool) -> None:
        now: dict[Any, Expectation] = {("exp", x.key): x for x in ExpectTable(self.table).entries()
                                       if self.options.syncs(x)}
        for key, x in now.items():
            known = key in self.internal_exp
            if known:
                self.internal_exp_alive.add(key)
            if send:
                self._send_exp(key, x, MsgType.EXP_UPD if known else MsgType.EXP_NEW)
        for key in [k for k in self.internal_exp if k not in now]:
            gone = self.internal_exp.pop(key)
            self.internal_exp_alive.discard(key)
            if send:
                self._send_exp(key, gone, MsgType.EXP_DEL)
        self.internal_exp.update(now)

    def request_resync(self) -> None:
        for p in self.peers:
            p.session.request_resync()
        self.flush()

    def reset_timers(self) -> int:
        """Shorten the kernel's timeouts to PurgeTimeout (entries with longer ones)."""
        purge = self.options.purge_timeout
        slow = [e for e in self.table.entries() if e.timeout is None or e.timeout > purge]
        return self.table.update_many(slow, timeout=purge).deleted

    # ---- what it did -------------------------------------------------------

    def status(self) -> dict[str, Any]:
        peers = []
        for p in self.peers:
            s = p.session.stats
            state = getattr(getattr(p.session, "hello", None), "name", None)
            peers.append({
                "name": p.name, "handshake": state, "last_seq": p.last_seq, "last_heard_ago": None if p.last_heard is None
                else round(time.monotonic() - p.last_heard, 3),
                "messages_sent": s.sent, "messages_received": s.received, "entries_received": s.applied,
                "resent": s.resent, "lost": s.lost, "late": s.dropped_late, "acked": s.acked,
                "nacks_sent": s.nacks_sent, "nacks_received": s.nacks_received,
                "resend_queue": p.session.resend_queue_depth,
                "datagrams_sent": p.link.packets_sent, "datagrams_received": p.link.packets_recv,
                "bytes_sent": p.link.bytes_sent, "bytes_received": p.link.bytes_recv,
                "send_errors": p.link.send_errors, "malformed": p.link.malformed,
            })
        i = self.injector.stats
        return {
            "internal_cache": len(self.internal), "external_cache": len(self.external),
            "internal_expectations": len(self.internal_exp), "external_expectations": len(self.external_exp),
            "events": {"received": self.events_received, "filtered": self.events_filtered,
                       "own": self.events_own, "overruns": self.overruns, "unsendable": self.unsendable},
            "inject": {"created": i.created, "create_failed": i.create_failed, "updated": i.updated,
                       "update_failed": i.update_failed, "destroyed": i.destroyed,
                       "destroy_failed": i.destroy_failed, "expectations_created": i.exp_created,
                       "expectations_failed": i.exp_failed, "expectations_destroyed": i.exp_destroyed},
            "peers": peers,
        }
