"""Templates: value slots, recorded by the compiler as it emits them, turned into
statement templates, rule templates and the netlink core's Template and Layout.

The compiler records a `ValueSlot` (expression index, offset, width, operand)
when it writes a value; `cut` turns compiled expressions and the slots recorded
in them into `Chunks` (static bytes around `Slot`s, each with its encoder).  One
statement's chunks make a `StatementTemplate` (the compiler's cache: a statement
equal to one compiled before but in its value is its head, its value and its
tail); a rule's make a rule template.

A rule made only of payload matches against scalar values and constant
statements has a shape (`compiler.rule_shape`); the compiler records where it
wrote each value when it compiles the first rule of a shape (`ValueSlot`, as
`RuleCompiler.rule_template` returns them: static chunks around fixed-width
value slots).  This module owns turning those into one NEWRULE message with
zero values and the offset of every value in it, and the core's `Template`
over that message: every later rule of the shape is one copy with its
sequence number and values patched in.  The other way, `rule_layout` turns the
slots of a dumped rule (its handle, position, compared values and counters, as
the fast listing finds them) into the core's `Layout`: every later message equal
to it but in those slots is recognised and its values read by `struct`, a run
of them at a time.

It stands on the netlink core, the spec and the expressions; the compiler stands
on it.  It must not know the compiler, statements or batches beyond the writer
it appends to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from nfkit.netlink.codec import MessageWriter, Template
from nfkit.netlink.consts import (
    NFNL_SUBSYS_NFTABLES,
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    nfnl_msg_type,
)
from nfkit.netlink.shapes import Layout
from nfkit.netlink.specs.nftables import MSG
from nfkit.nftables.dumpreq import FAMILY_NUM
from nfkit.nftables.expressions import A

_NEWRULE = nfnl_msg_type(NFNL_SUBSYS_NFTABLES, MSG["newrule"])


@dataclass
class ValueSlot:
    """Where the compiler put a statement's value: expression ``index`` of the rule's
    list, ``width`` bytes at ``offset`` in it, encoded by ``op``'s datatype (the
    compiler's Operand).  Recorded when the expression is emitted (templates patch
    values there)."""

    index: int
    offset: int
    width: int
    op: Any


class Slot(NamedTuple):
    """A value slot of a template: ``width`` bytes, ``encode`` (value -> bytes; raises
    for a value it does not take, which the compiler's general encoder of ``operand``
    takes then)."""

    encode: Callable[[Any], bytes]
    width: int
    operand: Any


class Chunks(NamedTuple):
    """Compiled expressions with their value slots cut out: ``statics[k]`` comes before
    ``slots[k]``, the last static after the last slot."""

    statics: list[bytes]
    slots: list[Slot]


def cut(exprs: list[bytes], recorded: Sequence[ValueSlot],
        encoder: Callable[[Any], Callable[[Any], bytes]], base: int = 0) -> Chunks:
    """``exprs`` cut at the slots the compiler ``recorded`` as it emitted them (in
    emission order; their index less ``base`` is into ``exprs``); ``encoder`` gives a
    slot's encoder from its operand."""
    statics: list[bytes] = []
    slots: list[Slot] = []
    start, skip = 0, 0  # the next static begins ``skip`` bytes into exprs[start]
    for vs in recorded:
        i = vs.index - base
        if i == start:
            statics.append(exprs[i][skip: vs.offset])
        else:
            statics.append(b"".join([exprs[start][skip:], *exprs[start + 1: i],
                                     exprs[i][: vs.offset]]))
        slots.append(Slot(encoder(vs.op), vs.width, vs.op))
        start, skip = i, vs.offset + vs.width
    statics.append(b"".join([exprs[start][skip:], *exprs[start + 1:]]) if exprs else b"")
    return Chunks(statics, slots)


class StatementTemplate(NamedTuple):
    """One statement compiled once, for every later statement equal to it but in its
    value: ``head`` (its expressions up to the value), ``slot`` (None: a statement
    without a value, all in ``head``), ``tail`` after the value, and ``context`` (the
    compiler's protocol context after the statement)."""

    head: bytes
    slot: Slot | None
    tail: bytes
    context: Any

    @classmethod
    def of(cls, chunks: Chunks, context: Any = None) -> StatementTemplate:
        """The template of one statement's chunks (at most one slot)."""
        if not chunks.slots:
            return cls(b"".join(chunks.statics), None, b"", context)
        (slot,) = chunks.slots
        head, tail = chunks.statics
        return cls(head, slot, tail, context)


class RuleTemplate:
    """NEWRULE (add, appended) of one rule shape in one chain.

    ``message`` is the whole message with every value zero, ``offsets`` and
    ``widths`` where the values go, ``slots`` the compiler's (encoder, width,
    operand) of each, and ``template`` the core's Template over them."""

    __slots__ = ("message", "offsets", "widths", "slots", "encoders", "template")

    def __init__(self, family: str, table: str, chain: str, statics: list[bytes],
                 slots: Sequence[tuple[Callable[[Any], bytes], int, Any]]) -> None:
        a = A["rule"]
        w = MessageWriter()
        w.begin(_NEWRULE, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND, family=FAMILY_NUM[family],
                seq=0)
        w.string(a["table"], table)
        w.string(a["chain"], chain)
        nest = w.nest_start(a["expressions"])
        w.raw(statics[0])
        offsets = []
        for (_enc, width, _op), static in zip(slots, statics[1:], strict=True):
            offsets.append(w.here())
            w.raw(bytes(width) + static)
        w.nest_end(nest)
        w.end()
        self.message = bytes(w.buffer)
        self.offsets = offsets
        self.widths = [width for _enc, width, _op in slots]
        self.slots = list(slots)
        self.encoders = [enc for enc, _width, _op in slots]
        self.template = Template(self.message, [(off, f"{width}s")
                                                for off, width in zip(offsets, self.widths,
                                                                      strict=True)])

    def values(self, rights: list[Any]) -> list[bytes] | None:
        """The encoded values of one rule of the shape, or None when one does not fit
        its slot (a set reference, a name, a bad value: the general path's work)."""
        out = []
        for enc, width, right in zip(self.encoders, self.widths, rights, strict=False):
            try:
                v = enc(right)
            except Exception:
                return None
            if v is None or len(v) != width:
                return None
            out.append(v)
        return out

    def emit(self, w: MessageWriter, values: list[bytes]) -> int:
        """Append the message with ``values`` (from `values`); its sequence number."""
        return self.template.emit(w, *values)


def rule_layout(message: bytes, slots: list[tuple[int, int]], tag: Any = None) -> Layout | None:
    """The core's `Layout` (`Layout.exact`) of dumped NEWRULE messages (or expression
    lists) equal to ``message`` in every byte but the ``slots`` ((offset, width) in
    offset order); ``index[k]`` is slot k's value.  None when two slots overlap (no
    template)."""
    try:
        return Layout.exact(message, slots, tag)
    except ValueError:
        return None
