"""Interop with a stock conntrackd 1.4.7, both ways, over UDP on a veth sync link.

conntrackd -> nfkit: conntrackd runs on the lab's firewall (which does SNAT,
DNAT and ct mark); real TCP, UDP, ICMP and IPv6 traffic crosses it; a UDP
socket in the peer namespace receives what conntrackd sends and nfkit decodes
it: every entry of the firewall's kernel table comes out of the datagrams with
the same tuples (NAT rebuilt), mark, TCP state and status, and deletions too.

nfkit -> conntrackd: nfkit encodes the firewall's entries and sends them to a
stock conntrackd (DisableExternalCache on) in the peer namespace, which puts
them in its kernel table: same tuples, NAT bindings, mark and TCP state.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nfkit.conntrack.model import Entry, Status
from nfkit.conntrack.table import ConntrackTable
from nfkit.errors import DecodeError
from nfkit.ha import convert, wire
from nfkit.ha.ftfw import Apply, FtfwSession
from nfkit.ha.spec import Flag, MsgType
from tests.ha.ha_lab import FW_SYNC, PEER_SYNC, forwarded, make_traffic, sync_lab, table_in, udp_socket
from tests.ha.stock import SYNC_PORT, StockConntrackd

pytestmark = pytest.mark.kernel

# what the kernel's table and the synced copy must agree on (timeouts tick, ids are per node)
STATUS_SYNCED = Status.SEEN_REPLY | Status.ASSURED | Status.CONFIRMED | Status.SRC_NAT | Status.DST_NAT


def same_flow(a: Entry | None, b: Entry) -> bool:
    return (a is not None and a.orig == b.orig and a.reply == b.reply and a.mark == b.mark
            and a.state == b.state and a.status & STATUS_SYNCED == b.status & STATUS_SYNCED)


class Receiver:
    """Decodes what arrives on ``sock``: the last entry per key, the keys deleted, the counts."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(0.1)
        self.entries: dict[object, Entry] = {}
        self.deleted: set[object] = set()
        self.types: dict[MsgType, int] = {}
        self.flags = Flag(0)
        self.malformed = 0

    def poll(self) -> None:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        try:
            msgs = wire.decode_datagram(data)
        except DecodeError:
            self.malformed += 1
            return
        self.take(msgs)

    def take(self, msgs: list[wire.Message]) -> None:
        for m in msgs:
            self.flags |= m.flags
            if isinstance(m, wire.StateMessage):
                self.types[m.type] = self.types.get(m.type, 0) + 1
                e = convert.to_entry(m)
                if m.type is MsgType.CT_DEL:
                    self.deleted.add(e.key)
                    self.entries.pop(e.key, None)
                else:
                    self.entries[e.key] = e

    def until(self, done: Callable[[], bool], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out"
            self.poll()


@pytest.mark.parametrize("mode", ["FTFW", "NOTRACK"])
def test_stock_conntrackd_datagrams_reproduce_its_kernel_table(tmp_path: Path, mode: str) -> None:
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        rx = Receiver(udp_socket(peer, PEER_SYNC, SYNC_PORT))
        StockConntrackd(fw, tmp_path, mode=mode, own=FW_SYNC, peer=PEER_SYNC, interface="sync0")
        make_traffic(lab)
        table = table_in(fw)
        want = forwarded(list(table.entries()))
        protos = sorted((e.family, e.proto) for e in want.values())
        assert protos == [(2, 1), (2, 6), (2, 6), (2, 6), (2, 17), (10, 6), (10, 58)]
        assert any(e.state == 3 for e in want.values())  # the held connection
        assert all(e.nat and e.mark == 42 for e in want.values())
        rx.until(lambda: all(same_flow(rx.entries.get(k), e) for k, e in want.items()))
        assert rx.malformed == 0
        assert rx.types.get(MsgType.CT_UPD) and (mode != "FTFW" or rx.flags & Flag.HELLO)
        table.flush()
        rx.until(lambda: set(want) <= rx.deleted)
        assert rx.malformed == 0


def _peer_view(table: ConntrackTable) -> dict[object, Entry]:
    return forwarded(list(table.entries()))


@pytest.mark.parametrize("mode", ["NOTRACK", "FTFW"])
def test_nfkit_datagrams_land_in_a_stock_conntrackds_kernel_table(tmp_path: Path, mode: str) -> None:
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        daemon = StockConntrackd(peer, tmp_path, mode=mode, own=PEER_SYNC, peer=FW_SYNC, interface="sync0")
        make_traffic(lab)
        want = forwarded(list(table_in(fw).entries()))
        assert len(want) == 7
        tx = udp_socket(fw, FW_SYNC)
        seq = int(time.time())
        news = [convert.from_entry(e, MsgType.CT_NEW, seq=seq + i) for i, e in enumerate(want.values())]
        for dg in wire.datagrams(news):
            tx.sendto(dg, (PEER_SYNC, SYNC_PORT))
        peer_table = table_in(peer)
        deadline = time.monotonic() + 10
        while True:
            got = _peer_view(peer_table)
            if set(got) == set(want) and all(same_flow(got[k], e) for k, e in want.items()):
                break
            assert time.monotonic() < deadline, (sorted(map(str, got.values())), daemon.ctl("-s"))
            time.sleep(0.1)
        seq += len(news)
        dels = [convert.from_entry(e, MsgType.CT_DEL, seq=seq + i) for i, e in enumerate(want.values())]
        for dg in wire.datagrams(dels):
            tx.sendto(dg, (PEER_SYNC, SYNC_PORT))
        deadline = time.monotonic() + 10
        while _peer_view(peer_table):
            assert time.monotonic() < deadline, daemon.ctl("-s")
            time.sleep(0.1)
        stats = daemon.ctl("-s")
        assert re.search(r"external inject:\s+connections created:\s+7\s+failed:\s+0", stats), stats
        assert re.search(r"connections destroyed:\s+7\s+failed:\s+0", stats), stats
        assert re.search(r"\b0 Malformed msgs", stats), stats


class FtfwNode(Receiver):
    """An nfkit FTFW session on ``sock``: what arrives goes through the session, what the
    session says goes back to the peer; accepted entries are kept as in `Receiver`."""

    def __init__(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        super().__init__(sock)
        self.session = FtfwSession(seq=int(time.time()))
        self.peer = peer
        self.plain = 0  # messages from the peer without HELLO: the handshake is over

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll()

    def poll(self) -> None:
        now = time.monotonic()
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            data = b""
        if data:
            try:
                msgs = wire.decode_datagram(data)
            except DecodeError:
                self.malformed += 1
                msgs = []
            for m in msgs:
                self.plain += not m.flags & Flag.HELLO
                for ev in self.session.receive(m):
                    if isinstance(ev, Apply):
                        self.take([ev.message])
        self.session.tick(now)
        for dg in wire.datagrams(self.session.transmit(now)):
            self.sock.sendto(dg, self.peer)


def test_stock_conntrackd_ftfw_resends_what_an_nft_rule_dropped_when_nfkit_nacks(tmp_path: Path) -> None:
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        node = FtfwNode(udp_socket(peer, PEER_SYNC, SYNC_PORT), (FW_SYNC, SYNC_PORT))
        daemon = StockConntrackd(fw, tmp_path, mode="FTFW", own=FW_SYNC, peer=PEER_SYNC, interface="sync0")
        node.until(lambda: node.plain > 0)  # conntrackd heard our HELLO_BACK: gaps now count
        assert node.session.hello.name == "DONE"
        peer.run(["nft", "-f", "-"], input="table inet syncloss { chain input { type filter hook input "
                 "priority 0; udp dport 3780 counter drop; }; }")
        make_traffic(lab)
        want = forwarded(list(table_in(fw).entries()))
        node.pump(0.5)
        dropped = int(re.findall(r"packets (\d+)", peer.run("nft list table inet syncloss").stdout)[0])
        peer.run("nft delete table inet syncloss")
        assert dropped > 0 and not node.entries  # everything the traffic made was lost
        healed = time.monotonic()
        node.until(lambda: all(same_flow(node.entries.get(k), e) for k, e in want.items()))
        healed = time.monotonic() - healed
        stats = node.session.stats
        assert stats.lost > 0 and stats.nacks_sent > 0 and node.malformed == 0
        print(f"dropped {dropped} datagrams; all entries back {healed:.2f} s after the link healed; {stats}")
        assert re.search(r"\b0 Malformed msgs", daemon.ctl("-s"))


def test_nfkit_ftfw_resends_what_an_nft_rule_dropped_when_stock_conntrackd_nacks(tmp_path: Path) -> None:
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        daemon = StockConntrackd(peer, tmp_path, mode="FTFW", own=PEER_SYNC, peer=FW_SYNC, interface="sync0")
        node = FtfwNode(udp_socket(fw, FW_SYNC, SYNC_PORT), (PEER_SYNC, SYNC_PORT))
        node.until(lambda: node.plain > 0 and node.session.hello.name == "DONE")
        make_traffic(lab)
        want = forwarded(list(table_in(fw).entries()))
        peer.run(["nft", "-f", "-"], input="table inet syncloss { chain input { type filter hook input "
                 "priority 0; udp dport 3780 counter drop; }; }")
        for e in want.values():
            node.session.enqueue(e.key, convert.from_entry(e, MsgType.CT_NEW))
        node.pump(0.5)
        dropped = int(re.findall(r"packets (\d+)", peer.run("nft list table inet syncloss").stdout)[0])
        peer.run("nft delete table inet syncloss")
        peer_table = table_in(peer)
        assert dropped > 0 and not _peer_view(peer_table)
        healed = time.monotonic()
        node.until(lambda: set(got := _peer_view(peer_table)) == set(want)
                   and all(same_flow(got[k], e) for k, e in want.items()))
        healed = time.monotonic() - healed
        stats = node.session.stats
        assert stats.nacks_received > 0 and stats.resent >= len(want)
        assert re.search(r"\b0 Malformed msgs", daemon.ctl("-s"))
        print(f"dropped {dropped} datagrams; all entries in the peer's kernel {healed:.2f} s after the link "
              f"healed; {stats}")


def test_resync_request_makes_stock_conntrackd_send_its_whole_table(tmp_path: Path) -> None:
    """The lab's flows are made while nobody listens on the sync link (all lost); nfkit
    starts, shakes hands, asks for a RESYNC, and gets every one of them."""
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        daemon = StockConntrackd(fw, tmp_path, mode="FTFW", own=FW_SYNC, peer=PEER_SYNC, interface="sync0")
        make_traffic(lab)
        want = forwarded(list(table_in(fw).entries()))
        node = FtfwNode(udp_socket(peer, PEER_SYNC, SYNC_PORT), (FW_SYNC, SYNC_PORT))
        node.until(lambda: node.plain > 0 and node.session.hello.name == "DONE")
        assert not node.entries
        node.session.request_resync()
        node.until(lambda: all(same_flow(node.entries.get(k), e) for k, e in want.items()))
        assert "resync requested by other node" in daemon.log()
