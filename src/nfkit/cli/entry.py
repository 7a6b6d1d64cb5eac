"""The `nfkit` command's entry point.

This module owns two things every command shares: turning an `NfkitError`
into one line on stderr and exit status 2 (an interrupt: one line and 130; a
reader that closed the pipe, as in `nfkit ct list | head -1`: no message and
141, the status a shell shows for conntrack killed by SIGPIPE),
and starting the commands that load big rule files (`nfkit rules load FILE`,
`nfkit rules check FILE`) without importing click, whose import alone costs
more than the kernel needs to commit 10,000 rules.  Every other command line
goes to the click group in `nfkit.cli.main`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from nfkit.errors import NfkitError

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
    quietly with status 141 (for every command: this is the one place).
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


def run(argv: list[str] | None = None) -> None:
    """The `nfkit` command (``argv`` defaults to sys.argv[1:])."""
    args = sys.argv[1:] if argv is None else argv
    if (len(args) == 3 and args[0] == "rules" and args[1] in ("load", "check")
            and (args[2] == "-" or not args[2].startswith("-"))):
        from nfkit.cli import bulk

        guarded(bulk.load_file if args[1] == "load" else bulk.check_file, args[2])
        return
    import click

    from nfkit.cli.main import main

    try:
        main(args=args, standalone_mode=False)
    except click.UsageError as exc:
        if exc.format_message().startswith("Usage:"):
            print(exc.format_message(), file=sys.stderr)  # a group called alone: its help
            sys.exit(2)
        # one line, as every other refusal: what was wrong and where help is
        where = exc.ctx.command_path if exc.ctx is not None else "nfkit"
        print(f"nfkit: {exc.format_message()} (see {where} --help)", file=sys.stderr)
        sys.exit(2)
    except click.Abort:
        print("nfkit: interrupted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        print(f"nfkit: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
