"""Rules of a kernel dump as libnftables JSON text, without a model object per rule.

This module owns the fast path of `nfkit rules list --json`.  A big chain is
mostly a few rule *shapes*: rules whose dump messages differ only in the
handle, the position and the compared values.  The first rule of a shape is
decoded by the general decoder (messages.decode_rule) and printed with json.dumps;
from it come two templates: the netlink core's `Layout` of the raw dump message
(every byte fixed except those values: `templates.rule_layout`) and the rule's
JSON text with a marker where each value goes.  The following rules of that
shape are recognised a run at a time (`Layout.run`: struct reads of many
messages at once), their values rendered a column at a time (addresses with
one map of inet_ntoa, integers with one array) and joined into the text.  A template is used only after it reproduced its own
first rule's text exactly; any rule it does not match is decoded the general
way, so the output is the same text either way.
"""

from __future__ import annotations

import json
import re
import socket
import struct
from array import array
from itertools import chain, repeat
from typing import Any

from nfkit.netlink.codec import (
    NFGEN_HDRLEN,
    NLMSG_HDRLEN,
    attr_payloads,
    get_string,
    iter_attr_spans,
    parse_messages,
)
from nfkit.netlink.shapes import Layout
from nfkit.nftables.decompiler import RuleShape, RuleShapes, SetView, plain_value
from nfkit.nftables.expressions import A
from nfkit.nftables.jsonfmt import rule_json
from nfkit.nftables.messages import (
    ARRAY_CODE,
    FAMILY_NAME,
    decode_rule,
    in_byte_order,
    msg_type,
)
from nfkit.nftables.model import Rule
from nfkit.nftables.templates import rule_layout
from nfkit.nftables.textfmt import rule_text, typed

_U32 = struct.Struct("=I")
_NEWRULE = msg_type("newrule")
_MAX_SHAPES = 32
_ATTRS_AT = NLMSG_HDRLEN + NFGEN_HDRLEN
NFT_SEP = "\n\t\t"  # between two rules of a chain in nft's text listing


def _marker(k: int) -> str:
    """A string no rule holds, standing for value ``k`` (-1: the handle) in a text."""
    return f"\x00nfkit:{k}\x00"


class _Memo(dict):  # type: ignore[type-arg]
    """Raw value -> its JSON text, computed on first use (values of a slot recur)."""

    def __init__(self, v: Any, left: Any = None) -> None:
        super().__init__()
        self.v = v
        self.left = left  # nft text: the value printed as nft prints it after ``left``

    def __missing__(self, raw: bytes) -> str:
        pv = plain_value(self.v, raw)
        text = self[raw] = json.dumps(pv) if self.left is None else typed(self.left, pv)
        return text


def _renderer(v: Any, size: int, left: Any = None) -> tuple[Any, bool]:
    """(column of raw values -> list of text, whether the text goes between quotes);
    with ``left`` (nft text), each value as nft prints it after that left-hand side."""
    dt = v.types[0] if len(v.types) == 1 else None
    if dt is not None and dt.kind == "ipv4" and size == 4:
        return (lambda col: list(map(socket.inet_ntoa, col))), True
    code = ARRAY_CODE.get(size)
    if (dt is not None and dt.kind == "int" and code is not None and dt.size == size
            and (left is None or typed(left, 12) == "12")
            and not (dt.print_symbols and (dt.names or dt.name in ("iface_index", "inet_proto")))):
        big = dt.big_endian
        return (lambda col: list(map(str, in_byte_order(array(code, b"".join(col)), big)))), False
    memo = _Memo(v, left)
    return (lambda col: list(map(memo.__getitem__, col))), False


def _counter_spans(blob: bytes) -> list[tuple[int, int]]:
    """(packets start, bytes start) in ``blob`` of each top-level counter expression
    holding both as 8-byte values; empty when any counter looks otherwise."""
    out = []
    for _t, s, e in iter_attr_spans(blob):
        name = b""
        for t2, s2, e2 in iter_attr_spans(blob, s, e):
            if t2 == 1:
                name = blob[s2:e2].split(b"\0", 1)[0]
            elif t2 == 2 and name == b"counter":
                found = {t3: (s3, e3) for t3, s3, e3 in iter_attr_spans(blob, s2, e2)}
                pk, by = found.get(2), found.get(1)  # NFTA_COUNTER_PACKETS, _BYTES
                if pk is None or by is None or pk[1] - pk[0] != 8 or by[1] - by[0] != 8:
                    return []
                out.append((pk[0], by[0]))
    return out


def _handles(col: list[bytes]) -> list[str]:
    """Big-endian 64-bit values (handles, counters) as decimal text."""
    return list(map(str, in_byte_order(array(ARRAY_CODE[8], b"".join(col)), True)))


class _TextShape:
    """One rule shape: the message's layout and the JSON text around the values."""

    __slots__ = ("layout", "key", "statics", "renders", "hits", "sep", "skey")

    def __init__(self, layout: Layout, key: tuple[str, str, str],
                 statics: list[str], renders: list[tuple[int, Any]], sep: str = ", ") -> None:
        self.sep = sep  # between two rules' texts
        self.skey: RuleShape | None = None  # the decoder's shape (`RuleShapes.shape`) it was made of
        self.layout = layout  # the message with its slots (`templates.rule_layout`)
        self.key = key
        self.statics = statics  # len(renders) + 1 pieces of text
        self.renders = renders  # (the layout's slot, column renderer) in text order
        self.hits = 0

    def render(self, values: list[tuple[bytes, ...]], count: int) -> str:
        """The texts of ``count`` rules whose slot values are ``values`` (a column per
        slot, as `Layout.run` reads them), joined by the separator (", " in JSON)."""
        if not self.renders:  # nft text of a rule without values: the same line n times
            return self.sep.join(repeat(self.statics[0], count))
        cols: list[Any] = [repeat(self.statics[0])]
        for (slot, fn), static in zip(self.renders, self.statics[1:], strict=True):
            cols.append(fn(values[slot]))
            cols.append(repeat(static))
        cols[-1] = repeat(self.statics[-1] + self.sep)
        # repeat() columns are endless: zip stops with the value columns
        text = "".join(chain.from_iterable(zip(*cols, strict=False)))
        return text[:-len(self.sep)]


class RuleTexts:
    """Collects the rules of GETRULE dump rounds as JSON text, by chain.

    ``views`` are the sets of each (family, table) with their elements, as the
    rule decoder needs them.  After every round is fed, ``texts`` maps
    (family, table, chain) to the rules' texts in dump order, in pieces of
    one or more rules joined by ", " (join the pieces with ", ")."""

    def __init__(self, views: dict[tuple[str, str], dict[str, SetView]],
                 style: str = "json") -> None:
        self.views = views
        # "json": libnftables JSON rule objects joined by ", "; "nft": nft text
        # lines (textfmt.rule_text), joined by a newline and the chain's indent
        self.style = style
        self.sep = ", " if style == "json" else NFT_SEP
        self.shapes = RuleShapes()
        self.templates: list[_TextShape] = []
        self.by_length: dict[int, list[_TextShape]] = {}  # the templates by message length
        self.last: _TextShape | None = None
        self.texts: dict[tuple[str, str, str], list[str]] = {}
        self.untemplated: set[Any] = set()  # shapes whose template failed its own rule
        self.made: dict[Any, int] = {}  # templates made of each shape
        self.printed: dict[Any, int] = {}  # rules printed by each shape's templates

        self.general = 0  # rules decoded one by one
        self.rules = 0

    def restart(self) -> None:
        """Forget the rules taken so far (the dump starts over); templates stay."""
        self.texts = {}
        self.general = self.rules = 0

    def feed(self, dgram: memoryview | bytes) -> None:
        """Take one dump round (a datagram of NEWRULE messages, without NLMSG_DONE)."""
        data = dgram  # matched in place: done before the next round is received
        pos, n = 0, len(data)
        while pos + 16 <= n:
            ln = _U32.unpack_from(data, pos)[0]
            if ln < NLMSG_HDRLEN:
                break
            size = (ln + 3) & ~3
            count = 0
            values: list[tuple[bytes, ...]] = []
            sh = self.last
            if sh is not None and sh.layout.length == size:
                count, values = sh.layout.run(data, pos)
            if not count:
                for sh in self.by_length.get(size, ()):
                    if sh is not self.last:
                        count, values = sh.layout.run(data, pos)
                        if count:
                            self.last = sh
                            break
            if count:
                assert sh is not None
                sh.hits += count
                self.printed[sh.skey] = self.printed.get(sh.skey, 0) + count
                self.texts.setdefault(sh.key, []).append(sh.render(values, count))
                self.rules += count
                pos += count * size
                continue
            self._general(bytes(data[pos:pos + size]))
            pos += size

    def _general(self, msg: bytes) -> None:
        m = next(parse_messages(msg))
        if m.type != _NEWRULE:
            return
        fam = m.family
        a = attr_payloads(m.attrs)
        ln = NLMSG_HDRLEN + len(m.payload)
        ra = A["rule"]
        table = get_string(a[ra["table"]])
        views = self.views.get((FAMILY_NAME.get(fam, str(fam)), table), {})
        r = decode_rule(fam, a, views, self.shapes)
        text = json.dumps(rule_json(r)) if self.style == "json" else rule_text(r)
        self.texts.setdefault((r.family, r.table, r.chain), []).append(text)
        self.general += 1
        self.rules += 1
        if len(self.templates) >= _MAX_SHAPES:
            # Room is made only by templates that never printed a rule (a rule
            # with its own comment or anonymous set is a shape of one).
            unused = [k for k, old in enumerate(self.templates) if not old.hits]
            if not unused:
                return
            old = self.templates.pop(unused[0])
            self.by_length[old.layout.length].remove(old)
        sh = self._shape(msg, ln, r, views, text)
        if sh is not None:
            self.templates.append(sh)
            self.by_length.setdefault(sh.layout.length, []).append(sh)
            self.last = sh

    def _shape(self, msg: bytes, ln: int, r: Rule, views: dict[str, SetView],
               text: str) -> _TextShape | None:
        """A template from ``msg`` (decoded as ``r``, printed as ``text``), or None."""
        ra = A["rule"]
        where: dict[int, tuple[int, int]] = {t: (s, e) for t, s, e in iter_attr_spans(msg, _ATTRS_AT, ln)}
        if ra["handle"] not in where or ra["expressions"] not in where:
            return None
        xs, xe = where[ra["expressions"]]
        blob = msg[xs:xe]
        skey, cvalues = self.shapes.shape(r.family, blob, views)  # the decoder's shape of the rule
        if skey is None:
            return None
        spans = skey.spans
        if (skey, r.chain) in self.untemplated:
            return None  # a shape that gave no template before
        # Templates of a shape are made again only while they print more rules than
        # the ones they are made of (a rule that is a shape of its own, as one with a
        # prefix length of its own, costs no regex after a few).
        made = self.made[skey] = self.made.get(skey, 0) + 1
        if made > 4 and self.printed.get(skey, 0) < made:
            # its rules differ in more than the values a template patches: a template
            # would print no more than the rule it is made of
            self.untemplated.add((skey, r.chain))
            return None
        entry = skey.entry
        if not entry:
            return None
        ctx_pos, by_ctx = entry
        tpl = by_ctx.get(tuple(cvalues[i] for i in ctx_pos))
        if tpl is None:
            return None
        stmts, patches = tpl
        # The variable bytes of the message: the handle, the position (not printed)
        # and each compared value the template patches.
        holes: list[tuple[int, int, Any]] = [(where[ra["handle"]][0], 8, "handle")]
        if ra["position"] in where:
            holes.append((where[ra["position"]][0], 8, None))
        out = list(stmts)
        for k, (idx, vi, v, left) in enumerate(patches):
            s, e = spans[vi]
            holes.append((xs + s, e - s, (k, v)))
            m = out[idx]["match"]
            out[idx] = {"match": {"op": m["op"], "left": left, "right": _marker(k)}}
        # Counter values differ from rule to rule in a live ruleset: slots too.
        counted = [i for i, st in enumerate(out) if type(st.get("counter")) is dict]
        cspans = _counter_spans(blob)
        nmarks = len(patches)
        if counted and len(cspans) == len(counted):
            for i, (pk, by) in zip(counted, cspans, strict=True):
                if out[i]["counter"] != {"packets": int.from_bytes(blob[pk:pk + 8], "big"),
                                         "bytes": int.from_bytes(blob[by:by + 8], "big")}:
                    return None
                out[i] = {"counter": {"packets": _marker(nmarks), "bytes": _marker(nmarks + 1)}}
                holes.append((xs + pk, 8, (nmarks, None)))
                holes.append((xs + by, 8, (nmarks + 1, None)))
                nmarks += 2
        holes.sort(key=lambda h: h[0])
        layout = rule_layout(msg, [(off, size) for off, size, _what in holes])
        if layout is None:
            return None
        group_of: dict[Any, int] = {}  # a value's slot in the layout
        for slot, (_off, _size, what) in enumerate(holes):
            if what is not None:
                group_of[what if what == "handle" else what[0]] = slot
        # The text: the rule printed with markers, cut at each marker.
        rr = Rule(r.family, r.table, r.chain, out, r.comment, handle=-1)
        json_style = self.style == "json"
        if json_style:
            marked = json.dumps(rule_json(rr)).replace(
                '"handle": -1', '"handle": ' + json.dumps(_marker(-1)), 1)
        else:
            marked = rule_text(rr)  # nft's text lists no handle
        statics: list[str] = []
        renders: list[tuple[int, Any]] = []
        # a marker as JSON prints it, or (nft text) as it is
        cut = re.compile("(" + "|".join(f"{re.escape(json.dumps(_marker(k)))}|{re.escape(_marker(k))}"
                                        for k in range(-1, nmarks)) + ")")
        pieces = cut.split(marked)
        if len(pieces) != 2 * (nmarks + json_style) + 1:
            return None
        sizes = {k: spans[vi][1] - spans[vi][0] for k, (_i, vi, _v, _l) in enumerate(patches)}
        values = {k: v for k, (_i, _vi, v, _l) in enumerate(patches)}
        lefts = {k: left for k, (_i, _vi, _v, left) in enumerate(patches)}
        statics.append(pieces[0])
        for marker_text, static in zip(pieces[1::2], pieces[2::2], strict=True):
            raw = marker_text if marker_text[:1] == "\x00" else json.loads(marker_text)
            k = int(raw.strip("\x00").split(":")[1])
            if k == -1:
                renders.append((group_of["handle"], _handles))
            elif k >= len(patches):  # a counter's packets or bytes
                renders.append((group_of[k], _handles))
            else:
                fn, quoted = _renderer(values[k], sizes[k], None if json_style else lefts[k])
                if quoted and json_style:
                    statics[-1] += '"'
                    static = '"' + static
                renders.append((group_of[k], fn))
            statics.append(static)
        sh = _TextShape(layout, (r.family, r.table, r.chain), statics, renders, self.sep)
        sh.skey = skey
        count, own = layout.run(msg, 0)
        if count != 1 or sh.render(own, 1) != text:
            self.untemplated.add((skey, r.chain))
            return None  # the template does not reproduce its own rule: never use it
        return sh
