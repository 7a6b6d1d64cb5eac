"""The single-tuple flow table: symmetry, spread, directions, TCP states, timeouts, eviction."""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.flow import FlowTable, TcpState, Timeouts, pack_tuple, symmetric_hash
from nfkit.flow.baseline import TwoTupleTable, bytes_per_flow
from nfkit.flow.table import END_EVICTED, END_EXPIRED, END_REOPENED

SYN, SYNACK, ACK, FIN, RST = 0x02, 0x12, 0x10, 0x11, 0x04

addr4 = st.binary(min_size=4, max_size=4)
addr6 = st.binary(min_size=16, max_size=16)
port = st.integers(0, 65535)
proto = st.sampled_from([1, 6, 17, 58, 132])


@given(st.one_of(st.tuples(addr4, addr4), st.tuples(addr6, addr6)), port, port, proto)
def test_hash_is_symmetric(addrs: tuple[bytes, bytes], sport: int, dport: int, p: int) -> None:
    a, b = addrs
    assert symmetric_hash(p, a, sport, b, dport) == symmetric_hash(p, b, dport, a, sport)


@settings(max_examples=200)
@given(st.lists(st.tuples(addr4, addr4, port, port, st.sampled_from([6, 17])), min_size=1,
                max_size=40, unique=True))
def test_both_directions_find_the_one_stored_tuple(tuples: list) -> None:
    table = FlowTable(max_flows=1000)
    flows: dict[bytes, int] = {}
    for p, (a, b, sp, dp, proto_) in enumerate(tuples):
        fwd = pack_tuple(proto_, a, b, sp, dp)
        rev = pack_tuple(proto_, b, a, dp, sp)
        code = table.track(proto_, a, b, sp, dp, p * 0.01, 100)  # well within every timeout
        if rev in flows:  # this tuple is the reverse of one seen before
            assert not table.created and code == flows[rev] * 2 + 1
        elif fwd in flows:
            assert not table.created and code == flows[fwd] * 2
        else:
            assert table.created and code % 2 == 0
            flows[fwd] = code // 2
    for fwd, slot in flows.items():
        assert table.tuples[slot] == fwd  # one tuple, as the first packet had it
        t = table.tuple_of(slot)
        self_flow = (t.src, t.sport) == (t.dst, t.dport)  # both ends the same: no reverse
        assert table.lookup(t.proto, t.dst, t.src, t.dport, t.sport) == (slot, 0 if self_flow else 1)
        assert table.lookup(t.proto, t.src, t.dst, t.sport, t.dport) == (slot, 0)
    assert len(table) == len(flows)


def _chi_square(buckets: list[int], nbuckets: int) -> float:
    counts = [0] * nbuckets
    for b in buckets:
        counts[b] += 1
    expected = len(buckets) / nbuckets
    return sum((c - expected) ** 2 / expected for c in counts)


def test_bucket_spread_matches_a_good_one_way_hash() -> None:
    """Chi-square of bucket counts: symmetric hash vs SipHash of the whole tuple.

    The tuples are structured like real traffic (one /24 of clients, few
    servers, sequential ephemeral ports), where weak symmetric hashes (XOR of
    the fields) would show skew.
    """
    rnd = random.Random(7)
    nbuckets = 4096
    servers = [bytes((198, 51, 100, i)) for i in range(1, 5)]
    tuples = []
    for i in range(40000):
        client = bytes((192, 0, 2, rnd.randrange(1, 255)))
        tuples.append((6, client, rnd.choice(servers), 32768 + i % 28000, rnd.choice([80, 443])))
    mask = nbuckets - 1
    sym = [symmetric_hash(p, a, sp, b, dp) & mask for p, a, b, sp, dp in tuples]
    one_way = [hash(pack_tuple(p, a, b, sp, dp)) & mask for p, a, b, sp, dp in tuples]
    chi_sym, chi_ref = (_chi_square(x, nbuckets) for x in (sym, one_way))
    dof = nbuckets - 1
    bound = dof + 5 * (2 * dof) ** 0.5  # five standard deviations above uniform
    assert chi_ref < bound
    assert chi_sym < bound, (chi_sym, chi_ref)
    assert chi_sym < 1.1 * chi_ref + 100
    # and the measurement does see skew: addresses alone (no ports) crowd few buckets
    skewed = [symmetric_hash(p, a, 0, b, 0) & mask for p, a, b, sp, dp in tuples]
    assert _chi_square(skewed, nbuckets) > 3 * bound


def test_tcp_handshake_states_and_client_side() -> None:
    table = FlowTable()
    c, s = bytes([192, 0, 2, 2]), bytes([198, 51, 100, 2])
    slot = table.track(6, c, s, 40000, 80, 0.0, 60, SYN) // 2
    assert table.tcp_state(slot) is TcpState.SYN_SENT
    assert table.track(6, s, c, 80, 40000, 0.1, 60, SYNACK) == slot * 2 + 1
    assert table.tcp_state(slot) is TcpState.SYN_RECV
    table.track(6, c, s, 40000, 80, 0.2, 52, ACK)
    assert table.tcp_state(slot) is TcpState.ESTABLISHED
    assert table.client_direction(slot) == 0
    table.track(6, c, s, 40000, 80, 0.3, 52, FIN)
    assert table.tcp_state(slot) is TcpState.FIN_WAIT
    table.track(6, s, c, 80, 40000, 0.4, 52, FIN)
    assert table.tcp_state(slot) is TcpState.LAST_ACK
    table.track(6, c, s, 40000, 80, 0.5, 52, ACK)
    assert table.tcp_state(slot) is TcpState.TIME_WAIT
    assert table.packets[0][slot] == 4 and table.packets[1][slot] == 2
    assert table.octets[0][slot] == 60 + 52 * 3 and table.octets[1][slot] == 112


def test_simultaneous_open_goes_through_syn_sent2() -> None:
    """Both sides send a SYN (the kernel's SYN_SENT2), then SYN+ACKs, then an ACK."""
    c, s = bytes([192, 0, 2, 2]), bytes([198, 51, 100, 2])
    for first_synack_from_client in (True, False):
        table = FlowTable(timeouts=Timeouts(tcp_syn_sent=120, tcp_syn_recv=60))
        slot = table.track(6, c, s, 40000, 40001, 0.0, 60, SYN) // 2
        assert table.tcp_state(slot) is TcpState.SYN_SENT
        assert table.track(6, s, c, 40001, 40000, 0.1, 60, SYN) == slot * 2 + 1
        assert table.tcp_state(slot) is TcpState.SYN_SENT2
        # a retransmitted SYN from either side keeps it there, and so does a bare ACK
        table.track(6, c, s, 40000, 40001, 0.2, 60, SYN)
        table.track(6, s, c, 40001, 40000, 0.2, 60, SYN)
        table.track(6, c, s, 40000, 40001, 0.2, 52, ACK)
        assert table.tcp_state(slot) is TcpState.SYN_SENT2
        assert table.client_direction(slot) == 0
        # SYN_SENT2 times out like SYN_SENT (the kernel's 2 minutes), not like an unknown state
        assert table.expire(100.0) == 0 and len(table) == 1
        sides = [(c, s, 40000, 40001), (s, c, 40001, 40000)]
        if not first_synack_from_client:
            sides.reverse()
        table.track(6, *sides[0], 100.3, 60, SYNACK)
        assert table.tcp_state(slot) is TcpState.SYN_RECV
        table.track(6, *sides[1], 100.4, 60, SYNACK)
        assert table.tcp_state(slot) is TcpState.SYN_RECV
        table.track(6, c, s, 40000, 40001, 100.5, 52, ACK)
        assert table.tcp_state(slot) is TcpState.ESTABLISHED
        assert len(table) == 1 and table.packets[0][slot] + table.packets[1][slot] == 8


def test_syn_sent2_expires_after_the_syn_sent_timeout() -> None:
    table = FlowTable(timeouts=Timeouts(tcp_syn_sent=120, tcp_unknown=30))
    c, s = bytes([192, 0, 2, 2]), bytes([198, 51, 100, 2])
    table.track(6, c, s, 40000, 40001, 0.0, 60, SYN)
    table.track(6, s, c, 40001, 40000, 0.0, 60, SYN)
    assert table.tcp_state(0) is TcpState.SYN_SENT2
    assert table.expire(119.0) == 0 and table.expire(121.0) == 1


def test_first_packet_from_the_server_and_midstream_pickup() -> None:
    table = FlowTable()
    c, s = bytes([192, 0, 2, 2]), bytes([198, 51, 100, 2])
    slot = table.track(6, s, c, 443, 50000, 0.0, 60, SYNACK) // 2
    assert table.client_direction(slot) == 1
    # no handshake: the lower port is taken as the server's
    slot2 = table.track(6, s, c, 22, 50001, 0.0, 60, ACK) // 2
    assert table.client_direction(slot2) == 1
    slot3 = table.track(6, c, s, 50002, 22, 0.0, 60, ACK) // 2
    assert table.client_direction(slot3) == 0
    # UDP: the first sender is the client
    slot4 = table.track(17, s, c, 53, 50003, 0.0, 60) // 2
    assert table.client_direction(slot4) == 0


def test_new_syn_on_a_closed_tuple_starts_a_new_flow() -> None:
    ended: list[tuple[int, str]] = []
    table = FlowTable(on_end=lambda slot, why: ended.append((slot, why)))
    c, s = bytes([192, 0, 2, 2]), bytes([198, 51, 100, 2])
    table.track(6, c, s, 40000, 80, 0.0, 60, SYN)
    table.track(6, s, c, 80, 40000, 0.0, 60, RST)
    assert table.tcp_state(0) is TcpState.CLOSE
    code = table.track(6, c, s, 40000, 80, 1.0, 60, SYN)
    assert table.created and ended == [(0, END_REOPENED)]
    assert table.packets[0][code // 2] == 1 and table.packets[1][code // 2] == 0
    assert len(table) == 1


def test_set_state_moves_the_flow_to_its_new_timeout_class() -> None:
    """A state set from outside (bulk counting) ends the flow on the new state's timeout."""
    table = FlowTable(timeouts=Timeouts(tcp_established=3600, tcp_close=10))
    c, s = bytes([192, 0, 2, 2]), bytes([198, 51, 100, 2])
    a = table.track(6, c, s, 40000, 80, 0.0, 60, ACK) >> 1    # picked up established
    b = table.track(6, c, s, 40001, 80, 1.0, 60, ACK) >> 1
    table.set_state(a, (table.state[a] & ~0x0F) | TcpState.CLOSE)
    assert table.tcp_state(a) is TcpState.CLOSE and table.tcp_state(b) is TcpState.ESTABLISHED
    assert table.expire(11.0) == 1 and table.find(6, c, s, 40000, 80) == -1 and len(table) == 1
    table.set_state(b, table.state[b])  # same class: stays where it is
    assert table.expire(3600.5) == 0 and table.expire(3601.5) == 1
    with pytest.raises(KeyError):
        table.set_state(a, 0)


def test_timeouts_per_transport_and_state() -> None:
    ended: list[tuple[bytes, str]] = []
    table: FlowTable
    def on_end(slot: int, why: str) -> None:
        ended.append((table.tuples[slot], why))  # type: ignore[arg-type]
    table = FlowTable(timeouts=Timeouts(udp=30, udp_stream=120, tcp_syn_sent=120,
                                        tcp_established=3600, icmp=30), on_end=on_end)
    c, s = bytes([192, 0, 2, 2]), bytes([198, 51, 100, 2])
    table.track(17, c, s, 1000, 53, 0.0, 60)                   # unreplied UDP: 30 s
    table.track(17, c, s, 1001, 53, 0.0, 60)
    table.track(17, s, c, 53, 1001, 0.0, 60)                   # replied UDP: 120 s
    table.track(6, c, s, 40000, 80, 0.0, 60, SYN)               # SYN_SENT: 120 s
    table.track(6, c, s, 40001, 80, 0.0, 60, SYN)
    table.track(6, s, c, 80, 40001, 0.0, 60, SYNACK)
    table.track(6, c, s, 40001, 80, 0.0, 60, ACK)               # ESTABLISHED: 3600 s
    table.track(1, c, s, 7, 7, 0.0, 84)                         # ICMP echo: 30 s
    assert table.expire(29.0) == 0
    assert table.expire(31.0) == 2
    assert {t[-4:] for t, _ in ended} == {(1000).to_bytes(2, "big") + (53).to_bytes(2, "big"),
                                           (7).to_bytes(2, "big") * 2}
    assert table.expire(121.0) == 2 and len(table) == 1
    assert table.expire(3601.0) == 1 and len(table) == 0
    assert {why for _, why in ended} == {END_EXPIRED}
    # a packet refreshes the idle time
    table.track(17, c, s, 2000, 53, 4000.0, 60)
    table.track(17, c, s, 2000, 53, 4025.0, 60)
    assert table.expire(4040.0) == 0 and table.expire(4056.0) == 1


def test_track_runs_timeouts_by_itself() -> None:
    table = FlowTable(timeouts=Timeouts(udp=5), sweep_interval=1.0)
    c, s = bytes([192, 0, 2, 2]), bytes([198, 51, 100, 2])
    for i in range(50):
        table.track(17, c, s, 1000 + i, 53, float(i), 60)
    assert len(table) <= 7  # only the last few seconds' flows remain


def test_eviction_takes_the_longest_idle_flow() -> None:
    ended: list[int] = []
    table = FlowTable(max_flows=3, on_end=lambda slot, why: ended.append(slot) if why == END_EVICTED else None)
    c, s = bytes([192, 0, 2, 2]), bytes([198, 51, 100, 2])
    a = table.track(17, c, s, 1, 53, 1.0, 60) // 2
    b = table.track(6, c, s, 2, 80, 2.0, 60, SYN) // 2
    d = table.track(17, c, s, 3, 53, 3.0, 60) // 2
    table.track(17, s, c, 53, 1, 4.0, 60)  # a is now the most recently seen
    table.track(17, c, s, 4, 53, 5.0, 60)  # full: b (idle since 2.0) goes
    assert ended == [b] and len(table) == 3
    table.track(17, c, s, 5, 53, 6.0, 60)  # then d (3.0)
    assert ended == [b, d]
    assert table.lookup(17, c, s, 1, 53)[0] == a
    assert table.evicted == 2


def test_churn_keeps_every_flow_findable() -> None:
    """Many inserts and removals (backward-shift deletion) never lose a flow."""
    rnd = random.Random(3)
    table = FlowTable(max_flows=500, timeouts=Timeouts(udp=50, udp_stream=50))
    live: dict[tuple, int] = {}
    def on_end(slot: int, why: str) -> None:
        t = table.tuple_of(slot)
        del live[(t.src, t.sport)]
    table.on_end = on_end
    for i in range(20000):
        src = bytes((192, 0, 2, rnd.randrange(256)))
        sp = rnd.randrange(2000)
        code = table.track(17, src, bytes(4), sp, 53, i * 0.01, 60)
        if table.created:
            live[(src, sp)] = code // 2
        else:
            assert live[(src, sp)] == code // 2
    assert len(live) == len(table) <= 500
    for (src, sp), slot in live.items():
        assert table.lookup(17, bytes(4), src, 53, sp) == (slot, 1)


def test_ipv6_endpoints_print() -> None:
    table = FlowTable()
    a = ipaddress.ip_address("2001:db8::1").packed
    b = ipaddress.ip_address("2001:db8::2").packed
    slot = table.track(17, a, b, 5353, 53, 0.0, 90) // 2
    t = table.tuple_of(slot)
    assert (t.transport, t.endpoint(0), t.endpoint(1)) == ("udp", "[2001:db8::1]:5353",
                                                            "[2001:db8::2]:53")



def test_fields_of_is_tuple_of_as_plain_values() -> None:
    table = FlowTable()
    a6, b6 = (ipaddress.ip_address(f"2001:db8::{i}").packed for i in (1, 2))
    slots = [table.track(17, a6, b6, 5353, 53, 0.0, 90) // 2,
             table.track(6, bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]), 40000, 80, 0.0, 60, 0x02) // 2]
    for slot in slots:
        t = table.tuple_of(slot)
        assert table.fields_of(slot) == (t.proto, t.src, t.dst, t.sport, t.dport)
    table.flush()
    with pytest.raises(KeyError):
        table.fields_of(slots[0])

def test_memory_per_flow_is_under_half_of_two_tuples() -> None:
    """tracemalloc, 20,000 flows (the benchmark measures 1,000,000)."""
    ours = bytes_per_flow(lambda: FlowTable(max_flows=1 << 20), 20000)
    theirs = bytes_per_flow(TwoTupleTable, 20000)
    assert ours <= 0.5 * theirs, (ours, theirs)


def test_in_a_run_of_acks_only_the_first_each_way_can_change_the_state() -> None:
    """What nfgrep's bulk count of a flow's packets relies on (`classify._BulkState._count_flows`):
    from every state byte a flow can reach, a run of ACKs (any directions) leaves the state
    the run's first ACK each way leaves."""
    import itertools

    from nfkit.flow.tcpstate import TCP_NEXT, TCP_STRIDE, TcpEvent, open_state

    def after(s: int, event: int, d: int) -> int:
        return TCP_NEXT[s * TCP_STRIDE + event * 2 + d]

    firsts = {open_state(flags, struct.pack("!B4s4sHH", 6, bytes(4), bytes(4), sp, dp))
              for flags in range(256) for sp, dp in ((40000, 80), (80, 40000), (7, 7))}
    reach, todo = set(firsts), list(firsts)
    while todo:
        s = todo.pop()
        for event, d in itertools.product(range(len(TcpEvent)), (0, 1)):
            n = after(s, event, d)
            if n >= 0 and n not in reach:
                reach.add(n)
                todo.append(n)
    assert len(reach) > 20
    ack = int(TcpEvent.ACK)
    for s in reach:
        for n in range(1, 8):
            for run in itertools.product((0, 1), repeat=n):
                every, kept, seen = s, s, set()
                for d in run:
                    every = after(every, ack, d)
                    if d not in seen:
                        kept = after(kept, ack, d)
                        seen.add(d)
                assert every == kept, (hex(s), run)


def _flushed_one_by_one(table: FlowTable) -> list[int]:
    """The reference flush: the longest idle flow ended, again and again (what `flush` keeps)."""
    from nfkit.flow.table import END_FLUSHED

    order = []
    while table.count:
        s = table._oldest()
        order.append(s)
        table._remove(s, END_FLUSHED)
    return order


def _table_state(table: FlowTable) -> tuple:
    return (table.count, list(table._buckets), table._heads, table._tails, table._free,
            table.tuples, bytes(table.state))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 5), st.sampled_from([6, 17]),
                          st.sampled_from([0, SYN, SYNACK, ACK, FIN, RST]), st.integers(0, 40),
                          st.booleans()), max_size=120),
       st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6), st.integers(1, 64))
def test_flush_ends_flows_in_the_order_and_leaves_the_table_as_one_by_one(
        packets: list, states: list, max_flows: int) -> None:
    """Ties of idle time, lists out of time order (set_state), eviction, expiry: `flush`
    (with ``ended``, with no callback, with ``on_end``) ends flows in the order repeated
    `_oldest` does and leaves the same table (index, lists, free slots) for what comes next."""
    import copy

    table = FlowTable(max_flows=max_flows, timeouts=Timeouts(udp=8, tcp_syn_sent=12))
    c = bytes([192, 0, 2, 1])
    for when, host, p, flags, sp, back in packets:
        s = bytes([198, 51, 100, host])
        if back:
            table.track(p, s, c, 80, 40000 + sp, when * 0.5, 60, flags)
        else:
            table.track(p, c, s, 40000 + sp, 80, when * 0.5, 60, flags)
    live = list(table.slots())
    for pick, byte in states:  # states set from outside: a flow at its list's end, whatever its time
        if live:
            table.set_state(live[pick % len(live)], byte & 0xF0 | (byte % 10))
    reference = copy.deepcopy(table)
    expected = _flushed_one_by_one(reference)
    seen: list[list[int]] = []
    bulk = copy.deepcopy(table)
    counts = [(bulk.packets[0][s], bulk.tuples[s]) for s in expected]

    def ended(slots: list[int]) -> None:
        seen.append(list(slots))
        assert [(bulk.packets[0][s], bulk.tuples[s]) for s in slots] == counts  # still readable
    bulk.flush(ended)
    assert seen == [expected] and _table_state(bulk) == _table_state(reference)
    quiet = copy.deepcopy(table)
    quiet.flush()
    assert _table_state(quiet) == _table_state(reference)
    one_by_one: list[tuple[int, str]] = []
    table.on_end = lambda slot, why: one_by_one.append((slot, why))
    table.flush()
    assert one_by_one == [(s, "flushed") for s in expected] and _table_state(table) == _table_state(reference)
    # and the tables go on the same way
    for t in (bulk, quiet, table, reference):
        t.on_end = None
        for i in range(5):
            t.track(17, c, bytes([203, 0, 113, i]), 1000 + i, 53, 100.0 + i, 60)
    assert _table_state(bulk) == _table_state(reference) == _table_state(quiet) == _table_state(table)
