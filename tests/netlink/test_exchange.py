"""The exchange state machine without a kernel: datagrams in, events out.

The property: the events of an exchange depend on the messages the kernel
sent, not on how they were grouped into datagrams, nor on which reader walks
them (`feed` one message at a time or whole runs, or a hot loop handing over
only what is not a plain object).  The expected events come from a plain
statement of the rules (`expected`), written apart from the machine.
Against the kernel: tests/netlink/test_socket.py (DUMP_INTR, batches, paths).
"""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.errors import DecodeError
from nfkit.netlink.codec import Batch, Message, MessageWriter, parse_messages
from nfkit.netlink.consts import (
    NFNL_SUBSYS_NFTABLES,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_DUMP_INTR,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_NOOP,
    NLMSGERR_ATTR_MSG,
    NLMSGERR_ATTR_OFFS,
    nfnl_msg_type,
)
from nfkit.netlink.exchange import DONE, INTERRUPTED, Ack, Exchange, Messages, Refused
from nfkit.netlink.specs import ctnetlink as C
from nfkit.netlink.specs import message_attrs
from nfkit.netlink.specs import nftables as N

SEQ = 4242
OTHER = 77
_HDR = struct.Struct("=IHHII")


def message(mtype: int, flags: int = 0, seq: int = SEQ, payload: bytes = b"") -> bytes:
    length = 16 + len(payload)
    return _HDR.pack(length, mtype, flags, seq, 0) + payload + bytes(-length & 3)


def done(err: int = 0, flags: int = NLM_F_MULTI, seq: int = SEQ) -> bytes:
    return message(NLMSG_DONE, flags, seq, struct.pack("=i", -err))


def error(err: int, seq: int = SEQ, req_type: int = 0x100, extack: str | None = None,
          offset: int | None = None) -> bytes:
    """NLMSG_ERROR as a NETLINK_CAP_ACK socket gets it (request header only, then TLVs)."""
    payload = struct.pack("=i", -err) + _HDR.pack(20, req_type, 0, seq, 0)
    flags = NLM_F_CAPPED
    if extack is not None or offset is not None:
        flags |= NLM_F_ACK_TLVS
        if extack is not None:
            text = extack.encode() + b"\0"
            payload += struct.pack("=HH", 4 + len(text), NLMSGERR_ATTR_MSG) + text + bytes(-len(text) & 3)
        if offset is not None:
            payload += struct.pack("=HHI", 8, NLMSGERR_ATTR_OFFS, offset)
    return message(NLMSG_ERROR, flags, seq, payload)


def obj(i: int, flags: int = NLM_F_MULTI, seq: int = SEQ) -> bytes:
    return message(0x100, flags, seq, bytes([2, 0, 0, 0]) + i.to_bytes(4, "little") * (i % 5))


# ---------------------------------------------------------------- the rules, stated plainly

def expected(kind: str, stream: list[bytes], fence: int | None = None) -> list[tuple]:
    """The events the rules give for ``stream`` (one message per item), normalised."""
    out: list[tuple] = []
    interrupted = False
    for raw in stream:
        (m,) = parse_messages(raw)
        if kind == "batch":
            if m.seq == fence:
                if m.type == NLMSG_ERROR:
                    return [*out, ("done",)]
                continue
        elif m.seq != SEQ:
            continue
        if kind == "dump" and m.flags & NLM_F_DUMP_INTR:
            interrupted = True
        if m.type == NLMSG_ERROR:
            err = -struct.unpack_from("=i", m.payload)[0]
            if kind == "batch":
                out.append(("ack", m.seq) if err == 0 else ("refused", err, m.seq))
                continue
            if err:
                return [*out, ("refused", err, m.seq), ("done",)]
            if kind == "do":
                return [*out, ("ack", m.seq), ("done",)]
            return [*out, ("interrupted",) if interrupted else ("done",)]
        if m.type == NLMSG_DONE:
            if kind == "batch":
                continue
            err = -struct.unpack_from("=i", m.payload)[0]
            if err > 0:
                return [*out, ("refused", err, m.seq), ("done",)]
            return [*out, ("interrupted",) if interrupted else ("done",)]
        if m.type < 0x10:
            continue
        out.append(("msg", m.type, m.flags, m.seq, bytes(m.payload)))
    return out


def normalise(events: list) -> list[tuple]:
    out: list[tuple] = []
    for ev in events:
        if isinstance(ev, Messages):
            out += [("msg", m.type, m.flags, m.seq, bytes(m.payload)) for m in parse_messages(ev.data)]
        elif isinstance(ev, Message):
            out.append(("msg", ev.type, ev.flags, ev.seq, bytes(ev.payload)))
        elif isinstance(ev, Ack):
            out.append(("ack", ev.seq))
        elif isinstance(ev, Refused):
            out.append(("refused", ev.error.errno, ev.error.seq))
        elif ev is DONE:
            out.append(("done",))
        elif ev is INTERRUPTED:
            out.append(("interrupted",))
        else:
            raise AssertionError(ev)
    return out


def make(kind: str, whole: bool = False, batch: MessageWriter | None = None,
         fence: int | None = None) -> Exchange:
    if kind == "do":
        return Exchange.do(SEQ)
    if kind == "dump":
        return Exchange.dump(SEQ, whole=whole)
    assert batch is not None
    return Exchange.batch(batch, fence)


def run(ex: Exchange, datagrams: list[bytes]) -> list[tuple]:
    events: list = []
    for d in datagrams:
        if ex.over:
            break
        events += ex.feed(d)
    return normalise(events)


def run_hot_loop(ex: Exchange, datagrams: list[bytes]) -> list[tuple]:
    """The way conntrack's listing walks: plain objects decoded inline, the rest handed over."""
    events: list = []
    for d in datagrams:
        view = memoryview(d)
        off = 0
        while off < len(view) and not ex.over:
            length, mtype, flags, mseq, pid = _HDR.unpack_from(view, off)
            if mseq != ex.seq or mtype < 0x10 or flags & NLM_F_DUMP_INTR:
                events += ex.message(view, off)
            else:
                events.append(Message(mtype, flags, mseq, pid, view[off + 16 : off + length]))
            off += (length + 3) & ~3
    return normalise(events)


def split(stream: list[bytes], cuts: list[int]) -> list[bytes]:
    """The messages grouped into datagrams, a new datagram after each message index in ``cuts``."""
    datagrams, current = [], b""
    for i, raw in enumerate(stream):
        current += raw
        if i in cuts:
            datagrams.append(current)
            current = b""
    if current:
        datagrams.append(current)
    return datagrams


# ---------------------------------------------------------------- generated streams

def _body(kind: str) -> st.SearchStrategy[bytes]:
    foreign = st.builds(lambda i: obj(i, seq=OTHER), st.integers(0, 9)) | st.just(error(0, seq=OTHER))
    plain = st.builds(obj, st.integers(0, 50))
    intr = st.builds(lambda i: obj(i, NLM_F_MULTI | NLM_F_DUMP_INTR), st.integers(0, 50))
    noop = st.just(message(NLMSG_NOOP))
    if kind == "batch":
        return plain | foreign | noop | st.just(error(0)) | st.builds(lambda e: error(e), st.sampled_from(
            [errno.ENOENT, errno.EINVAL, errno.EEXIST]))
    if kind == "dump":
        return plain | intr | foreign | noop
    return plain | foreign | noop


def _end(kind: str) -> st.SearchStrategy[list[bytes]]:
    if kind == "dump":
        return st.sampled_from([[done()], [done(errno.EINTR)], [error(errno.EINVAL)],
                                [done(0, NLM_F_MULTI | NLM_F_DUMP_INTR)], [error(0)]])
    if kind == "do":
        return st.sampled_from([[error(0)], [error(errno.EEXIST)], [done()]])
    return st.just([error(0, seq=SEQ + 1000)])  # the fence's ACK


@st.composite
def streams(draw: st.DrawFn, kind: str) -> tuple[list[bytes], list[int], list[int]]:
    body = draw(st.lists(_body(kind), max_size=30))
    # whatever follows the end is not read (the next exchange's, or garbage)
    stream = body + draw(_end(kind)) + draw(st.lists(_body(kind), max_size=3))
    cuts_a = draw(st.lists(st.integers(0, len(stream)), max_size=len(stream)))
    cuts_b = draw(st.lists(st.integers(0, len(stream)), max_size=len(stream)))
    return stream, cuts_a, cuts_b


def _batch() -> Batch:
    b = Batch()
    w_seq = SEQ
    b.seqs.append((w_seq, len(b.buffer)))  # stands for a message with SEQ
    return b


@pytest.mark.parametrize("kind", ["do", "dump", "batch"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_events_do_not_depend_on_how_messages_are_split(kind: str, data: st.DataObject) -> None:
    stream, cuts_a, cuts_b = data.draw(streams(kind))
    want = expected(kind, stream, fence=SEQ + 1000)
    fence = SEQ + 1000 if kind == "batch" else None
    a = run(make(kind, batch=_batch(), fence=fence), split(stream, cuts_a))
    b = run(make(kind, batch=_batch(), fence=fence), split(stream, cuts_b))
    one = run(make(kind, batch=_batch(), fence=fence), [b"".join(stream)])
    assert a == b == one == want
    if kind == "dump":
        assert run(make(kind, whole=True), split(stream, cuts_a)) == want
        assert run_hot_loop(make(kind), split(stream, cuts_b)) == want


# ---------------------------------------------------------------- the rules, one by one

def test_dump_intr_on_any_message_ends_the_dump_interrupted_after_done() -> None:
    ex = Exchange.dump(SEQ)
    events = ex.feed(obj(1) + obj(2, NLM_F_MULTI | NLM_F_DUMP_INTR) + obj(3))
    assert [type(e) for e in events] == [Message] * 3  # the messages still come
    assert not ex.over and ex.interrupted
    assert ex.feed(done()) == [INTERRUPTED] and ex.over


def test_dump_intr_on_done_alone_counts() -> None:
    ex = Exchange.dump(SEQ)
    ex.feed(obj(1))
    assert ex.feed(done(0, NLM_F_MULTI | NLM_F_DUMP_INTR)) == [INTERRUPTED]


def test_dump_intr_of_another_sequence_does_not_count() -> None:
    ex = Exchange.dump(SEQ)
    assert ex.feed(obj(1, NLM_F_MULTI | NLM_F_DUMP_INTR, seq=OTHER) + obj(2) + done()) [-1] is DONE


def test_whole_mode_gives_runs_without_done() -> None:
    ex = Exchange.dump(SEQ, whole=True)
    events = ex.feed(obj(1) + obj(2) + message(NLMSG_NOOP) + obj(3) + done())
    assert [type(e) for e in events] == [Messages, Messages, type(DONE)]
    assert bytes(events[0].data) == obj(1) + obj(2) and bytes(events[1].data) == obj(3)


def test_done_with_errno_and_extack_is_a_refusal() -> None:
    text = b"dump failed\0"
    payload = struct.pack("=i", -errno.EINVAL) + struct.pack("=HH", 4 + len(text), NLMSGERR_ATTR_MSG) + text
    ex = Exchange.dump(SEQ, what="rules")
    refused, end = ex.feed(message(NLMSG_DONE, NLM_F_MULTI | NLM_F_ACK_TLVS, SEQ, payload))
    assert isinstance(refused, Refused) and end is DONE
    assert str(refused.error) == "rules: Invalid argument (EINVAL): dump failed"


def test_batch_refusals_map_to_positions_and_names_and_the_fence_ends_it() -> None:
    b = Batch()
    seqs = []
    for _ in range(3):
        seqs.append(b.begin(0x1000))
        b.end()
    b.close()
    ex = Exchange.batch(b, fence=999, what=["first", "second", "third"])
    events = ex.feed(error(errno.ENOENT, seq=seqs[1], extack="no such table") + error(0, seq=999))
    assert ex.over and events[-1] is DONE
    (refused,) = [e for e in events if isinstance(e, Refused)]
    assert refused.error.index == 1
    assert str(refused.error) == "second: No such file or directory (ENOENT): no such table"


def test_batch_without_fence_never_ends_by_itself() -> None:
    b = Batch()
    b.close()
    ex = Exchange.batch(b)
    assert ex.feed(error(0, seq=b.begin_seq)) == [Ack(b.begin_seq)] and not ex.over


def test_malformed_datagrams_raise_decode_error() -> None:
    with pytest.raises(DecodeError):
        Exchange.dump(SEQ).feed(obj(1)[:-3])
    with pytest.raises(DecodeError):
        Exchange.dump(SEQ).feed(obj(1) + b"\1\0\0")


# ---------------------------------------------------------------- extended-ACK paths

def _rule_request() -> tuple[bytes, dict[str, int]]:
    """A NEWRULE with payload, counter, cmp; the offsets of a few attributes in it."""
    w = MessageWriter()
    w.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, N.MSG["newrule"]), family=1)
    N.RULE.encode(w, {"table": "t", "chain": "c", "expressions": [
        {"name": "payload", "data": {"dreg": 1, "base": 1, "offset": 9, "len": 1}},
        {"name": "counter", "data": {}},
        {"name": "cmp", "data": {"sreg": 1, "op": 0, "data": {"value": b"\x06"}}},
    ]})
    w.end()
    raw = bytes(w.buffer)
    value = raw.index(struct.pack("=HH", 5, 1) + b"\x06")  # NFTA_DATA_VALUE, one byte
    cmp_elem = raw.index(b"cmp\0") - 8  # NFTA_LIST_ELEM, then NFTA_EXPR_NAME's header
    chain = raw.index(b"c\0", 24) - 4
    return raw, {"value": value, "cmp": cmp_elem, "chain": chain, "cmp_data": value - 4}


@pytest.mark.parametrize("where,path", [
    ("value", "expressions[2] (cmp) > data > value"),
    ("cmp_data", "expressions[2] (cmp) > data"),
    ("cmp", "expressions[2] (cmp)"),
    ("chain", "chain"),
])
def test_extack_offset_becomes_the_attribute_path(where: str, path: str) -> None:
    raw, offsets = _rule_request()
    describe = lambda t: message_attrs(12, t)  # noqa: E731 - NETLINK_NETFILTER
    b = Batch()
    b.seqs.append((SEQ, len(b.buffer)))
    b.buffer += raw
    ex = Exchange.batch(b, describe=describe)
    (refused,) = ex.feed(error(errno.EINVAL, seq=SEQ, offset=offsets[where]))
    assert refused.error.path == path
    assert str(refused.error) == f"rule: {path}: Invalid argument (EINVAL)"


def test_extack_path_of_a_conntrack_request() -> None:
    w = MessageWriter()
    w.begin(C.CT_NEW, family=2)
    C.CT.encode(w, {"tuple_orig": {"ip": {"v4_src": bytes(4), "v4_dst": bytes(4)},
                                   "proto": {"num": 17, "src_port": 1, "dst_port": 2}}})
    w.end()
    raw = bytes(w.buffer)
    sport = raw.index(struct.pack("=HH", 6, 2) + b"\0\1")
    ex = Exchange.do(SEQ, raw, what="conntrack entry", describe=lambda t: message_attrs(12, t))
    refused, _ = ex.feed(error(errno.EINVAL, offset=sport, req_type=C.CT_NEW))
    assert refused.error.path == "tuple_orig > proto > src_port"
    # inside an attribute's value: that attribute; past the attributes, or in a
    # message no spec describes: no path
    ex = Exchange.do(SEQ, raw, describe=lambda t: message_attrs(12, t))
    assert ex.feed(error(errno.EINVAL, offset=sport + 5))[0].error.path == "tuple_orig > proto > src_port"
    ex = Exchange.do(SEQ, raw, describe=lambda t: message_attrs(12, t))
    assert ex.feed(error(errno.EINVAL, offset=len(raw) + 8))[0].error.path is None
    ex = Exchange.do(SEQ, raw, describe=lambda t: None)
    assert ex.feed(error(errno.EINVAL, offset=sport))[0].error.path is None
