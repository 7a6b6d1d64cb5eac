"""bench/nfgrep: `nfkit nfgrep classify` vs nDPI's ndpiReader and NFStream on real mixed traffic.

1. Builds (once; cached under /var/cache/nfkit-bench/nfgrep) a capture of
   traffic made by real programs in a namespace lab: bulk HTTP and TLS
   downloads, many short HTTP, TLS, DNS (UDP and TCP), SSH, Redis, MQTT, SMTP,
   POP3, IMAP, FTP (control and data), WebSocket and CONNECT flows, requests
   sent one byte per segment, and random bytes to port 443.  tcpdump records
   the server's link with offloads off (wire-sized packets).
2. Ground truth comes from how the traffic was made: every server program
   listens on its own port, so the server port of a flow says what it is
   (FTP data: vsftpd's passive range; port 443: random bytes, i.e. unknown).
3. Repeats that capture ``--copies`` times into a larger one (cached too):
   copy k moves the client to 192.0.2.(2+k) / 2001:db8::(2+k) (in the
   headers and in FTP PORT/EPRT text, same length) and later in time, so
   every copy's flows are new flows to every tool.
4. Runs nfkit, nfkit --jobs 2 (a parse worker beside the classifying process:
   two cores; its CPU is both processes'; its --json output compared byte for
   byte with one process's), ndpiReader, ndpiReader -d (no port guessing) and
   NFStream (nDPI through cffi, one meter process: the others are
   single-threaded too) on the same file, ``--runs`` times each, interleaved; prints medians of wall
   time, packets/s, flows/s, the ratios, the flows each got right, and memory
   per tracked flow at 1,000,000 flows (FlowTable vs the conventional
   two-tuple table, tracemalloc).  The machine is shared: figures are noisy.

Options: --runs N (default 3), --copies N (default 4, at most 8), --rebuild,
--flows N (memory test, default 1e6), --skip-memory, --skip-nfstream, --nfkit-b SRC (also run
the nfkit of another source tree, interleaved: an A/B in one run, outputs compared byte for
byte).  nfkit is byte-compiled first, as installing it does.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nfkit.nfgrep.capture import CaptureReader, decode
from nfkit.nfgrep.labtraffic import SERVER4, SERVER6, TrafficLab

CACHE = Path("/var/cache/nfkit-bench/nfgrep")
CAPTURE = CACHE / "mixed-v2.pcap"

# server port -> (transport, app) of the programs the lab runs
PLAN = {
    ("tcp", 8000): "http", ("tcp", 9999): "http", ("tcp", 4433): "tls", ("tcp", 8443): "tls",
    ("tcp", 22): "ssh", ("udp", 53): "dns", ("tcp", 53): "dns", ("tcp", 6379): "redis",
    ("tcp", 1883): "mqtt", ("tcp", 25): "smtp", ("tcp", 110): "pop3", ("tcp", 143): "imap",
    ("tcp", 21): "ftp", ("tcp", 8080): "websocket", ("tcp", 3128): "http-connect",
    ("tcp", 443): None,
}
FTP_DATA = range(40000, 40101)

# nDPI protocol names -> the names nfgrep's library uses
NDPI = {"HTTP": "http", "TLS": "tls", "SSH": "ssh", "DNS": "dns", "Redis": "redis",
        "MQTT": "mqtt", "SMTP": "smtp", "POP3": "pop3", "IMAP": "imap", "FTP_CONTROL": "ftp",
        "FTP_DATA": "ftp-data", "HTTP_Connect": "http-connect", "WebSocket": "websocket",
        "PostgreSQL": "postgresql", "MySQL": "mysql", "RESP": "redis"}


def log(msg: str) -> None:
    print(msg, flush=True)


def children_cpu() -> float:
    """User + system CPU seconds of the finished children so far (the steadier figure here)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# -- building the capture ---------------------------------------------------------

def build(path: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="nfg-bench-"))
    try:
        with TrafficLab(work) as tl:
            for ns in (tl.client, tl.server):
                ns.run(["ethtool", "-K", "eth0", "tso", "off", "gso", "off", "gro", "off"])
            www = work / "www"
            with open(www / "bulk.bin", "wb") as f:
                f.write(os.urandom(16 << 20))
            cap = tl.capture("mixed.pcap", "eth0")
            t0 = time.monotonic()
            # warm up every server (and record one flow of each)
            for name in ("http", "tls", "ssh", "dns", "redis", "mqtt", "smtp", "pop3", "imap",
                         "ftp", "websocket", "connect_tunnel", "http_one_byte"):
                getattr(tl, name)()
            tl.dns(tcp=True)
            tl.tls(port=8443, sni="api.example.test", alpn="http/1.1")
            tl.serve("http9999", [sys.executable, "-m", "http.server", "9999", "--bind", "::"],
                     9999, cwd=www)
            # bulk: HTTP downloads of 16 MiB, over IPv4 and IPv6
            for i in range(18):
                host = f"[{SERVER6}]" if i % 2 else SERVER4
                tl.run_client(["curl", "-sS", "-o", "/dev/null", f"http://{host}:8000/bulk.bin"],
                              timeout=120)
            log(f"  bulk done in {time.monotonic() - t0:.0f} s")
            # many short flows
            urls = [f"http://{SERVER4}:8000/hello.txt?{i}" for i in range(600)]
            tl.run_client(["curl", "-sS", "-o", "/dev/null", "-A", "bench/1", *urls], timeout=300)
            urls = [f"http://{SERVER4}:9999/hello.txt?{i}" for i in range(200)]
            tl.run_client(["curl", "-sS", "-o", "/dev/null", *urls], timeout=300)
            loop = ("for i in $(seq 200); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | "
                    f"openssl s_client -connect {SERVER4}:4433 -servername w$i.example.test "
                    "-alpn h2 -quiet >/dev/null 2>&1; done")
            tl.run_client(["sh", "-c", loop], timeout=300, check=False)
            names = work / "names.txt"
            names.write_text("".join(f"host{i}.example.test A\n" for i in range(1000)))
            tl.run_client(["dig", f"@{SERVER4}", "-f", str(names), "+tries=1", "+time=2"],
                          timeout=300)
            names.write_text("".join(f"tcp{i}.example.test A +tcp\n" for i in range(150)))
            tl.run_client(["dig", f"@{SERVER4}", "-f", str(names), "+tries=1", "+time=2"],
                          timeout=300)
            tl.run_client(["redis-benchmark", "-h", SERVER4, "-n", "3000", "-c", "20", "-t",
                           "set,get", "-q"], timeout=300)
            log(f"  batches done in {time.monotonic() - t0:.0f} s")
            for i in range(25):
                tl.redis()
                tl.mqtt()
                tl.smtp()
                tl.pop3()
                tl.imap()
                tl.ftp()
                tl.websocket()
                tl.connect_tunnel()
                tl.ssh()
                tl.tls(port=8443, sni=f"s{i}.example.test", alpn="http/1.1")
                if i % 3 == 0:
                    tl.http_one_byte()
            tl.random_bytes(count=40, seed=7)
            log(f"  all traffic made in {time.monotonic() - t0:.0f} s")
            tl.stop_captures()
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(cap, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def repeat(src: Path, dst: Path, copies: int) -> None:
    """``copies`` copies of a capture, each with its own client address and later in time."""
    import ipaddress as ipa
    import mmap
    import struct

    from nfkit.nfgrep.capture import pcap_offsets
    from nfkit.nfgrep.labtraffic import CLIENT4, CLIENT6

    c4, c6 = ipa.ip_address(CLIENT4).packed, ipa.ip_address(CLIENT6).packed
    with open(src, "rb") as f, open(dst, "wb") as out:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        out.write(data[:24])
        offsets, _, _ = pcap_offsets(data, 24, 1 << 40, True)
        first = struct.unpack_from("<I", data, offsets[0])[0]
        span = struct.unpack_from("<I", data, offsets[-1])[0] - first + 2
        head = struct.Struct("<IIII")
        for k in range(copies):
            n4 = bytes([*c4[:3], c4[3] + k])
            n6 = c6[:15] + bytes([c6[15] + k])
            port4 = f"{CLIENT4.replace('.', ',')},".encode()
            new4 = f"{ipa.ip_address(n4)!s}".replace(".", ",").encode() + b","
            eprt = f"|{CLIENT6}|".encode()
            new6 = f"|{ipa.ip_address(n6)!s}|".encode()
            chunk = []
            for pos in offsets:
                sec, frac, caplen, wire = head.unpack_from(data, pos)
                frame = bytearray(data[pos + 16:pos + 16 + caplen])
                if k:
                    et = frame[12:14]
                    if et == b"\x08\x00":
                        for at in (26, 30):
                            if frame[at:at + 4] == c4:
                                frame[at:at + 4] = n4
                    elif et == b"\x86\xdd":
                        for at in (22, 38):
                            if frame[at:at + 16] == c6:
                                frame[at:at + 16] = n6
                    if port4 in frame or eprt in frame:
                        frame = bytearray(bytes(frame).replace(port4, new4).replace(eprt, new6))
                chunk.append(head.pack(sec + k * span, frac, caplen, wire) + frame)
                if len(chunk) >= 65536:
                    out.write(b"".join(chunk))
                    chunk = []
            out.write(b"".join(chunk))
        data.close()


def truth_of(path: Path) -> tuple[dict[tuple, str | None], int]:
    """Flows of the capture (unordered endpoint pairs) -> the app they were made as."""
    servers = {ipaddress.ip_address(SERVER4).packed, ipaddress.ip_address(SERVER6).packed}
    truth: dict[tuple, str | None] = {}
    packets = 0
    for _, link, frame in CaptureReader(path):
        packets += 1
        p = decode(link, frame)
        if p is None or p[0] not in (6, 17):
            continue
        proto, src, dst, sport, dport = p[:5]
        if dst in servers:
            server_port = dport
        elif src in servers:
            server_port = sport
        else:
            continue
        key = _key("tcp" if proto == 6 else "udp", str(ipaddress.ip_address(src)), sport,
                   str(ipaddress.ip_address(dst)), dport)
        if key in truth:
            continue
        transport = key[0]
        if transport == "tcp" and server_port in FTP_DATA:
            truth[key] = "ftp-data"
        elif (transport, server_port) in PLAN:
            truth[key] = PLAN[(transport, server_port)]
    return truth, packets


def _key(transport: str, a: str, ap: int, b: str, bp: int) -> tuple:
    return (transport, frozenset(((a, ap), (b, bp))))


def _split(endpoint: str) -> tuple[str, int]:
    addr, _, port = endpoint.rpartition(":")
    return addr.strip("[]"), int(port)


# -- running the two ----------------------------------------------------------------

def run_nfkit(path: Path, out: Path, src: str | None = None, jobs: int = 1) -> float:
    """nfkit classify; ``src``: run the nfkit package of that source tree (``--nfkit-b``);
    ``jobs``: its ``--jobs`` (1, the default, is not given)."""
    env = None if src is None else {**os.environ, "PYTHONPATH": src}
    more = [] if jobs == 1 else ["--jobs", str(jobs)]
    t = time.perf_counter()
    with open(out, "w") as f:
        subprocess.run([sys.executable, "-m", "nfkit", "nfgrep", "classify", "--json", *more, str(path)],
                       stdout=f, check=True, env=env)
    return time.perf_counter() - t


def byte_compile(src: str | None) -> None:
    """Byte-compile the nfkit package to be run (its own, or ``src``'s) as installing it does.

    An editable install has no .pyc files, and with PYTHONDONTWRITEBYTECODE
    set every run would compile nfkit's sources again (~0.05 s of CPU).
    """
    code = "import nfkit, os; print(os.path.dirname(nfkit.__file__))"
    env = None if src is None else {**os.environ, "PYTHONPATH": src}
    pkg = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", pkg], check=True, stdout=subprocess.DEVNULL)


def nfkit_verdicts(out: Path) -> dict[tuple, str | None]:
    verdicts = {}
    for line in out.read_text().splitlines():
        r = json.loads(line)
        a, ap = _split(r["client"])
        b, bp = _split(r["server"])
        app = None if r["app"] == "unknown" else r["app"]
        verdicts[_key(r["proto"], a, ap, b, bp)] = app
    return verdicts


def run_ndpi(path: Path, out: Path, guess: bool) -> tuple[float, float]:
    """Wall time, and the throughput ndpiReader reports itself (packets/s, setup excluded)."""
    argv = ["ndpiReader", "-i", str(path), "-C", str(out)] + ([] if guess else ["-d"])
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    own = 0.0
    for line in proc.stdout.splitlines():
        if "nDPI throughput:" in line:
            value, unit = line.split(":", 1)[1].split()[:2]
            own = float(value) * {"K": 1e3, "M": 1e6, "G": 1e9}.get(unit, 1)
    return wall, own


def run_nfstream(path: Path, out: Path) -> float:
    """Wall time of NFStream over the capture (one meter process), its flows written as JSON lines."""
    code = (
        "import json, sys\n"
        "from nfstream import NFStreamer\n"
        "with open(sys.argv[2], 'w') as out:\n"
        "    for f in NFStreamer(source=sys.argv[1], n_meters=1):\n"
        "        out.write(json.dumps([f.protocol, f.src_ip, f.src_port, f.dst_ip, f.dst_port,"
        " f.application_name]) + '\\n')\n"
    )
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(path), str(out)], check=True,
                   stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    return time.perf_counter() - t


def nfstream_verdicts(out: Path) -> dict[tuple, str | None]:
    verdicts: dict[tuple, str | None] = {}
    for line in out.read_text().splitlines():
        proto, a, ap, b, bp, name = json.loads(line)
        transport = {6: "tcp", 17: "udp"}.get(proto)
        if transport is None:
            continue
        app = None
        for part in reversed(name.split(".")):
            if part in NDPI:
                app = NDPI[part]
                break
        verdicts[_key(transport, a, ap, b, bp)] = app
    return verdicts


def ndpi_verdicts(out: Path) -> dict[tuple, str | None]:
    verdicts: dict[tuple, str | None] = {}
    with open(out, newline="") as f:
        rows = csv.reader(f)
        header = next(rows)
        col = {name.lstrip("#"): i for i, name in enumerate(header)}
        for row in rows:
            proto = {"6": "tcp", "17": "udp"}.get(row[col["protocol"]])
            if proto is None:
                continue
            names = row[col["ndpi_proto"]].split(".")
            app = None
            for name in reversed(names):
                if name in NDPI:
                    app = NDPI[name]
                    break
            key = _key(proto, row[col["src_ip"]], int(row[col["src_port"]]),
                       row[col["dst_ip"]], int(row[col["dst_port"]]))
            verdicts[key] = app
    return verdicts


def score(truth: dict, verdicts: dict) -> tuple[int, dict[str, list[int]]]:
    right = 0
    per_app: dict[str, list[int]] = {}
    for key, app in truth.items():
        got = verdicts.get(key, "<missing>")
        ok = got == app
        right += ok
        slot = per_app.setdefault(app or "unknown", [0, 0])
        slot[0] += ok
        slot[1] += 1
    return right, per_app


def memory(flows: int) -> tuple[float, float]:
    code = (
        "import sys; from nfkit.flow import FlowTable; "
        "from nfkit.flow.baseline import TwoTupleTable, bytes_per_flow; "
        f"n={flows}; print(bytes_per_flow(lambda: FlowTable(max_flows=n), n) if sys.argv[1]=='one' "
        "else bytes_per_flow(TwoTupleTable, n))"
    )
    one = float(subprocess.run([sys.executable, "-c", code, "one"], capture_output=True, text=True,
                               check=True).stdout)
    two = float(subprocess.run([sys.executable, "-c", code, "two"], capture_output=True, text=True,
                               check=True).stdout)
    return one, two


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--copies", type=int, default=4, choices=range(1, 9))
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-nfstream", action="store_true")
    ap.add_argument("--nfkit-b", metavar="SRC", help="also run the nfkit of this source tree "
                    "(a checkout's src/, say main's), interleaved, as nfkit-b (an A/B in one run)")
    args = ap.parse_args()
    if args.rebuild or not CAPTURE.exists():
        log(f"building {CAPTURE} (real programs in namespaces, once) ...")
        build(CAPTURE)
    capture = CAPTURE
    if args.copies > 1:
        capture = CACHE / f"{CAPTURE.stem}-x{args.copies}.pcap"
        if args.rebuild or not capture.exists() or capture.stat().st_mtime < CAPTURE.stat().st_mtime:
            log(f"repeating it {args.copies} times into {capture} ...")
            repeat(CAPTURE, capture, args.copies)
    truth, packets = truth_of(capture)
    log(f"capture {capture}: {packets} packets, {len(truth)} TCP/UDP flows made by the lab "
        f"({os.path.getsize(capture) >> 20} MiB)")
    tools = ["nfkit", "nfkit-j2"] + (["nfkit-b"] if args.nfkit_b else []) + ["ndpi", "ndpi-d"] \
        + ([] if args.skip_nfstream else ["nfstream"])
    byte_compile(None)
    if args.nfkit_b:
        byte_compile(args.nfkit_b)
    tmp = Path(tempfile.mkdtemp(prefix="nfg-bench-out-"))
    try:
        times: dict[str, list[float]] = {k: [] for k in tools}
        own: dict[str, list[float]] = {"ndpi": [], "ndpi-d": []}
        cpu: dict[str, list[float]] = {k: [] for k in tools}

        def timed(key: str, fn: Callable[[], float]) -> float:
            before = children_cpu()
            value = fn()
            cpu[key].append(children_cpu() - before)
            return value

        for _ in range(args.runs):
            times["nfkit"].append(timed("nfkit", lambda: run_nfkit(capture, tmp / "nfkit.json")))
            times["nfkit-j2"].append(timed("nfkit-j2", lambda: run_nfkit(
                capture, tmp / "nfkit-j2.json", jobs=2)))
            if args.nfkit_b:
                times["nfkit-b"].append(timed("nfkit-b", lambda: run_nfkit(
                    capture, tmp / "nfkit-b.json", args.nfkit_b)))
            for key, guess in (("ndpi", True), ("ndpi-d", False)):
                before = children_cpu()
                wall, figure = run_ndpi(capture, tmp / f"{key}.csv", guess=guess)
                cpu[key].append(children_cpu() - before)
                times[key].append(wall)
                own[key].append(figure)
            if "nfstream" in tools:
                times["nfstream"].append(timed("nfstream", lambda: run_nfstream(
                    capture, tmp / "nfstream.json")))
        results = {
            "nfkit": nfkit_verdicts(tmp / "nfkit.json"),
            "ndpi": ndpi_verdicts(tmp / "ndpi.csv"),
            "ndpi-d": ndpi_verdicts(tmp / "ndpi-d.csv"),
        }
        if "nfstream" in tools:
            results["nfstream"] = nfstream_verdicts(tmp / "nfstream.json")
        results["nfkit-j2"] = nfkit_verdicts(tmp / "nfkit-j2.json")
        same = (tmp / "nfkit.json").read_bytes() == (tmp / "nfkit-j2.json").read_bytes()
        log(f"nfkit and nfkit --jobs 2 --json output: {'byte for byte the same' if same else 'DIFFERENT'}")
        if args.nfkit_b:
            results["nfkit-b"] = nfkit_verdicts(tmp / "nfkit-b.json")
            same = (tmp / "nfkit.json").read_bytes() == (tmp / "nfkit-b.json").read_bytes()
            log(f"nfkit and nfkit-b --json output: {'byte for byte the same' if same else 'DIFFERENT'}")
        flows_seen = {k: len(v) for k, v in results.items()}
        log(f"\nthroughput (median of {args.runs} runs, wall time of the whole command; "
            "shared 2-core machine, noisy):")
        med = {k: statistics.median(v) for k, v in times.items()}
        for k in tools:
            extra = ""
            if k in own:
                extra = f"  (ndpiReader's own figure, setup excluded: {statistics.median(own[k]):,.0f} pps)"
            log(f"  {k:8s} {med[k]:6.2f} s  {packets / med[k]:>10,.0f} packets/s  "
                f"{flows_seen[k] / med[k]:>9,.0f} flows/s{extra}")
        mcpu = {k: statistics.median(v) for k, v in cpu.items()}
        log("  CPU time (user + system, median): " + ", ".join(f"{k} {mcpu[k]:.2f} s" for k in tools))
        log(f"  nfkit/ndpiReader packets/s ratio: {med['ndpi'] / med['nfkit']:.2f} (wall), "
            f"{mcpu['ndpi'] / mcpu['nfkit']:.2f} (CPU), "
            f"{packets / med['nfkit'] / statistics.median(own['ndpi']):.2f} (vs nDPI's own figure)")
        log(f"  nfkit-j2 (--jobs 2: a parse worker)/ndpiReader packets/s ratio: "
            f"{med['ndpi'] / med['nfkit-j2']:.2f} (wall), {mcpu['ndpi'] / mcpu['nfkit-j2']:.2f} (CPU, "
            f"both processes); nfkit-j2/nfkit time: {med['nfkit-j2'] / med['nfkit']:.2f} (wall), "
            f"{mcpu['nfkit-j2'] / mcpu['nfkit']:.2f} (CPU)")
        if args.nfkit_b:
            log(f"  nfkit-b/nfkit time: {med['nfkit-b'] / med['nfkit']:.2f} (wall), "
                f"{mcpu['nfkit-b'] / mcpu['nfkit']:.2f} (CPU)")
        if "nfstream" in tools:
            log(f"  nfkit/NFStream packets/s ratio: {med['nfstream'] / med['nfkit']:.2f} (wall), "
                f"{mcpu['nfstream'] / mcpu['nfkit']:.2f} (CPU)")
        log(f"\nflows right against the ground truth ({len(truth)} flows):")
        per = {}
        labels = {"nfkit": "nfkit", "nfkit-j2": "nfkit --jobs 2", "nfkit-b": "nfkit-b", "ndpi": "ndpiReader (port guessing)",
                  "ndpi-d": "ndpiReader -d (no guessing)", "nfstream": "NFStream"}
        for k in tools:
            right, per[k] = score(truth, results[k])
            log(f"  {labels[k]:28s} {right:6d} / {len(truth)}  ({100 * right / len(truth):.1f} %)")
        log("\n  per app (right/made):   " + "   ".join(f"{k:>9s}" for k in tools))
        for app in sorted(per["nfkit"]):
            row = "  ".join(f"{per[k][app][0]:>5}/{per[k][app][1]:<5}" for k in per)
            log(f"    {app:14s} {row}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not args.skip_memory:
        one, two = memory(args.flows)
        log(f"\nmemory per tracked flow at {args.flows:,} flows (tracemalloc): one tuple "
            f"{one:.0f} B, two-tuple table {two:.0f} B, ratio {one / two:.2f}")


if __name__ == "__main__":
    main()
