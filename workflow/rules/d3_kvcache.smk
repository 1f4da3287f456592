# D3 KV cache rules (see ../../profiling/experiments/d3_kvcache.py).
