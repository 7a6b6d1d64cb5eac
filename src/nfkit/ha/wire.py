"""conntrackd's sync messages, sans-I/O: datagram bytes in, messages out, and back.

Owns: the message classes (`StateMessage` for conntrack entries and
expectations, `ControlMessage` for ACK, NACK, RESYNC and ALIVE), and turning
datagrams into lists of them and back, exactly as conntrack-tools 1.4.7 lays
them out (tables in `nfkit.ha.spec`).  A datagram that is not well formed
raises `DecodeError` as a whole: callers count it and drop it, nothing of it
is applied.
Must not know: sockets, sequence tracking (FTFW), the conntrack entry model
(`nfkit.ha.convert` maps messages to `Entry`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from nfkit.errors import DecodeError, InputError
from nfkit.ha import spec
from nfkit.ha.spec import CT_TYPES, DATA_FLAGS, RANGE_FLAGS, Attr, Flag, MsgType

_HEADER = spec.HEADER
_ATTR = spec.ATTR_HEADER
_RANGE = spec.ACK_RANGE


class StateMessage:
    """A conntrack entry (CT_NEW/UPD/DEL) or an expectation (EXP_NEW/UPD/DEL).

    ``attrs`` maps attribute names (`spec.CT_ATTRS` / `spec.EXP_ATTRS`) to values:
    addresses as text, ports and numbers as ints with 1.4.7's byte swaps undone.
    ``body`` is the attribute stream as it goes on the wire.  A message holds one
    or both: a received one its (checked) body, decoded into ``attrs`` only when
    asked; one made from ``attrs`` is encoded once, when first sent (the hot
    paths carry bodies and never build the dict).  ``shape`` is the compiled
    layout of a received body (`BodyShape`), None when it has none.
    """

    __slots__ = ("_attrs", "_body", "flags", "seq", "shape", "type")

    def __init__(self, type: MsgType, attrs: dict[str, Any] | None = None, seq: int = 0, flags: int = 0,
                 *, body: bytes | None = None, shape: BodyShape | None = None) -> None:
        self.type = type
        self._attrs = {} if attrs is None and body is None else attrs
        self._body = body
        self.seq = seq
        self.flags = flags
        self.shape = shape

    @property
    def attrs(self) -> dict[str, Any]:
        if self._attrs is None:
            assert self._body is not None
            self._attrs = decode_attrs(self.type, self._body, 0, len(self._body))
        return self._attrs

    @property
    def body(self) -> bytes:
        """The attribute stream; raises InputError for attributes that cannot be sent."""
        if self._body is None:
            assert self._attrs is not None
            self._body = encode_attrs(self.type, self._attrs)
        return self._body

    def numbered(self, seq: int, flags: int) -> StateMessage:
        """The same message with another sequence number and flags (nothing re-encoded)."""
        msg = StateMessage.__new__(StateMessage)
        msg.type, msg._attrs, msg._body, msg.seq, msg.flags, msg.shape = (
            self.type, self._attrs, self._body, seq, flags, self.shape)
        return msg

    @property
    def is_ct(self) -> bool:
        return self.type in CT_TYPES

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StateMessage):
            return NotImplemented
        return (self.type, self.attrs, self.seq, self.flags) == (other.type, other.attrs, other.seq, other.flags)

    def __repr__(self) -> str:
        return f"StateMessage({self.type.name}, {self.attrs!r}, seq={self.seq}, flags={Flag(self.flags)!r})"


@dataclass
class ControlMessage:
    """A control message: ACK/NACK of the range ``first``..``last``, RESYNC or ALIVE.

    HELLO and HELLO_BACK may ride on any message (control or data).
    """

    flags: Flag
    seq: int = 0
    first: int = 0  # ACK, NACK, RESYNC: the sequence range (RESYNC sends 0, 0)
    last: int = 0


Message = StateMessage | ControlMessage
# A state message as the engine's event path queues it: (entry key, message type, body), no
# flags of its own (`word_message` makes it a StateMessage where one is needed)
Word = tuple[Any, int, bytes]


@dataclass(slots=True)
class Words:
    """Many words at once, as the engine's batch path makes them: ``keys[i]``, type
    ``types`` (one for all, or ``types[i]``), ``bodies[i]``; ``array`` holds the same
    messages as an (n, 8 + body size) uint8 array (every body the same size), each body
    after 8 bytes of room for its header, so a session can number and frame them all at
    once (it writes its headers there just before taking the bytes: the blocks are shared
    by every session, which change nothing else)."""

    keys: list[Any]
    types: int | list[int]
    bodies: list[bytes]
    array: Any

    def word(self, i: int) -> Word:
        t = self.types
        return self.keys[i], t if isinstance(t, int) else t[i], self.bodies[i]

    def as_dict(self) -> dict[Any, Word]:
        """The words as `enqueue_words` takes them (each key once: a block has no repeats)."""
        return {k: self.word(i) for i, k in enumerate(self.keys)}


def word_message(word: Word, seq: int = 0, flags: int = 0) -> StateMessage:
    """The state message a word says, numbered ``seq`` with ``flags``."""
    return StateMessage(_TYPES[word[1]] or MsgType(word[1]), None, seq, flags, body=word[2])


def _tables(mtype: MsgType) -> tuple[dict[int, Attr], dict[str, Attr], tuple[str, ...]]:
    if mtype in CT_TYPES:
        return spec.CT_ATTRS, spec.CT_BY_NAME, spec.CT_ORDER
    return spec.EXP_ATTRS, spec.EXP_BY_NAME, spec.EXP_ORDER


# Decoding plans, by attribute number: (name, exact attribute length or 0, largest length
# or 0, struct unpack_from or None, take its first item, slice unpacker).
_Plan = tuple[str, int, int, Any, bool, Any]


def _plans(table: dict[int, Attr]) -> list[_Plan | None]:
    plans: list[_Plan | None] = [None] * (max(table) + 1)
    for num, attr in table.items():
        lay = attr.layout
        exact = _ATTR.size + lay.size if lay.size is not None else 0
        plans[num] = (attr.name, exact, lay.max_size or 0, lay.unpack_from, lay.single, lay.unpack)
    return plans


_CT_PLANS = _plans(spec.CT_ATTRS)
_EXP_PLANS = _plans(spec.EXP_ATTRS)
_TYPES: list[MsgType | None] = [None] * 16
for _t in MsgType:
    _TYPES[_t] = _t
_DATA_FLAGS = int(DATA_FLAGS)
_CT_LAST = max(CT_TYPES)
_VERSION = spec.PROTOCOL_VERSION << 4
_unpack_attr = _ATTR.unpack_from


def decode_attrs(mtype: MsgType, buf: bytes, start: int, end: int) -> dict[str, Any]:
    """The attributes of one state message in ``buf[start:end]``; raises DecodeError."""
    plans = _CT_PLANS if mtype in CT_TYPES else _EXP_PLANS
    nplans = len(plans)
    attrs: dict[str, Any] = {}
    off = start
    while off < end:
        if end - off < 4:
            raise DecodeError(f"{end - off} trailing bytes after the last attribute", off)
        alen, anum = _unpack_attr(buf, off)
        plan = plans[anum] if anum < nplans else None
        if plan is None:
            raise DecodeError(f"unknown attribute {anum} in a {mtype.name} message", off)
        name, exact, largest, unpack_from, single, unpack = plan
        if alen < 4 or off + alen > end:
            raise DecodeError(f"attribute {name} of length {alen} does not fit its message", off)
        if exact and alen != exact:
            raise DecodeError(f"attribute {name} has {alen - 4} bytes, conntrackd sends {exact - 4}", off)
        if largest and alen > largest:
            raise DecodeError(f"attribute {name} of length {alen} is over conntrackd's {largest}", off)
        if name in attrs:
            raise DecodeError(f"attribute {name} twice in one message", off)
        if unpack_from is not None:
            value = unpack_from(buf, off + 4)
            attrs[name] = value[0] if single else value
        else:
            try:
                attrs[name] = unpack(buf[off + 4:off + alen])
            except DecodeError as exc:
                raise DecodeError(f"attribute {name}: {exc}", off) from None
        off += (alen + 3) & ~3
    return attrs


class BodyShape:
    """The compiled layout of a state message body made only of fixed-size attributes:
    ``headers(buf, off) == expected`` says a body of the same length has it (and
    is then as well formed as the first one, checked in full); ``values(buf, off)``
    reads every value in one struct call (`spec.ValueFormat.raw`: addresses as bytes);
    ``index[name]`` is where an attribute's first value sits in them."""

    __slots__ = ("expected", "headers", "index", "names", "size", "type_ct", "values")

    def __init__(self, mtype: MsgType, buf: bytes, start: int, end: int) -> None:
        attrs = spec.CT_ATTRS if mtype in CT_TYPES else spec.EXP_ATTRS
        heads, values = [">"], [">"]
        expected: list[int] = []
        names: list[str] = []
        self.index: dict[str, int] = {}
        n = 0
        off = start
        while off < end:
            alen, anum = _unpack_attr(buf, off)
            attr = attrs[anum]
            raw = attr.layout.raw
            assert raw is not None
            step = (alen + 3) & ~3
            heads.append(f"HH{step - 4}x")
            values.append(f"4x{raw}{step - alen}x")
            expected += (alen, anum)
            names.append(attr.name)
            self.index[attr.name] = n
            n += len(struct.Struct(">" + raw).unpack(bytes(struct.calcsize(">" + raw))))
            off += step
        self.type_ct = mtype in CT_TYPES
        self.size = end - start
        self.names = tuple(names)
        self.expected = tuple(expected)
        self.headers = struct.Struct("".join(heads)).unpack_from
        self.values = struct.Struct("".join(values)).unpack_from


_SHAPES: dict[tuple[bool, int], list[BodyShape]] = {}
MAX_SHAPES = 4096


def _shape(mtype: MsgType, buf: bytes, start: int, end: int) -> BodyShape | None:
    """The known shape of ``buf[start:end]``, or None (then decode it in full)."""
    for shape in _SHAPES.get((mtype <= _CT_LAST, end - start), ()):  # (an enum's hash is slow)
        if shape.headers(buf, start) == shape.expected:
            return shape
    return None


def _learn(mtype: MsgType, buf: bytes, start: int, end: int) -> BodyShape | None:
    """Compile the shape of a body that decoded well, if all its attributes have a fixed size."""
    plans = _CT_PLANS if mtype in CT_TYPES else _EXP_PLANS
    off = start
    while off < end:
        alen, anum = _unpack_attr(buf, off)
        if not plans[anum][1]:  # type: ignore[index]
            return None
        off += (alen + 3) & ~3
    if off != end:  # the last attribute unpadded: conntrackd pads them all
        return None
    if len(_SHAPES) > MAX_SHAPES:
        _SHAPES.clear()
    shape = BodyShape(mtype, buf, start, end)
    _SHAPES.setdefault((shape.type_ct, end - start), []).append(shape)
    return shape


def decode_datagram(data: bytes | bytearray | memoryview) -> list[Message]:
    """Every message of one datagram; raises DecodeError (naming the byte) if any is malformed.

    A state message body of a known shape is checked by its attribute headers alone
    and kept as bytes (``attrs`` decoded on demand); one of a new shape is decoded
    in full, and its shape learned."""
    buf = bytes(data)
    out: list[Message] = []
    off = 0
    total = len(buf)
    if not total:
        raise DecodeError("empty datagram")
    unpack = _HEADER.unpack_from
    types = _TYPES
    ctl = MsgType.CTL
    last: BodyShape | None = None  # the last message's shape: a datagram is mostly of one
    while off < total:
        if total - off < spec.HEADER_SIZE:
            raise DecodeError(f"message header cut short ({total - off} bytes)", off)
        first, flags, length, seq = unpack(buf, off)
        if first >> 4 != spec.PROTOCOL_VERSION:
            raise DecodeError(f"protocol version {first >> 4}, not {spec.PROTOCOL_VERSION}", off)
        mtype = types[first & 0x0F]
        if mtype is None:
            raise DecodeError(f"unknown message type {first & 0x0F}", off)
        if length < spec.HEADER_SIZE or off + length > total:
            raise DecodeError(f"message length {length} does not fit the datagram ({total - off} left)", off)
        if flags & 0x81:
            raise DecodeError(f"unknown flag bits {flags:#x}", off)
        if mtype is ctl:
            out.append(_decode_control(buf, off, Flag(flags), length, seq))
        else:
            if flags & ~_DATA_FLAGS:
                raise DecodeError(f"{mtype.name} message with control flags {Flag(flags)!r}", off)
            start, end = off + spec.HEADER_SIZE, off + length
            if last is not None and last.size == end - start and last.type_ct == (mtype <= _CT_LAST) \
                    and last.headers(buf, start) == last.expected:
                shape: BodyShape | None = last
            else:
                shape = last = _shape(mtype, buf, start, end)
            if shape is not None:
                out.append(StateMessage(mtype, None, seq, flags, body=buf[start:end], shape=shape))
            else:
                attrs = decode_attrs(mtype, buf, start, end)
                out.append(StateMessage(mtype, attrs, seq, flags, body=buf[start:end],
                                        shape=_learn(mtype, buf, start, end)))
        off += length
    return out


def _decode_control(buf: bytes, off: int, fl: Flag, length: int, seq: int) -> ControlMessage:
    if fl & RANGE_FLAGS:
        if length != spec.ACK_HEADER_SIZE:
            raise DecodeError(f"{fl!r} message of length {length}, not {spec.ACK_HEADER_SIZE}", off)
        first, last = _RANGE.unpack_from(buf, off + spec.HEADER_SIZE)
        if fl & (Flag.ACK | Flag.NACK) and (last - first) & 0x80000000:
            raise DecodeError(f"{fl!r} range {first}..{last} runs backwards", off)
        return ControlMessage(fl, seq, first, last)
    if not fl & Flag.ALIVE:  # a bare HELLO is MSG_BAD to conntrackd too
        raise DecodeError(f"control message without ACK, NACK, RESYNC or ALIVE ({int(fl):#x})", off)
    if length != spec.HEADER_SIZE:
        raise DecodeError(f"control message of length {length}, not {spec.HEADER_SIZE}", off)
    return ControlMessage(fl, seq)


def encode_attrs(mtype: MsgType, attrs: dict[str, Any]) -> bytes:
    """The attribute stream of one state message, in 1.4.7's order; raises InputError."""
    _, names, order = _tables(mtype)
    unknown = set(attrs) - set(order)
    if unknown:
        raise InputError(f"{mtype.name} message: unknown attribute(s) {', '.join(sorted(unknown))}")
    parts: list[bytes] = []
    for name in order:
        if name not in attrs:
            continue
        attr = names[name]
        try:
            value = attr.layout.pack(attrs[name])
        except (TypeError, ValueError, OverflowError) as exc:  # struct.error is a ValueError
            raise InputError(f"{mtype.name} message: attribute {name}={attrs[name]!r}: {exc}") from None
        except InputError as exc:
            raise InputError(f"{mtype.name} message: attribute {name}: {exc}") from None
        alen = _ATTR.size + len(value)
        parts.append(_ATTR.pack(alen, attr.number) + value + bytes(spec.align(alen) - alen))
    return b"".join(parts)


def encode_message(msg: Message) -> bytes:
    """One message's bytes (header included); raises InputError for what cannot be sent."""
    if isinstance(msg, ControlMessage):
        if msg.flags & RANGE_FLAGS:
            return (_HEADER.pack(spec.PROTOCOL_VERSION << 4 | MsgType.CTL, int(msg.flags),
                                 spec.ACK_HEADER_SIZE, msg.seq & 0xFFFFFFFF)
                    + _RANGE.pack(msg.first & 0xFFFFFFFF, msg.last & 0xFFFFFFFF))
        return _HEADER.pack(spec.PROTOCOL_VERSION << 4 | MsgType.CTL, int(msg.flags), spec.HEADER_SIZE,
                            msg.seq & 0xFFFFFFFF)
    if msg.type is MsgType.CTL or msg.flags & ~_DATA_FLAGS:
        raise InputError(f"state message of type {msg.type.name} with flags {Flag(msg.flags)!r}")
    body = msg.body
    length = spec.HEADER_SIZE + len(body)
    if length > 0xFFFF:
        raise InputError(f"{msg.type.name} message of {length} bytes is over 65535")
    return _HEADER.pack(spec.PROTOCOL_VERSION << 4 | msg.type, int(msg.flags), length,
                        msg.seq & 0xFFFFFFFF) + body


def encode_datagram(messages: Iterable[Message]) -> bytes:
    """Messages packed one after the other into one datagram, as conntrackd batches them."""
    return b"".join(encode_message(m) for m in messages)


def datagrams(messages: Iterable[Message], limit: int = 1472) -> Iterator[bytes]:
    """Messages packed into datagrams of at most ``limit`` bytes (a UDP payload on a 1500 MTU)."""
    yield from numbered_datagrams([(m.seq, int(m.flags), m) for m in messages], limit)


def encode_numbered(seq: int, flags: int, msg: Message) -> bytes:
    """One message's bytes with the sequence number and flags given (its own are not read);
    raises InputError for what cannot be sent."""
    body = msg._body if type(msg) is StateMessage else None
    if body is not None and not flags & ~_DATA_FLAGS and len(body) <= 0xFFFF - spec.HEADER_SIZE:  # the common case
        return _HEADER.pack(_VERSION | msg.type, flags, spec.HEADER_SIZE + len(body), seq) + body  # type: ignore[union-attr]
    if type(msg) is StateMessage:
        return encode_message(msg.numbered(seq, flags))
    assert isinstance(msg, ControlMessage)
    return encode_message(ControlMessage(Flag(flags), seq, msg.first, msg.last))


def numbered_datagrams(items: Iterable[tuple[int, int, Message]], limit: int = 1472) -> list[bytes]:
    """Messages packed as `datagrams` packs them, each given with the sequence number and
    flags it goes out with, ``(seq, flags, message)`` (the message's own are not read: a
    session sends its queue without making a numbered copy of each message)."""
    out: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for seq, flags, msg in items:
        raw = encode_numbered(seq, flags, msg)
        size += len(raw)
        if size > limit and batch:
            out.append(b"".join(batch))
            batch, size = [], len(raw)
        batch.append(raw)
    if batch:
        out.append(b"".join(batch))
    return out
