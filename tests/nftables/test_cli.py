"""`nfkit rules` commands in a namespace: apply (dry run), replace, delete, flush, text list."""

from __future__ import annotations

import json

import pytest

from .conftest import NFKIT


def _doc(*rules: list) -> dict:
    objs: list = [{"table": {"family": "ip", "name": "t"}},
                  {"chain": {"family": "ip", "table": "t", "name": "c", "type": "filter",
                             "hook": "input", "prio": 0, "policy": "accept"}}]
    for expr in rules:
        objs.append({"rule": {"family": "ip", "table": "t", "chain": "c", "expr": expr}})
    return {"nftables": objs}


def dport(p: int) -> dict:
    return {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                      "right": p}}


@pytest.mark.kernel
def test_apply_replace_delete_flush(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "want.json"
    f.write_text(json.dumps(_doc([dport(22), {"accept": None}], [dport(80), {"accept": None}])))
    netns.run(NFKIT + ["rules", "apply", str(f)])
    assert "tcp dport 80 accept" in netns.run("nft list ruleset").stdout
    f.write_text(json.dumps(_doc([dport(22), {"accept": None}], [dport(25), {"drop": None}],
                                 [dport(80), {"accept": None}])))
    dry = netns.run(NFKIT + ["rules", "apply", "--dry-run", str(f)]).stdout
    assert dry.splitlines() == ["insert rule ip t c position 3 tcp dport 25 drop"]
    assert "tcp dport 25" not in netns.run("nft list ruleset").stdout
    netns.run(NFKIT + ["rules", "apply", str(f)])
    listing = json.loads(netns.run(NFKIT + ["rules", "list", "--json"]).stdout)["nftables"]
    rules = [o["rule"] for o in listing if "rule" in o]
    assert [r["expr"][0]["match"]["right"] for r in rules] == [22, 25, 80]
    h = rules[1]["handle"]
    netns.run(NFKIT + ["rules", "replace", "-f", "ip", "-t", "t", "-c", "c", "--handle", str(h),
                       json.dumps([dport(26), {"drop": None}])])
    assert "tcp dport 26 drop" in netns.run("nft list ruleset").stdout
    netns.run(NFKIT + ["rules", "delete", "-f", "ip", "-t", "t", "-c", "c", "--handle", str(h)])
    text = netns.run(NFKIT + ["rules", "list"]).stdout
    assert "tcp dport 26" not in text and "tcp dport 22 accept" in text
    assert text.startswith("table ip t {")
    netns.run(NFKIT + ["rules", "flush", "-t", "t"])
    assert "dport" not in netns.run("nft list ruleset").stdout
    netns.run(NFKIT + ["rules", "flush"])
    assert netns.run("nft list ruleset").stdout.strip() == ""


@pytest.mark.kernel
def test_bad_input_is_one_line_and_changes_nothing(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "bad.json"
    for doc in (
        _doc([dport(22), {"accept": None}], [{"match": {"op": "==", "left": {"payload": {
            "protocol": "tcp", "field": "dport"}}, "right": "no-such-port"}}]),
        _doc([{"jump": {"target": "missing"}}]),
        _doc([{"bogus": None}]),
    ):
        f.write_text(json.dumps(doc))
        p = netns.run(NFKIT + ["rules", "load", str(f)], check=False)
        assert p.returncode == 2
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
        assert "rule in chain ip t c" in p.stderr
        assert netns.run("nft list ruleset").stdout.strip() == ""
