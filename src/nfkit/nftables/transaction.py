"""Transactions against the kernel, the package's public entry points in one place.

Every change set goes out as one Batch in one sendmsg (all or nothing), errors
come back mapped to the object that failed, and listings are read with GET*
dumps.  The work is done by three modules, each importing only those below it:
`listing` (dumps, `exists`), `commits` (encode and send, single-rule changes)
and `diffs` (the smallest change set, `apply`).  This module only names them,
importing each on first use (a listing command does not load the committer).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "add_rule": "commits", "check": "commits", "commit": "commits", "delete_rule": "commits",
    "encode_commands": "commits", "flush": "commits", "run_commands": "commits",
    "apply": "diffs", "diff": "diffs",
    "exists": "listing", "list_json_text": "listing", "list_ruleset": "listing",
    "normalize": "listing",
}
__all__ = [
    "add_rule", "apply", "check", "commit", "delete_rule", "diff", "encode_commands", "exists",
    "flush", "list_json_text", "list_ruleset", "normalize", "run_commands",
]


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"nfkit.nftables.{mod}"), name)
