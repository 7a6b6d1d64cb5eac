"""Byte builders and a fast walker for nf_tables attributes.

Hot paths (80,000 rules) build expression bytes directly with precompiled
`struct` formats and reuse them as templates, then hand whole attribute runs to
the netlink core with `MessageWriter.raw()`.  Attribute numbers come from
nfkit.netlink.specs.nftables, the one table of them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from nfkit.netlink.specs.nftables import nums

NLA_F_NESTED = 0x8000
_HDR = struct.Struct("=HH")
_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")

A = {t: nums(t) for t in (
    "list", "expr", "data", "verdict", "immediate", "bitwise", "cmp", "range", "lookup",
    "dynset", "payload", "meta", "ct", "limit", "counter", "log", "queue", "quota", "reject",
    "nat", "masq", "redir", "objref", "fib", "numgen", "hash", "connlimit", "table", "chain",
    "rule", "set", "set_elem", "set_elem_list", "hook", "set_desc", "set_field", "byteorder",
    "target", "rule_compat", "obj", "gen", "exthdr", "rt", "ct_helper",
)}


def attr(t: int, payload: bytes) -> bytes:
    """One attribute: header, payload, padding."""
    n = 4 + len(payload)
    return _HDR.pack(n, t) + payload + _PAD[n & 3]


def nest(t: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return _HDR.pack(4 + len(body), t | NLA_F_NESTED) + body


def be32(t: int, v: int) -> bytes:
    return _HDR.pack(8, t) + _BE32.pack(v & 0xFFFFFFFF)


def be64(t: int, v: int) -> bytes:
    return _HDR.pack(12, t) + _BE64.pack(v)


def be16(t: int, v: int) -> bytes:
    return _HDR.pack(8, t) + _BE16.pack(v) + b"\0\0"


def u8(t: int, v: int) -> bytes:
    return _HDR.pack(5, t) + bytes((v,)) + b"\0\0\0"


def string(t: int, s: str) -> bytes:
    return attr(t, s.encode() + b"\0")


def data_value(t: int, value: bytes) -> bytes:
    """An nft_data nest holding a value."""
    return nest(t, attr(1, value))


def data_verdict(t: int, code: int, chain: str | None = None) -> bytes:
    inner = be32(1, code)
    if chain is not None:
        inner += string(2, chain)
    return nest(t, nest(2, inner))


_NAME_ATTR: dict[str, bytes] = {}


def expr(name: str, *parts: bytes) -> bytes:
    """One NFTA_LIST_ELEM expression: name and data."""
    head = _NAME_ATTR.get(name)
    if head is None:
        head = _NAME_ATTR[name] = attr(1, name.encode() + b"\0")
    body = head + nest(2, *parts)
    return _HDR.pack(4 + len(body), 1 | NLA_F_NESTED) + body


def walk(buf: bytes | memoryview, start: int = 0, end: int | None = None
         ) -> Iterator[tuple[int, int, int]]:
    """Yield (type without flags, payload start, payload end) for each attribute."""
    if end is None:
        end = len(buf)
    unpack = _HDR.unpack_from
    pos = start
    while pos + 4 <= end:
        ln, t = unpack(buf, pos)
        if ln < 4:
            break
        yield t & 0x3FFF, pos + 4, pos + ln
        pos += (ln + 3) & ~3


def attrs(buf: bytes | memoryview, start: int = 0, end: int | None = None) -> dict[int, bytes]:
    """Attributes of one level as {type: payload bytes} (last one wins)."""
    b = bytes(buf) if isinstance(buf, memoryview) else buf
    return {t: b[s:e] for t, s, e in walk(b, start, end)}


def get_be32(b: bytes) -> int:
    return _BE32.unpack_from(b)[0]


def get_be64(b: bytes) -> int:
    return _BE64.unpack_from(b)[0]


def get_be16(b: bytes) -> int:
    return _BE16.unpack_from(b)[0]


def get_str(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode()
