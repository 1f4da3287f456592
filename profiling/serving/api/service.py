"""The service behind the HTTP routes: the model, tokenizer, scheduler, worker, metrics and spans of one server,
wired together, plus turning a request body into a Sequence (chat template, tokenization, limits).

    service = Service(settings)            loads the model (or takes one already loaded)
    service.start(loop)                    starts the worker thread, handing tokens to `loop`
    service.submit(seq) / cancel(seq)      from the front end
    service.stop()                         no new requests; waits until the worker has drained, closes the spans
"""
from __future__ import annotations

import copy
import sys
import time

from ...config import apply_threads, resolve_precision
from ..engine.block_manager import BlockManager
from ..engine.paged_runner import PagedKVPool, PagedRunner
from ..engine.scheduler import Scheduler
from .server_metrics import ServerMetrics
from .settings import ServerSettings
from ..engine.spans import SpanLog
from ..engine.step_engine import StepEngine
from ..engine.waiting_queue import WaitingQueue
from ..engine.worker import Worker

# Used when a tokenizer has no chat template (e.g. the tiny test model): ChatML, as SmolLM2 uses.
FALLBACK_CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class BadRequest(ValueError):
    """The request cannot be served as asked (the front end answers 400 with this message)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def _eos_token_ids(model, tokenizer) -> list[int]:
    """End-of-sequence ids: the tokenizer's and the model's generation config's (an int or a list)."""
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return sorted(ids)


def _cpu_linears(model, linears: str, owned: bool):
    """The model with its CPU linear layers run as `linears` says (prepack.apply_cpu_linears: prepacked for
    oneDNN, or our small-batch kernel) when it runs on a CPU and has plain nn.Linear layers left (a copy unless
    `owned`: a model handed in, as the tests do, stays as it was)."""
    from torch import nn

    from ...prepack import apply_cpu_linears_or_prepacked

    plain = any(type(module) is nn.Linear for module in model.modules())
    if linears == "aten" or next(model.parameters()).device.type != "cpu" or not plain:
        return model
    model = model if owned else copy.deepcopy(model)
    apply_cpu_linears_or_prepacked(model, linears, "linears")
    return model


def _quantized(model, quantize: str):
    """The model with its linear layers quantised as `quantize` asks (none: unchanged)."""
    from ... import quantize as quantizers

    if quantize == "int8_dynamic":
        return quantizers.quantize_int8_dynamic(model)
    if quantize == "int8_weight_only":
        model = copy.deepcopy(model)  # in place otherwise: a model handed in (tests) stays as it was
        quantizers.quantize_int8_weight_only(model, next(model.parameters()).dtype)
    return model


class Service:
    def __init__(self, settings: ServerSettings, model=None, tokenizer=None):
        self.settings = settings.check()
        self.threads = apply_threads({"threads": settings.threads})
        owned = model is None or tokenizer is None
        if owned:
            from ...model import load_model, load_tokenizer

            # quantisation replaces the linear layers first; the CPU linears setting then takes the float ones left
            precision = resolve_precision({"device": settings.device, "dtype": settings.dtype, "cpu_linears": "aten"})
            model = load_model(settings.model, precision)
            tokenizer = load_tokenizer(settings.model)
        model = _quantized(model.eval(), settings.quantize)
        model = _cpu_linears(model, settings.linears, owned=owned or settings.quantize != "none")
        self.model, self.tokenizer = model, tokenizer
        self.context_tokens = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.engine = StepEngine(model, pad_token_id=pad or 0, eos_token_ids=_eos_token_ids(model, tokenizer))
        self.metrics = ServerMetrics()
        self.spans = SpanLog(settings.spans_out, settings.as_dict())
        queue = WaitingQueue(settings.tenant_policy, settings.queue_depth, settings.tenant_cap)
        blocks, runner = None, None
        if settings.kv_cache == "paged":
            blocks, runner = self._paged_kv(settings)
        self.blocks = blocks
        self.scheduler = Scheduler(settings.policy, settings.max_batch, settings.wait_window_ms / 1000, queue,
                                   blocks=blocks, max_step_tokens=settings.max_step_tokens)
        self.worker = Worker(self.engine, self.scheduler, self.metrics, self.spans, threads=self.threads,
                             runner=runner)
        self.started_unix = int(time.time())

    def _paged_kv(self, settings: ServerSettings) -> tuple[BlockManager, PagedRunner]:
        """The block pool (kv_blocks, or as many blocks as kv_cache_mib holds), its manager and the runner."""
        dtype, config = next(self.model.parameters()).dtype, self.model.config
        block_bytes = PagedKVPool.bytes_per_token(config, dtype) * settings.kv_block_size
        num_blocks = settings.kv_blocks or max(1, settings.kv_cache_mib * 2**20 // block_bytes)
        pool = PagedKVPool(config, num_blocks, settings.kv_block_size, dtype, self.engine.device)
        blocks = BlockManager(num_blocks, settings.kv_block_size, prefix_caching=settings.prefix_cache == "on")
        self.metrics.observe_blocks(blocks)
        runner = PagedRunner(self.model, pool, settings.paged_attention, settings.decoder)
        if runner.kernel_note:
            print(f"paged_attention: kernel: {runner.kernel_note}; decode attention runs as sdpa", file=sys.stderr)
        if runner.decoder_note:
            print(f"decoder: fused: {runner.decoder_note}; decode steps run transformers' modules", file=sys.stderr)
        return blocks, runner

    # ---- life cycle -----------------------------------------------------------------------------------------
    def start(self, loop) -> None:
        self.worker.start(loop)

    def stop(self, timeout_s: float | None = None) -> None:
        """Refuse new requests, let the worker finish every queued and running one, then close the spans."""
        self.scheduler.stop()
        self.worker.join(timeout_s)
        self.spans.close()

    def submit(self, seq) -> int:
        """Queue a sequence (QueueFull, Stopping pass through); returns the queue depth after it."""
        depth = self.scheduler.add(seq)
        self.metrics.queue_depth.set(depth)
        return depth

    def cancel(self, seq) -> None:
        if self.scheduler.cancel(seq):  # it never ran: it ends here, counted like any other outcome
            self.metrics.observe_finished(seq)

    # ---- requests -> token ids ------------------------------------------------------------------------------
    def completion_prompt_ids(self, prompt) -> list[int]:
        """Token ids of a completions `prompt`: a string, one token-id list, or a list holding one of these."""
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, str):
            return self.tokenizer(prompt).input_ids
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            vocab = len(self.tokenizer)
            if any(not 0 <= t < vocab for t in prompt):
                raise BadRequest(f"prompt token ids must be in 0..{vocab - 1}", "prompt")
            return list(prompt)
        raise BadRequest("this server takes one prompt per request (a string or a list of token ids)", "prompt")

    def chat_prompt_ids(self, messages) -> list[int]:
        """Token ids of a chat: the messages in the model's chat template, ready for the assistant's turn."""
        template = None if getattr(self.tokenizer, "chat_template", None) else FALLBACK_CHAT_TEMPLATE
        text = self.tokenizer.apply_chat_template([{"role": m.role, "content": m.text()} for m in messages],
                                                  chat_template=template, tokenize=False,
                                                  add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def check_lengths(self, prompt_tokens: int, max_tokens: int | None, default_max_tokens: int | None) -> int:
        """The max_tokens to use; BadRequest when the prompt or max_tokens break the model's context or the
        server's limit."""
        limit, context = self.settings.max_tokens_limit, self.context_tokens
        if prompt_tokens == 0:
            raise BadRequest("the prompt is empty", "prompt")
        if prompt_tokens >= context:
            raise BadRequest(f"This model's maximum context length is {context} tokens; the prompt has "
                             f"{prompt_tokens} tokens, which leaves no room to generate.", "prompt")
        if max_tokens is None:
            max_tokens = default_max_tokens or min(limit, context - prompt_tokens)
        if max_tokens < 1:
            raise BadRequest(f"max_tokens must be at least 1, got {max_tokens}", "max_tokens")
        if max_tokens > limit:
            raise BadRequest(f"max_tokens must be at most {limit} (this server's limit), got {max_tokens}",
                             "max_tokens")
        if self.blocks is not None and self.blocks.blocks_for(prompt_tokens + max_tokens) > self.blocks.num_blocks:
            raise BadRequest(f"{prompt_tokens} prompt + {max_tokens} new tokens need "
                             f"{self.blocks.blocks_for(prompt_tokens + max_tokens)} KV blocks; this server's pool "
                             f"has {self.blocks.num_blocks} (raise --kv-blocks or --kv-cache-mib, or lower "
                             "max_tokens)", "max_tokens")
        if prompt_tokens + max_tokens > context:
            raise BadRequest(f"This model's maximum context length is {context} tokens; you asked for "
                             f"{prompt_tokens + max_tokens} ({prompt_tokens} in the prompt, {max_tokens} to "
                             "generate). Shorten the prompt or lower max_tokens.", "max_tokens")
        return max_tokens
