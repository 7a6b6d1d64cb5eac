"""The compiler's templates (per statement and per rule shape) change no byte: rules
compiled by one compiler, its caches warm from the rules before, equal the same
rules compiled cold (a fresh compiler per rule, no template), over many statement
forms, protocol contexts (dependencies, `ether type`, `meta nfproto`, icmp types)
and families; a rule either path refuses, the other refuses with the same error."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from nfkit.nftables.compiler import RuleCompiler

PORT = st.one_of(st.integers(0, 70000), st.sampled_from(["ssh", "http", "x"]))
ADDR4 = st.sampled_from(["192.0.2.1", "198.51.100.7", "0.0.0.0", "203.0.113.255"])
ADDR6 = st.sampled_from(["2001:db8::1", "2001:db8:1::7", "::"])


def _ranged(values: Any) -> Any:
    """A scalar, or a range, a prefix, a one- or two-element set, a set reference."""
    return st.one_of(
        values, values,
        st.tuples(values, values).map(lambda t: {"range": list(t)}),
        st.lists(values, min_size=1, max_size=2).map(lambda xs: {"set": xs}),
        st.sampled_from(["@s", "@m"]))


def _payload(proto: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": proto, "field": field}}


LEFTS: list[tuple[Any, Any]] = [
    (_payload("ip", "saddr"), st.one_of(_ranged(ADDR4), st.builds(
        lambda a, n: {"prefix": {"addr": a, "len": n}}, ADDR4, st.sampled_from([8, 24, 31])))),
    (_payload("ip", "daddr"), ADDR4),
    (_payload("ip6", "saddr"), _ranged(ADDR6)),
    (_payload("ip", "protocol"), st.sampled_from(["tcp", "udp", "icmp", 6, 17])),
    (_payload("ip6", "nexthdr"), st.sampled_from(["tcp", "udp", "ipv6-icmp", 58])),
    (_payload("ip", "dscp"), st.one_of(st.integers(0, 70), st.sampled_from(["cs1", "ef"]))),
    (_payload("ip", "ttl"), st.integers(0, 300)),
    (_payload("tcp", "dport"), _ranged(PORT)),
    (_payload("tcp", "sport"), PORT),
    (_payload("udp", "dport"), _ranged(PORT)),
    (_payload("tcp", "flags"), st.one_of(st.sampled_from(["syn", "ack", 2]),
                                         st.just(["syn", "ack"]))),
    (_payload("icmp", "type"), st.sampled_from(["echo-request", "echo-reply", 8, 3])),
    (_payload("icmp", "id"), st.integers(0, 70000)),
    (_payload("icmpv6", "type"), st.sampled_from(["echo-request", "nd-neighbor-solicit", 1])),
    (_payload("ether", "type"), st.sampled_from(["ip", "ip6", "vlan", "arp"])),
    (_payload("vlan", "id"), st.integers(0, 5000)),
    ({"meta": {"key": "l4proto"}}, st.sampled_from(["tcp", "udp", "icmp", "ipv6-icmp", 6])),
    ({"meta": {"key": "nfproto"}}, st.sampled_from(["ipv4", "ipv6"])),
    ({"meta": {"key": "iiftype"}}, st.sampled_from(["ether", "loopback"])),
    ({"meta": {"key": "protocol"}}, st.sampled_from(["ip", "ip6"])),
    ({"meta": {"key": "mark"}}, _ranged(st.integers(0, 1 << 33))),
    ({"meta": {"key": "iifname"}}, st.sampled_from(["lo", "eth0", "veth*"])),
    ({"meta": {"key": "length"}}, st.integers(0, 70000)),
    ({"ct": {"key": "state"}}, st.one_of(st.sampled_from(["established", "new"]),
                                         st.just(["established", "related"]))),
    ({"ct": {"key": "mark"}}, st.integers(0, 1 << 32)),
    ({"ct": {"key": "expiration"}}, st.integers(0, 100000)),
]
OPS = st.sampled_from(["==", "==", "!=", "<", ">", "<=", ">=", "in"])
CONSTANT = [{"accept": None}, {"drop": None}, {"return": None}, {"counter": None},
            {"notrack": None}, {"counter": {"packets": 1, "bytes": 2}},
            {"log": {"prefix": "p "}}, {"log": None}, {"reject": None},
            {"limit": {"rate": 5, "per": "second"}}, {"jump": {"target": "c2"}},
            {"goto": {"target": "c2"}}, {"masquerade": None}, {"reject": None},
            {"reject": {"type": "tcp reset"}}, {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]
_IP_DADDR = {"match": {"op": "!=", "left": _payload("ip", "daddr"), "right": "192.0.2.1"}}


@st.composite
def statements(draw: Any) -> dict[str, Any]:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(CONSTANT))  # type: ignore[no-any-return]
    left, values = draw(st.sampled_from(LEFTS))
    body: dict[str, Any] = {"left": left, "right": draw(values)}
    op = draw(OPS)
    if op != "==" or draw(st.booleans()):
        body["op"] = op
    return {"match": body}


rules = st.lists(statements(), min_size=1, max_size=4)


def _compiled(rc: RuleCompiler, stmts: list[dict[str, Any]], templates: bool) -> Any:
    try:
        exprs, sets = (rc.compile if templates else rc._compile)(stmts)
    except Exception as exc:  # both paths must refuse alike
        return type(exc).__name__, str(exc)
    return b"".join(exprs), [(s.name, s.set_id, s.key_sizes, s.elements) for s in sets]


def _cold(warm: RuleCompiler, got: Any) -> RuleCompiler:
    """A fresh compiler numbering anonymous sets as ``warm`` did for ``got`` (a set id
    is unique in a transaction, not a fixed number: a template tried and given up may
    have taken one)."""
    counter, set_ids = list(warm.counter), list(warm.set_ids)
    if type(got[1]) is list and got[1]:
        counter, set_ids = [int(got[1][0][0][5:])], [got[1][0][1] - 1]
    return RuleCompiler(warm.family, warm.table, counter=counter, set_ids=set_ids)


@settings(max_examples=250, deadline=None)
@given(st.lists(rules, min_size=2, max_size=12),
       st.sampled_from(["ip", "ip6", "inet", "bridge", "netdev"]))
@example([[{"reject": None}], [_IP_DADDR, {"reject": None}]], "inet")
def test_warm_compiler_equals_cold(batch: list[list[dict[str, Any]]], family: str) -> None:
    warm_rules = RuleCompiler(family, "t")  # rule-shape templates and statement cache
    warm_stmts = RuleCompiler(family, "t")  # statement cache only
    for stmts in batch:
        for warm, templates in ((warm_rules, True), (warm_stmts, False)):
            before = RuleCompiler(family, "t", counter=list(warm.counter),
                                  set_ids=list(warm.set_ids))
            got = _compiled(warm, stmts, templates)
            cold = _compiled(_cold(before, got), stmts, False)
            assert got == cold, stmts
