"""Anonymous sets named by nfkit as the kernel names them (nfkit.nftables.anonnames): the
kernel state after an nfkit load, set names and handles included, is nft's; a name taken
after all falls back to the kernel's own choice."""

from __future__ import annotations

import re
import struct
from pathlib import Path

from nfkit.netlink.codec import Batch
from nfkit.nftables import anonnames
from nfkit.nftables.commits import encode_commands
from nfkit.nftables.messages import Encoder
from nfkit.nftables.nfttext import load_nft

from .conftest import NFKIT, sorted_elements

# more anonymous sets than anonnames.MIN_SETS, in two tables, three ways to refer to one
# (lookup, verdict map, nat map)
N = anonnames.MIN_SETS + 8


def _rules(k: int, base: int) -> str:
    shapes = [lambda i: f"tcp dport {{ {i + 1}, {i + 2} }} accept",
              lambda i: f"ip saddr {{ 192.0.2.{i % 250}, 198.51.100.{i % 250} }} drop",
              lambda i: f"tcp dport vmap {{ {i + 1} : accept, {i + 2} : drop }}",
              lambda i: f"meta mark {i} counter"]
    return "".join(f"\t\t{shapes[i % len(shapes)](base + i)}\n" for i in range(k))


def _ruleset(k: int = N, base: int = 0) -> str:
    return ("table inet t {\n\tset blocked {\n\t\ttype ipv4_addr\n\t}\n"
            "\tchain c {\n\t\ttype filter hook input priority filter; policy accept;\n"
            f"{_rules(k, base)}\t}}\n}}\n"
            "table ip nat {\n\tchain p {\n\t\ttype nat hook prerouting priority dstnat;\n"
            + "".join(f"\t\tip daddr 203.0.113.{i} dnat to tcp dport map "
                      f"{{ {i + 1} : 192.0.2.{i}, {i + 2} : 192.0.2.{i + 1} }}\n"
                      for i in range(N))
            + "\t}\n}\n")


def _kernel_view(ns) -> str:  # type: ignore[no-untyped-def]
    """Every set (anonymous ones by name, with elements) and every rule's expressions
    (lookups by set name), with handles, as nft's netlink debug listing prints them; a
    set's elements sorted (a hash set lists them in its random seed's order)."""
    return sorted_elements(ns.run("nft --debug=netlink list ruleset").stdout)


def _batch(text: str) -> Batch:
    b = Batch()
    encode_commands(load_nft(text, "t.nft"), Encoder(b))
    return b


# anonymous sets per table: inet t (three shapes of four have one, one of them a map),
# ip nat (a map in every rule)
IN_T, IN_NAT = sum(1 for i in range(N) if i % 4 != 3), N
SETS_T = sum(1 for i in range(N) if i % 4 in (0, 1))


def test_rewritten_batch_names_every_anonymous_set_and_nothing_else() -> None:
    b = _batch(_ruleset())
    out = anonnames.named(b, lambda t: set())
    assert out is not None
    nb, renamed = out
    assert len(renamed) == IN_T + IN_NAT and len(nb.seqs) == len(b.seqs)
    for seq, off in nb.seqs:  # every message where the batch says it is
        assert struct.unpack_from("=I", nb.buffer, off + 8)[0] == seq
    ends = [o for _, o in b.seqs[1:]] + [len(b.buffer)]
    new_ends = [o for _, o in nb.seqs[1:]] + [len(nb.buffer)]
    for i, ((_, o), e, (_, no), ne) in enumerate(zip(b.seqs, ends, nb.seqs, new_ends,
                                                      strict=True)):
        old, new = bytes(b.buffer[o:e]), bytes(nb.buffer[no:ne])
        if i - 1 in renamed:  # a NEWSET: named, with NLM_F_EXCL, nothing else changed
            kind, flags = struct.unpack_from("=HH", new, 4)
            assert kind & 0xFF == 9 and flags == struct.unpack_from("=H", old, 6)[0] | 0x200
            assert not any(p in new for p in anonnames.PLACEHOLDERS)
            at = re.search(rb"__(set|map)\d+\0", new).start() - 4  # type: ignore[union-attr]
            assert at == re.search(rb"__(set|map)%d\0", old).start() - 4  # type: ignore[union-attr]
            padded = (struct.unpack_from("=H", new, at)[0] + 3) & ~3
            assert (new[8:at], new[at + padded:]) == (old[8:at], old[at + 12:])
        else:  # elements and lookups find the set by its id, as in nft's batch
            assert old == new
    # sets and maps numbered apart, per table, as nft's names are
    assert b"__set0\0" in nb.buffer and b"__set%d\0" % (SETS_T - 1) in nb.buffer
    assert b"__set%d\0" % SETS_T not in nb.buffer
    assert b"__map%d\0" % (IN_NAT - 1) in nb.buffer and b"__map%d\0" % IN_NAT not in nb.buffer
    nb.close()
    assert anonnames.named(nb, lambda t: set()) is None  # nothing left to rename


def test_few_anonymous_sets_are_left_to_the_kernel() -> None:
    assert anonnames.named(_batch(_ruleset(k=anonnames.MIN_SETS - 1).split("table ip nat")[0]),
                           lambda t: set()) is None


def test_numbers_the_kernel_counts_as_taken() -> None:
    assert anonnames.taken_numbers([b"__set0", b"__set 7", b"__set12x", b"blocked", b"__set-1",
                                    b"__se3", b"__map4"]) == {
        (b"__set", 0), (b"__set", 7), (b"__set", 12), (b"__set", -1), (b"__map", 4)}


def test_existing_sets_and_deletions_decide_which_tables_are_named() -> None:
    text = _ruleset()
    # a table holding __set0 and __set2: the batch's sets take 1, 3, 4, ...
    only_t = text.split("table ip nat")[0]
    out = anonnames.named(_batch(only_t), lambda t: {b"__set0", b"__set2"})
    assert out is not None
    assert b"__set1\0" in out[0].buffer and b"__set2\0" not in out[0].buffer
    # rules deleted in the same batch may free a number: that table is left to the kernel
    flush = "flush chain inet t c\n" + text
    out = anonnames.named(_batch(flush), lambda t: {b"__set0"} if t[1] == b"t" else set())
    assert out is not None and len(out[1]) == IN_NAT  # only ip nat's sets renamed
    # the ruleset flushed first: every table is new, whatever the kernel held
    out = anonnames.named(_batch("flush ruleset\n" + text), lambda t: {b"__set0", b"__set1"})
    assert out is not None and len(out[1]) == IN_T + IN_NAT and b"__set1\0" in out[0].buffer


def test_load_names_sets_as_nft_does(netns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "r.nft"
    f.write_text(_ruleset())
    netns.run(["nft", "-f", str(f)])
    theirs = _kernel_view(netns)
    netns.run("nft flush ruleset")
    netns.run([*NFKIT, "rules", "load", str(f)])
    assert f"set __map{IN_NAT - 1} " in theirs and f"set __map{IN_NAT} " not in theirs
    assert _kernel_view(netns) == theirs


def test_load_on_a_table_with_anonymous_sets_and_a_freed_number(netns, tmp_path: Path  # type: ignore[no-untyped-def]
                                                                 ) -> None:
    first = tmp_path / "first.nft"
    first.write_text("table inet t {\n\tchain c {\n\t\ttype filter hook input priority 0;\n"
                     "\t\ttcp dport { 1, 2 } accept\n\t\ttcp dport { 3, 4 } accept comment \"gone\"\n"
                     "\t\ttcp dport { 5, 6 } accept\n\t}\n}\n")
    more = tmp_path / "more.nft"
    more.write_text(_ruleset(base=100).replace("\tset blocked {\n\t\ttype ipv4_addr\n\t}\n", ""))
    views = []
    for load in (["nft", "-f"], [*NFKIT, "rules", "load"]):
        netns.run("nft flush ruleset")
        netns.run(["nft", "-f", str(first)])
        handle = next(ln.split("# handle ")[1] for ln in netns.run(
            "nft -a list chain inet t c").stdout.splitlines() if "gone" in ln)
        netns.run(f"nft delete rule inet t c handle {handle}")  # __set1 is free again
        netns.run([*load, str(more)])
        views.append(_kernel_view(netns))
    assert views[0] == views[1]


def test_a_name_taken_after_all_falls_back_to_the_kernels_choice(netns, tmp_path: Path  # type: ignore[no-untyped-def]
                                                                  ) -> None:
    # a set the file names itself "__set3" (created before the anonymous ones): nfkit's
    # __set3 is refused (EEXIST, thanks to NLM_F_EXCL), the batch goes as encoded
    text = _ruleset().replace("set blocked {", "set __set3 {")
    f = tmp_path / "r.nft"
    f.write_text(text)
    netns.run(["nft", "-f", str(f)])
    theirs = _kernel_view(netns)
    netns.run("nft flush ruleset")
    netns.run([*NFKIT, "rules", "load", str(f)])
    assert _kernel_view(netns) == theirs
