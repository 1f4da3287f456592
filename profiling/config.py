"""Typed views of the workflow config, and the hardware/precision assumptions.

The config is one nested dict (config/config.yaml, validated by config/schema.yaml). This module is the one
place that checks it, applies a named profile (e.g. `profile: quick`) on top of it, and turns `device: auto`
and `dtype: auto` into what the run really uses. Everything else reads the checked dict.
"""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"

# Models the project knows by name. Anything else must be a local directory or a Hugging Face id ("org/name").
EMBEDDED_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny-random"
KNOWN_MODELS = (EMBEDDED_MODEL, TINY_MODEL)

DTYPE_NAMES = ("float32", "float16", "bfloat16")


class ConfigError(ValueError):
    """A config value is wrong; the message names the field and how to fix it."""


def _deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _field_name(error) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top level)"


def _schema_errors(config: dict, schema: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    messages = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        field = _field_name(error)
        hint = error.schema.get("description", "") if isinstance(error.schema, dict) else ""
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            messages.append(f"{field}: {error.message}. Known keys here: {', '.join(allowed)}")
        else:
            fix = f" Expected: {hint}" if hint else ""
            messages.append(f"{field}: {error.message}.{fix}")
    return messages


def _fill_defaults(config: dict, schema: dict) -> dict:
    """Return a copy of `config` with every missing key that has a schema `default` filled in (recursively)."""
    filled = copy.deepcopy(config)
    for key, sub in schema.get("properties", {}).items():
        if key not in filled and "default" in sub:
            filled[key] = copy.deepcopy(sub["default"])
        if isinstance(filled.get(key), dict) and sub.get("type") == "object":
            filled[key] = _fill_defaults(filled[key], sub)
    return filled


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def check_config(raw: dict, schema: dict | None = None) -> dict:
    """Validate `raw`, apply its profile, fill defaults; return the effective config or raise ConfigError.

    The profile named by `profile:` (a key of `profiles:`) is merged over the base values before checking,
    so an override is checked exactly like a value written by hand.
    """
    schema = schema or load_schema()
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping of keys to values (see config/config.yaml)")
    profile = raw.get("profile", "default")
    profiles = raw.get("profiles") or {}
    if profile != "default" and profile not in profiles:
        choices = ", ".join(["default", *sorted(profiles)])
        raise ConfigError(f"profile: unknown profile {profile!r}. Choices: {choices} (defined under profiles: in the config)")
    effective = _deep_merge(raw, profiles.get(profile, {}))
    errors = _schema_errors(effective, schema)
    if errors:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors)
                          + "\nFix the field in config/config.yaml or pass --config KEY=VALUE.")
    effective = _fill_defaults(effective, schema)
    check_model(effective["model"])
    for index, model in enumerate(effective.get("matrix", {}).get("models", [])):
        check_model(model, f"matrix.models[{index}]")
    return effective


def hub_cache_dirs() -> list[Path]:
    """Where a Hugging Face model may already be cached on this machine (HF_HUB_CACHE, HF_HOME/hub, the default)."""
    dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    if os.environ.get("TRANSFORMERS_CACHE"):
        dirs.append(Path(os.environ["TRANSFORMERS_CACHE"]))
    dirs.append(Path.home() / ".cache" / "huggingface" / "hub")
    return list(dict.fromkeys(dirs))


def cached_hub_model(model_id: str) -> Path | None:
    """The snapshot directory of `model_id` ("org/name") in a local Hugging Face cache that holds a config.json,
    or None. Reads the cache's folders only (no network, no transformers import)."""
    folder = "models--" + model_id.replace("/", "--")
    for cache in hub_cache_dirs():
        for config_file in sorted((cache / folder / "snapshots").glob("*/config.json")):
            return config_file.parent
    return None


def check_model(model: str, field: str = "model") -> None:
    """Reject a model that is neither a known name, a local directory with config.json, nor a Hugging Face id in
    the local cache: nothing here reaches a model hub, so such a model would fail only after jobs have started."""
    if model in KNOWN_MODELS:
        return
    local = Path(model)
    if local.is_dir():
        if (local / "config.json").exists():
            return
        raise ConfigError(f"{field}: the directory {model!r} has no config.json. Point it at a directory that "
                          "transformers' from_pretrained can load (config.json, weights, tokenizer files).")
    looks_like_id = "/" in model and not model.startswith((".", "/")) and model.count("/") == 1
    if looks_like_id and cached_hub_model(model) is not None:
        return
    looked = ", ".join(str(d) for d in hub_cache_dirs())
    what = (f"{model!r} is not in the local Hugging Face cache (looked for models--{model.replace('/', '--')} "
            f"under {looked})" if looks_like_id else f"{model!r} is neither a known model nor an existing directory")
    raise ConfigError(
        f"{field}: {what}, and this machine cannot download models. Fix: use {EMBEDDED_MODEL} (the embedded "
        f"default) or {TINY_MODEL}; or a local directory with config.json and weights; or first put the model in "
        "the Hugging Face cache on a machine with hub access (huggingface-cli download ORG/NAME) and copy the cache "
        "here.")


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> dict:
    """Read a YAML config file, merge `overrides` over it, and check it (see check_config)."""
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    return check_config(_deep_merge(raw, overrides or {}))


@dataclass(frozen=True)
class Precision:
    """What the run really uses: the torch device and dtype, resolved from `device:` and `dtype:`."""

    device: str  # "cpu" or "cuda"
    dtype: str  # one of DTYPE_NAMES
    decoder: str = "hf"  # on a CPU: hf (transformers' modules) or fused (kernels/fused_decoder.py); config: cpu_decoder
    linears: str = "prepacked"  # on a CPU: prepacked (oneDNN, packed at load), aten (F.linear) or small_batch (our
                                # C kernel at 1-32 rows, prepacked above); see prepack.py. The config's default:
                                # small_batch

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


def cuda_present() -> bool:
    """Whether this machine can run on CUDA, decided without importing torch (so reading the workflow stays fast):
    the installed torch was built with CUDA (torch/version.py) and the NVIDIA driver lists a GPU."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        built_with_cuda = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]", version_file.read_text(), re.M) is not None
    except OSError:
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return built_with_cuda and gpus.is_dir() and any(gpus.iterdir())


def resolve_precision(config: dict) -> Precision:
    """Turn `device: auto|cpu|cuda` and `dtype: auto|…` into a Precision, or raise ConfigError.

    auto device: cuda when this machine has a GPU and a CUDA build of torch, else cpu. auto dtype: float16 on
    cuda, float32 on cpu. Cheap (no torch import): the workflow calls it before any job starts; each experiment
    confirms a cuda choice with torch itself (`confirm_device`).
    """
    device = config.get("device", "auto")
    has_cuda = cuda_present()
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    elif device == "cuda" and not has_cuda:
        raise ConfigError(
            "device: 'cuda' was asked for, but this machine has no NVIDIA GPU with a CUDA build of torch "
            "(no GPU under /proc/driver/nvidia/gpus, or torch/version.py says cuda = None). "
            "Set device: cpu (or auto), or install a CUDA build of torch on a machine with a GPU."
        )
    dtype = config.get("dtype", "auto")
    if dtype == "auto":
        dtype = "float16" if device == "cuda" else "float32"
    linears = config.get("cpu_linears", "small_batch")
    if device == "cpu" and linears == "small_batch":
        from .kernels import missing_compilers

        missing = missing_compilers()
        if missing:  # the run goes on with oneDNN; env.json and the report then say prepacked
            print(f"cpu_linears: small_batch builds our C kernel once on this machine, but "
                  f"{', '.join(missing)} is not on PATH: running with cpu_linears: prepacked (oneDNN) "
                  "instead. Install gcc and g++ (or set CC / CXX) to use it.", file=sys.stderr)
            linears = "prepacked"
    return Precision(device=device, dtype=dtype, linears=linears, decoder=config.get("cpu_decoder", "hf"))


def confirm_device(precision: Precision) -> None:
    """Raise ConfigError when torch itself cannot use the chosen device (checked once an experiment imports torch)."""
    import torch

    if precision.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: cuda was chosen, but torch {torch.__version__} reports "
                          "torch.cuda.is_available() == False. Set device: cpu.")


def apply_threads(config: dict) -> int:
    """Apply `threads:` to torch's intra-op pool; return the thread count in use.

    auto means one thread per physical core, set explicitly: Snakemake exports OMP_NUM_THREADS = the rule's
    `threads` (1 under `--cores 1`), which would otherwise silently make torch single-threaded.
    """
    import psutil
    import torch

    threads = config.get("threads", "auto")
    if threads == "auto":
        threads = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def settings_arg(text: str) -> dict:
    """Parse a command line's --settings: the JSON config slice the Snakefile passes to a step."""
    import json

    return json.loads(text)


def run_config(config: dict) -> dict:
    """The run-wide keys every step depends on: model, device, dtype, threads, seed, cv_warn, adaptive (repeats and
    warm-ups), profile."""
    return {key: config[key] for key in ("model", "device", "dtype", "threads", "seed", "cv_warn", "adaptive",
                                         "profile")}


def phase_config(config: dict, phase: str) -> dict:
    """The slice of the config one phase's steps depend on: its own section plus the run-wide keys."""
    return {**run_config(config), phase: config[phase]}
