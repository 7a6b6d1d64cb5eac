"""nft's vocabulary against nft, item by item (tests/nftables/vocabulary.py).

For each group of items, nft -f loads every item's table into namespace A.
Then, per item:

- load: nfkit loads nft's `-j list ruleset` JSON of the item into B; B's kernel
  state (as `nft -j list ruleset` prints it, and each rule's expressions as
  `nft --debug=netlink` prints them, dependencies nft hides included) must equal A's;
  or nfkit refuses it with one InputError before sending anything;
- text: the same with the item's nft text;
- list: `nfkit rules list --json` of A equals nft's JSON listing ("raw" when
  nfkit prints an expression it does not decode in its raw form, which says so);
- listtext: `nfkit rules list` of A equals `nft list ruleset`.

What must hold for every item: a load either equals nft's or is refused; never
a ruleset loaded different (shorter) than nft loads it.  And the observed matrix
must be the one docs/rules.md documents (the coverage table there is generated
by this test: NFKIT_VOCAB_WRITE=1 rewrites it).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from nfkit.errors import InputError
from nfkit.lab import Lab, Namespace
from nfkit.netlink.codec import Batch
from nfkit.nftables import validate
from nfkit.nftables.commits import encode_commands, known_sets
from nfkit.nftables.jsonfmt import load_json
from nfkit.nftables.messages import Encoder
from nfkit.nftables.nfttext import load_nft

from ..conftest import require_kernel
from .conftest import NFKIT, fill_nft_gaps, strip
from .vocabulary import CGROUP2_GROUPS, GROUPS, Item, table_name, table_text

pytestmark = pytest.mark.kernel

DOC = Path(__file__).parents[2] / "docs" / "rules.md"
BEGIN, END = "<!-- vocabulary table: begin -->", "<!-- vocabulary table: end -->"
RESULTS: dict[str, dict[str, str]] = {}


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Namespace, Namespace]]:
    require_kernel()
    with Lab("nkv") as lab:
        yield lab.add("a"), lab.add("b")


def _tables(listing: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A stripped listing split by table name."""
    out: dict[str, list[dict[str, Any]]] = {}
    for o in listing:
        (_k, b), = o.items()
        name = b["name"] if "table" not in b else b["table"]
        out.setdefault(name, []).append(o)
    return out


def _text_tables(text: str) -> dict[str, str]:
    """`nft list ruleset` text split by table name."""
    out: dict[str, str] = {}
    for m in re.finditer(r"^table \S+ (\S+) \{\n.*?^\}\n", text, re.S | re.M):
        out[m.group(1)] = m.group(0)
    return out


def _refusal(cmds_of: Any, source: Any) -> str | None:
    """The InputError nfkit gives before sending anything, or None when it encodes."""
    try:
        cmds = cmds_of(source)
        validate.commands(cmds)
        encode_commands(cmds, Encoder(Batch(), known_sets(cmds, None), lambda: "xt"))
    except InputError as exc:
        return str(exc)
    return None


def _json_of(item: Item, tables: dict[str, list[dict[str, Any]]]) -> str:
    return json.dumps({"nftables": tables[table_name(item)]})


def _statements(item: Item, tables: dict[str, list[dict[str, Any]]]) -> str:
    """The item's rules as nft's JSON statements (the table's "JSON in")."""
    return " ".join(json.dumps(o["rule"]["expr"], separators=(",", ":"))
                    for o in tables[table_name(item)] if "rule" in o)


def _expr_bytes(debug: str) -> dict[str, list[str]]:
    """Each table's rules as `nft --debug=netlink` prints their expressions (the
    kernel's attributes, dependencies included), handles and anonymous set numbers left
    out: what a JSON listing can hide (a dependency nft does not print) shows here."""
    out: dict[str, list[str]] = {}
    table = None
    for line in debug.splitlines():
        head = re.match(r"^(\S+) (\S+) (\S+)( \d+)*$", line)
        if head and not head.group(3).startswith("@"):
            table = head.group(2)
            out.setdefault(table, []).append(head.group(3))
        elif re.match(r"^(\S+) (\S+) @", line) or line.startswith("\telement"):
            table = None if re.match(r"^(\S+) (\S+) @", line) else table
        elif line.startswith("  [") and table is not None:
            out[table].append(re.sub(r"__(set|map|objmap)\d+", "__anon", line.strip()))
    return out


def _rule_lines(text: str) -> str:
    """The rules of a table's listing (the lines of its chains)."""
    rules, in_chain = [], False
    for line in (x.strip() for x in text.splitlines()):
        if line.startswith("chain "):
            in_chain = True
        elif line == "}":
            in_chain = False
        elif in_chain and line and not line.startswith("type "):
            rules.append(line)
    return "<br>".join(rules)


class _InCgroup2:
    """A namespace whose every command runs with cgroup2 mounted at /sys/fs/cgroup (in
    the command's own mount namespace: the host's mounts are not touched)."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns

    def run(self, cmd: Any, check: bool = True, **kw: Any) -> Any:
        args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        return self.ns.run(["sh", "-c", 'mount -t cgroup2 none /sys/fs/cgroup && exec "$@"',
                            "sh", *args], check=check, **kw)


_REFUSAL_INSIDE = r'''
import sys
from nfkit.errors import InputError
from nfkit.netlink.codec import Batch
from nfkit.nftables import validate
from nfkit.nftables.commits import encode_commands, known_sets
from nfkit.nftables.jsonfmt import load_json
from nfkit.nftables.messages import Encoder
from nfkit.nftables.nfttext import load_nft
try:
    text = open(sys.argv[2]).read()
    cmds = load_json(text) if sys.argv[1] == "load" else load_nft(text)
    validate.commands(cmds)
    encode_commands(cmds, Encoder(Batch(), known_sets(cmds, None), lambda: "xt"))
except InputError as exc:
    print(exc)
'''


@contextmanager
def _cgroups(group: str, a: Any) -> Iterator[None]:
    """The group's cgroups made (one run of such a group at a time on this machine)."""
    paths = CGROUP2_GROUPS.get(group)
    if not paths:
        yield
        return
    with open("/tmp/nfkit-test-cgroup2.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        a.run(["mkdir", "-p", *(f"/sys/fs/cgroup/{p}" for p in paths)])
        try:
            yield
        finally:
            a.run(["rmdir", *(f"/sys/fs/cgroup/{p}" for p in reversed(paths))], check=False)


@pytest.mark.parametrize("group", list(GROUPS))
def test_group(group: str, pair: tuple[Namespace, Namespace], tmp_path: Path) -> None:
    if group in CGROUP2_GROUPS:
        with _cgroups(group, _InCgroup2(pair[0])):
            _test_group(group, (_InCgroup2(pair[0]), _InCgroup2(pair[1])), tmp_path)
    else:
        _test_group(group, pair, tmp_path)


def _test_group(group: str, pair: tuple[Any, Any], tmp_path: Path) -> None:
    a, b = pair
    items = GROUPS[group]
    a.run("nft flush ruleset")
    a.run(["nft", "-f", "-"], input="".join(table_text(i) for i in items))
    listing = strip(json.loads(a.run("nft -j list ruleset").stdout))
    nft_bytes = _expr_bytes(a.run("nft --debug=netlink list ruleset").stdout)
    nft_tables = _tables(listing)
    nft_text = _text_tables(a.run("nft list ruleset").stdout)
    ours_json = _tables(strip(json.loads(a.run(NFKIT + ["rules", "list", "--json"]).stdout)))
    ours_text = _text_tables(a.run(NFKIT + ["rules", "list"]).stdout)
    results: dict[str, dict[str, str]] = {}
    for item in items:
        name = table_name(item)
        results[item.id] = {"group": group, "in": _statements(item, nft_tables),
                            "out": _rule_lines(nft_text[name])}
    for form, source_of, cmds_of, ext in (
            ("load", lambda i: _json_of(i, nft_tables), load_json, ".json"),
            ("text", table_text, load_nft, ".nft")):
        accepted = []
        for item in items:
            if group in CGROUP2_GROUPS:  # cgroup paths are read where they are mounted
                f = tmp_path / ("refusal" + ext)
                f.write_text(source_of(item))
                why = a.run([sys.executable, "-c", _REFUSAL_INSIDE, form, str(f)]).stdout.strip() \
                    or None
            else:
                why = _refusal(cmds_of, source_of(item))
            if why is None:
                accepted.append(item)
            else:
                results[item.id][form] = "refused: " + why
        # The accepted items of the group in one load (one nfkit run per form).
        b.run("nft flush ruleset")
        f = tmp_path / (group + ext)
        f.write_text(json.dumps({"nftables": [o for i in accepted
                                              for o in nft_tables[table_name(i)]]})
                     if form == "load" else "".join(map(table_text, accepted)))
        proc = b.run(NFKIT + ["rules", "load", str(f)], check=False)
        assert proc.returncode == 0, proc.stderr
        got = _tables(strip(json.loads(b.run("nft -j list ruleset").stdout)))
        got_bytes = _expr_bytes(b.run("nft --debug=netlink list ruleset").stdout)
        for item in accepted:
            mine = got.get(table_name(item))
            results[item.id][form] = "equal" if mine == nft_tables[table_name(item)] else \
                "DIFFERS: " + json.dumps(mine)[:300]
            if mine == nft_tables[table_name(item)] and \
                    got_bytes.get(table_name(item)) != nft_bytes.get(table_name(item)):
                results[item.id][form] = "DIFFERS in its expressions: " + json.dumps(
                    got_bytes.get(table_name(item)))[:600]
    for item in items:
        name = table_name(item)
        r = results[item.id]
        # nft 1.0.6 leaves out a set's "dynamic" flag and a netdev chain's device.
        mine = fill_nft_gaps(ours_json.get(name, []), nft_tables[name])
        r["list"] = "equal" if mine == nft_tables[name] else \
            "raw" if "nfkit-raw" in json.dumps(mine) else "differs"
        r["listtext"] = "equal" if ours_text.get(name) == nft_text[name] else \
            "raw" if "nfkit-raw" in (ours_text.get(name) or "") else "differs"
        RESULTS[item.id] = r
    # Never a ruleset loaded other than nft loads it: equal, or refused by name.
    silent = {i.id: (RESULTS[i.id]["load"], RESULTS[i.id]["text"]) for i in items
              if "DIFFERS" in RESULTS[i.id]["load"] + RESULTS[i.id]["text"]}
    assert not silent


def _cell(v: str) -> str:
    return v.replace("|", "\\|")


def coverage_table() -> str:
    """The coverage table of docs/rules.md, from this test's observations."""
    mark = {"equal": "yes", "raw": "raw", "differs": "**differs**"}
    rows = ["| item | nft text (out) | nft JSON (in) | load JSON | load text | list --json "
            "| list | test |", "|---|---|---|---|---|---|---|---|"]
    for group, items in GROUPS.items():
        for item in items:
            r = RESULTS[item.id]

            def load(v: str) -> str:
                return "yes" if v == "equal" else "refused" if v.startswith("refused") \
                    else "**DIFFERS**"

            rows.append(
                f"| {item.what} | `{_cell(r['out'])}` | `{_cell(r['in'])}` | {load(r['load'])} "
                f"| {load(r['text'])} | {mark[r['list']]} | {mark[r['listtext']]} "
                f"| test_vocabulary.py::test_group[{group}] ({item.id}) |")
    full = sum(1 for r in RESULTS.values()
               if (r["load"], r["text"], r["list"], r["listtext"]) == ("equal",) * 4)
    rows.append("")
    rows.append(f"{full} of {len(RESULTS)} items equal to nft both ways (loaded from nft's JSON "
                "and from nft's text, listed in both forms).")
    return "\n".join(rows)


def test_coverage_table_is_documented() -> None:
    """docs/rules.md carries the table this test observed (run after test_group)."""
    if len(RESULTS) != sum(len(g) for g in GROUPS.values()):
        pytest.fail("test_group did not run for every group (run the whole file)")
    table = coverage_table()
    doc = DOC.read_text()
    head, rest = doc.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{table}\n{END}{tail}"
    if os.environ.get("NFKIT_VOCAB_WRITE"):
        DOC.write_text(new)
        doc = new
    assert doc == new, "docs/rules.md is not the observed table: rerun with NFKIT_VOCAB_WRITE=1"
