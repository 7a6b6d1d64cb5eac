"""Engine semantics: splitting, waiting, giving up, chaining, hints, watches, expectations."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.nfgrep.bytecode import OPS
from nfkit.nfgrep.compiler import compile_text
from nfkit.nfgrep.engine import WINDOW, Engine, FlowState, signatures_of
from nfkit.nfgrep.loader import load_rules
from nfkit.nfgrep.verifier import verify

LIBRARY = load_rules()


def engine_for(text: str, with_library: bool = False) -> Engine:
    sigs = signatures_of(verify(compile_text(text, "t.nfg")))
    return Engine((list(LIBRARY) if with_library else []) + sigs)


def feed_all(engine: Engine, chunks: list[tuple[int, bytes]], transport: str = "tcp",
             port: int = 0) -> FlowState:
    flow = engine.new_flow(transport, 40000, port)
    for d, data in chunks:
        engine.feed(flow, d, data)
    return flow


def tls_handshake(server_name: str, alpn: list[str]) -> list[tuple[int, bytes]]:
    """ClientHello and the server's first flight, made by Python's ssl (OpenSSL) in memory."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        key, cert = f"{d}/k.pem", f"{d}/c.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=x", "-keyout", key,
                        "-out", cert, "-days", "1"], check=True, capture_output=True)
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(cert, key)
        sctx.set_alpn_protocols(alpn)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    cctx.set_alpn_protocols(alpn)
    cin, cout, sin, sout = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = cctx.wrap_bio(cin, cout, server_hostname=server_name)
    server = sctx.wrap_bio(sin, sout, server_side=True)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    hello = cout.read()
    sin.write(hello)
    with pytest.raises(ssl.SSLWantReadError):
        server.do_handshake()
    return [(0, hello), (1, sout.read())]


TLS = tls_handshake("shop.example.test", ["h2", "http/1.1"])
HTTP = [(0, b"POST /api HTTP/1.1\r\nHost: api.example\r\nUser-Agent: probe/2\r\n"
            b"Content-Length: 2\r\n\r\nhi"), (1, b"HTTP/1.1 204 No Content\r\n\r\n")]
FTP = [(1, b"220 (vsFTPd 3.0.3)\r\n"), (0, b"USER anonymous\r\n"),
       (1, b"331 Please specify the password.\r\n"), (0, b"PASS \r\n"),
       (1, b"230 Login successful.\r\n"), (0, b"PASV\r\n"),
       (1, b"227 Entering Passive Mode (192,0,2,10,195,80).\r\n"), (0, b"EPSV\r\n"),
       (1, b"229 Entering Extended Passive Mode (|||40001|)\r\n")]


def test_tls_from_pythons_ssl() -> None:
    flow = feed_all(Engine(LIBRARY), TLS, port=9999)
    assert flow.app == "tls" and flow.done
    assert flow.fields == {"sni": "shop.example.test", "alpn": "h2", "version": "TLSv1.3"}


def split_chunks(chunks: list[tuple[int, bytes]], cuts: list[int]) -> list[tuple[int, bytes]]:
    out = []
    for i, (d, data) in enumerate(chunks):
        points = sorted({c % (len(data) + 1) for c in cuts[i::len(chunks)]} | {0, len(data)})
        out += [(d, data[a:b]) for a, b in zip(points, points[1:], strict=False) if b > a]
    return out


@settings(max_examples=60, deadline=None)
@given(which=st.sampled_from(["tls", "http", "ftp"]),
       cuts=st.lists(st.integers(0, 5000), max_size=40))
def test_any_segmentation_gives_the_same_verdict(which: str, cuts: list[int]) -> None:
    chunks = {"tls": TLS, "http": HTTP, "ftp": FTP}[which]
    whole = feed_all(Engine(LIBRARY), chunks)
    split = feed_all(Engine(LIBRARY), split_chunks(chunks, cuts))
    assert whole.app == which
    assert (split.app, split.chain, split.fields, split.expectations) == \
        (whole.app, whole.chain, whole.fields, whole.expectations)


def test_ftp_expectations_without_addresses_match_on_port() -> None:
    engine = Engine(LIBRARY)
    flow = feed_all(engine, FTP, port=21)
    assert [(e.label, e.addr, e.port) for e in flow.expectations] == \
        [("ftp-data", "192.0.2.10", 195 * 256 + 80), ("ftp-data", None, 40001)]
    assert not flow.done  # the watches go on reading the control channel
    data = engine.new_flow("tcp", 41000, 40001)
    assert data.app == "ftp-data" and data.done
    data = engine.new_flow("tcp", 41000, 195 * 256 + 80)  # no address given: port decides
    assert data.app == "ftp-data"
    assert engine.expected == []


def test_a_flow_sees_only_the_expectations_announced_before_it_began() -> None:
    """Expectations are dated with `Engine.now`: a walk that feeds a control flow's later
    packets before a flow that began earlier must not label that flow."""
    engine = Engine(LIBRARY)
    control = engine.new_flow("tcp", 40000, 21, "192.0.2.1", "192.0.2.10")
    for now, (d, data) in enumerate(FTP[:7]):  # the PASV reply (port 50000) at 6
        engine.now = now
        engine.feed(control, d, data)
    port = 195 * 256 + 80
    assert not engine.expecting("tcp", port, since=6)
    early = engine.new_flow("tcp", 41000, port, "192.0.2.1", "192.0.2.10", since=6)
    assert early.app is None and not early.done
    assert engine.expecting("tcp", port, since=7)
    late = engine.new_flow("tcp", 41001, port, "192.0.2.1", "192.0.2.10", since=7)
    assert late.app == "ftp-data" and late.done
    assert not engine.expecting("tcp", port, since=8)  # taken: one flow per announcement


def test_a_taken_expectation_leaves_the_later_announcements_of_its_key() -> None:
    """Announced at 5 and again at 9: a flow begun at 7 takes the first, one begun at 12 the
    second, one begun at 20 none (what capture order gives)."""
    engine = Engine(LIBRARY)
    control = engine.new_flow("tcp", 40000, 21, "192.0.2.1", "192.0.2.10")
    for d, data in FTP[:5]:
        engine.feed(control, d, data)
    pasv = b"227 Entering Passive Mode (192,0,2,10,4,1).\r\n"
    for now in (5, 9):
        engine.now = now
        engine.feed(control, 1, pasv)
    assert [(e.port, e.label) for e in engine.expected] == [(1025, "ftp-data")]
    got = [engine.new_flow("tcp", 41000 + t, 1025, "192.0.2.1", "192.0.2.10", since=t).app
           for t in (7, 12, 20)]
    assert got == ["ftp-data", "ftp-data", None]
    assert engine.expected == []


def test_chaining_on_a_field_of_the_verdict() -> None:
    """A TLS ALPN name after tls: a protocol that requires tls and reads its kept field."""
    engine = engine_for('''protocol http2 over tcp after tls {
        step alpn from client { field alpn is any of "h2", "h2c" }
    }
    protocol http1-tls over tcp after tls {
        step alpn from client { field alpn is "http/1.1" }
    }''', with_library=True)
    flow = feed_all(engine, TLS)
    assert (flow.app, flow.chain, flow.done) == ("http2", ["tls", "http2"], True)
    flow = feed_all(engine, tls_handshake("a.example", ["http/1.1"]))
    assert flow.chain == ["tls", "http1-tls"]
    flow = feed_all(engine, tls_handshake("a.example", ["spdy/3"]))
    assert (flow.chain, flow.fields["alpn"], flow.done) == (["tls"], "spdy/3", True)


def test_watch_resumes_after_its_buffer_was_trimmed() -> None:
    """Regression: a reply line arriving in pieces after the watch trimmed its buffer."""
    engine = Engine(LIBRARY)
    flow = engine.new_flow("tcp", 40000, 21, "192.0.2.1", "192.0.2.10")
    for d, data in FTP[:5]:
        engine.feed(flow, d, data)
    line = b"227 Entering Passive Mode (192,0,2,10,4,1).\r\n"
    # a line that waits for its end at the same buffer length the next line has
    engine.feed(flow, 1, b"150 " + b"x" * (len(line) - 5) + b"\r")
    engine.feed(flow, 1, b"\n")
    engine.feed(flow, 1, line)
    assert [e.port for e in flow.expectations] == [1025]


def test_long_control_sessions_keep_announcing() -> None:
    """Watches read far past the candidates' window: only what they still need is kept."""
    engine = Engine(LIBRARY)
    flow = engine.new_flow("tcp", 40000, 21, "192.0.2.1", "192.0.2.10")
    for d, data in FTP[:5]:
        engine.feed(flow, d, data)
    for _ in range(3 * WINDOW // 40):
        engine.feed(flow, 0, b"NOOP\r\n")
        engine.feed(flow, 1, b"200 NOOP ok, keep going, please.\r\n")
    engine.feed(flow, 1, b"227 Entering Passive Mode (192,0,2,10,4,1).\r\n")
    assert [e.port for e in flow.expectations] == [1025]
    assert max(len(b) for b in flow._bufs) < 1024


def test_give_up_either_and_udp_steps() -> None:
    engine = engine_for('''
    protocol a over tcp {
        step one from either { "HELLO" at 0 ; optional { " bad" ; give up } }
        step two from client { "OK" at 0 }
    }
    protocol u over udp {
        step q from client { "Q" at 0 }
        step r from server { "R" at 0 }
        step q2 from client { "Q2" at 0 }
    }''')
    assert feed_all(engine, [(1, b"HELLO there"), (0, b"OK")]).app == "a"
    assert feed_all(engine, [(0, b"HELLO"), (0, b" there")]).app is None
    gave_up = feed_all(engine, [(1, b"HELLO bad"), (0, b"OK")])
    assert gave_up.app is None and gave_up.done
    # UDP: each step reads its own datagram
    assert feed_all(engine, [(0, b"Q"), (1, b"R"), (0, b"Q2")], "udp").app == "u"
    assert feed_all(engine, [(0, b"Q"), (0, b"Q2")], "udp").app is None
    assert feed_all(engine, [(0, b"Q"), (1, b"R")], "udp").app is None


def test_udp_watch_reads_each_datagram() -> None:
    engine = engine_for('''protocol sip over udp {
        step hello from client { "S" at 0 }
        watch media from server { "M " at 0 ; expect rtp over udp to server port decimal }
    }''')
    flow = engine.new_flow("udp", 5060, 5060, "192.0.2.1", "192.0.2.2")
    for d, data in [(0, b"S"), (1, b"M 7000"), (1, b"junk"), (1, b"M 7002"), (0, b"M 1")]:
        engine.feed(flow, d, data)
    assert flow.app == "sip" and not flow.done
    assert [(e.label, e.transport, e.addr, e.port) for e in flow.expectations] == \
        [("rtp", "udp", "192.0.2.2", 7000), ("rtp", "udp", "192.0.2.2", 7002)]
    assert engine.new_flow("udp", 9, 7002, "192.0.2.1", "192.0.2.2").app == "rtp"
    assert engine.new_flow("udp", 9, 7002, "192.0.2.1", "192.0.2.2").app is None


def test_port_hints_only_order_the_candidates() -> None:
    engine = engine_for('''
    protocol first over tcp ports 1000 { step s from client { "X" at 0 } }
    protocol second over tcp ports 2000 { step s from client { "X" at 0 } }
    ''')
    assert feed_all(engine, [(0, b"X")], port=1000).app == "first"
    assert feed_all(engine, [(0, b"X")], port=2000).app == "second"
    assert feed_all(engine, [(0, b"X")], port=3000).app == "first"
    assert feed_all(engine, [(0, b"Y")], port=2000).app is None


def test_undecided_flows_end_at_the_window() -> None:
    engine = engine_for('protocol w over tcp { step s from client { find "END" within 65536 } }')
    flow = engine.new_flow("tcp", 1, 2)
    engine.feed(flow, 0, b"x" * 1000)
    assert not flow.done
    engine.feed(flow, 0, b"x" * WINDOW)
    assert flow.done and flow.app is None


def test_optional_undoes_fields_and_variables() -> None:
    engine = engine_for('''protocol o over tcp { step s from client {
        let v = 1
        optional { let v = 2 ; keep f bytes 2 ; "nope" }
        v == 1
        keep g = v
    } }''')
    flow = feed_all(engine, [(0, b"abcdef")])
    assert flow.app == "o" and flow.fields == {"g": "1"}


def test_trace_events() -> None:
    engine = Engine(LIBRARY)
    engine.trace = True
    flow = feed_all(engine, HTTP)
    results = [(e.protocol, e.step, e.result) for e in flow.events]
    assert ("http", "request", "held") in results
    assert ("http", "request", "classified") in results
    seen: list[str] = []
    engine.trace = lambda ev: seen.append(ev.result)
    feed_all(engine, HTTP)
    assert "classified" in seen


def test_docs_list_every_opcode() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "nfgrep.md").read_text()
    for op in OPS.values():
        assert f"| {op.code:#04x} | {op.name} |" in docs, op.name
