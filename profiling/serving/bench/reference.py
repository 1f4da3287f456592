"""vLLM's OpenAI server as a reference, started from its own environment (.venv-reference, made by
`make reference`: vLLM pins its own transformers, so it cannot share the project's venv).

    ok, reason = reference_available()
    if ok:
        with reference_server("resources/models/smollm2-135m-instruct", ReferenceSettings()) as base_url:
            ...  # drive base_url with profiling.serving.bench.loadgen

On CPU, vLLM reserves `gpu_memory_utilization` x RAM at start (0.9 fails on a 24 GiB machine; 0.3 works) and a KV
cache of VLLM_CPU_KVCACHE_SPACE GiB.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

REFERENCE_VENV = Path(".venv-reference")
ENABLE_HINT = "run `make reference` to enable it"
OFFLINE_SCRIPT = Path(__file__).with_name("vllm_offline.py")
LLAMA_CPP_SCRIPT = Path(__file__).with_name("llama_cpp_bench.py")


class ReferenceServerError(RuntimeError):
    """vLLM's server could not be started or did not answer; the message ends with its log tail."""


@dataclass
class ReferenceSettings:
    """How to start the reference server. Memory in GiB, times in seconds."""

    venv: Path = REFERENCE_VENV
    host: str = "127.0.0.1"
    port: int | None = None                 # None: a free port
    served_model_name: str | None = None    # None: the model directory's name
    dtype: str = "float32"
    max_model_len: int = 2048               # tokens
    gpu_memory_utilization: float = 0.3     # on CPU: share of RAM reserved at start
    kv_cache_space_gib: float = 1.0         # VLLM_CPU_KVCACHE_SPACE (CPU backend)
    omp_threads_bind: str | None = None     # VLLM_CPU_OMP_THREADS_BIND, e.g. "0-1"; None: vLLM's auto (on 2 cores:
                                            # the model on core 0, core 1 left to the HTTP front end)
    seed: int = 0
    enforce_eager: bool = False             # skip torch.compile: start-up ~30 s instead of ~2 min on 2 CPU cores
    startup_timeout_s: float = 300.0
    stop_timeout_s: float = 30.0            # SIGTERM, then SIGKILL after this long
    log_path: Path | None = None            # None: a temporary file
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)


def reference_python(settings: ReferenceSettings | None = None) -> Path:
    """The interpreter of the reference environment."""
    return Path((settings or ReferenceSettings()).venv) / "bin" / "python"


def reference_version(settings: ReferenceSettings | None = None, timeout_s: float = 120.0) -> str:
    """vLLM's version in the reference environment; raises ReferenceServerError when it cannot be imported."""
    python = reference_python(settings)
    if not python.exists():
        raise ReferenceServerError(f"no {python}: {ENABLE_HINT}")
    return module_version(str(python), "vllm", timeout_s)


@lru_cache(maxsize=8)
def module_version(python: str, module: str, timeout_s: float) -> str:
    """`module.__version__` as the interpreter `python` imports it; raises ReferenceServerError when the import
    fails. An import of vLLM takes seconds: each is asked once per process (an error is not kept)."""
    done = subprocess.run([python, "-c", f"import {module}; print({module}.__version__)"], capture_output=True,
                          text=True, timeout=timeout_s, env=_clean_env({}))
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ReferenceServerError(f"`import {module}` failed in {Path(python).parent.parent}: {tail}")
    return done.stdout.strip().splitlines()[-1]


def reference_available(settings: ReferenceSettings | None = None) -> tuple[bool, str]:
    """(True, "vLLM <version>") when the reference environment imports vLLM, else (False, a one-line reason)."""
    python = reference_python(settings)
    if not python.exists():
        return False, f"vLLM reference server not installed ({python.parent.parent} is missing): {ENABLE_HINT}"
    try:
        return True, f"vLLM {reference_version(settings)}"
    except (ReferenceServerError, subprocess.TimeoutExpired, OSError) as error:
        return False, f"vLLM reference server unusable ({error}); {ENABLE_HINT}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _server_env(settings: ReferenceSettings) -> dict[str, str]:
    """The reference server's own environment variables (CPU backend knobs) on top of _clean_env."""
    extra = {"VLLM_CPU_KVCACHE_SPACE": f"{settings.kv_cache_space_gib:g}"}
    if settings.omp_threads_bind:
        extra["VLLM_CPU_OMP_THREADS_BIND"] = settings.omp_threads_bind
    return _clean_env({**extra, **settings.extra_env})


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for the reference interpreter: none of the project venv's Python paths, offline."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
    env.update(extra)
    return env


def server_command(model_dir, settings: ReferenceSettings, port: int) -> list[str]:
    """The command line that starts vLLM's OpenAI server on `port`."""
    name = settings.served_model_name or Path(model_dir).name
    # Not `vllm serve`: that CLI looks up the distribution "vllm" and dies under vllm-cpu (PackageNotFoundError).
    return [str(reference_python(settings)), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir), "--served-model-name", name, "--host", settings.host, "--port", str(port),
            "--dtype", settings.dtype, "--max-model-len", str(settings.max_model_len),
            "--gpu-memory-utilization", str(settings.gpu_memory_utilization), "--seed", str(settings.seed),
            *(["--enforce-eager"] if settings.enforce_eager else []), *settings.extra_args]


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file ("" when there is none)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM to the server's process group (it forks engine workers), SIGKILL if it is still there."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _wait_ready(base_url: str, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    """Poll GET /v1/models until it answers 200; raise with the log tail if the server dies or times out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ReferenceServerError(f"vLLM's server exited with code {process.returncode} during start-up; "
                                       f"log {log_path}:\n{log_tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/v1/models", timeout=2.0).status_code == 200:
                return
        time.sleep(0.5)
    raise ReferenceServerError(f"vLLM's server did not answer {base_url}/v1/models within {timeout_s:.0f} s; "
                               f"log {log_path}:\n{log_tail(log_path)}")


@contextlib.contextmanager
def reference_server(model_dir, settings: ReferenceSettings | None = None):
    """Start vLLM's OpenAI server on the model directory, yield its base URL, stop it on exit.

    Raises ReferenceServerError (with the log tail) when it is not installed or does not come up; check
    reference_available() first to skip cleanly.
    """
    settings = settings or ReferenceSettings()
    if not reference_python(settings).exists():
        raise ReferenceServerError(f"vLLM reference server not installed: {ENABLE_HINT}")
    if not Path(model_dir).is_dir():
        raise ReferenceServerError(f"model directory {model_dir} does not exist (provision the model first)")
    port = settings.port or free_port(settings.host)
    base_url = f"http://{settings.host}:{port}"
    if settings.log_path is None:
        handle, name = tempfile.mkstemp(prefix="vllm-reference-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    else:
        log_path = Path(settings.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
    env = _server_env(settings)
    with open(log_path, "w") as log:
        process = subprocess.Popen(server_command(model_dir, settings, port), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        _wait_ready(base_url, process, log_path, settings.startup_timeout_s)
        yield base_url
    finally:
        _stop(process, settings.stop_timeout_s)


def run_script(script: Path, prompt_ids, arguments: list[str], env: dict[str, str], timeout_s: float,
               what: str, settings: ReferenceSettings | None = None) -> dict:
    """Run `script` under the reference interpreter with `--prompt-ids <file of prompt_ids> --out <file>` and
    `arguments`; returns the JSON it wrote. Raises ReferenceServerError (`what` failed, with the output's tail)."""
    with tempfile.TemporaryDirectory(prefix="reference-") as folder:
        prompts_path, out_path = Path(folder) / "prompt_ids.json", Path(folder) / "result.json"
        prompts_path.write_text(json.dumps(prompt_ids))
        command = [str(reference_python(settings)), str(script), "--prompt-ids", str(prompts_path),
                   "--out", str(out_path), *arguments]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
        if done.returncode != 0 or not out_path.exists():
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
            raise ReferenceServerError(f"{what} failed (exit {done.returncode}):\n{tail}")
        return json.loads(out_path.read_text())


def run_offline(model_dir, prompt_ids: list[list[int]], batch_sizes=(1, 8, 16), output_tokens: int = 64,
                settings: ReferenceSettings | None = None, repeats: int = 3, timeout_s: float = 600.0) -> dict:
    """vLLM's offline `LLM.generate` on the given prompts at each batch size (fixed output length), in the mode
    `settings.enforce_eager` names, through vllm_offline.py under the reference interpreter. Returns its JSON
    (start-up, prefill and decode seconds per batch size, vLLM version)."""
    settings = settings or ReferenceSettings()
    arguments = ["--model", str(model_dir), "--batch-sizes", ",".join(map(str, batch_sizes)),
                 "--output-tokens", str(output_tokens), "--repeats", str(repeats),
                 "--dtype", settings.dtype, "--max-model-len", str(settings.max_model_len),
                 "--gpu-memory-utilization", str(settings.gpu_memory_utilization), "--seed", str(settings.seed),
                 *(["--enforce-eager"] if settings.enforce_eager else [])]
    return run_script(OFFLINE_SCRIPT, prompt_ids, arguments, _server_env(settings), timeout_s,
                      "vLLM offline run", settings)


# ---- llama.cpp (llama-cpp-python in the same environment) --------------------------------------------------------
def llama_cpp_available(settings: ReferenceSettings | None = None, timeout_s: float = 60.0) -> tuple[bool, str]:
    """(True, "llama-cpp-python <version>") when the reference environment imports llama_cpp, else (False, a
    one-line reason)."""
    python = reference_python(settings)
    if not python.exists():
        return False, f"llama.cpp not installed ({python.parent.parent} is missing): {ENABLE_HINT}"
    try:
        return True, f"llama-cpp-python {module_version(str(python), 'llama_cpp', timeout_s)}"
    except ReferenceServerError as error:
        return False, f"{error}; {ENABLE_HINT}"
    except (subprocess.TimeoutExpired, OSError) as error:
        return False, f"llama.cpp unusable ({error}); {ENABLE_HINT}"


def run_llama_cpp(gguf, prompt_ids: list[int], cache_dir, batch_sizes=(1, 8, 16), output_tokens: int = 64,
                  threads: int = 2, repeats: int = 3, quants=("q4_1", "q8_0", "f32"),
                  settings: ReferenceSettings | None = None, timeout_s: float = 900.0) -> dict:
    """llama.cpp on `gguf` requantised to each of `quants` (cached in `cache_dir`), greedy decode at each batch
    size, through llama_cpp_bench.py under the reference interpreter. Returns its JSON (see that script)."""
    arguments = ["--gguf", str(gguf), "--cache-dir", str(cache_dir), "--batch-sizes", ",".join(map(str, batch_sizes)),
                 "--output-tokens", str(output_tokens), "--threads", str(threads), "--repeats", str(repeats),
                 "--quants", ",".join(quants)]
    return run_script(LLAMA_CPP_SCRIPT, list(prompt_ids), arguments, _clean_env({}), timeout_s,
                      "llama.cpp run", settings)


if __name__ == "__main__":  # python -m profiling.serving.bench.reference: say whether the reference can run
    available, reason = reference_available()
    print(reason)
    sys.exit(0 if available else 1)
