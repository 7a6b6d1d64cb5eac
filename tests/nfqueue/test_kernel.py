"""nfqueue against the kernel: UDP on loopback in a namespace, queued by the xt NFQUEUE target."""

from __future__ import annotations

import socket
import time

import pytest

from nfkit.errors import CapabilityError
from nfkit.netlink.specs import nfqueue as Q
from nfkit.nfqueue import NF_ACCEPT, NF_DROP, Queue, queue_counters
from nfkit.nftables import commit, list_ruleset, model

pytestmark = pytest.mark.kernel
PORT = 9999


def _dport(port: int) -> dict:
    return {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": port}}


def _rules(queue: dict) -> None:
    rs = model.Ruleset()
    t = rs.table("ip", "q")
    out = rs.chain(t, "out", type="filter", hook="output", prio=0, policy="accept")
    rs.rule(out, _dport(PORT), {"queue": queue})
    after = rs.chain(t, "after", type="filter", hook="output", prio=10, policy="accept")
    rs.rule(after, _dport(PORT), {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 42}},
            {"counter": {"packets": 0, "bytes": 0}})
    commit(rs)


def _marked() -> int:
    for r in list_ruleset("ip", "q").rules:
        if r.chain == "after":
            return next(e["counter"]["packets"] for e in r.expr if "counter" in e)
    raise AssertionError("no counter")


def _receiver() -> socket.socket:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", PORT))
    rx.settimeout(0.3)
    return rx


def _received(rx: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(rx.recv(65536))
        except TimeoutError:
            return got


def _take(q: Queue, n: int) -> list:
    out: list = []
    deadline = time.monotonic() + 5
    while len(out) < n and time.monotonic() < deadline:
        out += list(q.packets(block=False))
        time.sleep(0.01)
    assert len(out) == n, out
    return out


def test_verdicts_marks_and_batch(netns) -> None:  # type: ignore[no-untyped-def]
    with netns.enter():
        _rules({"num": 5})
        rx = _receiver()
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flags = Q.NFQA_CFG_F_FAIL_OPEN | Q.NFQA_CFG_F_GSO
        try:
            Queue(5, flags=flags | Q.NFQA_CFG_F_CONNTRACK).close()
            flags |= Q.NFQA_CFG_F_CONNTRACK
        except CapabilityError as exc:  # this kernel has no CONFIG_NETFILTER_NETLINK_GLUE_CT
            assert "flag conntrack: " in str(exc) and "GLUE_CT" in str(exc)
        with Queue(5, flags=flags) as q:
            for i in range(5):
                tx.sendto(b"datagram %d" % i, ("127.0.0.1", PORT))
            pkts = _take(q, 5)
            assert [p.payload[28:] for p in pkts] == [b"datagram %d" % i for i in range(5)]
            assert all(p.queue == 5 and p.hw_protocol == 0x0800 for p in pkts)
            if flags & Q.NFQA_CFG_F_CONNTRACK:
                assert pkts[0].ct_info == 2 and pkts[1].ct_info == 0  # new, then established
                assert pkts[0].ct is not None
            else:
                assert pkts[0].ct is None and pkts[0].ct_info is None
            assert pkts[0].outdev == socket.if_nametoindex("lo")
            q.verdict(pkts[0], NF_ACCEPT, mark=42)
            q.verdict(pkts[1], NF_DROP)
            q.batch_verdict(pkts[4].id, NF_ACCEPT, mark=42)  # 2, 3 and 4 at once
            q.flush()
            assert _received(rx) == [b"datagram 0", b"datagram 2", b"datagram 3", b"datagram 4"]
            assert _marked() == 4
            row = queue_counters()[5]
            assert row["id_sequence"] == 5 and row["waiting"] == 0 and row["copy_range"] == 0xFFFF - 4  # the kernel caps it
            q.verdict(12345)  # no such packet: the kernel refuses, counted
            q.flush()
            list(q.packets(block=False))
            time.sleep(0.05)
            list(q.packets(block=False))
            assert q.refused == 1 and q.last_refusal == "ENOENT"
        assert 5 not in queue_counters()  # closing the socket unbinds


def test_copy_range_fail_open_and_bypass(netns) -> None:  # type: ignore[no-untyped-def]
    with netns.enter():
        _rules({"num": 6, "flags": "bypass"})
        rx = _receiver()
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.sendto(b"nobody listens", ("127.0.0.1", PORT))
        assert _received(rx) == [b"nobody listens"]  # bypass: no program bound, packet passes
        with Queue(6, copy_range=40, maxlen=2, flags=Q.NFQA_CFG_F_FAIL_OPEN) as q:
            for i in range(6):
                tx.sendto(b"%d" % i * 100, ("127.0.0.1", PORT))
            # two wait in the queue; the queue is full for the other four, which pass
            assert _received(rx) == [b"%d" % i * 100 for i in range(2, 6)]
            pkts = _take(q, 2)
            assert [len(p.payload) for p in pkts] == [40, 40] and pkts[0].cap_len == 128
            q.batch_verdict(pkts[-1].id)
            q.flush()
            assert _received(rx) == [b"0" * 100, b"1" * 100]
            assert queue_counters()[6]["dropped"] == 0  # fail-open: none dropped
            with pytest.raises(CapabilityError, match="queue 6: cannot bind"):
                Queue(6)


def test_enobufs_is_counted_and_survived(netns) -> None:  # type: ignore[no-untyped-def]
    """A receive buffer too small for a burst: the kernel reports ENOBUFS, fail-open lets the
    packets it could not deliver pass, and the queue goes on working."""
    with netns.enter():
        _rules({"num": 7})
        rx = _receiver()
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with Queue(7, rcvbuf=4096, flags=Q.NFQA_CFG_F_FAIL_OPEN) as q:
            for i in range(100):
                tx.sendto(b"%04d" % i + b"x" * 1000, ("127.0.0.1", PORT))
            taken = list(q.packets())
            assert q.enobufs >= 1 and 0 < len(taken) < 100
            q.batch_verdict(taken[-1].id)
            q.flush()
            got = _received(rx)
            assert sorted(got) == sorted(b"%04d" % i + b"x" * 1000 for i in range(100))
            assert queue_counters()[7]["user_dropped"] == 0  # fail-open: passed, not dropped
            tx.sendto(b"after", ("127.0.0.1", PORT))
            (pkt,) = _take(q, 1)
            q.verdict(pkt)
            q.flush()
            assert _received(rx) == [b"after"]


def test_receive_reads_several_datagrams_per_call(netns) -> None:  # type: ignore[no-untyped-def]
    """`Queue.receive`: the packets waiting read in one call (up to its limit), decoded by
    layout as `packets` decodes them; a cut copy says its length; refusals counted."""
    with netns.enter():
        _rules({"num": 8})
        rx = _receiver()
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with Queue(8, copy_range=60, flags=Q.NFQA_CFG_F_FAIL_OPEN) as q:
            for i in range(10):
                tx.sendto(b"%02d" % i + b"y" * (i * 10), ("127.0.0.1", PORT))
            deadline = time.monotonic() + 5
            while queue_counters()[8]["waiting"] < 10 and time.monotonic() < deadline:
                time.sleep(0.01)
            first = q.receive(limit=3)
            rest = q.receive()
            assert [len(first), len(rest)] == [3, 7]
            got = first + rest
            assert [p[0] for p in got] == list(range(1, 11))  # ids in order
            for i, (_, mark, cap_len, _, payload) in enumerate(got):
                whole = 28 + 2 + i * 10
                assert payload[28:] == (b"%02d" % i + b"y" * (i * 10))[:32] and mark == 0
                assert cap_len == (whole if whole > 60 else -1)
            q.batch_verdict(got[-1][0])
            q.verdict(54321)  # no such packet: refused
            q.flush()
            assert len(_received(rx)) == 10
            assert q.receive() == [] and q.refused == 1 and q.last_refusal == "ENOENT"
            assert q.received == 10


def test_receive_packets_waits_reads_a_batch_and_verdict_blocks_mark(netns) -> None:  # type: ignore[no-untyped-def]
    """`Queue.receive_packets`: what waits read in one recvmmsg, the payloads in
    `datagram_buffer` as `receive` gives them; with ``wait`` the call blocks until a packet
    comes and no longer than the receive timeout; verdicts written into a
    `wire.verdict_block` and sent by `send_verdicts` pass the packets with their marks; a
    refused one counted."""
    import threading

    from nfkit.nfqueue import wire

    with netns.enter():
        _rules({"num": 9})
        rx = _receiver()
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with Queue(9, copy_range=60, flags=Q.NFQA_CFG_F_FAIL_OPEN) as q:
            q.set_receive_timeout(0.2)
            t0 = time.monotonic()
            assert q.receive_packets(wait=True) == []  # nothing came: the timeout ended the wait
            assert 0.15 < time.monotonic() - t0 < 2
            later = threading.Timer(0.1, lambda: tx.sendto(b"late", ("127.0.0.1", PORT)))
            later.start()
            (late,) = q.receive_packets(wait=True)  # blocks until it comes
            later.join()
            assert bytes(q.datagram_buffer[late[3] + 28:late[4]]) == b"late"  # valid until the next call
            for i in range(5):
                tx.sendto(b"%02d" % i + b"y" * (i * 10), ("127.0.0.1", PORT))
            deadline = time.monotonic() + 5
            while queue_counters()[9]["waiting"] < 6 and time.monotonic() < deadline:
                time.sleep(0.01)
            got = q.receive_packets(wait=True)
            assert [p[0] for p in got] == list(range(2, 7)) and late[0] == 1  # ids in order
            buf = q.datagram_buffer
            for i, (_, mark, cap_len, start, stop) in enumerate(got):
                whole = 28 + 2 + i * 10
                assert bytes(buf[start + 28:stop]) == (b"%02d" % i + b"y" * (i * 10))[:32] and mark == 0
                assert cap_len == (whole if whole > 60 else -1)
            block = wire.verdict_block(9, 8)
            for k, pid in enumerate([late[0]] + [p[0] for p in got[:3]] + [54321]):  # the last: no such packet
                wire.VERDICT_ID_MARK.pack_into(block, k * wire.VERDICT_STRIDE + wire.VERDICT_ID_MARK_AT, pid,
                                               wire.MARK_HEADER, 42 if k % 2 else 0)
            q.send_verdicts(memoryview(block)[:5 * wire.VERDICT_STRIDE], 5)
            assert _received(rx) == [b"late", b"00", b"01" + b"y" * 10, b"02" + b"y" * 20]
            assert _marked() == 2  # the 1st and 3rd of the block carried mark 42
            assert q.receive_packets() == [] and q.refused == 1 and q.last_refusal == "ENOENT"
            assert q.received == 6 and q.verdicts == 5
