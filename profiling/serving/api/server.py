"""Running the app under uvicorn: in the foreground (the `serve` command), or in a background thread of this
process (tests, in-process experiments).

    serve(settings)                     blocks; SIGTERM/SIGINT drain in-flight requests, then exit
    with start_in_thread(settings) as server:  ...server.base_url...   stops and drains on exit

Both bind the socket before the model loads (so port 0 becomes a real port early) and say "serving <model> on
http://HOST:PORT" once uvicorn accepts connections. Shutdown is graceful: uvicorn stops accepting, waits for the
open requests (the worker keeps generating for them), then the app's shutdown drains and stops the worker.
"""
from __future__ import annotations

import contextlib
import socket
import sys
import threading

import uvicorn

from .app import create_app
from .service import Service
from .settings import ServerSettings


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on host:port (port 0: the OS picks a free one)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server that reports when it is ready."""

    def __init__(self, config: uvicorn.Config, ready_line: str, ready: threading.Event, announce: bool):
        super().__init__(config)
        self.ready_line, self.ready, self.announce = ready_line, ready, announce

    @contextlib.contextmanager
    def capture_signals(self):
        """As uvicorn's, except that a drained shutdown exits with status 0: uvicorn re-raises the captured
        SIGTERM/SIGINT after shutting down, which would end the process as killed by that signal."""
        with super().capture_signals():
            yield
            getattr(self, "_captured_signals", []).clear()

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            if self.announce:
                print(self.ready_line, flush=True)
            self.ready.set()


def _build(settings: ServerSettings, model=None, tokenizer=None, announce: bool = True):
    settings.check()
    sock = bind_socket(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    service = Service(settings, model=model, tokenizer=tokenizer)
    config = uvicorn.Config(create_app(service), log_level="warning", access_log=False, lifespan="on",
                            timeout_keep_alive=30)
    base_url = f"http://{host}:{port}"
    ready = threading.Event()
    server = _Server(config, f"serving {settings.name} on {base_url}", ready, announce)
    return server, sock, service, base_url, ready


def serve(settings: ServerSettings, model=None, tokenizer=None) -> None:
    """Run the server in the foreground until SIGTERM or SIGINT (then drain and return)."""
    server, sock, _, _, _ = _build(settings, model, tokenizer)
    server.run(sockets=[sock])
    sys.stdout.flush()


class RunningServer:
    """A server running in a background thread of this process: `base_url`, `service`, `stop()`."""

    def __init__(self, settings: ServerSettings, model=None, tokenizer=None, announce: bool = False,
                 ready_timeout_s: float = 120.0):
        self.settings = settings
        self._server, sock, self.service, self.base_url, ready = _build(settings, model, tokenizer, announce)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="uvicorn",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(ready_timeout_s):
            raise RuntimeError(f"the server did not start within {ready_timeout_s} s")

    def stop(self, timeout_s: float = 60.0) -> None:
        """Graceful stop: finish the open requests, drain the worker, join the thread."""
        self._server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_in_thread(settings: ServerSettings, model=None, tokenizer=None, announce: bool = False) -> RunningServer:
    """Start a server in a background thread and return once it accepts connections."""
    return RunningServer(settings, model, tokenizer, announce)
