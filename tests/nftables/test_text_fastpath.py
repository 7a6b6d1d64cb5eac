"""The fast path of nft text (`nfttext`: line templates learned from the compiler) on
the files users have: each rule shape of the benchmark's mixed ruleset is read by a
learned template whatever the spacing, comments and values, and what it loads is
what the general path encodes and what nft loads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nfkit.nftables.nfttext import Reader, TextRun, load_nft

from .test_shapes import _encode_cmds

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "bench" / "rules"))
from inputs import SHAPES, mixed_nft  # noqa: E402

HEAD = ("table inet t {\n\tset blocked {\n\t\ttype ipv4_addr\n\t}\n\tchain j {\n\t}\n"
        "\tchain c {\n\t\ttype filter hook input priority filter; policy accept;\n")
NAT = "table ip nat {\n\tchain %s {\n\t\ttype nat hook %s priority %s; policy accept;\n"


def _formatted(line: str, style: int) -> str:
    """``line`` as nft lists it (tabs), with other spacing, or with a comment after it."""
    if style == 1:
        return "    " + line.replace(" ", "  ") + "  "
    if style == 2:
        return "\t" + line + "   # a note"
    return "\t\t" + line


def _one_shape(k: int, n: int, style: int, first: int = 960) -> str:
    """``n`` lines of shape ``k`` from value index ``first`` (960: interface names of
    two lengths, eth960 and eth1000)."""
    chain, make = SHAPES[k]
    lines = "".join(_formatted(make(i), style) + "\n" for i in range(first, first + n))
    head = HEAD if chain == "c" else NAT % (
        ("p", "prerouting", "dstnat") if chain == "p" else ("n", "postrouting", "srcnat"))
    return head + lines + "\t}\n}\n"


def _rows_in_runs(text: str) -> int:
    r = Reader()
    r.read_text(text, "f.nft")
    return sum(len(x.item.matches) for x in r.out if type(x.item) is TextRun)


# The anonymous set's shape is read the general way (no learned template: README).
TEMPLATED = [k for k, (_c, make) in enumerate(SHAPES) if "{" not in make(1)]


@pytest.mark.parametrize("style", [0, 1, 2], ids=["nft", "spaced", "commented"])
@pytest.mark.parametrize("k", TEMPLATED, ids=[f"shape{k}" for k in TEMPLATED])
def test_every_shape_is_read_by_a_learned_template(k: int, style: int) -> None:
    """Every shape of the mixed ruleset but the anonymous set is read by a learned
    template, formatted in any of three ways, with values that change from line to
    line (prefix lengths, rates, interface names and log prefixes of other lengths)."""
    n = 96  # the first lines of each value that the shape fixes teach it
    assert _rows_in_runs(_one_shape(k, n, style)) >= n - 16


def _mixed_formatted(n: int) -> str:
    """The mixed ruleset with each line in one of the three formats (in turn)."""
    out = []
    for i, line in enumerate(mixed_nft(n).splitlines()):
        if line.startswith("\t\t") and not line.lstrip().startswith(("type", "elements")) \
                and line.strip() not in ("counter",):
            line = _formatted(line.strip(), (i // 5) % 3)
        out.append(line)
    return "\n".join(out) + "\n"


def test_mixed_fast_path_same_bytes_as_general_path() -> None:
    """The mixed ruleset, formatted three ways: the batch the fast path makes is the one
    the general path (lark, no templates) makes."""
    from nfkit.nftables.jsonfmt import parse_commands

    text = _mixed_formatted(4 * 8 * len(SHAPES))
    fast = _encode_cmds(load_nft(text, "m.nft"))
    r = Reader(templates=False, line_lexer=False)
    r.read_text(text, "m.nft")
    slow = _encode_cmds(parse_commands({"nftables": [x.item for x in r.out]}),
                        anon_templates=False)
    assert fast == slow
    assert _rows_in_runs(text) >= 0.8 * 4 * 8 * len(SHAPES)


@pytest.mark.kernel
def test_mixed_fast_path_loads_like_nft(tmp_path: Path) -> None:
    """The mixed ruleset (formatted three ways) loaded by `nfkit rules load` gives the
    kernel state nft gives it."""
    from nfkit.lab import Lab

    from .conftest import NFKIT, nft_json

    path = tmp_path / "mixed.nft"
    path.write_text(_mixed_formatted(4 * 8 * len(SHAPES)))
    with Lab("nkx") as lab:
        a, b = lab.add("a"), lab.add("b")
        a.run(["nft", "-f", str(path)])
        b.run([*NFKIT, "rules", "load", str(path)])
        theirs, ours = nft_json(a), nft_json(b)
    assert ours == theirs
    assert sum(1 for it in ours if "rule" in it) == 4 * 8 * len(SHAPES) + 1


REJECT = """table inet t {
\tchain c {
\t\tip daddr 192.0.2.1 reject
\t\tip6 daddr 2001:db8::1 reject
\t\ttcp dport 22 reject
\t\treject
\t\tmeta nfproto ipv4 reject
\t\tip daddr 192.0.2.1 tcp dport 1 reject
\t}
}
table netdev n {
\tchain c {
\t\tip daddr 192.0.2.1 reject
\t\treject
\t}
}
"""


@pytest.mark.kernel
def test_reject_takes_the_network_protocol_like_nft(tmp_path: Path) -> None:
    """A plain `reject` after a match on ip (ip6) rejects with icmp (icmpv6), as nft
    makes it; icmpx only where no network protocol is known (it was icmpx always)."""
    from nfkit.lab import Lab

    from .conftest import NFKIT, nft_json

    path = tmp_path / "reject.nft"
    path.write_text(REJECT)
    with Lab("nkr") as lab:
        a, b = lab.add("a"), lab.add("b")
        a.run(["nft", "-f", str(path)])
        b.run([*NFKIT, "rules", "load", str(path)])
        assert nft_json(b) == nft_json(a)


def test_interface_name_slot_takes_any_length() -> None:
    """An interface name is compared in a 16-byte NUL-padded field: one slot takes
    names of 1 to 15 characters (proved by probes of both lengths), so lines whose
    names change length stay in one template."""
    from nfkit.nftables.shapes import learn, replaced

    from .test_shapes import _compiler

    expr = [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth1"}},
            {"accept": None}]
    compile_expr = _compiler("inet", "t")
    tpl = learn(expr, compile_expr)
    assert tpl is not None and [s.cls for s in tpl.slots] == [("text", 1, 15)]
    for name in ("e", "eth1", "eth1000", "veth-long-name1"):
        assert tpl.fill([name]) == compile_expr(replaced(expr, (0, "match", "right"), name))


def _messages(buf: bytes) -> list[bytes]:
    import struct

    out, pos = [], 0
    while pos < len(buf):
        ln = struct.unpack_from("=I", buf, pos)[0]
        out.append(buf[pos:pos + ln])
        pos += (ln + 3) & ~3
    return out


def test_runs_of_many_templates_written_together_each_message_named_by_its_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The mixed ruleset changes shape every 8 lines: its runs are written a template at
    a time (`Encoder.rule_runs`: a few strided writes per template, not per run), and
    every rule message is still the one its name's line encodes to on the general path
    (lark, no templates), in the file's order."""
    import re

    from nfkit.netlink.codec import Batch
    from nfkit.nftables import messages
    from nfkit.nftables.commits import encode_commands
    from nfkit.nftables.jsonfmt import parse_commands
    from nfkit.nftables.messages import Encoder

    from .conftest import unsequenced

    n = 6 * 8 * len(SHAPES)
    text = mixed_nft(n)
    writes = []
    stride = messages._stride_into
    monkeypatch.setattr(messages, "_stride_into", lambda *a: (writes.append(1), stride(*a)))
    b = Batch()
    e = Encoder(b)
    encode_commands(load_nft(text, "m.nft"), e)
    b.close()
    runs = n // 8
    # a write per column and template (about 80 here); a run alone took three or more
    assert len(writes) < runs
    fast = _messages(unsequenced(b.buffer))
    r = Reader(templates=False, line_lexer=False)
    r.read_text(text, "m.nft")
    slow = _messages(_encode_cmds(parse_commands({"nftables": [x.item for x in r.out]}),
                                  anon_templates=False))
    rule_lines = [x.line for x in r.out if "rule" in x.item.get("add", {})]
    by_line = {ln: k for k, ln in enumerate(rule_lines)}
    checked = 0
    for i, name in enumerate(e.what[j] for j in range(len(e.what))):
        m = re.fullmatch(r"rule in chain \S+ \S+ \S+ \(m\.nft:(\d+)\)", name)
        if m is None:
            continue
        k = by_line[int(m.group(1))]
        # message i of the batch (after BATCH_BEGIN) is rule k; the general batch holds
        # the same objects in the same order, so its rule messages are in line order
        assert fast[i + 1] == slow[i + 1]
        assert k == checked
        checked += 1
    assert checked == n + 1  # and chain j's counter
