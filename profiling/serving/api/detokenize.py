"""Incremental detokenization: the text each new token adds, for streaming.

Decoding one token at a time is wrong for byte-level tokenizers (a character can span several tokens, and some
tokenizers change a word's spacing by context). So, as vLLM does, we decode a short window of recent tokens twice
— without and with the new tokens — and emit the difference; while the tail is an incomplete character
(U+FFFD), nothing is emitted until the next token completes it. Cost: two short decodes per token.
"""
from __future__ import annotations

# How many tokens before the unread ones are decoded with them, for context (vLLM uses 5).
CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(self, tokenizer, prompt_ids: list[int] | None = None):
        self.tokenizer = tokenizer
        self.ids: list[int] = list((prompt_ids or [])[-CONTEXT_TOKENS:])
        self.prefix_offset = 0            # start of the context window
        self.read_offset = len(self.ids)  # first token whose text was not emitted yet
        self.text = ""                    # all text emitted so far

    def add(self, token_id: int) -> str:
        """Append one token; return the text it completes (may be empty)."""
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix_offset:self.read_offset], skip_special_tokens=True)
        after = decode(self.ids[self.prefix_offset:], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        delta = after[len(before):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        self.text += delta
        return delta

    def flush(self) -> str:
        """At the end of the sequence: whatever text is still held back (an incomplete character included)."""
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix_offset:self.read_offset], skip_special_tokens=True)
        after = decode(self.ids[self.prefix_offset:], skip_special_tokens=True)
        delta = after[len(before):] if len(after) > len(before) else ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        self.text += delta
        return delta
