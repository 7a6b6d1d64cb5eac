"""Many datagrams a call (recvmmsg): order, lengths, a datagram over a slot, the kernel's overrun."""

from __future__ import annotations

import socket

import pytest

from nfkit.errors import EventsLost, NetlinkError
from nfkit.netlink import MessageWriter, NetlinkSocket
from nfkit.netlink.consts import NFNLGRP_CONNTRACK_NEW
from nfkit.netlink.mmsg import BatchReceiver, SingleReceiver, receiver

from .test_socket import udp_entry


def test_datagrams_come_in_order_each_in_its_slot_over_several_calls() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        sent = [bytes([i]) * (1 + i * 7) for i in range(10)]
        for dg in sent:
            a.send(dg)
        r = BatchReceiver(b, slots=4, slot_size=128)
        got = []
        while batch := r.receive():
            assert len(batch) <= 4
            got += [bytes(r.buffer[off:off + n]) for off, n in batch]
        assert got == sent and r.receive() == []


def test_a_datagram_over_a_slot_is_an_error_not_a_silent_cut() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.send(bytes(200))
        with pytest.raises(NetlinkError, match="over 128 bytes"):
            BatchReceiver(b, slots=2, slot_size=128).receive()


@pytest.mark.parametrize("kind", [BatchReceiver, SingleReceiver])
def test_conntrack_events_in_batches_and_the_overrun_raises_events_lost(netns, kind) -> None:
    with netns.enter():
        listener = NetlinkSocket(groups=(NFNLGRP_CONNTRACK_NEW,))
        writer_sock = NetlinkSocket()
    try:
        w = MessageWriter()
        for port in range(10000, 10100):
            udp_entry(w, port)
        writer_sock.pipeline(w)
        r = kind(listener.sock)
        events = []
        while batch := r.receive():
            events += [bytes(r.buffer[off:off + n]) for off, n in batch]
        assert len(events) == 100  # one event a datagram, none lost or cut
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        w = MessageWriter()
        for port in range(20000, 22000):
            udp_entry(w, port)
        writer_sock.pipeline(w)
        with pytest.raises(EventsLost):
            while r.receive():
                pass
    finally:
        listener.close()
        writer_sock.close()


def test_receiver_is_the_batch_one_here() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        assert isinstance(receiver(b), BatchReceiver)


def test_wait_blocks_for_the_first_takes_the_rest_and_ends_on_timeout_or_signal() -> None:
    """``receive(wait=True)`` (MSG_WAITFORONE): blocks until a datagram comes, then takes what
    else waits without blocking again; [] when the socket's receive timeout passes or a
    signal interrupts the wait (its handler runs)."""
    import signal
    import struct
    import threading
    import time

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        r = BatchReceiver(b, slots=8, slot_size=64)
        send = threading.Timer(0.1, lambda: [a.send(b"%d" % i) for i in range(3)])
        send.start()
        got = [bytes(r.buffer[off:off + n]) for off, n in r.receive(wait=True)]
        send.join()
        got += [bytes(r.buffer[off:off + n]) for off, n in r.receive()]  # the slots are reused
        assert got == [b"0", b"1", b"2"]
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 150_000))
        t0 = time.monotonic()
        assert r.receive(wait=True) == [] and time.monotonic() - t0 >= 0.1
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 10, 0))
        hit: list[int] = []
        old = signal.signal(signal.SIGALRM, lambda *_: hit.append(1))
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            t0 = time.monotonic()
            assert r.receive(wait=True) == [] and hit and time.monotonic() - t0 < 5
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
