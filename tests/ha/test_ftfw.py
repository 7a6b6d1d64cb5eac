"""FTFW as a state machine: two nfkit sessions over an in-memory link that loses datagrams.

The session against a stock conntrackd (NACK recovery of datagrams an nft rule
dropped) is in test_interop.py.
"""

from __future__ import annotations

import random

from nfkit.ha import wire
from nfkit.ha.ftfw import Apply, FtfwSession, ResyncRequested, SeqClass, before, between
from nfkit.ha.spec import Flag, MsgType


def entry_msg(i: int, version: int = 0) -> wire.StateMessage:
    return wire.StateMessage(MsgType.CT_UPD, {"ipv4": ("192.0.2.2", "198.51.100.2"), "l4proto": 6,
                                              "port": (i, 80), "mark": version})


def on_wire(msgs: list[wire.Message]) -> list[wire.Message]:
    """Through the codec, as a peer would see them."""
    return [m for dg in wire.datagrams(msgs) for m in wire.decode_datagram(dg)]


def exchange(a: FtfwSession, b: FtfwSession, now: float, lose: float = 0.0,
             rng: random.Random | None = None) -> dict[object, wire.StateMessage]:
    """One round both ways; returns what b applied, by port."""
    applied = {}
    for src, dst in ((a, b), (b, a)):
        for dg in wire.datagrams(src.transmit(now)):
            if rng is not None and rng.random() < lose:
                continue
            for m in wire.decode_datagram(dg):
                for ev in dst.receive(m):
                    if isinstance(ev, Apply) and dst is b:
                        applied[ev.message.attrs["port"][0]] = ev.message
    return applied


def test_sequence_space_wraps() -> None:
    assert before(0xFFFFFFFF, 0) and not before(0, 0xFFFFFFFF)
    assert between(0, 0xFFFFFFFE, 2) and not between(3, 0xFFFFFFFE, 2)


def test_hello_until_hello_back_then_plain() -> None:
    a, b = FtfwSession(seq=100), FtfwSession(seq=5000)
    a.enqueue(1, entry_msg(1))
    (first,) = a.transmit(0.0)
    assert first.flags == Flag.HELLO and first.seq == 100
    assert b.classify(first) is SeqClass.HELLO
    b.receive(first)
    b.tick(1.0)
    (ack,) = b.transmit(1.0)  # the ACK b owes, saying HELLO itself and HELLO_BACK to a
    assert ack.flags == Flag.ACK | Flag.HELLO | Flag.HELLO_BACK
    a.receive(ack)
    a.enqueue(2, entry_msg(2))
    (second,) = a.transmit(1.5)
    assert second.flags & Flag.HELLO_BACK and not second.flags & Flag.HELLO  # a is done
    b.receive(second)
    a.enqueue(3, entry_msg(3))
    (third,) = a.transmit(2.0)
    assert third.flags == Flag(0) and third.seq == 102


def _handshaken() -> tuple[FtfwSession, FtfwSession]:
    a, b = FtfwSession(seq=0xFFFFFFF0), FtfwSession(seq=7)
    now = 0.0
    for _ in range(4):
        a.tick(now)
        b.tick(now)
        exchange(a, b, now)
        now += 1.0
    assert a.hello.name == b.hello.name == "DONE"
    return a, b


def test_a_gap_is_nacked_and_the_missing_messages_resent_with_new_numbers() -> None:
    a, b = _handshaken()
    for i in range(5):
        a.enqueue(i, entry_msg(i))
    sent = on_wire(a.transmit(10.0))
    lost = {sent[1].seq, sent[2].seq}
    got = [ev for m in sent if m.seq not in lost for ev in b.receive(m)]
    assert len(got) == 3 and b.stats.lost == 2
    answer = on_wire(b.transmit(10.0))
    nack = [m for m in answer if isinstance(m, wire.ControlMessage) and m.flags & Flag.NACK]
    assert [(m.first, m.last) for m in nack] == [(sent[1].seq, sent[2].seq)]
    for m in answer:
        a.receive(m)
    resent = a.transmit(10.1)
    assert [m.attrs["port"][0] for m in resent if isinstance(m, wire.StateMessage)] == [1, 2]
    assert all(before(s.seq, r.seq) for s in sent for r in resent)
    assert a.stats.resent == 2
    assert [ev for m in on_wire(resent) for ev in b.receive(m)]


def test_late_messages_are_dropped() -> None:
    a, b = _handshaken()
    a.enqueue(1, entry_msg(1))
    a.enqueue(2, entry_msg(2))
    first, second = on_wire(a.transmit(20.0))
    b.receive(second)
    assert b.receive(first) == [] and b.stats.dropped_late == 1


def test_window_full_is_acknowledged_and_empties_the_resend_queue() -> None:
    a, b = _handshaken()
    b.window = b.window_left = 10  # a fresh window of 10
    for i in range(10):
        a.enqueue(i, entry_msg(i))
    for m in on_wire(a.transmit(30.0)):
        b.receive(m)
    (ack,) = b.transmit(30.0)
    assert isinstance(ack, wire.ControlMessage) and ack.flags == Flag.ACK
    assert a.resend_queue_depth >= 10  # the 10 (and a's own ACKs: kept until acknowledged, as conntrackd)
    a.receive(on_wire([ack])[0])
    assert a.resend_queue_depth == 0  # b's window started before a's last ACK


def test_alive_after_a_quiet_second_or_the_ack_owed() -> None:
    a, b = _handshaken()
    a.tick(100.0)
    (owed,) = a.transmit(100.0)
    assert owed.flags == Flag.ACK  # a had received b's messages since its last ACK
    a.tick(100.5)
    assert a.transmit(100.5) == []  # not quiet for a second yet
    a.tick(101.0)
    (alive,) = a.transmit(101.0)
    assert alive.flags == Flag.ALIVE and isinstance(alive, wire.ControlMessage)
    assert len(wire.encode_message(alive)) == 8
    for m in (owed, alive):
        b.receive(m)
    a.enqueue(1, entry_msg(1))
    for m in a.transmit(101.1):
        b.receive(m)
    b.tick(102.2)
    (ack,) = b.transmit(102.2)
    assert ack.flags == Flag.ACK and isinstance(ack, wire.ControlMessage)
    assert ack.last == owed.seq + 2 and between(owed.seq, ack.first, ack.last)  # up to ACK, ALIVE, entry


def test_resync_request_is_an_event() -> None:
    a, b = _handshaken()
    a.request_resync()
    (resync,) = on_wire(a.transmit(50.0))
    assert isinstance(resync, wire.ControlMessage) and resync.flags == Flag.RESYNC
    assert b.receive(resync) == [ResyncRequested()]


def test_newer_word_on_an_entry_supersedes_the_unacknowledged_one() -> None:
    a, _ = _handshaken()
    depth = a.resend_queue_depth
    a.enqueue(1, entry_msg(1, version=1))
    a.transmit(60.0)
    assert a.resend_queue_depth == depth + 1
    a.enqueue(1, entry_msg(1, version=2))
    assert a.resend_queue_depth == depth
    (m,) = a.transmit(60.1)
    assert isinstance(m, wire.StateMessage) and m.attrs["mark"] == 2


def test_everything_arrives_over_a_link_losing_a_fifth_of_datagrams() -> None:
    rng = random.Random(15)
    a, b = _handshaken()
    a.window = b.window = 20
    want: dict[int, int] = {}
    applied: dict[object, wire.StateMessage] = {}
    now = 200.0
    for i in range(2000):
        version = rng.randrange(3)
        a.enqueue(i % 500, entry_msg(i % 500, version))
        want[i % 500] = version
        if i % 50 == 49:
            applied.update(exchange(a, b, now, lose=0.2, rng=rng))
            now += 0.1
    for _ in range(200):
        if all(k in applied and applied[k].attrs["mark"] == v for k, v in want.items()):
            break
        now += 1.0
        a.tick(now)
        b.tick(now)
        applied.update(exchange(a, b, now, lose=0.2, rng=rng))
    assert {k: m.attrs["mark"] for k, m in applied.items()} == want
    assert b.stats.lost > 0 and a.stats.resent > 0
