"""Links, addresses, routes and policy rules over rtnetlink, and their events.

Model objects are frozen dataclasses with `ipaddress` values; `Rtnl` holds one
NETLINK_ROUTE socket for requests and dumps, `RouteEvents` another subscribed
to the groups a daemon follows.  Decoding is one function per message class,
used by dumps and events alike.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nfkit.errors import InputError
from nfkit.netlink.codec import DecodeError, Message, MessageWriter
from nfkit.netlink.consts import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
from nfkit.netlink.socket import HoldsSocket, NetlinkSocket
from nfkit.route import spec as S

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

_OPERSTATES = ("unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up")


def family_of(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _addr(raw: bytes) -> IPAddress:
    return ipaddress.ip_address(raw)


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    up: bool          # administratively (IFF_UP)
    carrier: bool     # the lower layer is up (IFF_LOWER_UP)
    operstate: str
    mtu: int | None = None

    @property
    def running(self) -> bool:
        """Up and with carrier: can pass traffic."""
        return self.up and self.carrier


@dataclass(frozen=True)
class Address:
    index: int
    interface: IPInterface  # address with prefix length
    flags: int = 0
    scope: int = 0

    @property
    def usable(self) -> bool:
        """Not tentative (DAD running), failed or deprecated."""
        return not self.flags & (S.IFA_F_TENTATIVE | S.IFA_F_DADFAILED | S.IFA_F_DEPRECATED)


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    table: int = S.RT_TABLE_MAIN
    oif: int | None = None
    gateway: IPAddress | None = None
    priority: int | None = None
    protocol: int = S.RTPROT_STATIC
    type: int = S.RTN_UNICAST
    scope: int = S.RT_SCOPE_UNIVERSE


@dataclass(frozen=True)
class PolicyRule:
    """An `ip rule`: packets matching fwmark/mask (and source, input interface) use ``table``."""

    version: int
    priority: int
    table: int
    fwmark: int | None = None
    fwmask: int | None = None
    src: IPNetwork | None = None
    iifname: str | None = None
    action: int = S.FR_ACT_TO_TBL


Event = tuple[str, bool, Any]  # (kind: link|address|route|rule, present: new or gone, object)


# ---------------------------------------------------------------- decoding

def decode_link(msg: Message) -> Link:
    _fam, _type, index, flags, _change = S.IFINFOMSG.unpack_from(msg.payload, 0)
    a = S.LINK.decode(msg.payload[S.IFINFOMSG.size:])
    state = a.get("operstate", 0)
    return Link(index, a.get("ifname", ""), bool(flags & S.IFF_UP), bool(flags & S.IFF_LOWER_UP),
                _OPERSTATES[state] if state < len(_OPERSTATES) else str(state), a.get("mtu"))


def decode_address(msg: Message) -> Address:
    _fam, plen, flags, scope, index = S.IFADDRMSG.unpack_from(msg.payload, 0)
    a = S.ADDR.decode(msg.payload[S.IFADDRMSG.size:])
    raw = a.get("local") or a.get("address")
    if raw is None:
        raise DecodeError("address message without IFA_ADDRESS/IFA_LOCAL")
    return Address(index, ipaddress.ip_interface((_addr(raw), plen)), a.get("flags", flags), scope)


def decode_route(msg: Message) -> Route:
    fam, dst_len, _sl, _tos, table, proto, scope, rtype, _flags = S.RTMSG.unpack_from(msg.payload, 0)
    a = S.ROUTE.decode(msg.payload[S.RTMSG.size:])
    zero = bytes(4 if fam == socket.AF_INET else 16)
    dst = ipaddress.ip_network((_addr(a.get("dst", zero)), dst_len))
    gw = a.get("gateway")
    return Route(dst, a.get("table", table), a.get("oif"), _addr(gw) if gw else None,
                 a.get("priority"), proto, rtype, scope)


def decode_rule(msg: Message) -> PolicyRule:
    fam, _dl, src_len, _tos, table, _r1, _r2, action, _flags = S.FIB_RULE_HDR.unpack_from(msg.payload, 0)
    a = S.RULE.decode(msg.payload[S.FIB_RULE_HDR.size:])
    src = a.get("src")
    return PolicyRule(4 if fam == socket.AF_INET else 6, a.get("priority", 0), a.get("table", table),
                      a.get("fwmark"), a.get("fwmask"),
                      ipaddress.ip_network((_addr(src), src_len)) if src else None,
                      a.get("iifname"), action)


_EVENT_DECODERS = {
    S.RTM_NEWLINK: ("link", True, decode_link), S.RTM_DELLINK: ("link", False, decode_link),
    S.RTM_NEWADDR: ("address", True, decode_address), S.RTM_DELADDR: ("address", False, decode_address),
    S.RTM_NEWROUTE: ("route", True, decode_route), S.RTM_DELROUTE: ("route", False, decode_route),
    S.RTM_NEWRULE: ("rule", True, decode_rule), S.RTM_DELRULE: ("rule", False, decode_rule),
}


def decode_event(msg: Message) -> Event | None:
    """The event a message announces, or None for a message type nfkit does not follow."""
    entry = _EVENT_DECODERS.get(msg.type)
    if entry is None:
        return None
    kind, present, decode = entry
    return kind, present, decode(msg)


# ---------------------------------------------------------------- encoding

def _request(msg_type: int, header: bytes, flags: int = NLM_F_REQUEST) -> MessageWriter:
    w = MessageWriter()
    w.begin(msg_type, flags, nfgen=False)
    w.raw(header)
    return w


def _route_message(route: Route, msg_type: int, flags: int) -> MessageWriter:
    fam = family_of(route.dst.version)
    table = route.table if route.table < 256 else 0  # larger ids go in RTA_TABLE only
    w = _request(msg_type, S.RTMSG.pack(fam, route.dst.prefixlen, 0, 0, table, route.protocol,
                                        route.scope, route.type, 0), flags)
    S.ROUTE.encode(w, {
        "dst": route.dst.network_address.packed if route.dst.prefixlen else None,
        "table": route.table,
        "oif": route.oif,
        "gateway": route.gateway.packed if route.gateway is not None else None,
        "priority": route.priority,
    })
    w.end()
    return w


def _rule_message(rule: PolicyRule, msg_type: int, flags: int) -> MessageWriter:
    fam = family_of(rule.version)
    src_len = rule.src.prefixlen if rule.src is not None else 0
    w = _request(msg_type, S.FIB_RULE_HDR.pack(fam, 0, src_len, 0, rule.table if rule.table < 256 else 0,
                                               0, 0, rule.action, 0), flags)
    S.RULE.encode(w, {
        "priority": rule.priority,
        "table": rule.table,
        "fwmark": rule.fwmark,
        "fwmask": rule.fwmask,
        "src": rule.src.network_address.packed if rule.src is not None else None,
        "iifname": rule.iifname,
    })
    w.end()
    return w


class Rtnl(HoldsSocket):
    """Requests and dumps over one NETLINK_ROUTE socket (a context manager)."""

    def __init__(self) -> None:
        self.sock = NetlinkSocket(S.NETLINK_ROUTE)

    def _dump(self, msg_type: int, header: bytes, decode: Any, what: str) -> list[Any]:
        w = _request(msg_type, header)
        w.end()
        return [decode(m) for m in self.sock.dump(w, restart=True, what=what)]

    def links(self) -> list[Link]:
        return self._dump(S.RTM_GETLINK, S.IFINFOMSG.pack(0, 0, 0, 0, 0), decode_link, "links")

    def link(self, name: str) -> Link:
        for link in self.links():
            if link.name == name:
                return link
        raise InputError(f"interface {name}: no such interface")

    def addresses(self, version: int | None = None) -> list[Address]:
        fam = 0 if version is None else family_of(version)
        return self._dump(S.RTM_GETADDR, S.IFADDRMSG.pack(fam, 0, 0, 0, 0), decode_address,
                          "addresses")

    def routes(self, version: int, table: int | None = None) -> list[Route]:
        found = self._dump(S.RTM_GETROUTE, S.RTMSG.pack(family_of(version), 0, 0, 0, 0, 0, 0, 0, 0),
                           decode_route, "routes")
        return [r for r in found if table is None or r.table == table]

    def rules(self, version: int) -> list[PolicyRule]:
        return self._dump(S.RTM_GETRULE, S.FIB_RULE_HDR.pack(family_of(version), 0, 0, 0, 0, 0, 0, 0, 0),
                          decode_rule, "policy rules")

    def add_route(self, route: Route, replace: bool = True) -> None:
        flags = NLM_F_REQUEST | NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        self.sock.request(_route_message(route, S.RTM_NEWROUTE, flags), what=f"route {route.dst}")

    def delete_route(self, route: Route) -> None:
        self.sock.request(_route_message(route, S.RTM_DELROUTE, NLM_F_REQUEST), what=f"route {route.dst}")

    def add_rule(self, rule: PolicyRule) -> None:
        self.sock.request(_rule_message(rule, S.RTM_NEWRULE, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL),
                          what=f"policy rule {rule.priority}")

    def delete_rule(self, rule: PolicyRule) -> None:
        self.sock.request(_rule_message(rule, S.RTM_DELRULE, NLM_F_REQUEST),
                          what=f"policy rule {rule.priority}")


ALL_GROUPS = (S.RTNLGRP_LINK, S.RTNLGRP_IPV4_IFADDR, S.RTNLGRP_IPV6_IFADDR, S.RTNLGRP_IPV4_ROUTE,
              S.RTNLGRP_IPV6_ROUTE, S.RTNLGRP_IPV4_RULE, S.RTNLGRP_IPV6_RULE)


class RouteEvents(HoldsSocket):
    """A socket subscribed to link, address, route and rule changes; `fileno` for selectors."""

    def __init__(self, groups: tuple[int, ...] = ALL_GROUPS) -> None:
        self.sock = NetlinkSocket(S.NETLINK_ROUTE)
        self.sock.subscribe(*groups)

    def pending(self) -> Iterator[Event]:
        """The events waiting now (never blocks); raises EventsLost if the kernel dropped some."""
        for msg in self.sock.waiting():
            event = decode_event(msg)
            if event is not None:
                yield event

    def wait(self, timeout: float) -> Iterator[Event]:
        """Events as they come, until ``timeout`` seconds pass with none."""
        for msg in self.sock.events(timeout):
            event = decode_event(msg)
            if event is not None:
                yield event
