"""Multihoming: which uplinks can carry new flows, and which flows each one gets.

Sans-I/O: the daemon (or `apply`, once) reads links, addresses and prefix files
and gives them here as a `Topology`; `Topology.update` returns what changed
(an uplink down or up, its outside prefix moved), and `buckets` assigns the
hash buckets of new flows to the live uplinks.  Nothing here talks to the
kernel.

Buckets: a new flow's bucket (a hash of the inside address, or a counter per
flow) picks its uplink through a map of `BUCKETS` entries.  Each uplink owns a
share of the buckets by weight; when it is down its buckets go to the live
ones (by weight again) and the others stay where they were, so flows of the
live uplinks keep theirs; when it returns it gets its own back.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nfkit.conntrack.stale import Uplink as StaleUplink
from nfkit.nat66.npt import MAX_PREFIX_LEN
from nfkit.route.rtnl import Address, Link

BUCKETS = 64
Prefix = ipaddress.IPv6Network


@dataclass(frozen=True)
class UplinkState:
    """One [[uplink]] as the kernel shows it now."""

    interface: str
    mark: int
    weight: int
    ifindex: int | None = None
    running: bool = False             # up with carrier
    outside: Prefix | None = None     # its prefix now (None: unknown, or masquerade)
    needs_prefix: bool = True         # NPTv6 (a prefix, fixed or followed) vs masquerade

    @property
    def live(self) -> bool:
        """Can carry new flows: running, and with its prefix when it needs one."""
        return self.running and (self.outside is not None or not self.needs_prefix)

    def as_stale(self) -> StaleUplink | None:
        return None if self.ifindex is None else StaleUplink(self.ifindex, self.mark)


def weighted_cycle(uplinks: list[UplinkState], n: int) -> list[int]:
    """``n`` slots dealt to ``uplinks`` in proportion to their weights, interleaved
    (smooth weighted round robin); each slot holds an uplink's mark."""
    if not uplinks:
        return []
    total = sum(u.weight for u in uplinks)
    current = [0] * len(uplinks)
    out = []
    for _ in range(n):
        for i, u in enumerate(uplinks):
            current[i] += u.weight
        best = max(range(len(uplinks)), key=lambda i: current[i])
        current[best] -= total
        out.append(uplinks[best].mark)
    return out


def buckets(uplinks: list[UplinkState]) -> dict[int, int]:
    """Bucket -> uplink mark: every uplink's own share, the dead ones' shares dealt to
    the live ones; empty when none is live."""
    live = [u for u in uplinks if u.live]
    if not live:
        return {}
    base = weighted_cycle(uplinks, BUCKETS)
    alive = {u.mark for u in live}
    spare = iter(weighted_cycle(live, BUCKETS))
    return {b: mark if mark in alive else next(spare) for b, mark in enumerate(base)}


def prefix_of_file(path: Path) -> Prefix | None:
    """The prefix written in ``path`` (first word of the first non-comment line), or None
    when the file is missing, empty, or not a prefix of at most /64 (the client has not
    written it yet, or wrote something NPTv6 cannot map)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            try:
                net = ipaddress.IPv6Network(words[0], strict=False)
            except ValueError:
                return None
            return net if net.prefixlen <= MAX_PREFIX_LEN else None
    return None


def prefix_of_addresses(ifindex: int, addresses: list[Address]) -> Prefix | None:
    """The delegated prefix a DHCPv6 client installed as an address on ``ifindex``: of its
    usable global IPv6 addresses, the one with the shortest prefix (at most /64; a WAN
    link's own /64 loses to a delegated /48 or /56), or None."""
    found = [a.interface.network for a in addresses
             if a.index == ifindex and a.interface.version == 6 and a.scope == 0  # global scope
             and a.usable and a.interface.network.prefixlen <= 64]
    nets = [n for n in found if isinstance(n, ipaddress.IPv6Network)]
    return min(nets, key=lambda n: (n.prefixlen, int(n.network_address)), default=None)


@dataclass
class Topology:
    """The uplinks of a file, kept up to date from links, addresses and prefix files."""

    config: list[dict[str, Any]]
    uplinks: list[UplinkState] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.uplinks = [UplinkState(u["interface"], u["mark"], u["weight"],
                                    needs_prefix=bool(u["outside"]),
                                    outside=_fixed(u["outside"])) for u in self.config]

    def by_mark(self, mark: int) -> UplinkState:
        return next(u for u in self.uplinks if u.mark == mark)

    def update(self, links: list[Link], addresses: list[Address]) -> list[tuple[UplinkState, UplinkState]]:
        """Read the uplinks again from ``links`` and ``addresses`` (and their prefix
        files); returns (before, after) of each uplink that changed."""
        by_name = {link.name: link for link in links}
        changed = []
        for i, (u, conf) in enumerate(zip(self.uplinks, self.config, strict=True)):
            link = by_name.get(u.interface)
            ifindex = link.index if link else None
            new = replace(u, ifindex=ifindex, running=bool(link and link.running),
                          outside=self._outside(conf["outside"], ifindex, addresses, u.outside))
            if new != u:
                changed.append((u, new))
                self.uplinks[i] = new
        return changed

    @staticmethod
    def _outside(source: str, ifindex: int | None, addresses: list[Address],
                 current: Prefix | None) -> Prefix | None:
        if source == "address":
            return prefix_of_addresses(ifindex, addresses) if ifindex is not None else None
        if source.startswith("file:"):
            return prefix_of_file(Path(source[5:]))
        return current

    def status(self) -> list[dict[str, Any]]:
        table = buckets(self.uplinks)
        return [{"interface": u.interface, "mark": u.mark, "weight": u.weight,
                 "running": u.running, "live": u.live,
                 "outside": str(u.outside) if u.outside else None,
                 "buckets": sum(1 for m in table.values() if m == u.mark)} for u in self.uplinks]


def _fixed(source: str) -> Prefix | None:
    if not source or source == "address" or source.startswith("file:"):
        return None
    return ipaddress.IPv6Network(source)
