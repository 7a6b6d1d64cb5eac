"""ctguard at full size: the kernel alone vs the kernel with ctguard (run by bench/ctguard/run).

A client -- fw -- server lab; the firewall tracks what it forwards and its
table is the kernel's own, at the real nf_conntrack_max (262,144 on a default
machine; the maximum is compared with each namespace's count, so only this
namespace fills; the maximum itself is never changed).  Side by side in each
run:

- legitimate success: 200 new connections (connect, echo, close; waves of 20,
  2.5 s to connect) from a client holding 5 established echoing connections,
  under each attack, the kernel alone and with ctguard:
  - exhaustion: 200 real handshakes from 20 addresses held idle, topped up to
    the maximum with ESTABLISHED, ASSURED entries created over ctnetlink;
  - spoofed SYN flood and UDP flood: hping3 --rand-source --flood, until the
    table is full (or 15 s; the fill reached is printed);
- reaction: the table at 85 % (idle ASSURED entries), then 10 % more in a
  burst: time from the count crossing evict_at (90 %) to the count back below it;
- CPU: ctguard's user+system time (/proc/PID/stat) while the kernel creates
  --new-per-s (50,000) new entries a second and destroys as many (the CHURN
  generator below: one process creates over ctnetlink in one sendmsg per 10 ms, another deletes
  each entry 2 s later; the table stays below the thresholds: the cost of
  following it, 100,000 events a second); the rate from the kernel's own insert
  counter, the generator's CPU and the machine's idle cores beside it; then,
  with the churn still running, the reaction as below;
- event path: 20,000 new and 20,000 destroy events recorded from the kernel
  (entries created and flushed over ctnetlink), then applied to a picture in
  this process twice: as the daemon did before (an Entry decoded per event,
  then the picture) and as it does now (the datagrams straight into the
  picture through the layouts): CPU microseconds per event, each way;
- topology: 20,000 UNREPLIED UDP entries source-NATed to an address that is
  removed (20,000 others NATed to another address stay): time from `ip addr
  del` to the last stale entry gone, ctguard vs a shell script doing the same
  with `ip monitor address` and `conntrack -D`.

The machine is shared and noisy: figures are medians of --runs runs.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from nfkit.conntrack import ConntrackTable, Entry, Status, Tuple
from nfkit.errors import CapabilityError
from nfkit.lab import TCP_CLIENTS, TCP_ECHO_SERVER, TCP_HOLDERS, Lab, three_node
from nfkit.service.daemon import query_status, wait_for_status

NFKIT = [sys.executable, "-m", "nfkit"]
ATTACKERS = [f"192.0.2.{i}" for i in range(100, 120)]
SERVER = "198.51.100.2"
CT = "/proc/sys/net/netfilter/"
HELD = 0.25  # seconds the count must stay below the line to count as relief (the deleter's batches swing it)

# CHURN ROLE RATE SECONDS LIFETIME: conntrack entries churned over ctnetlink, RATE a second for
# SECONDS or until SIGTERM, by two processes of this script side by side: ROLE "create" sends,
# every 10 ms, one sendmsg holding that slice's IPCTNL_MSG_CT_NEW requests (the kernel makes each
# entry and sends its NEW event as for a packet's); ROLE "delete" sends, LIFETIME seconds behind it
# on the same clock, one sendmsg of the same slice's IPCTNL_MSG_CT_DELETE requests (a DESTROY event
# each).  Last session one process did both and held 50,000/s only in single runs; the kernel's
# own expiry (CTA_TIMEOUT) was tried instead of the deletes, but its gc worker falls seconds behind
# on a loaded machine and the table filled.  Entries are still created with a timeout of LIFETIME +
# 3 s, so a lagging deleter leaves nothing for long.  Every message is encoded before "ready", so
# sending costs the kernel's work and little Python.  After "go" on stdin it runs (entries of 10 s
# ago made again), then prints JSON: requests sent, the kernel's refusals by errno (only failures
# answer: no ACK is asked for; "replies lost": times they overflowed the receive buffer), seconds, its CPU seconds while sending, the seconds it fell behind
# its pace at worst.
CHURN = r"""
import json, os, signal, sys, time
from nfkit.conntrack import ConntrackTable, Entry, Tuple
from nfkit.conntrack.wire import CreateEncoder, DeleteEncoder
from nfkit.netlink.codec import MessageWriter
from nfkit.netlink.consts import NLM_F_CREATE, NLM_F_EXCL, NLMSG_ERROR
from nfkit.netlink.codec import parse_error
from nfkit.errors import EventsLost

role, rate, seconds, lifetime = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ticks, per = int(seconds * 100), rate // 100
ring = min(ticks, 1000)  # 10 s of distinct entries, made again once deleted
encoder = CreateEncoder(NLM_F_CREATE | NLM_F_EXCL) if role == "create" else DeleteEncoder()
w = MessageWriter()
for i in range(ring * per):
    encoder.add(w, Entry(Tuple(f"203.0.113.{1 + i % 254}", "198.51.100.2", 17, 1024 + (i // 254) % 64000,
                               9000 + i // (254 * 64000)), timeout=round(lifetime) + 3))
buf = memoryview(w.buffer)
at = [s for _, s in w.seqs] + [len(w.buffer)]
table = ConntrackTable()
table.sock.ensure_rcvbuf(64 << 20)
print("ready", flush=True)
sys.stdin.readline()
refused = {}
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))

def drain():
    try:
        for msg in table.sock.messages(block=False):
            if msg.type == NLMSG_ERROR:
                err = parse_error(msg)
                refused[err.errno] = refused.get(err.errno, 0) + 1
    except EventsLost:  # refusals beyond the receive buffer (ctguard evicted what we delete): counted apart
        refused["replies lost"] = refused.get("replies lost", 0) + 1

t0 = time.monotonic() + (lifetime if role == "delete" else 0)
c0 = os.times()
late = 0.0
k = 0
for k in range(ticks):
    if stopping:
        break
    due = t0 + k / 100
    now = time.monotonic()
    if now < due:
        time.sleep(due - now)
    else:
        late = max(late, now - due)
    c = k % ring
    table.sock.send(buf[at[c * per]:at[(c + 1) * per]])
    if k & 7 == 7:
        drain()
elapsed = time.monotonic() - t0
c1 = os.times()
time.sleep(0.2)
drain()
print(json.dumps({"sent": k * per, "refused": refused, "seconds": elapsed, "late": late,
                  "cpu": c1.user + c1.system - c0.user - c0.system}), flush=True)
"""

SHELL_FLUSH = r'''
ip -o monitor address | while read -r line; do
  case "$line" in
    Deleted*) addr=$(printf '%s\n' "$line" | sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p')
              [ -n "$addr" ] && conntrack -D -q "$addr" >/dev/null 2>&1 ;;
  esac
done
'''


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def established(n: int, offset: int = 0) -> Iterator[Entry]:
    """``n`` idle ESTABLISHED, ASSURED TCP entries from 203.0.113.1-254 (created over ctnetlink)."""
    status = Status.SEEN_REPLY | Status.ASSURED
    for i in range(offset, offset + n):
        yield Entry(Tuple(f"203.0.113.{1 + i % 254}", SERVER, 6, 1024 + i // 254, 443), timeout=3600,
                    state=3, status=status)


def proc_cpu(pid: int, system: bool = False) -> float:
    """CPU seconds (user + system, all threads; ``system``: system only) of process ``pid``,
    from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[12]) + (0 if system else int(fields[11]))) / os.sysconf("SC_CLK_TCK")


def idle_cores() -> float:
    """The machine's idle CPU seconds so far (idle + iowait of every core, /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, lab: Lab, runs: int, rate_us: int, new_per_s: int, tmp: Path, nice: int = 0,
                 lifetime: float = 2.0, load: int = 0, scheduler: str | None = None) -> None:
        self.lab, self.runs, self.rate_us, self.tmp = lab, runs, rate_us, tmp
        self.load = load
        if scheduler is not None:  # absent: the daemon's default (and a daemon without the section runs)
            self.GUARD = self.GUARD + f"[scheduler]\ntype = \"{scheduler}\"\n"
        self.nice = nice
        self.new_per_s = new_per_s
        self.lifetime = lifetime
        self.fw, self.client, self.server = lab["fw"], lab["client"], lab["server"]
        self.results: dict[str, list[float]] = {}
        self.notes: list[str] = []
        with self.fw.enter():
            self.table = ConntrackTable()
        self.limit = int(self.sysctl("nf_conntrack_max"))
        self.defaults = {k: self.sysctl(k) for k in ("nf_conntrack_udp_timeout",
                                                      "nf_conntrack_tcp_timeout_syn_sent")}

    # ------------------------------------------------------------ helpers
    def sysctl(self, name: str, value: str | None = None) -> str:
        with self.fw.enter():
            if value is not None:
                Path(CT + name).write_text(value + "\n")
            return Path(CT + name).read_text().strip()

    def count(self) -> int:
        return int(self.sysctl("nf_conntrack_count"))

    def record(self, name: str, value: float) -> None:
        self.results.setdefault(name, []).append(value)

    def setup(self) -> None:
        for a in ATTACKERS:
            self.client.run(f"ip addr add {a}/24 dev eth0")
        self.fw.run("ip addr add 198.51.100.9/24 dev eth1")
        self.server.sysctl("net.ipv4.tcp_max_syn_backlog", "8192")
        self.server.sysctl("net.core.somaxconn", "8192")
        self.server.popen([sys.executable, "-c", TCP_ECHO_SERVER, SERVER, "7000"])
        self.server.run(["sh", "-c", "for i in $(seq 50); do ss -ltn | grep -q :7000 && exit 0; "
                         "sleep 0.1; done; exit 1"])
        # the server answers nothing but its echo port (no ICMP errors to spoofed sources)
        self.server.run(["nft", "add table inet f; add chain inet f in { type filter hook input priority 0; }; "
                         "add rule inet f in udp dport 9000 counter drop; add rule inet f in udp dport != 7000 drop"])
        self.fw.run(["nft", "add table inet track; add chain inet track f { type filter hook forward "
                     "priority 0; }; add rule inet track f ct state established,related accept; "
                     "add table ip nat; add chain ip nat post { type nat hook postrouting priority srcnat; }; "
                     "add rule ip nat post udp dport 5001 snat to 198.51.100.9; "
                     "add rule ip nat post udp dport 5002 snat to 198.51.100.1"])

    def reset(self) -> None:
        for name, value in self.defaults.items():
            self.sysctl(name, value)
        self.table.flush()

    def start_guard(self, config: str) -> subprocess.Popen[bytes]:
        cfg, sock = self.tmp / "g.toml", self.tmp / "g.sock"
        cfg.write_text(config)
        proc = self.fw.popen([*NFKIT, "ctguard", "run", "-c", str(cfg), "--status-socket", str(sock)],
                             stderr=subprocess.DEVNULL)
        wait_for_status(sock, lambda: proc.poll() is None, timeout=60)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def guard_cpu(self, proc: subprocess.Popen[bytes]) -> float:
        """CPU seconds (user + system) of ctguard (`ip netns exec` execs it: the same pid)."""
        return proc_cpu(proc.pid)

    GUARD = ("[limits]\ninterval = 0.1\nbatch = 16384\n"
             "[[topology]]\ninterface = \"*\"\naddress_removed = \"none\"\n")

    # ------------------------------------------------------------ attacks
    def attack(self, kind: str) -> list[subprocess.Popen[bytes]]:
        if kind == "exhaustion":
            holders = self.client.popen([sys.executable, "-c", TCP_HOLDERS, SERVER, "7000", ",".join(ATTACKERS), "10"],
                                        stdout=subprocess.PIPE)
            assert holders.stdout is not None
            holders.stdout.readline()
            res = self.table.create_many(established(self.limit))
            self.record("exhaustion: entries created over ctnetlink", res.created)
            return [holders]
        flags = ["-S", "-p", "7000"] if kind == "syn" else ["--udp", "-p", "9000"]
        pace = ["--flood"] if self.rate_us == 0 else ["-i", f"u{self.rate_us}"]
        flood = self.client.popen(["hping3", "-q", "--rand-source", *pace, *flags, SERVER],
                                  stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while self.count() < 0.99 * self.limit and time.monotonic() < deadline:
            time.sleep(0.1)
        return [flood]

    def legit_under(self, kind: str, guarded: bool) -> None:
        self.reset()
        guard = self.start_guard(self.GUARD) if guarded else None
        legit = self.client.popen([sys.executable, "-c", TCP_CLIENTS, SERVER, "7000", "200", "20", "2.5"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert legit.stdin is not None and legit.stdout is not None
        legit.stdout.readline()
        procs = self.attack(kind)
        peak = self.count()
        cpu0, t0 = (self.guard_cpu(guard), time.monotonic()) if guard else (0.0, time.monotonic())
        legit.stdin.write(b"go\n")
        legit.stdin.flush()
        result = json.loads(legit.stdout.readline())
        who = "ctguard" if guarded else "kernel alone"
        self.record(f"{kind}: legitimate new, {who} (%)", 100 * result["new_ok"] / result["new"])
        self.record(f"{kind}: established echoes, {who} (%)", 100 * result["echo_ok"] / max(1, result["echo_sent"]))
        self.record(f"{kind}: fill when legit start, {who} (%)", 100 * peak / self.limit)
        if guard is not None:
            self.record(f"{kind}: ctguard CPU during it (cores)",
                        (self.guard_cpu(guard) - cpu0) / (time.monotonic() - t0))
            try:
                status = query_status(self.tmp / "g.sock", timeout=30)
                self.record(f"{kind}: ctguard resync dumps", status["dumps"])
            except CapabilityError as exc:  # busy for 30 s: say so, keep the clients' figures
                self.notes.append(f"{kind}: ctguard's status did not answer ({exc})")
        for p in procs:
            p.kill()
            p.wait()
        legit.kill()
        legit.wait()
        if guard is not None:
            self.stop(guard)

    # ------------------------------------------------------------ reaction, CPU, topology
    def react(self, timeout: float = 20.0) -> float | None:
        """Top the table up from where it is to 95 % with idle ASSURED entries; the seconds from the
        count crossing evict_at (90 %) to the count back below it once the top-up is done (None: not
        within ``timeout``).  Under churn the count swings by a deleter's batch every 10 ms: a dip
        below the line while the top-up is still being created is not relief, nor is one shorter than
        HELD: relief is the start of the first HELD seconds below the line."""
        line = int(0.90 * self.limit)
        crossed: list[float] = []
        relieved: list[float] = []
        below: list[float] = []  # since when the count is below the line
        peak = [0]
        done, topped = threading.Event(), threading.Event()

        def poll() -> None:
            with self.fw.enter():
                while not done.is_set():
                    n = int(Path(CT + "nf_conntrack_count").read_text())
                    peak[0] = max(peak[0], n)
                    now = time.monotonic()
                    if not crossed and n >= line:
                        crossed.append(now)
                        self.crossed_wall = time.time()
                    elif crossed and n < line and topped.is_set():
                        if not below:
                            below.append(now)
                        if now - below[0] >= HELD:
                            relieved.append(below[0])
                            return
                    elif below:
                        below.clear()
                    time.sleep(0.002)

        t = threading.Thread(target=poll)
        t.start()
        t0 = time.monotonic()
        self.table.create_many(established(max(0, int(0.95 * self.limit) - self.count()), offset=self.limit))
        topped_at = time.monotonic()
        self.last_topup = topped_at - t0
        topped.set()
        t.join(timeout)
        done.set()
        t.join()
        self.last_peak = 100 * peak[0] / self.limit
        # under churn the top-up itself (10-17 s on a loaded machine) outlasts the crossing: the
        # time from its end to relief says how long ctguard took once no more was being added
        self.last_after_topup = max(0.0, relieved[0] - topped_at) if crossed and relieved else None
        return relieved[0] - crossed[0] if crossed and relieved else None

    def reaction(self) -> None:
        self.reset()
        self.table.create_many(established(int(0.85 * self.limit)))
        guard = self.start_guard(self.GUARD)
        took = self.react()
        self.stop(guard)
        self.record("reaction: peak fill (%)", self.last_peak)
        if took is not None:
            self.record("reaction: evict_at crossed -> back below (s)", took)
        else:
            self.notes.append("reaction: the count never came back below evict_at within 20 s")

    def inserts(self) -> int:
        """The kernel's own count of entries inserted in the firewall's table (conntrack -S insert)."""
        return sum(cpu["insert"] for cpu in self.table.stats_cpu())

    def cpu(self) -> None:
        """ctguard following a table that churns at --new-per-s, then the reaction under that load
        (with --load N: N busy processes beside them, a loaded machine)."""
        self.reset()
        guard = self.start_guard(self.GUARD)
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.load)]
        if busy:  # the instrument (this process's threads: the top-up and the count's poll) ahead of the load
            os.setpriority(os.PRIO_PROCESS, 0, -10)  # this thread; the threads it starts inherit it
        rate, lifetime = self.new_per_s, self.lifetime
        errs = [(self.tmp / f"churn-{role}.err").open("wb") for role in ("create", "delete")]
        churn = [self.fw.popen([sys.executable, "-c", CHURN, role, str(rate), "90", str(lifetime)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
                 for role, err in zip(("create", "delete"), errs, strict=True)]
        for p in churn:
            assert p.stdin is not None and p.stdout is not None
            if p.stdout.readline().strip() != b"ready":
                raise SystemExit("bench: the churn generator did not start")
        if self.nice:  # `ip netns exec` execs them: these pids are ctguard's and the generator's
            for pid in (guard.pid, *(p.pid for p in churn)):
                os.setpriority(os.PRIO_PROCESS, pid, self.nice)
        if busy:  # the generator too: the load is to delay ctguard, not the 50,000 entries a second
            for p in churn:
                os.setpriority(os.PRIO_PROCESS, p.pid, -10)
        for p in churn:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
        time.sleep(4)  # steady state: RATE * LIFETIME entries, as many made as deleted each second

        def sample() -> tuple[float, ...]:
            st = query_status(self.tmp / "g.sock")
            return (time.monotonic(), self.guard_cpu(guard), sum(proc_cpu(p.pid) for p in churn), idle_cores(),
                    self.inserts(), st["events"], st["overruns"], st["dumps"], proc_cpu(guard.pid, system=True))

        t0, g0, c0, i0, n0, e0, o0, d0, s0 = sample()
        time.sleep(8)
        t1, g1, c1, i1, n1, e1, o1, d1, s1 = sample()
        fill = self.count()
        during = query_status(self.tmp / "g.sock", timeout=30)["actions"]
        wall = time.time()
        kinds = collections.Counter(a["action"] for a in during if a["time"] >= wall - (time.monotonic() - t0))
        self.notes.append("cpu: ctguard's actions in the window: "
                          + (", ".join(f"{n} {k}" for k, n in kinds.items()) or "none"))
        took = self.react(timeout=30.0)  # with the churn still running
        after = query_status(self.tmp / "g.sock", timeout=30)
        if os.environ.get("CTGUARD_BENCH_ACTIONS"):  # the reaction's timeline, for profiling
            with open(os.environ["CTGUARD_BENCH_ACTIONS"], "a") as f:
                f.write(json.dumps({"crossed": getattr(self, "crossed_wall", None), "took": took,
                                    "status": after}) + "\n")
        for p in busy:
            p.kill()
            p.wait()
        if busy:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        for p in churn:
            p.terminate()
        gens = []
        for p, err in zip(churn, errs, strict=True):
            out = p.communicate(timeout=60)[0].splitlines()
            err.close()
            if not out:  # no report ("ready" was read before): say why
                why = Path(err.name).read_text().strip().splitlines()
                raise SystemExit(f"bench: a churn generator gave no report (exit {p.returncode}): "
                                 f"{why[-1] if why else 'no message'}")
            gens.append(json.loads(out[-1]))
        self.stop(guard)
        dt = t1 - t0
        self.record("cpu: new entries/s the kernel made (its insert counter)", (n1 - n0) / dt)
        self.record("cpu: events/s ctguard followed (new + destroy)", (e1 - e0) / dt)
        self.record("cpu: ctguard cores while following them", (g1 - g0) / dt)
        self.record("cpu: ctguard µs CPU per event followed", 1e6 * (g1 - g0) / max(e1 - e0, 1))
        self.record("cpu: ... of which in the kernel (system time, µs)", 1e6 * (s1 - s0) / max(e1 - e0, 1))
        self.record("cpu: generator cores (its two processes)", (c1 - c0) / dt)
        self.record("cpu: machine idle cores meanwhile (of 2)", (i1 - i0) / dt)
        self.record("cpu: event overruns (ENOBUFS) in the window", o1 - o0)
        self.record("cpu: resync dumps in the window", d1 - d0)
        self.record("cpu: fill meanwhile (%)", 100 * fill / self.limit)
        self.record("cpu: generator worst lag behind its pace (s)", max(g["late"] for g in gens))
        for role, g in zip(("creates", "deletes"), gens, strict=True):
            if g["refused"]:
                self.notes.append(f"cpu: the kernel refused {sum(g['refused'].values())} {role} "
                                  f"(by errno: {g['refused']})")
        if took is None:
            self.notes.append("cpu: under the churn, the count never came back below evict_at within 30 s; "
                              "ctguard's last actions: " + "; ".join(
                                  f"{a['action']} ({a['entries']}): {a['why']}" for a in after["actions"][-6:]))
        else:
            self.record("cpu: reaction under the churn, evict_at crossed -> back below (s)", took)
        self.record("cpu: reaction under the churn, top-up to 95 % took (s)", self.last_topup)
        if self.last_after_topup is not None:
            self.record("cpu: reaction under the churn, top-up done -> back below (s)", self.last_after_topup)
        self.record("cpu: reaction under the churn, peak fill (%)", self.last_peak)

    def event_path(self, n: int = 20_000) -> None:
        """CPU per event of the picture's two event paths over the same recorded datagrams."""
        from nfkit.conntrack.table import Event
        from nfkit.conntrack.wire import EntryDecoder
        from nfkit.ctguard.feed import PictureFeed
        from nfkit.ctguard.picture import Picture
        from nfkit.netlink.codec import parse_messages

        self.reset()
        datagrams: list[bytes] = []
        with self.fw.enter(), ConntrackTable() as t, t.events(resync=False, rcvbuf=256 << 20) as stream:
            t.create_many(established(n))
            t.flush()
            buf = bytearray(1 << 16)
            quiet = 0
            while quiet < 50:
                got = stream.sock.recv_into(buf, False)
                if got:
                    datagrams.append(bytes(buf[:got]))
                    quiet = 0
                else:
                    quiet += 1
                    time.sleep(0.01)

        def entries_path() -> int:  # the daemon's path before: an Event and an Entry per event
            picture, decoder = Picture(), EntryDecoder()
            for d in datagrams:
                for msg in parse_messages(memoryview(d)):
                    kind = "destroy" if msg.type & 0xFF == 2 else "new"
                    ev = Event(kind, decoder.decode_attrs(msg.attrs, msg.family))
                    picture.apply(ev.kind, ev.entry, 1.0)  # type: ignore[arg-type]
            return picture.events

        def feed_path() -> int:
            picture = Picture()
            feed = PictureFeed(picture)
            for d in datagrams:
                feed.feed(d, len(d), 1.0)
            return picture.events

        for name, fn in (("before: Entry per event", entries_path), ("now: layouts into the picture", feed_path)):
            c0 = time.process_time()
            events = fn()
            self.record(f"event path, {name} (µs CPU/event)", 1e6 * (time.process_time() - c0) / max(events, 1))
        self.record("event path: events recorded", len(datagrams))

    def send_nat_udp(self, n: int) -> None:
        with self.client.enter():
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        pkt = bytearray(struct.pack("!BBHHHBBH4s4sHHHH", 0x45, 0, 28, 0, 0, 64, 17, 0,
                                    socket.inet_aton("192.0.2.2"), socket.inet_aton(SERVER), 0, 0, 8, 0))
        sent = 0
        with s:
            for dport in (5001, 5002):
                struct.pack_into("!H", pkt, 22, dport)
                for sport in range(10000, 10000 + n):
                    struct.pack_into("!H", pkt, 20, sport)
                    s.sendto(pkt, (SERVER, 0))
                    sent += 1
                    if sent % 256 == 0:
                        time.sleep(0.0005)

    def topology(self, who: str, n: int = 20_000) -> None:
        self.reset()
        self.fw.run("ip addr replace 198.51.100.9/24 dev eth1")
        self.send_nat_udp(n)
        deadline = time.monotonic() + 10
        while self.count() < 2 * n and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.count() != 2 * n:
            raise SystemExit(f"bench: {self.count()} entries from real packets, wanted {2 * n}")
        if who == "ctguard":
            watcher = self.start_guard("[limits]\ninterval = 0.1\n[[topology]]\ninterface = \"*\"\n"
                                       "address_removed = \"all\"\n")
        else:
            watcher = self.fw.popen(["sh", "-c", SHELL_FLUSH])  # its own session: killpg below
            time.sleep(0.5)  # ip monitor subscribed
        t0 = time.monotonic()
        self.fw.run("ip addr del 198.51.100.9/24 dev eth1")
        while self.count() > n and time.monotonic() - t0 < 30:
            time.sleep(0.002)
        took = time.monotonic() - t0
        if who == "ctguard":
            self.stop(watcher)
        else:
            os.killpg(watcher.pid, signal.SIGTERM)
            watcher.wait()
        if self.count() != n:
            self.notes.append(f"topology, {who}: {self.count()} entries left, wanted {n}")
        self.record(f"topology flush of {n}: {who} (s)", took)

    # ------------------------------------------------------------ report
    def report(self) -> None:
        med = {k: statistics.median(v) for k, v in self.results.items()}
        print()
        print(f"ctguard at nf_conntrack_max = {self.limit}, median of {self.runs} runs "
              f"(a shared, noisy machine: 2 cores, other work running; load average "
              f"{os.getloadavg()[0]:.1f}; CPU measure at niceness {self.nice}; {self.load} busy processes "
              f"beside it)")
        for k, v in med.items():
            runs = "  (" + ", ".join(f"{x:.3f}" for x in self.results[k]) + ")" if len(self.results[k]) > 1 else ""
            print(f"  {k:<62} {v:10.3f}{runs}")
        print()

        def ratio(a: str, b: str) -> str:
            return f"{med[a] / med[b]:.2f}" if a in med and b in med and med[b] else "-"

        print("  event path: before / now (CPU per event)                               "
              + ratio("event path, before: Entry per event (µs CPU/event)",
                      "event path, now: layouts into the picture (µs CPU/event)"))
        print("  topology flush: shell script (ip monitor + conntrack -D) / ctguard     "
              + ratio("topology flush of 20000: shell (s)", "topology flush of 20000: ctguard (s)"))
        for note in self.notes:
            print(f"note: {note}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs to take medians of (default 3)")
    ap.add_argument("--rate-us", type=int, default=0,
                    help="hping3 -i uN: microseconds between flood packets (default 0: --flood)")
    ap.add_argument("--new-per-s", type=int, default=50_000,
                    help="new entries a second for the CPU measure (default 50000)")
    ap.add_argument("--lifetime", type=float, default=2.0,
                    help="seconds each churn entry lives before its delete (default 2)")
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness of ctguard and the generator during the CPU measure (default 0; "
                         "e.g. -10 on a machine busy with other work, so the measure is of them)")
    ap.add_argument("--load", type=int, default=0,
                    help="busy processes (nice 0) running during the cpu part, a loaded machine; the generator, the "
                         "top-up and the poll of the count then run at nice -10 (default 0)")
    ap.add_argument("--scheduler", choices=("rr", "fifo", "normal"),
                    help="ctguard's [scheduler] type (default: none written, the daemon's default)")
    ap.add_argument("--only", help="comma-separated: exhaustion,syn,udp,reaction,events,cpu,topology")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench/ctguard: needs root (network namespaces)")
    only = set(args.only.split(",")) if args.only else {"exhaustion", "syn", "udp", "reaction", "events",
                                                          "cpu", "topology"}
    with tempfile.TemporaryDirectory(prefix="nfkit-ctguard-bench-") as tmp, three_node("ncg") as lab:
        bench = Bench(lab, args.runs, args.rate_us, args.new_per_s, Path(tmp), args.nice, args.lifetime,
                      args.load, args.scheduler)
        bench.setup()
        for i in range(args.runs):
            say(f"run {i + 1}/{args.runs}")
            for kind in ("exhaustion", "syn", "udp"):
                if kind in only:
                    for guarded in (False, True):
                        say(f"  {kind}, {'with ctguard' if guarded else 'kernel alone'}")
                        bench.legit_under(kind, guarded)
            if "reaction" in only:
                say("  reaction")
                bench.reaction()
            if "events" in only:
                say("  event path")
                bench.event_path()
            if "cpu" in only:
                say("  cpu")
                bench.cpu()
            if "topology" in only:
                for who in ("shell", "ctguard"):
                    say(f"  topology, {who}")
                    bench.topology(who)
        bench.report()


if __name__ == "__main__":
    main()
