"""The watch script of a stock conntrackd cluster node (`nfkit ha rules --script`).

Owns: the shell script that lets a stock conntrackd node (Node's Daemon
conntrackd) take every bucket while its nfkit peer is silent, and give them
back when it is heard again, and the helper it keeps running (`follow`,
`nfkit ha rules --follow`).  conntrackd knows nothing of buckets: the script
reads its received-packet counter (`conntrackd -s`, "Pckts recv"; the nfkit
peer's FTFW ALIVE comes at least once a quiet second) every 100 ms, and has
the helper install the node's tables (``all``: every bucket, and ARP/ND
answered; ``share`` when the peer is back, after handing it the kernel table:
`conntrackd -R` then `-B`, as keepalived's primary-backup.sh does).  The
helper starts with the script and prepares the three table sets then, so a
takeover costs one commit per table, not a Python start (1-2 s on a loaded
machine); nft cannot install them instead: 1.0.6 reads the bucket rule's
`jhash ct original ip saddr . ct original proto-src` back neither from text
nor from JSON ("can not use variable sized data types (invalid) in concat
expressions").
Must not know: the tables' rules (nfkit.ha.cluster), the protocol.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable

from nfkit.errors import NfkitError
from nfkit.ha.conf import ClusterConf

SERVES = ("share", "all", "none")

SCRIPT = """#!/bin/sh
# A stock conntrackd node of an nfkit cluster: every bucket while the nfkit peer is silent
# (made by `nfkit ha rules --script`; run it beside conntrackd, e.g. as a systemd service).
NFKIT={nfkit}
CLUSTER_CONF={cluster}       # nfkit's file: this node is ThisNode, Daemon conntrackd
CONNTRACKD_CONF={conntrackd}  # conntrackd's own (the same without the Cluster block)
DEAD_MS={dead_ms}                 # the peer silent this long: dead (its ALIVE comes after a quiet second)
POLL=0.1

# the helper installs the tables: started once, so a takeover does not wait for Python to start
helper=$(mktemp -d) || exit 1
trap 'rm -rf "$helper"' EXIT
trap 'exit 143' INT TERM
trap '' PIPE
mkfifo "$helper/in" "$helper/out" || exit 1
"$NFKIT" ha rules -C "$CLUSTER_CONF" --follow <"$helper/in" >"$helper/out" &
exec 3>"$helper/in" 4<"$helper/out"

received() {{
    conntrackd -C "$CONNTRACKD_CONF" -s 2>/dev/null | awk '/Pckts recv/ {{ print $(NF-2); exit }}'
}}
serve() {{
    echo "$1" >&3 && read -r said <&4 && [ "$said" = "serving $1" ] && serving=$1 &&
        echo "nfkit-stock-watch: serving $1 ($2)"
}}

serve share "started" || {{ echo "nfkit-stock-watch: the helper failed (${{said:-it exited}})" >&2; exit 1; }}
last=$(received); heard=$(date +%s%3N)
while :; do
    sleep "$POLL"
    n=$(received)
    [ -n "$n" ] || continue
    now=$(date +%s%3N)
    if [ "$n" != "$last" ]; then
        last=$n; heard=$now
        if [ "$serving" = all ]; then
            # the peer is back: hand it the kernel table (the flows this node took over included),
            # then give its buckets back before it serves (it listens StockDeadTime first)
            conntrackd -C "$CONNTRACKD_CONF" -R >/dev/null 2>&1
            conntrackd -C "$CONNTRACKD_CONF" -B >/dev/null 2>&1
            serve share "the peer is heard again" || echo "nfkit-stock-watch: ${{said:-the helper exited}}" >&2
        fi
    elif [ "$serving" = share ] && [ $((now - heard)) -ge "$DEAD_MS" ]; then
        echo "nfkit-stock-watch: the peer silent for $((now - heard)) ms: taking every bucket"
        conntrackd -C "$CONNTRACKD_CONF" -c >/dev/null 2>&1  # an external cache into the kernel, if any
        serve all "the peer silent for $((now - heard)) ms" || echo "nfkit-stock-watch: ${{said:-the helper exited}}" >&2
    fi
done
"""


def watch_script(nfkit: str, cluster_conf: str, conntrackd_conf: str, dead_ms: int) -> str:
    """The script, for these paths and StockDeadTime (ms)."""
    return SCRIPT.format(nfkit=shlex.quote(nfkit), cluster=shlex.quote(cluster_conf),
                         conntrackd=shlex.quote(conntrackd_conf), dead_ms=dead_ms)


def follow(cc: ClusterConf, words: Iterable[str], say: Callable[[str], None]) -> None:
    """The script's helper: for each word of ``words`` (a line each: share, all or none) install
    this stock node's tables serving that, each table in one commit on one nf_tables socket kept
    open, and ``say`` "serving WORD" (or "error: ..." and go on: nothing of a refused table is
    installed).  The tables are made before the first word, for all three."""
    from nfkit.ha.cluster import load_text, stock_node_tables
    from nfkit.nftables.listing import open_socket

    prepared = {serve: [(owned, load_text(text)) for owned, text in stock_node_tables(cc, serve)]
                for serve in SERVES}
    sock = open_socket()
    try:
        for line in words:
            word = line.strip()
            if word not in prepared:
                say(f"error: {word!r}: not one of {', '.join(SERVES)}")
                continue
            try:
                for owned, ruleset in prepared[word]:
                    owned.replace(ruleset, sock)
            except NfkitError as exc:
                say("error: " + str(exc).replace("\n", "; "))
                continue
            say(f"serving {word}")
    finally:
        sock.close()
