"""Classify traffic made by real programs in namespaces and captured by tcpdump.

One lab and one capture session per module: every scenario runs once, tcpdump
records it on the server's Ethernet link (pcap, Ethernet) and on `any` (pcap,
Linux cooked SLL2); a pcapng copy of the Ethernet capture is written with
dpkt's writer.  Each test then checks one flow of those files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

from nfkit.nfgrep.capture import CaptureReader, decode
from nfkit.nfgrep.classify import ClassifyReport, FlowResult, classify
from nfkit.nfgrep.labtraffic import SERVER4, SERVER6, TrafficLab, Truth

pytestmark = pytest.mark.kernel

SCENARIOS = [
    ("http", {}), ("http", {"ipv6": True}), ("http_one_byte", {}), ("tls", {}),
    ("tls", {"sni": "api.example.test", "alpn": "http/1.1", "port": 8443}), ("ssh", {}),
    ("dns", {}), ("dns", {"tcp": True, "name": "mail.example.test"}), ("redis", {}), ("mqtt", {}),
    ("smtp", {}), ("pop3", {}), ("imap", {}), ("ftp", {}), ("ftp", {"active": True}), ("websocket", {}),
    ("connect_tunnel", {}), ("random_bytes", {"count": 3}),
]


def _to_pcapng(src: Path, dst: Path) -> None:
    with open(src, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        link = reader.datalink()
        with open(dst, "wb") as out:
            writer = dpkt.pcapng.Writer(out, linktype=link)
            for ts, frame in reader:
                writer.writepkt(frame, ts=float(ts))


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    from tests.conftest import require_kernel

    require_kernel()
    # A capture tcpdump reports as lossy ("dropped by kernel": its ring
    # overflowed on a loaded machine) is not a valid input: make it again.
    for _attempt in range(3):
        work = tmp_path_factory.mktemp("traffic")
        with TrafficLab(work) as tl:
            eth = tl.capture("eth.pcap", "eth0")
            anyif = tl.capture("any.pcap", "any")
            for name, kw in SCENARIOS:
                getattr(tl, name)(**kw)
            tl.stop_captures()
            truth = list(tl.truth)
            stats = dict(tl.capture_stats)
        if all(dropped == 0 for _, _, dropped in stats.values()):
            break
    assert all(dropped == 0 for _, _, dropped in stats.values()), \
        f"tcpdump dropped packets in 3 attempts: {stats}"
    ng = work / "eth.pcapng"
    _to_pcapng(eth, ng)
    return {"eth": eth, "any": anyif, "pcapng": ng, "truth": truth, "stats": stats,
            "reports": {k: classify([p]) for k, p in (("eth", eth), ("any", anyif), ("pcapng", ng))}}


def _match(report: ClassifyReport, truth: list[Truth]) -> list[tuple[Truth, FlowResult | None]]:
    """Pair each made flow with the next unused classified flow of its server (in order)."""
    used: set[int] = set()
    pairs = []
    for t in truth:
        found = None
        for i, r in enumerate(report.flows):
            if i in used or r.proto != t.transport:
                continue
            addr, _, port = r.server.rpartition(":")
            if addr.strip("[]") != t.server or (t.port and int(port) != t.port):
                continue
            if not t.port and r.app != t.app:  # "any port" (ftp-data): take the labelled one
                continue
            found = i
            break
        if found is not None:
            used.add(found)
        pairs.append((t, report.flows[found] if found is not None else None))
    return pairs


def test_link_types_of_the_captures(captures: dict) -> None:
    assert CaptureReader(captures["eth"]).format == "pcap"
    for key, link in (("eth", 1), ("any", 276), ("pcapng", 1)):
        reader = CaptureReader(captures[key])
        frames = list(reader)
        assert reader.linktypes == {link} and reader.stop is None and frames


@pytest.mark.parametrize("capture", ["eth", "any", "pcapng"])
def test_every_flow_made_is_classified_as_made(captures: dict, capture: str) -> None:
    wrong = []
    for t, r in _match(captures["reports"][capture], captures["truth"]):
        if r is None:
            wrong.append(f"{t.app} on port {t.port}: flow not found")
            continue
        if r.app != t.app:
            wrong.append(f"{t.app or 'unknown'} on port {t.port} ({t.note}): got {r.app}")
        for k, v in t.fields:
            if not str(r.fields.get(k, "")).startswith(v):
                wrong.append(f"{t.app} on port {t.port}: field {k}={r.fields.get(k)!r}, want {v!r}")
    stats = captures["stats"].get(f"{capture}.pcap" if capture != "pcapng" else "eth.pcap")
    assert not wrong, "\n".join([*wrong, f"tcpdump (captured, received, dropped): {stats}"])


def test_sides_and_counters_follow_the_handshake(captures: dict) -> None:
    report = captures["reports"]["eth"]
    http = [r for r in report.flows if r.server == f"{SERVER4}:8000" and r.app == "http"]
    assert http and all(r.client.startswith("192.0.2.2:") for r in http)
    assert all(not r.guessed_sides for r in http)
    # counters match the frames of that flow in the capture, each way
    r = http[0]
    cport = int(r.client.rsplit(":", 1)[1])
    up = down = up_bytes = down_bytes = 0
    for _, link, frame in CaptureReader(captures["eth"]):
        p = decode(link, frame)
        if p and p[0] == 6 and p[3] == cport and p[4] == 8000:
            up += 1
            up_bytes += p[8]
        elif p and p[0] == 6 and p[3] == 8000 and p[4] == cport:
            down += 1
            down_bytes += p[8]
    assert r.packets == [up, down] and r.bytes == [up_bytes, down_bytes]
    v6 = [r for r in report.flows if r.server == f"[{SERVER6}]:8000"]
    assert v6 and v6[0].app == "http"


def test_one_byte_segments_were_really_one_byte(captures: dict) -> None:
    """The split request did go out as one-byte segments, and classified like the whole one."""
    sizes: dict[int, list[int]] = {}
    for _, link, frame in CaptureReader(captures["eth"]):
        p = decode(link, frame)
        if p and p[0] == 6 and p[4] == 8000 and p[7]:
            sizes.setdefault(p[3], []).append(len(p[7]))
    split = [s for s in sizes.values() if s.count(1) >= 40]
    assert split, sizes
    flows = [r for r in captures["reports"]["eth"].flows if r.fields.get("host") == "split.example"]
    assert len(flows) == 1 and flows[0].app == "http"
    assert flows[0].fields.get("user_agent") == "one-byte/1"


def test_random_bytes_on_443_are_not_tls(captures: dict) -> None:
    flows = [r for r in captures["reports"]["eth"].flows if r.server == f"{SERVER4}:443"]
    assert len(flows) == 3
    assert all(r.app is None and r.packets[0] >= 3 for r in flows)


def test_ftp_data_connection_is_labelled_by_expectation(captures: dict) -> None:
    flows = captures["reports"]["eth"].flows
    data = [r for r in flows if r.app == "ftp-data"]
    assert len(data) == 2
    passive, active = data
    port = int(passive.server.rsplit(":", 1)[1])
    assert 40000 <= port <= 40100  # vsftpd's passive range, announced on the control flow
    # active: the server connected to the address and port the client announced
    assert active.server.startswith("192.0.2.2:") and active.client.startswith(f"{SERVER4}:")


def test_cli_json_and_text(captures: dict) -> None:
    cmd = [sys.executable, "-m", "nfkit", "nfgrep", "classify"]
    proc = subprocess.run([*cmd, "--json", str(captures["eth"])], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert all(set(r) == {"proto", "client", "server", "app", "fields", "packets", "bytes"}
               for r in rows)
    tls = [r for r in rows if r["server"] == f"{SERVER4}:4433"]
    assert tls and tls[0]["app"] == "tls" and tls[0]["fields"]["sni"] == "www.example.test"
    text = subprocess.run([*cmd, str(captures["eth"])], capture_output=True, text=True, timeout=60)
    assert text.returncode == 0
    line = next(x for x in text.stdout.splitlines() if f"{SERVER4}:4433" in x)
    assert line.startswith("tcp 192.0.2.2:") and " tls " in line and "sni=www.example.test" in line
    assert len(text.stdout.splitlines()) == len(rows)


def test_truncated_capture_classifies_what_it_can(captures: dict, tmp_path: Path) -> None:
    data = Path(captures["eth"]).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) * 2 // 3])
    proc = subprocess.run([sys.executable, "-m", "nfkit", "nfgrep", "classify", "--json", str(cut)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"{cut}: stopped at packet" in proc.stderr and "truncated" in proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert any(r["app"] == "http" for r in rows)
    # garbage in the middle: a record length that cannot be
    bad = bytearray(data)
    bad[len(bad) // 2: len(bad) // 2 + 64] = b"\xff" * 64
    corrupt = tmp_path / "corrupt.pcap"
    corrupt.write_bytes(bytes(bad))
    proc = subprocess.run([sys.executable, "-m", "nfkit", "nfgrep", "classify", str(corrupt)],
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 1) and os.path.getsize(corrupt) == len(data)



@pytest.mark.parametrize("capture", ["eth", "any", "pcapng"])
def test_batches_and_bulk_counting_give_the_per_packet_report(captures: dict, capture: str) -> None:
    """`Classifier.read` (batches, bulk counting) == `read_each` (every frame through `packet`)."""
    from nfkit.nfgrep.classify import Classifier
    from nfkit.nfgrep.engine import Engine
    from nfkit.nfgrep.loader import load_rules

    reports = []
    for batched in (True, False):
        cl = Classifier(Engine(load_rules(None)))
        (cl.read if batched else cl.read_each)(captures[capture])
        reports.append(cl.finish())
    assert reports[0] == reports[1]
    assert reports[0].flows == captures["reports"][capture].flows


@pytest.mark.parametrize("capture", ["eth", "any"])
def test_the_vectorised_record_walk_on_real_captures(captures: dict, capture: str) -> None:
    """`pcap_records` (numpy, blocks small enough to have many) finds `pcap_offsets`' records."""
    import mmap

    from nfkit.nfgrep.capture import pcap_offsets, pcap_records

    with open(captures[capture], "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        want = pcap_offsets(data, 24, 1 << 40, True)
        for block, window in ((4096, 2048), (1000, 300), (512, 256), (1 << 18, 2048)):
            pos, got, stopped = 24, [], False
            while not stopped:
                offsets, pos, stopped = pcap_records(data, pos, pos + (1 << 20), True, 1e6,
                                                     block=block, window=window)
                got.extend(offsets.tolist())
            assert (got, pos, stopped) == want and len(got) > 100
    finally:
        data.close()


@pytest.mark.parametrize("capture", ["eth", "any"])
def test_parse_workers_give_the_report_of_one_process(captures: dict, capture: str,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`--jobs 2` on the real captures (cut into batches of 64 frames, spans of 16 KiB, so that
    there are many of each), whole and truncated mid-way: the same JSON lines and stops."""
    from nfkit.nfgrep import classify as classify_module
    from nfkit.nfgrep import pipeline

    monkeypatch.setattr(classify_module, "BATCH", 64)
    monkeypatch.setattr(classify_module, "SPAN", 16 << 10)
    monkeypatch.setattr(pipeline, "PIPELINE_MIN", 0)
    whole = captures[capture]
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size * 2 // 3])
    for path in (whole, cut):
        one, two = classify([path]), classify([path], jobs=2)
        assert [r.json_line() for r in two.flows] == [r.json_line() for r in one.flows]
        assert two.stops == one.stops and two.notes == [] and len(one.flows) > (20 if path == whole else 5)
        assert bool(one.stops) == (path == cut)
