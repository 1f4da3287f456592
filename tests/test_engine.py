"""The engine's own loop must compute exactly what transformers computes."""
import torch

from profiling.engine import encode_prompts, generate
from profiling.timing import StageClock

PROMPTS = ["hello there", "a much longer prompt, so that the first one is left-padded"]


def reference(model, tokenizer, input_ids, attention_mask, n, **kwargs):
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id, **kwargs)
    return out[:, input_ids.shape[1]:]


def test_greedy_equals_generate_single_and_left_padded_batch(tiny):
    model, tokenizer = tiny
    for prompts in (PROMPTS[:1], PROMPTS):
        input_ids, attention_mask = encode_prompts(tokenizer, prompts, "cpu")
        ours = generate(model, input_ids, attention_mask, 12)
        assert torch.equal(ours.tokens, reference(model, tokenizer, input_ids, attention_mask, 12))


def test_left_padding_is_applied(tiny):
    _, tokenizer = tiny
    _, attention_mask = encode_prompts(tokenizer, PROMPTS, "cpu")
    assert attention_mask[0, 0] == 0 and attention_mask[0, -1] == 1


def test_no_cache_gives_identical_tokens(tiny):
    model, tokenizer = tiny
    input_ids, attention_mask = encode_prompts(tokenizer, PROMPTS, "cpu")
    cached = generate(model, input_ids, attention_mask, 10, use_cache=True)
    uncached = generate(model, input_ids, attention_mask, 10, use_cache=False)
    assert torch.equal(cached.tokens, uncached.tokens)
    assert uncached.cache is None and cached.cache is not None


def test_spans_cover_prefill_and_every_decode_step(tiny):
    model, tokenizer = tiny
    input_ids, attention_mask = encode_prompts(tokenizer, PROMPTS[:1], "cpu")
    clock = StageClock("cpu")
    result = generate(model, input_ids, attention_mask, 5, clock=clock)
    assert [span.name for span in clock.spans] == ["prefill"] + [f"decode_step[{i}]" for i in range(1, 5)]
    assert len(result.decode_step_s) == 4 and result.prefill_s > 0


def test_eos_stops_rows_and_pads_finished_ones(tiny):
    model, tokenizer = tiny
    input_ids, attention_mask = encode_prompts(tokenizer, PROMPTS, "cpu")
    free = generate(model, input_ids, attention_mask, 8)
    eos = int(free.tokens[0, 2])  # pretend row 0's third token is the end of sequence
    pad = tokenizer.pad_token_id
    stopped = generate(model, input_ids, attention_mask, 8, eos_token_id=eos, pad_token_id=pad)
    row = stopped.tokens[0].tolist()
    assert row[:3] == free.tokens[0, :3].tolist()
    assert row[3:] == [pad] * (len(row) - 3)
    assert pad not in free.tokens[0, 3:].tolist()  # so the padding above really came from the stop


def test_sampling_is_reproducible_with_a_seeded_generator(tiny):
    model, tokenizer = tiny
    input_ids, attention_mask = encode_prompts(tokenizer, PROMPTS[:1], "cpu")
    runs = [generate(model, input_ids, attention_mask, 8, do_sample=True, temperature=1.5, top_k=20,
                     generator=torch.Generator().manual_seed(7)).tokens for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    greedy = generate(model, input_ids, attention_mask, 8).tokens
    hot = generate(model, input_ids, attention_mask, 8, do_sample=True, temperature=50.0,
                   generator=torch.Generator().manual_seed(7)).tokens
    assert not torch.equal(greedy, hot)
