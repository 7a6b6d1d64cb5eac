"""`nfkit ct` on the command line: options, errors, output formats, save and restore."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ct_helpers import (  # noqa: F401  (fixtures are used by name)
    conntrack_lines,
    fixture_ct_ns,
    fixture_ct_table,
    fixture_filled,
    key,
    norm_line,
    run_cli,
)

from nfkit.conntrack import ConntrackTable, Entry, Status
from nfkit.lab import Namespace

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("args, option", [
    (["delete", "-s", "192.0.2.256"], "-s/--src"),
    (["delete", "--status", "UNREPLIED,BOGUS"], "--status"),
    (["delete", "-m", "4294967296"], "-m/--mark"),
    (["delete", "-p", "udp", "--dport", "65536"], "--dport"),
    (["delete", "--state", "NOPE"], "--state"),
    (["delete", "-f", "ipv5"], "-f/--family"),
    (["list", "--reply-src", "2001:db8::/200"], "--reply-src"),
    (["create", "-p", "udp", "-s", "192.0.2.1", "-d", "198.51.100.x", "--sport", "1", "--dport", "2"],
     "-d/--dst"),
    (["update", "-p", "udp", "--mark", "0x1ffffffff"], "--mark"),
    (["update", "-p", "udp", "--set-status", "SEEN_REPLY,NOPE"], "--set-status"),
])
def test_bad_input_is_one_line_naming_the_option_and_changes_nothing(
        filled: tuple[ConntrackTable, list[Entry]], ct_ns: Namespace, args: list[str],
        option: str) -> None:
    t, _made = filled
    before = {key(e): e.mark for e in t.entries()}
    code, _out, err = run_cli("ct", "-n", ct_ns.name, *args)
    assert code == 2
    assert err.startswith(f"nfkit: {option}") and err.count("\n") == 1, err
    assert {key(e): e.mark for e in t.entries()} == before


def test_delete_without_filter_is_refused(filled: tuple[ConntrackTable, list[Entry]],
                                          ct_ns: Namespace) -> None:
    t, made = filled
    code, _, err = run_cli("ct", "-n", ct_ns.name, "delete")
    assert code == 2 and "flush" in err
    assert t.count() == len(made)


def test_save_flush_restore_round_trip(filled: tuple[ConntrackTable, list[Entry]], ct_ns: Namespace,
                                       tmp_path: Path) -> None:
    t, made = filled
    code, saved, _ = run_cli("ct", "-n", ct_ns.name, "list", "-o", "json")
    assert code == 0 and len(saved.splitlines()) == len(made)
    before = {key(e): (e.mark, e.state, e.status, e.labels) for e in t.entries()}
    dump = tmp_path / "table.jsonl"
    dump.write_text(saved)
    assert run_cli("ct", "-n", ct_ns.name, "flush")[0] == 0
    assert t.count() == 0
    code, out, err = run_cli("ct", "-n", ct_ns.name, "create", "--from", str(dump))
    assert code == 0, err
    assert err.startswith(f"{len(made)} flow entries have been created")  # stderr, as conntrack
    after = {key(e): (e.mark, e.state, e.status, e.labels) for e in t.entries()}
    assert after == before
    # again: everything exists already, reported, not an error
    code, out, _ = run_cli("ct", "-n", ct_ns.name, "create", "--from", str(dump), "--json")
    assert json.loads(out) == {"created": 0, "exists": len(made), "failed": {}}


def test_create_from_bad_file_creates_nothing(ct_table: ConntrackTable, ct_ns: Namespace,
                                              tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"proto":"udp","orig":{"src":"192.0.2.1","dst":"198.51.100.2","sport":1,"dport":2}}\n'
                 '{"proto":"udp","orig":{"src":"192.0.2.1","dst":"198.51.100.2","sport":99999,"dport":2}}\n')
    code, _, err = run_cli("ct", "-n", ct_ns.name, "create", "--from", str(f))
    assert code == 2 and f"{f}:2: orig.sport" in err
    assert ct_table.count() == 0


def test_create_list_text_like_conntrack(ct_table: ConntrackTable, ct_ns: Namespace) -> None:
    base = ["ct", "-n", ct_ns.name, "create"]
    assert run_cli(*base, "-p", "tcp", "-s", "192.0.2.1", "-d", "198.51.100.2", "--sport", "1025",
                   "--dport", "22", "--state", "ESTABLISHED", "--status", "SEEN_REPLY,ASSURED",
                   "-m", "9", "-t", "300")[0] == 0
    assert run_cli(*base, "-p", "udp", "-s", "2001:db8::1", "-d", "2001:db8::2", "--sport", "5353",
                   "--dport", "53", "--reply-src", "2001:db8::9")[0] == 0
    assert run_cli(*base, "-p", "icmp", "-s", "192.0.2.1", "-d", "198.51.100.2")[0] == 0
    code, out, err = run_cli("ct", "-n", ct_ns.name, "list")
    assert sorted(norm_line(x) for x in out.splitlines()) == conntrack_lines(ct_ns)
    assert "3 flow entries have been shown" in err
    code, out, _ = run_cli("ct", "-n", ct_ns.name, "list", "-o", "extended", "-f", "ipv6")
    assert out.startswith("ipv6     10 udp      17 ")
    code, out, _ = run_cli("ct", "-n", ct_ns.name, "count", "--json", "-p", "tcp")
    assert json.loads(out) == {"count": 1}
    code, out, _ = run_cli("ct", "-n", ct_ns.name, "stats", "--json")
    stats = json.loads(out)
    assert stats["global"]["entries"] == 3 and stats["cpu"]
    _code, _, err = run_cli("ct", "-n", ct_ns.name, "update", "-p", "tcp", "--mark", "0x10/0xf0", "-t", "99")
    assert err.startswith("1 flow entries have been updated")
    (e,) = [x for x in ct_table.entries() if x.proto == 6]
    assert e.mark == 0x19 and e.timeout <= 99
    code, _, err = run_cli("ct", "-n", ct_ns.name, "update", "-p", "udp", "--set-status", "SEEN_REPLY")
    assert err.startswith("1 flow entries have been updated")
    (u,) = [x for x in ct_table.entries() if x.proto == 17]
    assert u.status & Status.SEEN_REPLY


def test_watch_prints_events_as_json(ct_table: ConntrackTable, ct_ns: Namespace) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nfkit", "ct", "-n", ct_ns.name, "watch", "-o", "json", "-c", "2",
         "-p", "udp", "--timeout", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import time

        deadline = time.monotonic() + 10
        # wait until it has subscribed: create entries until one is seen
        port = 1
        while proc.poll() is None and time.monotonic() < deadline:
            run_cli("ct", "-n", ct_ns.name, "create", "-p", "udp", "-s", "192.0.2.1", "-d",
                    "198.51.100.2", "--sport", str(port), "--dport", "53")
            run_cli("ct", "-n", ct_ns.name, "create", "-p", "tcp", "-s", "192.0.2.1", "-d",
                    "198.51.100.2", "--sport", str(port), "--dport", "53")
            port += 1
            time.sleep(0.2)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    events = [json.loads(x) for x in out.splitlines()]
    assert len(events) == 2
    assert all(ev["event"] == "new" and ev["proto"] == "udp" for ev in events)
