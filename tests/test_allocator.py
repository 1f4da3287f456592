"""The allocator switch (profiling/allocator.py): `python -m profiling` keeps freed memory in this process and passes
the same thresholds to the processes it starts; LLM_INFER_ALLOCATOR=system leaves glibc's defaults; a bad value is
refused with the variable's name. Each case runs in a fresh interpreter (the setting is process-wide)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from profiling import allocator

CHILD = ("import os, subprocess, sys; from profiling import allocator; print(allocator.keep_freed_memory()); "
         "print(subprocess.run([sys.executable, '-c', 'from profiling import allocator; print(allocator.describe())'],"
         " capture_output=True, text=True, check=True).stdout.strip())")


def run(switch: str | None, code: str = CHILD) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (*allocator.THRESHOLDS, allocator.SWITCH)}
    if switch is not None:
        env[allocator.SWITCH] = switch
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


@pytest.mark.skipif(allocator._mallopt() is None, reason="glibc's mallopt is not this C library's")
def test_keep_applies_to_this_process_and_its_children():
    done = run(None)
    assert done.returncode == 0, done.stderr
    own, child = done.stdout.strip().splitlines()
    assert own == child == "keep (MALLOC_MMAP_THRESHOLD_=32 MiB, MALLOC_TRIM_THRESHOLD_=1024 MiB)"


@pytest.mark.skipif(allocator._mallopt() is None, reason="glibc's mallopt is not this C library's")
def test_system_leaves_glibc_defaults():
    done = run("system")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == ["system", "system"]


def test_a_bad_value_is_refused_with_the_variable_and_its_choices():
    done = run("tcmalloc", "import sys; from profiling.__main__ import main; sys.exit(main(['env', '--help']))")
    assert done.returncode == 2
    assert "LLM_INFER_ALLOCATOR='tcmalloc': use keep (the default) or system" in done.stderr
