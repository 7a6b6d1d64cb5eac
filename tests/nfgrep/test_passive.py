"""`nfkit nfgrep classify -i`: live traffic of real programs, against tcpdump's capture of it.

One lab: tcpdump and three live runs (one process stopped by SIGTERM, two
fanout workers stopped by SIGINT, one process printing text) watch the
server's link while curl, openssl, dig, ssh, redis, mosquitto, smtp and ftp
clients talk; the live flows must be the flows of the capture classified
offline, each printed as it was decided, while the capture still ran.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nfkit.nfgrep.classify import classify
from nfkit.nfgrep.labtraffic import TrafficLab

pytestmark = pytest.mark.kernel

SCENARIOS = [("http", {}), ("http", {"ipv6": True}), ("tls", {}), ("dns", {}),
             ("dns", {"tcp": True, "name": "mail.example.test"}), ("ssh", {}), ("redis", {}),
             ("mqtt", {}), ("smtp", {}), ("ftp", {}), ("random_bytes", {"count": 2})]


def _start(tl: TrafficLab, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    out, err = tl.dir / f"{name}.out", tl.dir / f"{name}.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = tl.server.popen([sys.executable, "-m", "nfkit", "nfgrep", "classify", "-i", "eth0",
                                *args], stdout=o, stderr=e)
    deadline = time.monotonic() + 30
    while b"listening on eth0" not in err.read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.05)
    return proc, out, err


def _made(flows: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    """The flows the clients made (not the kernel's own ICMPv6 chatter, timed differently)."""
    return [f for f in flows if f["proto"] in ("tcp", "udp")]


def _decision(f: dict) -> dict:  # type: ignore[type-arg]
    """A flow without its counts: a live line has the counts when it was decided."""
    return {k: v for k, v in f.items() if k not in ("packets", "bytes", "decision_ms")}


def _rows(flows: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return sorted(json.dumps(_decision(f), sort_keys=True) for f in _made(flows))


def _shown_while_running(proc: subprocess.Popen[bytes], out: Path, text: str) -> bool:
    """Does ``text`` appear in the run's output while the run goes on (within 10 s)?"""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if text in out.read_text():
            return proc.poll() is None
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    from tests.conftest import require_kernel

    require_kernel()
    work = tmp_path_factory.mktemp("passive")
    with TrafficLab(work) as tl:
        pcap = tl.capture("eth.pcap", "eth0")
        one = _start(tl, "one", "--json")
        two = _start(tl, "two", "--json", "--fanout", "2")
        text = _start(tl, "text")
        results: dict[str, object] = {}
        for name, kw in SCENARIOS:
            getattr(tl, name)(**kw)
            if name == "http" and not kw:  # the decision is out before the run ends
                results["early"] = [_shown_while_running(proc, out, mark) for (proc, out, _), mark in
                                    ((one, '"app": "http"'), (two, '"app": "http"'), (text, " http "))]
        tl.stop_captures()  # tcpdump has every packet; the rings hand blocks over within 0.1 s
        time.sleep(0.5)
        results["stats"] = dict(tl.capture_stats)
        for key, (proc, out, err), sig in (("one", one, signal.SIGTERM), ("two", two, signal.SIGINT),
                                           ("text", text, signal.SIGINT)):
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == 0, err.read_text()
            lines = out.read_text().splitlines()
            results[key] = lines if key == "text" else [json.loads(line) for line in lines]
            results[f"{key}-err"] = err.read_text()
        results["offline"] = [f.as_json() for f in classify([pcap]).flows]
    return results


def test_the_live_flows_are_the_flows_of_the_capture(runs: dict) -> None:  # type: ignore[type-arg]
    assert runs["stats"]["eth.pcap"][2] == 0, runs["stats"]  # tcpdump lost nothing
    assert _rows(runs["one"]) == _rows(runs["offline"])
    # decided before the flow ended: at most the packets of the whole flow
    total = {(f["client"], f["server"]): f for f in runs["offline"]}
    for f in _made(runs["one"]):
        whole = total[f["client"], f["server"]]
        assert f["packets"][0] <= whole["packets"][0] and f["packets"][1] <= whole["packets"][1]
        if f["app"] in ("http", "tls", "ssh"):  # decided by the engine, before the flow ended
            assert sum(f["packets"]) < sum(whole["packets"]) and f["decision_ms"] >= 0, f
    apps = {f["app"] for f in runs["one"]}
    assert {"http", "tls", "dns", "ssh", "redis", "mqtt", "smtp", "ftp", "ftp-data"} <= apps
    assert "Traceback" not in runs["one-err"] and "dropped" not in runs["one-err"]


def test_fanout_workers_together_see_the_same_flows(runs: dict) -> None:  # type: ignore[type-arg]
    """Every flow once, as offline; only an FTP data flow may miss its label (other worker)."""
    def key(f: dict) -> str:  # type: ignore[type-arg]
        g = dict(f)
        if g["app"] in ("ftp-data", "unknown") and g["proto"] == "tcp":
            g["app"] = "ftp-data?"
        return json.dumps(_decision(g), sort_keys=True)

    assert sorted(map(key, _made(runs["two"]))) == sorted(map(key, _made(runs["offline"])))
    assert "(2 workers, fanout hash)" in runs["two-err"]


def test_each_flow_is_printed_as_it_is_decided(runs: dict) -> None:  # type: ignore[type-arg]
    """JSON, fanout and text lines come out while the capture runs; the signal ends it with
    the summary, exit 0 (checked in the fixture)."""
    assert runs["early"] == [True, True, True]
    lines = [line for line in runs["text"] if line.startswith(("tcp", "udp"))]
    assert len(lines) == len(_made(runs["one"]))
    for key in ("one", "two", "text"):
        err = runs[f"{key}-err"]
        assert " http " in err and "flows on eth0" in err and "Traceback" not in err, err


def test_count_duration_and_bad_input(tmp_path: Path) -> None:
    from nfkit.lab import Lab
    from tests.conftest import require_kernel

    require_kernel()
    cmd = [sys.executable, "-m", "nfkit", "nfgrep", "classify"]
    with Lab("nfgc") as lab:
        ns = lab.add("a")
        ns.run(["ip", "link", "set", "lo", "up"])
        err = tmp_path / "count.err"
        with open(tmp_path / "count.json", "wb") as o, open(err, "wb") as e:
            proc = ns.popen([*cmd, "-i", "lo", "--count", "4", "--json"], stdout=o, stderr=e)
        deadline = time.monotonic() + 30
        while b"listening on lo" not in err.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        ns.run(["ping", "-c", "6", "-i", "0.2", "127.0.0.1"])
        assert proc.wait(timeout=30) == 0, err.read_text()
        (flow,) = [json.loads(x) for x in (tmp_path / "count.json").read_text().splitlines()]
        assert flow["proto"] == "icmp" and sum(flow["packets"]) == 4  # loopback: each packet once
        err = tmp_path / "duration.err"
        with open(tmp_path / "duration.json", "wb") as o, open(err, "wb") as e:
            proc = ns.popen([*cmd, "-i", "lo", "--duration", "3", "--json"], stdout=o, stderr=e)
        while b"listening on lo" not in err.read_bytes():
            assert proc.poll() is None, err.read_text()
            time.sleep(0.05)
        ns.run(["ping", "-c", "3", "-i", "0.2", "127.0.0.1"])
        assert proc.wait(timeout=30) == 0, err.read_text()
        (flow,) = [json.loads(x) for x in (tmp_path / "duration.json").read_text().splitlines()]
        assert sum(flow["packets"]) == 6  # each packet once, not leaving and arriving
        assert "6 packets, 1 flows on lo" in err.read_text()
        bad = ns.run([*cmd, "-i", "nosuch0"], check=False)
        assert bad.returncode == 2 and bad.stderr.strip().splitlines() == \
            ["nfkit: interface nosuch0: no such interface"]
    both = subprocess.run([*cmd, "-i", "lo", str(tmp_path / "x.pcap")], capture_output=True, text=True)
    assert both.returncode == 2 and "not both" in both.stderr and "Traceback" not in both.stderr
    alone = subprocess.run([*cmd, "--count", "3", str(tmp_path / "x.pcap")], capture_output=True,
                           text=True)
    assert alone.returncode == 2 and "go with -i" in alone.stderr
