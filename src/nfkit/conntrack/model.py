"""The conntrack entry model: tuples, status bits, TCP states, entries.

This module owns what a conntrack entry *is* (as the kernel keeps it) and the
names the field uses for its parts: the original tuple, the reply tuple
(stored only when it is not the mirror of the original, i.e. with NAT), the
status bits, the TCP state and the rest.  It knows nothing about netlink messages,
sockets or output formats.  The TCP state numbers are the kernel's, declared
once in `nfkit.netlink.specs.conntrack_tcp` (flow/ uses them too).
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass
from typing import Any, NamedTuple

from nfkit.conntrack.values import PORT_MAX, check
from nfkit.errors import InputError
from nfkit.netlink.specs.conntrack_tcp import TcpState

AF_INET: int = int(socket.AF_INET)  # 2, also NFPROTO_IPV4
AF_INET6: int = int(socket.AF_INET6)  # 10, also NFPROTO_IPV6

FAMILY_NAMES = {AF_INET: "ipv4", AF_INET6: "ipv6"}
FAMILY_NUMBERS = {"ipv4": AF_INET, "ipv6": AF_INET6, "inet": AF_INET, "inet6": AF_INET6,
                  "4": AF_INET, "6": AF_INET6}

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_DCCP = 33
IPPROTO_GRE = 47
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
IPPROTO_UDPLITE = 136

# names as conntrack-tools prints them (libnetfilter_conntrack's proto2str)
PROTO_NAMES = {
    IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_UDPLITE: "udplite", IPPROTO_ICMP: "icmp",
    IPPROTO_ICMPV6: "icmpv6", IPPROTO_SCTP: "sctp", IPPROTO_GRE: "gre", IPPROTO_DCCP: "dccp",
}
PROTO_NUMBERS = {name: num for num, name in PROTO_NAMES.items()}
PROTO_NUMBERS["ipv6-icmp"] = IPPROTO_ICMPV6
PORT_PROTOS = frozenset({IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE, IPPROTO_SCTP, IPPROTO_DCCP})
ICMP_PROTOS = frozenset({IPPROTO_ICMP, IPPROTO_ICMPV6})

# ICMP queries and the type of their answer (the kernel's invert tables), both ways.
_ICMP_INVERT = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}
_ICMPV6_INVERT = {128: 129, 129: 128, 139: 140, 140: 139}


class Status(enum.IntFlag):
    """Conntrack status bits (enum ip_conntrack_status)."""

    EXPECTED = 1 << 0
    SEEN_REPLY = 1 << 1
    ASSURED = 1 << 2
    CONFIRMED = 1 << 3
    SRC_NAT = 1 << 4
    DST_NAT = 1 << 5
    SEQ_ADJUST = 1 << 6
    SRC_NAT_DONE = 1 << 7
    DST_NAT_DONE = 1 << 8
    DYING = 1 << 9
    FIXED_TIMEOUT = 1 << 10
    TEMPLATE = 1 << 11
    UNTRACKED = 1 << 12
    HELPER = 1 << 13
    OFFLOAD = 1 << 14
    HW_OFFLOAD = 1 << 15


# Bits the kernel will not let userspace set or clear (IPS_UNCHANGEABLE_MASK).
STATUS_UNCHANGEABLE = (Status.SRC_NAT_DONE | Status.DST_NAT_DONE | Status.SRC_NAT | Status.DST_NAT
                       | Status.EXPECTED | Status.CONFIRMED | Status.DYING | Status.SEQ_ADJUST
                       | Status.TEMPLATE | Status.UNTRACKED | Status.OFFLOAD | Status.HW_OFFLOAD)


def status_names(status: int) -> list[str]:
    """Names of the bits set in ``status``, lowest bit first."""
    return [bit.name for bit in Status if status & bit.value and bit.name]


_status_cache: dict[tuple[str, ...], int] = {}


def parse_status_names(names: list[str] | tuple[str, ...]) -> int:
    """Bits from status names; raises InputError naming an unknown one."""
    key = tuple(names)
    cached = _status_cache.get(key)
    if cached is not None:
        return cached
    value = _parse_status_names(key)
    if len(_status_cache) < 4096:
        _status_cache[key] = value
    return value


def _parse_status_names(names: tuple[str, ...]) -> int:
    value = 0
    for name in names:
        try:
            value |= Status[name.strip().upper()].value
        except KeyError:
            raise InputError(f"unknown status {name!r} (known: {', '.join(s.name or '' for s in Status)})") from None
    return value


# conntrack-tools prints state 9 as LISTEN (its old name); accept both.
TCP_STATE_TEXT = ["NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
                  "LAST_ACK", "TIME_WAIT", "CLOSE", "LISTEN"]


# SCTP and DCCP states as conntrack -L prints them (enum sctp_conntrack, enum ct_dccp_states)
SCTP_STATE_TEXT = ["NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
                   "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT", "HEARTBEAT_ACKED"]
DCCP_STATE_TEXT = ["NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT",
                   "IGNORE", "INVALID"]
# protocol -> its state names (an Entry's ``state`` is the state of its protocol)
STATE_TEXT = {IPPROTO_TCP: TCP_STATE_TEXT, IPPROTO_SCTP: SCTP_STATE_TEXT, IPPROTO_DCCP: DCCP_STATE_TEXT}


def state_text(proto: int, state: int | None) -> str | None:
    """The name conntrack prints for ``state`` of ``proto`` (None: nothing printed)."""
    names = STATE_TEXT.get(proto)
    if state is None or names is None:
        return None
    return names[state] if state < len(names) else "NONE"


def parse_tcp_state(name: str) -> int:
    """A TCP state number from its name; raises InputError if there is no such state."""
    key = name.strip().upper()
    if key == "LISTEN":
        return TcpState.SYN_SENT2
    try:
        return TcpState[key].value
    except KeyError:
        raise InputError(f"unknown TCP state {name!r} (known: {', '.join(TCP_STATE_TEXT)})") from None


def proto_number(name: str | int, what: str = "protocol") -> int:
    """Layer-4 protocol number from a name or a number (0-255); raises InputError naming ``what``."""
    if not isinstance(name, str):
        return check(name, "proto", what)
    text = name.strip().lower()
    if text.isascii() and text.isdigit():
        return check(text, "proto", what)
    if text in PROTO_NUMBERS:
        return PROTO_NUMBERS[text]
    try:
        num = socket.getprotobyname(text)
    except (OSError, ValueError):  # ValueError: a NUL or an undecodable byte
        shown = repr(name) if len(name) <= 40 else repr(name[:40]) + "..."
        raise InputError(f"{what}: unknown protocol {shown}") from None
    return num


def proto_name(num: int) -> str:
    return PROTO_NAMES.get(num, "unknown")


class Tuple(NamedTuple):
    """One direction of a connection: addresses (text), protocol and its keys.

    ``sport``/``dport`` hold the ports of port-based protocols (TCP, UDP,
    SCTP, DCCP, UDP-Lite); ``icmp_type``, ``icmp_code`` and ``icmp_id`` those
    of ICMP and ICMPv6 (then the ports are 0).  ``zone`` is the tuple's own
    zone when the entry has a direction-specific zone, else None.
    """

    src: str
    dst: str
    proto: int
    sport: int = 0
    dport: int = 0
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    zone: int | None = None

    @property
    def family(self) -> int:
        return AF_INET6 if ":" in self.src else AF_INET

    def mirror(self) -> Tuple:
        """The tuple of the answering direction when no NAT is involved."""
        itype = self.icmp_type
        if itype is not None:
            table = _ICMPV6_INVERT if self.proto == IPPROTO_ICMPV6 else _ICMP_INVERT
            itype = table.get(itype, itype)
        return Tuple(self.dst, self.src, self.proto, self.dport, self.sport,
                     itype, self.icmp_code, self.icmp_id, None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"src": self.src, "dst": self.dst}
        if self.icmp_type is not None:
            out.update(type=self.icmp_type, code=self.icmp_code, id=self.icmp_id)
        elif self.proto in PORT_PROTOS:
            out.update(sport=self.sport, dport=self.dport)
        if self.zone is not None:
            out["zone"] = self.zone
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any], proto: int, what: str = "tuple") -> Tuple:
        """Build from the JSON form; raises InputError naming ``what``."""
        if proto in PORT_PROTOS and len(obj) == 4:
            # the common shape, checked without helpers (bulk restores read 100,000s of these)
            try:
                src, dst = addrs_seen(obj.get("src")), addrs_seen(obj.get("dst"))
            except TypeError:
                src = dst = None
            if src is None:
                src = CANONICAL_ADDRS.get(obj.get("src"))
            if dst is None:
                dst = CANONICAL_ADDRS.get(obj.get("dst"))
            sport, dport = obj.get("sport"), obj.get("dport")
            if (src is not None and dst is not None and type(sport) is int and type(dport) is int
                    and 0 <= sport <= PORT_MAX and 0 <= dport <= PORT_MAX and (":" in src) == (":" in dst)):
                return tuple_new(cls, (src, dst, proto, sport, dport, None, None, None, None))
        try:
            src, dst = canonical_address(obj["src"], what + ".src"), canonical_address(obj["dst"], what + ".dst")
        except KeyError as exc:
            raise InputError(f"{what}: missing {exc.args[0]!r}") from None
        if (":" in src) != (":" in dst):
            raise InputError(f"{what}: src and dst are of different families")
        if proto in ICMP_PROTOS:
            return cls(src, dst, proto, 0, 0, check(obj.get("type", 8), "icmp_type", what + ".type"),
                       check(obj.get("code", 0), "icmp_code", what + ".code"),
                       check(obj.get("id", 0), "icmp_id", what + ".id"), _opt_zone(obj, what))
        if proto in PORT_PROTOS:
            return cls(src, dst, proto, check(obj.get("sport", 0), "port", what + ".sport"),
                       check(obj.get("dport", 0), "port", what + ".dport"), zone=_opt_zone(obj, what))
        return cls(src, dst, proto, zone=_opt_zone(obj, what))


def _opt_zone(obj: dict[str, Any], what: str) -> int | None:
    z = obj.get("zone")
    return None if z is None else check(z, "zone", what + ".zone")


class _CanonicalAddrs(dict):  # type: ignore[type-arg]
    """text -> canonical text of the addresses seen so far (None key: not an address)."""

    def get(self, text: Any, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[text]
        except (KeyError, TypeError):
            pass
        if not isinstance(text, str):
            return default
        family = AF_INET6 if ":" in text else AF_INET
        try:
            canon = socket.inet_ntop(family, socket.inet_pton(family, text))
        except (OSError, ValueError):  # ValueError: a NUL or an undecodable byte in the text
            return default
        if len(self) > 1 << 20:
            self.clear()
        self[text] = canon
        return canon


# Shared with conntrack.formats, whose per-entry hot path builds tuples the same way:
CANONICAL_ADDRS = _CanonicalAddrs()  # address text -> its canonical text (one string each)
addrs_seen = dict.get.__get__(CANONICAL_ADDRS)  # the plain lookup, in C
tuple_new = tuple.__new__  # a Tuple without NamedTuple's argument handling


def canonical_address(text: str, what: str = "address") -> str:
    """The address as conntrack prints it; raises InputError if it does not parse."""
    canon = CANONICAL_ADDRS.get(text)
    if canon is None:
        shown = repr(text) if len(repr(text)) <= 60 else repr(text)[:40] + "..."
        raise InputError(f"{what}: {shown} is not an IPv4 or IPv6 address")
    return canon  # type: ignore[no-any-return]


@dataclass(slots=True)
class Counters:
    """Packet and byte counters of both directions (nf_conntrack_acct)."""

    orig_packets: int = 0
    orig_bytes: int = 0
    reply_packets: int = 0
    reply_bytes: int = 0


class Entry:
    """One conntrack entry.

    ``orig`` is the original tuple; ``reply`` is the reply tuple, computed as
    the mirror of ``orig`` unless a different one is stored (NAT).  Optional
    parts (state, counters, timestamps, labels, helper, zone) are None when
    the kernel did not report them.  ``state`` is the state of the entry's
    protocol (TCP, SCTP or DCCP); ``vtags`` an SCTP entry's verification tags
    (original, reply direction), as the kernel holds them.
    """

    __slots__ = (
        "_reply",
        "counters",
        "family",
        "helper",
        "id",
        "labels",
        "mark",
        "orig",
        "secctx",
        "state",
        "status",
        "timeout",
        "ts_start",
        "ts_stop",
        "use",
        "vtags",
        "zone",
    )

    def __init__(self, orig: Tuple, reply: Tuple | None = None, *, family: int | None = None,
                 status: int = 0, state: int | None = None, timeout: int | None = None,
                 mark: int = 0, zone: int | None = None, labels: int | None = None,
                 counters: Counters | None = None, ts_start: int | None = None,
                 ts_stop: int | None = None, helper: str | None = None, id: int | None = None,
                 use: int | None = None, secctx: str | None = None,
                 vtags: tuple[int, int] | None = None) -> None:
        self.family = family if family is not None else orig.family
        self.orig = orig
        self._reply = None if reply is None or reply == orig.mirror() else reply
        self.status = status
        self.state = state
        self.timeout = timeout
        self.mark = mark
        self.zone = zone
        self.labels = labels
        self.counters = counters
        self.ts_start = ts_start
        self.ts_stop = ts_stop
        self.helper = helper
        self.id = id
        self.use = use
        self.secctx = secctx
        self.vtags = vtags

    @property
    def reply(self) -> Tuple:
        r = self._reply
        return r if r is not None else self.orig.mirror()

    @property
    def nat(self) -> bool:
        """True when the reply tuple is not the mirror of the original (NAT applied)."""
        return self._reply is not None

    @property
    def proto(self) -> int:
        return self.orig.proto

    @property
    def key(self) -> tuple[Tuple, int]:
        """What identifies the entry in the table: original tuple and zone."""
        return (self.orig._replace(zone=None), self.zone or 0)

    def __repr__(self) -> str:
        return (f"Entry({proto_name(self.proto)} {self.orig.src}:{self.orig.sport} -> "
                f"{self.orig.dst}:{self.orig.dport} status={self.status:#x} id={self.id})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    __hash__ = None  # type: ignore[assignment]
