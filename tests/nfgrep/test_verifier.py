"""The verifier refuses crafted and corrupted programs; what it admits runs within its bound."""

from __future__ import annotations

import re
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfkit.errors import InputError
from nfkit.nfgrep.bytecode import HEADER, OPCODES, Instr, decode, encode
from nfkit.nfgrep.compiler import compile_file, compile_text
from nfkit.nfgrep.engine import signatures_of
from nfkit.nfgrep.errors import VerifierError
from nfkit.nfgrep.loader import SIGNATURES
from nfkit.nfgrep.verifier import MAX_STEP_COST, verify

SMALL = '''
protocol p over tcp {
    step a from client {
        "AB" at 0
        let n = u8
        repeat up to 8 within n { u8 != 0 }
        find "\\r\\n" within 64
    }
}
'''


def program_with(code: list[Instr]):  # type: ignore[no-untyped-def]
    program = compile_text(SMALL, "crafted.nfgb")
    program.protocols[0].steps[0].code = code
    return program


OP = OPCODES


@pytest.mark.parametrize("code, words", [
    ([Instr(0x7F)], "unknown opcode 0x7f"),
    ([Instr(OP["CMP"], 0)], "pops 2 value(s) from a stack of 0"),
    ([Instr(OP["PUSH_INT"], 0)], "left on the stack"),
    ([Instr(OP["PUSH_INT"], 999), Instr(OP["SKIP"])], "integer 999 is not in the pool"),
    ([Instr(OP["PUSH_VAR"], 5), Instr(OP["SKIP"])], "variable 5 is not declared"),
    ([Instr(OP["MATCH"], 77, 0)], "literal set 77 is not in the pool"),
    ([Instr(OP["READ"], 9, 0, 0), Instr(OP["SKIP"])], "width 9"),
    ([Instr(OP["FIND"], 0, 70000, 0)], "search bound 70000"),
    ([Instr(OP["FIND"], 0, 0, 0)], "search bound 0"),
    ([Instr(OP["LOOP_BEGIN"], 0, 0), Instr(OP["LOOP_END"])], "repeat bound 0"),
    ([Instr(OP["LOOP_BEGIN"], 100000, 0), Instr(OP["LOOP_END"])], "repeat bound 100000"),
    ([Instr(OP["LOOP_BEGIN"], 8, 0)], "never closed"),
    ([Instr(OP["OPT_END"])], "without its OPT_BEGIN"),
    ([Instr(OP["OPT_BEGIN"]), Instr(OP["LOOP_END"])], "without its LOOP_BEGIN"),
    ([Instr(OP["PUSH_INT"], 0), Instr(OP["OPT_BEGIN"]), Instr(OP["OPT_END"]), Instr(OP["SKIP"])],
     "OPT_BEGIN with 1 value(s) left"),
    ([Instr(OP["PUSH_INT"], 0)] * 17, "stack deeper than 16"),
    ([Instr(OP["LOOP_BEGIN"], 1)] * 9 + [Instr(OP["LOOP_END"])] * 9, "nested deeper than 8"),
    # nested repeats whose product of bounds with a 64 KiB search exceeds the cost bound
    ([Instr(OP["LOOP_BEGIN"], 256), Instr(OP["LOOP_BEGIN"], 256), Instr(OP["FIND"], 0, 65536, 0),
      Instr(OP["LOOP_END"]), Instr(OP["LOOP_END"])], "cost bound over"),
    ([Instr(OP["KEEP_UNTIL"], 0, 0, 5000)], "search bound 5000"),
    ([Instr(OP["EXPECT"], 0, 3, 0)], "transport 3"),
    ([Instr(OP["DECIMAL"], 0), Instr(OP["SKIP"])], "0 digits"),
    ([Instr(OP["BINOP"], 9)], "operator 9"),
])
def test_crafted_programs_are_refused(code: list[Instr], words: str) -> None:
    program = decode(encode(program_with(code)), "crafted.nfgb")
    with pytest.raises(VerifierError, match=re.escape(words)) as info:
        verify(program)
    assert "crafted.nfgb: protocol p step a" in str(info.value)
    assert str(info.value).endswith("program refused")


def test_bad_pools_and_names_are_refused() -> None:
    program = compile_text(SMALL, "x")
    program.sets[0].strings.append(999)
    with pytest.raises(VerifierError, match="string 999 is missing"):
        verify(program)
    program = compile_text(SMALL, "x")
    program.strings[program.protocols[0].name] = b"bad name!"
    with pytest.raises(VerifierError, match="not a valid name"):
        verify(program)
    program = compile_text(SMALL, "x")
    program.protocols[0].steps[0].watch = True
    with pytest.raises(VerifierError, match="first step is a watch"):
        verify(program)


def _reseal(payload: bytes) -> bytes:
    """A header with the right length and checksum, so mutations reach the decoder/verifier."""
    return HEADER.pack(b"NFGB", 1, 0, len(payload), zlib.crc32(payload)) + payload


LIBRARY = [encode(compile_file(p)) for p in sorted(SIGNATURES.glob("*.nfg"))]
LIBRARY.append(encode(compile_text(SMALL, "small")))


def _run_within_bound(blob: bytes, payloads: list[bytes]) -> None:
    try:
        verified = verify(decode(blob, "mutant.nfgb"))
    except InputError:
        return  # refused with a reason: fine
    for sig in signatures_of(verified, counting=True):
        for step in sig.steps + sig.watches:
            for data in payloads:
                for final in (False, True):
                    counter = [0]
                    r = step.fn(data, 0, len(data), final, [0] * sig.nvars, [], [], counter)
                    assert isinstance(r, int) and r >= -3 and r <= len(data)
                    assert counter[0] <= step.cost <= MAX_STEP_COST


payload_strategy = st.lists(st.binary(max_size=300), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(LIBRARY) - 1),
       flips=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(1, 255)), min_size=1,
                      max_size=6),
       payloads=payload_strategy)
def test_mutated_programs_are_refused_or_bounded(which: int, flips: list[tuple[int, int]],
                                                 payloads: list[bytes]) -> None:
    blob = LIBRARY[which]
    payload = bytearray(blob[HEADER.size:])
    for at, xor in flips:
        payload[at % len(payload)] ^= xor
    _run_within_bound(_reseal(bytes(payload)), payloads)


@settings(max_examples=60, deadline=None)
@given(which=st.integers(0, len(LIBRARY) - 1), cut=st.integers(0, 1 << 20),
       junk=st.binary(max_size=40), payloads=payload_strategy)
def test_cut_and_spliced_programs_are_refused_or_bounded(which: int, cut: int, junk: bytes,
                                                         payloads: list[bytes]) -> None:
    payload = LIBRARY[which][HEADER.size:]
    cut %= len(payload)
    _run_within_bound(_reseal(payload[:cut] + junk + payload[cut + len(junk):]), payloads)
    _run_within_bound(_reseal(payload[:cut]), payloads)


@settings(max_examples=100, deadline=None)
@given(code=st.lists(st.tuples(st.sampled_from(sorted(OP.values())), st.integers(0, 40),
                               st.integers(0, 3), st.integers(0, 3)), max_size=24),
       payloads=payload_strategy)
def test_random_instruction_streams_are_refused_or_bounded(
        code: list[tuple[int, int, int, int]], payloads: list[bytes]) -> None:
    program = program_with([Instr(*c) for c in code])
    _run_within_bound(encode(program), payloads)


def test_worst_case_loop_stays_within_its_bound() -> None:
    text = '''protocol p over tcp { step a from client {
        repeat up to 256 { repeat up to 256 { optional { u8 == 0 } ; u8 != 1 } ; u8 != 2 }
    } }'''
    verified = verify(compile_text(text))
    (sig,) = signatures_of(verified, counting=True)
    data = bytes(70000)
    counter = [0]
    sig.steps[0].fn(data, 0, len(data), True, [0], [], [], counter)
    assert 0 < counter[0] <= verified.costs[(0, 0)]


def test_offsets_cannot_reach_before_the_step_start() -> None:
    # 0 - 1 wraps to 2**64 - 1: the read is refused, never a negative index into the data
    text = 'protocol p over tcp { step a from client { skip 4 ; u8 at (0 - 1) == 0x41 } }'
    (sig,) = signatures_of(verify(compile_text(text)))
    data = b"AAAAAAAA"
    assert sig.steps[0].fn(data, 4, len(data), True, [], [], [], [0]) == -1
    packed = struct.pack(">Q", 1)
    assert sig.steps[0].fn(packed, 0, 8, True, [], [], [], [0]) == -1


def test_step_costs_are_the_sum_of_the_opcode_tables_costs() -> None:
    """One truth for costs: OpInfo.cost, summed by the verifier, counted by generated code."""
    from nfkit.nfgrep.bytecode import OPS

    for path in sorted(SIGNATURES.glob("*.nfg")):
        program = compile_file(path)
        verified = verify(program)
        for pi, proto in enumerate(program.protocols):
            for si, step in enumerate(proto.steps):
                if any(OPS[i.op].name in ("OPT_BEGIN", "LOOP_BEGIN") for i in step.code):
                    continue  # blocks multiply: covered by the worst-case loop test
                flat = sum(OPS[i.op].cost(program, i.a, i.b, i.c) for i in step.code)
                assert verified.costs[(pi, si)] == flat, (path.name, si)
    find = program_with([Instr(OP["FIND"], 0, 100, 0)])
    assert OPS[OP["FIND"]].cost(find, 0, 100, 0) == 1 + 1 * (100 + 255)
