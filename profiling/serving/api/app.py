"""The HTTP front end (FastAPI, asyncio): OpenAI-compatible routes over a Service.

    POST /v1/completions, POST /v1/chat/completions   streaming (SSE) or not
    GET  /v1/models, /health, /metrics (Prometheus text)

A request's path: parse and check the body -> tokenize -> Sequence onto the scheduler's queue (429 when full)
-> await its TokenEvents (the worker puts them on the sequence's asyncio.Queue) -> detokenize -> send.
Streaming sends one `data: {chunk}` per batch of tokens ready (normally one token), then `data: [DONE]`.
A client that goes away cancels its sequence, which frees its batch slot before the worker's next step.
Errors use OpenAI's shape {"error": {"message", "type", "param", "code"}}: 400 bad request, 422 malformed body,
429 queue full (with Retry-After), 503 shutting down.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from . import protocol
from .detokenize import IncrementalDetokenizer
from ..engine.scheduler import Stopping
from ..engine.sequence import Sequence
from .service import BadRequest, Service
from ..engine.waiting_queue import QueueFull

RETRY_AFTER_S = 1


def create_app(service: Service) -> FastAPI:
    """The FastAPI app serving `service`; the worker starts with the app and drains when the app stops.

    The routes find the service through `request.app.state.service`, never as a closure: FastAPI keeps its route
    functions in a process-wide cache, so a closure would keep a stopped server's model and KV pool alive (half a
    GiB per server started in one process)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start(asyncio.get_running_loop())
        yield
        await asyncio.to_thread(service.stop)

    app = FastAPI(title="llm-infer-baseline server", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, error: RequestValidationError):
        request.app.state.service.metrics.requests.labels(status="rejected_422").inc()
        details = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in error.errors())
        return JSONResponse(protocol.error_body(f"malformed request: {details}", code=422), status_code=422)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request):
        served = request.app.state.service
        return {"object": "list", "data": [{"id": served.settings.name, "object": "model",
                                            "created": served.started_unix, "owned_by": "llm-infer-baseline",
                                            "max_model_len": served.context_tokens}]}

    @app.get("/metrics")
    async def metrics(request: Request):
        return Response(request.app.state.service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/completions")
    async def completions(body: protocol.CompletionRequest, request: Request):
        return await _generate(request.app.state.service, request, body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: protocol.ChatCompletionRequest, request: Request):
        return await _generate(request.app.state.service, request, body, chat=True)

    return app


def _error(service: Service, request_id: str, status: int, message: str, param: str | None = None,
           headers: dict | None = None) -> JSONResponse:
    service.metrics.requests.labels(status=f"rejected_{status}").inc()
    service.spans.request(request_id, "rejected", status=status, message=message)
    kind = {429: "rate_limit_error", 503: "service_unavailable"}.get(status, "invalid_request_error")
    return JSONResponse(protocol.error_body(message, kind, param, status), status_code=status, headers=headers)


async def _generate(service: Service, request: Request, body, chat: bool):
    """Shared path of both routes: build the Sequence, queue it, answer streaming or not."""
    arrived = time.perf_counter()
    request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    tenant = request.headers.get("x-tenant") or body.user or "default"
    service.spans.request(request_id, "arrived", t=arrived, tenant=tenant, stream=body.stream,
                          endpoint="chat" if chat else "completions",
                          client_request_id=request.headers.get("x-request-id"))
    try:
        if body.n != 1:
            raise BadRequest("this server makes one choice per request (n = 1)", "n")
        if chat:
            prompt_ids = service.chat_prompt_ids(body.messages)
            asked = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
            max_tokens = service.check_lengths(len(prompt_ids), asked, None)
        else:
            prompt_ids = service.completion_prompt_ids(body.prompt)
            max_tokens = service.check_lengths(len(prompt_ids), body.max_tokens, 16)
        if body.min_tokens < 0 or body.min_tokens > max_tokens:
            raise BadRequest(f"min_tokens must be between 0 and max_tokens ({max_tokens})", "min_tokens")
        if body.temperature is not None and body.temperature < 0:
            raise BadRequest("temperature must be >= 0", "temperature")
    except BadRequest as error:
        return _error(service, request_id, 400, str(error), error.param)

    seq = Sequence(request_id=request_id, prompt_ids=prompt_ids, max_tokens=max_tokens, tenant=tenant,
                   min_tokens=body.min_tokens, ignore_eos=body.ignore_eos, temperature=body.temperature or 0.0,
                   top_p=body.top_p if body.top_p is not None else 1.0, arrival_s=arrived, events=asyncio.Queue())
    try:
        depth = service.submit(seq)
    except QueueFull as error:
        return _error(service, request_id, 429, f"server busy: {error}; retry later", None,
                      headers={"Retry-After": str(RETRY_AFTER_S)})
    except Stopping as error:
        return _error(service, request_id, 503, str(error))
    service.spans.request(request_id, "queued", t=seq.queued_s, prompt_tokens=seq.prompt_tokens,
                          max_tokens=max_tokens, queue_depth=depth)

    reply = _Reply(service, seq, body, chat)
    if body.stream:
        return StreamingResponse(reply.stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return await reply.whole(request)


class _Reply:
    """Turns one sequence's TokenEvents into the response: detokenizes, applies stop strings, records spans."""

    def __init__(self, service: Service, seq: Sequence, body, chat: bool):
        self.service, self.seq, self.body, self.chat = service, seq, body, chat
        self.model = body.model or service.settings.name
        self.created = int(time.time())
        self.detokenizer = IncrementalDetokenizer(service.tokenizer, seq.prompt_ids)
        self.stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        self.stops = [stop for stop in self.stops if stop]
        self.token_ids: list[int] = []
        self.text = ""          # the text generated so far (cut at a stop string)
        self.sent = 0           # how much of it was sent
        self.finish_reason: str | None = None
        self.error: str | None = None

    async def _next_events(self) -> list:
        """Every event ready now (at least one): under load, several tokens go out in one chunk."""
        events = [await self.seq.events.get()]
        while not self.seq.events.empty():
            events.append(self.seq.events.get_nowait())
        return events

    def _absorb(self, events) -> tuple[str, list[int], float]:
        """Apply events: (text to send now, new token ids, detokenize seconds). Sets finish_reason at the end.

        With stop strings, the last (longest stop - 1) characters are held back until the next token, so that a
        stop string split across tokens is never half sent."""
        started = time.perf_counter()
        ids = []
        for event in events:
            if event.token_id is not None and self.finish_reason is None:
                ids.append(event.token_id)
                self.text += self.detokenizer.add(event.token_id)
            if event.finish_reason and self.finish_reason is None:
                self.finish_reason, self.error = event.finish_reason, event.error
                self.text += self.detokenizer.flush()
        self.token_ids += ids
        if self.stops and self.finish_reason in (None, "length"):
            self._cut_at_stop()
        hold = 0 if self.finish_reason else max((len(stop) for stop in self.stops), default=1) - 1
        upto = max(self.sent, len(self.text) - hold)
        text, self.sent = self.text[self.sent:upto], upto
        return text, ids, time.perf_counter() - started

    def _cut_at_stop(self) -> None:
        """End the text before the first stop string; the sequence then ends ("stop") and leaves the batch."""
        cuts = [self.text.find(stop, self.sent) for stop in self.stops]
        cuts = [cut for cut in cuts if cut >= 0]
        if cuts:
            self.text = self.text[:min(cuts)]
            self.finish_reason = "stop"
            self.service.cancel(self.seq)

    def _done(self) -> None:
        self.service.spans.request(self.seq.request_id, "done", finish_reason=self.finish_reason,
                                   output_tokens=len(self.token_ids))

    def _chunk(self, text: str, ids: list[int], finish_reason: str | None, first: bool) -> dict:
        """One streamed chunk: a completion's or a chat's (the first chat chunk names the role)."""
        token_ids = ids if self.body.return_token_ids else None
        if self.chat:
            return protocol.chat_chunk(self.seq.request_id, self.model, self.created, text, finish_reason, token_ids,
                                       first)
        return protocol.completion_chunk(self.seq.request_id, self.model, self.created, text, finish_reason,
                                         token_ids)

    async def stream(self):
        """The SSE body."""
        finished, first = False, True
        try:
            while self.finish_reason is None:
                text, ids, detokenize_s = self._absorb(await self._next_events())
                if self.finish_reason == "error":  # the worker failed: send the tokens made before, say so, end
                    if ids:
                        yield _sse(self._chunk(text, ids, None, first))
                    yield _sse(protocol.error_body(self.error or "generation failed", "server_error", code=500))
                    break
                yield _sse(self._chunk(text, ids, self.finish_reason, first))
                first = False
                self.service.spans.request(self.seq.request_id, "chunk_sent", tokens=len(self.token_ids),
                                           detokenize_s=detokenize_s)
            options = self.body.stream_options
            if options is not None and options.include_usage and self.finish_reason != "error":
                yield _sse(protocol.usage_chunk(self.seq.request_id, self.model, self.created, self.chat,
                                                self.seq.prompt_tokens, len(self.token_ids)))
            yield "data: [DONE]\n\n"
            finished = True
            self._done()
        finally:
            if not finished:  # the client went away (or the stream failed): free the batch slot
                self.service.cancel(self.seq)
                self.service.spans.request(self.seq.request_id, "cancelled", tokens=len(self.token_ids))

    async def whole(self, request: Request):
        """The non-streaming response; cancels the sequence if the client disconnects while it waits."""
        collect = asyncio.ensure_future(self._collect())
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not collect.done():
            collect.cancel()
            self.service.cancel(self.seq)
            self.service.spans.request(self.seq.request_id, "cancelled", tokens=len(self.token_ids))
            return Response(status_code=499)
        gone.cancel()
        if self.finish_reason == "error":
            return JSONResponse(protocol.error_body(self.error or "generation failed", "server_error", code=500),
                                status_code=500)
        token_ids = self.token_ids if self.body.return_token_ids else None
        build = protocol.chat_response if self.chat else protocol.completion_response
        response = build(self.seq.request_id, self.model, self.text, self.finish_reason, self.seq.prompt_tokens,
                         len(self.token_ids), token_ids)
        self.service.spans.request(self.seq.request_id, "chunk_sent", tokens=len(self.token_ids), detokenize_s=0.0)
        self._done()
        return JSONResponse(response)

    async def _collect(self) -> None:
        while self.finish_reason is None:
            self._absorb(await self._next_events())


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
