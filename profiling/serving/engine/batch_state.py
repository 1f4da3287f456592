"""The running batch's tensors: one KV cache for all running sequences, left-padded, plus the attention mask.

Row i of every tensor belongs to `sequences[i]`. All rows share one column axis, aligned on the right (the newest
token of every row is in the last column); shorter rows are padded on the left, and the mask marks padding 0:

    row 0   [pad pad  a1  a2  a3  a4 ]     mask 0 0 1 1 1 1
    row 1   [ b1  b2  b3  b4  b5  b6 ]     mask 1 1 1 1 1 1

Each layer's keys and values sit in a SlabLayer (kv_slab.py), which appends a decode step's token in place.
Three operations keep the batch right while sequences come and go, each a few tensor copies, none per token:
    merge(other)   a freshly prefilled batch joins: the shorter side is padded on the left, rows stacked
    keep(rows)     finished rows leave (index_select on every layer's slab)
    trim()         columns that are padding in every row are dropped (after the longest sequence left; no copy)
Keys are stored after the rotary embedding, so padding a row on the left never changes its positions; the
position of each row's next token is kept separately in `next_positions`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .kv_slab import SlabLayer


def cache_layers(cache) -> list[SlabLayer]:
    """The per-layer key/value holders of the batch's cache (SlabLayers, see kv_slab.py)."""
    return cache.layers


@dataclass
class BatchState:
    """Tensors of the running batch (all on the model's device) and the sequence each row belongs to."""

    sequences: list          # Sequence per row
    cache: object            # transformers DynamicCache, (rows, kv_heads, columns, head_dim) per layer
    mask: torch.Tensor       # (rows, columns) int64: 1 real token, 0 padding
    next_positions: torch.Tensor  # (rows,) int64: position id of each row's next token
    last_tokens: torch.Tensor     # (rows,) int64: each row's newest token, the next decode step's input

    @property
    def rows(self) -> int:
        return len(self.sequences)

    @property
    def columns(self) -> int:
        return self.mask.shape[1]

    def merge(self, other: "BatchState") -> "BatchState":
        """This batch with `other`'s rows appended below; both sides padded on the left to the wider one."""
        width = max(self.columns, other.columns)
        mine, theirs = cache_layers(self.cache), cache_layers(other.cache)
        self.cache.layers = [SlabLayer.stacked(layer, joining) for layer, joining in zip(mine, theirs, strict=True)]
        self.mask = torch.cat([F.pad(self.mask, (width - self.columns, 0)),
                               F.pad(other.mask, (width - other.columns, 0))])
        self.next_positions = torch.cat([self.next_positions, other.next_positions])
        self.last_tokens = torch.cat([self.last_tokens, other.last_tokens])
        self.sequences = self.sequences + other.sequences
        return self

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (indices into the current rows, in order), then trim padding-only columns."""
        if len(rows) == self.rows:
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        for layer in cache_layers(self.cache):
            layer.select_rows(index)
        self.mask = self.mask.index_select(0, index)
        self.next_positions = self.next_positions.index_select(0, index)
        self.last_tokens = self.last_tokens.index_select(0, index)
        self.sequences = [self.sequences[i] for i in rows]
        self.trim()

    def trim(self) -> None:
        """Drop the leading columns that are padding in every row."""
        used = self.mask.any(dim=0)
        first = int(used.to(torch.int8).argmax()) if bool(used.any()) else 0
        if first == 0:
            return
        for layer in cache_layers(self.cache):
            layer.drop_front(first)
        self.mask = self.mask[:, first:]

