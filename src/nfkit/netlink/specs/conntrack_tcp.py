"""The kernel's TCP conntrack states (enum tcp_conntrack), declared once for all of nfkit.

Owns: the state numbers of linux/netfilter/nf_conntrack_tcp.h (checked by
tests/netlink/test_uapi.py). ctnetlink carries them in CTA_PROTOINFO_TCP_STATE
(`nfkit.conntrack`), and the userspace flow table keeps its TCP state in the
same numbering (`nfkit.flow`), so both import this one enum.
Must not know: transitions, timeouts, text spellings of any tool.
"""

from __future__ import annotations

import enum


class TcpState(enum.IntEnum):
    """TCP conntrack states (enum tcp_conntrack).

    SYN_SENT2 is the simultaneous-open state (both sides sent a SYN); the
    header still names its number TCP_CONNTRACK_LISTEN.
    """

    NONE = 0
    SYN_SENT = 1
    SYN_RECV = 2
    ESTABLISHED = 3
    FIN_WAIT = 4
    CLOSE_WAIT = 5
    LAST_ACK = 6
    TIME_WAIT = 7
    CLOSE = 8
    SYN_SENT2 = 9


# The header's names for the members whose spelling differs from TCP_CONNTRACK_<name>.
UAPI_RENAMES = {"SYN_SENT2": "TCP_CONNTRACK_LISTEN"}
UAPI_HEADER = "linux/netfilter/nf_conntrack_tcp.h"
