"""The active-active lab: client -- [inside switch] -- fw1..fwN -- [outside switch] -- server.

One namespace ``sw`` holds three bridges, the shared segments: br-in (client
192.0.2.100 and every node's in0, all with the cluster address 192.0.2.1),
br-out (server 198.51.100.100 and every node's out0 with 198.51.100.1) and
br-sync (node k's sync0 at 203.0.113.k).  A bridge floods frames to the
cluster's multicast MAC to every node.  With ``v6`` the segments are dual stack:
client 2001:db8:1::100, cluster 2001:db8:1::1 inside, 2001:db8:2::1 outside,
server 2001:db8:2::100.  ``ports_down(k)`` takes node k's
switch ports down (its cables cut: the node is gone for everyone else), or only
its sync port (split brain).  Traffic: ``Streams`` runs N long-lived TCP
connections from the client to an echo server, each writing a numbered chunk
every ``period`` seconds and counting the bytes it gets back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nfkit.lab import Lab, Namespace
from nfkit.service.daemon import query_status
from tests.ha.stock import NfkitHa, general_block

INSIDE, OUTSIDE = "192.0.2.1", "198.51.100.1"
CLIENT, SERVER = "192.0.2.100", "198.51.100.100"
INSIDE6, OUTSIDE6 = "2001:db8:1::1", "2001:db8:2::1"
CLIENT6, SERVER6 = "2001:db8:1::100", "2001:db8:2::100"
ECHO_PORT = 5001
MARK = 42
MARK_RULES = f"table inet marks {{ chain forward {{ type filter hook forward priority 0; ct state new ct mark set {MARK}; }}; }}"


def sync_address(k: int) -> str:
    return f"203.0.113.{k}"


def cluster_conf(workdir: Path, k: int, n: int, *, buckets: int = 64, extra: str = "", v6: bool = False,
                 stock: tuple[int, ...] = ()) -> str:
    """Node k's file; the nodes in ``stock`` are stock conntrackd nodes (Daemon conntrackd)."""
    peers = [j for j in range(1, n + 1) if j != k]
    nodes = "\n".join(f"""    Node {j} {{
        IPv4_address {sync_address(j)}
        PortRange {20000 + 1000 * j}-{20999 + 1000 * j}
{"        Daemon conntrackd" if j in stock else ""}
    }}""" for j in range(1, n + 1))
    return f"""
Sync {{
    Mode FTFW {{
        DisableExternalCache on
    }}
    UDP {{
        IPv4_address {sync_address(k)}
        IPv4_Destination_Address {sync_address(peers[0])}
        Port 3780
        Interface sync0
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }}
}}
{general_block(workdir, [f"IPv4_address {sync_address(j)}" for j in range(1, n + 1)])}Cluster {{
{nodes}
    ThisNode {k}
    Inside {{
        Interface in0
        IPv4_address {INSIDE}
{f"        IPv6_address {INSIDE6}" if v6 else ""}
    }}
    Outside {{
        Interface out0
        IPv4_address {OUTSIDE}
{f"        IPv6_address {OUTSIDE6}" if v6 else ""}
    }}
    Buckets {buckets}
    HashSeed 0x5eed
    HeartbeatInterval 100
    DeadTime 400
{extra}
}}
"""


def cluster_lab(n: int, v6: bool = False) -> Lab:
    lab = Lab("nkcl")
    try:
        sw, client, server = lab.add("sw"), lab.add("client"), lab.add("server")
        for br in ("br-in", "br-out", "br-sync"):
            sw.run(["ip", "link", "add", br, "type", "bridge", "mcast_snooping", "0", "forward_delay", "0"])
            sw.run(["ip", "link", "set", br, "up"])

        def plug(ns: Namespace, addrs: list[str], ifname: str, port: str, bridge: str) -> None:
            lab.link(ns, sw, addrs, [], ifname, port)
            sw.run(["ip", "link", "set", port, "master", bridge])

        six = (lambda a: [f"{a}/64"]) if v6 else (lambda a: [])
        plug(client, [f"{CLIENT}/24", *six(CLIENT6)], "eth0", "client", "br-in")
        plug(server, [f"{SERVER}/24", *six(SERVER6)], "eth0", "server", "br-out")
        client.run(["ip", "route", "add", "default", "via", INSIDE])
        if v6:
            client.run(["ip", "-6", "route", "add", "default", "via", INSIDE6])
        for k in range(1, n + 1):
            fw = lab.add(f"fw{k}")
            # the cluster's IPv6 addresses without DAD (lab.link): every node holds them (docs/ha.md)
            plug(fw, [f"{INSIDE}/24", *six(INSIDE6)], "in0", f"in{k}", "br-in")
            plug(fw, [f"{OUTSIDE}/24", *six(OUTSIDE6)], "out0", f"out{k}", "br-out")
            plug(fw, [f"{sync_address(k)}/24"], "sync0", f"sync{k}", "br-sync")
            fw.sysctl("net.ipv4.ip_forward", "1")
            if v6:
                fw.sysctl("net.ipv6.conf.all.forwarding", "1")
            # a flow moves between nodes mid-stream: its TCP window is not synced (docs/ha.md)
            fw.sysctl("net.netfilter.nf_conntrack_tcp_be_liberal", "1")
            # the user's own policy beside nfkit's table: marks new flows (synced with them)
            fw.run(["nft", "-f", "-"], input=MARK_RULES)
        if v6:  # link-local addresses past DAD: neighbour discovery needs a source address
            for ns in lab.namespaces.values():
                wait_for(lambda ns=ns: not ns.run(["ip", "-6", "addr", "show", "tentative"]).stdout.strip(),
                         f"{ns.name}'s addresses past DAD", 10)
    except BaseException:
        lab.close()
        raise
    return lab


def ports(lab: Lab, k: int, up: bool, which: tuple[str, ...] = ("in", "out", "sync")) -> None:
    """Node k's switch ports down (its cables cut) or up again, in one `ip -batch`."""
    batch = "".join(f"link set {w}{k} {'up' if up else 'down'}\n" for w in which)
    lab["sw"].run(["ip", "-batch", "-"], input=batch)


def without_cluster_block(text: str) -> str:
    """The file as stock conntrackd reads it (it refuses nfkit's Cluster block)."""
    return text[:text.index("Cluster {")]


def start_nodes(lab: Lab, tmp: Path, n: int, **kw: Any) -> list[NfkitHa]:  # kw: cluster_conf's
    nodes = []
    for k in range(1, n + 1):
        if k in kw.get("stock", ()):
            continue
        wd = tmp / f"fw{k}"
        wd.mkdir(parents=True, exist_ok=True)
        nodes.append(NfkitHa(lab[f"fw{k}"], wd, mode="FTFW", own="", peer="", interface="",
                             conf=cluster_conf(wd, k, n, **kw)))
    return nodes


def cluster_status(node: NfkitHa) -> dict[str, Any]:
    """The node's cluster status, read from its control socket (no command started)."""
    return query_status(node.workdir / "ctl")["cluster"]  # type: ignore[no-any-return]


def settled(nodes: list[NfkitHa], buckets: int = 64, alive: list[int] | None = None) -> Callable[[], bool]:
    """Every node in ``alive`` (default all) serves a share, the shares are disjoint and cover all."""
    want = alive or list(range(1, len(nodes) + 1))

    def check() -> bool:
        seen: list[int] = []
        for k in want:
            c = cluster_status(nodes[k - 1])
            if c["members"] != want or not c["serves"]:
                return False
            seen += c["serves"]
        return sorted(seen) == list(range(buckets))
    return check


def wait_for(done: Callable[[], bool], what: str, timeout: float = 15) -> float:
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


SERVER_PY = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
ls = socket.socket(socket.AF_INET6); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 and IPv6 clients
ls.bind(("::", int(sys.argv[1]))); ls.listen(1024); ls.setblocking(False)
sel.register(ls, selectors.EVENT_READ)
out = {}
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is ls:
            c, _ = ls.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ); out[c] = b""
            continue
        try:
            d = s.recv(65536)
        except OSError:
            d = b""
        if not d:
            sel.unregister(s); s.close(); out.pop(s, None); continue
        s.setblocking(True); s.sendall(d); s.setblocking(False)
"""

# N connections; each writes a 100-byte chunk every period and counts what comes back.
# Progress (sent, received per connection, local ports, errors) goes to argv[4] every
# 0.2 s; when the file argv[5] appears it stops writing, waits for the echoes (up to
# 15 s) and writes the final counts with "done".
CLIENT_PY = r"""
import json, os, selectors, socket, sys, time
host, port, n, progress, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
period = float(sys.argv[6])
conns, sent, recv, errors = [], [0] * n, [0] * n, []
for i in range(n):
    s = socket.create_connection((host, port), timeout=10); s.setblocking(False); conns.append(s)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a write goes out even with data unacked
sel = selectors.DefaultSelector()
for i, s in enumerate(conns):
    sel.register(s, selectors.EVENT_READ, i)
localports = [s.getsockname()[1] for s in conns]
def dump(done=False):
    tmp = progress + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"sent": sent, "recv": recv, "ports": localports, "errors": errors, "done": done,
                   "t": time.time()}, f)
    os.replace(tmp, progress)
next_send = next_dump = time.monotonic(); stopping = None
while True:
    now = time.monotonic()
    if stopping is None and os.path.exists(stop):
        stopping = now
    if stopping is None and now >= next_send:
        next_send = now + period
        for i, s in enumerate(conns):
            if s is None:
                continue
            try:
                k = s.send(b"x" * 100)
                sent[i] += k
            except BlockingIOError:
                pass
            except OSError as e:
                errors.append([i, str(e)]); conns[i] = None
    for key, _ in sel.select(0.02):
        i = key.data
        try:
            d = key.fileobj.recv(65536)
        except BlockingIOError:
            continue
        except OSError as e:
            errors.append([i, str(e)]); sel.unregister(key.fileobj); conns[i] = None; continue
        if not d:
            errors.append([i, "closed"]); sel.unregister(key.fileobj); conns[i] = None; continue
        recv[i] += len(d)
    if now >= next_dump:
        next_dump = now + 0.2; dump()
    if stopping is not None and (recv == sent or now - stopping > 15):
        dump(True); break
"""


# an ARP request for argv[1] from the client's eth0; prints every reply's sender MAC for 1 s
ARP_ASK = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)); s.bind(("eth0", 0x0806))
mac = s.getsockname()[4]
me = socket.inet_aton(sys.argv[2]); target = socket.inet_aton(sys.argv[1])
req = b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + me + bytes(6) + target
s.sendto(req, ("eth0", 0x0806)); s.settimeout(0.1); end = time.monotonic() + 1
while time.monotonic() < end:
    try:
        f = s.recv(100)
    except TimeoutError:
        continue
    if f[20:22] == b"\x00\x02" and f[28:32] == target:
        print(f[22:28].hex(":"))
"""


def arp_answers(lab: Lab, address: str) -> list[str]:
    """The sender MACs of every ARP reply the client gets for ``address``."""
    return lab["client"].run(["python3", "-c", ARP_ASK, address, CLIENT]).stdout.split()


# a neighbour solicitation for argv[1] from the client's eth0 (to the solicited-node group, with
# the client's MAC); prints every advertisement's target link-layer address for 1 s (the kernel
# checksums a raw ICMPv6 socket's messages, and drops received ones whose checksum is wrong)
ND_ASK = r"""
import socket, struct, sys, time
target = socket.inet_pton(socket.AF_INET6, sys.argv[1])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
group = socket.inet_ntop(socket.AF_INET6, bytes.fromhex("ff0200000000000000000001ff") + target[13:])
s.sendto(struct.pack("!BBHI", 135, 0, 0, 0) + target + bytes([1, 1]) + mac,
         (group, 0, 0, socket.if_nametoindex("eth0")))
s.settimeout(0.1); end = time.monotonic() + 1
while time.monotonic() < end:
    try:
        m = s.recv(200)
    except TimeoutError:
        continue
    if m[0] == 136 and m[8:24] == target:
        print(m[26:32].hex(":") if len(m) >= 32 and m[24] == 2 else "no-option")
"""


def nd_answers(lab: Lab, address: str, ns: str = "client") -> list[str]:
    """The target link-layer addresses of every neighbour advertisement ``ns`` (client or server)
    gets for ``address``."""
    return lab[ns].run(["python3", "-c", ND_ASK, address]).stdout.split()


def neighbour(lab: Lab, ns: str, address: str) -> str:
    """The MAC ``ns``'s neighbour table holds for ``address`` ("" when none)."""
    words = lab[ns].run(["ip", "-6", "neigh", "show", address]).stdout.split()
    return words[words.index("lladdr") + 1] if "lladdr" in words else ""


class Streams:
    """The echo server and the client's N connections; progress read from its file."""

    def __init__(self, lab: Lab, tmp: Path, n: int, period: float = 0.05, server: str = SERVER) -> None:
        self.progress, self.stop_file = tmp / "progress.json", tmp / "stop"
        self.lab = lab
        lab["server"].popen(["python3", "-c", SERVER_PY, str(ECHO_PORT)])
        time.sleep(0.3)
        self.proc = lab["client"].popen(["python3", "-c", CLIENT_PY, server, str(ECHO_PORT), str(n),
                                         str(self.progress), str(self.stop_file), str(period)])
        wait_for(lambda: self.progress.exists(), "the client's connections", 20)

    def read(self) -> dict[str, Any]:
        return json.loads(self.progress.read_text())  # type: ignore[no-any-return]

    def advancing(self, timeout: float = 10) -> float:
        """Wait until every connection has received more than it had; returns the time taken."""
        before = self.read()["recv"]

        def check() -> bool:
            now = self.read()
            assert not now["errors"], now["errors"]
            return all(b > a for a, b in zip(before, now["recv"], strict=True))
        return wait_for(check, "every connection to move data", timeout)

    def finish(self) -> dict[str, Any]:
        self.stop_file.touch()
        wait_for(lambda: self.read()["done"], "the client to drain its echoes", 25)
        return self.read()
