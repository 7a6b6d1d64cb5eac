"""nat66: forwarding with NPTv6 against plain routing, and reaction times (bench/nat66/run).

1. Forwarding: client (fd01:203:405:1::2) -- router -- server (2001:db8:ff::2).
   Each run measures both modes side by side, alternating: plain routing (no
   ruleset at all in the router) and NPTv6 as `nfkit nat66 apply` writes it
   (the kernel's SNPT/DNPT targets in nfkit's chains, conntrack loaded by
   nfkit's table).  iperf3: TCP throughput, and UDP packets per second received
   at the server with 64-byte payloads sent as fast as the client can.
2. Reaction: the multihomed lab (two ISPs) with `nfkit nat66 run`; each event
   (isp1's side of wan0 down, up again, the delegated prefix on wan0 replaced)
   is timed from just before the `ip` command to the daemon's record of rules
   committed and stale entries flushed (wall clock, same host), and by the
   daemon itself (from noticing the change).  Before each link loss ENTRIES
   conntrack entries are put on uplink 1 (ct mark 1) for the flush to remove.

Medians (and the distribution of reaction times).  The machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nfkit.conntrack import ConntrackTable, Entry, Filter, Tuple
from nfkit.lab import Lab, Namespace, multihomed
from nfkit.service.daemon import query_status, wait_for_status

NFKIT = os.path.join(os.path.dirname(sys.executable), "nfkit")
INSIDE, OUTSIDE = "fd01:203:405::/48", "2001:db8:1::/48"
CLIENT, SERVER = "fd01:203:405:1::2", "2001:db8:ff::2"
MAPPED = "2001:db8:1:d550::2"  # RFC 6296's image of CLIENT (nfkit nat66 map)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- forwarding

def forwarding_lab(lab: Lab) -> tuple[Namespace, Namespace, Namespace]:
    client, router, server = lab.add("c"), lab.add("r"), lab.add("s")
    lab.link(client, router, [f"{CLIENT}/64"], ["fd01:203:405:1::1/64"], "eth0", "lan0")
    lab.link(router, server, ["2001:db8:ff::1/64"], [f"{SERVER}/64"], "wan0", "eth0")
    router.sysctl("net.ipv6.conf.all.forwarding", "1")
    client.run("ip -6 route add 2001:db8:ff::/64 via fd01:203:405:1::1")
    for prefix in (INSIDE, OUTSIDE):  # plain routing answers the inside, NPTv6 the outside
        server.run(f"ip -6 route add {prefix} via 2001:db8:ff::1")
    server.popen(["iperf3", "-s", "-B", SERVER])
    server.run(["sh", "-c", "for i in $(seq 50); do ss -ltn | grep -q :5201 && exit 0; sleep 0.1; done; exit 1"])
    return client, router, server


def set_mode(router: Namespace, mode: str, conf: Path) -> None:
    router.run("nft flush ruleset")
    if mode == "nptv6":
        router.run([NFKIT, "nat66", "apply", str(conf)])


def iperf(client: Namespace, seconds: float, udp: bool) -> float:
    args = ["iperf3", "-c", SERVER, "-B", CLIENT, "-t", str(seconds), "-J"]
    if udp:
        args += ["-u", "-l", "64", "-b", "0"]
    for _attempt in range(3):  # the server takes one test at a time; a busy answer is retried
        out = client.run(args, check=False, timeout=seconds + 30)
        if out.returncode == 0:
            break
        time.sleep(0.5)
    else:
        raise SystemExit(f"bench: iperf3 failed: {out.stdout[-300:]} {out.stderr[-300:]}")
    end = json.loads(out.stdout)["end"]
    if udp:
        s = end["sum"]
        return (s["packets"] - s["lost_packets"]) / s["seconds"]
    return float(end["sum_received"]["bits_per_second"])


def forwarding(runs: int, seconds: float) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    with Lab("nkb") as lab, tempfile.TemporaryDirectory() as tmp:
        client, router, server = forwarding_lab(lab)
        conf = Path(tmp) / "nat66.toml"
        conf.write_text(f'[[npt]]\ninside = "{INSIDE}"\noutside = "{OUTSIDE}"\ninterface = "wan0"\n')
        for i in range(runs):
            for mode in ("routing", "nptv6") if i % 2 == 0 else ("nptv6", "routing"):
                set_mode(router, mode, conf)
                if mode == "nptv6":  # the client answers at its mapped address: NPTv6 is there
                    server.run(["ping", "-6", "-c", "1", "-W", "2", MAPPED])
                tcp = iperf(client, seconds, udp=False)
                pps = iperf(client, seconds, udp=True)
                results.setdefault(f"{mode} tcp bit/s", []).append(tcp)
                results.setdefault(f"{mode} udp pps", []).append(pps)
                say(f"run {i + 1}/{runs} {mode:8} tcp {tcp / 1e9:6.2f} Gbit/s  udp {pps / 1e3:7.1f} kpps")
    return results


# ---------------------------------------------------------------- reaction

def fill(router: Namespace, n: int) -> int:
    """``n`` UDP entries on uplink 1 (ct mark 1), made over ctnetlink."""
    with router.enter():
        table = ConntrackTable()
    with table:
        entries = [Entry(Tuple(f"fd01:203:405:1::{1 + i // 50000:x}", SERVER, 17, 1024 + i % 50000, 53),
                         timeout=600, mark=1) for i in range(n)]
        res = table.create_many(entries)
        if res.failed:
            raise SystemExit(f"bench: creating entries failed: {res.failed}")
        return table.count(Filter(mark=1, mark_mask=0xFFFFFFFF))


def marked(router: Namespace) -> int:
    with router.enter():
        table = ConntrackTable()
    with table:
        return table.count(Filter(mark=1, mark_mask=0xFFFFFFFF))


def wait_change(sock: Path, since: float, what: str) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for c in query_status(sock)["changes"]:
            if c["time"] >= since and what in c["what"]:
                return c  # type: ignore[no-any-return]
        time.sleep(0.005)
    raise SystemExit(f"bench: the daemon recorded no {what!r}: {query_status(sock)['changes'][-3:]}")


def reaction(events: int, entries: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    prefixes = ["2001:db8:1::/48", "2001:db8:3::/48"]
    with Lab("nkb") as lab, tempfile.TemporaryDirectory() as tmp:
        multihomed(lab, [CLIENT], [prefixes[0], "2001:db8:2::/48"], SERVER)
        router, isp1, srv = lab["r"], lab["isp1"], lab["srv"]
        isp1.run(f"ip -6 route add {prefixes[1]} via 2001:db8:a1::2")
        srv.run(f"ip -6 route add {prefixes[1]} via 2001:db8:b1::1")
        router.run(f"ip -6 addr add {prefixes[0].replace('::/48', '::1/48')} dev wan0")
        sock = Path(tmp) / "nat66.sock"
        conf = Path(tmp) / "nat66.toml"
        conf.write_text(f'[daemon]\nstatus = "{sock}"\n[multihoming]\ninside = "{INSIDE}"\n'
                        '[[uplink]]\ninterface = "wan0"\noutside = "address"\ngateway = "2001:db8:a1::1"\n'
                        'mark = 1\ntable = 101\n'
                        '[[uplink]]\ninterface = "wan1"\noutside = "2001:db8:2::/48"\n'
                        'gateway = "2001:db8:a2::1"\nmark = 2\ntable = 102\n')
        daemon = router.popen([NFKIT, "nat66", "run", str(conf)])
        wait_for_status(sock, lambda: daemon.poll() is None)
        current = 0
        for i in range(events):
            # link loss, with entries to flush
            have = fill(router, entries)
            t0 = time.time()
            isp1.run("ip link set eth0 down")
            c = wait_change(sock, t0, "wan0 down")
            left = marked(router)
            results.setdefault("link loss: to committed+flushed (s)", []).append(c["time"] - t0)
            results.setdefault("link loss: daemon's own (s)", []).append(c["seconds"])
            results.setdefault("link loss: entries flushed", []).append(c["flushed"])
            if left:
                raise SystemExit(f"bench: {left} of {have} entries on the dead uplink left")
            t0 = time.time()
            isp1.run("ip link set eth0 up")
            c = wait_change(sock, t0, "wan0 up")
            results.setdefault("link back: to committed (s)", []).append(c["time"] - t0)
            isp1.run(f"ip -6 route replace {prefixes[current]} via 2001:db8:a1::2")
            # prefix change, with entries to flush
            fill(router, entries)
            nxt = 1 - current
            t0 = time.time()
            router.run(f"ip -6 addr add {prefixes[nxt].replace('::/48', '::1/48')} dev wan0")
            router.run(f"ip -6 addr del {prefixes[current].replace('::/48', '::1/48')} dev wan0")
            c = wait_change(sock, t0, f"-> {prefixes[nxt]}")
            left = marked(router)
            results.setdefault("prefix change: to committed+flushed (s)", []).append(c["time"] - t0)
            results.setdefault("prefix change: daemon's own (s)", []).append(c["seconds"])
            if left:
                raise SystemExit(f"bench: {left} entries of the old prefix left")
            current = nxt
            say(f"event round {i + 1}/{events}: link loss {results['link loss: to committed+flushed (s)'][-1] * 1000:.0f} ms, "
                f"prefix change {results['prefix change: to committed+flushed (s)'][-1] * 1000:.0f} ms")
        daemon.terminate()
        daemon.wait(5)
    return results


# ---------------------------------------------------------------- report

def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--runs", type=int, default=5, help="forwarding runs (each: both modes)")
    ap.add_argument("--seconds", type=float, default=3, help="seconds per iperf3 test")
    ap.add_argument("--events", type=int, default=20, help="rounds of link loss, return, prefix change")
    ap.add_argument("--entries", type=int, default=2000, help="entries to flush per event")
    ap.add_argument("--skip-forwarding", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (network namespaces)")
    out: dict[str, list[float]] = {}
    if not args.skip_forwarding:
        out.update(forwarding(args.runs, args.seconds))
    out.update(reaction(args.events, args.entries))
    print(f"nat66 bench ({os.cpu_count()} CPUs, shared machine: figures are noisy; medians)")
    if not args.skip_forwarding:
        for what, unit, scale in (("tcp bit/s", "Gbit/s", 1e9), ("udp pps", "kpps", 1e3)):
            r, n = statistics.median(out[f"routing {what}"]), statistics.median(out[f"nptv6 {what}"])
            print(f"  {what.split()[0]:4} plain routing {r / scale:8.2f} {unit}   NPTv6 {n / scale:8.2f} {unit}"
                  f"   ratio NPTv6/routing {n / r:.2f}  (goal >= 0.9; {args.runs} runs of {args.seconds:g} s)")
    for name, values in out.items():
        if "(s)" in name:
            ms = [v * 1000 for v in values]
            print(f"  {name[:-4]:42} ms: min {min(ms):6.1f}  median {statistics.median(ms):6.1f}  "
                  f"p90 {quantile(ms, 0.9):6.1f}  max {max(ms):6.1f}  (n={len(ms)}, goal < 1000)")
        elif "flushed" in name:
            print(f"  {name:42}: median {statistics.median(values):.0f} per event")


if __name__ == "__main__":
    main()
