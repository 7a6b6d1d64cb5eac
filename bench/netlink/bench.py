"""bench/netlink: create 100,000 conntrack entries, then dump and decode them.

nfkit (template-encoded batch send; dump with every attribute decoded) side by
side with pyroute2's NFCTSocket dump and `conntrack -L >/dev/null`, in one
namespace, in one run.  Prints entries per second, medians of several runs,
and the ratios.  Not a test.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import time

from nfkit.lab import Lab
from nfkit.netlink import MessageWriter, NetlinkSocket
from nfkit.netlink.codec import Template
from nfkit.netlink.consts import (
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
)
from nfkit.netlink.shapes import shape_decoder
from nfkit.netlink.specs import ctnetlink as C

CT_NEW = C.CT_NEW
CT_GET = C.CT_GET
CT_DELETE = C.CT_DELETE


def entry_template() -> Template:
    """One UDP entry encoded once; source address and ports are patched per entry."""
    w = MessageWriter()
    w.begin(CT_NEW, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL, family=socket.AF_INET)
    fields = []
    with w.nest(C.CT.number("tuple_orig")):
        with w.nest(C.TUPLE.number("ip")):
            fields.append((w.here() + 4, ">I"))
            w.binary(C.IP.number("v4_src"), bytes(4))
            w.binary(C.IP.number("v4_dst"), socket.inet_aton("198.51.100.2"))
        with w.nest(C.TUPLE.number("proto")):
            w.u8(C.PROTO.number("num"), 17)
            fields.append((w.here() + 4, ">H"))
            w.be16(C.PROTO.number("src_port"), 0)
            w.be16(C.PROTO.number("dst_port"), 53)
    with w.nest(C.CT.number("tuple_reply")):
        with w.nest(C.TUPLE.number("ip")):
            w.binary(C.IP.number("v4_src"), socket.inet_aton("198.51.100.2"))
            fields.append((w.here() + 4, ">I"))
            w.binary(C.IP.number("v4_dst"), bytes(4))
        with w.nest(C.TUPLE.number("proto")):
            w.u8(C.PROTO.number("num"), 17)
            w.be16(C.PROTO.number("src_port"), 53)
            fields.append((w.here() + 4, ">H"))
            w.be16(C.PROTO.number("dst_port"), 0)
    w.be32(C.CT.number("timeout"), 3600)
    w.be32(C.CT.number("mark"), 7)
    w.end()
    return Template(w.message(0), fields)


def create(sock: NetlinkSocket, n: int) -> float:
    t0 = time.perf_counter()
    tpl = entry_template()
    w = MessageWriter()
    base = int.from_bytes(socket.inet_aton("192.0.2.0"), "big")
    for i in range(n):
        src = base + 1 + i // 50000
        port = 1024 + i % 50000
        tpl.emit(w, src, port, src, port)
    failures = sock.pipeline(w, ack=False, chunk=1 << 20)
    elapsed = time.perf_counter() - t0
    if failures:
        raise SystemExit(f"{len(failures)} creates failed")
    return elapsed


def nfkit_dump(sock: NetlinkSocket) -> tuple[float, int]:
    t0 = time.perf_counter()
    w = MessageWriter()
    w.begin(CT_GET, family=socket.AF_INET)
    w.end()
    decode = shape_decoder(C.CT)  # each layout compiled once, then struct-speed
    count = 0
    for msg in sock.dump(w):
        decode(msg.attrs)
        count += 1
    return time.perf_counter() - t0, count


PYROUTE2_DUMP = """
import sys, time
from pyroute2 import NFCTSocket

def touch(nla):
    # every attribute, nested ones included, as nfkit's dump decodes them all
    for _name, value in nla.get("attrs", ()):
        if hasattr(value, "get") and "attrs" in value:
            touch(value)

s = NFCTSocket()
t0 = time.perf_counter()
count = 0
for msg in s.dump():
    touch(msg)
    count += 1
print(time.perf_counter() - t0, count)
"""


def pyroute2_dump(ns) -> tuple[float, int]:
    """pyroute2 in its own process inside the namespace (its I/O runs in threads of its
    own, which a per-thread setns would not reach); start-up is not timed."""
    import sys

    out = ns.run([sys.executable, "-c", PYROUTE2_DUMP], timeout=900).stdout.split()
    return float(out[0]), int(out[1])


def conntrack_list(ns) -> float:
    t0 = time.perf_counter()
    subprocess.run(ns.argv("conntrack -L"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", "--entries", type=int, default=100_000)
    ap.add_argument("-r", "--runs", type=int, default=3)
    args = ap.parse_args()
    n = args.entries
    creates, ours, theirs, tool = [], [], [], []
    with Lab("bnl") as lab:
        ns = lab.add("ct")
        with ns.enter():
            sock = NetlinkSocket()
        for run in range(args.runs):
            ns.run("conntrack -F", check=False)
            creates.append(create(sock, n))
            t, c = nfkit_dump(sock)
            assert c == n, f"nfkit dumped {c} of {n}"
            ours.append(t)
            t, c = pyroute2_dump(ns)
            assert c == n, f"pyroute2 dumped {c} of {n}"
            theirs.append(t)
            tool.append(conntrack_list(ns))
            print(f"run {run + 1}: create {creates[-1]:.2f}s  nfkit dump {ours[-1]:.2f}s  "
                  f"pyroute2 dump {theirs[-1]:.2f}s  conntrack -L {tool[-1]:.2f}s", flush=True)
        sock.close()
    med = statistics.median
    print(f"\n{n} conntrack entries, medians of {args.runs} runs")
    print(f"  nfkit create (batched, template)   {med(creates):6.2f} s  {n / med(creates):>10,.0f} entries/s")
    print(f"  nfkit dump + decode all attributes {med(ours):6.2f} s  {n / med(ours):>10,.0f} entries/s")
    print(f"  pyroute2 dump + decode             {med(theirs):6.2f} s  {n / med(theirs):>10,.0f} entries/s")
    print(f"  conntrack -L >/dev/null            {med(tool):6.2f} s  {n / med(tool):>10,.0f} entries/s")
    print(f"  ratio nfkit/pyroute2 dump rate     {med(theirs) / med(ours):6.1f}x  (goal >= 3x)")
    print(f"  ratio nfkit/conntrack -L rate      {med(tool) / med(ours):6.2f}x")
    print(f"  create {n} entries                 {med(creates):6.2f} s  (goal < 2 s)")


if __name__ == "__main__":
    main()
