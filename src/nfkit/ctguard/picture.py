"""An incremental picture of the conntrack table, from events.

One small record per entry (its key, source address, zone, protocol, state
and status, when it was first and last seen), and counters per state, per
source and per zone kept as events arrive: new and update events refresh a
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


@dataclass(slots=True)
class Record:
    entry: Entry     # as last reported (tuples, status, mark, zone)
    source: str
    zone: int
    state: str
    first_seen: float
    last_event: float

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
            self._count(old, -1)

    def _count(self, r: Record, n: int) -> None:
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
            self._count(old, -1)
        r = Record(e, e.orig.src, e.zone or 0, state_name(e),
                   old.first_seen if old is not None else now, now)
        self.records[key] = r
        self._count(r, 1)

    def resync(self, entries: Iterable[Entry], now: float) -> None:
        """Replace the picture with a dump's entries (after lost events)."""
        old = self.records
        self.records = {}
        self.by_state.clear()
        self.by_source.clear()
        self.by_zone.clear()
        self.resyncs += 1
        for e in entries:
            key = entry_key(e)
            before = old.get(key)
            r = Record(e, e.orig.src, e.zone or 0, state_name(e),
                       before.first_seen if before is not None else now, now)
            self.records[key] = r
            self._count(r, 1)

    def top_sources(self, n: int = 10) -> list[tuple[str, int]]:
        return self.by_source.most_common(n)
