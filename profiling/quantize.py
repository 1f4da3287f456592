"""Weight quantisation of a model's linear layers, shared by the D5 variants and the server's lever:

    quantize_int8_weight_only(model, dtype)   int8 weights, one scale per output channel, activations in `dtype`
                                              (aten._weight_int8pack_mm, the kernel gpt-fast's int8 mode uses)
    quantize_int4_weight_only(model, dtype, group_size)
                                              4-bit weights, a scale and a zero per group of `group_size` input
                                              channels (0.5 byte per weight + 2 x dtype per group: llama.cpp's
                                              q4_1 layout at 32), activations in `dtype`
                                              (aten._weight_int4pack_mm_for_cpu; CPU only; approximate)
    quantize_int8_dynamic(model)              torch.ao dynamic quantisation: int8 weights, activations quantised
                                              per call (CPU only; approximate: its greedy tokens may differ)

Measured on a 2-core AVX-512 CPU (torch 2.13, SmolLM2-135M's 211 matrices, one row): both weight-only kernels are
fast only with bfloat16 activations (int8 ~8 ms, int4 ~5.5 ms); with float32 activations they fall back to slow
paths (int8 ~60 ms, int4 ~140 ms, worse with more rows). Use them with dtype=torch.bfloat16.
"""
from __future__ import annotations

import warnings

import torch


class Int8WeightOnlyLinear(torch.nn.Module):
    """A Linear with int8 weights (N, K) and one float scale per output channel: y = (x @ w^T) * scale + bias.

    The activations stay in their dtype; the kernel reads 1 byte per weight (aten._weight_int8pack_mm)."""

    def __init__(self, linear: torch.nn.Linear, dtype: torch.dtype):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", torch.round(weight / scales[:, None]).clamp(-128, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(dtype))
        bias = linear.bias.detach().to(dtype) if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).contiguous()
        out = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def int4_groups(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A weight (N, K) in 4-bit groups of `group_size` input channels, asymmetric (min/max of each group):
    (codes (N, K / group_size, group_size) in 0..15, as float32; lows and scales (N, K / group_size, 1) float32),
    w ~= low + code * scale."""
    groups = weight.detach().float().reshape(weight.shape[0], -1, group_size)
    low, high = groups.amin(dim=-1, keepdim=True), groups.amax(dim=-1, keepdim=True)
    scales = (high - low).clamp(min=1e-8) / 15.0
    return torch.round((groups - low) / scales).clamp(0, 15), low, scales


class Int4WeightOnlyLinear(torch.nn.Module):
    """A Linear with 4-bit weights in groups of `group_size` input channels, each group with a scale and a zero:
    w = (q - 8) * scale + zero, q in 0..15 (asymmetric, min/max of the group), activations kept in their dtype.

    Storage: `weight` (N, K / 2) uint8, two 4-bit values per byte in the CPU kernel's packed layout
    (aten._convert_weight_to_int4pack_for_cpu), and `scales_and_zeros` (K / group_size, N, 2) in `dtype`."""

    def __init__(self, linear: torch.nn.Linear, dtype: torch.dtype, group_size: int = 32):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if not int4_fits(linear, group_size):
            raise ValueError(f"the int4 kernel needs in_features ({self.in_features}) a multiple of group_size "
                             f"({group_size}) and out_features ({self.out_features}) a multiple of 16")
        self.group_size = group_size
        codes, low, scales = int4_groups(linear.weight, group_size)
        codes = codes.reshape(self.out_features, -1).to(torch.int32)
        zeros = low + 8 * scales  # the kernel subtracts 8 from each code
        scales_and_zeros = torch.stack([scales.squeeze(-1).t(), zeros.squeeze(-1).t()], dim=-1)
        self.register_buffer("weight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 2))
        self.register_buffer("scales_and_zeros", scales_and_zeros.contiguous().to(dtype))
        bias = linear.bias.detach().to(dtype) if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).contiguous()
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.weight, self.group_size, self.scales_and_zeros)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def _replace_linears(module: torch.nn.Module, make) -> int:
    """Replace every nn.Linear under `module` by `make(linear)`; returns how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, make(child))
            count += 1
        else:
            count += _replace_linears(child, make)
    return count


def quantize_int8_weight_only(model, dtype: torch.dtype) -> int:
    """Swap every nn.Linear (lm_head included) for an Int8WeightOnlyLinear; returns the count."""
    return _replace_linears(model, lambda linear: Int8WeightOnlyLinear(linear, dtype).to(linear.weight.device))


def int4_fits(linear: torch.nn.Linear, group_size: int) -> bool:
    """True when the CPU int4 kernel takes this shape: in_features a multiple of the group, out_features of 16."""
    return linear.in_features % group_size == 0 and linear.out_features % 16 == 0


def quantize_int4_weight_only(model, dtype: torch.dtype, group_size: int = 32) -> int:
    """Swap every nn.Linear (lm_head included) that fits the kernel (int4_fits) for an Int4WeightOnlyLinear (CPU
    only); one that does not stays an nn.Linear, cast to `dtype`. Returns the count swapped."""
    _replace_linears(model, lambda linear: Int4WeightOnlyLinear(linear, dtype, group_size)
                     if int4_fits(linear, group_size) else linear.to(dtype))
    return sum(isinstance(module, Int4WeightOnlyLinear) for module in model.modules())


def quantize_int8_dynamic(model):
    """torch.ao dynamic quantisation (qint8 weights) of every nn.Linear; returns the quantised model."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
