"""`nfkit nfgrep compile | disasm | test`: outputs, JSON, one-line errors."""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path

import dpkt
from click.testing import CliRunner

from nfkit.cli.main import main
from nfkit.nfgrep.loader import SIGNATURES

HTTP = str(SIGNATURES / "http.nfg")


def nfkit(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["nfgrep", *args])
    return result.exit_code, result.output


def test_compile_then_disasm_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "http.nfgb"
    code, text = nfkit("compile", HTTP, "-o", str(out))
    assert code == 0 and "3 protocol(s)" in text
    assert out.read_bytes()[:4] == b"NFGB"
    code, listing = nfkit("disasm", str(out))
    assert code == 0
    assert "protocol 'http' over tcp" in listing and "KEEP_UNTIL   'host'" in listing
    code, source_listing = nfkit("disasm", HTTP)
    assert source_listing.splitlines()[1:] == listing.splitlines()[1:]
    code, text = nfkit("disasm", "--json", str(out))
    data = json.loads(text)
    assert [p["protocol"] for p in data] == ["http", "websocket", "http-connect"]
    assert data[1]["after"] == "http" and data[0]["steps"][0]["cost"] > 0


def test_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nfg"
    bad.write_text('protocol x over tcp {\n  step a from client {\n    find "x"\n  }\n}\n')
    code, text = nfkit("compile", str(bad))
    assert code == 2
    assert text.strip() == (f"nfkit: {bad}:3:13: expected 'within' after the literal of 'find':"
                            " every search is bounded (as in: find \"\\r\\n\" within 1024), "
                            "found newline")
    out = tmp_path / "x.nfgb"
    nfkit("compile", HTTP, "-o", str(out))
    blob = bytearray(out.read_bytes())
    blob[40] ^= 0xFF
    out.write_bytes(bytes(blob))
    for cmd in ("disasm", "test"):
        code, text = nfkit(cmd, str(out))
        assert code == 2 and text.count("\n") == 1 and "checksum mismatch" in text
    # a program the verifier refuses: listed with the reason, never run
    from nfkit.nfgrep.bytecode import OPCODES, Instr, encode
    from nfkit.nfgrep.compiler import compile_file

    program = compile_file(HTTP)
    program.protocols[0].steps[0].code.append(Instr(OPCODES["LOOP_BEGIN"], 4))
    crafted = tmp_path / "crafted.nfgb"
    crafted.write_bytes(encode(program))
    code, text = nfkit("disasm", str(crafted))
    assert code == 2 and "LOOP_BEGIN never closed; program refused" in text
    code, text = nfkit("disasm", "--no-verify", str(crafted))
    assert code == 0 and text.startswith("# refused: ") and "LOOP_BEGIN   " in text
    code, text = nfkit("test", str(tmp_path / "missing.nfg"))
    assert code == 2 and "cannot read rule file" in text


def test_payload_shows_each_step() -> None:
    code, text = nfkit("test", HTTP, "--payload", "GET / HTTP/1.1\\r\\nHost: h.example\\r\\n",
                       "--payload", "\\r\\n", "--reply", "HTTP/1.1 200 OK\\r\\n\\r\\n")
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0].endswith("ok, 3 protocol(s): http, http-connect, websocket")
    assert "    http/request (client): waits" in lines
    assert any(line.startswith("    http/request (client): held at 33  method='GET' "
                               "host='h.example'") for line in lines)
    assert lines[-1] == "verdict payload: http  method='GET' host='h.example'"
    code, text = nfkit("test", HTTP, "--json", "--payload", "GET / HTTP/1.1\\r\\n\\r\\n",
                       "--reply", "HTTP/1.1 101 Switching\\r\\n\\r\\n")
    data = json.loads(text)
    assert data["flows"][0]["app"] == "http"
    # the request decides http; the upgrade and CONNECT after it fail on it
    assert [e["result"] for e in data["packets"][0]["events"]] == ["held", "classified", "failed", "failed"]


def test_payload_udp_and_expectations(tmp_path: Path) -> None:
    ftp = str(SIGNATURES / "ftp.nfg")
    code, text = nfkit("test", ftp, "--reply", "220 ready\\r\\n", "--payload", "USER a\\r\\n",
                       "--reply", "227 Entering Passive Mode (192,0,2,9,4,1).\\r\\n")
    assert code == 0
    assert "expects ftp-data over tcp to 192.0.2.9:1025" in text
    query = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03org\x00"
             b"\x00\x01\x00\x01")
    escaped = "".join(f"\\x{b:02x}" for b in query)
    code, text = nfkit("test", str(SIGNATURES / "dns.nfg"), "--udp", "--payload", escaped)
    assert code == 0 and "qname='www.example.org'" in text


def _pcap(path: Path, chunks: list[tuple[int, bytes]]) -> None:
    """Frame recorded payloads as a TCP session (handshake, data, no loss) in a pcap file."""
    cli, srv = socket.inet_aton("192.0.2.1"), socket.inet_aton("192.0.2.2")
    seq = [1000, 5000]
    with path.open("wb") as f:
        w = dpkt.pcap.Writer(f, linktype=dpkt.pcap.DLT_RAW)
        ts = 1.0

        def seg(d: int, flags: int, data: bytes = b"") -> None:
            nonlocal ts
            tcp = dpkt.tcp.TCP(sport=40000 if d == 0 else 8080, dport=8080 if d == 0 else 40000,
                               seq=seq[d], ack=seq[1 - d], flags=flags, data=data)
            ip = dpkt.ip.IP(src=cli if d == 0 else srv, dst=srv if d == 0 else cli,
                            p=dpkt.ip.IP_PROTO_TCP, data=tcp)
            ip.len = len(bytes(ip))
            w.writepkt(bytes(ip), ts)
            ts += 0.001
            seq[d] += len(data) + (1 if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)

        seg(0, dpkt.tcp.TH_SYN)
        seg(1, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
        for d, data in chunks:
            seg(d, dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, data)
        seg(0, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)


def test_capture_file(tmp_path: Path) -> None:
    cap = tmp_path / "ws.pcap"
    _pcap(cap, [(0, b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\n\r\n"),
                (1, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")])
    code, text = nfkit("test", HTTP, str(cap))
    assert code == 0, text
    assert "flow tcp 192.0.2.1:40000 -> 192.0.2.2:8080" in text
    assert "    websocket/switched (server): held at 12" in text
    assert ("verdict tcp 192.0.2.1:40000 -> 192.0.2.2:8080: websocket (chain http > websocket)"
            "  method='GET' host='ws.example'") in text
    code, text = nfkit("test", HTTP, "--json", str(cap))
    assert json.loads(text)["flows"][0]["chain"] == ["http", "websocket"]
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all" + struct.pack("<I", 7))
    code, text = nfkit("test", HTTP, str(bad))
    assert code == 2 and text.startswith("nfkit: ") and text.count("\n") == 1


def test_nfgrep_keeps_openblas_to_one_thread_unless_the_user_says() -> None:
    """numpy's OpenBLAS would start a thread per core at import (CPU nfgrep never uses)."""
    import os
    import subprocess
    import sys

    code = "import os, nfkit.cli.nfgrep, numpy; print(os.environ['OPENBLAS_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    for given, want in ((None, "1"), ("3", "3")):
        if given is not None:
            env["OPENBLAS_NUM_THREADS"] = given
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == want


def test_classify_keeps_freed_arrays_mapped_for_the_next_batch() -> None:
    """A batch's arrays (a 6 MiB head block, 512 KiB columns), made and freed batch after
    batch, fault their pages in once, not each time (glibc maps and unmaps or trims them)."""
    import subprocess
    import sys

    code = ("import resource, sys, numpy as np\n"
            "from nfkit.cli.nfgrep_classify import keep_freed_heap\n"
            "if sys.argv[1] == 'kept': keep_freed_heap()\n"
            "def batch():\n"
            "    head = np.ones((1 << 16, 96), dtype=np.uint8)\n"
            "    return head, [np.ones(1 << 16) for _ in range(20)]\n"
            "batch()\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(20): batch()\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    faults = {how: int(subprocess.run([sys.executable, "-c", code, how], capture_output=True,
                                      text=True, check=True).stdout)
              for how in ("kept", "default")}
    assert faults["default"] > 20 * 1000  # about 3,000 a batch
    assert faults["kept"] < 1000


def test_classify_does_not_import_numpys_masked_arrays(tmp_path: Path) -> None:
    """numpy.ma (about 8 ms of start-up) is nothing nfgrep uses; np.unique imported it."""
    import subprocess
    import sys

    cap = tmp_path / "get.pcap"
    _pcap(cap, [(0, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), (1, b"HTTP/1.1 200 OK\r\n\r\n")])
    # (the command ends its process itself: the modules it imported are the interpreter's list)
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "nfkit", "nfgrep", "classify", "--json",
                          str(cap)], capture_output=True, text=True)
    assert '"app": "http"' in out.stdout
    imported = {line.rpartition("|")[2].strip() for line in out.stderr.splitlines()
                if line.startswith("import time:")}
    assert "numpy" in imported and "nfkit.nfgrep.classify" in imported
    assert not {m for m in imported if m == "numpy.ma" or m.startswith("numpy.ma.")}


def test_classify_without_click_prints_what_the_click_command_prints(tmp_path: Path) -> None:
    """`nfgrep classify [--json] CAPTURE...` runs before click is imported (`nfkit.cli.nfgrep_quick`):
    the same lines, notes, errors, exit status and threads as the click command (which an
    option at its default value, here --max-flows, still goes to)."""
    import subprocess
    import sys

    good = tmp_path / "get.pcap"
    _pcap(good, [(0, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), (1, b"HTTP/1.1 200 OK\r\n\r\n")])
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(good.read_bytes()[:-7])
    other = tmp_path / "notes.txt"
    other.write_text("not a capture\n")
    # threads and click at the end: as the command returns, or as it ends its process itself
    # (a one-shot command: `os._exit`)
    code = ("import os, sys\nfrom nfkit.cli.entry import run\n"
            "def report():\n"
            "    print(len(os.listdir('/proc/self/task')), 'click' in sys.modules, file=sys.stderr,"
            " flush=True)\n"
            "def ended(status, _exit=os._exit):\n    report()\n    _exit(status)\n"
            "os._exit = ended\n"
            "try:\n    run(sys.argv[1:])\n"
            "finally:\n    report()\n")

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}

    def run(*args: str) -> tuple[int, str, list[str]]:
        out = subprocess.run([sys.executable, "-c", code, "nfgrep", "classify", *args],
                             capture_output=True, text=True, env=env)
        return out.returncode, out.stdout, out.stderr.splitlines()

    for files in ([good], [cut], [good, cut], [other]):
        for json_flag in ([], ["--json"]):
            args = [*json_flag, *map(str, files)]
            quick = run(*args)
            slow = run("--max-flows", "1048576", *args)
            # one thread, as the click command (numpy's OpenBLAS told so before its import)
            assert quick[2][-1] == "1 False" and slow[2][-1] == "1 True"
            assert quick[:2] == slow[:2] and quick[2][:-1] == slow[2][:-1], args
            assert quick[0] == {good: 0, cut: 1, other: 2}[files[-1]]
