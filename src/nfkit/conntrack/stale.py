"""Entries made stale by a topology change, and their flush (one mechanism, many users).

When an address goes away (a PPP or IPsec link comes up with another one, an
ISP delegates a new prefix), conntrack keeps every entry whose NAT binding
uses the old address: their replies can never arrive, and the flow hangs
instead of re-establishing.  The kernel flushes them for MASQUERADE only;
snat, netmap and NPT rules leave them.  Here a topology event (from
`nfkit.route`) becomes the filters of the entries it made stale, and one
selective flush per filter removes them:

- an address or prefix removed: entries source-NATed to it (the reply
  direction's destination is the address, the SRC_NAT bit set);
- an uplink down: entries carrying the uplink's ct mark (multihoming steers
  each flow by its mark), so they re-establish over another uplink.

ctguard's topology flush and nat66's prefix change both call `stale_filters`
and `flush_stale`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from nfkit.conntrack.filter import Filter, Prefix
from nfkit.conntrack.model import AF_INET, AF_INET6, Status
from nfkit.conntrack.table import ConntrackTable, DeleteResult
from nfkit.route.rtnl import Address, Link

Network = ipaddress.IPv4Network | ipaddress.IPv6Network | ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Uplink:
    """An uplink whose flows carry ``mark`` under ``mask`` in their ct mark."""

    ifindex: int
    mark: int
    mask: int = 0xFFFFFFFF


def gone_address_filter(gone: Network, unreplied_only: bool = False) -> Filter:
    """Entries source-NATed to ``gone``: one address (an interface's, prefix length
    ignored) or every address of a prefix (a delegated prefix withdrawn)."""
    if isinstance(gone, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        gone = ipaddress.ip_network((gone.ip, gone.max_prefixlen))
    return Filter(family=AF_INET if gone.version == 4 else AF_INET6,
                  reply_dst=Prefix.parse(str(gone), "stale address"),
                  status_set=int(Status.SRC_NAT),
                  status_clear=int(Status.SEEN_REPLY) if unreplied_only else 0)


def unreplied_nat_filter(family: int) -> Filter:
    """Source-NATed entries that never saw a reply (their binding may predate a new uplink)."""
    return Filter(family=family, status_set=int(Status.SRC_NAT), status_clear=int(Status.SEEN_REPLY))


def route_filter(dst: ipaddress.IPv4Network | ipaddress.IPv6Network, unreplied_only: bool = False
                 ) -> Filter:
    """Entries whose original destination lies in ``dst`` (a route to it changed)."""
    return Filter(family=AF_INET if dst.version == 4 else AF_INET6,
                  dst=Prefix.parse(str(dst), "changed route"),
                  status_clear=int(Status.SEEN_REPLY) if unreplied_only else 0)


def uplink_filter(uplink: Uplink) -> Filter:
    return Filter(mark=uplink.mark, mark_mask=uplink.mask)


def stale_filters(kind: str, present: bool, obj: object, uplinks: Iterable[Uplink] = (),
                  unreplied_only: bool = False) -> list[Filter]:
    """The filters of the entries a route event (see nfkit.route.rtnl.Event) made stale."""
    if isinstance(obj, Address) and not present:
        return [gone_address_filter(obj.interface, unreplied_only)]
    if isinstance(obj, Link) and not (present and obj.running):
        return [uplink_filter(u) for u in uplinks if u.ifindex == obj.index]
    return []


def flush_stale(table: ConntrackTable, filters: Iterable[Filter]) -> DeleteResult:
    """Delete what each filter selects; the results added up."""
    total = DeleteResult()
    for flt in filters:
        result = table.delete_matching(flt)
        total.deleted += result.deleted
        total.matched += result.matched
        total.vanished += result.vanished
        for errno, n in result.failed.items():
            total.failed[errno] = total.failed.get(errno, 0) + n
    return total
