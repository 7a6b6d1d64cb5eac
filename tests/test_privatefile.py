"""The one check every cache read goes through: nobody else could have written the file."""

from __future__ import annotations

import os
from pathlib import Path

from nfkit.privatefile import read_private


def test_a_private_file_is_read_and_any_other_is_not(tmp_path: Path) -> None:
    me = os.geteuid()
    f = tmp_path / "cache"
    f.write_bytes(b"x" * (3 << 20))  # more than one read's worth
    os.chmod(f, 0o600)
    assert read_private(f, me) == b"x" * (3 << 20)
    assert read_private(f, me + 1) is None  # another owner
    for mode in (0o620, 0o602):  # group- or world-writable
        os.chmod(f, mode)
        assert read_private(f, me) is None
    os.chmod(f, 0o644)
    assert read_private(f, me) == b"x" * (3 << 20)  # others may read it, not write it
    link = tmp_path / "link"
    link.symlink_to(f)
    assert read_private(link, me) is None  # never through a symbolic link
    hard = tmp_path / "hard"
    os.link(f, hard)
    assert read_private(f, me) is not None and read_private(f, me, single_link=True) is None
    assert read_private(tmp_path, me) is None  # a directory
    assert read_private(tmp_path / "missing", me) is None
