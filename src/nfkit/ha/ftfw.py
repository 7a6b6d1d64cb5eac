"""FTFW, conntrackd's reliable sync mode, as a sans-I/O state machine (conntrack-tools 1.4.7).

Owns: everything that changes an FTFW session's state, for one peer: the
sequence numbers sent and expected, the acknowledgement window, NACKs for
gaps, the resend queue (what was sent and not yet acknowledged), the ALIVE
heartbeat after a quiet second, and the HELLO/HELLO_BACK handshake that tells
a restarted peer's numbers from lost ones.  The transitions are the tables
`RECEIVE` (by where an arriving sequence number falls) and `HELLO` below.
Must not know: sockets, clocks (callers pass ``now``), the kernel, what an
entry means.  Feed it with `receive`, `enqueue` and `tick`; send what
`transmit` returns; apply the `Apply` events.

The behaviour follows 1.4.7's src/sync-ftfw.c and src/network.c, so a stock
conntrackd on the other end sees a conntrackd:
- every message sent (data or control) takes the next number of one counter;
  a message sent again takes a new number;
- a receiver acknowledges every ``window`` messages (ACK first..last) and, when
  a number is skipped, says which are missing (NACK first..last);
- a message whose number is older than expected is dropped;
- while a peer says HELLO (until it hears HELLO_BACK) its numbers are taken
  as they come: it restarted and its counter means nothing yet; hearing HELLO
  empties the resend queue (the peer knows nothing of it).
"""

from __future__ import annotations

import enum
import struct
from bisect import bisect_right
from collections.abc import Collection, Hashable, Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import cast

import numpy as np

from nfkit.errors import InputError
from nfkit.ha import spec
from nfkit.ha.spec import RANGE_FLAGS, Flag
from nfkit.ha.wire import ControlMessage, Message, StateMessage, Word, Words, encode_numbered, word_message

ALIVE_INTERVAL = 1.0  # ALIVE_INT: seconds of silence before a heartbeat (or a pending ACK)
WINDOW = 300  # conntrackd's default WindowSize
RESEND_LIMIT = 131072  # conntrackd's default ResendQueueSize
# the flags as plain ints on the per-message paths (IntFlag's operators cost microseconds)
_HELLO, _HELLO_BACK = int(Flag.HELLO), int(Flag.HELLO_BACK)
_HELLOS = _HELLO | _HELLO_BACK
_NOT_HELLOS = ~_HELLOS & 0xFF
_RANGE = int(RANGE_FLAGS)
_M32 = 0xFFFFFFFF
_HEADER, _HEADER_SIZE, _VERSION = spec.HEADER, spec.HEADER_SIZE, spec.PROTOCOL_VERSION << 4


def before(a: int, b: int) -> bool:
    """a comes before b in 32-bit sequence space (wraps like TCP's)."""
    return ((a - b) & 0xFFFFFFFF) >= 0x80000000


def between(x: int, first: int, last: int) -> bool:
    """first <= x <= last in 32-bit sequence space."""
    return ((last - first) & 0xFFFFFFFF) >= ((x - first) & 0xFFFFFFFF)


class SeqClass(enum.Enum):
    """Where an arriving sequence number falls (network.c's nethdr_track_seq)."""

    UNSET = "nothing received yet"
    IN_SYNC = "the number expected"
    AFTER = "numbers were skipped: lost"
    BEFORE = "older than expected: replayed or late"
    HELLO = "the peer says HELLO: numbers taken as they come"

    __hash__ = object.__hash__  # members are singletons: `RECEIVE[...]` per message without Enum's hash


class HelloState(enum.Enum):
    INIT = "nothing sent yet"
    SAY = "saying HELLO until HELLO_BACK"
    DONE = "peer answered"

    __hash__ = object.__hash__


# Receive side: what each class of sequence number does.
#   (accept the message, NACK the gap first, count it in the window)
RECEIVE: dict[SeqClass, tuple[bool, bool]] = {
    SeqClass.UNSET: (True, False),
    SeqClass.IN_SYNC: (True, False),
    SeqClass.HELLO: (True, False),
    SeqClass.AFTER: (True, True),
    SeqClass.BEFORE: (False, False),
}

# Send side: the handshake.  (state, event) -> next state
HELLO: dict[tuple[HelloState, str], HelloState] = {
    (HelloState.INIT, "send"): HelloState.SAY,
    (HelloState.SAY, "send"): HelloState.SAY,
    (HelloState.DONE, "send"): HelloState.DONE,
    (HelloState.INIT, "hello_back"): HelloState.INIT,
    (HelloState.SAY, "hello_back"): HelloState.DONE,
    (HelloState.DONE, "hello_back"): HelloState.DONE,
}


@dataclass
class Apply:
    """A state message accepted from the peer: put it in the table."""

    message: StateMessage


@dataclass
class ResyncRequested:
    """The peer asked for the whole table (RESYNC): enqueue every entry."""


Event = Apply | ResyncRequested


@dataclass
class Stats:
    sent: int = 0  # messages handed to `transmit`'s caller, resends included
    resent: int = 0  # of which resends (NACKed)
    received: int = 0  # messages given to `receive`
    applied: int = 0  # state messages accepted
    lost: int = 0  # sequence numbers skipped by the peer (NACKed)
    dropped_late: int = 0  # messages older than expected
    acked: int = 0  # our messages the peer acknowledged
    nacks_sent: int = 0
    nacks_received: int = 0


@dataclass(slots=True)
class _Pending:
    """A message waiting in the transmit or resend queue."""

    message: Message
    key: Hashable  # the entry's key for state messages; a fresh object for control
    resend: bool = False


@dataclass(slots=True)
class _Sent:
    """A block of words (`wire.Words`) sent under the numbers from ``base``: what each of
    those numbers holds in the resend queue (one object for the whole block)."""

    words: Words
    base: int

    def word(self, seq: int) -> Word:
        return self.words.word((seq - self.base) & _M32)


# The queues hold `_Pending`s and, for the engine's event path, `wire.Word`s (key, type,
# body): a state message with no flags of its own, which waits in the resend queue as it was
# queued (no object made per message); the resend queue also `_Sent` blocks.
_TxItem = _Pending | Word
_Queued = _TxItem | _Sent


def _encoded(seq: int, flags: int, msg: Message, error: InputError | None) -> tuple[bytes, InputError | None]:
    """``msg``'s bytes numbered ``seq`` with ``flags``; one that cannot be sent gives no bytes
    and its error (the first one kept), raised once the whole queue has been taken."""
    try:
        return encode_numbered(seq, flags, msg), error
    except InputError as exc:
        return b"", error or exc


def _packed_words(tx: dict[Hashable, _TxItem], seq: int, hello: int, back: int, limit: int) -> list[bytes] | None:
    """The queue ``tx``, numbered from ``seq`` (no wrap) and packed into datagrams of at most
    ``limit`` bytes as `FtfwSession._take`'s loop packs it, when it holds only words each
    short enough for the header's length; else None (the caller takes the loop).  The work
    per message is one pack in a comprehension; the datagrams are cut per datagram."""
    if {*map(type, tx.values())} != {tuple}:
        return None
    words = cast("Collection[Word]", tx.values())
    pack = _HEADER.pack
    try:
        raws = [pack(_VERSION | mtype, hello, _HEADER_SIZE + len(body), s) + body
                for (_key, mtype, body), s in zip(words, range(seq, seq + len(tx)), strict=True)]
        if back:  # HELLO_BACK on the first message only
            _key, mtype, body = next(iter(words))
            raws[0] = pack(_VERSION | mtype, hello | back, _HEADER_SIZE + len(body), seq) + body
    except struct.error:  # a body too long for the header: the loop says which
        return None
    # each datagram the longest run that fits (at least one message), as the loop cuts them
    ends = list(accumulate(map(len, raws)))
    datagrams = []
    start, base, n = 0, 0, len(raws)
    while start < n:
        end = bisect_right(ends, base + limit, start)
        if end == start:
            end = start + 1
        datagrams.append(b"".join(raws[start:end]))
        base, start = ends[end - 1], end
    return datagrams


@dataclass
class FtfwSession:
    """One FTFW session with one peer.  ``seq`` is the next sequence number to send
    (conntrackd starts at the Unix time)."""

    seq: int
    window: int = WINDOW
    resend_limit: int = RESEND_LIMIT
    last_sent: float = 0.0
    stats: Stats = field(default_factory=Stats)
    hello: HelloState = HelloState.INIT
    say_hello_back: bool = False
    last_received: int | None = None  # None: UNSET
    ack_from: int | None = None  # first number not yet acknowledged to the peer
    window_left: int = 0
    # (dicts keep insertion order: a replaced word is popped and goes to the end)
    _tx: dict[Hashable, _TxItem] = field(default_factory=dict)
    _rs: dict[int, _Queued] = field(default_factory=dict)  # by seq, oldest first
    _rs_seq: dict[Hashable, int] = field(default_factory=dict)  # entry key -> its seq in _rs
    # blocks of words queued after `_tx` (`enqueue_block`); at most one: anything else
    # queued after it first turns it into words of `_tx` (`_unblock`)
    _blocks: list[Words] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.window_left = self.window

    # ---- sending -------------------------------------------------------

    def enqueue(self, key: Hashable, message: StateMessage) -> None:
        """Send ``message`` (the latest word on entry ``key``): replaces one still waiting."""
        self.enqueue_many(((key, message),))

    def enqueue_many(self, words: Iterable[tuple[Hashable, StateMessage]]) -> None:
        """`enqueue` each (key, message), in order."""
        if self._blocks:
            self._unblock()
        rs, rs_seq, tx = self._rs, self._rs_seq, self._tx
        for key, message in words:
            seq = rs_seq.pop(key, None)
            if seq is not None:  # sent, not acknowledged: the new word supersedes it
                del rs[seq]
            if key in tx:
                del tx[key]
            tx[key] = _Pending(message, key)

    def enqueue_words(self, words: dict[Hashable, Word]) -> None:
        """`enqueue` each word (key -> (key, type, body), in order) as the state message
        ``StateMessage(type, body=body)``.  The session may keep ``words`` as its queue:
        the caller gives it up."""
        if self._blocks:
            self._unblock()
        rs, rs_seq, tx = self._rs, self._rs_seq, self._tx
        if rs_seq:
            for key in words:
                seq = rs_seq.pop(key, None)
                if seq is not None:  # sent, not acknowledged: the new word supersedes it
                    del rs[seq]
        if not tx:
            self._tx = cast("dict[Hashable, _TxItem]", words)
            return
        for key, word in words.items():
            if key in tx:
                del tx[key]
            tx[key] = word

    def enqueue_block(self, words: Words) -> None:
        """`enqueue_words` for a block of words (each key once), kept whole: a queue that
        holds only the block is numbered and framed by whole-array steps (`_take`)."""
        rs, rs_seq, tx = self._rs, self._rs_seq, self._tx
        keys = words.keys
        if rs_seq and not rs_seq.keys().isdisjoint(keys):
            for key in rs_seq.keys() & set(keys):  # sent, not acknowledged: the new word supersedes it
                del rs[rs_seq.pop(key)]
        if self._blocks:
            self._unblock()
        if tx and not tx.keys().isdisjoint(keys):
            for key in tx.keys() & set(keys):
                del tx[key]
        self._blocks.append(words)

    def _unblock(self) -> None:
        """The queued blocks as words at the end of `_tx`, in order."""
        tx = self._tx
        for words in self._blocks:
            for key, word in words.as_dict().items():
                if key in tx:
                    del tx[key]
                tx[key] = word
        self._blocks.clear()

    def request_resync(self) -> None:
        """Ask the peer for its whole table (RESYNC)."""
        self._control(Flag.RESYNC, 0, 0)

    def _control(self, flags: Flag, first: int = 0, last: int = 0) -> None:
        if self._blocks:
            self._unblock()
        key = object()
        self._tx[key] = _Pending(ControlMessage(flags, 0, first, last), key)

    def transmit(self, now: float) -> list[Message]:
        """Everything queued, numbered and flagged, in order; the caller sends them now."""
        out: list[Message] = []
        for seq, flags, m in self._take(now, None):  # type: ignore[union-attr]
            if type(m) is tuple:
                out.append(word_message(m, seq, flags))
            elif type(m) is StateMessage:
                out.append(m.numbered(seq, flags))
            else:
                out.append(ControlMessage(Flag(flags), seq, m.first, m.last))  # type: ignore[union-attr]
        return out

    def transmit_datagrams(self, now: float, limit: int) -> list[bytes]:
        """What `transmit` gives, packed into datagrams as `wire.datagrams` packs them."""
        return self._take(now, limit)  # type: ignore[return-value]

    def _take(self, now: float, limit: int | None) -> list[tuple[int, int, Message | Word]] | list[bytes]:
        """Empty the queue: each message with the number and flags it goes out with, in
        order (``limit`` None), or those messages packed into datagrams of at most ``limit``
        bytes (no numbered copy of each message).  The messages wait in the resend queue
        as they were queued (a resend gives them a new number), under their number."""
        tx = self._tx
        if self._blocks:
            if tx or limit is None or len(self._blocks) > 1:
                self._unblock()
            else:
                return self._take_block(now, limit)
        if not tx:
            return []
        taken: list[tuple[int, int, Message | Word]] = []
        datagrams: list[bytes] = []
        batch: list[bytes] = []
        size = 0
        pack = _HEADER.pack
        rs, rs_seq = self._rs, self._rs_seq
        rs_limit = self.resend_limit
        seq = self.seq
        resent = 0
        error: InputError | None = None  # a message that cannot be sent: raised once the queue is taken
        # the handshake's flags: HELLO on every message until the peer answered (INIT and SAY
        # become SAY once something is sent, DONE stays DONE), HELLO_BACK on the first one
        hello = 0
        if self.hello is not HelloState.DONE:
            self.hello = HELLO[(self.hello, "send")]
            if self.hello is HelloState.SAY:
                hello = _HELLO
        back = _HELLO_BACK if self.say_hello_back else 0
        self.say_hello_back = False
        if limit is not None and len(rs) + len(tx) <= rs_limit and seq + len(tx) <= _M32:
            packed = _packed_words(tx, seq, hello, back, limit)
            if packed is not None:  # (only words, none too long): numbered, filed and packed per batch
                seqs = range(seq, seq + len(tx))
                words = tx.values()
                rs.update(zip(seqs, words, strict=True))
                rs_seq.update(zip([w[0] for w in words], seqs, strict=True))  # type: ignore[index]
                self.stats.sent += len(tx)
                self.seq = seq + len(tx)
                tx.clear()
                self.last_sent = now
                return packed
        for pend in tx.values():
            if isinstance(pend, tuple):  # a word (the event path's state messages)
                key, mtype, body = pend
                flags = hello | back
                if limit is not None:
                    n = _HEADER_SIZE + len(body)
                    if n <= 0xFFFF:
                        raw = pack(_VERSION | mtype, flags, n, seq) + body
                    else:
                        raw, error = _encoded(seq, flags, word_message(pend), error)
                if len(rs) >= rs_limit:
                    self._rs_forget(next(iter(rs)))
                rs[seq] = pend
                rs_seq[key] = seq
            else:
                msg = pend.message
                flags = msg.flags & _NOT_HELLOS | hello | back
                if pend.resend:
                    resent += 1
                    pend.resend = False
                state = type(msg) is StateMessage
                if state or flags & _RANGE:
                    if len(rs) >= rs_limit:
                        self._rs_forget(next(iter(rs)))
                    rs[seq] = pend
                    if state:
                        rs_seq[pend.key] = seq
                if limit is not None:
                    raw, error = _encoded(seq, flags, msg, error)
            back = 0
            if limit is None:
                taken.append((seq, flags, pend if isinstance(pend, tuple) else pend.message))
            else:
                size += len(raw)
                if size > limit and batch:
                    datagrams.append(b"".join(batch))
                    batch, size = [], len(raw)
                batch.append(raw)
            seq = (seq + 1) & _M32
        if batch:
            datagrams.append(b"".join(batch))
        self.stats.sent += len(tx)
        self.stats.resent += resent
        tx.clear()
        self.seq = seq
        self.last_sent = now
        if error is not None:
            raise error
        return taken if limit is None else datagrams

    def _take_block(self, now: float, limit: int) -> list[bytes]:
        """`_take` of a queue holding one block alone: every message numbered and framed at
        once, packed as `_packed_words` packs them (they are all the same size)."""
        words = self._blocks[0]
        msgs = words.array  # (the header's room first: written here, then the bytes taken at once)
        n, m = msgs.shape
        seq, rs = self.seq, self._rs
        if len(rs) + n > self.resend_limit or seq + n > _M32 or m > 0xFFFF:
            self._unblock()  # the resend queue's limit, a wrap or an oversize body: the loop
            return self._take(now, limit)  # type: ignore[return-value]
        self._blocks.clear()
        hello = 0
        if self.hello is not HelloState.DONE:
            self.hello = HELLO[(self.hello, "send")]
            if self.hello is HelloState.SAY:
                hello = _HELLO
        t = words.types
        msgs[:, 0] = _VERSION | t if isinstance(t, int) else _VERSION | np.array(t, dtype=np.uint8)
        msgs[:, 1] = hello
        if self.say_hello_back:  # HELLO_BACK on the first message only
            msgs[0, 1] |= _HELLO_BACK
            self.say_hello_back = False
        msgs[:, 2:4] = np.frombuffer(m.to_bytes(2, "big"), np.uint8)
        msgs[:, 4:8] = np.arange(seq, seq + n, dtype=">u4").view(np.uint8).reshape(n, 4)
        blob = msgs.tobytes()
        step = max(1, limit // m) * m  # the most messages a datagram holds, at least one
        seqs = range(seq, seq + n)
        rs.update(dict.fromkeys(seqs, _Sent(words, seq)))
        self._rs_seq.update(zip(words.keys, seqs, strict=True))
        self.stats.sent += n
        self.seq = seq + n
        self.last_sent = now
        return [blob[i:i + step] for i in range(0, len(blob), step)]

    def tick(self, now: float) -> None:
        """After a quiet second: acknowledge what is owed, else say ALIVE."""
        if now - self.last_sent < ALIVE_INTERVAL or self._tx or self._blocks:
            return
        if self.ack_from is not None and self.last_received is not None:
            self._control(Flag.ACK, self.ack_from, self.last_received)
            self.ack_from = None
        else:
            self._control(Flag.ALIVE)
        self.last_sent = now  # the alarm is re-armed even if the caller sends later

    def _rs_forget(self, seq: int) -> _Pending | Word:
        """Take ``seq`` out of the resend queue: what it held (a block's word as a word)."""
        pend = self._rs.pop(seq)
        if isinstance(pend, _Sent):
            word = pend.word(seq)
            self._rs_seq.pop(word[0], None)
            return word
        if isinstance(pend, tuple):
            self._rs_seq.pop(pend[0], None)
        elif isinstance(pend.message, StateMessage):
            self._rs_seq.pop(pend.key, None)
        return pend

    @property
    def resend_queue_depth(self) -> int:
        return len(self._rs)

    # ---- receiving -----------------------------------------------------

    def classify(self, msg: Message) -> SeqClass:
        if msg.flags & _HELLO:
            return SeqClass.HELLO
        if self.last_received is None:
            return SeqClass.UNSET
        expected = (self.last_received + 1) & 0xFFFFFFFF
        if msg.seq == expected:
            return SeqClass.IN_SYNC
        return SeqClass.BEFORE if before(msg.seq, expected) else SeqClass.AFTER

    def receive(self, msg: Message) -> list[Event]:
        """Take one message from the peer; returns what the caller must do."""
        seq = msg.seq
        last = self.last_received
        if type(msg) is StateMessage and not msg.flags & _HELLOS and last is not None and seq == (last + 1) & _M32:
            # the common case, written out: a state message in sequence (IN_SYNC, counted in the window)
            stats = self.stats
            stats.received += 1
            stats.applied += 1
            if self.ack_from is None:
                self.ack_from = seq
            self.window_left -= 1
            if self.window_left <= 0:
                self._control(Flag.ACK, self.ack_from, seq)
                self.window_left = self.window
                self.ack_from = None
            self.last_received = seq
            return [Apply(msg)]
        self.stats.received += 1
        if msg.flags & _HELLO_BACK:
            self.hello = HELLO[(self.hello, "hello_back")]
        klass = self.classify(msg)
        if klass is SeqClass.HELLO:
            self.say_hello_back = True
            if self.ack_from is not None and before(msg.seq, self.ack_from):
                self.window_left = self.window - 1
                self.ack_from = msg.seq
            self._rs.clear()  # the peer restarted: it knows nothing of what we await
            self._rs_seq.clear()
        accept, nack_gap = RECEIVE[klass]
        if not accept:
            self.stats.dropped_late += 1
            return []
        events = self._digest(msg)
        if nack_gap:
            assert self.last_received is not None
            expected = (self.last_received + 1) & 0xFFFFFFFF
            if self.ack_from is not None:
                self._control(Flag.ACK, self.ack_from, (expected - 1) & 0xFFFFFFFF)
            self._control(Flag.NACK, expected, (msg.seq - 1) & 0xFFFFFFFF)
            self.stats.nacks_sent += 1
            self.stats.lost += (msg.seq - expected) & 0xFFFFFFFF
            self.window_left = self.window - 1
            self.ack_from = msg.seq
        else:
            if self.ack_from is None:
                self.ack_from = msg.seq
            self.window_left -= 1
            if self.window_left <= 0:
                self._control(Flag.ACK, self.ack_from, msg.seq)
                self.window_left = self.window
                self.ack_from = None
        self.last_received = msg.seq
        return events

    def _in_range(self, first: int, last: int) -> list[int]:
        """The numbers in the resend queue within first..last.  The queue is in sending
        order, so numbers rise along it: the walk stops at the first one after ``last``
        (an ACK costs what it acknowledges, not the whole queue)."""
        out = []
        span = (last - first) & _M32
        for seq in self._rs:  # (`between` and `before` written out: an ACK walks thousands)
            if (seq - first) & _M32 <= span:
                out.append(seq)
            elif (last - seq) & _M32 >= 0x80000000:
                break
        return out

    def _digest(self, msg: Message) -> list[Event]:
        if type(msg) is StateMessage:
            self.stats.applied += 1
            return [Apply(msg)]
        assert isinstance(msg, ControlMessage)
        if msg.flags & Flag.ACK:
            acked = self._in_range(msg.first, msg.last)
            rs, rs_seq = self._rs, self._rs_seq
            for seq in acked:  # (`_rs_forget` written out)
                pend = rs.pop(seq)
                if isinstance(pend, _Sent):  # (the block's key of ``seq``)
                    rs_seq.pop(pend.words.keys[(seq - pend.base) & _M32], None)
                elif isinstance(pend, tuple):
                    rs_seq.pop(pend[0], None)
                elif type(pend.message) is StateMessage:
                    rs_seq.pop(pend.key, None)
            self.stats.acked += len(acked)
        elif msg.flags & Flag.NACK:
            self.stats.nacks_received += 1
            if self._blocks:  # (resends go after what is queued)
                self._unblock()
            for seq in self._in_range(msg.first, msg.last):
                pend = self._rs_forget(seq)
                if isinstance(pend, tuple):
                    self._tx.pop(pend[0], None)
                    self._tx[pend[0]] = _Pending(word_message(pend), pend[0], resend=True)
                elif isinstance(pend.message, StateMessage):
                    self._tx.pop(pend.key, None)
                    self._tx[pend.key] = _Pending(pend.message.numbered(0, 0), pend.key, resend=True)
                else:
                    key = object()
                    m = pend.message
                    self._tx[key] = _Pending(ControlMessage(m.flags & RANGE_FLAGS, 0, m.first, m.last), key,
                                             resend=True)
        elif msg.flags & Flag.RESYNC:
            return [ResyncRequested()]
        return []

