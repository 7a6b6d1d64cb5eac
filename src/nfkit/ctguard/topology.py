"""Which entries a topology change made stale, interface by interface: decisions, no I/O.

The file's ``[[topology]]`` entries say, per interface (``"*"``: every
interface without an entry of its own), what each kind of change flushes:

- ``address_removed``: entries source-NATed to the removed address;
- ``link_down``: entries source-NATed to the link's addresses, and (``mask``
  not 0) every entry whose ct mark carries the uplink's ``mark``;
- ``link_up``: source-NATed entries that never saw a reply (their binding was
  made while the link was down, through another way out);
- ``route_change``: entries whose original destination lies in a route
  added or removed through the interface (the main and other tables; not the
  local table, link-local or multicast routes).

"unreplied" restricts each to entries that never saw a reply, "all" takes
them all, "none" nothing.  `Topology` follows links and addresses from route
events (up/down is a change of the link's running state, not every link
message) and turns each event into (why, filter) pairs for
`nfkit.conntrack.stale.flush_stale`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from nfkit.conntrack.filter import Filter
from nfkit.conntrack.model import AF_INET, AF_INET6
from nfkit.conntrack.stale import (
    Uplink,
    gone_address_filter,
    route_filter,
    unreplied_nat_filter,
    uplink_filter,
)
from nfkit.route.rtnl import Address, Link, Route

ANY = "*"
RT_TABLE_LOCAL = 255
RTN_UNICAST = 1
# no [[topology]] entry for an interface and no "*" entry: this
DEFAULT_RULE: dict[str, Any] = {"interface": ANY, "address_removed": "unreplied", "link_down": "none",
                                "link_up": "none", "route_change": "none", "mark": 0, "mask": 0}
_LINK_LOCAL = (ipaddress.ip_network("fe80::/10"), ipaddress.ip_network("ff00::/8"),
               ipaddress.ip_network("224.0.0.0/4"), ipaddress.ip_network("169.254.0.0/16"))


class Topology:
    """Links, their addresses and the per-interface rules; see the module's docstring."""

    def __init__(self, rules: Iterable[Mapping[str, Any]], links: Iterable[Link],
                 addresses: Iterable[Address]) -> None:
        self.rules = {r["interface"]: dict(r) for r in rules}
        self.names: dict[int, str] = {}
        self.running: dict[int, bool] = {}
        self.addresses: dict[int, set[Any]] = {}
        for link in links:
            self.names[link.index] = link.name
            self.running[link.index] = link.running
        for a in addresses:
            self.addresses.setdefault(a.index, set()).add(a.interface)

    def rule(self, index: int | None) -> dict[str, Any]:
        name = self.names.get(index) if index is not None else None
        if name is not None and name in self.rules:
            return self.rules[name]
        return self.rules.get(ANY, DEFAULT_RULE)

    def filters(self, kind: str, present: bool, obj: object) -> list[tuple[str, Filter]]:
        """The (why, filter) pairs of the entries one route event made stale."""
        if isinstance(obj, Link):
            return self._link(present, obj)
        if isinstance(obj, Address):
            return self._address(present, obj)
        if isinstance(obj, Route):
            return self._route(present, obj)
        return []

    def _link(self, present: bool, link: Link) -> list[tuple[str, Filter]]:
        was = self.running.get(link.index)
        now = present and link.running
        self.names[link.index] = link.name
        self.running[link.index] = now
        rule = self.rule(link.index)
        out: list[tuple[str, Filter]] = []
        if was and not now:  # down (or gone)
            mode = rule["link_down"]
            if mode != "none":
                out += [(f"link {link.name} down: NATed to {a.ip}",
                         gone_address_filter(a, mode == "unreplied"))
                        for a in sorted(self.addresses.get(link.index, ()), key=str)]
            if rule["mask"]:
                up = Uplink(link.index, rule["mark"], rule["mask"])
                out.append((f"link {link.name} down: ct mark {up.mark:#x}/{up.mask:#x}", uplink_filter(up)))
        elif now and not was and was is not None and rule["link_up"] != "none":
            out += [(f"link {link.name} up: unreplied NATed entries", unreplied_nat_filter(family))
                    for family in (AF_INET, AF_INET6)]
        if not present:
            self.addresses.pop(link.index, None)
        return out

    def _address(self, present: bool, a: Address) -> list[tuple[str, Filter]]:
        held = self.addresses.setdefault(a.index, set())
        if present:
            held.add(a.interface)
            return []
        held.discard(a.interface)
        mode = self.rule(a.index)["address_removed"]
        if mode == "none":
            return []
        name = self.names.get(a.index, str(a.index))
        return [(f"address {a.interface.ip} removed from {name}", gone_address_filter(a.interface, mode == "unreplied"))]

    def _route(self, present: bool, r: Route) -> list[tuple[str, Filter]]:
        if r.table == RT_TABLE_LOCAL or r.type != RTN_UNICAST or any(
                r.dst.version == n.version and r.dst.subnet_of(n) for n in _LINK_LOCAL):  # type: ignore[arg-type]
            return []
        mode = self.rule(r.oif)["route_change"]
        if mode == "none":
            return []
        name = self.names.get(r.oif, str(r.oif)) if r.oif is not None else "?"
        return [(f"route {r.dst} via {name} {'added' if present else 'removed'}",
                 route_filter(r.dst, mode == "unreplied"))]
