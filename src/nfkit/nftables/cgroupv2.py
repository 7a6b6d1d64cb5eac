"""cgroup v2 paths and ids for `socket cgroupv2 level N "PATH"`, resolved as nft does.

The kernel compares a socket's cgroup id (the inode number of its directory in the
cgroup2 hierarchy, 8 bytes in host order) with the rule's value.  nft 1.0.6 reads the
path as relative to /sys/fs/cgroup and takes the inode number of that directory
(stat, no check of the file system: a v1 host gives whatever inode is there), and prints
a value back as the path of the directory under /sys/fs/cgroup with that inode number,
or as the bare number when there is none.  The lookup back walks the tree once and is
kept for later values (walked again when a value is not found, at most once a second).
"""

from __future__ import annotations

import os
import time

from nfkit.errors import InputError

ROOT = "/sys/fs/cgroup"

_paths: dict[int, str] = {}
_walked = [0.0]


def cgroup_id(path: str) -> int:
    """The id of cgroup ``path`` (relative to /sys/fs/cgroup, as nft reads it).  Raises
    InputError (nft's words) when the path cannot be read."""
    try:
        return os.stat(f"{ROOT}/{path}").st_ino
    except OSError as exc:
        raise InputError(f"cgroupv2 path fails: {exc.strerror}: {path!r}") from None


def cgroup_path(cid: int) -> str | None:
    """The path (relative to /sys/fs/cgroup) of the cgroup with id ``cid``, or None."""
    found = _paths.get(cid)
    if found is None and time.monotonic() - _walked[0] > 1.0:
        _walk()
        found = _paths.get(cid)
    return found


def _walk() -> None:
    _walked[0] = time.monotonic()
    _paths.clear()
    try:
        dev = os.stat(ROOT).st_dev
    except OSError:
        return
    for top, dirs, _files in os.walk(ROOT):
        kept = []
        for d in dirs:
            full = os.path.join(top, d)
            try:
                st = os.stat(full, follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != dev:  # another file system mounted here (a v1 hierarchy)
                continue
            _paths.setdefault(st.st_ino, full[len(ROOT) + 1:])
            kept.append(d)
        dirs[:] = kept
