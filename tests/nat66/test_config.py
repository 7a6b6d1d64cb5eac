"""nat66's file: every documented key accepted, every bad value named by file, line and key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from nfkit.nat66 import config
from nfkit.service.config import ConfigError

EXAMPLE = config.__doc__.split("\n\n", 1)[1]  # the module's documented example file


def test_documented_example_reads(tmp_path: Path) -> None:
    text = "\n".join(line[4:] for line in EXAMPLE.splitlines())
    f = tmp_path / "nat66.toml"
    f.write_text(text)
    cfg = config.read(f)
    assert cfg["npt"][0]["outside"] == ipaddress.IPv6Network("2001:db8:1::/48")
    assert cfg["dnat"][0]["servers"][1] == ipaddress.IPv6Address("fd01:203:405:1::11")
    assert cfg["uplink"][0]["weight"] == 1 and cfg["daemon"]["remove_on_exit"] is False


NPT = '[[npt]]\ninside = "fd01:203:405::/48"\noutside = "2001:db8:1::/48"\ninterface = "wan0"\n'


@pytest.mark.parametrize("text, message", [
    (NPT.replace("fd01:203:405::/48", "fd01:203:405::1/48"), ":2: npt[0].inside: 'fd01:203:405::1/48' is not an IPv6 prefix without host bits"),
    (NPT.replace("2001:db8:1::/48", "2001:db8:1::/80"), ":3: npt[0].outside: 2001:db8:1::/80: NPTv6 prefixes are at most /64"),
    (NPT + NPT.replace("2001:db8:1::/48", "2001:db8:2::/48").replace("fd01:203:405::/48", "fd01:203:405:8000::/49"),
     ":6: npt[1].inside: fd01:203:405:8000::/49 overlaps npt[0].inside fd01:203:405::/48"),
    (NPT.replace('"wan0"', '"a-very-long-ifname0"'), ":4: npt[0].interface: 'a-very-long-ifname0' is not an interface name"),
    (NPT.replace("interface", "interfaces"), ":4: npt[0].interfaces: unknown key"),
    ('[[snat]]\ninside = "fd00::/64"\ninterface = "w"\nto = "2001:db8::9-2001:db8::1"\n',
     ":4: snat[0].to: range 2001:db8::9-2001:db8::1: the first address is above the last"),
    ('[[snat]]\ninside = "fd00::/64"\ninterface = "w"\nflags = ["randm"]\n', ":4: snat[0].flags: unknown flag 'randm'"),
    ('[[dnat]]\naddress = "2001:db8::80"\nport = 80\nservers = []\n', ":4: dnat[0].servers: a pool needs at least one server"),
    ('[[uplink]]\ninterface = "a"\nmark = 1\ntable = 100\n[[uplink]]\ninterface = "b"\nmark = 1\ntable = 101\n'
     '[multihoming]\ninside = "fd00::/48"\n', ":7: uplink[1].mark: 1 is also uplink[0]'s"),
    ('[[uplink]]\ninterface = "a"\nmark = 1\ntable = 100\n', ":1: multihoming.inside: required with [[uplink]]"),
    ('[[uplink]]\ninterface = "a"\nmark = 1\ntable = 100\noutside = "2001:db8::/48"\n'
     '[[uplink]]\ninterface = "b"\nmark = 2\ntable = 101\noutside = "2001:db8::/56"\n',
     ":10: uplink[1].outside: 2001:db8::/56 overlaps uplink[0].outside 2001:db8::/48"),
    ('[multihoming]\ninside = "fd00::/48"\n[[uplink]]\ninterface = "a"\nmark = 1\ntable = 100\noutside = "adress"\n',
     ":7: uplink[0].outside: 'adress' is not an IPv6 prefix"),
])
def test_bad_values_are_named(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "nat66.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        config.read(f)
    assert str(exc.value).startswith(f"{f}{message}"), str(exc.value)
