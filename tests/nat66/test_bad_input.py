"""Generated bad input through nat66's and ctguard's commands and files: one line, exit 0-2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfkit.ctguard import config as ctguard_config
from nfkit.nat66 import config as nat66_config
from nfkit.service.config import ConfigError

NFKIT = [sys.executable, "-m", "nfkit"]

keys = st.sampled_from(["inside", "outside", "interface", "to", "ports", "flags", "address", "port",
                        "servers", "spread", "mark", "table", "weight", "budget", "evict_at",
                        "evict_to", "timeouts_at", "restore_below", "interval", "mask", "status"])
values = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).replace("inf", "inf").lower()),
    st.text(max_size=40).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.sampled_from(['"fd01::/48"', '"fd01::1/48"', '"2001:db8::/80"', '"wan0"', '"a/b"', "[]",
                     '["random", "nope"]', '"1024-65535"', '"2000-1000"', "true", '"x" * 99']),
)
sections = st.sampled_from(["[[npt]]", "[[snat]]", "[[dnat]]", "[[uplink]]", "[daemon]", "[limits]",
                            "[topology]", "[[limits]]", "[nope]", ""])
files = st.lists(st.tuples(sections, st.lists(st.tuples(keys, values), max_size=5)), max_size=4).map(
    lambda parts: "".join(f"{sec}\n" + "".join(f"{k} = {v}\n" for k, v in kv) for sec, kv in parts))
garbage = st.one_of(files, st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                    st.just("[" * 5000), st.just("a = " + "[" * 3000 + "]" * 3000))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=garbage)
def test_config_files_are_read_or_refused_by_line_and_key(tmp_path: Path, text: str) -> None:
    f = tmp_path / "x.toml"
    f.write_text(text, encoding="utf-8", errors="surrogateescape")
    for reader in (nat66_config.read, ctguard_config.read):
        try:
            reader(f)
        except ConfigError as exc:
            assert str(exc).startswith(f"{f}:") and "\n" not in str(exc)


@pytest.mark.parametrize("args", [
    ["nat66", "map", "--inside", "fd01::/48", "--outside", "2001:db8::/48", "\udcff"],
    ["nat66", "map", "--inside", "x" * 100000, "--outside", "2001:db8::/48", "fd01::1"],
    ["nat66", "map", "--inside", "fd01::/48", "--outside", "2001:db8::/-1", "fd01::1"],
    ["nat66", "apply", "/nonexistent.toml"],
    ["nat66", "apply", "/dev/null", "--dry-run"],
    ["ctguard", "run", "-c", "/nonexistent.toml"],
    ["ctguard", "status", "--socket", "/nonexistent.sock"],
])
def test_commands_refuse_in_one_line(args: list[str]) -> None:
    out = subprocess.run([*NFKIT, *args], capture_output=True, text=True, errors="replace",
                         timeout=60)
    assert out.returncode in (0, 1, 2) and "Traceback" not in out.stderr, out.stderr
    if out.returncode == 2:
        assert out.stderr.count("\n") == 1 and len(out.stderr) < 2000, out.stderr
