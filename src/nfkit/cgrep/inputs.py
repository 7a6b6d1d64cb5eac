"""Which files a cgrep run searches: paths, directories walked, globs, lists on stdin.

This module owns turning what the user named into an ordered list of files
plus one-line problems for the names that cannot be searched (missing, not
C).  A bad name never stops the others.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_INCLUDE = ("*.c", "*.h")


@dataclass
class FileSet:
    """Files to search, in order, and ``(name, cause)`` for names that cannot be."""

    files: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _matches(path: str, globs: Iterable[str]) -> bool:
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(path, g) for g in globs)


def collect(names: Iterable[str], include: tuple[str, ...] = (),
            exclude: tuple[str, ...] = (), stdin: Iterable[str] | None = None) -> FileSet:
    """Expand ``names`` (files, directories walked recursively, ``-`` for a list
    of files read from ``stdin``) into the files to search.

    Files found in directories are kept when they match ``include`` (default
    ``*.c`` and ``*.h``) and no ``exclude`` glob; a file named directly is kept
    when it looks like C (``.c``, ``.h`` or an ``include`` glob) and is not excluded.
    """
    wanted = include or DEFAULT_INCLUDE
    result = FileSet()
    seen: set[str] = set()

    def add(path: str) -> None:
        if path not in seen:
            seen.add(path)
            result.files.append(path)

    def named(path: str) -> None:
        if exclude and _matches(path, exclude):
            return
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs
                                 if not (exclude and _matches(os.path.join(root, d), exclude)))
                for name in sorted(files):
                    full = os.path.join(root, name)
                    if _matches(full, wanted) and not (exclude and _matches(full, exclude)):
                        add(full)
        elif not os.path.exists(path):
            result.problems.append((path, "no such file or directory"))
        elif not _matches(path, wanted):
            result.problems.append((path, "not a C file (expected .c or .h)"))
        else:
            add(path)

    for name in names:
        if name == "-":
            for line in stdin or ():
                line = line.strip()
                if line:
                    named(line)
        else:
            named(name)
    return result
