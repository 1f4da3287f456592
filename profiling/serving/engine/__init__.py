"""The engine: sequences, scheduler, block manager, model runners, the worker that runs them, its spans."""
