"""Model objects <-> nf_tables netlink messages.

This module owns the message layer: which NEWTABLE/NEWCHAIN/NEWSET/NEWSETELEM/
NEWRULE/DEL* message each model change becomes (written into a core `Batch`),
and how GET* dump replies become model objects again.  Expressions are
compiled by nfkit.nftables.compiler and decompiled by nfkit.nftables.decompiler;
this module only wraps them.
"""

from __future__ import annotations

import socket
import struct
import sys
from array import array
from collections.abc import Callable
from dataclasses import replace
from itertools import accumulate, chain, repeat
from socket import inet_pton
from typing import Any

from nfkit.errors import InputError
from nfkit.netlink.codec import (
    MessageWriter,
    Template,
    attr_bytes,
    attr_payloads,
    get_be16,
    get_be32,
    get_be64,
    get_string,
    iter_attr_spans,
    next_seqs,
)
from nfkit.netlink.codec import be16_attr as be16
from nfkit.netlink.codec import be32_attr as be32
from nfkit.netlink.codec import be64_attr as be64
from nfkit.netlink.codec import nest_bytes as nest
from nfkit.netlink.codec import string_attr as string
from nfkit.netlink.codec import u8_attr as u8
from nfkit.netlink.consts import (
    NFNL_SUBSYS_NFTABLES,
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    nfnl_msg_type,
)
from nfkit.netlink.specs.nftables import MSG
from nfkit.nftables import setudata
from nfkit.nftables.compiler import (
    AnonSet,
    Operand,
    RuleCompiler,
    anon_rule_shape,
    expression_typeof,
    rule_shape,
    set_data,
    set_key_types,
)
from nfkit.nftables.decompiler import (
    RuleDecoder,
    RuleShapes,
    SetView,
    render_elements,
    synproxy_body,
)
from nfkit.nftables.dumpreq import FAMILY_NUM
from nfkit.nftables.expressions import (
    CT_TIMEOUT_STATES,
    EXPRESSIONS,
    L3_NUMS,
    L4_NUMS,
    LIMIT_UNIT_NAMES,
    LIMIT_UNITS,
    OBJ_TYPE_NAMES,
    OBJ_TYPES,
    SET_ANONYMOUS,
    SET_CONCAT,
    SET_CONSTANT,
    SET_EVAL,
    SET_INTERVAL,
    SET_MAP,
    SET_OBJECT,
    SET_TIMEOUT,
    VERDICT_DATA_TYPE,
    A,
    parse_exprs,
    retag,
    synproxy_attrs,
    value_of_data,
    verdict_nest,
    verdict_of_data,
)
from nfkit.nftables.model import Chain, Obj, Rule, Set, Table
from nfkit.nftables.plainelements import key_chunks
from nfkit.nftables.templates import RuleTemplate
from nfkit.nftables.types import (
    BYTE_UNITS,
    VERDICT_TYPE,
    Datatype,
    T,
    bytes_unit,
    concat_type_id,
    datatype,
    reg_size,
    split_type_id,
)

FAMILY_NAME = {v: k for k, v in FAMILY_NUM.items()}
HOOKS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4,
         "ingress": 5}
HOOKS_NETDEV = {"ingress": 0, "egress": 1}
HOOKS_ARP = {"input": 0, "output": 1, "forward": 2}
TABLE_FLAGS = {"dormant": 1, "owner": 2, "persist": 4}
SET_FLAG_NAMES = [("constant", SET_CONSTANT), ("interval", SET_INTERVAL),
                  ("timeout", SET_TIMEOUT), ("dynamic", SET_EVAL)]


_MSG_TYPES: dict[str, int] = {}


def msg_type(name: str) -> int:
    t = _MSG_TYPES.get(name)
    if t is None:
        t = _MSG_TYPES[name] = nfnl_msg_type(NFNL_SUBSYS_NFTABLES, MSG[name])
    return t


def hook_map(family: str) -> dict[str, int]:
    return HOOKS_NETDEV if family == "netdev" else HOOKS_ARP if family == "arp" else HOOKS


# one-byte datatypes nft 1.0.6 gives no byte order (its BYTEORDER_INVALID, 0)
_NO_BYTEORDER = frozenset(("boolean", "ct_dir", "dccp_pkttype", "inet_proto", "nf_proto"))


def _byteorder(t: Datatype) -> int:
    if t.name in _NO_BYTEORDER:
        return setudata.ORDER_INVALID
    return 1 if (not t.big_endian or t.kind in ("ifname", "string")) else 2


SET_UDATA_COMMENT = 7  # NFTNL_UDATA_SET_COMMENT


def set_userdata(types: list[Datatype], data: Datatype | None, comment: str | None = None,
                 concat_order: int = 2) -> bytes:
    """nft's set user data (key and data byte order, which nft needs to print elements;
    the set's comment); a concatenated key's order is ``concat_order`` (nft gives a
    meter's 0)."""
    key = _byteorder(types[0]) if len(types) == 1 else concat_order
    out = setudata.u32(setudata.KEYBYTEORDER, key)
    if data is not None:
        out += setudata.u32(setudata.DATABYTEORDER, _byteorder(data))
    return out + _comment_record(comment)


def _comment_record(comment: str | None) -> bytes:
    """A set's comment record (none without a comment)."""
    if comment is None:
        return b""
    c = str(comment).encode() + b"\0"
    if len(c) > 128:
        raise InputError(f"set comment longer than 127 bytes: {comment[:40]!r}...")
    return setudata.record(SET_UDATA_COMMENT, c)


def _anon_userdata(s: AnonSet) -> bytes:
    """An anonymous set's user data: a meter's as before, a rule's set or map as nft 1.0.6
    writes it (`setudata.records`: the key's typeof a map's only when it is a
    concatenation, nft keys other maps by a plain value)."""
    if s.set_name is not None:  # a meter
        return set_userdata(s.key_types, s.data_dt, concat_order=0)
    single = len(s.key_types) == 1
    key_order = s.key_order if s.key_order is not None else \
        _byteorder(s.key_types[0]) if single else setudata.ORDER_INVALID
    verdicts = bool(s.flags & SET_MAP) and s.data_type == VERDICT_DATA_TYPE
    data_order = None  # an object map's: none
    if s.flags & SET_MAP:  # a verdict's or a concatenation's: nft's "invalid" order
        data_order = setudata.ORDER_INVALID if verdicts or s.data_dt is None else \
            _byteorder(s.data_dt)
    is_map = bool(s.flags & (SET_MAP | SET_OBJECT))
    return setudata.records(key_order, s.key_typeof if not is_map or not single else None,
                            data_order, is_map, setudata.VERDICT_TYPEOF if verdicts else None,
                            merge=not is_map and bool(s.flags & SET_INTERVAL))


def _named_userdata(types: list[Datatype], s: Set, data_type: int, data_dt: Datatype | None
                    ) -> bytes:
    """A named set's (or map's) user data as nft 1.0.6 writes it for a set declared with
    `type`: a concatenated key in nft's "invalid" byte order with an empty concatenation
    typeof, a map's data byte order (0 for verdicts and concatenations, with an empty
    concatenation typeof for the latter), `auto-merge`, the data-interval flag of a map,
    then the comment."""
    if s.typeof is not None:
        return _typeof_userdata(types, s, data_type) + _comment_record(s.comment)
    if len(types) == 1 and s.map is None and not s.auto_merge:
        return set_userdata(types, None, s.comment)
    concat = len(types) > 1
    data_order = None if s.map is None else \
        setudata.ORDER_INVALID if data_dt is None else _byteorder(data_dt)
    data_concat = s.map is not None and data_dt is None and data_type != VERDICT_TYPE
    return setudata.records(_byteorder(types[0]) if not concat else setudata.ORDER_INVALID,
                            setudata.CONCAT_TYPEOF if concat else None, data_order,
                            s.map is not None, setudata.CONCAT_TYPEOF if data_concat else None,
                            merge=s.auto_merge) + _comment_record(s.comment)


def _typeof_userdata(types: list[Datatype], s: Set, data_type: int) -> bytes:
    """The records of a set (or map) declared with `typeof KEY [: DATA]`, as nft 1.0.6
    writes them: the key's and the data's byte orders and typeof records taken from
    their expressions (a verdict map's data: the verdict typeof), `auto-merge`, a map's
    data-interval flag."""
    key_typeof, key_order = expression_typeof(s.family, s.table, s.typeof)
    if key_order is None:
        key_order = _byteorder(types[0])
    data_order = data_typeof = None
    if s.map is not None:
        if data_type == VERDICT_TYPE or s.map_typeof is None:
            data_order, data_typeof = setudata.ORDER_INVALID, setudata.VERDICT_TYPEOF
        else:
            data_typeof, data_order = expression_typeof(s.family, s.table, s.map_typeof)
            if data_order is None:
                data_order = _byteorder(set_data(s)[2] or types[0])
    return setudata.records(key_order, key_typeof, data_order, s.map is not None, data_typeof,
                            merge=s.auto_merge)


def _concat_desc(sizes: list[int]) -> bytes:
    """An interval concatenation's fields in NFTA_SET_DESC, each its own width in bytes
    (`ipv4_addr . inet_service`: 4 and 2), as nft 1.0.6 sends them; nft sends neither
    these nor NFT_SET_CONCAT for a concatenation without intervals (a hash)."""
    return nest(A["set_desc"]["concat"], *[nest(1, be32(1, z)) for z in sizes])


# ---- encoder ---------------------------------------------------------------------

class Encoder:
    """Writes model changes into a Batch; remembers what each message was about."""

    FIRST_SET_ID = 0x10000  # set ids count up from here, one per set created

    def __init__(self, batch: Any, known_sets: dict[tuple[str, str, str], Set] | None = None,
                 queue_mode: Callable[[], str] | None = None, anon_templates: bool = True
                 ) -> None:
        """``known_sets``: the sets elements may be added to, by (family, table, name);
        ``queue_mode``: asked (once per compiler) whether the kernel has the nft queue
        expression ("nft") or only the xt NFQUEUE target ("xt"); see RuleCompiler.
        ``anon_templates``: rules with one anonymous set of scalars are encoded from
        their shape's template (`_add_anon_templated`; off: each compiled, the same
        bytes)."""
        self.batch = batch
        self.known_sets = known_sets if known_sets is not None else {}
        self.queue_mode = queue_mode
        self.what = _Names()
        self.compilers: dict[tuple[str, str], RuleCompiler] = {}
        self.set_ids = [self.FIRST_SET_ID]
        self._where: dict[tuple[str, str], bytes] = {}
        self.anon_counter = [0]
        self._rule_templates: dict[Any, RuleTemplate | None] = {}
        self._anon_templates: dict[Any, _AnonRule | None] = {}
        self.anon_templates = anon_templates

    def _begin(self, name: str, family: str, flags: int, what: Any) -> None:
        self.batch.begin(msg_type(name), NLM_F_REQUEST | flags, family=FAMILY_NUM[family])
        self.what.append(what)

    def flush_ruleset(self, family: str | None = None) -> None:
        """DELTABLE without a name: every table of ``family``, or of every family
        (family 0, NFPROTO_UNSPEC) when it is None."""
        self.batch.begin(msg_type("deltable"), NLM_F_REQUEST,
                         family=FAMILY_NUM[family] if family else 0)
        self.batch.end()
        self.what.append(f"flush ruleset {family}" if family else "flush ruleset")

    def table(self, t: Table, create: bool = False) -> None:
        a = A["table"]
        self._begin("newtable", t.family, NLM_F_CREATE | (NLM_F_EXCL if create else 0), str(t))
        fl = 0
        for f in t.flags:
            fl |= TABLE_FLAGS[f]
        self.batch.raw(string(a["name"], t.name) + be32(a["flags"], fl))
        self.batch.end()

    def flush_table(self, t: Table) -> None:
        """DELRULE for every rule of table ``t``."""
        self._begin("delrule", t.family, 0, f"flush {t}")
        self.batch.string(A["rule"]["table"], t.name)
        self.batch.end()

    def del_table(self, family: str, name: str, handle: int | None = None) -> None:
        a = A["table"]
        self._begin("deltable", family, 0, f"table {family} {name}")
        self.batch.raw(string(a["name"], name))
        self.batch.end()

    def chain(self, c: Chain, create: bool = False) -> None:
        a = A["chain"]
        self._begin("newchain", c.family, NLM_F_CREATE | (NLM_F_EXCL if create else 0), str(c))
        body = string(a["table"], c.table) + string(a["name"], c.name)
        if c.hook is not None:
            hooks = hook_map(c.family)
            if c.hook not in hooks:
                raise InputError(f"{c}: unknown hook {c.hook!r} for family {c.family}")
            h = A["hook"]
            hb = be32(h["hooknum"], hooks[c.hook]) + be32(h["priority"], int(c.prio or 0))
            if c.dev is not None:
                if isinstance(c.dev, list):
                    hb += nest(h["devs"], *[string(1, d) for d in c.dev])
                else:
                    hb += string(h["dev"], c.dev)
            body += nest(a["hook"], hb)
            if c.policy is not None:
                if c.policy not in ("accept", "drop"):
                    raise InputError(f"{c}: policy must be accept or drop, not {c.policy!r}")
                body += be32(a["policy"], 1 if c.policy == "accept" else 0)
            body += string(a["type"], c.type or "filter")
        self.batch.raw(body)
        self.batch.end()

    def del_chain(self, c: Chain, flush_only: bool = False) -> None:
        a = A["chain"]
        if flush_only:
            self._begin("delrule", c.family, 0, f"flush {c}")
            self.batch.raw(string(A["rule"]["table"], c.table) + string(A["rule"]["chain"], c.name))
        else:
            self._begin("delchain", c.family, 0, str(c))
            self.batch.raw(string(a["table"], c.table) + string(a["name"], c.name))
        self.batch.end()

    def compiler(self, family: str, table: str) -> RuleCompiler:
        rc = self.compilers.get((family, table))
        if rc is None:
            rc = self.compilers[(family, table)] = RuleCompiler(
                family, table, self.anon_counter, self.set_ids, self.queue_mode)
            for key, s in self.known_sets.items():
                if key[:2] == (family, table):
                    rc.named_sets[s.name] = s
        return rc

    def rule_exprs(self, r: Rule) -> tuple[list[bytes], list[AnonSet]]:
        rc = self.compilers.get((r.family, r.table)) or self.compiler(r.family, r.table)
        return rc.compile(r.expr)

    def rule(self, r: Rule, verb: str = "add", exprs: list[bytes] | None = None,
             sets: list[AnonSet] | None = None) -> None:
        """NEWRULE for ``r`` (verb add, insert or replace), after its anonymous sets."""
        if (exprs is None and verb == "add" and r.position is None and not r.comment
                and self.anon_templates and self._add_anon_templated(r)):
            return
        if exprs is None:
            try:
                exprs, sets = self.rule_exprs(r)
            except InputError as exc:
                raise InputError(f"{r}: {exc}") from None
        for s in sets or ():
            self.anon_set(r.family, r.table, s, str(r))
        a = A["rule"]
        flags = NLM_F_CREATE
        if verb == "add":
            flags |= NLM_F_APPEND
        elif verb == "replace":
            flags = NLM_F_REPLACE
        where = self._where.get((r.table, r.chain))
        if where is None:
            where = self._where[(r.table, r.chain)] = (string(a["table"], r.table)
                                                       + string(a["chain"], r.chain))
        body = where
        if verb == "replace":
            if r.handle is None:
                raise InputError(f"{r}: replace needs a handle")
            body += be64(a["handle"], r.handle)
        elif r.position is not None:
            body += be64(a["position"], r.position)
        body += nest(a["expressions"], *exprs)
        if r.comment:
            c = r.comment.encode() + b"\0"
            if len(c) > 255:
                raise InputError(f"{r}: comment longer than 254 bytes")
            body += attr_bytes(a["userdata"], bytes((0, len(c))) + c)
        self._begin("newrule", r.family, flags, r)
        self.batch.raw(body)
        self.batch.end()

    def add_rule_templated(self, r: Rule) -> bool:
        """Append NEWRULE (add, no position, no comment) for ``r`` from the template of
        its shape (`templates.RuleTemplate`), patching only seq and values.

        Returns False, with nothing written, when ``r`` has no template; then
        `rule` encodes it.  80,000 rules of a few shapes cost one compile each."""
        shape = rule_shape(r.expr)
        if shape is None:
            return False
        key, rights = shape
        rt = self._rule_template(r, key)
        if rt is None:
            return False
        values = rt.values(rights)
        if values is None:
            return False  # the general path decides (set references, names, errors)
        rt.emit(self.batch, values)
        self.what.append(r)
        return True

    def rule_run(self, run: Any) -> None:
        """Append NEWRULE (add) for every rule of a `bulkjson.RuleRun`, in order.

        The values arrive as text columns; each column is encoded with one map
        over the slot's encoder and every message is the shape's message with
        the sequence number and values formatted in.  A rule whose value the
        slot cannot take (a prefix where an address was, a service name, ...)
        is encoded on its own by `rule`, in its place."""
        rt = run.template if run.template is not None else self._rule_template(run.sample, run.key)
        n = len(run)
        if rt is None:
            for k in range(n):
                self.rule(run.rule(k))
            return
        tpl, offsets, slots = rt.message, rt.offsets, rt.slots
        bad: set[int] = set()
        if run.packed is not None:
            cols = run.packed
            assert all(len(c) == n * vsize if type(c) is bytes else len(c) == n
                       for c, (_f, vsize, _o) in zip(cols, slots, strict=True))
        elif run.template is not None:
            cols, bad = run.encoded()
        else:
            cols, bad = encode_columns(slots, run.kinds, [run.column(j) for j in range(len(slots))])
        k = 0
        while k < n:
            if k in bad:
                self.rule(run.rule(k))
                k += 1
                continue
            stop = k + 1
            while stop < n and stop not in bad:
                stop += 1
            part = [c[k * len(c) // n:stop * len(c) // n] if type(c) is bytes else c[k:stop]
                    for c in cols] if bad else cols
            self._emit_rows(run, tpl, offsets, [s[1] for s in slots], part, k, stop - k)
            k = stop

    def rule_runs(self, items: list[Any]) -> None:
        """`rule_run` for each run of ``items`` (consecutive in the batch, in order; an
        item that is not a run is a function that encodes one rule, called in its
        place), the rows of each template written together: one copy of its message
        per row and one strided write per value column for all its runs, then every
        run's rows cut out in order (a file that changes shape every few lines costs a
        few calls per template, not per run).  A run whose values are not all encoded
        into columns goes through `rule_run`, in its place."""
        group: list[Any] = []
        for item in items:
            if callable(item):
                group.append(item)
                continue
            run = item
            rt = run.template if run.template is not None else \
                self._rule_template(run.sample, run.key)
            cols = run.packed if rt is not None else None
            if rt is not None and cols is None and run.template is not None:
                got, bad = run.encoded()
                if not bad:
                    cols = [c if type(c) is bytes else b"".join(c) for c in got]
            if cols is None:
                self._emit_runs(group)
                group = []
                self.rule_run(run)
                continue
            group.append((run, rt, cols))
        self._emit_runs(group)

    def _emit_runs(self, group: list[Any]) -> None:
        """Runs (run, template, value columns) and rule encoders of `rule_runs`, in order."""
        runs = [g for g in group if not callable(g)]
        if len(runs) < 2:
            for g in group:
                if callable(g):
                    g()
                else:
                    run, rt, cols = g
                    self._emit_rows(run, rt.message, rt.offsets, [s[1] for s in rt.slots],
                                    cols, 0, len(run))
            return
        # Each rule encoder writes into a scratch writer of its own first: the whole
        # group's sequence numbers are then given in the batch's order.
        batch, what = self.batch, self.what
        pieces: list[Any] = []  # per item: (run, template, rows) or (bytes, message starts)
        try:
            for g in group:
                if callable(g):
                    self.batch = MessageWriter()
                    g()
                    pieces.append((bytes(self.batch.buffer), [st for _s, st in self.batch.seqs]))
                else:
                    pieces.append(g)
                    what.extend(repeat(_Rows(g[0], 0, len(what)), len(g[0])))
        finally:
            self.batch = batch
        counts = [len(p[1]) if type(p[0]) is bytes else len(p[0]) for p in pieces]
        seqs = next_seqs(sum(counts))
        firsts = list(accumulate(counts, initial=0))
        by_template: dict[int, list[int]] = {}
        for k, p in enumerate(pieces):
            if type(p[0]) is not bytes:
                by_template.setdefault(id(p[1]), []).append(k)
        blocks: dict[int, list[Any]] = {}
        for members in by_template.values():
            rt = pieces[members[0]][1]
            size = len(rt.message)
            block = bytearray(rt.message)  # repeated in place: no temporary of its size
            block *= sum(counts[k] for k in members)
            order = array(_U32_CODE)
            for k in members:
                order.extend(seqs[firsts[k]:firsts[k + 1]])
            _stride_into(block, size, 8, 4, order.tobytes())
            for j, (off, (_e, vsize, _o)) in enumerate(zip(rt.offsets, rt.slots, strict=True)):
                _stride_into(block, size, off, vsize, b"".join(pieces[k][2][j] for k in members))
            blocks[id(rt)] = [memoryview(block), 0, size]
        buf = batch.buffer
        at = len(buf)
        out: list[Any] = []
        where: list[Any] = []
        for k, p in enumerate(pieces):
            if type(p[0]) is bytes:
                data = bytearray(p[0])
                for seq, st in zip(seqs[firsts[k]:firsts[k + 1]], p[1], strict=True):
                    _SEQ_AT.pack_into(data, st + 8, seq)
                out.append(data)
                where.append([at + st for st in p[1]])
                at += len(data)
                continue
            blk = blocks[id(p[1])]
            view, cur, size = blk
            n = counts[k]
            out.append(view[cur:cur + n * size])
            blk[1] = cur + n * size
            where.append(range(at, at + n * size, size))
            at += n * size
        for piece in out:  # each appended in place (a join would copy them all once more)
            buf += piece
        batch.seqs.extend(zip(seqs, chain.from_iterable(where), strict=True))

    def _emit_rows(self, run: Any, tpl: bytes, offsets: list[int], sizes: list[int],
                   cols: list[Any], k0: int, n: int) -> None:
        """Rules ``k0``..``k0 + n`` of ``run``: the shape's message ``n`` times, then the
        sequence numbers and each value column written in with strided slices (no
        Python per rule)."""
        size = len(tpl)
        seqs = next_seqs(n)
        batch = self.batch
        start = len(batch.buffer)
        buf = batch.buffer = _append_repeated(batch.buffer, tpl, n)
        _stride_into(buf, size, start + 8, 4, array(_U32_CODE, seqs).tobytes())
        for off, vsize, col in zip(offsets, sizes, cols, strict=True):
            _stride_into(buf, size, start + off, vsize,
                         col if type(col) is bytes else b"".join(col))
        batch.seqs.extend(zip(seqs, range(start, start + n * size, size), strict=True))
        self.what.extend(repeat(_Rows(run, k0, len(self.what)), n))

    def _rule_template(self, r: Rule, key: Any) -> RuleTemplate | None:
        """The template of rule shape ``key`` in ``r``'s chain (made from ``r`` the first
        time), or None when the shape has none."""
        mkey = (r.family, r.table, r.chain, key)
        if mkey not in self._rule_templates:
            rc = self.compilers.get((r.family, r.table)) or self.compiler(r.family, r.table)
            tpl = rc.rule_template(key, r.expr)
            self._rule_templates[mkey] = None if tpl is None else \
                RuleTemplate(r.family, r.table, r.chain, tpl[0], tpl[1])
        return self._rule_templates[mkey]

    def _add_anon_templated(self, r: Rule) -> bool:
        """NEWSET, NEWSETELEM and NEWRULE (add) of a rule with one anonymous set of
        scalars (`compiler.anon_rule_shape`) from the template of its shape: the set's
        id, its keys and the rule's values patched in.  False, with nothing written,
        when it has none or a value does not fit (then the general path encodes it)."""
        shape = anon_rule_shape(r.expr)
        if shape is None:
            return False
        key, rights = shape
        mkey = (r.family, r.table, r.chain, key)
        at = self._anon_templates.get(mkey, _MISSING)
        if at is _MISSING:
            at = self._anon_templates[mkey] = _AnonRule.of(r)
        if at is None:
            return False
        rc = self.compilers.get((r.family, r.table)) or self.compiler(r.family, r.table)
        items = rights[at.set_at]
        keys = rc.rule_values([at.key_slot] * len(items), items)
        rights[at.set_at] = 0  # the set id's place: patched below
        values = rc.rule_values(at.rule.slots, rights)
        if keys is None or values is None:
            return False
        # the ids the general path would take (`RuleCompiler._anon_set`)
        self.anon_counter[0] += 1
        self.set_ids[0] += 1
        sid = self.set_ids[0].to_bytes(4, "big")
        values[at.set_slot] = sid
        at.newset(self.batch, sid)
        at.elements(self.batch, sid, *keys)
        at.rule.emit(self.batch, values)
        self.what += [_About("anonymous set of", r), _About("elements of anonymous set of", r), r]
        return True

    def del_rule(self, r: Rule) -> None:
        a = A["rule"]
        self._begin("delrule", r.family, 0, str(r))
        if r.handle is None:
            raise InputError(f"{r}: delete needs a handle")
        self.batch.raw(string(a["table"], r.table) + string(a["chain"], r.chain)
                       + be64(a["handle"], r.handle))
        self.batch.end()

    def anon_set(self, family: str, table: str, s: AnonSet, what: str) -> None:
        a = A["set"]
        self._begin("newset", family, NLM_F_CREATE, f"anonymous set of {what}")
        name = s.set_name or s.template_name
        body = (string(a["table"], table) + string(a["name"], name)
                + be32(a["flags"], s.flags) + be32(a["key_type"], concat_type_id(s.key_types))
                + be32(a["key_len"], s.key_len))
        if s.flags & SET_MAP:
            body += be32(a["data_type"], s.data_type) + be32(a["data_len"], s.data_len)
        if s.obj_type:
            body += be32(a["obj_type"], s.obj_type)
        body += be32(a["id"], s.set_id)
        body += attr_bytes(a["userdata"], _anon_userdata(s))
        desc = be32(A["set_desc"]["size"], s.count) if s.desc else b""
        if len(s.key_types) > 1 and s.flags & SET_INTERVAL:  # (a meter's: never)
            desc += _concat_desc(s.key_sizes)
        if desc:
            body += nest(a["desc"], desc)
        self.batch.raw(body)
        self.batch.end()
        self._elements(family, table, name, s.set_id, s.elements,
                       f"elements of anonymous set of {what}", objref=bool(s.obj_type))

    def _elements(self, family: str, table: str, name: str, set_id: int | None,
                  elements: list[tuple[bytes, bytes | None, int, bytes | None]], what: str,
                  delete: bool = False, extra: list[bytes] | None = None,
                  objref: bool = False) -> None:
        """NEWSETELEM (or DELSETELEM) messages; with ``objref`` the elements' data are the
        names of the objects they map to (NFTA_SET_ELEM_OBJREF)."""
        e = A["set_elem"]
        head = _elem_head(table, name, set_id)
        chunk: list[bytes] = []
        size = 0
        if not extra and elements and _plain_elements(elements):
            self._key_msgs(family, head, [k[0] for k in elements], what, delete)
            return
        for i, (key, key_end, flags, data) in enumerate(elements):
            body = nest(e["key"], attr_bytes(1, key))
            if key_end is not None:
                body += nest(e["key_end"], attr_bytes(1, key_end))
            if flags:
                body += be32(e["flags"], flags)
            if data is not None and objref:
                body += string(e["objref"], data.decode())
            elif data is not None:
                if data[:2] and data[2:4] == b"\x02\x80":  # already a verdict nest
                    body += nest(e["data"], data)
                else:
                    body += nest(e["data"], attr_bytes(1, data))
            if extra and extra[i]:
                body += extra[i]
            item = nest(1, body)
            if size + len(item) > 60000:
                self._elem_msg(family, head, chunk, what, delete)
                chunk, size = [], 0
            chunk.append(item)
            size += len(item)
        if chunk:
            self._elem_msg(family, head, chunk, what, delete)

    def _key_msgs(self, family: str, head: bytes, keys: list[bytes], what: str,
                  delete: bool) -> None:
        """Elements that are keys alone, all of one length (a blocklist): every element
        is one constant header, the key and its padding, so each message's elements
        are one join."""
        for chunk in key_chunks(len(keys[0]), keys):
            self._elem_msg(family, head, [chunk], what, delete)

    def _elem_msg(self, family: str, head: bytes, chunk: list[bytes], what: str,
                  delete: bool) -> None:
        self._begin("delsetelem" if delete else "newsetelem", family,
                    0 if delete else NLM_F_CREATE, what)
        self.batch.raw(head + nest(A["set_elem_list"]["elements"], *chunk))
        self.batch.end()

    def set(self, s: Set, create: bool = False) -> None:
        a = A["set"]
        try:
            types = set_key_types(s)
            set_data(s)
        except InputError as exc:
            raise InputError(f"{s}: {exc}") from None
        sizes = [t.size for t in types]
        flags = 0
        for name, bit in SET_FLAG_NAMES:
            if name in s.flags:
                flags |= bit
        if len(types) > 1 and "interval" in s.flags:  # (nft's: an interval concatenation's
            flags |= SET_CONCAT  # flag and fields, each field its own width, `_concat_desc`)
        if s.timeout is not None:
            flags |= SET_TIMEOUT
        data_type, data_len, _dt = set_data(s)
        if s.map is not None:
            flags |= SET_MAP
        self._begin("newset", s.family, NLM_F_CREATE | (NLM_F_EXCL if create else 0), str(s))
        key_len = sizes[0] if len(types) == 1 else sum(reg_size(z) for z in sizes)
        self.set_ids[0] += 1
        body = (string(a["table"], s.table) + string(a["name"], s.name) + be32(a["flags"], flags)
                + be32(a["key_type"], concat_type_id(types)) + be32(a["key_len"], key_len))
        if s.map is not None:
            body += be32(a["data_type"], data_type) + be32(a["data_len"], data_len)
        if s.policy == "memory":
            body += be32(a["policy"], 1)
        desc = b""
        if s.size is not None:
            desc += be32(A["set_desc"]["size"], s.size)
        if len(types) > 1 and "interval" in s.flags:
            desc += _concat_desc(sizes)
        if desc:
            body += nest(a["desc"], desc)
        body += be32(a["id"], self.set_ids[0])
        if s.timeout is not None:
            body += be64(a["timeout"], int(s.timeout) * 1000)
        if s.gc_interval is not None:
            body += be32(a["gc_interval"], int(s.gc_interval) * 1000)
        body += attr_bytes(a["userdata"], _named_userdata(types, s, data_type, _dt))
        if s.stmt:
            exprs = self._set_stmt_exprs(s, s.stmt)
            if len(exprs) == 1:
                body += retag(exprs[0], a["expr"])
            else:
                body += nest(a["expressions"], *exprs)
        self.batch.raw(body)
        self.batch.end()
        if s.elem:
            self.set_elements(s, s.elem)

    def _set_stmt_exprs(self, s: Set, stmts: list[dict[str, Any]]) -> list[bytes]:
        try:
            exprs, anon = self.compiler(s.family, s.table).compile(stmts)
        except InputError as exc:
            raise InputError(f"{s}: {exc}") from None
        if anon:
            raise InputError(f"{s}: set statements cannot use anonymous sets")
        return exprs

    def set_elements(self, s: Set, items: list[Any], delete: bool = False) -> None:
        """NEWSETELEM (or DELSETELEM) messages for ``items`` of set ``s``."""
        types = set_key_types(s)
        op = Operand([], types, [t.size for t in types])
        if s.map is None and len(types) == 1 and "interval" not in s.flags \
                and set(map(type, items)) <= _PLAIN_KEY_TYPES:
            self._plain_keys(s, types[0], op.size, items, None, delete)
            return
        rc = self.compiler(s.family, s.table)
        data: list[bytes] | None = None
        keys = []
        extra: list[bytes] = []
        e = A["set_elem"]
        data_type, data_len, ddt = set_data(s)
        if s.map is not None:
            data = []
        for item in items:
            x = b""
            if s.map is not None:
                if isinstance(item, list) and len(item) == 2:
                    k, v = item
                else:
                    raise InputError(f"{s}: map element {item!r} is not [key, value]")
                if data_type == VERDICT_TYPE:
                    data.append(verdict_nest(v))  # type: ignore[union-attr]
                elif ddt is not None:
                    data.append(rc.encode_value(ddt, ddt.size, v))  # type: ignore[union-attr]
                else:
                    dts = split_type_id(data_type)
                    dop = Operand([], dts, [t.size for t in dts])
                    data.append(rc.encode_key(dop, v))  # type: ignore[union-attr]
                item = k
            if isinstance(item, dict) and "elem" in item:
                el = item["elem"]
                if "timeout" in el:
                    x += be64(e["timeout"], int(el["timeout"]) * 1000)
                if "expires" in el:
                    x += be64(e["expiration"], int(el["expires"]) * 1000)
                if "comment" in el:  # NFTNL_UDATA_SET_ELEM_COMMENT, as nft stores it
                    c = str(el["comment"]).encode() + b"\0"
                    if len(c) > 128:
                        raise InputError(f"{s}: element comment longer than 127 bytes")
                    x += attr_bytes(e["userdata"], bytes((0, len(c))) + c)
                per = [{k: el[k]} for k in ("counter", "quota", "limit") if k in el]
                if per:
                    ex = self._set_stmt_exprs(s, per)
                    x += retag(ex[0], e["expr"]) if len(ex) == 1 else \
                        nest(e["expressions"], *ex)
                item = el["val"]
            keys.append(item)
            extra.append(x)
        if len(types) == 1 and "interval" not in s.flags and not any(extra) \
                and set(map(type, keys)) <= _PLAIN_KEY_TYPES:
            self._plain_keys(s, types[0], op.size, keys, data, delete)
            return
        if "interval" in s.flags and s.typeof is not None and \
                any(t.kind == "int" and not t.big_endian for t in types):
            # (nft turns such keys around for its intervals; nfkit does not yet)
            raise InputError(f"{s}: an interval set keyed by a host-order integer (typeof "
                             "meta length...) is not supported by nfkit")
        try:
            _flags, elements = rc.set_elements(op, keys, data, "interval" in s.flags)
        except InputError as exc:
            raise InputError(f"{s}: {exc}") from None
        if "interval" in s.flags and len(types) == 1:
            if any(extra):
                # Interval elements are split into start and end elements: what an item
                # carries cannot follow it there yet, and is refused rather than dropped.
                raise InputError(f"{s}: timeouts, comments and statements on the elements "
                                 "of an interval set are not supported by nfkit")
            extra = [b""] * len(elements)
        self._elements(s.family, s.table, s.name, None, elements, str(s), delete, extra)

    def _plain_keys(self, s: Set, dt: Datatype, width: int, keys: list[Any], data: list[bytes] | None,
                    delete: bool) -> None:
        """Elements of a one-type, non-interval set or map whose keys are plain values
        (a blocklist): the keys encoded in bulk, the same bytes as one by one."""
        encode = self.compiler(s.family, s.table).encode_value
        encoded: list[bytes] = []
        if dt.kind in _ADDRESS_FAMILY:
            try:
                encoded = _addresses(dt, keys)
            except (OSError, TypeError):  # not all plain addresses: each its own way, for the error
                encoded = []
        try:
            encoded = encoded or [encode(dt, width, k) for k in keys]
        except InputError as exc:
            raise InputError(f"{s}: {exc}") from None
        if data is None and encoded and len(set(map(len, encoded))) == 1:
            self._key_msgs(s.family, _elem_head(s.table, s.name, None), encoded, str(s), delete)
            return
        datas: list[bytes | None] = [None] * len(encoded) if data is None else list(data)
        elements: list[tuple[bytes, bytes | None, int, bytes | None]] = [
            (k, None, 0, d) for k, d in zip(encoded, datas, strict=True)]
        self._elements(s.family, s.table, s.name, None, elements, str(s), delete)

    def del_set(self, s: Set) -> None:
        a = A["set"]
        self._begin("delset", s.family, 0, str(s))
        self.batch.raw(string(a["table"], s.table) + string(a["name"], s.name))
        self.batch.end()

    def flush_set(self, s: Set) -> None:
        a = A["set_elem_list"]
        self._begin("delsetelem", s.family, 0, f"flush {s}")
        self.batch.raw(string(a["table"], s.table) + string(a["set"], s.name))
        self.batch.end()

    def obj(self, o: Obj, create: bool = False) -> None:
        a = A["obj"]
        self._begin("newobj", o.family, NLM_F_CREATE | (NLM_F_EXCL if create else 0), str(o))
        b = o.body
        unknown = set(b) - OBJECT_KEYS.get(o.kind, set())
        if unknown:
            raise InputError(f"{o}: key {sorted(unknown)[0]!r} is not encoded by nfkit "
                             "(refused rather than ignored)")
        if o.kind == "counter":
            c = A["counter"]
            data = be64(c["bytes"], int(b.get("bytes", 0))) + be64(c["packets"],
                                                                   int(b.get("packets", 0)))
        elif o.kind == "quota":
            q = A["quota"]
            data = (be64(q["bytes"], int(b["bytes"])) + be64(q["consumed"], int(b.get("used", 0)))
                    + be32(q["flags"], 1 if b.get("inv") else 0))
        elif o.kind == "limit":
            lm = A["limit"]
            unit = LIMIT_UNITS[b.get("per", "second")]
            rate, burst, ltype = int(b["rate"]), int(b.get("burst", 0)), 0
            if b.get("rate_unit", "packets") != "packets":  # a byte rate (type bytes)
                rate *= BYTE_UNITS[b["rate_unit"]]
                burst *= BYTE_UNITS[b.get("burst_unit", "bytes")]
                ltype = 1
            elif b.get("burst_unit", "packets") != "packets":
                raise InputError(f"{o}: burst unit {b['burst_unit']!r} on a packet rate")
            data = (be64(lm["rate"], rate) + be64(lm["unit"], unit)
                    + be32(lm["burst"], burst) + be32(lm["type"], ltype)
                    + be32(lm["flags"], 1 if b.get("inv") else 0))
        elif o.kind == "ct helper":
            h = A["ct_helper"]
            l3 = {"ip": 2, "ip6": 10, "inet": 1}.get(b.get("l3proto", o.family), 2)
            l4 = {"tcp": 6, "udp": 17}.get(b.get("protocol", "tcp"))
            if l4 is None:
                raise InputError(f"{o}: protocol must be tcp or udp")
            data = (string(h["name"], str(b["type"])) + be16(h["l3proto"], l3)
                    + u8(h["l4proto"], l4))
        elif o.kind == "ct timeout":
            data = _ct_timeout_data(o)
        elif o.kind == "ct expectation":
            x = A["ct_expect"]
            l4 = L4_NUMS.get(b.get("protocol", "tcp"))
            if l4 is None:
                raise InputError(f"{o}: protocol must be tcp or udp")
            data = (be16(x["l3proto"], L3_NUMS[b.get("l3proto", o.family)])
                    + u8(x["l4proto"], l4) + be16(x["dport"], int(b["dport"]))
                    + attr_bytes(x["timeout"], int(b["timeout"]).to_bytes(4, sys.byteorder))
                    + u8(x["size"], int(b["size"])))
        elif o.kind == "synproxy":
            data = synproxy_attrs(b)
        else:
            raise InputError(f"{o}: object type {o.kind!r} not supported")
        self.batch.raw(string(a["table"], o.table) + string(a["name"], o.name)
                       + be32(a["type"], OBJ_TYPES[o.kind]) + nest(a["data"], data))
        self.batch.end()

    def del_obj(self, o: Obj) -> None:
        a = A["obj"]
        self._begin("delobj", o.family, 0, str(o))
        self.batch.raw(string(a["table"], o.table) + string(a["name"], o.name)
                       + be32(a["type"], OBJ_TYPES[o.kind]))
        self.batch.end()


def encode_columns(slots: list[tuple[Any, int, Operand]], kinds: tuple[type, ...],
                   columns: list[list[str]]) -> tuple[list[Any], set[int]]:
    """Text value columns -> per slot, the values encoded (one bytes object for a
    packed integer column, else a list of bytes), and the rows a slot refused
    (a service name, a prefix, a value out of range: the general path's work)."""
    cols: list[Any] = []
    bad: set[int] = set()
    for (fast, vsize, op), kind, col in zip(slots, kinds, columns, strict=True):
        packed = _pack_ints(op, vsize, col) if kind is int else None
        if packed is not None:
            cols.append(packed)
            continue
        try:
            enc = list(map(fast, map(int, col) if kind is int else col))
        except Exception:
            enc = []
            for k, v in enumerate(col):
                try:
                    enc.append(fast(int(v) if kind is int else v))
                except Exception:
                    enc.append(b"")
                    bad.add(k)
        if set(map(len, enc)) != {vsize}:
            bad.update(k for k, b in enumerate(enc) if len(b) != vsize)
        cols.append(enc)
    return cols, bad


ARRAY_CODE = {array(c).itemsize: c for c in "QLIHB"}  # size -> unsigned typecode
_U32_CODE = ARRAY_CODE[4]
_SEQ_AT = struct.Struct("=I")


_ADDRESS_FAMILY = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


_PLAIN_KEY_TYPES = {str, int}  # keys `_plain_keys` encodes in bulk


def _elem_head(table: str, name: str, set_id: int | None) -> bytes:
    """The attributes before the elements of a NEWSETELEM/DELSETELEM message."""
    a = A["set_elem_list"]
    head = string(a["table"], table) + string(a["set"], name)
    return head if set_id is None else head + be32(a["set_id"], set_id)


def _addresses(dt: Datatype, keys: list[Any]) -> list[bytes]:
    """Address keys in bulk: exactly what `Datatype.encode` gives each of them
    (inet_pton); raises OSError or TypeError where one is not an address."""
    return list(map(inet_pton, repeat(_ADDRESS_FAMILY[dt.kind], len(keys)), keys))


def _plain_elements(elements: list[tuple[bytes, bytes | None, int, bytes | None]]) -> bool:
    """Keys only (no range end, flags or data), all of one length."""
    width = len(elements[0][0])
    return all(len(k) == width and ke is None and not f and d is None for k, ke, f, d in elements)


def in_byte_order(a: array[int], big_endian: bool) -> array[int]:
    """``a`` with its items in that byte order for the wire (swapped in place when the
    host's order differs); the same call turns wire-order items into numbers."""
    if a.itemsize > 1 and big_endian != (sys.byteorder == "big"):
        a.byteswap()
    return a


def _pack_ints(op: Operand, size: int, col: Any) -> bytes | None:
    """An integer slot's column packed in one go (in the value's byte order), or None
    when the slot is not a plain integer or a value does not fit (then each value
    goes its own way)."""
    dt = op.dt
    code = ARRAY_CODE.get(size)
    if (code is None or dt.kind != "int" or op.mask is not None or len(op.types) != 1
            or dt.size != size):
        return None
    try:
        a = array(code, map(int, col))
    except (OverflowError, ValueError):
        return None
    return in_byte_order(a, dt.big_endian).tobytes()


def _append_repeated(buf: bytearray, piece: bytes, n: int) -> bytearray:
    """``buf += piece * n``, returned (``buf`` itself, or a new bytearray holding it when
    that costs less): the rows written once into fresh memory, without a temporary of
    their size.  When ``buf`` holds less than the rows, they are made by repeating
    ``piece`` in place in a new bytearray (which grows once) and ``buf`` is put in
    front of them (one move): each page of the rows is faulted in once, not twice.
    For 80,000 rules (38 MB) that is ~20 ms instead of ~35 ms (9,500 page faults
    instead of 18,900); the caller holds no view of ``buf``."""
    size = len(piece) * n
    if size < 1 << 20:
        buf += piece * n
        return buf
    if len(buf) < size:
        out = bytearray(piece)
        out *= n
        out[0:0] = buf
        return out
    start = len(buf)
    buf += bytes(size)
    with memoryview(buf) as view:
        view[start:start + len(piece)] = piece
        k = len(piece)
        while k < size:
            c = min(k, size - k)
            view[start + k:start + k + c] = view[start:start + c]
            k += c
    return buf


def _stride_into(buf: bytearray, stride: int, off: int, width: int, data: bytes) -> None:
    """Write ``width``-byte item k of ``data`` at ``off + k * stride`` of ``buf``, whose
    last message starts at ``len(buf) - stride`` (so each slice ends with ``data``)."""
    for b in range(width):
        buf[off + b::stride] = data[b::width]


class _Rows:
    """Messages of a batch that are rules ``k0``.. of a RuleRun, from index ``base``."""

    __slots__ = ("run", "k0", "base")

    def __init__(self, run: Any, k0: int, base: int) -> None:
        self.run, self.k0, self.base = run, k0, base


class _About:
    """A message about ``r`` (named only when asked: `_Names`)."""

    __slots__ = ("what", "r")

    def __init__(self, what: str, r: Any) -> None:
        self.what, self.r = what, r

    def __str__(self) -> str:
        return f"{self.what} {self.r}"


_MISSING: Any = object()


class _AnonRule:
    """The three messages of a rule with one anonymous set of scalars, as templates:
    NEWSET (its id a slot), NEWSETELEM (its id and each key a slot) and NEWRULE (its
    values and the set's id slots).  Made from the shape's first rule and checked
    against the general path's bytes for it (`of`)."""

    __slots__ = ("rule", "set_at", "set_slot", "key_slot", "newset", "elements")

    def __init__(self, rule: RuleTemplate, set_at: int, set_slot: int, key_slot: Any,
                 newset: Any, elements: Any) -> None:
        self.rule, self.set_at, self.set_slot, self.key_slot = rule, set_at, set_slot, key_slot
        self.newset, self.elements = newset, elements

    @classmethod
    def of(cls, r: Rule) -> _AnonRule | None:
        """The templates of ``r``'s shape, or None when it has none (a scratch compiler
        and encoder: the batch's set ids are not touched)."""
        shape = anon_rule_shape(r.expr)
        if shape is None:
            return None
        rights = shape[1]
        set_at = next(i for i, v in enumerate(rights) if type(v) is list)
        got = RuleCompiler(r.family, r.table).anon_rule_template(r.expr)
        if got is None:
            return None
        (statics, slots), set_slot, sample, key_slot = got
        if set_slot != set_at:
            return None
        rt = RuleTemplate(r.family, r.table, r.chain, statics, slots)
        width = key_slot.width
        # NEWSET and NEWSETELEM with the id and keys all zero bits, then all one bits:
        # the bytes that differ (but the sequence numbers) are the slots.
        probes = []
        for fill, sid in ((0, 0), (255, 0xFFFFFFFF)):
            w = MessageWriter()
            scratch = Encoder(w)
            s = replace(sample, set_id=sid,
                        elements=[(bytes((fill,)) * width, None, 0, None)] * len(sample.elements))
            scratch.anon_set(r.family, r.table, s, "")
            if len(w.seqs) != 2:
                return None
            starts = [st for _seq, st in w.seqs] + [len(w.buffer)]
            probes.append([bytes(w.buffer[a:b]) for a, b in zip(starts, starts[1:], strict=False)])
        templates = []
        for (lo, hi), widths in zip(zip(*probes, strict=True),
                                    ([4], [4] + [width] * len(sample.elements)), strict=True):
            if len(lo) != len(hi):
                return None
            runs = _differing_runs(lo, hi)
            if [n for _o, n in runs] != widths:
                return None
            templates.append(Template(lo, [(o, f"{n}s") for o, n in runs]).compiled())
        at = cls(rt, set_at, set_slot, key_slot, *templates)
        if not at._same_as_general(r):
            return None
        return at

    def _same_as_general(self, r: Rule) -> bool:
        """The templates give the general path's bytes for ``r`` (sequence numbers apart)."""
        ours, theirs = MessageWriter(), MessageWriter()
        general = Encoder(theirs, anon_templates=False)
        try:
            general.rule(r)
        except InputError:
            return False
        mine = Encoder(ours)
        mine._anon_templates[(r.family, r.table, r.chain, anon_rule_shape(r.expr)[0])] = self  # type: ignore[index]
        if not mine._add_anon_templated(r):
            return False
        return _unsequenced(ours) == _unsequenced(theirs)


def _unsequenced(w: MessageWriter) -> bytes:
    buf = bytearray(w.buffer)
    for _seq, start in w.seqs:
        buf[start + 8:start + 12] = bytes(4)
    return bytes(buf)


def _differing_runs(a: bytes, b: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each run of bytes that differ between ``a`` and ``b`` (the
    netlink header's sequence number excluded)."""
    runs: list[tuple[int, int]] = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x == y or 8 <= i < 12:
            continue
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


class _Names(list):  # type: ignore[type-arg]
    """What each message of a batch is about; objects are named only when asked."""

    def __getitem__(self, i: Any) -> Any:
        v = list.__getitem__(self, i)
        if type(v) is _Rows:
            return str(v.run.rule(v.k0 + i - v.base))
        return v if isinstance(v, str) else str(v)


# ---- decoder ---------------------------------------------------------------------

def _s(v: bytes) -> str:
    return get_string(v)


def decode_table(family: int, attrs: dict[int, bytes]) -> Table:
    a = A["table"]
    fl = get_be32(attrs[a["flags"]]) if a["flags"] in attrs else 0
    return Table(FAMILY_NAME.get(family, str(family)), _s(attrs[a["name"]]),
                 [n for n, bit in TABLE_FLAGS.items() if fl & bit],
                 get_be64(attrs[a["handle"]]) if a["handle"] in attrs else None)


def decode_chain(family: int, attrs: dict[int, bytes]) -> Chain:
    a = A["chain"]
    fam = FAMILY_NAME.get(family, str(family))
    c = Chain(fam, _s(attrs[a["table"]]), _s(attrs[a["name"]]),
              handle=get_be64(attrs[a["handle"]]) if a["handle"] in attrs else None)
    if a["hook"] in attrs:
        h = attr_payloads(attrs[a["hook"]])
        hn = A["hook"]
        names = {v: k for k, v in hook_map(fam).items()}
        c.hook = names.get(get_be32(h[hn["hooknum"]]), str(get_be32(h[hn["hooknum"]])))
        prio = get_be32(h[hn["priority"]])
        c.prio = prio - (1 << 32) if prio & 0x80000000 else prio
        if hn["dev"] in h:
            c.dev = _s(h[hn["dev"]])
        elif hn["devs"] in h:
            devs = [_s(v) for _t, v in attr_payloads(h[hn["devs"]]).items()]
            devs = [get_string(h[hn["devs"]][s:e]) for _t, s, e in iter_attr_spans(h[hn["devs"]])]
            c.dev = devs[0] if len(devs) == 1 else devs
        c.type = _s(attrs[a["type"]]) if a["type"] in attrs else "filter"
        if a["policy"] in attrs:
            c.policy = "accept" if get_be32(attrs[a["policy"]]) == 1 else "drop"
    return c


def decode_set(family: int, attrs: dict[int, bytes]) -> tuple[Set, SetView]:
    a = A["set"]
    fam = FAMILY_NAME.get(family, str(family))
    flags = get_be32(attrs[a["flags"]]) if a["flags"] in attrs else 0
    key_type = get_be32(attrs[a["key_type"]]) if a["key_type"] in attrs else 0
    key_len = get_be32(attrs[a["key_len"]])
    try:
        types = split_type_id(key_type)
    except InputError:
        types = [datatype("integer")]
    if len(types) == 1 and types[0].size != key_len:
        from dataclasses import replace

        types = [replace(types[0], size=key_len)]
    data_type = get_be32(attrs[a["data_type"]]) if a["data_type"] in attrs else 0
    data_len = get_be32(attrs[a["data_len"]]) if a["data_len"] in attrs else 0
    name = _s(attrs[a["name"]])
    s = Set(fam, _s(attrs[a["table"]]), name,
            type=types[0].name if len(types) == 1 else [t.name for t in types],
            flags=[n for n, bit in SET_FLAG_NAMES if flags & bit],
            handle=get_be64(attrs[a["handle"]]) if a["handle"] in attrs else None)
    if flags & SET_MAP:
        if data_type == VERDICT_TYPE:
            s.map = "verdict"
        else:
            dts = split_type_id(data_type)
            # nft 1.0.6 spells a concatenated data type as one string; so do we.
            s.map = dts[0].name if len(dts) == 1 else " . ".join(d.name for d in dts)
    if a["timeout"] in attrs:
        s.timeout = get_be64(attrs[a["timeout"]]) // 1000
    if a["gc_interval"] in attrs and s.timeout is not None:
        gc = get_be32(attrs[a["gc_interval"]]) // 1000
        if gc:
            s.gc_interval = gc
    if a["policy"] in attrs and get_be32(attrs[a["policy"]]) == 1:
        s.policy = "memory"
    if a["desc"] in attrs:
        d = attr_payloads(attrs[a["desc"]])
        if A["set_desc"]["size"] in d and not flags & SET_ANONYMOUS:
            s.size = get_be32(d[A["set_desc"]["size"]])
    stmts: list[Any] = []
    if a["expr"] in attrs:
        stmts = RuleDecoder(fam).decode(parse_exprs(nest(1, attrs[a["expr"]])))
    elif a["expressions"] in attrs:
        stmts = RuleDecoder(fam).decode(parse_exprs(attrs[a["expressions"]]))
    if stmts:
        s.stmt = [{k: None} if k == "counter" else {k: v} for st in stmts for k, v in st.items()]
    ud = attrs.get(a["userdata"], b"")
    pos = 0
    data_host = False
    while pos + 2 <= len(ud):  # TLVs: type, length, value
        t, ln = ud[pos], ud[pos + 1]
        if t == SET_UDATA_COMMENT:
            s.comment = bytes(ud[pos + 2:pos + 2 + ln]).split(b"\0", 1)[0].decode()
        elif t == 1 and ln == 4:  # NFTNL_UDATA_SET_DATABYTEORDER: 1 is host order
            data_host = ud[pos + 2] == 1
        pos += 2 + ln
    view = SetView(name, flags, types, key_len, data_type, data_len, [])
    view.data_host = data_host
    if a["desc"] in attrs:  # an anonymous set's size too (a meter lists its size)
        d = attr_payloads(attrs[a["desc"]])
        if A["set_desc"]["size"] in d:
            view.size = get_be32(d[A["set_desc"]["size"]])
    return s, view


def decode_elements(view: SetView, attrs: dict[int, bytes]) -> None:
    """Add the elements of one NEWSETELEM dump message to ``view``."""
    e = A["set_elem"]
    lst = attrs.get(A["set_elem_list"]["elements"])
    if lst is None:
        return
    for _t, s, end in iter_attr_spans(lst):
        el = attr_payloads(lst, s, end)
        key = value_of_data(el[e["key"]]) if e["key"] in el else b""
        key_end = value_of_data(el[e["key_end"]]) if e["key_end"] in el else None
        flags = get_be32(el[e["flags"]]) if e["flags"] in el else 0
        data: Any = None
        if e["data"] in el:
            if view.data_type == VERDICT_TYPE:
                data = verdict_of_data(el[e["data"]])
            else:
                raw = value_of_data(el[e["data"]])
                dts = split_type_id(view.data_type) if view.data_type else []
                if len(dts) == 1:
                    host = view.data_host and dts[0] is T["integer"]  # ct zone, ... values
                    data = (T["hinteger"] if host else dts[0]).decode(raw)
                else:
                    parts, pos = [], 0
                    for dt in dts:
                        parts.append(dt.decode(raw[pos:pos + dt.size]))
                        pos += reg_size(dt.size)
                    data = {"concat": parts}
        if e["objref"] in el:  # an object map's element: the object's name
            data = _s(el[e["objref"]])
        extra: dict[str, Any] = {}
        if e["timeout"] in el:
            extra["timeout"] = get_be64(el[e["timeout"]]) // 1000
        if e["expiration"] in el:
            extra["expires"] = get_be64(el[e["expiration"]]) // 1000
        if e["userdata"] in el:
            ud = el[e["userdata"]]
            if len(ud) >= 2 and ud[0] == 0:  # NFTNL_UDATA_SET_ELEM_COMMENT
                extra["comment"] = bytes(ud[2:2 + ud[1]]).split(b"\0", 1)[0].decode()
        ex_stmts: list[Any] = []
        if e["expr"] in el:
            ex_stmts = RuleDecoder("inet").decode(parse_exprs(nest(1, el[e["expr"]])))
        elif e["expressions"] in el:
            ex_stmts = RuleDecoder("inet").decode(parse_exprs(el[e["expressions"]]))
        for st in ex_stmts:
            extra.update(st)
        if extra:
            view.elem_extra[key] = extra
        view.elements.append((key, key_end, flags, data))


def set_elements_json(view: SetView) -> list[Any]:
    """Elements of a named set as listed by nft (with timeouts where set)."""
    return render_elements(view, view.elem_extra or None)


def decode_rule(family: int, attrs: dict[int, bytes], sets: dict[str, SetView],
                shapes: RuleShapes | None = None) -> Rule:
    a = A["rule"]
    fam = FAMILY_NAME.get(family, str(family))
    r = Rule(fam, _s(attrs[a["table"]]), _s(attrs[a["chain"]]),
             handle=get_be64(attrs[a["handle"]]) if a["handle"] in attrs else None)
    if a["expressions"] in attrs:
        blob = attrs[a["expressions"]]
        if shapes is not None:
            r.expr = shapes.decode(fam, blob, sets)
        else:
            r.expr = RuleDecoder(fam, sets).decode(parse_exprs(blob))
    if a["userdata"] in attrs:
        ud = attrs[a["userdata"]]
        pos = 0
        while pos + 2 <= len(ud):
            t, ln = ud[pos], ud[pos + 1]
            if t == 0:
                r.comment = ud[pos + 2:pos + 2 + ln].split(b"\0", 1)[0].decode()
            pos += 2 + ln
    return r


# The keys of each object kind's body that `Encoder.obj` encodes (any other is refused).
OBJECT_KEYS = {"counter": {"packets", "bytes"}, "quota": {"bytes", "used", "inv"},
               "limit": {"rate", "per", "burst", "rate_unit", "burst_unit", "inv"},
               "ct helper": {"type", "protocol", "l3proto"},
               "ct timeout": {"protocol", "l3proto", "policy"},
               "ct expectation": {"protocol", "dport", "timeout", "size", "l3proto"},
               "synproxy": {"mss", "wscale", "flags"}}


def _ct_timeout_data(o: Obj) -> bytes:
    """NFTA_CT_TIMEOUT_* of a ct timeout object: the states given, in seconds (the
    kernel keeps its defaults for the others)."""
    b = o.body
    x = A["ct_timeout"]
    proto = b.get("protocol", "tcp")
    states = CT_TIMEOUT_STATES.get(proto)
    if states is None:
        raise InputError(f"{o}: protocol must be tcp or udp")
    policy = b.get("policy") or {}
    if not isinstance(policy, dict):
        raise InputError(f"{o}: policy must be an object of state: seconds")
    order = list(states)
    parts = []
    for state, secs in sorted(policy.items(), key=lambda kv: order.index(kv[0])
                              if kv[0] in order else -1):
        if state not in states:
            raise InputError(f"{o}: unknown {proto} state {state!r}")
        parts.append(be32(order.index(state) + 1, int(secs)))
    return (be16(x["l3proto"], L3_NUMS[b.get("l3proto", o.family)])
            + u8(x["l4proto"], L4_NUMS[proto]) + nest(x["data"], *parts))


def decode_obj(family: int, attrs: dict[int, bytes]) -> Obj | None:
    a = A["obj"]
    otype = get_be32(attrs[a["type"]])
    kind = OBJ_TYPE_NAMES.get(otype)
    if kind is None:
        return None
    d = attr_payloads(attrs[a["data"]]) if a["data"] in attrs else {}
    body: dict[str, Any]
    if kind == "counter":
        c = A["counter"]
        body = {"packets": get_be64(d.get(c["packets"], bytes(8))),
                "bytes": get_be64(d.get(c["bytes"], bytes(8)))}
    elif kind == "quota":
        q = A["quota"]
        body = {"bytes": get_be64(d[q["bytes"]]),
                "used": get_be64(d.get(q["consumed"], bytes(8))),
                "inv": bool(get_be32(d.get(q["flags"], bytes(4))) & 1)}
    elif kind == "ct helper":
        h = A["ct_helper"]
        body = {"type": _s(d[h["name"]]),
                "protocol": {6: "tcp", 17: "udp"}.get(d[h["l4proto"]][0], "tcp"),
                "l3proto": {2: "ip", 10: "ip6", 1: "inet"}.get(get_be16(d[h["l3proto"]]), "ip")}
    elif kind == "ct timeout":
        x = A["ct_timeout"]
        proto = {6: "tcp", 17: "udp"}.get(d[x["l4proto"]][0], "tcp")
        states = CT_TIMEOUT_STATES[proto]
        policy = {}
        for t, v in attr_payloads(d[x["data"]]).items() if x["data"] in d else ():
            if 1 <= t <= len(states):
                state = list(states)[t - 1]
                if get_be32(v) != states[state]:  # nft lists the states set off default
                    policy[state] = get_be32(v)
        body = {"protocol": proto,
                "l3proto": {2: "ip", 10: "ip6", 1: "inet"}.get(get_be16(d[x["l3proto"]]), "ip"),
                "policy": policy}
    elif kind == "ct expectation":
        x = A["ct_expect"]
        body = {"protocol": {6: "tcp", 17: "udp"}.get(d[x["l4proto"]][0], "tcp"),
                "dport": get_be16(d[x["dport"]]),
                "timeout": int.from_bytes(d[x["timeout"]][:4], sys.byteorder),
                "size": d[x["size"]][0],
                "l3proto": {2: "ip", 10: "ip6", 1: "inet"}.get(get_be16(d[x["l3proto"]]), "ip")}
    elif kind == "synproxy":
        body = synproxy_body(EXPRESSIONS["synproxy"].decode(
            {k: v for k, v in zip(("mss", "wscale", "flags"),
                                  (d.get(1), d.get(2), d.get(3)), strict=True) if v is not None}))
    else:
        lm = A["limit"]
        body = {"rate": get_be64(d[lm["rate"]]),
                "per": LIMIT_UNIT_NAMES.get(get_be64(d[lm["unit"]]), "second"),
                "burst": get_be32(d.get(lm["burst"], bytes(4)))}
        if get_be32(d.get(lm["flags"], bytes(4))) & 1:
            body["inv"] = True
        if get_be32(d.get(lm["type"], bytes(4))) == 1:  # bytes: listed in units, as nft
            r, ru = bytes_unit(body["rate"])
            body["rate"], body["rate_unit"] = r, ru
            bn, bu = bytes_unit(body.pop("burst"))
            body["burst"], body["burst_unit"] = bn, bu
    return Obj(kind, FAMILY_NAME.get(family, str(family)), _s(attrs[a["table"]]),
               _s(attrs[a["name"]]), body,
               get_be64(attrs[a["handle"]]) if a["handle"] in attrs else None)

