"""`nfkit cgrep`: options, output formats, inputs and one-line errors."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner, Result

from nfkit.cli.main import main

DATA = os.path.join(os.path.dirname(__file__), "data")
TREE = os.path.join(DATA, "tree")


def cgrep(*args: str, stdin: str | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(main, ["cgrep", "--no-cache", *args], input=stdin,
                         env={"NFKIT_CGREP_CACHE": ""})


def test_grep_lines() -> None:
    result = cgrep("-t", "struct flow", "-a", "state", "-o", "test", os.path.join(DATA, "ops.c"))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"{DATA}/ops.c:34:6: \tif (f->state == 1)"
    assert len(lines) == 8


def test_color_highlights_the_match() -> None:
    result = cgrep("--color", "always", "-t", "struct flow", "-a", "state", "-o", "set",
                   os.path.join(DATA, "ops.c"))
    first = result.stdout.splitlines()[0]
    assert "\033[1;31mf->state\033[0m = 1;" in first


def test_json_objects() -> None:
    result = cgrep("--json", "-t", "struct flow", "-a", "state", "-o", "set",
                   os.path.join(DATA, "ops.c"))
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(objects) == 17
    assert objects[0] == {
        "file": os.path.join(DATA, "ops.c"), "line": 17, "column": 2, "end": [17, 10],
        "op": "set", "type": "struct flow", "attr": "state", "code": "\tf->state = 1;",
        "function": "ops", "expression": "f", "pointer": True, "loose": False,
    }


def test_vim_and_emacs() -> None:
    path = os.path.join(DATA, "ops.c")
    vim = cgrep("--vim", "-t", "struct flow", "-a", "state", "-o", "set", path)
    assert vim.stdout.splitlines()[0] == f"{path}|17 col 2| (struct flow *f): \tf->state = 1;"
    emacs = cgrep("--emacs", "-t", "struct flow", "-a", "state", "-o", "set", path)
    assert emacs.stdout.splitlines()[-2] == f"{path}:32:2: (struct flow v): \tv.state = 5;"


def test_context_lines() -> None:
    path = os.path.join(DATA, "ops.c")
    result = cgrep("-C", "1", "-t", "struct flow", "-a", "state", "-o", "test", path)
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        f"{path}-33- \tx = f->state;",
        f"{path}:34:6: \tif (f->state == 1)",
        f"{path}-35- \t\tx++;",
        f"{path}:36:11: \tif (2 != f->state)",
    ]
    assert "--" in lines  # groups that do not touch are separated
    after = cgrep("-A", "1", "-t", "struct flow", "-a", "state", "-o", "test", path)
    assert after.stdout.splitlines()[:2] == [f"{path}:34:6: \tif (f->state == 1)",
                                             f"{path}-35- \t\tx++;"]


def test_several_queries_are_labelled() -> None:
    result = cgrep("-e", "struct flow:state:set", "-e", "struct flow::used",
                   os.path.join(DATA, "used.c"))
    assert result.exit_code == 0
    assert f"{DATA}/used.c:16:19: [struct flow::used] \tstruct flow *p = f;" in \
        result.stdout.splitlines()


def test_repeated_operations() -> None:
    result = cgrep("--json", "-t", "struct flow", "-a", "state", "-o", "set", "-o", "test",
                   os.path.join(DATA, "ops.c"))
    ops = [json.loads(line)["op"] for line in result.stdout.splitlines()]
    assert ops.count("set") == 17 and ops.count("test") == 8


def test_directories_recursive_with_globs() -> None:
    result = cgrep("-t", "struct flow", "-a", "state", "-o", "set", TREE)
    found = [line.split(":")[0] for line in result.stdout.splitlines()]
    assert found == [f"{TREE}/a.c", f"{TREE}/sub/b.c", f"{TREE}/sub/c.h"]  # not notes.txt
    only_c = cgrep("--include", "*.c", "-t", "struct flow", "-a", "state", "-o", "set", TREE)
    assert [line.split(":")[0] for line in only_c.stdout.splitlines()] == found[:2]
    no_sub = cgrep("--exclude", "sub", "-t", "struct flow", "-a", "state", "-o", "set", TREE)
    assert [line.split(":")[0] for line in no_sub.stdout.splitlines()] == found[:1]


def test_file_list_on_stdin() -> None:
    names = f"{TREE}/sub/b.c\n{TREE}/a.c\n"
    result = cgrep("-t", "struct flow", "-a", "state", "-o", "set", "-", stdin=names)
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == \
        [f"{TREE}/sub/b.c", f"{TREE}/a.c"]


def test_bad_inputs_are_one_line_and_others_still_searched() -> None:
    result = cgrep("-t", "struct flow", "-a", "state", "-o", "set",
                   f"{DATA}/missing-dir", f"{TREE}/notes.txt", f"{TREE}/a.c")
    assert result.exit_code == 2
    assert result.stdout == f"{TREE}/a.c:2:26: void a(struct flow *f) {{ f->state = 1; }}\n"
    assert result.stderr.splitlines() == [
        f"nfkit: cgrep: {DATA}/missing-dir: no such file or directory",
        f"nfkit: cgrep: {TREE}/notes.txt: not a C file (expected .c or .h)",
    ]


def test_binary_file_named_c(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "blob.c")
    with open(path, "wb") as handle:
        handle.write(b"\x7fELF\0\0\0")
    result = cgrep("-t", "struct flow", "-o", "used", path)
    assert result.exit_code == 2
    assert result.stderr == f"nfkit: cgrep: {path}: not a C file (binary content)\n"


@pytest.mark.parametrize(("args", "message"), [
    (["-t", "struct flow", "-a", "state", "-o", "write"],
     "nfkit: unknown operation 'write' (one of deref, set, test, used, func)\n"),
    (["-t", "struct flow", "-o", "set"], "nfkit: operation 'set' needs an attribute (-a)\n"),
    (["-t", "struct flow **", "-o", "used"],
     "nfkit: type 'struct flow **': write it as C does ('struct NAME', 'union NAME' "
     "or a typedef name)\n"),
    (["-e", "struct flow:state"], "nfkit: query 'struct flow:state': expected TYPE:ATTR:OP\n"),
    (["-t", "struct flow", "-a", "(", "-o", "func"],
     "nfkit: function pattern '(': missing ), unterminated subpattern at position 0\n"),
    ([], "nfkit: nothing to look for: give -t TYPE [-a ATTR] [-o OP] or -e TYPE:ATTR:OP\n"),
])
def test_bad_queries(args: list[str], message: str) -> None:
    result = cgrep(*args, os.path.join(DATA, "ops.c"))
    assert result.exit_code == 2
    assert result.stderr == message
    assert result.stdout == ""


def test_no_match_exit_status_and_stats() -> None:
    result = cgrep("--stats", "-t", "struct flow", "-a", "nosuchmember",
                   os.path.join(DATA, "ops.c"), os.path.join(DATA, "broken.c"))
    assert result.exit_code == 1
    stats = cgrep("--stats", "-t", "struct flow", "-a", "state",
                  os.path.join(DATA, "ops.c"), os.path.join(DATA, "broken.c"))
    assert stats.exit_code == 0
    lines = stats.stderr.splitlines()
    assert lines[0].startswith("cgrep: 2 files, 2 parsed, 1 with parse errors, 0 not searched, "
                               "32 matches, 0 accesses of unknown type")
    assert lines[1] == "cgrep: struct flow:state:deref: 32 matches"
    assert lines[2] == ("cgrep: parse errors (searched where the tree is sound): "
                        f"{DATA}/broken.c")


def test_bare_tag_is_said() -> None:
    result = cgrep("-t", "flow", "-a", "state", "-o", "test", os.path.join(DATA, "ops.c"))
    assert result.stderr == ("nfkit: cgrep: type 'flow' means the typedef flow where one is "
                             "visible, else 'struct flow'\n")
    assert len(result.stdout.splitlines()) == 8


def test_include_dir_option() -> None:
    path = os.path.join(DATA, "reach.c")
    without = cgrep("-t", "struct tuple", "-a", "dst", path)
    with_dir = cgrep("-t", "struct tuple", "-a", "dst", "-I", os.path.join(DATA, "include"), path)
    assert len(with_dir.stdout.splitlines()) - len(without.stdout.splitlines()) == 3
    missing = cgrep("-t", "struct tuple", "-a", "dst", "-I", "/nonexistent/include", path)
    assert missing.stderr == "nfkit: include directory /nonexistent/include: no such file or directory\n"


def test_loose_is_marked() -> None:
    result = cgrep("--loose", "-t", "struct tuple", "-a", "dst", os.path.join(DATA, "reach.c"))
    loose = [line for line in result.stdout.splitlines() if "[loose]" in line]
    assert [line.split(":")[1] for line in loose] == ["19", "33", "34", "35"]


def test_parallel_workers_keep_file_order(tmp_path: object,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from nfkit.cgrep import runner

    monkeypatch.setattr(runner, "PARALLEL_THRESHOLD", 4)  # workers even for a few files
    started = []
    real_pool = __import__("multiprocessing").get_context("fork").Pool
    directory = str(tmp_path)
    for index in range(12):
        with open(os.path.join(directory, f"f{index:02}.c"), "w") as handle:
            handle.write(f"struct flow {{ int state; }};\nvoid f(struct flow *f) "
                         f"{{ f->state = {index}; }}\n")
    import multiprocessing.context as mpc

    def counting_pool(self: object, *args: object, **kwargs: object) -> object:
        started.append(args)
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(mpc.ForkContext, "Pool", counting_pool)
    result = cgrep("-j", "2", "-t", "struct flow", "-a", "state", "-o", "set", directory)
    assert started  # the work went to worker processes
    assert [line.split(":")[0][-5:] for line in result.stdout.splitlines()] == \
        [f"f{index:02}.c" for index in range(12)]
