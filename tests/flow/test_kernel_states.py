"""The flow table's TCP states against the kernel's conntrack, packet by packet.

Crafted TCP segments are sent by a raw socket between two addresses of one
namespace's loopback (conntrack sees each once, on the way out; an input chain
drops them so no TCP stack answers); after each, `conntrack -L` (the oracle)
and the flow table fed the same segments must name the same state.
"""

from __future__ import annotations

import socket
import struct

import pytest

from nfkit.flow import FlowTable, TcpState
from nfkit.lab import Namespace

pytestmark = pytest.mark.kernel

A, B = "192.0.2.1", "192.0.2.2"
SYN, SYNACK, ACK = 0x02, 0x12, 0x10


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _segment(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int) -> bytes:
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    csum = _checksum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return ip + tcp


def _kernel_state(ns: Namespace) -> str:
    lines = [ln for ln in ns.run(["conntrack", "-L", "-p", "tcp"]).stdout.splitlines() if ln.startswith("tcp")]
    assert len(lines) == 1, lines
    name = lines[0].split()[3]
    return "SYN_SENT2" if name == "LISTEN" else name  # conntrack-tools' old name for state 9


def test_simultaneous_open_states_match_the_kernel(netns: Namespace) -> None:
    netns.run("ip addr add 192.0.2.1/32 dev lo")
    netns.run("ip addr add 192.0.2.2/32 dev lo")
    netns.run(["nft", "add table inet t; "
                      "add chain inet t out { type filter hook output priority 0; }; "
                      "add rule inet t out ct state new counter; "
                      "add chain inet t in { type filter hook input priority 0; policy drop; }"])
    a_seq, b_seq = 1000, 5000
    # both sides send a SYN, then each a SYN+ACK, then A acknowledges
    steps = [
        (A, B, 40000, 40001, a_seq, 0, SYN, TcpState.SYN_SENT),
        (B, A, 40001, 40000, b_seq, 0, SYN, TcpState.SYN_SENT2),
        (A, B, 40000, 40001, a_seq, b_seq + 1, SYNACK, TcpState.SYN_RECV),
        (B, A, 40001, 40000, b_seq, a_seq + 1, SYNACK, TcpState.SYN_RECV),
        (A, B, 40000, 40001, a_seq + 1, b_seq + 1, ACK, TcpState.ESTABLISHED),
    ]
    table = FlowTable()
    with netns.enter():
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with raw:
        for n, (src, dst, sport, dport, seq, ack, flags, want) in enumerate(steps):
            raw.sendto(_segment(src, dst, sport, dport, seq, ack, flags), (dst, 0))
            slot = table.track(6, socket.inet_aton(src), socket.inet_aton(dst), sport, dport,
                               float(n), 40, flags) // 2
            kernel = _kernel_state(netns)
            assert (kernel, table.tcp_state(slot).name) == (want.name, want.name), f"step {n + 1}"
