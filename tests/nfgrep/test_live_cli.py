"""`nfkit nfgrep live` refuses bad input in one line (exit 2) before touching the kernel; unit."""

from __future__ import annotations

import subprocess
import sys

import pytest

NFKIT = [sys.executable, "-m", "nfkit", "nfgrep"]


def nfkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NFKIT, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,message", [
    (["--queues", "3:1"], "--queues 3:1: queue numbers 0-65535, A <= B"),
    (["--queues", "a:b"], "--queues 'a:b': expected A:B"),
    (["--queue", "1", "--queues", "1:2"], "--queue and --queues: give one of them"),
    (["--mark-mask", "0x7f"], "--mark-mask 0x7f: 7 bits cannot hold app ids up to 127 and the "
                              "direction bit"),
    (["--mark-mask", "0xf0f0"], "the bits must be contiguous"),
    (["--max-packets", "0"], "--max-packets and --max-bytes must be at least 1"),
    (["--rules", "/nonexistent/rules.nfg"], "/nonexistent/rules.nfg: no such rule file"),
])
def test_bad_options(args: list[str], message: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = nfkit("live", "--connlabel", str(tmp_path / "connlabel.conf"), "--status-socket",
                 str(tmp_path / "s.sock"), *args)
    assert proc.returncode == 2, proc
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("nfkit: ") and message in line, line
    assert not (tmp_path / "connlabel.conf").exists()  # nothing written, nothing installed


def test_connlabel_conflict_is_one_line_and_changes_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "connlabel.conf"
    conf.write_text("# mine\n5 http\n")
    proc = nfkit("live", "--connlabel", str(conf), "--status-socket", str(tmp_path / "s.sock"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"nfkit: {conf}:2: label 'http' is bit 5 there; nfkit's registry "
                                   "gives application 'http' bit 2")
    assert conf.read_text() == "# mine\n5 http\n"


def test_status_without_a_daemon(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = nfkit("status", "--socket", str(tmp_path / "none.sock"))
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "no daemon is running" in proc.stderr


def test_unit() -> None:
    proc = nfkit("unit", "--queues", "0:3")
    assert proc.returncode == 0
    assert "nfgrep live --queues 0:3\n" in proc.stdout
    assert "KillSignal=SIGTERM" in proc.stdout and "/etc/connlabel.conf" in proc.stdout
