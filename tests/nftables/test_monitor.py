"""`nfkit rules monitor` and `nfkit rules trace` beside `nft monitor` and `nft monitor trace`.

nft 1.0.6 is the oracle: both run at once on one namespace while changes are
applied (by nft -f and by nfkit rules load), and their lines are compared one by
one.  The only differences allowed are the ones docs/rules.md lists under
"rules monitor" (nft 1.0.6 forgets a deleted rule's sets before printing it in
JSON, and prints a deleted object's missing data as zeros).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.nftables.trace import TraceEvent, TraceFormatter, packet_matches
from tests.conftest import interruptible

from .conftest import NFKIT

# Changes applied by nft -f: every kind of object (table y is never deleted: nft 1.0.6's
# monitor crashes on a deleted ct timeout), elements one per event, an interval
# set (its ends arrive as separate events), a rule inserted between two, deletions.
SCRIPT_NFT = """\
table inet t {
  counter c1 { }
  quota q1 { 100 mbytes }
  limit l1 { rate over 1 mbytes/second burst 100 kbytes }
  ct helper h { type "ftp" protocol tcp; l3proto ip; }
  ct expectation ex {
    protocol tcp
    dport 21
    timeout 1s
    size 10
    l3proto ip
  }
  synproxy sp { mss 1460; wscale 7; timestamp sack-perm; }
  set s { type ipv4_addr; elements = { 192.0.2.1, 192.0.2.2 } }
  set r { type inet_service; flags interval; elements = { 1-100, 200, 300-400 } }
  set tt { type ipv4_addr; size 100; flags dynamic,timeout; timeout 1m; }
  map m { type ipv4_addr : verdict; }
  map vm { type mark : ipv4_addr; elements = { 0x1 : 192.0.2.1 } }
  chain c {
    type filter hook input priority filter + 10; policy accept;
    ip saddr { 10.0.0.1, 10.0.0.2 } counter accept
    tcp dport 22 accept comment "ssh"
    ip saddr @s drop
  }
  chain d { }
  chain n { type nat hook postrouting priority srcnat; policy accept; }
}
table ip x { flags dormant; }
table inet y {
  ct timeout tmo {
    protocol tcp; l3proto ip; policy = { established: 100, close: 5 }
  }
}
"""
# Changes applied by nfkit rules load (nft's text, nfkit's loader).
SCRIPT_NFKIT = """\
table inet t {
  set s6 { type ipv6_addr; flags interval; elements = { 2001:db8::/48, 2001:db8:1::1 } }
  chain e {
    type filter hook forward priority -5; policy drop;
    iifname "lo" ip6 daddr @s6 counter name "c1" accept
    tcp dport { 22, 80 } ct state established,related accept
    meta mark set meta mark | 0x4000
    icmp type echo-request limit rate 5/second log prefix "hi " drop
  }
}
"""
CHANGES_NFT = [
    "add element inet t s { 192.0.2.3, 192.0.2.4 }",
    "delete element inet t s { 192.0.2.3 }",
    "add element inet t r { 500-600 }",
    "delete element inet t r { 200 }",
    "add element inet t m { 192.0.2.9 : jump d }",
    "insert rule inet t d accept",
    "add rule inet t d counter",
    "flush chain inet t c",
    "delete element inet t m { 192.0.2.9 }",
    "flush chain inet t d",
    "delete chain inet t d",
    "delete table inet t",
    "delete table ip x",
]


def _start(ns: Any, argv: list[str], path: Path, **kw: Any) -> subprocess.Popen[bytes]:
    return ns.popen(argv, stdout=path.open("wb"), stderr=subprocess.STDOUT, **kw)


def _wait_for(paths: list[Path], needle: str, poke: Any = None, timeout: float = 30) -> None:
    """Until every file holds ``needle`` (``poke()`` called between looks)."""
    deadline = time.monotonic() + timeout
    while True:
        if all(needle in p.read_text() for p in paths):
            return
        assert time.monotonic() < deadline, \
            f"{needle!r} never seen in: {[p.name for p in paths if needle not in p.read_text()]}"
        if poke is not None:
            poke()
        time.sleep(0.3)


# a marker every filter sees: a table with a set, an element and a rule, added and deleted
MARKER = "table ip {0} {{ set m {{ type ipv4_addr; elements = {{ 192.0.2.9 }}; }}; " \
    "chain c {{ accept; }}; }}"


def _mark(ns: Any, paths: list[Path], name: str) -> None:
    """Add and delete marker table ``name`` until every output shows it: every monitor
    listens, and has printed all that came before."""
    def poke() -> None:
        ns.run(["nft", MARKER.format(name)])
        ns.run(["nft", "delete", "table", "ip", name])
    poke()
    _wait_for(paths, name, poke)
    time.sleep(0.3)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=10)


def _between(path: Path) -> list[str]:
    """The lines after the last naming the start marker, before the first naming the end's."""
    lines = path.read_text().splitlines()
    first = max(i for i, line in enumerate(lines) if "mstart" in line) + 1
    return lines[first:min(i for i, line in enumerate(lines) if "mfinish" in line)]


def _unmarked(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines()
            if "mstart" not in line and "mfinish" not in line]


def _json_comparable(line: str) -> Any:
    """A JSON event with the fields nft 1.0.6 prints wrongly taken out (docs/rules.md)."""
    doc = json.loads(line)
    (verb, body), = doc.items()
    (kind, obj), = body.items()
    if verb == "delete" and kind == "rule":
        obj.pop("expr")  # nft 1.0.6 forgot the rule's sets before printing it
    if kind in ("set", "map") and "flags" in obj:
        # nft 1.0.6's JSON leaves a set's dynamic flag out (its text prints it)
        obj["flags"] = [f for f in obj["flags"] if f != "dynamic"]
    if verb == "delete" and kind not in ("table", "chain", "set", "rule", "element"):
        obj = {k: obj[k] for k in ("family", "name", "table", "handle")}  # no data in a delete
    return {verb: {kind: obj}}


@pytest.mark.kernel
def test_monitor_prints_what_nft_monitor_prints(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    outs = {k: tmp_path / f"{k}.out" for k in ("nft", "nfkit", "nft-json", "nfkit-json")}
    procs = {
        "nft": _start(netns, ["nft", "monitor"], outs["nft"]),
        "nfkit": _start(netns, NFKIT + ["rules", "monitor"], outs["nfkit"]),
        "nft-json": _start(netns, ["nft", "-j", "monitor"], outs["nft-json"]),
        "nfkit-json": _start(netns, NFKIT + ["rules", "monitor", "--json"], outs["nfkit-json"]),
    }
    paths = list(outs.values())
    _mark(netns, paths, "mstart")
    (tmp_path / "a.nft").write_text(SCRIPT_NFT)
    (tmp_path / "b.nft").write_text(SCRIPT_NFKIT)
    netns.run(["nft", "-f", str(tmp_path / "a.nft")])
    netns.run(NFKIT + ["rules", "load", str(tmp_path / "b.nft")])
    for change in CHANGES_NFT:
        netns.run(["nft", *change.split()])
    _mark(netns, paths, "mfinish")
    assert _stop(procs["nfkit"]) == 0 and _stop(procs["nfkit-json"]) == 0
    texts = {k: p.read_text() for k, p in outs.items()}
    assert "Traceback" not in texts["nfkit"] + texts["nfkit-json"]

    nft_lines = _between(outs["nft"])
    nfkit_lines = _between(outs["nfkit"])
    assert len(nft_lines) > 60
    # nfkit's load is a generation of its own, named after its process (python)
    assert any(line.startswith("# new generation") and not line.endswith("(nft)")
               for line in nfkit_lines)
    for i, (a, b) in enumerate(zip(nft_lines, nfkit_lines, strict=True)):
        assert a == b, f"line {i}: nft {a!r}, nfkit {b!r}"

    nft_json = _between(outs["nft-json"])
    nfkit_json = _between(outs["nfkit-json"])
    assert len(nft_json) > 50
    for i, (a, b) in enumerate(zip(nft_json, nfkit_json, strict=True)):
        if a.endswith('"flags": '):
            # nft 1.0.6 breaks off a dormant table's line there (invalid JSON)
            assert json.loads(b)["add"]["table"]["flags"] == "dormant" and b.startswith(a)
            continue
        assert _json_comparable(a) == _json_comparable(b), f"line {i}: nft {a}, nfkit {b}"


@pytest.mark.kernel
def test_monitor_filters_as_nft(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    filters = {"new": ["new"], "destroy-rules": ["destroy", "rules"], "ruleset": ["ruleset"],
               "sets": ["sets"], "elements": ["elements"]}
    outs, procs = {}, {}
    for name, words in filters.items():
        for tool, argv in (("nft", ["nft", "monitor"]), ("nfkit", NFKIT + ["rules", "monitor"])):
            key = f"{tool}-{name}"
            outs[key] = tmp_path / f"{key}.out"
            procs[key] = _start(netns, argv + words, outs[key])
    everything = tmp_path / "all.out"
    procs["all"] = _start(netns, NFKIT + ["rules", "monitor"], everything)
    seen = list(outs.values()) + [everything]
    _mark(netns, seen, "mstart")
    (tmp_path / "a.nft").write_text(SCRIPT_NFT)
    netns.run(["nft", "-f", str(tmp_path / "a.nft")])
    for change in CHANGES_NFT:
        netns.run(["nft", *change.split()])
    _mark(netns, seen, "mfinish")
    for key, proc in procs.items():
        if not key.startswith("nft-"):
            assert _stop(proc) == 0
    full = _unmarked(everything)
    for name in filters:
        nft, ours = _unmarked(outs[f"nft-{name}"]), _unmarked(outs[f"nfkit-{name}"])
        assert ours, name
        if name == "elements":
            assert ours == [line for line in full if " element " in line]
        assert ours == nft, name


@pytest.mark.kernel
def test_monitor_counts_lost_events_and_goes_on(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "m.out"
    proc = _start(netns, NFKIT + ["rules", "monitor", "--buffer-size", "65536"], out)
    _mark(netns, [out], "mstart")
    proc.send_signal(signal.SIGSTOP)  # not reading: the kernel's queue for it fills
    many = ", ".join(f"10.{i >> 8}.{i & 255}.1" for i in range(20000))
    (tmp_path / "flood.nft").write_text(
        f"add table ip f\nadd set ip f s {{ type ipv4_addr; }}\nadd element ip f s {{ {many} }}\n")
    netns.run(["nft", "-f", str(tmp_path / "flood.nft")])
    proc.send_signal(signal.SIGCONT)
    # what comes while its queue is still full is lost too (one loss, reported once):
    # a new table each time, until one is printed
    pokes = iter(range(1000))
    _wait_for([out], "table ip after", lambda: netns.run(["nft", f"add table ip after{next(pokes)}"]))
    assert _stop(proc) == 0
    text = out.read_text()
    lost = [line for line in text.splitlines() if line.startswith("# ERROR: We lost")]
    assert lost and lost[0].endswith("(1 time so far)"), text[-500:]
    assert "Traceback" not in text


def test_monitor_refuses_a_bad_filter_word() -> None:
    p = subprocess.run(NFKIT + ["rules", "monitor", "new", "bogus"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "nfkit: monitor: unknown filter word 'bogus' (expected [new|destroy] "
        "[tables|chains|sets|rules|elements|ruleset])"]


TRACE_RULES = """\
table inet t {
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    meta l4proto { icmp, icmpv6, tcp, udp } meta nftrace set 1
    udp dport 5009 drop
    udp dport 5008 drop
  }
  chain c {
    type filter hook input priority filter; policy accept;
    ip saddr 192.0.2.2 counter jump d
    udp dport 5000 meta mark set 0x2a
    tcp dport 7000 tcp flags syn counter accept
    icmpv6 type echo-request accept
  }
  chain d { icmp type echo-request accept; }
}
table ip v4 {
  chain pre {
    type filter hook prerouting priority -350; policy accept;
    udp dport 5001 meta nftrace set 1
  }
  chain in {
    type filter hook input priority 5; policy accept;
    udp dport 5001 drop
  }
}
"""
CLIENT = """\
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"hi", ("192.0.2.1", 5000))
s.sendto(b"yo", ("192.0.2.1", 5001))
t = socket.create_connection(("192.0.2.1", 7000))
t.send(b"x")
t.close()
"""
SERVER = """\
import socket
s = socket.socket()
s.bind(("192.0.2.1", 7000))
s.listen()
s.settimeout(20)
c, _ = s.accept()
c.recv(10)
c.close()
"""


@pytest.mark.kernel
def test_trace_prints_what_nft_monitor_trace_prints(lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fw, peer = lab.add("fw"), lab.add("peer")
    lab.link(fw, peer, ["192.0.2.1/24", "2001:db8::1/64"], ["192.0.2.2/24", "2001:db8::2/64"])
    (tmp_path / "t.nft").write_text(TRACE_RULES)
    fw.run(["nft", "-f", str(tmp_path / "t.nft")])
    server = fw.popen(["python3", "-c", SERVER])
    outs = {k: tmp_path / f"{k}.out" for k in ("nft", "nfkit", "nfkit-json")}
    procs = {"nft": _start(fw, ["nft", "monitor", "trace"], outs["nft"]),
             "nfkit": _start(fw, NFKIT + ["rules", "trace"], outs["nfkit"],
                             preexec_fn=interruptible),
             # `rules monitor trace` is `rules trace`, as `nft monitor trace`
             "nfkit-json": _start(fw, NFKIT + ["rules", "monitor", "--json", "trace"],
                                  outs["nfkit-json"])}
    # Markers: datagrams to port 5009 (the start) and 5008 (the end), traced and dropped
    # before any counter; the lines compared are those between the last start marker
    # and the first end marker of each output, whenever each printed them.
    marker = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)" \
        ".sendto(b'zz', ('192.0.2.1', {}))"
    needles = {"nft": "dport {}", "nfkit": "dport {}", "nfkit-json": '"dport"}}}}, "right": {}'}

    def send(port: int) -> None:
        peer.run(["python3", "-c", marker.format(port)])

    for k, p in outs.items():
        _wait_for([p], needles[k].format(5009), lambda: send(5009))
    peer.run(["ping", "-c1", "-W1", "192.0.2.1"])
    peer.run(["ping", "-6", "-c1", "-W1", "2001:db8::1"])
    peer.run(["python3", "-c", CLIENT])
    server.wait(timeout=20)
    send(5008)
    for k, p in outs.items():
        _wait_for([p], needles[k].format(5008))

    def between(k: str) -> list[str]:
        lines = outs[k].read_text().splitlines()
        first = max(i for i, line in enumerate(lines) if needles[k].format(5009) in line) + 1
        return lines[first:min(i for i, line in enumerate(lines)
                               if needles[k].format(5008) in line)]

    # a rule added now: nft 1.0.6 keeps the rules it read at start ("unknown rule
    # handle"); nfkit reads them again once the generation moved
    fw.run(["nft", "insert rule inet t c udp dport 5002 counter comment \"new\""])
    send(5002)
    _wait_for([outs["nft"]], "unknown rule handle")
    _wait_for([outs["nfkit"]], 'comment "new" (verdict continue)')
    _wait_for([outs["nfkit-json"]], '"new"')
    assert _stop(procs["nfkit"], signal.SIGINT) == 0  # Ctrl-C: a clean end
    assert _stop(procs["nfkit-json"]) == 0
    nft, ours = between("nft"), between("nfkit")
    assert len(nft) > 30
    for kind in ("icmpv6 type echo-request", "udp dport 5001", "tcp flags == syn",
                 "policy accept meta mark 0x0000002a", "(verdict jump d)", "ip v4 in rule"):
        assert any(kind in line for line in nft), kind
    for i, (a, b) in enumerate(zip(nft, ours, strict=True)):
        assert a == b, f"line {i}: nft {a!r}, nfkit {b!r}"
    # JSON: one object a line, as many as text lines, the same rules and verdicts
    objs = [json.loads(line)["trace"] for line in between("nfkit-json")]
    assert len(objs) == len(ours)
    kinds = [{"verdict": "return"}.get(w, w) for w in
             (line.split()[6].rstrip(":") for line in ours)]
    assert [o["type"] for o in objs] == kinds
    assert {"chain": "c", "type": "rule", "verdict": {"jump": {"target": "d"}}}.items() <= \
        next(o for o in objs if o.get("verdict") == {"jump": {"target": "d"}}).items()


OTHER_HEADERS_RULES = """\
table netdev n {
  chain in {
    type filter hook ingress device v1a priority 0;
    meta nftrace set 1
  }
}
table bridge b {
  chain pre {
    type filter hook prerouting priority 0; policy accept;
    meta nftrace set 1
  }
  chain in {
    type filter hook input priority 0; policy accept;
    ether type arp accept
  }
}
table inet t {
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    meta nftrace set 1
    udp dport 5009 drop
    udp dport 5008 drop
  }
}
table arp a {
  chain in {
    type filter hook input priority 0; policy accept;
    meta nftrace set 1
  }
}
"""
# From the peer: an ICMP echo request in an 802.1Q tag (id 10, priority 3), written on
# the link (this kernel has no VLAN devices); an SCTP INIT (raw IP, protocol 132); an
# ICMPv6 echo request behind a hop-by-hop header.
OTHER_HEADERS_PACKETS = """\
import socket, struct, sys
dst = bytes.fromhex(sys.argv[1].replace(":", ""))
src = bytes.fromhex(open("/sys/class/net/v1b/address").read().strip().replace(":", ""))
icmp = struct.pack("!BBHHH", 8, 0, 0x6ba3, 0x1234, 1) + b"vlan"
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 32, 7, 0, 64, 1, 0x266c,
                 socket.inet_aton("198.51.100.2"), socket.inet_aton("198.51.100.1"))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("v1b", 0))
s.send(dst + src + struct.pack("!HHH", 0x8100, (3 << 13) | 10, 0x0800) + ip + icmp)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)
init = struct.pack("!BBHIIHHI", 1, 0, 20, 0xabcdef01, 65535, 10, 10, 1)
s.sendto(struct.pack("!HHII", 5000, 5001, 0, 0) + init, ("192.0.2.1", 0))
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, 54, bytes([0, 0, 1, 4, 0, 0, 0, 0]))  # IPV6_HOPOPTS, PadN
s.sendto(struct.pack("!BBHHH", 128, 0, 0, 0x99, 1) + b"hbh!", ("2001:db8::1", 0))
"""


@pytest.mark.kernel
def test_trace_dissects_vlan_arp_sctp_and_extension_headers_as_nft(lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Real packets through netdev, bridge, inet and arp tables: a VLAN-tagged frame,
    ARP (arping), SCTP, IPv6 behind a hop-by-hop header and in fragments (ping6 of
    1600 bytes): nfkit's lines are `nft monitor trace`'s, line for line."""
    fw, peer = lab.add("fw"), lab.add("peer")
    lab.link(fw, peer, [], ["192.0.2.2/24", "2001:db8::2/64"])
    for cmd in ("ip link add br0 type bridge", "ip link set v1a master br0", "ip link set br0 up",
                "ip addr add 192.0.2.1/24 dev br0", "ip addr add 2001:db8::1/64 dev br0 nodad"):
        fw.run(cmd)
    (tmp_path / "t.nft").write_text(OTHER_HEADERS_RULES)
    fw.run(["nft", "-f", str(tmp_path / "t.nft")])
    outs = {k: tmp_path / f"{k}.out" for k in ("nft", "nfkit")}
    procs = {"nft": _start(fw, ["nft", "monitor", "trace"], outs["nft"]),
             "nfkit": _start(fw, NFKIT + ["rules", "trace"], outs["nfkit"])}
    marker = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)" \
        ".sendto(b'zz', ('192.0.2.1', {}))"

    def send(port: int) -> None:
        peer.run(["python3", "-c", marker.format(port)])

    _wait_for(list(outs.values()), "udp dport 5009", lambda: send(5009))
    mac = fw.run("cat /sys/class/net/br0/address").stdout.strip()
    peer.run(["python3", "-c", OTHER_HEADERS_PACKETS, mac])
    peer.run(["arping", "-c1", "-w1", "-I", "v1b", "192.0.2.1"])
    peer.run(["ping", "-6", "-c1", "-W1", "-s", "1600", "2001:db8::1"])
    send(5008)
    _wait_for(list(outs.values()), "udp dport 5008")
    for p in procs.values():
        _stop(p)

    def between(k: str) -> list[str]:
        lines = outs[k].read_text().splitlines()
        first = max(i for i, line in enumerate(lines) if "udp dport 5009" in line) + 1
        return lines[first:min(i for i, line in enumerate(lines) if "udp dport 5008" in line)]

    nft, ours = between("nft"), between("nfkit")
    for seen in ("vlan pcp 3 vlan dei 0 vlan id 10 ip saddr 198.51.100.2",  # the tag dissected
                 "arp a in packet:", "arp operation request",
                 "sctp sport 5000 sctp dport 5001 sctp vtag 0 @th,96,64",  # checksum left out
                 "ip6 nexthdr ip ip6 length 20",  # the hop-by-hop header: raw, as nft has it
                 "ip6 nexthdr ipv6-frag", "ether type ip6 @th,0,160",  # a later fragment
                 "netdev n in packet:", "bridge b pre packet:", "bridge b in rule ether type arp"):
        assert any(seen in line for line in nft), seen
    for i, (a, b) in enumerate(zip(nft, ours, strict=True)):
        assert a == b, f"line {i}: nft {a!r}, nfkit {b!r}"


PRIORITIES = """\
table inet p {
  chain a { type filter hook input priority 11; }
  chain b { type filter hook input priority -290; }
  chain c { type filter hook input priority 40; }
  chain d { type filter hook input priority -140; }
  chain e { type filter hook input priority 95; }
  chain f { type nat hook prerouting priority -95; }
  chain g { type nat hook postrouting priority -95; }
  chain h { type nat hook postrouting priority 90; }
  chain i { type filter hook forward priority -5; icmp type echo-request accept; }
}
table bridge b {
  chain c { type filter hook input priority -200; }
}
"""


@pytest.mark.kernel
def test_listing_names_priorities_and_icmp_as_nft(netns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "p.nft").write_text(PRIORITIES)
    netns.run(["nft", "-f", str(tmp_path / "p.nft")])
    nft = netns.run(["nft", "list", "ruleset"]).stdout.splitlines()
    ours = netns.run(NFKIT + ["rules", "list"]).stdout.splitlines()
    wanted = [line for line in nft if "priority" in line or "icmp" in line]
    assert len(wanted) == 11
    assert "filter + 10" not in "".join(wanted) and "mangle + 10" in "".join(wanted)
    assert [line for line in ours if "priority" in line or "icmp" in line] == wanted


# ---- sans kernel: the trace decoder on any bytes ------------------------------------

@settings(max_examples=300, deadline=None)
@given(family=st.sampled_from(["inet", "ip", "ip6", "netdev", "bridge", "arp"]),
       nfproto=st.sampled_from([None, 2, 10, 7]), iiftype=st.sampled_from([None, 1, 772]),
       headers=st.dictionaries(st.sampled_from([0, 1, 2]), st.binary(max_size=80)))
def test_trace_lines_from_any_headers(family, nfproto, iiftype, headers) -> None:  # type: ignore[no-untyped-def]
    """Truncated, garbled or unknown headers print (known fields, then raw), never raise."""
    ev = TraceEvent(0x1234, family, "rule", "t", "c", 5, {"accept": None}, nfproto=nfproto,
                    iiftype=iiftype, headers=headers)
    matches = packet_matches(ev)
    covered = sum(len(h) for h in headers.values()) * 8
    assert len(matches) <= covered  # every match takes at least one bit
    lines = TraceFormatter(lambda: {("inet", "t", "c"): {5: "accept"}}).lines(ev)
    assert all(line.startswith("trace id 00001234 ") for line in lines)


def test_trace_dissects_an_ipv4_udp_packet_as_nft() -> None:
    ip = bytes.fromhex("4500001e5d5a40004011" "0000" "c0000202" "c0000201")
    udp = bytes.fromhex("b5cb1388000a0000") + b"hi"
    ev = TraceEvent(0x8396CD1C, "inet", "rule", "t", "pre", nfproto=2, headers={1: ip, 2: udp})
    fmt = TraceFormatter(lambda: {})
    assert fmt.lines(ev) == [
        "trace id 8396cd1c inet t pre packet: ip saddr 192.0.2.2 ip daddr 192.0.2.1 ip dscp cs0 "
        "ip ecn not-ect ip ttl 64 ip id 23898 ip protocol udp ip length 30 udp sport 46539 "
        "udp dport 5000 udp length 10 @th,64,16 0x6869 "]


@pytest.mark.kernel
def test_watch_says_which_event_it_cannot_read_and_goes_on(netns) -> None:  # type: ignore[no-untyped-def]
    import threading

    from nfkit.netlink.consts import NFNLGRP_NFTABLES
    from nfkit.nftables.monitor import RulesetMonitor, watch

    mon = RulesetMonitor()

    def feed(msg: Any) -> list[str]:
        lines = mon.feed(msg)
        if any("table ip bad" in line for line in lines):
            raise KeyError("what a broken event raises")
        return lines

    def changes() -> None:
        time.sleep(0.5)
        netns.run(["nft", "add table ip bad"])
        netns.run(["nft", "add table ip good"])

    threading.Thread(target=changes, daemon=True).start()
    with netns.enter():
        lines = watch((NFNLGRP_NFTABLES,), feed)
        got = [next(lines) for _ in range(4)]
        lines.close()
    assert got[0].startswith("# ERROR: cannot decode event type 0x0a00: KeyError: ")
    assert got[1:3] == [got[1], "add table ip good"] and got[1].startswith("# new generation")


def test_trace_dissects_an_ipv6_hop_by_hop_packet_as_nft() -> None:
    """Seen from nft 1.0.6 on an MLD report: next header 0 is "ip" (/etc/protocols), and
    a transport header nft does not know is one raw payload."""
    ip6 = bytes.fromhex("6000000000380001" "fe8000000000000070f976fffe25f862"
                        "ff020000000000000000000000000016")
    th = bytes.fromhex("8f0097e30000000204000000ff02000000000000")
    ev = TraceEvent(0xDE9E0E41, "inet", "rule", "t", "pre", nfproto=10, headers={1: ip6, 2: th})
    assert TraceFormatter(lambda: {}).lines(ev) == [
        "trace id de9e0e41 inet t pre packet: ip6 saddr fe80::70f9:76ff:fe25:f862 "
        "ip6 daddr ff02::16 ip6 dscp cs0 ip6 ecn not-ect ip6 hoplimit 1 ip6 flowlabel 0 "
        "ip6 nexthdr ip ip6 length 56 @th,0,160 0x8f0097e30000000204000000ff02000000000000 "]


def test_an_element_of_an_unknown_set_is_a_warning_as_nft_gives_it() -> None:
    from nfkit.netlink.codec import MessageWriter, parse_messages
    from nfkit.nftables.expressions import A
    from nfkit.nftables.messages import msg_type
    from nfkit.nftables.monitor import RulesetMonitor

    w = MessageWriter()
    w.begin(msg_type("newsetelem"), 0, family=2)
    w.string(A["set_elem_list"]["table"], "t")
    w.string(A["set_elem_list"]["set"], "never_seen")
    w.end()
    warnings: list[str] = []
    mon = RulesetMonitor(warn=warnings.append)
    assert mon.feed(next(iter(parse_messages(memoryview(bytes(w.buffer)))))) == []
    assert warnings == ["W: Received event for an unknown set."]
