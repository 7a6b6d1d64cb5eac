"""The conntrack table over ctnetlink, with entries created over ctnetlink (kernel tests)."""

from __future__ import annotations

import errno
import threading

import pytest
from ct_helpers import (  # noqa: F401  (fixtures are used by name)
    fixture_ct_ns,
    fixture_ct_table,
    fixture_filled,
    fixture_module_table,
    fixture_refilled,
    key,
    sample_entries,
    track,
    tracked_pair,
)

from nfkit.conntrack import ConntrackTable, Entry, Filter, Status, Tuple, filter_from_options
from nfkit.conntrack import filter as filter_mod
from nfkit.errors import NetlinkError
from nfkit.lab import Lab, Namespace

pytestmark = pytest.mark.kernel


def test_create_get_list_delete_round_trip(ct_table: ConntrackTable) -> None:
    made = [
        Entry(Tuple("192.0.2.1", "198.51.100.2", 17, 1234, 53), timeout=50, mark=3),
        Entry(Tuple("2001:db8:1::2", "2001:db8:2::2", 6, 4321, 443), timeout=60, state=3,
              status=Status.SEEN_REPLY | Status.ASSURED),
        Entry(Tuple("192.0.2.1", "198.51.100.2", 1, 0, 0, 8, 0, 99), timeout=30),
        Entry(Tuple("2001:db8:1::2", "2001:db8:2::2", 58, 0, 0, 128, 0, 98), timeout=30),
        Entry(Tuple("192.0.2.5", "198.51.100.2", 17, 1, 2), Tuple("198.51.100.2", "203.0.113.4", 17, 2, 9),
              timeout=70),
    ]
    for e in made:
        ct_table.create(e)
    listed = {key(e): e for e in ct_table.entries()}
    assert set(listed) == {key(e) for e in made}
    for e in made:
        got = ct_table.get(e.orig)
        assert key(got) == key(e)
        assert got.mark == e.mark and got.state == e.state and got.nat == e.nat
        assert got.status & ~int(Status.CONFIRMED) == e.status
        assert e.timeout - 5 <= got.timeout <= e.timeout
        assert got.id == listed[key(e)].id
    with pytest.raises(NetlinkError) as exc:
        ct_table.create(made[0])
    assert exc.value.errno == errno.EEXIST
    assert ct_table.delete(listed[key(made[1])])
    assert not ct_table.delete(listed[key(made[1])])  # gone: ENOENT is not an error
    with pytest.raises(NetlinkError) as exc:
        ct_table.get(made[1].orig)
    assert exc.value.errno == errno.ENOENT
    assert ct_table.count() == len(made) - 1
    ct_table.flush()
    assert ct_table.count() == 0 and list(ct_table.entries()) == []


def test_update_mark_timeout_labels(filled: tuple[ConntrackTable, list[Entry]]) -> None:
    t, made = filled
    e = next(x for x in t.entries() if x.orig.sport == 1003 and x.zone is None)
    t.update(e, mark=0xABC, timeout=777)
    got = t.get(e.orig)
    assert got.mark == 0xABC and 770 <= got.timeout <= 777
    t.update(e, mark=0x0F0, mark_mask=0x0F0)  # change only the masked bits
    assert t.get(e.orig).mark == 0xAFC
    t.update(e, labels=1 << 100, labels_mask=1 << 100)
    assert t.get(e.orig).labels == 1 << 100
    res = t.update_matching(filter_from_options(proto="tcp", state="TIME_WAIT"), mark=42)
    assert res.deleted == sum(1 for x in made if x.proto == 6 and x.state == 7)
    assert all(x.mark == 42 for x in t.entries(filter_from_options(proto="tcp", state="TIME_WAIT")))


def test_status_cannot_be_cleared_and_udp_status_zero_is_created_confirmed(ct_table: ConntrackTable) -> None:
    e = Entry(Tuple("192.0.2.1", "198.51.100.2", 17, 9, 9), timeout=30, status=0)
    ct_table.create(e)  # the library adds IPS_CONFIRMED (status 0 alone is EBUSY)
    got = ct_table.get(e.orig)
    assert got.status & Status.CONFIRMED
    ct_table.update(got, status=got.status | Status.SEEN_REPLY)
    got = ct_table.get(e.orig)
    assert got.status & Status.SEEN_REPLY
    with pytest.raises(NetlinkError) as exc:
        ct_table.update(got, status=int(Status.CONFIRMED))  # SEEN_REPLY can only be set
    assert exc.value.errno == errno.EBUSY


FILTERS = [
    {"proto": "udp"}, {"proto": "tcp"}, {"proto": "icmp"}, {"family": "ipv6"}, {"family": "ipv4"},
    {"proto": "udp", "status": "UNREPLIED"}, {"status": "ASSURED"}, {"status": "SEEN_REPLY,ASSURED"},
    {"src": "192.0.2.1"}, {"dst": "198.51.100.3"}, {"src": "192.0.2.0/30"},
    {"src": "2001:db8:1::2"}, {"dst": "2001:db8:2::3"}, {"src": "2001:db8:1::/64", "proto": "tcp"},
    {"reply_dst": "203.0.113.1"}, {"reply_src": "198.51.100.2", "proto": "udp"},
    {"proto": "udp", "sport": "1003"}, {"proto": "tcp", "dport": "80"},
    {"proto": "udp", "reply_dport": "61000"},
    {"mark": "4"}, {"mark": "1/1"}, {"mark": "0"}, {"zone": "3"}, {"zone": "0", "proto": "tcp"},
    {"state": "TIME_WAIT"}, {"state": "ESTABLISHED,CLOSE", "src": "192.0.2.2"},
    {"timeout_below": "75"}, {"label": "5"}, {"label": "5,9"},
    {"proto": "udp", "status": "UNREPLIED", "mark": "2", "family": "ipv4", "dst": "198.51.100.2"},
    {"family": "ipv6", "proto": "tcp", "state": "ESTABLISHED", "timeout_below": "300"},
]


def _ids(fs: list[dict[str, str]]) -> list[str]:
    return [" ".join(f"{k}={v}" for k, v in f.items()) for f in fs]


@pytest.mark.parametrize("options", FILTERS, ids=_ids(FILTERS))
def test_filter_same_result_in_kernel_and_in_python(refilled: tuple[ConntrackTable, list[Entry]],
                                                    options: dict[str, str]) -> None:
    t, _made = refilled
    flt = filter_from_options(**options)
    everything = list(t.entries())
    expected = {key(e) for e in everything if flt.matches(e)}
    by_kernel = {key(e) for e in t.entries(flt)}
    by_python = {key(e) for e in t.entries(flt, kernel=False)}
    assert by_kernel == by_python == expected
    assert expected, "every filter in the list selects something in the sample table"
    assert t.count(flt) == len(expected)
    # the lines fast path selects the same
    assert sum(len(b) for b in t.lines(flt)) == len(expected)


KERNEL_DELETE_FILTERS = [f for f in FILTERS if filter_from_options(**f).kernel_only]


@pytest.mark.parametrize("options", FILTERS, ids=_ids(FILTERS))
def test_selective_delete_removes_exactly_the_selection(refilled: tuple[ConntrackTable, list[Entry]],
                                                         options: dict[str, str]) -> None:
    t, _made = refilled
    flt = filter_from_options(**options)
    before = list(t.entries())
    doomed = {key(e) for e in before if flt.matches(e)}
    res = t.delete_matching(flt)
    assert res.method == ("kernel" if flt.kernel_only else "dump")
    assert res.deleted == len(doomed) and not res.failed
    assert {key(e) for e in t.entries()} == {key(e) for e in before} - doomed


def test_kernel_flush_and_dump_delete_agree(lab: Lab) -> None:
    with tracked_pair(lab) as (_, _, ta, tb):
        for options in KERNEL_DELETE_FILTERS[:8]:
            ta.flush()
            tb.flush()
            ta.create_many(sample_entries())
            tb.create_many(sample_entries())
            flt = filter_from_options(**options)
            ra = ta.delete_matching(flt)
            rb = tb.delete_matching(flt, kernel=False)
            assert (ra.method, rb.method) == ("kernel", "dump")
            assert ra.deleted == rb.deleted
            assert {key(e) for e in ta.entries()} == {key(e) for e in tb.entries()}


def test_kernel_ipv6_address_filter_is_still_inverted(filled: tuple[ConntrackTable, list[Entry]]) -> None:
    """Why KERNEL_IPV6_ADDRESS_FILTER is False: this kernel's CTA_FILTER matches IPv6
    addresses the wrong way round.  If this fails, the kernel is fixed: flip the switch."""
    t, _ = filled
    flt = filter_from_options(src="2001:db8:1::2", proto="udp")
    assert not filter_mod.KERNEL_IPV6_ADDRESS_FILTER
    filter_mod.KERNEL_IPV6_ADDRESS_FILTER = True
    try:
        pushed = {key(e) for e in t.entries(flt)}
    finally:
        filter_mod.KERNEL_IPV6_ADDRESS_FILTER = False
    right = {key(e) for e in t.entries(flt)}
    assert right and pushed != right


def test_vanished_entries_are_counted_not_fatal(filled: tuple[ConntrackTable, list[Entry]]) -> None:
    t, _made = filled
    snapshot = list(t.entries())
    udp = [e for e in snapshot if e.proto == 17]
    t.delete_matching(filter_from_options(proto="udp"))  # they vanish between dump and delete
    res = t.delete_many(snapshot)
    assert res.vanished == len(udp)
    assert res.deleted == len(snapshot) - len(udp) and not res.failed
    assert t.count() == 0


def test_vanishing_during_a_selective_delete(ct_ns: Namespace,
                                             filled: tuple[ConntrackTable, list[Entry]]) -> None:
    """A concurrent flush races a dump-path delete: each dumped entry is deleted or counted gone."""
    t, _made = filled
    t.create_many(Entry(Tuple("192.0.2.9", "198.51.100.2", 17, p, 53), timeout=300)
                  for p in range(1, 5001))
    flt = filter_from_options(proto="udp", timeout_below="100000")  # Python residue: dump path
    started = threading.Event()

    def racer() -> None:
        with ct_ns.enter():
            other = ConntrackTable()
        with other:
            started.set()
            other.delete_matching(Filter(proto=17))

    thread = threading.Thread(target=racer)
    thread.start()
    started.wait()
    res = t.delete_matching(flt)
    thread.join()
    assert res.method == "dump" and not res.failed
    assert res.deleted + res.vanished == res.matched
    assert t.count(Filter(proto=17)) == 0


def test_create_many_counts_existing(filled: tuple[ConntrackTable, list[Entry]]) -> None:
    t, made = filled
    extra = [Entry(Tuple("192.0.2.9", "198.51.100.2", 17, p, 53), timeout=30) for p in range(100)]
    res = t.create_many(made[:5] + extra)
    assert (res.created, res.exists, res.failed) == (100, 5, {})
    assert t.count() == len(made) + 100


def test_stats(filled: tuple[ConntrackTable, list[Entry]]) -> None:
    t, made = filled
    g = t.stats()
    assert g["entries"] == len(made) and g["max_entries"] > 0
    cpus = t.stats_cpu()
    assert cpus and all("cpu" in c and "insert" in c for c in cpus)
    assert sum(c["insert"] for c in cpus) >= len(made)


def test_events_for_created_and_deleted_entries(ct_table: ConntrackTable) -> None:
    e = Entry(Tuple("192.0.2.1", "198.51.100.2", 17, 777, 53), timeout=30)
    with ct_table.events(timeout=1.0) as stream:
        ct_table.create(e)
        got = ct_table.get(e.orig)
        ct_table.update(got, mark=5)
        ct_table.delete(got)
        seen = [(ev.kind, ev.entry.orig) for ev in stream if ev.entry is not None]
    assert seen == [("new", e.orig), ("update", e.orig), ("destroy", e.orig)]


def test_events_lost_then_resynchronised(ct_table: ConntrackTable) -> None:
    flt = Filter(proto=17)
    stream = ct_table.events(flt, timeout=0.5, rcvbuf=4096)
    with stream:
        ct_table.create_many(Entry(Tuple("192.0.2.1", "198.51.100.2", 17, p, 53), timeout=60)
                             for p in range(1, 2001))
        kinds: list[str] = []
        synced: set[tuple[object, ...]] = set()
        for ev in stream:
            kinds.append(ev.kind)
            if ev.kind == "sync":
                synced.add(key(ev.entry))
            if ev.kind == "synced":
                break
    assert "lost" in kinds and kinds[-1] == "synced"
    assert synced == {key(e) for e in ct_table.entries(flt)}
    assert len(synced) == 2000


def test_stopping_a_listing_early_leaves_the_socket_usable(ct_table: ConntrackTable) -> None:
    ct_table.create_many(Entry(Tuple("192.0.2.1", "198.51.100.2", 17, p, 53), timeout=60)
                         for p in range(1, 3001))
    for _ in ct_table.entries():
        break  # the rest of the dump is drained, not left to make the next dump EBUSY
    assert ct_table.count(Filter(proto=17)) == 3000
    batches = ct_table.lines()
    next(batches)
    batches.close()
    assert sum(len(b) for b in ct_table.lines(Filter(proto=17))) == 3000
