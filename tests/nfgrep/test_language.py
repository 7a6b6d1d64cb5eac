"""Parser, checker, compiler, bytecode format and disassembler."""

from __future__ import annotations

import pytest

from nfkit.errors import InputError
from nfkit.nfgrep.bytecode import decode, disassemble, encode
from nfkit.nfgrep.compiler import compile_text
from nfkit.nfgrep.engine import Engine, signatures_of
from nfkit.nfgrep.errors import BytecodeError, NfgrepSyntaxError
from nfkit.nfgrep.loader import SIGNATURES, load_rules
from nfkit.nfgrep.parser import parse_rules
from nfkit.nfgrep.verifier import verify


def error_of(text: str) -> NfgrepSyntaxError:
    with pytest.raises(NfgrepSyntaxError) as info:
        parse_rules(text, "t.nfg")
    return info.value


@pytest.mark.parametrize("text, line, col, words", [
    ('protocol x over tcp {\n  step a from client {\n    "abc" at 0 1\n  }\n}\n', 3, 16,
     "end of the statement"),
    ("protocol x over icmp { }", 1, 17, "transport 'tcp' or 'udp'"),
    ('protocol x over tcp {\n step a from somewhere { }\n}', 2, 14, "'client', 'server'"),
    ('protocol x over tcp {\n step a from client {\n  u16 at 0 == 1\n }\n}', 3, 3,
     "u16be"),
    ('protocol x over tcp {\n step a from client {\n  find "x"\n }\n}', 3, 11,
     "every search is bounded"),
    ('protocol x over tcp {\n step a from client {\n  find "x" within 100000\n }\n}', 3, 19,
     "out of range"),
    ('protocol x over tcp {\n step a from client {\n  n == 1\n }\n}', 3, 3,
     "unknown variable 'n'"),
    ('protocol x over tcp {\n step a from client {\n  let a = 1\n  a-b == 1\n }\n}', 4, 3,
     "a - b with spaces"),
    ('protocol x over tcp {\n step a from client {\n  "ab\\q"\n }\n}', 3, 6, "unknown escape"),
    ('protocol x over tcp {\n step a from client {\n  "abc\n }\n}', 3, 3, "not closed"),
    ('protocol x over tcp {\n watch w from client { "a" }\n}', 1, 1, "has no step"),
    ('protocol x over tcp {\n step a from client { "a" }\n watch w from client { "a" }\n'
     ' step b from client { "b" }\n}', 4, 2, "after a watch"),
    ('protocol x over tcp {\n step a from client { "a" }\n step a from server { "b" }\n}',
     3, 2, "already declared at 2:2"),
    ('protocol x over tcp { step a from client { repeat up to 1000 { "a" } } }', 1, 57,
     "repeat bound 1000 is out of range"),
    ('protocol x over tcp { step a from client { "a", "b" at 0 } }', 1, 47, "any of"),
    ('protocol x over tcp { step a from client { "" at 0 } }', 1, 44, "empty"),
    ('protocol x over tcp { step a from client { u8 at 0 } }', 1, 52, "comparison"),
    ('protocol x over tcp { step a from client { "a" }', 1, 49, "not closed"),
    ('protocol x over tcp { step a from client { "a" } }\n'
     'protocol x over tcp { step a from client { "a" } }', 2, 1, "already declared at 1:1"),
    ('protocol x over tcp { step a from client { u8 in 5..1 } }', 1, 50, "empty range"),
])
def test_errors_point_at_line_and_column(text: str, line: int, col: int, words: str) -> None:
    err = error_of(text)
    assert (err.line, err.col) == (line, col), str(err)
    assert words in str(err)
    assert str(err).startswith(f"t.nfg:{line}:{col}: ")
    assert isinstance(err, InputError)


def test_whole_grammar_compiles_and_round_trips() -> None:
    text = r'''
    # every statement form once
    protocol demo over tcp, udp ports 1, 65535 {
        step first from either {
            any of "AB", "CD" nocase at 0
            "x\x00\r\n\t\\\""
            find any of "a", "b" within 10 before "\r\n"
            let v = u16be at 2 + 1 * 2 - (u8 << 1 >> 1 & 0xff | 3)
            u64le at here == 0x_ff
            v in 0..10
            at v
            skip 1
            keep one until ";" within 32
            keep two bytes 2
            keep three = length as { 1: "one", 2: "two" }
            keep four labels
            expect other over udp to (1, 2, 3, 4) port v
            expect other over tcp to server port 21
            optional { give up }
            field sni is any of "a", "b" nocase
            repeat up to 4 within 8 { u8 != decimal }
            repeat up to 2 { "z" }
        }
        watch w from server { find "\n" within 100 }
    }
    protocol child over tcp after demo { step s from client { u24le at 0 >= length } }
    '''
    program = compile_text(text, "demo.nfg")
    blob = encode(program)
    again = decode(blob, "demo.nfgb")
    assert encode(again) == blob
    assert again.protocols == program.protocols
    assert again.strings == program.strings and again.ints == program.ints
    verified = verify(again)
    listing = disassemble(again, verified.costs)
    for word in ("protocol 'demo' over tcp, udp ports 1, 65535", "after 'demo'", "LOOP_BEGIN",
                 "KEEP_LABELS", "EXPECT", "GIVEUP", "FIELD_IS", "FIND", "nocase", "before '\\r\\n'",
                 "watch 'w' from server", "cost bound", "width 8 le"):
        assert word in listing, word
    # blocks are indented in the listing, as re.DEBUG does
    lines = listing.splitlines()
    inner = next(i for i, line in enumerate(lines) if "['z']" in line)
    assert "LOOP_BEGIN" in lines[inner - 1]
    assert lines[inner].index("MATCH") == lines[inner - 1].index("LOOP_BEGIN") + 2
    signatures_of(verified)


def test_shipped_library_round_trips_through_nfgb(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from nfkit.nfgrep.compiler import compile_file

    for source in sorted(SIGNATURES.glob("*.nfg")):
        blob = encode(compile_file(source))
        target = tmp_path / (source.stem + ".nfgb")
        target.write_bytes(blob)
        assert encode(decode(target.read_bytes())) == blob
    from_text = load_rules(None)
    from_bytecode = load_rules(tmp_path)
    assert sorted(s.name for s in from_text) == sorted(s.name for s in from_bytecode)
    e1, e2 = Engine(from_text), Engine(from_bytecode)
    for engine in (e1, e2):
        st = engine.new_flow("tcp", 5000, 8080)
        engine.feed(st, 0, b"GET / HTTP/1.0\r\nHost: h\r\n\r\n")
        engine.feed(st, 1, b"HTTP/1.0 200 OK\r\n\r\n")
        assert (st.app, st.fields) == ("http", {"method": "GET", "host": "h"})


def test_bad_files_are_refused_with_a_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    blob = encode(compile_text('protocol x over tcp { step a from client { "a" } }'))
    cases = {
        b"XXXX" + blob[4:]: "not an nfgrep program",
        blob[:4] + b"\x09\x00" + blob[6:]: "version 9 is not supported",
        blob[:-1] + bytes([blob[-1] ^ 1]): "checksum mismatch",
        blob[:-3]: "payload is",
        blob[:8]: "too short",
    }
    for data, words in cases.items():
        with pytest.raises(BytecodeError, match=words):
            decode(data, "x.nfgb")
    missing = tmp_path / "none.nfg"
    with pytest.raises(InputError, match="no such rule file"):
        load_rules([missing])


def test_a_protocol_loaded_twice_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from nfkit.nfgrep.compiler import compile_file

    (tmp_path / "ssh.nfgb").write_bytes(encode(compile_file(SIGNATURES / "ssh.nfg")))
    (tmp_path / "ssh.nfg").write_text((SIGNATURES / "ssh.nfg").read_text())
    with pytest.raises(InputError, match="protocol ssh over tcp is loaded twice"):
        Engine(load_rules(tmp_path))


def test_after_an_unknown_protocol_is_refused_at_load() -> None:
    program = compile_text('protocol x over tcp after nothing { step a from client { "a" } }')
    with pytest.raises(InputError, match="no loaded protocol is named nothing"):
        Engine(signatures_of(verify(program)))
