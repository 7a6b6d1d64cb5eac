"""Rule shapes learned by probing the compiler (nfkit.nftables.shapes) and the JSON
reader's runs built on them (bulkjson): the fast path gives the same kernel bytes
as the general path, on nft's own `-j list ruleset` output and on every rule of the
nft text corpus.  The listing is made by nft itself (the oracle) in a namespace."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.errors import InputError
from nfkit.nftables.compiler import RuleCompiler
from nfkit.nftables.nfttext import to_json
from nfkit.nftables.shapes import learn, leaves, replaced

from .conftest import encoded_commands
from .test_bulkjson import _encode
from .test_nfttext import _shape_pair

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "bench" / "rules"))
from inputs import SHAPES, mixed_nft  # noqa: E402


def _readable(path: Path) -> bool:
    try:
        to_json(path.read_text(), str(path), [str(path.parent)])
    except InputError:  # refused by the text reader (test_nfttext says which and why)
        return False
    return True


CORPUS = sorted(p for d in ("examples", "distro") for p in (HERE / "nft" / d).glob("*.nft")
                if _readable(p))


def _compiler(family: str, table: str) -> Any:
    def compile_expr(expr: list[Any]) -> bytes | None:
        rc = RuleCompiler(family, table)
        try:
            exprs, anon = rc.compile(expr)
        except Exception:
            return None
        return None if anon else b"".join(exprs)
    return compile_expr


def _tripled(items: list[dict[str, Any]]) -> str:
    """Every rule three times in a row (so the reader learns its shape)."""
    out = []
    for it in items:
        out.append(it)
        if "rule" in it or ("add" in it and "rule" in it["add"]):
            out += [it, it]
    return json.dumps({"nftables": out})


@pytest.fixture(scope="module")
def nft_listing() -> list[dict[str, Any]]:
    """nft -j list ruleset of the benchmark's mixed ruleset (24 shapes, 3 rules each),
    loaded by nft in a fresh namespace."""
    from nfkit.lab import Lab

    with Lab("nks") as lab:
        ns = lab.add("a")
        ns.run(["nft", "-f", "-"], input=mixed_nft(3 * 8 * len(SHAPES)))
        return json.loads(ns.run("nft -j list ruleset").stdout)["nftables"]  # type: ignore[no-any-return]


@pytest.mark.kernel
def test_nft_listing_same_bytes_as_general_path(nft_listing: list[dict[str, Any]]) -> None:
    text = json.dumps({"nftables": nft_listing})
    fast, general = _encode(text, True), _encode(text, False)
    assert fast == general
    # and the fast path was taken: most rules read as runs
    from nfkit.nftables.bulkjson import RuleRun, load_json_runs

    cmds = load_json_runs(text)
    in_runs = sum(len(c.obj) for c in cmds if type(c.obj) is RuleRun)
    assert in_runs >= 0.7 * sum(1 for it in nft_listing if "rule" in it)


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_rules_same_bytes_as_general_path(path: Path) -> None:
    items = to_json(path.read_text(), str(path), [str(path.parent)])["nftables"]
    text = _tripled(items)
    assert _encode(text, True) == _encode(text, False)


def _value(cls: tuple[Any, ...]) -> Any:
    kind = cls[0]
    if kind == "int":
        return st.integers(1, 2**64 - 1)
    if kind in ("ipv4", "ipv4net"):  # a prefix's address: host bits set or not
        return st.ip_addresses(v=4).map(str)
    if kind in ("ipv6", "ipv6net"):
        return st.ip_addresses(v=6).map(lambda a: socket.inet_ntop(socket.AF_INET6, a.packed))
    return st.text("abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=cls[1],
                   max_size=cls[-1])  # ("text", n) or ("text", least, most)


@pytest.mark.kernel
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_learned_template_equals_the_compiler(nft_listing: list[dict[str, Any]],
                                              data: Any) -> None:
    """Any values in a learned shape's slots: the template filled in is what the
    compiler makes of the rule with those values, or the value does not fit the
    slot (then the rule goes the general way)."""
    rules = [it["rule"] for it in nft_listing if "rule" in it]
    r = data.draw(st.sampled_from(rules))
    compile_expr = _compiler(r["family"], r["table"])
    tpl = learn(r["expr"], compile_expr)
    if tpl is None or not tpl.slots:
        return
    lv = leaves(r["expr"])
    values = [data.draw(_value(s.cls)) for s in tpl.slots]
    expr = r["expr"]
    for s, v in zip(tpl.slots, values, strict=True):
        expr = replaced(expr, lv[s.leaf][0], v)
    try:
        filled = tpl.fill(values)
    except (OverflowError, OSError, ValueError, UnicodeError):
        return  # the reader's column encoder refuses it too: the general path
    assert filled == compile_expr(expr)


@settings(max_examples=150, deadline=None)
@given(_shape_pair())
def test_nft_text_runs_same_bytes_as_lark(text: str) -> None:
    """nft text: runs of lines read by the learned line templates (`nfttext.TextRun`)
    encode to the bytes of the lines read one by one by lark, without templates."""
    fast, slow = _templated_and_line_by_line(text)
    if isinstance(fast, str) or isinstance(slow, str):
        assert isinstance(fast, str) and isinstance(slow, str)
        return
    assert fast == slow


def _encode_cmds(cmds: Any, anon_templates: bool = True) -> Any:
    return encoded_commands(cmds, anon_templates)


def _templated_and_line_by_line(text: str) -> tuple[Any, Any]:
    """nft ``text`` encoded as a load reads it (line templates) and as lark reads its lines
    one by one without templates: each the bytes, or the error's text."""
    from nfkit.nftables.jsonfmt import parse_commands
    from nfkit.nftables.nfttext import Reader, load_nft

    try:
        fast = _encode_cmds(load_nft(text, "d.nft"))
    except InputError as exc:
        fast = str(exc)
    r = Reader(templates=False, line_lexer=False)
    try:
        r.read_text(text, "d.nft")
        slow = _encode_cmds(parse_commands({"nftables": [x.item for x in r.out]}))
    except InputError as exc:
        slow = str(exc)
    return fast, slow


@pytest.mark.parametrize("odd", ["10.0.0.256", "999.1.1.1", "010.0.0.1", "1.2.3.04",
                                 "4294967296.1.1.1", "1.22.333", "1..2.3.4", "1.2.3.4.5",
                                 "1234567.8", "0.0.0.0", "255.255.255.255"])
def test_digits_and_dots_in_a_run_of_address_lines(odd: str) -> None:
    """nft text: a line template's IPv4 slot takes what nft.lark's IP4 terminal lexes
    (`nfttext._IP4_TOKEN`), so a line whose "address" is none has the template's tokens;
    its value is refused by the slot and the line read alone: the bytes (or the error)
    of the lines read one by one by lark."""
    lines = [f"ip saddr 192.0.2.{i} tcp dport {i + 1} accept" for i in range(40)]
    lines[20] = f"ip saddr {odd} tcp dport 21 accept"
    text = "table ip t {\n\tchain c {\n" + "".join(f"\t\t{ln}\n" for ln in lines) + "\t}\n}\n"
    fast, slow = _templated_and_line_by_line(text)
    assert fast == slow
