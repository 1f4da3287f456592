"""The instrumented generation loop: one prefill, then one decode step per new token.

Written out by hand over the model's forward (as gpt-fast does) so that every stage is visible and timed:

    prefill        forward over the whole prompt, fills the KV cache, picks token 1
    decode_step[i] forward over the one newest token, reusing the cache, picks token i + 1

With `use_cache=False` each step instead recomputes the whole sequence, exactly like `use_cache=False` in
transformers. A model with a `fused_decoder` (model.use_fused_decoder: `cpu_decoder: fused`, or D5's fused variants)
runs its decode steps through our fused C decoder layer (kernels/fused_decoder.py: one operator a layer) over a cache
it fills from the prefill. Batches are left-padded; position ids follow the attention mask, as `model.generate` does,
so the greedy tokens equal `model.generate(do_sample=False)` token for token.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from .timing import StageClock


@dataclass
class Generation:
    """What one call of `generate` produced: the new tokens and the timed spans (prefill, decode_step[i])."""

    tokens: torch.Tensor  # (batch, new_tokens) int64, on the host
    clock: StageClock
    cache: object = None  # the KV cache after the last step (None without cache)

    @property
    def prefill_s(self) -> float:
        return self.clock.seconds("prefill")

    @property
    def decode_step_s(self) -> list[float]:
        return [span.seconds for span in self.clock.spans if span.name.startswith("decode_step[")]


def _forward_kwarg_names(model) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def cache_kwarg(model) -> str:
    """Name of the KV cache in the model's forward arguments and outputs: `cache` in recent transformers
    releases, `past_key_values` before."""
    return "cache" if "cache" in _forward_kwarg_names(model) else "past_key_values"


def encode_prompts(tokenizer, prompts: list[str], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize prompts into left-padded (input_ids, attention_mask) on `device`."""
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counting only real (unpadded) tokens; padding gets position 0."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def _pick(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int, generator) -> torch.Tensor:
    """Next token per row from last-position logits (batch, vocab): argmax, or a sample."""
    logits = logits.float()
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, *,
             use_cache: bool = True, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
             eos_token_id: int | None = None, pad_token_id: int = 0, generator: torch.Generator | None = None,
             clock: StageClock | None = None) -> Generation:
    """Generate `max_new_tokens` tokens for a left-padded batch.

    `eos_token_id`: when given, a row that produced it is finished (later tokens are `pad_token_id`) and the
    loop stops once every row is finished; when None the output length is fixed (what timing wants).
    Each forward is a span of `clock` ("prefill", then "decode_step[1]" …); a span ends when the new tokens
    are on the host.
    """
    device = input_ids.device.type
    clock = clock or StageClock(device)
    kwarg_names = _forward_kwarg_names(model)
    cache_name = cache_kwarg(model)
    keep_last = {"logits_to_keep": 1} if "logits_to_keep" in kwarg_names else {}

    sequence, mask = input_ids, attention_mask
    positions = _positions(mask)
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool)
    new_tokens: list[torch.Tensor] = []
    cache = None
    fused = getattr(model, "fused_decoder", None) if use_cache else None
    for step in range(max_new_tokens):
        name = "prefill" if step == 0 else f"decode_step[{step}]"
        with clock.span(name):
            if fused is not None:  # our fused layers: the prefill fills their cache, each step is one call a layer
                if step == 0:
                    logits, keys, values, lens, last = fused.prefill(sequence, mask, max_new_tokens)
                    tables = torch.arange(sequence.shape[0], device=sequence.device)[:, None]
                else:
                    logits = fused.step(sequence[:, -1], last + step, keys, values, tables, lens)
                    lens += 1
                next_tokens = _pick(logits, do_sample, temperature, top_k, generator)
                host_tokens = next_tokens.cpu()
            elif use_cache:
                if step == 0:
                    inputs = {"input_ids": sequence, "position_ids": positions}
                else:
                    inputs = {"input_ids": sequence[:, -1:], "position_ids": positions[:, -1:], cache_name: cache}
                out = model(**inputs, attention_mask=mask, use_cache=True, **keep_last)
                cache = getattr(out, cache_name)
            else:
                out = model(input_ids=sequence, attention_mask=mask, position_ids=positions, use_cache=False,
                            **keep_last)
            if fused is None:
                next_tokens = _pick(out.logits[:, -1, :], do_sample, temperature, top_k, generator)
                host_tokens = next_tokens.cpu()
        host_tokens = host_tokens.masked_fill(finished, pad_token_id)
        new_tokens.append(host_tokens)
        if eos_token_id is not None:
            finished |= host_tokens == eos_token_id
            if bool(finished.all()):
                break
        next_on_device = (next_tokens if eos_token_id is None else host_tokens.to(sequence.device))[:, None]
        sequence = torch.cat([sequence, next_on_device], dim=-1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        positions = torch.cat([positions, positions[:, -1:] + 1], dim=-1)
    return Generation(tokens=torch.stack(new_tokens, dim=1), clock=clock, cache=cache)
