"""Ruleset change events (NFNLGRP_NFTABLES) printed as `nft monitor` prints them.

This module owns turning one NEW*/DEL*/NEWGEN notification into the lines
`nft monitor` (text) and `nft -j monitor` (JSON) print for it, and the state
that needs: the sets seen so far (an element or a rule is decoded with its
set's types; an anonymous set's elements arrive before the rule that uses it),
and the start of an interval waiting for its end.  Objects are decoded by
messages' decoders and printed by textfmt/jsonfmt, so an event reads as the
same object in a listing.  It opens no socket: `RulesetMonitor.feed` takes a
message, `prime` takes the sets a dump found.

Where nft 1.0.6 prints something wrong, nfkit prints what the kernel said
(docs/rules.md, "rules monitor", lists each difference).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from nfkit.errors import InputError
from nfkit.netlink.codec import attr_payloads, get_be32, get_string
from nfkit.netlink.consts import NFNL_SUBSYS_NFTABLES, NLM_F_APPEND, NLM_F_EXCL
from nfkit.nftables.decompiler import RuleShapes, SetView
from nfkit.nftables.expressions import ELEM_INTERVAL_END, SET_INTERVAL, A
from nfkit.nftables.jsonfmt import chain_json, obj_json, rule_json, set_json, table_json
from nfkit.nftables.messages import (
    FAMILY_NAME,
    decode_chain,
    decode_elements,
    decode_obj,
    decode_rule,
    decode_set,
    decode_table,
    msg_type,
    set_elements_json,
)
from nfkit.nftables.model import Chain, Obj, Rule, Ruleset, Set, Table
from nfkit.nftables.textfmt import rule_text, to_text

# The words `nft monitor` takes: [new|destroy] [OBJECT]
EVENT_WORDS = ("new", "destroy")
OBJECT_WORDS = ("tables", "chains", "sets", "rules", "elements", "ruleset")

_KIND = {"table": "tables", "chain": "chains", "set": "sets", "setelem": "elements",
         "rule": "rules", "obj": "objects", "gen": "gen"}
# message type -> (verb: "new"/"del", kind)
_EVENTS: dict[int, tuple[str, str]] = {
    msg_type(f"{verb}{what}"): (verb, what)
    for verb in ("new", "del") for what in ("table", "chain", "set", "setelem", "rule", "obj")
}
_EVENTS[msg_type("newgen")] = ("new", "gen")


def parse_filter(words: list[str]) -> tuple[str | None, str | None]:
    """`nft monitor`'s filter words -> (event, object); InputError naming a bad word."""
    event = obj = None
    rest = list(words)
    if rest and rest[0] in EVENT_WORDS:
        event = rest.pop(0)
    if rest and rest[0] in OBJECT_WORDS:
        obj = rest.pop(0)
    if rest:
        raise InputError(f"monitor: unknown filter word {rest[0]!r} (expected "
                         f"[{'|'.join(EVENT_WORDS)}] [{'|'.join(OBJECT_WORDS)}])")
    return event, obj


def _wanted(event: str | None, obj: str | None) -> set[tuple[str, str]]:
    """The (verb, kind) pairs printed under a filter, as nft 1.0.6 chooses them: with
    no word at all, everything and the generation lines; `ruleset`, everything but the
    generation lines; `new`/`destroy` alone, tables to rules without named objects."""
    verbs = {"new": ["new"], "destroy": ["del"], None: ["new", "del"]}[event]
    if obj is None and event is None:
        kinds = list(_KIND)
    elif obj in (None, "ruleset"):
        kinds = ["table", "chain", "set", "setelem", "rule"] + (["obj"] if obj else [])
    else:
        kinds = [k for k, word in _KIND.items() if word == obj]
    return {(v, k) for v in verbs for k in kinds}


def _one_block(lines: list[str]) -> str:
    """The body lines of a listed set or object as nft monitor joins them on one line."""
    return " ".join(line.strip().rstrip(";") + ";" for line in lines)


def _listed_lines(rs: Ruleset) -> list[str]:
    """The lines between the opening and the closing line of the one block ``rs``
    lists (a set's, an object's or a chain's)."""
    text = to_text(rs).splitlines()
    return [line.strip() for line in text[2:-2]]


class RulesetMonitor:
    """Lines for ruleset change notifications, as `nft monitor [--json]` prints them."""

    def __init__(self, as_json: bool = False, event: str | None = None,
                 obj: str | None = None, warn: Any = None) -> None:
        """``warn(text)``: where a warning goes (stderr by default)."""
        self.as_json = as_json
        self.warn = warn or _stderr
        self.wanted = _wanted(event, obj)
        # (family, table) -> set name -> what decoding needs of it
        self.sets: dict[tuple[str, str], dict[str, SetView]] = {}
        self.set_keys: dict[tuple[str, str, str], Set] = {}
        self.shapes = RuleShapes()  # rules of one shape decoded from a template
        # an interval set's start element waiting for its end, by set
        self._starts: dict[tuple[str, str, str], tuple[bytes, bytes | None, int, Any]] = {}

    def prime(self, family: int, attrs: dict[int, Any]) -> None:
        """Know a set that exists already (a GETSET dump reply)."""
        self._remember_set(family, attrs)

    def _remember_set(self, family: int, attrs: dict[int, Any]) -> tuple[Set, SetView]:
        s, view = decode_set(family, attrs)
        self.sets.setdefault((s.family, s.table), {})[s.name] = view
        self.set_keys[(s.family, s.table, s.name)] = s
        return s, view

    def feed(self, msg: Any) -> list[str]:
        """The lines printed for one notification (none for one not shown)."""
        if msg.type >> 8 != NFNL_SUBSYS_NFTABLES:
            return []
        ev = _EVENTS.get(msg.type)
        if ev is None:
            return []
        verb, kind = ev
        attrs = attr_payloads(msg.attrs)
        family = msg.family
        shown = (verb, kind) in self.wanted
        if kind == "gen":
            return self._generation(attrs) if shown and not self.as_json else []
        word = ("create" if msg.flags & NLM_F_EXCL else "add") if verb == "new" else "delete"
        if kind == "rule" and verb == "new" and not msg.flags & NLM_F_APPEND:
            word = "insert"
        return getattr(self, f"_{kind}")(word, family, attrs, shown)

    # ---- one method per kind of object; each keeps the state and returns the lines
    def _generation(self, attrs: dict[int, Any]) -> list[str]:
        g = A["gen"]
        if g["id"] not in attrs:
            return []
        line = f"# new generation {get_be32(attrs[g['id']])}"
        if g["proc_pid"] in attrs:
            name = get_string(attrs[g["proc_name"]]) if g["proc_name"] in attrs else ""
            line += f" by process {get_be32(attrs[g['proc_pid']])} ({name})"
        return [line]

    def _out(self, word: str, body: dict[str, Any]) -> list[str]:
        return [json.dumps({word: body})]

    def _table(self, word: str, family: int, attrs: dict[int, Any], shown: bool) -> list[str]:
        t = decode_table(family, attrs)
        if word == "delete":
            for key in [k for k in self.set_keys if k[:2] == t.key]:
                del self.set_keys[key]
            self.sets.pop(t.key, None)
        if not shown:
            return []
        if self.as_json:
            return self._out(word, table_json(t))
        return [f"{word} table {t.family} {t.name}"
                + (" { flags dormant; }" if "dormant" in t.flags else "")]

    def _chain(self, word: str, family: int, attrs: dict[int, Any], shown: bool) -> list[str]:
        if not shown:
            return []
        c = decode_chain(family, attrs)
        where = f"chain {c.family} {c.table} {c.name}"
        if word == "delete":
            if self.as_json:
                return self._out(word, chain_json(Chain(c.family, c.table, c.name,
                                                        handle=c.handle)))
            return [f"{word} {where}"]
        if self.as_json:
            return self._out(word, chain_json(c))
        if not c.is_base:
            return [f"{word} {where}"]
        rs = Ruleset()
        rs.tables.append(_table_of(c.family, c.table))
        rs.chains.append(c)
        return [f"{word} {where} {{ {' '.join(_listed_lines(rs))} }}"]

    def _set(self, word: str, family: int, attrs: dict[int, Any], shown: bool) -> list[str]:
        if word == "delete":
            name = get_string(attrs[A["set"]["name"]])
            table = get_string(attrs[A["set"]["table"]])
            fam = FAMILY_NAME.get(family, str(family))
            self.sets.get((fam, table), {}).pop(name, None)
            self.set_keys.pop((fam, table, name), None)
            self._starts.pop((fam, table, name), None)
            if not shown:
                return []
            h = attrs.get(A["set"]["handle"])
            handle = int.from_bytes(h, "big") if h is not None else None
            if self.as_json:
                # the kernel tells a deleted set's name and handle only; nft 1.0.6 calls
                # its type "invalid"
                return self._out(word, {"set": {"family": fam, "name": name, "table": table,
                                                "type": "invalid", "handle": handle}})
            return [f"{word} set {fam} {table} {name}"]
        s, view = self._remember_set(family, attrs)
        if not shown or view.anonymous:
            return []
        if self.as_json:
            return self._out(word, set_json(s))
        rs = Ruleset()
        rs.tables.append(_table_of(s.family, s.table))
        rs.sets.append(replace(s, elem=[]))
        body = _one_block(_listed_lines(rs))
        return [f"{word} {s.kind} {s.family} {s.table} {s.name} {{ {body} }} "]

    def _setelem(self, word: str, family: int, attrs: dict[int, Any], shown: bool) -> list[str]:
        el = A["set_elem_list"]
        fam = FAMILY_NAME.get(family, str(family))
        table = get_string(attrs[el["table"]])
        name = get_string(attrs[el["set"]])
        view = self.sets.get((fam, table), {}).get(name)
        if view is None:  # a set this monitor never saw: said, on stderr, as nft says it
            self.warn("W: Received event for an unknown set.")
            return []
        if view.anonymous:
            if word != "delete":
                decode_elements(view, attrs)  # a rule about to come uses them
            return []
        if not shown:
            return []
        one = replace(view, elements=[], elem_extra={})
        decode_elements(one, attrs)
        key = (fam, table, name)
        if view.flags & SET_INTERVAL and len(view.key_types) == 1:
            elems = []
            for e in one.elements:
                if e[2] & ELEM_INTERVAL_END and not any(e[0]):
                    return []  # the end of the interval below the first: nothing to print
                start = self._starts.pop(key, None)
                if start is not None:
                    elems += [start, e]
                elif e[1] is None and not e[2] & ELEM_INTERVAL_END:
                    self._starts[key] = e  # printed with its end, in the next event
                else:
                    elems.append(e)
            if not elems:
                return []
            one.elements = elems
        values = set_elements_json(one)
        if not values:
            return []
        if self.as_json:
            return self._out(word, {"element": {"family": fam, "table": table, "name": name,
                                                "elem": {"set": values}}})
        s = self.set_keys[key]
        rs = Ruleset()
        rs.tables.append(_table_of(fam, table))
        rs.sets.append(replace(s, elem=values, size=None, flags=[], timeout=None, stmt=None,
                               comment=None))
        text = [line for line in _listed_lines(rs) if line.startswith("elements = ")]
        return [f"{word} element {fam} {table} {name} {text[0][len('elements = '):]}"]

    def _rule(self, word: str, family: int, attrs: dict[int, Any], shown: bool) -> list[str]:
        if not shown:
            return []
        fam = FAMILY_NAME.get(family, str(family))
        table = get_string(attrs[A["rule"]["table"]])
        r: Rule = decode_rule(family, attrs, self.sets.get((fam, table), {}), self.shapes)
        where = f"{word} rule {r.family} {r.table} {r.chain}"
        if self.as_json:
            return self._out(word, rule_json(r))
        if word == "delete":
            return [f"{where} handle {r.handle}"]
        pos = attrs.get(A["rule"]["position"])
        if pos is not None and int.from_bytes(pos, "big"):
            where += f" handle {int.from_bytes(pos, 'big')}"
        return [f"{where} {rule_text(r)}"]

    def _obj(self, word: str, family: int, attrs: dict[int, Any], shown: bool) -> list[str]:
        if not shown:
            return []
        o = decode_obj(family, attrs) if word != "delete" else _deleted_obj(family, attrs)
        if o is None:
            return []
        if self.as_json:
            return self._out(word, obj_json(o))
        where = f"{word} {o.kind} {o.family} {o.table} {o.name}"
        if word == "delete":
            return [where]
        rs = Ruleset()
        rs.tables.append(_table_of(o.family, o.table))
        rs.objs.append(o)
        lines = _listed_lines(rs)
        if o.kind == "synproxy":  # nft runs its settings together: "mss 1460 wscale 7 sack-perm;"
            body = " ".join(lines) + ";"
        else:
            body = lines[0] if len(lines) == 1 else _one_block(lines)
        return [f"{where} {{ {body} }} "]


def _stderr(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


def _table_of(family: str, name: str) -> Table:
    return Table(family, name)


def _deleted_obj(family: int, attrs: dict[int, Any]) -> Obj | None:
    """A deleted object: the kernel tells its kind, name and handle, not its data."""
    from nfkit.nftables.expressions import OBJ_TYPE_NAMES

    a = A["obj"]
    kind = OBJ_TYPE_NAMES.get(get_be32(attrs[a["type"]]))
    if kind is None:
        return None
    handle = int.from_bytes(attrs[a["handle"]], "big") if a["handle"] in attrs else None
    return Obj(kind, FAMILY_NAME.get(family, str(family)), get_string(attrs[a["table"]]),
               get_string(attrs[a["name"]]), {}, handle)


def set_dump_request() -> Any:
    """The GETSET dump (every family) that primes a monitor with the sets there are."""
    from nfkit.netlink.codec import MessageWriter
    from nfkit.netlink.consts import NLM_F_REQUEST

    w = MessageWriter()
    w.begin(msg_type("getset"), NLM_F_REQUEST, family=0)
    w.end()
    return w


LOST_LINE = "# ERROR: We lost some netlink events!"


DEFAULT_BUFFER = 16 << 20  # as nft monitor's


def watch(groups: tuple[int, ...], feed: Any, resync: Any = None,
          rcvbuf: int = DEFAULT_BUFFER) -> Any:
    """Lines for the notifications of netlink ``groups``, as they come, forever.

    ``feed(message)`` gives the lines of one notification; ``resync(sock)`` (a socket
    of its own, for dumps) runs once subscribed, and again after the kernel dropped
    notifications (ENOBUFS), which is reported as `LOST_LINE` with a count, never
    an end; ``rcvbuf`` is the socket's receive buffer in bytes.  Raises CapabilityError
    when the socket cannot be opened or joined."""
    import struct

    from nfkit.errors import EventsLost, NfkitError
    from nfkit.netlink.socket import NetlinkSocket

    sock = NetlinkSocket(groups=groups, rcvbuf=rcvbuf)
    lost = 0
    try:
        if resync is not None:
            with NetlinkSocket() as dumper:
                resync(dumper)
        while True:
            try:
                for msg in sock.events():
                    try:
                        lines = feed(msg)
                    except (NfkitError, KeyError, ValueError, IndexError, struct.error) as exc:
                        # one event nfkit cannot read: said, and the watch goes on
                        lines = [f"# ERROR: cannot decode event type 0x{msg.type:04x}: "
                                 f"{type(exc).__name__}: {exc}"]
                    yield from lines
            except EventsLost:
                lost += 1
                yield f"{LOST_LINE} ({lost} {'time' if lost == 1 else 'times'} so far)"
                if resync is not None:
                    with NetlinkSocket() as dumper:
                        resync(dumper)
    finally:
        sock.close()


def prime_sets(monitor: RulesetMonitor, sock: Any) -> None:
    """Tell ``monitor`` the sets the kernel holds now (every family)."""
    for m in sock.dump(set_dump_request(), restart=True):
        monitor.prime(m.family, attr_payloads(m.attrs))
