"""TCP stream reassembly: order, retransmissions, overlaps (first wins), holes, SYN/FIN/RST, bounds."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.nfgrep.reassembly import TH_FIN, TH_RST, TH_SYN, Reassembler

REQUEST = (b"GET /index.html HTTP/1.1\r\nHost: www.example.org\r\n"
           b"User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n")


def feed(stream, segments) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join(stream.segment(seq, flags, data) for seq, flags, data in segments)


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.integers(0, 2**32 - 1), st.randoms(use_true_random=False),
       st.integers(0, 30))
def test_one_byte_segments_in_any_order_give_the_unsplit_stream(
    data: bytes, isn: int, rnd: random.Random, duplicates: int
) -> None:
    stream = Reassembler().stream()
    segs = [((isn + 1 + i) & 0xFFFFFFFF, 0, data[i:i + 1]) for i in range(len(data))]
    segs += [rnd.choice(segs) for _ in range(duplicates)]  # retransmissions
    rnd.shuffle(segs)
    got = stream.segment(isn, TH_SYN, b"") + feed(stream, segs)
    assert got == data
    assert stream.pending == 0 and stream.owner.buffered == 0 and stream.gaps == 0


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=2000), st.integers(0, 2**32 - 1), st.randoms(use_true_random=False))
def test_random_cuts_overlapping_resends_and_wraparound(data: bytes, isn: int, rnd: random.Random) -> None:
    stream = Reassembler().stream()
    segs = []
    for _ in range(rnd.randrange(1, 30)):
        a = rnd.randrange(len(data))
        b = rnd.randrange(a + 1, len(data) + 1)
        segs.append(((isn + 1 + a) & 0xFFFFFFFF, 0, data[a:b]))
    segs.append(((isn + 1) & 0xFFFFFFFF, 0, data))  # make sure every byte is sent once
    rnd.shuffle(segs)
    assert stream.segment(isn, TH_SYN, b"") + feed(stream, segs) == data


def test_overlap_first_wins() -> None:
    stream = Reassembler().stream()
    stream.segment(999, TH_SYN, b"")
    assert stream.segment(1005, 0, b"WORLD") == b""  # waits: bytes 5..9
    assert stream.segment(1003, 0, b"xxxxxxxyy") == b""  # only 3, 4, 10 and 11 are new
    assert stream.segment(1000, 0, b"HEL") == b"HELxxWORLDyy"
    # delivered bytes win too
    assert stream.segment(1000, 0, b"JELLO-----ZZZ") == b"Z"


def test_syn_payload_fin_and_late_data() -> None:
    stream = Reassembler().stream()
    assert stream.segment(100, TH_SYN, b"hi") == b"hi"  # TCP fast open: data on the SYN
    assert stream.segment(106, TH_FIN, b"") == b""  # FIN ahead of a hole
    assert not stream.closed
    assert stream.segment(103, 0, b"abc") == b"abc"
    assert stream.closed
    assert stream.segment(106, 0, b"late") == b""


def test_data_beyond_the_fin_is_cut() -> None:
    stream = Reassembler().stream()
    stream.segment(0, TH_SYN, b"")
    assert stream.segment(4, 0, b"tail-after-fin") == b""
    assert stream.segment(1, TH_FIN, b"abc") == b"abc"
    assert stream.closed and stream.owner.buffered == 0


def test_rst_ends_the_stream_and_frees_the_buffer() -> None:
    owner = Reassembler()
    stream = owner.stream()
    stream.segment(0, TH_SYN, b"")
    stream.segment(50, 0, b"x" * 100)
    assert owner.buffered == 100
    assert stream.segment(1, TH_RST, b"") == b""
    assert stream.closed and owner.buffered == 0
    assert stream.segment(1, 0, b"y" * 49) == b""


def test_midstream_start_without_syn() -> None:
    stream = Reassembler().stream()
    assert stream.segment(5000, 0, b"abc") == b"abc"
    assert stream.segment(4990, 0, b"0123456789") == b""  # before the start: ignored
    assert stream.segment(5003, 0, b"def") == b"def"


def test_per_stream_bound_gives_up_the_hole() -> None:
    owner = Reassembler(max_buffer=1000)
    stream = owner.stream()
    stream.segment(0, TH_SYN, b"")
    # byte 1..100 never arrives; later segments pile up until the bound
    got = b""
    for i in range(20):
        got += stream.segment(101 + i * 100, 0, bytes([65 + i]) * 100)
    assert stream.gaps == 1 and owner.gaps == 1
    assert stream.pending <= 1000
    assert got == b"".join(bytes([65 + i]) * 100 for i in range(20))
    assert stream.delivered == 2100


def test_global_bound_holds_over_many_streams() -> None:
    owner = Reassembler(max_buffer=10_000, max_total=5_000)
    streams = [owner.stream() for _ in range(20)]
    for s in streams:
        s.segment(0, TH_SYN, b"")
        for k in range(5):
            s.segment(1000 + k * 100, 0, b"z" * 100)  # all behind a hole
            assert owner.buffered <= 5_000 + 100
    assert sum(s.gaps for s in streams) > 0
    assert owner.buffered == sum(s.pending for s in streams)
