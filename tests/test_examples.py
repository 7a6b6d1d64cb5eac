"""The examples in examples/ run, each in a namespace of its own, and say what they should."""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_netlink_basics(netns):
    out = netns.run([sys.executable, str(EXAMPLES / "netlink_basics.py")]).stdout
    assert "created 10 entries, 0 failed" in out
    assert out.count("udp 192.0.2.10 400") == 10
    assert "refused: udp 192.0.2.10:40000 -> 198.51.100.53:53: File exists (EEXIST)" in out
    assert ("transaction refused, nothing committed: chain inet no-such-table input: table: "
            "No such file or directory (ENOENT)") in out
    assert netns.run("nft list ruleset").stdout.strip() == ""
