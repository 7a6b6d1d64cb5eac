"""The rule compiler's kernel capabilities come in as arguments, not globals."""

from __future__ import annotations

from nfkit.netlink.codec import Batch
from nfkit.nftables.compiler import RuleCompiler
from nfkit.nftables.expressions import parse_exprs
from nfkit.nftables.messages import Encoder
from nfkit.nftables.model import Rule

QUEUE = [{"queue": {"num": 3}}]


def _names(exprs: list[bytes]) -> list[str]:
    return [name for name, _ in parse_exprs(b"".join(exprs))]


def test_queue_expression_by_default() -> None:
    exprs, _ = RuleCompiler("ip", "t").compile(QUEUE)
    assert _names(exprs) == ["queue"]


def test_queue_mode_is_asked_only_for_a_queue_statement() -> None:
    asked: list[int] = []

    def mode() -> str:
        asked.append(1)
        return "xt"

    rc = RuleCompiler("ip", "t", queue_mode=mode)
    rc.compile([{"accept": None}])
    assert asked == []
    exprs, _ = rc.compile(QUEUE)
    assert _names(exprs) == ["target"] and asked == [1]
    # two compilers in one process keep their own answer (no process-wide state)
    assert _names(RuleCompiler("ip", "t").compile(QUEUE)[0]) == ["queue"]


def test_encoder_passes_queue_mode_to_its_compilers() -> None:
    enc = Encoder(Batch(), queue_mode=lambda: "xt")
    exprs, _ = enc.rule_exprs(Rule("ip", "t", "c", QUEUE))
    assert _names(exprs) == ["target"]
