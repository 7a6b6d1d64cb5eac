"""Active-active cluster: N nfkit nodes on shared segments, SNAT, failover with no loss.

Kernel tests in namespaces (tests/ha/cluster_lab.py): real TCP streams through
2 and 3 nodes; a node's cables cut (its switch ports down) while the streams
run; its return; the sync link cut (split brain).
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from nfkit.conntrack.table import ConntrackTable
from tests.ha.cluster_lab import (
    INSIDE,
    INSIDE6,
    MARK,
    OUTSIDE,
    OUTSIDE6,
    SERVER6,
    Streams,
    arp_answers,
    cluster_lab,
    cluster_status,
    nd_answers,
    neighbour,
    ports,
    settled,
    start_nodes,
    wait_for,
)
from tests.ha.stock import NFKIT

CONNS = 50
CLUSTER_MAC = "01:00:5e:7f:c1:01"  # the default MAC


def entries_for(lab, k: int, client_ports: list[int]) -> dict[int, tuple[str, int, int]]:
    """Node k's kernel entries of the client's connections: client port -> (NAT address, port, mark)."""
    with lab[f"fw{k}"].enter():
        with ConntrackTable() as t:
            found = {e.orig.sport: (e.reply.dst, e.reply.dport, e.mark) for e in t.entries() if e.proto == 6}
    return {p: found[p] for p in client_ports if p in found}


def served_by(nodes, k: int) -> list[int]:
    return cluster_status(nodes[k - 1])["serves"]


@pytest.mark.parametrize("n", [2, 3])
def test_failover_and_return_lose_no_connection(tmp_path: Path, n: int) -> None:
    with cluster_lab(n) as lab:
        nodes = start_nodes(lab, tmp_path, n)
        wait_for(settled(nodes), "the nodes to share the buckets")
        assert arp_answers(lab, INSIDE) == [CLUSTER_MAC]  # once, by one node, with the cluster's MAC
        streams = Streams(lab, tmp_path, CONNS)
        streams.advancing()
        cports = streams.read()["ports"]
        # every node holds every connection, with the same SNAT binding, from each port range
        bindings = [entries_for(lab, k, cports) for k in range(1, n + 1)]
        wait_for(lambda: all(len(entries_for(lab, k, cports)) == CONNS for k in range(1, n + 1)),
                 "every entry on every node")
        bindings = [entries_for(lab, k, cports) for k in range(1, n + 1)]
        assert all(b == bindings[0] for b in bindings)
        assert {(a, m) for a, _, m in bindings[0].values()} == {(OUTSIDE, MARK)}
        used = {(p - 20000) // 1000 for _, p, _ in bindings[0].values()}
        assert used == set(range(1, n + 1))  # each node picked from its own range

        ports(lab, n, up=False)  # node n's cables cut: it is gone for the others
        alive = list(range(1, n))
        took = wait_for(settled(nodes, alive=alive), "the survivors to take node n's buckets", 5)
        assert took < 2
        for k in alive:
            assert all(t["after_death_s"] is None or t["after_death_s"] < 1
                       for t in cluster_status(nodes[k - 1])["takeovers"])
        streams.advancing()
        assert arp_answers(lab, INSIDE) == [CLUSTER_MAC]

        ports(lab, n, up=True)  # it comes back
        wait_for(settled(nodes), "the buckets to be shared again", 10)
        streams.advancing()
        result = streams.finish()
        assert not result["errors"]
        assert result["sent"] == result["recv"]
        assert min(result["recv"]) > 0


@pytest.mark.parametrize("n", [3])  # 2 nodes: the IPv4 test; the same tables and rules with 3
def test_ipv6_failover_loses_no_connection_and_neighbours_are_answered_once(tmp_path: Path, n: int) -> None:
    """The same over IPv6 (dual-stack nodes, table ip6 nfkit_cluster6): the flows split by
    jhash of the IPv6 source, SNAT to the outside address from each node's own range;
    neighbour solicitations for the cluster's addresses answered by one node, with the
    cluster's MAC (checksum right: the client's kernel takes it), and the solicitations a
    node sends from the cluster's address carry the cluster's MAC too (the server learns it);
    a node's cables cut: its buckets taken, every connection moves, byte counts match."""
    with cluster_lab(n, v6=True) as lab:
        nodes = start_nodes(lab, tmp_path, n, v6=True)
        wait_for(settled(nodes), "the nodes to share the buckets")
        for address, asking in ((INSIDE6, "client"), (OUTSIDE6, "server")):
            assert nd_answers(lab, address, asking) == [CLUSTER_MAC]  # once, by one node, with the cluster's MAC
        streams = Streams(lab, tmp_path, CONNS, server=SERVER6)
        streams.advancing()
        assert neighbour(lab, "client", INSIDE6) == CLUSTER_MAC
        assert neighbour(lab, "server", OUTSIDE6) == CLUSTER_MAC  # from a node's solicitation
        cports = streams.read()["ports"]
        wait_for(lambda: all(len(entries_for(lab, k, cports)) == CONNS for k in range(1, n + 1)),
                 "every entry on every node")
        bindings = [entries_for(lab, k, cports) for k in range(1, n + 1)]
        assert all(b == bindings[0] for b in bindings)
        assert {(a, m) for a, _, m in bindings[0].values()} == {(OUTSIDE6, MARK)}
        assert {(p - 20000) // 1000 for _, p, _ in bindings[0].values()} == set(range(1, n + 1))

        ports(lab, 1, up=False)  # node 1, the one answering neighbour solicitations, cut
        alive = list(range(2, n + 1))
        took = wait_for(settled(nodes, alive=alive), "the survivors to take node 1's buckets", 5)
        assert took < 2
        streams.advancing()
        lab["client"].run(["ip", "-6", "neigh", "flush", "dev", "eth0"])  # asked again: the survivor answers
        # the streams make the client's kernel solicit the gateway itself: once it has its answer
        # (no solicitation of its own then in flight, which the raw socket would count too) ask
        wait_for(lambda: neighbour(lab, "client", INSIDE6) == CLUSTER_MAC, "the client to learn the cluster MAC again", 5)
        assert nd_answers(lab, INSIDE6) == [CLUSTER_MAC]
        streams.advancing()
        result = streams.finish()
        assert not result["errors"]
        assert result["sent"] == result["recv"]
        assert min(result["recv"]) > 0


def test_split_brain_keeps_the_shares(tmp_path: Path) -> None:
    """The sync link cut, both nodes alive: each still hears the other on the inside segment,
    so neither takes the other's buckets (no connection handled by two nodes)."""
    with cluster_lab(2) as lab:
        nodes = start_nodes(lab, tmp_path, 2)
        wait_for(settled(nodes), "the nodes to share the buckets")
        before = [served_by(nodes, k) for k in (1, 2)]
        streams = Streams(lab, tmp_path, 20)
        streams.advancing()
        ports(lab, 2, up=False, which=("sync",))
        wait_for(lambda: cluster_status(nodes[0])["peers"][0]["heard_ago"].get("sync", 0) > 1,
                 "the sync link's silence")
        for _ in range(10):  # 1.5 s: more than three DeadTimes
            time.sleep(0.15)
            now = [served_by(nodes, k) for k in (1, 2)]
            seen = [cluster_status(nd) for nd in nodes]  # on failure: which loop or path was late
            why = [(c["longest_tick_gap"], [p["longest_gap"] for p in c["peers"]]) for c in seen]
            assert now == before, why
            assert not set(now[0]) & set(now[1])
            assert all(p["alive"] for c in seen for p in c["peers"]), why
        streams.advancing()
        text = lab["fw1"].run([NFKIT, "ha", "status", "-C", str(nodes[0].conf)]).stdout
        assert f"cluster node 1 of [1, 2]: ready, members [1, 2], serving {len(before[0])} of 64 buckets" in text
        assert "node 2: alive, ready, serving" in text and "split brain rule: segment" in text
        ports(lab, 2, up=True, which=("sync",))
        result = streams.finish()
        assert result["sent"] == result["recv"] and not result["errors"]


def test_a_node_restarted_with_an_empty_table_gets_the_flows_back(tmp_path: Path) -> None:
    """Node 2 stops (its table removed: node 1 takes everything), its conntrack table is
    flushed (as after a reboot) and it starts again: node 1 sends it its whole kernel table,
    node 2's flows included, before it takes its buckets back; no connection breaks."""
    with cluster_lab(2) as lab:
        nodes = start_nodes(lab, tmp_path, 2)
        wait_for(settled(nodes), "the nodes to share the buckets")
        streams = Streams(lab, tmp_path, 30)
        streams.advancing()
        cports = streams.read()["ports"]
        nodes[1].stop()
        wait_for(settled(nodes, alive=[1]), "node 1 to take everything", 5)
        lab["fw2"].run(["conntrack", "-F"], check=False)
        assert not entries_for(lab, 2, cports)
        streams.advancing()
        nodes[1].start()
        wait_for(settled(nodes), "the buckets to be shared again", 10)
        assert len(entries_for(lab, 2, cports)) == 30
        assert cluster_status(nodes[0])["restart_resyncs"] == 1
        streams.advancing()
        result = streams.finish()
        assert not result["errors"] and result["sent"] == result["recv"]


def test_a_stalled_node_reads_what_its_peers_sent_before_it_judges_their_silence(tmp_path: Path) -> None:
    """A control client connected to node 1 without a word for 1.5 s: the daemon answers the
    others meanwhile and its heartbeats go on (it waited up to a second for such a client, and
    its peers took it for dead).  Then node 1's daemon stopped for 0.7 s (a loaded machine not scheduling it: more than DeadTime)
    while nodes 2 and 3 keep sending heartbeats.  When it runs again their heartbeats are waiting
    in its sockets: it must read them all before it judges anyone's silence (it took a peer whose
    heartbeat it had not read yet for dead and its buckets with it, served twice).  The peers took
    its buckets meanwhile (it was silent): it gives them up at once, then the shares settle again
    and no connection breaks."""
    with cluster_lab(3) as lab:
        nodes = start_nodes(lab, tmp_path, 3)
        wait_for(settled(nodes), "the nodes to share the buckets")
        streams = Streams(lab, tmp_path, 20)
        streams.advancing()
        # a control client that connects and says nothing (as a test or a script descheduled
        # between connect and send on a loaded machine): the daemon must not wait for it
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as quiet:
            quiet.connect(str(nodes[0].workdir / "ctl"))
            time.sleep(1.5)
            assert all(cluster_status(nodes[k])["peers"][0]["deaths"] == 0 for k in (1, 2))
            assert cluster_status(nodes[0])["longest_tick_gap"] < 0.4
        for _ in range(3):
            nodes[0].proc.send_signal(signal.SIGSTOP)
            time.sleep(0.7)
            nodes[0].proc.send_signal(signal.SIGCONT)
            wait_for(settled(nodes), "the buckets to be shared again", 10)
        assert [p["deaths"] for p in cluster_status(nodes[0])["peers"]] == [0, 0]
        assert all(cluster_status(nodes[k])["peers"][0]["deaths"] == 3 for k in (1, 2))  # they saw it stall
        streams.advancing()
        result = streams.finish()
        assert not result["errors"] and result["sent"] == result["recv"]
