"""nat66's configuration file: every key, its type, default and meaning, in one schema.

    [daemon]
    status = "/run/nfkit/nat66.sock"   # nfkit nat66 status reads it
    metrics = ""                       # "127.0.0.1:9166" serves Prometheus metrics

    [[npt]]                            # stateless, checksum-neutral (RFC 6296)
    inside = "fd01:203:405::/48"
    outside = "2001:db8:1::/48"
    interface = "wan0"

    [[snat]]                           # stateful NAT66 (masquerade when `to` is absent)
    inside = "fd00:1::/64"
    interface = "wan1"
    to = "2001:db8:2::/64"             # an address, a range a-b, or a prefix (netmap)
    ports = "1024-65535"
    flags = ["random"]

    [[dnat]]                           # a server or a pool behind one outside address
    address = "2001:db8:1::80"
    port = 80
    protocol = "tcp"
    servers = ["fd01:203:405:1::10", "fd01:203:405:1::11"]
    spread = "jhash"                   # jhash (by client address) or numgen (round robin)

    [multihoming]                      # what [[uplink]] balances
    inside = "fd01:203:405::/48"       # the inside prefix; mapped (NPTv6) onto each uplink's
    balance = "host"                   # host: one uplink per inside address; flow: per flow

    [[uplink]]                         # multihoming: one per ISP
    interface = "wan0"
    outside = "2001:db8:1::/48"        # a prefix, "address", "file:PATH" or "" (masquerade)
    gateway = "fe80::1"
    mark = 1                           # ct mark of the flows it carries (1-255)
    table = 101                        # policy-routing table nfkit fills for it
    weight = 1
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from nfkit.nat66.npt import MAX_PREFIX_LEN
from nfkit.service.config import Config, Key, Schema, Section, ifname, in_range, load, one_of


def _prefix(text: str) -> ipaddress.IPv6Network:
    try:
        return ipaddress.IPv6Network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IPv6 prefix without host bits ({exc})") from None


def _npt_prefix(text: str) -> ipaddress.IPv6Network:
    net = _prefix(text)
    if net.prefixlen > MAX_PREFIX_LEN:
        raise ValueError(f"{text}: NPTv6 prefixes are at most /{MAX_PREFIX_LEN}")
    return net


def _address(text: str) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv6 address") from None


def _snat_target(text: str) -> str:
    first, dash, last = text.partition("-")
    if dash:
        a, b = _address(first), _address(last)
        if a > b:
            raise ValueError(f"range {text}: the first address is above the last")
    elif "/" in text:
        _prefix(text)
    else:
        _address(text)
    return text


def _ports(text: str) -> str:
    low, _, high = text.partition("-")
    try:
        lo, hi = int(low), int(high or low)
    except ValueError:
        raise ValueError(f"{text!r} is not a port or a range of ports") from None
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f"{text}: ports are 1-65535, the first not above the last")
    return text


def _flags(values: list[Any]) -> list[str]:
    known = ("random", "fully-random", "persistent")
    for v in values:
        if v not in known:
            raise ValueError(f"unknown flag {v!r} (known: {', '.join(known)})")
    return values


def _outside(text: str) -> str:
    """An uplink's outside prefix: fixed, followed ("address": the prefix of the
    interface's global address; "file:PATH": the prefix written there), or none."""
    if text in ("", "address") or text.startswith("file:") and len(text) > 5:
        return text
    _npt_prefix(text)
    return text


def _servers(values: list[Any]) -> list[ipaddress.IPv6Address]:
    if not values:
        raise ValueError("a pool needs at least one server")
    return [_address(str(v)) for v in values]


SCHEMA = Schema((
    Section("daemon", (
        Key("status", str, "status socket of `nfkit nat66 run`", "/run/nfkit/nat66.sock"),
        Key("metrics", str, "HOST:PORT serving Prometheus metrics (empty: none)", ""),
        Key("remove_on_exit", bool, "remove nfkit's rules when the daemon stops", False),
    ), "the daemon (`nfkit nat66 run`)"),
    Section("npt", (
        Key("inside", str, "inside prefix (at most /64)", check=_npt_prefix),
        Key("outside", str, "outside prefix (at most /64)", check=_npt_prefix),
        Key("interface", str, "the outside interface", check=ifname),
    ), "a stateless, checksum-neutral prefix translation (RFC 6296)", many=True),
    Section("snat", (
        Key("inside", str, "source prefix translated", check=_prefix),
        Key("interface", str, "the outside interface", check=ifname),
        Key("to", str, "address, range a-b or prefix (netmap); empty: masquerade", "",
            check=lambda v: _snat_target(v) if v else v),
        Key("ports", str, "source port range, e.g. 1024-65535 (empty: kept)", "",
            check=lambda v: _ports(v) if v else v),
        Key("flags", list, "random, fully-random, persistent", [], _flags),
    ), "stateful source NAT66 or masquerade", many=True),
    Section("dnat", (
        Key("address", str, "outside address clients connect to", check=_address),
        Key("port", int, "outside port", check=in_range(1, 65535)),
        Key("protocol", str, "tcp or udp", "tcp", one_of("tcp", "udp")),
        Key("servers", list, "inside servers (one, or a pool)", check=_servers),
        Key("server_port", int, "port on the servers (0: the same)", 0,
            lambda v: in_range(1, 65535)(v) if v else v),
        Key("spread", str, "jhash (one client, one server) or numgen (round robin)", "jhash",
            one_of("jhash", "numgen")),
    ), "destination NAT66 to a server or a pool", many=True),
    Section("multihoming", (
        Key("inside", str, "the inside prefix the uplinks carry (required with [[uplink]])", "",
            lambda v: str(_npt_prefix(v)) if v else v),
        Key("balance", str, "host (a hash of the inside address) or flow (each new flow)",
            "host", one_of("host", "flow")),
    ), "how new flows are spread over the [[uplink]]s"),
    Section("uplink", (
        Key("interface", str, "the uplink's interface", check=ifname),
        Key("outside", str, "its prefix (NPTv6 from [multihoming] inside); \"address\": the "
            "prefix of the interface's global address, followed; \"file:PATH\": the prefix "
            "written in PATH (a DHCPv6 client's hook), followed; empty: masquerade", "",
            _outside),
        Key("gateway", str, "next hop (empty: on-link)", "", lambda v: str(_address(v)) if v else v),
        Key("mark", int, "ct mark of its flows (1-255)", check=in_range(1, 255)),
        Key("table", int, "policy-routing table nfkit fills for it", check=in_range(1, 2**31 - 1)),
        Key("weight", int, "share of new flows", 1, in_range(1, 100)),
    ), "multihoming: one per uplink", many=True),
))


def read(path: str | Path) -> Config:
    """Read and check a nat66 file (ConfigError: file:line: key: why); no kernel involved."""
    cfg = load(path, SCHEMA)
    _check_overlaps(cfg)
    return cfg


def _check_overlaps(cfg: Config) -> None:
    for kind in ("inside", "outside"):
        seen: list[tuple[int, ipaddress.IPv6Network]] = []
        for i, entry in enumerate(cfg["npt"]):
            net = entry[kind]
            for j, other in seen:
                if net.overlaps(other):
                    raise cfg.error(("npt", i, kind), f"{net} overlaps npt[{j}].{kind} {other}")
            seen.append((i, net))
    for i, entry in enumerate(cfg["snat"]):
        inside, to = ipaddress.IPv6Network(entry["inside"]), entry["to"]
        if "/" in to and ipaddress.IPv6Network(to).prefixlen > inside.prefixlen:
            raise cfg.error(("snat", i, "to"), f"{to} is longer than inside {inside}: a prefix "
                            "maps 1:1 only onto one at least as large")
    fixed: list[tuple[int, ipaddress.IPv6Network]] = []
    for i, up in enumerate(cfg["uplink"]):
        if up["outside"] and up["outside"] != "address" and not up["outside"].startswith("file:"):
            net = ipaddress.IPv6Network(up["outside"])
            for j, other in fixed:
                if net.overlaps(other):
                    raise cfg.error(("uplink", i, "outside"), f"{net} overlaps uplink[{j}].outside {other}")
            fixed.append((i, net))
    if cfg["uplink"] and not cfg["multihoming"]["inside"]:
        raise cfg.error(("multihoming", "inside"), "required with [[uplink]]: the prefix "
                        "the uplinks carry")
    marks: dict[int, int] = {}
    tables: dict[int, int] = {}
    ifaces: dict[str, int] = {}
    for i, up in enumerate(cfg["uplink"]):
        for key, used in (("mark", marks), ("table", tables), ("interface", ifaces)):
            if up[key] in used:
                raise cfg.error(("uplink", i, key), f"{up[key]} is also uplink[{used[up[key]]}]'s")
            used[up[key]] = i
