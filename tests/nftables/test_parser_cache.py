"""The nft text parser kept by lark in a cache (`nfttext._parser_cache`): built once,
read back by later loads, and only from a directory root alone may write (it is a
pickle: a file another user could write would run their code as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BUILD = ("import time; from nfkit.nftables import nfttext; c = time.process_time(); "
         "nfkit_parser = nfttext._parser(); print(time.process_time() - c)")


@pytest.fixture
def run_dir() -> Iterator[Path]:
    d = Path("/run") / f"nfkit-test-{uuid.uuid4().hex[:12]}"
    d.mkdir(mode=0o700)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _build(cache_dir: Path) -> float:
    out = subprocess.run([sys.executable, "-c", BUILD], check=True, capture_output=True,
                         text=True, env={**os.environ, "NFKIT_CACHE_DIR": str(cache_dir)})
    return float(out.stdout)


def test_parser_is_built_once_then_read_back(run_dir: Path) -> None:
    """The first load builds the parser and leaves it in the cache directory; the next
    reads it back (several times faster) and parses as the built one does."""
    from nfkit.nftables.nfttext import load_nft

    first = _build(run_dir)
    cached = run_dir / "parser" / "nft-lark.pickle"
    assert cached.is_file()
    assert os.stat(run_dir / "parser").st_mode & 0o077 == 0
    again = min(_build(run_dir) for _ in range(3))
    assert again < first
    text = "table ip t {\n\tchain c {\n\t\ttcp dport { 22, 80 } accept\n\t}\n}\n"
    assert load_nft(text, "a.nft")  # (this process: built or cached alike)


def test_parser_cache_not_read_where_others_may_write(tmp_path: Path) -> None:
    """Under /tmp (world-writable) nothing is cached or read: a pickle planted there by
    another user is never loaded."""
    planted = tmp_path / "parser"
    planted.mkdir()
    (planted / "nft-lark.pickle").write_bytes(b"not a parser")
    os.chmod(planted, 0o777)
    _build(tmp_path)
    assert (planted / "nft-lark.pickle").read_bytes() == b"not a parser"
    from nfkit.nftables.existscache import root_dir

    assert root_dir(planted, create=False) is None
