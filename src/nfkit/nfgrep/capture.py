"""Capture files in, decoded packets out.

Owns: reading pcap and pcapng files (dpkt parses the file and interface
headers and the pcapng blocks; pcap records are walked here with one
precompiled struct, which is several times faster than building a dpkt object
per record), the link layers (Ethernet with VLAN tags, Linux cooked SLL and
SLL2, raw IP, BSD loopback), and IPv4/IPv6 down to the transport header.
Must not know: flows, streams, applications.

A truncated or corrupt file is read up to the damage: iteration ends there
and `CaptureReader.stop` says which packet, at which byte, and why.  Nothing
here raises on bad packet bytes; a packet that cannot be decoded is counted
in ``skipped`` and left out.
"""

from __future__ import annotations

import io
import ipaddress
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from nfkit.errors import InputError

# link types (pcap LINKTYPE_* numbers)
LINK_NULL = 0
LINK_ETHERNET = 1
LINK_RAW = 101
LINK_LOOP = 108
LINK_SLL = 113
LINK_IPV4 = 228
LINK_IPV6 = 229
LINK_SLL2 = 276
LINK_NAMES = {LINK_NULL: "BSD loopback", LINK_ETHERNET: "Ethernet", LINK_RAW: "raw IP",
              12: "raw IP", 14: "raw IP", LINK_LOOP: "OpenBSD loopback",
              LINK_SLL: "Linux cooked (SLL)", LINK_IPV4: "raw IPv4", LINK_IPV6: "raw IPv6",
              LINK_SLL2: "Linux cooked v2 (SLL2)"}

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
_VLAN = (0x8100, 0x88A8, 0x9100)
_IPV6_EXT = (0, 43, 60, 135, 139, 140)  # hop-by-hop, routing, dest opts, mobility, HIP, shim6
_ICMP_ID_TYPES = {1: frozenset((0, 8, 13, 14, 15, 16, 17, 18)), 58: frozenset((128, 129))}
MAX_RECORD = 1 << 18  # a record longer than this is corruption, not a packet

_U16 = struct.Struct("!H")
_IP4 = struct.Struct("!BxH2xHxB2x4s4s")  # vihl, total length, frag, proto, src, dst
_IP6 = struct.Struct("!4xHBx16s16s")  # payload length, next header, src, dst
_TCP = struct.Struct("!HHI4xBB")  # ports, seq, data offset, flags
_PORTS = struct.Struct("!HH")


@dataclass(frozen=True)
class CaptureStop:
    """Where and why reading a capture stopped before its end."""

    path: str
    packet: int  # 1-based number of the record that could not be read
    offset: int  # byte offset of that record in the file
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: stopped at packet {self.packet} (byte {self.offset}): {self.reason}"


class _Prefixed(io.RawIOBase):
    """A stream that is ``head`` and then what ``rest`` has left."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head = head
        self._rest = rest  # a file opened "rb"

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._rest.readinto(b)

    def fileno(self) -> int:
        return self._rest.fileno()

    def close(self) -> None:
        self._rest.close()
        super().close()


class CaptureReader:
    """Iterate ``(timestamp, linktype, frame)`` over one pcap or pcapng file.

    Raises `InputError` when the file cannot be opened or is not a capture at
    all; damage after the headers ends the iteration and sets ``stop``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed by close()
            self.size = os.fstat(self._file.fileno()).st_size
        except OSError as exc:
            raise InputError(f"capture {self.path}: {exc.strerror or exc}") from None
        magic = self._file.read(4)
        if self._file.seekable():
            self._file.seek(0)
        else:  # a pipe (/dev/stdin, <(...)): the bytes read are given back in front of the rest
            self._file = io.BufferedReader(_Prefixed(magic, self._file))
        self.packets = 0
        self.position = 0  # bytes consumed so far (for progress)
        self.stop: CaptureStop | None = None
        self.linktypes: set[int] = set()
        if magic == b"\x0a\x0d\x0d\x0a":
            self.format = "pcapng"
        elif len(magic) == 4 and (int.from_bytes(magic, "little") in _PCAP_MAGICS):
            self.format = "pcap"
        else:
            self._file.close()
            what = "empty file" if not magic else f"unknown magic {magic.hex()}"
            raise InputError(f"capture {self.path}: not a pcap or pcapng file ({what})")

    def __iter__(self) -> Iterator[tuple[float, int, bytes]]:
        for ts, link, buf, start, end in self.spans():
            yield ts, link, buf[start:end]

    def spans(self) -> Iterator[tuple[float, int, bytes, int, int]]:
        """Like iterating, but each frame is ``buf[start:end]`` (not copied out)."""
        return self._pcap() if self.format == "pcap" else self._pcapng_spans()

    def _pcapng_spans(self) -> Iterator[tuple[float, int, bytes, int, int]]:
        try:
            for ts, link, frame in self._pcapng():
                yield ts, link, frame, 0, len(frame)
        finally:
            self._file.close()

    def close(self) -> None:
        self._file.close()

    def pcap_map(self) -> tuple[bytes, int, struct.Struct, float] | None:
        """The whole pcap file mapped read-only, for a caller that walks the records itself.

        Returns ``(data, linktype, record header struct, timestamp divisor)``
        with the file header already checked (the first record starts at
        byte 24), or None for pcapng, an empty or too short file, or when the
        file cannot be mapped: iterate with `spans()` then.  The caller keeps
        ``packets``, ``position`` and ``stop`` as `spans()` would (see
        `stopped_at`).  Closes the file.
        """
        if self.format != "pcap" or self.size < _PCAP_HEADER + 16:
            return None
        import mmap

        try:
            data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None
        self._file.close()
        head = data[:_PCAP_HEADER]
        magic = int.from_bytes(head[:4], "little")
        little = magic in (_TCPDUMP_MAGIC, _TCPDUMP_MAGIC_NANO)
        divisor = 1e9 if magic in (_TCPDUMP_MAGIC_NANO, _PMUDPCT_MAGIC_NANO) else 1e6
        link = int.from_bytes(head[20:24], "little" if little else "big") & 0xFFFF
        try:
            self._supported(link)
        except InputError:
            data.close()
            raise
        return data, link, struct.Struct("<IIII" if little else ">IIII"), divisor  # type: ignore[return-value]

    def stopped_at(self, data: bytes, pos: int, rec: struct.Struct) -> None:
        """Record why a walk over `pcap_map` data ended at ``pos`` before the end (same words as `spans()`)."""
        rlen = rec.size
        if len(data) - pos < rlen:
            self._stopped(pos, f"record header truncated ({len(data) - pos} of {rlen} bytes)")
            return
        caplen = rec.unpack_from(data, pos)[2]
        if caplen > MAX_RECORD:
            self._stopped(pos, f"corrupt record: capture length {caplen}")
        else:
            self._stopped(pos, f"packet truncated ({len(data) - pos - rlen} of {caplen} bytes)")

    def _supported(self, link: int) -> None:
        """Refuse a link type `decode` does not know: no frame of it could be classified."""
        self.linktypes.add(link)
        if link not in LINK_NAMES:
            self._file.close()
            names = ", ".join(sorted(set(LINK_NAMES.values())))
            raise InputError(f"capture {self.path}: link type {link} is not supported "
                             f"(nfgrep reads {names})")

    def _stopped(self, offset: int, reason: str) -> None:
        self.stop = CaptureStop(self.path, self.packets + 1, offset, reason)

    # -- pcap ------------------------------------------------------------------

    def _pcap(self) -> Iterator[tuple[float, int, bytes, int, int]]:
        try:
            head = self._file.read(_PCAP_HEADER)
            if len(head) < _PCAP_HEADER:
                self._stopped(0, "file header truncated")
                return
            magic = int.from_bytes(head[:4], "little")
            little = magic in (_TCPDUMP_MAGIC, _TCPDUMP_MAGIC_NANO)
            nano = magic in (_TCPDUMP_MAGIC_NANO, _PMUDPCT_MAGIC_NANO)
            divisor = 1e9 if nano else 1e6
            linktype = int.from_bytes(head[20:24], "little" if little else "big")
            link = linktype & 0xFFFF  # upper bits: FCS length and flags
            self._supported(link)
            rec = struct.Struct("<IIII" if little else ">IIII")
            unpack_from = rec.unpack_from
            rlen = rec.size
            f = self._file
            base = len(head)  # file offset of buf[0]
            buf = b""
            pos = 0
            n = 0
            eof = False
            while True:
                if not eof and len(buf) - pos <= rlen + MAX_RECORD:
                    more = f.read(4 << 20)
                    if more:
                        buf = buf[pos:] + more
                        base += pos
                        pos = 0
                        self.position = base
                        continue
                    eof = True
                # records starting before ``safe`` are whole: no checks but the length
                safe = len(buf) - rlen - MAX_RECORD if not eof else 0
                while pos < safe:
                    sec, frac, caplen, _wire = unpack_from(buf, pos)
                    if caplen > MAX_RECORD:
                        break
                    end = pos + rlen + caplen
                    n += 1
                    yield sec + frac / divisor, link, buf, pos + rlen, end
                    pos = end
                self.packets = n
                if pos < safe:  # left the loop on a corrupt length
                    self._stopped(base + pos, f"corrupt record: capture length {caplen}")
                    return
                if not eof:
                    continue
                # the last records, with every check
                if pos == len(buf):
                    break
                if len(buf) - pos < rlen:
                    self._stopped(base + pos, f"record header truncated ({len(buf) - pos} of {rlen} bytes)")
                    break
                sec, frac, caplen, _wire = unpack_from(buf, pos)
                if caplen > MAX_RECORD:
                    self._stopped(base + pos, f"corrupt record: capture length {caplen}")
                    break
                end = pos + rlen + caplen
                if end > len(buf):
                    self._stopped(base + pos, f"packet truncated ({len(buf) - pos - rlen} of {caplen} bytes)")
                    break
                n += 1
                self.packets = n
                self.position = base + end
                yield sec + frac / divisor, link, buf, pos + rlen, end
                pos = end
            self.packets = n
            self.position = base + pos
        finally:
            self._file.close()

    # -- pcapng -----------------------------------------------------------------

    def _pcapng(self) -> Iterator[tuple[float, int, bytes]]:
        f = self._file
        little = True
        interfaces: list[tuple[int, float, int]] = []  # linktype, divisor, offset seconds
        offset = 0
        import dpkt  # pcapng only: dpkt's block classes (not loaded for pcap files)

        ng = dpkt.pcapng
        while True:
            head = f.read(8)
            if not head:
                break
            if len(head) < 8:
                self._stopped(offset, "block header truncated")
                break
            if head[:4] == b"\x0a\x0d\x0d\x0a":  # section header: byte order may change
                bom = f.read(4)
                if bom == b"\x4d\x3c\x2b\x1a":
                    little = True
                elif bom == b"\x1a\x2b\x3c\x4d":
                    little = False
                else:
                    self._stopped(offset, "corrupt section header (byte-order magic)")
                    break
                head += bom
                interfaces = []
            btype, blen = struct.unpack("<II" if little else ">II", head[:8])
            if blen < 12 or blen % 4 or blen > MAX_RECORD + 64:
                self._stopped(offset, f"corrupt block: length {blen}")
                break
            body = f.read(blen - len(head))
            if len(body) < blen - len(head):
                self._stopped(offset, f"block truncated ({len(head) + len(body)} of {blen} bytes)")
                break
            block = head + body
            try:
                if btype == ng.PCAPNG_BT_SHB:
                    (ng.SectionHeaderBlockLE if little else ng.SectionHeaderBlock)(block)
                elif btype == ng.PCAPNG_BT_IDB:
                    idb = (ng.InterfaceDescriptionBlockLE if little else ng.InterfaceDescriptionBlock)(block)
                    divisor, tsoff = 1e6, 0
                    for opt in idb.opts:
                        if opt.code == ng.PCAPNG_OPT_IF_TSRESOL and opt.data:
                            v = opt.data[0]
                            divisor = float((2 if v & 0x80 else 10) ** (v & 0x7F))
                        elif opt.code == ng.PCAPNG_OPT_IF_TSOFFSET and len(opt.data) == 8:
                            tsoff = struct.unpack("<q" if little else ">q", opt.data)[0]
                    interfaces.append((idb.linktype, divisor, tsoff))
                    self.linktypes.add(idb.linktype)
                elif btype == ng.PCAPNG_BT_EPB:
                    epb = (ng.EnhancedPacketBlockLE if little else ng.EnhancedPacketBlock)(block)
                    if epb.iface_id >= len(interfaces):
                        raise ValueError(f"packet on undeclared interface {epb.iface_id}")
                    link, divisor, tsoff = interfaces[epb.iface_id]
                    if link not in LINK_NAMES:  # an interface without packets may be of any type
                        self._supported(link)
                    self.packets += 1
                    self.position = offset + blen
                    offset += blen
                    yield tsoff + ((epb.ts_high << 32) | epb.ts_low) / divisor, link, epb.pkt_data
                    continue
                elif btype == ng.PCAPNG_BT_PB:
                    pb = (ng.PacketBlockLE if little else ng.PacketBlock)(block)
                    if not interfaces:
                        raise ValueError("packet before any interface")
                    link, divisor, tsoff = interfaces[0]
                    if link not in LINK_NAMES:
                        self._supported(link)
                    self.packets += 1
                    self.position = offset + blen
                    offset += blen
                    yield tsoff + ((pb.ts_high << 32) | pb.ts_low) / divisor, link, pb.pkt_data
                    continue
            except (dpkt.UnpackError, ValueError, struct.error, IndexError) as exc:
                self._stopped(offset, f"corrupt block type {btype:#x}: {exc}")
                break
            offset += blen
            self.position = offset


def pcap_offsets(data: bytes, pos: int, count: int, little: bool,
                 until: int | None = None) -> tuple[list[int], int, bool]:
    """Offsets of up to ``count`` whole pcap records from ``pos`` in mapped file ``data``.

    ``until``: stop (not ``stopped``) at the first record starting at or after it.

    Returns ``(offsets, next position, stopped)``; ``stopped`` when the file
    ends or a record is damaged at the next position (`CaptureReader.stopped_at`
    says why).  Only the capture length is read per record: the rest of each
    header is read by the caller, in bulk.
    """
    limit = len(data)
    offsets: list[int] = []
    append = offsets.append
    last = limit - 16
    stop_at = limit + 1 if until is None else until
    if little and sys.byteorder == "little":
        # four 32-bit views, one per alignment: a capture length is one index, no unpacking
        mv = memoryview(data)
        views = [mv[k:k + (limit - k) // 4 * 4].cast("I") for k in range(4)]
        try:
            for _ in range(count):
                if pos >= stop_at:
                    return offsets, pos, False
                if pos > last:
                    return offsets, pos, True
                q = pos + 8
                nxt = pos + 16 + views[q & 3][q >> 2]
                if nxt > limit or nxt - pos > MAX_RECORD + 16:
                    return offsets, pos, True
                append(pos)
                pos = nxt
        finally:
            for v in views:
                v.release()
            mv.release()
        return offsets, pos, False
    caplen_at = struct.Struct("<I" if little else ">I").unpack_from
    for _ in range(count):
        if pos >= stop_at:
            return offsets, pos, False
        if pos > last:
            return offsets, pos, True
        nxt = pos + 16 + caplen_at(data, pos + 8)[0]
        if nxt > limit or nxt - pos > MAX_RECORD + 16:
            return offsets, pos, True
        append(pos)
        pos = nxt
    return offsets, pos, False


WALK_BLOCK = 1 << 17  # bytes of a file one speculative walker of `pcap_records` covers
WALK_WINDOW = 2048  # bytes at a block's start searched for its first record


def pcap_records(data: Any, pos: int, end: int, little: bool, divisor: float,
                 block: int = WALK_BLOCK, window: int = WALK_WINDOW) -> tuple[Any, int, bool]:
    """The record offsets `pcap_offsets` gives from ``pos``, for the records starting before ``end``.

    Returns ``(offsets as an int64 array, next position, stopped)`` with
    `pcap_offsets`' meaning (``stopped``: the file ends or is damaged at the
    next position).  The chain of records (each starts where the previous
    one's capture length ends it) is walked by numpy for many blocks of the
    file at once: each block's walker starts at the first plausible record
    header near the block's start (a guess), every walker steps to the end
    of its block, and the guesses are then checked in file order: a block
    is taken from the walk only from the record where the true chain (from
    ``pos``) enters it, and walked again one record at a time when the
    walker never met that record (a wrong guess, or payload that looks like
    a header: slower, never wrong).
    """
    import numpy as np

    limit = len(data)
    end = min(end, limit)
    order = "<" if little else ">"
    if pos >= end:
        return np.zeros(0, dtype=np.int64), pos, pos > limit - 16
    if limit < 16:
        return np.zeros(0, dtype=np.int64), pos, True
    u32 = np.ndarray(shape=(limit - 3,), dtype=np.dtype(order + "u4"), buffer=data, strides=(1,))
    u8 = np.frombuffer(data, dtype=np.uint8)
    nb = -(-(end - pos) // block)
    bstart = pos + np.arange(nb, dtype=np.int64) * block
    bend = np.minimum(bstart + block, end)
    # each block's guess: the first offset near its start that reads as a record header
    # (see `_guesses`); a walker is started only inside its own block, so that every record a
    # walker meets lies in its block and the walk's records sorted are the blocks' in turn
    starts = np.full(nb, -1, dtype=np.int64)
    starts[0] = pos
    rows = np.flatnonzero(bstart + window + 16 <= limit)
    rows = rows[rows > 0]
    if len(rows):
        sec0 = int(u32[pos]) if pos <= limit - 4 else 0
        starts[rows] = _guesses(u8, u32, bstart[rows], block, window, little, divisor, sec0)
    last = limit - 16
    lim_all = np.minimum(bend, last + 1)
    outside = starts >= lim_all
    outside[0] = False  # the first walker (from ``pos``) may start past ``last``: it dies at once
    starts[outside] = -1
    # every walker to the end of its block, in lock step.  A walker leaves at the first record
    # past its block or past the last place a record can start (``last``; so every position
    # it reads a length at is inside the file), or dies at a length no record has; the common
    # round is five array operations: one length gathered, one test for all three ways out
    # (a length no record has ends past the block when a block is no longer than a record)
    caplen_at = np.ndarray(shape=(limit - 11,), dtype=u32.dtype, buffer=data, offset=8, strides=(1,))
    long_blocks = block > MAX_RECORD + 16
    wid = np.flatnonzero(starts >= 0)
    cur = starts[wid]
    lim = lim_all[wid]
    exits = np.full(nb, -1, dtype=np.int64)
    dead = np.zeros(nb, dtype=bool)
    if len(cur) and cur[0] > last:  # only the first walker (from ``pos``) may start there
        exits[wid[0]] = cur[0]
        dead[wid[0]] = True
        wid, cur, lim = wid[1:], cur[1:], lim[1:]
    seen: list[Any] = []
    while len(wid):
        caplen = caplen_at[cur]
        nxt = cur + 16
        nxt += caplen
        leave = nxt >= lim  # past the block, or past the file's end (lim <= limit)
        if long_blocks:
            leave |= caplen > MAX_RECORD
        if leave.any():
            bad = (caplen > MAX_RECORD) | (nxt > limit)
            if bad.any():
                exits[wid[bad]] = cur[bad]
                dead[wid[bad]] = True
                keep = ~bad
                wid, cur, nxt, lim = wid[keep], cur[keep], nxt[keep], lim[keep]
            seen.append(cur)
            out = nxt >= lim
            exits[wid[out]] = nxt[out]
            keep = ~out
            wid, cur, lim = wid[keep], nxt[keep], lim[keep]
        else:
            seen.append(cur)
            cur = nxt
    # what the walkers met, in file order: block by block, each block's walker's records
    met = np.sort(np.concatenate(seen)) if seen else np.zeros(0, dtype=np.int64)
    # the true chain: most often every block's walker started at the record where the previous
    # block's walker left (then the walk is the chain)
    if nb == 1 or ((starts[1:] == exits[:-1]) & ~dead[:-1] & (exits[:-1] < bend[1:])).all():
        entry = int(exits[-1])
        return met, entry, bool(dead[-1]) or entry > last
    # else block by block: a block is taken from the record where the chain enters it
    base = np.append(np.searchsorted(met, bstart), len(met))
    pieces: list[Any] = []
    entry = pos
    blocks_end = bend.tolist()
    starts_l, exits_l, dead_l, base_l = starts.tolist(), exits.tolist(), dead.tolist(), base.tolist()
    for b in range(nb):
        if entry >= blocks_end[b]:
            continue  # a record spans the whole block
        lo, hi_ = base_l[b], base_l[b + 1]
        if starts_l[b] == entry:
            at = lo
        else:
            at = lo + int(np.searchsorted(met[lo:hi_], entry))
            if at >= hi_ or met[at] != entry:
                at = -1
        if at >= 0:
            pieces.append(met[at:hi_])
            entry = exits_l[b]
            if dead_l[b]:
                return np.concatenate(pieces), entry, True
            continue
        offsets, entry, stopped = pcap_offsets(data, entry, 1 << 62, little, until=blocks_end[b])
        pieces.append(np.array(offsets, dtype=np.int64))
        if stopped:
            return np.concatenate(pieces), entry, True
    got = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    return got, entry, entry > last


def _guesses(u8: Any, u32: Any, at: Any, block: int, window: int, little: bool, divisor: float,
             sec0: int) -> Any:
    """Per block starting at ``at`` (evenly ``block`` apart, each with ``window + 16`` bytes
    in the file), the first offset in its window that reads as a plausible record header, or -1.

    First the offsets whose seconds share their high 16 bits with ``sec0`` (the first
    record's) are tried (one comparison per offset); blocks where none of them passes are
    searched again with the general test: the high byte of the capture and wire lengths
    zero, of the sub-second too when its divisor allows, the seconds' high byte within one
    of the first record's; then the whole test.
    """
    import numpy as np

    limit = len(u8)
    nrows = len(at)
    found = np.full(nrows, -1, dtype=np.int64)

    def plausible(k: Any) -> Any:
        cap = u32[k + 8]
        good = (cap <= MAX_RECORD) & (k + 16 + cap <= limit) & (u32[k + 4] < divisor) \
            & (u32[k + 12] >= cap)
        good &= np.abs(u32[k].astype(np.int64) - sec0) < (1 << 26)
        return good

    def first_plausible(cand: Any, rows: Any) -> None:
        """For ``rows`` (indexes into ``at``) with candidate offsets ``cand`` (a row per
        block), the first candidate that passes `plausible`."""
        c = cand.argmax(axis=1)
        r = np.flatnonzero(cand[np.arange(len(rows)), c])
        k = at[rows[r]] + c[r]
        good = plausible(k)
        found[rows[r[good]]] = k[good]
        again = r[~good]
        if len(again):
            r, c = np.nonzero(cand[again])
            k = at[rows[again[r]]] + c
            good = plausible(k)
            r, k = again[r[good]], k[good]
            if len(r):
                firsts = np.flatnonzero(np.diff(r, prepend=-1))
                found[rows[r[firsts]]] = k[firsts]

    first = int(at[0])
    view = np.lib.stride_tricks.as_strided(u8[first:], shape=(nrows, window + 16), strides=(block, 1))
    top = 3 if little else 0  # the seconds' high byte; the next one down beside it
    down = 2 if little else 1
    cand = view[:, top:top + window] == np.uint8((sec0 >> 24) & 0xFF)
    cand &= view[:, down:down + window] == np.uint8((sec0 >> 16) & 0xFF)
    first_plausible(cand, np.arange(nrows))
    rows = np.flatnonzero(found < 0)
    if len(rows):
        view = view[rows]
        zeros: tuple[int, ...] = (11, 15) if little else (8, 12)
        if divisor <= 1 << 24:
            zeros += (7,) if little else (4,)
        cand = (view[:, top:top + window] - np.uint8(((sec0 >> 24) - 1) & 0xFF)) <= 2
        for z in zeros:
            cand &= view[:, z:z + window] == 0
        first_plausible(cand, rows)
    return found


# pcap file header: magic, version 2.4, zone, sigfigs, snaplen, linktype (24 bytes)
_PCAP_HEADER = 24
_TCPDUMP_MAGIC, _TCPDUMP_MAGIC_NANO = 0xA1B2C3D4, 0xA1B23C4D  # as read little-endian
_PMUDPCT_MAGIC, _PMUDPCT_MAGIC_NANO = 0xD4C3B2A1, 0x4D3CB2A1  # the same, big-endian files
_PCAP_MAGICS = {_TCPDUMP_MAGIC, _TCPDUMP_MAGIC_NANO, _PMUDPCT_MAGIC, _PMUDPCT_MAGIC_NANO}


# -- packet decoding --------------------------------------------------------------

_ADDR_TEXT: dict[bytes, str] = {}  # address bytes -> text: a capture or a worker sees few hosts


def address_text(raw: bytes) -> str:
    """An address's text (4 or 16 bytes), cached."""
    text = _ADDR_TEXT.get(raw)
    if text is None:
        if len(_ADDR_TEXT) >= 65536:
            _ADDR_TEXT.clear()
        text = _ADDR_TEXT[raw] = str(ipaddress.ip_address(raw))
    return text


def endpoint_text(raw: bytes, port: int) -> str:
    """``ip:port`` as `nfkit.flow.table.FlowTuple.endpoint` writes it (IPv6 in brackets)."""
    return f"[{address_text(raw)}]:{port}" if len(raw) == 16 else f"{address_text(raw)}:{port}"


Decoded = tuple[int, bytes, bytes, int, int, int, int, bytes, int]
"""proto, src, dst, sport, dport, tcp flags, tcp seq, payload, IP length."""


def decode(link: int, frame: bytes) -> Decoded | None:
    """Decode one frame down to its transport header; None when it is not IP or is cut short.

    Non-first fragments (no transport header) give None too.  For ICMP echo
    and similar messages the identifier stands for both ports; other
    transports get ports 0.
    """
    try:
        # link layers with an ethertype: where it sits, where the payload starts
        if link == LINK_ETHERNET:
            at, off = 12, 14
        elif link == LINK_SLL2:
            at, off = 0, 20
        elif link == LINK_SLL:
            at, off = 14, 16
        else:
            at = -1
        if at >= 0:
            et = _U16.unpack_from(frame, at)[0]
            while et in _VLAN:  # 802.1Q / 802.1ad tags: the real ethertype follows each
                et = _U16.unpack_from(frame, off + 2)[0]
                off += 4
        elif link in (LINK_RAW, 12, 14, LINK_IPV4, LINK_IPV6):
            off = 0
            v = frame[0] >> 4
            et = ETH_IPV4 if v == 4 else ETH_IPV6 if v == 6 else 0
        elif link in (LINK_NULL, LINK_LOOP):
            off = 4
            fam = int.from_bytes(frame[:4], "little" if link == LINK_NULL else "big")
            if fam not in (2, 24, 28, 30):
                fam = int.from_bytes(frame[:4], "big" if link == LINK_NULL else "little")
            et = ETH_IPV4 if fam == 2 else ETH_IPV6 if fam in (24, 28, 30) else 0
        else:
            return None
        if et == ETH_IPV4:
            vihl, total, frag, proto, src, dst = _IP4.unpack_from(frame, off)
            if frag & 0x1FFF:
                return None  # a later fragment: no transport header
            l4 = off + (vihl & 0x0F) * 4
            end = off + total
            if end > len(frame) or total < (vihl & 0x0F) * 4:
                end = len(frame)
        elif et == ETH_IPV6:
            plen, proto, src, dst = _IP6.unpack_from(frame, off)
            l4 = off + 40
            end = l4 + plen
            if end > len(frame) or plen == 0:
                end = len(frame)
            while proto in _IPV6_EXT or proto == 44 or proto == 51:
                nxt, hlen = frame[l4], frame[l4 + 1]
                if proto == 44:
                    if _U16.unpack_from(frame, l4 + 2)[0] & 0xFFF8:
                        return None
                    l4 += 8
                elif proto == 51:
                    l4 += (hlen + 2) * 4
                else:
                    l4 += (hlen + 1) * 8
                proto = nxt
        else:
            return None
        size = end - off
        if proto == 6:
            sport, dport, seq, doff, flags = _TCP.unpack_from(frame, l4)
            return proto, src, dst, sport, dport, flags, seq, frame[l4 + (doff >> 4) * 4:end], size
        if proto == 17:
            sport, dport = _PORTS.unpack_from(frame, l4)
            return proto, src, dst, sport, dport, 0, 0, frame[l4 + 8:end], size
        if proto == 1 or proto == 58:
            ident = _U16.unpack_from(frame, l4 + 4)[0] if frame[l4] in _ICMP_ID_TYPES[proto] else 0
            return proto, src, dst, ident, ident, 0, 0, b"", size
        return proto, src, dst, 0, 0, 0, 0, b"", size
    except (struct.error, IndexError):
        return None
