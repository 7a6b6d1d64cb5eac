"""An incremental picture of the conntrack table, from events.

One small record per entry (its key, source address, zone, protocol, state
and status, its cost tier, when it was first and last seen), counters per
state, per source and per zone, and the records of each cost tier and of
each source (so a decision reads only what it takes), kept as events arrive: new and update events refresh a
record, destroy events remove it, and a lost-events resync replaces the whole
picture from one dump (counted).  The picture never asks the kernel anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from nfkit.conntrack.model import IPPROTO_TCP, Entry, Status, TcpState
from nfkit.conntrack.wire import EntryDecoder

MESSAGE_HEAD = 20  # nlmsghdr + nfgenmsg, before a ctnetlink message's attributes

IPPROTO_UDP = 17
Key = tuple[object, ...] | int


def entry_key(e: Entry) -> Key | int:
    """What identifies an entry across its events: its conntrack id (every event and dump
    carries it), else its original tuple and zone."""
    return e.id if e.id is not None else (e.orig, e.zone or 0)


def state_name(e: Entry) -> str:
    """TCP entries by their TCP state; others UNREPLIED, REPLIED or ASSURED."""
    if e.orig.proto == IPPROTO_TCP and e.state is not None:
        try:
            return TcpState(e.state).name
        except ValueError:
            return str(e.state)
    if e.status & Status.ASSURED:
        return "ASSURED"
    return "REPLIED" if e.status & Status.SEEN_REPLY else "UNREPLIED"


CLOSING = frozenset(("FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE"))
TCP_NAMES = {int(s): s.name for s in TcpState}
_ASSURED, _SEEN_REPLY = int(Status.ASSURED), int(Status.SEEN_REPLY)  # plain ints: enum & is slow


def cost_tier(state: str, status: int) -> int:
    """What evicting the entry costs, cheapest first: 0 unreplied and not ASSURED, 1 other
    not ASSURED, 2 closing TCP, 3 the rest (ASSURED)."""
    if not status & _ASSURED:
        return 0 if not status & _SEEN_REPLY else 1
    return 2 if state in CLOSING else 3


def wire_state(proto: int, state: int | None, status: int) -> str:
    """`state_name` from an event's raw fields (no Entry)."""
    if proto == IPPROTO_TCP and state is not None:
        return TCP_NAMES.get(state) or str(state)
    if status & _ASSURED:
        return "ASSURED"
    return "REPLIED" if status & _SEEN_REPLY else "UNREPLIED"


class Record:
    """One entry of the picture.  Events keep only what the picture needs (source, zone,
    state, status) and the bytes of the entry's last message (``raw``: nlmsghdr, nfgenmsg and
    attributes); the `Entry` is decoded from them by the general decoder the first time a
    decision asks for it (a few candidates a round, never per event)."""

    __slots__ = ("_entry", "first_seen", "raw", "source", "state", "status", "tier", "zone")
    decoder = EntryDecoder()

    def __init__(self, source: str, zone: int, state: str, status: int, tier: int, first_seen: float,
                 raw: bytes | None = None, entry: Entry | None = None) -> None:
        self.source = source
        self.zone = zone
        self.state = state
        self.status = status
        self.tier = tier
        self.first_seen = first_seen
        self.raw = raw
        self._entry = entry

    @classmethod
    def of(cls, e: Entry, first_seen: float) -> Record:
        """The record of a decoded entry (a dump's, or a test's)."""
        state = state_name(e)
        return cls(e.orig.src, e.zone or 0, state, e.status, cost_tier(state, e.status), first_seen, entry=e)

    @property
    def entry(self) -> Entry:
        """The entry as last reported (tuples, status, mark, zone)."""
        e = self._entry
        if e is None:
            raw = self.raw
            assert raw is not None
            e = self._entry = self.decoder.decode(raw, MESSAGE_HEAD, len(raw) - MESSAGE_HEAD, raw[16])
        return e

    @property
    def assured(self) -> bool:
        return bool(self.status & Status.ASSURED)

    @property
    def replied(self) -> bool:
        return bool(self.status & Status.SEEN_REPLY)


class Picture:
    """The table as events told it; see the module's docstring."""

    def __init__(self) -> None:
        self.records: dict[Key, Record] = {}
        # indexes, so a decision touches only the entries it takes: each cost tier and each
        # source's records, in the order they entered it (dicts keep insertion order)
        self.tiers: tuple[dict[Key, Record], ...] = ({}, {}, {}, {})
        self.of_source: dict[str, dict[Key, Record]] = {}
        self.by_state: dict[str, int] = {}  # plain dicts: a Counter's item access costs twice a dict's
        self.by_zone: dict[int, int] = {}
        self.events = 0
        self.resyncs = 0

    def __len__(self) -> int:
        return len(self.records)

    @property
    def by_source(self) -> Counter[str]:
        """Entries per source address (counted when asked, from the per-source index)."""
        return Counter({src: len(own) for src, own in self.of_source.items()})

    # `add` and `remove` run once per event (100,000 a second at full rate): plain dict
    # operations written out, no call per counter; the feed counts the events.
    def _put(self, key: Key, r: Record) -> None:
        old = self.records.get(key)
        if old is not None:
            self._drop(key, old)
        self.records[key] = r
        self.tiers[r.tier][key] = r
        own = self.of_source.get(r.source)
        if own is None:
            own = self.of_source[r.source] = {}
        own[key] = r
        by_state, by_zone = self.by_state, self.by_zone
        by_state[r.state] = by_state.get(r.state, 0) + 1
        by_zone[r.zone] = by_zone.get(r.zone, 0) + 1

    def _drop(self, key: Key, r: Record) -> None:
        """Uncount ``r``, the record of ``key`` (taken out of `records`, or about to be replaced)."""
        del self.tiers[r.tier][key]
        own = self.of_source[r.source]
        del own[key]
        if not own:
            del self.of_source[r.source]
        by_state, by_zone = self.by_state, self.by_zone
        n = by_state[r.state] - 1
        if n:
            by_state[r.state] = n
        else:
            del by_state[r.state]
        n = by_zone[r.zone] - 1
        if n:
            by_zone[r.zone] = n
        else:
            del by_zone[r.zone]

    def add(self, key: Key, source: str, zone: int, state: str, status: int, raw: bytes, now: float,
            tier: int) -> None:
        """A new or update event from its fields and its message ``raw`` (the event path: no
        Entry built; not counted in `events`: the caller counts)."""
        records = self.records
        old = records.get(key)
        if old is None:
            r = records[key] = Record(source, zone, state, status, tier, now, raw)
        else:  # an update: the entry keeps its age
            self._drop(key, old)
            r = records[key] = Record(source, zone, state, status, tier, old.first_seen, raw)
        self.tiers[tier][key] = r
        own = self.of_source.get(source)
        if own is None:
            own = self.of_source[source] = {}
        own[key] = r
        by_state, by_zone = self.by_state, self.by_zone
        by_state[state] = by_state.get(state, 0) + 1
        by_zone[zone] = by_zone.get(zone, 0) + 1

    def remove(self, key: Key) -> None:
        """A destroy event (not counted in `events`: the caller counts)."""
        r = self.records.pop(key, None)
        if r is not None:
            self._drop(key, r)

    def apply(self, kind: str, e: Entry, now: float) -> None:
        """One event: new, update or destroy (sync: as new)."""
        key = entry_key(e)
        self.events += 1
        if kind == "destroy":
            self.remove(key)
            return
        old = self.records.get(key)
        self._put(key, Record.of(e, now if old is None else old.first_seen))

    def resync(self, entries: Iterable[Entry], now: float) -> None:
        """Replace the picture with a dump's entries (after lost events)."""
        old = self.records
        self.records = {}
        self.by_state.clear()
        self.by_zone.clear()
        self.tiers = ({}, {}, {}, {})
        self.of_source = {}
        self.resyncs += 1
        for e in entries:
            key = entry_key(e)
            before = old.get(key)
            self._put(key, Record.of(e, now if before is None else before.first_seen))

    def take(self, fresh: Picture) -> None:
        """Become ``fresh`` (the picture a resync's dump made), each entry keeping its age."""
        old = self.records
        for key, r in fresh.records.items():
            before = old.get(key)
            if before is not None:
                r.first_seen = before.first_seen
        self.records, self.tiers, self.of_source = fresh.records, fresh.tiers, fresh.of_source
        self.by_state, self.by_zone = fresh.by_state, fresh.by_zone
        self.resyncs += 1

    def forget(self, key: Key) -> None:
        """Drop the record of an entry the kernel no longer has (its destroy event was lost)."""
        old = self.records.pop(key, None)
        if old is not None:
            self._drop(key, old)

    def first(self, tier: int, keys: list[Key]) -> None:
        """Put the records of ``keys`` (all of ``tier``) first in their tier's order."""
        if not keys:
            return
        old = self.tiers[tier]
        ahead = {k: old[k] for k in keys}
        ahead.update(old)
        self.tiers = self.tiers[:tier] + (ahead,) + self.tiers[tier + 1:]

    def top_sources(self, n: int = 10) -> list[tuple[str, int]]:
        return self.by_source.most_common(n)
