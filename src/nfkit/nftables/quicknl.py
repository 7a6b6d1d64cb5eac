"""The few nf_tables netlink requests of the commands that answer before the rest of
nfkit is imported (`rules exists` from its cache, `rules element add|delete` of
plain addresses).

This module owns a bare netfilter netlink socket, attribute packing and walking,
and the handful of kernel numbers those commands need, written out here so that
nothing of nfkit.netlink (its specs, dataclasses, enum, socket) is imported
(tests/nftables/test_quicknl.py checks the numbers against the specs).  It must
not import anything beyond the standard library's C modules, os and stat.
"""

from __future__ import annotations

# _socket, not socket: socket's import (its enum classes) costs more than the answer
import _socket
import _struct as struct  # (struct.py only re-exports it: one module less to import)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE = 1, 4, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
GETGEN = (NFNL_SUBSYS_NFTABLES << 8) | 16  # NFT_MSG_GETGEN
GETRULE = (NFNL_SUBSYS_NFTABLES << 8) | 7  # NFT_MSG_GETRULE
GETSET = (NFNL_SUBSYS_NFTABLES << 8) | 10  # NFT_MSG_GETSET
NEWSETELEM = (NFNL_SUBSYS_NFTABLES << 8) | 12  # NFT_MSG_NEWSETELEM
DELSETELEM = (NFNL_SUBSYS_NFTABLES << 8) | 14  # NFT_MSG_DELSETELEM
FAMILY_NUM = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}
SO_SNDBUFFORCE = 32  # asm-generic/socket.h

# Room for one reply to a GET request (the kernel builds it in an skb of NLMSG_GOODSIZE,
# whose room kmalloc may round up to 16 KiB); a smaller buffer saves nothing measurable
_REPLY_ROOM = 1 << 16
_HDR = struct.Struct("=IHHII")


def attrs(buf: bytes, pos: int = 0, end: int | None = None) -> dict[int, bytes]:
    """The netlink attributes of ``buf[pos:end]`` by type (nesting flags dropped)."""
    out: dict[int, bytes] = {}
    end = len(buf) if end is None else end
    while pos + 4 <= end:
        ln, typ = struct.unpack_from("=HH", buf, pos)
        if ln < 4:
            break
        out[typ & 0x3FFF] = buf[pos + 4:pos + ln]
        pos += (ln + 3) & ~3
    return out


def attr(typ: int, value: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(value), typ) + value + bytes(-len(value) % 4)


def message(msg_type: int, flags: int, seq: int, family: int, body: bytes, res_id: int = 0) -> bytes:
    """One nfnetlink message: header, nfgenmsg (res_id in network order), ``body``."""
    return _HDR.pack(20 + len(body), msg_type, flags, seq, 0) + struct.pack(
        "=BBH", family, 0, _socket.htons(res_id)) + body


def batch_bytes(messages: list[tuple[int, int, int, bytes]], seq: int) -> bytes:
    """BATCH_BEGIN, ``messages`` (type, flags, family, body), BATCH_END, numbered from
    ``seq`` on."""
    out = [message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, b"", NFNL_SUBSYS_NFTABLES)]
    for i, (msg_type, flags, family, body) in enumerate(messages, seq + 1):
        out.append(message(msg_type, flags, i, family, body))
    out.append(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + len(messages) + 1, 0, b"",
                       NFNL_SUBSYS_NFTABLES))
    return b"".join(out)


class Conn:
    """A netfilter netlink socket for single requests and batches (no dumps)."""

    def __init__(self) -> None:
        self.sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, NETLINK_NETFILTER)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def _receive(self) -> tuple[bytes, list[tuple[int, int, int, int]], bool]:
        """One datagram from the kernel and its messages as (type, sequence, offset,
        length); the flag is set when a malformed message cut the list short."""
        data = self.sock.recv(_REPLY_ROOM)
        out: list[tuple[int, int, int, int]] = []
        pos = 0
        while pos + 16 <= len(data):
            ln, typ, _flags, seq, _pid = _HDR.unpack_from(data, pos)
            if ln < 16:
                return data, out, True
            out.append((typ, seq, pos, ln))
            pos += (ln + 3) & ~3
        return data, out, False

    def ask(self, msg_type: int, family: int, payload: bytes = b"") -> list[bytes] | None:
        """The payload (after the nfgenmsg) of the reply to one GET request (not a
        dump), as a list of one; None when the kernel refused it."""
        self.seq += 1
        # NLM_F_REQUEST alone: no NLM_F_ACK, whose ACK would be one more message to
        # build and one more receive after the reply (an error comes back anyway)
        self.sock.send(message(msg_type, NLM_F_REQUEST, self.seq, family, payload))
        while True:
            data, replies, broken = self._receive()
            for typ, seq, pos, ln in replies:
                if seq == self.seq:
                    if typ == NLMSG_ERROR:  # no reply (0 would be an ACK: none asked)
                        return None
                    if typ == NLMSG_DONE:  # an empty multipart reply
                        return []
                    return [data[pos + 20:pos + ln]]
            if broken:
                return None

    def commit(self, messages: list[tuple[int, int, int, bytes]]) -> bool:
        """Send ``messages`` (type, flags, family, body) as one nf_tables transaction,
        fenced by a GETGEN that asks for an ACK (the kernel answers a socket's requests
        in order: once the fence's ACK is read, every refusal of the batch has been
        read too).  True if the kernel committed it, False if it refused a message
        (then nothing was committed)."""
        batch = batch_bytes(messages, self.seq + 1)
        self.seq += len(messages) + 2
        self.sock.setsockopt(_socket.SOL_SOCKET, SO_SNDBUFFORCE, len(batch) + (1 << 16))
        self.sock.send(batch)
        self.seq += 1
        fence = self.seq
        self.sock.send(message(GETGEN, NLM_F_REQUEST | NLM_F_ACK, fence, 0, b""))
        refused = False
        while True:
            data, replies, broken = self._receive()
            for typ, seq, pos, _ln in replies:
                if typ == NLMSG_ERROR:
                    code = struct.unpack_from("=i", data, pos + 16)[0]
                    if seq == fence:
                        return code == 0 and not refused
                    if code != 0:
                        refused = True
            if broken:
                return False
