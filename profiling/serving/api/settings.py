"""Every setting of the server in one dataclass, so the command line, an in-process server and a subprocess
started by an experiment all describe a server the same way.

Scheduling policies (what the worker runs next):
    static      fixed batches: a batch launches when `max_batch` requests wait, or when no new request has
                arrived for `wait_window_ms` (the queue has drained); it runs to completion before the next one
    dynamic     the D3 batcher: a batch launches when `max_batch` requests wait, or when the oldest waiting
                request has waited `wait_window_ms`; it runs to completion before the next one
    continuous  iteration-level: between two decode steps, waiting requests join the running batch (up to
                `max_batch` sequences) and finished ones leave at once
KV cache (where keys and values live):
    paged       a pool of blocks of `kv_block_size` tokens (`kv_blocks`, or as many as `kv_cache_mib` holds);
                admission asks for blocks, so memory may lower `max_batch`; with `max_step_tokens` > 0 prompts
                are cut into chunks that share a step with the running decodes; `prefix_cache` on shares the
                blocks of identical prompt prefixes; when blocks run out the newest sequence is preempted;
                `paged_attention` kernel reads the decode rows' keys and values in place (our C kernel);
                `decoder` fused runs a step of decodes alone as one C call per decoder layer (our kernels)
    slab        one left-padded tensor per layer for the whole running batch (prompts run as steps of their
                own; no chunking, prefix sharing or preemption)
Tenant policies (who is admitted first):
    fifo        one queue, oldest first
    fair        one queue per tenant, admitted round-robin, at most `tenant_cap` running sequences per tenant
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ...config import EMBEDDED_MODEL, ConfigError

POLICIES = ("static", "dynamic", "continuous")
KV_CACHES = ("paged", "slab")
PAGED_ATTENTION = ("kernel", "sdpa")  # engine/paged_runner.py
DECODERS = ("fused", "hf")  # engine/paged_runner.py: decode-only steps by our fused C layer or transformers' modules
QUANTIZE = ("none", "int8_dynamic", "int8_weight_only")  # profiling/quantize.py
LINEARS = ("prepacked", "aten", "small_batch")  # profiling/prepack.py
SWITCHES = ("on", "off")
TENANT_POLICIES = ("fifo", "fair")


@dataclass
class ServerSettings:
    """How to run the server. Times in milliseconds where the name says so; counts are requests or tokens."""

    model: str = EMBEDDED_MODEL       # a known name, a local model directory, or a cached Hugging Face id
    device: str = "auto"              # auto | cpu | cuda
    dtype: str = "auto"               # auto | float32 | bfloat16 | float16
    threads: str | int = "auto"       # torch threads: auto = one per physical core
    quantize: str = "none"            # none | int8_dynamic | int8_weight_only (linear layers; see quantize.py)
    linears: str = "small_batch"      # CPU: small_batch (float32: our C kernel at 1-32 rows, prepacked above;
                                      # prepacked without a C compiler) | prepacked (oneDNN, weights packed at
                                      # start) | aten (F.linear)
    host: str = "127.0.0.1"
    port: int = 8000                  # 0 = pick a free port (printed once ready)
    policy: str = "continuous"        # static | dynamic | continuous
    max_batch: int = 32               # most sequences in one batch (paged: KV blocks may admit fewer)
    kv_cache: str = "paged"           # paged | slab
    kv_block_size: int = 16           # paged: token positions per block
    kv_blocks: int = 0                # paged: blocks in the pool (0: as many as kv_cache_mib holds)
    kv_cache_mib: int = 512           # paged: memory for the pool when kv_blocks is 0 (MiB)
    paged_attention: str = "kernel"   # paged decode rows: kernel (our C kernel reads the blocks in place; CPU,
                                      # float32, else sdpa) | sdpa (blocks gathered, one SDPA)
    decoder: str = "fused"            # paged decode-only steps: fused (one C call per decoder layer; CPU, float32,
                                      # small_batch linears, the attention kernel; else hf) | hf (transformers)
    max_step_tokens: int = 256        # paged: token budget of a step, decodes first, then prompt chunks (0: off)
    prefix_cache: str = "on"          # paged: on | off, share the KV blocks of identical prompt prefixes
    wait_window_ms: float = 10.0      # static and dynamic launch rule (see the module docstring)
    queue_depth: int = 256            # most waiting requests; one more gets 429
    tenant_policy: str = "fifo"       # fifo | fair
    tenant_cap: int = 0               # fair: most running sequences per tenant (0 = no cap)
    max_tokens_limit: int = 4096      # largest max_tokens a request may ask for
    spans_out: str | None = None      # write the server-side span events here (JSONL)
    served_model_name: str | None = None  # the name /v1/models reports (default: `model`)

    def check(self) -> "ServerSettings":
        """Raise ConfigError naming the first bad setting; return self."""
        if self.policy not in POLICIES:
            raise ConfigError(f"policy: {self.policy!r} is not one of {', '.join(POLICIES)}")
        if self.quantize not in QUANTIZE:
            raise ConfigError(f"quantize: {self.quantize!r} is not one of {', '.join(QUANTIZE)}")
        if self.linears not in LINEARS:
            raise ConfigError(f"linears: {self.linears!r} is not one of {', '.join(LINEARS)}")
        if self.kv_cache not in KV_CACHES:
            raise ConfigError(f"kv_cache: {self.kv_cache!r} is not one of {', '.join(KV_CACHES)}")
        if self.paged_attention not in PAGED_ATTENTION:
            raise ConfigError(f"paged_attention: {self.paged_attention!r} is not one of {', '.join(PAGED_ATTENTION)}")
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder: {self.decoder!r} is not one of {', '.join(DECODERS)}")
        if self.prefix_cache not in SWITCHES:
            raise ConfigError(f"prefix_cache: {self.prefix_cache!r} is not one of on, off")
        if self.tenant_policy not in TENANT_POLICIES:
            raise ConfigError(f"tenant_policy: {self.tenant_policy!r} is not one of {', '.join(TENANT_POLICIES)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device: {self.device!r} is not one of auto, cpu, cuda")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype: {self.dtype!r} is not one of auto, float32, bfloat16, float16")
        if self.threads != "auto" and (not str(self.threads).isdigit() or int(self.threads) < 1):
            raise ConfigError(f"threads: {self.threads!r} must be auto or a positive integer")
        for name in ("max_batch", "queue_depth", "max_tokens_limit", "kv_block_size", "kv_cache_mib"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.wait_window_ms < 0:
            raise ConfigError(f"wait_window_ms: must be >= 0, got {self.wait_window_ms}")
        for name, zero in (("kv_blocks", "as many as kv_cache_mib holds"), ("max_step_tokens", "no chunking")):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0 (0 = {zero}), got {getattr(self, name)}")
        if self.tenant_cap < 0:
            raise ConfigError(f"tenant_cap: must be >= 0 (0 = no cap), got {self.tenant_cap}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: must be 0..65535, got {self.port}")
        return self

    @property
    def name(self) -> str:
        """The model name clients use in requests and see in /v1/models."""
        return self.served_model_name or self.model

    def as_dict(self) -> dict:
        return asdict(self)

    def cli_args(self) -> list[str]:
        """The arguments of `python -m profiling serve` that start a server with these settings."""
        args = []
        for key, value in asdict(self).items():
            if value is None:
                continue
            args += [f"--{key.replace('_', '-')}", str(value)]
        return args
