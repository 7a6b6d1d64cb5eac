"""The bucket map of multihoming and the prefix sources, without a kernel."""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import replace
from pathlib import Path

from nfkit.nat66.uplinks import BUCKETS, UplinkState, buckets, prefix_of_addresses, prefix_of_file
from nfkit.route.rtnl import Address

P = ipaddress.IPv6Network("2001:db8:1::/48")


def up(mark: int, weight: int = 1, live: bool = True) -> UplinkState:
    return UplinkState(f"wan{mark}", mark, weight, ifindex=mark, running=live, outside=P)


def test_weights_share_the_buckets() -> None:
    shares = Counter(buckets([up(1, 3), up(2, 1)]).values())
    assert shares == {1: 48, 2: 16} and sum(shares.values()) == BUCKETS


def test_a_dead_uplinks_buckets_move_and_no_other() -> None:
    all_up = buckets([up(1), up(2), up(3)])
    one_down = buckets([up(1), up(2, live=False), up(3)])
    assert set(one_down.values()) == {1, 3}
    assert all(one_down[b] == m for b, m in all_up.items() if m != 2)  # the live keep theirs
    assert buckets([up(1), up(2), up(3)]) == all_up  # back: balancing as before
    assert buckets([up(1, live=False)]) == {}


def test_an_uplink_that_needs_a_prefix_is_not_live_without_one() -> None:
    assert not replace(up(1), outside=None).live
    assert replace(up(1), outside=None, needs_prefix=False).live  # masquerade


def test_prefix_sources(tmp_path: Path) -> None:
    f = tmp_path / "pd"
    assert prefix_of_file(f) is None
    f.write_text("# written by the DHCPv6 client\n2001:db8:3::/56 valid 3600\n")
    assert prefix_of_file(f) == ipaddress.IPv6Network("2001:db8:3::/56")
    addrs = [Address(2, ipaddress.ip_interface("2001:db8:a1::2/64")),
             Address(2, ipaddress.ip_interface("fe80::1/64"), scope=253),
             Address(2, ipaddress.ip_interface("2001:db8:3::1/48")),
             Address(3, ipaddress.ip_interface("2001:db8:4::1/40"))]
    assert prefix_of_addresses(2, addrs) == ipaddress.IPv6Network("2001:db8:3::/48")
    assert prefix_of_addresses(5, addrs) is None
