"""Which node serves which hash bucket: rendezvous (highest random weight) hashing.

Owns: the bucket -> node function of a set of members, and the claim rule that
keeps two nodes from serving one bucket while their views of the membership
differ.  Every node computes the same answer from the same members, and a
member joining or leaving moves only the buckets it gains or loses (a bucket
never moves between two nodes that both stay).
Must not know: heartbeats, sockets, nf_tables.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def owner(bucket: int, members: Iterable[int], seed: int) -> int:
    """The member serving ``bucket`` (raises ValueError when there are no members)."""
    return max(members, key=lambda n: (_weight(seed, bucket, n), n))


def _weight(seed: int, bucket: int, node: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{bucket}:{node}".encode(), digest_size=8).digest()


def share(node: int, members: Iterable[int], buckets: int, seed: int) -> frozenset[int]:
    """The buckets ``node`` serves when ``members`` are the cluster."""
    ms = sorted(set(members))
    if node not in ms:
        return frozenset()
    return frozenset(b for b in range(buckets) if owner(b, ms, seed) == node)


def claim(node: int, members: Iterable[int], announced: Iterable[frozenset[int]],
          buckets: int, seed: int, fixed: frozenset[int] = frozenset()) -> frozenset[int]:
    """What ``node`` may serve now: its share among ``members`` less every bucket a live
    peer still announces as served (the peer releases first, then this node takes it, so a
    bucket is never served twice while views differ for a heartbeat or two) and less
    ``fixed``, the buckets live stock conntrackd nodes serve by their static rules (their
    share among every configured node, `share`; the others split what is left)."""
    taken = frozenset().union(*announced)
    return share(node, members, buckets, seed) - taken - fixed


def to_hex(owned: Iterable[int], buckets: int) -> str:
    """A bucket set as a bitmap in hex (bit b = bucket b), for heartbeats."""
    bits = 0
    for b in owned:
        bits |= 1 << b
    return format(bits, "x").zfill((buckets + 3) // 4)


def from_hex(text: str, buckets: int) -> frozenset[int]:
    bits = int(text, 16)
    if bits >> buckets:
        raise ValueError(f"bucket bitmap {text} names buckets beyond {buckets}")
    return frozenset(b for b in range(buckets) if bits >> b & 1)
