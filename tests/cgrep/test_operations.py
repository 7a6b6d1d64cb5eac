"""The five operations on small C files written for the tests (tests/cgrep/data).

Expected matches are (line, column), 1-based, column of the matched object
(`f` in `f->state`), which is where coccigrep puts its position too.  Each
test says what coccigrep 1.21 (spatch 1.1.1) reported on the same file when
the test was written, and where nfkit deliberately differs and why.
coccigrep is an oracle for writing these tests, not a dependency of them.
"""

from __future__ import annotations

import os

import pytest

from nfkit.cgrep import Searcher, make_query

DATA = os.path.join(os.path.dirname(__file__), "data")


def positions(path: str, type_text: str, attribute: str | None, operation: str,
              **options: object) -> list[tuple[int, int]]:
    searcher = Searcher([make_query(type_text, attribute, operation)], **options)  # type: ignore
    report = searcher.search_path(os.path.join(DATA, path))
    assert report.error is None
    return [(m.line, m.column) for m in report.matches]


SETS = [(17, 2), (18, 2), (19, 2), (20, 2), (21, 2), (22, 2), (23, 2), (24, 2), (25, 2),
        (26, 2), (27, 2), (28, 2), (29, 2), (30, 4), (31, 4), (32, 2)]
TESTS = [(34, 6), (36, 11), (38, 6), (40, 6), (40, 22), (40, 39), (40, 55), (46, 10)]


def test_deref_finds_every_access() -> None:
    # coccigrep: exactly these 30, including `!f->state` (42), the `&&` operand (44),
    # WRITE_ONCE's argument (48), set_bit's &f->state (49) and `(f->state) = 10` (51);
    # not the designated initializer `.state = 1` (14), which reaches no object.
    expected = SETS + [(33, 6)] + TESTS[:3] + TESTS[3:7] + [(42, 7), (44, 6), (46, 10),
                                                            (48, 13), (49, 14), (51, 3)]
    assert positions("ops.c", "struct flow", "state", "deref") == sorted(expected)


def test_set_is_assignment_target_or_increment() -> None:
    # coccigrep: the 16 in SETS: all eleven assignment operators, ++ and -- both
    # sides, `v.state` on a struct value.  Not WRITE_ONCE(f->state, 9) nor
    # set_bit(1, &f->state) (macro and function calls, not assignments): nfkit
    # follows.  nfkit differs on `(f->state) = 10` (51): coccigrep misses the
    # parenthesized target, nfkit reports it because it is a store all the same.
    assert positions("ops.c", "struct flow", "state", "set") == SETS + [(51, 3)]


def test_test_is_comparison_or_bitwise_and_operand() -> None:
    # coccigrep: ==, != (either side), &, <, <=, >, >= and `x & v.state`;
    # not `!f->state` (42) nor the bare `&&` operand (44): nfkit follows.
    assert positions("ops.c", "struct flow", "state", "test") == TESTS


def test_used_reports_every_use_of_variables_of_the_type() -> None:
    # coccigrep: 16:19 19:11 20:14 23:19 24:6 24:11 26:9 26:20 (parameters, locals,
    # the global in `gflow.state`, an argument inside a cast).  nfkit also reports
    # `other_put(&gflow)` (21:13): coccigrep misses the global under `&`.
    # Declarations themselves are not uses (16:15 `p` is not reported).
    assert positions("used.c", "struct flow", None, "used") == [
        (16, 19), (19, 11), (20, 14), (21, 13), (23, 19), (24, 6), (24, 11), (26, 9), (26, 20)]


def test_used_through_typedef() -> None:
    # coccigrep -t flow_t: only 20:14 and 24:11 (`g`, declared flow_t).  nfkit
    # deliberately treats the typedef and the struct as the one type they are.
    assert positions("used.c", "flow_t", None, "used") == \
        positions("used.c", "struct flow", None, "used")


def test_func_matches_arguments_of_the_type() -> None:
    # coccigrep: 19:11 `flow_put(p)`, 20:14 `flow_get(i, g)`, 22:11 the cast
    # `(struct flow *)0`, 23:19 `f` under `(void *)`.  Not other_put (name does
    # not match ^flow_).
    assert positions("used.c", "struct flow", "^flow_", "func") == [
        (19, 11), (20, 14), (22, 11), (23, 19)]


def test_func_takes_address_and_array_arguments() -> None:
    # coccigrep: 50:17 `f`, 50:36 `&v`.  nfkit also reports 50:56 `table`, an
    # array of struct flow passed as a `struct flow *` (arrays decay): coccigrep
    # misses it.
    assert positions("ops.c", "struct flow", "flow_", "func") == [(50, 17), (50, 36), (50, 56)]


def test_unclean_parse_is_still_searched() -> None:
    # coccigrep: 8:2 and 12:9 (spatch skips the broken statement too).
    searcher = Searcher([make_query("struct flow", "state", "deref")])
    report = searcher.search_path(os.path.join(DATA, "broken.c"))
    assert report.parse_errors
    assert [(m.line, m.column) for m in report.matches] == [(8, 2), (12, 9)]


def test_several_queries_in_one_pass() -> None:
    queries = [make_query("struct flow", "state", op) for op in ("set", "test")] + \
        [make_query("struct flow", None, "used")]
    report = Searcher(queries).search_path(os.path.join(DATA, "used.c"))
    by_op: dict[str, list[tuple[int, int]]] = {}
    for match in report.matches:
        by_op.setdefault(match.operation, []).append((match.line, match.column))
    assert by_op == {"used": positions("used.c", "struct flow", None, "used")}
    report = Searcher(queries).search_path(os.path.join(DATA, "ops.c"))
    assert sorted((m.line, m.column) for m in report.matches if m.operation == "set") == \
        SETS + [(51, 3)]
    assert sorted((m.line, m.column) for m in report.matches if m.operation == "test") == TESTS


def test_match_fields() -> None:
    searcher = Searcher([make_query("struct flow", "state", "set")])
    match = searcher.search_path(os.path.join(DATA, "ops.c")).matches[0]
    assert (match.line, match.column, match.end_line, match.end_column) == (17, 2, 17, 10)
    assert match.code == "\tf->state = 1;"
    assert match.function == "ops"
    assert match.expression == "f"
    assert match.pointer and not match.loose
    assert match.as_json()["end"] == [17, 10]


@pytest.mark.parametrize("name", ["flow", "struct flow"])
def test_bare_tag_means_struct(name: str) -> None:
    assert positions("ops.c", name, "state", "test") == TESTS


def test_declarations_recovered_where_the_parse_broke() -> None:
    # tree-sitter makes lines 7-25 one ERROR node (the #ifdef opens a brace in
    # each branch), so `f` and `g` have no function scope; nfkit takes the
    # nearest declaration before them in the broken stretch.  coccigrep: 19:11
    # and 24:9 as well (spatch handles this #ifdef).
    searcher = Searcher([make_query("struct flow", "state", "deref")])
    report = searcher.search_path(os.path.join(DATA, "recover.c"))
    assert report.parse_errors
    assert [(m.line, m.column) for m in report.matches] == [(19, 11), (24, 9)]


def test_func_reports_every_argument_of_the_type() -> None:
    # coccigrep: 10:18 and 10:35 only, the first argument of each call: its
    # template's disjunction stops at the first argument that matches.  nfkit
    # deliberately reports each argument of the type.
    assert positions("calls.c", "struct flow", "flow_cmp", "func") == [
        (10, 18), (10, 21), (10, 35), (10, 38)]
