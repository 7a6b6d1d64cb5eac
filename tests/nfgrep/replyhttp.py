"""The shipped library with http confirmed by the server's status line, as it read before
http was decided on the request alone.  For tests of machinery (the live judge's batches,
hold and bounds; the kernel program's kept first bytes) that needs a flow still open after
its request."""

from __future__ import annotations

from pathlib import Path

from nfkit.nfgrep.loader import SIGNATURES

REPLY_STEP = """
    step reply from server {
        "HTTP/1." at 0
        u8 in 0x30..0x39
        " "
        u8 in 0x31..0x35
    }
}

# Over HTTP: a protocol upgrade"""


def reply_http_rules(root: Path) -> Path:
    """Write that library into directory ``root`` (made if missing) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    for path in SIGNATURES.glob("*.nfg"):
        text = path.read_text()
        if path.name == "http.nfg":
            text = text.replace("\n}\n\n# Over HTTP: a protocol upgrade", REPLY_STEP, 1)
            assert "step reply from server" in text
        (root / path.name).write_text(text)
    return root
