"""Rule lines with one anonymous set (``tcp dport { 22, 80 } accept``) read by the fast
line reader (`Reader.anon_line`): the batch is byte for byte the general path's (lark,
no templates), or the same error; lines it does not take go the general way."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from nfkit.errors import InputError
from nfkit.nftables import nfttext
from nfkit.nftables.jsonfmt import parse_commands
from nfkit.nftables.nfttext import Reader, load_nft

from .conftest import encoded_commands


# (text before the set, its element values): ports, addresses, interface names, ct
# states; `bad` adds values the encoder refuses (out of range, unknown names)
def _pres(bad: bool) -> list[tuple[str, Any]]:
    ports = st.one_of(st.integers(1, 65535).map(str), st.sampled_from(
        ["ssh", "http", "https", "domain", "0x50"]
        + (["0", "70000", "nosuchservice"] if bad else [])))
    port_elem = st.one_of(ports, st.tuples(ports, ports).map("-".join))
    v4 = st.one_of(st.sampled_from(["192.0.2.1", "198.51.100.7", "203.0.113.255"]
                                   + (["300.1.2.3"] if bad else [])),
                   st.integers(0, 255).map(lambda i: f"192.0.2.{i}"))
    v4_elem = st.one_of(v4, st.tuples(v4, st.integers(8, 33 if bad else 32)).map(
        lambda t: f"{t[0]}/{t[1]}"), st.tuples(v4, v4).map("-".join))
    v6_elem = st.sampled_from(["2001:db8::1", "2001:db8::/32", "2001:db8::1-2001:db8::9"])
    ifname = st.sampled_from(['"eth0"', '"veth1"', "lo", '"a-very-long-interface-name"'])
    states = st.sampled_from(["established", "related", "new", "invalid"]
                             + (["bogus"] if bad else []))
    return [("tcp dport", port_elem), ("tcp dport !=", port_elem), ("udp sport", port_elem),
            ("ip saddr 192.0.2.0/24 tcp dport !=", port_elem), ("ip saddr", v4_elem),
            ("ip daddr !=", v4_elem), ("ip6 saddr", v6_elem), ("iifname", ifname),
            ("ct state", states), ("meta l4proto tcp th dport", port_elem)]


_POSTS = st.sampled_from(["accept", "counter drop", "drop", 'accept comment "web"',
                          "counter accept", "jump j", "log prefix \"x \" drop"])


@st.composite
def _line(draw: Any, bad: bool = False) -> str:
    pres = _pres(bad)
    pre, elem = pres[draw(st.integers(0, len(pres) - 1))]
    elems = draw(st.lists(elem, min_size=1, max_size=4))
    sep = draw(st.sampled_from([", ", ",", " , "]))
    trailing = draw(st.sampled_from(["", ","]))
    return f"{pre} {{ {sep.join(elems)}{trailing} }} {draw(_POSTS)}"


def _ruleset(lines: list[str]) -> str:
    body = "".join(f"\t\t{ln}\n" for ln in lines)
    return ("table inet t {\n\tchain j {\n\t\tcounter\n\t}\n"
            "\tchain c {\n\t\ttype filter hook input priority filter; policy accept;\n"
            f"{body}\t}}\n}}\n")


def _fast(text: str) -> Any:
    try:
        cmds = load_nft(text, "a.nft")
    except InputError as exc:
        return "read", str(exc)
    return encoded_commands(cmds)


def _general(text: str) -> Any:
    r = Reader(templates=False, line_lexer=False)
    try:
        r.read_text(text, "a.nft")
        cmds = parse_commands({"nftables": [x.item for x in r.out]})
    except InputError as exc:
        return "read", str(exc)
    return encoded_commands(cmds, anon_templates=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(_line(), min_size=1, max_size=12))
def test_anonymous_set_lines_same_bytes_or_error_as_general_path(lines: list[str]) -> None:
    # each line twice, so that the second is read by the template the first taught
    text = _ruleset([ln for ln in lines for _ in range(2)])
    assert _fast(text) == _general(text)


@settings(max_examples=60, deadline=None)
@given(st.lists(_line(bad=True), min_size=1, max_size=2))
def test_anonymous_set_lines_with_bad_values_same_error_as_general_path(lines: list[str]
                                                                        ) -> None:
    text = _ruleset([ln for ln in lines for _ in range(2)])
    assert _fast(text) == _general(text)


def test_anonymous_set_lines_taken_by_the_fast_reader(monkeypatch: Any) -> None:
    """Of 200 lines of one shape with sets of any size, ranges and service names, one is
    read in full (the one that teaches the template); the batch is the general path's."""
    lines = [f"tcp dport {{ {', '.join(str(1 + (i + k) % 60000) for k in range(1 + i % 5))}"
             f", ssh, {i + 1}-{i + 9} }} counter accept" for i in range(200)]
    text = _ruleset(lines)
    calls = []
    rule = nfttext.Statements.rule

    def counted(self: Any, items: Any, last: Any) -> Any:
        calls.append(1)
        return rule(self, items, last)

    monkeypatch.setattr(nfttext.Statements, "rule", counted)
    fast = _fast(text)
    assert len(calls) <= 3  # "counter" of chain j, the first set line, its marked reading
    assert fast == _general(text)


def _full_error(cmds: Any, anon_templates: bool) -> str:
    from nfkit.netlink.codec import Batch
    from nfkit.nftables.commits import encode_commands
    from nfkit.nftables.messages import Encoder

    try:
        encode_commands(cmds, Encoder(Batch(), anon_templates=anon_templates))
    except InputError as exc:
        return str(exc)
    return "no error"


def test_anonymous_set_line_errors_keep_their_line() -> None:
    """A bad line after lines of its shape: the general path's error, at its line."""
    good = ["tcp dport { 22, 80 } accept"] * 3
    text = _ruleset([*good, "tcp dport { 22 80 } accept"])
    got = _fast(text)
    assert got == _general(text)
    assert got[0] == "read" and "a.nft:10:18-19: Error: syntax error, unexpected 80" in got[1]
    for bad in ("tcp dport { 22, nosuchservice } accept", "tcp dport { 1-70000 } accept"):
        text = _ruleset([*good, bad])
        r = Reader(templates=False, line_lexer=False)
        r.read_text(text, "a.nft")
        general = _full_error(parse_commands({"nftables": [x.item for x in r.out]}), False)
        fast = _full_error(load_nft(text, "a.nft"), True)
        assert fast.split(": ", 1)[1] == general.split(": ", 1)[1]
        assert fast.startswith("rule in chain inet t c (a.nft:10): ")


# A template's line regex (`Template.line_re`) against the scanner: it matches a line
# exactly when the scanner cuts it into the template's tokens (the same terminals, the
# texts it fixes), and its groups are the scanner's tokens.
_SAMPLES = ["ip6 saddr 2001:db8::1 accept", "meta mark 0x1 accept", "ip saddr 192.0.2.1 accept",
            "ether saddr aa:bb:cc:dd:ee:ff accept", 'iifname "eth0" accept',
            "meta priority 1:2 accept", "ct mark 7 counter drop", "tcp dport 22 accept"]
_WORDS = ["ip6", "ip", "saddr", "meta", "mark", "priority", "ether", "iifname", "ct", "tcp",
          "dport", "accept", "counter", "drop", "2001:db8::1", "aa:bb:cc:dd:ee:ff", "1:2",
          "aa:bb", "0x1", "1h", "7s", "7", "22", "192.0.2.1", "1.2.3.4.5", '"eth0"', '"@x"',
          "eth0", "-", "1e1", "22-23", "10.0.0.0/8", "a1", "::", ":"]


@settings(max_examples=300, deadline=None)
@example("ip6 saddr 2001:db8::1 accept", ["aa:bb:cc:dd:ee:ff", "accept"], " ")  # a MAC
@example("ip6 saddr 2001:db8::1 accept", ["ab:cd:ef:01:02:03", "accept"], "  ")
@given(st.sampled_from(_SAMPLES), st.lists(st.sampled_from(_WORDS), min_size=1, max_size=5),
       st.sampled_from([" ", "  ", "\t", ""]))
def test_template_line_regex_matches_as_the_scanner_cuts(sample: str, words: list[str],
                                                          ws: str) -> None:
    r = Reader()
    r.rule_line("inet", sample)  # no template yet: learns none
    items = r.line_items(_line_tree(sample), nfttext.Source("a", sample + "\n"))
    r.rule_stmts("inet", items, items[-1])
    tpl = r.templates[("inet", *(_key(it) for it in items))]
    tpl.compile_line(nfttext._parser().parser.lexer.alternatives)
    words = [*sample.split(" ")[:2], *words]
    line = ws.join(words) if ws else " ".join(words)
    scan = nfttext._parser().parser.lexer.scanner
    toks, pos = [], 0
    for m in scan.finditer(line):
        if m.start() != pos:
            break
        pos = m.end()
        if m.lastgroup != "_WS":
            kind = "STRING@" if m.lastgroup == "STRING" and m.group()[:2] == '"@' else m.lastgroup
            toks.append((kind, m.group()))
    cut = pos == len(line) and [k for k, _ in toks] == tpl.kinds and all(
        toks[int(g[1:])][1] == tpl.texts[int(g[1:])] for g in tpl.checks)
    m = tpl.line_re.match(line)
    hit = m is not None and (not tpl.checks or m.group(*tpl.checks) == tpl.check_texts)
    assert hit == cut
    if hit:
        assert m is not None
        assert [m.group(f"t{i}") for i in range(len(tpl.kinds))] == [t for _, t in toks]


def _line_tree(text: str) -> Any:
    from lark import Token, Tree

    return Tree("line", [Token("RULELINE", text, None, 1, 1, 1, 1 + len(text))])


def _key(it: Any) -> str:
    if it.kind in nfttext._VALUE_KINDS:
        return "STRING@" if it.text[:2] == '"@' else it.kind
    return str(it.text)
