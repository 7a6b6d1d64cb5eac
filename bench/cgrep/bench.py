"""bench/cgrep: nfkit cgrep vs coccigrep (spatch) on Linux's netfilter sources.

Unpacks Debian's linux-source tarball once into /var/cache/nfkit-bench (never
into the repository), then for each query runs coccigrep once (it is slow)
and `nfkit cgrep` several times (median), compares the match sets (file,
line, column of the matched object) and classifies every disagreement:

  header-typed   found by nfkit only because a kernel header tells the
                 object's type (nfkit without -I does not find it)
  spatch-parse   spatch could not parse the function holding it
                 (`spatch --parse-c` reports a parse error there)
  one-per-call   func: coccigrep reported another argument of the same call
                 (its template's disjunction stops at the first argument that
                 matches; nfkit reports each argument of the type)
  macro-typed    the object is typed through a macro nfkit knows
                 (READ_ONCE, rcu_dereference, container_of, list_entry...)
  nfkit-other    any other match of nfkit only (printed with its line)
  nfkit-miss     found by coccigrep only (printed with its line)

Also times all queries in one `nfkit cgrep -e ... -e ...` pass, and one cold
run (empty header cache).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

CACHE = os.environ.get("NFKIT_BENCH_CACHE", "/var/cache/nfkit-bench")
DIRS = ["net/netfilter", "net/ipv4/netfilter", "net/ipv6/netfilter"]
QUERIES = [
    ("struct nf_conn", "status", "set"),
    ("struct nf_conn", "status", "test"),
    ("struct nf_conn", "mark", "deref"),
    ("struct nf_conn", "timeout", "set"),
    ("struct sk_buff", "len", "test"),
    ("struct sk_buff", "dev", "deref"),
    ("struct nf_conntrack_tuple", "dst", "deref"),
    ("struct nf_conntrack_expect", "master", "deref"),
    ("struct nft_pktinfo", "skb", "deref"),
    ("struct nf_conn", None, "used"),
    ("struct nf_conn", "^nf_ct_", "func"),
    ("struct nf_hook_state", "net", "deref"),
]
CLASSES = ("header-typed", "spatch-parse", "one-per-call", "macro-typed", "nfkit-other",
           "nfkit-miss")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NFKIT = os.path.join(ROOT, ".venv", "bin", "nfkit")


def kernel_tree() -> str:
    """The unpacked source tree (unpacked now if needed)."""
    tarballs = sorted(glob.glob("/usr/src/linux-source-*.tar.xz"), reverse=True)
    if not tarballs:
        sys.exit("bench/cgrep: no /usr/src/linux-source-*.tar.xz "
                 "(scripts/apt-need linux-source-6.12)")
    tarball = tarballs[0]
    name = os.path.basename(tarball)[: -len(".tar.xz")]
    tree = os.path.join(CACHE, name)
    stamp = os.path.join(tree, ".nfkit-unpacked")
    if not os.path.exists(stamp):
        os.makedirs(CACHE, exist_ok=True)
        print(f"unpacking {tarball} (netfilter dirs and include/) into {CACHE} ...", flush=True)
        wanted = [f"{name}/{d}/" for d in DIRS] + [f"{name}/include/"]
        with tarfile.open(tarball, "r|xz") as archive:  # one streaming pass
            for member in archive:
                if any(member.name.startswith(w) for w in wanted):
                    archive.extract(member, CACHE, filter="data")
        open(stamp, "w").close()
    return tree


def c_files(tree: str) -> list[str]:
    found = []
    for directory in DIRS:
        for root, _, files in os.walk(os.path.join(tree, directory)):
            found += [os.path.relpath(os.path.join(root, f), tree) for f in files
                      if f.endswith(".c")]
    return sorted(found)


def label(query: tuple[str, str | None, str]) -> str:
    return f"{query[0]}:{query[1] or ''}:{query[2]}"


FUNCTIONS: dict[tuple, str | None] = {}


def children_cpu() -> float:
    """CPU seconds (user + system) of every finished child process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


LAST_CPU = [0.0]


def run_nfkit(tree: str, files: list[str], queries: list, include: bool = True,
              cache: str | None = None) -> tuple[float, dict[str, set]]:
    """One `nfkit cgrep --json` run; (wall seconds, label -> {(file, line, col0)}).

    Its CPU seconds are left in LAST_CPU[0]."""
    args = [NFKIT, "cgrep", "--json", "-"]
    if include:
        args += ["-I", "include"]
    for query in queries:
        args += ["-e", label(query)]
    env = dict(os.environ)
    if cache is not None:
        env["NFKIT_CGREP_CACHE"] = cache
    cpu = children_cpu()
    start = time.monotonic()
    done = subprocess.run(args, cwd=tree, input="\n".join(files), capture_output=True,
                          text=True, env=env)
    elapsed = time.monotonic() - start
    LAST_CPU[0] = children_cpu() - cpu
    if done.returncode not in (0, 1):
        sys.exit(f"nfkit cgrep failed: {done.stderr.strip()}")
    found: dict[str, set] = {label(q): set() for q in queries}
    for line in done.stdout.splitlines():
        match = json.loads(line)
        key = f"{match['type']}:{match['attr'] or ''}:{match['op']}"
        place = (match["file"], match["line"], match["column"] - 1)
        found[key].add(place)
        FUNCTIONS[place] = match["function"]
    return elapsed, found


def run_coccigrep(tree: str, files: list[str], query: tuple, jobs: int) -> tuple[float, set]:
    """One coccigrep search through its Python API (which runs spatch).

    The CPU seconds of its spatch processes are left in LAST_CPU[0]."""
    from coccigrep.coccigrep import CocciGrep

    grep = CocciGrep()
    grep.setup(query[0], query[1] or "", query[2])
    grep.set_concurrency(jobs)
    here = os.getcwd()
    os.chdir(tree)
    try:
        cpu = children_cpu()
        start = time.monotonic()
        grep.run(files)
        elapsed = time.monotonic() - start
        LAST_CPU[0] = children_cpu() - cpu
    finally:
        os.chdir(here)
    return elapsed, {(m.file, m.line, m.column) for m in grep.matches}


MACROS = ("READ_ONCE", "rcu_dereference", "rcu_access_pointer", "container_of",
          "list_entry", "list_first_entry", "hlist_entry", "list_next_entry", "rb_entry")
_spatch_errors: dict[str, list[tuple[int, int]]] = {}


def spatch_bad_ranges(tree: str, path: str) -> list[tuple[int, int]]:
    """(error line, resync line) pairs of `spatch --parse-c` on one file."""
    if path not in _spatch_errors:
        done = subprocess.run(["spatch", "--parse-c", path], cwd=tree, capture_output=True,
                              text=True, errors="replace", timeout=300)
        # spatch prints the resync lines first, then the place of the error.
        ranges, resync_line = [], None
        for line in (done.stdout + done.stderr).splitlines():
            resync = re.match(r"ERROR-RECOV: found sync '}' at line (\d+)", line)
            if resync:
                resync_line = int(resync.group(1))
            found = re.match(r' = File "(.*)", line (\d+)', line)
            if found:
                if found.group(1) == path and resync_line is not None:
                    ranges.append((int(found.group(2)), resync_line))
                resync_line = None
        _spatch_errors[path] = ranges
    return _spatch_errors[path]


def function_start(tree: str, key: tuple, function: str | None) -> int:
    """Line where the function holding a match begins (its header line)."""
    if not function:
        return key[1]
    with open(os.path.join(tree, key[0]), errors="replace") as handle:
        lines = handle.read().split("\n")
    start = key[1]
    header = re.compile(rf"^(?:\S.*\b)?{re.escape(function)}\s*\(")
    for number in range(key[1], 0, -1):
        if header.match(lines[number - 1]):
            start = number
            break
    return start


def classify(tree: str, key: tuple, bare: set, functions: dict, cocci: set,
             operation: str) -> str:
    if key not in bare:
        return "header-typed"
    if operation == "func" and any(k[0] == key[0] and k[1] == key[1] for k in cocci):
        return "one-per-call"
    start = function_start(tree, key, functions.get(key))
    for error_line, resync in spatch_bad_ranges(tree, key[0]):
        if start <= error_line <= resync and start <= key[1] <= resync:
            return "spatch-parse"
    if any(name in source_line(tree, key) for name in MACROS):
        return "macro-typed"
    return "nfkit-other"


def source_line(tree: str, key: tuple) -> str:
    with open(os.path.join(tree, key[0]), errors="replace") as handle:
        lines = handle.read().split("\n")
    return lines[key[1] - 1].strip() if key[1] - 1 < len(lines) else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="nfkit runs per query (median)")
    parser.add_argument("--queries", type=int, default=len(QUERIES),
                        help="only the first N queries")
    parser.add_argument("--report", default=os.path.join(CACHE, "cgrep-bench.json"),
                        help="where the full comparison is written as JSON")
    args = parser.parse_args()
    tree = kernel_tree()
    files = c_files(tree)
    queries = QUERIES[: args.queries]
    jobs = len(os.sched_getaffinity(0))
    print(f"{len(files)} C files under {', '.join(DIRS)} of {os.path.basename(tree)}, "
          f"include path include/, {jobs} cores for both tools", flush=True)

    with tempfile.TemporaryDirectory() as cold_cache:
        cold, _ = run_nfkit(tree, files, queries[:1], cache=cold_cache)
    run_nfkit(tree, files, queries[:1])  # warm the default header cache

    rows, report = [], {}
    total_cocci = total_nfkit = cpu_cocci_total = cpu_nfkit_total = 0.0
    print("wall seconds (coccigrep once, nfkit median), ratio; CPU seconds of each, ratio;")
    print("matches: coccigrep, nfkit, both, coccigrep only, nfkit only")
    print(f"{'query':42} {'cocci':>7} {'nfkit':>6} {'ratio':>6}  {'cpu-c':>6} {'cpu-n':>5} "
          f"{'ratio':>6}  {'cocci':>5} {'nfkit':>5} {'both':>5} {'c-only':>6} {'n-only':>6}",
          flush=True)
    for query in queries:
        name = label(query)
        cocci_time, cocci = run_coccigrep(tree, files, query, jobs)
        cocci_cpu = LAST_CPU[0]
        times, cpus, found = [], [], set()
        for _ in range(args.runs):
            elapsed, result = run_nfkit(tree, files, [query])
            times.append(elapsed)
            cpus.append(LAST_CPU[0])
            found = result[name]
        nfkit_cpu = statistics.median(cpus)
        cpu_cocci_total += cocci_cpu
        cpu_nfkit_total += nfkit_cpu
        _, bare = run_nfkit(tree, files, [query], include=False)
        nfkit_time = statistics.median(times)
        total_cocci += cocci_time
        total_nfkit += nfkit_time
        both = cocci & found
        cocci_only = sorted(cocci - found)
        nfkit_only = sorted(found - cocci)
        classified: dict[str, list] = {cls: [] for cls in CLASSES}
        for key in nfkit_only:
            classified[classify(tree, key, bare[name], FUNCTIONS, cocci, query[2])].append(key)
        classified["nfkit-miss"] = cocci_only
        report[name] = {
            "coccigrep_s": cocci_time, "nfkit_s": nfkit_time, "nfkit_runs": times,
            "coccigrep_cpu_s": cocci_cpu, "nfkit_cpu_s": nfkit_cpu,
            "coccigrep": len(cocci), "nfkit": len(found), "both": len(both),
            "disagreements": {cls: [[*k, source_line(tree, k)] for k in keys]
                              for cls, keys in classified.items()},
        }
        rows.append(name)
        print(f"{name:42} {cocci_time:6.1f}s {nfkit_time:5.2f}s {cocci_time / nfkit_time:5.1f}x  "
              f"{cocci_cpu:5.1f}s {nfkit_cpu:4.2f}s {cocci_cpu / nfkit_cpu:5.1f}x  "
              f"{len(cocci):5} {len(found):5} {len(both):5} {len(cocci_only):6} "
              f"{len(nfkit_only):6}", flush=True)

    passes, pass_cpus = [], []
    for _ in range(args.runs):
        passes.append(run_nfkit(tree, files, queries)[0])
        pass_cpus.append(LAST_CPU[0])
    one_pass, one_pass_cpu = statistics.median(passes), statistics.median(pass_cpus)
    print()
    print(f"sum over {len(queries)} queries: coccigrep {total_cocci:.1f}s, nfkit "
          f"{total_nfkit:.2f}s (one process per query): {total_cocci / total_nfkit:.1f}x wall; "
          f"CPU {cpu_cocci_total:.1f}s vs {cpu_nfkit_total:.2f}s: "
          f"{cpu_cocci_total / cpu_nfkit_total:.1f}x")
    print(f"nfkit, all {len(queries)} queries in one pass (-e ... -e ...): {one_pass:.2f}s: "
          f"{total_cocci / one_pass:.1f}x wall; CPU {one_pass_cpu:.2f}s: "
          f"{cpu_cocci_total / one_pass_cpu:.1f}x")
    print(f"nfkit cold (empty header cache, first query): {cold:.2f}s")
    print()
    for cls in CLASSES:
        count = sum(len(r["disagreements"][cls]) for r in report.values())
        print(f"disagreements {cls}: {count}")
    for name in rows:
        for cls in ("nfkit-miss", "nfkit-other"):
            for entry in report[name]["disagreements"][cls]:
                print(f"  {cls:12} {name}: {entry[0]}:{entry[1]}:{entry[2] + 1}: {entry[3]}")
    report["_summary"] = {"files": len(files), "coccigrep_total_s": total_cocci,
                          "nfkit_total_s": total_nfkit, "nfkit_one_pass_s": one_pass,
                          "coccigrep_cpu_s": cpu_cocci_total, "nfkit_cpu_s": cpu_nfkit_total,
                          "nfkit_one_pass_cpu_s": one_pass_cpu, "nfkit_cold_s": cold}
    with open(args.report, "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"full comparison: {args.report}")


if __name__ == "__main__":
    main()
