#!/usr/bin/env python3
# ruff: noqa: E501
"""Benchmark: the files users have, loaded by nfkit and by nft, side by side in one run.

(a) `nft -j list ruleset` output of N rules `ip saddr A tcp dport P counter accept`
    in an inet chain (handles, counter values, the inet family);
(b) the same ruleset as nft text;
(c) a mixed ruleset of N rules over 24 shapes (inputs.SHAPES), as nft text and as
    nft's own JSON listing of it.
Each load in a fresh network namespace (unshare -n); nfkit rules load, nft -f, nft -j
-f, and the kernel's commit of the same batch (nfkit's batch bytes sent alone, in one
sendmsg, timed around the send only).  Then, on a loaded N-rule chain: `nfkit rules
exists` of the last rule (cache cold and warm) against `iptables-nft -C`, and the
listings against the bare dump.  Medians of BENCH_RUNS (default 3); the machine is
shared: read the ratios, not the seconds.  Each load's CPU time (user + system, from
the children's rusage) is printed beside its wall time, the kernel commit's as the
sending thread's CPU time (the kernel does the commit in that thread); on a loaded
machine the CPU ratios are the steadier figures.  BENCH_NO_DETAIL=1 skips exists and
the listings; BENCH_ONLY=exists runs the exists part alone; BENCH_CASES="a b c cj"
picks load cases ((c) as text: c, as nft's JSON listing: cj); BENCH_NFKIT_B=DIR also
loads each file with the nfkit package under DIR (another version's src/, e.g. main's
from `git archive`), in the same runs, A and B alternating (both through `env`).  The kernel's commit is
also timed with the batch's anonymous sets named "__set%d" (nft's names, the kernel
searching for numbers; nfkit names them itself: nfkit.nftables.anonnames), unless
BENCH_TEMPLATE_COMMIT=0.  System CPU (the kernel's commit) is printed beside each CPU.

    sudo .venv/bin/python bench/rules/files.py            # N=80000
    BENCH_SIZES="10000" BENCH_RUNS=5 sudo .venv/bin/python bench/rules/files.py
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
PY = str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists() else sys.executable
NFKIT = [str(ROOT / ".venv/bin/nfkit")] if (ROOT / ".venv/bin/nfkit").exists() else [PY, "-m", "nfkit"]

from inputs import a4, listing_nft, mixed_nft, port  # noqa: E402

SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "80000").split()]
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
ONLY_EXISTS = os.environ.get("BENCH_ONLY") == "exists"
ANON_CASES = os.environ.get("BENCH_TEMPLATE_COMMIT", "1") == "1"  # also time nft's set names
WARM = 5  # warm exists per run (the cheap one, the noisiest)
B_SRC = os.environ.get("BENCH_NFKIT_B")  # another version's src/: an A/B in one run

FLOOR = r'''
import sys, time
from nfkit.cli.bulk import read_commands
from nfkit.nftables.commits import encode_commands, known_sets
from nfkit.nftables.listing import open_socket
from nfkit.nftables.messages import Encoder
from nfkit.nftables import anonnames
from nfkit.netlink.codec import Batch
cmds = read_commands(sys.argv[1])
s = open_socket()
b = Batch(); e = Encoder(b, known_sets(cmds, s))
encode_commands(cmds, e)
# as nfkit sends it, or (argument "template") with nft's "__set%d" names
named = None if sys.argv[2:] == ["template"] else anonnames.named(b, anonnames.existing_names(s))
b = named[0] if named else b
b.close()
data = bytes(b.buffer)
s.ensure_sndbuf(len(data) + (1 << 20))
c0 = time.thread_time(); t0 = time.perf_counter(); s.send(data); t1 = time.perf_counter()
print(t1 - t0, time.thread_time() - c0)  # the kernel's work runs in the sender's thread
'''

DUMP = r'''
import time
from nfkit.netlink.codec import MessageWriter
from nfkit.netlink.consts import NLM_F_REQUEST
from nfkit.nftables.listing import open_socket
from nfkit.nftables.messages import msg_type
s = open_socket()
w = MessageWriter(); w.begin(msg_type("getrule"), NLM_F_REQUEST, family=0); w.end()
t0 = time.perf_counter()
for _ in s.dump_datagrams(w):
    pass
print(time.perf_counter() - t0)
'''


CPU: dict[str, list[float]] = {}  # CPU seconds (user + system) of each timed command
SYS: dict[str, list[float]] = {}  # ... of which system (the kernel's commit runs there)

# Times a command from inside its namespace (`ip netns exec`'s own mount namespace and
# /sys remount are not the command's): prints wall and user + system CPU seconds.
INSIDE = r'''
import json, resource, subprocess, sys, time
argv = json.loads(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_CHILDREN)
t0 = time.perf_counter()
subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
wall = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_CHILDREN)
print(wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
'''


def timed(argv: list[str], name: str = "") -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if name:
        CPU.setdefault(name, []).append(after.ru_utime - before.ru_utime
                                        + after.ru_stime - before.ru_stime)
        SYS.setdefault(name, []).append(after.ru_stime - before.ru_stime)
    return wall


def timed_inside(ns: object, argv: list[str], name: str) -> float:
    """``argv`` run and timed inside namespace ``ns`` (see INSIDE)."""
    import json

    out = ns.run([PY, "-c", INSIDE, json.dumps(argv)]).stdout  # type: ignore[attr-defined]
    wall, cpu = map(float, out.split())
    CPU.setdefault(name, []).append(cpu)
    return wall


def fresh(argv: list[str], name: str = "") -> float:
    """``argv`` in a fresh network namespace, timed (namespace set-up included for
    every tool alike)."""
    return timed(["unshare", "-n", *argv], name)


def floor(path: Path, *how: str) -> float:
    out = subprocess.run(["unshare", "-n", PY, "-c", FLOOR, str(path), *how], check=True,
                         capture_output=True, text=True).stdout
    wall, cpu = map(float, out.split())
    CPU.setdefault("kernel commit" + "".join(f", {h}" for h in how), []).append(cpu)
    return wall


def nft_json_listing(text_path: Path, json_path: Path) -> None:
    """nft's own JSON listing of ``text_path`` (loaded by nft in a namespace)."""
    with open(json_path, "w") as out:
        subprocess.run(["unshare", "-n", "sh", "-c", f"nft -f {text_path} && nft -j list ruleset"],
                       check=True, stdout=out)


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def loads(d: Path, n: int) -> None:
    files = {"b": d / "listing.nft", "a": d / "listing.json", "c": d / "mixed.nft",
             "c-json": d / "mixed.json"}
    files["b"].write_text(listing_nft(n))
    files["c"].write_text(mixed_nft(n))
    nft_json_listing(files["b"], files["a"])
    nft_json_listing(files["c"], files["c-json"])
    cases = [("(a) nft -j list output", files["a"], files["b"]),
             ("(b) the same as nft text", files["b"], files["a"]),
             ("(c) mixed, 24 shapes, nft text", files["c"], files["c-json"]),
             ("(c) mixed, nft's JSON listing", files["c-json"], files["c"])]
    only = os.environ.get("BENCH_CASES")  # e.g. "a b": those cases alone
    if only:
        cases = [c for c in cases if c[0][1] in only.split()
                 or (c[0][1] + ("j" if c[1].suffix == ".json" else "")) in only.split()]
    for title, path, other in cases:
        text_p, json_p = (path, other) if path.suffix == ".nft" else (other, path)
        res: dict[str, list[float]] = {}
        CPU.clear()
        SYS.clear()
        for _ in range(RUNS):
            ab = ["env", "PYTHONPATH="] if B_SRC else []  # the same exec for A and B
            res.setdefault("nfkit rules load", []).append(
                fresh([*ab, *NFKIT, "rules", "load", str(path)], "nfkit rules load"))
            if B_SRC:
                res.setdefault("nfkit B", []).append(fresh(
                    ["env", f"PYTHONPATH={B_SRC}", *NFKIT, "rules", "load", str(path)], "nfkit B"))
            res.setdefault("nft -f", []).append(fresh(["nft", "-f", str(text_p)], "nft -f"))
            res.setdefault("nft -j -f", []).append(fresh(["nft", "-j", "-f", str(json_p)], "nft -j -f"))
            res.setdefault("kernel commit", []).append(floor(path))
            if ANON_CASES:  # the same batch with the kernel naming the anonymous sets
                res.setdefault("kernel commit, template", []).append(floor(path, "template"))
        m = {k: med(v) for k, v in res.items()}
        c = {k: med(v) for k, v in CPU.items()}
        sy = {k: med(v) for k, v in SYS.items()}
        ours, cours = m["nfkit rules load"], c["nfkit rules load"]
        print(f"\n== load {n} rules: {title} ({path.name}; median of {RUNS}, fresh namespace each, "
              f"load average {os.getloadavg()[0]:.1f})")
        print(f"  {'':22s} {'wall':>7s}     {'cpu':>5s}   {'(sys)':>7s}   ratios wall (cpu)")
        print(f"  nfkit rules load       {ours:7.2f} s {cours:5.2f} s ({sy['nfkit rules load']:5.2f} s)"
              f"   nfkit/kernel commit = {ours / m['kernel commit']:.2f} ({cours / c['kernel commit']:.2f})")
        if B_SRC:
            k = "nfkit B"
            print(f"  (B: the nfkit package under {B_SRC})")
            print(f"  {'nfkit rules load, B':22s} {m[k]:7.2f} s {c[k]:5.2f} s ({sy[k]:5.2f} s)"
                  f"   B/kernel commit = {m[k] / m['kernel commit']:.2f} ({c[k] / c['kernel commit']:.2f})"
                  f"   B/nfkit = {m[k] / ours:.2f} ({c[k] / cours:.2f})")
        for k in ("nft -f", "nft -j -f"):
            print(f"  {k:22s} {m[k]:7.2f} s {c[k]:5.2f} s ({sy[k]:5.2f} s)"
                  f"   {k}/nfkit = {m[k] / ours:.2f} ({c[k] / cours:.2f})")
        print(f"  kernel commit          {m['kernel commit']:7.2f} s {c['kernel commit']:5.2f} s"
              "   (the batch alone, one sendmsg)")
        if "kernel commit, template" in m:
            k = "kernel commit, template"
            print(f"  {k:22s} {m[k]:7.2f} s {c[k]:5.2f} s   (the same, anonymous sets named "
                  "\"__set%d\" as nft sends them)")
        print("  per run (wall): " + "; ".join(" ".join(f"{res[k][i]:.2f}" for k in res) for i in range(RUNS)))


def exists_and_lists(d: Path, n: int) -> None:
    """exists (cold and warm cache) vs iptables-nft -C, listings vs the bare dump, on an
    n-rule chain loaded once in one namespace (and the same rules by iptables-nft-restore
    in another)."""
    from nfkit.lab import Lab

    rule = (f'[{{"match": {{"op": "==", "left": {{"payload": {{"protocol": "ip", "field": "saddr"}}}}, "right": "{a4(n - 1)}"}}}},'
            f' {{"match": {{"op": "==", "left": {{"payload": {{"protocol": "tcp", "field": "dport"}}}}, "right": {port(n - 1)}}}}},'
            ' {"counter": null}, {"accept": null}]')
    ipt = d / "r.ipt"
    with open(ipt, "w") as f:
        f.write("*filter\n:INPUT ACCEPT [0:0]\n")
        for i in range(n):
            f.write(f"-A INPUT -s {a4(i)}/32 -p tcp -m tcp --dport {port(i)} -j ACCEPT\n")
        f.write("COMMIT\n")
    have_ipt = shutil.which("iptables-nft") is not None
    with Lab("nkf") as lab:
        ns = lab.add("a")
        ns.run([*NFKIT, "rules", "load", str(d / "listing.nft")])
        ns2 = lab.add("i") if have_ipt else None
        if ns2 is not None:
            with open(ipt) as f:
                subprocess.run(ns2.argv(["iptables-nft-restore"]), stdin=f, check=True)
        exists = [*NFKIT, "rules", "exists", "-f", "inet", "-t", "t", "-c", "c", rule]
        res: dict[str, list[float]] = {}
        CPU.clear()
        start = [PY, "-c", "pass"]
        for _ in range(RUNS):
            res.setdefault("python start", []).append(timed_inside(ns, start, "python start"))
            # another process commits (the generation moves): the next exists re-dumps
            ns.run("nft add table inet scratch")
            ns.run("nft delete table inet scratch")
            res.setdefault("exists, cold cache", []).append(timed(ns.argv(exists)))
            for _ in range(WARM):
                res.setdefault("exists, warm cache", []).append(timed_inside(ns, exists, "exists, warm cache"))
            if ns2 is not None:
                res.setdefault("iptables-nft -C", []).append(timed_inside(ns2, [
                    "iptables-nft", "-C", "INPUT", "-s", a4(n - 1), "-p", "tcp", "--dport",
                    str(port(n - 1)), "-j", "ACCEPT"], "iptables-nft -C"))
            if ONLY_EXISTS:
                continue
            res.setdefault("bare dump", []).append(float(ns.run([PY, "-c", DUMP]).stdout))
            res.setdefault("nfkit rules list", []).append(timed(ns.argv([*NFKIT, "rules", "list"])))
            res.setdefault("nfkit rules list --json", []).append(timed(ns.argv([*NFKIT, "rules", "list", "--json"])))
            res.setdefault("nft list ruleset", []).append(timed(ns.argv(["nft", "list", "ruleset"])))
            res.setdefault("nft -j list ruleset", []).append(timed(ns.argv(["nft", "-j", "list", "ruleset"])))
        m = {k: med(v) for k, v in res.items()}
        c = {k: med(v) for k, v in CPU.items()}
        warm = m["exists, warm cache"]
        print(f"\n== exists, the last of {n} rules (median of {RUNS}, warm {RUNS * WARM}; process start "
              "included, timed inside the namespace; wall, and user + system CPU; "
              f"load average {os.getloadavg()[0]:.1f})")
        print(f"  python start alone         {m['python start'] * 1000:7.1f} ms  cpu {c['python start'] * 1000:6.1f} ms")
        print(f"  nfkit rules exists, cold   {m['exists, cold cache'] * 1000:7.1f} ms   (dump, fingerprints cached)")
        print(f"  nfkit rules exists, warm   {warm * 1000:7.1f} ms  cpu {c['exists, warm cache'] * 1000:6.1f} ms"
              "   (GETGEN + GETRULE of one handle)")
        if "iptables-nft -C" in m:
            print(f"  iptables-nft -C            {m['iptables-nft -C'] * 1000:7.1f} ms  cpu {c['iptables-nft -C'] * 1000:6.1f} ms"
                  f"   iptables/nfkit warm = {m['iptables-nft -C'] / warm:.1f} (wall), "
                  f"{c['iptables-nft -C'] / c['exists, warm cache']:.1f} (cpu)")
        if ONLY_EXISTS:
            return
        dump = m["bare dump"]
        print(f"== list the {n}-rule chain (median of {RUNS})")
        print(f"  bare dump (nothing decoded) {dump:6.2f} s")
        for k in ("nfkit rules list", "nfkit rules list --json", "nft list ruleset", "nft -j list ruleset"):
            print(f"  {k:27s} {m[k]:6.2f} s   /dump = {m[k] / dump:.2f}")


def main() -> None:
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "src" / "nfkit")], check=True)
    if B_SRC:
        subprocess.run([PY, "-m", "compileall", "-q", B_SRC], check=True)
    # exists' cache in a directory of this run's own (root's, under /run), removed after
    cache = Path(f"/run/nfkit-bench-{os.getpid()}")
    os.environ["NFKIT_CACHE_DIR"] = str(cache)
    try:
        _main()
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _main() -> None:
    print(f"nfkit vs nft, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (a shared machine)")
    for n in SIZES:
        d = Path(tempfile.mkdtemp(prefix="nfkit-files-"))
        try:
            if ONLY_EXISTS:
                (d / "listing.nft").write_text(listing_nft(n))
            else:
                loads(d, n)
            if os.environ.get("BENCH_NO_DETAIL") != "1":
                exists_and_lists(d, n)
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
