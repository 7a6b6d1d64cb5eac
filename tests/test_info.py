"""`nfkit info` against the kernel, with nft and conntrack as oracles."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from nfkit.kernel import UAPI_NUMBERS
from nfkit.netlink import uapi

NFKIT = [sys.executable, "-m", "nfkit"]


def info_json(ns) -> dict:
    return json.loads(ns.run([*NFKIT, "info", "--json"]).stdout)


@pytest.mark.parametrize("header", sorted(UAPI_NUMBERS))
def test_probe_numbers_match_headers(header):
    constants = uapi.all_constants(header)
    for name, value in UAPI_NUMBERS[header].items():
        assert constants[name] == value, name


def test_info_matches_nft_and_conntrack(netns):
    found = info_json(netns)
    assert found["nf_tables"] and found["conntrack"]
    # the count is this namespace's own: empty, then what conntrack -I adds
    assert found["conntrack_count"] == 0
    for port in (1, 2, 3):
        netns.run(f"conntrack -I -p udp -s 192.0.2.1 -d 192.0.2.2 --sport {port} --dport 53 -t 60")
    found = info_json(netns)
    assert found["conntrack_count"] == int(netns.run("conntrack -C").stdout) == 3
    with open("/proc/sys/net/netfilter/nf_conntrack_buckets") as f:
        assert found["conntrack_buckets"] == int(f.read())
    # the probe committed nothing
    assert netns.run("nft list ruleset").stdout.strip() == ""
    # nft is the oracle for the queue expression and IPv6 NAT
    netns.run("nft add table inet t")
    netns.run("nft add chain inet t c")
    queue_ok = netns.run("nft add rule inet t c queue num 3", check=False).returncode == 0
    assert found["queue_expression"] == queue_ok
    nat6_ok = netns.run(["nft", "add table ip6 n; add chain ip6 n p "
                         "{ type nat hook postrouting priority 100; }"], check=False).returncode == 0
    assert found["ipv6_nat"] == nat6_ok
    counter_ok = netns.run("nft add rule inet t c counter", check=False).returncode == 0
    assert found["expressions"]["counter"] == counter_ok


def test_info_text_output_runs_in_the_namespace(netns):
    out = netns.run([*NFKIT, "info"]).stdout
    assert "conntrack entries" in out and "0 of max" in out
    host = os.readlink("/proc/self/ns/net")
    assert host not in out  # it reports the namespace it ran in


def test_version_and_help():
    out = subprocess.run([*NFKIT, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("nfkit, version ")
    out = subprocess.run([*NFKIT, "--help"], capture_output=True, text=True, check=True).stdout
    assert "info" in out


def test_info_as_nobody_says_unknown_not_no(netns, nobody_nfkit):
    netns.run("conntrack -I -p udp -s 192.0.2.1 -d 192.0.2.2 --sport 1 --dport 53 -t 60")
    res = netns.run([*nobody_nfkit, "info", "--json"], check=False)
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout)
    for name in ("nf_tables", "expressions", "queue_expression", "xt_nfqueue_target", "ipv4_nat",
                 "ipv6_nat", "conntrack", "conntrack_events", "nfqueue"):
        assert found[name] is None, name
        assert "permission denied" in found["unknown"][name], name
    # what /proc tells anyone is reported, and it is this namespace's truth
    assert found["conntrack_count"] == 1
    with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
        assert found["conntrack_max"] == int(f.read())
    text = netns.run([*nobody_nfkit, "info"], check=False)
    assert text.returncode == 0, text.stderr
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in text.stdout.splitlines()
                if not line.startswith("note:"))
    assert rows["nf_tables"] == "unknown (permission denied)"
    assert rows["IPv4 NAT"] == "unknown (permission denied)"
    assert rows["conntrack entries"].startswith("1 of max ")
    assert "None" not in text.stdout and " no\n" not in text.stdout
    # as root, the same namespace says yes
    root = info_json(netns)
    assert root["nf_tables"] is True and root["unknown"] == {}


def test_a_bad_option_is_one_line_naming_it_and_where_help_is():
    for args in (["ct", "watch", "--timeout", "nan"], ["rules", "list", "-f", "ipx"], ["nosuch"]):
        out = subprocess.run([*NFKIT, *args], capture_output=True, text=True)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert out.stderr.startswith("nfkit: ") and "--help)" in out.stderr
    out = subprocess.run([*NFKIT, "ct", "watch", "--timeout", "nan"], capture_output=True, text=True)
    assert "'--timeout'" in out.stderr and "nfkit ct watch --help" in out.stderr


def test_a_group_called_alone_shows_its_help():
    for args in ([], ["rules"]):
        out = subprocess.run([*NFKIT, *args], capture_output=True, text=True)
        assert out.returncode == 2 and out.stderr.startswith("Usage: "), out.stderr
        assert "Commands:" in out.stderr
