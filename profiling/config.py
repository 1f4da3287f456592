"""Typed views of the workflow config, and the hardware/precision assumptions.

The config is one nested dict (config/config.yaml, validated by config/schema.yaml). This module is the one
place that checks it, applies a named profile (e.g. `profile: quick`) on top of it, and turns `device: auto`
and `dtype: auto` into what the run really uses. Everything else reads the checked dict.
"""
from __future__ import annotations

import copy
import os
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
    check_model_name(effective["model"])
    return effective


def check_model_name(model: str) -> None:
    """Reject a model that is neither a known name, a local directory, nor a Hugging Face id."""
    if model in KNOWN_MODELS or Path(model).is_dir() or ("/" in model and not model.startswith((".", "/"))):
        return
    raise ConfigError(
        f"model: {model!r} is not a known model, an existing local directory, or a Hugging Face id (org/name). "
        f"Choices: {', '.join(KNOWN_MODELS)}, a path to a directory with config.json, or an id such as "
        f"HuggingFaceTB/SmolLM2-135M-Instruct that is in your Hugging Face cache."
    )


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

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


def resolve_precision(config: dict) -> Precision:
    """Turn `device: auto|cpu|cuda` and `dtype: auto|…` into a Precision, or raise ConfigError.

    auto device: cuda when torch sees a GPU, else cpu. auto dtype: float16 on cuda, float32 on cpu.
    """
    import torch

    device = config.get("device", "auto")
    has_cuda = torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    elif device == "cuda" and not has_cuda:
        raise ConfigError(
            "device: 'cuda' was asked for, but torch sees no CUDA GPU here "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False). "
            "Set device: cpu (or auto), or install a CUDA build of torch on a machine with a GPU."
        )
    dtype = config.get("dtype", "auto")
    if dtype == "auto":
        dtype = "float16" if device == "cuda" else "float32"
    return Precision(device=device, dtype=dtype)


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
    """The run-wide keys every step depends on: model, device, dtype, threads, seed, cv_warn."""
    return {key: config[key] for key in ("model", "device", "dtype", "threads", "seed", "cv_warn")}


def experiment_config(config: dict, experiment: str) -> dict:
    """The slice of the config one experiment depends on: its own section plus the run-wide keys."""
    return {**run_config(config), experiment: config[experiment]}
