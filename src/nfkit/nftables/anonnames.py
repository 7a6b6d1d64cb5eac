"""Anonymous sets named by nfkit as the kernel would name them, to spare the commit.

nft sends every anonymous set as "__set%d" (a map as "__map%d"), and so does the
encoder: the kernel then searches the table for the lowest free number (a sscanf of
every set of the table, for each set created), and each message that refers to the set
(its elements, the rule's lookup) first looks the literal "__set%d" up by name (a walk
of every set of the table that cannot succeed) before finding the set by its id.  With thousands of anonymous sets
in one batch that is quadratic work in the kernel's commit (perf: nf_tables_newset,
vsscanf, nft_set_lookup_global).

`named` rewrites a finished batch with the names the kernel would have given (the lowest
free numbers of each table, in the batch's order): the same sets, the same names, without
the searches.  Every renamed NEWSET carries NLM_F_EXCL, so a name taken after all (the
table changed after it was read) is refused with EEXIST, never merged into another set;
the caller then sends the batch as it was (`refused_a_name`).

This module owns that rewrite; it knows the layout of the three messages that carry an
anonymous set's name (NEWSET, NEWSETELEM, a rule's lookup, dynset or objref expression)
and nothing of how they were encoded.
"""

from __future__ import annotations

import re
import struct
from bisect import bisect_right
from collections.abc import Callable, Iterable
from typing import Any

from nfkit.errors import NetlinkError
from nfkit.netlink.codec import Batch, MessageWriter, attr_bytes
from nfkit.netlink.consts import NLM_F_EXCL, NLM_F_REQUEST
from nfkit.nftables.expressions import A
from nfkit.nftables.messages import msg_type

# the names the kernel fills in (sets, maps): of one length
PLACEHOLDERS = (b"__set%d\x00", b"__map%d\x00")
PLACEHOLDER = PLACEHOLDERS[0]
# Below this many anonymous sets the kernel's search costs less than the read of the
# table's sets that lets nfkit skip it.
MIN_SETS = 16
SET_ANONYMOUS = 0x2
EEXIST, ENOENT = 17, 2

_NLA = struct.Struct("=HH")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_BE32 = struct.Struct(">I")
_NLA_TYPE = 0x3FFF
_LEN = 4 + len(PLACEHOLDER)  # the placeholder's attribute
_OLD = (_LEN + 3) & ~3  # ... padded
_HDR = 16  # nlmsghdr
_BODY = 20  # nlmsghdr + nfgenmsg

_NEWSET, _NEWSETELEM, _NEWRULE = msg_type("newset"), msg_type("newsetelem"), msg_type("newrule")
# messages that may free an anonymous set's number in the table they name
_FREEING = {msg_type(n) for n in ("delrule", "delset", "delchain", "deltable")}
_DELTABLE = msg_type("deltable")
_SET, _ELEMS, _RULE, _EXPR = A["set"], A["set_elem_list"], A["rule"], A["expr"]
# expression name -> (its set-name attribute, its set-id attribute)
_REFS = {b"lookup": (A["lookup"]["set"], A["lookup"]["set_id"]),
         b"dynset": (A["dynset"]["set_name"], A["dynset"]["set_id"]),
         b"objref": (A["objref"]["set_name"], A["objref"]["set_id"])}
# what sscanf(name, "__set%d") (or "__map%d") reads a number from (the kernel's own test)
_NUMBERED = re.compile(rb"(__set|__map)[ \t\n\v\f\r]*([+-]?[0-9]+)")

Table = tuple[int, bytes]  # (family number, table name without its NUL)


def _attrs(buf: bytearray, start: int, end: int) -> Iterable[tuple[int, int, int]]:
    """(offset, length, type) of each attribute in buf[start:end]."""
    i = start
    while i + 4 <= end:
        n, t = _NLA.unpack_from(buf, i)
        if n < 4 or i + n > end:
            return
        yield i, n, t & _NLA_TYPE
        i += (n + 3) & ~3


def _level(buf: bytearray, start: int, end: int, at: int, stop: bool = False
           ) -> tuple[dict[int, tuple[int, int]], tuple[int, int, int] | None]:
    """The attributes of buf[start:end] by type, (offset, length), and the one holding
    offset ``at`` (with ``stop``, the walk ends there)."""
    found = {}
    holder = None
    unpack = _NLA.unpack_from
    i = start
    while i + 4 <= end:
        n, t = unpack(buf, i)
        if n < 4 or i + n > end:
            break
        t &= _NLA_TYPE
        found[t] = (i, n)
        if i <= at < i + n:
            holder = (i, n, t)
            if stop:
                break
        i += (n + 3) & ~3
    return found, holder


def _payload(buf: bytearray, where: tuple[int, int] | None) -> bytes | None:
    return None if where is None else bytes(buf[where[0] + 4:where[0] + where[1]])


# A placeholder to replace: (message offset, message type, attribute offset, offsets
# of the length fields around it (the message's, then each nest's), table, set id).
Hit = tuple[int, int, int, tuple[int, ...], Table, bytes]
_NAMED_AT = {_NEWSET: (_SET["name"], _SET["table"], _SET["id"]),
             _NEWSETELEM: (_ELEMS["set"], _ELEMS["table"], _ELEMS["set_id"])}


def _hit(buf: bytearray, m: int, o: int) -> Hit | None:
    """The placeholder at ``o`` in the message at ``m``, if it is an anonymous set's
    name (else None: some other bytes that look alike)."""
    size, kind = _U32.unpack_from(buf, m)[0], _U16.unpack_from(buf, m + 4)[0]
    at = o - 4
    top, holder = _level(buf, m + _BODY, m + size, at)
    if holder is None:
        return None
    table_id = (buf[m + _HDR], (_payload(buf, top.get(1)) or b"").rstrip(b"\0"))  # 1: the table
    named_at = _NAMED_AT.get(kind)
    if named_at is not None:
        sid = _payload(buf, top.get(named_at[2]))
        if holder[0] != at or holder[2] != named_at[0] or holder[1] != _LEN or sid is None:
            return None
        if kind == _NEWSET:
            flags = _payload(buf, top.get(_SET["flags"]))
            if flags is None or not _BE32.unpack(flags)[0] & SET_ANONYMOUS:
                return None
        return (m, kind, at, (m,), table_id, sid)  # type: ignore[return-value]
    if kind != _NEWRULE or holder[2] != _RULE["expressions"]:
        return None
    _, elem = _level(buf, holder[0] + 4, holder[0] + holder[1], at, stop=True)
    if elem is None:
        return None
    parts, data = _level(buf, elem[0] + 4, elem[0] + elem[1], at)
    ref = _REFS.get((_payload(buf, parts.get(_EXPR["name"])) or b"").rstrip(b"\0"))
    if ref is None or data is None or data[2] != _EXPR["data"]:
        return None
    fields, name = _level(buf, data[0] + 4, data[0] + data[1], at)
    sid = _payload(buf, fields.get(ref[1]))
    if name is None or name[0] != at or name[2] != ref[0] or name[1] != _LEN or sid is None:
        return None
    return (m, kind, at, (m, holder[0], elem[0], data[0]), table_id,  # type: ignore[return-value]
            sid)


def _hits(batch: MessageWriter, starts: list[int]) -> list[Hit]:
    buf = batch.buffer
    found = []
    for p in PLACEHOLDERS:
        o = buf.find(p)
        while o >= 0:
            found.append(o)
            o = buf.find(p, o + len(p))
    found.sort()
    hits = []
    for o in found:
        h = _hit(buf, starts[bisect_right(starts, o) - 1], o)
        if h is not None:
            hits.append(h)
    return hits


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
        size, fam = _U32.unpack_from(buf, m)[0], buf[m + _HDR]
        # attribute 1 of each: the table (absent: every table of the family)
        name = _payload(buf, _level(buf, m + _BODY, m + size, -1)[0].get(1))
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
    starts = [s for _, s in batch.seqs]
    hits = _hits(batch, starts)
    first_set: dict[Table, int] = {}
    for h in hits:
        if h[1] == _NEWSET:
            first_set.setdefault(h[4], h[0])
    if sum(1 for h in hits if h[1] == _NEWSET) < MIN_SETS:
        return None
    taken = {t: taken_numbers(existing(t)) for t in first_set}
    if any(taken.values()):
        fresh, freed = _deleted(batch, first_set)
        for t in fresh:
            taken[t] = set()
        for t in freed:
            if taken[t]:
                del taken[t]  # a number may be freed in the batch: left to the kernel
    names: dict[tuple[Table, bytes], bytes] = {}
    nxt: dict[tuple[Table, bytes], int] = {}
    out = []
    renamed = []
    for h in hits:
        t = h[4]
        if t not in taken:
            continue
        if h[1] == _NEWSET:
            prefix = bytes(batch.buffer[h[2] + 4:h[2] + 9])  # __set or __map
            n = nxt.get((t, prefix), 0)
            while (prefix, n) in taken[t]:
                n += 1
            nxt[(t, prefix)] = n + 1
            names[(t, h[5])] = b"%s%d\x00" % (prefix, n)
            renamed.append(bisect_right(starts, h[0]) - 2)  # BATCH_BEGIN not counted
        name = names.get((t, h[5]))
        if name is not None:
            out.append((h, name))
    if not out:
        return None
    return _rewrite(batch, starts, out), renamed


def _rewrite(batch: Batch, starts: list[int], renames: list[tuple[Hit, bytes]]) -> Batch:
    buf = batch.buffer
    view = memoryview(buf)
    parts: list[Any] = []
    seqs = batch.seqs
    new_seqs: list[tuple[int, int]] = []
    done = 0  # bytes of buf copied
    added = 0  # bytes the rewritten messages grew so far
    k = 0  # messages whose offsets are in new_seqs
    i = 0
    while i < len(renames):
        m = renames[i][0][0]
        j = i
        while j < len(renames) and renames[j][0][0] == m:
            j += 1
        size = _U32.unpack_from(buf, m)[0]
        msg = bytearray(view[m:m + size])
        for h, name in reversed(renames[i:j]):
            new = attr_bytes(_U16.unpack_from(buf, h[2] + 2)[0], name)
            delta = len(new) - _OLD
            a = h[2] - m
            msg[a:a + _OLD] = new
            _U32.pack_into(msg, 0, _U32.unpack_from(msg, 0)[0] + delta)
            for lf in h[3][1:]:
                _U16.pack_into(msg, lf - m, _U16.unpack_from(msg, lf - m)[0] + delta)
            if h[1] == _NEWSET:
                _U16.pack_into(msg, 6, _U16.unpack_from(msg, 6)[0] | NLM_F_EXCL)
        # the messages up to this one keep their offsets moved by what came before
        upto = bisect_right(starts, m)
        if added:
            new_seqs += [(q, off + added) for q, off in seqs[k:upto]]
        else:
            new_seqs += seqs[k:upto]
        k = upto
        parts.append(view[done:m])
        parts.append(msg)
        done = m + size
        added += len(msg) - size
        i = j
    new_seqs += [(q, off + added) for q, off in seqs[k:]]
    parts.append(view[done:])
    out = Batch()
    out.buffer = bytearray(b"".join(parts))
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
        out = set()
        try:
            for msg in sock.dump(w, restart=True):
                for i, n, typ in _attrs(bytearray(msg.attrs), 0, len(msg.attrs)):
                    if typ == _SET["name"]:
                        out.add(bytes(msg.attrs[i + 4:i + n]).rstrip(b"\0"))
        except NetlinkError as exc:
            if exc.errno != ENOENT:  # no such table: no sets
                raise
        return out

    return existing
