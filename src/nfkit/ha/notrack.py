"""NOTRACK and ALARM, conntrackd's unreliable sync modes, sans-I/O (conntrack-tools 1.4.7).

Owns: one such session with one peer: numbering what is sent (one counter,
as in FTFW), counting the numbers a peer skipped (conntrackd's "Lost msgs":
nothing is asked again), and in NOTRACK answering a RESYNC request.  The
same interface as `nfkit.ha.ftfw.FtfwSession` (enqueue, transmit, tick,
receive), so the sync engine drives every mode alike.
Must not know: sockets, clocks, the kernel.  ALARM's periodic refresh of
every entry is the engine's (it holds the entries): this session only
numbers and delivers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from nfkit.ha.ftfw import Apply, Event, ResyncRequested, Stats, before
from nfkit.ha.spec import Flag
from nfkit.ha.wire import ControlMessage, Message, StateMessage, Word, datagrams, word_message


@dataclass
class PlainSession:
    """A NOTRACK (``answers_resync``) or ALARM session; ``seq`` is the next number to send."""

    seq: int
    answers_resync: bool = True
    stats: Stats = field(default_factory=Stats)
    last_received: int | None = None
    _tx: OrderedDict[Hashable, Message] = field(default_factory=OrderedDict)

    def enqueue(self, key: Hashable, message: StateMessage) -> None:
        """Send ``message`` (the latest word on entry ``key``): replaces one still waiting."""
        self._tx.pop(key, None)
        self._tx[key] = message

    def enqueue_many(self, words: Iterable[tuple[Hashable, StateMessage]]) -> None:
        for key, message in words:
            self.enqueue(key, message)

    def enqueue_words(self, words: dict[Hashable, Word]) -> None:
        """`enqueue` each word (key -> (key, type, body), in order) as its state message."""
        for key, word in words.items():
            self.enqueue(key, word_message(word))

    def request_resync(self) -> None:
        self._tx[object()] = ControlMessage(Flag.RESYNC, 0, 0, 0)

    def transmit(self, now: float) -> list[Message]:
        out: list[Message] = []
        while self._tx:
            _, msg = self._tx.popitem(last=False)
            seq, self.seq = self.seq, (self.seq + 1) & 0xFFFFFFFF
            if isinstance(msg, StateMessage):
                out.append(msg.numbered(seq, msg.flags))
            else:
                out.append(ControlMessage(msg.flags, seq, msg.first, msg.last))
        self.stats.sent += len(out)
        return out

    def transmit_datagrams(self, now: float, limit: int) -> list[bytes]:
        """What `transmit` gives, packed into datagrams (`wire.datagrams`)."""
        return list(datagrams(self.transmit(now), limit))

    def tick(self, now: float) -> None:
        """Nothing to do: these modes have no heartbeat."""

    @property
    def resend_queue_depth(self) -> int:
        return 0

    def receive(self, msg: Message) -> list[Event]:
        self.stats.received += 1
        if self.last_received is not None:
            expected = (self.last_received + 1) & 0xFFFFFFFF
            if msg.seq != expected:
                if before(msg.seq, expected):
                    self.stats.dropped_late += 1  # counted, still applied: nothing is tracked
                else:
                    self.stats.lost += (msg.seq - expected) & 0xFFFFFFFF
        self.last_received = msg.seq
        if isinstance(msg, StateMessage):
            self.stats.applied += 1
            return [Apply(msg)]
        if msg.flags & Flag.RESYNC and self.answers_resync:
            return [ResyncRequested()]
        return []
