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
`enable_labels` installs it as nfkit's own table (`nfkit.service.owntable`):
one transaction that also replaces an earlier copy, so it is idempotent.  `nft delete table
inet nfkit_ctlabels` removes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nfkit.errors import CapabilityError

if TYPE_CHECKING:
    from nfkit.nftables.model import Ruleset

LABELS_TABLE_FAMILY = "inet"
LABELS_TABLE = "nfkit_ctlabels"
LABELS_CHAIN = "labels"
# the highest label bit; the rule is never evaluated, the number only has to be valid
_RULE_BIT = 127


class LabelsUnavailable(CapabilityError):
    """The entries concerned have no room for labels in this namespace (see the module doc)."""


HOW_TO_ENABLE = (f"enable them with a rule that sets a ct label, e.g. `nfkit ct create --enable-labels`, "
                 f"which installs table {LABELS_TABLE_FAMILY} {LABELS_TABLE} (one rule, never evaluated)")


def labels_ruleset() -> Ruleset:
    """The table's one chain and one rule (see the module doc)."""
    from nfkit.nftables.model import Chain, Rule, Ruleset

    rule = Rule(LABELS_TABLE_FAMILY, LABELS_TABLE, LABELS_CHAIN,
                expr=[{"mangle": {"key": {"ct": {"key": "label"}}, "value": _RULE_BIT}}])
    return Ruleset(chains=[Chain(LABELS_TABLE_FAMILY, LABELS_TABLE, LABELS_CHAIN)], rules=[rule])


def enable_labels() -> None:
    """Install the labels table in the current namespace, in one commit that also replaces
    an earlier copy (see the module doc).  Raises NfkitError when the kernel refuses it."""
    from nfkit.service.owntable import Owned

    Owned(LABELS_TABLE_FAMILY, LABELS_TABLE).replace(labels_ruleset())


__all__ = ["HOW_TO_ENABLE", "LABELS_CHAIN", "LABELS_TABLE", "LABELS_TABLE_FAMILY", "LabelsUnavailable",
           "enable_labels", "labels_ruleset"]
