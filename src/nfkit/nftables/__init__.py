"""nf_tables rulesets from Python: model, translation, formats, transactions.

Public API (imported lazily so `nfkit rules` starts fast)::

    from nfkit.nftables import Ruleset, Table, Chain, Rule, Set, commit, list_ruleset

See docs/rules.md.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing's import is a third of `rules exists`' budget
    from typing import Any

_EXPORTS = {
    "Ruleset": "model", "Table": "model", "Chain": "model", "Rule": "model", "Set": "model",
    "Obj": "model",
    "load_json": "jsonfmt", "dump_json": "jsonfmt", "parse_commands": "jsonfmt", "Command": "jsonfmt",
    "to_text": "textfmt",
    "commit": "transaction", "check": "transaction", "list_ruleset": "transaction",
    "flush": "transaction", "apply": "transaction", "diff": "transaction",
    "exists": "transaction", "run_commands": "transaction",
    "add_rule": "transaction", "delete_rule": "transaction",
}


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"nfkit.nftables.{mod}"), name)
