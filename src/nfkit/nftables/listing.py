"""Reading the kernel's ruleset: GET* dumps into model objects or JSON text, and
semantic rule lookup (`exists`).

This module owns the dump requests and the decoding of their replies (through
messages' decoders, listtext's text templates for big chains); it sends no
change to the kernel.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nfkit.errors import (
    DumpInterrupted,
    InputError,
)
from nfkit.netlink.codec import MessageWriter, attr_payloads, get_string, nest_bytes, parse_messages
from nfkit.netlink.codec import string_attr as string
from nfkit.netlink.consts import NLM_F_REQUEST
from nfkit.nftables.decompiler import SetView
from nfkit.nftables.dumpreq import rules_request
from nfkit.nftables.expressions import VERDICT_DATA_TYPE, A, verdict_of_data
from nfkit.nftables.messages import (
    FAMILY_NAME,
    FAMILY_NUM,
    RuleShapes,
    decode_chain,
    decode_elements,
    decode_obj,
    decode_rule,
    decode_set,
    decode_table,
    msg_type,
    set_elements_json,
)
from nfkit.nftables.model import Rule, Ruleset


def open_socket() -> Any:
    from nfkit.netlink.socket import NetlinkSocket

    return NetlinkSocket()


def _dump_msgs(sock: Any, name: str, attrs: bytes = b"", family: int = 0
               ) -> Iterable[tuple[int, dict[int, bytes]]]:
    w = MessageWriter()
    w.begin(msg_type(name), NLM_F_REQUEST, family=family)
    if attrs:
        w.raw(attrs)
    w.end()
    return _replies(sock, w)


def _replies(sock: Any, request: MessageWriter) -> Iterable[tuple[int, dict[int, bytes]]]:
    """(family, top-level attributes) of each message a dump request gets back."""
    for m in sock.dump(request, restart=True):
        yield m.family, attr_payloads(m.attrs)


def dump(sock: Any, rules: bool = True, elements: bool = True, table: str | None = None,
          family: str | None = None, chain: str | None = None,
          texts: Any | None = None, must_exist: bool = False) -> Ruleset:
    """The ruleset in model objects; with ``texts`` (a listtext.RuleTexts) the rules
    go there as JSON text instead of into the Ruleset.  With ``must_exist``, a
    ``table`` (or ``chain``) that is not there is an InputError."""
    fam = FAMILY_NUM[family] if family else 0
    rs = Ruleset()
    for f, a in _dump_msgs(sock, "gettable", family=fam):
        t = decode_table(f, a)
        if table is None or t.name == table:
            rs.tables.append(t)
    if must_exist and table is not None and not rs.tables:
        raise InputError(f"table {family + ' ' if family else ''}{table}: no such table")
    keys = {t.key for t in rs.tables}
    for f, a in _dump_msgs(sock, "getchain", family=fam):
        c = decode_chain(f, a)
        if (c.family, c.table) in keys:
            rs.chains.append(c)
    if must_exist and chain is not None and not any(c.name == chain for c in rs.chains):
        raise InputError(f"chain {family + ' ' if family else ''}{table} {chain}: no such chain")
    views: dict[tuple[str, str], dict[str, SetView]] = {}
    for f, a in _dump_msgs(sock, "getset", family=fam):
        s, view = decode_set(f, a)
        if (s.family, s.table) not in keys:
            continue
        views.setdefault((s.family, s.table), {})[s.name] = view
        if not view.anonymous:
            rs.sets.append(s)
    for f, a in _dump_msgs(sock, "getobj", family=fam):
        o = decode_obj(f, a)
        if o is not None and (o.family, o.table) in keys:
            rs.objs.append(o)
    if elements:
        for (sfam, stable), byname in views.items():
            for view in byname.values():
                if not rules and view.anonymous:
                    continue
                el = A["set_elem_list"]
                for _f, a in _dump_msgs(sock, "getsetelem", string(el["table"], stable)
                                        + string(el["set"], view.name), FAMILY_NUM[sfam]):
                    decode_elements(view, a)
        for s in rs.sets:
            s.elem = set_elements_json(views[(s.family, s.table)][s.name])
    if rules and texts is not None:
        texts.views = views
        request = rules_request(family, table, chain)
        for _attempt in range(10):
            try:
                for dgram in sock.dump_datagrams(request, what="rules"):
                    texts.feed(dgram)
                break
            except DumpInterrupted:
                texts.restart()
        else:
            raise DumpInterrupted("rules: the ruleset kept changing during the dump")
    elif rules:
        shapes = RuleShapes()
        for f, a in _replies(sock, rules_request(family, table, chain)):
            r = decode_rule(f, a, views.get((_fam_name(f), get_string(a[A["rule"]["table"]])), {}),
                            shapes)
            if (r.family, r.table) in keys and (chain is None or r.chain == chain):
                rs.rules.append(r)
    if chain is not None:
        # as nft list chain: the chain in its table, no sets or objects
        rs.chains = [c for c in rs.chains if c.name == chain]
        rs.sets, rs.objs = [], []
    return rs


def _set_views(sock: Any, family: str, table: str) -> dict[str, SetView]:
    """The sets of one table with their elements, as the rule decoder needs them."""
    views: dict[str, SetView] = {}
    fam = FAMILY_NUM[family]
    for f, a in _dump_msgs(sock, "getset", string(A["set"]["table"], table), fam):
        s, view = decode_set(f, a)
        if s.table == table:
            views[s.name] = view
    el = A["set_elem_list"]
    for view in views.values():
        for _f, a in _dump_msgs(sock, "getsetelem", string(el["table"], table)
                                + string(el["set"], view.name), fam):
            decode_elements(view, a)
    return views


def set_views(sock: Any, family: str, table: str) -> dict[str, SetView]:
    """The sets of one table with their elements, as the rule decoder needs them."""
    return _set_views(sock, family, table)


def chain_rules(sock: Any, family: str, table: str, chain: str
                ) -> Iterable[tuple[Rule, dict[int, Any]]]:
    """Every rule of one chain, decoded, with its message's attributes; InputError
    when the chain is not there."""
    from nfkit.nftables.decompiler import RuleShapes

    if not any(get_string(a[A["chain"]["name"]]) == chain
               for _f, a in _dump_msgs(sock, "getchain", string(A["chain"]["table"], table),
                                       FAMILY_NUM[family])):
        raise InputError(f"chain {family} {table} {chain}: no such chain")
    views = _set_views(sock, family, table)
    shapes = RuleShapes()
    for m in sock.dump(rules_request(family, table, chain), restart=True,
                       what=f"rules of chain {chain}"):
        attrs = attr_payloads(m.attrs)
        r = decode_rule(m.family, attrs, views, shapes)
        if r.chain == chain:
            yield r, attrs


def _fam_name(f: int) -> str:
    return FAMILY_NAME.get(f, str(f))


def list_ruleset(family: str | None = None, table: str | None = None, chain: str | None = None,
                 sock: Any | None = None, rules: bool = True, must_exist: bool = False) -> Ruleset:
    """Read the kernel's ruleset (optionally one family/table/chain) into model objects.

    With ``must_exist``, a named table or chain that is not there raises InputError."""
    from nfkit.nftables.jsonfmt import no_gc

    own = sock is None
    sock = sock or open_socket()
    try:
        with no_gc():
            return dump(sock, rules=rules, table=table, family=family, chain=chain,
                         must_exist=must_exist)
    finally:
        if own:
            sock.close()


def list_json_text(family: str | None = None, table: str | None = None,
                   chain: str | None = None, sock: Any | None = None,
                   must_exist: bool = False) -> str:
    """The ruleset (optionally one family/table/chain) as libnftables JSON text.

    The same text as ``dump_json(list_ruleset(...))``, without a model object
    per rule: rules of a recurring shape are printed from text templates
    (see nfkit.nftables.listtext), whole dump rounds at a time."""
    from nfkit.nftables.jsonfmt import dump_json_text, no_gc
    from nfkit.nftables.listtext import RuleTexts

    own = sock is None
    sock = sock or open_socket()
    try:
        with no_gc():
            texts = RuleTexts({})
            rs = dump(sock, table=table, family=family, chain=chain, texts=texts,
                       must_exist=must_exist)
            # a chain alone: as nft -j list chain, no table object
            return dump_json_text(rs, texts.texts, tables=chain is None)
    finally:
        if own:
            sock.close()


def list_text(family: str | None = None, table: str | None = None,
              chain: str | None = None, sock: Any | None = None,
              must_exist: bool = False) -> str:
    """The ruleset (optionally one family/table/chain) as nft text: the same text as
    ``textfmt.to_text(list_ruleset(...))``, rules of a recurring shape printed from
    text templates as `list_json_text` prints JSON."""
    from nfkit.nftables.jsonfmt import no_gc
    from nfkit.nftables.listtext import RuleTexts
    from nfkit.nftables.textfmt import to_text

    own = sock is None
    sock = sock or open_socket()
    try:
        with no_gc():
            texts = RuleTexts({}, style="nft")
            rs = dump(sock, table=table, family=family, chain=chain, texts=texts,
                      must_exist=must_exist)
            return to_text(rs, texts.texts)
    finally:
        if own:
            sock.close()


def normalize(expr: list[dict[str, Any]], family: str,
              named_sets: dict[str, Any] | None = None, table: str = "t") -> list[dict[str, Any]]:
    """A rule's statements as the kernel would give them back (for semantic equality).

    Compiles to expressions and decodes them again; anonymous sets are rendered
    from the compiled elements."""
    from nfkit.nftables.compiler import RuleCompiler
    from nfkit.nftables.decompiler import RuleDecoder
    from nfkit.nftables.expressions import parse_exprs
    from nfkit.nftables.types import concat_type_id

    rc = RuleCompiler(family, table)
    rc.named_sets = dict(named_sets or {})  # a map lookup's data type comes from its map
    exprs, sets = rc.compile(expr)
    views = {}
    names = {}
    for s in sets:
        names[s.set_id] = s.name
        views[f"id:{s.set_id}"] = SetView(s.name, s.flags, s.key_types, s.key_len, s.data_type,
                                s.data_len, [(k, ke, fl, _data_of(d, s.data_type))
                                             for k, ke, fl, d in s.elements])
    del concat_type_id
    return RuleDecoder(family, views).decode(parse_exprs(b"".join(exprs)))


def _data_of(d: bytes | None, data_type: int) -> Any:
    if d is None:
        return None
    return verdict_of_data(nest_bytes(A["data"]["verdict"], d)) if data_type == VERDICT_DATA_TYPE \
        else d.hex()


def strip_counters(expr: list[dict[str, Any]]) -> list[Any]:
    return [{"counter": None} if "counter" in s and isinstance(s["counter"], dict) else s
            for s in expr]


def exists(rule: Rule, sock: Any | None = None, rounds: Any | None = None,
           drain: bool = True) -> bool:
    """True if a rule semantically equal to ``rule`` is in its chain (counters ignored).

    The wanted rule is compiled once; a kernel rule is decoded and compared
    only if every value the wanted rule compares occurs in its expression
    bytes, so most rules of a big chain are skipped without decoding.
    ``rounds`` may be the chain's rule dump already started on another socket
    (a netlink.ahead.DumpAhead of `dumpreq.rules_request`); with ``drain`` False it is
    left unread after a hit (for a process about to exit).  Raises InputError
    when the chain does not exist."""
    from nfkit.nftables.compiler import RuleCompiler
    from nfkit.nftables.decompiler import RuleShapes, cmp_values
    from nfkit.nftables.jsonfmt import no_gc
    from nfkit.nftables.messages import decode_rule

    want = strip_counters(normalize(rule.expr, rule.family, table=rule.table))
    exprs, anon = RuleCompiler(rule.family, rule.table).compile(rule.expr)
    split = cmp_values(b"".join(exprs)) if not anon else None
    needles = [v for v in split[1] if len(v) >= 2] if split else []
    own = sock is None
    sock = sock or open_socket()
    try:
        with no_gc():
            found_chain = False
            for _f, a in _dump_msgs(sock, "getchain", string(A["chain"]["table"], rule.table),
                                    FAMILY_NUM[rule.family]):
                if get_string(a[A["chain"]["name"]]) == rule.chain:
                    found_chain = True
            if not found_chain:
                raise InputError(f"chain {rule.family} {rule.table} {rule.chain}: no such chain")
            views = _set_views(sock, rule.family, rule.table)
            shapes = RuleShapes()
            w = rules_request(rule.family, rule.table, rule.chain)
            for _attempt in range(10):
                hit = False
                try:
                    # Whole dump rounds (about 32 KiB each) first: only a round holding
                    # every compared value of the wanted rule is split into messages,
                    # and only its rules holding them all are decoded.
                    what = f"rules of chain {rule.chain}"
                    started, rounds = rounds, None  # a started dump serves one attempt
                    for dgram in started if started is not None else \
                            sock.dump_datagrams(w, what=what):
                        if hit:
                            continue  # drain the dump
                        if needles:
                            data = bytes(dgram)
                            if not all(n in data for n in needles):
                                continue
                        for m in parse_messages(dgram):
                            if needles:
                                payload = bytes(m.payload)
                                if not all(n in payload for n in needles):
                                    continue
                            r = decode_rule(m.family, attr_payloads(m.attrs), views, shapes)
                            if r.chain == rule.chain and strip_counters(r.expr) == want:
                                hit = True
                                if not drain:
                                    return True
                    return hit
                except DumpInterrupted:
                    continue
            raise DumpInterrupted(f"chain {rule.family} {rule.table} {rule.chain}: "
                                  "the ruleset kept changing during the dump")
    finally:
        if own:
            sock.close()
