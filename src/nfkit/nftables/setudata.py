"""nft's user data of anonymous sets and maps: the records nft 1.0.6 writes, byte for byte.

Owns the layout of the records nft keeps in a set's NFTA_SET_USERDATA (libnftnl's TLVs:
a type byte, a length byte, the value; numbers in host order) for the sets a rule
creates: the key's byte order, the map data's byte order, the key's `typeof` (the
expression the set was made from: nft's expression kind and, per kind, what names it:
a payload's protocol and field, a meta or ct key), a verdict map's data `typeof`, and a
map's data-interval flag.  Only nft's printing reads them; the kernel keeps them as
given, so an nfkit load equal to nft's carries the same bytes.  Must not know how rules
are compiled: the compiler says what the key expression was (`payload`, `meta`, `ct`,
`concat`), this module writes it.
"""

from __future__ import annotations

import sys

# NFTNL_UDATA_SET_*
KEYBYTEORDER, DATABYTEORDER, MERGE_ELEMENTS, KEY_TYPEOF, DATA_TYPEOF, DATA_INTERVAL = \
    0, 1, 2, 3, 4, 6
# NFTNL_UDATA_SET_TYPEOF_EXPR / _DATA (inside a typeof record)
TYPEOF_EXPR, TYPEOF_DATA = 0, 1
# nft 1.0.6's enum expr_types, for the kinds it records
EXPR_VERDICT, EXPR_PAYLOAD, EXPR_META, EXPR_SOCKET, EXPR_OSF, EXPR_CT, EXPR_CONCAT = \
    1, 7, 9, 10, 11, 12, 13
EXPR_EXTHDR, EXPR_NUMGEN, EXPR_HASH, EXPR_FIB = 8, 23, 24, 26
# nft's byte orders (enum byteorder)
ORDER_INVALID, ORDER_HOST, ORDER_BIG = 0, 1, 2

# nft 1.0.6's enum proto_desc_id
PROTO_DESC = {"ah": 1, "esp": 2, "comp": 3, "icmp": 4, "igmp": 5, "udp": 6, "udplite": 7,
              "tcp": 8, "dccp": 9, "sctp": 10, "th": 11, "ip": 12, "ip6": 13, "icmpv6": 14,
              "arp": 15, "vlan": 16, "ether": 17}
# each protocol's fields in the order of nft's header templates (a field's record is its
# 1-based place there)
_FIELDS = {
    "ether": ["daddr", "saddr", "type"],
    "vlan": ["pcp", "dei", "cfi", "id", "type"],
    "ip": ["version", "hdrlength", "dscp", "ecn", "length", "id", "frag-off", "ttl",
           "protocol", "checksum", "saddr", "daddr"],
    "ip6": ["version", "dscp", "ecn", "flowlabel", "length", "nexthdr", "hoplimit", "saddr",
            "daddr"],
    "tcp": ["sport", "dport", "sequence", "ackseq", "doff", "reserved", "flags", "window",
            "checksum", "urgptr"],
    "udp": ["sport", "dport", "length", "checksum"],
    "udplite": ["sport", "dport", "csumcov", "checksum"],
    "sctp": ["sport", "dport", "vtag", "checksum"],
    "dccp": ["sport", "dport", "type"],
    "th": ["sport", "dport"],
    "icmp": ["type", "code", "checksum", "id", "sequence", "gateway", "mtu"],
    "icmpv6": ["type", "code", "checksum", "parameter", "mtu", "id", "sequence", "max-delay"],
    "igmp": ["type", "mrt", "checksum", "group"],
    "comp": ["nexthdr", "flags", "cpi"],
    "esp": ["spi", "sequence"],
    "ah": ["nexthdr", "hdrlength", "reserved", "spi", "sequence"],
}
FIELD_INDEX = {(p, f): k + 1 for p, fs in _FIELDS.items() for k, f in enumerate(fs)}
# meta keys whose value nft keeps in network order (its meta templates); the rest host
META_BIG_ENDIAN = {"protocol", "ibrvproto"}
# ... and ct keys (nfkit's names of them; "saddr" and "daddr" of either family too)
CT_BIG_ENDIAN = {"protocol", "proto-src", "proto-dst", "ip saddr", "ip daddr", "ip6 saddr",
                 "ip6 daddr", "id"}
NO_DIR = 0xFFFFFFFF  # a ct key without a direction


def record(kind: int, value: bytes) -> bytes:
    """One TLV."""
    return bytes((kind, len(value))) + value


def u32(kind: int, value: int) -> bytes:
    return record(kind, value.to_bytes(4, sys.byteorder))


def typeof(expr_kind: int, data: bytes) -> bytes:
    """The inside of a typeof record: the expression's kind, and what names it (a
    nested record, empty for a verdict or osf)."""
    return u32(TYPEOF_EXPR, expr_kind) + record(TYPEOF_DATA, data)


def payload(proto: str, field: str, integer_bits: int | None) -> bytes | None:
    """A payload field's typeof (``integer_bits``: the width, for a field nft types as
    a plain integer), None for a field nft records no typeof of."""
    desc, index = PROTO_DESC.get(proto), FIELD_INDEX.get((proto, field))
    if desc is None or index is None:
        return None
    data = u32(0, desc) + u32(1, index)
    if integer_bits is not None:
        data += u32(4, integer_bits)
    return typeof(EXPR_PAYLOAD, data)


def raw_payload(base: int, offset: int, bits: int) -> bytes:
    """A raw payload's typeof (``@nh,96,32``: nft's base numbers, ll 1, nh 2, th 3; the
    offset and length in bits), kept raw even where nft lists a named field."""
    return typeof(EXPR_PAYLOAD, u32(0, 0) + u32(1, 0) + u32(2, base) + u32(3, offset)
                  + u32(4, bits))


# nft 1.0.6's ids of the IPv6 extension headers (enum exthdr_desc_id)
EXTHDR_DESC = {"hbh": 1, "rt": 2, "rt0": 3, "rt2": 4, "srh": 5, "frag": 6, "dst": 7, "mh": 8}
# an IP option's fields by nft's numbers (enum ipopt_fields)
IPOPT_FIELD = {"type": 1, "length": 2, "value": 3, "ptr": 4, "addr": 5}


def exthdr(op: int, desc: int, field: int) -> bytes:
    """An extension header's or option's typeof: its field (nft's number of it in the
    header's template), the exthdr op (none for an IPv6 header, op 0) and the header
    (``desc``: an IPv6 header's id, an option's kind, a chunk's type)."""
    return typeof(EXPR_EXTHDR, u32(1, field) + (u32(2, op) if op else b"") + u32(0, desc))


def hash_(symmetric: bool, modulus: int, offset: int, seed: int | None) -> bytes:
    """jhash's or symhash's typeof (jhash's hashed expression is not recorded)."""
    return typeof(EXPR_HASH, u32(0, int(symmetric)) + u32(1, offset) + u32(2, modulus)
                  + u32(3, seed or 0) + u32(4, int(seed is not None)))


def meta(key_num: int) -> bytes:
    return typeof(EXPR_META, u32(0, key_num))


def ct(key_num: int, direction: int | None) -> bytes:
    return typeof(EXPR_CT, u32(0, key_num) + u32(1, NO_DIR if direction is None else direction))


def socket(key_num: int) -> bytes:
    return typeof(EXPR_SOCKET, u32(0, key_num))


def osf() -> bytes:
    return typeof(EXPR_OSF, b"")


def fib(result: int, flags: int) -> bytes:
    return typeof(EXPR_FIB, u32(0, result) + u32(1, flags))


def numgen(mode: int, modulus: int, offset: int) -> bytes:
    return typeof(EXPR_NUMGEN, u32(0, mode) + u32(1, modulus) + u32(2, offset))


def concat(parts: list[bytes | None]) -> bytes | None:
    """A concatenation's typeof (None when one of its parts has none)."""
    if any(p is None for p in parts):
        return None
    return typeof(EXPR_CONCAT, b"".join(record(k, p) for k, p in enumerate(parts)))  # type: ignore[arg-type]


def records(key_order: int, key_typeof: bytes | None, data_order: int | None = None,
            is_map: bool = False, data_typeof: bytes | None = None, merge: bool = False) -> bytes:
    """A set's (or map's) records in nft 1.0.6's order: the key's byte order, a data map's
    data byte order, whether nft merges its intervals (``merge``), the key's typeof, the
    data's typeof, and a map's data-interval flag (0).  (A comment, if any, comes after.)"""
    out = u32(KEYBYTEORDER, key_order)
    if data_order is not None:
        out += u32(DATABYTEORDER, data_order)
    if merge:
        out += u32(MERGE_ELEMENTS, 1)
    if key_typeof is not None:
        out += record(KEY_TYPEOF, key_typeof)
    if data_typeof is not None:
        out += record(DATA_TYPEOF, data_typeof)
    if is_map:
        out += u32(DATA_INTERVAL, 0)
    return out


# the typeof of a verdict map's data, and nft's empty one of a concatenation declared by `type`
VERDICT_TYPEOF = typeof(EXPR_VERDICT, b"")
CONCAT_TYPEOF = typeof(EXPR_CONCAT, b"")
