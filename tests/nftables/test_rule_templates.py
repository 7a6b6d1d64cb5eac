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


@settings(max_examples=60, deadline=None)
@given(rules(), st.data())
def test_rule_shapes_decode_as_the_decoder_does(rule, data) -> None:  # type: ignore[no-untyped-def]
    """`RuleShapes` (the decoder's templates on the core's `Layout`): every rule decodes as
    the general decoder does, and a rule differing only in its compared values is the
    same shape, recognised by its layout (the values are the layout's slots)."""
    from nfkit.errors import InputError
    from nfkit.nftables.decompiler import RuleDecoder, RuleShapes
    from nfkit.nftables.expressions import parse_exprs

    def blob_of(r: list[dict[str, Any]]) -> bytes | None:
        try:
            exprs, anon = RuleCompiler("ip", "t").compile(r)
        except InputError:
            return None
        return None if anon else b"".join(exprs)

    first = blob_of(rule)
    if first is None:
        return
    other = [dict(st_) for st_ in rule]
    for i, st_ in enumerate(other):
        if "match" in st_ and isinstance(st_["match"]["right"], int) and st_["match"]["left"]["payload"]["field"] == "sport":
            other[i] = {"match": {**st_["match"], "right": data.draw(st.integers(0, 65535))}}
    second = blob_of(other)
    assert second is not None
    shapes = RuleShapes()
    for blob in (first, second, first):
        assert shapes.decode("ip", blob, {}) == RuleDecoder("ip", {}).decode(parse_exprs(blob))
    a, va = shapes.shape("ip", first, {})
    b, vb = shapes.shape("ip", second, {})
    if a is not None:
        assert a is b and len(va) == len(a.spans) == len(vb)
        assert list(va) == [first[s:e] for s, e in a.spans]
