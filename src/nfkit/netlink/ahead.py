"""Dumps received ahead: a helper thread reads the kernel's dump rounds.

This module owns one idea: the kernel builds each round (about 32 KiB) of a
dump inside our recvmsg, so a helper thread that calls recvmsg lets that work
go on while the caller does something else (imports and compiles, or handles
the previous round).  The rounds and errors are exactly those of
`NetlinkSocket.dump_datagrams`, which the thread runs.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from typing import Any

_END = object()


class DumpAhead:
    """`sock.dump_datagrams(request, what)` started now, received by a helper thread.

    Iterate to get each round as bytes (a copy); what that method raises
    (DumpInterrupted, NetlinkError) is raised in the iterating thread.  The
    socket must not be used otherwise until the iteration ended or `close`
    returned (close waits for the dump to end)."""

    def __init__(self, sock: Any, request: Any, what: str | None = None) -> None:
        self.rounds: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.sock, self.request, self.what = sock, request, what
        # The receiver must get the interpreter soon after each recvmsg returns,
        # or the kernel idles while this thread holds it for a switch interval.
        self._interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._interval, 0.0002))
        self.thread = threading.Thread(target=self._receive, name="nfkit-dump-ahead",
                                       daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        try:
            for view in self.sock.dump_datagrams(self.request, what=self.what):
                self.rounds.put(bytes(view))
        except BaseException as exc:  # handed to the iterating thread
            self.rounds.put(exc)
        self.rounds.put(_END)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self.rounds.get()
            if item is _END:
                self.close()
                return
            if isinstance(item, BaseException):
                self.close()
                raise item
            yield item

    def close(self) -> None:
        """Wait for the end of the dump; restore the interpreter's switch interval."""
        self.thread.join()
        sys.setswitchinterval(self._interval)
