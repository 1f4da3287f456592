"""The OpenAI wire format: request bodies (pydantic) and the response and stream-chunk dicts.

Only what this server does is modelled; other OpenAI fields are accepted and ignored (extra="allow"), so real
clients work unchanged. vLLM's extensions that load generators use are accepted too: `ignore_eos`, `min_tokens`,
and `return_token_ids` (the response carries the generated token ids; tests compare them).
Defaults: temperature 0 (greedy: the server is a measuring instrument, so the same prompt gives the same tokens),
max_tokens 16 for completions (OpenAI's default) and "up to the context or the server's limit" for chat.
"""
from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    return_token_ids: bool = False


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict] | None = None

    def text(self) -> str:
        """The message's text (content parts of type "text" joined)."""
        if isinstance(self.content, list):
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None


# ---- responses ------------------------------------------------------------------------------------------------
def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_response(request_id: str, model: str, text: str, finish_reason: str | None, prompt_tokens: int,
                        completion_tokens: int, token_ids: list[int] | None) -> dict:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    if token_ids is not None:
        choice["token_ids"] = token_ids
    return {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage(prompt_tokens, completion_tokens)}


def chat_response(request_id: str, model: str, text: str, finish_reason: str | None, prompt_tokens: int,
                  completion_tokens: int, token_ids: list[int] | None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
              "finish_reason": finish_reason}
    if token_ids is not None:
        choice["token_ids"] = token_ids
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage(prompt_tokens, completion_tokens)}


def completion_chunk(request_id: str, model: str, created: int, text: str, finish_reason: str | None,
                     token_ids: list[int] | None) -> dict:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    if token_ids is not None:
        choice["token_ids"] = token_ids
    return {"id": request_id, "object": "text_completion", "created": created, "model": model, "choices": [choice]}


def chat_chunk(request_id: str, model: str, created: int, text: str, finish_reason: str | None,
               token_ids: list[int] | None, first: bool) -> dict:
    delta = {"role": "assistant", "content": text} if first else {"content": text}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    if token_ids is not None:
        choice["token_ids"] = token_ids
    return {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [choice]}


def usage_chunk(request_id: str, model: str, created: int, chat: bool, prompt_tokens: int,
                completion_tokens: int) -> dict:
    """The last chunk when stream_options.include_usage is set: no choices, only the usage."""
    return {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": model, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: int | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
