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
from typing import Any

from nfkit.conntrack.model import IPPROTO_TCP, Entry, Status, TcpState

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
    state, status) and the entry's decoded values; the `Entry` is built from them the
    first time a decision asks for it (a few candidates a round, never per event)."""

    __slots__ = ("_entry", "first_seen", "last_event", "layout", "source", "state", "status", "tier",
                 "values", "zone")

    def __init__(self, entry: Entry | None, source: str, zone: int, state: str, first_seen: float,
                 last_event: float, tier: int = 3, status: int | None = None, layout: Any = None,
                 values: tuple[Any, ...] | None = None) -> None:
        self._entry = entry
        self.source = source
        self.zone = zone
        self.state = state
        self.first_seen = first_seen
        self.last_event = last_event
        self.tier = tier
        self.status = entry.status if status is None and entry is not None else (status or 0)
        self.layout = layout
        self.values = values

    @property
    def entry(self) -> Entry:
        """The entry as last reported (tuples, status, mark, zone)."""
        e = self._entry
        if e is None:
            e = self._entry = self.layout.build(self.values)
        return e

    @property
    def assured(self) -> bool:
        return bool(self.status & Status.ASSURED)

    @property
    def replied(self) -> bool:
        return bool(self.status & Status.SEEN_REPLY)


def _less(counter: Counter[Any], value: Any) -> None:
    left = counter[value] - 1
    if left > 0:
        counter[value] = left
    else:
        counter.pop(value, None)


class Picture:
    """The table as events told it; see the module's docstring."""

    def __init__(self) -> None:
        self.records: dict[Key, Record] = {}
        # indexes, so a decision touches only the entries it takes: each cost tier and each
        # source's records, in the order they entered it (dicts keep insertion order)
        self.tiers: tuple[dict[Key, Record], ...] = ({}, {}, {}, {})
        self.of_source: dict[str, dict[Key, Record]] = {}
        self.by_state: Counter[str] = Counter()
        self.by_source: Counter[str] = Counter()
        self.by_zone: Counter[int] = Counter()
        self.events = 0
        self.resyncs = 0

    def __len__(self) -> int:
        return len(self.records)

    def _remove(self, key: Key) -> None:
        old = self.records.pop(key, None)
        if old is not None:
            self._count(old, -1, key)

    def _count(self, r: Record, n: int, key: Key) -> None:
        # on every event: plain dict operations, no loop over the counters
        src = r.source
        own = self.of_source.get(src)
        if n > 0:
            self.tiers[r.tier][key] = r
            if own is None:
                own = self.of_source[src] = {}
            own[key] = r
            self.by_state[r.state] += 1
            self.by_source[src] += 1
            self.by_zone[r.zone] += 1
            return
        self.tiers[r.tier].pop(key, None)
        if own is not None:
            own.pop(key, None)
            if not own:
                del self.of_source[src]
        _less(self.by_state, r.state)
        _less(self.by_source, src)
        _less(self.by_zone, r.zone)

    def add(self, key: Key, source: str, zone: int, state: str, status: int, layout: Any,
            values: tuple[Any, ...], now: float, tier: int) -> None:
        """A new or update event from its raw fields (the event path: no Entry built)."""
        self.events += 1
        old = self.records.get(key)
        if old is not None:
            first = old.first_seen
            self._count(old, -1, key)
        else:
            first = now
        r = Record(None, source, zone, state, first, now, tier, status, layout, values)
        self.records[key] = r
        self._count(r, 1, key)

    def remove(self, key: Key) -> None:
        """A destroy event."""
        self.events += 1
        self._remove(key)

    def apply(self, kind: str, e: Entry, now: float) -> None:
        """One event: new, update or destroy (sync: as new)."""
        self.events += 1
        key = entry_key(e)
        if kind == "destroy":
            self._remove(key)
            return
        old = self.records.get(key)
        if old is not None:
            self._count(old, -1, key)
        state = state_name(e)
        r = Record(e, e.orig.src, e.zone or 0, state, old.first_seen if old is not None else now,
                   now, cost_tier(state, e.status))
        self.records[key] = r
        self._count(r, 1, key)

    def resync(self, entries: Iterable[Entry], now: float) -> None:
        """Replace the picture with a dump's entries (after lost events)."""
        old = self.records
        self.records = {}
        self.by_state.clear()
        self.by_source.clear()
        self.by_zone.clear()
        self.tiers = ({}, {}, {}, {})
        self.of_source = {}
        self.resyncs += 1
        for e in entries:
            key = entry_key(e)
            before = old.get(key)
            state = state_name(e)
            r = Record(e, e.orig.src, e.zone or 0, state,
                       before.first_seen if before is not None else now, now, cost_tier(state, e.status))
            self.records[key] = r
            self._count(r, 1, key)

    def top_sources(self, n: int = 10) -> list[tuple[str, int]]:
        return self.by_source.most_common(n)
