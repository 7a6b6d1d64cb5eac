"""`nfkit ha -C FILE` with a Cluster block: N nodes active-active over conntrackd's sync.

Owns: the cluster's sockets (one UDP sync socket speaking FTFW (or NOTRACK) to
every peer, one session per peer pair, each one a conntrackd-compatible
two-node session; heartbeats over UDP on the sync link and as raw Ethernet
frames on the inside segment), the nf_tables rules that make this node serve
its buckets only (`ruleset`, installed in table ``ip nfkit_cluster`` in one
commit each time the bucket set changes) and answer ARP for the cluster's
addresses only when it is the one that answers (``arp nfkit_cluster_arp``),
and the cluster's part of the status.
Must not know: the protocol's bytes (engine, sessions), who is a member
(`nfkit.ha.membership`), which node serves a bucket (`nfkit.ha.buckets`).
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import selectors
import socket
import struct
import time
from typing import Any

from nfkit.errors import CapabilityError
from nfkit.ha.conf import ClusterConf, Conf
from nfkit.ha.daemon import TICK, HaDaemon, make_session
from nfkit.ha.engine import Peer, SyncEngine
from nfkit.ha.membership import Membership
from nfkit.ha.transport import SyncSocket
from nfkit.nftables import Ruleset
from nfkit.service.owntable import Owned

log = logging.getLogger("nfkit.ha")

TABLE = Owned("ip", "nfkit_cluster")
ARP_TABLE = Owned("arp", "nfkit_cluster_arp")
ETH_P_NFKIT = 0x88B5  # IEEE 802 local experimental ethertype: heartbeats on the inside segment
SIOCGIFFLAGS = 0x8913
IFF_UP, IFF_RUNNING = 0x1, 0x40


def _hex_ip(addr: str) -> str:
    return hex(int(ipaddress.IPv4Address(addr)))


def ruleset(cc: ClusterConf, serves: frozenset[int]) -> Ruleset:
    """Table ip nfkit_cluster for a node serving the buckets ``serves``.

    Frames to the cluster's MAC reach every node (the segment floods them); after
    conntrack (priority -150 > -200) a node marks the packets of the flows it serves
    PACKET_HOST, so they are forwarded, and drops the others.  The bucket of a flow
    is jhash(original source address . source port) mod Buckets, the same in both
    directions and on every node.  A new connection arriving on the outside at the
    cluster's address can only be a reply whose state has not arrived yet: dropped
    (answering it would reset the connection).  SNAT to the outside address uses
    this node's own port range."""
    i, o, mac = cc.inside.interface, cc.outside.interface, cc.mac
    lo, hi = cc.me.ports
    mine = (f'    iifname {{ "{i}", "{o}" }} ether daddr {mac} jhash ct original ip saddr . ct original proto-src '
            f'mod {cc.buckets} seed {cc.hash_seed:#x} {{ {", ".join(map(str, sorted(serves)))} }} '
            "meta pkttype set host accept\n") if serves else ""
    text = f"""table ip nfkit_cluster {{
  chain prerouting {{ type filter hook prerouting priority -150; policy accept;
    iifname "{o}" ct state new ip daddr {cc.outside.address} drop
{mine}    iifname {{ "{i}", "{o}" }} ether daddr {mac} drop
  }}
  chain postrouting {{ type nat hook postrouting priority 100; policy accept;
    iifname "{i}" oifname "{o}" meta l4proto {{ tcp, udp }} snat to {cc.outside.address}:{lo}-{hi}
    iifname "{i}" oifname "{o}" snat to {cc.outside.address}
  }}
}}
"""
    return _load(text)


def arp_ruleset(cc: ClusterConf, answers: bool) -> Ruleset:
    """Table arp nfkit_cluster_arp: every ARP packet this node sends from a cluster address
    carries the cluster's MAC as its sender (so no neighbour ever learns a node's own MAC
    for it); requests for the cluster's addresses are dropped unless this node answers."""
    addrs = f"{{ {_hex_ip(cc.inside.address)}, {_hex_ip(cc.outside.address)} }}"
    mac = "0x" + cc.mac.replace(":", "")
    # ARP for Ethernet/IPv4: operation at byte 6, sender MAC at 8, sender IP at 14, target IP at 24
    silent = "" if answers else f"    @nh,48,16 1 @nh,192,32 {addrs} drop\n"
    text = f"""table arp nfkit_cluster_arp {{
  chain input {{ type filter hook input priority 0; policy accept;
{silent}  }}
  chain output {{ type filter hook output priority 0; policy accept;
    @nh,112,32 {addrs} @nh,64,48 set {mac}
  }}
}}
"""
    return _load(text)


def _load(text: str) -> Ruleset:
    from nfkit.nftables.jsonfmt import ruleset_from_commands
    from nfkit.nftables.nfttext import load_nft

    return ruleset_from_commands(list(load_nft(text, "nfkit_cluster")))


def links_up(names: list[str]) -> bool:
    """Every interface in ``names`` up with carrier (IFF_UP and IFF_RUNNING)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for name in names:
            try:
                raw = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", name.encode(), 0))
            except OSError:
                return False
            flags = struct.unpack("16sH14x", raw)[1]
            if flags & (IFF_UP | IFF_RUNNING) != IFF_UP | IFF_RUNNING:
                return False
        return True
    finally:
        s.close()


class ClusterDaemon(HaDaemon):
    name = "ha-cluster"

    def __init__(self, conf: Conf) -> None:
        assert conf.cluster is not None
        self.cc: ClusterConf = conf.cluster
        super().__init__(conf)
        self.by_address: dict[str, Peer] = {}
        self.membership = Membership(self.cc, time.monotonic())
        self.serves: frozenset[int] | None = None  # None: nothing installed yet
        self.answers: bool | None = None
        self.hb_udp: socket.socket | None = None
        self.hb_raw: socket.socket | None = None
        self.next_heartbeat = 0.0
        self.ruleset_commits = 0
        self.takeovers: list[dict[str, Any]] = []
        self.unknown_senders = 0
        self.resyncs_sent = 0

    # ---- setup -----------------------------------------------------------------

    def add_peers(self, engine: SyncEngine, sock: SyncSocket) -> None:
        """One session per peer pair: each peer gets its own FTFW (or NOTRACK) session."""
        port = self.conf.transport.port
        for node in self.cc.peers:
            def send(dg: bytes, dest: tuple[str, int] = (node.address, port)) -> bool:
                try:
                    sock.sock.sendto(dg, dest)
                    return True
                except OSError:
                    return False
            peer = Peer(f"node {node.number} {node.address}:{port}", make_session(self.conf), send)
            engine.add_peer(peer)
            self.by_address[node.address] = peer
        self.peer = engine.peers[0]

    def start(self, selector: selectors.BaseSelector) -> None:
        cc = self.cc
        # the rules first, serving nothing: no frame to the cluster's MAC is forwarded and
        # no ARP answered before this node knows who else is there
        self._install(frozenset(), False)
        super().start(selector)
        t = self.conf.transport
        self.hb_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.hb_raw = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_NFKIT))
        try:
            if t.interface:
                self.hb_udp.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, t.interface.encode())
            self.hb_udp.bind((cc.me.address, cc.heartbeat_port))
            self.hb_raw.bind((cc.inside.interface, ETH_P_NFKIT))
        except OSError as exc:
            raise CapabilityError(f"cluster heartbeats ({cc.me.address} port {cc.heartbeat_port}, "
                                  f"{cc.inside.interface}): {exc.strerror or exc}") from None
        for s in (self.hb_udp, self.hb_raw):
            s.setblocking(False)
        selector.register(self.hb_udp.fileno(), selectors.EVENT_READ, self._on_heartbeats)
        selector.register(self.hb_raw.fileno(), selectors.EVENT_READ, self._on_heartbeats)
        log.info("cluster node %d of %s: %d buckets, heartbeat every %.0f ms, dead after %.0f ms",
                 cc.this_node, sorted(cc.nodes), cc.buckets, cc.heartbeat_interval * 1000, cc.dead_time * 1000)

    def stop(self) -> None:
        for s in (self.hb_udp, self.hb_raw):
            if s is not None:
                s.close()
        try:
            # both tables stay, serving nothing: without them the kernel would answer ARP for
            # the cluster's addresses with this node's own MAC, and confirm entries for the
            # frames it receives for the others (a reply to the cluster's address is delivered
            # locally, so conntrack keeps it as a new flow the wrong way round) (docs/ha.md)
            TABLE.replace(ruleset(self.cc, frozenset()))
            ARP_TABLE.replace(arp_ruleset(self.cc, False))
        except Exception as exc:  # noqa: BLE001 - teardown goes on
            log.warning("cluster rules not removed: %s", exc)
        super().stop()

    # ---- input -----------------------------------------------------------------

    def _on_sync(self) -> None:
        assert self.sync is not None and self.engine is not None
        for data, addr in self.sync.receive():
            peer = self.by_address.get(addr[0]) if isinstance(addr, tuple) else None
            if peer is None:
                self.unknown_senders += 1
                continue
            self.engine.on_datagram(peer, data)

    def _take_heartbeats(self) -> None:
        """Every heartbeat waiting on either path, read before anything is decided: after a
        stall (this process not scheduled for a while) a peer's silence is judged only once what
        it sent meanwhile is in (else a live peer whose heartbeat sat unread is taken for dead,
        and its buckets served twice)."""
        m = self.membership
        for s, path in ((self.hb_udp, "sync"), (self.hb_raw, "segment")):
            if s is None:
                continue
            for data in _drain(s):
                boots = {n: p.boot for n, p in m.peers.items()}
                node = m.heartbeat_in(data, path, time.monotonic())
                if node is not None and boots[node] is not None and boots[node] != m.peers[node].boot:
                    self._restarted(node)

    def _on_heartbeats(self) -> None:
        self._take_heartbeats()
        self._decide(time.monotonic())

    def _restarted(self, node: int) -> None:
        """A peer with a new boot id started anew with an empty table: it gets this node's whole
        kernel table, the entries this node only holds for it included (FTFW's HELLO bulk sends
        the internal cache, which lacks them), before it takes its buckets back."""
        e = self.engine
        peer = self.by_address.get(self.cc.nodes[node].address)
        if e is None or peer is None:
            return
        n = e.resync_with_kernel()
        e.bulk(peer)
        e.flush()
        self.resyncs_sent += 1
        log.info("cluster: node %d restarted: %d entries sent to it", node, n)

    # ---- decisions ------------------------------------------------------------------

    def tick(self) -> float | None:
        super().tick()
        self._take_heartbeats()
        now = time.monotonic()
        self._decide(now)
        if now >= self.next_heartbeat:
            self._send_heartbeat(now)
        return min(TICK, self.cc.heartbeat_interval / 4)

    def _decide(self, now: float) -> None:
        m = self.membership
        m.links(links_up([self.cc.inside.interface, self.cc.outside.interface]), now)
        for number, alive in m.update(now):
            log.info("cluster: node %d %s", number, "alive" if alive else "dead (silent on every path)")
        wanted, answers = m.wanted(now), m.answers_arp(now)
        if wanted != self.serves or answers != self.answers:
            before = self.serves or frozenset()
            gained = wanted - before
            if gained and self.engine is not None and self.engine.options.external_cache:
                self.engine.commit()  # the peers' entries into the kernel before their packets come
            self._install(wanted, answers)
            if gained:
                # from the dead peer's last heartbeat to the commit: what detection and takeover took
                heard = [p.last_heard for p in m.peers.values() if not p.alive and p.last_heard is not None]
                self.takeovers.append({"buckets": len(gained), "at": time.time(),
                                       "after_death_s": round(time.monotonic() - max(heard), 3) if heard else None})
            log.info("cluster: serving %d of %d buckets (gained %d, released %d), members %s%s",
                     len(wanted), self.cc.buckets, len(gained), len(before - wanted), m.members(now),
                     ", answering ARP" if answers else "")
            self._send_heartbeat(now)  # peers learn at once what was released

    def _install(self, serves: frozenset[int], answers: bool) -> None:
        if answers != self.answers:
            ARP_TABLE.replace(arp_ruleset(self.cc, answers))
            self.answers = answers
        if serves != self.serves:
            TABLE.replace(ruleset(self.cc, serves))  # one commit: the old set out, the new in
            self.serves = serves
        self.ruleset_commits += 1

    def _send_heartbeat(self, now: float) -> None:
        self.next_heartbeat = now + self.cc.heartbeat_interval
        if self.hb_udp is None or self.hb_raw is None:
            return
        dg = self.membership.heartbeat_out(now, self.serves or frozenset())
        for p in self.cc.peers:
            try:
                self.hb_udp.sendto(dg, (p.address, self.cc.heartbeat_port))
            except OSError:
                pass
        try:
            self.hb_raw.sendto(dg, (self.cc.inside.interface, ETH_P_NFKIT, 0, 0, b"\xff" * 6))
        except OSError:
            pass

    # ---- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = super().status()
        now = time.monotonic()
        serves = sorted(self.serves or ())
        st["cluster"] = {
            **self.membership.status(now), "nodes": sorted(self.cc.nodes), "buckets": self.cc.buckets,
            "serves": serves, "answers_arp": bool(self.answers), "ruleset_commits": self.ruleset_commits,
            "snat_ports": list(self.cc.me.ports), "takeovers": self.takeovers[-20:],
            "split_brain": self.cc.split_brain, "unknown_senders": self.unknown_senders,
            "restart_resyncs": self.resyncs_sent,
        }
        return st


def _drain(s: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(s.recv(65536))
        except (BlockingIOError, InterruptedError):
            return out
        except OSError:
            return out
