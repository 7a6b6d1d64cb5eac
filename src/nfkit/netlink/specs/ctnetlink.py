"""ctnetlink (NFNL_SUBSYS_CTNETLINK): conntrack entries, filters and statistics.

Numbers from linux/netfilter/nfnetlink_conntrack.h, checked by
tests/netlink/test_uapi.py; kinds from the kernel's nla_policy tables in
net/netfilter/nf_conntrack_netlink.c (most integers are big endian).
"""

from __future__ import annotations

from nfkit.netlink.codec import Kind as K
from nfkit.netlink.consts import NFNL_SUBSYS_CTNETLINK, NFNL_SUBSYS_CTNETLINK_EXP
from nfkit.netlink.specs import attrset

# message types (enum cntl_msg_types)
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
IPCTNL_MSG_CT_GET_CTRZERO = 3
IPCTNL_MSG_CT_GET_STATS_CPU = 4
IPCTNL_MSG_CT_GET_STATS = 5
IPCTNL_MSG_CT_GET_DYING = 6
IPCTNL_MSG_CT_GET_UNCONFIRMED = 7

# full nlmsg_type values of the common requests
CT_NEW = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
CT_GET = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
CT_DELETE = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE

# enum ctnl_exp_msg_types
IPCTNL_MSG_EXP_NEW = 0
IPCTNL_MSG_EXP_GET = 1
IPCTNL_MSG_EXP_DELETE = 2
IPCTNL_MSG_EXP_GET_STATS_CPU = 3

IP = attrset("ctattr_ip", {
    1: ("v4_src", K.BINARY),
    2: ("v4_dst", K.BINARY),
    3: ("v6_src", K.BINARY),
    4: ("v6_dst", K.BINARY),
})

PROTO = attrset("ctattr_l4proto", {
    1: ("num", K.U8),
    2: ("src_port", K.BE16),
    3: ("dst_port", K.BE16),
    4: ("icmp_id", K.BE16),
    5: ("icmp_type", K.U8),
    6: ("icmp_code", K.U8),
    7: ("icmpv6_id", K.BE16),
    8: ("icmpv6_type", K.U8),
    9: ("icmpv6_code", K.U8),
})

TUPLE = attrset("ctattr_tuple", {
    1: ("ip", K.NESTED, IP),
    2: ("proto", K.NESTED, PROTO),
    3: ("zone", K.BE16),
})

PROTOINFO_TCP = attrset("ctattr_protoinfo_tcp", {
    1: ("state", K.U8),
    2: ("wscale_original", K.U8),
    3: ("wscale_reply", K.U8),
    4: ("flags_original", K.BINARY),  # struct nf_ct_tcp_flags {u8 flags; u8 mask}
    5: ("flags_reply", K.BINARY),
})

PROTOINFO_DCCP = attrset("ctattr_protoinfo_dccp", {
    1: ("state", K.U8),
    2: ("role", K.U8),
    3: ("handshake_seq", K.BE64),
    4: ("pad", K.BINARY),
})

PROTOINFO_SCTP = attrset("ctattr_protoinfo_sctp", {
    1: ("state", K.U8),
    2: ("vtag_original", K.BE32),
    3: ("vtag_reply", K.BE32),
})

PROTOINFO = attrset("ctattr_protoinfo", {
    1: ("tcp", K.NESTED, PROTOINFO_TCP),
    2: ("dccp", K.NESTED, PROTOINFO_DCCP),
    3: ("sctp", K.NESTED, PROTOINFO_SCTP),
})

COUNTERS = attrset("ctattr_counters", {
    1: ("packets", K.BE64),
    2: ("bytes", K.BE64),
    3: ("packets32", K.BE32),
    4: ("bytes32", K.BE32),
    5: ("pad", K.BINARY),
})

TIMESTAMP = attrset("ctattr_tstamp", {
    1: ("start", K.BE64),
    2: ("stop", K.BE64),
    3: ("pad", K.BINARY),
})

PROTONAT = attrset("ctattr_protonat", {
    1: ("port_min", K.BE16),
    2: ("port_max", K.BE16),
})

NAT = attrset("ctattr_nat", {
    1: ("v4_minip", K.BINARY),
    2: ("v4_maxip", K.BINARY),
    3: ("proto", K.NESTED, PROTONAT),
    4: ("v6_minip", K.BINARY),
    5: ("v6_maxip", K.BINARY),
})

SEQADJ = attrset("ctattr_seqadj", {
    1: ("correction_pos", K.BE32),
    2: ("offset_before", K.BE32),
    3: ("offset_after", K.BE32),
})

SYNPROXY = attrset("ctattr_synproxy", {
    1: ("isn", K.BE32),
    2: ("its", K.BE32),
    3: ("tsoff", K.BE32),
})

HELP = attrset("ctattr_help", {
    1: ("name", K.STRING),
    2: ("info", K.BINARY),
})

SECCTX = attrset("ctattr_secctx", {
    1: ("name", K.STRING),
})

# The filter's flag words are in host byte order (the kernel reads them with nla_get_u32).
FILTER = attrset("ctattr_filter", {
    1: ("orig_flags", K.U32),
    2: ("reply_flags", K.U32),
})

CT = attrset("ctattr_type", {
    1: ("tuple_orig", K.NESTED, TUPLE),
    2: ("tuple_reply", K.NESTED, TUPLE),
    3: ("status", K.BE32),
    4: ("protoinfo", K.NESTED, PROTOINFO),
    5: ("help", K.NESTED, HELP),
    6: ("nat_src", K.NESTED, NAT),
    7: ("timeout", K.BE32),
    8: ("mark", K.BE32),
    9: ("counters_orig", K.NESTED, COUNTERS),
    10: ("counters_reply", K.NESTED, COUNTERS),
    11: ("use", K.BE32),
    12: ("id", K.BE32),
    13: ("nat_dst", K.NESTED, NAT),
    14: ("tuple_master", K.NESTED, TUPLE),
    15: ("seq_adj_orig", K.NESTED, SEQADJ),
    16: ("seq_adj_reply", K.NESTED, SEQADJ),
    17: ("secmark", K.BE32),
    18: ("zone", K.BE16),
    19: ("secctx", K.NESTED, SECCTX),
    20: ("timestamp", K.NESTED, TIMESTAMP),
    21: ("mark_mask", K.BE32),
    22: ("labels", K.BINARY),
    23: ("labels_mask", K.BINARY),
    24: ("synproxy", K.NESTED, SYNPROXY),
    25: ("filter", K.NESTED, FILTER),
    26: ("status_mask", K.BE32),
})

STATS_CPU = attrset("ctattr_stats_cpu", {
    1: ("searched", K.BE32),
    2: ("found", K.BE32),
    3: ("new", K.BE32),
    4: ("invalid", K.BE32),
    5: ("ignore", K.BE32),
    6: ("delete", K.BE32),
    7: ("delete_list", K.BE32),
    8: ("insert", K.BE32),
    9: ("insert_failed", K.BE32),
    10: ("drop", K.BE32),
    11: ("early_drop", K.BE32),
    12: ("error", K.BE32),
    13: ("search_restart", K.BE32),
    14: ("clash_resolve", K.BE32),
    15: ("chain_toolong", K.BE32),
})

STATS_GLOBAL = attrset("ctattr_stats_global", {
    1: ("entries", K.BE32),
    2: ("max_entries", K.BE32),
})

EXPECT_NAT = attrset("ctattr_expect_nat", {
    1: ("dir", K.BE32),
    2: ("tuple", K.NESTED, TUPLE),
})

EXPECT = attrset("ctattr_expect", {
    1: ("master", K.NESTED, TUPLE),
    2: ("tuple", K.NESTED, TUPLE),
    3: ("mask", K.NESTED, TUPLE),
    4: ("timeout", K.BE32),
    5: ("id", K.BE32),
    6: ("help_name", K.STRING),
    7: ("zone", K.BE16),
    8: ("flags", K.BE32),
    9: ("class", K.BE32),
    10: ("nat", K.NESTED, EXPECT_NAT),
    11: ("fn", K.STRING),
})

EXPECT_STATS = attrset("ctattr_expect_stats", {
    1: ("new", K.BE32),
    2: ("create", K.BE32),
    3: ("delete", K.BE32),
})

# each message type's attributes (extended-ACK offsets are walked with these)
MESSAGE_ATTRS = {
    **{(NFNL_SUBSYS_CTNETLINK << 8) | m: CT for m in (
        IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET_CTRZERO,
        IPCTNL_MSG_CT_GET_DYING, IPCTNL_MSG_CT_GET_UNCONFIRMED)},
    (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS_CPU: STATS_CPU,
    (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS: STATS_GLOBAL,
    **{(NFNL_SUBSYS_CTNETLINK_EXP << 8) | m: EXPECT for m in (
        IPCTNL_MSG_EXP_NEW, IPCTNL_MSG_EXP_GET, IPCTNL_MSG_EXP_DELETE)},
    (NFNL_SUBSYS_CTNETLINK_EXP << 8) | IPCTNL_MSG_EXP_GET_STATS_CPU: EXPECT_STATS,
}

_H = "linux/netfilter/nfnetlink_conntrack.h"
# (table, header, enum, constant prefix[, {attribute name: constant} where the name differs])
UAPI: list[tuple] = [
    (CT, _H, "ctattr_type", "CTA_"),
    (TUPLE, _H, "ctattr_tuple", "CTA_TUPLE_"),
    (IP, _H, "ctattr_ip", "CTA_IP_"),
    (PROTO, _H, "ctattr_l4proto", "CTA_PROTO_"),
    (PROTOINFO, _H, "ctattr_protoinfo", "CTA_PROTOINFO_"),
    (PROTOINFO_TCP, _H, "ctattr_protoinfo_tcp", "CTA_PROTOINFO_TCP_"),
    (PROTOINFO_DCCP, _H, "ctattr_protoinfo_dccp", "CTA_PROTOINFO_DCCP_"),
    (PROTOINFO_SCTP, _H, "ctattr_protoinfo_sctp", "CTA_PROTOINFO_SCTP_"),
    (COUNTERS, _H, "ctattr_counters", "CTA_COUNTERS_",
     {"packets32": "CTA_COUNTERS32_PACKETS", "bytes32": "CTA_COUNTERS32_BYTES"}),
    (TIMESTAMP, _H, "ctattr_tstamp", "CTA_TIMESTAMP_"),
    (NAT, _H, "ctattr_nat", "CTA_NAT_"),
    (PROTONAT, _H, "ctattr_protonat", "CTA_PROTONAT_"),
    (SEQADJ, _H, "ctattr_seqadj", "CTA_SEQADJ_"),
    (SYNPROXY, _H, "ctattr_synproxy", "CTA_SYNPROXY_"),
    (HELP, _H, "ctattr_help", "CTA_HELP_"),
    (SECCTX, _H, "ctattr_secctx", "CTA_SECCTX_"),
    (FILTER, _H, "ctattr_filter", "CTA_FILTER_"),
    (STATS_CPU, _H, "ctattr_stats_cpu", "CTA_STATS_"),
    (STATS_GLOBAL, _H, "ctattr_stats_global", "CTA_STATS_GLOBAL_"),
    (EXPECT, _H, "ctattr_expect", "CTA_EXPECT_"),
    (EXPECT_NAT, _H, "ctattr_expect_nat", "CTA_EXPECT_NAT_"),
    (EXPECT_STATS, _H, "ctattr_expect_stats", "CTA_STATS_EXP_"),
]
MESSAGES = [
    ({"CT_NEW": 0, "CT_GET": 1, "CT_DELETE": 2, "CT_GET_CTRZERO": 3, "CT_GET_STATS_CPU": 4,
      "CT_GET_STATS": 5, "CT_GET_DYING": 6, "CT_GET_UNCONFIRMED": 7},
     _H, "cntl_msg_types", "IPCTNL_MSG_"),
]
