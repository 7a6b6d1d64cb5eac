"""Attribute tables per netlink family, as data, in one format (`AttrSet`, as YNL's specs).

Each module declares `AttrSet`s with explicit attribute numbers (enums and
byte order are properties of the attribute), a `UAPI` list of (AttrSet,
header, enum name, constant prefix) that tests/netlink/test_uapi.py uses to
check every number against the installed uapi headers, and `MESSAGE_ATTRS`:
the table of each message type's attributes, which turns the kernel's
extended-ACK offsets into attribute paths.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nfkit.netlink.consts import (
    NETLINK_NETFILTER,
    NFNL_SUBSYS_CTNETLINK,
    NFNL_SUBSYS_CTNETLINK_EXP,
    NFNL_SUBSYS_NFTABLES,
    NFNL_SUBSYS_QUEUE,
)

if TYPE_CHECKING:
    from nfkit.netlink.codec import Attr, AttrSet, Kind

NFGEN_HEADER = 4  # struct nfgenmsg before the attributes of every nfnetlink message

# (protocol, nfnetlink subsystem) -> the module describing its messages, imported
# only when an error needs it (a conntrack command never loads nf_tables' tables)
_FAMILIES = {
    (NETLINK_NETFILTER, NFNL_SUBSYS_CTNETLINK): "nfkit.netlink.specs.ctnetlink",
    (NETLINK_NETFILTER, NFNL_SUBSYS_CTNETLINK_EXP): "nfkit.netlink.specs.ctnetlink",
    (NETLINK_NETFILTER, NFNL_SUBSYS_NFTABLES): "nfkit.netlink.specs.nftables",
    (NETLINK_NETFILTER, NFNL_SUBSYS_QUEUE): "nfkit.netlink.specs.nfqueue",
}


def attrset(name: str, entries: dict[int, Any]) -> AttrSet:
    """Build an AttrSet from {number: Attr or (name, kind[, nested AttrSet[, elem_type]][, {option: value}])}.

    A trailing dict gives `Attr`'s keyword fields (enum, selector, variants).
    """
    from nfkit.netlink.codec import Attr, AttrSet
    attrs: dict[int, Attr] = {}
    for num, entry in entries.items():
        if isinstance(entry, Attr):
            attrs[num] = entry
        elif entry and isinstance(entry[-1], dict):
            attrs[num] = Attr(*entry[:-1], **entry[-1])
        else:
            attrs[num] = Attr(*entry)
    return AttrSet(name, attrs)


def message_attrs(protocol: int, msg_type: int) -> tuple[AttrSet, int] | None:
    """(attribute table, family header size) of message ``msg_type`` of ``protocol``,
    or None when no spec describes it."""
    module = _FAMILIES.get((protocol, msg_type >> 8)) if protocol == NETLINK_NETFILTER else None
    if module is None:
        return None
    aset = importlib.import_module(module).MESSAGE_ATTRS.get(msg_type)
    return None if aset is None else (aset, NFGEN_HEADER)


def __getattr__(name: str) -> object:
    # the codec's names, re-exported, imported when first asked for (the TCP states of
    # conntrack_tcp, which the flow table shares, need no codec)
    if name not in ("Attr", "AttrSet", "Kind"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from nfkit.netlink import codec

    value = getattr(codec, name)
    globals()[name] = value
    return value


__all__ = ["attrset", "message_attrs", "Attr", "AttrSet", "Kind"]
