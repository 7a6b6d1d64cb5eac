"""Test harness: namespaces for kernel tests, and the rule that CI never skips them.

A test that needs the kernel asks for the `netns` or `lab` fixture (or is
marked `kernel`).  Without root it is skipped with the reason, unless CI=true,
where it fails: CI must not pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import nfkit
from nfkit.lab import Lab, Namespace, three_node

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_kernel() -> None:
    """Skip (or, in CI, fail) when kernel tests cannot run here."""
    reason = None
    if os.geteuid() != 0:
        reason = "kernel test needs root (network namespaces)"
    elif not os.path.exists("/proc/self/ns/net"):
        reason = "kernel test needs network namespaces"
    if reason:
        if IN_CI:
            pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
        pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel"):
        require_kernel()


@pytest.fixture
def netns() -> Iterator[Namespace]:
    """A fresh network namespace (lo up), removed after the test."""
    require_kernel()
    with Lab("nkt") as lab:
        yield lab.add("t")


@pytest.fixture
def lab() -> Iterator[Lab]:
    """An empty lab to add namespaces and links to; removed after the test."""
    require_kernel()
    with Lab("nkt") as new_lab:
        yield new_lab


@pytest.fixture
def routed_lab() -> Iterator[Lab]:
    """client -- fw -- server (see nfkit.lab.three_node); removed after the test."""
    require_kernel()
    with three_node("nkt") as new_lab:
        yield new_lab


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture(scope="session")
def nobody_nfkit() -> Iterator[list[str]]:
    """The argv that runs `nfkit` as nobody (uid 65534).

    The checkout and its .venv may sit where nobody cannot go (a clone in
    /root, mode 0700), so nfkit's source and the packages it imports are copied
    to a world-readable temporary directory, run by the interpreter itself.
    """
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed to run as nobody"
    base = Path(tempfile.mkdtemp(prefix="nfkit-nobody-"))
    base.chmod(0o755)
    unneeded = shutil.ignore_patterns("mypy*", "*mypyc*", "pip", "pip-*", "hypothesis*", "_pytest",
                                      "pytest*", "__editable__*", "*.pth", "__pycache__", "nfkit*")
    shutil.copytree(sysconfig.get_paths()["purelib"], base / "site", ignore=unneeded)
    shutil.copytree(Path(nfkit.__file__).parent, base / "site" / "nfkit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for root, dirs, files in os.walk(base):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    # the first interpreter nobody may run: the venv's own path, what it points to, the system's
    for python in (sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"):
        if subprocess.run([*NOBODY, "env", python, "-c", "pass"], capture_output=True).returncode == 0:
            break
    else:
        pytest.fail("no Python interpreter that nobody may run")
    yield [*NOBODY, "env", f"PYTHONPATH={base / 'site'}", "PYTHONNOUSERSITE=1",
           "PYTHONDONTWRITEBYTECODE=1", python, "-m", "nfkit"]
    shutil.rmtree(base, ignore_errors=True)


def interruptible() -> None:
    """preexec_fn of a child that a test will Ctrl-C: SIGINT as in a terminal.

    A shell that runs its commands in the background (CI's, the fresh machine's)
    starts them with SIGINT ignored, and Python then installs no handler for it
    in its children; a user's terminal does not.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
