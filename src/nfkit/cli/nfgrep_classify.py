"""`nfkit nfgrep classify`: the flows of capture files and what runs in them.

Formatting only; the work is `nfkit.nfgrep.classify`.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import TYPE_CHECKING

import click

from nfkit.cli.nfgrep_quick import flow_line, keep_freed_heap, print_flows, print_notes
from nfkit.errors import InputError
from nfkit.nfgrep.classify import ACTIVE_BYTES, FLOW_BYTES, ClassifyReport, FlowResult
from nfkit.nfgrep.classify import classify as run_classify

if TYPE_CHECKING:  # rich is imported only when a terminal shows progress
    from rich.progress import TaskID

_PROGRESS_MIN = 4 << 20  # files smaller than this finish before a bar is worth drawing


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class ByteSize(click.ParamType):
    """A size in bytes: a whole number with an optional K, M, G or T suffix (powers of 1024)."""

    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        unit = text[-1:].lower() if text[-1:].isalpha() else ""
        digits = text[:-1] if unit else text
        if unit not in _UNITS or not digits.isascii() or not digits.isdigit() or len(digits) > 15:
            self.fail(f"{value!r} is not a size (a whole number, optionally K, M, G or T)", param, ctx)
        size = int(digits) * _UNITS[unit]
        low = FLOW_BYTES + ACTIVE_BYTES
        if size < low:
            self.fail(f"{value!r} is below the smallest budget, {low} bytes", param, ctx)
        return size


def _summary(report: ClassifyReport, stderr: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    flows: Counter[str] = Counter()
    packets: Counter[str] = Counter()
    octets: Counter[str] = Counter()
    for r in report.flows:
        app = r.app or "unknown"
        flows[app] += 1
        packets[app] += sum(r.packets)
        octets[app] += sum(r.bytes)
    title = f"{len(report.flows)} flows, {report.packets} packets"
    if report.budget_evicted:
        title += f", {report.budget_evicted} evicted undecided (memory budget)"
    table = Table(title=title)
    for col in ("app", "flows", "packets", "bytes"):
        table.add_column(col, justify="left" if col == "app" else "right")
    for app, n in flows.most_common():
        table.add_row(app, str(n), str(packets[app]), str(octets[app]))
    Console(stderr=stderr).print(table)


@click.command("classify")
@click.argument("captures", nargs=-1, type=click.Path(dir_okay=False))
@click.option("-i", "--interface", help="Classify the traffic passing this interface (AF_PACKET "
              "TPACKET_V3 ring) instead of capture files, until --count, --duration, SIGTERM or Ctrl-C.")
@click.option("--fanout", type=click.IntRange(1, 64), default=1, show_default=True,
              help="With -i: worker processes in one PACKET_FANOUT group (hash: a connection "
                   "stays on one worker).")
@click.option("--count", type=click.IntRange(1), help="With -i: stop after this many packets.")
@click.option("--duration", type=click.FloatRange(0, min_open=True),
              help="With -i: stop after this many seconds.")
@click.option("--rules", "rules", multiple=True, type=click.Path(exists=True),
              help="Signature file (.nfg/.nfgb) or directory; repeatable. Default: the shipped library.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per flow.")
@click.option("--max-flows", type=click.IntRange(1), default=1 << 20, show_default=True,
              help="Flows tracked at once; the longest idle is evicted beyond this.")
@click.option("--max-memory", type=ByteSize(), default="512M", show_default=True,
              help="Memory budget of the flow state (K, M, G suffixes). Tracked flows cost "
                   f"{FLOW_BYTES} bytes each, flows being classified {ACTIVE_BYTES} plus the bytes "
                   "held; past it, the undecided flows idle the longest are given up on (reported).")
@click.option("--jobs", type=click.IntRange(0), default=1, show_default=True,
              help="Processes for a pcap file of 128 MiB or more: N > 1 forks N-1 parse workers "
                   "that find and parse its frames ahead of the classification (which stays in "
                   "order, in one process: the output is the same); 0 one per core.  pcapng "
                   "files, pipes and smaller files are read by one process.")
def classify(captures: tuple[str, ...], interface: str | None, fanout: int, count: int | None,
             duration: float | None, rules: tuple[str, ...], as_json: bool, max_flows: int,
             max_memory: int, jobs: int) -> None:
    """Classify the flows of pcap/pcapng CAPTURE files (read in order, one flow table),
    or of the traffic passing an interface (-i).

    One line per flow: transport, client, server, application (or unknown),
    the fields kept, then packets and bytes client-to-server/server-to-client.
    A damaged capture is classified up to the damage, reported on stderr, and
    the exit status is 1; so is a live run whose ring dropped packets.  Flows
    given up on by the memory budget (or ended early by a full flow table)
    are counted on stderr; exit status 0.
    """
    import os

    if interface is not None:
        if captures:
            raise click.UsageError("give capture files or -i INTERFACE, not both")
        if jobs != 1:
            raise click.UsageError("--jobs goes with capture files (with -i: --fanout)")
        _live(interface, fanout, count, duration, rules, as_json, max_flows, max_memory)
        return
    if not captures:
        raise click.UsageError("give capture files, or -i INTERFACE")
    if fanout != 1 or count is not None or duration is not None:
        raise click.UsageError("--fanout, --count and --duration go with -i INTERFACE")
    keep_freed_heap()
    progress_cb = None
    bar = None
    if sys.stderr.isatty() and sum(os.path.getsize(p) for p in captures if os.path.isfile(p)) \
            >= _PROGRESS_MIN:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                       transient=True, console=__import__("rich.console").console.Console(stderr=True))
        tasks: dict[str, TaskID] = {}

        def progress_cb(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(os.path.basename(name), total=total)
            bar.update(tasks[name], completed=done)

    if bar is not None:
        with bar:
            report = run_classify(captures, rules or None, progress=progress_cb, max_flows=max_flows,
                                  max_memory=max_memory, jobs=jobs)
    else:
        report = run_classify(captures, rules or None, max_flows=max_flows, max_memory=max_memory,
                              jobs=jobs)
    _print(report, as_json)
    if report.stops:
        sys.exit(1)


def _print(report: ClassifyReport, as_json: bool) -> None:
    print_flows(report, as_json)
    if not as_json and sys.stdout.isatty():
        _summary(report)
    print_notes(report)


def _live(interface: str, workers: int, count: int | None, duration: float | None,
          rules: tuple[str, ...], as_json: bool, max_flows: int, max_memory: int) -> None:
    import os

    from nfkit.nfgrep.passive import watch

    def ready() -> None:
        click.echo(f"nfkit: listening on {interface}"
                   + (f" ({workers} workers, fanout hash)" if workers > 1 else ""), err=True)

    def on_flow(r: FlowResult) -> None:
        # one write per line, straight to the descriptor: each line is out as the flow is
        # decided, and fanout workers sharing stdout never interleave within a line
        if as_json:
            obj = r.as_json()
            if r.decided is not None:
                obj["decision_ms"] = round((r.decided - r.first) * 1000, 3)
            line = json.dumps(obj)
        else:
            line = flow_line(r)
        data = (line + "\n").encode()
        while data:
            data = data[os.write(1, data):]

    sys.stdout.flush()
    try:
        report, dropped = watch(interface, rules or None, workers=workers, count=count,
                                duration=duration, ready=ready, max_flows=max_flows,
                                max_memory=max_memory, on_flow=on_flow)
    except PermissionError:
        raise InputError(f"interface {interface}: packet sockets need CAP_NET_RAW (run as root)") from None
    except OSError as exc:  # the kernel refused the socket, the ring or the fanout group
        raise InputError(f"interface {interface}: {exc.strerror or exc}") from None
    # every flow was printed as it was decided (or, never decided, as the run ended)
    print_notes(report)
    _summary(report, stderr=True)
    click.echo(f"nfkit: {report.packets} packets, {len(report.flows)} flows on {interface}", err=True)
    if dropped:
        click.echo(f"nfkit: {dropped} packet(s) dropped by the kernel: the ring was full; "
                   "the flows above may miss them", err=True)
        sys.exit(1)
