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


# -- the cache of translated rule sets (load_rules) ---------------------------------------

RULES_TWO = 'protocol two over tcp { step a from client { "a" } step b from server { "b" } }\n'


def _rules_entry(cache: Path, files: list[Path]) -> Path:
    key = loader.rules_key(files)
    assert key is not None
    return cache / f"{key}.rules"


def _entry_of(key: str, rules: list) -> bytes:  # type: ignore[type-arg]
    """An entry as load_rules writes it, holding ``rules`` under ``key``."""
    import hashlib
    import marshal

    from nfkit.nfgrep.engine import record_of

    payload = marshal.dumps((key, [record_of(s) for s in rules]))
    return loader._RULES_MAGIC + hashlib.sha256(payload).digest() + payload


def _same(a: list, b: list) -> None:  # type: ignore[type-arg]
    """Two loads gave the same signatures: every attribute, every step's code and constants."""
    assert [type(s) for s in a] == [type(s) for s in b]
    for x, y in zip(a, b, strict=True):
        vx, vy = dict(vars(x)), dict(vars(y))
        sx, sy = vx.pop("steps") + vx.pop("watches"), vy.pop("steps") + vy.pop("watches")
        assert vx == vy
        for p, q in zip(sx, sy, strict=True):
            assert (p.name, p.watch, p.direction, p.cost, p.source) == (q.name, q.watch, q.direction,
                                                                         q.cost, q.source)
            assert p.fn.__code__ == q.fn.__code__ and p.fn.__defaults__ == q.fn.__defaults__
            assert p.fn.__globals__.keys() == q.fn.__globals__.keys()
            assert {k: v for k, v in p.fn.__globals__.items() if k != "__builtins__"} == \
                {k: v for k, v in q.fn.__globals__.items() if k != "__builtins__"}


def test_the_shipped_library_from_the_cache_is_the_library(cache: Path) -> None:
    for counting in (False, True):
        fresh = loader.load_rules(None, counting=counting)  # written
        entry = _rules_entry(cache, loader.rule_files(None)) if not counting else None
        assert entry is None or entry.stat().st_mode & 0o777 == 0o600
        cached = loader.load_rules(None, counting=counting)  # read
        _same(fresh, cached)
    assert loader.rules_key(loader.rule_files(None), True) != loader.rules_key(loader.rule_files(None))
    # and it classifies the same: one conversation through both
    from nfkit.nfgrep.engine import Engine

    for rules in (fresh, cached):
        engine = Engine(rules)
        st = engine.new_flow(transport="tcp", client_port=40000, server_port=80)
        engine.feed(st, 0, b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n")
        engine.feed(st, 1, b"HTTP/1.1 200 OK\r\n\r\n")
        assert (st.app, st.fields.get("host")) == ("http", "example.org")


def test_a_rules_entry_is_what_is_read(tmp_path: Path, cache: Path) -> None:
    source = tmp_path / "mine.nfg"
    source.write_text(RULE)
    assert [s.name for s in loader.load_rules(source)] == ["mine"]
    entry = _rules_entry(cache, [source])
    planted = tmp_path / "planted.nfg"
    planted.write_text(PLANTED)
    entry.write_bytes(_entry_of(entry.stem, loader.load_rules(planted)))
    assert [s.name for s in loader.load_rules(source)] == ["planted"]


def _damaged(blob: bytes, key: str, other_key: str) -> dict[str, bytes]:
    head = len(loader._RULES_MAGIC) + 32
    flipped = bytearray(blob)
    flipped[-5] ^= 0x40
    import hashlib
    import marshal

    return {
        "truncated": blob[:-100],
        "a byte flipped": bytes(flipped),
        "empty": b"",
        "header only": blob[:head],
        "another magic": b"nfgrep rules 0\n" + blob[len(loader._RULES_MAGIC):],
        "another key inside": _entry_of(other_key, []),
        # digest right, contents not a record: made by no nfkit
        "not records": loader._RULES_MAGIC + hashlib.sha256(p := marshal.dumps((key, [(1, 2)]))).digest() + p,
        "not marshal": loader._RULES_MAGIC + hashlib.sha256(b"\xff\xfe").digest() + b"\xff\xfe",
    }


def _loaded(tmp_path: Path, cache: Path) -> tuple[Path, Path]:
    """A rule file loaded (so cached) and its rules entry."""
    source = tmp_path / "mine.nfg"
    source.write_text(RULE)
    loader.load_rules(source)
    return source, _rules_entry(cache, [source])


def _mine_and_planted(tmp_path: Path, cache: Path) -> tuple[Path, Path, bytes]:
    """A rule file loaded (so cached), its rules entry, and an entry of other rules (the
    planted ones) made for that entry's name: (rule file, entry, planted entry's bytes)."""
    source, entry = _loaded(tmp_path, cache)
    planted = tmp_path / "planted.nfg"
    planted.write_text(PLANTED)
    return source, entry, _entry_of(entry.stem, loader.load_rules(planted))


def test_a_damaged_rules_entry_is_not_used_and_is_written_again(tmp_path: Path, cache: Path) -> None:
    source, entry, planted_entry = _mine_and_planted(tmp_path, cache)
    for why, blob in _damaged(planted_entry, entry.stem, "0" * 64).items():
        entry.write_bytes(blob)
        assert [s.name for s in loader.load_rules(source)] == ["mine"], why
        kept = loader._cached_rules(entry, entry.stem)  # written again, good
        assert kept is not None and [s.name for s in kept] == ["mine"], why


def test_a_changed_rule_file_is_a_new_rules_entry(tmp_path: Path, cache: Path) -> None:
    source, first = _loaded(tmp_path, cache)
    source.write_text(RULES_TWO)
    assert [(s.name, len(s.steps)) for s in loader.load_rules(source)] == [("two", 2)]
    assert _rules_entry(cache, [source]) != first and first.exists()
    # the same text under another name: another entry too (the name is the signatures' origin)
    other = tmp_path / "other.nfg"
    other.write_text(RULES_TWO)
    assert [s.origin for s in loader.load_rules(other)] == [str(other)]


@pytest.mark.parametrize("mode", [0o620, 0o602])
def test_a_rules_entry_others_may_write_is_ignored(tmp_path: Path, cache: Path, mode: int) -> None:
    source, entry, planted_entry = _mine_and_planted(tmp_path, cache)
    entry.write_bytes(planted_entry)
    os.chmod(entry, mode)
    assert [s.name for s in loader.load_rules(source)] == ["mine"]


def test_a_linked_or_foreign_rules_entry_is_ignored(tmp_path: Path, cache: Path) -> None:
    source, entry, blob = _mine_and_planted(tmp_path, cache)
    elsewhere = tmp_path / "elsewhere.rules"
    elsewhere.write_bytes(blob)
    entry.unlink()
    entry.symlink_to(elsewhere)
    assert [s.name for s in loader.load_rules(source)] == ["mine"]
    entry.unlink()
    os.link(elsewhere, entry)  # a second name: someone else's file may be behind it
    assert [s.name for s in loader.load_rules(source)] == ["mine"]
    if os.geteuid() != 0:
        pytest.fail("giving a file to another user needs root (the kernel tests run as root)")
    entry.unlink()
    entry.write_bytes(blob)
    os.chown(entry, 65534, 65534)
    assert [s.name for s in loader.load_rules(source)] == ["mine"]


def test_the_rules_key_covers_versions_and_the_whole_pipeline(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    import nfkit

    source = tmp_path / "mine.nfg"
    source.write_text(RULE)
    key = loader.rules_key([source])
    monkeypatch.setattr(nfkit, "__version__", nfkit.__version__ + ".1")
    assert loader.rules_key([source]) != key
    monkeypatch.undo()
    assert loader.rules_key([source]) == key
    # every nfgrep module that loading and compiling rules runs is in the key
    code = ("import sys, nfkit.nfgrep.loader, nfkit.nfgrep.compiler, nfkit.nfgrep.verifier; "
            "print(' '.join(m for m in sys.modules if m.startswith('nfkit.nfgrep.')))")
    env = dict(os.environ, PYTHONPATH=str(Path(loader.__file__).parents[2]))
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=env).stdout.split()
    assert mods and {m.rsplit(".", 1)[1] + ".py" for m in mods} <= set(loader.PIPELINE)
    source.unlink()  # an unreadable file: no key, no entry (the load then says why)
    assert loader.rules_key([source]) is None


def test_without_a_cache_the_rules_load_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NFKIT_CACHE_DIR", "")
    plain = loader.load_rules(None)
    # an unwritable place: loads, writes nothing
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    monkeypatch.setenv("NFKIT_CACHE_DIR", str(ro / "cache"))
    if os.geteuid() != 0:
        _same(plain, loader.load_rules(None))
        assert not (ro / "cache").exists()
    monkeypatch.setenv("NFKIT_CACHE_DIR", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a directory")
    _same(plain, loader.load_rules(None))


def test_writing_a_rules_entry_removes_the_old_ones(tmp_path: Path, cache: Path) -> None:
    import time

    source, first = _loaded(tmp_path, cache)
    source.write_text(RULES_TWO)
    loader.load_rules(source)
    second = _rules_entry(cache, [source])
    nfgb = next(cache.glob("*.nfgb"))
    old = time.time() - loader.RULES_MAX_AGE - 60
    for p in (first, nfgb):
        os.utime(p, (old, old))
    assert first.exists() and second.exists()
    source.write_text(PLANTED)
    loader.load_rules(source)  # a third entry written: the first, too old, goes
    assert not first.exists() and second.exists() and _rules_entry(cache, [source]).exists()
    assert nfgb.exists()  # (compiled files are not the rule sets' business)
    source.write_text(RULE)  # and an entry written again is new again
    assert [s.name for s in loader.load_rules(source)] == ["mine"] and first.exists()
