"""ctnetlink messages for conntrack entries: decode into `Entry`, encode back.

This module owns the translation between ctnetlink attribute streams and the
entry model, both ways, without any socket.  Attribute numbers come from the
one table, `nfkit.netlink.specs.ctnetlink`.

Decoding is the hot path of every listing (hundreds of thousands of entries),
so it is done by the netlink core's *layouts* (`nfkit.netlink.shapes`): the
first message of a given shape (the same attribute headers at the same
offsets) is walked once and compiled into a header struct and a values struct
unpacking the leaves an entry needs (`ENTRY_FIELDS`); this module adds the
generated constructor; the output lines are compiled from
`formats`' description of them over the same values.  Every later message of that length
is checked against the recorded headers (one unpack, one tuple comparison)
and decoded by one more unpack; a message whose headers differ gets its own
layout.  The result is the same as a walk, by construction.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from nfkit.conntrack.formats import PORT, LineShape, Memo, line_function
from nfkit.conntrack.model import (
    AF_INET,
    AF_INET6,
    ICMP_PROTOS,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    PORT_PROTOS,
    STATUS_UNCHANGEABLE,
    Counters,
    Entry,
    Status,
    Tuple,
)
from nfkit.errors import DecodeError, InputError
from nfkit.netlink.codec import MessageWriter, Template
from nfkit.netlink.consts import NFNL_SUBSYS_CTNETLINK, NLM_F_REQUEST, nfnl_msg_type
from nfkit.netlink.shapes import Layout, Shapes, Walk
from nfkit.netlink.specs import ctnetlink as S

CT = S.CT
CTA_TUPLE_ORIG = CT.number("tuple_orig")
CTA_TUPLE_REPLY = CT.number("tuple_reply")
CTA_STATUS = CT.number("status")
CTA_PROTOINFO = CT.number("protoinfo")
CTA_HELP = CT.number("help")
CTA_TIMEOUT = CT.number("timeout")
CTA_MARK = CT.number("mark")
CTA_COUNTERS_ORIG = CT.number("counters_orig")
CTA_COUNTERS_REPLY = CT.number("counters_reply")
CTA_USE = CT.number("use")
CTA_ID = CT.number("id")
CTA_ZONE = CT.number("zone")
CTA_SECCTX = CT.number("secctx")
CTA_TIMESTAMP = CT.number("timestamp")
CTA_MARK_MASK = CT.number("mark_mask")
CTA_LABELS = CT.number("labels")
CTA_LABELS_MASK = CT.number("labels_mask")
CTA_FILTER = CT.number("filter")
CTA_NAT_SRC = CT.number("nat_src")
CTA_NAT_DST = CT.number("nat_dst")
CTA_STATUS_MASK = CT.number("status_mask")

CTA_TUPLE_IP = S.TUPLE.number("ip")
CTA_TUPLE_PROTO = S.TUPLE.number("proto")
CTA_TUPLE_ZONE = S.TUPLE.number("zone")
CTA_IP_V4_SRC = S.IP.number("v4_src")
CTA_IP_V4_DST = S.IP.number("v4_dst")
CTA_IP_V6_SRC = S.IP.number("v6_src")
CTA_IP_V6_DST = S.IP.number("v6_dst")
CTA_PROTO_NUM = S.PROTO.number("num")
CTA_PROTO_SRC_PORT = S.PROTO.number("src_port")
CTA_PROTO_DST_PORT = S.PROTO.number("dst_port")
CTA_PROTO_ICMP_ID = S.PROTO.number("icmp_id")
CTA_PROTO_ICMP_TYPE = S.PROTO.number("icmp_type")
CTA_PROTO_ICMP_CODE = S.PROTO.number("icmp_code")
CTA_PROTO_ICMPV6_ID = S.PROTO.number("icmpv6_id")
CTA_PROTO_ICMPV6_TYPE = S.PROTO.number("icmpv6_type")
CTA_PROTO_ICMPV6_CODE = S.PROTO.number("icmpv6_code")
CTA_PROTOINFO_TCP = S.PROTOINFO.number("tcp")
CTA_PROTOINFO_TCP_STATE = S.PROTOINFO_TCP.number("state")
CTA_PROTOINFO_TCP_FLAGS_ORIGINAL = S.PROTOINFO_TCP.number("flags_original")
CTA_PROTOINFO_TCP_FLAGS_REPLY = S.PROTOINFO_TCP.number("flags_reply")
CTA_PROTOINFO_SCTP = S.PROTOINFO.number("sctp")
# struct nf_ct_tcp_flags bits (IP_CT_TCP_FLAG_*): what a synced entry's TCP tracking may assume
TCP_FLAG_WINDOW_SCALE = 0x01
TCP_FLAG_SACK_PERM = 0x02
TCP_FLAG_CLOSE_INIT = 0x04
TCP_FLAG_BE_LIBERAL = 0x08
CTA_COUNTERS_PACKETS = S.COUNTERS.number("packets")
CTA_COUNTERS_BYTES = S.COUNTERS.number("bytes")
CTA_COUNTERS32_PACKETS = S.COUNTERS.number("packets32")
CTA_COUNTERS32_BYTES = S.COUNTERS.number("bytes32")
CTA_TIMESTAMP_START = S.TIMESTAMP.number("start")
CTA_TIMESTAMP_STOP = S.TIMESTAMP.number("stop")
CTA_HELP_NAME = S.HELP.number("name")
CTA_SECCTX_NAME = S.SECCTX.number("name")
CTA_FILTER_ORIG_FLAGS = S.FILTER.number("orig_flags")
CTA_FILTER_REPLY_FLAGS = S.FILTER.number("reply_flags")

MSG_NEW = nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, S.IPCTNL_MSG_CT_NEW)
MSG_GET = nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, S.IPCTNL_MSG_CT_GET)
MSG_DELETE = nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, S.IPCTNL_MSG_CT_DELETE)
MSG_GET_STATS_CPU = nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, S.IPCTNL_MSG_CT_GET_STATS_CPU)
MSG_GET_STATS = nfnl_msg_type(NFNL_SUBSYS_CTNETLINK, S.IPCTNL_MSG_CT_GET_STATS)

_HDR = struct.Struct("=IHHII")
NLMSG_HDRLEN = 16
NFGEN_HDRLEN = 4


# ---------------------------------------------------------------- addresses

def _ntop(raw: bytes) -> str:
    if len(raw) == 4:
        return socket.inet_ntop(AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(AF_INET6, raw)
    raise DecodeError(f"address attribute of {len(raw)} bytes")


ADDR = Memo(_ntop, limit=1 << 20)  # bytes -> address text (tables repeat addresses a lot)


def addr_text(raw: bytes) -> str:
    """Text of a 4- or 16-byte address (cached); raises DecodeError for other lengths."""
    return ADDR[raw]  # type: ignore[no-any-return]


_PTON: dict[str, bytes] = {}


def _pton(text: str) -> bytes:
    """`addr_bytes`, remembered (bulk encoders see the same addresses again and again)."""
    b = addr_bytes(text)
    if len(_PTON) > 1 << 20:
        _PTON.clear()
    _PTON[text] = b
    return b


def addr_bytes(text: str) -> bytes:
    """Raw bytes of an address in text; raises InputError if it does not parse."""
    family = AF_INET6 if ":" in text else AF_INET
    try:
        return socket.inet_pton(family, text)
    except OSError:
        raise InputError(f"{text!r} is not an IPv4 or IPv6 address") from None


# ---------------------------------------------------------------- walking

# The leaves an entry is made of, by their path in the ctnetlink tables (names from
# nfkit.netlink.specs.ctnetlink), under the field names the generated code uses.
# IPv4 and IPv6 addresses, ICMP and ICMPv6 keys, 64- and 32-bit counters share a field.
def _entry_fields() -> dict[tuple[str, ...], str]:
    out: dict[tuple[str, ...], str] = {}
    for top, p in (("tuple_orig", "o."), ("tuple_reply", "r.")):
        for v in ("v4", "v6"):
            out[(top, "ip", v + "_src")] = p + "src"
            out[(top, "ip", v + "_dst")] = p + "dst"
        out[(top, "proto", "num")] = p + "proto"
        out[(top, "proto", "src_port")] = p + "sport"
        out[(top, "proto", "dst_port")] = p + "dport"
        for icmp in ("icmp", "icmpv6"):
            for key in ("id", "type", "code"):
                out[(top, "proto", f"{icmp}_{key}")] = f"{p}icmp_{key}"
        out[(top, "zone")] = p + "zone"
    for name in ("status", "timeout", "mark", "use", "id", "zone", "labels"):
        out[(name,)] = name
    out[("protoinfo", "tcp", "state")] = "state"
    out[("protoinfo", "sctp", "state")] = "sctp_state"
    out[("protoinfo", "sctp", "vtag_original")] = "vtag_o"
    out[("protoinfo", "sctp", "vtag_reply")] = "vtag_r"
    out[("protoinfo", "dccp", "state")] = "dccp_state"
    for top, p in (("counters_orig", "co."), ("counters_reply", "cr.")):
        for key in ("packets", "bytes"):
            out[(top, key)] = p + key
            out[(top, key + "32")] = p + key
    out[("timestamp", "start")] = "ts_start"
    out[("timestamp", "stop")] = "ts_stop"
    out[("help", "name")] = "helper"
    out[("secctx", "name")] = "secctx"
    return out


ENTRY_FIELDS = _entry_fields()


def _new_entry(family: int, orig: Tuple, reply: Tuple | None, status: int, state: int | None,
               timeout: int | None, mark: int, zone: int | None, labels: int | None,
               counters: Counters | None, ts_start: int | None, ts_stop: int | None,
               helper: str | None, id: int | None, use: int | None, secctx: str | None,
               vtags: tuple[int, int] | None = None) -> Entry:
    e = object.__new__(Entry)
    e.family = family
    e.orig = orig
    e._reply = reply
    e.status = status
    e.state = state
    e.timeout = timeout
    e.mark = mark
    e.zone = zone
    e.labels = labels
    e.counters = counters
    e.ts_start = ts_start
    e.ts_stop = ts_stop
    e.helper = helper
    e.id = id
    e.use = use
    e.secctx = secctx
    e.vtags = vtags
    return e


def _cstr(b: bytes) -> str:
    n = b.find(b"\0")
    return (b if n < 0 else b[:n]).decode("utf-8", "surrogateescape")


def _labels(b: bytes) -> int | None:
    v = int.from_bytes(b, "little")
    return v or None


def _reply_or_none(o: Tuple, r: Tuple) -> Tuple | None:
    return None if r == o.mirror() else r


_GLOBALS = {"T": Tuple, "TN": tuple.__new__, "E": _new_entry, "A": ADDR, "C": Counters, "cstr": _cstr,
            "L": _labels, "R": _reply_or_none, "PORT": PORT_PROTOS}


class _Layout(Layout):
    """A compiled decoder for entry messages of one shape (the core's `Layout`, tagged
    with the message's family), plus what is generated from it.

    ``build(values)`` makes the Entry; for tuples with ports and no tuple
    zones (the common shapes) ``text(values)`` and ``json(values)`` write the
    lines of `formats.entry_text` / `formats.entry_json` directly from the
    unpacked values, compiled from formats' one description of those lines
    (`formats.line_function`); they are None for other shapes.
    """

    __slots__ = ("build", "json", "key_spans", "text")

    def __init__(self, walk: Walk, length: int, family: int) -> None:
        super().__init__(walk, length, family)
        self.build, self.text, self.json = self._compile(self.index, family)
        # where the attributes that identify the entry lie: a delete copies them as they are
        self.key_spans = [walk.spans[t] for t in ("tuple_orig", "zone", "id") if t in walk.spans]

    def prefilter(self, states: frozenset[int] | None, timeout_below: int | None,
                  proto: int | None = None) -> Callable[..., bool]:
        """A cheap test on the unpacked values that is False only where `Filter.matches`
        is False for these conditions (TCP states, remaining timeout, and the protocol
        when ``proto`` is given); for a filter of only these conditions it is the whole
        match, otherwise the full match still decides the rest."""
        conds = []
        if proto is not None:
            conds.append(f"v[{self.index['o.proto']}] == {int(proto)}")
        if states is not None:
            if "state" not in self.index:
                return lambda v: False
            conds.append(f"v[{self.index['state']}] in S")
        if timeout_below is not None:
            if "timeout" not in self.index:
                return lambda v: False
            conds.append(f"v[{self.index['timeout']}] < {int(timeout_below)}")
        if not conds:
            return lambda v: True
        namespace: dict[str, Any] = {}
        exec("def pre(v):\n    return " + " and ".join(conds),  # noqa: S102 - generated above
             {"S": frozenset(states or ())}, namespace)
        return namespace["pre"]  # type: ignore[no-any-return]

    @staticmethod
    def _compile(ix: dict[Any, int], family: int) -> tuple[Callable[..., Any], Any, Any]:
        def get(name: str, default: str = "None") -> str:
            return f"v[{ix[name]}]" if name in ix else default

        def tup(p: str, src: str, dst: str) -> str:
            parts = [src, dst, get(p + "proto", "0"),
                     get(p + "sport", "0"), get(p + "dport", "0"), get(p + "icmp_type"),
                     get(p + "icmp_code"), get(p + "icmp_id"), get(p + "zone")]
            return "TN(T, (" + ", ".join(parts) + "))"

        if "o.src" not in ix or "o.dst" not in ix or "o.proto" not in ix:
            raise DecodeError("conntrack entry without a complete original tuple")
        has_reply = "r.src" in ix and "r.dst" in ix
        simple = has_reply and not any(k in ix for k in ("r.zone", "o.zone", "r.icmp_type", "o.icmp_type"))
        # raw-bytes test: the reply is the mirror of the original (no NAT)
        mirror = (f"({get('r.src')} == {get('o.dst')} and {get('r.dst')} == {get('o.src')} and "
                  f"{get('r.sport', '0')} == {get('o.dport', '0')} and "
                  f"{get('r.dport', '0')} == {get('o.sport', '0')} and "
                  f"{get('r.proto', '0')} == {get('o.proto', '0')})")
        def addr(name: str) -> str:
            return "A[" + get(name) + "]"

        lines = ["def build(v):", "    o = " + tup("o.", addr("o.src"), addr("o.dst"))]
        if has_reply and simple:
            lines.append(f"    r = None if {mirror} else " + tup("r.", addr("r.src"), addr("r.dst")))
        elif has_reply:
            lines.append("    r = R(o, " + tup("r.", addr("r.src"), addr("r.dst")) + ")")
        else:
            lines.append("    r = None")
        counters = "None"
        has_counters = "co.packets" in ix or "cr.packets" in ix
        if has_counters:
            counters = (f"C({get('co.packets', '0')}, {get('co.bytes', '0')}, "
                        f"{get('cr.packets', '0')}, {get('cr.bytes', '0')})")
        labels = f"L({get('labels')})" if "labels" in ix else "None"
        helper = f"cstr({get('helper')})" if "helper" in ix else "None"
        secctx = f"cstr({get('secctx')})" if "secctx" in ix else "None"
        # the state of the entry's protocol: one field, whichever protoinfo nest held it
        state_key = next((k for k in ("state", "sctp_state", "dccp_state") if k in ix), "state")
        vtags = f"({get('vtag_o')}, {get('vtag_r')})" if "vtag_o" in ix and "vtag_r" in ix else "None"
        lines.append(
            f"    return E({family}, o, r, {get('status', '0')}, {get(state_key)}, {get('timeout')}, "
            f"{get('mark', '0')}, {get('zone')}, {labels}, {counters}, {get('ts_start')}, "
            f"{get('ts_stop')}, {helper}, {get('id')}, {get('use')}, {secctx}, {vtags})")
        src = "\n".join(lines)
        namespace: dict[str, Any] = {}
        exec(src, _GLOBALS, namespace)  # noqa: S102 - code generated above from the layout
        # the output lines, written by formats' one description of them straight
        # from the values, for tuples with ports and no tuple zones (the common
        # case); None for other shapes (then through an Entry)
        if "o.sport" not in ix or "o.zone" in ix or "r.zone" in ix or (has_reply and "r.sport" not in ix):
            return namespace["build"], None, None
        exprs = {"family": str(family), "state": get(state_key), "status": get("status", "0"),
                 "mark": get("mark", "0"), "ts_stop": get("ts_stop"), "labels": f"L({get('labels')})",
                 "helper": f"cstr({get('helper')})", "secctx": f"cstr({get('secctx')})"}
        for side in ("o.", "r."):
            exprs[side + "src"] = addr(side + "src")
            exprs[side + "dst"] = addr(side + "dst")
        for name in ("co.packets", "co.bytes", "cr.packets", "cr.bytes"):
            exprs[name] = get(name, "0")
        has = frozenset(k for k in ("timeout", "use", "id", "zone", "ts_start", "helper", "secctx", "labels")
                        if k in ix)
        if state_key in ix:
            has |= {"state"}
        if "co.packets" in ix or "cr.packets" in ix:
            has |= {"counters"}

        def x(name: str) -> str:
            return exprs.get(name) or get(name)

        lines_of = [line_function(LineShape(form, PORT, PORT if has_reply else None, has), "v", x, mirror,
                                  _GLOBALS) for form in ("text", "json")]
        return namespace["build"], lines_of[0], lines_of[1]


class EntryDecoder:
    """Decodes ctnetlink entry messages (IPCTNL_MSG_CT_NEW/DELETE payloads) into `Entry`.

    `decode(buf, off, length, family)` takes the attribute stream at
    ``buf[off:off+length]``; `text` and `json` return the entry's output line
    directly.  Raise DecodeError on malformed input.  The layouts are the
    netlink core's (`nfkit.netlink.shapes`), keyed by length and family.
    """

    MAX_LAYOUTS = 4096

    def __init__(self) -> None:
        self.shapes: Shapes[_Layout] = Shapes(CT, _Layout, names=ENTRY_FIELDS, max_layouts=self.MAX_LAYOUTS,
                                              max_per_length=self.MAX_LAYOUTS)
        self.find = self.shapes.find  # the layout of a message and its values (`Shapes.find`)

    def layout(self, buf: bytes | bytearray | memoryview, off: int, length: int,
               family: int) -> tuple[_Layout, tuple[Any, ...]]:
        """The layout of the message at ``off`` and its unpacked values."""
        return self.shapes.find(buf, off, length, family)

    def decode(self, buf: bytes | bytearray | memoryview, off: int, length: int, family: int) -> Entry:
        lay, v = self.find(buf, off, length, family)
        return lay.build(v)  # type: ignore[no-any-return]

    def text(self, buf: bytes | bytearray | memoryview, off: int, length: int, family: int) -> str:
        """conntrack -L's line for the entry (formats.entry_text, no label names)."""
        return self._line("text", buf, off, length, family)

    def json(self, buf: bytes | bytearray | memoryview, off: int, length: int, family: int) -> str:
        """The entry's JSON line (formats.entry_json)."""
        return self._line("json", buf, off, length, family)

    def _line(self, form: str, buf: bytes | bytearray | memoryview, off: int, length: int, family: int) -> str:
        lay, v = self.find(buf, off, length, family)
        return self.line(form, lay, v)

    @staticmethod
    def line(form: str, lay: _Layout, v: tuple[Any, ...]) -> str:
        """The ``form`` ("text" or "json") line of the entry ``v`` of layout ``lay``."""
        fn = getattr(lay, form)
        if fn is not None:
            return fn(v)  # type: ignore[no-any-return]
        from nfkit.conntrack.formats import entry_json, entry_text

        return (entry_text if form == "text" else entry_json)(lay.build(v))

    def decode_attrs(self, attrs: bytes | bytearray | memoryview, family: int) -> Entry:
        """Decode one attribute stream (e.g. `Message.attrs`)."""
        return self.decode(attrs, 0, len(attrs), family)


# ---------------------------------------------------------------- encoding


def _put_tuple(w: MessageWriter, attr: int, t: Tuple, fields: int = -1) -> None:
    with w.nest(attr):
        with w.nest(CTA_TUPLE_IP):
            src, dst = addr_bytes(t.src), addr_bytes(t.dst)
            if len(src) != len(dst):
                raise InputError(f"tuple {t.src} -> {t.dst}: addresses of different families")
            v6 = len(src) == 16
            w.binary(CTA_IP_V6_SRC if v6 else CTA_IP_V4_SRC, src)
            w.binary(CTA_IP_V6_DST if v6 else CTA_IP_V4_DST, dst)
        with w.nest(CTA_TUPLE_PROTO):
            w.u8(CTA_PROTO_NUM, t.proto)
            if t.proto in PORT_PROTOS:
                w.be16(CTA_PROTO_SRC_PORT, t.sport)
                w.be16(CTA_PROTO_DST_PORT, t.dport)
            elif t.proto in ICMP_PROTOS:
                six = t.proto == IPPROTO_ICMPV6
                w.be16(CTA_PROTO_ICMPV6_ID if six else CTA_PROTO_ICMP_ID, t.icmp_id or 0)
                w.u8(CTA_PROTO_ICMPV6_TYPE if six else CTA_PROTO_ICMP_TYPE, t.icmp_type or 0)
                w.u8(CTA_PROTO_ICMPV6_CODE if six else CTA_PROTO_ICMP_CODE, t.icmp_code or 0)
        if t.zone is not None:
            w.be16(CTA_TUPLE_ZONE, t.zone)


put_tuple = _put_tuple  # one tuple nest (CTA_TUPLE_*): expectations' tuples are these too


def put_entry_key(w: MessageWriter, e: Entry) -> None:
    """The attributes that identify ``e``: original tuple, zone and (if known) id."""
    _put_tuple(w, CTA_TUPLE_ORIG, e.orig)
    if e.zone:
        w.be16(CTA_ZONE, e.zone)
    if e.id is not None:
        w.be32(CTA_ID, e.id)


def labels_bytes(labels: int) -> bytes:
    if labels >= 1 << 128 or labels < 0:
        raise InputError(f"labels {labels:#x} out of range (128 bits)")
    return labels.to_bytes(16, "little")


def _checked(fn: Callable[..., int]) -> Callable[..., int]:
    """Turn a value that does not fit its attribute into InputError naming the entry."""
    import functools

    @functools.wraps(fn)
    def run(w: MessageWriter, e: Entry, *args: Any, **kw: Any) -> int:
        mark = len(w.buffer), len(w.seqs)
        try:
            return fn(w, e, *args, **kw)
        except (struct.error, OverflowError) as exc:
            del w.buffer[mark[0]:]  # drop the half-written message
            del w.seqs[mark[1]:]
            w._start = -1
            raise InputError(f"conntrack entry {e!r}: a value does not fit its field ({exc})") from None
    return run


def _put_tcp_protoinfo(w: MessageWriter, state: int | None, tcp_flags: int | None) -> None:
    with w.nest(CTA_PROTOINFO), w.nest(CTA_PROTOINFO_TCP):
        if state is not None:
            w.u8(CTA_PROTOINFO_TCP_STATE, state)
        if tcp_flags is not None:  # the same flags (and mask) both ways
            w.binary(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, bytes((tcp_flags, tcp_flags)))
            w.binary(CTA_PROTOINFO_TCP_FLAGS_REPLY, bytes((tcp_flags, tcp_flags)))


def _put_sctp_protoinfo(w: MessageWriter, state: int, vtags: tuple[int, int] | None) -> None:
    # the kernel takes an SCTP state only with both verification tags (0 when unknown)
    vtag_o, vtag_r = vtags or (0, 0)
    with w.nest(CTA_PROTOINFO), w.nest(CTA_PROTOINFO_SCTP):
        w.u8(S.PROTOINFO_SCTP.number("state"), state)
        w.be32(S.PROTOINFO_SCTP.number("vtag_original"), vtag_o)
        w.be32(S.PROTOINFO_SCTP.number("vtag_reply"), vtag_r)


@_checked
def encode_create(w: MessageWriter, e: Entry, flags: int, *, tcp_flags: int | None = None,
                  with_helper: bool = False) -> int:
    """One IPCTNL_MSG_CT_NEW creating ``e`` (status gets CONFIRMED); returns its seq.

    ``tcp_flags``: TCP_FLAG_* bits set in both directions (a TCP entry with a state);
    ``with_helper``: attach ``e.helper`` (the kernel refuses a helper it does not have)."""
    seq = w.begin(MSG_NEW, NLM_F_REQUEST | flags, family=e.family)
    _put_tuple(w, CTA_TUPLE_ORIG, e.orig)
    snat, dnat = e.nat and bool(e.status & Status.SRC_NAT), e.nat and bool(e.status & Status.DST_NAT)
    if snat or dnat:
        # Re-create the NAT binding: the kernel's NAT computes the reply tuple from the
        # mirror and the address/port ranges (and sets SRC_NAT/DST_NAT and their _DONE bits).
        _put_tuple(w, CTA_TUPLE_REPLY, e.orig.mirror())
        r = e.reply
        if dnat:
            _put_nat(w, CTA_NAT_DST, r.src, r.sport if r.proto in PORT_PROTOS else None)
        if snat:
            _put_nat(w, CTA_NAT_SRC, r.dst, r.dport if r.proto in PORT_PROTOS else None)
    else:
        _put_tuple(w, CTA_TUPLE_REPLY, e.reply)
    if e.zone:
        w.be16(CTA_ZONE, e.zone)
    w.be32(CTA_TIMEOUT, e.timeout if e.timeout is not None else 30)
    # A created entry is confirmed by the kernel; asking for status without the bit is EBUSY.
    w.be32(CTA_STATUS, (e.status | 8) & ~int(_CREATE_DROP))
    if e.mark:
        w.be32(CTA_MARK, e.mark)
    if e.state is not None and e.proto == 6:
        _put_tcp_protoinfo(w, e.state, tcp_flags)
    elif e.state is not None and e.proto == IPPROTO_SCTP:
        _put_sctp_protoinfo(w, e.state, e.vtags)
    if e.labels:
        w.binary(CTA_LABELS, labels_bytes(e.labels))
    if with_helper and e.helper:
        with w.nest(CTA_HELP):
            w.string(S.HELP.number("name"), e.helper)
    w.end()
    return seq


def _put_nat(w: MessageWriter, attr: int, addr: str, port: int | None) -> None:
    raw = addr_bytes(addr)
    six = len(raw) == 16
    with w.nest(attr):
        w.binary(S.NAT.number("v6_minip" if six else "v4_minip"), raw)
        w.binary(S.NAT.number("v6_maxip" if six else "v4_maxip"), raw)
        if port is not None:
            with w.nest(S.NAT.number("proto")):
                w.be16(S.PROTONAT.number("port_min"), port)
                w.be16(S.PROTONAT.number("port_max"), port)


# Bits a create request must not carry: the kernel sets or refuses them itself.
_CREATE_DROP = STATUS_UNCHANGEABLE & ~Status.CONFIRMED


def create_status(status: int) -> int:
    """The status a create sends for an entry of ``status`` (CONFIRMED set, the bits the
    kernel refuses to be given dropped)."""
    return (status | 8) & ~int(_CREATE_DROP)


@_checked
def encode_update(w: MessageWriter, e: Entry, *, mark: int | None = None, mark_mask: int | None = None,
                  timeout: int | None = None, status: int | None = None, labels: int | None = None,
                  labels_mask: int | None = None, tcp_state: int | None = None,
                  tcp_flags: int | None = None, sctp_state: int | None = None) -> int:
    """One IPCTNL_MSG_CT_NEW (no NLM_F_CREATE) changing ``e`` in place; returns its seq.

    ``sctp_state``: an SCTP entry's new state, sent with ``e.vtags``."""
    seq = w.begin(MSG_NEW, NLM_F_REQUEST, family=e.family)
    put_entry_key(w, e)
    if timeout is not None:
        w.be32(CTA_TIMEOUT, timeout)
    if status is not None:
        w.be32(CTA_STATUS, status)
    if (tcp_state is not None or tcp_flags is not None) and e.proto == 6:
        _put_tcp_protoinfo(w, tcp_state, tcp_flags)
    elif sctp_state is not None and e.proto == IPPROTO_SCTP:
        _put_sctp_protoinfo(w, sctp_state, e.vtags)
    if mark is not None:
        w.be32(CTA_MARK, mark)
        if mark_mask is not None:
            w.be32(CTA_MARK_MASK, mark_mask)
    if labels is not None:
        w.binary(CTA_LABELS, labels_bytes(labels))
        if labels_mask is not None:
            w.binary(CTA_LABELS_MASK, labels_bytes(labels_mask))
    w.end()
    return seq


@_checked
def encode_delete(w: MessageWriter, e: Entry) -> int:
    """One IPCTNL_MSG_CT_DELETE of ``e`` by original tuple (and id); returns its seq."""
    seq = w.begin(MSG_DELETE, NLM_F_REQUEST, family=e.family)
    put_entry_key(w, e)
    w.end()
    return seq


def _tuple_fields(w: MessageWriter, nest: int, family: int, proto: int,
                  offs: list[tuple[int, str]]) -> None:
    """A zeroed tuple (``nest``: CTA_TUPLE_ORIG or _REPLY) of a port protocol, as `_put_tuple`
    writes it; appends to ``offs`` where its source and destination addresses and ports go."""
    alen = 16 if family == AF_INET6 else 4
    with w.nest(nest):
        with w.nest(CTA_TUPLE_IP):
            for attr in (CTA_IP_V6_SRC, CTA_IP_V6_DST) if alen == 16 else (CTA_IP_V4_SRC, CTA_IP_V4_DST):
                offs.append((w.here() + 4, f"{alen}s"))
                w.binary(attr, bytes(alen))
        with w.nest(CTA_TUPLE_PROTO):
            w.u8(CTA_PROTO_NUM, proto)
            for attr in (CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT):
                offs.append((w.here() + 4, ">H"))
                w.be16(attr, 0)


def _tcp_info_fields(w: MessageWriter, offs: list[tuple[int, str]], flags: bool) -> None:
    """A zeroed CTA_PROTOINFO_TCP: the state, and (if ``flags``) the flags and mask of each
    direction; appends to ``offs`` where they go."""
    with w.nest(CTA_PROTOINFO), w.nest(CTA_PROTOINFO_TCP):
        offs.append((w.here() + 4, "B"))
        w.u8(CTA_PROTOINFO_TCP_STATE, 0)
        if flags:
            for attr in (CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, CTA_PROTOINFO_TCP_FLAGS_REPLY):
                offs += [(w.here() + 4, "B"), (w.here() + 5, "B")]
                w.binary(attr, bytes(2))


def update_template(family: int, proto: int, *, timeout: bool, tcp: bool) -> Template:
    """`encode_update`'s message for an entry of a port protocol without zone or id, given
    its timeout (if ``timeout``), status, TCP state and flags (if ``tcp``) and mark: emit it
    with (orig src, dst bytes, sport, dport[, timeout], status[, state, flags x4], mark)."""
    w = MessageWriter()
    w.begin(MSG_NEW, NLM_F_REQUEST, family=family)
    offs: list[tuple[int, str]] = []
    _tuple_fields(w, CTA_TUPLE_ORIG, family, proto, offs)
    if timeout:
        offs.append((w.here() + 4, ">I"))
        w.be32(CTA_TIMEOUT, 0)
    offs.append((w.here() + 4, ">I"))
    w.be32(CTA_STATUS, 0)
    if tcp:
        _tcp_info_fields(w, offs, True)
    offs.append((w.here() + 4, ">I"))
    w.be32(CTA_MARK, 0)
    w.end()
    return Template(w.message(0), offs)


def delete_template(family: int, proto: int) -> Template:
    """`encode_delete`'s message for an entry of a port protocol without zone or id: emit
    it with (orig src, dst bytes, sport, dport)."""
    w = MessageWriter()
    w.begin(MSG_DELETE, NLM_F_REQUEST, family=family)
    offs: list[tuple[int, str]] = []
    _tuple_fields(w, CTA_TUPLE_ORIG, family, proto, offs)
    w.end()
    return Template(w.message(0), offs)


class DeleteEncoder:
    """Encodes many deletes fast: one `Template` per shape, values patched in."""

    def __init__(self) -> None:
        self._templates: dict[tuple[int, int, bool, bool], tuple[Template, Callable[[Entry], tuple[Any, ...]]]] = {}

    def add(self, w: MessageWriter, e: Entry) -> int:
        o = e.orig
        if o.proto not in PORT_PROTOS or o.zone is not None or e.id is None:
            return encode_delete(w, e)
        key = (e.family, o.proto, bool(e.zone), True)
        entry = self._templates.get(key)
        if entry is None:
            entry = self._templates[key] = self._make(e)
        tmpl, values = entry
        try:
            return tmpl.emit(w, *values(e))
        except struct.error as exc:
            raise InputError(f"conntrack entry {e!r}: a value does not fit its field ({exc})") from None

    @staticmethod
    def _make(e: Entry) -> tuple[Template, Callable[[Entry], tuple[Any, ...]]]:
        w = MessageWriter()
        w.begin(MSG_DELETE, NLM_F_REQUEST, family=e.family)
        fields: list[tuple[int, str]] = []
        _tuple_fields(w, CTA_TUPLE_ORIG, e.family, e.orig.proto, fields)
        if e.zone:
            fields.append((w.here() + 4, ">H"))
            w.be16(CTA_ZONE, 0)
        fields.append((w.here() + 4, ">I"))
        w.be32(CTA_ID, 0)
        w.end()
        tmpl = Template(w.message(0), fields)
        raw = _PTON.get  # address text -> bytes, cached
        if e.zone:
            def values(x: Entry) -> tuple[Any, ...]:
                o = x.orig
                return (raw(o.src) or _pton(o.src), raw(o.dst) or _pton(o.dst), o.sport, o.dport,
                        x.zone, x.id)
        else:
            def values(x: Entry) -> tuple[Any, ...]:
                o = x.orig
                return (raw(o.src) or _pton(o.src), raw(o.dst) or _pton(o.dst), o.sport, o.dport, x.id)
        return tmpl, values


class CreateEncoder:
    """Encodes many creates: one `Template` per shape (family, protocol, optional parts)."""

    def __init__(self, flags: int, *, tcp_flags: Callable[[Entry], int | None] | None = None,
                 with_helper: bool = False) -> None:
        """``tcp_flags``: the TCP_FLAG_* bits of each TCP entry (see `encode_create`);
        ``with_helper``: entries are created with their helper."""
        self.flags = flags
        self.tcp_flags = tcp_flags
        self.with_helper = with_helper
        self._templates: dict[tuple[Any, ...], tuple[Template, Callable[[Entry], tuple[Any, ...]]]] = {}

    def add(self, w: MessageWriter, e: Entry) -> int:
        o = e.orig
        if (o.proto not in PORT_PROTOS or o.zone is not None or e.zone or e.labels
                or e.nat or (self.with_helper and e.helper) or (e.state is not None and o.proto != 6)):
            return encode_create(w, e, self.flags, with_helper=self.with_helper,
                                 tcp_flags=self.tcp_flags(e) if self.tcp_flags else None)
        tcp = e.state is not None and o.proto == 6
        key = (e.family, o.proto, tcp, bool(e.mark))
        entry = self._templates.get(key)
        if entry is None:
            entry = self._templates[key] = self._make(e, tcp)
        tmpl, values = entry
        try:
            return tmpl.emit(w, *values(e))
        except struct.error as exc:
            raise InputError(f"conntrack entry {e!r}: a value does not fit its field ({exc})") from None

    def template(self, family: int, proto: int, tcp: bool, mark: bool, dnat: bool = False,
                 snat: bool = False) -> Template:
        """The create message of one shape (no zone, labels or helper), for callers that
        hold the raw values: emit it with (orig src, dst bytes, sport, dport, reply src, dst,
        sport, dport[, DNAT address x2, port x2][, SNAT address x2, port x2], timeout,
        `create_status` (status)[, mark][, TCP state[, flags x4]]).  With NAT, the reply
        given is the original's mirror and the NAT ranges say the binding (`encode_create`)."""
        key = (family, proto, tcp, mark, dnat, snat, "raw")
        entry = self._templates.get(key)
        if entry is None:
            entry = self._templates[key] = self._make(Entry(Tuple("::" if family == AF_INET6 else "0.0.0.0",
                                                                  "::" if family == AF_INET6 else "0.0.0.0",
                                                                  proto), mark=int(mark)), tcp, (dnat, snat))
        return entry[0]

    def _make(self, e: Entry, tcp: bool,
              nat: tuple[bool, bool] = (False, False)) -> tuple[Template, Callable[[Entry], tuple[Any, ...]]]:
        w = MessageWriter()
        w.begin(MSG_NEW, NLM_F_REQUEST | self.flags, family=e.family)
        alen = 16 if e.family == AF_INET6 else 4
        offs: list[tuple[int, str]] = []
        for attr in (CTA_TUPLE_ORIG, CTA_TUPLE_REPLY):
            _tuple_fields(w, attr, e.family, e.orig.proto, offs)
        for attr, wanted in ((CTA_NAT_DST, nat[0]), (CTA_NAT_SRC, nat[1])):  # as _put_nat lays them out
            if wanted:
                with w.nest(attr):
                    for name in ("minip", "maxip"):
                        offs.append((w.here() + 4, f"{alen}s"))
                        w.binary(S.NAT.number(("v6_" if alen == 16 else "v4_") + name), bytes(alen))
                    with w.nest(S.NAT.number("proto")):
                        for name in ("port_min", "port_max"):
                            offs.append((w.here() + 4, ">H"))
                            w.be16(S.PROTONAT.number(name), 0)
        offs.append((w.here() + 4, ">I"))
        w.be32(CTA_TIMEOUT, 0)
        offs.append((w.here() + 4, ">I"))
        w.be32(CTA_STATUS, 0)
        if e.mark:
            offs.append((w.here() + 4, ">I"))
            w.be32(CTA_MARK, 0)
        flags_of = self.tcp_flags if tcp else None
        if tcp:  # flags and mask (if asked for) the same both ways
            _tcp_info_fields(w, offs, flags_of is not None)
        w.end()
        tmpl = Template(w.message(0), offs)
        drop = ~int(_CREATE_DROP)
        mark = bool(e.mark)
        raw = _PTON.get  # address text -> bytes, cached

        def values(x: Entry) -> tuple[Any, ...]:
            o = x.orig
            s, d = raw(o.src) or _pton(o.src), raw(o.dst) or _pton(o.dst)
            out: tuple[Any, ...] = (s, d, o.sport, o.dport, d, s, o.dport, o.sport,
                                    30 if x.timeout is None else x.timeout, (x.status | 8) & drop)
            if mark:
                out += (x.mark,)
            if tcp:
                out += (x.state,)
                if flags_of is not None:
                    f = flags_of(x) or 0
                    out += (f, f, f, f)
            return out

        return tmpl, values


# ---------------------------------------------------------------- tuples as filters

# CTA_FILTER flag bits (net/netfilter/nf_internals.h; not in the uapi headers)
CTA_FILTER_F_CTA_IP_SRC = 1 << 0
CTA_FILTER_F_CTA_IP_DST = 1 << 1
CTA_FILTER_F_CTA_TUPLE_ZONE = 1 << 2
CTA_FILTER_F_CTA_PROTO_NUM = 1 << 3
CTA_FILTER_F_CTA_PROTO_SRC_PORT = 1 << 4
CTA_FILTER_F_CTA_PROTO_DST_PORT = 1 << 5
CTA_FILTER_F_CTA_PROTO_ICMP_TYPE = 1 << 6
CTA_FILTER_F_CTA_PROTO_ICMP_CODE = 1 << 7
CTA_FILTER_F_CTA_PROTO_ICMP_ID = 1 << 8
CTA_FILTER_F_CTA_PROTO_ICMPV6_TYPE = 1 << 9
CTA_FILTER_F_CTA_PROTO_ICMPV6_CODE = 1 << 10
CTA_FILTER_F_CTA_PROTO_ICMPV6_ID = 1 << 11


def put_filter_tuple(w: MessageWriter, attr: int, family: int, src: str | None, dst: str | None,
                     proto: int | None, sport: int | None, dport: int | None) -> int:
    """A partial tuple for CTA_FILTER; returns its flag word (0 writes nothing)."""
    flags = 0
    if src is not None:
        flags |= CTA_FILTER_F_CTA_IP_SRC
    if dst is not None:
        flags |= CTA_FILTER_F_CTA_IP_DST
    if proto is not None:
        flags |= CTA_FILTER_F_CTA_PROTO_NUM
        if sport is not None:
            flags |= CTA_FILTER_F_CTA_PROTO_SRC_PORT
        if dport is not None:
            flags |= CTA_FILTER_F_CTA_PROTO_DST_PORT
    if not flags:
        return 0
    with w.nest(attr):
        if src is not None or dst is not None:
            six = family == AF_INET6
            with w.nest(CTA_TUPLE_IP):
                if src is not None:
                    w.binary(CTA_IP_V6_SRC if six else CTA_IP_V4_SRC, addr_bytes(src))
                if dst is not None:
                    w.binary(CTA_IP_V6_DST if six else CTA_IP_V4_DST, addr_bytes(dst))
        if proto is not None:
            with w.nest(CTA_TUPLE_PROTO):
                w.u8(CTA_PROTO_NUM, proto)
                if sport is not None:
                    w.be16(CTA_PROTO_SRC_PORT, sport)
                if dport is not None:
                    w.be16(CTA_PROTO_DST_PORT, dport)
    return flags
