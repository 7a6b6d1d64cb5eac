"""nfgrep live end to end: client ns -> fw ns running `nfkit nfgrep live` -> server ns, real programs.

The lab (TrafficLab with a firewall namespace) is shared by the module's tests;
each test runs its own daemon.  Label names go to the fw namespace's own
/etc/netns/NAME/connlabel.conf; `nft` reads them through a private mount of
that file over /etc (what `ip netns exec` does where /etc/connlabel.conf exists).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfkit.nfgrep.labtraffic import CLIENT4, SERVER4, TrafficLab
from nfkit.nfgrep.registry import SHIPPED
from nfkit.service.daemon import query_status, wait_for_status

pytestmark = pytest.mark.kernel

NFKIT = [sys.executable, "-m", "nfkit"]


class Live:
    """One `nfkit nfgrep live --json` in the fw namespace (the queue back end unless told)."""

    def __init__(self, tl: TrafficLab, workdir: Path, *args: str, backend: str = "queue") -> None:
        self.tl = tl
        self.out = workdir / f"live-{time.monotonic_ns()}.jsonl"
        self.sock = Path(f"/run/nfkit/{tl.fw.name}-{time.monotonic_ns()}.sock")
        with open(self.out, "wb") as f:
            self.proc = tl.fw.popen([*NFKIT, "nfgrep", "live", "--json", "--connlabel", connlabel(tl),
                                     "--status-socket", str(self.sock), "--backend", backend, *args],
                                    stdout=f, stderr=subprocess.PIPE)
        wait_for_status(self.sock, lambda: self.proc.poll() is None, timeout=30)

    def decisions(self) -> list[dict]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def status(self) -> dict:
        return query_status(self.sock)

    def settled(self, decided: int, timeout: float = 5) -> None:
        """Wait until the workers' published counters show ``decided`` decisions (they
        publish at most every `nfkit.nfgrep.live.PUBLISH_S`)."""
        deadline = time.monotonic() + timeout
        while self.status()["total"]["decided"] < decided and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """SIGTERM, or SIGINT to the process group as Ctrl-C sends it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signum)
        rc = self.proc.wait(15)
        return rc


def connlabel(tl: TrafficLab) -> str:
    return f"/etc/netns/{tl.fw.name}/connlabel.conf"


def nft_in_fw(tl: TrafficLab, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`nft` in the fw namespace, seeing the namespace's connlabel.conf at /etc (a private
    overlay mount over a copy of it: the host's /etc is untouched)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nfkit-etc-") as etc:
        shutil.copy(connlabel(tl), etc)
        script = f'mount -t overlay nfkit-etc -o lowerdir={etc}:/etc /etc && exec nft "$@"'
        return tl.fw.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "nft",
                          *args], input=input)


def conntrack_entries(tl: TrafficLab) -> list[dict]:
    out = tl.fw.run([*NFKIT, "ct", "list", "-o", "json"]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def queue_taken(tl: TrafficLab, queue: int = 0) -> int:
    """Packets the kernel ever gave queue ``queue`` in the fw namespace (its id sequence)."""
    text = tl.fw.run(["cat", "/proc/net/netfilter/nfnetlink_queue"]).stdout
    for line in text.splitlines():
        f = line.split()
        if int(f[0]) == queue:
            return int(f[7])
    return 0


def firewall_lab(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[TrafficLab]:
    """A TrafficLab with a firewall namespace whose connlabel.conf holds a line of the
    user's own (kept by nfkit's merge), removed afterwards."""
    from tests.conftest import require_kernel

    require_kernel()
    with TrafficLab(tmp_path_factory.mktemp(name), firewall=True) as lab:
        etc = Path(connlabel(lab)).parent
        etc.mkdir(parents=True, exist_ok=True)
        Path(connlabel(lab)).write_text("# the user's own\n0 bulk\n")
        try:
            yield lab
        finally:
            shutil.rmtree(etc, ignore_errors=True)


@pytest.fixture(scope="module")
def tl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrafficLab]:
    yield from firewall_lab(tmp_path_factory, "live")


@pytest.fixture
def pgdir() -> Iterator[Path]:
    """A directory the postgres user owns (pytest's own tmp dirs are root's alone)."""
    import pwd
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="nfgrep-live-pg-"))
    user = pwd.getpwnam("postgres")
    os.chown(path, user.pw_uid, user.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _postgres(tl: TrafficLab, data: Path) -> None:
    """psql -> a real PostgreSQL server (its own cluster, trust auth) in the server namespace."""
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))[-1].parent
    subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "initdb"), "-N", "-D",
                    str(data / "db"), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True, timeout=60)
    with open(data / "db" / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {CLIENT4}/32 trust\n")
    tl.serve("pg", ["runuser", "-u", "postgres", "--", str(bindir / "postgres"), "-D", str(data / "db"),
                    "-F", "-k", str(data), "-h", SERVER4, "-p", "5432"], 5432)
    tl.run_client(["psql", f"host={SERVER4} port=5432 user=postgres dbname=postgres sslmode=disable",
                   "-c", "select 1"])


def every_shipped_app(tl: TrafficLab, pg: Path, *, one_byte_port: int | None = None) -> None:
    """Real traffic of every shipped application through the firewall (with
    ``one_byte_port``, also an HTTP request cut into one-byte segments there)."""
    tl.http()
    tl.http(ipv6=True)
    if one_byte_port is not None:
        tl.http_one_byte(one_byte_port)
    tl.tls()
    tl.ssh()
    tl.dns()
    tl.dns(tcp=True)
    tl.ftp()
    tl.ftp(active=True)
    tl.redis()
    tl.mqtt()
    tl.smtp()
    tl.pop3()
    tl.imap()
    tl.websocket()
    tl.connect_tunnel()
    _postgres(tl, pg)


def test_every_shipped_application_is_marked_end_to_end(tl: TrafficLab, tmp_path: Path,
                                                        pgdir: Path) -> None:
    live = Live(tl, tmp_path)
    try:
        tl.truth.clear()
        every_shipped_app(tl, pgdir)
        time.sleep(0.3)
        decisions = live.decisions()
        live.settled(len(decisions))
        status = live.status()
    finally:
        assert live.stop() == 0
    by_port: dict[tuple[str, int], list[dict]] = {}
    for d in decisions:
        by_port.setdefault((d["proto"], int(d["server"].rsplit(":", 1)[1])), []).append(d)
    for truth in tl.truth:
        if truth.app == "ftp-data":
            continue
        found = [d for d in by_port.get((truth.transport, truth.port), [])
                 if d["server"].rsplit(":", 1)[0].strip("[]") == truth.server]
        assert found, (truth, decisions)
        assert all(d["app"] == truth.app for d in found), (truth, found)
        for key, value in truth.fields:
            assert any(d["fields"].get(key, "").startswith(value) for d in found), (truth, found)
    data = [d for d in decisions if d["app"] == "ftp-data"]
    assert {d["server"].split(":")[0] for d in data} == {SERVER4, CLIENT4}  # passive and active
    assert "postgresql" in {d["app"] for d in decisions}
    assert all(d["decision_ms"] >= 0 and d["packets"] >= 1 for d in decisions)
    assert status["total"]["decided"] == len(decisions) and status["total"]["enobufs"] == 0
    # the kernel side: ct mark (under the mask) and ct label of each decided flow
    entries = conntrack_entries(tl)
    for d in decisions:
        client, server = d["client"].rsplit(":", 1), d["server"].rsplit(":", 1)
        match = [e for e in entries if e["orig"]["src"] == client[0].strip("[]")
                 and e["orig"].get("sport") == int(client[1]) and e["orig"].get("dport") == int(server[1])]
        if not match:
            continue  # gone already (a UDP flow's entry may have been reused)
        (e,) = match
        app_id = SHIPPED[d["app"]]
        assert e["mark"] & 0xFF == app_id, (d, e)
        assert int(e["labels"], 16) == 1 << app_id, (d, e)
    # the names are in the namespace's connlabel.conf, the user's line kept first
    conf = Path(connlabel(tl)).read_text()
    assert conf.startswith("# the user's own\n0 bulk\n") and "\n2 http\n" in conf
    # the table went away with the daemon
    assert "nfkit_nfgrep" not in tl.fw.run([*NFKIT, "rules", "list"]).stdout


def _big_file(tl: TrafficLab) -> None:
    big = tl.dir / "www" / "big.bin"
    if not big.exists():
        big.write_bytes(os.urandom(2 << 20))


def test_after_the_decision_no_packet_reaches_the_queue(tl: TrafficLab, tmp_path: Path) -> None:
    _big_file(tl)
    live = Live(tl, tmp_path, "--metrics", "127.0.0.1:9464")
    try:
        tl.http()  # the server, started
        before = queue_taken(tl)
        tl.run_client(["curl", "-sS", "-o", "/dev/null", f"http://{SERVER4}:8000/big.bin"])
        taken = queue_taken(tl) - before
        (d,) = [d for d in live.decisions() if d["fields"].get("host")][-1:]
        live.settled(2)  # the GET of tl.http() and the download
        metrics = tl.fw.run(["curl", "-sS", "http://127.0.0.1:9464/metrics"]).stdout
    finally:
        assert live.stop(signal.SIGINT) == 0  # Ctrl-C
    # HTTP is decided on the request, so this scrape's own flow may be counted in its answer
    # or not, as the worker's next publication falls: 2 flows before it, 3 with it
    apps = re.search(r'nfkit_nfgrep_app_flows_total\{app="http"\} (\S+)', metrics)
    decided = re.search(r'nfkit_nfgrep_decided_total\{queue="0"\} (\S+)', metrics)
    assert apps and decided and apps[1] == decided[1] and apps[1] in ("2.0", "3.0"), metrics
    assert "nfkit_nfgrep" not in tl.fw.run([*NFKIT, "rules", "list"]).stdout  # removed on Ctrl-C
    assert d["app"] == "http"
    # 2 MiB is well over a thousand packets; the queue saw those before the decision and the
    # few already in flight while its verdict was on the way (sent before the ct mark was set)
    assert d["packets"] <= taken <= d["packets"] + 4 and taken <= 14, (taken, d)


def test_user_rule_on_the_label_blocks_exactly_that_application(tl: TrafficLab, tmp_path: Path) -> None:
    """The user's table: its own mark bits (packet and ct, outside nfkit's mask) set before
    nfgrep's chains and checked after them, and a drop on nfkit's label."""
    tl.http()  # the server, started before nfgrep is
    live = Live(tl, tmp_path)
    try:
        nft_in_fw(tl, "-f", "-", input="""table inet user {
 chain pre {
  type filter hook prerouting priority -160;
  meta mark set meta mark | 0x20000
  ct mark set ct mark | 0x10000
 }
 chain guard {
  type filter hook forward priority 0; policy accept;
  meta mark & 0x20000 != 0x20000 counter
  ct label "http" counter drop
 }
}
""")
        listing = nft_in_fw(tl, "list", "table", "inet", "user").stdout
        assert 'ct label "http"' in listing  # nft reads nfkit's names from connlabel.conf
        blocked = tl.client.run(["curl", "-sS", "-o", "/dev/null", "--max-time", "2",
                                 f"http://{SERVER4}:8000/hello.txt"], check=False)
        assert blocked.returncode != 0
        tl.redis()
        tl.dns()
        tl.tls()
        decisions = live.decisions()
        entries = conntrack_entries(tl)
        counters = tl.fw.run(["nft", "list", "chain", "inet", "user", "guard"]).stdout
    finally:
        tl.fw.run(["nft", "delete", "table", "inet", "user"], check=False)
        assert live.stop() == 0
    apps = [d["app"] for d in decisions]
    assert apps.count("http") == 1 and {"redis", "dns", "tls"} <= set(apps)
    # the user's packet mark bit survived every verdict; the drop hit
    assert "0x00020000 counter packets 0 bytes 0" in counters, counters
    assert "drop" in counters and 'counter packets 0 bytes 0 drop' not in counters
    # the ct mark: the user's bit kept, the app id under nfkit's mask
    ports = {int(d["client"].rsplit(":", 1)[1]) for d in decisions if d["app"] == "redis"}
    redis = [e for e in entries if e["orig"].get("dport") == 6379 and e["orig"].get("sport") in ports]
    assert redis and all(e["mark"] == 0x10000 | SHIPPED["redis"] for e in redis), redis


CONNECTIONS = r'''
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ok = failed = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(b"GET /hello.txt HTTP/1.0\r\nHost: loop\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            ok += data.startswith(b"HTTP/1.0 200")
            failed += not data.startswith(b"HTTP/1.0 200")
    except OSError:
        failed += 1
    time.sleep(0.02)
print(ok, failed)
'''


def test_sigkill_loses_no_connection_and_a_restart_picks_up(tl: TrafficLab, tmp_path: Path) -> None:
    tl.http()
    _big_file(tl)
    script = tmp_path / "connections.py"
    script.write_text(CONNECTIONS)
    # nfkit's direction bit never leaves its chains, neither from the queue nor bypassed
    tl.fw.run(["nft", "-f", "-"], input="table inet probe {\n chain c {\n"
              "  type filter hook forward priority 0;\n  meta mark & 0x80 == 0x80 counter\n }\n}\n")
    first = Live(tl, tmp_path)
    # new connections all along, and one long download across the kill
    loop = tl.client.popen([sys.executable, str(script), SERVER4, "8000", "4"], stdout=subprocess.PIPE)
    slow = tl.client.popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "--limit-rate",
                            "400k", f"http://{SERVER4}:8000/big.bin"], stdout=subprocess.PIPE)
    time.sleep(1.0)
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(5)
    assert len(first.decisions()) > 3
    # its table stays (queueing with bypass: nobody listens, packets pass) until the next start
    assert "table ip nfkit_nfgrep" in tl.fw.run([*NFKIT, "rules", "list"]).stdout
    time.sleep(1.0)
    second = Live(tl, tmp_path)  # replaces the leftover table
    try:
        tl.run_client(["curl", "-sS", "-o", "/dev/null", f"http://{SERVER4}:8000/hello.txt"])
        out, _ = loop.communicate(timeout=30)
        ok, failed = map(int, out.split())
        size, _ = slow.communicate(timeout=30)
        time.sleep(0.2)
        after = second.decisions()
    finally:
        assert second.stop() == 0
    probe = tl.fw.run(["nft", "list", "table", "inet", "probe"]).stdout
    tl.fw.run(["nft", "delete", "table", "inet", "probe"])
    assert "counter packets 0 bytes 0" in probe, probe
    assert failed == 0 and ok > 20, (ok, failed)
    assert int(size) == 2 << 20
    # new flows classified again; a connection the restart caught midway may end unknown
    apps = [d["app"] for d in after]
    assert "http" in apps and set(apps) <= {"http", "unknown"}, after


def test_several_queues_keep_each_connection_on_one_worker(tl: TrafficLab, tmp_path: Path) -> None:
    tl.http()
    extra = [f"192.0.2.{i}" for i in range(20, 32)]
    tl.client.run(["ip", "-batch", "-"], input="".join(f"addr add {a}/24 dev eth0\n" for a in extra))
    tl.fw.run(["ip", "-batch", "-"], input=f"route replace 192.0.2.0/24 dev eth0\n"
              f"route replace {SERVER4}/32 dev eth1\n")
    live = Live(tl, tmp_path, "--queues", "2:3")
    try:
        url = f"http://{SERVER4}:8000/hello.txt"
        loop = "; ".join(f"curl -sS -o /dev/null --interface {a} {url} {url}" for a in extra)
        tl.run_client(["sh", "-ec", loop])
        time.sleep(0.2)
        decisions = live.decisions()
        status = live.status()
        nices = [_nice(q["pid"]) for q in status["queues"]]
        groups = [_autogroup(q["pid"]) for q in [*status["queues"], {"pid": live.proc.pid}]]
        # a worker that dies is started again; its queue's flows are classified again
        victim = next(q for q in status["queues"] if q["queue"] == 2)["pid"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while live.status()["restarts"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        again = live.status()
        restarted = next(q for q in again["queues"] if q["queue"] == 2)["pid"]
        nices.append(_nice(restarted))
        groups.append(_autogroup(restarted))
        on_2 = next(d["client"].split(":")[0] for d in decisions if d["queue"] == 2
                    and d["client"].split(":")[0] in extra)
        tl.run_client(["curl", "-sS", "-o", "/dev/null", "--interface", on_2, url])
        time.sleep(0.2)
        later = live.decisions()[len(decisions):]
    finally:
        assert live.stop() == 0
        tl.client.run(["ip", "-batch", "-"], input="".join(f"addr del {a}/24 dev eth0\n" for a in extra),
                      check=False)
    mine = [d for d in decisions if d["client"].split(":")[0] in extra]
    # each connection decided once, by one worker, as http (a split connection would be seen
    # twice, or from its middle, by the other worker)
    assert len(mine) == 2 * len(extra) == len({d["client"] for d in mine})
    assert all(d["app"] == "http" for d in mine)
    by_client: dict[str, set[int]] = {}
    for d in mine:
        by_client.setdefault(d["client"].split(":")[0], set()).add(d["queue"])
    assert all(len(q) == 1 for q in by_client.values())
    assert {d["queue"] for d in mine} == {2, 3}
    pids = {q["pid"] for q in status["queues"]}
    assert len(pids) == 2 and all(q["decided"] > 0 for q in status["queues"])
    assert again["restarts"] == 1
    assert again["total"]["decided"] >= status["total"]["decided"]  # counters carried over
    assert next(q for q in again["queues"] if q["queue"] == 2)["pid"] not in (None, victim)
    assert [(d["app"], d["queue"]) for d in later if d["client"].startswith(on_2 + ":")] == [("http", 2)]
    assert nices == [-10, -10, -10]  # --nice's default, the restarted worker's too
    if Path("/proc/self/autogroup").exists():  # the kernel shares the CPU by session groups:
        # each worker in a group of its own at the same nice (the daemon's stays as it was)
        workers, daemon = groups[:2] + groups[3:], groups[2]
        assert [nice for _, nice in workers] == [-10, -10, -10] and daemon[1] == 0, groups
        assert len({name for name, _ in groups}) == 4, groups


def _autogroup(pid: int) -> tuple[str, int]:
    """A process's scheduling group and its nice (/proc/PID/autogroup: "/autogroup-N nice K")."""
    name, _, nice = Path(f"/proc/{pid}/autogroup").read_text().split()
    return name, int(nice)


def _nice(pid: int) -> int:
    """A process's nice value (/proc/PID/stat, field 19)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _http_server(close: str) -> str:
    """A one-connection-at-a-time HTTP server whose reply goes in one segment; ``close`` is how
    it ends the connection."""
    return r'''
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.recv(4096)
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nhi\n")  # the reply in one segment
''' + close


# the client closes first: the server's FIN comes after the decision
ONE_WRITE_SERVER = _http_server("    c.recv(4096)\n    c.close()\n")

ONE_WRITE_CLIENT = r'''
import socket, sys
for _ in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    s.sendall(b"GET / HTTP/1.0\r\nHost: q.example\r\n\r\n")
    data = b""
    while not data.endswith(b"hi\n"):
        data += s.recv(4096)
    s.close()
'''


def test_only_payload_packets_before_the_decision_reach_the_queue(tl: TrafficLab, tmp_path: Path) -> None:
    """SYN, SYN-ACK and pure ACKs stay in the kernel (the streams start at their first byte),
    and HTTP is decided on the request: its verdict's mark reaches the conntrack mark before
    the server can answer, so the reply and both FINs return at `ct mark & MASK != 0`.  An
    HTTP exchange whose request is one segment costs the queue exactly that one packet, of
    the ten or so the firewall forwards for it (two before, the reply deciding)."""
    (tl.dir / "onewrite.py").write_text(ONE_WRITE_SERVER)
    (tmp_path / "client.py").write_text(ONE_WRITE_CLIENT)
    tl.serve("onewrite", [sys.executable, str(tl.dir / "onewrite.py"), SERVER4, "8090"], 8090)
    tl.fw.run(["nft", "-f", "-"], input="table inet probe {\n chain c {\n"
              "  type filter hook forward priority 0;\n  tcp dport 8090 counter\n  tcp sport 8090 counter\n"
              " }\n}\n")
    live = Live(tl, tmp_path)
    connections = 20
    try:
        before = queue_taken(tl)
        tl.run_client([sys.executable, str(tmp_path / "client.py"), SERVER4, "8090", str(connections)])
        taken = queue_taken(tl) - before
        live.settled(connections)
        decisions = [d for d in live.decisions() if d["server"].endswith(":8090")]
    finally:
        assert live.stop() == 0
        probe = tl.fw.run(["nft", "-j", "list", "table", "inet", "probe"]).stdout
        tl.fw.run(["nft", "delete", "table", "inet", "probe"])
    forwarded = sum(r["rule"]["expr"][1]["counter"]["packets"] for r in json.loads(probe)["nftables"]
                    if "rule" in r)
    assert [(d["app"], d["packets"]) for d in decisions] == [("http", 1)] * connections, decisions
    assert taken == connections, (taken, forwarded)
    assert forwarded >= 7 * connections, forwarded  # SYN, SYN-ACK, ACK, 2 payloads, FINs and ACKs


# the server closes first (its end in TIME_WAIT, which a new SYN reopens)
CLOSE_FIRST_SERVER = _http_server("    c.close()\n")

SAME_PORT_CLIENT = r'''
import socket, sys, time
for _ in range(int(sys.argv[4])):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", int(sys.argv[3])))
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.sendall(b"GET / HTTP/1.0\r\nHost: again.example\r\n\r\n")
    while s.recv(4096):
        pass
    s.close()
    time.sleep(0.15)
'''


def test_a_source_port_reused_at_once_is_judged_anew_each_time(tl: TrafficLab, tmp_path: Path) -> None:
    """A client reopening the same tuple every 0.15 s (the kernel's own initial sequence
    numbers: a hash of the tuple plus a clock, RFC 6528): every connection is looked at and
    decided, none takes the previous one's decision unlooked at (a load generator reusing
    its ports did so for a third of its connections)."""
    (tl.dir / "closefirst.py").write_text(CLOSE_FIRST_SERVER)
    (tmp_path / "client.py").write_text(SAME_PORT_CLIENT)
    tl.serve("closefirst", [sys.executable, str(tl.dir / "closefirst.py"), SERVER4, "8091"], 8091)
    live = Live(tl, tmp_path)
    connections = 5
    try:
        tl.run_client([sys.executable, str(tmp_path / "client.py"), SERVER4, "8091", "40999", str(connections)])
        live.settled(connections)
        decisions = [d for d in live.decisions() if d["server"].endswith(":8091")]
    finally:
        assert live.stop() == 0
    assert [(d["app"], d["client"]) for d in decisions] == [("http", f"{CLIENT4}:40999")] * connections
