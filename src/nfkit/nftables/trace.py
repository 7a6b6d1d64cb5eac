"""Traced packets (NFNLGRP_NFTRACE) printed as `nft monitor trace` prints them.

A packet that a rule marked with `meta nftrace set 1` makes the kernel send one
NFT_MSG_TRACE event per rule that decided something, per chain policy and per
return: its trace id, table, chain, rule handle, verdict, interfaces, mark and
the packet's link, network and transport headers.  This module owns decoding
those attributes (`decode`), dissecting the headers into the matches nft prints
(`packet_matches`: each protocol's fields in nft's order, without its checksum
and the fields nft leaves out, the bytes past the known fields as one raw
payload) and the lines (`TraceFormatter`), which print a rule by its text as
the listing prints it, looked up by handle in a cache of the chain's rules that
is read again when the ruleset's generation moves.  It opens no socket of its
own: the rules come from a `rules_of` callable.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nfkit.netlink.codec import attr_payloads, get_be16, get_be32, get_be64, get_string, nest_bytes
from nfkit.netlink.consts import NFNL_SUBSYS_NFTABLES
from nfkit.netlink.specs.nftables import TraceType, nums
from nfkit.nftables.expressions import A, verdict_of_data
from nfkit.nftables.messages import FAMILY_NAME, msg_type
from nfkit.nftables.textfmt import statement, value
from nfkit.nftables.types import PAYLOAD, datatype

T = nums("trace")
TRACE_MSG = msg_type("trace")
NEWGEN_MSG = msg_type("newgen")


@dataclass
class TraceEvent:
    """One NFT_MSG_TRACE event, decoded (absent attributes are None)."""

    id: int
    family: str
    type: str  # rule, policy, return
    table: str | None = None
    chain: str | None = None
    rule_handle: int | None = None
    verdict: dict[str, Any] | None = None
    policy: str | None = None
    iif: int | None = None
    iiftype: int | None = None
    oif: int | None = None
    mark: int | None = None
    nfproto: int | None = None
    headers: dict[int, bytes] = field(default_factory=dict)  # payload base -> bytes


_TYPES: dict[int, str] = {TraceType.RULE: "rule", TraceType.POLICY: "policy",
                         TraceType.RETURN: "return"}
_POLICIES = {0: "drop", 1: "accept"}


def decode(family: int, attrs: dict[int, Any]) -> TraceEvent:
    """The attributes of one trace message -> TraceEvent."""
    def be32(name: str) -> int | None:
        return get_be32(attrs[T[name]]) if T[name] in attrs else None

    ev = TraceEvent(be32("id") or 0, FAMILY_NAME.get(family, str(family)),
                    _TYPES.get(be32("type") or 0, "unknown"))
    if T["table"] in attrs:
        ev.table = get_string(attrs[T["table"]])
    if T["chain"] in attrs:
        ev.chain = get_string(attrs[T["chain"]])
    if T["rule_handle"] in attrs:
        ev.rule_handle = get_be64(attrs[T["rule_handle"]])
    if T["verdict"] in attrs:
        ev.verdict = verdict_of_data(nest_bytes(A["data"]["verdict"], bytes(attrs[T["verdict"]])))
    policy = be32("policy")
    if policy is not None:
        ev.policy = _POLICIES.get(policy, str(policy))
    ev.iif, ev.oif, ev.mark, ev.nfproto = be32("iif"), be32("oif"), be32("mark"), be32("nfproto")
    if T["iiftype"] in attrs:
        ev.iiftype = get_be16(attrs[T["iiftype"]])
    for base, name in ((0, "ll_header"), (1, "network_header"), (2, "transport_header")):
        if T[name] in attrs:
            ev.headers[base] = bytes(attrs[T[name]])
    return ev


# ---- the packet's headers, as nft dissects them ------------------------------------

@dataclass(frozen=True)
class Header:
    """What nft prints of one protocol header: its fields in header order (from
    types.PAYLOAD), the order it prints them in (then the rest in header order),
    those it leaves out, and which field names the next protocol."""

    name: str
    order: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    next_field: str | None = None
    next: dict[int, str] = field(default_factory=dict)
    # fields that overlap others nft never reaches (icmp's gateway, mtu)
    overlapped: tuple[str, ...] = ()
    # nft's name where nfkit's payload table has another (icmpv6 "parameter")
    names: dict[str, str] = field(default_factory=dict)


_L4 = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
_L3 = {0x0800: "ip", 0x86DD: "ip6", 0x0806: "arp", 0x8100: "vlan"}
# The ARP header (Ethernet and IPv4 addresses), for traces only: nfkit's rule vocabulary
# has no arp fields (docs/rules.md).  nft prints its operation alone.
_ARP_FIELDS = [("htype", 0, 16, "integer"), ("ptype", 16, 16, "ether_type"),
               ("hlen", 32, 8, "integer"), ("plen", 40, 8, "integer"),
               ("operation", 48, 16, "arp_op"), ("saddr ether", 64, 48, "ether_addr"),
               ("saddr ip", 112, 32, "ipv4_addr"), ("daddr ether", 144, 48, "ether_addr"),
               ("daddr ip", 192, 32, "ipv4_addr")]
# nft's names of ARP operations (its arpop type)
_ARP_OPS = {1: "request", 2: "reply", 3: "rrequest", 4: "rreply", 8: "inrequest",
            9: "inreply", 10: "nak"}
HEADERS = {h.name: h for h in (
    Header("ether", order=("saddr", "daddr", "type"), next_field="type", next=_L3),
    # the 802.1Q tag the kernel puts back into the link header it traces; nft 1.0.6
    # names the CFI bit "dei", as it lists it
    Header("vlan", next_field="type", next=_L3, names={"cfi": "dei"}),
    Header("arp", hidden=("htype", "ptype", "hlen", "plen", "saddr ether", "saddr ip",
                          "daddr ether", "daddr ip")),
    Header("ip", order=("saddr", "daddr", "dscp", "ecn", "ttl", "id", "protocol", "length"),
           hidden=("version", "hdrlength", "frag-off", "checksum"), next_field="protocol",
           next=_L4),
    Header("ip6", order=("saddr", "daddr", "dscp", "ecn", "hoplimit", "flowlabel", "nexthdr",
                         "length"),
           hidden=("version",), next_field="nexthdr", next=_L4),
    Header("icmp", hidden=("checksum",), overlapped=("gateway", "mtu")),
    # at offset 32 nft takes the first of its icmpv6 templates there, whatever the type
    Header("icmpv6", hidden=("checksum",), overlapped=("mtu", "id", "sequence", "max-delay"),
           names={"parameter": "parameter-problem"}),
    Header("udp", hidden=("checksum",)),
    Header("sctp", hidden=("checksum",)),
    Header("tcp", hidden=("sequence", "ackseq", "doff", "reserved", "checksum", "urgptr")),
)}
_BASE_LETTERS = {0: "ll", 1: "nh", 2: "th"}
_ARPHRD_ETHER = 1
_NFPROTO = {2: "ip", 10: "ip6"}


def _fields_of(proto: str) -> list[tuple[str, int, int, str]]:
    """(field, bit offset, bit length, datatype) of ``proto``, in header order."""
    h = HEADERS[proto]
    rows = _ARP_FIELDS if proto == "arp" else [
        (f, off, ln, dt) for (p, f), (_b, off, ln, dt) in PAYLOAD.items() if p == proto]
    return sorted((r for r in rows if r[0] not in h.overlapped), key=lambda r: r[1])


def _bits(data: bytes, off: int, ln: int) -> int:
    whole = int.from_bytes(data, "big")
    return (whole >> (len(data) * 8 - off - ln)) & ((1 << ln) - 1)


def _dissect(proto: str, data: bytes, start: int = 0
             ) -> tuple[list[tuple[str, str, Any]], str | None, int]:
    """The printed (protocol, field, value) of one header (its fields from bit ``start``
    of ``data`` on), the protocol it carries next, and the bits it covers."""
    h = HEADERS[proto]
    shown: list[tuple[str, str, Any]] = []
    nxt = None
    end = start
    for name, off, ln, dt in _fields_of(proto):
        if off < start:
            continue
        if off + ln > len(data) * 8:
            break
        raw = _bits(data, off, ln)
        end = off + ln
        if name == h.next_field:
            nxt = h.next.get(raw)
        if name in h.hidden:
            continue
        size = (ln + 7) // 8
        v = _ARP_OPS.get(raw, raw) if dt == "arp_op" else datatype(dt).decode(raw.to_bytes(size, "big"))
        if dt == "inet_proto" and raw == 0:
            v = "ip"  # nft names protocol 0 as /etc/protocols does
        shown.append((proto, h.names.get(name, name), v))
    ordered: list[tuple[str, str, Any]] = []
    for want in h.order:  # nft stops ordering at the first field it does not find
        hit = [s for s in shown if s[1] == want]
        if not hit:
            break
        ordered.append(hit[0])
        shown.remove(hit[0])
    return ordered + shown, nxt, end


def packet_matches(ev: TraceEvent) -> list[dict[str, Any]]:
    """The packet's headers as the match statements nft prints after "packet:"."""
    stmts: list[dict[str, Any]] = []
    l3 = None
    if ev.family in ("inet", "netdev") and ev.nfproto is not None:
        l3 = _NFPROTO.get(ev.nfproto)
    elif ev.family in ("ip", "ip6"):
        l3 = ev.family
    proto: str | None = "ether" if ev.iiftype == _ARPHRD_ETHER and 0 in ev.headers else None
    carried: str | None = None
    for base in (0, 1, 2):
        data = ev.headers.get(base)
        if data is None:
            carried = None  # nothing above a header the kernel did not give is known
            continue
        if base == 1:
            proto = carried or l3
        elif base == 2:
            proto = carried
        fields: list[tuple[str, str, Any]] = []
        end = 0
        while proto in HEADERS:
            got, carried, end = _dissect(proto, data, end)
            # the next header names its own protocol: nft leaves the field naming it out
            # as that match's dependency, when it prints that header (the network
            # header's only in a table of one network family)
            above = _BASE_OF.get(carried) if carried is not None else None
            if carried is not None and (above == base or (above == base + 1 and above in ev.headers)) \
                    and (base == 0 or ev.family in ("ip", "ip6")):
                got = [f for f in got if f[1] != HEADERS[proto].next_field]
            fields += got
            if above != base:
                break
            proto = carried  # stacked in the same header (a VLAN tag in the link header)
        else:
            carried = None
        for p, f, v in fields:
            stmts.append({"match": {"op": "==", "left": {"payload": {"protocol": p, "field": f}},
                                    "right": v}})
        rest = len(data) * 8 - end
        if rest > 0:
            stmts.append({"match": {"op": "==", "left": {"payload": {
                "base": _BASE_LETTERS[base], "offset": end, "len": rest}},
                "right": _bits(data, end, rest)}})
    return stmts


# the payload base each dissected header is in
_BASE_OF = {"ether": 0, "vlan": 0, "ip": 1, "ip6": 1, "arp": 1,
            **{name: 2 for name in _L4.values()}}


def _ifname(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return str(index)


_TCP_FLAGS = {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32, "ecn": 64, "cwr": 128}


def _match_text(s: dict[str, Any]) -> str:
    """A packet match as nft prints it in a trace: TCP flags compared whole ("== syn",
    several as one hex number), every other field as in a rule."""
    m = s["match"]
    if m["left"] == {"payload": {"protocol": "tcp", "field": "flags"}}:
        flags = m["right"] if isinstance(m["right"], list) else [m["right"]]
        if len(flags) == 1 and flags[0] in _TCP_FLAGS:
            return f"tcp flags == {flags[0]}"
        return f"tcp flags == 0x{sum(_TCP_FLAGS.get(f, 0) for f in flags):02x}"
    return statement(s)


# ---- lines -------------------------------------------------------------------------

class TraceFormatter:
    """Lines for trace events, as `nft monitor trace` prints them (or JSON objects).

    ``read_rules()`` gives {(family, table, chain): {handle: rule}} of the whole
    ruleset (a rule as its text, or its statements for JSON); it is read when first
    needed and again after `generation_moved` (nft reads it once, at start)."""

    def __init__(self, read_rules: Callable[[], dict[tuple[str, str, str], dict[int, Any]]],
                 as_json: bool = False) -> None:
        self.read_rules = read_rules
        self.as_json = as_json
        self._rules: dict[tuple[str, str, str], dict[int, Any]] | None = None

    def generation_moved(self) -> None:
        """The ruleset changed: its rules are read again when next needed."""
        self._rules = None

    def load(self) -> None:
        """Read the rules now (at start, as nft does: a rule then prints with the
        counter values it had when the trace began)."""
        self._rules = self.read_rules()

    def rule(self, ev: TraceEvent) -> Any:
        """The rule an event names (its text, or its statements), or None when unknown."""
        if ev.table is None or ev.chain is None or ev.rule_handle is None:
            return None
        if self._rules is None:
            self.load()
        assert self._rules is not None
        return self._rules.get((ev.family, ev.table, ev.chain), {}).get(ev.rule_handle)

    def feed(self, msg: Any) -> list[str]:
        """The lines of one message of the trace or the ruleset group."""
        if msg.type >> 8 != NFNL_SUBSYS_NFTABLES:
            return []
        if msg.type == NEWGEN_MSG:
            self.generation_moved()
            return []
        if msg.type != TRACE_MSG:
            return []
        return self.lines(decode(msg.family, attr_payloads(msg.attrs)))

    def lines(self, ev: TraceEvent) -> list[str]:
        if self.as_json:
            return [json.dumps({"trace": obj}) for obj in self._objects(ev)]
        head = f"trace id {ev.id:08x} {ev.family} " + "".join(
            f"{x} " for x in (ev.table, ev.chain) if x is not None)
        out = []
        if ev.type == "rule":
            if 0 in ev.headers or 1 in ev.headers:
                out.append(f"{head}packet: {self._packet_text(ev)}")
            rule = self.rule(ev)
            if rule is not None:
                out.append(f"{head}rule {rule} (verdict {self._verdict(ev)})")
            elif ev.rule_handle is not None:
                out.append(f"{head}unknown rule handle {ev.rule_handle} "
                           f"(verdict {self._verdict(ev)})")
        elif ev.type == "policy":
            text = f"policy {ev.policy} " if ev.policy is not None else ""
            out.append(f"{head}{text}{self._mark(ev)}")
        elif ev.type == "return":
            text = f"verdict {self._verdict(ev)} " if ev.verdict is not None else ""
            out.append(f"{head}{text}{self._mark(ev)}")
        return out

    @staticmethod
    def _verdict(ev: TraceEvent) -> str:
        return value(ev.verdict) if ev.verdict is not None else ""

    @staticmethod
    def _mark(ev: TraceEvent) -> str:
        return f"meta mark 0x{ev.mark:08x} " if ev.mark is not None else ""

    def _packet_text(self, ev: TraceEvent) -> str:
        words = []
        for key, index in (("iif", ev.iif), ("oif", ev.oif)):
            if index is not None:
                words.append(f"{key} {json.dumps(_ifname(index))}")
        words += [_match_text(s) for s in packet_matches(ev)]
        return "".join(w + " " for w in words)

    def _objects(self, ev: TraceEvent) -> Iterable[dict[str, Any]]:
        base: dict[str, Any] = {"id": f"{ev.id:08x}", "family": ev.family}
        for k in ("table", "chain"):
            if getattr(ev, k) is not None:
                base[k] = getattr(ev, k)
        if ev.type == "rule":
            if 0 in ev.headers or 1 in ev.headers:
                pkt = dict(base, type="packet")
                for key, index in (("iif", ev.iif), ("oif", ev.oif)):
                    if index is not None:
                        pkt[key] = _ifname(index)
                pkt["match"] = packet_matches(ev)
                yield pkt
            if ev.rule_handle is not None:
                rule = self.rule(ev)
                obj = dict(base, type="rule", handle=ev.rule_handle)
                if rule is not None:  # else a rule gone since (nft: "unknown rule handle")
                    obj["rule"] = rule
                yield dict(obj, verdict=ev.verdict)
            return
        obj = dict(base, type=ev.type)
        if ev.type == "policy" and ev.policy is not None:
            obj["policy"] = ev.policy
        if ev.type == "return" and ev.verdict is not None:
            obj["verdict"] = ev.verdict
        if ev.mark is not None:
            obj["mark"] = ev.mark
        yield obj


def ruleset_rules(as_json: bool = False) -> Callable[[], dict[tuple[str, str, str], dict[int, Any]]]:
    """A `TraceFormatter` ``read_rules``: every rule of the ruleset by chain and handle,
    as its listed text (or, with ``as_json``, its rule object as `rules list --json`
    lists it)."""
    from nfkit.nftables.jsonfmt import rule_json
    from nfkit.nftables.listing import list_ruleset
    from nfkit.nftables.textfmt import rule_text

    def read_rules() -> dict[tuple[str, str, str], dict[int, Any]]:
        out: dict[tuple[str, str, str], dict[int, Any]] = {}
        for r in list_ruleset().rules:
            if r.handle is not None:
                out.setdefault((r.family, r.table, r.chain), {})[r.handle] = \
                    rule_json(r)["rule"] if as_json else rule_text(r)
        return out
    return read_rules
