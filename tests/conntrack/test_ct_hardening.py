"""`nfkit ct` against bad input and impatient readers: one line, the right exit, nothing changed.

Each test here was a defect of issue 12 (a traceback, a hang, a silent loss); the
property tests at the end feed generated bad input to every ct command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ct_helpers import conntrack_lines, norm_line, track, tracking_namespace
from tests.conftest import interruptible

from nfkit.conntrack import ConntrackTable, Entry, Tuple
from nfkit.lab import Namespace

pytestmark = pytest.mark.kernel

NFKIT = [sys.executable, "-m", "nfkit"]


@pytest.fixture(name="big_ns", scope="module")
def fixture_big_ns() -> Iterator[Namespace]:
    """A tracking namespace holding 30,000 UDP entries (one per module: filling takes a second)."""
    with tracking_namespace("nkb") as (ns, table):
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
                            stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
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


# ---------------------------------------------------------------- item 7: labels are never dropped

UDP = ["-p", "udp", "-s", "192.0.2.1", "-d", "198.51.100.2", "--dport", "53"]


def _json_entries(ns: Namespace) -> list[dict[str, object]]:
    res = nfkit(ns, "list", "-o", "json")
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def _labels_line(ns: Namespace, sport: int) -> str:
    """conntrack -L's line of the UDP entry from ``sport`` (the oracle), labels shown as bits."""
    out = ns.run(f"conntrack -L -p udp --sport {sport} -o label", check=False).stdout
    return out.strip()


def test_create_with_labels_where_labels_are_not_enabled_fails_and_creates_nothing(netns: Namespace) -> None:
    res = nfkit(netns, "create", *UDP, "--sport", "1000", "-l", "3")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "labels" in res.stderr and "--enable-labels" in res.stderr
    assert "created" not in res.stderr.split("nothing was created")[0].split(":")[-1]
    assert netns.run("conntrack -L", check=False).stdout == ""  # nothing created
    # the same entry without labels is fine
    assert nfkit(netns, "create", *UDP, "--sport", "1000").returncode == 0


def test_enable_labels_installs_one_inert_rule_and_keeps_the_labels(netns: Namespace) -> None:
    res = nfkit(netns, "create", *UDP, "--sport", "1001", "-l", "3,100", "--enable-labels")
    assert res.returncode == 0, res.stderr
    (e,) = _json_entries(netns)
    assert e["labels"] == hex((1 << 3) | (1 << 100))
    ruleset = json.loads(netns.run("nft -j list ruleset").stdout)["nftables"]
    tables = [x["table"] for x in ruleset if "table" in x]
    chains = [x["chain"] for x in ruleset if "chain" in x]
    rules = [x["rule"] for x in ruleset if "rule" in x]
    assert [(t["family"], t["name"]) for t in tables] == [("inet", "nfkit_ctlabels")]
    assert len(chains) == 1 and "hook" not in chains[0]  # no packet ever reaches it
    assert len(rules) == 1 and rules[0]["expr"] == [{"mangle": {"key": {"ct": {"key": "label"}},
                                                                "value": 127}}]
    # again: still one rule (the table is made idempotently)
    assert nfkit(netns, "create", *UDP, "--sport", "1002", "-l", "4", "--enable-labels").returncode == 0
    assert netns.run("nft list ruleset").stdout.count("ct label set") == 1
    # update: labels on an entry with room; the oracle agrees bit for bit
    assert nfkit(netns, "update", "-p", "udp", "--sport", "1002", "--label", "5").returncode == 0
    with netns.enter(), ConntrackTable() as t:
        got = {x.orig.sport: x.labels for x in t.entries()}
    assert got == {1001: (1 << 3) | (1 << 100), 1002: (1 << 4) | (1 << 5)}


def test_update_labels_without_room_changes_nothing(netns: Namespace) -> None:
    # an entry created before labels were enabled never gets room for them
    assert nfkit(netns, "create", *UDP, "--sport", "2000", "-m", "1").returncode == 0
    assert nfkit(netns, "create", *UDP, "--sport", "2001", "-l", "6", "--enable-labels").returncode == 0
    before = conntrack_lines(netns)
    res = nfkit(netns, "update", "-p", "udp", "--label", "9", "--mark", "7")
    assert res.returncode == 2
    assert "1 of 2 selected conntrack entries have no room for labels" in res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1
    assert conntrack_lines(netns) == before  # neither the mark nor the other entry's labels
    with netns.enter(), ConntrackTable() as t:
        assert {x.orig.sport: x.labels for x in t.entries()} == {2000: None, 2001: 1 << 6}


def test_create_from_with_labels_fails_before_the_rest(netns: Namespace, tmp_path: Path) -> None:
    lines = [{"proto": "udp", "orig": {"src": "192.0.2.1", "dst": "198.51.100.2", "sport": p, "dport": 53}}
             for p in (1, 2, 3)]
    lines[1]["labels"] = "0x8"
    f = tmp_path / "labels.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = nfkit(netns, "create", "--from", str(f))
    assert res.returncode == 2 and "labels 0x8 were not kept" in res.stderr
    assert netns.run("conntrack -L", check=False).stdout == ""
    res = nfkit(netns, "create", "--from", str(f), "--enable-labels")
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith("3 flow entries have been created")
    assert {e["orig"]["sport"]: e.get("labels") for e in _json_entries(netns)} == {1: None, 2: "0x8", 3: None}


# ---------------------------------------------------------------- item 9: create --from input

GOOD = '{"proto":"udp","orig":{"src":"192.0.2.1","dst":"198.51.100.2","sport":1,"dport":2}}'


def _entry_line(**extra: object) -> str:
    obj = json.loads(GOOD)
    obj.update(extra)
    return json.dumps(obj)


@pytest.mark.parametrize("second, expected", [
    ("[" * 60_000 + "]" * 60_000, ":2: JSON nested too deeply"),
    ('{"orig":' * 5000 + "{}" + "}" * 5000, ":2: "),
    (_entry_line(mark=2**70), ":2: mark: 1180591620717411303424 is out of range for a mark (0-4294967295)"),
    (_entry_line(timeout=-1), ":2: timeout: -1 is out of range"),
    (_entry_line(zone=70000), ":2: zone: 70000 is out of range for a zone number (0-65535)"),
    (_entry_line(labels=2**128), ":2: labels: "),
    (_entry_line(id=2**32), ":2: id: "),
    (_entry_line(counters={"orig": {"packets": -1}}), ":2: counters.orig.packets: "),
    (_entry_line(mark=True), ":2: mark: True is not a mark"),
    (_entry_line(status=["NOPE"]), ":2: status: unknown status 'NOPE'"),
    (_entry_line(lables="0x1"), ":2: unknown key 'lables'"),
    (_entry_line(proto=[1] * 10), ":2: proto: "),
    (_entry_line(state={"a": 1}), ":2: state: not a state name"),
    ('{"mark":' + "9" * 5000 + "}", ":2: not JSON that can be read"),
    (GOOD.replace("192.0.2.1", "a" * 10_000_000), ":2: orig.src: "),
    (GOOD.replace("192.0.2.1", "192.0.2.1\\u0000"), ":2: orig.src: "),
    (GOOD.replace("sport\":1", "sport\":99999"), ":2: orig.sport: 99999 is out of range"),
    ('{"proto":"udp","orig":{"src":"192.0.2.1","dst":"198.51.100.2","sport":1}}', ""),  # dport 0: fine
])
def test_create_from_bad_line_is_named_and_nothing_is_created(netns: Namespace, tmp_path: Path,
                                                              second: str, expected: str) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(GOOD + "\n" + second + "\n")
    res = nfkit(netns, "create", "--from", str(f))
    if not expected:
        assert res.returncode == 0, res.stderr
        return
    assert res.returncode == 2, res.stderr[-300:]
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr[-500:]
    assert res.stderr.startswith(f"nfkit: {f}{expected}"), res.stderr[:300]
    assert len(res.stderr) < 400  # a 10 MB value is not echoed
    assert netns.run("conntrack -L", check=False).stdout == ""


def test_create_from_non_utf8_names_the_line(netns: Namespace, tmp_path: Path) -> None:
    f = tmp_path / "bytes.jsonl"
    f.write_bytes(GOOD.encode() + b"\n" + GOOD.encode() + b"\n" + b'{"proto":"udp\xff"}\n')
    res = nfkit(netns, "create", "--from", str(f))
    assert res.returncode == 2 and res.stderr == f"nfkit: {f}:3: not UTF-8 text (byte 0xff)\n"
    assert netns.run("conntrack -L", check=False).stdout == ""


def test_non_utf8_bytes_in_options_are_one_line(netns: Namespace) -> None:
    for args in (["create", "-p", "udp", "-s", "192.0.2.1\udcff", "-d", "198.51.100.2", "--sport", "1",
                  "--dport", "2"],
                 ["list", "-p", "ud\udcffp"], ["delete", "-s", "\udcff"], ["list", "-l", "x\udcff"],
                 ["create", "--from", "/nonexistent/\udcff.jsonl"]):
        res = subprocess.run([*NFKIT, "ct", "-n", netns.name, *(os.fsencode(a) for a in args)],
                             capture_output=True, timeout=60)
        assert res.returncode == 2, (args, res.stderr)
        assert b"Traceback" not in res.stderr and res.stderr.count(b"\n") == 1, res.stderr


# ---------------------------------------------------------------- item 17: messages like conntrack

@pytest.mark.parametrize("args, message", [
    (["list", "--zone", "70000"], "--zone: 70000 is out of range for a zone number (0-65535)"),
    (["delete", "-w", "65536"], "--zone: 65536 is out of range for a zone number (0-65535)"),
    (["create", *UDP, "--sport", "1", "--zone", "70000"],
     "--zone: 70000 is out of range for a zone number (0-65535)"),
    (["list", "-s", "192.0.2.0/99"], "-s/--src: prefix length 99 out of range 0-32"),
    (["delete", "-d", "2001:db8::/129"], "-d/--dst: prefix length 129 out of range 0-128"),
    (["list", "--reply-src", "192.0.2.0/-1"], "--reply-src: prefix length '-1' out of range 0-32"),
    (["list", "-p", "udp", "--sport", "²"], "--sport: '²' is not a port number (0-65535)"),
    (["list", "-m", "1/0x1ffffffff"], "-m/--mark mask: 8589934591 is out of range for a mark"),
    (["create", "-p", "icmp", "-s", "192.0.2.1", "-d", "198.51.100.2", "--sport", "1"],
     "--sport: protocol icmp has no ports"),
])
def test_messages_name_the_value_and_its_range(netns: Namespace, args: list[str], message: str) -> None:
    res = nfkit(netns, *args)
    assert res.returncode == 2
    assert res.stderr == f"nfkit: {message}\n" or res.stderr.startswith(f"nfkit: {message}"), res.stderr


def test_summaries_go_to_stderr_like_conntrack(netns: Namespace) -> None:
    track(netns)
    for ours, theirs in (
            (["create", *UDP, "--sport", "7"], "conntrack -I -p udp -s 192.0.2.1 -d 198.51.100.2 "
                                               "--sport 8 --dport 53 -t 30"),
            # (conntrack 1.4.7 -U with -p fails here with EOPNOTSUPP; -s selects both entries)
            (["update", "-p", "udp", "--sport", "7", "--mark", "3"], "conntrack -U -s 192.0.2.1 -m 3"),
            (["delete", "-p", "udp", "--sport", "7"], "conntrack -D -p udp --sport 8"),
            (["flush"], "conntrack -F")):
        mine = nfkit(netns, *ours)
        assert mine.returncode == 0, mine.stderr
        other = netns.run(theirs, check=False)
        # conntrack prints the summary on stderr (and -D the deleted entry on stdout)
        assert "flow entries have been" in other.stderr or "has been emptied" in other.stderr
        assert mine.stdout == ""
        summary = other.stderr.strip().split("): ", 1)[1]

        def words(text: str) -> str:  # the summary without its count and nfkit's "(method)"
            text = text.split(" (")[0].strip().rstrip(".")
            return text.split(" ", 1)[1] if text[:1].isdigit() else text

        assert mine.stderr.count("\n") == 1
        assert words(mine.stderr) == words(summary)


def test_stats_spelled_like_conntrack(netns: Namespace) -> None:
    track(netns)
    mine = nfkit(netns, "stats").stdout.splitlines()
    theirs = netns.run("conntrack -S").stdout.splitlines()
    assert mine[:len(theirs)] == theirs
    assert "chaintoolong=" in mine[0]


def test_sctp_states_listed_like_conntrack(netns: Namespace, tmp_path: Path) -> None:
    track(netns)
    base = "conntrack -I -p sctp -s 192.0.2.1 -d 198.51.100.2 --dport 2 -t 100 --orig-vtag 1 --reply-vtag 2"
    netns.run(f"{base} --sport 1 --state NONE")
    netns.run(f"{base} --sport 2 --state ESTABLISHED")
    netns.run(f"{base} --sport 3 --state SHUTDOWN_SENT")
    res = nfkit(netns, "list")
    assert sorted(norm_line(x) for x in res.stdout.splitlines()) == conntrack_lines(netns)
    assert " NONE src=" in res.stdout and " ESTABLISHED src=" in res.stdout
    saved = nfkit(netns, "list", "-o", "json").stdout
    states = {json.loads(x)["orig"]["sport"]: json.loads(x)["state"] for x in saved.splitlines()}
    assert states == {1: "NONE", 2: "ESTABLISHED", 3: "SHUTDOWN_SENT"}
    # a restore creates what it can create exactly (state NONE), and refuses the rest by line
    f = tmp_path / "sctp.jsonl"
    f.write_text(saved)
    netns.run("conntrack -F", check=False)
    res = nfkit(netns, "create", "--from", str(f))
    assert res.returncode == 2 and "state: a SCTP entry can be created in state NONE only" in res.stderr
    assert netns.run("conntrack -L", check=False).stdout == ""
    none_only = [x for x in saved.splitlines() if '"NONE"' in x]
    f.write_text("\n".join(none_only) + "\n")
    assert nfkit(netns, "create", "--from", str(f)).returncode == 0
    assert " NONE src=192.0.2.1 dst=198.51.100.2 sport=1 " in netns.run("conntrack -L").stdout


# ---------------------------------------------------------------- item 10: one fix point for every command

def _buffered_env() -> dict[str, str]:
    # PYTHONUNBUFFERED makes CPython drop the rest of a write the reader cut short, silently
    # (a partial write is taken as done): with it, a big single write never sees the closed pipe
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


@pytest.mark.parametrize("args", [["rules", "list"], ["rules", "list", "--json"]])
def test_other_listings_end_quietly_on_a_closed_pipe(netns: Namespace, args: list[str]) -> None:
    rules = "".join(f"add rule inet big c tcp dport {p} counter\n" for p in range(1, 4001))
    netns.run(["nft", "-f", "-"], input="add table inet big\nadd chain inet big c\n" + rules)
    cmd = " ".join(["ip", "netns", "exec", netns.name, *NFKIT, *args])
    # head -c: the JSON listing is one line
    res = subprocess.run(["bash", "-c", f"{cmd} | head -c 100 >/dev/null; echo \"${{PIPESTATUS[0]}}\""],
                         capture_output=True, text=True, timeout=60, env=_buffered_env())
    assert res.stdout.strip() == "141"
    assert res.stderr == ""


def test_watch_ends_quietly_when_its_reader_goes(netns: Namespace) -> None:
    track(netns)
    proc = subprocess.Popen([*NFKIT, "ct", "-n", netns.name, "watch", "--timeout", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_buffered_env())
    assert proc.stdout is not None and proc.stderr is not None
    try:
        time.sleep(1.0)  # subscribed
        proc.stdout.close()
        for port in range(1, 40):
            netns.run(f"conntrack -I -p udp -s 192.0.2.1 -d 198.51.100.2 --sport {port} --dport 53 -t 30")
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.wait(timeout=20)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 141
    assert err == b""


@pytest.mark.parametrize("name", ["", " "])
def test_an_empty_namespace_name_is_not_the_host(name: str) -> None:
    # `nfkit ct -n "$NS" flush` with NS unset must not flush the host's table: refused
    # before any socket is opened (the command under test is harmless either way: count)
    res = subprocess.run([*NFKIT, "ct", "-n", name, "count"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr == "nfkit: -n/--netns: empty namespace name\n"
    assert res.stdout == ""
