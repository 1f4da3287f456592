"""The two model steps of the server, written out over the model's forward as the offline engine does
(profiling/engine.py: left padding, position ids from the attention mask, greedy = argmax):

    prefill(model, sequences)   one forward over the new prompts (left-padded together), fills a fresh
                                BatchState and returns the logits of each prompt's last position
    decode(model, state)        one forward over every running row's newest token, reusing the batch's cache

`pick_tokens` turns logits into each row's next token: greedy when temperature is 0 (what timing and the tests
use), otherwise a sample (temperature, top_p); end-of-sequence is masked while a row is below its min_tokens.
"""
from __future__ import annotations

import torch

from ...engine import _forward_kwarg_names, _positions, cache_kwarg
from .batch_state import BatchState
from .kv_slab import slab_cache


class StepEngine:
    """Runs prefill and decode forwards of one model. `pad_token_id` fills the left padding of prompts."""

    def __init__(self, model, pad_token_id: int, eos_token_ids: list[int]):
        self.model = model
        self.device = next(model.parameters()).device
        self.pad_token_id = pad_token_id
        self.eos_token_ids = list(eos_token_ids)
        self.cache_name = cache_kwarg(model)
        self.keep_last = {"logits_to_keep": 1} if "logits_to_keep" in _forward_kwarg_names(model) else {}

    @torch.inference_mode()
    def prefill(self, sequences: list) -> tuple[BatchState, torch.Tensor]:
        """Forward over the prompts of `sequences`; returns their new BatchState and last-position logits
        (rows, vocab). The state's `last_tokens` is filled by the caller once the tokens are picked."""
        width = max(seq.prompt_tokens for seq in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            input_ids[row, width - seq.prompt_tokens:] = torch.tensor(seq.prompt_ids, dtype=torch.long)
            mask[row, width - seq.prompt_tokens:] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = _positions(mask)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **self.keep_last)
        state = BatchState(sequences=list(sequences), cache=slab_cache(getattr(out, self.cache_name)), mask=mask,
                           next_positions=positions[:, -1] + 1, last_tokens=input_ids[:, -1])
        return state, out.logits[:, -1, :]

    @torch.inference_mode()
    def decode(self, state: BatchState) -> torch.Tensor:
        """Forward over each row's newest token; grows the state by one column; returns logits (rows, vocab)."""
        mask = torch.cat([state.mask, state.mask.new_ones((state.rows, 1))], dim=1)
        out = self.model(input_ids=state.last_tokens[:, None], position_ids=state.next_positions[:, None],
                         attention_mask=mask, use_cache=True, **{self.cache_name: state.cache}, **self.keep_last)
        state.cache = getattr(out, self.cache_name)
        state.mask = mask
        state.next_positions = state.next_positions + 1
        return out.logits[:, -1, :]

    def pick_tokens(self, logits: torch.Tensor, sequences: list) -> torch.Tensor:
        return pick_tokens(logits, sequences, self.eos_token_ids)


@torch.inference_mode()
def pick_tokens(logits: torch.Tensor, sequences: list, eos_token_ids: list[int]) -> torch.Tensor:
    """Next token per row (on the model's device): argmax, or a sample for rows with temperature > 0;
    end-of-sequence is masked for rows below their min_tokens."""
    logits = logits.float()
    below_min = [row for row, seq in enumerate(sequences) if seq.output_tokens < seq.min_tokens]
    if below_min and eos_token_ids:
        rows = torch.tensor(below_min, device=logits.device)
        logits[rows[:, None], torch.tensor(eos_token_ids, device=logits.device)] = float("-inf")
    tokens = logits.argmax(dim=-1)
    for row, seq in enumerate(sequences):
        if seq.temperature > 0:
            tokens[row] = _sample(logits[row], seq.temperature, seq.top_p)
    return tokens


def _sample(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One token from softmax(logits / temperature), restricted to the smallest set with probability >= top_p."""
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs.masked_fill(outside, 0.0))
    return torch.multinomial(probs, 1).squeeze(-1)
