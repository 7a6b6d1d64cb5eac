"""Bad input to the nfgrep commands: one clear line naming the input, exit 2, never a traceback.

The limits asserted here are the ones docs/nfgrep.md ("Resource bounds") documents.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nfkit.nfgrep import parser as limits
from nfkit.nfgrep.capture import LINK_ETHERNET
from nfkit.nfgrep.compiler import compile_text
from nfkit.nfgrep.engine import Engine, signatures_of
from nfkit.nfgrep.errors import NfgrepSyntaxError
from nfkit.nfgrep.verifier import verify
from tests.nfgrep.test_capture_files import ether, ipv4, udp, write_pcap, write_pcapng

HTTP = str(Path(__file__).parents[2] / "src/nfkit/nfgrep/signatures/http.nfg")


def nfkit(*args: str | bytes, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, NFKIT_CACHE_DIR="")
    return subprocess.run([sys.executable, "-m", "nfkit", "nfgrep", *args], capture_output=True,
                          timeout=timeout, env=env)


def _let(expr: str) -> str:
    return f"protocol p over tcp {{\n step s from client {{\n  let x = {expr}\n  x >= 0\n }}\n}}\n"


def _runs(text: str) -> str | None:
    """Compile, verify and load text; the app it gives a one-byte flow."""
    engine = Engine(signatures_of(verify(compile_text(text, "deep.nfg"))))
    st = engine.new_flow("tcp", 40000, 80)
    engine.feed(st, 0, b"abc")
    return st.app


def _refused(text: str) -> str:
    with pytest.raises(NfgrepSyntaxError) as info:
        compile_text(text, "deep.nfg")
    return str(info.value)


def test_parentheses_nested_to_the_limit_compile_and_beyond_it_are_named() -> None:
    n = limits.MAX_NESTING
    assert _runs(_let("(" * n + "1" + ")" * n)) == "p"
    message = _refused(_let("(" * 300 + "1" + ")" * 300))
    assert message.startswith("deep.nfg:3:") and f"nested deeper than {n}" in message


def test_read_offsets_nest_like_parentheses() -> None:
    n = limits.MAX_NESTING
    compile_text(_let("u8 at " * (n - 1) + "0"), "deep.nfg")
    assert f"nested deeper than {n}" in _refused(_let("u8 at " * 2000 + "0"))


def test_long_sums_to_the_limit_compile_and_beyond_it_are_named() -> None:
    n = limits.MAX_TERMS
    assert _runs(_let(" + ".join(["1"] * n))) == "p"
    message = _refused(_let(" + ".join(["1"] * 1000)))
    assert message.startswith("deep.nfg:3:") and f"more than {n} values" in message


def test_the_deepest_allowed_everything_at_once_loads() -> None:
    blocks = limits.MAX_DEPTH
    expr = "(" * (limits.MAX_NESTING - 1) + " * ".join(["1"] * (limits.MAX_TERMS - 1)) + \
        ")" * (limits.MAX_NESTING - 1)
    text = ("protocol p over tcp {\n step s from client {\n" + "optional {\n" * blocks
            + f"  let x = {expr}\n  x == 1\n" + "}\n" * blocks + " }\n}\n")
    assert _runs(text) == "p"


def test_blocks_nested_deeper_than_the_limit_stop_the_parser() -> None:
    text = ("protocol p over tcp {\n step s from client {\n" + "optional {\n" * 5000 + '"a"\n'
            + "}\n" * 5000 + " }\n}\n")
    message = _refused(text)
    assert f"deep.nfg:{3 + limits.MAX_DEPTH}:" in message and "deeper than" in message


def test_huge_tokens_are_refused_without_being_echoed() -> None:
    name = _refused("protocol " + "p" * 100000 + " over tcp { step s from client { \"a\" } }\n")
    assert len(name) < 200 and f"at most {limits.MAX_NAME}" in name
    number = _refused(_let("9" * 5000))
    assert len(number) < 200 and f"at most {limits.MAX_NUMBER}" in number
    literal = _refused('protocol p over tcp { step s from client { "' + "a" * 100000 + '" } }\n')
    assert len(literal) < 300 and f"at most {limits.MAX_LITERAL}" in literal


def test_too_many_protocols_ports_steps_and_literals() -> None:
    one = 'protocol p{} over tcp {{ step s from client {{ "a{}" }} }}\n'
    n = limits.MAX_PROTOCOLS
    assert len(compile_text("".join(one.format(i, i) for i in range(n)), "x.nfg").protocols) == n
    message = _refused("".join(one.format(i, i) for i in range(n + 1)))
    assert message.startswith(f"deep.nfg:{n + 1}:1:") and f"more than {n} protocols" in message
    ports = ", ".join(str(p) for p in range(1, limits.MAX_PORTS + 2))
    assert "port hints" in _refused(f'protocol p over tcp ports {ports} {{ step s from client {{ "a" }} }}')
    steps = "".join(f'step s{i} from client {{ "a" }}\n' for i in range(limits.MAX_STEPS + 1))
    assert "steps and watches" in _refused(f"protocol p over tcp {{\n{steps}}}\n")
    lits = ", ".join(f'"{i}"' for i in range(limits.MAX_SET + 1))
    assert "literals in one 'any of'" in _refused(
        f"protocol p over tcp {{ step s from client {{ any of {lits} }} }}")


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.nfg"
    path.write_text("# " + "x" * limits.MAX_FILE + "\n")
    proc = nfkit("compile", str(path))
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    assert f"at most {limits.MAX_FILE}".encode() in proc.stderr


def test_seventy_thousand_protocols_are_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "many.nfg"
    path.write_text("".join(f'protocol p{i} over tcp {{ step s from client {{ "a" }} }}\n'
                            for i in range(70000)))
    proc = nfkit("compile", str(path), timeout=30)
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"nfkit: {path}:".encode())


def test_cli_deep_nesting_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.nfg"
    path.write_text(_let("(" * 300 + "1" + ")" * 300))
    proc = nfkit("compile", str(path))
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"nfkit: {path}:3:".encode())


def test_payload_bytes_that_are_not_utf8_are_fed_as_given() -> None:
    proc = nfkit("test", HTTP, "--json", "--payload", b"GET /\xff\xfe HTTP/1.1\\r\\n\\r\\n",
                 "--reply", "HTTP/1.1 200 OK\\r\\n\\r\\n")
    assert proc.returncode == 0, proc.stderr
    import json

    report = json.loads(proc.stdout)
    assert report["packets"][0]["bytes"] == len(b"GET /\xff\xfe HTTP/1.1\r\n\r\n")
    assert report["flows"][0]["app"] == "http"


@pytest.mark.parametrize("escape", ["\\xZZ", "\\x4", "\\q", "\\"])
def test_a_bad_payload_escape_is_an_error(escape: str) -> None:
    proc = nfkit("test", HTTP, "--payload", "GET " + escape)
    assert proc.returncode == 2 and b"unknown escape" in proc.stderr
    assert b"Traceback" not in proc.stderr


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_port_out_of_range_is_refused(port: str) -> None:
    proc = nfkit("test", HTTP, "--port", port, "--payload", "GET ")
    assert proc.returncode == 2 and b"range" in proc.stderr


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_unsupported_link_type_is_an_error_naming_file_and_type(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"usb.{kind}"
    frames = [b"\x00" * 40] * 3
    if kind == "pcap":
        write_pcap(path, 189, frames)  # LINKTYPE_USB_LINUX
    else:
        write_pcapng(path, [189], [(0, f) for f in frames])
    proc = nfkit("classify", str(path))
    assert proc.returncode == 2 and proc.stdout == b""
    assert f"capture {path}: link type 189 is not supported".encode() in proc.stderr


def test_pcapng_interface_of_another_type_without_packets_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "two.pcapng"
    write_pcapng(path, [189, LINK_ETHERNET],
                 [(1, ether(ipv4(17, udp(1000, 53, b"q" * 20)), 0x0800))])
    proc = nfkit("classify", str(path))
    assert proc.returncode == 0 and proc.stdout.count(b"\n") == 1, proc.stderr


def test_test_on_a_damaged_capture_reports_on_stderr_and_exits_1(tmp_path: Path) -> None:
    frames = [ether(ipv4(17, udp(1000 + i, 53, b"q" * 50)), 0x0800) for i in range(5)]
    path = tmp_path / "cut.pcap"
    write_pcap(path, LINK_ETHERNET, frames)
    path.write_bytes(path.read_bytes()[:-30])
    for cmd in (("test", HTTP, str(path)), ("classify", str(path))):
        proc = nfkit(*cmd)
        assert proc.returncode == 1, cmd
        assert b"stopped at packet 5" in proc.stderr and b"stopped" not in proc.stdout


@pytest.mark.parametrize("char", ["²", "٣", "é", "ß"])
def test_non_ascii_digits_and_letters_are_unexpected_characters(char: str) -> None:
    assert "unexpected character" in _refused(_let(char))



@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_a_capture_read_from_a_pipe_is_classified_as_the_file_is(tmp_path: Path, kind: str) -> None:
    """/dev/stdin fed by a pipe cannot seek back over the magic: the bytes read are given back."""
    query = b"\x12\x34\x01\x00\x00\x01" + bytes(6) + b"\x07example\x03org\x00\x00\x01\x00\x01"
    frames = [ether(ipv4(17, udp(40000 + k, 53, query)), 0x0800) for k in range(50)]
    path = tmp_path / f"x.{kind}"
    if kind == "pcap":
        write_pcap(path, LINK_ETHERNET, frames)
    else:
        write_pcapng(path, [LINK_ETHERNET], [(0, f) for f in frames])
    env = dict(os.environ, NFKIT_CACHE_DIR="")
    from_file = nfkit("classify", "--json", str(path))
    piped = subprocess.run([sys.executable, "-m", "nfkit", "nfgrep", "classify", "--json", "/dev/stdin"],
                           input=path.read_bytes(), capture_output=True, timeout=60, env=env)
    assert from_file.returncode == piped.returncode == 0, piped.stderr
    assert piped.stdout == from_file.stdout and len(piped.stdout.splitlines()) == 50
    assert b'"app": "dns"' in piped.stdout
    bad = subprocess.run([sys.executable, "-m", "nfkit", "nfgrep", "classify", "/dev/stdin"],
                         input=b"xx", capture_output=True, timeout=60, env=env)
    assert bad.returncode == 2 and bad.stderr.decode().strip() == \
        "nfkit: capture /dev/stdin: not a pcap or pcapng file (unknown magic 7878)"
