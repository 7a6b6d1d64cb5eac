"""`nfkit rules exists` without re-reading the chain: rule fingerprints cached per
network namespace, keyed by the ruleset's generation.

This module owns the cache of one chain's rules: a fingerprint (a hash of the
rule's statements as the kernel gives them back, counters aside) and the rule's
handle, for every rule, as of one generation (NFT_MSG_GETGEN) of one network
namespace.  `exists` asks the kernel for the generation first: when it is the
cache's, a fingerprint not in the cache is not in the chain, and one in it is
confirmed by one GETRULE of its handle; when the generation moved (another
process changed the ruleset), or there is no cache, the chain is dumped and the
cache written again.  A namespace is named by its cookie (SO_NETNS_COOKIE: never
reused while the machine is up, unlike its inode) and the boot id, so neither a
namespace that reuses a dead one's inode nor a generation number that repeats in
another namespace can answer from another ruleset's cache.

Only root uses it, from a directory (default /run/nfkit/exists, NFKIT_CACHE_DIR to
move it) that it checks is root's alone all the way up (no other user can create,
replace or write a cache file), and a file is read only if root owns it and no
one else may write it.  Anything else: no cache, the chain is read as before.

`quick` serves a command that must answer in a few milliseconds after the
interpreter's start: the module imports neither json, nor socket, nor typing
(tests/nftables/test_existscache.py lists what the quick path may import), and a
chain's file is searched in place (sorted fixed-size records, a binary search by
pread), never read whole.
"""

from __future__ import annotations

import _struct as struct  # (struct.py only re-exports it: one module less to import)
import os
import stat

# blake2b without hashlib's OpenSSL import
from _blake2 import blake2b

from nfkit.nftables.quicknl import FAMILY_NUM, GETGEN, GETRULE, Conn, attr, attrs
from nfkit.privatefile import open_private, read_private

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

Path = str  # paths are plain strings here: pathlib's import costs more than the answer

MAGIC = b"nfkit-exists-cache 3\n"
# fingerprint, handle, digest of the rule's expressions as the kernel holds them
_RECORD = struct.Struct(">16sQ16s")
SO_NETNS_COOKIE = 71  # asm-generic/socket.h (Linux 5.14)
# The few kernel numbers the quick path needs without importing the specs
# (tests check them against nfkit.netlink.specs.nftables).
NFTA_GEN_ID = 1
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_EXPRESSIONS = 1, 2, 3, 4
NFTA_EXPR_NAME = 1
VERSION = "1"  # of the fingerprints: bump when the decoder's output changes


def fingerprint(expr: list[Any]) -> bytes:
    """A rule's statements (counters aside, as `listing.strip_counters` leaves them)
    -> 16 bytes; equal statements, equal fingerprints (key order does not matter)."""
    import json  # the full path's alone

    text = json.dumps(expr, sort_keys=True, separators=(",", ":"))
    return blake2b(text.encode(), digest_size=16).digest()


def _fields(*parts: object) -> bytes:
    """``parts`` as one line, unambiguously (each part's text in hex; any text, also
    the lone surrogates of an argument that was not UTF-8)."""
    return b" ".join(str(p).encode("utf-8", "surrogatepass").hex().encode() for p in parts) + b"\n"


def cache_dir() -> Path:
    return os.path.join(os.environ.get("NFKIT_CACHE_DIR", "/run/nfkit"), "exists")


def _root_only(path: Path) -> bool:
    """``path`` and every directory above it are root's, and no other user may write
    them (a sticky, world-writable parent such as /tmp does not count)."""
    p = os.path.abspath(path)
    while True:
        try:
            st = os.lstat(p)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            return False
        parent = os.path.dirname(p)
        if parent == p:
            return True
        p = parent


def usable_dir(create: bool) -> Path | None:
    """The cache directory when this process may trust it (root, the directory root's
    alone), made if ``create``; else None."""
    if os.geteuid() != 0:
        return None
    d = cache_dir()
    if create and not os.path.exists(d):
        try:
            os.makedirs(os.path.dirname(d), mode=0o755, exist_ok=True)
            os.mkdir(d, mode=0o700)
        except OSError:
            return None
    return d if _root_only(d) else None


def netns_key(conn: Conn) -> tuple[str, int]:
    """(boot id, network namespace cookie) of the namespace ``conn`` lives in."""
    fd = os.open("/proc/sys/kernel/random/boot_id", os.O_RDONLY)
    try:
        boot = os.read(fd, 64).decode().strip()
    finally:
        os.close(fd)
    raw = conn.sock.getsockopt(1, SO_NETNS_COOKIE, 8)  # SOL_SOCKET
    return boot, struct.unpack("=Q", raw)[0]


def generation(conn: Conn) -> int:
    """The ruleset's generation id (NFT_MSG_GETGEN): it moves at every commit."""
    for payload in conn.ask(GETGEN, 0) or ():
        gid = attrs(payload).get(NFTA_GEN_ID)
        if gid is not None and len(gid) == 4:
            return int.from_bytes(gid, "big")
    raise OSError("the kernel gave no generation id")


# NFTA_EXPR_NAME "counter", the first attribute of a counter expression as the kernel
# gives it back
_COUNTER_NAME = struct.pack("=HH", 12, NFTA_EXPR_NAME) + b"counter\0"


def expr_digest(exprs: bytes) -> bytes:
    """A digest of a rule's expressions (NFTA_RULE_EXPRESSIONS) as the kernel holds
    them, counter values left out (they move as packets pass): every expression
    whole, a counter's header and name only.  (A counter whose name the kernel put
    elsewhere would be hashed whole: a digest that does not confirm, never one
    that confirms wrongly.)"""
    if _COUNTER_NAME not in exprs:
        return blake2b(exprs, digest_size=16).digest()
    h = blake2b(digest_size=16)
    pos, end = 0, len(exprs)
    unpack = struct.unpack_from
    while pos + 4 <= end:
        ln = unpack("=H", exprs, pos)[0]
        if ln < 4:
            break
        if exprs.startswith(_COUNTER_NAME, pos + 4):
            h.update(exprs[pos:pos + 4 + len(_COUNTER_NAME)])
        else:
            h.update(exprs[pos:pos + ln])
        pos += (ln + 3) & ~3
    return h.digest()


class ChainCache:
    """The fingerprints of one chain's rules as of one generation: an open cache file,
    searched in place (its records are sorted by fingerprint).  Close it."""

    __slots__ = ("fd", "start", "count")

    def __init__(self, fd: int, start: int, count: int) -> None:
        self.fd = fd
        self.start = start  # offset of the first _RECORD
        self.count = count

    def close(self) -> None:
        os.close(self.fd)

    def _record(self, i: int) -> bytes:
        return os.pread(self.fd, _RECORD.size, self.start + i * _RECORD.size)

    def handles(self, fp: bytes) -> list[tuple[int, bytes]]:
        """(handle, expressions digest) of the rules with fingerprint ``fp``."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self._record(mid)[:16] < fp:
                lo = mid + 1
            else:
                hi = mid
        out = []
        while lo < self.count and (rec := self._record(lo))[:16] == fp:
            if len(rec) != _RECORD.size:
                break  # the file is shorter than it was (it never is: root's, replaced whole)
            out.append(_RECORD.unpack(rec)[1:])
            lo += 1
        return out


def _name(d: Path, *parts: object) -> Path:
    return os.path.join(d, blake2b(_fields(*parts), digest_size=16).hexdigest())


def _header(key: tuple[str, int], gen: int, where: tuple[str, str, str]) -> bytes:
    """The first line after MAGIC: the namespace, generation and chain the file is of."""
    return _fields("boot", key[0], "netns_cookie", key[1], "generation", gen, *where)


def _write_root_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (written aside, then renamed into place)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def read(d: Path, key: tuple[str, int], gen: int, where: tuple[str, str, str]
         ) -> ChainCache | None:
    """The cache of chain ``where`` (family, table, chain) when it is of generation
    ``gen`` of namespace ``key`` and root's alone (open: close it); else None."""
    opened = open_private(_name(d, "chain", key[0], key[1], *where), 0, single_link=True)
    if opened is None:
        return None
    fd, size = opened
    head = MAGIC + _header(key, gen, where)
    try:
        ok = os.pread(fd, len(head), 0) == head and (size - len(head)) % _RECORD.size == 0
    except OSError:
        ok = False
    if not ok:
        os.close(fd)
        return None
    return ChainCache(fd, len(head), (size - len(head)) // _RECORD.size)


def write(d: Path, key: tuple[str, int], gen: int, where: tuple[str, str, str],
          entries: list[tuple[bytes, int, bytes]]) -> None:
    body = b"".join(_RECORD.pack(*e) for e in sorted(entries))
    _write_root_file(_name(d, "chain", key[0], key[1], *where),
                     MAGIC + _header(key, gen, where) + body)


def _query_file(d: Path, where: tuple[str, str, str], rule_text: str) -> Path:
    return _name(d, "query", VERSION, *where, rule_text)


def remembered(d: Path, where: tuple[str, str, str], rule_text: str) -> bytes | None:
    """The fingerprint of RULE text ``rule_text`` in chain ``where``, if a full run
    remembered it (it depends on the text and the chain's table only)."""
    data = read_private(_query_file(d, where, rule_text), 0, single_link=True)
    return data if data is not None and len(data) == 16 else None


def get_rule_exprs(conn: Conn, where: tuple[str, str, str], handle: int) -> bytes | None:
    """NFTA_RULE_EXPRESSIONS of rule ``handle`` of chain ``where`` (one GETRULE), or
    None when there is no such rule."""
    fam, table, chain = where
    payload = (attr(NFTA_RULE_TABLE, table.encode() + b"\0")
               + attr(NFTA_RULE_CHAIN, chain.encode() + b"\0")
               + attr(NFTA_RULE_HANDLE, struct.pack(">Q", handle)))
    for reply in conn.ask(GETRULE, FAMILY_NUM[fam], payload) or ():
        a = attrs(reply)
        if (a.get(NFTA_RULE_HANDLE) == struct.pack(">Q", handle)
                and a.get(NFTA_RULE_CHAIN) == chain.encode() + b"\0"):
            return a.get(NFTA_RULE_EXPRESSIONS, b"")
    return None


def quick(family: str, table: str, chain: str, rule_text: str) -> bool | None:
    """`nfkit rules exists` answered from the cache alone, importing nothing of the
    rest of nfkit: True/False when the generation is the cache's and RULE's
    fingerprint was remembered (a confirming GETRULE when it is in the chain), None
    when the full path must answer."""
    if family not in FAMILY_NUM:
        return None
    d = usable_dir(create=False)
    if d is None:
        return None
    where = (family, table, chain)
    fp = remembered(d, where, rule_text)
    if fp is None:
        return None
    conn = Conn()
    try:
        key = netns_key(conn)
        cached = read(d, key, generation(conn), where)
        if cached is None:
            return None
        try:
            handles = cached.handles(fp)
        finally:
            cached.close()
        if not handles:
            return False
        for handle, digest in handles:
            exprs = get_rule_exprs(conn, where, handle)
            if exprs is not None and expr_digest(exprs) == digest:
                return True
        return None
    finally:
        conn.close()


def exists(rule: Any, rule_text: str | None = None) -> bool | None:
    """True if a rule semantically equal to ``rule`` is in its chain, from the cache
    when the ruleset's generation is the cache's (see the module's docstring), else
    from a dump of the chain (which writes the cache again).  None when this process
    may not use a cache (not root, or the directory is not root's alone): then ask
    `listing.exists`.  With ``rule_text`` (RULE as given), its fingerprint is
    remembered for `quick`.  Raises InputError when the chain does not exist."""
    from nfkit.netlink.socket import NetlinkSocket
    from nfkit.nftables.jsonfmt import no_gc
    from nfkit.nftables.listing import chain_rules, normalize, strip_counters

    d = usable_dir(create=True)
    if d is None:
        return None
    where = (rule.family, rule.table, rule.chain)
    want = strip_counters(normalize(rule.expr, rule.family, table=rule.table))
    fp = fingerprint(want)
    if rule_text is not None:
        _write_root_file(_query_file(d, where, rule_text), fp)
    conn = Conn()
    try:
        key = netns_key(conn)
        gen = generation(conn)
        cached = read(d, key, gen, where)
        if cached is not None:
            try:
                handles = cached.handles(fp)
            finally:
                cached.close()
            if not handles:
                return False  # the generation is the cache's: the chain is as it was
            for handle, digest in handles:
                exprs = get_rule_exprs(conn, where, handle)
                if exprs is not None and expr_digest(exprs) == digest:
                    return True
            # not what the cache says (a race with a commit): read the chain again
        entries: list[tuple[bytes, int, bytes]] = []
        found = False
        with NetlinkSocket() as sock, no_gc():  # 80,000 rules decoded: no cycles among them
            for r, attrs in chain_rules(sock, *where):
                have = strip_counters(r.expr)
                f = fingerprint(have)
                if f == fp and have == want:
                    found = True
                if r.handle is not None:
                    entries.append((f, r.handle,
                                    expr_digest(bytes(attrs.get(NFTA_RULE_EXPRESSIONS, b"")))))
        if generation(conn) == gen:  # the dump is of that generation: cache it
            write(d, key, gen, where, entries)
        return found
    finally:
        conn.close()
