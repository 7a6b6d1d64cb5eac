"""Property tests: generated bad input to every `nfkit ct` command, in one namespace.

Whatever the input (wrong types, boundary and out-of-range integers of every
field width, non-UTF-8 bytes, huge strings, deep JSON nesting, reversed ranges,
empty or missing parts), a command exits 0, 1 or 2, never with a traceback,
and when it does not exit 0 the namespace's conntrack table (`conntrack -L`,
the oracle) is what it was before.

The commands run in this process (click's runner, through the same entry point
and error handling as the `nfkit` program): a subprocess per example would
spend the time budget on interpreter start-ups.  One namespace serves the
module; the table is put back after every example that changed it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ct_helpers import conntrack_lines, tracking_namespace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfkit.conntrack import ConntrackTable, Entry, Tuple
from nfkit.lab import Namespace

pytestmark = pytest.mark.kernel

EXAMPLES = 40
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def seed_entries() -> list[Entry]:
    """A small table: TCP, UDP, ICMP, IPv6, a mark, a zone, labels (long timeouts: nothing expires)."""
    return [
        Entry(Tuple("192.0.2.1", "198.51.100.2", 6, 1000, 80), timeout=3600, state=3, status=6, mark=5),
        Entry(Tuple("192.0.2.2", "198.51.100.2", 17, 1001, 53), timeout=3600, zone=7),
        Entry(Tuple("192.0.2.3", "198.51.100.3", 1, 0, 0, 8, 0, 9), timeout=3600),
        Entry(Tuple("2001:db8::1", "2001:db8::2", 17, 1002, 53), timeout=3600, labels=1 << 4),
    ]


class Table:
    """The module's namespace and a way to put its table back."""

    def __init__(self, ns: Namespace, table: ConntrackTable) -> None:
        self.ns = ns
        self.table = table

    def reset(self) -> None:
        self.table.flush()
        assert self.table.create_many(seed_entries()).created == len(seed_entries())

    def lines(self) -> list[str]:
        return conntrack_lines(self.ns)


@pytest.fixture(name="prop", scope="module")
def fixture_prop() -> Iterator[Table]:
    with tracking_namespace("nkp") as (ns, table):  # its ruleset also enables labels
        t = Table(ns, table)
        t.reset()
        yield t


def run(ns: Namespace, args: list[str]) -> tuple[int, str, str]:
    """`nfkit ct -n NS ARGS` in this process; an exception other than SystemExit is a traceback."""
    from click.testing import CliRunner

    from nfkit.cli.main import main

    result = CliRunner().invoke(main, ["ct", "-n", ns.name, *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback for {args!r}") from result.exception
    return result.exit_code, result.stdout, result.stderr


MUTATING = {"create", "update", "delete", "flush"}


def check(prop: Table, args: list[str]) -> None:
    before = prop.lines()
    code, _out, err = run(prop.ns, args)
    assert code in (0, 1, 2), (args, code, err)
    assert "Traceback" not in err
    if code != 0:
        assert prop.lines() == before, (args, err)  # nothing half-done
        if code == 2:
            assert err.strip(), args  # said why
    elif args[0] in MUTATING:
        prop.reset()


# ---------------------------------------------------------------- values

def _boundaries(bits: int) -> list[int]:
    top = (1 << bits) - 1
    return [0, 1, top - 1, top, top + 1, -1, -top]


WIDTHS = (8, 16, 32, 64, 128)
INTS = st.sampled_from(sorted({v for b in WIDTHS for v in _boundaries(b)} | {2**70, -2**63}))
WEIRD_TEXT = st.sampled_from([
    "", " ", "0x", "0x" + "f" * 50, "1e3", "nan", "inf", "-0", "+5", "1_0", "\u00b2", "\u0661",
    "\udcff", "a\x00b", "9" * 5000, "x" * 100_000, "10-1", "65535-0", "1/2/3", "/", ",", ",,",
    "192.0.2.1/99", "192.0.2.256", "2001:db8::/129", "2001:db8::/-1", "::ffff:192.0.2.1", "0x1ffffffff/0x1",
    "ASSURED,NOPE", "UNREPLIED,SEEN_REPLY", "TIME_WAIT,", "ipv5", "tcp\x00", "\ufeff6",
])
VALUE = st.one_of(INTS.map(str), WEIRD_TEXT, st.text(max_size=30),
                  st.binary(max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape")))

# option -> a valid value, for the parts of a command line that are not under test
FILTER_OPTIONS = {
    "-p": "udp", "-f": "ipv4", "-s": "192.0.2.2", "-d": "198.51.100.2", "-r": "198.51.100.2",
    "-q": "192.0.2.2", "--sport": "1001", "--dport": "53", "--reply-port-src": "53",
    "--reply-port-dst": "1001", "-u": "UNREPLIED", "--state": "ESTABLISHED", "-m": "5", "--zone": "7",
    "-l": "4", "--timeout-below": "100000",
}


@st.composite
def filter_args(draw: st.DrawFn, options: dict[str, str] = FILTER_OPTIONS) -> list[str]:
    """A few filter options, at least one of them with a generated (usually bad) value."""
    names = draw(st.lists(st.sampled_from(sorted(options)), min_size=1, max_size=4, unique=True))
    bad = draw(st.sampled_from(names))
    args: list[str] = []
    for name in names:
        args += [name, draw(VALUE) if name == bad else options[name]]
    return args


@given(args=filter_args())
@SETTINGS
def test_list_count_delete_with_bad_filters(prop: Table, args: list[str]) -> None:
    for verb in (["list"], ["list", "-o", "json"], ["count"], ["delete"]):
        check(prop, [*verb, *args])


CREATE_OPTIONS = {"-p": "udp", "-s": "192.0.2.9", "-d": "198.51.100.9", "--sport": "1", "--dport": "2",
                  "--reply-src": "198.51.100.9", "--reply-dst": "192.0.2.9", "--reply-port-src": "2",
                  "--reply-port-dst": "1", "-u": "SEEN_REPLY", "-m": "1", "--zone": "3", "-l": "5",
                  "-t": "60", "-f": "ipv4"}


@given(args=filter_args(CREATE_OPTIONS), drop=st.sampled_from(["", "-p", "-s", "-d", "--sport"]))
@SETTINGS
def test_create_with_bad_options(prop: Table, args: list[str], drop: str) -> None:
    base = {"-p": "udp", "-s": "192.0.2.9", "-d": "198.51.100.9", "--sport": "1", "--dport": "2"}
    given_names = set(args[::2])
    full = list(args)
    for name, value in base.items():
        if name not in given_names and name != drop:  # `drop`: a missing part
            full += [name, value]
    check(prop, ["create", *full])


UPDATE_OPTIONS = {"--mark": "0x10/0xf0", "--label": "6", "-t": "99", "--set-status": "ASSURED",
                  "--match-mark": "5", "--match-label": "4", "-p": "tcp", "-s": "192.0.2.1"}


@given(args=filter_args(UPDATE_OPTIONS))
@SETTINGS
def test_update_with_bad_options(prop: Table, args: list[str]) -> None:
    check(prop, ["update", *args])


WATCH_OPTIONS = {"--timeout": "0.05", "-c": "1", "-e": "new", "-o": "json", "-p": "udp"}


@given(args=filter_args(WATCH_OPTIONS))
@SETTINGS
def test_watch_with_bad_options_stops(prop: Table, args: list[str]) -> None:
    if "--timeout" not in args:
        args = [*args, "--timeout", "0.05"]  # a valid run must end: a quiet table
    elif args[args.index("--timeout") + 1] not in ("0.05",):
        args = [*args, "-c", "1"]  # with a bad timeout the command must refuse, not wait
    check(prop, ["watch", *args])


# ---------------------------------------------------------------- create --from

GOOD_ENTRY = {"family": "ipv4", "proto": "tcp",
              "orig": {"src": "192.0.2.9", "dst": "198.51.100.9", "sport": 1, "dport": 2},
              "status": ["SEEN_REPLY"], "state": "ESTABLISHED", "timeout": 60, "mark": 1, "zone": 3}
JSON_VALUES = st.one_of(
    INTS, WEIRD_TEXT, st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
    st.lists(INTS, max_size=3), st.dictionaries(st.text(max_size=5), INTS, max_size=3),
)
PATHS = [("family",), ("proto",), ("status",), ("state",), ("timeout",), ("mark",), ("zone",), ("labels",),
         ("id",), ("use",), ("counters",), ("helper",), ("timestamp",), ("reply",), ("orig",),
         ("orig", "src"), ("orig", "dst"), ("orig", "sport"), ("orig", "dport"), ("orig", "zone"),
         ("orig", "type"), ("bogus",), ("orig", "bogus")]


@st.composite
def bad_lines(draw: st.DrawFn) -> str:
    """One JSON line: a good entry with one part replaced, removed, or nested deeply."""
    entry = json.loads(json.dumps(GOOD_ENTRY))
    path = draw(st.sampled_from(PATHS))
    target = entry
    for key in path[:-1]:
        target = target[key]
    how = draw(st.sampled_from(["value", "value", "remove", "deep"]))
    if how == "remove":
        target.pop(path[-1], None)
    elif how == "deep":
        depth = draw(st.sampled_from([50, 5000, 100_000]))
        text = json.dumps(entry)
        return text[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    else:
        target[path[-1]] = draw(JSON_VALUES)
    return json.dumps(entry)


@given(line=bad_lines(), position=st.integers(0, 2),
       junk=st.sampled_from([b"", b"\xff\xfe", b"\x00", b"{", b"[]", b"\"x\"", b"#comment"]))
@SETTINGS
def test_create_from_bad_files(prop: Table, tmp_path_factory: pytest.TempPathFactory, line: str,
                               position: int, junk: bytes) -> None:
    good = [json.dumps({**GOOD_ENTRY, "orig": {**GOOD_ENTRY["orig"], "sport": p}}) for p in (11, 12)]
    lines: list[bytes] = [g.encode() for g in good]
    lines.insert(position, line.encode())
    if junk:
        lines.insert(1, junk)
    f: Path = tmp_path_factory.mktemp("from") / "entries.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    check(prop, ["create", "--from", str(f)])


def test_the_properties_can_fail(prop: Table) -> None:
    """The oracle sees a change: a create that succeeds changes `conntrack -L` (and is put back)."""
    before = prop.lines()
    code, _, err = run(prop.ns, ["create", "-p", "udp", "-s", "192.0.2.50", "-d", "198.51.100.50",
                                 "--sport", "1", "--dport", "2"])
    assert code == 0, err
    assert prop.lines() != before
    prop.reset()
    assert prop.lines() == before
