"""Errors of the nfgrep toolchain: rule text, bytecode files, programs refused by the verifier."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nfkit.errors import InputError

if TYPE_CHECKING:  # the engine imports this module without the parser's tree
    from nfkit.nfgrep.tree import Where


class NfgrepSyntaxError(InputError):
    """A rule file that cannot be parsed or checked; points at path:line:column."""

    def __init__(self, path: str, where: Where, message: str) -> None:
        self.path = path
        self.line = where.line
        self.col = where.col
        self.reason = message
        super().__init__(f"{path}:{where.line}:{where.col}: {message}")


class BytecodeError(InputError):
    """A .nfgb file that is not a well-formed nfgrep program (bad magic, version, checksum)."""


class VerifierError(InputError):
    """A program the verifier refuses to load; names the protocol, step and instruction."""
