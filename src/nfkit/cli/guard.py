"""What every `nfkit` command shares when it ends badly: an `NfkitError` becomes one
line on stderr and exit status 2; an interrupt one line and 130; a reader that
closed the pipe, as in `nfkit ct list | head -1`, no message and 141 (the
status a shell shows for conntrack killed by SIGPIPE).  This is the one place;
it also owns how the one-shot bulk commands end (`one_shot`).

Imported by the entry point and by the click group; it imports neither.
"""

from __future__ import annotations

import gc
import os
import sys

from nfkit.errors import NfkitError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing's import costs more than `rules exists` answering from its cache
    from collections.abc import Callable
    from typing import Any, NoReturn

# 128 + SIGPIPE: what the shell reports for conntrack -L | head -1
EXIT_BROKEN_PIPE = 141
EXIT_INTERRUPTED = 130


def _drop_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's last flush must not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _committed() -> list[str]:
    """The transactions this process had the kernel commit (none if it never sent one:
    the module that records them is only imported by commands that commit)."""
    guard = sys.modules.get("nfkit.nftables.commitguard")
    return guard.committed() if guard is not None else []


def exit_interrupted() -> NoReturn:
    """End a command that Ctrl-C interrupted: "interrupted" and 130, unless the kernel
    had already committed a transaction of this command: then that, and 0."""
    done = _committed()
    if done:  # the exit status tells the truth about the kernel
        print(f"nfkit: interrupted after the kernel committed {done[-1]}: it was committed",
              file=sys.stderr)
        sys.exit(0)
    print("nfkit: interrupted", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


def guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; an NfkitError ends the process with its message and status 2.

    Ctrl-C ends it with one line and status 130; a closed output pipe ends it
    quietly with status 141.
    """
    try:
        result = fn(*args)
        sys.stdout.flush()  # a reader that went away is found here, not at exit
        return result
    except NfkitError as exc:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _drop_stdout()
        print(f"nfkit: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        _drop_stdout()
        exit_interrupted()
    except BrokenPipeError:
        _drop_stdout()
        sys.exit(EXIT_BROKEN_PIPE)


def end(status: int | None = 0) -> NoReturn:
    """End a command that has done its work (see `one_shot`): stdout and stderr flushed
    (a closed pipe raises here, for `guarded`), then `os._exit` with ``status`` (None:
    0), without the interpreter's own teardown (~1 ms of a 20 ms command)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status or 0)


def one_shot(fn: Callable[..., int | None]) -> Callable[..., None]:
    """Declare a command that builds or decodes up to millions of small acyclic objects
    (a ruleset of 80,000 rules) and ends when it is done; the one mechanism for it.

    The command runs with the cyclic garbage collector off (collections set off by
    the allocations alone find nothing to free), and its process ends as soon as it
    returns, with the status it returned (None: 0), stdout and stderr flushed, and
    without the interpreter freeing those objects one by one (`os._exit`).  Nothing
    is lost by that: such a command finishes its writes before it returns (files
    are written and renamed into place, a transaction is acknowledged), its sockets
    and any abandoned dump are closed by the kernel, and no nfkit module registers
    an atexit handler.  An error it raises ends it as any command's (`guarded`).
    Measured: docs/rules.md ("One-shot commands").
    """

    def run(*args: Any, **kwargs: Any) -> None:
        gc.disable()
        end(fn(*args, **kwargs))

    # functools.wraps by hand: functools' import (collections) costs more than the
    # kernel's work for a few thousand set elements
    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(run, name, getattr(fn, name))
    run.__wrapped__ = fn  # type: ignore[attr-defined]
    return run
