"""The nf_tables attribute tables checked against the installed uapi header."""

from __future__ import annotations

import pytest

from nfkit.netlink.specs.nftables import HEADERS, MSG_TYPES, TABLES, attrset, num
from nfkit.netlink.uapi import enum_values

HEADER = "linux/netfilter/nf_tables.h"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_attribute_numbers_match_header(table: str) -> None:
    enum, prefix, attrs = TABLES[table]
    values = enum_values(HEADERS.get(table, HEADER), enum)
    for i, (name, _kind, _nested) in enumerate(attrs, start=1):
        cname = prefix + name.upper()
        assert values.get(cname) == i, f"{cname} is {values.get(cname)}, table says {i}"
        assert num(table, name) == i


def test_message_types_match_header() -> None:
    values = enum_values(HEADER, "nf_tables_msg_types")
    for i, name in enumerate(MSG_TYPES):
        assert values["NFT_MSG_" + name.upper()] == i


def test_attrset_builds_for_the_core_codec() -> None:
    aset = attrset("rule")
    assert aset.number("expressions") == 4
