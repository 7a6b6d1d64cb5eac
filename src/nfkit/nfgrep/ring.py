"""Frames from a network interface through an AF_PACKET TPACKET_V3 memory-mapped ring.

Owns: the packet socket, its receive ring (``tpacket_req3``: blocks the
kernel fills with frames packed by size and hands over when full or when the
block retire timeout expires), the optional PACKET_FANOUT group (hash: the
kernel's symmetric flow hash, so both directions of a connection reach the
same member) and the kernel's counters of received and dropped frames.
Must not know: flows, streams, applications.

Frames are given as pcap would store them: a VLAN tag the driver took out of
the frame (TP_STATUS_VLAN_VALID) is put back, as libpcap does.
"""

from __future__ import annotations

import mmap
import os
import select
import socket
import struct
from collections.abc import Callable

from nfkit.errors import InputError
from nfkit.nfgrep.capture import LINK_ETHERNET, LINK_RAW

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
TPACKET_V3 = 2
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000  # reassemble IP fragments first: a flow's fragments hash alike
ETH_P_ALL = 0x0003
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40

_REQ3 = struct.Struct("=7I")  # block size, block count, frame size, frame count, retire ms, priv, features
_BLOCK = struct.Struct("=6I")  # version, offset to priv, status, packets, offset to first, length
_HDR3 = struct.Struct("=6IHHIIH")  # next, sec, nsec, snaplen, len, status, mac, net, hash, tci, tpid
_STATS3 = struct.Struct("=3I")  # packets, drops, queue freezes
_STATUS = struct.Struct("=I")
_STATUS_AT = 8  # block_status inside the block descriptor
_PKTTYPE_AT = 48 + 10  # sll_pkttype of the sockaddr_ll after the (aligned) tpacket3_hdr
PACKET_OUTGOING = 4
ARPHRD_LOOPBACK = 772

# /sys/class/net/IFACE/type (ARPHRD_*) -> pcap link type of the frames
_ARPHRD_LINK = {1: LINK_ETHERNET, 772: LINK_ETHERNET, 65534: LINK_RAW}


def link_type(interface: str) -> int:
    """The pcap link type of an interface's frames; InputError for an unknown interface or kind."""
    try:
        with open(f"/sys/class/net/{interface}/type") as f:
            arphrd = int(f.read())
    except (OSError, ValueError):
        raise InputError(f"interface {interface}: no such interface") from None
    if arphrd not in _ARPHRD_LINK:
        raise InputError(f"interface {interface}: hardware type {arphrd} is not supported "
                         "(nfgrep reads Ethernet, loopback and raw IP interfaces)")
    return _ARPHRD_LINK[arphrd]


class Ring:
    """A TPACKET_V3 receive ring bound to one interface.

    ``fanout``: join PACKET_FANOUT group of that id (hash mode).  Raises
    `InputError` when the interface does not exist and `OSError` when the
    kernel refuses the socket or the ring.
    """

    def __init__(self, interface: str, block_size: int = 1 << 20, blocks: int = 32,
                 retire_ms: int = 100, fanout: int | None = None) -> None:
        self.interface = interface
        self.link = link_type(interface)
        # loopback shows each packet leaving and arriving: keep it once, as libpcap does
        with open(f"/sys/class/net/{interface}/type") as f:
            self.loopback = int(f.read()) == ARPHRD_LOOPBACK
        self.block_size = block_size
        self.blocks = blocks
        # protocol 0: nothing is received before the ring exists and the socket is bound
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame = 2048  # frames are packed by size in V3; this only sizes the bookkeeping
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, _REQ3.pack(
                block_size, blocks, frame, block_size // frame * blocks, retire_ms, 0, 0))
            self.map = mmap.mmap(self.sock.fileno(), block_size * blocks, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
            self.sock.bind((interface, ETH_P_ALL))
            if fanout is not None:
                mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG
                self.sock.setsockopt(SOL_PACKET, PACKET_FANOUT,
                                     struct.pack("=I", (fanout & 0xFFFF) | (mode << 16)))
        except BaseException:
            self.sock.close()
            raise
        self._poll = select.poll()
        self._poll.register(self.sock.fileno(), select.POLLIN | select.POLLERR)
        self._next = 0
        self.received = 0
        self.dropped = 0

    def read(self, timeout_ms: int, stop: Callable[[], bool]) -> list[tuple[float, int, bytes]]:
        """The frames of the next block the kernel handed over, ``(timestamp, link, frame)``.

        Waits at most ``timeout_ms``; returns ``[]`` when no block is ready
        then, or at once when ``stop()`` is true.
        """
        base = self._next * self.block_size
        m = self.map
        if not _STATUS.unpack_from(m, base + _STATUS_AT)[0] & TP_STATUS_USER:
            if stop():
                return []
            try:
                self._poll.poll(timeout_ms)
            except InterruptedError:  # pragma: no cover - PEP 475 retries; a handler may raise
                return []
            if not _STATUS.unpack_from(m, base + _STATUS_AT)[0] & TP_STATUS_USER:
                return []
        _, _, _, count, first, _ = _BLOCK.unpack_from(m, base)
        frames = []
        at = base + first
        link = self.link
        for _ in range(count):
            nxt, sec, nsec, snap, _length, status, mac, _net, _hash, tci, tpid = \
                _HDR3.unpack_from(m, at)
            if self.loopback and m[at + _PKTTYPE_AT] == PACKET_OUTGOING:
                at += nxt
                continue
            frame = m[at + mac:at + mac + snap]
            if status & TP_STATUS_VLAN_VALID and link == LINK_ETHERNET:
                tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID and tpid else 0x8100
                frame = frame[:12] + struct.pack("!HH", tpid, tci & 0xFFFF) + frame[12:]
            frames.append((sec + nsec / 1e9, link, frame))
            at += nxt
        _STATUS.pack_into(m, base + _STATUS_AT, 0)  # the block goes back to the kernel
        self._next = (self._next + 1) % self.blocks
        return frames

    def statistics(self) -> tuple[int, int]:
        """(frames received, frames dropped) since the last call, added to ``received``/``dropped``."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS3.size)
        packets, drops, _ = _STATS3.unpack(raw)
        self.received += packets
        self.dropped += drops
        return packets, drops

    def close(self) -> None:
        self.statistics()
        self.map.close()
        self.sock.close()


def fanout_id() -> int:
    """A fanout group id for this run (groups are per network namespace)."""
    return os.getpid() & 0xFFFF
