"""A restarted peer is told the whole table, whatever number it starts at.

conntrackd numbers its messages from the Unix time of its first one, and a
quiet conntrackd sends about one message a second (ALIVE): the first number of
a restarted conntrackd can be exactly the one after the last number of its
previous run.  The sign of a restart is a HELLO from a peer that had finished
its handshake (stopped saying HELLO), not a gap in the numbering.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from nfkit.conntrack.table import ConntrackTable
from nfkit.ha import wire
from nfkit.ha.engine import Options, Peer, SyncEngine
from nfkit.ha.ftfw import FtfwSession
from nfkit.ha.spec import NO_FLAGS, Flag, MsgType
from nfkit.lab import Namespace


def alive(seq: int, flags: Flag = NO_FLAGS) -> bytes:
    return wire.encode_datagram([wire.ControlMessage(Flag.ALIVE | flags, seq)])


@contextmanager
def engine_and_peer(netns: Namespace) -> Iterator[tuple[SyncEngine, Peer, list[bytes]]]:
    """An engine holding one entry, and one peer whose datagrams land in the list."""
    with netns.enter():
        table = ConntrackTable()
    engine = SyncEngine(table, Options(hello_bulk=True))
    sent: list[bytes] = []
    peer = Peer("peer", FtfwSession(seq=500), lambda d: sent.append(d) or True)
    engine.add_peer(peer)
    engine.internal[("an entry",)] = wire.StateMessage(
        MsgType.CT_NEW, {"ipv4": ("192.0.2.1", "198.51.100.1"), "l4proto": 17, "port": (1000, 53)}).body
    try:
        yield engine, peer, sent
    finally:
        engine.close()
        table.close()


def test_a_peer_restarting_on_the_next_number_still_gets_the_table(netns: Namespace) -> None:
    with engine_and_peer(netns) as (engine, peer, sent):
        t0 = 1_700_000_000
        engine.on_datagram(peer, alive(t0, Flag.HELLO))  # the peer starts: HELLO
        assert _states(sent) == 1  # it is told the table
        engine.on_datagram(peer, alive(t0 + 1, Flag.HELLO))  # still saying HELLO: nothing new
        engine.on_datagram(peer, alive(t0 + 2))  # it heard HELLO_BACK: quiet ALIVEs
        engine.on_datagram(peer, alive(t0 + 3))
        sent.clear()
        # restarted: its first number is the Unix time, which happens to follow t0 + 3
        engine.on_datagram(peer, alive(t0 + 4, Flag.HELLO))
        assert _states(sent) == 1, "a restarted peer whose numbering runs on was not sent the table"


def test_a_peer_stopped_before_its_handshake_finished_gets_the_table_again(netns: Namespace) -> None:
    """A peer stopped while it still said HELLO (it never sent a message without) and
    restarted on the next number: only its silence tells the restart (the fresh machine's
    flake of test_a_restarted_peer_gets_the_whole_table[nfkit-stock])."""
    with engine_and_peer(netns) as (engine, peer, sent):
        t0 = 1_700_000_000
        engine.on_datagram(peer, alive(t0, Flag.HELLO), now=100.0)
        engine.on_datagram(peer, alive(t0 + 1, Flag.HELLO), now=101.0)  # HELLO again, a second on
        assert _states(sent) == 1  # told once
        sent.clear()
        engine.on_datagram(peer, alive(t0 + 2, Flag.HELLO), now=106.0)  # stopped, back 5 s later
        assert _states(sent) == 1, "a peer restarted before its handshake finished was not sent the table"


def _states(datagrams: list[bytes]) -> int:
    return sum(isinstance(m, wire.StateMessage) for d in datagrams for m in wire.decode_datagram(d))
