"""Feed capture files to the loaded kernel classifier packet by packet (BPF_PROG_TEST_RUN),
and compare its decision per flow with the userspace engine's.

Each captured packet is rebuilt as an Ethernet frame (whatever the capture's
link type: Ethernet, Linux cooked, raw IP) with its IP addresses, ports, TCP
sequence number and flags and its payload, and run once through the program
as tc would run it on an interface.  The kernel program's flow entries are
then read from its map and compared with `classify`'s flows.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nfkit.nfgrep.capture import CaptureReader, decode
from nfkit.nfgrep.classify import FlowResult, classify
from nfkit.nfgrep.ebpf.program import (
    DECIDED,
    MARK_USERSPACE,
    NO_APP,
    REFINING,
    UNDECIDED,
    USERSPACE,
    Classifier,
    FlowEntry,
    registry_for,
)

TEST_RUN_MAX = 3000  # bytes of a frame BPF_PROG_TEST_RUN takes for an skb (less than a page)


def frame(proto: int, src: bytes, dst: bytes, sport: int, dport: int, flags: int, seq: int,
          payload: bytes) -> bytes:
    """An Ethernet frame carrying one IPv4/IPv6 TCP or UDP packet (checksums left 0)."""
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0)
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    body = l4 + payload
    if len(src) == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 64, proto, 0, src, dst)
        ethertype = 0x0800
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(body), proto, 64, src, dst)
        ethertype = 0x86DD
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", ethertype) + ip + body


def feed(classifier: Classifier, paths: Iterable[str | os.PathLike[str]]) -> int:
    """Run every TCP/UDP packet of the captures through the program; returns the count."""
    n = 0
    for path in paths:
        reader = CaptureReader(path)
        for _ts, link, raw in reader:
            pkt = decode(link, raw)
            if pkt is None or pkt[0] not in (6, 17):
                continue
            proto, src, dst, sport, dport, flags, seq, payload, _size = pkt
            data = frame(proto, src, dst, sport, dport, flags, seq, bytes(payload))
            classifier.prog.test_run(data[:TEST_RUN_MAX])
            n += 1
    return n


def feed_hybrid(classifier: Classifier, paths: Iterable[str | os.PathLike[str]],
                rules: Sequence[str] | None = None) -> dict[tuple[str, bytes, int, bytes, int], str | None]:
    """Run every TCP/UDP packet through the program, and each packet it marks for userspace
    through the queue path (`live.FlowJudge`, told each direction's stream start by the
    kernel's entry, as `nfgrep live --backend ebpf` does): the queue path's decision per
    flow, keyed (transport, client address, port, server address, port)."""
    from nfkit.nfgrep.engine import Engine
    from nfkit.nfgrep.live import Decision, FlowJudge, kernel_prefix, kernel_starts
    from nfkit.nfgrep.loader import load_rules

    handover = classifier.packet_mark(MARK_USERSPACE)
    decided: dict[tuple[str, bytes, int, bytes, int], str | None] = {}

    def record(d: Decision) -> None:
        (ca, cp), (sa, sp) = endpoint(d.client), endpoint(d.server)
        decided[(d.proto, ca, cp, sa, sp)] = None if d.app == "unknown" else d.app

    judge = FlowJudge(Engine(load_rules(list(rules) if rules is not None else None)),
                      registry_for([s.name for s in classifier.compiled.sigs]), on_decision=record,
                      stream_starts=kernel_starts(classifier), stream_prefix=kernel_prefix(classifier))
    clients: dict[tuple[int, bytes, bytes], bytes] = {}  # the flow's first sender (conntrack's)
    for path in paths:
        for _ts, link, raw in CaptureReader(path):
            pkt = decode(link, raw)
            if pkt is None or pkt[0] not in (6, 17):
                continue
            proto, src, dst, sport, dport, flags, seq, payload, _size = pkt
            a, b = src + sport.to_bytes(2, "big"), dst + dport.to_bytes(2, "big")
            key = (proto, a, b) if a < b else (proto, b, a)
            if key not in clients or proto == 6 and flags & 0x12 == 0x02:
                clients[key] = a
            data = frame(proto, src, dst, sport, dport, flags, seq, bytes(payload))
            mark = classifier.prog.test_run(data[:TEST_RUN_MAX])[1]
            if mark & classifier.mark_mask == handover:
                judge.packet(data[14:TEST_RUN_MAX], reply=clients[key] != a)
    return decided


def endpoint(text: str) -> tuple[bytes, int]:
    """An "address:port" (IPv6 in brackets) of a flow report, as (packed address, port)."""
    addr, _, port = text.rpartition(":")
    return ipaddress.ip_address(addr.strip("[]")).packed, int(port)


@dataclass
class Comparison:
    """Per flow: the engine's app and the kernel's entry, and the tally."""

    same: list[tuple[FlowResult, FlowEntry]] = field(default_factory=list)
    userspace: list[tuple[FlowResult, FlowEntry]] = field(default_factory=list)
    different: list[tuple[FlowResult, FlowEntry | None]] = field(default_factory=list)
    expected: list[tuple[FlowResult, FlowEntry]] = field(default_factory=list)  # among same

    def summary(self) -> str:
        return (f"{len(self.same)} flows alike in the kernel ({len(self.expected)} of them "
                f"announced by userspace), {len(self.userspace)} handed to userspace, "
                f"{len(self.different)} different")


def compare(classifier: Classifier, paths: Sequence[str | os.PathLike[str]],
            rules: Sequence[str] | None = None) -> Comparison:
    """Feed the captures to the kernel program and the engine; compare per flow.

    ``rules``: the rule files or directories the classifier was loaded from, for the
    engine (None: the shipped library).

    A flow is "same" when the kernel decided it as the engine did (an app; or
    no app, decided or still waiting), "userspace" when the kernel handed it
    over (the hybrid: never a wrong app), "different" otherwise (a defect).

    Flows the engine labelled by an expectation (FTP data) are announced to the
    kernel first, as the userspace path does once it has read the control
    connection the kernel handed it (`Classifier.expect`); they are counted in
    ``expected``.
    """
    report = classify(list(paths), rules)
    names = {s.name for s in classifier.compiled.sigs}
    for r in report.flows:
        if r.app is not None and r.app not in names and r.app in classifier.compiled.apps:
            addr, port = endpoint(r.server)
            classifier.expect(addr, port, 6 if r.proto == "tcp" else 17, r.app)
    feed(classifier, paths)
    out = Comparison()
    for r in report.flows:
        if r.proto not in ("tcp", "udp"):
            continue
        (ca, cp), (sa, sp) = endpoint(r.client), endpoint(r.server)
        entry = classifier.flow(ca, sa, cp, sp, 6 if r.proto == "tcp" else 17)
        if entry is None:
            out.different.append((r, None))
        elif entry.state == USERSPACE:
            out.userspace.append((r, entry))
        # refining: the winner's children still wait, as they may in the engine at the end
        elif entry.state in (DECIDED, REFINING) and entry.app == r.app:
            out.same.append((r, entry))
            if r.app not in names:
                out.expected.append((r, entry))
        elif entry.state in (NO_APP, UNDECIDED) and r.app is None:
            out.same.append((r, entry))
        else:
            out.different.append((r, entry))
    return out
