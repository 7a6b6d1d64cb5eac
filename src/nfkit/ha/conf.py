"""conntrackd.conf, read as conntrackd 1.4.7 reads it.

Owns: the file's syntax (words and ``{ }`` blocks, ``#`` comments), which
keys each block takes and what their values mean, the defaults, and the
checks conntrackd makes (one Mode, one transport address per family, ...).
Every error is one line naming ``file:line`` and the key.
Must not know: sockets, the kernel, the sync engine (it gets a `Conf`).

Keys nfkit accepts but does not act on (they tune conntrackd's own C
implementation: hash table sizes, netlink buffer growth, nice) are
listed in `TUNING` and kept in `Conf.tuning`, so nothing is dropped unseen; a
key or block nfkit cannot honour (the TIPC transport, the Stats mode, several
transports) is an error naming it, never silently ignored.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfkit.conntrack.model import PROTO_NUMBERS, parse_tcp_state
from nfkit.errors import InputError

DEFAULT_PATH = "/etc/conntrackd/conntrackd.conf"
DEFAULT_PORT = 3780
DEFAULT_UNIX_PATH = "/var/run/conntrackd.ctl"
DEFAULT_LOCKFILE = "/var/lock/conntrack.lock"


@dataclass
class Transport:
    """One Sync transport block: UDP (unicast) or Multicast."""

    kind: str  # "UDP" or "Multicast"
    family: int = 4
    address: str | None = None  # UDP: own address to bind; Multicast: the group
    destination: str | None = None  # UDP: the peer
    interface_address: str | None = None  # Multicast: IPv4_interface / IPv6_interface
    port: int = DEFAULT_PORT
    interface: str | None = None
    sndbuf: int = 0
    rcvbuf: int = 0
    checksum: bool = True
    line: int = 0


@dataclass
class Filter:
    """General's Filter block: which kernel entries are synced."""

    protocols: frozenset[int] = frozenset()
    protocols_accept: bool | None = None  # None: no Protocol block
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    networks_accept: bool | None = None
    tcp_states: frozenset[int] = frozenset()
    states_accept: bool | None = None
    where: str = "Userspace"


@dataclass
class Conf:
    path: str
    mode: str = "FTFW"  # FTFW, NOTRACK, ALARM
    disable_external_cache: bool = False
    disable_internal_cache: bool = False
    resend_queue_size: int = 131072
    ack_window: int = 300
    commit_timeout: int = 0
    purge_timeout: int = 60
    startup_resync: bool = False
    refresh_time: int = 15  # ALARM
    cache_timeout: int = 180  # ALARM
    transports: list[Transport] = field(default_factory=list)
    tcp_window_tracking: bool = False
    expectation_sync: list[str] | bool = False  # True: all helpers
    unix_path: str = DEFAULT_UNIX_PATH
    lockfile: str = DEFAULT_LOCKFILE
    logfile: str | None = None  # None: no log file
    syslog: bool = False
    filter: Filter = field(default_factory=Filter)
    tuning: dict[str, str] = field(default_factory=dict)
    cluster: ClusterConf | None = None  # nfkit's own Cluster block (active-active), see below

    @property
    def transport(self) -> Transport:
        return self.transports[0]


# keys that tune conntrackd's C implementation: accepted, kept, not acted on
TUNING = frozenset({
    "HashSize", "HashLimit", "NetlinkBufferSize", "NetlinkBufferSizeMaxGrowth", "NetlinkOverrunResync",
    "NetlinkEventsReliable", "PollSecs", "EventIterationLimit", "Nice", "Systemd", "Backlog",
    "Type", "Priority", "CPU", "McastSndSocketBuffer", "McastRcvSocketBuffer", "ErrorQueueLength",
})

_NUMERIC = frozenset({"HashSize", "HashLimit", "NetlinkBufferSize", "NetlinkBufferSizeMaxGrowth", "PollSecs",
                      "EventIterationLimit", "Nice", "McastSndSocketBuffer", "McastRcvSocketBuffer",
                      "ErrorQueueLength"})

_TOKEN = re.compile(r"[{}]|[^\s{}#]+")


class _Tok:
    __slots__ = ("line", "text")

    def __init__(self, text: str, line: int) -> None:
        self.text = text
        self.line = line


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0]
        out.extend(_Tok(m.group(0), n) for m in _TOKEN.finditer(line))
    return out


@dataclass
class _Node:
    """A key with its words, or a block (``children`` not None)."""

    key: str
    words: list[str]
    line: int
    children: list[_Node] | None = None


def _parse(path: str, toks: list[_Tok]) -> list[_Node]:
    pos = 0

    def block(depth: int) -> list[_Node]:
        nonlocal pos
        nodes: list[_Node] = []
        while pos < len(toks):
            t = toks[pos]
            if t.text == "}":
                if depth == 0:
                    raise InputError(f"{path}:{t.line}: '}}' without its '{{'")
                pos += 1
                return nodes
            if t.text == "{":
                raise InputError(f"{path}:{t.line}: '{{' without a name before it")
            words: list[str] = []
            pos += 1
            while pos < len(toks) and toks[pos].line == t.line and toks[pos].text not in "{}":
                words.append(toks[pos].text)
                pos += 1
            if pos < len(toks) and toks[pos].text == "{":
                pos += 1
                nodes.append(_Node(t.text, words, t.line, block(depth + 1)))
            else:
                nodes.append(_Node(t.text, words, t.line))
        if depth:
            raise InputError(f"{path}: end of file inside a block (a '}}' is missing)")
        return nodes

    return block(0)


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, node: _Node, why: str) -> InputError:
        return InputError(f"{self.path}:{node.line}: {node.key}: {why}")

    def one(self, node: _Node) -> str:
        if node.children is not None:
            raise self.fail(node, "a value, not a block, is expected")
        if len(node.words) != 1:
            raise self.fail(node, f"one value expected, got {len(node.words)}")
        return node.words[0]

    def int_(self, node: _Node, lo: int = 0, hi: int = 2**31 - 1) -> int:
        word = self.one(node)
        try:
            value = int(word)
        except ValueError:
            raise self.fail(node, f"{word!r} is not a number") from None
        if not lo <= value <= hi:
            raise self.fail(node, f"{value} is out of range [{lo}, {hi}]")
        return value

    def bool_(self, node: _Node) -> bool:
        word = self.one(node).lower()
        if word in ("on", "yes"):
            return True
        if word in ("off", "no"):
            return False
        raise self.fail(node, f"{word!r} is not On/Off (or Yes/No)")

    def addr(self, node: _Node, family: int) -> str:
        word = self.one(node)
        try:
            ip = ipaddress.ip_address(word)
        except ValueError:
            raise self.fail(node, f"{word!r} is not an address") from None
        if ip.version != family:
            raise self.fail(node, f"{word} is not an IPv{family} address")
        return str(ip)

    def block(self, node: _Node) -> list[_Node]:
        if node.children is None:
            raise self.fail(node, "a block { ... } is expected")
        return node.children

    def unknown(self, node: _Node, where: str) -> InputError:
        return self.fail(node, f"unknown key in {where} (conntrackd 1.4.7 has no such option here)")


def read(path: str | Path) -> Conf:
    """Read conntrackd.conf at ``path``; raises InputError naming file:line and the key."""
    p = str(path)
    try:
        text = Path(p).read_text()
    except OSError as exc:
        raise InputError(f"{p}: cannot read the configuration: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a text file") from None
    return parse(text, p)


def parse(text: str, path: str = "<conntrackd.conf>") -> Conf:
    """The configuration in ``text`` (``path`` names it in errors)."""
    r = _Reader(path)
    conf = Conf(path)
    nodes = _parse(path, _tokens(text))
    seen: set[str] = set()
    for node in nodes:
        if node.key in seen and node.key in ("Sync", "General"):
            raise r.fail(node, "given twice")
        seen.add(node.key)
        if node.key == "Sync":
            _sync(r, node, conf)
        elif node.key == "General":
            _general(r, node, conf)
        elif node.key == "Cluster":
            if conf.cluster is not None:
                raise r.fail(node, "given twice")
            conf.cluster = _cluster(r, node)
        elif node.key == "Stats":
            raise r.fail(node, "conntrackd's statistics mode is not supported by nfkit ha (use Sync)")
        else:
            raise r.fail(node, "unknown top-level block (General and Sync are)")
    if "Sync" not in seen:
        raise InputError(f"{path}: no Sync block (nfkit ha runs conntrackd's sync mode)")
    if not conf.transports:
        raise InputError(f"{path}: the Sync block has no transport (UDP or Multicast)")
    if conf.cluster is not None:
        _check_cluster(r, conf)
    return conf


_MODES = ("FTFW", "NOTRACK", "ALARM")


def _sync(r: _Reader, node: _Node, conf: Conf) -> None:
    mode_seen = False
    for n in r.block(node):
        if n.key == "Mode":
            if mode_seen:
                raise r.fail(n, "only one Mode may be given")
            mode_seen = True
            if len(n.words) != 1 or n.words[0].upper() not in _MODES:
                raise r.fail(n, f"{' '.join(n.words) or 'nothing'}: the mode is FTFW, NOTRACK or ALARM")
            conf.mode = n.words[0].upper()
            _mode(r, n, conf)
        elif n.key in ("UDP", "Multicast"):
            if conf.transports:
                raise r.fail(n, "a second transport: nfkit ha syncs over one (conntrackd's redundant "
                                "dedicated links are not supported)")
            conf.transports.append(_transport(r, n))
        elif n.key == "TCP":
            raise r.fail(n, "the TCP transport is not supported by nfkit ha (UDP and Multicast are)")
        elif n.key == "TIPC":
            raise r.fail(n, "the TIPC transport is not supported (removed from conntrackd too)")
        elif n.key == "Options":
            _options(r, n, conf)
        else:
            raise r.unknown(n, "Sync")
    if not mode_seen:
        raise r.fail(node, "no Mode (FTFW, NOTRACK or ALARM)")


# the keys each Mode block takes, as 1.4.7's grammar has them (a key of another mode is
# a syntax error there too)
MODE_KEYS = {
    "FTFW": ("DisableExternalCache", "ResendQueueSize", "ACKWindowSize", "CommitTimeout", "PurgeTimeout",
             "StartupResync", "CacheTimeout"),
    "NOTRACK": ("DisableExternalCache", "DisableInternalCache", "CommitTimeout", "PurgeTimeout",
                "StartupResync", "CacheTimeout"),
    "ALARM": ("CommitTimeout", "PurgeTimeout", "RefreshTime", "CacheTimeout"),
}


def _mode(r: _Reader, node: _Node, conf: Conf) -> None:
    for n in r.block(node):
        k = n.key
        if k not in MODE_KEYS[conf.mode]:
            raise r.unknown(n, f"Mode {conf.mode}")
        if k == "DisableExternalCache":
            conf.disable_external_cache = r.bool_(n)
        elif k == "DisableInternalCache":
            conf.disable_internal_cache = r.bool_(n)
        elif k == "ResendQueueSize":
            conf.resend_queue_size = r.int_(n, 1)
        elif k == "ACKWindowSize":
            conf.ack_window = r.int_(n, 1)
        elif k == "CommitTimeout":
            conf.commit_timeout = r.int_(n)
        elif k == "PurgeTimeout":
            conf.purge_timeout = r.int_(n, 1)
        elif k == "StartupResync":
            conf.startup_resync = r.bool_(n)
        elif k == "RefreshTime":
            conf.refresh_time = r.int_(n, 1)
        else:
            conf.cache_timeout = r.int_(n, 1)


def _transport(r: _Reader, node: _Node) -> Transport:
    t = Transport(node.key, line=node.line)
    if node.words and node.words != ["Default"]:
        raise r.fail(node, f"unexpected {' '.join(node.words)!r} (only 'Default' may follow)")
    mcast = node.key == "Multicast"
    for n in r.block(node):
        k = n.key
        if k in ("IPv4_address", "IPv6_address"):
            fam = 4 if k.startswith("IPv4") else 6
            _family(r, n, t, fam)
            t.address = r.addr(n, fam)
        elif k in ("IPv4_Destination_Address", "IPv6_Destination_Address") and not mcast:
            fam = 4 if k.startswith("IPv4") else 6
            _family(r, n, t, fam)
            t.destination = r.addr(n, fam)
        elif k in ("IPv4_interface", "IPv6_interface") and mcast:
            fam = 4 if k.startswith("IPv4") else 6
            t.interface_address = r.addr(n, fam) if fam == 4 else r.one(n)
        elif k == ("Group" if mcast else "Port"):
            t.port = r.int_(n, 1, 65535)
        elif k == "Interface":
            t.interface = r.one(n)
        elif k == "SndSocketBuffer":
            t.sndbuf = r.int_(n, 0)
        elif k == "RcvSocketBuffer":
            t.rcvbuf = r.int_(n, 0)
        elif k == "Checksum":
            t.checksum = r.bool_(n)
        else:
            raise r.unknown(n, node.key)
    if t.address is None:
        raise r.fail(node, "no IPv4_address or IPv6_address" + (" (the group)" if mcast else ""))
    if not mcast and t.destination is None:
        raise r.fail(node, "no IPv4_Destination_Address or IPv6_Destination_Address (the peer)")
    if mcast and not ipaddress.ip_address(t.address).is_multicast:
        raise r.fail(node, f"{t.address} is not a multicast group")
    return t


def _family(r: _Reader, n: _Node, t: Transport, fam: int) -> None:
    if t.address is not None or t.destination is not None:
        if t.family != fam:
            raise r.fail(n, "IPv4 and IPv6 addresses mixed in one transport")
    t.family = fam


def _options(r: _Reader, node: _Node, conf: Conf) -> None:
    for n in r.block(node):
        if n.key == "TCPWindowTracking":
            conf.tcp_window_tracking = r.bool_(n)
        elif n.key == "ExpectationSync":
            if n.children is not None:
                conf.expectation_sync = [c.key for c in n.children] + [w for c in n.children for w in c.words]
            else:
                conf.expectation_sync = r.bool_(n)
        else:
            raise r.unknown(n, "Sync Options")


def _general(r: _Reader, node: _Node, conf: Conf) -> None:
    for n in r.block(node):
        k = n.key
        if k == "UNIX":
            for c in r.block(n):
                if c.key == "Path":
                    conf.unix_path = r.one(c)
                elif c.key == "Backlog":
                    conf.tuning["UNIX.Backlog"] = r.one(c)
                else:
                    raise r.unknown(c, "General UNIX")
        elif k == "LockFile":
            conf.lockfile = r.one(n)
        elif k == "LogFile":
            word = r.one(n)
            low = word.lower()
            conf.logfile = (None if low in ("off", "no") else
                            "/var/log/conntrackd.log" if low in ("on", "yes") else word)
        elif k == "Syslog":
            word = r.one(n).lower()
            conf.syslog = word not in ("off", "no")
        elif k == "Filter":
            _filter(r, n, conf)
        elif k == "Scheduler":  # acted on (nfkit.ha.daemon.set_scheduler), as conntrackd does
            for c in r.block(n):
                if c.key == "Type":
                    if r.one(c).upper() not in ("RR", "FIFO"):
                        raise r.fail(c, f"unknown scheduler `{r.one(c)}' (RR or FIFO)")
                elif c.key == "Priority":
                    r.int_(c, 0, 99)
                else:
                    raise r.unknown(c, "General Scheduler")
                conf.tuning[f"Scheduler.{c.key}"] = r.one(c)
        elif k in TUNING:
            if k in _NUMERIC:
                r.int_(n, -20 if k == "Nice" else 0)
            conf.tuning[k] = r.one(n)
        else:
            raise r.unknown(n, "General")


def _filter(r: _Reader, node: _Node, conf: Conf) -> None:
    f = conf.filter
    if node.words and (len(node.words) != 2 or node.words[0] != "From"
                       or node.words[1] not in ("Userspace", "Kernelspace")):
        raise r.fail(node, f"{' '.join(node.words)!r}: Filter takes 'From Userspace' or 'From Kernelspace'")
    if node.words:
        f.where = node.words[1]
    for n in r.block(node):
        if len(n.words) != 1 or n.words[0] not in ("Accept", "Ignore"):
            raise r.fail(n, "Accept or Ignore expected after it")
        accept = n.words[0] == "Accept"
        body = r.block(n)
        if n.key == "Protocol":
            protos = set()
            for c in body:
                for word in [c.key, *c.words]:
                    num = PROTO_NUMBERS.get(word.lower())
                    if num is None:
                        raise r.fail(c, f"unknown protocol {word!r}")
                    protos.add(num)
            f.protocols, f.protocols_accept = frozenset(protos), accept
        elif n.key == "Address":
            for c in body:
                if c.key not in ("IPv4_address", "IPv6_address"):
                    raise r.unknown(c, "Filter Address")
                word = r.one(c)
                try:
                    net = ipaddress.ip_network(word, strict=False)
                except ValueError:
                    raise r.fail(c, f"{word!r} is not an address or network") from None
                if net.version != (4 if c.key.startswith("IPv4") else 6):
                    raise r.fail(c, f"{word} is not an IPv{4 if c.key.startswith('IPv4') else 6} address")
                f.networks.append(net)
            f.networks_accept = accept
        elif n.key == "State":
            states = set()
            for c in body:
                words = [c.key, *c.words]
                if "for" in words:
                    proto = words[words.index("for") + 1:]
                    if [p.upper() for p in proto] != ["TCP"]:
                        raise r.fail(c, "State filters apply to TCP only ('for TCP')")
                    words = words[:words.index("for")]
                for word in words:
                    word = word.rstrip(",")
                    try:  # conntrackd's name for the kernel's CLOSE
                        states.add(parse_tcp_state("CLOSE" if word.upper() == "CLOSED" else word))
                    except InputError:
                        raise r.fail(c, f"unknown TCP state {word!r}") from None
            f.tcp_states, f.states_accept = frozenset(states), accept
        else:
            raise r.unknown(n, "Filter")


def describe(conf: Conf) -> dict[str, Any]:
    """What the configuration says, for status output."""
    t = conf.transport
    return {"mode": conf.mode, "transport": t.kind, "address": t.address, "destination": t.destination,
            "port": t.port, "interface": t.interface, "external_cache": not conf.disable_external_cache}


# ---- nfkit's own Cluster block (active-active; conntrackd has no such block) ---------------


@dataclass
class ClusterNode:
    number: int
    address: str  # its sync address (the UDP transport's address on that node)
    ports: tuple[int, int]  # its SNAT port range
    line: int = 0


@dataclass
class Segment:
    """A shared segment: the interface every node has on it and the cluster's address there."""

    interface: str
    address: str
    line: int = 0


@dataclass
class ClusterConf:
    nodes: dict[int, ClusterNode]
    this_node: int
    inside: Segment
    outside: Segment
    mac: str = "01:00:5e:7f:c1:01"
    hash_seed: int = 0x6E666B74
    buckets: int = 64
    heartbeat_interval: float = 0.1  # seconds
    dead_time: float = 0.4
    heartbeat_port: int = DEFAULT_PORT + 1
    split_brain: str = "segment"
    line: int = 0

    @property
    def me(self) -> ClusterNode:
        return self.nodes[self.this_node]

    @property
    def peers(self) -> list[ClusterNode]:
        return [n for k, n in sorted(self.nodes.items()) if k != self.this_node]


_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_SPLIT_BRAIN = ("segment",)


def _ms(r: _Reader, node: _Node, lo: int, hi: int) -> float:
    return r.int_(node, lo, hi) / 1000


def _port_range(r: _Reader, node: _Node) -> tuple[int, int]:
    word = r.one(node)
    lo, dash, hi = word.partition("-")
    try:
        first, last = int(lo), int(hi if dash else lo)
    except ValueError:
        raise r.fail(node, f"{word!r} is not a port range (FIRST-LAST)") from None
    if not 1024 <= first <= last <= 65535:
        raise r.fail(node, f"{word}: a range within 1024-65535, first <= last, is expected")
    return first, last


def _segment(r: _Reader, node: _Node) -> Segment:
    iface = addr = None
    for n in r.block(node):
        if n.key == "Interface":
            iface = r.one(n)
        elif n.key == "IPv4_address":
            addr = r.addr(n, 4)
        else:
            raise r.fail(n, f"unknown key in Cluster {node.key} (Interface, IPv4_address)")
    if iface is None or addr is None:
        raise r.fail(node, "needs Interface and IPv4_address")
    return Segment(iface, addr, node.line)


def _cluster(r: _Reader, node: _Node) -> ClusterConf:
    nodes: dict[int, ClusterNode] = {}
    this = inside = outside = None
    opts: dict[str, Any] = {}
    for n in r.block(node):
        k = n.key
        if k == "Node":
            if len(n.words) != 1 or not n.words[0].isdigit() or not 1 <= int(n.words[0]) <= 64:
                raise r.fail(n, "Node NUMBER { ... }: a number from 1 to 64 is expected")
            num = int(n.words[0])
            if num in nodes:
                raise r.fail(n, f"node {num} given twice")
            address = ports = None
            for c in r.block(n):
                if c.key == "IPv4_address":
                    address = r.addr(c, 4)
                elif c.key == "PortRange":
                    ports = _port_range(r, c)
                else:
                    raise r.fail(c, "unknown key in Cluster Node (IPv4_address, PortRange)")
            if address is None or ports is None:
                raise r.fail(n, f"node {num} needs IPv4_address (its sync address) and PortRange (its SNAT ports)")
            nodes[num] = ClusterNode(num, address, ports, n.line)
        elif k == "ThisNode":
            this = (r.int_(n, 1, 64), n)
        elif k in ("Inside", "Outside"):
            seg = _segment(r, n)
            inside, outside = (seg, outside) if k == "Inside" else (inside, seg)
        elif k == "MAC":
            mac = r.one(n)
            if not _MAC.match(mac) or not int(mac[:2], 16) & 1:
                raise r.fail(n, f"{mac!r}: a multicast MAC address (first octet odd, e.g. 01:00:5e:7f:c1:01) "
                                "is expected")
            opts["mac"] = mac.lower()
        elif k == "HashSeed":
            word = r.one(n)
            try:
                opts["hash_seed"] = int(word, 0)
            except ValueError:
                raise r.fail(n, f"{word!r} is not a number") from None
            if not 0 <= opts["hash_seed"] <= 0xFFFFFFFF:
                raise r.fail(n, f"{word} does not fit 32 bits")
        elif k == "Buckets":
            opts["buckets"] = r.int_(n, 1, 1024)
        elif k == "HeartbeatInterval":
            opts["heartbeat_interval"] = _ms(r, n, 10, 10000)
        elif k == "DeadTime":
            opts["dead_time"] = _ms(r, n, 30, 60000)
        elif k == "HeartbeatPort":
            opts["heartbeat_port"] = r.int_(n, 1, 65535)
        elif k == "SplitBrain":
            word = r.one(n).lower()
            if word not in _SPLIT_BRAIN:
                raise r.fail(n, f"{word!r}: the rule is 'segment' (a peer heard on a shared segment is alive)")
            opts["split_brain"] = word
        else:
            raise r.fail(n, "unknown key in Cluster (Node, ThisNode, Inside, Outside, MAC, HashSeed, Buckets, "
                            "HeartbeatInterval, DeadTime, HeartbeatPort, SplitBrain)")
    if len(nodes) < 2:
        raise r.fail(node, "a cluster needs at least two Node blocks")
    if this is None:
        raise r.fail(node, "no ThisNode (this node's number)")
    if this[0] not in nodes:
        raise r.fail(this[1], f"{this[0]} is not one of the nodes ({', '.join(map(str, sorted(nodes)))})")
    if inside is None or outside is None:
        raise r.fail(node, "needs an Inside and an Outside block (the shared segments)")
    if inside.interface == outside.interface:
        raise r.fail(node, "Inside and Outside name the same interface")
    cc = ClusterConf(nodes, this[0], inside, outside, line=node.line, **opts)
    if cc.dead_time < 3 * cc.heartbeat_interval:
        raise InputError(f"{r.path}:{node.line}: Cluster: DeadTime must be at least three HeartbeatIntervals")
    byaddr: dict[str, int] = {}
    ranges = sorted(nodes.values(), key=lambda x: x.ports)
    for a, b in zip(ranges, ranges[1:], strict=False):
        if b.ports[0] <= a.ports[1]:
            raise InputError(f"{r.path}:{b.line}: PortRange: nodes {a.number} and {b.number} overlap "
                             "(two nodes could pick the same SNAT binding)")
    for cn in nodes.values():
        if cn.address in byaddr:
            raise InputError(f"{r.path}:{cn.line}: IPv4_address: {cn.address} is node {byaddr[cn.address]}'s too")
        byaddr[cn.address] = cn.number
    return cc


def _check_cluster(r: _Reader, conf: Conf) -> None:
    """The Sync block must fit the Cluster block: unicast UDP from this node's address."""
    cc, t = conf.cluster, conf.transport
    assert cc is not None
    where = f"{r.path}:{t.line}"
    if t.kind != "UDP" or t.family != 4:
        raise InputError(f"{where}: {t.kind}: a Cluster syncs over UDP IPv4 (one FTFW session per peer pair)")
    if t.address != cc.me.address:
        raise InputError(f"{where}: IPv4_address {t.address} is not node {cc.this_node}'s "
                         f"({cc.me.address}, Cluster Node {cc.this_node})")
    if t.destination not in {p.address for p in cc.peers}:
        raise InputError(f"{where}: IPv4_Destination_Address {t.destination} is not a Cluster node's address")
    if conf.mode == "ALARM":
        raise InputError(f"{r.path}: Mode ALARM: a Cluster runs FTFW or NOTRACK")
    if t.port == cc.heartbeat_port:
        raise InputError(f"{r.path}:{cc.line}: HeartbeatPort {t.port} is the sync Port too")
