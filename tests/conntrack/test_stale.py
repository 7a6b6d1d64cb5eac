"""conntrack.stale: a removed address's NAT bindings flushed, fed by real route events."""

from __future__ import annotations

import sys

import pytest

from nfkit.conntrack.model import Status
from nfkit.conntrack.stale import Uplink, flush_stale, stale_filters
from nfkit.conntrack.table import ConntrackTable
from nfkit.route.rtnl import RouteEvents, Rtnl

RULES = """
table inet nat {
  chain post {
    type nat hook postrouting priority srcnat;
    udp dport 5001 snat ip to 198.51.100.9
    udp dport 5002 snat ip to 198.51.100.1
    udp dport 5001 snat ip6 to 2001:db8:2::9
    udp dport 5002 snat ip6 to 2001:db8:2::1
  }
}
"""

SEND = ("import socket, sys\n"
        "for host in ('198.51.100.2', '2001:db8:2::2'):\n"
        "    fam = socket.AF_INET6 if ':' in host else socket.AF_INET\n"
        "    for port in (5001, 5002):\n"
        "        for sport in range(40000, 40005):\n"
        "            s = socket.socket(fam, socket.SOCK_DGRAM); s.bind(('', sport))\n"
        "            s.sendto(b'x', (host, port)); s.close()\n")


def ct_lines(ns) -> list[str]:  # type: ignore[no-untyped-def]
    return [x for x in ns.run("conntrack -L -p udp").stdout.splitlines() if "dport=500" in x]


@pytest.mark.kernel
def test_removed_snat_address_flushes_only_its_bindings(routed_lab) -> None:  # type: ignore[no-untyped-def]
    client, fw = routed_lab["client"], routed_lab["fw"]
    fw.run("ip addr add 198.51.100.9/24 dev eth1")
    fw.run("ip addr add 2001:db8:2::9/64 dev eth1 nodad")
    fw.run(["nft", "-f", "-"], input=RULES)
    client.run([sys.executable, "-c", SEND])
    before = ct_lines(fw)
    assert len(before) == 20 and sum("dst=198.51.100.9" in x or "dst=2001:db8:2::9" in x
                                     for x in before) == 10
    with fw.enter():
        events = RouteEvents()
    try:
        fw.run("ip addr del 198.51.100.9/24 dev eth1")
        fw.run("ip addr del 2001:db8:2::9/64 dev eth1")
        seen = list(events.wait(0.5))
    finally:
        events.close()
    filters = [f for e in seen for f in stale_filters(*e)]
    assert len(filters) == 2
    assert all(f.status_set == Status.SRC_NAT for f in filters)
    with fw.enter(), ConntrackTable() as table:
        result = flush_stale(table, filters)
    after = ct_lines(fw)
    assert result.deleted == 10
    assert len(after) == 10 and all("dport=5002" in x for x in after)


@pytest.mark.kernel
def test_uplink_down_flushes_the_flows_marked_for_it(routed_lab) -> None:  # type: ignore[no-untyped-def]
    client, fw, server = routed_lab["client"], routed_lab["fw"], routed_lab["server"]
    fw.run(["nft", "add table inet m; add chain inet m f { type filter hook forward priority 0; }; "
            "add rule inet m f udp dport 5001 ct mark set 0x100; "
            "add rule inet m f udp dport 5002 ct mark set 0x200"])
    client.run([sys.executable, "-c", SEND])
    with fw.enter(), Rtnl() as rt:
        eth1 = rt.link("eth1").index
        events = RouteEvents()
    uplinks = [Uplink(eth1, 0x100, 0xF00), Uplink(eth1 + 1000, 0x200, 0xF00)]
    try:
        server.run("ip link set eth0 down")  # the fw's eth1 loses its carrier
        seen = list(events.wait(0.5))
    finally:
        events.close()
    filters = [f for e in seen for f in stale_filters(*e, uplinks=uplinks)]
    assert filters and all(f.mark == 0x100 for f in filters)
    with fw.enter(), ConntrackTable() as table:
        flush_stale(table, filters)
    after = ct_lines(fw)
    assert len(after) == 10 and all("dport=5002" in x for x in after)
