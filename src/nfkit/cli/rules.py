"""`nfkit rules`: nf_tables rulesets (load, check, list, apply, exists, single changes, flush).

Thin: every command is a call into nfkit.nftables plus formatting.  Imports
stay lazy so `nfkit rules add` starts fast (no rich on the non-terminal path).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from nfkit.cli.bulk import check_file, load_file
from nfkit.cli.elements import element
from nfkit.cli.guard import one_shot
from nfkit.errors import InputError


def _rule_arg(family: str, table: str, chain: str, rule: str, handle: int | None) -> Any:
    from nfkit.nftables import validate
    from nfkit.nftables.jsonfmt import parse_object
    from nfkit.nftables.model import Rule

    try:
        doc = json.loads(rule)
    except json.JSONDecodeError as exc:
        raise InputError(f"RULE: JSON syntax error at column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InputError("RULE: JSON nested too deeply") from None
    if isinstance(doc, dict) and "rule" in doc:
        doc = doc["rule"]
    if isinstance(doc, list):
        doc = {"expr": doc}
    if not isinstance(doc, dict):
        raise InputError("RULE must be a JSON rule object or a list of statements")
    if "expr" not in doc:
        raise InputError(f"RULE: {validate.shown(doc)} has no \"expr\" (statements); give a "
                         'rule object or a list of statements, e.g. [{"drop": null}]')
    for what, v in (("--table", table), ("--chain", chain)):
        validate.name(v, what)
    doc = {**doc, "family": family, "table": table, "chain": chain}
    r: Rule = parse_object("rule", doc, "RULE")
    if handle is not None:
        r.handle = handle
    validate.obj("rule", r)
    return r


# Every option that takes a family offers exactly the families nf_tables has.
FAMILY = click.Choice(["ip", "ip6", "inet", "arp", "bridge", "netdev"])
HANDLE = click.IntRange(1, 2**64 - 1)


@click.group()
def rules() -> None:
    """nf_tables rulesets: atomic loads, listings, diffs, single changes."""


def _file_opts(f: Any) -> Any:
    f = click.option("--includepath", "-I", "include_paths", multiple=True, metavar="DIR",
                     help="Search DIR for nft text includes (after /etc, as nft -I).")(f)
    f = click.option("--syntax", type=click.Choice(["auto", "json", "nft"]), default="auto",
                     show_default=True,
                     help="FILE's syntax: libnftables JSON or nft text (auto: by content).")(f)
    return click.argument("file")(f)


@rules.command()
@_file_opts
def load(file: str, include_paths: tuple[str, ...], syntax: str) -> None:
    """Load FILE (libnftables JSON or nft text, - for stdin) in one atomic transaction."""
    load_file(file, include_paths, syntax)


@rules.command()
@_file_opts
def check(file: str, include_paths: tuple[str, ...], syntax: str) -> None:
    """Let the kernel validate FILE as one transaction; nothing is committed."""
    check_file(file, include_paths, syntax)


@rules.command("list")
@click.option("--json", "as_json", is_flag=True, help="libnftables JSON (as nft -j prints).")
@click.option("--family", "-f", type=FAMILY, default=None, help="Only this family.")
@click.option("--table", "-t", default=None, help="Only this table.")
@click.option("--chain", "-c", default=None, help="Only this chain (needs --table).")
@one_shot
def list_(as_json: bool, family: str | None, table: str | None, chain: str | None) -> None:
    """List the ruleset (nft text, or JSON with --json)."""
    from nfkit.nftables.transaction import list_json_text

    if chain and not table:
        raise InputError("--chain needs --table")
    from nfkit.nftables import validate

    for what, v in (("--table", table), ("--chain", chain)):
        if v is not None:
            validate.name(v, what)
    if as_json:
        sys.stdout.write(list_json_text(family, table, chain, must_exist=True) + "\n")
        return
    from nfkit.nftables.listing import list_text

    sys.stdout.write(list_text(family, table, chain, must_exist=True))


@rules.command()
@_file_opts
@click.option("--dry-run", is_flag=True, help="Print the change set, change nothing.")
def apply(file: str, include_paths: tuple[str, ...], syntax: str, dry_run: bool) -> None:
    """Make the tables named in FILE (JSON or nft text) equal to FILE with the smallest change set."""
    from nfkit.cli.bulk import read_commands
    from nfkit.nftables import validate
    from nfkit.nftables.jsonfmt import Command, ruleset_from_commands
    from nfkit.nftables.textfmt import command
    from nfkit.nftables.transaction import apply as do_apply

    read = read_commands(file, include_paths, syntax, runs=False)
    validate.commands(read)
    wanted = ruleset_from_commands(read)
    cmds: list[Command] = do_apply(wanted, dry_run=dry_run)
    if dry_run or sys.stdout.isatty():
        for c in cmds:
            click.echo(command(c))
        if not cmds:
            click.echo("no changes", err=True)


def _single_opts(handle_required: bool) -> Any:
    def opts(f: Any) -> Any:
        f = click.argument("rule")(f)
        f = click.option("--handle", type=HANDLE, required=handle_required,
                         help="Rule handle.")(f)
        f = click.option("--chain", "-c", required=True)(f)
        f = click.option("--table", "-t", required=True)(f)
        f = click.option("--family", "-f", type=FAMILY, default="ip", show_default=True)(f)
        return f
    return opts


@rules.command()
@click.option("--family", "-f", type=FAMILY, default="ip", show_default=True)
@click.option("--table", "-t", required=True)
@click.option("--chain", "-c", required=True)
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="Answer from the rule fingerprints cached for this namespace and "
                   "ruleset generation (root only; see docs/rules.md).")
@click.argument("rule")
@one_shot
def exists(family: str, table: str, chain: str, rule: str, cache: bool) -> int:
    """Exit 0 if a rule semantically equal to RULE (JSON) is in the chain, else 1."""
    from nfkit.netlink.ahead import DumpAhead
    from nfkit.netlink.socket import NetlinkSocket
    from nfkit.nftables import validate
    from nfkit.nftables.dumpreq import rules_request

    validate.name(table, "--table")
    validate.name(chain, "--chain")

    if cache and os.geteuid() == 0:
        from nfkit.nftables import existscache

        found = existscache.exists(_rule_arg(family, table, chain, rule, None), rule)
        if found is not None:
            return 0 if found else 1

    # The kernel walks the chain (on a socket of its own) while the decoder is
    # imported and RULE parsed and compiled.
    rounds = DumpAhead(NetlinkSocket(), rules_request(family, table, chain),
                       what=f"rules of chain {chain}")
    from nfkit.nftables.transaction import exists as rule_exists

    found = rule_exists(_rule_arg(family, table, chain, rule, None), rounds=rounds, drain=False)
    return 0 if found else 1  # the dump is abandoned after a hit (`one_shot` ends the process)


def _single(verb: str) -> Any:
    @_single_opts(verb == "replace")
    def cmd(family: str, table: str, chain: str, handle: int | None, rule: str) -> None:
        from nfkit.nftables.transaction import add_rule

        r = _rule_arg(family, table, chain, rule, None)
        if handle is not None:
            if verb == "replace":
                r.handle = handle
            else:
                r.position = handle
        elif verb == "replace":
            raise InputError("replace needs --handle")
        add_rule(r, verb)

    cmd.__doc__ = {"add": "Append RULE (JSON) to the chain, or after --handle.",
                   "insert": "Insert RULE (JSON) at the top of the chain, or before --handle.",
                   "replace": "Replace the rule with --handle by RULE (JSON)."}[verb]
    return rules.command(verb)(cmd)


_single("add")
_single("insert")
_single("replace")


@rules.command()
@click.option("--family", "-f", type=FAMILY, default="ip", show_default=True)
@click.option("--table", "-t", required=True)
@click.option("--chain", "-c", required=True)
@click.option("--handle", type=HANDLE, required=True)
def delete(family: str, table: str, chain: str, handle: int) -> None:
    """Delete the rule with --handle from the chain."""
    from nfkit.nftables import validate
    from nfkit.nftables.model import Rule
    from nfkit.nftables.transaction import delete_rule

    validate.name(table, "--table")
    validate.name(chain, "--chain")

    delete_rule(Rule(family, table, chain, handle=handle))


@rules.command()
@click.option("--family", "-f", type=FAMILY, default=None,
              help="Only this family's tables (as nft flush ruleset FAMILY).")
@click.option("--table", "-t", default=None, help="Flush only this table's rules.")
def flush(family: str | None, table: str | None) -> None:
    """Flush the ruleset (delete every table, or every table of --family), or the rules
    of one table (--table)."""
    from nfkit.nftables import validate
    from nfkit.nftables.transaction import flush as do_flush

    if table is not None:
        validate.name(table, "--table")

    do_flush(family, table)


rules.add_command(element)


def _add_monitor() -> None:
    from nfkit.cli.monitor import monitor, trace

    rules.add_command(monitor)
    rules.add_command(trace)


_add_monitor()
