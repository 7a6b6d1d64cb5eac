"""`nfkit rules` with bad input and at bad moments (issue 12): each case in a namespace,
with nft as the oracle where it has one.

Every refusal must be one line naming the input, exit 2, and leave the
namespace's ruleset as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from nfkit.lab import Lab
from tests.conftest import interruptible

from .conftest import NFKIT

pytestmark = pytest.mark.kernel

TCP_DPORT = {"payload": {"protocol": "tcp", "field": "dport"}}
IP_SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}


def match(left: dict[str, Any], right: Any) -> dict[str, Any]:
    return {"match": {"op": "==", "left": left, "right": right}}


def doc(*items: dict[str, Any]) -> str:
    return json.dumps({"nftables": list(items)})


def table(name: str = "t", family: str = "inet") -> dict[str, Any]:
    return {"add": {"table": {"family": family, "name": name}}}


def chain(prio: Any = 0, name: str = "c", tbl: str = "t", **kw: Any) -> dict[str, Any]:
    body = {"family": "inet", "table": tbl, "name": name, "type": "filter", "hook": "input",
            "prio": prio, "policy": "accept", **kw}
    return {"add": {"chain": body}}


def rule(*expr: Any, tbl: str = "t", **kw: Any) -> dict[str, Any]:
    return {"add": {"rule": {"family": "inet", "table": tbl, "chain": "c", "expr": list(expr),
                             **kw}}}


SETUP = "add table inet fw; add chain inet fw input { type filter hook input priority 0; }"


def refused(ns: Any, argv: list[Any], before: str | None = None, **kw: Any) -> str:
    """Run nfkit with ``argv``; assert one line on stderr, exit 2, ruleset unchanged."""
    before = ns.run("nft list ruleset").stdout if before is None else before
    p = ns.run(NFKIT + argv, check=False, **kw)
    assert p.returncode == 2, (argv, p.returncode, p.stderr[-500:])
    assert "Traceback" not in p.stderr
    assert p.stderr.count("\n") <= 4 and len(p.stderr) < 400, p.stderr[-500:]  # click: usage + error
    assert ns.run("nft list ruleset").stdout == before
    return p.stderr


# ---- 1: flush of one family ---------------------------------------------------------

def test_flush_family_flushes_only_that_family(netns) -> None:  # type: ignore[no-untyped-def]
    tables = "add table inet a; add table ip6 b; add table ip c; add table ip6 d"
    netns.run(["nft", tables])
    netns.run(["nft", "flush ruleset ip6"])
    want = netns.run("nft list tables").stdout
    netns.run("nft flush ruleset")
    netns.run(["nft", tables])
    netns.run(NFKIT + ["rules", "flush", "-f", "ip6"])
    assert netns.run("nft list tables").stdout == want == "table inet a\ntable ip c\n"


@pytest.mark.parametrize("argv", [
    ["rules", "flush", "-f", "ipx"],
    ["rules", "flush", "-f", "ipx", "-t", "a"],
    ["rules", "list", "-f", "ipx"],
    ["rules", "add", "-f", "ipx", "-t", "a", "-c", "c", "[]"],
    ["rules", "exists", "-f", "ipx", "-t", "a", "-c", "c", "[]"],
    ["rules", "delete", "-f", "ipx", "-t", "a", "-c", "c", "--handle", "1"],
])
def test_unknown_family_is_refused(netns, argv) -> None:  # type: ignore[no-untyped-def]
    netns.run(["nft", "add table inet a; add table ip6 b"])
    err = refused(netns, argv)
    assert "'ipx' is not one of" in err


# ---- 3: empty rules -----------------------------------------------------------------

@pytest.mark.parametrize("rule_arg", ['{"drop": null}', "[]", '{"expr": []}',
                                      '{"exprs": [{"drop": null}]}'])
def test_rule_without_statements_is_refused(netns, rule_arg) -> None:  # type: ignore[no-untyped-def]
    netns.run(["nft", SETUP])
    for verb in ("add", "insert"):
        err = refused(netns, ["rules", verb, "-f", "inet", "-t", "fw", "-c", "input", rule_arg])
        assert "RULE" in err


def test_file_rule_without_statements_is_refused(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "r.json"
    for bad in ({"add": {"rule": {"family": "inet", "table": "t", "chain": "c",
                                  "exprs": [{"drop": None}]}}}, rule()):
        f.write_text(doc(table(), chain(), bad))
        for cmd in ("load", "check", "apply"):
            err = refused(netns, ["rules", cmd, str(f)])
            assert "rule" in err and ("expr" in err or "statement" in err)
    # nft's own syntax has no empty rule (its JSON reader lets one through)
    netns.run(["nft", "add table inet t; add chain inet t c"])
    assert netns.run(["nft", "add rule inet t c"], check=False).returncode != 0


# ---- 4: check refuses what load refuses ----------------------------------------------

def _nat_cases() -> dict[str, list[dict[str, Any]]]:
    post = {"type": "filter", "hook": "postrouting", "prio": 0, "policy": "accept"}
    ip_chain = {"family": "ip", "table": "n", "name": "post"}

    def ip_rule(c: str, *e: Any, tbl: str = "n") -> dict[str, Any]:
        return {"add": {"rule": {"family": "ip", "table": tbl, "chain": c, "expr": list(e)}}}

    t = table("n", "ip")
    return {
        "masquerade in filter chain": [t, {"add": {"chain": {**ip_chain, **post}}},
                                       ip_rule("post", {"masquerade": None})],
        "masquerade in nat chain": [t, {"add": {"chain": {**ip_chain, "type": "nat",
                                                          "hook": "postrouting", "prio": 100,
                                                          "policy": "accept"}}},
                                    ip_rule("post", {"masquerade": None})],
        "reject in postrouting": [t, {"add": {"chain": {**ip_chain, **post}}},
                                  ip_rule("post", {"reject": None})],
        "jump loop": [t, {"add": {"chain": {**ip_chain, **post}}},
                      {"add": {"chain": {"family": "ip", "table": "n", "name": "a"}}},
                      {"add": {"chain": {"family": "ip", "table": "n", "name": "b"}}},
                      ip_rule("post", {"jump": {"target": "a"}}),
                      ip_rule("a", {"jump": {"target": "b"}}),
                      ip_rule("b", {"jump": {"target": "a"}})],
        "masquerade into an existing filter chain": [ip_rule("post", {"masquerade": None},
                                                             tbl="e")],
        "accept": [t, {"add": {"chain": {**ip_chain, **post}}}, ip_rule("post", {"accept": None})],
    }


@pytest.mark.parametrize("case", list(_nat_cases()))
def test_check_refuses_what_load_refuses(case, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Oracle: `nft -f` (a real load) in a namespace of its own.  `nft -c` is no oracle
    here: it says ok for the first cases in a fresh namespace (see trialcommit.py)."""
    f = tmp_path / "f.json"
    f.write_text(doc(*_nat_cases()[case]))
    existing = "add table ip e; add chain ip e post { type filter hook postrouting priority 0; }"
    with Lab("nkc") as lab:
        oracle, ns = lab.add("o"), lab.add("t")
        for n in (oracle, ns):
            n.run(["nft", existing])
        loaded = oracle.run(["nft", "-j", "-f", str(f)], check=False).returncode == 0
        before = ns.run("nft list ruleset").stdout
        p = ns.run(NFKIT + ["rules", "check", str(f)], check=False)
        assert "Traceback" not in p.stderr
        assert (p.returncode == 0) == loaded, (case, p.stderr)
        assert p.returncode in (0, 2)
        assert ns.run("nft list ruleset").stdout == before
        if loaded:
            assert "note" not in p.stderr
        else:
            assert "rule in chain ip " in p.stderr


# ---- 5: an interrupt during a big load -----------------------------------------------

def test_interrupted_load_reports_what_the_kernel_did(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    n = 150_000
    items: list[dict[str, Any]] = [table(), chain()]
    items += [rule(match(TCP_DPORT, 1 + i % 60000), {"counter": None}, {"accept": None})
              for i in range(n)]
    f = tmp_path / "big.json"
    f.write_text(doc(*items))
    t0 = time.monotonic()
    netns.run(NFKIT + ["rules", "load", str(f)])
    took = time.monotonic() - t0
    # An interrupt while the interpreter itself starts (before any of nfkit's code
    # runs) ends it with Python's own traceback: no program can answer it.  The
    # first interrupt comes after that start-up, measured here, as slow as it is now.
    t0 = time.monotonic()
    netns.run([sys.executable, "-c", "import nfkit.cli.entry"])
    started = 2 * (time.monotonic() - t0)
    outcomes = set()
    for frac in (0.02, 0.08, 0.15, 0.5, 0.7, 0.85):  # from the start-up to the commit
        netns.run("nft flush ruleset")
        p = subprocess.Popen(netns.argv(NFKIT + ["rules", "load", str(f)]), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True, preexec_fn=interruptible)
        time.sleep(max(took * frac, started))
        os.killpg(p.pid, signal.SIGINT)
        _out, err = p.communicate(timeout=300)
        tables = netns.run("nft list tables").stdout
        assert "Traceback" not in err, (frac, err)
        if p.returncode in (130, -signal.SIGINT):  # ended by the interrupt
            assert tables == "", (frac, err)
            outcomes.add("interrupted")
        else:
            assert p.returncode == 0, (frac, p.returncode, err)
            assert tables == "table inet t\n"
            assert netns.run("nft list chain inet t c").stdout.count("counter packets") == n
            if "interrupt" in err:
                assert "it was committed" in err
                outcomes.add("held")
            else:
                outcomes.add("done")
    # The early ones end before anything is sent; the late ones land while the kernel
    # commits (about the second half of the load's time).
    assert {"interrupted", "held"} <= outcomes, outcomes



_AFTER_COMMIT = """
import os, signal, sys, time
from nfkit.cli.guard import guarded
from nfkit.nftables.jsonfmt import load_json
from nfkit.nftables.commits import commit

def command():
    if sys.argv[1] == "commit":
        commit(load_json('{"nftables": [{"table": {"family": "inet", "name": "t"}}]}'))
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the command finishes
    time.sleep(5)

guarded(command)
"""


@pytest.mark.parametrize("what, status, says, tables", [
    ("commit", 0, "it was committed\n", "table inet t\n"),
    ("nothing", 130, "nfkit: interrupted\n", ""),
])
def test_an_interrupt_after_the_commit_does_not_say_nothing_happened(  # type: ignore[no-untyped-def]
        netns, tmp_path, what, status, says, tables) -> None:
    # The window the load test above can hit only by chance (its interrupt at the end
    # of a long commit): the kernel has committed, the command is closing its socket.
    script = tmp_path / "after_commit.py"
    script.write_text(_AFTER_COMMIT)
    p = netns.run([sys.executable, str(script), what], check=False, preexec_fn=interruptible)
    assert "Traceback" not in p.stderr, p.stderr
    assert (p.returncode, netns.run("nft list tables").stdout) == (status, tables), p.stderr
    assert p.stderr.endswith(says), p.stderr

# ---- 6: values the kernel would have changed ------------------------------------------

@pytest.mark.parametrize("items, needle", [
    ((table(), chain(prio=2**40)), "prio"),
    ((table(), chain(prio=4294967196)), "prio"),
    ((table(), chain(prio=-2**31 - 1)), "prio"),
    ((table("a\u0000b"),), "NUL"),
    ((table("a" * 256),), "longer than 255"),
    ((table(""),), "empty name"),
    ((table(), chain(), rule(match(TCP_DPORT, {"range": [100, 10]}))), "range"),
    ((table(), chain(), rule(match(IP_SADDR, {"range": ["10.0.0.9", "10.0.0.1"]}))), "range"),
    ((table(), chain(), rule({"accept": None}, comment="x" * 129)), "comment"),
    ((table(), chain(name="c\u0000d")), "NUL"),
])
def test_values_out_of_their_field_are_refused(netns, tmp_path, items, needle) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "v.json"
    f.write_text(doc(*items))
    for cmd in ("load", "check", "apply"):
        err = refused(netns, ["rules", cmd, str(f)])
        assert needle in err, err


def test_boundary_priorities_are_kept(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "p.json"
    for prio in (-2**31, 2**31 - 1):
        netns.run("nft flush ruleset")
        f.write_text(doc(table(), chain(prio=prio)))
        netns.run(NFKIT + ["rules", "load", str(f)])
        listed = json.loads(netns.run("nft -j list chains").stdout)["nftables"]
        assert [o["chain"]["prio"] for o in listed if "chain" in o] == [prio]


def test_reversed_range_nft_refuses_too(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "r.json"
    f.write_text(doc(table(), chain(), rule(match(TCP_DPORT, {"range": [100, 10]}))))
    assert netns.run(["nft", "-j", "-f", str(f)], check=False).returncode != 0
    refused(netns, ["rules", "load", str(f)])


# ---- 9: tracebacks that were ----------------------------------------------------------

BAD_RULES = [
    [{"counter": {"packets": 2**70, "bytes": 0}}],
    [{"counter": {"packets": 0, "bytes": -1}}],
    [{"limit": {"rate": 2**70, "per": "second"}}],
    [{"limit": {"rate": -1, "per": "second"}}],
    [{"limit": {"rate": 2**60, "per": "second", "rate_unit": "mbytes"}}],
    [{"quota": {"val": 2**70, "val_unit": "bytes"}}],
    [{"quota": {"val": 2**40, "val_unit": "gbytes"}}],
    [{"log": {"group": 70000}}],
    [{"log": {"prefix": "p" * 200}}],
    [{"queue": {"num": 70000}}],
    [match(IP_SADDR, {"prefix": {"addr": "10.0.0.0", "len": -1}})],
    [match(IP_SADDR, {"prefix": {"addr": "10.0.0.0", "len": 99}})],
    [match({"payload": {"protocol": "ip6", "field": "saddr"}},
           {"prefix": {"addr": "2001:db8::", "len": 129}})],
    [match(TCP_DPORT, 2**70)],
    [match(TCP_DPORT, True)],
    [{"accept": None}, "drop"],
    [{"accept": None, "drop": None}],
]


@pytest.mark.parametrize("expr", BAD_RULES, ids=[json.dumps(r)[:50] for r in BAD_RULES])
def test_bad_statement_values_are_one_line(netns, tmp_path, expr) -> None:  # type: ignore[no-untyped-def]
    netns.run(["nft", SETUP])
    arg = json.dumps(expr)
    for verb in ("add", "insert", "exists"):
        refused(netns, ["rules", verb, "-f", "inet", "-t", "fw", "-c", "input", arg])
    f = tmp_path / "b.json"
    f.write_text(json.dumps({"nftables": [{"add": {"rule": {
        "family": "inet", "table": "fw", "chain": "input", "expr": expr}}}]}))
    for cmd in ("load", "check"):
        refused(netns, ["rules", cmd, str(f)])


def test_deep_nesting_is_one_line(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    netns.run(["nft", SETUP])
    deep = "[" * 60000 + "]" * 60000
    f = tmp_path / "d.json"
    f.write_text(deep)
    for cmd in ("load", "check", "apply"):
        assert "nested too deeply" in refused(netns, ["rules", cmd, str(f)])
    nested: Any = 1
    for _ in range(200):
        nested = {"x": nested}
    f.write_text(doc(rule(match(TCP_DPORT, nested), tbl="fw")))
    for cmd in ("load", "check"):
        assert "nested deeper" in refused(netns, ["rules", cmd, str(f)])
    for verb in ("add", "exists"):
        refused(netns, ["rules", verb, "-f", "inet", "-t", "fw", "-c", "input", deep])


def test_huge_name_is_refused_and_not_echoed(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    big = "n" * 10_000_000
    f = tmp_path / "h.json"
    f.write_text(doc(table(big)))
    for cmd in ("load", "check", "apply"):
        assert "10000000 characters" in refused(netns, ["rules", cmd, str(f)])
    netns.run(["nft", SETUP])
    for verb in ("add", "exists"):
        refused(netns, ["rules", verb, "-f", "inet", "-t", "n" * 300, "-c", "input", "[]"])


@pytest.mark.parametrize("handle", ["-1", "0", str(2**64), "x"])
def test_handle_out_of_range_is_refused(netns, handle) -> None:  # type: ignore[no-untyped-def]
    netns.run(["nft", SETUP])
    rule_arg = json.dumps([{"drop": None}])
    for verb in ("add", "insert", "replace"):
        refused(netns, ["rules", verb, "-f", "inet", "-t", "fw", "-c", "input", "--handle",
                        handle, rule_arg])
    refused(netns, ["rules", "delete", "-f", "inet", "-t", "fw", "-c", "input", "--handle",
                    handle])


def test_non_utf8_arguments_are_refused(netns) -> None:  # type: ignore[no-untyped-def]
    netns.run(["nft", SETUP])
    bad = os.fsdecode(b"\xff\xfe")
    ok_rule = json.dumps([{"drop": None}])
    for verb in ("add", "insert", "exists"):
        refused(netns, ["rules", verb, "-f", "inet", "-t", bad, "-c", "input", ok_rule])
        refused(netns, ["rules", verb, "-f", "inet", "-t", "fw", "-c", bad, ok_rule])
        refused(netns, ["rules", verb, "-f", "inet", "-t", "fw", "-c", "input",
                        os.fsdecode(b'[{"log": {"prefix": "\xff"}}]')])
    refused(netns, ["rules", "list", "-t", bad])
    refused(netns, ["rules", "flush", "-t", bad])
    refused(netns, ["rules", "delete", "-f", "inet", "-t", bad, "-c", "input", "--handle", "1"])


def test_list_of_named_quota_and_limit(netns) -> None:  # type: ignore[no-untyped-def]
    netns.run(["nft", SETUP + "; add quota inet fw q1 { 1000 bytes }; "
               "add limit inet fw l1 { rate 10/second }; "
               'add rule inet fw input quota name "q1" limit name "l1" accept'])
    want = [ln.strip() for ln in netns.run("nft list chain inet fw input").stdout.splitlines()
            if "quota" in ln]
    assert want == ['quota name "q1" limit name "l1" accept']
    got = [ln.strip() for ln in netns.run(NFKIT + ["rules", "list"]).stdout.splitlines()
           if "quota name" in ln]
    assert got == want


# ---- 17: messages and listings ---------------------------------------------------------

def test_list_chain_prints_only_the_chain(netns) -> None:  # type: ignore[no-untyped-def]
    netns.run(["nft", SETUP + "; add set inet fw s { type ipv4_addr; elements = { 192.0.2.1 } }; "
               "add chain inet fw other; add rule inet fw input ip saddr @s accept"])
    want = netns.run("nft list chain inet fw input").stdout
    got = netns.run(NFKIT + ["rules", "list", "-f", "inet", "-t", "fw", "-c", "input"]).stdout
    assert "set s" not in got and "chain other" not in got
    assert [ln.strip() for ln in got.splitlines() if ln.strip()] == \
        [ln.strip() for ln in want.splitlines() if ln.strip()]


def test_replace_help_marks_handle_required(netns) -> None:  # type: ignore[no-untyped-def]
    text = netns.run(NFKIT + ["rules", "replace", "--help"]).stdout
    handle = text[text.index("  --handle "):]
    handle = handle[:handle.index("\n  -", 1)]  # up to the next option
    assert "required" in handle, handle
    p = netns.run(NFKIT + ["rules", "replace", "-t", "fw", "-c", "input", "[]"], check=False)
    assert p.returncode == 2 and "--handle" in p.stderr


def test_apply_dry_run_shows_the_rules_as_nft_text(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "a.json"
    f.write_text(doc(table(), chain(), rule(match(TCP_DPORT, 22), {"accept": None}),
                     rule(match(IP_SADDR, "192.0.2.1"), {"counter": None}, {"drop": None})))
    out = netns.run(NFKIT + ["rules", "apply", "--dry-run", str(f)]).stdout.splitlines()
    assert out[-2:] == ["add rule inet t c tcp dport 22 accept",
                        "add rule inet t c ip saddr 192.0.2.1 counter packets 0 bytes 0 drop"]
    assert netns.run("nft list ruleset").stdout == ""
    # what it shows is what nft runs
    netns.run(["nft", "add table inet t; add chain inet t c; " + "; ".join(out[-2:])])


@pytest.mark.kernel
def test_list_chain_json_is_what_nft_prints(netns) -> None:  # type: ignore[no-untyped-def]
    """rules list -c --json: the chain and its rules, no table object and no set."""
    netns.run(["nft", "add table inet t; add chain inet t c; add rule inet t c tcp dport 22 accept; "
               "add set inet t s { type ipv4_addr; }"])
    ours = json.loads(netns.run([*NFKIT, "rules", "list", "--json", "-f", "inet", "-t", "t",
                                 "-c", "c"]).stdout)["nftables"][1:]
    theirs = json.loads(netns.run("nft -j list chain inet t c").stdout)["nftables"][1:]
    assert ours == theirs
