"""The shipped signatures on bytes that real programs exchanged on loopback.

Each test runs a real server and a real client (or Python's own library where
that is the real implementation), records both directions through a relay,
and classifies the recording twice: as recorded, and one byte at a time.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import random
import socket
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfkit.nfgrep.engine import Engine, FlowState
from nfkit.nfgrep.loader import load_rules

from .traffic import Chunk, Server, TcpRecorder, UdpRecorder, free_port, run, wait_port

RULES = load_rules()


def classify(chunks: list[Chunk], transport: str = "tcp", server_port: int = 0,
             engine: Engine | None = None) -> FlowState:
    engine = engine or Engine(RULES)
    st = engine.new_flow(transport, 40000, server_port, "127.0.0.1", "127.0.0.1")
    for d, data in chunks:
        engine.feed(st, d, data)
    return st


def bytewise(chunks: list[Chunk]) -> list[Chunk]:
    return [(d, data[i:i + 1]) for d, data in chunks for i in range(len(data))]


def check(chunks: list[Chunk], app: str, transport: str = "tcp", server_port: int = 0,
          chain: list[str] | None = None, **fields: str) -> FlowState:
    """Classify as recorded and byte by byte: both must agree and be right."""
    st = classify(chunks, transport, server_port)
    assert st.app == app, (st.app, st.chain, chunks[:4])
    assert st.done
    if chain is not None:
        assert st.chain == chain
    for name, value in fields.items():
        assert st.fields.get(name) == value, (name, st.fields)
    if transport == "tcp":
        one = classify(bytewise(chunks), transport, server_port)
        assert (one.app, one.chain, one.fields, one.expectations) == \
            (st.app, st.chain, st.fields, st.expectations)
    return st


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text("hello from nfgrep tests\n")
    return tmp_path


@pytest.fixture
def http_server(workdir: Path) -> Iterator[int]:
    port = free_port()
    server = Server([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                     "--directory", str(workdir)], port)
    yield port
    server.stop()


# ---------------------------------------------------------------- HTTP family

def test_http_curl_get_and_post_on_an_unusual_port(http_server: int) -> None:
    rec = TcpRecorder(http_server)
    url = f"http://127.0.0.1:{rec.port}/index.html"
    run(["curl", "-s", "-A", "nfgrep-test/1.0", url])
    run(["curl", "-s", "-d", "a=1", url])
    first, second = rec.wait(2)
    rec.close()
    check(first.chunks, "http", method="GET", host=f"127.0.0.1:{rec.port}",
          user_agent="nfgrep-test/1.0")
    # python's http.server answers POST with 501: still HTTP, method kept
    check(second.chunks, "http", method="POST")


class _Upgrade(http.server.BaseHTTPRequestHandler):
    """Answers a WebSocket opening handshake (RFC 6455 section 4.2.2) with the stdlib server."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


class _Proxy(http.server.BaseHTTPRequestHandler):
    """A CONNECT proxy on the stdlib server: 200, then relays bytes both ways."""

    def do_CONNECT(self) -> None:  # noqa: N802
        host, port = self.path.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        conn = self.connection

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        t = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
        t.start()
        pump(conn, upstream)
        t.join(5)
        upstream.close()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def _threaded(handler: type) -> tuple[http.server.ThreadingHTTPServer, int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def test_websocket_upgrade_chains_after_http() -> None:
    server, port = _threaded(_Upgrade)
    rec = TcpRecorder(port)
    key = base64.b64encode(os.urandom(16)).decode()
    run(["curl", "-s", "--max-time", "3", "-H", "Connection: Upgrade", "-H",
         "Upgrade: websocket", "-H", f"Sec-WebSocket-Key: {key}", "-H",
         "Sec-WebSocket-Version: 13", f"http://127.0.0.1:{rec.port}/chat"])
    (session,) = rec.wait(1)
    rec.close()
    server.shutdown()
    check(session.chunks, "websocket", chain=["http", "websocket"], method="GET")


def test_connect_tunnel_chains_after_http(http_server: int) -> None:
    proxy, port = _threaded(_Proxy)
    rec = TcpRecorder(port)
    run(["curl", "-s", "-p", "-x", f"http://127.0.0.1:{rec.port}",
         f"http://127.0.0.1:{http_server}/index.html"])
    (session,) = rec.wait(1)
    rec.close()
    proxy.shutdown()
    check(session.chunks, "http-connect", chain=["http", "http-connect"], method="CONNECT",
          target=f"127.0.0.1:{http_server}")


# ---------------------------------------------------------------- TLS

@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("cert")
    key, cert = str(d / "key.pem"), str(d / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=www.example.test",
                    "-keyout", key, "-out", cert, "-days", "1"], check=True,
                   capture_output=True)
    return key, cert


def test_tls_curl_to_openssl_s_server(certificate: tuple[str, str]) -> None:
    key, cert = certificate
    port = free_port()
    server = Server(["openssl", "s_server", "-accept", str(port), "-key", key, "-cert", cert,
                     "-www", "-alpn", "http/1.1"], port)
    try:
        rec = TcpRecorder(port)
        run(["curl", "-sk", "--resolve", f"www.example.test:{rec.port}:127.0.0.1",
             f"https://www.example.test:{rec.port}/"])
        sessions = rec.wait(1)
        rec.close()
    finally:
        server.stop()
    check(sessions[-1].chunks, "tls", sni="www.example.test", version="TLSv1.3")


def test_tls_python_ssl_with_sni_and_alpn(certificate: tuple[str, str]) -> None:
    key, cert = certificate
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(100)
        except (OSError, ssl.SSLError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    rec = TcpRecorder(port)
    client = ssl.create_default_context(cafile=cert)
    client.check_hostname = False
    client.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", rec.port)) as raw:
        with client.wrap_socket(raw, server_hostname="api.example.test") as tls:
            tls.sendall(b"ping")
    (session,) = rec.wait(1)
    rec.close()
    t.join(5)
    listener.close()
    check(session.chunks, "tls", sni="api.example.test", alpn="http/1.1", version="TLSv1.2")


@pytest.mark.parametrize("seed", range(40))
def test_random_bytes_on_443_are_not_tls(seed: int) -> None:
    rnd = random.Random(seed)
    client = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 1500)))
    if seed % 4 == 0:  # even with a plausible record header
        client = b"\x16\x03\x01" + client
    server = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 1500)))
    st = classify([(0, client), (1, server)], "tcp", 443)
    assert st.app is None and st.done


# ---------------------------------------------------------------- SSH, DNS

def test_ssh_banners(tmp_path: Path) -> None:
    hostkey = tmp_path / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)],
                   check=True)
    port = free_port()
    server = Server(["/usr/sbin/sshd", "-D", "-f", "/dev/null", "-h", str(hostkey), "-p",
                     str(port), "-o", "ListenAddress=127.0.0.1", "-o", "PidFile=none",
                     "-o", "UsePAM=no"], port, run_dirs=("sshd",))
    try:
        rec = TcpRecorder(port)
        run(["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
             "UserKnownHostsFile=/dev/null", "-p", str(rec.port), "nobody@127.0.0.1", "true"])
        sessions = rec.wait(1)
        rec.close()
    finally:
        server.stop()
    session = sessions[-1]
    st = check(session.chunks, "ssh")
    assert st.fields["banner"].startswith("SSH-2.0-OpenSSH")
    assert st.fields["client_banner"].startswith("SSH-2.0-OpenSSH")


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[int]:
    port = free_port(socket.SOCK_DGRAM)
    server = Server(["dnsmasq", "-d", "-C", "/dev/null", "-p", str(port),
                     "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                     "--no-hosts", "--address=/example.org/192.0.2.7",
                     f"--pid-file={tmp_path / 'pid'}"], port)
    yield port
    server.stop()


def test_dns_over_udp_dig_to_dnsmasq(dnsmasq: int) -> None:
    rec = UdpRecorder(dnsmasq)
    run(["dig", "+time=2", "+tries=1", "@127.0.0.1", "-p", str(rec.port), "www.example.org"])
    rec.close()
    st = check(rec.chunks, "dns", "udp", qname="www.example.org")
    assert any(d == 1 for d, _ in rec.chunks)
    assert st.done


def test_dns_over_tcp_dig_to_dnsmasq(dnsmasq: int) -> None:
    rec = TcpRecorder(dnsmasq)
    run(["dig", "+tcp", "+time=2", "+tries=1", "@127.0.0.1", "-p", str(rec.port),
         "mail.example.org", "MX"])
    (session,) = rec.wait(1)
    rec.close()
    check(session.chunks, "dns", qname="mail.example.org")


# ---------------------------------------------------------------- mail

def test_smtp_curl_to_python_smtpd(tmp_path: Path) -> None:
    port = free_port()
    server = Server([sys.executable, "-W", "ignore", "-m", "smtpd", "-n", "-c",
                     "DebuggingServer", f"127.0.0.1:{port}"], port)
    try:
        rec = TcpRecorder(port)
        mail = tmp_path / "mail.txt"
        mail.write_text("Subject: hi\r\n\r\nhello\r\n")
        run(["curl", "-s", f"smtp://127.0.0.1:{rec.port}", "--mail-from", "a@example.org",
             "--mail-rcpt", "b@example.org", "-T", str(mail)])
        sessions = rec.wait(1)
        rec.close()
    finally:
        server.stop()
    check(sessions[-1].chunks, "smtp")


DOVECOT_CONF = """protocols = imap pop3
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
instance_name = nfgrep-{imap}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {d}/log
passdb {{
  driver = static
  args = password=secret
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/mail/%u
}}
mail_location = maildir:{d}/mail/%u
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
}}
service anvil {{
  chroot =
}}
"""


@pytest.fixture
def dovecot() -> Iterator[tuple[int, int]]:
    """Dovecot serving IMAP and POP3 on loopback, any password, from a directory of its own."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="nfgrep-dovecot-"))
    os.chmod(d, 0o755)
    (d / "mail").mkdir()
    os.chown(d / "mail", 65534, 65534)
    imap, pop3 = free_port(), free_port()
    (d / "dovecot.conf").write_text(DOVECOT_CONF.format(d=d, imap=imap, pop3=pop3))
    server = Server(["/usr/sbin/dovecot", "-F", "-c", str(d / "dovecot.conf")], imap)
    try:
        wait_port(pop3)
        yield imap, pop3
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("scheme, app", [("pop3", "pop3"), ("imap", "imap")])
def test_pop3_and_imap_curl_to_dovecot(dovecot: tuple[int, int], scheme: str,
                                       app: str) -> None:
    imap, pop3 = dovecot
    rec = TcpRecorder(pop3 if scheme == "pop3" else imap)
    run(["curl", "-s", "--max-time", "5", "-u", "user:secret",
         f"{scheme}://127.0.0.1:{rec.port}/"])
    sessions = rec.wait(1)
    rec.close()
    check(sessions[-1].chunks, app)


# ---------------------------------------------------------------- FTP and its data flows

@pytest.fixture
def vsftpd(tmp_path: Path) -> Iterator[int]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "file.txt").write_text("data over the data connection\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    os.chmod(tmp_path, 0o755)
    port = free_port()
    conf = tmp_path / "vsftpd.conf"
    conf.write_text("\n".join([
        "listen=YES", "listen_address=127.0.0.1", f"listen_port={port}", "background=NO",
        "anonymous_enable=YES", "no_anon_password=YES", f"anon_root={root}",
        "local_enable=NO", "write_enable=NO", "seccomp_sandbox=NO",
        f"secure_chroot_dir={empty}", "connect_from_port_20=NO", "pasv_enable=YES",
        "port_enable=YES", "pasv_address=127.0.0.1", "xferlog_enable=NO", "",
    ]))
    server = Server(["/usr/sbin/vsftpd", str(conf)], port)
    yield port
    server.stop()


@pytest.mark.parametrize("mode", ["pasv", "epsv", "port", "eprt"])
def test_ftp_announces_its_data_connection(vsftpd: int, tmp_path: Path, mode: str) -> None:
    rec = TcpRecorder(vsftpd)
    flags = {"pasv": ["--ftp-pasv", "--disable-epsv"], "epsv": ["--ftp-pasv"],
             "port": ["-P", "127.0.0.1", "--disable-eprt"], "eprt": ["-P", "127.0.0.1"]}[mode]
    run(["curl", "-s", *flags, f"ftp://127.0.0.1:{rec.port}/file.txt", "-o",
         str(tmp_path / "out")])
    (session,) = rec.wait(1)
    rec.close()
    assert (tmp_path / "out").read_text().startswith("data over")
    engine = Engine(RULES)
    st = classify(session.chunks, "tcp", 21, engine)
    assert st.app == "ftp"
    (exp,) = st.expectations
    assert (exp.label, exp.transport, exp.addr) == ("ftp-data", "tcp", "127.0.0.1")
    # the data flow: to the announced port; labelled without any signature of its own
    data = engine.new_flow("tcp", 20 if mode in ("port", "eprt") else 41000, exp.port,
                           "127.0.0.1", "127.0.0.1")
    assert (data.app, data.done) == ("ftp-data", True)
    again = engine.new_flow("tcp", 41001, exp.port, "127.0.0.1", "127.0.0.1")
    assert again.app is None  # an expectation is used once
    one = classify(bytewise(session.chunks), "tcp", 21)
    assert one.expectations == st.expectations


# ---------------------------------------------------------------- brokers and databases

def test_mqtt_mosquitto(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    server = Server(["/usr/sbin/mosquitto", "-c", str(conf)], port)
    try:
        rec = TcpRecorder(port)
        run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(rec.port), "-t", "t/1", "-m", "hi",
             "-V", "mqttv311"])
        run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(rec.port), "-t", "t/1", "-m", "hi",
             "-V", "mqttv5"])
        sessions = rec.wait(2)
        rec.close()
    finally:
        server.stop()
    for session in sessions[-2:]:
        check(session.chunks, "mqtt")


def test_redis_cli_to_redis_server() -> None:
    port = free_port()
    server = Server(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no"], port)
    try:
        rec = TcpRecorder(port)
        run(["redis-cli", "-p", str(rec.port), "SET", "k", "v"])
        run(["redis-cli", "-p", str(rec.port), "PING"])
        sessions = rec.wait(2)
        rec.close()
    finally:
        server.stop()
    for session in sessions[-2:]:
        check(session.chunks, "redis")


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    assert found, "the PostgreSQL server is not installed (postgresql in APT_TEST)"
    return found[-1].parent


@pytest.fixture
def postgres_dir() -> Iterator[Path]:
    """A directory the postgres user owns (pytest's own tmp dirs are root's alone)."""
    import pwd
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="nfgrep-pg-"))
    user = pwd.getpwnam("postgres")
    os.chown(path, user.pw_uid, user.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_postgresql_psql_to_postgres(postgres_dir: Path) -> None:
    """psql against a real PostgreSQL server (its own cluster, trust auth, loopback)."""
    bindir = _postgres_bin()
    tmp_path = postgres_dir
    data = tmp_path / "data"
    subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "initdb"), "-N", "-D",
                    str(data), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True, timeout=60)
    port = free_port()
    server = Server(["runuser", "-u", "postgres", "--", str(bindir / "postgres"), "-D",
                     str(data), "-F", "-k", str(tmp_path), "-h", "127.0.0.1", "-p", str(port)],
                    port)
    try:
        rec = TcpRecorder(port)
        for sslmode in ("disable", "prefer"):
            subprocess.run(["psql", f"host=127.0.0.1 port={rec.port} user=postgres "
                            f"dbname=postgres sslmode={sslmode}", "-c", "select 1"],
                           capture_output=True, timeout=20, check=True)
        sessions = rec.wait(2)
        rec.close()
    finally:
        server.stop()
    plain, negotiated = sessions[-2:]
    check(plain.chunks, "postgresql", user="postgres")
    check(negotiated.chunks, "postgresql")


def test_postgresql_psql_startup() -> None:
    """psql's real startup; the server side answers per the protocol (no SSL, then an error)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            try:
                first = conn.recv(8)
                if first[4:8] in (struct.pack(">I", 80877103), struct.pack(">I", 80877104)):
                    conn.sendall(b"N")
                    conn.recv(4096)
                body = b"SFATAL\x00C28000\x00Mno\x00\x00"
                conn.sendall(b"E" + struct.pack(">I", len(body) + 4) + body)
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    rec = TcpRecorder(port)
    env = dict(os.environ, PGCONNECT_TIMEOUT="3", PGPASSWORD="x")
    subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(rec.port), "-U", "alice", "-d", "db",
                    "-c", "select 1"], env=env, capture_output=True, timeout=20)
    sessions = rec.wait(1)
    rec.close()
    listener.close()
    check(sessions[0].chunks, "postgresql")
    # without SSL negotiation the startup message itself names the user
    st = check([(0, _startup(b"alice")), (1, b"R\x00\x00\x00\x08\x00\x00\x00\x00")],
               "postgresql")
    assert st.fields["user"] == "alice"


def _startup(user: bytes) -> bytes:
    body = struct.pack(">I", 196608) + b"user\x00" + user + b"\x00database\x00db\x00\x00"
    return struct.pack(">I", len(body) + 4) + body


def _mysql_packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def test_mysql_client_to_mariadb_server() -> None:
    """The mariadb client against a real MariaDB server (empty data directory, loopback)."""
    import pwd
    import shutil
    import tempfile

    data = Path(tempfile.mkdtemp(prefix="nfgrep-my-"))
    user = pwd.getpwnam("mysql")
    os.chown(data, user.pw_uid, user.pw_gid)
    port = free_port()
    server = Server(["mariadbd", "--no-defaults", f"--datadir={data}", "--user=mysql",
                     f"--port={port}", "--bind-address=127.0.0.1", f"--socket={data}/sock",
                     f"--pid-file={data}/pid", "--skip-grant-tables", "--skip-log-bin"], port)
    try:
        rec = TcpRecorder(port)
        subprocess.run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(rec.port),
                        "-u", "root", "-e", "select 1"], capture_output=True, timeout=20,
                       check=True)
        sessions = rec.wait(1)
        rec.close()
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    st = check(sessions[-1].chunks, "mysql")
    assert "MariaDB" in st.fields["version"]


def test_mysql_handshake_built_from_the_protocol_layout() -> None:
    """No MySQL program on this machine: HandshakeV10 and HandshakeResponse41 per the docs."""
    greeting = (b"\x0a" + b"10.11.6-MariaDB-0+deb12u1\x00" + struct.pack("<I", 7)
                + b"abcdefgh\x00" + struct.pack("<H", 0xF7FE) + b"\x2d"
                + struct.pack("<H", 2) + struct.pack("<H", 0x81FF) + b"\x15" + bytes(10)
                + b"ijklmnopqrst\x00" + b"mysql_native_password\x00")
    login = (struct.pack("<I", 0x000FA685) + struct.pack("<I", 1 << 24) + b"\x2d" + bytes(23)
             + b"root\x00" + b"\x14" + bytes(20) + b"mysql_native_password\x00")
    check([(1, _mysql_packet(0, greeting)), (0, _mysql_packet(1, login))], "mysql",
          version="10.11.6-MariaDB-0+deb12u1")


def test_server_port_hint_is_not_decisive(http_server: int) -> None:
    rec = TcpRecorder(http_server)
    run(["curl", "-s", f"http://127.0.0.1:{rec.port}/"])
    (session,) = rec.wait(1)
    rec.close()
    for port in (22, 443, 5432, 6379, 53):
        assert classify(session.chunks, "tcp", port).app == "http"


def test_wait_port_helper_times_out() -> None:
    with pytest.raises(TimeoutError):
        wait_port(free_port(), timeout=0.2)
