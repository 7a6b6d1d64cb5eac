"""service.daemon and service.owntable: a real daemon process in a namespace."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nfkit.errors import CapabilityError
from nfkit.service.daemon import query_status, wait_for_status
from nfkit.service.systemd import unit

DAEMON = r'''
import sys
from pathlib import Path
from prometheus_client import CollectorRegistry, Counter
from nfkit.nftables import Ruleset
from nfkit.service.daemon import Service, run
from nfkit.service.owntable import Owned

registry = CollectorRegistry()
ticks = Counter("nfkit_demo_ticks", "ticks", registry=registry)

class Demo(Service):
    name = "demo"
    owned = Owned("inet", "nfkit_demo")
    n = 0
    def start(self, selector):
        rs = Ruleset()
        t = rs.table("inet", "nfkit_demo")
        c = rs.chain(t, "input", type="filter", hook="input", prio=0, policy="accept")
        rs.rule(c, {"counter": None})
        self.owned.replace(rs)
    def tick(self):
        self.n += 1
        ticks.inc()
        return 0.05
    def stop(self):
        self.owned.remove()
    def status(self):
        return {"ticks": self.n}

sys.exit(run(Demo(), status=Path(sys.argv[1]), metrics=sys.argv[2], registry=registry))
'''


def start(netns, sock: Path, port: int | None = None):  # type: ignore[no-untyped-def]
    """Start the demo daemon; return once it answers on its status socket (so it has
    finished starting: the socket is bound before the service sets up)."""
    metrics = f"127.0.0.1:{port}" if port else ""
    proc = netns.popen([sys.executable, "-c", DAEMON, str(sock), metrics], stderr=subprocess.PIPE)
    try:
        wait_for_status(sock, lambda: proc.poll() is None)
    except CapabilityError:
        raise AssertionError(proc.stderr.read().decode()) from None
    return proc


def tables(netns) -> list[str]:  # type: ignore[no-untyped-def]
    return [line for line in netns.run("nft list tables").stdout.splitlines() if line]


@pytest.mark.kernel
def test_daemon_serves_status_and_metrics_and_cleans_up_on_sigterm(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sock = tmp_path / "demo.sock"
    proc = start(netns, sock, 9181)
    time.sleep(0.3)
    assert query_status(sock)["ticks"] > 1
    assert tables(netns) == ["table inet nfkit_demo"]
    metrics = netns.run(["curl", "-s", "http://127.0.0.1:9181/metrics"]).stdout
    assert "nfkit_demo_ticks_total" in metrics
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert tables(netns) == [] and not sock.exists()
    with pytest.raises(CapabilityError, match="no daemon is running"):
        query_status(sock)


@pytest.mark.kernel
def test_a_client_that_connects_and_says_nothing_does_not_stall_the_daemon(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Ticks go on and other clients are answered while one client sits connected without a
    word (a script descheduled between connect and send): the daemon waited up to a second
    for it, its loop stalled (a cluster's peers took it for dead)."""
    sock = tmp_path / "demo.sock"
    proc = start(netns, sock)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as quiet:
        quiet.connect(str(sock))
        time.sleep(0.1)
        before = time.monotonic()
        ticks = query_status(sock)["ticks"]
        assert time.monotonic() - before < 0.5
        time.sleep(0.5)
        assert query_status(sock)["ticks"] >= ticks + 5  # a tick every 50 ms meanwhile
        quiet.sendall(b"status\n")  # it speaks at last: answered
        assert json.loads(quiet.makefile().readline())["ticks"] > ticks
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


@pytest.mark.kernel
def test_ctrl_c_too_and_a_killed_runs_leftovers_are_replaced(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sock = tmp_path / "demo.sock"
    proc = start(netns, sock, 9182)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert tables(netns) == ["table inet nfkit_demo"] and sock.exists()  # what a killed run leaves
    proc = start(netns, sock)  # the stale socket is taken over
    listing = json.loads(netns.run("nft -j list ruleset").stdout)["nftables"]
    assert sum(1 for o in listing if "rule" in o) == 1  # replaced, not doubled
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    assert tables(netns) == [] and not sock.exists()


@pytest.mark.kernel
def test_a_second_daemon_on_the_same_socket_is_refused(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sock = tmp_path / "demo.sock"
    first = start(netns, sock, 9183)
    second = netns.popen([sys.executable, "-c", DAEMON, str(sock), ""], stderr=subprocess.PIPE)
    assert second.wait(10) != 0
    assert b"another daemon answers there" in second.stderr.read()
    assert query_status(sock)["ticks"] >= 0  # the first is untouched
    first.send_signal(signal.SIGTERM)
    assert first.wait(10) == 0


# a daemon with nothing to wait for (no timer) and a second thread that takes SIGTERM: the
# kernel may hand a process's signal to any thread that does not block it (numpy's OpenBLAS
# starts some); the main thread blocks it here so the kernel must
QUIET = r'''
import signal, sys, threading, time
from nfkit.service.daemon import Service, run

class Quiet(Service):
    name = "quiet"
    def start(self, selector):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        def other():
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            time.sleep(30)
        threading.Thread(target=other, daemon=True).start()
        print("started", flush=True)
    def stop(self):
        print("stopped", flush=True)

sys.exit(run(Quiet()))
'''


def test_a_signal_another_thread_takes_still_ends_the_loop_at_once() -> None:
    """Python runs a handler in the main thread between bytecodes: a signal caught while that
    thread blocks in select (by another thread here; or just before the select) must wake it."""
    proc = subprocess.Popen([sys.executable, "-c", QUIET], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "started\n"
        time.sleep(0.1)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0 and time.monotonic() - began < 1
        assert proc.stdout.read() == "stopped\n"
    finally:
        proc.kill()


def test_unit_runs_the_daemon_with_its_config() -> None:
    text = unit("nat66", "IPv6 prefix translation", "/etc/nfkit/nat66.toml")
    assert "ExecStart=" in text and " nat66 run -c /etc/nfkit/nat66.toml" in text
    assert "KillSignal=SIGTERM" in text and "WantedBy=multi-user.target" in text


@pytest.mark.kernel
def test_owned_chains_change_only_when_they_differ(netns) -> None:  # type: ignore[no-untyped-def]
    """Owned.changes: nothing when the kernel holds the same rules in the same order;
    a reordering is a change; chains of the shared table that are not owned stay."""
    from nfkit.nftables import Ruleset, run_commands
    from nfkit.service.owntable import Owned

    owned = Owned("ip6", "mangle", ("mine",))

    def ruleset(*ports: int) -> Ruleset:
        rs = Ruleset()
        t = rs.table("ip6", "mangle")
        c = rs.chain(t, "mine", type="filter", hook="prerouting", prio=-300, policy="accept")
        for p in ports:
            rs.rule(c, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                                  "right": p}}, {"counter": None})
        return rs

    netns.run(["nft", "add table ip6 mangle; add chain ip6 mangle theirs; "
               "add rule ip6 mangle theirs counter"])
    with netns.enter():
        run_commands(owned.changes(ruleset(22, 80)))
        assert owned.changes(ruleset(22, 80)) == []
        assert owned.changes(ruleset(80, 22)) != []
        run_commands(owned.changes(ruleset(80, 22)))
        assert owned.changes(ruleset(80, 22)) == []
        owned.remove()
    listing = netns.run("nft list table ip6 mangle").stdout
    assert "chain theirs" in listing and "chain mine" not in listing
