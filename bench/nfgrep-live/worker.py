"""bench/nfgrep-live/worker.py: the queue worker's Python per flow, without the kernel.

The packet messages the kernel would queue for short HTTP exchanges (the
client's request, then the server's reply that decides the flow, as in
bench.py's connection load; each a NFQNL_MSG_PACKET with the attributes a
forwarded packet carries) go through what a worker does per receive batch:
the layout decode (`PacketLayouts`), `serve` (triage, the judge, the engine)
and the verdicts' bytes.  Prints microseconds per flow, medians of --runs (process CPU time),
for batches of --batch datagrams.  What this leaves out: the syscalls and the
kernel's work in the verdict's sendmsg (the packet's reinjection and all that
follows it, charged to the worker's CPU time in bench.py).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import struct
import time

from nfkit.netlink.codec import MessageWriter
from nfkit.netlink.specs import nfqueue as Q
from nfkit.nfgrep.engine import Engine
from nfkit.nfgrep.live import BatchServer, FlowJudge
from nfkit.nfgrep.loader import load_rules
from nfkit.nfgrep.registry import DEFAULT_MARK_MASK, Registry, direction_bit
from nfkit.nfqueue import wire

REQUEST = b"GET /x HTTP/1.0\r\nHost: bench.example\r\nUser-Agent: nfkit-bench\r\n\r\n"
BODY = b"hello from nfkit\n" * 8
REPLY = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY


def ip_tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, payload: bytes,
           flags: int = 0x18) -> bytes:
    """An IPv4 TCP packet without options."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    return ip + tcp + payload


def message(pid: int, payload: bytes, mark: int = 0) -> bytes:
    w = MessageWriter()
    w.begin(Q.PACKET, 0, family=2, res_id=0)
    w.binary(1, wire.packet_hdr(pid, 0x0800, 0))
    w.be32(5, 3)
    w.be32(6, 4)
    if mark:
        w.be32(3, mark)
    w.binary(9, struct.pack(">H2x8s", 6, b"\x02\x00\x00\x00\x00\x01\x00\x00"))
    w.binary(10, payload)
    w.end()
    return bytes(w.buffer)


def flows(n: int, fin: bool = False, request_only: bool = False) -> list[bytes]:
    """Each flow's queued packets: the request, the reply that decides it, and (``fin``) the
    server's FIN queued behind the reply, as in bench.py's connection load with a signature
    that reads the reply; ``request_only``: the request alone (the shipped http decides on
    it, and the rest of the flow stays in the kernel)."""
    reply_bit = direction_bit(DEFAULT_MARK_MASK)
    out = []
    pid = 0
    for i in range(n):
        # every flow a tuple of its own (up to 10 million): no decision is found again
        client, port = bytes([192, 0, 2, 40 + i % 8]), 10000 + i % 50000
        server = bytes([198, 51, 100, 1 + i // 50000 % 200])
        packets = [(ip_tcp(client, server, port, 8080, 1000, 2000, REQUEST), 0),
                   (ip_tcp(server, client, 8080, port, 2000, 1000 + len(REQUEST), REPLY), reply_bit)]
        if request_only:
            del packets[1:]
        elif fin:
            packets.append((ip_tcp(server, client, 8080, port, 2000 + len(REPLY), 1000 + len(REQUEST),
                                   b"", 0x11), reply_bit))
        for ip, mark in packets:
            pid += 1
            out.append(message(pid, ip, mark))
    return out


class Verdicts:
    """Stands in for the queue: the verdict blocks' bytes, counted per sendmsg."""

    def __init__(self) -> None:
        self.sent = 0
        self.calls = 0

    def send(self, block: memoryview, count: int) -> None:
        self.sent += len(bytes(block))
        self.calls += 1


def batches(messages: list[bytes], batch: int) -> list[tuple[bytearray, list[tuple[int, int]]]]:
    """The messages as `Queue.datagrams` would read them: ``batch`` datagrams a receive, each
    in a slot of its own of one buffer."""
    slot = 8192
    out = []
    for lo in range(0, len(messages), batch):
        group = messages[lo:lo + batch]
        buf = bytearray(slot * len(group))
        for i, raw in enumerate(group):
            buf[i * slot:i * slot + len(raw)] = raw
        out.append((buf, [(i * slot, len(raw)) for i, raw in enumerate(group)]))
    return out


def run(engine: Engine, messages: list[bytes], batch: int) -> float:
    judge = FlowJudge(engine, Registry())
    layouts = wire.PacketLayouts()
    q = Verdicts()
    server = BatchServer(judge, DEFAULT_MARK_MASK, 0, q.send)
    received = batches(messages, batch)
    t0 = time.process_time()
    for buf, spans in received:
        pkts, _ = layouts.packets(buf, spans)
        server.packets(buf, pkts)
    seconds = time.process_time() - t0
    flows = judge.counts["decided"]
    assert flows and judge.counts["packets"] == len(messages), judge.counts
    return seconds / flows * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--fin", action="store_true", help="a third packet per flow: the server's FIN")
    ap.add_argument("--request-only", action="store_true",
                    help="the request alone per flow (what reaches the queue now HTTP is decided on it)")
    ap.add_argument("--profile", default="", help="write a cProfile of one more run into this file")
    args = ap.parse_args()
    engine = Engine(load_rules(None))
    messages = flows(args.flows, args.fin, args.request_only)
    gc.collect()
    gc.freeze()
    times = [run(engine, messages, args.batch) for _ in range(args.runs)]
    if args.profile:
        import cProfile

        cProfile.runctx("run(engine, messages, args.batch)", globals(), locals(), args.profile)
    queued = 1 if args.request_only else 3 if args.fin else 2
    print(f"worker Python per flow ({queued} queued packets): median {statistics.median(times):.1f} us "
          f"(runs: {', '.join(f'{t:.1f}' for t in times)}; batch {args.batch}; shared machine, noisy)")


if __name__ == "__main__":
    main()
