"""Anonymous sets named by nfkit as the kernel would name them, to spare the commit.

nft sends every anonymous set as "__set%d" (a map as "__map%d"), and so does the
encoder: for each such NEWSET the kernel searches the table for the lowest free number,
a sscanf of the name of every set of the table (perf, 80,000 rules with 3,336 anonymous
sets: nf_tables_newset and vsscanf, a sixth of the commit).  The messages that refer to
the set (its elements, the rule's lookup) find it by its id after the name, whatever the
set was called, and keep the placeholder.

`named` rewrites the NEWSETs of a finished batch with the names the kernel would have
given (the lowest free numbers of each table and kind, in the batch's order): the same
sets under the same names, without the search.  Each renamed NEWSET carries NLM_F_EXCL,
so a name taken after all (the table changed after it was read) is refused with EEXIST,
never merged into another set; the caller then sends the batch as it was encoded
(`refused_a_name`).

This module owns that rewrite; it knows the NEWSET message's layout and nothing of how
the batch was encoded.
"""

from __future__ import annotations

import re
import struct
from bisect import bisect_right
from collections.abc import Callable, Iterable
from typing import Any

from nfkit.errors import NetlinkError
from nfkit.netlink.codec import Batch, MessageWriter, attr_bytes, iter_attr_spans, iter_attrs
from nfkit.netlink.consts import NLM_F_EXCL, NLM_F_REQUEST
from nfkit.nftables.expressions import A
from nfkit.nftables.messages import msg_type

# the names the kernel fills in (sets, maps): of one length
PLACEHOLDERS = (b"__set%d\x00", b"__map%d\x00")
# Below this many anonymous sets the kernel's search costs less than the read of the
# table's sets that lets nfkit skip it.
MIN_SETS = 16
SET_ANONYMOUS = 0x2
EEXIST, ENOENT = 17, 2

_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_BE32 = struct.Struct(">I")
_LEN = 4 + len(PLACEHOLDERS[0])  # a placeholder's attribute
_PADDED = (_LEN + 3) & ~3
_HDR = 16  # nlmsghdr
_BODY = 20  # nlmsghdr + nfgenmsg
_NEWSET = msg_type("newset")
# messages that may free an anonymous set's number in the table they name
_FREEING = {msg_type(n) for n in ("delrule", "delset", "delchain", "deltable")}
_DELTABLE = msg_type("deltable")
_SET = A["set"]
# what sscanf(name, "__set%d") (or "__map%d") reads a number from (the kernel's own test)
_NUMBERED = re.compile(rb"(__set|__map)[ \t\n\v\f\r]*([+-]?[0-9]+)")

Table = tuple[int, bytes]  # (family number, table name without its NUL)
# an anonymous NEWSET: (message offset, name attribute offset, table, the name's prefix)
NewSet = tuple[int, int, Table, bytes]


def _top(buf: bytearray, m: int) -> dict[int, tuple[int, int]]:
    """The top-level attributes of the message at ``m`` by type: (offset, length)."""
    end = m + _U32.unpack_from(buf, m)[0]
    return {t: (start - 4, stop - start + 4) for t, start, stop in iter_attr_spans(buf, m + _BODY, end)}


def _payload(buf: bytearray, where: tuple[int, int] | None) -> bytes | None:
    return None if where is None else bytes(buf[where[0] + 4:where[0] + where[1]])


def _new_sets(batch: MessageWriter) -> list[NewSet]:
    """The batch's NEWSETs of anonymous sets named by a placeholder, in order (the
    messages that refer to them, elements and lookups, find them by their ids)."""
    buf = batch.buffer
    lo, hi = _U16.pack(_NEWSET)  # the message type's two bytes, in host order
    out = []
    for m in [m for _, m in batch.seqs if buf[m + 4] == lo and buf[m + 5] == hi]:
        top = _top(buf, m)
        name, flags = top.get(_SET["name"]), _payload(buf, top.get(_SET["flags"]))
        if name is None or name[1] != _LEN or buf[name[0] + 4:name[0] + _LEN] not in \
                PLACEHOLDERS or flags is None or not _BE32.unpack(flags)[0] & SET_ANONYMOUS:
            continue
        table = (_payload(buf, top.get(_SET["table"])) or b"").rstrip(b"\0")
        out.append((m, name[0], (buf[m + _HDR], table), bytes(buf[name[0] + 4:name[0] + 9])))
    return out


def taken_numbers(names: Iterable[bytes]) -> set[tuple[bytes, int]]:
    """The numbers the kernel counts as used among set names, with their prefix
    (sscanf of "__set%d", "__map%d")."""
    out = set()
    for n in names:
        m = _NUMBERED.match(n)
        if m:
            out.add((m.group(1), int(m.group(2))))
    return out


def _deleted(batch: MessageWriter, first_set: dict[Table, int]) -> tuple[set[Table], set[Table]]:
    """Tables deleted before their first anonymous set (created anew in the batch: none
    of the kernel's sets is theirs), and tables another message may free a number in."""
    buf = batch.buffer
    fresh: set[Table] = set()
    freed: set[Table] = set()
    for _, m in batch.seqs:
        kind = _U16.unpack_from(buf, m + 4)[0]
        if kind not in _FREEING:
            continue
        fam = buf[m + _HDR]
        # attribute 1 of each: the table (absent: every table of the family)
        name = _payload(buf, _top(buf, m).get(1))
        if name is not None:
            name = name.rstrip(b"\0")
        for t, first in first_set.items():
            if (fam == 0 or fam == t[0]) and (name is None or name == t[1]):
                if kind == _DELTABLE and m < first:
                    fresh.add(t)
                else:
                    freed.add(t)
    return fresh, freed - fresh


def named(batch: Batch, existing: Callable[[Table], set[bytes]]) -> tuple[Batch, list[int]] | None:
    """A copy of ``batch`` (not closed) with its anonymous sets named as the kernel would
    name them, and the positions (among the batch's messages) of the renamed NEWSETs; None
    when there is nothing worth renaming.  ``existing(table)`` gives the names of the sets
    the kernel holds in a table."""
    sets = _new_sets(batch)
    if len(sets) < MIN_SETS:
        return None
    first_set: dict[Table, int] = {}
    for s in sets:
        first_set.setdefault(s[2], s[0])
    taken = {t: taken_numbers(existing(t)) for t in first_set}
    if any(taken.values()):
        fresh, freed = _deleted(batch, first_set)
        for t in fresh:
            taken[t] = set()
        for t in freed:
            if taken[t]:
                del taken[t]  # a number may be freed in the batch: left to the kernel
    nxt: dict[tuple[Table, bytes], int] = {}
    names = []
    for m, at, t, prefix in sets:
        if t not in taken:
            continue
        n = nxt.get((t, prefix), 0)
        while (prefix, n) in taken[t]:
            n += 1
        nxt[(t, prefix)] = n + 1
        names.append((m, at, b"%s%d\x00" % (prefix, n)))
    if not names:
        return None
    starts = [s for _, s in batch.seqs]
    renamed = [bisect_right(starts, m) - 2 for m, _, _ in names]  # BATCH_BEGIN not counted
    return _rewrite(batch, starts, names), renamed


def _rewrite(batch: Batch, starts: list[int], names: list[tuple[int, int, bytes]]) -> Batch:
    """``batch`` with each (message, name attribute, name) of ``names`` written in."""
    buf = batch.buffer
    view = memoryview(buf)
    parts: list[Any] = []
    seqs = batch.seqs
    new_seqs: list[tuple[int, int]] = []
    done = 0  # bytes of buf copied
    added = 0  # bytes the renamed messages grew so far
    k = 0  # messages whose offsets are in new_seqs
    flags_excl = NLM_F_EXCL
    for m, at, name in names:
        size = _U32.unpack_from(buf, m)[0]
        attr = attr_bytes(_U16.unpack_from(buf, at + 2)[0], name)
        grow = len(attr) - _PADDED
        head = bytearray(view[m:at])
        _U32.pack_into(head, 0, size + grow)
        _U16.pack_into(head, 6, _U16.unpack_from(head, 6)[0] | flags_excl)
        upto = bisect_right(starts, m)
        new_seqs += [(q, off + added) for q, off in seqs[k:upto]] if added else seqs[k:upto]
        k = upto
        parts += (view[done:m], head, attr)
        done = at + _PADDED
        added += grow
    new_seqs += [(q, off + added) for q, off in seqs[k:]]
    parts.append(view[done:])
    out = Batch()
    out.buffer = bytearray().join(parts)
    out.seqs = new_seqs
    out.begin_seq = batch.begin_seq
    return out


def refused_a_name(errors: Iterable[Any], renamed: list[int]) -> bool:
    """True if the kernel refused one of the renamed sets because its name was taken."""
    at = set(renamed)
    return any(e.errno == EEXIST and e.index in at for e in errors)


def existing_names(sock: Any) -> Callable[[Table], set[bytes]]:
    """``existing(table)`` for `named`: the names of the sets the kernel holds in a table
    (one GETSET dump of that table)."""

    def existing(t: Table) -> set[bytes]:
        w = MessageWriter()
        w.begin(msg_type("getset"), NLM_F_REQUEST, family=t[0])
        w.raw(attr_bytes(_SET["table"], t[1] + b"\0"))
        w.end()
        out: set[bytes] = set()
        try:
            for msg in sock.dump(w, restart=True):
                out.update(bytes(value).rstrip(b"\0") for typ, value in iter_attrs(memoryview(msg.attrs))
                           if typ == _SET["name"])
        except NetlinkError as exc:
            if exc.errno != ENOENT:  # no such table: no sets
                raise
        return out

    return existing
