"""The file-scope type environment: what a C file and the headers it includes declare.

This module owns parsing C with tree-sitter, the per-unit tables of file-scope
declarations (struct and union bodies, typedefs, globals and functions, enum
constants), include resolution under ``-I`` directories, the per-process cache
of parsed headers, and the merged `Environment` that answers "what is the type
of this global", "what does this typedef stand for" and "what members does
this struct have".  Block scopes (parameters, locals) belong to `search`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import tree_sitter_c
from tree_sitter import Language, Node, Parser, Query, QueryCursor, Tree

from nfkit.cgrep.ctype import FUNCTION, CType, base_of, declared, declarations

C_LANGUAGE = Language(tree_sitter_c.language())

_INCLUDE = re.compile(rb'^[ \t]*#[ \t]*include[ \t]*([<"])([^>"\n]+)[>"]', re.M)
_RECORD_QUERY = Query(
    C_LANGUAGE,
    """
    (struct_specifier name: (type_identifier) @name body: (field_declaration_list) @body)
    (union_specifier name: (type_identifier) @name body: (field_declaration_list) @body)
    (enumerator name: (identifier) @enumerator)
    """,
)
_TRANSPARENT = {
    "preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef",
    "linkage_specification", "declaration_list", "ERROR",
}
MAX_TYPEDEF_DEPTH = 32


def parse(source: bytes) -> Tree:
    """Parse C source with tree-sitter (never raises on bad C: the tree holds ERROR nodes)."""
    return Parser(C_LANGUAGE).parse(source)


@dataclass
class Unit:
    """File-scope declarations of one parsed file (a .c file or a header).

    Type conversion is lazy: the tables hold nodes, `Environment` converts and
    remembers.  The tree is kept alive as long as the unit is.
    """

    path: str
    tree: Tree
    records: dict[str, Node] = field(default_factory=dict)
    typedefs: dict[str, tuple[Node, Node]] = field(default_factory=dict)
    ordinary: dict[str, tuple[Node, Node]] = field(default_factory=dict)
    constants: set[str] = field(default_factory=set)
    anonymous: dict[str, Node] = field(default_factory=dict)
    includes: list[tuple[bool, str]] = field(default_factory=list)

    def anon_name(self, keyword: str, body: Node) -> str:
        """Name an anonymous struct/union after its place, and remember its body."""
        name = f"{keyword} <anonymous {self.path}:{body.start_byte}>"
        self.anonymous[name] = body
        return name


def build_unit(path: str, source: bytes, tree: Tree | None = None) -> Unit:
    """Index the file-scope declarations of ``source`` (parsed here unless given)."""
    unit = Unit(path, tree if tree is not None else parse(source))
    unit.includes = [(m.group(1) == b'"', m.group(2).decode("utf-8", "replace").strip())
                     for m in _INCLUDE.finditer(source)]
    captures = QueryCursor(_RECORD_QUERY).captures(unit.tree.root_node)
    for name_node, body in zip(captures.get("name", []), captures.get("body", [])):
        keyword = "union" if name_node.parent is not None and \
            name_node.parent.type == "union_specifier" else "struct"
        unit.records.setdefault(f"{keyword} {_text(name_node)}", body)
    unit.constants.update(_text(n) for n in captures.get("enumerator", []))
    _index_top_level(unit, unit.tree.root_node)
    return unit


def _index_top_level(unit: Unit, parent: Node) -> None:
    for node in parent.named_children:
        kind = node.type
        if kind in _TRANSPARENT:
            _index_top_level(unit, node)
        elif kind in ("declaration", "function_definition"):
            spec = node.child_by_field_name("type")
            for declarator in node.children_by_field_name("declarator"):
                name = _declarator_name(declarator)
                if name and spec is not None:
                    unit.ordinary.setdefault(name, (spec, declarator))
        elif kind == "type_definition":
            spec = node.child_by_field_name("type")
            for declarator in node.children_by_field_name("declarator"):
                name = _declarator_name(declarator)
                if name and spec is not None:
                    unit.typedefs.setdefault(name, (spec, declarator))


def _declarator_name(node: Node) -> str | None:
    while node is not None:
        if node.type in ("identifier", "type_identifier", "field_identifier"):
            return _text(node)
        inner = node.child_by_field_name("declarator")
        if inner is None:
            inner = next((c for c in node.named_children
                          if c.type.endswith("declarator") or c.type == "identifier"), None)
        node = inner  # type: ignore[assignment]
    return None


class HeaderCache:
    """Headers found under the include directories, parsed once per process."""

    def __init__(self, include_dirs: list[str]) -> None:
        self.include_dirs = [os.path.abspath(d) for d in include_dirs]
        self._units: dict[str, Unit | None] = {}
        self._resolved: dict[tuple[str, bool, str], str | None] = {}
        self.parsed = 0

    def resolve(self, directory: str, quoted: bool, name: str) -> str | None:
        """The header ``#include`` names from a file in ``directory``, or None if not found."""
        key = (directory if quoted else "", quoted, name)
        if key in self._resolved:
            return self._resolved[key]
        found = None
        candidates = ([directory] if quoted else []) + self.include_dirs
        for base in candidates:
            path = os.path.normpath(os.path.join(base, name))
            if os.path.isfile(path):
                found = path
                break
        self._resolved[key] = found
        return found

    def unit(self, path: str) -> Unit | None:
        """The parsed header at ``path`` (None if it cannot be read)."""
        if path not in self._units:
            try:
                with open(path, "rb") as handle:
                    source = handle.read()
            except OSError:
                self._units[path] = None
            else:
                self._units[path] = build_unit(path, source)
                self.parsed += 1
        return self._units[path]

    def closure(self, unit: Unit) -> list[Unit]:
        """The headers ``unit`` includes, directly or not, nearest first."""
        seen: set[str] = {unit.path}
        order: list[Unit] = []
        queue = [unit]
        while queue:
            current = queue.pop(0)
            directory = os.path.dirname(current.path)
            for quoted, name in current.includes:
                path = self.resolve(directory, quoted, name)
                if path is None or path in seen:
                    continue
                seen.add(path)
                header = self.unit(path)
                if header is not None:
                    order.append(header)
                    queue.append(header)
        return order


class Environment:
    """File-scope names visible in one file: its own declarations first, then its headers'."""

    def __init__(self, unit: Unit, headers: list[Unit]) -> None:
        self.unit = unit
        self.records: dict[str, tuple[Node, Unit]] = {}
        self.typedefs: dict[str, tuple[Node, Node, Unit]] = {}
        self.ordinary: dict[str, tuple[Node, Node, Unit]] = {}
        self.constants: set[str] = set()
        for source in reversed([unit, *headers]):
            self.records.update({k: (v, source) for k, v in source.records.items()})
            self.typedefs.update({k: (*v, source) for k, v in source.typedefs.items()})
            self.ordinary.update({k: (*v, source) for k, v in source.ordinary.items()})
            self.constants |= source.constants
        self._units = [unit, *headers]
        self._members: dict[str, dict[str, CType]] = {}
        self._typedef_types: dict[str, CType | None] = {}
        self._ordinary_types: dict[str, CType | None] = {}

    def _anonymous_body(self, name: str) -> tuple[Node, Unit] | None:
        for source in self._units:
            body = source.anonymous.get(name)
            if body is not None:
                return body, source
        return None

    def typedef(self, name: str) -> CType | None:
        """What typedef ``name`` stands for (one level), or None if it is not a typedef here."""
        if name not in self._typedef_types:
            entry = self.typedefs.get(name)
            ctype = None
            if entry is not None:
                spec, declarator, source = entry
                base = base_of(spec, source.anon_name)
                if base is not None:
                    ctype = declared(CType(base), declarator)[1]
            self._typedef_types[name] = ctype
        return self._typedef_types[name]

    def resolve(self, ctype: CType) -> CType:
        """``ctype`` with typedef names replaced by what they stand for."""
        for _ in range(MAX_TYPEDEF_DEPTH):
            target = self.typedef(ctype.base)
            if target is None or target.base == ctype.base:
                return ctype
            ctype = CType(target.base, target.ptr + ctype.ptr, target.ret)
        return ctype

    def typedef_chain(self, ctype: CType) -> list[str]:
        """The names ``ctype``'s base goes through, from as written to the final type."""
        names = [ctype.base]
        for _ in range(MAX_TYPEDEF_DEPTH):
            target = self.typedef(names[-1])
            if target is None or target.base in names:
                break
            names.append(target.base)
        return names

    def global_type(self, name: str) -> CType | None:
        """Type of a global variable or function visible at file scope."""
        if name not in self._ordinary_types:
            entry = self.ordinary.get(name)
            ctype = None
            if entry is not None:
                spec, declarator, source = entry
                base = base_of(spec, source.anon_name)
                if base is not None:
                    ctype = declared(CType(base), declarator)[1]
            elif name in self.constants:
                ctype = CType("int")
            self._ordinary_types[name] = ctype
        return self._ordinary_types[name]

    def members(self, record: str) -> dict[str, CType] | None:
        """Members of ``struct``/``union`` ``record`` (anonymous members flattened),
        or None when its definition is not visible."""
        if record in self._members:
            return self._members[record]
        found = self.records.get(record)
        if found is None and "<anonymous" in record:
            found = self._anonymous_body(record)
        table = None
        if found is not None:
            table = {}
            self._collect_members(found[0], found[1], table)
        self._members[record] = table
        return table

    def _collect_members(self, body: Node, owner: Unit, table: dict[str, CType]) -> None:
        for node in body.named_children:
            kind = node.type
            if kind == "field_declaration":
                spec = node.child_by_field_name("type")
                if not node.children_by_field_name("declarator") and spec is not None and \
                        spec.type in ("struct_specifier", "union_specifier"):
                    inner = spec.child_by_field_name("body")
                    if inner is not None:
                        self._collect_members(inner, owner, table)
                    continue
                for name, ctype in declarations(node, owner.anon_name):
                    table.setdefault(name, ctype)
            elif kind in _TRANSPARENT or kind == "field_declaration_list":
                self._collect_members(node, owner, table)


def is_function(ctype: CType | None) -> bool:
    return ctype is not None and ctype.base == FUNCTION


def _text(node: Node) -> str:
    raw = node.text
    return raw.decode("utf-8", "replace") if raw is not None else ""
