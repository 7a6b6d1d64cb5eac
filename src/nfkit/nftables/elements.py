"""Set and map elements from the command line and from files: `nfkit rules element`.

A blocklist is thousands of addresses added to one set in one transaction.  The
elements are written in nft's own syntax, as between the braces of `nft add
element`: separated by commas or new lines, with `#` comments in files.  The
common forms (addresses, prefixes, ranges, numbers, concatenations ``a . b``,
map entries ``key : value`` of those) are read here directly; every other
element (service names, quoted strings, verdicts, element options such as
``timeout 1h`` or ``counter``) goes through nft's grammar (`nfttext`), all of
them in one parse, so both ways read exactly what nft reads.

Everything is one transaction: a bad element is an error naming it and
nothing is committed.
"""

from __future__ import annotations

import re
from typing import Any

from nfkit.errors import InputError
from nfkit.nftables.jsonfmt import Command, parse_commands
from nfkit.nftables.model import Ruleset, Set
from nfkit.nftables.plainelements import simple_split

_V4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_V6 = r"[0-9A-Fa-f]*:[0-9A-Fa-f:.]*"
_NUM = r"\d+"
_ATOM = re.compile(rf"(?:({_V4}|{_V6})(?:/(\d{{1,3}}))?|({_NUM}))\Z")


def _atom(text: str) -> Any | None:
    """An address, a prefix or a number as libnftables JSON; None: not one of these."""
    m = _ATOM.match(text)
    if m is None:
        return None
    addr, plen, num = m.groups()
    if num is not None:
        return int(num)
    if plen is not None:
        return {"prefix": {"addr": addr, "len": int(plen)}}
    return addr


def _value(text: str) -> Any | None:
    """One value: an atom, a range of two atoms, or a concatenation of those."""
    if " . " in text:
        parts = [_value(p.strip()) for p in text.split(" . ")]
        return None if any(p is None for p in parts) else {"concat": parts}
    v = _atom(text)
    if v is not None or "-" not in text:
        return v
    lo, _, hi = text.partition("-")
    a, b = _atom(lo.strip()), _atom(hi.strip())
    if a is None or b is None or isinstance(a, dict) or isinstance(b, dict):
        return None
    return {"range": [a, b]}


_NOT_DIGITS_OR_DOTS = str.maketrans("", "", "0123456789.\n")


def split_elements(text: str) -> list[str]:
    """The elements of ``text`` (commas or new lines between them; `#` comments,
    quotes and braces respected)."""
    simple = simple_split(text)
    if simple is not None:
        return simple
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    quoted = False
    for line in text.splitlines():
        for ch in line:
            if ch == '"':
                quoted = not quoted
            elif not quoted:
                if ch in "{(":
                    depth += 1
                elif ch in "})":
                    depth -= 1
                elif ch == "," and depth == 0:
                    out.append("".join(cur).strip())
                    cur = []
                    continue
                elif ch == "#" and depth == 0:
                    break
            cur.append(ch)
        if depth == 0 and not quoted:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(" ")
    if quoted or depth:
        raise InputError(f"unterminated {'quoted string' if quoted else 'brace'} in the elements")
    out.append("".join(cur).strip())
    return [e for e in out if e]


def read_elements(texts: list[str], family: str, table: str, name: str, is_map: bool) -> list[Any]:
    """Elements in nft syntax -> libnftables JSON element values, in order."""
    joined = "\n".join(texts)
    if not is_map and not joined.translate(_NOT_DIGITS_OR_DOTS):
        # only digits and dots, seen in one pass: numbers, or dotted quads (the
        # encoder reads each as an address, and names any that is not one)
        if "." not in joined:
            return [int(t) for t in texts]
        if joined.count(".") == 3 * len(texts):
            return list(texts)
    items: list[Any] = [None] * len(texts)
    rest: list[int] = []
    for i, text in enumerate(texts):
        if is_map:
            key, sep, data = text.partition(" : ")
            k = _value(key.strip()) if sep else None
            d = _value(data.strip()) if sep else None
            if k is not None and d is not None and not isinstance(d, dict):
                items[i] = [k, d]
                continue
        else:
            v = _value(text)
            if v is not None:
                items[i] = v
                continue
        rest.append(i)
    if rest:
        from nfkit.nftables.nfttext import to_json

        body = ",\n".join(texts[i] for i in rest)
        doc = to_json(f"add element {family} {table} {name} {{\n{body}\n}}\n", "elements")
        parsed = [e for x in doc["nftables"] for e in x["add"]["element"]["elem"]]
        if len(parsed) != len(rest):
            raise InputError(f"elements: {len(rest)} given, nft's grammar read {len(parsed)}")
        for i, v in zip(rest, parsed, strict=True):
            items[i] = v
    return items


def element_commands(verb: str, family: str, table: str, name: str, items: list[Any]) -> list[Command]:
    """The `add`/`delete` element command for ``items`` of one set or map."""
    if verb not in ("add", "delete"):
        raise InputError(f"{verb} element is not a command")
    return parse_commands({"nftables": [{verb: {"element": {
        "family": family, "table": table, "name": name, "elem": items}}}]})


def set_listing(rs: Ruleset, family: str, table: str, name: str) -> Ruleset:
    """The one set of ``rs`` named, in a ruleset of its own (as `nft list set` shows it);
    InputError if there is none."""
    found: Set | None = next((s for s in rs.sets if (s.family, s.table, s.name) == (family, table, name)),
                             None)
    if found is None:
        raise InputError(f"set {family} {table} {name}: no such set or map")
    out = Ruleset()
    out.tables = [t for t in rs.tables if (t.family, t.name) == (family, table)]
    out.sets = [found]
    return out
