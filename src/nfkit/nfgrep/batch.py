"""A batch of captured frames as columns: the vectorised front end of `classify`.

Owns: parsing the headers of many frames at once (numpy, fixed offsets from
the link layer down to the transport header), and a symmetric flow key per
frame with the frames grouped by it.  Must not know: flows as the flow table
keeps them, streams, applications.

Every column means exactly what `nfkit.nfgrep.capture.decode` says of the
same frame: a frame that the fixed-offset parse does not cover (IPv4 options,
IPv6 extension headers, fragments, double VLAN tags, ICMP and other
transports, frames cut short, link types other than Ethernet, SLL, SLL2 and
raw IP) is decoded alone by `decode` and its columns are filled from that.
``tests/nfgrep/test_batch.py`` checks the columns against `decode` frame by
frame on hypothesis-made frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nfkit.nfgrep.capture import (
    ETH_IPV4,
    ETH_IPV6,
    LINK_ETHERNET,
    LINK_IPV4,
    LINK_IPV6,
    LINK_RAW,
    LINK_SLL,
    LINK_SLL2,
    Decoded,
    decode,
)

_RAW = (LINK_RAW, 12, 14, LINK_IPV4, LINK_IPV6)
_VLAN = (0x8100, 0x88A8, 0x9100)
_IPV6_DIRECT = (6, 17)  # next headers parsed here; everything else goes to decode()
_MIX = np.uint64(0x9E3779B97F4A7C15)
HEAD = 96  # bytes of each frame the vectorised parse reads (link + IP + transport headers)


def _among(x: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``x`` equal to one of a few ``values`` (np.isin sorts: slower for so few)."""
    out = x == values[0]
    for v in values[1:]:
        out |= x == v
    return out


def stable_order(keys: np.ndarray, bound: int) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` for keys in ``[0, bound)``: as 16-bit keys when they
    fit, which numpy sorts by radix (several times faster than its merge sort of int64)."""
    if bound <= 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


def frame_heads(buf: Any, start: np.ndarray, width: int = HEAD) -> np.ndarray:
    """The first ``width`` bytes of each frame starting at ``start`` in ``buf``, as rows.

    Rows are zero-padded past the buffer's end (the parse checks each frame's
    capture length before it trusts a byte).
    """
    u8 = np.frombuffer(buf, dtype=np.uint8)
    n = len(start)
    inside = start + width <= len(u8)
    if inside.all() and n:
        # each row one item of ``width`` bytes: numpy copies it whole (twice as fast as rows
        # of ``width`` one-byte items)
        items = np.ndarray(shape=(len(u8) - width + 1,), dtype=f"V{width}", buffer=u8, strides=(1,))
        return items[start].view(np.uint8).reshape(n, width)
    out = np.zeros((n, width), dtype=np.uint8)
    if len(u8) >= width and inside.any():
        rows = np.lib.stride_tricks.as_strided(u8, shape=(len(u8) - width + 1, width), strides=(1, 1))
        out[inside] = rows[start[inside]]
    for i in np.flatnonzero(~inside).tolist():
        tail = u8[int(start[i]):int(start[i]) + width]
        out[i, :len(tail)] = tail
    return out


class Batch:
    """Columns of ``n`` frames; index ``i`` is the i-th frame of the batch.

    ``valid``: decode() gave a packet (else the frame is skipped).  ``proto``,
    ``sport``, ``dport``, ``flags``, ``seq``, ``size`` (IP length), payload
    ``pstart``/``pend`` (offsets into the buffer; empty when pend <= pstart),
    ``group`` (frames of one flow key share it, numbered from 0 in order of
    first frame), ``orient`` (0 when the frame's source is the key's lower
    endpoint), ``first`` (per group: its first frame).  ``slow`` maps the
    frames decoded one by one to their `Decoded` tuple.
    """

    def __init__(self, buf: Any, ts: np.ndarray, start: np.ndarray, caplen: np.ndarray,
                 link: np.ndarray | int, head: np.ndarray | None = None, skip: int = 0) -> None:
        """``head``: each frame's first bytes as rows (`frame_heads`), from column ``skip``
        of each row (a caller may gather the pcap record header before them in one go)."""
        self.buf = buf
        self.ts = ts
        self.n = n = len(start)
        self.start = start
        links = np.broadcast_to(np.asarray(link, dtype=np.int64), (n,))
        c = caplen.astype(np.int64)
        f = start.astype(np.int64)
        ok = np.ones(n, dtype=bool)
        if head is None or not n:
            head, skip = frame_heads(buf, f), 0
        # every header this parse reads lies in the first HEAD bytes of its frame: one
        # gather of those rows (consecutive bytes), then each field read from them as a
        # big-endian word of its size (a view per size over the rows, at every byte offset)
        head = np.ascontiguousarray(head)
        width = head.shape[1]
        assert width >= skip + HEAD
        words = {size: np.ndarray(shape=(n, HEAD - size + 1), dtype=f">u{size}", buffer=head,
                                  offset=skip, strides=(width, 1))
                 if n else np.zeros((0, HEAD), dtype=f">u{size}")
                 for size in (1, 2, 4, 8)}
        # the same words as one flat run (row r's byte k at r * width + skip + k): a field at
        # a different offset per frame is one 1-D take, much cheaper than a 2-D gather
        flat = {size: np.ndarray(shape=(max(n * width - skip - size + 1, 0),), dtype=f">u{size}",
                                 buffer=head, offset=skip, strides=(1,)) for size in (1, 2, 4, 8)}
        every = np.arange(n, dtype=np.int64)
        row_at = every * width

        def field(off: np.ndarray | int, size: int, rows: np.ndarray | None = None) -> np.ndarray:
            """``size`` bytes big-endian at ``off`` into each frame (of ``rows``), as int64/uint64.

            A read past the frame's first HEAD bytes marks the frame for
            decode() (whose bounds are the frame's).
            """
            view = words[size]
            wide = np.uint64 if size == 8 else np.int64
            if rows is None and isinstance(off, int):
                return view[:, off].astype(wide)
            at = np.asarray(off, dtype=np.int64)
            beyond = at + (size - 1) >= HEAD
            if beyond.any():
                beyond = np.broadcast_to(beyond, (n,) if rows is None else rows.shape)
                ok[beyond if rows is None else rows[beyond]] = False
                at = np.where(beyond, 0, at)
            return flat[size][(row_at if rows is None else rows * width) + at].astype(wide)

        # link layer: ethertype and where the IP header starts
        eth = links == LINK_ETHERNET
        ipoff = np.zeros(n, dtype=np.int64)
        et = np.zeros(n, dtype=np.int64)
        if eth.any():
            e0 = field(12, 2)
            tagged = eth & _among(e0, _VLAN)
            e1 = field(16, 2) if tagged.any() else e0
            et = np.where(eth, np.where(tagged, e1, e0), et)
            ipoff = np.where(eth, np.where(tagged, 18, 14), ipoff)
            ok &= ~(tagged & _among(e1, _VLAN))  # a second tag: decode() walks it
        for lk, at, off in ((LINK_SLL2, 0, 20), (LINK_SLL, 14, 16)):
            m = links == lk
            if m.any():
                et = np.where(m, field(at, 2), et)
                ipoff = np.where(m, off, ipoff)
        raw = _among(links, _RAW)
        if raw.any():
            v = field(0, 1) >> 4
            et = np.where(raw, np.where(v == 4, ETH_IPV4, np.where(v == 6, ETH_IPV6, 0)), et)
        ok &= eth | raw | (links == LINK_SLL2) | (links == LINK_SLL)
        v4 = ok & (et == ETH_IPV4)
        v6 = ok & (et == ETH_IPV6)
        ok &= v4 | v6
        ok &= c >= ipoff + np.where(v6, 40, 20)

        # network layer
        ihl = field(ipoff, 1) & 0x0F
        total = field(ipoff + 2, 2)
        frag = field(ipoff + 6, 2) & 0x1FFF
        plen6 = field(ipoff + 4, 2)
        proto = np.where(v6, field(ipoff + 6, 1), field(ipoff + 9, 1))  # IPv6: next header is byte 6
        ok &= ~(v4 & ((ihl < 5) | (frag != 0)))  # options are fine; ihl < 5 and fragments: decode()
        ok &= _among(proto, _IPV6_DIRECT)
        l4 = ipoff + np.where(v6, 40, ihl * 4)
        end = np.where(v6, l4 + plen6, ipoff + total)
        cut = np.where(v6, (end > c) | (plen6 == 0), (end > c) | (total < ihl * 4))
        end = np.where(cut, c, end)
        tcp = proto == 6
        ok &= c >= l4 + np.where(tcp, 14, 4)
        # addresses as (high, low) 64-bit words; IPv4 in the low word
        zero = np.zeros(n, dtype=np.uint64)
        a_hi, b_hi = zero, zero.copy()
        a_lo = field(ipoff + 12, 4).astype(np.uint64)
        b_lo = field(ipoff + 16, 4).astype(np.uint64)
        six = np.flatnonzero(v6)
        if len(six):
            a_hi = zero.copy()
            o6 = ipoff[six]
            a_hi[six] = field(o6 + 8, 8, six)
            a_lo[six] = field(o6 + 16, 8, six)
            b_hi[six] = field(o6 + 24, 8, six)
            b_lo[six] = field(o6 + 32, 8, six)

        # transport
        sport = field(l4, 2)
        dport = field(l4 + 2, 2)
        seq = np.where(tcp, field(l4 + 4, 4), 0)
        flags = np.where(tcp, field(l4 + 13, 1), 0)
        doff = field(l4 + 12, 1) >> 4
        pstart = l4 + np.where(tcp, doff * 4, 8)
        self.v6 = v6
        self.valid = ok.copy()
        self.proto = proto
        self.sport, self.dport, self.seq, self.flags = sport, dport, seq, flags
        self.pstart = f + pstart
        self.pend = f + end
        self.size = end - ipoff
        self.addr_at = f + ipoff + np.where(v6, 8, 12)  # the source address; the destination follows
        self.a = (a_hi, a_lo)
        self.b = (b_hi, b_lo)
        self.slow: dict[int, Decoded] = {}
        for i in np.flatnonzero(~ok).tolist():
            frame = buf[int(f[i]):int(f[i] + c[i])]
            self._fill(i, decode(int(links[i]), bytes(frame)))
        self._group()

    def _fill(self, i: int, p: Decoded | None) -> None:
        if p is None:
            self.valid[i] = False
            return
        self.valid[i] = True
        proto, src, dst, sport, dport, flags, seq, payload, size = p
        self.slow[i] = p
        self.proto[i], self.sport[i], self.dport[i] = proto, sport, dport
        self.flags[i], self.seq[i], self.size[i] = flags, seq, size
        self.pstart[i] = self.pend[i] = 0
        self.v6[i] = len(src) == 16
        for side, addr in ((self.a, src), (self.b, dst)):
            if len(addr) == 16:
                side[0][i] = int.from_bytes(addr[:8], "big")
                side[1][i] = int.from_bytes(addr[8:], "big")
            else:
                side[0][i] = 0
                side[1][i] = int.from_bytes(addr, "big")

    def _group(self) -> None:
        """Symmetric key per frame: (transport, family, lower endpoint, higher endpoint)."""
        a_hi, a_lo = self.a
        b_hi, b_lo = self.b
        sp = self.sport.astype(np.uint64)
        dp = self.dport.astype(np.uint64)
        gt = (a_hi > b_hi) | ((a_hi == b_hi) & ((a_lo > b_lo) | ((a_lo == b_lo) & (sp > dp))))
        self.orient = gt.astype(np.int64)
        # transport, family and both ports in one word: (proto * 2 + v6, or 2**32 - 2 + v6 for
        # a frame that is not a packet) << 32 | lower endpoint's port << 16 | higher's
        kind = (np.where(self.valid, self.proto * 2, 0xFFFFFFFE) + self.v6).astype(np.uint64)
        low_port = np.where(gt, dp, sp)
        cols = [(kind << np.uint64(32)) | (low_port << np.uint64(16)) | (sp ^ dp ^ low_port),
                np.where(gt, b_hi, a_hi), np.where(gt, b_lo, a_lo),
                np.where(gt, a_hi, b_hi), np.where(gt, a_lo, b_lo)]
        self.key = cols
        with np.errstate(over="ignore"):
            h = np.zeros(self.n, dtype=np.uint64)
            for col in cols:
                h = (h ^ col) * _MIX
                h ^= h >> np.uint64(29)
        _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        # the hash is only a shortcut: a group whose frames differ in any key column splits
        lead = first[inverse]  # each frame's group's first frame
        if any((col != col[lead]).any() for col in cols):
            keys = np.stack(cols[::-1])
            order = np.lexsort(keys)
            sk = keys[:, order]
            new = np.ones(self.n, dtype=bool)
            new[1:] = (sk[:, 1:] != sk[:, :-1]).any(axis=0)
            gid = np.cumsum(new) - 1
            inverse = np.empty(self.n, dtype=np.int64)
            inverse[order] = gid
            first = np.full(gid[-1] + 1 if self.n else 0, self.n, dtype=np.int64)
            np.minimum.at(first, inverse, np.arange(self.n))
        # number groups in order of first frame
        rank = np.empty(len(first), dtype=np.int64)
        by_first = stable_order(first, self.n)
        rank[by_first] = np.arange(len(first))
        self.group = rank[inverse.reshape(-1)]
        self.first = first[by_first]
        self.ngroups = len(first)

    # -- one frame as decode() gives it -------------------------------------------

    def address(self, i: int, side: int) -> bytes:
        hi, lo = self.a if side == 0 else self.b
        if self.v6[i]:
            return int(hi[i]).to_bytes(8, "big") + int(lo[i]).to_bytes(8, "big")
        return int(lo[i]).to_bytes(4, "big")

    def columns(self, frames: np.ndarray) -> list[list[Any]]:
        """Per frame of ``frames``: proto, sport, dport, flags, seq, payload start, end, IP length,
        address offset, address length, orientation, timestamp (lists, for a Python loop)."""
        return [self.proto[frames].tolist(), self.sport[frames].tolist(),
                self.dport[frames].tolist(), self.flags[frames].tolist(),
                self.seq[frames].tolist(), self.pstart[frames].tolist(), self.pend[frames].tolist(),
                self.size[frames].tolist(), self.addr_at[frames].tolist(),
                np.where(self.v6[frames], 16, 4).tolist(), self.orient[frames].tolist(),
                self.ts[frames].tolist()]

    def decoded(self, i: int) -> Decoded:
        """Frame ``i`` as `decode` gives it (for a valid frame)."""
        p = self.slow.get(i)
        if p is not None:
            return p
        ps, pe = int(self.pstart[i]), int(self.pend[i])
        return (int(self.proto[i]), self.address(i, 0), self.address(i, 1), int(self.sport[i]),
                int(self.dport[i]), int(self.flags[i]), int(self.seq[i]),
                bytes(self.buf[ps:pe]) if pe > ps else b"", int(self.size[i]))


def from_frames(frames: Sequence[tuple[float, int, bytes]]) -> Batch:
    """A batch of separate frames (pcapng blocks, frames built in tests)."""
    starts = np.zeros(len(frames), dtype=np.int64)
    pos = 0
    for i, (_, _, fr) in enumerate(frames):
        starts[i] = pos
        pos += len(fr)
    buf = b"".join(fr for _, _, fr in frames) + bytes(64)  # the tail: room for a header word
    return Batch(buf, np.array([t for t, _, _ in frames], dtype=np.float64), starts,
                 np.array([len(fr) for _, _, fr in frames], dtype=np.int64),
                 np.array([lk for _, lk, _ in frames], dtype=np.int64))
