"""Anonymous sets' user data equal to nft's own load, byte for byte (nfkit.nftables.setudata).

nft 1.0.6 keeps in each anonymous set's NFTA_SET_USERDATA the key's byte order, the
key's `typeof` (the expression the set was made from), a map's data byte order, data
typeof and data-interval flag, an interval set's merge flag.  Only nft's printing reads
them, but the kernel state after an nfkit load is nft's only if they are the same
bytes: each ruleset below is loaded by `nft -f` and by `nfkit rules load` in one
namespace, one after the other, and every anonymous set's table, name and user data
compared.  Named sets and maps declared with `type` likewise (a concatenation's empty
typeof, a map's data byte order and data-interval flag, `auto-merge`).  (The corpus of
.nft files is compared the same way in test_nfttext.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import NFKIT, anonymous_set_userdata, set_userdata

# one rule per kind of key nft records, each in its own set
LOOKUPS = [
    "tcp dport { 22, 80 }", "ip saddr { 192.0.2.1, 192.0.2.7 }", "meta l4proto { tcp, udp }",
    'meta iifname { "a", "b" }', "meta mark { 1, 2 }", "meta nfproto { ipv4, ipv6 }",
    "meta protocol { ip, ip6 }", "ct state { new, established }", "ct mark { 1, 2 }",
    "ct original ip saddr { 192.0.2.1, 192.0.2.2 }", "ct direction { original, reply }",
    "ct status { snat, dnat }", "ct zone { 1, 2 }", "ip6 nexthdr { tcp, udp }",
    "tcp flags { syn, ack }", "icmp type { echo-request, echo-reply }",
    "ether saddr { 00:11:22:33:44:55, 00:11:22:33:44:66 }", "ip dscp { cs1, af11 }",
    "ip6 daddr { 2001:db8::1, 2001:db8::2 }", "udp dport { 53, 123 }",
    "ip6 hoplimit { 1, 255 }", "ip ttl { 1, 64 }", "meta skuid { 0, 1 }", "meta cpu { 0, 1 }",
    "ip saddr . tcp dport { 192.0.2.1 . 22, 192.0.2.2 . 80 }",
    'meta iifname . ip saddr { "a" . 192.0.2.1, "b" . 192.0.2.2 }',
    "fib daddr type { local, broadcast }", "socket transparent { 0, 1 }",
    'osf name { "Linux", "Windows" }', "meta pkttype { host, broadcast }",
    "numgen inc mod 2 { 0, 1 }", "th dport { 22, 80 }", "sctp dport { 22, 80 }",
    "ip saddr { 192.0.2.0/24, 198.51.100.1 }", "tcp dport { 1-100, 443 }",
]
MAPS = [
    "tcp dport vmap { 22 : accept, 80 : drop }",
    "tcp dport vmap { 1-100 : accept, 200-300 : drop }",
    "ip saddr . tcp dport vmap { 192.0.2.1 . 22 : accept }",
    "meta mark set tcp dport map { 22 : 1, 80 : 2 }",
    "meta mark set tcp dport map { 1-100 : 1, 200 : 2 }",
    "meta mark set ip saddr . tcp dport map { 192.0.2.1 . 22 : 1 }",
    "ct mark set ct state map { new : 1, established : 2 }",
    'ct helper set tcp dport map { 21 : "ftp" }',
    "meta l4proto . th dport { tcp . 22, udp . 53 } accept",
]
NAT = [
    "meta l4proto tcp dnat to ip saddr map { 192.0.2.1 : 198.51.100.1 . 80 }",
    "dnat to tcp dport map { 80 : 198.51.100.1, 1000-2000 : 198.51.100.2 }",
]


def _ruleset() -> str:
    rules = [f"\t\t{r} accept\n" for r in LOOKUPS] + [f"\t\t{r}\n" for r in MAPS]
    return ("table inet t {\n\tct helper ftp {\n\t\ttype \"ftp\" protocol tcp\n\t}\n"
            "\tchain c {\n\t\ttype filter hook input priority 0; policy accept;\n"
            + "".join(rules) + "\t}\n}\n"
            "table ip nat {\n\tchain p {\n\t\ttype nat hook prerouting priority dstnat;\n"
            + "".join(f"\t\t{r}\n" for r in NAT) + "\t}\n}\n")


@pytest.mark.kernel
def test_anonymous_sets_carry_nfts_user_data(netns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "r.nft"
    f.write_text(_ruleset())
    netns.run(["nft", "-f", str(f)])
    theirs = anonymous_set_userdata(netns)
    # as many as the file makes (an object map is "__objmap%d" for nft)
    assert len(theirs) == len(LOOKUPS) + len(MAPS) + len(NAT)
    assert any(" __objmap0 " in line for line in theirs)
    netns.run("nft flush ruleset")
    netns.run([*NFKIT, "rules", "load", str(f)])
    assert anonymous_set_userdata(netns) == theirs
    # and from nft's JSON listing of it, as `nft -j -f` loads it
    listing = tmp_path / "r.json"
    listing.write_text(netns.run("nft -j list ruleset").stdout)
    netns.run("nft flush ruleset")
    netns.run(["nft", "-j", "-f", str(listing)])
    theirs = anonymous_set_userdata(netns)
    netns.run("nft flush ruleset")
    netns.run([*NFKIT, "rules", "load", str(listing)])
    assert anonymous_set_userdata(netns) == theirs


NAMED = """table inet t {
\tset svc { type ipv4_addr . inet_service; elements = { 192.0.2.1 . 22 }; }
\tset plain { type ipv4_addr; comment "hi"; }
\tset iv { type ipv4_addr; flags interval; auto-merge; elements = { 192.0.2.0/24 }; }
\tset iv2 { type ipv4_addr; flags interval; comment "no merge"; }
\tmap vm { type inet_service : verdict; elements = { 22 : accept }; }
\tmap pm { type inet_service : ipv4_addr; elements = { 22 : 192.0.2.1 }; }
\tmap cm { type inet_service : ipv4_addr . inet_service; elements = { 22 : 192.0.2.1 . 80 }; }
\tmap mm { type ipv4_addr . inet_service : mark; comment "m"; }
\tmap im { type ipv4_addr : mark; flags interval; }
}
"""


@pytest.mark.kernel
def test_named_sets_carry_nfts_user_data(netns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "named.nft"
    f.write_text(NAMED)
    netns.run(["nft", "-f", str(f)])
    theirs = set_userdata(netns)
    assert len(theirs) == 9
    listing = tmp_path / "named.json"
    listing.write_text(netns.run("nft -j list ruleset").stdout)
    netns.run("nft flush ruleset")
    netns.run([*NFKIT, "rules", "load", str(f)])
    assert set_userdata(netns) == theirs
    # nft's JSON listing leaves `auto-merge` out (nft 1.0.6 cannot load that listing back
    # itself: it refuses the concatenated map key): nfkit's load of it is nft's text load
    # but for that flag
    netns.run("nft flush ruleset")
    netns.run([*NFKIT, "rules", "load", str(listing)])
    merge = "020401000000"  # NFTNL_UDATA_SET_MERGE_ELEMENTS = 1
    assert set_userdata(netns) == [line.replace(merge, "") for line in theirs]
