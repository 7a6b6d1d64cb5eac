"""nfnetlink_queue (NFNL_SUBSYS_QUEUE): queued packets, verdicts and queue configuration.

Numbers from linux/netfilter/nfnetlink_queue.h, checked by
tests/netlink/test_uapi.py; kinds from the kernel's nla_policy tables in
net/netfilter/nfnetlink_queue.c (integers big endian, as the kernel writes
them with nla_put_be32).  Fixed C structs travel as BINARY and are packed and
unpacked by `nfkit.nfqueue.wire`.
"""

from __future__ import annotations

from nfkit.netlink.codec import Kind as K
from nfkit.netlink.consts import NFNL_SUBSYS_QUEUE
from nfkit.netlink.specs import attrset
from nfkit.netlink.specs.ctnetlink import CT, EXPECT

# enum nfqnl_msg_types
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3

PACKET = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
VERDICT = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
CONFIG = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
VERDICT_BATCH = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT_BATCH

# enum nfqnl_msg_config_cmds
NFQNL_CFG_CMD_NONE = 0
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_CFG_CMD_PF_BIND = 3
NFQNL_CFG_CMD_PF_UNBIND = 4

# enum nfqnl_config_mode
NFQNL_COPY_NONE = 0
NFQNL_COPY_META = 1
NFQNL_COPY_PACKET = 2

# NFQA_CFG_FLAGS
NFQA_CFG_F_FAIL_OPEN = 1 << 0
NFQA_CFG_F_CONNTRACK = 1 << 1
NFQA_CFG_F_GSO = 1 << 2
NFQA_CFG_F_UID_GID = 1 << 3
NFQA_CFG_F_SECCTX = 1 << 4

# NFQA_SKB_INFO
NFQA_SKB_CSUMNOTREADY = 1 << 0
NFQA_SKB_GSO = 1 << 1
NFQA_SKB_CSUM_NOTVERIFIED = 1 << 2

VLAN = attrset("nfqnl_vlan_attr", {
    1: ("proto", K.BE16),
    2: ("tci", K.BE16),
})

# enum nfqnl_attr_type: a packet from the kernel, a verdict from userspace
QUEUE = attrset("nfqnl_attr_type", {
    1: ("packet_hdr", K.BINARY),    # struct nfqnl_msg_packet_hdr (7 bytes, packed)
    2: ("verdict_hdr", K.BINARY),   # struct nfqnl_msg_verdict_hdr (8 bytes)
    3: ("mark", K.BE32),
    4: ("timestamp", K.BINARY),     # struct nfqnl_msg_packet_timestamp
    5: ("ifindex_indev", K.BE32),
    6: ("ifindex_outdev", K.BE32),
    7: ("ifindex_physindev", K.BE32),
    8: ("ifindex_physoutdev", K.BE32),
    9: ("hwaddr", K.BINARY),        # struct nfqnl_msg_packet_hw
    10: ("payload", K.BINARY),
    11: ("ct", K.NESTED, CT),
    12: ("ct_info", K.BE32),
    13: ("cap_len", K.BE32),
    14: ("skb_info", K.BE32),
    15: ("exp", K.NESTED, EXPECT),
    16: ("uid", K.BE32),
    17: ("gid", K.BE32),
    18: ("secctx", K.BINARY),
    19: ("vlan", K.NESTED, VLAN),
    20: ("l2hdr", K.BINARY),
    21: ("priority", K.BE32),
})

CFG = attrset("nfqnl_attr_config", {
    1: ("cmd", K.BINARY),           # struct nfqnl_msg_config_cmd (4 bytes)
    2: ("params", K.BINARY),        # struct nfqnl_msg_config_params (5 bytes, packed)
    3: ("queue_maxlen", K.BE32),
    4: ("mask", K.BE32),
    5: ("flags", K.BE32),
})

MESSAGE_ATTRS = {
    PACKET: QUEUE,
    VERDICT: QUEUE,
    VERDICT_BATCH: QUEUE,
    CONFIG: CFG,
}

_H = "linux/netfilter/nfnetlink_queue.h"
UAPI: list[tuple] = [
    (QUEUE, _H, "nfqnl_attr_type", "NFQA_"),
    (CFG, _H, "nfqnl_attr_config", "NFQA_CFG_", {"queue_maxlen": "NFQA_CFG_QUEUE_MAXLEN"}),
    (VLAN, _H, "nfqnl_vlan_attr", "NFQA_VLAN_"),
]
MESSAGES = [
    ({"PACKET": 0, "VERDICT": 1, "CONFIG": 2, "VERDICT_BATCH": 3}, _H, "nfqnl_msg_types", "NFQNL_MSG_"),
    ({"NONE": 0, "BIND": 1, "UNBIND": 2, "PF_BIND": 3, "PF_UNBIND": 4}, _H, "nfqnl_msg_config_cmds",
     "NFQNL_CFG_CMD_"),
    ({"NONE": 0, "META": 1, "PACKET": 2}, _H, "nfqnl_config_mode", "NFQNL_COPY_"),
]
