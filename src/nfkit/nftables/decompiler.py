"""nf_tables expressions -> statements: the rule decompiler.

This module owns how an expression list read back from the kernel becomes the
statements nft itself prints for it, hiding the protocol dependencies nft hides.
Statements it cannot express become raw forms: {"nfkit-raw": {...}} keeps the
kernel's expressions instead of guessing.

It stands on nfkit.nftables.expressions and types; it must not know about the
compiler, messages or the kernel's replies.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from nfkit.errors import DecodeError, InputError
from nfkit.netlink.codec import attr_bytes
from nfkit.netlink.consts import NLA_TYPE_MASK
from nfkit.netlink.shapes import Layout
from nfkit.nftables.expressions import (
    BITWISE_SHIFTS,
    CMP_HEAD,
    CMP_NAMES,
    DYNSET_F_EXPR,
    ELEM_INTERVAL_END,
    EXPRESSIONS,
    EXTHDR_F_PRESENT,
    EXTHDR_FIELDS,
    EXTHDR_OPS,
    FIB_F_PRESENT,
    FIB_FLAGS,
    FIB_RESULT_NAMES,
    LIMIT_UNIT_NAMES,
    LOG_ALL,
    LOG_FLAGS,
    LOG_LEVELS,
    NAT_FLAGS,
    NAT_NETMAP,
    OBJ_TYPE_NAMES,
    OSF_F_VERSION,
    OSF_MAXGENRELEN,
    OSF_TTL_NAMES,
    RT_KEYS,
    SET_ANONYMOUS,
    SET_EVAL,
    SET_INTERVAL,
    SOCKET_KEYS,
    SYNPROXY_FLAGS,
    SYNPROXY_MSS,
    SYNPROXY_WSCALE,
    T_FIB_PRESENT,
    T_FIB_TYPE,
    T_HINT32,
    T_INT32,
    XFRM_DIRS,
    XFRM_KEYS,
    cmp_slot,
    parse_exprs,
    payload_write_plan,
    value_of_data,
    verdict_of_data,
)
from nfkit.nftables.schema import DYNSET_STATEMENTS
from nfkit.nftables.templates import rule_layout
from nfkit.nftables.types import (
    CT,
    CT_BY_NUM,
    ICMP_TYPE_DEPS,
    L3_PROTO,
    L4_PROTO,
    LL,
    META,
    META_BY_NUM,
    NH,
    PAYLOAD,
    TH,
    Datatype,
    T,
    bytes_unit,
    reg_size,
)


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


class _AsRaw(Exception):
    """Raised by a decoder method: keep this expression in its raw form."""


# l4proto values as the kernel's numbers decode and as L4_PROTO names them
_L4_ALIASES: dict[Any, str] = {"ipv6-icmp": "icmpv6", 108: "comp", "ipcomp": "comp"}

_DYNSET_ATTRS = {"set_name", "set_id", "op", "sreg_key", "sreg_data", "timeout", "expr",
                 "expressions", "flags"}


def _raw_form(name: str, attrs: dict[str, bytes], error: str | None = None) -> dict[str, Any]:
    """An expression nfkit does not print as a statement, as the kernel gave it."""
    body: dict[str, Any] = {"expr": name}
    if error is not None:
        body["error"] = error
    body["attrs"] = {k: v.hex() for k, v in attrs.items()}
    return {"nfkit-raw": body}


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
    hton: bool = False  # went through byteorder hton (nft compares host-order values so)
    map_part: bool = False  # a later part of a map lookup's concatenated data (NAT maps)
    # an exthdr load of bytes no field fills: (kind, header names, offset, len), named by
    # the mask that follows (a field of part of a byte)
    exthdr: tuple[str, list[str], int, int] | None = None
    origin: tuple[int, int, int] | None = None  # a payload load's (base, offset, len)
    written: tuple[tuple[int, int, int], bytes, bytes] | None = None  # origin, mask, xor


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
    # per element key: what else the kernel holds for it (timeout, expires, counter, ...)
    elem_extra: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    data_host: bool = False  # the map's values are in host byte order (nft's set userdata)
    size: int | None = None  # NFTA_SET_DESC_SIZE (a meter's `size`)

    @property
    def anonymous(self) -> bool:
        return bool(self.flags & SET_ANONYMOUS)


def elem_keys(elem: Any) -> dict[str, Any]:
    """The options of a set update's element (`{"elem": {"val": ..., "timeout": ...}}`)."""
    return elem["elem"] if isinstance(elem, dict) and "elem" in elem else {}


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
            kx = EXPRESSIONS.get(name)
            if fn is None or kx is None:
                self.out.append(_raw_form(name, a))
                continue
            try:
                fn(kx.decode(a))
            except _AsRaw:
                self.out.append(_raw_form(name, a))
            except (KeyError, IndexError, ValueError, InputError, DecodeError) as exc:
                self.out.append(_raw_form(name, a, str(exc)))
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
        prev = self.out[-1].get("match") if pick is not None and base == TH and self.out \
            and isinstance(self.out[-1], dict) else None
        if prev is not None and pick is not None and prev.get("op") == "==" and prev.get("left") == {
                "payload": {"protocol": pick[0], "field": "type"}}:
            # an icmp field named by the message type matched before it (`icmp mtu` after
            # nft's hidden `icmp type destination-unreachable`)
            for c in cands:
                dep = ICMP_TYPE_DEPS.get((c[0], c[1]))
                if c[0] == pick[0] and dep is not None and prev.get("right") == (
                        {"set": dep} if isinstance(dep, list) else dep):
                    pick = c
                    if isinstance(dep, str):
                        self.drop.add(len(self.out) - 1)
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
            if _L4_ALIASES.get(right, right) == proto:
                self.drop.add(self.dep_l4)
                # icmp (icmpv6) in an inet table also needed its network protocol: nft
                # lists neither dependency
                l3 = {"icmp": "ipv4", "icmpv6": "ipv6"}.get(proto)
                if l3 is not None and self.dep_l3 is not None and \
                        self.out[self.dep_l3]["match"]["right"] == l3:
                    self.drop.add(self.dep_l3)
                    self.dep_l3 = None
            self.dep_l4 = None
            if proto in ("icmp", "icmpv6"):  # in inet, nft's icmp dependency names the family
                self._kill_dep({"icmp": "ip", "icmpv6": "ip6"}[proto])
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
        if v.hton:
            raw = raw[::-1]
        if v.imm == b"shifted":
            n = int.from_bytes(raw, "big") >> int(v.verdict)
            dt = v.types[0]
            size = max(dt.size, 1)
            return dt.decode(n.to_bytes(size, "big" if dt.big_endian else "little"))
        if len(v.types) > 1:
            return {"concat": self._concat_values(v, raw)}
        dt = v.types[0]
        if dt is T_FIB_PRESENT:
            return any(raw)
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
    def _x_payload(self, a: dict[str, Any]) -> None:
        base, off, ln = (a["base"], a["offset"],
                         a["len"])
        if "sreg" in a:
            named = self._field_write(a)
            if named is not None:
                self.out.append(named)
                return
            if a.get("csum_type", 0) or a.get("csum_flags", 0):
                raise _AsRaw  # a write that fixes checksums: kept as the kernel's expression
            v = self._get(a["sreg"])
            value = int.from_bytes(v.imm[:ln], "big") if v.left is None and v.imm is not None \
                else self._set_value(v, T_INT32)
            where = {LL: "ll", NH: "nh", TH: "th", 3: "ih"}[base]
            self.out.append({"mangle": {"key": {"payload": {"base": where, "offset": off * 8,
                                                            "len": ln * 8}}, "value": value}})
            return
        loaded = RegValue(None, [T_INT32], [ln], (base, off, ln))
        loaded.origin = (base, off, ln)
        self._set(a["dreg"], loaded)

    def _field_write(self, a: dict[str, Any]) -> dict[str, Any] | None:
        """A payload write that is exactly nft's write of a named field in this context
        (`payload_write_plan`: bytes, mask, checksum attributes), as that field's mangle
        statement; None otherwise (it stays a raw write or the kernel's expression)."""
        base, off, ln = a["base"], a["offset"], a["len"]
        csum = (a.get("csum_type", 0), a.get("csum_offset", 0), a.get("csum_flags", 0))
        v = self.regs.get(self._slot(a["sreg"]))
        if v is None:
            return None
        if base == NH:
            protos = [self.l3]
        elif base == TH:
            protos = [self.l4, "th"]
        elif base == LL:
            protos = ["vlan", "ether"] if self.vlan_seen else ["ether"]
        else:
            return None
        for proto in protos:
            for (p, fld), (b, _o, _w, tname) in PAYLOAD.items():
                if p != proto or b != base:
                    continue
                try:
                    plan = payload_write_plan(p, fld)
                except InputError:
                    continue
                if (plan.offset, plan.length) != (off, ln) or \
                        (plan.csum_type, plan.csum_offset, plan.csum_flags) != csum:
                    continue
                dt = T[tname]
                if plan.keep is None:
                    if v.written is not None:
                        continue
                    if v.left is None and v.imm is not None:
                        value: Any = dt.decode(v.imm[:ln])
                    else:
                        self._resolve_payload(v)
                        if v.left is None or v.mask is not None or v.xor is not None \
                                or sum(v.sizes) != ln:
                            continue
                        value = v.left
                else:
                    if v.written is None or v.written != ((base, off, ln), plan.keep,
                                                          v.written[2]):
                        continue
                    n = int.from_bytes(v.written[2], "big")
                    if n & int.from_bytes(plan.keep, "big"):
                        continue  # bits outside the field: not nft's write of it
                    n >>= plan.shift
                    value = dt.decode(n.to_bytes(max(dt.size, 1), "big" if dt.big_endian
                                                 else "little"))
                self._kill_dep(p)
                return {"mangle": {"key": {"payload": {"protocol": p, "field": fld}},
                                   "value": value}}
        return None

    def _x_meta(self, a: dict[str, Any]) -> None:
        name = META_BY_NUM.get(a["key"])
        if name is None:
            raise InputError(f"unknown meta key {a['key']}")
        _n, tname, size = META[name]
        self._key_expr(a, "meta", {"key": name}, tname, size)

    def _x_ct(self, a: dict[str, Any]) -> None:
        name = CT_BY_NUM.get(a["key"])
        if name is None:
            raise InputError(f"unknown ct key {a['key']}")
        _n, tname, size = CT[name]
        left: dict[str, Any] = {"key": name}
        if "direction" in a:
            left["dir"] = {0: "original", 1: "reply"}[a["direction"]]
        if name in ("saddr", "daddr") and self.l3 == "ip6" and "sreg" not in a:
            tname, size = "ipv6_addr", 16
        self._key_expr(a, "ct", left, tname, size)

    def _key_expr(self, a: dict[str, Any], kind: str, left: dict[str, Any], tname: str,
                  size: int) -> None:
        """A meta or ct key: loaded into dreg, or set from sreg (a mangle statement)."""
        if "sreg" in a:
            value = self._set_value(self._get(a["sreg"]), T[tname])
            self.out.append({"mangle": {"key": {kind: left}, "value": value}})
            return
        self._set(a["dreg"], RegValue({kind: left}, [T[tname]], [size]))

    def _set_value(self, v: RegValue, dt: Datatype) -> Any:
        if v.left is None and v.imm is not None:
            return dt.decode(v.imm)
        self._resolve_payload(v)
        if v.mask is None and v.xor is None:
            return v.left
        # A value with a bitwise operation on it (meta mark set meta mark | 0x4000): the
        # operation is listed, as nft lists it, never dropped.
        mask, xor = v.mask or b"", v.xor or bytes(len(v.mask or b""))
        vt = v.types[0] if len(v.types) == 1 and v.types[0].size == len(mask) else dt
        if len(xor) != len(mask) or v.left is None:
            raise InputError("bitwise value not decoded")
        ones = b"\xff" * len(mask)
        if not any(xor):
            return {"&": [v.left, vt.decode(mask)]}
        if mask == ones:
            return {"^": [v.left, vt.decode(xor)]}
        if bytes(b ^ 0xFF for b in mask) == xor:
            return {"|": [v.left, vt.decode(xor)]}
        return {"^": [{"&": [v.left, vt.decode(mask)]}, vt.decode(xor)]}

    def _x_bitwise(self, a: dict[str, Any]) -> None:
        origin = self._get(a["sreg"]).origin
        self._bitwise_value(a)
        if origin is not None and "mask" in a and not a.get("op", 0):
            # loaded bytes merged with a value: what a field's write writes back
            self._get(a["dreg"]).written = (origin, value_of_data(a["mask"]),
                                            value_of_data(a["xor"]))

    def _bitwise_value(self, a: dict[str, Any]) -> None:
        v = self._get(a["sreg"])
        shift = {n: k for k, n in BITWISE_SHIFTS.items()}.get(a.get("op", 0))
        if shift is not None and "data" in a:
            self._resolve_payload(v)
            if v.left is None or v.mask is not None or v.xor is not None:
                raise InputError("shift of this value not decoded")
            n = int.from_bytes(value_of_data(a["data"])[:4], sys.byteorder)
            self._set(a["dreg"], RegValue({shift: [v.left, n]}, v.types, v.sizes))
            return
        if "mask" not in a or a.get("op", 0):
            raise InputError("bitwise operation not decoded")
        mask, xor = value_of_data(a["mask"]), value_of_data(a["xor"])
        dreg = a["dreg"]
        if v.exthdr is not None and not any(xor):
            bits = self._exthdr_bits(v, mask)
            if bits is not None:
                self._set(dreg, bits)
                return
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

    def _x_byteorder(self, a: dict[str, Any]) -> None:
        v = self._get(a["sreg"])
        if a["op"] != 1:
            raise InputError("ntoh byteorder not decoded")
        if v.left is None:
            self._resolve_payload(v)
        nv = RegValue(v.left, v.types, v.sizes, None, v.mask, v.xor)
        nv.hton = True
        self._set(a["dreg"], nv)

    def _x_immediate(self, a: dict[str, Any]) -> None:
        dreg = a["dreg"]
        if dreg == 0:
            self.out.append(verdict_of_data(a["data"]))
            return
        self._set(dreg, RegValue(None, [T_INT32], [0], imm=value_of_data(a["data"])))

    def _x_numgen(self, a: dict[str, Any]) -> None:
        left = {"numgen": {"mode": {0: "inc", 1: "random"}[a["type"]],
                           "mod": a["modulus"],
                           "offset": a.get("offset", 0)}}
        self._set(a["dreg"], RegValue(left, [T_HINT32], [4]))

    def _x_hash(self, a: dict[str, Any]) -> None:
        htype = a.get("type", 0)
        body: dict[str, Any] = {"mod": a["modulus"]}
        if htype == 0:
            src = self._get(a["sreg"])
            self._resolve_payload(src)
            left = self._concat_left(a["sreg"], a["len"])
            body["expr"] = left
            if "seed" in a:
                body["seed"] = a["seed"]
            off = a.get("offset", 0)
            if off:
                body["offset"] = off
            self._set(a["dreg"], RegValue({"jhash": body}, [T_HINT32], [4]))
        else:
            off = a.get("offset", 0)
            if off:
                body["offset"] = off
            self._set(a["dreg"], RegValue({"symhash": body}, [T_HINT32], [4]))

    def _x_fib(self, a: dict[str, Any]) -> None:
        result = a["result"]
        fl = a["flags"]
        if fl & ~(FIB_F_PRESENT | sum(FIB_FLAGS.values())):
            raise _AsRaw
        flags = [n for n, bit in FIB_FLAGS.items() if fl & bit]
        left = {"fib": {"result": FIB_RESULT_NAMES[result],
                        "flags": flags}}
        dt = {1: T["iface_index"], 2: T["ifname"], 3: T_FIB_TYPE}[result]
        if fl & FIB_F_PRESENT:  # `fib daddr oif exists`: a boolean, listed true/false
            dt = T_FIB_PRESENT
        self._set(a["dreg"], RegValue(left, [dt], [dt.size]))

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

    def _x_cmp(self, a: dict[str, Any]) -> None:
        self.cmp_seen += 1
        reg = a["sreg"]
        v = self._get(reg)
        op = CMP_NAMES[a["op"]]
        raw = value_of_data(a["data"])
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
                self.l4 = _L4_ALIASES.get(value, value)  # type: ignore[arg-type]
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
            if left == {"payload": {"protocol": "ether", "field": "type"}} \
                    and value in ("vlan", "8021q"):
                self.vlan_seen = True
                self.dep_vlan = len(self.out) - 1

    def _x_range(self, a: dict[str, Any]) -> None:
        reg = a["sreg"]
        v = self._get(reg)
        self._resolve_payload(v)
        op = CMP_NAMES[a["op"]]
        lo, hi = value_of_data(a["from_data"]), value_of_data(a["to_data"])
        self._match(v.left, op, {"range": [self._value(v, lo), self._value(v, hi)]}, reg)

    def _x_lookup(self, a: dict[str, Any]) -> None:
        name = a["set"]
        sreg = a["sreg"]
        s = self.sets.get(name)
        if s is None and "set_id" in a:  # not yet named by the kernel (normalize)
            s = self.sets.get(f"id:{a['set_id']}")
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
        inv = "flags" in a and a["flags"] & 1
        if s is not None and s.flags & SET_ANONYMOUS:
            if first.types == [T_HINT32] and s.key_types == [T_INT32]:
                # Keyed by a numgen or hash result: host byte order (nft knows it from
                # the expression; the set's integer type does not say).
                s = replace(s, key_types=[T_HINT32])
            if first.imm == b"shifted" and len(s.key_types) == 1:
                # A field of part of a byte (ip dscp, frag frag-off): the elements hold
                # its values shifted into place, as the compiler put them.
                s = _unshifted(s, int(first.verdict))
            right: Any = {"set": self._render_elements(s, left)}
        else:
            right = "@" + name
        if "dreg" in a:
            dreg = a["dreg"]
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
                    part.map_part = True
                    self.regs[self._slot(dreg) + reg_size(dts[0].size) // 4] = part
            return
        self._match(left, "!=" if inv else "==", right, sreg)

    def _left_types(self, s: SetView, left: Any) -> tuple[list[Datatype], list[int]]:
        return s.key_types, [t.size or (s.key_len if len(s.key_types) == 1 else 4)
                             for t in s.key_types]

    def _render_elements(self, s: SetView, left: Any) -> list[Any]:
        return render_elements(s)

    # ---- statements --------------------------------------------------------------
    def _x_counter(self, a: dict[str, Any]) -> None:
        self.out.append({"counter": {"packets": a.get("packets", 0),
                                     "bytes": a.get("bytes", 0)}})

    def _x_notrack(self, a: dict[str, Any]) -> None:
        self.out.append({"notrack": None})

    def _x_limit(self, a: dict[str, Any]) -> None:
        rate = a["rate"]
        unit = LIMIT_UNIT_NAMES.get(a["unit"], "second")
        burst = a.get("burst", 0)
        ltype = a.get("type", 0)
        body: dict[str, Any]
        if ltype == 0:
            body = {"rate": rate, "burst": burst, "per": unit}
        else:
            r, ru = bytes_unit(rate)
            b, bu = bytes_unit(burst)
            body = {"rate": r, "burst": b, "per": unit, "rate_unit": ru, "burst_unit": bu}
        if a.get("flags", 0) & 1:
            body["inv"] = True
        self.out.append({"limit": body})

    def _x_quota(self, a: dict[str, Any]) -> None:
        n, u = bytes_unit(a["bytes"])
        body: dict[str, Any] = {"val": n, "val_unit": u}
        used = a.get("consumed", 0)
        if used:
            un, uu = bytes_unit(used)
            body["used"] = un
            body["used_unit"] = uu
        if a.get("flags", 0) & 1:
            body["inv"] = True
        self.out.append({"quota": body})

    def _x_connlimit(self, a: dict[str, Any]) -> None:
        body: dict[str, Any] = {"val": a["count"]}
        if a.get("flags", 0) & 1:
            body["inv"] = True
        self.out.append({"ct count": body})

    def _x_objref(self, a: dict[str, Any]) -> None:
        if "set_sreg" in a:  # ct helper set tcp dport map { 21 : "ftp" }
            s = self.sets.get(a["set_name"]) or self.sets.get(f"id:{a.get('set_id')}")
            if s is None or not s.anonymous:
                raise _AsRaw
            left = self._get(a["set_sreg"])
            self._resolve_payload(left)
            self.out.append({"ct helper": {"map": {"key": left.left,
                                                   "data": {"set": render_elements(s)}}}})
            return
        kind = OBJ_TYPE_NAMES[a["imm_type"]]
        self.out.append({kind: a["imm_name"]})

    def _x_log(self, a: dict[str, Any]) -> None:
        body: dict[str, Any] = {}
        if "prefix" in a:
            body["prefix"] = a["prefix"]
        if "group" in a:
            body["group"] = a["group"]
            sl = a.get("snaplen", 0)
            if sl:
                body["snaplen"] = sl
            qt = a.get("qthreshold", 0)
            if qt:
                body["queue-threshold"] = qt
        if "level" in a:
            lvl = a["level"]
            if lvl != 4:
                body["level"] = LOG_LEVELS[lvl]
        if "flags" in a:
            fl = a["flags"]
            if fl == LOG_ALL:
                body["flags"] = "all"
            elif fl:
                names = [n for n, bit in LOG_FLAGS.items() if fl & bit]
                body["flags"] = names[0] if len(names) == 1 else names
        self.out.append({"log": body or None})

    def _x_reject(self, a: dict[str, Any]) -> None:
        rtype = a["type"]
        code = a.get("icmp_code", 0)
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

    def _x_nat(self, a: dict[str, Any]) -> None:
        ntype = {0: "snat", 1: "dnat"}[a["type"]]
        body: dict[str, Any] = {}
        fam = {2: "ip", 10: "ip6"}.get(a["family"]) if "family" in a else None
        if fam and self.family == "inet":
            body["family"] = fam
        flags = a.get("flags", 0)
        if "reg_addr_min" in a:
            lo_v = self._get(a["reg_addr_min"])
            hi_v = self._get(a["reg_addr_max"]) if "reg_addr_max" in a else lo_v
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
                proto_v = self.regs.get(self._slot(a["reg_proto_min"])) \
                    if "reg_proto_min" in a else None
                if isinstance(lo_v.left, dict) and "map" in lo_v.left and fam and \
                        proto_v is not None and proto_v.map_part:
                    body = {"family": fam, **body}
        if "reg_proto_min" in a and self._get(a["reg_proto_min"]).map_part:
            pass
        elif "reg_proto_min" in a:
            body["port"] = self._port(a)
        fl = [n for n, bit in NAT_FLAGS.items() if flags & bit]
        if fl:
            body["flags"] = fl[0] if len(fl) == 1 else fl
        if flags & NAT_NETMAP:
            body["type_flags"] = "prefix"  # as nft lists `snat prefix to`
        self.out.append({ntype: body or None})

    def _port(self, a: dict[str, Any]) -> Any:
        v = self._get(a["reg_proto_min"])
        if v.imm is None:  # a port from a map lookup (dnat ... : tcp dport map {...})
            if v.left is None or a.get("reg_proto_max", a["reg_proto_min"]) != \
                    a["reg_proto_min"]:
                raise InputError("nat port register not decoded")
            return v.left
        lo = v.imm or b"\0\0"
        hi = self._get(a["reg_proto_max"]).imm if "reg_proto_max" in a else lo
        plo, phi = int.from_bytes(lo[:2], "big"), int.from_bytes((hi or lo)[:2], "big")
        return plo if plo == phi else {"range": [plo, phi]}

    def _masq_redir(self, name: str, a: dict[str, Any]) -> None:
        body: dict[str, Any] = {}
        if "reg_proto_min" in a:
            body["port"] = self._port(a)
        flags = a.get("flags", 0)
        fl = [n for n, bit in NAT_FLAGS.items() if flags & bit]
        if fl:
            body["flags"] = fl[0] if len(fl) == 1 else fl
        self.out.append({name: body or None})

    def _x_masq(self, a: dict[str, Any]) -> None:
        self._masq_redir("masquerade", a)

    def _x_redir(self, a: dict[str, Any]) -> None:
        self._masq_redir("redirect", a)

    def _x_dynset(self, a: dict[str, Any]) -> None:
        name = a["set_name"]
        op = {0: "add", 1: "update", 2: "delete"}[a["op"]]
        s = self.sets.get(name)
        sreg = a["sreg_key"]
        first = self._get(sreg)
        self._resolve_payload(first)
        key = self._concat_left(sreg, s.key_len if s else 0) if s and len(s.key_types) > 1 \
            else first.left
        elem: Any = key
        if "timeout" in a and a["timeout"]:
            elem = {"elem": {"val": key, "timeout": a["timeout"] // 1000}}
        stmts = self._dynset_stmts(a)
        if "sreg_data" in a:
            dv = self._get(a["sreg_data"])
            data = dv.left if dv.left is not None else int.from_bytes(dv.imm or b"", "little")
            body: dict[str, Any] = {"op": op, "elem": elem, "data": data, "map": "@" + name}
        else:
            body = {"op": op, "elem": elem, "set": "@" + name}
        if s is not None and s.anonymous and s.flags & SET_EVAL and "sreg_data" not in a \
                and len(stmts) == 1 and op == ("update" if "timeout" in elem_keys(elem) else "add"):
            # the rule's own set, updated from the packet path: a meter, as nft lists it
            meter: dict[str, Any] = {"key": elem, "stmt": stmts[0]}
            if s.size is not None:
                meter["size"] = s.size
            meter["name"] = name
            self.out.append({"meter": meter})
            return
        if stmts:
            body["stmt"] = stmts
        self.out.append({"map" if "sreg_data" in a else "set": body})

    def _dynset_stmts(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        """The statements a set update carries (NFTA_DYNSET_EXPR or _EXPRESSIONS);
        anything else in it (an unknown flag, a statement not decoded) keeps the whole
        update in its raw form rather than listing it shorter."""
        if a.get("flags", 0) & ~DYNSET_F_EXPR or set(a) - _DYNSET_ATTRS:
            raise _AsRaw
        if "expr" in a:
            inner = parse_exprs(attr_bytes(1, a["expr"]))
        elif "expressions" in a:
            inner = parse_exprs(a["expressions"])
        else:
            return []
        stmts = RuleDecoder(self.family, self.sets).decode(inner)
        if len(stmts) != len(inner) or any(next(iter(st)) not in DYNSET_STATEMENTS
                                           for st in stmts):
            raise _AsRaw
        for st in stmts:  # nft lists a set update's counter without its values
            if "counter" in st:
                st["counter"] = None
        return stmts

    def _x_exthdr(self, a: dict[str, Any]) -> None:
        op = a.get("op", 0)
        kinds = [k for k, (code, _dep) in EXTHDR_OPS.items() if code == op]
        flags = a.get("flags", 0)
        if not kinds or flags & ~EXTHDR_F_PRESENT:
            raise _AsRaw
        kind = kinds[0]
        # The headers of this type in nft's order (a routing header: rt, srh, rt0).
        names = [n for (k, n), (t, _f) in EXTHDR_FIELDS.items() if k == kind and t == a["type"]]
        if not names and kind == "tcp option" and "dreg" in a:
            # an option nft has no name for: `tcp option @kind,offset,length`, or `tcp
            # option KIND exists` (nft's JSON gives its first byte for the latter)
            present = bool(flags & EXTHDR_F_PRESENT)
            raw = {kind: {"base": a["type"], "offset": 0 if present else a["offset"] * 8,
                          "len": 8 if present else a["len"] * 8}}
            self._set(a["dreg"], RegValue(raw, [T_FIB_PRESENT if present else T_INT32],
                                          [1 if present else a["len"]]))
            return
        if not names:
            raise _AsRaw
        name = names[0]
        dep = EXTHDR_OPS[kind][1]
        if dep is not None and self.family in ("inet", "bridge", "netdev"):
            self._kill_dep(dep)
        if flags & EXTHDR_F_PRESENT:
            self._set(a["dreg"], RegValue({kind: {"name": name}}, [T_FIB_PRESENT], [1]))
            return
        found = [(n, f) for n in names for f, (boff, blen, _t)
                 in EXTHDR_FIELDS[(kind, n)][1].items()
                 if boff == a["offset"] * 8 and blen == a["len"] * 8]
        if not found:
            if "dreg" in a and kind in ("exthdr", "tcp option"):
                # Part of a byte (`frag more-fragments`): named by the mask that follows;
                # else a tcp option's bytes are its raw form, `tcp option @2,24,8`
                left = {kind: {"base": a["type"], "offset": a["offset"] * 8, "len": a["len"] * 8}} \
                    if kind == "tcp option" else \
                    {"nfkit-raw": {"expr": "exthdr", "error": "part of a byte, not decoded",
                                   "attrs": {k: a[k] for k in ("type", "offset", "len")}}}
                v = RegValue(left, [T_INT32], [a["len"]])
                v.exthdr = (kind, names, a["offset"], a["len"])
                self._set(a["dreg"], v)
                return
            raise _AsRaw
        name, field = found[0]
        fields = EXTHDR_FIELDS[(kind, name)][1]
        tname = fields[field][2]
        left = {kind: {"name": name, "field": field}}
        if "sreg" in a:
            v = self._get(a["sreg"])
            self.out.append({"mangle": {"key": left, "value": self._set_value(v, T[tname])}})
            return
        self._set(a["dreg"], RegValue(left, [T[tname]], [a["len"]]))

    def _exthdr_bits(self, v: RegValue, mask: bytes) -> RegValue | None:
        """The field of part of a byte an exthdr load and this mask pick, or None."""
        assert v.exthdr is not None
        kind, names, off, ln = v.exthdr
        for n in names:
            for f, (boff, blen, tname) in EXTHDR_FIELDS[(kind, n)][1].items():
                start = boff - off * 8
                if boff // 8 != off or (start + blen + 7) // 8 != ln:
                    continue
                shift = ln * 8 - start - blen
                if (((1 << blen) - 1) << shift).to_bytes(ln, "big") == mask:
                    # values shifted into place, as `_resolve_payload` marks a header field
                    return RegValue({kind: {"name": n, "field": f}}, [T[tname]], [ln],
                                    imm=b"shifted", verdict=shift)
        return None

    def _x_osf(self, a: dict[str, Any]) -> None:
        if set(a) - {"dreg", "ttl", "flags"} or a.get("flags", 0) & ~OSF_F_VERSION \
                or a.get("ttl", 0) not in (0, *OSF_TTL_NAMES):
            raise _AsRaw
        left: dict[str, Any] = {"key": "version" if a.get("flags", 0) & OSF_F_VERSION
                                else "name"}
        if a.get("ttl", 0):
            left["ttl"] = OSF_TTL_NAMES[a["ttl"]]
        self._set(a["dreg"], RegValue({"osf": left}, [T["string"]], [OSF_MAXGENRELEN]))

    def _x_xfrm(self, a: dict[str, Any]) -> None:
        found = [(k, v) for k, v in XFRM_KEYS.items() if v[0] == a.get("key")]
        dirs = {v: k for k, v in XFRM_DIRS.items()}
        if not found or set(a) - {"dreg", "key", "dir", "spnum"} or a.get("dir") not in dirs:
            raise _AsRaw
        (key, fam), (_n, tname, size) = found[0]
        left: dict[str, Any] = {"key": key}
        if fam is not None:
            left["family"] = fam
        left["dir"] = dirs[a["dir"]]
        left["spnum"] = a.get("spnum", 0)
        self._set(a["dreg"], RegValue({"ipsec": left}, [T[tname]], [size]))

    def _x_socket(self, a: dict[str, Any]) -> None:
        name = {v[0]: k for k, v in SOCKET_KEYS.items()}.get(a["key"])
        if name is None or set(a) - {"key", "dreg", "level"} or \
                ("level" in a) != (name == "cgroupv2"):
            raise _AsRaw
        _n, tname, size = SOCKET_KEYS[name]
        left: dict[str, Any] = {"key": name}
        if "level" in a:
            left["level"] = a["level"]
        self._set(a["dreg"], RegValue({"socket": left}, [T[tname]], [size]))

    def _x_rt(self, a: dict[str, Any]) -> None:
        found = [(k, v) for k, v in RT_KEYS.items() if v[0] == a["key"]]
        if not found:
            raise _AsRaw
        (name, fam), (_n, tname, size) = found[0]
        left: dict[str, Any] = {"key": name}
        if fam is not None:
            left["family"] = fam
        self._set(a["dreg"], RegValue({"rt": left}, [T[tname]], [size]))

    def _addr_of(self, reg: int) -> str:
        raw = self._get(reg).imm or b""
        return ip_text("ip6" if len(raw) == 16 else "ip", raw)

    def _dev_of(self, reg: int) -> Any:
        return T["iface_index"].decode((self._get(reg).imm or b"")[:4])

    def _x_dup(self, a: dict[str, Any]) -> None:
        body: dict[str, Any] = {"addr": self._addr_of(a["sreg_addr"])}
        if "sreg_dev" in a:
            body["dev"] = self._dev_of(a["sreg_dev"])
        self.out.append({"dup": body})

    def _x_fwd(self, a: dict[str, Any]) -> None:
        body: dict[str, Any] = {"dev": self._dev_of(a["sreg_dev"])}
        if "sreg_addr" in a:
            body["addr"] = self._addr_of(a["sreg_addr"])
            if self.family in ("inet", "netdev", "bridge"):
                body["family"] = {2: "ip", 10: "ip6"}.get(a.get("nfproto", 0), "ip")
        self.out.append({"fwd": body})

    def _x_tproxy(self, a: dict[str, Any]) -> None:
        body: dict[str, Any] = {}
        fam = {2: "ip", 10: "ip6"}.get(a.get("family", 0))
        if fam and self.family == "inet":
            body["family"] = fam
        if "reg_addr" in a:
            body["addr"] = self._addr_of(a["reg_addr"])
        if "reg_port" in a:
            body["port"] = int.from_bytes((self._get(a["reg_port"]).imm or b"")[:2], "big")
        self.out.append({"tproxy": body})

    def _x_synproxy(self, a: dict[str, Any]) -> None:
        self.out.append({"synproxy": synproxy_body(a)})

    def _x_queue(self, a: dict[str, Any]) -> None:
        num = a.get("num", 0)
        total = a.get("total", 1)
        flags = a.get("flags", 0)
        self.out.append({"queue": _queue_body(num, total, flags)})

    def _x_target(self, a: dict[str, Any]) -> None:
        name = a["name"]
        info = a.get("info", b"")
        if name == "NFQUEUE" and len(info) >= 6:
            num = int.from_bytes(info[0:2], "little")
            total = int.from_bytes(info[2:4], "little")
            flags = int.from_bytes(info[4:6], "little")
            self.out.append({"queue": _queue_body(num, total, flags)})
            return
        if name in ("SNPT", "DNPT") and len(info) >= 34:
            self.out.append({name.lower(): npt_body(bytes(info))})
            return
        self.out.append({"xt": {"type": "target", "name": name}})


def synproxy_body(a: dict[str, Any]) -> dict[str, Any]:
    """A synproxy statement's or object's body from its decoded attributes."""
    fl = a.get("flags", 0)
    body: dict[str, Any] = {}
    if fl & SYNPROXY_MSS:
        body["mss"] = a.get("mss", 0)
    if fl & SYNPROXY_WSCALE:
        body["wscale"] = a.get("wscale", 0)
    flags = [n for n in ("timestamp", "sack-perm") if fl & SYNPROXY_FLAGS[n]]
    if flags:
        body["flags"] = flags
    if fl & ~(SYNPROXY_MSS | SYNPROXY_WSCALE | sum(SYNPROXY_FLAGS.values())):
        raise InputError(f"synproxy flags {fl:#x} not decoded")
    return body


def npt_body(info: bytes) -> dict[str, str]:
    """{"prefix": P, "to": Q} of an ip6t_npt_tginfo (see compiler.npt_target)."""
    import ipaddress

    def prefix(raw: bytes, length: int) -> str:
        return str(ipaddress.IPv6Network((ipaddress.IPv6Address(raw), length), strict=False))

    return {"prefix": prefix(info[0:16], info[32]), "to": prefix(info[16:32], info[33])}


def _queue_body(num: int, total: int, flags: int) -> dict[str, Any]:
    body: dict[str, Any] = {"num": num if total <= 1 else {"range": [num, num + total - 1]}}
    fl = [n for n, bit in (("bypass", 1), ("fanout", 2)) if flags & bit]
    if fl:
        body["flags"] = fl[0] if len(fl) == 1 else fl
    return body


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


def _unshifted(s: SetView, shift: int) -> SetView:
    """``s`` with its keys shifted right by ``shift`` bits (an interval's end, the first
    key after it, stays the first key after the unshifted interval)."""
    def down(k: bytes, end: bool) -> bytes:
        n = int.from_bytes(k, "big")
        return ((((n - 1) >> shift) + 1) if end else n >> shift).to_bytes(len(k), "big")

    return replace(s, elements=[
        (down(k, bool(fl & ELEM_INTERVAL_END)), None if ke is None else down(ke, False), fl, d)
        for k, ke, fl, d in s.elements])


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


# ==== decoding templates ==========================================================

_CTX_LEFTS = [{"meta": {"key": "l4proto"}}, {"meta": {"key": "nfproto"}},
              {"meta": {"key": "protocol"}}, {"meta": {"key": "iiftype"}},
              {"payload": {"protocol": "ether", "field": "type"}},
              {"payload": {"protocol": "ip", "field": "protocol"}},
              {"payload": {"protocol": "ip6", "field": "nexthdr"}}]


# Where a cmp's value sits, from the encoder's own record (`cmp_slot`: nft_data last),
# and the attribute types before it (sreg, op, the data nest, the value; flag bits
# aside: the kernel dumps nests without NLA_F_NESTED) that must match for the
# kernel's dump to be laid out the same way.
_CMP_SAMPLE, _CMP_VALUE_AT = cmp_slot(1, 0, b"\0")
_U16 = struct.Struct("=H").unpack_from
# attribute headers before the value: value (-4), data nest (-8), op (-16), sreg (-24); types +2
_CMP_TYPES_AT = (_CMP_VALUE_AT - 22, _CMP_VALUE_AT - 14, _CMP_VALUE_AT - 6, _CMP_VALUE_AT - 2)
# the four types in one unpack: sreg's, op's (8 bytes on), the data nest's (8), the value's (4)
assert [b - a for a, b in zip(_CMP_TYPES_AT, _CMP_TYPES_AT[1:], strict=False)] == [8, 8, 4]
_CMP_TYPES = struct.Struct("=H6xH6xH2xH").unpack_from
_CMP_FORMS = {tuple(_U16(_CMP_SAMPLE, at)[0] & (NLA_TYPE_MASK if nested else 0xFFFF)
                    for at in _CMP_TYPES_AT) for nested in (False, True)}


def cmp_spans(blob: bytes) -> list[tuple[int, int]] | None:
    """(start, end) in ``blob`` of each cmp expression's compared value.

    The value is where the encoder puts it when the kernel dumps cmp as sreg, op,
    data (it does); None for anything laid out otherwise (the caller decodes the
    slow way)."""
    pos, end = 0, len(blob)
    spans: list[tuple[int, int]] = []
    while pos + 4 <= end:
        ln = _U16(blob, pos)[0]
        if ln < 4:
            return None
        if blob[pos + 4:pos + 12] == CMP_HEAD and ln >= _CMP_VALUE_AT:
            if _CMP_TYPES(blob, pos + _CMP_TYPES_AT[0]) not in _CMP_FORMS:
                return None
            vlen = _U16(blob, pos + _CMP_VALUE_AT - 4)[0] - 4
            vstart = pos + _CMP_VALUE_AT
            if vstart + vlen > pos + ln:
                return None
            spans.append((vstart, vstart + vlen))
        pos += (ln + 3) & ~3
    return spans


def cmp_values(blob: bytes) -> tuple[bytes, list[bytes]] | None:
    """Split an expression list into its shape (cmp values blanked) and the cmp values."""
    spans = cmp_spans(blob)
    if spans is None:
        return None
    parts: list[bytes] = []
    last = 0
    for s, e in spans:
        parts.append(blob[last:s])
        last = e
    parts.append(blob[last:])
    return b"\xff".join(parts), [blob[s:e] for s, e in spans]


class RuleShape:
    """One rule shape of `RuleShapes`: ``layout``, the core's `Layout` of its expression
    lists (`templates.rule_layout`: every byte fixed but the compared values, at
    ``spans``), and ``entry``: None (not decoded yet), False (no template: decoded the
    general way) or (ctx positions, {ctx values: (statements, patches)})."""

    __slots__ = ("layout", "spans", "entry")

    def __init__(self, layout: Layout, spans: list[tuple[int, int]]) -> None:
        self.layout = layout
        self.spans = spans
        self.entry: Any = None


class RuleShapes:
    """Decoding templates: rules whose expressions differ only in compared values
    are decoded once; later ones only decode their values.

    The compared values are the slots of the netlink core's `Layout` of the
    expression list (`templates.rule_layout`, as the fast listing's messages);
    lists of one length with their values at the same places share a layout,
    whose fixed bytes (``headers``, one struct read) key their shapes: a later
    list is recognised without walking its expressions, its values read by one
    more struct read.  The table's sets are part of a shape (their types shape
    the output)."""

    def __init__(self) -> None:
        # list length -> [(layout, {(family, sets, fixed bytes): shape})], a layout per slot places
        self.by_len: dict[int, list[tuple[Layout, dict[Any, RuleShape]]]] = {}

    def shape(self, fam: str, blob: bytes, sets: dict[str, SetView]
              ) -> tuple[RuleShape | None, tuple[bytes, ...]]:
        """The shape of the expression list ``blob`` (a known one, else a new one) and its
        compared values; (None, ()) when it has none (cmp expressions laid out otherwise)."""
        tag = (fam, id(sets) if sets else 0)
        groups = self.by_len.get(len(blob))
        if groups:
            for lay, known in groups:
                sh = known.get((tag, lay.headers(blob, 0)))
                if sh is not None:
                    return sh, lay.unpack(blob, 0)
        spans = cmp_spans(blob)
        if spans is None:
            return None, ()
        slots = [(s, e - s) for s, e in spans]
        groups = self.by_len.setdefault(len(blob), [])
        for lay, known in groups:  # noqa: B007 - the group found is used after the loop
            if lay.tag == slots:
                break
        else:
            made = rule_layout(blob, slots, slots)
            if made is None:
                return None, ()
            lay, known = made, {}
            groups.append((lay, known))
        sh = known[(tag, lay.headers(blob, 0))] = RuleShape(lay, spans)
        return sh, lay.unpack(blob, 0)

    def decode(self, fam: str, blob: bytes, sets: dict[str, SetView]) -> list[dict[str, Any]]:
        sh, values = self.shape(fam, blob, sets)
        if sh is None:
            return RuleDecoder(fam, sets).decode(parse_exprs(blob))
        entry = sh.entry
        if entry:
            ctx_pos, by_ctx = entry
            ctx_key = tuple(values[i] for i in ctx_pos)
            tpl = by_ctx.get(ctx_key)
            if tpl is not None:
                stmts, patches = tpl
                return _patched(stmts, patches, values)
        dec = RuleDecoder(fam, sets)
        stmts = dec.decode(parse_exprs(blob))
        if entry is False:
            return stmts
        if dec.merged or len(dec.cmp_log) != dec.cmp_seen or dec.cmp_seen != len(values):
            sh.entry = False
            return stmts
        # map decoder indices to output indices (dependencies removed)
        kept = [i for i in range(len(dec.out)) if i not in dec.drop]
        where = {old: new for new, old in enumerate(kept)}
        ctx_pos = tuple(i for i, (idx, _v, left) in enumerate(dec.cmp_log)
                        if left in _CTX_LEFTS or idx not in where)
        patches = [(where[idx], i, v, left) for i, (idx, v, left) in enumerate(dec.cmp_log)
                   if idx in where and i not in ctx_pos]
        if _patched(stmts, patches, values) != stmts:
            sh.entry = False  # a value the patch would not render as the decoder does (ip dscp)
            return stmts
        if entry is None:
            entry = sh.entry = (ctx_pos, {})
        if entry[0] == ctx_pos:
            entry[1][tuple(values[i] for i in ctx_pos)] = (stmts, patches)
        return stmts


def _patched(stmts: list[dict[str, Any]], patches: list[tuple[int, int, Any, Any]],
             values: tuple[bytes, ...]) -> list[dict[str, Any]]:
    """A template's statements with the compared ``values`` of one rule patched in."""
    out = list(stmts)
    for idx, vi, v, left in patches:
        m = out[idx]["match"]
        out[idx] = {"match": {"op": m["op"], "left": left, "right": plain_value(v, values[vi])}}
    return out


def plain_value(v: Any, raw: bytes) -> Any:
    dt = v.types[0]
    if len(v.types) > 1:
        return RuleDecoder._concat_values(None, v, raw)  # type: ignore[arg-type]
    if dt.kind in ("ipv4", "ipv6", "ether") and len(raw) != dt.size:
        raw = raw.ljust(dt.size, b"\0")[: dt.size]
    return dt.decode(raw)
