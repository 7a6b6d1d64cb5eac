"""Inputs cgrep cannot read: one line naming the path and the real cause, exit 2.

As grep: the matches in the readable files are still printed, and the exit
status is 2 because something could not be searched.  The tests run as root,
who reads everything, so the command runs as nobody (uid 65534, through
setpriv) on a tree readable by all except the one part under test.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SOURCE = "struct s { int a; };\nvoid f(struct s *p) { p->a = 1; }\n"


@pytest.fixture
def tree() -> Iterator[Path]:
    """A tree nobody can read: top/good.c, top/sub/hidden.c."""
    base = Path(tempfile.mkdtemp(prefix="nfkit-cgrep-"))  # /tmp: nobody can reach it
    base.chmod(0o755)
    (base / "sub").mkdir(mode=0o755)
    for path in (base / "good.c", base / "sub" / "hidden.c"):
        path.write_text(SOURCE)
        path.chmod(0o644)
    yield base
    for directory in (base, base / "sub"):
        directory.chmod(0o755)
    shutil.rmtree(base)


@pytest.fixture
def cgrep_as_nobody(nobody_nfkit: list[str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`nfkit cgrep` for member a of struct s, set, run as nobody with ARGS."""
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*nobody_nfkit, "cgrep", "--no-cache", "-t", "struct s", "-a", "a", "-o", "set", *args],
            capture_output=True, text=True, timeout=60, cwd="/")
    return run


def test_the_tree_is_readable_by_nobody(tree: Path, cgrep_as_nobody) -> None:  # type: ignore[no-untyped-def]
    result = cgrep_as_nobody(str(tree))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2


def test_unreadable_directory_in_a_walk(tree: Path, cgrep_as_nobody) -> None:  # type: ignore[no-untyped-def]
    (tree / "sub").chmod(0o700)  # root's: nobody can neither list nor enter it
    result = cgrep_as_nobody(str(tree))
    assert result.stdout.splitlines() == [f"{tree}/good.c:2:23: {SOURCE.splitlines()[1]}"]
    assert result.stderr == f"nfkit: cgrep: {tree}/sub: permission denied\n"
    assert result.returncode == 2


def test_unreadable_directory_named(tree: Path, cgrep_as_nobody) -> None:  # type: ignore[no-untyped-def]
    (tree / "sub").chmod(0o700)
    result = cgrep_as_nobody(str(tree / "sub"), str(tree / "good.c"))
    assert result.stderr == f"nfkit: cgrep: {tree}/sub: permission denied\n"
    assert len(result.stdout.splitlines()) == 1
    assert result.returncode == 2


def test_file_in_a_directory_that_cannot_be_entered(tree: Path, cgrep_as_nobody) -> None:  # type: ignore[no-untyped-def]
    (tree / "sub").chmod(0o700)
    result = cgrep_as_nobody(str(tree / "sub" / "hidden.c"))
    assert result.stderr == f"nfkit: cgrep: {tree}/sub/hidden.c: permission denied\n"
    assert result.returncode == 2


def test_unreadable_file(tree: Path, cgrep_as_nobody) -> None:  # type: ignore[no-untyped-def]
    (tree / "sub" / "hidden.c").chmod(0o600)
    result = cgrep_as_nobody(str(tree))
    assert result.stderr == f"nfkit: cgrep: {tree}/sub/hidden.c: permission denied\n"
    assert len(result.stdout.splitlines()) == 1
    assert result.returncode == 2


def test_unreadable_include_directory(tree: Path, cgrep_as_nobody) -> None:  # type: ignore[no-untyped-def]
    (tree / "sub").chmod(0o700)
    result = cgrep_as_nobody("-I", str(tree / "sub"), str(tree / "good.c"))
    # click checks it first: "Invalid value for '-I': Directory '...' is not readable."
    assert f"'{tree}/sub' is not readable" in result.stderr
    assert result.returncode == 2


def test_missing_file_is_still_missing(tree: Path, cgrep_as_nobody) -> None:  # type: ignore[no-untyped-def]
    result = cgrep_as_nobody(str(tree / "nope.c"), str(tree / "good.c"))
    assert result.stderr == f"nfkit: cgrep: {tree}/nope.c: no such file or directory\n"
    assert result.returncode == 2


def test_unreadable_header_is_named(tree: Path, cgrep_as_nobody) -> None:  # type: ignore[no-untyped-def]
    """A header found under -I but not readable: its types would silently be unknown."""
    include = tree / "include"
    include.mkdir(mode=0o755)
    (include / "s.h").write_text("typedef struct s { int a; } S;\n")
    (include / "s.h").chmod(0o600)
    (tree / "use.c").write_text('#include <s.h>\nvoid f(S *p) { p->a = 1; }\n')
    (tree / "use.c").chmod(0o644)
    result = cgrep_as_nobody("-I", str(include), str(tree / "use.c"), str(tree / "good.c"))
    assert result.stderr == f"nfkit: cgrep: {include}/s.h: permission denied\n"
    # use.c's S is unknown without its header; good.c defines struct s itself
    assert result.stdout.splitlines() == [f"{tree}/good.c:2:23: {SOURCE.splitlines()[1]}"]
    assert result.returncode == 2
