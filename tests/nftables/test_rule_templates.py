"""Rule-shape templates encode exactly what the general compiler encodes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.nftables.compiler import RuleCompiler

FIELDS = [("ip", "saddr", st.sampled_from(["10.0.0.1", "192.0.2.7", "10.0.0.0/8", "@s", "x"])),
          ("ip", "dscp", st.one_of(st.integers(0, 70), st.sampled_from(["cs1", "ef"]))),
          ("ip", "protocol", st.sampled_from(["tcp", "udp", 6])),
          ("tcp", "dport", st.one_of(st.integers(0, 70000), st.sampled_from(["ssh", "1-2"]))),
          ("tcp", "flags", st.sampled_from(["syn", "ack", 2])),
          ("udp", "sport", st.integers(0, 65535))]


@st.composite
def rules(draw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for proto, field, values in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        out.append({"match": {"op": draw(st.sampled_from(["==", "!=", "<"])),
                              "left": {"payload": {"protocol": proto, "field": field}},
                              "right": draw(values)}})
    out.append({draw(st.sampled_from(["accept", "drop", "counter"])): None})
    return out


def _bytes(rc: RuleCompiler, stmts: list[dict[str, Any]], general: bool) -> Any:
    try:
        exprs, sets = (rc._compile if general else rc.compile)(stmts)
    except Exception as exc:  # both paths must fail alike
        return type(exc).__name__, str(exc)
    return b"".join(exprs), len(sets)


@settings(max_examples=300, deadline=None)
@given(st.lists(rules(), min_size=1, max_size=6), st.sampled_from(["ip", "inet"]))
def test_templates_match_general_compiler(batch: list[list[dict[str, Any]]], family: str) -> None:
    shared = RuleCompiler(family, "t")
    for stmts in batch:
        assert _bytes(shared, stmts, False) == _bytes(RuleCompiler(family, "t"), stmts, True)


def test_relational_on_host_order_value_after_zero() -> None:
    """`ct expiration < 0` then `< 780`: a relational match on a host-order value is
    compared in network order (byteorder hton); the template made by the first rule,
    whose value reads the same both ways, must not encode the second one in host order."""
    shared = RuleCompiler("inet", "t")
    for right in (0, 780, 60):
        stmts = [{"match": {"op": "<", "left": {"ct": {"key": "expiration"}}, "right": right}},
                 {"accept": None}]
        assert _bytes(shared, stmts, False) == _bytes(RuleCompiler("inet", "t"), stmts, True)
