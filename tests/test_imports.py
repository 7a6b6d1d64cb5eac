"""The import graph of src/nfkit: no cycle, no private name used across modules.

Every import counts, at module level and inside functions (a function-level
import hides a cycle, it does not remove it).  A private name is one with a
single leading underscore; using it from another module (``from m import _x``
or ``m._x`` on an imported module) couples the two modules to an internal
detail.  The exceptions below are listed one by one with their reason; any
other finding fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "nfkit"

# (module, imported module, name) -> why it is allowed.  Keep this short.
PRIVATE_EXCEPTIONS: dict[tuple[str, str, str], str] = {}
# frozenset of modules in one cycle -> why it is allowed.
CYCLE_EXCEPTIONS: dict[frozenset[str], str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        rel = p.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _resolve(mod: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    base = pkg[: len(pkg) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _scan(mod: str, path: Path) -> tuple[set[str], list[tuple[str, str, int]]]:
    """(modules ``mod`` imports, private uses as (imported module, name, line))."""
    tree = ast.parse(path.read_text(), str(path))
    deps: set[str] = set()
    private: list[tuple[str, str, int]] = []
    bound: dict[str, str] = {}  # local name -> nfkit module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES:
                    deps.add(a.name)
                    bound[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(mod, path, node)
            if src not in MODULES:
                continue
            for a in node.names:
                sub = f"{src}.{a.name}"
                if sub in MODULES:
                    deps.add(sub)
                    bound[a.asname or a.name] = sub
                else:
                    deps.add(src)
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        private.append((src, a.name, node.lineno))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in bound and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            private.append((bound[node.value.id], node.attr, node.lineno))
    deps.discard(mod)
    return deps, [p for p in private if p[0] != mod]


GRAPH: dict[str, set[str]] = {}
PRIVATE: list[tuple[str, str, str, int]] = []
for _m, _p in MODULES.items():
    GRAPH[_m], _priv = _scan(_m, _p)
    PRIVATE.extend((_m, src, name, line) for src, name, line in _priv)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_scan_sees_the_tree() -> None:
    assert "nfkit.netlink.codec" in MODULES and "nfkit.nftables.transaction" in MODULES
    assert "nfkit.netlink.codec" in GRAPH["nfkit.nftables.expressions"]


def test_no_import_cycle() -> None:
    found = [c for c in _cycles(GRAPH) if frozenset(c) not in CYCLE_EXCEPTIONS]
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_private_name_across_modules() -> None:
    found = [f"{m}:{line} uses {src}.{name}" for m, src, name, line in PRIVATE
             if (m, src, name) not in PRIVATE_EXCEPTIONS]
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_exceptions_are_still_needed() -> None:
    used = {(m, src, name) for m, src, name, _line in PRIVATE}
    assert not set(PRIVATE_EXCEPTIONS) - used
    cycles = {frozenset(c) for c in _cycles(GRAPH)}
    assert not set(CYCLE_EXCEPTIONS) - cycles


def test_the_checker_finds_a_cycle_and_a_private_use() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# nfkit.nftables in one-way layers: a module imports only modules of lower layers.
NFTABLES_LAYERS = [
    ["cgroupv2"],                             # cgroup v2 paths <-> ids, as nft reads them
    ["model", "types", "dumpreq", "commitguard", "trialcommit", "quicknl",
     "nft_lalr", "setudata"],                 # the model, datatypes, dump requests;
    #                                           SIGINT held, scratch commits; bare
    #                                           requests; nft.lark's LALR tables (data);
    #                                           nft's user data of sets
    ["validate", "schema", "plainelements", "lalrtables"],  # every value checked; every
    #                                           key encoded; plain addresses into a set,
    #                                           alone; the shipped LALR tables loaded
    ["expressions", "jsonfmt", "textfmt"],    # the kernel's expressions; the formats
    ["templates"],                            # value slots -> statement and rule templates,
    #                                           the core's Template and Layout
    ["compiler", "decompiler"],               # statements -> expressions, and back
    ["shapes"],                               # rule shapes learned from the compiler
    ["messages"],                             # model <-> NEW*/DEL* messages
    ["anonnames"],                            # a batch's anonymous sets named as the kernel would
    ["bulkjson"],                             # big JSON files, read as templates
    ["nfttext"],                              # nft's own text in, as JSON commands
    ["elements"],                             # set elements in nft's syntax, read in bulk
    ["listtext"],                             # big listings, printed from templates
    ["listing"],                              # GET* dumps, exists
    ["existscache"],                          # exists from fingerprints per generation
    ["commits"],                              # batches sent, single-rule changes
    ["diffs"],                                # smallest change sets, apply
    ["transaction"],                          # the public names of the three above
    ["monitor", "trace"],                     # change events and traced packets, as nft
]


def test_nftables_layers_point_down() -> None:
    rank = {f"nfkit.nftables.{m}": i for i, layer in enumerate(NFTABLES_LAYERS) for m in layer}
    package = {m for m in MODULES if m.startswith("nfkit.nftables.")}
    assert package - set(rank) == set(), "put every nftables module in a layer"
    bad = [f"{a} -> {b}" for a in sorted(package) for b in sorted(GRAPH[a])
           if b in rank and rank[b] >= rank[a]]
    assert not bad, "imports that do not point down:\n" + "\n".join(bad)
