"""Program shapes the eBPF back end takes since the frame and the operand stack spill to
map memory (and `field ... is`): each loaded beside the shipped library and compared with
the userspace engine, flow by flow, on every capture of the corpus (BPF_PROG_TEST_RUN)."""

from __future__ import annotations

from pathlib import Path

import dpkt
import pytest

from nfkit.nfgrep.compiler import compile_text
from nfkit.nfgrep.ebpf.bpf import BpfError
from nfkit.nfgrep.ebpf.program import FIRST_ENTRIES, Classifier, compile_rules, load_verified
from nfkit.nfgrep.ebpf.replay import Comparison, compare, frame
from nfkit.nfgrep.loader import SIGNATURES
from nfkit.nfgrep.verifier import Verified, verify

from .test_ebpf import C4, C6, S4, S6, SHIPPED, made_captures, tcp_flow  # noqa: F401 (a fixture)

# operand stack 7 deep: u8 at 4 + (u8 at 5 + (... + u8 at 9)) keeps six sums pending
DEEP = """
protocol deep over tcp ports 7001 {
    step sum from client {
        "DEEP"
        u8 at 4 + (u8 at 5 + (u8 at 6 + (u8 at 7 + (u8 at 8 + u8 at 9)))) == 390
    }
}
"""
# 30 variables and nested optional blocks: a step frame of more than 256 bytes
WIDE = "protocol wide over tcp ports 7002 {\n    step many from client {\n        \"WIDE\"\n" + \
    "".join(f"        let v{i} = u8\n" for i in range(30)) + \
    "        optional { optional { optional { \"!\" } } }\n" + \
    "        v0 + v29 == 130\n    }\n}\n"


def _program(text: str, name: str) -> Verified:
    return verify(compile_text(text, name))


def _shape_capture(path: Path, port: int, payloads: list[bytes]) -> Path:
    """Flows to ``port`` with these client payloads, IPv4 and IPv6, whole and cut in two."""
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)
        ts = [1.0]
        n = 0
        for client, server in ((C4, S4), (C6, S6)):
            for data in payloads:
                for chunks in ([(0, data), (1, b"ok\r\n")],
                               [(0, data[:3]), (0, data[3:]), (1, b"ok\r\n")]):
                    tcp_flow(w, ts, client, server, 41000 + n, port, chunks)
                    n += 1
    return path


def _differential(extra: Path, captures: list[Path]) -> Comparison:
    """The shipped library plus the rule file ``extra`` on every capture, in the kernel
    and in the engine: no flow decided differently."""
    rules = [str(SIGNATURES), str(extra)]
    out = Comparison()
    for path in captures:
        with Classifier(load_verified(rules)) as cl:
            result = compare(cl, [path], rules)
        assert not result.different, [(r.client, r.server, r.app, e) for r, e in result.different]
        for name in ("same", "userspace", "expected"):
            getattr(out, name).extend(getattr(result, name))
    return out


@pytest.mark.kernel
def test_a_step_deeper_than_four_operands_is_translated(made_captures: list[Path],  # noqa: F811
                                                        tmp_path: Path) -> None:
    deep = _program(DEEP, "deep.nfg")
    assert compile_rules([deep]).translated["deep.sum"] == "yes"
    shapes = _shape_capture(tmp_path / "deep.pcap", 7001,
                            [b"DEEP" + b"A" * 6, b"DEEP" + b"A" * 5 + b"B", b"DEEPAB"])
    (tmp_path / "deep.nfg").write_text(DEEP)
    result = _differential(tmp_path / "deep.nfg", [*made_captures, shapes])
    decided = [r for r, _ in result.same if r.app == "deep"]
    assert len(decided) == 2, result.summary()  # the whole sums, v4 and v6; cut ones: userspace


@pytest.mark.kernel
def test_a_step_frame_over_256_bytes_is_translated(made_captures: list[Path],  # noqa: F811
                                                   tmp_path: Path) -> None:
    wide = _program(WIDE, "wide.nfg")
    compiled = compile_rules([wide])
    assert compiled.translated["wide.many"] == "yes"
    shapes = _shape_capture(tmp_path / "wide.pcap", 7002,
                            [b"WIDE" + b"A" + b"x" * 28 + b"A" + b"!",
                             b"WIDE" + b"A" + b"x" * 28 + b"B",
                             b"WIDE" + b"A" * 10])
    (tmp_path / "wide.nfg").write_text(WIDE)
    result = _differential(tmp_path / "wide.nfg", [*made_captures, shapes])
    assert len([r for r, _ in result.same if r.app == "wide"]) == 2, result.summary()


# `field ... is` on fields http keeps: its request step (the client's first packet) has
# held by the time the server's first packet runs the test, or on the same packet
FIELDS = """
protocol web_get over tcp after http {
    step m from server { field method is "GET" ; field host is any of "EXAMPLE.org", "b" nocase }
}
protocol web_post over tcp after http {
    step m from client { field method is "POST" ; optional { field host is "x" } }
}
"""
# a field kept by both of tls's steps, tested from the client: the server's step may still
# change it when the test runs on the ClientHello; a step that reads no data runs again
# when tls wins (the engine's moment), one that reads data cannot and is handed over
ALPN = """
protocol http2 over tcp after tls {
    step alpn from client { field alpn is any of "h2", "h2c" }
}
"""
ALPN_READING = """
protocol http2 over tcp after tls {
    step alpn from client { u8 at 0 == 0x16 ; field alpn is any of "h2", "h2c" }
}
"""


def _fields_capture(shapes: Path) -> Path:
    """HTTP flows on port 80 for FIELDS, IPv4 and IPv6 (client ports 42000...)."""
    host = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n"
    with open(shapes, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)
        ts = [1.0]
        for n, (request, reply) in enumerate([
                (host % b"example.ORG", b"HTTP/1.1 200 OK\r\n\r\n"),   # web_get (nocase)
                (host % b"example.net", b"HTTP/1.1 200 OK\r\n\r\n"),   # http
                (host % b"\xe2\x84\xaaB", b"HTTP/1.1 200 OK\r\n\r\n"),  # KELVIN SIGN + B: not "b"
                (host % (b"x" * 40), b"HTTP/1.1 200 OK\r\n\r\n"),      # longer than the entry holds
                (b"POST /f HTTP/1.0\r\n\r\n", b"HTTP/1.0 204 No Content\r\n\r\n"),  # web_post
                (b"HEAD / HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\n")]):
            for client, server in ((C4, S4), (C6, S6)):
                tcp_flow(w, ts, client, server, 42000 + 2 * n + (client == C6), 80,
                          [(0, request), (1, reply)])
    return shapes


@pytest.mark.kernel
def test_field_is_decides_in_the_kernel_from_the_fields_kept(made_captures: list[Path],  # noqa: F811
                                                            tmp_path: Path) -> None:
    (tmp_path / "fields.nfg").write_text(FIELDS)
    assert set(compile_rules(load_verified([str(SIGNATURES), str(tmp_path / "fields.nfg")]))
               .translated.items()) >= {("web_get.m", "yes"), ("web_post.m", "yes")}
    shapes = _fields_capture(tmp_path / "fields.pcap")
    result = _differential(tmp_path / "fields.nfg", [*made_captures, shapes])
    apps = sorted(r.app or "" for r, _ in result.same if r.server.endswith(":80")
                  and r.client.rpartition(":")[2].startswith("420"))
    # decided alone: example.ORG and the POST as the new apps, example.net and HEAD as http;
    # the non-ASCII host and the 40-byte one are handed over (never a guess)
    assert apps == ["http", "http", "http", "http", "web_get", "web_get", "web_post",
                    "web_post"], result.summary()
    handed = sorted(r.client for r, _ in result.userspace if r.client.rpartition(":")[2].startswith("420"))
    assert len(handed) == 4, handed
    assert any(r.app == "web_get" for r, _ in result.same if r.server.endswith("]:80")
               or r.server.endswith(".7:80")), result.summary()  # the corpus's own GET


@pytest.mark.kernel
def test_a_field_test_reading_no_data_runs_when_its_parent_wins(
        made_captures: list[Path], tmp_path: Path) -> None:  # noqa: F811
    """http2 after tls on alpn: decided in the kernel at tls's win, from the field as tls's
    two steps left it (the ClientHello's "h2", or its "http/1.1" under an alert)."""
    (tmp_path / "alpn.nfg").write_text(ALPN)
    result = _differential(tmp_path / "alpn.nfg", made_captures)
    apps = {e.app for r, e in result.same}
    assert {"http2", "tls"} <= apps, result.summary()
    assert not [r for r, e in result.userspace if r.app in ("tls", "http2")
                and r.server.endswith((":443", ":8444"))
                and r.client.rpartition(":")[2] in ("40004", "40005")]  # the whole ones


@pytest.mark.kernel
def test_a_field_a_later_step_may_change_is_handed_over(made_captures: list[Path],  # noqa: F811
                                                        tmp_path: Path) -> None:
    (tmp_path / "alpn.nfg").write_text(ALPN_READING)
    result = _differential(tmp_path / "alpn.nfg", made_captures)
    tls = [r for r, e in result.userspace if r.app in ("tls", "http2")]
    assert tls, result.summary()  # tls won, http2's test could not be read: userspace's
    assert not [r for r, e in result.same if e.app in ("tls", "http2")]


@pytest.mark.kernel
def test_random_field_tests_decide_in_the_kernel_as_in_the_engine() -> None:
    """Random parents keeping f and g (test_random_programs' statements) and children
    testing them with `field ... is` among other statements, on random traffic: the
    kernel's decision is the engine's, or the flow is handed over."""
    import os

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from .test_ebpf import engine_and_kernel_agree
    from .test_random_programs import lit, simple, step_body, traffic

    field_is = st.tuples(st.sampled_from(["f", "g"]), st.lists(lit(), min_size=1, max_size=3),
                         st.booleans()).map(
        lambda t: f"field {t[0]} is " + (t[1][0] if len(t[1]) == 1 else "any of " + ", ".join(t[1]))
        + (" nocase" if t[2] else ""))
    child = st.lists(st.one_of(field_is, field_is, simple()), min_size=1, max_size=3).map(
        lambda s: "let x = 1\n" + "\n".join(s))
    sides = st.sampled_from(["client", "server", "either"])
    programs = st.tuples(st.lists(st.tuples(sides, step_body()), min_size=1, max_size=2),
                         st.lists(st.tuples(sides, child), min_size=1, max_size=2)).map(
        lambda t: "protocol r over tcp, udp {\n" + "".join(
            f"step s{i} from {d} {{\n{b}\n}}\n" for i, (d, b) in enumerate(t[0])) + "}\n"
        + "protocol c over tcp, udp after r {\n" + "".join(
            f"step c{i} from {d} {{\n{b}\n}}\n" for i, (d, b) in enumerate(t[1])) + "}\n")
    seen = {"same": 0, "userspace": 0, "child": 0}

    @settings(max_examples=int(os.environ.get("NFKIT_EBPF_EXAMPLES", "40")), deadline=None,
              derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(text=programs, chunks=traffic, transport=st.sampled_from(["tcp", "udp"]))
    def check(text: str, chunks: list[tuple[int, bytes]], transport: str) -> None:
        compared, app = engine_and_kernel_agree(text, chunks, transport, seen)
        seen["child"] += compared and app == "c"

    check()
    print(seen)
    assert seen["same"] > 0


@pytest.mark.kernel
@pytest.mark.parametrize("shape", ["spill", "field"])
def test_a_refused_new_shape_is_named_with_the_whole_log(shape: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A spill slot or a field value the kernel verifier refuses (moved out of the map
    value here): the error names the protocol and step, and carries the verifier's log."""
    from nfkit.nfgrep.ebpf import steps

    if shape == "spill":
        monkeypatch.setattr(steps.Frame, "spill", lambda self, d: 30000 + 8 * d)
        text, where = DEEP, "in protocol deep step sum"
    else:
        monkeypatch.setattr(steps, "IS_LEN", 30000)
        text, where = FIELDS, " step m (instruction"  # web_get or web_post, as compiled
    with pytest.raises(BpfError) as info:
        Classifier([*SHIPPED, verify(compile_text(text, "shape.nfg"))])
    assert where in str(info.value), str(info.value)[:300]
    assert "invalid access to map value" in info.value.log and "processed" in info.value.log
    assert info.value.log.strip() in str(info.value)  # shown in full


def hybrid_wrong(extra: Path, captures: list[Path], first_entries: int = FIRST_ENTRIES
            ) -> list[tuple[str, str, str | None, str | None]]:
    """The kernel program with the queue path behind it (the packets it hands over), against
    the engine: (client, server, the engine's app, the hybrid's) for each flow they differ
    on (``first_entries``: the size of the classifier's first-bytes map)."""
    from nfkit.nfgrep.classify import classify
    from nfkit.nfgrep.ebpf.program import USERSPACE
    from nfkit.nfgrep.ebpf.replay import endpoint, feed_hybrid

    rules = [str(SIGNATURES), str(extra)]
    wrong = []
    for path in captures:
        with Classifier(load_verified(rules), first_entries=first_entries) as cl:
            queued = feed_hybrid(cl, [path], rules)
            for r in classify([path], rules).flows:
                (ca, cp), (sa, sp) = endpoint(r.client), endpoint(r.server)
                entry = cl.flow(ca, sa, cp, sp, 6 if r.proto == "tcp" else 17)
                if entry is not None and entry.state == USERSPACE:
                    got = queued.get((r.proto, ca, cp, sa, sp), "(undecided)")
                else:
                    got = entry.app if entry is not None else "(no entry)"
                if got != r.app:
                    wrong.append((r.client, r.server, r.app, got))
    return wrong


@pytest.mark.kernel
def test_a_field_a_later_step_may_change_is_handed_over_whole(
        made_captures: list[Path], tmp_path: Path) -> None:  # noqa: F811
    """http2 after tls reading data and testing alpn: the kernel cannot answer when tls
    wins, so such flows go to the queue path from their first payload packet, which then
    decides them as the engine does (not `unknown`: it saw every byte)."""
    (tmp_path / "alpn.nfg").write_text(ALPN_READING)
    wrong = hybrid_wrong(tmp_path / "alpn.nfg", made_captures)
    assert [w for w in wrong if w[1].endswith((":443", ":8444"))] == []
    # and no other flow: one handed over after bytes passed (the ssh conversation on 2222
    # whose server banner comes in two segments after the client's) is read from the
    # kernel's copy of each direction's first bytes first
    assert wrong == []


# a UDP parent decided on the server's first datagram, its child on the client's: the
# flow is handed over at the parent's win, after the client's first datagram went by
PING = """
protocol ping over udp ports 7100 {
    step hello from client { "PING" }
    step answer from server { "PONG" }
}
protocol ping2 over udp after ping {
    step version from client { "PING" ; u8 at 4 == 0x32 }
}
"""


@pytest.mark.kernel
@pytest.mark.parametrize("shape", ["udp child", "long or non-ASCII field"])
def test_a_flow_handed_over_after_its_first_bytes_is_decided_as_the_engine_does(
        shape: str, made_captures: list[Path], tmp_path: Path) -> None:  # noqa: F811
    """Flows the kernel hands over once a direction's first bytes have passed (a UDP
    parent's win with children; a field kept longer than the entry holds, or a non-ASCII
    byte under `nocase`, tested when the parent wins): the queue path reads those bytes
    from the kernel's first-bytes map first, and decides as the engine, not `unknown`."""
    rules = tmp_path / "shape.nfg"
    if shape == "udp child":
        rules.write_text(PING)
        shapes = tmp_path / "ping.pcap"
        with open(shapes, "wb") as f:
            w = dpkt.pcap.Writer(f, linktype=1)
            ts = [1.0]
            for n, hello in enumerate((b"PING2", b"PING1", b"PINGPING2")):
                for client, server in ((C4, S4), (C6, S6)):
                    port = 43000 + 2 * n + (client == C6)
                    for src, dst, sp, dp, data in ((client, server, port, 7100, hello),
                                                   (server, client, 7100, port, b"PONG")) * 2:
                        ts[0] += 0.001
                        w.writepkt(frame(17, src, dst, sp, dp, 0, 0, data), ts=ts[0])
    else:
        rules.write_text(FIELDS)
        shapes = _fields_capture(tmp_path / "fields.pcap")
    with Classifier(load_verified([str(SIGNATURES), str(rules)])) as cl:
        handed = compare(cl, [shapes], [str(SIGNATURES), str(rules)]).userspace
    assert len(handed) >= 4, handed  # the shapes this test is about reach the queue path
    assert hybrid_wrong(rules, [*made_captures, shapes]) == []
