"""Prepacked linear layers for the CPU: each nn.Linear's weight reordered once, at load, into oneDNN's blocked
layout, then run by oneDNN's matmul (`torch.ops.mkldnn._linear_pointwise`, the kernel Inductor's `freezing`
uses and vLLM's CPU backend builds on).

Why: torch's F.linear on a CPU calls MKL's GEMV at 1 row and its GEMM above, and the GEMM packs the weight again
at every call. A decode step at batch 2 to 16 then costs about twice batch 1's, though it reads the same weights.
With the weights packed once, a step's linears cost about the same from 1 to 16 rows: they read the weights once
per step, which is all a decode step has to do. The numbers of this machine are in D2's linear-shape curve and in
D5's variant table (`sdpa` runs F.linear, `prepacked_sdpa` the same with its linears packed).

    cpu_linears: prepacked   float32 and bfloat16 weights on the CPU, packed at load (the default)
    cpu_linears: aten        torch's F.linear, as transformers runs it
    cpu_linears: small_batch float32 linears by our own C kernel at 1 to 32 rows and packed for oneDNN above
                             (profiling/kernels/small_batch.py); other dtypes packed as with prepacked

bfloat16 weights are packed only where this CPU has the instructions oneDNN's bfloat16 path needs (AVX-512 BW, VL
and DQ, or AVX-NE-CONVERT): on an AVX2-only CPU the packing raises, and a bfloat16 model keeps torch's F.linear.

The results equal F.linear's up to float rounding (the kernels sum in another order). The original weight stays
the module's `weight` (a tied lm_head shares it with the embedding, and the byte counts read it), so a packed
model holds its linear weights twice.
"""
from __future__ import annotations

import functools
import sys

import torch
from torch import nn

CHOICES = ("prepacked", "aten", "small_batch")
PACKABLE_DTYPES = (torch.float32, torch.bfloat16)


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """`weight` (out_features, in_features) reordered once into oneDNN's blocked layout (an opaque tensor)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias) computed by oneDNN over `packed` = pack_weight(weight)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class PrepackedLinear(nn.Module):
    """An nn.Linear run by oneDNN over a weight packed once (same inputs, outputs, weight and bias)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        # an opaque oneDNN tensor: neither a parameter nor a buffer (no data_ptr, never moved or saved)
        self._packed = pack_weight(linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_linear(x, self._packed, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
               f"oneDNN prepacked"


@functools.cache
def available(dtype: torch.dtype = torch.float32) -> bool:
    """True when this torch and this CPU pack `dtype` weights for oneDNN: CPU builds of torch 2.x have the ops, and
    a small weight of `dtype` packs here (bfloat16 raises on a CPU without AVX-512 BW/VL/DQ or AVX-NE-CONVERT)."""
    if dtype not in PACKABLE_DTYPES or not torch.backends.mkldnn.is_available() \
            or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    try:
        pack_weight(torch.zeros(16, 16, dtype=dtype))
    except RuntimeError:  # "mkldnn_reorder_linear_weight: bf16 path needs the cpu support ..."
        return False
    return True


def prepack_linears(model: nn.Module) -> int:
    """Replace every CPU nn.Linear of `model` whose weight dtype packs here (available) by a PrepackedLinear, in
    place; returns how many were replaced (0 on a GPU, when oneDNN is missing, or for bfloat16 on an AVX2-only CPU)."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (type(child) is nn.Linear and child.weight.device.type == "cpu"
                    and available(child.weight.dtype)):
                setattr(parent, name, PrepackedLinear(child))
                replaced += 1
    return replaced


def is_prepacked(model: nn.Module) -> bool:
    return any(isinstance(module, PrepackedLinear) for module in model.modules())


def apply_cpu_linears(model: nn.Module, linears: str) -> None:
    """Run `model`'s CPU linear layers as `linears` (one of CHOICES) says, in place: small_batch swaps the float32
    ones for the C kernel's layers (KernelUnavailable without a C compiler), then prepacked and small_batch pack the
    float ones left; aten leaves them as they are."""
    if linears not in CHOICES:
        raise ValueError(f"cpu_linears: {linears!r} is not one of {', '.join(CHOICES)}")
    if linears == "small_batch":
        from .kernels.small_batch import use_small_batch_kernels

        use_small_batch_kernels(model)
    if linears in ("prepacked", "small_batch"):
        prepack_linears(model)


def apply_cpu_linears_or_prepacked(model: nn.Module, linears: str, setting: str) -> str:
    """apply_cpu_linears, or, where our C kernel cannot be built, prepacked (oneDNN), saying why on stderr with the
    name of the `setting` that asked for it; returns the linears the model now runs."""
    from .kernels.build import KernelUnavailable

    try:
        apply_cpu_linears(model, linears)
        return linears
    except KernelUnavailable as error:
        print(f"{setting}: {linears}: our C kernel cannot be built here ({error}); running with {setting}: "
              "prepacked (oneDNN) instead", file=sys.stderr)
        apply_cpu_linears(model, "prepacked")
        return "prepacked"
