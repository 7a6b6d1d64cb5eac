"""cgrep on deeply nested C: time linear in the file, no recursion limit.

tree-sitter finds a node's parent by walking down from the root, so each
`.parent` costs the node's depth: a search that walked up from its matches
took time in the square of the nesting (20,000 braces: 15 s).  These tests
time the search itself at two depths and run the real command on nests far
deeper than Python's recursion limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nfkit.cgrep import Query, make_query, search_file

QUERIES = ("-e", "struct s:a:set", "-e", "struct s:a:test", "-e", "struct s::used",
           "-e", "struct s:g:func")


def nested_braces(depth: int) -> str:
    return ("struct s { int a; };\nvoid f(struct s *p) {\n" + "{" * depth
            + "p->a = 1; g(p);" + "}" * depth + "\n}\n")


def nested_parentheses(depth: int) -> str:
    return ("struct s { int a; };\nint f(struct s *p) {\n\treturn " + "(" * depth + "p->a"
            + ")" * depth + " == 1;\n}\n")


def nested_blocks(depth: int) -> str:
    """A block at every level, each setting the member: one match per level."""
    return ("struct s { int a; };\nvoid f(struct s *p) {\n" + "{ p->a = 1;\n" * depth
            + "}" * depth + "\n}\n")


def _search_time(path: Path, queries: list[Query]) -> tuple[float, int]:
    started = time.perf_counter()
    report = search_file(str(path), queries)
    return time.perf_counter() - started, len(report.matches)


@pytest.mark.parametrize(("shape", "depths"), [
    (nested_braces, (20_000, 80_000)),
    (nested_parentheses, (20_000, 80_000)),
    (nested_blocks, (5_000, 20_000)),  # a match at every level: 20,000 matches
])
def test_time_is_linear_in_the_depth(tmp_path: Path, shape: Callable[[int], str],
                                     depths: tuple[int, int]) -> None:
    queries = [make_query("struct s", "a", "set"), make_query("struct s", None, "used")]
    times = {}
    for depth in depths:
        path = tmp_path / f"nest{depth}.c"
        path.write_text(shape(depth))
        times[depth], found = _search_time(path, queries)
        assert found >= 1
    small, large = depths
    # linear: 4x the file takes about 4x the time (8x and half a second of slack
    # for a busy machine); the square of the depth would be 16x
    assert times[large] < 8 * times[small] + 0.5, times


def _run(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nfkit", "cgrep", "--no-cache", *QUERIES, str(path)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "NFKIT_CGREP_CACHE": ""})


DEEP = {
    "braces": nested_braces(200_000),
    "parentheses": nested_parentheses(200_000),
    "ifdefs at file scope": "#ifdef A\n" * 50_000 + "struct s { int a; };\n"
                            + "#endif\n" * 50_000 + "void f(struct s *p) { p->a = 1; }\n",
    "ifdefs in a block": "struct s { int a; };\nvoid f(void) {\n" + "#ifdef X\n" * 50_000
                         + "struct s *q;\n" + "#endif\n" * 50_000 + "q->a = 1; }\n",
    "nested structs": "struct s { " + "struct { " * 50_000 + "int a;" + " };" * 50_000
                      + " };\nvoid f(struct s *p) { p->a = 1; }\n",
    "dereferences": "struct s { int a; };\nvoid f(struct s *p) { g(" + "(*" * 50_000 + "&p"
                    + ")" * 50_000 + "); }\n",
    "conditionals": "struct s { int a; };\nstruct s *f(struct s *p, int x) { return "
                    + "x ? 0 : " * 50_000 + "p;}\nvoid h(struct s *p) { f(p, 1)->a = 1; }\n",
}


@pytest.mark.parametrize("name", list(DEEP))
def test_deep_nesting_is_searched_without_recursion(tmp_path: Path, name: str) -> None:
    path = tmp_path / "deep.c"
    path.write_text(DEEP[name])
    result = _run(path)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "RecursionError" not in result.stderr
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{path}:" in result.stdout


def test_remembered_scopes_keep_declarations_inside_ifdefs_in_order(tmp_path: Path) -> None:
    """What the scopes above a node say is remembered per node, except for the
    nodes that hold a block's own declarations (#ifdef, labels, ERROR)."""
    path = tmp_path / "ifdef_scope.c"
    path.write_text("struct s { int a; };\nstruct t { int a; };\nstruct t *q;\n\n"
                    "void f(void)\n{\n#ifdef X\n\tq->a = 1;\n\tstruct s *q;\n\tq->a = 2;\n"
                    "#endif\n}\n")
    report = search_file(str(path), [make_query("struct s", "a", "set"),
                                     make_query("struct t", "a", "set")])
    assert [(m.line, m.ctype) for m in report.matches] == [(8, "struct t"), (10, "struct s")]
