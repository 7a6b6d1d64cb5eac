"""The text-template reader (bulkjson) gives the same transaction as the general reader."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nfkit.cli.bulk import Forked
from nfkit.errors import InputError
from nfkit.netlink.codec import Batch
from nfkit.nftables import bulkjson
from nfkit.nftables.bulkjson import RuleRun, load_json_runs
from nfkit.nftables.commits import encode_commands
from nfkit.nftables.jsonfmt import load_json
from nfkit.nftables.messages import Encoder

from .conftest import NFKIT, nft_json, unsequenced
from .test_rule_templates import rules


def _encode(text: str, runs: bool, offload: Any = None) -> Any:
    """(batch bytes with sequence numbers zeroed, the name of every message), or the error."""
    try:
        cmds = load_json_runs(text, offload) if runs else load_json(text)
        b = Batch()
        e = Encoder(b)
        encode_commands(cmds, e)
        b.close()
    except InputError as exc:
        return "InputError", str(exc)
    return unsequenced(b.buffer), [e.what[i] for i in range(len(e.what))]


def _doc(items: list[dict[str, Any]], style: str) -> str:
    doc = {"nftables": [{"table": {"family": "ip", "name": "t"}},
                        {"chain": {"family": "ip", "table": "t", "name": "c"}}, *items]}
    if style == "compact":
        return json.dumps(doc, separators=(",", ":"))
    if style == "indent":
        return json.dumps(doc, indent=2)
    return json.dumps(doc)


@st.composite
def documents(draw: Any) -> str:
    items: list[dict[str, Any]] = []
    shapes = draw(st.lists(rules(), min_size=1, max_size=3))
    for _ in range(draw(st.integers(1, 25))):
        expr = draw(st.sampled_from(shapes))
        # the same shape with other values, drawn again
        expr = [dict(s) for s in expr]
        body: dict[str, Any] = {"family": "ip", "table": "t", "chain": "c", "expr": expr}
        form = draw(st.sampled_from(["listing", "listing-handle", "add", "comment"]))
        if form == "listing-handle":
            body["handle"] = draw(st.integers(1, 10**6))
        if form == "comment":
            body["comment"] = "c"
        items.append({"add": {"rule": body}} if form == "add" else {"rule": body})
        if draw(st.booleans()):
            items.append({"rule": {"family": "ip", "table": "t", "chain": "c",
                                   "expr": draw(rules())}})
    return _doc(items, draw(st.sampled_from(["compact", "indent", "default"])))


@settings(max_examples=200, deadline=None)
@given(documents())
def test_same_transaction_as_general_reader(text: str) -> None:
    assert _encode(text, True) == _encode(text, False)


@settings(max_examples=60, deadline=None)
@given(documents())
def test_split_scan_gives_the_same_transaction(text: str) -> None:
    # Every run split with a forked process, however short (SPLIT_MIN 0).
    saved = bulkjson.SPLIT_MIN
    bulkjson.SPLIT_MIN = 0
    try:
        assert _encode(text, True, Forked) == _encode(text, False)
    finally:
        bulkjson.SPLIT_MIN = saved


def test_split_scan_of_a_long_run_uses_the_far_half(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    items = _many(3000)
    items[2600]["rule"]["chain"] = "other"  # the run ends before the end of the array
    monkeypatch.setattr(bulkjson, "SPLIT_MIN", 1000)
    text = _doc(items, "default")
    runs = [c.obj for c in load_json_runs(text, Forked) if type(c.obj) is RuleRun]
    assert runs[0].packed is not None and runs[1].row_starts is not None
    assert len(runs[0]) + len(runs[1]) == 2600
    assert _encode(text, True, Forked) == _encode(text, False)
    # Without the loader's offload, the reader stays in this process: one run.
    runs = [c.obj for c in load_json_runs(text) if type(c.obj) is RuleRun]
    assert len(runs[0]) == 2600 and runs[0].packed is None
    # A value the far half cannot encode: this process scans on, the general path
    # reports that rule.
    items[2500]["rule"]["expr"][1]["match"]["right"] = 70000
    text = _doc(items, "compact")
    runs = [c.obj for c in load_json_runs(text, Forked) if type(c.obj) is RuleRun]
    assert len(runs[0]) == 2600 and runs[0].row_starts is None
    got = _encode(text, True, Forked)
    assert got == _encode(text, False) and "(#2502)" in got[1], got


def _many(n: int, value: Any = None) -> list[dict[str, Any]]:
    return [{"rule": {"family": "ip", "table": "t", "chain": "c", "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                   "right": f"192.0.2.{i % 250}" if value is None or i != 7 else value}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                   "right": 1000 + i}},
        {"accept": None}]}} for i in range(n)]


def test_runs_are_read_as_templates_and_odd_values_in_place() -> None:
    # A prefix, a service name and a value too big in the middle of a run: each is
    # encoded by the general path, in its place.
    items = _many(40, {"prefix": {"addr": "198.51.100.0", "len": 24}})
    items[20]["rule"]["expr"][1]["match"]["right"] = "ssh"
    text = _doc(items, "default")
    cmds = load_json_runs(text)
    assert any(type(c.obj) is RuleRun and len(c.obj) > 10 for c in cmds)
    assert _encode(text, True) == _encode(text, False)
    items[30]["rule"]["expr"][1]["match"]["right"] = 70000
    bad = _doc(items, "default")
    got = _encode(bad, True)
    assert got == _encode(bad, False)
    assert got[0] == "InputError" and "(#32)" in got[1], got


def test_a_run_is_scanned_once(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Learning a shape takes its first two rules; the run is then scanned once, by the
    # learned pattern (the candidate's pattern used to scan all of it first).
    matched: list[int] = []
    real = bulkjson.consecutive

    def counting(*args: Any) -> Any:
        ms = real(*args)
        matched.append(len(ms))
        return ms

    monkeypatch.setattr(bulkjson, "consecutive", counting)
    text = _doc(_many(500), "default")
    assert [len(c.obj) for c in load_json_runs(text) if type(c.obj) is RuleRun] == [500]
    assert sum(matched) <= 502, matched
    assert _encode(text, True) == _encode(text, False)


@pytest.mark.parametrize(("text", "error"), [
    ('{"nftables": [{"table": {"family": "ip", "name": "t"}},]}', True),
    ('{"nftables": [{"table": {"family": "ip", "name": "t"}}', True),
    ('{"nftables": [' + ", ".join(json.dumps(x) for x in _many(5)) + ", ]}", True),
    ('{"nftables": [' + ", ".join(json.dumps(x) for x in _many(5)) + "}", True),
    ('{"nftables": [' + ", ".join(json.dumps(x) for x in _many(5)) + '], "x": 1}', False),
    ('{"nftables": [' + ", ".join(json.dumps(x) for x in _many(5)) + "]} []", True),
    # rows of a shape that are not JSON: a raw newline in a value, a handle "007"
    ('{"nftables": [' + ", ".join(json.dumps(x) for x in _many(5)).replace(
        '"192.0.2.3"', '"192.0.2.3\n"') + "]}", True),
    ('{"nftables": [' + ", ".join(json.dumps({"rule": {**x["rule"], "handle": 7}})
                                  .replace("7}}", "007}}" if i == 3 else "7}}")
                                  for i, x in enumerate(_many(5))) + "]}", True),
])
def test_odd_documents_read_as_by_the_general_reader(text: str, error: bool) -> None:
    got = _encode(text, True)
    assert got == _encode(text, False)
    assert (got[0] == "InputError") == error, got

def test_load_runs_into_the_kernel_like_nft(lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    items = _many(600, {"prefix": {"addr": "198.51.100.0", "len": 24}})
    items.insert(300, {"rule": {"family": "ip", "table": "t", "chain": "c",
                                "expr": [{"counter": None}, {"drop": None}]}})
    for i in range(301, 320):
        items[i]["rule"]["expr"][1]["match"]["right"] = "ssh"
    doc = json.loads(_doc(items, "default"))
    doc["nftables"][1]["chain"].update(type="filter", hook="input", prio=0, policy="accept")
    f = tmp_path / "r.json"
    f.write_text(json.dumps(doc, indent=1))
    a, b = lab.add("a"), lab.add("b")
    a.run([*NFKIT, "rules", "load", str(f)])
    b.run(["nft", "-j", "-f", str(f)])
    assert nft_json(a) == nft_json(b)
    assert len(nft_json(a)) == 2 + 601


def test_refused_rule_of_a_run_is_named_and_nothing_committed(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    items = _many(50)
    items[33]["rule"]["chain"] = "missing"
    items[34:] = [{"rule": {**x["rule"], "chain": "missing"}} for x in items[34:]]
    f = tmp_path / "r.json"
    f.write_text(_doc(items, "default"))
    p = subprocess.run(netns.argv([*NFKIT, "rules", "load", str(f)]), capture_output=True,
                       text=True)
    assert p.returncode == 2, p
    assert "rule in chain ip t missing (#35)" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert netns.run("nft list ruleset").stdout.strip() == ""


def _at_exit_probe(what: str) -> str:
    """A Python program running `nfkit rules {verb} {path}` (format it) that prints the
    expression ``what`` to stderr as the command ends: the commands end by os._exit
    (cli.guard.one_shot), so the probe reports from there (and after a return)."""
    report = f"print({what}, file=sys.stderr)"
    return ("import gc, os, sys, runpy; sys.argv = ['nfkit', 'rules', '{}', '{}']\n"
            "end, me = os._exit, os.getpid()\n"
            "def report(status):\n"
            "    if os.getpid() == me:  # not the reader's forked helper\n"
            f"        {report}\n"
            "        sys.stderr.flush()\n"
            "    end(status)\n"
            "os._exit = report\n"
            "try:\n    runpy.run_module('nfkit', run_name='__main__')\n"
            f"finally:\n    {report}\n")


def test_load_and_check_start_without_click(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The bulk commands do their work (and report errors) without importing click,
    # nor random or ipaddress (a few ms of each `nfkit rules load`).
    f = tmp_path / "r.json"
    f.write_text(_doc(_many(3), "compact"))
    probe = _at_exit_probe("sorted(m for m in ('click', 'random', 'ipaddress') if m in sys.modules)")
    p = netns.run([sys.executable, "-c", probe.format("check", f)], check=False)
    assert p.returncode == 0 and p.stderr.splitlines() == [
        "ok: 5 message(s) validated, nothing committed", "[]"], p
    assert netns.run("nft list ruleset").stdout.strip() == ""
    p = netns.run([sys.executable, "-c", probe.format("load", tmp_path / "missing.json")],
                  check=False)
    assert p.returncode == 2 and p.stderr.splitlines()[0] == \
        f"nfkit: {tmp_path / 'missing.json'}: No such file or directory", p


def test_a_bulk_command_ends_without_freeing_what_it_read(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # `rules load|check FILE` keep the commands they read to os._exit (freeing 80,000
    # rules one by one took ~6 ms): the runs are still there when the process ends.
    f = tmp_path / "r.json"
    f.write_text(_doc(_many(50), "default"))
    probe = _at_exit_probe("sum(type(o).__name__ == 'RuleRun' for o in gc.get_objects())")
    for verb in ("check", "load"):
        p = netns.run([sys.executable, "-c", probe.format(verb, f)], check=False)
        assert p.returncode == 0 and int(p.stderr.splitlines()[-1]) >= 1, p
    assert len(netns.run("nft -j list ruleset").stdout) > 1000


def _each_reference(encode: Any, width: int, values: list[Any]) -> tuple[list[bytes], set[int]]:
    """`bulkjson._encode_each` as one value at a time (what its one map must equal)."""
    out, bad = [], set()
    for k, v in enumerate(values):
        try:
            b = encode(v)
        except (OverflowError, OSError, ValueError, UnicodeError, TypeError):
            b = b""
        if len(b) != width:
            b, _ = bytes(width), bad.add(k)
        out.append(b)
    return out, bad


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.ip_addresses(v=4).map(str), st.sampled_from(
    ["192.0.2.256", "", "2001:db8::1", "1.2.3", "192.0.2.1\x00"])), max_size=30))
def test_a_column_encoded_in_one_map_is_the_per_value_encoding(values: list[str]) -> None:
    import socket
    from functools import partial

    # inet_pton refuses some; a wrong width (an IPv6 encoder for an IPv4 slot) is a bad row
    for encode, width in ((partial(socket.inet_pton, socket.AF_INET), 4),
                          (lambda v: socket.inet_pton(socket.AF_INET6, v), 4)):
        bad: set[int] = set()
        got = bulkjson._encode_each(encode, width, values, bad)
        assert (got, bad) == _each_reference(encode, width, values)


def test_a_json_file_is_read_without_the_text_reader(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # nft's text reader (nfttext, lark) and the forked offload's pickle are imports a
    # JSON load does not need (a few ms of each `nfkit rules load` of nft's listing).
    f = tmp_path / "r.json"
    f.write_text(_doc(_many(3), "default"))
    probe = ("import sys; from nfkit.cli.bulk import read_commands\n"
             f"read_commands({str(f)!r})\n"
             "print(sorted(m for m in ('nfkit.nftables.nfttext', 'lark', 'pickle') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=600), st.integers(0, 5000), st.binary(max_size=40))
@example(bytes(range(250)) * 2, 3001, b"xy")  # 1.5 MB after a little: repeated in place
@example(bytes(range(250)) * 2, 3001, bytes(range(256)) * 8000)  # after more: by doubling
def test_a_run_of_messages_is_its_message_repeated(piece: bytes, n: int, before: bytes) -> None:
    from nfkit.nftables.messages import _append_repeated

    buf = bytearray(before)
    out = _append_repeated(buf, piece, n)  # (over 1 MiB: new memory written once)
    assert type(out) is bytearray
    assert out == before + piece * n


def test_a_rule_file_is_read_whole_from_a_map_a_pipe_or_an_empty_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`bulk.read_file` decodes a regular file from its mapped pages, and reads what
    cannot be mapped (an empty file, a FIFO); bytes that are not UTF-8 are one error
    naming the file and the byte."""
    import os
    import threading

    from nfkit.cli.bulk import read_file
    from nfkit.errors import InputError

    text = '{"nftables": [{"table": {"family": "ip", "name": "t\u00e9"}}]}\n' * 3000
    (tmp_path / "r.json").write_text(text, encoding="utf-8")
    assert read_file(str(tmp_path / "r.json")) == text
    (tmp_path / "empty").write_bytes(b"")
    assert read_file(str(tmp_path / "empty")) == ""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(text, encoding="utf-8"))
    writer.start()
    assert read_file(str(fifo)) == text
    writer.join()
    (tmp_path / "bad").write_bytes(b"table ip t {}\n\xff\n")
    with pytest.raises(InputError, match=r"bad: not UTF-8 text \(invalid start byte at byte 14\)"):
        read_file(str(tmp_path / "bad"))


@pytest.mark.parametrize("odd", ["10.0.0.256", "010.0.0.1", "1.22.333", "1..2.3.4", "1.2.3.4.5",
                                 "0.0.0.0", "255.255.255.255", "1234567.8"])
def test_digits_and_dots_where_a_run_has_addresses(odd: str) -> None:
    """A JSON template lets digits and dots through where its rules have an IPv4 address
    (`shapes.IPV4_LOOSE_RE`): the run goes on, and a value that is no address
    (inet_pton refuses it) is the general path's, in its place, with its result."""
    items = _many(40)
    items[20]["rule"]["expr"][0]["match"]["right"] = odd
    text = _doc(items, "default")
    assert [len(c.obj) for c in load_json_runs(text) if type(c.obj) is RuleRun] == [40]
    assert _encode(text, True) == _encode(text, False)
