"""nft's vocabulary, one small ruleset per item: the data of test_vocabulary.py and of
the coverage table in docs/rules.md.

Each item is one table in nft's text (its name is the item's id), in a group of
items that share a pair of namespaces.  The table's body is written without the
`table` line; `{chain}` stands for a base chain header of the group's hook.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    id: str
    what: str
    family: str
    body: str


def _filter(hook: str = "input", typ: str = "filter", prio: str = "0") -> str:
    return f"type {typ} hook {hook} priority {prio}; policy accept;"


def _chain(lines: str, hook: str = "input", typ: str = "filter", prio: str = "0") -> str:
    return f"chain c {{\n{_filter(hook, typ, prio)}\n{lines}\n}}"


NAT_PRE = {"hook": "prerouting", "typ": "nat", "prio": "-100"}
NAT_POST = {"hook": "postrouting", "typ": "nat", "prio": "100"}

GROUPS: dict[str, list[Item]] = {
    "nat": [
        Item("snat_addr", "snat to an address", "ip", _chain(
            'oifname "lo" snat to 203.0.113.1', **NAT_POST)),
        Item("snat_addr_port", "snat to address:port range, persistent", "ip", _chain(
            "meta l4proto tcp snat to 203.0.113.1:1000-2000 persistent", **NAT_POST)),
        Item("snat_range", "snat to an address range, random, fully-random", "ip", _chain(
            "snat to 203.0.113.1-203.0.113.9 random\nsnat to 203.0.113.5 fully-random",
            **NAT_POST)),
        Item("snat_ip6", "ip6 snat to an address range", "ip6", _chain(
            "snat to 2001:db8::100-2001:db8::1ff", **NAT_POST)),
        Item("snat_inet", "inet snat ip / ip6", "inet", _chain(
            "ip saddr 192.0.2.0/24 snat ip to 203.0.113.1\n"
            "ip6 saddr 2001:db8:1::/64 snat ip6 to 2001:db8::1", **NAT_POST)),
        Item("dnat_port", "dnat to address:port", "ip", _chain(
            "tcp dport 80 dnat to 192.0.2.10:8080", **NAT_PRE)),
        Item("dnat_ip6_port", "ip6 dnat to [address]:port", "ip6", _chain(
            "tcp dport 443 dnat to [2001:db8:1::10]:8443", **NAT_PRE)),
        Item("dnat_named_map", "dnat to a named map", "ip",
             "map m { type ipv4_addr : ipv4_addr; elements = { 192.0.2.1 : 198.51.100.1 } }\n"
             + _chain("dnat to ip daddr map @m", **NAT_PRE)),
        Item("dnat_anon_map", "dnat to an anonymous map", "ip", _chain(
            "dnat to tcp dport map { 80 : 192.0.2.1, 81 : 192.0.2.2 }", **NAT_PRE)),
        Item("dnat_concat_map", "dnat to address . port from an anonymous map", "ip", _chain(
            "dnat ip to tcp dport map { 80 : 192.0.2.1 . 8080 }", **NAT_PRE)),
        Item("dnat_two_maps", "dnat address and port from two anonymous maps", "ip", _chain(
            "dnat to tcp dport map { 1000 : 192.0.2.1, 2000 : 192.0.2.2 } : tcp dport map "
            "{ 1000 : 1234, 2000 : 2345 }", **NAT_PRE)),
        Item("masq", "masquerade, with port range and flags", "ip", _chain(
            "masquerade\nmeta l4proto tcp masquerade to :1024-2048 random,persistent",
            **NAT_POST)),
        Item("redirect", "redirect to a port", "ip", _chain(
            "tcp dport 80 redirect to :8080", **NAT_PRE)),
    ],
    "dynset": [
        Item("dynset_limit", "set update with a limit (a meter)", "ip",
             "set m { type ipv4_addr; size 65535; flags dynamic; }\n"
             + _chain("tcp dport 22 update @m { ip saddr limit rate over 20/second } drop")),
        Item("meter", "meters (a limit; a concatenation with a timeout and a size)", "ip",
             _chain("tcp dport 22 meter m { ip saddr limit rate 10/second } accept\n"
                    "meter m2 size 1024 { ip saddr . tcp dport timeout 10s counter }\n"
                    "meter m3 { ip saddr quota over 10 mbytes } drop")),
        Item("dynset_multi", "set update with counter and quota", "ip",
             "set m { type ipv4_addr; flags dynamic,timeout; timeout 1m; }\n"
             + _chain("add @m { ip saddr timeout 10s counter quota over 10 mbytes }")),
        Item("dynset_ctcount", "set update with ct count", "ip",
             "set m { type ipv4_addr; size 1000; flags dynamic; }\n"
             + _chain("update @m { ip saddr ct count over 5 } drop")),
        Item("dynset_concat", "set update keyed by a concatenation", "ip",
             "set m { type ipv4_addr . inet_service; flags dynamic; }\n"
             + _chain("add @m { ip saddr . tcp dport counter }")),
        Item("set_comments", "set and element comments", "ip",
             'set s { type ipv4_addr; comment "blocked hosts"; '
             'elements = { 192.0.2.1 comment "one", 192.0.2.2 } }\n'
             + _chain("ip saddr @s drop")),
        Item("set_elem_counter", "set elements with counters", "ip",
             "set s { type ipv4_addr; counter; elements = { 192.0.2.1 } }\n"
             + _chain("ip saddr @s accept")),
    ],
    "objects": [
        Item("obj_counter", "named counter and reference", "inet",
             "counter k { }\n" + _chain('counter name "k"')),
        Item("obj_quota", "named quota and reference", "inet",
             "quota q { over 10 mbytes }\n" + _chain('quota name "q" drop')),
        Item("obj_limit", "named limit (packets) and reference", "inet",
             "limit l { rate 10/second }\n" + _chain('limit name "l" accept')),
        Item("obj_limit_bytes", "named limit in bytes", "inet",
             "limit l { rate over 1 mbytes/second burst 2 mbytes }\n"
             + _chain('limit name "l" drop')),
        Item("obj_ct_helper", "ct helper object and ct helper set", "ip",
             'ct helper ftp { type "ftp" protocol tcp; }\n'
             + _chain('tcp dport 21 ct helper set "ftp"', "prerouting")),
        Item("obj_ct_timeout", "ct timeout object and ct timeout set", "ip",
             "ct timeout tt { protocol tcp; l3proto ip; policy = { established: 100 }; }\n"
             + _chain('ct timeout set "tt"', "prerouting", prio="-300")),
        Item("obj_ct_expect", "ct expectation object and ct expectation set", "ip",
             "ct expectation e { protocol tcp; dport 21; timeout 1s; size 2; l3proto ip; }\n"
             + _chain('ct expectation set "e"', "prerouting")),
        Item("obj_synproxy", "synproxy object and reference", "ip",
             "synproxy sp { mss 1460; wscale 7; timestamp sack-perm; }\n"
             + _chain('tcp dport 80 synproxy name "sp"')),
        Item("ct_helper_map", "ct helper set from a map", "ip",
             'ct helper ftp { type "ftp" protocol tcp; }\n'
             + _chain('ct helper set tcp dport map { 21 : "ftp" }', "prerouting")),
    ],
    "values": [
        Item("bitwise_mangle", "meta/ct set with &, |, ^", "ip", _chain(
            "meta mark set meta mark | 0x4000\nmeta mark set meta mark ^ 0x4000\n"
            "meta mark set meta mark & 0xff\nct mark set ct mark | 0x1")),
        Item("bitwise_match", "bitwise matches on meta, ct and payload", "ip", _chain(
            "meta mark & 0xff == 0x1\nct mark & 0xf != 0x0\n"
            "ip saddr & 255.255.0.255 == 192.0.0.1")),
        Item("shift", "shifts (<<, >>)", "ip", _chain(
            "meta mark set meta mark << 8\nmeta mark set meta mark >> 8")),
        Item("numgen_vmap", "numgen and jhash keys of verdict maps", "ip", _chain(
            "numgen inc mod 2 vmap { 0 : accept, 1 : drop }\n"
            "jhash ip saddr mod 2 vmap { 0 : accept, 1 : drop }", "prerouting")),
        Item("numgen_hash", "numgen, jhash, symhash values", "ip", _chain(
            "meta mark set numgen random mod 10 offset 100\n"
            "meta mark set jhash ip saddr . ip daddr mod 8 seed 0xdead\n"
            "meta mark set symhash mod 4 offset 10", "prerouting")),
        Item("raw_payload", "raw payloads @ll, @nh, @th", "inet", _chain(
            "@ll,0,16 0x1\n@nh,96,32 0xc0000201\n@th,16,16 22")),
        Item("mangle_maps", "meta/ct set from anonymous maps (mark, priority, zone)", "inet",
             _chain("meta mark set tcp dport map { 22 : 0x1, 23 : 0x2 }\n"
                    "meta priority set tcp dport map { 22 : 1:2 }\n"
                    "ct zone set meta mark map { 1 : 2 }\n"
                    "ct mark set ip saddr map { 192.0.2.1 : 0x5 }", "prerouting", prio="-300")),
        Item("icmp_inet", "icmp and icmpv6 in inet (dependency hidden), device groups", "inet",
             _chain("icmp type echo-request\nicmp code 1\nicmpv6 code 1\n"
                    "meta iifgroup 0\nmeta oifgroup { 0, 3 }")),
        Item("bitfield_sets", "sets of fields of part of a byte", "inet", _chain(
            "ip dscp { cs1, af11 }\nip6 ecn { ect0, ce } drop")),
        Item("one_elem_sets", "one-element anonymous sets (compared as the element)", "inet",
             _chain('tcp dport != { 22 }\nip saddr { 192.0.2.0/24 }\ntcp flags { syn }\n'
                    'iifname { "lo" }\nct state { established } accept')),
        Item("icmp_fields", "icmp fields of some message types (nft's type dependency)", "ip",
             _chain("icmp id 5\nicmp sequence 6\nicmp gateway 5\nicmp mtu 1400\n"
                    "icmp type echo-request icmp id 7")),
        Item("icmpv6_fields", "icmpv6 fields of some message types", "ip6",
             _chain("icmpv6 mtu 1280\nicmpv6 max-delay 5\nicmpv6 id 5")),
        Item("l4_headers", "dccp, igmp, udplite, comp header fields", "inet", _chain(
            "dccp type request\ndccp type { ack, reset }\nudplite csumcov 8\ncomp cpi 5\n"
            "igmp type membership-query\nigmp mrt 10")),
        Item("icmpv6_types", "icmpv6 type names", "ip6", _chain(
            "icmpv6 type { nd-router-solicit, nd-router-advert, mld-listener-query,"
            " echo-request } accept")),
    ],
    "headers": [
        Item("exthdr", "ip6 extension headers (exists, byte fields)", "inet", _chain(
            "exthdr frag exists drop\nrt type 0 drop\nhbh nexthdr 6 drop\n"
            "exthdr dst missing accept")),
        Item("exthdr_bits", "ip6 extension header bit fields", "ip6", _chain(
            "frag more-fragments 1 drop\nfrag frag-off 10-20 drop\nfrag reserved2 { 1, 2 }\n"
            "frag frag-off != 3")),
        Item("exthdr_rt", "routing headers (srh, rt0), mobility header types", "inet", _chain(
            "srh last-entry 2\nsrh flags 3\nsrh tag 5\nsrh sid[2] 2001:db8::1\n"
            "rt0 addr[1] 2001:db8::2\nmh type { home-test, binding-update }")),
        Item("tcp_option", "tcp options", "inet", _chain(
            "tcp option maxseg size 1400 accept\ntcp option sack-perm exists accept")),
        Item("tcp_option_more", "tcp options sack0-3, mptcp subtype, fastopen, md5sig", "inet",
             _chain("tcp option sack0 left 1\ntcp option sack1 left 1\n"
                    "tcp option sack3 right 2\ntcp option mptcp subtype { 1, 2 }\n"
                    "tcp option fastopen exists\ntcp option md5sig missing drop\n"
                    "tcp option sack exists")),
        Item("tcp_option_raw", "raw tcp options (@kind,offset,length; kind exists, missing)",
             "inet", _chain("tcp option @254,16,8 1 accept\ntcp option 254 exists accept\n"
                            "tcp option @254,16,16 0x102 drop\ntcp option 253 missing drop\n"
                            "tcp option @30,0,8 3 drop\ntcp option @254,16,8 { 1, 5 } drop")),
        Item("sctp_chunk", "sctp chunks (exists, fields)", "inet", _chain(
            "sctp chunk data exists\nsctp chunk init num-inbound-streams 1\n"
            "sctp chunk abort missing drop\nsctp chunk sack a-rwnd 5\nsctp chunk asconf seqno 5")),
        Item("tcp_option_set", "tcp option maxseg size set", "inet", _chain(
            "tcp flags syn tcp option maxseg size set 1360", "forward")),
        Item("ip_option", "ip options", "ip", _chain("ip option rr exists drop")),
        Item("fib", "fib lookups (type, oif, missing, exists)", "inet", _chain(
            "fib daddr type local accept\nfib saddr . iif oif missing drop\n"
            "fib daddr oif exists accept", "prerouting")),
        Item("rt", "routing expressions (nexthop, mtu)", "ip", _chain(
            "rt nexthop 192.0.2.1 accept\nrt mtu > 1400 accept", "output")),
        Item("rt_classid", "rt classid and meta rtclassid (realms, rt_realms names)", "ip",
             _chain("rt classid 10 accept\nmeta rtclassid cosmos\nrt classid { 1, 2 }",
                    "output")),
        Item("rt_ipsec", "rt ipsec exists / missing (the route's xfrm state)", "inet", _chain(
            "rt ipsec exists accept\nrt ipsec missing drop", "output")),
        Item("meta_more", "meta day, sdif, sdifname, ipsec, random, iifkind, iif", "inet",
             _chain('meta day "Monday"\nmeta day { "Monday", "Friday" }\nmeta sdif "lo"\n'
                    'meta sdifname "lo"\nmeta ipsec exists\nmeta ipsec missing\n'
                    'meta random > 10\nmeta iifkind "veth"\niif "lo"')),
        Item("meta_time", "meta time, meta hour (local time, as nft reads it)", "inet", _chain(
            'meta time < "2026-01-01"\nmeta time "2026-01-01 10:00:05"-"2026-02-01"\n'
            'meta hour "10:00"-"12:00"\nmeta hour "10:00:30"\nmeta hour < "17:00"')),
        Item("listing_forms", "ct expiration, quota used, ether type 8021q, fib oif names",
             "inet", _chain('ct expiration < 1m\nquota 100 bytes used 10 bytes\n'
                            'ether type vlan\nfib saddr . mark . iif oif "lo"')),
        Item("socket", "socket expressions", "inet", _chain(
            "socket transparent 1 accept\nsocket mark 0x5 accept\nsocket wildcard 0 accept",
            "prerouting")),
        Item("osf", "osf (name, version, ttl loose/skip)", "inet", _chain(
            'osf name "Linux" accept\nosf ttl loose name "Linux" accept\n'
            'osf ttl skip version "Linux:3.0"\nosf name { "Linux", "Windows" } drop')),
        Item("ipsec", "ipsec in (reqid, addresses)", "ip", _chain(
            "ipsec in reqid 1 accept\nipsec in ip saddr 192.0.2.1 accept")),
        Item("ipsec_more", "ipsec spnum, spi, ip6 addresses, ranges", "inet", _chain(
            "ipsec in spnum 1 spi 5\nipsec in ip6 daddr 2001:db8::/32\n"
            "ipsec in reqid 1-5 drop\nipsec in spi { 1, 2 }")),
        Item("ipsec_out", "ipsec out", "ip", _chain(
            "ipsec out reqid 7 accept\nipsec out ip daddr 192.0.2.0/24", "output")),
    ],
    "statements": [
        Item("payload_set", "header fields set, checksums fixed (ip, tcp, udp)", "ip", _chain(
            "ip ttl set 64\nip dscp set cs1\nip ecn set ce\ntcp dport set 80\n"
            "udp sport set 53\nip daddr set 192.0.2.1\nip saddr set ip daddr\n"
            "tcp flags set syn\nip protocol set 17\nip version set 4", "prerouting")),
        Item("payload_set6", "ip6 header fields set", "ip6", _chain(
            "ip6 hoplimit set 1\nip6 dscp set af11\nip6 flowlabel set 5\n"
            "ip6 daddr set 2001:db8::1\nip6 saddr set ip6 daddr\nudp dport set 53",
            "prerouting")),
        Item("payload_set_inet", "header fields set in inet (th, ttl 0)", "inet", _chain(
            "th dport set 80\nip ttl set 0\nip protocol set 6", "prerouting")),
        Item("payload_set_l4", "icmp, sctp, dccp, udplite fields set", "ip", _chain(
            "icmp type echo-request icmp sequence set 1\nicmp id set 7\n"
            "sctp sport set 1\nsctp vtag set 5\ndccp dport set 22\ndccp type set request\n"
            "udplite dport set 53\nudplite csumcov set 8", "prerouting")),
        Item("payload_set_icmpv6", "icmpv6 fields set", "ip6", _chain(
            "icmpv6 type echo-request icmpv6 id set 1\nicmpv6 sequence set 2",
            "prerouting")),
        Item("payload_set_ll", "ether and vlan fields set (bridge)", "bridge", _chain(
            "ether saddr set 00:11:22:33:44:55\nvlan id set 5\nether type vlan vlan id 6",
            "prerouting")),
        Item("log", "log with every option", "inet", _chain(
            'log prefix "in: " level info flags all\nlog level audit\n'
            "log group 2 snaplen 64 queue-threshold 2\nlog flags tcp sequence,options")),
        Item("reject", "every reject form", "inet", _chain(
            "reject\nreject with icmp host-unreachable\nreject with icmpv6 admin-prohibited\n"
            "reject with icmpx admin-prohibited\nmeta l4proto tcp reject with tcp reset")),
        Item("reject_ip", "reject in ip", "ip", _chain("reject with icmp net-prohibited")),
        Item("dup", "dup to an address and device", "ip", _chain(
            'dup to 192.0.2.1 device "lo"', "prerouting")),
        Item("fwd", "fwd to a device (netdev)", "netdev",
             'chain c { type filter hook ingress device "lo" priority 0; policy accept;\n'
             'fwd to "lo"\n}'),
        Item("notrack", "notrack", "ip", _chain("notrack", "prerouting", prio="-300")),
        Item("ct_event", "ct event set", "ip", _chain(
            "ct event set new,related\nct event set destroy", "prerouting", prio="-300")),
        Item("ct_set", "ct set mark, zone, label", "ip", _chain(
            "ct mark set 0x1\nct zone set 1\nct label set 1", "prerouting", prio="-300")),
        Item("meta_set", "meta set mark, priority, pkttype, nftrace", "ip", _chain(
            "meta mark set 0x1\nmeta priority set 1:2\nmeta pkttype set host\n"
            "meta nftrace set 1", "prerouting")),
        Item("synproxy", "inline synproxy", "ip", _chain(
            "tcp dport 80 synproxy mss 1460 wscale 7 timestamp sack-perm")),
        Item("tproxy", "tproxy", "ip", _chain(
            "meta l4proto tcp tproxy to 192.0.2.1:80", "prerouting", prio="-150")),
        Item("limits", "limits in every unit", "ip", _chain(
            "limit rate 10/second\nlimit rate 10/minute\nlimit rate 10/hour\n"
            "limit rate 10/day\nlimit rate 10/week\nlimit rate over 10/second burst 20 packets\n"
            "limit rate 10 kbytes/second\nlimit rate over 1 mbytes/minute burst 2 mbytes")),
    ],
}

# Groups whose namespaces need cgroup2 at /sys/fs/cgroup (this host has cgroup v1 there):
# each command runs with it mounted in its own mount namespace, and the cgroups named here
# are made first (the hierarchy is global: removed after, one run at a time).
CGROUP2_GROUPS = {"cgroupv2": ["nfkit-vocab", "nfkit-vocab/a"]}
GROUPS["cgroupv2"] = [
    Item("socket_cgroupv2", "socket cgroupv2 (a cgroup2 hierarchy at /sys/fs/cgroup)", "inet",
         _chain('socket cgroupv2 level 1 "nfkit-vocab" accept\n'
                'socket cgroupv2 level 2 != "nfkit-vocab/a" drop\n'
                'socket cgroupv2 level 1 { "nfkit-vocab", "nfkit-vocab/a" } drop', "output")),
]

ITEMS = [i for g in GROUPS.values() for i in g]


def table_text(item: Item) -> str:
    return f"table {item.family} {table_name(item)} {{\n{item.body}\n}}\n"


def table_name(item: Item) -> str:
    return "v_" + item.id
