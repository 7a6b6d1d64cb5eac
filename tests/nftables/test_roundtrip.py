"""Statements -> kernel expressions -> statements, without the kernel (property tests).

The decoder must give back what the compiler was given, for the forms nft
itself prints (the kernel conformance tests check that against nft)."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.nftables.transaction import normalize
from nfkit.nftables.types import T

ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
port = st.integers(1, 65535)
mark = st.integers(0, 2**32 - 1)
ops = st.sampled_from(["==", "!="])
verdict = st.sampled_from([{"accept": None}, {"drop": None}, {"return": None},
                           {"jump": {"target": "other"}}])


def match(left: dict, right: object, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def payload(proto: str, field: str) -> dict:
    return {"payload": {"protocol": proto, "field": field}}


@settings(max_examples=200, deadline=None)
@given(ipv4, port, ops, verdict)
def test_ip_tcp_rule(addr: str, p: int, op: str, v: dict) -> None:
    rule = [match(payload("ip", "saddr"), addr, op), match(payload("tcp", "dport"), p), v]
    assert normalize(rule, "inet") == rule
    assert normalize(rule, "ip") == rule


@settings(max_examples=100, deadline=None)
@given(ipv6, st.integers(1, 128), port)
def test_ip6_prefix(addr: str, plen: int, p: int) -> None:
    net = ipaddress.IPv6Network(f"{addr}/{plen}", strict=False)
    rule = [match(payload("ip6", "daddr"), {"prefix": {"addr": str(net.network_address),
                                                        "len": plen}}),
            match(payload("udp", "dport"), p), {"accept": None}]
    got = normalize(rule, "ip6")
    right = got[0]["match"]["right"]
    if plen == 128:  # a /128 is the address itself
        assert ipaddress.IPv6Address(right) == net.network_address
    else:  # printed as inet_ntop prints it (as nft does): compare the addresses
        assert right["prefix"]["len"] == plen
        assert ipaddress.IPv6Address(right["prefix"]["addr"]) == net.network_address
    assert got[1:] == rule[1:]


@settings(max_examples=100, deadline=None)
@given(port, port, mark, st.sampled_from(["<", ">", "<=", ">="]))
def test_ranges_and_host_order_compare(a: int, b: int, m: int, op: str) -> None:
    lo, hi = min(a, b), max(a, b)
    if lo == hi:
        hi = lo + 1 if lo < 65535 else lo
        lo = hi - 1
    rule = [match(payload("tcp", "sport"), {"range": [lo, hi]}),
            match({"meta": {"key": "mark"}}, m, op), {"drop": None}]
    assert normalize(rule, "inet") == rule


@settings(max_examples=60, deadline=None)
@given(st.lists(port, min_size=1, max_size=8, unique=True))
def test_anonymous_set_is_sorted_like_nft(ports: list[int]) -> None:
    rule = [match(payload("tcp", "dport"), {"set": ports}), {"accept": None}]
    # one element: compared as that element, as nft loads it (`tcp dport { 22 }`)
    right = {"set": sorted(ports)} if len(set(ports)) > 1 or len(ports) > 1 else ports[0]
    want = [match(payload("tcp", "dport"), right), {"accept": None}]
    assert normalize(rule, "inet") == want


@given(st.sampled_from(sorted(T["ct_state"].symbols)),
       st.sampled_from(sorted(T["icmp_type"].symbols)))
def test_symbols(state: str, icmp: str) -> None:
    rule = [match({"ct": {"key": "state"}}, [state], "in"),
            match(payload("icmp", "type"), icmp), {"accept": None}]
    got = normalize(rule, "ip")
    assert got[0]["match"]["right"] == state
    assert got[1:] == rule[1:]
