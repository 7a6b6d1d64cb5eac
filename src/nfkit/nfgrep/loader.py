"""Rule files -> verified, translated signatures: reading .nfg and .nfgb files, and the caches.

Owns: where the shipped library is, which files a path or directory names, the
cache of compiled .nfg files, the cache of translated rule sets, and turning
each file into `Signature`s (verified first, always).  Must not know: how flows
are classified (the engine) or how text is compiled (the compiler, imported
only for a .nfg that is not cached).

The cache keeps each compiled .nfg as .nfgb under ``$NFKIT_CACHE_DIR`` (empty:
off), else ``$XDG_CACHE_HOME/nfkit/nfgrep`` or ``~/.cache/nfkit/nfgrep``,
named by the SHA-256 of the file's text and of the bytecode and compiler
versions (`VERSION`, `COMPILER_VERSION`): an entry made by another compiler is
never used.  An entry is read only when it is a regular file owned by the user
and writable by nobody else; it is decoded and verified like any .nfgb, so it
can never run code, only fail to match.  A cache that cannot be read or
written is ignored.

The same directory keeps, per set of rule files loaded together, the
signatures `load_rules` made of them: verified, translated and compiled to
Python code (about 0.03 s of every start for the shipped library, most of it
`compile()`).  That entry holds code, so it is trusted as Python trusts its
own ``__pycache__``, and no further: it is read only on the conditions above
(one link, too), named by the SHA-256 of everything it was made from (each
rule file's path and text, the source of every module from the parser to the
engine, nfkit's and Python's versions, ``counting``), and it carries that
name and the SHA-256 of its contents, checked before it is decoded.  An entry
that fails any check is not used (the rules are loaded from their files and
the entry written again).  Writing an entry removes those written more than
`RULES_MAX_AGE` ago.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import nfkit
from nfkit.errors import InputError
from nfkit.nfgrep.bytecode import COMPILER_VERSION, VERSION, Program, decode, encode
from nfkit.nfgrep.engine import Rules, from_record, record_of, signatures_of
from nfkit.privatefile import read_private

SIGNATURES = Path(__file__).with_name("signatures")
# the modules that make signatures of rule files: a change to any of them is a new cache entry
PIPELINE = ("parser.py", "tree.py", "compiler.py", "bytecode.py", "errors.py", "verifier.py",
            "codegen.py", "engine.py", "loader.py")
_RULES_MAGIC = b"nfgrep rules 1\n"
RULES_MAX_AGE = 30 * 86400  # seconds: an older rule-set entry goes when another is written


def cache_dir() -> Path | None:
    """Where compiled .nfg files are kept (see the module docstring); None: off."""
    env = os.environ.get("NFKIT_CACHE_DIR")
    if env is not None:
        return Path(env) if env else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nfkit" / "nfgrep"


def cache_key(text: bytes) -> str:
    """The cache entry's name for a rule file's text under this bytecode and compiler."""
    h = hashlib.sha256(f"nfgrep {VERSION}.{COMPILER_VERSION}\0".encode())
    h.update(text)
    return h.hexdigest()


def _store(path: Path, blob: bytes) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except OSError:
        pass


def load_program(path: str | Path) -> Program:
    """Read a .nfg (compiled on the fly, or from the cache) or .nfgb file, unverified.

    Raises InputError (BytecodeError, NfgrepSyntaxError).
    """
    p = Path(path)
    if p.suffix == ".nfgb":
        try:
            blob = p.read_bytes()
        except OSError as exc:
            raise InputError(f"{p}: cannot read program: {exc.strerror}") from None
        return decode(blob, str(p))
    entry = None
    cache = cache_dir()
    if cache is not None:
        try:
            entry = cache / f"{cache_key(p.read_bytes())}.nfgb"
        except OSError:
            entry = None  # the compiler says why it cannot read the file
        cached = None if entry is None else read_private(entry, os.geteuid())
        if cached is not None:
            try:
                program = decode(cached, str(p))
            except InputError:
                pass
            else:
                if program.compiler == COMPILER_VERSION:
                    return program
    from nfkit.nfgrep.compiler import compile_file

    program = compile_file(p)
    if entry is not None:
        _store(entry, encode(program))
    return program


def rule_files(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str] | None = None
               ) -> list[Path]:
    """The rule files named by files or directories (None: the shipped library), in load
    order.  Raises InputError for a missing path or a directory without rule files."""
    if paths is None:
        paths = [SIGNATURES]
    elif isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in (".nfg", ".nfgb"))
            if not found:
                raise InputError(f"{p}: no .nfg or .nfgb file in this directory")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise InputError(f"{p}: no such rule file or directory")
    return files


def load_rules(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
               counting: bool = False) -> Rules:
    """Load, verify and translate rule files (.nfg or .nfgb) or directories of them.

    None loads the library shipped with nfkit.  The result comes from the
    cache when it holds these files (see the module docstring).  Raises
    InputError (syntax, bytecode or verifier errors, unreadable or missing
    paths).
    """
    files = rule_files(paths)
    key = rules_key(files, counting)
    cache = cache_dir()
    entry = None
    if key is not None and cache is not None:
        entry = cache / f"{key}.rules"
        rules = _cached_rules(entry, key)
        if rules is not None:
            return rules
    from nfkit.nfgrep.verifier import verify

    rules = Rules()
    for f in files:
        rules.extend(signatures_of(verify(load_program(f)), counting))
    if entry is not None:
        try:
            payload = marshal.dumps((key, [record_of(s) for s in rules]))
        except ValueError:  # (not reached: a record is plain values and code)
            return rules
        _store(entry, _RULES_MAGIC + hashlib.sha256(payload).digest() + payload)
        _prune(entry.parent)
    return rules


def _prune(cache: Path) -> None:
    """Remove rule-set entries written more than `RULES_MAX_AGE` ago: each new nfkit source
    or rule set makes one, and an entry still in use is only written again (once)."""
    now = time.time()
    try:
        with os.scandir(cache) as found:
            old = [e.path for e in found if e.name.endswith(".rules")
                   and e.stat(follow_symlinks=False).st_mtime < now - RULES_MAX_AGE]
        for path in old:
            os.unlink(path)
    except OSError:
        pass


def rules_key(files: list[Path], counting: bool = False) -> str | None:
    """The cache entry's name for these rule files loaded together (None: a file or a
    module's source cannot be read, no entry)."""
    h = hashlib.sha256(_RULES_MAGIC)
    h.update(f"{nfkit.__version__}\0{sys.version}\0{sys.implementation.cache_tag}\0{counting}\0".encode())
    here = Path(__file__).parent
    try:
        for name in PIPELINE:
            text = (here / name).read_bytes()
            h.update(b"%s\0%d\0" % (name.encode(), len(text)))
            h.update(text)
        for f in files:
            text = f.read_bytes()
            h.update(b"%s\0%d\0" % (os.fsencode(f), len(text)))
            h.update(text)
    except OSError:
        return None
    return h.hexdigest()


def _cached_rules(entry: Path, key: str) -> Rules | None:
    """The rules kept in ``entry`` when it passes every check (module docstring); else None."""
    blob = read_private(entry, os.geteuid(), single_link=True)
    head = len(_RULES_MAGIC) + 32
    if blob is None or not blob.startswith(_RULES_MAGIC) or len(blob) < head:
        return None
    payload = memoryview(blob)[head:]
    if hashlib.sha256(payload).digest() != blob[len(_RULES_MAGIC):head]:
        return None
    try:
        kept, records = marshal.loads(payload)
        if kept != key:
            return None
        return Rules(from_record(r) for r in records)
    except (ValueError, TypeError, EOFError):  # made by no nfkit: its digest holds, its shape not
        return None


def app_names(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str] | None = None
              ) -> list[str]:
    """Every application name the rule files can give a flow: their protocols and the
    labels their `expect` statements announce, in file order, each once."""
    from nfkit.nfgrep.bytecode import OPCODES

    expect = OPCODES["EXPECT"]
    names: dict[str, None] = {}
    for f in rule_files(paths):
        program = load_program(f)
        for proto in program.protocols:
            names[program.text(proto.name)] = None
            for step in proto.steps:
                for ins in step.code:
                    if ins.op == expect:
                        names[program.text(ins.a)] = None
    return list(names)


__all__ = ["PIPELINE", "RULES_MAX_AGE", "SIGNATURES", "app_names", "cache_dir", "cache_key", "load_program", "load_rules",
           "rule_files", "rules_key"]
