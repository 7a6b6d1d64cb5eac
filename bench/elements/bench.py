#!/usr/bin/env python3
"""Benchmark: adding and deleting set elements (a blocklist) with nfkit and with nft.

Per size (BENCH_SIZES, default "1000 5000 20000 100000"), side by side in one run, a fresh
namespace per load, medians of BENCH_RUNS (default 5) runs, wall-clock and CPU:
  nfkit rules element add inet t s --from FILE   (one element per line)
  nft add element inet t s { ... }               (the whole list on one command line)
  nft -f FILE                                    (`add element` in a file)
  nfkit rules load FILE.json / nft -j -f         (the same elements in libnftables JSON)
and the delete of every element, nfkit against nft.  Ratios: nft's time / nfkit's
(> 1: nfkit faster).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NFKIT = [str(ROOT / ".venv/bin/nfkit")] if (ROOT / ".venv/bin/nfkit").exists() else [sys.executable, "-m", "nfkit"]
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "1000 5000 20000 100000").split()]
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
FILL = "nft -f (the deletes' fill)"
SETUP = "table inet t { set s { type ipv4_addr; }; }\n"


def addr(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def timed(argv: list[str], setup: bool = True, stdin: str | None = None) -> tuple[float, float]:
    """(wall, CPU user+system) of ``argv`` in a fresh namespace holding the empty set
    (with ``setup``), or with the set already full (``setup`` False: the delete)."""
    script = "set -e; nft -f - <<'EOF'\n" + SETUP + "EOF\n" if setup else "set -e; "
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(["unshare", "-n", "sh", "-c", script + '"$@"', "sh", *argv], check=True,
                   stdout=subprocess.DEVNULL, input=stdin, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    setup_only = timed(["true"])
    print(f"(every figure includes the namespace's set-up, alone {setup_only[0]*1000:.0f} ms)")
    with tempfile.TemporaryDirectory() as d:
        for n in SIZES:
            elems = [addr(i) for i in range(n)]
            lines = Path(d, "list.txt")
            lines.write_text("\n".join(elems) + "\n")
            nft_file = Path(d, "add.nft")
            nft_file.write_text(f"add element inet t s {{ {', '.join(elems)} }}\n")
            js = Path(d, "add.json")
            js.write_text(json.dumps({"nftables": [{"add": {"element": {
                "family": "inet", "table": "t", "name": "s", "elem": elems}}}]}))
            # delete: set-up loads the elements first, then the timed delete
            cases = {
                "nfkit rules element add --from": NFKIT + ["rules", "element", "add", "inet", "t", "s",
                                                            "--from", str(lines)],
                "nft add element (command line)": ["nft", "add", "element", "inet", "t", "s",
                                                   "{ " + ", ".join(elems) + " }"],
                "nft -f (add element file)": ["nft", "-f", str(nft_file)],
                "nfkit rules load (JSON)": NFKIT + ["rules", "load", str(js)],
                "nft -j -f (JSON)": ["nft", "-j", "-f", str(js)],
                "nfkit delete (all)": ["sh", "-c", f"nft -f {nft_file} && exec \"$@\"", "sh", *NFKIT, "rules",
                                       "element", "delete", "inet", "t", "s", "--from", str(lines)],
                "nft delete (all)": ["sh", "-c", f"nft -f {nft_file} && exec \"$@\"", "sh", "nft", "delete",
                                     "element", "inet", "t", "s", "{ " + ", ".join(elems) + " }"],
            }
            cases[FILL] = ["nft", "-f", str(nft_file)]
            if len(", ".join(elems)) > 100_000:  # one argument may hold 128 KiB (MAX_ARG_STRLEN)
                del cases["nft add element (command line)"], cases["nft delete (all)"]
            res: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
            for _ in range(RUNS):
                for k, argv in cases.items():  # interleaved: one of each per round
                    res[k].append(timed(argv))
            # the delete cases include loading the set with nft -f: take that off (timed in
            # the same rounds: on a shared machine a fill timed apart can exceed them)
            med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in res.items()}
            fill_w, fill_c = med.pop(FILL)
            for k in ("nfkit delete (all)", "nft delete (all)"):
                if k in med:
                    med[k] = (med[k][0] - fill_w + setup_only[0], med[k][1] - fill_c + setup_only[1])
            print(f"\n== {n} elements, median of {RUNS} (wall s / CPU s)")
            for k, (w, c) in med.items():
                print(f"  {k:34s} {w:7.3f} {c:7.3f}")
            pairs = [("nft add element (command line)", "nfkit rules element add --from"),
                     ("nft -f (add element file)", "nfkit rules element add --from"),
                     ("nft -j -f (JSON)", "nfkit rules load (JSON)"), ("nft delete (all)", "nfkit delete (all)")]
            for theirs, ours in pairs:
                if theirs in med:
                    print(f"  {theirs} / {ours}: wall {med[theirs][0]/med[ours][0]:.2f}x  "
                          f"CPU {med[theirs][1]/med[ours][1]:.2f}x")


if __name__ == "__main__":
    main()
