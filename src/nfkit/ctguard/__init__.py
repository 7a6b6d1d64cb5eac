"""ctguard: keeps the conntrack table from filling under attack.

`picture` keeps an incremental picture of the table from ctnetlink events (no
full scans on the hot path), `policy` decides what to do at a fill level
(shorter timeouts, then eviction by value with per-source fairness), `guard`
is the daemon that carries the decisions out and follows topology changes
(`nfkit.conntrack.stale`), `config` its file.
"""
