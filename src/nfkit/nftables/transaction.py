"""Transactions against the kernel: atomic commit, check-only, listing, diff/apply.

This module owns talking to the kernel about rulesets: every change set goes
out as one Batch in one sendmsg (all or nothing), errors come back mapped to
the object that failed, and listings are read with GET* dumps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from nfkit.errors import (
    DumpInterrupted,
    InputError,
    TransactionError,
)
from nfkit.netlink.codec import Batch, MessageWriter, attr_payloads, get_string, nest_bytes, parse_messages
from nfkit.netlink.codec import be16_attr as be16
from nfkit.netlink.codec import string_attr as string
from nfkit.netlink.consts import NLM_F_REQUEST
from nfkit.nftables.bulkjson import RuleRun
from nfkit.nftables.dumpreq import rules_request
from nfkit.nftables.expressions import VERDICT_DATA_TYPE, A, expr, verdict_of_data
from nfkit.nftables.exprs import SetView
from nfkit.nftables.jsonfmt import Command
from nfkit.nftables.model import Chain, Rule, Ruleset, Set, Table
from nfkit.nftables.wire import (
    FAMILY_NUM,
    Encoder,
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


def _socket() -> Any:
    from nfkit.netlink.socket import NetlinkSocket

    return NetlinkSocket()


def _mark_dynamic(cmds: Sequence[Command]) -> None:
    """Sets updated from the packet path need the dynamic flag; nft 1.0.6 listings drop it."""
    if not any(c.kind in ("set", "map") for c in cmds):
        return
    updated: set[tuple[str, str, str]] = set()
    for c in cmds:
        if c.kind == "rule" and c.verb in ("add", "create", "insert", "replace"):
            r = c.obj
            for st in r.expr:
                if "set" not in st and "map" not in st:
                    continue
                for k in ("set", "map"):
                    b = st.get(k)
                    if type(b) is dict and "op" in b:
                        name = b.get(k) or b.get("set") or b.get("map")
                        if isinstance(name, str):
                            updated.add((r.family, r.table, name.lstrip("@")))
    if not updated:
        return
    for c in cmds:
        if c.kind in ("set", "map") and c.verb in ("add", "create") and c.obj.key in updated:
            if "dynamic" not in c.obj.flags:
                c.obj.flags = [*c.obj.flags, "dynamic"]


def encode_commands(cmds: Sequence[Command], enc: Encoder) -> None:
    """Write each command into the encoder's batch (raises InputError naming the object)."""
    _mark_dynamic(cmds)
    for c in cmds:
        o = c.obj
        if c.kind == "ruleset":
            if c.verb not in ("flush", "delete"):
                raise InputError(f"{c.verb} ruleset is not a command")
            enc.flush_ruleset()
            continue
        if c.kind == "table":
            if c.verb in ("add", "create"):
                enc.table(o, c.verb == "create")
            elif c.verb == "delete":
                enc.del_table(o.family, o.name)
            elif c.verb == "flush":
                enc._begin("delrule", o.family, 0, f"flush {o}")
                enc.batch.raw(string(A["rule"]["table"], o.name))
                enc.batch.end()
            else:
                raise InputError(f"{c.verb} table is not a command")
        elif c.kind == "chain":
            if c.verb in ("add", "create"):
                enc.chain(o, c.verb == "create")
            elif c.verb == "delete":
                enc.del_chain(o)
            elif c.verb == "flush":
                enc.del_chain(o, flush_only=True)
            else:
                raise InputError(f"{c.verb} chain is not a command")
        elif c.kind == "rule":
            if type(o) is RuleRun:
                enc.rule_run(o)
            elif c.verb in ("add", "create"):
                if o.handle is not None and o.position is None and not c.listing:
                    o.position = o.handle
                if o.position is not None or o.comment or not enc.add_rule_templated(o):
                    enc.rule(o, "add")
            elif c.verb in ("insert", "replace"):
                if c.verb == "insert" and o.handle is not None and o.position is None:
                    o.position = o.handle
                enc.rule(o, c.verb)
            elif c.verb == "delete":
                enc.del_rule(o)
            else:
                raise InputError(f"{c.verb} rule is not a command")
        elif c.kind in ("set", "map"):
            if c.verb in ("add", "create"):
                enc.set(o, c.verb == "create")
            elif c.verb == "delete":
                enc.del_set(o)
            elif c.verb == "flush":
                enc.flush_set(o)
            else:
                raise InputError(f"{c.verb} {c.kind} is not a command")
        elif c.kind == "element":
            known = getattr(enc, "known_sets", {}).get(o.key)
            if known is None:
                raise InputError(f"element for {o}: set not found (list it in the file or "
                                 "create it first)")
            enc.set_elements(known, c.items or [], delete=c.verb == "delete")
        elif c.kind in ("counter", "quota", "limit", "ct helper"):
            if c.verb in ("add", "create"):
                enc.obj(o, c.verb == "create")
            elif c.verb == "delete":
                enc.del_obj(o)
            else:
                raise InputError(f"{c.verb} {c.kind} is not a command")
        else:
            raise InputError(f"unknown object kind {c.kind!r}")


def _known_sets(cmds: Sequence[Command], sock: Any | None) -> dict[tuple[str, str, str], Set]:
    known = {c.obj.key: c.obj for c in cmds if c.kind in ("set", "map") and c.verb in
             ("add", "create")}
    missing = [c.obj.key for c in cmds if c.kind == "element" and c.obj.key not in known]
    if missing and sock is not None:
        rs = _dump(sock, rules=False, elements=False)
        for s in rs.sets:
            known.setdefault(s.key, s)
    return known


def _probe_queue(sock: Any, cmds: Sequence[Command]) -> None:
    """Pick the nft queue expression or the xt NFQUEUE target (kernel without nft_queue):
    the kernel is asked when the first queue statement is compiled (no walk of all rules)."""
    from nfkit.nftables import exprs

    if exprs._QUEUE_MODE:
        return
    exprs.QUEUE_PROBE[:] = [lambda: "nft" if _kernel_has_expr(sock, "queue") else "xt"]


def _kernel_has_expr(sock: Any, name: str) -> bool:
    """True if the kernel knows expression ``name`` (tried in a batch that is not committed)."""
    b = Batch()
    enc = Encoder(b)
    t = Table("inet", "__nfkit_probe")
    enc.table(t)
    enc.chain(Chain("inet", t.name, "c"))
    a = A["rule"]
    enc._begin("newrule", "inet", 0x400 | 0x800, "probe")
    q = A["queue"]
    b.raw(string(a["table"], t.name) + string(a["chain"], "c") + nest_bytes(
        a["expressions"], expr(name, be16(q["num"], 0))))
    b.end()
    try:
        _send(sock, b, enc, check=True)
    except TransactionError as exc:
        return not any(e.errno == 2 for e in exc.errors)
    return True


def _send(sock: Any, batch: Batch, enc: Encoder, check: bool = False) -> None:
    """Send the batch in one sendmsg (the core socket fences it) and collect every refusal."""
    sock.ensure_sndbuf(len(batch.buffer) + 65536)
    sock.send_batch(batch, what=enc.what, check=check)


def run_commands(cmds: Sequence[Command], check: bool = False, sock: Any | None = None) -> int:
    """Commit ``cmds`` as one atomic transaction (or only validate with ``check``).

    Returns the number of messages sent.  Raises InputError before anything is
    sent for input nfkit cannot translate, and TransactionError (nothing
    committed) naming each object the kernel refused, with its extended ACK."""
    from nfkit.nftables.jsonfmt import no_gc

    own = sock is None
    sock = sock or _socket()
    try:
        with no_gc():
            return _run(cmds, check, sock)
    finally:
        if own:
            sock.close()


def _run(cmds: Sequence[Command], check: bool, sock: Any) -> int:
    batch = Batch()
    enc = Encoder(batch)
    enc.known_sets = _known_sets(cmds, sock)  # type: ignore[attr-defined]
    _probe_queue(sock, cmds)
    try:
        encode_commands(cmds, enc)
    finally:
        from nfkit.nftables import exprs

        exprs.QUEUE_PROBE.clear()
    _send(sock, batch, enc, check)
    return len(enc.what)


def commit(obj: Ruleset | Sequence[Command], sock: Any | None = None) -> int:
    """Create everything in ``obj`` in one atomic transaction; see run_commands."""
    return run_commands(_as_commands(obj), sock=sock)


def check(obj: Ruleset | Sequence[Command], sock: Any | None = None) -> int:
    """Let the kernel validate ``obj`` as one transaction; nothing is committed."""
    return run_commands(_as_commands(obj), check=True, sock=sock)


def _as_commands(obj: Ruleset | Sequence[Command]) -> list[Command]:
    if isinstance(obj, Ruleset):
        cmds = [Command("add", "table", t) for t in obj.tables]
        cmds += [Command("add", "chain", c) for c in obj.chains]
        cmds += [Command("add", s.kind, s) for s in obj.sets]
        cmds += [Command("add", o.kind, o) for o in obj.objs]
        cmds += [Command("add", "rule", r) for r in obj.rules]
        return cmds
    return list(obj)


def flush(family: str | None = None, table: str | None = None, sock: Any | None = None) -> None:
    """Flush the whole ruleset (delete every table), or the rules of one table."""
    if table is None:
        cmds = [Command("flush", "ruleset", None)]
    else:
        fams = [family] if family else list(FAMILY_NUM)
        rs = list_ruleset(sock=sock, rules=False)
        cmds = [Command("flush", "table", t) for t in rs.tables
                if t.name == table and t.family in fams]
        if not cmds:
            raise InputError(f"table {family or ''} {table}: no such table".replace("  ", " "))
    run_commands(cmds, sock=sock)


# ---- listing ---------------------------------------------------------------------

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


def _dump(sock: Any, rules: bool = True, elements: bool = True, table: str | None = None,
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
        if not getattr(view, "anonymous", False):
            rs.sets.append(s)
    for f, a in _dump_msgs(sock, "getobj", family=fam):
        o = decode_obj(f, a)
        if o is not None and (o.family, o.table) in keys:
            rs.objs.append(o)
    if elements:
        for (sfam, stable), byname in views.items():
            for view in byname.values():
                if not rules and getattr(view, "anonymous", False):
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
        rs.chains = [c for c in rs.chains if c.name == chain]
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


def _fam_name(f: int) -> str:
    from nfkit.nftables.wire import FAMILY_NAME

    return FAMILY_NAME.get(f, str(f))


def list_ruleset(family: str | None = None, table: str | None = None, chain: str | None = None,
                 sock: Any | None = None, rules: bool = True, must_exist: bool = False) -> Ruleset:
    """Read the kernel's ruleset (optionally one family/table/chain) into model objects.

    With ``must_exist``, a named table or chain that is not there raises InputError."""
    from nfkit.nftables.jsonfmt import no_gc

    own = sock is None
    sock = sock or _socket()
    try:
        with no_gc():
            return _dump(sock, rules=rules, table=table, family=family, chain=chain,
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
    sock = sock or _socket()
    try:
        with no_gc():
            texts = RuleTexts({})
            rs = _dump(sock, table=table, family=family, chain=chain, texts=texts,
                       must_exist=must_exist)
            return dump_json_text(rs, texts.texts)
    finally:
        if own:
            sock.close()


# ---- single changes --------------------------------------------------------------

def add_rule(rule: Rule, verb: str = "add", sock: Any | None = None) -> None:
    """Add (append, or after ``rule.position``), insert or replace one rule atomically."""
    run_commands([Command(verb, "rule", rule)], sock=sock)


def delete_rule(rule: Rule, sock: Any | None = None) -> None:
    """Delete the rule with ``rule.handle``."""
    run_commands([Command("delete", "rule", rule)], sock=sock)


def normalize(expr: list[dict[str, Any]], family: str) -> list[dict[str, Any]]:
    """A rule's statements as the kernel would give them back (for semantic equality).

    Compiles to expressions and decodes them again; anonymous sets are rendered
    from the compiled elements."""
    from nfkit.nftables.expressions import parse_exprs
    from nfkit.nftables.exprs import RuleCompiler, RuleDecoder
    from nfkit.nftables.types import concat_type_id

    rc = RuleCompiler(family, "t")
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


def _strip_counters(expr: list[dict[str, Any]]) -> list[Any]:
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
    from nfkit.nftables.exprs import RuleCompiler
    from nfkit.nftables.jsonfmt import no_gc
    from nfkit.nftables.wire import RuleShapes, _cmp_values, decode_rule

    want = _strip_counters(normalize(rule.expr, rule.family))
    exprs, anon = RuleCompiler(rule.family, rule.table).compile(rule.expr)
    split = _cmp_values(b"".join(exprs)) if not anon else None
    needles = [v for v in split[1] if len(v) >= 2] if split else []
    own = sock is None
    sock = sock or _socket()
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
                            if r.chain == rule.chain and _strip_counters(r.expr) == want:
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


# ---- diff / apply ----------------------------------------------------------------

def diff(wanted: Ruleset, sock: Any | None = None) -> list[Command]:
    """The smallest change set that makes the tables named in ``wanted`` equal to it.

    Objects that are equal are kept; rules are compared semantically, kept
    where equal in order, others added (after the previous kept rule) or deleted
    by handle; chains and sets that differ are replaced."""
    have = list_ruleset(sock=sock)
    tables = {t.key for t in wanted.tables} | wanted.table_keys()
    cmds: list[Command] = []
    have_tables = {t.key for t in have.tables}
    for t in wanted.tables:
        if t.key not in have_tables:
            cmds.append(Command("add", "table", t))
    have_chains = {c.key: c for c in have.chains if (c.family, c.table) in tables}
    want_chains = {c.key: c for c in wanted.chains}
    for k, c in want_chains.items():
        h = have_chains.get(k)
        if h is None or (h.type, h.hook, h.prio, h.policy) != (c.type, c.hook, c.prio, c.policy):
            cmds.append(Command("add", "chain", c))
    have_sets = {s.key: s for s in have.sets if (s.family, s.table) in tables}
    for s in wanted.sets:
        hs = have_sets.get(s.key)
        if hs is None:
            cmds.append(Command("add", s.kind, s))
        elif _set_sig(hs) != _set_sig(s):
            want_elems = _norm_elems(s)
            if _set_sig(hs, False) == _set_sig(s, False):
                cmds.append(Command("flush", s.kind, hs))
                cmds.append(Command("add", "element", s, want_elems))
            else:
                cmds.append(Command("delete", s.kind, hs))
                cmds.append(Command("add", s.kind, s))
    have_objs = {o.key: o for o in have.objs if (o.family, o.table) in tables}
    for o in wanted.objs:
        if o.key not in have_objs:
            cmds.append(Command("add", o.kind, o))
    # rules, per chain
    by_chain: dict[tuple[str, str, str], list[Rule]] = {}
    for r in have.rules:
        by_chain.setdefault(r.chain_key, []).append(r)
    want_by_chain: dict[tuple[str, str, str], list[Rule]] = {}
    for r in wanted.rules:
        want_by_chain.setdefault(r.chain_key, []).append(r)
    for key in want_chains:
        cmds += _diff_rules(by_chain.get(key, []), want_by_chain.get(key, []))
    # deletions: rules of chains not wanted, then chains, sets, objects
    for key in have_chains:
        if key not in want_chains:
            for r in by_chain.get(key, []):
                cmds.append(Command("delete", "rule", r))
    for key, c in have_chains.items():
        if key not in want_chains:
            cmds.append(Command("delete", "chain", c))
    want_set_keys = {s.key for s in wanted.sets}
    for key, s in have_sets.items():
        if key not in want_set_keys:
            cmds.append(Command("delete", s.kind, s))
    want_obj_keys = {o.key for o in wanted.objs}
    for okey, o in have_objs.items():
        if okey not in want_obj_keys:
            cmds.append(Command("delete", o.kind, o))
    return cmds


def _norm_elems(s: Set) -> list[Any]:
    return list(s.elem)


def _set_sig(s: Set, with_elems: bool = True) -> tuple[Any, ...]:
    t = s.type if isinstance(s.type, list) else [p.strip() for p in s.type.split(".")]
    elems = sorted(map(repr, s.elem)) if with_elems else None
    return (tuple(t), repr(s.map), tuple(sorted(s.flags)), s.timeout, elems)


def _diff_rules(have: list[Rule], want: list[Rule]) -> list[Command]:
    fam = want[0].family if want else "ip"
    want_norm = [repr(_strip_counters(normalize(r.expr, fam))) + repr(r.comment) for r in want]
    have_norm = [repr(_strip_counters(r.expr)) + repr(r.comment) for r in have]
    # longest common subsequence keeps the most rules in place
    n, m = len(have_norm), len(want_norm)
    if n * m > 4_000_000:
        keep_pairs = _greedy_pairs(have_norm, want_norm)
    else:
        lcs = [[0] * (m + 1) for _ in range(n + 1)]
        for i in range(n - 1, -1, -1):
            for j in range(m - 1, -1, -1):
                lcs[i][j] = lcs[i + 1][j + 1] + 1 if have_norm[i] == want_norm[j] else \
                    max(lcs[i + 1][j], lcs[i][j + 1])
        keep_pairs = []
        i = j = 0
        while i < n and j < m:
            if have_norm[i] == want_norm[j]:
                keep_pairs.append((i, j))
                i += 1
                j += 1
            elif lcs[i + 1][j] >= lcs[i][j + 1]:
                i += 1
            else:
                j += 1
    kept_have = {i for i, _ in keep_pairs}
    kept_want = dict((j, i) for i, j in keep_pairs)
    cmds = [Command("delete", "rule", have[i]) for i in range(n) if i not in kept_have]
    # New rules go before the next kept rule (in order), or at the end of the chain.
    next_kept: list[int | None] = [None] * (m + 1)
    for j in range(m - 1, -1, -1):
        next_kept[j] = have[kept_want[j]].handle if j in kept_want else next_kept[j + 1]
    for j, r in enumerate(want):
        if j in kept_want:
            continue
        nr = Rule(r.family, r.table, r.chain, r.expr, r.comment)
        if next_kept[j] is not None:
            nr.position = next_kept[j]
            cmds.append(Command("insert", "rule", nr))
        else:
            cmds.append(Command("add", "rule", nr))
    return cmds


def _greedy_pairs(have: list[str], want: list[str]) -> list[tuple[int, int]]:
    pairs = []
    i = 0
    for j, w in enumerate(want):
        k = i
        while k < len(have) and have[k] != w:
            k += 1
        if k < len(have):
            pairs.append((k, j))
            i = k + 1
    return pairs


def apply(wanted: Ruleset, dry_run: bool = False, sock: Any | None = None) -> list[Command]:
    """Make the kernel's tables named in ``wanted`` equal to it (smallest change set).

    Returns the change set; with ``dry_run`` nothing is sent."""
    own = sock is None
    sock = sock or _socket()
    try:
        cmds = diff(wanted, sock=sock)
        if cmds and not dry_run:
            run_commands(cmds, sock=sock)
        return cmds
    finally:
        if own:
            sock.close()

