"""nf_tables expressions on the wire: the kernel's vocabulary, encoded and decoded side by side.

This module owns what every other nftables module shares about the kernel's
expressions: the attribute numbers of each expression and object (from
nfkit.netlink.specs.nftables, the one table of them), the codes the kernel
uses for verdicts, comparison operators and object types, and the two nf_tables
containers built on the core's attributes: an expression element
(NFTA_LIST_ELEM: name + data) and nft_data (a value or a verdict).  Each is
written once, its encoder beside its decoder.

It stands on the netlink core only (nfkit.netlink.codec for the attribute
format, which raises DecodeError on malformed input); it must not know about
statements, rules, sets or messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nfkit.errors import InputError
from nfkit.netlink.codec import (
    attr_bytes,
    attr_payloads,
    be16_attr,
    be32_attr,
    be64_attr,
    get_be16,
    get_be32,
    get_be64,
    get_string,
    get_u8,
    iter_attr_spans,
    nest_bytes,
    string_attr,
    u8_attr,
)
from nfkit.netlink.specs.nftables import TABLES, names, nums
from nfkit.nftables.types import PAYLOAD, Datatype, T

# Attribute numbers by table and name: A["cmp"]["sreg"].
A = {t: nums(t) for t in (
    "list", "expr", "data", "verdict", "immediate", "bitwise", "cmp", "range", "lookup",
    "dynset", "payload", "meta", "ct", "limit", "counter", "log", "queue", "quota", "reject",
    "nat", "masq", "redir", "objref", "fib", "numgen", "hash", "connlimit", "table", "chain",
    "rule", "set", "set_elem", "set_elem_list", "hook", "set_desc", "set_field", "byteorder",
    "target", "rule_compat", "obj", "gen", "exthdr", "rt", "ct_helper", "ct_timeout",
    "ct_expect", "synproxy", "socket", "dup", "fwd", "tproxy", "osf", "xfrm",
)}

# Verdict codes (NF_ACCEPT, NF_DROP, NFT_CONTINUE, NFT_RETURN, NFT_JUMP, NFT_GOTO).
VERDICTS = {"accept": 1, "drop": 0, "continue": 0xFFFFFFFF, "return": 0xFFFFFFFB,
            "jump": 0xFFFFFFFD, "goto": 0xFFFFFFFC}
VERDICT_NAMES = {v: k for k, v in VERDICTS.items()}
# The data type id of a verdict map's values (nft's TYPE_VERDICT in set data_type).
VERDICT_DATA_TYPE = 0xFFFFFF00
# enum nft_cmp_ops
CMP_OPS = {"==": 0, "!=": 1, "<": 2, "<=": 3, ">": 4, ">=": 5}
CMP_NAMES = {v: k for k, v in CMP_OPS.items()}
# NFT_OBJECT_* (stateful objects and object references)
OBJ_TYPES = {"counter": 1, "quota": 2, "ct helper": 3, "limit": 4, "ct timeout": 7,
             "ct expectation": 9, "synproxy": 10}
# Synproxy options (NF_SYNPROXY_OPT_*): mss and wscale set when given, as nft sets them.
SYNPROXY_MSS, SYNPROXY_WSCALE = 1, 2
SYNPROXY_FLAGS = {"sack-perm": 4, "timestamp": 8}
# ct timeout policies: nft's state names (CTA_TIMEOUT_<PROTO>_* are 1, 2, ... in this order)
# with nft's default of each (nft lists only the states whose timeout differs from it).
CT_TIMEOUT_STATES = {
    "tcp": {"syn_sent": 120, "syn_recv": 60, "established": 432000, "fin_wait": 120,
            "close_wait": 60, "last_ack": 30, "time_wait": 120, "close": 10,
            "syn_sent2": 120, "retrans": 300, "unack": 300},
    "udp": {"unreplied": 30, "replied": 120},
}
L4_NUMS = {"tcp": 6, "udp": 17}
# Extension headers and options (the exthdr expression): JSON kind -> (NFT_EXTHDR_OP_*,
# the layer-3 protocol it depends on), and (kind, name) -> (header or option type,
# {field: (bit offset, bit length, datatype)}); a field that is not whole bytes is loaded
# as the bytes that cover it and masked, as nft does; `exists` is NFT_EXTHDR_F_PRESENT.
EXTHDR_OPS = {"exthdr": (0, "ip6"), "tcp option": (1, None), "ip option": (2, "ip"),
              "sctp chunk": (3, None)}
_NH, _LEN = ("nexthdr", (0, 8, "inet_proto")), ("hdrlength", (8, 8, "integer"))
_KIND, _OLEN = ("kind", (0, 8, "integer")), ("length", (8, 8, "integer"))
_IPOPT = {"type": (0, 8, "integer"), "length": (8, 8, "integer"), "ptr": (16, 8, "integer"),
          "addr": (24, 32, "ipv4_addr")}
def _sctp_chunks() -> dict[tuple[str, str], tuple[int, dict[str, tuple[int, int, str]]]]:
    """sctp chunks: (type, fields after the common type, flags and length), nft's names."""
    tsn = {"cum-tsn-ack": (32, 32, "integer")}
    init = {"init-tag": (32, 32, "integer"), "a-rwnd": (64, 32, "integer"),
            "num-outbound-streams": (96, 16, "integer"),
            "num-inbound-streams": (112, 16, "integer"), "initial-tsn": (128, 32, "integer")}
    chunks: dict[str, tuple[int, dict[str, tuple[int, int, str]]]] = {
        "data": (0, {"tsn": (32, 32, "integer"), "stream": (64, 16, "integer"),
                     "ssn": (80, 16, "integer"), "ppid": (96, 32, "integer")}),
        "init": (1, init), "init-ack": (2, init),
        "sack": (3, {**tsn, "a-rwnd": (64, 32, "integer"),
                     "num-gap-ack-blocks": (96, 16, "integer"),
                     "num-dup-tsns": (112, 16, "integer")}),
        "heartbeat": (4, {}), "heartbeat-ack": (5, {}), "abort": (6, {}), "shutdown": (7, tsn),
        "shutdown-ack": (8, {}), "error": (9, {}), "cookie-echo": (10, {}),
        "cookie-ack": (11, {}), "ecne": (12, {"lowest-tsn": (32, 32, "integer")}),
        "cwr": (13, {"lowest-tsn": (32, 32, "integer")}), "shutdown-complete": (14, {}),
        "asconf-ack": (128, {"seqno": (32, 32, "integer")}),
        "forward-tsn": (192, {"new-cum-tsn": (32, 32, "integer")}),
        "asconf": (193, {"seqno": (32, 32, "integer")}),
    }
    common = {"type": (0, 8, "integer"), "flags": (8, 8, "integer"),
              "length": (16, 16, "integer")}
    return {("sctp chunk", n): (t, {**common, **f}) for n, (t, f) in chunks.items()}


EXTHDR_FIELDS: dict[tuple[str, str], tuple[int, dict[str, tuple[int, int, str]]]] = {
    ("exthdr", "hbh"): (0, dict([_NH, _LEN])),
    ("exthdr", "rt"): (43, dict([_NH, _LEN, ("type", (16, 8, "integer")),
                                 ("seg-left", (24, 8, "integer"))])),
    # nft tries these three on a routing header in this order (`srh sid[1]` is also
    # what nft prints for `rt0 addr[1]`: the same bytes).
    ("exthdr", "srh"): (43, {"last-entry": (32, 8, "integer"), "flags": (40, 8, "integer"),
                             "tag": (48, 16, "integer"), "sid[1]": (64, 128, "ipv6_addr"),
                             "sid[2]": (192, 128, "ipv6_addr")}),
    ("exthdr", "rt0"): (43, {"reserved": (32, 32, "integer"), "addr[1]": (64, 128, "ipv6_addr"),
                             "addr[2]": (192, 128, "ipv6_addr")}),
    ("exthdr", "frag"): (44, dict([_NH, ("reserved", (8, 8, "integer")),
                                   ("frag-off", (16, 13, "integer")),
                                   ("reserved2", (29, 2, "integer")),
                                   ("more-fragments", (31, 1, "integer")),
                                   ("id", (32, 32, "integer"))])),
    ("exthdr", "dst"): (60, dict([_NH, _LEN])),
    ("exthdr", "mh"): (135, dict([_NH, _LEN, ("type", (16, 8, "mh_type")),
                                  ("reserved", (24, 8, "integer")),
                                  ("checksum", (32, 16, "integer"))])),
    ("tcp option", "eol"): (0, dict([_KIND])),
    ("tcp option", "nop"): (1, dict([_KIND])),
    ("tcp option", "maxseg"): (2, dict([_KIND, _OLEN, ("size", (16, 16, "integer"))])),
    ("tcp option", "window"): (3, dict([_KIND, _OLEN, ("count", (16, 8, "integer"))])),
    ("tcp option", "sack-perm"): (4, dict([_KIND, _OLEN])),
    ("tcp option", "timestamp"): (8, dict([_KIND, _OLEN, ("tsval", (16, 32, "integer")),
                                           ("tsecr", (48, 32, "integer"))])),
    # sack blocks 0-3 (nft's JSON: sack, sack1, sack2, sack3; its text also sack0)
    ("tcp option", "sack"): (5, dict([_KIND, _OLEN, ("left", (16, 32, "integer")),
                                      ("right", (48, 32, "integer"))])),
    ("tcp option", "sack1"): (5, {"left": (80, 32, "integer"), "right": (112, 32, "integer")}),
    ("tcp option", "sack2"): (5, {"left": (144, 32, "integer"), "right": (176, 32, "integer")}),
    ("tcp option", "sack3"): (5, {"left": (208, 32, "integer"), "right": (240, 32, "integer")}),
    ("tcp option", "md5sig"): (19, dict([_KIND, _OLEN])),
    ("tcp option", "mptcp"): (30, dict([_KIND, _OLEN, ("subtype", (16, 4, "integer"))])),
    ("tcp option", "fastopen"): (34, dict([_KIND, _OLEN])),
    ("ip option", "lsrr"): (131, _IPOPT), ("ip option", "rr"): (7, _IPOPT),
    **_sctp_chunks(),
    ("ip option", "ssrr"): (137, _IPOPT),
    ("ip option", "ra"): (148, {"type": (0, 8, "integer"), "length": (8, 8, "integer"),
                                "value": (16, 16, "integer")}),
}
EXTHDR_F_PRESENT = 1
BITWISE_SHIFTS = {"<<": 1, ">>": 2}  # NFT_BITWISE_LSHIFT, NFT_BITWISE_RSHIFT
# socket keys: JSON key -> (NFT_SOCKET_*, datatype, bytes the kernel writes)
SOCKET_KEYS = {"transparent": (0, "integer", 1), "mark": (1, "mark", 4),
               "wildcard": (2, "integer", 1), "cgroupv2": (3, "cgroupv2", 8)}
# rt keys by family: JSON key -> (NFT_RT_*, datatype, bytes)
RT_KEYS = {("nexthop", "ip"): (1, "ipv4_addr", 4), ("nexthop", "ip6"): (2, "ipv6_addr", 16),
           ("mtu", None): (3, "hinteger", 2), ("classid", None): (0, "realm", 4),
           ("ipsec", None): (4, "boolean", 1)}  # NFT_RT_XFRM: the route has an xfrm state
# osf: `osf ttl loose|skip` (NFTA_OSF_TTL; 0, nft's default, is not written in JSON or text)
# and NFT_OSF_F_VERSION, set for `osf version` (the name and version, "Linux:3.0").
OSF_TTL = {"loose": 1, "skip": 2}
OSF_TTL_NAMES = {v: k for k, v in OSF_TTL.items()}
OSF_F_VERSION = 1
OSF_MAXGENRELEN = 16  # NFT_OSF_MAXGENRELEN: the register holds the name padded to it
# ipsec (the kernel's xfrm expression): (JSON key, family or None) -> (NFT_XFRM_KEY_*,
# datatype, bytes); directions as XFRM_POLICY_IN/OUT.
XFRM_KEYS = {("daddr", "ip"): (1, "ipv4_addr", 4), ("daddr", "ip6"): (2, "ipv6_addr", 16),
             ("saddr", "ip"): (3, "ipv4_addr", 4), ("saddr", "ip6"): (4, "ipv6_addr", 16),
             ("reqid", None): (5, "hinteger", 4), ("spi", None): (6, "integer", 4)}
XFRM_DIRS = {"in": 0, "out": 1}
L3_NUMS = {"ip": 2, "ip6": 10, "inet": 1}
OBJ_TYPE_NAMES = {v: k for k, v in OBJ_TYPES.items()}

LIMIT_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
LIMIT_UNIT_NAMES = {v: k for k, v in LIMIT_UNITS.items()}



LOG_LEVELS = ["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug", "audit"]
LOG_FLAGS = {"tcp sequence": 1, "tcp options": 2, "ip options": 4, "skuid": 8, "ether": 32}
LOG_ALL = 0x2F
# NF_NAT_RANGE_*: netmap (1 << 6) maps an address range 1:1 onto another (`snat prefix to`)
NAT_FLAGS = {"random": 4, "persistent": 8, "fully-random": 16, "netmap": 64}
NAT_NETMAP = NAT_FLAGS["netmap"]
NAT_MAP_IPS, NAT_PROTO = 1, 2
REJECT_TYPES = {"icmp": 0, "icmpv6": 0, "tcp reset": 1, "icmpx": 2}
FIB_RESULTS = {"oif": 1, "oifname": 2, "type": 3}
FIB_RESULT_NAMES = {v: k for k, v in FIB_RESULTS.items()}
FIB_FLAGS = {"saddr": 1, "daddr": 2, "mark": 4, "iif": 8, "oif": 16}
FIB_F_PRESENT = 32  # NFTA_FIB_F_PRESENT: the result is whether the route exists
FIB_TYPES = {"unspec": 0, "unicast": 1, "local": 2, "broadcast": 3, "anycast": 4,
             "multicast": 5, "blackhole": 6, "unreachable": 7, "prohibit": 8}
SET_ANONYMOUS, SET_CONSTANT, SET_INTERVAL, SET_MAP = 1, 2, 4, 8
SET_TIMEOUT, SET_EVAL, SET_OBJECT, SET_CONCAT = 16, 32, 64, 128
ELEM_INTERVAL_END = 1
DYNSET_F_EXPR = 2  # NFT_DYNSET_F_EXPR: a set update's statements are NFTA_DYNSET_EXPRESSIONS

# Named header fields written (`ip ttl set 64`): the checksum each protocol's write fixes
# (NFT_PAYLOAD_CSUM_INET 1 at this offset of its header, NFT_PAYLOAD_CSUM_SCTP 2 (CRC32c);
# none for ip6, ether, vlan, th, nor, as nft 1.0.6 writes them, for dccp and udplite), and
# the fields the layer-4 checksum's pseudo-header holds (NFT_PAYLOAD_L4CSUM_PSEUDOHDR).
PAYLOAD_CSUM = {"ip": (1, 10), "tcp": (1, 16), "udp": (1, 6), "ip6": (0, 0), "ether": (0, 0),
                "vlan": (0, 0), "th": (0, 0), "icmp": (1, 2), "icmpv6": (1, 2), "sctp": (2, 8),
                "dccp": (0, 0), "udplite": (0, 0)}
PSEUDOHDR_FIELDS = {("ip", "saddr"), ("ip", "daddr"), ("ip", "protocol"), ("ip", "length"),
                    ("ip6", "saddr"), ("ip6", "daddr"), ("ip6", "nexthdr"), ("ip6", "length")}


@dataclass(frozen=True)
class WritePlan:
    """How nft writes a named header field: the bytes it writes (a checksummed header's
    write covers whole 16-bit words), the mask keeping the bytes' other bits (None: the
    field is those bytes), where the field's value sits, and the checksum attributes."""

    base: int
    offset: int  # bytes
    length: int  # bytes
    keep: bytes | None
    shift: int
    csum_type: int
    csum_offset: int
    csum_flags: int


def payload_write_plan(proto: str, field: str) -> WritePlan:
    """The write of header field ``proto field``; InputError for a header nfkit does not
    write (its checksum is not one nfkit fixes as nft does: icmp, sctp, ...)."""
    spec = PAYLOAD.get((proto, field))
    if spec is None:
        raise InputError(f"unknown payload field {proto} {field}")
    if proto not in PAYLOAD_CSUM:
        raise InputError(f"cannot set {proto} {field}: writing {proto} headers is not "
                         "encoded by nfkit (refused, not written without its checksum)")
    base, boff, blen, _t = spec
    csum_type, csum_offset = PAYLOAD_CSUM[proto]
    unit = 16 if csum_type == 1 else 8  # the Internet checksum is fixed word by word
    start, end = boff // unit * unit, -(-(boff + blen) // unit) * unit
    shift = end - boff - blen
    bits = end - start
    keep = None if (start, end) == (boff, boff + blen) else \
        (((1 << bits) - 1) & ~(((1 << blen) - 1) << shift)).to_bytes(bits // 8, "big")
    return WritePlan(base, start // 8, bits // 8, keep, shift, csum_type, csum_offset,
                     1 if (proto, field) in PSEUDOHDR_FIELDS else 0)


T_FIB_TYPE = T["fib_addrtype"]
T_FIB_PRESENT = Datatype("boolean", 39, 1, "int")  # a fib result with NFTA_FIB_F_PRESENT (true/false)
T_INT32 = T["integer"]
T_HINT32 = T["hinteger"]  # numgen and hash results: host byte order, as the kernel writes them


Element = tuple[bytes, bytes | None, int, bytes | None]  # key, key_end, flags, data

_LIST_ELEM = A["list"]["elem"]
_EXPR_NAME, _EXPR_DATA = A["expr"]["name"], A["expr"]["data"]
_DATA_VALUE, _DATA_VERDICT = A["data"]["value"], A["data"]["verdict"]
_VERDICT_CODE, _VERDICT_CHAIN = A["verdict"]["code"], A["verdict"]["chain"]
_NAME_ATTR: dict[str, bytes] = {}


# ---- expression elements -----------------------------------------------------------

def expr(name: str, *parts: bytes) -> bytes:
    """One NFTA_LIST_ELEM expression: its name and its attributes ``parts``."""
    head = _NAME_ATTR.get(name)
    if head is None:
        head = _NAME_ATTR[name] = string_attr(_EXPR_NAME, name)
    return nest_bytes(_LIST_ELEM, head, nest_bytes(_EXPR_DATA, *parts))


def expr_head(name: str) -> bytes:
    """The bytes an encoded expression ``name`` carries at [4:4+len] (its name attribute)."""
    return string_attr(_EXPR_NAME, name)


CMP_HEAD = expr_head("cmp")  # what [4:12] of an encoded cmp expression holds


def retag(expr_bytes: bytes, attr_type: int) -> bytes:
    """An encoded NFTA_LIST_ELEM expression re-labelled as another nested attribute
    (a set's or an element's NFTA_*_EXPR)."""
    return nest_bytes(attr_type, expr_bytes[4:])


def parse_exprs(buf: bytes, start: int = 0, end: int | None = None
                ) -> list[tuple[str, dict[str, bytes]]]:
    """An NFTA_RULE_EXPRESSIONS payload -> [(expression name, {attribute name: payload})].

    Raises DecodeError on malformed attributes."""
    out = []
    for _t, s, e in iter_attr_spans(buf, start, end):
        name = ""
        data: dict[str, bytes] = {}
        for t2, s2, e2 in iter_attr_spans(buf, s, e):
            if t2 == _EXPR_NAME:
                name = get_string(memoryview(buf)[s2:e2])
            elif t2 == _EXPR_DATA:
                nm = names(name) if name in TABLES else {}
                for t3, s3, e3 in iter_attr_spans(buf, s2, e2):
                    data[nm.get(t3, str(t3))] = bytes(buf[s3:e3])
        out.append((name, data))
    return out


# ---- nft_data: a value or a verdict --------------------------------------------------

def data_value(t: int, value: bytes) -> bytes:
    """An nft_data nest ``t`` holding ``value``."""
    return nest_bytes(t, attr_bytes(_DATA_VALUE, value))


def value_of_data(b: bytes) -> bytes:
    """The value held by an nft_data payload (b"" when it holds none)."""
    return attr_payloads(b).get(_DATA_VALUE, b"")


def verdict_nest(v: Any) -> bytes:
    """A verdict in libnftables JSON ({"accept": null}, {"jump": {"target": C}}) as the
    NFTA_DATA_VERDICT nest; raises InputError for anything else."""
    if isinstance(v, dict) and len(v) == 1:
        (k, body), = v.items()
        code = VERDICTS.get(k)
        if code is not None:
            if k in ("jump", "goto"):
                if not isinstance(body, dict) or not isinstance(body.get("target"), str):
                    raise InputError(f"{v!r}: {k} needs a target chain")
                return nest_bytes(_DATA_VERDICT, be32_attr(_VERDICT_CODE, code),
                                  string_attr(_VERDICT_CHAIN, body["target"]))
            return nest_bytes(_DATA_VERDICT, be32_attr(_VERDICT_CODE, code))
    raise InputError(f"{v!r} is not a verdict")


def data_verdict(t: int, v: Any) -> bytes:
    """An nft_data nest ``t`` holding the verdict ``v`` (JSON, as `verdict_nest`)."""
    return nest_bytes(t, verdict_nest(v))


def verdict_of_data(b: bytes) -> dict[str, Any]:
    """The verdict held by an nft_data payload, as libnftables JSON."""
    nest = attr_payloads(b).get(_DATA_VERDICT)
    if nest is None:
        raise InputError("verdict data without a verdict")
    v = attr_payloads(nest)
    code = get_be32(memoryview(v[_VERDICT_CODE]))
    name = VERDICT_NAMES.get(code, str(code))
    if name in ("jump", "goto"):
        return {name: {"target": get_string(memoryview(v[_VERDICT_CHAIN]))}}
    return {name: None}


# ---- the registry: each kernel expression declared once ------------------------------

def _data(t: int, v: Any) -> bytes:
    """An nft_data attribute: bytes are a value, a dict is a verdict."""
    return data_verdict(t, v) if isinstance(v, dict) else data_value(t, v)


# attribute kind (the spec's) -> (encoder (number, value) -> bytes, decoder payload -> value)
_KINDS: dict[str, tuple[Callable[[int, Any], bytes], Callable[[bytes], Any]]] = {
    "be16": (be16_attr, get_be16), "be32": (be32_attr, get_be32), "be64": (be64_attr, get_be64),
    "u8": (u8_attr, get_u8), "string": (string_attr, get_string),
    "binary": (attr_bytes, bytes),
    "data": (_data, bytes),  # nft_data: its payload is read by value_of_data / verdict_of_data
    "nested": (nest_bytes, bytes), "nested_array": (nest_bytes, bytes),
}


class KernelExpr:
    """One kernel expression: its name and attributes, from the spec's table (kinds and
    numbers declared there once), with the encoder and the decoder derived from them.

    ``encode((attribute, value), ...)`` writes the attributes given, in the order given (ints for
    integer kinds, str for strings, bytes for binary and pre-encoded nests, bytes
    or a verdict dict for nft_data); ``decode(attrs)`` turns `parse_exprs`' raw
    payloads into those values (nests and nft_data stay bytes; unknown
    attributes stay bytes).  Raises DecodeError for a payload of the wrong size."""

    __slots__ = ("name", "fields")

    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: dict[str, tuple[int, Callable[[int, Any], bytes], Callable[[bytes], Any]]] = {}
        for num, (attr, kind, sub) in enumerate(TABLES[name][2] if name in TABLES else (), start=1):
            enc, dec = _KINDS["data" if kind == "nested" and sub == "data" else kind]
            self.fields[attr] = (num, enc, dec)

    def encode(self, *values: tuple[str, Any]) -> bytes:
        fields = self.fields
        parts = []
        for attr, v in values:
            num, enc, _dec = fields[attr]
            parts.append(enc(num, v))
        return expr(self.name, *parts)

    def decode(self, attrs: dict[str, bytes]) -> dict[str, Any]:
        fields = self.fields
        out: dict[str, Any] = {}
        for attr, b in attrs.items():
            f = fields.get(attr)
            out[attr] = b if f is None else f[2](b)
        return out


EXPRESSIONS = {name: KernelExpr(name) for name in (
    "immediate", "bitwise", "byteorder", "cmp", "range", "lookup", "dynset", "payload",
    "exthdr", "hash", "meta", "rt", "ct", "limit", "connlimit", "counter", "log", "queue",
    "quota", "reject", "nat", "masq", "redir", "objref", "fib", "numgen", "target", "notrack",
    "synproxy", "socket", "dup", "fwd", "tproxy", "osf", "xfrm",
)}


# ---- the common expressions -------------------------------------------------------------

def synproxy_attrs(b: dict[str, Any]) -> bytes:
    """NFTA_SYNPROXY_* of a synproxy statement or object body."""
    x = A["synproxy"]
    flags = b.get("flags", [])
    flags = [flags] if isinstance(flags, str) else flags
    fl = (SYNPROXY_MSS if "mss" in b else 0) | (SYNPROXY_WSCALE if "wscale" in b else 0)
    for f in flags:
        if f not in SYNPROXY_FLAGS:
            raise InputError(f"synproxy: unknown flag {f!r}")
        fl |= SYNPROXY_FLAGS[f]
    return (be16_attr(x["mss"], int(b.get("mss", 0))) + u8_attr(x["wscale"], int(b.get("wscale", 0)))
            + be32_attr(x["flags"], fl))



def byteorder_hton(size: int) -> bytes:
    """Host to network order of ``size`` bytes in register 1."""
    return EXPRESSIONS["byteorder"].encode(("sreg", 1), ("dreg", 1), ("op", 1), ("len", size),
                                           ("size", size))


def objref(objtype: int, name: str) -> bytes:
    return EXPRESSIONS["objref"].encode(("imm_type", objtype), ("imm_name", name))


def meta_load(reg: int, key: int) -> bytes:
    return EXPRESSIONS["meta"].encode(("key", key), ("dreg", reg))


def payload_load(reg: int, base: int, off: int, ln: int) -> bytes:
    return EXPRESSIONS["payload"].encode(("dreg", reg), ("base", base), ("offset", off),
                                         ("len", ln))


def cmp(reg: int, op: int, value: bytes) -> bytes:
    return EXPRESSIONS["cmp"].encode(("sreg", reg), ("op", op), ("data", value))


def cmp_slot(reg: int, op: int, value: bytes) -> tuple[bytes, int]:
    """`cmp` and the offset of ``value`` in its bytes: the encoder writes nft_data last,
    so the value (then its padding) ends the expression; templates patch it there."""
    b = cmp(reg, op, value)
    return b, len(b) - ((len(value) + 3) & ~3)


def bitwise(reg: int, ln: int, mask: bytes, xor: bytes) -> bytes:
    return EXPRESSIONS["bitwise"].encode(("sreg", reg), ("dreg", reg), ("len", ln), ("mask", mask),
                                         ("xor", xor))


def immediate(reg: int, value: bytes | dict[str, Any]) -> bytes:
    """A value (bytes) or a verdict (dict, to register 0) into register ``reg``."""
    return EXPRESSIONS["immediate"].encode(("dreg", reg), ("data", value))
