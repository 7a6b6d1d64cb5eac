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
from dataclasses import dataclass

from nfkit.conntrack.model import IPPROTO_TCP, Entry, Status, TcpState

IPPROTO_UDP = 17
Key = tuple[object, ...]


def entry_key(e: Entry) -> Key:
    """What identifies an entry across its events: its original tuple and zone."""
    return (e.orig, e.zone or 0)


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


def cost_tier(state: str, status: int) -> int:
    """What evicting the entry costs, cheapest first: 0 unreplied and not ASSURED, 1 other
    not ASSURED, 2 closing TCP, 3 the rest (ASSURED)."""
    if not status & Status.ASSURED:
        return 0 if not status & Status.SEEN_REPLY else 1
    return 2 if state in CLOSING else 3


@dataclass(slots=True)
class Record:
    entry: Entry     # as last reported (tuples, status, mark, zone)
    source: str
    zone: int
    state: str
    first_seen: float
    last_event: float
    tier: int = 3

    @property
    def assured(self) -> bool:
        return bool(self.entry.status & Status.ASSURED)

    @property
    def replied(self) -> bool:
        return bool(self.entry.status & Status.SEEN_REPLY)


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
        own = self.of_source.get(r.source)
        if n > 0:
            self.tiers[r.tier][key] = r
            if own is None:
                own = self.of_source[r.source] = {}
            own[key] = r
        else:
            self.tiers[r.tier].pop(key, None)
            if own is not None:
                own.pop(key, None)
                if not own:
                    del self.of_source[r.source]
        for counter, value in ((self.by_state, r.state), (self.by_source, r.source),
                               (self.by_zone, r.zone)):
            counter[value] += n  # type: ignore[index]
            if counter[value] <= 0:  # type: ignore[index]
                del counter[value]  # type: ignore[arg-type]

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
