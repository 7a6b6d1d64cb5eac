"""nft text out: a Ruleset printed the way `nft list ruleset` prints it.

This module owns only the text rendering of statements; it never parses text.
Statements it has no text form for are printed as their JSON.
"""

from __future__ import annotations

import json
from typing import Any

from nfkit.nftables.model import Ruleset

_PRIO = {"filter": 0, "raw": -300, "mangle": -150, "dstnat": -100, "security": 50,
         "srcnat": 100}


def _prio(c: Any) -> str:
    names = {v: k for k, v in _PRIO.items()}
    if c.hook == "postrouting" and c.prio == 100:
        return "srcnat"
    if c.hook == "prerouting" and c.prio == -100:
        return "dstnat"
    if c.prio in names and c.prio not in (100, -100):
        return names[c.prio]
    return str(c.prio)


_UNQUALIFIED = {"iif", "oif", "iifname", "oifname", "iifgroup", "oifgroup"}
_STRING_LEFTS = ({"meta": {"key": "iifname"}}, {"meta": {"key": "oifname"}},
                 {"meta": {"key": "ibrname"}}, {"meta": {"key": "obrname"}},
                 {"ct": {"key": "helper"}})
_HEX_LEFTS = ({"meta": {"key": "mark"}}, {"ct": {"key": "mark"}})


def _typed(left: Any, v: Any) -> str:
    """A value printed the way nft prints it for that left-hand side."""
    if left in _STRING_LEFTS and isinstance(v, str):
        return json.dumps(v)
    if left in _HEX_LEFTS and isinstance(v, int) and not isinstance(v, bool):
        return f"0x{v:08x}"
    if isinstance(v, dict) and "set" in v and left in _STRING_LEFTS:
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
    if k in ("&", "|", "^"):
        return f"{expr(b[0])} {k} {value(b[1])}"
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


def statement(s: dict[str, Any]) -> str:
    (k, b), = s.items()
    if k in ("quota", "limit") and isinstance(b, str):  # a named object
        return f"{k} name {json.dumps(b)}"
    if k == "match":
        op = b["op"]
        ops = "" if op in ("==", "in") else f"{op} "
        return f"{expr(b['left'])} {ops}{_typed(b['left'], b['right'])}"
    if k in ("accept", "drop", "return", "continue"):
        return k
    if k in ("jump", "goto"):
        return f"{k} {b['target']}"
    if k == "counter":
        if isinstance(b, str):
            return f"counter name {b}"
        return f"counter packets {(b or {}).get('packets', 0)} bytes {(b or {}).get('bytes', 0)}"
    if k == "log":
        out = "log"
        for f in ("prefix", "group", "level"):
            if b and f in b:
                out += f" {f} {json.dumps(b[f]) if f == 'prefix' else b[f]}"
        return out
    if k == "limit":
        unit = " " + b["rate_unit"] if "rate_unit" in b else ""
        over = "over " if b.get("inv") else ""
        return f"limit rate {over}{b['rate']}{unit}/{b['per']}"
    if k == "reject":
        if not b:
            return "reject"
        if b["type"] == "tcp reset":
            return "reject with tcp reset"
        return f"reject with {b['type']} {b.get('expr', '')}".rstrip()
    if k in ("snat", "dnat", "masquerade", "redirect"):
        out = k
        b = b or {}
        if "family" in b:
            out += f" {b['family']}"
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
        if "flags" in b:
            out += " " + value(b["flags"])
        return out
    if k == "mangle":
        val = b["value"]
        text = _typed(b["key"], val) if not isinstance(val, dict) else expr(val)
        return f"{expr(b['key'])} set {text}"
    if k == "vmap":
        return f"{expr(b['key'])} vmap {value(b['data'])}"
    if k == "notrack":
        return "notrack"
    if k in ("set", "map") and isinstance(b, dict) and "op" in b:
        return f"{b['op']} {b.get('set', b.get('map'))} {{ {expr(b['elem'])} }}"
    if k == "quota":
        return f"quota {'over ' if b.get('inv') else ''}{b['val']} {b.get('val_unit', 'bytes')}"
    if k == "ct count":
        return f"ct count {'over ' if b.get('inv') else ''}{b['val']}"
    if k == "queue":
        return f"queue num {value(b['num'])}"
    if k in ("snpt", "dnpt"):  # nfkit's form: nft lists these as a bare `xt target SNPT`
        return f"{k} prefix {b['prefix']} to {b['to']}"
    return json.dumps(s)


def rule_text(r: Any) -> str:
    """A rule's statements (and comment) as nft text."""
    text = " ".join(statement(s) for s in r.expr)
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


def to_text(rs: Ruleset, rule_texts: dict[tuple[str, str, str], list[str]] | None = None) -> str:
    """The ruleset in nft's text syntax; with ``rule_texts``, the rules are given as
    text by chain (in order; a text may hold several lines joined by a newline and
    the chain's indent) instead of in ``rs.rules``."""
    lines: list[str] = []
    for t in rs.tables:
        lines.append(f"table {t.family} {t.name} {{")
        first = True
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
            if s.flags:
                lines.append(f"\t\tflags {','.join(s.flags)}")
            if s.timeout is not None:
                lines.append(f"\t\ttimeout {s.timeout}s")
            if s.elem:
                lines.append("\t\telements = { " + ", ".join(
                    f"{value(e[0])} : {value(e[1])}" if isinstance(e, list) else value(e)
                    for e in s.elem) + " }")
            lines.append("\t}")
        for c in rs.chains:
            if (c.family, c.table) != t.key:
                continue
            if not first:
                lines.append("")
            first = False
            lines.append(f"\tchain {c.name} {{")
            if c.hook:
                dev = f" device {json.dumps(c.dev)}" if isinstance(c.dev, str) else ""
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
