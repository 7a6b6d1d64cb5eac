"""No statement is ever loaded shorter than it was written.

A set update that carries statements (a meter: `update @m { ip saddr limit rate
over 20/second }`) reaches the kernel with them (NFTA_DYNSET_EXPR, or
NFTA_DYNSET_EXPRESSIONS for several) and lists back as nft lists it; and a key,
flag or form the compiler does not encode, anywhere in a statement, is an
InputError naming the statement, never a rule without it (property test over a
catalogue of every statement form the compiler encodes, with the encoding
templates warmed up first, since a template reused for a later rule is where a
key could slip through unread).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfkit.errors import InputError
from nfkit.lab import Lab, Namespace
from nfkit.nftables.compiler import RuleCompiler
from nfkit.nftables.decompiler import RuleDecoder
from nfkit.nftables.expressions import parse_exprs
from nfkit.nftables.model import Set

from ..conftest import require_kernel
from .conftest import NFKIT, nft_json

SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
DPORT = {"payload": {"protocol": "tcp", "field": "dport"}}
MARK = {"meta": {"key": "mark"}}

# Every statement form the compiler encodes, valid as written (ip family, table t).
CATALOGUE: list[list[dict[str, Any]]] = [
    [{"match": {"op": "==", "left": DPORT, "right": 22}}, {"accept": None}],
    [{"match": {"left": SADDR, "right": "192.0.2.1"}}, {"drop": None}],
    [{"match": {"op": "==", "left": SADDR, "right": {"prefix": {"addr": "192.0.2.0", "len": 24}}}}],
    [{"match": {"op": "==", "left": DPORT, "right": {"range": [1, 1024]}}}],
    [{"match": {"op": "==", "left": DPORT, "right": {"set": [22, 80]}}}],
    [{"match": {"op": "==", "left": {"&": [MARK, 255]}, "right": 1}}],
    [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established"]}}],
    [{"match": {"op": "==", "left": {"payload": {"base": "th", "offset": 16, "len": 16}},
                "right": 22}}],
    [{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}},
                "right": "local"}}],
    [{"mangle": {"key": MARK, "value": {"jhash": {"mod": 2, "expr": SADDR, "seed": 1}}}}],
    [{"mangle": {"key": MARK, "value": {"numgen": {"mode": "inc", "mod": 2}}}}],
    [{"mangle": {"key": {"ct": {"key": "mark"}}, "value": 5}}],
    [{"vmap": {"key": DPORT, "data": {"set": [[22, {"accept": None}],
                                              [23, {"jump": {"target": "o"}}]]}}}],
    [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "o"}}],
    [{"limit": {"rate": 10, "burst": 5, "per": "second", "inv": True}}],
    [{"limit": {"rate": 1, "burst": 0, "per": "minute", "rate_unit": "mbytes",
                "burst_unit": "bytes"}}],
    [{"quota": {"val": 10, "val_unit": "mbytes", "inv": True}}],
    [{"ct count": {"val": 3, "inv": True}}],
    [{"log": {"prefix": "x ", "level": "info", "flags": ["tcp options"]}}],
    [{"log": {"group": 2, "snaplen": 64, "queue-threshold": 2}}],
    [{"reject": {"type": "icmp", "expr": "host-unreachable"}}],
    [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
     {"reject": {"type": "tcp reset"}}],
    [{"snat": {"addr": "203.0.113.1", "port": {"range": [1000, 2000]},
               "flags": ["persistent"]}}],
    [{"dnat": {"addr": {"range": ["192.0.2.1", "192.0.2.9"]}}}],
    [{"masquerade": {"port": 1024, "flags": "random"}}],
    [{"redirect": {"port": 8080}}],
    [{"set": {"op": "update", "elem": SADDR, "set": "@m",
              "stmt": [{"limit": {"rate": 20, "burst": 5, "per": "second", "inv": True}}]}}],
    [{"set": {"op": "add", "elem": {"elem": {"val": SADDR, "timeout": 10}}, "set": "@m",
              "stmt": [{"counter": None}, {"quota": {"val": 1, "val_unit": "mbytes"}}]}}],
    [{"map": {"op": "add", "elem": SADDR, "data": MARK, "map": "@mm"}}],
    [{"notrack": None}],
    [{"queue": {"num": 1, "flags": ["bypass"]}}],
    [{"mangle": {"key": MARK, "value": {"<<": [MARK, 8]}}}],
    [{"match": {"op": "==", "left": {"socket": {"key": "mark"}}, "right": 5}}],
    [{"match": {"op": ">", "left": {"rt": {"key": "mtu"}}, "right": 1400}}],
    [{"match": {"op": "==", "left": {"fib": {"result": "oif", "flags": ["daddr"]}},
                "right": True}}],
    [{"dup": {"addr": "192.0.2.1", "dev": "lo"}}],
    [{"tproxy": {"addr": "192.0.2.1", "port": 80}}],
    [{"synproxy": {"mss": 1460, "wscale": 7, "flags": ["timestamp"]}}],
    [{"ct timeout": "tt"}, {"ct expectation": "e"}, {"synproxy": "sp"}],
    [{"match": {"op": "==", "left": {"ip option": {"name": "rr", "field": "ptr"}}, "right": 4}}],
    [{"match": {"op": "==", "left": {"tcp option": {"name": "sack-perm"}}, "right": True}}],
    [{"mangle": {"key": {"tcp option": {"name": "maxseg", "field": "size"}}, "value": 1360}}],
    [{"ct helper": {"map": {"key": DPORT, "data": {"set": [[21, "ftp"]]}}}}],
    [{"match": {"op": "==", "left": {"osf": {"key": "version", "ttl": "skip"}},
                "right": "Linux:3.0"}}],
    [{"match": {"op": "==", "left": {"ipsec": {"key": "saddr", "family": "ip", "dir": "in",
                                               "spnum": 1}}, "right": "192.0.2.1"}}],
    [{"match": {"op": "==", "left": {"rt": {"key": "classid"}}, "right": "10"}}],
]


def _compiler() -> RuleCompiler:
    rc = RuleCompiler("ip", "t")
    rc.named_sets["m"] = Set("ip", "t", "m", type="ipv4_addr", flags=["dynamic"])
    rc.named_sets["mm"] = Set("ip", "t", "mm", type="ipv4_addr", map="mark")
    return rc


def _dict_paths(v: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(v, dict):
        yield path
        for k, x in v.items():
            yield from _dict_paths(x, (*path, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from _dict_paths(x, (*path, i))


def _at(v: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        v = v[p]
    return v


def test_catalogue_compiles() -> None:
    rc = _compiler()
    for rule in CATALOGUE:
        rc.compile(copy.deepcopy(rule))


KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=12)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_an_unknown_key_anywhere_is_refused(data: st.DataObject) -> None:
    rule = data.draw(st.sampled_from(CATALOGUE))
    paths = list(_dict_paths(rule))
    path = data.draw(st.sampled_from(paths))
    key = data.draw(KEYS.filter(lambda k: k not in _at(rule, path)))
    bad = copy.deepcopy(rule)
    _at(bad, path)[key] = data.draw(st.sampled_from([0, 1, "x", True, None, {}]))
    rc = _compiler()
    rc.compile(copy.deepcopy(rule))  # warm the encoding templates with the good rule
    rc.compile(copy.deepcopy(rule))
    with pytest.raises(InputError):
        rc.compile(bad)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.data())
def test_an_unknown_flag_is_refused(data: st.DataObject) -> None:
    word = data.draw(KEYS)
    rule = data.draw(st.sampled_from([
        [{"snat": {"addr": "203.0.113.1", "flags": ["persistent", word]}}],
        [{"masquerade": {"flags": word}}],
        [{"log": {"flags": [word]}}],
        [{"queue": {"num": 1, "flags": [word]}}],
        [{"match": {"op": "==", "left": {"fib": {"result": "oif", "flags": [word]}},
                    "right": 0}}],
        [{"limit": {"rate": 1, "per": word}}],
        [{"reject": {"type": word}}],
    ]))
    known = {"persistent", "random", "fully-random", "bypass", "fanout", "saddr", "daddr",
             "mark", "iif", "oif", "second", "minute", "hour", "day", "week", "icmp", "icmpv6",
             "icmpx", "skuid", "ether", "all"}
    if word in known:
        return
    with pytest.raises(InputError):
        _compiler().compile(rule)


@pytest.mark.parametrize("stmt, why", [
    ({"set": {"op": "add", "elem": SADDR, "set": "@m", "stmt": [{"log": None}]}},
     "cannot be carried"),
    ({"set": {"op": "add", "elem": SADDR, "set": "@m", "stmts": [{"counter": None}]}},
     "'stmts'"),
    ({"set": {"op": "add", "elem": {"elem": {"val": SADDR, "comment": "x"}}, "set": "@m"}},
     "comment"),
    ({"log": {"group": 1, "level": "info"}}, "cannot go with 'group'"),
    ({"log": {"snaplen": 64}}, "needs 'group'"),
    ({"reject": {"type": "tcp reset", "expr": "host-unreachable"}}, "without an icmp type"),
    ({"accept": {"x": 1}}, "key 'x'"),
    ({"limit": {"rate": 5, "per": "second", "burst_unit": "kbytes"}}, "burst unit"),
    ({"match": {"op": "==", "left": {"rt": {"key": "realm"}}, "right": 1}}, "'realm'"),
    ({"match": {"op": "==", "left": {"tcp option": {"base": 255, "offset": 4, "len": 8}},
                "right": 1}}, "whole bytes"),  # a raw option's bits: refused, not rounded
    ({"match": {"op": "==", "left": {"tcp option": {"base": 256, "offset": 8, "len": 8}},
                "right": 1}}, "kind is 0-255"),
    ({"meter": {"name": "m", "key": SADDR, "stmt": {"accept": None}}}, "cannot be carried"),
    ({"meter": {"name": "m", "key": SADDR, "stmt": {"counter": None}, "size": 0}}, "size 0"),
    ({"meter": {"name": "m", "key": SADDR}}, "'stmt' is missing"),
    ({"match": {"op": "==", "left": {"osf": {"key": "name", "ttl": "tight"}}, "right": "Linux"}},
     "'tight'"),
    ({"match": {"op": "==", "left": {"ipsec": {"key": "reqid", "dir": "sideways"}}, "right": 1}},
     "'sideways'"),
    ({"tproxy": {"port": 1, "x": 2}}, "'x'"),
])
def test_refusals_name_the_statement(stmt: dict[str, Any], why: str) -> None:
    with pytest.raises(InputError) as exc:
        _compiler().compile([stmt])
    assert why in str(exc.value)


def test_a_field_of_part_of_a_byte_takes_only_its_bits() -> None:
    """frag-off is 13 bits: 8192 is refused, not cut to the bits that fit."""
    rule = [{"match": {"op": "==", "left": {"exthdr": {"name": "frag", "field": "frag-off"}},
                       "right": 8192}}]
    with pytest.raises(InputError, match="exceeds"):
        RuleCompiler("ip6", "t").compile(rule)
    rule[0]["match"]["right"] = 8191
    back = RuleDecoder("ip6").decode(parse_exprs(b"".join(RuleCompiler("ip6", "t").compile(
        rule)[0])))
    assert back == rule


def test_set_update_statements_are_encoded_and_decoded() -> None:
    """One statement: NFTA_DYNSET_EXPR; several: NFTA_DYNSET_EXPRESSIONS (flag EXPR)."""
    limit = {"limit": {"rate": 20, "burst": 5, "per": "second", "inv": True}}
    for stmts in ([limit], [{"counter": None}, limit, {"ct count": {"val": 5}}]):
        rule = [{"set": {"op": "update", "elem": SADDR, "set": "@m", "stmt": stmts}}]
        exprs, _ = _compiler().compile(rule)
        parsed = parse_exprs(b"".join(exprs))
        dyn = dict(parsed)["dynset"]
        assert ("expr" in dyn) == (len(stmts) == 1)
        assert ("expressions" in dyn) == (len(stmts) > 1)
        back = RuleDecoder("ip").decode(parsed)
        assert back == rule


# ---- against nft ---------------------------------------------------------------------

METERS = """
table ip t {
	set meters4 { type ipv4_addr; size 65535; flags dynamic; }
	set m2 { type ipv4_addr; flags dynamic,timeout; timeout 1m; }
	set m3 { type ipv4_addr; size 1000; flags dynamic; }
	chain c {
		type filter hook input priority 0; policy accept;
		tcp dport 22 update @meters4 { ip saddr limit rate over 20/second } drop
		add @m2 { ip saddr counter }
		update @m3 { ip saddr ct count over 5 } drop
		add @m2 { ip saddr timeout 10s counter quota over 10 mbytes }
		add @m3 { ip saddr counter limit rate 10/minute }
		update @m3 { ip saddr limit rate over 1 mbytes/second burst 2 mbytes }
	}
}
"""


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Namespace, Namespace]]:
    require_kernel()
    with Lab("nks") as lab:
        yield lab.add("a"), lab.add("b")


@pytest.mark.kernel
@pytest.mark.parametrize("form", ["json", "text"])
def test_set_update_statements_reach_the_kernel(pair: tuple[Namespace, Namespace], tmp_path: Any,
                                                form: str) -> None:
    a, b = pair
    for n in pair:
        n.run("nft flush ruleset")
    a.run(["nft", METERS])
    listing = a.run("nft -j list ruleset").stdout
    src = tmp_path / ("r.json" if form == "json" else "r.nft")
    src.write_text(listing if form == "json" else METERS)
    b.run(NFKIT + ["rules", "load", str(src)])
    assert nft_json(b) == nft_json(a)
    assert b.run("nft list ruleset").stdout == a.run("nft list ruleset").stdout
    # nfkit lists the statements of each update as nft does.
    ours = json.loads(a.run(NFKIT + ["rules", "list", "--json"]).stdout)["nftables"]
    theirs = json.loads(listing)["nftables"]
    assert [o for o in ours if "rule" in o] == [o for o in theirs if "rule" in o]


@pytest.mark.kernel
def test_an_unencodable_statement_changes_nothing(pair: tuple[Namespace, Namespace],
                                                  tmp_path: Any) -> None:
    _a, b = pair
    b.run("nft flush ruleset")
    doc = {"nftables": [
        {"table": {"family": "ip", "name": "t"}},
        {"set": {"family": "ip", "table": "t", "name": "m", "type": "ipv4_addr",
                 "flags": ["dynamic"]}},
        {"chain": {"family": "ip", "table": "t", "name": "c"}},
        {"rule": {"family": "ip", "table": "t", "chain": "c", "expr": [
            {"set": {"op": "update", "elem": SADDR, "set": "@m",
                     "stmt": [{"limit": {"rate": 20, "per": "second", "inv": True,
                                         "bogus": 1}}]}}]}}]}
    src = tmp_path / "r.json"
    src.write_text(json.dumps(doc))
    proc = b.run(NFKIT + ["rules", "load", str(src)], check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "rule in chain ip t c" in err and "'bogus'" in err and "'limit'" in err
    assert b.run("nft list ruleset").stdout == ""
