"""conntrackd's local control protocol (conntrack-tools 1.4.7) and its answers' text.

Owns: the request numbers a `conntrackd -C FILE -x` client sends over the
UNIX socket of the configuration (a native int; found by pointing stock
conntrackd's client at a socket and reading what it sent), the client
options that map to them, and the text of the answers (-s, -i, -e), close to
what a stock conntrackd prints.  A request is answered with text (possibly
none) and the connection closed, as conntrackd does; a stock
`conntrackd -C FILE -s` can ask an nfkit daemon, and `nfkit ha -C FILE -s`
a stock one.
Must not know: the engine's insides (it formats `SyncEngine.status()` and caches).
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from nfkit.conntrack.formats import entry_text
from nfkit.conntrack.model import Entry
from nfkit.errors import CapabilityError

REQUEST = struct.Struct("=i")

# request numbers (include/conntrackd.h), as 1.4.7's client sends them
RESYNC_MASTER = 1
DUMP_INTERNAL = 16
DUMP_EXTERNAL = 17
COMMIT = 18
KILL = 20
STATS = 21
SEND_BULK = 22
REQUEST_DUMP = 23
RESET_TIMERS = 26
STATS_NETWORK = 28
STATS_CACHE = 29
STATS_RUNTIME = 30
STATS_LINK = 31
STATS_RSQUEUE = 32
FLUSH_INT_CACHE = 33
FLUSH_EXT_CACHE = 34
STATS_PROCESS = 35
STATS_QUEUE = 36
EXP_STATS = 37
EXP_RESYNC_MASTER = 39
EXP_DUMP_INTERNAL = 40
EXP_DUMP_EXTERNAL = 41
EXP_COMMIT = 42
ALL_FLUSH_MASTER = 43
ALL_RESYNC_MASTER = 44
ALL_FLUSH_CACHE = 45
ALL_COMMIT = 46

# client option (and its optional word) -> request, as conntrackd's getopt maps them
OPTIONS: dict[tuple[str, str | None], int] = {
    ("-s", None): STATS, ("-s", "ct"): STATS, ("-s", "network"): STATS_NETWORK, ("-s", "cache"): STATS_CACHE,
    ("-s", "runtime"): STATS_RUNTIME, ("-s", "link"): STATS_LINK, ("-s", "rsqueue"): STATS_RSQUEUE,
    ("-s", "queue"): STATS_QUEUE, ("-s", "process"): STATS_PROCESS, ("-s", "expect"): EXP_STATS,
    ("-i", None): DUMP_INTERNAL, ("-i", "ct"): DUMP_INTERNAL, ("-i", "expect"): EXP_DUMP_INTERNAL,
    ("-e", None): DUMP_EXTERNAL, ("-e", "ct"): DUMP_EXTERNAL, ("-e", "expect"): EXP_DUMP_EXTERNAL,
    ("-c", None): ALL_COMMIT, ("-c", "ct"): COMMIT, ("-c", "expect"): EXP_COMMIT,
    ("-f", None): ALL_FLUSH_CACHE, ("-f", "internal"): FLUSH_INT_CACHE, ("-f", "external"): FLUSH_EXT_CACHE,
    ("-R", None): ALL_RESYNC_MASTER, ("-R", "ct"): RESYNC_MASTER, ("-R", "expect"): EXP_RESYNC_MASTER,
    ("-F", None): ALL_FLUSH_MASTER, ("-n", None): REQUEST_DUMP, ("-B", None): SEND_BULK,
    ("-t", None): RESET_TIMERS, ("-k", None): KILL,
}
KNOWN = frozenset(OPTIONS.values())


def ask(path: str, request: int, timeout: float = 30.0) -> str:
    """Send ``request`` to the daemon at ``path``; its answer's text.

    Raises CapabilityError when nobody answers there (conntrackd's client exits 1 then).
    """
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(REQUEST.pack(request))
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except OSError as exc:
        raise CapabilityError(f"can't connect to {path}: is the daemon running? "
                              f"({exc.strerror or exc})") from None
    finally:
        s.close()
    return b"".join(chunks).decode("utf-8", "replace")


def _n(v: int) -> str:
    return f"{v:>12}"


def _cache_block(title: str, active: int, c: Any, fails: tuple[int, int, int] = (0, 0, 0)) -> str:
    return (f"{title}:\ncurrent active connections:\t{_n(active)}\n"
            f"connections created:\t\t{_n(c['created'])}\tfailed:\t{_n(fails[0])}\n"
            f"connections updated:\t\t{_n(c['updated'])}\tfailed:\t{_n(fails[1])}\n"
            f"connections destroyed:\t\t{_n(c['destroyed'])}\tfailed:\t{_n(fails[2])}\n\n")


def _link(p: dict[str, Any], device: str) -> str:
    return (f"UDP traffic (active device={device}):\n"
            f"{p['bytes_sent']:>20} Bytes sent {p['bytes_received']:>20} Bytes recv\n"
            f"{p['datagrams_sent']:>20} Pckts sent {p['datagrams_received']:>20} Pckts recv\n"
            f"{p['send_errors']:>20} Error send {0:>20} Error recv\n\n")


def stats_text(st: dict[str, Any], device: str) -> str:
    """`conntrackd -s`'s text from a `SyncEngine.status()` plus the daemon's cache counters."""
    if st.get("internal_cache_enabled", True):
        out = [_cache_block("cache internal", st["internal_cache"], st["internal_counts"])]
    else:  # DisableInternalCache: internal_bypass.c's counters of the events said
        n = st["internal_counts"]
        out = [f"internal bypass:\nconnections new:\t\t{n['created']:>12}\n"
               f"connections updated:\t\t{n['updated']:>12}\nconnections destroyed:\t\t{n['destroyed']:>12}\n\n"]
    if st["external_cache_enabled"]:
        out.append(_cache_block("cache external", st["external_cache"], st["external_counts"]))
    else:
        i = st["inject"]
        out.append(_cache_block("external inject", 0,
                                {"created": i["created"], "updated": i["updated"], "destroyed": i["destroyed"]},
                                (i["create_failed"], i["update_failed"], i["destroy_failed"])).replace(
                                    "current active connections:\t           0\n", ""))
    out.append(f"traffic processed:\n{0:>20} Bytes {0:>25} Pckts\n\n")
    for p in st["peers"]:
        out.append(_link(p, device))
    malformed = sum(p["malformed"] for p in st["peers"])
    lost = sum(p["lost"] for p in st["peers"])
    out.append(f"message tracking:\n{malformed:>20} Malformed msgs {lost:>20} Lost msgs\n\n")
    return "".join(out)


def network_text(st: dict[str, Any], device: str) -> str:
    malformed = sum(p["malformed"] for p in st["peers"])
    lost = sum(p["lost"] for p in st["peers"])
    late = sum(p["late"] for p in st["peers"])
    return (f"network statistics:\n\trecv:\n\t\tMalformed messages:\t{malformed:>20}\n"
            f"\tsend:\n\t\tMalformed messages:\t{0:>20}\n\n"
            f"sequence tracking statistics:\n\trecv:\n\t\tPackets lost:\t\t{lost:>20}\n"
            f"\t\tPackets before:\t\t{late:>20}\n\n"
            + "".join(_link(p, device) for p in st["peers"]))


def runtime_text(st: dict[str, Any]) -> str:
    ev = st["events"]
    return (f"daemon uptime: {int(st['uptime'] // 60)} min\n\nnetlink stats:\n"
            f"\tevents received:\t{ev['received']:>20}\n\tevents filtered:\t{ev['filtered']:>20}\n"
            f"\tevents of own injections:\t{ev['own']:>12}\n"
            f"\tnetlink overrun:\t\t{ev['overruns']:>12}\n"
            f"\tresync with kernel table:\t{st['kernel_resyncs']:>12}\n\n")


def rsqueue_text(st: dict[str, Any]) -> str:
    return "".join(f"resent queue (len={p['resend_queue']})\n" for p in st["peers"])


def cache_lines(entries: dict[Any, Entry], since: dict[Any, float], *, reply: bool) -> str:
    """`conntrackd -i` (``reply``) / `-e` lines: the entry as conntrack -L, no timeout,
    then ``[active since Ns]``."""
    now = time.time()
    out = []
    for key, e in entries.items():
        shown = Entry(e.orig, e.reply, status=e.status, state=e.state, mark=e.mark, zone=e.zone,
                      labels=e.labels, helper=e.helper)
        line = entry_text(shown)
        if not reply:  # the external cache holds what the message said: no reply tuple is shown
            line = _without_reply(line, shown)
        out.append(f"{line} [active since {int(now - since.get(key, now))}s]\n")
    return "".join(out)


def _without_reply(line: str, e: Entry) -> str:
    r = e.reply
    if e.proto in (6, 17, 132, 136, 33):
        part = f"src={r.src} dst={r.dst} sport={r.sport} dport={r.dport} "
    else:
        part = f"src={r.src} dst={r.dst} "
    head, sep, tail = line.rpartition(part)
    if not sep:
        return line
    return head + tail
