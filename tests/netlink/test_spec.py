"""nf_tables' attribute tables checked against the kernel's own netlink YAML spec.

The first check is the uapi header (tests/netlink/test_uapi.py: every number).
This is the second: names, order, types, byte orders, enums and sub-messages
against Documentation/netlink/specs/nftables.yaml, transcribed in
tests/netlink/data/nftables-yaml.json (its source and commit are in the file).
The YAML is younger and less complete than the header: where it leaves out a
byte order or spells a type differently from what the kernel does, the
difference is listed below with the kernel's reason, so a new difference fails.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path

import pytest

from nfkit.netlink.codec import AttrSet
from nfkit.netlink.specs import nftables as N

YAML = json.loads((Path(__file__).parent / "data" / "nftables-yaml.json").read_text())

SETS: dict[str, AttrSet] = {
    "table-attrs": N.TABLE, "chain-attrs": N.CHAIN, "counter-attrs": N.COUNTER,
    "nft-hook-attrs": N.HOOK, "rule-attrs": N.RULE, "expr-attrs": N.EXPR,
    "rule-compat-attrs": N.RULE_COMPAT, "set-attrs": N.SET, "set-desc-attrs": N.SET_DESC,
    "set-field-attrs": N.SET_FIELD, "setelem-attrs": N.SET_ELEM,
    "setelem-list-attrs": N.SET_ELEM_LIST, "gen-attrs": N.GEN, "obj-attrs": N.OBJ,
    "quota-attrs": N.QUOTA, "expr-cmp-attrs": N.CMP, "data-attrs": N.DATA,
    "verdict-attrs": N.VERDICT, "expr-counter-attrs": N.COUNTER,
    "expr-immediate-attrs": N.IMMEDIATE, "expr-meta-attrs": N.META, "expr-nat-attrs": N.NAT,
    "expr-payload-attrs": N.PAYLOAD,
}
ENUMS: dict[str, type[enum.IntEnum] | type[enum.IntFlag]] = {
    "meta-keys": N.MetaKey, "cmp-ops": N.CmpOp, "object-type": N.ObjectType,
    "nat-range-flags": N.NatRangeFlags, "table-flags": N.TableFlags,
    "chain-flags": N.ChainFlags, "set-flags": N.SetFlags,
}
# the header's name where the YAML's differs (NFTA_HOOK_HOOKNUM)
RENAMES = {("nft-hook-attrs", "num"): "hooknum"}
# the header's member where the YAML spells it otherwise (NFT_META_IIFTYPE)
ENUM_RENAMES = {("meta-keys", "iftype"): "IIFTYPE"}
# (set, attribute): (the YAML's type, byte order) where the kernel reads otherwise
KERNEL_DIFFERS = {
    # the kernel reads these with nla_get_be32 / nla_get_be64; the YAML leaves out the byte order
    ("rule-attrs", "id"): ("u32", None), ("rule-attrs", "position-id"): ("u32", None),
    ("rule-attrs", "chain-id"): ("u32", None), ("set-attrs", "id"): ("u32", None),
    ("set-attrs", "timeout"): ("u64", None), ("set-attrs", "gc-interval"): ("u32", None),
    ("setelem-attrs", "timeout"): ("u64", None), ("setelem-attrs", "expiration"): ("u64", None),
    ("setelem-list-attrs", "set-id"): ("u32", None), ("verdict-attrs", "chain-id"): ("u32", None),
    ("expr-counter-attrs", "bytes"): ("u64", None), ("expr-counter-attrs", "packets"): ("u64", None),
    # nla_get_be32 too, where the YAML says binary
    ("setelem-attrs", "flags"): ("binary", None), ("rule-compat-attrs", "proto"): ("binary", None),
    ("rule-compat-attrs", "flags"): ("binary", None),
    # a priority is signed; nfkit writes its two's complement as an unsigned be32
    ("nft-hook-attrs", "priority"): ("s32", "big-endian"),
}
# expressions nfkit does not speak yet (none of its statements compiles to them)
NOT_SPOKEN = {"flow_offload"}


def _ours(aset: AttrSet, yaml_set: str, name: str):
    return aset.attr(RENAMES.get((yaml_set, name), name.replace("-", "_")))


@pytest.mark.parametrize("yaml_set", sorted(SETS))
def test_attribute_names_in_the_yaml_order(yaml_set: str) -> None:
    aset = SETS[yaml_set]
    ours = [a.name for _n, a in sorted(aset.attrs.items())]
    positions = [ours.index(_ours(aset, yaml_set, name).name) for name, *_ in YAML["attribute-sets"][yaml_set]]
    assert positions == sorted(positions), f"{yaml_set}: the YAML orders {aset.name} differently"


@pytest.mark.parametrize("yaml_set", sorted(SETS))
def test_attribute_types_byte_orders_and_enums(yaml_set: str) -> None:
    aset = SETS[yaml_set]
    for name, ytype, order, yenum in YAML["attribute-sets"][yaml_set]:
        a = _ours(aset, yaml_set, name)
        theirs = (ytype, order)
        ours = ("pad" if a.name == "pad" else a.type,
                a.byte_order if a.byte_order != "host" else None)
        if (yaml_set, name) in KERNEL_DIFFERS:
            assert theirs == KERNEL_DIFFERS[(yaml_set, name)], f"{yaml_set}.{name}: the YAML changed"
            continue
        assert ours == theirs, f"{yaml_set}.{name}: nfkit says {ours}, the YAML {theirs}"
        if yenum is not None:
            assert a.enum is ENUMS[yenum], f"{yaml_set}.{name}: enum {yenum}"


@pytest.mark.parametrize("yaml_enum", sorted(ENUMS))
def test_enums_and_flags(yaml_enum: str) -> None:
    spec = YAML["enums"][yaml_enum]
    cls = ENUMS[yaml_enum]
    for i, entry in enumerate(spec["entries"]):
        value = 1 << i if spec["type"] == "flags" else i
        member = cls(value)
        assert member.name is not None
        want = ENUM_RENAMES.get((yaml_enum, entry), entry.replace("-", "").upper())
        assert member.name.replace("_", "") == want, (yaml_enum, entry)


def test_expression_and_object_sub_messages() -> None:
    for value, yaml_set in YAML["sub-messages"]["expr-ops"].items():
        if value in NOT_SPOKEN:
            assert value not in N.EXPR_OPS
            continue
        assert value in N.EXPR_OPS, f"expression {value}"
        if yaml_set is not None and yaml_set in YAML["attribute-sets"]:
            assert N.EXPR_OPS[value] is SETS[yaml_set]
    assert N.EXPR.attr("data").selector == "name" and N.EXPR.attr("data").variants is N.EXPR_OPS
    for value, yaml_set in YAML["sub-messages"]["obj-data"].items():
        assert N.OBJ_DATA[N.ObjectType[value.upper()]] is SETS[yaml_set]


def test_sub_message_round_trip() -> None:
    """Encoding picks each expression's table by its name; decoding finds it again."""
    from nfkit.netlink.codec import MessageWriter

    rule = {"table": "t", "chain": "c", "expressions": [
        {"name": "cmp", "data": {"sreg": 1, "op": N.CmpOp.NEQ, "data": {"value": b"\x06"}}},
        {"name": "meta", "data": {"dreg": 1, "key": N.MetaKey.L4PROTO}},
    ]}
    w = MessageWriter()
    w.begin(0)
    N.RULE.encode(w, rule)
    w.end()
    assert N.RULE.decode(memoryview(bytes(w.buffer))[20:]) == rule
