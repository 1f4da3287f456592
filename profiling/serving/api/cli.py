"""Command line: `python -m profiling serve [--port N] [--policy P] …` starts the OpenAI-compatible server.

Every flag is a field of ServerSettings (settings.py), with the same name and default. Once ready it prints
"serving <model> on http://HOST:PORT" (with --port 0, the port the OS picked). SIGTERM or Ctrl-C drains the
requests in flight, then exits.
"""
from __future__ import annotations

from dataclasses import fields

from .settings import (DECODERS, KV_CACHES, LINEARS, PAGED_ATTENTION, POLICIES, QUANTIZE, SWITCHES, TENANT_POLICIES,
                       ServerSettings)

HELP = {
    "model": "model name, local directory or cached Hugging Face id",
    "device": "auto | cpu | cuda",
    "dtype": "auto | float32 | bfloat16 | float16",
    "threads": "torch threads: auto (one per physical core) or N",
    "quantize": "linear layers: " + " | ".join(QUANTIZE) + " (int8_dynamic: CPU only, approximate; "
                "int8_weight_only: fast with --dtype bfloat16, slow with float32 activations on a CPU)",
    "linears": "CPU linear layers: small_batch (float32: our C kernel at 1-32 rows, prepacked above; prepacked "
               "without a C compiler) | prepacked (oneDNN, weights packed once at start: fast at any batch) | aten "
               "(torch's F.linear)",
    "host": "address to listen on",
    "port": "port (0 = pick a free one and print it)",
    "policy": "scheduling policy: " + " | ".join(POLICIES),
    "max_batch": "most sequences in one batch (paged: KV blocks may admit fewer)",
    "kv_cache": "where keys and values live: " + " | ".join(KV_CACHES),
    "kv_block_size": "paged: token positions per KV block",
    "kv_blocks": "paged: blocks in the pool (0: as many as --kv-cache-mib holds)",
    "kv_cache_mib": "paged: memory for the pool when --kv-blocks is 0 (MiB)",
    "paged_attention": "paged: decode attention by our C kernel reading the blocks in place (CPU, float32; sdpa "
                       "elsewhere) | sdpa (blocks gathered, one SDPA)",
    "decoder": "paged: steps of decodes alone by our fused C decoder layer, one call per layer (CPU, float32, "
               "small_batch linears; hf elsewhere) | hf (transformers' modules)",
    "max_step_tokens": "paged: token budget of a step, decodes first, then prompt chunks (0: no chunking)",
    "prefix_cache": "paged: share the KV blocks of identical prompt prefixes (on | off)",
    "wait_window_ms": "static: launch after this long without a new request; "
                      "dynamic: once the oldest request waited this long",
    "queue_depth": "most waiting requests; one more gets 429 with Retry-After",
    "tenant_policy": "admission across tenants: " + " | ".join(TENANT_POLICIES),
    "tenant_cap": "fair: most running sequences per tenant (0 = no cap)",
    "max_tokens_limit": "largest max_tokens a request may ask for",
    "spans_out": "write the server-side span events to this JSONL file",
    "served_model_name": "model name to report in /v1/models (default: --model)",
}
CHOICES = {"quantize": QUANTIZE, "linears": LINEARS, "policy": POLICIES, "tenant_policy": TENANT_POLICIES,
           "kv_cache": KV_CACHES, "paged_attention": PAGED_ATTENTION, "decoder": DECODERS, "prefix_cache": SWITCHES,
           "device": ("auto", "cpu", "cuda"), "dtype": ("auto", "float32", "bfloat16", "float16")}
TYPES = {"port": int, "max_batch": int, "kv_block_size": int, "kv_blocks": int, "kv_cache_mib": int,
         "max_step_tokens": int, "queue_depth": int, "tenant_cap": int, "max_tokens_limit": int,
         "wait_window_ms": float}


def add_arguments(parser) -> None:
    defaults = ServerSettings()
    for field in fields(ServerSettings):
        default = getattr(defaults, field.name)
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, default=default,
                            type=TYPES.get(field.name, str), choices=CHOICES.get(field.name),
                            help=f"{HELP[field.name]} (default: {default})")


def settings_from_args(args) -> ServerSettings:
    return ServerSettings(**{field.name: getattr(args, field.name) for field in fields(ServerSettings)}).check()


def cli(args) -> None:
    from .server import serve

    serve(settings_from_args(args))


if __name__ == "__main__":  # python -m profiling.serving.api.cli (the same as python -m profiling serve)
    import argparse
    import sys

    from ...config import ConfigError

    parser = argparse.ArgumentParser(prog="python -m profiling serve", description=__doc__)
    add_arguments(parser)
    try:
        cli(parser.parse_args())
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        sys.exit(2)
