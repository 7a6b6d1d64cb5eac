"""nat66's file as nf_tables rules: stateful NAT66 in nfkit's own table.

`ruleset` turns the [[snat]] and [[dnat]] sections into table `ip6
nfkit_nat66` (prerouting at dstnat, postrouting at srcnat priority);
`apply` makes the kernel's copy of that table equal to it with the smallest
change set (re-applying an unchanged file sends nothing) and touches no other
table, so a user's own ruleset (say, one that drops `ct state invalid`) stays
as it is.  What cannot be written exactly is an error naming the entry,
before anything is sent.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from nfkit.nat66.npt import Mapping
from nfkit.nat66.uplinks import BUCKETS, Topology, buckets
from nfkit.nftables import Command, Ruleset, diff, run_commands
from nfkit.service.config import Config
from nfkit.service.owntable import Owned

FAMILY, TABLE = "ip6", "nfkit_nat66"
# The kernel's NPT targets work only in a table named mangle: nfkit owns these two
# chains there and nothing else (it never flushes the table; iptables-nft may use it).
NPT_IN, NPT_FWD, NPT_OUT = "nfkit-npt-in", "nfkit-npt-fwd", "nfkit-npt-out"
NPT_CHAINS = Owned(FAMILY, "mangle", (NPT_IN, NPT_FWD, NPT_OUT))
# RFC 6296 asks for an ICMPv6 Parameter Problem with its drops; nf_tables' reject sends
# Destination Unreachable only, so the sender learns the address is unreachable (code 3)
REJECT = {"reject": {"type": "icmpv6", "expr": "addr-unreachable"}}
Statement = dict[str, Any]


def _match(left: Statement, right: Any) -> Statement:
    return {"match": {"op": "==", "left": left, "right": right}}


def _payload(proto: str, field: str) -> Statement:
    return {"payload": {"protocol": proto, "field": field}}


def _prefix(net: ipaddress.IPv6Network) -> Any:
    if net.prefixlen == 128:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _flags(flags: list[str]) -> Any:
    return flags[0] if len(flags) == 1 else flags


def snat_rule(entry: dict[str, Any]) -> list[Statement]:
    """One [[snat]] entry: masquerade (no `to`), snat to an address or a range, or to a
    prefix (nft's `snat prefix to`, the netmap flag: 1:1, host bits kept)."""
    stmts = [_match({"meta": {"key": "oifname"}}, entry["interface"]),
             _match(_payload("ip6", "saddr"), _prefix(ipaddress.IPv6Network(entry["inside"])))]
    nat: Statement = {}
    if entry["ports"]:
        lo, _, hi = entry["ports"].partition("-")
        stmts.append(_match({"meta": {"key": "l4proto"}}, {"set": ["tcp", "udp"]}))
        nat["port"] = {"range": [int(lo), int(hi or lo)]}
    flags = list(entry["flags"])
    to = entry["to"]
    if not to:
        if flags:
            nat["flags"] = _flags(flags)
        stmts.append({"masquerade": nat or None})
        return stmts
    if "/" in to:  # netmap: each inside address keeps its host bits under the new prefix
        nat["addr"] = _prefix(ipaddress.IPv6Network(to))
        flags = ["netmap", *flags]
    else:
        first, dash, last = to.partition("-")
        nat["addr"] = {"range": [first, last]} if dash else to
    if flags:
        nat["flags"] = _flags(flags)
    nat["family"] = "ip6"
    stmts.append({"snat": nat})
    return stmts


def dnat_rule(entry: dict[str, Any], pool: str) -> list[Statement]:
    """One [[dnat]] entry: to one server, or spread over a pool (the named map ``pool``,
    see `pool_map`) by jhash or numgen."""
    proto = entry["protocol"]
    stmts = [_match(_payload("ip6", "daddr"), str(ipaddress.IPv6Address(entry["address"]))),
             _match(_payload(proto, "dport"), entry["port"])]
    servers = [str(s) for s in entry["servers"]]
    if len(servers) == 1:
        addr: Any = servers[0]
    else:
        key = ({"jhash": {"mod": len(servers), "expr": _payload("ip6", "saddr")}}
               if entry["spread"] == "jhash" else
               {"numgen": {"mode": "inc", "mod": len(servers), "offset": 0}})
        addr = {"map": {"key": key, "data": f"@{pool}"}}
    nat: Statement = {"family": "ip6", "addr": addr}
    if entry["server_port"]:
        nat["port"] = entry["server_port"]
    stmts.append({"dnat": nat})
    return stmts


def pool_map(rs: Ruleset, table: Any, name: str, entry: dict[str, Any]) -> None:
    """The map from hash bucket to server of a [[dnat]] pool."""
    rs.set(table, name, type="mark", map="ipv6_addr",
           elem=[[i, str(s)] for i, s in enumerate(entry["servers"])])


def ruleset(cfg: Config, topology: Topology | None = None) -> Ruleset:
    """Table ip6 nfkit_nat66 for the file's stateful NAT (a nat chain only where an entry
    needs it) and, with [[uplink]]s, the steering of new flows (see `steering`)."""
    rs = Ruleset()
    t = rs.table(FAMILY, TABLE)
    # a nat chain makes the kernel track every packet: none when nothing needs one, so
    # NPTv6 alone (stateless) costs no conntrack
    if cfg["dnat"]:
        pre = rs.chain(t, "prerouting", type="nat", hook="prerouting", prio=-100, policy="accept")
    masquerading = [up for up in cfg["uplink"] if not up["outside"]]
    if cfg["snat"] or masquerading:
        post = rs.chain(t, "postrouting", type="nat", hook="postrouting", prio=100, policy="accept")
    for i, entry in enumerate(cfg["dnat"]):
        if len(entry["servers"]) > 1:
            pool_map(rs, t, f"dnat{i}_pool", entry)
        rs.rule(pre, *dnat_rule(entry, f"dnat{i}_pool"), comment=f"dnat[{i}]")
    for i, entry in enumerate(cfg["snat"]):
        rs.rule(post, *snat_rule(entry), comment=f"snat[{i}]")
    if cfg["uplink"]:
        steering(rs, t, cfg, topology or Topology(cfg["uplink"]))
        inside = _prefix(ipaddress.IPv6Network(cfg["multihoming"]["inside"]))
        for i, up in enumerate(cfg["uplink"]):
            if not up["outside"]:
                rs.rule(post, _match({"meta": {"key": "oifname"}}, up["interface"]),
                        _match(_payload("ip6", "saddr"), inside), {"masquerade": None},
                        comment=f"uplink[{i}] masquerade")
    return rs


UPLINK_MAP = "uplink_of_bucket"
HASH_SEED = 0x6E66_6B36  # fixed: a host keeps its uplink across re-applies and restarts


def steering(rs: Ruleset, table: Any, cfg: Config, topology: Topology) -> None:
    """Each new flow from the inside prefix to elsewhere gets the ct mark of an uplink
    (its bucket, a hash of the inside address or a per-flow counter, looked up in the
    map of live uplinks); every packet of it then carries that mark, which the policy
    rules route by.  Only the map's elements change when an uplink goes or comes."""
    inside = _prefix(ipaddress.IPv6Network(cfg["multihoming"]["inside"]))
    rs.set(table, UPLINK_MAP, type="mark", map="mark",
           elem=[[b, m] for b, m in sorted(buckets(topology.uplinks).items())])
    steer = rs.chain(table, "steer", type="filter", hook="prerouting", prio=-150, policy="accept")
    outbound = [_match(_payload("ip6", "saddr"), inside),
                {"match": {"op": "!=", "left": _payload("ip6", "daddr"), "right": inside}}]
    key = ({"jhash": {"mod": BUCKETS, "seed": HASH_SEED, "expr": _payload("ip6", "saddr")}}
           if cfg["multihoming"]["balance"] == "host" else
           {"numgen": {"mode": "inc", "mod": BUCKETS, "offset": 0}})
    rs.rule(steer, *outbound, {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}},
            {"mangle": {"key": {"ct": {"key": "mark"}},
                        "value": {"map": {"key": key, "data": f"@{UPLINK_MAP}"}}}},
            comment="a new flow's uplink")
    rs.rule(steer, *outbound, {"mangle": {"key": {"meta": {"key": "mark"}},
                                          "value": {"ct": {"key": "mark"}}}},
            comment="routed by its uplink's mark")


def rfc_drops(mapping: Mapping, field: str) -> list[tuple[str, Statement]]:
    """The matches of addresses RFC 6296 says to drop, which Linux's NPT translates:
    (why, match) on the address ``field`` (saddr going out, daddr coming in)."""
    addr = _payload("ip6", field)
    if mapping.length <= 48:  # the subnet ID compensates: 0xffff has no unique image
        return [("subnet 0xffff", _match({"&": [addr, "0:0:0:ffff::"]}, "0:0:0:ffff::"))]
    iid = "::ffff:ffff:ffff:ffff"
    return [("all-zero interface id", _match({"&": [addr, iid]}, "::")),
            ("all-ones interface id", _match({"&": [addr, iid]}, iid))]


def npt_ruleset(cfg: Config, topology: Topology | None = None) -> Ruleset:
    """The [[npt]] entries as nfkit's chains of table ip6 mangle: DNPT before
    conntrack (prerouting, priority -300: conntrack sees inside addresses both ways,
    else replies are INVALID), SNPT at mangle priority in postrouting; the RFC's
    drops (counted, answered with an ICMPv6 error) before DNPT and, going out, in
    forward (the one hook before SNPT that knows the output interface).  ICMPv6 errors
    need nothing more: the kernel's targets translate the quoted header too, and DNPT
    before conntrack lets it find the flow an error belongs to (tested).  Each [[uplink]]
    whose outside prefix is known maps the [multihoming] inside prefix onto it the same
    way.  Empty when there is none."""
    rs = Ruleset()
    entries = [(f"npt[{i}]", e["inside"], e["outside"], e["interface"])
               for i, e in enumerate(cfg["npt"])]
    if cfg["uplink"]:
        inside_all = ipaddress.IPv6Network(cfg["multihoming"]["inside"])
        for i, up in enumerate((topology or Topology(cfg["uplink"])).uplinks):
            if up.outside is not None:
                entries.append((f"uplink[{i}]", inside_all, up.outside, up.interface))
    if not entries:
        return rs
    t = rs.table(FAMILY, "mangle")
    pre = rs.chain(t, NPT_IN, type="filter", hook="prerouting", prio=-300, policy="accept")
    fwd = rs.chain(t, NPT_FWD, type="filter", hook="forward", prio=-150, policy="accept")
    post = rs.chain(t, NPT_OUT, type="filter", hook="postrouting", prio=-150, policy="accept")
    for name, inside, outside, interface in entries:
        mapping = Mapping(inside, outside)
        out = [_match({"meta": {"key": "oifname"}}, interface),
               _match(_payload("ip6", "saddr"), _prefix(inside))]
        into = [_match({"meta": {"key": "iifname"}}, interface),
                _match(_payload("ip6", "daddr"), _prefix(outside))]
        # outbound drops in forward: the kernel sends no reject from postrouting
        for chain, head, field in ((fwd, out, "saddr"), (pre, into, "daddr")):
            for why, match in rfc_drops(mapping, field):
                rs.rule(chain, *head, match, {"counter": None}, REJECT,
                        comment=f"{name} RFC 6296 drop: {why}")
        rs.rule(post, *out, {"snpt": {"prefix": str(inside), "to": str(outside)}}, comment=name)
        rs.rule(pre, *into, {"dnpt": {"prefix": str(outside), "to": str(inside)}}, comment=name)
    return rs


def changes(cfg: Config, topology: Topology | None = None) -> list[Command]:
    """What makes the kernel hold the file's NAT66 (its uplinks as ``topology`` has
    them): nfkit's NPT chains (replaced only when they differ) and table ip6
    nfkit_nat66 (the smallest change set)."""
    return NPT_CHAINS.changes(npt_ruleset(cfg, topology)) + diff(ruleset(cfg, topology))


def apply(cfg: Config, dry_run: bool = False, topology: Topology | None = None) -> list[Command]:
    """Make the kernel hold what the file says, in one transaction; returns the changes
    (none when it already does)."""
    cmds = changes(cfg, topology)
    if cmds and not dry_run:
        run_commands(cmds)
    return cmds
