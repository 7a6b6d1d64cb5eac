"""nf_tables (NFNL_SUBSYS_NFTABLES): attribute tables, enums and message types, as data.

Owns: the number, kind (byte order included), enum and nesting of every
nf_tables attribute nfkit speaks, in the netlink core's one spec format
(`AttrSet`, as ctnetlink's), with each expression's attributes as a
sub-message of NFTA_EXPR_DATA chosen by NFTA_EXPR_NAME (`EXPR_OPS`), as the
kernel's Documentation/netlink/specs/nftables.yaml has it.  Numbers are checked
against the installed uapi header (tests/netlink/test_uapi.py) and names,
types, byte orders and enums against the kernel's YAML spec
(tests/netlink/test_spec.py).  Must not know how rules are compiled.

The older names nftables code imports stay: `TABLES` (table name -> uapi enum,
prefix, [(attribute, kind, nested table)]), `num`, `nums`, `names`, `MSG`,
`MSG_TYPES`, `HEADERS`, `attrset(name)`; all are derived from the AttrSets.
"""

from __future__ import annotations

import enum

from nfkit.netlink.codec import AttrSet
from nfkit.netlink.codec import Kind as K
from nfkit.netlink.consts import NFNL_SUBSYS_NFTABLES
from nfkit.netlink.specs import attrset as _attrset

_H = "linux/netfilter/nf_tables.h"
_COMPAT = "linux/netfilter/nf_tables_compat.h"


# ---------------------------------------------------------------- enums
# (class, header, enum name or None for #defines, constant prefix), checked by test_uapi

class CmpOp(enum.IntEnum):
    """enum nft_cmp_ops"""

    EQ = 0
    NEQ = 1
    LT = 2
    LTE = 3
    GT = 4
    GTE = 5


class RangeOp(enum.IntEnum):
    """enum nft_range_ops"""

    EQ = 0
    NEQ = 1


class PayloadBase(enum.IntEnum):
    """enum nft_payload_bases"""

    LL_HEADER = 0
    NETWORK_HEADER = 1
    TRANSPORT_HEADER = 2
    INNER_HEADER = 3


class MetaKey(enum.IntEnum):
    """enum nft_meta_keys"""

    LEN = 0
    PROTOCOL = 1
    PRIORITY = 2
    MARK = 3
    IIF = 4
    OIF = 5
    IIFNAME = 6
    OIFNAME = 7
    IIFTYPE = 8
    OIFTYPE = 9
    SKUID = 10
    SKGID = 11
    NFTRACE = 12
    RTCLASSID = 13
    SECMARK = 14
    NFPROTO = 15
    L4PROTO = 16
    BRI_IIFNAME = 17
    BRI_OIFNAME = 18
    PKTTYPE = 19
    CPU = 20
    IIFGROUP = 21
    OIFGROUP = 22
    CGROUP = 23
    PRANDOM = 24
    SECPATH = 25
    IIFKIND = 26
    OIFKIND = 27
    BRI_IIFPVID = 28
    BRI_IIFVPROTO = 29
    TIME_NS = 30
    TIME_DAY = 31
    TIME_HOUR = 32
    SDIF = 33
    SDIFNAME = 34
    BRI_BROUTE = 35


class CtKey(enum.IntEnum):
    """enum nft_ct_keys"""

    STATE = 0
    DIRECTION = 1
    STATUS = 2
    MARK = 3
    SECMARK = 4
    EXPIRATION = 5
    HELPER = 6
    L3PROTOCOL = 7
    SRC = 8
    DST = 9
    PROTOCOL = 10
    PROTO_SRC = 11
    PROTO_DST = 12
    LABELS = 13
    PKTS = 14
    BYTES = 15
    AVGPKT = 16
    ZONE = 17
    EVENTMASK = 18
    SRC_IP = 19
    DST_IP = 20
    SRC_IP6 = 21
    DST_IP6 = 22
    ID = 23


class ObjectType(enum.IntEnum):
    """NFT_OBJECT_* (#defines)"""

    UNSPEC = 0
    COUNTER = 1
    QUOTA = 2
    CT_HELPER = 3
    LIMIT = 4
    CONNLIMIT = 5
    TUNNEL = 6
    CT_TIMEOUT = 7
    SECMARK = 8
    CT_EXPECT = 9
    SYNPROXY = 10


class TableFlags(enum.IntFlag):
    """enum nft_table_flags"""

    DORMANT = 1 << 0
    OWNER = 1 << 1
    PERSIST = 1 << 2


class ChainFlags(enum.IntFlag):
    """enum nft_chain_flags"""

    BASE = 1 << 0
    HW_OFFLOAD = 1 << 1
    BINDING = 1 << 2


class SetFlags(enum.IntFlag):
    """enum nft_set_flags"""

    ANONYMOUS = 1 << 0
    CONSTANT = 1 << 1
    INTERVAL = 1 << 2
    MAP = 1 << 3
    TIMEOUT = 1 << 4
    EVAL = 1 << 5
    OBJECT = 1 << 6
    CONCAT = 1 << 7
    EXPR = 1 << 8


class NatRangeFlags(enum.IntFlag):
    """NF_NAT_RANGE_* (#defines of linux/netfilter/nf_nat.h)"""

    MAP_IPS = 1 << 0
    PROTO_SPECIFIED = 1 << 1
    PROTO_RANDOM = 1 << 2
    PERSISTENT = 1 << 3
    PROTO_RANDOM_FULLY = 1 << 4
    PROTO_OFFSET = 1 << 5
    NETMAP = 1 << 6


class TraceType(enum.IntEnum):
    """enum nft_trace_types (NFTA_TRACE_TYPE of an NFT_MSG_TRACE event)"""

    UNSPEC = 0
    POLICY = 1
    RETURN = 2
    RULE = 3


ENUMS: list[tuple[type[enum.IntEnum] | type[enum.IntFlag], str, str | None, str]] = [
    (CmpOp, _H, "nft_cmp_ops", "NFT_CMP_"),
    (RangeOp, _H, "nft_range_ops", "NFT_RANGE_"),
    (PayloadBase, _H, "nft_payload_bases", "NFT_PAYLOAD_"),
    (MetaKey, _H, "nft_meta_keys", "NFT_META_"),
    (CtKey, _H, "nft_ct_keys", "NFT_CT_"),
    (ObjectType, _H, None, "NFT_OBJECT_"),
    (TableFlags, _H, "nft_table_flags", "NFT_TABLE_F_"),
    (ChainFlags, _H, "nft_chain_flags", "NFT_CHAIN_"),
    (SetFlags, _H, "nft_set_flags", "NFT_SET_"),
    (NatRangeFlags, "linux/netfilter/nf_nat.h", None, "NF_NAT_RANGE_"),
    (TraceType, _H, "nft_trace_types", "NFT_TRACETYPE_"),
]


# ---------------------------------------------------------------- attribute sets

def attrset(name: str, entries: dict | None = None) -> AttrSet:  # type: ignore[type-arg]
    """With ``entries``: build a table (as `nfkit.netlink.specs.attrset`).  Without:
    the table named ``name`` (kept for callers of the former format)."""
    if entries is not None:
        return _attrset(name, entries)
    return SETS[name]


LIST = _attrset("list", {
    1: ("elem", K.NESTED),
})


HOOK = _attrset("hook", {
    1: ("hooknum", K.BE32),
    2: ("priority", K.BE32),
    3: ("dev", K.STRING),
    4: ("devs", K.NESTED),
})


TABLE = _attrset("table", {
    1: ("name", K.STRING),
    2: ("flags", K.BE32, {"enum": TableFlags}),
    3: ("use", K.BE32),
    4: ("handle", K.BE64),
    5: ("pad", K.BINARY),
    6: ("userdata", K.BINARY),
    7: ("owner", K.BE32),
})


COUNTER = _attrset("counter", {
    1: ("bytes", K.BE64),
    2: ("packets", K.BE64),
    3: ("pad", K.BINARY),
})


CHAIN = _attrset("chain", {
    1: ("table", K.STRING),
    2: ("handle", K.BE64),
    3: ("name", K.STRING),
    4: ("hook", K.NESTED, HOOK),
    5: ("policy", K.BE32),
    6: ("use", K.BE32),
    7: ("type", K.STRING),
    8: ("counters", K.NESTED, COUNTER),
    9: ("pad", K.BINARY),
    10: ("flags", K.BE32, {"enum": ChainFlags}),
    11: ("id", K.BE32),
    12: ("userdata", K.BINARY),
})


RULE_COMPAT = _attrset("rule_compat", {
    1: ("proto", K.BE32),
    2: ("flags", K.BE32),
})



EXPR = _attrset("expr", {
    1: ("name", K.STRING),
    2: ("data", K.NESTED, {"selector": "name"}),  # variants: EXPR_OPS, below
})


RULE = _attrset("rule", {
    1: ("table", K.STRING),
    2: ("chain", K.STRING),
    3: ("handle", K.BE64),
    4: ("expressions", K.NESTED_ARRAY, EXPR),
    5: ("compat", K.NESTED, RULE_COMPAT),
    6: ("position", K.BE64),
    7: ("userdata", K.BINARY),
    8: ("pad", K.BINARY),
    9: ("id", K.BE32),
    10: ("position_id", K.BE32),
    11: ("chain_id", K.BE32),
})


SET_FIELD = _attrset("set_field", {
    1: ("len", K.BE32),
})


SET_DESC = _attrset("set_desc", {
    1: ("size", K.BE32),
    2: ("concat", K.NESTED_ARRAY, SET_FIELD),
})


SET = _attrset("set", {
    1: ("table", K.STRING),
    2: ("name", K.STRING),
    3: ("flags", K.BE32, {"enum": SetFlags}),
    4: ("key_type", K.BE32),
    5: ("key_len", K.BE32),
    6: ("data_type", K.BE32),
    7: ("data_len", K.BE32),
    8: ("policy", K.BE32),
    9: ("desc", K.NESTED, SET_DESC),
    10: ("id", K.BE32),
    11: ("timeout", K.BE64),
    12: ("gc_interval", K.BE32),
    13: ("userdata", K.BINARY),
    14: ("pad", K.BINARY),
    15: ("obj_type", K.BE32, {"enum": ObjectType}),
    16: ("handle", K.BE64),
    17: ("expr", K.NESTED, EXPR),
    18: ("expressions", K.NESTED_ARRAY, EXPR),
})


VERDICT = _attrset("verdict", {
    1: ("code", K.BE32),
    2: ("chain", K.STRING),
    3: ("chain_id", K.BE32),
})


DATA = _attrset("data", {
    1: ("value", K.BINARY),
    2: ("verdict", K.NESTED, VERDICT),
})


SET_ELEM = _attrset("set_elem", {
    1: ("key", K.NESTED, DATA),
    2: ("data", K.NESTED, DATA),
    3: ("flags", K.BE32),
    4: ("timeout", K.BE64),
    5: ("expiration", K.BE64),
    6: ("userdata", K.BINARY),
    7: ("expr", K.NESTED, EXPR),
    8: ("pad", K.BINARY),
    9: ("objref", K.STRING),
    10: ("key_end", K.NESTED, DATA),
    11: ("expressions", K.NESTED_ARRAY, EXPR),
})


SET_ELEM_LIST = _attrset("set_elem_list", {
    1: ("table", K.STRING),
    2: ("set", K.STRING),
    3: ("elements", K.NESTED_ARRAY, SET_ELEM),
    4: ("set_id", K.BE32),
})


IMMEDIATE = _attrset("immediate", {
    1: ("dreg", K.BE32),
    2: ("data", K.NESTED, DATA),
})


BITWISE = _attrset("bitwise", {
    1: ("sreg", K.BE32),
    2: ("dreg", K.BE32),
    3: ("len", K.BE32),
    4: ("mask", K.NESTED, DATA),
    5: ("xor", K.NESTED, DATA),
    6: ("op", K.BE32),
    7: ("data", K.NESTED, DATA),
})


BYTEORDER = _attrset("byteorder", {
    1: ("sreg", K.BE32),
    2: ("dreg", K.BE32),
    3: ("op", K.BE32),
    4: ("len", K.BE32),
    5: ("size", K.BE32),
})


CMP = _attrset("cmp", {
    1: ("sreg", K.BE32),
    2: ("op", K.BE32, {"enum": CmpOp}),
    3: ("data", K.NESTED, DATA),
})


RANGE = _attrset("range", {
    1: ("sreg", K.BE32),
    2: ("op", K.BE32, {"enum": RangeOp}),
    3: ("from_data", K.NESTED, DATA),
    4: ("to_data", K.NESTED, DATA),
})


LOOKUP = _attrset("lookup", {
    1: ("set", K.STRING),
    2: ("sreg", K.BE32),
    3: ("dreg", K.BE32),
    4: ("set_id", K.BE32),
    5: ("flags", K.BE32),
})


DYNSET = _attrset("dynset", {
    1: ("set_name", K.STRING),
    2: ("set_id", K.BE32),
    3: ("op", K.BE32),
    4: ("sreg_key", K.BE32),
    5: ("sreg_data", K.BE32),
    6: ("timeout", K.BE64),
    7: ("expr", K.NESTED, EXPR),
    8: ("pad", K.BINARY),
    9: ("flags", K.BE32),
    10: ("expressions", K.NESTED_ARRAY, EXPR),
})


PAYLOAD = _attrset("payload", {
    1: ("dreg", K.BE32),
    2: ("base", K.BE32, {"enum": PayloadBase}),
    3: ("offset", K.BE32),
    4: ("len", K.BE32),
    5: ("sreg", K.BE32),
    6: ("csum_type", K.BE32),
    7: ("csum_offset", K.BE32),
    8: ("csum_flags", K.BE32),
})


EXTHDR = _attrset("exthdr", {
    1: ("dreg", K.BE32),
    2: ("type", K.U8),
    3: ("offset", K.BE32),
    4: ("len", K.BE32),
    5: ("flags", K.BE32),
    6: ("op", K.BE32),
    7: ("sreg", K.BE32),
})


HASH = _attrset("hash", {
    1: ("sreg", K.BE32),
    2: ("dreg", K.BE32),
    3: ("len", K.BE32),
    4: ("modulus", K.BE32),
    5: ("seed", K.BE32),
    6: ("offset", K.BE32),
    7: ("type", K.BE32),
    8: ("set_name", K.STRING),
    9: ("set_id", K.BE32),
})


META = _attrset("meta", {
    1: ("dreg", K.BE32),
    2: ("key", K.BE32, {"enum": MetaKey}),
    3: ("sreg", K.BE32),
})


RT = _attrset("rt", {
    1: ("dreg", K.BE32),
    2: ("key", K.BE32),
})


CT = _attrset("ct", {
    1: ("dreg", K.BE32),
    2: ("key", K.BE32, {"enum": CtKey}),
    3: ("direction", K.U8),
    4: ("sreg", K.BE32),
})


LIMIT = _attrset("limit", {
    1: ("rate", K.BE64),
    2: ("unit", K.BE64),
    3: ("burst", K.BE32),
    4: ("type", K.BE32),
    5: ("flags", K.BE32),
    6: ("pad", K.BINARY),
})


CONNLIMIT = _attrset("connlimit", {
    1: ("count", K.BE32),
    2: ("flags", K.BE32),
})


LOG = _attrset("log", {
    1: ("group", K.BE16),
    2: ("prefix", K.STRING),
    3: ("snaplen", K.BE32),
    4: ("qthreshold", K.BE16),
    5: ("level", K.BE32),
    6: ("flags", K.BE32),
})


QUEUE = _attrset("queue", {
    1: ("num", K.BE16),
    2: ("total", K.BE16),
    3: ("flags", K.BE16),
    4: ("sreg_qnum", K.BE32),
})


QUOTA = _attrset("quota", {
    1: ("bytes", K.BE64),
    2: ("flags", K.BE32),
    3: ("pad", K.BINARY),
    4: ("consumed", K.BE64),
})


REJECT = _attrset("reject", {
    1: ("type", K.BE32),
    2: ("icmp_code", K.U8),
})


NAT = _attrset("nat", {
    1: ("type", K.BE32),
    2: ("family", K.BE32),
    3: ("reg_addr_min", K.BE32),
    4: ("reg_addr_max", K.BE32),
    5: ("reg_proto_min", K.BE32),
    6: ("reg_proto_max", K.BE32),
    7: ("flags", K.BE32, {"enum": NatRangeFlags}),
})


MASQ = _attrset("masq", {
    1: ("flags", K.BE32, {"enum": NatRangeFlags}),
    2: ("reg_proto_min", K.BE32),
    3: ("reg_proto_max", K.BE32),
})


REDIR = _attrset("redir", {
    1: ("reg_proto_min", K.BE32),
    2: ("reg_proto_max", K.BE32),
    3: ("flags", K.BE32),
})


OBJREF = _attrset("objref", {
    1: ("imm_type", K.BE32),
    2: ("imm_name", K.STRING),
    3: ("set_sreg", K.BE32),
    4: ("set_name", K.STRING),
    5: ("set_id", K.BE32),
})


FIB = _attrset("fib", {
    1: ("dreg", K.BE32),
    2: ("result", K.BE32),
    3: ("flags", K.BE32),
})


NUMGEN = _attrset("numgen", {
    1: ("dreg", K.BE32),
    2: ("modulus", K.BE32),
    3: ("type", K.BE32),
    4: ("offset", K.BE32),
    5: ("set_name", K.STRING),
    6: ("set_id", K.BE32),
})


OBJ = _attrset("obj", {
    1: ("table", K.STRING),
    2: ("name", K.STRING),
    3: ("type", K.BE32, {"enum": ObjectType}),
    4: ("data", K.NESTED, {"selector": "type"}),
    5: ("use", K.BE32),
    6: ("handle", K.BE64),
    7: ("pad", K.BINARY),
    8: ("userdata", K.BINARY),
})


GEN = _attrset("gen", {
    1: ("id", K.BE32),
    2: ("proc_pid", K.BE32),
    3: ("proc_name", K.STRING),
})


# NFT_MSG_TRACE, multicast to NFNLGRP_NFTRACE for packets with nftrace set
TRACE = _attrset("trace", {
    1: ("table", K.STRING),
    2: ("chain", K.STRING),
    3: ("rule_handle", K.BE64),
    4: ("type", K.BE32, {"enum": TraceType}),
    5: ("verdict", K.NESTED, VERDICT),
    6: ("id", K.BE32),
    7: ("ll_header", K.BINARY),
    8: ("network_header", K.BINARY),
    9: ("transport_header", K.BINARY),
    10: ("iif", K.BE32),
    11: ("iiftype", K.BE16),
    12: ("oif", K.BE32),
    13: ("oiftype", K.BE16),
    14: ("mark", K.BE32),
    15: ("nfproto", K.BE32),
    16: ("policy", K.BE32),
    17: ("pad", K.BINARY),
})


TARGET = _attrset("target", {
    1: ("name", K.STRING),
    2: ("rev", K.BE32),
    3: ("info", K.BINARY),
})


CT_HELPER = _attrset("ct_helper", {
    1: ("name", K.STRING),
    2: ("l3proto", K.BE16),
    3: ("l4proto", K.U8),
})


SOCKET = _attrset("socket", {
    1: ("key", K.BE32),
    2: ("dreg", K.BE32),
    3: ("level", K.BE32),
})


DUP = _attrset("dup", {
    1: ("sreg_addr", K.BE32),
    2: ("sreg_dev", K.BE32),
})


FWD = _attrset("fwd", {
    1: ("sreg_dev", K.BE32),
    2: ("sreg_addr", K.BE32),
    3: ("nfproto", K.BE32),
})


TPROXY = _attrset("tproxy", {
    1: ("family", K.BE32),
    2: ("reg_addr", K.BE32),
    3: ("reg_port", K.BE32),
})


CT_TIMEOUT = _attrset("ct_timeout", {
    1: ("l3proto", K.BE16),
    2: ("l4proto", K.U8),
    3: ("data", K.BINARY),  # CTA_TIMEOUT_<PROTO>_* (be32 seconds), by layer-4 protocol
})


CT_EXPECT = _attrset("ct_expect", {
    1: ("l3proto", K.BE16),
    2: ("l4proto", K.U8),
    3: ("dport", K.BE16),
    4: ("timeout", K.U32),  # the kernel reads it in host order (nla_get_u32)
    5: ("size", K.U8),
})


OSF = _attrset("osf", {
    1: ("dreg", K.BE32),
    2: ("ttl", K.U8),
    3: ("flags", K.BE32),
})


XFRM = _attrset("xfrm", {
    1: ("dreg", K.BE32),
    2: ("key", K.BE32),
    3: ("dir", K.U8),
    4: ("spnum", K.BE32),
})


SYNPROXY = _attrset("synproxy", {
    1: ("mss", K.BE16),
    2: ("wscale", K.U8),
    3: ("flags", K.BE32),
})


# Each expression's attributes, by the name NFTA_EXPR_NAME gives (the sub-message of
# NFTA_EXPR_DATA); stateful objects' data by NFTA_OBJ_TYPE.
EXPR_OPS = {s.name: s for s in (
    IMMEDIATE, BITWISE, BYTEORDER, CMP, RANGE, LOOKUP, DYNSET, PAYLOAD, EXTHDR, HASH, META, RT,
    CT, LIMIT, CONNLIMIT, COUNTER, LOG, QUEUE, QUOTA, REJECT, NAT, MASQ, REDIR, OBJREF, FIB,
    NUMGEN, TARGET, SYNPROXY, SOCKET, DUP, FWD, TPROXY, OSF, XFRM,
)}
OBJ_DATA = {ObjectType.COUNTER: COUNTER, ObjectType.QUOTA: QUOTA, ObjectType.CT_HELPER: CT_HELPER,
            ObjectType.LIMIT: LIMIT, ObjectType.CONNLIMIT: CONNLIMIT,
            ObjectType.CT_TIMEOUT: CT_TIMEOUT, ObjectType.CT_EXPECT: CT_EXPECT,
            ObjectType.SYNPROXY: SYNPROXY}
EXPR.attrs[2].variants = EXPR_OPS
OBJ.attrs[4].variants = OBJ_DATA

UAPI: list[tuple] = [
    (LIST, _H, "nft_list_attributes", "NFTA_LIST_"),
    (HOOK, _H, "nft_hook_attributes", "NFTA_HOOK_"),
    (TABLE, _H, "nft_table_attributes", "NFTA_TABLE_"),
    (COUNTER, _H, "nft_counter_attributes", "NFTA_COUNTER_"),
    (CHAIN, _H, "nft_chain_attributes", "NFTA_CHAIN_"),
    (EXPR, _H, "nft_expr_attributes", "NFTA_EXPR_"),
    (RULE, _H, "nft_rule_attributes", "NFTA_RULE_"),
    (SET_FIELD, _H, "nft_set_field_attributes", "NFTA_SET_FIELD_"),
    (SET_DESC, _H, "nft_set_desc_attributes", "NFTA_SET_DESC_"),
    (SET, _H, "nft_set_attributes", "NFTA_SET_"),
    (VERDICT, _H, "nft_verdict_attributes", "NFTA_VERDICT_"),
    (DATA, _H, "nft_data_attributes", "NFTA_DATA_"),
    (SET_ELEM, _H, "nft_set_elem_attributes", "NFTA_SET_ELEM_"),
    (SET_ELEM_LIST, _H, "nft_set_elem_list_attributes", "NFTA_SET_ELEM_LIST_"),
    (IMMEDIATE, _H, "nft_immediate_attributes", "NFTA_IMMEDIATE_"),
    (BITWISE, _H, "nft_bitwise_attributes", "NFTA_BITWISE_"),
    (BYTEORDER, _H, "nft_byteorder_attributes", "NFTA_BYTEORDER_"),
    (CMP, _H, "nft_cmp_attributes", "NFTA_CMP_"),
    (RANGE, _H, "nft_range_attributes", "NFTA_RANGE_"),
    (LOOKUP, _H, "nft_lookup_attributes", "NFTA_LOOKUP_"),
    (DYNSET, _H, "nft_dynset_attributes", "NFTA_DYNSET_"),
    (PAYLOAD, _H, "nft_payload_attributes", "NFTA_PAYLOAD_"),
    (EXTHDR, _H, "nft_exthdr_attributes", "NFTA_EXTHDR_"),
    (HASH, _H, "nft_hash_attributes", "NFTA_HASH_"),
    (META, _H, "nft_meta_attributes", "NFTA_META_"),
    (RT, _H, "nft_rt_attributes", "NFTA_RT_"),
    (CT, _H, "nft_ct_attributes", "NFTA_CT_"),
    (LIMIT, _H, "nft_limit_attributes", "NFTA_LIMIT_"),
    (CONNLIMIT, _H, "nft_connlimit_attributes", "NFTA_CONNLIMIT_"),
    (LOG, _H, "nft_log_attributes", "NFTA_LOG_"),
    (QUEUE, _H, "nft_queue_attributes", "NFTA_QUEUE_"),
    (QUOTA, _H, "nft_quota_attributes", "NFTA_QUOTA_"),
    (REJECT, _H, "nft_reject_attributes", "NFTA_REJECT_"),
    (NAT, _H, "nft_nat_attributes", "NFTA_NAT_"),
    (MASQ, _H, "nft_masq_attributes", "NFTA_MASQ_"),
    (REDIR, _H, "nft_redir_attributes", "NFTA_REDIR_"),
    (OBJREF, _H, "nft_objref_attributes", "NFTA_OBJREF_"),
    (FIB, _H, "nft_fib_attributes", "NFTA_FIB_"),
    (NUMGEN, _H, "nft_ng_attributes", "NFTA_NG_"),
    (OBJ, _H, "nft_object_attributes", "NFTA_OBJ_"),
    (GEN, _H, "nft_gen_attributes", "NFTA_GEN_"),
    (TRACE, _H, "nft_trace_attributes", "NFTA_TRACE_"),
    (TARGET, _COMPAT, "nft_target_attributes", "NFTA_TARGET_"),
    (CT_HELPER, _H, "nft_ct_helper_attributes", "NFTA_CT_HELPER_"),
    (CT_TIMEOUT, _H, "nft_ct_timeout_timeout_attributes", "NFTA_CT_TIMEOUT_"),
    (CT_EXPECT, _H, "nft_ct_expectation_attributes", "NFTA_CT_EXPECT_"),
    (SYNPROXY, _H, "nft_synproxy_attributes", "NFTA_SYNPROXY_"),
    (SOCKET, _H, "nft_socket_attributes", "NFTA_SOCKET_"),
    (DUP, _H, "nft_dup_attributes", "NFTA_DUP_"),
    (FWD, _H, "nft_fwd_attributes", "NFTA_FWD_"),
    (TPROXY, _H, "nft_tproxy_attributes", "NFTA_TPROXY_"),
    (OSF, _H, "nft_osf_attributes", "NFTA_OSF_"),
    (XFRM, _H, "nft_xfrm_attributes", "NFTA_XFRM_"),
    (RULE_COMPAT, _H, "nft_rule_compat_attributes", "NFTA_RULE_COMPAT_"),
]

# every table by name
SETS: dict[str, AttrSet] = {entry[0].name: entry[0] for entry in UAPI}
for _aset in SETS.values():
    _aset.resolve()

# Message types (enum nf_tables_msg_types), by position.
MSG_TYPES = [
    "newtable", "gettable", "deltable", "newchain", "getchain", "delchain",
    "newrule", "getrule", "delrule", "newset", "getset", "delset",
    "newsetelem", "getsetelem", "delsetelem", "newgen", "getgen", "trace",
    "newobj", "getobj", "delobj", "getobj_reset",
]
MSG = {name: i for i, name in enumerate(MSG_TYPES)}

# each message type's attributes (extended-ACK offsets are walked with these)
_MSG_SETS = {"table": TABLE, "chain": CHAIN, "rule": RULE, "set": SET, "setelem": SET_ELEM_LIST,
             "gen": GEN, "obj": OBJ, "obj_reset": OBJ}
MESSAGE_ATTRS: dict[int, AttrSet] = {
    (NFNL_SUBSYS_NFTABLES << 8) | number: aset
    for name, number in MSG.items()
    for suffix, aset in _MSG_SETS.items()
    if name[3:] == suffix
}

# Tables whose enum lives in another uapi header.
HEADERS = {"target": _COMPAT}

# ---------------------------------------------------------------- the former names
_KIND_NAMES = {k: k.value.replace("-", "_") for k in K}

# table name -> (uapi enum name, attribute prefix, [(attribute, kind, nested table or None)])
TABLES: dict[str, tuple[str, str, list[tuple[str, str, str | None]]]] = {
    aset.name: (enum_name, prefix, [
        (a.name, _KIND_NAMES[a.kind], a.nested.name if a.nested is not None else None)
        for _n, a in sorted(aset.attrs.items())
    ])
    for aset, _header, enum_name, prefix in UAPI
}
_NUMS: dict[str, dict[str, int]] = {
    name: {a.name: n for n, a in aset.attrs.items()} for name, aset in SETS.items()
}
_NAMES: dict[str, dict[int, str]] = {
    name: {n: a.name for n, a in aset.attrs.items()} for name, aset in SETS.items()
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
