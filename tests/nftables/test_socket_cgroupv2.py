"""`socket cgroupv2 level N "PATH"` against nft, in a namespace whose own mount namespace
has cgroup2 mounted at /sys/fs/cgroup (this host's /sys/fs/cgroup is cgroup v1: nft refuses
the path there).  The host's mounts are never touched: `ip netns exec` gives each command
a mount namespace of its own (slave of the host's), so every step runs in one script."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from nfkit.nftables.cgroupv2 import cgroup_id
from nfkit.nftables.types import T

from .conftest import NFKIT, sorted_elements, strip

CG = f"nfkit-test-cg-{os.getpid()}"  # a cgroup of this run's own (the hierarchy is global)

RULES = f"""table inet t {{
\tchain c {{
\t\ttype filter hook output priority filter; policy accept;
\t\tsocket cgroupv2 level 1 "{CG}" counter packets 0 bytes 0 accept
\t\tsocket cgroupv2 level 2 "{CG}/a" drop
\t\tsocket cgroupv2 level 1 != "{CG}" drop
\t\tsocket cgroupv2 level 1 {{ "{CG}", "{CG}/a" }} drop
\t}}
}}
"""


def _in_cgroup2(ns, tmp_path: Path, steps: str) -> str:  # type: ignore[no-untyped-def]
    """``steps`` (shell) run in ``ns`` with cgroup2 at /sys/fs/cgroup and cgroups CG and
    CG/a made (removed after); its output."""
    script = tmp_path / "steps.sh"
    script.write_text(
        "set -e\nmount -t cgroup2 none /sys/fs/cgroup\n"
        f"mkdir /sys/fs/cgroup/{CG} /sys/fs/cgroup/{CG}/a\n"
        f"trap 'rmdir /sys/fs/cgroup/{CG}/a /sys/fs/cgroup/{CG} 2>/dev/null || true' EXIT\n"
        f"cd {tmp_path}\n" + steps)
    return ns.run(["sh", str(script)]).stdout


def test_socket_cgroupv2_loads_and_lists_as_nft(netns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "r.nft").write_text(RULES)
    nfkit = " ".join(NFKIT)
    out = _in_cgroup2(netns, tmp_path, f"""
nft -f r.nft
nft list ruleset > nft.txt; nft -j list ruleset > nft.json; nft --debug=netlink list ruleset > nft.dbg
{nfkit} rules list > ours-list.txt
{nfkit} rules list --json > ours-list.json
nft flush ruleset
{nfkit} rules load r.nft
nft list ruleset > text.txt; nft -j list ruleset > text.json; nft --debug=netlink list ruleset > text.dbg
nft flush ruleset
{nfkit} rules load ours-list.json
nft list ruleset > json.txt; nft --debug=netlink list ruleset > json.dbg
# nft 1.0.6's own JSON listing leaves the level out: refused, never loaded without it
nft flush ruleset
{nfkit} rules load nft.json 2> refused.txt && echo LOADED || echo REFUSED $?
stat -c %i /sys/fs/cgroup/{CG}
""")
    d = tmp_path
    nft_text = (d / "nft.txt").read_text()
    assert f'socket cgroupv2 level 2 "{CG}/a" drop' in nft_text
    # loaded from nft's text and from nfkit's JSON: nft's kernel state
    for form in ("text", "json"):
        assert (d / f"{form}.txt").read_text() == nft_text
        assert sorted_elements((d / f"{form}.dbg").read_text()) == \
            sorted_elements((d / "nft.dbg").read_text())
    assert strip(json.loads((d / "text.json").read_text())) == \
        strip(json.loads((d / "nft.json").read_text()))  # the table's handle aside
    # listed as nft lists it; the JSON listing keeps the level (nft 1.0.6's drops it)
    assert (d / "ours-list.txt").read_text() == nft_text
    ours = json.loads((d / "ours-list.json").read_text())["nftables"]
    lefts = [e["match"]["left"] for o in ours if "rule" in o for e in o["rule"]["expr"]
             if "match" in e]
    assert lefts == [{"socket": {"key": "cgroupv2", "level": n}} for n in (1, 2, 1, 1)]
    assert "REFUSED 2" in out
    assert (d / "refused.txt").read_text().count("\n") == 1
    assert "socket cgroupv2 needs a level" in (d / "refused.txt").read_text()
    # the value is the cgroup's id: its directory's inode number, 8 bytes in host order
    ino = int(out.split()[-1])
    assert re.search(rf"cmp eq reg 1 0x{ino & 0xFFFFFFFF:08x} 0x{ino >> 32:08x}",
                     (d / "nft.dbg").read_text())


def test_a_path_that_is_not_there_is_refused_as_nft_refuses_it(netns, tmp_path: Path  # type: ignore[no-untyped-def]
                                                                ) -> None:
    (tmp_path / "bad.nft").write_text(
        "table inet t {\n\tchain c {\n"
        f'\t\tsocket cgroupv2 level 1 "{CG}/missing" drop\n\t}}\n}}\n')
    nfkit = " ".join(NFKIT)
    out = _in_cgroup2(netns, tmp_path, f"""
nft -f bad.nft 2> nft.err && echo NFT-LOADED || echo NFT-REFUSED
{nfkit} rules load bad.nft 2> ours.err && echo LOADED || echo REFUSED $?
nft list ruleset | wc -l
""")
    assert "NFT-REFUSED" in out and "REFUSED 2" in out
    assert out.split()[-1] == "0"  # nothing committed
    err = (tmp_path / "ours.err").read_text()
    assert err.count("\n") == 1 and "bad.nft:3" in err and "cgroupv2 path fails" in err
    assert "cgroupv2 path fails: No such file or directory" in (tmp_path / "nft.err").read_text()


def test_the_path_is_the_directory_under_sys_fs_cgroup(tmp_path: Path) -> None:
    # whatever the file system (nft 1.0.6 does not check it): stat of the path
    assert cgroup_id("") == os.stat("/sys/fs/cgroup").st_ino
    raw = T["cgroupv2"].encode("")
    assert raw == os.stat("/sys/fs/cgroup").st_ino.to_bytes(8, "little")
    with pytest.raises(Exception, match="cgroupv2 path fails"):
        T["cgroupv2"].encode("no/such/cgroup/here")
