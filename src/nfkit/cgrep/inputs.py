"""Which files a cgrep run searches: paths, directories walked, globs, lists on stdin.

This module owns turning what the user named into an ordered list of files
plus one-line problems for the names that cannot be searched (missing, not
C, unreadable: the cause as the system gives it, a directory that cannot be
listed included).  A bad name never stops the others.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_INCLUDE = ("*.c", "*.h")


@dataclass
class FileSet:
    """Files to search, in order, and ``(name, cause)`` for names that cannot be."""

    files: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def os_cause(error: OSError) -> str:
    """The cause of ``error`` in the words of the system, as grep says it
    ("permission denied", "no such file or directory")."""
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


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

    def unlisted(error: OSError) -> None:  # a directory os.walk could not list
        result.problems.append((str(error.filename), os_cause(error)))

    def named(path: str) -> None:
        if exclude and _matches(path, exclude):
            return
        if "\0" in path:  # only a list on stdin can hold one
            result.problems.append((path.replace("\0", "\\0"), "a file name has no NUL byte"))
            return
        try:
            is_directory = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError as error:  # missing, or a directory on the way not searchable
            result.problems.append((path, os_cause(error)))
            return
        if is_directory:
            for root, dirs, files in os.walk(path, onerror=unlisted):
                dirs[:] = sorted(d for d in dirs
                                 if not (exclude and _matches(os.path.join(root, d), exclude)))
                for name in sorted(files):
                    full = os.path.join(root, name)
                    if _matches(full, wanted) and not (exclude and _matches(full, exclude)):
                        add(full)
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
