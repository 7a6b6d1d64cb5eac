"""`nfkit rules element add|delete|list`: set and map elements, thousands in one transaction.

Thin: reading the elements is `nfkit.nftables.elements`, the transaction is
`nfkit.nftables.commits`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from nfkit.cli import element_change

FAMILIES = click.Choice(element_change.FAMILIES)


def _target(f: Any) -> Any:
    for name in ("name", "table"):
        f = click.argument(name)(f)
    return click.argument("family", type=FAMILIES)(f)


def _change(verb: str, family: str, table: str, name: str, elements: tuple[str, ...],
            from_file: str | None) -> None:
    from nfkit.cli.element_change import change

    change(verb, family, table, name, elements, from_file)


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
