"""cgrep's header cache: plain JSON, private, and read only when it is ours.

Whoever can write the cache directory must not be able to run code as the
user of nfkit (a pickle planted there once ran as root), nor feed it types:
files and directories of another user, or open to group or others, are
neither read nor written.  The tests run as root and give files away to
uid 65534 (nobody) to play the other user.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nfkit.cgrep import Searcher, make_query

DATA = os.path.join(os.path.dirname(__file__), "data")
INCLUDE = os.path.join(DATA, "include")
REACH = os.path.join(DATA, "reach.c")
HEADERS = [os.path.join(INCLUDE, "net", "conn.h"), os.path.join(DATA, "local.h")]
NOBODY = 65534


def search(cache: Path) -> Searcher:
    searcher = Searcher([make_query("struct tuple", "dst", "deref")], [INCLUDE],
                        cache_dir=str(cache))
    report = searcher.search_path(REACH)
    assert report.error is None and len(report.matches) == 17
    return searcher


def cache_file(cache: Path, header: str, suffix: str = ".json") -> Path:
    digest = hashlib.sha1(header.encode()).hexdigest()
    return cache / digest[:2] / (digest[2:] + suffix)


def test_cache_is_json_private_and_reused(tmp_path: Path) -> None:
    cache = tmp_path / "a" / "b" / "cgrep"  # missing parents are made too
    first = search(cache)
    assert (first.headers.parsed, first.headers.from_cache) == (2, 0)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", cache):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = sorted(p for p in cache.rglob("*") if p.is_file())
    assert files == sorted(cache_file(cache, header) for header in HEADERS)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        document = json.loads(path.read_text())
        assert document["header"] in HEADERS
    second = search(cache)
    assert (second.headers.parsed, second.headers.from_cache) == (0, 2)


@pytest.mark.parametrize("spoil", ["owned by nobody", "mode 0666", "mode 0620"])
def test_a_cache_file_not_ours_or_open_to_others_is_ignored(tmp_path: Path, spoil: str) -> None:
    search(tmp_path)
    target = cache_file(tmp_path, HEADERS[0])
    if spoil == "owned by nobody":
        os.chown(target, NOBODY, NOBODY)
    else:
        os.chmod(target, int(spoil.split()[-1], 8))
    again = search(tmp_path)
    assert (again.headers.parsed, again.headers.from_cache) == (1, 1)


@pytest.mark.parametrize("spoil", ["owned by nobody", "mode 0777"])
def test_a_cache_directory_not_ours_or_open_to_others_is_not_used(tmp_path: Path,
                                                                  spoil: str) -> None:
    cache = tmp_path / "cgrep"
    search(cache)
    before = sorted(cache.rglob("*"))
    if spoil == "owned by nobody":
        os.chown(cache, NOBODY, NOBODY)
    else:
        os.chmod(cache, 0o777)
    again = search(cache)
    assert (again.headers.parsed, again.headers.from_cache) == (2, 0)
    assert again.headers.cache is not None and "ignored" in str(again.headers.cache.problem)
    assert sorted(cache.rglob("*")) == before  # nothing written into it either
    for path in before:
        os.unlink(path) if path.is_file() else None
    fresh = search(cache)
    assert not list(cache.rglob("*.json"))  # still not written into
    assert fresh.headers.from_cache == 0


def test_the_command_says_why_the_cache_is_not_used(tmp_path: Path) -> None:
    cache = tmp_path / "cgrep"
    cache.mkdir()
    os.chown(cache, NOBODY, NOBODY)
    result = run_cgrep(cache, "--stats")
    assert result.returncode == 0, result.stderr
    assert f"cgrep: header cache {cache} ignored: owned by uid {NOBODY}, not 0" \
        in result.stderr.splitlines()
    assert list(cache.iterdir()) == []


class Planted:
    """A pickle whose loading creates a file: the proof that loading ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def run_cgrep(cache: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nfkit", "cgrep", *options, "-I", INCLUDE,
         "-t", "struct tuple", "-a", "dst", REACH],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "NFKIT_CGREP_CACHE": str(cache)})


@pytest.mark.parametrize("owner", [os.geteuid(), NOBODY])
def test_a_planted_pickle_never_runs(tmp_path: Path, owner: int) -> None:
    cache = tmp_path / "cgrep"
    marker = tmp_path / "ran"
    payload = pickle.dumps(Planted(str(marker)))
    assert not marker.exists()
    # where the pickle cache kept each header, and where the JSON cache does
    for header in HEADERS:
        for suffix in (".pickle", ".json"):
            planted = cache_file(cache, header, suffix)
            planted.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            planted.write_bytes(payload)
            planted.chmod(0o600)
            os.chown(planted, owner, owner)
    os.chmod(cache, 0o700)
    for _ in range(2):
        result = run_cgrep(cache)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == 17
        assert "Traceback" not in result.stderr
        assert not marker.exists()
