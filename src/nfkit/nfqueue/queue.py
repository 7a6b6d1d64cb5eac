"""One bound nfnetlink_queue: receive queued packets, send verdicts (the I/O half).

Owns: the netlink socket of one queue, binding it (NFQNL_CFG_CMD_BIND) and
setting copy mode, copy range, length and flags; reading every packet already
waiting without blocking (for a selector loop); collecting verdicts and
sending them together in one sendmsg (`flush`); counting what the kernel
could not deliver (ENOBUFS: the receive queue was full; with ``fail-open`` the
kernel let those packets pass) and the verdicts it refused.  Must not know:
what a packet means; the wire format is `nfkit.nfqueue.wire`'s.
"""

from __future__ import annotations

import errno
import socket as _socket
import struct
from collections.abc import Iterator

from nfkit.errors import CapabilityError, EventsLost, NetlinkError
from nfkit.netlink.codec import MessageWriter, parse_error, parse_messages
from nfkit.netlink.consts import NETLINK_NO_ENOBUFS, NLMSG_ERROR, SOL_NETLINK
from nfkit.netlink.mmsg import BatchReceiver, SingleReceiver, receiver
from nfkit.netlink.socket import NetlinkSocket
from nfkit.netlink.specs import nfqueue as Q
from nfkit.nfqueue.wire import (
    NF_ACCEPT,
    Packet,
    PacketLayouts,
    config_command,
    config_params,
    parse_packet,
    verdict_bytes,
)

DEFAULT_RCVBUF = 8 << 20
_RECV_BUFFER = 256 << 10
BATCH_SLOTS = 64  # datagrams `Queue.datagrams` reads per call at most


class Queue:
    """Queue ``num``, bound by this process until `close`.

    ``flags``: NFQA_CFG_F_* bits (`nfkit.nfqueue.wire.FLAG_NAMES`).  Raises
    CapabilityError when the queue cannot be bound (another process holds it:
    EBUSY; no permission) and NetlinkError when the kernel refuses a setting.
    """

    def __init__(self, num: int, copy_range: int = 0xFFFF, copy_mode: int = Q.NFQNL_COPY_PACKET,
                 flags: int = 0, maxlen: int | None = None, rcvbuf: int = DEFAULT_RCVBUF,
                 report_enobufs: bool = True) -> None:
        self.num = num
        self.nl = NetlinkSocket(rcvbuf=rcvbuf)
        self.enobufs = 0           # times the kernel could not deliver (receive queue full)
        self.refused = 0           # verdicts the kernel answered with an error
        self.last_refusal = ""
        self.received = 0
        self.verdicts = 0
        self._out: list[bytes] = []
        self._buf = bytearray(_RECV_BUFFER)
        self._view = memoryview(self._buf)
        self.layouts = PacketLayouts()
        self._batch: BatchReceiver | SingleReceiver | None = None
        self.datagram_buffer = bytearray()  # where `datagrams` reads to
        # a datagram: the message's headers and attributes, and the payload up to the copy range
        self._datagram_max = min(copy_range, 0xFFFF) + 4096
        try:
            if not report_enobufs:
                self.nl.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
            w = MessageWriter()
            config_command(w, num, Q.NFQNL_CFG_CMD_BIND)
            try:
                self.nl.request(w, what=f"queue {num}: bind")
            except NetlinkError as exc:
                if exc.errno in (errno.EBUSY, errno.EPERM):
                    raise CapabilityError(f"queue {num}: cannot bind ({exc}); another program "
                                          "may hold it") from None
                raise
            w = MessageWriter()
            config_params(w, num, copy_mode, copy_range, maxlen=maxlen, flags=flags)
            try:
                self.nl.request(w, what=f"queue {num}: configure")
            except NetlinkError as exc:
                if exc.errno == errno.EOPNOTSUPP and flags & Q.NFQA_CFG_F_CONNTRACK:
                    raise CapabilityError(
                        f"queue {num}: flag conntrack: this kernel cannot report conntrack entries "
                        "with queued packets (built without CONFIG_NETFILTER_NETLINK_GLUE_CT)") from None
                raise
        except BaseException:
            self.nl.close()
            raise

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self.nl.fileno()

    def close(self) -> None:
        """Unbind (closing the socket does; packets still queued are then dropped by the
        kernel, which TCP retransmits)."""
        try:
            self.flush()
        except NetlinkError:
            pass
        self.nl.close()

    # -- packets ----------------------------------------------------------------------
    def packets(self, block: bool = False) -> Iterator[Packet]:
        """Every packet already waiting (``block``: wait for the first datagram).

        ENOBUFS is counted in ``enobufs`` and reading goes on; error replies to
        verdicts are counted in ``refused``.
        """
        flags = 0 if block else _socket.MSG_DONTWAIT
        view = self._view
        while True:
            n = self._datagram(view, flags)
            if n < 0:
                return
            if not n:
                continue
            flags = _socket.MSG_DONTWAIT
            for msg in parse_messages(view[:n]):
                if msg.type == Q.PACKET:
                    self.received += 1
                    yield parse_packet(msg)
                elif msg.type == NLMSG_ERROR:
                    err = parse_error(msg)
                    self._counted(0, [err.errno] if err.errno else [])

    def receive(self, limit: int = 64, block: bool = False
                ) -> list[tuple[int, int, int, int, bytes]]:
        """The packets waiting, up to ``limit`` datagrams read in one go (the kernel sends
        each queued packet as a datagram of its own), decoded by layout: per packet
        ``(id, mark, cap_len or -1, skb_info, payload)``.

        ``block``: wait for the first datagram.  The datagrams are read one after
        the other into one buffer and walked once; ENOBUFS and refused verdicts
        are counted as by `packets`.
        """
        flags = 0 if block else _socket.MSG_DONTWAIT
        view = self._view
        room = len(view)
        at = 0
        for _ in range(limit):
            if room - at < self._datagram_max:  # the next one must fit whole
                break
            n = self._datagram(view[at:], flags)
            if n < 0:
                break
            if not n:
                continue
            flags = _socket.MSG_DONTWAIT
            at += (n + 3) & ~3
        if not at:
            return []
        packets, errors = self.layouts.packets(view, [(0, at)], whole=True)
        out = [(pid, mark, cap_len, skb_info, bytes(view[start:stop]))
               for _, pid, mark, cap_len, skb_info, start, stop in packets]
        self._counted(len(out), errors)
        return out

    def datagrams(self, wait: bool = False) -> list[tuple[int, int]]:
        """The datagrams waiting, read in one recvmmsg into `datagram_buffer` (one slot each,
        up to `BATCH_SLOTS`): (offset, length) each, in order, raw (for a hot loop that walks
        the messages itself; the kernel sends each queued packet as a datagram of its own).

        ``wait``: block until the first one comes (no poll call before it), for at most
        the receive timeout (`set_receive_timeout`; a signal also ends the wait): [] then.
        ENOBUFS is counted in ``enobufs`` and reading goes on.  Without recvmmsg in the
        C library, one datagram a call.
        """
        rx = self._batch
        if rx is None:
            rx = self._batch = receiver(self.nl.sock, BATCH_SLOTS, self._datagram_max)
            self.datagram_buffer = rx.buffer
        while True:
            try:
                got = rx.receive(wait)
            except EventsLost:
                self.enobufs += 1
                continue
            return got

    def receive_packets(self, wait: bool = False) -> list[tuple[int, int, int, int, int]]:
        """The packets of what one `datagrams` call read: ``(id, mark, cap_len or -1,
        payload start, payload stop)`` each, the payload in `datagram_buffer` (valid until
        the next call).  Refused verdicts among the datagrams are counted as by `packets`."""
        got = self.datagrams(wait)
        if not got:
            return []
        out, errors = self.layouts.packets(self.datagram_buffer, got)
        self._counted(len(out), errors)
        return out  # type: ignore[return-value]

    def _counted(self, received: int, errors: list[int]) -> None:
        """``received`` packets and the errnos of refused verdicts, in the counters."""
        self.received += received
        if errors:
            self.refused += len(errors)
            self.last_refusal = errno.errorcode.get(errors[-1], str(errors[-1]))

    def set_receive_timeout(self, seconds: float) -> None:
        """How long `datagrams` (``wait``) and `packets` (``block``) wait at most (SO_RCVTIMEO)."""
        usec = int(seconds * 1e6)
        self.nl.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVTIMEO,
                                struct.pack("@ll", usec // 1_000_000, usec % 1_000_000))

    def send_verdicts(self, block: memoryview, count: int) -> None:
        """Send ``count`` verdict messages written in ``block`` (`nfkit.nfqueue.wire.verdict_block`),
        in one sendmsg."""
        self.nl.send(block)
        self.verdicts += count

    def _datagram(self, into: memoryview, flags: int) -> int:
        """One datagram into ``into``: its length; -1 when none waits; 0 when the call was
        interrupted or the kernel reported ENOBUFS (counted): read again."""
        try:
            return self.nl.sock.recv_into(into, len(into), flags) or 0
        except BlockingIOError:
            return -1
        except InterruptedError:
            return 0
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.enobufs += 1
                return 0
            raise NetlinkError(exc.errno or errno.EIO, what=f"queue {self.num}: receive") from None

    # -- verdicts -----------------------------------------------------------------------
    def verdict(self, packet: Packet | int, verdict: int = NF_ACCEPT, mark: int | None = None) -> None:
        """Queue a verdict for one packet (sent by `flush`); ``mark`` sets the packet mark."""
        pid = packet if isinstance(packet, int) else packet.id
        self._out.append(verdict_bytes(self.num, pid, verdict, mark))
        self.verdicts += 1

    def batch_verdict(self, last_id: int, verdict: int = NF_ACCEPT, mark: int | None = None) -> None:
        """Queue one verdict for every packet of this queue with an id up to ``last_id``."""
        self._out.append(verdict_bytes(self.num, last_id, verdict, mark, batch=True))
        self.verdicts += 1

    def flush(self) -> None:
        """Send the verdicts queued so far, in one sendmsg."""
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self.nl.send(data)


def queue_counters(path: str = "/proc/net/netfilter/nfnetlink_queue") -> dict[int, dict[str, int]]:
    """The kernel's counters per bound queue of this network namespace: {queue: {field: n}}.

    Fields as the kernel prints them: portid, waiting, copy_mode, copy_range,
    dropped (queue full), user_dropped (netlink could not deliver), id_sequence
    (the last packet id: how many packets the queue ever took).
    """
    names = ("queue", "portid", "waiting", "copy_mode", "copy_range", "dropped", "user_dropped",
             "id_sequence", "one")
    out: dict[int, dict[str, int]] = {}
    try:
        with open(path) as f:
            for line in f:
                values = [int(v) for v in line.split()]
                row = dict(zip(names, values, strict=False))
                out[row["queue"]] = row
    except FileNotFoundError:
        pass
    return out
