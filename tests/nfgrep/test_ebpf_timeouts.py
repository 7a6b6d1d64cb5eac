"""The kernel flow map's idle timeouts: a tuple reused after its flow's idle timeout is a
new flow, decided afresh, as the userspace flow table and engine decide it (the same
timeouts, per transport and state; BPF_PROG_TEST_RUN, the entry's last-seen time set back
through the map)."""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import pytest

from nfkit.flow.timeouts import Timeouts
from nfkit.nfgrep.classify import classify
from nfkit.nfgrep.ebpf.program import V_LAST, Classifier, flow_key, load_verified
from nfkit.nfgrep.ebpf.replay import frame

from .test_ebpf import C4, S4

# two protocols on one UDP port: the same tuple may carry either
TWO = """
protocol alpha over udp ports 7100 {
    step hello from client { "ALPHA" }
}
protocol beta over udp ports 7100 {
    step hello from client { "BETA" }
}
"""
T = Timeouts()


def _run(tmp_path: Path, first: list[tuple[int, bytes]], gap: float,
         second: list[tuple[int, bytes]], proto: int = 17) -> tuple[str | None, str | None]:
    """``first``'s packets, ``gap`` seconds idle, then ``second``'s on the same tuple:
    (the engine's app for the tuple's last flow, the kernel's)."""
    rules = tmp_path / "two.nfg"
    rules.write_text(TWO)
    packets = []
    for at, chunks in ((1.0, first), (1.0 + gap, second)):
        for i, (d, data) in enumerate(chunks):
            src, dst, sp, dp = (C4, S4, 40000, 7100) if d == 0 else (S4, C4, 7100, 40000)
            packets.append((at + 0.001 * i, frame(proto, src, dst, sp, dp, 0x18, 1, data)))
    path = tmp_path / "reuse.pcap"
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)
        for ts, data in packets:
            w.writepkt(data, ts=ts)
    flows = [r for r in classify([path], [str(rules)]).flows if r.client.endswith(":40000")]
    with Classifier(load_verified([str(rules)])) as cl:
        key, _ = flow_key(C4, S4, 40000, 7100, proto)
        for i, (_ts, data) in enumerate(packets):
            if i == len(first):  # the idle gap: the entry last saw a packet ``gap`` ago
                raw = bytearray(cl.flows.lookup(key) or b"")
                last = struct.unpack_from("<Q", raw, V_LAST)[0]
                struct.pack_into("<Q", raw, V_LAST, last - int(gap * 1e9))
                cl.flows.update(key, bytes(raw))
            cl.prog.test_run(data)
        entry = cl.flow(C4, S4, 40000, 7100, proto)
    assert entry is not None
    return flows[-1].app, entry.app


@pytest.mark.kernel
@pytest.mark.parametrize(("replied", "gap", "app"), [
    (False, T.udp + 10, "beta"),           # unreplied: 30 s, then a new flow
    (False, T.udp - 10, "alpha"),          # within it: the same flow, decided already
    (True, T.udp + 10, "alpha"),           # replied (a stream): 120 s
    (True, T.udp_stream + 10, "beta"),
])
def test_a_udp_tuple_reused_after_its_idle_timeout_is_decided_afresh(
        tmp_path: Path, replied: bool, gap: float, app: str) -> None:
    first = [(0, b"ALPHA one")] + ([(1, b"ok")] if replied else [])
    engine, kernel = _run(tmp_path, first, gap, [(0, b"BETA two")])
    assert engine == app
    assert kernel == engine


@pytest.mark.kernel
def test_the_idle_timeout_is_the_classifiers_to_choose(tmp_path: Path) -> None:
    """A short timeout given to the classifier: a real wait ends the flow."""
    import time

    rules = tmp_path / "two.nfg"
    rules.write_text(TWO)
    with Classifier(load_verified([str(rules)]), timeouts=Timeouts(udp=0.05)) as cl:
        cl.prog.test_run(frame(17, C4, S4, 40000, 7100, 0, 0, b"ALPHA"))
        cl.prog.test_run(frame(17, C4, S4, 40000, 7100, 0, 0, b"BETA"))
        entry = cl.flow(C4, S4, 40000, 7100, 17)
        assert entry is not None and entry.app == "alpha"
        time.sleep(0.1)
        cl.prog.test_run(frame(17, C4, S4, 40000, 7100, 0, 0, b"BETA"))
        entry = cl.flow(C4, S4, 40000, 7100, 17)
        assert entry is not None and entry.app == "beta"
        assert cl.counts()["reopened"] == 1
