"""`pcap_records` (the record chain walked by numpy, many blocks at once) against `pcap_offsets`.

The vectorised walk guesses where records start in each block and keeps a
guess only where the chain from the file's first record meets it: these
tests give it payloads made to look like record headers (so guesses are
wrong, or right for a while), damage at the end, both byte orders and
nanosecond files, and blocks small enough that every capture has many.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfkit.nfgrep.capture import MAX_RECORD, pcap_offsets, pcap_records

SEC0 = 1_700_000_000

# a payload piece: random bytes, or bytes that read as a record header (a plausible length)
FAKE = st.tuples(st.integers(0, 5), st.integers(0, 999_999), st.integers(0, 300), st.integers(0, 64))
PIECE = st.one_of(st.binary(max_size=40), FAKE, st.just(b"\x00" * 16))
RECORD = st.tuples(st.integers(0, 3), st.integers(0, 999_999), st.lists(PIECE, max_size=6))
DAMAGE = st.sampled_from(["none", "header", "packet", "length"])


def _file(records: list[tuple], little: bool, damage: str,  # type: ignore[type-arg]
          nano: bool = False) -> bytes:
    e = "<" if little else ">"
    out = [struct.pack(e + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for dsec, frac, pieces in records:
        if nano:  # nanoseconds: the sub-second's high byte is not zero
            frac = frac * 1000 + 999
        payload = b"".join(p if isinstance(p, bytes)
                           else struct.pack(e + "IIII", SEC0 + p[0], p[1], p[2], p[2] + p[3])
                           for p in pieces)
        out.append(struct.pack(e + "IIII", SEC0 + dsec, frac, len(payload), len(payload)) + payload)
    if damage == "header":
        out.append(b"\x01\x02\x03")
    elif damage == "packet":
        out.append(struct.pack(e + "IIII", SEC0, 0, 100, 100) + b"x" * 20)
    elif damage == "length":
        out.append(struct.pack(e + "IIII", SEC0, 0, MAX_RECORD + 1, MAX_RECORD + 1) + b"x" * 64)
    return b"".join(out)


def _walk(data: bytes, little: bool, span: int, block: int, window: int,
          divisor: float = 1e6) -> tuple[list[int], int, bool]:
    pos, got, stopped = 24, [], False
    while not stopped:
        offsets, pos, stopped = pcap_records(data, pos, pos + span, little, divisor, block=block,
                                             window=window)
        assert offsets.dtype == np.int64
        got.extend(offsets.tolist())
    return got, pos, stopped


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(RECORD, max_size=60), little=st.booleans(), damage=DAMAGE,
       span=st.sampled_from([17, 100, 1000, 1 << 30]), block=st.sampled_from([8, 33, 64, 250, 1 << 18]),
       window=st.sampled_from([16, 64, 300]), nano=st.booleans())
def test_the_vectorised_walk_finds_the_records_the_sequential_one_finds(
        records: list[tuple], little: bool, damage: str, span: int, block: int,  # type: ignore[type-arg]
        window: int, nano: bool) -> None:
    data = _file(records, little, damage, nano)
    want = pcap_offsets(data, 24, 1 << 40, little)
    assert _walk(data, little, span, block, window, 1e9 if nano else 1e6) == want
    assert len(want[0]) == len(records)


def test_a_chain_through_headers_made_of_payload(tmp_path: Path) -> None:
    """Every payload is itself a chain of plausible headers: each block's guess is wrong."""
    records = []
    for i in range(400):
        fakes = [(0, 1000 * i % 999_999, 12 + (i % 7), 0) for _ in range(1 + i % 5)]
        records.append((i % 2, 5 * i, fakes))
    data = _file(records, True, "none")
    want = pcap_offsets(data, 24, 1 << 40, True)
    for block in (40, 97, 512):
        assert _walk(data, True, 1 << 30, block, 64) == want


def test_a_mapped_file_is_walked_like_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    path.write_bytes(_file([(0, i, [b"y" * (i % 90)]) for i in range(3000)], True, "packet"))
    with open(path, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            assert _walk(data, True, 50_000, 4096, 256) == pcap_offsets(data, 24, 1 << 40, True)
        finally:
            data.close()


def test_blocks_are_walked_from_their_guesses_in_micro_and_nanosecond_files(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No block of a plain file falls back to the one-record-at-a-time walk (a nanosecond
    file's sub-second has a high byte: its guesses were all refused once)."""
    from nfkit.nfgrep import capture

    fallbacks = []
    sequential = capture.pcap_offsets

    def counted(*args: object, **kw: object) -> tuple[list[int], int, bool]:
        fallbacks.append(args[1])
        return sequential(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(capture, "pcap_offsets", counted)
    for nano in (False, True):
        data = _file([(i % 2, 7 * i, [b"z" * (40 + i % 300)]) for i in range(3000)], True, "none", nano)
        want = sequential(data, 24, 1 << 40, True)
        assert _walk(data, True, 1 << 30, 4096, 512, 1e9 if nano else 1e6) == want
        assert fallbacks == [], nano
