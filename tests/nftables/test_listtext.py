"""The text-template listing (listtext) prints exactly what the model path prints."""

from __future__ import annotations

import json
from typing import Any

from nfkit.nftables.commits import commit
from nfkit.nftables.jsonfmt import dump_json
from nfkit.nftables.listing import dump, list_json_text, list_ruleset, open_socket
from nfkit.nftables.listtext import RuleTexts
from nfkit.nftables.model import Ruleset

from .conftest import NFKIT, nft_json, strip


def _m(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _p(proto: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": proto, "field": field}}


def _ruleset(n: int) -> Ruleset:
    """Many rules of several shapes, and rules no template can print."""
    rs = Ruleset()
    t = rs.table("inet", "t")
    a = rs.chain(t, "a", type="filter", hook="input", prio=0, policy="accept")
    b = rs.chain(t, "b")
    for i in range(n):
        rs.rule(a, _m(_p("ip", "saddr"), f"192.0.2.{i % 250}"), _m(_p("tcp", "dport"), 1 + i),
                {"accept": None})
        rs.rule(b, _m(_p("ip6", "daddr"), f"2001:db8::{i:x}"), _m(_p("udp", "sport"), i, "!="),
                {"drop": None})
        if i % 7 == 0:
            rs.rule(a, _m({"meta": {"key": "mark"}}, i), _m({"ct": {"key": "state"}},
                                                             ["established", "related"], "in"),
                    {"counter": None}, {"accept": None}, comment=f"mark {i} \u00e9")
            rs.rule(b, _m({"meta": {"key": "iifname"}}, f"veth{i}"),
                    _m(_p("icmp", "type"), "echo-request"), {"accept": None})
        if i % 50 == 0:
            rs.rule(a, _m(_p("tcp", "dport"), {"set": [22, 80, 443 + i]}), {"accept": None})
    return rs


def test_text_listing_equals_model_listing(netns) -> None:  # type: ignore[no-untyped-def]
    with netns.enter():
        commit(_ruleset(1500))
        text = list_json_text()
        assert text == dump_json(list_ruleset())
        for chain in ("a", "b"):
            assert list_json_text("inet", "t", chain) == dump_json(list_ruleset("inet", "t", chain),
                                                                   tables=False)
        # the templates did the work: few rules were decoded one by one
        s = open_socket()
        texts = RuleTexts({})
        dump(s, texts=texts)
        s.close()
        rules = texts.rules
        assert rules == len(json.loads(text)["nftables"]) - 4 == 2 * 1500 + 2 * 215 + 30
        assert texts.general < 0.2 * rules  # the rest printed from templates
    # and nft agrees with the command's output
    out = netns.run([*NFKIT, "rules", "list", "--json"]).stdout
    assert strip(json.loads(out)) == nft_json(netns)


def test_listing_a_missing_table_or_chain_is_an_error(netns) -> None:  # type: ignore[no-untyped-def]
    netns.run("nft add table ip t")
    for args, msg in ((["--json", "-f", "ip", "-t", "nosuch"], "table ip nosuch: no such table"),
                      (["-t", "t", "-c", "nosuch"], "chain t nosuch: no such chain"),
                      (["--json", "-t", "t", "-c", "nosuch"], "chain t nosuch: no such chain")):
        p = netns.run([*NFKIT, "rules", "list", *args], check=False)
        assert (p.returncode, p.stderr.strip(), p.stdout) == (2, f"nfkit: {msg}", ""), p
    p = netns.run([*NFKIT, "rules", "list", "--json", "-t", "t"])
    assert [list(x) for x in json.loads(p.stdout)["nftables"]] == [["metainfo"], ["table"]]


def test_nft_text_listing_equals_model_listing(netns) -> None:  # type: ignore[no-untyped-def]
    """`nfkit rules list` (nft text, the default) has the template path JSON has: the
    same text as the model path, most rules printed from templates; on nfkit's
    ruleset and on the benchmark's mixed one loaded by nft."""
    import sys
    from pathlib import Path

    from nfkit.nftables.listing import list_text
    from nfkit.nftables.textfmt import to_text

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "rules"))
    from inputs import SHAPES, mixed_nft

    with netns.enter():
        commit(_ruleset(1500))
        assert list_text() == to_text(list_ruleset())
        for chain in ("a", "b"):
            assert list_text("inet", "t", chain) == to_text(list_ruleset("inet", "t", chain))
        s = open_socket()
        texts = RuleTexts({}, style="nft")
        dump(s, texts=texts)
        s.close()
        assert texts.rules == 2 * 1500 + 2 * 215 + 30
        assert texts.general < 0.2 * texts.rules
    netns.run("nft flush ruleset")
    netns.run(["nft", "-f", "-"], input=mixed_nft(8 * 8 * len(SHAPES)))
    with netns.enter():
        assert list_text() == to_text(list_ruleset())
    assert netns.run([*NFKIT, "rules", "list"]).stdout == to_text(list_ruleset_in(netns))


def list_ruleset_in(ns: Any) -> Any:
    with ns.enter():
        return list_ruleset()
