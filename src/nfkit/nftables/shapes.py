"""Rule shapes learned from the compiler: which values of a rule may vary, and where.

A big ruleset is mostly a few rule *shapes*: the same statements with other
addresses, ports, names, marks or counter values.  This module owns finding,
for the libnftables JSON statements of one rule, which of its scalar values
(its *leaves*) are plain value slots of the encoding, and where each lands in
the compiled expressions.  It asks the general compiler only: each candidate
leaf is compiled with two probe values whose bytes all differ, and with the
smallest and largest value the slot's regular expression lets through; a leaf
is a slot when exactly its probe's bytes (one encoding: integer big or little
endian, IPv4/IPv6 address, raw text) changed, at the same places every time,
and nothing else did.  Anything else (a symbolic name, a prefix length, a value
that changes the encoding) stays fixed: part of the shape.  A last compile
with every slot changed at once must equal the template filled in.

So a shape is recognised by its structure, not its bytes: any rule the
compiler translates can be templated, and the template never says something
the compiler would not.  It must not know the statements' meanings.
"""

from __future__ import annotations

import functools
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A leaf's class: what its text may be for the slot to take it (the regex that
# lets a value through), how it is encoded, and the probes that prove it.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4_RE = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
IPV6_RE = r"[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}"
_IPV4 = re.compile(IPV4_RE + r"\Z")
_IPV6 = re.compile(IPV6_RE + r"\Z")
_TEXT = re.compile(r"[A-Za-z0-9_.:/+ -]+\Z")


def leaf_class(value: Any) -> tuple[Any, ...] | None:
    """The class of a scalar leaf that may be a slot, or None (fixed: zero, negative,
    booleans, a set reference, text with other characters)."""
    t = type(value)
    if t is int:
        return ("int",) if value > 0 else None
    if t is not str or not value or value[0] == "@":
        return None
    if _IPV4.match(value):
        return ("ipv4",)
    if _IPV6.match(value):
        try:
            socket.inet_pton(socket.AF_INET6, value)
        except OSError:
            return None
        return ("ipv6",)
    if _TEXT.match(value):
        return ("text", len(value))
    return None


# What a JSON template lets through where an IPv4 address is: digits and dots, more
# than IPV4_RE takes.  The address slot's encoder (inet_pton) takes exactly what IPV4_RE
# takes and refuses the rest, whose rule then goes the general way (see
# `bulkjson.encode_places`): the same commands, and IPV4_RE's alternations were ~25 %
# of the scan of a file of address rules.
IPV4_LOOSE_RE = r"[0-9.]{7,15}"


def value_regex(cls: tuple[Any, ...]) -> str:
    """The regex (no group) of a JSON value token of class ``cls`` in a template (an
    IPv4 address: `IPV4_LOOSE_RE`)."""
    kind = cls[0]
    if kind == "int":
        return r"[1-9]\d*"
    if kind == "ipv4":
        return f'"{IPV4_LOOSE_RE}"'
    if kind == "ipv6":
        return f'"{IPV6_RE}"'
    return f'"[A-Za-z0-9_.:/+ -]{{{",".join(map(str, cls[1:]))}}}"'


def leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every scalar of a JSON tree with its path, in document order (the order of
    its text)."""
    out: list[tuple[tuple[Any, ...], Any]] = []
    t = type(node)
    if t is dict:
        for k, v in node.items():
            out += leaves(v, (*path, k))
    elif t is list:
        for i, v in enumerate(node):
            out += leaves(v, (*path, i))
    else:
        out.append((path, node))
    return out


def replaced(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``node`` with the leaf at ``path`` set to ``value`` (the rest shared)."""
    if not path:
        return value
    head = path[0]
    c: Any = dict(node) if type(node) is dict else list(node)
    c[head] = replaced(node[head], path[1:], value)
    return c


@dataclass(slots=True)
class Slot:
    """One varying leaf: its index among the rule's leaves, its class, where its
    bytes go in the compiled expressions (one or more places) and its encoder."""

    leaf: int
    cls: tuple[Any, ...]
    offsets: list[int]
    width: int
    encode: Callable[[Any], bytes]
    probe: Any  # a value other than the sample's, for the joint check


def _int_encoder(width: int, order: str) -> Callable[[Any], bytes]:
    def enc(v: Any) -> bytes:
        return v.to_bytes(width, order)  # type: ignore[no-any-return]  # raises if it does not fit
    return enc


def _text_encoder(v: str) -> bytes:
    return v.encode("ascii")


# Address text -> bytes; partials, so a column of them is encoded without a Python
# frame per address.
_IP4: Callable[[str], bytes] = functools.partial(socket.inet_pton, socket.AF_INET)
_IP6: Callable[[str], bytes] = functools.partial(socket.inet_pton, socket.AF_INET6)


def _probes(cls: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """(probe values, encoder, width[, the slot's class]) to try for a class, widest
    first.  The first two probes differ in every byte; the others are the domain's
    ends."""
    kind = cls[0]
    out: list[tuple[Any, ...]] = []
    if kind == "int":
        for width in (8, 4, 2, 1):
            a = int.from_bytes(bytes(range(1, width + 1)), "big")
            b = int.from_bytes(bytes(range(2, width + 2)), "big")
            for order in ("big", "little"):
                out.append(([a, b, (1 << 8 * width) - 1, 1], _int_encoder(width, order), width))
        return out
    if kind == "ipv4":
        return [(["1.2.3.4", "2.3.4.5", "255.255.255.255", "0.0.0.0"], _IP4, 4)]
    if kind in ("ipv4net", "ipv6net"):  # the address of a prefix, as the compiler masks it
        size, plen = (4, cls[1]) if kind == "ipv4net" else (16, cls[1])
        mask = ((1 << plen) - 1) << (8 * size - plen) if plen else 0
        fam = socket.AF_INET if size == 4 else socket.AF_INET6
        # The first probe has host bits set: the slot takes such values only if the
        # compiler masks them as the encoder does.
        probes = [socket.inet_ntop(fam, bytes(range(1, size + 1))),
                  socket.inet_ntop(fam, (int.from_bytes(bytes(range(2, size + 2)), "big")
                                         & mask).to_bytes(size, "big")),
                  socket.inet_ntop(fam, mask.to_bytes(size, "big")),
                  socket.inet_ntop(fam, bytes(size))]
        out.append((probes, _net_encoder(fam, size, mask, size), size))
        if plen % 8 == 0:  # a whole-byte prefix may be compared on its first bytes only
            out.insert(0, (probes, _net_encoder(fam, size, mask, plen // 8), plen // 8))
        return out
    if kind == "ipv6":
        return [(["102:304:506:708:90a:b0c:d0e:f10", "203:405:607:809:a0b:c0d:e0f:1011",
                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::"], _IP6, 16)]
    n = cls[1]
    a = ("abcdefghijklmnopqrstuvwxyz" * (n // 26 + 1))[:n]
    b = ("bcdefghijklmnopqrstuvwxyza" * (n // 26 + 1))[:n]
    out.append(([a, b, "Z" * n, "0" * n], _text_encoder, n))
    if n < PADDED_TEXT:
        # A field of fixed width, the text NUL-padded (an interface name): any length
        # up to one less takes it; the probes have the shortest and longest.
        w = PADDED_TEXT
        out.insert(0, (["abcdefghijklmnopqrstuvwxyz"[:w - 1], "bcdefghijklmnopqrstuvwxyz"[:w - 1],
                        "Z", "0" * (w - 1)], _padded_encoder(w), w, ("text", 1, w - 1)))
    return out


PADDED_TEXT = 16  # IFNAMSIZ: the one fixed-width text field nf_tables compares


def _padded_encoder(width: int) -> Callable[[Any], bytes]:
    def enc(v: Any) -> bytes:
        b = v.encode("ascii")
        if not 0 < len(b) < width:
            raise ValueError(f"{v!r}: not 1 to {width - 1} characters")
        return b.ljust(width, b"\0")
    return enc


def _net_encoder(fam: int, size: int, mask: int, width: int) -> Callable[[Any], bytes]:
    def enc(v: Any) -> bytes:
        return (int.from_bytes(socket.inet_pton(fam, v), "big") & mask).to_bytes(size, "big")[:width]
    return enc


def _places(base: bytes, other: bytes, enc_base: bytes, enc_other: bytes) -> list[int] | None:
    """The offsets where ``enc_base`` in ``base`` became ``enc_other`` in ``other``,
    the only difference between the two; None when the change is anything else."""
    if len(base) != len(other) or base == other:
        return None
    w = len(enc_base)
    out: list[int] = []
    i = 0
    n = len(base)
    while i < n:
        if base[i] == other[i]:
            i += 1
            continue
        # the first differing byte lies in a slot that starts at most w-1 before it
        for o in range(max(0, i - w + 1), i + 1):
            if base[o:o + w] == enc_base and other[o:o + w] == enc_other:
                out.append(o)
                i = o + w
                break
        else:
            return None
    return out


Compile = Callable[[list[Any]], "bytes | None"]


class ShapeTemplate:
    """The compiled expressions of one rule shape: static bytes and value slots."""

    __slots__ = ("statics", "slots", "n_leaves", "fixed")

    def __init__(self, statics: list[bytes], slots: list[Slot], n_leaves: int,
                 fixed: list[int]) -> None:
        self.statics = statics  # between the slots' places, in order of offset
        self.slots = slots
        self.n_leaves = n_leaves
        self.fixed = fixed  # leaf indexes that are part of the shape

    def places(self) -> list[tuple[int, int, int]]:
        """(offset, width, slot index) of every place a value goes, in order."""
        return sorted((o, s.width, k) for k, s in enumerate(self.slots) for o in s.offsets)

    def fixing(self, which: list[int], values: list[Any]) -> ShapeTemplate:
        """This template with slots ``which`` no longer slots: ``values`` (one each)
        written into its bytes."""
        keep = [k for k in range(len(self.slots)) if k not in which]
        given = dict(zip(which, values, strict=True))
        statics = [self.statics[0]]
        for (_o, _w, k), static in zip(self.places(), self.statics[1:], strict=True):
            if k in given:
                statics[-1] += self.slots[k].encode(given[k]) + static
            else:
                statics.append(static)
        return ShapeTemplate(statics, [self.slots[k] for k in keep], self.n_leaves,
                             sorted([*self.fixed, *(self.slots[k].leaf for k in which)]))

    def fill(self, values: list[Any]) -> bytes:
        """The expressions with slot k's value ``values[k]`` (raises if one does not fit)."""
        parts = [self.statics[0]]
        for (_o, _w, k), static in zip(self.places(), self.statics[1:], strict=True):
            parts.append(self.slots[k].encode(values[k]))
            parts.append(static)
        return b"".join(parts)


def learn(expr: list[Any], compile_expr: Compile) -> ShapeTemplate | None:
    """The template of the shape of rule statements ``expr``, or None when the
    compiler does not translate them alone (anonymous sets, set references it does
    not know, errors: the general path's work).  ``compile_expr`` returns the
    expressions' bytes, or None when it refuses."""
    base = compile_expr(expr)
    if base is None:
        return None
    all_leaves = leaves(expr)
    slots: list[Slot] = []
    fixed: list[int] = []
    for idx, (path, value) in enumerate(all_leaves):
        cls = _in_context(expr, path, leaf_class(value))
        slot = _probe(expr, path, value, cls, base, compile_expr) if cls is not None else None
        if slot is None:
            fixed.append(idx)
            continue
        slot.leaf = idx
        slots.append(slot)
    places = sorted((o, s.width, k) for k, s in enumerate(slots) for o in s.offsets)
    statics: list[bytes] = []
    pos = 0
    for o, w, _k in places:
        if o < pos:
            return None  # two values in one place: not a template
        statics.append(base[pos:o])
        pos = o + w
    statics.append(base[pos:])
    tpl = ShapeTemplate(statics, slots, len(all_leaves), fixed)
    # Every slot changed at once must compile to the template filled in.
    probe_values = [s.probe for s in slots]
    joint = expr
    for s, v in zip(slots, probe_values, strict=True):
        joint = replaced(joint, all_leaves[s.leaf][0], v)
    try:
        ok = compile_expr(joint) == tpl.fill(probe_values) and \
            tpl.fill([all_leaves[s.leaf][1] for s in slots]) == base
    except (OverflowError, OSError, ValueError):
        ok = False
    return tpl if ok else None


def _in_context(expr: Any, path: tuple[Any, ...], cls: tuple[Any, ...] | None
                ) -> tuple[Any, ...] | None:
    """An address that is a prefix's ({"prefix": {"addr": A, "len": L}}) is of a class
    of its own: only network addresses (host bits zero) of that length take it."""
    if cls is None or cls[0] not in ("ipv4", "ipv6") or len(path) < 2 or path[-1] != "addr":
        return cls
    parent = expr
    for k in path[:-1]:
        parent = parent[k]
    plen = parent.get("len") if type(parent) is dict else None
    if path[-2] != "prefix" or type(plen) is not int or not 0 < plen <= (32 if cls[0] == "ipv4" else 128):
        return cls
    return (cls[0] + "net", plen)


def _probe(expr: list[Any], path: tuple[Any, ...], value: Any, cls: tuple[Any, ...],
           base: bytes, compile_expr: Compile) -> Slot | None:
    for values, enc, width, *as_cls in _probes(cls):
        try:
            enc_value = enc(value)
        except (OverflowError, OSError, ValueError, UnicodeError):
            continue
        if len(enc_value) != width:
            continue
        where: list[int] | None = None
        for pv in values:
            if pv == value:
                continue
            got = compile_expr(replaced(expr, path, pv))
            p = None if got is None else _places(base, got, enc_value, enc(pv))
            if p is None or (where is not None and p != where):
                where = None
                break
            where = p
        if where:
            return Slot(-1, as_cls[0] if as_cls else cls, where, width, enc,
                        values[1] if values[1] != value else values[0])
    return None
