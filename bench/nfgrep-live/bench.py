"""bench/nfgrep-live: the cost of `nfkit nfgrep live` in the packet path of a firewall.

client ns -> fw ns -> server ns (TrafficLab with a firewall namespace), real
programs, side by side in one run, alternating: the fw with no queue at all
("plain") and the fw running `nfkit nfgrep live --queues A:B` ("live").

1. Bulk TCP: iperf3 for --seconds, bits per second.  Goal: live >= 0.9x plain.
2. New connections per second: short real HTTP exchanges (GET, 200, close)
   from --concurrency sockets over 8 client addresses (so a queue range
   spreads them: the NFQUEUE flow hash is over addresses) to a preforked
   server; every one classified by live.  Goal: 10,000 classified flows/s.
   Also the workers' CPU time per classified flow (flows per worker
   CPU-second), which the machine's load moves less than wall-clock rates.
3. Added latency: one connection at a time, time to connect (SYN, SYN-ACK:
   both queued) and to the first response byte (the request queued too);
   live minus plain at the median and 99th percentile.  Goal: p99 < 1 ms.

Prints medians over --runs and the ratios.  The machine is shared: figures
move with what else runs; compare within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nfkit.nfgrep.labtraffic import CLIENT4, SERVER4, TrafficLab
from nfkit.service.daemon import query_status, wait_for_status

SERVER = r'''
import os, socket, sys
host, port, procs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = b"hello from nfkit\n" * 8
reply = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body
for _ in range(procs - 1):
    if os.fork() == 0:
        break
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind((host, port))
s.listen(4096)
while True:
    c, _ = s.accept()
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
        c.sendall(reply)
    except OSError:
        pass
    c.close()
'''

LOAD = r'''
import json, selectors, socket, sys, time, errno
host, port, seconds, conc = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
sources = sys.argv[5].split(",")
req = b"GET /x HTTP/1.0\r\nHost: bench.example\r\nUser-Agent: nfkit-bench\r\n\r\n"
sel = selectors.DefaultSelector()
done = errors = 0
n = 0
def start():
    global n
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.bind((sources[n % len(sources)], 0))
    n += 1
    s.setblocking(False)
    try:
        s.connect((host, port))
    except BlockingIOError:
        pass
    sel.register(s, selectors.EVENT_WRITE, [b""])
end = time.monotonic() + seconds
for _ in range(conc):
    start()
t0 = time.monotonic()
while time.monotonic() < end:
    for key, ev in sel.select(0.5):
        s = key.fileobj
        if ev & selectors.EVENT_WRITE:
            try:
                s.send(req)
                sel.modify(s, selectors.EVENT_READ, key.data)
            except OSError:
                errors += 1; sel.unregister(s); s.close(); start()
            continue
        try:
            chunk = s.recv(65536)
        except OSError:
            errors += 1; sel.unregister(s); s.close(); start(); continue
        if chunk:
            key.data[0] += chunk
            continue
        ok = key.data[0].startswith(b"HTTP/1.0 200")
        done += ok; errors += not ok
        sel.unregister(s); s.close(); start()
print(json.dumps({"connections": done, "errors": errors, "seconds": time.monotonic() - t0}))
'''

LATENCY = r'''
import json, socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
req = b"GET /x HTTP/1.0\r\nHost: bench.example\r\n\r\n"
connect, first = [], []
for _ in range(count):
    t0 = time.perf_counter()
    s = socket.create_connection((host, port))
    t1 = time.perf_counter()
    s.sendall(req)
    s.recv(1)
    t2 = time.perf_counter()
    while s.recv(65536):
        pass
    s.close()
    connect.append(t1 - t0); first.append(t2 - t0)
    time.sleep(0.002)
print(json.dumps({"connect": connect, "first_byte": first}))
'''


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--queues", default="0:1")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency-count", type=int, default=400)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nfkit-bench-live-") as tmp, \
            TrafficLab(tmp, firewall=True) as tl:
        work = Path(tmp)
        (work / "server.py").write_text(SERVER)
        (work / "load.py").write_text(LOAD)
        (work / "latency.py").write_text(LATENCY)
        sources = [CLIENT4] + [f"192.0.2.{i}" for i in range(40, 47)]
        for a in sources[1:]:
            tl.client.run(["ip", "addr", "add", f"{a}/24", "dev", "eth0"])
        tl.fw.run(["ip", "route", "replace", "192.0.2.0/24", "dev", "eth0"])
        tl.fw.run(["ip", "route", "replace", f"{SERVER4}/32", "dev", "eth1"])
        tl.serve("iperf3", ["iperf3", "-s", "-B", SERVER4, "-p", "5201"], 5201)
        tl.serve("http", [sys.executable, str(work / "server.py"), SERVER4, "8080", "2"], 8080)
        (work / "connlabel.conf").write_text("")
        results: dict[str, dict[str, list[float]]] = {"plain": {}, "live": {}}
        for run in range(args.runs):
            for mode in ("plain", "live"):
                daemon = None
                sock = work / f"live{run}.sock"
                if mode == "live":
                    daemon = tl.fw.popen([sys.executable, "-m", "nfkit", "nfgrep", "live", "--queues",
                                          args.queues, "--connlabel", str(work / "connlabel.conf"),
                                          "--status-socket", str(sock)])
                    wait_for_status(sock, lambda d=daemon: d.poll() is None, timeout=30)
                r = results[mode]
                out = tl.client.run(["iperf3", "-c", SERVER4, "-p", "5201", "-t", str(args.seconds),
                                     "-J"]).stdout
                bps = json.loads(out)["end"]["sum_received"]["bits_per_second"]
                r.setdefault("gbit/s", []).append(bps / 1e9)
                before = query_status(sock)["total"]["decided"] if daemon else 0
                pids = [q["pid"] for q in query_status(sock)["queues"]] if daemon else []
                cpu0 = sum(cpu_seconds(p) for p in pids)
                load = json.loads(tl.client.run([sys.executable, str(work / "load.py"), SERVER4, "8080",
                                                 str(args.seconds), str(args.concurrency),
                                                 ",".join(sources)], timeout=120).stdout)
                r.setdefault("conn/s", []).append(load["connections"] / load["seconds"])
                r.setdefault("errors", []).append(load["errors"])
                if daemon:
                    status = query_status(sock)
                    decided = status["total"]["decided"] - before
                    r.setdefault("classified/s", []).append(decided / load["seconds"])
                    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
                    r.setdefault("flows per worker cpu-s", []).append(decided / cpu if cpu else 0.0)
                    r.setdefault("enobufs", []).append(status["total"]["enobufs"])
                lat = json.loads(tl.client.run([sys.executable, str(work / "latency.py"), SERVER4, "8080",
                                                str(args.latency_count)], timeout=120).stdout)
                for what in ("connect", "first_byte"):
                    for p in (50, 99):
                        r.setdefault(f"{what} p{p} ms", []).append(pct(lat[what], p) * 1000)
                if daemon:
                    daemon.send_signal(signal.SIGTERM)
                    daemon.wait(15)
                print(f"run {run + 1} {mode}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in r.items()),
                      flush=True)
                time.sleep(0.5)
        print("\nmedians over", args.runs, "runs (shared 2-core machine: noisy)")
        print(f"{'':22} {'plain':>10} {'live':>10} {'live/plain':>11}")
        for key in results["plain"]:
            p = statistics.median(results["plain"][key])
            v = statistics.median(results["live"][key])
            ratio = f"{v / p:.2f}x" if p else "-"
            print(f"{key:22} {p:10.3f} {v:10.3f} {ratio:>11}")
        for key in ("classified/s", "flows per worker cpu-s", "enobufs"):
            print(f"{key:22} {'':10} {statistics.median(results['live'][key]):10.1f}")
        for what in ("connect", "first_byte"):
            for p in (50, 99):
                k = f"{what} p{p} ms"
                added = statistics.median(results["live"][k]) - statistics.median(results["plain"][k])
                print(f"added {what} latency p{p}: {added:.3f} ms")


if __name__ == "__main__":
    main()
