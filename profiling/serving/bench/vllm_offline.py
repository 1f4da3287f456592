"""vLLM's offline engine (`LLM.generate`) at several batch sizes, for comparison with the project's engine.

Runs under the reference interpreter (.venv-reference/bin/python), not the project's: it imports only vLLM and
the standard library. Prompts are token ids (a JSON file: a list of lists), so both engines see the same input;
every sequence generates exactly --output-tokens tokens (greedy, ignore_eos). Writes JSON to --out (vLLM logs
to stdout too), or prints it as the last line when --out is not given:
    {"vllm_version": ..., "results": [{"batch_size", "wall_s", "output_tokens", "output_tok_per_s"}, ...]}
where output_tok_per_s = batch_size x output_tokens / wall_s of one `LLM.generate` call (after one warm-up call).

    .venv-reference/bin/python profiling/serving/vllm_offline.py --model DIR --prompt-ids ids.json
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
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per batch size (the fastest is kept)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the JSON result to this file")
    parser.add_argument("--enforce-eager", action="store_true", help="skip torch.compile (faster start)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import vllm
    from vllm import LLM, SamplingParams

    with open(args.prompt_ids) as handle:
        prompt_ids = json.load(handle)
    batch_sizes = [int(size) for size in args.batch_sizes.split(",") if size.strip()]
    llm = LLM(model=args.model, dtype=args.dtype, max_model_len=args.max_model_len,
              gpu_memory_utilization=args.gpu_memory_utilization, seed=args.seed,
              enforce_eager=args.enforce_eager)
    params = SamplingParams(temperature=0.0, max_tokens=args.output_tokens, min_tokens=args.output_tokens,
                            ignore_eos=True)

    def prompts(size: int) -> list[dict]:
        return [{"prompt_token_ids": prompt_ids[i % len(prompt_ids)]} for i in range(size)]

    llm.generate(prompts(1), params, use_tqdm=False)  # warm-up
    results = []
    for size in batch_sizes:
        best = None
        for _ in range(max(args.repeats, 1)):
            start = time.perf_counter()
            outputs = llm.generate(prompts(size), params, use_tqdm=False)
            wall = time.perf_counter() - start
            tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
            if best is None or wall < best[0]:
                best = (wall, tokens)
        wall, tokens = best
        results.append({"batch_size": size, "wall_s": wall, "output_tokens": tokens,
                        "output_tok_per_s": tokens / wall})
    text = json.dumps({"vllm_version": vllm.__version__, "prompt_tokens": len(prompt_ids[0]),
                       "output_tokens": args.output_tokens, "results": results})
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    else:
        print(text, flush=True)


if __name__ == "__main__":
    main()
