"""Reading big libnftables JSON rule files as text templates.

This module owns the fast path of `nfkit rules load|check`.  A file of tens of
thousands of rules is mostly a few rule *shapes*: the same statements with
other addresses and ports.  The first rule of a shape is read as JSON by the
general reader (jsonfmt); its exact text becomes a template, a regular
expression whose only variable parts are the compared values ("right" of each
match).  Later rules of that shape are matched as text, and their values go
to the encoder in columns (`messages.Encoder.rule_run`), which patches them into
the message encoded once for the shape.  Anything else, and any rule whose
text differs from every template in more than those values, is read by the
general reader, so the commands mean the same either way; a document this
reader does not follow is handed back whole to the general reader, which also
reports syntax errors.
"""

from __future__ import annotations

import functools
import json
import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from nfkit.nftables.compiler import rule_shape
from nfkit.nftables.jsonfmt import Command, item_command, load_json, no_gc, order_commands
from nfkit.nftables.model import FAMILIES, Rule

_HEAD = re.compile(r'\s*\{\s*"nftables"\s*:\s*\[\s*')
_END = re.compile(r'\]\s*\}\s*\Z')
_SEP = re.compile(r'\s*(?:,\s*|(?=\]))')
# After a templated rule: its separator, or the end of the array ahead.
_TAIL = r'(?:\s*,\s*|(?=\s*\]))'
_TOKEN = re.compile(r'(\s+)|("(?:[^"\\]|\\.)*")|(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null)'
                    r'|([{}\[\]:,])')
_INT = re.compile(r'-?(?:0|[1-9]\d*)\Z')
# JSON strings hold no raw control characters; a row that does is left to the
# general reader (which reports it).
_SLOT_STR = r'"([^"\\@\x00-\x1f][^"\\\x00-\x1f]*)"'
_SLOT_INT = r'(-?(?:0|[1-9]\d*))'
_HANDLE = r'(?:0|[1-9]\d*)'
_BODY_KEYS = {"family", "table", "chain", "expr"}
_MAX_SHAPES = 64


def consecutive(pattern: re.Pattern[Any], data: Any, pos: int, endpos: int | None = None
                ) -> list[re.Match[Any]]:
    """Matches of ``pattern`` one right after another from ``pos`` (each where the
    previous ended), found by the regex scanner without Python per match."""
    sc = pattern.scanner(data, pos) if endpos is None else pattern.scanner(  # type: ignore[attr-defined]
        data, pos, endpos)
    return list(iter(sc.match, None))


@dataclass(slots=True)
class RuleRun:
    """Consecutive rules of one shape read from a file (a command's object).

    ``sample`` is the first rule; ``matches`` holds each rule's text match (its
    groups are the compared values, of ``kinds`` int or str); ``first_item`` is
    the index of the first in the "nftables" array."""

    sample: Rule
    key: Any
    kinds: tuple[type, ...]
    text: str
    first_item: int
    matches: list[re.Match[str]] = field(default_factory=list)
    # The far half of a split scan: its value columns already encoded (one bytes
    # per slot) and each rule's offset in ``text``, instead of ``matches``.
    packed: list[bytes] | None = None
    row_starts: array[int] | None = None
    end: int = -1  # where the far half's text ends
    near_packed: list[bytes] | None = None  # the near half's columns, for its own run

    def column(self, j: int) -> list[str]:
        """Compared value ``j`` of every rule, as text."""
        return list(map(re.Match.group, self.matches, repeat(j + 1)))

    # What the rest of the transaction layer asks of a rule command's object.
    @property
    def family(self) -> str:
        return self.sample.family

    @property
    def table(self) -> str:
        return self.sample.table

    @property
    def chain(self) -> str:
        return self.sample.chain

    @property
    def expr(self) -> list[dict[str, Any]]:
        return self.sample.expr

    def __len__(self) -> int:
        return len(self.row_starts) if self.row_starts is not None else len(self.matches)

    def rule(self, k: int) -> Rule:
        """Rule ``k`` of the run, read by the general reader (for errors and fallbacks)."""
        start = self.row_starts[k] if self.row_starts is not None else self.matches[k].start()
        obj, _end = json.JSONDecoder().raw_decode(self.text, start)
        c = item_command(self.first_item + k, obj)
        assert c is not None
        return c.obj  # type: ignore[no-any-return]

    def __str__(self) -> str:
        return str(self.rule(0))


class _Shape:
    """One text template: the compiled pattern and what its first rule was."""

    __slots__ = ("pattern", "key", "kinds", "listing", "sample", "hits", "prefix", "slots")

    def __init__(self, pattern: re.Pattern[str], key: Any, kinds: tuple[type, ...],
                 listing: bool, sample: Rule, prefix: str) -> None:
        self.pattern = pattern
        self.prefix = prefix  # the text before the first value: where a rule may start
        self.slots: Any = None  # the value encoders, compiled when a scan is split
        self.key = key
        self.kinds = kinds
        self.listing = listing
        self.sample = sample
        self.hits = 0


def _rule_body(obj: Any) -> tuple[dict[str, Any], bool] | None:
    """(rule body, listing form) of an item a template may describe, else None."""
    if type(obj) is not dict or len(obj) != 1:
        return None
    (key, body), = obj.items()
    listing = key == "rule"
    if not listing:
        if key != "add" or type(body) is not dict or len(body) != 1 or "rule" not in body:
            return None
        body = body["rule"]
    if type(body) is not dict or not _BODY_KEYS <= set(body):
        return None
    extra = set(body) - _BODY_KEYS
    if extra and (extra != {"handle"} or not listing or type(body["handle"]) is not int):
        return None
    if (body["family"] not in FAMILIES or type(body["table"]) is not str
            or type(body["chain"]) is not str or type(body["expr"]) is not list):
        return None
    return body, listing


def make_shape(obj: Any, text: str, start: int, end: int, sample: Rule) -> _Shape | None:
    """A template from item ``obj`` whose text is ``text[start:end]``, or None when
    the item is not a rule that one can describe (only its compared values vary)."""
    rb = _rule_body(obj)
    if rb is None:
        return None
    body, listing = rb
    shape = rule_shape(body["expr"])
    if shape is None:
        return None
    key, rights = shape
    kinds: list[type] = []
    for r in rights:
        if type(r) is int or (type(r) is str and r[:1] not in ("", "@")
                              and '"' not in r and "\\" not in r):
            kinds.append(type(r))
        else:
            return None
    parts: list[str] = []
    prefix_end = end
    pos = start
    cand: str | None = None  # a string that may be a key
    cur_key: str | None = None
    expect_value = False
    slot = 0
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None:
            return None
        ws, string, lit, punct = m.groups()
        tok = m.group(0)
        pos = m.end()
        if ws is not None:
            parts.append(re.escape(tok))
            continue
        if punct is not None:
            if punct == ":":
                if cand is None:
                    return None
                cur_key, cand, expect_value = json.loads(cand), None, True
            else:
                expect_value = False
                cand = None
            parts.append(re.escape(tok))
            continue
        if expect_value and cur_key == "right":
            if slot >= len(kinds):
                return None
            if (kinds[slot] is str) != (string is not None):
                return None
            if slot == 0:
                prefix_end = m.start()
            parts.append(_SLOT_STR if kinds[slot] is str else _SLOT_INT)
            slot += 1
        elif expect_value and cur_key == "handle" and lit is not None and _INT.match(tok):
            parts.append(_HANDLE)
        else:
            parts.append(re.escape(tok))
            if string is not None and not expect_value:
                cand = tok
        expect_value = False
    if slot != len(kinds):
        return None
    pattern = re.compile("".join(parts) + _TAIL)
    check = pattern.match(text, start)
    if check is None or check.end() < end:
        return None
    got = [int(v) if k is int else v for v, k in zip(check.groups(), kinds, strict=True)]
    if got != rights:
        return None
    return _Shape(pattern, key, tuple(kinds), listing, sample, text[start:prefix_end])


def load_json_runs(text: str | bytes, offload: Offload | None = None) -> list[Command]:
    """The commands of libnftables JSON text, as `jsonfmt.load_json` reads them, except that
    consecutive rules of one shape may come back as one command holding a `RuleRun`
    (read as text templates, for `run_commands`) instead of one `Rule` each.

    ``offload`` is the loader's offer of a second CPU: called with a function, it
    runs it elsewhere and returns a handle whose ``result()`` is what the function
    returned (None if it failed) and whose ``discard()`` abandons it; raising
    OSError declines.  With it, the far half of a long run (more than `SPLIT_MIN`
    of text left) is scanned there.  Raises InputError as load_json does."""
    if isinstance(text, str):
        with no_gc():
            cmds = scan(text, offload)
        if cmds is not None:
            return order_commands(cmds)
    return load_json(text)


def scan(text: str, offload: Offload | None = None) -> list[Command] | None:
    """The commands of a libnftables JSON document, rules of recurring shapes as
    `RuleRun`s; None when the document is not one this reader follows (then the
    general reader reads it, and reports its syntax errors).  ``offload``: see
    `load_json_runs`."""
    head = _HEAD.match(text)
    if head is None:
        return None
    pos = head.end()
    cmds: list[Command] = []
    shapes: list[_Shape] = []
    decode = json.JSONDecoder().raw_decode
    last: _Shape | None = None
    i = 0
    while True:
        # Rules of a known shape (most often the one just seen), as many as follow
        # each other: the scanner matches them one after another in C.
        ms: list[re.Match[str]] = []
        far: RuleRun | None = None
        if last is not None:
            ms, far = _rows(last, text, pos, i, offload)
        if not ms:
            for sh in shapes:
                if sh is not last:
                    ms, far = _rows(sh, text, pos, i, offload)
                    if ms:
                        last = sh
                        break
        if ms:
            assert last is not None
            last.hits += len(ms)
            run = _new_run(cmds, last, text, i)
            run.matches = ms
            pos = ms[-1].end()
            i += len(ms)
            if far is not None:
                run.packed, far.near_packed = far.near_packed, None
                cmds.append(Command("add", "rule", far, None, last.listing))
                pos = far.end
                i += len(far)
            continue
        if _END.match(text, pos):
            j = pos - 1
            while text[j].isspace():
                j -= 1
            if text[j] == ",":
                return None  # a trailing comma: let the general reader say where
            return cmds
        try:
            obj, end = decode(text, pos)
        except json.JSONDecodeError:
            return None
        sep = _SEP.match(text, end)
        if sep is None:
            return None
        c = item_command(i, obj)
        if c is not None and c.kind == "rule" and len(shapes) >= _MAX_SHAPES:
            # Room is made only by shapes that never recurred; with none, no new
            # shape is even made (its tokenizing would be wasted).
            unused = [k for k, old in enumerate(shapes) if old.hits <= 1]
            if unused:
                del shapes[unused[0]]
        new = make_shape(obj, text, pos, end, c.obj) \
            if c is not None and c.kind == "rule" and len(shapes) < _MAX_SHAPES else None
        if new is not None:
            shapes.append(new)
            last = new
            # Its own text is the first of the shape: the loop's next turn takes it
            # and every rule of the shape that follows.
            continue
        last = None
        if c is not None:
            cmds.append(c)
        pos = sep.end()
        i += 1


# A run is split between this process and the loader's offload when this much
# text is left (about 14,000 rules of 290 bytes).
SPLIT_MIN = 4 << 20
Offload = Callable[[Callable[[], Any]], Any]


def _rows(sh: _Shape, text: str, pos: int, i: int, offload: Offload | None
          ) -> tuple[list[re.Match[str]], RuleRun | None]:
    """The rules of shape ``sh`` that follow each other from ``pos``, as matches.

    With much text left and an ``offload`` from the loader, the far half of the
    run (from a rule start found by the shape's prefix) is scanned and encoded
    there, while this process scans the near half up to there; the far half is
    used only if the near half ends exactly where it begins (so it was a rule
    start), and comes back as a second, pre-encoded RuleRun."""
    if offload is None or len(text) - pos < SPLIT_MIN:
        return consecutive(sh.pattern, text, pos), None
    if sh.slots is None:
        from nfkit.nftables.compiler import RuleCompiler

        sh.slots = False
        tpl = RuleCompiler(sh.sample.family, sh.sample.table, [0], [0x10000]).rule_template(
            sh.key, sh.sample.expr)
        if tpl is not None:
            sh.slots = tpl[1]
    b = text.find(sh.prefix, pos + (len(text) - pos) // 2) if sh.slots else -1
    if b < 0 or not sh.prefix:
        return consecutive(sh.pattern, text, pos), None
    try:
        far = offload(functools.partial(_far_rows, sh, text, b))
    except OSError:  # no process to spare: one scan
        return consecutive(sh.pattern, text, pos), None
    ms = consecutive(sh.pattern, text, pos, b)
    if not ms or ms[-1].end() != b:
        far.discard()
        if not ms:
            ms = consecutive(sh.pattern, text, pos)
        return ms, None
    near = _encode_rows(sh, ms)  # while the far process does the same for its half
    got = far.result()
    if got is None:  # the far process could not do it all: scan on from here
        return ms + consecutive(sh.pattern, text, b), None
    end, packed, starts = got
    return ms, RuleRun(sh.sample, sh.key, sh.kinds, text, i + len(ms), packed=packed,
                       row_starts=starts, end=end, near_packed=near)


def _encode_rows(sh: _Shape, ms: list[re.Match[str]]) -> list[bytes] | None:
    """The value columns of rules ``ms`` encoded (one bytes per slot), or None when
    a value needs the general path."""
    from nfkit.nftables.messages import encode_columns

    cols = [list(map(re.Match.group, ms, repeat(j + 1))) for j in range(len(sh.kinds))]
    enc, bad = encode_columns(sh.slots, sh.kinds, cols)
    if bad:
        return None
    return [c if type(c) is bytes else b"".join(c) for c in enc]


def _far_rows(sh: _Shape, text: str, b: int) -> Any:
    """The far half of a split run (see `_rows`): (end offset, packed columns, rule
    offsets), or None when a value needs the general path (the near side then scans
    on, in order).  Runs wherever the loader's ``offload`` runs it."""
    ms = consecutive(sh.pattern, text, b)
    packed = _encode_rows(sh, ms) if ms else None
    if packed is None:
        return None
    return ms[-1].end(), packed, array("q", map(re.Match.start, ms))


def _new_run(cmds: list[Command], sh: _Shape, text: str, i: int) -> RuleRun:
    run = RuleRun(sh.sample, sh.key, sh.kinds, text, i)
    cmds.append(Command("add", "rule", run, None, sh.listing))
    return run
