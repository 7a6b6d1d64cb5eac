"""GET* dump requests of nf_tables, built without the decoder.

This module owns the family numbers and the dump requests a command sends
before it imports the heavy rest of nfkit.nftables (the kernel can start on a
long rule dump meanwhile).  It imports only the netlink codec and specs.
"""

from __future__ import annotations

from nfkit.netlink.codec import MessageWriter
from nfkit.netlink.consts import NFNL_SUBSYS_NFTABLES, NLM_F_REQUEST, nfnl_msg_type
from nfkit.netlink.specs.nftables import MSG
from nfkit.nftables.nla import A, string

FAMILY_NUM = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}


def family_num(family: str) -> int:
    """The NFPROTO number of a family name; raises InputError for an unknown one."""
    from nfkit.errors import InputError

    num = FAMILY_NUM.get(family)
    if num is None:
        raise InputError(f"family {family!r}: not one of {', '.join(FAMILY_NUM)}")
    return num


def rules_request(family: str, table: str, chain: str) -> MessageWriter:
    """The GETRULE dump request for one chain (sent as a dump by the socket)."""
    w = MessageWriter()
    w.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, MSG["getrule"]), NLM_F_REQUEST,
            family=family_num(family))
    w.raw(string(A["rule"]["table"], table) + string(A["rule"]["chain"], chain))
    w.end()
    return w
