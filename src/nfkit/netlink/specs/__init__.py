"""Attribute tables per netlink family, as data.

Each module declares `AttrSet`s with explicit attribute numbers and a `UAPI`
list of (AttrSet, header, enum name, constant prefix) that the tests use to
check every number against the installed uapi headers.
"""

from __future__ import annotations

from typing import Any

from nfkit.netlink.codec import Attr, AttrSet, Kind


def attrset(name: str, entries: dict[int, tuple[Any, ...]]) -> AttrSet:
    """Build an AttrSet from {number: (name, kind[, nested AttrSet[, elem_type]])}."""
    return AttrSet(name, {num: Attr(*entry) for num, entry in entries.items()})


__all__ = ["attrset", "Attr", "AttrSet", "Kind"]
