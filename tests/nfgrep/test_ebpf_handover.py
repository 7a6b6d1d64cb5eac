"""The eBPF back end's hand-over to the queue path sees every byte the engine needs: a
direction's later packets that a waiting candidate may read are handed over at the
first of them (not let pass before a late hand-over), and a full first-bytes map hands
a new open flow over at its first payload packet (never another open flow's bytes
dropped).  Each checked against the engine on captures made here (BPF_PROG_TEST_RUN,
the queue path behind the kernel program as `nfgrep live --backend ebpf` runs it)."""

from __future__ import annotations

import time
from pathlib import Path

import dpkt
import pytest

from nfkit.nfgrep.classify import classify
from nfkit.nfgrep.ebpf.program import (
    FIRST_ENTRIES,
    MARK_USERSPACE,
    UNDECIDED,
    USERSPACE,
    Classifier,
    load_verified,
)
from nfkit.nfgrep.ebpf.replay import frame
from nfkit.nfgrep.loader import SIGNATURES

from .replyhttp import reply_http_rules
from .test_ebpf import C4, C6, S4, S6, tcp_flow, udp_flow
from .test_ebpf_shapes import hybrid_wrong

# decided by the client's *second* message, after the server's answer: the kernel holds
# `hello`, `ok` waits, and `choice` starts later in the client's stream (it is userspace's)
LATE = """
protocol late over tcp ports 7200 {
    step hello from client { "\\x00\\x05HELLO" }
    step ok from server { "OK" }
    step choice from client { "A" }
}
protocol lateb over tcp ports 7200 {
    step hello from client { "\\x00\\x05HELLO" }
    step ok from server { "OK" }
    step choice from client { "B" }
}
protocol lateu over udp ports 7201 {
    step hello from client { "\\x00\\x05HELLO" }
    step ok from server { "OK" }
    step choice from client { "A" }
}
"""


# no shipped protocol waits for more of it (TCP DNS would, on a length prefix over 17)
HELLO = b"\x00\x05HELLO"


def _rules(tmp_path: Path) -> Path:
    path = tmp_path / "late.nfg"
    path.write_text(LATE)
    return path


def _opened(w: dpkt.pcap.Writer, ts: list[float], client: bytes, server: bytes, cport: int,
            data: bytes) -> None:
    """A TCP flow to 7200 that sends its first bytes and stays open (undecided)."""
    seq = [1000, 5000]
    for d, flags, payload in ((0, 0x02, b""), (1, 0x12, b""), (0, 0x10, b""), (0, 0x18, data)):
        ts[0] += 0.001
        src, dst, sp, dp = (client, server, cport, 7200) if d == 0 else (server, client, 7200, cport)
        w.writepkt(frame(6, src, dst, sp, dp, flags, seq[d], payload), ts=ts[0])
        seq[d] += len(payload) + (1 if flags & 0x02 else 0)


@pytest.mark.kernel
def test_a_flow_decided_by_its_second_payload_packet_handed_over_late_is_decided_right(
        tmp_path: Path) -> None:
    """The client sends its two messages before the server answers: the kernel runs `hello`
    on the first, `ok` on the server's, and must hand the flow over; the second client
    packet, which alone decides the app, passed unseen before that hand-over (`unknown`).
    Now the kernel keeps it beside the first (a waiting candidate may read it) and the
    queue path reads both from the map; past FIRST_PACKETS kept, the flow is handed over
    at the next one."""
    rules = _rules(tmp_path)
    capture = tmp_path / "late.pcap"
    with open(capture, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)
        ts = [1.0]
        n = 0
        for client, server in ((C4, S4), (C6, S6)):
            for choice in (b"A", b"B"):
                for chunks in ([(0, HELLO), (0, choice), (1, b"OK")],  # late: the case
                               [(0, HELLO), (1, b"OK"), (0, choice)],  # in turn
                               [(0, HELLO + choice), (1, b"OK")],      # one packet
                               # more later packets than the kernel keeps (FIRST_PACKETS)
                               [(0, HELLO), (0, choice), *[(0, b"z")] * 8, (1, b"OK")]):
                    tcp_flow(w, ts, client, server, 44000 + n, 7200, chunks)
                    n += 1
            udp_flow(w, ts, client, server, 44000 + n, 7201, [(0, HELLO), (1, b"OK"), (0, b"A")])
            n += 1

    engine = {r.client: r.app for r in classify([capture], [str(SIGNATURES), str(rules)]).flows}
    assert sorted(map(str, engine.values())) == sorted(["late"] * 8 + ["lateb"] * 8 + ["lateu"] * 2)
    with Classifier(load_verified([str(SIGNATURES), str(rules)])) as cl:
        handed = _handed(cl, capture)
    assert handed >= 8  # the late flows (and the in-turn ones) reach the queue path
    assert hybrid_wrong(rules, [capture]) == []


def _handed(cl: Classifier, capture: Path) -> int:
    """Packets of the capture the kernel program marks for the queue path."""
    from nfkit.nfgrep.capture import CaptureReader, decode

    n = 0
    for _ts, link, raw in CaptureReader(capture):
        pkt = decode(link, raw)
        if pkt is not None and pkt[0] in (6, 17):
            proto, src, dst, sport, dport, flags, seq, payload, _size = pkt
            mark = cl.prog.test_run(frame(proto, src, dst, sport, dport, flags, seq, bytes(payload)))[1]
            n += mark & cl.mark_mask == cl.packet_mark(MARK_USERSPACE)
    return n


@pytest.mark.kernel
def test_a_flood_of_open_flows_past_the_first_bytes_map_loses_no_flows_bytes(tmp_path: Path) -> None:
    """More flows left open than the first-bytes map holds (32 here; FIRST_ENTRIES, 4,096,
    in `nfgrep live`): a real flow opened before the flood and handed over after it still
    has its first bytes (an LRU map would have dropped them for a flood flow's: the queue
    path then saw a gap and said `unknown`), and one opened after it, with the map full,
    is handed over at its first payload packet: both decided as the engine does."""
    rules = _rules(tmp_path)
    capture = tmp_path / "flood.pcap"
    with open(capture, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)
        ts = [1.0]
        _opened(w, ts, C4, S4, 45000, HELLO)
        for j in range(100):
            _opened(w, ts, C6, S6, 46000 + j, HELLO)
        seq = [1001 + len(HELLO), 5001]
        for d, data in ((0, b"A"), (1, b"OK")):  # the first flow goes on: `late`
            ts[0] += 0.001
            src, dst, sp, dp = (C4, S4, 45000, 7200) if d == 0 else (S4, C4, 7200, 45000)
            w.writepkt(frame(6, src, dst, sp, dp, 0x18, seq[d], data), ts=ts[0])
        tcp_flow(w, ts, C4, S4, 45001, 7200, [(0, HELLO), (1, b"OK"), (0, b"B")])
        for j in range(100):  # the flood ends: FINs, so the queue path decides its flows too
            for d in (0, 1):
                ts[0] += 0.001
                src, dst, sp, dp = (C6, S6, 46000 + j, 7200) if d == 0 else (S6, C6, 7200, 46000 + j)
                w.writepkt(frame(6, src, dst, sp, dp, 0x11, 1001 + len(HELLO) if d == 0 else 5001, b""),
                           ts=ts[0])
    engine = {r.client: r.app for r in classify([capture], [str(SIGNATURES), str(rules)]).flows}
    assert engine["192.0.2.2:45000"] == "late" and engine["192.0.2.2:45001"] == "lateb"
    assert hybrid_wrong(rules, [capture], first_entries=32) == []
    with Classifier(load_verified([str(SIGNATURES), str(rules)]), first_entries=32) as cl:
        _handed(cl, capture)
        flood = [cl.flow(C6, S6, 46000 + j, 7200, 6) for j in range(100)]
        assert len(cl.first.keys()) == 32
        states = [e.state for e in flood if e is not None]
        assert states.count(UNDECIDED) == 31 and states.count(USERSPACE) == 69  # map full: handed over
        assert cl.counts()["first bytes map full"] == 71  # and the real flows' later packet, the one after


@pytest.mark.kernel
def test_the_first_bytes_of_flows_no_hand_over_can_read_are_swept(tmp_path: Path) -> None:
    """`Classifier.sweep_first` (the live daemon runs it every few seconds) frees the
    entries of closed flows (FIRST_GRACE_S after their last packet) and of flows idle
    past their timeout, keeps those of open flows, and a full map takes new open flows'
    bytes again."""
    rules = _rules(tmp_path)
    with Classifier(load_verified([str(SIGNATURES), str(rules)]), first_entries=5) as cl:
        def send(proto: int, cport: int, d: int, flags: int, seq: int, data: bytes) -> int:
            ends = (C4, S4, cport, 7200 if proto == 6 else 7201)
            src, dst, sp, dp = ends if d == 0 else (ends[1], ends[0], ends[3], ends[2])
            return cl.prog.test_run(frame(proto, src, dst, sp, dp, flags, seq, data))[1]

        def opened(cport: int) -> None:
            for d, flags, seq, data in ((0, 0x02, 1000, b""), (1, 0x12, 5000, b""),
                                        (0, 0x18, 1001, HELLO)):
                send(6, cport, d, flags, seq, data)

        for cport in (47000, 47001):
            opened(cport)
        for cport in (47002, 47003):
            opened(cport)
            send(6, cport, 0, 0x04, 1001 + len(HELLO), b"")  # RST
        send(17, 47004, 0, 0, 0, HELLO)  # UDP, open (30 s without an answer)
        assert len(cl.first.keys()) == 5
        opened(47005)  # the map full: handed over at once
        assert cl.flow(C4, S4, 47005, 7200, 6).state == USERSPACE  # type: ignore[union-attr]
        send(6, 47000, 1, 0x18, 5001, b"OK")  # handed over (the queue path would read it now)
        assert cl.flow(C4, S4, 47000, 7200, 6).state == USERSPACE  # type: ignore[union-attr]
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        assert cl.sweep_first() == 0  # a hand-over may yet read them: not so soon
        assert cl.sweep_first(now + 11 * 10**9) == 3  # the RST and handed flows', after FIRST_GRACE_S
        assert cl.sweep_first(now + 31 * 10**9) == 1  # the UDP flow's, idle past `udp`
        assert [k[32:34] for k in cl.first.keys()] == [(47001).to_bytes(2, "big")]
        opened(47006)
        assert cl.flow(C4, S4, 47006, 7200, 6).state == UNDECIDED  # type: ignore[union-attr]
        assert len(cl.first.keys()) == 2
        # a tuple reused: the earlier flow kept two packets, the new one (after the RST,
        # a SYN) one; the earlier flow's second goes at once (its stamp is not the flow's)
        send(6, 47001, 0, 0x18, 1001 + len(HELLO), b"A")  # a later packet `choice` reads: kept
        assert len(cl.first.keys()) == 3
        send(6, 47001, 0, 0x04, 1002 + len(HELLO), b"")
        opened(47001)
        assert cl.sweep_first() == 1
        assert sorted(k[40] for k in cl.first.keys() if k[32:34] == (47001).to_bytes(2, "big")) == [0]
    assert FIRST_ENTRIES == 4096  # the size docs/nfgrep.md gives


@pytest.mark.kernel
def test_a_reused_tuple_never_reads_the_earlier_flows_first_bytes(tmp_path: Path) -> None:
    """A flow left open after the client's first bytes (kept), then closed; the same tuple
    opens again, the server speaks first (kept), and the client's first packet hands the
    new flow over: the queue path must not take the earlier flow's client bytes (`B`,
    still in the map before) for this one's (`A`): entries are the flow's own (indexed by
    its count of kept packets, and stamped)."""
    from nfkit.nfgrep.ebpf.replay import feed_hybrid

    rules = _rules(tmp_path)
    capture = tmp_path / "reused.pcap"
    with open(capture, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)
        ts = [1.0]
        _opened(w, ts, C4, S4, 45100, HELLO + b"B")
        ts[0] += 0.001  # the client resets it
        w.writepkt(frame(6, C4, S4, 45100, 7200, 0x04, 1001 + len(HELLO) + 1, b""), ts=ts[0])
        tcp_flow(w, ts, C4, S4, 45100, 7200, [(1, b"OK"), (0, HELLO + b"A")])
    rule_files = [str(SIGNATURES), str(rules)]
    assert [r.app for r in classify([capture], rule_files).flows] == [None, "late"]
    with Classifier(load_verified(rule_files)) as cl:
        queued = feed_hybrid(cl, [capture], rule_files)
        assert cl.flow(C4, S4, 45100, 7200, 6).state == USERSPACE  # type: ignore[union-attr]
    assert queued[("tcp", C4, 45100, S4, 7200)] == "late"


# `kid` reads the client's second message once `par`, waiting for the server, has won
KID = """
protocol par over tcp ports 7202 {
    step hello from client { "HOLA" }
    step ok from server { "OK" }
}
protocol kid over tcp after par {
    step hello from client { "HOLA" }
    step choice from client { "A" }
}
"""


@pytest.mark.kernel
def test_a_later_packet_a_protocol_after_a_waiting_candidate_reads_reaches_the_queue_path(
        tmp_path: Path) -> None:
    """The candidate waiting (`par`) does not read the client's second packet, but the
    protocol that runs after it (`kid`) does once it wins: that packet is kept too, and the
    queue path reads it at the hand-over (without: it passed unseen and the hybrid said
    `par`, a wrong app; these rules alone: the shipped library's server-first protocols
    would keep it for their own reasons)."""
    from nfkit.nfgrep.ebpf.replay import endpoint, feed_hybrid

    rules = tmp_path / "kid.nfg"
    rules.write_text(KID)
    capture = tmp_path / "kid.pcap"
    with open(capture, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)
        ts = [1.0]
        for n, (client, server) in enumerate(((C4, S4), (C6, S6))):
            tcp_flow(w, ts, client, server, 44100 + n, 7202, [(0, b"HOLA"), (0, b"A"), (1, b"OK")])
    engine = classify([capture], [str(rules)]).flows
    assert [r.app for r in engine] == ["kid", "kid"]
    with Classifier(load_verified([str(rules)])) as cl:
        queued = feed_hybrid(cl, [capture], [str(rules)])
    for r in engine:
        (ca, cp), (sa, sp) = endpoint(r.client), endpoint(r.server)
        assert queued.get(("tcp", ca, cp, sa, sp)) == "kid"


REQUEST = b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"


@pytest.mark.kernel
def test_a_request_body_in_its_own_segment_stays_in_the_kernel(tmp_path: Path) -> None:
    """An HTTP POST whose body follows the headers in a second segment, before the reply
    (the flow is open: the server-first protocols wait for the server's first bytes and
    would read the client's from the start; http confirmed by the reply): the body is kept,
    not handed over, the reply decides http in the kernel, and the decision deletes the
    kept packets."""
    c4, s4 = C4, S4
    with Classifier(load_verified([reply_http_rules(tmp_path / "rules")])) as cl:
        marks = [cl.prog.test_run(frame(6, *ends, flags, seq, data))[1] for ends, flags, seq, data in (
            ((c4, s4, 41000, 80), 0x02, 1, b""), ((s4, c4, 80, 41000), 0x12, 9, b""),
            ((c4, s4, 41000, 80), 0x18, 2, REQUEST), ((c4, s4, 41000, 80), 0x18, 2 + len(REQUEST), b"hello"))]
        assert marks == [0, 0, 0, 0]  # nothing handed over
        assert sorted(k[40] for k in cl.first.keys()) == [0, 1]  # headers and body kept
        reply = frame(6, s4, c4, 80, 41000, 0x18, 10, b"HTTP/1.1 200 OK\r\n\r\n")
        assert cl.prog.test_run(reply)[1] == cl.packet_mark(cl.compiled.apps["http"])
        assert cl.flow(c4, s4, 41000, 80, 6).app == "http"  # type: ignore[union-attr]
        assert cl.first.keys() == []


def test_http_is_decided_on_the_request_and_a_waiting_child_marks_nothing_yet() -> None:
    """The shipped http decides on the request: the kernel marks the request itself.  A
    request a protocol `after` http may still claim (an Upgrade, a CONNECT) leaves the flow
    refining, and its packets carry no app until the server's answer decides: the label
    chain keeps the first app it copies into the conntrack mark, so a parent's mark there
    would stick where the child wins (it did: websocket and CONNECT flows were http)."""
    with Classifier(load_verified(None)) as cl:
        http, ws, tunnel = (cl.packet_mark(cl.compiled.apps[a]) for a in ("http", "websocket", "http-connect"))
        for port, request, answer, app in (
                (41100, REQUEST, None, http),
                (41101, b"GET /c HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
                 b"HTTP/1.1 101 Switching Protocols\r\n\r\n", ws),
                (41102, b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
                 b"HTTP/1.1 200 Connection established\r\n\r\n", tunnel)):
            cl.prog.test_run(frame(6, C4, S4, port, 80, 0x02, 1, b""))
            cl.prog.test_run(frame(6, S4, C4, 80, port, 0x12, 9, b""))
            mark = cl.prog.test_run(frame(6, C4, S4, port, 80, 0x18, 2, request))[1]
            if answer is None:
                assert mark == app
                continue
            assert mark == 0  # refining: the parent's app is not the flow's yet
            assert cl.prog.test_run(frame(6, C4, S4, port, 80, 0x10, 2 + len(request), b""))[1] == 0
            assert cl.prog.test_run(frame(6, S4, C4, 80, port, 0x18, 10, answer))[1] == app
