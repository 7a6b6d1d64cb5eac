"""Policy routing of the uplinks, over rtnetlink: a flow's ct mark picks its uplink.

For each [[uplink]]: the rule `fwmark MARK lookup TABLE` (priority
`RULE_PRIORITY + mark`) and, in TABLE, the default route through the uplink's
gateway (on-link when it has none).  `ensure` adds what is missing and leaves
what is there (re-running it changes nothing); a route that cannot be added
now (its link is down) is reported and added by the next call.  `remove`
takes away exactly these rules and routes.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from typing import Any

from nfkit.errors import NetlinkError
from nfkit.nat66.uplinks import Topology
from nfkit.route.rtnl import PolicyRule, Route, Rtnl

log = logging.getLogger("nfkit.nat66")

RULE_PRIORITY = 10000
DEFAULT = ipaddress.IPv6Network("::/0")


def policy_rule(up: dict[str, Any]) -> PolicyRule:
    return PolicyRule(6, RULE_PRIORITY + up["mark"], up["table"], fwmark=up["mark"],
                      fwmask=0xFFFFFFFF)


def default_route(up: dict[str, Any], ifindex: int) -> Route:
    gw = ipaddress.IPv6Address(up["gateway"]) if up["gateway"] else None
    return Route(DEFAULT, table=up["table"], oif=ifindex, gateway=gw)


def _same_rule(a: PolicyRule, b: PolicyRule) -> bool:
    return (a.version, a.priority, a.table, a.fwmark) == (b.version, b.priority, b.table, b.fwmark)


def ensure(rt: Rtnl, uplinks: list[dict[str, Any]], topology: Topology) -> list[str]:
    """Add the uplinks' missing rules and routes; returns what could not be added (why)."""
    problems = []
    have = rt.rules(6)
    for up in uplinks:
        rule = policy_rule(up)
        if not any(_same_rule(rule, h) for h in have):
            rt.add_rule(rule)
    routes = {(r.table, r.oif, r.gateway) for r in rt.routes(6) if r.dst == DEFAULT}
    for up, state in zip(uplinks, topology.uplinks, strict=True):
        if state.ifindex is None:
            problems.append(f"{up['interface']}: no such interface")
            continue
        route = default_route(up, state.ifindex)
        if (route.table, route.oif, route.gateway) in routes:
            continue
        try:
            rt.add_route(route)
        except NetlinkError as exc:  # a link that is down takes no route: added when it is up
            if exc.errno not in (errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTUNREACH):
                raise
            problems.append(f"{up['interface']}: default route in table {up['table']}: {exc}")
    return problems


def remove(rt: Rtnl, uplinks: list[dict[str, Any]]) -> None:
    """Remove the uplinks' rules and their tables' default routes (absent ones are fine)."""
    have = rt.rules(6)
    for up in uplinks:
        rule = policy_rule(up)
        for h in have:
            if _same_rule(rule, h):
                rt.delete_rule(h)
    for r in rt.routes(6):
        if r.dst == DEFAULT and any(r.table == up["table"] for up in uplinks):
            rt.delete_route(r)
