"""vLLM's offline engine (`LLM.generate`) at several batch sizes, decode timed apart from start-up and prefill.

Runs under the reference interpreter (.venv-reference/bin/python), not the project's: it imports only vLLM and
the standard library. Prompts are token ids (a JSON file: a list of lists), so both engines see the same input;
every sequence generates exactly --output-tokens tokens (greedy, ignore_eos). One mode per process: vLLM's default
(torch.compile) or, with --enforce-eager, eager. Times are seconds (perf_counter):

    startup_s       building LLM(...) (loading, and in the default mode compiling)
    warmup_s        the first generate call (batch 1, all output tokens), untimed otherwise; then one untimed call
                    of up to 8 tokens at each batch size
    per batch size B, each repeat: one call with max_tokens = 1 (prefill_s: the prompts' prefill + first token),
    then one with N = --output-tokens (e2e_s); decode_step_s = (e2e_s - prefill_s) / (N - 1), one decode step
    for all B sequences; output_tok_per_s = B x N / e2e_s (end to end, prefill included)

Writes JSON to --out (vLLM logs to stdout too), or prints it as the last line when --out is not given:
    {"vllm_version", "mode", "startup_s", "warmup_s", "prompt_tokens", "output_tokens",
     "results": [{"batch_size", "repeats": [{"prefill_s", "e2e_s", "decode_step_s", "output_tokens",
                                             "output_tok_per_s"}], "tokens": [...]}]}
tokens: sequence 0's greedy tokens of the first repeat.

    .venv-reference/bin/python profiling/serving/bench/vllm_offline.py --model DIR --prompt-ids ids.json
"""
from __future__ import annotations

import argparse
import json
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local model directory")
    parser.add_argument("--prompt-ids", required=True, help="JSON file: a list of token-id lists (one per prompt)")
    parser.add_argument("--batch-sizes", default="1,8,16", help="comma-separated, e.g. 1,8,16")
    parser.add_argument("--output-tokens", type=int, default=64, help="tokens per sequence (at least 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed (prefill, full) call pairs per batch size")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the JSON result to this file")
    parser.add_argument("--enforce-eager", action="store_true", help="skip torch.compile (faster start)")
    args = parser.parse_args(argv)
    if args.output_tokens < 2:
        parser.error("--output-tokens: at least 2 (decode is timed as the difference from a 1-token call)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    import vllm
    from vllm import LLM, SamplingParams

    with open(args.prompt_ids) as handle:
        prompt_ids = json.load(handle)
    batch_sizes = [int(size) for size in args.batch_sizes.split(",") if size.strip()]
    start = time.perf_counter()
    llm = LLM(model=args.model, dtype=args.dtype, max_model_len=args.max_model_len,
              gpu_memory_utilization=args.gpu_memory_utilization, seed=args.seed,
              enforce_eager=args.enforce_eager)
    startup_s = time.perf_counter() - start

    def params(tokens: int):
        return SamplingParams(temperature=0.0, max_tokens=tokens, min_tokens=tokens, ignore_eos=True)

    def timed(size: int, tokens: int):
        prompts = [{"prompt_token_ids": prompt_ids[i % len(prompt_ids)]} for i in range(size)]
        begin = time.perf_counter()
        outputs = llm.generate(prompts, params(tokens), use_tqdm=False)
        return time.perf_counter() - begin, outputs

    warmup_s, _ = timed(1, args.output_tokens)
    results = []
    for size in batch_sizes:
        timed(size, min(args.output_tokens, 8))  # warm-up at this batch size (its first-call costs)
        repeats, tokens = [], None
        for _ in range(max(args.repeats, 1)):
            prefill_s, _ = timed(size, 1)
            e2e_s, outputs = timed(size, args.output_tokens)
            generated = sum(len(output.outputs[0].token_ids) for output in outputs)
            tokens = tokens or list(outputs[0].outputs[0].token_ids)
            repeats.append({"prefill_s": prefill_s, "e2e_s": e2e_s,
                            "decode_step_s": (e2e_s - prefill_s) / (args.output_tokens - 1),
                            "output_tokens": generated, "output_tok_per_s": generated / e2e_s})
        results.append({"batch_size": size, "repeats": repeats, "tokens": tokens})
    text = json.dumps({"vllm_version": vllm.__version__, "mode": "eager" if args.enforce_eager else "compiled",
                       "startup_s": startup_s, "warmup_s": warmup_s, "prompt_tokens": len(prompt_ids[0]),
                       "output_tokens": args.output_tokens, "results": results})
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    else:
        print(text, flush=True)


if __name__ == "__main__":
    main()
