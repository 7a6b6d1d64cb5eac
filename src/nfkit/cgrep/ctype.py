"""C types as cgrep sees them, and how tree-sitter declarations turn into them.

This module owns the `CType` value (a base name, a pointer depth and, for
functions, a return type) and the walk from a tree-sitter type specifier plus
declarator to `(name, CType)` pairs.  It knows nothing of scopes, headers or
queries: an anonymous struct is named after where it is written, and the
caller registers its body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

from tree_sitter import Node

FUNCTION = "()"  # base of a function type; its `ret` is the return type


class CType(NamedTuple):
    """A C type reduced to what member lookup needs.

    ``base`` is ``"struct tag"``, ``"union tag"``, ``"enum tag"``, a typedef
    name, a primitive spelled as written (``"unsigned int"``) or `FUNCTION`;
    ``ptr`` counts pointer (and array) levels; ``ret`` is the return type of a
    function type.
    """

    base: str
    ptr: int = 0
    ret: CType | None = None

    def pointer(self) -> CType:
        return CType(self.base, self.ptr + 1, self.ret)

    def deref(self) -> CType | None:
        return CType(self.base, self.ptr - 1, self.ret) if self.ptr > 0 else None

    def __str__(self) -> str:
        if self.base == FUNCTION:
            return f"{self.ret}(){'*' * self.ptr}"
        return self.base + (" " + "*" * self.ptr if self.ptr else "")


def ctype_to_plain(ctype: CType) -> list[str | int]:
    """``ctype`` as plain data for the header cache: ``[base, ptr, ...]``, each further
    pair the return type of the one before (flat, so no depth of nesting recurses)."""
    plain: list[str | int] = []
    current: CType | None = ctype
    while current is not None:
        plain += [current.base, current.ptr]
        current = current.ret
    return plain


def ctype_from_plain(plain: object) -> CType | None:
    """The `CType` that `ctype_to_plain` gave ``plain``; None when it is not one."""
    if not isinstance(plain, list) or not plain or len(plain) % 2:
        return None
    ctype: CType | None = None
    for index in range(len(plain) - 2, -1, -2):
        base, ptr = plain[index], plain[index + 1]
        if not isinstance(base, str) or type(ptr) is not int or ptr < 0:
            return None
        ctype = CType(base, ptr, ctype)
    return ctype


# Called with an anonymous struct/union body; returns the name to use for it.
AnonNamer = Callable[[str, Node], str]

_RECORDS = {"struct_specifier": "struct", "union_specifier": "union", "enum_specifier": "enum"}
_DECLARATOR_NAMES = {"identifier", "field_identifier", "type_identifier"}


def base_of(spec: Node | None, anon: AnonNamer) -> str | None:
    """The base name of a type specifier node, or None when it cannot be told."""
    if spec is None:
        return None
    kind = spec.type
    keyword = _RECORDS.get(kind)
    if keyword is not None:
        name = spec.child_by_field_name("name")
        if name is not None:
            return f"{keyword} {_text(name)}"
        body = spec.child_by_field_name("body")
        if body is None:
            return None
        return anon(keyword, body)
    if kind in ("primitive_type", "sized_type_specifier"):
        return " ".join(_text(spec).split())
    if kind == "type_identifier":
        return _text(spec)
    return None


def declared(base: CType, declarator: Node | None) -> tuple[str | None, CType]:
    """Follow ``declarator`` from the outside in; return the declared name and its type.

    Abstract declarators (in casts and type names) give no name.
    """
    current = base
    node = declarator
    while node is not None:
        kind = node.type
        if kind in _DECLARATOR_NAMES:
            return _text(node), current
        if kind in ("pointer_declarator", "abstract_pointer_declarator"):
            current = current.pointer()
        elif kind in ("array_declarator", "abstract_array_declarator"):
            current = current.pointer()
        elif kind in ("function_declarator", "abstract_function_declarator"):
            current = CType(FUNCTION, 0, current)
        elif kind not in (
            "init_declarator",
            "parenthesized_declarator",
            "abstract_parenthesized_declarator",
            "attributed_declarator",
        ):
            return None, current
        node = _inner_declarator(node)
    return None, current


def _inner_declarator(node: Node) -> Node | None:
    inner = node.child_by_field_name("declarator")
    if inner is not None:
        return inner
    for child in node.named_children:
        if child.type.endswith("declarator") or child.type in _DECLARATOR_NAMES:
            return child
    return None


def declarations(node: Node, anon: AnonNamer) -> Iterator[tuple[str, CType]]:
    """Every ``(name, type)`` a declaration-like node declares (declaration,
    field_declaration, parameter_declaration, type_definition, function_definition)."""
    base = base_of(node.child_by_field_name("type"), anon)
    if base is None:
        return
    start = CType(base)
    for declarator in node.children_by_field_name("declarator"):
        name, ctype = declared(start, declarator)
        if name is not None:
            yield name, ctype


def type_name(descriptor: Node, anon: AnonNamer) -> CType | None:
    """The type a ``type_descriptor`` (as in a cast) denotes."""
    base = base_of(descriptor.child_by_field_name("type"), anon)
    if base is None:
        return None
    _, ctype = declared(CType(base), descriptor.child_by_field_name("declarator"))
    return ctype


def parse_type_text(text: str) -> CType | None:
    """A type written as text (``"struct nf_conn *"``, ``"u32"``), as macros such as
    ``container_of`` take them; None when it is not a plain type name."""
    words = text.replace("*", " * ").split()
    stars = 0
    while words and words[-1] == "*":
        stars += 1
        words.pop()
    words = [w for w in words if w not in ("const", "volatile")]
    if len(words) == 2 and words[0] in ("struct", "union", "enum") and words[1].isidentifier():
        return CType(f"{words[0]} {words[1]}", stars)
    if len(words) == 1 and words[0].isidentifier():
        return CType(words[0], stars)
    return None


def _text(node: Node) -> str:
    raw = node.text
    return raw.decode("utf-8", "replace") if raw is not None else ""
