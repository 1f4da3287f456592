# D2 bottlenecks rules (see ../../profiling/experiments/d2_bottlenecks.py).
