"""`nfkit ct`: the conntrack table, in conntrack-tools' terms.

Thin: option parsing and output; every command is one call into
`nfkit.conntrack`.  Bad input is a one-line error naming the option, raised
before anything is sent to the kernel (nothing half-deleted).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

import click

from nfkit.conntrack import formats
from nfkit.conntrack import labels as labels_mod
from nfkit.conntrack.filter import Filter, filter_from_options, label_map, parse_labels, parse_mark
from nfkit.conntrack.labels import LABELS_TABLE, LABELS_TABLE_FAMILY
from nfkit.conntrack.model import Entry
from nfkit.conntrack.options import entry_from_options
from nfkit.conntrack.table import MAX_QUIET_SECONDS, ConntrackTable, check_quiet_timeout
from nfkit.conntrack.values import U32_MAX
from nfkit.errors import InputError, NfkitError


class NetlinkRefusals(NfkitError):
    """Some of many pipelined requests were refused by the kernel."""

_FILTER_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("-p", "--proto"), {"help": "layer-4 protocol (tcp, udp, icmp, ... or a number)"}),
    (("-f", "--family"), {"help": "ipv4 or ipv6"}),
    (("-s", "--src", "--orig-src"), {"help": "original source address or prefix"}),
    (("-d", "--dst", "--orig-dst"), {"help": "original destination address or prefix"}),
    (("-r", "--reply-src"), {"help": "reply source address or prefix (NAT)"}),
    (("-q", "--reply-dst"), {"help": "reply destination address or prefix (NAT)"}),
    (("--sport", "--orig-port-src"), {"help": "original source port (needs -p)"}),
    (("--dport", "--orig-port-dst"), {"help": "original destination port (needs -p)"}),
    (("--reply-port-src",), {"help": "reply source port (needs -p)"}),
    (("--reply-port-dst",), {"help": "reply destination port (needs -p)"}),
    (("-u", "--status"), {"help": "status bits, comma separated (ASSURED, SEEN_REPLY, UNREPLIED, ...)"}),
    (("--state",), {"help": "TCP state(s), comma separated (ESTABLISHED, TIME_WAIT, ...)"}),
    (("-m", "--mark"), {"help": "mark VALUE[/MASK]"}),
    (("--zone", "-w"), {"help": "conntrack zone"}),
    (("-l", "--label"), {"help": "labels that must be set (names from connlabel.conf or bit numbers)"}),
    (("--timeout-below",), {"help": "remaining timeout below this many seconds"}),
]
_FILTER_KEYS = {"proto": "proto", "family": "family", "src": "src", "dst": "dst",
                "reply_src": "reply_src", "reply_dst": "reply_dst", "sport": "sport",
                "dport": "dport", "reply_port_src": "reply_sport", "reply_port_dst": "reply_dport",
                "status": "status", "state": "state", "mark": "mark", "zone": "zone",
                "label": "label", "timeout_below": "timeout_below"}


def filter_options(skip: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for names, kw in reversed(_FILTER_OPTIONS):
            if names[-1].lstrip("-").replace("-", "_") in skip or names[0].lstrip("-") in skip:
                continue
            fn = click.option(*names, default=None, **kw)(fn)
        return fn
    return deco


def _refusals(failed: dict[int, int]) -> str:
    import errno
    import os

    return ", ".join(f"{n} x {os.strerror(e)} ({errno.errorcode.get(e, e)})" for e, n in sorted(failed.items()))


def _filter(kw: dict[str, Any]) -> Filter:
    args = {}
    for key, value in list(kw.items()):
        if key in ("orig_src", "orig_dst", "orig_port_src", "orig_port_dst"):
            key = key.replace("orig_port_src", "sport").replace("orig_port_dst", "dport")
            key = key.replace("orig_", "")
        if key in _FILTER_KEYS and value is not None:
            args[_FILTER_KEYS[key]] = value
    return filter_from_options(**args)


def _pop_filter_kw(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: kw.pop(k) for k in list(kw) if k in _FILTER_KEYS or k.startswith("orig_")}


@contextlib.contextmanager
def _table() -> Iterator[ConntrackTable]:
    with ConntrackTable() as t:
        yield t


def _write_lines(out: TextIO, batches: Iterable[list[str]]) -> int:
    n = 0
    for chunk in batches:
        if chunk:
            out.write("\n".join(chunk))
            out.write("\n")
            n += len(chunk)
    return n


@click.group("ct")
@click.option("-n", "--netns", default=None, help="run in this network namespace (ip netns name or path)")
@click.pass_context
def ct(ctx: click.Context, netns: str | None) -> None:
    """The conntrack table: list, count, delete selectively, create, update, watch."""
    if netns is not None and not netns.strip():
        # an empty $NS must not mean the host's table (`nfkit ct -n "$NS" flush`)
        raise InputError("-n/--netns: empty namespace name")
    if netns:
        from nfkit import netns as netns_mod

        ctx.with_resource(netns_mod.enter(netns))


_OUTPUTS = click.Choice(["text", "json", "extended", "id"])


@ct.command("list")
@filter_options()
@click.option("-o", "--output", type=_OUTPUTS, default="text", show_default=True,
              help="text (conntrack -L lines), json (one object per line), extended, id")
@click.option("--json", "as_json", is_flag=True, help="same as -o json")
@click.option("--python-filter", is_flag=True, hidden=True, help="apply the whole filter in Python")
def list_cmd(output: str, as_json: bool, python_filter: bool, **kw: Any) -> None:
    """List entries (like conntrack -L)."""
    flt = _filter(kw)
    if as_json:
        output = "json"
    out = sys.stdout
    with _table() as t:
        # connlabel.conf maps names to bits; the text line wants bit -> name
        names = {bit: name for name, bit in label_map().items()} or None if output != "json" else None
        if output in ("text", "json") and names is None:
            lines = t.lines(flt, form=output, kernel=not python_filter)
        else:
            ext, show_id = output == "extended", output == "id"
            lines = ([formats.entry_text(e, names, ext, show_id=show_id) for e in batch]
                     for batch in t.entry_batches(flt, kernel=not python_filter))
        # the dump is ended before the table's socket closes, whatever stops the writing
        with contextlib.closing(lines):  # type: ignore[type-var]
            n = _write_lines(out, lines)
    if output != "json":
        click.echo(f"nfkit ct: {n} flow entries have been shown.", err=True)


@ct.command("count")
@filter_options()
@click.option("--json", "as_json", is_flag=True, help="print {\"count\": N}")
def count_cmd(as_json: bool, **kw: Any) -> None:
    """Count entries (selected by the filter, if any)."""
    flt = _filter(kw)
    with _table() as t:
        n = t.count(flt)
    click.echo(json.dumps({"count": n}) if as_json else str(n))


@ct.command("stats")
@click.option("--json", "as_json", is_flag=True, help="JSON output")
def stats_cmd(as_json: bool) -> None:
    """Statistics: per CPU (like conntrack -S) and the table's size."""
    with _table() as t:
        g = t.stats()
        cpus = t.stats_cpu()
    if as_json:
        click.echo(json.dumps({"global": g, "cpu": cpus}))
    else:
        click.echo(formats.stats_text(g, cpus))


def _progress_context(total: int | None, what: str) -> Any:
    if not sys.stderr.isatty():
        return None
    from rich.progress import Progress

    return Progress(transient=True), what, total


@ct.command("delete")
@filter_options()
@click.option("--python-filter", is_flag=True, help="dump and delete even if the kernel could flush")
@click.option("--json", "as_json", is_flag=True, help="print the counts as JSON")
def delete_cmd(python_filter: bool, as_json: bool, **kw: Any) -> None:
    """Delete the entries the filter selects (the selective flush; like conntrack -D)."""
    flt = _filter(kw)
    if flt.empty:
        raise InputError("delete needs a filter (use `nfkit ct flush` to delete everything)")
    with _table() as t:
        res = t.delete_matching(flt, kernel=not python_filter)
    if as_json:
        click.echo(json.dumps({"deleted": res.deleted, "vanished": res.vanished,
                               "failed": res.failed, "method": res.method}))
    else:
        extra = f", {res.vanished} already gone" if res.vanished else ""
        click.echo(f"{res.deleted} flow entries have been deleted ({res.method}{extra}).", err=True)
    if res.failed:
        raise NetlinkRefusals(f"some deletes were refused: {_refusals(res.failed)}")


@ct.command("flush")
def flush_cmd() -> None:
    """Delete every entry (like conntrack -F)."""
    with _table() as t:
        t.flush()
    click.echo("connection tracking table has been emptied.", err=True)


def _read_json_lines(path: str) -> list[Entry]:
    """Every entry of a JSON-lines file (``-``: stdin), all checked before any is returned;
    raises InputError naming the file, the line and the field."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as exc:
        raise InputError(f"--from {path}: {exc.strerror}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x})") from None
    return list(formats.entries_from_json_lines(text, path))


_ENABLE_LABELS = click.option(
    "--enable-labels", is_flag=True,
    help=f"first install table {LABELS_TABLE_FAMILY} {LABELS_TABLE} (one rule that is never evaluated; "
         "its presence makes the kernel keep labels of entries created from then on)")


@ct.command("create")
@filter_options(skip=("timeout_below",))
@click.option("-t", "--timeout", type=click.IntRange(0, U32_MAX), default=None,
              help="timeout in seconds (default 30)")
@click.option("--from", "from_file", default=None, help="JSON lines file (as list -o json prints; - for stdin)")
@_ENABLE_LABELS
@click.option("--json", "as_json", is_flag=True, help="print the counts as JSON")
def create_cmd(timeout: int | None, from_file: str | None, enable_labels: bool, as_json: bool,
               **kw: Any) -> None:
    """Create one entry from options, or many from --from FILE (like conntrack -I).

    Every value (and every line of FILE) is checked before anything is sent.
    """
    if from_file is not None:
        if any(v is not None for v in kw.values()) or timeout is not None:
            raise InputError("--from takes no other entry options")
        # parse everything first: a bad line is reported before anything is created
        entries = _read_json_lines(from_file)
        with _table() as t:
            if enable_labels:
                labels_mod.enable_labels()
            prog = _progress_context(len(entries), "creating")
            if prog is None:
                res = t.create_many(entries)
            else:
                bar, what, total = prog
                with bar:
                    task = bar.add_task(what, total=total)
                    res = t.create_many(entries, progress=lambda n: bar.advance(task, n))
        if as_json:
            click.echo(json.dumps({"created": res.created, "exists": res.exists, "failed": res.failed}))
        else:
            click.echo(f"{res.created} flow entries have been created"
                       + (f", {res.exists} existed already" if res.exists else "") + ".", err=True)
        if res.failed:
            raise NetlinkRefusals(f"some creates were refused: {_refusals(res.failed)}")
        return
    entry = entry_from_options(timeout=timeout, **{_FILTER_KEYS.get(k, k): v for k, v in kw.items()})
    with _table() as t:
        if enable_labels:
            labels_mod.enable_labels()
        t.create(entry)
    if as_json:
        click.echo(json.dumps({"created": 1, "exists": 0, "failed": {}}))
    else:
        click.echo("1 flow entries have been created.", err=True)


@ct.command("update")
@filter_options(skip=("mark", "label"))
@click.option("--match-mark", default=None, help="filter: mark VALUE[/MASK]")
@click.option("--match-label", default=None, help="filter: labels that must be set")
@click.option("--set-mark", "--mark", "new_mark", default=None, help="new mark VALUE[/MASK] (MASK: bits to change)")
@click.option("--set-label", "--label", "new_label", default=None, help="labels to set (bits or names)")
@click.option("-t", "--timeout", "new_timeout", type=click.IntRange(0, U32_MAX), default=None,
              help="new timeout in seconds")
@click.option("--set-status", "new_status", default=None,
              help="status bits to set, comma separated (SEEN_REPLY, ASSURED)")
@_ENABLE_LABELS
@click.option("--json", "as_json", is_flag=True, help="print the counts as JSON")
def update_cmd(match_mark: str | None, match_label: str | None, new_mark: str | None,
               new_label: str | None, new_timeout: int | None, new_status: str | None,
               enable_labels: bool, as_json: bool, **kw: Any) -> None:
    """Change mark, labels, timeout or status of the entries the filter selects (like conntrack -U)."""
    kw["mark"], kw["label"] = match_mark, match_label
    flt = _filter(kw)
    if new_mark is None and new_label is None and new_timeout is None and new_status is None:
        raise InputError("update needs --mark, --label, --timeout or --set-status")
    add_status = 0
    if new_status is not None:
        from nfkit.conntrack.model import parse_status_names

        try:
            add_status = parse_status_names([n for n in new_status.split(",") if n.strip()])
        except InputError as exc:
            raise InputError(f"--set-status: {exc}") from None
        if not add_status:
            raise InputError("--set-status: no status given")
    mark = mask = labels = None
    if new_mark is not None:
        mark, mask = parse_mark(new_mark, "--mark")
        mask = None if mask == U32_MAX else mask
        if mask is not None:
            mark &= mask
    if new_label is not None:
        labels = parse_labels(new_label, "--label")
    with _table() as t:
        if enable_labels:
            labels_mod.enable_labels()
        res = t.update_matching(flt, mark=mark, mark_mask=mask, timeout=new_timeout,
                                labels=labels, labels_mask=labels, add_status=add_status)
    if as_json:
        click.echo(json.dumps({"updated": res.deleted, "vanished": res.vanished, "failed": res.failed}))
    else:
        click.echo(f"{res.deleted} flow entries have been updated.", err=True)
    if res.failed:
        raise NetlinkRefusals(f"some updates were refused: {_refusals(res.failed)}")


class _QuietSeconds(click.ParamType):
    """Seconds of quiet: a finite number above 0 (click's FloatRange lets nan through)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return check_quiet_timeout(float(value))
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        except InputError as exc:
            self.fail(str(exc), param, ctx)


_QUIET_SECONDS = _QuietSeconds()


@ct.command("watch")
@filter_options()
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="same as -o json")
@click.option("-e", "--event", "kinds", default="new,update,destroy", show_default=True,
              help="event kinds, comma separated")
@click.option("--timeout", "quiet", type=_QUIET_SECONDS, default=None,
              help=f"stop after this many seconds of quiet (more than 0, at most {MAX_QUIET_SECONDS})")
@click.option("-c", "--count", "limit", type=click.IntRange(min=1), default=None,
              help="stop after this many events (at least 1)")
def watch_cmd(output: str, as_json: bool, kinds: str, quiet: float | None, limit: int | None,
              **kw: Any) -> None:
    """Print events as they happen (like conntrack -E); resynchronises after lost events."""
    flt = _filter(kw)
    wanted = [k.strip().lower() for k in kinds.split(",") if k.strip()]
    for k in wanted:
        if k not in ("new", "update", "destroy"):
            raise InputError(f"-e/--event: unknown event kind {k!r} (new, update, destroy)")
    if as_json:
        output = "json"
    n = 0
    with _table() as t:
        stream = t.events(flt, kinds=wanted, timeout=quiet)
        for ev in stream:
            if ev.entry is None:
                line = (json.dumps({"event": ev.kind}) if output == "json"
                        else f"[{ev.kind.upper()}]")
            elif output == "json":
                line = formats.entry_json(ev.entry, event=ev.kind)
            else:
                line = formats.entry_text(ev.entry, event=ev.kind)
            click.echo(line)
            sys.stdout.flush()
            if ev.entry is not None:
                n += 1
                if limit is not None and n >= limit:
                    break


def _add_expect() -> None:
    from nfkit.cli.ct_expect import expect

    ct.add_command(expect)


_add_expect()
