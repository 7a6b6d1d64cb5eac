"""nfgrep live with the eBPF back end (the hybrid) end to end: client ns -> fw ns -> server ns.

The kernel classifier is attached with tcx on the fw's interfaces; what it hands
over goes to the queue.  Decisions are read where the user's rules read them: the
conntrack mark and label of each flow (kernel-decided flows print no JSON line).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfkit.nfgrep.labtraffic import CLIENT4, SERVER4, TrafficLab
from nfkit.nfgrep.registry import SHIPPED
from tests.nfgrep.test_live import (
    CONNECTIONS,
    NFKIT,
    Live,
    conntrack_entries,
    every_shipped_app,
    firewall_lab,
    nft_in_fw,
    queue_taken,
)
from tests.nfgrep.test_live import pgdir as pgdir  # noqa: F401  (the fixture, used here too)

pytestmark = pytest.mark.kernel
APP_OF_ID = {v: k for k, v in SHIPPED.items()}


@pytest.fixture(scope="module")
def tl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrafficLab]:
    yield from firewall_lab(tmp_path_factory, "hybrid")


def _flows(tl: TrafficLab) -> dict[tuple[str, str, int, int], str | None]:
    """Each TCP/UDP conntrack entry of the fw: (proto, server, server port, client port) -> the
    app of its ct mark (None: unmarked); the ct label must name the same app."""
    out: dict[tuple[str, str, int, int], str | None] = {}
    for e in conntrack_entries(tl):
        o = e["orig"]
        if "dport" not in o:
            continue
        app_id = e.get("mark", 0) & 0xFF
        labels = int(e.get("labels") or "0", 16)
        assert labels == (1 << app_id if app_id else 0), e
        out[(e["proto"], o["dst"], o["dport"], o["sport"])] = APP_OF_ID.get(app_id)
    return out


def _all_traffic(tl: TrafficLab, pg: Path) -> None:
    every_shipped_app(tl, pg, one_byte_port=8001)  # segmented: handed over at its first payload packet
    time.sleep(0.3)


def _by_service(flows: dict[tuple[str, str, int, int], str | None]) -> dict[tuple[str, str, int], list]:
    out: dict[tuple[str, str, int], list] = {}
    for (proto, server, port, _cport), app in flows.items():
        if port in range(40000, 40101) or app == "ftp-data":  # passive data: a new port each run
            port = 0
        elif proto == "tcp" and server == CLIENT4:  # active data: the client's port, new each run
            port = 0
        out.setdefault((proto, server, port), []).append(app)
    return {k: sorted(v, key=str) for k, v in out.items()}


def test_ebpf_marks_every_shipped_application_as_the_queue_does(tl: TrafficLab, tmp_path: Path,
                                                                 pgdir: Path) -> None:  # noqa: F811
    """The same traffic through each back end: the conntrack mark and label of every flow
    the same per service (differential), every truth's app, FTP data by the expectation the
    queue path learnt and passed to the kernel map."""
    seen: dict[str, dict] = {}
    for backend in ("queue", "ebpf"):
        tl.fw.run(["conntrack", "-F"], check=False)
        live = Live(tl, tmp_path, backend=backend)
        try:
            tl.truth.clear()
            _all_traffic(tl, pgdir / backend)
            flows = _flows(tl)
            status = live.status()
            decisions = live.decisions()
        finally:
            assert live.stop() == 0
        seen[backend] = {"flows": flows, "status": status, "decisions": decisions}
        # every truth's flows carry the app in ct mark and label
        for truth in tl.truth:
            if truth.note == "one-byte":
                continue  # over --max-packets one byte at a time: unknown in both, compared below
            server = truth.server or SERVER4
            if truth.app == "ftp-data":
                got = [a for (p, s, port, _), a in flows.items() if a == "ftp-data" and s == server]
            else:
                got = [a for (p, s, port, _), a in flows.items()
                       if p == truth.transport and port == truth.port and s == server]
            assert got and set(got) == {truth.app}, (backend, truth, got)
        # the table and (ebpf) the tcx links went with the daemon
        assert "nfkit_nfgrep" not in tl.fw.run([*NFKIT, "rules", "list"]).stdout
    q, e = seen["queue"], seen["ebpf"]
    assert q["status"]["backend"] == "queue" and e["status"]["backend"] == "ebpf"
    assert e["status"]["interfaces"] == ["eth0", "eth1"] or sorted(e["status"]["interfaces"]) == \
        ["eth0", "eth1"]
    assert _by_service(q["flows"]) == _by_service(e["flows"])
    # the kernel decided most flows alone; FTP control (its expectations are userspace's)
    # and the one-byte request (segmented) were handed over and decided by the queue path
    kernel = e["status"]["kernel_flows"]
    assert kernel["states"].get("decided", 0) >= 10, kernel
    # the program's own counters: every decision since loading, none lost to the map
    assert sum(kernel["counts"]["decided"].values()) + kernel["counts"]["expected"] >= \
        kernel["states"]["decided"], kernel
    handed = {(d["app"], d["server"]) for d in e["decisions"]}
    assert ("ftp", f"{SERVER4}:21") in handed
    assert [d["app"] for d in e["decisions"] if d["server"] == f"{SERVER4}:8001"] == ["unknown"]
    assert len(e["decisions"]) < len(q["decisions"]) / 2


def test_ebpf_user_rule_on_the_label_drops_http(tl: TrafficLab, tmp_path: Path) -> None:
    tl.http()
    tl.redis()
    live = Live(tl, tmp_path, backend="auto")  # the default: ebpf, the kernel allows it
    try:
        status = live.status()
        assert (status["backend"], status["backend_reason"]) == ("ebpf", "the kernel allows it")
        nft_in_fw(tl, "-f", "-", input="""table inet user {
 chain guard {
  type filter hook forward priority 0; policy accept;
  ct label "http" counter drop
 }
}
""")
        before = queue_taken(tl)
        blocked = tl.client.run(["curl", "-sS", "-o", "/dev/null", "--max-time", "2",
                                 f"http://{SERVER4}:8000/hello.txt"], check=False)
        tl.redis()
        taken = queue_taken(tl) - before
        counters = tl.fw.run(["nft", "list", "chain", "inet", "user", "guard"]).stdout
    finally:
        tl.fw.run(["nft", "delete", "table", "inet", "user"], check=False)
        assert live.stop() == 0
    assert blocked.returncode != 0
    assert "counter packets 0 bytes 0 drop" not in counters, counters
    assert taken == 0  # decided in the kernel: nothing went to userspace


def test_ebpf_sigkill_leaves_traffic_flowing(tl: TrafficLab, tmp_path: Path) -> None:
    tl.http()
    script = tmp_path / "connections.py"
    script.write_text(CONNECTIONS)
    first = Live(tl, tmp_path, backend="ebpf")
    loop = tl.client.popen([sys.executable, str(script), SERVER4, "8000", "3"], stdout=subprocess.PIPE)
    time.sleep(1.0)
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(5)
    out, _ = loop.communicate(timeout=30)
    ok, failed = map(int, out.split())
    assert failed == 0 and ok > 15, (ok, failed)
    # the tcx links died with the process: new flows pass unmarked (the leftover table's
    # queue rule only takes flows handed over, with bypass)
    tl.fw.run(["conntrack", "-F"], check=False)
    tl.run_client(["curl", "-sS", "-o", "/dev/null", f"http://{SERVER4}:8000/hello.txt"])
    flows = _flows(tl)
    assert flows and all(a is None for a in flows.values()), flows
    second = Live(tl, tmp_path, backend="ebpf")  # replaces the leftover table
    try:
        tl.run_client(["curl", "-sS", "-o", "/dev/null", f"http://{SERVER4}:8000/hello.txt"])
        flows = _flows(tl)
    finally:
        assert second.stop() == 0
    assert "http" in flows.values()


def test_ebpf_with_nothing_to_attach_to_is_one_line_or_the_queue(tmp_path: Path) -> None:
    """In a namespace with loopback only: --backend ebpf refuses in one line (exit 2, nothing
    installed); auto falls back to the queue back end and says why."""
    conf = tmp_path / "connlabel.conf"
    base = ["unshare", "-n", *NFKIT, "nfgrep", "live", "--connlabel", str(conf),
            "--status-socket", str(tmp_path / "s.sock")]
    r = subprocess.run([*base, "--backend", "ebpf"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "nfkit: --backend ebpf: no interface but loopback to attach to; give --interface or use "
        "--backend queue"], r.stderr
    auto = subprocess.Popen(base, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 30
        while "back end" not in line and time.monotonic() < deadline:
            line = auto.stderr.readline() if auto.stderr else ""
    finally:
        auto.terminate()
        try:
            rc = auto.wait(15)
        finally:
            auto.kill()  # (a no-op once it ended; never left running by a failed wait)
    assert rc == 0
    assert "back end queue (no interface but loopback to attach to)" in line


# an SSH server that answers the client's banner with its own in two segments
SPLIT_BANNER_SERVER = r'''
import socket, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2])
def serve(c):
    with c, c.makefile("rb") as f:
        f.readline()
        c.sendall(b"SSH-2.0-")
        time.sleep(0.2)
        c.sendall(b"Split_1.0\r\n")
        c.recv(100)
s = socket.create_server((host, port))
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''
SPLIT_BANNER_CLIENT = r'''
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
c.sendall(b"SSH-2.0-Client_1.0\r\n")
got = b""
while not got.endswith(b"\r\n"):
    chunk = c.recv(100)
    if not chunk: break
    got += chunk
c.close()
print(got.decode().strip())
'''


def test_ebpf_hands_over_after_the_clients_banner_and_decides_ssh(tl: TrafficLab,
                                                                  tmp_path: Path) -> None:
    """Live: the client's SSH banner passes in the kernel, the server's comes in two segments
    and the flow is handed over at the first; the worker reads the client's banner from the
    kernel's first-bytes map, and marks the flow ssh (it was `unknown`)."""
    (tmp_path / "splitserver.py").write_text(SPLIT_BANNER_SERVER)
    (tmp_path / "splitclient.py").write_text(SPLIT_BANNER_CLIENT)
    tl.serve("splitssh2222", [sys.executable, str(tmp_path / "splitserver.py"), SERVER4, "2222"],
             2222)
    tl.fw.run(["conntrack", "-F"], check=False)
    live = Live(tl, tmp_path, backend="ebpf")
    try:
        out = tl.run_client([sys.executable, str(tmp_path / "splitclient.py"), SERVER4, "2222"])
        time.sleep(0.3)
        flows = _flows(tl)
        decisions = live.decisions()
    finally:
        assert live.stop() == 0
    assert out.strip() == "SSH-2.0-Split_1.0"
    assert [a for (p, s, port, _), a in flows.items() if port == 2222] == ["ssh"], flows
    assert [d["app"] for d in decisions if d["server"] == f"{SERVER4}:2222"] == ["ssh"], decisions


# a server that answers only once the client's second message came (the client sends both
# before it reads): the app is decided by that second message
SECOND_MESSAGE_SERVER = r'''
import socket, sys, threading
host, port = sys.argv[1], int(sys.argv[2])
def serve(c):
    with c:
        got = b""
        while len(got) < 8:
            chunk = c.recv(100)
            if not chunk: return
            got += chunk
        c.sendall(b"OK")
        c.recv(100)
s = socket.create_server((host, port))
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''
SECOND_MESSAGE_CLIENT = r'''
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.sendall(b"\x00\x05HELLO")
time.sleep(0.2)
c.sendall(b"A")
print(c.recv(100).decode())
c.close()
'''


def test_ebpf_decides_a_flow_by_the_clients_second_packet_as_the_engine(tl: TrafficLab, tmp_path: Path) -> None:
    """Live: the client's two messages pass in the kernel, both kept (the second, which
    alone decides the app, passed unseen before: the server's answer handed the flow over
    late and the worker said `unknown`); the worker reads both from the kernel's map and
    marks the flow `late`, as the engine decides it."""
    from nfkit.nfgrep.loader import SIGNATURES
    from tests.nfgrep.test_ebpf_handover import LATE

    (tmp_path / "late.nfg").write_text(LATE)
    (tmp_path / "server.py").write_text(SECOND_MESSAGE_SERVER)
    (tmp_path / "client.py").write_text(SECOND_MESSAGE_CLIENT)
    tl.serve("second7200", [sys.executable, str(tmp_path / "server.py"), SERVER4, "7200"], 7200)
    tl.fw.run(["conntrack", "-F"], check=False)
    live = Live(tl, tmp_path, "--rules", str(SIGNATURES), "--rules", str(tmp_path / "late.nfg"),
                backend="ebpf")
    try:
        out = tl.run_client([sys.executable, str(tmp_path / "client.py"), SERVER4, "7200"])
        time.sleep(0.3)
        entries = conntrack_entries(tl)
        decisions = live.decisions()
        first = live.status()["kernel_flows"]["first_bytes"]
    finally:
        assert live.stop() == 0
    assert out.strip() == "OK"
    assert [d["app"] for d in decisions if d["server"] == f"{SERVER4}:7200"] == ["late"], decisions
    # the ct mark: late's id (not a shipped one), neither unmarked, `unknown` nor the hand-over
    marks = [e.get("mark", 0) & 0xFF for e in entries if e["orig"].get("dport") == 7200]
    assert len(marks) == 1 and marks[0] not in (0, SHIPPED["unknown"], 0xFE), entries
    assert first == {"entries": 0, "size": 4096}  # the client's first bytes, kept, read by the worker
