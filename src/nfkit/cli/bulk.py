"""`nfkit rules load|check FILE`: the work of the two commands, free of click.

Shared by the click commands in `nfkit.cli.rules` and the click-less start in
`nfkit.cli.entry` (a big load should not wait for the CLI framework).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from nfkit.cli.guard import one_shot
from nfkit.errors import InputError


class Forked:
    """``fn`` run in a forked process (an offload for `bulkjson.load_json_runs`: the far
    half of a long rule run scanned and encoded on a second CPU); its result comes back
    pickled through a pipe.  The command does not use it (see `read_commands`)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        import pickle

        self.rfd, wfd = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: whatever happens, it ends here
            try:
                os.close(self.rfd)
                try:
                    out = pickle.dumps(fn(), protocol=pickle.HIGHEST_PROTOCOL)
                except BaseException:
                    out = b""
                with os.fdopen(wfd, "wb") as f:
                    f.write(out)
            finally:
                os._exit(0)
        os.close(wfd)

    def result(self) -> Any:
        """What ``fn`` returned, or None when it failed."""
        import pickle

        chunks = []
        while True:
            c = os.read(self.rfd, 1 << 20)
            if not c:
                break
            chunks.append(c)
        os.close(self.rfd)
        self.rfd = -1
        os.waitpid(self.pid, 0)
        data = b"".join(chunks)
        return pickle.loads(data) if data else None

    def discard(self) -> None:
        """Stop the child (if still working) and reap it."""
        import signal

        if self.rfd >= 0:
            os.close(self.rfd)
            self.rfd = -1
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)


def read_file(path: str) -> str:
    """The text of ``path`` (``-``: stdin); InputError naming the file if unreadable."""
    try:
        if path == "-":
            return sys.stdin.buffer.read().decode("utf-8")
        with open(path, "rb") as f:  # no newline translation: JSON does not need it
            return _decoded(f)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _decoded(f: Any) -> str:
    """The text of open file ``f``, decoded straight from the file's pages where it can
    be mapped (a regular file): a read would first copy the whole file into a bytes
    object, ~15 ms of copying and page faults for a 28 MB listing of 80,000 rules."""
    import mmap

    try:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # a pipe, a device, an empty file: read it
        return f.read().decode("utf-8")  # type: ignore[no-any-return]
    with mm:
        return str(mm, "utf-8")


def read_commands(path: str, include_paths: tuple[str, ...] = (), syntax: str = "auto",
                  runs: bool = True) -> list[Any]:
    """The commands of ``path``: libnftables JSON, or nft's own text (``syntax`` "json"
    or "nft"; "auto" picks by the first non-blank character).  With ``runs``, long runs
    of JSON rules of one shape are read as templates (the loader's fast path)."""
    from nfkit.nftables.jsonfmt import looks_like_json

    text = read_file(path)
    if syntax == "nft" or (syntax == "auto" and not looks_like_json(text)):
        from nfkit.nftables.nfttext import load_nft  # (a JSON load does without it)

        return load_nft(text, "/dev/stdin" if path == "-" else path, include_paths)
    if runs:
        from nfkit.nftables.bulkjson import load_json_runs

        # In this process alone: a second one for the far half of a long run (`Forked`)
        # cost more CPU than it saved, and no wall time, once the run was scanned once
        # (docs/rules.md, "Speed").
        return load_json_runs(text)
    from nfkit.nftables.jsonfmt import load_json

    return load_json(text)


def _run(cmds: list[Any], check: bool) -> int:
    """run_commands; a refusal of commands read from nft text is put at its line."""
    from nfkit.errors import TransactionError
    from nfkit.nftables.commits import run_commands

    try:
        return run_commands(cmds, check=check)
    except TransactionError as exc:
        locate = getattr(cmds, "locate", None)
        if locate is None:
            raise
        raise locate(exc) from None


# The commands a one-shot command read, kept to its end: the process ends without
# freeing them (`one_shot`), where freeing them one by one when the command returned
# took ~6 ms for nft's JSON listing of 80,000 rules (the text, each rule's match).
_kept: list[Any] = []


@one_shot
def load_file(path: str, include_paths: tuple[str, ...] = (), syntax: str = "auto") -> None:
    """Load ``path`` (libnftables JSON or nft text) in one atomic transaction, then exit."""
    cmds = read_commands(path, include_paths, syntax)
    _kept.append(cmds)
    _run(cmds, check=False)


@one_shot
def check_file(path: str, include_paths: tuple[str, ...] = (), syntax: str = "auto") -> None:
    """Let the kernel validate ``path`` as one transaction (nothing is committed), then exit."""
    cmds = read_commands(path, include_paths, syntax)
    _kept.append(cmds)
    n = _run(cmds, check=True)
    print(f"ok: {n} message(s) validated, nothing committed", file=sys.stderr)
