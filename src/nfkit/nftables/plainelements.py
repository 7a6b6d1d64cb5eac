"""`nfkit rules element add|delete` of plain addresses, before the rest of nfkit is
imported.

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
import os
import stat
import struct

from nfkit.nftables import quicknl as nl

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
    fam = nl.FAMILY_NUM.get(family)
    if fam is None or verb not in ("add", "delete"):
        return None
    texts = simple_split(", ".join(elements))
    if texts is None:
        return None
    if from_file is not None:
        # a regular file only: what is read from a pipe (or stdin, "-") could not be
        # read again by the general path
        # (checked before the open too: opening a named pipe would wait for a writer)
        try:
            if from_file == "-" or not stat.S_ISREG(os.stat(from_file).st_mode):
                return None
            with open(from_file, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    return None
                more = simple_split(f.read().decode())
        except (OSError, UnicodeDecodeError):
            return None  # the general path names the file and the cause
        if more is None:
            return None
        texts += more
    if not texts:
        return None
    conn = nl.Conn()
    try:
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
        except OSError:
            return None  # not all addresses: the general path reads the others
        messages = element_messages(verb, family, table, name, width, keys)
        from nfkit.nftables.commitguard import interrupts_held

        try:
            with interrupts_held(f"the transaction ({len(messages)} messages)"):
                if not conn.commit(messages):
                    raise _Refused  # not recorded as committed
        except _Refused:
            return None
        return len(keys)
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
