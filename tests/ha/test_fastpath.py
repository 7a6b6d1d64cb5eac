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

import functools
import ipaddress
import struct
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfkit.conntrack.model import Entry, Status, Tuple
from nfkit.conntrack.table import ConntrackTable
from nfkit.conntrack.wire import addr_bytes, encode_delete
from nfkit.errors import InputError
from nfkit.ha import convert, fastpath, wire
from nfkit.ha.engine import Options, Peer, Selection, SyncEngine
from nfkit.ha.ftfw import FtfwSession
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
            injector._create_planned(fast, got)
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
            injector._update_planned(fast, got)
            injector._update(slow, injector._prepared(convert.to_entry(_msg)))
            assert _unsequenced(fast) == _unsequenced(slow), e
            fast, slow = MessageWriter(), MessageWriter()
            injector._delete_planned(fast, got)
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


def test_in_a_burst_kernel_events_are_read_at_most_every_event_batch_s(netns: Namespace) -> None:
    """The first read after a quiet spell is at once; a read that follows another within
    `Options.event_batch_s` waits for the rest of it (events gather: fewer, fuller reads);
    nothing is lost or reordered by the wait."""
    with netns.enter():
        table, other = ConntrackTable(), ConntrackTable()
    engine = SyncEngine(table, Options(event_batch_s=0.05))
    try:
        engine.subscribe()
        flows = [Entry(Tuple("192.0.2.3", "198.51.100.1", 17, 2000 + i, 53), timeout=30) for i in range(4)]
        time.sleep(0.06)
        took = []
        for e in flows:
            other.create(e)
            started = time.monotonic()
            engine.on_kernel_events()
            took.append(time.monotonic() - started)
        assert took[0] < 0.04 and all(0.04 <= t < 0.5 for t in took[1:]), took
        time.sleep(0.06)  # quiet again: at once
        other.create(Entry(Tuple("192.0.2.3", "198.51.100.1", 17, 3000, 53), timeout=30))
        started = time.monotonic()
        engine.on_kernel_events()
        assert time.monotonic() - started < 0.04
        assert engine.events_received == 5
        assert list(engine.internal) == [fastpath.entry_key(e) for e in flows] + [
            fastpath.entry_key(Entry(Tuple("192.0.2.3", "198.51.100.1", 17, 3000, 53)))]
    finally:
        engine.close()
        table.close()
        other.close()


def test_sessions_pack_their_queue_as_transmit_then_datagrams_does() -> None:
    """The send path packs each session's queue straight into datagrams (no numbered copy
    of each message); the bytes are those of `transmit` + `wire.datagrams`, through HELLO,
    losses, NACKs, resends, ACKs, ALIVEs, replaced words and the sequence number wrapping;
    the event path's words (`enqueue_words`, no message object) give the bytes their
    messages give, resent, acknowledged and evicted from a full resend queue alike."""
    import random

    from nfkit.ha.ftfw import FtfwSession
    from nfkit.ha.notrack import PlainSession
    from tests.ha.test_ftfw import entry_msg

    def pair() -> list[FtfwSession | PlainSession]:
        return [FtfwSession(seq=0xFFFFFFFF - 40, window=20, resend_limit=60), FtfwSession(seq=7, window=20),
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
                if sessions is packed and i % 3:  # the event path's words, beside messages
                    m = entry_msg(i % 100, round_)
                    a.enqueue_words({i % 100: (i % 100, int(m.type), m.body)})
                    m = entry_msg(i % 50, round_)
                    plain.enqueue_words({i % 50: (i % 50, int(m.type), m.body)})
                else:
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


def _varied_entry(i: int, six: bool, proto: int, nat: str, mark: int, zone: int | None, state: int,
                  timeout: int) -> Entry:
    """Entry ``i`` (its own source port or ICMP id) of one of the shapes the event path meets."""
    src, dst, out = (("2001:db8::1", "2001:db8::2", "2001:db8::9") if six
                     else ("192.0.2.1", "198.51.100.1", "203.0.113.9"))
    status = Status.SEEN_REPLY | Status.ASSURED
    if proto == 1:
        proto = 58 if six else 1
        return Entry(Tuple(src, dst, proto, 0, 0, 128 if six else 8, 0, i), timeout=timeout, mark=mark, zone=zone)
    orig = Tuple(src, dst, proto, 1024 + i, 80)
    reply = None
    if nat == "snat":  # the reply comes back to the outside address and another port
        reply, status = Tuple(dst, out, proto, 80, 40000 + i), status | Status.SRC_NAT | Status.SRC_NAT_DONE
    elif nat == "dnat":  # the reply comes from another server and port
        reply, status = Tuple(out, src, proto, 8080, 1024 + i), status | Status.DST_NAT | Status.DST_NAT_DONE
    elif nat == "unexplained":  # a reply no NAT status explains: conntrackd cannot say it
        reply = Tuple(out, src, proto, 80, 1024 + i)
    return Entry(orig, reply, timeout=timeout, mark=mark, zone=zone, status=status,
                 state=state if proto == 6 else None)


_ENTRY_SHAPES = st.tuples(st.booleans(), st.sampled_from([6, 17, 132, 1]),
                          st.sampled_from(["none", "none", "snat", "dnat", "unexplained"]),
                          st.sampled_from([0, 0, 7, 0xFFFFFFFF]), st.sampled_from([None, None, 3]),
                          st.sampled_from([1, 3, 7]), st.integers(1, 100_000))


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(shapes=st.lists(_ENTRY_SHAPES, min_size=1, max_size=40), deleted=st.sets(st.integers(0, 39)),
       updated=st.sets(st.integers(0, 39)), ignore_own=st.booleans())
def test_the_event_path_sends_the_datagrams_the_entry_path_sends(
        netns: Namespace, shapes: list[tuple[Any, ...]], deleted: set[int], updated: set[int], ignore_own: bool) -> None:
    """Property: kernel events of varied shapes (IPv4 and IPv6; TCP, UDP, SCTP, ICMP; SNAT,
    DNAT and a reply no NAT explains; marks, zones, TCP states; creates, updates, deletes),
    read by the engine (per-layout event functions, words packed by the session), give the
    datagrams of the reference path: each event decoded to an entry, filtered by
    `Selection.accepts`, said by `convert.from_entry`, queued as a StateMessage and sent by
    `transmit` + `wire.datagrams`; and every event the compiled path does not recognise took
    the entry path."""
    made = [_varied_entry(i, *shape) for i, shape in enumerate(shapes)]
    networks = [ipaddress.ip_network("192.0.2.1/32")] if ignore_own else []
    selection = Selection(networks=networks, networks_accept=False if networks else None)
    with netns.enter():
        table = ConntrackTable()
    table.flush()
    engine = SyncEngine(table, Options(), selection)
    session, reference = FtfwSession(seq=0xFFFFFFF0), FtfwSession(seq=0xFFFFFFF0)
    sent: list[bytes] = []
    engine.add_peer(Peer("peer", session, lambda dg: sent.append(dg) or True))
    entry_path: list[Entry] = []
    took = engine._entry_event
    engine._entry_event = lambda kind, e: (entry_path.append(e), took(kind, e))[1]  # type: ignore[method-assign]
    try:
        engine.subscribe()
        recorder = table.events(resync=False)
        created = table.create_many(made)
        assert not created.failed, created
        table.update_many([made[i] for i in sorted(updated) if i < len(made)], mark=5)
        table.delete_many([made[i] for i in sorted(deleted) if i < len(made)])
        engine.on_kernel_events()
        raw = _raw_events(recorder)
        recorder.close()
        # the reference: the entry path, one message object each, as conntrackd would say them
        internal: set[bytes] = set()
        declined = 0
        unplanned: list[bytes] = []  # events the compiled plans do not say (ICMP, SCTP, odd NAT)
        for attrs, family, kind in raw:
            lay, values = table.decoder.layout(attrs, 0, len(attrs), family)
            e = lay.build(values)
            key = fastpath.entry_key(e)
            plan = fastpath.event_plan(lay.index, family)
            if plan is None or (selection.accepts(e) and plan(values) is None):  # (the Filter first)
                unplanned.append(key)
                assert e.proto not in (6, 17) or e.reply != e.orig.mirror()  # only those
            else:
                assert e.proto in (6, 17)
            if not selection.accepts(e):
                continue
            if kind == "destroy":
                if key not in internal:
                    continue
                internal.discard(key)
                mtype = MsgType.CT_DEL
            else:
                mtype = MsgType.CT_UPD if key in internal else MsgType.CT_NEW
            try:
                msg = convert.from_entry(e, mtype)
            except InputError:
                declined += 1
                continue
            internal.add(key)
            reference.enqueue(key, msg)
        want = list(wire.datagrams(reference.transmit(0.0), engine.peers[0].datagram_limit))
        assert sent == want
        # what the compiled path did not recognise went the entry way, and only that
        assert [fastpath.entry_key(e) for e in entry_path] == unplanned
        assert engine.unsendable == declined
    finally:
        engine.close()
        table.close()


def _raw_events(events: Any) -> list[tuple[bytes, int, str]]:
    """The waiting ctnetlink events as the kernel sent them: (attributes, family, kind)."""
    buf = bytearray(1 << 16)
    out = []
    while n := events.sock.recv_into(buf, block=False):
        off = 0
        while off + 20 <= n:
            length, mtype, flags = _NLMSG.unpack_from(buf, off)[:3]
            kind = "destroy" if mtype & 0xFF == 2 else "new" if flags & 0x600 == 0x600 else "update"
            out.append((bytes(buf[off + 20:off + length]), buf[off + 16], kind))
            off += (length + 3) & ~3
    return out


def test_a_queue_of_words_only_is_packed_per_batch_as_the_loop_packs_it() -> None:
    """A session whose queue holds only the event path's words numbers, files and packs it per
    batch (`ftfw._packed_words`: no loop per message); its datagrams, resend queue and stats are
    those of messages queued one by one (`transmit` + `wire.datagrams`), through HELLO and
    HELLO_BACK, bodies of every size up to one over the datagram limit (and those filling one exactly), ACKs and NACKs; the loop
    takes over when the numbers would wrap or the resend queue would overflow."""
    import random

    from nfkit.ha import ftfw
    from nfkit.ha.spec import Flag

    rng = random.Random(11)
    taken = []
    packed_words = ftfw._packed_words

    def counting(*args: Any) -> Any:
        got = packed_words(*args)
        taken.append(got is not None)
        return got

    ftfw._packed_words = counting  # type: ignore[assignment]
    try:
        for start, resend_limit, limit in ((7, 131072, 1472), (0xFFFFFFFF - 300, 131072, 600), (1000, 90, 400)):
            packed = FtfwSession(seq=start, resend_limit=resend_limit)
            reference = FtfwSession(seq=start, resend_limit=resend_limit)
            peer_seq = 5000  # the peer's numbers on its ACKs and NACKs
            for round_ in range(30):
                words: dict[Any, wire.Word] = {}
                for _ in range(rng.randrange(1, 60)):
                    key = rng.randrange(200).to_bytes(2, "big")
                    mtype = int(rng.choice([MsgType.CT_NEW, MsgType.CT_UPD, MsgType.CT_DEL]))
                    body = bytes(rng.randrange(256) for _ in range(rng.choice([4, 36, 56, 120, limit // 2 - 8, limit - 8, limit - 7])))
                    words.pop(key, None)
                    words[key] = (key, mtype, body)
                    reference.enqueue(key, wire.StateMessage(MsgType(mtype), body=body))
                packed.enqueue_words(words)
                if round_ == 9:
                    packed.say_hello_back = reference.say_hello_back = True
                got = packed.transmit_datagrams(float(round_), limit)
                assert got == list(wire.datagrams(reference.transmit(float(round_)), limit)), round_
                assert packed.resend_queue_depth == reference.resend_queue_depth
                if round_ % 4 == 3:  # the peer acknowledges some, asks again for others
                    first = (packed.seq - rng.randrange(1, 40)) & 0xFFFFFFFF
                    last = (first + rng.randrange(0, 10)) & 0xFFFFFFFF
                    flag = rng.choice([Flag.ACK, Flag.NACK])
                    peer_seq += 1
                    for s in (packed, reference):
                        s.receive(wire.ControlMessage(flag, peer_seq, first, last))
            assert packed.stats == reference.stats and packed.stats.acked and packed.stats.resent
    finally:
        ftfw._packed_words = packed_words  # type: ignore[assignment]
    assert any(taken) and not all(taken)


def test_a_block_of_words_is_numbered_and_framed_at_once_as_words_are() -> None:
    """A session given blocks of words (`enqueue_block`: the engine's batch path) sends the
    datagrams, keeps the resend queue and counts the stats of one given the same words as
    a dict (`enqueue_words`), through words queued before and after a block, blocks whose
    entries supersede unacknowledged ones, HELLO and HELLO_BACK, ACKs and NACKs (resends of
    a block's messages), types one for all or one each; the loop takes over when the numbers
    would wrap or the resend queue would overflow."""
    import random

    import numpy as np

    from nfkit.ha import ftfw
    from nfkit.ha.spec import Flag

    rng = random.Random(5)
    blocks_taken = []
    take_block = ftfw.FtfwSession._take_block

    def counting(self: FtfwSession, now: float, limit: int) -> list[bytes]:
        blocks_taken.append(self.seq + len(self._blocks[0].keys) <= 0xFFFFFFFF
                            and len(self._rs) + len(self._blocks[0].keys) <= self.resend_limit)
        return take_block(self, now, limit)

    ftfw.FtfwSession._take_block = counting  # type: ignore[method-assign]
    try:
        for start, resend_limit, limit in ((7, 131072, 1472), (0xFFFFFFFF - 700, 131072, 600), (1000, 150, 400)):
            blocked = FtfwSession(seq=start, resend_limit=resend_limit)
            reference = FtfwSession(seq=start, resend_limit=resend_limit)
            peer_seq = 5000
            for round_ in range(40):
                for _ in range(rng.choice([1, 1, 2])):
                    if rng.random() < 0.25:  # a word of the walk's, before or after a block
                        key = rng.randrange(300).to_bytes(2, "big")
                        word = (key, int(MsgType.CT_DEL), bytes(rng.randrange(256) for _ in range(12)))
                        blocked.enqueue_words({key: word})
                        reference.enqueue_words({key: word})
                        continue
                    n = rng.randrange(1, 80)
                    size = rng.choice([12, 52, 76, limit - 8, limit - 7])
                    keys = [k.to_bytes(2, "big") for k in rng.sample(range(300), n)]
                    array = np.frombuffer(rng.randbytes(n * (8 + size)), np.uint8).reshape(n, 8 + size).copy()
                    bodies = [bytes(row[8:]) for row in array]
                    types: int | list[int] = (int(MsgType.CT_NEW) if rng.random() < 0.5 else
                                              [int(rng.choice([MsgType.CT_NEW, MsgType.CT_UPD])) for _ in keys])
                    block = wire.Words(keys, types, bodies, array)
                    blocked.enqueue_block(block)
                    reference.enqueue_words(block.as_dict())
                if round_ == 9:
                    blocked.say_hello_back = reference.say_hello_back = True
                got = blocked.transmit_datagrams(float(round_), limit)
                assert got == list(wire.datagrams(reference.transmit(float(round_)), limit)), round_
                assert blocked.resend_queue_depth == reference.resend_queue_depth
                if round_ % 3 == 2:  # the peer acknowledges some, asks again for others
                    first = (blocked.seq - rng.randrange(1, 120)) & 0xFFFFFFFF
                    last = (first + rng.randrange(0, 60)) & 0xFFFFFFFF
                    flag = rng.choice([Flag.ACK, Flag.NACK])
                    peer_seq += 1
                    for s in (blocked, reference):
                        s.receive(wire.ControlMessage(flag, peer_seq, first, last))
            assert blocked.stats == reference.stats and blocked.stats.acked and blocked.stats.resent
            assert blocked._rs_seq == reference._rs_seq
    finally:
        ftfw.FtfwSession._take_block = take_block  # type: ignore[method-assign]
    assert any(blocks_taken) and not all(blocks_taken)


class _Recorded:
    """Stands in for the engine's `mmsg.BatchReceiver`: each call copies the next recorded
    read (datagrams) into `buffer`, one a slot, as recvmmsg does; [] once spent."""

    def __init__(self, reads: list[list[bytes]], slots: int = 64, slot_size: int = 8192) -> None:
        self.reads, self.slots, self.slot_size = reads, slots, slot_size
        self.buffer = bytearray(slots * slot_size)

    def receive(self) -> list[tuple[int, int]]:
        if not self.reads:
            return []
        out = []
        for i, dg in enumerate(self.reads.pop(0)):
            self.buffer[i * self.slot_size:i * self.slot_size + len(dg)] = dg
            out.append((i * self.slot_size, len(dg)))
        return out


def _burst(i: int, rng: Any) -> Entry:
    """Entry ``i`` of a burst: runs of one shape (IPv4 TCP, IPv4 UDP, IPv6 TCP) as a busy
    firewall makes them, with a few NATed entries, entries of an ignored address and marks."""
    run = (i // 150) % 3
    six, proto = run == 2, (17 if run == 1 else 6)
    a = 1 + i % 200
    src, dst = (f"2001:db8::{a:x}", "2001:db8:1::1") if six else (f"192.0.2.{a}", "198.51.100.1")
    if rng.random() < 0.03:
        src = "2001:db8::ffff" if six else "203.0.113.77"  # ignored
    orig = Tuple(src, dst, proto, 1024 + i, 80)
    status = Status.SEEN_REPLY | Status.ASSURED
    reply = None
    if rng.random() < 0.01:
        out = "2001:db8:2::9" if six else "203.0.113.9"
        reply, status = Tuple(dst, out, proto, 80, 40000 + i), status | Status.SRC_NAT | Status.SRC_NAT_DONE
    return Entry(orig, reply, timeout=600, status=status, mark=rng.choice([0, 0, 0, 9]),
                 state=3 if proto == 6 else None)


def _counted(said: list[int], block: Any, keys: list[bytes], bodies: list[bytes], array: Any) -> None:
    said.append(len(keys))
    block(keys, bodies, array)


@pytest.mark.parametrize("internal_cache", [True, False])
def test_a_burst_of_events_said_by_whole_arrays_sends_what_the_walk_sends(netns: Namespace,
                                                                           internal_cache: bool) -> None:
    """Kernel events of a burst (2,500 creates in runs of IPv4 TCP, IPv4 UDP and IPv6 TCP,
    with NAT, marks and ignored addresses among them, then updates and deletes), read as
    recvmmsg gave them, give the same messages, internal cache, counters, and resends after
    a NACK whether reads of one layout are said by its `fastpath.EventVector` (whole
    arrays) or walked event by event; and most were said by the vectors.  Without the
    internal cache (NOTRACK's DisableInternalCache: each event said as NEW or UPD by its
    kind) every event is walked."""
    import random

    from nfkit.ha.spec import Flag
    from nfkit.netlink import mmsg

    rng = random.Random(3)
    made = [_burst(i, rng) for i in range(2500)]
    with netns.enter():
        table = ConntrackTable()
    try:
        events = table.events(resync=False, rcvbuf=16 << 20)
        receiver = mmsg.receiver(events.sock.sock)
        assert not table.create_many(made).failed
        table.update_many(made[100:400:3], mark=5)
        table.delete_many(made[1000:1300:2])
        reads = []
        while got := receiver.receive():
            reads.append([bytes(receiver.buffer[off:off + size]) for off, size in got])
        events.close()
        ignored = [ipaddress.ip_network(a) for a in ("203.0.113.77/32", "2001:db8::ffff/128")]
        outcome = []
        for vectors in (True, False):
            engine = SyncEngine(table, Options(event_batch_s=0, internal_cache=internal_cache),
                                Selection(networks=ignored, networks_accept=False))
            sent: list[bytes] = []
            engine.add_peer(Peer("b", FtfwSession(seq=77), sent.append))  # type: ignore[arg-type]
            engine.events = table.events(resync=False)  # (not read: the recording stands in)
            engine._receiver = _Recorded(list(reads))  # type: ignore[assignment]
            said: list[int] = []
            engine._local_block = functools.partial(_counted, said, engine._local_block)  # type: ignore[method-assign]
            if not vectors:
                engine._learn_vector = lambda *args: None  # type: ignore[method-assign]
            try:
                while engine._receiver.reads:  # type: ignore[union-attr]
                    engine.on_kernel_events()
                session = engine.peers[0].session
                first = session.seq - 2000  # type: ignore[attr-defined]
                session.receive(wire.ControlMessage(Flag.ACK, 1, first - 300, first - 1))
                session.receive(wire.ControlMessage(Flag.NACK, 2, first, first + 40))
                engine.flush()
                assert max(map(len, sent)) <= engine.peers[0].datagram_limit
                # the messages, in order (the reads said between two sends may differ)
                outcome.append((b"".join(sent), dict(engine.internal), set(engine.internal_since), engine.internal_stats,
                                engine.events_received, engine.events_filtered, session.stats,
                                session.resend_queue_depth))
                if vectors and internal_cache:
                    assert sum(said) > 2000, said
                else:
                    assert not said
            finally:
                engine.close()
        assert outcome[0] == outcome[1]
        assert outcome[0][5] > 0 and outcome[0][6].resent == 41
    finally:
        table.close()
