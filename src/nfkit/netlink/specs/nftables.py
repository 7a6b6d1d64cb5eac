"""nf_tables attribute tables (uapi linux/netfilter/nf_tables.h), as data.

This module owns the attribute numbers and kinds of every nf_tables message
and expression nfkit speaks.  Each table lists its attributes in kernel
order starting at 1 (0 is the UNSPEC slot), so the number of an attribute is
its position; tests/nftables/test_spec.py checks every name and number against
the installed uapi header.  `attrset(name)` turns a table into the netlink
core's `AttrSet` when that codec is wanted; the hot paths in nfkit.nftables
use `num(table, attr)` and their own precompiled encoders.

Kinds are the core's `Kind` names ("be32", "string", "nested", ...).
"""

from __future__ import annotations

from typing import Any

# table name -> (uapi enum name, attribute prefix, [(attribute, kind, nested table or None)])
TABLES: dict[str, tuple[str, str, list[tuple[str, str, str | None]]]] = {
    "list": ("nft_list_attributes", "NFTA_LIST_", [("elem", "nested", None)]),
    "hook": ("nft_hook_attributes", "NFTA_HOOK_", [
        ("hooknum", "be32", None), ("priority", "be32", None), ("dev", "string", None),
        ("devs", "nested", None),
    ]),
    "table": ("nft_table_attributes", "NFTA_TABLE_", [
        ("name", "string", None), ("flags", "be32", None), ("use", "be32", None),
        ("handle", "be64", None), ("pad", "binary", None), ("userdata", "binary", None),
        ("owner", "be32", None),
    ]),
    "chain": ("nft_chain_attributes", "NFTA_CHAIN_", [
        ("table", "string", None), ("handle", "be64", None), ("name", "string", None),
        ("hook", "nested", "hook"), ("policy", "be32", None), ("use", "be32", None),
        ("type", "string", None), ("counters", "nested", "counter"), ("pad", "binary", None),
        ("flags", "be32", None), ("id", "be32", None), ("userdata", "binary", None),
    ]),
    "rule": ("nft_rule_attributes", "NFTA_RULE_", [
        ("table", "string", None), ("chain", "string", None), ("handle", "be64", None),
        ("expressions", "nested_array", "expr"), ("compat", "nested", None),
        ("position", "be64", None), ("userdata", "binary", None), ("pad", "binary", None),
        ("id", "be32", None), ("position_id", "be32", None), ("chain_id", "be32", None),
    ]),
    "set_desc": ("nft_set_desc_attributes", "NFTA_SET_DESC_", [
        ("size", "be32", None), ("concat", "nested_array", "set_field"),
    ]),
    "set_field": ("nft_set_field_attributes", "NFTA_SET_FIELD_", [("len", "be32", None)]),
    "set": ("nft_set_attributes", "NFTA_SET_", [
        ("table", "string", None), ("name", "string", None), ("flags", "be32", None),
        ("key_type", "be32", None), ("key_len", "be32", None), ("data_type", "be32", None),
        ("data_len", "be32", None), ("policy", "be32", None), ("desc", "nested", "set_desc"),
        ("id", "be32", None), ("timeout", "be64", None), ("gc_interval", "be32", None),
        ("userdata", "binary", None), ("pad", "binary", None), ("obj_type", "be32", None),
        ("handle", "be64", None), ("expr", "nested", "expr"),
        ("expressions", "nested_array", "expr"),
    ]),
    "set_elem": ("nft_set_elem_attributes", "NFTA_SET_ELEM_", [
        ("key", "nested", "data"), ("data", "nested", "data"), ("flags", "be32", None),
        ("timeout", "be64", None), ("expiration", "be64", None), ("userdata", "binary", None),
        ("expr", "nested", "expr"), ("pad", "binary", None), ("objref", "string", None),
        ("key_end", "nested", "data"), ("expressions", "nested_array", "expr"),
    ]),
    "set_elem_list": ("nft_set_elem_list_attributes", "NFTA_SET_ELEM_LIST_", [
        ("table", "string", None), ("set", "string", None),
        ("elements", "nested_array", "set_elem"), ("set_id", "be32", None),
    ]),
    "data": ("nft_data_attributes", "NFTA_DATA_", [
        ("value", "binary", None), ("verdict", "nested", "verdict"),
    ]),
    "verdict": ("nft_verdict_attributes", "NFTA_VERDICT_", [
        ("code", "be32", None), ("chain", "string", None), ("chain_id", "be32", None),
    ]),
    "expr": ("nft_expr_attributes", "NFTA_EXPR_", [
        ("name", "string", None), ("data", "nested", None),
    ]),
    "immediate": ("nft_immediate_attributes", "NFTA_IMMEDIATE_", [
        ("dreg", "be32", None), ("data", "nested", "data"),
    ]),
    "bitwise": ("nft_bitwise_attributes", "NFTA_BITWISE_", [
        ("sreg", "be32", None), ("dreg", "be32", None), ("len", "be32", None),
        ("mask", "nested", "data"), ("xor", "nested", "data"), ("op", "be32", None),
        ("data", "nested", "data"),
    ]),
    "byteorder": ("nft_byteorder_attributes", "NFTA_BYTEORDER_", [
        ("sreg", "be32", None), ("dreg", "be32", None), ("op", "be32", None),
        ("len", "be32", None), ("size", "be32", None),
    ]),
    "cmp": ("nft_cmp_attributes", "NFTA_CMP_", [
        ("sreg", "be32", None), ("op", "be32", None), ("data", "nested", "data"),
    ]),
    "range": ("nft_range_attributes", "NFTA_RANGE_", [
        ("sreg", "be32", None), ("op", "be32", None), ("from_data", "nested", "data"),
        ("to_data", "nested", "data"),
    ]),
    "lookup": ("nft_lookup_attributes", "NFTA_LOOKUP_", [
        ("set", "string", None), ("sreg", "be32", None), ("dreg", "be32", None),
        ("set_id", "be32", None), ("flags", "be32", None),
    ]),
    "dynset": ("nft_dynset_attributes", "NFTA_DYNSET_", [
        ("set_name", "string", None), ("set_id", "be32", None), ("op", "be32", None),
        ("sreg_key", "be32", None), ("sreg_data", "be32", None), ("timeout", "be64", None),
        ("expr", "nested", "expr"), ("pad", "binary", None), ("flags", "be32", None),
        ("expressions", "nested_array", "expr"),
    ]),
    "payload": ("nft_payload_attributes", "NFTA_PAYLOAD_", [
        ("dreg", "be32", None), ("base", "be32", None), ("offset", "be32", None),
        ("len", "be32", None), ("sreg", "be32", None), ("csum_type", "be32", None),
        ("csum_offset", "be32", None), ("csum_flags", "be32", None),
    ]),
    "exthdr": ("nft_exthdr_attributes", "NFTA_EXTHDR_", [
        ("dreg", "be32", None), ("type", "u8", None), ("offset", "be32", None),
        ("len", "be32", None), ("flags", "be32", None), ("op", "be32", None),
        ("sreg", "be32", None),
    ]),
    "hash": ("nft_hash_attributes", "NFTA_HASH_", [
        ("sreg", "be32", None), ("dreg", "be32", None), ("len", "be32", None),
        ("modulus", "be32", None), ("seed", "be32", None), ("offset", "be32", None),
        ("type", "be32", None), ("set_name", "string", None), ("set_id", "be32", None),
    ]),
    "meta": ("nft_meta_attributes", "NFTA_META_", [
        ("dreg", "be32", None), ("key", "be32", None), ("sreg", "be32", None),
    ]),
    "rt": ("nft_rt_attributes", "NFTA_RT_", [("dreg", "be32", None), ("key", "be32", None)]),
    "ct": ("nft_ct_attributes", "NFTA_CT_", [
        ("dreg", "be32", None), ("key", "be32", None), ("direction", "u8", None),
        ("sreg", "be32", None),
    ]),
    "limit": ("nft_limit_attributes", "NFTA_LIMIT_", [
        ("rate", "be64", None), ("unit", "be64", None), ("burst", "be32", None),
        ("type", "be32", None), ("flags", "be32", None), ("pad", "binary", None),
    ]),
    "connlimit": ("nft_connlimit_attributes", "NFTA_CONNLIMIT_", [
        ("count", "be32", None), ("flags", "be32", None),
    ]),
    "counter": ("nft_counter_attributes", "NFTA_COUNTER_", [
        ("bytes", "be64", None), ("packets", "be64", None), ("pad", "binary", None),
    ]),
    "log": ("nft_log_attributes", "NFTA_LOG_", [
        ("group", "be16", None), ("prefix", "string", None), ("snaplen", "be32", None),
        ("qthreshold", "be16", None), ("level", "be32", None), ("flags", "be32", None),
    ]),
    "queue": ("nft_queue_attributes", "NFTA_QUEUE_", [
        ("num", "be16", None), ("total", "be16", None), ("flags", "be16", None),
        ("sreg_qnum", "be32", None),
    ]),
    "quota": ("nft_quota_attributes", "NFTA_QUOTA_", [
        ("bytes", "be64", None), ("flags", "be32", None), ("pad", "binary", None),
        ("consumed", "be64", None),
    ]),
    "reject": ("nft_reject_attributes", "NFTA_REJECT_", [
        ("type", "be32", None), ("icmp_code", "u8", None),
    ]),
    "nat": ("nft_nat_attributes", "NFTA_NAT_", [
        ("type", "be32", None), ("family", "be32", None), ("reg_addr_min", "be32", None),
        ("reg_addr_max", "be32", None), ("reg_proto_min", "be32", None),
        ("reg_proto_max", "be32", None), ("flags", "be32", None),
    ]),
    "masq": ("nft_masq_attributes", "NFTA_MASQ_", [
        ("flags", "be32", None), ("reg_proto_min", "be32", None),
        ("reg_proto_max", "be32", None),
    ]),
    "redir": ("nft_redir_attributes", "NFTA_REDIR_", [
        ("reg_proto_min", "be32", None), ("reg_proto_max", "be32", None),
        ("flags", "be32", None),
    ]),
    "objref": ("nft_objref_attributes", "NFTA_OBJREF_", [
        ("imm_type", "be32", None), ("imm_name", "string", None), ("set_sreg", "be32", None),
        ("set_name", "string", None), ("set_id", "be32", None),
    ]),
    "fib": ("nft_fib_attributes", "NFTA_FIB_", [
        ("dreg", "be32", None), ("result", "be32", None), ("flags", "be32", None),
    ]),
    "numgen": ("nft_ng_attributes", "NFTA_NG_", [
        ("dreg", "be32", None), ("modulus", "be32", None), ("type", "be32", None),
        ("offset", "be32", None), ("set_name", "string", None), ("set_id", "be32", None),
    ]),
    "obj": ("nft_object_attributes", "NFTA_OBJ_", [
        ("table", "string", None), ("name", "string", None), ("type", "be32", None),
        ("data", "nested", None), ("use", "be32", None), ("handle", "be64", None),
        ("pad", "binary", None), ("userdata", "binary", None),
    ]),
    "gen": ("nft_gen_attributes", "NFTA_GEN_", [
        ("id", "be32", None), ("proc_pid", "be32", None), ("proc_name", "string", None),
    ]),
    "target": ("nft_target_attributes", "NFTA_TARGET_", [
        ("name", "string", None), ("rev", "be32", None), ("info", "binary", None),
    ]),
    "ct_helper": ("nft_ct_helper_attributes", "NFTA_CT_HELPER_", [
        ("name", "string", None), ("l3proto", "be16", None), ("l4proto", "u8", None),
    ]),
    "rule_compat": ("nft_rule_compat_attributes", "NFTA_RULE_COMPAT_", [
        ("proto", "be32", None), ("flags", "be32", None),
    ]),
}

# Message types (enum nf_tables_msg_types), by position.
MSG_TYPES = [
    "newtable", "gettable", "deltable", "newchain", "getchain", "delchain",
    "newrule", "getrule", "delrule", "newset", "getset", "delset",
    "newsetelem", "getsetelem", "delsetelem", "newgen", "getgen", "trace",
    "newobj", "getobj", "delobj", "getobj_reset",
]
MSG = {name: i for i, name in enumerate(MSG_TYPES)}

_NUMS: dict[str, dict[str, int]] = {
    t: {a[0]: i + 1 for i, a in enumerate(spec[2])} for t, spec in TABLES.items()
}
_NAMES: dict[str, dict[int, str]] = {
    t: {i: a for a, i in nums.items()} for t, nums in _NUMS.items()
}


def num(table: str, attr: str) -> int:
    """Attribute number of ``attr`` in ``table`` (raises KeyError if unknown)."""
    return _NUMS[table][attr]


def nums(table: str) -> dict[str, int]:
    """Attribute name -> number for ``table``."""
    return _NUMS[table]


def names(table: str) -> dict[int, str]:
    """Attribute number -> name for ``table``."""
    return _NAMES[table]


def attrset(table: str) -> Any:
    """The netlink core's `AttrSet` for ``table`` (nested tables linked)."""
    from nfkit.netlink.codec import Attr, AttrSet, Kind  # the core; imported on demand

    built: dict[str, Any] = {}

    def build(name: str) -> Any:
        if name in built:
            return built[name]
        attrs: dict[int, Any] = {}
        for i, (attr, kind, nested) in enumerate(TABLES[name][2], start=1):
            sub = build(nested) if nested else None
            attrs[i] = Attr(attr, getattr(Kind, kind.upper()), nested=sub)
        built[name] = AttrSet(name, attrs)
        return built[name]

    return build(table)


# Tables whose enum lives in another uapi header.
HEADERS = {"target": "linux/netfilter/nf_tables_compat.h"}
