"""nfkit ct vs conntrack-tools on a table of 200,000 entries (run by bench/ct/run).

The table lives in the firewall namespace of a client -- fw -- server lab:
100,000 UNREPLIED UDP entries made by real packets (a raw socket in the client
namespace sends UDP from 50,000 source ports to two destination ports through
the firewall; the server drops them, so nothing answers) and 100,000 TCP
entries created over ctnetlink (half ESTABLISHED, half TIME_WAIT).  Every
figure is the median of several runs; nfkit and the peer run side by side in
each run, on the same table.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from nfkit.conntrack import ConntrackTable, Entry, Filter, Status, Tuple, wire
from nfkit.lab import Lab, Namespace, three_node
from nfkit.netlink.codec import MessageWriter
from nfkit.netlink.consts import NLM_F_REQUEST

NFKIT = os.path.join(os.path.dirname(sys.executable), "nfkit")
UDP_SPORTS = range(1024, 51024)
UDP_DPORTS = (53, 54)
TCP_HALF = 50_000


def send_udp(client: Namespace, src: str, dst: str) -> int:
    """UDP datagrams from every (sport, dport) through the firewall, by a raw socket."""
    with client.enter():
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    pkt = bytearray(struct.pack("!BBHHHBBH4s4sHHHH", 0x45, 0, 28, 0, 0, 64, 17, 0,
                                socket.inet_aton(src), socket.inet_aton(dst), 0, 0, 8, 0))
    n = 0
    with s:
        for dport in UDP_DPORTS:
            struct.pack_into("!H", pkt, 22, dport)
            for sport in UDP_SPORTS:
                struct.pack_into("!H", pkt, 20, sport)
                s.sendto(pkt, (dst, 0))
                n += 1
                if n % 256 == 0:
                    time.sleep(0.0005)  # let the veth backlog drain: no packet lost
    return n


def tcp_entries(state: int, base: int) -> list[Entry]:
    out = []
    for i in range(TCP_HALF):
        out.append(Entry(Tuple(f"192.0.2.{10 + i // 50000}", f"203.0.113.{1 + (i // 25000) % 200}",
                               6, 1024 + i % 25000 + base, 443), timeout=3600, state=state,
                         status=Status.SEEN_REPLY | Status.ASSURED))
    return out


class Bench:
    def __init__(self, lab: Lab, runs: int, conntrack_inserts: int, list_only: bool = False) -> None:
        self.lab = lab
        self.list_only = list_only
        self.fw, self.client, self.server = lab["fw"], lab["client"], lab["server"]
        self.runs = runs
        self.conntrack_inserts = conntrack_inserts
        self.results: dict[str, list[float]] = {}
        self.notes: list[str] = []
        with self.fw.enter():
            self.table = ConntrackTable()
        self.established = tcp_entries(3, 0)
        self.time_wait = tcp_entries(7, 25000)

    # ------------------------------------------------------------ helpers
    def record(self, name: str, seconds: float) -> None:
        self.results.setdefault(name, []).append(seconds)

    def sh(self, cmd: str) -> float:
        """Seconds to run ``cmd`` (a shell line) inside the firewall namespace."""
        t0 = time.perf_counter()
        proc = subprocess.run(["ip", "netns", "exec", self.fw.name, "sh", "-c", cmd],
                              capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"bench: {cmd!r} failed: {proc.stderr.strip()}")
        return dt

    def count(self, flt: Filter | None = None) -> int:
        return self.table.count(flt)

    def fill_udp(self) -> None:
        self.table.delete_matching(Filter(proto=17)) if self.count(Filter(proto=17)) else None
        send_udp(self.client, "192.0.2.2", "198.51.100.2")
        deadline = time.monotonic() + 10
        while self.count(Filter(proto=17)) < 100_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        n = self.count(Filter(proto=17, status_clear=int(Status.SEEN_REPLY)))
        if n != 100_000:
            raise SystemExit(f"bench: {n} UNREPLIED UDP entries from real packets, wanted 100000")

    def fill_tcp(self, which: str = "both") -> None:
        parts = []
        if which in ("both", "established"):
            parts.append(self.established)
        if which in ("both", "time_wait"):
            parts.append(self.time_wait)
        for p in parts:
            res = self.table.create_many(p)
            if res.failed:
                raise SystemExit(f"bench: creating TCP entries failed: {res.failed}")

    def check_after_udp_delete(self, who: str) -> None:
        udp, tcp = self.count(Filter(proto=17)), self.count(Filter(proto=6))
        if udp != 0 or tcp != 2 * TCP_HALF:
            raise SystemExit(f"bench: after {who}: {udp} UDP and {tcp} TCP entries left "
                             f"(wanted 0 and {2 * TCP_HALF})")

    def floor_request(self) -> float:
        """The kernel's floor: one filtered flush request (UDP, not SEEN_REPLY, IPv4)."""
        w = MessageWriter()
        w.begin(wire.MSG_DELETE, NLM_F_REQUEST, family=socket.AF_INET, version=1)
        Filter(family=socket.AF_INET, proto=17, status_clear=int(Status.SEEN_REPLY)).put_kernel_attrs(
            w, socket.AF_INET)
        w.end()
        data = bytes(w.buffer)
        t0 = time.perf_counter()
        self.table.sock.request(data)
        return time.perf_counter() - t0

    # ------------------------------------------------------------ one run
    def run_once(self, i: int) -> None:
        say(f"run {i + 1}/{self.runs}: building the table (100,000 UDP from real packets, "
            f"100,000 TCP over ctnetlink)")
        self.table.flush()
        self.fill_udp()
        self.fill_tcp()
        total = self.count()
        if total != 200_000:
            raise SystemExit(f"bench: table holds {total} entries, wanted 200000")

        say("  list")
        self.record("list text: nfkit", self.sh(f"{NFKIT} ct list >/dev/null 2>&1"))
        self.record("list text: conntrack -L", self.sh("conntrack -L >/dev/null 2>&1"))
        self.record("list json: nfkit", self.sh(f"{NFKIT} ct list -o json >/dev/null 2>&1"))
        self.record("count -p udp: nfkit", self.sh(f"{NFKIT} ct count -p udp >/dev/null"))
        self.record("count -p udp: conntrack -L -p udp | wc -l",
                    self.sh("conntrack -L -p udp 2>/dev/null | wc -l >/dev/null"))
        t0 = time.perf_counter()
        n = self.table.count(Filter(proto=17))
        self.record("count -p udp: library", time.perf_counter() - t0)
        assert n == 100_000
        t0 = time.perf_counter()
        n = sum(len(batch) for batch in self.table.entry_batches())
        self.record("list entries: library (every Entry decoded)", time.perf_counter() - t0)
        assert n == 200_000
        if self.list_only:
            return

        say("  delete UNREPLIED UDP (5 times, the UDP half refilled by real packets in between)")
        self.record("delete unreplied: floor (1 request)", self.floor_request())
        self.check_after_udp_delete("the floor request")
        self.fill_udp()
        t0 = time.perf_counter()
        res = self.table.delete_matching(Filter(proto=17, status_clear=int(Status.SEEN_REPLY)))
        self.record("delete unreplied: library", time.perf_counter() - t0)
        assert res.method == "kernel" and res.deleted == 100_000, res
        self.check_after_udp_delete("the library call")
        self.fill_udp()
        t0 = time.perf_counter()
        res = self.table.delete_matching(Filter(family=socket.AF_INET, proto=17,
                                                status_clear=int(Status.SEEN_REPLY)))
        self.record("delete unreplied: library, -f ipv4", time.perf_counter() - t0)
        assert res.method == "kernel" and res.deleted == 100_000, res
        self.check_after_udp_delete("the library call (IPv4)")
        self.fill_udp()
        self.record("delete unreplied: nfkit ct delete",
                    self.sh(f"{NFKIT} ct delete -p udp --status UNREPLIED >/dev/null"))
        self.check_after_udp_delete("nfkit ct delete")
        self.fill_udp()
        self.record("delete unreplied: conntrack -D",
                    self.sh("conntrack -D -p udp --status UNREPLIED >/dev/null 2>&1"))
        self.check_after_udp_delete("conntrack -D")

        say("  delete TIME_WAIT (dump + pipelined deletes; the TIME_WAIT quarter refilled)")
        tw = Filter(proto=6, states=frozenset({7}))
        assert self.count(tw) == TCP_HALF
        self.record("delete TIME_WAIT: nfkit ct delete",
                    self.sh(f"{NFKIT} ct delete -p tcp --state TIME_WAIT >/dev/null"))
        assert self.count(tw) == 0 and self.count(Filter(proto=6)) == TCP_HALF
        self.fill_tcp("time_wait")
        self.record("delete TIME_WAIT: conntrack -D",
                    self.sh("conntrack -D -p tcp --state TIME_WAIT >/dev/null 2>&1"))
        assert self.count(tw) == 0 and self.count(Filter(proto=6)) == TCP_HALF
        self.fill_tcp("time_wait")
        self.record("delete --timeout-below: nfkit ct delete",
                    self.sh(f"{NFKIT} ct delete -p tcp --timeout-below 100000 --state TIME_WAIT >/dev/null"))
        assert self.count(tw) == 0

        say("  create --from (200,000 entries)")
        self.fill_tcp("time_wait")
        self.fill_udp()
        with tempfile.NamedTemporaryFile("w+", suffix=".jsonl", delete=False) as f:
            path = f.name
        try:
            self.sh(f"{NFKIT} ct list -o json > {path}")
            self.table.flush()
            self.record("create --from 200k: nfkit", self.sh(f"{NFKIT} ct create --from {path} >/dev/null"))
            n = self.count()
            if n != 200_000:
                raise SystemExit(f"bench: create --from made {n} entries, wanted 200000")
        finally:
            os.unlink(path)
        k = self.conntrack_inserts
        self.table.flush()
        loop = (f"i=0; while [ $i -lt {k} ]; do conntrack -I -p udp -s 192.0.2.2 -d 198.51.100.2 "
                f"--sport $((2000 + i)) --dport 53 -t 600 >/dev/null 2>&1; i=$((i + 1)); done")
        dt = self.sh(loop)
        assert self.count() == k
        self.record(f"create: conntrack -I per entry ({k} runs)", dt / k)

    def report(self) -> None:
        med = {k: statistics.median(v) for k, v in self.results.items()}
        print()
        print(f"nfkit ct vs conntrack-tools ({conntrack_version()}), 200,000 entries, "
              f"median of {self.runs} runs")
        print(f"{'measurement':<52} {'median':>10}")
        for k, v in med.items():
            unit = f"{v * 1e3:8.2f} ms" if v < 1 else f"{v:8.3f} s "
            print(f"  {k:<50} {unit}")
        print()

        def ratio(a: str, b: str) -> float | None:
            return med[a] / med[b] if a in med and b in med else None  # --list-only measures fewer

        rows = [
            ("delete UNREPLIED UDP: library (-f ipv4) / single-request floor",
             ratio("delete unreplied: library, -f ipv4", "delete unreplied: floor (1 request)"), "<= 1.2"),
            ("delete UNREPLIED UDP: library (no -f: one request per family) / floor",
             ratio("delete unreplied: library", "delete unreplied: floor (1 request)"), "<= 1.2"),
            ("delete UNREPLIED UDP: conntrack -D / nfkit ct delete",
             ratio("delete unreplied: conntrack -D", "delete unreplied: nfkit ct delete"), ">= 5"),
            ("delete TIME_WAIT: conntrack -D / nfkit ct delete",
             ratio("delete TIME_WAIT: conntrack -D", "delete TIME_WAIT: nfkit ct delete"), ">= 2"),
            ("list text: nfkit / conntrack -L",
             ratio("list text: nfkit", "list text: conntrack -L"), "<= 1.5"),
            ("list json: nfkit / conntrack -L",
             ratio("list json: nfkit", "list text: conntrack -L"), "<= 1.5"),
            ("count -p udp: (conntrack -L -p udp | wc -l) / nfkit ct count",
             ratio("count -p udp: conntrack -L -p udp | wc -l", "count -p udp: nfkit"), "(faster)"),
        ]
        rows = [row for row in rows if row[1] is not None]
        per_entry = next((v for k, v in med.items() if k.startswith("create: conntrack -I")), None)
        print(f"{'ratio':<64} {'value':>8}  goal")
        for name, value, goal in rows:
            print(f"  {name:<62} {value:8.2f}  {goal}")
        if per_entry is None:  # --list-only
            for note in self.notes:
                print(f"note: {note}")
            return
        create = med["create --from 200k: nfkit"]
        print(f"  {'create --from: nfkit entries/s':<62} {200_000 / create:8.0f}  "
              f"(200,000 in {create:.2f} s; goal < 3 s)")
        print(f"  {'create: conntrack -I entries/s (one process per entry)':<62} {1 / per_entry:8.0f}  "
              f"({per_entry * 1e3:.2f} ms per entry; 200,000 would take {per_entry * 200_000:.0f} s)")
        for note in self.notes:
            print(f"note: {note}")


def conntrack_version() -> str:
    out = subprocess.run(["conntrack", "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).strip().split(" (")[0]


_quiet = False


def say(text: str) -> None:
    if not _quiet:
        print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    global _quiet
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs to take medians of (default 3)")
    ap.add_argument("--conntrack-inserts", type=int, default=300,
                    help="conntrack -I processes to time (default 300)")
    ap.add_argument("--list-only", action="store_true",
                    help="build the table and time the listings only (quick before/after checks of decoding)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    _quiet = args.quiet
    if os.geteuid() != 0:
        raise SystemExit("bench/ct: needs root (network namespaces)")
    with three_node("nkb") as lab:
        fw = lab["fw"]
        # track in the firewall (a ct expression), keep UDP entries long enough, answer nothing
        fw.run(["nft", ("add table inet t; add chain inet t c { type filter hook prerouting priority 0; }; "
                       "add rule inet t c ct state new counter")])
        fw.sysctl("net.netfilter.nf_conntrack_udp_timeout", "3600")
        lab["server"].run(["nft", ("add table inet d; "
                                  "add chain inet d i { type filter hook input priority 0; policy drop; }")])
        bench = Bench(lab, args.runs, args.conntrack_inserts, args.list_only)
        try:
            for i in range(args.runs):
                bench.run_once(i)
        finally:
            bench.table.close()
        bench.notes.append("conntrack-tools 1.4.7 ignores --status UNREPLIED when deleting (it removes "
                           "every UDP entry); here every UDP entry is UNREPLIED, so both remove the same "
                           "100,000")
        bench.notes.append("nf_conntrack_max is not per-namespace on this kernel (read-only inside a "
                           "namespace, the host's 262144 applies to each namespace's own count)")
        bench.report()


if __name__ == "__main__":
    main()
