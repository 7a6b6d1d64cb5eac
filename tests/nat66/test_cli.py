"""`nfkit nat66 map`: the RFC 6296 mapping from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

NAT66 = [sys.executable, "-m", "nfkit", "nat66"]
RFC = ["--inside", "fd01:203:405::/48", "--outside", "2001:db8:1::/48"]


def nat66(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NAT66, *args], capture_output=True, text=True, timeout=60)


def test_map_both_ways() -> None:
    out = nat66("map", *RFC, "fd01:203:405:1::1234")
    assert out.returncode == 0 and out.stdout == "fd01:203:405:1::1234 -> 2001:db8:1:d550::1234\n"
    out = nat66("map", *RFC, "--reverse", "--json", "2001:db8:1:d550::1234")
    assert json.loads(out.stdout) == {"address": "2001:db8:1:d550::1234",
                                      "image": "fd01:203:405:1::1234", "dropped": None}


def test_dropped_addresses_say_why_and_exit_1() -> None:
    out = nat66("map", *RFC, "fd01:203:405:1::1", "fd01:203:405:ffff::1")
    assert out.returncode == 1
    assert out.stdout.splitlines()[1] == ("fd01:203:405:ffff::1 dropped: subnet ID 0xffff cannot be "
                                          "mapped with a prefix of /48 or shorter")


def test_bad_input_is_one_line_and_exit_2() -> None:
    for args in (["map", *RFC, "not-an-address"], ["map", *RFC, "fd02::1"],
                 ["map", "--inside", "fd01::1/48", "--outside", "2001:db8::/48", "fd01::1"],
                 ["map", "--inside", "fd01::/80", "--outside", "2001:db8::/80", "fd01::1"]):
        out = nat66(*args)
        assert out.returncode == 2, args
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
