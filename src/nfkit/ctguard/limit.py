"""ctguard's own table: the per-source limit of new connections, a `ct count` rule.

While a source holds more than its share of a table under pressure, ctguard
installs (one transaction, `nfkit.service.owntable.Owned`) table inet
nfkit_ctguard: a prerouting chain after conntrack whose rules add each new
connection's source address to a dynamic set carrying `ct count over N`
(the kernel's connlimit, per set element) and drop it when that source
already has N connections counted.  N is the fair share when the rule goes
in.  Removed, again in one transaction, when the pressure ends and on exit.
"""

from __future__ import annotations

from typing import Any

from nfkit.nftables import Ruleset
from nfkit.service.owntable import Owned

FAMILY, TABLE, CHAIN = "inet", "nfkit_ctguard", "source_limit"
PRIORITY = -150  # after conntrack (-200): the connection is tracked, `ct count` can count it
SETS = (("ip", "sources_v4", "ipv4_addr"), ("ip6", "sources_v6", "ipv6_addr"))
OWNED = Owned(FAMILY, TABLE)


def source_limit_rule(protocol: str, set_name: str, over: int) -> list[dict[str, Any]]:
    """`ct state new add @SET { PROTOCOL saddr ct count over N } drop`, as statements."""
    return [
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}},
        {"set": {"op": "add", "elem": {"payload": {"protocol": protocol, "field": "saddr"}},
                 "set": "@" + set_name, "stmt": [{"ct count": {"val": over, "inv": True}}]}},
        {"drop": None},
    ]


def ruleset(over: int, size: int) -> Ruleset:
    """The table: one dynamic set and one rule per address family."""
    rs = Ruleset()
    t = rs.table(FAMILY, TABLE)
    chain = rs.chain(t, CHAIN, type="filter", hook="prerouting", prio=PRIORITY, policy="accept")
    for protocol, name, key in SETS:
        rs.set(t, name, type=key, flags=["dynamic"], size=size)
        rs.rule(chain, *source_limit_rule(protocol, name, over),
                comment=f"ctguard: at most {over} new connections per source")
    return rs


def install(over: int, size: int) -> None:
    """Install (or replace) the table, in one commit."""
    OWNED.replace(ruleset(over, size))


def remove() -> None:
    """Remove the table (absent is fine), in one commit."""
    OWNED.remove()
