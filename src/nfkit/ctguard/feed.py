"""ctnetlink event datagrams into the picture, without building an entry per event.

Sans-I/O: `PictureFeed.feed` takes the bytes of received datagrams (one buffer,
or `feed_slots`: the slots one recvmmsg(2) filled).  The picture needs six
fields of an event (id, source address, zone, status, protocol state,
protocol), so each message is matched against layouts compiled for those
fields only (`_Shape`, on the netlink core's `Shapes`): the message's bytes are
copied once, its attribute headers checked in one masked comparison of those
bytes read as one integer (equal headers: the same layout), and its six fields
read by one `struct` at fixed offsets.  A destroy event needs only the id.  A
new or update event keeps its message's bytes in the record: the `Entry` is
decoded from them by the general decoder (`nfkit.conntrack.wire`) only for the
few records a decision takes.  This module must not know about sockets or policy.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from nfkit.conntrack.wire import ADDR, CT, ENTRY_FIELDS, MSG_DELETE, EntryDecoder
from nfkit.ctguard.picture import Picture, cost_tier, entry_key, wire_state
from nfkit.errors import DecodeError
from nfkit.netlink.shapes import Layout, Shapes, Walk
from nfkit.netlink.specs import ctnetlink as S

_NLMSG = struct.Struct("=IH")  # nlmsghdr's length and type
_HEADER = struct.Struct("=HH")
_DELETE_HEADER = struct.Struct("=IHHIIBBH")  # nlmsghdr + nfgenmsg (family, version 0, res_id 0)
_HEADERS = 20  # nlmsghdr + nfgenmsg
_CTNETLINK = 1  # NFNL_SUBSYS_CTNETLINK, the high byte of the message type
_DELETE = S.IPCTNL_MSG_CT_DELETE
_NLM_F_REQUEST = 1

# what the picture reads from a message: the leaves of these fields (IPv4 or IPv6 source, the
# state of whichever protocol's protoinfo nest), by the conntrack decoder's own paths
PICTURE_FIELDS = {path: name for path, name in ENTRY_FIELDS.items()
                  if name in ("id", "o.src", "o.proto", "zone", "status", "state", "sctp_state", "dccp_state")}

# (id, source address bytes, zone, status, state, protocol) from a layout's values
Pick = Callable[[tuple[Any, ...]], tuple[Any, ...]]


def _picker(index: dict[Any, int]) -> Pick:
    def get(name: str, default: str = "None") -> str:
        return f"v[{index[name]}]" if name in index else default

    state = next((k for k in ("state", "sctp_state", "dccp_state") if k in index), "state")
    src = (f"def pick(v):\n    return ({get('id')}, {get('o.src')}, {get('zone', '0')}, "
           f"{get('status', '0')}, {get(state)}, {get('o.proto', '0')})\n")
    namespace: dict[str, Any] = {}
    exec(src, {}, namespace)  # noqa: S102 - generated above from the layout's field index
    return namespace["pick"]  # type: ignore[no-any-return]


class _Shape(Layout):
    """A message layout read for the picture, nlmsghdr and nfgenmsg included: ``unpack``
    reads only `PICTURE_FIELDS` (offsets from the message's start); ``mask``/``want`` check,
    in one operation on the message's bytes read as one little-endian integer, its length,
    type, family and every attribute header (``int & mask == want`` exactly when all equal
    the layout's); ``pick`` orders the values; ``id_at`` is where the id lies in them (None:
    no id); ``destroy``: a destroy event; ``key_spans`` where the attributes that identify
    the entry lie (a delete copies them)."""

    __slots__ = ("destroy", "id_at", "key_spans", "mask", "pick", "want")

    def __init__(self, walk: Walk, length: int, tag: tuple[int, int]) -> None:
        super().__init__(walk, length, tag)
        mtype, family = tag
        mask, want = bytearray(length), bytearray(length)
        mask[0:6] = b"\xff" * 6  # nlmsg_len, nlmsg_type
        mask[16] = 0xFF  # nfgen_family
        _NLMSG.pack_into(want, 0, length, mtype)
        want[16] = family
        for off, alen, atype in walk.headers:
            mask[off:off + 4] = b"\xff\xff\xff\xff"
            _HEADER.pack_into(want, off, alen, atype)
        self.mask = int.from_bytes(mask, "little")
        self.want = int.from_bytes(want, "little")
        self.pick = _picker(self.index)
        self.id_at = self.index.get("id")
        self.destroy = mtype & 0xFF == _DELETE
        self.key_spans = [walk.spans[t] for t in ("tuple_orig", "zone", "id") if t in walk.spans]


class PictureFeed:
    """Applies event datagrams to a `Picture`; see the module's docstring."""

    MAX_SHAPES = 4096

    def __init__(self, picture: Picture, decoder: EntryDecoder | None = None) -> None:
        """``decoder``: the general decoder, for the key of an entry without an id."""
        self.picture = picture
        self.decoder = decoder or EntryDecoder()
        self.shapes: Shapes[_Shape] = Shapes(CT, _Shape, names=PICTURE_FIELDS, max_layouts=self.MAX_SHAPES,
                                             max_per_length=self.MAX_SHAPES, head=_HEADERS)
        self._states: dict[tuple[int, Any, int], tuple[str, int]] = {}  # -> (state name, cost tier)

    def shape(self, raw: bytes) -> _Shape:
        """The layout of the ctnetlink message ``raw``: a known one, else learned (a walk; kept
        while the bounds allow).  Raises DecodeError if the message is malformed."""
        whole = int.from_bytes(raw, "little")
        for lay in self.shapes.by_len.get(len(raw), ()):
            if whole & lay.mask == lay.want:
                return lay
        n = len(raw)
        tag = (_NLMSG.unpack_from(raw)[1], raw[16])
        return self.shapes.learn(raw, 0, n, tag) or self.shapes.compile(raw, 0, n, tag)

    def feed(self, buf: bytes | bytearray | memoryview, n: int, now: float) -> int:
        """Apply the messages of ``buf[:n]`` (one or more datagrams' worth); returns how many.
        Raises DecodeError for a malformed message (those before it are applied)."""
        return self.feed_slots(buf, ((0, n),), now)

    def feed_slots(self, buf: bytes | bytearray | memoryview, slots: Iterable[tuple[int, int]],
                   now: float) -> int:
        """Apply the messages of each ``buf[offset:offset+length]`` of ``slots``, in order
        (the datagrams a `mmsg.BatchReceiver` read); returns how many.  A datagram that is
        one message of a known layout (an event) is matched whole; others are walked message
        by message.  Raises DecodeError for a malformed message (the messages before it are
        applied)."""
        picture = self.picture
        add, remove = picture.add, picture.remove
        by_len = self.shapes.by_len
        states = self._states
        from_bytes = int.from_bytes
        mv = memoryview(buf)
        done = 0
        for start, size in slots:
            raw = bytes(mv[start:start + size])
            whole = from_bytes(raw, "little")
            for lay in by_len.get(size, ()):
                if whole & lay.mask == lay.want:
                    messages: Iterable[tuple[_Shape, bytes]] = ((lay, raw),)
                    break
            else:  # several messages (a dump's datagram), or a layout not seen yet
                messages = self._split(raw)
            for lay, raw in messages:
                values = lay.unpack(raw, 0)
                if lay.destroy:
                    remove(values[lay.id_at] if lay.id_at is not None else self._key(raw))
                else:
                    ct_id, raw_src, zone, status, state, proto = lay.pick(values)
                    seen = states.get((proto, state, status))
                    if seen is None:
                        name = wire_state(proto, state, status)
                        seen = states[(proto, state, status)] = (name, cost_tier(name, status))
                    add(ct_id if ct_id is not None else self._key(raw), ADDR[raw_src], zone or 0, seen[0],
                        status, raw, now, seen[1])
                done += 1
        picture.events += done
        return done

    def _split(self, datagram: bytes | bytearray | memoryview,
               n: int | None = None) -> Iterator[tuple[_Shape, bytes]]:
        """The ctnetlink messages of ``datagram[:n]`` with their layouts (others skipped), in
        order.  Raises DecodeError for a malformed message (those before it are given)."""
        n = len(datagram) if n is None else n
        off = 0
        while off + _HEADERS <= n:
            length, mtype = _NLMSG.unpack_from(datagram, off)
            if length < 16 or off + length > n:
                raise DecodeError(f"netlink message of {length} bytes at offset {off} of {n}")
            if mtype >> 8 == _CTNETLINK and length >= _HEADERS:
                msg = datagram if length == n and isinstance(datagram, bytes) else \
                    bytes(datagram[off:off + length])
                yield self.shape(msg), msg
            off += (length + 3) & ~3

    def _key(self, raw: bytes) -> Any:
        """The picture's key of an entry whose messages carry no id (its tuple and zone)."""
        return entry_key(self.decoder.decode(raw, _HEADERS, len(raw) - _HEADERS, raw[16]))

    def deletes(self, buf: bytes | bytearray | memoryview, n: int, out: bytearray, seq: int,
                most: int) -> list[Any]:
        """A delete request appended to ``out`` for each entry of the dump messages in ``buf[:n]``,
        at most ``most`` (its original tuple, zone and id copied as the dump gave them: no
        Entry), numbered from ``seq`` + 1; returns the picture's keys of those entries, in order."""
        header = _DELETE_HEADER.pack
        keys: list[Any] = []
        if most <= 0:
            return keys
        for lay, raw in self._split(memoryview(buf), n):
            at = lay.id_at
            keys.append(lay.unpack(raw, 0)[at] if at is not None else self._key(raw))
            spans = lay.key_spans
            out += header(_HEADERS + sum(ln for _, ln in spans), MSG_DELETE, _NLM_F_REQUEST,
                          seq + len(keys), 0, raw[16], 0, 0)
            for o, ln in spans:
                out += raw[o:o + ln]
            if len(keys) >= most:
                break
        return keys
