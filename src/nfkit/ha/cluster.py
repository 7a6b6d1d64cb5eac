"""`nfkit ha -C FILE` with a Cluster block: N nodes active-active over conntrackd's sync.

Owns: the cluster's sockets (one UDP sync socket speaking FTFW (or NOTRACK) to
every peer, one session per peer pair, each one a conntrackd-compatible
two-node session; heartbeats over UDP on the sync link and as raw Ethernet
frames on the inside segment, sent by a thread of their own every interval
and by the loop at once after each decision), the nf_tables rules that make this node serve
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
import threading
import time
from typing import Any

from nfkit.errors import CapabilityError, InputError
from nfkit.ha import buckets
from nfkit.ha.conf import ClusterConf, Conf
from nfkit.ha.daemon import TICK, HaDaemon, make_session
from nfkit.ha.engine import Peer, SyncEngine
from nfkit.ha.membership import Membership
from nfkit.ha.transport import SyncSocket
from nfkit.nftables import Ruleset
from nfkit.service.owntable import Owned

log = logging.getLogger("nfkit.ha")

TABLE = Owned("ip", "nfkit_cluster")
TABLE6 = Owned("ip6", "nfkit_cluster6")
ARP_TABLE = Owned("arp", "nfkit_cluster_arp")
ETH_P_NFKIT = 0x88B5  # IEEE 802 local experimental ethertype: heartbeats on the inside segment
SIOCGIFFLAGS, SIOCGIFHWADDR = 0x8913, 0x8927
# the heartbeat thread goes quiet when the node's loop has not run for this long (it is stuck,
# not merely waiting for a kernel call): its peers then take its buckets
LOOP_STUCK = 2.0
IFF_UP, IFF_RUNNING = 0x1, 0x40


def _hex_ip(addr: str) -> str:
    return hex(int(ipaddress.IPv4Address(addr)))


def _mine(cc: ClusterConf, serves: frozenset[int], family: str) -> str:
    """The rule marking the frames of the flows in ``serves`` for this node (empty: none)."""
    if not serves:
        return ""
    return (f'    iifname {{ "{cc.inside.interface}", "{cc.outside.interface}" }} ether daddr {cc.mac} '
            f"jhash ct original {family} saddr . ct original proto-src mod {cc.buckets} seed {cc.hash_seed:#x} "
            f'{{ {", ".join(map(str, sorted(serves)))} }} meta pkttype set host accept\n')


def ruleset(cc: ClusterConf, serves: frozenset[int]) -> Ruleset:
    return load_text(ruleset_text(cc, serves))


def ruleset_text(cc: ClusterConf, serves: frozenset[int]) -> str:
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
    text = f"""table ip nfkit_cluster {{
  chain prerouting {{ type filter hook prerouting priority -150; policy accept;
    iifname "{o}" ct state new ip daddr {cc.outside.address} drop
{_mine(cc, serves, "ip")}    iifname {{ "{i}", "{o}" }} ether daddr {mac} drop
  }}
  chain postrouting {{ type nat hook postrouting priority 100; policy accept;
    iifname "{i}" oifname "{o}" meta l4proto {{ tcp, udp }} snat to {cc.outside.address}:{lo}-{hi}
    iifname "{i}" oifname "{o}" snat to {cc.outside.address}
  }}
}}
"""
    return text


def arp_ruleset(cc: ClusterConf, answers: bool) -> Ruleset:
    return load_text(arp_ruleset_text(cc, answers))


def arp_ruleset_text(cc: ClusterConf, answers: bool) -> str:
    """Table arp nfkit_cluster_arp: every ARP packet this node sends from a cluster address
    carries the cluster's MAC as its sender (so no neighbour ever learns a node's own MAC
    for it); requests for the cluster's addresses are dropped unless this node answers."""
    assert cc.inside.address is not None and cc.outside.address is not None  # installed for IPv4 only
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
    return text


def nd_compensation(own_mac: bytes, cluster_mac: bytes) -> int:
    """The 16-bit word that keeps an ICMPv6 checksum right when the 6 bytes ``own_mac`` in the
    message are replaced by ``cluster_mac`` (one's-complement sums: old words = new words + it).
    nft writes raw payload bytes without fixing the checksum, so the rule writes this word too,
    into the reserved bits of the NS/NA (bytes 6-7: zero, ignored by receivers, RFC 4861)."""
    def fold(words: int) -> int:
        while words >> 16:
            words = (words & 0xFFFF) + (words >> 16)
        return words
    old, new = (fold(sum(int.from_bytes(m[k:k + 2], "big") for k in (0, 2, 4))) for m in (own_mac, cluster_mac))
    return fold(old + (0xFFFF - new))


def ruleset6(cc: ClusterConf, serves: frozenset[int], answers: bool, macs: dict[str, bytes]) -> Ruleset:
    return load_text(ruleset6_text(cc, serves, answers, macs))


def ruleset6_text(cc: ClusterConf, serves: frozenset[int], answers: bool, macs: dict[str, bytes]) -> str:
    """Table ip6 nfkit_cluster6: the IPv4 table's split and SNAT for IPv6, and neighbour
    discovery answered once.  NS/NA are untracked (no bucket): they are let through before
    the split; every node but the answering one drops the NS for the cluster's addresses
    (the kernel answers nothing); the NS and NA a node sends from a cluster address carry the
    cluster's MAC in their link-layer option (bytes 26-31 when it is the only option, payload
    length 32), so no neighbour learns a node's own MAC for it (``macs``: each shared
    interface's own MAC, for `nd_compensation`)."""
    i, o, mac = cc.inside.interface, cc.outside.interface, cc.mac
    lo, hi = cc.me.ports
    nd = "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert }"
    silent = "" if answers else "".join(
        f"    icmpv6 type nd-neighbor-solicit @th,64,128 {hex(int(ipaddress.IPv6Address(a)))} drop\n"
        for a in (cc.inside.address6, cc.outside.address6))
    cmac = bytes.fromhex(mac.replace(":", ""))
    rewrite = "".join(
        f'    oifname "{seg.interface}" ip6 saddr {seg.address6} ip6 length 32 {nd} '
        f"@th,208,48 set 0x{cmac.hex()} @th,48,16 set {nd_compensation(macs[seg.interface], cmac):#06x}\n"
        for seg in (cc.inside, cc.outside))
    text = f"""table ip6 nfkit_cluster6 {{
  chain prerouting {{ type filter hook prerouting priority -150; policy accept;
    iifname {{ "{i}", "{o}" }} ether daddr {mac} {nd} meta pkttype set host accept
    iifname "{o}" ct state new ip6 daddr {cc.outside.address6} drop
{_mine(cc, serves, "ip6")}    iifname {{ "{i}", "{o}" }} ether daddr {mac} drop
  }}
  chain input {{ type filter hook input priority 0; policy accept;
{silent}  }}
  chain output {{ type filter hook output priority 0; policy accept;
{rewrite}  }}
  chain postrouting {{ type nat hook postrouting priority 100; policy accept;
    iifname "{i}" oifname "{o}" meta l4proto {{ tcp, udp }} snat to [{cc.outside.address6}]:{lo}-{hi}
    iifname "{i}" oifname "{o}" snat to {cc.outside.address6}
  }}
}}
"""
    return text


def node_tables(cc: ClusterConf, serves: frozenset[int], answers: bool,
                macs: dict[str, bytes]) -> list[tuple[Owned, str]]:
    """Every table of a node serving ``serves`` (and answering ARP/ND or not), as nft text, in the
    order they are installed: IPv4's (arp, then ip) when the segments have IPv4 addresses, ip6's
    when they have IPv6 ones."""
    out = []
    if cc.inside.address is not None:
        out += [(ARP_TABLE, arp_ruleset_text(cc, answers)), (TABLE, ruleset_text(cc, serves))]
    if cc.inside.address6 is not None:
        out.append((TABLE6, ruleset6_text(cc, serves, answers, macs)))
    return out


def stock_node_tables(cc: ClusterConf, serve: str) -> list[tuple[Owned, str]]:
    """The tables of a stock conntrackd node (ThisNode's Daemon conntrackd; `nfkit ha rules`), run
    on that node (its interfaces' MACs are read): ``serve`` "share" (its static share among every
    configured node; answers no ARP or ND: the nfkit nodes do), "all" (it is alone: every bucket,
    and it answers) or "none"."""
    serves = {"share": buckets.share(cc.this_node, cc.nodes, cc.buckets, cc.hash_seed),
              "all": frozenset(range(cc.buckets)), "none": frozenset()}[serve]
    macs = own_macs([cc.inside.interface, cc.outside.interface]) if cc.inside.address6 is not None else {}
    return node_tables(cc, serves, serve == "all", macs)


def own_macs(names: list[str]) -> dict[str, bytes]:
    """Each interface's own hardware address (CapabilityError naming one that has none)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        out = {}
        for name in names:
            try:
                raw = fcntl.ioctl(s, SIOCGIFHWADDR, struct.pack("16s16x", name.encode()))
            except OSError as exc:
                raise CapabilityError(f"cluster interface {name}: {exc.strerror or exc}") from None
            out[name] = raw[18:24]
        return out
    finally:
        s.close()


def load_text(text: str) -> Ruleset:
    """One of this module's tables, read from its nft text."""
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
        if self.cc.me.stock:
            raise InputError(f"{conf.path}: ThisNode {self.cc.this_node} is a stock conntrackd node (Daemon "
                             "conntrackd): run conntrackd there, with the rules of `nfkit ha rules`")
        super().__init__(conf)
        self.by_address: dict[str, Peer] = {}
        self.numbers: dict[str, int] = {}  # sync address -> node number
        self.membership = Membership(self.cc, time.monotonic())
        self.serves: frozenset[int] | None = None  # None: nothing installed yet
        self.macs: dict[str, bytes] = {}
        self.nft_sock: Any = None
        self.answers: bool | None = None
        self.hb_udp: socket.socket | None = None
        self.hb_raw: socket.socket | None = None
        self.hb_stop: threading.Event | None = None
        self.hb_thread: threading.Thread | None = None
        self.last_tick: float | None = None
        self.longest_tick_gap = 0.0
        self.tick_gap = 0.0  # between the last two ticks
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
            self.numbers[node.address] = node.number
        self.peer = engine.peers[0]

    def start(self, selector: selectors.BaseSelector) -> None:
        cc = self.cc
        # the rules first, serving nothing: no frame to the cluster's MAC is forwarded and
        # no ARP answered before this node knows who else is there
        if cc.inside.address6 is not None:
            self.macs = own_macs([cc.inside.interface, cc.outside.interface])
        from nfkit.nftables.listing import open_socket

        # one nf_tables socket for the daemon's life: closing one after each commit waits until a
        # normal-priority kernel worker has destroyed the replaced table (nft_rcv_nl_event's
        # flush_work), seconds on a loaded machine, heartbeats stopped meanwhile
        self.nft_sock = open_socket()
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
        self.hb_stop = threading.Event()
        self.hb_thread = threading.Thread(target=self._heartbeats_out, name="nfkit-ha-heartbeats", daemon=True)
        self.hb_thread.start()  # after the scheduler is set: it runs real-time too
        selector.register(self.hb_udp.fileno(), selectors.EVENT_READ, self._on_heartbeats)
        selector.register(self.hb_raw.fileno(), selectors.EVENT_READ, self._on_heartbeats)
        log.info("cluster node %d of %s: %d buckets, heartbeat every %.0f ms, dead after %.0f ms",
                 cc.this_node, sorted(cc.nodes), cc.buckets, cc.heartbeat_interval * 1000, cc.dead_time * 1000)

    def stop(self) -> None:
        if self.hb_stop is not None and self.hb_thread is not None:
            self.hb_stop.set()
            self.hb_thread.join(5)
        for s in (self.hb_udp, self.hb_raw):
            if s is not None:
                s.close()
        try:
            # both tables stay, serving nothing: without them the kernel would answer ARP for
            # the cluster's addresses with this node's own MAC, and confirm entries for the
            # frames it receives for the others (a reply to the cluster's address is delivered
            # locally, so conntrack keeps it as a new flow the wrong way round) (docs/ha.md)
            self._install(frozenset(), False, force=True)
        except Exception as exc:  # noqa: BLE001 - teardown goes on
            log.warning("cluster rules not removed: %s", exc)
        if self.nft_sock is not None:
            self.nft_sock.close()
        super().stop()

    # ---- input -----------------------------------------------------------------

    def _on_sync(self) -> None:
        assert self.sync is not None and self.engine is not None
        for data, addr in self.sync.receive():
            source = addr[0] if isinstance(addr, tuple) else None
            peer = self.by_address.get(source) if source is not None else None
            if peer is None or source is None:
                self.unknown_senders += 1
                continue
            self.membership.sync_heard(self.numbers[source], time.monotonic())
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
        started = time.monotonic()
        if self.last_tick is not None:  # how late this process ran (a loaded machine, a stall)
            self.tick_gap = started - self.last_tick
            self.longest_tick_gap = max(self.longest_tick_gap, self.tick_gap)
        self.last_tick = started
        super().tick()
        self._take_heartbeats()
        now = time.monotonic()
        self._decide(now)
        return min(TICK, self.cc.heartbeat_interval / 4)

    def _heartbeats_out(self) -> None:
        """The heartbeat thread: one heartbeat every interval, whatever the loop is doing.  The
        loop can wait for the kernel (ctnetlink requests take a mutex every namespace shares:
        another namespace's heavy user, at normal priority, held this node's loop for a second
        and more on a loaded machine, its peers took it for dead though its kernel forwarded on);
        a loop stuck for LOOP_STUCK ends the heartbeats, and the peers take over."""
        assert self.hb_stop is not None
        while not self.hb_stop.wait(self.cc.heartbeat_interval):
            now = time.monotonic()
            if self.last_tick is None or now - self.last_tick < LOOP_STUCK:
                self._send_heartbeat(now)

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
                # from the dead peer's last heartbeat to the commit: what detection and takeover took;
                # its parts: the decision (`now`) after the last heartbeat, the tick before it
                # (a loop held up elsewhere decides late), the commits
                heard = [p.last_heard for p in m.peers.values() if not p.alive and p.last_heard is not None]
                done = time.monotonic()
                self.takeovers.append({"buckets": len(gained), "at": time.time(),
                                       "after_death_s": round(done - max(heard), 3) if heard else None,
                                       "decided_after_s": round(now - max(heard), 3) if heard else None,
                                       "tick_gap_s": round(self.tick_gap, 3), "commit_s": round(done - now, 3)})
            log.info("cluster: serving %d of %d buckets (gained %d, released %d), members %s%s",
                     len(wanted), self.cc.buckets, len(gained), len(before - wanted), m.members(now),
                     ", answering ARP" if answers else "")
            self._send_heartbeat(now)  # peers learn at once what was released

    def _install(self, serves: frozenset[int], answers: bool, force: bool = False) -> None:
        """This node's tables for ``serves`` and ``answers``: each table whose rules change is
        replaced in one commit (the old set out, the new in); IPv4 before IPv6."""
        cc = self.cc
        v4, v6 = cc.inside.address is not None, cc.inside.address6 is not None
        sock = self.nft_sock
        if v4 and (force or answers != self.answers):
            ARP_TABLE.replace(arp_ruleset(cc, answers), sock)
        if v4 and (force or serves != self.serves):
            TABLE.replace(ruleset(cc, serves), sock)
        if v6 and (force or serves != self.serves or answers != self.answers):
            TABLE6.replace(ruleset6(cc, serves, answers, self.macs), sock)
        self.answers, self.serves = answers, serves
        self.ruleset_commits += 1

    def _send_heartbeat(self, now: float) -> None:
        if self.hb_udp is None or self.hb_raw is None:
            return
        dg = self.membership.heartbeat_out(now, self.serves or frozenset())
        for p in self.cc.peers:
            if p.stock:  # it does not listen for them
                continue
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
            "restart_resyncs": self.resyncs_sent, "longest_tick_gap": round(self.longest_tick_gap, 3),
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
