"""The text-template listing against the model path, on rulesets loaded by nft.

`list_json_text` (rules printed from per-shape text templates) must give byte
for byte what `dump_json(list_ruleset())` gives: on every conformance ruleset,
on chains of many rules of one shape with varied values, counters, comments,
anonymous sets, and shapes without any value repeated (where whole-message
templates are used); with the family, table and chain filters too.  And
`exists` must find exactly the rules that are there in a big chain.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nfkit.lab import Lab
from nfkit.nftables.jsonfmt import dump_json
from nfkit.nftables.listing import dump, exists, list_json_text, list_ruleset, open_socket
from nfkit.nftables.listtext import RuleTexts
from nfkit.nftables.model import Rule

_EXPIRES = re.compile(r', "expires": \d+')
RULESETS = sorted((Path(__file__).parent / "rulesets").glob("*.nft"))


@pytest.fixture(scope="module")
def ns():  # type: ignore[no-untyped-def]
    from tests.conftest import require_kernel

    require_kernel()
    with Lab("nklv") as lab:
        yield lab.add("a")


def _both(ns) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with ns.enter():
        fast = list_json_text()
        slow = dump_json(list_ruleset())
    # an element's remaining lifetime moves on between the two listings
    return _EXPIRES.sub("", fast), _EXPIRES.sub("", slow)


@pytest.mark.kernel
def test_conformance_rulesets_fast_equals_slow(ns) -> None:  # type: ignore[no-untyped-def]
    for path in RULESETS:
        ns.run("nft flush ruleset")
        ns.run(["nft", "-f", str(path)])
        fast, slow = _both(ns)
        assert fast == slow, path.name


def _varied(n: int) -> str:
    """Rules of a few shapes, values varying per rule, in two tables with sets."""
    lines = []
    for fam, tbl in (("ip", "t"), ("inet", "u")):
        lines.append(f"table {fam} {tbl} {{")
        lines.append("  set s { type ipv4_addr; elements = { 192.0.2.1, 192.0.2.2 } }")
        lines.append("  chain c { type filter hook input priority 0; policy accept;")
        for i in range(n):
            a = f"198.51.100.{i % 250}"
            lines += [
                f"    ip saddr {a} tcp dport {1 + i} counter packets {i} bytes {i * 60} accept",
                (f"    ip6 daddr 2001:db8::{i:x} udp sport {i + 7} drop" if fam == "inet"
                 else f"    ip daddr 192.0.2.{i} udp sport {i + 7} drop"),
                f"    meta l4proto {'tcp' if i % 2 else 'udp'} th dport {i + 1} accept",
                f'    iifname "veth{i}" meta mark {i} accept comment "rule {i}"',
                f"    ip saddr 203.0.113.0/{24 + i % 8} ct state established accept",
                f"    tcp dport {i + 1}-{i + 9} ip daddr {{ 192.0.2.{i % 200}, 192.0.2.250 }} drop",
                f"    icmp type {'echo-request' if i % 2 else 'echo-reply'} ip saddr @s accept",
                f"    ip dscp {i % 64} meta priority {i % 3}:{i % 7} accept",
            ]
        lines.append("  }")
        lines.append("  chain e {")
        # shapes without any value, used often enough for whole-message templates
        lines += ["    drop", "    counter accept", "    ip saddr 192.0.2.1 drop"] * 6
        lines.append("  }")
        lines.append("  chain d { type filter hook output priority 0;")
        for i in range(n):
            lines.append(f"    ip saddr {a} tcp dport {1 + i} counter jump e")
        lines.append("  }")
        lines.append("}")
    return "\n".join(lines) + "\n"


@pytest.mark.kernel
def test_varied_values_fast_equals_slow(ns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "varied.nft"
    f.write_text(_varied(40))
    ns.run("nft flush ruleset")
    ns.run(["nft", "-f", str(f)])
    fast, slow = _both(ns)
    assert fast == slow
    # and the templates did the work (not the general decoder every time)
    with ns.enter():
        sock = open_socket()
    try:
        texts = RuleTexts({})
        dump(sock, texts=texts)
    finally:
        sock.close()
    assert texts.rules == 2 * (9 * 40 + 18)
    # comments, anonymous sets and ct state flags stay general; counted rules do not
    assert texts.general < 0.4 * texts.rules


@pytest.mark.kernel
def test_filters_and_cli(ns) -> None:  # type: ignore[no-untyped-def]
    import sys

    ns.run("nft flush ruleset")
    ns.run(["nft", "-f", str(RULESETS[0])])
    ns.run(["nft", "-f", str(Path(__file__).parent / "rulesets" / "34-multi-table.nft")])
    cli = ns.run([sys.executable, "-m", "nfkit", "rules", "list", "--json"]).stdout
    full = json.loads(cli)
    fast, slow = _both(ns)
    assert cli == slow + "\n"
    tables = [o["table"] for o in full["nftables"] if "table" in o]
    t = tables[0]
    chains = [o["chain"]["name"] for o in full["nftables"]
              if "chain" in o and o["chain"]["table"] == t["name"]]
    with ns.enter():
        for args in ((t["family"], t["name"]), (t["family"], t["name"], chains[-1]),
                     (t["family"],)):
            # a chain alone is listed without its table object, as nft -j list chain
            assert list_json_text(*args) == dump_json(list_ruleset(*args),
                                                      tables=len(args) < 3), args


@pytest.mark.kernel
def test_exists_big_chain(ns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lines = ["table ip t {", " chain c { type filter hook input priority 0;"]
    for i in range(2000):
        lines.append(f"  ip saddr 198.51.{i >> 8}.{i & 255} tcp dport {1 + i} accept")
    lines += [" }", "}"]
    f = tmp_path / "big.nft"
    f.write_text("\n".join(lines) + "\n")
    ns.run("nft flush ruleset")
    ns.run(["nft", "-f", str(f)])

    def rule(addr: str, port: int, verdict: str = "accept") -> Rule:
        return Rule("ip", "t", "c", [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": addr}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                       "right": port}},
            {verdict: None}])

    with ns.enter():
        sock = open_socket()
    try:
        assert exists(rule("198.51.7.207", 2000), sock=sock)
        assert exists(rule("198.51.0.0", 1), sock=sock)
        assert not exists(rule("198.51.7.207", 1999), sock=sock)
        assert not exists(rule("198.51.7.207", 2000, "drop"), sock=sock)
        assert not exists(rule("198.51.100.1", 2000), sock=sock)
    finally:
        sock.close()
    # the command: its dump starts before the rule is compiled, and ends at a hit
    import sys

    def cli(chain: str, r: Rule, family: str = "ip") -> tuple[int, str]:
        p = ns.run([sys.executable, "-m", "nfkit", "rules", "exists", "-f", family, "-t", "t",
                    "-c", chain, json.dumps(r.expr)], check=False)
        return p.returncode, p.stderr.strip()

    assert cli("c", rule("198.51.7.207", 2000)) == (0, "")
    assert cli("c", rule("198.51.0.0", 1)) == (0, "")
    assert cli("c", rule("198.51.7.207", 1999)) == (1, "")
    assert cli("nosuch", rule("198.51.0.0", 1)) == (2, "nfkit: chain ip t nosuch: no such chain")
    code, err = cli("c", rule("198.51.0.0", 1), family="bogus")
    assert code == 2 and "'bogus' is not one of 'ip', 'ip6'" in err  # the option's choices
