"""The eBPF classifier in a firewall namespace's packet path, against no classification.

client -- fw -- server (nfkit.lab.three_node); the classifier is attached with tcx
ingress links on both of the firewall's interfaces.  Measured in one run, the two
configurations alternated: bulk TCP throughput (iperf3, one stream), new connections
per second (short real exchanges: connect, one request line, the server's reply,
close; classified as HTTP by the kernel) and, through BPF_PROG_TEST_RUN, the
nanoseconds per packet the program costs.  Medians; the machine is shared (2 cores,
other jobs running): the load average is printed with the figures.

The queue back end (NFQUEUE, the live mode) is not on this branch: its column is
for the merge.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from nfkit.lab import three_node
from nfkit.nfgrep.ebpf.program import Classifier, load_verified

SERVER = "198.51.100.2"

CONNECT_LOOP = r"""
import socket, sys, time
n, port = int(sys.argv[1]), int(sys.argv[2])
t = time.perf_counter()
for _ in range(n):
    s = socket.create_connection((sys.argv[3], port))
    s.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
    while s.recv(4096):
        pass
    s.close()
print(n / (time.perf_counter() - t))
"""

REPLY_SERVER = r"""
import socket, sys
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(512)
while True:
    c, _ = srv.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    c.close()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3, help="iperf3 duration per run")
    ap.add_argument("--connections", type=int, default=1000, help="per connection-rate run")
    args = ap.parse_args()
    programs = load_verified(None)
    results: dict[str, dict[str, list[float]]] = {"none": {"bps": [], "cps": []},
                                                  "ebpf": {"bps": [], "cps": []}}
    with three_node("nkb") as lab:
        client, fw, server = lab["client"], lab["fw"], lab["server"]
        server.popen(["iperf3", "-s", "-B", SERVER, "-p", "5201"])
        server.popen([sys.executable, "-c", REPLY_SERVER, SERVER, "8080"])
        time.sleep(1)
        for run in range(args.runs):
            for config in ("none", "ebpf") if run % 2 == 0 else ("ebpf", "none"):
                cl = Classifier(programs) if config == "ebpf" else None
                try:
                    if cl is not None:
                        with fw.enter():
                            cl.attach("eth0", "ingress")
                            cl.attach("eth1", "ingress")
                    out = client.run(["iperf3", "-c", SERVER, "-p", "5201", "-t",
                                      str(args.seconds), "-J"], timeout=60).stdout
                    bps = json.loads(out)["end"]["sum_received"]["bits_per_second"]
                    cps = float(client.run([sys.executable, "-c", CONNECT_LOOP,
                                            str(args.connections), "8080", SERVER],
                                           timeout=300).stdout)
                    results[config]["bps"].append(bps)
                    results[config]["cps"].append(cps)
                    if cl is not None:
                        decided = sum(1 for k in cl.flows.keys()
                                      if (cl.flows.lookup(k) or b"\0")[0] == 1)
                        print(f"  run {run} ebpf: {decided} flows decided in the kernel",
                              file=sys.stderr)
                finally:
                    if cl is not None:
                        cl.close()
    med = {c: {k: statistics.median(v) for k, v in r.items()} for c, r in results.items()}
    with Classifier(programs) as cl:
        from nfkit.nfgrep.ebpf.replay import frame

        c4, s4 = bytes([192, 0, 2, 2]), bytes([198, 51, 100, 2])
        # CPU per classified flow in the program: SYN, SYN+ACK, request, reply (HTTP)
        per_flow = []
        firsts = []
        for i in range(2000):
            port = 10000 + i
            ns = [cl.prog.test_run(frame(6, c4, s4, port, 80, 0x02, 1, b""))[2],
                  cl.prog.test_run(frame(6, s4, c4, 80, port, 0x12, 9, b""))[2],
                  cl.prog.test_run(frame(6, c4, s4, port, 80, 0x18, 2,
                                         b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"))[2],
                  cl.prog.test_run(frame(6, s4, c4, 80, port, 0x18, 10,
                                         b"HTTP/1.1 200 OK\r\n\r\n"))[2]]
            per_flow.append(sum(ns))
            firsts.append(ns[2])
        first = statistics.median(firsts)
        later = cl.prog.test_run(frame(6, c4, s4, 10000, 80, 0x18, 500, b"x" * 1400),
                                 repeat=100000)[2]
    print(f"load average {os.getloadavg()[0]:.1f} (shared 2-core machine); medians of "
          f"{args.runs} runs")
    print(f"{'':28} {'no classification':>18} {'eBPF':>12} {'ratio':>7}")
    print(f"{'bulk TCP (Gbit/s)':28} {med['none']['bps'] / 1e9:18.2f} "
          f"{med['ebpf']['bps'] / 1e9:12.2f} {med['ebpf']['bps'] / med['none']['bps']:7.2f}")
    print(f"{'new connections / s':28} {med['none']['cps']:18.0f} {med['ebpf']['cps']:12.0f} "
          f"{med['ebpf']['cps'] / med['none']['cps']:7.2f}")
    print(f"in the program (BPF_PROG_TEST_RUN): an HTTP flow classified (SYN, SYN+ACK, "
          f"request, reply) {statistics.median(per_flow) / 1000:.1f} us of CPU, its request "
          f"{first / 1000:.1f} us; a later 1400-byte packet of a decided flow {later} ns")


if __name__ == "__main__":
    main()
