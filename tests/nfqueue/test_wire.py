"""The nfqueue codec: packets decoded, verdicts and config encoded, both ways against the tables."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfkit.errors import DecodeError, InputError
from nfkit.netlink.codec import MessageWriter, parse_messages
from nfkit.netlink.specs import nfqueue as Q
from nfkit.nfqueue import wire


def packet_message(queue: int, pid: int, payload: bytes, mark: int | None = None,
                   extra: list[tuple[int, bytes]] = ()) -> bytes:  # type: ignore[assignment]
    w = MessageWriter()
    w.begin(Q.PACKET, 0, family=2, res_id=queue)
    w.binary(1, wire.packet_hdr(pid, 0x0800, 1))
    if mark is not None:
        w.be32(3, mark)
    w.be32(5, 7)
    w.be32(12, 2)
    for t, b in extra:
        w.binary(t, b)
    w.binary(10, payload)
    w.end()
    return bytes(w.buffer)


@given(queue=st.integers(0, 0xFFFF), pid=st.integers(0, 0xFFFFFFFF), payload=st.binary(max_size=300),
       mark=st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)))
def test_packet_decodes_as_the_generic_table_does(queue, pid, payload, mark) -> None:  # type: ignore[no-untyped-def]
    (msg,) = parse_messages(packet_message(queue, pid, payload, mark))
    pkt = wire.parse_packet(msg)
    generic = Q.QUEUE.decode(msg.attrs)
    assert (pkt.queue, pkt.id, pkt.hw_protocol, pkt.hook) == (queue, pid, 0x0800, 1)
    assert generic["packet_hdr"] == wire.packet_hdr(pid, 0x0800, 1)
    assert pkt.payload == generic["payload"] == payload
    assert pkt.mark == generic.get("mark", 0) == (mark or 0)
    assert pkt.indev == generic["ifindex_indev"] == 7
    assert pkt.ct_info == generic["ct_info"] == 2
    assert not pkt.gso


def test_packet_extras_ct_and_gso() -> None:
    ct = MessageWriter()
    ct.be32(8, 0x55)  # CTA_MARK inside NFQA_CT
    raw = packet_message(1, 9, b"x", extra=[(11, bytes(ct.buffer)), (14, struct.pack(">I", Q.NFQA_SKB_GSO)),
                                            (20, b"\xaa" * 14)])
    w = bytearray(raw)
    (msg,) = parse_messages(w)
    pkt = wire.parse_packet(msg)
    assert pkt.ct == {"mark": 0x55}
    assert pkt.gso
    assert pkt.extra == {"l2hdr": b"\xaa" * 14}


@pytest.mark.parametrize("cut", [1, 5, 9])
def test_damaged_packet_is_a_decode_error(cut: int) -> None:
    raw = bytearray(packet_message(1, 9, b"abcdef"))
    # the last attribute claims more bytes than the message holds
    struct.pack_into("=I", raw, 0, len(raw))
    struct.pack_into("=H", raw, len(raw) - 12, 4 + 6 + cut + 8)
    (msg,) = parse_messages(raw)
    with pytest.raises(DecodeError):
        wire.parse_packet(msg)


def test_packet_without_header_is_refused() -> None:
    w = MessageWriter()
    w.begin(Q.PACKET, 0, res_id=1)
    w.binary(10, b"abc")
    w.end()
    (msg,) = parse_messages(w.buffer)
    with pytest.raises(DecodeError, match="PACKET_HDR"):
        wire.parse_packet(msg)


@given(queue=st.integers(0, 0xFFFF), pid=st.integers(0, 0xFFFFFFFF), verdict=st.sampled_from([0, 1, 4]),
       mark=st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)), batch=st.booleans())
def test_verdict_round_trips(queue, pid, verdict, mark, batch) -> None:  # type: ignore[no-untyped-def]
    raw = wire.verdict_bytes(queue, pid, verdict, mark, batch=batch, seq=5)
    (msg,) = parse_messages(raw)
    assert msg.type == (Q.VERDICT_BATCH if batch else Q.VERDICT)
    assert msg.seq == 5 and len(raw) == (40 if mark is not None else 32)
    assert wire.parse_verdict(msg) == (queue, pid, verdict, mark, batch)


def test_verdict_bytes_match_the_writers_encoding() -> None:
    """The precompiled verdict equals the same message written attribute by attribute."""
    w = MessageWriter()
    w.begin(Q.VERDICT, family=0, res_id=3, seq=1)
    w.binary(Q.QUEUE.number("verdict_hdr"), struct.pack(">II", 1, 42))
    w.be32(Q.QUEUE.number("mark"), 0xABCD)
    w.end()
    assert wire.verdict_bytes(3, 42, 1, 0xABCD, seq=1) == bytes(w.buffer)


def test_config_messages() -> None:
    w = MessageWriter()
    wire.config_command(w, 7, Q.NFQNL_CFG_CMD_BIND)
    wire.config_params(w, 7, Q.NFQNL_COPY_PACKET, 1500, maxlen=4096,
                       flags=Q.NFQA_CFG_F_FAIL_OPEN | Q.NFQA_CFG_F_GSO)
    bind, params = parse_messages(w.buffer)
    assert bind.res_id == params.res_id == 7 and bind.type == params.type == Q.CONFIG
    assert Q.CFG.decode(bind.attrs) == {"cmd": wire.config_cmd_struct(1)}
    assert Q.CFG.decode(params.attrs) == {
        "params": wire.config_params_struct(1500, 2), "queue_maxlen": 4096, "mask": 0x1F, "flags": 5}
    assert len(Q.CFG.decode(params.attrs)["params"]) == 5  # packed struct, as the kernel reads it


@pytest.mark.parametrize("call,message", [
    (lambda w: wire.config_command(w, 70000, 1), "queue 70000"),
    (lambda w: wire.config_params(w, 1, 9), "copy mode 9"),
    (lambda w: wire.config_params(w, 1, 2, flags=0x100), "unknown bits"),
])
def test_bad_config_is_one_clear_error(call, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=message):
        call(MessageWriter())


@given(queue=st.integers(0, 0xFFFF), pid=st.integers(0, 0xFFFFFFFF), payload=st.binary(max_size=300),
       mark=st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)),
       cap=st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)),
       gso=st.booleans(), hwaddr=st.booleans(), after=st.booleans())
def test_layouts_decode_as_the_walk_does(queue, pid, payload, mark, cap, gso, hwaddr, after) -> None:  # type: ignore[no-untyped-def]
    """`PacketLayouts` gives `parse_packet`'s fields, for a new layout and a learnt one,
    a payload that is not last included; several layouts live side by side."""
    extra = []
    if hwaddr:
        extra.append((9, b"\x00\x06\x00\x00" + bytes(range(8))))
    if cap is not None:
        extra.append((13, struct.pack(">I", cap)))
    if gso:
        extra.append((14, struct.pack(">I", Q.NFQA_SKB_GSO)))
    layouts = wire.PacketLayouts()
    shapes = [packet_message(queue, pid, payload, mark, extra),
              packet_message(queue, pid ^ 1, payload + b"z", None, []),
              packet_message(queue, pid, payload, mark, extra)]
    if after:  # an attribute after the payload: no layout, the walk every time
        w = MessageWriter()
        w.begin(Q.PACKET, 0, family=2, res_id=queue)
        w.binary(1, wire.packet_hdr(pid, 0x0800, 1))
        w.binary(10, payload)
        w.be32(3, 5)
        w.end()
        shapes.append(bytes(w.buffer))
    for raw in shapes * 2:
        (msg,) = parse_messages(raw)
        pkt = wire.parse_packet(msg)
        q, i, m, c, skb, start, stop = layouts.decode(raw, 16, len(raw))
        assert (q, i, m, skb) == (pkt.queue, pkt.id, pkt.mark, pkt.skb_info)
        assert c == (-1 if pkt.cap_len is None else pkt.cap_len)
        assert raw[start:stop] == pkt.payload
    assert 1 <= len(layouts.layouts) <= 2


@pytest.mark.parametrize("cut", [17, 20, 24, 30])
def test_layouts_refuse_a_damaged_packet(cut: int) -> None:
    raw = packet_message(1, 2, b"payload", 3)
    layouts = wire.PacketLayouts()
    layouts.decode(raw, 16, len(raw))  # learnt
    for r in (raw, raw[:cut]):
        if len(r) == len(raw):
            continue
        bad = bytearray(r)
        with pytest.raises(DecodeError):
            layouts.decode(bad, 16, len(bad))


@given(queue=st.integers(0, 0xFFFF), marks=st.lists(st.tuples(st.integers(0, 0xFFFFFFFF),
                                                               st.integers(0, 0xFFFFFFFF)), min_size=1, max_size=8))
def test_verdict_block_slots_are_accept_verdicts_with_their_id_and_mark(queue, marks) -> None:  # type: ignore[no-untyped-def]
    """`verdict_block`: each slot, once its id and mark are written, is the message
    `verdict_bytes` makes for an accept with that mark."""
    block = wire.verdict_block(queue, 8)
    for k, (pid, mark) in enumerate(marks):
        wire.VERDICT_ID_MARK.pack_into(block, k * wire.VERDICT_STRIDE + wire.VERDICT_ID_MARK_AT, pid,
                                       wire.MARK_HEADER, mark)
    sent = bytes(block[:len(marks) * wire.VERDICT_STRIDE])
    assert sent == b"".join(wire.verdict_bytes(queue, pid, wire.NF_ACCEPT, mark) for pid, mark in marks)


def test_packets_of_datagrams_as_decode_gives_them_and_refusals() -> None:
    """`PacketLayouts.packets`: several datagrams (one holding two messages), each packet as
    `decode` gives it; an NLMSG_ERROR's errno listed, an ACK's not; a cut tail ignored."""
    raws = [packet_message(3, 10, b"a" * 30, 5), packet_message(3, 11, b"b" * 7)]
    err = struct.pack("=IHHII", 36, 2, 0, 0, 0) + struct.pack("=i", -2) + bytes(16)
    ack = struct.pack("=IHHII", 36, 2, 0, 0, 0) + struct.pack("=i", 0) + bytes(16)
    two = raws[0] + bytes(-len(raws[0]) % 4) + raws[1]
    buf = bytearray(two + bytes(-len(two) % 4) + err + ack + raws[1][:20])
    at = len(two) + (-len(two) % 4)
    layouts = wire.PacketLayouts()
    pkts, errors = layouts.packets(buf, [(0, len(two)), (at, 36), (at + 36, 36), (at + 72, 20)])
    want = []
    for raw in raws:
        _, pid, mark, cap, _, start, stop = wire.PacketLayouts().decode(raw, 16, len(raw))
        want.append((pid, mark, cap, bytes(raw[start:stop])))
    assert [(p, m, c, bytes(buf[a:b])) for p, m, c, a, b in pkts] == want
    assert errors == [2]
