"""Reading queries and C declarations into types (no file search)."""

from __future__ import annotations

import pytest

from nfkit.cgrep import CType, make_query, parse_expression
from nfkit.cgrep.ctype import declarations, parse_type_text
from nfkit.cgrep.environment import parse
from nfkit.errors import InputError


@pytest.mark.parametrize(("text", "ctype", "bare"), [
    ("struct nf_conn", "struct nf_conn", False),
    ("  union   nf_inet_addr ", "union nf_inet_addr", False),
    ("nf_conn", "nf_conn", True),
    ("int", "int", False),
])
def test_types_as_written(text: str, ctype: str, bare: bool) -> None:
    query = make_query(text, "status", "deref")
    assert (query.ctype, query.bare_tag) == (ctype, bare)


def test_bare_tag_names_both() -> None:
    assert make_query("nf_conn", None, "used").names == {"nf_conn", "struct nf_conn"}


def test_expression_form() -> None:
    query = parse_expression("struct sk_buff:len:test")
    assert (query.ctype, query.attribute, query.operation) == ("struct sk_buff", "len", "test")
    used = parse_expression("struct nf_conn::used")
    assert used.attribute is None
    func = parse_expression("struct nf_conn:^nf_ct_(get|put):func")
    assert func.pattern is not None and func.pattern.search("nf_ct_put")


def test_used_takes_no_attribute() -> None:
    with pytest.raises(InputError, match="takes no attribute"):
        make_query("struct nf_conn", "status", "used")


def test_member_name_must_be_an_identifier() -> None:
    with pytest.raises(InputError, match="not a C member name"):
        make_query("struct nf_conn", "a.b", "deref")


def _declared(source: str) -> dict[str, CType]:
    tree = parse(source.encode())
    node = tree.root_node.named_children[0]
    return dict(declarations(node, lambda keyword, body: f"{keyword} <anon>"))


def test_declarators() -> None:
    found = _declared("struct nf_conn *ct, **pp, arr[4], v, *(*fn)(int), *get(void);")
    assert found["ct"] == CType("struct nf_conn", 1)
    assert found["pp"] == CType("struct nf_conn", 2)
    assert found["arr"] == CType("struct nf_conn", 1)
    assert found["v"] == CType("struct nf_conn", 0)
    assert found["fn"] == CType("()", 1, CType("struct nf_conn", 1))
    assert found["get"] == CType("()", 0, CType("struct nf_conn", 1))


def test_anonymous_struct_and_primitives() -> None:
    assert _declared("struct { int a; } x;")["x"] == CType("struct <anon>")
    assert _declared("unsigned   long  n;")["n"] == CType("unsigned long")


def test_type_text_of_macro_arguments() -> None:
    assert parse_type_text("struct nf_conn") == CType("struct nf_conn")
    assert parse_type_text("const struct nf_conn *") == CType("struct nf_conn", 1)
    assert parse_type_text("u32") == CType("u32")
    assert parse_type_text("a + b") is None
