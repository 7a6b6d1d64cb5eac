"""conntrackd.conf as conntrackd reads it: the example files shipped with conntrackd, and errors
that name file:line and the key (exit 2 from the command line, one line, no traceback)."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest

from nfkit.errors import InputError
from nfkit.ha import conf
from tests.ha.stock import NFKIT, conntrackd_conf

EXAMPLES = Path("/usr/share/doc/conntrackd/examples/sync")


def test_the_test_labs_configuration() -> None:
    c = conf.parse(conntrackd_conf(Path("/x"), mode="FTFW", own="203.0.113.1", peer="203.0.113.2",
                                   interface="sync0"), "lab.conf")
    assert (c.mode, c.disable_external_cache, c.unix_path, c.lockfile) == ("FTFW", True, "/x/ctl", "/x/lock")
    t = c.transport
    assert (t.kind, t.address, t.destination, t.port, t.interface, t.rcvbuf) == (
        "UDP", "203.0.113.1", "203.0.113.2", 3780, "sync0", 1249280)
    assert c.filter.networks_accept is False
    assert ipaddress.ip_network("127.0.0.1/32") in c.filter.networks
    assert c.tuning["HashSize"] == "8192"


@pytest.mark.parametrize("mode", ["ftfw", "notrack", "alarm"])
def test_conntrackds_own_examples_are_read(mode: str) -> None:
    path = EXAMPLES / mode / "conntrackd.conf"
    c = conf.read(path)
    assert c.mode == mode.upper()
    assert c.transport.kind == "Multicast" and c.transport.address == "225.0.0.50"
    assert c.filter.protocols_accept is True and 6 in c.filter.protocols
    assert c.filter.networks_accept is False


def test_a_state_filter() -> None:
    c = conf.parse("Sync { Mode NOTRACK { }\n Multicast { IPv4_address 225.0.0.50\n Group 3780\n }\n}\n"
                   "General { Filter From Kernelspace {\n State Accept {\n ESTABLISHED CLOSED TIME_WAIT for TCP\n"
                   "}\n }\n}", "s.conf")
    assert c.filter.states_accept is True and c.filter.tcp_states == {3, 7, 8} and c.filter.where == "Kernelspace"


@pytest.mark.parametrize("text,error", [
    ("Sync { Mode FTFW { } UDP { IPv4_address 1.2.3.4 }\n}", "no IPv4_Destination_Address"),
    ("Sync {\n Mode FAST { }\n}", ":2: Mode: FAST: the mode is FTFW, NOTRACK or ALARM"),
    ("Sync {\n Mode FTFW {\n  Window 3\n }\n}", ":3: Window: unknown key in Mode FTFW"),
    ("General {\n HashSize big\n}\nSync { }", ":2: HashSize: 'big' is not a number"),
    ("Sync {\n Mode FTFW { }\n UDP {\n  IPv4_address 1.2.3.4\n  IPv4_Destination_Address 1.2.3.5\n"
     "  Port 99999\n }\n}", ":6: Port: 99999 is out of range"),
    ("Sync { Mode FTFW {\n DisableExternalCache maybe\n } }", ":2: DisableExternalCache: 'maybe' is not On/Off"),
    ("Sync {\n Mode FTFW { }\n TCP { }\n}", ":3: TCP: the TCP transport is not supported"),
    ("Stats {\n}", ":1: Stats: conntrackd's statistics mode is not supported"),
    ("Sync { Mode FTFW { }", "end of file inside a block"),
    ("General {\n Filter {\n  Address Ignore {\n   IPv4_address 300.1.1.1\n  }\n }\n}",
     ":4: IPv4_address: '300.1.1.1' is not an address"),
    ("General {\n Filter {\n  Protocol Accept {\n   TCP QUIC\n  }\n }\n}", ":4: TCP: unknown protocol 'QUIC'"),
    ("General { }", "no Sync block"),
    # as 1.4.7's grammar: ALARM has no DisableExternalCache, NOTRACK no ACKWindowSize
    ("Sync {\n Mode ALARM {\n  DisableExternalCache on\n }\n}", ":3: DisableExternalCache: unknown key in Mode ALARM"),
    ("Sync {\n Mode NOTRACK {\n  ACKWindowSize 5\n }\n}", ":3: ACKWindowSize: unknown key in Mode NOTRACK"),
    # the Scheduler block is acted on (as conntrackd: RR or FIFO, priority 0-99)
    ("General {\n Scheduler {\n  Type OTHER\n }\n}", ":3: Type: unknown scheduler `OTHER' (RR or FIFO)"),
    ("General {\n Scheduler {\n  Priority 120\n }\n}", ":3: Priority: 120 is out of range [0, 99]"),
])
def test_errors_name_file_line_and_key(text: str, error: str) -> None:
    with pytest.raises(InputError) as exc:
        conf.parse(text, "f.conf")
    assert str(exc.value).startswith("f.conf") and error in str(exc.value), str(exc.value)


def test_a_bad_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "c.conf"
    path.write_text("General {\n  HashSize 8192\n  Colour blue\n}\n")
    proc = subprocess.run([NFKIT, "ha", "-C", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert f"{path}:3: Colour: unknown key in General" in proc.stderr


def test_the_systemd_unit_runs_the_daemon_in_the_foreground() -> None:
    unit = subprocess.run([NFKIT, "ha", "unit", "-C", "/etc/conntrackd/conntrackd.conf"], capture_output=True,
                          text=True, check=True).stdout
    assert f"ExecStart={NFKIT} ha -C /etc/conntrackd/conntrackd.conf\n" in unit and "KillSignal=SIGTERM" in unit
