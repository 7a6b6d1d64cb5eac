"""The eBPF classifier's per-packet cost for flows it has decided, followed instruction by
instruction (nfgrep.ebpf.trace) on the loaded program and its real maps."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from nfkit.nfgrep.ebpf.program import V_BORN, Classifier, load_verified
from nfkit.nfgrep.ebpf.replay import frame
from nfkit.nfgrep.ebpf.trace import trace_packet

from .replyhttp import reply_http_rules

SHIPPED = load_verified(None)
C4, S4 = ipaddress.ip_address("192.0.2.2").packed, ipaddress.ip_address("198.51.100.7").packed
C6, S6 = ipaddress.ip_address("2001:db8::2").packed, ipaddress.ip_address("2001:db8::7").packed
REQUEST = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
REPLY = b"HTTP/1.1 200 OK\r\n\r\n"


def _decide_http(cl: Classifier, client: bytes, server: bytes) -> bytes:
    """An HTTP flow decided in the kernel; returns a later data packet of it."""
    for f in (frame(6, client, server, 40000, 80, 0x02, 1, b""),
              frame(6, server, client, 80, 40000, 0x12, 9, b""),
              frame(6, client, server, 40000, 80, 0x18, 2, REQUEST),
              frame(6, server, client, 80, 40000, 0x18, 10, REPLY)):
        cl.prog.test_run(f)
    entry = cl.flow(client, server, 40000, 80, 6)
    assert entry is not None and entry.app == "http"
    assert cl.first.keys() == []  # the request's bytes, kept while open, forgotten at the decision
    return frame(6, client, server, 40000, 80, 0x10, 2 + len(REQUEST), b"x" * 1400)


@pytest.mark.kernel
@pytest.mark.parametrize("family", ["4", "6"])
def test_a_decided_flows_packet_costs_one_map_lookup(family: str) -> None:
    """Headers read in place (no bpf_skb_load_bytes), no scratch-map lookup: the flow map's
    lookup is the only map helper call (and the clock, for the idle timeout), and the mark
    the same as the kernel's."""
    client, server = (C4, S4) if family == "4" else (C6, S6)
    with Classifier(SHIPPED) as cl:
        later = _decide_http(cl, client, server)
        path = trace_packet(cl, later)
        assert path.helpers == ["map_lookup_elem", "ktime_get_coarse_ns"]
        assert path.executed <= 180, path.executed
        assert path.mark == cl.prog.test_run(later)[1] == cl.compiled.apps["http"]


@pytest.mark.kernel
def test_headers_outside_the_linear_data_are_copied() -> None:
    """A packet whose headers are not all in the skb's linear data (data_end short) takes
    bpf_skb_load_bytes instead, and gets the same mark."""
    with Classifier(SHIPPED) as cl:
        later = _decide_http(cl, C4, S4)
        fast = trace_packet(cl, later)
        for linear in (0, 14, 30):
            slow = trace_packet(cl, later, linear=linear)
            assert "skb_load_bytes" in slow.helpers
            assert slow.mark == fast.mark == cl.compiled.apps["http"]


def _ssh_on(cl: Classifier, client: bytes, server: bytes, isn: int) -> int:
    """An SSH exchange on the HTTP flow's tuple; returns the mark of its client banner."""
    cl.prog.test_run(frame(6, client, server, 40000, 80, 0x02, isn, b""))
    cl.prog.test_run(frame(6, server, client, 80, 40000, 0x12, 70000, b""))
    cl.prog.test_run(frame(6, server, client, 80, 40000, 0x18, 70001, b"SSH-2.0-OpenSSH_9.2\r\n"))
    return cl.prog.test_run(frame(6, client, server, 40000, 80, 0x18, isn + 1,
                                  b"SSH-2.0-OpenSSH_9.2\r\n"))[1]


@pytest.mark.kernel
@pytest.mark.parametrize("close", ["fins", "rst"])
def test_a_reused_tuple_is_classified_afresh(close: str) -> None:
    """A client reusing a closed connection's ports (a busy client soon wraps its port
    range) starts a new flow, as the flow table's REOPEN does: not the old app."""
    with Classifier(SHIPPED) as cl:
        _decide_http(cl, C4, S4)
        end = 2 + len(REQUEST)
        if close == "fins":
            cl.prog.test_run(frame(6, C4, S4, 40000, 80, 0x11, end, b""))
            cl.prog.test_run(frame(6, S4, C4, 80, 40000, 0x11, 10 + len(REPLY), b""))
        else:
            cl.prog.test_run(frame(6, S4, C4, 80, 40000, 0x04, 10 + len(REPLY), b""))
        assert _ssh_on(cl, C4, S4, 900000) == cl.compiled.apps["ssh"]
        entry = cl.flow(C4, S4, 40000, 80, 6)
        assert entry is not None and entry.app == "ssh"
        # one entry in the map, both decisions in the per-CPU counters
        assert len(cl.flows.keys()) == 1
        counts = cl.counts()
        assert (counts["new"], counts["reopened"], counts["decided"]) == (2, 1, {"http": 1, "ssh": 1})


@pytest.mark.kernel
def test_a_syn_inside_an_open_flow_changes_nothing() -> None:
    """A SYN while the flow is open (no FIN both ways, no RST) is no new flow, as in the
    flow table: the decided app stays."""
    with Classifier(SHIPPED) as cl:
        _decide_http(cl, C4, S4)
        cl.prog.test_run(frame(6, C4, S4, 40000, 80, 0x11, 2 + len(REQUEST), b""))  # one FIN
        assert _ssh_on(cl, C4, S4, 900000) == cl.compiled.apps["http"]


@pytest.mark.kernel
def test_a_first_payload_packet_looks_the_buffer_up_once_per_step(tmp_path: Path) -> None:
    """The request of an HTTP flow runs the steps reading the client's first bytes: each
    looks the scratch map up once, its bpf_loop callbacks get the buffer through the loop's
    context (they looked it up on every iteration: 121 lookups for this request), and a
    step whose first byte cannot match is not run at all.  (http confirmed by the reply, so
    the flow stays open and the request's bytes are kept.)"""
    with Classifier(load_verified([reply_http_rules(tmp_path / "rules")])) as cl:
        for f in (frame(6, C4, S4, 40000, 80, 0x02, 1, b""),
                  frame(6, S4, C4, 80, 40000, 0x12, 9, b"")):
            cl.prog.test_run(f)
        request = frame(6, C4, S4, 40000, 80, 0x18, 2, REQUEST)
        path = trace_packet(cl, request)
        assert "loop" in path.helpers
        assert path.helpers.count("map_lookup_elem") <= 12, path.helpers
        assert path.helpers.count("map_update_elem") == 1  # its bytes kept (nfgrep_first)
        assert path.mark == cl.prog.test_run(request)[1] == 0  # undecided until the reply
        key = cl.flows.keys()[0] + bytes(8)  # the client's direction
        kept = cl.first.lookup(key)
        assert kept is not None and kept[:len(REQUEST)] == REQUEST
        assert int.from_bytes(kept[-16:-8], "little") == len(REQUEST)
        # then the flow's stamp (its entry's), so a reused tuple's next flow never reads it
        entry = cl.flows.lookup(cl.flows.keys()[0])
        assert entry is not None and kept[-8:] == entry[V_BORN:V_BORN + 8] != bytes(8)
