"""One netlink exchange read without I/O: datagrams in, events out (h11's ``next_event``).

This module owns what the kernel's answers to one request mean: which
messages belong to it (by sequence number), acknowledgements, refusals with
their extended ACK (the offending attribute's path found with the family's
attribute table), the end of a dump (NLMSG_DONE and the errno it carries),
whether the dump was interrupted, and the end of a batch (the ACK of the fence
the family sent after it).  Every way nfkit talks to the kernel -- a request
(``do``), a dump, a batch -- reads its replies through an `Exchange`; the
socket only sends and receives.

The rule for NLM_F_DUMP_INTR, one for every reader: a dump is interrupted when
any message of its sequence, the closing NLMSG_DONE included, carries the
flag.  The messages keep coming as usual and the exchange ends with
`INTERRUPTED` in place of `DONE`, once NLMSG_DONE has been read, so the socket
is free for the next request and the caller decides (start over, or raise).

Must not know: sockets, timeouts, any family's attributes (a lookup from
message type to attribute table is passed in), or which message serves as a
batch's fence (the family sends it and passes its sequence number).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nfkit.errors import DecodeError, DumpInterrupted, NetlinkError, NfkitError
from nfkit.netlink.codec import (
    NLMSG_HDRLEN,
    AttrSet,
    Message,
    MessageWriter,
    get_string,
    iter_attrs,
    parse_error,
)
from nfkit.netlink.consts import (
    NLM_F_DUMP_INTR,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_MIN_TYPE,
    NLMSGERR_ATTR_MSG,
)

_HDR = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_HEAD = struct.Struct("=IHHI")  # the same without pid
_ERRNO = struct.Struct("=i")

# nlmsg_type -> (attribute table of that message, bytes of family header before its attributes)
Describe = Callable[[int], tuple[AttrSet, int] | None]


# ---------------------------------------------------------------- events
# A message of the exchange (an object of a dump, the answer to a request, an
# echo in a batch) is the `Message` itself, a view into the datagram fed.

@dataclass(slots=True)
class Messages:
    """A run of whole reply messages, ``data`` a view into the datagram fed
    (exchanges made with ``whole=True``, for callers that walk messages themselves)."""

    data: memoryview


@dataclass(frozen=True, slots=True)
class Ack:
    """The kernel accepted the message with sequence number ``seq``."""

    seq: int


@dataclass(slots=True)
class Refused:
    """The kernel refused a message: ``error`` is the `NetlinkError` to raise
    (errno, extended-ACK text, offset and path of the offending attribute, batch index)."""

    error: NetlinkError


class _End:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


DONE = _End("Done")  # the exchange is over: every answer has been read
INTERRUPTED = _End("Interrupted")  # a dump is over, but the table changed during it

Event = Message | Messages | Ack | Refused | _End


def ending_error(event: Event, what: str | None = None) -> NfkitError | None:
    """The exception an event calls for when a caller reads no further: the kernel's
    refusal, or DumpInterrupted (naming ``what``) for INTERRUPTED; else None."""
    if isinstance(event, Refused):
        return event.error
    if event is INTERRUPTED:
        return DumpInterrupted(f"{what or 'dump'}: the kernel's table changed during the dump "
                               "(NLM_F_DUMP_INTR)")
    return None


DO, DUMP, BATCH = "do", "dump", "batch"


class Exchange:
    """The replies to one request, dump or batch, read from the datagrams fed to it.

    `feed` takes one received datagram and returns its events in order;
    ``over`` is true once the exchange has ended (`DONE` or `INTERRUPTED`
    returned), after which nothing is read any more.  Messages of other
    sequence numbers are passed over (no event).  Use the constructors
    `do`, `dump` and `batch`.
    """

    __slots__ = ("kind", "seq", "over", "interrupted", "whole", "what", "_request",
                 "_batch", "_fence", "_seq_index", "_names", "_describe", "_step")

    def __init__(self, kind: str, seq: int, *, request: bytes | bytearray | memoryview | None = None,
                 batch: MessageWriter | None = None, fence: int | None = None,
                 what: str | Sequence[str] | None = None, describe: Describe | None = None,
                 whole: bool = False) -> None:
        self.kind = kind
        self.seq = seq  # replies with this seq and a message type >= NLMSG_MIN_TYPE are objects
        self.over = False
        self.interrupted = False
        self.whole = whole
        self.what = what if isinstance(what, str) else None
        self._names = None if isinstance(what, str) else what
        self._request = request
        self._batch = batch
        self._fence = fence
        self._seq_index: dict[int, int] = {}
        self._describe = describe
        self._step = _READERS[kind]

    @classmethod
    def do(cls, seq: int, request: bytes | bytearray | memoryview | None = None,
           what: str | None = None, describe: Describe | None = None) -> Exchange:
        """A request answered by NLMSG_ERROR (its ACK, or its refusal), maybe after replies."""
        return cls(DO, seq, request=request, what=what, describe=describe)

    @classmethod
    def dump(cls, seq: int, request: bytes | bytearray | memoryview | None = None,
             what: str | None = None, describe: Describe | None = None,
             whole: bool = False) -> Exchange:
        """A dump: object messages until NLMSG_DONE.  With ``whole``, object messages
        come as `Messages` runs instead of one `Message` each."""
        return cls(DUMP, seq, request=request, what=what, describe=describe, whole=whole)

    @classmethod
    def batch(cls, batch: MessageWriter, fence: int | None = None,
              what: Sequence[str] | None = None, describe: Describe | None = None) -> Exchange:
        """The answers to a batch (every message's refusal, echoes), ended by the ACK of
        the request with sequence number ``fence`` sent after it.  Without a fence the
        exchange never ends by itself: the caller stops when nothing more is waiting."""
        # no reply of a batch is taken for an object on sight: every one goes to the reader
        return cls(BATCH, -1, batch=batch, fence=fence, what=what, describe=describe)

    # ------------------------------------------------------------ reading
    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """The events of one datagram, in order.  Raises DecodeError on a malformed one."""
        view = memoryview(data)
        n = len(view)
        events: list[Event] = []
        append = events.append
        seq = self.seq
        whole = self.whole
        run = -1  # start of the current run of object messages (whole mode)
        off = 0
        while off < n and not self.over:
            # plain objects of this exchange (its seq, not a control type, no DUMP_INTR),
            # decided here without a call: the whole of a dump but its end
            if whole:
                begin = off
                while off + NLMSG_HDRLEN <= n:
                    length, mtype, flags, mseq = _HEAD.unpack_from(view, off)
                    if (mseq != seq or mtype < NLMSG_MIN_TYPE or flags & NLM_F_DUMP_INTR
                            or length < NLMSG_HDRLEN or off + length > n):
                        break
                    off += (length + 3) & ~3
                if off > begin and run < 0:
                    run = begin
            else:
                while off + NLMSG_HDRLEN <= n:
                    length, mtype, flags, mseq, pid = _HDR.unpack_from(view, off)
                    if (mseq != seq or mtype < NLMSG_MIN_TYPE or flags & NLM_F_DUMP_INTR
                            or length < NLMSG_HDRLEN or off + length > n):
                        break
                    append(Message(mtype, flags, mseq, pid, view[off + NLMSG_HDRLEN : off + length]))
                    off += (length + 3) & ~3
            if off >= n:
                break
            # any other message: its kind of exchange's reader says what it is
            if n - off < NLMSG_HDRLEN:
                raise DecodeError("truncated netlink message header", off)
            length, mtype, flags, mseq, pid = _HDR.unpack_from(view, off)
            if length < NLMSG_HDRLEN or off + length > n:
                raise DecodeError(f"netlink message length {length} runs past the datagram", off)
            step = self._step(self, view, off, length, mtype, flags, mseq, pid)
            if whole and len(step) == 1 and isinstance(step[0], Message):
                if run < 0:
                    run = off
            else:
                if run >= 0:
                    append(Messages(view[run:off]))
                    run = -1
                events += step
            off += (length + 3) & ~3
        if run >= 0:
            append(Messages(view[run:min(off, n)]))
        return events

    def message(self, view: memoryview, off: int) -> list[Event]:
        """The events of the one message at ``off`` of ``view``: for hot loops that walk
        a datagram's headers themselves and hand over every message that is not a plain
        object of this exchange (its seq differs, its type is a control type below
        NLMSG_MIN_TYPE, or it carries NLM_F_DUMP_INTR)."""
        length, mtype, flags, mseq, pid = _HDR.unpack_from(view, off)
        if length < NLMSG_HDRLEN or off + length > len(view):
            raise DecodeError(f"netlink message length {length} runs past the datagram", off)
        return self._step(self, view, off, length, mtype, flags, mseq, pid)

    # ------------------------------------------------------------ endings
    def _refusal(self, view: memoryview, off: int, length: int, flags: int, mseq: int,
                 pid: int) -> NetlinkError | None:
        reply = parse_error(Message(NLMSG_ERROR, flags, mseq, pid,
                                    view[off + NLMSG_HDRLEN : off + length]))
        if reply.errno == 0:
            return None
        index = pos = None
        request = self._request
        if self._batch is not None:
            pos = self._position(reply.seq)
            request = None
            index = pos - 1 if pos is not None and pos >= 1 else None
        what = self.what
        if self._names is not None and index is not None and index < len(self._names):
            what = self._names[index]
        path = None
        if self._batch is not None and pos is not None and reply.offset is not None:
            request = self._batch.message(pos)
        if reply.offset is not None and request is not None and self._describe is not None:
            path, set_name = _path(request, reply.offset, self._describe)
            what = what or set_name
        return NetlinkError(reply.errno, extack=reply.extack, offset=reply.offset, seq=reply.seq,
                            msg_type=reply.request_type, index=index, what=what, path=path)

    def _position(self, seq: int) -> int | None:
        """Position of ``seq`` among the batch's messages (BATCH_BEGIN is 0); the index
        is built at the first question only, as batches hold up to 100,000 messages."""
        assert self._batch is not None
        if not self._seq_index:
            self._seq_index = {s: i for i, (s, _) in enumerate(self._batch.seqs)}
        return self._seq_index.get(seq)

    def _done_errno(self, view: memoryview, off: int, length: int, flags: int, mseq: int,
                    pid: int) -> NetlinkError | None:
        """The errno NLMSG_DONE carries when a dump failed half-way (with its extended ACK)."""
        if length < NLMSG_HDRLEN + 4:
            return None
        (err,) = _ERRNO.unpack_from(view, off + NLMSG_HDRLEN)
        if err >= 0:
            return None
        extack = None
        done = Message(NLMSG_DONE, flags, mseq, pid, view[off + NLMSG_HDRLEN : off + length])
        if length > NLMSG_HDRLEN + 4:
            extack = _done_extack(done)
        return NetlinkError(-err, extack=extack, seq=mseq, what=self.what)


def _done_extack(done: Message) -> str | None:
    for t, v in iter_attrs(done.payload[4:]):
        if t == NLMSGERR_ATTR_MSG:
            return get_string(v)
    return None


def _path(request: bytes | bytearray | memoryview, offset: int,
          describe: Describe) -> tuple[str | None, str | None]:
    """(path of the attribute at ``offset`` of ``request``, name of its message's table)."""
    mv = memoryview(request)
    if len(mv) < NLMSG_HDRLEN:
        return None, None
    length, mtype = _HDR.unpack_from(mv, 0)[:2]
    spec = describe(mtype)
    if spec is None:
        return None, None
    aset, header = spec
    start = NLMSG_HDRLEN + header
    try:
        steps = aset.path_at(mv[start:min(length, len(mv))], offset - start)
    except DecodeError:
        return None, aset.name
    return (" > ".join(steps) if steps else None), aset.name


# ---------------------------------------------------------------- readers
# One reader per kind of exchange (h11's READERS): the events of a message that
# the fast test in `feed` did not take for a plain object of the exchange.

Reader = Callable[[Exchange, memoryview, int, int, int, int, int, int], list[Event]]


def _read_do(ex: Exchange, view: memoryview, off: int, length: int, mtype: int, flags: int,
             mseq: int, pid: int) -> list[Event]:
    if mseq != ex.seq:
        return []
    if mtype == NLMSG_ERROR:
        ex.over = True
        err = ex._refusal(view, off, length, flags, mseq, pid)
        return [Ack(mseq) if err is None else Refused(err), DONE]
    if mtype == NLMSG_DONE:  # the end of a multipart answer
        ex.over = True
        err = ex._done_errno(view, off, length, flags, mseq, pid)
        return [DONE] if err is None else [Refused(err), DONE]
    if mtype < NLMSG_MIN_TYPE:  # NOOP, OVERRUN
        return []
    return [Message(mtype, flags, mseq, pid, view[off + NLMSG_HDRLEN : off + length])]


def _read_dump(ex: Exchange, view: memoryview, off: int, length: int, mtype: int, flags: int,
               mseq: int, pid: int) -> list[Event]:
    if mseq != ex.seq:
        return []
    if flags & NLM_F_DUMP_INTR:
        ex.interrupted = True
    if mtype == NLMSG_DONE:
        ex.over = True
        err = ex._done_errno(view, off, length, flags, mseq, pid)
        if err is not None:
            return [Refused(err), DONE]
        return [INTERRUPTED if ex.interrupted else DONE]
    if mtype == NLMSG_ERROR:  # the kernel refused the dump (or acknowledged its end)
        ex.over = True
        err = ex._refusal(view, off, length, flags, mseq, pid)
        if err is not None:
            return [Refused(err), DONE]
        return [INTERRUPTED if ex.interrupted else DONE]
    if mtype < NLMSG_MIN_TYPE:
        return []
    return [Message(mtype, flags, mseq, pid, view[off + NLMSG_HDRLEN : off + length])]


def _read_batch(ex: Exchange, view: memoryview, off: int, length: int, mtype: int, flags: int,
                mseq: int, pid: int) -> list[Event]:
    if ex._fence is not None and mseq == ex._fence:
        if mtype == NLMSG_ERROR:
            # the kernel answers a socket's requests in order: every answer to the
            # batch came before this one
            ex.over = True
            return [DONE]
        return []  # the fence's own reply (e.g. NEWGEN)
    if mtype == NLMSG_ERROR:
        err = ex._refusal(view, off, length, flags, mseq, pid)
        return [Ack(mseq) if err is None else Refused(err)]
    if mtype < NLMSG_MIN_TYPE:
        return []
    return [Message(mtype, flags, mseq, pid, view[off + NLMSG_HDRLEN : off + length])]


_READERS: dict[str, Reader] = {DO: _read_do, DUMP: _read_dump, BATCH: _read_batch}

__all__ = ["Ack", "DONE", "INTERRUPTED", "Event", "Exchange", "Messages", "Refused", "ending_error"]
