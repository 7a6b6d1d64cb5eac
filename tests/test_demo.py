"""`make demo` works end to end and leaves no namespace behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import require_kernel

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"


def test_demo_runs_every_step_and_cleans_up():
    require_kernel()
    proc = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert "IPv6 NAT" in out  # nfkit info ran
    assert "198.51.100.2 HTTP/1.0 200 OK" in out and "2001:db8:2::2 HTTP/1.0 200 OK" in out
    assert "20 flow entries have been deleted" in out  # the selective flush of UNREPLIED UDP
    assert out.count("http method=GET host=demo.example user_agent=nfkit-demo") == 2
    assert "conntrack_users.c:11:2: [struct nf_conn:status:set]" in out
    assert "lab removed" in out
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "demo" not in listed
