"""Rule templates: value slots turned into the netlink core's Template and Layout.

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

It stands on the netlink core and the spec; it must not know about statements
or batches beyond the writer it appends to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


class RuleTemplate:
    """NEWRULE (add, appended) of one rule shape in one chain.

    ``message`` is the whole message with every value zero, ``offsets`` and
    ``widths`` where the values go, ``slots`` the compiler's (encoder, width,
    operand) of each, and ``template`` the core's Template over them."""

    __slots__ = ("message", "offsets", "widths", "slots", "encoders", "template")

    def __init__(self, family: str, table: str, chain: str, statics: list[bytes],
                 slots: list[tuple[Callable[[Any], bytes], int, Any]]) -> None:
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
        self.slots = slots
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
