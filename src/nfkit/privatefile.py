"""Reading a cache file only when no one else could have written it.

nfkit keeps caches (compiled nfgrep rules, `rules exists`' fingerprints) in
files; a cache another user could write is a way to make nfkit believe
something false.  One check, for every cache.
"""

from __future__ import annotations

import os
import stat


def open_private(path: str | os.PathLike[str], owner: int,
                 single_link: bool = False) -> tuple[int, int] | None:
    """A read-only descriptor of ``path`` and its size, on the conditions of
    `read_private` (checked on the descriptor itself, so the file read is the file
    checked); the caller closes it.  None otherwise or when it cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        st = None
    if (st is None or not stat.S_ISREG(st.st_mode) or st.st_uid != owner or st.st_mode & 0o022
            or (single_link and st.st_nlink != 1)):
        os.close(fd)
        return None
    return fd, st.st_size


def read_private(path: str | os.PathLike[str], owner: int, single_link: bool = False) -> bytes | None:
    """``path``'s bytes if it is a regular file (not a symbolic link) owned by uid
    ``owner`` that no one else may write (and, with ``single_link``, with one name
    only); None otherwise or when it cannot be read."""
    opened = open_private(path, owner, single_link)
    if opened is None:
        return None
    fd = opened[0]
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
