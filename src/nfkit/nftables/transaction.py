"""Transactions against the kernel, the package's public entry points in one place.

Every change set goes out as one Batch in one sendmsg (all or nothing), errors
come back mapped to the object that failed, and listings are read with GET*
dumps.  The work is done by three modules, each importing only those below it:
`listing` (dumps, `exists`), `commits` (encode and send, single-rule changes)
and `diffs` (the smallest change set, `apply`).  This module only names them.
"""

from __future__ import annotations

from nfkit.nftables.commits import (
    add_rule,
    check,
    commit,
    delete_rule,
    encode_commands,
    flush,
    run_commands,
)
from nfkit.nftables.diffs import apply, diff
from nfkit.nftables.listing import exists, list_json_text, list_ruleset, normalize

__all__ = [
    "add_rule", "apply", "check", "commit", "delete_rule", "diff", "encode_commands", "exists",
    "flush", "list_json_text", "list_ruleset", "normalize", "run_commands",
]
