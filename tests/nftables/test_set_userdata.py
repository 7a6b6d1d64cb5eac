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

import json
import sys
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
    # extension headers and options, hashes, raw payloads (nft keeps those raw but for
    # th's ports, also where it lists a named field)
    "tcp option maxseg size { 1000, 1460 }", "tcp option sack1 left { 1, 2 }",
    "tcp option timestamp tsval { 1, 2 }", "frag id { 1, 2 }", "rt type { 0, 2 }",
    "hbh nexthdr { 6, 17 }", "dst nexthdr { 6, 17 }", "mh type { 1, 2 }",
    "rt0 addr[1] { 2001:db8::1, 2001:db8::2 }", "srh flags { 1, 2 }", "rt seg-left { 1, 2 }",
    "ip option lsrr ptr { 1, 2 }", "ip option ra value { 1, 2 }",
    "sctp chunk init init-tag { 1, 2 }", "jhash ip saddr mod 4 seed 0xdead offset 10 { 10, 11 }",
    "symhash mod 8 offset 3 { 3, 4 }", "jhash ip saddr . tcp dport mod 2 { 0, 1 }",
    "@nh,96,32 { 0xc0000201, 0xc0000202 }", "@th,16,16 { 22, 80 }", "@th,0,16 { 22, 80 }",
    "@th,32,32 { 1, 2 }", "@ll,0,16 { 1, 2 }", "@nh,0,8 { 0x45, 0x46 }",
    "meta l4proto tcp @th,16,16 { 22, 80 }", "vlan id { 1, 2 }",
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
    "meta mark set jhash ip saddr mod 2 map { 0 : 1, 1 : 2 }",
    "meta mark set symhash mod 2 map { 0 : 1, 1 : 2 }",
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


# Named sets and maps declared with `typeof`: nft writes the expressions' typeof records
# (and their byte orders) where a `type` set has the datatypes' alone
TYPEOF = """table inet t {
\tset a { typeof ip saddr; elements = { 192.0.2.1 }; }
\tset b { typeof meta mark; }
\tset c { typeof ip saddr . tcp dport; elements = { 192.0.2.1 . 22 }; }
\tset d { typeof meta l4proto . th dport; }
\tset e { typeof meta iifname . ip saddr . tcp dport; }
\tset f { typeof ip6 saddr . ip6 daddr; flags interval; }
\tset g { typeof ip6 daddr; flags interval; auto-merge; comment "x"; }
\tset h { typeof ct original ip saddr; }
\tset i { typeof ct state; flags interval; }
\tset j { typeof ip saddr; flags dynamic, timeout; timeout 1m; size 1024; }
\tset k { typeof ip dscp; }
\tset l { typeof ip daddr . ip dscp . ip ecn; }
\tset m { typeof fib daddr type; }
\tset n { typeof ether saddr; }
\tset o { typeof tcp flags; }
\tset p { typeof icmpv6 type; }
\tset q { typeof meta skuid; }
\tset r { typeof ct direction; }
\tmap map0 { typeof ip saddr : meta mark; elements = { 192.0.2.1 : 7 }; }
\tmap map1 { typeof ip saddr . tcp dport : ip daddr; }
\tmap map2 { typeof tcp dport : verdict; elements = { 22 : accept }; }
\tmap map3 { typeof meta iifname : ct mark; }
\tmap map4 { typeof ip saddr : ip daddr . tcp dport; }
\tmap map5 { typeof ip saddr . tcp dport : verdict; }
\tmap map6 { typeof ip saddr : verdict; flags interval; }
\tmap map7 { typeof meta mark : ip6 daddr; }
\tmap map8 { typeof tcp dport : meta priority; }
\tmap map9 { typeof meta mark : meta mark; flags interval; }
\tset int1 { typeof ip ttl; elements = { 1, 64 }; }
\tset int2 { typeof meta cpu; elements = { 0, 1 }; }
\tset int3 { typeof ct zone . ip saddr; elements = { 3 . 192.0.2.1 }; }
\tset int4 { typeof vlan id; elements = { 7 }; }
\tset int5 { typeof ip length . tcp dport; flags interval; elements = { 40 . 22 }; }
\tmap int6 { typeof ip ttl : meta mark; elements = { 3 : 4 }; }
}
"""
# integer keys of the width of their field: nft's JSON lists them as "integer", which
# nft cannot load back (nor can nfkit: no width)
_NO_JSON = {"map4", "int1", "int2", "int3", "int4", "int5", "int6"}


def _set_state(ns) -> tuple[list[str], str]:  # type: ignore[no-untyped-def]
    return set_userdata(ns), ns.run("nft list ruleset").stdout


def _nft_then_nfkit(ns, path: Path, nft: tuple[str, ...] = ("nft", "-f")  # type: ignore[no-untyped-def]
                    ) -> tuple[tuple[list[str], str], tuple[list[str], str]]:
    """`_set_state` after nft's load of ``path`` and after nfkit's (in an empty ruleset
    each)."""
    states = []
    for argv in (nft, (*NFKIT, "rules", "load")):
        ns.run("nft flush ruleset")
        ns.run([*argv, str(path)])
        states.append(_set_state(ns))
    return states[0], states[1]


@pytest.mark.kernel
def test_typeof_sets_carry_nfts_user_data(netns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "typeof.nft"
    f.write_text(TYPEOF)
    theirs, ours = _nft_then_nfkit(netns, f)
    assert len(theirs[0]) == TYPEOF.count("typeof")
    assert "typeof ip saddr . tcp dport : verdict" in theirs[1]
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]
    # nft 1.0.6's JSON has the datatypes alone (and nft cannot load back its listing
    # of a map with concatenated data: that map is left out)
    doc = json.loads(netns.run("nft -j list ruleset").stdout)
    doc["nftables"] = [o for o in doc["nftables"]
                       if (o.get("map") or o.get("set") or {}).get("name") not in _NO_JSON]
    listing = tmp_path / "typeof.json"
    listing.write_text(json.dumps(doc))
    theirs, ours = _nft_then_nfkit(netns, listing, ("nft", "-j", "-f"))
    # nft 1.0.6's JSON reader drops a set's comment (nfkit keeps it): the one difference
    comment = "07027800"  # NFTNL_UDATA_SET_COMMENT "x"
    assert [line.removesuffix(comment) for line in ours[0]] == theirs[0]
    assert ours[1].replace('\t\tcomment "x"\n', "") == theirs[1]
    # an interval set of a host-order integer (nft turns its keys around): refused whole
    f.write_text("table inet t {\n\tset s { typeof meta length; flags interval; "
                 "elements = { 100-200 }; }\n}\n")
    netns.run("nft flush ruleset")
    r = netns.run([*NFKIT, "rules", "load", str(f)], check=False)
    assert r.returncode == 2 and "host-order integer" in r.stderr, r.stderr
    assert netns.run("nft list ruleset").stdout == ""


@pytest.mark.kernel
def test_sets_of_every_datatype_carry_nfts_byte_order(netns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from nfkit.nftables.types import T

    # every datatype nft 1.0.6 takes as a set's `type` (boolean, ct_dir, inet_proto ...
    # have no byte order for nft: 0 in the user data)
    refused = {"integer", "hinteger", "string", "verdict", "time", "invalid", "cgroupv2",
               "ct_event", "ct_label", "date", "day", "hour", "pkttype"}
    names = sorted(set(T) - refused)
    f = tmp_path / "types.nft"
    f.write_text("table inet t {\n" + "".join(f"\tset s{i} {{ type {n}; }}\n"
                                             for i, n in enumerate(names)) + "}\n")
    netns.run(["nft", "-f", str(f)])
    theirs = set_userdata(netns)
    assert len(theirs) == len(names) > 30
    netns.run("nft flush ruleset")
    netns.run([*NFKIT, "rules", "load", str(f)])
    assert set_userdata(netns) == theirs


# Each set the kernel holds: its name and every attribute but the table and handle
_SET_STATE = r'''
from nfkit.netlink.codec import MessageWriter, iter_attrs
from nfkit.netlink.consts import NLM_F_REQUEST
from nfkit.nftables.expressions import A
from nfkit.nftables.listing import open_socket
from nfkit.nftables.messages import msg_type
a = A["set"]
w = MessageWriter(); w.begin(msg_type("getset"), NLM_F_REQUEST, family=0); w.end()
for m in open_socket().dump(w):
    d = {t: bytes(v) for t, v in iter_attrs(memoryview(m.attrs))}
    print(d.pop(a["name"]).rstrip(b"\0").decode(), sorted(
        (k, v.hex()) for k, v in d.items() if k not in (a["table"], a["handle"])))
'''

CONCATS = """table inet t {
\tset a { type ipv4_addr . inet_service; elements = { 192.0.2.1 . 22 }; }
\tset b { typeof ip saddr . tcp dport; }
\tset c { type ipv4_addr . inet_service; flags interval; elements = { 192.0.2.0/24 . 22-25 }; }
\tmap d { type ipv4_addr . inet_service : verdict; flags interval; elements = { 192.0.2.1 . 80 : accept }; }
\tmap e { type ipv4_addr . inet_service : mark; elements = { 192.0.2.1 . 80 : 3 }; }
\tset f { type ipv4_addr . ipv4_addr . inet_service; flags interval; }
\tset g { type ifname . ipv6_addr; flags interval; }
\tchain c {
\t\ttype filter hook input priority 0; policy accept;
\t\tip saddr . tcp dport { 192.0.2.1 . 22 } accept
\t\tip saddr . tcp dport vmap { 192.0.2.1 . 22 : accept }
\t\tmeta mark set ip saddr . tcp dport map { 192.0.2.1 . 22 : 1 }
\t\tip saddr . tcp dport @c accept
\t\tip saddr . tcp dport . ip daddr { 192.0.2.1 . 22 . 192.0.2.2 } accept
\t}
}
"""


@pytest.mark.kernel
def test_concatenated_sets_are_nfts_in_the_kernel(netns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A concatenation's set as nft creates it, every attribute: NFT_SET_CONCAT and the
    fields' widths only with intervals, each field its own width (a port's 2 bytes, not
    its register's 4); a hash of a concatenation has neither (nfkit sent both)."""
    f = tmp_path / "concat.nft"
    f.write_text(CONCATS)
    states = []
    for argv in (("nft", "-f"), (*NFKIT, "rules", "load")):
        netns.run("nft flush ruleset")
        netns.run([*argv, str(f)])
        states.append(sorted(netns.run([sys.executable, "-c", _SET_STATE]).stdout.splitlines()))
    assert len(states[0]) == 11  # 7 named, 4 anonymous
    assert states[1] == states[0]
