"""nfkit ha vs conntrackd 1.4.7: FTFW sync of 100,000 new entries (run by bench/ha/run).

Two namespaces joined by a veth sync link; a daemon in each (stock
`conntrackd -C` or `nfkit ha -C`, the same conntrackd.conf: FTFW over UDP,
DisableExternalCache on, so received entries go straight into the kernel).
Once they have shaken hands, N TCP entries (ESTABLISHED, no NAT) are created
in A's kernel table over ctnetlink (nfkit's pipelined create); the clock runs
from the first create until B's kernel table holds all N.  Every pairing
(A -> B: conntrackd -> conntrackd, nfkit -> nfkit, and the mixed ones) runs
side by side in each round; figures are medians of the rounds.  The machine is
shared and noisy: read ratios, not absolute rates.

Both daemons get a 64 MB netlink event buffer from the start: with
conntrackd's usual 2 MB it overruns on such a burst and waits for
NetlinkOverrunResync (30 s) before it resyncs, which would measure the
timer, not the sync.
The clock includes creating the entries (the bench process, on the same
cores): the sync follows the creates, so each pairing also prints the time
from the last create until B held all N, what the sync adds.
Each pairing also prints the CPU time each daemon spent on the run (medians,
user + system): on a shared machine it says more about the cost per entry than
the clock; the datagrams A sent on the sync link; and, when not zero, the event
socket overruns (`-s runtime`) and sync messages lost (`-s network`) either
daemon counted, asked over its control socket as `conntrackd -s` asks.

`--baseline SRC` (a source tree's src/ directory, e.g. an older revision's
from `git archive REV src | tar -x -C DIR`) adds pairings whose sender is
nfkit from that tree ("base"), to compare two revisions' senders in one run.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nfkit.conntrack import ConntrackTable, Entry, Status, Tuple
from nfkit.ha import control
from nfkit.lab import Lab, Namespace

NFKIT = os.path.join(os.path.dirname(sys.executable), "nfkit")
A_SYNC, B_SYNC = "203.0.113.1", "203.0.113.2"

CONF = """
Sync {{
    Mode FTFW {{
        DisableExternalCache on
    }}
    UDP {{
        IPv4_address {own}
        IPv4_Destination_Address {peer}
        Port 3780
        Interface sync0
        SndSocketBuffer 24985600
        RcvSocketBuffer 24985600
        Checksum on
    }}
}}
General {{
    HashSize 65536
    HashLimit 524288
    LogFile {dir}/log
    Syslog off
    LockFile {dir}/lock
    UNIX {{
        Path {dir}/ctl
    }}
    NetlinkBufferSize 67108864
    NetlinkBufferSizeMaxGrowth 268435456
    NetlinkOverrunResync on
    Filter From Userspace {{
        Address Ignore {{
            IPv4_address 127.0.0.1
            IPv4_address {own}
            IPv4_address {peer}
        }}
    }}
}}
"""


def entries(n: int) -> list[Entry]:
    return [Entry(Tuple(f"192.0.2.{1 + i // 50000}", f"198.51.100.{1 + (i // 25000) % 2}", 6,
                        1024 + i % 25000, 80), timeout=600, state=3, status=Status.SEEN_REPLY | Status.ASSURED)
            for i in range(n)]


def table(ns: Namespace) -> ConntrackTable:
    with ns.enter():
        return ConntrackTable()


def start(kind: str, ns: Namespace, own: str, peer: str) -> subprocess.Popen[bytes]:
    work = Path(tempfile.mkdtemp(prefix=f"benchha-{kind}-"))
    conf = work / "conntrackd.conf"
    conf.write_text(CONF.format(own=own, peer=peer, dir=work))
    argv = ["conntrackd", "-C", str(conf)] if kind == "conntrackd" else [NFKIT, "ha", "-C", str(conf)]
    if kind == "base":  # nfkit from the --baseline tree (PYTHONPATH comes before the installed one)
        argv = ["env", f"PYTHONPATH={BASELINE}", *argv]
    proc = ns.popen(argv, stderr=subprocess.DEVNULL)
    CONTROL[proc.pid] = str(work / "ctl")
    deadline = time.monotonic() + 15
    log = work / "log"
    while not (log.exists() and "initialization completed" in log.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{kind} did not start: {log.read_text() if log.exists() else ''}")
        time.sleep(0.05)
    return proc


def cpu_seconds(proc: subprocess.Popen[bytes]) -> tuple[float, float]:
    """User and system CPU time the process has used so far."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def troubles(proc: subprocess.Popen[bytes]) -> int:
    """Event socket overruns and sync messages lost, as the daemon counts them (`-s`)."""
    path = CONTROL[proc.pid]
    text = control.ask(path, control.STATS_RUNTIME) + control.ask(path, control.STATS_NETWORK)
    return sum(int(n) for n in re.findall(r"(?:netlink overrun|Packets lost):\s+(\d+)", text))


def link_datagrams(ns: Namespace) -> int:
    return int(ns.run(["cat", "/sys/class/net/sync0/statistics/tx_packets"]).stdout)


CONTROL: dict[int, str] = {}  # pid -> its control socket
BASELINE = ""  # --baseline: the src/ directory of the "base" pairings' nfkit
# pairing -> per run: (sender user, sender system, receiver user, receiver system) CPU seconds
CPU: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
DATAGRAMS: dict[tuple[str, str], list[int]] = {}  # pairing -> datagrams A sent on the sync link
# pairing -> seconds from the last create on A until B held all N: what the sync adds to creating
LAG: dict[tuple[str, str], list[float]] = {}
TROUBLES: dict[tuple[str, str], list[int]] = {}  # pairing -> sender's, receiver's overruns and losses, all runs


def one(lab: Lab, sender: str, receiver: str, n: int, timeout: float) -> float | None:
    a, b = lab["a"], lab["b"]
    ta, tb = table(a), table(b)
    ta.flush()
    tb.flush()
    pa = start(sender, a, A_SYNC, B_SYNC)
    pb = start(receiver, b, B_SYNC, A_SYNC)
    try:
        time.sleep(2.5)  # HELLO, HELLO_BACK and the first ALIVEs
        todo = entries(n)
        cpu = *cpu_seconds(pa), *cpu_seconds(pb)
        sent = link_datagrams(a)
        started = time.monotonic()
        ta.create_many(todo)
        created = time.monotonic()
        # the end, the same for every pairing: B's kernel table holds all N (ctnetlink's count)
        while tb.stats()["entries"] < n:
            if time.monotonic() - started > timeout:
                return None
            time.sleep(0.02)
        took = time.monotonic() - started
        # (a daemon whose event socket overran may have waited for NetlinkOverrunResync: 30 s)
        now = *cpu_seconds(pa), *cpu_seconds(pb)
        pairing = (sender, receiver)
        CPU.setdefault(pairing, []).append(tuple(x - y for x, y in zip(now, cpu, strict=True)))  # type: ignore[arg-type]
        DATAGRAMS.setdefault(pairing, []).append(link_datagrams(a) - sent)
        LAG.setdefault(pairing, []).append(started + took - created)
        counted = TROUBLES.setdefault(pairing, [0, 0])
        counted[0] += troubles(pa)
        counted[1] += troubles(pb)
        return took
    finally:
        for p in (pa, pb):
            p.send_signal(signal.SIGTERM)
            p.wait(30)
        ta.close()
        tb.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--baseline", help="src/ of another nfkit tree: adds base -> nfkit and base -> conntrackd")
    args = ap.parse_args()
    pairs = [("conntrackd", "conntrackd"), ("nfkit", "nfkit"), ("nfkit", "conntrackd"), ("conntrackd", "nfkit")]
    if args.baseline:
        global BASELINE
        BASELINE = os.path.abspath(args.baseline)
        pairs += [("base", "nfkit"), ("base", "conntrackd")]
    times: dict[tuple[str, str], list[float | None]] = {p: [] for p in pairs}
    with Lab("bha") as lab:
        a, b = lab.add("a"), lab.add("b")
        lab.link(a, b, [f"{A_SYNC}/24"], [f"{B_SYNC}/24"], "sync0", "sync0")
        for r in range(args.runs):
            for p in pairs:
                took = one(lab, *p, args.entries, args.timeout)
                times[p].append(took)
                shown = "timed out" if took is None else f"{took:.2f} s"
                print(f"round {r + 1}: {p[0]:>10} -> {p[1]:<10} {shown}", flush=True)
    print(f"\n{args.entries} entries created on A until all are in B's kernel table; median of {args.runs} "
          "(shared, noisy 2-core machine):")
    base = None
    for p in pairs:
        done = [t for t in times[p] if t is not None]
        if len(done) < len(times[p]):
            print(f"  {p[0]:>10} -> {p[1]:<10} {len(times[p]) - len(done)} of {len(times[p])} runs timed out")
        if not done:
            continue
        med = statistics.median(done)
        base = base or med
        su, ss, ru, rs = (statistics.median(c[i] for c in CPU[p]) for i in range(4))
        print(f"  {p[0]:>10} -> {p[1]:<10} {med:7.2f} s  {args.entries / med:9.0f} entries/s  "
              f"time / conntrackd->conntrackd = {med / base:.2f}  CPU: sender {su + ss:.2f} s ({su:.2f} user), "
              f"receiver {ru + rs:.2f} s ({ru:.2f} user); {statistics.median(DATAGRAMS[p]):.0f} datagrams; "
              f"last create -> all in B {statistics.median(LAG[p]):.2f} s"
              + (f"; overruns or lost messages: sender {TROUBLES[p][0]}, receiver {TROUBLES[p][1]}"
                 if any(TROUBLES.get(p, ())) else ""))


if __name__ == "__main__":
    main()
