"""Weight quantisation of a model's linear layers, shared by the D5 variants and the server's lever:

    quantize_int8_weight_only(model, dtype)   int8 weights, one scale per output channel, activations in `dtype`
                                              (aten._weight_int8pack_mm, the kernel gpt-fast's int8 mode uses)
    quantize_int8_dynamic(model)              torch.ao dynamic quantisation: int8 weights, activations quantised
                                              per call (CPU only; approximate: its greedy tokens may differ)
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


def quantize_int8_dynamic(model):
    """torch.ao dynamic quantisation (qint8 weights) of every nn.Linear; returns the quantised model."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
