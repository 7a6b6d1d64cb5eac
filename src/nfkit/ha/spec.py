"""conntrackd's sync protocol (conntrack-tools 1.4.7) declared as data.

Owns: the message types, header flags, attribute numbers (NTA_*, NTA_EXP_*),
each attribute's value layout and exact size, and the order in which 1.4.7
emits them (so nfkit's datagrams are byte for byte what conntrackd sends).
Numbers and sizes were read from conntrack-tools 1.4.7 (include/network.h,
src/build.c, src/parse.c) and checked against captured datagrams (docs/ha.md).
Must not know: sockets, sequence tracking, the conntrack entry model.
"""

from __future__ import annotations

import enum
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nfkit.errors import DecodeError, InputError

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">BBHI")  # version<<4 | type, flags, length, sequence
ACK_RANGE = struct.Struct(">II")  # from, to: after the header of ACK, NACK and RESYNC
HEADER_SIZE = HEADER.size  # 8
ACK_HEADER_SIZE = HEADER_SIZE + ACK_RANGE.size  # 16
ATTR_HEADER = struct.Struct(">HH")  # length (header included, padding not), type
ALIGN = 4


def align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


class MsgType(enum.IntEnum):
    """enum nethdr_type: the low nibble of a message's first byte."""

    CT_NEW = 0
    CT_UPD = 1
    CT_DEL = 2
    EXP_NEW = 3
    EXP_UPD = 4
    EXP_DEL = 5
    CTL = 10


CT_TYPES = frozenset({MsgType.CT_NEW, MsgType.CT_UPD, MsgType.CT_DEL})
EXP_TYPES = frozenset({MsgType.EXP_NEW, MsgType.EXP_UPD, MsgType.EXP_DEL})


class Flag(enum.IntFlag):
    """Header flags (NET_F_*).  Bit 0 (NET_F_UNUSED) is never sent."""

    RESYNC = 1 << 1
    NACK = 1 << 2
    ACK = 1 << 3
    ALIVE = 1 << 4
    HELLO = 1 << 5
    HELLO_BACK = 1 << 6


NO_FLAGS = Flag(0)
# A data message may carry only the hello flags (conntrackd's IS_DATA).
DATA_FLAGS = Flag.HELLO | Flag.HELLO_BACK
# Control messages with these flags have the 16-byte header with a sequence range.
RANGE_FLAGS = Flag.ACK | Flag.NACK | Flag.RESYNC


@dataclass(frozen=True)
class ValueFormat:
    """How one attribute's value is laid out: ``size`` bytes exactly, or up to ``max_size``.

    The value types of conntrackd's own wire (big-endian attribute headers, its
    port and address quirks), the counterpart of the netlink codec's `Kind`; not
    a message layout (that is `nfkit.netlink.shapes.Layout`)."""

    name: str
    pack: Callable[[Any], bytes]
    unpack: Callable[[bytes], Any]
    size: int | None = None  # exact value size; None: variable
    max_size: int | None = None  # variable values: largest attribute length (header included)
    # the decoder's fast path: a struct's unpack_from(buf, offset), its result's
    # first item taken when ``single`` (None: ``unpack`` on a slice)
    unpack_from: Callable[[bytes, int], tuple[Any, ...]] | None = None
    single: bool = False
    # the value as big-endian struct codes, addresses (and byte-swapped fields) as raw
    # bytes: what compiled shapes read in one struct call (None: variable size)
    raw: str | None = None


def _fixed(name: str, fmt: str, single: bool = True) -> ValueFormat:
    st = struct.Struct(fmt)
    raw = fmt[1:] if fmt[0] == ">" else f"{st.size}s"
    if single:
        return ValueFormat(name, st.pack, lambda b: st.unpack(b)[0], st.size, None, st.unpack_from, True, raw)
    return ValueFormat(name, lambda v: st.pack(*v), st.unpack, st.size, None, st.unpack_from, False, raw)


def _addr_layout(name: str, family: int, count: int) -> ValueFormat:
    width = 4 if family == socket.AF_INET else 16

    def pack(value: Any) -> bytes:
        texts = (value,) if count == 1 else value
        try:
            return b"".join(socket.inet_pton(family, t) for t in texts)
        except (OSError, TypeError):
            raise InputError(f"{value!r} is not an IPv{4 if width == 4 else 6} address") from None

    seen: dict[bytes, Any] = {}  # raw -> text: a peer sends the same few addresses again and again

    def unpack(raw: bytes) -> Any:
        value = seen.get(raw)
        if value is None:
            texts = tuple(socket.inet_ntop(family, raw[i:i + width]) for i in range(0, len(raw), width))
            value = texts[0] if count == 1 else texts
            if len(seen) > 1 << 16:
                seen.clear()
            seen[raw] = value
        return value

    return ValueFormat(name, pack, unpack, width * count, raw=f"{width}s" * count)


def _cstring(name: str, max_size: int) -> ValueFormat:
    def pack(value: str) -> bytes:
        raw = value.encode("utf-8", "surrogateescape") + b"\0"  # the bytes as they came
        if ATTR_HEADER.size + len(raw) > max_size or b"\0" in raw[:-1]:
            raise InputError(f"{value!r}: conntrackd takes at most {max_size - ATTR_HEADER.size - 1} bytes here")
        return raw

    def unpack(raw: bytes) -> str:
        end = raw.find(b"\0")
        if end < 0:
            raise DecodeError("string attribute without its terminating NUL")
        return raw[:end].decode("utf-8", "surrogateescape")

    return ValueFormat(name, pack, unpack, None, max_size)


def _pack_labels(value: int) -> bytes:
    # one big-endian word per 32 labels, at least the kernel's 128 bits
    words = max(4, (value.bit_length() + 31) // 32)
    if value < 0 or words > LABEL_WORDS_MAX:
        raise InputError(f"labels {value:#x} out of range")
    return b"".join(struct.pack(">I", (value >> (32 * i)) & 0xFFFFFFFF) for i in range(words))


def _unpack_labels(raw: bytes) -> int:
    if not raw or len(raw) % 4:
        raise DecodeError(f"labels of {len(raw)} bytes: not whole 32-bit words")
    value = 0
    for i in range(len(raw) // 4):
        value |= struct.unpack_from(">I", raw, 4 * i)[0] << (32 * i)
    return value


LABEL_WORDS_MAX = 1024  # NTA_LABELS_MAX_SIZE: "up to 4k labels per flow"

U8 = _fixed("u8", ">B")
BE16 = _fixed("be16", ">H")
BE32 = _fixed("be32", ">I")
# 1.4.7 quirk: a field the library already holds in network order gets htons()
# once more, so on the (little-endian) machines conntrackd runs on it goes out
# byte-swapped: NAT ports and the ICMP id.  Captures in docs/ha.md.
SWAPPED16 = _fixed("swapped16", "<H")
ADDR4_PAIR = _addr_layout("ipv4 src,dst", socket.AF_INET, 2)
ADDR6_PAIR = _addr_layout("ipv6 src,dst", socket.AF_INET6, 2)
ADDR4 = _addr_layout("ipv4", socket.AF_INET, 1)  # network order since 1.4.7
ADDR6 = _addr_layout("ipv6", socket.AF_INET6, 1)
PORT_PAIR = _fixed("sport,dport", ">HH", single=False)
SEQADJ = _fixed("nat seq adjustment", ">6I", single=False)
SYNPROXY = _fixed("synproxy its,isn,tsoff", ">3I", single=False)
HELPER = _cstring("helper name", 16)  # NFCT_HELPER_NAME_MAX: the attribute, header included
EXP_FN = _cstring("expectation function", 32)
LABELS = ValueFormat("labels", _pack_labels, _unpack_labels, None, ATTR_HEADER.size + 4 * LABEL_WORDS_MAX)


@dataclass(frozen=True)
class Attr:
    number: int
    name: str
    layout: ValueFormat


def _table(*rows: tuple[int, str, ValueFormat]) -> dict[int, Attr]:
    return {num: Attr(num, name, layout) for num, name, layout in rows}


# enum nta_attr: conntrack entries.  Value forms: addresses as text, ports and
# numbers as ints (host values, quirks undone), pairs as tuples.
CT_ATTRS = _table(
    (0, "ipv4", ADDR4_PAIR),
    (1, "ipv6", ADDR6_PAIR),
    (2, "l4proto", U8),
    (3, "port", PORT_PAIR),
    (4, "tcp_state", U8),
    (5, "status", BE32),
    (6, "timeout", BE32),
    (7, "mark", BE32),
    (8, "master_ipv4", ADDR4_PAIR),
    (9, "master_ipv6", ADDR6_PAIR),
    (10, "master_l4proto", U8),
    (11, "master_port", PORT_PAIR),
    (12, "snat_ipv4", ADDR4),
    (13, "dnat_ipv4", ADDR4),
    (14, "spat_port", SWAPPED16),
    (15, "dpat_port", SWAPPED16),
    (16, "nat_seq_adj", SEQADJ),
    (17, "sctp_state", U8),
    (18, "sctp_vtag_orig", BE32),
    (19, "sctp_vtag_repl", BE32),
    (20, "dccp_state", U8),
    (21, "dccp_role", U8),
    (22, "icmp_type", U8),
    (23, "icmp_code", U8),
    (24, "icmp_id", SWAPPED16),
    (25, "tcp_wscale_orig", U8),
    (26, "tcp_wscale_repl", U8),
    (27, "helper", HELPER),
    (28, "labels", LABELS),
    (29, "snat_ipv6", ADDR6),
    (30, "dnat_ipv6", ADDR6),
    (31, "synproxy", SYNPROXY),
    (32, "zone", BE16),
)

# The order build.c's ct2msg() emits them in.
CT_ORDER = (
    "ipv4", "ipv6", "status", "l4proto", "port", "tcp_state", "tcp_wscale_orig", "tcp_wscale_repl",
    "sctp_state", "sctp_vtag_orig", "sctp_vtag_repl", "dccp_state", "dccp_role",
    "icmp_type", "icmp_code", "icmp_id", "timeout", "mark",
    "master_ipv4", "master_ipv6", "master_l4proto", "master_port",
    "snat_ipv4", "dnat_ipv4", "snat_ipv6", "dnat_ipv6", "spat_port", "dpat_port",
    "nat_seq_adj", "helper", "labels", "synproxy", "zone",
)

# enum nta_exp_attr: expectations.
EXP_ATTRS = _table(
    (0, "master_ipv4", ADDR4_PAIR),
    (1, "master_ipv6", ADDR6_PAIR),
    (2, "master_l4proto", U8),
    (3, "master_port", PORT_PAIR),
    (4, "expect_ipv4", ADDR4_PAIR),
    (5, "expect_ipv6", ADDR6_PAIR),
    (6, "expect_l4proto", U8),
    (7, "expect_port", PORT_PAIR),
    (8, "mask_ipv4", ADDR4_PAIR),
    (9, "mask_ipv6", ADDR6_PAIR),
    (10, "mask_l4proto", U8),
    (11, "mask_port", PORT_PAIR),
    (12, "timeout", BE32),
    (13, "flags", BE32),
    (14, "class", BE32),
    (15, "nat_ipv4", ADDR4_PAIR),
    (16, "nat_port", PORT_PAIR),
    (17, "nat_l4proto", U8),
    (18, "nat_dir", BE32),
    (19, "helper", HELPER),
    (20, "fn", EXP_FN),
)

# The order build.c's exp2msg() emits them in.
EXP_ORDER = (
    "master_ipv4", "master_ipv6", "master_l4proto", "master_port",
    "expect_ipv4", "expect_ipv6", "expect_l4proto", "expect_port",
    "mask_ipv4", "mask_ipv6", "mask_l4proto", "mask_port",
    "timeout", "flags", "class", "nat_ipv4", "nat_l4proto", "nat_port", "nat_dir", "helper", "fn",
)


def by_name(table: dict[int, Attr]) -> dict[str, Attr]:
    return {a.name: a for a in table.values()}


CT_BY_NAME = by_name(CT_ATTRS)
EXP_BY_NAME = by_name(EXP_ATTRS)
