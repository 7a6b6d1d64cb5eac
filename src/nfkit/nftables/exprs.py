"""Statements <-> nf_tables netlink expressions (both directions).

This module owns how one rule's libnftables JSON statements ("match", "accept",
"counter", "snat", ...) become the kernel's expression list (payload, meta, cmp,
lookup, immediate, ...) and how an expression list read back from the kernel
becomes the statements nft itself prints for it, including the protocol
dependencies nft adds on the way in and hides on the way out.

`RuleCompiler.compile()` returns encoded expression bytes (see nla.expr) plus the
anonymous sets the rule needs.  `decode_rule()` takes the parsed expression
list.  Statements it cannot express become {"xt": ...}-free raw forms:
{"nfkit-raw": {...}} keeps the kernel's expressions instead of guessing.
"""

from __future__ import annotations

import functools
import socket
from dataclasses import dataclass
from typing import Any, Literal

from nfkit.errors import InputError
from nfkit.nftables import nla
from nfkit.nftables.nla import A, be16, be32, be64, data_value, data_verdict, expr, string, u8
from nfkit.nftables.types import (
    CT,
    ETHER_FOR_L3,
    L3_PROTO,
    L4_PROTO,
    LL,
    META,
    NH,
    PAYLOAD,
    TH,
    Datatype,
    T,
    reg_size,
)

# Verdict codes.
VERDICTS = {"accept": 1, "drop": 0, "continue": 0xFFFFFFFF, "return": 0xFFFFFFFB,
            "jump": 0xFFFFFFFD, "goto": 0xFFFFFFFC}
VERDICT_NAMES = {v: k for k, v in VERDICTS.items()}
CMP_OPS = {"==": 0, "!=": 1, "<": 2, "<=": 3, ">": 4, ">=": 5}
CMP_NAMES = {v: k for k, v in CMP_OPS.items()}
LIMIT_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
LIMIT_UNIT_NAMES = {v: k for k, v in LIMIT_UNITS.items()}
BYTE_UNITS = {"bytes": 1, "kbytes": 1024, "mbytes": 1024 * 1024, "gbytes": 1024 ** 3}
LOG_LEVELS = ["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug", "audit"]
LOG_FLAGS = {"tcp sequence": 1, "tcp options": 2, "ip options": 4, "skuid": 8, "ether": 32}
LOG_ALL = 0x2F
NAT_FLAGS = {"random": 4, "persistent": 8, "fully-random": 16}
NAT_MAP_IPS, NAT_PROTO = 1, 2
REJECT_TYPES = {"icmp": 0, "icmpv6": 0, "tcp reset": 1, "icmpx": 2}
FIB_RESULTS = {"oif": 1, "oifname": 2, "type": 3}
FIB_RESULT_NAMES = {v: k for k, v in FIB_RESULTS.items()}
FIB_FLAGS = {"saddr": 1, "daddr": 2, "mark": 4, "iif": 8, "oif": 16}
FIB_TYPES = {"unspec": 0, "unicast": 1, "local": 2, "broadcast": 3, "anycast": 4,
             "multicast": 5, "blackhole": 6, "unreachable": 7, "prohibit": 8}
OBJ_TYPES = {"counter": 1, "quota": 2, "ct helper": 3, "limit": 4}
OBJ_TYPE_NAMES = {v: k for k, v in OBJ_TYPES.items()}
SET_ANONYMOUS, SET_CONSTANT, SET_INTERVAL, SET_MAP = 1, 2, 4, 8
SET_TIMEOUT, SET_EVAL, SET_OBJECT, SET_CONCAT = 16, 32, 64, 128
ELEM_INTERVAL_END = 1

T_FIB_TYPE = T["fib_addrtype"]
T_INT32 = T["integer"]


Element = tuple[bytes, bytes | None, int, bytes | None]  # key, key_end, flags, data


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

    @property
    def key_len(self) -> int:
        if len(self.key_sizes) == 1:
            return self.key_sizes[0]
        return sum(reg_size(s) for s in self.key_sizes)


class CompileCtx:
    """Protocol context while one rule is compiled (what is known about the packet)."""

    __slots__ = ("family", "table", "l3", "l4", "iiftype", "vlan", "sets")

    def __init__(self, family: str, table: str) -> None:
        self.family = family
        self.table = table
        self.l3: str | None = None  # "ip" / "ip6" once known
        self.l4: str | None = None  # "tcp", "udp", ... once known
        self.iiftype = False
        self.vlan = False
        self.sets: list[AnonSet] = []


def _plen_mask(size: int, plen: int) -> bytes:
    bits = size * 8
    return (((1 << plen) - 1) << (bits - plen)).to_bytes(size, "big") if plen else bytes(size)


class RuleCompiler:
    """Compiles the statements of rules of one table family into expression bytes."""

    def __init__(self, family: str, table: str, counter: list[int] | None = None,
                 set_ids: list[int] | None = None) -> None:
        self.family = family
        self.table = table
        self.counter = counter if counter is not None else [0]
        self.set_ids = set_ids if set_ids is not None else [0]
        self.set_types: dict[str, Any] = {}
        self._cache: dict[Any, Any] = {}
        self._rules: dict[Any, Any] = {}  # rule shape -> template (None: no template)
        self._last_operand: Operand | None = None
        self.named_sets: dict[str, Any] = {}  # name -> model Set (for map data types)

    # ---- entry point -------------------------------------------------------------
    def compile(self, stmts: list[dict[str, Any]]) -> tuple[list[bytes], list[AnonSet]]:
        """Expression bytes for one rule and the anonymous sets it needs.

        Raises InputError naming the statement that cannot be translated."""
        shape = _rule_shape(stmts)
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

    def rule_template(self, key: Any, stmts: list[dict[str, Any]]) -> Any:
        """The template of rule shape ``key`` (of `_rule_shape`), compiled from
        ``stmts`` the first time: (static chunks, [(encoder, size, operand)]) or None."""
        tpl = self._rules.get(key, _MISSING)
        if tpl is _MISSING:
            tpl = self._rules[key] = self._rule_template(stmts)
        return tpl

    def _rule_template(self, stmts: list[dict[str, Any]]) -> Any:
        """(static chunks, value slots) of a rule made only of payload matches with
        scalar values and constant statements, or None when it cannot be one."""
        ctx = CompileCtx(self.family, self.table)
        if self.family in ("ip", "ip6"):
            ctx.l3 = self.family
        statics: list[bytes] = []
        slots: list[tuple[Any, int, Operand]] = []
        cur: list[bytes] = []
        try:
            for stmt in stmts:
                for kind, body in stmt.items():  # noqa: B007 - the one (key, value) of the statement
                    pass
                if body is None:
                    if kind not in _CONST_STMTS:
                        return None
                    getattr(self, "_st_" + kind)(ctx, body, cur)
                    continue
                left, right = body["left"], body["right"]
                if (kind != "match" or type(body) is not dict or not set(body) <= _MATCH_KEYS
                        or body.get("op", "==") not in CMP_OPS or left in _DEP_LEFTS
                        or type(left) is not dict or list(left) != ["payload"]
                        or type(left["payload"]) is not dict or len(left["payload"]) != 2
                        or type(right) not in (int, str) or str(right)[:1] == "@"):
                    return None
                n0 = len(cur)
                self._st_match(ctx, body, cur)
                if len(cur) == n0 or cur[-1][4:12] != _CMP_NAME:
                    return None
                op = self._last_operand
                assert op is not None
                v = self._shifted(op, right)
                cmp_b = cur[-1]
                pad = _PAD_FOR[len(v) & 3]
                if op.dt.kind == "bitmask" or not cmp_b.endswith(v + pad):
                    return None
                cur[-1] = cmp_b[: len(cmp_b) - len(v) - len(pad)]
                statics.append(b"".join(cur))
                slots.append((_fast_encoder(op), len(v), op))
                cur = [pad]
        except (InputError, TypeError, KeyError, ValueError, AttributeError):
            return None  # the general path reports it
        if ctx.sets:
            return None
        statics.append(b"".join(cur))
        return statics, slots

    def _compile(self, stmts: list[dict[str, Any]]) -> tuple[list[bytes], list[AnonSet]]:
        ctx = CompileCtx(self.family, self.table)
        if self.family in ("ip", "ip6"):
            ctx.l3 = self.family
        out: list[bytes] = []
        cache = self._cache
        for stmt in stmts:
            if type(stmt) is not dict or len(stmt) != 1:
                raise InputError(f"statement {stmt!r} is not an object with one key")
            for kind, body in stmt.items():  # noqa: B007 - the one (key, value) of the statement
                pass
            # Encoding templates: a statement shape seen before is encoded by
            # patching only its value into the bytes compiled the first time.
            if kind == "match" and type(body) is dict:
                right = body.get("right")
                tr = type(right)
                if tr is int or (tr is str and right[:1] != "@"):  # type: ignore[index]
                    left = body.get("left")
                    p = left.get("payload") if type(left) is dict and len(left) == 1 else None
                    if p is not None and len(p) == 2:
                        key: Any = (ctx.l3, ctx.l4, ctx.iiftype, ctx.vlan, body.get("op", "=="),
                                    p.get("protocol"), p.get("field"))
                    else:
                        key = (ctx.l3, ctx.l4, ctx.iiftype, ctx.vlan, body.get("op", "=="), _left_key(left))
                    tpl = cache.get(key)
                    if tpl is not None:
                        prefix_head, fast, pad, op, after = tpl
                        ctx.l3, ctx.l4, ctx.iiftype, ctx.vlan = after
                        try:
                            v = fast(right)
                        except Exception:
                            v = self._shifted(op, right)
                        out += (prefix_head, v, pad)
                        continue
                    n0 = len(out)
                    self._st_match(ctx, body, out)
                    if (key[4] in CMP_OPS and left not in _DEP_LEFTS and len(out) > n0
                            and out[-1][4:12] == _CMP_NAME):
                        op = self._last_operand
                        assert op is not None
                        v = self._shifted(op, right)
                        cmp_b = out[-1]
                        # A relational match on a host-order value compares it in network
                        # order (byteorder): only a value that reads alike both ways (0)
                        # would match the host-order bytes here; no template from it.
                        if (op.dt.kind != "bitmask" and (key[4] in ("==", "!=") or op.dt.big_endian)
                                and cmp_b.endswith(v + _PAD_FOR[len(v) & 3])):
                            pad = _PAD_FOR[len(v) & 3]
                            cache[key] = (b"".join(out[n0:-1]) + cmp_b[: len(cmp_b) - len(v)
                                                                      - len(pad)],
                                          _fast_encoder(op), pad, op,
                                          (ctx.l3, ctx.l4, ctx.iiftype, ctx.vlan))
                    continue
            elif kind in _CONST_STMTS:
                key2 = kind if body is None else repr(stmt)
                hit = cache.get(key2)
                if hit is None:
                    n0 = len(out)
                    try:
                        getattr(self, "_st_" + kind)(ctx, body, out)
                    except (TypeError, KeyError, ValueError, AttributeError) as exc:
                        raise InputError(f"statement {kind!r}: malformed ({exc})") from None
                    cache[key2] = b"".join(out[n0:])
                    del out[n0:]
                    hit = cache[key2]
                out.append(hit)
                continue
            fn = getattr(self, "_st_" + kind.replace(" ", "_"), None)
            if fn is None:
                raise InputError(f"unknown statement {kind!r}")
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
                out.append(_meta_load(1, 15))
                out.append(_cmp(1, 0, bytes((L3_PROTO[proto],))))
            elif ctx.family == "netdev":
                out.append(_meta_load(1, 1))
                out.append(_cmp(1, 0, ETHER_FOR_L3[proto].to_bytes(2, "big")))
            elif ctx.family == "bridge":
                out.append(_payload_load(1, LL, 12, 2))
                out.append(_cmp(1, 0, ETHER_FOR_L3[proto].to_bytes(2, "big")))
            ctx.l3 = proto
        elif proto in L4_PROTO:
            if ctx.l4 == proto:
                return
            if proto == "icmp" and ctx.family == "ip6" or proto == "icmpv6" and ctx.family == "ip":
                raise InputError(f"{proto} match in the {ctx.family} family")
            out.append(_meta_load(1, 16))
            out.append(_cmp(1, 0, bytes((L4_PROTO[proto],))))
            ctx.l4 = proto
        elif proto in ("ether", "vlan"):
            if ctx.family in ("ip", "ip6", "inet", "netdev") and not ctx.iiftype:
                out.append(_meta_load(1, 8))
                out.append(_cmp(1, 0, (1).to_bytes(2, "little")))
                ctx.iiftype = True
            if proto == "vlan" and not ctx.vlan:
                out.append(_payload_load(1, LL, 12, 2))
                out.append(_cmp(1, 0, (0x8100).to_bytes(2, "big")))
                ctx.vlan = True

    # ---- left-hand side ----------------------------------------------------------
    def load(self, ctx: CompileCtx, left: Any, out: list[bytes], slot: int = 0) -> Operand:
        """Emit what loads ``left`` into register slot ``slot``; describe the result."""
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
                base, boff, blen, tname = spec
                dt = T[tname]
            else:
                base = {"ll": LL, "nh": NH, "th": TH, "ih": 3}[body["base"]]
                boff, blen = int(body["offset"]), int(body["len"])
                dt = T_INT32
            off, start = divmod(boff, 8)
            nbytes = (start + blen + 7) // 8
            out.append(_payload_load(reg, base, off, nbytes))
            mask = None
            shift = nbytes * 8 - start - blen
            if start or blen % 8:
                mask = (((1 << blen) - 1) << shift).to_bytes(nbytes, "big")
                out.append(_bitwise(reg, nbytes, mask, bytes(nbytes)))
            size = nbytes
            return Operand(out, [dt], [size], (base, off, nbytes) if mask is None else None,
                           mask, shift)
        if kind == "meta":
            key = body["key"]
            if key not in META:
                raise InputError(f"unknown meta key {key!r}")
            num, tname, size = META[key]
            out.append(_meta_load(reg, num))
            return Operand(out, [T[tname]], [size])
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
            parts = [be32(A["ct"]["dreg"], reg), be32(A["ct"]["key"], num)]
            if "dir" in body:
                parts.append(u8(A["ct"]["direction"], {"original": 0, "reply": 1}[body["dir"]]))
            out.append(expr("ct", *parts))
            return Operand(out, [T[tname]], [size])
        if kind == "concat":
            for part in body:
                if isinstance(part, dict) and "payload" in part and \
                        "protocol" in part["payload"]:
                    self._dep(ctx, part["payload"]["protocol"], out)
            types: list[Datatype] = []
            sizes: list[int] = []
            s = slot
            for part in body:
                op = self.load(ctx, part, out, s)
                types += op.types
                sizes += op.sizes
                s += sum(reg_size(z) // 4 for z in op.sizes)
            return Operand(out, types, sizes)
        if kind in ("&", "|", "^"):
            inner, value = body
            op = self.load(ctx, inner, out, slot)
            v = self._value(op.dt, op.size, value)
            if kind == "&":
                out.append(_bitwise(reg, op.size, v, bytes(op.size)))
            elif kind == "|":
                inv = bytes(b ^ 0xFF for b in v)
                out.append(_bitwise(reg, op.size, inv, v))
            else:
                out.append(_bitwise(reg, op.size, b"\xff" * op.size, v))
            return Operand(out, op.types, op.sizes)
        if kind == "map":
            op = self.load(ctx, body["key"], out, slot)
            data = body["data"]
            if not (isinstance(data, str) and data.startswith("@")):
                raise InputError("anonymous maps as values are not supported; use a named map")
            named = self.named_sets.get(data[1:])
            if named is None or named.map is None:
                raise InputError(f"map {data[1:]!r} not known (list it in the same file)")
            from nfkit.nftables.types import split_type_id
            from nfkit.nftables.wire import set_data

            dtype, dlen, _ddt = set_data(named)
            dts = split_type_id(dtype)
            out.append(self._lookup(data[1:], reg, reg, False))
            del op
            return Operand(out, dts, [t.size for t in dts])
        if kind == "numgen":
            mode = {"inc": 0, "random": 1}[body["mode"]]
            a = A["numgen"]
            out.append(expr("numgen", be32(a["dreg"], reg), be32(a["modulus"], body["mod"]),
                            be32(a["type"], mode), be32(a["offset"], body.get("offset", 0))))
            return Operand(out, [T_INT32], [4])
        if kind in ("jhash", "symhash"):
            a = A["hash"]
            parts = []
            if kind == "jhash":
                inner = body["expr"]
                for part in inner.get("concat", [inner]) if isinstance(inner, dict) else []:
                    if isinstance(part, dict) and "payload" in part and \
                            "protocol" in part["payload"]:
                        self._dep(ctx, part["payload"]["protocol"], out)
                sub: list[bytes] = []
                op = self.load(ctx, body["expr"], sub, slot)
                out.extend(sub)
                nbytes = sum(reg_size(z) for z in op.sizes) if len(op.sizes) > 1 else op.size
                parts = [be32(a["sreg"], reg), be32(a["dreg"], reg), be32(a["len"], nbytes),
                         be32(a["modulus"], body["mod"])]
                if "seed" in body:
                    parts.append(be32(a["seed"], body["seed"]))
                parts += [be32(a["offset"], body.get("offset", 0)), be32(a["type"], 0)]
            else:
                parts = [be32(a["dreg"], reg), be32(a["modulus"], body["mod"]),
                         be32(a["offset"], body.get("offset", 0)), be32(a["type"], 1)]
            out.append(expr("hash", *parts))
            return Operand(out, [T_INT32], [4])
        if kind == "fib":
            result = FIB_RESULTS[body["result"]]
            flags = body.get("flags", [])
            if isinstance(flags, str):
                flags = [flags]
            fl = 0
            for f in flags:
                fl |= FIB_FLAGS[f]
            a = A["fib"]
            out.append(expr("fib", be32(a["dreg"], reg), be32(a["result"], result),
                            be32(a["flags"], fl)))
            dt = {1: T["iface_index"], 2: T["ifname"], 3: T_FIB_TYPE}[result]
            return Operand(out, [dt], [dt.size])
        raise InputError(f"unknown expression {kind!r}")

    # ---- values ------------------------------------------------------------------
    def _value(self, dt: Datatype, size: int, value: Any) -> bytes:
        if isinstance(value, dict) and len(value) == 1 and "|" in value:
            v = 0
            for item in value["|"]:
                v |= int.from_bytes(self._value(dt, size, item), "big")
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
            return self._value(op.dt, op.size, value)
        v = int.from_bytes(op.dt.encode(value, 4 if op.dt.size == 0 else op.dt.size), "big"
                           if op.dt.big_endian else "little")
        top = int.from_bytes(op.mask, "big") >> op.shift
        if v > top:
            raise InputError(f"{value!r} exceeds the range 0-{top} of {op.dt.name}")
        return (v << op.shift).to_bytes(op.size, "big")

    def _key(self, op: Operand, value: Any) -> bytes:
        """Set key bytes for ``value`` (concat components padded to 32 bits)."""
        if len(op.types) == 1:
            return self._shifted(op, value)
        if not (isinstance(value, dict) and "concat" in value):
            raise InputError(f"{value!r} is not a concatenation for a concatenated key")
        parts = value["concat"]
        if len(parts) != len(op.types):
            raise InputError(f"concatenation {parts!r} has {len(parts)} parts, "
                             f"key has {len(op.types)}")
        return b"".join(self._value(t, s, p).ljust(reg_size(s), b"\0")
                        for t, s, p in zip(op.types, op.sizes, parts, strict=False))

    def _interval(self, op: Operand, value: Any) -> tuple[bytes, bytes]:
        """(first, last) key bytes of a value, prefix or range."""
        if isinstance(value, dict) and "prefix" in value:
            p = value["prefix"]
            first = self._key(op, p["addr"])
            n = int.from_bytes(first, "big")
            host = len(first) * 8 - int(p["len"])
            n &= ~((1 << host) - 1)
            size = len(first)
            return n.to_bytes(size, "big"), (n | ((1 << host) - 1)).to_bytes(size, "big")
        if isinstance(value, dict) and "range" in value:
            lo, hi = value["range"]
            return self._key(op, lo), self._key(op, hi)
        k = self._key(op, value)
        return k, k

    # ---- match -------------------------------------------------------------------
    def _st_match(self, ctx: CompileCtx, body: dict[str, Any], out: list[bytes]) -> None:
        opname = body.get("op", "==")
        left, right = body["left"], body["right"]
        # Explicit protocol matches are dependencies already satisfied.
        op = self.load(ctx, left, out)
        self._last_operand = op
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
            elif left == {"meta": {"key": "iiftype"}} and right == "ether":
                ctx.iiftype = True
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
            mask = self._value(op.dt, op.size, right)
            out.append(_bitwise(1, op.size, mask, bytes(op.size)))
            out.append(_cmp(1, 0 if opname == "!=" else 1, bytes(op.size)))
            return
        if opname == "in":
            opname = "=="
        if isinstance(right, dict) and "range" in right:
            lo, hi = self._interval(op, right)
            if not op.dt.big_endian and op.size > 1 and len(op.types) == 1:
                out.append(_byteorder_hton(op.size))
                lo, hi = lo[::-1], hi[::-1]
            if opname == "==":
                out.append(_cmp(1, 5, lo))
                out.append(_cmp(1, 3, hi))
            elif opname == "!=":
                a = A["range"]
                out.append(expr("range", be32(a["sreg"], 1), be32(a["op"], 1),
                                data_value(a["from_data"], lo), data_value(a["to_data"], hi)))
            else:
                raise InputError(f"operator {opname!r} with a range")
            return
        if isinstance(right, dict) and "prefix" in right:
            plen = int(right["prefix"]["len"])
            first, _ = self._interval(op, right)
            if op.payload is not None and plen % 8 == 0 and plen:
                # nft loads only the prefix bytes.
                base, off, _n = op.payload
                out[-1] = _payload_load(1, base, off, plen // 8)
                out.append(_cmp(1, CMP_OPS[opname], first[: plen // 8]))
            elif plen % 8 == 0 and plen and len(op.types) == 1 and op.mask is None \
                    and op.dt.kind in ("ipv4", "ipv6"):
                # ... and compares only the prefix bytes of other loads.
                out.append(_cmp(1, CMP_OPS[opname], first[: plen // 8]))
            else:
                out.append(_bitwise(1, op.size, _plen_mask(op.size, plen), bytes(op.size)))
                out.append(_cmp(1, CMP_OPS[opname], first))
            return
        if opname not in CMP_OPS:
            raise InputError(f"unknown operator {opname!r}")
        value = self._shifted(op, right)
        if opname not in ("==", "!=") and not op.dt.big_endian and op.size > 1 \
                and op.mask is None and len(op.types) == 1:
            # nft compares host-order values in network order (byteorder hton).
            out.append(_byteorder_hton(op.size))
            value = value[::-1]
        out.append(_cmp(1, CMP_OPS[opname], value))

    def _lookup(self, name: str, sreg: int, dreg: int | None, inv: bool,
                set_id: int | None = None) -> bytes:
        a = A["lookup"]
        parts = [string(a["set"], name), be32(a["sreg"], sreg)]
        if dreg is not None:
            parts.append(be32(a["dreg"], dreg))
        if set_id is not None:
            parts.append(be32(a["set_id"], set_id))
        if inv:
            parts.append(be32(a["flags"], 1))
        return expr("lookup", *parts)

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
        else:
            if concat:
                flags |= SET_CONCAT
            for i, item in enumerate(items):
                elements.append((self._key(op, item), None, 0, data[i] if data else None))
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
                    len(items))
        ctx.sets.append(s)
        return s

    # ---- verdicts ----------------------------------------------------------------
    def _verdict(self, out: list[bytes], code: int, chain: str | None = None) -> None:
        a = A["immediate"]
        out.append(expr("immediate", be32(a["dreg"], 0), data_verdict(a["data"], code, chain)))

    def _st_accept(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        self._verdict(out, 1)

    def _st_drop(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        self._verdict(out, 0)

    def _st_continue(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        self._verdict(out, VERDICTS["continue"])

    def _st_return(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        self._verdict(out, VERDICTS["return"])

    def _st_jump(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        self._verdict(out, VERDICTS["jump"], body["target"])

    def _st_goto(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        self._verdict(out, VERDICTS["goto"], body["target"])

    def _verdict_bytes(self, v: Any) -> bytes:
        if isinstance(v, dict) and len(v) == 1:
            (k, b), = v.items()
            if k in ("jump", "goto"):
                return nla.nest(2, nla.be32(1, VERDICTS[k]), nla.string(2, b["target"]))
            if k in VERDICTS:
                return nla.nest(2, nla.be32(1, VERDICTS[k]))
        raise InputError(f"{v!r} is not a verdict")

    def _st_vmap(self, ctx: CompileCtx, body: dict[str, Any], out: list[bytes]) -> None:
        op = self.load(ctx, body["key"], out)
        data = body["data"]
        if isinstance(data, str) and data.startswith("@"):
            out.append(self._lookup(data[1:], 1, 0, False))
            return
        items = data["set"]
        keys = [i[0] for i in items]
        verdicts = [self._verdict_bytes(i[1]) for i in items]
        s = self._anon_set(ctx, op, keys, verdicts, 0xFFFFFF00, 0)
        out.append(self._lookup("__set%d", 1, 0, False, s.set_id))

    # ---- simple statements -------------------------------------------------------
    def _st_counter(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        if isinstance(body, str):
            out.append(_objref(1, body))
            return
        a = A["counter"]
        body = body or {}
        out.append(expr("counter", be64(a["bytes"], body.get("bytes", 0)),
                        be64(a["packets"], body.get("packets", 0))))

    def _st_notrack(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        out.append(expr("notrack"))

    def _st_limit(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        if isinstance(body, str):
            out.append(_objref(4, body))
            return
        a = A["limit"]
        unit = LIMIT_UNITS[body.get("per", "second")]
        rate = int(body["rate"])
        ltype = 0
        burst = int(body.get("burst", 5))
        if "rate_unit" in body and body["rate_unit"] != "packets":
            ltype = 1
            rate *= BYTE_UNITS[body["rate_unit"]]
            burst = int(body.get("burst", 0)) * BYTE_UNITS[body.get("burst_unit", "bytes")]
        flags = 1 if body.get("inv") else 0
        out.append(expr("limit", be64(a["rate"], rate), be64(a["unit"], unit),
                        be32(a["burst"], burst), be32(a["type"], ltype), be32(a["flags"], flags)))

    def _st_quota(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        if isinstance(body, str):
            out.append(_objref(2, body))
            return
        a = A["quota"]
        nbytes = int(body["val"]) * BYTE_UNITS[body.get("val_unit", "bytes")]
        used = int(body.get("used", 0)) * BYTE_UNITS[body.get("used_unit", "bytes")]
        out.append(expr("quota", be64(a["bytes"], nbytes), be64(a["consumed"], used),
                        be32(a["flags"], 1 if body.get("inv") else 0)))

    def _st_ct_count(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        a = A["connlimit"]
        out.append(expr("connlimit", be32(a["count"], int(body["val"])),
                        be32(a["flags"], 1 if body.get("inv") else 0)))

    def _st_ct_helper(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        out.append(_objref(3, body))

    def _st_log(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        a = A["log"]
        body = body or {}
        parts = []
        if "prefix" in body:
            parts.append(string(a["prefix"], body["prefix"]))
        if "group" in body:
            parts.append(be16(a["group"], int(body["group"])))
            if "snaplen" in body:
                parts.append(be32(a["snaplen"], int(body["snaplen"])))
            if "queue-threshold" in body:
                parts.append(be16(a["qthreshold"], int(body["queue-threshold"])))
        else:
            if "level" in body:
                parts.append(be32(a["level"], LOG_LEVELS.index(body["level"])))
            flags = body.get("flags")
            if flags:
                if isinstance(flags, str):
                    flags = [flags]
                fl = 0
                for f in flags:
                    fl |= LOG_ALL if f == "all" else LOG_FLAGS[f]
                parts.append(be32(a["flags"], fl))
        out.append(expr("log", *parts))

    def _st_reject(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        a = A["reject"]
        body = body or {}
        rtype = body.get("type")
        if rtype is None:
            if ctx.family == "ip":
                rtype, code = "icmp", "port-unreachable"
            elif ctx.family == "ip6":
                rtype, code = "icmpv6", "port-unreachable"
            else:
                rtype, code = "icmpx", "port-unreachable"
        else:
            code = body.get("expr", "port-unreachable")
        if rtype == "tcp reset":
            self._dep(ctx, "tcp", out)
            out.append(expr("reject", be32(a["type"], 1), u8(a["icmp_code"], 0)))
            return
        if rtype == "icmp" and ctx.family in ("inet", "bridge", "netdev"):
            self._dep(ctx, "ip", out)
        if rtype == "icmpv6" and ctx.family in ("inet", "bridge", "netdev"):
            self._dep(ctx, "ip6", out)
        dt = {"icmp": T["icmp_code"], "icmpv6": T["icmpv6_code"], "icmpx": T["icmpx_code"]}[rtype]
        out.append(expr("reject", be32(a["type"], REJECT_TYPES[rtype]),
                        u8(a["icmp_code"], dt.encode(code, 1)[0])))

    # ---- nat ---------------------------------------------------------------------
    def _nat(self, ctx: CompileCtx, body: Any, out: list[bytes], nat_type: int) -> None:
        body = body or {}
        fam = body.get("family") or (ctx.family if ctx.family in ("ip", "ip6") else None)
        addr = body.get("addr")
        port = body.get("port")
        a = A["nat"]
        parts = [be32(a["type"], nat_type)]
        flags = 0
        reg = 1
        if addr is not None:
            if fam is None:
                fam = "ip6" if ":" in str(addr) else "ip"
            dt = T["ipv6_addr" if fam == "ip6" else "ipv4_addr"]
            op = Operand([], [dt], [dt.size])
            if isinstance(addr, dict) and ("prefix" in addr or "range" in addr):
                lo, hi = self._interval(op, addr)
                out.append(_immediate(1, lo))
                out.append(_immediate(2, hi))
                parts += [be32(a["family"], L3_PROTO[fam]), be32(a["reg_addr_min"], 1),
                          be32(a["reg_addr_max"], 2)]
                reg = 3
                flags |= NAT_MAP_IPS
            elif isinstance(addr, dict):
                mop = self.load(ctx, addr, out)
                parts += [be32(a["family"], L3_PROTO[fam]), be32(a["reg_addr_min"], 1)]
                if len(mop.types) > 1 and mop.types[1].name == "inet_service" and port is None:
                    parts.append(be32(a["reg_proto_min"], reg32(reg_size(mop.sizes[0]) // 4)))
                reg = 3
            else:
                out.append(_immediate(1, dt.encode(addr)))
                parts += [be32(a["family"], L3_PROTO[fam]), be32(a["reg_addr_min"], 1)]
                if port is not None:
                    parts.append(be32(a["reg_addr_max"], 1))
                    flags |= NAT_MAP_IPS
                reg = 2 if dt.size == 4 else 2
        elif fam is not None:
            parts.append(be32(a["family"], L3_PROTO[fam]))
        if port is not None:
            plo, phi = self._ports(port)
            out.append(_immediate(reg, plo))
            if phi != plo:
                out.append(_immediate(reg + 1, phi))
                parts += [be32(a["reg_proto_min"], reg), be32(a["reg_proto_max"], reg + 1)]
            else:
                parts += [be32(a["reg_proto_min"], reg), be32(a["reg_proto_max"], reg)]
            flags |= NAT_PROTO
        flags |= self._nat_flags(body)
        if flags:
            parts.append(be32(a["flags"], flags))
        out.append(expr("nat", *parts))

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
        a = A[name]
        parts = []
        if "port" in body:
            plo, phi = self._ports(body["port"])
            out.append(_immediate(1, plo))
            if phi != plo:
                out.append(_immediate(2, phi))
            parts += [be32(a["reg_proto_min"], 1), be32(a["reg_proto_max"], 2 if phi != plo else 1)]
        flags = self._nat_flags(body) | (NAT_PROTO if "port" in body else 0)
        if flags:
            parts.append(be32(a["flags"], flags))
        out.append(expr(name, *parts))

    def _st_masquerade(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        self._masq_redir("masq", body, out)

    def _st_redirect(self, ctx: CompileCtx, body: Any, out: list[bytes]) -> None:
        self._masq_redir("redir", body, out)

    # ---- mangle (meta/ct set) ----------------------------------------------------
    def _st_mangle(self, ctx: CompileCtx, body: dict[str, Any], out: list[bytes]) -> None:
        key, value = body["key"], body["value"]
        (kind, kb), = key.items()
        if kind == "meta":
            num, tname, size = META[kb["key"]]
        elif kind == "ct":
            num, tname, size = CT[kb["key"]]
        else:
            raise InputError(f"cannot set {kind} (only meta and ct keys)")
        dt = T[tname]
        if isinstance(value, dict):
            self.load(ctx, value, out)
        else:
            out.append(_immediate(1, self._value(dt, size, value)))
        if kind == "meta":
            a = A["meta"]
            out.append(expr("meta", be32(a["key"], num), be32(a["sreg"], 1)))
        else:
            a = A["ct"]
            parts = [be32(a["key"], num)]
            if "dir" in kb:
                parts.append(u8(a["direction"], {"original": 0, "reply": 1}[kb["dir"]]))
            parts.append(be32(a["sreg"], 1))
            out.append(expr("ct", *parts))

    # ---- set updates from the packet path ----------------------------------------
    def _dynset(self, ctx: CompileCtx, body: dict[str, Any], out: list[bytes], is_map: bool
                ) -> None:
        a = A["dynset"]
        opname = body["op"]
        elem = body["elem"]
        timeout = None
        if isinstance(elem, dict) and "elem" in elem:
            timeout = elem["elem"].get("timeout")
            elem = elem["elem"]["val"]
        op = self.load(ctx, elem, out)
        nslots = sum(reg_size(z) // 4 for z in op.sizes)
        target = body["map" if is_map else "set"]
        parts = [string(a["set_name"], target.lstrip("@")),
                 be32(a["op"], {"add": 0, "update": 1, "delete": 2}[opname]),
                 be32(a["sreg_key"], 1)]
        if is_map:
            dslot = ((nslots + 3) // 4) * 4
            self.load(ctx, body["data"], out, dslot) if isinstance(body["data"], dict) else \
                out.append(_immediate(reg32(dslot), T["mark"].encode(body["data"], 4)))
            parts.append(be32(a["sreg_data"], reg32(dslot)))
        if timeout is not None:
            parts.append(be64(a["timeout"], int(timeout) * 1000))
        out.append(expr("dynset", *parts))

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
            fl |= {"bypass": 1, "fanout": 2}[f]
        if queue_mode() == "nft":
            a = A["queue"]
            out.append(expr("queue", be16(a["num"], num), be16(a["total"], total),
                            be16(a["flags"], fl)))
        else:
            # xt NFQUEUE v3 target (struct xt_NFQ_info_v3: queuenum, queues_total, flags).
            if ctx.family not in ("ip", "ip6", "bridge", "arp"):
                raise InputError(f"queue in a {ctx.family} table needs the nft queue "
                                 "expression, which this kernel lacks (the xt NFQUEUE "
                                 "target it falls back to exists only for ip and ip6)")
            a = A["target"]
            info = int(num).to_bytes(2, "little") + total.to_bytes(2, "little") + \
                fl.to_bytes(2, "little") + b"\0\0"
            out.append(expr("target", string(a["name"], "NFQUEUE"), be32(a["rev"], 3),
                            nla.attr(a["info"], info)))


_QUEUE_MODE: list[str] = []
QUEUE_PROBE: list[Any] = []  # () -> "nft" | "xt", asks the kernel (transaction layer)


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


def _rule_shape(stmts: Any) -> tuple[tuple[Any, ...], list[Any]] | None:
    """(shape key, values) of a rule that may be made only of `match` statements of
    a payload field against a scalar and constant statements without a body; None
    when it is certainly not.  Rules of one shape differ only in those values (one
    template encodes them all); `RuleCompiler._rule_template` checks the rest once."""
    key: list[Any] = []
    rights: list[Any] = []
    try:
        for stmt in stmts:
            (kind, body), = stmt.items()
            if body is None:
                key.append(kind)
                continue
            right = body["right"]
            (lk, p), = body["left"].items()
            key.append((kind, body.get("op", "=="), len(body), lk, p["protocol"], p["field"],
                        len(p), type(right)))
            rights.append(right)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return tuple(key), rights


_CMP_NAME = nla.attr(1, b"cmp\0")
_PAD_FOR = (b"", b"\0\0\0", b"\0\0", b"\0")
_CONST_STMTS = {"accept", "drop", "return", "continue", "jump", "goto", "counter", "notrack",
                "masquerade", "log", "limit", "reject"}
_DEP_LEFTS = [{"meta": {"key": "l4proto"}}, {"meta": {"key": "nfproto"}},
              {"meta": {"key": "iiftype"}},
              {"payload": {"protocol": "ip", "field": "protocol"}},
              {"payload": {"protocol": "ip6", "field": "nexthdr"}}]


def queue_mode() -> str:
    """"nft" when the kernel has the nft queue expression, else "xt" (NFQUEUE target).

    Set by the transaction layer after probing, or by the probe it registers in
    `QUEUE_PROBE` (run once, when the first queue statement is compiled); defaults
    to "nft"."""
    if not _QUEUE_MODE and QUEUE_PROBE:
        set_queue_mode(QUEUE_PROBE[0]())
    return _QUEUE_MODE[0] if _QUEUE_MODE else "nft"


def set_queue_mode(mode: str) -> None:
    _QUEUE_MODE[:] = [mode]


def _byteorder_hton(size: int) -> bytes:
    a = A["byteorder"]
    return expr("byteorder", be32(a["sreg"], 1), be32(a["dreg"], 1), be32(a["op"], 1),
                be32(a["len"], size), be32(a["size"], size))


def _objref(objtype: int, name: str) -> bytes:
    a = A["objref"]
    return expr("objref", be32(a["imm_type"], objtype), string(a["imm_name"], name))


def _meta_load(reg: int, key: int) -> bytes:
    a = A["meta"]
    return expr("meta", be32(a["key"], key), be32(a["dreg"], reg))


def _payload_load(reg: int, base: int, off: int, ln: int) -> bytes:
    a = A["payload"]
    return expr("payload", be32(a["dreg"], reg), be32(a["base"], base),
                be32(a["offset"], off), be32(a["len"], ln))


def _cmp(reg: int, op: int, value: bytes) -> bytes:
    a = A["cmp"]
    return expr("cmp", be32(a["sreg"], reg), be32(a["op"], op), data_value(a["data"], value))


def _bitwise(reg: int, ln: int, mask: bytes, xor: bytes) -> bytes:
    a = A["bitwise"]
    return expr("bitwise", be32(a["sreg"], reg), be32(a["dreg"], reg), be32(a["len"], ln),
                data_value(a["mask"], mask), data_value(a["xor"], xor))


def _immediate(reg: int, value: bytes) -> bytes:
    a = A["immediate"]
    return expr("immediate", be32(a["dreg"], reg), data_value(a["data"], value))


def prefix_of(lo: bytes, hi: bytes) -> int | None:
    """Prefix length if [lo, hi] is exactly one prefix, else None."""
    a, b = int.from_bytes(lo, "big"), int.from_bytes(hi, "big")
    bits = len(lo) * 8
    span = a ^ b
    host = span.bit_length()
    if span != (1 << host) - 1 or a & span or (b & span) != span:
        return None
    return bits - host


def ip_text(fam: str, raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if fam == "ip6" else socket.AF_INET, raw)



# ==== kernel expressions -> statements ===========================================

def parse_exprs(buf: bytes, start: int = 0, end: int | None = None
                ) -> list[tuple[str, dict[str, bytes]]]:
    """NFTA_RULE_EXPRESSIONS payload -> [(expression name, {attribute: payload})]."""
    from nfkit.netlink.specs.nftables import TABLES, names

    out = []
    for _t, s, e in nla.walk(buf, start, end):
        name = ""
        data: dict[str, bytes] = {}
        for t2, s2, e2 in nla.walk(buf, s, e):
            if t2 == 1:
                name = nla.get_str(buf[s2:e2])
            elif t2 == 2:
                table = name if name in TABLES else None
                nm = names(table) if table else {}
                for t3, s3, e3 in nla.walk(buf, s2, e2):
                    data[nm.get(t3, str(t3))] = bytes(buf[s3:e3])
        out.append((name, data))
    return out


def _data_value(b: bytes) -> bytes:
    for t, s, e in nla.walk(b):
        if t == 1:
            return b[s:e]
    return b""


def _data_verdict(b: bytes) -> dict[str, Any]:
    for t, s, e in nla.walk(b):
        if t == 2:
            v = nla.attrs(b, s, e)
            code = nla.get_be32(v[1])
            name = VERDICT_NAMES.get(code, str(code))
            if name in ("jump", "goto"):
                return {name: {"target": nla.get_str(v[2])}}
            return {name: None}
    raise InputError("verdict data without a verdict")


@dataclass
class RegValue:
    left: Any  # JSON expression (None for an immediate)
    types: list[Datatype]
    sizes: list[int]
    payload: tuple[int, int, int] | None = None  # raw load (base, off, len)
    mask: bytes | None = None
    xor: bytes | None = None
    imm: bytes | None = None
    verdict: Any = None
    fresh: bool = True  # not consumed yet (for range merging)


@dataclass
class SetView:
    """What the decoder needs of a set: flags, key and data types, elements."""

    name: str
    flags: int
    key_types: list[Datatype]
    key_len: int
    data_type: int
    data_len: int
    elements: list[tuple[bytes, bytes | None, int, Any]]  # key, key_end, flags, data


class RuleDecoder:
    """Decodes one rule's kernel expressions to statements as nft prints them."""

    def __init__(self, family: str, sets: dict[str, SetView] | None = None) -> None:
        self.family = family
        self.sets = sets or {}

    def decode(self, exprs: list[tuple[str, dict[str, bytes]]]) -> list[dict[str, Any]]:
        self.regs: dict[int, RegValue] = {}
        self.out: list[dict[str, Any]] = []
        self.l3 = self.family if self.family in ("ip", "ip6") else None
        self.l4: str | None = None
        self.dep_l3: int | None = None  # index in out of a removable dependency
        self.dep_l4: int | None = None
        self.dep_ll: int | None = None
        self.dep_ll_seen = False
        self.vlan_seen = False
        self.dep_vlan: int | None = None
        self.drop: set[int] = set()
        self.last_match: tuple[int, int] | None = None  # (out index, reg)
        self.cmp_seen = 0
        self.cmp_log: list[tuple[int, RegValue, Any]] = []  # plain cmp -> (out index, reg, left)
        self.merged = False
        for name, a in exprs:
            fn = getattr(self, "_x_" + name, None)
            if fn is None:
                self.out.append({"nfkit-raw": {"expr": name, "attrs": {
                    k: v.hex() for k, v in a.items()}}})
                continue
            try:
                fn(a)
            except (KeyError, IndexError, ValueError, InputError) as exc:
                self.out.append({"nfkit-raw": {"expr": name, "error": str(exc), "attrs": {
                    k: v.hex() for k, v in a.items()}}})
        return [s for i, s in enumerate(self.out) if i not in self.drop]

    # ---- helpers -----------------------------------------------------------------
    def _slot(self, reg: int) -> int:
        return (reg - 1) * 4 if reg <= 4 else reg - 8

    def _set(self, reg: int, v: RegValue) -> None:
        self.regs[self._slot(reg)] = v

    def _get(self, reg: int) -> RegValue:
        v = self.regs.get(self._slot(reg))
        if v is None:
            raise InputError(f"register {reg} read before written")
        return v

    def _resolve_payload(self, v: RegValue, want_len: int | None = None) -> None:
        """Turn a raw payload load into a named field (uses protocol context)."""
        if v.payload is None or v.left is not None:
            return
        base, off, ln = v.payload
        cands = []
        for (proto, fld), (b, boff, blen, tname) in PAYLOAD.items():
            if b != base:
                continue
            if v.mask is not None:
                start = boff - off * 8
                if boff // 8 != off or (start + blen + 7) // 8 != ln:
                    continue
                shift = ln * 8 - start - blen
                m = (((1 << blen) - 1) << shift).to_bytes(ln, "big")
                if m != v.mask:
                    continue
            elif boff != off * 8 or (blen != ln * 8 and not (want_len and blen > ln * 8)):
                continue
            cands.append((proto, fld, tname, blen))
        ll = None
        if self.family == "bridge" or self.dep_ll_seen:
            ll = "vlan" if self.vlan_seen and off >= 14 else "ether"
        proto_ctx = {LL: ll, NH: self.l3, TH: self.l4}.get(base)
        pick = None
        for c in cands:
            if c[0] == proto_ctx:
                pick = c
                break
        if pick is None and base == TH:
            for c in cands:
                if c[0] == "th":
                    pick = c
                    break
        if pick is None:
            v.left = {"payload": {"base": {0: "ll", 1: "nh", 2: "th", 3: "ih"}[base],
                                  "offset": off * 8, "len": ln * 8}}
            v.types, v.sizes = [T_INT32], [ln]
            if v.mask is not None:
                v.left = {"&": [v.left, int.from_bytes(v.mask, "big")]}
                v.mask = None
            return
        proto, fld, tname, blen = pick
        v.left = {"payload": {"protocol": proto, "field": fld}}
        v.types = [T[tname]]
        v.sizes = [ln]
        self._kill_dep(proto)
        if v.mask is not None:
            start = PAYLOAD[(proto, fld)][1] - off * 8
            v.xor = None
            v.mask = None
            self._shift = ln * 8 - start - blen
            v.imm = b"shifted"  # marker: values are shifted
            v.sizes = [ln]
            v.verdict = self._shift
        if blen > ln * 8:
            v.verdict = ("prefix", ln * 8)

    def _kill_dep(self, proto: str) -> None:
        if proto in L4_PROTO and self.dep_l4 is not None:
            stmt = self.out[self.dep_l4]
            right = stmt["match"]["right"]
            if {"ipv6-icmp": "icmpv6"}.get(right, right) == proto:
                self.drop.add(self.dep_l4)
            self.dep_l4 = None
        elif proto in L3_PROTO and self.dep_l3 is not None:
            stmt = self.out[self.dep_l3]
            if stmt["match"]["right"] in ({"ip": "ipv4", "ip6": "ipv6"}[proto],
                                          {"ip": "ip", "ip6": "ip6"}[proto]):
                self.drop.add(self.dep_l3)
            self.dep_l3 = None
        elif proto in ("ether", "vlan") and self.dep_ll is not None:
            self.drop.add(self.dep_ll)
            self.dep_ll = None
        if proto == "vlan" and self.dep_vlan is not None:
            self.drop.add(self.dep_vlan)
            self.dep_vlan = None

    def _value(self, v: RegValue, raw: bytes) -> Any:
        if getattr(v, "hton", False):
            raw = raw[::-1]
        if v.imm == b"shifted":
            n = int.from_bytes(raw, "big") >> int(v.verdict)
            dt = v.types[0]
            size = max(dt.size, 1)
            return dt.decode(n.to_bytes(size, "big" if dt.big_endian else "little"))
        if len(v.types) > 1:
            return {"concat": self._concat_values(v, raw)}
        dt = v.types[0]
        if dt.kind in ("ipv4", "ipv6", "ether") and len(raw) != dt.size:
            raw = raw.ljust(dt.size, b"\0")[: dt.size]
        return dt.decode(raw)

    def _concat_values(self, v: RegValue, raw: bytes) -> list[Any]:
        vals = []
        pos = 0
        for dt, size in zip(v.types, v.sizes, strict=False):
            vals.append(dt.decode(raw[pos:pos + size]))
            pos += reg_size(size)
        return vals

    # ---- loads -------------------------------------------------------------------
    def _x_payload(self, a: dict[str, bytes]) -> None:
        base, off, ln = (nla.get_be32(a["base"]), nla.get_be32(a["offset"]),
                         nla.get_be32(a["len"]))
        if "sreg" in a:
            self.out.append({"nfkit-raw": {"expr": "payload", "attrs": {
                k: v.hex() for k, v in a.items()}}})
            return
        self._set(nla.get_be32(a["dreg"]), RegValue(None, [T_INT32], [ln], (base, off, ln)))

    def _x_meta(self, a: dict[str, bytes]) -> None:
        key = nla.get_be32(a["key"])
        from nfkit.nftables.types import META_BY_NUM

        name = META_BY_NUM.get(key)
        if name is None:
            raise InputError(f"unknown meta key {key}")
        _n, tname, size = META[name]
        if "sreg" in a:
            v = self._get(nla.get_be32(a["sreg"]))
            value = self._set_value(v, T[tname])
            self.out.append({"mangle": {"key": {"meta": {"key": name}}, "value": value}})
            return
        self._set(nla.get_be32(a["dreg"]), RegValue({"meta": {"key": name}}, [T[tname]], [size]))

    def _set_value(self, v: RegValue, dt: Datatype) -> Any:
        if v.left is None and v.imm is not None:
            return dt.decode(v.imm)
        self._resolve_payload(v)
        return v.left

    def _x_ct(self, a: dict[str, bytes]) -> None:
        from nfkit.nftables.types import CT_BY_NUM

        key = nla.get_be32(a["key"])
        name = CT_BY_NUM.get(key)
        if name is None:
            raise InputError(f"unknown ct key {key}")
        _n, tname, size = CT[name]
        left: dict[str, Any] = {"key": name}
        if "direction" in a:
            left["dir"] = {0: "original", 1: "reply"}[a["direction"][0]]
        if "sreg" in a:
            v = self._get(nla.get_be32(a["sreg"]))
            value = self._set_value(v, T[tname])
            self.out.append({"mangle": {"key": {"ct": left}, "value": value}})
            return
        if name in ("saddr", "daddr") and self.l3 == "ip6":
            tname, size = "ipv6_addr", 16
        self._set(nla.get_be32(a["dreg"]), RegValue({"ct": left}, [T[tname]], [size]))

    def _x_bitwise(self, a: dict[str, bytes]) -> None:
        v = self._get(nla.get_be32(a["sreg"]))
        if "mask" not in a:
            raise InputError("shift bitwise not decoded")
        mask, xor = _data_value(a["mask"]), _data_value(a["xor"])
        dreg = nla.get_be32(a["dreg"])
        if v.payload is not None and v.left is None and not any(xor):
            # A sub-byte header field (ip dscp, ip version, ...)?
            v.mask = mask
            self._resolve_payload(v)
            if v.imm == b"shifted":
                self._set(dreg, v)
                return
            if v.left is not None and "&" in v.left:
                v.left, v.types = None, [T_INT32]
            v.mask = None
            v.left = None
            self._resolve_payload(v)
        elif v.left is None:
            self._resolve_payload(v)
        self._set(dreg, RegValue(v.left, v.types, v.sizes, None, mask, xor))

    def _x_byteorder(self, a: dict[str, bytes]) -> None:
        v = self._get(nla.get_be32(a["sreg"]))
        if nla.get_be32(a["op"]) != 1:
            raise InputError("ntoh byteorder not decoded")
        if v.left is None:
            self._resolve_payload(v)
        nv = RegValue(v.left, v.types, v.sizes, None, v.mask, v.xor)
        nv.hton = True  # type: ignore[attr-defined]
        self._set(nla.get_be32(a["dreg"]), nv)

    def _x_immediate(self, a: dict[str, bytes]) -> None:
        dreg = nla.get_be32(a["dreg"])
        if dreg == 0:
            self.out.append(_data_verdict(a["data"]))
            return
        self._set(dreg, RegValue(None, [T_INT32], [0], imm=_data_value(a["data"])))

    def _x_numgen(self, a: dict[str, bytes]) -> None:
        left = {"numgen": {"mode": {0: "inc", 1: "random"}[nla.get_be32(a["type"])],
                           "mod": nla.get_be32(a["modulus"]),
                           "offset": nla.get_be32(a.get("offset", b"\0\0\0\0"))}}
        self._set(nla.get_be32(a["dreg"]), RegValue(left, [T_INT32], [4]))

    def _x_hash(self, a: dict[str, bytes]) -> None:
        htype = nla.get_be32(a.get("type", b"\0\0\0\0"))
        body: dict[str, Any] = {"mod": nla.get_be32(a["modulus"])}
        if htype == 0:
            src = self._get(nla.get_be32(a["sreg"]))
            self._resolve_payload(src)
            left = self._concat_left(nla.get_be32(a["sreg"]), nla.get_be32(a["len"]))
            body["expr"] = left
            if "seed" in a:
                body["seed"] = nla.get_be32(a["seed"])
            off = nla.get_be32(a.get("offset", b"\0\0\0\0"))
            if off:
                body["offset"] = off
            self._set(nla.get_be32(a["dreg"]), RegValue({"jhash": body}, [T_INT32], [4]))
        else:
            off = nla.get_be32(a.get("offset", b"\0\0\0\0"))
            if off:
                body["offset"] = off
            self._set(nla.get_be32(a["dreg"]), RegValue({"symhash": body}, [T_INT32], [4]))

    def _x_fib(self, a: dict[str, bytes]) -> None:
        result = nla.get_be32(a["result"])
        fl = nla.get_be32(a["flags"])
        flags = [n for n, bit in FIB_FLAGS.items() if fl & bit]
        left = {"fib": {"result": FIB_RESULT_NAMES[result],
                        "flags": flags}}
        dt = {1: T["iface_index"], 2: T["ifname"], 3: T_FIB_TYPE}[result]
        self._set(nla.get_be32(a["dreg"]), RegValue(left, [dt], [dt.size]))

    def _concat_left(self, reg: int, nbytes: int) -> Any:
        slot = self._slot(reg)
        parts = []
        types: list[Datatype] = []
        sizes: list[int] = []
        used = 0
        while used < nbytes:
            v = self.regs.get(slot)
            if v is None:
                break
            self._resolve_payload(v)
            parts.append(v.left)
            types += v.types
            sizes += v.sizes
            step = sum(reg_size(s) for s in v.sizes)
            used += step
            slot += step // 4
        if len(parts) == 1:
            return parts[0]
        return {"concat": parts}

    # ---- comparisons -------------------------------------------------------------
    def _match(self, left: Any, op: str, right: Any, reg: int) -> None:
        self.out.append({"match": {"op": op, "left": left, "right": right}})
        self.last_match = (len(self.out) - 1, reg)

    def _x_cmp(self, a: dict[str, bytes]) -> None:
        self.cmp_seen += 1
        reg = nla.get_be32(a["sreg"])
        v = self._get(reg)
        op = CMP_NAMES[nla.get_be32(a["op"])]
        raw = _data_value(a["data"])
        if v.payload is not None and v.left is None:
            self._resolve_payload(v, len(raw))
        fresh = v.fresh
        v.fresh = False
        left = v.left
        # flags: (x & mask) != 0
        if v.mask is not None and not any(raw) and op in ("!=", "=="):
            dt = v.types[0]
            if dt.kind in ("bitmask", "ctlabel"):
                value = dt.decode(v.mask)
                self._match(left, "in" if op == "!=" else "==", value if op == "!=" else 0, reg)
                if op == "==":
                    self.out[-1] = {"match": {"op": "==", "left": {"&": [left, value]},
                                              "right": 0}}
                return
        if v.mask is not None and v.types[0].kind in ("ipv4", "ipv6", "ether", "int"):
            plen = prefix_of(v.mask, b"\xff" * len(v.mask))
            m = int.from_bytes(v.mask, "big")
            if v.types[0].kind in ("ipv4", "ipv6") and plen is None:
                ones = bin(m).count("1")
                if m == ((1 << ones) - 1) << (len(v.mask) * 8 - ones):
                    plen = ones
            if v.types[0].kind in ("ipv4", "ipv6") and m and \
                    m == ((1 << bin(m).count("1")) - 1) << (len(v.mask) * 8 - bin(m).count("1")):
                plen = bin(m).count("1")
                self._match(left, op, {"prefix": {"addr": self._value(v, raw), "len": plen}},
                            reg)
                return
            dt = v.types[0]
            mv = dt.decode(v.mask) if dt.kind != "int" else int.from_bytes(
                v.mask, "big" if dt.big_endian else "little")
            self._match({"&": [left, mv]}, op, self._value(v, raw), reg)
            return
        if v.mask is not None and v.types[0].kind == "bitmask":
            self._match({"&": [left, v.types[0].decode(v.mask)]}, op, self._value(v, raw), reg)
            return
        if v.mask is None and v.types[0].kind in ("ipv4", "ipv6") and len(v.types) == 1 \
                and 0 < len(raw) < v.types[0].size:
            self._match(left, op, {"prefix": {"addr": self._value(v, raw),
                                              "len": len(raw) * 8}}, reg)
            return
        if isinstance(v.verdict, tuple) and v.verdict[0] == "prefix":
            self._match(left, op, {"prefix": {"addr": self._value(v, raw),
                                              "len": v.verdict[1]}}, reg)
            return
        # Range: cmp >= then cmp <= on the same load.
        if op == "<=" and not fresh and self.last_match is not None and \
                self.last_match[1] == reg:
            prev = self.out[self.last_match[0]]["match"]
            if prev["op"] == ">=" and prev["left"] == left:
                prev["op"] = "=="
                prev["right"] = {"range": [prev["right"], self._value(v, raw)]}
                self.merged = True
                return
        value = self._value(v, raw)
        self._match(left, op, value, reg)
        self.cmp_log.append((len(self.out) - 1, v, left))
        if op == "==" and isinstance(left, dict):
            if left == {"meta": {"key": "l4proto"}} or left in (
                    {"payload": {"protocol": "ip", "field": "protocol"}},
                    {"payload": {"protocol": "ip6", "field": "nexthdr"}}):
                self.l4 = {"ipv6-icmp": "icmpv6"}.get(value, value)  # type: ignore[arg-type]
                if left == {"meta": {"key": "l4proto"}}:
                    self.dep_l4 = len(self.out) - 1
            elif left == {"meta": {"key": "nfproto"}}:
                self.l3 = {"ipv4": "ip", "ipv6": "ip6"}.get(value, None)  # type: ignore[arg-type]
                self.dep_l3 = len(self.out) - 1
            elif left in ({"meta": {"key": "protocol"}},
                          {"payload": {"protocol": "ether", "field": "type"}}):
                self.l3 = {"ip": "ip", "ip6": "ip6"}.get(value, None)  # type: ignore[arg-type]
                self.dep_l3 = len(self.out) - 1
            elif left == {"meta": {"key": "iiftype"}} and value == "ether":
                self.dep_ll = len(self.out) - 1
                self.dep_ll_seen = True
            if left == {"payload": {"protocol": "ether", "field": "type"}} and value == "vlan":
                self.vlan_seen = True
                self.dep_vlan = len(self.out) - 1

    def _x_range(self, a: dict[str, bytes]) -> None:
        reg = nla.get_be32(a["sreg"])
        v = self._get(reg)
        self._resolve_payload(v)
        op = CMP_NAMES[nla.get_be32(a["op"])]
        lo, hi = _data_value(a["from_data"]), _data_value(a["to_data"])
        self._match(v.left, op, {"range": [self._value(v, lo), self._value(v, hi)]}, reg)

    def _x_lookup(self, a: dict[str, bytes]) -> None:
        name = nla.get_str(a["set"])
        sreg = nla.get_be32(a["sreg"])
        s = self.sets.get(name)
        if s is None and "set_id" in a:  # not yet named by the kernel (normalize)
            s = self.sets.get(f"id:{nla.get_be32(a['set_id'])}")
        if s is not None:
            nbytes = s.key_len
        else:
            nbytes = 0
        first = self._get(sreg)
        self._resolve_payload(first)
        if s is not None and len(s.key_types) > 1:
            left = self._concat_left(sreg, nbytes)
        else:
            left = first.left
        inv = "flags" in a and nla.get_be32(a["flags"]) & 1
        if s is not None and s.flags & SET_ANONYMOUS:
            right: Any = {"set": self._render_elements(s, left)}
        else:
            right = "@" + name
        if "dreg" in a:
            dreg = nla.get_be32(a["dreg"])
            if dreg == 0:
                self.out.append({"vmap": {"key": left, "data": right}})
            else:
                from nfkit.nftables.types import split_type_id

                dts = split_type_id(s.data_type) if s and s.data_type else [T_INT32]
                mv = RegValue({"map": {"key": left, "data": right}}, dts,
                              [t.size for t in dts])
                self._set(dreg, mv)
                if len(dts) > 1:
                    part = RegValue(None, dts[1:], [t.size for t in dts[1:]])
                    part.map_part = True  # type: ignore[attr-defined]
                    self.regs[self._slot(dreg) + reg_size(dts[0].size) // 4] = part
            return
        self._match(left, "!=" if inv else "==", right, sreg)

    def _left_types(self, s: SetView, left: Any) -> tuple[list[Datatype], list[int]]:
        return s.key_types, [t.size or (s.key_len if len(s.key_types) == 1 else 4)
                             for t in s.key_types]

    def _render_elements(self, s: SetView, left: Any) -> list[Any]:
        return render_elements(s)

    # ---- statements --------------------------------------------------------------
    def _x_counter(self, a: dict[str, bytes]) -> None:
        self.out.append({"counter": {"packets": nla.get_be64(a.get("packets", bytes(8))),
                                     "bytes": nla.get_be64(a.get("bytes", bytes(8)))}})

    def _x_notrack(self, a: dict[str, bytes]) -> None:
        self.out.append({"notrack": None})

    def _x_limit(self, a: dict[str, bytes]) -> None:
        rate = nla.get_be64(a["rate"])
        unit = LIMIT_UNIT_NAMES.get(nla.get_be64(a["unit"]), "second")
        burst = nla.get_be32(a.get("burst", b"\0\0\0\0"))
        ltype = nla.get_be32(a.get("type", b"\0\0\0\0"))
        body: dict[str, Any]
        if ltype == 0:
            body = {"rate": rate, "burst": burst, "per": unit}
        else:
            r, ru = _bytes_unit(rate)
            b, bu = _bytes_unit(burst)
            body = {"rate": r, "burst": b, "per": unit, "rate_unit": ru, "burst_unit": bu}
        if nla.get_be32(a.get("flags", b"\0\0\0\0")) & 1:
            body["inv"] = True
        self.out.append({"limit": body})

    def _x_quota(self, a: dict[str, bytes]) -> None:
        n, u = _bytes_unit(nla.get_be64(a["bytes"]))
        body: dict[str, Any] = {"val": n, "val_unit": u}
        used = nla.get_be64(a.get("consumed", bytes(8)))
        if used:
            un, uu = _bytes_unit(used)
            body["used"] = un
            body["used_unit"] = uu
        if nla.get_be32(a.get("flags", b"\0\0\0\0")) & 1:
            body["inv"] = True
        self.out.append({"quota": body})

    def _x_connlimit(self, a: dict[str, bytes]) -> None:
        body: dict[str, Any] = {"val": nla.get_be32(a["count"])}
        if nla.get_be32(a.get("flags", b"\0\0\0\0")) & 1:
            body["inv"] = True
        self.out.append({"ct count": body})

    def _x_objref(self, a: dict[str, bytes]) -> None:
        kind = OBJ_TYPE_NAMES[nla.get_be32(a["imm_type"])]
        self.out.append({kind: nla.get_str(a["imm_name"])})

    def _x_log(self, a: dict[str, bytes]) -> None:
        body: dict[str, Any] = {}
        if "prefix" in a:
            body["prefix"] = nla.get_str(a["prefix"])
        if "group" in a:
            body["group"] = nla.get_be16(a["group"])
            sl = nla.get_be32(a.get("snaplen", b"\0\0\0\0"))
            if sl:
                body["snaplen"] = sl
            qt = nla.get_be16(a.get("qthreshold", b"\0\0"))
            if qt:
                body["queue-threshold"] = qt
        if "level" in a:
            lvl = nla.get_be32(a["level"])
            if lvl != 4:
                body["level"] = LOG_LEVELS[lvl]
        if "flags" in a:
            fl = nla.get_be32(a["flags"])
            if fl == LOG_ALL:
                body["flags"] = "all"
            elif fl:
                names = [n for n, bit in LOG_FLAGS.items() if fl & bit]
                body["flags"] = names[0] if len(names) == 1 else names
        self.out.append({"log": body or None})

    def _x_reject(self, a: dict[str, bytes]) -> None:
        rtype = nla.get_be32(a["type"])
        code = a.get("icmp_code", b"\0")[0]
        if rtype == 1:
            if self.family in ("ip", "ip6") and self.dep_l4 is not None:
                self._kill_dep("tcp")
            self.out.append({"reject": {"type": "tcp reset"}})
            return
        if rtype == 2:
            self.out.append({"reject": {"type": "icmpx", "expr": T["icmpx_code"].decode(
                bytes((code,)))}})
            return
        v6 = self.l3 == "ip6"
        dt = T["icmpv6_code" if v6 else "icmp_code"]
        if self.dep_l3 is not None:
            self.drop.add(self.dep_l3)
            self.dep_l3 = None
        self.out.append({"reject": {"type": "icmpv6" if v6 else "icmp",
                                    "expr": dt.decode(bytes((code,)))}})

    def _x_nat(self, a: dict[str, bytes]) -> None:
        ntype = {0: "snat", 1: "dnat"}[nla.get_be32(a["type"])]
        body: dict[str, Any] = {}
        fam = {2: "ip", 10: "ip6"}.get(nla.get_be32(a["family"])) if "family" in a else None
        if fam and self.family == "inet":
            body["family"] = fam
        flags = nla.get_be32(a.get("flags", b"\0\0\0\0"))
        if "reg_addr_min" in a:
            lo_v = self._get(nla.get_be32(a["reg_addr_min"]))
            hi_v = self._get(nla.get_be32(a["reg_addr_max"])) if "reg_addr_max" in a else lo_v
            if lo_v.imm is not None and hi_v.imm is not None:
                lo, hi = lo_v.imm, hi_v.imm
                f = fam or ("ip6" if len(lo) == 16 else "ip")
                if lo == hi:
                    body["addr"] = ip_text(f, lo)
                else:
                    plen = prefix_of(lo, hi)
                    if plen is not None:
                        body["addr"] = {"prefix": {"addr": ip_text(f, lo), "len": plen}}
                    else:
                        body["addr"] = {"range": [ip_text(f, lo), ip_text(f, hi)]}
            else:
                self._resolve_payload(lo_v)
                body["addr"] = lo_v.left
                proto_v = self.regs.get(self._slot(nla.get_be32(a["reg_proto_min"]))) \
                    if "reg_proto_min" in a else None
                if isinstance(lo_v.left, dict) and "map" in lo_v.left and fam and \
                        getattr(proto_v, "map_part", False):
                    body = {"family": fam, **body}
        if "reg_proto_min" in a and getattr(
                self._get(nla.get_be32(a["reg_proto_min"])), "map_part", False):
            pass
        elif "reg_proto_min" in a:
            body["port"] = self._port(a)
        fl = [n for n, bit in NAT_FLAGS.items() if flags & bit]
        if fl:
            body["flags"] = fl[0] if len(fl) == 1 else fl
        self.out.append({ntype: body or None})

    def _port(self, a: dict[str, bytes]) -> Any:
        lo = self._get(nla.get_be32(a["reg_proto_min"])).imm or b"\0\0"
        hi = self._get(nla.get_be32(a["reg_proto_max"])).imm if "reg_proto_max" in a else lo
        plo, phi = int.from_bytes(lo[:2], "big"), int.from_bytes((hi or lo)[:2], "big")
        return plo if plo == phi else {"range": [plo, phi]}

    def _masq_redir(self, name: str, a: dict[str, bytes]) -> None:
        body: dict[str, Any] = {}
        if "reg_proto_min" in a:
            body["port"] = self._port(a)
        flags = nla.get_be32(a.get("flags", b"\0\0\0\0"))
        fl = [n for n, bit in NAT_FLAGS.items() if flags & bit]
        if fl:
            body["flags"] = fl[0] if len(fl) == 1 else fl
        self.out.append({name: body or None})

    def _x_masq(self, a: dict[str, bytes]) -> None:
        self._masq_redir("masquerade", a)

    def _x_redir(self, a: dict[str, bytes]) -> None:
        self._masq_redir("redirect", a)

    def _x_dynset(self, a: dict[str, bytes]) -> None:
        name = nla.get_str(a["set_name"])
        op = {0: "add", 1: "update", 2: "delete"}[nla.get_be32(a["op"])]
        s = self.sets.get(name)
        sreg = nla.get_be32(a["sreg_key"])
        first = self._get(sreg)
        self._resolve_payload(first)
        key = self._concat_left(sreg, s.key_len if s else 0) if s and len(s.key_types) > 1 \
            else first.left
        elem: Any = key
        if "timeout" in a and nla.get_be64(a["timeout"]):
            elem = {"elem": {"val": key, "timeout": nla.get_be64(a["timeout"]) // 1000}}
        if "sreg_data" in a:
            dv = self._get(nla.get_be32(a["sreg_data"]))
            data = dv.left if dv.left is not None else int.from_bytes(dv.imm or b"", "little")
            self.out.append({"map": {"op": op, "elem": elem, "data": data, "map": "@" + name}})
            return
        self.out.append({"set": {"op": op, "elem": elem, "set": "@" + name}})

    def _x_queue(self, a: dict[str, bytes]) -> None:
        num = nla.get_be16(a.get("num", b"\0\0"))
        total = nla.get_be16(a.get("total", b"\0\x01"))
        flags = nla.get_be16(a.get("flags", b"\0\0"))
        self.out.append({"queue": _queue_body(num, total, flags)})

    def _x_target(self, a: dict[str, bytes]) -> None:
        name = nla.get_str(a["name"])
        info = a.get("info", b"")
        if name == "NFQUEUE" and len(info) >= 6:
            num = int.from_bytes(info[0:2], "little")
            total = int.from_bytes(info[2:4], "little")
            flags = int.from_bytes(info[4:6], "little")
            self.out.append({"queue": _queue_body(num, total, flags)})
            return
        self.out.append({"xt": {"type": "target", "name": name}})


def _queue_body(num: int, total: int, flags: int) -> dict[str, Any]:
    body: dict[str, Any] = {"num": num if total <= 1 else {"range": [num, num + total - 1]}}
    fl = [n for n, bit in (("bypass", 1), ("fanout", 2)) if flags & bit]
    if fl:
        body["flags"] = fl[0] if len(fl) == 1 else fl
    return body


def _bytes_unit(n: int) -> tuple[int, str]:
    for unit, size in (("gbytes", 1024 ** 3), ("mbytes", 1024 ** 2), ("kbytes", 1024)):
        if n and n % size == 0:
            return n // size, unit
    return n, "bytes"


def _order(dt: Datatype) -> Literal["big", "little"]:
    return "big" if dt.big_endian and dt.kind not in ("ifname", "string") else "little"


def _key_sort(s: SetView, key: bytes) -> tuple[int, ...]:
    if len(s.key_types) == 1:
        return (int.from_bytes(key, _order(s.key_types[0])),)
    out = []
    pos = 0
    for dt in s.key_types:
        size = dt.size or 16
        out.append(int.from_bytes(key[pos:pos + size], _order(dt)))
        pos += reg_size(size)
    return tuple(out)


def _component_values(s: SetView, key: bytes) -> list[Any]:
    vals = []
    pos = 0
    for dt in s.key_types:
        size = dt.size or (s.key_len if len(s.key_types) == 1 else 16)
        vals.append(dt.decode(key[pos:pos + size]))
        pos += reg_size(size)
    return vals


def _one_value(dt: Datatype, lo: bytes, hi: bytes) -> Any:
    if lo == hi:
        return dt.decode(lo)
    if dt.kind in ("ipv4", "ipv6"):
        plen = prefix_of(lo, hi)
        if plen is not None:
            return {"prefix": {"addr": dt.decode(lo), "len": plen}}
    return {"range": [dt.decode(lo), dt.decode(hi)]}


def render_elements(s: SetView, extra: dict[bytes, dict[str, Any]] | None = None) -> list[Any]:
    """A set's elements as libnftables JSON values (intervals joined, sorted).

    ``extra`` maps a key to element details (timeout, expires) to attach."""
    out: list[tuple[tuple[int, ...], Any]] = []
    elems = s.elements
    if s.flags & SET_INTERVAL and len(s.key_types) == 1:
        dt = s.key_types[0]
        size = s.key_len
        ordered = sorted(elems, key=lambda e: int.from_bytes(e[0], "big"))
        i = 0
        while i < len(ordered):
            key, key_end, flags, data = ordered[i]
            if flags & ELEM_INTERVAL_END:
                i += 1
                continue
            if key_end is not None:
                hi = key_end
                i += 1
            elif i + 1 < len(ordered) and ordered[i + 1][2] & ELEM_INTERVAL_END:
                hi = (int.from_bytes(ordered[i + 1][0], "big") - 1).to_bytes(size, "big")
                i += 2
            else:
                hi = b"\xff" * size
                i += 1
            one = _one_value(dt, key[:size], hi[:size])
            out.append((_key_sort(s, key), one if data is None else [one, data]))
        return [v for _k, v in out]
    for key, key_end, flags, data in elems:
        if flags & ELEM_INTERVAL_END:
            continue
        if len(s.key_types) > 1:
            if key_end is not None and key_end != key:
                parts = []
                pos = 0
                for dt in s.key_types:
                    size = dt.size or 16
                    parts.append(_one_value(dt, key[pos:pos + size], key_end[pos:pos + size]))
                    pos += reg_size(size)
                v: Any = {"concat": parts}
            else:
                v = {"concat": _component_values(s, key)}
        else:
            v = _component_values(s, key)[0]
        x = extra.get(key) if extra else None
        if x:
            v = {"elem": {"val": v, **x}}
        out.append((_key_sort(s, key), v if data is None else [v, data]))
    out.sort(key=lambda kv: kv[0])
    return [v for _k, v in out]
