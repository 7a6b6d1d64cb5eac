"""route/: rtnetlink against `ip` (iproute2) as the oracle, in a namespace."""

from __future__ import annotations

import ipaddress
import json
import time

import pytest

from nfkit.netlink import uapi
from nfkit.route import spec as S
from nfkit.route.rtnl import PolicyRule, Route, RouteEvents, Rtnl


@pytest.mark.parametrize("aset, header, prefix", S.UAPI, ids=[u[2] for u in S.UAPI])
def test_attribute_numbers_match_headers(aset, header, prefix) -> None:  # type: ignore[no-untyped-def]
    constants = uapi.all_constants(header)
    for number, attr in aset.attrs.items():
        name = prefix + attr.name.upper()
        assert constants[name] == number, name


@pytest.mark.parametrize("name", ["RTM_NEWLINK", "RTM_DELLINK", "RTM_GETLINK", "RTM_NEWADDR",
                                  "RTM_DELADDR", "RTM_GETADDR", "RTM_NEWROUTE", "RTM_DELROUTE",
                                  "RTM_GETROUTE", "RTM_NEWRULE", "RTM_DELRULE", "RTM_GETRULE",
                                  "RTNLGRP_LINK", "RTNLGRP_IPV4_IFADDR", "RTNLGRP_IPV6_IFADDR",
                                  "RTNLGRP_IPV4_ROUTE", "RTNLGRP_IPV6_ROUTE", "RTNLGRP_IPV4_RULE",
                                  "RTNLGRP_IPV6_RULE", "RT_TABLE_MAIN", "RTN_UNICAST", "RTPROT_STATIC",
                                  "RT_SCOPE_LINK", "FR_ACT_TO_TBL", "IFA_F_TENTATIVE"])
def test_numbers_match_headers(name: str) -> None:
    constants = {}
    for header in ("linux/rtnetlink.h", "linux/fib_rules.h", "linux/if_addr.h"):
        constants.update(uapi.all_constants(header))
    assert constants[name] == getattr(S, name)


def ip_json(ns, *args: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return json.loads(ns.run(["ip", "-j", *args]).stdout or "[]")


@pytest.mark.kernel
def test_links_addresses_routes_rules_match_ip(lab) -> None:  # type: ignore[no-untyped-def]
    a, b = lab.add("a"), lab.add("b")
    lab.link(a, b, ["192.0.2.1/24", "2001:db8:1::1/64"], ["192.0.2.2/24", "2001:db8:1::2/64"])
    a.run("ip route add 198.51.100.0/24 via 192.0.2.2 table 100")
    a.run("ip -6 route add 2001:db8:9::/48 via 2001:db8:1::2 metric 7")
    a.run("ip rule add fwmark 0x10/0xff table 100 priority 1000")
    a.run("ip -6 rule add from 2001:db8:1::/64 table 200 priority 1001")
    with a.enter(), Rtnl() as rt:
        links = rt.links()
        addrs = rt.addresses()
        routes4 = rt.routes(4, table=100)
        routes6 = rt.routes(6)
        rules4, rules6 = rt.rules(4), rt.rules(6)
    want_links = {(d["ifindex"], d["ifname"], d["operstate"].lower()) for d in ip_json(a, "link")}
    assert {(x.index, x.name, x.operstate) for x in links} == want_links
    want_addrs = {(d["ifindex"], f"{i['local']}/{i['prefixlen']}") for d in ip_json(a, "addr")
                  for i in d["addr_info"]}
    assert {(x.index, str(x.interface)) for x in addrs} == want_addrs
    assert routes4 == [Route(ipaddress.ip_network("198.51.100.0/24"), 100, rt_oif(links, "v1a"),
                             ipaddress.ip_address("192.0.2.2"), None, 3)]  # `ip route add`: proto boot (3)
    r6 = next(r for r in routes6 if str(r.dst) == "2001:db8:9::/48")
    assert (r6.gateway, r6.priority) == (ipaddress.ip_address("2001:db8:1::2"), 7)
    assert PolicyRule(4, 1000, 100, 0x10, 0xFF) in rules4
    assert PolicyRule(6, 1001, 200, src=ipaddress.ip_network("2001:db8:1::/64")) in rules6


def rt_oif(links, name: str) -> int:  # type: ignore[no-untyped-def]
    return next(x.index for x in links if x.name == name)


@pytest.mark.kernel
def test_routes_and_rules_written_are_what_ip_shows(lab) -> None:  # type: ignore[no-untyped-def]
    a, b = lab.add("a"), lab.add("b")
    lab.link(a, b, ["192.0.2.1/24", "2001:db8:1::1/64"], ["192.0.2.2/24", "2001:db8:1::2/64"])
    with a.enter(), Rtnl() as rt:
        oif = rt.link("v1a").index
        rt.add_route(Route(ipaddress.ip_network("203.0.113.0/24"), 1000, oif,
                           ipaddress.ip_address("192.0.2.2")))
        rt.add_route(Route(ipaddress.ip_network("::/0"), 1000, oif, ipaddress.ip_address("2001:db8:1::2")))
        rt.add_rule(PolicyRule(6, 900, 1000, fwmark=0x100, fwmask=0xF00))
    assert a.run("ip route show table 1000").stdout.split() == \
        "203.0.113.0/24 via 192.0.2.2 dev v1a proto static".split()
    assert "default via 2001:db8:1::2 dev v1a proto static" in a.run("ip -6 route show table 1000").stdout
    assert "900:\tfrom all fwmark 0x100/0xf00 lookup 1000" in a.run("ip -6 rule").stdout
    with a.enter(), Rtnl() as rt:
        rt.delete_rule(PolicyRule(6, 900, 1000, fwmark=0x100, fwmask=0xF00))
        rt.delete_route(Route(ipaddress.ip_network("203.0.113.0/24"), 1000, oif,
                              ipaddress.ip_address("192.0.2.2")))
    assert "900:" not in a.run("ip -6 rule").stdout
    assert a.run("ip route show table 1000").stdout == ""


@pytest.mark.kernel
def test_events_for_carrier_and_address_changes(lab) -> None:  # type: ignore[no-untyped-def]
    a, b = lab.add("a"), lab.add("b")
    lab.link(a, b, ["192.0.2.1/24"], ["192.0.2.2/24"])
    with a.enter():
        events = RouteEvents()
    try:
        t0 = time.monotonic()
        b.run("ip link set v1b down")  # a loses carrier
        a.run("ip addr add 2001:db8:5::1/64 dev v1a nodad")
        a.run("ip addr del 192.0.2.1/24 dev v1a")
        seen = list(events.wait(0.5))
        assert time.monotonic() - t0 < 5
    finally:
        events.close()
    carrier = [e[2] for e in seen if e[0] == "link" and e[2].name == "v1a"]
    assert carrier and not carrier[-1].carrier
    added = [e[2].interface for e in seen if e[0] == "address" and e[1]]
    gone = [e[2].interface for e in seen if e[0] == "address" and not e[1]]
    assert ipaddress.ip_interface("2001:db8:5::1/64") in added
    assert ipaddress.ip_interface("192.0.2.1/24") in gone
