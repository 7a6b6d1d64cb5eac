"""Fuzz: malformed input raises DecodeError and nothing else, over 100,000 inputs.

Inputs are random bytes and, mostly, real conntrack messages with bytes
flipped, inserted, deleted or the buffer cut short: those get past the first
length checks and reach the nested decoders.
"""

from __future__ import annotations

import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfkit.errors import DecodeError
from nfkit.netlink import codec
from nfkit.netlink.codec import MessageWriter, parse_messages
from nfkit.netlink.consts import NLMSG_ERROR
from nfkit.netlink.shapes import shape_decoder
from nfkit.netlink.specs import ctnetlink


def _seed_message() -> bytes:
    w = MessageWriter()
    w.begin(0x0100, family=socket.AF_INET)
    ctnetlink.CT.encode(w, {
        "tuple_orig": {"ip": {"v4_src": bytes(4), "v4_dst": bytes(4)},
                       "proto": {"num": 6, "src_port": 1, "dst_port": 2}},
        "status": 8, "timeout": 30, "mark": 1, "zone": 0,
        "protoinfo": {"tcp": {"state": 3, "flags_original": b"\0\0"}},
        "counters_orig": {"packets": 1, "bytes": 60},
        "help": {"name": "ftp"}, "labels": bytes(16),
    })
    w.end()
    return bytes(w.buffer)


SEED = _seed_message()
SHAPES = shape_decoder(ctnetlink.CT)  # learns layouts across the run: compiled paths get fuzzed too


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SEED)
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
            data[pos : pos + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "little")
    return bytes(data)


def decode_everything(data: bytes) -> None:
    for msg in parse_messages(data):
        if msg.type == NLMSG_ERROR:
            codec.parse_error(msg)
            continue
        decoded = ctnetlink.CT.decode(msg.attrs)
        assert SHAPES(msg.attrs) == decoded
        lazy = ctnetlink.CT.lazy(msg.attrs)
        for key in decoded:
            lazy[key]


@settings(max_examples=100_000, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.one_of(mutated(), mutated(), mutated(), st.binary(max_size=96)))
def test_malformed_input_raises_only_decode_error(data):
    try:
        decode_everything(data)
    except DecodeError:
        pass
