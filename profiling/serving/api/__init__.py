"""The HTTP side: the OpenAI-compatible app, its request schema, detokenizer, metrics, settings and server."""
