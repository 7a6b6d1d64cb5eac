"""Interrupts held off while a transaction is in the kernel.

This module owns one promise of `nfkit rules load|apply|add|...`: the exit
status tells the truth about the kernel.  Once the batch is sent, the kernel
commits it or not whatever the sender does, so an interrupt (Ctrl-C, SIGINT)
that arrives then must not end the process with "interrupted" (exit 130, read
as "nothing happened") while the ruleset was in fact committed.  SIGINT is
blocked from just before the batch is sent until its answer is read; one that
arrived meanwhile is taken off the queue and reported with the outcome.  An
interrupt before the send still ends the command before anything is sent.
An interrupt after the answer, while the command finishes (closes its socket,
prints), no longer changes what the kernel did: `committed` records each
transaction the kernel committed in this process, and the command's interrupt
handler (`nfkit.cli.guard.guarded`) reports those instead of "nothing happened".
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELD = {signal.SIGINT}
_COMMITTED: list[str] = []


def committed() -> list[str]:
    """What the kernel committed in this process, through `interrupts_held`, in order."""
    return list(_COMMITTED)


@contextmanager
def interrupts_held(what: str = "the transaction") -> Iterator[None]:
    """Block SIGINT for the body; if one came, say on stderr that ``what`` was
    committed (the body returned) and go on, or let the body's error say it was not."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals go to the main thread only: nothing to hold here
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    ok = False
    try:
        yield
        ok = True
        _COMMITTED.append(what)
    finally:
        came = signal.sigtimedwait(HELD, 0) is not None
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if came and ok:
            print(f"nfkit: interrupt received while the kernel was committing {what}: "
                  "it was committed", file=sys.stderr)
