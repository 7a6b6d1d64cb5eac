"""bench/nfgrep-live: the cost of `nfkit nfgrep live` in the packet path of a firewall,
for both back ends.

client ns -> fw ns -> server ns (TrafficLab with a firewall namespace), real
programs, side by side in one run, alternating: the fw with no classification
("plain"), `nfkit nfgrep live --backend queue --queues A:B` ("queue": every
flow's first packets in userspace) and `--backend ebpf` ("ebpf": the kernel
classifier on tcx, the queue taking only the flows it hands over).

1. Bulk TCP: iperf3 for --seconds, bits per second.  Goals: queue >= 0.9x
   plain (issue 17), ebpf >= 0.95x plain (issue 18).
2. New connections per second: short real HTTP exchanges (GET, 200, close)
   from --concurrency sockets over 8 client addresses (so a queue range
   spreads them: the NFQUEUE flow hash is over addresses) to a preforked
   server; every one classified.  Goals: 10,000 classified flows/s (queue),
   ebpf >= 5x queue.  CPU per classified flow: the queue workers' CPU time,
   and for every mode the whole machine's busy CPU time per connection
   (/proc/stat; the eBPF program runs in softirq, in no process) -- the
   machine is shared, so that figure carries the others' load too.
3. Added latency: one connection at a time, time to connect and to the first
   response byte; minus plain at the median and 99th percentile.  Goal: p99
   < 1 ms.

The ceiling: the same client/server pair with no queue at all ("plain"), in
the same run; classified flows/s is printed as a fraction of it, per run and
as the median.  Beside each figure: the whole machine's busy share during the
phase (CPU beside wall: the machine is shared, 100 % means others' work and
ours were queueing for the CPUs), the load average at the start and the end,
the packets the kernel gave the queues (per classified flow, and during the
bulk transfer: the queue's own id sequence) and the queue workers' CPU per
classified flow.  --perf PREFIX records the workers (`perf record -g -p`)
during the first run's connection load.

Prints medians over --runs and the ratios.  --modes picks the modes (plain
always runs: the base).  worker.py beside this measures the queue worker's
Python per flow alone, without the kernel.  The machine is shared: figures
move with what else runs; compare within one run only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nfkit.nfgrep.labtraffic import CLIENT4, SERVER4, TrafficLab
from nfkit.service.daemon import query_status, wait_for_status

# nginx's configuration and wrk's report are read as bench/nfgrep-ebpf does
_spec = importlib.util.spec_from_file_location("ebpf_bench", Path(__file__).parent.parent / "nfgrep-ebpf" / "bench.py")
assert _spec is not None and _spec.loader is not None
ebpf_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ebpf_bench)
WRK_PAIRS = 4  # wrk processes, each to a server address of its own from a client address of its own

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


def machine_busy() -> float:
    """Busy CPU-seconds of the whole machine so far (every CPU; /proc/stat less idle and iowait)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def pids_running(needle: str) -> list[int]:
    """Processes whose command line contains ``needle`` (a path of this run's own)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle.encode() in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children so far (the load generator)."""
    t = os.times()
    return t.children_user + t.children_system


def busy_percent(busy0: float, wall0: float) -> float:
    """The whole machine's busy share since (busy0, wall0), in percent of all its CPUs."""
    return (machine_busy() - busy0) / ((time.monotonic() - wall0) * (os.cpu_count() or 1)) * 100


def queued(sock: Path) -> int:
    """Packets the kernel ever gave the daemon's queues (their id sequences)."""
    return sum(q["kernel"]["id_sequence"] or 0 for q in query_status(sock)["queues"])


def classified(status: dict) -> int:
    """Flows decided so far: by the queue workers, and (ebpf) in the kernel's flow map."""
    kernel = status.get("kernel_flows") or {"states": {}}
    return status["total"]["decided"] + sum(v for k, v in kernel["states"].items()
                                            if k.startswith("decided"))


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]


def wrk_load(tl: TrafficLab, servers: list[str], seconds: float, concurrency: int) -> dict[str, float]:
    """wrk with "Connection: close" (a new TCP connection per request), one wrk process per
    server address: connections, errors, seconds (wrk's own duration)."""
    per = max(1, concurrency // len(servers))
    procs = [tl.client.popen(["wrk", "-t1", f"-c{per}", f"-d{seconds:g}s", "-H", "Connection: close",
                              f"http://{a}:8080/x"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for a in servers]
    rates = [ebpf_bench.wrk_rate(p.communicate(timeout=seconds + 60)[0]) for p in procs]
    return {"connections": sum(r for r, _ in rates) * seconds, "errors": sum(e for _, e in rates),
            "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--queues", default="0:1")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--load", choices=("wrk", "python"), default="wrk",
                    help="the connection load: wrk against nginx (C on both ends), or the Python "
                         "client and server of this file")
    ap.add_argument("--latency-count", type=int, default=400)
    ap.add_argument("--live-args", default="",
                    help="more arguments for `nfkit nfgrep live` (e.g. \"--nice 0\")")
    ap.add_argument("--nfkit", default="",
                    help="the command that runs nfkit in the fw namespace (default: this python -m nfkit)")
    ap.add_argument("--base", default="",
                    help="a mode 'base' too: the queue back end run by this command instead (e.g. \"env "
                         "PYTHONPATH=/tmp/main/src .venv/bin/python -m nfkit\", a checkout of main): before "
                         "and after side by side in one run")
    ap.add_argument("--cprofile", default="",
                    help="run the daemon through profiled.py: each worker's cProfile into PREFIX-qN-PID.prof")
    ap.add_argument("--perf", default="",
                    help="record `perf record -g -p WORKERS` into PREFIX-MODE.data during each mode's connection load")
    ap.add_argument("--py-spy", default="",
                    help="record the workers' Python (`py-spy record`, if installed) into PREFIX-MODE-PID.txt "
                         "during the first run's connection load")
    ap.add_argument("--modes", default="plain,queue,ebpf",
                    help="comma-separated, of plain, queue, ebpf (plain is always run: the ceiling)")
    args = ap.parse_args()
    load_start = os.getloadavg()
    modes = tuple(m for m in ("plain", "base", "queue", "ebpf")
                  if m == "plain" or m in args.modes.split(",") or (m == "base" and args.base))
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
        # wrk cannot pick its source address: one server address per wrk process, each reached
        # from its own client address (a route with `src`), so the NFQUEUE flow hash (over
        # addresses) spreads the connections over a queue range
        targets = [SERVER4] + [f"198.51.100.{100 + i}" for i in range(1, WRK_PAIRS)]
        for i, a in enumerate(targets):
            if a != SERVER4:
                tl.server.run(["ip", "addr", "add", f"{a}/32", "dev", "eth0"])
                tl.fw.run(["ip", "route", "replace", f"{a}/32", "dev", "eth1"])
            tl.client.run(["ip", "route", "replace", f"{a}/32", "dev", "eth0", "src", sources[1 + i]])
        tl.serve("iperf3", ["iperf3", "-s", "-B", SERVER4, "-p", "5201"], 5201)
        if args.load == "wrk":
            run_dir = work / "nginx"
            run_dir.mkdir()
            (work / "nginx.conf").write_text(ebpf_bench.NGINX.format(run=run_dir))
            tl.serve("http", ["nginx", "-c", str(work / "nginx.conf"), "-e", str(run_dir / "nginx.err")], 8080)
            servers = pids_running(str(work / "nginx.conf"))
        else:
            tl.serve("http", [sys.executable, str(work / "server.py"), "0.0.0.0", "8080", "2"], 8080)
            servers = pids_running(str(work / "server.py"))
        (work / "connlabel.conf").write_text("")
        results: dict[str, dict[str, list[float]]] = {m: {} for m in modes}
        for run in range(args.runs):
            for mode in modes:
                daemon = None
                sock = work / f"live{run}{mode}.sock"
                if mode != "plain":
                    nfkit = args.nfkit.split() or [sys.executable, "-m", "nfkit"]
                    if mode == "base":
                        nfkit = args.base.split()
                    elif args.cprofile:
                        nfkit = [sys.executable, str(Path(__file__).with_name("profiled.py")),
                                 f"{args.cprofile}-{mode}{run}"]
                    daemon = tl.fw.popen([*nfkit, "nfgrep", "live", "--queues",
                                          args.queues, "--connlabel", str(work / "connlabel.conf"),
                                          "--status-socket", str(sock), "--backend",
                                          "queue" if mode == "base" else mode,
                                          *args.live_args.split()])
                    wait_for_status(sock, lambda d=daemon: d.poll() is None, timeout=30)
                r = results[mode]
                taken0 = queued(sock) if daemon else 0
                busy0, wall0 = machine_busy(), time.monotonic()
                out = tl.client.run(["iperf3", "-c", SERVER4, "-p", "5201", "-t", str(args.seconds),
                                     "-J"]).stdout
                r.setdefault("bulk: machine busy %", []).append(busy_percent(busy0, wall0))
                bps = json.loads(out)["end"]["sum_received"]["bits_per_second"]
                r.setdefault("gbit/s", []).append(bps / 1e9)
                if daemon:
                    r.setdefault("bulk: queued packets", []).append(queued(sock) - taken0)
                status0 = ebpf_bench.settled(sock, classified, 0.1) if daemon else {}
                before = classified(status0) if daemon else 0
                pids = [q["pid"] for q in query_status(sock)["queues"]] if daemon else []
                cpu0 = sum(cpu_seconds(p) for p in pids)
                own0 = children_cpu() + sum(cpu_seconds(p) for p in servers) + cpu0
                taken0 = queued(sock) if daemon else 0
                busy0, wall0 = machine_busy(), time.monotonic()
                perf = None
                if args.perf and run == 0 and pids:  # the queue workers only: the machine is shared
                    perf = subprocess.Popen(["perf", "record", "-q", "-g", "-o", f"{args.perf}-{mode}.data",
                                             "-p", ",".join(map(str, pids)), "--", "sleep", str(args.seconds)])
                spies = [subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-r", "500",
                                           "-f", "raw", "-o", f"{args.py_spy}-{mode}-{p}.txt", "-p", str(p),
                                           "-d", str(int(args.seconds))],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                         for p in (pids if args.py_spy and run == 0 else [])]
                if args.load == "wrk":
                    load = wrk_load(tl, targets, args.seconds, args.concurrency)
                else:
                    load = json.loads(tl.client.run([sys.executable, str(work / "load.py"), SERVER4, "8080",
                                                     str(args.seconds), str(args.concurrency),
                                                     ",".join(sources)], timeout=120).stdout)
                r.setdefault("conn: machine busy %", []).append(busy_percent(busy0, wall0))
                busy = machine_busy() - busy0
                own = children_cpu() + sum(cpu_seconds(p) for p in servers + pids) - own0
                if perf is not None:
                    perf.wait()
                for spy in spies:
                    spy.wait()
                conns = max(1, load["connections"])
                r.setdefault("conn/s", []).append(load["connections"] / load["seconds"])
                r.setdefault("errors", []).append(load["errors"])
                r.setdefault("machine cpu-us/conn", []).append(busy / conns * 1e6)
                r.setdefault("own cpu-us/conn", []).append(own / conns * 1e6)
                if daemon:
                    status = ebpf_bench.settled(sock, classified, 0.1)
                    decided = classified(status) - before
                    r.setdefault("classified/s", []).append(decided / load["seconds"])
                    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
                    r.setdefault("worker cpu-us/flow", []).append(cpu / max(1, decided) * 1e6)
                    r.setdefault("worker cpu-us/conn", []).append(cpu / conns * 1e6)
                    r.setdefault("queued packets/flow", []).append((queued(sock) - taken0) / max(1, decided))
                    r.setdefault("enobufs", []).append(status["total"]["enobufs"])
                    for what in ("flows", "unknown", "undecided_dropped"):  # flows the workers saw, and how they ended
                        r.setdefault(f"{what}/s", []).append(
                            (status["total"][what] - status0["total"][what]) / load["seconds"])
                lat = json.loads(tl.client.run([sys.executable, str(work / "latency.py"), SERVER4, "8080",
                                                str(args.latency_count)], timeout=120).stdout)
                for what in ("connect", "first_byte"):
                    for p in (50, 99):
                        r.setdefault(f"{what} p{p} ms", []).append(pct(lat[what], p) * 1000)
                ebpf_bench.stop(daemon)
                ebpf_bench.print_run(run, mode, r)
        report(args, modes, results, load_start)


def report(args: argparse.Namespace, modes: tuple[str, ...], results: dict[str, dict[str, list[float]]],
           load_start: tuple[float, float, float]) -> None:
    """Medians over the runs, the ratios, the goals."""
    print(f"\nmedians over {args.runs} runs, load {args.load} (shared 2-core machine: noisy)")
    print(f"{'':22} " + " ".join(f"{m:>10}" for m in modes) + " "
          + " ".join(f"{m + '/pl':>9}" for m in modes[1:]))
    med = {m: {k: statistics.median(v) for k, v in results[m].items()} for m in modes}
    for key in results["plain"]:
        base = med["plain"][key]
        print(f"{key:22} " + " ".join(f"{med[m][key]:10.3f}" for m in modes) + " "
              + " ".join(f"{med[m][key] / base if base else 0:8.2f}x" for m in modes[1:]))
    for key in ("classified/s", "worker cpu-us/flow", "worker cpu-us/conn", "queued packets/flow", "bulk: queued packets",
                "enobufs"):
        print(f"{key:22} {'':10} " + " ".join(f"{med[m][key]:10.1f}" for m in modes[1:]))
    print("the ceiling: this client/server pair with no queue at all, in the same run: "
          f"{med['plain']['conn/s']:,.0f} conn/s (runs: "
          + ", ".join(f"{v:,.0f}" for v in results["plain"]["conn/s"]) + ")")
    for m in modes[1:]:
        print(f"{m}: classified flows/s {med[m]['classified/s']:,.0f} = "
              f"{med[m]['classified/s'] / med['plain']['conn/s']:.2f}x the ceiling (per run: "
              + ", ".join(f"{c / p:.2f}x" for c, p in zip(results[m]["classified/s"],
                                                         results["plain"]["conn/s"], strict=True))
              + "); bulk " + f"{med[m]['gbit/s'] / med['plain']['gbit/s']:.2f}x (per run: "
              + ", ".join(f"{c / p:.2f}x" for c, p in zip(results[m]["gbit/s"], results["plain"]["gbit/s"],
                                                         strict=True)) + ")")
    for m in modes[1:]:
        print(f"{m}: CPU of this bench's own processes per connection (load generator, server, "
              f"queue workers) {med[m]['own cpu-us/conn']:.0f} us against plain's "
              f"{med['plain']['own cpu-us/conn']:.0f} us; the whole machine's "
              f"{med[m]['machine cpu-us/conn']:.0f} against {med['plain']['machine cpu-us/conn']:.0f} us: "
              f"two CPUs of their own would take about {2e6 / med[m]['machine cpu-us/conn']:,.0f} conn/s "
              f"({2e6 / med['plain']['machine cpu-us/conn']:,.0f} plain)")
    print("load average at the start:", " ".join(f"{v:.1f}" for v in load_start))
    if "ebpf" in modes and "queue" in modes:
        for key in ("conn/s", "classified/s", "machine cpu-us/conn"):
            print(f"ebpf/queue {key}: {med['ebpf'][key] / med['queue'][key]:.2f}x")
    print("load average at the end:", " ".join(f"{v:.1f}" for v in os.getloadavg()))
    for m in modes[1:]:
        for what in ("connect", "first_byte"):
            for p in (50, 99):
                k = f"{what} p{p} ms"
                print(f"{m}: added {what} latency p{p}: {med[m][k] - med['plain'][k]:.3f} ms")


if __name__ == "__main__":
    main()
