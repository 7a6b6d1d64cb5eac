"""Shape-compiled decoding: decode many messages of the same layout at struct speed.

Owns: recognising the *layout* of an attribute stream (which attributes, at
which offsets, of which lengths) and unpacking all its values in one
`struct` call; the bounded cache of layouts seen.  Every decoder of a
recurring message kind builds on this one mechanism: `ShapeDecoder` (nested
dicts, as `AttrSet.decode`) and conntrack's entry decoder (`Entry` objects
and output lines, `nfkit.conntrack.wire`).
Must not know: what a consumer makes of the values.

A dump of 100,000 conntrack entries holds a handful of distinct layouts
(IPv4 UDP without NAT, IPv6 TCP with protoinfo, ...).  The attribute headers
of a stream fully determine how it is walked, so the first stream of a layout
is walked the generic way (`Walk`, validating as `AttrSet.decode` does) and
compiled into a `Layout`: two precompiled `struct`s, one reading every
attribute header (length and type, in host order), one reading every wanted
value.  A later stream of the same length is checked by unpacking its headers
and comparing them (one tuple comparison, of small numbers): equal headers
mean the same layout, so the values struct reads its values.  `Shapes` keeps the layouts by length (bounded); a consumer subclasses
`Layout` to attach what it generates from the walk (a builder, a formatter).
A stream whose last attribute has a length of its own (a queued packet's payload)
has a layout keyed by what comes before it: `Shapes.find_tail`.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

from nfkit.errors import DecodeError
from nfkit.netlink.codec import NLA_HDRLEN, AttrSet, Kind, get_string

MAX_SHAPES_PER_LENGTH = 8
MAX_SHAPES = 512

_NLA = struct.Struct("=HH")
_TYPE_MASK = 0x3FFF
# value kinds read inside the one big-endian struct (native multi-byte integers are read as bytes)
_BIG = {Kind.U8: "B", Kind.S8: "b", Kind.BE16: "H", Kind.BE32: "I", Kind.BE64: "Q"}
_NATIVE = {Kind.U16: (2, False), Kind.U32: (4, False), Kind.U64: (8, False),
           Kind.S16: (2, True), Kind.S32: (4, True), Kind.S64: (8, True)}
_SIZE = {**{k: struct.calcsize(">" + c) for k, c in _BIG.items()}, **{k: n for k, (n, _) in _NATIVE.items()}}

Path = tuple[Any, ...]  # attribute names (numbers where unknown) from the top level down


class Walk:
    """One generic walk of an attribute stream: every header, every leaf, their offsets.

    ``names`` maps leaf paths to the consumer's field names: only those leaves
    are recorded (several paths may share a name, e.g. an IPv4 or an IPv6
    source); None records every leaf under its path.  ``tree`` describes the
    nesting (for consumers that rebuild it).  Raises DecodeError where
    `AttrSet.decode` would.
    """

    def __init__(self, aset: AttrSet, mv: memoryview, names: Mapping[Path, Hashable] | None = None,
                 head: int = 0, tail: str | int | None = None) -> None:
        """``head``: bytes of fixed header before the attributes (offsets count from ``mv``'s
        start); ``tail``: a top-level attribute whose value's span ``tail_value`` records."""
        self.names = names
        self.headers: list[tuple[int, int, int]] = []  # (offset, length, type with flag bits)
        self.leaves: list[tuple[int, Hashable, Kind | None, int]] = []  # (offset, field, kind, length)
        self.spans: dict[str | int, tuple[int, int]] = {}  # top-level attribute -> (offset, aligned length)
        self.tail: tuple[int, int, int] | None = None  # the trailing attribute's header (see `cut`)
        self.tail_name = tail
        self.tail_value: tuple[int, int] | None = None  # (start, stop) of the last ``tail`` attribute's value
        self.tree = self._level(aset, mv[head:], head, (), top=True)

    def cut(self, at: int) -> None:
        """Keep what lies before ``at``, the header of the stream's last top-level attribute:
        a layout of this walk checks that attribute's type only, its length being free."""
        self.tail = next(h for h in self.headers if h[0] == at)
        self.headers = [h for h in self.headers if h[0] < at]
        self.leaves = [leaf for leaf in self.leaves if leaf[0] < at]
        self.tail_value = None
        self.spans = {k: span for k, span in self.spans.items() if span[0] < at}

    def _attrs(self, where: str, mv: memoryview, base: int):  # type: ignore[no-untyped-def]
        n = len(mv)
        off = 0
        while off < n:
            if n - off < NLA_HDRLEN:
                raise DecodeError(f"{where}: truncated attribute header", base + off)
            alen, atype = _NLA.unpack_from(mv, off)
            if alen < NLA_HDRLEN or off + alen > n:
                raise DecodeError(f"{where}: attribute length {alen} runs past its container", base + off)
            self.headers.append((base + off, alen, atype))
            yield atype & _TYPE_MASK, off, alen
            off = (off + alen + 3) & ~3

    def _leaf(self, path: Path, kind: Kind | None, voff: int, vlen: int) -> tuple[str, Hashable]:
        field: Hashable = path if self.names is None else self.names.get(path)
        if field is not None:
            self.leaves.append((voff, field, kind, vlen))
        return ("leaf", field)

    def _level(self, aset: AttrSet | None, mv: memoryview, base: int, path: Path,
               top: bool = False) -> tuple[str, list[tuple[str | int, Any]]]:
        items: list[tuple[str | int, Any]] = []
        where = aset.name if aset is not None else "nest"
        for t, off, alen in self._attrs(where, mv, base):
            attr = aset.attrs.get(t) if aset is not None else None
            key: str | int = t if attr is None else attr.name
            voff, vlen = base + off + NLA_HDRLEN, alen - NLA_HDRLEN
            if top:
                self.spans[key] = (base + off, (alen + 3) & ~3)
                if key == self.tail_name:
                    self.tail_value = (voff, voff + vlen)
            inner = mv[off + NLA_HDRLEN:off + alen]
            if attr is None:
                node: Any = self._leaf(path + (key,), Kind.BINARY, voff, vlen)
            elif attr.kind is Kind.NESTED:
                node = self._level(attr.nested, inner, voff, path + (key,))
            elif attr.kind is Kind.NESTED_ARRAY:
                elems: list[Any] = []
                for i, (_, eoff, elen) in enumerate(self._attrs(attr.name, inner, voff)):
                    sub = inner[eoff + NLA_HDRLEN:eoff + elen]
                    epath = path + (key, i)
                    if attr.nested is None:
                        elems.append(self._leaf(epath, Kind.BINARY, voff + eoff + NLA_HDRLEN, elen - NLA_HDRLEN))
                    else:
                        elems.append(self._level(attr.nested, sub, voff + eoff + NLA_HDRLEN, epath))
                node = ("list", elems)
            else:
                size = _SIZE.get(attr.kind)
                if size is not None and vlen != size:
                    raise DecodeError(f"{where}: attribute {attr.name} has {vlen} bytes, expected {size}",
                                      base + off)
                node = self._leaf(path + (key,), attr.kind, voff, vlen)
            items.append((key, node))
        return ("dict", items)


class Layout:
    """A compiled layout: ``headers(buf, off) == expected`` tells whether a stream of
    the same length has this layout; then ``unpack(buf, off)`` reads all its values.

    ``index[field]`` is where a field's value sits in the values (fixed-size
    big-endian and 8-bit integers as ints, everything else as the raw bytes,
    native multi-byte integers included: see ``kinds``); ``spans`` is where each
    top-level attribute lies; ``tag`` is what the consumer keys layouts by
    besides the bytes (e.g. the message's family).  The header words are read
    in host order by a struct of their own: their small numbers compare fast.
    """

    __slots__ = ("expected", "headers", "index", "kinds", "length", "spans", "structs", "tag", "tail", "unpack")

    def __init__(self, walk: Walk, length: int, tag: Any = None) -> None:
        tail = walk.tail  # a cut walk: the trailing attribute's type is checked, not its length
        heads = _struct([(off, "HH") for off, _, _ in walk.headers] + ([(tail[0], "2xH")] if tail else []), "=")
        self.structs: tuple[struct.Struct, struct.Struct] | None = None  # `exact` layouts' (see `run`)
        self.headers: Callable[..., tuple[int, ...]] = _unpacker(heads)
        self.expected = tuple(v for _, alen, atype in walk.headers for v in (alen, atype)) + (
            (tail[2],) if tail else ())
        leaves = sorted(((off, _BIG[kind] if kind in _BIG else f"{vlen}s", field)
                         for off, field, kind, vlen in walk.leaves if kind is not Kind.FLAG), key=_first)
        self.unpack: Callable[..., tuple[Any, ...]] = _unpacker(_struct([(o, c) for o, c, _ in leaves], ">"))
        self.index: dict[Hashable, int] = {field: n for n, (_, _, field) in enumerate(leaves)}
        self.kinds = {field: kind for _, field, kind, _ in walk.leaves}
        self.spans = walk.spans
        self.length = length
        self.tag = tag
        self.tail = walk.tail_value  # the walk's ``tail`` value, where a layout of the whole stream has one


    @classmethod
    def exact(cls, sample: bytes, slots: list[tuple[int, int]], tag: Any = None) -> Layout:
        """The layout of streams equal to ``sample`` in every byte but the ``slots``
        ((offset, width), in offset order, not overlapping): ``headers`` reads every
        other byte (as chunks, ``expected`` being the sample's) and ``unpack`` each
        slot's bytes (``index[k]`` is slot k's value).  The decoding counterpart of
        `codec.Template`, which patches such slots into a copy of one message; `run`
        reads many such streams laid end to end."""
        lay = cls.__new__(cls)
        chunks: list[tuple[int, str]] = []
        values: list[tuple[int, str]] = []
        pos = 0
        for off, width in slots:
            if off < pos:
                raise ValueError(f"slot at {off} overlaps the one before")
            if off > pos:
                chunks.append((pos, f"{off - pos}s"))
            values.append((off, f"{width}s"))
            pos = off + width
        if pos < len(sample):
            chunks.append((pos, f"{len(sample) - pos}s"))
        checks, reads = _padded(chunks, len(sample)), _padded(values, len(sample))
        lay.headers = _unpacker(checks)
        lay.expected = lay.headers(sample, 0)
        lay.unpack = _unpacker(reads)
        lay.structs = (checks, reads)
        lay.index = {k: k for k in range(len(slots))}
        lay.kinds = dict.fromkeys(range(len(slots)), Kind.BINARY)
        lay.spans = {}
        lay.length = len(sample)
        lay.tag = tag
        lay.tail = None
        return lay

    def run(self, buf: Any, pos: int) -> tuple[int, list[tuple[bytes, ...]]]:
        """How many streams of this (`exact`) layout lie end to end from ``pos`` and
        their values, a tuple per slot (streams in order).  Streams are checked 1,
        2, 4, ... at a time by `struct.iter_unpack`: a long run costs a few C calls,
        a short one little more than itself."""
        assert self.structs is not None, "run needs a layout made by Layout.exact"
        checks, reads = self.structs
        size = self.length
        avail = (len(buf) - pos) // size
        expected = self.expected
        mv = memoryview(buf)
        count, step = 0, 1
        while count < avail:
            take = min(step, avail - count)
            start = pos + count * size
            same = list(map(expected.__eq__, checks.iter_unpack(mv[start:start + take * size])))
            if False in same:
                count += same.index(False)
                break
            count += take
            step *= 2
        if not count:
            return 0, []
        return count, list(zip(*reads.iter_unpack(mv[pos:pos + count * size]), strict=True))


def _tail_span(lay: Layout, off: int, end: int) -> tuple[int, int]:
    span = lay.tail
    return (off + span[0], off + span[1]) if span else (end, end)


def _padded(fields: list[tuple[int, str]], size: int) -> struct.Struct:
    """``fields`` ((offset, code), in order) read by one struct of exactly ``size`` bytes."""
    s = _struct(fields, "=")
    return struct.Struct(s.format + f"{size - s.size}x") if s.size < size else s


def _struct(fields: list[tuple[int, str]], order: str) -> struct.Struct:
    fmt = [order]
    pos = 0
    for off, code in fields:
        if off > pos:
            fmt.append(f"{off - pos}x")
        fmt.append(code)
        pos = max(pos, off + struct.calcsize(order + code))  # an empty value may sit under a header
    return struct.Struct("".join(fmt))


def _first(item: tuple[Any, ...]) -> Any:
    return item[0]


def _unpacker(s: struct.Struct) -> Callable[..., tuple[Any, ...]]:
    if s.size == 0:
        return lambda buf, off=0: ()
    return s.unpack_from


L = TypeVar("L", bound=Layout)


class Shapes(Generic[L]):
    """The layouts of one AttrSet seen so far, by stream length (bounded).

    ``make(walk, length, tag)`` builds a layout (a `Layout` subclass) from a
    walk; ``names`` picks the leaves to unpack (see `Walk`).  `find` is the
    one per-message step of every decoder on this mechanism (a known layout,
    else one learned): hot loops bind it once (``find = shapes.find``).
    """

    def __init__(self, aset: AttrSet, make: Callable[[Walk, int, Any], L], *,
                 names: Mapping[Path, Hashable] | None = None,
                 max_layouts: int = MAX_SHAPES, max_per_length: int = MAX_SHAPES_PER_LENGTH,
                 head: int = 0, tail: str | int | None = None) -> None:
        """``head``: bytes of fixed header before the attributes (a consumer's ``make``
        may read fields there); ``tail``: the attribute `find_tail` lets have any length."""
        self.aset = aset
        self.make = make
        self.names = names
        self.max_layouts = max_layouts
        self.max_per_length = max_per_length
        self.head = head
        self.tail = tail
        self.by_len: dict[int, list[L]] = {}
        self.trailing: list[L] = []  # layouts of what comes before a trailing ``tail`` (`find_tail`)
        self.count = 0

    def find(self, buf: Any, off: int, length: int, tag: Any = None) -> tuple[L, tuple[Any, ...]]:
        """The layout of ``buf[off:off+length]`` and its values: a known one, else the
        stream's layout learned (compiled and not kept once the bounds are reached).
        Raises DecodeError if the stream is malformed."""
        for lay in self.by_len.get(length, ()):
            if lay.headers(buf, off) == lay.expected and lay.tag == tag:
                return lay, lay.unpack(buf, off)
        lay = self.learn(buf, off, length, tag) or self.compile(buf, off, length, tag)
        return lay, lay.unpack(buf, off)

    def compile(self, buf: Any, off: int, length: int, tag: Any = None) -> L:
        """Walk and compile the stream's layout (not kept); raises DecodeError if malformed."""
        walk = Walk(self.aset, memoryview(buf)[off:off + length], self.names, self.head, self.tail)
        return self.make(walk, length, tag)

    def find_tail(self, buf: Any, off: int, length: int, tag: Any = None
                  ) -> tuple[L, tuple[Any, ...], int, int]:
        """As `find`, for streams whose last attribute, ``tail``, has a length of its own: the
        layout of the attributes before it, their values, and where the tail's value lies
        in ``buf`` (start, stop).  A stream whose ``tail`` is not last, or missing, has a
        layout of its whole length, as `find` (its ``tail`` value, else (end, end)).
        Raises DecodeError if the stream is malformed."""
        end = off + length
        for lay in self.trailing:
            start = off + lay.length
            if start <= end and lay.headers(buf, off) == lay.expected and lay.tag == tag:
                alen = _NLA.unpack_from(buf, start - NLA_HDRLEN)[0]
                stop = start - NLA_HDRLEN + alen
                if alen >= NLA_HDRLEN and stop <= end and ((stop - off + 3) & ~3) >= length:
                    return lay, lay.unpack(buf, off), start, stop
                break  # damaged, or not last: the walk says which
        for lay in self.by_len.get(length, ()):
            if lay.headers(buf, off) == lay.expected and lay.tag == tag:
                return (lay, lay.unpack(buf, off), *_tail_span(lay, off, end))
        walk = Walk(self.aset, memoryview(buf)[off:end], self.names, self.head, self.tail)
        last = walk.spans.get(self.tail) if self.tail is not None else None
        keep = self.count < self.max_layouts
        if last is not None and last[0] + last[1] >= length:  # the tail is last: key on what precedes it
            start, stop = walk.tail_value or (0, 0)
            walk.cut(last[0])
            lay = self.make(walk, last[0] + NLA_HDRLEN, tag)
            if keep:
                self.trailing.append(lay)
                self.count += 1
            return lay, lay.unpack(buf, off), off + start, off + stop
        lay = self.make(walk, length, tag)
        if keep and len(self.by_len.get(length, ())) < self.max_per_length:
            self.by_len.setdefault(length, []).append(lay)
            self.count += 1
        return (lay, lay.unpack(buf, off), *_tail_span(lay, off, end))

    def learn(self, buf: Any, off: int, length: int, tag: Any = None) -> L | None:
        """Compile and keep the stream's layout; None (nothing walked) when the bounds are reached."""
        same = self.by_len.get(length, ())
        if self.count >= self.max_layouts or len(same) >= self.max_per_length:
            return None
        lay = self.compile(buf, off, length, tag)
        self.by_len.setdefault(length, []).append(lay)
        self.count += 1
        return lay


# ---------------------------------------------------------------- nested dicts, as AttrSet.decode

def _to_str(b: bytes) -> str:
    return get_string(memoryview(b))


def _native(size: int, signed: bool) -> Callable[[bytes], int]:
    order = sys.byteorder
    return lambda b: int.from_bytes(b, order, signed=signed)


_CONVERT = {kind: _native(size, signed) for kind, (size, signed) in _NATIVE.items()}


class _DictLayout(Layout):
    __slots__ = ("build",)

    def __init__(self, walk: Walk, length: int, tag: Any = None) -> None:
        super().__init__(walk, length, tag)
        env: dict[str, Any] = {"_str": _to_str}
        names: dict[Kind, str] = {}

        def expr(node: tuple[str, Any]) -> str:
            what, body = node
            if what == "dict":
                return "{" + ", ".join(f"{key!r}: {expr(sub)}" for key, sub in body) + "}"
            if what == "list":
                return "[" + ", ".join(expr(sub) for sub in body) + "]"
            kind = self.kinds[body]
            if kind is Kind.FLAG:
                return "True"
            value = f"v[{self.index[body]}]"
            if kind in (Kind.STRING, Kind.STRING_NONUL):
                return f"_str({value})"
            if kind in _CONVERT:
                fn = names.setdefault(kind, f"_{kind.name.lower()}")
                env[fn] = _CONVERT[kind]
                return f"{fn}({value})"
            return value

        src = f"def build(v):\n    return {expr(walk.tree)}\n"
        exec(compile(src, f"<shape {length}>", "exec"), env)  # noqa: S102 - generated from the walk
        self.build: Callable[[tuple[Any, ...]], dict[str | int, Any]] = env["build"]


class ShapeDecoder:
    """Decode attribute streams of one AttrSet, compiling each layout seen (bounded).

    Results equal `AttrSet.decode`'s; raises DecodeError on malformed input.
    """

    def __init__(self, aset: AttrSet) -> None:
        self.aset = aset
        self.shapes: Shapes[_DictLayout] = Shapes(aset, _DictLayout)
        # length -> (headers, expected, unpack, build) per layout: locals beat attribute reads here
        self._fast: dict[int, list[tuple[Any, tuple[int, ...], Any, Any]]] = {}
        self.hits = 0
        self.misses = 0

    def __call__(self, mv: memoryview) -> dict[str | int, Any]:
        n = len(mv)
        for headers, expected, unpack, build in self._fast.get(n, ()):
            if headers(mv, 0) == expected:
                self.hits += 1
                return build(unpack(mv, 0))  # type: ignore[no-any-return]
        self.misses += 1
        lay = self.shapes.learn(mv, 0, n)
        if lay is None:
            return self.aset.decode(mv)
        self._fast.setdefault(n, []).append((lay.headers, lay.expected, lay.unpack, lay.build))
        return lay.build(lay.unpack(mv, 0))


def shape_decoder(aset: AttrSet) -> ShapeDecoder:
    """A shape-compiling decoder for ``aset`` (one per call: keep it for a whole dump)."""
    return ShapeDecoder(aset)
