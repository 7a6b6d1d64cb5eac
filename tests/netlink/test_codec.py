"""The sans-I/O codec: round trips for every attribute kind, alignment, flags, errors."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.errors import DecodeError
from nfkit.netlink import codec
from nfkit.netlink.codec import Attr, AttrSet, Batch, Kind, MessageWriter, parse_messages
from nfkit.netlink.consts import (
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    NLA_F_NESTED,
    NLA_F_NET_BYTEORDER,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLMSG_ERROR,
)
from nfkit.netlink.specs import ctnetlink

INNER = AttrSet("inner", {1: Attr("a", Kind.U32), 2: Attr("b", Kind.STRING)})
ALL = AttrSet("all", {
    1: Attr("u8", Kind.U8), 2: Attr("u16", Kind.U16), 3: Attr("u32", Kind.U32),
    4: Attr("u64", Kind.U64), 5: Attr("s8", Kind.S8), 6: Attr("s16", Kind.S16),
    7: Attr("s32", Kind.S32), 8: Attr("s64", Kind.S64), 9: Attr("be16", Kind.BE16),
    10: Attr("be32", Kind.BE32), 11: Attr("be64", Kind.BE64), 12: Attr("str", Kind.STRING),
    13: Attr("strn", Kind.STRING_NONUL), 14: Attr("bin", Kind.BINARY), 15: Attr("flag", Kind.FLAG),
    16: Attr("nest", Kind.NESTED, INNER), 17: Attr("array", Kind.NESTED_ARRAY, INNER),
})

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40)
values = st.fixed_dictionaries({}, optional={
    "u8": st.integers(0, 2**8 - 1), "u16": st.integers(0, 2**16 - 1),
    "u32": st.integers(0, 2**32 - 1), "u64": st.integers(0, 2**64 - 1),
    "s8": st.integers(-(2**7), 2**7 - 1), "s16": st.integers(-(2**15), 2**15 - 1),
    "s32": st.integers(-(2**31), 2**31 - 1), "s64": st.integers(-(2**63), 2**63 - 1),
    "be16": st.integers(0, 2**16 - 1), "be32": st.integers(0, 2**32 - 1),
    "be64": st.integers(0, 2**64 - 1), "str": text, "strn": text,
    "bin": st.binary(max_size=40), "flag": st.just(True),
    "nest": st.fixed_dictionaries({"a": st.integers(0, 2**32 - 1), "b": text}),
    "array": st.lists(st.fixed_dictionaries({"a": st.integers(0, 2**32 - 1)}), max_size=5),
})


@given(values, st.integers(0, 255), st.integers(0, 0xFFFF))
def test_every_kind_round_trips(vals, family, res_id):
    w = MessageWriter()
    seq = w.begin(0x0100, family=family, res_id=res_id)
    ALL.encode(w, vals)
    w.end()
    assert len(w.buffer) % 4 == 0
    (msg,) = parse_messages(w.buffer)
    assert (msg.seq, msg.family, msg.res_id) == (seq, family, res_id)
    assert ALL.decode(msg.attrs) == vals
    lazy = ALL.lazy(msg.attrs)
    for name, value in vals.items():
        assert lazy[name] == value


def test_wire_layout_is_the_kernels():
    w = MessageWriter()
    w.begin(0x0102, flags=1, family=2, res_id=0x0A, seq=7)
    w.u8(1, 0xAB)
    w.be16(2, 0x1234, flag=True)
    with w.nest(3):
        w.string(1, "abc")
    w.end()
    b = bytes(w.buffer)
    assert struct.unpack_from("=IHHII", b) == (len(b), 0x0102, 1, 7, 0)
    assert b[16:20] == bytes([2, 0, 0, 0x0A])  # nfgenmsg: res_id big endian
    assert b[20:28] == struct.pack("=HH", 5, 1) + b"\xab\0\0\0"  # u8 padded to 4
    assert b[28:36] == struct.pack("=HH", 6, 2 | NLA_F_NET_BYTEORDER) + b"\x12\x34\0\0"
    assert struct.unpack_from("=HH", b, 36) == (12, 3 | NLA_F_NESTED)
    assert b[40:48] == struct.pack("=HH", 8, 1) + b"abc\0"


def test_flags_are_masked_and_unknown_attributes_kept():
    w = MessageWriter()
    w.begin(0x100)
    w.be32(10, 99, flag=True)
    w.binary(200, b"\x01\x02\x03")
    w.end()
    (msg,) = parse_messages(w.buffer)
    assert ALL.decode(msg.attrs) == {"be32": 99, 200: b"\x01\x02\x03"}
    assert ALL.lazy(msg.attrs)[200] == b"\x01\x02\x03"


def test_decoding_does_not_copy_payloads():
    w = MessageWriter()
    w.begin(0x100)
    w.binary(14, b"x" * 100)
    w.end()
    buf = bytearray(w.buffer)
    (msg,) = parse_messages(memoryview(buf))
    lazy = ALL.lazy(msg.attrs)
    view = lazy.raw("bin")
    assert view.obj is buf  # a view into the receive buffer itself
    buf[-1:] = b"y"
    assert bytes(view)[-1:] == b"y"


def test_several_messages_in_one_buffer_and_batch_framing():
    b = Batch()
    seqs = []
    for i in range(3):
        seqs.append(b.begin(0x0A00 | 6, family=1))
        b.u32(1, i)
        b.end()
    b.close()
    msgs = list(parse_messages(b.buffer))
    assert [m.type for m in msgs] == [NFNL_MSG_BATCH_BEGIN, 0x0A06, 0x0A06, 0x0A06, NFNL_MSG_BATCH_END]
    assert msgs[0].res_id == 10 and msgs[-1].res_id == 10
    assert [b.index_of(s) for s in seqs] == [0, 1, 2]
    assert b.count() == 3


def test_template_patches_seq_and_values():
    w = MessageWriter()
    w.begin(0x100)
    off = w.here() + 4
    w.be16(9, 0)
    w.string(12, "same")
    w.end()
    tpl = codec.Template(w.message(0), [(off, ">H")])
    out = MessageWriter()
    seqs = [tpl.emit(out, port) for port in (80, 443)]
    msgs = list(parse_messages(out.buffer))
    assert [m.seq for m in msgs] == seqs
    assert [ALL.decode(m.attrs) for m in msgs] == [{"be16": 80, "str": "same"}, {"be16": 443, "str": "same"}]


def _error_message(errno: int, extack: str | None, offset: int | None, capped: bool) -> bytes:
    request = struct.pack("=IHHII", 24, 0x0A03, 5, 42, 0) + b"\x01\x00\x00\x00" + b"\0" * 4
    tlvs = b""
    if extack is not None:
        s = extack.encode() + b"\0"
        tlvs += struct.pack("=HH", 4 + len(s), 1) + s + b"\0" * ((4 - len(s) % 4) % 4)
    if offset is not None:
        tlvs += struct.pack("=HHI", 8, 2, offset)
    body = struct.pack("=i", -errno) + (request[:16] if capped else request) + tlvs
    flags = (NLM_F_CAPPED if capped else 0) | (NLM_F_ACK_TLVS if tlvs else 0)
    return struct.pack("=IHHII", 16 + len(body), NLMSG_ERROR, flags, 42, 0) + body


@pytest.mark.parametrize("capped", [True, False])
def test_error_with_extended_ack(capped):
    (msg,) = parse_messages(_error_message(2, "Chain not found", 20, capped))
    reply = codec.parse_error(msg)
    assert (reply.errno, reply.seq, reply.request_type) == (2, 42, 0x0A03)
    assert (reply.extack, reply.offset) == ("Chain not found", 20)


def test_ack_is_errno_zero():
    (msg,) = parse_messages(_error_message(0, None, None, True))
    assert codec.parse_error(msg).errno == 0


@pytest.mark.parametrize("data", [
    b"\x10\x00",                                   # truncated header
    struct.pack("=IHHII", 64, 0x100, 0, 0, 0),     # length past the buffer
    struct.pack("=IHHII", 8, 0x100, 0, 0, 0),      # length below the header
])
def test_malformed_messages_raise_decode_error(data):
    with pytest.raises(DecodeError):
        list(parse_messages(data))


def test_bad_nesting_raises_decode_error():
    # a nest claiming 12 bytes holding an attribute claiming 20
    inner = struct.pack("=HH", 20, 1) + b"\0" * 4
    outer = struct.pack("=HH", 4 + len(inner), 1 | NLA_F_NESTED) + inner
    with pytest.raises(DecodeError):
        ctnetlink.CT.decode(memoryview(outer))


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_wrong_sized_integers_raise_decode_error(payload):
    data = struct.pack("=HH", 4 + len(payload), 3) + payload + b"\0" * ((4 - len(payload) % 4) % 4)
    if len(payload) == 4:
        assert isinstance(ctnetlink.CT.decode(memoryview(data))["status"], int)
    else:
        with pytest.raises(DecodeError):
            ctnetlink.CT.decode(memoryview(data))


@settings(max_examples=300)
@given(st.lists(values, min_size=1, max_size=12))
def test_shape_decoder_equals_generic_decoder(batch):
    from nfkit.netlink.shapes import shape_decoder

    dec = shape_decoder(ALL)
    w = MessageWriter()
    for vals in batch * 2:  # every layout twice: learned, then compiled
        w.begin(0x100)
        ALL.encode(w, vals)
        w.binary(300, b"unknown")  # unknown attributes survive compiled decoding too
        w.end()
    msgs = list(parse_messages(w.buffer))
    for msg in msgs:
        assert dec(msg.attrs) == ALL.decode(msg.attrs)
    assert dec.hits >= len(batch)


def test_shape_decoder_same_length_other_layout():
    from nfkit.netlink.shapes import shape_decoder

    dec = shape_decoder(ALL)
    w = MessageWriter()
    w.begin(0x100)
    w.u32(3, 1)
    w.end()
    w.begin(0x100)
    w.be32(10, 2)  # same length, other attribute
    w.end()
    w.begin(0x100)
    w.u32(3, 7)
    w.end()
    a, b, c = (dec(m.attrs) for m in parse_messages(w.buffer))
    assert (a, b, c) == ({"u32": 1}, {"be32": 2}, {"u32": 7})
    assert dec.hits == 1


@settings(max_examples=200)
@given(st.binary(min_size=8, max_size=64), st.data())
def test_exact_layout_runs_read_the_slots_and_stop_at_the_first_other_stream(sample, data):
    """`Layout.exact`: streams equal to a sample but at its slots are recognised a run at a
    time (`run`), each slot read as bytes; the run stops at the first stream that differs
    anywhere else (the fast listing's templates stand on this)."""
    from nfkit.netlink.shapes import Layout

    n = len(sample)
    cuts = sorted(data.draw(st.sets(st.integers(0, n), max_size=6)))
    slots = [(a, b - a) for a, b in zip(cuts[::2], cuts[1::2], strict=False) if b > a]
    lay = Layout.exact(sample, slots)
    count = data.draw(st.integers(0, 40))
    streams = []
    for _ in range(count):
        s = bytearray(sample)
        for off, width in slots:
            s[off:off + width] = data.draw(st.binary(min_size=width, max_size=width))
        streams.append(bytes(s))
    fixed = [i for i in range(n) if not any(o <= i < o + w for o, w in slots)]
    tail = b""
    if fixed and data.draw(st.booleans()):  # a stream that differs outside the slots
        other = bytearray(sample)
        other[data.draw(st.sampled_from(fixed))] ^= 0xFF
        tail = bytes(other)
    buf = b"pre" + b"".join(streams) + tail
    got, columns = lay.run(buf, 3)
    assert got == count
    assert columns == ([tuple(s[o:o + w] for s in streams) for o, w in slots] if count else [])
    if tail:
        assert lay.run(buf, 3 + count * n) == (0, [])


def test_exact_layout_refuses_overlapping_slots():
    from nfkit.netlink.shapes import Layout

    with pytest.raises(ValueError):
        Layout.exact(bytes(16), [(0, 8), (4, 4)])


@settings(max_examples=200)
@given(st.lists(st.tuples(values, st.binary(max_size=40), st.booleans()), min_size=1, max_size=6))
def test_find_tail_keys_layouts_on_what_precedes_a_trailing_attribute(batch):
    """`Shapes.find_tail`: a stream whose last attribute ("bin") has any length is read by the
    layout of what precedes it (one layout for every length of the tail), values and the
    tail's span as the generic decoder sees them; a tail not last, or missing, takes a
    layout of the whole length; a damaged tail is refused."""
    from nfkit.netlink.shapes import Layout, Shapes

    shapes: Shapes[Layout] = Shapes(ALL, Layout, tail="bin", head=4)
    msgs = []
    for vals, tail, last in batch * 2:  # every layout twice, the second time with a longer tail
        for extra in (b"", b"xyz"):
            w = MessageWriter()
            w.begin(0x100, family=2, res_id=7)
            ALL.encode(w, {k: v for k, v in vals.items() if k != "bin"})
            w.binary(14, tail + extra)
            if not last:
                w.u8(1, 5)
            w.end()
            msgs.append((bytes(w.buffer), tail + extra))
    for raw, tail in msgs:
        n = len(raw)
        lay, v, start, stop = shapes.find_tail(raw, 16, n - 16)
        want = ALL.decode(memoryview(raw)[20:])
        assert raw[start:stop] == tail == want["bin"]
        for key in ("u8", "be32", "str"):
            if key in want:
                got = v[lay.index[(key,)]]
                assert (got.rstrip(b"\0").decode() if key == "str" else got) == want[key]
    assert len(shapes.trailing) <= len(batch)
    for (raw, _), (_, _, last) in zip(msgs[::2], batch * 2, strict=True):
        if last:
            lay = shapes.find_tail(raw, 16, len(raw) - 16)[0]
            assert lay in shapes.trailing
            bad = bytearray(raw)
            struct.pack_into("=H", bad, 16 + lay.length - 4, 0xFFF0)  # the tail runs past the stream
            with pytest.raises(DecodeError):
                shapes.find_tail(bad, 16, len(bad) - 16)
