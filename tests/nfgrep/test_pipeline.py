"""`classify --jobs`: parse workers ahead of the walk give what one process gives, byte for byte.

The captures are cut into many small batches and spans (the module constants
made small) so that a few thousand frames cross many batch and span borders;
`pipeline.PIPELINE_MIN` is 0 so that small files get workers too.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nfkit.nfgrep import classify as classify_module
from nfkit.nfgrep import pipeline
from nfkit.nfgrep.capture import LINK_ETHERNET, CaptureReader
from nfkit.nfgrep.classify import classify
from tests.conftest import interruptible
from tests.nfgrep.test_capture_files import A4, A6, B4, B6, ether, ipv4, ipv6, tcp, udp

SYN, SYNACK, ACK, PSH, FIN = 0x02, 0x12, 0x10, 0x18, 0x11
SMALL = {"BATCH": 257, "SPAN": 48 << 10}  # frames per batch, bytes per span of records


def _client(k: int, v6: bool) -> bytes:
    return (A6[:-2] if v6 else A4[:-2]) + struct.pack("!H", 0x0100 + k % 4000)


def _conversation(k: int) -> list[bytes]:
    """A flow of kind ``k % 6``: HTTP over IPv4 or IPv6, a DNS query, an ICMP echo, VLAN-tagged
    TCP (two tags: decoded one by one), a fragmented datagram."""
    kind, sport = k % 6, 20000 + k
    v6 = kind == 1
    c, s = _client(k, v6), B6 if v6 else B4
    ip = ipv6 if v6 else ipv4

    def seg(a: bytes, b: bytes, sp: int, dp: int, seq: int, flags: int, data: bytes = b"") -> bytes:
        return ether(ip(6, tcp(sp, dp, seq, flags, data), a, b), 0x86DD if v6 else 0x0800)

    if kind in (0, 1):
        req = b"GET /%d HTTP/1.1\r\nHost: h%d.example\r\nUser-Agent: t\r\n\r\n" % (k, k)
        return [seg(c, s, sport, 80, 1, SYN), seg(s, c, 80, sport, 9, SYNACK), seg(c, s, sport, 80, 2, ACK),
                seg(c, s, sport, 80, 2, PSH, req), seg(s, c, 80, sport, 10, PSH, b"HTTP/1.1 200 OK\r\n\r\n"),
                seg(c, s, sport, 80, 2 + len(req), FIN), seg(s, c, 80, sport, 31, FIN)]
    if kind == 2:
        q = struct.pack("!HHHHHH", k & 0xFFFF, 0x0100, 1, 0, 0, 0) + b"\x03www\x07example\x03org\x00\x00\x01\x00\x01"
        return [ether(ipv4(17, udp(sport, 53, q), c, B4), 0x0800),
                ether(ipv4(17, udp(53, sport, q[:2] + b"\x81\x80" + q[4:]), B4, c), 0x0800)]
    if kind == 3:
        echo = struct.pack("!BBHHH", 8, 0, 0, k & 0xFFFF, 1) + b"ping"
        return [ether(ipv4(1, echo, c, B4), 0x0800)]
    if kind == 4:
        return [ether(ipv4(6, tcp(sport, 22, 1, SYN), c, B4), 0x0800, vlans=(0x88A8, 0x8100)),
                ether(ipv4(6, tcp(22, sport, 5, SYNACK), B4, c), 0x0800, vlans=(0x88A8, 0x8100)),
                ether(ipv4(6, tcp(22, sport, 6, PSH, b"SSH-2.0-OpenSSH_9.2\r\n"), B4, c), 0x0800,
                      vlans=(0x88A8, 0x8100))]
    return [ether(ipv4(17, udp(sport, 5000, b"x" * 40), c, B4, frag=0x2000), 0x0800),
            ether(ipv4(17, b"y" * 24, c, B4, frag=6), 0x0800)]


def _frames(flows: int) -> list[bytes]:
    """Flows interleaved as traffic is: each starts before the previous one ends."""
    convs = [_conversation(k) for k in range(flows)]
    out: list[bytes] = []
    for step in range(0, flows + 8):
        for lag in range(8):
            k = step - lag
            if 0 <= k < flows and lag < len(convs[k]):
                out.append(convs[k][lag])
    return out


def _write(path: Path, frames: list[bytes]) -> None:
    """`write_pcap`'s file (Ethernet, microseconds), written in one go."""
    parts = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LINK_ETHERNET)]
    for i, f in enumerate(frames):
        parts += [struct.pack("<IIII", 1700000000 + i // 50, i % 50 * 1000, len(f), len(f)), f]
    path.write_bytes(b"".join(parts))


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pipe") / "mixed.pcap"
    _write(path, _frames(1500))
    return path


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SMALL.items():
        monkeypatch.setattr(classify_module, name, value)
    monkeypatch.setattr(pipeline, "PIPELINE_MIN", 0)


def _json(path: Path, jobs: int) -> tuple[list[str], list[str], list[str]]:
    report = classify([path], jobs=jobs)
    return [r.json_line() for r in report.flows], [str(s) for s in report.stops], report.notes


def _children() -> list[int]:
    me = os.getpid()
    return [int(p) for t in os.listdir(f"/proc/{me}/task")
            for p in Path(f"/proc/{me}/task/{t}/children").read_text().split()]


def test_the_workers_give_what_one_process_gives(small: None, capture: Path) -> None:
    one = _json(capture, 1)
    assert len(one[0]) > 1000 and not one[1]
    before = _children()
    for jobs in (2, 3):
        assert _json(capture, jobs) == one
        assert _children() == before  # every worker reaped


def test_several_files_each_get_workers(small: None, capture: Path) -> None:
    """The first file's workers start before the rules load, the next ones' as each is read."""
    one = classify([capture, capture], jobs=1)
    two = classify([capture, capture], jobs=2)
    assert [r.json_line() for r in two.flows] == [r.json_line() for r in one.flows]
    assert two.packets == one.packets == 2 * classify([capture]).packets
    assert _children() == []


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damage_mid_file_is_reported_as_one_process_reports_it(small: None, capture: Path,
                                                               tmp_path: Path, damage: str) -> None:
    data = bytearray(capture.read_bytes())
    offsets = []
    pos = 24
    while pos < len(data):  # every record's offset (the writer's own layout)
        offsets.append(pos)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    mid = offsets[len(offsets) * 3 // 5]
    path = tmp_path / f"{damage}.pcap"
    if damage == "truncated":
        path.write_bytes(data[:mid + 30])
    else:
        data[mid + 8:mid + 12] = struct.pack("<I", 1 << 24)
        path.write_bytes(data)
    one = _json(path, 1)
    assert len(one[1]) == 1 and f"byte {mid})" in one[1][0]
    assert _json(path, 2) == one


def test_batches_kept_by_the_walk_are_never_overwritten(small: None, capture: Path) -> None:
    """A caller that keeps every batch: the worker's slots are pinned one by one, the rest of
    the batches come over the pipe, and every kept batch still holds its own columns."""
    kept = _front_batches(capture, keep=True)
    alone = _front_batches(capture, keep=True, workers=0)
    assert len(kept) == len(alone) > 3 * pipeline.SLOTS
    for a, b in zip(kept, alone, strict=True):
        _same_batch(a, b)


def test_batches_too_big_for_a_slot_come_over_the_pipe(small: None, capture: Path) -> None:
    got = _front_batches(capture, slot_bytes=4096)
    alone = _front_batches(capture, workers=0)
    for a, b in zip(got, alone, strict=True):
        _same_batch(a, b)


def _front_batches(path: Path, keep: bool = False, workers: int = 1,
                   slot_bytes: int | None = None) -> list[dict[str, object]]:
    """Each batch's columns as the front gave them; ``keep``: as they are once all came."""
    reader = CaptureReader(path)
    mapped = reader.pcap_map()
    assert mapped is not None
    data, link, rec, divisor = mapped
    front = pipeline.PcapFront(data, link, rec, divisor, SMALL["BATCH"], SMALL["SPAN"])
    items = pipeline.parsed(front, workers, slot_bytes=slot_bytes) if workers else front.batches()
    kept, seen = [], []
    for item in items:
        assert isinstance(item, pipeline.Parsed)
        if keep:
            kept.append(item.batch)
        else:
            seen.append(_columns(item.batch))
        del item
    return [_columns(b) for b in kept] if keep else seen


def _columns(b: object) -> dict[str, object]:
    return {k: _copy(v) for k, v in vars(b).items() if k != "buf"}


def _copy(v: object) -> object:
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, (list, tuple)):
        return type(v)(_copy(x) for x in v)
    return v


def _same_batch(a: object, b: object) -> None:
    assert isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), k
        elif isinstance(x, (list, tuple)):
            assert all(np.array_equal(p, q) for p, q in zip(x, y, strict=True)), k
        else:
            assert x == y, k


def test_a_batch_crosses_whatever_its_attributes(small: None, capture: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Attributes a batch may gain (the front end changes): an array over the file's mapping
    and a memoryview of it arrive as views of the walking process's own mapping, any other
    array as a copy; the report is unchanged."""
    from nfkit.nfgrep import batch as batch_module

    real_init = batch_module.Batch.__init__

    def init(self: Any, buf: Any, *args: Any, **kw: Any) -> None:
        real_init(self, buf, *args, **kw)
        self.over_file = np.frombuffer(buf, dtype=np.uint8)[100:200:3]
        self.file_bytes = memoryview(buf)[50:90]
        self.rows = np.arange(15.0).reshape(3, 5)

    monkeypatch.setattr(batch_module.Batch, "__init__", init)
    alone, got = _front_batches(capture, workers=0), _front_batches(capture)
    for a, b in zip(alone, got, strict=True):
        assert bytes(a.pop("file_bytes")) == bytes(b.pop("file_bytes"))  # type: ignore[call-overload]
        _same_batch(a, b)
    one, two = _json(capture, 1), _json(capture, 2)
    assert two == one and not two[2]


@pytest.mark.parametrize(("jobs", "sig"), [(2, signal.SIGKILL), (3, signal.SIGTERM)])
def test_a_worker_killed_mid_run_leaves_the_rest_to_the_walk(small: None, capture: Path, jobs: int,
                                                             sig: signal.Signals,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker killed (the others, if any, are stopped): the same flows and stops."""
    one = _json(capture, 1)
    taken = []
    real_batch = classify_module.Classifier._batch

    def walk(self: classify_module.Classifier, b: object) -> None:
        taken.append(1)
        if len(taken) == 3:
            kids = _children()
            assert len(kids) == jobs - 1
            os.kill(kids[-1], sig)
        real_batch(self, b)  # type: ignore[arg-type]

    monkeypatch.setattr(classify_module.Classifier, "_batch", walk)
    lines, stops, notes = _json(capture, jobs)
    assert (lines, stops) == one[:2]
    assert len(notes) == 1 and f"parse worker was killed ({sig.name})" in notes[0], notes
    assert _children() == []


def test_a_worker_that_fails_leaves_the_rest_to_the_walk(small: None, capture: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    one = _json(capture, 1)
    walker = os.getpid()
    real_parse = pipeline.PcapFront.parse
    calls = []

    def parse(self: pipeline.PcapFront, at: np.ndarray) -> object:
        calls.append(1)
        if os.getpid() != walker and len(calls) == 5:
            raise MemoryError("the worker's own")
        return real_parse(self, at)

    monkeypatch.setattr(pipeline.PcapFront, "parse", parse)
    lines, stops, notes = _json(capture, 2)
    assert (lines, stops) == one[:2]
    assert len(notes) == 1 and "parse worker failed (MemoryError: the worker's own)" in notes[0]
    assert _children() == []


# -- the command ---------------------------------------------------------------------

_RUN = ("import sys; from nfkit.nfgrep import classify, pipeline; "
        "pipeline.PIPELINE_MIN = 0; classify.BATCH = {batch}; classify.SPAN = {span}; "
        "from nfkit.cli.entry import run; run(sys.argv[1:])")


def _nfkit(args: list[str], batch: int = SMALL["BATCH"], **kw: object) -> subprocess.Popen[bytes]:
    code = _RUN.format(batch=batch, span=SMALL["SPAN"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, **kw)  # type: ignore[call-overload]


@pytest.mark.parametrize("form", [["--jobs", "2"], ["--jobs=2"], ["--jobs", "0"],
                                  ["--jobs", "2", "--max-flows", "1048576"]])
def test_the_command_prints_the_same_bytes(capture: Path, form: list[str]) -> None:
    """The quick path (--jobs N or --jobs=N) and click's (another option given) alike."""
    one = _nfkit(["nfgrep", "classify", "--json", str(capture)]).communicate()
    p = _nfkit(["nfgrep", "classify", *form, "--json", str(capture)])
    out, err = p.communicate()
    assert p.returncode == 0 and err == b"" and one[1] == b""
    assert out == one[0] and out.count(b"\n") > 1000


def test_a_bad_jobs_value_is_refused_alike(capture: Path) -> None:
    for form in (["--jobs", "x"], ["--jobs=-1"]):
        quick = _nfkit(["nfgrep", "classify", *form, str(capture)])
        slow = _nfkit(["nfgrep", "classify", *form, "--max-flows", "10", str(capture)])
        (_, e1), (_, e2) = quick.communicate(), slow.communicate()
        assert quick.returncode == slow.returncode == 2
        assert e1 == e2 and b"--jobs" in e1


@pytest.fixture(scope="module")
def long_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pipe") / "long.pcap"
    _write(path, _frames(8000))
    return path


@pytest.mark.parametrize("how", ["ctrl-c", "sigint", "sigterm"])
def test_an_interrupt_mid_run_leaves_no_process(long_capture: Path, how: str) -> None:
    # batches of 64 frames: the walk lasts long enough to be interrupted with the worker running
    p = _nfkit(["nfgrep", "classify", "--json", "--jobs", "2", str(long_capture)], batch=64,
               start_new_session=True, preexec_fn=interruptible)
    kids: list[str] = []
    deadline = time.monotonic() + 20
    while not kids and time.monotonic() < deadline and p.poll() is None:
        kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        time.sleep(0.01)
    assert kids, "no parse worker started"
    time.sleep(0.2)
    if how == "ctrl-c":  # the terminal's Ctrl-C: the whole process group
        os.killpg(p.pid, signal.SIGINT)
    else:
        os.kill(p.pid, signal.SIGINT if how == "sigint" else signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    if how == "sigterm":
        assert p.returncode == -signal.SIGTERM and err == b""
    else:
        assert p.returncode == 130 and err == b"nfkit: interrupted\n"
    for pid in kids:  # reaped by the walking process: not even a zombie left to init
        assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} left behind"
