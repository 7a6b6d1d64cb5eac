"""Test harness: namespaces for kernel tests, and the rule that CI never skips them.

A test that needs the kernel asks for the `netns` or `lab` fixture (or is
marked `kernel`).  Without root it is skipped with the reason, unless CI=true,
where it fails: CI must not pass by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

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
