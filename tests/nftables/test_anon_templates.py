"""Rules with one anonymous set of scalars (`tcp dport { 22, 80 } accept`) encoded from
their shape's template (`messages.Encoder._add_anon_templated`): the NEWSET, NEWSETELEM
and NEWRULE messages are the general compiler's, byte for byte, for any values (a value
the template's slot does not take goes the general way), on nft text and on nft's own
JSON listing; and the kernel holds what nft loads from the same text."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.nftables.compiler import RuleCompiler
from nfkit.nftables.jsonfmt import parse_commands

from .conftest import encoded_commands as _encode_cmds

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "bench" / "rules"))
from inputs import mixed_nft  # noqa: E402

PORTS = st.one_of(st.integers(0, 70000), st.sampled_from(["ssh", "http", "1-2", "@s", "x"]))
ADDRS = st.sampled_from(["192.0.2.1", "198.51.100.7", "10.0.0.0/8", "x", 7])
SET_FIELDS = [("tcp", "dport", PORTS), ("udp", "sport", PORTS), ("ip", "saddr", ADDRS),
              ("ip6", "daddr", st.sampled_from(["2001:db8::1", "2001:db8::2", "::1", "1.2.3.4"])),
              ("tcp", "flags", st.sampled_from(["syn", "ack", "fin", 2])),
              ("ip", "dscp", st.one_of(st.integers(0, 70), st.sampled_from(["cs1", "ef"])))]
SCALARS = [("ip", "daddr", ADDRS), ("tcp", "sport", PORTS)]


@st.composite
def anon_rules(draw: Any) -> list[dict[str, Any]]:
    """A rule with payload matches, one of them against an anonymous set (2-4 values,
    repeats possible), and a verdict."""
    out: list[dict[str, Any]] = []
    for proto, field, values in draw(st.lists(st.sampled_from(SCALARS), max_size=2)):
        out.append({"match": {"op": draw(st.sampled_from(["==", "!=", "<"])),
                              "left": {"payload": {"protocol": proto, "field": field}},
                              "right": draw(values)}})
    proto, field, values = draw(st.sampled_from(SET_FIELDS))
    items = draw(st.lists(values, min_size=2, max_size=4))
    out.insert(draw(st.integers(0, len(out))),
               {"match": {"op": draw(st.sampled_from(["==", "!="])),
                          "left": {"payload": {"protocol": proto, "field": field}},
                          "right": {"set": items}}})
    out.append({draw(st.sampled_from(["accept", "drop", "counter"])): None})
    return out


def _commands(family: str, rules: list[list[dict[str, Any]]]) -> Any:
    items: list[dict[str, Any]] = [
        {"add": {"table": {"family": family, "name": "t"}}},
        {"add": {"chain": {"family": family, "table": "t", "name": "c"}}}]
    items += [{"add": {"rule": {"family": family, "table": "t", "chain": "c", "expr": e}}}
              for e in rules]
    return parse_commands({"nftables": items})


@settings(max_examples=200, deadline=None)
@given(st.lists(anon_rules(), min_size=1, max_size=6), st.sampled_from(["ip", "inet"]),
       st.integers(1, 4))
def test_anonymous_set_templates_give_the_general_compilers_bytes(
        rules: list[list[dict[str, Any]]], family: str, repeat: int) -> None:
    """Any batch of such rules (each shape several times, with the values drawn: service
    names, ranges, prefixes, set references and bad values among them) encodes to the
    general compiler's bytes, or fails with its error."""
    batch = [r for r in rules for _ in range(repeat)]
    assert _encode_cmds(_commands(family, batch)) == \
        _encode_cmds(_commands(family, batch), anon_templates=False)


def test_anonymous_set_rules_of_one_shape_compile_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 rules of one shape with other ports each: the compiler compiles the first (to
    check the template against it), not the others; the bytes are its."""
    calls = []
    general = RuleCompiler._compile

    def counted(self: RuleCompiler, stmts: Any) -> Any:
        calls.append(stmts)
        return general(self, stmts)

    monkeypatch.setattr(RuleCompiler, "_compile", counted)
    rules = [[{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                         "right": f"192.0.2.{i % 250 + 1}"}},
              {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                         "right": {"set": [i + 1, i + 2, i + 3]}}},
              {"accept": None}] for i in range(200)]
    ours = _encode_cmds(_commands("inet", rules))
    assert len(calls) <= 2
    assert ours == _encode_cmds(_commands("inet", rules), anon_templates=False)
    assert len(calls) >= 200


def test_mixed_ruleset_text_and_nft_listing_same_bytes_as_general() -> None:
    """The benchmark's mixed ruleset as nft text, and as nft's own JSON listing of it
    (tests/nftables/nft: what `nft -j list ruleset` printed for the same text), encode
    with the templates to the general compiler's bytes."""
    from nfkit.nftables.nfttext import load_nft

    text = mixed_nft(2 * 8 * 24)
    assert _encode_cmds(load_nft(text, "m.nft")) == \
        _encode_cmds(load_nft(text, "m.nft"), anon_templates=False)


@pytest.mark.kernel
def test_nft_listing_of_anonymous_set_rules_same_bytes_and_state(tmp_path: Path) -> None:
    """Rules with anonymous sets of every kind the template takes (ports, service names,
    addresses, ip6 addresses, tcp flags, dscp, `!=`, with scalar matches before and
    after) loaded by nft; nft's `-j list ruleset` of them encodes with the templates to
    the general compiler's bytes, and `nfkit rules load` of the text and of the listing
    give the kernel state nft gives."""
    import json

    from nfkit.lab import Lab
    from nfkit.nftables.bulkjson import load_json_runs

    from .conftest import NFKIT, nft_json

    lines = []
    for i in range(40):
        lines += [f"tcp dport {{ {i + 1}, {i + 2} }} accept",
                  f"ip saddr 192.0.2.{i + 1} tcp dport != {{ ssh, http, {i + 1000} }} drop",
                  f"ip saddr {{ 192.0.2.{i + 1}, 198.51.100.{i + 1} }} counter accept",
                  f"ip6 daddr {{ 2001:db8::{i + 1:x}, 2001:db8::1:{i + 1:x} }} drop",
                  "tcp flags { syn, fin } drop",
                  f"ip dscp {{ cs1, {i % 40 + 20} }} tcp sport {i + 7} accept"]
    text = ("table inet t {\n\tchain c {\n\t\ttype filter hook input priority filter; "
            "policy accept;\n" + "".join(f"\t\t{x}\n" for x in lines) + "\t}\n}\n")
    path = tmp_path / "anon.nft"
    path.write_text(text)
    with Lab("nka") as lab:
        a, b, c = lab.add("a"), lab.add("b"), lab.add("c")
        a.run(["nft", "-f", str(path)])
        listing = a.run(["nft", "-j", "list", "ruleset"]).stdout
        (tmp_path / "anon.json").write_text(listing)
        b.run([*NFKIT, "rules", "load", str(path)])
        c.run([*NFKIT, "rules", "load", str(tmp_path / "anon.json")])
        theirs = nft_json(a)
        assert nft_json(b) == theirs
        assert nft_json(c) == theirs
    cmds = load_json_runs(listing)
    assert _encode_cmds(cmds) == _encode_cmds(load_json_runs(listing), anon_templates=False)
    assert len(json.loads(listing)["nftables"]) == 3 + len(lines)
