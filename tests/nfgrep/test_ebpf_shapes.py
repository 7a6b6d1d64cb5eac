"""Program shapes the eBPF back end takes since the frame and the operand stack spill to
map memory (and `field ... is`): each loaded beside the shipped library and compared with
the userspace engine, flow by flow, on every capture of the corpus (BPF_PROG_TEST_RUN)."""

from __future__ import annotations

from pathlib import Path

import dpkt
import pytest

from nfkit.nfgrep.compiler import compile_text
from nfkit.nfgrep.ebpf.program import Classifier, compile_rules, load_verified
from nfkit.nfgrep.ebpf.replay import Comparison, compare
from nfkit.nfgrep.loader import SIGNATURES
from nfkit.nfgrep.verifier import Verified, verify

from .test_ebpf import C4, C6, S4, S6, SHIPPED, _tcp_flow, made_captures  # noqa: F401 (a fixture)

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
                    _tcp_flow(w, ts, client, server, 41000 + n, port, chunks)
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
