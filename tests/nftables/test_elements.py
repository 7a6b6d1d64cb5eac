"""`nfkit rules element add|delete|list` against nft: the same elements in the kernel, listed alike."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.lab import Lab, Namespace
from nfkit.nftables.elements import read_elements, split_elements
from nfkit.nftables.nfttext import to_json
from nfkit.nftables.plainelements import json_document
from tests.nftables.conftest import NFKIT

SETS = """table inet t {
  set s { type ipv4_addr; }
  set p { type ipv4_addr; flags interval; }
  set svc { type inet_service; }
  set c { type ipv4_addr . inet_service; }
  set i { type ifname; }
  set six { type ipv6_addr; flags timeout; }
  map m { type ipv4_addr : verdict; }
  map mk { type ipv4_addr : mark; }
  chain x { }
}
"""

# per set: elements in nft's syntax, common forms and those only nft's grammar reads
ELEMENTS = {
    "s": [f"198.51.{i >> 8}.{i & 255}" for i in range(3000)] + ["192.0.2.1", "203.0.113.9"],
    "p": ["10.0.0.0/8", "192.168.0.1-192.168.0.9", "203.0.113.0/24", "192.0.2.77"],
    "svc": ["ssh", "80", "8000", "https", "domain"],
    "c": ["192.0.2.1 . 22", "192.0.2.2 . http", "198.51.100.9 . 8080"],
    "i": ['"eth0"', '"veth-with-long0"', '"lo"'],
    "six": ["2001:db8::1", "2001:db8::2 timeout 1h", "2001:db8:ffff::abcd"],
    "m": ["192.0.2.1 : drop", "192.0.2.2 : jump x", "192.0.2.3 : accept"],
    "mk": ["192.0.2.1 : 7", "192.0.2.2 : 0x10"],
}


def _elements_of(ns: Namespace, kind: str, name: str) -> Any:
    doc = json.loads(ns.run(f"nft -j list {kind} inet t {name}").stdout)
    (body,) = [o[kind] for o in doc["nftables"] if kind in o]
    elem = body.get("elem", [])
    # an element's remaining lifetime moves on between two listings
    return sorted(json.dumps(e, sort_keys=True).replace('"expires"', '"x"').split('"x"')[0] for e in elem)


def test_elements_reach_the_kernel_as_nft_adds_them(lab: Lab, tmp_path: Path) -> None:
    ours, theirs = lab.add("ours"), lab.add("theirs")
    for ns in (ours, theirs):
        ns.run(["nft", "-f", "-"], input=SETS)
    for name, elems in ELEMENTS.items():
        f = tmp_path / f"{name}.txt"
        # a file as users write one: one per line, a comment, some on one line
        f.write_text("# blocklist\n" + "\n".join(elems[:-1]) + f", {elems[-1]}  # last\n")
        ours.run(NFKIT + ["rules", "element", "add", "inet", "t", name, "--from", str(f)])
        theirs.run(["nft", "-f", "-"], input=f"add element inet t {name} {{ {', '.join(elems)} }}\n")
    kinds = {n: "map" if n.startswith("m") else "set" for n in ELEMENTS}
    for name, kind in kinds.items():
        assert _elements_of(ours, kind, name) == _elements_of(theirs, kind, name), name
    # listings: nft's text and JSON of the same set
    assert ours.run(NFKIT + ["rules", "element", "list", "inet", "t", "svc"]).stdout == \
        ours.run("nft list set inet t svc").stdout
    got = json.loads(ours.run(NFKIT + ["rules", "element", "list", "inet", "t", "m", "--json"]).stdout)
    want = json.loads(ours.run("nft -j list map inet t m").stdout)
    assert [o for o in got["nftables"] if "map" in o] == [o for o in want["nftables"] if "map" in o]
    # delete half, from the command line, both ways
    half = ELEMENTS["s"][::2]
    ours.run(NFKIT + ["rules", "element", "delete", "inet", "t", "s", *half])
    theirs.run(["nft", "-f", "-"], input=f"delete element inet t s {{ {', '.join(half)} }}\n")
    assert _elements_of(ours, "set", "s") == _elements_of(theirs, "set", "s")
    assert len(_elements_of(ours, "set", "s")) == len(ELEMENTS["s"]) - len(half)


def test_one_bad_element_commits_none(netns: Namespace, tmp_path: Path) -> None:
    netns.run(["nft", "-f", "-"], input=SETS)
    before = netns.run("nft list set inet t s").stdout
    f = tmp_path / "list.txt"
    f.write_text("\n".join([f"198.51.100.{i}" for i in range(200)] + ["192.0.2.300"]) + "\n")
    r = netns.run(NFKIT + ["rules", "element", "add", "inet", "t", "s", "--from", str(f)], check=False)
    assert r.returncode == 2 and "192.0.2.300" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert netns.run("nft list set inet t s").stdout == before
    for args, word in ((["inet", "t", "nosuch", "1.2.3.4"], "no such set"),
                       (["inet", "nosuch", "s", "1.2.3.4"], "nosuch"),
                       (["inet", "t", "s"], "no elements"),
                       (["inet", "t", "m", "192.0.2.9"], "m")):
        r = netns.run(NFKIT + ["rules", "element", "add", *args], check=False)
        assert r.returncode == 2 and word in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert netns.run("nft list set inet t s").stdout == before


def test_splitting_keeps_quotes_braces_and_comments() -> None:
    assert split_elements('a, b # c, d\n"x, # y" , e { f, g }\n\n') == ["a", "b", '"x, # y"', "e { f, g }"]
    assert split_elements("") == []


V4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ATOM = st.one_of(V4, st.builds(lambda a, n: f"{a}/{n}", V4, st.integers(0, 32)),
                 st.integers(0, 65535).map(str), st.builds(lambda a, b: f"{a}-{b}", V4, V4),
                 st.sampled_from(["2001:db8::1", "::1", "2001:db8::/32", "2001:db8::1-2001:db8::9"]))


@given(st.lists(st.one_of(ATOM, st.builds(lambda a, b: f"{a} . {b}", V4, st.integers(0, 65535))),
                min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_the_direct_reading_is_nft_grammars_reading(texts: list[str]) -> None:
    fast = read_elements(texts, "inet", "t", "s", False)
    doc = to_json(f"add element inet t s {{ {', '.join(texts)} }}\n")
    assert fast == doc["nftables"][0]["add"]["element"]["elem"]


def _messages(batch: Any) -> list[bytes]:
    """The batch's messages, their sequence numbers left out (each batch has its own)."""
    buf = bytes(batch.buffer)
    starts = [start for _, start in batch.seqs] + [len(buf)]
    return [buf[a:a + 8] + buf[a + 12:b] for a, b in zip(starts, starts[1:], strict=False)]


KEYS = {"ipv4_addr": lambda i: f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
        "ipv6_addr": lambda i: f"2001:db8::{i:x}", "inet_service": lambda i: i % 65536,
        "mark": lambda i: i, "ifname": lambda i: f"veth{i}"}


@given(st.sampled_from(sorted(KEYS)), st.integers(1, 9000), st.booleans())
@settings(max_examples=30, deadline=None)
def test_keys_in_bulk_are_the_bytes_of_one_by_one(kind: str, n: int, delete: bool) -> None:
    """A blocklist's keys are encoded in bulk (one join per message): the same messages,
    split at the same elements, as each element encoded on its own."""
    from nfkit.netlink.codec import Batch
    from nfkit.nftables.compiler import set_key_types
    from nfkit.nftables.messages import Encoder
    from nfkit.nftables.model import Set

    s = Set("inet", "t", "s", type=kind)
    keys = [KEYS[kind](i) for i in range(n)]
    bulk = Batch()
    Encoder(bulk).set_elements(s, keys, delete=delete)
    one = Batch()
    enc = Encoder(one)
    (dt,) = set_key_types(s)
    encoded = [enc.compiler("inet", "t").encode_value(dt, dt.size, k) for k in keys]
    # extra (empty for every element) sends them the one-by-one way
    enc._elements("inet", "t", "s", None, [(k, None, 0, None) for k in encoded], str(s), delete,
                  extra=[b""] * n)
    assert _messages(bulk) == _messages(one)
    assert len(bulk.seqs) > 1 + n // 4000  # BATCH_BEGIN and one message per chunk at least


def test_the_click_less_start_takes_only_plain_element_commands() -> None:
    """`rules element add|delete` with elements and --from FILE start without click; any
    option, help or family click would refuse goes to click (its messages, its help)."""
    from nfkit.cli.element_change import quick_args

    assert quick_args(["rules", "element", "add", "inet", "t", "s", "192.0.2.1", "192.0.2.2"]) == (
        "add", "inet", "t", "s", ["192.0.2.1", "192.0.2.2"], None)
    assert quick_args(["rules", "element", "delete", "ip", "t", "s", "--from", "-", "192.0.2.1"]) == (
        "delete", "ip", "t", "s", ["192.0.2.1"], "-")
    assert quick_args(["rules", "element", "add", "inet", "t", "s"]) == ("add", "inet", "t", "s", [], None)
    for argv in (["rules", "element", "add", "inet", "t", "s", "--help"],
                 ["rules", "element", "add", "inet", "t", "s", "-h"],
                 ["rules", "element", "add", "inet", "t", "s", "--from"],
                 ["rules", "element", "add", "inet", "t", "s", "--from=x"],
                 ["rules", "element", "add", "inet", "t", "s", "--from", "a", "--from", "b"],
                 ["rules", "element", "add", "bogus", "t", "s", "192.0.2.1"],
                 ["rules", "element", "add", "inet", "--help", "t", "s"],
                 ["rules", "element", "list", "inet", "t", "s"],
                 ["rules", "element", "add", "inet", "t"],
                 ["rules", "add", "inet", "t", "s", "x"]):
        assert quick_args(argv) is None, argv


@given(st.sampled_from(["ipv4_addr", "ipv6_addr"]), st.integers(1, 9000), st.booleans(),
       st.sampled_from(["inet", "ip", "ip6", "bridge", "netdev", "arp"]))
@settings(max_examples=30, deadline=None)
def test_the_plain_path_sends_the_general_paths_batch(kind: str, n: int, delete: bool,
                                                      family: str) -> None:
    """Plain addresses into a set go by `plainelements` alone: the batch it sends is the
    general path's, byte for byte (sequence numbers aside), split at the same elements."""
    import socket

    from nfkit.netlink.codec import Batch
    from nfkit.nftables import plainelements, quicknl
    from nfkit.nftables.messages import Encoder
    from nfkit.nftables.model import Set

    from .conftest import unsequenced

    s = Set(family, "t", "blocklist", type=kind)
    texts = [KEYS[kind](i) for i in range(n)]
    general = Batch()
    Encoder(general).set_elements(s, texts, delete=delete)
    general.close()
    af, width = (socket.AF_INET, 4) if kind == "ipv4_addr" else (socket.AF_INET6, 16)
    keys = [socket.inet_pton(af, t) for t in texts]
    plain = quicknl.batch_bytes(plainelements.element_messages(
        "delete" if delete else "add", family, "t", "blocklist", width, keys), 1)
    assert unsequenced(plain) == unsequenced(general.buffer)


def test_simple_splitting_is_the_general_splitting() -> None:
    from nfkit.nftables.plainelements import simple_split

    text = "192.0.2.1, 192.0.2.2 # two\n# a comment, with a comma\n\n 2001:db8::1 ,\n"
    assert simple_split(text) == split_elements(text) == ["192.0.2.1", "192.0.2.2", "2001:db8::1"]
    assert simple_split('"eth0", x') is None and simple_split("e { f }") is None


_RUN = "import sys; from nfkit.cli.entry import run; run(sys.argv[1:])"

# what the general path imports and the plain path must not
_RULE_MACHINERY = {"nfkit.netlink", "nfkit.nftables.messages", "nfkit.nftables.commits",
                   "nfkit.nftables.listing", "re", "typing", "json", "socket", "signal"}


def _blocklist_lab(lab: Lab, more_sets: str = "") -> tuple[Namespace, Namespace, list[str], list[str]]:
    """Two namespaces with table inet t's plain sets s (ipv4) and six (ipv6, timeout), and
    ``more_sets``; 5,000 IPv4 and 300 IPv6 addresses for them."""
    ours, theirs = lab.add("ours"), lab.add("theirs")
    sets = ("table inet t { set s { type ipv4_addr; }; set six { type ipv6_addr; flags timeout; };"
            f"{more_sets} }}\n")
    for ns in (ours, theirs):
        ns.run(["nft", "-f", "-"], input=sets)
    v4 = [f"198.51.{i >> 8}.{i & 255}" for i in range(5000)]
    v6 = [f"2001:db8::{i:x}" for i in range(300)]
    return ours, theirs, v4, v6


def test_plain_addresses_go_without_the_rule_machinery(lab: Lab, tmp_path: Path) -> None:
    """A blocklist of addresses into a plain set: none of nfkit's rule machinery (nor re,
    typing, json) is imported, the kernel holds what nft's `add element` gives; every
    other case (an interval set, stdin, an element with an option, one the kernel refuses)
    is the general path's, with its messages."""
    ours, theirs, v4, v6 = _blocklist_lab(lab, " set p { type ipv4_addr; flags interval; };")
    f4, f6 = tmp_path / "v4.txt", tmp_path / "v6.txt"
    f4.write_text("# blocklist\n" + "\n".join(v4) + "\n")
    f6.write_text(", ".join(v6) + "\n")

    def nfkit(ns: Namespace, *args: str, stdin: str | None = None) -> tuple[set[str], str, int]:
        """(modules imported, what it said on stderr, exit status) of `nfkit rules element`."""
        r = ns.run([sys.executable, "-X", "importtime", "-c", _RUN, "rules", "element", *args],
                   check=False, input=stdin)
        lines = r.stderr.splitlines()
        imported = {x.rsplit("|", 1)[-1].strip() for x in lines if x.startswith("import time:")}
        return imported, "\n".join(x for x in lines if not x.startswith("import time:")), r.returncode

    for name, f, elems in (("s", f4, v4), ("six", f6, v6)):
        imported, said, code = nfkit(ours, "add", "inet", "t", name, "--from", str(f))
        assert code == 0 and said == f"added {len(elems)} element(s) to set inet t {name}"
        assert "nfkit.nftables.plainelements" in imported
        assert not imported & _RULE_MACHINERY, sorted(imported & _RULE_MACHINERY)
        theirs.run(["nft", "-f", "-"], input=f"add element inet t {name} {{ {', '.join(elems)} }}\n")
        assert _elements_of(ours, "set", name) == _elements_of(theirs, "set", name)
    imported, said, code = nfkit(ours, "delete", "inet", "t", "s", *v4[:3])
    assert code == 0 and said == "deleted 3 element(s) from set inet t s"
    assert not imported & _RULE_MACHINERY
    theirs.run(f"nft delete element inet t s {{ {', '.join(v4[:3])} }}")
    assert _elements_of(ours, "set", "s") == _elements_of(theirs, "set", "s")
    # the general path's cases
    general = [(["add", "inet", "t", "p", "192.0.2.0/24"], None),  # an interval set
               (["add", "inet", "t", "s", "--from", "-"], "192.0.2.7\n"),  # stdin
               (["add", "inet", "t", "six", "2001:db8::77 timeout 1h"], None)]  # an option
    for args, stdin in general:
        imported, said, code = nfkit(ours, *args, stdin=stdin)
        assert code == 0 and "nfkit.nftables.messages" in imported, (args, said)
    theirs.run(["nft", "-f", "-"], input="add element inet t p { 192.0.2.0/24 }\n"
               "add element inet t s { 192.0.2.7 }\nadd element inet t six { 2001:db8::77 timeout 1h }\n")
    for name in ("s", "six", "p"):
        assert _elements_of(ours, "set", name) == _elements_of(theirs, "set", name), name
    # an element the kernel refuses (not in the set): nothing deleted, the general
    # path's error, one line naming the set
    before = ours.run("nft list set inet t s").stdout
    imported, said, code = nfkit(ours, "delete", "inet", "t", "s", v4[10], "203.0.113.99")
    assert code == 2 and "nfkit.nftables.messages" in imported
    assert said.startswith("nfkit: ") and "inet t s" in said and len(said.splitlines()) == 1, said
    assert ours.run("nft list set inet t s").stdout == before


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                     lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
                     max_leaves=20)


@given(_JSON, st.sampled_from(["", " ", "\n\t ", "\r\n"]), st.sampled_from(["", " \n"]))
@settings(max_examples=300, deadline=None)
def test_the_blocklist_json_reader_is_json_loads(doc: Any, before: str, after: str) -> None:
    """`plainelements.json_document` (json's C scanner, without the json package's ~7 ms
    import) reads what json.loads reads, and refuses what it refuses."""
    text = before + json.dumps(doc) + after
    assert json.dumps(json_document(text)) == json.dumps(json.loads(text))
    for bad in (text + " x", text[:-1] if text.strip() else "x", "\u00a0" + text,
                text + "\u2028", '{"a": "\\q"}', "", "[1,]", '{"a" 1}'):
        try:
            want = json.loads(bad)
        except ValueError:
            with pytest.raises(ValueError):
                json_document(bad)
        else:
            assert json.dumps(json_document(bad)) == json.dumps(want)


def test_a_plain_change_ends_without_the_interpreters_teardown(netns: Namespace,
                                                               tmp_path: Path) -> None:
    """The plain path (an element command, a JSON blocklist) ends by os._exit once its
    transaction is acknowledged and its line written: the interpreter's teardown (freeing
    the thousands of addresses it read, module by module) was ~2 ms of a 5,000-element
    command of ~18 ms.  Nor is the struct module imported (its C half is)."""
    netns.run(["nft", "-f", "-"], input="table inet t { set s { type ipv4_addr; }; }\n")
    f = tmp_path / "e.json"
    f.write_text(json.dumps({"nftables": [{"add": {"element": {
        "family": "inet", "table": "t", "name": "s", "elem": ["192.0.2.9"]}}}]}))
    # an atexit handler runs in the teardown, not after os._exit
    run = "import atexit, sys; atexit.register(print, 'teardown', file=sys.stderr); " + _RUN
    for args, said in ((["rules", "element", "add", "inet", "t", "s", "192.0.2.1", "192.0.2.2"],
                        ["added 2 element(s) to set inet t s"]),
                       (["rules", "load", str(f)], []),
                       (["rules", "element", "delete", "inet", "t", "s", "192.0.2.1"],
                        ["deleted 1 element(s) from set inet t s"])):
        r = netns.run([sys.executable, "-X", "importtime", "-c", run, *args], check=False)
        lines = r.stderr.splitlines()
        imported = {x.rsplit("|", 1)[-1].strip() for x in lines if x.startswith("import time:")}
        assert r.returncode == 0 and [x for x in lines if not x.startswith("import time:")] == said
        assert "nfkit.nftables.plainelements" in imported and "struct" not in imported
    listed = netns.run("nft list set inet t s").stdout
    assert "192.0.2.2" in listed and "192.0.2.9" in listed and "192.0.2.1," not in listed
    assert "192.0.2.1 " not in listed
    # the general path's refusal still ends through the interpreter's exit, with its line
    r = netns.run([sys.executable, "-c", run, "rules", "element", "add", "inet", "t", "s",
                   "192.0.2.300"], check=False)
    assert r.returncode == 2 and r.stderr.splitlines()[-1] == "teardown"


_COMMANDS = st.lists(st.tuples(st.sampled_from(["add", "delete"]),
                               st.sampled_from(["ipv4_addr", "ipv6_addr"]),
                               st.integers(1, 5000)), min_size=1, max_size=3)


@given(_COMMANDS, st.sampled_from(["inet", "ip", "ip6", "bridge", "netdev", "arp"]),
       st.booleans())
@settings(max_examples=25, deadline=None)
def test_a_json_file_of_plain_elements_sends_the_general_paths_batch(
        commands: list[tuple[str, str, int]], family: str, metainfo: bool) -> None:
    """`nfkit rules load FILE.json` of element commands with plain addresses goes by
    `plainelements` alone: its commands read from the JSON as the general path reads
    them, its batch the general path's, byte for byte (sequence numbers aside)."""
    import socket

    from nfkit.netlink.codec import Batch
    from nfkit.nftables import plainelements, quicknl
    from nfkit.nftables.commits import encode_commands
    from nfkit.nftables.jsonfmt import load_json
    from nfkit.nftables.messages import Encoder
    from nfkit.nftables.model import Set

    from .conftest import unsequenced

    sets = {kind: Set(family, "t", f"s_{kind}", type=kind) for kind in KEYS}
    doc = [{"metainfo": {"json_schema_version": 1}}] if metainfo else []
    doc += [{verb: {"element": {"family": family, "table": "t", "name": f"s_{kind}",
                                "elem": [KEYS[kind](i) for i in range(n)]}}}
            for verb, kind, n in commands]
    text = json.dumps({"nftables": doc})
    general = Batch()
    encode_commands(load_json(text), Encoder(general, {s.key: s for s in sets.values()}))
    general.close()
    wanted = plainelements.json_element_commands(text.encode())
    assert wanted is not None
    messages = []
    for (verb, fam, table, name, elems), (_v, kind, _n) in zip(wanted, commands, strict=True):
        af, width = (socket.AF_INET, 4) if kind == "ipv4_addr" else (socket.AF_INET6, 16)
        keys = [socket.inet_pton(af, t) for t in elems]
        messages += plainelements.element_messages(verb, fam, table, name, width, keys)
    assert unsequenced(quicknl.batch_bytes(messages, 1)) == unsequenced(general.buffer)


def test_json_files_the_plain_path_leaves_to_the_general_path() -> None:
    from nfkit.nftables.plainelements import json_element_commands

    def doc(*cmds: Any) -> bytes:
        return json.dumps({"nftables": list(cmds)}).encode()

    el = {"family": "inet", "table": "t", "name": "s", "elem": ["192.0.2.1"]}
    assert json_element_commands(doc({"add": {"element": el}})) == [
        ("add", "inet", "t", "s", ["192.0.2.1"])]
    for other in ({"add": {"element": {**el, "elem": [{"elem": {"val": "192.0.2.1",
                                                                "timeout": 3600}}]}}},
                  {"add": {"element": {**el, "elem": [{"prefix": {"addr": "192.0.2.0",
                                                                  "len": 24}}]}}},
                  {"add": {"element": {**el, "elem": [22]}}},
                  {"create": {"element": el}},
                  {"add": {"element": el, "rule": {}}},
                  {"add": {"table": {"family": "inet", "name": "t"}}},
                  {"add": {"element": {**el, "elem": []}}}):
        assert json_element_commands(doc({"add": {"element": el}}, other)) is None, other
    assert json_element_commands(b"table inet t { }") is None
    assert json_element_commands(b'{"nftables": [{"add": {"element": ') is None


def _bytes_read() -> int:
    """Bytes this process has had from read() calls (/proc's rchar)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_a_rules_file_is_not_read_by_the_element_check(tmp_path: Path) -> None:
    """The blocklist check of `nfkit rules load FILE` leaves a file of rules to the
    general path having read its start alone (it read all of it, then the general path
    read it again)."""
    from nfkit.nftables import plainelements

    rule = {"add": {"rule": {"family": "inet", "table": "t", "chain": "c", "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                   "right": 22}}, {"accept": None}]}}}
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"nftables": [rule] * 20000}))  # ~3 MB
    before = _bytes_read()
    assert plainelements.load_json(str(path)) is None
    assert _bytes_read() - before < plainelements.ELEMENT_WITHIN + (4 << 10)
    # element commands only after that much: the general path's too (before any kernel)
    el = {"family": "inet", "table": "t", "name": "s", "elem": ["192.0.2.1"]}
    path.write_text(json.dumps({"nftables": [
        {"metainfo": {"comment": "x" * plainelements.ELEMENT_WITHIN}}, {"add": {"element": el}}]}))
    assert plainelements.load_json(str(path)) is None


def test_a_json_blocklist_loads_without_the_rule_machinery(lab: Lab, tmp_path: Path) -> None:
    """`nfkit rules load` of nft's JSON element commands: plain addresses into plain
    sets by `plainelements` alone (no rule machinery imported), the kernel holding what
    `nft -j -f` of the same file gives; the same file with one element nft's JSON writes
    as an object goes the general path, to the same end."""
    ours, theirs, v4, v6 = _blocklist_lab(lab)
    plain = {"nftables": [
        {"metainfo": {"json_schema_version": 1}},
        {"add": {"element": {"family": "inet", "table": "t", "name": "s", "elem": v4}}},
        {"add": {"element": {"family": "inet", "table": "t", "name": "six", "elem": v6}}},
        {"delete": {"element": {"family": "inet", "table": "t", "name": "s", "elem": v4[:3]}}}]}
    with_timeout = {"nftables": [{"add": {"element": {
        "family": "inet", "table": "t", "name": "six",
        "elem": ["2001:db8:1::1", {"elem": {"val": "2001:db8:1::2", "timeout": 3600}}]}}}]}
    for doc, machinery in ((plain, False), (with_timeout, True)):
        f = tmp_path / "elements.json"
        f.write_text(json.dumps(doc))
        r = ours.run([sys.executable, "-X", "importtime", "-c", _RUN, "rules", "load", str(f)],
                     check=False)
        imported = {x.rsplit("|", 1)[-1].strip() for x in r.stderr.splitlines()
                    if x.startswith("import time:")}
        assert r.returncode == 0, r.stderr[-500:]
        assert ("nfkit.nftables.messages" in imported) == machinery
        if not machinery:
            assert "nfkit.nftables.plainelements" in imported
            # (not even json: its C scanner alone reads the file)
            assert not imported & _RULE_MACHINERY, sorted(imported)
        theirs.run(["nft", "-j", "-f", str(f)])
        for name in ("s", "six"):
            assert _elements_of(ours, "set", name) == _elements_of(theirs, "set", name), name
