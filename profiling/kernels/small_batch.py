"""Small-batch linear layers for the CPU: our own C kernels (small_batch_linear.c) for 1 to MAX_ROWS rows.

Why: a decode step at batch 1 to 4 reads every weight once and does ~2 flops per weight, so its linear layers
should take the time to stream the weights from memory; at 5 to 32 rows they should run at the CPU's multiply-add
peak. Measured on a 2-core AVX-512 CPU (SmolLM2-135M's 211 matrices, float32, one thread): oneDNN over weights
packed once 54 ms at one row, 48 at 8, 67 at 16; our panel GEMM 31, 36 and 59 (equal at 32 rows, so oneDNN takes
over above MAX_ROWS); with int8 weights and float32 activations (row dot products) ~5 ms at one row on two threads.

    cpu_linears: small_batch     float32 linears: the panel GEMM at <= MAX_ROWS rows, oneDNN packed above

D5's levers also store the weights in int8 (a scale per output channel: SmallBatchInt8Linear) or in int4 (groups of
32 with a scale and a low, llama.cpp's q4_1 layout: SmallBatchInt4Linear), activations kept in float32; or the int8
weights meet activations quantised to int8 per block of 32 (llama.cpp q8_0's scheme: SmallBatchW8A8Linear), and so
may the int4 ones (q4_1 x q8_1's: SmallBatchW4A8Linear).

The kernels are plain C (small_batch_linear.c), wrapped as the torch operators llm_infer::small_batch_linear,
_panels, _int8, _w8a8, _int4 and _w4a8 by a few lines of C++ (ops.cpp): torch's dispatcher calls them without Python,
the profiler records them by name with their shapes, and torch.compile calls them from a compiled graph. build.py
compiles them once per machine and caches them. The kernel sums in another order than torch (vector lanes), so
results equal F.linear's up to float rounding. Without a compiler, or when the build fails, `unavailable_reason()`
says why, use_small_batch_kernels raises KernelUnavailable, and the model loader packs the layers for oneDNN
instead (model.load_model; env.json then records prepacked).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .build import KernelUnavailable, available, library, unavailable_reason  # noqa: F401 (re-exported)
from ..prepack import available as prepack_available
from ..prepack import pack_weight, packed_linear
from ..quantize import Int8WeightOnlyLinear, int4_groups

MAX_ROWS = 32  # float32 rows up to which our kernels run (panels; above, oneDNN's GEMM over a packed weight)
DOT_MAX_ROWS = 4  # without panels (out_features not a multiple of the panel width): the row dot products up to here
INT8_MAX_ROWS = 16  # int8 rows up to which the kernel runs (its only rival with float32 activations is to
                    # de-quantise the weights per call, which pays only for a prompt's many rows)


def panel_layout(weight: torch.Tensor) -> torch.Tensor | None:
    """The float32 weight (n, k) laid out in panels for the panel GEMM: (n / W, k, W), W = the kernel's panel width
    (32 with AVX-512, 16 otherwise); None when n is not a multiple of W. A copy: the weight itself is kept."""
    width = library().panel_width()
    out_features, in_features = weight.shape
    if out_features % width:
        return None
    # (n / W, W, k) viewed as (n / W, k, W): one copy
    return weight.detach().view(out_features // width, width, in_features).transpose(1, 2).contiguous()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, panels: torch.Tensor | None = None,
           packed: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ weight.T (+ bias) for float32 x (rows, k) by the fastest of our kernels for its row count: the panel
    GEMM up to MAX_ROWS rows (given `panels`), else the row dot products up to DOT_MAX_ROWS; above, oneDNN over
    `packed` (prepack.pack_weight), else F.linear."""
    rows = x.shape[0]
    if x.dtype == torch.float32 and panels is not None and rows <= MAX_ROWS:
        return torch.ops.llm_infer.small_batch_linear_panels(x, panels, bias)
    if x.dtype == torch.float32 and rows <= DOT_MAX_ROWS:
        return torch.ops.llm_infer.small_batch_linear(x, weight, bias)
    if packed is not None:
        return packed_linear(x, packed, bias)
    return F.linear(x, weight, bias)


class SmallBatchLinear(nn.Module):
    """A float32 nn.Linear on the CPU by `linear` above: its weight also laid out in panels (when the shape allows)
    and packed for oneDNN (where oneDNN packs), both made once here. Same weight and bias tensors as the layer it
    replaces (a tied lm_head stays tied; byte counts read the original)."""

    def __init__(self, linear_layer: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear_layer.in_features, linear_layer.out_features
        self.weight = linear_layer.weight
        self.bias = linear_layer.bias
        self._panels = panel_layout(linear_layer.weight)
        self._packed = pack_weight(linear_layer.weight) if prepack_available(torch.float32) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = linear(flat, self.weight, self.bias, self._panels, self._packed)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kernel = f"panel GEMM at <= {MAX_ROWS} rows" if self._panels is not None else \
            f"dot products at <= {DOT_MAX_ROWS} rows"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
               f"small-batch kernels: {kernel}"


class SmallBatchInt8Linear(Int8WeightOnlyLinear):
    """int8 weights with one scale per output channel (quantize.py's layout), float32 activations: the C kernel at
    <= INT8_MAX_ROWS rows; above, the weight de-quantised per call and F.linear (torch's own int8 kernel is slow with
    float32 activations)."""

    def __init__(self, linear: nn.Linear):
        super().__init__(linear, torch.float32)
        library()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.shape[0] > INT8_MAX_ROWS or x.dtype != torch.float32:
            weight = (self.weight.float() * self.scales.float()[:, None]).to(x.dtype)
            return F.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))
        out = torch.ops.llm_infer.small_batch_linear_int8(flat, self.weight, self.scales, self.bias)
        return out.view(*x.shape[:-1], self.out_features)


class SmallBatchW8A8Linear(SmallBatchInt8Linear):
    """The same int8 weights meeting int8 activations: each row of x quantised per call in blocks of 32 inputs with a
    float32 scale each (llama.cpp's q8_0 scheme for the activations of its 8-bit dot products), the dot products in
    8-bit vector lanes (AVX-512 VNNI, or AVX2) at <= INT8_MAX_ROWS rows. Approximate: x is rounded to 8 bits."""

    QBLOCK = 32

    def __init__(self, linear: nn.Linear):
        if linear.in_features % self.QBLOCK:
            raise ValueError(f"int8 activations need in_features ({linear.in_features}) a multiple of {self.QBLOCK}")
        super().__init__(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.shape[0] > INT8_MAX_ROWS or x.dtype != torch.float32:
            return super().forward(x)
        out = torch.ops.llm_infer.small_batch_linear_w8a8(flat, self.weight, self.scales, self.bias)
        return out.view(*x.shape[:-1], self.out_features)


class SmallBatchInt4Linear(nn.Module):
    """4-bit weights in groups of GROUP input channels, each group with a float32 scale and low (w = low + code *
    scale, code 0..15: llama.cpp's q4_1 layout; the same codes, scales and lows as quantize.Int4WeightOnlyLinear),
    float32 activations, by the C kernel at every row count (each weight row is read once, the rows of x meet it in
    the L1 cache). Storage: `codes` (n, k / 2) uint8, group g's byte b holding codes b and b + 16 (low and high
    halves); `scales` and `lows` (n, k / GROUP) float32: 0.75 byte per weight."""

    GROUP = 32

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if self.in_features % self.GROUP:
            raise ValueError(f"int4 weights need in_features ({self.in_features}) a multiple of {self.GROUP}")
        codes, low, scales = int4_groups(linear.weight, self.GROUP)  # quantize.Int4WeightOnlyLinear's own
        codes = codes.to(torch.uint8)
        packed = codes[..., : self.GROUP // 2] | (codes[..., self.GROUP // 2:] << 4)
        self.register_buffer("codes", packed.reshape(self.out_features, -1).contiguous())
        self.register_buffer("scales", scales.reshape(self.out_features, -1).contiguous())
        self.register_buffer("lows", low.reshape(self.out_features, -1).contiguous())
        self.register_buffer("bias", linear.bias.detach().float() if linear.bias is not None else None)
        library()

    def dequantized(self) -> torch.Tensor:
        """The float32 weight (n, k) the codes stand for."""
        per_group = self.codes.reshape(self.out_features, -1, self.GROUP // 2)
        codes = torch.cat([per_group & 15, per_group >> 4], dim=-1).float()  # (n, groups, GROUP)
        weight = self.lows[..., None] + codes * self.scales[..., None]
        return weight.reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        out = torch.ops.llm_infer.small_batch_linear_int4(flat, self.codes, self.scales, self.lows, self.bias)
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)


class SmallBatchW4A8Linear(SmallBatchInt4Linear):
    """The same int4 weights meeting int8 activations: each row of x quantised per call in blocks of 32 inputs (the
    weights' groups) with a float32 scale each, as llama.cpp's q4_1 x q8_1 dot products do; the codes meet them in
    8-bit vector lanes (AVX-512 VNNI, or AVX2). Approximate: x is rounded to 8 bits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        out = torch.ops.llm_infer.small_batch_linear_w4a8(flat, self.codes, self.scales, self.lows, self.bias)
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)


WEIGHT_KINDS = {"float32": SmallBatchLinear, "int8": SmallBatchInt8Linear, "w8a8": SmallBatchW8A8Linear,
                "int4": SmallBatchInt4Linear, "w4a8": SmallBatchW4A8Linear}


def use_small_batch_kernels(model: nn.Module, weights: str = "float32") -> int:
    """Replace every float32 CPU nn.Linear of `model` (lm_head included) by our kernel's layer for `weights`
    (WEIGHT_KINDS: float32 SmallBatchLinear, int8 SmallBatchInt8Linear, w8a8 SmallBatchW8A8Linear, int4
    SmallBatchInt4Linear, w4a8 SmallBatchW4A8Linear); in place.
    Returns how many were replaced; KernelUnavailable when the kernel cannot be built here."""
    if weights not in WEIGHT_KINDS:
        raise ValueError(f"small-batch weights {weights!r}: choose one of {', '.join(WEIGHT_KINDS)}")
    library()
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.device.type == "cpu" \
                    and child.weight.dtype == torch.float32:
                setattr(parent, name, WEIGHT_KINDS[weights](child))
                replaced += 1
    return replaced
