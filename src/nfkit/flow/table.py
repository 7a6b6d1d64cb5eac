"""The single-tuple flow table.

Owns: where a flow lives (its slot), its one stored tuple (in the direction of
the first packet seen), the symmetric hash that finds it from both directions,
per-flow packet and byte counters, the TCP state, idle timeouts and eviction.
Must not know: payloads, applications, capture files.

Layout, chosen for memory (see docs/flow.md for the figures):

- every per-flow value lives in a parallel array indexed by the flow's *slot*
  (``array`` of machine integers, a ``bytearray`` for the state); the only
  per-flow Python object is the packed tuple (``bytes``: proto, source
  address, destination address, source port, destination port);
- the index is an open-addressing table of slot numbers (``array('I')``),
  probed linearly from ``symmetric_hash(...) & mask``; deletion shifts entries
  back (no tombstones), so lookups never slow down with churn;
- a flow sits in exactly one doubly linked list per timeout class (links are
  two more arrays), kept in least-recently-seen order: expiry pops list heads,
  and eviction when full takes the oldest head across the lists, i.e. the
  flow idle for the longest time.

The hash is symmetric by construction: each endpoint (address, port) is hashed
on its own with Python's keyed SipHash (random per process, so crafted tuples
cannot flood one bucket) and the two are added modulo 2**64.  Addition is
commutative, so hash(a, b) == hash(b, a), and the sum of two uniform values
is uniform, which the chi-square test in tests/flow checks.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import operator
import struct
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from nfkit.flow.tcpstate import (
    CLIENT_IS_REPLY,
    REPLIED,
    STATE_MASK,
    TCP_EVENT,
    TCP_NEXT,
    TCP_STRIDE,
    TcpState,
    open_state,
)
from nfkit.flow.timeouts import Timeouts

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

_M64 = (1 << 64) - 1
_TUPLE4 = struct.Struct("!B4s4sHH")
_TUPLE6 = struct.Struct("!B16s16sHH")
_NONE = -1

TRANSPORT_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp",
                   IPPROTO_ICMPV6: "icmpv6"}

# Reasons passed to the end-of-flow callback.
END_EXPIRED = "expired"
END_EVICTED = "evicted"
END_REOPENED = "reopened"
END_FLUSHED = "flushed"


def symmetric_hash(proto: int, a_addr: bytes, a_port: int, b_addr: bytes, b_port: int) -> int:
    """Hash of a flow, the same from both directions: h(a, b) == h(b, a).

    Each endpoint is hashed alone (keyed SipHash over the address bytes, then
    CPython's tuple mixing with the port); the two are summed modulo 2**64.
    """
    return (hash((a_addr, a_port)) + hash((b_addr, b_port)) + proto) & _M64


def pack_tuple(proto: int, src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    """The packed form of a tuple as the table stores it."""
    return (_TUPLE4 if len(src) == 4 else _TUPLE6).pack(proto, src, dst, sport, dport)


@dataclass(frozen=True, slots=True)
class FlowTuple:
    """A tuple unpacked for people: transport number, addresses (bytes), ports."""

    proto: int
    src: bytes
    dst: bytes
    sport: int
    dport: int

    @classmethod
    def unpack(cls, packed: bytes) -> FlowTuple:
        fmt = _TUPLE4 if len(packed) == _TUPLE4.size else _TUPLE6
        return cls(*fmt.unpack(packed))

    def reversed(self) -> FlowTuple:
        return FlowTuple(self.proto, self.dst, self.src, self.dport, self.sport)

    @property
    def transport(self) -> str:
        return TRANSPORT_NAMES.get(self.proto, str(self.proto))

    def endpoint(self, side: int) -> str:
        """``ip:port`` of the source (side 0) or destination (side 1); IPv6 in brackets."""
        addr, port = (self.src, self.sport) if side == 0 else (self.dst, self.dport)
        text = str(ipaddress.ip_address(addr))
        return f"[{text}]:{port}" if len(addr) == 16 else f"{text}:{port}"


class FlowTable:
    """A bounded flow table storing one tuple per flow.

    ``track()`` is the per-packet entry point.  Flows end by idle timeout
    (per transport and TCP state, see `Timeouts`), by eviction when
    ``max_flows`` are tracked (the longest idle first), by a new TCP SYN on a
    closed flow's tuple (the old flow ends, a new one starts) or by `flush()`;
    ``on_end(slot, reason)`` is called before a slot is reused, while its
    tuple and counters can still be read.
    """

    def __init__(
        self,
        max_flows: int = 1 << 20,
        timeouts: Timeouts | None = None,
        on_end: Callable[[int, str], None] | None = None,
        sweep_interval: float = 1.0,
    ) -> None:
        if max_flows < 1:
            raise ValueError("flow table: max_flows must be at least 1")
        self.max_flows = max_flows
        self.timeouts = timeouts or Timeouts()
        self.on_end = on_end
        self.sweep_interval = sweep_interval
        self.count = 0
        self.evicted = 0
        self.expired = 0
        self.created = False  # did the last track() create its flow?
        nbuckets = 1024
        self._mask = nbuckets - 1
        self._buckets = array("I", bytes(4 * nbuckets))  # slot + 1, 0 = empty
        # per-slot parallel arrays
        self.hashes = array("Q")
        self.tuples: list[bytes | None] = []
        self.last = array("d")
        self.state = bytearray()
        self.tclass = bytearray()
        self.prev = array("i")
        self.next = array("i")
        self.packets = (array("Q"), array("Q"))
        self.octets = (array("Q"), array("Q"))
        self._free: list[int] = []
        self._classes = self.timeouts.classes()  # class id -> seconds
        self._heads = [_NONE] * len(self._classes)
        self._tails = [_NONE] * len(self._classes)
        self._class_of = self.timeouts.class_table()  # proto kind -> 256 state -> class id
        self._next_sweep = 0.0

    # -- the per-packet path ------------------------------------------------

    def track(
        self,
        proto: int,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        now: float,
        size: int,
        tcp_flags: int = 0,
    ) -> int:
        """Count one packet; return ``slot * 2 + direction``.

        Direction 0 is the stored tuple's (the first packet's), 1 the reverse.
        Creates the flow when unknown (``self.created`` tells), possibly
        evicting the longest-idle flow; runs timeouts at most once per
        ``sweep_interval`` seconds of packet time.
        """
        if now >= self._next_sweep:
            self._next_sweep = now + self.sweep_interval
            self.expire(now)
        code, h, fwd = self._probe(proto, src, dst, sport, dport)
        if code < 0:
            return self._create(h, fwd, proto, now, size, tcp_flags) * 2
        s, d = code >> 1, code & 1
        self.created = False
        code = self.step(s, d, proto, now, size, tcp_flags)
        if code < 0:  # a new SYN on a closed tuple: the old flow ends
            self._remove(s, END_REOPENED)
            return self._create(h, fwd, proto, now, size, tcp_flags) * 2
        return code

    def _probe(self, proto: int, src: bytes, dst: bytes, sport: int, dport: int) -> tuple[int, int, bytes]:
        """(``slot * 2 + direction`` of the flow or -1, the tuple's symmetric hash, the tuple
        packed in this packet's direction)."""
        h = (hash((src, sport)) + hash((dst, dport)) + proto) & _M64  # symmetric_hash, in line
        pack = _TUPLE4.pack if len(src) == 4 else _TUPLE6.pack
        fwd = pack(proto, src, dst, sport, dport)
        rev = None
        buckets, hashes, tuples, mask = self._buckets, self.hashes, self.tuples, self._mask
        i = h & mask
        while True:
            s = buckets[i]
            if s == 0:
                return -1, h, fwd
            s -= 1
            if hashes[s] == h:  # the hash first: most probes end without comparing tuples
                t = tuples[s]
                if t == fwd:
                    return s * 2, h, fwd
                if rev is None:
                    rev = pack(proto, dst, src, dport, sport)
                if t == rev:
                    return s * 2 + 1, h, fwd
            i = (i + 1) & mask

    def add(self, proto: int, src: bytes, dst: bytes, sport: int, dport: int, now: float, size: int,
            tcp_flags: int = 0) -> int:
        """`track` of a packet whose flow the caller knows is not in the table (it looked the
        tuple up since the table last changed it): the flow is created, with no lookup and no
        sweep; returns ``slot * 2``."""
        h = (hash((src, sport)) + hash((dst, dport)) + proto) & _M64
        fwd = (_TUPLE4.pack if len(src) == 4 else _TUPLE6.pack)(proto, src, dst, sport, dport)
        return self._create(h, fwd, proto, now, size, tcp_flags) * 2

    def step(self, s: int, d: int, proto: int, now: float, size: int, tcp_flags: int = 0) -> int:
        """Count one packet of the known flow in slot ``s``, direction ``d``; no lookup, no sweep.

        Returns ``s * 2 + d``, or -1 (nothing done) for a SYN that reopens a
        closed flow's tuple: `track` ends the old flow and starts the new one.
        """
        st = self.state[s]
        if proto == IPPROTO_TCP:
            nst = TCP_NEXT[st * TCP_STRIDE + TCP_EVENT[tcp_flags & 0xFF] * 2 + d]
            if nst < 0:
                return -1
        else:
            nst = st | REPLIED if d else st
        if nst != st:
            self.state[s] = nst
            cls = self._class_of[proto][nst]
            if cls != self.tclass[s]:
                self._unlink(s)
                self.tclass[s] = cls
                self._append(s, cls)
            elif self._tails[cls] != s:
                self._unlink(s)
                self._append(s, cls)
        elif self._tails[self.tclass[s]] != s:
            cls = self.tclass[s]
            self._unlink(s)
            self._append(s, cls)
        self.last[s] = now
        self.packets[d][s] += 1
        self.octets[d][s] += size
        return s * 2 + d

    def _create(self, h: int, fwd: bytes, proto: int, now: float, size: int, flags: int) -> int:
        if self.count >= self.max_flows:
            self.evict_one()
        if (self.count + 1) * 2 > len(self._buckets):
            self._grow()
        if self._free:
            s = self._free.pop()
            self.hashes[s] = h
            self.tuples[s] = fwd
            self.last[s] = now
            self.packets[0][s] = 1
            self.packets[1][s] = 0
            self.octets[0][s] = size
            self.octets[1][s] = 0
        else:
            s = len(self.tuples)
            self.hashes.append(h)
            self.tuples.append(fwd)
            self.last.append(now)
            self.state.append(0)
            self.tclass.append(0)
            self.prev.append(_NONE)
            self.next.append(_NONE)
            self.packets[0].append(1)
            self.packets[1].append(0)
            self.octets[0].append(size)
            self.octets[1].append(0)
        if proto == IPPROTO_TCP:
            st = open_state(flags, fwd)
        else:
            st = 0
        self.state[s] = st
        cls = self._class_of[proto][st]
        self.tclass[s] = cls
        self._append(s, cls)
        buckets, mask = self._buckets, self._mask
        i = h & mask
        while buckets[i]:
            i = (i + 1) & mask
        buckets[i] = s + 1
        self.count += 1
        self.created = True
        return s

    def set_state(self, s: int, byte: int) -> None:
        """Set the state byte of the flow in slot ``s`` as packets counted elsewhere left it.

        For a caller that counts a known flow's packets in bulk (with
        ``packets``, ``octets`` and ``last``) and works out their state
        changes itself.  A new timeout class puts the flow at the recently
        seen end of its list (`touch` then orders it among the others).
        """
        t = self.tuples[s]
        if t is None:
            raise KeyError(f"flow table: slot {s} is free")
        self.state[s] = byte
        cls = self._class_of[t[0]][byte]
        if cls != self.tclass[s]:
            self._unlink(s)
            self.tclass[s] = cls
            self._append(s, cls)

    # -- lists in idle order, one per timeout class ---------------------------

    def touch(self, s: int) -> None:
        """Move a flow to the recently-seen end of its list (after a packet)."""
        self._unlink(s)
        self._append(s, self.tclass[s])

    def _append(self, s: int, cls: int) -> None:
        tail = self._tails[cls]
        self.prev[s] = tail
        self.next[s] = _NONE
        if tail == _NONE:
            self._heads[cls] = s
        else:
            self.next[tail] = s
        self._tails[cls] = s

    def _unlink(self, s: int) -> None:
        cls = self.tclass[s]
        p, n = self.prev[s], self.next[s]
        if p == _NONE:
            self._heads[cls] = n
        else:
            self.next[p] = n
        if n == _NONE:
            self._tails[cls] = p
        else:
            self.prev[n] = p

    # -- index maintenance -----------------------------------------------------

    def _grow(self) -> None:
        nbuckets = len(self._buckets) * 2
        buckets = array("I", bytes(4 * nbuckets))
        mask = nbuckets - 1
        hashes = self.hashes
        for s, t in enumerate(self.tuples):
            if t is None:
                continue
            i = hashes[s] & mask
            while buckets[i]:
                i = (i + 1) & mask
            buckets[i] = s + 1
        self._buckets, self._mask = buckets, mask

    def _remove(self, s: int, reason: str) -> None:
        if self.on_end is not None:
            self.on_end(s, reason)
        buckets, mask, hashes = self._buckets, self._mask, self.hashes
        i = hashes[s] & mask
        while buckets[i] != s + 1:
            i = (i + 1) & mask
        # backward-shift deletion keeps every probe chain unbroken
        j = i
        while True:
            j = (j + 1) & mask
            e = buckets[j]
            if e == 0:
                break
            home = hashes[e - 1] & mask
            # move e back to i unless its home lies cyclically in (i, j]
            if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
                buckets[i] = e
                i = j
        buckets[i] = 0
        self._unlink(s)
        self.tuples[s] = None
        self.state[s] = 0
        self._free.append(s)
        self.count -= 1

    # -- timeouts and eviction -----------------------------------------------

    def expire(self, now: float) -> int:
        """End every flow idle longer than its timeout; return how many ended."""
        n = 0
        last = self.last
        for cls, seconds in enumerate(self._classes):
            while True:
                s = self._heads[cls]
                if s == _NONE or now - last[s] <= seconds:
                    break
                self._remove(s, END_EXPIRED)
                n += 1
        self.expired += n
        return n

    def quiet_until(self, now: float) -> float:
        """A time before which `expire` ends no flow, as long as packets come no earlier
        than ``now`` and none came earlier than a flow already seen (times never go back).

        Each timeout class's list is then in order of last-seen time: its head
        is its first flow to time out.  A flow seen from ``now`` on times out no
        sooner than ``now`` plus the shortest timeout.
        """
        last, heads = self.last, self._heads
        until = now + min(self._classes)
        for cls, seconds in enumerate(self._classes):
            s = heads[cls]
            if s != _NONE and last[s] + seconds < until:
                until = last[s] + seconds
        return until

    def evict_one(self) -> int:
        """End the flow idle for the longest time; return its (now free) slot."""
        best = self._oldest()
        self._remove(best, END_EVICTED)
        self.evicted += 1
        return best

    def flush(self, ended: Callable[[list[int]], None] | None = None) -> None:
        """End every flow (reason ``flushed``), the longest idle first.

        ``ended``: called once, instead of ``on_end`` for each flow, with the
        slots of every flow in the order they end, while their tuples and
        counters can still be read (a caller that reads them all at once); it
        must not change the table.  The table is then emptied at once.
        """
        if ended is None and self.on_end is not None:
            while self.count:  # on_end sees each flow ended before it gone, as `_remove` leaves it
                self._remove(self._oldest(), END_FLUSHED)
            return
        order = self._idle_order()
        if ended is not None:
            ended(order)
        # what `_remove` of each flow in that order leaves: empty index and lists, free slots
        tuples, state = self.tuples, self.state
        for s in order:
            tuples[s] = None
            state[s] = 0
        self._free += order
        self._buckets = array("I", bytes(4 * len(self._buckets)))
        self._heads = [_NONE] * len(self._classes)
        self._tails = [_NONE] * len(self._classes)
        self.count = 0

    def _idle_order(self) -> list[int]:
        """Every flow's slot in the order repeated `_oldest` picks them (the least recently
        seen first; on a tie the lower timeout class first): its lists merged."""
        lists = []
        nxt, last = self.next, self.last
        in_order = True
        for head in self._heads:
            slots = []
            s = head
            while s != _NONE:
                slots.append(s)
                s = nxt[s]
            times = [last[s] for s in slots]
            in_order = in_order and all(map(operator.le, times, times[1:]))
            lists.append(slots)
        if in_order:  # each list in time order: a stable sort is the merge
            return sorted(itertools.chain.from_iterable(lists), key=last.__getitem__)
        return list(heapq.merge(*lists, key=last.__getitem__))

    def _oldest(self) -> int:
        best, best_last = _NONE, float("inf")
        for s in self._heads:
            if s != _NONE and self.last[s] < best_last:
                best, best_last = s, self.last[s]
        if best == _NONE:
            raise LookupError("flow table: no flow to end")
        return best

    # -- reading flows -----------------------------------------------------------

    def __len__(self) -> int:
        return self.count

    def slots(self) -> Iterator[int]:
        """Slots of the live flows (in slot order)."""
        for s, t in enumerate(self.tuples):
            if t is not None:
                yield s

    def tuple_of(self, slot: int) -> FlowTuple:
        """The stored tuple (first packet's direction) of a live flow."""
        t = self.tuples[slot]
        if t is None:
            raise KeyError(f"flow table: slot {slot} is free")
        return FlowTuple.unpack(t)

    def fields_of(self, slot: int) -> tuple[int, bytes, bytes, int, int]:
        """The stored tuple of a live flow as plain values: proto, src, dst, sport, dport
        (`tuple_of` without building the object, for a caller that reads many)."""
        t = self.tuples[slot]
        if t is None:
            raise KeyError(f"flow table: slot {slot} is free")
        return (_TUPLE4 if len(t) == _TUPLE4.size else _TUPLE6).unpack(t)

    def client_direction(self, slot: int) -> int:
        """Direction (0 stored, 1 reverse) in which the client sends."""
        return 1 if self.state[slot] & CLIENT_IS_REPLY else 0

    def tcp_state(self, slot: int) -> TcpState:
        return TcpState(self.state[slot] & STATE_MASK)

    def find(self, proto: int, src: bytes, dst: bytes, sport: int, dport: int) -> int:
        """``slot * 2 + direction`` of a flow without counting a packet; -1 if absent."""
        return self._probe(proto, src, dst, sport, dport)[0]

    def lookup(self, proto: int, src: bytes, dst: bytes, sport: int, dport: int) -> tuple[int, int]:
        """(slot, direction) of a flow without counting a packet; KeyError if absent."""
        code = self.find(proto, src, dst, sport, dport)
        if code < 0:
            raise KeyError("flow table: no such flow")
        return code >> 1, code & 1

    def bucket_of(self, slot: int, nbuckets: int) -> int:
        """Bucket of a flow in a table of ``nbuckets`` (a power of two)."""
        return self.hashes[slot] & (nbuckets - 1)


__all__ = [
    "END_EVICTED", "END_EXPIRED", "END_FLUSHED", "END_REOPENED", "FlowTable", "FlowTuple",
    "IPPROTO_ICMP", "IPPROTO_ICMPV6", "IPPROTO_TCP", "IPPROTO_UDP", "TRANSPORT_NAMES",
    "pack_tuple", "symmetric_hash",
]
