"""The parser tables shipped with nfkit (nftables/nft_lalr.py) are nft.lark's: the
parser loaded from them reads every file of the corpus as the one lark builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lark
import pytest

from nfkit.nftables import lalrtables, nft_lalr, nfttext

HERE = Path(__file__).parent
CORPUS = sorted([*HERE.glob("rulesets/*.nft"), *HERE.glob("nft/**/*.nft")])


def _same_lark() -> None:
    """The lark nfkit pins (pyproject.toml) is the one the tables were made by: with
    another, the reader would build the parser at each load again (slower, not wrong)."""
    assert nft_lalr.LARK_VERSION == lark.__version__, (
        f"tables made by lark {nft_lalr.LARK_VERSION}, lark {lark.__version__} installed: "
        "pin that lark in pyproject.toml or run `python -m nfkit.nftables.lalrtables`")


def test_the_shipped_tables_are_this_grammars() -> None:
    assert nft_lalr.GRAMMAR == lalrtables.grammar_text(), (
        "nft.lark changed: run `python -m nfkit.nftables.lalrtables` and commit "
        "src/nfkit/nftables/nft_lalr.py")
    _same_lark()
    assert lalrtables.shipped(lalrtables.grammar_text()) is not None
    # and the reader uses them (a parser built from the grammar has its source path)
    assert nfttext._make_parser(True).source_path == "<deserialized>"


def test_tables_of_another_grammar_or_lark_are_not_used(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    grammar = lalrtables.grammar_text()
    assert lalrtables.shipped(grammar + "\n// changed\n") is None
    monkeypatch.setattr(lark, "__version__", "0.0.1")
    assert lalrtables.shipped(grammar) is None


def _reading(parser: Any, text: str) -> Any:
    try:
        return parser.parse(text, start="start")
    except lark.exceptions.LarkError as exc:
        # where and what (the text lists the expected tokens in set order, which
        # changes from one process to the next)
        tok = getattr(exc, "token", None)
        expected = getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ()
        return (type(exc).__name__, getattr(exc, "line", None), getattr(exc, "column", None),
                None if tok is None else (tok.type, str(tok)), sorted(expected))


@pytest.mark.parametrize("line_lexer", [True, False])
def test_the_shipped_parser_reads_the_corpus_as_the_built_one(line_lexer: bool) -> None:
    assert len(CORPUS) > 40
    _same_lark()
    grammar = lalrtables.grammar_text()
    shipped = lalrtables.shipped(grammar)
    built = lark.Lark(grammar, **lalrtables.OPTIONS)
    if line_lexer:
        nfttext._install_line_lexer(shipped)
        nfttext._install_line_lexer(built)
        # (lark numbers its states in another order at each build: their count)
        assert len(shipped.parser.lexer.line_states) == len(built.parser.lexer.line_states)
        assert shipped.parser.lexer.scanner.pattern == built.parser.lexer.scanner.pattern
    for path in CORPUS:
        text = path.read_text()
        assert _reading(shipped, text) == _reading(built, text), path
