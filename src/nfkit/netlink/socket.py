"""The netlink socket: requests, dumps, batches, pipelines and events.

This module owns the I/O half of nfkit's netlink layer: one AF_NETLINK socket,
one reusable receive buffer, sending, receiving, waiting, and raising the
`nfkit.errors` exception an exchange's events call for.  What the replies mean
(which belong to a request, acknowledgements, refusals, the end of a dump or a
batch) is `exchange`'s; encoding and decoding are the codec's.  This module
must not know any family: a batch's fence is the caller's, attribute tables
come from `specs.message_attrs`.
"""

from __future__ import annotations

import errno as _errno
import os
import select
import socket as _socket
import struct
import time
from collections.abc import Iterator
from typing import Any, Self

from nfkit.errors import (
    CapabilityError,
    DumpInterrupted,
    EventsLost,
    NetlinkError,
    NfkitError,
    TransactionError,
)
from nfkit.netlink.codec import (
    AttrSet,
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
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_MIN_TYPE,
    NLMSG_NOOP,
    SOL_NETLINK,
)
from nfkit.netlink.exchange import Event, Exchange, Messages, Refused, ending_error
from nfkit.netlink.specs import message_attrs

SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
RECV_BUFFER_SIZE = 1 << 20  # one reusable receive buffer, 1 MiB
DEFAULT_RCVBUF = 4 << 20
_IS_ROOT = os.geteuid() == 0
_MAX_RESTARTS = 10


_HDR_SEQ = struct.Struct("=I")
_HDR_FLAGS = struct.Struct("=H")


def _with_flags(request: bytes | bytearray | memoryview, extra: int) -> memoryview:
    """A copy of a single-message request with ``extra`` ORed into its flags."""
    data = bytearray(request)
    (flags,) = _HDR_FLAGS.unpack_from(data, 6)
    _HDR_FLAGS.pack_into(data, 6, flags | extra)
    return memoryview(data)


def _dump_request(request: MessageWriter | bytes | bytearray | memoryview) -> tuple[bytes, int]:
    """The bytes of a dump request (NLM_F_DUMP set) and its sequence number."""
    if isinstance(request, MessageWriter):
        request.set_flags(NLM_F_DUMP | NLM_F_REQUEST)
        data = bytes(request.buffer)
    else:
        data = bytes(_with_flags(request, NLM_F_DUMP | NLM_F_REQUEST))
    return data, _HDR_SEQ.unpack_from(data, 8)[0]


def _end_of_dump(event: Event, what: str | None) -> None:
    """Raise what ends a dump other than DONE: the kernel's refusal, or DumpInterrupted."""
    error = ending_error(event, what)
    if error is not None:
        raise error


class HoldsSocket:
    """The plumbing of an object that owns one socket in ``self.sock``: a context
    manager that closes it, and `fileno` for selectors."""

    sock: Any

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()  # type: ignore[no-any-return]



def recv_datagram(sock: _socket.socket, buf: bytearray, flags: int) -> int:
    """Receive one netlink datagram from ``sock`` into ``buf``; 0 when nothing is waiting
    (``flags`` with MSG_DONTWAIT).  Raises EventsLost on ENOBUFS (the kernel dropped
    messages) and NetlinkError on other errors."""
    while True:
        try:
            return sock.recv_into(buf, len(buf), flags)
        except BlockingIOError:
            return 0
        except InterruptedError:
            continue
        except OSError as exc:
            if exc.errno == _errno.ENOBUFS:
                raise EventsLost("the kernel dropped netlink messages for this socket "
                                 "(receive buffer full): resynchronise") from None
            raise NetlinkError(exc.errno or _errno.EIO, what="netlink receive") from None

class NetlinkSocket(HoldsSocket):
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
        return recv_datagram(self.sock, buf, 0 if block else _socket.MSG_DONTWAIT)

    def messages(self, block: bool = True) -> Iterator[Message]:
        """Messages of the next datagram (views into the receive buffer)."""
        n = self._recv(block)
        if n:
            yield from parse_messages(self._view[:n])

    def waiting(self) -> Iterator[Message]:
        """Every message already queued, without blocking (for a selector loop): views,
        each valid until the next is asked for; control messages (NOOP, ERROR, DONE)
        left out.  Raises EventsLost when the kernel dropped some (ENOBUFS)."""
        while True:
            n = self._recv(False)
            if not n:
                return
            for msg in parse_messages(self._view[:n]):
                if msg.type >= NLMSG_MIN_TYPE:
                    yield msg

    # requests ---------------------------------------------------------------
    def describe(self, msg_type: int) -> tuple[AttrSet, int] | None:
        """The attribute table of message ``msg_type`` of this socket's protocol (for
        `Exchange`: the path of the attribute an extended ACK points at), or None."""
        return message_attrs(self.protocol, msg_type)

    def _events(self, exchange: Exchange) -> Iterator[Event]:
        """The events of ``exchange`` from the datagrams received, until it is over.

        Events hold views into the receive buffer: each is valid until the next
        datagram is read, which happens only once the previous one's events are taken."""
        view = self._view
        while not exchange.over:
            n = self._recv()
            if n:
                yield from exchange.feed(view[:n])

    def request(self, request: MessageWriter | bytes | bytearray | memoryview,
                what: str | None = None) -> list[Message]:
        """Send one request with NLM_F_ACK; return its replies (copies) before the ACK.

        Raises NetlinkError (naming ``what`` if given, and the path of the
        attribute the kernel pointed at when the family's spec describes it)
        when the kernel refuses it.
        """
        if isinstance(request, MessageWriter):
            request.set_flags(NLM_F_ACK)
            seq = request.seqs[-1][0]
            data = memoryview(request.buffer)
            first = request.message(len(request.seqs) - 1)
        else:
            data = first = _with_flags(request, NLM_F_ACK)
            seq = _HDR_SEQ.unpack_from(data, 8)[0]
        exchange = Exchange.do(seq, first, what, self.describe)
        self.send(data)
        replies: list[Message] = []
        for event in self._events(exchange):
            if isinstance(event, Message):
                replies.append(event.copy())
            elif isinstance(event, Refused):
                raise event.error
        return replies

    def dump(self, request: MessageWriter | bytes | bytearray | memoryview,
             restart: bool = False, what: str | None = None) -> Iterator[Message]:
        """Send a dump request and yield every object message until NLMSG_DONE.

        Messages are views into the reusable receive buffer: decode or copy
        each before asking for the next.  When the kernel marks the dump
        interrupted (NLM_F_DUMP_INTR on any of its messages): raise
        DumpInterrupted once the dump is over, or with ``restart`` collect
        copies and start over (up to 10 times).
        """
        data, seq = _dump_request(request)
        if not restart:
            yield from self._dump_once(data, seq, what, collect=False)
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
        exchange = Exchange.dump(seq, data, what, self.describe)
        self.send(data)
        for event in self._events(exchange):
            if isinstance(event, Message):
                yield event.copy() if collect else event
            else:
                _end_of_dump(event, what)

    def dump_datagrams(self, request: MessageWriter | bytes | bytearray | memoryview,
                       what: str | None = None) -> Iterator[memoryview]:
        """Send a dump request and yield each reply datagram's object messages whole.

        For callers that look at a whole datagram (about 32 KiB, one dump
        round of the kernel) before walking its messages, e.g. to skip rounds
        that cannot hold what they look for.  NLMSG_DONE is left out.  Raises
        DumpInterrupted once the dump is over when the kernel marked it
        interrupted (start over), NetlinkError when the kernel refuses the
        dump.  Each view is valid until the next one is asked for.
        """
        data, seq = _dump_request(request)
        exchange = Exchange.dump(seq, data, what, self.describe, whole=True)
        self.send(data)
        for event in self._events(exchange):
            if isinstance(event, Messages):
                yield event.data
            else:
                _end_of_dump(event, what)

    # transactions -----------------------------------------------------------
    def send_batch(self, batch: Batch, what: list[str] | None = None, check: bool = False,
                   timeout: float | None = None,
                   fence: MessageWriter | bytes | bytearray | None = None) -> list[Message]:
        """Send a whole batch in one sendmsg as one transaction.

        Raises TransactionError listing each refused message (``.seq``,
        ``.index`` its position in the batch, the kernel's extended ACK and
        the path of the attribute it refused).  On success returns the
        replies that are not ACKs (NLM_F_ECHO answers).  ``what`` may name
        each message of the batch for error messages.  With ``check`` the
        batch goes without BATCH_END: the kernel validates every message,
        reports what it refuses, and commits nothing.

        ``fence`` is a request of the batch's family sent right after it with
        NLM_F_ACK (nf_tables: GETGEN): the kernel answers one socket's requests
        in order, so once the fence's ACK is read every refusal of the batch
        has been read too, also one reported only after the kernel
        re-validated the whole batch.  Raises NfkitError when the fence is not
        answered within ``timeout`` (state then unknown).  Without a fence the
        answers waiting when the batch was sent are read, no more.
        """
        if check:
            batch.closed = True
        else:
            batch.close()
        self.ensure_rcvbuf(min(len(batch.seqs) * 1024 + (1 << 20), 1 << 30))
        self.send(memoryview(batch.buffer))
        fence_seq = None
        if fence is not None:
            if isinstance(fence, MessageWriter):
                fence.set_flags(NLM_F_ACK)
                fence_data: bytes | bytearray | memoryview = memoryview(fence.buffer)
            else:
                fence_data = _with_flags(fence, NLM_F_ACK)
            fence_seq = _HDR_SEQ.unpack_from(fence_data, 8)[0]
            self.send(fence_data)
        exchange = Exchange.batch(batch, fence_seq, what, self.describe)
        errors: list[NetlinkError] = []
        replies: list[Message] = []
        if timeout is None:
            timeout = 60 + len(batch.seqs) / 1000
        deadline = time.monotonic() + timeout
        view = self._view
        while not exchange.over:
            if fence_seq is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    raise NfkitError("the kernel did not answer after the transaction "
                                     "(its state is unknown: list the ruleset)")
                n = self._recv()
            else:
                n = self._recv(block=False)
                if not n:
                    break
            for event in exchange.feed(view[:n]):
                if isinstance(event, Refused):
                    errors.append(event.error)
                elif isinstance(event, Message):
                    replies.append(event.copy())
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
