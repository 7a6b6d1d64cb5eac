"""Searching one C file: block scopes, expression types, and the five operations.

This module owns what a match is and how a file is searched: candidates are
found by name in the raw bytes (member names, variable names) or by a
tree-sitter query (calls), then each candidate's object is typed bottom-up
through identifiers (block scopes, then file scope and headers), member
accesses, subscripts, ``*``/``&``, casts, calls and a few kernel macros that
only pass a pointer through (``READ_ONCE``, ``rcu_dereference``,
``container_of``...).  It does not walk directories or print.
"""

from __future__ import annotations

import bisect
import functools
import os
import re
from collections.abc import Generator
from dataclasses import dataclass, field

from tree_sitter import Node, Point, QueryCursor
from tree_sitter import Query as TSQuery

from nfkit.cgrep.ctype import FUNCTION, CType, declarations, parse_type_text, type_name
from nfkit.cgrep.environment import (
    C_LANGUAGE,
    INCLUDE_DIRECTIVE,
    Environment,
    HeaderStore,
    Unit,
    build_unit,
    declarator_name,
    decode_type,
    parse,
)
from nfkit.cgrep.inputs import os_cause
from nfkit.cgrep.query import (
    MEMBER_OPERATIONS,
    SET_OPERATORS,
    TEST_OPERATORS,
    Query,
)

# Macros that give back (a pointer of) the type of their first argument.
PASS_THROUGH = frozenset({
    "READ_ONCE", "rcu_dereference", "rcu_dereference_protected", "rcu_dereference_raw",
    "rcu_dereference_bh", "rcu_dereference_sched", "rcu_dereference_check",
    "rcu_dereference_bh_check", "rcu_dereference_sched_check", "rcu_dereference_raw_check",
    "rcu_access_pointer", "srcu_dereference", "list_next_entry", "list_prev_entry",
    "list_next_or_null_rcu", "xchg", "cmpxchg",
})
# Macros whose second argument is the type they give a pointer to.
CONTAINER_OF = frozenset({
    "container_of", "container_of_const", "list_entry", "list_first_entry",
    "list_last_entry", "list_first_entry_or_null", "list_entry_rcu",
    "list_first_or_null_rcu", "hlist_entry", "hlist_entry_safe", "hlist_nulls_entry",
    "rb_entry", "rb_entry_safe", "llist_entry",
})
_DECLARING = frozenset({"declaration", "parameter_declaration"})
_SCOPES = frozenset({"compound_statement", "for_statement", "function_definition"})
_WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
_CALLED = re.compile(rb"\b([A-Za-z_]\w*)\s*\(")


@functools.cache
def _compiled(source: str) -> TSQuery:
    """A tree-sitter query, compiled on first use (compiling costs import time)."""
    return TSQuery(C_LANGUAGE, source)


_CALLS = "(call_expression function: (identifier) @function)"
# A computation of an expression's type: yields the operands whose types it needs
# (`_FileSearch.type_of` sends them back), returns the type.
_Typing = Generator[Node, "CType | None", "CType | None"]
_DECLARATIONS = "(declaration) @d (parameter_declaration) @d"


@dataclass
class Match:
    """One place that answers a query.

    ``line``/``column`` (1-based, column in characters) are where the matched
    expression starts, which is where coccigrep puts its position too;
    ``end_line``/``end_column`` are just past it.  ``expression`` is the
    object reached (``ct`` in ``ct->status``); ``loose`` is true when the
    object's type could not be told and ``--loose`` matched on the name alone.
    """

    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    operation: str
    ctype: str
    attribute: str | None
    code: str
    function: str | None
    expression: str
    pointer: bool = False
    loose: bool = False

    def as_json(self) -> dict[str, object]:
        return {
            "file": self.path, "line": self.line, "column": self.column,
            "end": [self.end_line, self.end_column], "op": self.operation,
            "type": self.ctype, "attr": self.attribute, "code": self.code,
            "function": self.function, "expression": self.expression,
            "pointer": self.pointer, "loose": self.loose,
        }


@dataclass
class FileReport:
    """What searching one file gave: matches, or the one-line reason it could not be searched."""

    path: str
    matches: list[Match] = field(default_factory=list)
    error: str | None = None
    parse_errors: bool = False
    parsed: bool = False
    unresolved: int = 0
    # (header, cause): headers this process could not read since its last report
    problems: list[tuple[str, str]] = field(default_factory=list)


class Searcher:
    """Searches files for a set of queries in one pass per file.

    Headers are parsed once per `Searcher` (so once per worker process).
    """

    def __init__(self, queries: list[Query], include_dirs: list[str] | None = None,
                 loose: bool = False, cache_dir: str | None = None) -> None:
        self.queries = queries
        self.headers = HeaderStore(include_dirs or [], cache_dir)
        self.loose = loose
        attributes = sorted({q.attribute for q in queries
                             if q.operation in MEMBER_OPERATIONS and q.attribute})
        # A member is reached with -> or . before its name (spaces, even a line break, allowed).
        self._member_names = re.compile(
            rb"(?:->|\.)\s*(" + b"|".join(re.escape(a.encode()) for a in attributes) + rb")\b"
        ) if attributes else None
        self._calls = [q.pattern for q in queries if q.operation == "func" and q.pattern]
        self._used = [q for q in queries if q.operation == "used"]
        # Words that a file must contain to hold a use of a `used` query's type:
        # the type's own name, typedefs of it, globals of it (from the headers read).
        self._used_words: set[bytes] = set()
        self._used_names: set[str] = set()
        for query in self._used:
            for name in query.names:
                self._used_names.add(name)
                self._used_words.add(name.split()[-1].encode())
        self._aliases_seen = 0
        self._same_type: dict[str, list[str]] = {}
        self._pending_globals: list[dict[str, str]] = []
        self._problems_told = 0

    def search_path(self, path: str, probed: bool = False) -> FileReport:
        """Search the file at ``path``; unreadable or non-C input becomes ``error``.

        ``probed``: `probe` already found that the file could match.
        """
        source = _read(path)
        if isinstance(source, FileReport):
            return source
        return self.search_source(path, source, probed)

    def probe(self, path: str) -> FileReport | None:
        """None if the file at ``path`` could match (it is worth parsing); else its
        (empty, or error) report, found without parsing."""
        source = _read(path)
        if isinstance(source, FileReport):
            return source
        if self.wants(source, path):
            return None
        report = FileReport(path)
        report.problems = self.take_problems()
        return report

    def take_problems(self) -> list[tuple[str, str]]:
        """Headers found but not readable since the last call: ``(path, cause)``."""
        unreadable = self.headers.unreadable
        fresh = unreadable[self._problems_told:]
        self._problems_told = len(unreadable)
        return fresh

    def wants(self, source: bytes, path: str = "") -> bool:
        """Could ``source`` hold a match at all?  Decided on the bytes (member
        names after ``->``/``.``, names of called functions, names that can
        denote the ``used`` type), without parsing the file; for ``used`` the
        headers the file includes are read."""
        if self._member_names is not None and self._member_names.search(source):
            return True
        if self._calls:
            called = {name.decode() for name in _CALLED.findall(source)}
            if any(pattern.search(name) for pattern in self._calls for name in called):
                return True
        if self._used:
            words = set(_WORD.findall(source))
            if not words.isdisjoint(self._used_words):
                return True
            unit_includes = [(m.group(1) == b'"', m.group(2).decode("utf-8", "replace").strip())
                             for m in INCLUDE_DIRECTIVE.finditer(source)]
            store = self.headers
            for header in store.resolve_all(os.path.dirname(path), unit_includes):
                store.closure(header)
            self._learn_used_words()
            return not words.isdisjoint(self._used_words)
        return False

    def _learn_used_words(self) -> None:
        """Add typedef names and globals of the `used` types from headers read since."""
        store = self.headers
        loaded = store.loaded
        if len(loaded) == self._aliases_seen:
            return
        fresh = loaded[self._aliases_seen:]
        self._aliases_seen = len(loaded)
        names = self._used_names
        for path in fresh:
            tables = store.tables(path)
            if tables is None:
                continue
            for alias, entry in tables.typedefs.items():
                # a typedef and what it names are one type, whichever the query wrote
                named = decode_type(entry)
                if named is None:
                    continue
                target = named.base
                self._same_type.setdefault(target, []).append(alias)
                self._same_type.setdefault(alias, []).append(target)
                if target in names:
                    self._add_alias(alias)
                elif alias in names:
                    self._add_alias(target)
            self._pending_globals.append(tables.ordinary)
        # a global is checked once the aliases known so far are in: cheap test on the
        # entry's text first, then the type itself
        for ordinary in self._pending_globals:
            for name, entry in ordinary.items():
                if any(w in entry for w in names):
                    ctype = decode_type(entry)
                    if ctype is not None and ctype.base in names and ctype.base != FUNCTION:
                        self._used_words.add(name.encode())
        self._pending_globals = []

    def _add_alias(self, alias: str) -> None:
        """``alias`` denotes the `used` type: so does everything typedef'd to or from it."""
        queue, visited = [alias], set()
        while queue:
            name = queue.pop()
            if name in visited:
                continue
            visited.add(name)
            self._used_names.add(name)
            self._used_words.add(name.split()[-1].encode())
            queue.extend(self._same_type.get(name, ()))

    def search_source(self, path: str, source: bytes, probed: bool = False) -> FileReport:
        """Search C ``source`` that came from ``path`` (``probed``: `wants` said yes)."""
        report = FileReport(path)
        if probed or self.wants(source, path):
            _FileSearch(self, path, source, report).run()
        report.problems = self.take_problems()
        return report


class _FileSearch:
    def __init__(self, searcher: Searcher, path: str, source: bytes, report: FileReport) -> None:
        self.searcher = searcher
        self.path = path
        self.source = source
        self.report = report
        self.tree = parse(source)
        self.root = self.tree.root_node
        report.parsed = True
        report.parse_errors = self.root.has_error
        self._unit: Unit | None = None
        self._env: Environment | None = None
        self._scopes: dict[int, dict[str, list[tuple[int, CType]]]] = {}
        self._types: dict[int, CType | None] = {}
        self._lines: list[bytes] | None = None
        self._decoded: dict[int, str] = {}
        self._seen: set[tuple[int, int, str, str]] = set()
        self._word_set: set[str] | None = None
        self._recovered: dict[int, dict[str, list[tuple[int, CType]]]] = {}
        # tree-sitter finds a node's parent by descending from the root (O(depth)):
        # parents are recorded on the way down instead, so deep nesting stays linear.
        self._parents: dict[int, Node] = {}
        self._above: dict[tuple[int, str], CType | None] = {}
        self._errors: dict[int, Node | None] = {}
        self._items: list[Node] | None = None
        self._item_starts: list[int] = []
        self._functions: dict[int, str | None] = {}
        self._ascii = source.isascii()

    # -- environment -------------------------------------------------------
    @property
    def env(self) -> Environment:
        if self._env is None:
            self._unit = build_unit(self.path, self.source, self.tree)
            self._env = Environment(self._unit, self.searcher.headers)
        return self._env

    def anon(self, keyword: str, body: Node) -> str:
        self.env  # noqa: B018 - makes sure the unit exists
        assert self._unit is not None
        return self._unit.anon_name(keyword, body)

    # -- driver ------------------------------------------------------------
    def run(self) -> None:
        queries = self.searcher.queries
        member = [q for q in queries if q.operation in MEMBER_OPERATIONS]
        if member and self.searcher._member_names is not None:
            self._search_members(member)
        used = [q for q in queries if q.operation == "used"]
        if used:
            self._search_used(used)
        calls = [q for q in queries if q.operation == "func"]
        if calls:
            self._search_calls(calls)
        self.report.matches.sort(key=lambda m: (m.line, m.column, m.operation))

    def _search_members(self, queries: list[Query]) -> None:
        pattern = self.searcher._member_names
        assert pattern is not None
        by_attribute: dict[str, list[Query]] = {}
        for query in queries:
            by_attribute.setdefault(query.attribute or "", []).append(query)
        descent = _Descent(self.root, self._parents)
        for found in pattern.finditer(self.source):
            node = descent.find(found.start(1), found.end(1))
            if node.type != "field_identifier":
                continue
            access = self._parent(node)
            if access is None or access.type != "field_expression":
                continue
            attribute = found.group(1).decode()
            obj = access.child_by_field_name("argument")
            operator = access.child_by_field_name("operator")
            if obj is None or operator is None:
                continue
            self._parents[obj.id] = access
            arrow = operator.type == "->"
            obj_type = self.type_of(obj)
            resolved = self.env.resolve(obj_type) if obj_type is not None else None
            if resolved is not None and arrow:
                resolved = resolved.deref()
            for query in by_attribute[attribute]:
                loose = False
                if resolved is None or resolved.ptr != 0:
                    if resolved is None:
                        self.report.unresolved += 1
                    if not (self.searcher.loose and resolved is None):
                        continue
                    loose = True
                elif not self._is_type(obj_type, query, 1 if arrow else 0):
                    continue
                if self._operation_holds(query.operation, access):
                    self._add(query, access, obj, loose, arrow)

    def _operation_holds(self, operation: str, access: Node) -> bool:
        if operation == "deref":
            return True
        outer = access
        parent = self._parent(outer)
        while parent is not None and parent.type == "parenthesized_expression":
            outer, parent = parent, self._parent(parent)
        if parent is None:
            return False
        if operation == "set":
            if parent.type == "update_expression":
                return True
            if parent.type == "assignment_expression":
                left = parent.child_by_field_name("left")
                op = parent.child_by_field_name("operator")
                return left is not None and left.id == outer.id and \
                    op is not None and op.type in SET_OPERATORS
            return False
        if operation == "test" and parent.type == "binary_expression":
            op = parent.child_by_field_name("operator")
            return op is not None and op.type in TEST_OPERATORS
        return False

    def _search_used(self, queries: list[Query]) -> None:
        names: set[bytes] = set()
        for query in queries:
            names |= self._names_of_type(query)
        if not names:
            return
        pattern = re.compile(rb"\b(?:" + b"|".join(re.escape(n) for n in sorted(names)) + rb")\b")
        descent = _Descent(self.root, self._parents)
        for found in pattern.finditer(self.source):
            node = descent.find(found.start(), found.end())
            if node.type != "identifier" or not _is_use(node, self._parent(node)):
                continue
            ctype = self._identifier_type(node)
            if ctype is None:
                continue
            for query in queries:
                if self._is_type(ctype, query, 0) or self._is_type(ctype, query, 1):
                    self._add(query, node, node, False, self._is_type(ctype, query, 1))

    def _names_of_type(self, query: Query) -> set[bytes]:
        """Names declared (here or in the headers) with the query's type or a pointer to it.

        Declarations are found where the type's names are written, not by
        walking every declaration of the file."""
        names: set[bytes] = set()
        words = set(self.searcher._used_words)
        env = self.env
        wanted = set(query.names)
        if env.typedef(query.ctype) is not None:  # the query names a typedef
            wanted.update(env.typedef_chain(CType(query.ctype)))
        for alias in env.unit.typedefs:  # the file's own typedefs of the type
            if not wanted.isdisjoint(env.typedef_chain(CType(alias))):
                wanted.add(alias)
        words.update(name.split()[-1].encode() for name in wanted)
        pattern = re.compile(rb"\b(?:" + b"|".join(re.escape(w) for w in sorted(words)) + rb")\b")
        seen: set[int] = set()
        descent = _Descent(self.root, self._parents)
        for found in pattern.finditer(self.source):
            node: Node | None = descent.find(found.start(), found.end())
            hops = 0
            while node is not None and hops < 4 and node.type not in _DECLARING:
                node, hops = self._parent(node), hops + 1
            if node is None or node.type not in _DECLARING or node.id in seen:
                continue
            seen.add(node.id)
            for name, ctype in declarations(node, self.anon):
                if self._is_type(ctype, query, 0) or self._is_type(ctype, query, 1):
                    names.add(name.encode())
        known = self.searcher.headers.index_ordinary
        for word in self._words():
            if word in known or word in env.unit.ordinary:
                global_type = env.global_type(word)
                if global_type is not None and global_type.base != FUNCTION and (
                        self._is_type(global_type, query, 0)
                        or self._is_type(global_type, query, 1)):
                    names.add(word.encode())
        return names

    def _words(self) -> set[str]:
        if self._word_set is None:
            self.env.visible  # noqa: B018 - loads the headers, so their names are known
            self._word_set = {w.decode() for w in set(_WORD.findall(self.source))}
        return self._word_set

    def _search_calls(self, queries: list[Query]) -> None:
        cursor = QueryCursor(_compiled(_CALLS))
        found = sorted(cursor.captures(self.root).get("function", []), key=lambda n: n.start_byte)
        descent = _Descent(self.root, self._parents)
        for function in found:
            name = _text(function)
            wanted = [q for q in queries if q.pattern is not None and q.pattern.search(name)]
            if not wanted:
                continue
            call = self._parent(descent.find(function.start_byte, function.end_byte))
            if call is None or call.type != "call_expression":
                continue
            arguments = call.child_by_field_name("arguments")
            if arguments is None:
                continue
            self._parents[arguments.id] = call
            for argument in arguments.named_children:
                self._parents[argument.id] = arguments
                # As coccigrep's (t)p: the argument itself, or what a cast converts.
                level: Node | None = argument
                while level is not None:
                    ctype = self.type_of(level)
                    for query in wanted:
                        if self._is_type(ctype, query, 0) or self._is_type(ctype, query, 1):
                            self._add(query, level, level, False, self._is_type(ctype, query, 1))
                    inner = level.child_by_field_name("value") \
                        if level.type == "cast_expression" else None
                    if inner is not None:
                        self._parents[inner.id] = level
                    level = inner

    # -- types -------------------------------------------------------------
    def _is_type(self, ctype: CType | None, query: Query, pointers: int) -> bool:
        """Is ``ctype`` the query's type with exactly ``pointers`` levels of pointer?"""
        if ctype is None:
            return False
        env = self.env
        resolved = env.resolve(ctype)
        if resolved.ptr != pointers or resolved.base == FUNCTION:
            return False
        chain = env.typedef_chain(ctype)
        if not query.names.isdisjoint(chain):
            return True
        target = env.typedef(query.ctype)
        if target is not None:
            final = env.resolve(CType(query.ctype))
            return final.ptr == 0 and final.base == resolved.base
        return False

    def type_of(self, node: Node) -> CType | None:
        """The type of expression ``node``, or None when it cannot be told.

        Computed without recursion (a 200,000-deep expression is typed in a loop):
        `_compute_type` yields each operand whose type it needs."""
        key = node.id
        types = self._types
        if key in types:
            return types[key]
        types[key] = None  # guards against cycles through odd trees
        stack = [(node, self._compute_type(node))]
        answer: CType | None = None
        while stack:
            current, steps = stack[-1]
            try:
                operand = steps.send(answer)
            except StopIteration as done:
                stack.pop()
                answer = types[current.id] = done.value
                continue
            self._parents.setdefault(operand.id, current)  # operands are children
            if operand.id in types:
                answer = types[operand.id]
            else:
                types[operand.id] = None
                stack.append((operand, self._compute_type(operand)))
                answer = None
        return types[key]

    def _compute_type(self, node: Node) -> _Typing:
        kind = node.type
        if kind == "identifier":
            return self._identifier_type(node)
        if kind == "field_expression":
            obj = node.child_by_field_name("argument")
            operator = node.child_by_field_name("operator")
            member = node.child_by_field_name("field")
            if obj is None or operator is None or member is None:
                return None
            obj_type = yield obj
            if obj_type is None:
                return None
            resolved: CType | None = self.env.resolve(obj_type)
            if operator.type == "->":
                assert resolved is not None
                resolved = resolved.deref()
            if resolved is None or resolved.ptr != 0:
                return None
            table = self.env.members(resolved.base)
            return table.get(_text(member)) if table else None
        if kind == "subscript_expression":
            inner = yield from _operand(node, "argument")
            return self.env.resolve(inner).deref() if inner is not None else None
        if kind == "pointer_expression":
            inner = yield from _operand(node, "argument")
            if inner is None:
                return None
            operator = node.child_by_field_name("operator")
            if operator is not None and operator.type == "&":
                return inner.pointer()
            return self.env.resolve(inner).deref()
        if kind == "parenthesized_expression":
            children = node.named_children
            return (yield children[-1]) if children else None
        if kind in ("cast_expression", "compound_literal_expression"):
            descriptor = node.child_by_field_name("type")
            return type_name(descriptor, self.anon) if descriptor is not None else None
        if kind == "call_expression":
            return (yield from self._call_type(node))
        if kind == "conditional_expression":
            for part in ("consequence", "alternative"):
                ctype = yield from _operand(node, part)
                if ctype is not None:
                    return ctype
            return None
        if kind == "comma_expression":
            return (yield from _operand(node, "right"))
        if kind == "assignment_expression":
            return (yield from _operand(node, "left"))
        return None

    def _call_type(self, node: Node) -> _Typing:
        function = node.child_by_field_name("function")
        if function is None:
            return None
        if function.type == "identifier":
            name = _text(function)
            if name in PASS_THROUGH or name in CONTAINER_OF:
                arguments = node.child_by_field_name("arguments")
                if arguments is None:
                    return None
                if name in PASS_THROUGH:
                    first = arguments.named_children
                    if not first:
                        return None
                    self._parents[arguments.id] = node
                    self._parents[first[0].id] = arguments
                    return (yield first[0])
                texts = _split_arguments(_text(arguments))
                if len(texts) >= 2:
                    named = parse_type_text(texts[1])
                    return named.pointer() if named is not None else None
                return None
        ftype = yield function
        if ftype is None:
            return None
        ftype = self.env.resolve(ftype)
        if ftype.base == FUNCTION and ftype.ptr <= 1:
            return ftype.ret
        return None

    def _identifier_type(self, node: Node) -> CType | None:
        name = _text(node)
        position = node.start_byte
        found = self._scopes_above(node, name, position)
        if found is not None:
            return found
        broken = self._outermost_error(node) if self.root.has_error else None
        if broken is not None:
            # The parser gave up on this stretch (often an #ifdef inside an
            # expression): the nearest declaration of the name before it, in
            # that stretch, is the one in force.
            found = self._recovered_declaration(broken, name, position)
            if found is not None:
                return found
        found = self.env.global_type(name)
        if found is None:
            top = self._top_item(node)
            if top is not None and top.type == "function_definition":
                # A tree that is wrong without an ERROR node (a macro read as an old
                # style function definition swallowing the next function): the
                # nearest declaration before the name in its top-level item.
                found = self._recovered_declaration(top, name, position)
        return found

    def _scopes_above(self, node: Node, name: str, position: int) -> CType | None:
        """The type of ``name`` in the block scopes enclosing ``node``, innermost first.

        What the scopes above a node say of a name is the same for every use
        inside that node (a declaration of an enclosing scope cannot start
        inside it), so it is remembered per (node, name): uses of a name at
        every level of a deep nest cost one walk up in all, not one each."""
        walked: list[Node] = []
        found: CType | None = None
        child, scope = node, self._parent(node)
        while scope is not None:
            key = (child.id, name)
            if key in self._above:
                found = self._above[key]
                break
            walked.append(child)
            if scope.type in _SCOPES:
                for start, ctype in self._scope(scope).get(name, ()):
                    if start <= position:
                        found = ctype
                if found is not None:
                    break
            child, scope = scope, self._parent(scope)
        for visited in walked:
            # a scope's declarations can sit inside its #ifdefs, ERROR stretches and
            # labels: what is above those depends on where in them the name is
            if not _holds_declarations(visited):
                self._above[(visited.id, name)] = found
        return found

    def _outermost_error(self, node: Node) -> Node | None:
        """The outermost ERROR node enclosing ``node`` (remembered per node on the way)."""
        walked: list[Node] = []
        above: Node | None = None
        child, parent = node, self._parent(node)
        while parent is not None:
            if child.id in self._errors:
                above = self._errors[child.id]
                break
            walked.append(child)
            child, parent = parent, self._parent(parent)
        for visited in reversed(walked):
            parent = self._parent(visited)
            if above is None and parent is not None and parent.type == "ERROR":
                above = parent
            self._errors[visited.id] = above
        return above

    def _top_item(self, node: Node) -> Node | None:
        """The top-level item that holds ``node`` (None for the root and its children)."""
        if self._items is None:
            self._items = self.root.children
            self._item_starts = [item.start_byte for item in self._items]
        index = bisect.bisect_right(self._item_starts, node.start_byte) - 1
        while index >= 0:
            item = self._items[index]
            if item.id == node.id:
                return None
            if item.end_byte >= node.end_byte:
                return item
            if item.start_byte < node.start_byte:
                return None
            index -= 1  # an empty item (a missing token) at the same place
        return None

    def _recovered_declaration(self, broken: Node, name: str, position: int) -> CType | None:
        key = broken.id
        table = self._recovered.get(key)
        if table is None:
            table = {}
            for node in QueryCursor(_compiled(_DECLARATIONS)).captures(broken).get("d", []):
                for declared_name, ctype in declarations(node, self.anon):
                    table.setdefault(declared_name, []).append((node.start_byte, ctype))
            self._recovered[key] = table
        best = None
        for start, ctype in sorted(table.get(name, ()), key=lambda entry: entry[0]):
            if start < position:
                best = ctype
        return best

    def _scope(self, scope: Node) -> dict[str, list[tuple[int, CType]]]:
        key = scope.id
        table = self._scopes.get(key)
        if table is None:
            table = {}
            if scope.type == "function_definition":
                for parameter in _parameters(scope):
                    for name, ctype in declarations(parameter, self.anon):
                        table.setdefault(name, []).append((0, ctype))
            elif scope.type == "for_statement":
                init = scope.child_by_field_name("initializer")
                if init is not None and init.type == "declaration":
                    for name, ctype in declarations(init, self.anon):
                        table.setdefault(name, []).append((init.start_byte, ctype))
            else:
                self._block_declarations(scope, table)
            self._scopes[key] = table
        return table

    def _block_declarations(self, block: Node, table: dict[str, list[tuple[int, CType]]]) -> None:
        stack = [iter(block.named_children)]
        while stack:  # without recursion: #ifdefs nest as deep as the file likes
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                continue
            kind = child.type
            if kind == "declaration":
                for name, ctype in declarations(child, self.anon):
                    table.setdefault(name, []).append((child.start_byte, ctype))
            elif _holds_declarations(child):
                stack.append(iter(child.named_children))

    def _parent(self, node: Node) -> Node | None:
        parent = self._parents.get(node.id)
        if parent is None and node.id != self.root.id:
            parent = node.parent  # a node no descent reached: tree-sitter's O(depth) way
            if parent is not None:
                self._parents[node.id] = parent
        return parent

    def _function_name(self, node: Node) -> str | None:
        """Name of the function definition holding ``node`` (remembered per node on the way)."""
        walked: list[int] = []
        name: str | None = None
        current: Node | None = self._parent(node)
        while current is not None:
            if current.id in self._functions:
                name = self._functions[current.id]
                break
            walked.append(current.id)
            if current.type == "function_definition":
                declarator = current.child_by_field_name("declarator")
                name = declarator_name(declarator) if declarator is not None else None
                break
            current = self._parent(current)
        for key in walked:
            self._functions[key] = name
        return name

    # -- results -----------------------------------------------------------
    def _add(self, query: Query, span: Node, obj: Node, loose: bool, pointer: bool) -> None:
        key = (span.start_byte, span.end_byte, query.operation, query.label)
        if key in self._seen:
            return
        self._seen.add(key)
        line, column = self._position(span.start_byte, span.start_point)
        end_line, end_column = self._position(span.end_byte, span.end_point)
        code = self._line_text(line)
        self.report.matches.append(Match(
            self.path, line, column, end_line, end_column, query.operation, query.ctype,
            query.attribute, code, self._function_name(span), _text(obj), pointer, loose,
        ))

    def _line_text(self, line: int) -> str:
        """Line ``line`` (1-based) as text, decoded once however many matches it holds."""
        if self._lines is None:
            self._lines = self.source.split(b"\n")
        text = self._decoded.get(line)
        if text is None:
            raw = self._lines[line - 1] if line - 1 < len(self._lines) else b""
            text = self._decoded[line] = raw.decode("utf-8", "replace").rstrip("\r\n")
        return text

    def _position(self, byte: int, point: Point) -> tuple[int, int]:
        """1-based line and column in characters (tree-sitter counts the column in bytes)."""
        column = point.column
        if not self._ascii:
            prefix = self.source[byte - column:byte]
            if not prefix.isascii():
                column = len(prefix.decode("utf-8", "replace"))
        return point.row + 1, column + 1


def _read(path: str) -> bytes | FileReport:
    """The bytes of a C file, or a report saying in one line why it cannot be searched."""
    try:
        with open(path, "rb") as handle:
            source = handle.read()
    except OSError as exc:
        return FileReport(path, error=os_cause(exc))
    if b"\0" in source[:8192]:
        return FileReport(path, error="not a C file (binary content)")
    return source


def _parameters(function: Node) -> list[Node]:
    """Parameter declarations of a function definition (not of the function
    pointers among them)."""
    node = function.child_by_field_name("declarator")
    while node is not None:
        if node.type == "function_declarator":
            inner = node.child_by_field_name("declarator")
            if inner is not None and inner.type == "identifier" or inner is None:
                params = node.child_by_field_name("parameters")
                return [p for p in params.named_children
                        if p.type == "parameter_declaration"] if params is not None else []
            node = inner
            continue
        nxt = node.child_by_field_name("declarator")
        if nxt is None:
            nxt = next((c for c in node.named_children if c.type.endswith("declarator")), None)
        node = nxt
    return []


def _is_use(node: Node, parent: Node | None) -> bool:
    """Is identifier ``node`` (child of ``parent``) a use of a name (not the name being declared)?"""
    if parent is None:
        return False
    kind = parent.type
    if kind.startswith("preproc_"):
        return False
    declarator = parent.child_by_field_name("declarator")
    if declarator is not None and declarator.id == node.id:
        return False
    if kind in ("parenthesized_declarator", "attributed_declarator", "goto_statement"):
        return False
    return True


def _holds_declarations(node: Node) -> bool:
    """Are declarations inside ``node`` those of the block around it?"""
    kind = node.type
    return kind.startswith("preproc_") or kind in ("ERROR", "labeled_statement")


def _operand(node: Node, name: str) -> _Typing:
    """The type of ``node``'s child in field ``name`` (None when it has none)."""
    child = node.child_by_field_name(name)
    return (yield child) if child is not None else None


class _Descent:
    """Finds the smallest nodes holding byte ranges given in increasing order,
    with one tree cursor, recording each node's parent on the way.

    The cursor only moves forward between lookups (up to the nearest node that
    holds the next range, then down), so a whole pass steps over each node of
    the tree about once: linear in the file whatever its depth, where a
    lookup from the root (and a ``.parent`` walk back up) is linear in the
    depth each time.
    """

    def __init__(self, root: Node, parents: dict[int, Node]) -> None:
        self._cursor = root.walk()
        self._path = [root]
        self._parents = parents

    def find(self, start: int, end: int) -> Node:
        cursor, path = self._cursor, self._path
        node = path[-1]
        # up (and forward among siblings) to a node that holds the range
        while len(path) > 1 and not (node.start_byte <= start and end <= node.end_byte):
            if node.end_byte <= start and cursor.goto_next_sibling():
                node = path[-1] = cursor.node  # type: ignore[assignment]
                self._parents[node.id] = path[-2]
                continue
            cursor.goto_parent()
            path.pop()
            node = path[-1]
        # down to the smallest one
        while cursor.goto_first_child_for_byte(start) is not None:
            child: Node = cursor.node  # type: ignore[assignment]
            if not (child.start_byte <= start and end <= child.end_byte):
                cursor.goto_parent()
                break
            self._parents[child.id] = node
            path.append(child)
            node = child
        return node


def _split_arguments(text: str) -> list[str]:
    """Top-level comma-separated arguments of ``(a, b(c, d), e)``."""
    inner = text.strip()
    if inner.startswith("(") and inner.endswith(")"):
        inner = inner[1:-1]
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in inner:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def _text(node: Node) -> str:
    raw = node.text
    return raw.decode("utf-8", "replace") if raw is not None else ""


def search_file(path: str, queries: list[Query], include_dirs: list[str] | None = None,
                loose: bool = False, cache_dir: str | None = None) -> FileReport:
    """Search one file for ``queries`` (convenience for a single file).

    Unreadable or non-C input is reported in ``FileReport.error``, never raised.
    """
    return Searcher(queries, include_dirs, loose, cache_dir).search_path(path)


