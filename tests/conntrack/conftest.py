"""Fixtures for conntrack tests: namespaces whose conntrack table we fill and read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nfkit.conntrack import ConntrackTable, Entry
from nfkit.lab import Namespace

from ct_helpers import sample_entries, track


@pytest.fixture
def ct_ns(netns: Namespace) -> Namespace:
    """A namespace that tracks connections (empty table)."""
    track(netns)
    return netns


@pytest.fixture
def ct_table(ct_ns: Namespace) -> Iterator[ConntrackTable]:
    """A ConntrackTable bound to ``ct_ns`` (usable outside ``ns.enter()``)."""
    with ct_ns.enter():
        table = ConntrackTable()
    with table:
        yield table


@pytest.fixture
def filled(ct_table: ConntrackTable) -> tuple[ConntrackTable, list[Entry]]:
    """``ct_table`` filled with `sample_entries` over ctnetlink."""
    entries = sample_entries()
    res = ct_table.create_many(entries)
    assert res.created == len(entries), res
    return ct_table, entries

