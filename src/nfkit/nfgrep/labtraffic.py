"""Real traffic from real programs in a namespace lab, captured with tcpdump.

Owns: the client/server lab used by the capture tests and the nfgrep
benchmark, the servers and clients it runs (Debian programs where Debian has
a light one; small stdlib Python peers for POP3, IMAP, WebSocket, an HTTP
CONNECT proxy, one-byte-segment requests and random bytes), and the ground
truth of every flow it makes.  Must not know: how flows are classified.

Addresses: client 192.0.2.2 / 2001:db8::2, server 192.0.2.1 / 2001:db8::1 on
one veth link; nothing leaves the two namespaces.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nfkit.errors import CapabilityError
from nfkit.lab import Lab, Namespace

SERVER4, CLIENT4 = "192.0.2.1", "192.0.2.2"
SERVER6, CLIENT6 = "2001:db8::1", "2001:db8::2"
CAPTURE_BUFFER_KIB = 32768  # tcpdump -B: kernel ring per capture


def _tcpdump_stats(log: Path) -> tuple[int, int, int]:
    """(captured, received by filter, dropped by kernel) from tcpdump's exit lines; -1 if absent."""
    found = {"captured": -1, "received by filter": -1, "dropped by kernel": -1}
    for line in log.read_text(errors="replace").splitlines():
        for key in found:
            if line.endswith(f"packets {key}") or line.endswith(f"packet {key}"):
                found[key] = int(line.split()[0])
    return found["captured"], found["received by filter"], found["dropped by kernel"]


@dataclass(frozen=True)
class Truth:
    """How one flow was made: transport, server port, the app it is, fields that must be kept."""

    transport: str
    port: int
    app: str | None
    fields: tuple[tuple[str, str], ...] = ()
    server: str = SERVER4
    note: str = ""


# -- small Python peers (stdlib only) -------------------------------------------

PEERS = {
    "mailserver.py": r'''
import socket, sys, threading
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def pop3(c, f):
    c.sendall(b"+OK POP3 ready\r\n")
    for line in f:
        cmd = line.split(b" ")[0].strip().upper()
        if cmd == b"CAPA": c.sendall(b"+OK\r\nUSER\r\n.\r\n")
        elif cmd in (b"LIST", b"UIDL"): c.sendall(b"+OK 0 messages\r\n.\r\n")
        elif cmd == b"QUIT": c.sendall(b"+OK bye\r\n"); return
        else: c.sendall(b"+OK\r\n")
def imap(c, f):
    c.sendall(b"* OK IMAP4rev1 ready\r\n")
    for line in f:
        parts = line.strip().split(b" ")
        tag, cmd = parts[0], (parts[1].upper() if len(parts) > 1 else b"")
        if cmd == b"CAPABILITY": c.sendall(b"* CAPABILITY IMAP4rev1\r\n")
        elif cmd == b"LIST": c.sendall(b'* LIST () "/" INBOX\r\n')
        elif cmd == b"LOGOUT": c.sendall(b"* BYE\r\n" + tag + b" OK done\r\n"); return
        c.sendall(tag + b" OK done\r\n")
def serve(c):
    with c, c.makefile("rb") as f:
        (pop3 if kind == "pop3" else imap)(c, f)
s = socket.create_server((host, port), reuse_port=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
''',
    "wsserver.py": r'''
import base64, hashlib, socket, sys, threading
host, port = sys.argv[1], int(sys.argv[2])
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def serve(c):
    with c:
        req = b""
        while b"\r\n\r\n" not in req:
            chunk = c.recv(4096)
            if not chunk: return
            req += chunk
        key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
        acc = base64.b64encode(hashlib.sha1(key + GUID).digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
        data = c.recv(4096)
        c.sendall(b"\x81\x05hello")
s = socket.create_server((host, port))
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
''',
    "wsclient.py": r'''
import base64, os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
c = socket.create_connection((host, port))
key = base64.b64encode(os.urandom(16))
c.sendall(b"GET /chat HTTP/1.1\r\nHost: " + host.encode() + b"\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
resp = c.recv(4096)
assert resp.startswith(b"HTTP/1.1 101"), resp
mask = os.urandom(4)
c.sendall(b"\x81\x85" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hello")))
c.recv(4096)
c.close()
''',
    "proxy.py": r'''
import socket, sys, threading
host, port = sys.argv[1], int(sys.argv[2])
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    finally:
        try: b.shutdown(socket.SHUT_WR)
        except OSError: pass
def serve(c):
    req = b""
    while b"\r\n\r\n" not in req:
        chunk = c.recv(4096)
        if not chunk: c.close(); return
        req += chunk
    target = req.split(b" ")[1].decode()
    th, tp = target.rsplit(":", 1)
    u = socket.create_connection((th.strip("[]"), int(tp)))
    c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    t = threading.Thread(target=pipe, args=(u, c), daemon=True); t.start()
    pipe(c, u); t.join(5); c.close(); u.close()
s = socket.create_server((host, port))
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
''',
    "onebyte.py": r'''
import socket, sys, time
host, port, text = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode().decode("unicode_escape").encode("latin-1")
c = socket.create_connection((host, port))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for i in range(len(text)):
    c.send(text[i:i + 1])
    time.sleep(0.002)
c.shutdown(socket.SHUT_WR)
while c.recv(65536): pass
c.close()
''',
    "sink.py": r'''
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_server((host, port))
while True:
    c, _ = s.accept()
    with c:
        try:
            while c.recv(65536): pass
        except OSError: pass
''',
    "randombytes.py": r'''
import os, random, socket, sys
host, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else None)
for _ in range(count):
    c = socket.create_connection((host, port))
    c.sendall(rnd.randbytes(size))
    c.close()
''',
}


class TrafficLab:
    """Two namespaces, a veth link, tcpdump captures, servers started on demand.

    Use as a context manager; everything started is stopped (by PID) and the
    namespaces are removed on exit.  Raises `CapabilityError` when a program
    is missing or does not come up.
    """

    def __init__(self, workdir: str | os.PathLike[str], firewall: bool = False) -> None:
        """``firewall``: a third namespace ``fw`` forwards between client and server (same
        addresses: proxy ARP and NDP on its two links), for tests of the packet path."""
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lab = Lab("nfg")
        self.truth: list[Truth] = []
        self._captures: list[tuple[subprocess.Popen[bytes], Path]] = []
        self._started: set[str] = set()
        self.capture_stats: dict[str, tuple[int, int, int]] = {}
        try:
            self.client: Namespace = self.lab.add("c")
            self.server: Namespace = self.lab.add("s")
            if firewall:
                self.fw: Namespace = self.lab.add("fw")
                self._firewall()
            else:
                self.lab.link(self.client, self.server, [f"{CLIENT4}/24", f"{CLIENT6}/64"],
                              [f"{SERVER4}/24", f"{SERVER6}/64"], "eth0", "eth0")
            for name, text in PEERS.items():
                (self.dir / name).write_text(text)
            (self.dir / "www").mkdir(exist_ok=True)
            (self.dir / "www" / "hello.txt").write_text("hello from nfkit\n" * 20)
        except BaseException:
            self.lab.close()
            raise

    def _firewall(self) -> None:
        """client eth0 -- eth0 fw eth1 -- eth0 server, both ends on one subnet: the fw answers
        ARP and NDP for the far side (proxy) and routes each address to its own link."""
        fw = self.fw
        self.lab.link(self.client, fw, [f"{CLIENT4}/24", f"{CLIENT6}/64"], ["203.0.113.1/32"],
                      "eth0", "eth0")
        self.lab.link(fw, self.server, ["203.0.113.2/32"], [f"{SERVER4}/24", f"{SERVER6}/64"],
                      "eth1", "eth0")
        fw.sysctl("net.ipv4.ip_forward", "1")
        fw.sysctl("net.ipv6.conf.all.forwarding", "1")
        for dev, near, far in (("eth0", (CLIENT4, CLIENT6), (SERVER4, SERVER6)),
                               ("eth1", (SERVER4, SERVER6), (CLIENT4, CLIENT6))):
            fw.sysctl(f"net.ipv4.conf.{dev}.proxy_arp", "1")
            fw.sysctl(f"net.ipv4.neigh.{dev}.proxy_delay", "0")  # else up to 0.8 s per new address
            fw.sysctl(f"net.ipv6.conf.{dev}.proxy_ndp", "1")
            fw.run(["ip", "route", "add", f"{near[0]}/32", "dev", dev])
            fw.run(["ip", "-6", "route", "add", f"{near[1]}/128", "dev", dev])
            fw.run(["ip", "-6", "neigh", "add", "proxy", far[1], "dev", dev])

    def __enter__(self) -> TrafficLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stop_captures()
        self.lab.close()

    # -- captures ------------------------------------------------------------

    def capture(self, name: str, interface: str = "eth0", snaplen: int = 0) -> Path:
        """Start tcpdump in the server namespace writing pcap file ``name``.

        Returns once tcpdump says it is listening (its socket is bound, so no
        later packet is missed).  No ``--immediate-mode``: that selects
        libpcap's fixed-size ring frames, a full snapshot (256 KiB) each, and
        on ``any`` (no MTU to size them by) the default 2 MiB ring then holds
        4 loopback packets: a tcpdump starved of CPU for a moment lost the
        rest ("dropped by kernel"), the flaky "flow not found" on ``any``.
        The block ring packs packets by their real size; with ``-B`` 32 MiB it
        holds thousands of packets of a stalled tcpdump.  Its delivery delay
        (up to a second) is absorbed by `stop_captures`.  ``-U`` writes each
        packet out as delivered.  Raises `CapabilityError` when tcpdump does
        not come up.
        """
        path = self.dir / name
        err = self.dir / f"{name}.log"
        with open(err, "wb") as log:
            proc = self.server.popen(["tcpdump", "-i", interface, "-U", "-n",
                                      "-B", str(CAPTURE_BUFFER_KIB), "-s", str(snaplen),
                                      "-w", str(path)], stderr=log)
        deadline = time.monotonic() + 10
        while b"listening on" not in err.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise CapabilityError(f"tcpdump on {interface}: {err.read_text().strip()}")
            time.sleep(0.02)
        self._captures.append((proc, path))
        return path

    def _drain_mark(self) -> bytes:
        """Send one non-IP frame (no flow) client -> server on the link; its payload."""
        mark = b"nfkit-capture-drain-" + os.urandom(8).hex().encode()
        code = ("import socket,sys;s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);"
                "s.bind(('eth0',0));"
                f"s.send(b'\\xff'*6+s.getsockname()[4]+b'\\x88\\xb5'+{mark!r})")
        self.client.run([sys.executable, "-c", code])
        return mark

    def stop_captures(self) -> None:
        """Stop tcpdump once it has written every packet sent so far, and wait for it.

        On SIGINT tcpdump leaves at once: packets still queued in its kernel
        ring, not yet delivered, are lost.  So a marker
        frame (an experimental EtherType, no IP: never a flow) goes over the
        link after the traffic, and each capture is stopped only once that
        marker is in its file; then SIGINT and wait.  What tcpdump reports
        at exit is kept in `capture_stats` (captured, received, dropped).
        """
        if not self._captures:
            return
        time.sleep(0.3)  # the last packets of the last exchange (FIN, final ACK)
        pending = list(self._captures)
        try:
            mark = self._drain_mark()
        except CapabilityError:
            mark = b""
        deadline = time.monotonic() + 30
        while mark and pending and time.monotonic() < deadline:
            pending = [(proc, path) for proc, path in pending
                       if proc.poll() is None and mark not in path.read_bytes()]
            if pending:
                time.sleep(0.05)
        for proc, _ in self._captures:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc, path in self._captures:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.capture_stats[path.name] = _tcpdump_stats(self.dir / f"{path.name}.log")
        self._captures.clear()

    # -- servers -----------------------------------------------------------------

    def _wait_port(self, port: int, udp: bool = False, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        flag = "-Hlun" if udp else "-Hltn"
        while True:
            out = self.server.run(["ss", flag, f"sport = :{port}"], check=False).stdout
            if out.strip():
                return
            if time.monotonic() > deadline:
                raise CapabilityError(f"server on port {port} did not come up")
            time.sleep(0.05)

    def serve(self, key: str, argv: list[str], port: int, udp: bool = False,
              cwd: Path | None = None, run_dirs: tuple[str, ...] = ()) -> None:
        if key in self._started:
            return
        log = open(self.dir / f"{key}.log", "wb")  # noqa: SIM115 - the child holds it
        self.server.serve(argv, run_dirs, stdout=log, stderr=log, cwd=str(cwd or self.dir))
        log.close()
        self._wait_port(port, udp)
        self._started.add(key)

    def _py(self, script: str, *args: object) -> list[str]:
        return [sys.executable, str(self.dir / script), *map(str, args)]

    def run_client(self, argv: list[str], timeout: float = 30, check: bool = True) -> str:
        proc = self.client.run(argv, check=False, timeout=timeout)
        if check and proc.returncode != 0:
            raise CapabilityError(f"client {' '.join(argv[:3])} exited {proc.returncode}: "
                                  f"{(proc.stderr or proc.stdout).strip()[:300]}")
        return proc.stdout

    # -- scenarios: each makes flows and records their truth --------------------

    def http(self, port: int = 8000, ipv6: bool = False, agent: str = "nfkit-test/1.0") -> None:
        self.serve(f"http{port}", [sys.executable, "-m", "http.server", str(port), "--bind", "::"],
                   port, cwd=self.dir / "www")
        host = f"[{SERVER6}]" if ipv6 else SERVER4
        self.run_client(["curl", "-sS", "-o", "/dev/null", "-A", agent,
                         f"http://{host}:{port}/hello.txt"])
        self.truth.append(Truth("tcp", port, "http", (("method", "GET"), ("host", f"{host}:{port}"),
                                                      ("user_agent", agent)),
                                server=SERVER6 if ipv6 else SERVER4))

    def http_one_byte(self, port: int = 8000) -> None:
        """A request sent one byte per segment (TCP_NODELAY, one send per byte)."""
        self.serve(f"http{port}", [sys.executable, "-m", "http.server", str(port), "--bind", "::"],
                   port, cwd=self.dir / "www")
        self.run_client(self._py("onebyte.py", SERVER4, port,
                                 "GET /hello.txt HTTP/1.1\\r\\nHost: split.example\\r\\n"
                                 "User-Agent: one-byte/1\\r\\nConnection: close\\r\\n\\r\\n"))
        self.truth.append(Truth("tcp", port, "http", (("host", "split.example"),
                                                      ("user_agent", "one-byte/1")), note="one-byte"))

    def tls(self, port: int = 4433, sni: str = "www.example.test", alpn: str = "h2") -> None:
        key, cert = self.dir / "tls.key", self.dir / "tls.pem"
        if not cert.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                            str(cert), "-days", "2", "-subj", "/CN=www.example.test"],
                           check=True, capture_output=True)
        self.serve(f"tls{port}", ["openssl", "s_server", "-accept", str(port), "-cert", str(cert),
                                  "-key", str(key), "-alpn", "h2,http/1.1", "-www", "-quiet"], port)
        # s_client ends when s_server -www has answered and closed (exit status not checked:
        # it reports the server's close as an error)
        self.client.run(["sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | openssl s_client "
                         f"-connect {SERVER4}:{port} -servername {sni} -alpn {alpn} -quiet"],
                        check=False, timeout=20)
        self.truth.append(Truth("tcp", port, "tls", (("sni", sni), ("alpn", alpn))))

    def ssh(self, port: int = 22) -> None:
        hostkey = self.dir / "ssh_host_ed25519_key"
        if not hostkey.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)],
                           check=True, capture_output=True)
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        self.serve(f"ssh{port}", [sshd, "-D", "-e", "-f", "/dev/null", "-h", str(hostkey),
                                  "-p", str(port), "-o", f"ListenAddress={SERVER4}",
                                  "-o", "PidFile=none", "-o", "UsePAM=no"],
                   port, run_dirs=("sshd",))
        self.client.run(["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                         "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
                         "-p", str(port), f"nobody@{SERVER4}", "true"], check=False, timeout=20)
        self.truth.append(Truth("tcp", port, "ssh", (("client_banner", "SSH-2.0-OpenSSH"),)))

    def dns(self, name: str = "www.example.test", tcp: bool = False) -> None:
        self.serve("dns", ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
                           "--conf-file=/dev/null", f"--listen-address={SERVER4}",
                           "--bind-interfaces", "--port=53", "--pid-file",
                           f"--address=/example.test/{SERVER4}", "--user=root"], 53, udp=True)
        self.run_client(["dig", f"@{SERVER4}", name, "A", "+tries=1", "+time=3"]
                        + (["+tcp"] if tcp else []))
        self.truth.append(Truth("tcp" if tcp else "udp", 53, "dns", (("qname", name),)))

    def redis(self, port: int = 6379) -> None:
        self.serve("redis", ["redis-server", "--port", str(port), "--bind", SERVER4, "--save", "",
                             "--appendonly", "no", "--protected-mode", "no"], port)
        self.run_client(["redis-cli", "-h", SERVER4, "-p", str(port), "SET", "greeting", "hello"])
        self.truth.append(Truth("tcp", port, "redis", (("command", "SET"),)))

    def mqtt(self, port: int = 1883) -> None:
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"listener {port} {SERVER4}\nallow_anonymous true\n")
        self.serve("mqtt", ["mosquitto", "-c", str(conf)], port)
        self.run_client(["mosquitto_pub", "-h", SERVER4, "-p", str(port), "-t", "nfkit/test",
                         "-m", "hello"])
        self.truth.append(Truth("tcp", port, "mqtt"))

    def smtp(self, port: int = 25) -> None:
        self.serve("smtp", [sys.executable, "-W", "ignore", "-m", "smtpd", "-n", "-c",
                            "DebuggingServer", f"{SERVER4}:{port}"], port)
        msg = self.dir / "mail.txt"
        msg.write_text("Subject: test\r\n\r\nhello\r\n")
        self.run_client(["curl", "-sS", f"smtp://{SERVER4}:{port}", "--mail-from", "a@example.test",
                         "--mail-rcpt", "b@example.test", "-T", str(msg)])
        self.truth.append(Truth("tcp", port, "smtp"))

    def pop3(self, port: int = 110) -> None:
        self.serve("pop3", self._py("mailserver.py", "pop3", SERVER4, port), port)
        self.run_client(["curl", "-sS", "-u", "user:secret", f"pop3://{SERVER4}:{port}/"])
        self.truth.append(Truth("tcp", port, "pop3"))

    def imap(self, port: int = 143) -> None:
        self.serve("imap", self._py("mailserver.py", "imap", SERVER4, port), port)
        self.run_client(["curl", "-sS", "-u", "user:secret", f"imap://{SERVER4}:{port}/"])
        self.truth.append(Truth("tcp", port, "imap"))

    def ftp(self, port: int = 21, active: bool = False) -> None:
        root = self.dir / "ftproot"
        root.mkdir(exist_ok=True)
        os.chmod(root, 0o755)
        # vsftpd's chroot while it parses a command: empty, not writable, the lab's own
        empty = self.dir / "vsftpd-empty"
        empty.mkdir(exist_ok=True)
        os.chmod(empty, 0o555)
        (root / "file.txt").write_text("ftp data\n" * 50)
        conf = self.dir / "vsftpd.conf"
        conf.write_text(
            f"listen=YES\nlisten_ipv6=NO\nlisten_address={SERVER4}\nlisten_port={port}\n"
            "anonymous_enable=YES\nlocal_enable=NO\nwrite_enable=NO\nno_anon_password=YES\n"
            f"anon_root={root}\npasv_enable=YES\npasv_min_port=40000\npasv_max_port=40100\n"
            "seccomp_sandbox=NO\nbackground=NO\n"
            f"secure_chroot_dir={empty}\n"
            "xferlog_enable=NO\nuse_localtime=NO\nport_enable=YES\n")
        os.chmod(conf, 0o600)
        self.serve("ftp", ["vsftpd", str(conf)], port)
        # active mode: the client announces its own address with PORT/EPRT, the server connects
        self.run_client(["curl", "-sS", "-o", "/dev/null", *(["-P", CLIENT4] if active else []),
                         f"ftp://{SERVER4}:{port}/file.txt"])
        self.truth.append(Truth("tcp", port, "ftp"))
        if active:
            self.truth.append(Truth("tcp", 0, "ftp-data", server=CLIENT4,
                                    note="data connection (active: the server connects)"))
        else:
            self.truth.append(Truth("tcp", 0, "ftp-data", note="data connection (passive)"))

    def websocket(self, port: int = 8080) -> None:
        self.serve("ws", self._py("wsserver.py", SERVER4, port), port)
        self.run_client(self._py("wsclient.py", SERVER4, port))
        self.truth.append(Truth("tcp", port, "websocket"))

    def connect_tunnel(self, port: int = 3128, target_port: int = 8000) -> None:
        self.serve(f"http{target_port}", [sys.executable, "-m", "http.server", str(target_port),
                                          "--bind", "::"], target_port, cwd=self.dir / "www")
        self.serve("proxy", self._py("proxy.py", SERVER4, port), port)
        self.run_client(["curl", "-sS", "-o", "/dev/null", "-p", "-x", f"http://{SERVER4}:{port}",
                         f"http://{SERVER4}:{target_port}/hello.txt"])
        self.truth.append(Truth("tcp", port, "http-connect",
                                (("target", f"{SERVER4}:{target_port}"),)))

    def random_bytes(self, port: int = 443, count: int = 1, size: int = 517, seed: int = 1) -> None:
        """Random bytes to a TLS port: not TLS."""
        self.serve(f"sink{port}", self._py("sink.py", SERVER4, port), port)
        self.run_client(self._py("randombytes.py", SERVER4, port, count, size, seed))
        for _ in range(count):
            self.truth.append(Truth("tcp", port, None, note="random bytes"))
