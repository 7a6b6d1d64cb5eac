"""The on-disk header cache: one JSON document per header, trusted only when it is ours.

This module owns where a header's tables are kept between runs, the checks
that decide whether a cache file may be read, and writing one atomically.
A cache file is plain data (JSON: strings, numbers, lists), so reading one
can never run code, whoever wrote it; and a file or directory that another
user owns, or that group or others may write, is not read at all (nor
written into): the cache of a user is not a way to feed another user
wrong types either.  Directories are created 0700, files 0600 (a temporary
file renamed into place, so a reader never sees half a file).  What the
document holds is `environment`'s business; this module does not know
C types.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from typing import Any

FORMAT_KEY = "nfkit-cgrep-header-cache"
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)


def untrusted(status: os.stat_result) -> str | None:
    """Why a cache file or directory with this ``status`` must not be used, or None."""
    uid = os.geteuid()
    if status.st_uid != uid:
        return f"owned by uid {status.st_uid}, not {uid}"
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(status.st_mode):04o})"
    return None


class HeaderCache:
    """Header tables of one format version kept as JSON files under ``directory``.

    The directory is checked (and created, 0700) on first use; when it cannot
    be trusted, `problem` says why and the cache reads and writes nothing.
    """

    def __init__(self, directory: str, version: int) -> None:
        self.directory = directory
        self.version = version
        self.problem: str | None = None
        self._checked: dict[str, bool] = {}

    def usable(self) -> bool:
        """Is the cache directory ours and closed to others (created if missing)?"""
        return self._directory(self.directory, create=True)

    def load(self, header: str, stamp: list[int]) -> dict[str, Any] | None:
        """The document saved for ``header`` with this ``stamp`` (size, mtime), or
        None: missing, stale, not ours, open to others, or not a cache document."""
        target = self._file(header)
        if not self.usable() or not self._directory(os.path.dirname(target), create=False):
            return None
        try:
            fd = os.open(target, _OPEN_FLAGS)
        except OSError:
            return None
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode) or untrusted(status) is not None:
                return None
            with os.fdopen(fd, "rb", closefd=False) as handle:
                raw = handle.read()
        except OSError:
            return None
        finally:
            os.close(fd)
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        if (not isinstance(document, dict) or document.get(FORMAT_KEY) != self.version
                or document.get("header") != header or document.get("stamp") != stamp):
            return None
        return document

    def save(self, header: str, stamp: list[int], document: dict[str, Any]) -> None:
        """Keep ``document`` for ``header`` (a failure only costs time next run)."""
        target = self._file(header)
        directory = os.path.dirname(target)
        if not self.usable() or not self._directory(directory, create=True):
            return
        body = dict(document, header=header, stamp=stamp)
        body[FORMAT_KEY] = self.version
        temporary = None
        try:
            fd, temporary = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")  # 0600
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(body, handle, ensure_ascii=False, separators=(",", ":"))
            os.replace(temporary, target)
            temporary = None
        except (OSError, ValueError, RecursionError):
            pass
        finally:
            if temporary is not None:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass

    def _file(self, header: str) -> str:
        digest = hashlib.sha1(header.encode("utf-8", "surrogateescape")).hexdigest()
        return os.path.join(self.directory, digest[:2], digest[2:] + ".json")

    def _directory(self, path: str, create: bool) -> bool:
        known = self._checked.get(path)
        if known is not None:
            return known
        try:
            if create:
                _make_private(path)
            status = os.stat(path)
        except OSError:
            return False  # missing (not cached yet) or not creatable: nothing is trusted
        why = "not a directory" if not stat.S_ISDIR(status.st_mode) else untrusted(status)
        if why is not None and path == self.directory:
            self.problem = f"header cache {path} ignored: {why}"
        self._checked[path] = why is None
        return why is None


def _make_private(path: str) -> None:
    """Create ``path`` and any missing parents, each 0700 (existing ones are left as they are)."""
    missing = []
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
