"""The `nfkit` command's entry point.

This module owns two things every command shares: turning an `NfkitError`
into one line on stderr and exit status 2 (interrupts 130, a closed pipe 0),
and starting the commands that load big rule files (`nfkit rules load FILE`,
`nfkit rules check FILE`) without importing click, whose import alone costs
more than the kernel needs to commit 10,000 rules.  Every other command line
goes to the click group in `nfkit.cli.main`.
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


def run(argv: list[str] | None = None) -> None:
    """The `nfkit` command (``argv`` defaults to sys.argv[1:])."""
    args = sys.argv[1:] if argv is None else argv
    if (len(args) == 3 and args[0] == "rules" and args[1] in ("load", "check")
            and (args[2] == "-" or not args[2].startswith("-"))):
        from nfkit.cli import bulk

        guarded(bulk.load_file if args[1] == "load" else bulk.check_file, args[2])
        return
    from nfkit.cli.main import main

    main(args=args)
