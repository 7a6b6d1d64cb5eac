"""Statements -> nf_tables expressions: the rule compiler.

This module owns how one rule's libnftables JSON statements ("match", "accept",
"counter", "snat", ...) become the kernel's expression list (payload, meta, cmp,
lookup, immediate, ...), including the protocol dependencies nft adds on the
way in, and the anonymous sets a rule needs.  `RuleCompiler.compile()` returns
encoded expressions (nfkit.nftables.expressions) plus those sets.

It stands on nfkit.nftables.expressions and types; it must not know about
messages, batches or the kernel's replies.
"""

from __future__ import annotations

import functools
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partialmethod
from typing import Any, Literal, NamedTuple

from nfkit.errors import InputError
from nfkit.nftables import setudata
from nfkit.nftables.expressions import (
    BITWISE_SHIFTS,
    CMP_OPS,
    DYNSET_F_EXPR,
    ELEM_INTERVAL_END,
    EXPRESSIONS,
    EXTHDR_F_PRESENT,
    EXTHDR_FIELDS,
    EXTHDR_OPS,
    FIB_F_PRESENT,
    FIB_FLAGS,
    FIB_RESULTS,
    LIMIT_UNITS,
    LOG_ALL,
    LOG_FLAGS,
    LOG_LEVELS,
    NAT_FLAGS,
    NAT_MAP_IPS,
    NAT_NETMAP,
    NAT_PROTO,
    OBJ_TYPES,
    OSF_F_VERSION,
    OSF_MAXGENRELEN,
    OSF_TTL,
    REJECT_TYPES,
    RT_KEYS,
    SET_ANONYMOUS,
    SET_CONCAT,
    SET_CONSTANT,
    SET_EVAL,
    SET_INTERVAL,
    SET_MAP,
    SET_OBJECT,
    SET_TIMEOUT,
    SOCKET_KEYS,
    T_FIB_TYPE,
    T_HINT32,
    T_INT32,
    VERDICT_DATA_TYPE,
    XFRM_DIRS,
    XFRM_KEYS,
    Element,
    bitwise,
    byteorder_hton,
    cmp,
    cmp_slot,
    expr,
    immediate,
    meta_load,
    objref,
    payload_load,
    payload_write_plan,
    synproxy_attrs,
    verdict_nest,
)
from nfkit.nftables.model import Set
from nfkit.nftables.schema import DYNSET_STATEMENTS, check_statement
from nfkit.nftables.templates import Chunks, Slot, StatementTemplate, ValueSlot, cut
from nfkit.nftables.types import (
    BYTE_UNITS,
    CT,
    ETHER_FOR_L3,
    ICMP_TYPE_DEPS,
    L3_PROTO,
    L4_OF_L3,
    L4_PROTO,
    LL,
    META,
    NH,
    PAYLOAD,
    TH,
    VERDICT_TYPE,
    Datatype,
    T,
    concat_type_id,
    datatype,
    reg_size,
)


def reg32(slot: int) -> int:
    """Register number for 32-bit slot ``slot`` (as nft numbers them)."""
    return 1 + slot // 4 if slot % 4 == 0 else 8 + slot


@dataclass
class Operand:
    """What a left-hand expression leaves in a register."""

    exprs: list[bytes]
    types: list[Datatype]
    sizes: list[int]  # bytes of each component
    payload: tuple[int, int, int] | None = None  # (base, byte offset, len) when shortenable
    mask: bytes | None = None  # sub-byte field: mask applied after the load
    shift: int = 0  # bits the field sits above bit 0 of the loaded bytes
    reg_bytes: int = 0  # total bytes in registers (concat components padded to 4)
    # nft's user data for a set keyed by this expression (`setudata`): its typeof record
    # (None: nft writes none) and its byte order (None: the datatype's)
    typeof: bytes | None = None
    order: int | None = None

    @property
    def dt(self) -> Datatype:
        return self.types[0]

    @property
    def size(self) -> int:
        return self.sizes[0]


@dataclass
class AnonSet:
    """An anonymous set a rule needs (created in the same transaction)."""

    name: str
    set_id: int
    flags: int
    key_types: list[Datatype]
    key_sizes: list[int]
    elements: list[tuple[bytes, bytes | None, int, bytes | None]]  # key, key_end, flags, data
    data_type: int = 0
    data_len: int = 0
    count: int = 0
    obj_type: int = 0  # an object map (NFT_SET_OBJECT): its elements' data are object names
    data_dt: Datatype | None = None  # a map's value type (its byte order goes in userdata)
    set_name: str | None = None  # a meter's set, named by the rule (else `template_name`)
    desc: bool = True  # NFTA_SET_DESC with `count` as its size (a meter without size: none)
    key_typeof: bytes | None = None  # the key expression's typeof (`setudata`)
    key_order: int | None = None  # the key expression's byte order (None: the datatype's)

    @property
    def template_name(self) -> str:
        """The name the kernel fills in with a free number: "__map%d" for a map (of data
        or verdicts), "__objmap%d" for a map of objects, "__set%d" for a set, as nft 1.0.6
        names them."""
        if self.flags & SET_OBJECT:
            return "__objmap%d"
        return "__map%d" if self.flags & SET_MAP else "__set%d"

    @property
    def key_len(self) -> int:
        if len(self.key_sizes) == 1:
            return self.key_sizes[0]
        return sum(reg_size(s) for s in self.key_sizes)


class _NoTemplate(Exception):
    """A rule that is not of a template's shape (`RuleCompiler._template_matches`)."""


class AnonRuleTemplate(NamedTuple):
    """A rule with one anonymous set of scalars (`RuleCompiler.anon_rule_template`):
    ``chunks`` are its expressions around its value slots, ``set_slot`` the slot that
    holds the set's id, ``sample`` the first rule's set (its flags, key, element count:
    every rule of the shape has the same), ``key_slot`` its elements' encoder (a slot
    of the key's width)."""

    chunks: Chunks
    set_slot: int
    sample: AnonSet
    key_slot: Slot


def _set_id_bytes(set_id: int) -> bytes:
    return set_id.to_bytes(4, "big")


def _plain_keys(elements: list[Any], width: int) -> bool:
    """Elements that are keys of ``width`` bytes alone (no range end, flags or data)."""
    return all(len(k) == width and ke is None and not f and d is None
               for k, ke, f, d in elements)


class CompileCtx:
    """Protocol context while one rule is compiled (what is known about the packet)."""

    __slots__ = ("family", "table", "l3", "l4", "iiftype", "vlan", "sets", "icmp_type")

    def __init__(self, family: str, table: str) -> None:
        self.family = family
        self.table = table
        self.l3: str | None = None  # "ip" / "ip6" once known
        self.l4: str | None = None  # "tcp", "udp", ... once known
        self.iiftype = False
        self.vlan = False
        self.sets: list[AnonSet] = []
        self.icmp_type = False  # the rule matched an icmp or icmpv6 type already


def _plen_mask(size: int, plen: int) -> bytes:
    bits = size * 8
    return (((1 << plen) - 1) << (bits - plen)).to_bytes(size, "big") if plen else bytes(size)


class RuleCompiler:
    """Compiles the statements of rules of one table family into expression bytes."""

    def __init__(self, family: str, table: str, counter: list[int] | None = None,
                 set_ids: list[int] | None = None,
                 queue_mode: Callable[[], str] | None = None) -> None:
        """``queue_mode`` answers "nft" when the kernel has the nft queue expression,
        else "xt" (the NFQUEUE target); asked when a queue statement is compiled
        (the caller caches the answer); without it, "nft"."""
        self.family = family
        self.queue_mode = queue_mode or _nft_queue
        self.table = table
        self.counter = counter if counter is not None else [0]
        self.set_ids = set_ids if set_ids is not None else [0]
        self.set_types: dict[str, Any] = {}
        self._cache: dict[Any, StatementTemplate] = {}  # statement key -> its template
        self._rules: dict[Any, Any] = {}  # rule shape -> Chunks (None: no template)
        self._last_operand: Operand | None = None
        # the value slots of the rule being compiled, recorded as they are emitted
        self.slots: list[ValueSlot] = []
        self.named_sets: dict[str, Any] = {}  # name -> model Set (for map data types)

    # ---- entry point -------------------------------------------------------------
    def compile(self, stmts: list[dict[str, Any]]) -> tuple[list[bytes], list[AnonSet]]:
        """Expression bytes for one rule and the anonymous sets it needs.

        Raises InputError naming the statement that cannot be translated."""
        shape = rule_shape(stmts)
        if shape is not None:
            key, rights = shape
            tpl = self._rules.get(key, _MISSING)
            if tpl is _MISSING:
                tpl = self._rules[key] = self._rule_template(stmts)
            if tpl is not None:
                statics, slots = tpl
                parts = [statics[0]]
                i = 1
                for (fast, size, op), right in zip(slots, rights, strict=False):
                    try:
                        v = fast(right)
                    except Exception:
                        if type(right) is str and right[:1] == "@":
                            break  # a set reference: the general path
                        try:
                            v = self._shifted(op, right)
                        except Exception:
                            break  # the general path reports it
                    if len(v) != size:
                        break  # not this shape after all: the general path below
                    parts.append(v)
                    parts.append(statics[i])
                    i += 1
                else:
                    return [b"".join(parts)], []
        return self._compile(stmts)

    def rule_template(self, key: Any, stmts: list[dict[str, Any]]) -> Chunks | None:
        """The template of rule shape ``key`` (of `rule_shape`), compiled from
        ``stmts`` the first time: `templates.Chunks` (static chunks around value
        slots) or None."""
        tpl = self._rules.get(key, _MISSING)
        if tpl is _MISSING:
            tpl = self._rules[key] = self._rule_template(stmts)
        return tpl

    def _rule_template(self, stmts: list[dict[str, Any]]) -> Chunks | None:
        """The chunks around the value slots of a rule made only of payload matches with
        scalar values and constant statements, or None when it cannot be one."""
        ctx, cur = self._template_start()
        try:
            for body, _ in self._template_matches(ctx, stmts, cur):
                if not self._template_scalar(ctx, body, cur):
                    return None
        except (_NoTemplate, InputError, TypeError, KeyError, ValueError, AttributeError):
            return None  # the general path reports it
        if ctx.sets:
            return None
        return cut(cur, self.slots, _fast_encoder)

    def anon_rule_template(self, stmts: list[dict[str, Any]]) -> AnonRuleTemplate | None:
        """The template of a rule of `anon_rule_shape` (payload matches against scalars
        and against one anonymous set of scalars, constant statements), compiled from
        ``stmts``; None when it cannot be one.  The set's id in the rule's lookup is a
        value slot too (found by compiling the lookup with two ids)."""
        ctx, cur = self._template_start()
        found: tuple[int, AnonSet, Operand] | None = None
        try:
            for body, opname in self._template_matches(ctx, stmts, cur):
                right = body["right"]
                if type(right) is not dict:
                    if not self._template_scalar(ctx, body, cur):
                        return None
                    continue
                k0 = len(self.slots)
                if found is not None or opname not in ("==", "!=") or list(right) != ["set"]:
                    return None
                n0 = len(ctx.sets)
                self._st_match(ctx, body, cur)
                s = ctx.sets[-1] if len(ctx.sets) == n0 + 1 else None
                op = self._last_operand
                if (s is None or op is None or len(self.slots) != k0
                        or s.flags != SET_ANONYMOUS | SET_CONSTANT or len(op.types) != 1
                        or s.data_type or s.obj_type or s.data_dt is not None
                        or not _plain_keys(s.elements, op.size)):
                    return None
                inv = opname == "!="
                low = self._lookup("__set%d", 1, None, inv, 0)
                high = self._lookup("__set%d", 1, None, inv, 0xFFFFFFFF)
                at = [i for i, (x, y) in enumerate(zip(low, high, strict=False)) if x != y]
                if (cur[-1] != self._lookup("__set%d", 1, None, inv, s.set_id)
                        or len(low) != len(high) or at != list(range(at[0], at[0] + 4))):
                    return None
                self.slots.append(ValueSlot(len(cur) - 1, at[0], 4, None))
                found = (k0, s, op)
        except (_NoTemplate, InputError, TypeError, KeyError, ValueError, AttributeError, IndexError):
            return None  # the general path reports it
        if found is None or len(ctx.sets) != 1:
            return None
        k, s, op = found
        chunks = cut(cur, self.slots, lambda o: _set_id_bytes if o is None else _fast_encoder(o))
        return AnonRuleTemplate(chunks, k, s, Slot(_fast_encoder(op), op.size, op))

    def _template_start(self) -> tuple[CompileCtx, list[bytes]]:
        """A fresh context and message list for compiling a rule template (slots reset)."""
        ctx = CompileCtx(self.family, self.table)
        if self.family in ("ip", "ip6"):
            ctx.l3 = self.family
        self.slots = []
        return ctx, []

    def _template_matches(self, ctx: CompileCtx, stmts: list[dict[str, Any]],
                          cur: list[bytes]) -> Iterator[tuple[dict[str, Any], str]]:
        """Each statement of ``stmts`` that is a payload match, as (its body, its operator),
        the constant statements between them compiled into ``cur`` on the way; raises
        _NoTemplate at any other statement."""
        for stmt in stmts:
            for kind, body in stmt.items():  # noqa: B007 - the one (key, value) of the statement
                pass
            if body is None:
                if kind not in _CONST_STMTS:
                    raise _NoTemplate
                getattr(self, "_st_" + kind)(ctx, body, cur)
                continue
            left = body["left"]
            opname = body.get("op", "==")
            if (kind != "match" or type(body) is not dict or not set(body) <= _MATCH_KEYS
                    or opname not in CMP_OPS or left in _DEP_LEFTS
                    or type(left) is not dict or list(left) != ["payload"]
                    or type(left["payload"]) is not dict or len(left["payload"]) != 2):
                raise _NoTemplate
            yield body, opname

    def _template_scalar(self, ctx: CompileCtx, body: dict[str, Any], cur: list[bytes]) -> bool:
        """Compile a payload match against one scalar into ``cur``, its value the last
        message's one value slot; False when it is not such a match."""
        right = body["right"]
        if type(right) not in (int, str) or str(right)[:1] == "@":
            return False
        k0 = len(self.slots)
        self._st_match(ctx, body, cur)
        if len(self.slots) != k0 + 1:
            return False
        slot = self.slots[k0]
        return slot.index == len(cur) - 1 and slot.op.dt.kind != "bitmask"

    def rule_values(self, slots: list[Any], rights: list[Any]) -> list[bytes] | None:
        """Each of ``rights`` encoded for its slot of a rule template (the slot's fast
        encoder, else the compiler's own, as `compile` does); None when one does not
        fit (the general path's work)."""
        out: list[bytes] = []
        for (fast, size, op), right in zip(slots, rights, strict=True):
            try:
                v = fast(right)
            except Exception:
                if type(right) is str and right[:1] == "@":
                    return None
                try:
                    v = self._shifted(op, right)
                except Exception:
                    return None
            if len(v) != size:
                return None
            out.append(v)
        return out

    def _compile(self, stmts: list[dict[str, Any]]) -> tuple[list[bytes], list[AnonSet]]:
        ctx = CompileCtx(self.family, self.table)
        if self.family in ("ip", "ip6"):
            ctx.l3 = self.family
        out: list[bytes] = []
        cache = self._cache
        slots = self.slots = []
        for stmt in stmts:
            if type(stmt) is not dict or len(stmt) != 1:
                raise InputError(f"statement {stmt!r} is not an object with one key")
            for kind, body in stmt.items():  # noqa: B007 - the one (key, value) of the statement
                pass
            # Encoding templates: a statement shape seen before is encoded by
            # patching only its value into the bytes compiled the first time.
            if kind == "match" and type(body) is dict and (
                    len(body) == 2 or len(body) == 3 and "op" in body):
                right = body.get("right")
                tr = type(right)
                if tr is int or (tr is str and right[:1] != "@"):  # type: ignore[index]
                    left = body.get("left")
                    p = left.get("payload") if type(left) is dict and len(left) == 1 else None
                    if p is not None and len(p) == 2:
                        key: Any = (ctx.l3, ctx.l4, ctx.iiftype, ctx.vlan, body.get("op", "=="),
                                    p.get("protocol"), p.get("field"), ctx.icmp_type)
                    else:
                        key = (ctx.l3, ctx.l4, ctx.iiftype, ctx.vlan, body.get("op", "=="),
                               _left_key(left), ctx.icmp_type)
                    tpl = cache.get(key)
                    if tpl is not None:
                        head, vslot, tail, after = tpl
                        try:
                            v = vslot.encode(right)  # type: ignore[union-attr]
                        except Exception:
                            v = self._shifted(vslot.operand, right)  # type: ignore[union-attr]
                        # a value of another width (`iifname "veth*"` compares only
                        # "veth") is not this template's: compiled in full below
                        if len(v) == vslot.width:  # type: ignore[union-attr]
                            ctx.l3, ctx.l4, ctx.iiftype, ctx.vlan, ctx.icmp_type = after
                            out += (head, v, tail)
                            continue
                    n0 = len(out)
                    k0 = len(slots)
                    check_statement(kind, body)
                    self._st_match(ctx, body, out)
                    slot = slots[k0] if len(slots) == k0 + 1 else None
                    # A relational match on a host-order value compares it in network
                    # order (byteorder): the slot's bytes are not the value's own then,
                    # so no template from it (only == and != keep host order).
                    if (key[4] in CMP_OPS and left not in _DEP_LEFTS and slot is not None
                            and not (p is not None and (p.get("protocol"), p.get("field"))
                                     in ICMP_TYPE_DEPS)  # its dependency depends on the rule
                            and slot.index == len(out) - 1 and slot.op.dt.kind != "bitmask"
                            and (key[4] in ("==", "!=") or slot.op.dt.big_endian)):
                        cache[key] = StatementTemplate.of(
                            cut(out[n0:], [slot], _fast_encoder, base=n0),
                            (ctx.l3, ctx.l4, ctx.iiftype, ctx.vlan, ctx.icmp_type))
                    continue
            elif kind in _CONST_STMTS:
                key2: Any = kind if body is None else repr(stmt)
                if kind == "reject":  # its icmp kind and dependencies follow the context
                    key2 = (key2, ctx.l3, ctx.l4, ctx.iiftype, ctx.vlan)
                hit = cache.get(key2)
                if hit is None:
                    n0 = len(out)
                    check_statement(kind, body)
                    getattr(self, "_st_" + kind)(ctx, body, out)
                    hit = cache[key2] = StatementTemplate.of(
                        cut(out[n0:], [], _fast_encoder), (ctx.l3, ctx.l4, ctx.iiftype, ctx.vlan))
                    del out[n0:]
                elif kind == "reject":
                    ctx.l3, ctx.l4, ctx.iiftype, ctx.vlan = hit.context
                out.append(hit.head)
                continue
            fn = getattr(self, "_st_" + kind.replace(" ", "_"), None)
            if fn is None:
                raise InputError(f"unknown statement {kind!r}")
            check_statement(kind, body)
            try:
                fn(ctx, body, out)
            except InputError:
                raise
            except (TypeError, KeyError, ValueError, AttributeError) as exc:
                raise InputError(f"statement {kind!r}: malformed ({exc})") from None
        return out, ctx.sets

    # ---- dependencies ------------------------------------------------------------
    def _dep(self, ctx: CompileCtx, proto: str, out: list[bytes]) -> None:
        if proto in L3_PROTO:
            if ctx.l3 == proto:
                return
            if ctx.l3 is not None and ctx.family != "inet":
                raise InputError(f"{proto} header match in a {ctx.l3} context")
            if ctx.family == "inet":
                out.append(meta_load(1, 15))
                out.append(cmp(1, 0, bytes((L3_PROTO[proto],))))
            elif ctx.family == "netdev":
                out.append(meta_load(1, 1))
                out.append(cmp(1, 0, ETHER_FOR_L3[proto].to_bytes(2, "big")))
            elif ctx.family == "bridge":
                out.append(payload_load(1, LL, 12, 2))
                out.append(cmp(1, 0, ETHER_FOR_L3[proto].to_bytes(2, "big")))
            ctx.l3 = proto
        elif proto in L4_PROTO:
            if ctx.l4 == proto:
                return
            if proto == "icmp" and ctx.family == "ip6" or proto == "icmpv6" and ctx.family == "ip":
                raise InputError(f"{proto} match in the {ctx.family} family")
            if proto in L4_OF_L3 and ctx.family in ("inet", "bridge", "netdev"):
                # nft ties icmp, igmp (ipv4) and icmpv6 to their family first
                self._dep(ctx, L4_OF_L3[proto], out)
            out.append(meta_load(1, 16))
            out.append(cmp(1, 0, bytes((L4_PROTO[proto],))))
            ctx.l4 = proto
        elif proto in ("ether", "vlan"):
            if ctx.family in ("ip", "ip6", "inet", "netdev") and not ctx.iiftype:
                out.append(meta_load(1, 8))
                out.append(cmp(1, 0, (1).to_bytes(2, "little")))
                ctx.iiftype = True
            if proto == "vlan" and not ctx.vlan:
                out.append(payload_load(1, LL, 12, 2))
                out.append(cmp(1, 0, (0x8100).to_bytes(2, "big")))
                ctx.vlan = True

    # ---- left-hand side ----------------------------------------------------------
    def load(self, ctx: CompileCtx, left: Any, out: list[bytes], slot: int = 0,
             present: bool = False, data_types: list[Datatype] | None = None) -> Operand:
        """Emit what loads ``left`` into register slot ``slot``; describe the result.
        ``data_types``: the value types an anonymous map in ``left`` has (NAT)."""
        if not isinstance(left, dict) or len(left) != 1:
            raise InputError(f"expression {left!r} is not an object with one key")
        (kind, body), = left.items()
        reg = reg32(slot)
        if kind == "payload":
            if "protocol" in body:
                proto, fld = body["protocol"], body["field"]
                spec = PAYLOAD.get((proto, fld))
                if spec is None:
                    raise InputError(f"unknown payload field {proto} {fld}")
                self._dep(ctx, proto, out)
                if (proto, fld) in ICMP_TYPE_DEPS and not ctx.icmp_type:
                    self._icmp_type_dep(ctx, proto, ICMP_TYPE_DEPS[(proto, fld)], out)
                base, boff, blen, tname = spec
                dt = T[tname]
            else:
                base = {"ll": LL, "nh": NH, "th": TH, "ih": 3}[body["base"]]
                boff, blen = int(body["offset"]), int(body["len"])
                dt = T_INT32
            off, start = divmod(boff, 8)
            nbytes = (start + blen + 7) // 8
            out.append(payload_load(reg, base, off, nbytes))
            mask = None
            shift = nbytes * 8 - start - blen
            if start or blen % 8:
                mask = (((1 << blen) - 1) << shift).to_bytes(nbytes, "big")
                out.append(bitwise(reg, nbytes, mask, bytes(nbytes)))
            size = nbytes
            op = Operand(out, [dt], [size], (base, off, nbytes) if mask is None else None,
                         mask, shift, order=setudata.ORDER_BIG)
            if "protocol" in body and mask is None:
                op.typeof = setudata.payload(proto, fld, blen if tname == "integer" else None)
            elif mask is None:  # raw: nft keeps it raw, but @th,0,16 and @th,16,16 (th's ports)
                th_port = ("sport", "dport")[boff // 16] \
                    if body["base"] == "th" and blen == 16 and boff in (0, 16) else None
                op.typeof = setudata.payload("th", th_port, None) if th_port else \
                    setudata.raw_payload(base + 1, boff, blen)
            return op
        if kind == "meta":
            key = body["key"]
            if key not in META:
                raise InputError(f"unknown meta key {key!r}")
            num, tname, size = META[key]
            out.append(meta_load(reg, num))
            return Operand(out, [T[tname]], [size], typeof=setudata.meta(num),
                           order=setudata.ORDER_BIG if key in setudata.META_BIG_ENDIAN
                           else setudata.ORDER_HOST)
        if kind == "ct":
            key = body["key"]
            fam = body.get("family")
            ck = f"{fam} {key}" if fam and key in ("saddr", "daddr") else key
            if ck not in CT:
                raise InputError(f"unknown ct key {key!r}")
            num, tname, size = CT[ck]
            if key in ("saddr", "daddr") and not fam:
                fam = ctx.l3 or ("ip6" if ctx.family == "ip6" else "ip")
                tname, size = ("ipv6_addr", 16) if fam == "ip6" else ("ipv4_addr", 4)
            parts = [("dreg", reg), ("key", num)]
            direction = None
            if "dir" in body:
                direction = {"original": 0, "reply": 1}[body["dir"]]
                parts.append(("direction", direction))
            out.append(EXPRESSIONS["ct"].encode(*parts))
            return Operand(out, [T[tname]], [size], typeof=setudata.ct(num, direction),
                           order=setudata.ORDER_BIG if ck in setudata.CT_BIG_ENDIAN
                           or key in ("saddr", "daddr") else setudata.ORDER_HOST)
        if kind == "concat":
            for part in body:
                if isinstance(part, dict) and "payload" in part and \
                        "protocol" in part["payload"]:
                    self._dep(ctx, part["payload"]["protocol"], out)
            types: list[Datatype] = []
            sizes: list[int] = []
            typeofs: list[bytes | None] = []
            s = slot
            for part in body:
                op = self.load(ctx, part, out, s)
                types += op.types
                sizes += op.sizes
                typeofs.append(op.typeof if len(op.types) == 1 else None)
                s += sum(reg_size(z) // 4 for z in op.sizes)
            return Operand(out, types, sizes, typeof=setudata.concat(typeofs),
                           order=setudata.ORDER_INVALID)
        if kind in ("&", "|", "^"):
            inner, value = body
            op = self.load(ctx, inner, out, slot)
            v = self.encode_value(op.dt, op.size, value)
            if kind == "&":
                out.append(bitwise(reg, op.size, v, bytes(op.size)))
            elif kind == "|":
                inv = bytes(b ^ 0xFF for b in v)
                out.append(bitwise(reg, op.size, inv, v))
            else:
                out.append(bitwise(reg, op.size, b"\xff" * op.size, v))
            return Operand(out, op.types, op.sizes)
        if kind == "map":
            op = self.load(ctx, body["key"], out, slot)
            data = body["data"]
            if isinstance(data, dict) and "set" in data and data_types:
                return self._anon_map(ctx, op, data["set"], data_types, out, reg)
            if not (isinstance(data, str) and data.startswith("@")):
                raise InputError("anonymous maps are supported only as NAT addresses (the "
                                 "type of their values is known there); use a named map")
            named = self.named_sets.get(data[1:])
            if named is None or named.map is None:
                raise InputError(f"map {data[1:]!r} not known (list it in the same file)")
            from nfkit.nftables.types import split_type_id

            dtype, dlen, _ddt = set_data(named)
            dts = split_type_id(dtype)
            out.append(self._lookup(data[1:], reg, reg, False))
            del op
            return Operand(out, dts, [t.size for t in dts])
        if kind == "numgen":
            mode = {"inc": 0, "random": 1}[body["mode"]]
            out.append(EXPRESSIONS["numgen"].encode(("dreg", reg), ("modulus", body["mod"]),
                            ("type", mode), ("offset", body.get("offset", 0))))
            return Operand(out, [T_HINT32], [4], typeof=setudata.numgen(
                mode, body["mod"], body.get("offset", 0)))
        if kind in ("jhash", "symhash"):
            if kind == "jhash":
                inner = body["expr"]
                for part in inner.get("concat", [inner]) if isinstance(inner, dict) else []:
                    if isinstance(part, dict) and "payload" in part and \
                            "protocol" in part["payload"]:
                        self._dep(ctx, part["payload"]["protocol"], out)
                sub: list[bytes] = []
                # the hashed value in the next register, as nft allocates it
                op = self.load(ctx, body["expr"], sub, slot + 4)
                out.extend(sub)
                nbytes = sum(reg_size(z) for z in op.sizes) if len(op.sizes) > 1 else op.size
                parts = [("sreg", reg32(slot + 4)), ("dreg", reg), ("len", nbytes),
                         ("modulus", body["mod"])]
                if "seed" in body:
                    parts.append(("seed", body["seed"]))
                parts += [("offset", body.get("offset", 0)), ("type", 0)]
            else:
                parts = [("dreg", reg), ("modulus", body["mod"]),
                         ("offset", body.get("offset", 0)), ("type", 1)]
            out.append(EXPRESSIONS["hash"].encode(*parts))
            return Operand(out, [T_HINT32], [4], typeof=setudata.hash_(
                kind == "symhash", body["mod"], body.get("offset", 0),
                body.get("seed") if kind == "jhash" else None))
        if kind in EXTHDR_OPS:
            return self._exthdr(ctx, kind, body, out, reg, present)
        if kind == "socket":
            sk = SOCKET_KEYS.get(body["key"])
            if sk is None:
                raise InputError(f"socket key {body['key']!r} is not supported by nfkit")
            num, tname, size = sk
            parts = [("key", num), ("dreg", reg)]
            if body["key"] == "cgroupv2":  # the ancestor's level to compare at
                if "level" not in body:
                    raise InputError("socket cgroupv2 needs a level (nft 1.0.6's JSON listing "
                                     "leaves it out)")
                parts.append(("level", body["level"]))
            elif "level" in body:
                raise InputError(f"socket {body['key']} has no level")
            out.append(EXPRESSIONS["socket"].encode(*parts))
            return Operand(out, [T[tname]], [size], order=setudata.ORDER_HOST,
                           typeof=None if body["key"] == "cgroupv2" else setudata.socket(num))
        if kind == "rt":
            fam = body.get("family") or ctx.l3
            sk = RT_KEYS.get((body["key"], fam)) or RT_KEYS.get((body["key"], None))
            if sk is None:
                raise InputError(f"rt {body['key']!r} is not supported by nfkit here (family "
                                 f"{fam or 'unknown'})")
            num, tname, size = sk
            out.append(EXPRESSIONS["rt"].encode(("dreg", reg), ("key", num)))
            return Operand(out, [T[tname]], [size])
        if kind == "osf":
            op = self._osf(body, out, reg)
            op.typeof = setudata.osf()
            return op
        if kind == "ipsec":
            return self._ipsec(ctx, body, out, reg)
        if kind in BITWISE_SHIFTS:
            inner, value = body
            op = self.load(ctx, inner, out, slot)
            if type(value) is not int or not 0 <= value < op.size * 8:
                raise InputError(f"shift {kind} by {value!r}: not a bit count of the value")
            out.append(EXPRESSIONS["bitwise"].encode(
                ("sreg", reg), ("dreg", reg), ("len", op.size), ("op", BITWISE_SHIFTS[kind]),
                ("data", value.to_bytes(4, sys.byteorder))))
            return Operand(out, op.types, op.sizes)
        if kind == "fib":
            result = FIB_RESULTS[body["result"]]
            flags = body.get("flags", [])
            if isinstance(flags, str):
                flags = [flags]
            fl = 0
            for f in flags:
                if f not in FIB_FLAGS:
                    raise InputError(f"fib: unknown flag {f!r}")
                fl |= FIB_FLAGS[f]
            if present:
                fl |= FIB_F_PRESENT
            out.append(EXPRESSIONS["fib"].encode(("dreg", reg), ("result", result),
                            ("flags", fl)))
            dt = {1: T["iface_index"], 2: T["ifname"], 3: T_FIB_TYPE}[result]
            return Operand(out, [dt], [dt.size], typeof=setudata.fib(result, fl))
        raise InputError(f"unknown expression {kind!r}")

    def _icmp_type_dep(self, ctx: CompileCtx, proto: str, types: str | list[str],
                       out: list[bytes]) -> None:
        """`icmp type { echo-reply, echo-request }` before `icmp id`, `icmp type redirect`
        before `icmp gateway`: the message types the field exists in, as nft adds them."""
        dt = T[PAYLOAD[(proto, "type")][3]]
        out.append(payload_load(1, TH, 0, 1))
        if isinstance(types, list):
            s = self._anon_set(ctx, Operand([], [dt], [1]), types)
            out.append(self._lookup("__set%d", 1, None, False, s.set_id))
        else:
            out.append(cmp(1, 0, dt.encode(types, 1)))
        ctx.icmp_type = True

    def _exthdr(self, ctx: CompileCtx, kind: str, body: dict[str, Any], out: list[bytes],
                reg: int, present: bool = False, sreg: int | None = None) -> Operand:
        """An extension header or option field (or, with ``present``, whether it is there)
        loaded into ``reg``, or written from ``sreg``."""
        op_code, dep = EXTHDR_OPS[kind]
        if kind == "tcp option" and "base" in body and "name" not in body:
            return self._raw_tcp_option(body, out, reg, present, sreg)
        spec = EXTHDR_FIELDS.get((kind, "sack" if (kind, body["name"]) == ("tcp option", "sack0")
                                  else body["name"]))
        if spec is None:
            raise InputError(f"{kind} {body['name']!r} is not supported by nfkit")
        htype, fields = spec
        field = body.get("field")
        if present and field is not None or not present and field is None:
            raise InputError(f"{kind} {body['name']}: a field is compared, a header or "
                             "option without one is tested with true/false (exists/missing)")
        if "offset" in body:  # nft's JSON for rt0: the field `offset` places after the named one
            names = list(fields)
            at = names.index(str(field)) + body["offset"] if str(field) in names else -1
            if (kind, body["name"]) != ("exthdr", "rt0") or not 0 <= at < len(names):
                raise InputError(f"{kind} {body['name']} {field}: offset {body['offset']!r} "
                                 "names no field")
            field = names[at]
        boff, blen, tname = (0, 8, "boolean") if present else fields.get(str(field), (-1, 0, ""))
        if boff < 0:
            raise InputError(f"{kind} {body['name']} field {field!r} is not supported by nfkit")
        off, start = divmod(boff, 8)
        nbytes = (start + blen + 7) // 8
        shift = nbytes * 8 - start - blen
        mask = (((1 << blen) - 1) << shift).to_bytes(nbytes, "big") if start or blen % 8 \
            else None
        if mask is not None and sreg is not None:
            raise InputError(f"{kind} {body['name']} {field}: a field of part of a byte "
                             "cannot be set")
        if dep is not None:
            self._dep(ctx, dep, out)
        parts: list[tuple[str, Any]] = [("sreg", sreg) if sreg is not None else ("dreg", reg),
                                        ("type", htype), ("offset", off), ("len", nbytes)]
        if present:
            parts.append(("flags", EXTHDR_F_PRESENT))
        parts.append(("op", op_code))
        out.append(EXPRESSIONS["exthdr"].encode(*parts))
        if mask is not None:  # `frag more-fragments`: the covering bytes, masked (as nft)
            out.append(bitwise(reg, nbytes, mask, bytes(nbytes)))
            return Operand(out, [T[tname]], [nbytes], None, mask, shift)
        return Operand(out, [T[tname]], [nbytes], typeof=_exthdr_typeof(
            kind, op_code, htype, str(body["name"]), list(fields).index(str(field))
            if not present else None), order=setudata.ORDER_BIG)

    def _raw_tcp_option(self, body: dict[str, Any], out: list[bytes], reg: int, present: bool,
                        sreg: int | None) -> Operand:
        """`tcp option @kind,offset,length` (whole bytes of any option, as nft loads them) or,
        with ``present``, `tcp option KIND exists`."""
        kind_num, boff, blen = (int(body.get(k, -1)) for k in ("base", "offset", "len"))
        if not 0 <= kind_num <= 255:
            raise InputError(f"tcp option @{kind_num}: the option kind is 0-255")
        if present:
            boff, blen = 0, 8
        if boff < 0 or blen <= 0 or boff % 8 or blen % 8 or blen > 128:
            raise InputError(f"tcp option @{kind_num},{boff},{blen}: nfkit reads whole bytes of "
                             "an option (offset and length multiples of 8, at most 128 bits)")
        if sreg is not None:
            raise InputError(f"tcp option @{kind_num},{boff},{blen}: a raw option is not set "
                             "by nfkit")
        parts: list[tuple[str, Any]] = [("dreg", reg), ("type", kind_num), ("offset", boff // 8),
                                        ("len", blen // 8)]
        if present:
            parts.append(("flags", EXTHDR_F_PRESENT))
        parts.append(("op", EXTHDR_OPS["tcp option"][0]))
        out.append(EXPRESSIONS["exthdr"].encode(*parts))
        return Operand(out, [T["boolean"] if present else T_INT32], [blen // 8])

    def _osf(self, body: dict[str, Any], out: list[bytes], reg: int) -> Operand:
        """`osf [ttl loose|skip] name|version`: the OS name (or name:version) the packet's
        fingerprint matches, a string padded to NFT_OSF_MAXGENRELEN."""
        ttl = body.get("ttl")
        if ttl is not None and ttl not in OSF_TTL:
            raise InputError(f"osf: unknown ttl option {ttl!r} (loose, skip)")
        if body["key"] not in ("name", "version"):
            raise InputError(f"osf: unknown key {body['key']!r} (name, version)")
        parts: list[tuple[str, Any]] = [("dreg", reg), ("ttl", OSF_TTL[ttl] if ttl else 0)]
        if body["key"] == "version":
            parts.append(("flags", OSF_F_VERSION))
        out.append(EXPRESSIONS["osf"].encode(*parts))
        return Operand(out, [T["string"]], [OSF_MAXGENRELEN])

    def _ipsec(self, ctx: CompileCtx, body: dict[str, Any], out: list[bytes],
               reg: int) -> Operand:
        """`ipsec in|out [spnum N] reqid|spi|ip saddr|...`: the kernel's xfrm expression,
        a field of the packet's security path (input) or of its route's state (output)."""
        key, fam = body["key"], body.get("family")
        if fam not in (None, "ip", "ip6"):
            raise InputError(f"ipsec: unknown family {fam!r}")
        if key in ("saddr", "daddr"):
            fam = fam or "ip"  # as nft's JSON reader: an address without family is IPv4
        elif fam is not None:
            raise InputError(f"ipsec {key}: a family goes with saddr or daddr only")
        spec = XFRM_KEYS.get((key, fam))
        if spec is None:
            raise InputError(f"ipsec: unknown key {key!r} (reqid, spi, saddr, daddr)")
        d = body.get("dir")
        if d not in XFRM_DIRS:
            raise InputError(f"ipsec: direction {d!r} is not in or out")
        spnum = body.get("spnum", 0)
        if type(spnum) is not int or not 0 <= spnum <= 255:
            raise InputError(f"ipsec: spnum {spnum!r} is not 0-255")
        num, tname, size = spec
        out.append(EXPRESSIONS["xfrm"].encode(("dreg", reg), ("key", num), ("dir", XFRM_DIRS[d]),
                                              ("spnum", spnum)))
        return Operand(out, [T[tname]], [size])

    def _anon_map(self, ctx: CompileCtx, op: Operand, items: Any, dts: list[Datatype],
                  out: list[bytes], reg: int) -> Operand:
        """A lookup in an anonymous map of ``dts`` values keyed like ``op``
        (`dnat to tcp dport map { 80 : 192.0.2.1 . 8080 }`)."""
        if not isinstance(items, list) or not all(isinstance(i, list) and len(i) == 2
                                                  for i in items):
            raise InputError("anonymous map: elements must be [key, value] pairs")
        dop = Operand([], dts, [t.size for t in dts])
        data = [self.encode_value(dts[0], dts[0].size, v) if len(dts) == 1
                else self.encode_key(dop, v) for _k, v in items]
        dtype = dts[0].id if len(dts) == 1 else concat_type_id(dts)
        dlen = dts[0].size if len(dts) == 1 else sum(reg_size(t.size) for t in dts)
        s = self._anon_set(ctx, op, [k for k, _v in items], data, dtype, dlen)
        if len(dts) == 1:
            s.data_dt = dts[0]
        out.append(self._lookup(s.template_name, reg, reg, False, s.set_id))
        return Operand(out, dts, [t.size for t in dts])

    # ---- values ------------------------------------------------------------------
    def encode_value(self, dt: Datatype, size: int, value: Any) -> bytes:
        if isinstance(value, dict) and len(value) == 1 and "|" in value:
            v = 0
            for item in value["|"]:
                v |= int.from_bytes(self.encode_value(dt, size, item), "big")
            return v.to_bytes(size, "big")
        b = dt.encode(value, size)
        if len(b) != size and dt.kind != "ifname":
            if dt.kind == "int" and len(b) < size:
                return b.rjust(size, b"\0") if dt.big_endian else b.ljust(size, b"\0")
            raise InputError(f"{value!r} does not fit a {size}-byte {dt.name}")
        return b

    def _shifted(self, op: Operand, value: Any) -> bytes:
        """Value bytes for a (possibly sub-byte) operand."""
        if op.mask is None:
            return self.encode_value(op.dt, op.size, value)
        v = int.from_bytes(op.dt.encode(value, 4 if op.dt.size == 0 else op.dt.size), "big"
                           if op.dt.big_endian else "little")
        top = int.from_bytes(op.mask, "big") >> op.shift
        if v > top:
            raise InputError(f"{value!r} exceeds the range 0-{top} of {op.dt.name}")
        return (v << op.shift).to_bytes(op.size, "big")

    def encode_key(self, op: Operand, value: Any) -> bytes:
        """Set key bytes for ``value`` (concat components padded to 32 bits)."""
        if len(op.types) == 1:
            return self._shifted(op, value)
        if not (isinstance(value, dict) and "concat" in value):
            raise InputError(f"{value!r} is not a concatenation for a concatenated key")
        parts = value["concat"]
        if len(parts) != len(op.types):
            raise InputError(f"concatenation {parts!r} has {len(parts)} parts, "
                             f"key has {len(op.types)}")
        return b"".join(self.encode_value(t, s, p).ljust(reg_size(s), b"\0")
                        for t, s, p in zip(op.types, op.sizes, parts, strict=False))

    def _interval(self, op: Operand, value: Any) -> tuple[bytes, bytes]:
        """(first, last) key bytes of a value, prefix or range."""
        if isinstance(value, dict) and "prefix" in value:
            p = value["prefix"]
            first = self.encode_key(op, p["addr"])
            n = int.from_bytes(first, "big")
            host = len(first) * 8 - int(p["len"])
            n &= ~((1 << host) - 1)
            size = len(first)
            return n.to_bytes(size, "big"), (n | ((1 << host) - 1)).to_bytes(size, "big")
        if isinstance(value, dict) and "range" in value:
            lo, hi = value["range"]
            return self.encode_key(op, lo), self.encode_key(op, hi)
        k = self.encode_key(op, value)
        return k, k

    # ---- match -------------------------------------------------------------------
    def _st_match(self, ctx: CompileCtx, body: dict[str, Any], out: list[bytes]) -> None:
        opname = body.get("op", "==")
        left, right = body["left"], body["right"]
        # Explicit protocol matches are dependencies already satisfied.
        if isinstance(right, bool) and isinstance(left, dict) and len(left) == 1 and \
                next(iter(left)) in EXTHDR_OPS:
            # `exthdr frag exists`, `tcp option sack-perm exists`: NFT_EXTHDR_F_PRESENT.
            if opname not in ("==", "!="):
                raise InputError(f"operator {opname!r} on exists/missing")
            self.load(ctx, left, out, present=True)
            out.append(cmp(1, CMP_OPS[opname], bytes((int(right),))))
            return
        if isinstance(right, bool) and isinstance(left, dict) and "fib" in left:
            # `fib daddr oif exists|missing`: the fib expression answers whether the
            # route exists (NFTA_FIB_F_PRESENT): a 32-bit register in host order, 0 or 1.
            if opname not in ("==", "!="):
                raise InputError(f"fib: operator {opname!r} on exists/missing")
            self.load(ctx, left, out, present=True)
            out.append(cmp(1, CMP_OPS[opname], int(right).to_bytes(4, sys.byteorder)))
            return
        op = self.load(ctx, left, out)
        self._last_operand = op
        if isinstance(right, dict) and isinstance(right.get("set"), list) \
                and len(right["set"]) == 1 and opname in ("==", "!=") \
                and not (isinstance(right["set"][0], dict) and ("concat" in right["set"][0]
                                                              or "elem" in right["set"][0])) \
                and not (op.dt.kind == "bitmask" and opname == "!="):
            # nft compares a one-element anonymous set's element instead (`tcp dport { 22 }`
            # loads as `tcp dport 22`; a flag as `tcp flags syn`, which tests the bit)
            right = right["set"][0]
            if op.dt.kind == "bitmask":
                opname = "in"
        if opname == "==" and isinstance(right, str) and not right.startswith("@"):
            if left == {"meta": {"key": "l4proto"}} or left in (
                    {"payload": {"protocol": "ip", "field": "protocol"}},
                    {"payload": {"protocol": "ip6", "field": "nexthdr"}}):
                name = {"ipv6-icmp": "icmpv6"}.get(right, right)
                if name in L4_PROTO:
                    ctx.l4 = name
            elif left == {"meta": {"key": "nfproto"}}:
                ctx.l3 = {"ipv4": "ip", "ipv6": "ip6"}.get(right, ctx.l3)
            elif right in ("ip", "ip6") and left in (
                    {"payload": {"protocol": "ether", "field": "type"}},
                    {"meta": {"key": "protocol"}}):
                ctx.l3 = right  # "ether type ip ip saddr ...": one dependency, as nft
            elif right in ("vlan", "8021q") and left == {
                    "payload": {"protocol": "ether", "field": "type"}}:
                ctx.vlan = True  # "ether type vlan vlan id 6": the same
            elif left == {"meta": {"key": "iiftype"}} and right == "ether":
                ctx.iiftype = True
        if left in ({"payload": {"protocol": "icmp", "field": "type"}},
                    {"payload": {"protocol": "icmpv6", "field": "type"}}) and opname == "==":
            ctx.icmp_type = True  # nft adds no type dependency after a type match
        if isinstance(right, str) and right.startswith("@"):
            inv = opname == "!="
            out.append(self._lookup(right[1:], 1, None, inv))
            return
        if isinstance(right, dict) and "set" in right:
            s = self._anon_set(ctx, op, right["set"])
            out.append(self._lookup("__set%d", 1, None, opname == "!=", s.set_id))
            return
        if op.dt.kind in ("bitmask", "ctlabel") and (opname == "in" or isinstance(right, list)
                                                     or op.dt.kind == "ctlabel"):
            if opname not in ("in", "==", "!="):
                raise InputError(f"operator {opname!r} on flags")
            mask = self.encode_value(op.dt, op.size, right)
            out.append(bitwise(1, op.size, mask, bytes(op.size)))
            out.append(cmp(1, 0 if opname == "!=" else 1, bytes(op.size)))
            return
        if opname == "in":
            opname = "=="
        if isinstance(right, dict) and "range" in right:
            lo, hi = self._interval(op, right)
            if not op.dt.big_endian and op.size > 1 and len(op.types) == 1:
                out.append(byteorder_hton(op.size))
                lo, hi = lo[::-1], hi[::-1]
            if opname == "==":
                out.append(cmp(1, 5, lo))
                out.append(cmp(1, 3, hi))
            elif opname == "!=":
                out.append(EXPRESSIONS["range"].encode(("sreg", 1), ("op", 1),
                                ("from_data", lo), ("to_data", hi)))
            else:
                raise InputError(f"operator {opname!r} with a range")
            return
        if isinstance(right, dict) and "prefix" in right:
            plen = int(right["prefix"]["len"])
            first, _ = self._interval(op, right)
            if op.payload is not None and plen % 8 == 0 and plen:
                # nft loads only the prefix bytes.
                base, off, _n = op.payload
                out[-1] = payload_load(1, base, off, plen // 8)
                out.append(cmp(1, CMP_OPS[opname], first[: plen // 8]))
            elif plen % 8 == 0 and plen and len(op.types) == 1 and op.mask is None \
                    and op.dt.kind in ("ipv4", "ipv6"):
                # ... and compares only the prefix bytes of other loads.
                out.append(cmp(1, CMP_OPS[opname], first[: plen // 8]))
            else:
                out.append(bitwise(1, op.size, _plen_mask(op.size, plen), bytes(op.size)))
                out.append(cmp(1, CMP_OPS[opname], first))
            return
        if opname not in CMP_OPS:
            raise InputError(f"unknown operator {opname!r}")
        value = self._shifted(op, right)
        if opname not in ("==", "!=") and not op.dt.big_endian and op.size > 1 \
                and op.mask is None and len(op.types) == 1:
            # nft compares host-order values in network order (byteorder hton).
            out.append(byteorder_hton(op.size))
            out.append(cmp(1, CMP_OPS[opname], value[::-1]))
            return
        b, offset = cmp_slot(1, CMP_OPS[opname], value)
        out.append(b)
        self.slots.append(ValueSlot(len(out) - 1, offset, len(value), op))

    def _lookup(self, name: str, sreg: int, dreg: int | None, inv: bool,
                set_id: int | None = None) -> bytes:
        parts = [("set", name), ("sreg", sreg)]
        if dreg is not None:
            parts.append(("dreg", dreg))
        if set_id is not None:
            parts.append(("set_id", set_id))
        if inv:
            parts.append(("flags", 1))
        return EXPRESSIONS["lookup"].encode(*parts)

    def set_elements(self, op: Operand, items: list[Any], data: list[bytes] | None,
                     interval: bool) -> tuple[int, list[Element]]:
        """Kernel elements for ``items`` of a set keyed like ``op``; extra set flags."""
        flags = 0
        elements: list[tuple[bytes, bytes | None, int, bytes | None]] = []
        concat = len(op.types) > 1
        if interval and concat:
            flags |= SET_INTERVAL | SET_CONCAT
            for i, item in enumerate(items):
                parts = item["concat"] if isinstance(item, dict) and "concat" in item else None
                if parts is None:
                    raise InputError(f"{item!r} is not a concatenation")
                lo = hi = b""
                for t, s, p in zip(op.types, op.sizes, parts, strict=False):
                    sub = Operand([], [t], [s])
                    a, b = self._interval(sub, p)
                    lo += a.ljust(reg_size(s), b"\0")
                    hi += b.ljust(reg_size(s), b"\0")
                elements.append((lo, hi, 0, data[i] if data else None))
        elif interval:
            flags |= SET_INTERVAL
            spans: list[tuple[int, int, bytes | None]] = []
            size = op.size
            for i, item in enumerate(items):
                lo_b, hi_b = self._interval(op, item)
                size = len(lo_b)
                spans.append((int.from_bytes(lo_b, "big"), int.from_bytes(hi_b, "big"),
                              data[i] if data else None))
            spans.sort(key=lambda s: s[0])
            top = (1 << (size * 8)) - 1
            if spans and spans[0][0] != 0:
                elements.append((bytes(size), None, ELEM_INTERVAL_END, None))
            for lo_n, hi_n, d in spans:
                elements.append((lo_n.to_bytes(size, "big"), None, 0, d))
                if hi_n != top:
                    elements.append(((hi_n + 1).to_bytes(size, "big"), None, ELEM_INTERVAL_END,
                                     None))
        else:  # (a concatenation without intervals: no NFT_SET_CONCAT, as nft)
            for i, item in enumerate(items):
                elements.append((self.encode_key(op, item), None, 0, data[i] if data else None))
        return flags, elements

    def _anon_set(self, ctx: CompileCtx, op: Operand, items: Any,
                  data: list[bytes] | None = None, data_type: int = 0, data_len: int = 0
                  ) -> AnonSet:
        if not isinstance(items, list):
            items = [items]
        interval = any(isinstance(i, dict) and ("prefix" in i or "range" in i) for i in items)
        extra, elements = self.set_elements(op, items, data, interval)
        flags = SET_ANONYMOUS | SET_CONSTANT | extra
        if data is not None:
            flags |= SET_MAP
        concat = len(op.types) > 1
        self.counter[0] += 1
        self.set_ids[0] += 1
        s = AnonSet(f"__set{self.counter[0] - 1}", self.set_ids[0], flags, op.types,
                    [op.size] if not concat else op.sizes, elements, data_type, data_len,
                    len(items), key_typeof=op.typeof, key_order=op.order)
        ctx.sets.append(s)
        return s

    # ---- verdicts ----------------------------------------------------------------
    def _verdict_stmt(self, kind: str, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        out.append(immediate(0, {kind: body if kind in ("jump", "goto") else None}))

    _st_accept = partialmethod(_verdict_stmt, "accept")
    _st_drop = partialmethod(_verdict_stmt, "drop")
    _st_continue = partialmethod(_verdict_stmt, "continue")
    _st_return = partialmethod(_verdict_stmt, "return")
    _st_jump = partialmethod(_verdict_stmt, "jump")
    _st_goto = partialmethod(_verdict_stmt, "goto")

    def _st_vmap(self, ctx: CompileCtx, body: dict[str, Any], out: list[bytes]) -> None:
        op = self.load(ctx, body["key"], out)
        data = body["data"]
        if isinstance(data, str) and data.startswith("@"):
            out.append(self._lookup(data[1:], 1, 0, False))
            return
        items = data["set"]
        keys = [i[0] for i in items]
        verdicts = [verdict_nest(i[1]) for i in items]
        s = self._anon_set(ctx, op, keys, verdicts, VERDICT_DATA_TYPE, 0)
        out.append(self._lookup(s.template_name, 1, 0, False, s.set_id))

    # ---- simple statements -------------------------------------------------------
    def _st_counter(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        if isinstance(body, str):
            out.append(objref(1, body))
            return
        body = body or {}
        out.append(EXPRESSIONS["counter"].encode(("bytes", body.get("bytes", 0)),
                        ("packets", body.get("packets", 0))))

    def _st_notrack(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        out.append(EXPRESSIONS["notrack"].encode())

    def _st_limit(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        if isinstance(body, str):
            out.append(objref(4, body))
            return
        rate = int(body["rate"])
        ltype = 0
        burst = int(body.get("burst", 5))
        if body.get("per", "second") not in LIMIT_UNITS:
            raise InputError(f"limit: unknown unit of time {body['per']!r}")
        if body.get("rate_unit", "packets") == "packets" and \
                body.get("burst_unit", "packets") != "packets":
            raise InputError(f"limit: burst unit {body['burst_unit']!r} on a packet rate")
        if "rate_unit" in body and body["rate_unit"] != "packets":
            ltype = 1
            rate *= BYTE_UNITS[body["rate_unit"]]
            burst = int(body.get("burst", 0)) * BYTE_UNITS[body.get("burst_unit", "bytes")]
        flags = 1 if body.get("inv") else 0
        unit = LIMIT_UNITS[body.get("per", "second")]
        out.append(EXPRESSIONS["limit"].encode(("rate", rate), ("unit", unit),
                        ("burst", burst), ("type", ltype), ("flags", flags)))

    def _st_quota(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        if isinstance(body, str):
            out.append(objref(2, body))
            return
        nbytes = int(body["val"]) * BYTE_UNITS[body.get("val_unit", "bytes")]
        used = int(body.get("used", 0)) * BYTE_UNITS[body.get("used_unit", "bytes")]
        out.append(EXPRESSIONS["quota"].encode(("bytes", nbytes), ("consumed", used),
                        ("flags", 1 if body.get("inv") else 0)))

    def _st_ct_count(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        out.append(EXPRESSIONS["connlimit"].encode(("count", int(body["val"])),
                        ("flags", 1 if body.get("inv") else 0)))

    def _st_ct_helper(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        if isinstance(body, dict):  # ct helper set tcp dport map { 21 : "ftp" }
            m: dict[str, Any] = body.get("map") if len(body) == 1 else None  # type: ignore[assignment]
            items = m["data"].get("set") if isinstance(m, dict) and isinstance(
                m.get("data"), dict) else None
            if m is None or not isinstance(items, list) or not all(
                    isinstance(i, list) and len(i) == 2 and isinstance(i[1], str) for i in items):
                raise InputError("ct helper set: expected a helper name or a map of names "
                                 "({\"map\": {\"key\": ..., \"data\": {\"set\": [[k, name]]}}})")
            op = self.load(ctx, m["key"], out)
            s = self._anon_set(ctx, op, [k for k, _n in items],
                               [n.encode() for _k, n in items])
            s.flags = (s.flags & ~SET_MAP) | SET_OBJECT
            s.obj_type = OBJ_TYPES["ct helper"]
            out.append(EXPRESSIONS["objref"].encode(("set_sreg", 1), ("set_name", s.template_name),
                                                    ("set_id", s.set_id)))
            return
        out.append(objref(OBJ_TYPES["ct helper"], body))

    def _iface(self, dev: Any) -> bytes:
        return T["iface_index"].encode(dev, 4)

    def _addr(self, ctx: CompileCtx, fam: str | None, addr: Any) -> tuple[str, bytes]:
        fam = fam or ctx.l3 or ("ip6" if ":" in str(addr) else "ip")
        return fam, T["ipv6_addr" if fam == "ip6" else "ipv4_addr"].encode(addr)

    def _st_dup(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        _fam, a = self._addr(ctx, None, body["addr"])
        out.append(immediate(1, a))
        parts = [("sreg_addr", 1)]
        if "dev" in body:
            out.append(immediate(2, self._iface(body["dev"])))
            parts.append(("sreg_dev", 2))
        out.append(EXPRESSIONS["dup"].encode(*parts))

    def _st_fwd(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        out.append(immediate(1, self._iface(body["dev"])))
        parts = [("sreg_dev", 1)]
        if "addr" in body:
            fam, a = self._addr(ctx, body.get("family"), body["addr"])
            out.append(immediate(2, a))
            parts += [("sreg_addr", 2), ("nfproto", L3_PROTO[fam])]
        out.append(EXPRESSIONS["fwd"].encode(*parts))

    def _st_tproxy(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        fam = body.get("family") or ctx.l3
        parts: list[tuple[str, Any]] = [("family", L3_PROTO[fam] if fam else 0)]
        reg = 1
        if "addr" in body:
            fam, a = self._addr(ctx, fam, body["addr"])
            out.append(immediate(1, a))
            parts = [("family", L3_PROTO[fam]), ("reg_addr", 1)]
            reg = 2
        if "port" in body:
            out.append(immediate(reg, T["inet_service"].encode(body["port"], 2)))
            parts.append(("reg_port", reg))
        out.append(EXPRESSIONS["tproxy"].encode(*parts))

    def _st_ct_timeout(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        out.append(objref(OBJ_TYPES["ct timeout"], body))

    def _st_ct_expectation(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        out.append(objref(OBJ_TYPES["ct expectation"], body))

    def _st_synproxy(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        if isinstance(body, str):
            out.append(objref(OBJ_TYPES["synproxy"], body))
            return
        out.append(expr("synproxy", synproxy_attrs(body or {})))

    def _st_log(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        body = body or {}
        parts = []
        if "prefix" in body:
            parts.append(("prefix", body["prefix"]))
        if "group" in body:
            both = {"level", "flags"} & set(body)
            if both:
                raise InputError(f"log: {sorted(both)[0]!r} cannot go with 'group' (a group "
                                 "logs to nflog, which has no level or flags)")
            parts.append(("group", int(body["group"])))
            if "snaplen" in body:
                parts.append(("snaplen", int(body["snaplen"])))
            if "queue-threshold" in body:
                parts.append(("qthreshold", int(body["queue-threshold"])))
        else:
            alone = {"snaplen", "queue-threshold"} & set(body)
            if alone:
                raise InputError(f"log: {sorted(alone)[0]!r} needs 'group'")
            if "level" in body:
                if body["level"] not in LOG_LEVELS:
                    raise InputError(f"log: unknown level {body['level']!r}")
                parts.append(("level", LOG_LEVELS.index(body["level"])))
            flags = body.get("flags")
            if flags:
                if isinstance(flags, str):
                    flags = [flags]
                fl = 0
                for f in flags:
                    if f != "all" and f not in LOG_FLAGS:
                        raise InputError(f"log: unknown flag {f!r}")
                    fl |= LOG_ALL if f == "all" else LOG_FLAGS[f]
                parts.append(("flags", fl))
        out.append(EXPRESSIONS["log"].encode(*parts))

    def _st_reject(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        body = body or {}
        rtype = body.get("type")
        if rtype is None:
            # as nft: the network protocol the rule matched so far picks the icmp kind
            # (inet, bridge, netdev); icmpx only when none is known
            if ctx.family == "ip" or ctx.l3 == "ip":
                rtype, code = "icmp", "port-unreachable"
            elif ctx.family == "ip6" or ctx.l3 == "ip6":
                rtype, code = "icmpv6", "port-unreachable"
            else:
                rtype, code = "icmpx", "port-unreachable"
        else:
            code = body.get("expr", "port-unreachable")
        if "expr" in body and (rtype == "tcp reset" or "type" not in body):
            raise InputError(f"reject: 'expr' {body['expr']!r} without an icmp type "
                             "(reject with tcp reset has no code)")
        if rtype not in REJECT_TYPES:
            raise InputError(f"reject: unknown type {rtype!r}")
        if rtype == "tcp reset":
            self._dep(ctx, "tcp", out)
            out.append(EXPRESSIONS["reject"].encode(("type", 1), ("icmp_code", 0)))
            return
        if rtype == "icmp" and ctx.family in ("inet", "bridge", "netdev"):
            self._dep(ctx, "ip", out)
        if rtype == "icmpv6" and ctx.family in ("inet", "bridge", "netdev"):
            self._dep(ctx, "ip6", out)
        dt = {"icmp": T["icmp_code"], "icmpv6": T["icmpv6_code"], "icmpx": T["icmpx_code"]}[rtype]
        out.append(EXPRESSIONS["reject"].encode(("type", REJECT_TYPES[rtype]),
                        ("icmp_code", dt.encode(code, 1)[0])))

    # ---- nat ---------------------------------------------------------------------
    def _nat(self, ctx: CompileCtx, body: Any, out: list[bytes], nat_type: int) -> None:
        body = body or {}
        fam = body.get("family") or (ctx.family if ctx.family in ("ip", "ip6") else None)
        addr = body.get("addr")
        port = body.get("port")
        self._nat_type_flags(body)
        parts = [("type", nat_type)]
        flags = 0
        reg = 1
        if addr is not None:
            if fam is None:
                fam = "ip6" if ":" in str(addr) else "ip"
            dt = T["ipv6_addr" if fam == "ip6" else "ipv4_addr"]
            op = Operand([], [dt], [dt.size])
            if isinstance(addr, dict) and ("prefix" in addr or "range" in addr):
                lo, hi = self._interval(op, addr)
                out.append(immediate(1, lo))
                out.append(immediate(2, hi))
                parts += [("family", L3_PROTO[fam]), ("reg_addr_min", 1),
                          ("reg_addr_max", 2)]
                reg = 3
                flags |= NAT_MAP_IPS
            elif isinstance(addr, dict):
                # An anonymous map's values: addresses, or address . port pairs.
                items = addr.get("map", {}).get("data", {})
                items = items.get("set") if isinstance(items, dict) else None
                pairs = isinstance(items, list) and any(
                    isinstance(i, list) and len(i) == 2 and isinstance(i[1], dict)
                    and "concat" in i[1] for i in items)
                mop = self.load(ctx, addr, out, data_types=[dt, T["inet_service"]] if pairs
                                else [dt])
                parts += [("family", L3_PROTO[fam]), ("reg_addr_min", 1)]
                if len(mop.types) > 1 and mop.types[1].name == "inet_service" and port is None:
                    parts.append(("reg_proto_min", reg32(reg_size(mop.sizes[0]) // 4)))
                reg = 3 if len(mop.types) > 1 else 2  # a port map's value next, as nft
            else:
                out.append(immediate(1, dt.encode(addr)))
                parts += [("family", L3_PROTO[fam]), ("reg_addr_min", 1)]
                if port is not None or self._nat_flags(body) & NAT_NETMAP:
                    parts.append(("reg_addr_max", 1))
                    flags |= NAT_MAP_IPS
                reg = 2 if dt.size == 4 else 2
        elif fam is not None:
            parts.append(("family", L3_PROTO[fam]))
        if isinstance(port, dict) and "map" in port:
            # dnat to tcp dport map { 1000 : 1.1.1.1 } : tcp dport map { 1000 : 1234 }
            self.load(ctx, port, out, 4 * (reg - 1) if reg <= 4 else reg - 8,
                      data_types=[T["inet_service"]])
            parts += [("reg_proto_min", reg), ("reg_proto_max", reg)]
            flags |= NAT_PROTO
        elif port is not None:
            plo, phi = self._ports(port)
            out.append(immediate(reg, plo))
            if phi != plo:
                out.append(immediate(reg + 1, phi))
                parts += [("reg_proto_min", reg), ("reg_proto_max", reg + 1)]
            else:
                parts += [("reg_proto_min", reg), ("reg_proto_max", reg)]
            flags |= NAT_PROTO
        flags |= self._nat_flags(body)
        if flags:
            parts.append(("flags", flags))
        out.append(EXPRESSIONS["nat"].encode(*parts))

    @staticmethod
    def _nat_type_flags(body: dict[str, Any]) -> None:
        """nft's "type_flags" say how the address reads; "prefix" (what nft lists beside
        the netmap flag) changes nothing in the kernel.  netmap maps a constant address,
        range or prefix 1:1; from a map lookup (an interval map) nfkit does not write it."""
        tf = body.get("type_flags", [])
        for f in [tf] if isinstance(tf, str) else tf:
            if f != "prefix":
                raise InputError(f"nat type_flags {f!r}: only \"prefix\" is written by nfkit")
        flags = body.get("flags", [])
        if "netmap" in ([flags] if isinstance(flags, str) else flags):
            addr = body.get("addr")
            if addr is None or isinstance(addr, dict) and not ("prefix" in addr or "range" in addr):
                raise InputError("nat netmap (prefix to): give a constant address, range or "
                                 "prefix (nfkit does not write it from a map)")

    def _ports(self, port: Any) -> tuple[bytes, bytes]:
        dt = T["inet_service"]
        if isinstance(port, dict) and "range" in port:
            return dt.encode(port["range"][0], 2), dt.encode(port["range"][1], 2)
        b = dt.encode(port, 2)
        return b, b

    def _nat_flags(self, body: dict[str, Any]) -> int:
        flags = body.get("flags", [])
        if isinstance(flags, str):
            flags = [flags]
        fl = 0
        for f in flags:
            if f not in NAT_FLAGS:
                raise InputError(f"unknown nat flag {f!r}")
            fl |= NAT_FLAGS[f]
        return fl

    def _st_snat(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        self._nat(ctx, body, out, 0)

    def _st_dnat(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        self._nat(ctx, body, out, 1)

    def _masq_redir(self, name: str, body: Any, out: list[bytes]) -> None:
        body = body or {}
        parts = []
        if "port" in body:
            plo, phi = self._ports(body["port"])
            out.append(immediate(1, plo))
            if phi != plo:
                out.append(immediate(2, phi))
            parts += [("reg_proto_min", 1), ("reg_proto_max", 2 if phi != plo else 1)]
        if "netmap" in ([body["flags"]] if isinstance(body.get("flags"), str) else body.get("flags", [])):
            raise InputError(f"{name}: the netmap flag needs an address (snat or dnat prefix to)")
        flags = self._nat_flags(body) | (NAT_PROTO if "port" in body else 0)
        if flags:
            parts.append(("flags", flags))
        out.append(EXPRESSIONS[name].encode(*parts))

    def _st_masquerade(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        self._masq_redir("masq", body, out)

    def _st_redirect(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        self._masq_redir("redir", body, out)

    # ---- mangle (meta/ct set) ----------------------------------------------------
    def _st_mangle(self, ctx: CompileCtx, body: dict[str, Any], out: list[bytes]) -> None:
        key, value = body["key"], body["value"]
        (kind, kb), = key.items()
        if kind == "tcp option":  # tcp option maxseg size set 1360: an exthdr write
            probe = self._exthdr(ctx, kind, kb, [], 1)
            if not isinstance(value, int):
                raise InputError(f"tcp option set: {value!r} is not a number")
            out.append(immediate(1, self.encode_value(probe.dt, probe.size, value)))
            self._exthdr(ctx, kind, kb, out, 1, sreg=1)
            return
        if kind == "payload":
            self._payload_write(ctx, kb, value, out)
            return
        if kind == "meta":
            num, tname, size = META[kb["key"]]
        elif kind == "ct":
            num, tname, size = CT[kb["key"]]
        else:
            raise InputError(f"cannot set {kind} (only meta, ct, tcp option and raw payload "
                             "keys)")
        dt = T[tname]
        if isinstance(value, dict) and isinstance(value.get("map"), dict) \
                and isinstance(value["map"].get("data"), dict):
            # `meta mark set tcp dport map { 22 : 0x1 }`: an anonymous map of the key's type
            vdt = dt if dt.size == size else replace(dt, size=size)
            self.load(ctx, value, out, data_types=[vdt])
        elif isinstance(value, dict):
            self.load(ctx, value, out)
        else:
            out.append(immediate(1, self.encode_value(dt, size, value)))
        if kind == "meta":
            out.append(EXPRESSIONS["meta"].encode(("key", num), ("sreg", 1)))
        else:
            parts = [("key", num)]
            if "dir" in kb:
                parts.append(("direction", {"original": 0, "reply": 1}[kb["dir"]]))
            parts.append(("sreg", 1))
            out.append(EXPRESSIONS["ct"].encode(*parts))

    def _payload_write(self, ctx: CompileCtx, key: dict[str, Any], value: Any,
                       out: list[bytes]) -> None:
        """`@base,offset,len set VALUE`: whole bytes written with no checksum update, as
        nft writes a raw payload.  A named header field (whose write must fix checksums)
        is not written by nfkit."""
        if "protocol" in key:
            self._field_write(ctx, key["protocol"], key["field"], value, out)
            return
        bits, length = int(key["offset"]), int(key["len"])
        if bits % 8 or length % 8 or not 0 < length <= 128:
            raise InputError(f"payload write @{key['base']},{bits},{length}: whole bytes only, "
                             "at most 16")
        nbytes = length // 8
        if isinstance(value, dict):
            op = self.load(ctx, value, out)
            if sum(op.sizes) != nbytes:
                raise InputError(f"payload write @{key['base']},{bits},{length}: the value is "
                                 f"{sum(op.sizes) * 8} bits long")
        else:
            out.append(immediate(1, T_INT32.encode(value, nbytes)))
        out.append(EXPRESSIONS["payload"].encode(
            ("sreg", 1), ("base", {"ll": LL, "nh": NH, "th": TH, "ih": 3}[key["base"]]),
            ("offset", bits // 8), ("len", nbytes), ("csum_type", 0), ("csum_offset", 0)))

    def _field_write(self, ctx: CompileCtx, proto: str, field: str, value: Any,
                     out: list[bytes]) -> None:
        """`ip ttl set 64`, `tcp dport set 80`, `ip saddr set ip daddr`: a named header
        field written as nft writes it, the checksums it covers fixed by the kernel
        (`payload_write_plan`); a field of part of the bytes written is merged into them
        (load, mask, value) and takes a constant only."""
        plan = payload_write_plan(proto, field)
        dt = T[PAYLOAD[(proto, field)][3]]
        self._dep(ctx, proto, out)
        if (proto, field) in ICMP_TYPE_DEPS and not ctx.icmp_type:  # `icmp id set 1`, as nft
            self._icmp_type_dep(ctx, proto, ICMP_TYPE_DEPS[(proto, field)], out)
        if plan.keep is None:
            if isinstance(value, dict):
                op = self.load(ctx, value, out)
                if sum(op.sizes) != plan.length:
                    raise InputError(f"{proto} {field} set: the value is {sum(op.sizes) * 8} "
                                     f"bits long, the field {plan.length * 8}")
            else:
                out.append(immediate(1, self.encode_value(dt, plan.length, value)))
        else:
            if isinstance(value, dict):
                raise InputError(f"{proto} {field} set: a field of part of a byte (or of a "
                                 "checksummed word) takes a constant only in nfkit")
            width = PAYLOAD[(proto, field)][2]
            v = int.from_bytes(dt.encode(value, 4 if dt.size == 0 else dt.size),
                               "big" if dt.big_endian else "little")
            if not 0 <= v < 1 << width:
                raise InputError(f"{value!r} exceeds the range 0-{(1 << width) - 1} of "
                                 f"{proto} {field}")
            out.append(payload_load(1, plan.base, plan.offset, plan.length))
            out.append(bitwise(1, plan.length, plan.keep,
                               (v << plan.shift).to_bytes(plan.length, "big")))
        out.append(EXPRESSIONS["payload"].encode(
            ("sreg", 1), ("base", plan.base), ("offset", plan.offset), ("len", plan.length),
            ("csum_type", plan.csum_type), ("csum_offset", plan.csum_offset),
            ("csum_flags", plan.csum_flags)))

    # ---- set updates from the packet path ----------------------------------------
    def _st_meter(self, ctx: CompileCtx, body: dict[str, Any], out: list[bytes]) -> None:
        """`meter NAME [size N] { KEY [timeout T] STATEMENT }`: as nft writes it, a set of
        the rule's own (anonymous, eval, timeout with a timeout; no elements), named NAME,
        updated from the packet path (`add`, `update` when the key has a timeout)
        carrying the statement."""
        name, stmt, size = body["name"], body["stmt"], body.get("size")
        if not isinstance(name, str) or not name or name.startswith("__"):
            raise InputError(f"meter: name {name!r} is not a set name")
        if not isinstance(stmt, dict) or len(stmt) != 1:
            raise InputError("meter: its statement must be one statement")
        if size is not None and (not isinstance(size, int) or not 0 < size < 1 << 32):
            raise InputError(f"meter {name}: size {size!r} is not a number of elements")
        key = body["key"]
        timed = isinstance(key, dict) and "elem" in key and "timeout" in key["elem"]
        update = {"op": "update" if timed else "add", "elem": key, "set": "@" + name,
                  "stmt": [stmt]}
        self._dynset(ctx, update, out, False, meter=(name, size))

    def _dynset(self, ctx: CompileCtx, body: dict[str, Any], out: list[bytes], is_map: bool,
                meter: tuple[str, int | None] | None = None) -> None:
        opname = body["op"]
        elem = body["elem"]
        timeout = None
        if isinstance(elem, dict) and "elem" in elem:
            extra = set(elem["elem"]) - {"val", "timeout"}
            if extra:
                raise InputError(f"set update: element option {sorted(extra)[0]!r} cannot be "
                                 "given by a rule (the kernel's set update takes a timeout only)")
            timeout = elem["elem"].get("timeout")
            elem = elem["elem"]["val"]
        op = self.load(ctx, elem, out)
        nslots = sum(reg_size(z) // 4 for z in op.sizes)
        target = body["map" if is_map else "set"]
        parts = [("set_name", target.lstrip("@")),
                 ("op", {"add": 0, "update": 1, "delete": 2}[opname]),
                 ("sreg_key", 1)]
        if meter is not None:  # the meter's own set, made in the same transaction
            self.set_ids[0] += 1
            ms = AnonSet(meter[0], self.set_ids[0], SET_ANONYMOUS | SET_EVAL
                         | (SET_TIMEOUT if timeout is not None else 0), op.types,
                         [op.size] if len(op.types) == 1 else op.sizes, [],
                         count=meter[1] or 0, set_name=meter[0], desc=meter[1] is not None)
            ctx.sets.append(ms)
            parts.append(("set_id", ms.set_id))
        if is_map:
            dslot = ((nslots + 3) // 4) * 4
            data = body["data"]
            if isinstance(data, dict):
                self.load(ctx, data, out, dslot)
            else:
                named = self.named_sets.get(target.lstrip("@"))
                ddt = set_data(named)[2] if named is not None else None
                if ddt is None:
                    raise InputError(f"map update with the value {data!r}: the data type of "
                                     f"map {target!r} is not known (list the map in the file)")
                out.append(immediate(reg32(dslot), self.encode_value(ddt, ddt.size, data)))
            parts.append(("sreg_data", reg32(dslot)))
        if timeout is not None:
            parts.append(("timeout", int(timeout) * 1000))
        stmts = body.get("stmt")
        if stmts:
            # The statements the set update carries (a meter: `update @m { ip saddr limit
            # rate 20/second }`): one is NFTA_DYNSET_EXPR, more are NFTA_DYNSET_EXPRESSIONS
            # with NFT_DYNSET_F_EXPR, as nft sends them.  Each must encode to exactly one
            # stateful expression, or the rule is refused.
            exprs = []
            for st in stmts:
                (k, b), = st.items()
                if k not in DYNSET_STATEMENTS:
                    raise InputError(f"set update: statement {k!r} cannot be carried by a set "
                                     "update")
                sub: list[bytes] = []
                getattr(self, "_st_" + k.replace(" ", "_"))(ctx, b, sub)
                if len(sub) != 1:
                    raise InputError(f"set update: statement {k!r} does not encode to one "
                                     "expression")
                exprs.append(sub[0])
            if len(exprs) == 1:
                parts.append(("expr", exprs[0][4:]))
            else:
                parts += [("flags", DYNSET_F_EXPR), ("expressions", b"".join(exprs))]
        out.append(EXPRESSIONS["dynset"].encode(*parts))

    def _st_set(self, ctx: CompileCtx, body: dict[str, Any], out: list[bytes]) -> None:
        self._dynset(ctx, body, out, False)

    def _st_map(self, ctx: CompileCtx, body: dict[str, Any], out: list[bytes]) -> None:
        self._dynset(ctx, body, out, True)

    # ---- queue -------------------------------------------------------------------
    def _st_queue(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        body = body or {}
        num = body.get("num", 0)
        total = 1
        if isinstance(num, dict) and "range" in num:
            lo, hi = num["range"]
            num, total = lo, hi - lo + 1
        flags = body.get("flags", [])
        if isinstance(flags, str):
            flags = [flags]
        fl = 0
        for f in flags:
            if f not in ("bypass", "fanout"):
                raise InputError(f"queue: unknown flag {f!r}")
            fl |= {"bypass": 1, "fanout": 2}[f]
        if self.queue_mode() == "nft":
            out.append(EXPRESSIONS["queue"].encode(("num", num), ("total", total),
                            ("flags", fl)))
        else:
            # xt NFQUEUE v3 target (struct xt_NFQ_info_v3: queuenum, queues_total, flags).
            if ctx.family not in ("ip", "ip6", "bridge", "arp"):
                raise InputError(f"queue in a {ctx.family} table needs the nft queue "
                                 "expression, which this kernel lacks (the xt NFQUEUE "
                                 "target it falls back to exists only for ip and ip6)")
            info = int(num).to_bytes(2, "little") + total.to_bytes(2, "little") + \
                fl.to_bytes(2, "little") + b"\0\0"
            out.append(EXPRESSIONS["target"].encode(("name", "NFQUEUE"), ("rev", 3),
                            ("info", info)))


    # ---- NPTv6 (RFC 6296) --------------------------------------------------------
    def _st_snpt(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        out.append(npt_target("SNPT", ctx.family, self.table, body))

    def _st_dnpt(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        out.append(npt_target("DNPT", ctx.family, self.table, body))


def npt_target(name: str, family: str, table: str, body: Any) -> bytes:
    """The xt SNPT or DNPT target (ip6t_NPT, revision 0) for {"prefix": P, "to": Q}:
    addresses of prefix P become addresses of Q, checksum-neutrally.

    struct ip6t_npt_tginfo: src_pfx, dst_pfx (16 bytes each), src_pfx_len,
    dst_pfx_len (u8), adjustment (u16, computed by the kernel).  Only the
    kernel's checks are left to it: the table must be `ip6 mangle`, the hooks
    postrouting/input (SNPT) or prerouting/output (DNPT)."""
    import ipaddress

    what = name.lower()
    if family != "ip6":
        raise InputError(f"{what}: NPTv6 is for ip6 tables, not {family}")
    if table != "mangle":
        raise InputError(f"{what}: the kernel's NPT target works only in a table named "
                         f"mangle (table ip6 mangle), not {table!r}")
    if not isinstance(body, dict) or set(body) != {"prefix", "to"}:
        raise InputError(f'{what}: expected {{"prefix": PREFIX, "to": PREFIX}}, got {body!r}'[:200])
    nets = []
    for key in ("prefix", "to"):
        try:
            net = ipaddress.IPv6Network(str(body[key]), strict=True)
        except ValueError as exc:
            raise InputError(f"{what} {key}: {str(body[key])[:60]!r} is not an IPv6 prefix "
                             f"without host bits ({exc})"[:200]) from None
        if net.prefixlen > 64:
            raise InputError(f"{what} {key}: {net}: NPTv6 prefixes are at most /64")
        nets.append(net)
    src, dst = nets
    info = (src.network_address.packed + dst.network_address.packed
            + bytes((src.prefixlen, dst.prefixlen)) + b"\0\0")
    return EXPRESSIONS["target"].encode(("name", name), ("rev", 0), ("info", info))


def _nft_queue() -> str:
    return "nft"


def _left_key(left: Any) -> Any:
    """A cheap hashable key for a left-hand expression (templates)."""
    if type(left) is dict and len(left) == 1:
        p = left.get("payload")
        if p is not None and len(p) == 2:
            return ("p", p.get("protocol"), p.get("field"))
        m = left.get("meta")
        if m is not None and len(m) == 1:
            return ("m", m.get("key"))
    return repr(left)


def _fast_encoder(op: Operand) -> Any:
    """Value -> bytes for the common cases; raises for anything else (slow path)."""
    dt, size = op.dt, op.size
    if op.mask is not None or len(op.types) != 1:
        raise_always = _raise
        return raise_always
    if dt.kind == "ipv4":
        return functools.partial(socket.inet_pton, socket.AF_INET)
    if dt.kind == "ipv6":
        return functools.partial(socket.inet_pton, socket.AF_INET6)
    if dt.kind == "int" and size == dt.size:
        order: Literal["big", "little"] = "big" if dt.big_endian else "little"

        def enc_int(v: Any) -> bytes:
            if type(v) is not int:
                raise TypeError
            return v.to_bytes(size, order)  # type: ignore[no-any-return]

        return enc_int
    return _raise


def _raise(v: Any) -> bytes:
    raise TypeError
_MISSING = object()
_MATCH_KEYS = {"op", "left", "right"}


def rule_shape(stmts: Any) -> tuple[tuple[Any, ...], list[Any]] | None:
    """(shape key, values) of a rule that may be made only of `match` statements of
    a payload field against a scalar and constant statements without a body; None
    when it is certainly not.  Rules of one shape differ only in those values (one
    template encodes them all); `RuleCompiler.rule_template` checks the rest once."""
    return _shape(stmts, False)


def anon_rule_shape(stmts: Any) -> tuple[tuple[Any, ...], list[Any]] | None:
    """(shape key, values) of a rule that may be made of payload matches against
    scalars and against exactly one anonymous set of two or more scalars, and constant
    statements (`tcp dport { 22, 80 } accept`); the set's values are one list in
    ``values``.  None when it is certainly not one."""
    return _shape(stmts, True)


def _shape(stmts: Any, one_set: bool) -> tuple[tuple[Any, ...], list[Any]] | None:
    """`rule_shape` (``one_set`` False: no set at all) or `anon_rule_shape` (exactly one)."""
    key: list[Any] = []
    rights: list[Any] = []
    sets = 0
    try:
        for stmt in stmts:
            (kind, body), = stmt.items()
            if body is None:
                key.append(kind)
                continue
            right = body["right"]
            (lk, p), = body["left"].items()
            if type(right) is dict:
                if not one_set:
                    return None
                (rk, items), = right.items()
                if rk != "set" or type(items) is not list or len(items) < 2 or any(
                        type(x) is not int and (type(x) is not str or x[:1] == "@")
                        for x in items):
                    return None
                sets += 1
                right = items
                rkind: Any = ("set", len(items), tuple(map(type, items)))
            else:
                rkind = type(right)
            # With three keys the third must be "op" (KeyError otherwise): rules of one
            # shape then have exactly the keys the template was checked with.
            key.append((kind, body["op"] if len(body) == 3 else "==", len(body), lk,
                        p["protocol"], p["field"], len(p), rkind))
            rights.append(right)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return (tuple(key), rights) if sets == int(one_set) else None


_CONST_STMTS = {"accept", "drop", "return", "continue", "jump", "goto", "counter", "notrack",
                "masquerade", "log", "limit", "reject"}
# Matches whose value sets the protocol context (`ether type ip` vs `ether type ip6`):
# no template, whose context after it would be the first value's.
_DEP_LEFTS = [{"meta": {"key": "l4proto"}}, {"meta": {"key": "nfproto"}},
              {"meta": {"key": "iiftype"}}, {"meta": {"key": "protocol"}},
              {"payload": {"protocol": "ip", "field": "protocol"}},
              {"payload": {"protocol": "ip6", "field": "nexthdr"}},
              {"payload": {"protocol": "ether", "field": "type"}}]


# ---- set types -------------------------------------------------------------------

def _exthdr_typeof(kind: str, op_code: int, htype: int, name: str, at: int | None
                   ) -> bytes | None:
    """The typeof nft records for a field of an extension header or option (``at``: its
    place in `EXTHDR_FIELDS`' list); None where nft records none or nfkit does not know
    nft's number (a presence test)."""
    if at is None:
        return None
    fields = EXTHDR_FIELDS[(kind, "sack" if name == "sack0" else name)][1]
    if kind == "exthdr":
        desc = setudata.EXTHDR_DESC.get(name)
        return None if desc is None else setudata.exthdr(0, desc, at + 1)
    if kind == "ip option":
        return setudata.exthdr(op_code, htype, setudata.IPOPT_FIELD[list(fields)[at]])
    if kind == "tcp option" and name in ("sack1", "sack2", "sack3"):
        at += 2 * int(name[-1]) + 2  # nft's sack template: kind, length, left, right, left1...
    return setudata.exthdr(op_code, htype, at)


def expression_typeof(family: str, table: str, expr: Any) -> tuple[bytes | None, int | None]:
    """The typeof record nft writes in a set's user data for a set keyed (or a map's
    data given) by ``expr`` (None where nft writes none), and the expression's byte
    order (None: its datatype's): what a set declared with `typeof EXPR` carries."""
    if isinstance(expr, dict) and "concat" in expr:
        parts = [expression_typeof(family, table, e)[0] for e in expr["concat"]]
        return setudata.concat(parts), setudata.ORDER_INVALID
    payload = expr.get("payload") if isinstance(expr, dict) else None
    if isinstance(payload, dict) and (payload.get("protocol"), payload.get("field")) in PAYLOAD:
        # the field itself, where a rule's lookup keys its set by the field under a
        # mask (`ip dscp`: nft records no typeof for that)
        proto, fld = payload["protocol"], payload["field"]
        _base, _off, bits, tname = PAYLOAD[(proto, fld)]
        return (setudata.payload(proto, fld, bits if tname == "integer" else None),
                setudata.ORDER_BIG)
    op = RuleCompiler(family, table).load(CompileCtx(family, table), expr, [])
    return op.typeof, op.order


def set_key_types(s: Set) -> list[Datatype]:
    if s.typeof is not None:  # the key's types and widths as its expression gives them
        op = RuleCompiler(s.family, s.table).load(CompileCtx(s.family, s.table), s.typeof, [])
        host = op.order == setudata.ORDER_HOST  # (`meta length`: an integer in host order)
        return [t if t.size == z and not (host and t.kind == "int" and t.big_endian)
                else replace(t, size=z, big_endian=t.big_endian and not (host and t.kind == "int"))
                for t, z in zip(op.types, op.sizes, strict=True)]
    t = s.type
    if isinstance(t, str):
        t = [p.strip() for p in t.split(".")]
    return [datatype(x) for x in t]


def set_data(s: Set) -> tuple[int, int, Datatype | None]:
    """(data type id, data length, datatype) of a map; verdict maps give (VERDICT_TYPE, 0)."""
    if s.map is None:
        return 0, 0, None
    m = s.map
    if m == "verdict":
        return VERDICT_TYPE, 0, None
    types = [datatype(x) for x in ([p.strip() for p in m.split(".")] if isinstance(m, str) else m)]
    if len(types) == 1:
        return types[0].id, types[0].size, types[0]
    return concat_type_id(types), sum(reg_size(t.size) for t in types), None
