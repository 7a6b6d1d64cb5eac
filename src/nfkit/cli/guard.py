"""What every `nfkit` command shares when it fails: an `NfkitError` becomes one
line on stderr and exit status 2 (interrupts 130, a closed pipe 0).

Imported by the entry point and by the click group; it imports neither.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from nfkit.errors import NfkitError


def guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; an NfkitError ends the process with its message and status 2."""
    try:
        return fn(*args)
    except NfkitError as exc:
        sys.stdout.flush()
        print(f"nfkit: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("nfkit: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
