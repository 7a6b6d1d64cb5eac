"""`nfkit nfgrep classify [--json] CAPTURE...` without click (the common command line).

Owns: printing a classify report (each flow's line, the notes on stderr) and
the process's heap setting, for the click command (`nfkit.cli.nfgrep_classify`)
and for `quick_classify`, which `nfkit.cli.entry` calls before click is
imported (about 0.02-0.03 s of a run's start-up) and which ends the process
itself (a one-shot command).  Must not know: options other than ``--json``
and ``--jobs`` (the click command parses every other command line, and any
of those two it does not take as they are).
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from nfkit.cli.guard import one_shot

# numpy's OpenBLAS starts a thread per core at import, about 0.05 s of CPU; nfgrep does no
# linear algebra (set before anything imports numpy; a user's setting stands)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

if TYPE_CHECKING:  # numpy comes with the classifier: imported when a command runs
    from nfkit.nfgrep.classify import ClassifyReport, FlowResult


def _value(v: str) -> str:
    if v == "" or any(c in v for c in ' "=\t\n\\'):
        return json.dumps(v)
    return v


def flow_line(r: FlowResult) -> str:
    """One flow: transport, client, server, app, fields, packets and bytes each way.

    Notes at the end: ``(sides guessed)`` when the TCP handshake was not
    captured, ``(stream gap)`` when reassembly gave up a hole before the
    engine was done.
    """
    fields = " ".join(f"{k}={_value(str(v))}" for k, v in r.fields.items())
    parts = [r.proto, r.client, "->", r.server, r.app or "unknown"]
    if fields:
        parts.append(fields)
    parts.append(f"packets {r.packets[0]}/{r.packets[1]} bytes {r.bytes[0]}/{r.bytes[1]}")
    if r.guessed_sides:  # no handshake in the capture: the lower port was taken as the server
        parts.append("(sides guessed)")
    if r.gap:
        parts.append("(stream gap)")
    if r.evicted:
        parts.append("(evicted: memory budget)")
    return " ".join(parts)


def keep_freed_heap() -> None:
    """Keep memory freed by this process for its next allocations (glibc; elsewhere nothing).

    Reading a capture makes and frees the same few-MB arrays batch after batch;
    glibc would map each one afresh and unmap it when freed (and trim its heap),
    so each new array's pages were faulted in and zeroed again: about 27,000
    page faults and 0.07 s of system time on the 1.3 GB bench capture.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest on 64-bit: every batch's arrays
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt(3) parameters


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def print_flows(report: ClassifyReport, as_json: bool) -> None:
    """Each flow's line on stdout (JSON or text)."""
    out = sys.stdout
    flows = report.flows
    if as_json:
        from nfkit.nfgrep.classify import FlowResult

        for at in range(0, len(flows), _CHUNK):  # in chunks: a million flows' text is not held at once
            # line by line (in C): one large write would hide a reader gone during it (a
            # partial write, then nothing: no BrokenPipeError, status 0 where it is 141)
            out.writelines(FlowResult.json_lines(flows[at:at + _CHUNK]))
    else:
        for r in flows:
            out.write(flow_line(r) + "\n")
    out.flush()


_CHUNK = 8192  # flows formatted at once


def print_notes(report: ClassifyReport) -> None:
    """What the run gave up or found damaged, on stderr."""
    from nfkit.nfgrep.classify import FLOW_BYTES

    notes = []
    if report.budget_evicted:
        notes.append(f"nfkit: {report.budget_evicted} flow(s) given up on undecided, idle longest "
                     f"first, to stay within --max-memory {_mib(report.max_memory)} "
                     "(marked evicted)")
    if report.evicted:
        notes.append(f"nfkit: {report.evicted} flow(s) ended early: the flow table was full "
                     f"(--max-flows, or --max-memory at {FLOW_BYTES} bytes a flow)")
    notes += [f"nfkit: {note}" for note in report.notes]
    notes += [f"nfkit: capture {stop}" for stop in report.stops]
    for line in notes:
        print(line, file=sys.stderr, flush=True)


def classify_args_of(args: list[str]) -> tuple[list[str], bool, int] | None:
    """(captures, --json, --jobs) of ``nfgrep classify [--json] [--jobs N] CAPTURE...`` when
    this module can run it as the click command would: files that exist (click checks the
    rest), options none but ``--json`` and ``--jobs`` (``--jobs N`` or ``--jobs=N``, N plain
    digits; each at most once), no terminal on stdout or stderr (a summary table, a progress
    bar); else None."""
    if args[:2] != ["nfgrep", "classify"]:
        return None
    rest = args[2:]
    as_json = "--json" in rest
    if as_json:
        rest = [a for a in rest if a != "--json"]
        if len(rest) != len(args) - 3:  # --json twice: click's business
            return None
    jobs = 1
    given = [k for k, a in enumerate(rest) if a == "--jobs" or a.startswith("--jobs=")]
    if len(given) > 1:
        return None
    if given:
        k = given[0]
        if rest[k] == "--jobs":
            if k + 1 >= len(rest):
                return None
            value, rest = rest[k + 1], rest[:k] + rest[k + 2:]
        else:
            value, rest = rest[k][len("--jobs="):], rest[:k] + rest[k + 1:]
        if not value.isascii() or not value.isdigit() or len(value) > 6:
            return None  # click's words for what is not a number of processes
        jobs = int(value)
    if not rest or any(a.startswith("-") or not os.path.isfile(a) for a in rest):
        return None
    if sys.stdout.isatty() or sys.stderr.isatty():
        return None
    return rest, as_json, jobs


@one_shot
def quick_classify(captures: list[str], as_json: bool, jobs: int = 1) -> int:
    """The click command's work for `classify_args_of`'s command lines (same output, same exit).

    A one-shot command (`nfkit.cli.guard.one_shot`): no cyclic garbage
    collection, the process ended when it is done.  A run makes no reference
    cycles per packet or flow (the same ~1,500 objects of cyclic garbage, all
    from loading, after bench/nfgrep's capture and after four copies of it), and
    the collector's passes over the young objects (the batch's lists and tuples)
    were ~40 ms of that capture's 1.5 s; freeing the run's objects at exit, more.
    """
    from nfkit.nfgrep.classify import classify

    keep_freed_heap()
    report = classify(captures, jobs=jobs)
    print_flows(report, as_json)
    print_notes(report)
    return 1 if report.stops else 0
