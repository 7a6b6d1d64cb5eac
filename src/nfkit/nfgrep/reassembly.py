"""TCP stream reassembly, one direction at a time.

Owns: turning TCP segments as captured (out of order, retransmitted,
overlapping, with holes) into the in-order byte stream each side sent, within
a bounded amount of memory.  Must not know: flows, hashing, applications.

Rules it keeps:

- Sequence numbers are compared modulo 2**32 relative to the next expected
  byte, so streams that wrap around zero reassemble like any other.
- A SYN sets the stream's start (the byte after the SYN); a stream whose SYN
  was not captured starts at the first segment seen, and bytes before that are
  ignored.
- Overlaps: **first wins**.  Bytes already delivered, or already waiting in
  the buffer, are never replaced by a later segment covering the same
  sequence numbers; only the parts of a segment nobody sent before are kept.
  Retransmissions therefore cost nothing, and a crafted overlapping segment
  cannot rewrite what the classifier already saw.
- Holes: out-of-order bytes wait in a per-direction buffer (at most
  ``max_buffer`` bytes, plus the one segment being placed) and in the
  reassembler's global budget (``max_total`` bytes over all streams).  When a
  segment would exceed either bound, the hole in front of the waiting bytes is
  given up: the stream jumps to the earliest waiting byte, ``gaps`` goes up by
  one, and what follows is delivered.  A consumer that cannot match across a
  hole checks ``gaps``.
- FIN: the stream ends after the byte before the FIN's sequence number once
  everything before it arrived; later data is ignored.  RST ends the stream at
  once and drops what was waiting.
"""

from __future__ import annotations

from bisect import bisect_right

_M32 = 0xFFFFFFFF
_HALF = 1 << 31
TH_FIN, TH_SYN, TH_RST = 0x01, 0x02, 0x04


class Reassembler:
    """Global memory budget shared by every stream it creates."""

    def __init__(self, max_buffer: int = 65536, max_total: int = 64 << 20) -> None:
        if max_buffer < 1 or max_total < 1:
            raise ValueError("reassembly: buffer limits must be positive")
        self.max_buffer = max_buffer
        self.max_total = max_total
        self.buffered = 0  # bytes waiting out of order, over all streams
        self.gaps = 0  # holes given up, over all streams

    def stream(self) -> TcpStream:
        """A new, empty direction."""
        return TcpStream(self)


class TcpStream:
    """One direction of a TCP connection; `segment()` returns the bytes it makes available."""

    __slots__ = ("owner", "base", "next", "starts", "chunks", "pending", "fin", "closed",
                 "gaps", "started")

    def __init__(self, owner: Reassembler) -> None:
        self.owner = owner
        self.started = False
        self.base = 0  # absolute sequence number of stream offset 0
        self.next = 0  # stream offset of the next byte to deliver
        self.starts: list[int] = []  # waiting segments: stream offsets, sorted
        self.chunks: list[bytes] = []  # ... and their bytes (no two overlap)
        self.pending = 0  # bytes waiting
        self.fin = -1  # stream offset of the FIN, when seen
        self.closed = False
        self.gaps = 0

    def segment(self, seq: int, flags: int, payload: bytes) -> bytes:
        """Take one segment; return the bytes newly in order (often ``b""``)."""
        if self.closed:
            return b""
        if not self.started:
            self.started = True
            self.base = (seq + 1) & _M32 if flags & TH_SYN else seq
        if flags & TH_RST:
            self._close()
            return b""
        # stream offset of the segment's first byte, relative to what is expected
        delta = (seq - self.base - self.next) & _M32
        if delta >= _HALF:
            delta -= 1 << 32
        start = self.next + delta + (1 if flags & TH_SYN else 0)
        n = len(payload)
        out = b""
        if n:
            end = start + n
            if start == self.next and not self.starts:
                self.next = end  # the common case: in order, nothing waiting
                out = payload
            elif end > self.next:
                if start < self.next:
                    payload = payload[self.next - start:]
                    start = self.next
                out = self._place(start, payload)
        if flags & TH_FIN and self.fin < 0:
            self.fin = start + n
        if self.fin >= 0 and self.next >= self.fin:
            if self.next > self.fin:  # bytes past the FIN are not part of the stream
                out = out[: len(out) - (self.next - self.fin)]
                self.next = self.fin
            self._close()
        return out

    def _place(self, start: int, payload: bytes) -> bytes:
        owner = self.owner
        n = len(payload)
        if (self.pending + n > owner.max_buffer or owner.buffered + n > owner.max_total) \
                and start > self.next:
            # a bound is hit: give up the hole in front of the earliest waiting byte
            first = min(self.starts[0], start) if self.starts else start
            self.gaps += 1
            owner.gaps += 1
            self.next = first
        self._insert(start, payload)
        return self._drain()

    def _insert(self, start: int, payload: bytes) -> None:
        """Add the parts of [start, start+len) not already waiting (first wins)."""
        end = start + len(payload)
        starts, chunks = self.starts, self.chunks
        i = bisect_right(starts, start) - 1
        if i < 0:
            i = 0
        cur = start
        pieces: list[tuple[int, bytes]] = []
        while i < len(starts) and cur < end:
            s = starts[i]
            e = s + len(chunks[i])
            if e <= cur:
                i += 1
                continue
            if s >= end:
                break
            if s > cur:
                pieces.append((cur, payload[cur - start: s - start]))
            cur = max(cur, e)
            i += 1
        if cur < end:
            pieces.append((cur, payload[cur - start:]))
        for s, data in pieces:
            j = bisect_right(starts, s)
            starts.insert(j, s)
            chunks.insert(j, data)
            self.pending += len(data)
            self.owner.buffered += len(data)

    def _drain(self) -> bytes:
        starts, chunks = self.starts, self.chunks
        out: list[bytes] = []
        freed = 0
        while starts and starts[0] <= self.next:
            s = starts.pop(0)
            data = chunks.pop(0)
            freed += len(data)
            e = s + len(data)
            if e > self.next:
                out.append(data[self.next - s:])
                self.next = e
        self.pending -= freed
        self.owner.buffered -= freed
        return b"".join(out)

    def _close(self) -> None:
        self.closed = True
        self.release()

    def release(self) -> None:
        """Drop whatever waits (the flow ended); returns its bytes to the global budget."""
        self.owner.buffered -= self.pending
        self.pending = 0
        self.starts.clear()
        self.chunks.clear()

    @property
    def delivered(self) -> int:
        """Bytes delivered so far (holes given up count as delivered)."""
        return self.next
