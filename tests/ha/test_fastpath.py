"""The compiled hot paths (nfkit.ha.fastpath) give what the entry path gives, byte for byte.

Sender: real ctnetlink events of several shapes (TCP and UDP, IPv4 and IPv6,
mark, zone, a destroy event, NAT) turned into message bodies by the layout's
plan and by `convert.from_entry` + `wire.encode_attrs`.  Receiver: every CT
message stock conntrackd 1.4.7 sent in the captures, turned into a ctnetlink
create by the shape's plan and by `convert.to_entry` + the injector's
encoder.  Where a plan declines (NAT, ICMP, helper), the entry path is used:
the tests check it declines rather than guesses.
"""

from __future__ import annotations

import struct

import pytest

from nfkit.conntrack.model import Entry, Status, Tuple
from nfkit.conntrack.table import ConntrackTable
from nfkit.conntrack.wire import addr_bytes, encode_delete
from nfkit.errors import InputError
from nfkit.ha import convert, fastpath, wire
from nfkit.ha.engine import Options, SyncEngine
from nfkit.ha.inject import NEW, Injector
from nfkit.ha.spec import MsgType
from nfkit.lab import Namespace
from nfkit.netlink.codec import MessageWriter
from tests.ha.test_wire import captured

_NLMSG = struct.Struct("=IHHII")


def _events(table: ConntrackTable, make: list[Entry], delete: list[Entry]) -> list[tuple[bytes, int]]:
    """The raw ctnetlink event messages (attribute stream, family) the kernel sends."""
    events = table.events(resync=False)
    table.create_many(make)
    for e in delete:
        table.delete(e)
    buf = bytearray(1 << 16)
    out = []
    while n := events.sock.recv_into(buf, block=False):
        off = 0
        while off + 20 <= n:
            length = _NLMSG.unpack_from(buf, off)[0]
            out.append((bytes(buf[off + 20:off + length]), buf[off + 16]))
            off += (length + 3) & ~3
    events.close()
    return out


def test_event_plans_make_the_body_and_key_the_entry_path_makes(netns: Namespace) -> None:
    tcp = Entry(Tuple("192.0.2.1", "198.51.100.1", 6, 1024, 80), timeout=600, state=3, mark=7,
                status=Status.SEEN_REPLY | Status.ASSURED)
    udp6 = Entry(Tuple("2001:db8::1", "2001:db8::2", 17, 5353, 53), timeout=30)
    zoned = Entry(Tuple("192.0.2.2", "198.51.100.1", 17, 1000, 53), timeout=30, zone=7)
    nat = Entry(Tuple("192.0.2.3", "198.51.100.1", 6, 1024, 80),
                Tuple("198.51.100.1", "203.0.113.9", 6, 80, 40000), timeout=600, state=3,
                status=Status.SEEN_REPLY | Status.SRC_NAT | Status.SRC_NAT_DONE)
    dnat = Entry(Tuple("192.0.2.4", "198.51.100.1", 6, 1024, 8080),
                 Tuple("198.51.100.2", "192.0.2.4", 6, 80, 1024), timeout=600, state=3,
                 status=Status.SEEN_REPLY | Status.DST_NAT | Status.DST_NAT_DONE)
    # a reply no NAT explains (no NAT status): conntrackd cannot say it, the entry path refuses it
    odd = Entry(Tuple("192.0.2.5", "198.51.100.1", 17, 1000, 53), Tuple("198.51.100.9", "192.0.2.5", 17, 53, 1000),
                timeout=30, status=Status.SEEN_REPLY)
    with netns.enter():
        table = ConntrackTable()
    try:
        raw = _events(table, [tcp, udp6, zoned, nat, dnat, odd], [udp6])
    finally:
        table.close()
    planned = declined = 0
    for attrs, family in raw:
        lay, values = table.decoder.layout(attrs, 0, len(attrs), family)
        e = lay.build(values)
        plan = fastpath.event_plan(lay.index, family)
        got = plan(values) if plan is not None else None
        if got is None:
            declined += 1
            with pytest.raises(InputError, match="not its mirror changed by NAT"):
                convert.from_entry(e)
            continue
        planned += 1
        key, body, proto, src, dst, state = got
        assert body == convert.from_entry(e).body
        assert key == fastpath.entry_key(e)
        assert (proto, src, dst, state) == (e.proto, addr_bytes(e.orig.src), addr_bytes(e.orig.dst), e.state)
    assert planned == len(raw) - 1 and declined == 1  # NAT included; the odd reply declined


def _planned_messages() -> tuple[list[tuple[wire.StateMessage, tuple, Entry]], int]:
    """Every CT message of stock conntrackd's captures and of nfkit's own bodies without NAT, with
    its create plan's values and its entry (convert.to_entry); and how many the plans declined."""
    planned, declined = [], 0
    # the captures are of a firewall doing NAT; entries without NAT are planned too
    plain = [Entry(Tuple("192.0.2.1", "198.51.100.1", 6, 1024, 80), timeout=600, state=s, mark=m,
                   status=Status.SEEN_REPLY | Status.ASSURED) for s in (3, 7) for m in (0, 9)]
    plain += [Entry(Tuple("2001:db8::1", "2001:db8::2", 17, 5353, 53), timeout=30),
              Entry(Tuple("192.0.2.7", "198.51.100.1", 132, 5, 6)),
              Entry(Tuple("192.0.2.8", "198.51.100.1", 6, 1024, 80), state=3, status=Status.EXPECTED)]
    ours = [wire.encode_datagram([convert.from_entry(e, t)]) for e in plain
            for t in (MsgType.CT_NEW, MsgType.CT_UPD, MsgType.CT_DEL)]
    for dgs in (captured("ftfw.hex"), captured("notrack.hex"), captured("extras.hex"), ours):
        for dg in dgs:
            wire.decode_datagram(dg)  # learn the shapes
            for msg in wire.decode_datagram(dg):
                if not isinstance(msg, wire.StateMessage) or msg.type > MsgType.CT_DEL:
                    continue
                assert msg.shape is not None or "helper" in msg.attrs or "labels" in msg.attrs
                plan = fastpath.create_plan(msg.shape) if msg.shape is not None else None
                got = plan(msg.shape.values(msg.body, 0)) if plan is not None and msg.shape else None
                if got is None:
                    declined += 1
                else:
                    planned.append((msg, got, convert.to_entry(msg)))
    assert len(planned) > 3 * len(plain) and declined  # the captures' NAT entries planned too; ICMP, helpers not
    return planned, declined


def _unsequenced(w: MessageWriter) -> bytes:
    return bytes(w.buffer[:8] + w.buffer[12:])


def test_create_plans_make_the_create_the_entry_path_makes(netns: Namespace) -> None:
    with netns.enter():
        table = ConntrackTable()
    injector = Injector(table)
    try:
        planned, _ = _planned_messages()
        for _msg, got, e in planned:
            assert got[0] == fastpath.entry_key(e)
            fast, slow = MessageWriter(), MessageWriter()
            injector._create_planned(fast, got[1:])
            injector._create(slow, injector._prepared(e))
            assert _unsequenced(fast) == _unsequenced(slow), e  # the same message but for its number
    finally:
        injector.close()
        table.close()


@pytest.mark.parametrize("commit_timeout", [0, 180])
def test_create_plans_make_the_update_and_delete_the_entry_path_makes(netns: Namespace, commit_timeout: int) -> None:
    """Received CT_UPD and CT_DEL bodies go to the kernel from the same plan: the update and
    delete messages are those the entry path (`Injector._update`, `encode_delete`) sends."""
    with netns.enter():
        table = ConntrackTable()
    injector = Injector(table, commit_timeout=commit_timeout)
    try:
        planned, _ = _planned_messages()
        for _msg, got, e in planned:
            fast, slow = MessageWriter(), MessageWriter()
            injector._update_planned(fast, got[1:])
            injector._update(slow, injector._prepared(convert.to_entry(_msg)))
            assert _unsequenced(fast) == _unsequenced(slow), e
            fast, slow = MessageWriter(), MessageWriter()
            injector._delete_planned(fast, got[1:])
            encode_delete(slow, injector._prepared(e))
            assert _unsequenced(fast) == _unsequenced(slow), e
    finally:
        injector.close()
        table.close()


def test_the_kernel_drops_the_events_of_the_engines_own_injections(netns: Namespace) -> None:
    """A peer's entries put into the kernel come back as events; the filter on the event
    socket drops them in the kernel (the engine never reads them), and only them."""
    with netns.enter():
        table, other = ConntrackTable(), ConntrackTable()
    engine = SyncEngine(table, Options())
    try:
        engine.subscribe()
        theirs = [Entry(Tuple("192.0.2.1", "198.51.100.1", 6, 1024 + i, 80), timeout=600, state=3,
                        status=Status.SEEN_REPLY | Status.ASSURED) for i in range(50)]
        mine = Entry(Tuple("192.0.2.2", "198.51.100.1", 17, 1000, 53), timeout=30)
        engine.injector.apply((NEW, e) for e in theirs)
        other.create(mine)
        engine.on_kernel_events()
        assert engine.injector.stats.created == 50 and len(list(table.entries())) == 51
        assert (engine.events_received, engine.events_own) == (1, 0)  # without the filter: 51 and 50
        assert list(engine.internal) == [fastpath.entry_key(mine)]
    finally:
        engine.close()
        table.close()
        other.close()


def test_sessions_pack_their_queue_as_transmit_then_datagrams_does() -> None:
    """The send path packs each session's queue straight into datagrams (no numbered copy
    of each message); the bytes are those of `transmit` + `wire.datagrams`, through HELLO,
    losses, NACKs, resends, ACKs, ALIVEs, replaced words and the sequence number wrapping."""
    import random

    from nfkit.ha.ftfw import FtfwSession
    from nfkit.ha.notrack import PlainSession
    from tests.ha.test_ftfw import entry_msg

    def pair() -> list[FtfwSession | PlainSession]:
        return [FtfwSession(seq=0xFFFFFFFF - 40, window=20), FtfwSession(seq=7, window=20),
                PlainSession(seq=0xFFFFFFF0)]

    packed, reference = pair(), pair()
    rng_packed, rng_reference = random.Random(5), random.Random(5)
    now = 0.0
    sent = 0
    for round_ in range(40):
        now += 0.4
        for sessions in (packed, reference):
            a, b, plain = sessions
            for i in range(round_ * 7, round_ * 7 + 30):  # overlapping keys: later words replace earlier
                a.enqueue(i % 100, entry_msg(i % 100, round_))
                plain.enqueue(i % 50, entry_msg(i % 50, round_))
            if round_ == 12:
                b.request_resync()
            for s in sessions:
                s.tick(now)
        for (src, dst, rng), (ref_src, ref_dst, ref_rng) in zip(
                ((packed[0], packed[1], rng_packed), (packed[1], packed[0], rng_packed), (packed[2], None, rng_packed)),
                ((reference[0], reference[1], rng_reference), (reference[1], reference[0], rng_reference),
                 (reference[2], None, rng_reference)), strict=True):
            got = src.transmit_datagrams(now, 600)
            want = list(wire.datagrams(ref_src.transmit(now), 600))
            assert got == want, round_
            sent += len(got)
            for dg in got:
                lost = rng.random() < 0.2
                assert lost == (ref_rng.random() < 0.2)
                if lost or dst is None or ref_dst is None:
                    continue
                for m, ref_m in zip(wire.decode_datagram(dg), wire.decode_datagram(dg), strict=True):
                    dst.receive(m)
                    ref_dst.receive(ref_m)
    assert sent > 100 and packed[0].stats.resent and packed[1].stats.nacks_received
    assert packed[0].stats == reference[0].stats and packed[1].stats == reference[1].stats


def test_a_selection_ignoring_single_addresses_is_a_set_lookup_that_agrees_with_accepts_raw() -> None:
    """The event path tests conntrackd's usual `Address Ignore` of its own addresses by a set of
    address bytes; it says what `Selection.accepts_raw` says, and only such selections have it."""
    import ipaddress
    import itertools

    from nfkit.ha.engine import Selection

    hosts = [ipaddress.ip_network(n) for n in ("203.0.113.1/32", "127.0.0.1/32", "2001:db8::1/128")]
    sel = Selection(networks=hosts, networks_accept=False)
    ignored = sel.hosts_ignored
    assert ignored == {n.network_address.packed for n in hosts}
    addresses = [ipaddress.ip_address(a).packed for a in
                 ("203.0.113.1", "203.0.113.2", "127.0.0.1", "192.0.2.1", "2001:db8::1", "2001:db8::2")]
    for src, dst in itertools.product(addresses, repeat=2):
        if len(src) == len(dst):
            assert (src not in ignored and dst not in ignored) == sel.accepts_raw(6, src, dst, 3)
    assert Selection(networks=[ipaddress.ip_network("203.0.113.0/24")], networks_accept=False).hosts_ignored is None
    assert Selection(networks=hosts, networks_accept=True).hosts_ignored is None
    assert Selection(protocols=frozenset({6}), protocols_accept=True, networks=hosts,
                     networks_accept=False).hosts_ignored is None
    assert Selection().hosts_ignored is None and Selection().everything
