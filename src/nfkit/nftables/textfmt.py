"""nft text out: a Ruleset printed the way `nft list ruleset` prints it.

This module owns only the text rendering of statements; it never parses text.
Statements it has no text form for are printed as their JSON.
"""

from __future__ import annotations

import json
from typing import Any

from nfkit.nftables.model import Ruleset
from nfkit.nftables.types import bytes_unit

# nft's standard priorities in the order it tries them, with the hooks each is named
# for (None: every hook); the bridge family has its own.
_STD_PRIOS = [("raw", -300, None), ("mangle", -150, None), ("dstnat", -100, ("prerouting",)),
              ("filter", 0, None), ("security", 50, None), ("srcnat", 100, ("postrouting",))]
_BRIDGE_PRIOS = [("dstnat", -300, ("prerouting",)), ("filter", -200, None), ("out", 100, ("output",)),
                 ("srcnat", 300, ("postrouting",))]


def _prio(c: Any) -> str:
    """A base chain's priority as nft lists it: a standard priority of its family and
    hook within 10 of the number by name ("filter + 10"), else the number."""
    prio = int(c.prio or 0)
    std = _BRIDGE_PRIOS if c.family == "bridge" else \
        [p for p in _STD_PRIOS if p[0] == "filter"] if c.family == "netdev" else _STD_PRIOS
    for name, value, hooks in std:
        if hooks is not None and c.hook not in hooks:
            continue
        if abs(prio - value) <= 10:
            off = prio - value
            return name if not off else f"{name} {'+' if off > 0 else '-'} {abs(off)}"
    return str(prio)


_UNQUALIFIED = {"iif", "oif", "iifname", "oifname", "iifgroup", "oifgroup"}
_STRING_LEFTS = ({"meta": {"key": "iifname"}}, {"meta": {"key": "oifname"}},
                 {"meta": {"key": "ibrname"}}, {"meta": {"key": "obrname"}},
                 {"meta": {"key": "iifkind"}}, {"meta": {"key": "oifkind"}},
                 {"meta": {"key": "sdifname"}}, {"meta": {"key": "iif"}},
                 {"meta": {"key": "oif"}}, {"meta": {"key": "sdif"}},
                 {"meta": {"key": "day"}}, {"meta": {"key": "time"}},
                 {"meta": {"key": "hour"}},
                 {"ct": {"key": "helper"}})
_REALM_LEFTS = ({"rt": {"key": "classid"}}, {"meta": {"key": "rtclassid"}},
                {"meta": {"key": "iifgroup"}}, {"meta": {"key": "oifgroup"}})  # iproute2 names
_HEX_LEFTS = ({"meta": {"key": "mark"}}, {"ct": {"key": "mark"}}, {"socket": {"key": "mark"}})


def _is_cgroupv2(left: Any) -> bool:
    return isinstance(left, dict) and isinstance(left.get("socket"), dict) and \
        left["socket"].get("key") == "cgroupv2"


def _typed(left: Any, v: Any) -> str:
    """A value printed the way nft prints it for that left-hand side."""
    if isinstance(v, bool):  # fib ... exists / missing
        return "exists" if v else "missing"
    if isinstance(left, dict) and "base" in left.get("payload", {}) and isinstance(v, int):
        return f"0x{v:x}"  # a raw payload's value: nft prints it in hex
    if left in _STRING_LEFTS and isinstance(v, str):
        return json.dumps(v)
    if left in _STRING_LEFTS and isinstance(v, dict) and isinstance(v.get("range"), list):
        return "-".join(_typed(left, x) for x in v["range"])  # meta hour "10:00"-"12:00"
    if isinstance(left, dict) and "fib" in left and left["fib"].get("result") in (
            "oif", "oifname") and isinstance(v, str):
        return json.dumps(v)  # an interface, quoted as nft prints it
    if left == {"ct": {"key": "expiration"}} and isinstance(v, int) and not isinstance(v, bool):
        return duration(v)
    if isinstance(left, dict) and ("osf" in left or _is_cgroupv2(left)) and isinstance(v, str):
        return json.dumps(v)  # an OS name, a cgroup's path: quoted as nft prints them
    if left in _REALM_LEFTS and isinstance(v, str) and not v.isdigit():
        return json.dumps(v)  # a realm's name (rt_realms), quoted as nft prints it
    if left in _HEX_LEFTS and isinstance(v, int) and not isinstance(v, bool):
        return f"0x{v:08x}"
    if isinstance(v, dict) and "set" in v and (left in _STRING_LEFTS or left in _REALM_LEFTS
                                               or isinstance(left, dict) and "osf" in left
                                               or _is_cgroupv2(left)):
        items = v["set"] if isinstance(v["set"], list) else [v["set"]]
        return "{ " + ", ".join(_typed(left, i) for i in items) + " }"
    return value(v)


def typed(left: Any, v: Any) -> str:
    """Value ``v`` as nft prints it after left-hand side ``left`` (a match's)."""
    return _typed(left, v)


def value(v: Any) -> str:
    if isinstance(v, dict):
        if "prefix" in v:
            return f"{value(v['prefix']['addr'])}/{v['prefix']['len']}"
        if "range" in v:
            return f"{value(v['range'][0])}-{value(v['range'][1])}"
        if "set" in v:
            items = v["set"] if isinstance(v["set"], list) else [v["set"]]
            return "{ " + ", ".join(value(i) if not isinstance(i, list) else
                                    f"{value(i[0])} : {value(i[1])}" for i in items) + " }"
        if "concat" in v:
            return " . ".join(value(x) for x in v["concat"])
        if len(v) == 1:
            (k, b), = v.items()
            if k in ("accept", "drop", "return", "continue"):
                return k
            if k in ("jump", "goto"):
                return f"{k} {b['target']}"
            return expr(v)
        return json.dumps(v)
    if isinstance(v, list):
        return ",".join(value(x) for x in v)
    if isinstance(v, str):
        return v if v.replace("-", "").replace(".", "").replace(":", "").replace("@", "") \
            .replace("_", "").isalnum() else json.dumps(v)
    return str(v)


def _innermost(e: Any) -> Any:
    """The expression under a chain of bitwise operations (its type types their values)."""
    while isinstance(e, dict) and len(e) == 1 and next(iter(e)) in ("&", "|", "^"):
        e = next(iter(e.values()))[0]
    return e


def expr(e: Any) -> str:
    if not isinstance(e, dict):
        return value(e)
    (k, b), = e.items()
    if k == "payload":
        if "protocol" in b:
            return f"{b['protocol']} {b['field']}"
        return f"@{b['base']},{b['offset']},{b['len']}"
    if k == "meta":
        return b["key"] if b["key"] in _UNQUALIFIED else f"meta {b['key']}"
    if k == "ct":
        parts = ["ct"]
        if "dir" in b:
            parts.append(b["dir"])
        if "family" in b:
            parts.append(b["family"])
        parts.append(b["key"])
        return " ".join(parts)
    if k == "concat":
        return " . ".join(expr(x) for x in b)
    if k in ("<<", ">>"):
        return f"{expr(b[0])} {k} {b[1]}"
    if k == "socket":
        return f"socket {b['key']}" + (f" level {b['level']}" if "level" in b else "")
    if k in ("exthdr", "tcp option", "ip option", "sctp chunk"):
        head = {"exthdr": "", "tcp option": "tcp option ", "ip option": "ip option ",
                "sctp chunk": "sctp chunk "}[k]
        if k == "tcp option" and "base" in b:  # a raw option
            return f"tcp option @{b['base']},{b['offset']},{b['len']}"
        if "field" not in b:
            return f"{'exthdr ' if k == 'exthdr' else head}{b['name']}"
        return f"{head}{b['name']} {b['field']}"
    if k == "rt":
        return f"rt {b['family']} {b['key']}" if "family" in b else f"rt {b['key']}"
    if k == "osf":
        return f"osf {'ttl ' + b['ttl'] + ' ' if 'ttl' in b else ''}{b['key']}"
    if k == "ipsec":
        spnum = f"spnum {b['spnum']} " if b.get("spnum") else ""
        key = f"{b['family']} {b['key']}" if "family" in b else b["key"]
        return f"ipsec {b.get('dir', 'in')} {spnum}{key}"
    if k in ("&", "|", "^"):
        return f"{expr(b[0])} {k} {_typed(_innermost(b[0]), b[1])}"
    if k == "map":
        return f"{expr(b['key'])} map {value(b['data'])}"
    if k == "numgen":
        off = f" offset {b['offset']}" if b.get("offset") else ""
        return f"numgen {b['mode']} mod {b['mod']}{off}"
    if k == "jhash":
        out = f"jhash {expr(b['expr'])} mod {b['mod']}"
        if "seed" in b:
            out += f" seed 0x{b['seed']:x}"
        return out + (f" offset {b['offset']}" if b.get("offset") else "")
    if k == "symhash":
        return f"symhash mod {b['mod']}" + (f" offset {b['offset']}" if b.get("offset") else "")
    if k == "fib":
        fl = b["flags"] if isinstance(b["flags"], list) else [b["flags"]]
        return f"fib {' . '.join(fl)} {b['result']}"
    return json.dumps(e)


def statement(s: dict[str, Any], family: str | None = None) -> str:
    """One statement as nft prints it (``family``: the table's, for the defaults nft
    leaves out, as `reject`'s code)."""
    (k, b), = s.items()
    if k in ("quota", "limit") and isinstance(b, str):  # a named object
        return f"{k} name {json.dumps(b)}"
    if k in ("ct helper", "ct timeout", "ct expectation") and isinstance(b, str):
        return f"{k} set {json.dumps(b)}"
    if k == "ct helper" and isinstance(b, dict) and "map" in b:
        m = b["map"]
        items = ", ".join(f"{value(kk)} : {json.dumps(n)}" for kk, n in m["data"]["set"])
        return f"ct helper set {expr(m['key'])} map {{ {items} }}"
    if k == "dup":
        dev = f" device {json.dumps(b['dev'])}" if "dev" in b else ""
        return f"dup to {value(b['addr'])}{dev}"
    if k == "fwd":
        if "addr" in b:
            return f"fwd {b.get('family', 'ip')} to {value(b['addr'])} device {json.dumps(b['dev'])}"
        return f"fwd to {json.dumps(b['dev'])}"
    if k == "tproxy":
        fam = f" {b['family']}" if "family" in b else ""
        where = value(b["addr"]) if "addr" in b else ""
        if ":" in where and "port" in b:
            where = f"[{where}]"
        port = f":{b['port']}" if "port" in b else ""
        return f"tproxy{fam} to {where}{port}"
    if k == "synproxy":
        if isinstance(b, str):
            return f"synproxy name {json.dumps(b)}"
        return " ".join(["synproxy", *_synproxy_words(b or {})])
    if k == "match":
        op = b["op"]
        left = b["left"]
        if isinstance(b["right"], bool) and isinstance(left, dict) and "base" in left.get(
                "tcp option", {}):  # `tcp option 254 exists`, as nft prints a raw option's
            return f"tcp option {left['tcp option']['base']} {'!= ' if op == '!=' else ''}" \
                f"{_typed(left, b['right'])}"
        binop = isinstance(left, dict) and next(iter(left), None) in ("&", "|", "^")
        ops = "== " if binop and op == "==" else "" if op in ("==", "in") else f"{op} "
        return f"{expr(left)} {ops}{_typed(_innermost(left), b['right'])}"
    if k in ("accept", "drop", "return", "continue"):
        return k
    if k in ("jump", "goto"):
        return f"{k} {b['target']}"
    if k == "counter":
        if isinstance(b, str):
            return f"counter name {json.dumps(b)}"
        return f"counter packets {(b or {}).get('packets', 0)} bytes {(b or {}).get('bytes', 0)}"
    if k == "log":
        return _log_text(b or {})
    if k == "limit":
        unit = " " + b["rate_unit"] if "rate_unit" in b else ""
        over = "over " if b.get("inv") else ""
        burst = ""
        if "rate_unit" not in b and b.get("burst", 5) != 5:
            burst = f" burst {b['burst']} packets"
        elif "rate_unit" in b and b.get("burst"):
            burst = f" burst {b['burst']} {b.get('burst_unit', 'bytes')}"
        return f"limit rate {over}{b['rate']}{unit}/{b['per']}{burst}"
    if k == "reject":
        if not b:
            return "reject"
        if b["type"] == "tcp reset":
            return "reject with tcp reset"
        default = {"inet": "icmpx", "bridge": "icmpx", "netdev": "icmpx", "ip": "icmp",
                   "ip6": "icmpv6"}.get(family or "")
        if b["type"] == default and b.get("expr", "port-unreachable") == "port-unreachable":
            return "reject"
        return f"reject with {b['type']} {b.get('expr', '')}".rstrip()
    if k in ("snat", "dnat", "masquerade", "redirect"):
        out = k
        b = b or {}
        if "family" in b:
            out += f" {b['family']}"
        flags = b.get("flags", [])
        flags = [flags] if isinstance(flags, str) else list(flags)
        if "netmap" in flags:  # nft's word for the netmap flag
            out += " prefix"
            flags.remove("netmap")
        if "addr" in b or "port" in b:
            out += " to "
            addr = b.get("addr")
            if addr is not None:
                text = value(addr) if not isinstance(addr, dict) or "prefix" in addr \
                    or "range" in addr else expr(addr)
                if ":" in text and "port" in b and not isinstance(addr, dict):
                    text = f"[{text}]"
                out += text
            if "port" in b:
                out += f":{value(b['port'])}"
        if flags:
            out += " " + value(flags[0] if len(flags) == 1 else flags)
        return out
    if k == "mangle" and isinstance(b["value"], dict) and isinstance(
            b["value"].get("map"), dict) and isinstance(b["value"]["map"].get("data"), dict) \
            and isinstance(b["value"]["map"]["data"].get("set"), list):
        # an anonymous map's keys and values typed as nft prints them (marks in hex)
        m = b["value"]["map"]
        items = ", ".join(f"{_typed(m['key'], kk)} : {_typed(b['key'], vv)}"
                          for kk, vv in m["data"]["set"])
        return f"{expr(b['key'])} set {expr(m['key'])} map {{ {items} }}"
    if k == "mangle":
        val = b["value"]
        text = _typed(b["key"], val) if not isinstance(val, dict) else expr(val)
        return f"{expr(b['key'])} set {text}"
    if k == "vmap":
        return f"{expr(b['key'])} vmap {value(b['data'])}"
    if k == "notrack":
        return "notrack"
    if k in ("set", "map", "meter") and isinstance(b, dict) and ("op" in b or k == "meter"):
        elem = b["key" if k == "meter" else "elem"]
        inner = expr(elem)
        if isinstance(elem, dict) and "elem" in elem:
            inner = expr(elem["elem"]["val"])
            if "timeout" in elem["elem"]:
                inner += f" timeout {elem['elem']['timeout']}s"
        stmts = [b["stmt"]] if k == "meter" else b.get("stmt") or ()
        for st in stmts:  # nft lists a set update's counter without values
            inner += " counter" if st == {"counter": None} else " " + statement(st)
        if k == "meter":
            size = f" size {b['size']}" if "size" in b else ""
            return f"meter {b['name']}{size} {{ {inner} }}"
        data = f" : {value(b['data'])}" if k == "map" else ""
        return f"{b['op']} {b.get('set', b.get('map'))} {{ {inner}{data} }}"
    if k == "quota":
        used = f" used {b['used']} {b.get('used_unit', 'bytes')}" if b.get("used") else ""
        return (f"quota {'over ' if b.get('inv') else ''}{b['val']} {b.get('val_unit', 'bytes')}"
                f"{used}")
    if k == "ct count":
        return f"ct count {'over ' if b.get('inv') else ''}{b['val']}"
    if k == "queue":
        return f"queue num {value(b['num'])}"
    if k in ("snpt", "dnpt"):  # nfkit's form: nft lists these as a bare `xt target SNPT`
        return f"{k} prefix {b['prefix']} to {b['to']}"
    return json.dumps(s)


def _log_text(b: dict[str, Any]) -> str:
    out = "log"
    if "prefix" in b:
        out += f" prefix {json.dumps(b['prefix'])}"
    for f in ("group", "snaplen", "queue-threshold", "level"):
        if f in b:
            out += f" {f} {b[f]}"
    flags = b.get("flags")
    flags = [flags] if isinstance(flags, str) else list(flags or [])
    if "all" in flags:
        return out + " flags all"
    if "tcp sequence" in flags and "tcp options" in flags:
        out += " flags tcp sequence,options"
    for f in ("tcp sequence", "tcp options", "ip options", "skuid", "ether"):
        if f in flags and not (f.startswith("tcp") and "tcp sequence,options" in out):
            out += f" flags {f}"
    return out


def _synproxy_words(b: dict[str, Any]) -> list[str]:
    words = [f"{k} {b[k]}" for k in ("mss", "wscale") if k in b]
    flags = b.get("flags", [])
    return words + ([flags] if isinstance(flags, str) else list(flags))


def _ms(ms: int) -> str:
    """Milliseconds as nft prints a ct expectation's timeout (1000 -> 1s)."""
    return duration(ms // 1000) if ms % 1000 == 0 else f"{ms}ms"


def duration(seconds: int) -> str:
    """A time as nft prints it (90 -> 1m30s)."""
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out + (f"{seconds}s" if seconds or not out else "")


def _elem_text(kt: Any, e: Any) -> str:
    """A set element, with what it carries (timeout, expires, counter...)."""
    if not (isinstance(e, dict) and "elem" in e):
        return _typed(kt, e)
    el = e["elem"]
    out = _typed(kt, el["val"])
    for f in ("timeout", "expires"):
        if f in el:
            out += f" {f} {duration(int(el[f]))}"
    if "comment" in el:
        out += f" comment {json.dumps(el['comment'])}"
    for f in ("counter", "quota", "limit"):
        if f in el:
            out += " " + statement({f: el[f]})
    return out


def rule_text(r: Any) -> str:
    """A rule's statements (and comment) as nft text."""
    text = " ".join(statement(s, r.family) for s in r.expr)
    if r.comment:
        text += f" comment {json.dumps(r.comment)}"
    return text


def command(c: Any) -> str:
    """One change (a jsonfmt.Command) as the nft command line that makes it."""
    o = c.obj
    if c.kind == "rule":
        where = f"{c.verb} rule {o.family} {o.table} {o.chain}"
        if c.verb == "delete":
            return f"{where} handle {o.handle}"
        pos = f" position {o.position}" if o.position is not None else ""
        return f"{where}{pos} {rule_text(o)}"
    return str(c)


def _obj_lines(o: Any) -> list[str]:
    """The body of a named object's block, as nft lists it."""
    b = o.body
    if o.kind == "counter":
        return [f"packets {b.get('packets', 0)} bytes {b.get('bytes', 0)}"]
    if o.kind == "quota":
        n, unit = bytes_unit(int(b.get("bytes", 0)))
        line = f"{'over ' if b.get('inv') else ''}{n} {unit}"
        if b.get("used"):
            un, uu = bytes_unit(int(b["used"]))
            line += f" used {un} {uu}"
        return [line]
    if o.kind == "limit":
        over = "over " if b.get("inv") else ""
        if b.get("rate_unit", "packets") == "packets":
            burst = f" burst {b['burst']} packets" if b.get("burst", 5) != 5 else ""
            return [f"rate {over}{b['rate']}/{b['per']}{burst}"]
        burst = f" burst {b['burst']} {b.get('burst_unit', 'bytes')}" if b.get("burst") else ""
        return [f"rate {over}{b['rate']} {b['rate_unit']}/{b['per']}{burst}"]
    if o.kind == "ct timeout":
        pol = ", ".join(f"{k} : {v}" for k, v in b.get("policy", {}).items())
        return [f"protocol {b['protocol']}", f"l3proto {b['l3proto']}", f"policy = {{ {pol} }}"]
    if o.kind == "ct expectation":
        return [f"protocol {b['protocol']}", f"dport {b['dport']}",
                f"timeout {_ms(int(b['timeout']))}", f"size {b['size']}",
                f"l3proto {b['l3proto']}"]
    if o.kind == "synproxy":
        words = _synproxy_words(b)
        return [w for w in words if w.startswith(("mss", "wscale"))] + \
            ([" ".join(w for w in words if not w.startswith(("mss", "wscale")))]
             if len(words) > sum(w.startswith(("mss", "wscale")) for w in words) else [])
    if o.kind == "ct helper":
        return [f"type {json.dumps(b['type'])} protocol {b['protocol']}",
                f"l3proto {b['l3proto']}"]
    return [json.dumps(b)]


def to_text(rs: Ruleset, rule_texts: dict[tuple[str, str, str], list[str]] | None = None) -> str:
    """The ruleset in nft's text syntax; with ``rule_texts``, the rules are given as
    text by chain (in order; a text may hold several lines joined by a newline and
    the chain's indent) instead of in ``rs.rules``."""
    lines: list[str] = []
    for t in rs.tables:
        lines.append(f"table {t.family} {t.name} {{")
        first = True
        for o in rs.objs:  # nft lists a table's objects before its sets
            if (o.family, o.table) != t.key:
                continue
            if not first:
                lines.append("")
            first = False
            lines.append(f"\t{o.kind} {o.name} {{")
            lines += [f"\t\t{line}" for line in _obj_lines(o)]
            lines.append("\t}")
        for s in rs.sets:
            if (s.family, s.table) != t.key:
                continue
            if not first:
                lines.append("")
            first = False
            tp = s.type if isinstance(s.type, str) else " . ".join(s.type)
            if s.map is not None:
                tp += " : " + (s.map if isinstance(s.map, str) else " . ".join(s.map))
            lines.append(f"\t{s.kind} {s.name} {{")
            lines.append(f"\t\ttype {tp}")
            if s.size:
                lines.append(f"\t\tsize {s.size}")
            if s.flags:  # in nft's order
                order = ["constant", "dynamic", "interval", "timeout"]
                lines.append("\t\tflags " + ",".join(sorted(
                    s.flags, key=lambda f: order.index(f) if f in order else len(order))))
            if s.timeout is not None:
                lines.append(f"\t\ttimeout {duration(int(s.timeout))}")
            for st in s.stmt or ():
                lines.append("\t\t" + ("counter" if st == {"counter": None} else statement(st)))
            if s.comment is not None:
                lines.append(f"\t\tcomment {json.dumps(s.comment)}")
            if s.elem:
                kt = {"meta": {"key": "mark"}} if s.type == "mark" else None
                vt = {"meta": {"key": "mark"}} if s.map == "mark" else None
                lines.append("\t\telements = { " + ", ".join(
                    f"{_typed(kt, e[0])} : {_typed(vt, e[1])}" if isinstance(e, list)
                    else _elem_text(kt, e) for e in s.elem) + " }")
            lines.append("\t}")
        for c in rs.chains:
            if (c.family, c.table) != t.key:
                continue
            if not first:
                lines.append("")
            first = False
            lines.append(f"\tchain {c.name} {{")
            if c.hook:
                devs = [c.dev] if isinstance(c.dev, str) else c.dev or []
                dev = f" device {json.dumps(devs[0])}" if len(devs) == 1 else ""
                lines.append(f"\t\ttype {c.type} hook {c.hook}{dev} priority {_prio(c)}; "
                             f"policy {c.policy};")
            if rule_texts is not None:
                lines += [f"\t\t{text}" for text in rule_texts.get(c.key, ())]
            for r in rs.rules:
                if r.chain == c.name and (r.family, r.table) == t.key:
                    lines.append(f"\t\t{rule_text(r)}")
            lines.append("\t}")
        lines.append("}")
    return "\n".join(lines) + ("\n" if lines else "")
