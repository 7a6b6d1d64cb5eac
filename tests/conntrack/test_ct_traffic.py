"""Conntrack entries made by real traffic: client -- fw -- server, with and without NAT."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from ct_helpers import conntrack_lines, nat, norm_line, run_cli, track

from nfkit.conntrack import ConntrackTable, Status, TcpState, filter_from_options
from nfkit.lab import Lab

pytestmark = pytest.mark.kernel


def udp_flow(lab: Lab, family: int, sport: int, dport: int, answer: bool) -> None:
    """One UDP datagram client -> server (and the answer back when ``answer``)."""
    server_addr = lab["server"].addr("eth0", 6 if family == socket.AF_INET6 else 4)
    client_addr = lab["client"].addr("eth0", 6 if family == socket.AF_INET6 else 4)
    with lab["server"].enter():
        srv = socket.socket(family, socket.SOCK_DGRAM)
    with lab["client"].enter():
        cli = socket.socket(family, socket.SOCK_DGRAM)
    with srv, cli:
        srv.bind((server_addr, dport))
        srv.settimeout(5)
        cli.bind((client_addr, sport))
        cli.sendto(b"ping", (server_addr, dport))
        data, peer = srv.recvfrom(100)
        assert data == b"ping"
        if answer:
            srv.sendto(b"pong", peer)
            cli.settimeout(5)
            assert cli.recvfrom(100)[0] == b"pong"


def tcp_flow(lab: Lab, family: int, sport: int, dport: int,
             close: bool) -> list[socket.socket]:
    """A TCP connection client -> server; closed cleanly (TIME_WAIT) or left open (both ends
    returned)."""
    v = 6 if family == socket.AF_INET6 else 4
    server_addr, client_addr = lab["server"].addr("eth0", v), lab["client"].addr("eth0", v)
    with lab["server"].enter():
        lsn = socket.socket(family, socket.SOCK_STREAM)
    with lab["client"].enter():
        cli = socket.socket(family, socket.SOCK_STREAM)
    lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsn.bind((server_addr, dport))
    lsn.listen(1)
    cli.bind((client_addr, sport))
    cli.settimeout(5)
    cli.connect((server_addr, dport))
    conn, _ = lsn.accept()
    lsn.close()
    cli.sendall(b"hello")
    assert conn.recv(5) == b"hello"
    if not close:
        return [cli, conn]
    cli.shutdown(socket.SHUT_WR)
    conn.recv(1)
    conn.close()
    cli.recv(1)
    cli.close()
    return []


@pytest.fixture
def traffic_lab(routed_lab: Lab) -> Iterator[Lab]:
    track(routed_lab["fw"])
    routed_lab["fw"].sysctl("net.netfilter.nf_conntrack_acct", "1")
    yield routed_lab


def fill_with_traffic(lab: Lab) -> list[socket.socket]:
    keep = []
    for fam in (socket.AF_INET, socket.AF_INET6):
        udp_flow(lab, fam, 40001, 53, answer=False)
        udp_flow(lab, fam, 40002, 53, answer=True)
        tcp_flow(lab, fam, 40003, 8080, close=True)
        keep += tcp_flow(lab, fam, 40004, 8081, close=False)
    return keep


def test_list_shows_what_conntrack_shows(traffic_lab: Lab) -> None:
    fw = traffic_lab["fw"]
    keep = fill_with_traffic(traffic_lab)
    ours = sorted(norm_line(x) for x in run_cli("ct", "-n", fw.name, "list")[1].splitlines())
    assert ours == conntrack_lines(fw)
    assert len(ours) >= 8
    # counters are on: conntrack shows packets= and so do we
    assert all("packets=" in line for line in ours)
    for s in keep:
        s.close()


def test_states_and_statuses_of_real_flows(traffic_lab: Lab) -> None:
    fw = traffic_lab["fw"]
    keep = fill_with_traffic(traffic_lab)
    with fw.enter():
        t = ConntrackTable()
    with t:
        by_sport = {(e.family, e.orig.sport): e for e in t.entries()}
        for fam in (socket.AF_INET, socket.AF_INET6):
            assert not by_sport[(fam, 40001)].status & Status.SEEN_REPLY
            assert by_sport[(fam, 40002)].status & Status.SEEN_REPLY
            assert by_sport[(fam, 40003)].state == TcpState.TIME_WAIT
            assert by_sport[(fam, 40004)].state == TcpState.ESTABLISHED
            assert by_sport[(fam, 40004)].counters.orig_packets >= 3
        unreplied = filter_from_options(proto="udp", status="UNREPLIED")
        assert {(e.family, e.orig.sport) for e in t.entries(unreplied)} == {(2, 40001), (10, 40001)}
        tw = filter_from_options(state="TIME_WAIT")
        assert {(e.family, e.orig.sport) for e in t.entries(tw)} == {(2, 40003), (10, 40003)}
        six = filter_from_options(src="2001:db8:1::2", proto="tcp")
        assert {e.orig.sport for e in t.entries(six)} == {40003, 40004}
        res = t.delete_matching(tw)
        assert res.deleted == 2 and res.method == "dump"
        assert not any(line.startswith("tcp") and "TIME_WAIT" in line for line in conntrack_lines(fw))
    for s in keep:
        s.close()


def test_nat_reply_tuple_and_reply_filters(traffic_lab: Lab) -> None:
    fw = traffic_lab["fw"]
    nat(fw)
    udp_flow(traffic_lab, socket.AF_INET, 41000, 53, answer=True)
    udp_flow(traffic_lab, socket.AF_INET, 41001, 53, answer=False)
    with fw.enter():
        t = ConntrackTable()
    with t:
        es = {e.orig.sport: e for e in t.entries(filter_from_options(proto="udp"))}
        for sport in (41000, 41001):
            e = es[sport]
            assert e.nat and e.reply.dst == "198.51.100.1" and e.reply.src == "198.51.100.2"
            assert e.status & Status.SRC_NAT
        line = json.loads(run_cli("ct", "-n", fw.name, "list", "-o", "json", "--sport", "41000",
                                  "-p", "udp")[1])
        assert line["reply"]["dst"] == "198.51.100.1" and line["orig"]["src"] == "192.0.2.2"
        flt = filter_from_options(reply_dst="198.51.100.1", status="UNREPLIED")
        assert [e.orig.sport for e in t.entries(flt)] == [41001]
        assert [e.orig.sport for e in t.entries(flt, kernel=False)] == [41001]
    ours = sorted(norm_line(x) for x in run_cli("ct", "-n", fw.name, "list")[1].splitlines())
    assert ours == conntrack_lines(fw)
    assert sorted(norm_line(x) for x in run_cli(
        "ct", "-n", fw.name, "list", "--reply-dst", "198.51.100.1")[1].splitlines()) == \
        conntrack_lines(fw, "--reply-dst 198.51.100.1")


def test_events_for_real_traffic(traffic_lab: Lab) -> None:
    fw = traffic_lab["fw"]
    with fw.enter():
        t = ConntrackTable()
    seen: list[tuple[str, int, int]] = []
    with t, t.events(filter_from_options(proto="udp"), timeout=1.5) as stream:
        done = threading.Event()

        def consume() -> None:
            for ev in stream:
                if ev.entry is not None:
                    seen.append((ev.kind, ev.entry.orig.sport, ev.entry.status))
            done.set()

        th = threading.Thread(target=consume)
        th.start()
        udp_flow(traffic_lab, socket.AF_INET, 42000, 53, answer=True)
        udp_flow(traffic_lab, socket.AF_INET6, 42001, 53, answer=False)
        time.sleep(0.2)
        t.delete_matching(filter_from_options(proto="udp"))
        th.join(10)
    kinds = [(k, p) for k, p, _ in seen]
    assert ("new", 42000) in kinds and ("new", 42001) in kinds
    assert ("destroy", 42000) in kinds and ("destroy", 42001) in kinds
    # the answer shows up as an update with SEEN_REPLY
    assert any(k == "update" and p == 42000 and s & Status.SEEN_REPLY for k, p, s in seen)
    assert kinds.index(("new", 42000)) < kinds.index(("destroy", 42000))


def test_nat_entries_survive_save_and_restore(traffic_lab: Lab, tmp_path) -> None:
    fw = traffic_lab["fw"]
    nat(fw)
    fw.run(["nft", "add table ip nkdnat; "
                   "add chain ip nkdnat pre { type nat hook prerouting priority -100; }; "
                   "add rule ip nkdnat pre iifname eth0 udp dport 5000 dnat to 198.51.100.2:53"])
    with traffic_lab["client"].enter():
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with c:
        c.bind(("192.0.2.2", 4444))
        c.sendto(b"x", ("198.51.100.2", 53))  # source NAT only
        c.sendto(b"x", ("192.0.2.1", 5000))  # destination and source NAT
    udp_flow(traffic_lab, socket.AF_INET, 43000, 53, answer=True)
    keep = tcp_flow(traffic_lab, socket.AF_INET, 43001, 8080, close=False)
    with fw.enter():
        t = ConntrackTable()
    with t:
        before = {e.orig: (e.reply, e.status, e.state) for e in t.entries()}
        assert sum(1 for r, s, _ in before.values() if s & Status.DST_NAT) == 1
        assert sum(1 for r, s, _ in before.values() if s & Status.SRC_NAT) == len(before) == 4
        def no_counters(lines: list[str]) -> list[str]:
            return [re.sub(r"packets=\d+ bytes=\d+ ", "", x) for x in lines]  # not restorable

        lines_before = no_counters(conntrack_lines(fw))
        saved = tmp_path / "nat.jsonl"
        saved.write_text(run_cli("ct", "-n", fw.name, "list", "-o", "json")[1])
        t.flush()
        code, out, err = run_cli("ct", "-n", fw.name, "create", "--from", str(saved))
        assert code == 0, err
        after = {e.orig: (e.reply, e.status, e.state) for e in t.entries()}
        assert after == before
        assert no_counters(conntrack_lines(fw)) == lines_before
    for s in keep:
        s.close()
