"""The `nfkit` command's entry point.

This module owns starting the commands that load big rule files
(`nfkit rules load FILE`,
`nfkit rules check FILE`), that add or delete set elements (`nfkit rules element
add|delete`, and `rules load` of a JSON file of element commands; plain addresses by
`nftables.plainelements` alone) and that answer `nfkit rules exists` from its cache, without
importing click, whose import alone costs more than the kernel needs to commit
10,000 rules.  Every other command line
goes to the click group in `nfkit.cli.main`; all of it runs under `guard.guarded`.
"""

from __future__ import annotations

import os
import sys

from nfkit.cli.guard import end, exit_interrupted, guarded


def run(argv: list[str] | None = None) -> None:
    """The `nfkit` command (``argv`` defaults to sys.argv[1:])."""
    # guarded from here on: an interrupt while the modules a command needs are
    # imported is one line too (only the interpreter's own start answers it alone)
    guarded(_run, sys.argv[1:] if argv is None else argv)


def _run(args: list[str]) -> None:
    if (len(args) == 3 and args[0] == "rules" and args[1] in ("load", "check")
            and (args[2] == "-" or not args[2].startswith("-"))):
        if args[1] == "load":
            # a JSON file of plain addresses for plain sets (a blocklist), before the
            # rule machinery is imported; anything else the general way
            from nfkit.nftables.plainelements import load_json

            if load_json(args[2]) is not None:
                end()  # (as every quick answer below: without the interpreter's teardown)
        from nfkit.cli import bulk

        (bulk.load_file if args[1] == "load" else bulk.check_file)(args[2])
        return
    if args[:2] == ["rules", "element"]:
        from nfkit.cli.element_change import change, quick_args, quick_change

        element_args = quick_args(args)
        if element_args is not None:
            if quick_change(*element_args):
                end()
            change(*element_args)
            return
    if len(args) == 9 and args[:2] == ["rules", "exists"] and os.geteuid() == 0:
        # The answer from the cache (one GETGEN, one GETRULE) before anything else is
        # imported; whatever it cannot answer goes the usual way.
        opts = dict(zip(args[2:8:2], args[3:9:2], strict=True))
        names = {"-f": "f", "--family": "f", "-t": "t", "--table": "t", "-c": "c", "--chain": "c"}
        got = {names.get(k): v for k, v in opts.items()}
        if set(got) == {"f", "t", "c"} and not args[8].startswith("-"):
            from nfkit.nftables.existscache import quick

            try:
                found = quick(got["f"], got["t"], got["c"], args[8])
            except OSError:
                found = None
            if found is not None:
                end(0 if found else 1)
    if args[:2] == ["nfgrep", "classify"]:
        # capture files classified without click (its import is a tenth of a small run)
        from nfkit.cli.nfgrep_quick import classify_args_of, quick_classify

        classify_args = classify_args_of(args)
        if classify_args is not None:
            quick_classify(*classify_args)
            return
    import click

    from nfkit.cli.main import main

    try:
        main(args=args, standalone_mode=False)
    except click.UsageError as exc:
        if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
            print(exc.format_message(), file=sys.stderr)  # a group called alone: its help
            sys.exit(2)
        # one line, as every other refusal: what was wrong and where help is
        where = exc.ctx.command_path if exc.ctx is not None else "nfkit"
        print(f"nfkit: {exc.format_message()} (see {where} --help)", file=sys.stderr)
        sys.exit(2)
    except click.Abort:
        exit_interrupted()
    except click.ClickException as exc:
        print(f"nfkit: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
