"""Our own CPU kernels, in C, built once per machine: small_batch.py (linear layers at 1 to 4 rows)."""
