"""Helpers and fixtures for the conntrack tests (imported by the test modules; no conftest.py here,
so the top-level conftest stays the only module named `conftest`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from nfkit.conntrack import ConntrackTable, Entry, Status, Tuple
from nfkit.lab import Lab, Namespace

# A ruleset that makes the namespace track connections and use labels (so entries
# created over ctnetlink get the labels extension).
TRACK_RULESET = ("add table inet nkct; "
                 "add chain inet nkct pre { type filter hook prerouting priority 0; }; "
                 "add rule inet nkct pre ct state new counter; "
                 "add rule inet nkct pre ct label set 127")

A = Status.ASSURED
R = Status.SEEN_REPLY


def track(ns: Namespace) -> None:
    """Make ``ns`` track connections (and accept labels)."""
    ns.run(["nft", TRACK_RULESET])


@contextmanager
def tracked_pair(lab: Lab) -> Iterator[tuple[Namespace, Namespace, ConntrackTable, ConntrackTable]]:
    """Two namespaces of ``lab`` ("a", "b") that track connections, each with an open table."""
    a, b = lab.add("a"), lab.add("b")
    track(a)
    track(b)
    with a.enter():
        ta = ConntrackTable()
    with b.enter():
        tb = ConntrackTable()
    with ta, tb:
        yield a, b, ta, tb


def sample_entries() -> list[Entry]:
    """A varied table: both families, TCP states, UDP, ICMP, marks, zones, NAT, timeouts."""
    out: list[Entry] = []
    for i in range(12):
        out.append(Entry(Tuple(f"192.0.2.{1 + i % 4}", "198.51.100.2", 17, 1000 + i, 53),
                         timeout=30 + i * 10, mark=i % 3, status=R if i % 2 else 0))
    states = [1, 2, 3, 3, 4, 5, 7, 7, 8]
    for i, st in enumerate(states):
        out.append(Entry(Tuple(f"192.0.2.{1 + i % 3}", f"198.51.100.{2 + i % 2}", 6, 2000 + i, 80),
                         timeout=60 * (i + 1), state=st, mark=4 if i % 2 else 5,
                         status=(R | A) if st >= 3 else 0))
    for i in range(6):
        out.append(Entry(Tuple("2001:db8:1::2", f"2001:db8:2::{2 + i % 2}", 17, 3000 + i, 53),
                         timeout=100 + i, status=R if i % 3 == 0 else 0, mark=i % 2))
        out.append(Entry(Tuple(f"2001:db8:1::{2 + i % 2}", "2001:db8:2::2", 6, 4000 + i, 443),
                         timeout=200 + 40 * i, state=3 if i % 2 else 7, status=R | A))
    out.append(Entry(Tuple("192.0.2.7", "198.51.100.9", 1, 0, 0, 8, 0, 77), timeout=30))
    out.append(Entry(Tuple("2001:db8:1::7", "2001:db8:2::9", 58, 0, 0, 128, 0, 78), timeout=30))
    # NAT: the reply is not the mirror
    out.append(Entry(Tuple("192.0.2.8", "198.51.100.2", 17, 5000, 53),
                     Tuple("198.51.100.2", "203.0.113.1", 17, 53, 61000), timeout=90, status=R))
    out.append(Entry(Tuple("192.0.2.8", "198.51.100.2", 6, 5001, 80),
                     Tuple("198.51.100.2", "203.0.113.1", 6, 80, 61001), timeout=90, state=3,
                     status=R | A))
    # zones
    out.append(Entry(Tuple("192.0.2.1", "198.51.100.2", 17, 1000, 53), timeout=40, zone=3))
    out.append(Entry(Tuple("192.0.2.2", "198.51.100.2", 6, 2000, 80), timeout=40, zone=3, state=3,
                     status=R))
    # labels
    out.append(Entry(Tuple("192.0.2.3", "198.51.100.4", 17, 6000, 53), timeout=40, labels=1 << 5))
    out.append(Entry(Tuple("192.0.2.3", "198.51.100.4", 17, 6001, 53), timeout=40,
                     labels=(1 << 5) | (1 << 9)))
    return out


def key(e: Entry) -> tuple[object, ...]:
    """What identifies an entry across dumps (timeouts tick, ids differ between tables)."""
    return (e.orig, e.reply, e.zone or 0)


def nat(fw: Namespace) -> None:
    """Source NAT (masquerade) of everything leaving the firewall towards the server."""
    fw.run(["nft", ("add table ip nknat; "
                   "add chain ip nknat post { type nat hook postrouting priority 100; }; "
                   "add rule ip nknat post oifname eth1 masquerade")])


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run `nfkit ARGS` in this process; (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from nfkit.cli.main import main

    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def norm_line(line: str) -> str:
    """A conntrack -L line without its remaining-timeout field (it ticks between two listings)."""
    parts = line.split(" ")
    words = [p for p in parts if p]
    if len(words) > 2 and words[2].isdigit():
        words[2] = "T"
    return " ".join(words)


def conntrack_lines(ns: Namespace, args: str = "") -> list[str]:
    out = ns.run(f"conntrack -L {args}").stdout
    return sorted(norm_line(x) for x in out.splitlines() if x.strip())


@pytest.fixture(name="ct_ns")
def fixture_ct_ns(netns: Namespace) -> Namespace:
    """A namespace that tracks connections (empty table)."""
    track(netns)
    return netns


@pytest.fixture(name="ct_table")
def fixture_ct_table(ct_ns: Namespace) -> Iterator[ConntrackTable]:
    """A ConntrackTable bound to ``ct_ns`` (usable outside ``ns.enter()``)."""
    with ct_ns.enter():
        table = ConntrackTable()
    with table:
        yield table


@pytest.fixture(name="filled")
def fixture_filled(ct_table: ConntrackTable) -> tuple[ConntrackTable, list[Entry]]:
    """``ct_table`` filled with `sample_entries` over ctnetlink."""
    entries = sample_entries()
    res = ct_table.create_many(entries)
    assert res.created == len(entries), res
    return ct_table, entries



@contextmanager
def tracking_namespace(prefix: str) -> Iterator[tuple[Namespace, ConntrackTable]]:
    """A tracking namespace of its own lab (``prefix``) with an open table, for module fixtures."""
    from tests.conftest import require_kernel

    require_kernel()  # skips without root, fails under CI=true
    with Lab(prefix) as lab:
        ns = lab.add("m")
        track(ns)
        with ns.enter():
            table = ConntrackTable()
        with table:
            yield ns, table


@pytest.fixture(name="module_table", scope="module")
def fixture_module_table() -> Iterator[ConntrackTable]:
    """One tracking namespace for a whole module (tests refill it as they need)."""
    with tracking_namespace("nkm") as (_ns, table):
        yield table


@pytest.fixture(name="refilled")
def fixture_refilled(module_table: ConntrackTable) -> tuple[ConntrackTable, list[Entry]]:
    """``module_table`` flushed and filled with `sample_entries`."""
    module_table.flush()
    entries = sample_entries()
    res = module_table.create_many(entries)
    assert res.created == len(entries), res
    return module_table, entries
