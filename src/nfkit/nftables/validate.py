"""Values checked against the kernel's field widths before anything is sent.

This module owns the one validation layer of nf_tables input: every value a
user gives (in a JSON file, a RULE argument, a model object built in Python)
is checked here against the width, sign and rules of the netlink field it
ends up in, so nothing is silently truncated, wrapped or cut at a NUL.  The
widths are not written here: `FIELDS` maps each JSON field to its attribute
in the nf_tables spec tables (nfkit.netlink.specs.nftables), whose kind
(u8, be16, be32, be64, string) gives the width; a statement added to the
compiler declares its fields in `FIELDS` and gets the range check with them.
Values the compiler checks itself against a datatype (compared payload,
meta and ct values) are not repeated here; what every value gets anyway is
the structural walk: nesting depth, string length, NUL and UTF-8, prefix
lengths, range order.

It knows nothing of netlink encoding or sockets.  Every failure is an
InputError naming the object (names shortened, see `shown`) and the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nfkit.errors import InputError
from nfkit.netlink.specs.nftables import TABLES
from nfkit.nftables.model import OBJECT_KINDS, Rule

NAME_MAXLEN = 255  # NFT_NAME_MAXLEN (256) less the NUL
COMMENT_MAXLEN = 128  # nft's NFTNL_UDATA_COMMENT_MAXLEN
STRING_MAXLEN = 4096  # any other string in a statement (devices, prefixes are shorter)
MAX_DEPTH = 64  # nesting of a statement's JSON; nft's grammar never needs a tenth of it
HANDLE_MAX = 2**64 - 1

_KIND_BITS = {"u8": 8, "be16": 16, "be32": 32, "be64": 64}
# Attributes the kernel reads as signed (nla_get_be32 then cast to int).
_SIGNED = {("hook", "priority")}
_BYTE_UNITS = {"bytes": 1, "kbytes": 1024, "mbytes": 1024**2, "gbytes": 1024**3}

# JSON field of a statement (or stateful object of the same kind) -> its spec
# attribute, and the JSON field holding a unit that multiplies it.
Field = tuple[str, str, str | None]
FIELDS: dict[str, dict[str, Field]] = {
    "counter": {"packets": ("counter", "packets", None), "bytes": ("counter", "bytes", None)},
    "limit": {"rate": ("limit", "rate", "rate_unit"), "burst": ("limit", "burst", "burst_unit")},
    "quota": {"val": ("quota", "bytes", "val_unit"), "used": ("quota", "consumed", "used_unit")},
    "ct count": {"val": ("connlimit", "count", None)},
    "log": {"group": ("log", "group", None), "snaplen": ("log", "snaplen", None),
            "queue-threshold": ("log", "qthreshold", None), "prefix": ("log", "prefix", None)},
    "queue": {"num": ("queue", "num", None)},
    "ct helper": {"l4proto": ("ct_helper", "l4proto", None)},
}
# String attributes with a limit of their own (bytes, NUL not counted).
_STRING_MAX = {("log", "prefix"): 127}  # NF_LOG_PREFIXLEN


def field_range(table: str, attr: str) -> tuple[int, int]:
    """(lowest, highest) value of integer attribute ``attr`` of spec ``table``."""
    kind = next(k for a, k, _ in TABLES[table][2] if a == attr)
    bits = _KIND_BITS[kind]
    if (table, attr) in _SIGNED:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def shown(text: Any, limit: int = 40) -> str:
    """``text`` for a message: repr'd, cut to ``limit`` characters with its length."""
    r = repr(text)
    if len(r) <= limit:
        return r
    n = len(text) if isinstance(text, (str, bytes, list, dict)) else len(r)
    return f"{r[:limit]}... ({n} characters)"


def name(value: Any, what: str) -> str:
    """A table, chain, set or object name: a non-empty string of at most
    NAME_MAXLEN UTF-8 bytes without NUL (the kernel cuts at the first NUL)."""
    return string(value, what, NAME_MAXLEN, empty=False)


def string(value: Any, what: str, maxlen: int = STRING_MAXLEN, empty: bool = True) -> str:
    """A string field: str, UTF-8 encodable, no NUL, at most ``maxlen`` bytes."""
    if type(value) is str and value.isascii() and "\0" not in value and (
            0 < len(value) <= maxlen or (empty and not value)):
        return value  # the common case, without encoding
    if not isinstance(value, str):
        raise InputError(f"{what}: expected a string, got {type(value).__name__}")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{what}: {shown(value)} is not valid UTF-8") from None
    if b"\0" in raw:
        raise InputError(f"{what}: {shown(value)} contains a NUL character")
    if len(raw) > maxlen:
        raise InputError(f"{what}: {shown(value)} is longer than {maxlen} bytes")
    if not raw and not empty:
        raise InputError(f"{what}: empty name")
    return value


def integer(value: Any, what: str, lo: int, hi: int) -> int:
    """An integer field in [lo, hi] (booleans and floats are not integers)."""
    if type(value) is not int:
        raise InputError(f"{what}: expected an integer, got {shown(value)}")
    if not lo <= value <= hi:
        raise InputError(f"{what}: {shown(value)} is out of range {lo}..{hi}")
    return value


def handle(value: Any, what: str) -> int:
    """An object handle (NFTA_*_HANDLE, be64; the kernel never gives out 0)."""
    return integer(value, what, 1, HANDLE_MAX)


def spec_field(value: Any, table: str, attr: str, what: str, scale: int = 1) -> None:
    """``value`` (times ``scale``) fits attribute ``attr`` of spec ``table``."""
    kind = next(k for a, k, _ in TABLES[table][2] if a == attr)
    if kind == "string":
        string(value, what, _STRING_MAX.get((table, attr), STRING_MAXLEN))
        return
    lo, hi = field_range(table, attr)
    integer(value, what, lo, hi)
    if not lo <= value * scale <= hi:
        raise InputError(f"{what}: {value} times its unit ({scale}) is out of range {lo}..{hi}")


# ---- statements -------------------------------------------------------------------

def statements(stmts: Any, what: str) -> None:
    """A rule's statement list: non-empty, each statement one key, every value fitting."""
    if not isinstance(stmts, list):
        raise InputError(f"{what}: the statements must be a list, got {type(stmts).__name__}")
    if not stmts:
        raise InputError(f"{what}: a rule needs at least one statement (nft refuses an "
                         "empty rule)")
    for i, st in enumerate(stmts):
        if type(st) is not dict or len(st) != 1:
            raise InputError(f"{what}: statement {i + 1}: expected an object with one key, "
                             f"got {shown(st)}")
        (kind, body), = st.items()
        try:
            if body is not None:
                structure(body, "")
                if kind in FIELDS:
                    fields(kind, body, "")
        except InputError as exc:  # the message is made only for a refusal
            kind_text = kind if isinstance(kind, str) and len(kind) <= 20 else shown(kind)
            raise InputError(f"{what}: statement {i + 1} ({kind_text}){exc}") from None


def fields(kind: str, body: Any, what: str) -> None:
    """The declared fields (`FIELDS`) of statement or object ``kind`` in ``body``."""
    spec = FIELDS.get(kind)
    if spec is None or not isinstance(body, dict):
        return
    for key, (table, attr, unit_key) in spec.items():
        if key not in body:
            continue
        scale = 1
        if unit_key is not None and unit_key in body:
            unit = body[unit_key]
            if unit != "packets":
                if unit not in _BYTE_UNITS:
                    raise InputError(f"{what}: unknown unit {shown(unit)}")
                scale = _BYTE_UNITS[unit]
        v = body[key]
        if isinstance(v, dict) and isinstance(v.get("range"), list):  # e.g. queue num 1-3
            for bound in v["range"]:
                spec_field(bound, table, attr, f"{what}: {key}", scale)
            continue
        spec_field(v, table, attr, f"{what}: {key}", scale)


def _plain_strings(values: list[Any]) -> bool:
    """Every value a string that `string` takes as it is (checked in bulk)."""
    if not set(map(type, values)) <= {str}:  # one C loop: a blocklist is 100,000 strings
        return False
    joined = "".join(values)
    return joined.isascii() and "\0" not in joined and max(map(len, values), default=0) <= STRING_MAXLEN


def structure(value: Any, what: str) -> None:
    """Every value inside a statement: nesting depth, strings, prefixes and ranges."""
    if type(value) is list and _plain_strings(value):
        return  # a flat list of short ASCII strings (a blocklist's elements): nothing more to see
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InputError(f"{what}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(v, str):
            string(v, what)
        elif isinstance(v, dict):
            if "prefix" in v and isinstance(v["prefix"], dict):
                _prefix(v["prefix"], what)
            if "range" in v:
                _range(v["range"], what)
            for k, x in v.items():
                string(k, what)
                stack.append((x, depth + 1))
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, float) and v != v:  # NaN: no field takes it
            raise InputError(f"{what}: NaN is not a value")


def _prefix(p: dict[str, Any], what: str) -> None:
    addr, plen = p.get("addr"), p.get("len")
    width = 32
    if isinstance(addr, str) and ":" in addr:
        width = 128
    integer(plen, f"{what}: prefix length", 0, width)


def _range(r: Any, what: str) -> None:
    if not isinstance(r, list) or len(r) != 2:
        raise InputError(f"{what}: a range is a list of two values, got {shown(r)}")
    lo, hi = (_ordinal(x) for x in r)
    if lo is not None and hi is not None and type(lo) is type(hi) and lo > hi:
        raise InputError(f"{what}: range {shown(r[0])}-{shown(r[1])} ends before it starts")


def _ordinal(x: Any) -> Any:
    """A comparable form of a range bound (int or address), else None."""
    if type(x) is int:
        return x
    if isinstance(x, str):
        import ipaddress  # (only range bounds need it: not imported by every load)

        try:
            a = ipaddress.ip_address(x)
        except ValueError:
            return None
        return (a.version, int(a))
    return None


# ---- model objects -----------------------------------------------------------------

def obj(kind: str, o: Any, verb: str = "add") -> None:
    """One model object (Table, Chain, Rule, Set, Obj) of a command of ``verb``."""
    if kind == "ruleset" or o is None:
        return
    what = label(kind, o)
    if kind == "rule" and hasattr(o, "sample"):  # a bulkjson.RuleRun: its rows share the sample
        o = o.sample
    if kind == "element":
        return
    if getattr(o, "family", None) is not None:
        string(o.family, f"{what}: family")
    if kind == "table":
        name(o.name, f"table {shown(o.name)}: name")
    else:
        name(o.table, f"{what}: table name")
    if kind == "chain":
        name(o.name, f"{what}: chain name")
        if o.prio is not None:
            lo, hi = field_range("hook", "priority")
            integer(o.prio, f"{what}: prio", lo, hi)
        if o.dev is not None:
            for d in [o.dev] if isinstance(o.dev, str) else o.dev:
                string(d, f"{what}: device", 15, empty=False)  # IFNAMSIZ less the NUL
    elif kind == "rule":
        name(o.chain, f"{what}: chain name")
        if verb != "delete":
            statements(o.expr, what)
        if o.comment is not None:
            string(o.comment, f"{what}: comment", COMMENT_MAXLEN)
        if o.position is not None:
            handle(o.position, f"{what}: position")
    elif kind in ("set", "map"):
        name(o.name, f"{what}: name")
        for key, v, attr in (("size", o.size, "size"), ("gc-interval", o.gc_interval,
                                                           "gc_interval")):
            if v is not None:
                lo, hi = field_range("set_desc" if key == "size" else "set", attr)
                integer(v, f"{what}: {key}", lo, hi // (1000 if key == "gc-interval" else 1))
        if o.timeout is not None:
            integer(o.timeout, f"{what}: timeout", 0, HANDLE_MAX // 1000)
        structure(o.elem, f"{what}: elements")
        if o.stmt:
            statements(o.stmt, f"{what}: element statements")
    elif kind in OBJECT_KINDS:
        name(o.name, f"{what}: name")
        structure(o.body, what)
        fields(kind, o.body, what)
    if o.handle is not None:
        handle(o.handle, f"{what}: handle")


def label(kind: str, o: Any) -> str:
    """A short name of the object for messages (its own __str__ may hold huge names)."""
    if o is None:
        return kind
    parts = [kind, str(getattr(o, "family", ""))]
    for attr in ("table", "chain", "name"):
        v = getattr(o, attr, None)
        if isinstance(v, str):
            parts.append(v if len(v) <= 40 and v.isprintable() else shown(v))
    src = getattr(o, "source", None)
    if src is not None and src != "":
        parts.append(f"(#{src})" if isinstance(src, int) else f"({src})")
    return " ".join(p for p in parts if p)


def commands(cmds: Iterable[Any]) -> None:
    """Every command's object (jsonfmt.Command); raises InputError at the first bad value."""
    seen: set[tuple[Any, ...]] = set()  # (family, table, chain) of rules already checked
    samples: set[int] = set()  # runs of one learned template share their sample
    for c in cmds:
        o = c.obj
        sample = getattr(o, "sample", None) if c.kind == "rule" else None
        if sample is not None:
            if id(sample) in samples:
                continue
            samples.add(id(sample))
        if c.kind == "rule" and type(o) is Rule and c.verb != "delete":
            # The rules of a big file: names checked once per chain, no label made.
            where = (o.family, o.table, o.chain)
            if where not in seen:
                obj(c.kind, o, c.verb)
                seen.add(where)
                continue
            if (o.comment is None and o.position is None and o.handle is None
                    and type(o.expr) is list and o.expr):
                try:
                    statements(o.expr, "")
                except InputError as exc:
                    raise InputError(f"{label(c.kind, o)}{exc}") from None
                continue
        obj(c.kind, c.obj, c.verb)
        if c.items:
            structure(c.items, f"{label(c.kind, c.obj)}: elements")
