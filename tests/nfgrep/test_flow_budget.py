"""What a flow costs `classify`: the waiting-flow bound, the memory budget and its evictions.

The figures asserted here are the ones docs/nfgrep.md ("Resource bounds") states.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import dpkt

from nfkit.nfgrep.capture import LINK_RAW
from nfkit.nfgrep.classify import ACTIVE_BYTES, FLOW_BYTES, Classifier
from nfkit.nfgrep.engine import Engine
from nfkit.nfgrep.loader import load_rules
from tests.nfgrep.test_classify import REQUEST, _conversation

ENGINE = Engine(load_rules(None))


def _one_packet_flows(path: Path, n: int, payload: bytes = b"") -> None:
    """n TCP flows of one packet each: a SYN (payload empty) or one data segment."""
    flags = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH if payload else dpkt.tcp.TH_SYN
    with path.open("wb") as f:
        w = dpkt.pcap.Writer(f, linktype=dpkt.pcap.DLT_EN10MB)
        for i in range(n):
            tcp = dpkt.tcp.TCP(sport=1024 + (i >> 16), dport=80, seq=i, flags=flags, data=payload)
            ip = dpkt.ip.IP(src=bytes([198, 51, (i >> 8) & 255, i & 255]),
                            dst=bytes([203, 0, 113, (i >> 16) & 255]), p=6, data=tcp)
            ip.len = len(ip)
            eth = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, data=ip)
            w.writepkt(bytes(eth), ts=1000 + i * 1e-5)


def _bytes_per_flow(path: Path, n: int, **options: int) -> tuple[float, Classifier]:
    cl = Classifier(ENGINE, **options)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cl.read(path)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert cl.table.count == n
    return (after - before) / n, cl


def test_a_waiting_flow_costs_less_than_flow_bytes(tmp_path: Path) -> None:
    """An attacker's half-open flows: no engine or reassembly state until payload comes."""
    path = tmp_path / "syn.pcap"
    _one_packet_flows(path, 20000)
    per_flow, cl = _bytes_per_flow(path, 20000)
    assert per_flow < FLOW_BYTES, per_flow
    report = cl.finish()
    assert len(report.flows) == 20000 and report.budget_evicted == 0
    assert all(r.app is None and not r.evicted for r in report.flows)


def test_a_flow_being_classified_costs_less_than_active_bytes(tmp_path: Path) -> None:
    path = tmp_path / "g.pcap"
    _one_packet_flows(path, 5000, b"G")  # every HTTP-like candidate waits for more
    per_flow, _ = _bytes_per_flow(path, 5000, max_memory=1 << 40)
    assert FLOW_BYTES < per_flow < FLOW_BYTES + ACTIVE_BYTES + 2, per_flow


def test_the_budget_gives_up_on_the_longest_idle_undecided_flows(tmp_path: Path) -> None:
    path = tmp_path / "g.pcap"
    n = 2000
    _one_packet_flows(path, n, b"G")
    budget = 1 << 20
    cl = Classifier(ENGINE, max_memory=budget)
    cl.read(path)
    assert cl._used() <= budget
    report = cl.finish()
    assert report.evicted == 0 and report.budget_evicted > 0
    evicted = [r for r in report.flows if r.evicted]
    assert len(evicted) == report.budget_evicted
    # oldest first: the given-up flows are the first ones of the capture
    assert [r.order for r in evicted] == list(range(len(evicted)))
    assert all(r.app is None for r in evicted)
    assert json.loads(json.dumps(evicted[0].as_json()))["evicted"] is True
    assert "evicted" not in report.flows[-1].as_json()


def test_the_budget_bounds_the_flow_table(tmp_path: Path) -> None:
    path = tmp_path / "syn.pcap"
    _one_packet_flows(path, 3000)
    cl = Classifier(ENGINE, max_memory=ACTIVE_BYTES + 1000 * FLOW_BYTES)
    cl.read(path)
    report = cl.finish()
    assert cl.table.max_flows == 1000 and report.evicted == 2000


def test_flows_after_an_eviction_still_classify() -> None:
    """A tight budget gives up on idle flows, not on the one being fed."""
    cl = Classifier(ENGINE, max_memory=ACTIVE_BYTES + 4 * FLOW_BYTES + 40000)
    for i in range(30):
        for f in _conversation([(0, REQUEST)], sport=30000 + i):
            cl.packet(1.0 + i, LINK_RAW, f)
    report = cl.finish()
    assert all(r.app == "http" for r in report.flows)


def test_cli_reports_budget_evictions(tmp_path: Path) -> None:
    path = tmp_path / "g.pcap"
    _one_packet_flows(path, 1000, b"G")
    cmd = [sys.executable, "-m", "nfkit", "nfgrep", "classify", "--json", "--max-memory", "1M",
           str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    flows = [json.loads(line) for line in proc.stdout.splitlines()]
    given_up = sum(1 for f in flows if f.get("evicted"))
    assert given_up > 0
    assert f"nfkit: {given_up} flow(s) given up on undecided" in proc.stderr
    assert "--max-memory 1 MiB" in proc.stderr
    bad = subprocess.run([*cmd[:-3], "--max-memory", "1000", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "smallest budget" in bad.stderr
