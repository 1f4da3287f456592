"""llama.cpp (llama-cpp-python) as D5's yardstick: the fastest CPU kernels, on the GGUF the model package ships.

Runs under the reference interpreter (.venv-reference/bin/python), not the project's: it imports only llama_cpp
and the standard library (the GGUF header reader below is stdlib only, so the project's tests can use it).

For each quant type (q4_1, q8_0, f32): the source GGUF is requantised once with llama.cpp's own
`llama_model_quantize` into --cache-dir (reused when present; q4_1 is the shipped file itself when it is q4_1);
then at each batch size B, in a context with B sequences, greedy generation of --output-tokens tokens after the
prompt's token ids (one copy per sequence): one `llama_decode` of every prompt (the prefill), then one
`llama_decode` per step for all B sequences (one token each), the next tokens picked by llama.cpp's greedy sampler.
One untimed warm-up generation per batch size, then --repeats timed ones. Times are seconds (perf_counter).

Writes JSON to --out (or prints it as the last line):
    {"llama_cpp_version", "build", "system_info", "threads", "prompt_tokens", "output_tokens",
     "models": [{"quant", "file", "tensor_bytes", "step_weight_bytes", "tied_embeddings", "model_size_bytes",
                 "n_params", "quantize_s", "load_s",
                 "results": [{"batch_size", "repeats": [{"prefill_s", "decode_step_s": [...], "tokens": [...]}]}]}],
     "failed": {quant: reason}}
decode_step_s[i] is the wall time of step i+1 (decode + sampling of all B sequences); tokens are sequence 0's.
step_weight_bytes: the GGUF's tensor bytes less the token embedding when a separate output matrix exists (a step
reads one embedding row per sequence); with tied embeddings the output projection reads the whole table, counted once.

    .venv-reference/bin/python profiling/serving/bench/llama_cpp_bench.py --gguf model.gguf --prompt-ids ids.json
"""
from __future__ import annotations

import argparse
import ctypes
import json
import struct
import sys
import time
from pathlib import Path

FTYPES = {"f32": 0, "q4_1": 3, "q8_0": 7}  # llama.cpp's LLAMA_FTYPE_* of each quant type we measure
BUILD_MARKER = "llama_cpp_build.txt"  # written by `make reference` into the venv: which build was installed

# ---- GGUF header (stdlib) ----------------------------------------------------------------------------------------
# ggml type id -> (elements per block, bytes per block)
GGML_TYPE_SIZE = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
                  9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
                  15: (256, 292), 30: (1, 2)}
GGML_TYPE_NAME = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0", 9: "q8_1",
                  10: "q2_k", 11: "q3_k", 12: "q4_k", 13: "q5_k", 14: "q6_k", 15: "q8_k", 30: "bf16"}
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class _Reader:
    def __init__(self, handle):
        self.handle = handle

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        data = self.handle.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF header")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        return self.handle.read(self.unpack("<Q")).decode("utf-8", errors="replace")

    def value(self, kind: int):
        if kind == 8:
            return self.string()
        if kind == 9:
            item_kind, count = self.unpack("<I"), self.unpack("<Q")
            return [self.value(item_kind) for _ in range(count)]
        if kind not in _SCALAR:
            raise ValueError(f"unknown GGUF value type {kind}")
        return self.unpack(_SCALAR[kind])


def gguf_tensors(path) -> list[dict]:
    """The tensors of a GGUF file: name, ggml type (id and name), shape, bytes. Bytes come from the type's block
    size; for a type not in GGML_TYPE_SIZE, from the distance to the next tensor's offset (incl. alignment padding)."""
    path = Path(path)
    with open(path, "rb") as handle:
        reader = _Reader(handle)
        if handle.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        reader.unpack("<I")  # version
        n_tensors, n_kv = reader.unpack("<Q"), reader.unpack("<Q")
        alignment = 32
        for _ in range(n_kv):
            key, kind = reader.string(), reader.unpack("<I")
            value = reader.value(kind)
            if key == "general.alignment":
                alignment = int(value)
        infos = []
        for _ in range(n_tensors):
            name = reader.string()
            shape = [reader.unpack("<Q") for _ in range(reader.unpack("<I"))]
            infos.append({"name": name, "shape": shape, "type": reader.unpack("<I"), "offset": reader.unpack("<Q")})
        data_start = -(-handle.tell() // alignment) * alignment
    ends = sorted(info["offset"] for info in infos)[1:] + [path.stat().st_size - data_start]
    next_offset = dict(zip(sorted(info["offset"] for info in infos), ends))
    tensors = []
    for info in infos:
        elements = 1
        for dim in info["shape"]:
            elements *= dim
        block = GGML_TYPE_SIZE.get(info["type"])
        size = elements // block[0] * block[1] if block else next_offset[info["offset"]] - info["offset"]
        tensors.append({"name": info["name"], "type": info["type"],
                        "type_name": GGML_TYPE_NAME.get(info["type"], str(info["type"])),
                        "shape": info["shape"], "bytes": size})
    return tensors


def step_weight_bytes(tensors: list[dict]) -> dict:
    """Bytes one decode step reads from the weights (see the module docstring), the file's tensor bytes, and
    whether the embeddings are tied (no separate output.weight)."""
    total = sum(t["bytes"] for t in tensors)
    names = {t["name"] for t in tensors}
    tied = "output.weight" not in names
    embedding = sum(t["bytes"] for t in tensors if t["name"] == "token_embd.weight")
    return {"tensor_bytes": total, "step_weight_bytes": total if tied else total - embedding,
            "tied_embeddings": tied,
            "types": sorted({t["type_name"] for t in tensors})}


def file_quant(tensors: list[dict]) -> str:
    """The type of most of a GGUF's matrix bytes (e.g. q4_1), the name llama.cpp gives the file's ftype."""
    by_type: dict = {}
    for tensor in tensors:
        if len(tensor["shape"]) == 2:
            by_type[tensor["type_name"]] = by_type.get(tensor["type_name"], 0) + tensor["bytes"]
    return max(by_type, key=by_type.get) if by_type else "unknown"


# ---- llama.cpp ---------------------------------------------------------------------------------------------------
def requantised(llama_cpp, source: Path, quant: str, cache_dir: Path, threads: int) -> tuple[Path, float]:
    """The GGUF of `quant`: the source when it already is that type, else a cached requantisation (made now when
    missing, with llama.cpp's llama_model_quantize). Returns (path, seconds spent quantising now)."""
    if file_quant(gguf_tensors(source)) == quant:
        return source, 0.0
    target = cache_dir / f"{source.stem}.{quant}.gguf"
    if target.exists():
        return target, 0.0
    cache_dir.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[quant]
    params.allow_requantize = True
    params.nthread = threads
    partial = target.with_suffix(".partial")
    start = time.perf_counter()
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama_model_quantize to {quant} returned {status}")
    partial.rename(target)
    return target, time.perf_counter() - start


def clear_cache(llama_cpp, ctx) -> None:
    """Empty the context's KV cache (the API moved from llama_kv_self_clear to llama_memory_clear)."""
    if hasattr(llama_cpp, "llama_memory_clear"):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    else:
        llama_cpp.llama_kv_self_clear(ctx)


def fill(batch, tokens: list[tuple[int, int, int, bool]]) -> None:
    """Put (token, position, sequence, wants logits) entries into a llama_batch."""
    for i, (token, pos, seq, logits) in enumerate(tokens):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq, logits
    batch.n_tokens = len(tokens)


def generate(llama_cpp, ctx, sampler, batch, prompt: list[int], sequences: int, new_tokens: int) -> dict:
    """One greedy generation of `new_tokens` tokens for `sequences` copies of `prompt`; prefill and step times."""
    clear_cache(llama_cpp, ctx)
    entries = [(token, pos, seq, pos == len(prompt) - 1) for seq in range(sequences)
               for pos, token in enumerate(prompt)]
    fill(batch, entries)
    start = time.perf_counter()
    if llama_cpp.llama_decode(ctx, batch) != 0:
        raise RuntimeError("llama_decode failed on the prompts")
    outputs = [i for i, entry in enumerate(entries) if entry[3]]
    current = [llama_cpp.llama_sampler_sample(sampler, ctx, i) for i in outputs]
    prefill_s = time.perf_counter() - start
    tokens, steps = [current[0]], []
    for step in range(1, new_tokens):
        fill(batch, [(current[seq], len(prompt) + step - 1, seq, True) for seq in range(sequences)])
        start = time.perf_counter()
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError(f"llama_decode failed at step {step}")
        current = [llama_cpp.llama_sampler_sample(sampler, ctx, seq) for seq in range(sequences)]
        steps.append(time.perf_counter() - start)
        tokens.append(current[0])
    return {"prefill_s": prefill_s, "decode_step_s": steps, "tokens": tokens}


def measure_model(llama_cpp, path: Path, prompt: list[int], args) -> dict:
    """Load one GGUF and time generations at every batch size (a context per batch size)."""
    model_params = llama_cpp.llama_model_default_params()
    start = time.perf_counter()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {path.name}")
    load_s = time.perf_counter() - start
    sampler = llama_cpp.llama_sampler_init_greedy()
    results = []
    try:
        for size in args.batch_sizes:
            per_sequence = len(prompt) + args.output_tokens + 16
            params = llama_cpp.llama_context_default_params()
            params.n_ctx = per_sequence * size
            params.n_batch = params.n_ubatch = max(512, len(prompt) * size)
            params.n_seq_max = size
            params.n_threads = params.n_threads_batch = args.threads
            ctx = llama_cpp.llama_init_from_model(model, params)
            if not ctx:
                raise RuntimeError(f"llama.cpp could not create a context for batch {size}")
            batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
            try:
                generate(llama_cpp, ctx, sampler, batch, prompt, size, min(args.output_tokens, 8))  # warm-up
                repeats = [generate(llama_cpp, ctx, sampler, batch, prompt, size, args.output_tokens)
                           for _ in range(args.repeats)]
            finally:
                llama_cpp.llama_batch_free(batch)
                llama_cpp.llama_free(ctx)
            results.append({"batch_size": size, "repeats": repeats})
        return {"load_s": load_s, "model_size_bytes": int(llama_cpp.llama_model_size(model)),
                "n_params": int(llama_cpp.llama_model_n_params(model)), "results": results}
    finally:
        llama_cpp.llama_sampler_free(sampler)
        llama_cpp.llama_model_free(model)


def build_of(prefix: str) -> str:
    """Which build `make reference` installed (its marker file in the venv), or 'unknown'."""
    marker = Path(prefix) / BUILD_MARKER
    return marker.read_text().strip() if marker.exists() else "unknown (no build marker in the venv)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, help="the source GGUF (as the model package ships it)")
    parser.add_argument("--prompt-ids", required=True, help="JSON file: the prompt's token ids (a list)")
    parser.add_argument("--quants", default="q4_1,q8_0,f32", help=f"comma-separated, of {', '.join(FTYPES)}")
    parser.add_argument("--cache-dir", required=True, help="where requantised GGUFs are kept")
    parser.add_argument("--batch-sizes", default="1,8,16", help="comma-separated, e.g. 1,8,16")
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed generations per quant type and batch size")
    parser.add_argument("--out", help="write the JSON result to this file")
    args = parser.parse_args(argv)
    args.batch_sizes = [int(size) for size in args.batch_sizes.split(",") if size.strip()]
    args.quants = [quant.strip() for quant in args.quants.split(",") if quant.strip()]
    unknown = [quant for quant in args.quants if quant not in FTYPES]
    if unknown:
        parser.error(f"--quants: unknown {unknown}; choose from {', '.join(FTYPES)}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    import llama_cpp

    llama_cpp.llama_backend_init()
    prompt = [int(token) for token in json.loads(Path(args.prompt_ids).read_text())]
    source = Path(args.gguf)
    models, failed = [], {}
    for quant in args.quants:
        try:
            path, quantize_s = requantised(llama_cpp, source, quant, Path(args.cache_dir), args.threads)
            tensors = gguf_tensors(path)
            measured = measure_model(llama_cpp, path, prompt, args)
            models.append({"quant": quant, "file": path.name, **step_weight_bytes(tensors),
                           "quantize_s": quantize_s, **measured})
        except Exception as error:  # noqa: BLE001 - one quant type failing is a note, the others still run
            failed[quant] = f"{type(error).__name__}: {error}"[:300]
        print(f"llama.cpp {quant}: {'failed: ' + failed[quant] if quant in failed else 'done'}", file=sys.stderr,
              flush=True)
    text = json.dumps({"llama_cpp_version": llama_cpp.__version__, "build": build_of(sys.prefix),
                       "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
                       "threads": args.threads, "prompt_tokens": len(prompt), "output_tokens": args.output_tokens,
                       "source": source.name, "models": models, "failed": failed})
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text, flush=True)


if __name__ == "__main__":
    main()
