"""Rule dumps at speed: a receiving thread, and JSON text per rule shape.

This module owns the hot half of listing big chains.  The kernel builds each
32 KiB chunk of a rule dump inside our recvmsg (re-walking the chain from its
head every time), so a helper thread receives while the main thread decodes
the previous chunk (`Datagrams`).  Rules whose expression bytes differ only in
compared values and counter values share a shape; per shape the general
decoder (RuleDecoder) runs once and its own output, passed through json.dumps
with placeholders, becomes a text template with value slots (`RuleTexts`).
The slots are rendered by the decoder's own value function, so the text is the
one `json.dumps(rule_json(rule))` gives for the slowly decoded rule.  This
module must not know statement semantics: it only moves bytes into slots.
"""

from __future__ import annotations

import json
import queue
import re
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from nfkit.errors import DumpInterrupted, NetlinkError
from nfkit.netlink.consts import (
    NFNL_SUBSYS_NFTABLES,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    nfnl_msg_type,
)
from nfkit.netlink.specs.nftables import MSG
from nfkit.nftables import nla

if TYPE_CHECKING:
    from nfkit.nftables.exprs import SetView

# Light on purpose: a command starts its rule dump before it imports the decoder.
# The family numbers of wire.FAMILY_NUM (tests check they agree).
FAMILY_NUM = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}
NEWRULE = nfnl_msg_type(NFNL_SUBSYS_NFTABLES, MSG["newrule"])

_HDR = struct.Struct("=IHHI")  # len, type, flags, seq (pid not needed)
_NLA = struct.Struct("=HH")
_BE64 = struct.Struct(">Q")
_ERRNO = struct.Struct("=i")
_MAX_RESTARTS = 10
_inet_ntop = socket.inet_ntop
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_SLOT = "@@nfkit-slot-%d@@"
_SLOT_RE = re.compile(r'"@@nfkit-slot-(\d+)@@"')
# Shapes per (family, table, chain, length) before giving up on templates there
# (a comment or a stateful value that differs in every rule).
_MAX_SHAPES = 16
_CTX_LEFTS = [{"meta": {"key": "l4proto"}}, {"meta": {"key": "nfproto"}},
              {"meta": {"key": "protocol"}}, {"meta": {"key": "iiftype"}},
              {"payload": {"protocol": "ether", "field": "type"}},
              {"payload": {"protocol": "ip", "field": "protocol"}},
              {"payload": {"protocol": "ip6", "field": "nexthdr"}}]


# ---- receiving ------------------------------------------------------------------

class Datagrams:
    """The datagrams of one dump, received by a helper thread.

    Iterate to get each datagram as bytes, in order; the thread stops after
    the datagram holding NLMSG_DONE or NLMSG_ERROR for ``seq``.  Receive
    errors (NetlinkError, EventsLost) are raised in the iterating thread."""

    def __init__(self, sock: Any, request: bytes, seq: int) -> None:
        self.sock = sock
        self.seq = seq
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        sock.send(request)
        self.thread = threading.Thread(target=self._receive, name="nfkit-dump", daemon=True)
        # The receiver must get the interpreter back soon after each recvmsg returns,
        # or the kernel idles while the decoder holds it for a whole switch interval.
        self._old_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0002)
        self.thread.start()

    def _receive(self) -> None:
        sock, q, seq = self.sock, self.q, self.seq
        unpack = _HDR.unpack_from
        try:
            while True:
                buf = bytearray(65536)
                n = sock.recv_into(buf)
                data = bytes(memoryview(buf)[:n])
                q.put(data)
                off = 0
                while off + 16 <= n:
                    ln, typ, _fl, mseq = unpack(data, off)
                    if mseq == seq and typ in (NLMSG_DONE, NLMSG_ERROR):
                        return
                    if ln < 16:
                        break
                    off += (ln + 3) & ~3
        except BaseException as exc:  # handed to the consumer
            q.put(exc)
        finally:
            q.put(None)

    def __iter__(self) -> Iterator[bytes]:
        try:
            while True:
                item = self.q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            sys.setswitchinterval(self._old_interval)

    def close(self) -> None:
        """Wait for the receiver (it ends at NLMSG_DONE)."""
        sys.setswitchinterval(self._old_interval)
        self.thread.join()


def end_of_dump(data: bytes, off: int, ln: int, typ: int, what: str) -> None:
    """Raise for an NLMSG_ERROR, or an error code in NLMSG_DONE."""
    if typ == NLMSG_DONE:
        if ln >= 20:
            err = -_ERRNO.unpack_from(data, off + 16)[0]
            if err > 0:
                raise NetlinkError(err, what=what)
        return
    err = -_ERRNO.unpack_from(data, off + 16)[0]
    if err > 0:
        raise NetlinkError(err, what=what)


# ---- shapes ---------------------------------------------------------------------

def expr_slots(blob: bytes) -> tuple[list[tuple[int, int]], list[int]]:
    """Spans (start, end) in an NFTA_RULE_EXPRESSIONS payload of cmp values and
    counter values, and per span its kind (0 cmp, 1 counter); top level only."""
    spans: list[tuple[int, int]] = []
    kinds: list[int] = []
    for _t, s, e in nla.walk(blob):
        name = b""
        for t2, s2, e2 in nla.walk(blob, s, e):
            if t2 == 1:
                name = blob[s2:e2].split(b"\0", 1)[0]
            elif t2 == 2 and name == b"cmp":
                for t3, s3, e3 in nla.walk(blob, s2, e2):
                    if t3 == 3:  # NFTA_CMP_DATA -> NFTA_DATA_VALUE
                        for t4, s4, e4 in nla.walk(blob, s3, e3):
                            if t4 == 1:
                                spans.append((s4, e4))
                                kinds.append(0)
            elif t2 == 2 and name == b"counter":
                found = {t3: (s3, e3) for t3, s3, e3 in nla.walk(blob, s2, e2)}
                if 1 in found and 2 in found and all(e3 - s3 == 8 for s3, e3 in found.values()):
                    # bytes then packets, in the decoder's output order (packets, bytes)
                    spans.append(found[2])
                    spans.append(found[1])
                    kinds += [1, 1]
    return spans, kinds


def _getter(slices: list[slice]) -> Callable[[bytes], tuple[bytes, ...]]:
    """A function giving the pieces of a message at ``slices``, always as a tuple."""
    if not slices:
        return lambda b: ()
    if len(slices) == 1:
        only = slices[0]
        return lambda b: (b[only],)
    return itemgetter(*slices)


class _Shape:
    __slots__ = ("statics", "static", "values", "pieces", "render", "checks", "spans")

    def __init__(self, statics: Any, static: Any, values: Any, pieces: list[str],
                 render: list[Callable[[bytes], str]], spans: list[tuple[int, int]]) -> None:
        self.spans = spans  # value slots in the expressions, in text order
        self.statics = statics
        self.static = static
        self.values = values
        self.pieces = pieces
        self.render = render
        self.checks = 2  # the next uses are also decoded slowly and compared


def _cmp_renderer(dec: Any, v: Any) -> Callable[[bytes], str]:
    """The JSON text of a compared value, as ``json.dumps(dec._value(v, raw))``."""
    if not getattr(v, "hton", False) and v.imm != b"shifted" and len(v.types) == 1:
        # The common plain cases, the same values _value gives, without its detours.
        dt = v.types[0]
        if dt.kind == "ipv4" and dt.size == 4:
            return _ipv4_text
        if dt.kind == "ipv6" and dt.size == 16:
            return _ipv6_text
        if dt.kind == "int" and not dt.print_symbols:
            return _be_int_text if dt.big_endian else _le_int_text
    memo: dict[bytes, str] = {}
    value = dec._value
    dumps = json.dumps

    def render(raw: bytes) -> str:
        t = memo.get(raw)
        if t is None:
            t = dumps(value(v, raw))
            if len(memo) < 4096:
                memo[raw] = t
        return t
    return render


class _Message:
    """A whole NEWRULE message layout (no comment): statics, handle and value slots."""

    __slots__ = ("statics", "static", "values", "pieces", "render", "where", "head")

    def __init__(self, msg: bytes, hs: int, ps: int, es: int, sh: _Shape,
                 where: tuple[str, str, str], head: str) -> None:
        slots = [(hs, hs + 8)] + [(es + s, es + e) for s, e in sh.spans]
        holes = sorted(slots + ([(ps, ps + 8)] if ps >= 0 else []))
        gaps = []
        pos = 20  # headers: length and family are the lookup key, type/flags/seq checked
        for s, e in holes:
            gaps.append(slice(pos, s))
            pos = e
        gaps.append(slice(pos, len(msg)))
        self.statics = _getter(gaps)
        self.static = self.statics(msg)
        self.values = _getter([slice(s, e) for s, e in slots])
        self.pieces = sh.pieces
        self.render = sh.render
        self.where = where
        self.head = head


def _ipv4_text(raw: bytes) -> str:
    if len(raw) != 4:
        return json.dumps(_inet_ntop(_AF_INET, raw.ljust(4, b"\0")[:4]))
    return f'"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"'


def _ipv6_text(raw: bytes) -> str:
    return '"' + _inet_ntop(_AF_INET6, raw.ljust(16, b"\0")[:16]) + '"'


def _be_int_text(raw: bytes) -> str:
    return str(int.from_bytes(raw, "big"))


def _le_int_text(raw: bytes) -> str:
    return str(int.from_bytes(raw, "little"))


def _int_text(raw: bytes) -> str:
    return str(_BE64.unpack(raw)[0])


class RuleTexts:
    """Rule messages of a dump -> JSON text, as `json.dumps(rule_json(rule))` gives it.

    ``views`` maps (family name, table) to the table's set views (the decoder
    needs them for lookups and anonymous sets)."""

    def __init__(self, views: dict[tuple[str, str], dict[str, SetView]]) -> None:
        self.views = views
        self.shapes: dict[Any, list[_Shape] | None] = {}
        self.heads: dict[Any, tuple[str, str, str, str]] = {}
        self.messages: dict[int, list[_Message]] = {}
        self.slow = 0
        self.fast = 0

    def head(self, fam: int, tb: bytes, cb: bytes) -> tuple[str, str, str, str]:
        """(family, table, chain, text up to the handle value) for a rule's place."""
        key = (fam, tb, cb)
        h = self.heads.get(key)
        if h is None:
            from nfkit.nftables.wire import FAMILY_NAME

            f = FAMILY_NAME.get(fam, str(fam))
            t = nla.get_str(tb)
            c = nla.get_str(cb)
            text = (f'{{"rule": {{"family": {json.dumps(f)}, "table": {json.dumps(t)}, '
                    f'"chain": {json.dumps(c)}, "handle": ')
            h = self.heads[key] = (f, t, c, text)
        return h

    def text(self, data: bytes, off: int, ln: int) -> tuple[tuple[str, str, str], str]:
        """((family, table, chain), JSON text) of the NEWRULE message at ``off``."""
        cands = self.messages.get(ln << 8 | data[off + 16])
        if cands is not None:
            msg = data[off:off + ln]
            for mt in cands:
                if mt.statics(msg) == mt.static:
                    vals = mt.values(msg)
                    pieces = mt.pieces
                    parts = [mt.head, str(int.from_bytes(vals[0], "big")), pieces[0]]
                    i = 1
                    for r in mt.render:
                        parts.append(r(vals[i]))
                        parts.append(pieces[i])
                        i += 1
                    self.fast += 1
                    return mt.where, "".join(parts)
        end = off + ln
        p = off + 20
        ts = te = cs = ce = hs = ps = es = ee = us = ue = -1
        unpack = _NLA.unpack_from
        while p + 4 <= end:
            alen, at = unpack(data, p)
            if alen < 4:
                break
            at &= 0x3FFF
            if at == 1:
                ts, te = p + 4, p + alen
            elif at == 2:
                cs, ce = p + 4, p + alen
            elif at == 3:
                hs = p + 4
            elif at == 6:
                ps = p + 4
            elif at == 4:
                es, ee = p + 4, p + alen
            elif at == 7:
                us, ue = p + 4, p + alen
            p += (alen + 3) & ~3
        fam = data[off + 16]
        f, t, c, head = self.head(fam, data[ts:te], data[cs:ce])
        where = (f, t, c)
        if hs < 0 or es < 0:
            return where, self._slow(data, off, ln)
        handle = str(_BE64.unpack_from(data, hs)[0])
        if us >= 0:
            comment = self._comment(data[us:ue])
            if comment is not None:
                handle += ', "comment": ' + json.dumps(comment)
        blob = data[es:ee]
        key = (where, len(blob))
        shapes = self.shapes.get(key, ())
        if shapes is None:
            return where, self._slow(data, off, ln)
        for sh in shapes:
            if sh.statics(blob) == sh.static:
                if sh.checks:
                    sh.checks -= 1
                    slow = self._slow(data, off, ln)
                    fast = self._render(sh, blob, head, handle)
                    if fast != slow:
                        self.shapes[key] = None
                    return where, slow
                self.fast += 1
                if us < 0:
                    mkey = ln << 8 | fam
                    lst = self.messages.setdefault(mkey, [])
                    if len(lst) < _MAX_SHAPES:
                        lst.append(_Message(data[off:end], hs - off, ps - off if ps >= 0 else -1,
                                            es - off, sh, where, head))
                return where, self._render(sh, blob, head, handle)
        return where, self._learn(key, data, off, ln, blob, head, handle)

    @staticmethod
    def _render(sh: _Shape, blob: bytes, head: str, handle: str) -> str:
        pieces = sh.pieces
        parts = [head, handle, pieces[0]]
        i = 1
        for r, raw in zip(sh.render, sh.values(blob), strict=True):
            parts.append(r(raw))
            parts.append(pieces[i])
            i += 1
        return "".join(parts)

    @staticmethod
    def _comment(ud: bytes) -> str | None:
        pos = 0
        comment = None
        while pos + 2 <= len(ud):
            t, ln = ud[pos], ud[pos + 1]
            if t == 0:
                comment = ud[pos + 2:pos + 2 + ln].split(b"\0", 1)[0].decode()
            pos += 2 + ln
        return comment

    def _decode(self, data: bytes, off: int, ln: int) -> Any:
        from nfkit.nftables.wire import FAMILY_NAME, decode_rule

        fam = data[off + 16]
        a = nla.attrs(data, off + 20, off + ln)
        table = nla.get_str(a[1]) if 1 in a else ""
        return decode_rule(fam, a, self.views.get((FAMILY_NAME.get(fam, str(fam)), table), {}))

    def _slow(self, data: bytes, off: int, ln: int) -> str:
        from nfkit.nftables.jsonfmt import rule_json

        self.slow += 1
        return json.dumps(rule_json(self._decode(data, off, ln)))

    def _learn(self, key: Any, data: bytes, off: int, ln: int, blob: bytes, head: str,
               handle: str) -> str:
        """Decode a rule the general way; keep its shape as a template when it is one."""
        from nfkit.nftables.exprs import RuleDecoder
        from nfkit.nftables.jsonfmt import rule_json

        self.slow += 1
        shapes = self.shapes.setdefault(key, [])
        r = self._decode(data, off, ln)
        text = json.dumps(rule_json(r))
        if shapes is None or len(shapes) >= _MAX_SHAPES or b"__set" in blob or b"__map" in blob:
            if shapes is not None and len(shapes) >= _MAX_SHAPES:
                self.shapes[key] = None
            return text
        try:
            sh = self._shape(r, blob, head, handle, text, RuleDecoder)
        except (KeyError, IndexError, ValueError, TypeError):
            sh = None
        if sh is not None:
            shapes.append(sh)
        return text

    def _shape(self, r: Any, blob: bytes, head: str, handle: str, text: str,
               decoder: Any) -> _Shape | None:
        from nfkit.nftables.exprs import parse_exprs

        spans, kinds = expr_slots(blob)
        dec = decoder(r.family, self.views.get((r.family, r.table), {}))
        stmts = dec.decode(parse_exprs(blob))
        if dec.merged or len(dec.cmp_log) != dec.cmp_seen:
            return None
        cmp_spans = [sp for sp, k in zip(spans, kinds, strict=True) if k == 0]
        if len(cmp_spans) != dec.cmp_seen:
            return None
        kept = [i for i in range(len(dec.out)) if i not in dec.drop]
        where = {old: new for new, old in enumerate(kept)}
        slots: list[tuple[int, int]] = []
        render: list[Callable[[bytes], str]] = []
        marks: list[tuple[Any, str, Any]] = []  # (dict, key, value) to replace
        for i, (idx, v, left) in enumerate(dec.cmp_log):
            if left in _CTX_LEFTS or idx not in where:
                continue  # context value: part of the shape
            m = stmts[where[idx]].get("match")
            s, e = cmp_spans[i]
            if m is None or m["right"] != dec._value(v, blob[s:e]):
                return None
            marks.append((m, "right", m["right"]))
            slots.append((s, e))
            render.append(_cmp_renderer(dec, v))
        counters = [st["counter"] for st in stmts if "counter" in st
                    and isinstance(st["counter"], dict) and set(st["counter"]) == {"packets", "bytes"}]
        cspans = [sp for sp, k in zip(spans, kinds, strict=True) if k == 1]
        if len(cspans) == 2 * len(counters):
            for j, cd in enumerate(counters):
                for k, name in enumerate(("packets", "bytes")):
                    s, e = cspans[2 * j + k]
                    if cd[name] != _BE64.unpack(blob[s:e])[0]:
                        return None
                    marks.append((cd, name, cd[name]))
                    slots.append((s, e))
                    render.append(_int_text)
        if not slots:
            pieces = [json.dumps(stmts)]
            order: list[int] = []
        else:
            for n, (d, dk, _val) in enumerate(marks):
                d[dk] = _SLOT % n
            body = json.dumps(stmts)
            for d, dk, val in marks:
                d[dk] = val
            order = [int(mm.group(1)) for mm in _SLOT_RE.finditer(body)]
            if sorted(order) != list(range(len(marks))):
                return None
            pieces = _SLOT_RE.split(body)[::2]
        # slots in text order
        slots = [slots[i] for i in order]
        render = [render[i] for i in order]
        tail = "}}"
        pieces = [', "expr": ' + pieces[0]] + pieces[1:]
        pieces[-1] += tail
        ordered = sorted(slots)
        if any(ordered[i][1] > ordered[i + 1][0] for i in range(len(ordered) - 1)):
            return None
        gaps = []
        pos = 0
        for s, e in ordered:
            gaps.append(slice(pos, s))
            pos = e
        gaps.append(slice(pos, len(blob)))
        statics = _getter(gaps)
        values = _getter([slice(s, e) for s, e in slots])
        sh = _Shape(statics, statics(blob), values, pieces, render, slots)
        if self._render(sh, blob, head, handle) != text:
            return None
        return sh


class RuleDump:
    """A GETRULE dump on its own socket, received from the moment it is created.

    Create it first thing (it imports nothing heavy), do other work, then
    iterate `datagrams()`.  ``family`` 0 means every family; ``table`` and
    ``chain`` filter in the kernel (both need a family)."""

    def __init__(self, family: str | None = None, table: str | None = None,
                 chain: str | None = None, sock: Any | None = None) -> None:
        from nfkit.netlink.socket import NetlinkSocket

        fam = FAMILY_NUM[family] if family else 0
        attrs = b""
        if table is not None and fam:
            attrs = nla.string(1, table)  # NFTA_RULE_TABLE
            if chain is not None:
                attrs += nla.string(2, chain)  # NFTA_RULE_CHAIN
        self.family = fam
        self.attrs = attrs
        self.own = sock is None
        self.sock = sock or NetlinkSocket()
        self.current: Datagrams | None = None
        self.restart()

    def restart(self) -> None:
        """Start (again) from the first rule, on a fresh sequence number."""
        if self.current is not None:
            self.current.close()
        request, self.seq = dump_request("getrule", self.family, self.attrs)
        self.current = Datagrams(self.sock, request, self.seq)

    def datagrams(self) -> Iterator[bytes]:
        assert self.current is not None
        return iter(self.current)

    def close(self) -> None:
        """Wait for the receiver; close the socket if the dump opened it."""
        if self.current is not None:
            self.current.close()
        if self.own:
            self.sock.close()


def rule_texts(dump: RuleDump, texts: RuleTexts,
               keep: Callable[[tuple[str, str, str]], bool], what: str = "rule dump"
               ) -> dict[tuple[str, str, str], list[str]]:
    """Read ``dump`` to its end; the JSON text of each kept rule, per (family, table, chain).

    Restarts when the kernel marks the dump interrupted (up to 10 times), then
    raises DumpInterrupted; NetlinkError when the kernel refuses the dump."""
    unpack = _HDR.unpack_from
    for _attempt in range(_MAX_RESTARTS):
        out: dict[tuple[str, str, str], list[str]] = {}
        interrupted = False
        seq = dump.seq
        for data in dump.datagrams():
            off = 0
            n = len(data)
            while off + 16 <= n:
                ln, typ, flags, mseq = unpack(data, off)
                if ln < 16:
                    break
                if mseq == seq:
                    if flags & NLM_F_DUMP_INTR:
                        interrupted = True
                    if typ == NEWRULE:
                        where, text = texts.text(data, off, ln)
                        if keep(where):
                            lst = out.get(where)
                            if lst is None:
                                lst = out[where] = []
                            lst.append(text)
                    elif typ in (NLMSG_DONE, NLMSG_ERROR):
                        end_of_dump(data, off, ln, typ, what)
                off += (ln + 3) & ~3
        if not interrupted:
            return out
        dump.restart()
    raise DumpInterrupted(f"{what}: the ruleset kept changing during the dump")


def find_rule(dump: RuleDump, needles: list[bytes], equal: Callable[[bytes], bool],
              drain: bool = True, what: str = "rule dump") -> bool:
    """True if ``equal`` holds for a rule message of ``dump``.

    ``equal`` sees only messages holding every needle (and datagrams are
    searched for them before they are split).  Reads the dump to its end unless
    ``drain`` is False (then returns at the first hit, the dump left running);
    restarts an interrupted dump; raises as `rule_texts`."""
    unpack = _HDR.unpack_from
    for _attempt in range(_MAX_RESTARTS):
        hit = False
        interrupted = False
        seq = dump.seq
        for data in dump.datagrams():
            scan = not hit and all(nd in data for nd in needles)
            off = 0
            n = len(data)
            while off + 16 <= n:
                ln, typ, flags, mseq = unpack(data, off)
                if ln < 16:
                    break
                if mseq == seq:
                    if flags & NLM_F_DUMP_INTR:
                        interrupted = True
                    if typ == NEWRULE:
                        if scan:
                            msg = data[off:off + ln]
                            if all(nd in msg for nd in needles) and equal(msg):
                                hit = True
                                scan = False
                                if not drain and not interrupted:
                                    return True
                    elif typ in (NLMSG_DONE, NLMSG_ERROR):
                        end_of_dump(data, off, ln, typ, what)
                off += (ln + 3) & ~3
        if not interrupted:
            return hit
        dump.restart()
    raise DumpInterrupted(f"{what}: the ruleset kept changing during the dump")


def dump_request(msg: str, family: int, attrs: bytes = b"") -> tuple[bytes, int]:
    """A GET* dump request and its sequence number."""
    from nfkit.netlink.codec import MessageWriter

    w = MessageWriter()
    seq = w.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, MSG[msg]), NLM_F_REQUEST | NLM_F_DUMP,
                  family=family)
    if attrs:
        w.raw(attrs)
    w.end()
    return bytes(w.buffer), seq
