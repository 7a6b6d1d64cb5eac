"""Conntrack entries as text (conntrack -L's own line format) and as JSON lines.

This module owns both outside forms of an entry: the text line that scripts
parsing `conntrack -L` / `conntrack -E` already understand, and the JSON
object (one per line) that `nfkit ct list -o json` prints and `nfkit ct
create --from` reads back.  It knows nothing about netlink: the lines are
described once (`line_source`) and compiled per shape of entry, over an
`Entry` here and over a message's unpacked values by the wire decoder.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from nfkit.conntrack.model import (
    AF_INET,
    AF_INET6,
    CANONICAL_ADDRS,
    FAMILY_NAMES,
    FAMILY_NUMBERS,
    ICMP_PROTOS,
    IPPROTO_DCCP,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    PORT_PROTOS,
    PROTO_NAMES,
    TCP_STATE_TEXT,
    Counters,
    Entry,
    Status,
    Tuple,
    parse_status_names,
    parse_tcp_state,
    proto_number,
    state_text,
    status_names,
    tuple_new,
)
from nfkit.conntrack.model import (
    addrs_seen as ADDRS_SEEN,
)
from nfkit.conntrack.values import PORT_MAX, U32_MAX, check
from nfkit.errors import InputError

EVENT_TAGS = {"new": "    [NEW] ", "update": " [UPDATE] ", "destroy": "[DESTROY] "}


def assured_text(status: int) -> str:
    """The bracketed word conntrack -L prints before the mark for these status bits ("" if none)."""
    if status & Status.HW_OFFLOAD:
        return "[HW_OFFLOAD] "
    if status & Status.OFFLOAD:
        return "[OFFLOAD] "
    if status & Status.ASSURED:
        return "[ASSURED] "
    return ""


def status_list(status: int) -> str:
    """The JSON list of status bit names."""
    return json.dumps(status_names(status))


# ---------------------------------------------------------------- the two lines, described once
#
# Both outside forms are written by code generated from the description below,
# once per *shape* of entry: which optional parts it has and how its tuples print.
# `entry_text` and `entry_json` compile shapes over an `Entry`; the wire decoder
# compiles the same description over the values it unpacks from a message
# (`line_function`), so a dump is written without building an Entry.  Either way
# the format itself is only here.

PORT, ICMP, PLAIN = "port", "icmp", "plain"  # how a tuple prints


def text_kind(proto: int) -> str:
    """How conntrack -L prints a tuple of ``proto``."""
    return PORT if proto in PORT_PROTOS else ICMP if proto in ICMP_PROTOS else PLAIN


class Memo(dict):  # type: ignore[type-arg]
    """key -> fn(key) (fn(*key) for a tuple key), computed on the first miss and
    remembered (at most ``limit`` keys, then it starts again).  Generated code
    indexes these: a dict hit is the cheapest lookup Python has."""

    def __init__(self, fn: Callable[..., Any], limit: int = 1 << 16) -> None:
        super().__init__()
        self.fn = fn
        self.limit = limit

    def __missing__(self, key: Any) -> Any:
        if len(self) > self.limit:
            self.clear()
        value = self[key] = self.fn(*key) if type(key) is tuple else self.fn(key)
        return value


def _state_text_piece(proto: int, state: int | None) -> str:
    st = state_text(proto, state)
    return "" if st is None else st + " "


def _state_json_piece(proto: int, state: int | None) -> str:
    st = state_text(proto, state)
    return "" if st is None else f',"state":"{st}"'


def _labels_json(labels: int | None) -> str:
    return f',"labels":"{labels:#x}"' if labels else ""


def _labels_text(names: dict[int, str] | None, labels: int | None) -> str:
    if not names or not labels:
        return ""
    found = [names[b] for b in sorted(names) if labels >> b & 1]
    return "labels=" + ",".join(found) + " " if found else ""


def _delta_time(start: int, stop: int | None) -> int:
    end = stop // 1_000_000_000 if stop else int(time.time())
    return end - start // 1_000_000_000


def _timestamp_json(start: int, stop: int | None) -> str:
    return f',"timestamp":{{"start":{start}' + (f',"stop":{stop}' if stop else "") + "}"


# What generated line code may use besides the values themselves.
LINE_GLOBALS: dict[str, Any] = {
    "HEAD": {p: f"{PROTO_NAMES.get(p, 'unknown'):<8} {p} " for p in range(256)},
    "FAMT": {f: f"{FAMILY_NAMES.get(f, 'unknown'):<8} {f} " for f in range(256)},
    "FAMJ": {f: str(FAMILY_NAMES.get(f, f)) for f in range(256)},
    "PROJ": {p: str(PROTO_NAMES.get(p, p)) for p in range(256)},
    "EVT": Memo(lambda ev: EVENT_TAGS.get(ev, f"{'[' + ev.upper() + ']':>9} ")),
    "STT": Memo(_state_text_piece),
    "STJ": Memo(_state_json_piece),
    "UNR": ("[UNREPLIED] ", "[UNREPLIED] ", "", ""),
    "ASS": Memo(assured_text),
    "SJ": Memo(status_list),
    "LBJ": _labels_json,
    "LBT": _labels_text,
    "DT": _delta_time,
    "TSJ": _timestamp_json,
    "JS": json.dumps,
}


class _Line:
    """Pieces of an f-string: literal text and expressions."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def lit(self, text: str) -> _Line:
        self.parts.append(text.replace("{", "{{").replace("}", "}}"))
        return self

    def val(self, expr: str, spec: str = "") -> _Line:
        self.parts.append("{" + expr + spec + "}")
        return self

    def source(self) -> str:
        return "f" + repr("".join(self.parts))


def _text_tuple(line: _Line, x: Callable[[str], str], p: str, kind: str) -> None:
    line.lit("src=").val(x(p + "src")).lit(" dst=").val(x(p + "dst")).lit(" ")
    if kind == PORT:
        line.lit("sport=").val(x(p + "sport")).lit(" dport=").val(x(p + "dport")).lit(" ")
    elif kind == ICMP:
        line.lit("type=").val(x(p + "icmp_type")).lit(" code=").val(x(p + "icmp_code"))
        line.lit(" id=").val(x(p + "icmp_id")).lit(" ")


def _json_tuple(line: _Line, x: Callable[[str], str], p: str, kind: str, zone: bool) -> None:
    line.lit('{"src":"').val(x(p + "src")).lit('","dst":"').val(x(p + "dst")).lit('"')
    if kind == PORT:
        line.lit(',"sport":').val(x(p + "sport")).lit(',"dport":').val(x(p + "dport"))
    elif kind == ICMP:
        line.lit(',"type":').val(x(p + "icmp_type")).lit(',"code":').val(x(p + "icmp_code"))
        line.lit(',"id":').val(x(p + "icmp_id"))
    if zone:
        line.lit(',"zone":').val(x(p + "zone"))
    line.lit("}")


@dataclass(frozen=True)
class LineShape:
    """What the code written for one kind of entry takes for granted.

    ``orig``/``reply``: how the tuples print (PORT, ICMP or PLAIN; ``reply``
    None when no reply is ever stored, i.e. it is the original's mirror);
    ``has``: the optional parts present (names as in `line_function`);
    the rest are options of the text form.
    """

    form: str
    orig: str
    reply: str | None
    has: frozenset[str]
    extended: bool = False
    show_id: bool = False
    label_names: bool = False


_LOCALS = (("o_src", "src"), ("o_dst", "dst"), ("o_sport", "sport"), ("o_dport", "dport"))
_LOCAL_OF = {"o." + name: local for local, name in _LOCALS}


def line_source(shape: LineShape, expr: Callable[[str], str], mirror: str) -> list[str]:
    """Body lines of a function returning the entry's line (conntrack -L's text or
    nfkit's JSON object) for entries of ``shape``.  ``expr(name)`` is the Python
    expression of a value: "family", "o.proto", "o.src", "o.dst", "o.sport",
    "o.dport", "o.icmp_type", "o.icmp_code", "o.icmp_id", "o.zone", the same
    with "r.", "o.mirror_text" (conntrack -L's text of the mirror tuple, asked for
    non-port tuples only), "status", "state", "timeout", "mark", "zone",
    "labels", "co.packets", "co.bytes", "cr.packets", "cr.bytes", "ts_start",
    "ts_stop", "helper", "secctx", "id", "use", "event", "names" (label names);
    ``mirror`` an expression true when the reply is the original's mirror."""
    has = shape.has
    # the original tuple's values are read once (the text form may print them twice)
    body = [f"    {local} = {expr('o.' + name)}" for local, name in _LOCALS
            if shape.orig == PORT or name in ("src", "dst")]

    def x(name: str) -> str:  # the locals above, else the caller's expressions
        return _LOCAL_OF.get(name) or expr(name)

    if shape.reply is not None:
        body.append(f"    if {mirror}:")
    if shape.form == "text":
        rt = _Line()
        if shape.orig == PORT:
            rt.lit("src=").val(x("o.dst")).lit(" dst=").val(x("o.src")).lit(" sport=")
            rt.val(x("o.dport")).lit(" dport=").val(x("o.sport")).lit(" ")
        else:
            rt.val(x("o.mirror_text"))
        if shape.reply is not None:
            body.append("        rt = " + rt.source())
            body.append("    else:")
            stored = _Line()
            _text_tuple(stored, x, "r.", shape.reply)
            if "r.zone" in has:
                stored.lit("zone-reply=").val(x("r.zone")).lit(" ")
            body.append("        rt = " + stored.source())
        else:
            body.append("    rt = " + rt.source())
        line = _Line()
        if "event" in has:
            line.val(f"EVT[{x('event')}]")
        if shape.extended:
            line.val(f"FAMT[{x('family')}]")
        line.val(f"HEAD[{x('o.proto')}]")
        if "timeout" in has:
            line.val(x("timeout")).lit(" ")
        if "state" in has:
            line.val(f"STT[{x('o.proto')}, {x('state')}]")
        _text_tuple(line, x, "o.", shape.orig)
        if "o.zone" in has:
            line.lit("zone-orig=").val(x("o.zone")).lit(" ")
        if "counters" in has:
            line.lit("packets=").val(x("co.packets")).lit(" bytes=").val(x("co.bytes")).lit(" ")
        line.val(f"UNR[{x('status')} & 2]").val("rt")
        if "counters" in has:
            line.lit("packets=").val(x("cr.packets")).lit(" bytes=").val(x("cr.bytes")).lit(" ")
        line.val(f"ASS[{x('status')}]").lit("mark=").val(x("mark")).lit(" ")
        for name in ("secctx", "zone"):
            if name in has:
                line.lit(name + "=").val(x(name)).lit(" ")
        if "ts_start" in has:
            line.lit("delta-time=").val(f"DT({x('ts_start')}, {x('ts_stop')})").lit(" ")
        for name in ("helper", "use"):
            if name in has:
                line.lit(name + "=").val(x(name)).lit(" ")
        if shape.show_id and "id" in has:
            line.lit("id=").val(x("id")).lit(" ")
        if shape.label_names and "labels" in has:
            line.val(f"LBT({x('names')}, {x('labels')})")
        body.append(f"    return {line.source()}[:-1]")
        return body
    if shape.reply is not None:
        body.append("        rj = ''")
        body.append("    else:")
        stored = _Line().lit(',"reply":')
        _json_tuple(stored, x, "r.", shape.reply, "r.zone" in has)
        body.append("        rj = " + stored.source())
    line = _Line().lit("{")
    if "event" in has:
        line.lit('"event":"').val(x("event")).lit('",')
    line.lit('"family":"').val(f"FAMJ[{x('family')}]").lit('","proto":"').val(f"PROJ[{x('o.proto')}]")
    line.lit('","orig":')
    _json_tuple(line, x, "o.", shape.orig, "o.zone" in has)
    if shape.reply is not None:
        line.val("rj")
    line.lit(',"status":').val(f"SJ[{x('status')}]")
    if "state" in has:
        line.val(f"STJ[{x('o.proto')}, {x('state')}]")
    if "timeout" in has:
        line.lit(',"timeout":').val(x("timeout"))
    line.lit(',"mark":').val(x("mark"))
    if "zone" in has:
        line.lit(',"zone":').val(x("zone"))
    if "labels" in has:
        line.val(f"LBJ({x('labels')})")
    if "counters" in has:
        line.lit(',"counters":{"orig":{"packets":').val(x("co.packets")).lit(',"bytes":')
        line.val(x("co.bytes")).lit('},"reply":{"packets":').val(x("cr.packets"))
        line.lit(',"bytes":').val(x("cr.bytes")).lit("}}")
    if "ts_start" in has:
        line.val(f"TSJ({x('ts_start')}, {x('ts_stop')})")
    for name in ("helper", "secctx"):
        if name in has:
            line.lit(f',"{name}":').val(f"JS({x(name)})")
    for name in ("id", "use"):
        if name in has:
            line.lit(f',"{name}":').val(x(name))
    line.lit("}")
    body.append(f"    return {line.source()}")
    return body


def line_function(shape: LineShape, params: str, x: Callable[[str], str], mirror: str,
                  names: dict[str, Any] | None = None) -> Callable[..., str]:
    """`line_source` compiled into ``def line(<params>)``; ``names``: more globals
    the expressions of ``x`` use."""
    src = "\n".join([f"def line({params}):", *line_source(shape, x, mirror)])
    namespace: dict[str, Any] = {}
    exec(src, {**LINE_GLOBALS, **(names or {})}, namespace)  # noqa: S102 - generated above
    return namespace["line"]  # type: ignore[no-any-return]


# The values of an Entry, for the lines written from one.
_ENTRY_EXPRS = {
    "family": "e.family", "status": "e.status", "state": "e.state", "timeout": "e.timeout", "mark": "e.mark",
    "zone": "e.zone", "labels": "e.labels", "ts_start": "e.ts_start", "ts_stop": "e.ts_stop",
    "helper": "e.helper", "secctx": "e.secctx", "id": "e.id", "use": "e.use", "event": "event",
    "names": "names", "co.packets": "e.counters.orig_packets", "co.bytes": "e.counters.orig_bytes",
    "cr.packets": "e.counters.reply_packets", "cr.bytes": "e.counters.reply_bytes",
    "o.mirror_text": "MT(e.orig)",
}


def _entry_expr(form: str, name: str) -> str:
    if name in _ENTRY_EXPRS:
        return _ENTRY_EXPRS[name]
    side, field = name.split(".")
    t = "e.orig" if side == "o" else "e._reply"
    if form == "text" and field in ("icmp_type", "icmp_code", "icmp_id"):
        return f"({t}.{field} or 0)"  # conntrack -L prints 0 for a missing ICMP field
    return f"{t}.{field}"


def _tuple_text_function(kind: str) -> Callable[[Tuple], str]:
    line = _Line()
    _text_tuple(line, lambda n: _entry_expr("text", n).replace("e.orig", "t"), "o.", kind)
    namespace: dict[str, Any] = {}
    exec(f"def text(t):\n    return {line.source()}", {}, namespace)  # noqa: S102 - generated above
    return namespace["text"]  # type: ignore[no-any-return]


_TUPLE_TEXT = Memo(_tuple_text_function)


def _mirror_text(t: Tuple) -> str:
    m = t.mirror()
    return _TUPLE_TEXT[text_kind(m.proto)](m)  # type: ignore[no-any-return]


def _compile_entry_line(form: str, orig: str, reply: str | None, present: tuple[bool, ...], extended: bool,
                        show_id: bool, label_names: bool) -> Callable[..., str]:
    has = frozenset(name for name, there in zip(_OPTIONAL, present, strict=True) if there)
    shape = LineShape(form, orig, reply, has, extended, show_id, label_names)
    return line_function(shape, "e, names, event", lambda n: _entry_expr(form, n), "e._reply is None",
                         {"MT": _mirror_text})


_ENTRY_LINES = Memo(_compile_entry_line)


# the optional parts of an Entry, in the order of `_presence`'s flags
_OPTIONAL = ("timeout", "state", "o.zone", "r.zone", "counters", "secctx", "zone", "ts_start", "helper", "use",
             "id", "labels", "event")


def _presence(e: Entry, event: str | None) -> tuple[bool, ...]:
    o, r = e.orig, e._reply
    return (e.timeout is not None, e.state is not None, o.zone is not None,
            r is not None and r.zone is not None, e.counters is not None, e.secctx is not None,
            e.zone is not None, e.ts_start is not None, e.helper is not None, e.use is not None,
            e.id is not None, bool(e.labels), event is not None)


def entry_text(e: Entry, label_names: dict[int, str] | None = None, extended: bool = False,
               event: str | None = None, show_id: bool = False) -> str:
    """The entry as one line of `conntrack -L` (or, with ``event``, `conntrack -E`)."""
    r = e._reply
    fn = _ENTRY_LINES["text", text_kind(e.orig.proto), None if r is None else text_kind(r.proto),
                      _presence(e, event), extended, show_id, bool(label_names)]
    return fn(e, label_names, event)  # type: ignore[no-any-return]


def _json_kind(t: Tuple) -> str:
    return PORT if t.proto in PORT_PROTOS else ICMP if t.icmp_type is not None else PLAIN


def entry_json(e: Entry, event: str | None = None) -> str:
    """The entry as one JSON object on one line (the form `create --from` reads)."""
    r = e._reply
    fn = _ENTRY_LINES["json", _json_kind(e.orig), None if r is None else _json_kind(r), _presence(e, event),
                      False, False, False]
    return fn(e, None, event)  # type: ignore[no-any-return]


_PROTOS = {name: num for num, name in PROTO_NAMES.items()}
_FAST_KEYS = frozenset({"family", "proto", "orig", "reply", "status", "state", "timeout", "mark",
                        "counters", "id", "use", "event"})
_STATES = {name: num for num, name in enumerate(TCP_STATE_TEXT)}
_STATES["SYN_SENT2"] = 9


def _fast_entry(obj: dict[str, Any]) -> Entry | None:
    """The common shape of `entry_json`'s output, checked inline; None: take the careful path."""
    if not _FAST_KEYS.issuperset(obj):
        return None
    try:
        proto = _PROTOS.get(obj.get("proto"))  # type: ignore[arg-type]
        if proto is None or proto not in PORT_PROTOS:
            return None
        o = obj.get("orig")
        if type(o) is not dict or len(o) != 4:
            return None
        orig = Tuple.from_json(o, proto)
        reply = None
        r = obj.get("reply")
        if r is not None:
            if type(r) is not dict:
                return None
            reply = Tuple.from_json(r, proto)
            if reply.family != orig.family:
                return None
        family = FAMILY_NUMBERS.get(obj.get("family", "ipv6" if ":" in orig.src else "ipv4"))
        if family != orig.family:
            return None
        status = obj.get("status", ())
        if type(status) is not list:
            return None
        status = parse_status_names(status)
        state = obj.get("state")
        if state is not None:
            state = _STATES.get(state)
            if state is None or proto != IPPROTO_TCP:
                return None
        timeout, mark = obj.get("timeout", 30), obj.get("mark", 0)
        if (type(timeout) is not int or type(mark) is not int or not 0 <= timeout <= U32_MAX
                or not 0 <= mark <= U32_MAX):
            return None
    except (TypeError, InputError):
        return None
    return Entry(orig, reply, family=family, status=status, state=state, timeout=timeout, mark=mark,
                 id=obj.get("id"), use=obj.get("use"))


_NUM = r'(\d{1,10})'
_ADDR = r'([0-9a-fA-F.:]{2,45})'
_TUPLE_RE = r'\{"src":"' + _ADDR + r'","dst":"' + _ADDR + r'","sport":' + _NUM + r',"dport":' + _NUM + r'\}'
# `entry_json`'s own output for port-based protocols, field by field (no string escapes,
# digits only): a line this pattern matches means exactly what json.loads would read.
_LINE_RE = re.compile(
    r'\{(?:"event":"[a-z]+",)?"family":"(ipv4|ipv6)","proto":"(tcp|udp|udplite|sctp|dccp)",'
    r'"orig":' + _TUPLE_RE + r'(?:,"reply":' + _TUPLE_RE + r')?'
    r',"status":\[((?:"[A-Z_]+"(?:, ?"[A-Z_]+")*)?)\](?:,"state":"([A-Z0-9_]+)")?'
    r',"timeout":' + _NUM + r',"mark":' + _NUM +
    r'(?:,"counters":\{"orig":\{"packets":\d+,"bytes":\d+\},"reply":\{"packets":\d+,"bytes":\d+\}\})?'
    r'(?:,"id":' + _NUM + r')?(?:,"use":' + _NUM + r')?\}\s*\Z')


class _StatusText(dict):  # type: ignore[type-arg]
    """'"SEEN_REPLY", "ASSURED"' -> bits (None when a name is unknown)."""

    def __missing__(self, text: str) -> int | None:
        try:
            value: int | None = parse_status_names(json.loads("[" + text + "]"))
        except InputError:
            value = None
        if len(self) < 4096:
            self[text] = value
        return value


_STATUS_TEXT = _StatusText()


def entry_from_json_line(line: str) -> Entry | None:
    """The entry of one line in `entry_json`'s own form, read by a precompiled pattern.

    Returns None for any line not in exactly that form (or with a value out of
    range): read it with json and `entry_from_json`, which names the error.
    """
    m = _LINE_RE.match(line)
    if m is None:
        return None
    (fam, proto_name, os_, od, osp, odp, rs, rd, rsp, rdp, status_text, state_name, timeout,
     mark, id_, use) = m.groups()
    get = ADDRS_SEEN
    try:
        src, dst = get(os_) or CANONICAL_ADDRS.get(os_), get(od) or CANONICAL_ADDRS.get(od)
    except TypeError:
        return None
    sport, dport = int(osp), int(odp)
    if src is None or dst is None or sport > PORT_MAX or dport > PORT_MAX:
        return None
    family = AF_INET6 if ":" in src else AF_INET
    if (":" in dst) != (family == AF_INET6) or FAMILY_NUMBERS[fam] != family:
        return None
    proto = _PROTOS[proto_name]
    orig = tuple_new(Tuple, (src, dst, proto, sport, dport, None, None, None, None))
    reply = None
    if rs is not None:
        rsrc, rdst = get(rs) or CANONICAL_ADDRS.get(rs), get(rd) or CANONICAL_ADDRS.get(rd)
        rsport, rdport = int(rsp), int(rdp)
        if rsrc is None or rdst is None or rsport > PORT_MAX or rdport > PORT_MAX:
            return None
        if (":" in rsrc) != (family == AF_INET6) or (":" in rdst) != (family == AF_INET6):
            return None
        if not (rsrc == dst and rdst == src and rsport == dport and rdport == sport):
            reply = tuple_new(Tuple, (rsrc, rdst, proto, rsport, rdport, None, None, None, None))
    status = _STATUS_TEXT[status_text]
    if status is None:
        return None
    state = None
    if state_name is not None:
        state = _STATES.get(state_name)
        if state is None or proto != IPPROTO_TCP:
            return None
    t, mk = int(timeout), int(mark)
    if t > U32_MAX or mk > U32_MAX:
        return None
    e = object.__new__(Entry)
    e.family, e.orig, e._reply, e.status, e.state, e.timeout, e.mark = (
        family, orig, reply, status, state, t, mk)
    e.zone = e.labels = e.counters = e.ts_start = e.ts_stop = e.helper = e.secctx = e.vtags = None
    e.id = None if id_ is None else int(id_)
    e.use = None if use is None else int(use)
    return e


# Every key `entry_json` writes; any other key is refused (a misspelt "lables" is not
# silently dropped).  Counters, timestamps, helper, secctx, id and use are the kernel's:
# read and checked, never sent back by a create.
ENTRY_KEYS = frozenset({"event", "family", "proto", "orig", "reply", "status", "state", "timeout",
                        "mark", "zone", "labels", "counters", "timestamp", "helper", "secctx", "id",
                        "use"})
TUPLE_KEYS = frozenset({"src", "dst", "sport", "dport", "type", "code", "id", "zone"})


def _sub(what: str, name: str) -> str:
    return f"{what}.{name}" if what else name


def _fail(what: str, cause: str) -> InputError:
    return InputError(f"{what}: {cause}" if what else cause)


def _text(obj: dict[str, Any], key: str, what: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _fail(_sub(what, key), f"not a string ({type(value).__name__})")
    if value is not None and len(value) > 255:
        raise _fail(_sub(what, key), f"{len(value)} characters is too long (at most 255)")
    return value


def _counters(obj: Any, what: str) -> Counters | None:
    if obj is None:
        return None
    if not isinstance(obj, dict) or not set(obj) <= {"orig", "reply"}:
        raise _fail(what, 'not an object {"orig": {...}, "reply": {...}}')
    values = []
    for side in ("orig", "reply"):
        part = obj.get(side, {})
        if not isinstance(part, dict) or not set(part) <= {"packets", "bytes"}:
            raise _fail(f"{what}.{side}", 'not an object {"packets": N, "bytes": N}')
        values += [check(part.get(k, 0), "counter", f"{what}.{side}.{k}") for k in ("packets", "bytes")]
    return Counters(*values)


def entry_from_json(obj: Any, what: str = "entry") -> Entry:
    """An Entry from its JSON form (as `entry_json` writes it); raises InputError naming ``what``
    (and the field: ``what.orig.sport``; with ``what`` "" the field alone).

    Every value is checked against its field's range (`nfkit.conntrack.values`),
    unknown keys are refused.
    """
    if type(obj) is dict:
        fast = _fast_entry(obj)
        if fast is not None:
            return fast
    if not isinstance(obj, dict):
        raise _fail(what, f"not a JSON object ({type(obj).__name__})")
    unknown = sorted(k for k in obj if k not in ENTRY_KEYS)
    if unknown:
        raise _fail(what, f"unknown key {unknown[0][:40]!r} (known: {', '.join(sorted(ENTRY_KEYS))})")
    proto_key = obj.get("proto", "tcp")
    proto = _PROTOS.get(proto_key) if isinstance(proto_key, str) else None
    if proto is None:
        if type(proto_key) is not int and not isinstance(proto_key, str):
            raise _fail(_sub(what, "proto"), f"not a protocol name or number ({type(proto_key).__name__})")
        proto = proto_number(proto_key, _sub(what, "proto"))
    for side in ("orig", "reply"):
        t = obj.get(side)
        if t is None:
            continue
        if not isinstance(t, dict):
            raise _fail(_sub(what, side), f"not an object ({type(t).__name__})")
        bad = sorted(k for k in t if k not in TUPLE_KEYS)
        if bad:
            raise _fail(_sub(what, side), f"unknown key {bad[0][:40]!r} (known: {', '.join(sorted(TUPLE_KEYS))})")
    if "orig" not in obj:
        raise _fail(what, "missing the original tuple ('orig')")
    orig = Tuple.from_json(obj["orig"], proto, _sub(what, "orig"))
    reply = None
    if obj.get("reply") is not None:
        reply = Tuple.from_json(obj["reply"], proto, _sub(what, "reply"))
        if reply.family != orig.family:
            raise _fail(what, "orig and reply tuples of different families")
    family = orig.family
    if "family" in obj:
        fam_text = obj["family"]
        fam = FAMILY_NUMBERS.get(fam_text.lower()) if isinstance(fam_text, str) else None
        if fam is None:
            raise _fail(_sub(what, "family"), f"unknown family {str(fam_text)[:40]!r} (ipv4 or ipv6)")
        if fam != family:
            raise _fail(_sub(what, "family"), f"{fam_text} but the addresses are "
                        f"{'IPv6' if family == AF_INET6 else 'IPv4'}")
    status = obj.get("status", [])
    if isinstance(status, list):
        if not all(isinstance(s, str) for s in status):
            raise _fail(_sub(what, "status"), "status names must be strings")
        try:
            status = parse_status_names(status)
        except InputError as exc:
            raise _fail(_sub(what, "status"), str(exc)) from None
    else:
        status = check(status, "status", _sub(what, "status"))
    state = None
    if obj.get("state") is not None:
        if not isinstance(obj["state"], str):
            raise _fail(_sub(what, "state"), "not a state name")
        if proto in (IPPROTO_SCTP, IPPROTO_DCCP) and obj["state"] != "NONE":
            # the kernel takes an SCTP state only with both verification tags (and DCCP's
            # with role and sequence), which the JSON form does not carry
            raise _fail(_sub(what, "state"), f"a {PROTO_NAMES[proto].upper()} entry can be created "
                        f"in state NONE only, not {obj['state'][:40]!r}")
        if proto != IPPROTO_TCP and obj["state"] != "NONE":
            raise _fail(_sub(what, "state"), "only TCP, SCTP and DCCP entries have a state")
        if proto == IPPROTO_TCP:
            try:
                state = parse_tcp_state(obj["state"][:64])
            except InputError as exc:
                raise _fail(_sub(what, "state"), str(exc)) from None
    labels = obj.get("labels")
    if labels is not None:
        labels = check(labels, "labels", _sub(what, "labels")) or None
    timeout = obj.get("timeout", 30)
    if type(timeout) is not int or not 0 <= timeout <= U32_MAX:
        timeout = check(timeout, "timeout", _sub(what, "timeout"))
    mark = obj.get("mark", 0)
    if type(mark) is not int or not 0 <= mark <= U32_MAX:
        mark = check(mark, "mark", _sub(what, "mark"))
    zone = obj.get("zone")
    zone = None if zone is None else check(zone, "zone", _sub(what, "zone"))
    counters = _counters(obj.get("counters"), _sub(what, "counters"))
    stamp = obj.get("timestamp")
    ts_start = ts_stop = None
    if stamp is not None:
        if not isinstance(stamp, dict) or not set(stamp) <= {"start", "stop"}:
            raise _fail(_sub(what, "timestamp"), 'not an object {"start": NS, "stop": NS}')
        ts_start = check(stamp.get("start", 0), "timestamp", _sub(what, "timestamp.start"))
        ts_stop = None if stamp.get("stop") is None else check(
            stamp["stop"], "timestamp", _sub(what, "timestamp.stop"))
    ident = obj.get("id")
    use = obj.get("use")
    return Entry(orig, reply, family=family, status=status, state=state, timeout=timeout,
                 mark=mark, zone=zone, labels=labels, counters=counters, ts_start=ts_start,
                 ts_stop=ts_stop, helper=_text(obj, "helper", what), secctx=_text(obj, "secctx", what),
                 id=None if ident is None else check(ident, "id", _sub(what, "id")),
                 use=None if use is None else check(use, "use", _sub(what, "use")))


def entries_from_json_lines(text: str, name: str) -> Iterator[Entry]:
    """The entries of JSON lines (`entry_json`'s form; blank and ``#`` lines skipped).

    Raises InputError as ``NAME:LINE: FIELD: cause`` for the first bad line:
    not JSON, nested too deeply, a number too long to read, a value out of
    its field's range, an unknown key.
    """
    fast = entry_from_json_line
    for n, line in enumerate(text.splitlines(), 1):
        e = fast(line)
        if e is not None:
            yield e
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}:{n}: not JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise InputError(f"{name}:{n}: JSON nested too deeply (an entry is 3 levels deep)") from None
        except ValueError as exc:  # an integer of more than 4,300 digits
            raise InputError(f"{name}:{n}: not JSON that can be read ({exc})") from None
        try:
            yield entry_from_json(obj, "")
        except InputError as exc:
            raise InputError(f"{name}:{n}: {exc}") from None
        except RecursionError:
            raise InputError(f"{name}:{n}: JSON nested too deeply (an entry is 3 levels deep)") from None


# conntrack -S's spelling where it differs from the kernel's attribute name (the JSON
# form keeps the attribute names of nfkit.netlink.specs.ctnetlink.STATS_CPU)
CONNTRACK_STAT_NAMES = {"chain_toolong": "chaintoolong"}


def stats_text(global_stats: dict[str, int], per_cpu: list[dict[str, int]]) -> str:
    """Statistics like `conntrack -S` (one line per CPU) plus the table's size."""
    lines = []
    for cpu in per_cpu:
        fields = " ".join(f"{CONNTRACK_STAT_NAMES.get(k, k)}={v}" for k, v in cpu.items() if k != "cpu")
        lines.append(f"cpu={cpu['cpu']:<4}\t{fields} ")
    lines.append(f"entries={global_stats['entries']} max_entries={global_stats['max_entries']}")
    return "\n".join(lines)
