"""Property tests: generated bad input through the real `nfkit rules` commands.

Each example runs the command in one namespace (kept for the module) that
holds a small ruleset, and asserts what every refusal must keep: exit status
0, 1 or 2, no traceback, and, unless it succeeded, the ruleset unchanged.  The
input is a valid document or argument with one thing broken: a value swapped
for a boundary integer of some field width, a wrong type, a huge or NUL-holding
string, deep nesting, a reversed range, a key removed, non-UTF-8 bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfkit.lab import Lab, Namespace
from nfkit.nftables.validate import FIELDS, field_range

from ..conftest import require_kernel
from .conftest import NFKIT

pytestmark = pytest.mark.kernel

BASELINE = """
table inet fw {
  set s { type ipv4_addr; elements = { 192.0.2.1 } }
  chain input { type filter hook input priority 0; policy accept;
    tcp dport 22 counter accept
    ip saddr @s drop
  }
  chain other { }
}
"""

EXAMPLES = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def ns() -> Iterator[Namespace]:
    require_kernel()
    with Lab("nkp") as lab:
        n = lab.add("t")
        _reset(n)
        yield n


def _reset(n: Namespace) -> None:
    n.run("nft flush ruleset")
    n.run(["nft", BASELINE])


def _run(ns: Namespace, argv: list[str], tmp: Any = None) -> None:
    before = ns.run("nft list ruleset").stdout
    p = ns.run(NFKIT + argv, check=False, timeout=300)
    assert p.returncode in (0, 1, 2), (argv[:6], p.returncode, p.stderr[-800:])
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    assert len(p.stderr) < 2000, p.stderr[:500]  # input is never echoed in full
    if p.returncode != 0:
        assert ns.run("nft list ruleset").stdout == before, (argv[:6], p.stderr)
    else:
        _reset(ns)


# ---- bad values -------------------------------------------------------------------------

def _boundaries() -> list[int]:
    widths = {8, 16, 32, 64}
    out = {-1, 0, 1, 2**70, -(2**70)}
    for w in widths:
        out |= {2**w - 1, 2**w, 2**(w - 1) - 1, 2**(w - 1), -(2**(w - 1)), -(2**(w - 1)) - 1}
    for spec in FIELDS.values():
        for table, attr, _unit in spec.values():
            try:
                lo, hi = field_range(table, attr)
            except KeyError:
                continue
            out |= {lo - 1, lo, hi, hi + 1}
    return sorted(out)


BOUNDARY = st.sampled_from(_boundaries())
HUGE = st.sampled_from([256, 4097, 1_000_000]).map(lambda n: "x" * n)
BAD_STRINGS = st.one_of(HUGE, st.sampled_from(["", "a\u0000b", "\u0000", "é" * 200]),
                        st.text(max_size=20))
WRONG_TYPES = st.sampled_from([None, True, 1.5, float("inf"), [], {}, [1, 2], {"x": 1}, "str"])
BAD_VALUE = st.one_of(BOUNDARY, BAD_STRINGS, WRONG_TYPES,
                      st.sampled_from([{"range": [100, 10]}, {"range": [1]},
                                       {"range": ["192.0.2.9", "192.0.2.1"]},
                                       {"prefix": {"addr": "192.0.2.0", "len": -1}},
                                       {"prefix": {"addr": "192.0.2.0", "len": 99}},
                                       {"prefix": {"addr": "2001:db8::", "len": 129}}]))


def _deep(n: int) -> Any:
    v: Any = 1
    for _ in range(n):
        v = [v]
    return v


def _statements() -> list[list[dict[str, Any]]]:
    """Valid statement lists, one per statement kind with declared fields and a few more."""
    dport = {"payload": {"protocol": "tcp", "field": "dport"}}
    saddr = {"payload": {"protocol": "ip", "field": "saddr"}}
    return [
        [{"match": {"op": "==", "left": dport, "right": 22}}, {"accept": None}],
        [{"match": {"op": "==", "left": dport, "right": {"range": [10, 100]}}}, {"drop": None}],
        [{"match": {"op": "==", "left": saddr, "right": {"prefix": {"addr": "192.0.2.0",
                                                                     "len": 24}}}}],
        [{"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 7}}],
        [{"counter": {"packets": 1, "bytes": 2}}],
        [{"limit": {"rate": 10, "per": "second", "burst": 5}}],
        [{"limit": {"rate": 1, "per": "second", "rate_unit": "mbytes"}}],
        [{"quota": {"val": 100, "val_unit": "mbytes", "used": 0, "used_unit": "bytes"}}],
        [{"log": {"prefix": "p ", "group": 2, "snaplen": 64, "queue-threshold": 1}}],
        [{"queue": {"num": 3}}],
        [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": 1}}],
        [{"jump": {"target": "other"}}],
        [{"reject": None}],
    ]


STMTS = st.sampled_from(_statements())


def _paths(v: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, path + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, path + (i,))
    return out


def _replace(v: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(v, dict):
        return {**v, head: _replace(v[head], rest, new)}
    out = list(v)
    out[head] = _replace(v[head], rest, new)
    return out


def _delete(v: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        if isinstance(v, dict):
            return {k: x for k, x in v.items() if k != path[0]}
        return [x for i, x in enumerate(v) if i != path[0]]
    head = path[0]
    if isinstance(v, dict):
        return {**v, head: _delete(v[head], path[1:])}
    out = list(v)
    out[head] = _delete(v[head], path[1:])
    return out


@st.composite
def broken(draw: Any, value: Any) -> Any:
    """``value`` with one thing broken at a random place."""
    paths = _paths(value)
    path = draw(st.sampled_from(paths))
    how = draw(st.sampled_from(["value", "value", "delete", "deep"]))
    if how == "delete" and path:
        return _delete(value, path)
    if how == "deep":
        return _replace(value, path, _deep(draw(st.sampled_from([70, 1000, 60000]))))
    return _replace(value, path, draw(BAD_VALUE))


def _dumps(v: Any) -> str:
    try:
        return json.dumps(v)
    except (RecursionError, ValueError):  # too deep for json.dumps: the same, as text
        return "[" * 60000 + "1" + "]" * 60000


def _file_doc(stmts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"nftables": [
        {"add": {"table": {"family": "inet", "name": "p"}}},
        {"add": {"chain": {"family": "inet", "table": "p", "name": "c", "type": "filter",
                           "hook": "input", "prio": 0, "policy": "accept"}}},
        {"add": {"chain": {"family": "inet", "table": "p", "name": "other"}}},
        {"add": {"rule": {"family": "inet", "table": "p", "chain": "c", "expr": stmts,
                          "comment": "c"}}},
        {"add": {"set": {"family": "inet", "table": "p", "name": "s", "type": "ipv4_addr",
                         "elem": ["192.0.2.1"], "size": 10}}},
        {"add": {"counter": {"family": "inet", "table": "p", "name": "k", "packets": 0,
                             "bytes": 0}}},
    ]}


NON_UTF8 = st.sampled_from([b"\xff", b"a\xfeb", b"\xc3", b"\xed\xa0\x80"]).map(os.fsdecode)
# An argument of the kernel's exec is at most 128 KiB (MAX_ARG_STRLEN).
ARG_MAX = 100_000
NAME = st.one_of(st.sampled_from(["fw", "input"]),
                 BAD_STRINGS.filter(lambda s: "\0" not in s and len(s) < ARG_MAX), NON_UTF8)


# ---- the commands ---------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["load", "check", "apply"])
@EXAMPLES
@given(data=st.data())
def test_file_commands(ns, tmp_path, cmd, data) -> None:  # type: ignore[no-untyped-def]
    doc = data.draw(broken(_file_doc(data.draw(STMTS))))
    f = tmp_path / "f.json"
    text = _dumps(doc)
    if data.draw(st.booleans()) and '"c"' in text:  # non-UTF-8 bytes in the file
        f.write_bytes(text.encode().replace(b'"c"', b'"\xff"', 1))
    else:
        f.write_text(text)
    _run(ns, ["rules", cmd, str(f)])


@pytest.mark.parametrize("verb", ["add", "insert", "replace", "exists"])
@EXAMPLES
@given(data=st.data())
def test_rule_commands(ns, verb, data) -> None:  # type: ignore[no-untyped-def]
    stmts = data.draw(STMTS)
    rule = data.draw(st.one_of(broken(stmts), st.just(stmts)))
    text = data.draw(st.one_of(st.just(_dumps(rule)), NON_UTF8.map(lambda b: _dumps(rule)[:-1]
                                                                   + b + "]")))
    if len(text) > ARG_MAX:
        text = "[" * 50_000 + "]" * 50_000  # still too deep for a recursive reader
    argv = ["rules", verb, "-f", data.draw(st.sampled_from(["inet", "ip", "ipx"])),
            "-t", data.draw(NAME), "-c", data.draw(NAME)]
    if verb == "replace" or data.draw(st.booleans()):
        argv += ["--handle", str(data.draw(st.one_of(BOUNDARY, st.integers(1, 5))))]
    if verb == "exists" and "--handle" in argv:
        argv = argv[:-2]
    _run(ns, argv + [text])


@EXAMPLES
@given(handle=st.one_of(BOUNDARY, st.integers(1, 5)), table=NAME, chain=NAME,
       family=st.sampled_from(["inet", "ip6", "ipx", ""]))
def test_delete(ns, handle, table, chain, family) -> None:  # type: ignore[no-untyped-def]
    _run(ns, ["rules", "delete", "-f", family, "-t", table, "-c", chain, "--handle", str(handle)])


@EXAMPLES
@given(family=st.one_of(st.none(), st.sampled_from(["inet", "ip6", "ipx", "", "INET"])),
       table=st.one_of(st.none(), NAME))
def test_flush(ns, family, table) -> None:  # type: ignore[no-untyped-def]
    argv = ["rules", "flush"]
    if family is not None:
        argv += ["-f", family]
    if table is not None:
        argv += ["-t", table]
    _run(ns, argv)


@EXAMPLES
@given(family=st.one_of(st.none(), st.sampled_from(["inet", "ip6", "ipx", ""])),
       table=st.one_of(st.none(), NAME), chain=st.one_of(st.none(), NAME),
       as_json=st.booleans())
def test_list(ns, family, table, chain, as_json) -> None:  # type: ignore[no-untyped-def]
    argv = ["rules", "list"] + (["--json"] if as_json else [])
    for opt, v in (("-f", family), ("-t", table), ("-c", chain)):
        if v is not None:
            argv += [opt, v]
    _run(ns, argv)
