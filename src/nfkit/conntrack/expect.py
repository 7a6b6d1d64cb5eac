"""Conntrack expectations over ctnetlink (NFNL_SUBSYS_CTNETLINK_EXP): list, create, delete, events.

Owns: what an expectation is (the flow a helper such as ftp expects, its mask,
its master connection), its ctnetlink requests and replies, and its line in
`conntrack -L expect`'s format.  Attribute numbers are the spec's
(`nfkit.netlink.specs.ctnetlink.EXPECT`).
Must not know: the sync protocol (ha converts to and from `Expectation`).
"""

from __future__ import annotations

import builtins
import errno as _errno
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nfkit.conntrack.model import ICMP_PROTOS, PORT_PROTOS, Tuple
from nfkit.conntrack.table import ConntrackTable
from nfkit.conntrack.wire import addr_text, put_tuple
from nfkit.errors import DecodeError, EventsLost, NetlinkError
from nfkit.netlink.codec import Message, MessageWriter
from nfkit.netlink.consts import (
    NFNL_SUBSYS_CTNETLINK_EXP,
    NFNLGRP_CONNTRACK_EXP_DESTROY,
    NFNLGRP_CONNTRACK_EXP_NEW,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    nfnl_msg_type,
)
from nfkit.netlink.specs import ctnetlink as S

MSG_NEW = nfnl_msg_type(NFNL_SUBSYS_CTNETLINK_EXP, S.IPCTNL_MSG_EXP_NEW)
MSG_GET = nfnl_msg_type(NFNL_SUBSYS_CTNETLINK_EXP, S.IPCTNL_MSG_EXP_GET)
MSG_DELETE = nfnl_msg_type(NFNL_SUBSYS_CTNETLINK_EXP, S.IPCTNL_MSG_EXP_DELETE)
E = S.EXPECT
NAT_DIR = S.EXPECT_NAT.number("dir")
NAT_TUPLE = S.EXPECT_NAT.number("tuple")

# NF_CT_EXPECT_* flags, as conntrack -L expect names them
FLAG_NAMES = {1: "PERMANENT", 2: "INACTIVE", 4: "USERSPACE"}


@dataclass
class Expectation:
    """One expectation: the ``tuple`` expected (under ``mask``) of ``master``'s helper."""

    master: Tuple
    tuple: Tuple
    mask: Tuple
    timeout: int | None = None
    helper: str | None = None
    zone: int | None = None
    flags: int = 0
    klass: int = 0
    nat_dir: int | None = None
    nat: Tuple | None = None
    fn: str | None = None
    id: int | None = None

    @property
    def family(self) -> int:
        return self.tuple.family

    @property
    def key(self) -> builtins.tuple[Tuple, int]:
        return (self.tuple, self.zone or 0)


def _tuple(d: dict[Any, Any]) -> Tuple:
    ip, proto = d.get("ip", {}), d.get("proto", {})
    src = ip.get("v4_src", ip.get("v6_src"))
    dst = ip.get("v4_dst", ip.get("v6_dst"))
    if src is None or dst is None or "num" not in proto:
        raise DecodeError("expectation tuple without addresses or protocol")
    num = proto["num"]
    if num in ICMP_PROTOS:
        six = "icmpv6_type" in proto
        p = "icmpv6_" if six else "icmp_"
        return Tuple(addr_text(src), addr_text(dst), num, 0, 0, proto.get(p + "type"), proto.get(p + "code"),
                     proto.get(p + "id"))
    return Tuple(addr_text(src), addr_text(dst), num, proto.get("src_port", 0), proto.get("dst_port", 0))


def decode(msg: Message) -> Expectation:
    """The expectation in one ctnetlink expectation message; raises DecodeError."""
    d = E.decode(msg.attrs)
    try:
        x = Expectation(_tuple(d["master"]), _tuple(d["tuple"]), _tuple(d["mask"]))
    except KeyError as exc:
        raise DecodeError(f"expectation without its {exc.args[0]} tuple") from None
    x.timeout = d.get("timeout")
    x.helper = d.get("help_name") or None
    x.zone = d.get("zone") or None
    x.flags = d.get("flags", 0)
    x.klass = d.get("class", 0)
    x.fn = d.get("fn") or None
    x.id = d.get("id")
    nat = d.get("nat")
    if nat:
        x.nat_dir = nat.get("dir")
        if "tuple" in nat:
            try:
                x.nat = _tuple(nat["tuple"])
            except DecodeError:
                x.nat = None
    return x


def encode_create(w: MessageWriter, x: Expectation, flags: int = NLM_F_CREATE | NLM_F_EXCL) -> int:
    seq = w.begin(MSG_NEW, NLM_F_REQUEST | flags, family=x.family)
    put_tuple(w, E.number("master"), x.master)
    put_tuple(w, E.number("tuple"), x.tuple)
    put_tuple(w, E.number("mask"), x.mask)
    if x.timeout is not None:
        w.be32(E.number("timeout"), x.timeout)
    if x.zone:
        w.be16(E.number("zone"), x.zone)
    if x.flags:
        w.be32(E.number("flags"), x.flags)
    if x.klass:
        w.be32(E.number("class"), x.klass)
    if x.helper:
        w.string(E.number("help_name"), x.helper)
    if x.nat is not None and x.nat_dir is not None:
        with w.nest(E.number("nat")):
            w.be32(NAT_DIR, x.nat_dir)
            put_tuple(w, NAT_TUPLE, x.nat)
    if x.fn:
        w.string(E.number("fn"), x.fn)
    w.end()
    return seq


def encode_delete(w: MessageWriter, x: Expectation) -> int:
    seq = w.begin(MSG_DELETE, NLM_F_REQUEST, family=x.family)
    put_tuple(w, E.number("tuple"), x.tuple)
    if x.zone:
        w.be16(E.number("zone"), x.zone)
    if x.id is not None:
        w.be32(E.number("id"), x.id)
    w.end()
    return seq


def _what(x: Expectation) -> str:
    return f"expectation {x.tuple.src} -> {x.tuple.dst} dport {x.tuple.dport}"


class ExpectTable:
    """The expectations of ``table``'s network namespace."""

    def __init__(self, table: ConntrackTable) -> None:
        self.table = table
        self.sock = table.sock

    def entries(self, family: int = 0) -> Iterator[Expectation]:
        w = MessageWriter()
        w.begin(MSG_GET, NLM_F_REQUEST | NLM_F_DUMP, family=family)
        w.end()
        out = [decode(m) for m in self.sock.dump(w, what="expectation table")]
        return iter(out)

    def create(self, x: Expectation) -> None:
        """Raises NetlinkError (EEXIST; ENOENT without the master; EOPNOTSUPP when the master has no helper)."""
        w = MessageWriter()
        encode_create(w, x)
        self.sock.request(w, what=_what(x))

    def delete(self, x: Expectation) -> bool:
        """False when it was already gone."""
        w = MessageWriter()
        encode_delete(w, x)
        try:
            self.sock.request(w, what=_what(x))
        except NetlinkError as exc:
            if exc.errno == _errno.ENOENT:
                return False
            raise
        return True

    def flush(self) -> None:
        w = MessageWriter()
        w.begin(MSG_DELETE, NLM_F_REQUEST, family=0)
        w.end()
        self.sock.request(w, what="expectation flush")

    def events(self) -> ExpectEvents:
        return ExpectEvents(self.table)


class ExpectEvents:
    """Expectation events (new, destroy) of the namespace; `pending` for a selector loop."""

    def __init__(self, table: ConntrackTable) -> None:
        self.sock = table.open_socket(groups=(NFNLGRP_CONNTRACK_EXP_NEW, NFNLGRP_CONNTRACK_EXP_DESTROY))

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    @staticmethod
    def _event(msg: Message) -> tuple[str, Expectation, int] | None:
        if msg.type >> 8 != NFNL_SUBSYS_CTNETLINK_EXP:
            return None
        kind = "destroy" if msg.type & 0xFF == S.IPCTNL_MSG_EXP_DELETE else "new"
        return kind, decode(msg), msg.pid

    def pending(self) -> Iterator[tuple[str, Expectation, int]]:
        """(kind, expectation, port id of the request that caused it) for each waiting event.
        Raises EventsLost when the kernel dropped some."""
        for msg in self.sock.waiting():
            ev = self._event(msg)
            if ev is not None:
                yield ev

    def __iter__(self) -> Iterator[tuple[str, Expectation, int]]:
        try:
            for msg in self.sock.events():
                ev = self._event(msg)
                if ev is not None:
                    yield ev
        except EventsLost:
            raise


def _tuple_text(t: Tuple) -> str:
    if t.proto in PORT_PROTOS:
        return f"src={t.src} dst={t.dst} sport={t.sport} dport={t.dport}"
    if t.proto in ICMP_PROTOS:
        return f"src={t.src} dst={t.dst} type={t.icmp_type or 0} code={t.icmp_code or 0} id={t.icmp_id or 0}"
    return f"src={t.src} dst={t.dst}"


def expect_text(x: Expectation) -> str:
    """One line of `conntrack -L expect`."""
    m = x.mask
    parts = [f"{x.timeout if x.timeout is not None else 0} proto={x.tuple.proto} {_tuple_text(x.tuple)}"]
    mask = f"mask-src={m.src} mask-dst={m.dst}"
    if m.proto in PORT_PROTOS:
        mask += f" sport={m.sport} dport={m.dport}"
    parts.append(mask)
    master = _tuple_text(x.master).replace("src=", "master-src=", 1).replace("dst=", "master-dst=", 1)
    parts.append(master)
    if x.zone:
        parts.append(f"zone={x.zone}")
    names = [n for bit, n in FLAG_NAMES.items() if x.flags & bit]
    if names:
        parts.append(",".join(names))
    parts.append(f"class={x.klass}")
    if x.helper:
        parts.append(f"helper={x.helper}")
    return " ".join(parts)
