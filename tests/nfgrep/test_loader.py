"""The loader's cache: keyed on the compiler's version, never read from a file others may write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nfkit.nfgrep import bytecode, loader
from nfkit.nfgrep.bytecode import encode
from nfkit.nfgrep.compiler import compile_text

RULE = 'protocol mine over tcp { step a from client { "a" } }\n'
PLANTED = 'protocol planted over tcp { step a from client { "b" } }\n'


def _name(program) -> str:  # type: ignore[no-untyped-def]
    return program.text(program.protocols[0].name)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NFKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_compiled_file_is_cached_privately_and_used(tmp_path: Path, cache: Path) -> None:
    source = tmp_path / "mine.nfg"
    source.write_text(RULE)
    assert _name(loader.load_program(source)) == "mine"
    entry = cache / f"{loader.cache_key(source.read_bytes())}.nfgb"
    assert entry.stat().st_mode & 0o777 == 0o600 and cache.stat().st_mode & 0o777 == 0o700
    entry.write_bytes(encode(compile_text(PLANTED, "x")))
    assert _name(loader.load_program(source)) == "planted"  # the entry is what is read


@pytest.mark.parametrize("mode", [0o620, 0o602])
def test_an_entry_others_may_write_is_ignored(tmp_path: Path, cache: Path, mode: int) -> None:
    source = tmp_path / "mine.nfg"
    source.write_text(RULE)
    loader.load_program(source)
    entry = cache / f"{loader.cache_key(source.read_bytes())}.nfgb"
    entry.write_bytes(encode(compile_text(PLANTED, "x")))
    os.chmod(entry, mode)
    assert _name(loader.load_program(source)) == "mine"


def test_a_symlinked_entry_is_ignored(tmp_path: Path, cache: Path) -> None:
    source = tmp_path / "mine.nfg"
    source.write_text(RULE)
    loader.load_program(source)
    entry = cache / f"{loader.cache_key(source.read_bytes())}.nfgb"
    planted = tmp_path / "planted.nfgb"
    planted.write_bytes(encode(compile_text(PLANTED, "x")))
    entry.unlink()
    entry.symlink_to(planted)
    assert _name(loader.load_program(source)) == "mine"


def test_the_cache_is_keyed_on_the_compiler_version(tmp_path: Path, cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    text = RULE.encode()
    key = loader.cache_key(text)
    monkeypatch.setattr(loader, "COMPILER_VERSION", loader.COMPILER_VERSION + 1)
    assert loader.cache_key(text) != key
    monkeypatch.setattr(loader, "COMPILER_VERSION", loader.COMPILER_VERSION - 1)
    assert loader.cache_key(text) == key


def test_an_entry_owned_by_someone_else_is_ignored(tmp_path: Path, cache: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("giving a file to another user needs root (the kernel tests run as root)")
    source = tmp_path / "mine.nfg"
    source.write_text(RULE)
    loader.load_program(source)
    entry = cache / f"{loader.cache_key(source.read_bytes())}.nfgb"
    entry.write_bytes(encode(compile_text(PLANTED, "x")))
    os.chown(entry, 65534, 65534)  # nobody
    assert _name(loader.load_program(source)) == "mine"


def test_the_compiler_revision_travels_in_the_file_and_an_entry_of_another_is_not_used(
        tmp_path: Path, cache: Path) -> None:
    program = compile_text(RULE, "x")
    assert program.compiler == bytecode.COMPILER_VERSION
    blob = encode(program)
    assert bytecode.HEADER.unpack_from(blob)[2] == bytecode.COMPILER_VERSION
    assert bytecode.decode(blob).compiler == bytecode.COMPILER_VERSION
    assert f"(compiler {bytecode.COMPILER_VERSION})" in bytecode.disassemble(bytecode.decode(blob))
    # an entry under the right key, but written by another compiler revision: recompiled
    source = tmp_path / "mine.nfg"
    source.write_text(RULE)
    loader.load_program(source)
    entry = cache / f"{loader.cache_key(source.read_bytes())}.nfgb"
    other = compile_text(PLANTED, "x")
    other.compiler = bytecode.COMPILER_VERSION + 1
    entry.write_bytes(encode(other))
    assert bytecode.decode(entry.read_bytes()).compiler == bytecode.COMPILER_VERSION + 1
    assert _name(loader.load_program(source)) == "mine"
    # files written before the revision was recorded read as compiler 0, and still load
    old = bytearray(encode(compile_text(RULE, "x")))
    old[6:8] = b"\0\0"
    assert bytecode.decode(bytes(old)).compiler == 0
