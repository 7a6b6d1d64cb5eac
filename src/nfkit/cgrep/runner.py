"""Spreading a search over the machine's cores.

This module owns the worker processes: each keeps one `Searcher` (so each
parses a header once), files go out in small chunks, reports come back in
the order the files were given.  It does not print.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from nfkit.cgrep.query import Query
from nfkit.cgrep.search import FileReport, Searcher

# Below this many files to parse (~5 ms each), starting workers and having
# each read the headers again costs more than it saves.
PARALLEL_THRESHOLD = 64

_worker: Searcher | None = None


def _search_in_worker(path: str) -> FileReport:
    assert _worker is not None
    return _worker.search_path(path, probed=True)


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def search_files(files: list[str], queries: list[Query], include_dirs: list[str] | None = None,
                 loose: bool = False, jobs: int | None = None,
                 cache_dir: str | None = None) -> Iterator[FileReport]:
    """Search ``files`` for ``queries``; yield one `FileReport` per file, in order.

    ``cache_dir`` keeps parsed header tables between runs (None: no cache).
    """
    include_dirs = include_dirs or []
    jobs = jobs or default_jobs()
    searcher = Searcher(queries, include_dirs, loose, cache_dir)
    # A byte search first: files that cannot match are answered here, unparsed.
    wanted: list[str] = []
    early: dict[str, FileReport] = {}
    for path in files:
        report = searcher.probe(path)
        if report is None:
            wanted.append(path)
        else:
            early[path] = report
    # headers the probes could not read, told with the first report
    unread = searcher.take_problems()

    def told(report: FileReport) -> FileReport:
        nonlocal unread
        if unread:
            report.problems[:0], unread = unread, []
        return report

    if jobs <= 1 or len(wanted) < PARALLEL_THRESHOLD:
        for path in files:
            yield told(early[path] if path in early else searcher.search_path(path, probed=True))
        return
    global _worker
    # Forked workers inherit the searcher, with the headers the probe already read.
    _worker = searcher
    import multiprocessing  # only when workers are started

    context = multiprocessing.get_context("fork")
    chunk = max(1, min(16, len(wanted) // (jobs * 8)))
    with context.Pool(jobs) as pool:
        searched = pool.imap(_search_in_worker, wanted, chunksize=chunk)
        for path in files:
            yield told(early[path] if path in early else next(searched))
