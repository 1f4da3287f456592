"""Our own CPU kernels, in C, built once per machine (build.py): small_batch.py (linear layers at 1 to 32 rows) and
paged_attention.c (the server's decode attention over its paged KV pool).

COMPILERS names the compilers they need (environment variable -> default); the workflow checks them before any
job starts (config.resolve_precision), without importing torch."""
import os
import shutil

COMPILERS = {"CC": "gcc", "CXX": "g++"}  # the C kernel, and its torch operators in C++


def compiler(variable: str) -> str:
    """The compiler that `variable` (CC or CXX) names, else its default in COMPILERS."""
    return os.environ.get(variable, COMPILERS[variable])


def missing_compilers() -> list[str]:
    """The compilers (as `VAR=name`) that are not on PATH: empty when the kernels can be built here."""
    return [f"{variable}={compiler(variable)}" for variable in COMPILERS if shutil.which(compiler(variable)) is None]
