"""Helpers for the nftables tests: nfkit's CLI inside a namespace, JSON comparison."""

from __future__ import annotations

import json
import sys
from typing import Any

NFKIT = [sys.executable, "-m", "nfkit"]


def strip(doc: Any) -> list[dict[str, Any]]:
    """A libnftables listing without metainfo and handles (for comparing two listings)."""
    items = doc["nftables"] if isinstance(doc, dict) else doc
    out = []
    for o in items:
        if "metainfo" in o:
            continue
        (k, b), = o.items()
        b = {kk: vv for kk, vv in b.items() if kk != "handle"}
        out.append({k: b})
    return out


def nft_json(ns: Any) -> list[dict[str, Any]]:
    return strip(json.loads(ns.run("nft -j list ruleset").stdout))
