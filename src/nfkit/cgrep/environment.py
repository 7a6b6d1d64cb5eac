"""The file-scope type environment: what a C file and the headers it includes declare.

This module owns parsing C with tree-sitter, the tables of file-scope
declarations (struct and union members, typedefs, globals and functions, enum
constants), include resolution under ``-I`` directories, the header store
(each header parsed once per process, its tables kept on disk between runs,
keyed by the header's size and mtime), and the `Environment` of one file,
which answers "what type is this global", "what does this typedef stand for"
and "what members does this struct have" from the file first, then from the
headers it includes (directly or not).  Headers are looked at only when the
file itself does not answer.  Block scopes (parameters, locals) belong to
`search`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import tree_sitter_c
from tree_sitter import Language, Node, Parser, Query, QueryCursor, Tree

from nfkit.cgrep.cache import HeaderCache
from nfkit.cgrep.ctype import (
    FUNCTION,
    CType,
    base_of,
    ctype_from_plain,
    ctype_to_plain,
    declarations,
    declared,
)
from nfkit.cgrep.inputs import os_cause

C_LANGUAGE = Language(tree_sitter_c.language())
CACHE_FORMAT = 6  # bump when `HeaderTables` or the conversion changes

INCLUDE_DIRECTIVE = re.compile(rb'^[ \t]*#[ \t]*include[ \t]*([<"])([^>"\n]+)[>"]', re.M)
_NESTED_RECORDS = """
(struct_specifier name: (type_identifier) @name body: (field_declaration_list) @body)
(union_specifier name: (type_identifier) @name body: (field_declaration_list) @body)
"""
_TRANSPARENT = frozenset({
    "preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef",
    "linkage_specification", "declaration_list", "ERROR",
})
_MEMBER_GROUPS = _TRANSPARENT | {"field_declaration_list"}
_NOT_TYPEDEFS = ("struct ", "union ", "enum ", FUNCTION)
MAX_TYPEDEF_DEPTH = 32



def parse(source: bytes) -> Tree:
    """Parse C source with tree-sitter (never raises on bad C: the tree holds ERROR nodes)."""
    return Parser(C_LANGUAGE).parse(source)


# --------------------------------------------------------------------------
# One parsed file, tables still as tree nodes (converted on demand)


@dataclass
class Unit:
    """File-scope declarations of one parsed file, as tree nodes."""

    path: str
    tree: Tree
    records: dict[str, Node] = field(default_factory=dict)
    typedefs: dict[str, tuple[Node, Node]] = field(default_factory=dict)
    ordinary: dict[str, tuple[Node, Node]] = field(default_factory=dict)
    constants: set[str] = field(default_factory=set)
    anonymous: dict[str, Node] = field(default_factory=dict)
    includes: list[tuple[bool, str]] = field(default_factory=list)
    _searched_inner: bool = False

    def anon_name(self, keyword: str, body: Node) -> str:
        """Name an anonymous struct/union after its place, and remember its body."""
        name = f"{keyword} <anonymous {self.path}:{body.start_byte}>"
        self.anonymous[name] = body
        return name

    def record_body(self, name: str) -> Node | None:
        """The body of struct/union ``name`` defined in this file, at any depth
        (a definition inside a function body is looked for only when needed)."""
        body = self.records.get(name) or self.anonymous.get(name)
        if body is None and not self._searched_inner and not name.startswith(FUNCTION):
            self._searched_inner = True
            query = Query(C_LANGUAGE, _NESTED_RECORDS)
            for _, found in QueryCursor(query).matches(self.tree.root_node):
                spec = found["name"][0].parent
                keyword = "union" if spec is not None and spec.type == "union_specifier" \
                    else "struct"
                self.records.setdefault(f"{keyword} {_text(found['name'][0])}",
                                        found["body"][0])
            body = self.records.get(name)
        return body

    def convert(self, entry: tuple[Node, Node]) -> CType | None:
        spec, declarator = entry
        base = base_of(spec, self.anon_name)
        return declared(CType(base), declarator)[1] if base is not None else None

    def members(self, body: Node) -> dict[str, CType]:
        """Members of a struct/union body, anonymous members flattened."""
        table: dict[str, CType] = {}
        for node in _flattened(body, _MEMBER_GROUPS, _anonymous_member):
            if node.type == "field_declaration":
                for name, ctype in declarations(node, self.anon_name):
                    table.setdefault(name, ctype)
        return table


def build_unit(path: str, source: bytes, tree: Tree | None = None) -> Unit:
    """Index the file-scope declarations of ``source`` (parsed here unless given)."""
    unit = Unit(path, tree if tree is not None else parse(source))
    unit.includes = [(m.group(1) == b'"', m.group(2).decode("utf-8", "replace").strip())
                     for m in INCLUDE_DIRECTIVE.finditer(source)]
    _index_top_level(unit, unit.tree.root_node)
    return unit


def _index_specifier(unit: Unit, spec: Node) -> None:
    """Record the struct/union/enum a type specifier defines, and those nested in it
    (in the order they are written, without recursion: structs nest as deep as they like)."""
    pending = [spec]
    while pending:
        spec = pending.pop()
        kind = spec.type
        if kind not in ("struct_specifier", "union_specifier", "enum_specifier"):
            continue
        body = spec.child_by_field_name("body")
        if body is None:
            continue
        if kind == "enum_specifier":
            for enumerator in body.named_children:
                name = enumerator.child_by_field_name("name")
                if name is not None:
                    unit.constants.add(_text(name))
            continue
        name = spec.child_by_field_name("name")
        if name is not None:
            keyword = "union" if kind == "union_specifier" else "struct"
            unit.records.setdefault(f"{keyword} {_text(name)}", body)
        inner = [member.child_by_field_name("type") for member in _flattened(body, _TRANSPARENT)
                 if member.type == "field_declaration"]
        pending.extend(reversed([node for node in inner if node is not None]))


def _anonymous_member(node: Node) -> Node | None:
    """The body of an unnamed struct/union member (its members are the outer one's)."""
    if node.type != "field_declaration" or node.children_by_field_name("declarator"):
        return None
    spec = node.child_by_field_name("type")
    if spec is None or spec.type not in ("struct_specifier", "union_specifier"):
        return None
    return spec.child_by_field_name("body")


def _flattened(parent: Node, groups: frozenset[str],
               inner: Callable[[Node], Node | None] | None = None) -> Iterator[Node]:
    """Named children of ``parent`` in order, with the children of ``groups`` nodes
    (and of what ``inner`` opens) in their place, at any depth, without recursion."""
    stack = [iter(parent.named_children)]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
            continue
        if node.type in groups:
            stack.append(iter(node.named_children))
            continue
        opened = inner(node) if inner is not None else None
        if opened is not None:
            stack.append(iter(opened.named_children))
            continue
        yield node


def _index_top_level(unit: Unit, parent: Node) -> None:
    for node in _flattened(parent, _TRANSPARENT):
        kind = node.type
        if kind in ("struct_specifier", "union_specifier", "enum_specifier"):
            _index_specifier(unit, node)
            continue
        if kind in ("declaration", "function_definition"):
            table = unit.ordinary
        elif kind == "type_definition":
            table = unit.typedefs
        else:
            continue
        spec = node.child_by_field_name("type")
        if spec is None:
            continue
        _index_specifier(unit, spec)
        for declarator in node.children_by_field_name("declarator"):
            name = declarator_name(declarator)
            if name:
                table.setdefault(name, (spec, declarator))


def declarator_name(node: Node | None) -> str | None:
    """The name a declarator declares (None for abstract ones)."""
    while node is not None:
        if node.type in ("identifier", "type_identifier", "field_identifier"):
            return _text(node)
        inner = node.child_by_field_name("declarator")
        if inner is None:
            inner = next((c for c in node.named_children
                          if c.type.endswith("declarator") or c.type == "identifier"), None)
        node = inner
    return None


# --------------------------------------------------------------------------
# Headers: converted tables, on disk between runs


@dataclass
class HeaderTables:
    """File-scope declarations of one header, converted and kept entry by entry as
    JSON text (an entry is decoded only when a lookup needs it; loading stays cheap).

    ``records`` map a struct/union to its members ``{name: type}``; ``typedefs``
    and ``ordinary`` (globals, functions) map a name to a type; a type is
    `ctype_to_plain`'s list.
    """

    path: str
    includes: list[tuple[bool, str]]
    records: dict[str, str]
    typedefs: dict[str, str]
    ordinary: dict[str, str]
    constants: frozenset[str]

    def document(self) -> dict[str, object]:
        """The tables as plain data, for the cache."""
        return {"includes": [list(item) for item in self.includes], "records": self.records,
                "typedefs": self.typedefs, "ordinary": self.ordinary,
                "constants": sorted(self.constants)}

    @classmethod
    def from_document(cls, path: str, document: dict[str, object]) -> HeaderTables | None:
        """The tables a cache document holds, or None when it is not well formed."""
        includes = document.get("includes")
        constants = document.get("constants")
        tables = [document.get(key) for key in ("records", "typedefs", "ordinary")]
        if not (isinstance(includes, list) and all(
                isinstance(item, list) and len(item) == 2 and isinstance(item[0], bool)
                and isinstance(item[1], str) for item in includes)):
            return None
        if not (isinstance(constants, list) and all(isinstance(c, str) for c in constants)):
            return None
        for table in tables:
            if not (isinstance(table, dict) and all(isinstance(v, str) for v in table.values())):
                return None
        records, typedefs, ordinary = tables
        return cls(path, [(quoted, name) for quoted, name in includes], records,  # type: ignore[arg-type]
                   typedefs, ordinary, frozenset(constants))  # type: ignore[arg-type]


def _encode_type(ctype: CType) -> str:
    return json.dumps(ctype_to_plain(ctype), ensure_ascii=False, separators=(",", ":"))


def _encode_members(members: dict[str, CType]) -> str:
    return json.dumps({name: ctype_to_plain(ctype) for name, ctype in members.items()},
                      ensure_ascii=False, separators=(",", ":"))


def decode_type(entry: str) -> CType | None:
    """A type entry of `HeaderTables` (None if it is not one)."""
    try:
        return ctype_from_plain(json.loads(entry))
    except (ValueError, RecursionError):
        return None


def decode_members(entry: str) -> dict[str, CType] | None:
    """A record entry of `HeaderTables`: member name -> type (None if it is not one)."""
    try:
        plain = json.loads(entry)
    except (ValueError, RecursionError):
        return None
    if not isinstance(plain, dict):
        return None
    members = {name: ctype_from_plain(value) for name, value in plain.items()}
    return {name: ctype for name, ctype in members.items() if ctype is not None}


_INT = _encode_type(CType("int"))


def header_tables(path: str, source: bytes) -> HeaderTables:
    """Parse a header and convert all its file-scope declarations."""
    unit = build_unit(path, source)
    typedefs = {n: _encode_type(t) for n, e in unit.typedefs.items()
                if (t := unit.convert(e)) is not None}
    ordinary = {n: _encode_type(t) for n, e in unit.ordinary.items()
                if (t := unit.convert(e)) is not None}
    records: dict[str, str] = {}
    pending = dict(unit.records)
    while pending:
        for name, body in pending.items():
            records[name] = _encode_members(unit.members(body))
        pending = {n: b for n, b in unit.anonymous.items() if n not in records}
    return HeaderTables(path, unit.includes, records, typedefs, ordinary,
                        frozenset(unit.constants))


def default_cache_dir() -> str | None:
    """Where header tables are kept between runs ($NFKIT_CGREP_CACHE, '' turns it off)."""
    configured = os.environ.get("NFKIT_CGREP_CACHE")
    if configured is not None:
        return configured or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nfkit", "cgrep")


class HeaderStore:
    """Headers found under the include directories, each read once per process.

    ``index_*`` map a name to ``[(header path, value), ...]`` over every header
    loaded so far; an `Environment` keeps the entries its file can see.
    """

    def __init__(self, include_dirs: list[str], cache_dir: str | None = None) -> None:
        self.include_dirs = [os.path.abspath(d) for d in include_dirs]
        self.cache_dir = cache_dir
        self.cache = HeaderCache(cache_dir, CACHE_FORMAT) if cache_dir else None
        self._tables: dict[str, HeaderTables | None] = {}
        self._resolved: dict[tuple[str, bool, str], str | None] = {}
        self._edges: dict[str, list[str]] = {}
        self._closures: dict[str, frozenset[str]] = {}
        self.index_records: dict[str, list[tuple[str, str]]] = {}
        self.index_typedefs: dict[str, list[tuple[str, str]]] = {}
        self.index_ordinary: dict[str, list[tuple[str, str]]] = {}
        self._decoded: dict[tuple[str, str, int], object] = {}
        self.parsed = 0
        self.from_cache = 0
        # (header, cause) for headers found but not readable, in the order met
        self.unreadable: list[tuple[str, str]] = []
        self.loaded: list[str] = []

    def resolve(self, directory: str, quoted: bool, name: str) -> str | None:
        """The header an ``#include`` in ``directory`` names, or None if not found."""
        key = (directory if quoted else "", quoted, name)
        if key not in self._resolved:
            found = None
            for base in ([directory] if quoted else []) + self.include_dirs:
                path = os.path.normpath(os.path.join(base, name))
                if os.path.isfile(path):
                    found = path
                    break
            self._resolved[key] = found
        return self._resolved[key]

    def resolve_all(self, directory: str, includes: list[tuple[bool, str]]) -> list[str]:
        found = (self.resolve(directory, quoted, name) for quoted, name in includes)
        return [path for path in found if path is not None]

    def tables(self, path: str) -> HeaderTables | None:
        """The header's tables (from memory, the disk cache, or parsed now)."""
        if path in self._tables:
            return self._tables[path]
        tables = self._load(path)
        self._tables[path] = tables
        if tables is not None:
            self.loaded.append(path)
            for name, members in tables.records.items():
                self.index_records.setdefault(name, []).append((path, members))
            for name, ctype in tables.typedefs.items():
                self.index_typedefs.setdefault(name, []).append((path, ctype))
            for name, ctype in tables.ordinary.items():
                self.index_ordinary.setdefault(name, []).append((path, ctype))
            for name in tables.constants:
                self.index_ordinary.setdefault(name, []).append((path, _INT))
        return tables

    def lookup(self, index: dict[str, list[tuple[str, str]]], name: str,
               visible: frozenset[str]) -> object:
        """The first entry for ``name`` among the ``visible`` headers, decoded."""
        for path, entry in index.get(name, ()):
            if path in visible:
                key = (path, name, id(index))
                if key not in self._decoded:
                    self._decoded[key] = decode_members(entry) \
                        if index is self.index_records else decode_type(entry)
                return self._decoded[key]
        return None

    def _load(self, path: str) -> HeaderTables | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        stamp = [stat.st_size, stat.st_mtime_ns]
        if self.cache is not None:
            document = self.cache.load(path, stamp)
            tables = HeaderTables.from_document(path, document) if document is not None else None
            if tables is not None:
                self.from_cache += 1
                return tables
        try:
            with open(path, "rb") as handle:
                source = handle.read()
        except OSError as error:  # its types stay unknown: the user is told which header
            self.unreadable.append((path, os_cause(error)))
            return None
        tables = header_tables(path, source)
        self.parsed += 1
        if self.cache is not None:
            self.cache.save(path, stamp, tables.document())
        return tables

    def edges(self, path: str) -> list[str]:
        """Headers that header ``path`` includes (resolved)."""
        if path not in self._edges:
            tables = self.tables(path)
            self._edges[path] = self.resolve_all(os.path.dirname(path), tables.includes) \
                if tables is not None else []
        return self._edges[path]

    def closure(self, path: str) -> frozenset[str]:
        """``path`` and every header it includes, directly or not (loads them all)."""
        if path not in self._closures:
            self._tarjan(path)
        return self._closures[path]

    def _tarjan(self, start: str) -> None:
        # Strongly connected components of the include graph, so that each
        # header's closure is computed once even though headers include each other.
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 20000))
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        counter = [0]

        def visit(node: str) -> None:
            index[node] = low[node] = counter[0]
            counter[0] += 1
            stack.append(node)
            on_stack.add(node)
            for target in self.edges(node):
                if target in self._closures:
                    continue
                if target not in index:
                    visit(target)
                    low[node] = min(low[node], low[target])
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                reach = set(component)
                for member in component:
                    for target in self.edges(member):
                        if target not in reach:
                            reach |= self._closures[target]
                frozen = frozenset(reach)
                for member in component:
                    self._closures[member] = frozen

        try:
            visit(start)
        finally:
            sys.setrecursionlimit(limit)


# --------------------------------------------------------------------------
# One file's view


class Environment:
    """File-scope names visible in one file: its own declarations first, then its headers'.

    The headers are loaded on the first question the file itself cannot answer.
    """

    def __init__(self, unit: Unit, store: HeaderStore) -> None:
        self.unit = unit
        self.store = store
        self._visible: frozenset[str] | None = None
        self._members: dict[str, dict[str, CType] | None] = {}
        self._typedefs: dict[str, CType | None] = {}
        self._ordinary: dict[str, CType | None] = {}
        self.used_headers = False

    @property
    def visible(self) -> frozenset[str]:
        """Paths of the headers this file includes, directly or not."""
        if self._visible is None:
            self.used_headers = True
            reach: set[str] = set()
            for path in self.store.resolve_all(os.path.dirname(self.unit.path),
                                               self.unit.includes):
                reach |= self.store.closure(path)
            self._visible = frozenset(reach)
        return self._visible

    def _from_headers(self, index: dict[str, list[tuple[str, str]]], name: str) -> object:
        visible = self.visible  # loads the headers on the first miss
        return self.store.lookup(index, name, visible)

    def typedef(self, name: str) -> CType | None:
        """What typedef ``name`` stands for (one level), or None if it is not a typedef here."""
        if name.startswith(_NOT_TYPEDEFS) or " " in name:
            return None
        if name not in self._typedefs:
            entry = self.unit.typedefs.get(name)
            if entry is not None:
                ctype = self.unit.convert(entry)
            else:
                ctype = self._from_headers(self.store.index_typedefs, name)  # type: ignore
            self._typedefs[name] = ctype
        return self._typedefs[name]

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
        """Type of a global variable, function or enum constant visible at file scope."""
        if name not in self._ordinary:
            entry = self.unit.ordinary.get(name)
            if entry is not None:
                ctype = self.unit.convert(entry)
            elif name in self.unit.constants:
                ctype = CType("int")
            else:
                ctype = self._from_headers(self.store.index_ordinary, name)  # type: ignore
            self._ordinary[name] = ctype
        return self._ordinary[name]

    def members(self, record: str) -> dict[str, CType] | None:
        """Members of struct/union ``record`` (anonymous members flattened), or None
        when its definition is not visible."""
        if record not in self._members:
            body = self.unit.record_body(record)
            if body is not None:
                table: dict[str, CType] | None = self.unit.members(body)
            else:
                table = self._from_headers(self.store.index_records, record)  # type: ignore
            self._members[record] = table
        return self._members[record]



def _text(node: Node) -> str:
    raw = node.text
    return raw.decode("utf-8", "replace") if raw is not None else ""
