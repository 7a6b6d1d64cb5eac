"""Network namespaces by name, as `ip netns` makes them (/run/netns/NAME).

`enter(name)` moves the calling thread into a namespace for the duration of a
`with` block; sockets opened inside stay bound to that namespace afterwards.
Python 3.11 has no os.setns, so this goes through libc.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from nfkit.errors import CapabilityError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise CapabilityError(f"cannot enter network namespace: {os.strerror(err)}")


def path_of(name: str) -> str:
    return name if name.startswith("/") else os.path.join(NETNS_RUN_DIR, name)


@contextmanager
def enter(name: str) -> Iterator[None]:
    """Run the block in network namespace ``name`` (or a path to one)."""
    try:
        target = os.open(path_of(name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CapabilityError(f"network namespace {name!r}: {exc.strerror}") from None
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)

