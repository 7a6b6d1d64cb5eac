"""service.config: typed TOML with errors naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from nfkit.service.config import ConfigError, Key, Schema, Section, load, locate, parse


def _port(v: int) -> int:
    if not 0 < v < 65536:
        raise ValueError(f"{v} is not a port (1-65535)")
    return v


SCHEMA = Schema((
    Section("daemon", (Key("status", str, "status socket", "/run/nfkit/x.sock"),
                       Key("metrics", str, "metrics address", ""),
                       Key("port", int, "a port", 9000, _port))),
    Section("npt", (Key("inside", str, "inside prefix"), Key("outside", str, "outside prefix"),
                    Key("interface", str, "outside interface", "")), many=True),
))

GOOD = """\
# a comment
[daemon]
metrics = "127.0.0.1:9101"

[[npt]]
inside = "fd01::/48"
outside = "2001:db8:1::/48"

[[npt]]
inside = "fd02::/48"
  outside = "2001:db8:2::/48"
"""


def test_values_and_defaults() -> None:
    cfg = parse(GOOD, SCHEMA)
    assert cfg["daemon"] == {"status": "/run/nfkit/x.sock", "metrics": "127.0.0.1:9101", "port": 9000}
    assert [e["outside"] for e in cfg["npt"]] == ["2001:db8:1::/48", "2001:db8:2::/48"]
    assert cfg["npt"][1]["interface"] == ""


def test_locate_counts_array_entries() -> None:
    assert locate(GOOD, ("npt", 1, "outside")) == 11
    assert locate(GOOD, ("npt", 0, "inside")) == 6
    assert locate(GOOD, ("daemon", "metrics")) == 3
    assert locate(GOOD, ("npt", 1, "interface")) == 9  # absent: the entry's header


@pytest.mark.parametrize("text, message", [
    (GOOD.replace('metrics = "127.0.0.1:9101"', "metrics = 9101"),
     "<config>:3: daemon.metrics: must be string, not integer"),
    (GOOD.replace('  outside = "2001:db8:2::/48"', '  outsde = "2001:db8:2::/48"'),
     "<config>:11: npt[1].outsde: unknown key (known in [npt]: inside, outside, interface)"),
    (GOOD.replace('inside = "fd02::/48"\n', ""),
     "<config>:9: npt[1].inside: required key missing"),
    (GOOD + "[daemon2]\nx = 1\n", "<config>:12: daemon2: unknown section (known: daemon, npt)"),
    (GOOD.replace("[daemon]", "[daemon]\nport = 70000"), "<config>:3: daemon.port: 70000 is not a port"),
    (GOOD.replace("[daemon]", "[daemon]\nport = true"), "<config>:3: daemon.port: must be integer, not boolean"),
    ("[daemon\n", "<config>:1:8: "),
    ("[[daemon]]\n", "<config>:1: daemon: write it as a table, [daemon]"),
])
def test_errors_name_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse(text, SCHEMA)
    assert str(exc.value).startswith(message), str(exc.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.toml", SCHEMA)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[daemon]\nstatus = \"\xff\"\n")
    with pytest.raises(ConfigError, match=r"bad.toml:2: not UTF-8"):
        load(bad, SCHEMA)


def test_reference_lists_every_key_with_its_default() -> None:
    ref = SCHEMA.reference()
    assert "[[npt]]" in ref and "inside (string, required)" in ref
    assert 'status (string, default "/run/nfkit/x.sock")' in ref and "port (integer, default 9000)" in ref
