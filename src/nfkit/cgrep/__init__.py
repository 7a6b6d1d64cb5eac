"""cgrep: a semantic grep for C, answering coccigrep's questions without spatch.

"Where is member ``status`` of a ``struct nf_conn`` set?"  cgrep parses C with
tree-sitter, types the object of each candidate member access through a small
per-file type environment (parameters, locals, globals, struct and union
definitions, typedefs, and the headers found under ``-I`` directories) and
reports the accesses that answer the question.  It stands alone: it needs
nothing else from nfkit but `nfkit.errors`.

    >>> from nfkit.cgrep import make_query, search_file
    >>> report = search_file("conn.c", [make_query("struct nf_conn", "status", "set")])
    >>> [(m.line, m.column) for m in report.matches]
"""

from nfkit.cgrep.ctype import CType
from nfkit.cgrep.inputs import FileSet, collect
from nfkit.cgrep.query import OPERATIONS, Query, make_query, parse_expression
from nfkit.cgrep.runner import search_files
from nfkit.cgrep.search import FileReport, Match, Searcher, search_file

__all__ = [
    "CType", "FileReport", "FileSet", "Match", "OPERATIONS", "Query", "Searcher",
    "collect", "make_query", "parse_expression", "search_file", "search_files",
]
