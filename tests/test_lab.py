"""The namespace harness itself: labs route traffic and leave nothing behind."""

import os
import subprocess

from nfkit.lab import three_node


def _host_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_routed_lab_passes_traffic_and_is_removed(routed_lab):
    client = routed_lab["client"]
    client.run("ping -c1 -W2 198.51.100.2")
    client.run("ping -6 -c1 -W2 2001:db8:2::2")
    assert routed_lab["server"].addr("eth0") == "198.51.100.2"


def test_lab_removed_even_when_block_fails(request):
    from tests.conftest import require_kernel

    require_kernel()
    before = _host_namespaces()
    names = []
    try:
        with three_node("nkt") as lab:
            names = [ns.name for ns in lab.namespaces.values()]
            assert set(names) <= _host_namespaces()
            raise RuntimeError("test body failed")
    except RuntimeError:
        pass
    assert not set(names) & _host_namespaces()
    assert _host_namespaces() == before


def test_enter_moves_this_thread_only_for_the_block(netns):
    import os

    host = os.readlink("/proc/thread-self/ns/net")
    with netns.enter():
        inside = os.readlink("/proc/thread-self/ns/net")
    assert inside != host
    assert os.readlink("/proc/thread-self/ns/net") == host


def test_lab_servers_get_an_empty_run_of_their_own(netns, tmp_path):
    """A lab server never sees what the machine's boot left in /run (systemd-tmpfiles'
    /run/sshd, /var/run/vsftpd/empty): one that depends on it fails here, on every machine."""
    seen = tmp_path / "seen"
    proc = netns.serve(["sh", "-c", f"ls -A /run /var/run > {seen}; test -d /run/mine"],
                       run_dirs=("mine",))
    assert proc.wait(10) == 0
    host_run = set(os.listdir("/run"))
    listing = seen.read_text().split()
    assert "mine" in listing and not host_run & (set(listing) - {"mine"})
    assert os.path.isdir("/run/netns") and not os.path.exists("/run/mine")  # the host's is untouched
