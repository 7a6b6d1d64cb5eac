"""The classify loop: reassembly in front of the engine, sides, expectations, eviction."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.nfgrep.capture import LINK_RAW
from nfkit.nfgrep.classify import Classifier, FlowResult
from nfkit.nfgrep.engine import Engine
from nfkit.nfgrep.loader import load_rules
from tests.nfgrep.test_capture_files import A4, B4, ipv4, tcp

SYN, SYNACK, ACK, PSH = 0x02, 0x12, 0x10, 0x18
REQUEST = (b"GET /a HTTP/1.1\r\nHost: www.example.org\r\nUser-Agent: curl/8\r\n"
           b"Accept: */*\r\n\r\n")
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
ENGINE = Engine(load_rules(None))


def _conversation(request_segments: list[tuple[int, bytes]], sport: int = 40000,
                  handshake: bool = True) -> list[bytes]:
    c, s = 1000, 5000
    frames = []
    if handshake:
        frames += [ipv4(6, tcp(sport, 80, c, SYN), A4, B4), ipv4(6, tcp(80, sport, s, SYNACK), B4, A4),
                   ipv4(6, tcp(sport, 80, c + 1, ACK), A4, B4)]
    for off, data in request_segments:
        frames.append(ipv4(6, tcp(sport, 80, c + 1 + off, PSH, data), A4, B4))
    frames.append(ipv4(6, tcp(80, sport, s + 1, PSH, REPLY), B4, A4))
    return frames


def _classify(frames: list[bytes]) -> list:
    cl = Classifier(ENGINE)
    for i, f in enumerate(frames):
        cl.packet(1.0 + i * 0.001, LINK_RAW, f)
    return cl.finish().flows


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False))
def test_one_byte_segments_in_any_order_classify_as_the_whole_request(rnd: random.Random) -> None:
    whole = _classify(_conversation([(0, REQUEST)]))
    segs = [(i, REQUEST[i:i + 1]) for i in range(len(REQUEST))]
    segs += [rnd.choice(segs) for _ in range(5)]  # and some retransmissions
    rnd.shuffle(segs)
    split = _classify(_conversation(segs))
    assert len(whole) == len(split) == 1
    assert whole[0].app == split[0].app == "http"
    assert whole[0].fields == split[0].fields
    assert split[0].fields["host"] == "www.example.org"
    assert split[0].packets[0] == 2 + len(segs)


def test_server_first_and_guessed_sides() -> None:
    frames = _conversation([(0, REQUEST)], handshake=False)
    flows = _classify(frames)
    assert len(flows) == 1
    r = flows[0]
    assert r.client == "192.0.2.2:40000" and r.server == "198.51.100.7:80"
    assert r.guessed_sides and r.app == "http"
    from nfkit.cli.nfgrep_classify import flow_line
    assert flow_line(r).endswith("(sides guessed)")


def test_eviction_reports_every_flow() -> None:
    cl = Classifier(ENGINE, max_flows=10)
    for i in range(50):
        for f in _conversation([(0, REQUEST)], sport=30000 + i):
            cl.packet(1.0 + i, LINK_RAW, f)
    report = cl.finish()
    assert len(report.flows) == 50 and report.evicted == 40
    assert all(r.app == "http" for r in report.flows)
    assert [r.client for r in report.flows] == [f"192.0.2.2:{30000 + i}" for i in range(50)]


def test_fast_and_careful_paths_count_alike(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Raw IP (fast path for classified flows) and SLL/loopback (decode only) agree."""
    import struct

    from tests.nfgrep.test_capture_files import sll, write_pcap

    frames = _conversation([(0, REQUEST)])
    frames += [ipv4(6, tcp(80, 40000, 5001 + len(REPLY) + i * 100, ACK, b"x" * 100), B4, A4)
               for i in range(20)]
    results = []
    for link, wrap in ((101, lambda f: f), (113, lambda f: sll(f, 0x0800)),
                       (0, lambda f: struct.pack("<I", 2) + f)):
        path = tmp_path / f"{link}.pcap"
        write_pcap(path, link, [wrap(f) for f in frames])
        cl = Classifier(ENGINE)
        cl.read(path)
        (r,) = cl.finish().flows
        results.append((r.app, r.fields, r.packets, r.bytes))
    assert results[0] == results[1] == results[2]
    assert results[0][2] == [3, 22] and results[0][0] == "http"


TEXT = st.text(max_size=12)


@settings(max_examples=200, deadline=None)
@given(proto=st.sampled_from(["tcp", "udp", "132"]), client=TEXT, server=TEXT,
       app=st.one_of(st.none(), TEXT), fields=st.dictionaries(TEXT, TEXT, max_size=4),
       counts=st.lists(st.integers(0, 1 << 40), min_size=4, max_size=4), evicted=st.booleans())
def test_a_flows_json_line_is_what_json_dumps_writes(proto: str, client: str, server: str,
                                                     app: str | None, fields: dict[str, str],
                                                     counts: list[int], evicted: bool) -> None:
    r = FlowResult(proto, client, server, app, fields, counts[:2], counts[2:], evicted=evicted)
    assert r.json_line() == json.dumps(r.as_json())
    odd = FlowResult(proto, client, server, app, {**fields, "n": 7}, counts[:2], counts[2:])  # type: ignore[dict-item]
    assert odd.json_line() == json.dumps(odd.as_json())
    # the bulk text: the lines, each ended, the odd one among others too
    twin = FlowResult(proto, server, client, app, fields, counts[2:], counts[:2], evicted=not evicted)
    flows = [r, twin, odd, r]
    assert FlowResult.json_lines(flows) == [json.dumps(f.as_json()) + "\n" for f in flows]
    assert FlowResult.json_lines([]) == []


def test_the_end_of_a_run_reports_as_flow_by_flow() -> None:
    """`finish` builds the results of the flows left in one pass (`Classifier._flushed`): the
    same as ending them one by one (the path taken when flows are reported as they go)."""
    import copy

    frames = []
    rnd = random.Random(5)
    for k in range(40):  # http conversations, some without a handshake or cut short, some evicted
        sport = 41000 + k
        conv = _conversation([(0, REQUEST)], sport=sport, handshake=k % 3 != 0)
        frames += conv[:rnd.randrange(1, len(conv) + 1)]
    frames.append(ipv4(17, b"\x00\x35\x13\x88\x00\x0c\x00\x00abcd", B4, A4))  # udp, server first
    frames.append(ipv4(1, b"\x08\x00\x00\x00\x00\x07\x00\x01", A4, B4))  # icmp
    cl = Classifier(ENGINE, max_flows=30)
    for i, f in enumerate(frames):
        cl.packet(1.0 + (i % 7) * 0.001, LINK_RAW, f)
    one_by_one = copy.deepcopy(cl)
    reported: list[FlowResult] = []
    one_by_one.on_flow = reported.append  # (flows reported as they end: one at a time)
    bulk = cl.finish()
    careful = one_by_one.finish()
    assert len(bulk.flows) == len(careful.flows) == 42 and bulk.evicted == careful.evicted > 0
    assert bulk.flows == careful.flows
    assert {r.app for r in bulk.flows} >= {"http", None}
    assert any(r.guessed_sides for r in bulk.flows) and any(not r.guessed_sides for r in bulk.flows)
    assert cl.table.count == 0 and not cl._work and not cl._verdicts and not any(cl._marks)
