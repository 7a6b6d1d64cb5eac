"""`nfkit cgrep`: semantic grep for C (coccigrep's questions, without spatch)."""

from __future__ import annotations

import os
import sys
import time

import click

from nfkit.errors import InputError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-t", "--type", "type_text", metavar="TYPE",
              help="C type as written: 'struct nf_conn', 'union x', a typedef name "
                   "(a bare tag also reads as 'struct TAG').")
@click.option("-a", "--attribute", metavar="ATTR",
              help="Member name (for func: a regular expression on the function name).")
@click.option("-o", "--operation", "operations", multiple=True, metavar="OP",
              help="deref, set, test, used or func (repeatable; default deref with -a, "
                   "used without).")
@click.option("-e", "--query", "expressions", multiple=True, metavar="TYPE:ATTR:OP",
              help="A whole query; repeat to answer several in one pass.")
@click.option("-I", "include_dirs", multiple=True, metavar="DIR",
              type=click.Path(file_okay=False),
              help="Look for #include'd headers here (as the compiler does).")
@click.option("--loose", is_flag=True,
              help="Also match accesses whose object type cannot be told (marked loose).")
@click.option("--include", "include_globs", multiple=True, metavar="GLOB",
              help="In directories, search files matching GLOB (default *.c and *.h).")
@click.option("--exclude", "exclude_globs", multiple=True, metavar="GLOB",
              help="Skip files and directories matching GLOB.")
@click.option("-A", "--after-context", "after", type=click.IntRange(0), default=0,
              metavar="N", help="Print N lines after each match.")
@click.option("-B", "--before-context", "before", type=click.IntRange(0), default=0,
              metavar="N", help="Print N lines before each match.")
@click.option("-C", "--context", "context", type=click.IntRange(0), default=None,
              metavar="N", help="Print N lines around each match.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per match (JSON lines).")
@click.option("--vim", "-V", "vim", is_flag=True, help="vim quickfix lines.")
@click.option("--emacs", "-E", "emacs", is_flag=True, help="emacs compilation-mode lines.")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto",
              help="Highlight matches (auto: on a terminal).")
@click.option("--stats", is_flag=True, help="Print counts and unclean parses to stderr.")
@click.option("--no-cache", is_flag=True,
              help="Do not keep parsed header tables between runs (kept as JSON in "
                   "$NFKIT_CGREP_CACHE or ~/.cache/nfkit/cgrep, used only when owned by "
                   "you and not writable by others).")
@click.option("-j", "--jobs", type=click.IntRange(1), default=None, metavar="N",
              help="Worker processes (default: one per core).")
@click.argument("paths", nargs=-1, metavar="PATH...")
def cgrep(type_text: str | None, attribute: str | None, operations: tuple[str, ...],
          expressions: tuple[str, ...], include_dirs: tuple[str, ...], loose: bool,
          include_globs: tuple[str, ...], exclude_globs: tuple[str, ...], after: int,
          before: int, context: int | None, as_json: bool, vim: bool, emacs: bool,
          color: str, stats: bool, no_cache: bool, jobs: int | None, paths: tuple[str, ...]) -> None:
    """Find where members of a C type are reached, set, tested, or where it is used.

    \b
      nfkit cgrep -t 'struct nf_conn' -a status -o set -I include net/netfilter
      nfkit cgrep -e 'struct sk_buff:len:test' -e 'struct nf_conn::used' file.c
      find . -name '*.c' | nfkit cgrep -t nf_conn -a mark -

    Exit status: 0 if something matched, 1 if nothing did, 2 if a file could
    not be searched (the others still are).
    """
    from nfkit.cgrep import collect, make_query, parse_expression, search_files
    from nfkit.cgrep.cache import HeaderCache
    from nfkit.cgrep.environment import CACHE_FORMAT, default_cache_dir
    from nfkit.cgrep.inputs import os_cause
    from nfkit.cgrep.render import format_match, with_context

    _names_as_bytes()
    queries = [parse_expression(text) for text in expressions]
    if type_text is not None:
        for operation in operations or (("deref",) if attribute else ("used",)):
            queries.append(make_query(type_text, attribute, operation))
    elif operations or attribute:
        raise InputError("-a/-o need a type (-t TYPE)")
    if not queries:
        raise InputError("nothing to look for: give -t TYPE [-a ATTR] [-o OP] or -e TYPE:ATTR:OP")
    if not paths:
        raise InputError("no files to search: give files or directories, or - to read "
                         "a list of files from stdin")
    if sum((as_json, vim, emacs)) > 1:
        raise InputError("--json, --vim and --emacs exclude each other")
    for directory in include_dirs:
        try:
            os.listdir(directory)
        except OSError as error:
            raise InputError(f"include directory {directory}: {os_cause(error)}") from None
    for query in queries:
        if query.bare_tag:
            click.echo(f"nfkit: cgrep: type {query.ctype!r} means the typedef {query.ctype} "
                       f"where one is visible, else 'struct {query.ctype}'", err=True)

    if context is not None:
        before = before or context
        after = after or context
    style = "json" if as_json else "vim" if vim else "emacs" if emacs else "grep"
    highlight = color == "always" or (color == "auto" and style == "grep" and sys.stdout.isatty())
    labelled = len(queries) > 1

    started = time.monotonic()
    fileset = collect(paths, include_globs, exclude_globs,
                      sys.stdin if "-" in paths else None)
    problems = list(fileset.problems)
    for path, cause in fileset.problems:
        click.echo(f"nfkit: cgrep: {path}: {cause}", err=True)

    totals = {"files": len(fileset.files), "parsed": 0, "unclean": 0, "matches": 0,
              "unresolved": 0}
    unclean: list[str] = []
    per_query: dict[str, int] = {q.label: 0 for q in queries}
    cache_dir = None if no_cache else default_cache_dir()
    cache_note = None
    if cache_dir is not None:
        cache = HeaderCache(cache_dir, CACHE_FORMAT)
        if not cache.usable():  # not ours, or open to others: neither read nor written
            cache_note, cache_dir = cache.problem, None
    reports = search_files(fileset.files, queries, list(include_dirs), loose, jobs, cache_dir)
    progress = _progress(len(fileset.files))
    out = sys.stdout
    try:
        for report in reports:
            if progress is not None:
                progress[0].advance(progress[1])
            for header, cause in report.problems:  # each worker tells its own once
                if (header, cause) not in problems:
                    problems.append((header, cause))
                    click.echo(f"nfkit: cgrep: {header}: {cause}", err=True)
            if report.error:
                problems.append((report.path, report.error))
                click.echo(f"nfkit: cgrep: {report.path}: {report.error}", err=True)
                continue
            totals["parsed"] += report.parsed
            totals["unresolved"] += report.unresolved
            if report.parse_errors:
                totals["unclean"] += 1
                unclean.append(report.path)
            if not report.matches:
                continue
            totals["matches"] += len(report.matches)
            for match in report.matches:
                per_query[f"{match.ctype}:{match.attribute or ''}:{match.operation}"] += 1
            if style == "grep" and (before or after):
                if totals["matches"] > len(report.matches):
                    out.write(("\033[36m--\033[0m" if highlight else "--") + "\n")
                lines = _read_lines(report.path)
                for text in with_context(report.matches, lines, before, after,
                                         highlight, labelled):
                    out.write(text + "\n")
            else:
                for match in report.matches:
                    out.write(format_match(match, style, highlight, labelled) + "\n")
    finally:
        if progress is not None:
            progress[0].stop()
    out.flush()
    if stats:
        elapsed = time.monotonic() - started
        click.echo(f"cgrep: {totals['files']} files, {totals['parsed']} parsed, "
                   f"{totals['unclean']} with parse errors, {len(problems)} not searched, "
                   f"{totals['matches']} matches, {totals['unresolved']} accesses of unknown "
                   f"type, {elapsed:.2f}s", err=True)
        for label, count in per_query.items():
            click.echo(f"cgrep: {label}: {count} matches", err=True)
        for path in unclean:
            click.echo(f"cgrep: parse errors (searched where the tree is sound): {path}",
                       err=True)
        if cache_note is not None:
            click.echo(f"cgrep: {cache_note}", err=True)
    sys.exit(2 if problems else 0 if totals["matches"] else 1)


def _names_as_bytes() -> None:
    """File names are bytes: one that is not UTF-8 (a surrogate escape in Python)
    is read from stdin and written out as the bytes it is, as grep does, whatever
    the locale's error handling (a strict one would raise)."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="surrogateescape")
            except (ValueError, OSError):  # pragma: no cover - a stream already read from
                pass


def _read_lines(path: str) -> list[str]:
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", "replace").split("\n")


def _progress(total: int):  # type: ignore[no-untyped-def]
    """A rich progress bar on stderr when it is a terminal and the work is long."""
    if total < 200 or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=True)
    bar.start()
    return bar, bar.add_task("searching", total=total)
