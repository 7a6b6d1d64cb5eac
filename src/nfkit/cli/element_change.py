"""`nfkit rules element add|delete`: the work of the two commands, free of click.

Shared by the click commands in `nfkit.cli.elements` and the click-less start in
`nfkit.cli.entry` (a blocklist of a few thousand addresses should not wait for
the CLI framework: its import costs more than the kernel's work).
"""

from __future__ import annotations

import sys

from nfkit.cli.guard import one_shot
from nfkit.errors import InputError

FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")


@one_shot
def change(verb: str, family: str, table: str, name: str, elements: tuple[str, ...] | list[str],
           from_file: str | None) -> None:
    """Add (``verb`` "add") or delete ELEMENTS and those of ``from_file`` to or from set
    or map NAME in one transaction, say so on stderr, then exit."""
    from nfkit.cli.bulk import read_file
    from nfkit.nftables import validate
    from nfkit.nftables.commits import run_commands
    from nfkit.nftables.elements import element_commands, read_elements, set_listing, split_elements
    from nfkit.nftables.listing import dump, open_socket

    texts = split_elements(", ".join(elements))
    if from_file is not None:
        texts += split_elements(read_file(from_file))
    if not texts:
        raise InputError("no elements given (ELEMENT... or --from FILE)")
    validate.name(table, "TABLE")
    validate.name(name, "SET")
    with open_socket() as sock:
        rs = dump(sock, rules=False, elements=False, table=table, family=family, must_exist=True)
        s = set_listing(rs, family, table, name).sets[0]
        items = read_elements(texts, family, table, name, s.map is not None)
        run_commands(element_commands(verb, family, table, name, items), sock=sock)
    said(verb, len(items), s.kind, family, table, name)


def said(verb: str, count: int, kind: str, family: str, table: str, name: str) -> None:
    """What the command did, on stderr."""
    print(f"{'added' if verb == 'add' else 'deleted'} {count} element(s) "
          f"{'to' if verb == 'add' else 'from'} {kind} {family} {table} {name}", file=sys.stderr)


def quick_change(verb: str, family: str, table: str, name: str, elements: list[str],
                 from_file: str | None) -> bool:
    """The change made by `nfkit.nftables.plainelements` (plain addresses into a set,
    before the rest of nfkit is imported) and said; False when that path does not take
    it (then nothing was committed: `change` does it)."""
    from nfkit.nftables.plainelements import change as plain_change

    try:
        count = plain_change(verb, family, table, name, elements, from_file)
    except OSError:
        count = None
    if count is None:
        return False
    said(verb, count, "set", family, table, name)
    return True


def quick_args(args: list[str]) -> tuple[str, str, str, str, list[str], str | None] | None:
    """``nfkit`` arguments ``rules element add|delete FAMILY TABLE NAME [ELEMENT...]
    [--from FILE]`` as change's arguments; None for anything else (an option, a
    family click would refuse, help): click reads those."""
    if len(args) < 6 or args[:2] != ["rules", "element"] or args[2] not in ("add", "delete"):
        return None
    verb, family, table, name = args[2:6]
    if family not in FAMILIES or table.startswith("-") or name.startswith("-"):
        return None
    elements: list[str] = []
    from_file: str | None = None
    rest = iter(args[6:])
    for a in rest:
        if a == "--from" and from_file is None:
            from_file = next(rest, None)
            if from_file is None:
                return None
        elif a.startswith("-"):
            return None
        else:
            elements.append(a)
    return verb, family, table, name, elements, from_file
