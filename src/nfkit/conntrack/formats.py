"""Conntrack entries as text (conntrack -L's own line format) and as JSON lines.

This module owns both outside forms of an entry: the text line that scripts
parsing `conntrack -L` / `conntrack -E` already understand, and the JSON
object (one per line) that `nfkit ct list -o json` prints and `nfkit ct
create --from` reads back.  It knows nothing about netlink.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
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

_proto_head: dict[int, str] = {}


def _head(proto: int) -> str:
    h = _proto_head.get(proto)
    if h is None:
        h = _proto_head[proto] = f"{PROTO_NAMES.get(proto, 'unknown'):<8} {proto} "
    return h


def _tuple_text(t: Tuple) -> str:
    if t.proto in PORT_PROTOS:
        s = f"src={t.src} dst={t.dst} sport={t.sport} dport={t.dport} "
    elif t.proto in ICMP_PROTOS:
        s = f"src={t.src} dst={t.dst} type={t.icmp_type or 0} code={t.icmp_code or 0} id={t.icmp_id or 0} "
    else:
        s = f"src={t.src} dst={t.dst} "
    return s


def entry_text(e: Entry, label_names: dict[int, str] | None = None, extended: bool = False,
               event: str | None = None, show_id: bool = False) -> str:
    """The entry as one line of `conntrack -L` (or, with ``event``, `conntrack -E`)."""
    o = e.orig
    r = e._reply if e._reply is not None else o.mirror()
    parts = []
    if event:
        parts.append(EVENT_TAGS.get(event, f"{'[' + event.upper() + ']':>9} "))
    if extended:
        parts.append(f"{FAMILY_NAMES.get(e.family, 'unknown'):<8} {e.family} ")
    parts.append(_head(o.proto))
    if e.timeout is not None:
        parts.append(f"{e.timeout} ")
    if e.state is not None:
        st = state_text(o.proto, e.state)
        if st is not None:
            parts.append(st + " ")
    status = e.status
    if o.proto in PORT_PROTOS and r.proto in PORT_PROTOS:
        parts.append(f"src={o.src} dst={o.dst} sport={o.sport} dport={o.dport} ")
    else:
        parts.append(_tuple_text(o))
    if o.zone is not None:
        parts.append(f"zone-orig={o.zone} ")
    c = e.counters
    if c is not None:
        parts.append(f"packets={c.orig_packets} bytes={c.orig_bytes} ")
    if not status & 2:
        parts.append("[UNREPLIED] ")
    if r.proto in PORT_PROTOS:
        parts.append(f"src={r.src} dst={r.dst} sport={r.sport} dport={r.dport} ")
    else:
        parts.append(_tuple_text(r))
    if r.zone is not None:
        parts.append(f"zone-reply={r.zone} ")
    if c is not None:
        parts.append(f"packets={c.reply_packets} bytes={c.reply_bytes} ")
    parts.append(assured_text(status))
    parts.append(f"mark={e.mark} ")
    if e.secctx is not None:
        parts.append(f"secctx={e.secctx} ")
    if e.zone is not None:
        parts.append(f"zone={e.zone} ")
    if e.ts_start is not None:
        stop = e.ts_stop // 1_000_000_000 if e.ts_stop else int(time.time())
        parts.append(f"delta-time={stop - e.ts_start // 1_000_000_000} ")
    if e.helper is not None:
        parts.append(f"helper={e.helper} ")
    if e.use is not None:
        parts.append(f"use={e.use} ")
    if show_id and e.id is not None:
        parts.append(f"id={e.id} ")
    if label_names and e.labels:
        names = [label_names[b] for b in sorted(label_names) if e.labels >> b & 1]
        if names:
            parts.append("labels=" + ",".join(names) + " ")
    return "".join(parts)[:-1]


# ---------------------------------------------------------------- JSON

def assured_text(status: int) -> str:
    """The bracketed word conntrack -L prints before the mark for these status bits ("" if none)."""
    if status & Status.HW_OFFLOAD:
        return "[HW_OFFLOAD] "
    if status & Status.OFFLOAD:
        return "[OFFLOAD] "
    if status & Status.ASSURED:
        return "[ASSURED] "
    return ""


_status_json: dict[int, str] = {}


def status_list(status: int) -> str:
    """The JSON list of status bit names (cached per value)."""
    s = _status_json.get(status)
    if s is None:
        s = _status_json[status] = json.dumps(status_names(status))
    return s


def _tuple_json(t: Tuple) -> str:
    if t.proto in PORT_PROTOS:
        s = f'{{"src":"{t.src}","dst":"{t.dst}","sport":{t.sport},"dport":{t.dport}'
    elif t.icmp_type is not None:
        s = (f'{{"src":"{t.src}","dst":"{t.dst}","type":{t.icmp_type},"code":{t.icmp_code},'
             f'"id":{t.icmp_id}')
    else:
        s = f'{{"src":"{t.src}","dst":"{t.dst}"'
    if t.zone is not None:
        s += f',"zone":{t.zone}'
    return s + "}"


def entry_json(e: Entry, event: str | None = None) -> str:
    """The entry as one JSON object on one line (the form `create --from` reads)."""
    o = e.orig
    parts = ["{"]
    if event:
        parts.append(f'"event":"{event}",')
    parts.append(f'"family":"{FAMILY_NAMES.get(e.family, e.family)}",'
                 f'"proto":"{PROTO_NAMES.get(o.proto, o.proto)}","orig":{_tuple_json(o)}')
    if e._reply is not None:
        parts.append(f',"reply":{_tuple_json(e._reply)}')
    parts.append(f',"status":{status_list(e.status)}')
    if e.state is not None:
        st = state_text(o.proto, e.state)
        if st is not None:
            parts.append(f',"state":"{st}"')
    if e.timeout is not None:
        parts.append(f',"timeout":{e.timeout}')
    parts.append(f',"mark":{e.mark}')
    if e.zone is not None:
        parts.append(f',"zone":{e.zone}')
    if e.labels:
        parts.append(f',"labels":"{e.labels:#x}"')
    c = e.counters
    if c is not None:
        parts.append(f',"counters":{{"orig":{{"packets":{c.orig_packets},"bytes":{c.orig_bytes}}},'
                     f'"reply":{{"packets":{c.reply_packets},"bytes":{c.reply_bytes}}}}}')
    if e.ts_start is not None:
        parts.append(f',"timestamp":{{"start":{e.ts_start}'
                     + (f',"stop":{e.ts_stop}' if e.ts_stop else "") + "}")
    if e.helper is not None:
        parts.append(f',"helper":{json.dumps(e.helper)}')
    if e.secctx is not None:
        parts.append(f',"secctx":{json.dumps(e.secctx)}')
    if e.id is not None:
        parts.append(f',"id":{e.id}')
    if e.use is not None:
        parts.append(f',"use":{e.use}')
    parts.append("}")
    return "".join(parts)


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
    e.zone = e.labels = e.counters = e.ts_start = e.ts_stop = e.helper = e.secctx = None
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
