"""rtnetlink numbers and attribute tables (NETLINK_ROUTE).

Numbers from linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h and
linux/fib_rules.h, checked by tests/route/test_spec.py.  Only the attributes
nfkit reads or writes are declared; any other arrives undecoded, under its
number.
"""

from __future__ import annotations

import struct

from nfkit.netlink.codec import Kind as K
from nfkit.netlink.specs import attrset

NETLINK_ROUTE = 0

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34

# multicast groups (enum rtnetlink_groups)
RTNLGRP_LINK = 1
RTNLGRP_IPV4_IFADDR = 5
RTNLGRP_IPV4_ROUTE = 7
RTNLGRP_IPV4_RULE = 8
RTNLGRP_IPV6_IFADDR = 9
RTNLGRP_IPV6_ROUTE = 11
RTNLGRP_IPV6_RULE = 19

RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
FR_ACT_TO_TBL = 1
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20

# fixed headers that follow nlmsghdr, one per message class
IFINFOMSG = struct.Struct("=BxHiII")      # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBi")       # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")       # family, dst_len, src_len, tos, table, protocol, scope, type, flags
FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, res1, res2, action, flags

LINK = attrset("ifla", {
    1: ("address", K.BINARY),
    3: ("ifname", K.STRING),
    4: ("mtu", K.U32),
    13: ("txqlen", K.U32),
    16: ("operstate", K.U8),
    33: ("carrier", K.U8),
})

ADDR = attrset("ifa", {
    1: ("address", K.BINARY),
    2: ("local", K.BINARY),
    3: ("label", K.STRING),
    6: ("cacheinfo", K.BINARY),
    8: ("flags", K.U32),
})

ROUTE = attrset("rta", {
    1: ("dst", K.BINARY),
    2: ("src", K.BINARY),
    3: ("iif", K.U32),
    4: ("oif", K.U32),
    5: ("gateway", K.BINARY),
    6: ("priority", K.U32),
    7: ("prefsrc", K.BINARY),
    15: ("table", K.U32),
})

RULE = attrset("fra", {
    1: ("dst", K.BINARY),
    2: ("src", K.BINARY),
    3: ("iifname", K.STRING),
    6: ("priority", K.U32),
    10: ("fwmark", K.U32),
    15: ("table", K.U32),
    16: ("fwmask", K.U32),
    17: ("oifname", K.STRING),
})

# (table, header, constant prefix) for the uapi check; IFLA/RTA are enums without a name
UAPI = [
    (LINK, "linux/if_link.h", "IFLA_"),
    (ADDR, "linux/if_addr.h", "IFA_"),
    (ROUTE, "linux/rtnetlink.h", "RTA_"),
    (RULE, "linux/fib_rules.h", "FRA_"),
]
