"""Who is in the cluster: heartbeats in and out, peers alive or dead, what this node may serve.

Owns: the heartbeat datagram (nfkit's own, beside conntrackd's protocol: a
magic word and a JSON object with the sender's number, boot id, readiness,
view of the members and the buckets it serves), each peer's liveness from the
heartbeats heard on every path (the sync link and the inside segment), this
node's readiness, and the buckets it may serve (`nfkit.ha.buckets.claim`).

The rules (docs/ha.md, "Active-active cluster"):
- a peer is alive while a heartbeat from it was heard, on any path, within
  DeadTime; it counts as a member when alive and ready;
- this node is ready when its shared interfaces are up and have been for
  DeadTime plus one interval (it has heard who else is there); a node not
  ready serves nothing and answers no ARP;
- split brain (the sync link cut, both alive): the peer is still heard on the
  inside segment, so it stays a member and nobody takes its buckets; each
  node keeps serving its own share;
- a bucket is taken only when no live peer announces serving it;
- a stock conntrackd node (Node's Daemon conntrackd) sends no heartbeats: it is
  alive (and a member) while its sync datagrams (its FTFW ALIVE comes after a
  quiet second) are heard within StockDeadTime, and while alive it serves its
  static share (its share among every configured node: the rules `nfkit ha
  rules` gave it); the nfkit members split the other buckets among themselves;
- ARP and neighbour solicitations are answered by the lowest-numbered nfkit member.
Must not know: sockets, nf_tables, the sync engine.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from nfkit.ha import buckets
from nfkit.ha.conf import ClusterConf

MAGIC = b"NFKC1 "
PATHS = ("sync", "segment")


@dataclass
class PeerView:
    number: int
    heard: dict[str, float] = field(default_factory=dict)  # path -> when last heard
    boot: int | None = None
    ready: bool = False
    members: tuple[int, ...] = ()
    serves: frozenset[int] = frozenset()
    heartbeats: int = 0
    alive: bool = False
    deaths: int = 0
    died_at: float | None = None  # monotonic time it was declared dead
    last_heard: float | None = None  # when it was last heard, on any path, before it died
    stock: bool = False  # a stock conntrackd node: heard by its sync datagrams only
    longest_gap: dict[str, float] = field(default_factory=dict)  # path -> longest silence between two heard


@dataclass
class Counters:
    sent: int = 0
    received: int = 0
    malformed: int = 0
    foreign: int = 0  # another cluster's (or a differently configured node's) heartbeats


class Membership:
    """This node's view of the cluster, fed heartbeats and the state of its links."""

    def __init__(self, cc: ClusterConf, now: float) -> None:
        self.cc = cc
        self.me = cc.this_node
        self.boot = int.from_bytes(os.urandom(6), "big")
        self.peers = {p.number: PeerView(p.number, stock=p.stock) for p in cc.peers}
        self.links_up_since: float | None = None
        self.counters = Counters()
        self.seq = 0
        self.started = now

    # ---- input -----------------------------------------------------------------

    def links(self, up: bool, now: float) -> None:
        """Whether every shared interface is up (and has carrier) now."""
        if not up:
            self.links_up_since = None
        elif self.links_up_since is None:
            self.links_up_since = now

    def heartbeat_in(self, data: bytes, path: str, now: float) -> int | None:
        """A heartbeat heard on ``path``; returns the sender's number (None: dropped, counted)."""
        if not data.startswith(MAGIC):
            self.counters.malformed += 1
            return None
        try:
            hb = json.loads(data[len(MAGIC):])
            node, boot, ready = int(hb["node"]), int(hb["boot"]), bool(hb["ready"])
            members = tuple(int(m) for m in hb["members"])
            if (int(hb["buckets"]), int(hb["seed"])) != (self.cc.buckets, self.cc.hash_seed):
                self.counters.foreign += 1
                return None
            serves = buckets.from_hex(str(hb["serves"]), self.cc.buckets)
        except (ValueError, KeyError, TypeError):
            self.counters.malformed += 1
            return None
        p = self.peers.get(node)
        if p is None:
            self.counters.foreign += 1
            return None
        self.counters.received += 1
        if path in p.heard:
            p.longest_gap[path] = max(p.longest_gap.get(path, 0.0), now - p.heard[path])
        p.heard[path] = now
        p.boot, p.ready, p.members, p.serves = boot, ready, members, serves
        p.heartbeats += 1
        return node

    def sync_heard(self, node: int, now: float) -> None:
        """A sync datagram from ``node``: the only sign of life of a stock conntrackd node."""
        p = self.peers.get(node)
        if p is not None and p.stock:
            p.heard["sync"] = now

    # ---- state -----------------------------------------------------------------

    def ready(self, now: float) -> bool:
        s = self.links_up_since
        return s is not None and now - s >= self.cc.ready_after

    def update(self, now: float) -> list[tuple[int, bool]]:
        """Declare peers dead or alive from what was heard; returns the changes (number, alive)."""
        changes = []
        for p in self.peers.values():
            limit = self.cc.stock_dead_time if p.stock else self.cc.dead_time
            alive = any(now - t <= limit for t in p.heard.values())
            if p.stock:
                p.ready = alive
                if alive:
                    p.serves = self.static_share(p.number)
            if alive != p.alive:
                p.alive = alive
                if not alive:
                    p.deaths += 1
                    p.died_at = now
                    p.last_heard = max(p.heard.values(), default=None)
                changes.append((p.number, alive))
        return changes

    def members(self, now: float) -> list[int]:
        out = [p.number for p in self.peers.values() if p.alive and p.ready]
        if self.ready(now):
            out.append(self.me)
        return sorted(out)

    def static_share(self, node: int) -> frozenset[int]:
        """A stock node's buckets: its share among every configured node."""
        return buckets.share(node, self.cc.nodes, self.cc.buckets, self.cc.hash_seed)

    def wanted(self, now: float) -> frozenset[int]:
        """The buckets this node may serve now."""
        if not self.ready(now):
            return frozenset()
        live = [p for p in self.peers.values() if p.alive]
        fixed = frozenset().union(*(p.serves for p in live if p.stock))
        ours = [n for n in self.members(now) if not (n in self.peers and self.peers[n].stock)]
        return buckets.claim(self.me, ours, [p.serves for p in live if not p.stock], self.cc.buckets,
                             self.cc.hash_seed, fixed)

    def answers_arp(self, now: float) -> bool:
        """One node answers ARP (and neighbour solicitations) for the cluster's addresses: the
        lowest-numbered nfkit member (a stock node's static rules never answer)."""
        ms = [n for n in self.members(now) if not (n in self.peers and self.peers[n].stock)]
        return self.ready(now) and bool(ms) and ms[0] == self.me

    def heartbeat_out(self, now: float, serves: frozenset[int]) -> bytes:
        self.seq += 1
        self.counters.sent += 1
        body = {"node": self.me, "boot": self.boot, "seq": self.seq, "ready": self.ready(now),
                "members": self.members(now), "buckets": self.cc.buckets, "seed": self.cc.hash_seed,
                "serves": buckets.to_hex(serves, self.cc.buckets)}
        return MAGIC + json.dumps(body, separators=(",", ":")).encode()

    def status(self, now: float) -> dict[str, Any]:
        return {
            "node": self.me, "ready": self.ready(now), "members": self.members(now),
            "heartbeats": vars(self.counters),
            "peers": [{"node": p.number, "daemon": "conntrackd" if p.stock else "nfkit", "alive": p.alive, "ready": p.ready, "members": list(p.members),
                       "serves": len(p.serves), "deaths": p.deaths, "heartbeats": p.heartbeats,
                       "heard_ago": {k: round(now - t, 3) for k, t in p.heard.items()},
                       "longest_gap": {k: round(t, 3) for k, t in p.longest_gap.items()}}
                      for p in self.peers.values()],
        }
