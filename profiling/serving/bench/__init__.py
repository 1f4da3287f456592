"""Driving servers: the load generator, vLLM as a reference server, vLLM's offline engine."""
