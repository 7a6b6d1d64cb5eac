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
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nfkit.nfgrep.capture import LINK_RAW
from nfkit.nfgrep.classify import ACTIVE_BYTES, FLOW_BYTES, Classifier
from nfkit.nfgrep.engine import Engine
from nfkit.nfgrep.loader import load_rules
from tests.nfgrep.test_capture_files import A4, B4, ipv4, tcp, udp
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


# -- starting the engine at the first payload changes no verdict --------------------------

FTP_CONTROL = [(1, b"220 hi\r\n"), (0, b"USER a\r\n"), (1, b"331 pw\r\n"), (0, b"PASV\r\n"),
               (1, b"227 Entering Passive Mode (198,51,100,7,4,1).\r\n")]
SAYS = [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n", b"SSH-2.0-x\r\n",
        b"\x16\x03\x01\x00\x05hello", b"x" * 40, b"220 hi\r\n", b"EHLO a\r\n"]
# one event: (flow 0-3, kind, direction, payload index, offset)
EVENTS = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["syn", "data", "fin", "rst", "udp"]),
                            st.integers(0, 1), st.integers(0, len(SAYS) - 1), st.integers(0, 30)),
                  max_size=40)


def _frames(events: list[tuple[int, str, int, int, int]], ftp: bool) -> list[bytes]:
    frames = []
    if ftp:  # a control connection announcing port 1025, then flows to it
        seqs = [1000, 5000]
        frames.append(ipv4(6, tcp(30000, 21, 999, 0x02), A4, B4))
        frames.append(ipv4(6, tcp(21, 30000, 4999, 0x12), B4, A4))
        for d, data in FTP_CONTROL:
            sport, dport, src, dst = (30000, 21, A4, B4) if d == 0 else (21, 30000, B4, A4)
            frames.append(ipv4(6, tcp(sport, dport, seqs[d], 0x18, data), src, dst))
            seqs[d] += len(data)
    flags = {"syn": 0x02, "data": 0x18, "fin": 0x11, "rst": 0x04}
    for flow, kind, d, say, off in events:
        port = 1025 if ftp and flow == 0 else 80 + flow
        sport, dport, src, dst = (40000 + flow, port, A4, B4) if d == 0 else \
            (port, 40000 + flow, B4, A4)
        if kind == "udp":
            frames.append(ipv4(17, udp(sport, dport, SAYS[say]), src, dst))
            continue
        base = 1000 if d == 0 else 5000
        seq = base - 1 if kind == "syn" else base + off
        payload = SAYS[say] if kind == "data" else b""
        frames.append(ipv4(6, tcp(sport, dport, seq, flags[kind] | (0x10 if kind == "syn" and d else 0),
                                  payload), src, dst))
    return frames


def _results(frames: list[bytes], lazy: bool, **options: int) -> list[tuple]:  # type: ignore[type-arg]
    cl = Classifier(ENGINE.__class__(ENGINE.signatures), lazy=lazy, **options)
    for i, f in enumerate(frames):
        cl.packet(1.0 + i * 0.001, LINK_RAW, f)
        assert cl._used() <= cl.max_memory
    return [(r.proto, r.client, r.server, r.app, r.fields, r.chain, r.packets, r.bytes,
             r.guessed_sides, r.gap, r.evicted) for r in cl.finish().flows]


@settings(max_examples=150, deadline=None)
@given(events=EVENTS, ftp=st.booleans())
def test_a_lazy_start_gives_the_verdicts_of_an_eager_one(events: list[tuple[int, str, int, int, int]],
                                                          ftp: bool) -> None:
    frames = _frames(events, ftp)
    assert _results(frames, True) == _results(frames, False)


@settings(max_examples=60, deadline=None)
@given(events=EVENTS, ftp=st.booleans(), flows=st.integers(1, 6), room=st.integers(0, 40000))
# bytes past a hole wait in reassembly without reaching the engine: they count too
@example(events=[(0, "syn", 0, 0, 0), (0, "data", 0, 0, 1)], ftp=False, flows=1, room=0)
def test_any_budget_holds_and_never_raises(events: list[tuple[int, str, int, int, int]], ftp: bool,
                                           flows: int, room: int) -> None:
    frames = _frames(events, ftp)
    small = _results(frames, True, max_memory=ACTIVE_BYTES + flows * FLOW_BYTES + room)
    large = _results(frames, True)
    # whatever was evicted or given up on, every packet is counted once
    assert sum(sum(r[6]) for r in small) == sum(sum(r[6]) for r in large) == len(frames)
