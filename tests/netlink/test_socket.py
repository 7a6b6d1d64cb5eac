"""The netlink socket against the real kernel, in a namespace of the test's own."""

from __future__ import annotations

import errno
import socket
import threading

import pytest

from nfkit.errors import DumpInterrupted, EventsLost, NetlinkError, TransactionError
from nfkit.netlink import Batch, MessageWriter, NetlinkSocket
from nfkit.netlink.codec import parse_messages
from nfkit.netlink.consts import (
    NFNL_SUBSYS_NFTABLES,
    NFNLGRP_CONNTRACK_NEW,
    NFPROTO_INET,
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    nfnl_msg_type,
)
from nfkit.netlink.specs import ctnetlink as C
from nfkit.netlink.specs import nftables as N

from . import nft_raw

CT_NEW = C.CT_NEW
CT_GET = C.CT_GET
CT_DELETE = C.CT_DELETE
SRC, DST = socket.inet_aton("192.0.2.1"), socket.inet_aton("198.51.100.1")


def udp_entry(w: MessageWriter, sport: int, msg_type: int = CT_NEW, timeout: int | None = 300) -> int:
    seq = w.begin(msg_type, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL, family=socket.AF_INET)
    C.CT.encode(w, {
        "tuple_orig": {"ip": {"v4_src": SRC, "v4_dst": DST},
                       "proto": {"num": 17, "src_port": sport, "dst_port": 53}},
        "tuple_reply": {"ip": {"v4_src": DST, "v4_dst": SRC},
                        "proto": {"num": 17, "src_port": 53, "dst_port": sport}},
        "timeout": timeout,
    })
    w.end()
    return seq


def dump_ct(s: NetlinkSocket) -> list[dict]:
    w = MessageWriter()
    w.begin(CT_GET, family=socket.AF_INET)
    w.end()
    return [C.CT.decode(m.attrs) for m in s.dump(w)]


@pytest.fixture
def sock(netns):
    with netns.enter():
        s = NetlinkSocket()
    yield s
    s.close()


def test_request_ack_and_error_naming_the_object(sock, netns):
    w = MessageWriter()
    udp_entry(w, 1000)
    assert sock.request(w) == []
    assert "192.0.2.1" in netns.run("conntrack -L").stdout
    w = MessageWriter()
    udp_entry(w, 1000)
    with pytest.raises(NetlinkError) as exc:
        sock.request(w, what="conntrack entry udp 192.0.2.1:1000")
    assert exc.value.errno == errno.EEXIST
    assert str(exc.value).startswith("conntrack entry udp 192.0.2.1:1000: File exists (EEXIST)")


def test_multipart_dump_decodes_every_entry(sock, netns):
    w = MessageWriter()
    for port in range(2000, 5000):
        udp_entry(w, port)
    assert sock.pipeline(w, ack=True) == {}
    entries = dump_ct(sock)
    assert sorted(e["tuple_orig"]["proto"]["src_port"] for e in entries) == list(range(2000, 5000))
    assert {e["tuple_orig"]["ip"]["v4_src"] for e in entries} == {SRC}
    assert netns.run("conntrack -C").stdout.strip() == "3000"


def test_pipeline_reports_failures_by_sequence_number(sock):
    w = MessageWriter()
    seqs = [udp_entry(w, port) for port in range(100, 600)]
    assert sock.pipeline(w) == {}
    w = MessageWriter()
    again = [udp_entry(w, port) for port in range(550, 650)]  # 50 exist already
    failures = sock.pipeline(w, ack=False, chunk=2048)
    assert failures == {seq: errno.EEXIST for seq in again[:50]}
    assert len(set(seqs)) == 500


def test_batch_is_atomic_and_errors_map_to_the_message(sock, netns):
    b = Batch()
    nft_raw.new_table(b, "t")
    nft_raw.new_chain(b, "t", "c")
    nft_raw.new_chain(b, "missing", "c")
    with pytest.raises(TransactionError) as exc:
        sock.send_batch(b, what=["table inet t", "chain inet t c", "chain inet missing c"],
                        fence=nft_raw.fence())
    (err,) = exc.value.errors
    assert err.errno == errno.ENOENT and err.index == 2
    # the kernel pointed at the table attribute; the error names it by the spec
    assert err.offset is not None and err.path == "table"
    assert str(err).startswith("chain inet missing c: table: No such file or directory (ENOENT)")
    assert netns.run("nft list ruleset").stdout.strip() == ""  # nothing committed


def test_refused_rule_names_the_expression_the_kernel_pointed_at(sock, netns):
    """Extended-ACK offset -> attribute path, from a real refusal (a cmp with no such op)."""
    b = Batch()
    nft_raw.counter_chain(b, "t", "c", 0)
    b.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, N.MSG["newrule"]),
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND, family=NFPROTO_INET)
    N.RULE.encode(b, {"table": "t", "chain": "c", "expressions": [
        {"name": "payload", "data": {"dreg": 1, "base": N.PayloadBase.NETWORK_HEADER,
                                     "offset": 9, "len": 1}},
        {"name": "counter", "data": {}},
        {"name": "cmp", "data": {"sreg": 1, "op": 99, "data": {"value": b"\x06"}}},
    ]})
    b.end()
    with pytest.raises(TransactionError) as exc:
        sock.send_batch(b, what=["table", "chain", "rule inet t c"], fence=nft_raw.fence())
    (err,) = exc.value.errors
    assert err.index == 2 and err.errno == errno.EINVAL and err.offset is not None
    assert err.path == "expressions[2] (cmp)"
    assert str(err) == "rule inet t c: expressions[2] (cmp): Invalid argument (EINVAL)"
    assert netns.run("nft list ruleset").stdout.strip() == ""


def test_refused_conntrack_request_names_the_attribute(sock, netns):
    """ctnetlink checks its policy: CTA_ZONE sent as one byte is refused at that attribute."""
    w = MessageWriter()
    w.begin(CT_NEW, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL, family=socket.AF_INET)
    C.CT.encode(w, {
        "tuple_orig": {"ip": {"v4_src": SRC, "v4_dst": DST},
                       "proto": {"num": 17, "src_port": 1000, "dst_port": 53}},
        "timeout": 30,
    })
    w.u8(C.CT.number("zone"), 1)  # the policy wants NLA_U16
    w.end()
    with pytest.raises(NetlinkError) as exc:
        sock.request(w, what="conntrack entry udp 192.0.2.1:1000")
    err = exc.value
    assert err.errno == errno.ERANGE and err.path == "zone"
    assert str(err).startswith("conntrack entry udp 192.0.2.1:1000: zone: "
                               "Numerical result out of range (ERANGE)")
    assert netns.run("conntrack -L").stdout.strip() == ""


def test_batch_far_larger_than_default_buffer_is_one_transaction(sock, netns):
    b = Batch()
    nft_raw.counter_chain(b, "big", "c", 40_000)
    default_sndbuf = int(open("/proc/sys/net/core/wmem_default").read())
    assert len(b.buffer) > 8 * default_sndbuf
    sock.send_batch(b, fence=nft_raw.fence())
    listing = netns.run("nft list chain inet big c").stdout
    assert listing.count("counter packets 0 bytes 0") == 40_000
    # the same batch plus one bad message: nothing at all is committed
    b = Batch()
    nft_raw.counter_chain(b, "big2", "c", 40_000)
    nft_raw.new_counter_rule(b, "big2", "nosuchchain")
    with pytest.raises(TransactionError) as exc:
        sock.send_batch(b, fence=nft_raw.fence())
    assert exc.value.errors[0].index == 40_002
    assert "big2" not in netns.run("nft list tables").stdout


def test_dump_interrupted_raises_or_restarts(sock, netns):
    b = Batch()
    nft_raw.counter_chain(b, "d", "c", 3000)
    sock.send_batch(b, fence=nft_raw.fence())
    with netns.enter():
        other = NetlinkSocket()

    def change_ruleset() -> None:
        b2 = Batch()
        nft_raw.new_counter_rule(b2, "d", "c")
        other.send_batch(b2, fence=nft_raw.fence())

    w = MessageWriter()
    nft_raw.get_rules(w)
    with pytest.raises(DumpInterrupted):
        for i, _ in enumerate(sock.dump(w)):
            if i == 10:
                change_ruleset()  # the generation changes mid-dump
    w = MessageWriter()
    nft_raw.get_rules(w)
    changed = []
    assert sum(1 for _ in sock.dump(w, restart=True)) == 3001
    # restart mode hides the interruption: change once during the first attempt
    w = MessageWriter()
    nft_raw.get_rules(w)
    orig = sock._recv
    calls = []

    def recv_and_change(block: bool = True) -> int:
        calls.append(1)
        if len(calls) == 2 and not changed:
            changed.append(1)
            change_ruleset()
        return orig(block)

    sock._recv = recv_and_change  # type: ignore[method-assign]
    assert sum(1 for _ in sock.dump(w, restart=True)) == 3002
    assert changed
    other.close()


def test_dump_datagrams_whole_rounds_and_interruption(sock, netns):
    b = Batch()
    nft_raw.counter_chain(b, "d", "c", 3000)
    sock.send_batch(b, fence=nft_raw.fence())
    w = MessageWriter()
    nft_raw.get_rules(w)
    want = [bytes(m.payload) for m in sock.dump(w)]
    w = MessageWriter()
    nft_raw.get_rules(w)
    rounds = [bytes(d) for d in sock.dump_datagrams(w)]
    assert len(rounds) >= 5  # several kernel dump rounds, none holding NLMSG_DONE
    got = [bytes(m.payload) for r in rounds for m in parse_messages(memoryview(r))]
    assert got == want and len(got) == 3000
    with netns.enter():
        other = NetlinkSocket()
    w = MessageWriter()
    nft_raw.get_rules(w)
    with pytest.raises(DumpInterrupted):
        for i, _ in enumerate(sock.dump_datagrams(w)):
            if i == 2:  # the generation changes between two rounds
                b2 = Batch()
                nft_raw.new_counter_rule(b2, "d", "c")
                other.send_batch(b2, fence=nft_raw.fence())
    other.close()
    # a dump the kernel refuses raises (a table name longer than the kernel allows)
    w = MessageWriter()
    nft_raw.get_rules(w, table="x" * 300)
    with pytest.raises(NetlinkError) as exc:
        list(sock.dump_datagrams(w, what="rules of x..."))
    assert exc.value.errno in (errno.EINVAL, errno.ERANGE)
    assert str(exc.value).startswith("rules of x...")


def test_events_for_new_entries(netns):
    with netns.enter():
        listener = NetlinkSocket(groups=(NFNLGRP_CONNTRACK_NEW,))
        writer_sock = NetlinkSocket()
    w = MessageWriter()
    udp_entry(w, 4242)
    writer_sock.request(w)
    seen = [C.CT.decode(m.attrs) for m in listener.events(timeout=2)]
    assert [e["tuple_orig"]["proto"]["src_port"] for e in seen] == [4242]
    listener.close()
    writer_sock.close()


def test_lost_events_raise_events_lost(netns):
    with netns.enter():
        listener = NetlinkSocket(groups=(NFNLGRP_CONNTRACK_NEW,), rcvbuf=0)
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer_sock = NetlinkSocket()
    w = MessageWriter()
    for port in range(10000, 12000):
        udp_entry(w, port)
    writer_sock.pipeline(w)
    with pytest.raises(EventsLost):
        for _ in listener.events(timeout=1):
            pass
    # the caller drains what was queued and resynchronises (dump); the socket keeps working
    queued = [C.CT.decode(m.attrs) for m in listener.events(timeout=0.2)]
    assert 0 < len(queued) < 2000
    assert len(dump_ct(writer_sock)) == 2000
    w = MessageWriter()
    udp_entry(w, 20000)
    writer_sock.request(w)
    ports = [C.CT.decode(m.attrs)["tuple_orig"]["proto"]["src_port"] for m in listener.events(timeout=1)]
    assert ports == [20000]


def test_nonblocking_use_with_selectors(netns):
    import selectors

    with netns.enter():
        listener = NetlinkSocket(groups=(NFNLGRP_CONNTRACK_NEW,))
        writer_sock = NetlinkSocket()
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    assert sel.select(timeout=0) == []
    t = threading.Timer(0.1, lambda: writer_sock.pipeline(_one(7777)))
    t.start()
    assert sel.select(timeout=2)
    ports = [C.CT.decode(m.attrs)["tuple_orig"]["proto"]["src_port"] for m in listener.messages(block=False)]
    assert ports == [7777]
    t.join()
    listener.close()
    writer_sock.close()


def _one(port: int) -> MessageWriter:
    w = MessageWriter()
    udp_entry(w, port)
    return w


def test_delete_by_tuple_and_enoent(sock):
    w = MessageWriter()
    udp_entry(w, 3333)
    sock.request(w)
    w = MessageWriter()
    udp_entry(w, 3333, msg_type=CT_DELETE, timeout=None)
    sock.request(w)
    assert dump_ct(sock) == []
    w = MessageWriter()
    udp_entry(w, 3333, msg_type=CT_DELETE, timeout=None)
    with pytest.raises(NetlinkError) as exc:
        sock.request(w)
    assert exc.value.errno == errno.ENOENT


def test_events_with_asyncio(netns):
    import asyncio

    with netns.enter():
        listener = NetlinkSocket(groups=(NFNLGRP_CONNTRACK_NEW,))
        writer_sock = NetlinkSocket()

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[int] = asyncio.Queue()

        def readable() -> None:
            for m in listener.messages(block=False):
                got.put_nowait(C.CT.decode(m.attrs)["tuple_orig"]["proto"]["src_port"])

        loop.add_reader(listener.fileno(), readable)
        loop.call_later(0.05, writer_sock.pipeline, _one(8888))
        loop.call_later(0.10, writer_sock.pipeline, _one(8889))
        ports = [await asyncio.wait_for(got.get(), 2), await asyncio.wait_for(got.get(), 2)]
        loop.remove_reader(listener.fileno())
        return ports

    assert asyncio.run(main()) == [8888, 8889]
    listener.close()
    writer_sock.close()
