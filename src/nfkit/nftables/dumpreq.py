"""GET* dump requests of nf_tables, built without the decoder.

This module owns the family numbers and the dump requests a command sends
before it imports the heavy rest of nfkit.nftables (the kernel can start on a
long rule dump meanwhile).  It imports only the netlink codec and specs.
"""

from __future__ import annotations

from nfkit.netlink.codec import MessageWriter
from nfkit.netlink.consts import NFNL_SUBSYS_NFTABLES, NLM_F_REQUEST, nfnl_msg_type
from nfkit.netlink.specs.nftables import MSG, num

FAMILY_NUM = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}


def family_num(family: str) -> int:
    """The NFPROTO number of a family name; raises InputError for an unknown one."""
    from nfkit.errors import InputError

    num = FAMILY_NUM.get(family)
    if num is None:
        raise InputError(f"family {family!r}: not one of {', '.join(FAMILY_NUM)}")
    return num


def generation_request() -> MessageWriter:
    """GETGEN: the fence sent after a batch (`NetlinkSocket.send_batch`'s ``fence``);
    its ACK comes after every answer to the batch."""
    w = MessageWriter()
    w.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, MSG["getgen"]), NLM_F_REQUEST)
    w.end()
    return w


def rules_request(family: str | None, table: str | None = None,
                  chain: str | None = None) -> MessageWriter:
    """The GETRULE dump request (sent as a dump by the socket): every family's rules
    when ``family`` is None, else that family's, of one table and chain if given
    (the kernel filters by table only within a family, by chain only within a table)."""
    w = MessageWriter()
    w.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, MSG["getrule"]), NLM_F_REQUEST,
            family=family_num(family) if family else 0)
    if family and table is not None:
        w.string(num("rule", "table"), table)
        if chain is not None:
            w.string(num("rule", "chain"), chain)
    w.end()
    return w
