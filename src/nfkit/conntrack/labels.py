"""Conntrack labels need the namespace's consent: the kernel's rule, and nfkit's table that gives it.

The kernel gives a new conntrack entry room for labels (the labels extension)
only in a network namespace where some nf_tables rule sets a ct label (or an
iptables rule uses connlabel): elsewhere it creates the entry and silently
drops the labels asked for, and refuses later label changes with ENOSPC.
Entries created before labels were enabled never get the room.

This module owns that knowledge: the error that says so, and the one-rule
table that enables labels and does nothing else:

    table inet nfkit_ctlabels {
        chain labels {
            ct label set 127
        }
    }

The chain has no hook, so no packet ever reaches the rule: it changes no
traffic, no verdict and no label; its existence alone enables labels.
`enable_labels` installs it in one transaction (idempotent: the chain is
flushed and its rule added again in the same batch).  `nft delete table
inet nfkit_ctlabels` removes it.
"""

from __future__ import annotations

from typing import Any

from nfkit.errors import CapabilityError

LABELS_TABLE_FAMILY = "inet"
LABELS_TABLE = "nfkit_ctlabels"
LABELS_CHAIN = "labels"
# the highest label bit; the rule is never evaluated, the number only has to be valid
_RULE_BIT = 127


class LabelsUnavailable(CapabilityError):
    """The entries concerned have no room for labels in this namespace (see the module doc)."""


HOW_TO_ENABLE = (f"enable them with a rule that sets a ct label, e.g. `nfkit ct create --enable-labels`, "
                 f"which installs table {LABELS_TABLE_FAMILY} {LABELS_TABLE} (one rule, never evaluated)")


def enable_labels_commands() -> dict[str, Any]:
    """The libnftables JSON document `enable_labels` commits."""
    base = {"family": LABELS_TABLE_FAMILY, "table": LABELS_TABLE}
    chain = {**base, "name": LABELS_CHAIN}
    rule = {**base, "chain": LABELS_CHAIN,
            "expr": [{"mangle": {"key": {"ct": {"key": "label"}}, "value": _RULE_BIT}}]}
    return {"nftables": [
        {"add": {"table": {"family": LABELS_TABLE_FAMILY, "name": LABELS_TABLE}}},
        {"add": {"chain": chain}},
        {"flush": {"chain": chain}},
        {"add": {"rule": rule}},
    ]}


def enable_labels() -> None:
    """Install the labels table in the current namespace, atomically (see the module doc).

    Raises NfkitError (TransactionError) when the kernel refuses it.
    """
    from nfkit.nftables.jsonfmt import parse_commands
    from nfkit.nftables.transaction import run_commands

    run_commands(parse_commands(enable_labels_commands()))


__all__ = ["HOW_TO_ENABLE", "LABELS_CHAIN", "LABELS_TABLE", "LABELS_TABLE_FAMILY", "LabelsUnavailable",
           "enable_labels", "enable_labels_commands"]
