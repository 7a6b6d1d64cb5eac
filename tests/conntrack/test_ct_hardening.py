"""`nfkit ct` against bad input and impatient readers: one line, the right exit, nothing changed.

Each test here was a defect of issue 12 (a traceback, a hang, a silent loss); the
property tests at the end feed generated bad input to every ct command.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from ct_helpers import track

from nfkit.conntrack import ConntrackTable, Entry, Tuple
from nfkit.lab import Lab, Namespace

pytestmark = pytest.mark.kernel

NFKIT = [sys.executable, "-m", "nfkit"]


@pytest.fixture(name="big_ns", scope="module")
def fixture_big_ns() -> Iterator[Namespace]:
    """A tracking namespace holding 30,000 UDP entries (one per module: filling takes a second)."""
    from tests.conftest import require_kernel

    require_kernel()
    with Lab("nkb") as lab:
        ns = lab.add("big")
        track(ns)
        with ns.enter():
            table = ConntrackTable()
        with table:
            entries = [Entry(Tuple(f"192.0.2.{i % 250 + 1}", "198.51.100.2", 17, 1000 + i // 250, 53),
                             timeout=600) for i in range(30_000)]
            assert table.create_many(entries).created == 30_000
        yield ns


def nfkit(ns: Namespace, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NFKIT, "ct", "-n", ns.name, *args], capture_output=True, text=True,
                          timeout=timeout)


# ---------------------------------------------------------------- item 10: pipes and Ctrl-C

@pytest.mark.parametrize("args", [["list"], ["list", "-o", "json"], ["list", "-o", "extended"],
                                  ["list", "-p", "udp", "--timeout-below", "100000"]])
def test_closed_pipe_ends_quietly_with_141(big_ns: Namespace, args: list[str]) -> None:
    proc = subprocess.Popen([*NFKIT, "ct", "-n", big_ns.name, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert first.strip()
    assert err == "", err
    assert proc.returncode == 141


def test_closed_pipe_in_a_shell_pipeline_like_conntrack(big_ns: Namespace) -> None:
    cmd = " ".join([*NFKIT, "ct", "-n", big_ns.name, "list"])
    res = subprocess.run(["bash", "-c", f"{cmd} | head -1; echo \"${{PIPESTATUS[0]}}\""],
                         capture_output=True, text=True, timeout=60)
    theirs = subprocess.run(["bash", "-c", f"ip netns exec {big_ns.name} conntrack -L 2>/dev/null | head -1; "
                             "echo \"${PIPESTATUS[0]}\""], capture_output=True, text=True, timeout=60)
    assert res.stdout.splitlines()[-1] == theirs.stdout.splitlines()[-1] == "141"
    assert res.stderr == ""


def test_ctrl_c_during_list_is_one_line_and_130(big_ns: Namespace) -> None:
    # nobody reads stdout: the listing blocks on a full pipe, as a slow terminal would
    proc = subprocess.Popen([*NFKIT, "ct", "-n", big_ns.name, "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err == "nfkit: interrupted\n"


# ---------------------------------------------------------------- item 11: watch limits

@pytest.mark.parametrize("args, option", [
    (["--timeout", "-1"], "--timeout"), (["--timeout", "0"], "--timeout"),
    (["--timeout", "nan"], "--timeout"), (["--timeout", "inf"], "--timeout"),
    (["--timeout", "-inf"], "--timeout"), (["--timeout", "1e300"], "--timeout"),
    (["--timeout", "soon"], "--timeout"),
    (["-c", "0"], "--count"), (["-c", "-1"], "--count"), (["-c", "x"], "--count"),
])
def test_watch_refuses_timeouts_and_counts_that_never_stop(big_ns: Namespace, args: list[str],
                                                          option: str) -> None:
    res = nfkit(big_ns, "watch", *args, timeout=20)
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr
    assert option in res.stderr


def test_watch_with_a_short_timeout_stops(big_ns: Namespace) -> None:
    start = time.monotonic()
    res = nfkit(big_ns, "watch", "--timeout", "0.3", timeout=20)
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - start < 15


def test_event_stream_refuses_bad_timeouts(big_ns: Namespace) -> None:
    from nfkit.errors import InputError

    with big_ns.enter(), ConntrackTable() as t:
        for bad in (-1.0, 0.0, float("nan"), float("inf")):
            with pytest.raises(InputError):
                t.events(timeout=bad)
