"""A KV-cache layer that appends in place: keys and values live at the front of a larger buffer (the "slab").

transformers' DynamicLayer appends each new token with torch.cat, which copies the layer's whole cache at every
decode step; with a batch of 32 sequences that copy costs a noticeable share of the step. SlabLayer keeps spare
columns after the live ones and writes the new token there; the live cache is a view, `slab[:, :, :length]`.
When the spare columns run out, the slab is reallocated with room to grow (a copy every few dozen steps instead
of every step). It is a DynamicLayer to the model: same `.keys` / `.values` (the live views), same `update`.

Shapes: (rows, kv_heads, columns, head_dim); columns are token positions, as in BatchState.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

SPARE_COLUMNS = 64  # free columns kept after the live ones when a slab is (re)allocated


def slab_cache(cache):
    """Turn every layer of a freshly prefilled transformers DynamicCache into a SlabLayer (in place); returns it.
    Only full-attention layers can be batched this way (not sliding-window or linear-attention ones)."""
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise TypeError(f"continuous batching supports full-attention KV caches only, got {type(layer).__name__}")
    cache.layers = [SlabLayer.from_tensors(layer.keys, layer.values) for layer in cache.layers]
    return cache


class SlabLayer(DynamicLayer):
    def __init__(self):
        super().__init__()
        self.is_initialized = True

    @classmethod
    def from_tensors(cls, keys: torch.Tensor, values: torch.Tensor) -> "SlabLayer":
        """A layer holding a copy of `keys` and `values`, with spare columns after them."""
        layer = cls()
        layer.device = keys.device
        layer._allocate(keys, values, rows=keys.shape[0], width=keys.shape[-2], spare=SPARE_COLUMNS)
        layer.key_slab[:, :, :layer.length] = keys
        layer.value_slab[:, :, :layer.length] = values
        return layer

    def _allocate(self, keys: torch.Tensor, values: torch.Tensor, rows: int, width: int, spare: int) -> None:
        """A fresh zeroed slab for `rows` rows and `width + spare` columns, with keys/values right-aligned in the
        first `width` columns (the rest of their rows stays zero: left padding)."""
        shape = (rows, keys.shape[1], width + spare, keys.shape[-1])
        self.key_slab = torch.zeros(shape, dtype=keys.dtype, device=keys.device)
        self.value_slab = torch.zeros(shape, dtype=values.dtype, device=values.device)
        self.length = width
        self._refresh_views()

    def _refresh_views(self) -> None:
        self.keys = self.key_slab[:, :, :self.length]
        self.values = self.value_slab[:, :, :self.length]

    @property
    def capacity(self) -> int:
        return self.key_slab.shape[-2]

    # ---- what the model calls -----------------------------------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Append new columns in place (growing the slab if full); return the live keys and values."""
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            keys, values = self.keys, self.values
            self._allocate(keys, values, rows=keys.shape[0], width=self.length, spare=max(SPARE_COLUMNS, end))
            self.key_slab[:, :, :keys.shape[-2]] = keys
            self.value_slab[:, :, :values.shape[-2]] = values
        self.key_slab[:, :, self.length:end] = key_states
        self.value_slab[:, :, self.length:end] = value_states
        self.length = end
        self._refresh_views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    # ---- what BatchState calls ----------------------------------------------------------------------------
    def select_rows(self, index: torch.Tensor) -> None:
        """Keep only the rows in `index` (one copy of the slab's kept rows)."""
        self.key_slab = self.key_slab.index_select(0, index)
        self.value_slab = self.value_slab.index_select(0, index)
        self._refresh_views()

    def drop_front(self, columns: int) -> None:
        """Forget the first `columns` columns (padding in every row): a view, no copy."""
        self.key_slab = self.key_slab[:, :, columns:]
        self.value_slab = self.value_slab[:, :, columns:]
        self.length -= columns
        self._refresh_views()

    @staticmethod
    def stacked(top: "SlabLayer", bottom: "SlabLayer") -> "SlabLayer":
        """A new layer with `top`'s rows above `bottom`'s, both right-aligned to the wider one."""
        width = max(top.length, bottom.length)
        merged = SlabLayer()
        merged.device = top.device
        merged._allocate(top.keys, top.values, rows=top.keys.shape[0] + bottom.keys.shape[0], width=width,
                         spare=SPARE_COLUMNS)
        rows = top.keys.shape[0]
        merged.key_slab[:rows, :, width - top.length:width] = top.keys
        merged.value_slab[:rows, :, width - top.length:width] = top.values
        merged.key_slab[rows:, :, width - bottom.length:width] = bottom.keys
        merged.value_slab[rows:, :, width - bottom.length:width] = bottom.values
        return merged
