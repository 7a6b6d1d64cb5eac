"""nfgrep: layer-7 classification with a small compiled language.

Stages, as in CPython's `re`: `parser` (text -> checked `tree`), `compiler`
(tree -> `bytecode.Program`, saved as .nfgb), `verifier` (refuses unsafe
programs), `codegen` (verified bytecode -> Python functions, once) and
`engine` (runs them per flow).  The language is documented in docs/nfgrep.md;
the shipped signatures live in `signatures/`.
"""
