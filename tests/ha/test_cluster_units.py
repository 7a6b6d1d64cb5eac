"""The Cluster block (errors name file:line and the key), bucket ownership, membership rules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfkit.errors import InputError
from nfkit.ha import buckets
from nfkit.ha.cluster import nd_compensation
from nfkit.ha.conf import parse
from nfkit.ha.membership import Membership
from tests.ha.cluster_lab import cluster_conf
from tests.ha.stock import NFKIT


def conf_text(k: int = 1, n: int = 3, extra: str = "") -> str:
    return cluster_conf(Path("/tmp/nowhere"), k, n, extra=extra)


def test_the_cluster_block_is_read() -> None:
    c = parse(conf_text(2, 3), "ha.conf")
    cc = c.cluster
    assert cc is not None
    assert cc.this_node == 2 and sorted(cc.nodes) == [1, 2, 3]
    assert cc.me.address == "203.0.113.2" and cc.me.ports == (22000, 22999)
    assert (cc.inside.interface, cc.inside.address) == ("in0", "192.0.2.1")
    assert (cc.outside.interface, cc.outside.address) == ("out0", "198.51.100.1")
    assert (cc.buckets, cc.hash_seed, cc.heartbeat_interval, cc.dead_time) == (64, 0x5EED, 0.1, 0.4)
    assert [p.number for p in cc.peers] == [1, 3]


def test_ipv6_addresses_of_the_segments() -> None:
    cc = parse(cluster_conf(Path("/tmp/nowhere"), 1, 2, v6=True), "ha.conf").cluster
    assert cc is not None
    assert (cc.inside.address6, cc.outside.address6) == ("2001:db8:1::1", "2001:db8:2::1")
    only6 = cluster_conf(Path("/tmp/nowhere"), 1, 2, v6=True).replace("IPv4_address 192.0.2.1", "") \
        .replace("IPv4_address 198.51.100.1", "")
    cc = parse(only6, "ha.conf").cluster
    assert cc is not None and cc.inside.address is None and cc.outside.address6 == "2001:db8:2::1"
    for change, why in ((("IPv6_address 2001:db8:2::1", ""), "IPv6 on one segment only"),
                        (("IPv6_address 2001:db8:2::1", "IPv6_address 198.51.100.7"), "not an IPv6 address")):
        with pytest.raises(InputError, match=why):
            parse(cluster_conf(Path("/tmp/nowhere"), 1, 2, v6=True).replace(*change), "ha.conf")


def _ones_sum(message: bytes) -> int:
    total = sum(int.from_bytes(message[k:k + 2], "big") for k in range(0, len(message), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@given(st.binary(min_size=6, max_size=6), st.binary(min_size=6, max_size=6), st.binary(min_size=32, max_size=32))
def test_the_nd_rewrite_keeps_the_icmpv6_checksum(own: bytes, cluster: bytes, message: bytes) -> None:
    """An NS/NA whose reserved bytes 6-7 are zero and whose option's MAC (26-31) is ``own``: with
    the MAC replaced by ``cluster`` and bytes 6-7 by the compensation, the one's-complement sum
    (what the checksum covers, the pseudo-header unchanged) is the same."""
    before = message[:6] + bytes(2) + message[8:26] + own
    after = before[:6] + nd_compensation(own, cluster).to_bytes(2, "big") + before[8:26] + cluster
    assert _ones_sum(before) % 0xFFFF == _ones_sum(after) % 0xFFFF


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(("change", "key", "why"), [
    (("ThisNode 2", "ThisNode 7"), "ThisNode", "not one of the nodes"),
    (("PortRange 22000-22999", "PortRange 21500-22999"), "PortRange", "overlap"),
    (("PortRange 22000-22999", "PortRange 22000-21000"), "PortRange", "first <= last"),
    (("Buckets 64", "Buckets 0"), "Buckets", "out of range"),
    (("HashSeed 0x5eed", "HashSeed seedy"), "HashSeed", "not a number"),
    (("DeadTime 400", "DeadTime 400\n    MAC 00:11:22:33:44:55"), "MAC", "multicast MAC"),
    (("DeadTime 400", "DeadTime 400\n    SplitBrain coinflip"), "SplitBrain", "segment"),
    (("DeadTime 400", "DeadTime 400\n    Weight 3"), "Weight", "unknown key in Cluster"),
    (("Interface out0", "Interface in0"), "Cluster", "same interface"),
])
def test_errors_name_file_line_and_key(change: tuple[str, str], key: str, why: str) -> None:
    text = conf_text(2, 3).replace(*change)
    with pytest.raises(InputError) as err:
        parse(text, "ha.conf")
    msg = str(err.value)
    assert msg.startswith("ha.conf:") and key in msg and why in msg, msg
    line = int(msg.split(":")[1])
    assert key in text.splitlines()[line - 1] or key == "PortRange" and "Node" in text.splitlines()[line - 1]


def test_the_sync_block_must_fit_the_cluster() -> None:
    text = conf_text(1, 2).replace("IPv4_address 203.0.113.1\n        IPv4_Destination", "IPv4_address "
                                   "203.0.113.9\n        IPv4_Destination")
    with pytest.raises(InputError, match=r"ha.conf:\d+: IPv4_address 203.0.113.9 is not node 1's"):
        parse(text, "ha.conf")
    with pytest.raises(InputError, match="DeadTime must be at least three HeartbeatIntervals"):
        parse(conf_text(1, 2).replace("DeadTime 400", "DeadTime 200"), "ha.conf")


def test_a_bad_cluster_block_is_one_line_and_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "ha.conf"
    f.write_text(conf_text(1, 2).replace("Buckets 64", "Buckets many"))
    proc = subprocess.run([NFKIT, "ha", "-C", str(f)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert f"{f}:{_line_of(f.read_text(), 'Buckets')}: Buckets: 'many' is not a number" in proc.stderr


def test_rendezvous_moves_only_what_a_node_gains_or_loses() -> None:
    seed, nb = 0x5EED, 256
    three = {k: buckets.share(k, [1, 2, 3], nb, seed) for k in (1, 2, 3)}
    assert set().union(*three.values()) == set(range(nb))
    assert sum(len(s) for s in three.values()) == nb and all(60 < len(s) < 110 for s in three.values())
    two = {k: buckets.share(k, [1, 2], nb, seed) for k in (1, 2)}
    for k in (1, 2):  # node 3 gone: the survivors keep theirs and split its buckets
        assert three[k] <= two[k]
    assert two[1] | two[2] == set(range(nb)) and not two[1] & two[2]


def test_a_bucket_another_node_announces_is_not_taken() -> None:
    want = buckets.claim(1, [1, 2], [frozenset(range(64))], 64, 1)
    assert want == frozenset()
    assert buckets.claim(1, [1, 2], [frozenset()], 64, 1) == buckets.share(1, [1, 2], 64, 1)
    assert buckets.from_hex(buckets.to_hex({0, 5, 63}, 64), 64) == {0, 5, 63}
    with pytest.raises(ValueError):
        buckets.from_hex("1" + "0" * 16, 64)


def _membership(k: int, n: int = 2) -> Membership:
    cc = parse(conf_text(k, n), "ha.conf").cluster
    assert cc is not None
    return Membership(cc, 0.0)


def test_membership_death_split_brain_and_return() -> None:
    a, b = _membership(1), _membership(2)
    for m in (a, b):
        m.links(True, 0.0)

    def exchange(t: float, paths: tuple[str, ...] = ("sync", "segment")) -> None:
        for src, dst in ((a, b), (b, a)):
            for p in paths:
                assert dst.heartbeat_in(src.heartbeat_out(t, src.wanted(t)), p, t) == src.me
            dst.update(t)

    assert a.wanted(0.2) == frozenset()  # not ready: it has not listened for DeadTime yet
    t = 0.0
    while t < 1.5:
        exchange(t)
        t += 0.1
    sa, sb = a.wanted(t), b.wanted(t)
    assert sa and sb and not sa & sb and sa | sb == set(range(64))
    assert a.answers_arp(t) and not b.answers_arp(t)
    # split brain: only the segment carries heartbeats; nothing moves
    for _ in range(10):
        exchange(t, ("segment",))
        t += 0.1
    assert (a.wanted(t), b.wanted(t)) == (sa, sb)
    # b silent on every path: dead after DeadTime, a takes everything
    t += 0.45
    assert a.update(t) == [(2, False)]
    assert a.wanted(t) == frozenset(range(64))
    # a malformed or foreign heartbeat is counted, never believed
    assert a.heartbeat_in(b"NFKC1 {not json", "sync", t) is None
    assert a.heartbeat_in(b"junk", "sync", t) is None
    assert a.counters.malformed == 2
    # b back: a releases b's share first; b takes it once a no longer announces it
    b.links(False, t)
    b.links(True, t)
    exchange(t)
    assert b.wanted(t) == frozenset()  # b listens first
    for _ in range(8):
        t += 0.1
        exchange(t)
        both = a.wanted(t) & b.wanted(t)
        assert not both
    assert a.wanted(t) == sa and b.wanted(t) == sb


def test_a_stock_node_is_alive_by_its_sync_datagrams_and_keeps_its_static_share() -> None:
    """Node 1 (stock conntrackd) and node 2 (nfkit), node 2's view.  Node 1 serves its share while
    its datagrams come (ALIVE after a quiet second); node 2 serves the rest, and answers ARP;
    node 1 silent for StockDeadTime: node 2 serves everything."""
    cc = parse(cluster_conf(Path("/tmp/nowhere"), 2, 2, stock=(1,)), "ha.conf").cluster
    assert cc is not None and cc.nodes[1].stock and not cc.nodes[2].stock and cc.stock_dead_time == 2.5
    m = Membership(cc, 0.0)
    m.links(True, 0.0)
    stock = buckets.share(1, [1, 2], 64, 0x5EED)
    t = 0.0
    while t < 3.0:  # ready only after StockDeadTime plus an interval: a stock peer is heard by then
        assert t >= cc.ready_after or m.wanted(t) == frozenset()
        if round(t * 10) % 10 == 0:
            m.sync_heard(1, t)  # one ALIVE a second
        m.update(t)
        t += 0.1
    assert m.members(t) == [1, 2] and m.answers_arp(t)  # 2 is the lowest-numbered nfkit member
    assert m.wanted(t) == frozenset(range(64)) - stock and 20 <= len(stock) <= 44
    t += 2.6
    assert m.update(t) == [(1, False)]
    assert m.wanted(t) == frozenset(range(64))
    m.sync_heard(1, t)  # back: node 2 gives its share back at once
    m.update(t)
    assert m.wanted(t) == frozenset(range(64)) - stock


@pytest.mark.parametrize(("change", "why"), [
    (("Daemon conntrackd", "Daemon keepalived"), "nfkit or conntrackd"),
    (("DeadTime 400", "DeadTime 400\n    StockDeadTime 900"), "out of range"),
])
def test_stock_node_keys_and_errors(change: tuple[str, str], why: str) -> None:
    with pytest.raises(InputError, match=why):
        parse(cluster_conf(Path("/tmp/nowhere"), 2, 2, stock=(1,)).replace(*change), "ha.conf")
    with pytest.raises(InputError, match="at least one nfkit node"):
        parse(cluster_conf(Path("/tmp/nowhere"), 2, 2, stock=(1, 2)), "ha.conf")
    with pytest.raises(InputError, match="has two nodes"):
        parse(cluster_conf(Path("/tmp/nowhere"), 2, 3, stock=(1,)), "ha.conf")


def test_nfkit_ha_refuses_to_run_as_a_stock_node_and_rules_refuses_an_nfkit_node(tmp_path: Path) -> None:
    f = tmp_path / "ha.conf"
    f.write_text(cluster_conf(tmp_path, 1, 2, stock=(1,)))
    proc = subprocess.run([NFKIT, "ha", "-C", str(f)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "ThisNode 1 is a stock conntrackd node" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    f.write_text(cluster_conf(tmp_path, 2, 2, stock=(1,)))
    proc = subprocess.run([NFKIT, "ha", "rules", "-C", str(f)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "ThisNode 2 is an nfkit node" in proc.stderr
