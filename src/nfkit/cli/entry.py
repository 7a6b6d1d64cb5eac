"""The `nfkit` command's entry point.

This module owns starting the commands that load big rule files
(`nfkit rules load FILE`,
`nfkit rules check FILE`) without importing click, whose import alone costs
more than the kernel needs to commit 10,000 rules.  Every other command line
goes to the click group in `nfkit.cli.main`; both run under `guard.guarded`.
"""

from __future__ import annotations

import sys

from nfkit.cli.guard import guarded


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
