"""Model objects of an nf_tables ruleset: tables, chains, rules, sets, maps, objects.

This module owns the shape of a ruleset in Python.  Statements inside a rule
are libnftables JSON statement objects (plain dicts, e.g.
``{"match": {"op": "==", "left": {...}, "right": 22}}``), so a rule built in
Python, read from a JSON file or listed from the kernel is the same value.  It
knows nothing of netlink or of text formats.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Any

FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
# The kinds of named stateful objects nfkit creates, lists and references.
OBJECT_KINDS = ("counter", "quota", "limit", "ct helper", "ct timeout", "ct expectation",
                "synproxy")


@dataclass
class Table:
    """A table: family, name, flags (e.g. ["dormant"])."""

    family: str
    name: str
    flags: list[str] = field(default_factory=list)
    handle: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.family, self.name)

    def __str__(self) -> str:
        return f"table {self.family} {self.name}"


@dataclass
class Chain:
    """A chain; base chains have type, hook, prio and policy (netdev ones a device)."""

    family: str
    table: str
    name: str
    type: str | None = None
    hook: str | None = None
    prio: int | None = None
    policy: str | None = None
    dev: str | list[str] | None = None
    handle: int | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.family, self.table, self.name)

    @property
    def is_base(self) -> bool:
        return self.hook is not None

    def __str__(self) -> str:
        return f"chain {self.family} {self.table} {self.name}"


@dataclass(slots=True)
class Rule:
    """A rule: its statements (libnftables JSON), comment, handle."""

    family: str
    table: str
    chain: str
    expr: list[dict[str, Any]] = field(default_factory=list)
    comment: str | None = None
    handle: int | None = None
    position: int | None = None  # add/insert after/before this handle
    index: int | None = None
    source: str | int | None = None  # where it came from: "#n" or n (object index in a file)

    @property
    def chain_key(self) -> tuple[str, str, str]:
        return (self.family, self.table, self.chain)

    def __str__(self) -> str:
        where = f" handle {self.handle}" if self.handle is not None else ""
        src = f" (#{self.source})" if isinstance(self.source, int) else \
            f" ({self.source})" if self.source else ""
        return f"rule in chain {self.family} {self.table} {self.chain}{where}{src}"


@dataclass
class Set:
    """A named set or map (``map`` holds the data type of a map)."""

    family: str
    table: str
    name: str
    type: str | list[str] = "ipv4_addr"
    flags: list[str] = field(default_factory=list)
    elem: list[Any] = field(default_factory=list)
    map: str | list[str] | None = None
    timeout: int | None = None
    gc_interval: int | None = None
    size: int | None = None
    policy: str | None = None
    comment: str | None = None
    handle: int | None = None
    stmt: list[dict[str, Any]] | None = None  # per-element statements, e.g. [{"counter": None}]
    auto_merge: bool = False  # nft's `auto-merge` (kept in the set's user data)
    # the expressions of nft's `typeof KEY [: DATA]` (nft's text only; nft 1.0.6's JSON
    # has only the datatypes, in ``type`` and ``map``, as for `type`): nft writes their
    # typeof records in the set's user data
    typeof: Any = None
    map_typeof: Any = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.family, self.table, self.name)

    @property
    def kind(self) -> str:
        return "map" if self.map is not None else "set"

    def __str__(self) -> str:
        return f"{self.kind} {self.family} {self.table} {self.name}"


@dataclass
class Obj:
    """A stateful object, one of OBJECT_KINDS (``body`` holds its fields)."""

    kind: str
    family: str
    table: str
    name: str
    body: dict[str, Any] = field(default_factory=dict)
    handle: int | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.family, self.table, self.name)

    def __str__(self) -> str:
        return f"{self.kind} {self.family} {self.table} {self.name}"


@dataclass
class Ruleset:
    """Tables and everything in them, in the order they are to be created."""

    tables: list[Table] = field(default_factory=list)
    chains: list[Chain] = field(default_factory=list)
    sets: list[Set] = field(default_factory=list)
    objs: list[Obj] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)

    def add(self, obj: Table | Chain | Rule | Set | Obj) -> Any:
        """Append an object (returns it, for chaining in examples)."""
        {Table: self.tables, Chain: self.chains, Rule: self.rules, Set: self.sets,
         Obj: self.objs}[type(obj)].append(obj)  # type: ignore[attr-defined]
        return obj

    def table(self, family: str, name: str, **kw: Any) -> Table:
        return self.add(Table(family, name, **kw))  # type: ignore[no-any-return]

    def chain(self, table: Table, name: str, **kw: Any) -> Chain:
        return self.add(Chain(table.family, table.name, name, **kw))  # type: ignore[no-any-return]

    def rule(self, chain: Chain, *expr: dict[str, Any], comment: str | None = None) -> Rule:
        return self.add(Rule(chain.family, chain.table, chain.name, list(expr),  # type: ignore[no-any-return]
                             comment=comment))

    def set(self, table: Table, name: str, **kw: Any) -> Set:
        return self.add(Set(table.family, table.name, name, **kw))  # type: ignore[no-any-return]

    def table_keys(self) -> builtins.set[tuple[str, str]]:
        keys = {t.key for t in self.tables}
        for group in (self.chains, self.sets, self.objs, self.rules):
            for o in group:
                keys.add((o.family, o.table))
        return keys
