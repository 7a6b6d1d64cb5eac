"""bench/nfgrep-ebpf: nfgrep's kernel (eBPF) back end against the queue back end and
against no classification, side by side in one run, through a firewall namespace.

client ns -> fw ns -> server ns (labtraffic.TrafficLab with a firewall), real C
programs on both ends (iperf3; wrk against nginx), the three modes alternated
run by run (their order rotated):

- "none":  the fw forwards with its own stateful ruleset (conntrack on, as on
  any firewall acting on marks and labels; --bare: no ruleset at all), and
  nothing classifies; the other modes keep that ruleset and add nfgrep's;
- "queue": `nfkit nfgrep live --backend queue --queues 0:1` (every flow's first
  packets through NFQUEUE to the Python workers);
- "ebpf":  `nfkit nfgrep live --backend ebpf` (the classifier on tcx ingress of
  both fw interfaces; the queue takes only the flows it hands over).

Measured per mode:

1. bulk TCP: iperf3, one stream, --seconds: Gbit/s (wall) and the machine's
   busy CPU-seconds per GB moved (/proc/stat, every CPU).  Goal: ebpf >= 0.95x
   none.
2. new connections: wrk with "Connection: close" (a new TCP connection per
   request) from 4 client addresses to 4 server addresses (so the queue
   back end's two workers both get flows: NFQUEUE balances by addresses),
   every connection an HTTP flow to classify: connections/s (wall), flows
   classified/s (the daemon's status: queue workers and the kernel map), the
   machine's busy CPU-us and its softirq CPU-us per connection (the eBPF
   program runs in softirq, in no process), and the queue workers' own CPU.
   Goal: ebpf >= 5x queue in connections/s.
3. the program alone (BPF_PROG_TEST_RUN, the ebpf back end's classifier for
   the shipped library): ns per packet of a decided flow and per classified
   HTTP flow (SYN, SYN+ACK, request, reply), and the eBPF instructions and
   helper calls a decided flow's packet runs (`nfkit.nfgrep.ebpf.trace`).

Medians over --runs; the load average before and after is printed: the
machine is shared (2 cores, ~8 engineers' jobs), so compare modes within one
run only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nfkit.nfgrep.labtraffic import SERVER4, TrafficLab
from nfkit.service.daemon import query_status, wait_for_status

PAIRS = 4  # client/server address pairs of the connection load
NGINX = """
daemon off;
master_process off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    keepalive_timeout 0;
    server {{
        listen 8080 backlog=4096 reuseport;
        location / {{ return 200 "hello from nfkit\\n"; }}
    }}
}}
"""

FIREWALL = """
table inet bench_fw {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        ct state new accept
    }
}
"""


def machine_cpu() -> tuple[float, float]:
    """(busy, softirq) CPU-seconds of the whole machine so far (/proc/stat, every CPU)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(f[:8]) - f[3] - f[4]) / tick, f[6] / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def classified(status: dict) -> int:
    """Flows decided so far: by the queue workers, and (ebpf) by the kernel program (its
    counters: the flow map's entries undercount, a reused tuple replaces its entry)."""
    counts = (status.get("kernel_flows") or {}).get("counts") or {}
    return status["total"]["decided"] + sum(counts.get("decided", {}).values()) + \
        counts.get("expected", 0)


def settled(sock: Path, count: Callable[[dict], int] | None = None, step: float = 0.2) -> dict:
    """The daemon's status once its workers' published counters (``count``, `classified`
    by default) stop moving (they publish at most every 50 ms, and late while busy),
    looked at every ``step`` s, at most 25 times."""
    count = count or classified
    last = query_status(sock)
    for _ in range(25):
        time.sleep(step)
        now = query_status(sock)
        if count(now) == count(last):
            return now
        last = now
    return last


def stop(daemon: subprocess.Popen | None) -> None:
    """The mode's daemon stopped as a user stops it (SIGTERM), if it runs one."""
    if daemon:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)


def print_run(run: int, mode: str, res: dict[str, list[float]]) -> None:
    """One run's line: each figure's latest value; then a pause before the next mode."""
    print(f"run {run + 1} {mode}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in res.items()),
          flush=True)
    time.sleep(0.5)


def wrk_rate(out: str) -> tuple[float, int]:
    """Requests per second and errors (socket errors, non-2xx) from wrk's report."""
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise SystemExit(f"wrk gave no rate:\n{out}")
    rate = float(found.group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, errors + (int(m.group(1)) if m else 0)


def program_figures() -> dict[str, float]:
    """The classifier alone, in BPF_PROG_TEST_RUN, and its decided-flow path traced."""
    from nfkit.nfgrep.ebpf.program import Classifier, load_verified
    from nfkit.nfgrep.ebpf.replay import frame
    from nfkit.nfgrep.ebpf.trace import trace_packet

    c4, s4 = bytes([192, 0, 2, 2]), bytes([198, 51, 100, 2])
    out: dict[str, float] = {}
    with Classifier(load_verified(None)) as cl:
        per_flow = []
        for i in range(1000):
            port = 10000 + i
            ns = [cl.prog.test_run(frame(6, c4, s4, port, 80, 0x02, 1, b""))[2],
                  cl.prog.test_run(frame(6, s4, c4, 80, port, 0x12, 9, b""))[2],
                  cl.prog.test_run(frame(6, c4, s4, port, 80, 0x18, 2,
                                         b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"))[2],
                  cl.prog.test_run(frame(6, s4, c4, 80, port, 0x18, 10,
                                         b"HTTP/1.1 200 OK\r\n\r\n"))[2]]
            per_flow.append(sum(ns))
        out["ns per classified HTTP flow"] = statistics.median(per_flow)
        later = frame(6, c4, s4, 10000, 80, 0x10, 500, b"x" * 1400)
        out["ns per packet, decided flow"] = statistics.median(
            cl.prog.test_run(later, repeat=200000)[2] for _ in range(5))
        path = trace_packet(cl, later)
        out["eBPF insns per packet, decided flow"] = path.executed
        out["helper calls per packet, decided flow"] = len(path.helpers)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64, help="wrk connections in flight, in all")
    ap.add_argument("--modes", default="none,queue,ebpf")
    ap.add_argument("--bare", action="store_true",
                    help="no ruleset of the firewall's own (then 'none' runs without conntrack)")
    ap.add_argument("--no-program", action="store_true", help="skip the BPF_PROG_TEST_RUN figures")
    args = ap.parse_args()
    modes = [m for m in ("none", "queue", "ebpf") if m in args.modes.split(",")]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="nfkit-bench-ebpf-") as tmp, \
            TrafficLab(tmp, firewall=True) as tl:
        work = Path(tmp)
        clients = [f"192.0.2.{40 + i}" for i in range(PAIRS)]
        servers = [SERVER4] + [f"192.0.2.{100 + i}" for i in range(1, PAIRS)]
        for c in clients:
            tl.client.run(["ip", "addr", "add", f"{c}/32", "dev", "eth0"])
            tl.fw.run(["ip", "route", "replace", f"{c}/32", "dev", "eth0"])
        for s in servers[1:]:
            tl.server.run(["ip", "addr", "add", f"{s}/32", "dev", "eth0"])
            tl.fw.run(["ip", "route", "replace", f"{s}/32", "dev", "eth1"])
        for c, s in zip(clients, servers, strict=True):
            tl.client.run(["ip", "route", "replace", f"{s}/32", "dev", "eth0", "src", c])
        run = work / "nginx"
        run.mkdir()
        (work / "nginx.conf").write_text(NGINX.format(run=run))
        tl.serve("iperf3", ["iperf3", "-s", "-B", SERVER4, "-p", "5201"], 5201)
        tl.serve("nginx", ["nginx", "-c", str(work / "nginx.conf"), "-e", str(run / "nginx.err")],
                 8080)
        (work / "connlabel.conf").write_text("")
        # the firewall's own ruleset, the same in every mode: stateful, so conntrack runs in
        # all three (a firewall acting on ct marks and labels has it anyway); --bare leaves
        # the fw without any ruleset (no conntrack: the plain forwarding cost)
        if not args.bare:
            (work / "fw.nft").write_text(FIREWALL)
            tl.fw.run(["nft", "-f", str(work / "fw.nft")])
        results: dict[str, dict[str, list[float]]] = {m: {} for m in modes}
        for r in range(args.runs):
            order = modes[r % len(modes):] + modes[:r % len(modes)]
            for mode in order:
                res = results[mode]
                daemon = None
                sock = work / f"live{r}{mode}.sock"
                if mode != "none":
                    daemon = tl.fw.popen([sys.executable, "-m", "nfkit", "nfgrep", "live",
                                          "--queues", "0:1", "--connlabel",
                                          str(work / "connlabel.conf"), "--status-socket",
                                          str(sock), "--backend", mode])
                    wait_for_status(sock, lambda d=daemon: d.poll() is None, timeout=30)
                try:
                    busy0, _ = machine_cpu()
                    out = tl.client.run(["iperf3", "-c", SERVER4, "-p", "5201", "-t",
                                         str(args.seconds), "-J"], timeout=120).stdout
                    busy = machine_cpu()[0] - busy0
                    end = json.loads(out)["end"]
                    gbit = end["sum_received"]["bits_per_second"] / 1e9
                    moved = end["sum_received"]["bytes"] / 1e9
                    res.setdefault("bulk Gbit/s", []).append(gbit)
                    res.setdefault("bulk cpu-s per GB", []).append(busy / moved)
                    status = settled(sock) if daemon else None
                    before = classified(status) if status else 0
                    pids = [q["pid"] for q in status["queues"]] if status else []
                    wcpu0 = sum(cpu_seconds(p) for p in pids)
                    per = max(1, args.connections // PAIRS)
                    busy0, soft0 = machine_cpu()
                    procs = [tl.client.popen(
                        ["wrk", "-t1", f"-c{per}", f"-d{args.seconds}s", "-H", "Connection: close",
                         f"http://{s}:8080/"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True) for s in servers]
                    reports = [p.communicate(timeout=args.seconds + 60)[0] for p in procs]
                    busy, soft = (x - y for x, y in zip(machine_cpu(), (busy0, soft0), strict=True))
                    rates = [wrk_rate(o) for o in reports]
                    cps = sum(x for x, _ in rates)
                    conns = cps * args.seconds
                    res.setdefault("conn/s", []).append(cps)
                    res.setdefault("conn errors", []).append(sum(e for _, e in rates))
                    res.setdefault("machine cpu-us/conn", []).append(busy / conns * 1e6)
                    res.setdefault("softirq cpu-us/conn", []).append(soft / conns * 1e6)
                    if daemon:
                        status = settled(sock)
                        # over wrk's own duration, as its connection rate (the wall time
                        # around it includes starting and stopping four processes)
                        res.setdefault("classified/s", []).append(
                            (classified(status) - before) / args.seconds)
                        res.setdefault("worker cpu-us/conn", []).append(
                            (sum(cpu_seconds(p) for p in pids) - wcpu0) / conns * 1e6)
                finally:
                    stop(daemon)
                print_run(r, mode, res)
    program = program_figures() if "ebpf" in modes and not args.no_program else {}
    load_after = os.getloadavg()
    print(f"\nmedians of {args.runs} runs; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after (shared 2-core machine, other sessions' jobs running: noisy)")
    med = {m: {k: statistics.median(v) for k, v in results[m].items()} for m in modes}
    keys = list(dict.fromkeys(k for m in modes for k in med[m]))
    print(f"{'':24}" + "".join(f"{m:>12}" for m in modes))
    for k in keys:
        print(f"{k:24}" + "".join(f"{med[m][k]:12.2f}" if k in med[m] else f"{'-':>12}"
                                  for m in modes))
    if "ebpf" in modes and "none" in modes:
        print(f"bulk TCP ebpf / none: {med['ebpf']['bulk Gbit/s'] / med['none']['bulk Gbit/s']:.2f}x "
              "(goal >= 0.95x)")
    if "ebpf" in modes and "queue" in modes:
        print(f"new connections ebpf / queue: {med['ebpf']['conn/s'] / med['queue']['conn/s']:.2f}x "
              "(goal >= 5x)")
    if "queue" in modes and "none" in modes:
        print(f"new connections none / queue: {med['none']['conn/s'] / med['queue']['conn/s']:.2f}x "
              "(the most any back end can reach here)")
    for k, v in program.items():
        print(f"program: {k}: {v:.0f}")


if __name__ == "__main__":
    main()
