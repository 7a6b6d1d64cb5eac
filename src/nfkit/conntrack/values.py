"""The values of conntrack entry fields: their ranges, and the one check every input path uses.

This module owns what a valid value of each entry field is.  The ranges are
not written here: each field names its attribute in the ctnetlink tables
(`nfkit.netlink.specs.ctnetlink`) and its range is that attribute's width, so
a field cannot be checked against a width the kernel does not have.  Options
(`nfkit ct ... --zone 7`), JSON lines (`create --from`) and the library all
call `check`; a value that fails is an InputError naming the input, the value
and the range, raised before anything is sent.  It knows nothing about
options, files or sockets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nfkit.errors import InputError
from nfkit.netlink.codec import AttrSet, Kind
from nfkit.netlink.specs import ctnetlink as S

_BITS = {Kind.U8: 8, Kind.U16: 16, Kind.BE16: 16, Kind.U32: 32, Kind.BE32: 32, Kind.U64: 64,
         Kind.BE64: 64}

# The kernel's label extension holds 128 bits (NF_CT_LABELS_MAX_SIZE); CTA_LABELS is
# BINARY in the tables, so its width is the one number declared here.
LABEL_BITS = 128

# Integer text: ASCII decimal or 0x-hex, at most 48 digits (2**128 has 39), so that
# int() never reads a 10 MB number, a "²" or a "1_000".
_NUMBER = re.compile(r"\s*(?:0[xX]([0-9a-fA-F]{1,48})|([0-9]{1,48}))\s*")


@dataclass(frozen=True)
class Field:
    """One integer field of an entry: its people's ``noun`` and its range."""

    noun: str
    maximum: int

    @property
    def range_text(self) -> str:
        return f"0-{self.maximum}"


def _width(table: AttrSet, *path: str) -> int:
    """Bits of the attribute at ``path`` (names) in the ctnetlink tables."""
    for name in path[:-1]:
        nested = table.attr(name).nested
        assert nested is not None, name
        table = nested
    return _BITS[table.attr(path[-1]).kind]


def _fields() -> dict[str, Field]:
    def f(noun: str, *path: str) -> Field:
        return Field(noun, (1 << _width(S.CT, *path)) - 1)

    return {
        "port": f("port number", "tuple_orig", "proto", "src_port"),
        "zone": f("zone number", "zone"),
        "mark": f("mark", "mark"),
        "timeout": f("timeout in seconds", "timeout"),
        "id": f("entry id", "id"),
        "status": f("status word", "status"),
        "proto": f("protocol number", "tuple_orig", "proto", "num"),
        "icmp_type": f("ICMP type", "tuple_orig", "proto", "icmp_type"),
        "icmp_code": f("ICMP code", "tuple_orig", "proto", "icmp_code"),
        "icmp_id": f("ICMP id", "tuple_orig", "proto", "icmp_id"),
        "state": f("state number", "protoinfo", "tcp", "state"),
        "use": f("use count", "use"),
        "counter": f("counter", "counters_orig", "packets"),
        "timestamp": f("timestamp", "timestamp", "start"),
        "labels": Field("label set", (1 << LABEL_BITS) - 1),
        "label_bit": Field("label bit", LABEL_BITS - 1),
    }


FIELDS = _fields()
# the maxima the fast paths compare against inline (the same numbers, named)
PORT_MAX = FIELDS["port"].maximum
U32_MAX = FIELDS["mark"].maximum
assert FIELDS["timeout"].maximum == U32_MAX


def check(value: Any, field: str, what: str) -> int:
    """``value`` as an int of ``field`` (a key of FIELDS); raises InputError naming ``what``.

    Takes an int (not a bool), or text of decimal digits or 0x-hex (options
    and JSON strings).  Everything else, and every value outside the field's
    range, is refused with the range in the message.
    """
    spec = FIELDS[field]
    if type(value) is int:
        number = value
    elif isinstance(value, str) and (m := _NUMBER.fullmatch(value[:128])) is not None:
        number = int(m.group(1), 16) if m.group(1) is not None else int(m.group(2))
    else:
        raise InputError(f"{what}: {_shown(value)} is not a {spec.noun} ({spec.range_text})")
    if not 0 <= number <= spec.maximum:
        raise InputError(f"{what}: {_shown(number)} is out of range for a {spec.noun} ({spec.range_text})")
    return number


def _shown(value: Any) -> str:
    """``value`` for an error line: repr, cut to a readable length."""
    if type(value) is int and value.bit_length() > 160:
        return f"a {value.bit_length()}-bit number"  # repr() refuses ints of 4,300+ digits
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + f"... ({len(text)} characters)"


def check_prefix_length(text: str, bits: int, what: str) -> int:
    """A prefix length (the part after "/") for an address of ``bits``; raises InputError."""
    if not (text.isascii() and text.isdigit()) or len(text) > 3 or int(text) > bits:
        shown = text if text.isascii() and text.isdigit() and len(text) < 20 else _shown(text)
        raise InputError(f"{what}: prefix length {shown} out of range 0-{bits}")
    return int(text)


__all__ = ["FIELDS", "LABEL_BITS", "PORT_MAX", "U32_MAX", "Field", "check", "check_prefix_length"]
