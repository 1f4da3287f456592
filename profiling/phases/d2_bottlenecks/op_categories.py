"""Operator categories for the D2 time breakdown: which part of the model each traced operator belongs to.

A trace records each aten operator's name and, with record_shapes on, its input shapes ("Input Dims"). Those
two facts, read against the model's shapes (hidden H, intermediate I, head_dim D, vocab V), are enough to tell
the parts of a Llama-style forward apart:

    embedding     aten::embedding (the token-id lookup)
    linear        aten::linear / mm / addmm / matmul with a 2-D weight (q, k, v, o, gate, up, down)
    lm_head       the same, when the weight's output dimension is the vocabulary size V
    attention     scaled_dot_product_attention and its kernels; views/transposes of (…, heads, T, D) tensors;
                  eager attention's 4-D matmuls and softmax
    norm          RMSNorm's pow, mean, rsqrt, the eps add on (…, 1), the scale multiplies on (…, H)
    activation    silu/gelu/relu, and the gate x up multiply on (…, I)
    rotary        cos, sin, neg, rotate_half's slices and cat on (…, D/2), q/k x cos/sin multiplies on (…, D)
    kv_cache      the cache update: torch.cat (DynamicCache) or index_copy_ (static cache) of (…, T, D) tensors
    sampling      argmax / softmax / topk / multinomial on the logits (…, V), and the chosen tokens' copy to
                  the host
    other         everything else (attention-mask checks, residual adds, input slicing, views)

An operator nested inside a categorised operator inherits its category (aten::mm inside an lm_head
aten::linear is lm_head); inside an `other` operator it is categorised on its own. On CUDA, each kernel takes the
category of the operator that launched it (the trace's correlation id links kernel and launch).

Self times are computed exactly as profiling/analysis/trace_ops.py does (duration minus nested operators'
durations), so per stage the categories add up to the operator table's total.
"""
from __future__ import annotations

from bisect import bisect_right

import pandas as pd

from ...shapes import Shapes
from ...trace_ops import StageIndex, cpu_ops_by_thread, kernel_launches, load_events, stage_group

CATEGORIES = ["linear", "attention", "norm", "activation", "rotary", "embedding", "lm_head", "sampling",
              "kv_cache", "other"]
CATEGORY_LABELS = {"kv_cache": "KV concatenation/copy"}

# mkldnn::_linear_pointwise: prepack.py; llm_infer::small_batch_linear(_panels, _int8, _w8a8, _int4, _w4a8): our kernels
# (kernels/small_batch.py)
LINEAR_OPS = {"linear", "mm", "addmm", "matmul", "bmm", "baddbmm", "_linear_pointwise", "small_batch_linear",
              "small_batch_linear_int8", "small_batch_linear_w8a8", "small_batch_linear_int4",
              "small_batch_linear_w4a8", "small_batch_linear_panels"}
ATTENTION_OPS = {"scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
                 "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                 "_scaled_dot_product_cudnn_attention", "_flash_attention_forward", "_efficient_attention_forward",
                 "_scaled_dot_product_attention_math",
                 "paged_decode_attention"}  # llm_infer::paged_decode_attention: the server's C kernel
NORM_OPS = {"pow", "rsqrt", "mean", "rms_norm", "_fused_rms_norm", "layer_norm", "native_layer_norm"}
ACTIVATION_OPS = {"silu", "silu_", "gelu", "gelu_", "relu", "relu_", "sigmoid", "tanh"}
ROTARY_OPS = {"cos", "sin", "neg"}
SAMPLING_OPS = {"argmax", "topk", "multinomial", "sort", "argsort", "cumsum", "softmax", "_softmax", "log_softmax",
                "_log_softmax"}
LAYOUT_OPS = {"view", "reshape", "transpose", "_reshape_alias", "contiguous", "permute", "expand", "clone",
              "_unsafe_view"}
KV_COPY_OPS = {"index_copy_", "index_copy"}


def _tensor_shapes(input_dims) -> list[list[int]]:
    """The shapes of an operator's tensor inputs; a list of tensors (aten::cat's input) is flattened one level.
    Scalars and missing inputs ([]) are dropped."""
    shapes = []
    for dims in input_dims or []:
        if dims and isinstance(dims[0], list):
            shapes.extend(d for d in dims if d)
        elif dims:
            shapes.append(dims)
    return shapes


def categorize(name: str, input_dims, shapes: Shapes) -> str:
    """The category of one aten operator from its name and input shapes (see the module docstring)."""
    op = name.removeprefix("aten::").removeprefix("mkldnn::").removeprefix("llm_infer::")
    tensors = _tensor_shapes(input_dims)
    last_dims = {t[-1] for t in tensors}
    ranks = {len(t) for t in tensors}
    H, I, D, V = shapes.hidden, shapes.intermediate, shapes.head_dim, shapes.vocab

    if op in ("embedding", "embedding_bag"):
        return "embedding"
    if op in ATTENTION_OPS:
        return "attention"
    if op == "small_batch_linear_panels":  # the weight in panels (n / W, k, W)
        panels = [t for t in tensors if len(t) == 3]
        return "lm_head" if panels and panels[0][0] * panels[0][2] == V else "linear"
    if op in LINEAR_OPS:
        weights = [t for t in tensors if len(t) == 2]
        if any(V in t and H in t for t in weights):
            return "lm_head"
        if weights and op != "bmm":
            return "linear"
        if 4 in ranks:
            return "attention"  # eager attention: Q K^T and scores x V
        return "rotary" if D // 2 in last_dims or any(D // 2 in t for t in tensors) else "other"
    if op in SAMPLING_OPS:
        if 4 in ranks:
            return "attention"  # eager attention's softmax over (batch, heads, T, context)
        return "sampling" if V in last_dims else "other"
    if op in NORM_OPS:
        return "norm"
    if op in ACTIVATION_OPS:
        return "activation"
    if op in ROTARY_OPS:
        return "rotary"
    if op in KV_COPY_OPS:
        return "kv_cache"
    if op == "cat":
        if tensors and all(len(t) >= 3 and t[-1] == D // 2 for t in tensors):
            return "rotary"  # rotate_half, or cos/sin's cat((freqs, freqs)) on (…, D/2)
        if any(len(t) == 4 and t[-1] == D for t in tensors):
            return "kv_cache"  # DynamicCache: torch.cat([cache, new], dim=-2)
        return "other"
    if op == "mul":
        if len(tensors) >= 2 and last_dims == {I}:
            return "activation"  # act(gate) * up
        if any(len(t) == 4 and t[-1] == D for t in tensors) or [D // 2] in tensors:
            return "rotary"  # q * cos, rotate_half(q) * sin, positions * inv_freq
        if H in last_dims and (1 in last_dims or [H] in tensors):
            return "norm"  # x * rsqrt(var + eps), weight * x
        if ranks == {3} and last_dims == {D}:
            return "rotary"  # cos * attention_scaling
        return "other"
    if op == "add":
        if len(tensors) == 1 and ranks == {3} and last_dims == {1}:
            return "norm"  # variance + eps
        if any(len(t) == 4 and t[-1] == D for t in tensors):
            return "rotary"  # q * cos + rotate_half(q) * sin
        return "other"  # residual adds, position arithmetic
    if op in ("slice", "unsqueeze") and any(t[-1] == D and len(t) in (3, 4) for t in tensors):
        return "rotary"  # rotate_half's halves, cos/sin.unsqueeze(1)
    if op in LAYOUT_OPS and any(len(t) == 4 and t[-1] == D for t in tensors):
        return "attention"  # (batch, T, heads, D) <-> (batch, heads, T, D) around attention
    if op in ("to", "_to_copy"):
        if V in last_dims:
            return "sampling"  # logits.float()
        if ranks == {1} and len(tensors) == 1 and tensors[0][0] not in (0, D // 2):
            return "sampling"  # the chosen token ids copied to the host
        if ranks == {3} and last_dims == {H}:
            return "norm"  # RMSNorm's casts to float32 and back
        if (ranks == {3} and last_dims <= {D, 1}) or tensors == [[D // 2]]:
            return "rotary"  # positions and inv_freq to float, cos/sin to the model dtype
        return "other"
    if op == "select" and V in last_dims:
        return "sampling"  # logits[:, -1, :]
    return "other"


def _categorised_ops(ops: list[dict], shapes: Shapes) -> list[tuple[dict, str, float]]:
    """(operator, category, self µs) for one thread's operators sorted by (ts, -dur).

    A nested operator inherits its parent's category unless the parent is `other`."""
    result = []
    stack: list[int] = []  # positions in `result` of the open operators
    for op in ops:
        while stack and result[stack[-1]][0]["ts"] + result[stack[-1]][0]["dur"] <= op["ts"]:
            stack.pop()
        parent_category = result[stack[-1]][1] if stack else "other"
        category = parent_category if parent_category != "other" else \
            categorize(op["name"], op.get("args", {}).get("Input Dims"), shapes)
        if stack:
            parent = result[stack[-1]]
            result[stack[-1]] = (parent[0], parent[1], parent[2] - op["dur"])
        result.append((op, category, float(op["dur"])))
        stack.append(len(result) - 1)
    return result


def _launch_categories(events: list[dict], categorised: dict) -> dict:
    """correlation id -> category of the CPU operator that launched it (innermost operator enclosing the launch
    on its thread). `categorised` maps (pid, tid) to that thread's _categorised_ops result."""
    by_thread: dict = {}
    for launch in kernel_launches(events).values():
        by_thread.setdefault((launch["pid"], launch["tid"]), []).append(launch)
    categories = {}
    for key, thread_launches in by_thread.items():
        ops = categorised.get(key, [])
        starts = [op["ts"] for op, _, _ in ops]
        for launch in thread_launches:
            # the innermost enclosing operator is the latest-starting operator that still covers the launch
            index = bisect_right(starts, launch["ts"]) - 1
            while index >= 0 and ops[index][0]["ts"] + ops[index][0]["dur"] < launch["ts"]:
                index -= 1
            categories[launch["args"]["correlation"]] = ops[index][1] if index >= 0 else "other"
    return categories


def category_table(path, shapes: Shapes) -> pd.DataFrame:
    """One row per (stage, device, category): calls, self_s (seconds of operator self time; kernel time on
    cuda), share_of_stage (of that stage's summed self time on that device).

    `stage` is the span label with any step index removed (decode_step[3] -> decode_step), as in
    trace_ops.operator_table.
    """
    events = load_events(path)
    index = StageIndex([e for e in events if e.get("cat") == "user_annotation"])
    rows, categorised = [], {}
    for (pid, tid), ops in cpu_ops_by_thread(events).items():
        categorised[(pid, tid)] = _categorised_ops(ops, shapes)
        for op, category, self_us in categorised[(pid, tid)]:
            stage = index.stage_at(pid, tid, op["ts"])
            rows.append({"stage": stage_group(stage) if stage else "(outside stages)", "device": "cpu",
                         "category": category, "self_s": self_us / 1e6})
    kernels = [e for e in events if e.get("cat") == "kernel"]
    if kernels:
        launch_category = _launch_categories(events, categorised)
        launches = kernel_launches(events)
        for kernel in kernels:
            correlation = kernel.get("args", {}).get("correlation")
            launch = launches.get(correlation)
            stage = index.stage_at(launch["pid"], launch["tid"], launch["ts"]) if launch else None
            rows.append({"stage": stage_group(stage) if stage else "(outside stages)", "device": "cuda",
                         "category": launch_category.get(correlation, "other"), "self_s": kernel["dur"] / 1e6})
    if not rows:
        return pd.DataFrame(columns=["stage", "device", "category", "calls", "self_s", "share_of_stage"])
    frame = pd.DataFrame(rows)
    table = (frame.groupby(["stage", "device", "category"], as_index=False)
             .agg(calls=("category", "size"), self_s=("self_s", "sum")))
    table["share_of_stage"] = table["self_s"] / table.groupby(["stage", "device"])["self_s"].transform("sum")
    return table.sort_values(["stage", "device", "self_s"], ascending=[True, True, False]).reset_index(drop=True)
