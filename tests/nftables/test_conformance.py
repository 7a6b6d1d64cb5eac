"""Conformance against nft (the oracle), one test per ruleset file.

For each tests/nftables/rulesets/*.nft: nft -f loads it into namespace A and
lists it (`nft -j list ruleset`); `nfkit rules load` loads that listing into
namespace B; nft's listing of B must equal A's (handles aside).  And
`nfkit rules list --json` on A must equal nft's listing of A, except for what
nft 1.0.6 leaves out (a netdev base chain's device, the dynamic set flag); and
loaded into B again, that listing must give B the same ruleset.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nfkit.lab import Lab

from .conftest import NFKIT, fill_nft_gaps, nft_json, strip

RULESETS = sorted((Path(__file__).parent / "rulesets").glob("*.nft"))


@pytest.fixture(scope="module")
def pair():  # type: ignore[no-untyped-def]
    from tests.conftest import require_kernel

    require_kernel()
    with Lab("nkc") as lab:
        yield lab.add("a"), lab.add("b")


@pytest.mark.kernel
@pytest.mark.parametrize("path", RULESETS, ids=[p.stem for p in RULESETS])
def test_ruleset(path: Path, pair) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    a.run("nft flush ruleset")
    b.run("nft flush ruleset")
    a.run(["nft", "-f", str(path)])
    listing = a.run("nft -j list ruleset").stdout
    expected = strip(json.loads(listing))
    # nfkit reads nft's listing (with its 1.0.6 defects) and loads it atomically.
    proc = b.run(NFKIT + ["rules", "load", "-"], input=listing, check=False)
    assert proc.returncode == 0, proc.stderr
    assert nft_json(b) == expected
    # nfkit's own listing of the nft-loaded namespace.
    own = a.run(NFKIT + ["rules", "list", "--json"]).stdout
    ours = strip(json.loads(own))
    assert fill_nft_gaps(ours, expected) == expected
    # ... and it reads its own listing back: nothing left out.
    b.run("nft flush ruleset")
    proc = b.run(NFKIT + ["rules", "load", "-"], input=own, check=False)
    assert proc.returncode == 0, proc.stderr
    assert nft_json(b) == expected
