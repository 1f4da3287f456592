"""How each D5 variant is built from the reference, and how it generates.

The reference is the model in float32 with eager attention, run by the shared engine with a DynamicCache at all
physical cores. A variant changes one or more levers (a `Spec`):

    attn      eager | sdpa                          attention kernel (transformers' attn_implementation)
    dtype     float32 | bfloat16 | float16          weights and activations (float16: CUDA only)
    quant     none | int8_dynamic | int8_weight_only | w8a8 | int4_weight_only | w4a8
              int8_dynamic      torch.ao dynamic quantisation of every nn.Linear (int8 weights, one scale per
                                tensor; activations quantised per call); CPU only
              int8_weight_only  int8 weights with one scale per output channel, activations kept in `dtype`
                                (aten._weight_int8pack_mm, the kernel gpt-fast's int8 mode uses)
              w8a8              int8 weights as int8_weight_only, meeting activations quantised to int8 at each
                                call in blocks of 32 with a float32 scale each (llama.cpp q8_0's scheme for its
                                8-bit dot products): approximate; small_batch linears only
              int4_weight_only  4-bit weights, a scale and a zero per `group_size` input channels (llama.cpp's
                                q4_1 layout at 32), activations in `dtype` (aten._weight_int4pack_mm_for_cpu); CPU
              w4a8              int4 weights in q4_1's groups (as int4_weight_only with small_batch), meeting
                                activations quantised to int8 per block of 32 (llama.cpp's q4_1 x q8_1 dot
                                products): approximate; small_batch linears only
    group_size 32                                   int4 only: input channels per scale and zero
    linears   aten | prepacked | small_batch        float linears by F.linear, packed once for oneDNN
                                                    (profiling/prepack.py; CPU only), or our C kernels at 1
                                                    to 32 rows (profiling/kernels/small_batch.py; CPU only): with
                                                    int8_weight_only, int8 weights and float32 activations; with
                                                    int4_weight_only, groups of 32 with float32 scales and lows
                                                    (0.75 byte per weight), float32 activations
    cache     dynamic | static                      static: transformers' StaticCache, length prompt + new tokens
    compile   none | default | reduce-overhead      torch.compile (Inductor); with a static cache only the decode
                                                    step is compiled (fixed shapes); reduce-overhead = CUDA graphs
    freezing  False | True                          with compile: Inductor's freezing (weights become constants,
                                                    folded and prepacked for oneDNN at compile time)
    decoder   hf | fused                            fused: every decode step runs each decoder layer as one call
                                                    of our C kernel (profiling/kernels/fused_decoder.py; CPU only,
                                                    small_batch linears): ~40 operators a step instead of ~4,700;
                                                    the engine's `cpu_decoder: fused` setting
    threads   0 (all of the run's threads) or a count

The weight-only kernels are fast on a CPU only with bfloat16 activations (float32 ones take slow fallbacks, 8-25x
slower here), so every quantised variant of the catalogue runs in bfloat16.

A variant that cannot run here (CUDA-only on a CPU, a build or first forward that fails) is not built: the caller
gets the reason and records it as a row.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from ...engine import generate
from ...kernels.fused_decoder import FusedDecoder
from ...kernels.small_batch import use_small_batch_kernels
from ...model import model_source
from ...quantize import quantize_int4_weight_only, quantize_int8_dynamic, quantize_int8_weight_only
from ...timing import StageClock, sync
from . import REFERENCE

RECOMPILE_LIMIT = 64  # compiled decode-step graphs kept (variants x batch sizes x cache lengths)


@dataclass(frozen=True)
class Spec:
    """The levers of one variant (see the module docstring)."""

    attn: str = "eager"
    dtype: str = "float32"
    quant: str = "none"
    cache: str = "dynamic"
    compile: str = "none"
    freezing: bool = False  # with compile only
    group_size: int = 32  # int4_weight_only only
    linears: str = "aten"
    decoder: str = "hf"  # hf | fused
    threads: int = 0  # 0: all of the run's threads
    cuda_only: bool = False


# Every variant the config may name. Singles move one lever; combinations aim at the best result.
# int8 weight-only runs with bfloat16 activations, as gpt-fast's int8 mode does: the kernel's fast path.
CATALOG: dict[str, Spec] = {
    REFERENCE: Spec(),
    "sdpa": Spec(attn="sdpa"),
    "bfloat16": Spec(dtype="bfloat16"),
    "float16": Spec(dtype="float16", cuda_only=True),
    "int8_dynamic": Spec(quant="int8_dynamic"),
    "int8wo": Spec(quant="int8_weight_only"),
    "int8wo_bf16": Spec(dtype="bfloat16", quant="int8_weight_only"),
    "int8wo_bf16_sdpa": Spec(attn="sdpa", dtype="bfloat16", quant="int8_weight_only"),
    "static": Spec(cache="static"),
    "compile": Spec(compile="default"),
    "static_compile": Spec(cache="static", compile="default"),
    "threads_1": Spec(threads=1),
    "bf16_sdpa_static_compile": Spec(attn="sdpa", dtype="bfloat16", cache="static", compile="default"),
    "int8wo_bf16_sdpa_static_compile": Spec(attn="sdpa", dtype="bfloat16", quant="int8_weight_only",
                                            cache="static", compile="default"),
    # the kernel levers: float32 linears packed once for oneDNN (eager), or frozen and prepacked by Inductor;
    # int4 weights (llama.cpp q4_1's layout, 0.625 byte per weight) with bfloat16 activations, eager and compiled
    "prepacked_sdpa": Spec(attn="sdpa", linears="prepacked"),
    "sdpa_static_compile_frozen": Spec(attn="sdpa", cache="static", compile="default", freezing=True),
    "int4wo_bf16_sdpa": Spec(attn="sdpa", dtype="bfloat16", quant="int4_weight_only"),
    "int4wo_bf16_sdpa_static_compile": Spec(attn="sdpa", dtype="bfloat16", quant="int4_weight_only",
                                            cache="static", compile="default"),
    # our own C kernels at 1-32 rows (a panel GEMM; oneDNN packed above): float32 weights, or int8 ones by row dot
    # products with float32 activations (the path where torch's int8 kernel is slow)
    "small_batch_sdpa": Spec(attn="sdpa", linears="small_batch"),
    "int8wo_small_batch_sdpa": Spec(attn="sdpa", quant="int8_weight_only", linears="small_batch"),
    "small_batch_sdpa_static_compile": Spec(attn="sdpa", linears="small_batch", cache="static", compile="default"),
    "int8wo_small_batch_sdpa_static_compile": Spec(attn="sdpa", quant="int8_weight_only", linears="small_batch",
                                                   cache="static", compile="default"),
    # the same kernels with each decoder layer's decode step as one C call: the host time between operators goes
    "small_batch_fused": Spec(attn="sdpa", linears="small_batch", decoder="fused"),
    "int8wo_small_batch_fused": Spec(attn="sdpa", quant="int8_weight_only", linears="small_batch", decoder="fused"),
    # int4 weights (q4_1's layout in float32 scales: 0.75 byte per weight) by our C kernel, float32 activations
    # int8 weights meeting int8 activations (blocks of 32, as llama.cpp's q8_0 dot products): 8-bit vector lanes
    "w8a8_small_batch_fused": Spec(attn="sdpa", quant="w8a8", linears="small_batch", decoder="fused"),
    "int4wo_small_batch_sdpa": Spec(attn="sdpa", quant="int4_weight_only", linears="small_batch"),
    "int4wo_small_batch_fused": Spec(attn="sdpa", quant="int4_weight_only", linears="small_batch", decoder="fused"),
    # the same int4 weights meeting int8 activations (blocks of 32, as llama.cpp's q4_1 x q8_1 dot products)
    "w4a8_small_batch_fused": Spec(attn="sdpa", quant="w4a8", linears="small_batch", decoder="fused"),
    "cuda_graphs": Spec(cache="static", compile="reduce-overhead", cuda_only=True),
    "fp16_sdpa_cuda_graphs": Spec(attn="sdpa", dtype="float16", cache="static", compile="reduce-overhead",
                                  cuda_only=True),
}


def spec_of(name: str) -> Spec:
    """The Spec of a catalogued variant; ValueError naming the choices otherwise."""
    if name not in CATALOG:
        raise ValueError(f"unknown D5 variant {name!r}; choices: {', '.join(CATALOG)}")
    return CATALOG[name]


def unavailable_reason(spec: Spec, device: str) -> str | None:
    """Why `spec` cannot run on `device` before trying (None when it may)."""
    on_cuda = device.startswith("cuda")
    if spec.cuda_only and not on_cuda:
        return f"needs a CUDA GPU (this run is on {device})"
    if spec.dtype == "float16" and not on_cuda:
        return "float16 is measured on CUDA only (CPU float16 matmuls are slow emulation)"
    if spec.quant == "int8_dynamic" and on_cuda:
        return "torch.ao dynamic quantisation has CPU kernels only"
    if spec.quant == "int4_weight_only" and on_cuda:
        return "the int4 weight-only kernel used here (aten._weight_int4pack_mm_for_cpu) is the CPU one"
    if spec.linears == "prepacked" and on_cuda:
        return "oneDNN prepacked linears are a CPU path"
    if spec.linears == "small_batch" and on_cuda:
        return "our small-batch kernel is a CPU one"
    if spec.quant in ("w8a8", "w4a8") and (on_cuda or spec.linears != "small_batch"):
        return "int8 activations (w8a8, w4a8) run on our small-batch CPU kernel only"
    if spec.freezing and spec.compile == "none":
        return "freezing is an Inductor option: it needs compile"
    if spec.decoder == "fused" and (on_cuda or spec.linears != "small_batch" or spec.compile != "none"):
        return "the fused decoder layer is our CPU kernel over small_batch linears, run eagerly"
    return None


# ---- bytes read per decode step ----------------------------------------------------------------------------------
def _dynamic_quantized_linear_bytes(module) -> int | None:
    """Bytes of a torch.ao dynamic quantised Linear's weight (1 per element + scales) and bias; None otherwise."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    if not isinstance(module, DynamicQuantizedLinear):
        return None
    weight, bias = module._weight_bias()
    scales = weight.q_per_channel_scales().numel() if weight.qscheme() in (
        torch.per_channel_affine, torch.per_channel_symmetric) else 1
    return weight.numel() + scales * 4 + (bias.numel() * bias.element_size() if bias is not None else 0)


def step_weight_bytes(model) -> int:
    """Bytes of weights one decode step reads, in the variant's own storage (int8 = 1 byte + scales; int4 =
    half a byte, packed two to a uint8, + a scale and a zero per group).

    Every leaf module's parameters and buffers count once (shared tensors once), except embedding tables: a step
    reads one row per sequence, counted as 0 (a tied lm_head still reads the whole matrix and counts it)."""
    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            continue
        quantized = _dynamic_quantized_linear_bytes(module)
        if quantized is not None:
            total += quantized
            continue
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if tensor is None or tensor.data_ptr() in seen:
                continue
            if not (tensor.is_floating_point() or tensor.dtype in (torch.int8, torch.uint8)):
                continue
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


def kv_bytes_per_element(spec: Spec) -> int:
    """Bytes of one cached key or value element: the activations' dtype."""
    return torch.empty((), dtype=getattr(torch, spec.dtype)).element_size()


def compile_options(mode: str, freezing: bool) -> dict:
    """torch.compile's mode or options for `mode` (default | reduce-overhead) and `freezing`: freezing is one of
    Inductor's options, given to this compilation alone (not the global config, so later ones are untouched);
    torch.compile takes a mode or options, not both, so a mode then becomes its options."""
    mode = None if mode == "default" else mode
    if not freezing:
        return {"mode": mode}
    from torch._inductor import list_mode_options

    return {"options": {**(list_mode_options(mode) if mode else {}), "freezing": True}}


def compiled(fn, mode: str, freezing: bool, **kwargs):
    """torch.compile(fn, **kwargs) with compile_options(mode, freezing)."""
    return torch.compile(fn, **compile_options(mode, freezing), **kwargs)


# ---- the static-cache generation loop ----------------------------------------------------------------------------
def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counting only real tokens (padding gets 0), as the engine and model.generate do."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


class StaticDecoder:
    """Greedy generation over a StaticCache of length prompt + new tokens (tight), gpt-fast style.

    The prefill runs eagerly; every decode step is one call of `self.step` with fixed shapes (batch, 1 token,
    a (batch, cache length) mask), compiled with `compile_mode` unless it is "none". One cache per (batch, length)
    is kept and reset between generations, so the compiled step is reused."""

    def __init__(self, model, compile_mode: str, freezing: bool = False):
        self.model = model
        self.caches: dict[tuple[int, int], object] = {}
        # Dynamo keys its compiled graphs by code object: every decoder's `_step` shares one, and each (variant,
        # batch size) is one graph of it, so the default limit of 8 would stop the third compiled variant at 3
        # batch sizes ("hit config.recompile_limit").
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        self.step = self._step if compile_mode == "none" else compiled(self._step, compile_mode, freezing,
                                                                       fullgraph=True, dynamic=False)

    def _step(self, token_ids, position_ids, attention_mask, cache):
        """One decode forward; last-position logits (batch, vocab)."""
        out = self.model(input_ids=token_ids, position_ids=position_ids, attention_mask=attention_mask, cache=cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :]

    def cache_for(self, batch: int, length: int):
        """The (reset) StaticCache for this batch and length."""
        from transformers import StaticCache

        key = (batch, length)
        if key not in self.caches:
            self.caches[key] = StaticCache(config=self.model.config, max_cache_len=length)
        else:
            self.caches[key].reset()
        return self.caches[key]

    @torch.inference_mode()
    def generate(self, input_ids, attention_mask, max_new_tokens: int, clock: StageClock,
                 keep_first_logits: bool = False, cache_new_tokens: int = 0):
        """Greedy tokens (batch, max_new_tokens) on the host, timed as the engine's spans (prefill,
        decode_step[i]); with keep_first_logits also the prefill's last-position logits (float32).
        The cache holds prompt + max(max_new_tokens, cache_new_tokens) tokens."""
        batch, prompt_len = input_ids.shape
        room = max(max_new_tokens, cache_new_tokens)
        cache = self.cache_for(batch, prompt_len + room)
        mask = torch.cat([attention_mask, attention_mask.new_ones(batch, room)], dim=-1)
        positions = _positions(attention_mask)
        tokens, first_logits = [], None
        with clock.span("prefill"):
            out = self.model(input_ids=input_ids, position_ids=positions, attention_mask=mask, cache=cache,
                             use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1, :]
            next_ids = logits.float().argmax(dim=-1)
            tokens.append(next_ids.cpu())
        if keep_first_logits:
            first_logits = logits.float().cpu()
        last = positions[:, -1:]
        for step in range(1, max_new_tokens):
            with clock.span(f"decode_step[{step}]"):
                logits = self.step(next_ids[:, None], last + step, mask, cache)
                next_ids = logits.float().argmax(dim=-1)
                tokens.append(next_ids.cpu())
        return torch.stack(tokens, dim=1), first_logits


# ---- a built variant ---------------------------------------------------------------------------------------------
@dataclass
class Built:
    """A variant ready to run: its model, how it generates, and what building it cost (seconds)."""

    name: str
    spec: Spec
    model: object
    device: str
    build_s: float
    weight_bytes: int  # bytes read per decode step (step_weight_bytes)
    decoder: StaticDecoder | None = None

    def generate(self, input_ids, attention_mask, max_new_tokens: int, clock: StageClock,
                 cache_new_tokens: int = 0) -> torch.Tensor:
        """Greedy tokens (batch, max_new_tokens) on the host; spans prefill and decode_step[i] on `clock`.
        `cache_new_tokens`: a static cache keeps room for this many new tokens (the timed runs' length)."""
        with thread_count(self.spec.threads):
            if self.decoder is not None:
                return self.decoder.generate(input_ids, attention_mask, max_new_tokens, clock,
                                             cache_new_tokens=cache_new_tokens)[0]
            return generate(self.model, input_ids, attention_mask, max_new_tokens, clock=clock).tokens

    def first_logits(self, input_ids, attention_mask) -> torch.Tensor:
        """Last-position logits (float32, host) of the prefill, by the variant's own path (untimed)."""
        with thread_count(self.spec.threads):
            if self.decoder is not None:
                return self.decoder.generate(input_ids, attention_mask, 1, StageClock(self.device),
                                             keep_first_logits=True)[1]
            with torch.inference_mode():  # the engine's prefill call, so a compiled forward is reused
                out = self.model(input_ids=input_ids, position_ids=_positions(attention_mask),
                                 attention_mask=attention_mask, use_cache=True, logits_to_keep=1)
            return out.logits[:, -1, :].float().cpu()

    def describe(self) -> dict:
        return {"name": self.name, **asdict(self.spec), "build_s": self.build_s, "weight_bytes": self.weight_bytes}


class thread_count:
    """`with thread_count(n):` runs the block with n torch threads (0: leave as is), restoring them after."""

    def __init__(self, threads: int):
        self.threads = threads
        self.saved = torch.get_num_threads()

    def __enter__(self):
        self.saved = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        if self.threads:
            torch.set_num_threads(self.saved)


def load_variant_model(model_name: str, spec: Spec, device: str):
    """The model in the spec's dtype and attention implementation, on `device`, in eval mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_source(model_name), dtype=getattr(torch, spec.dtype),
                                                 attn_implementation=spec.attn)
    return model.to(device).eval()


def build(name: str, model_name: str, device: str) -> Built:
    """Load and transform the model for variant `name`; `build_s` covers loading, quantisation and wrapping
    (compilation happens at the first call and is timed by the caller's warm-up)."""
    spec = spec_of(name)
    sync(device)
    start = time.perf_counter()
    model = load_variant_model(model_name, spec, device)
    if spec.quant == "int8_weight_only" and spec.linears == "small_batch":
        use_small_batch_kernels(model, weights="int8")
    elif spec.quant in ("w8a8", "w4a8"):
        use_small_batch_kernels(model, weights=spec.quant)
    elif spec.quant == "int4_weight_only" and spec.linears == "small_batch":
        use_small_batch_kernels(model, weights="int4")  # q4_1's groups of 32 (group_size is the aten kernel's)
    elif spec.quant == "int8_weight_only":
        quantize_int8_weight_only(model, getattr(torch, spec.dtype))
    elif spec.quant == "int4_weight_only":
        quantize_int4_weight_only(model, getattr(torch, spec.dtype), spec.group_size)
    elif spec.quant == "int8_dynamic":
        model = quantize_int8_dynamic(model)
    if spec.linears in ("prepacked", "small_batch"):
        from ...prepack import apply_cpu_linears

        apply_cpu_linears(model, spec.linears)  # the float nn.Linear layers left (none after a weight-only one)
    decoder = None
    if spec.compile != "none":
        import torch._inductor.config as inductor_config

        # Inductor's generated kernels then appear in a trace as operators (a cheap check when not profiling)
        inductor_config.cpp.enable_kernel_profile = True
    if spec.decoder == "fused":  # the engine's cpu_decoder: fused (its generate runs the steps through it)
        model.fused_decoder = FusedDecoder(model)
    if spec.cache == "static":
        decoder = StaticDecoder(model, spec.compile, spec.freezing)
    elif spec.compile != "none":
        # dynamic=True: one graph for every sequence length, instead of a recompilation per decode step
        model.forward = compiled(model.forward, spec.compile, spec.freezing, dynamic=True)
    sync(device)
    return Built(name, spec, model, device, time.perf_counter() - start, step_weight_bytes(model), decoder)
