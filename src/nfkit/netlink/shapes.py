"""Shape-compiled decoding: decode many messages of the same layout at struct speed.

A dump of 100,000 conntrack entries holds a handful of distinct layouts
(IPv4 UDP without NAT, IPv6 TCP with protoinfo, ...).  The attribute headers
of a message fully determine how it is walked, so once a layout has been
decoded the generic way, its header words and value positions are compiled
into two precompiled `struct` formats and a generated function that builds
the same nested dicts.  A later message is checked by unpacking its header
words in one call: equal headers (and equal length) mean the same layout, so
its values are unpacked in one call more.  Anything else falls back to the
generic `AttrSet.decode`, and its layout is learned (bounded).

Results are identical to `AttrSet.decode` (a property test checks it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from nfkit.netlink.codec import NLA_HDRLEN, AttrSet, Kind, get_string

MAX_SHAPES_PER_LENGTH = 8
MAX_SHAPES = 512

_NLA = struct.Struct("=HH")
_NATIVE = {Kind.U8: "B", Kind.U16: "H", Kind.U32: "I", Kind.U64: "Q", Kind.S8: "b",
           Kind.S16: "h", Kind.S32: "i", Kind.S64: "q"}
_BIG = {Kind.BE16: "H", Kind.BE32: "I", Kind.BE64: "Q"}
_NESTED_MASK = 0x7FFF & 0x3FFF


class _Compiler:
    """Walks one message the generic way, recording where every header and value sits."""

    def __init__(self) -> None:
        self.headers: list[tuple[int, int, int]] = []  # (offset, len, raw type)
        self.native: list[tuple[int, str]] = []  # (offset, struct code)
        self.big: list[tuple[int, str]] = []
        self.leaves = 0

    def value(self, table: str, off: int, code: str) -> str:
        target = self.native if table == "n" else self.big
        target.append((off, code))
        return f"{table}[{len(target) - 1}]"

    def walk(self, aset: AttrSet | None, mv: memoryview, base: int) -> str:
        """Python source of the expression that rebuilds this level's dict."""
        items: list[str] = []
        n = len(mv)
        off = 0
        while off < n:
            alen, atype = _NLA.unpack_from(mv, off)
            self.headers.append((base + off, alen, atype))
            t = atype & 0x3FFF
            voff, vlen = base + off + NLA_HDRLEN, alen - NLA_HDRLEN
            attr = aset.attrs.get(t) if aset is not None else None
            if attr is None:
                key = repr(t)
                expr = self.value("n", voff, f"{vlen}s") if vlen else "b''"
            else:
                key = repr(attr.name)
                expr = self.leaf(attr.kind, attr.nested, mv[off + NLA_HDRLEN : off + alen], voff, vlen)
            items.append(f"{key}: {expr}")
            off = (off + alen + 3) & ~3
        return "{" + ", ".join(items) + "}"

    def leaf(self, kind: Kind, nested: AttrSet | None, mv: memoryview, voff: int, vlen: int) -> str:
        if kind in _NATIVE:
            return self.value("n", voff, _NATIVE[kind])
        if kind in _BIG:
            return self.value("b", voff, _BIG[kind])
        if kind in (Kind.STRING, Kind.STRING_NONUL):
            return f"_str({self.value('n', voff, f'{vlen}s')})" if vlen else "''"
        if kind is Kind.BINARY:
            return self.value("n", voff, f"{vlen}s") if vlen else "b''"
        if kind is Kind.FLAG:
            return "True"
        if kind is Kind.NESTED:
            if nested is None:
                return self._raw_nest(mv, voff)
            return self.walk(nested, mv, voff)
        # NESTED_ARRAY
        items = []
        n = len(mv)
        off = 0
        while off < n:
            alen, atype = _NLA.unpack_from(mv, off)
            self.headers.append((voff + off, alen, atype))
            inner = mv[off + NLA_HDRLEN : off + alen]
            if nested is None:
                items.append(self.value("n", voff + off + NLA_HDRLEN, f"{alen - NLA_HDRLEN}s")
                             if alen > NLA_HDRLEN else "b''")
            else:
                items.append(self.walk(nested, inner, voff + off + NLA_HDRLEN))
            off = (off + alen + 3) & ~3
        return "[" + ", ".join(items) + "]"

    def _raw_nest(self, mv: memoryview, voff: int) -> str:
        items = []
        n = len(mv)
        off = 0
        while off < n:
            alen, atype = _NLA.unpack_from(mv, off)
            self.headers.append((voff + off, alen, atype))
            val = (self.value("n", voff + off + NLA_HDRLEN, f"{alen - NLA_HDRLEN}s")
                   if alen > NLA_HDRLEN else "b''")
            items.append(f"{atype & 0x3FFF!r}: {val}")
            off = (off + alen + 3) & ~3
        return "{" + ", ".join(items) + "}"


def _layout(fields: list[tuple[int, str]], order: str) -> struct.Struct:
    fmt = [order]
    pos = 0
    for off, code in fields:
        if off > pos:
            fmt.append(f"{off - pos}x")
        fmt.append(code)
        pos = off + struct.calcsize("=" + code)
    return struct.Struct("".join(fmt))


class ShapeDecoder:
    """Decode attribute streams of one AttrSet, compiling each layout seen (bounded)."""

    def __init__(self, aset: AttrSet) -> None:
        self.aset = aset
        self._by_len: dict[int, list[tuple[Any, tuple[int, ...], Callable[[memoryview], Any]]]] = {}
        self._count = 0
        self.hits = 0
        self.misses = 0

    def __call__(self, mv: memoryview) -> dict[str | int, Any]:
        shapes = self._by_len.get(len(mv))
        if shapes:
            for header_unpack, expected, build in shapes:
                if header_unpack(mv) == expected:
                    self.hits += 1
                    return build(mv)  # type: ignore[no-any-return]
        out = self.aset.decode(mv)  # raises DecodeError on malformed input
        self.misses += 1
        if self._count < MAX_SHAPES and len(shapes or ()) < MAX_SHAPES_PER_LENGTH:
            self._learn(mv)
        return out

    def _learn(self, mv: memoryview) -> None:
        comp = _Compiler()
        expr = comp.walk(self.aset, mv, 0)
        headers = _layout([(off, "HH") for off, _, _ in comp.headers], "=")
        expected = tuple(v for _, alen, atype in comp.headers for v in (alen, atype))
        native = _layout(comp.native, "=")
        big = _layout(comp.big, ">")
        src = ("def build(mv):\n"
               "    n = native(mv)\n"
               "    b = big(mv)\n"
               f"    return {expr}\n")
        env: dict[str, Any] = {"native": _unpacker(native), "big": _unpacker(big), "_str": _to_str}
        exec(compile(src, f"<shape {self.aset.name}/{len(mv)}>", "exec"), env)  # noqa: S102
        header_unpack = _unpacker(headers)
        self._by_len.setdefault(len(mv), []).append((header_unpack, expected, env["build"]))
        self._count += 1


def _unpacker(s: struct.Struct) -> Callable[[memoryview], tuple[Any, ...]]:
    if s.size == 0:
        return lambda mv: ()
    unpack_from = s.unpack_from
    return lambda mv: unpack_from(mv, 0)


def _to_str(b: bytes) -> str:
    return get_string(memoryview(b))


def shape_decoder(aset: AttrSet) -> ShapeDecoder:
    """A shape-compiling decoder for ``aset`` (one per call: keep it for a whole dump)."""
    return ShapeDecoder(aset)
