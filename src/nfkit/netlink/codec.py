"""Sans-I/O netlink codec: bytes in, messages and attributes out, and back.

This module owns the wire format of netlink (nlmsghdr, nfgenmsg, attributes,
alignment, the NLA_F_NESTED / NLA_F_NET_BYTEORDER flags, NLMSG_ERROR with its
extended ACK) and the attribute tables (`AttrSet`) that describe a family's
attributes as data.  It must not know about sockets, sequence-number
bookkeeping on the wire, or any particular netfilter family.

Decoding works on memoryviews of the caller's buffer and never copies a
payload until a value is asked for.  Every malformed input raises
`nfkit.errors.DecodeError` and nothing else.
"""

from __future__ import annotations

import enum
import itertools
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from nfkit.errors import DecodeError
from nfkit.netlink.consts import (
    NFNETLINK_V0,
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES,
    NLA_F_NESTED,
    NLA_F_NET_BYTEORDER,
    NLA_TYPE_MASK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_REQUEST,
    NLMSGERR_ATTR_MSG,
    NLMSGERR_ATTR_OFFS,
)

NLMSG_HDRLEN = 16
NFGEN_HDRLEN = 4
NLA_HDRLEN = 4

_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NFGEN = struct.Struct("!BBH")  # family, version, res_id (big endian)
_NLA = struct.Struct("=HH")
_U32_AT = struct.Struct("=I")
_U16_AT = struct.Struct("=H")
_ERRNO = struct.Struct("=i")

# attribute header + value, one pack per attribute on the hot path
_A_U8 = struct.Struct("=HHB3x")
_A_U16 = struct.Struct("=HHH2x")
_A_U32 = struct.Struct("=HHI")
_A_U64 = struct.Struct("=HHQ")
_A_S32 = struct.Struct("=HHi")
_A_S64 = struct.Struct("=HHq")
# network-order values: host-order header, then the value big endian
_A_BE16 = (_NLA, struct.Struct(">H2x"))
_A_BE32 = (_NLA, struct.Struct(">I"))
_A_BE64 = (_NLA, struct.Struct(">Q"))
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")

# a random start in [1, 2**30) (from os.urandom: `random`'s import is dearer than a
# one-shot command's encoding of a few messages)
_seq_counter = itertools.count(1 + int.from_bytes(os.urandom(4), "little") % ((1 << 30) - 1))


def align4(n: int) -> int:
    return (n + 3) & ~3


def next_seq() -> int:
    """A fresh sequence number (process-wide, 32-bit, never 0)."""
    return (next(_seq_counter) & 0x7FFFFFFF) or next_seq()


def next_seqs(n: int) -> range:
    """``n`` fresh consecutive sequence numbers (for batches of thousands of messages)."""
    if n <= 0:
        return range(0)
    first = next(_seq_counter)
    last = next(itertools.islice(_seq_counter, n - 2, None)) if n > 1 else first
    if (first & 0x7FFFFFFF) == 0 or (last & 0x7FFFFFFF) < (first & 0x7FFFFFFF):
        return next_seqs(n)  # the 31-bit space wrapped: take the next block
    return range(first & 0x7FFFFFFF, (last & 0x7FFFFFFF) + 1)


# ---------------------------------------------------------------- encoding


class MessageWriter:
    """One growing buffer holding one or more netlink messages.

    `begin` writes the headers and returns the message's sequence number,
    attribute methods append to the open message, `end` closes it.
    """

    __slots__ = ("buffer", "seqs", "_start")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.seqs: list[tuple[int, int]] = []  # (seq, start offset) per message
        self._start = -1

    def __len__(self) -> int:
        return len(self.buffer)

    def begin(
        self,
        msg_type: int,
        flags: int = NLM_F_REQUEST,
        family: int = 0,
        res_id: int = 0,
        seq: int | None = None,
        nfgen: bool = True,
        version: int = NFNETLINK_V0,
    ) -> int:
        if self._start >= 0:
            raise RuntimeError("MessageWriter.begin while a message is open")
        if seq is None:
            seq = next_seq()
        buf = self.buffer
        self._start = start = len(buf)
        buf += _HDR.pack(0, msg_type, flags, seq, 0)
        if nfgen:
            buf += _NFGEN.pack(family, version, res_id)
        self.seqs.append((seq, start))
        return seq

    def end(self) -> None:
        start = self._start
        if start < 0:
            raise RuntimeError("MessageWriter.end without begin")
        _U32_AT.pack_into(self.buffer, start, len(self.buffer) - start)
        self._start = -1

    def message(self, index: int) -> memoryview:
        """The bytes of message ``index`` (closed messages only)."""
        start = self.seqs[index][1]
        (length,) = _U32_AT.unpack_from(self.buffer, start)
        return memoryview(self.buffer)[start : start + length]

    def set_flags(self, extra: int) -> None:
        """OR ``extra`` into the flags of every message in the buffer."""
        buf = self.buffer
        for _, start in self.seqs:
            (flags,) = _U16_AT.unpack_from(buf, start + 6)
            _U16_AT.pack_into(buf, start + 6, flags | extra)

    def here(self) -> int:
        """Offset of the next byte within the open message (for `Template` fields)."""
        return len(self.buffer) - self._start

    # attributes ---------------------------------------------------------
    def u8(self, t: int, v: int) -> None:
        self.buffer += _A_U8.pack(5, t, v)

    def u16(self, t: int, v: int) -> None:
        self.buffer += _A_U16.pack(6, t, v)

    def u32(self, t: int, v: int) -> None:
        self.buffer += _A_U32.pack(8, t, v)

    def u64(self, t: int, v: int) -> None:
        self.buffer += _A_U64.pack(12, t, v)

    def s32(self, t: int, v: int) -> None:
        self.buffer += _A_S32.pack(8, t, v)

    def s64(self, t: int, v: int) -> None:
        self.buffer += _A_S64.pack(12, t, v)

    def be16(self, t: int, v: int, flag: bool = False) -> None:
        self.buffer += _A_BE16[0].pack(6, t | (NLA_F_NET_BYTEORDER if flag else 0))
        self.buffer += _A_BE16[1].pack(v)

    def be32(self, t: int, v: int, flag: bool = False) -> None:
        self.buffer += _A_BE32[0].pack(8, t | (NLA_F_NET_BYTEORDER if flag else 0))
        self.buffer += _A_BE32[1].pack(v)

    def be64(self, t: int, v: int, flag: bool = False) -> None:
        self.buffer += _A_BE64[0].pack(12, t | (NLA_F_NET_BYTEORDER if flag else 0))
        self.buffer += _A_BE64[1].pack(v)

    def binary(self, t: int, b: bytes | bytearray | memoryview) -> None:
        n = len(b)
        buf = self.buffer
        buf += _NLA.pack(NLA_HDRLEN + n, t)
        buf += b
        buf += _PAD[n & 3]

    def string(self, t: int, s: str) -> None:
        self.binary(t, s.encode() + b"\0")

    def string_nonul(self, t: int, s: str) -> None:
        self.binary(t, s.encode())

    def flag(self, t: int) -> None:
        self.buffer += _NLA.pack(NLA_HDRLEN, t)

    def raw(self, b: bytes | bytearray | memoryview) -> None:
        """Append already-encoded, already-aligned attribute bytes."""
        self.buffer += b

    def nest_start(self, t: int) -> int:
        off = len(self.buffer)
        self.buffer += _NLA.pack(0, t | NLA_F_NESTED)
        return off

    def nest_end(self, off: int) -> None:
        _U16_AT.pack_into(self.buffer, off, len(self.buffer) - off)

    @contextmanager
    def nest(self, t: int) -> Iterator[None]:
        off = self.nest_start(t)
        yield
        self.nest_end(off)


class Batch(MessageWriter):
    """An nfnetlink batch: BATCH_BEGIN, the messages, and (when sent) BATCH_END.

    All messages in a batch are one transaction for the subsystem ``res_id``.
    """

    __slots__ = ("res_id", "begin_seq", "closed")

    def __init__(self, res_id: int = NFNL_SUBSYS_NFTABLES) -> None:
        super().__init__()
        self.res_id = res_id
        self.begin_seq = MessageWriter.begin(self, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, res_id=res_id)
        MessageWriter.end(self)
        self.closed = False

    def close(self) -> None:
        """Append BATCH_END (idempotent)."""
        if not self.closed:
            MessageWriter.begin(self, NFNL_MSG_BATCH_END, NLM_F_REQUEST, res_id=self.res_id)
            MessageWriter.end(self)
            self.closed = True

    def index_of(self, seq: int) -> int | None:
        """Position of the message with ``seq`` among the batch's own messages (0-based)."""
        for i, (s, _) in enumerate(self.seqs):
            if s == seq:
                return i - 1 if 0 < i <= self.count() else None
        return None

    def count(self) -> int:
        """Number of messages between BATCH_BEGIN and BATCH_END."""
        return len(self.seqs) - 1 - (1 if self.closed else 0)


# Standalone attribute bytes: for pre-encoded runs handed to `MessageWriter.raw`
# and for templates built once and copied (nf_tables expressions).  The same
# headers, padding and flags as the writer's methods above.

def attr_bytes(t: int, payload: bytes | bytearray | memoryview) -> bytes:
    """One attribute: header, payload, padding."""
    n = NLA_HDRLEN + len(payload)
    return _NLA.pack(n, t) + bytes(payload) + _PAD[n & 3]


def nest_bytes(t: int, *parts: bytes) -> bytes:
    """A nested attribute (NLA_F_NESTED) around already-aligned ``parts``."""
    body = b"".join(parts)
    return _NLA.pack(NLA_HDRLEN + len(body), t | NLA_F_NESTED) + body


def u8_attr(t: int, v: int) -> bytes:
    return _A_U8.pack(5, t, v)


def be16_attr(t: int, v: int) -> bytes:
    return _A_BE16[0].pack(6, t) + _A_BE16[1].pack(v)


def be32_attr(t: int, v: int) -> bytes:
    return _A_BE32[0].pack(8, t) + _A_BE32[1].pack(v & 0xFFFFFFFF)


def be64_attr(t: int, v: int) -> bytes:
    return _A_BE64[0].pack(12, t) + _A_BE64[1].pack(v)


def string_attr(t: int, s: str) -> bytes:
    return attr_bytes(t, s.encode() + b"\0")


class Template:
    """One encoded message reused as a shape: copy it, patch seq and values.

    Encoding thousands of similar messages (rules, conntrack entries) this way
    costs one bytes copy and a few `pack_into` per message instead of a full
    encode.  ``fields`` are (offset within the message, struct format) of the
    values to patch, in the order `emit` takes them; take offsets with
    `MessageWriter.here()` (+4 for an attribute's value).
    """

    __slots__ = ("fields", "message", "packers", "size")

    def __init__(self, message: bytes | bytearray | memoryview, fields: list[tuple[int, str]]) -> None:
        self.message = bytes(message)
        self.size = len(self.message)
        self.fields = list(fields)
        self.packers = [(off, struct.Struct(fmt).pack_into) for off, fmt in fields]

    def compiled(self) -> Callable[..., int]:
        """`emit` (without ``seq``) as one generated function that packs the whole message
        in one struct call, for hot loops; the same bytes.  Templates with a native-order
        multi-byte field get `emit` itself."""
        parts: list[str] = [">"]
        args: list[str] = []
        consts: list[bytes] = []
        pos = 0
        for i, (off, fmt) in enumerate(sorted(self.fields)):
            order, body = (fmt[0], fmt[1:]) if fmt[0] in "<>!=@" else ("", fmt)
            if off < pos or (order not in ">!" and any(c in body for c in "hHiIlLqQnNefd")):
                return self.emit
            if off > pos:
                parts.append(f"{off - pos}s")
                args.append(f"C{len(consts)}")
                consts.append(self.message[pos:off])
            parts.append(body)
            args.append(f"a{i}")
            pos = off + struct.calcsize(">" + body)
        if pos < self.size:
            parts.append(f"{self.size - pos}s")
            args.append(f"C{len(consts)}")
            consts.append(self.message[pos:])
        by_offset = sorted(range(len(self.fields)), key=lambda i: self.fields[i][0])
        params = ", ".join(f"a{by_offset.index(i)}" for i in range(len(self.fields)))
        src = (f"def emit(w, {params}):\n    buf = w.buffer\n    start = len(buf)\n"
               f"    buf += PACK({', '.join(args)})\n    seq = next_seq()\n    SEQ(buf, start + 8, seq)\n"
               f"    w.seqs.append((seq, start))\n    return seq\n")
        env: dict[str, Any] = {"PACK": struct.Struct("".join(parts)).pack, "SEQ": _U32_AT.pack_into,
                               "next_seq": next_seq, **{f"C{i}": c for i, c in enumerate(consts)}}
        namespace: dict[str, Any] = {}
        exec(src, env, namespace)  # noqa: S102 - generated above from the template's fields
        return namespace["emit"]  # type: ignore[no-any-return]

    def emit(self, w: MessageWriter, *values: Any, seq: int | None = None) -> int:
        """Append a copy with ``values`` patched in; return its sequence number."""
        buf = w.buffer
        start = len(buf)
        buf += self.message
        if seq is None:
            seq = next_seq()
        _U32_AT.pack_into(buf, start + 8, seq)
        for (off, pack), value in zip(self.packers, values, strict=False):
            pack(buf, start + off, value)
        w.seqs.append((seq, start))
        return seq


# ---------------------------------------------------------------- decoding


class Message:
    """One netlink message, a view into the buffer it was parsed from."""

    __slots__ = ("type", "flags", "seq", "pid", "payload")

    def __init__(self, type: int, flags: int, seq: int, pid: int, payload: memoryview) -> None:
        self.type = type
        self.flags = flags
        self.seq = seq
        self.pid = pid
        self.payload = payload

    def __repr__(self) -> str:
        return (f"Message(type={self.type:#x}, flags={self.flags:#x}, seq={self.seq}, "
                f"len={len(self.payload)})")

    def _nfgen(self) -> tuple[int, int, int]:
        if len(self.payload) < NFGEN_HDRLEN:
            raise DecodeError("message too short for nfgenmsg")
        return _NFGEN.unpack_from(self.payload, 0)  # type: ignore[return-value]

    @property
    def family(self) -> int:
        return self._nfgen()[0]

    @property
    def version(self) -> int:
        return self._nfgen()[1]

    @property
    def res_id(self) -> int:
        return self._nfgen()[2]

    @property
    def attrs(self) -> memoryview:
        """The attribute stream after nfgenmsg."""
        if len(self.payload) < NFGEN_HDRLEN:
            raise DecodeError("message too short for nfgenmsg")
        return self.payload[NFGEN_HDRLEN:]

    def copy(self) -> Message:
        """The same message holding its own bytes (survives buffer reuse)."""
        return Message(self.type, self.flags, self.seq, self.pid, memoryview(bytes(self.payload)))


def parse_messages(buf: bytes | bytearray | memoryview) -> Iterator[Message]:
    """Split a buffer into netlink messages (views, no copies)."""
    mv = memoryview(buf)
    n = len(mv)
    off = 0
    unpack = _HDR.unpack_from
    while off < n:
        if n - off < NLMSG_HDRLEN:
            raise DecodeError("truncated netlink message header", off)
        length, mtype, flags, seq, pid = unpack(mv, off)
        if length < NLMSG_HDRLEN or off + length > n:
            raise DecodeError(f"netlink message length {length} runs past the buffer", off)
        yield Message(mtype, flags, seq, pid, mv[off + NLMSG_HDRLEN : off + length])
        off += (length + 3) & ~3


def iter_attrs(mv: memoryview) -> Iterator[tuple[int, memoryview]]:
    """Yield (type without flag bits, payload view) for each attribute."""
    n = len(mv)
    off = 0
    unpack = _NLA.unpack_from
    while off < n:
        if n - off < NLA_HDRLEN:
            raise DecodeError("truncated attribute header", off)
        alen, atype = unpack(mv, off)
        if alen < NLA_HDRLEN or off + alen > n:
            raise DecodeError(f"attribute {atype & NLA_TYPE_MASK} length {alen} runs past its container", off)
        yield atype & NLA_TYPE_MASK, mv[off + NLA_HDRLEN : off + alen]
        off += (alen + 3) & ~3


def iter_attr_spans(buf: bytes | bytearray | memoryview, start: int = 0, end: int | None = None
                    ) -> Iterator[tuple[int, int, int]]:
    """Yield (type without flag bits, payload start, payload end) for each attribute of
    ``buf[start:end]``, as offsets into ``buf`` (for callers that keep positions)."""
    if end is None:
        end = len(buf)
    off = start
    unpack = _NLA.unpack_from
    while off < end:
        if end - off < NLA_HDRLEN:
            raise DecodeError("truncated attribute header", off)
        alen, atype = unpack(buf, off)
        if alen < NLA_HDRLEN or off + alen > end:
            raise DecodeError(f"attribute {atype & NLA_TYPE_MASK} length {alen} runs past its container", off)
        yield atype & NLA_TYPE_MASK, off + NLA_HDRLEN, off + alen
        off += (alen + 3) & ~3


def attr_payloads(buf: bytes | bytearray | memoryview, start: int = 0, end: int | None = None
                  ) -> dict[int, bytes]:
    """The attributes of one level as {type: payload bytes} (the last of a type wins)."""
    b = bytes(buf)
    return {t: b[s:e] for t, s, e in iter_attr_spans(b, start, end)}


def attr_spans(mv: memoryview) -> Iterator[tuple[int, int, int]]:
    """(type without flag bits, payload start, payload end) of each attribute of ``mv``."""
    return iter_attr_spans(mv)


Payload = bytes | bytearray | memoryview  # an attribute's payload, a view or a copy


def _fixed(fmt: str, what: str) -> Callable[[Payload], int]:
    s = struct.Struct(fmt)
    size = s.size
    unpack = s.unpack

    def get(mv: Payload) -> int:
        if len(mv) != size:
            raise DecodeError(f"{what} attribute has {len(mv)} bytes, expected {size}")
        return unpack(mv)[0]  # type: ignore[no-any-return]

    get.__name__ = f"get_{what}"
    return get


get_u8 = _fixed("=B", "u8")
get_u16 = _fixed("=H", "u16")
get_u32 = _fixed("=I", "u32")
get_u64 = _fixed("=Q", "u64")
get_s8 = _fixed("=b", "s8")
get_s16 = _fixed("=h", "s16")
get_s32 = _fixed("=i", "s32")
get_s64 = _fixed("=q", "s64")
get_be16 = _fixed(">H", "be16")
get_be32 = _fixed(">I", "be32")
get_be64 = _fixed(">Q", "be64")


def get_string(mv: Payload) -> str:
    """A string attribute, with or without its NUL terminator."""
    b = bytes(mv)
    nul = b.find(b"\0")
    if nul >= 0:
        b = b[:nul]
    return b.decode("utf-8", "surrogateescape")


def get_binary(mv: memoryview) -> bytes:
    return bytes(mv)


def get_flag(mv: memoryview) -> bool:
    return True


@dataclass(frozen=True)
class NetlinkErrorReply:
    """The content of an NLMSG_ERROR message (errno 0 is an ACK)."""

    errno: int
    seq: int  # sequence number of the request it answers
    request_type: int
    extack: str | None = None
    offset: int | None = None  # offset of the offending attribute in the request


def parse_error(msg: Message) -> NetlinkErrorReply:
    """Decode an NLMSG_ERROR payload, extended ACK attributes included."""
    p = msg.payload
    if len(p) < 4 + NLMSG_HDRLEN:
        raise DecodeError("truncated NLMSG_ERROR")
    (err,) = _ERRNO.unpack_from(p, 0)
    olen, otype, _oflags, oseq, _opid = _HDR.unpack_from(p, 4)
    off = 4 + NLMSG_HDRLEN
    if not msg.flags & NLM_F_CAPPED:
        off = 4 + max(olen, NLMSG_HDRLEN)
        off = (off + 3) & ~3
    extack = offset = None
    if msg.flags & NLM_F_ACK_TLVS and off < len(p):
        for t, v in iter_attrs(p[off:]):
            if t == NLMSGERR_ATTR_MSG:
                extack = get_string(v)
            elif t == NLMSGERR_ATTR_OFFS and len(v) == 4:
                offset = get_u32(v)
    return NetlinkErrorReply(-err, oseq, otype, extack, offset)


# ---------------------------------------------------------------- tables


class Kind(enum.Enum):
    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    U64 = "u64"
    S8 = "s8"
    S16 = "s16"
    S32 = "s32"
    S64 = "s64"
    BE16 = "be16"
    BE32 = "be32"
    BE64 = "be64"
    STRING = "string"
    STRING_NONUL = "string-nonul"
    BINARY = "binary"
    FLAG = "flag"
    NESTED = "nested"
    NESTED_ARRAY = "nested-array"


_DECODERS: dict[Kind, Callable[[memoryview], Any]] = {
    Kind.U8: get_u8, Kind.U16: get_u16, Kind.U32: get_u32, Kind.U64: get_u64,
    Kind.S8: get_s8, Kind.S16: get_s16, Kind.S32: get_s32, Kind.S64: get_s64,
    Kind.BE16: get_be16, Kind.BE32: get_be32, Kind.BE64: get_be64,
    Kind.STRING: get_string, Kind.STRING_NONUL: get_string,
    Kind.BINARY: get_binary, Kind.FLAG: get_flag,
}

_FIXED: dict[Kind, struct.Struct] = {
    Kind.U8: struct.Struct("=B"), Kind.U16: struct.Struct("=H"), Kind.U32: struct.Struct("=I"),
    Kind.U64: struct.Struct("=Q"), Kind.S8: struct.Struct("=b"), Kind.S16: struct.Struct("=h"),
    Kind.S32: struct.Struct("=i"), Kind.S64: struct.Struct("=q"), Kind.BE16: struct.Struct(">H"),
    Kind.BE32: struct.Struct(">I"), Kind.BE64: struct.Struct(">Q"),
}

_ENCODERS: dict[Kind, Callable[[MessageWriter, int, Any], None]] = {
    Kind.U8: MessageWriter.u8, Kind.U16: MessageWriter.u16, Kind.U32: MessageWriter.u32,
    Kind.U64: MessageWriter.u64, Kind.S32: MessageWriter.s32, Kind.S64: MessageWriter.s64,
    Kind.BE16: MessageWriter.be16, Kind.BE32: MessageWriter.be32, Kind.BE64: MessageWriter.be64,
    Kind.STRING: MessageWriter.string, Kind.STRING_NONUL: MessageWriter.string_nonul,
    Kind.BINARY: MessageWriter.binary,
    Kind.FLAG: lambda w, t, v: w.flag(t) if v else None,
    Kind.S8: lambda w, t, v: w.binary(t, struct.pack("=b", v)),
    Kind.S16: lambda w, t, v: w.binary(t, struct.pack("=h", v)),
}


_BIG_ENDIAN = frozenset({Kind.BE16, Kind.BE32, Kind.BE64})


@dataclass
class Attr:
    """One attribute of a family, as YNL's specs describe one.

    ``kind`` is the wire form (its byte order included: `byte_order`, `type`
    give it apart as the kernel's YAML specs spell it); ``nested`` the table of
    a nest's (or a nested array's elements') attributes; ``enum`` the IntEnum
    (or IntFlag) of the values it carries; ``selector`` and ``variants`` make a
    sub-message: the nest's table is ``variants[value of sibling selector]``
    (nf_tables' expression data, chosen by the expression's name).
    """

    name: str
    kind: Kind
    nested: AttrSet | None = None
    elem_type: int = 1  # attribute type of each element of a NESTED_ARRAY when encoding
    enum: type[enum.IntEnum] | None = None
    selector: str | None = None
    variants: Mapping[Any, AttrSet] | None = None

    @property
    def byte_order(self) -> str:
        """"big-endian" for integers in network order, else "host"."""
        return "big-endian" if self.kind in _BIG_ENDIAN else "host"

    @property
    def type(self) -> str:
        """The kernel YAML spec's type name (u32, string, nest, ...); byte order apart."""
        if self.kind in _BIG_ENDIAN:
            return "u" + self.kind.value[2:]
        if self.kind in (Kind.NESTED, Kind.NESTED_ARRAY):
            return "sub-message" if self.selector else "nest"
        return self.kind.value


@dataclass
class AttrSet:
    """The attributes that may appear at one level of a family's messages."""

    name: str
    attrs: Mapping[int, Attr]
    _by_name: dict[str, tuple[int, Attr]] = field(init=False, repr=False)
    _decoders: dict[int, tuple[str, Callable[[memoryview], Any]]] = field(init=False, repr=False)
    # number -> (name, fixed size or 0, unpack_from for fixed sizes, decoder otherwise)
    _fast: dict[int, tuple[str, int, Any, Any]] = field(init=False, repr=False)
    _subs: list[tuple[int, Attr]] = field(init=False, repr=False)  # sub-messages (selector)

    def __post_init__(self) -> None:
        self.attrs = dict(self.attrs)
        self.resolve()

    def resolve(self) -> None:
        """(Re)build the lookup tables; call after filling a forward-declared nest."""
        self._by_name = {a.name: (n, a) for n, a in self.attrs.items()}
        self._decoders = {n: (a.name, self._decoder_for(a)) for n, a in self.attrs.items()}
        self._fast = {}
        self._subs = [(n, a) for n, a in self.attrs.items() if a.selector is not None]
        for n, a in self.attrs.items():
            fixed = _FIXED.get(a.kind)
            if fixed is not None:
                self._fast[n] = (a.name, fixed.size, fixed.unpack_from, None)
            else:
                self._fast[n] = (a.name, 0, None, self._decoders[n][1])

    @staticmethod
    def _decoder_for(a: Attr) -> Callable[[memoryview], Any]:
        if a.kind is Kind.NESTED:
            if a.nested is None:
                return lambda mv: {t: bytes(v) for t, v in iter_attrs(mv)}
            return a.nested.decode
        if a.kind is Kind.NESTED_ARRAY:
            inner = a.nested

            def decode_array(mv: memoryview) -> list[Any]:
                if inner is None:
                    return [bytes(v) for _, v in iter_attrs(mv)]
                return [inner.decode(v) for _, v in iter_attrs(mv)]

            return decode_array
        return _DECODERS[a.kind]

    def number(self, name: str) -> int:
        try:
            return self._by_name[name][0]
        except KeyError:
            raise KeyError(f"{self.name} has no attribute {name!r}") from None

    def attr(self, name: str) -> Attr:
        return self._by_name[name][1]

    def decode(self, mv: memoryview) -> dict[str | int, Any]:
        """All attributes, decoded (unknown numbers kept as bytes under their number)."""
        out: dict[str | int, Any] = {}
        fast = self._fast
        n = len(mv)
        off = 0
        unpack = _NLA.unpack_from
        while off < n:
            if n - off < NLA_HDRLEN:
                raise DecodeError(f"{self.name}: truncated attribute header", off)
            alen, atype = unpack(mv, off)
            end = off + alen
            if alen < NLA_HDRLEN or end > n:
                raise DecodeError(f"{self.name}: attribute length {alen} runs past its container", off)
            entry = fast.get(atype & NLA_TYPE_MASK)
            if entry is None:
                out[atype & NLA_TYPE_MASK] = bytes(mv[off + NLA_HDRLEN : end])
            else:
                name, size, unpack_value, decoder = entry
                if size:
                    if alen - NLA_HDRLEN != size:
                        raise DecodeError(f"{self.name}: attribute {name} has {alen - NLA_HDRLEN} "
                                          f"bytes, expected {size}", off)
                    out[name] = unpack_value(mv, off + NLA_HDRLEN)[0]
                else:
                    out[name] = decoder(mv[off + NLA_HDRLEN : end])
            off = (end + 3) & ~3
        if self._subs:
            for num, a in self._subs:
                table = self._variant(a, mv)
                if table is not None and a.name in out:
                    for t, v in iter_attrs(mv):
                        if t == num:
                            out[a.name] = table.decode(v)
        return out

    def path_at(self, mv: memoryview, offset: int) -> list[str]:
        """Names of the attributes leading to the one that starts at ``offset`` of the
        attribute stream ``mv`` (the kernel's extended-ACK offset, as YNL's
        ``_decode_extack_path`` walks it); [] when no attribute starts there.

        Elements of nested arrays read ``name[i]`` (0-based); a nest whose table has
        a sub-message selector shows its value, ``expressions[3] (cmp)``, and the
        sub-message's own wrapper is left out of deeper paths.
        """
        for num, start, end in attr_spans(mv):
            if not start - NLA_HDRLEN <= offset < end:
                continue
            a = self.attrs.get(num)
            name = a.name if a is not None else str(num)
            if offset == start - NLA_HDRLEN or a is None:
                return [name]
            inner = mv[start:end]
            if a.kind is Kind.NESTED_ARRAY:
                for i, (_t, es, ee) in enumerate(attr_spans(inner)):
                    if es - NLA_HDRLEN <= offset - start < ee:
                        label = f"{name}[{i}]"
                        elem = inner[es:ee]
                        if a.nested is None:
                            return [label]
                        label += a.nested._variant_label(elem)
                        if offset - start == es - NLA_HDRLEN:
                            return [label]
                        return [label, *a.nested.path_at(elem, offset - start - es)]
                return [name]
            if a.kind is Kind.NESTED:
                table = a.nested if a.selector is None else self._variant(a, mv)
                if table is None:
                    return [name]
                rest = table.path_at(inner, offset - start)
                if a.selector is not None:
                    return rest  # the variant is named on the enclosing element already
                return [name + table._variant_label(inner), *rest]
            return [name]
        return []

    def _variant(self, a: Attr, mv: memoryview) -> AttrSet | None:
        """The table of sub-message ``a`` in the attribute stream ``mv`` (its selector's value)."""
        if a.selector is None or a.variants is None:
            return a.nested
        key = self._selector_value(a.selector, mv)
        return a.variants.get(key, a.nested) if key is not None else a.nested

    def _selector_value(self, selector: str, mv: memoryview) -> Any:
        num, sel = self._by_name[selector]
        for t, v in iter_attrs(mv):
            if t == num:
                return _DECODERS[sel.kind](v) if sel.kind in _DECODERS else None
        return None

    def _variant_label(self, mv: memoryview) -> str:
        """" (value)" of this table's sub-message selector in ``mv``, or ""."""
        for a in self.attrs.values():
            if a.selector is not None:
                value = self._selector_value(a.selector, mv)
                return f" ({value})" if value is not None else ""
        return ""

    def lazy(self, mv: memoryview) -> LazyAttrs:
        """A view that decodes each attribute only when asked for."""
        return LazyAttrs(self, mv)

    def encode(self, w: MessageWriter, values: Mapping[str, Any]) -> None:
        """Write ``values`` (name -> value, nests as mappings, arrays as lists)."""
        for name, value in values.items():
            if value is None:
                continue
            try:
                num, a = self._by_name[name]
            except KeyError:
                raise KeyError(f"{self.name} has no attribute {name!r}") from None
            if a.kind is Kind.NESTED:
                off = w.nest_start(num)
                table = a.nested
                if a.selector is not None and a.variants is not None:
                    table = a.variants.get(values.get(a.selector), table)
                if table is not None and not isinstance(value, bytes | bytearray | memoryview):
                    table.encode(w, value)
                else:
                    w.raw(value)
                w.nest_end(off)
            elif a.kind is Kind.NESTED_ARRAY:
                off = w.nest_start(num)
                for item in value:
                    inner_off = w.nest_start(a.elem_type)
                    if a.nested is not None:
                        a.nested.encode(w, item)
                    else:
                        w.raw(item)
                    w.nest_end(inner_off)
                w.nest_end(off)
            else:
                _ENCODERS[a.kind](w, num, value)


class LazyAttrs:
    """Attributes indexed once, decoded on demand; unknown ones kept by number."""

    __slots__ = ("aset", "_raw")

    def __init__(self, aset: AttrSet, mv: memoryview) -> None:
        self.aset = aset
        self._raw = dict(iter_attrs(mv))

    def raw(self, name: str | int) -> memoryview:
        num = name if isinstance(name, int) else self.aset.number(name)
        return self._raw[num]

    def __contains__(self, name: str | int) -> bool:
        try:
            num = name if isinstance(name, int) else self.aset.number(name)
        except KeyError:
            return False
        return num in self._raw

    def __getitem__(self, name: str | int) -> Any:
        if isinstance(name, int):
            num = name
            entry = self.aset._decoders.get(num)
        else:
            num = self.aset.number(name)
            entry = self.aset._decoders[num]
        mv = self._raw[num]
        return bytes(mv) if entry is None else entry[1](mv)

    def get(self, name: str | int, default: Any = None) -> Any:
        return self[name] if name in self else default

    def numbers(self) -> list[int]:
        return list(self._raw)

    def decode_all(self) -> dict[str | int, Any]:
        out: dict[str | int, Any] = {}
        for num, mv in self._raw.items():
            entry = self.aset._decoders.get(num)
            if entry is None:
                out[num] = bytes(mv)
            else:
                out[entry[0]] = entry[1](mv)
        return out
