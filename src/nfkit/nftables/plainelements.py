"""`nfkit rules element add|delete` of plain addresses, and `nfkit rules load` of a
libnftables JSON file of such element commands, before the rest of nfkit is imported.

A blocklist is thousands of addresses added to one set; nft does the whole job in
less CPU than nfkit's imports of its rule machinery take.  This module owns the
case that needs none of it: a set (not a map, not an interval set, not a
concatenation) of ipv4_addr or ipv6_addr, every element an address as inet_pton
reads it.  The set is read with one GETSET, the elements go in one transaction
laid out as `nfkit.nftables.messages.Encoder` lays them out (`key_chunks` is that
layout, used by both; tests/nftables/test_elements.py compares the bytes), and
anything else (another set, an element in any other form, a refusal by the
kernel, which commits nothing) is left to the general path, which reads it and
names what is wrong.
"""

from __future__ import annotations

import _socket
import _struct as struct  # (struct.py only re-exports it: one module less to import)
import os
import stat

from nfkit.nftables import quicknl as nl

TYPE_CHECKING = False
if TYPE_CHECKING:  # (typing's import costs more than the kernel's work for a blocklist)
    from typing import Any

NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS, NFTA_SET_KEY_TYPE, NFTA_SET_KEY_LEN = 1, 2, 3, 4, 5
NFTA_SET_DATA_TYPE = 6
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY, NFTA_DATA_VALUE = 1, 1, 1
NLA_F_NESTED = 0x8000
# set flags that change what an element is (NFT_SET_INTERVAL, MAP, OBJECT, CONCAT)
NOT_PLAIN = 0x4 | 0x8 | 0x40 | 0x80
# key type (nft's datatype number) -> address family of its keys
ADDRESS_TYPES = {7: (_socket.AF_INET, 4), 8: (_socket.AF_INET6, 16)}  # ipv4_addr, ipv6_addr
ELEMENT_ROOM = 60000  # bytes of elements per message (the nest's length is 16 bits)


def simple_split(text: str) -> list[str] | None:
    """The elements of ``text`` (commas or new lines between them, `#` comments to the
    end of the line) when it has no quotes, braces or parentheses; None otherwise."""
    if '"' in text or any(ch in text for ch in "{}()"):
        return None
    if "#" in text:
        text = "\n".join(line.partition("#")[0] for line in text.split("\n"))
    return [e for e in map(str.strip, text.replace(",", "\n").split("\n")) if e]


def key_chunks(width: int, keys: list[bytes]) -> list[bytes]:
    """NFTA_SET_ELEM_LIST_ELEMENTS' payloads for keys alone, all ``width`` bytes long: as
    many elements per message as fit in its 16-bit length, each element one constant
    header (NFTA_LIST_ELEM > NFTA_SET_ELEM_KEY > NFTA_DATA_VALUE), the key and its
    padding."""
    padded = (4 + width + 3) & ~3
    lead = (struct.pack("=HH", 8 + padded, NFTA_LIST_ELEM | NLA_F_NESTED)
            + struct.pack("=HH", 4 + padded, NFTA_SET_ELEM_KEY | NLA_F_NESTED)
            + struct.pack("=HH", 4 + width, NFTA_DATA_VALUE))
    pad = bytes(-width & 3)
    step = max(1, ELEMENT_ROOM // (12 + width + len(pad)))
    between = pad + lead
    return [lead + between.join(keys[at:at + step]) + pad for at in range(0, len(keys), step)]


class _Refused(Exception):
    """The kernel refused the transaction (nothing committed)."""


def change(verb: str, family: str, table: str, name: str, elements: list[str],
           from_file: str | None) -> int | None:
    """Add (``verb`` "add") or delete the addresses ``elements`` (and those of
    ``from_file``) to or from set NAME in one transaction: the number of elements
    when the kernel committed it, None when the general path must do it (nothing
    was committed)."""
    if family not in nl.FAMILY_NUM or verb not in ("add", "delete"):
        return None
    texts = simple_split(", ".join(elements))
    if texts is None:
        return None
    if from_file is not None:
        data = _regular_file(from_file)
        if data is None:
            return None
        try:
            more = simple_split(data.decode())
        except UnicodeDecodeError:
            return None  # the general path names the file and the cause
        if more is None:
            return None
        texts += more
    if not texts:
        return None
    conn = nl.Conn()
    try:
        messages = _set_messages(conn, verb, family, table, name, texts)
        if messages is None or not _commit(conn, messages):
            return None
        return len(texts)
    finally:
        conn.close()


def _set_messages(conn: nl.Conn, verb: str, family: str, table: str, name: str,
                  texts: list[str]) -> list[tuple[int, int, int, bytes]] | None:
    """The messages adding (deleting) the addresses ``texts`` to (from) set NAME, read
    with one GETSET; None when it is not a plain set of addresses or one of ``texts``
    is not an address."""
    fam = nl.FAMILY_NUM.get(family)
    if fam is None or verb not in ("add", "delete"):
        return None
    head = (nl.attr(NFTA_SET_TABLE, table.encode() + b"\0")
            + nl.attr(NFTA_SET_NAME, name.encode() + b"\0"))
    reply = conn.ask(nl.GETSET, fam, head)
    if not reply:
        return None
    a = nl.attrs(reply[0])
    flags = int.from_bytes(a.get(NFTA_SET_FLAGS, b"\0\0\0\0"), "big")
    key_type = int.from_bytes(a.get(NFTA_SET_KEY_TYPE, b""), "big")
    if flags & NOT_PLAIN or NFTA_SET_DATA_TYPE in a or key_type not in ADDRESS_TYPES:
        return None
    af, width = ADDRESS_TYPES[key_type]
    if a.get(NFTA_SET_KEY_LEN) != width.to_bytes(4, "big"):
        return None
    try:
        keys = list(map(_socket.inet_pton, [af] * len(texts), texts))
    except (OSError, TypeError):
        return None  # not all addresses: the general path reads the others
    return element_messages(verb, family, table, name, width, keys)


def _commit(conn: nl.Conn, messages: list[tuple[int, int, int, bytes]]) -> bool:
    """``messages`` in one transaction; False when the kernel refused it (nothing
    committed: the general path sends it again and names what was wrong)."""
    from nfkit.nftables.commitguard import interrupts_held

    try:
        with interrupts_held(f"the transaction ({len(messages)} messages)"):
            if not conn.commit(messages):
                raise _Refused  # not recorded as committed
    except _Refused:
        return False
    return True


# How far into a file its first element command must begin for `load_json` to take
# it (nft's metainfo comes before it: ~100 bytes).  A file that holds one only later is
# the general path's, which reads it as well (only slower).
ELEMENT_WITHIN = 1 << 16


def _regular_file(path: str, head: bytes = b"") -> bytes | None:
    """The bytes of ``path`` when it is a regular file (what is read from a pipe or stdin
    could not be read again by the general path) and, if ``head`` is given, its first
    `ELEMENT_WITHIN` bytes hold ``head``; None otherwise.  Checked before the open too:
    opening a named pipe would wait for a writer.  A 28 MB ruleset for the general
    path, read whole here first, cost ~7,000 page faults and ~15 ms."""
    try:
        if path == "-" or not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            if not head:
                return f.read()
            start = f.read(ELEMENT_WITHIN)
            return start + f.read() if head in start else None
    except OSError:
        return None  # the general path names the file and the cause


Wanted = list[tuple[str, str, str, str, list[str]]]  # (verb, family, table, set, elements)

_JSON_SPACE = " \t\n\r"  # JSON's whitespace (str.strip's is wider)


class _JsonOptions:
    """What json.loads gives its C scanner by default."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__


def json_document(text: str) -> Any:
    """``json.loads(text)`` read by the json module's C scanner alone: the json package's
    import (re, enum and the rest) is ~7 ms, more than a JSON blocklist of 5,000 addresses
    costs the kernel.  ValueError where json.loads raises one."""
    from _json import make_scanner

    start = len(text) - len(text.lstrip(_JSON_SPACE))
    try:
        doc, end = make_scanner(_JsonOptions)(text, start)  # type: ignore[arg-type]
    except StopIteration as exc:
        raise ValueError(f"not JSON at character {exc.value}") from None
    if text[end:].strip(_JSON_SPACE):
        raise ValueError(f"extra data at character {end}")
    return doc


def json_element_commands(data: bytes) -> Wanted | None:
    """The element commands of a libnftables JSON document that holds only `add` or
    `delete` of `element`s given as strings (metainfo aside); None for anything else."""
    if not data.lstrip()[:1] == b"{" or b'"element"' not in data:
        return None
    try:
        doc = json_document(data.decode())
    except (ValueError, RecursionError):  # (UnicodeDecodeError: the general path says it)
        return None
    cmds = doc.get("nftables") if type(doc) is dict and len(doc) == 1 else None
    if type(cmds) is not list:
        return None
    wanted: Wanted = []
    for c in cmds:
        if type(c) is not dict or len(c) != 1:
            return None
        (verb, body), = c.items()
        if verb == "metainfo":
            continue
        e = body.get("element") if type(body) is dict and len(body) == 1 else None
        if verb not in ("add", "delete") or type(e) is not dict or \
                set(e) != {"family", "table", "name", "elem"}:
            return None
        elems = [e["elem"]] if type(e["elem"]) is str else e["elem"]
        if type(elems) is not list or not elems or \
                not all(type(x) is str for x in (e["family"], e["table"], e["name"], *elems)):
            return None
        wanted.append((verb, e["family"], e["table"], e["name"], elems))
    return wanted or None


def load_json(path: str) -> int | None:
    """`nfkit rules load FILE` of a libnftables JSON file that only adds or deletes
    addresses in plain sets (``{"nftables": [{"add": {"element": {"family": ...,
    "table": ..., "name": ..., "elem": ["192.0.2.1", ...]}}}, ...]}``, metainfo
    allowed): its commands in one transaction, in order, the batch the general path
    would send.  The number of elements when the kernel committed it; None when the
    general path must read the file (anything else in it; nothing was committed)."""
    data = _regular_file(path, b'"element"')  # (every command of such a file is one)
    wanted = None if data is None else json_element_commands(data)
    if wanted is None:
        return None
    conn = nl.Conn()
    try:
        messages = []
        for verb, family, table, name, elems in wanted:
            more = _set_messages(conn, verb, family, table, name, elems)
            if more is None:
                return None
            messages += more
        if not _commit(conn, messages):
            return None
        return sum(len(w[4]) for w in wanted)
    finally:
        conn.close()


def element_messages(verb: str, family: str, table: str, name: str, width: int,
                     keys: list[bytes]) -> list[tuple[int, int, int, bytes]]:
    """The NEWSETELEM (``verb`` "add") or DELSETELEM messages (type, flags, family, body)
    of ``keys``, each ``width`` bytes, for set NAME."""
    msg_type, msg_flags = ((nl.NEWSETELEM, nl.NLM_F_REQUEST | nl.NLM_F_CREATE) if verb == "add"
                           else (nl.DELSETELEM, nl.NLM_F_REQUEST))
    head = (nl.attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
            + nl.attr(NFTA_SET_ELEM_LIST_SET, name.encode() + b"\0"))
    return [(msg_type, msg_flags, nl.FAMILY_NUM[family], head + _nest(NFTA_SET_ELEM_LIST_ELEMENTS, chunk))
            for chunk in key_chunks(width, keys)]


def _nest(typ: int, body: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(body), typ | NLA_F_NESTED) + body
