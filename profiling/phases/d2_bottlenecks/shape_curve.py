"""D2's linear-layer shape curve, analysed (reads the rows linear_shapes.py wrote; never runs the model).

The table: per dtype, kernel (aten: F.linear; prepacked: packed once for oneDNN) and rows M, the median time of one
pass over every weight matrix (ms) with its 95% bootstrap CI, n and whether it stopped at the repeat cap; the time
per row (ms); the achieved bandwidth (weight bytes read / median time, GB/s) and its share of D2's one bandwidth
roof (roof.py); the achieved GFLOP/s. Rows measured before the kernels were compared count as aten.

The verdict keys (findings.json "linear_shapes"; the templates word them):
    engine_kernel how the engine runs this model's linear layers in this run: "prepacked" | "aten" (D2's meta.json,
                  else env.json's cpu_linears) | None (a GPU run).
    bf16_path     why bfloat16 is slow or fast here, from the CPU's flags (env.json / D2's meta.json):
                  "amx" (AMX tiles: amx_bf16 + amx_tile), "avx512_bf16" (AVX-512 BF16 dot products), "emulated"
                  (neither: bfloat16 is converted to float32 around float32 arithmetic), "cuda" (a GPU run),
                  "unknown" (nothing recorded). vector_isa: the widest float32 vector ISA (avx512f, avx2, other).
    shapes        per kernel, per dtype (shapes[kernel][dtype]):
      scaling     how time grows from the fewest to the most rows, by the log-log slope
                  s = log(t_max / t_min) / log(M_max / M_min): "flat" (s < FLAT_SLOPE: the weights read once serve
                  every row), "linear" (s > LINEAR_SLOPE: each row costs about as much as the first, the arithmetic
                  is the limit), else "grows".
      jump_rows   the first M whose time is at least `jump_ratio` x the previous M's (None: no jump);
                  per_row_stops_falling_at: the first M whose time per row is not below the previous M's.
    float32_jump  aten's float32: "gemv_to_gemm" when it jumps at M = 2 right after M = 1 (one row is a
                  matrix-vector product, two rows a matrix-matrix one: the BLAS library switches kernels there),
                  "later" when it jumps at a larger M, "none" without a jump (None without those points).
    bf16_vs_float32  per kernel: bfloat16 time / float32 time at the fewest and at the most rows; "faster" below
                  1 - SIMILAR, "slower" above 1 + SIMILAR, else "similar".
    small_batch_vs_prepacked  float32, when both ran: our small-batch kernel's time / prepacked time at the fewest
                  and the most rows (same words), `slower_from_rows` (the first M where it takes longer than
                  prepacked; None: never) and `max_rows` (the M up to which `cpu_linears: small_batch` uses it)
    prepacked_vs_aten  per dtype timed by both kernels: prepacked time / aten time at the fewest and the most rows
                  (same words), and `jumps`: "only_aten" (F.linear jumps, the packed kernel does not), "both",
                  "neither" or "only_prepacked".
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ...stats import bootstrap_ratio_ci, precision, summarize
METRIC = "linear_pass_s"  # the tidy metric of one pass over every linear layer (seconds)

FLAT_SLOPE = 0.2  # s < 0.2: time grows by less than 1.75x over 16x the rows
LINEAR_SLOPE = 0.7  # s > 0.7: time grows by more than 7x over 16x the rows
SIMILAR = 0.1  # bfloat16 within ±10% of float32 is "similar"
KERNELS = ("aten", "prepacked", "small_batch")  # the table's order
COLUMNS = ["dtype", "kernel", "rows", "n", "pass_ms_p50", "pass_ms_ci95_low", "pass_ms_ci95_high", "half_width_ratio",
           "at_cap", "pass_ms_min", "pass_ms_max", "per_row_ms", "matrices", "weight_bytes", "gb_per_s",
           "roof_share", "gflop_per_s"]


def samples(measurements: pd.DataFrame) -> pd.DataFrame:
    """The timed passes: rows of metric linear_pass_s, kernel "aten" where none was recorded (an empty frame when
    the curve was not measured)."""
    if "dtype" not in measurements or "rows" not in measurements:
        return pd.DataFrame(columns=["dtype", "kernel", "rows", "value", "work_bytes", "work_flops", "matrices"])
    passes = measurements[measurements["metric"] == METRIC]
    kernel = passes["kernel"].fillna("aten") if "kernel" in passes else "aten"
    return passes.assign(kernel=kernel)


def curve_table(measurements: pd.DataFrame, roof_bytes_per_s: float, repeat_policy: dict | None) -> pd.DataFrame:
    """One row per (dtype, kernel, rows) in COLUMNS (see the module docstring); `repeat_policy` as meta.json
    recorded it."""
    passes = samples(measurements)
    rows = []
    for (dtype, kernel, count), group in passes.groupby(["dtype", "kernel", "rows"], sort=False):
        seconds = group["value"].astype(float).tolist()
        stats = summarize(seconds)
        median_s = stats["p50"]
        weight_bytes, flops = float(group["work_bytes"].iloc[0]), float(group["work_flops"].iloc[0])
        rows.append({
            "dtype": dtype, "kernel": kernel, "rows": int(count), "n": stats["n"],
            "pass_ms_p50": median_s * 1e3, "pass_ms_ci95_low": stats["ci95_low"] * 1e3,
            "pass_ms_ci95_high": stats["ci95_high"] * 1e3, "half_width_ratio": stats["half_width_ratio"],
            "at_cap": precision(seconds, repeat_policy)["at_cap"],
            "pass_ms_min": stats["min"] * 1e3, "pass_ms_max": stats["max"] * 1e3,
            "per_row_ms": median_s * 1e3 / int(count), "matrices": int(group["matrices"].iloc[0]),
            "weight_bytes": int(weight_bytes), "gb_per_s": weight_bytes / median_s / 1e9,
            "roof_share": weight_bytes / median_s / roof_bytes_per_s, "gflop_per_s": flops / median_s / 1e9,
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    order = {"dtype": _dtype_order, "kernel": lambda k: KERNELS.index(k) if k in KERNELS else len(KERNELS)}
    return table.sort_values(["dtype", "kernel", "rows"], key=lambda c: c.map(order[c.name]) if c.name in order else c,
                             ignore_index=True)


def medians(table: pd.DataFrame, dtype: str, kernel: str) -> pd.Series:
    """Median ms per pass by rows for one (dtype, kernel) of the table (empty when not measured)."""
    return table[(table["dtype"] == dtype) & (table["kernel"] == kernel)].set_index("rows")["pass_ms_p50"]


def _dtype_order(dtype: str) -> int:
    """float32 first, then the lower precisions in a fixed order."""
    return {"float32": 0, "bfloat16": 1, "float16": 2}.get(dtype, 3)


# ---- the ISA ---------------------------------------------------------------------------------------------------
def bf16_path(env: dict) -> str:
    """amx | avx512_bf16 | emulated | cuda | unknown, from an env record (device, cpu_flags, cpu_capability,
    torch_amx_tile, torch_avx512_bf16); see the module docstring."""
    if str(env.get("device", "")).startswith("cuda"):
        return "cuda"
    flags = set(env.get("cpu_flags") or [])
    if {"amx_bf16", "amx_tile"} <= flags or env.get("torch_amx_tile"):
        return "amx"
    if "avx512_bf16" in flags or env.get("torch_avx512_bf16"):
        return "avx512_bf16"
    if env.get("cpu_flags") is not None or env.get("cpu_capability"):
        return "emulated"
    return "unknown"


def vector_isa(env: dict) -> str:
    """The widest float32 vector ISA: avx512f | avx2 | other (from the flags, else torch's cpu_capability)."""
    flags = set(env.get("cpu_flags") or [])
    capability = str(env.get("cpu_capability") or "").upper()
    if "avx512f" in flags or capability.startswith("AVX512"):
        return "avx512f"
    if "avx2" in flags or capability == "AVX2":
        return "avx2"
    return "other"


# ---- the curve's shape ---------------------------------------------------------------------------------------------
def scaling(slope: float) -> str:
    """flat | grows | linear, from the log-log slope of time against rows."""
    if slope < FLAT_SLOPE:
        return "flat"
    return "linear" if slope > LINEAR_SLOPE else "grows"


def dtype_shape(curve: pd.DataFrame, passes: pd.DataFrame, jump_ratio: float) -> dict:
    """The shape of one dtype's curve (its table rows, sorted by rows; its raw passes): growth and slope from the
    fewest to the most rows, scaling, jump_rows and the step ratio there, per_row_stops_falling_at, and t(2)/t(1)
    with its 95% bootstrap CI (NaN without both)."""
    times = {int(count): float(ms) for count, ms in zip(curve["rows"], curve["pass_ms_p50"])}
    counts = sorted(times)
    growth = times[counts[-1]] / times[counts[0]] if len(counts) > 1 else float("nan")
    slope = math.log(growth) / math.log(counts[-1] / counts[0]) if len(counts) > 1 else float("nan")
    jump_rows, jump_step, stops = None, float("nan"), None
    for previous, count in zip(counts, counts[1:]):
        step = times[count] / times[previous]
        if jump_rows is None and step >= jump_ratio:
            jump_rows, jump_step = count, step
        if stops is None and times[count] / count >= times[previous] / previous:
            stops = count
    ratio = (float("nan"),) * 3
    if 1 in times and 2 in times:
        seconds = {count: passes.loc[passes["rows"] == count, "value"].astype(float) for count in (1, 2)}
        ratio = bootstrap_ratio_ci(seconds[2], seconds[1])
    shape = {"rows_min": counts[0], "rows_max": counts[-1], "growth": growth, "slope": slope,
             "scaling": scaling(slope) if len(counts) > 1 else None, "jump_rows": jump_rows, "jump_step": jump_step,
             "per_row_stops_falling_at": stops, "ratio_2_1": ratio[0], "ratio_2_1_low": ratio[1],
             "ratio_2_1_high": ratio[2]}
    return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in shape.items()}


def ratio_word(ratio: float) -> str:
    """faster | similar | slower for a time ratio (within ±SIMILAR is similar)."""
    return "faster" if ratio < 1 - SIMILAR else "slower" if ratio > 1 + SIMILAR else "similar"


def compare(a: pd.Series, b: pd.Series) -> dict | None:
    """a / b (median ms by rows) at the fewest and the most rows both measured, with their words; None without
    a common M."""
    common = sorted(set(a.index) & set(b.index))
    if not common:
        return None
    low, high = common[0], common[-1]
    return {"rows_min": int(low), "ratio_min": float(a[low] / b[low]), "at_min": ratio_word(a[low] / b[low]),
            "rows_max": int(high), "ratio_max": float(a[high] / b[high]), "at_max": ratio_word(a[high] / b[high])}


def versus(table: pd.DataFrame, dtype: str, reference: str = "float32", kernel: str = "aten") -> dict | None:
    """`dtype` time / `reference` time by one kernel (compare)."""
    return compare(medians(table, dtype, kernel), medians(table, reference, kernel))


def kernels_compared(table: pd.DataFrame, shapes: dict, dtype: str) -> dict | None:
    """prepacked time / aten time for `dtype` (compare) and `jumps`: only_aten | both | neither | only_prepacked
    (which kernel's curve has a jump); None unless both kernels timed `dtype`."""
    if dtype not in shapes.get("aten", {}) or dtype not in shapes.get("prepacked", {}):
        return None
    ratios = compare(medians(table, dtype, "prepacked"), medians(table, dtype, "aten"))
    if ratios is None:
        return None
    aten, packed = (shapes[kernel][dtype]["jump_rows"] is not None for kernel in ("aten", "prepacked"))
    jumps = {(True, False): "only_aten", (True, True): "both", (False, False): "neither",
             (False, True): "only_prepacked"}[(aten, packed)]
    return {**ratios, "jumps": jumps}


def small_batch_compared(table: pd.DataFrame, max_rows: int | None) -> dict | None:
    """Our small-batch kernel's float32 time / prepacked's (compare), the first M where it is slower and the M up to
    which the engine's small_batch setting uses it; None unless both timed float32."""
    ours, packed = medians(table, "float32", "small_batch"), medians(table, "float32", "prepacked")
    ratios = compare(ours, packed)
    if ratios is None:
        return None
    slower = [int(rows) for rows in sorted(set(ours.index) & set(packed.index)) if ours[rows] > packed[rows]]
    return {**ratios, "slower_from_rows": slower[0] if slower else None, "max_rows": max_rows}


def float32_jump(shape: dict | None) -> str | None:
    """gemv_to_gemm | later | none from float32's shape (dtype_shape); None without float32 points."""
    if shape is None:
        return None
    if shape["jump_rows"] is None:
        return "none"
    return "gemv_to_gemm" if shape["jump_rows"] == 2 and shape["rows_min"] == 1 else "later"


def curve_findings(table: pd.DataFrame, measurements: pd.DataFrame, env: dict, jump_ratio: float) -> dict | None:
    """findings.json's "linear_shapes": the table's records, engine_kernel, the ISA keys, each (kernel, dtype)'s
    shape, float32_jump, bf16_vs_float32 and prepacked_vs_aten (see the module docstring); None when the curve was
    not measured. `env`: env.json's record with D2's meta notes (isa, engine_kernel) over it."""
    if table.empty:
        return None
    passes = samples(measurements)
    shapes = {}
    for (kernel, dtype), curve in table.groupby(["kernel", "dtype"], sort=False):
        own = passes[(passes["kernel"] == kernel) & (passes["dtype"] == dtype)]
        shapes.setdefault(kernel, {})[dtype] = dtype_shape(curve.sort_values("rows"), own, jump_ratio)
    dtypes = list(table["dtype"].unique())
    first = table.iloc[0]
    return {
        "points": table.replace({np.nan: None}).to_dict(orient="records"),
        "dtypes": dtypes,
        "kernels": list(shapes),
        "rows": sorted(int(r) for r in table["rows"].unique()),
        "matrices": int(first["matrices"]),
        "engine_kernel": env.get("engine_kernel", env.get("cpu_linears")),
        "isa": {key: env.get(key) for key in ("cpu_capability", "cpu_flags", "torch_amx_tile", "torch_avx512_bf16")},
        "bf16_path": bf16_path(env),
        "vector_isa": vector_isa(env),
        "shapes": shapes,
        "jump_ratio": jump_ratio,
        "float32_jump": float32_jump(shapes.get("aten", {}).get("float32")),
        "bf16_vs_float32": {kernel: versus(table, "bfloat16", kernel=kernel) for kernel, by_dtype in shapes.items()
                            if {"float32", "bfloat16"} <= set(by_dtype)},
        "small_batch_vs_prepacked": small_batch_compared(table, env.get("small_batch_max_rows")),
        "prepacked_vs_aten": {dtype: found for dtype in dtypes
                              if (found := kernels_compared(table, shapes, dtype)) is not None},
        "at_cap_points": int(table["at_cap"].sum()),
    }
