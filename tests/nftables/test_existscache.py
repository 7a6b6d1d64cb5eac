"""`nfkit rules exists` from the cache of rule fingerprints (nfkit.nftables.existscache):
answers equal to the chain's, never from a stale cache (another process changed the
ruleset), never from another namespace's cache (a reused namespace inode, a repeated
generation number), never from a file a non-root user could have written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nfkit.lab import Lab
from nfkit.nftables import existscache

from .conftest import NFKIT

N = 40


def _rule(i: int) -> str:
    return json.dumps([
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                   "right": f"192.0.2.{i}"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                   "right": 1000 + i}},
        {"counter": None}, {"accept": None}])


def _ruleset(indexes: range | list[int]) -> str:
    lines = "".join(f"\t\tip saddr 192.0.2.{i} tcp dport {1000 + i} counter accept\n"
                    for i in indexes)
    return ("table inet t {\n\tchain c {\n\t\ttype filter hook input priority 0;\n"
            f"{lines}\t}}\n}}\n")


@pytest.fixture
def cache_dir() -> Iterator[Path]:
    """A cache directory of this test's own, under /run (root's alone all the way up)."""
    d = Path("/run") / f"nfkit-test-{uuid.uuid4().hex[:12]}"
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _exists(ns: Any, cache_dir: Path, i: int, *extra: str) -> int:
    env = {**os.environ, "NFKIT_CACHE_DIR": str(cache_dir)}
    return ns.run([*NFKIT, "rules", "exists", "-f", "inet", "-t", "t", "-c", "c", *extra,
                   _rule(i)], check=False, env=env).returncode  # type: ignore[no-any-return]


def _load(ns: Any, text: str) -> None:
    ns.run(["nft", "-f", "-"], input=text)


def _files(cache_dir: Path) -> list[Path]:
    d = cache_dir / "exists"
    return sorted(d.iterdir()) if d.exists() else []


@pytest.mark.kernel
def test_answers_follow_changes_by_another_process(netns: Any, cache_dir: Path) -> None:
    _load(netns, _ruleset(range(N)))
    assert _exists(netns, cache_dir, N - 1) == 0  # dumped, cached
    assert len(_files(cache_dir)) == 2  # the chain's fingerprints, RULE's fingerprint
    assert _exists(netns, cache_dir, N - 1) == 0  # from the cache
    assert _exists(netns, cache_dir, N + 5) == 1  # from the cache: not there
    # nft (another process) deletes the rule: the generation moved, never the old answer
    handle = next(r["rule"]["handle"] for r in json.loads(
        netns.run("nft -j list ruleset").stdout)["nftables"]
        if "rule" in r and r["rule"]["expr"][0]["match"]["right"] == f"192.0.2.{N - 1}")
    netns.run(f"nft delete rule inet t c handle {handle}")
    assert _exists(netns, cache_dir, N - 1) == 1
    assert _exists(netns, cache_dir, N - 1) == 1
    # and adds the one that was not there
    netns.run(f"nft add rule inet t c ip saddr 192.0.2.{N + 5} tcp dport {1005 + N} counter accept")
    assert _exists(netns, cache_dir, N + 5) == 0
    assert _exists(netns, cache_dir, N + 5) == 0
    # the same rule replaced by another at the same handle (replace rule): not there
    handle = next(r["rule"]["handle"] for r in json.loads(
        netns.run("nft -j list ruleset").stdout)["nftables"]
        if "rule" in r and r["rule"]["expr"][0]["match"]["right"] == f"192.0.2.{N + 5}")
    netns.run(f"nft replace rule inet t c handle {handle} drop")
    assert _exists(netns, cache_dir, N + 5) == 1


@pytest.mark.kernel
def test_no_answer_from_another_namespace(cache_dir: Path) -> None:
    """Namespace B reuses dead A's inode (the kernel hands inode numbers out again) and
    reaches the same generation with another ruleset: A's cache never answers for B."""
    with Lab("nkc") as lab:
        a = lab.add("a")
        _load(a, _ruleset(range(N)))  # rule N absent
        ino_a = int(a.run("stat -L -c %i /proc/self/ns/net").stdout)
        gen_a = a.run(["python3", "-c", _GEN]).stdout.split()
        assert _exists(a, cache_dir, N) == 1
        assert _exists(a, cache_dir, 3) == 0
    with Lab("nkc") as lab:
        b = lab.add("a")
        _load(b, _ruleset([*range(3), *range(4, N + 1)]))  # rule N present, rule 3 absent
        ino_b = int(b.run("stat -L -c %i /proc/self/ns/net").stdout)
        gen_b = b.run(["python3", "-c", _GEN]).stdout.split()
        assert gen_a[0] == gen_b[0]  # the same generation id
        assert gen_a[1] != gen_b[1]  # never the same cookie
        assert _exists(b, cache_dir, N) == 0
        assert _exists(b, cache_dir, 3) == 1
        # the inode was reused (so an inode key would have answered from A's cache)
        # or not: either way the answers are B's.
        del ino_a, ino_b
    # two namespaces alive at once, at the same generation, other rulesets
    with Lab("nkc") as lab:
        x, y = lab.add("x"), lab.add("y")
        _load(x, _ruleset(range(N)))
        _load(y, _ruleset(range(1, N + 1)))
        conn_x = subprocess.run(x.argv(["python3", "-c", _GEN]), capture_output=True, text=True)
        conn_y = subprocess.run(y.argv(["python3", "-c", _GEN]), capture_output=True, text=True)
        assert conn_x.stdout.split()[0] == conn_y.stdout.split()[0]  # the same generation
        assert conn_x.stdout.split()[1] != conn_y.stdout.split()[1]  # other cookies
        for _ in range(2):
            assert _exists(x, cache_dir, 0) == 0 and _exists(y, cache_dir, 0) == 1
            assert _exists(x, cache_dir, N) == 1 and _exists(y, cache_dir, N) == 0


_SRC = str(Path(__file__).resolve().parents[2] / "src")
_GEN = f"""
import sys
sys.path[:0] = [{_SRC!r}]
from nfkit.nftables.existscache import Conn, generation, netns_key
c = Conn()
print(generation(c), netns_key(c)[1])
"""


@pytest.mark.kernel
def test_a_file_another_user_could_write_is_not_read(netns: Any, cache_dir: Path) -> None:
    _load(netns, _ruleset(range(N)))
    assert _exists(netns, cache_dir, 7) == 0
    chain_file = max(_files(cache_dir), key=lambda p: p.stat().st_size)
    good = chain_file.read_bytes()
    # a forged cache with the right header and no rules: "not there" if it were read
    forged = good[:good.index(b"\n", len(existscache.MAGIC)) + 1]
    chain_file.write_bytes(forged)
    os.chown(chain_file, 65534, 65534)
    assert _exists(netns, cache_dir, 7) == 0
    for mode, owner in ((0o666, 0), (0o600, 65534)):
        chain_file = max(_files(cache_dir), key=lambda p: p.stat().st_size)
        chain_file.write_bytes(forged)
        os.chown(chain_file, owner, owner)
        os.chmod(chain_file, mode)
        assert _exists(netns, cache_dir, 7) == 0
    # a directory another user may write: not used at all
    os.chmod(cache_dir / "exists", 0o777)
    for f in _files(cache_dir):
        f.unlink()
    assert _exists(netns, cache_dir, 7) == 0
    assert _files(cache_dir) == []


@pytest.mark.kernel
def test_a_user_cannot_write_the_cache(netns: Any, cache_dir: Path,
                                       nobody_nfkit: list[str]) -> None:
    _load(netns, _ruleset(range(N)))
    assert _exists(netns, cache_dir, 7) == 0
    victim = _files(cache_dir)[0]
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "sh", "-c", f"echo x > {victim} || echo x > {cache_dir}/exists/new"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "ermission denied" in r.stderr
    # nobody's own directory in a world-writable place is not root's cache
    tmp = Path(f"/tmp/nfkit-test-{uuid.uuid4().hex[:8]}")
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    "mkdir", "-p", f"{tmp}/exists"], check=True)
    try:
        assert _exists(netns, tmp, 7) == 0 and _exists(netns, tmp, N + 1) == 1
        assert list((tmp / "exists").iterdir()) == []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_kernel_numbers_are_the_specs() -> None:
    from nfkit.netlink import consts
    from nfkit.netlink.consts import NFNL_SUBSYS_NFTABLES, nfnl_msg_type
    from nfkit.netlink.specs.nftables import MSG, SetFlags, num
    from nfkit.nftables import plainelements as pe
    from nfkit.nftables import quicknl
    from nfkit.nftables.dumpreq import FAMILY_NUM
    from nfkit.nftables.types import T

    for name in ("getgen", "getrule", "getset", "newsetelem", "delsetelem"):
        assert getattr(quicknl, name.upper()) == nfnl_msg_type(NFNL_SUBSYS_NFTABLES, MSG[name])
    for name in ("NETLINK_NETFILTER", "NFNL_SUBSYS_NFTABLES", "NLM_F_REQUEST", "NLM_F_ACK",
                 "NLM_F_CREATE", "NLMSG_ERROR", "NLMSG_DONE", "NFNL_MSG_BATCH_BEGIN",
                 "NFNL_MSG_BATCH_END"):
        assert getattr(quicknl, name) == getattr(consts, name), name
    assert existscache.GETGEN == quicknl.GETGEN and existscache.GETRULE == quicknl.GETRULE
    assert existscache.NFTA_GEN_ID == num("gen", "id")
    assert (existscache.NFTA_RULE_TABLE, existscache.NFTA_RULE_CHAIN, existscache.NFTA_RULE_HANDLE,
            existscache.NFTA_RULE_EXPRESSIONS) == tuple(
        num("rule", k) for k in ("table", "chain", "handle", "expressions"))
    assert existscache.FAMILY_NUM == quicknl.FAMILY_NUM == FAMILY_NUM
    assert (pe.NFTA_SET_TABLE, pe.NFTA_SET_NAME, pe.NFTA_SET_FLAGS, pe.NFTA_SET_KEY_TYPE,
            pe.NFTA_SET_KEY_LEN, pe.NFTA_SET_DATA_TYPE) == tuple(
        num("set", k) for k in ("table", "name", "flags", "key_type", "key_len", "data_type"))
    assert (pe.NFTA_SET_ELEM_LIST_TABLE, pe.NFTA_SET_ELEM_LIST_SET, pe.NFTA_SET_ELEM_LIST_ELEMENTS
            ) == tuple(num("set_elem_list", k) for k in ("table", "set", "elements"))
    assert (pe.NFTA_LIST_ELEM, pe.NFTA_SET_ELEM_KEY, pe.NFTA_DATA_VALUE) == (
        num("list", "elem"), num("set_elem", "key"), num("data", "value"))
    assert pe.NLA_F_NESTED == consts.NLA_F_NESTED
    assert pe.NOT_PLAIN == SetFlags.INTERVAL | SetFlags.MAP | SetFlags.OBJECT | SetFlags.CONCAT
    assert {k: w for k, (_af, w) in pe.ADDRESS_TYPES.items()} == {
        T["ipv4_addr"].id: T["ipv4_addr"].size, T["ipv6_addr"].id: T["ipv6_addr"].size}


_QUICK_IMPORTS = f"""
import atexit, os, sys
sys.path[:0] = [{_SRC!r}]
before = set(sys.modules)
report = lambda: print(" ".join(sorted(set(sys.modules) - before)), flush=True)
atexit.register(report)
end = os._exit  # the quick answer ends by os._exit (no atexit): reported from there too
os._exit = lambda status: (report(), end(status))
from nfkit.cli.entry import run
run(sys.argv[1:])
"""


@pytest.mark.kernel
def test_the_quick_path_imports_only_what_it_needs(netns: Any, cache_dir: Path) -> None:
    """An answer from the cache costs a few milliseconds after the interpreter's start,
    as long as nothing heavy is imported: no click, typing, json, socket or collections
    (each costs as much as the answer), nothing of netlink/ or the compiler."""
    _load(netns, _ruleset(range(N)))
    assert _exists(netns, cache_dir, 7) == 0  # the full path: dumped, cached, remembered
    env = {**os.environ, "NFKIT_CACHE_DIR": str(cache_dir)}
    for i, want in ((7, 0), (N + 3, None)):
        if want is None:  # a rule never asked: the full path must answer
            assert _exists(netns, cache_dir, i) == 1
            want = 1
        r = netns.run(["python3", "-c", _QUICK_IMPORTS, "rules", "exists", "-f", "inet", "-t",
                       "t", "-c", "c", _rule(i)], check=False, env=env)
        assert r.returncode == want, r.stderr
        imported = set(r.stdout.split())
        assert "nfkit.nftables.existscache" in imported  # answered by the quick path
        heavy = {"click", "typing", "json", "socket", "re", "collections", "nfkit.netlink",
                 "nfkit.nftables.listing"}
        assert not imported & heavy, sorted(imported & heavy)


_ROUND_TRIPS = f"""
import sys
sys.path[:0] = [{_SRC!r}]
from nfkit.nftables import existscache
calls = []


class Counted:  # the socket, every send and receive counted
    def __init__(self, sock):
        self.sock = sock

    def send(self, data):
        calls.append("send")
        return self.sock.send(data)

    def recv(self, size):
        calls.append("recv")
        return self.sock.recv(size)

    def __getattr__(self, name):
        return getattr(self.sock, name)


plain = existscache.Conn.__init__


def counted(self):
    plain(self)
    self.sock = Counted(self.sock)


existscache.Conn.__init__ = counted
print(existscache.quick("inet", "t", "c", sys.argv[1]), " ".join(calls))
"""


@pytest.mark.kernel
def test_an_answer_from_the_cache_is_one_getgen_and_one_getrule(netns: Any, cache_dir: Path) -> None:
    """Two requests, two replies: no ACK asked for after the reply to a GET (each
    would be one more message for the kernel to build and one more receive)."""
    _load(netns, _ruleset(range(N)))
    assert _exists(netns, cache_dir, N - 1) == 0  # the full path: dumped, cached, remembered
    assert _exists(netns, cache_dir, N + 1) == 1
    env = {**os.environ, "NFKIT_CACHE_DIR": str(cache_dir)}
    found = netns.run(["python3", "-c", _ROUND_TRIPS, _rule(N - 1)], env=env).stdout.split()
    assert found == ["True", "send", "recv", "send", "recv"]
    absent = netns.run(["python3", "-c", _ROUND_TRIPS, _rule(N + 1)], env=env).stdout.split()
    assert absent == ["False", "send", "recv"]  # not in the cache of this generation
    # a handle the chain does not have: the kernel's refusal is the one reply, None
    conn_snippet = (f"import sys; sys.path[:0] = [{_SRC!r}]\n"
                    "from nfkit.nftables.existscache import Conn, get_rule_exprs\n"
                    "print(get_rule_exprs(Conn(), ('inet', 't', 'c'), 1 << 40))")
    assert netns.run(["python3", "-c", conn_snippet]).stdout.split() == ["None"]


def _launcher() -> Path:
    """The `nfkit` command the install put beside this interpreter."""
    return Path(sys.executable).parent / "nfkit"


@pytest.mark.kernel
def test_the_installed_command_imports_neither_re_nor_typing_to_answer(netns: Any,
                                                                       cache_dir: Path) -> None:
    """`.venv/bin/nfkit` is our own launcher: pip's generated console script imports
    `re` first (7 ms of CPU, more than the answer from the cache)."""
    _load(netns, _ruleset(range(N)))
    assert _exists(netns, cache_dir, 7) == 0
    env = {**os.environ, "NFKIT_CACHE_DIR": str(cache_dir)}
    r = netns.run([sys.executable, "-X", "importtime", str(_launcher()), "rules", "exists", "-f",
                   "inet", "-t", "t", "-c", "c", _rule(7)], check=False, env=env)
    assert r.returncode == 0, r.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    assert "nfkit.nftables.existscache" in imported
    assert not imported & {"re", "typing", "click", "json", "socket"}, sorted(imported)
    # and every other command still goes through it
    r = netns.run([str(_launcher()), "rules", "list"], check=False, env=env)
    assert r.returncode == 0 and "192.0.2.7" in r.stdout, r.stderr
    r = netns.run([str(_launcher()), "rules", "nosuchcommand"], check=False, env=env)
    assert r.returncode == 2 and r.stderr.startswith("nfkit: "), r.stderr


def _nla(typ: int, payload: bytes) -> bytes:
    import struct

    return struct.pack("=HH", 4 + len(payload), typ) + payload + bytes(-len(payload) % 4)


def _expr(name: str, data: bytes) -> bytes:
    return _nla(1 | 0x8000, _nla(1, name.encode() + b"\0") + _nla(2 | 0x8000, data))


def test_the_digest_leaves_out_counter_values_only() -> None:
    """A rule's digest does not move with its counters' values, and moves with anything else,
    also with a compared value that reads "counter"."""
    digest = existscache.expr_digest
    cmp = _expr("cmp", _nla(1, b"\0\0\0\1") + _nla(3 | 0x8000, _nla(1, b"counter\0")))
    counter = [_expr("counter", _nla(1, n.to_bytes(8, "big")) + _nla(2, n.to_bytes(8, "big")))
               for n in (0, 7, 1 << 40)]
    accept = _expr("immediate", _nla(1, b"\0\0\0\0"))
    with_counters = {digest(cmp + c + accept) for c in counter}
    assert len(with_counters) == 1
    other_cmp = cmp.replace(b"counter\0", b"countex\0")
    assert digest(other_cmp + counter[0] + accept) not in with_counters
    assert digest(cmp + accept) not in with_counters  # a counter less
    assert digest(cmp + counter[0]) not in with_counters
    # no counter: every byte counts, a "counter" in compared data included
    assert digest(cmp + accept) != digest(other_cmp + accept)
