"""conntrack messages <-> `nfkit.conntrack.Entry`, as conntrackd 1.4.7 builds and injects them.

Owns: which entry fields become which attributes (build.c's ct2msg) and how a
received message becomes an entry (parse.c's msg2ct, then the reply tuple
rebuilt from the NAT attributes as libnetfilter_conntrack's SETUP_REPLY plus
the kernel's NAT setup do).
Must not know: sockets, the kernel, FTFW.

Attributes the entry model has no field for (master tuple, NAT sequence
adjustment, DCCP state, TCP window scale, synproxy) stay in the
message: `unmodelled()` names them, so a caller never drops them unawares.
Node-local fields (counters, timestamps, id, use, secctx) are not sent,
as conntrackd does not send them.
"""

from __future__ import annotations

from typing import Any

from nfkit.conntrack.expect import Expectation
from nfkit.conntrack.model import (
    ICMP_PROTOS,
    IPPROTO_SCTP,
    PORT_PROTOS,
    Entry,
    Status,
    Tuple,
    proto_name,
)
from nfkit.errors import DecodeError, InputError
from nfkit.ha.spec import CT_TYPES, EXP_TYPES, NO_FLAGS, Flag, MsgType
from nfkit.ha.wire import StateMessage

# the attributes `to_entry` reads; the others of CT_ATTRS are `unmodelled`
MODELLED = frozenset({
    "ipv4", "ipv6", "l4proto", "port", "tcp_state", "status", "timeout", "mark", "snat_ipv4",
    "dnat_ipv4", "snat_ipv6", "dnat_ipv6", "spat_port", "dpat_port", "icmp_type", "icmp_code",
    "icmp_id", "helper", "labels", "zone", "sctp_state", "sctp_vtag_orig", "sctp_vtag_repl",
})


def unmodelled(msg: StateMessage) -> dict[str, Any]:
    """The attributes of ``msg`` that `to_entry` cannot put in an `Entry`."""
    return {k: v for k, v in msg.attrs.items() if k not in MODELLED}


def to_entry(msg: StateMessage) -> Entry:
    """The entry a conntrack message describes, reply tuple rebuilt from its NAT attributes.

    Raises DecodeError when the message lacks what every entry has (addresses, protocol).
    For ICMP, 1.4.7 sends NAT "ports" that are bytes of the ICMP type and code
    (libnetfilter_conntrack compares the union of ports and ICMP fields): they
    are ignored, as the kernel keeps the ICMP id through NAT here.
    """
    if msg.type not in CT_TYPES:
        raise DecodeError(f"{msg.type.name} message is not a conntrack entry")
    a = msg.attrs
    pair = a.get("ipv4") or a.get("ipv6")
    if pair is None:
        raise DecodeError(f"{msg.type.name} message without ipv4 or ipv6 addresses")
    if "l4proto" not in a:
        raise DecodeError(f"{msg.type.name} message without l4proto")
    proto = a["l4proto"]
    src, dst = pair
    sport, dport = a.get("port", (0, 0)) if proto in PORT_PROTOS else (0, 0)
    if proto in ICMP_PROTOS and "icmp_type" in a:
        orig = Tuple(src, dst, proto, 0, 0, a["icmp_type"], a.get("icmp_code", 0), a.get("icmp_id", 0))
    else:
        orig = Tuple(src, dst, proto, sport, dport)
    reply = orig.mirror()
    snat = a.get("snat_ipv4") or a.get("snat_ipv6")
    dnat = a.get("dnat_ipv4") or a.get("dnat_ipv6")
    if snat is not None:
        reply = reply._replace(dst=snat)
    if dnat is not None:
        reply = reply._replace(src=dnat)
    if proto in PORT_PROTOS:
        if "spat_port" in a:
            reply = reply._replace(dport=a["spat_port"])
        if "dpat_port" in a:
            reply = reply._replace(sport=a["dpat_port"])
    if (":" in reply.src) != (":" in src) or (":" in reply.dst) != (":" in src):
        raise DecodeError(f"{msg.type.name} message: NAT address of the other family")
    state, vtags = a.get("tcp_state"), None
    if proto == IPPROTO_SCTP and "sctp_state" in a:  # 1.4.7 sends the state with both tags
        state, vtags = a["sctp_state"], (a.get("sctp_vtag_orig", 0), a.get("sctp_vtag_repl", 0))
    return Entry(orig, reply, status=a.get("status", 0), state=state,
                 timeout=a.get("timeout"), mark=a.get("mark", 0), zone=a.get("zone"),
                 labels=a.get("labels") or None, helper=a.get("helper"), vtags=vtags)


def from_entry(entry: Entry, mtype: MsgType = MsgType.CT_NEW, *, seq: int = 0,
               flags: Flag = NO_FLAGS, extra: dict[str, Any] | None = None) -> StateMessage:
    """The message conntrackd 1.4.7 would send for ``entry``.

    ``extra`` adds attributes the entry model has no field for (see `unmodelled`).
    Raises InputError when the entry cannot be said in this protocol: a reply
    tuple that is not the original's mirror changed by source/destination NAT
    (with the status bits that say so), or a direction-specific zone.
    """
    if mtype not in CT_TYPES:
        raise InputError(f"{mtype.name} is not a conntrack message type")
    o, r = entry.orig, entry.reply
    what = f"{proto_name(o.proto)} {o.src} -> {o.dst}"
    if o.zone is not None or r.zone is not None:
        raise InputError(f"entry {what}: direction-specific zones have no conntrackd attribute")
    a: dict[str, Any] = {}
    a["ipv6" if ":" in o.src else "ipv4"] = (o.src, o.dst)
    a["status"] = entry.status
    a["l4proto"] = o.proto
    if o.proto in PORT_PROTOS:
        a["port"] = (o.sport, o.dport)
        if entry.state is not None and o.proto == 6:
            a["tcp_state"] = entry.state
        elif entry.state is not None and o.proto == IPPROTO_SCTP:
            # build.c sends the state with both verification tags (0 for a tag not known)
            a["sctp_state"] = entry.state
            a["sctp_vtag_orig"], a["sctp_vtag_repl"] = entry.vtags or (0, 0)
    elif o.proto in ICMP_PROTOS and o.icmp_type is not None:
        a["icmp_type"], a["icmp_code"], a["icmp_id"] = o.icmp_type, o.icmp_code or 0, o.icmp_id or 0
    if entry.state is not None and o.proto not in (6, IPPROTO_SCTP):
        raise InputError(f"entry {what}: a {proto_name(o.proto).upper()} state; only TCP and SCTP states "
                         "are carried here")
    if entry.timeout is not None:
        a["timeout"] = entry.timeout
    a["mark"] = entry.mark
    _nat(entry, a, what)
    if entry.helper is not None:
        a["helper"] = entry.helper
    if entry.labels:
        a["labels"] = entry.labels
    if entry.zone is not None:
        a["zone"] = entry.zone
    if extra:
        clash = set(extra) & set(a)
        if clash:
            raise InputError(f"entry {what}: extra attributes {sorted(clash)} are already set by the entry")
        a.update(extra)
    return StateMessage(mtype, a, seq, flags)


def _nat(entry: Entry, a: dict[str, Any], what: str) -> None:
    o, r = entry.orig, entry.reply
    six = ":" in o.src
    snat_done = bool(entry.status & Status.SRC_NAT_DONE)
    dnat_done = bool(entry.status & Status.DST_NAT_DONE)
    expressible = o.mirror()
    if r.dst != o.src and snat_done:
        a["snat_ipv6" if six else "snat_ipv4"] = r.dst
        expressible = expressible._replace(dst=r.dst)
    if r.src != o.dst and dnat_done:
        a["dnat_ipv6" if six else "dnat_ipv4"] = r.src
        expressible = expressible._replace(src=r.src)
    if o.proto in PORT_PROTOS:
        if r.dport != o.sport and snat_done:
            a["spat_port"] = r.dport
            expressible = expressible._replace(dport=r.dport)
        if r.sport != o.dport and dnat_done:
            a["dpat_port"] = r.sport
            expressible = expressible._replace(sport=r.sport)
    if expressible != r:
        raise InputError(f"entry {what}: reply tuple {r} is not its mirror changed by NAT "
                         f"(status {entry.status:#x}); conntrackd cannot carry it")


def to_expectation(msg: StateMessage) -> Expectation:
    """The expectation an EXP message describes (build.c's exp2msg read back); raises DecodeError."""
    if msg.type not in EXP_TYPES:
        raise DecodeError(f"{msg.type.name} message is not an expectation")
    a = msg.attrs
    tuples = []
    for part in ("master", "expect", "mask"):
        pair = a.get(f"{part}_ipv4") or a.get(f"{part}_ipv6")
        proto = a.get(f"{part}_l4proto")
        if pair is None or proto is None:
            raise DecodeError(f"{msg.type.name} message without its {part} tuple")
        sport, dport = a.get(f"{part}_port", (0, 0))
        tuples.append(Tuple(pair[0], pair[1], proto, sport, dport))
    x = Expectation(tuples[0], tuples[1], tuples[2], timeout=a.get("timeout"), helper=a.get("helper"), flags=a.get("flags", 0),
                    klass=a.get("class", 0), fn=a.get("fn"))
    if "nat_dir" in a:
        x.nat_dir = a["nat_dir"]
        addrs = a.get("nat_ipv4") or ("0.0.0.0", "0.0.0.0")
        sport, dport = a.get("nat_port", (0, 0))
        x.nat = Tuple(addrs[0], addrs[1], a.get("nat_l4proto", tuples[1].proto), sport, dport)
    return x


def from_expectation(x: Expectation, mtype: MsgType = MsgType.EXP_NEW) -> StateMessage:
    """The EXP message conntrackd 1.4.7 sends for ``x``; InputError for what it cannot say."""
    if mtype not in EXP_TYPES:
        raise InputError(f"{mtype.name} is not an expectation message type")
    if x.zone:
        raise InputError(f"expectation {x.tuple.src} -> {x.tuple.dst}: zones are not carried "
                         "(conntrackd sends no expectation of a zoned flow)")
    a: dict[str, Any] = {}
    for part, t in (("master", x.master), ("expect", x.tuple), ("mask", x.mask)):
        a[f"{part}_ipv6" if ":" in x.master.src else f"{part}_ipv4"] = (t.src, t.dst)
        a[f"{part}_l4proto"] = t.proto
        if t.proto in PORT_PROTOS:
            a[f"{part}_port"] = (t.sport, t.dport)
    if x.timeout is not None:
        a["timeout"] = x.timeout
    a["flags"] = x.flags
    a["class"] = x.klass
    if x.nat is not None and x.nat_dir is not None and ":" not in x.nat.src:
        # 1.4.7 sends the NAT tuple's addresses as zeros (captures/expect.hex): so does nfkit
        a["nat_ipv4"] = ("0.0.0.0", "0.0.0.0")
        a["nat_l4proto"] = x.nat.proto
        a["nat_port"] = (x.nat.sport, x.nat.dport)
        a["nat_dir"] = x.nat_dir
    if x.helper:
        a["helper"] = x.helper
    if x.fn:
        a["fn"] = x.fn
    return StateMessage(mtype, a)
