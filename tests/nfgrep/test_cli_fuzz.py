"""Generated bad input through the real `nfkit nfgrep` commands: exit 0, 1 or 2, never a traceback.

Each property feeds one kind of bad input (malformed rule text with deep nesting
and huge tokens, non-UTF-8 bytes in arguments and files, truncated or garbled
.nfgb and capture files, out-of-range option values) to the click command in
process, as `nfkit` runs it (its error guard included); `_run` fails on any
exception that escapes the command.  A few examples also go through a real
`python -m nfkit` process, where a Traceback would show on stderr.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfkit.cli.main import main
from nfkit.nfgrep.bytecode import HEADER, encode
from nfkit.nfgrep.compiler import compile_file
from nfkit.nfgrep.loader import SIGNATURES
from tests.nfgrep.test_capture_files import ether, ipv4, tcp, udp, write_pcap, write_pcapng

HTTP = SIGNATURES / "http.nfg"
FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _run(*args: str) -> tuple[int, str, str]:
    """One `nfkit nfgrep ...` in process; fails the test on an escaped exception."""
    result = CliRunner().invoke(main, ["nfgrep", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("".join(traceback.format_exception(result.exception)))
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    return result.exit_code, result.stdout, result.stderr


def _real(*args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, NFKIT_CACHE_DIR="")
    proc = subprocess.run([sys.executable, "-m", "nfkit", "nfgrep", *args], capture_output=True,
                          timeout=60, env=env)
    assert proc.returncode in (0, 1, 2) and b"Traceback" not in proc.stderr, proc.stderr
    return proc


def _arg(raw: bytes) -> str:
    """A command-line argument as Python receives it from argv (non-UTF-8 kept as surrogates)."""
    return raw.decode("utf-8", "surrogateescape")


# -- rule text ---------------------------------------------------------------------

WORDS = ["protocol", "p", "over", "tcp", "udp", "ports", "80", "after", "step", "watch", "s",
         "from", "client", "server", "either", "{", "}", "(", ")", "\n", ";", "let", "x", "=",
         "u8", "u16be", "at", "0", "+", "*", "-", "<<", "&", "|", "==", "in", "..", "find",
         "within", "1024", "before", '"a"', '"\\r\\n"', "any", "of", ",", "nocase", "optional",
         "repeat", "up", "to", "16", "keep", "until", "bytes", "labels", "as", "expect",
         "field", "is", "give", "here", "length", "decimal", "skip", "0xffffffffffffffff",
         '"\\xZZ"', "99999999999999999999999", "#", "é", "\t"]
VALID = HTTP.read_text()


@st.composite
def rule_text(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["tokens", "mutated", "deep", "huge", "bytes"]))
    if kind == "tokens":
        return " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=80))).encode()
    if kind == "mutated":
        text = bytearray(VALID.encode())
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(text) - 1))
            op = draw(st.sampled_from(["cut", "insert", "flip", "drop"]))
            if op == "cut":
                del text[at:]
            elif op == "insert":
                text[at:at] = draw(st.sampled_from(WORDS)).encode() * draw(st.integers(1, 400))
            elif op == "flip" and text:
                text[min(at, len(text) - 1)] = draw(st.integers(0, 255))
            elif text:
                del text[at:at + draw(st.integers(1, 50))]
            if not text:
                break
        return bytes(text)
    if kind == "deep":
        depth = draw(st.integers(1, 3000))
        opener, closer = draw(st.sampled_from([("(", ")"), ("optional {\n", "}\n"),
                                               ("u8 at ", ""), ("1 + ", "")]))
        body = opener * depth + "1" + closer * depth
        return (f"protocol p over tcp {{\n step s from client {{\n let x = {body}\n x >= 0\n"
                f" }}\n}}\n").encode()
    if kind == "huge":
        size = draw(st.integers(1000, 200000))
        token = draw(st.sampled_from(["p", "9", '"a', "a" * 3 + '"', "0x", "# "]))
        return f"protocol {token * (size // len(token))} over tcp {{ step s from client {{ \"a\" }} }}".encode()
    return draw(st.binary(max_size=300))


@FAST
@given(text=rule_text())
def test_compile_and_disasm_of_any_rule_text(tmp_path: Path, text: bytes) -> None:
    src = tmp_path / "r.nfg"
    src.write_bytes(text)
    code, _, err = _run("compile", str(src), "-o", str(tmp_path / "r.nfgb"))
    if code == 2:
        assert err.startswith("nfkit: ") or err.startswith("Usage:"), err
    _run("disasm", str(src))
    _run("test", str(src), "--payload", "GET / HTTP/1.1\\r\\n\\r\\n")


# -- bytecode files ------------------------------------------------------------------

BLOB = encode(compile_file(HTTP))


@FAST
@given(cut=st.integers(0, len(BLOB)), flips=st.lists(st.tuples(st.integers(0, len(BLOB) - 1),
                                                              st.integers(0, 255)), max_size=6),
       reseal=st.booleans(), junk=st.binary(max_size=64))
def test_disasm_and_test_of_garbled_programs(tmp_path: Path, cut: int,
                                             flips: list[tuple[int, int]], reseal: bool,
                                             junk: bytes) -> None:
    blob = bytearray(BLOB)
    for at, value in flips:
        blob[at] = value
    blob = blob[:cut] + junk
    if reseal and len(blob) >= HEADER.size:  # past the checksum: the verifier must hold
        payload = bytes(blob[HEADER.size:])
        blob[:HEADER.size] = HEADER.pack(b"NFGB", 1, 0, len(payload), zlib.crc32(payload))
    prog = tmp_path / "g.nfgb"
    prog.write_bytes(bytes(blob))
    _run("disasm", str(prog))
    _run("disasm", "--no-verify", str(prog))
    _run("disasm", "--json", str(prog))
    _run("test", str(prog), "--payload", "GET / HTTP/1.1\\r\\n\\r\\n", "--reply", "HTTP/1.1 200")


# -- arguments -------------------------------------------------------------------------

@FAST
@given(payload=st.binary(max_size=60), reply=st.binary(max_size=30),
       port=st.one_of(st.integers(-2**70, 2**70), st.sampled_from(["x", "", "1e3", "0x50"])),
       udp_flag=st.booleans(), rules_name=st.binary(min_size=1, max_size=20))
def test_test_with_any_arguments(tmp_path: Path, payload: bytes, reply: bytes, port: int | str,
                                 udp_flag: bool, rules_name: bytes) -> None:
    args = ["test", str(HTTP), "--payload", _arg(payload), "--reply", _arg(reply), "--port",
            str(port)]
    if udp_flag:
        args.append("--udp")
    _run(*args)
    name = _arg(rules_name.replace(b"/", b"_").replace(b"\0", b"_"))
    _run("test", str(tmp_path / name), "--payload", "a")
    _run("compile", str(tmp_path / name))


# -- captures --------------------------------------------------------------------------

def _capture_frames() -> list[bytes]:
    frames = []
    for i in range(6):
        frames += [ether(ipv4(6, tcp(40000 + i, 80, 100, 0x02)), 0x0800),
                   ether(ipv4(6, tcp(40000 + i, 80, 101, 0x18, b"GET / HTTP/1.1\r\n\r\n")), 0x0800),
                   ether(ipv4(17, udp(5000 + i, 53, b"\x12\x34" + bytes(10))), 0x0800)]
    return frames


@FAST
@given(kind=st.sampled_from(["pcap", "pcapng"]), link=st.sampled_from([1, 1, 1, 101, 113, 276, 0, 189, 65535]),
       cut=st.integers(0, 2000), flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)),
                                                 max_size=6),
       max_flows=st.one_of(st.integers(-5, 2**70), st.sampled_from(["x", ""])),
       max_memory=st.sampled_from(["1", "8K", "1M", "512M", "1T", "99999999999999999G", "-1",
                                   "x", "1.5M", "", "\udcff"]))
def test_classify_and_test_of_damaged_captures(tmp_path: Path, kind: str, link: int, cut: int,
                                               flips: list[tuple[int, int]], max_flows: int | str,
                                               max_memory: str) -> None:
    path = tmp_path / f"c.{kind}"
    if kind == "pcap":
        write_pcap(path, link, _capture_frames())
    else:
        write_pcapng(path, [link], [(0, f) for f in _capture_frames()])
    data = bytearray(path.read_bytes())
    for at, value in flips:
        if at < len(data):
            data[at] = value
    path.write_bytes(bytes(data[:max(cut, 0)] if cut < len(data) else data))
    _run("classify", str(path))
    _run("classify", "--json", "--max-flows", str(max_flows), "--max-memory", max_memory, str(path))
    _run("test", str(HTTP), str(path))


# -- a few through a real process ---------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("test", str(HTTP), "--payload", b"\xff\xfe\\x", "--port", "65536"),
    ("compile", b"/nonexistent/\xff.nfg"),
    ("disasm", str(HTTP), "--json"),
    ("classify", "--max-memory", "1K", b"/nonexistent/\xff.pcap"),
])
def test_real_processes_never_show_a_traceback(args: tuple[str | bytes, ...]) -> None:
    _real(*args)


def test_deep_rule_text_in_a_real_process(tmp_path: Path) -> None:
    src = tmp_path / "deep.nfg"
    src.write_text("protocol p over tcp {\n step s from client {\n let x = " + "(" * 100000
                   + "\n }\n}\n")
    proc = _real("compile", str(src))
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1


def test_garbled_capture_in_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "g.pcap"
    write_pcap(path, 1, _capture_frames())
    data = path.read_bytes()
    path.write_bytes(data[:24] + struct.pack("<IIII", 0, 0, 0xFFFFFFF0, 10) + data[40:])
    for cmd in (("classify", str(path)), ("test", str(HTTP), str(path))):
        proc = _real(*cmd)
        assert proc.returncode == 1 and b"corrupt record" in proc.stderr
