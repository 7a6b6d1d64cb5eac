"""How matches are written: grep-like lines (with context), vim and emacs
quickfix lines, JSON lines.

This module owns every output format of cgrep and nothing else; it reads
source lines only to print context.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from nfkit.cgrep.search import Match

FORMATS = ("grep", "vim", "emacs", "json")
_PATH = "\033[35m"
_NUMBER = "\033[32m"
_SEPARATOR = "\033[36m"
_MATCH = "\033[1;31m"
_RESET = "\033[0m"


def _describe(match: Match) -> str:
    star = "*" if match.pointer else ""
    return f"({match.ctype} {star}{match.expression})"


def _highlight(match: Match, color: bool) -> str:
    code = match.code
    if not color:
        return code
    start = match.column - 1
    end = match.end_column - 1 if match.end_line == match.line else len(code)
    return code[:start] + _MATCH + code[start:end] + _RESET + code[end:]


def _tag(match: Match, labelled: bool) -> str:
    parts = []
    if labelled:
        parts.append(f"[{match.ctype}:{match.attribute or ''}:{match.operation}]")
    if match.loose:
        parts.append("[loose]")
    return " ".join(parts) + " " if parts else ""


def format_match(match: Match, style: str = "grep", color: bool = False,
                 labelled: bool = False) -> str:
    """One match as one line in ``style`` (grep, vim, emacs or json)."""
    if style == "json":
        return json.dumps(match.as_json(), ensure_ascii=False)
    if style == "vim":
        return (f"{match.path}|{match.line} col {match.column}| {_tag(match, labelled)}"
                f"{_describe(match)}: {match.code}")
    if style == "emacs":
        return (f"{match.path}:{match.line}:{match.column}: {_tag(match, labelled)}"
                f"{_describe(match)}: {match.code}")
    if color:
        return (f"{_PATH}{match.path}{_RESET}{_SEPARATOR}:{_RESET}{_NUMBER}{match.line}{_RESET}"
                f"{_SEPARATOR}:{_RESET}{_NUMBER}{match.column}{_RESET}{_SEPARATOR}:{_RESET} "
                f"{_tag(match, labelled)}{_highlight(match, True)}")
    return f"{match.path}:{match.line}:{match.column}: {_tag(match, labelled)}{match.code}"


def with_context(matches: list[Match], lines: list[str], before: int, after: int,
                 color: bool = False, labelled: bool = False) -> Iterator[str]:
    """Matches of one file (in line order) with grep-style context lines.

    Context lines read ``path-N-text``; ``--`` separates groups that do not touch.
    ``lines`` is the file's text split into lines.
    """
    if not matches:
        return
    path = matches[0].path
    by_line: dict[int, list[Match]] = {}
    for match in matches:
        by_line.setdefault(match.line, []).append(match)
    groups: list[list[int]] = []
    for line in sorted(by_line):
        first, last = max(1, line - before), min(len(lines), line + after)
        if groups and first <= groups[-1][1] + 1:
            groups[-1][1] = max(groups[-1][1], last)
        else:
            groups.append([first, last])
    separator = f"{_SEPARATOR}--{_RESET}" if color else "--"
    for index, (first, last) in enumerate(groups):
        if index:
            yield separator
        for number in range(first, last + 1):
            if number in by_line:
                for match in by_line[number]:
                    yield format_match(match, "grep", color, labelled)
            else:
                text = lines[number - 1] if number - 1 < len(lines) else ""
                if color:
                    yield (f"{_PATH}{path}{_RESET}{_SEPARATOR}-{_RESET}{_NUMBER}{number}"
                           f"{_RESET}{_SEPARATOR}-{_RESET} {text}")
                else:
                    yield f"{path}-{number}- {text}"
