"""The netlink socket: requests, dumps, batches, pipelines and events.

This module owns the I/O half of nfkit's netlink layer: one AF_NETLINK socket,
one reusable receive buffer, sequence matching, and the mapping of NLMSG_ERROR
replies to `nfkit.errors` exceptions.  Encoding and decoding are the codec's;
this module must not know any family's attributes.
"""

from __future__ import annotations

import errno as _errno
import os
import select
import socket as _socket
import struct
import time
from collections.abc import Iterator

from nfkit.errors import (
    CapabilityError,
    DumpInterrupted,
    EventsLost,
    NetlinkError,
    NfkitError,
    TransactionError,
)
from nfkit.netlink.codec import (
    Batch,
    Message,
    MessageWriter,
    next_seq,
    parse_error,
    parse_messages,
)
from nfkit.netlink.consts import (
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_CAP_ACK,
    NETLINK_DROP_MEMBERSHIP,
    NETLINK_EXT_ACK,
    NETLINK_NETFILTER,
    NFNL_SUBSYS_NFTABLES,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_NOOP,
    NLMSG_OVERRUN,
    SOL_NETLINK,
    nfnl_msg_type,
)

SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
RECV_BUFFER_SIZE = 1 << 20  # one reusable receive buffer, 1 MiB
DEFAULT_RCVBUF = 4 << 20
_IS_ROOT = os.geteuid() == 0
_MAX_RESTARTS = 10
_NFT_MSG_GETGEN = 16  # the fence after an nf_tables batch


_HDR_SEQ = struct.Struct("=I")
_HDR_FLAGS = struct.Struct("=H")
_HDR_HEAD = struct.Struct("=IHHI")  # nlmsghdr: length, type, flags, seq
_HDR_LEN = struct.Struct("=I")


def _interrupted(what: str | None) -> DumpInterrupted:
    return DumpInterrupted(f"{what or 'dump'}: the kernel's table changed during the dump "
                           "(NLM_F_DUMP_INTR)")


def _with_flags(request: bytes | bytearray | memoryview, extra: int) -> memoryview:
    """A copy of a single-message request with ``extra`` ORed into its flags."""
    data = bytearray(request)
    (flags,) = _HDR_FLAGS.unpack_from(data, 6)
    _HDR_FLAGS.pack_into(data, 6, flags | extra)
    return memoryview(data)


def _error_from(msg: Message) -> NetlinkError | None:
    reply = parse_error(msg)
    if reply.errno == 0:
        return None
    return NetlinkError(reply.errno, extack=reply.extack, offset=reply.offset,
                        seq=reply.seq, msg_type=reply.request_type)


class NetlinkSocket:
    """A netlink socket of any protocol (NETLINK_NETFILTER by default).

    Raises CapabilityError when the socket cannot be opened (no such protocol,
    no permission).
    """

    def __init__(self, protocol: int = NETLINK_NETFILTER, groups: tuple[int, ...] = (),
                 rcvbuf: int = DEFAULT_RCVBUF) -> None:
        try:
            self.sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, protocol)
        except OSError as exc:
            raise CapabilityError(f"cannot open netlink socket (protocol {protocol}): "
                                  f"{exc.strerror}") from None
        self.protocol = protocol
        self.sock.bind((0, 0))
        self.portid: int = self.sock.getsockname()[0]
        for opt in (NETLINK_EXT_ACK, NETLINK_CAP_ACK):
            try:
                self.sock.setsockopt(SOL_NETLINK, opt, 1)
            except OSError:
                pass  # old kernels: plain errors still work
        self._buf = bytearray(RECV_BUFFER_SIZE)
        self._view = memoryview(self._buf)
        self._sndbuf = self.sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF)
        self._rcvbuf = 0
        self.ensure_rcvbuf(rcvbuf)
        for group in groups:
            self.subscribe(group)

    # plumbing -------------------------------------------------------------
    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def seq(self) -> int:
        return next_seq()

    def _setbuf(self, force: int, plain: int, size: int) -> int:
        opt = force if _IS_ROOT else plain
        try:
            self.sock.setsockopt(_socket.SOL_SOCKET, opt, size)
        except OSError:
            self.sock.setsockopt(_socket.SOL_SOCKET, plain, size)
        which = _socket.SO_SNDBUF if plain == _socket.SO_SNDBUF else _socket.SO_RCVBUF
        return int(self.sock.getsockopt(_socket.SOL_SOCKET, which))

    def ensure_sndbuf(self, size: int) -> None:
        """Make the send buffer hold ``size`` bytes in one message (root: beyond wmem_max)."""
        if self._sndbuf < size + 4096:
            self._sndbuf = self._setbuf(SO_SNDBUFFORCE, _socket.SO_SNDBUF, size + 4096)

    def ensure_rcvbuf(self, size: int) -> None:
        """Make the receive queue hold ``size`` bytes (root: beyond rmem_max)."""
        if self._rcvbuf < size:
            self._rcvbuf = self._setbuf(SO_RCVBUFFORCE, _socket.SO_RCVBUF, size)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send bytes holding one or more messages, in one sendmsg."""
        self.ensure_sndbuf(len(data))
        try:
            self.sock.sendto(data, (0, 0))
        except OSError as exc:
            raise NetlinkError(exc.errno or _errno.EIO, what="netlink send") from None

    def _recv(self, block: bool = True) -> int:
        """Receive one datagram into the reusable buffer; 0 when nothing is waiting."""
        return self.recv_into(self._buf, block)

    def recv_into(self, buf: bytearray, block: bool = True) -> int:
        """Receive one raw datagram into the caller's ``buf``; 0 when nothing is waiting.

        For hot loops that walk message headers themselves (a 200,000-entry
        dump).  Raises EventsLost on ENOBUFS and NetlinkError on other errors.
        """
        flags = 0 if block else _socket.MSG_DONTWAIT
        while True:
            try:
                return self.sock.recv_into(buf, len(buf), flags)
            except BlockingIOError:
                return 0
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == _errno.ENOBUFS:
                    raise EventsLost("the kernel dropped netlink messages for this socket "
                                     "(receive buffer full): resynchronise") from None
                raise NetlinkError(exc.errno or _errno.EIO, what="netlink receive") from None

    def messages(self, block: bool = True) -> Iterator[Message]:
        """Messages of the next datagram (views into the receive buffer)."""
        n = self._recv(block)
        if n:
            yield from parse_messages(self._view[:n])

    # requests ---------------------------------------------------------------
    def request(self, request: MessageWriter | bytes | bytearray | memoryview,
                what: str | None = None) -> list[Message]:
        """Send one request with NLM_F_ACK; return its replies (copies) before the ACK.

        Raises NetlinkError (naming ``what`` if given) when the kernel refuses it.
        """
        if isinstance(request, MessageWriter):
            request.set_flags(NLM_F_ACK)
            seq = request.seqs[-1][0]
            data = memoryview(request.buffer)
        else:
            data = _with_flags(request, NLM_F_ACK)
            seq = _HDR_SEQ.unpack_from(data, 8)[0]
        self.send(data)
        replies: list[Message] = []
        while True:
            for msg in self.messages():
                if msg.seq != seq:
                    continue
                if msg.type == NLMSG_ERROR:
                    err = _error_from(msg)
                    if err is not None:
                        raise err.describe(what) if what else err
                    return replies
                if msg.type == NLMSG_DONE:
                    return replies
                if msg.type in (NLMSG_NOOP, NLMSG_OVERRUN):
                    continue
                replies.append(msg.copy())

    def dump(self, request: MessageWriter | bytes | bytearray | memoryview,
             restart: bool = False, what: str | None = None) -> Iterator[Message]:
        """Send a dump request and yield every object message until NLMSG_DONE.

        Messages are views into the reusable receive buffer: decode or copy
        each before asking for the next.  When the kernel marks the dump
        interrupted (NLM_F_DUMP_INTR): raise DumpInterrupted, or with
        ``restart`` collect copies and start over (up to 10 times).
        """
        if isinstance(request, MessageWriter):
            request.set_flags(NLM_F_DUMP | NLM_F_REQUEST)
            data = bytes(request.buffer)
            seq = request.seqs[-1][0]
        else:
            data = bytes(_with_flags(request, NLM_F_DUMP | NLM_F_REQUEST))
            seq = _HDR_SEQ.unpack_from(data, 8)[0]
        if not restart:
            yield from self._dump_once(data, seq, what, collect=False)  # type: ignore[misc]
            return
        for _ in range(_MAX_RESTARTS):
            try:
                collected = list(self._dump_once(data, seq, what, collect=True))
            except DumpInterrupted:
                continue
            yield from collected
            return
        raise DumpInterrupted(f"{what or 'dump'}: interrupted {_MAX_RESTARTS} times in a row")

    def _dump_once(self, data: bytes, seq: int, what: str | None, collect: bool) -> Iterator[Message]:
        self.send(data)
        interrupted = False
        while True:
            for msg in self.messages():
                if msg.seq != seq:
                    continue
                if msg.flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if msg.type in (NLMSG_DONE, NLMSG_ERROR):
                    self._end_of_dump(msg, what, interrupted)
                    return
                if msg.type in (NLMSG_NOOP, NLMSG_OVERRUN):
                    continue
                yield msg.copy() if collect else msg

    def dump_datagrams(self, request: MessageWriter | bytes | bytearray | memoryview,
                       what: str | None = None) -> Iterator[memoryview]:
        """Send a dump request and yield each reply datagram whole, without NLMSG_DONE.

        For callers that look at a whole datagram (about 32 KiB, one dump
        round of the kernel) before walking its messages, e.g. to skip rounds
        that cannot hold what they look for.  The kernel marks the first
        message of a round with NLM_F_DUMP_INTR when the table changed since
        the previous round, so only first messages are checked: raises
        DumpInterrupted then (start over), NetlinkError when the kernel
        refuses the dump.  Each view is valid until the next one is asked for.
        """
        if isinstance(request, MessageWriter):
            request.set_flags(NLM_F_DUMP | NLM_F_REQUEST)
            data = bytes(request.buffer)
        else:
            data = bytes(_with_flags(request, NLM_F_DUMP | NLM_F_REQUEST))
        seq = _HDR_SEQ.unpack_from(data, 8)[0]
        self.send(data)
        view = self._view
        while True:
            n = self._recv()
            if n < 16:
                continue
            ln, mtype, flags, mseq = _HDR_HEAD.unpack_from(view, 0)
            if mseq != seq:
                continue
            if flags & NLM_F_DUMP_INTR:
                raise _interrupted(what)
            if mtype in (NLMSG_DONE, NLMSG_ERROR):
                self._end_of_dump(next(parse_messages(view[:n])), what, False)
                return
            # NLMSG_DONE may close the last round's datagram: find the last
            # message by its headers' lengths alone (no message objects).
            pos = last = 0
            while pos + 16 <= n:
                ln = _HDR_LEN.unpack_from(view, pos)[0]
                if ln < 16:
                    break
                last = pos
                pos += (ln + 3) & ~3
            end = last if _HDR_HEAD.unpack_from(view, last)[1] in (NLMSG_DONE, NLMSG_ERROR) else n
            if end:
                yield view[:end]
            if end != n:
                self._end_of_dump(next(parse_messages(view[end:n])), what, False)
                return

    @staticmethod
    def _end_of_dump(msg: Message, what: str | None, interrupted: bool) -> None:
        """The NLMSG_DONE or NLMSG_ERROR ending a dump: raise what the kernel reported,
        or DumpInterrupted when the table changed during the dump."""
        if msg.type == NLMSG_ERROR:
            err_obj = _error_from(msg)
            if err_obj is not None:
                raise err_obj.describe(what) if what else err_obj
            return
        if len(msg.payload) >= 4:
            err = -int.from_bytes(msg.payload[:4], "little", signed=True)
            if err > 0:
                raise NetlinkError(err, what=what)
        if interrupted or msg.flags & NLM_F_DUMP_INTR:
            raise _interrupted(what)

    # transactions -----------------------------------------------------------
    def send_batch(self, batch: Batch, what: list[str] | None = None, check: bool = False,
                   timeout: float | None = None) -> list[Message]:
        """Send a whole batch in one sendmsg as one transaction.

        Raises TransactionError listing each refused message (``.seq``,
        ``.index`` its position in the batch, the kernel's extended ACK).  On
        success returns the replies that are not ACKs (NLM_F_ECHO answers).
        ``what`` may name each message of the batch for error messages.
        With ``check`` the batch goes without BATCH_END: the kernel validates
        every message, reports what it refuses, and commits nothing.

        For nf_tables a fence follows the batch (GETGEN with ACK): the kernel
        answers one socket's requests in order, so once the fence's ACK is read
        every refusal of the batch has been read too, also one reported only
        after the kernel re-validated the whole batch.  Raises NfkitError when
        the fence is not answered within ``timeout`` (state then unknown).
        """
        if check:
            batch.closed = True
        else:
            batch.close()
        self.ensure_rcvbuf(min(len(batch.seqs) * 1024 + (1 << 20), 1 << 30))
        self.send(memoryview(batch.buffer))
        fence = None
        if batch.res_id == NFNL_SUBSYS_NFTABLES:
            w = MessageWriter()
            fence = w.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, _NFT_MSG_GETGEN), NLM_F_REQUEST | NLM_F_ACK)
            w.end()
            self.send(memoryview(w.buffer))
        errors: list[NetlinkError] = []
        replies: list[Message] = []
        seq_index: dict[int, int] = {}  # built at the first refusal only
        if timeout is None:
            timeout = 60 + len(batch.seqs) / 1000
        deadline = time.monotonic() + timeout
        done = False
        while not done:
            if fence is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    raise NfkitError("the kernel did not answer after the transaction "
                                     "(its state is unknown: list the ruleset)")
                datagram = list(self.messages())
            else:
                datagram = list(self.messages(block=False))
                done = not datagram
            for msg in datagram:
                if msg.seq == fence and fence is not None:
                    if msg.type == NLMSG_ERROR:
                        done = True
                    continue
                if msg.type == NLMSG_ERROR:
                    err = _error_from(msg)
                    if err is None:
                        continue
                    if not seq_index:
                        seq_index = {s: i for i, (s, _) in enumerate(batch.seqs)}
                    pos = seq_index.get(err.seq if err.seq is not None else -1)
                    index = pos - 1 if pos is not None and pos >= 1 else None
                    name = what[index] if what and index is not None and index < len(what) else None
                    if name:
                        err = err.describe(name)
                    err.index = index
                    errors.append(err)
                elif msg.type not in (NLMSG_DONE, NLMSG_NOOP):
                    replies.append(msg.copy())
        if errors:
            raise TransactionError(errors)
        return replies

    def pipeline(self, writer: MessageWriter, ack: bool = True,
                 chunk: int = 256 * 1024) -> dict[int, int]:
        """Send many independent requests, several per sendmsg; return {seq: errno} of failures.

        Replies are read between chunks, so the receive queue never overflows.
        """
        if ack:
            writer.set_flags(NLM_F_ACK)
        buf = memoryview(writer.buffer)
        starts = [start for _, start in writer.seqs] + [len(writer.buffer)]
        self.ensure_rcvbuf(8 << 20)
        failures: dict[int, int] = {}
        i = 0
        nmsg = len(starts) - 1
        while i < nmsg:
            j = i + 1
            while j < nmsg and starts[j + 1] - starts[i] <= chunk:
                j += 1
            self.send(buf[starts[i] : starts[j]])
            while True:
                got = False
                for msg in self.messages(block=False):
                    got = True
                    if msg.type == NLMSG_ERROR:
                        reply = parse_error(msg)
                        if reply.errno:
                            failures[reply.seq] = reply.errno
                if not got:
                    break
            i = j
        return failures

    # events -----------------------------------------------------------------
    def subscribe(self, *groups: int) -> None:
        """Join multicast groups (e.g. NFNLGRP_CONNTRACK_NEW)."""
        for group in groups:
            try:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
            except OSError as exc:
                raise CapabilityError(f"cannot join netlink group {group}: {exc.strerror}") from None

    def unsubscribe(self, *groups: int) -> None:
        for group in groups:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, group)

    def events(self, timeout: float | None = None) -> Iterator[Message]:
        """Yield event messages as they come; stop after ``timeout`` seconds of quiet.

        Raises EventsLost when the kernel dropped events (ENOBUFS): the caller
        should resynchronise (dump) and may keep iterating afterwards.
        """
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        wait_ms = None if timeout is None else int(timeout * 1000)
        while True:
            if not poller.poll(wait_ms):
                return
            for msg in self.messages(block=False):
                if msg.type in (NLMSG_NOOP, NLMSG_DONE):
                    continue
                yield msg
