"""D2's linear-layer shape curve, measured: the model's own weight matrices (every linear layer's weight, lm_head
included; nn.Linear or prepacked at load) timed over all of them at M = 1, 2, 4 … rows, in each configured dtype,
by each configured kernel:

    aten       torch's `F.linear(x, W)` on the plain weight (transformers' path: MKL's GEMV at 1 row, a GEMM that
               packs the weight again at every call above)
    prepacked  the engine's CPU path (prepack.py's PrepackedLinear): each weight reordered once for oneDNN
               (`mkldnn._reorder_linear_weight`, not timed), then `mkldnn._linear_pointwise(x, packed)` per matrix;
               only on a CPU where prepack.available(dtype): float32, and bfloat16 where the CPU packs it
    small_batch  our C kernels as `cpu_linears: small_batch` runs them (kernels/small_batch.py's `linear`: the panel
               GEMM over weights laid out once, up to its MAX_ROWS; oneDNN packed above); float32 on a CPU where
               they build

One pass = one product per matrix, in model order, on an input of M rows; it reads every weight once, as a decode
step at batch M does. Per dtype the weights are made once: the model's own tensors when they already have that
dtype, else one converted copy (and, for prepacked, one packed copy). Each (dtype, kernel, rows) point warms up one
pass, then repeats passes until the median is tight (measure.RepeatPolicy over `linear_repeats`). Rows: variant
`linear_<dtype>_<kernel>`, metric `linear_pass_s` (seconds per pass), knobs rows, dtype, kernel, threads,
work_bytes (weight bytes read per pass), work_flops (2 x rows x the weights' elements per pass) and matrices.

`cpu_isa()` records which vector instructions the CPU offers for bfloat16 (from /proc/cpuinfo and torch's probes),
so the analysis can say why bfloat16 is slow or fast here.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ...measure import OutOfMemoryGuard, RepeatPolicy, repeat_until_tight
from ...kernels import small_batch
from ...prepack import PrepackedLinear, available, is_prepacked, pack_weight, packed_linear
from ...timing import sync
from .shape_curve import METRIC

ISA_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")  # the ones the verdict reads


# a CPU model's linears may be prepacked at load (prepack.py) or run by our small-batch kernel
LINEARS = (torch.nn.Linear, PrepackedLinear, small_batch.SmallBatchLinear)


def linear_weights(model) -> list[torch.Tensor]:
    """Every linear layer's weight of `model` in module order (lm_head included, also when tied to the embedding),
    whether the layer is an nn.Linear or was prepacked at load: the curve times F.linear on the plain weights."""
    return [module.weight for module in model.modules() if isinstance(module, LINEARS)]


def weights_in(weights: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """The weights in `dtype`: each tensor itself when it already is, else a converted copy (made once)."""
    return [w.detach() if w.dtype == dtype else w.detach().to(dtype) for w in weights]


def pass_work(weights: list[torch.Tensor], rows: int) -> dict:
    """Bytes of weights read (bytes) and floating-point operations (FLOPs) of one pass at `rows` rows."""
    elements = sum(w.numel() for w in weights)
    return {"work_bytes": sum(w.numel() * w.element_size() for w in weights), "work_flops": 2 * rows * elements}


def kernels_for(wanted: list[str], device: str, dtype: torch.dtype) -> list[str]:
    """The kernels of `wanted` that run here: aten always; prepacked on a CPU where oneDNN packs `dtype` (float32;
    bfloat16 not on an AVX2-only CPU); small_batch for float32 on a CPU where our kernel builds."""
    runs = {"aten": True, "prepacked": device == "cpu" and available(dtype),
            "small_batch": device == "cpu" and dtype == torch.float32 and small_batch.available()}
    return [kernel for kernel in wanted if runs.get(kernel, False)]


def matrices_for(weights: list[torch.Tensor], kernel: str) -> list[tuple]:
    """(matrix, input width) per weight as `kernel` takes it: the weight itself (aten), its oneDNN packing (prepacked,
    as PrepackedLinear does at load) or the weight and its panels (small_batch, as SmallBatchLinear does), made once
    here."""
    if kernel == "prepacked":
        return [(pack_weight(w), w.shape[1]) for w in weights]
    if kernel == "small_batch":
        return [((w, small_batch.panel_layout(w)), w.shape[1]) for w in weights]
    return [(w, w.shape[1]) for w in weights]


def aten_product(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.linear(x, weight)


def prepacked_product(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    return packed_linear(x, packed)


def small_batch_product(x: torch.Tensor, weight_and_panels: tuple) -> torch.Tensor:
    weight, panels = weight_and_panels
    return small_batch.linear(x, weight, panels=panels)


PRODUCTS = {"aten": aten_product, "prepacked": prepacked_product, "small_batch": small_batch_product}


def timed_pass(matrices: list[tuple], inputs: dict, device: str, kernel: str = "aten") -> float:
    """Seconds of one pass: `kernel`'s product of each matrix on the input of its width, the device synchronised at
    the end."""
    product = PRODUCTS[kernel]
    sync(device)
    start = time.perf_counter()
    for matrix, width in matrices:
        product(inputs[width], matrix)
    sync(device)
    return time.perf_counter() - start


def repeat_policy(settings: dict, cfg: dict) -> RepeatPolicy:
    """The curve's repeats: the run-wide adaptive block, at most `linear_repeats` passes per point."""
    return RepeatPolicy(settings, {"repeats": cfg["linear_repeats"], "warmup": 1})


def measure(model, cfg: dict, settings: dict, device: str, threads: int, rows_out, desc: str = "d2 linear") -> list:
    """Time the shape curve of `model` (cfg: linear_dtypes, linear_kernels, linear_rows, linear_repeats) and add its
    rows to `rows_out` (a metrics.Measurements); returns the [dtype, kernel, rows] points that ran out of memory.
    Nothing runs when a list is empty; prepacked is skipped where kernels_for says it cannot run."""
    policy = repeat_policy(settings, cfg)
    model_weights = linear_weights(model)
    if not model_weights and cfg["linear_rows"] and cfg["linear_dtypes"]:
        raise ValueError(f"no linear layer ({', '.join(t.__name__ for t in LINEARS)}) found in the model")
    generator = torch.Generator().manual_seed(settings["seed"])
    out_of_memory = []
    for dtype_name in cfg["linear_dtypes"]:
        dtype = getattr(torch, dtype_name)
        with torch.inference_mode():
            weights = weights_in(model_weights, dtype)
            for kernel in kernels_for(cfg["linear_kernels"], device, dtype) if cfg["linear_rows"] else []:
                variant = f"linear_{dtype_name}_{kernel}"
                matrices = matrices_for(weights, kernel)
                for rows in cfg["linear_rows"]:
                    knobs = {"rows": rows, "dtype": dtype_name, "kernel": kernel, "threads": threads,
                             **pass_work(weights, rows), "matrices": len(weights)}
                    with OutOfMemoryGuard(device) as oom:
                        inputs = {width: torch.randn(rows, width, generator=generator).to(device=device, dtype=dtype)
                                  for width in {w.shape[1] for w in weights}}
                        timed_pass(matrices, inputs, device, kernel)  # warm-up: first-call costs, kernel choice

                        def timed(repeat: int) -> dict:
                            seconds = timed_pass(matrices, inputs, device, kernel)
                            rows_out.add(variant, repeat, METRIC, seconds, request_id=-1, **knobs)
                            return {METRIC: seconds}

                        repeat_until_tight(timed, policy, desc=f"{desc} {dtype_name} {kernel} M={rows}")
                    if oom.hit:
                        oom.record(rows_out, variant, **knobs)
                        out_of_memory.append([dtype_name, kernel, rows])
                del matrices
        del weights
    return out_of_memory


def engine_kernel(model) -> str | None:
    """How the engine runs this model's linear layers: "small_batch" (our kernel's layers found), "prepacked"
    (PrepackedLinear found), "aten" (plain nn.Linear on a CPU) or None (not a CPU model)."""
    if any(isinstance(module, small_batch.SmallBatchLinear) for module in model.modules()):
        return "small_batch"
    if is_prepacked(model):
        return "prepacked"
    return "aten" if next(model.parameters()).device.type == "cpu" else None


def cpu_isa() -> dict:
    """What the CPU offers for bfloat16 matrix products: torch's cpu_capability (the vector ISA its kernels use),
    the ISA_FLAGS present in /proc/cpuinfo (`cpu_flags`; None where the file cannot be read) and torch's own
    probes (torch_avx512_bf16, torch_amx_tile; None where this torch has none)."""
    flags = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    flags = [flag for flag in ISA_FLAGS if flag in present]
                    break
    except OSError:
        pass

    def probe(name: str):
        check = getattr(torch.cpu, name, None)
        return bool(check()) if check is not None else None

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_flags": flags,
            "torch_avx512_bf16": probe("_is_avx512_bf16_supported"), "torch_amx_tile": probe("_is_amx_tile_supported")}
