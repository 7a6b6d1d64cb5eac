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

Cost, not meaning: numpy's strided reads of the rows and the temporaries of
whole-batch arrays are what a batch costs, so frames are parsed and keyed in
pieces of `_ROWS` (rows and columns stay in cache), each header read as a
few contiguous word arrays, and only the first frame of each run of one key
(most frames follow one of their own flow) is looked up by hash.
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
_BE = {size: np.dtype(f">u{size}") for size in (1, 2, 4, 8)}
_SLOT_BITS = 16  # bits of a key's hash that pick its slot in one round of `_leads`
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


def _leads(h: np.ndarray, cols: list[np.ndarray], n: int) -> np.ndarray:
    """Per item, the first item with the same key (``cols``, whose hash is ``h``).

    Each round puts the items left in a table by 16 bits of their hash: a
    slot's first item leads every item of the slot with its key, the others
    (a different key in the same slot) go on to the next round, with the next
    16 bits.  Items still left after the hash's 64 bits are sorted by key.
    """
    lead = np.empty(n, dtype=np.int64)
    todo = np.arange(n, dtype=np.int64)
    table = np.empty(1 << _SLOT_BITS, dtype=np.int64)
    mask = np.uint64((1 << _SLOT_BITS) - 1)
    for shift in range(64 - _SLOT_BITS, -1, -_SLOT_BITS):
        everything = len(todo) == n
        slot = ((h if everything else h[todo]) >> np.uint64(shift)) & mask
        slot = slot.astype(np.intp)
        # the smallest item per slot: written last, the items being written in reverse
        table[slot[::-1]] = todo[::-1]
        mine = table[slot]
        if not (mine <= todo).all():  # numpy wrote them in another order: sort instead
            mine = _slot_firsts(slot, todo)
        other = np.zeros(len(todo), dtype=bool)
        for col in cols:
            other |= (col if everything else col[todo]) != col[mine]
        if not other.any():
            lead[todo] = mine
            return lead
        same = ~other
        lead[todo[same]] = mine[same]
        todo = todo[other]
    # the same 64-bit hash for different keys: the rest sorted by key
    keys = np.stack([col[todo] for col in cols[::-1]])
    order = np.lexsort(keys)
    sk = keys[:, order]
    new = np.ones(len(todo), dtype=bool)
    new[1:] = (sk[:, 1:] != sk[:, :-1]).any(axis=0)
    lead[todo[order]] = todo[order[np.flatnonzero(new)]][np.cumsum(new) - 1]
    return lead


def _slot_firsts(slot: np.ndarray, todo: np.ndarray) -> np.ndarray:
    """Per item, the first of ``todo`` (ascending) with its ``slot``, by a stable sort."""
    order = np.argsort(slot, kind="stable")
    s = slot[order]
    new = np.ones(len(s), dtype=bool)
    np.not_equal(s[1:], s[:-1], out=new[1:])
    mine = np.empty(len(s), dtype=np.int64)
    mine[order] = todo[order[np.flatnonzero(new)]][np.cumsum(new) - 1]
    return mine


_U = np.uint64
_ROWS = 8192  # frames parsed at once by `Batch` (their rows and columns stay in cache)


class _Words:
    """Bytes ``[0, 8 * count)`` of ``n`` rows as big-endian 64-bit words, one contiguous
    array per word (``words[k]``: bytes ``8k`` to ``8k + 7``), and a field in one of them as
    a uint64 array."""

    def __init__(self, rows: tuple[np.ndarray, int], n: int, count: int = 7) -> None:
        array, base = rows
        width = array.shape[1] if array.ndim == 2 else 0
        src = np.ndarray(shape=(n, count), dtype=">u8", buffer=array, offset=base,
                         strides=(width, 8))
        self.words = words = np.empty((count, n), dtype=np.uint64)
        for k in range(count):
            words[k] = src[:, k]

    def __call__(self, at: int, size: int) -> np.ndarray:
        """The big-endian ``size``-byte field at byte ``at`` of each row (a new array); the
        field lies in one word."""
        k, r = divmod(at, 8)
        assert r + size <= 8
        x = self.words[k] >> _U(64 - 8 * (r + size))
        return x & _U((1 << (8 * size)) - 1) if size < 8 else x


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
        c = np.asarray(caplen, dtype=np.int64)
        f = np.asarray(start, dtype=np.int64)
        if head is None:
            head, skip = frame_heads(buf, f), 0
        if not n:
            head = np.zeros((1, skip + HEAD), dtype=np.uint8)  # room for the (empty) columns' views
        # every header this parse reads lies in the first HEAD bytes of its frame: one
        # gather of those rows (by the caller, or here), then `_parse` a few thousand rows
        # at a time: the link header's fields as columns of the rows, the IP and transport
        # headers' as shifts and masks of 64-bit words copied out of them (`_Words`)
        head = np.ascontiguousarray(head)
        assert head.shape[1] >= skip + HEAD
        self.valid = np.empty(n, dtype=bool)
        self.v6 = np.empty(n, dtype=bool)
        self.proto, self.sport, self.dport, self.flags, self.seq, self.size, self.pstart, \
            self.pend, self.addr_at = (np.empty(n, dtype=np.int64) for _ in range(9))
        self.a = (np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.uint64))
        self.b = (np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.uint64))
        # a few thousand frames at a time: their rows and the columns made of them stay in
        # cache (three times cheaper than whole batches on the bench capture)
        scalar = np.ndim(link) == 0
        links = int(link) if scalar else np.asarray(link, dtype=np.int64)  # type: ignore[arg-type]
        for lo in range(0, max(n, 1), _ROWS):
            hi = min(lo + _ROWS, n)
            self._parse(head[lo:hi] if n else head, skip, c[lo:hi], f[lo:hi],
                        links if scalar else links[lo:hi], lo)  # type: ignore[index]
        self.slow: dict[int, Decoded] = {}
        for i in np.flatnonzero(~self.valid).tolist():
            frame_bytes = buf[int(f[i]):int(f[i] + c[i])]
            self._fill(i, decode(int(link if scalar else links[i]), bytes(frame_bytes)))  # type: ignore[index,arg-type]
        self._group()

    def _parse(self, head: np.ndarray, skip: int, c: np.ndarray, f: np.ndarray,
               link: np.ndarray | int, lo: int) -> None:
        """The columns of frames ``lo, lo + 1, ...`` (rows ``head``, capture lengths ``c``,
        starts ``f``); ``valid`` says which of them the parse covers."""
        n = len(c)
        width = head.shape[1]

        def column(rows: tuple[np.ndarray, int], at: int, size: int) -> np.ndarray:
            """Big-endian ``size``-byte words at byte ``at`` of each row of ``rows`` (a
            contiguous 2-D array and the byte of its rows where they begin)."""
            array, base = rows
            return np.ndarray(shape=(n,), dtype=_BE[size], buffer=array, offset=base + at,
                              strides=(array.shape[1],))

        def rows_at(off: Any, size: int) -> tuple[np.ndarray, int]:
            """The ``size`` bytes at ``off`` into each frame (``off + size <= HEAD``), as rows:
            a view of the frames' rows when ``off`` is one int, else gathered."""
            if isinstance(off, int):
                return head, skip + off
            items = np.ndarray(shape=(n * width - skip - size + 1,), dtype=f"V{size}", buffer=head,
                               offset=skip, strides=(1,))
            rows = items[np.arange(0, n * width, width, dtype=np.int64) + off]
            return rows.view(np.uint8).reshape(n, size), 0

        def uniform(off: Any) -> Any:
            """``off`` as one int when every frame has the same."""
            if isinstance(off, int) or not n:
                return 0 if not n else off
            return int(off[0]) if off.min() == off.max() else off

        ok = np.ones(n, dtype=bool)
        frame = (head, skip)
        # link layer: ethertype and where the IP header starts (an int when the same for all)
        ipoff: np.ndarray | int
        if isinstance(link, int):
            et, ipoff = self._link(link, frame, column, ok)
        else:
            et, ipoff = self._links(link, frame, column, ok)
            ipoff = uniform(ipoff)
        v4 = ok & (et == ETH_IPV4)
        v6 = ok & (et == ETH_IPV6)
        ok &= v4 | v6
        some6 = bool(v6.any())
        all6 = some6 and bool(v6.all())

        def pick(x6: Any, x4: Any) -> Any:
            """``x6`` for IPv6 frames, ``x4`` for the others."""
            return x6 if all6 else np.where(v6, x6, x4) if some6 else x4

        # network and transport layers: the 56 bytes from the IP header on (ipoff + 56 <= 76)
        # as seven big-endian 64-bit words per frame, each a contiguous array, so that a
        # field is a shift and a mask (whole-array operations, no more strided reads)
        word = _Words(rows_at(ipoff, 56), n)
        w = word.words
        ihl = word(0, 1) & _U(0x0F)
        total = word(2, 2)
        plen6 = word(4, 2)
        proto = pick(word(6, 1), word(9, 1))  # IPv6: next header is byte 6
        if not all6:  # options are fine; ihl < 5 and fragments: decode()
            ok &= ~(v4 & ((ihl < _U(5)) | ((w[0] & _U(0x1FFF)) != 0)))
        ok &= _among(proto, _IPV6_DIRECT)
        hlen = ihl << _U(2)
        # addresses as (high, low) 64-bit words; IPv4 in the low word
        if some6:
            zero = _U(0)
            a_hi, a_lo = pick(w[1], zero), pick(w[2], w[1] & _U(0xFFFFFFFF))
            b_hi, b_lo = pick(w[3], zero), pick(w[4], w[2] >> _U(32))
        else:
            a_hi, a_lo = np.zeros(n, dtype=np.uint64), w[1] & _U(0xFFFFFFFF)
            b_hi, b_lo = np.zeros(n, dtype=np.uint64), w[2] >> _U(32)
        # the transport header's first 16 bytes as two words: 20 bytes on (IPv4 without
        # options) or 40 (IPv6); where another IPv4 header length puts it (options; or what
        # a frame that is no IPv4 packet says), gathered for those frames (l4 <= 20 + 60,
        # l4 + 16 <= HEAD)
        if all6:
            t0, t1 = w[5], w[6]
        else:
            t0 = pick(w[5], (w[2] << _U(32)) | (w[3] >> _U(32)))
            t1 = pick(w[6], (w[3] << _U(32)) | (w[4] >> _U(32)))
        hlen = hlen.view(np.int64)
        l4 = ipoff + pick(40, hlen)
        odd = np.flatnonzero(~v6 & (hlen != 20)) if not all6 else ()
        if len(odd):
            at = l4[odd] if not isinstance(l4, int) else l4
            items = np.ndarray(shape=(n * width - skip - 16 + 1,), dtype="V16", buffer=head,
                               offset=skip, strides=(1,))
            th = items[odd * width + at].view(np.uint8).reshape(len(odd), 16)
            th_words = _Words((th, 0), len(odd), 2).words
            t0[odd], t1[odd] = th_words[0], th_words[1]
        sport = t0 >> _U(48)
        dport = (t0 >> _U(32)) & _U(0xFFFF)
        seq = t0 & _U(0xFFFFFFFF)
        doff = (t1 >> _U(28)) & _U(0x0F)
        flags = (t1 >> _U(16)) & _U(0xFF)
        total, plen6, proto = total.view(np.int64), plen6.view(np.int64), proto.view(np.int64)
        end = pick(l4 + plen6, ipoff + total)
        cut = end > c
        cut |= pick(plen6 == 0, total < hlen)
        end = np.where(cut, c, end)
        tcp = proto == 6
        # the transport header's first bytes in the frame (so its IP header too: l4 is past it)
        ok &= c >= l4 + np.where(tcp, 14, 4)
        sport, dport = sport.view(np.int64), dport.view(np.int64)
        seq = np.where(tcp, seq.view(np.int64), 0)
        flags = np.where(tcp, flags.view(np.int64), 0)
        pstart = l4 + np.where(tcp, doff.view(np.int64) << 2, 8)
        hi = lo + n
        self.valid[lo:hi] = ok
        self.v6[lo:hi] = v6
        self.proto[lo:hi], self.sport[lo:hi], self.dport[lo:hi] = proto, sport, dport
        self.flags[lo:hi], self.seq[lo:hi] = flags, seq
        self.pstart[lo:hi] = f + pstart
        self.pend[lo:hi] = f + end
        self.size[lo:hi] = end - ipoff
        self.addr_at[lo:hi] = f + (ipoff + pick(8, 12))  # the source address; the destination follows
        self.a[0][lo:hi], self.a[1][lo:hi] = a_hi, a_lo
        self.b[0][lo:hi], self.b[1][lo:hi] = b_hi, b_lo

    @staticmethod
    def _link(link: int, frame: tuple[np.ndarray, int], column: Any, ok: np.ndarray) -> tuple[np.ndarray, Any]:
        """Ethertype per frame and IP header offset (an int, or per frame when VLAN tags
        vary) for frames all of one link type; frames it does not parse cleared in ``ok``."""
        if link == LINK_ETHERNET:
            e0 = column(frame, 12, 2).astype(np.uint16)  # once contiguous, compared at SIMD speed
            tagged = _among(e0, _VLAN)
            if not tagged.any():
                return e0, 14
            e1 = column(frame, 16, 2)
            ok &= ~(tagged & _among(e1, _VLAN))  # a second tag: decode() walks it
            return np.where(tagged, e1, e0), np.where(tagged, 18, 14)
        if link == LINK_SLL2:
            return column(frame, 0, 2), 20
        if link == LINK_SLL:
            return column(frame, 14, 2), 16
        if link in _RAW:
            v = column(frame, 0, 1) >> 4
            return np.where(v == 4, ETH_IPV4, np.where(v == 6, ETH_IPV6, 0)), 0
        ok[:] = False
        return np.zeros(len(ok), dtype=np.int64), 0

    @staticmethod
    def _links(links: np.ndarray, frame: tuple[np.ndarray, int], column: Any,
               ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`_link` for frames of several link types (``links`` per frame)."""
        n = len(ok)
        eth = links == LINK_ETHERNET
        ipoff = np.zeros(n, dtype=np.int64)
        et = np.zeros(n, dtype=np.int64)
        if eth.any():
            e0 = column(frame, 12, 2).astype(np.int64)
            tagged = eth & _among(e0, _VLAN)
            e1 = column(frame, 16, 2).astype(np.int64)
            et = np.where(eth, np.where(tagged, e1, e0), et)
            ipoff = np.where(eth, np.where(tagged, 18, 14), ipoff)
            ok &= ~(tagged & _among(e1, _VLAN))
        for lk, at, off in ((LINK_SLL2, 0, 20), (LINK_SLL, 14, 16)):
            m = links == lk
            if m.any():
                et = np.where(m, column(frame, at, 2), et)
                ipoff = np.where(m, off, ipoff)
        raw = _among(links, _RAW)
        if raw.any():
            v = column(frame, 0, 1) >> 4
            et = np.where(raw, np.where(v == 4, ETH_IPV4, np.where(v == 6, ETH_IPV6, 0)), et)
        ok &= eth | raw | (links == LINK_SLL2) | (links == LINK_SLL)
        return et, ipoff

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

    def _keys(self, lo: int, hi: int, wide: bool) -> tuple[list[np.ndarray], np.ndarray]:
        """Frames ``lo:hi``'s key words (two when ``wide`` is false: no IPv6 frame in the
        batch) and whether each frame's source is the higher endpoint."""
        a_hi, a_lo = self.a[0][lo:hi], self.a[1][lo:hi]
        b_hi, b_lo = self.b[0][lo:hi], self.b[1][lo:hi]
        sp = self.sport[lo:hi].view(np.uint64)
        dp = self.dport[lo:hi].view(np.uint64)
        # transport and family: proto * 2 + v6, or 512 + v6 for a frame that is not a packet
        kind = np.where(self.valid[lo:hi], self.proto[lo:hi], 256) * 2
        kind |= self.v6[lo:hi].astype(np.int64)
        kind = kind.view(np.uint64)
        if not wide:
            # IPv4 only (every high word 0): an endpoint is address << 16 | port, and the key
            # is two words: transport and family above the lower endpoint, the higher one
            ea = (a_lo << np.uint64(16)) | sp
            eb = (b_lo << np.uint64(16)) | dp
            gt = ea > eb
            return [np.minimum(ea, eb) | (kind << np.uint64(48)), np.maximum(ea, eb)], gt
        gt = (a_hi > b_hi) | ((a_hi == b_hi) & ((a_lo > b_lo) | ((a_lo == b_lo) & (sp > dp))))
        low_port = np.where(gt, dp, sp)
        return [(kind << np.uint64(32)) | (low_port << np.uint64(16)) | (sp ^ dp ^ low_port),
                np.where(gt, b_hi, a_hi), np.where(gt, b_lo, a_lo),
                np.where(gt, a_hi, b_hi), np.where(gt, a_lo, b_lo)], gt

    def _group(self) -> None:
        """Symmetric key per frame: (transport, family, lower endpoint, higher endpoint)."""
        n = self.n
        wide = bool(self.v6.any())  # IPv6 addresses: five key words, else two
        self.orient = np.empty(n, dtype=np.int64)
        # frames of one flow mostly follow each other: only a frame whose key is not its
        # predecessor's (the head of a run) is looked up; the rest of a run is its head's
        at_parts: list[np.ndarray] = []
        key_parts: list[list[np.ndarray]] = []
        prev: list[Any] = []
        for lo in range(0, n, _ROWS):
            hi = min(lo + _ROWS, n)
            cols, gt = self._keys(lo, hi, wide)
            self.orient[lo:hi] = gt
            heads = np.ones(hi - lo, dtype=bool)
            same = cols[0][1:] == cols[0][:-1]
            for col in cols[1:]:
                same &= col[1:] == col[:-1]
            np.logical_not(same, out=heads[1:])
            if prev:
                heads[0] = any(p != col[0] for p, col in zip(prev, cols, strict=True))
            prev = [col[-1] for col in cols]
            at = np.flatnonzero(heads)
            at_parts.append(at + lo)
            key_parts.append([col[at] for col in cols])
        if not key_parts:
            at_parts, key_parts = [np.zeros(0, dtype=np.int64)], [[np.zeros(0, dtype=np.uint64)] * 2]
        at = np.concatenate(at_parts)
        keys = [np.concatenate(part) for part in zip(*key_parts, strict=True)]
        with np.errstate(over="ignore"):
            h = keys[0] * _MIX
            for col in keys[1:]:
                h ^= h >> np.uint64(29)
                h = (h ^ col) * _MIX
            h ^= h >> np.uint64(32)
        lead = _leads(h, keys, len(at))  # per run, the first run with its key
        # groups numbered in order of first frame
        is_first = lead == np.arange(len(at))
        runs = np.diff(at, append=n)
        self.first = at[is_first]
        self.group = np.repeat((np.cumsum(is_first) - 1)[lead], runs)
        self.ngroups = len(self.first)

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
