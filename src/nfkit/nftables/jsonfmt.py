"""libnftables JSON in and out (the schema of `nft -j list ruleset` / `nft -j -f`).

This module owns reading both forms of that schema into model objects (the
listing form, a list of {"table": ...}, {"chain": ...}, ... objects, and the
command form {"add"|"create"|"insert"|"replace"|"delete"|"flush": {...}}) and
writing model objects as the listing form.  Rules are read without looking
inside their statements: those go to the model as they are.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from nfkit.errors import InputError
from nfkit.nftables.model import FAMILIES, OBJECT_KINDS, Chain, Obj, Rule, Ruleset, Set, Table

VERBS = ("add", "create", "insert", "replace", "delete", "flush", "destroy")
KIND_ORDER = {"table": 0, "chain": 1, "set": 2, "map": 2, **dict.fromkeys(OBJECT_KINDS, 2),
              "element": 3, "rule": 4}


@dataclass(slots=True)
class Command:
    """One change: verb (add, create, insert, replace, delete, flush), kind, object."""

    verb: str
    kind: str  # table, chain, rule, set, map, element, counter, quota, limit, ruleset
    obj: Any
    items: list[Any] | None = None  # element commands
    listing: bool = False  # came from the listing form (handles are not positions)

    def __str__(self) -> str:
        return f"{self.verb} {self.obj if self.obj is not None else self.kind}"


def _need(d: dict[str, Any], key: str, what: str) -> Any:
    if key not in d:
        raise InputError(f"{what}: missing {key!r}")
    return d[key]


def _family(d: dict[str, Any], what: str) -> str:
    fam = d.get("family", "ip")
    if fam not in FAMILIES:
        raise InputError(f"{what}: unknown family {fam!r}")
    return str(fam)


def parse_object(kind: str, d: Any, where: str = "") -> Any:
    """One JSON object body of ``kind`` -> model object (raises InputError)."""
    what = f"{kind}{' ' + where if where else ''}"
    if not isinstance(d, dict):
        if kind == "ruleset" and d is None:
            return None
        raise InputError(f"{what}: expected an object, got {type(d).__name__}")
    fam = _family(d, what)
    if kind == "table":
        flags = d.get("flags", [])
        return Table(fam, str(_need(d, "name", what)), [flags] if isinstance(flags, str)
                     else list(flags), d.get("handle"))
    if kind == "chain":
        c = Chain(fam, str(_need(d, "table", what)), str(_need(d, "name", what)),
                  handle=d.get("handle"))
        if "hook" in d:
            c.hook = d["hook"]
            c.type = d.get("type", "filter")
            prio = d.get("prio", 0)
            if isinstance(prio, str):
                prio = _PRIO_NAMES.get(prio)
                if prio is None:
                    raise InputError(f"{what}: unknown priority {d['prio']!r}")
            if not isinstance(prio, int):
                raise InputError(f"{what}: prio must be an integer")
            c.prio = prio
            c.policy = d.get("policy", "accept")
            c.dev = d.get("dev")
        return c
    if kind == "rule":
        expr = _need(d, "expr", what)
        if not isinstance(expr, list):
            raise InputError(f"{what}: expr must be a list")
        r = Rule(fam, str(_need(d, "table", what)), str(_need(d, "chain", what)), expr,
                 d.get("comment"), d.get("handle"), source=where or None)
        if "index" in d:
            r.index = d["index"]
        if "position" in d:
            r.position = d["position"]
        return r
    if kind in ("set", "map"):
        s = Set(fam, str(_need(d, "table", what)), str(_need(d, "name", what)),
                type=_need(d, "type", what) if "elem" not in d or "type" in d else "",
                handle=d.get("handle"))
        flags = d.get("flags", [])
        s.flags = [flags] if isinstance(flags, str) else list(flags)
        elem = d.get("elem", [])
        s.elem = list(elem) if isinstance(elem, list) else [elem]
        if kind == "map":
            s.map = _need(d, "map", what)
        s.timeout = d.get("timeout")
        s.gc_interval = d.get("gc-interval")
        s.size = d.get("size")
        s.policy = d.get("policy")
        s.comment = d.get("comment")
        s.auto_merge = d.get("auto-merge") is True
        s.typeof, s.map_typeof = d.get("typeof"), d.get("map-typeof")  # (from nft's text)
        stmt = d.get("stmt")
        if stmt is not None:
            s.stmt = stmt if isinstance(stmt, list) else [stmt]
        return s
    if kind in OBJECT_KINDS:
        body = {k: v for k, v in d.items() if k not in ("family", "table", "name", "handle")}
        return Obj(kind, fam, str(_need(d, "table", what)), str(_need(d, "name", what)), body,
                   d.get("handle"))
    if kind == "element":
        return d
    raise InputError(f"unknown object kind {kind!r}")


_FAMILY_SET = frozenset(FAMILIES)
_PRIO_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
               "srcnat": 100, "out": 100, "in": -200}


def parse_commands(doc: Any) -> list[Command]:
    """A libnftables JSON document -> commands, in an order the kernel accepts.

    Listing-form objects become "add".  Runs of additions are ordered by what
    they depend on (tables, chains, sets and objects, elements, rules; rules keep
    their order), which also reads nft 1.0.6 listings whose verdict maps jump to
    chains listed later.  Raises InputError naming the object at fault."""
    if isinstance(doc, dict):
        if "nftables" not in doc:
            raise InputError('JSON document has no "nftables" array')
        doc = doc["nftables"]
    if not isinstance(doc, list):
        raise InputError('"nftables" must be an array')
    cmds: list[Command] = []
    for i, item in enumerate(doc):
        c = item_command(i, item)
        if c is not None:
            cmds.append(c)
    return order_commands(cmds)


def item_command(i: int, item: Any) -> Command | None:
    """Item ``i`` of the "nftables" array -> its command (None for metainfo)."""
    # Fast path: a listing-form rule (80,000 of them must not cost much each).
    if type(item) is dict and len(item) == 1:
        body = item.get("rule")
        if type(body) is dict:
            fam = body.get("family", "ip")
            table, chain, expr = body.get("table"), body.get("chain"), body.get("expr")
            if (fam in _FAMILY_SET and type(table) is str and type(chain) is str
                    and type(expr) is list):
                r = Rule(fam, table, chain, expr, body.get("comment"), body.get("handle"),
                         source=i)  # type: ignore[arg-type]
                if "index" in body or "position" in body:
                    r = parse_object("rule", body, f"#{i}")
                return Command("add", "rule", r, None, True)
    where = f"#{i}"
    if not isinstance(item, dict) or len(item) != 1:
        raise InputError(f"object {where}: expected an object with one key")
    (key, body), = item.items()
    if key == "metainfo":
        return None
    if key not in VERBS:
        return Command("add", key, parse_object(key, body, where), listing=True)
    if not isinstance(body, dict) or len(body) != 1:
        raise InputError(f"{key} {where}: expected an object with one key")
    (kind, obj), = body.items()
    verb = "delete" if key == "destroy" else key
    if kind == "ruleset":
        return Command(verb, "ruleset", None)
    o = parse_object(kind, obj, where)
    items = None
    if kind == "element":
        fam = _family(obj, f"element {where}")
        o = Set(fam, str(_need(obj, "table", where)), str(_need(obj, "name", where)), type="")
        elem = obj.get("elem", [])
        items = elem if isinstance(elem, list) else [elem]
    return Command(verb, kind, o, items)


def order_commands(cmds: list[Command]) -> list[Command]:
    """``cmds`` in an order the kernel accepts: objects before what refers to them."""
    out: list[Command] = []
    run: list[Command] = []
    for c in cmds:
        if c.verb in ("add", "create"):
            run.append(c)
            continue
        out += sorted(run, key=lambda c: KIND_ORDER.get(c.kind, 5))
        run = []
        out.append(c)
    out += sorted(run, key=lambda c: KIND_ORDER.get(c.kind, 5))
    return out


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: building 80,000 rules allocates millions of
    acyclic objects, and collections triggered by that alone cost more than the work.
    The objects made meanwhile are then handed to the oldest generation (through the
    permanent one): left in the youngest, the first allocation after the pause would
    scan them all at once (a tenth of an 80,000-rule load).  Not when a caller froze
    objects of its own (a daemon's, after start-up): those stay frozen."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            own = gc.get_freeze_count() == 0
            if own:
                gc.freeze()
            gc.enable()
            if own:
                gc.unfreeze()


def looks_like_json(text: str) -> bool:
    """True if ``text`` is JSON (its first non-blank character opens an object or array)."""
    s = text.lstrip()
    return s[:1] in ("{", "[")


def load_json(text: str | bytes) -> list[Command]:
    """Parse libnftables JSON text; raises InputError on a syntax error (with position).

    (`bulkjson.load_json_runs` reads big rule files faster, into the same commands.)"""
    with no_gc():
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"JSON syntax error at line {exc.lineno} column {exc.colno}: "
                             f"{exc.msg}") from None
        except RecursionError:
            raise InputError("JSON nested too deeply") from None
        return parse_commands(doc)


def ruleset_from_commands(cmds: list[Command]) -> Ruleset:
    """The objects of "add" commands as a Ruleset (for apply/diff)."""
    rs = Ruleset()
    for c in cmds:
        if c.verb not in ("add", "create"):
            raise InputError(f"{c}: only additions may describe a wanted ruleset")
        if c.kind == "element":
            for s in rs.sets:
                if s.key == c.obj.key:
                    s.elem += c.items or []
                    break
            else:
                raise InputError(f"{c}: elements for a set not in the file")
            continue
        rs.add(c.obj)
    return rs


# ---- output ----------------------------------------------------------------------

def table_json(t: Table) -> dict[str, Any]:
    d: dict[str, Any] = {"family": t.family, "name": t.name, "handle": t.handle}
    if t.flags:
        d["flags"] = t.flags[0] if len(t.flags) == 1 else t.flags
    return {"table": d}


def chain_json(c: Chain) -> dict[str, Any]:
    d: dict[str, Any] = {"family": c.family, "table": c.table, "name": c.name,
                         "handle": c.handle}
    if c.hook is not None:
        d["type"] = c.type
        d["hook"] = c.hook
        d["prio"] = c.prio
        d["policy"] = c.policy
        if c.dev is not None:
            d["dev"] = c.dev
    return {"chain": d}


def set_json(s: Set) -> dict[str, Any]:
    d: dict[str, Any] = {"family": s.family, "name": s.name, "table": s.table,
                         "type": s.type, "handle": s.handle}
    if s.map is not None:
        d["map"] = s.map
    if s.comment is not None:
        d["comment"] = s.comment
    if s.policy:
        d["policy"] = s.policy
    if s.flags:
        d["flags"] = s.flags
    if s.timeout is not None:
        d["timeout"] = s.timeout
    if s.gc_interval is not None:
        d["gc-interval"] = s.gc_interval
    if s.size is not None:
        d["size"] = s.size
    if s.elem:
        d["elem"] = s.elem
    if s.stmt:
        d["stmt"] = s.stmt
    return {s.kind: d}


def obj_json(o: Obj) -> dict[str, Any]:
    d: dict[str, Any] = {"family": o.family, "name": o.name, "table": o.table,
                         "handle": o.handle}
    d.update(o.body)
    return {o.kind: d}


def rule_json(r: Rule) -> dict[str, Any]:
    d: dict[str, Any] = {"family": r.family, "table": r.table, "chain": r.chain,
                         "handle": r.handle}
    if r.comment is not None:
        d["comment"] = r.comment
    d["expr"] = r.expr
    return {"rule": d}


def _items(rs: Ruleset, rules_of: Any, tables: bool = True) -> Iterator[Any]:
    """The listing's items in nft's order: per table the table, objects (counters,
    quotas, ...), sets, chains, then each chain's rules (``rules_of(table, chain)``);
    without ``tables``, no table objects (as `nft -j list chain` prints)."""
    from nfkit import __version__

    yield {"metainfo": {"version": __version__, "release_name": "nfkit",
                        "json_schema_version": 1}}
    for t in rs.tables:
        if tables:
            yield table_json(t)
        for o in rs.objs:
            if (o.family, o.table) == t.key:
                yield obj_json(o)
        for s in rs.sets:
            if (s.family, s.table) == t.key:
                yield set_json(s)
        for c in rs.chains:
            if (c.family, c.table) == t.key:
                yield chain_json(c)
        for c in rs.chains:
            if (c.family, c.table) == t.key:
                yield from rules_of(t, c)


def listing(rs: Ruleset, tables: bool = True) -> list[dict[str, Any]]:
    """The listing form, in nft's order: per table the table, objects, sets, chains, rules."""
    by_chain: dict[tuple[str, str, str], list[Rule]] = {}
    for r in rs.rules:
        by_chain.setdefault(r.chain_key, []).append(r)
    return list(_items(rs, lambda t, c: map(rule_json, by_chain.get(c.key, ())), tables))


def dump_json(rs: Ruleset, indent: int | None = None, tables: bool = True) -> str:
    """The ruleset as libnftables JSON text ({"nftables": [...]})."""
    return json.dumps({"nftables": listing(rs, tables)}, indent=indent)


def dump_json_text(rs: Ruleset, rule_texts: dict[tuple[str, str, str], list[str]],
                   tables: bool = True) -> str:
    """`dump_json` of ``rs`` whose rules are given as JSON texts by chain (in order;
    a text may hold several rules joined by ", ")."""
    items = _items(rs, lambda t, c: rule_texts.get(c.key, ()), tables)
    return '{"nftables": [' + ", ".join(
        x if type(x) is str else json.dumps(x) for x in items) + "]}"
