"""nfkit rules against the kernel, in namespaces: load, check, list, errors, single changes."""

from __future__ import annotations

import json
import os
import sys

import pytest

from nfkit.errors import InputError, TransactionError
from nfkit.nftables import model
from nfkit.nftables.jsonfmt import load_json
from nfkit.nftables.transaction import (
    add_rule,
    apply,
    check,
    commit,
    delete_rule,
    exists,
    flush,
    list_ruleset,
    run_commands,
)

from .conftest import NFKIT, nft_json

M22 = {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                 "right": 22}}


def base() -> model.Ruleset:
    rs = model.Ruleset()
    t = rs.table("inet", "fw")
    c = rs.chain(t, "input", type="filter", hook="input", prio=0, policy="accept")
    rs.chain(t, "other")
    rs.rule(c, M22, {"counter": None}, {"accept": None}, comment="ssh")
    rs.rule(c, {"jump": {"target": "other"}})
    return rs


@pytest.mark.kernel
def test_commit_then_nft_sees_it(netns) -> None:  # type: ignore[no-untyped-def]
    with netns.enter():
        commit(base())
    text = netns.run("nft list ruleset").stdout
    assert 'tcp dport 22 counter packets 0 bytes 0 accept comment "ssh"' in text
    assert "jump other" in text


@pytest.mark.kernel
def test_failed_transaction_names_rule_and_commits_nothing(netns) -> None:  # type: ignore[no-untyped-def]
    rs = base()
    rs.rules.append(model.Rule("inet", "fw", "input", [{"jump": {"target": "missing"}}],
                               source="#9"))
    with netns.enter():
        with pytest.raises(TransactionError) as exc:
            commit(rs)
    assert "rule in chain inet fw input" in str(exc.value)
    assert "#9" in str(exc.value)
    assert netns.run("nft list ruleset").stdout.strip() == ""


@pytest.mark.kernel
def test_check_validates_without_committing(netns) -> None:  # type: ignore[no-untyped-def]
    with netns.enter():
        check(base())
        assert list_ruleset().tables == []
        bad = base()
        bad.rules.append(model.Rule("inet", "fw", "input", [{"goto": {"target": "nope"}}]))
        with pytest.raises(TransactionError):
            check(bad)


@pytest.mark.kernel
def test_untranslatable_input_is_refused_before_sending(netns) -> None:  # type: ignore[no-untyped-def]
    rs = base()
    rs.rules.append(model.Rule("inet", "fw", "input", [{"frobnicate": None}]))
    with netns.enter():
        with pytest.raises(InputError, match="unknown statement 'frobnicate'"):
            commit(rs)
    assert netns.run("nft list ruleset").stdout.strip() == ""


@pytest.mark.kernel
def test_list_matches_nft_json(netns) -> None:  # type: ignore[no-untyped-def]
    with netns.enter():
        commit(base())
        ours = json.loads(__import__("nfkit.nftables.jsonfmt", fromlist=["x"]).dump_json(
            list_ruleset()))
    from .conftest import strip

    assert strip(ours) == nft_json(netns)


@pytest.mark.kernel
def test_single_changes_exists_and_delete(netns) -> None:  # type: ignore[no-untyped-def]
    with netns.enter():
        commit(base())
        r = model.Rule("inet", "fw", "input", [M22, {"accept": None}])
        assert not exists(r)  # the loaded rule has a counter and a comment... counter ignored
        add_rule(model.Rule("inet", "fw", "input", [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}},
                       "right": 53}}, {"accept": None}]))
        assert exists(model.Rule("inet", "fw", "input", [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}},
                       "right": "domain"}}, {"accept": None}]))
        rules = list_ruleset("inet", "fw", "input").rules
        assert len(rules) == 3
        add_rule(model.Rule("inet", "fw", "input", [{"drop": None}]), "insert")
        assert list_ruleset("inet", "fw", "input").rules[0].expr == [{"drop": None}]
        victim = list_ruleset("inet", "fw", "input").rules[0]
        delete_rule(victim)
        assert len(list_ruleset("inet", "fw", "input").rules) == 3


@pytest.mark.kernel
def test_apply_smallest_change_set(netns) -> None:  # type: ignore[no-untyped-def]
    with netns.enter():
        commit(base())
        before = {r.handle for r in list_ruleset().rules}
        wanted = base()
        wanted.rules.insert(1, model.Rule("inet", "fw", "input", [{"drop": None}]))
        cmds = apply(wanted, dry_run=True)
        assert [(c.verb, c.kind) for c in cmds] == [("insert", "rule")]
        assert {r.handle for r in list_ruleset().rules} == before
        apply(wanted)
        after = list_ruleset().rules
        assert before <= {r.handle for r in after}  # the old rules were kept
        assert [r.expr[-1] for r in after if r.chain == "input"][1] == {"drop": None}
        assert apply(wanted) == []


@pytest.mark.kernel
def test_flush(netns) -> None:  # type: ignore[no-untyped-def]
    with netns.enter():
        commit(base())
        flush(table="fw")
        rs = list_ruleset()
        assert rs.rules == [] and len(rs.chains) == 2
        flush()
        assert list_ruleset().tables == []


@pytest.mark.kernel
def test_cli_load_check_list_and_errors(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"nftables": [
        {"table": {"family": "ip", "name": "t"}},
        {"chain": {"family": "ip", "table": "t", "name": "c", "type": "filter",
                   "hook": "input", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "t", "chain": "c", "expr": [M22, {"accept": None}]}},
    ]}))
    assert netns.run(NFKIT + ["rules", "check", str(f)]).returncode == 0
    assert netns.run("nft list ruleset").stdout.strip() == ""
    netns.run(NFKIT + ["rules", "load", str(f)])
    out = netns.run(NFKIT + ["rules", "list"]).stdout
    assert "tcp dport 22 accept" in out
    bad = tmp_path / "bad.json"
    bad.write_text('{"nftables": [{"table": {"family": "ip", "name": "u"}}, {"rule": ')
    p = netns.run(NFKIT + ["rules", "load", str(bad)], check=False)
    assert p.returncode == 2 and "JSON syntax error" in p.stderr and "Traceback" not in p.stderr
    bad.write_text(json.dumps({"nftables": [
        {"table": {"family": "ip", "name": "u"}},
        {"rule": {"family": "ip", "table": "t", "chain": "c", "expr": [
            {"jump": {"target": "nowhere"}}]}}]}))
    p = netns.run(NFKIT + ["rules", "load", str(bad)], check=False)
    assert p.returncode == 2 and "rule in chain ip t c" in p.stderr
    assert "table ip u" not in netns.run("nft list ruleset").stdout  # nothing committed
    p = netns.run(NFKIT + ["rules", "exists", "-f", "ip", "-t", "t", "-c", "c",
                           json.dumps([M22, {"accept": None}])], check=False)
    assert p.returncode == 0
    p = netns.run(NFKIT + ["rules", "exists", "-f", "ip", "-t", "t", "-c", "c",
                           json.dumps([M22, {"drop": None}])], check=False)
    assert p.returncode == 1


def test_command_form_is_ordered_by_dependency() -> None:
    cmds = load_json(json.dumps({"nftables": [
        {"add": {"rule": {"family": "ip", "table": "t", "chain": "c", "expr": []}}},
        {"add": {"chain": {"family": "ip", "table": "t", "name": "c"}}},
        {"add": {"table": {"family": "ip", "name": "t"}}},
    ]}))
    assert [c.kind for c in cmds] == ["table", "chain", "rule"]


@pytest.mark.kernel
def test_command_form_delete_and_flush(netns) -> None:  # type: ignore[no-untyped-def]
    with netns.enter():
        commit(base())
        run_commands(load_json(json.dumps({"nftables": [
            {"flush": {"chain": {"family": "inet", "table": "fw", "name": "input"}}},
            {"delete": {"chain": {"family": "inet", "table": "fw", "name": "other"}}},
        ]})))
        rs = list_ruleset()
        assert [c.name for c in rs.chains] == ["input"] and rs.rules == []


@pytest.mark.kernel
def test_queue_statement_round_trips(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """queue: the nft expression, or the xt NFQUEUE target where the kernel lacks it."""
    q = [M22, {"queue": {"num": 3, "flags": "bypass"}}]
    q2 = [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                     "right": 23}}, {"queue": {"num": {"range": [1, 3]}, "flags": "fanout"}}]
    rs = model.Ruleset()
    t = rs.table("ip", "filter")
    c = rs.chain(t, "INPUT", type="filter", hook="input", prio=0, policy="accept")
    rs.rule(c, *q)
    rs.rule(c, *q2)
    with netns.enter():
        commit(rs)
        assert [r.expr for r in list_ruleset().rules] == [q, q2]
    text = netns.run("nft list ruleset").stdout
    assert "tcp dport 22 queue num 3 bypass" in text
    assert "tcp dport 23 queue num 1-3 fanout" in text
    if not probe_in(netns)["queue_expression"]:
        # nft prints an xt target only through iptables' extension module: without it the
        # verdict vanishes from its listing, and `nfkit info` says so
        bare = {**os.environ, "XTABLES_LIBDIR": str(tmp_path)}
        text = netns.run("nft list ruleset", env=bare).stdout
        assert "tcp dport 22 \n" in text and "queue" not in text
        assert any("libxt_NFQUEUE.so" in n for n in probe_in(netns, bare)["notes"])
        assert not any("libxt_NFQUEUE.so" in n for n in probe_in(netns)["notes"])


def probe_in(netns, env: dict[str, str] | None = None) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(netns.run([sys.executable, "-m", "nfkit", "info", "--json"], env=env).stdout)


@pytest.mark.kernel
def test_exists_with_sets_and_prefilter(netns) -> None:  # type: ignore[no-untyped-def]
    netns.run(["nft", "-f", "-"], input="""
table ip t {
  set s { type ipv4_addr; elements = { 192.0.2.1 } }
  chain c {
    ip saddr @s tcp dport 22 accept
    tcp dport { 80, 443 } counter accept
    ip daddr 192.0.2.9 drop
  }
}""")
    def m(left: dict, right: object) -> dict:
        return {"match": {"op": "==", "left": left, "right": right}}
    dport = {"payload": {"protocol": "tcp", "field": "dport"}}
    with netns.enter():
        assert exists(model.Rule("ip", "t", "c", [
            m({"payload": {"protocol": "ip", "field": "saddr"}}, "@s"), m(dport, 22),
            {"accept": None}]))
        assert exists(model.Rule("ip", "t", "c", [m(dport, {"set": [443, 80]}), {"counter": None},
                                                  {"accept": None}]))
        assert exists(model.Rule("ip", "t", "c", [
            m({"payload": {"protocol": "ip", "field": "daddr"}}, "192.0.2.9"), {"drop": None}]))
        assert not exists(model.Rule("ip", "t", "c", [
            m({"payload": {"protocol": "ip", "field": "daddr"}}, "192.0.2.8"), {"drop": None}]))
        with pytest.raises(InputError, match="no such chain"):
            exists(model.Rule("ip", "t", "nochain", [{"drop": None}]))


@pytest.mark.kernel
def test_map_update_from_the_packet_path(netns) -> None:  # type: ignore[no-untyped-def]
    """nft 1.0.6 lists map updates in JSON as text, so this one is checked on nft's text."""
    saddr = {"payload": {"protocol": "ip", "field": "saddr"}}
    upd = {"map": {"op": "update", "elem": saddr, "data": 1, "map": "@m"}}
    rs = model.Ruleset()
    t = rs.table("ip", "t")
    rs.set(t, "m", type="ipv4_addr", map="mark", flags=["timeout"], timeout=60)
    c = rs.chain(t, "c", type="filter", hook="input", prio=0, policy="accept")
    rs.rule(c, M22, upd)
    with netns.enter():
        commit(rs)
        assert list_ruleset().rules[0].expr == [M22, upd]
    assert "tcp dport 22 update @m { ip saddr : 0x00000001 }" in netns.run(
        "nft list ruleset").stdout


@pytest.mark.kernel
def test_jump_loops_are_refused(netns) -> None:  # type: ignore[no-untyped-def]
    """A jump loop is refused at commit, naming the rule; check then finds it too.

    Whether a batch without BATCH_END (check) runs the kernel's loop validation
    depends on the namespace's validation state: only after a batch was refused
    for it.  nft -c behaves the same, which the last assertion checks."""
    rs = model.Ruleset()
    t = rs.table("ip", "t")
    a = rs.chain(t, "a", type="filter", hook="input", prio=0, policy="accept")
    b = rs.chain(t, "b")
    c = rs.chain(t, "c")
    rs.rule(a, {"jump": {"target": "b"}})
    rs.rule(b, {"jump": {"target": "c"}})
    rs.rule(c, {"jump": {"target": "b"}})
    with netns.enter():
        for attempt in (commit, check):
            with pytest.raises(TransactionError, match="rule in chain ip t c.*EMLINK"):
                attempt(rs)
        assert list_ruleset().tables == []
    from nfkit.nftables.jsonfmt import dump_json

    p = netns.run(["nft", "-c", "-j", "-f", "-"], input=dump_json(rs), check=False)
    assert p.returncode == 1 and "Too many links" in p.stderr


@pytest.mark.kernel
def test_apply_with_a_rule_looking_up_a_named_map(netns) -> None:  # type: ignore[no-untyped-def]
    """apply compares rules that look a key up in a map of the same file (the map's data
    type comes from the map): first it creates everything, then it finds nothing to do."""
    rs = model.Ruleset()
    t = rs.table("ip6", "n")
    rs.set(t, "pool", type="mark", map="ipv6_addr", elem=[[0, "fd01::10"], [1, "fd01::11"]])
    c = rs.chain(t, "pre", type="nat", hook="prerouting", prio=-100, policy="accept")
    rs.rule(c, {"dnat": {"family": "ip6", "addr": {"map": {
        "key": {"jhash": {"mod": 2, "expr": {"payload": {"protocol": "ip6", "field": "saddr"}}}},
        "data": "@pool"}}}})
    with netns.enter():
        assert len(apply(rs)) == 4
        assert apply(rs) == []
    assert "dnat to jhash ip6 saddr mod 2 map @pool" in netns.run("nft list ruleset").stdout


@pytest.mark.kernel
def test_npt_targets_round_trip_and_refuse_what_the_kernel_would(netns) -> None:  # type: ignore[no-untyped-def]
    """snpt/dnpt: the xt NPT targets written and read back with their prefixes."""
    def ruleset(family: str, table: str, stmt: dict) -> model.Ruleset:
        rs = model.Ruleset()
        t = rs.table(family, table)
        c = rs.chain(t, "post", type="filter", hook="postrouting", prio=-150, policy="accept")
        rs.rule(c, stmt)
        return rs
    snpt = {"snpt": {"prefix": "fd00:1::/56", "to": "2001:db8:77:100::/56"}}
    with netns.enter():
        commit(ruleset("ip6", "mangle", snpt))
        assert [r.expr for r in list_ruleset("ip6", "mangle").rules] == [[snpt]]
        for family, table, stmt, why in (
                ("ip6", "filter", snpt, "works only in a table named mangle"),
                ("ip", "mangle", snpt, "NPTv6 is for ip6 tables"),
                ("ip6", "mangle", {"snpt": {"prefix": "fd00:1::1/56", "to": "2001:db8::/56"}},
                 "host bits"),
                ("ip6", "mangle", {"snpt": {"prefix": "fd00:1::/80", "to": "2001:db8::/80"}},
                 "at most /64")):
            with pytest.raises(InputError, match=why):
                commit(ruleset(family, table, stmt))
