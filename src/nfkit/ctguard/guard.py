"""The ctguard daemon: the picture fed by events, the policy applied every interval.

Kernel I/O happens here only: events read as they come (a resync dump after
lost events, counted: the only full dumps ctguard makes), the table's size from
/proc (the namespace's own count), idleness read by a get of each eviction
candidate, evictions and timeout updates as pipelined requests, and the
namespace's timeout sysctls (saved at the first change, restored when the
pressure ends and on exit).  Each round puts relief first.  While the picture is
inexact or behind (events lost, the resync put off, events waiting unread), the
sources over their share are read again before the round takes their excess, and
the unreplied entries are deleted as a dump the kernel filters returns them,
each dump stopped once the round has what it needs; a resync owed waits while
the fill is at or above evict_at.  Topology: route events become stale-entry
flushes (`nfkit.conntrack.stale`).
"""

from __future__ import annotations

import collections
import errno
import gc
import logging
import selectors
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from nfkit.conntrack import wire
from nfkit.conntrack.filter import Filter, Prefix
from nfkit.conntrack.model import Entry, Status
from nfkit.conntrack.stale import flush_stale
from nfkit.conntrack.table import ConntrackTable
from nfkit.ctguard import limit as source_limit
from nfkit.ctguard import policy, size
from nfkit.ctguard.config import thresholds
from nfkit.ctguard.feed import PictureFeed
from nfkit.ctguard.picture import Key, Picture, Record, entry_key
from nfkit.ctguard.topology import DEFAULT_RULE, Topology
from nfkit.errors import DumpInterrupted, EventsLost, NetlinkError
from nfkit.netlink import mmsg
from nfkit.netlink.codec import MessageWriter, parse_error
from nfkit.netlink.consts import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_ERROR
from nfkit.netlink.socket import NetlinkSocket
from nfkit.route.rtnl import RouteEvents, Rtnl
from nfkit.service import scheduler
from nfkit.service.config import Config
from nfkit.service.daemon import Service

log = logging.getLogger("nfkit.ctguard")

PROC_NF = Path("/proc/sys/net/netfilter")
EVENT_BUFFER = 128 << 20  # bytes queued for us: ~100,000 events, a second's burst at full rate
EVENT_SLICE = 0.05  # seconds of events handled before the loop gets a turn
EVENT_GATHER = 0.005  # seconds, at least, from the queue read empty to the next read (the picture that much behind)
EVENT_SLOTS = 256  # event datagrams read by one recvmmsg (ctnetlink sends one event a datagram)
FULL_TIMEOUT = {6: "nf_conntrack_tcp_timeout_established", 17: "nf_conntrack_udp_timeout_stream"}
SO_MEMINFO = 55  # getsockopt: the socket's memory; the first u32 is what the kernel queued for us
BACKLOG_BEHIND = 256 << 10  # bytes of unread events (~300) from which an eviction round reads its candidates again
CANDIDATE_SOURCES = 8  # sources whose entries are read again a round while the picture is inexact
SOURCE_READS = 0.25  # seconds: no further source is read again once a round has spent this (under churn an
# entry read seconds before its delete is gone by then; the rest are read in the next rounds)
UNREPLIED = Filter(status_clear=int(Status.SEEN_REPLY | Status.ASSURED))  # cost tier 0


def dump_request(flt: Filter, family: int) -> MessageWriter:
    """A conntrack dump request of ``family`` carrying ``flt``'s kernel part."""
    w = MessageWriter()
    w.begin(wire.MSG_GET, NLM_F_REQUEST | NLM_F_DUMP, family=family)
    flt.put_kernel_attrs(w, family)
    w.end()
    return w


def read_sysctl(name: str) -> int:
    return int((PROC_NF / name).read_text().split()[0])


def write_sysctl(name: str, value: int) -> None:
    (PROC_NF / name).write_text(f"{value}\n")


class Guard(Service):
    name = "ctguard"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.t = thresholds(cfg)
        self.budget = cfg["limits"]["budget"]
        self.interval = cfg["limits"]["interval"]
        self.picture = Picture()
        self.saved_timeouts: dict[str, int] = {}
        self.actions: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self.dumps = 0
        self.candidate_dumps = 0  # filtered dumps of a decision's slices while the picture is inexact
        # more than a tenth of the last round's deletes found nothing: the picture is behind the
        # kernel (events not read yet: ctguard short of CPU), and is read again as after lost events
        self.behind = False
        self.resync_interval = float(cfg["limits"]["resync_interval"])
        self.last_dump = float("-inf")
        self.resync_due: float | None = None  # a resync put off by the rate limit, or by the pressure
        self.resync_waiting = False  # the due resync is put off while the fill is at or above evict_at
        # entries to shorten (keys of the picture's records in the shortened states when the pressure
        # began), a `timeout_updates` slice a round after the evictions, never all in one round
        self.to_shorten: list[Key] = []
        self.timeout_updates = cfg["limits"]["timeout_updates"]
        self.shortened = 0
        self.overruns = 0  # times the kernel dropped events (each one ENOBUFS)
        self.limited: int | None = None  # N of the installed `ct count over N` rule
        self.evicted = 0
        self.flushed = 0
        self.registry = CollectorRegistry()
        r = self.registry
        self.m_entries = Gauge("nfkit_ctguard_entries", "conntrack entries", registry=r)
        self.m_fill = Gauge("nfkit_ctguard_fill_ratio", "entries / limit", registry=r)
        self.m_evicted = Counter("nfkit_ctguard_evictions_total", "entries evicted", ["reason"],
                                 registry=r)
        self.m_resyncs = Counter("nfkit_ctguard_resyncs_total", "full dumps after lost events",
                                 registry=r)
        self.m_candidate_dumps = Counter("nfkit_ctguard_candidate_dumps_total",
                                         "filtered dumps of eviction candidates after lost events",
                                         registry=r)
        self.m_overruns = Counter("nfkit_ctguard_event_overruns_total",
                                  "times the kernel dropped conntrack events for ctguard", registry=r)
        self.m_flushed = Counter("nfkit_ctguard_stale_flushed_total",
                                 "entries flushed after topology changes", registry=r)
        self.topology: Topology | None = None
        self.table: ConntrackTable | None = None
        self.stream: Any = None
        self.routes: RouteEvents | None = None
        self.scheduling = "normal"  # the CPU scheduling had ([scheduler])

    # ------------------------------------------------------------ lifecycle
    def start(self, selector: selectors.BaseSelector) -> None:
        sched = self.cfg["scheduler"]
        if sched["type"] != "normal":  # first: a refusal (named in the file: an error) starts nothing
            self.scheduling = scheduler.apply(
                sched["type"].upper(), sched["priority"], given=True, log=log,
                setting=f"scheduler type {sched['type']!r} priority {sched['priority']}",
                risk="on a loaded machine ctguard can fall behind the events it must follow")
        size_cfg = self.cfg["size"]
        if size_cfg["apply"]:  # before anything else: a refusal leaves nothing half-started
            p = size.plan(size.parse_size(size_cfg["memory"]), size_cfg["entries_per_bucket"])
            size.apply(p)
            self.act("size", f"{p.max} entries and {p.buckets} buckets in {size_cfg['memory']} "
                     f"({p.entry_bytes}-byte entries)", p.max)
        # the picture's records are many, long-lived and hold no cycles: a collection every 700
        # allocations (Python's default) would walk the young ones again and again for nothing
        gc.set_threshold(100_000, 20, 100)
        self.table = ConntrackTable()
        self.stream = self.table.events(resync=False, rcvbuf=EVENT_BUFFER)
        self.feed = PictureFeed(self.picture, self.table.decoder)
        self.receiver = mmsg.receiver(self.stream.sock.sock, EVENT_SLOTS)
        self.drained = float("-inf")  # when the event queue was last read empty
        selector.register(self.stream, selectors.EVENT_READ, self.on_conntrack)
        self.resync("start")
        self.follow_topology(selector)
        self.act("scheduler", f"[scheduler] type {sched['type']!r}: {self.scheduling}", 0)

    def stop(self) -> None:
        try:
            self.restore_timeouts("stopping")
            if self.limited is not None:
                self.lift_source_limit("stopping")
        finally:
            for sock in (self.stream, self.routes, self.table):
                if sock is not None:
                    sock.close()

    # ------------------------------------------------------------ inputs
    def resync(self, why: str) -> None:
        """One full dump into a fresh picture, through the same layouts as events (no Entry per
        entry), which then replaces the picture (each entry keeping its age)."""
        assert self.table is not None
        self.dumps += 1
        self.m_resyncs.inc()
        self.resync_due = None
        self.resync_waiting = False
        fresh = Picture()
        feed = PictureFeed(fresh, self.table.decoder).feed
        now = time.monotonic()
        for datagram in self.table.sock.dump_datagrams(dump_request(Filter(), 0), what="conntrack dump"):
            feed(datagram, len(datagram), now)
        self.picture.take(fresh)
        self.last_dump = time.monotonic()
        self.act("resync", why, len(self.picture))

    def read_source_candidates(self, need: int, limit: int) -> None:
        """While the picture is inexact (events lost, resync put off; or behind the kernel: events
        unread, or more than a tenth of the last round's deletes found nothing), read again the
        entries of the sources the picture has over their share before the round takes their
        excess (a dump the kernel filters by source address: CTA_FILTER), each stopped once it
        holds what the round can take.  A source's dump read to its end is exact for that
        source: records it did not return are dropped (their destroy events were lost).  The
        unreplied entries are not read into the picture: `evict_unreplied` deletes them as
        their dump returns them.  At most `CANDIDATE_SOURCES` sources, and none after
        `SOURCE_READS` seconds.  Never a full dump."""
        share = policy.fair_share(self.picture, limit, self.t)
        by_source = self.picture.by_source
        over = sorted((s for s, n in by_source.items() if n > share), key=by_source.__getitem__, reverse=True)
        began = time.monotonic()
        for src in over[:CANDIDATE_SOURCES]:
            if time.monotonic() - began >= SOURCE_READS:
                break
            flt = Filter(src=Prefix.parse(src, "source"))
            if not flt.kernel_only:
                continue  # an address this kernel cannot filter on (IPv6): not worth a wide dump
            before = dict(self.picture.of_source.get(src, {}))
            if self.candidate_dump(flt, share + need):
                records = self.picture.records
                for key, r in before.items():
                    if records.get(key) is r:  # not in the dump (a record read again is a new one)
                        self.picture.forget(key)

    def evict_unreplied(self, most: int, count: int, limit: int, began: float) -> int:
        """Evict up to ``most`` unreplied entries (the cheapest tier) as a dump the kernel filters
        (CTA_STATUS/CTA_STATUS_MASK) returns them: each datagram's entries deleted at once on a
        second socket, their key attributes copied (no record, no Entry), so little time passes
        between reading an entry and deleting it (under churn the picture's oldest unreplied
        entries are gone before a delete reaches them); the dump is stopped once ``most`` are
        deleted.  Read to its end, the dump is exact for the tier: its records left are dropped.
        Returns how many were deleted."""
        self.candidate_dumps += 1
        self.m_candidate_dumps.inc()
        deletes = self.feed.deletes
        out = bytearray()
        sent = vanished = 0
        failed: dict[int, int] = {}
        whole = False
        with NetlinkSocket() as dsock:
            dsock.ensure_rcvbuf(8 << 20)
            try:
                with NetlinkSocket() as sock:
                    for datagram in sock.dump_datagrams(dump_request(UNREPLIED, UNREPLIED.families()[0]),
                                                        what="conntrack dump"):
                        keys = deletes(datagram, len(datagram), out, sent, most - (sent - vanished))
                        if not keys:
                            continue
                        dsock.send(out)  # every entry in it is one the dump has passed: the walk goes on
                        del out[:]
                        sent += len(keys)
                        for msg in dsock.messages(block=False):  # errors only (no acks asked)
                            if msg.type == NLMSG_ERROR and (err := parse_error(msg).errno):
                                if err == errno.ENOENT:
                                    vanished += 1
                                else:
                                    failed[err] = failed.get(err, 0) + 1
                        for key in keys:
                            self.picture.forget(key)
                        if sent - vanished - sum(failed.values()) >= most:
                            break
                    else:
                        whole = True
            except DumpInterrupted:
                pass
        if whole:  # every unreplied entry the kernel has was returned (and deleted)
            for key in list(self.picture.tiers[0]):
                self.picture.forget(key)
        deleted = sent - vanished - sum(failed.values())
        self.evicted += deleted
        self.m_evicted.labels("unreplied").inc(deleted)
        self.behind = 10 * vanished > sent
        why = (f"fill {count}/{limit} at or above {self.t.evict_at:.0%}: {deleted} unreplied (deleted as "
               f"the kernel's filtered dump returned them)")
        if vanished:
            why += f"; {vanished} already gone"
        if failed:
            why += f"; refused: {' '.join(f'{errno.errorcode.get(e, e)} x{n}' for e, n in failed.items())}"
        self.act("evict", why + f"; round {1000 * (time.monotonic() - began):.0f} ms", deleted)
        return deleted

    def candidate_dump(self, flt: Filter, most: int) -> bool:
        """Feed the picture the entries ``flt`` selects, from a dump the kernel filters, stopped
        once ``most`` are read (its own socket, closed: the kernel drops the rest of the dump
        unsent).  True when the dump was read to its end."""
        self.candidate_dumps += 1
        self.m_candidate_dumps.inc()
        family = flt.families()[0]
        feed = self.feed.feed
        now = time.monotonic()
        read = 0
        try:
            with NetlinkSocket() as sock:
                for datagram in sock.dump_datagrams(dump_request(flt, family), what="conntrack dump"):
                    read += feed(datagram, len(datagram), now)
                    if read >= most:
                        return False
            return True
        finally:
            self.picture.events -= read  # records of a dump, not events

    def on_conntrack(self) -> None:
        # every datagram waiting, up to `EVENT_SLOTS` a system call (recvmmsg), decoded straight
        # into the picture (no Entry, no Event per event); a burst must not hold the policy
        # back: back to the loop after a slice
        receive = self.receiver.receive
        buf = self.receiver.buffer
        feed = self.feed.feed_slots
        now = time.monotonic()
        if now - self.drained < EVENT_GATHER:  # let events gather: a wakeup per few events costs more than they do
            time.sleep(EVENT_GATHER - (now - self.drained))
            now = time.monotonic()
        until = now + EVENT_SLICE
        try:
            while True:
                slots = receive()
                if not slots:
                    self.drained = now
                    return
                feed(buf, slots, now)
                now = time.monotonic()
                if now >= until:
                    return
        except EventsLost:
            self.events_lost(time.monotonic())

    def backlog(self) -> int:
        """Bytes of events the kernel has queued for ctguard and it has not read yet."""
        raw = self.stream.sock.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4)
        return int(struct.unpack("=I", raw[:4])[0])

    def events_lost(self, now: float) -> None:
        """The kernel dropped events: the picture is inexact until a resync (the next round's),
        and resyncs are rate-limited (`resync_interval`): a flood that overruns the socket again
        and again gets one full dump per interval, never one per overrun."""
        self.overruns += 1
        self.m_overruns.inc()
        if self.resync_due is not None:
            return  # already owed; the overrun is counted
        if now - self.last_dump >= self.resync_interval:
            self.resync_due = now  # the next round's, not here: a round under pressure relieves first
        else:
            self.resync_due = self.last_dump + self.resync_interval
            self.act("resync deferred", f"the kernel dropped events {now - self.last_dump:.1f} s after "
                     f"the last dump; the picture is inexact (counts from the kernel) until the "
                     f"next, in {self.resync_due - now:.1f} s", len(self.picture))

    def follow_topology(self, selector: selectors.BaseSelector) -> None:
        rules = self.cfg["topology"] or [DEFAULT_RULE]
        if all(r[k] == "none" for r in rules for k in ("address_removed", "link_down", "link_up",
                                                        "route_change")) and not any(r["mask"] for r in rules):
            return  # nothing to follow
        self.routes = RouteEvents()  # subscribed before the picture is read: no change falls between
        with Rtnl() as rt:
            self.topology = Topology(rules, rt.links(), rt.addresses())
        selector.register(self.routes, selectors.EVENT_READ, self.on_route)

    def on_route(self) -> None:
        assert self.routes is not None and self.table is not None and self.topology is not None
        try:
            events = list(self.routes.pending())
        except EventsLost:  # links and addresses read again: what changed meanwhile is unknown
            with Rtnl() as rt:
                self.topology = Topology(self.topology.rules.values(), rt.links(), rt.addresses())
            self.act("topology resync", "the kernel dropped route events", 0)
            return
        for kind, present, obj in events:
            for why, flt in self.topology.filters(kind, present, obj):
                result = flush_stale(self.table, [flt])
                self.flushed += result.deleted
                self.m_flushed.inc(result.deleted)
                self.act("flush stale", f"{why}: {flt.describe()}", result.deleted)

    # ------------------------------------------------------------ the policy
    def limit(self) -> int:
        return self.budget or read_sysctl("nf_conntrack_max")

    def tick(self) -> float:
        """One round, relief first: the kernel's count; the evictions (from candidates read
        again by filtered dumps when the picture is inexact or behind: events lost, or more
        than `BACKLOG_BEHIND` of them unread); then the source limit; then the timeouts (the
        sysctls at once, the existing entries a `timeout_updates` slice a round).  A resync owed
        after lost events waits while the fill is at or above the first threshold (timeouts_at,
        or evict_at if lower: a full dump of a filling table takes seconds, during which the
        fill may cross evict_at, and relief needs none), for at most another `resync_interval`."""
        count, limit = read_sysctl("nf_conntrack_count"), self.limit()
        need = policy.to_evict(count, limit, self.t)
        now = time.monotonic()
        if self.resync_due is not None and now >= self.resync_due:
            first = min(self.t.timeouts_at, self.t.evict_at)  # where the pressure begins
            if limit and count >= first * limit and now < self.resync_due + self.resync_interval:
                if not self.resync_waiting:
                    self.resync_waiting = True
                    self.act("resync put off", f"fill {count}/{limit} at or above {first:.0%}: relief "
                             "first, candidates read by filtered dumps", len(self.picture))
            else:
                self.resync(f"the kernel dropped events ({self.overruns} overruns so far)")
                count, limit = read_sysctl("nf_conntrack_count"), self.limit()
                need = policy.to_evict(count, limit, self.t)
        self.m_entries.set(count)
        self.m_fill.set(count / limit if limit else 0)
        began = time.monotonic()
        if need and (self.resync_due is not None or self.behind or self.backlog() > BACKLOG_BEHIND):
            # the picture is inexact or behind: the sources over their share read again and
            # their excess taken, then the unreplied entries as the kernel returns them, then
            # (if still short) the picture's own order
            try:
                self.read_source_candidates(need, limit)
                read = time.monotonic() - began
                eviction = policy.choose(self.picture, count, limit, self.t, self.idleness, sources_only=True)
                if eviction.records:
                    need -= self.evict(eviction, count, limit, began, read)
                    began, read = time.monotonic(), 0.0
                if need > 0:
                    need -= self.evict_unreplied(need, count, limit, began)
                    began = time.monotonic()
            except NetlinkError as exc:  # decide from the picture as it is; said, not hidden
                self.act("candidate dump refused", str(exc), 0)
        read = time.monotonic() - began
        eviction = policy.choose(self.picture, count, limit, self.t, self.idleness, need=need)
        if eviction.records:
            self.evict(eviction, count, limit, began, read)
        if self.cfg["limits"]["source_limit"]:
            self.check_source_limit(count, limit)
        wanted = policy.timeouts_wanted(count, limit, bool(self.saved_timeouts), self.t)
        if wanted is True:
            self.shorten_timeouts(count, limit)
        elif wanted is False:
            self.restore_timeouts(f"fill {count}/{limit} below {self.t.restore_below:.0%}")
        if self.to_shorten and not need:  # under eviction the round's time goes to relief
            self.shorten_some()
        return float(self.interval)

    def check_source_limit(self, count: int, limit: int) -> None:
        """Install the per-source `ct count` rule when, at `evict_at`, a source holds more than
        its share; remove it when the fill is back below `restore_below`."""
        if self.limited is None and count >= self.t.evict_at * limit:
            share = policy.fair_share(self.picture, limit, self.t)
            top = self.picture.by_source.most_common(1)
            if top and top[0][1] > share:
                source_limit.install(share, self.cfg["limits"]["source_limit_sets"])
                self.limited = share
                self.act("limit sources", f"fill {count}/{limit}, {top[0][0]} holds {top[0][1]} entries "
                         f"over a share of {share}: new connections limited to {share} per source", share)
        elif self.limited is not None and count < self.t.restore_below * limit:
            self.lift_source_limit(f"fill {count}/{limit} below {self.t.restore_below:.0%}")

    def lift_source_limit(self, why: str) -> None:
        source_limit.remove()
        self.act("lift source limit", why, self.limited or 0)
        self.limited = None

    def idleness(self, records: Sequence[Record]) -> dict[Key, float]:
        """Seconds each candidate has been idle: its state's full timeout minus what is left."""
        assert self.table is not None
        full = {proto: read_sysctl(name) for proto, name in FULL_TIMEOUT.items()}  # once a round
        out: dict[Key, float] = {}
        for r in records:
            key = entry_key(r.entry)
            try:
                left = self.table.get(r.entry.orig, r.entry.zone or 0).timeout or 0
            except NetlinkError:
                out[key] = float("inf")  # gone already: evicting it costs nothing
                continue
            out[key] = full.get(r.entry.orig.proto, left) - left
        return out

    def evict(self, eviction: policy.Eviction, count: int, limit: int, began: float, read: float) -> int:
        """Delete the chosen entries; the action says what went and the round's time (``began``:
        when the round began; ``read``: seconds of it reading candidates again).  Returns how
        many were deleted."""
        assert self.table is not None
        chosen = time.monotonic()
        result = self.table.delete_many(r.entry for r in eviction.records)
        for r in eviction.records:
            self.picture.forget(entry_key(r.entry))
        self.evicted += result.deleted
        for reason, n in eviction.reasons.items():
            self.m_evicted.labels(reason).inc(n)
        why = ", ".join(f"{n} {reason}" for reason, n in eviction.reasons.items())
        # more than a tenth already gone: candidates read again until the rounds find what they choose
        self.behind = 10 * result.vanished > len(eviction.records)
        if result.vanished:
            why += f"; {result.vanished} already gone" + (" (the picture is behind: candidates read "
                                                          "again next round)" if self.behind else "")
        done = time.monotonic()
        why += (f"; round {1000 * (done - began):.0f} ms (candidates read {1000 * read:.0f} + chosen "
                f"{1000 * (chosen - began - read):.0f} + deleted {1000 * (done - chosen):.0f})")
        self.act("evict", f"fill {count}/{limit} at or above {self.t.evict_at:.0%}: {why}",
                 result.deleted)
        return result.deleted

    def shorten_timeouts(self, count: int, limit: int) -> None:
        """The sysctls at once (new entries); the existing entries in those states queued, to be
        updated a `timeout_updates` slice a round (`shorten_some`)."""
        for name in policy.SHORTENED_STATES:
            current = read_sysctl(name)
            if current > self.t.short_timeout:
                self.saved_timeouts[name] = current
                write_sysctl(name, self.t.short_timeout)
        states = {s for name in self.saved_timeouts for s in policy.SHORTENED_STATES[name]}
        self.to_shorten = [k for k, r in self.picture.records.items() if r.state in states]
        self.to_shorten.reverse()  # popped from the end: the oldest first
        self.act("shorten timeouts", f"fill {count}/{limit} at or above {self.t.timeouts_at:.0%}: "
                 f"{', '.join(sorted(self.saved_timeouts))} to {self.t.short_timeout} s; "
                 f"{len(self.to_shorten)} existing entries to update, {self.timeout_updates} a round",
                 len(self.to_shorten))

    def shorten_some(self) -> None:
        """Update the timeout of the next `timeout_updates` queued entries still in the picture."""
        assert self.table is not None
        queue, records = self.to_shorten, self.picture.records
        entries: list[Entry] = []
        while queue and len(entries) < self.timeout_updates:
            r = records.get(queue.pop())
            if r is not None:
                entries.append(r.entry)
        if entries:
            self.shortened += self.table.update_many(entries, timeout=self.t.short_timeout).deleted

    def restore_timeouts(self, why: str) -> None:
        self.to_shorten = []
        if not self.saved_timeouts:
            return
        for name, value in self.saved_timeouts.items():
            write_sysctl(name, value)
        self.act("restore timeouts", why, len(self.saved_timeouts))
        self.saved_timeouts = {}

    # ------------------------------------------------------------ reporting
    def act(self, action: str, why: str, entries: int) -> None:
        log.info("%s (%d): %s", action, entries, why)
        self.actions.append({"time": time.time(), "action": action, "why": why, "entries": entries})

    def status(self) -> dict[str, Any]:
        try:
            count, limit = read_sysctl("nf_conntrack_count"), self.limit()
        except OSError:
            count, limit = len(self.picture), self.budget
        return {
            "entries": count, "limit": limit, "fill": round(count / limit, 4) if limit else None,
            "budget": self.budget or None,
            "by_state": dict(self.picture.by_state),
            "top_sources": self.picture.top_sources(10),
            "timeouts_shortened": sorted(self.saved_timeouts),
            "timeout_updates": self.shortened, "timeout_updates_pending": len(self.to_shorten),
            "evicted": self.evicted, "stale_flushed": self.flushed,
            "events": self.picture.events, "dumps": self.dumps, "candidate_dumps": self.candidate_dumps,
            "overruns": self.overruns, "picture_exact": self.resync_due is None,
            "event_backlog_bytes": self.backlog() if self.stream is not None else 0,
            "picture_behind": self.behind,
            "source_limit": self.limited, "scheduling": self.scheduling,
            "actions": list(self.actions),
        }
