"""What every `nfkit` command shares when it ends badly: an `NfkitError` becomes one
line on stderr and exit status 2; an interrupt one line and 130; a reader that
closed the pipe, as in `nfkit ct list | head -1`, no message and 141 (the
status a shell shows for conntrack killed by SIGPIPE).  This is the one place.

Imported by the entry point and by the click group; it imports neither.
"""

from __future__ import annotations

import os
import sys

from nfkit.errors import NfkitError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing's import costs more than `rules exists` answering from its cache
    from collections.abc import Callable
    from typing import Any

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
        print("nfkit: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        _drop_stdout()
        sys.exit(EXIT_BROKEN_PIPE)
