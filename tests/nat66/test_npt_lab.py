"""nfkit nat66 apply with [[npt]]: RFC 6296 through the kernel, with real traffic."""

from __future__ import annotations

import subprocess
import sys
import time

import dpkt
import pytest

from tests.nat66.test_apply import WHO, curl, nat66

INSIDE, OUTSIDE = "fd01:203:405::/48", "2001:db8:1::/48"
HOST, MAPPED = "fd01:203:405:1::1234", "2001:db8:1:d550::1234"  # RFC 6296's own example
FFFF_HOST = "fd01:203:405:ffff::1"  # subnet 0xffff: the RFC drops it, Linux's NPT would not

CONF = f'[[npt]]\ninside = "{INSIDE}"\noutside = "{OUTSIDE}"\ninterface = "wan0"\n'

SEND = ("import socket, sys\n"
        "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind((sys.argv[1], 4000))\n"
        "s.sendto(b'checksum me', ('2001:db8:ffff::2', 5000))\n")


@pytest.fixture
def npt_lab(lab):  # type: ignore[no-untyped-def]
    """inside (ULA) -- router -- outside server (2001:db8:ffff::2), routes only."""
    inside, router, server = lab.add("in"), lab.add("r"), lab.add("srv")
    lab.link(inside, router, [f"{HOST}/64", f"{FFFF_HOST}/64"], ["fd01:203:405:1::1/64"], "eth0", "lan0")
    router.run("ip -6 addr add fd01:203:405:ffff::fe/64 dev lan0 nodad")
    lab.link(router, server, ["2001:db8:ffff::1/64"], ["2001:db8:ffff::2/64"], "wan0", "eth0")
    router.sysctl("net.ipv6.conf.all.forwarding", "1")
    inside.run("ip -6 route add 2001:db8:ffff::/64 via fd01:203:405:1::1")
    server.run(f"ip -6 route add {OUTSIDE} via 2001:db8:ffff::1")
    for ns, addr in ((server, "2001:db8:ffff::2"), (inside, HOST)):
        ns.popen([sys.executable, "-c", WHO, addr, "8080"])
        ns.run(["sh", "-c", "for i in $(seq 50); do ss -ltn | grep -q :8080 && exit 0; sleep 0.1; done; exit 1"])
    return lab


def capture(ns, path):  # type: ignore[no-untyped-def]
    proc = ns.popen(["tcpdump", "-i", "eth0", "-U", "-n", "-c", "1", "-w", str(path), "udp port 5000"],
                    stderr=subprocess.PIPE)
    assert proc.stderr is not None
    proc.stderr.readline()  # "listening on eth0": capturing from here on
    return proc


def udp_of(path) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    with open(path, "rb") as f:
        (_, frame), = list(dpkt.pcap.Reader(f))
    ip6 = dpkt.ethernet.Ethernet(frame).data
    import ipaddress
    return str(ipaddress.IPv6Address(ip6.src)), ip6.data.sum


@pytest.mark.kernel
def test_rfc_example_through_the_kernel_checksum_neutral_both_ways(npt_lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inside, router, server = npt_lab["in"], npt_lab["r"], npt_lab["srv"]
    conf = tmp_path / "nat66.toml"
    conf.write_text(CONF)
    nat66(router, "apply", str(conf))
    # outbound: the server sees RFC 6296's image of the inside host, and answers it
    assert curl(inside, "http://[2001:db8:ffff::2]:8080/", HOST).split()[0] == MAPPED
    # inbound, 1:1: the server reaches the inside host at its mapped address
    assert curl(server, f"http://[{MAPPED}]:8080/").split() == ["2001:db8:ffff::2", HOST]
    # the UDP checksum field is the same on both sides of the translation
    before, after = tmp_path / "in.pcap", tmp_path / "out.pcap"
    cap_in, cap_out = capture(inside, before), capture(server, after)
    inside.run([sys.executable, "-c", SEND, HOST])
    cap_in.wait(10), cap_out.wait(10)
    (src_in, sum_in), (src_out, sum_out) = udp_of(before), udp_of(after)
    assert (src_in, src_out) == (HOST, MAPPED)
    assert sum_in == sum_out != 0
    # the RFC's drop, which Linux's NPT alone would translate: nothing reaches the server,
    # the sender is told by an ICMPv6 error
    out = inside.run([sys.executable, "-c", SEND, FFFF_HOST], check=False)
    assert out.returncode == 0
    time.sleep(0.3)
    listing = router.run("nft list chain ip6 mangle nfkit-npt-fwd").stdout
    assert 'counter packets 1 bytes' in listing and "subnet 0xffff" in listing
    ping = inside.run(["ping", "-6", "-c", "1", "-W", "2", "-I", FFFF_HOST, "2001:db8:ffff::2"], check=False)
    assert ping.returncode != 0 and "Destination unreachable: Address unreachable" in ping.stdout, ping.stdout
    ping = server.run(["ping", "-6", "-c", "1", "-W", "2", "2001:db8:1:ffff::1"], check=False)
    assert "Destination unreachable: Address unreachable" in ping.stdout, ping.stdout
    # nfkit lists the targets with their prefixes (nft shows a bare `xt target SNPT`)
    shown = router.run([sys.executable, "-m", "nfkit", "rules", "list", "-f", "ip6", "-t", "mangle"]).stdout
    assert f"snpt prefix {INSIDE} to {OUTSIDE}" in shown and f"dnpt prefix {OUTSIDE} to {INSIDE}" in shown
    shown = nat66(router, "show").stdout  # nfkit's NAT66 only: its NPT chains, its table
    assert f"snpt prefix {INSIDE} to {OUTSIDE}" in shown and "table ip6 nfkit_nat66" in shown
    # applied again: nothing to change; and beside an iptables-nft chain of the same table
    again = nat66(router, "apply", str(conf))
    assert again.stdout == "" and "0 change(s)" in again.stderr
    router.run(["ip6tables-nft", "-t", "mangle", "-A", "OUTPUT", "-j", "ACCEPT"])
    conf.write_text(CONF.replace("wan0", "lan0"))
    nat66(router, "apply", str(conf))
    assert "-A OUTPUT -j ACCEPT" in router.run(["ip6tables-nft-save", "-t", "mangle"]).stdout


UPLOAD = r'''
import http.server, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = len(self.rfile.read(int(self.headers["Content-Length"])))
        body = f"{self.client_address[0]} {n}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer.address_family = socket.AF_INET6
http.server.ThreadingHTTPServer((sys.argv[1], 8080), H).serve_forever()
'''


@pytest.mark.kernel
def test_packet_too_big_from_beyond_reaches_the_inside_host_translated(lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """inside -- router (NPTv6) -- mid -- server, mid's link to the server 1280 bytes: the
    inside host's large segments meet mid's Packet Too Big, which must reach it quoting
    its own address (else TCP cannot find the connection: a path-MTU black hole).  The
    kernel's DNPT translates the quoted header itself; what nfkit must get right is
    running it before conntrack."""
    inside, router, mid, server = lab.add("in"), lab.add("r"), lab.add("mid"), lab.add("srv")
    lab.link(inside, router, [f"{HOST}/64"], ["fd01:203:405:1::1/64"], "eth0", "lan0")
    lab.link(router, mid, ["2001:db8:ffff::1/64"], ["2001:db8:ffff::2/64"], "wan0", "eth0")
    lab.link(mid, server, ["2001:db8:fffe::1/64"], ["2001:db8:fffe::2/64"], "eth1", "eth0")
    mid.run("ip link set eth1 mtu 1280")  # the server's side stays at 1500: its MSS invites big segments
    for ns in (router, mid):
        ns.sysctl("net.ipv6.conf.all.forwarding", "1")
    inside.run("ip -6 route add 2001:db8:fffe::/64 via fd01:203:405:1::1")
    router.run("ip -6 route add 2001:db8:fffe::/64 via 2001:db8:ffff::2")
    mid.run(f"ip -6 route add {OUTSIDE} via 2001:db8:ffff::1")
    server.run(f"ip -6 route add {OUTSIDE} via 2001:db8:fffe::1")
    server.popen([sys.executable, "-c", UPLOAD, "2001:db8:fffe::2"])
    server.run(["sh", "-c", "for i in $(seq 50); do ss -ltn | grep -q :8080 && exit 0; sleep 0.1; done; exit 1"])
    # beside a user ruleset that drops what conntrack cannot place: the error passes only
    # because DNPT runs before conntrack, which then finds the flow it is about (RELATED)
    router.run(["nft", "add table inet user; add chain inet user c { type filter hook forward priority 0; }; "
                "add rule inet user c ct state invalid counter drop"])
    conf = tmp_path / "nat66.toml"
    conf.write_text(CONF)
    nat66(router, "apply", str(conf))
    pcap = tmp_path / "ptb.pcap"
    cap = inside.popen(["tcpdump", "-i", "eth0", "-U", "-n", "-c", "1", "-w", str(pcap),
                        "icmp6 and ip6[40] == 2"], stderr=subprocess.PIPE)
    assert cap.stderr is not None
    cap.stderr.readline()
    body = tmp_path / "body"
    body.write_bytes(b"x" * 30000)
    out = inside.run(["curl", "-sS", "-m", "8", "--interface", HOST, "--data-binary", f"@{body}",
                      "http://[2001:db8:fffe::2]:8080/"], check=False)
    assert out.returncode == 0, out.stderr  # the upload went through: the host lowered its MSS
    assert out.stdout.split() == [MAPPED, "30000"]
    cap.wait(5)
    with open(pcap, "rb") as f:
        (_, frame), = list(dpkt.pcap.Reader(f))
    ptb = dpkt.ethernet.Ethernet(frame).data
    import ipaddress
    quoted = bytes(ptb.data)[8:48]  # the quoted IPv6 header
    assert ipaddress.IPv6Address(ptb.dst) == ipaddress.IPv6Address(HOST)
    assert ipaddress.IPv6Address(quoted[8:24]) == ipaddress.IPv6Address(HOST)
    assert "mtu 1280" in inside.run(["ip", "-6", "route", "get", "2001:db8:fffe::2", "from", HOST]).stdout
    assert "counter packets 0 " in router.run("nft list chain inet user c").stdout
