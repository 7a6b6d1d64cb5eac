"""Fuzz and round-trip properties of the sync codec.

Malformed datagrams (captured conntrackd datagrams with bytes flipped,
inserted, deleted or cut, and random bytes) raise DecodeError and nothing
else; what decodes re-encodes to a datagram that decodes the same.  Entries
go to the wire and back unchanged.
"""

from __future__ import annotations

import socket

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nfkit.conntrack.model import Entry, Status, Tuple
from nfkit.errors import DecodeError
from nfkit.ha import convert, wire
from nfkit.ha.spec import Flag, MsgType
from tests import mutations
from tests.ha.test_wire import captured

SEEDS = [dg for name in ("ftfw.hex", "ftfw-flush.hex", "ftfw-batched.hex", "notrack.hex",
                                         "notrack-flush.hex", "extras.hex", "expect.hex") for dg in captured(name)]


def mutated() -> st.SearchStrategy[bytes]:
    return mutations.mutated(SEEDS, 'big')


@settings(max_examples=10_000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(mutated(), mutated(), mutated(), st.binary(max_size=64)))
@example(data=bytes.fromhex("130000b86b13422d000c0000c0000202c6336402000500020600000000080003"
                            "d9440015000c0004c6336402c6336401000500060600000000080007000007d0"
                            "000c0008ffffffffffffffff0005000a060000000008000b0000ffff0008000c"
                            "0000012c0008000d000000000008000e00000000000c000f0000000000000000"
                            "00050011060000000008001007d0000000080012000000010008001301807000"
                            "001600146e61742d666f6c6c6f772d6d6173746572000000"))
def test_malformed_datagrams_raise_only_decode_error(data: bytes) -> None:
    try:
        msgs = wire.decode_datagram(data)
    except DecodeError:
        return
    assert wire.decode_datagram(wire.encode_datagram(msgs)) == msgs
    for m in msgs:
        if isinstance(m, wire.StateMessage) and m.is_ct:
            try:
                convert.to_entry(m)
            except DecodeError:
                pass


def _addr(family: int) -> st.SearchStrategy[str]:
    width = 4 if family == socket.AF_INET else 16
    return st.binary(min_size=width, max_size=width).map(lambda b: socket.inet_ntop(family, b))


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    family = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6]))
    proto = draw(st.sampled_from([6, 17, 132, 33, 136, 47, 1 if family == socket.AF_INET else 58]))
    src, dst = draw(_addr(family)), draw(_addr(family))
    port = st.integers(0, 0xFFFF)
    if proto in (1, 58):
        itype = draw(st.sampled_from([8, 0, 13, 3] if proto == 1 else [128, 129, 1]))
        orig = Tuple(src, dst, proto, 0, 0, itype, draw(st.integers(0, 255)), draw(port))
    elif proto == 47:
        orig = Tuple(src, dst, proto)
    else:
        orig = Tuple(src, dst, proto, draw(port), draw(port))
    status = draw(st.integers(0, 0xFFFF))
    reply = orig.mirror()
    if status & Status.SRC_NAT_DONE:
        reply = reply._replace(dst=draw(_addr(family)))
        if proto in (6, 17, 132, 33, 136):
            reply = reply._replace(dport=draw(port))
    if status & Status.DST_NAT_DONE:
        reply = reply._replace(src=draw(_addr(family)))
        if proto in (6, 17, 132, 33, 136):
            reply = reply._replace(sport=draw(port))
    return Entry(
        orig, reply, status=status,
        state=draw(st.integers(0, 9)) if proto == 6 else None,
        timeout=draw(st.none() | st.integers(0, 0xFFFFFFFF)),
        mark=draw(st.integers(0, 0xFFFFFFFF)),
        zone=draw(st.none() | st.integers(0, 0xFFFF)),
        labels=draw(st.none() | st.integers(1, (1 << 128) - 1)),
        helper=draw(st.none() | st.sampled_from(["ftp", "sip", "tftp", "irc", "pptp", "netbios-ns"])),
    )


@settings(max_examples=2000, deadline=None, database=None)
@given(entries(), st.sampled_from([MsgType.CT_NEW, MsgType.CT_UPD, MsgType.CT_DEL]),
       st.integers(0, 0xFFFFFFFF), st.sampled_from([Flag(0), Flag.HELLO, Flag.HELLO | Flag.HELLO_BACK]))
def test_entry_to_wire_and_back_is_the_same_entry(entry: Entry, mtype: MsgType, seq: int, flags: Flag) -> None:
    msg = convert.from_entry(entry, mtype, seq=seq, flags=flags)
    (back,) = wire.decode_datagram(wire.encode_message(msg))
    assert back == msg
    assert isinstance(back, wire.StateMessage) and convert.unmodelled(back) == {}
    assert convert.to_entry(back) == entry
