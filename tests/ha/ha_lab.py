"""The interop lab: client -- fw -- server (nfkit.lab.three_node) plus a sync peer.

fw does SNAT (to a port range, so NAT ports change), DNAT (tcp/8080 to the
server's port 80) and sets ct mark 42 on forwarded flows; ``peer`` is joined to
fw by the sync link sync0 (fw 203.0.113.1, peer 203.0.113.2).  Traffic is made
by real sockets in the client and server namespaces.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nfkit.conntrack.model import Entry
from nfkit.conntrack.table import ConntrackTable
from nfkit.lab import Lab, Namespace, three_node

FW_SYNC, PEER_SYNC = "203.0.113.1", "203.0.113.2"

FW_RULES = """
table ip nat {
  chain post { type nat hook postrouting priority 100;
    oifname "eth1" meta l4proto { tcp, udp } snat to 198.51.100.1:40000-40100; oifname "eth1" snat to 198.51.100.1; }
  chain pre { type nat hook prerouting priority -100; tcp dport 8080 dnat to 198.51.100.2:80; }
}
table ip6 nat { chain post { type nat hook postrouting priority 100; oifname "eth1" snat to 2001:db8:2::1; }; }
table inet marks { chain forward_mark { type filter hook forward priority 0; ct mark set 42; }; }
"""

SERVER = r"""
import socket, threading, time
def tcp(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, 80)); s.listen()
    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
def echo(c):
    while data := c.recv(100):
        c.sendall(data)
    c.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
    while True:
        d, a = s.recvfrom(100); s.sendto(d, a)
for target, args in ((tcp, (socket.AF_INET, "0.0.0.0")), (tcp, (socket.AF_INET6, "::")), (udp, ())):
    threading.Thread(target=target, args=args, daemon=True).start()
time.sleep(3600)
"""

# a TCP exchange; with "hold" the connection stays open (ESTABLISHED) until the lab stops it
CLIENT = r"""
import socket, sys, time
host, port, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "hold"
s = socket.create_connection((host, port), timeout=5); s.sendall(b"hi"); assert s.recv(10) == b"hi"
print("ok", flush=True)
if hold:
    time.sleep(3600)
s.close()
"""


# SCTP entries made with the conntrack tool (this kernel has no SCTP sockets): IPv4 with
# SNAT and a mark, IPv6 half open.  `conntrack -I --orig-vtag N` gives the kernel N with its
# bytes swapped (the tool and libnetfilter_conntrack both byte-swap it): the kernel's own
# values are compared, as a ctnetlink dump gives them.
SCTP_ENTRIES = (
    "-s 192.0.2.11 -d 198.51.100.9 --sport 1001 --dport 2000 --state ESTABLISHED --orig-vtag 287454020 "
    "--reply-vtag 2864434397 -t 200 -u SEEN_REPLY,ASSURED -m 5 --src-nat 198.51.100.1",
    "-s 2001:db8::7 -d 2001:db8:2::9 --sport 3000 --dport 4000 --state COOKIE_WAIT --orig-vtag 1 "
    "--reply-vtag 0 -t 200",
)
SCTP_UPDATE = ("-s 192.0.2.11 -d 198.51.100.9 --sport 1001 --dport 2000 --state SHUTDOWN_SENT "
               "--orig-vtag 287454020 --reply-vtag 2864434397")

@contextmanager
def sync_lab() -> Iterator[Lab]:
    with three_node("nkha") as lab:
        peer = lab.add("peer")
        lab.link(lab["fw"], peer, [f"{FW_SYNC}/24"], [f"{PEER_SYNC}/24"], "sync0", "sync0")
        lab["fw"].run(["nft", "-f", "-"], input=FW_RULES)
        lab["server"].popen(["python3", "-c", SERVER])
        yield lab


def make_traffic(lab: Lab) -> None:
    """TCP (SNAT; one held open), TCP to 8080 (DNAT+SNAT), UDP, ICMP, TCP and ICMP over IPv6."""
    client = lab["client"]
    deadline = time.monotonic() + 10
    # wait for the server's sockets without touching them (a refused try would leave an entry)
    while len(lab["server"].run(["ss", "-Hlntu", "( sport = :80 or sport = :53 )"]).stdout.splitlines()) < 3:
        if time.monotonic() > deadline:
            raise RuntimeError("the lab's server did not come up")
        time.sleep(0.05)
    client.run(["python3", "-c", CLIENT, "198.51.100.2", "80", "once"])
    held = client.popen(["python3", "-c", CLIENT, "198.51.100.2", "80", "hold"], stdout=-1)
    assert held.stdout is not None and held.stdout.readline() == b"ok\n"
    client.run(["python3", "-c", CLIENT, "192.0.2.1", "8080", "once"])
    client.run(["python3", "-c", CLIENT, "2001:db8:2::2", "80", "once"])
    client.run(["python3", "-c", "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                "s.settimeout(3); s.sendto(b'q', ('198.51.100.2', 53)); s.recv(10)"])
    client.run("ping -c1 -W2 198.51.100.2")
    client.run("ping -6 -c1 -W2 2001:db8:2::2")


def table_in(ns: Namespace) -> ConntrackTable:
    with ns.enter():
        return ConntrackTable()


def forwarded(entries: list[Entry]) -> dict[object, Entry]:
    """The entries of the lab's traffic (not the sync link's own), by key."""
    return {e.key: e for e in entries if not e.orig.src.startswith("203.0.113.")}


def udp_socket(ns: Namespace, addr: str, port: int = 0) -> socket.socket:
    with ns.enter():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    return sock


FTP_HELPER_RULES = """
table inet ftphelp {
  ct helper ftp-std { type "ftp" protocol tcp; }
  chain filt { type filter hook forward priority 0; tcp dport 21 ct helper set "ftp-std"; }
}
"""

# logs in, asks for a passive data connection and holds the control connection (the
# fw's ftp helper expects the data connection until it comes or times out)
FTP_PASV_CLIENT = r"""
import ftplib, time
ftp = ftplib.FTP("198.51.100.2", timeout=5); ftp.login()
print(ftp.sendcmd("PASV"), flush=True); time.sleep(3600)
"""


def vsftpd(lab: Lab, workdir: Path) -> None:
    """vsftpd (anonymous, passive mode) on the server's 198.51.100.2:21."""
    root, empty = workdir / "ftproot", workdir / "empty"
    root.mkdir(parents=True)
    empty.mkdir()
    os.chmod(workdir, 0o755)
    conf = workdir / "vsftpd.conf"
    conf.write_text("\n".join([
        "listen=YES", "listen_address=198.51.100.2", "listen_port=21", "background=NO",
        "anonymous_enable=YES", "no_anon_password=YES", f"anon_root={root}", "local_enable=NO",
        "write_enable=NO", "seccomp_sandbox=NO", f"secure_chroot_dir={empty}", "pasv_enable=YES",
        "pasv_min_port=40500", "pasv_max_port=40510", "xferlog_enable=NO", "",
    ]))
    lab["server"].serve(["/usr/sbin/vsftpd", str(conf)])
    deadline = time.monotonic() + 10
    while ":21 " not in lab["server"].run(["ss", "-Hlnt"]).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError("vsftpd did not come up")
        time.sleep(0.05)


def ftp_expectation(lab: Lab, workdir: Path) -> None:
    """An ftp data expectation on fw, made by a real PASV through vsftpd (fw helps tcp/21)."""
    lab["fw"].run(["nft", "-f", "-"], input=FTP_HELPER_RULES)
    vsftpd(lab, workdir)
    client = lab["client"].popen(["python3", "-c", FTP_PASV_CLIENT], stdout=-1)
    assert client.stdout is not None and client.stdout.readline().startswith(b"227 ")
