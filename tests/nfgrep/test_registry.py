"""The registry of app ids and label names; connlabel.conf merged without touching the user's lines."""

from __future__ import annotations

import pytest

from nfkit.errors import InputError
from nfkit.nfgrep.loader import app_names
from nfkit.nfgrep.registry import (
    HEADER,
    SHIPPED,
    Registry,
    direction_bit,
    mark_shift,
    merge_connlabel,
    parse_mask,
)


def test_every_shipped_application_has_a_fixed_id() -> None:
    assert set(app_names()) <= set(SHIPPED)
    ids = list(SHIPPED.values())
    assert len(set(ids)) == len(ids) and min(ids) == 1 and max(ids) <= 63
    assert SHIPPED["unknown"] == 1


@pytest.mark.parametrize("mask,shift", [(0xFF, 0), (0xFF00, 8), (0xFF000000, 24), (0xFFFFFFFF, 0)])
def test_mark_under_mask(mask: int, shift: int) -> None:
    assert mark_shift(mask) == shift
    reg = Registry()
    assert reg.mark("http", mask) == 2 << shift
    assert reg.app_of_mark(0x1 | (2 << shift) if shift else 2, mask) == "http"
    assert reg.app_of_mark(0, mask) is None
    assert direction_bit(mask) == 0x80 << shift and direction_bit(mask) & mask


@pytest.mark.parametrize("text,message", [("0xf0f0", "contiguous"), ("0x7f", "8 bits needed"),
                                          ("zz", "not a number"), ("0", "at least 8 bits")])
def test_bad_mask(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_mask(text)


def test_merge_keeps_the_users_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "connlabel.conf"
    user = "# mine\n0 bulk\n2 http   # same bit as nfkit's: fine\n\n100 vip\n"
    conf.write_text(user)
    conf.chmod(0o640)
    reg = merge_connlabel(["http", "myproto", "other"], conf)
    text = conf.read_text()
    assert text.startswith(user)  # the user's lines, byte for byte, first
    added = text[len(user):].splitlines()
    assert added[0] == HEADER
    assert "2 http" not in added and "1 unknown" in added and "7 ftp-data" in added
    assert reg.ids["myproto"] == 64 and reg.ids["other"] == 65 and "64 myproto" in added
    assert conf.stat().st_mode & 0o777 == 0o640
    # a second run changes nothing and gives the same ids; so does a reader that never writes
    assert merge_connlabel(["http", "myproto", "other"], conf, write=False).ids == reg.ids
    again = merge_connlabel(["http", "myproto", "other"], conf)
    assert conf.read_text() == text and again.ids == reg.ids


@pytest.mark.parametrize("line,message", [
    ("5 http", r"connlabel.conf:1: label 'http' is bit 5 there"),
    ("2 web", r"connlabel.conf:1: bit 2 is named 'web' there"),
    ("40 myproto", r"label 'myproto' is bit 40; applications of your own"),
    ("x y", r"connlabel.conf:1: 'x y' is not 'BIT NAME'"),
])
def test_conflicts_are_one_clear_error(tmp_path, line: str, message: str) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "connlabel.conf"
    conf.write_text(line + "\n")
    with pytest.raises(InputError, match=message):
        merge_connlabel(["myproto"], conf)
    assert conf.read_text() == line + "\n"  # nothing written


def test_a_reader_gets_the_ids_without_writing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "connlabel.conf"
    reg = merge_connlabel(["http", "mine"], conf, write=False)
    assert not conf.exists() and reg.ids["http"] == 2 and reg.ids["mine"] == 64
