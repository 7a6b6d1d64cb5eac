"""The rule compiler's kernel capabilities come in as arguments, not globals."""

from __future__ import annotations

from typing import Any

from nfkit.netlink.codec import Batch
from nfkit.nftables.compiler import RuleCompiler
from nfkit.nftables.expressions import parse_exprs
from nfkit.nftables.messages import Encoder
from nfkit.nftables.model import Rule

QUEUE = [{"queue": {"num": 3}}]


def _names(exprs: list[bytes]) -> list[str]:
    return [name for name, _ in parse_exprs(b"".join(exprs))]


def test_queue_expression_by_default() -> None:
    exprs, _ = RuleCompiler("ip", "t").compile(QUEUE)
    assert _names(exprs) == ["queue"]


def test_queue_mode_is_asked_only_for_a_queue_statement() -> None:
    asked: list[int] = []

    def mode() -> str:
        asked.append(1)
        return "xt"

    rc = RuleCompiler("ip", "t", queue_mode=mode)
    rc.compile([{"accept": None}])
    assert asked == []
    exprs, _ = rc.compile(QUEUE)
    assert _names(exprs) == ["target"] and asked == [1]
    # two compilers in one process keep their own answer (no process-wide state)
    assert _names(RuleCompiler("ip", "t").compile(QUEUE)[0]) == ["queue"]


def test_encoder_passes_queue_mode_to_its_compilers() -> None:
    enc = Encoder(Batch(), queue_mode=lambda: "xt")
    exprs, _ = enc.rule_exprs(Rule("ip", "t", "c", QUEUE))
    assert _names(exprs) == ["target"]


def test_value_slots_are_recorded_where_the_value_was_written() -> None:
    from nfkit.nftables.compiler import rule_shape

    rule = [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": "192.0.2.7"}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                       "right": 22}},
            {"accept": None}]
    rc = RuleCompiler("ip", "t")
    key, _rights = rule_shape(rule)
    tpl = rc.rule_template(key, rule)
    assert tpl is not None
    statics, slots = tpl
    assert [width for _enc, width, _op in slots] == [4, 2]
    # the template with the values put back is the general compiler's output
    whole = statics[0] + bytes([192, 0, 2, 7]) + statics[1] + (22).to_bytes(2, "big") + statics[2]
    assert whole == b"".join(RuleCompiler("ip", "t").compile(rule)[0])


def test_a_reversed_value_has_no_slot() -> None:
    # "<" on a host-order key is compared in network order (byteorder hton, value
    # reversed): no slot, so no template patches it in the wrong order.
    rule = [{"match": {"op": "<", "left": {"meta": {"key": "mark"}}, "right": 5}}]
    rc = RuleCompiler("ip", "t")
    rc.compile(rule)
    assert rc.slots == []


def test_icmp_type_dependency_is_per_rule() -> None:
    """`icmp id` needs nft's `icmp type { echo-reply, echo-request }` unless the rule
    matched a type itself: a compiled statement is not reused across the two cases."""
    from nfkit.nftables.compiler import RuleCompiler as _RC
    from nfkit.nftables.expressions import parse_exprs as _parse

    def m(f: str, v: object) -> dict:
        return {"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": f}},
                          "right": v}}

    rc = _RC("ip", "t")
    got = []
    for rule in ([m("id", 5)], [m("type", "echo-request"), m("id", 7)], [m("id", 8)]):
        exprs, sets = rc.compile(rule)
        got.append((len(sets), [n for n, _a in _parse(b"".join(exprs))]))
    assert got == [(1, ["meta", "cmp", "payload", "lookup", "payload", "cmp"]),
                   (0, ["meta", "cmp", "payload", "cmp", "payload", "cmp"]),
                   (1, ["meta", "cmp", "payload", "lookup", "payload", "cmp"])]


def test_reject_follows_the_context_of_each_rule() -> None:
    """In an inet table `reject` is icmpx with no network protocol known, icmp after
    `ip daddr ...` (as nft): a reject compiled before for another context is not reused."""
    ip_daddr = {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                          "right": "192.0.2.1"}}
    rules = [[{"reject": None}], [ip_daddr, {"reject": None}],
             [{"reject": {"type": "tcp reset"}}],
             [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
              {"reject": {"type": "tcp reset"}}], [{"reject": None}]]
    rc = RuleCompiler("inet", "t")
    for rule in rules:
        assert rc.compile(rule)[0] == RuleCompiler("inet", "t").compile(rule)[0]
    assert [name for name, _ in parse_exprs(b"".join(rc.compile(rules[1])[0]))][-1] == "reject"
    assert dict(parse_exprs(b"".join(rc.compile(rules[1])[0]))[-1][1])["type"] == \
        (0).to_bytes(4, "big")  # NFT_REJECT_ICMP_UNREACH, not icmpx


def test_a_wildcard_name_after_a_full_name_compares_its_prefix() -> None:
    """`iifname != "lo"` then `iifname != "veth*"`: the second compares the 4 bytes
    "veth" (as nft), not a 16-byte name patched into the first one's template (whose
    attribute lengths would not match its value)."""
    def rule(name: str) -> list[dict[str, Any]]:
        return [{"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": name}},
                {"drop": None}]

    rc = RuleCompiler("ip", "t")
    for name in ("lo", "veth*", "eth0", "ppp*"):
        assert rc.compile(rule(name))[0] == RuleCompiler("ip", "t").compile(rule(name))[0]
    cmp_data = dict(parse_exprs(b"".join(rc.compile(rule("veth*"))[0]))[1][1])["data"]
    assert b"veth" in cmp_data and b"veth\0" not in cmp_data


def test_ether_type_sets_the_context_of_its_own_rule() -> None:
    """`ether type ip6` then `ether type ip reject`: the reject of the second rule is
    icmp (its network protocol is ip), not icmpv6 from the first rule's context."""
    def et(value: str) -> dict[str, Any]:
        return {"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "type"}},
                          "right": value}}

    for family in ("ip6", "bridge", "netdev"):
        for warm_path in (True, False):
            rc = RuleCompiler(family, "t")
            for rule in ([et("ip6")], [et("ip"), {"reject": None}],
                         [{"match": {"op": "==", "left": {"meta": {"key": "protocol"}},
                                     "right": "ip6"}}],
                         [{"match": {"op": "==", "left": {"meta": {"key": "protocol"}},
                                     "right": "ip"}}, {"reject": None}]):
                got = (rc.compile if warm_path else rc._compile)(rule)[0]
                assert b"".join(got) == b"".join(RuleCompiler(family, "t")._compile(rule)[0]), \
                    (family, rule)


def test_a_cached_icmp_type_match_still_drops_the_type_dependency() -> None:
    """`icmp type echo-request icmp id 0` after a rule `icmp type echo-request`: the
    type matched from the statement cache still tells `icmp id` that nft adds no
    `icmp type { echo-reply, echo-request }` dependency (no anonymous set)."""
    def m(f: str, v: object) -> dict[str, Any]:
        return {"match": {"left": {"payload": {"protocol": "icmp", "field": f}}, "right": v}}

    rc = RuleCompiler("ip", "t")
    rc._compile([m("type", "echo-request")])
    exprs, sets = rc._compile([m("type", "echo-request"), m("id", 0)])
    assert sets == [] and b"".join(exprs) == b"".join(RuleCompiler("ip", "t")._compile(
        [m("type", "echo-request"), m("id", 0)])[0])
