"""Active-active failover: how long until the flows of a dead node are forwarded again.

Run by bench/ha/failover.  The lab of tests/ha/cluster_lab.py (client, server,
N nfkit nodes on shared bridges, SNAT from per-node port ranges), 200 TCP
connections each writing 100 bytes every 20 ms (TCP_NODELAY).  At t0 one
node's switch ports go down in one `ip -batch` (its cables cut; the sync port
first, else the node sees its own links go and hands its buckets over in a
heartbeat, a graceful handover in milliseconds).  Each round also prints the
peers declared dead before the cut and the longest gaps in the nodes' loops
and heartbeats (a flap before the cut moves the flows early).  tcpdump on the
server stamps every data segment; the flows the dead node served are those
whose SNAT port lies in its range, and for each the figure is the time from t0
to its first segment at the server (necessarily forwarded by a survivor, the
dead node having no link).  Then the client stops writing and checks that every
byte came back.  Figures: per-flow distribution over all rounds (median, p90,
max), share under the 1 s goal, and the survivors' own detection-to-commit
delay from `nfkit ha status`.  The machine is shared and noisy (2 cores, other
engineers' tests): read the medians, not the maxima.

There is no side-by-side peer: stock conntrackd has no active-active takeover;
with keepalived it is active-backup, and its FTFW ALIVE alone takes a quiet
second before a peer is even heard from.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.ha.cluster_lab import (  # noqa: E402
    ECHO_PORT,
    SERVER,
    Streams,
    cluster_lab,
    cluster_status,
    ports,
    settled,
    start_nodes,
    wait_for,
)

SEG = re.compile(rb"^(\d+\.\d+) IP [\d.]+\.(\d+) > [\d.]+\.(\d+): (Flags \[P|UDP)")
UDP_PORT = 5002
# UDP probes: one datagram per flow every 10 ms, no retransmission timer in the way, so the
# first one forwarded after the death measures the cluster alone (TCP adds its RTO backoff)
PROBES = r"""
import socket, sys, time
host, port, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
end = time.monotonic() + secs
while time.monotonic() < end:
    for s in socks:
        s.sendto(b"p", (host, port))
    time.sleep(0.01)
"""


spans: list[float] = []
flaps: list[int] = []
served: list[int] = []
gaps: list[tuple[float, float]] = []  # per round: longest tick gap of a node, longest heartbeat gap heard


def one_round(n: int, conns: int, tmp: Path) -> tuple[list[float], list[float], list[float], bool]:
    with cluster_lab(n) as lab:
        nodes = start_nodes(lab, tmp, n)
        wait_for(settled(nodes), "the nodes to share the buckets", 30)
        cap = tmp / "server.txt"
        with cap.open("wb") as out:
            lab["server"].popen(["tcpdump", "-i", "eth0", "-n", "-tt", "-l", "-U",
                                 f"tcp dst port {ECHO_PORT} or udp dst port {UDP_PORT}"], stdout=out)
            time.sleep(1)
            streams = Streams(lab, tmp, conns, period=0.02)
            lab["client"].popen(["python3", "-c", PROBES, SERVER, str(UDP_PORT), str(conns), "8"])
            streams.advancing(30)
            time.sleep(1)
            # peers declared dead before the cut (a flap moves buckets: the flows of node n may
            # already be a survivor's at t0), and whether node n serves its share then
            pre = [cluster_status(nodes[k - 1]) for k in range(1, n + 1)]
            flaps.append(sum(p["deaths"] for c in pre for p in c["peers"]))
            served.append(len(pre[-1]["serves"]))
            gaps.append((max(c["longest_tick_gap"] for c in pre),
                         max(max(p["longest_gap"].values(), default=0) for c in pre for p in c["peers"])))
            before = time.time()
            # the sync port first: cut in/out first, node n sees its links down within a tick and
            # releases its buckets in a heartbeat the sync link still carries (a graceful handover
            # in milliseconds, not the abrupt death this measures)
            ports(lab, n, up=False, which=("sync", "in", "out"))
            t0 = time.time()  # the links are down by now (the command took t0 - before)
            spans.append(t0 - before)
            time.sleep(3)
            result = streams.finish()
        lo = 20000 + 1000 * n  # node n's range (cluster_lab)
        first: dict[tuple[int, int], float] = {}
        for line in cap.read_bytes().splitlines():
            m = SEG.match(line)
            if m and lo <= int(m.group(2)) <= lo + 999 and float(m.group(1)) > t0:
                first.setdefault((int(m.group(3)), int(m.group(2))), float(m.group(1)) - t0)
        taken = sorted(v for (dport, _), v in first.items() if dport == ECHO_PORT)
        probes = sorted(v for (dport, _), v in first.items() if dport == UDP_PORT)
        detect = [t["after_death_s"] for k in range(1, n) for t in cluster_status(nodes[k - 1])["takeovers"]
                  if t["after_death_s"] is not None]
        ok = not result["errors"] and result["sent"] == result["recv"]
        return taken, probes, detect, ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", type=int, nargs="+", default=[2, 3])
    a = ap.parse_args()
    for n in a.nodes:
        flows: list[float] = []
        udp: list[float] = []
        detects: list[float] = []
        intact = 0
        for r in range(a.runs):
            with tempfile.TemporaryDirectory(prefix="nkfo") as d:
                taken, probes, detect, ok = one_round(n, a.connections, Path(d))
            flows += taken
            udp += probes
            detects += detect
            intact += ok
            print(f"{n} nodes, round {r + 1}: {len(taken)} TCP flows taken over, first segment after "
                  f"{_median(taken)} (median); {len(probes)} UDP flows, {_median(probes)}; "
                  f"byte counts {'match' if ok else 'DO NOT match'}; peers declared dead before the cut: "
                  f"{flaps[-1]} (longest tick gap {_ms(gaps[-1][0])}, heartbeat gap {_ms(gaps[-1][1])}); "
                  f"node {n} served {served[-1]} buckets",
                  flush=True)
        print(f"== {n} nodes, {a.connections} TCP connections + {a.connections} UDP flows x {a.runs} rounds; "
              f"survivors' detection+commit (peer's last heartbeat to bucket commit) median "
              f"{_ms(statistics.median(detects))}; rounds with every byte echoed: {intact}/{a.runs}")
        print(f"   t0 = when `ip -batch` (links down) returned; it ran {_ms(statistics.median(spans))} (median), "
              "so a death may be up to that much earlier")
        for what, xs in (("UDP (cluster alone)", udp), ("TCP (with the client's RTO backoff)", flows)):
            if not xs:
                continue
            xs.sort()
            under = sum(f < 1 for f in xs) / len(xs)
            print(f"   {what}: {len(xs)} taken-over flows, first packet forwarded after the death: median "
                  f"{_ms(statistics.median(xs))}, p90 {_ms(xs[int(0.9 * (len(xs) - 1))])}, max {_ms(xs[-1])}; "
                  f"{under:.1%} within the 1 s goal")


def _median(xs: list[float]) -> str:
    return _ms(statistics.median(xs)) if xs else "-"


def _ms(x: float) -> str:
    return f"{x * 1000:.0f} ms"


if __name__ == "__main__":
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        sys.exit("bench/ha/failover needs root (network namespaces)")
    main()
