"""Each way of reaching a member (tests/cgrep/data/reach.c, member `dst` of struct tuple).

reach.c includes <net/conn.h>, found only with -I tests/cgrep/data/include,
and "local.h" beside it.  coccigrep 1.21 reported, for -t 'struct tuple'
-a dst -o deref: lines 19 20 21 22 23 24 25 26 27 28 30 31 33 34 41 when run
from a directory where spatch could find net/conn.h, and without 19, 33, 34
when it could not (it sees only the directory of the first file).
"""

from __future__ import annotations

import os

from nfkit.cgrep import Searcher, make_query

DATA = os.path.join(os.path.dirname(__file__), "data")
INCLUDE = os.path.join(DATA, "include")

# line -> how the member is reached
WAYS = {
    19: "nested members and an array element, type from a header: ct->tuplehash[dir].tuple.dst",
    20: "pointer through a typedef of the struct",
    21: "typedef of a pointer",
    22: "(*pp)->dst",
    23: "pp[1]->dst",
    24: "local struct value",
    25: "global struct value",
    26: "array parameter element arr[dir].dst",
    27: "(*tt).dst",
    28: "cast ((struct tuple *)opaque)->dst",
    29: "macro argument READ_ONCE(tt)->dst (coccigrep: missed)",
    30: "function result tuple_get(1)->dst",
    31: "member of a struct from a quoted include: h->t.dst",
    33: "function declared in a header: conn_tuple(ct)->dst",
    34: "pointer member from a header: ct->orig->dst",
    41: "outer tt again after an inner block redeclared tt",
    42: "container_of(..., struct holder, ...)->t.dst (coccigrep: missed)",
}
HEADER_TYPED = {19, 33, 34}


def lines(**options: object) -> list[int]:
    searcher = Searcher([make_query("struct tuple", "dst", "deref")], **options)  # type: ignore
    report = searcher.search_path(os.path.join(DATA, "reach.c"))
    assert report.error is None
    assert all(m.column == 7 for m in report.matches)
    return [m.line for m in report.matches]


def test_every_way_with_the_include_path() -> None:
    # nfkit differs from coccigrep on 29 and 42: it types READ_ONCE() and
    # container_of() results, which spatch leaves untyped.  Not matched, rightly:
    # 35 (unknown->dst: type unknown), 36 (cast to struct other), 38 (inner tt is
    # a struct other).
    assert lines(include_dirs=[INCLUDE]) == sorted(WAYS)


def test_without_the_header_its_types_are_unknown() -> None:
    assert lines() == sorted(set(WAYS) - HEADER_TYPED)


def test_loose_matches_unknown_types_and_says_so() -> None:
    searcher = Searcher([make_query("struct tuple", "dst", "deref")], loose=True)
    report = searcher.search_path(os.path.join(DATA, "reach.c"))
    loose = [m.line for m in report.matches if m.loose]
    # the header-typed ones and `unknown->dst`; never the struct other ones (36, 38)
    assert loose == [19, 33, 34, 35]
    assert [m.line for m in report.matches if not m.loose] == sorted(set(WAYS) - HEADER_TYPED)
    assert report.unresolved == 4


def test_typedef_query_and_struct_query_agree() -> None:
    # coccigrep -t tuple_t: only 20, 27, 41 (objects declared tuple_t).
    searcher = Searcher([make_query("tuple_t", "dst", "deref")], [INCLUDE])
    report = searcher.search_path(os.path.join(DATA, "reach.c"))
    assert [m.line for m in report.matches] == sorted(WAYS)


def test_member_of_anonymous_union() -> None:
    # coccigrep: 32:7 too.
    searcher = Searcher([make_query("struct holder", "anon_dst", "set"),
                         make_query("struct holder", "anon_dst", "deref")])
    report = searcher.search_path(os.path.join(DATA, "reach.c"))
    assert [(m.line, m.column, m.operation) for m in report.matches] == [(32, 7, "deref")]


def test_member_of_nested_struct() -> None:
    searcher = Searcher([make_query("struct tuple_hash", "tuple", "deref")], [INCLUDE])
    report = searcher.search_path(os.path.join(DATA, "reach.c"))
    assert [(m.line, m.column, m.expression) for m in report.matches] == \
        [(19, 7, "ct->tuplehash[dir]")], (report, searcher.headers._tables.keys())


def test_headers_are_parsed_once_per_searcher(tmp_path: object) -> None:
    searcher = Searcher([make_query("struct tuple", "dst", "deref")], [INCLUDE])
    for _ in range(3):
        searcher.search_path(os.path.join(DATA, "reach.c"))
    assert searcher.headers.parsed == 2  # net/conn.h and local.h, once each


def test_header_cache_on_disk(tmp_path: object) -> None:
    cache = str(tmp_path)
    first = Searcher([make_query("struct tuple", "dst", "deref")], [INCLUDE], cache_dir=cache)
    assert [m.line for m in first.search_path(os.path.join(DATA, "reach.c")).matches] == \
        sorted(WAYS)
    second = Searcher([make_query("struct tuple", "dst", "deref")], [INCLUDE], cache_dir=cache)
    assert [m.line for m in second.search_path(os.path.join(DATA, "reach.c")).matches] == \
        sorted(WAYS)
    assert (first.headers.parsed, second.headers.parsed) == (2, 0)
    assert second.headers.from_cache == 2


def test_used_through_header_typedefs_and_globals() -> None:
    # glob_use.c never writes "struct tuple": its parameter is a typedef from
    # net/glob.h, the two globals are declared there.  nfkit must still read it.
    searcher = Searcher([make_query("struct tuple", None, "used")], [INCLUDE])
    path = os.path.join(DATA, "glob_use.c")
    assert searcher.probe(path) is None  # worth parsing
    report = searcher.search_path(path)
    assert [(m.line, m.column, m.expression) for m in report.matches] == [
        (6, 9, "header_tuple"), (6, 28, "a"), (6, 37, "header_tuple_p")]
    # without the include path nothing tells the type, and the file is skipped unparsed
    bare = Searcher([make_query("struct tuple", None, "used")])
    skipped = bare.probe(path)
    assert skipped is not None and not skipped.parsed


def test_used_of_a_header_typedef_finds_the_struct_it_names() -> None:
    # -t tuple_alias2_t: a typedef (of a typedef) of struct tuple in net/glob.h;
    # glob_use.c never writes that name (it writes tuple_alias_t and the globals).
    searcher = Searcher([make_query("tuple_alias2_t", None, "used")], [INCLUDE])
    report = searcher.search_path(os.path.join(DATA, "glob_use.c"))
    assert [m.line for m in report.matches] == [6, 6, 6]


def test_struct_defined_inside_a_function() -> None:
    # coccigrep: 12:9 too.  The member table of the function-local struct holder
    # is found by looking into function bodies once the file scope has none.
    searcher = Searcher([make_query("struct flow", "state", "deref")])
    report = searcher.search_path(os.path.join(DATA, "inner.c"))
    assert [(m.line, m.column, m.expression) for m in report.matches] == [(12, 9, "h.flow")]
