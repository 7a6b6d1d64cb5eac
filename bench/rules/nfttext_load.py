"""`nfkit rules load FILE.nft` against `nft -f FILE.nft` (nft's own text), side by side.

N rules of the shape ``ip saddr A tcp dport P counter accept`` in one inet
chain; each load in a fresh network namespace (``unshare -n``); the median of
three runs each, wall-clock and CPU (user+system).  Not a pass/fail test: it
prints seconds and the ratios.

    sudo .venv/bin/python bench/rules/nfttext_load.py 10000 80000
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NFKIT = [sys.executable, "-m", "nfkit"]


def write_ruleset(path: Path, n: int) -> None:
    with path.open("w") as f:
        f.write("table inet t {\n\tchain c {\n\t\ttype filter hook input priority 0; policy accept;\n")
        for i in range(n):
            f.write(f"\t\tip saddr 192.0.2.{i % 254 + 1} tcp dport {1024 + i % 60000} counter accept\n")
        f.write("\t}\n}\n")


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+system) of one run in a fresh namespace; the CPU
    time is the fairer number on a machine other work is loading."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(["unshare", "-n", *argv], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median3(argv: list[str]) -> tuple[float, float]:
    runs = [timed(argv) for _ in range(3)]
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as d:
        print(f"{'rules':>7} {'nft -f':>8} {'nfkit':>8} {'ratio':>6}   "
              f"{'nft cpu':>8} {'nfkit cpu':>9} {'ratio':>6}")
        for n in sizes:
            f = Path(d) / f"r{n}.nft"
            write_ruleset(f, n)
            nft, nft_cpu = median3(["nft", "-f", str(f)])
            ours, ours_cpu = median3([*NFKIT, "rules", "load", str(f)])
            print(f"{n:>7} {nft:>8.2f} {ours:>8.2f} {ours / nft:>5.2f}x   "
                  f"{nft_cpu:>8.2f} {ours_cpu:>9.2f} {ours_cpu / nft_cpu:>5.2f}x")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10000, 80000])
