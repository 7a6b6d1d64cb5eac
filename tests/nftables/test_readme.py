"""The README's Python example runs as written (in a namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _rules_example() -> str:
    text = README.read_text()
    section = text[text.index("## rules:"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.mark.kernel
def test_readme_example_runs(netns, capsys) -> None:  # type: ignore[no-untyped-def]
    with netns.enter():
        exec(compile(_rules_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[-3:] == ["False", "True", "1000 changes"]
    listed = netns.run("nft list chain inet fw input").stdout
    rules = [ln for ln in listed.splitlines() if ln.startswith("\t\t") and "hook" not in ln]
    assert len(rules) == 2  # three rules kept by apply, then the last one deleted
    assert 'comment "ssh from admins"' in rules[1]
