r"""The teacher server on Ray Serve: the same routes as :mod:`robot_rl.teachers.server`, over N replicas.

``robot-rl teacher serve --ray --replicas N`` runs :func:`serve_ray`. Every replica builds its own
backend (:func:`~robot_rl.teachers.server.build_backend`) and its own FastAPI app with
:func:`~robot_rl.teachers.server.create_app`, so the HTTP surface is the uvicorn server's, byte for
byte: ``POST /act`` (OpenVLA's protocol), ``POST /act/batch``, ``GET /healthz``, ``GET /metadata``,
4xx JSON errors naming the field, the ``X-API-Key`` check and the body limit (413).

How it differs from the uvicorn server (:func:`robot_rl.teachers.server.serve`):

- Ray's HTTP proxy listens on ``host:port`` and spreads requests over the replicas (it prefers the
  replica with the shorter queue); a replica that dies is restarted by Serve.
- Batching is Ray Serve's ``@serve.batch`` inside each replica (:meth:`TeacherDeployment._answer_batch`)
  instead of :class:`~robot_rl.teachers.server.DynamicBatcher`: a batch gathers at most
  ``max_batch`` *requests* (the uvicorn batcher counts rows), waiting at most ``batch_wait_ms``,
  and :func:`~robot_rl.teachers.server.run_batched` answers it in backend calls of at most
  ``max_batch`` *rows* (so the backend sees the same call sizes). ``batch_rows`` in a
  ``/act/batch`` answer is the row count of the backend call that answered it.
- Every answer carries the header ``X-Teacher-Replica: <replica tag>``, and ``/metadata`` adds
  ``"server": "ray-serve"`` and ``"replica_id"`` (of the replica that answered the metadata call).
- There is no ``--parent-pid`` watch: stop it with Ctrl-C or SIGTERM (Serve and, when this process
  started it, the local Ray instance are shut down).

Running on a GPU fleet::

    # machine A (head), machines B, C, ... (workers), same venv with robot_rl installed on each:
    A$ ray start --head --port 6379
    B$ ray start --address A:6379
    A$ RAY_ADDRESS=auto robot-rl teacher serve --ray --backend openvla --model /ckpt/openvla-7b \
          --replicas 8 --host 0.0.0.0 --max-batch 16 --api-key "$KEY"

With ``RAY_ADDRESS`` set (or ``address=``), :func:`serve_ray` joins that cluster instead of starting a
private local instance; Serve then runs one HTTP proxy on every node that hosts a replica, each on
``port``, so trainers may use any node's address. Each ``openvla`` replica asks Ray for one GPU
when the cluster has GPUs (``num_gpus=`` overrides, e.g. ``0.5`` to pack two 7B bf16 replicas on one
80 GB card); the ``scripted`` backend asks for none.

Ray pitfalls (Ray 2.60, found while building this):

- Serve's default ``max_ongoing_requests`` is 5 per replica, which silently caps every
  ``@serve.batch`` batch at 5 requests; the deployment raises it to ``2 * max_batch``.
- A replica reserves 1 CPU by default, so a 2-core machine holds at most 2 replicas and a
  deployment asking for more waits (``serve.run`` blocks) for CPUs that never come; replicas
  here reserve :data:`REPLICA_NUM_CPUS` (Serve's controller and proxy reserve none).
- GPUs and ``num_gpus=0``: in recent Ray (ray-project/ray#54868) a replica asking for no GPU
  sees *all* of the node's GPUs (``CUDA_VISIBLE_DEVICES`` is left alone; older Ray set it to ``""`` and hid them), so
  ``openvla`` replicas without a GPU request all load onto GPU 0 and Ray does not count them;
  with ``num_gpus >= 1`` (the default here when the cluster has GPUs) each gets its own.
- Unless ``OMP_NUM_THREADS`` is already set, Ray sets it to the replica's whole CPUs, at least 1:
  a replica reserving :data:`REPLICA_NUM_CPUS` runs torch on the CPU single-threaded (pass
  ``num_cpus=`` for a CPU model).
- A replica whose constructor raises fails ``serve.run`` with only ``Failed to update the
  deployments``; the traceback is in ``serve.status()``, and :func:`start_app` appends it.
- ``@serve.batch`` sets a per-caller *result* from each list item: an ``Exception`` returned in
  the list is handed back, not raised, so :meth:`TeacherDeployment.dispatch` raises it (one bad
  request gets its own 4xx/500; its batch neighbours are answered).
- Routes that need the replica's state cannot be declared on a module-level FastAPI app;
  ``@serve.ingress()`` without an app plus ``__serve_build_asgi_app__`` (called on the replica
  after ``__init__``) builds the app per replica. Older Ray releases (before the late-bound
  ingress) lack this; :func:`build_deployment` then raises with the reason.
- ``ray.init(num_cpus=...)`` is refused when joining an existing cluster; HTTP options
  (``host``/``port``) are cluster-wide and fixed by the first ``serve.start`` (restart Serve with
  ``serve shutdown`` to change them).
- ``ray.init`` replaces SIGTERM's handler with a fatal-signal handler that prints a stack trace
  and aborts (exit -6, Serve not shut down); :func:`serve_ray` installs its own SIGINT/SIGTERM
  handling right after ``ray.init``, so ``kill`` stops it cleanly (exit 0).
- ``log_to_driver=False`` keeps replica logs off the console; they are in
  ``/tmp/ray/session_latest/logs/serve/``.
- Harmless console noise: ``Token authentication is enabled`` (``ray.init``), ``Connecting to
  existing Serve app ... New http_options ... will not be applied`` (``serve.run`` after
  ``serve.start``: the options of ``serve.start`` *are* in effect), and ``(raylet) Task
  ServeController.graceful_shutdown failed`` at shutdown.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any, Self

from ray import serve

from .base import TeacherRequest, TeacherResponse
from .config import REPLICA_NUM_CPUS
from .server import (
    DEFAULT_MAX_BODY_BYTES,
    ServerInfo,
    build_backend,
    check_backend_args,
    create_app,
    run_batched,
)

log = logging.getLogger("robot_rl.teachers.ray_serve")

#: Serve application name (``serve status`` / ``serve.delete`` use it).
APP_NAME = "robot_rl_teacher"
#: Deployment name inside the application.
DEPLOYMENT_NAME = "TeacherDeployment"
#: Response header naming the replica that answered.
REPLICA_HEADER = "X-Teacher-Replica"
#: Requests in flight per replica = this x max_batch (one batch computing, the next one filling).
ONGOING_PER_BATCH = 2
#: Seconds between checks of the stop flag while :func:`serve_ray` blocks.
POLL_S = 0.5
#: Whether the installed Ray has ``@serve.ingress()`` without an app (``__serve_build_asgi_app__``).
LATE_BOUND_INGRESS = inspect.signature(serve.ingress).parameters["app"].default is None


@dataclass
class RayServerInfo(ServerInfo):
    """:class:`ServerInfo` of one replica: ``/metadata`` also says ``"server"`` and ``"replica_id"``."""

    replica_id: str = ""

    def metadata(self) -> dict:
        """The uvicorn server's ``/metadata``, plus ``"server": "ray-serve"`` and this ``"replica_id"``."""
        return {**super().metadata(), "server": "ray-serve", "replica_id": self.replica_id}


def _ingress():
    """``@serve.ingress()`` (late-bound) when available; otherwise a no-op (build_deployment refuses)."""
    return serve.ingress() if LATE_BOUND_INGRESS else (lambda cls: cls)


@_ingress()
class TeacherDeployment:
    """One Ray Serve replica: a backend, a ``@serve.batch`` dispatcher and the server's FastAPI app.

    Args:
        backend: ``"scripted"`` or ``"openvla"`` (:func:`~robot_rl.teachers.server.build_backend`).
        max_batch: most requests per ``@serve.batch`` batch, and most rows per backend call.
        batch_wait_ms: longest a request waits for company, milliseconds.
        api_key: when set, every route but ``/healthz`` needs ``X-API-Key``.
        max_body_bytes: larger request bodies get 413.
        backend_kwargs: passed to ``build_backend`` (the keys of the kind's backend section,
            :mod:`robot_rl.teachers.config`). ``model`` is a path on the replica's node, so on a fleet
            the checkpoint must be at that path on every node.

    Raises:
        ValueError: from ``build_backend`` (the deployment then fails to start).
    """

    def __init__(self, backend: str, *, max_batch: int, batch_wait_ms: float, api_key: str | None,
                 max_body_bytes: int, backend_kwargs: dict[str, Any]) -> None:
        self.teacher = build_backend(backend, **backend_kwargs)
        self.max_batch = int(max_batch)
        self.replica_id = serve.get_replica_context().replica_tag
        self.info = RayServerInfo(backend, self.teacher, self.max_batch, float(batch_wait_ms), self.replica_id)
        self.api_key, self.max_body_bytes = api_key, int(max_body_bytes)
        # The decorator's numbers are class-wide defaults; this replica's come from the CLI.
        self._answer_batch.set_max_batch_size(self.max_batch)
        self._answer_batch.set_batch_wait_timeout_s(float(batch_wait_ms) / 1000.0)

    def __serve_build_asgi_app__(self):
        """Called by Serve on the replica after ``__init__``: the uvicorn server's app on this replica's dispatch."""
        app = create_app(self.info, self.dispatch, api_key=self.api_key, max_body_bytes=self.max_body_bytes)

        @app.middleware("http")
        async def tag_replica(request, call_next):
            response = await call_next(request)
            response.headers[REPLICA_HEADER] = self.replica_id
            return response

        return app

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _answer_batch(self, requests: list[TeacherRequest]) -> list[TeacherResponse | Exception]:
        """Answer a batch of requests in as few backend calls as possible (backend in a worker thread).

        Returns one item per request: its :class:`TeacherResponse` (``extras["batch_rows"]``: rows of
        the backend call that answered it) or the ``Exception`` the backend raised for it. Serve runs
        one batch at a time per replica (``max_concurrent_batches=1``), so the backend is never
        called from two threads at once.
        """
        results, _calls = await asyncio.to_thread(run_batched, self.teacher, requests, self.max_batch)
        return results

    async def dispatch(self, request: TeacherRequest) -> TeacherResponse:
        """``create_app``'s dispatch: queue ``request`` for the next batch; raises its backend exception."""
        result = await self._answer_batch(request)
        if isinstance(result, Exception):
            raise result
        return result


def _check_args(backend: str, replicas: int, max_batch: int, batch_wait_ms: float, backend_kwargs: dict) -> None:
    """Fail in the driver, before Ray starts, on what the replicas would refuse."""
    if not LATE_BOUND_INGRESS:
        import ray

        raise RuntimeError(f"ray {ray.__version__} lacks @serve.ingress() without an app (__serve_build_asgi_app__), "
                           "which --ray needs; upgrade ray[serve] or serve without --ray")
    if replicas < 1 or max_batch < 1 or batch_wait_ms < 0:
        raise ValueError(f"replicas and max_batch must be >= 1 and batch_wait_ms >= 0, "
                         f"got {replicas}, {max_batch}, {batch_wait_ms}")
    check_backend_args(backend, backend_kwargs.get("model"))
    if backend == "scripted":
        build_backend(backend, **backend_kwargs)  # cheap: surfaces a bad --task here, not in a replica log
    else:
        from .config import backend_config

        backend_config(backend, **backend_kwargs)  # a bad key or value, named here (the model loads in the replicas)


def build_deployment(backend: str = "scripted", *, replicas: int = 1, max_batch: int = 16, batch_wait_ms: float = 5.0,
                     api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                     num_cpus: float = REPLICA_NUM_CPUS, num_gpus: float = 0.0, **backend_kwargs: Any):
    """The bound Serve application, ready for ``serve.run(app, name=APP_NAME, route_prefix="/")``.

    Args:
        backend: ``"scripted"`` or ``"openvla"``.
        replicas: number of replicas (each builds its own backend).
        max_batch: most requests per batch and most rows per backend call.
        batch_wait_ms: longest a request waits for a batch to fill, milliseconds.
        api_key: ``X-API-Key`` value every route but ``/healthz`` requires (``None``: no key).
        max_body_bytes: request body limit in bytes (413 beyond).
        num_cpus: CPUs each replica reserves in Ray.
        num_gpus: GPUs each replica reserves (fractions pack replicas on one GPU). With 0, Ray
            neither counts nor isolates GPUs for the replica: it sees every GPU of its node.
        backend_kwargs: the keys of the kind's backend section (:func:`~robot_rl.teachers.server.build_backend`;
            a ``None`` for a key the kind does not have is ignored).

    Raises:
        ValueError: bad numbers, an unknown backend or task, ``openvla`` without ``model``.
        RuntimeError: the installed Ray lacks late-bound ``@serve.ingress()``.
    """
    _check_args(backend, replicas, max_batch, batch_wait_ms, backend_kwargs)
    deployment = serve.deployment(
        TeacherDeployment,
        name=DEPLOYMENT_NAME,
        num_replicas=int(replicas),
        max_ongoing_requests=ONGOING_PER_BATCH * int(max_batch),
        ray_actor_options={"num_cpus": float(num_cpus), "num_gpus": float(num_gpus)},
    )
    return deployment.bind(backend, max_batch=int(max_batch), batch_wait_ms=float(batch_wait_ms), api_key=api_key,
                           max_body_bytes=int(max_body_bytes), backend_kwargs=backend_kwargs)


def init_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True) -> bool:
    """Connect to Ray, or start a private local instance.

    Args:
        address: a cluster to join (``"auto"``, ``"host:6379"``, ``"ray://..."``); default
            ``$RAY_ADDRESS``, and without it a new local instance.
        num_cpus: CPUs of a new local instance (default: all); ignored when joining a cluster.
        quiet: keep worker and replica logs off this console (they stay under ``/tmp/ray``).

    Returns:
        Whether this call started the Ray instance (so the caller should shut it down).
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    common = {"include_dashboard": False, "log_to_driver": not quiet,
              "logging_level": logging.WARNING if quiet else logging.INFO}
    if address is not None:
        ray.init(address=address, **common)
        return False
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), **common)
    return True


def start_app(app, *, host: str = "127.0.0.1", port: int = 8000, name: str = APP_NAME,
              route_prefix: str = "/") -> None:
    """Start Serve's HTTP proxy on ``host:port`` and deploy ``app``; blocks until its replicas are up.

    Args:
        app: a bound application (:func:`build_deployment`).
        host: the address the proxy listens on (cluster-wide; fixed by the first ``serve.start``).
        port: the proxy's TCP port (likewise fixed by the first ``serve.start``).
        name: the Serve application's name.
        route_prefix: the Serve application's URL prefix.

    Raises:
        RuntimeError: the deployment failed (e.g. a replica's constructor raised); the message
            ends with the replica's traceback, which ``serve.run``'s own error leaves out.
    """
    serve.start(http_options={"host": host, "port": int(port)})
    try:
        serve.run(app, name=name, route_prefix=route_prefix)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{_deployment_errors(name)}".rstrip()) from exc


def _deployment_errors(name: str, max_chars: int = 4000) -> str:
    """The failed deployments' messages of application ``name`` (replica tracebacks), newest text last."""
    try:
        app_status = serve.status().applications.get(name)
    except Exception:  # noqa: BLE001 -- best effort: never mask the deployment error being reported
        return ""
    if app_status is None:
        return ""
    return "\n".join(f"deployment {dep}: {d.message[-max_chars:]}"
                     for dep, d in app_status.deployments.items() if d.message)


def _gpu_default(backend: str) -> float:
    """One GPU per ``openvla`` replica when the cluster has GPUs, else none."""
    import ray

    return 1.0 if backend == "openvla" and ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


class _StopSignals:
    """SIGINT / SIGTERM handling for :func:`serve_ray` (a context manager).

    Installed right after ``ray.init``, which replaces SIGTERM's handler with Ray's fatal-signal
    handler (it prints a stack and aborts, exit -6). A signal while starting raises
    ``KeyboardInterrupt`` (startup is abandoned, Ray cleaned up); while :meth:`wait` blocks it
    ends the wait; a second one raises ``KeyboardInterrupt`` (to cut a slow shutdown short).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._waiting = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        first = not self._stop.is_set()
        self._stop.set()
        if not (self._waiting and first):
            raise KeyboardInterrupt(signal.Signals(signum).name)

    def __enter__(self) -> Self:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def wait(self) -> None:
        """Block until a signal arrives (or returned at once when one arrived already)."""
        self._waiting = True
        while not self._stop.wait(POLL_S):
            pass

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:  # None: the previous handler was not installed from Python
                signal.signal(sig, handler)


def serve_ray(backend: str = "scripted", *, replicas: int = 1, host: str = "127.0.0.1", port: int = 8000,
              max_batch: int = 16, batch_wait_ms: float = 5.0, api_key: str | None = None,
              max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, address: str | None = None,
              num_cpus: float = REPLICA_NUM_CPUS, num_gpus: float | None = None, **backend_kwargs: Any) -> None:
    """Serve ``backend`` on Ray Serve with ``replicas`` replicas until Ctrl-C / SIGTERM (blocks).

    Arguments as :func:`build_deployment` and ``robot-rl teacher serve``.

    Args:
        backend: ``"scripted"`` or ``"openvla"``.
        replicas: number of replicas (each builds its own backend).
        host: the address Serve's HTTP proxy listens on.
        port: the proxy's TCP port.
        max_batch: most requests per batch and most rows per backend call.
        batch_wait_ms: longest a request waits for a batch to fill, milliseconds.
        api_key: ``X-API-Key`` value every route but ``/healthz`` requires (``None``: no key).
        max_body_bytes: request body limit in bytes (413 beyond).
        address: Ray cluster to join (default ``$RAY_ADDRESS``; unset: a private local instance).
        num_cpus: CPUs each replica reserves in Ray.
        num_gpus: GPUs per replica; ``None``: 1 for ``openvla`` when the cluster has a GPU, else 0.
        backend_kwargs: the keys of the kind's backend section, as :func:`build_deployment`.

    On exit, Serve and a Ray instance this call started are shut down; on a joined cluster only
    this application is deleted.
    """
    _check_args(backend, replicas, max_batch, batch_wait_ms, backend_kwargs)  # before Ray starts
    owns_ray = init_ray(address)
    try:
        with _StopSignals() as signals:
            try:
                gpus = _gpu_default(backend) if num_gpus is None else float(num_gpus)
                app = build_deployment(backend, replicas=replicas, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                                       api_key=api_key, max_body_bytes=max_body_bytes, num_cpus=num_cpus,
                                       num_gpus=gpus, **backend_kwargs)
                start_app(app, host=host, port=port)
                log.info("serving %s on http://%s:%d with %d Ray Serve replica(s) (%.2f CPU, %.2f GPU each)",
                         backend, host, port, replicas, num_cpus, gpus)
                signals.wait()
                log.info("stopping")
            finally:
                _shutdown(owns_ray)
    except KeyboardInterrupt:
        log.info("interrupted")


def _shutdown(owns_ray: bool) -> None:
    import ray

    if not ray.is_initialized():
        return
    try:
        if owns_ray:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
    finally:
        if owns_ray:
            ray.shutdown()
