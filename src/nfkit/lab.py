"""Small labs of network namespaces joined by veth pairs.

Used by the tests, the demo and the benchmarks.  Everything a lab creates
(namespaces, the veth pairs inside them, processes started in them) is removed
by `Lab.close()`, which the context manager calls also on errors and on
KeyboardInterrupt.  Addresses come from the documentation ranges only and no
namespace gets a default route: traffic stays inside the lab.
"""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from nfkit import netns
from nfkit.errors import CapabilityError

_counter = itertools.count()


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise CapabilityError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def private_run(argv: Sequence[str], run_dirs: Sequence[str] = ()) -> list[str]:
    """``argv`` run in a private mount namespace over an empty tmpfs /run.

    A server of a lab brings everything it needs (config, data, run and empty
    directories) with it: what the machine's boot made under /run (systemd-tmpfiles'
    /run/sshd, /var/run/vsftpd/empty) is not promised, so no lab server sees it,
    and one that would depend on it fails on every machine, not only on fresh ones.
    ``run_dirs`` are made under the new /run first (sshd insists on /run/sshd).
    """
    made = "".join(f" && mkdir -p /run/{shlex.quote(d)}" for d in run_dirs)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs nfkit-run /run{made} && exec "$@"', "lab-server", *argv]


@dataclass
class Namespace:
    """One network namespace of a lab."""

    name: str
    lab: Lab
    addrs: dict[str, list[str]] = field(default_factory=dict)  # ifname -> addresses

    @contextmanager
    def enter(self) -> Iterator[None]:
        """Run the block (this thread) inside the namespace."""
        with netns.enter(self.name):
            yield

    def argv(self, cmd: str | Sequence[str]) -> list[str]:
        args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        return ["ip", "netns", "exec", self.name, *args]

    def run(
        self, cmd: str | Sequence[str], check: bool = True, timeout: float = 120, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace and wait for it (text output captured)."""
        kw.setdefault("capture_output", True)
        proc = subprocess.run(self.argv(cmd), text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
        if check and proc.returncode != 0:
            raise CapabilityError(
                f"[{self.name}] {cmd!r} exited {proc.returncode}: {(proc.stderr or '').strip()}"
            )
        return proc  # type: ignore[no-any-return]

    def popen(self, cmd: str | Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        """Start a command in the namespace; the lab stops it (by PID) on close."""
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(self.argv(cmd), start_new_session=True, **kw)  # type: ignore[call-overload]
        self.lab.processes.append(proc)
        return proc  # type: ignore[no-any-return]

    def serve(self, cmd: str | Sequence[str], run_dirs: Sequence[str] = (),
              **kw: object) -> subprocess.Popen[bytes]:
        """Start a server in the namespace with an empty /run of its own (see `private_run`)."""
        args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        return self.popen(private_run(args, run_dirs), **kw)

    def addr(self, ifname: str | None = None, family: int = 4) -> str:
        """First address (without prefix length) of the given family on ``ifname``."""
        for name, addrs in self.addrs.items():
            if ifname is not None and name != ifname:
                continue
            for a in addrs:
                if (":" in a) == (family == 6):
                    return a.split("/")[0]
        raise KeyError(f"{self.name} has no IPv{family} address on {ifname or 'any link'}")

    def sysctl(self, key: str, value: str) -> None:
        """Set a sysctl inside this namespace (never the host's)."""
        self.run(["sysctl", "-qw", f"{key}={value}"])


class Lab:
    """A set of namespaces with veth links; a context manager that cleans up."""

    def __init__(self, prefix: str = "nfkit") -> None:
        if os.geteuid() != 0:
            raise CapabilityError("network namespaces need root")
        self.prefix = f"{prefix}{os.getpid() % 100000}x{next(_counter)}"
        self.namespaces: dict[str, Namespace] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._links = 0

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, role: str) -> Namespace:
        """Create namespace ``role`` (named uniquely on the host) with lo up."""
        name = f"{self.prefix}-{role}"
        _ip("netns", "add", name)
        ns = Namespace(name, self)
        self.namespaces[role] = ns
        ns.run("ip link set lo up")
        # No duplicate address detection: links are usable the moment they are up.
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")
        return ns

    def __getitem__(self, role: str) -> Namespace:
        return self.namespaces[role]

    def link(
        self,
        a: Namespace,
        b: Namespace,
        a_addrs: Sequence[str] = (),
        b_addrs: Sequence[str] = (),
        a_if: str | None = None,
        b_if: str | None = None,
    ) -> tuple[str, str]:
        """Join two namespaces with a veth pair and address both ends."""
        self._links += 1
        a_if = a_if or f"v{self._links}a"
        b_if = b_if or f"v{self._links}b"
        tmp_a, tmp_b = f"nk{os.getpid() % 10000}l{self._links}a", f"nk{os.getpid() % 10000}l{self._links}b"
        _ip("link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        try:
            _ip("link", "set", tmp_a, "netns", a.name)
            _ip("link", "set", tmp_b, "netns", b.name)
        except CapabilityError:
            subprocess.run(["ip", "link", "del", tmp_a], capture_output=True)
            raise
        for ns, tmp, ifname, addrs in ((a, tmp_a, a_if, a_addrs), (b, tmp_b, b_if, b_addrs)):
            ns.run(["ip", "link", "set", tmp, "name", ifname])
            for addr in addrs:
                extra = ["nodad"] if ":" in addr else []
                ns.run(["ip", "addr", "add", addr, "dev", ifname, *extra])
            ns.run(["ip", "link", "set", ifname, "up"])
            ns.addrs[ifname] = list(addrs)
        return a_if, b_if

    def close(self) -> None:
        """Stop the processes this lab started, then delete its namespaces."""
        for proc in self.processes:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 3
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        self.processes.clear()
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)
        self.namespaces.clear()


def three_node(prefix: str = "nfkit") -> Lab:
    """client -- firewall -- server, routed through the firewall, IPv4 and IPv6.

    client 192.0.2.2 / 2001:db8:1::2, firewall 192.0.2.1 + 198.51.100.1 /
    2001:db8:1::1 + 2001:db8:2::1, server 198.51.100.2 / 2001:db8:2::2.
    Routes name the far subnet only; there is no default route.
    """
    lab = Lab(prefix)
    try:
        client, fw, server = lab.add("client"), lab.add("fw"), lab.add("server")
        lab.link(client, fw, ["192.0.2.2/24", "2001:db8:1::2/64"],
                 ["192.0.2.1/24", "2001:db8:1::1/64"], "eth0", "eth0")
        lab.link(fw, server, ["198.51.100.1/24", "2001:db8:2::1/64"],
                 ["198.51.100.2/24", "2001:db8:2::2/64"], "eth1", "eth0")
        fw.sysctl("net.ipv4.ip_forward", "1")
        fw.sysctl("net.ipv6.conf.all.forwarding", "1")
        client.run("ip route add 198.51.100.0/24 via 192.0.2.1")
        client.run("ip -6 route add 2001:db8:2::/64 via 2001:db8:1::1")
        server.run("ip route add 192.0.2.0/24 via 198.51.100.1")
        server.run("ip -6 route add 2001:db8:1::/64 via 2001:db8:2::1")
    except BaseException:
        lab.close()
        raise
    return lab


WHO_SERVER = r'''
import http.server, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{self.client_address[0]} {sys.argv[1]}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer.address_family = socket.AF_INET6
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
'''
"""An HTTP server (argv: address port) answering "CLIENT-ADDRESS SERVER-ADDRESS"."""


def multihomed(lab: Lab, hosts: Sequence[str], isp_prefixes: Sequence[str],
               server: str = "2001:db8:ff::2") -> None:
    """inside (``hosts``, ULA /64 on eth0) -- r (lan0; wan0, wan1, ...) -- one ISP namespace
    per prefix of ``isp_prefixes`` (ispN: eth0 to the router, 2001:db8:aN::1/64 with the
    router at ::2; eth1 to the server, 2001:db8:bN::/64) -- srv (``server`` on lo, each
    ISP's prefix routed back through that ISP, an HTTP server on port 8080 (`WHO_SERVER`)).
    The router forwards and has no route to the server: its uplinks' routing is the test's.
    ISPs keep their addresses when their side of the link goes down and up."""
    import sys

    inside, router, srv = lab.add("in"), lab.add("r"), lab.add("srv")
    lan = hosts[0].rsplit("::", 1)[0] + "::1"
    lab.link(inside, router, [f"{h}/64" for h in hosts], [f"{lan}/64"], "eth0", "lan0")
    srv.run(["ip", "-6", "addr", "add", f"{server}/128", "dev", "lo"])
    for n, prefix in enumerate(isp_prefixes, 1):
        isp = lab.add(f"isp{n}")
        isp.sysctl("net.ipv6.conf.default.keep_addr_on_down", "1")
        lab.link(router, isp, [f"2001:db8:a{n}::2/64"], [f"2001:db8:a{n}::1/64"], f"wan{n - 1}", "eth0")
        lab.link(isp, srv, [f"2001:db8:b{n}::1/64"], [f"2001:db8:b{n}::2/64"], "eth1", f"eth{n}")
        isp.sysctl("net.ipv6.conf.all.forwarding", "1")
        isp.run(["ip", "-6", "route", "add", prefix, "via", f"2001:db8:a{n}::2"])
        isp.run(["ip", "-6", "route", "add", f"{server}/128", "via", f"2001:db8:b{n}::2"])
        srv.run(["ip", "-6", "route", "add", prefix, "via", f"2001:db8:b{n}::1"])
    router.sysctl("net.ipv6.conf.all.forwarding", "1")
    inside.run(["ip", "-6", "route", "add", f"{server}/128", "via", lan])
    srv.popen([sys.executable, "-c", WHO_SERVER, server, "8080"])
    srv.run(["sh", "-c", "for i in $(seq 50); do ss -ltn | grep -q :8080 && exit 0; sleep 0.1; done; exit 1"])


# Programs of real TCP traffic for attack labs (tests/ctguard, bench/ctguard), each run as
# `python -c PROGRAM ARGS...` in a namespace.
#
# TCP_ECHO_SERVER ADDRESS PORT: echoes on every connection, any number of them, one thread.
TCP_ECHO_SERVER = r'''
import selectors, socket, sys
sel = selectors.DefaultSelector()
s = socket.create_server((sys.argv[1], int(sys.argv[2])), backlog=8192)
s.setblocking(False)
sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj is s:
            try:
                c, _ = s.accept()
            except OSError:
                continue
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
            continue
        c = key.fileobj
        try:
            d = c.recv(4096)
        except OSError:
            d = b""
        if d:
            try:
                c.send(d)
            except OSError:
                pass
        else:
            sel.unregister(c)
            c.close()
'''

# TCP_HOLDERS SERVER PORT ADDR,ADDR,... PER: PER connections from each address, all at once;
# prints how many completed their handshake (within 3 s), then holds them, idle.
TCP_HOLDERS = r'''
import select, socket, sys, time
server, port, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[4])
pending = []
for a in sys.argv[3].split(","):
    for _ in range(per):
        s = socket.socket()
        s.setblocking(False)
        s.bind((a, 0))
        s.connect_ex((server, port))
        pending.append(s)
held, deadline = [], time.monotonic() + 3
while pending and time.monotonic() < deadline:
    _, ready, _ = select.select([], pending, [], 0.1)
    for s in ready:
        pending.remove(s)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            held.append(s)
print(len(held), flush=True)
time.sleep(3600)
'''

# TCP_CLIENTS SERVER PORT NEW WAVE TIMEOUT: 5 established connections echo every 0.1 s (their
# source ports printed first); on a line on stdin, NEW new connections in waves of WAVE, each
# connect (within TIMEOUT s), echo, close; then one JSON line: new, new_ok, echo_sent, echo_ok.
# The 5 stay open until the process is killed.
TCP_CLIENTS = r'''
import json, socket, sys, threading, time
server, port = sys.argv[1], int(sys.argv[2])
new, wave, timeout = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
conns = [socket.create_connection((server, port), timeout=2) for _ in range(5)]
print(" ".join(str(c.getsockname()[1]) for c in conns), flush=True)
echo = {"sent": 0, "ok": 0}
stop = threading.Event()
def pinger():
    while not stop.is_set():
        for c in conns:
            echo["sent"] += 1
            try:
                c.sendall(b"ping")
                echo["ok"] += c.recv(16) == b"ping"
            except OSError:
                pass
        time.sleep(0.1)
t = threading.Thread(target=pinger)
t.start()
sys.stdin.readline()
ok = 0
def one():
    global ok
    try:
        with socket.create_connection((server, port), timeout=timeout) as s:
            s.sendall(b"hello")
            if s.recv(16) == b"hello":
                ok += 1
    except OSError:
        pass
done = 0
while done < new:
    ts = [threading.Thread(target=one) for _ in range(min(wave, new - done))]
    for x in ts:
        x.start()
    for x in ts:
        x.join()
    done += len(ts)
stop.set()
t.join()
print(json.dumps({"new": new, "new_ok": ok, "echo_sent": echo["sent"], "echo_ok": echo["ok"]}), flush=True)
time.sleep(3600)
'''
