"""Byte-level mutations of real messages, for the codecs' fuzz tests (netlink, conntrackd's)."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], order: str = "little") -> bytes:
    """One of ``seeds`` with 1-4 edits: a flipped byte, inserted or deleted bytes, the tail
    cut, or a 16-bit word (lengths, types) set in byte ``order``."""
    data = bytearray(draw(st.sampled_from(list(seeds))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "set16"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "cut":
            del data[pos:]
        elif op == "set16" and len(data) >= pos + 2:
            data[pos : pos + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, order)  # type: ignore[arg-type]
    return bytes(data)
