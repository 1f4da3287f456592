"""Where a decode step's time goes, from one variant's Chrome trace: kernel time by operator category, the host
time between kernels, and the bytes the linear layers read with the bandwidth they reach.

Units: seconds, bytes and bytes/s. Every figure is per decode step, averaged over the trace's `decode_step[i]`
spans (the experiment's short traced run: batch 1, profiler on).

Kernels and host time
    A kernel is a traced operator (an event named `namespace::name`: aten::, quantized::, mkldnn::) or a kernel
    Inductor generated (its name holds `cpp_fused_`: compiled variants are built with Inductor's
    `cpp.enable_kernel_profile`, so their fused kernels are traced). Any other event the profiler records inside a
    step (Torch-Compiled Region, TorchDynamo Cache Lookup, Pregraph bytecode, the AOT wrapper) is framework code
    on the host. An event's self time is its duration minus the events nested directly in it (trace_ops' rule).
    Host time = step wall time - the kernels' self time: Python, dispatch, guards and framework code between
    kernels. The kernel categories (PARTS) and HOST add up to the step's wall time.
    Only CPU runs are split: on a GPU, an operator's self time is its launch, not its kernel (step_split gives
    None for a trace with GPU kernels).

Categories (PARTS)
    Aten and oneDNN operators take D2's category (d2_bottlenecks/op_categories.py, read against the model's
    shapes), grouped into PARTS by D2_PARTS. Two kinds of kernel come first:
    - quantised linears (QUANTISED_LINEARS: int8 and int4 weight-only, torch.ao's dynamic int8): linear, or
      lm_head when their weight has one row per vocabulary entry;
    - Inductor's fused kernels: by the operators fused into them, which the kernel's name lists (FUSED_PARTS,
      first match wins: attention, norm, elementwise; anything else is other).
    An event nested in a categorised kernel takes that kernel's category (aten::mm inside an lm_head aten::linear
    is lm_head); inside an `other` kernel or host code it is categorised on its own.
    Our fused decoder layer (llm_infer::decoder_layer: projections, attention, norms and MLP in one C call) is a
    part of its own, `decoder_layer`; a variant without it has 0 s there.

Linear layers' bytes
    Each outermost linear call reads every tensor input but its activation (weight, scales and zeros, bias) in
    the shapes and dtypes the trace records for that call: the weights in the variant's own storage (int4: half
    a byte per weight plus a bfloat16 scale and zero per group of input channels). Calls are grouped by layer
    kind, named from the model's shapes (q/o, k/v, gate/up, down, lm_head: kinds whose weights have one shape
    share a name). torch.ao's dynamic int8 linear gets a packed weight whose shape the trace does not record: its
    bytes are unknown (NaN), and the step's last such call is its lm_head (the logits are a step's last matmul).
    A fused decoder layer reads its seven weight matrices (one byte per element, int8 or two int4 codes, when it is
    given their scales, else in its hidden state's dtype), their scales and lows (float32) and its two norms'
    weights; its layer kind is `decoder_layer`.
"""
from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right

from ...shapes import Shapes
from ...trace_ops import cpu_ops_by_thread, load_events, self_times
from ..d2_bottlenecks.op_categories import categorize

FUSED_LAYER = "llm_infer::decoder_layer"  # our C decoder layer (profiling/kernels/decoder_layer.c)
PARTS = ["decoder_layer", "linear", "attention", "norm", "elementwise", "lm_head", "other"]  # the kernel categories
HOST = "host"  # the step's wall time outside kernels
WEIGHT_PARTS = ("decoder_layer", "linear", "lm_head")  # the parts whose calls read weight matrices
ALL_LAYERS = "all"  # the `kind` of a part's own row in the CSV
COLUMNS = ["variant", "part", "kind", "per_step_s", "share_of_wall", "calls_per_step", "weight_bytes_per_step",
           "bytes_per_s", "roof_share", "decode_steps", "step_wall_s"]  # step_split.csv (see `rows`)

DECODE_STEP = re.compile(r"^decode_step\[\d+\]$")
FUSED_KERNEL = re.compile(r"cpp_fused_(.*?)(?:_\d+)?$")  # Inductor's kernel name: cpp_fused_<operators>_<index>

# D2's categories grouped into PARTS (the KV-cache write is attention's memory; rotary is elementwise arithmetic)
D2_PARTS = {"linear": "linear", "lm_head": "lm_head", "attention": "attention", "kv_cache": "attention",
            "norm": "norm", "activation": "elementwise", "rotary": "elementwise", "embedding": "other",
            "sampling": "other", "other": "other"}

# A fused kernel's part: the first part one of whose operators the kernel's name lists
FUSED_PARTS = [
    ("attention", ("scaled_dot_product_flash_attention_for_cpu", "scaled_dot_product_attention", "softmax", "bmm",
                   "index_copy", "index_put")),
    ("norm", ("rsqrt", "rms_norm", "layer_norm", "native_layer_norm")),
    ("elementwise", ("silu", "gelu", "relu", "sigmoid", "tanh", "mul", "add", "sub", "div", "neg", "cos", "sin",
                     "exp", "pow", "cat")),
]

QUANTISED_LINEARS = {"aten::_weight_int8pack_mm", "aten::_weight_int4pack_mm_for_cpu",
                     "quantized::int4mm_packed_weight_cpu", "quantized::linear_dynamic",
                     "llm_infer::small_batch_linear_int4", "llm_infer::small_batch_linear_w4a8"}  # packed weights:
                                                                # told apart by their traced shape

# A linear call's inputs: (position of the activation, position of the weight, the weight's axis of output
# features); None: the trace records no shape for the weight (a packed torch.ao object)
LINEAR_INPUTS = {
    "aten::linear": (0, 1, 0), "mkldnn::_linear_pointwise": (0, 1, 0),
    "aten::mm": (0, 1, -1), "aten::matmul": (0, 1, -1), "aten::addmm": (1, 2, -1),
    "aten::_weight_int8pack_mm": (0, 1, 0),
    "llm_infer::small_batch_linear": (0, 1, 0), "llm_infer::small_batch_linear_int8": (0, 1, 0),
    "llm_infer::small_batch_linear_w8a8": (0, 1, 0),
    "llm_infer::small_batch_linear_int4": (0, 1, 0), "llm_infer::small_batch_linear_w4a8": (0, 1, 0),
    "llm_infer::small_batch_linear_panels": (0, 1, 0),  # panels (n / W, k, W): weight_shape multiplies n / W by W
    "aten::_weight_int4pack_mm_for_cpu": (0, 1, 0), "quantized::int4mm_packed_weight_cpu": (0, 1, 0),
    "quantized::linear_dynamic": (0, None, None),
    FUSED_LAYER: (0, None, None),  # seven weights in a list: fused_layer_bytes
}

# Bytes per element of the profiler's "Input type" names
ELEMENT_BYTES = {"double": 8, "float": 4, "c10::BFloat16": 2, "c10::Half": 2, "long int": 8, "int": 4,
                 "short int": 2, "signed char": 1, "unsigned char": 1, "bool": 1}


# ---- the model's shapes ------------------------------------------------------------------------------------------
def model_shapes(model: str) -> Shapes:
    """The model's shapes, from its config file only (no weights loaded)."""
    from ...model import model_source
    from ...shapes import model_shapes as shapes_of

    return shapes_of(model_source(model))


def layer_kinds(shapes: Shapes) -> dict:
    """(output features, input features) -> the name of the layers with that weight shape, e.g. "q/o"."""
    hidden, query, key_value = shapes.hidden, shapes.heads * shapes.head_dim, shapes.kv_heads * shapes.head_dim
    layers = [("q", (query, hidden)), ("k", (key_value, hidden)), ("v", (key_value, hidden)), ("o", (hidden, query)),
              ("gate", (shapes.intermediate, hidden)), ("up", (shapes.intermediate, hidden)),
              ("down", (hidden, shapes.intermediate)), ("lm_head", (shapes.vocab, hidden))]
    names: dict = {}
    for name, shape in layers:
        names[shape] = f"{names[shape]}/{name}" if shape in names else name
    return names


# ---- one traced event --------------------------------------------------------------------------------------------
def is_kernel(name: str) -> bool:
    """A traced operator (`namespace::name`) or an Inductor kernel; anything else is framework code on the host."""
    return "::" in name or FUSED_KERNEL.search(name) is not None


def fused_part(name: str) -> str:
    """The part of an Inductor kernel, from the operators its name lists (see FUSED_PARTS)."""
    operators = FUSED_KERNEL.search(name).group(1)
    for part, names in FUSED_PARTS:
        if any(re.search(rf"(?:^|_){op}(?:_|$)", operators) for op in names):
            return part
    return "other"


def _inputs(op: dict) -> tuple[list, list]:
    """(shapes, dtypes) of an event's inputs as the profiler recorded them (empty lists when not recorded)."""
    args = op.get("args", {})
    return args.get("Input Dims") or [], args.get("Input type") or []


def weight_shape(op: dict) -> tuple[int, int] | None:
    """(output features, input features) of a linear call, from its traced input shapes; None when unknown."""
    layout = LINEAR_INPUTS.get(op["name"])
    dims, _ = _inputs(op)
    if layout is None or layout[1] is None or len(dims) <= max(layout[:2]):
        return None
    activation, weight = dims[layout[0]], dims[layout[1]]
    if not activation or not weight:
        return None
    if op["name"] == "llm_infer::small_batch_linear_panels" and len(weight) == 3:
        return int(weight[0]) * int(weight[2]), int(activation[-1])
    return int(weight[layout[2]]), int(activation[-1])


def fused_layer_bytes(op: dict) -> float:
    """Bytes a fused decoder layer call reads from its weights (see the module docstring); NaN when the trace does
    not record its inputs. Its inputs: hidden, the two norms' weights, then lists: weights, scales, lows."""
    dims, dtypes = _inputs(op)
    if len(dims) < 6 or not dims[3] or dtypes[0] not in ELEMENT_BYTES:
        return float("nan")
    weight_element = 1 if dims[4] else ELEMENT_BYTES[dtypes[0]]
    weights = sum(math.prod(shape) for shape in dims[3]) * weight_element
    floats = sum(math.prod(shape) for shape in dims[4] + dims[5]) + math.prod(dims[1]) + math.prod(dims[2])
    return float(weights + floats * 4)


def weight_bytes(op: dict) -> float:
    """Bytes of every tensor input of a linear call but its activation (weight, scales and zeros, bias), in the
    dtypes the trace records; NaN when the trace does not record them."""
    if op["name"] == FUSED_LAYER:
        return fused_layer_bytes(op)
    layout = LINEAR_INPUTS.get(op["name"])
    dims, dtypes = _inputs(op)
    if layout is None or layout[1] is None or len(dims) <= layout[1] or len(dtypes) != len(dims):
        return float("nan")
    total = 0
    for position, (shape, dtype) in enumerate(zip(dims, dtypes)):
        if position == layout[0] or not shape or isinstance(shape[0], list):
            continue  # the activation, a scalar or an empty slot
        if dtype not in ELEMENT_BYTES:
            return float("nan")
        total += math.prod(shape) * ELEMENT_BYTES[dtype]
    return float(total)


def own_part(op: dict, shapes: Shapes) -> str:
    """The part of an event that does not inherit one (see the module docstring)."""
    name = op["name"]
    if not is_kernel(name):
        return HOST
    if FUSED_KERNEL.search(name):
        return fused_part(name)
    if name == FUSED_LAYER:
        return "decoder_layer"
    if name in QUANTISED_LINEARS:
        shape = weight_shape(op)
        return "lm_head" if shape is not None and shape[0] == shapes.vocab else "linear"
    return D2_PARTS[categorize(name, _inputs(op)[0], shapes)]


# ---- one decode step ---------------------------------------------------------------------------------------------
def decode_steps(events: list[dict]) -> list[tuple[float, list[dict]]]:
    """Per decode_step[i] span, in order: (its wall seconds, the CPU events of its thread that lie inside it,
    sorted by start with an enclosing event before the events nested in it)."""
    by_thread = cpu_ops_by_thread(events)
    starts = {key: [op["ts"] for op in ops] for key, ops in by_thread.items()}
    spans = sorted((e for e in events if e.get("cat") == "user_annotation" and DECODE_STEP.match(e["name"])),
                   key=lambda e: e["ts"])
    steps = []
    for span in spans:
        key, end = (span["pid"], span["tid"]), span["ts"] + span["dur"]
        ops = by_thread.get(key, [])
        first, last = bisect_left(starts.get(key, []), span["ts"]), bisect_right(starts.get(key, []), end)
        steps.append((span["dur"] / 1e6, [op for op in ops[first:last] if op["ts"] + op["dur"] <= end]))
    return steps


def categorised(ops: list[dict], shapes: Shapes) -> list[dict]:
    """One entry per event of a decode step (`ops` as decode_steps gives them): {"op", "part" (PARTS or HOST),
    "self_s", "call"}; `call` is the position of the outermost linear call the event belongs to (None outside
    linear calls)."""
    self_us = self_times(ops)
    entries: list[dict] = []
    stack: list[int] = []  # positions of the open (enclosing) events
    for position, op in enumerate(ops):
        while stack and ops[stack[-1]]["ts"] + ops[stack[-1]]["dur"] <= op["ts"]:
            stack.pop()
        parent = entries[stack[-1]] if stack else None
        if is_kernel(op["name"]) and parent is not None and parent["part"] not in ("other", HOST):
            part, call = parent["part"], parent["call"]
        else:
            part = own_part(op, shapes)
            call = position if part in WEIGHT_PARTS else None
        entries.append({"op": op, "part": part, "self_s": self_us[position] / 1e6, "call": call})
        stack.append(position)
    calls = [position for position, entry in enumerate(entries) if entry["call"] == position]
    has_lm_head = any(entries[call]["part"] == "lm_head" for call in calls)
    last = entries[calls[-1]]["op"] if calls else None
    if last is not None and not has_lm_head and weight_shape(last) is None and last["name"] != FUSED_LAYER:
        # a packed weight of untraced shape (torch.ao's dynamic int8): the step's last linear call is its lm_head
        for entry in entries:
            if entry["call"] == calls[-1]:
                entry["part"] = "lm_head"
    return entries


# ---- a trace's decode steps --------------------------------------------------------------------------------------
def host_share(trace_path) -> float:
    """Host time / wall time over a trace's decode steps (NaN without decode steps); needs no model shapes."""
    wall_s, kernels_s = 0.0, 0.0
    for step_wall_s, ops in decode_steps(load_events(trace_path)):
        self_us = self_times(ops)
        wall_s += step_wall_s
        kernels_s += sum(self_us[position] for position, op in enumerate(ops) if is_kernel(op["name"])) / 1e6
    return 1.0 - kernels_s / wall_s if wall_s else float("nan")


def step_split(trace_path, shapes: Shapes) -> dict | None:
    """Seconds per decode step by part, and the linear calls per layer kind, from one trace (None when it has no
    decode step, or has GPU kernels):

        decode_steps   the traced decode steps averaged over
        step_wall_s    the step's wall time
        parts_s        part (PARTS and HOST) -> seconds; they add up to step_wall_s
        layers         one entry per linear layer kind, in the order the step first calls it: kind, part (linear
                       or lm_head), calls_per_step, seconds (the calls' kernel self time), weight_bytes (read per
                       step; NaN when the trace lacks the weight's shape)
    """
    events = load_events(trace_path)
    steps = decode_steps(events)
    if not steps or any(event.get("cat") == "kernel" for event in events):
        return None
    kinds = layer_kinds(shapes)
    parts_s = dict.fromkeys(PARTS + [HOST], 0.0)
    layers: dict = {}
    for wall_s, ops in steps:
        entries = categorised(ops, shapes)
        kernels = [entry for entry in entries if entry["part"] != HOST]
        for entry in kernels:
            parts_s[entry["part"]] += entry["self_s"]
        parts_s[HOST] += wall_s - sum(entry["self_s"] for entry in kernels)
        for position, entry in enumerate(entries):
            if entry["call"] != position:
                continue
            shape = weight_shape(entry["op"])
            kind = entry["part"] if shape is None else kinds.get(shape, f"{shape[0]}×{shape[1]}")
            layer = layers.setdefault(kind, {"kind": kind, "part": entry["part"], "calls_per_step": 0.0,
                                             "seconds": 0.0, "weight_bytes": 0.0})
            layer["calls_per_step"] += 1
            layer["weight_bytes"] += weight_bytes(entry["op"])
            layer["seconds"] += sum(e["self_s"] for e in kernels if e["call"] == position)
    count = len(steps)
    for layer in layers.values():
        for key in ("calls_per_step", "seconds", "weight_bytes"):
            layer[key] /= count
    return {"decode_steps": count, "step_wall_s": sum(wall_s for wall_s, _ in steps) / count,
            "parts_s": {part: seconds / count for part, seconds in parts_s.items()},
            "layers": list(layers.values())}


# ---- bandwidth and the verdict -----------------------------------------------------------------------------------
def bandwidth(weight_bytes_read: float, seconds: float, roof_bytes_per_s: float) -> dict:
    """{weight_bytes, seconds, bytes_per_s (bytes / seconds), roof_share (bytes_per_s / the roof)}."""
    rate = weight_bytes_read / seconds if seconds > 0 else float("nan")
    return {"weight_bytes": weight_bytes_read, "seconds": seconds, "bytes_per_s": rate,
            "roof_share": rate / roof_bytes_per_s}


def weights_read(split: dict, roof_bytes_per_s: float) -> dict:
    """Per weight part (linear, lm_head): the bytes its layers read per step, its kernel seconds per step and the
    bandwidth it reaches, against the roof (bytes/s); bytes_traced: whether the trace gave every call's weight
    shape (False: the bytes, and so the bandwidth, are unknown)."""
    read = {}
    for part in WEIGHT_PARTS:
        weight_bytes_read = sum(layer["weight_bytes"] for layer in split["layers"] if layer["part"] == part)
        read[part] = {**bandwidth(weight_bytes_read, split["parts_s"][part], roof_bytes_per_s),
                      "bytes_traced": math.isfinite(weight_bytes_read)}
    return read


def biggest_part(split: dict) -> str:
    """The verdict key: the part (PARTS or HOST) that takes the most seconds of the step."""
    return max(split["parts_s"], key=split["parts_s"].get)


def summary(split: dict, roof_bytes_per_s: float) -> dict:
    """One variant's entry of findings.json: the split, each part's share of the step, the weights read per part
    and per layer kind with their bandwidth (bytes/s), and its biggest part."""
    wall = split["step_wall_s"]
    return {**split,
            "shares": {part: seconds / wall for part, seconds in split["parts_s"].items()},
            "weights": weights_read(split, roof_bytes_per_s),
            "layers": [{**layer, **bandwidth(layer["weight_bytes"], layer["seconds"], roof_bytes_per_s)}
                       for layer in split["layers"]],
            "biggest": biggest_part(split)}


def rows(variant: str, entry: dict) -> list[dict]:
    """Tidy rows (COLUMNS) of one variant's summary: one per part (kind `all`; its per_step_s add up to the step's
    wall time), then one per linear layer kind (their per_step_s add up to their part's). Per decode step:
    seconds, share of the step's wall time, calls (layer rows), weight bytes read, bytes/s and roof share (weight
    parts and layers only), and the traced decode steps averaged over with their wall time."""
    table = []
    for part in PARTS + [HOST]:
        weights = entry["weights"].get(part, {})
        table.append({"variant": variant, "part": part, "kind": ALL_LAYERS, "per_step_s": entry["parts_s"][part],
                      "share_of_wall": entry["shares"][part], "calls_per_step": None,
                      "weight_bytes_per_step": weights.get("weight_bytes"), "bytes_per_s": weights.get("bytes_per_s"),
                      "roof_share": weights.get("roof_share")})
    for layer in entry["layers"]:
        table.append({"variant": variant, "part": layer["part"], "kind": layer["kind"], "per_step_s": layer["seconds"],
                      "share_of_wall": layer["seconds"] / entry["step_wall_s"],
                      "calls_per_step": layer["calls_per_step"], "weight_bytes_per_step": layer["weight_bytes"],
                      "bytes_per_s": layer["bytes_per_s"], "roof_share": layer["roof_share"]})
    for row in table:
        row.update({"decode_steps": entry["decode_steps"], "step_wall_s": entry["step_wall_s"]})
    return table
