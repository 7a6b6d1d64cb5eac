"""`nfkit rules element add|delete|list`: set and map elements, thousands in one transaction.

Thin: reading the elements is `nfkit.nftables.elements`, the transaction is
`nfkit.nftables.commits`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from nfkit.errors import InputError

FAMILIES = click.Choice(["ip", "ip6", "inet", "arp", "bridge", "netdev"])


def _target(f: Any) -> Any:
    for name in ("name", "table"):
        f = click.argument(name)(f)
    return click.argument("family", type=FAMILIES)(f)


def _the_set(sock: Any, family: str, table: str, name: str) -> Any:
    from nfkit.nftables import validate
    from nfkit.nftables.elements import set_listing
    from nfkit.nftables.listing import dump

    validate.name(table, "TABLE")
    validate.name(name, "SET")
    rs = dump(sock, rules=False, elements=False, table=table, family=family, must_exist=True)
    return set_listing(rs, family, table, name).sets[0]


def _change(verb: str, family: str, table: str, name: str, elements: tuple[str, ...],
            from_file: str | None) -> None:
    from nfkit.cli.bulk import read_file
    from nfkit.nftables.commits import run_commands
    from nfkit.nftables.elements import element_commands, read_elements, split_elements
    from nfkit.nftables.listing import open_socket

    texts = split_elements(", ".join(elements))
    if from_file is not None:
        texts += split_elements(read_file(from_file))
    if not texts:
        raise InputError("no elements given (ELEMENT... or --from FILE)")
    with open_socket() as sock:
        s = _the_set(sock, family, table, name)
        items = read_elements(texts, family, table, name, s.map is not None)
        run_commands(element_commands(verb, family, table, name, items), sock=sock)
    click.echo(f"{'added' if verb == 'add' else 'deleted'} {len(items)} element(s) "
               f"{'to' if verb == 'add' else 'from'} {s.kind} {family} {table} {name}", err=True)


_FROM = click.option("--from", "from_file", metavar="FILE",
                     help="Read elements from FILE (- for stdin): commas or new lines between them, # comments.")


@click.group()
def element() -> None:
    """Set and map elements, in nft's syntax (a blocklist: thousands in one transaction)."""


@element.command("add")
@_target
@click.argument("elements", nargs=-1)
@_FROM
def add(family: str, table: str, name: str, elements: tuple[str, ...], from_file: str | None) -> None:
    """Add ELEMENTS (and those of --from FILE) to set or map NAME, all or none."""
    _change("add", family, table, name, elements, from_file)


@element.command("delete")
@_target
@click.argument("elements", nargs=-1)
@_FROM
def delete(family: str, table: str, name: str, elements: tuple[str, ...], from_file: str | None) -> None:
    """Delete ELEMENTS (and those of --from FILE) from set or map NAME, all or none."""
    _change("delete", family, table, name, elements, from_file)


@element.command("list")
@_target
@click.option("--json", "as_json", is_flag=True, help="libnftables JSON (as nft -j list set prints).")
def list_(family: str, table: str, name: str, as_json: bool) -> None:
    """List set or map NAME with its elements (as nft list set)."""
    from nfkit.nftables import validate
    from nfkit.nftables.elements import set_listing
    from nfkit.nftables.jsonfmt import dump_json
    from nfkit.nftables.listing import dump, open_socket
    from nfkit.nftables.textfmt import to_text

    validate.name(table, "TABLE")
    validate.name(name, "SET")
    with open_socket() as sock:
        rs = set_listing(dump(sock, rules=False, table=table, family=family, must_exist=True),
                         family, table, name)
    sys.stdout.write(dump_json(rs, tables=False) + "\n" if as_json else to_text(rs))
