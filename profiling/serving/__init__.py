"""Serving kit: an OpenAI-compatible server, a load generator and the vLLM reference server."""
