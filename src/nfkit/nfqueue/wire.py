"""nfnetlink_queue messages, sans I/O: queued packets in, verdicts and configuration out.

Owns: the layout of the queue's C structs (packet header, verdict header,
config command and parameters), decoding one NFQNL_MSG_PACKET into a `Packet`
and encoding config requests, single verdicts and batch verdicts into a
`MessageWriter`.  Must not know: sockets (`nfkit.nfqueue.queue`), or what a
packet means to whoever judges it.

Attribute numbers and kinds are `nfkit.netlink.specs.nfqueue`'s; `parse_packet`
walks the attributes itself with precompiled structs, and `QUEUE.decode` (the
generic table) gives the same answer, which the tests check.  The hot path of a
queue reader is `PacketLayouts`: the kernel writes a queue's packets with the
same attributes in the same order, the payload last, so the attributes before
the payload are read by one precompiled struct per layout: the netlink core's
layouts (`nfkit.netlink.shapes`, `Shapes.find_tail`), learnt from the first
packet of a layout by the core's walk, its attribute headers checked on every
later one; a packet of another layout is walked and its layout learnt.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from nfkit.errors import DecodeError, InputError
from nfkit.netlink.codec import Kind, Message, MessageWriter
from nfkit.netlink.consts import NFPROTO_UNSPEC, NLA_TYPE_MASK, NLM_F_REQUEST, NLMSG_ERROR
from nfkit.netlink.shapes import Layout, Shapes, Walk
from nfkit.netlink.specs import nfqueue as Q

# verdicts (linux/netfilter.h)
NF_DROP = 0
NF_ACCEPT = 1
NF_STOLEN = 2
NF_QUEUE = 3
NF_REPEAT = 4
NF_STOP = 5
VERDICT_NAMES = {"drop": NF_DROP, "accept": NF_ACCEPT, "repeat": NF_REPEAT}

COPY_MODES = {"none": Q.NFQNL_COPY_NONE, "meta": Q.NFQNL_COPY_META, "packet": Q.NFQNL_COPY_PACKET}
FLAG_NAMES = {"fail-open": Q.NFQA_CFG_F_FAIL_OPEN, "conntrack": Q.NFQA_CFG_F_CONNTRACK,
              "gso": Q.NFQA_CFG_F_GSO, "uid-gid": Q.NFQA_CFG_F_UID_GID, "secctx": Q.NFQA_CFG_F_SECCTX}

# enum ip_conntrack_info (linux/netfilter/nf_conntrack_common.h)
CT_INFO_NAMES = {0: "established", 1: "related", 2: "new", 3: "established-reply",
                 4: "related-reply", 7: "untracked"}

_PACKET_HDR = struct.Struct(">IHB")       # packet_id, hw_protocol, hook (packed, 7 bytes)
_VERDICT_HDR = struct.Struct(">II")       # verdict, id
_CFG_CMD = struct.Struct(">BxH")          # command, pad, pf
_CFG_PARAMS = struct.Struct(">IB")        # copy_range, copy_mode (packed, 5 bytes)
_TIMESTAMP = struct.Struct(">QQ")         # sec, usec
_NLA = struct.Struct("=HH")
_BE32 = struct.Struct(">I")
_NFGEN_RES = struct.Struct(">H")

# a verdict message: nlmsghdr, nfgenmsg, NFQA_VERDICT_HDR[, NFQA_MARK]
_MSG_HDR = struct.Struct("=IHHII")
_NLMSG = struct.Struct("=IH")             # a message's length and type
_ERRNO = struct.Struct("=i")              # NLMSG_ERROR's error (negative errno, 0: an ACK)
_PACKET = Q.PACKET
_NFGEN = struct.Struct(">BBH")
_VERDICT_ATTR = _NLA.pack(12, 2)
_MARK_ATTR = _NLA.pack(8, 3)
_VERDICT_LEN = 16 + 4 + 12


@dataclass(slots=True)
class Packet:
    """One queued packet as the kernel reported it.

    ``payload`` is the network-layer packet (IPv4 or IPv6 header first), up to
    the queue's copy range; ``cap_len`` is the packet's full length when the
    copy was cut (else None).  ``ct`` is the decoded NFQA_CT nest (queue flag
    ``conntrack``), ``ct_info`` the entry's `CT_INFO_NAMES` state.
    """

    queue: int
    id: int
    hw_protocol: int
    hook: int
    payload: bytes = b""
    mark: int = 0
    indev: int = 0
    outdev: int = 0
    cap_len: int | None = None
    skb_info: int = 0
    ct_info: int | None = None
    ct: dict[str | int, Any] | None = None
    timestamp: float | None = None
    uid: int | None = None
    gid: int | None = None
    extra: dict[str | int, Any] = field(default_factory=dict)

    @property
    def gso(self) -> bool:
        """A GSO packet handed over whole (bigger than the device's MTU)."""
        return bool(self.skb_info & Q.NFQA_SKB_GSO)


def parse_packet(msg: Message) -> Packet:
    """Decode one NFQNL_MSG_PACKET.  Raises DecodeError on a malformed message."""
    if msg.type != Q.PACKET:
        raise DecodeError(f"nfqueue: message type {msg.type:#x} is not a queued packet")
    p = msg.payload
    if len(p) < 4:
        raise DecodeError("nfqueue: packet message too short for nfgenmsg")
    (queue,) = _NFGEN_RES.unpack_from(p, 2)
    n = len(p)
    off = 4
    pkt = Packet(queue, -1, 0, 0)
    unpack = _NLA.unpack_from
    be32 = _BE32.unpack_from
    while off < n:
        if n - off < 4:
            raise DecodeError("nfqueue: truncated attribute header", off)
        alen, atype = unpack(p, off)
        end = off + alen
        if alen < 4 or end > n:
            raise DecodeError(f"nfqueue: attribute length {alen} runs past the message", off)
        t = atype & NLA_TYPE_MASK
        size = alen - 4
        body = off + 4
        if t == 10:
            pkt.payload = bytes(p[body:end])
        elif t == 1:
            if size != 7:
                raise DecodeError(f"nfqueue: packet header of {size} bytes, expected 7", off)
            pkt.id, pkt.hw_protocol, pkt.hook = _PACKET_HDR.unpack_from(p, body)
        elif t in (3, 5, 6, 12, 13, 14, 16, 17):
            if size != 4:
                raise DecodeError(f"nfqueue: attribute {Q.QUEUE.attrs[t].name} has {size} bytes, "
                                  "expected 4", off)
            v = be32(p, body)[0]
            if t == 3:
                pkt.mark = v
            elif t == 5:
                pkt.indev = v
            elif t == 6:
                pkt.outdev = v
            elif t == 12:
                pkt.ct_info = v
            elif t == 13:
                pkt.cap_len = v
            elif t == 14:
                pkt.skb_info = v
            elif t == 16:
                pkt.uid = v
            else:
                pkt.gid = v
        elif t == 11:
            pkt.ct = Q.CT.decode(p[body:end])
        elif t == 4 and size == 16:
            sec, usec = _TIMESTAMP.unpack_from(p, body)
            pkt.timestamp = sec + usec / 1e6
        else:
            a = Q.QUEUE.attrs.get(t)
            pkt.extra[a.name if a else t] = bytes(p[body:end])
        off = (end + 3) & ~3
    if pkt.id < 0:
        raise DecodeError("nfqueue: packet message without NFQA_PACKET_HDR")
    return pkt


# the fields `PacketLayouts.decode` gives, in this order
PACKET_FIELDS = ("queue", "id", "mark", "cap_len", "skb_info", "payload_start", "payload_end")
_NOT_CUT = -1  # cap_len of a packet copied whole
# the leaves a layout reads (the packet id is the first 4 bytes of NFQA_PACKET_HDR), and their defaults
_LEAVES = {("packet_hdr",): "id", ("mark",): "mark", ("cap_len",): "cap_len", ("skb_info",): "skb_info"}
_DEFAULTS = {"mark": "0", "cap_len": str(_NOT_CUT), "skb_info": "0"}


class _PacketLayout(Layout):
    """A queued packet's layout (`netlink.shapes`), with ``pick``: values, payload start and
    stop -> the `PACKET_FIELDS`; ``brief``: the same -> (id, mark, cap_len, start, stop)."""

    __slots__ = ("brief", "pick")

    def __init__(self, walk: Walk, length: int, tag: Any = None) -> None:
        if length < 4:
            raise DecodeError("nfqueue: packet message too short for nfgenmsg")
        leaves: list[tuple[int, Hashable, Kind | None, int]] = [(2, "queue", Kind.BE16, 2)]  # nfgenmsg's res_id
        for off, name, kind, size in walk.leaves:
            if name == "id":
                if size != 7:
                    raise DecodeError(f"nfqueue: packet header of {size} bytes, expected 7", off - 4)
                kind, size = Kind.BE32, 4
            leaves.append((off, name, kind, size))
        walk.leaves = leaves
        super().__init__(walk, length, tag)
        if "id" not in self.index:
            raise DecodeError("nfqueue: packet message without NFQA_PACKET_HDR")
        where = [f"v[{self.index[n]}]" if n in self.index else _DEFAULTS[n] for n in PACKET_FIELDS[:5]]
        self.pick: Callable[[tuple[Any, ...], int, int], tuple[int, ...]] = eval(  # noqa: S307 - from the walk
            f"lambda v, start, stop: ({', '.join(where)}, start, stop)")
        self.brief: Callable[[tuple[Any, ...], int, int], tuple[int, int, int, int, int]] = eval(  # noqa: S307
            f"lambda v, start, stop: ({', '.join(where[1:4])}, start, stop)")


class PacketLayouts:
    """Queued packets decoded by layout (see the module docstring): ``decode`` gives the
    `PACKET_FIELDS` of one NFQNL_MSG_PACKET, as `parse_packet` would, without a `Packet`.

    The layouts are the netlink core's (`Shapes.find_tail`, the payload the trailing
    attribute): one per set of attributes before the payload; a packet whose payload is
    not last has a layout of its whole length.  At most ``limit`` layouts are kept.
    """

    def __init__(self, limit: int = 8) -> None:
        self.shapes: Shapes[_PacketLayout] = Shapes(Q.QUEUE, _PacketLayout, names=_LEAVES, head=4,
                                                    tail="payload", max_layouts=limit)
        self._find = self.shapes.find_tail

    @property
    def layouts(self) -> list[_PacketLayout]:
        """The layouts of the attributes before a trailing payload, as learnt."""
        return self.shapes.trailing

    def decode(self, buf: bytes | bytearray | memoryview, off: int, end: int
               ) -> tuple[int, int, int, int, int, int, int]:
        """The fields of the packet message whose payload (nfgenmsg first) is ``buf[off:end]``.

        Raises DecodeError on a malformed message.
        """
        lay, v, start, stop = self._find(buf, off, end - off)
        return lay.pick(v, start, stop)  # type: ignore[return-value]


    def packets(self, buf: bytearray | memoryview, spans: list[tuple[int, int]], whole: bool = False
                ) -> tuple[list[tuple[int, ...]], list[int]]:
        """The queued packets of these datagrams (``buf[offset:offset + length]`` each,
        whole netlink messages, as `nfkit.netlink.mmsg` reads them): ``(id, mark, cap_len
        or -1, payload start, payload stop)`` each (``whole``: the `PACKET_FIELDS`, as
        `decode` gives them), in order; and the errno of each NLMSG_ERROR among them (a
        verdict the kernel refused; ACKs left out).

        Raises DecodeError on a malformed packet message.
        """
        out: list[tuple[int, ...]] = []
        errors: list[int] = []
        find = self._find
        unpack = _NLMSG.unpack_from
        for off, length in spans:
            end = off + length
            while off + 16 <= end:
                mlen, mtype = unpack(buf, off)
                if mlen < 16 or off + mlen > end:
                    break  # a datagram's tail cannot be a message: nothing more in it
                if mtype == _PACKET:
                    lay, v, start, stop = find(buf, off + 16, mlen - 16)
                    out.append((lay.pick if whole else lay.brief)(v, start, stop))
                elif mtype == NLMSG_ERROR and mlen >= 20:
                    err = -_ERRNO.unpack_from(buf, off + 16)[0]
                    if err:
                        errors.append(err)
                off += (mlen + 3) & ~3
        return out, errors


# -- configuration ----------------------------------------------------------------

def _check_queue(queue: int) -> None:
    if not 0 <= queue <= 0xFFFF:
        raise InputError(f"queue {queue}: queue numbers are 0-65535")


def config_command(w: MessageWriter, queue: int, command: int, pf: int = 0) -> int:
    """Append one NFQNL_MSG_CONFIG carrying NFQA_CFG_CMD (bind, unbind); returns its seq."""
    _check_queue(queue)
    seq = w.begin(Q.CONFIG, NLM_F_REQUEST, family=NFPROTO_UNSPEC, res_id=queue)
    w.binary(Q.CFG.number("cmd"), _CFG_CMD.pack(command, pf))
    w.end()
    return seq


def config_params(w: MessageWriter, queue: int, copy_mode: int = Q.NFQNL_COPY_PACKET,
                  copy_range: int = 0xFFFF, maxlen: int | None = None,
                  flags: int | None = None, mask: int | None = None) -> int:
    """Append one NFQNL_MSG_CONFIG setting copy mode and range, and optionally the queue's
    length and flags (``mask``: which flags to change, default those in ``flags``... and
    every known flag when ``flags`` is 0).  Returns its seq."""
    _check_queue(queue)
    if copy_mode not in COPY_MODES.values():
        raise InputError(f"copy mode {copy_mode}: one of {sorted(COPY_MODES.values())}")
    if not 0 <= copy_range <= 0xFFFFFFFF:
        raise InputError(f"copy range {copy_range}: 0-4294967295 bytes")
    seq = w.begin(Q.CONFIG, NLM_F_REQUEST, family=NFPROTO_UNSPEC, res_id=queue)
    w.binary(Q.CFG.number("params"), _CFG_PARAMS.pack(copy_range, copy_mode))
    if maxlen is not None:
        w.be32(Q.CFG.number("queue_maxlen"), maxlen)
    if flags is not None:
        all_flags = Q.NFQA_CFG_F_SECCTX * 2 - 1
        if flags & ~all_flags:
            raise InputError(f"queue flags {flags:#x}: unknown bits {flags & ~all_flags:#x}")
        w.be32(Q.CFG.number("mask"), all_flags if mask is None else mask)
        w.be32(Q.CFG.number("flags"), flags)
    w.end()
    return seq


# -- verdicts ---------------------------------------------------------------------

def verdict_bytes(queue: int, packet_id: int, verdict: int, mark: int | None = None,
                  batch: bool = False, seq: int = 0) -> bytes:
    """One verdict message (NFQNL_MSG_VERDICT, or NFQNL_MSG_VERDICT_BATCH for every id up
    to ``packet_id``), with NFQA_MARK when ``mark`` is given."""
    mtype = Q.VERDICT_BATCH if batch else Q.VERDICT
    if mark is None:
        return (_MSG_HDR.pack(_VERDICT_LEN, mtype, NLM_F_REQUEST, seq, 0)
                + _NFGEN.pack(NFPROTO_UNSPEC, 0, queue) + _VERDICT_ATTR + _VERDICT_HDR.pack(verdict, packet_id))
    return (_MSG_HDR.pack(_VERDICT_LEN + 8, mtype, NLM_F_REQUEST, seq, 0)
            + _NFGEN.pack(NFPROTO_UNSPEC, 0, queue) + _VERDICT_ATTR + _VERDICT_HDR.pack(verdict, packet_id)
            + _MARK_ATTR + _BE32.pack(mark & 0xFFFFFFFF))


# A block of verdict messages written once, where a hot loop changes only each one's packet id
# and mark: every message NFQNL_MSG_VERDICT, NF_ACCEPT, with NFQA_MARK (a packet whose mark
# is not to change gets its own back), VERDICT_STRIDE bytes apart.
VERDICT_STRIDE = _VERDICT_LEN + 8
VERDICT_ID_MARK = struct.Struct(">I4sI")  # packet id, NFQA_MARK's header (MARK_HEADER), mark
VERDICT_ID_MARK_AT = 16 + 4 + 4 + 4       # nlmsghdr, nfgenmsg, NFQA_VERDICT_HDR's header, verdict
MARK_HEADER = _MARK_ATTR


def verdict_block(queue: int, count: int) -> bytearray:
    """``count`` accept verdicts with a mark for queue ``queue``, one after the other: the
    i-th message's packet id and mark go in with ``VERDICT_ID_MARK.pack_into(block,
    i * VERDICT_STRIDE + VERDICT_ID_MARK_AT, id, MARK_HEADER, mark)``; send the first
    n * VERDICT_STRIDE bytes in one sendmsg."""
    _check_queue(queue)
    return bytearray(verdict_bytes(queue, 0, NF_ACCEPT, 0) * count)


def parse_verdict(msg: Message) -> tuple[int, int, int, int | None, bool]:
    """(queue, packet id, verdict, mark or None, batch) of a verdict message (tests, tools)."""
    if msg.type not in (Q.VERDICT, Q.VERDICT_BATCH):
        raise DecodeError(f"nfqueue: message type {msg.type:#x} is not a verdict")
    attrs = Q.QUEUE.decode(msg.attrs)
    hdr = attrs.get("verdict_hdr")
    if not isinstance(hdr, bytes) or len(hdr) != 8:
        raise DecodeError("nfqueue: verdict without an 8-byte NFQA_VERDICT_HDR")
    verdict, pid = _VERDICT_HDR.unpack(hdr)
    return msg.res_id, pid, verdict, attrs.get("mark"), msg.type == Q.VERDICT_BATCH


def packet_hdr(packet_id: int, hw_protocol: int, hook: int) -> bytes:
    """The 7 bytes of struct nfqnl_msg_packet_hdr (tests build packet messages with it)."""
    return _PACKET_HDR.pack(packet_id, hw_protocol, hook)


def config_cmd_struct(command: int, pf: int = 0) -> bytes:
    return _CFG_CMD.pack(command, pf)


def config_params_struct(copy_range: int, copy_mode: int) -> bytes:
    return _CFG_PARAMS.pack(copy_range, copy_mode)
