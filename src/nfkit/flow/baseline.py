"""The conventional two-tuple flow table, kept as the yardstick for memory.

Owns: `TwoTupleTable`, the way a flow tracker is usually written in Python
(and the way conntrack stores flows without the one-tuple work): each flow is
found through two dictionary keys, the original tuple and the reply tuple,
both pointing at one record that holds the same counters, timestamp and state
as `FlowTable` keeps.  It is written carefully (``__slots__``, addresses as
``bytes``), so the comparison is with a good conventional table, not a
strawman.  `bytes_per_flow()` measures either table with tracemalloc.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from collections.abc import Callable
from typing import Protocol


class _Record:
    __slots__ = ("orig", "reply", "last", "state", "packets", "octets")

    def __init__(self, orig: tuple, reply: tuple, now: float, size: int) -> None:
        self.orig = orig
        self.reply = reply
        self.last = now
        self.state = 0
        self.packets = [1, 0]
        self.octets = [size, 0]


class TwoTupleTable:
    """Flows keyed by both directions' tuples; for measurement only (no timeouts)."""

    def __init__(self) -> None:
        self.flows: dict[tuple, _Record] = {}

    def track(self, proto: int, src: bytes, dst: bytes, sport: int, dport: int,
              now: float, size: int, tcp_flags: int = 0) -> int:
        key = (proto, src, sport, dst, dport)
        rec = self.flows.get(key)
        if rec is None:
            reply = (proto, dst, dport, src, sport)
            rec = _Record(key, reply, now, size)
            self.flows[key] = rec
            self.flows[reply] = rec
            return 0
        d = 0 if rec.orig == key else 1
        rec.last = now
        rec.packets[d] += 1
        rec.octets[d] += size
        return d

    def __len__(self) -> int:
        return len(self.flows) // 2


class _Tracker(Protocol):
    def track(self, proto: int, src: bytes, dst: bytes, sport: int, dport: int,
              now: float, size: int, tcp_flags: int = 0) -> int: ...


def bytes_per_flow(make: Callable[[], _Tracker], flows: int, seed: int = 1) -> float:
    """Memory (tracemalloc, bytes) per flow after tracking ``flows`` IPv4 UDP flows.

    Every flow gets one packet each way, so both directions were seen.  The
    addresses are created before measuring starts: they belong to the
    packets, not to the table.
    """
    rnd = __import__("random").Random(seed)
    srcs = [os.urandom(4) for _ in range(flows)]
    dsts = [bytes((198, 51, 100, rnd.randrange(256))) for _ in range(flows)]
    ports = [(1024 + rnd.randrange(60000), 53) for _ in range(flows)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table = make()
        track = table.track
        for i in range(flows):
            sp, dp = ports[i]
            track(17, srcs[i], dsts[i], sp, dp, 1.0, 80)
            track(17, dsts[i], srcs[i], dp, sp, 1.5, 120)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del table
    return (after - before) / flows
