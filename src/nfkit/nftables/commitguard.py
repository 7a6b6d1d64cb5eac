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

# _signal, not signal: signal's import (its enum classes) costs more than the kernel's
# work for a blocklist of a few thousand addresses
import _signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType

HELD = {_signal.SIGINT}
_COMMITTED: list[str] = []


def committed() -> list[str]:
    """What the kernel committed in this process, through `interrupts_held`, in order."""
    return list(_COMMITTED)


class interrupts_held:  # lower case: used as the function it was, `with interrupts_held(...)`
    """Block SIGINT for the body; if one came, say on stderr that ``what`` was
    committed (the body returned) and go on, or let the body's error say it was not."""

    __slots__ = ("what", "old")

    def __init__(self, what: str = "the transaction") -> None:
        self.what = what
        self.old: set[int] | None = None

    def __enter__(self) -> None:
        # threading not imported: no thread was started through it, this is the main one
        threading = sys.modules.get("threading")
        if threading is not None and threading.current_thread() is not threading.main_thread():
            return  # signals go to the main thread only: nothing to hold here
        self.old = _signal.pthread_sigmask(_signal.SIG_BLOCK, HELD)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.old is None:
            return
        ok = exc_type is None
        if ok:
            _COMMITTED.append(self.what)
        came = _signal.sigtimedwait(HELD, 0) is not None
        _signal.pthread_sigmask(_signal.SIG_SETMASK, self.old)
        self.old = None
        if came and ok:
            print(f"nfkit: interrupt received while the kernel was committing {self.what}: "
                  "it was committed", file=sys.stderr)
