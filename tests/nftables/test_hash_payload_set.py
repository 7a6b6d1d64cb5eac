"""jhash/numgen results are host-order u32s; raw payload set (ARP mangling): against nft's own bytes."""

from __future__ import annotations

import re

from nfkit.lab import Namespace
from nfkit.nftables import run_commands
from nfkit.nftables.nfttext import load_nft

RULES = """table ip t {
  chain c { type filter hook prerouting priority -150; policy accept;
    jhash ct original ip saddr mod 64 seed 0x5eed { 1, 2, 40 } accept
    numgen inc mod 4 { 3, 1 } accept
  }
}
table arp a {
  chain o { type filter hook output priority 0; policy accept;
    @nh,112,32 3221225985 @nh,64,48 set 0x01005e7fc101
  }
}
"""


def netlink_dump(ns: Namespace) -> list[str]:
    out = ns.run(["nft", "--debug=netlink", "list", "ruleset"]).stdout
    # the bytes that must agree: set elements, the payload write and its value (nft picks
    # other registers and turns a one-element set into a cmp: not compared)
    return [re.sub(r"__set\d+", "__set", line.strip()) for line in out.splitlines()
            if "element" in line or "payload write" in line or "immediate reg 1" in line]


def test_hash_set_elements_and_payload_set_match_nft(netns: Namespace) -> None:
    netns.run(["nft", "-f", "-"], input=RULES)
    by_nft = netlink_dump(netns)
    netns.run(["nft", "flush", "ruleset"])
    with netns.enter():
        run_commands(list(load_nft(RULES, "rules")))
    by_nfkit = netlink_dump(netns)
    assert "element 00000028  : 0 [end]" in by_nft  # 40, as the kernel's host-order u32
    assert sorted(by_nfkit) == sorted(by_nft)
