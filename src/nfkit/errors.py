"""The one exception hierarchy of nfkit.

Every error nfkit raises on purpose is an `NfkitError`.  Messages name the
object and the cause; errors that come from the kernel carry the errno, its
symbolic name and the kernel's extended-ACK text when it gave one.
"""

from __future__ import annotations

import errno as _errno
import os


class NfkitError(Exception):
    """Base of every error nfkit raises on purpose."""


class InputError(NfkitError):
    """Bad input from the user: a file, an option, a rule that cannot be understood.

    A line longer than MAX_MESSAGE characters (one that quotes a huge input)
    keeps its start and its end, where the cause is, and says how much was cut;
    a message of several lines (nft's include stack, a line and its carets) is
    cut line by line."""

    MAX_MESSAGE = 300

    def __init__(self, message: str = "") -> None:
        if len(message) > self.MAX_MESSAGE:
            message = "\n".join(_cut(line, self.MAX_MESSAGE) for line in message.split("\n"))
        super().__init__(message)


def _cut(line: str, limit: int) -> str:
    if len(line) <= limit:
        return line
    return f"{line[:160]}...[{len(line) - 240} characters]...{line[-80:]}"


class DecodeError(NfkitError):
    """Bytes that do not form a valid netlink message or attribute stream."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        if offset is not None:
            message = f"{message} (at byte {offset})"
        super().__init__(message)
        self.offset = offset


class CapabilityError(NfkitError):
    """The running kernel (or the caller's privileges) cannot do what was asked."""


class NetlinkError(NfkitError):
    """The kernel refused a request.

    Attributes: ``errno`` (positive), ``extack`` (the kernel's own message or
    None), ``offset`` (byte offset of the offending attribute in the request,
    or None), ``path`` (that attribute named by the family's attribute table,
    e.g. ``expressions[3] (cmp) > data``, or None), ``seq`` (the request's
    sequence number) and ``what`` (a person's name for the object the request
    was about, or None).
    """

    def __init__(
        self,
        errno: int,
        *,
        extack: str | None = None,
        offset: int | None = None,
        seq: int | None = None,
        what: str | None = None,
        msg_type: int | None = None,
        index: int | None = None,
        path: str | None = None,
    ) -> None:
        self.errno = errno
        self.path = path
        self.index = index
        self.extack = extack
        self.offset = offset
        self.seq = seq
        self.what = what
        self.msg_type = msg_type
        super().__init__(self._render())

    @property
    def errname(self) -> str:
        return _errno.errorcode.get(self.errno, f"errno {self.errno}")

    def _render(self) -> str:
        cause = os.strerror(self.errno) if self.errno else "error"
        text = f"{cause} ({self.errname})"
        if self.path:
            text = f"{self.path}: {text}"
        if self.what:
            text = f"{self.what}: {text}"
        if self.extack:
            text += f": {self.extack}"
        return text

    def describe(self, what: str) -> NetlinkError:
        """Return the same error naming ``what`` (the object the request was about)."""
        return type(self)(
            self.errno, extack=self.extack, offset=self.offset, seq=self.seq,
            what=what, msg_type=self.msg_type, index=self.index, path=self.path,
        )


class TransactionError(NfkitError):
    """A batch was refused; nothing in it was committed.

    ``errors`` holds one `NetlinkError` per refused message, each with the
    ``seq`` of that message; ``index`` maps to the message's position in the
    batch (0-based, BATCH_BEGIN not counted) when known.
    """

    def __init__(self, errors: list[NetlinkError], message: str | None = None) -> None:
        self.errors = errors
        if message is None:
            first = errors[0] if errors else None
            message = str(first) if first else "transaction refused"
            if len(errors) > 1:
                message += f" (and {len(errors) - 1} more error(s))"
        super().__init__(message)


class DumpInterrupted(NfkitError):
    """The kernel's table changed during a dump (NLM_F_DUMP_INTR)."""


class EventsLost(NfkitError):
    """The kernel dropped events for this listener (ENOBUFS): resynchronise."""
