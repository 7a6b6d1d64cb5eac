"""The watch script of a stock conntrackd cluster node (`nfkit ha rules --script`).

Owns: the shell script that lets a stock conntrackd node (Node's Daemon
conntrackd) take every bucket while its nfkit peer is silent, and give them
back when it is heard again.  conntrackd knows nothing of buckets: the script
reads its received-packet counter (`conntrackd -s`, "Pckts recv"; the nfkit
peer's FTFW ALIVE comes at least once a quiet second) and installs the node's
tables with `nfkit ha rules --apply` (``--serve all``: every bucket, and ARP/ND
answered; ``--serve share`` when the peer is back, after handing it the kernel
table: `conntrackd -R` then `-B`, as keepalived's primary-backup.sh does).
Must not know: the tables' rules (nfkit.ha.cluster), the protocol.
"""

from __future__ import annotations

import shlex

SCRIPT = """#!/bin/sh
# A stock conntrackd node of an nfkit cluster: every bucket while the nfkit peer is silent
# (made by `nfkit ha rules --script`; run it beside conntrackd, e.g. as a systemd service).
NFKIT={nfkit}
CLUSTER_CONF={cluster}       # nfkit's file: this node is ThisNode, Daemon conntrackd
CONNTRACKD_CONF={conntrackd}  # conntrackd's own (the same without the Cluster block)
DEAD_MS={dead_ms}                 # the peer silent this long: dead (its ALIVE comes after a quiet second)
POLL=0.2

received() {{
    conntrackd -C "$CONNTRACKD_CONF" -s 2>/dev/null | awk '/Pckts recv/ {{ print $(NF-2); exit }}'
}}
serve() {{
    "$NFKIT" ha rules -C "$CLUSTER_CONF" --serve "$1" --apply && serving=$1 &&
        echo "nfkit-stock-watch: serving $1 ($2)"
}}

serve share "started"
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
            serve share "the peer is heard again"
        fi
    elif [ "$serving" = share ] && [ $((now - heard)) -ge "$DEAD_MS" ]; then
        conntrackd -C "$CONNTRACKD_CONF" -c >/dev/null 2>&1  # an external cache into the kernel, if any
        serve all "the peer silent for $((now - heard)) ms"
    fi
done
"""


def watch_script(nfkit: str, cluster_conf: str, conntrackd_conf: str, dead_ms: int) -> str:
    """The script, for these paths and StockDeadTime (ms)."""
    return SCRIPT.format(nfkit=shlex.quote(nfkit), cluster=shlex.quote(cluster_conf),
                         conntrackd=shlex.quote(conntrackd_conf), dead_ms=dead_ms)
