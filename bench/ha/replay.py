"""The sender's Python per event without the kernel's and the machine's noise (run by
bench/ha/replay).

N TCP entries (bench/ha/bench.py's) are created in a namespace's kernel table
and their ctnetlink NEW events recorded as the engine's recvmmsg receives them
(datagrams, in the batches the calls returned); then the recording is fed,
batch by batch, through `SyncEngine.on_kernel_events` (a stand-in receiver
copies each batch into the receive buffer as recvmmsg would; one FTFW peer
whose datagrams are kept).  Prints the best of the repeats (seconds, µs per
event, the stand-in's copying included), the datagrams and a digest of their
bytes: two revisions of the sender must print the same digest for the same
recording (`--events FILE` keeps it: made if missing, read if present).
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
import time
from pathlib import Path

from nfkit.conntrack import ConntrackTable
from nfkit.ha.engine import Options, Peer, SyncEngine
from nfkit.ha.ftfw import FtfwSession
from nfkit.lab import Lab
from nfkit.netlink import mmsg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import entries  # noqa: E402 - bench/ha/bench.py, beside this file


class _Recorded:
    """Stands in for the engine's `mmsg.BatchReceiver`: each call copies the next recorded
    batch into `buffer`, one datagram a slot; [] once the recording is spent."""

    def __init__(self, batches: list[list[bytes]], slots: int, slot_size: int) -> None:
        self.batches, self.slots, self.slot_size = batches, slots, slot_size
        self.buffer = bytearray(slots * slot_size)
        self.next = 0

    def receive(self) -> list[tuple[int, int]]:
        if self.next >= len(self.batches):
            return []
        out = []
        for i, dg in enumerate(self.batches[self.next]):
            off = i * self.slot_size
            self.buffer[off:off + len(dg)] = dg
            out.append((off, len(dg)))
        self.next += 1
        return out


def record(table: ConntrackTable, n: int) -> list[list[bytes]]:
    """The events of creating ``n`` entries, in the batches recvmmsg gives them."""
    events = table.events(resync=False, rcvbuf=64 << 20)
    receiver = mmsg.receiver(events.sock.sock)
    table.create_many(entries(n))
    batches = []
    while got := receiver.receive():
        batches.append([bytes(receiver.buffer[off:off + size]) for off, size in got])
    events.close()
    return batches


def replay(table: ConntrackTable, batches: list[list[bytes]]) -> tuple[float, list[bytes]]:
    engine = SyncEngine(table, Options())
    sent: list[bytes] = []

    def send(dg: bytes) -> bool:
        sent.append(dg)
        return True

    engine.add_peer(Peer("b", FtfwSession(seq=1), send))
    engine.events = table.events(resync=False)  # (not read: the recording stands in)
    engine._receiver = _Recorded(batches, 64, 8192)  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        engine.on_kernel_events()
        return time.perf_counter() - start, sent
    finally:
        engine.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--events", type=Path, help="the recording: made if missing, read if present")
    args = ap.parse_args()
    with Lab("hrp") as lab:
        ns = lab.add("a")
        with ns.enter():
            table = ConntrackTable()
        try:
            if args.events is not None and args.events.exists():
                batches = pickle.loads(args.events.read_bytes())  # noqa: S301 - this script's own file
            else:
                batches = record(table, args.entries)
                if args.events is not None:
                    args.events.write_bytes(pickle.dumps(batches))
            n = sum(map(len, batches))
            runs = [replay(table, batches) for _ in range(args.repeat)]
        finally:
            table.close()
    best = min(t for t, _ in runs)
    sent = runs[0][1]
    assert all(s == sent for _, s in runs)
    print(f"{n} events in {len(batches)} receive calls: best of {args.repeat} {best:.4f} s "
          f"({best / n * 1e6:.2f} µs per event), {len(sent)} datagrams, "
          f"{sum(map(len, sent))} bytes, digest {hashlib.sha256(b''.join(sent)).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
