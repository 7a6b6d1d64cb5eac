"""`nfkit cgrep` fed generated bad input: never a traceback, exit 0, 1 or 2.

Arguments with non-UTF-8 bytes (as Python sees them: surrogate escapes),
huge strings, out-of-range numbers and unknown choices; files that are
empty, binary, not UTF-8, one huge line or nested thousands deep; names
that are missing, directories, or not C.  The command runs through its real
entry point (click's runner, whose streams are strict UTF-8 like a terminal
in a UTF-8 locale) and, for a few of the worst, as a process with
PYTHONIOENCODING=utf-8:strict.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfkit.cli.main import main

VALID_SOURCE = b"struct s { int a; };\nvoid f(struct s *p) { p->a = 1; g(p); }\n"


def _undecodable(raw: bytes) -> str:
    return os.fsdecode(raw)  # what sys.argv holds for bytes that are not UTF-8


words = st.one_of(
    st.sampled_from(["struct s", "s", "a", "set", "used", "func", "deref", "test", "g",
                     "union u", "struct", "(", "*", ":", "::", "s:a:set", "struct s::used",
                     "s:(:func", "", " ", "-", "--", "0", "-1", "99999999999999999999"]),
    st.binary(min_size=1, max_size=12).map(_undecodable),
    st.text(min_size=1, max_size=12),
    st.integers(min_value=1, max_value=3).map(lambda n: "x" * (10 ** (n + 3))),
).filter(lambda word: "\0" not in word)  # argv cannot hold a NUL (stdin can)
options = st.lists(st.one_of(
    st.tuples(st.sampled_from(["-t", "-a", "-o", "-e", "-I", "--include", "--exclude",
                               "-A", "-B", "-C", "-j", "--color"]), words),
    st.tuples(st.sampled_from(["--json", "--vim", "--emacs", "--loose", "--stats",
                               "--no-cache", "-h"])),
), max_size=6)


def _nested(depth: int, kind: str) -> bytes:
    opening, closing, middle = {
        "braces": ("{", "}", "p->a = 1;"), "parens": ("(", ")", "p->a"),
        "ifdef": ("#ifdef X\n", "#endif\n", "p->a = 1;\n"),
    }[kind]
    return (b"struct s { int a; };\nvoid f(struct s *p) {\n" + opening.encode() * depth
            + middle.encode() + closing.encode() * depth + b"\n}\n")


contents = st.one_of(
    st.just(b""),
    st.just(VALID_SOURCE),
    st.binary(max_size=300),
    st.binary(max_size=100).map(lambda b: VALID_SOURCE + b"\xff\xfe" + b),
    st.binary(max_size=50).map(lambda b: b"\0" + b),
    st.builds(_nested, st.integers(min_value=0, max_value=3000),
              st.sampled_from(["braces", "parens", "ifdef"])),
    st.integers(min_value=1, max_value=20_000).map(lambda n: b"p->a = 1; " * n),
)
names = st.one_of(st.sampled_from(["a.c", "b.h", "c.txt", "d"]),
                  st.binary(min_size=1, max_size=8).filter(
                      lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
                  .map(lambda b: os.fsdecode(b) + ".c"))


def _prepare(base: Path, files: list[tuple[str, bytes]]) -> list[str]:
    paths = []
    for index, (name, content) in enumerate(files):
        path = os.path.join(base, str(index), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(os.fsencode(path), "wb") as handle:
            handle.write(content)
        paths.append(path)
    return paths


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(options=options, files=st.lists(st.tuples(names, contents), max_size=3),
       extra=st.lists(st.sampled_from(["missing.c", "dir", "-"]), max_size=2),
       stdin=st.one_of(st.none(), st.binary(max_size=40)))
def test_generated_bad_input_never_gives_a_traceback(
        options: list[tuple[str, ...]], files: list[tuple[str, bytes]], extra: list[str],
        stdin: bytes | None) -> None:
    with tempfile.TemporaryDirectory() as base:
        paths = _prepare(Path(base), files)
        paths += [os.path.join(base, "0") if e == "dir" else e if e == "-"
                  else os.path.join(base, e) for e in extra]
        args = ["cgrep", *(part for option in options for part in option), *paths]
        result = CliRunner().invoke(main, args, input=stdin,
                                    env={"NFKIT_CGREP_CACHE": os.path.join(base, "cache")})
    assert result.exit_code in (0, 1, 2), (args, result.output)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert "Traceback" not in result.output


def test_worst_cases_as_a_process_with_strict_output(tmp_path: Path) -> None:
    odd = os.fsencode(str(tmp_path)) + b"/caf\xe9.c"
    with open(odd, "wb") as handle:
        handle.write(VALID_SOURCE + b"/* \xff */\n")
    (tmp_path / "deep.c").write_bytes(_nested(100_000, "braces"))
    (tmp_path / "bin.c").write_bytes(b"\0\1\2")
    (tmp_path / "empty.c").write_bytes(b"")
    cases = [
        ["-t", "s", "-a", "a", os.fsdecode(odd)],
        ["--json", "-t", "s", "-a", "a", os.fsdecode(odd)],
        ["-t", "s", "-a", "a", "-o", "set", "--stats", str(tmp_path)],
        ["-t", "s", "-a", "a", "-"],  # names on stdin: a NUL, bytes that are not UTF-8
        ["-t", os.fsdecode(b"\xff"), str(tmp_path)],
        ["-e", os.fsdecode(b"s:\xff:func"), str(tmp_path)],
        ["-t", "s", "-a", "a", os.fsdecode(b"missing\xff.c")],
        ["-t", "s", "-a", "a", "-C", "-1", str(tmp_path)],
        ["-t", "s", "-a", "x" * 100_000, str(tmp_path)],
    ]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict",
           "NFKIT_CGREP_CACHE": str(tmp_path / "cache")}
    for args in cases:
        names = b"a\0b.c\n" + odd + b"\nno\xff.c\n"
        result = subprocess.run([sys.executable, "-m", "nfkit", "cgrep", *args],
                                input=names if "-" in args else None,
                                capture_output=True, timeout=120, env=env)
        stderr = result.stderr.decode("utf-8", "replace")
        assert "Traceback" not in stderr, (args[:4], stderr[-1500:])
        assert result.returncode in (0, 1, 2), (args[:4], stderr[-1500:])
