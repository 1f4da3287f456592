"""Our own CPU kernels, in C, built once per machine: small_batch.py (linear layers at 1 to 4 rows).

COMPILERS names the compilers they need (environment variable -> default); the workflow checks them before any
job starts (config.resolve_precision), without importing torch."""
import os
import shutil

COMPILERS = {"CC": "gcc", "CXX": "g++"}  # the C kernel, and its torch operators in C++


def missing_compilers() -> list[str]:
    """The compilers (as `VAR=name`) that are not on PATH: empty when the kernels can be built here."""
    return [f"{variable}={os.environ.get(variable, default)}" for variable, default in COMPILERS.items()
            if shutil.which(os.environ.get(variable, default)) is None]
