"""nfkit's netlink core, directly: create conntrack entries in one send, dump them,
and see how the kernel's refusal of a bad batch comes back.

Run it as root inside a namespace of your own, e.g.:
    ip netns add try && ip netns exec try .venv/bin/python examples/netlink_basics.py
"""

import socket

from nfkit.errors import NetlinkError, TransactionError
from nfkit.netlink import Batch, MessageWriter, NetlinkSocket
from nfkit.netlink.consts import (
    NFNL_SUBSYS_NFTABLES,
    NFPROTO_INET,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    nfnl_msg_type,
)
from nfkit.netlink.specs import ctnetlink as C

CT_NEW = C.CT_NEW
CT_GET = C.CT_GET
client, server = socket.inet_aton("192.0.2.10"), socket.inet_aton("198.51.100.53")

with NetlinkSocket() as nl:
    # 1. many requests, encoded into one buffer, sent several per sendmsg
    w = MessageWriter()
    for port in range(40000, 40010):
        w.begin(CT_NEW, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL, family=socket.AF_INET)
        C.CT.encode(w, {
            "tuple_orig": {"ip": {"v4_src": client, "v4_dst": server},
                           "proto": {"num": 17, "src_port": port, "dst_port": 53}},
            "tuple_reply": {"ip": {"v4_src": server, "v4_dst": client},
                            "proto": {"num": 17, "src_port": 53, "dst_port": port}},
            "timeout": 120,
        })
        w.end()
    failures = nl.pipeline(w)
    print(f"created 10 entries, {len(failures)} failed")

    # 2. a dump: multipart replies, decoded lazily from one receive buffer
    w = MessageWriter()
    w.begin(CT_GET, family=socket.AF_INET)
    w.end()
    for msg in nl.dump(w):
        entry = C.CT.lazy(msg.attrs)
        orig = entry["tuple_orig"]
        print("udp", socket.inet_ntoa(orig["ip"]["v4_src"]), orig["proto"]["src_port"],
              "timeout", entry["timeout"])

    # 3. a single request the kernel refuses: the error names the object
    w2 = MessageWriter()
    w2.begin(CT_NEW, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL, family=socket.AF_INET)
    C.CT.encode(w2, {"tuple_orig": {"ip": {"v4_src": client, "v4_dst": server},
                                    "proto": {"num": 17, "src_port": 40000, "dst_port": 53}},
                     "tuple_reply": {"ip": {"v4_src": server, "v4_dst": client},
                                     "proto": {"num": 17, "src_port": 53, "dst_port": 40000}},
                     "timeout": 120})
    w2.end()
    try:
        nl.request(w2, what="udp 192.0.2.10:40000 -> 198.51.100.53:53")
    except NetlinkError as exc:
        print("refused:", exc)

    # 4. an nf_tables batch is all or nothing; errors map back to the message
    b = Batch()
    b.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, 0), NLM_F_REQUEST | NLM_F_CREATE, family=NFPROTO_INET)
    b.string(1, "example")                     # NFTA_TABLE_NAME
    b.end()
    b.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, 3), NLM_F_REQUEST | NLM_F_CREATE, family=NFPROTO_INET)
    b.string(1, "no-such-table")               # NFTA_CHAIN_TABLE
    b.string(3, "input")                       # NFTA_CHAIN_NAME
    b.end()
    # the fence: a request of the batch's family sent after it (nf_tables: GETGEN);
    # once its ACK is read, every answer to the batch has been read
    fence = MessageWriter()
    fence.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, 16), NLM_F_REQUEST)
    fence.end()
    try:
        # the error names the attribute the kernel pointed at ("table"), read with the spec
        nl.send_batch(b, what=["table inet example", "chain inet no-such-table input"], fence=fence)
    except TransactionError as exc:
        print("transaction refused, nothing committed:", exc.errors[0], "(message", exc.errors[0].index, ")")
