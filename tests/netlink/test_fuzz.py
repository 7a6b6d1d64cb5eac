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
from tests import mutations


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


def mutated() -> st.SearchStrategy[bytes]:
    return mutations.mutated([SEED], 'little')


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
