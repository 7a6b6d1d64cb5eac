"""nft's own text in (`nfkit rules load FILE.nft`), conformance against nft (the oracle).

Every .nft file of the corpus -- the examples the nftables package installs
(tests/nftables/nft/examples, copied so the tests need no doc package), files in
the styles of distributions' firewalls (tests/nftables/nft/distro) and the .nft
forms of tests/nftables/rulesets -- is loaded by `nft -f` in namespace A and by
`nfkit rules load` in namespace B; both must end in the same kernel state (`nft -j
list ruleset`, handles aside).  Every bad file (tests/nftables/nft/bad) that
`nft -c -f` refuses, nfkit refuses at the same line, nothing committed.  The
unit tests at the end need no kernel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.errors import InputError
from nfkit.lab import Lab
from nfkit.nftables.nfttext import time_seconds, to_json

from .conftest import NFKIT, nft_json, set_userdata

HERE = Path(__file__).parent
NFT = HERE / "nft"
DISTRO = NFT / "distro"
# A file nft loads and nfkit's encoder cannot take whole (an icmp header field written with
# its checksum fixed is not encoded): refused with the rule's file and line, never loaded in
# part.
GAP = """table ip t {
\tchain c {
\t\ttype filter hook input priority 0; policy accept;
\t\ttcp dport 22 accept
\t\tsocket cgroupv2 level 1 "user.slice" accept
\t}
}
"""
CORPUS = sorted((NFT / "examples").glob("*.nft")) + sorted(DISTRO.glob("*.nft")) + \
    sorted((HERE / "rulesets").glob("*.nft"))
GOOD = CORPUS
BAD = sorted((NFT / "bad").glob("*.nft"))
# Interfaces the corpus names (the examples' eth0/bond0, the distro files' wan/lan).
LINKS = [("eth0", "eth1"), ("eth2", "eth3"), ("bond0", "bond1"), ("docker0", "br0"),
         ("wan", "lan")]


@pytest.fixture(scope="module")
def pair():  # type: ignore[no-untyped-def]
    from tests.conftest import require_kernel

    require_kernel()
    with Lab("ntx") as lab:
        nss = lab.add("a"), lab.add("b")
        for ns in nss:
            for x, y in LINKS:
                ns.run(["ip", "link", "add", x, "type", "veth", "peer", "name", y])
        yield nss


def _ids(paths: list[Path]) -> list[str]:
    return [f"{p.parent.name}/{p.stem}" for p in paths]


@pytest.mark.kernel
@pytest.mark.parametrize("path", GOOD, ids=_ids(GOOD))
def test_loads_like_nft(path: Path, pair) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    a.run("nft flush ruleset")
    b.run("nft flush ruleset")
    # Both from the file's directory: nft resolves "./x" includes from there.
    a.run(["nft", "-I", str(DISTRO), "-f", path.name], cwd=path.parent)
    proc = b.run(NFKIT + ["rules", "load", "-I", str(DISTRO), path.name], cwd=path.parent,
                 check=False)
    assert proc.returncode == 0, proc.stderr
    assert nft_json(b) == nft_json(a)
    # the sets' names and nft's user data in them, byte for byte
    assert set_userdata(b) == set_userdata(a)


@pytest.mark.kernel
@pytest.mark.parametrize("path", GOOD, ids=_ids(GOOD))
def test_nft_listing_reloads(path: Path, pair) -> None:  # type: ignore[no-untyped-def]
    """`nft list ruleset > saved.nft` (nft's own text out: counters, element
    expiries, wrapped sets) loaded by nfkit gives the listed kernel state back."""
    a, b = pair
    a.run("nft flush ruleset")
    b.run("nft flush ruleset")
    a.run(["nft", "-I", str(DISTRO), "-f", path.name], cwd=path.parent)
    listing = a.run("nft list ruleset").stdout
    proc = b.run(NFKIT + ["rules", "load", "-"], input=listing, check=False)
    assert proc.returncode == 0, proc.stderr
    assert nft_json(b) == nft_json(a)


@pytest.mark.kernel
def test_gap_refused_whole(pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A file the encoder cannot take whole is refused naming the rule's line; the
    kernel keeps what it had."""
    _, b = pair
    b.run("nft flush ruleset")
    b.run("nft add table ip keep")
    (tmp_path / "gap.nft").write_text(GAP)
    proc = b.run(NFKIT + ["rules", "load", "gap.nft"], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert re.search(r"\(gap\.nft:5\)", proc.stderr), proc.stderr
    assert [o for o in nft_json(b) if "table" in o] == [
        {"table": {"family": "ip", "name": "keep"}}]


def _first_line(text: str, name: str) -> int | None:
    m = re.search(rf"{re.escape(name)}:(\d+)", text)
    return int(m.group(1)) if m else None


@pytest.mark.kernel
@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_refused_at_nfts_line(path: Path, pair) -> None:  # type: ignore[no-untyped-def]
    _, b = pair
    b.run("nft flush ruleset")
    theirs = b.run(["nft", "-c", "-f", path.name], cwd=path.parent, check=False)
    assert theirs.returncode != 0, "nft accepts this file: not a bad file"
    ours = b.run(NFKIT + ["rules", "load", path.name], cwd=path.parent, check=False)
    assert ours.returncode == 2
    assert "Traceback" not in ours.stderr
    assert _first_line(ours.stderr, path.name) == _first_line(theirs.stderr, path.name), \
        (theirs.stderr, ours.stderr)
    assert nft_json(b) == []  # nothing committed


@pytest.mark.kernel
def test_check_commits_nothing(pair) -> None:  # type: ignore[no-untyped-def]
    _, b = pair
    b.run("nft flush ruleset")
    proc = b.run(NFKIT + ["rules", "check", "debian.nft"], cwd=DISTRO, check=False)
    assert proc.returncode == 0, proc.stderr
    assert nft_json(b) == []


@pytest.mark.kernel
def test_apply_reads_text(pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    text = ("table inet t {\n\tchain c {\n\t\ttype filter hook input priority 0;\n"
            "\t\ttcp dport 22 accept\n\t}\n}\n")
    f = tmp_path / "want.nft"
    f.write_text(text)
    for ns in (a, b):
        ns.run("nft flush ruleset")
    a.run(["nft", "-f", str(f)])
    proc = b.run(NFKIT + ["rules", "apply", str(f)], check=False)
    assert proc.returncode == 0, proc.stderr
    assert nft_json(b) == nft_json(a)


# ---- no kernel ---------------------------------------------------------------------

def _err(text: str, name: str = "f.nft", **kw: object) -> str:
    with pytest.raises(InputError) as exc:
        to_json(text, name, **kw)  # type: ignore[arg-type]
    return str(exc.value)


def test_error_has_nfts_form() -> None:
    msg = _err("table inet t {\n\tchain c {\n\t\ttcp dport 22 acept\n\t}\n}\n")
    assert msg == ("f.nft:3:16-20: Error: syntax error, unexpected acept\n"
                   "\t\ttcp dport 22 acept\n\t\t" + " " * 13 + "^^^^^")


def test_unknown_variable_points_at_it() -> None:
    msg = _err("define A = 1\nadd rule t c meta mark $B accept\n")
    assert msg.startswith("f.nft:2:25-25: Error: unknown identifier 'B'")


def test_defines_expand_and_nest() -> None:
    doc = to_json('define a = eth0\ndefine b = { $a, "eth1" }\ndefine ports = { ssh, 80-90 }\n'
                  "add rule inet t c iifname $b tcp dport $ports accept\n")
    (cmd,) = doc["nftables"]
    assert cmd["add"]["rule"]["expr"] == [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}},
                   "right": {"set": ["eth0", "eth1"]}}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                   "right": {"set": ["ssh", {"range": [80, 90]}]}}},
        {"accept": None}]


def test_define_is_block_scoped() -> None:
    msg = _err("table t {\n\tdefine x = 1\n}\nadd rule t c meta mark $x\n")
    assert "4:" in msg.split(":", 1)[1][:3] and "unknown identifier 'x'" in msg


def test_priorities_by_name_and_family() -> None:
    doc = to_json("table bridge t {\n\tchain c { type filter hook input priority filter + 10; }\n}\n"
                  "table inet t {\n\tchain c { type filter hook input priority mangle - 5; }\n}\n")
    prios = [x["add"]["chain"]["prio"] for x in doc["nftables"] if "chain" in x["add"]]
    assert prios == [-190, -155]


def test_one_line_commands() -> None:
    doc = to_json("flush ruleset\nadd table inet t\nadd chain inet t c "
                  "{ type filter hook input priority 0; policy drop; }\n"
                  "insert rule inet t c position 4 tcp dport 22 accept\n"
                  "replace rule inet t c handle 7 drop\ndelete rule inet t c handle 8\n"
                  "add element inet t s { 192.0.2.1 timeout 1h30m }\ndelete chain inet t d\n")
    verbs = [(v, k) for x in doc["nftables"] for v, b in x.items() for k in b]
    assert verbs == [("flush", "ruleset"), ("add", "table"), ("add", "chain"), ("insert", "rule"),
                     ("replace", "rule"), ("delete", "rule"), ("add", "element"),
                     ("delete", "chain")]
    items = doc["nftables"]
    assert items[2]["add"]["chain"]["policy"] == "drop"
    assert items[3]["insert"]["rule"]["position"] == 4
    assert items[4]["replace"]["rule"]["handle"] == 7
    assert items[6]["add"]["element"]["elem"] == [{"elem": {"val": "192.0.2.1", "timeout": 5400}}]


def test_line_continuation_and_comments() -> None:
    doc = to_json("add rule ip t c ip saddr { 192.0.2.1, # one\n 192.0.2.2 } \\\n accept # done\n")
    (cmd,) = doc["nftables"]
    assert cmd["add"]["rule"]["expr"][-1] == {"accept": None}


def test_include_search_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nft 1.0.6: "./x" and "/x" as given (from the current directory); a bare name
    only in the include paths; a glob may match nothing, a plain name must exist."""
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "a.nft").write_text("add table ip a\n")
    (tmp_path / "b.nft").write_text("add table ip b\n")
    monkeypatch.chdir(tmp_path)
    names = lambda d: [x["add"]["table"]["name"] for x in d["nftables"]]  # noqa: E731
    assert names(to_json('include "a.nft"\n', include_paths=["inc"])) == ["a"]
    assert names(to_json('include "./b.nft"\n')) == ["b"]
    assert names(to_json('include "./inc/*.nft"\ninclude "./none/*.nft"\n')) == ["a"]
    assert "File not found: b.nft" in _err('include "b.nft"\n')
    (tmp_path / "loop.nft").write_text('include "./loop.nft"\n')
    assert "Include nested too deeply" in _err('include "./loop.nft"\n')


def test_include_error_names_the_includer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.nft").write_text("add rule ip t c bogus\n")
    monkeypatch.chdir(tmp_path)
    msg = _err('include "./bad.nft"\n', "main.nft")
    assert msg.startswith("In file included from main.nft:1:1-19:\n./bad.nft:1:17-21: Error:")


def test_times() -> None:
    assert time_seconds("1h30m") == 5400
    assert time_seconds("2d") == 172800
    assert time_seconds("500ms") == 0.5
    assert time_seconds("eth0") is None


def test_json_is_recognised() -> None:
    from nfkit.nftables.nfttext import looks_like_json

    assert looks_like_json('  {"nftables": []}')
    assert not looks_like_json("table inet t {}")
    assert json.dumps(to_json("")) == '{"nftables": []}'


VARIED = """table inet t {
\tchain c {
%s
\t}
}
"""
SHAPES = [
    'ip saddr {a} tcp dport {p} counter accept',
    'ip saddr {a}/{l} ip daddr != {a} drop',
    'tcp dport {p}-{q} meta mark set {h} comment "r{p}"',
    'meta mark {h} ct mark set {h} log prefix "m{p}: " level info',
    'ip6 saddr 2001:db8::{p:x} udp sport {p} counter packets {p} bytes {q} accept',
    'iifname "eth{n}" ether saddr 02:00:00:00:00:{n:02x} accept',
    'ct expiration < {n}m accept',
    'meta priority set {n}:{m}',
    'limit rate {m}/second burst {m} packets accept',
    'quota over {n} mbytes drop',
    'ip ttl {n} tcp flags syn / syn,ack drop',
    'ip dscp {n} ip length > {p} reject with icmp type host-unreachable',
    'tcp dport {p} dnat ip to {a}:{q}',
]


def _varied(n: int) -> str:
    lines = []
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        lines.append("\t\t" + shape.format(a=f"192.0.2.{i % 250 + 1}", l=24 + i % 8, p=1 + i % 60000,
                                          q=60001 + i % 5000, h=hex(i), n=i % 63, m=i % 7 + 1))
    return VARIED % "\n".join(lines)


def test_templates_read_as_the_full_reader() -> None:
    """Rules read from a template of their shape equal rules read in full, for every
    corpus file and for many rules of varied shapes and values."""
    from nfkit.nftables.nfttext import Reader

    texts = [(p.name, p.read_text()) for p in CORPUS if "include" not in p.read_text()]
    texts.append(("varied.nft", _varied(600)))
    for name, text in texts:
        fast, full = Reader(), Reader(templates=False, line_lexer=False)
        fast.read_text(text, name)
        full.read_text(text, name)
        assert [(x.item, x.line, x.col) for x in fast.out] == \
            [(x.item, x.line, x.col) for x in full.out], name
    assert len(fast.templates) >= len(SHAPES) - 1


@pytest.mark.parametrize("text", [
    "table t {\n\tchain c {\n\t\tmeta mark 1 bogus\n\t}\n}\n",
    "table t {\n\tchain c {\n\t\tmeta mark 1 accept\n\t\tmeta mark 2 ~ accept\n\t}\n}\n",
    "table t {\n\tchain c {\n\t\tmeta mark $nope accept\n\t}\n}\n",
    "table t {\n\tchain c {\n\t\tip saddr 192.0.2.1 accept; ip daddr 192.0.2.1 acept\n\t}\n}\n",
])
def test_line_lexer_errors_like_lark(text: str) -> None:
    """Errors in lines the line lexer reads are those of lark's own lexing."""
    from nfkit.nftables.nfttext import Reader

    msgs = []
    for line_lexer in (True, False):
        with pytest.raises(InputError) as exc:
            Reader(line_lexer=line_lexer).read_text(text, "f.nft")
        msgs.append(str(exc.value))
    assert msgs[0] == msgs[1]


def test_template_never_hides_a_value_the_reader_looks_at() -> None:
    """A shape whose meaning depends on a value (a prefix length, a rate, a time) keeps
    that value fixed: another value reads in full."""
    from nfkit.nftables.nfttext import Reader, expanded

    text = VARIED % "\n".join(f"\t\tip saddr 192.0.2.0/{n} limit rate {n}/second accept"
                              for n in (24, 24, 25, 26))
    r = Reader()
    r.read_text(text, "x.nft")
    out = expanded(r.out)  # runs of lines read by learned templates, a rule a line
    lens = [x.item["add"]["rule"]["expr"][0]["match"]["right"]["prefix"]["len"]
            for x in out if "rule" in x.item["add"]]
    rates = [x.item["add"]["rule"]["expr"][1]["limit"]["rate"] for x in out
             if "rule" in x.item["add"]]
    assert lens == [24, 24, 25, 26] and rates == [24, 24, 25, 26]


@pytest.mark.kernel
def test_varied_shapes_load_like_nft(pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """2,000 rules of 13 shapes (most read from templates) give nft's kernel state."""
    a, b = pair
    f = tmp_path / "varied.nft"
    f.write_text(_varied(2000))
    for ns in (a, b):
        ns.run("nft flush ruleset")
    a.run(["nft", "-f", str(f)])
    proc = b.run(NFKIT + ["rules", "load", str(f)], check=False)
    assert proc.returncode == 0, proc.stderr
    assert nft_json(b) == nft_json(a)


def test_include_inside_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An include in a table block reads table lines; in a chain block, rule lines."""
    (tmp_path / "sets.nft").write_text("set s {\n\ttype ipv4_addr\n}\n")
    (tmp_path / "rules.nft").write_text("ip saddr @s drop\ntcp dport 22 accept\n")
    monkeypatch.chdir(tmp_path)
    doc = to_json('table inet t {\n\tinclude "./sets.nft"\n\tchain c {\n'
                  '\t\tinclude "./rules.nft"\n\t\tcounter\n\t}\n}\n')
    kinds = [k for x in doc["nftables"] for k in x["add"]]
    assert kinds == ["table", "set", "chain", "rule", "rule", "rule"]


@pytest.mark.kernel
def test_stdin_and_syntax_flag(pair) -> None:  # type: ignore[no-untyped-def]
    """`-` reads nft text from stdin; --syntax json refuses text with JSON's error."""
    _, b = pair
    b.run("nft flush ruleset")
    text = "table ip t {\n\tchain c {\n\t\tmeta mark 7 accept\n\t}\n}\n"
    proc = b.run(NFKIT + ["rules", "load", "-"], input=text, check=False)
    assert proc.returncode == 0, proc.stderr
    assert [o for o in nft_json(b) if "rule" in o]
    b.run("nft flush ruleset")
    proc = b.run(NFKIT + ["rules", "load", "--syntax", "json", "-"], input=text, check=False)
    assert proc.returncode == 2 and "JSON syntax error" in proc.stderr
    assert nft_json(b) == []


@st.composite
def _shape_pair(draw: Any) -> str:
    """Two or three rule lines of one shape with drawn values (some of them the kind a
    reader looks at: prefix lengths, rates, times, quoted set names)."""
    shape = draw(st.sampled_from(SHAPES + [
        'ip saddr {a} ip daddr {a} counter', 'meta mark {h} meta mark set {v}',
        'iifname {s} oifname {s} accept', 'ct mark {n} ct expiration < {t} accept',
        'ip saddr {a} tcp dport {p} limit rate {n}/minute accept', 'meta mark {v} drop']))
    lines = []
    for _ in range(draw(st.integers(2, 3))):
        n = draw(st.integers(1, 70))
        vals = dict(
            a=draw(st.sampled_from(["192.0.2.1", "198.51.100.7", "203.0.113.255"])),
            l=draw(st.integers(8, 32)), p=draw(st.integers(1, 65535)),
            q=draw(st.integers(1, 65535)), h=hex(draw(st.integers(0, 2 ** 32 - 1))),
            n=n, m=draw(st.integers(1, 9)),
            v=draw(st.sampled_from(["1", "0x10", "7", "-1", "1-2", "0x1/1", "@marks"])),
            s=draw(st.sampled_from(['"eth0"', "eth1", '"@x"', '"lo"', "lo*"])),
            t=draw(st.sampled_from(["1s", "2m", "1h30m", "500ms", "10"])))
        lines.append("\t\t" + shape.format(**vals))
    return VARIED % "\n".join(lines)


@settings(max_examples=150, deadline=None)
@given(_shape_pair())
def test_templates_agree_on_drawn_values(text: str) -> None:
    from nfkit.nftables.nfttext import Reader, expanded

    def read(**kw: bool) -> Any:
        r = Reader(**kw)
        try:
            r.read_text(text, "d.nft")
        except InputError as exc:
            return str(exc)
        return [(x.item, x.line, x.col) for x in expanded(r.out)]

    assert read() == read(templates=False, line_lexer=False)


def test_typeof_gives_types() -> None:
    doc = to_json("table inet t {\n\tmap m {\n\t\ttypeof ip saddr . tcp dport : meta mark\n\t}\n}\n")
    body = doc["nftables"][1]["add"]["map"]
    assert (body["type"], body["map"]) == (["ipv4_addr", "inet_service"], "mark")
    assert "typeof of this expression is not supported" in _err(
        "table t {\n\tset s {\n\t\ttypeof osf name\n\t}\n}\n")


@pytest.mark.kernel
def test_include_order_like_nft(pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A glob over several -I paths and a plain name found in two: nft's order."""
    a, b = pair
    for d, names in (("p1", ("x1",)), ("p2", ("x1", "x2"))):
        (tmp_path / d).mkdir()
        for n in names:
            (tmp_path / d / f"{n}.nft").write_text(f"table ip {d}{n} {{}}\n")
    (tmp_path / "main.nft").write_text('include "x*.nft"\ninclude "x1.nft"\n')
    args = ["-I", "p1", "-I", "p2", "-f", "main.nft"]
    for ns in (a, b):
        ns.run("nft flush ruleset")
    a.run(["nft", *args], cwd=tmp_path)
    proc = b.run(NFKIT + ["rules", "load", *args[:4], "main.nft"], cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr
    assert nft_json(b) == nft_json(a)


_LEXER_PIECES = ["a", "b", " ", "\t", "\n", "{", "}", "#", ";", "\\", '"', "x", "include ", "elements ",
                 "\n  ", "ip saddr 192.0.2.1 ", '"q"', "\n\t\tl3proto inet", "\n\t}"]


def _simple_lines_end(text: str, pos: int) -> int:
    """Where the run of simple lines after ``pos`` ends, one line at a time."""
    from nfkit.nftables.nfttext import _RULE_LINE

    while pos < len(text) and text[pos] == "\n":
        m = _RULE_LINE.match(text, pos + 1)
        if m is None:
            break
        pos = m.end()
    return pos


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_LEXER_PIECES), max_size=24), st.integers(0, 40))
def test_a_run_of_simple_lines_ends_where_line_by_line_reading_ends(pieces: list[str], at: int) -> None:
    """The line lexer's one match over a run of lines (`_MORE_LINES`) ends where reading
    them one by one ends, on the Python running the tests (3.11.2's possessive
    quantifiers got this wrong for ct_helpers.nft's `l3proto inet` line)."""
    from nfkit.nftables.nfttext import _MORE_LINES

    text = "".join(pieces)
    pos = min(at, len(text))
    assert _MORE_LINES.match(text, pos).end() == _simple_lines_end(text, pos)  # type: ignore[union-attr]
    assert _MORE_LINES.match("\n\t\tl3proto inet\n\t}", 0).end() == 15  # type: ignore[union-attr]


_RUN_PIECES = [*_LEXER_PIECES, "\n\n", "\n\t\t", "\n\tdefine x", "\nredefine", "\r", "\u00a0", "\f",
               "\n\t\tip saddr 10.0.0.1 tcp dport 2 counter accept", "includex", "elementsy {"]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_RUN_PIECES), max_size=30), st.lists(st.integers(0, 60), max_size=4))
def test_run_end_found_by_find_ends_where_the_run_regex_ends(pieces: list[str], ats: list[int]) -> None:
    """`_run_end` (str.find to the first line that is not plain, the regex from there)
    ends where `_MORE_LINES` ends, from any positions in order, with the special
    characters' places kept from one run to the next (as the line lexer keeps them)."""
    from nfkit.nftables.nfttext import _MORE_LINES, _SPECIAL, _run_end

    text = "".join(pieces)
    nexts = [-1] * len(_SPECIAL)
    for at in sorted(ats):
        pos = min(at, len(text))
        assert _run_end(text, pos, nexts) == _MORE_LINES.match(text, pos).end()  # type: ignore[union-attr]
