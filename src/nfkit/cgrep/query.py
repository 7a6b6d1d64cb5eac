"""What cgrep is asked: a type, an attribute and an operation, as coccigrep takes them.

This module owns the five operations and their meaning in one table, the
reading of a type as the user writes it (``struct nf_conn``, a typedef name,
a bare tag) and of the ``-e TYPE:ATTR:OP`` form.  It does not parse C.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nfkit.errors import InputError

# operation -> (needs an attribute, what it finds)
OPERATIONS: dict[str, tuple[bool, str]] = {
    "deref": (True, "any access to member ATTR of a TYPE object or pointer"),
    "set": (True, "that access as the target of =, op=, ++ or --"),
    "test": (True, "that access as an operand of ==, !=, <, <=, >, >= or bitwise &"),
    "used": (False, "every use of a variable, parameter or global of type TYPE (or TYPE *)"),
    "func": (True, "calls of functions whose name matches the regular expression ATTR "
                   "with an argument of type TYPE (or TYPE *)"),
}
SET_OPERATORS = frozenset({"=", "|=", "+=", "-=", "*=", "/=", "%=", "<<=", ">>=", "&=", "^="})
TEST_OPERATORS = frozenset({"==", "!=", "&", "<", "<=", ">", ">="})
MEMBER_OPERATIONS = frozenset({"deref", "set", "test"})
_KEYWORDS = ("struct", "union", "enum")
_PRIMITIVES = frozenset({"int", "char", "short", "long", "float", "double", "void",
                         "signed", "unsigned", "_Bool", "bool"})


@dataclass(frozen=True)
class Query:
    """One question: where is member ``attribute`` of ``ctype`` reached by ``operation``.

    ``ctype`` is normalised (``struct nf_conn``; a typedef name stays bare).
    ``bare_tag`` is true when the user wrote a bare name that cgrep also reads
    as ``struct NAME``.  For ``func``, ``attribute`` is a regular expression on
    the called function's name.
    """

    ctype: str
    attribute: str | None
    operation: str
    bare_tag: bool = False
    pattern: re.Pattern[str] | None = field(default=None, compare=False, hash=False)

    @property
    def names(self) -> frozenset[str]:
        """Type names that mean this query's type before typedefs are followed."""
        if self.bare_tag:
            return frozenset({self.ctype, f"struct {self.ctype}"})
        return frozenset({self.ctype})

    @property
    def label(self) -> str:
        return f"{self.ctype}:{self.attribute or ''}:{self.operation}"


def normalise_type(text: str) -> tuple[str, bool]:
    """Read a type as written; return ``(name, bare_tag)``.

    Raises InputError for anything that is not a struct, union, enum or type name.
    """
    words = text.split()
    if len(words) == 2 and words[0] in _KEYWORDS and _is_identifier(words[1]):
        return f"{words[0]} {words[1]}", False
    if len(words) == 1 and _is_identifier(words[0]):
        return words[0], words[0] not in _PRIMITIVES
    raise InputError(f"type {text!r}: write it as C does ('struct NAME', 'union NAME' "
                     "or a typedef name)")


def make_query(type_text: str, attribute: str | None, operation: str) -> Query:
    """Check and build one query. Raises InputError naming what is wrong."""
    if operation not in OPERATIONS:
        raise InputError(f"unknown operation {operation!r} "
                         f"(one of {', '.join(OPERATIONS)})")
    ctype, bare = normalise_type(type_text)
    needs_attribute = OPERATIONS[operation][0]
    attribute = attribute or None
    pattern = None
    if needs_attribute and attribute is None:
        raise InputError(f"operation {operation!r} needs an attribute (-a)")
    if operation == "used" and attribute is not None:
        raise InputError("operation 'used' takes no attribute (-a)")
    if operation == "func":
        assert attribute is not None
        try:
            pattern = re.compile(attribute)
        except re.error as exc:
            raise InputError(f"function pattern {attribute!r}: {exc}") from None
    elif attribute is not None and not _is_identifier(attribute):
        raise InputError(f"attribute {attribute!r} is not a C member name")
    return Query(ctype, attribute, operation, bare, pattern)


def parse_expression(text: str) -> Query:
    """Read ``TYPE:ATTR:OP`` (ATTR may be empty for ``used``). Raises InputError."""
    parts = text.split(":")
    if len(parts) < 3:
        raise InputError(f"query {text!r}: expected TYPE:ATTR:OP")
    return make_query(parts[0], ":".join(parts[1:-1]), parts[-1])


def _is_identifier(word: str) -> bool:
    return word.isidentifier() and word.isascii()
