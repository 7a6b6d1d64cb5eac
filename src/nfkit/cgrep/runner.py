"""Spreading a search over the machine's cores.

This module owns the worker processes: each keeps one `Searcher` (so each
parses a header once), files go out in small chunks, reports come back in
the order the files were given.  It does not print.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator

from nfkit.cgrep.query import Query
from nfkit.cgrep.search import FileReport, Searcher

# Below this many files, starting workers costs more than it saves.
PARALLEL_THRESHOLD = 8

_worker: Searcher | None = None


def _start_worker(queries: list[Query], include_dirs: list[str], loose: bool) -> None:
    global _worker
    _worker = Searcher(queries, include_dirs, loose)


def _search_in_worker(path: str) -> FileReport:
    assert _worker is not None
    return _worker.search_path(path)


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def search_files(files: list[str], queries: list[Query], include_dirs: list[str] | None = None,
                 loose: bool = False, jobs: int | None = None) -> Iterator[FileReport]:
    """Search ``files`` for ``queries``; yield one `FileReport` per file, in order."""
    include_dirs = include_dirs or []
    jobs = jobs or default_jobs()
    if jobs <= 1 or len(files) < PARALLEL_THRESHOLD:
        searcher = Searcher(queries, include_dirs, loose)
        for path in files:
            yield searcher.search_path(path)
        return
    context = multiprocessing.get_context("fork")
    chunk = max(1, min(16, len(files) // (jobs * 8)))
    with context.Pool(jobs, _start_worker, (queries, include_dirs, loose)) as pool:
        yield from pool.imap(_search_in_worker, files, chunksize=chunk)
