"""Run a teacher server app in a background thread (tests, benchmarks, notebooks)."""

from __future__ import annotations

import threading
import time

from robot_rl.teachers.remote import free_port


class ServerThread:
    """Run an app with uvicorn in a background thread.

    Example::

        from robot_rl.teachers.server import ServerInfo, create_app

        with ServerThread(create_app(ServerInfo("scripted", teacher, 16, 5.0))) as url:
            RemoteTeacher(url).act(request)

    Args:
        app: the ASGI app.
        port: TCP port on 127.0.0.1 (default: a free one).
        startup_timeout_s: how long to wait for uvicorn to start (s).
        limits: keywords of :func:`robot_rl.teachers.server.uvicorn_config` (``max_header_bytes``,
            ``header_timeout_s``, ``timeout_keep_alive``, ``limit_concurrency``).

    Raises:
        RuntimeError: uvicorn did not start (e.g. the port is taken).
    """

    def __init__(self, app, port: int | None = None, startup_timeout_s: float = 10.0, **limits):
        import uvicorn

        from robot_rl.teachers.server import uvicorn_config

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", self.port, log_level="warning", **limits))
        self._thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)
        self._startup_timeout_s = startup_timeout_s

    def start(self) -> str:
        """Start uvicorn; returns the base URL once it accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.01)
        return self.url

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for it (at most 10 s)."""
        self.server.should_exit = True
        self._thread.join(10)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["ServerThread"]
