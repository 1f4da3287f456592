# D3 batching rules (see ../../profiling/experiments/d3_batching.py).
