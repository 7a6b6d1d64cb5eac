"""Engine speed: flows per second through the shipped signatures, payloads made by real libraries.

The end-to-end comparison with nDPI's ndpiReader on captures is bench/nfgrep;
this one isolates the engine (no capture reading, no flow table): each flow
is new_flow + feed of its first packets, as the classifier does.  Medians of
several runs.
"""

from __future__ import annotations

import http.client
import http.server
import io
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

from nfkit.nfgrep.engine import Engine
from nfkit.nfgrep.loader import load_rules


def tls_flight() -> list[tuple[int, bytes]]:
    with tempfile.TemporaryDirectory() as d:
        key, cert = f"{d}/k.pem", f"{d}/c.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=x", "-keyout", key,
                        "-out", cert, "-days", "1"], check=True, capture_output=True)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    cin, cout, sin, sout = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(cin, cout, server_hostname="www.example.test")
    server = server_ctx.wrap_bio(sin, sout, server_side=True)
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = cout.read()
    sin.write(hello)
    try:
        server.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return [(0, hello), (1, sout.read())]


class _Capture:
    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


def http_exchange() -> list[tuple[int, bytes]]:
    conn = http.client.HTTPConnection("www.example.test")
    sink = _Capture()
    conn.sock = sink  # type: ignore[assignment]
    conn.request("GET", "/index.html", headers={"User-Agent": "bench/1"})
    request = sink.data

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args: object) -> None:
            pass

    class Fake:
        def __init__(self) -> None:
            self.out = io.BytesIO()

        def makefile(self, mode: str, *a: object) -> io.BytesIO:
            return io.BytesIO(request) if "r" in mode else self.out

        def sendall(self, data: bytes) -> None:
            self.out.write(data)

    fake = Fake()
    Handler(fake, ("192.0.2.1", 40000), None)  # type: ignore[arg-type]
    return [(0, request), (1, fake.out.getvalue())]


def run(engine: Engine, chunks: list[tuple[int, bytes]], port: int, flows: int) -> float:
    start = time.perf_counter()
    for _ in range(flows):
        st = engine.new_flow("tcp", 40000, port)
        for d, data in chunks:
            engine.feed(st, d, data)
    return flows / (time.perf_counter() - start)


def main() -> None:
    engine = Engine(load_rules())
    http = http_exchange()
    tls = tls_flight()
    rnd = os.urandom(1400)
    cases = {
        "http (request + reply)": (http, 80),
        "http, request in 1-byte segments": ([(0, http[0][1][i:i + 1])
                                              for i in range(len(http[0][1]))] + http[1:], 80),
        "tls (ClientHello + server flight)": (tls, 443),
        "random bytes on 443": ([(0, rnd), (1, rnd)], 443),
    }
    flows = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    print(f"nfgrep engine, {len(engine.signatures)} signatures, median of 5 runs of {flows} flows")
    for name, (chunks, port) in cases.items():
        st = engine.new_flow("tcp", 40000, port)
        for d, data in chunks:
            engine.feed(st, d, data)
        rates = [run(engine, chunks, port, flows) for _ in range(5)]
        rate = statistics.median(rates)
        print(f"  {name:36s} {rate:10,.0f} flows/s {rate * len(chunks):12,.0f} segments/s"
              f"   -> {st.app or 'unknown'}")


if __name__ == "__main__":
    main()
