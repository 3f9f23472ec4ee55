"""Client side of the teacher server: :class:`ServedTeacher` (what every served-teacher client shares),
:class:`RemoteTeacher` (HTTP), and :class:`SpawnedServer` for ``kind: spawn``. The openpi WebSocket client,
:class:`~robot_rl.teachers.openpi.OpenpiTeacher`, is a :class:`ServedTeacher` too.

The client imports only numpy, requests and json-numpy (no torch, no FastAPI), so it can run in any
training process (DESIGN.md, Style: the teacher client is tiny). It speaks our ``POST /act/batch``
and falls back to one ``POST /act`` per row against a server that only speaks OpenVLA's protocol
(``vla-scripts/deploy.py``), converting OpenVLA-convention answers into the env convention
(:func:`robot_rl.teachers.wire.openvla_to_env`).

Faults never stop training: a timeout, a refused connection or a 5xx after the retries gives a
"no guidance" answer (NaN rows, which the trainer drops and counts as invalid), and further queries
are skipped for ``backoff_s`` seconds so a dead server costs no time per env step; after that the
client tries again and so reconnects when the server is back. A 4xx means the request itself is
wrong (a client or configuration bug) and raises.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import json_numpy
import numpy as np
import requests

from robot_rl.geometry import ACTION_DIM
from robot_rl.teacher_protocol import BATCH_ROUTE, METADATA_ROUTE, check_scratchpads, decode_batch_answer

from .base import TeacherRequest, TeacherRequestError, TeacherResponse, TeacherSpec
from .wire import API_KEY_ENV, API_KEY_HEADER, encode_batch_request, nested_latency, openvla_to_env

log = logging.getLogger("robot_rl.teachers.remote")

class TeacherServerError(RuntimeError):
    """The server refused a request (HTTP: a 4xx; openpi: see :class:`~robot_rl.teachers.openpi.OpenpiTeacher`):
    the request or the configuration is wrong.
    """


@dataclass
class RemoteStats:
    """Counters of one :class:`RemoteTeacher` (since construction)."""

    requests: int = 0  #: HTTP requests sent (``/act/batch`` or ``/act``), retries included
    failures: int = 0  #: queries answered with "no guidance" after the retries (timeout, refused, 5xx)
    skipped: int = 0  #: queries answered with "no guidance" without trying, during a back-off window
    reconnects: int = 0  #: successful answers right after a failure


class PendingAnswer:
    """A query submitted with :meth:`RemoteTeacher.submit`.

    Attributes:
        obs_times_s: ``(B,) float64`` when each row's observation was taken, on the teacher's clock
            (``RemoteTeacher(clock=...)``): the request's ``obs_times_s``, else ``obs_time`` given to
            :meth:`~RemoteTeacher.submit`, else the submit time.
        answer_times_s: ``(B,) float64`` when each row's answer arrived (same clock), ``None`` while
            in flight. The response carries both (``TeacherResponse.obs_times_s``, ``.answer_times_s``).
    """

    def __init__(self, future: Future, obs_times_s: np.ndarray, clock: Callable[[], float]):
        self._future = future
        self._clock = clock
        self.obs_times_s = obs_times_s
        self.answer_times_s: np.ndarray | None = None
        future.add_done_callback(self._stamp)

    def _stamp(self, future: Future) -> None:
        response = None if future.cancelled() or future.exception() is not None else future.result()
        if response is not None and response.answer_times_s is not None:
            self.answer_times_s = response.answer_times_s
        else:  # a 4xx (TeacherServerError) or a cancelled query: the time it ended
            self.answer_times_s = np.full(self.obs_times_s.shape, self._clock())

    def done(self) -> bool:
        """Whether the answer (or its failure) has arrived."""
        return self._future.done()

    def age_s(self) -> np.ndarray:
        """``(B,)`` seconds from each row's observation to its answer (or to now, while in flight)."""
        end = self.answer_times_s if self.answer_times_s is not None else self._clock()
        return end - self.obs_times_s

    def result(self, timeout: float | None = None) -> TeacherResponse:
        """The answer; rows are NaN ("no guidance") when the server failed. Raises
        :class:`TeacherServerError` for a 4xx and ``TimeoutError`` when ``timeout`` passes first.
        """
        return self._future.result(timeout)


class ServedTeacher:
    """What every client of a served teacher shares: the :class:`~robot_rl.teachers.base.Teacher` protocol over
    one transport, with timeouts, retries, back-off, fault counters, asynchronous :meth:`submit` and latency stamps.

    :class:`RemoteTeacher` (our HTTP protocol and OpenVLA's) and :class:`~robot_rl.teachers.openpi.OpenpiTeacher`
    (openpi's WebSocket protocol) subclass it; a subclass sets ``url`` and ``spec`` and implements
    :meth:`_exchange` (one attempt at the whole request; :meth:`_retrying` and :meth:`_per_row` help), and names in
    ``_FAILURES`` the exceptions that mean "the server failed" (answered with "no guidance").

    Args:
        timeout_s: per-attempt timeout (s); a slower answer counts as a failure.
        retries: extra attempts after a timeout, refused connection or server failure.
        unnorm_key: dataset-statistics key sent with every query that names none (OpenVLA backends).
        backoff_s: after a failed query, answer "no guidance" without trying for this long (s).
        max_in_flight: concurrent queries of :meth:`submit` (and of per-row protocols).
        clock: the clock of ``request.obs_times_s`` and of the stamps this client adds, seconds
            (default ``time.time``, the wall clock; at deployment the ROS clock of the header stamps).

    Every response carries, per row, ``latency_s`` (from the query leaving the caller, i.e. the :meth:`act` or
    :meth:`submit` call, to the answer arriving), the request's ``obs_steps``, and the stamps ``obs_times_s`` /
    ``answer_times_s`` on ``clock``.

    Raises:
        ValueError: ``timeout_s <= 0``, ``retries < 0``, ``backoff_s < 0`` or ``max_in_flight < 1``.
    """

    url: str
    spec: TeacherSpec
    #: Exceptions of :meth:`_exchange` that are a failure of the server: "no guidance", back-off.
    _FAILURES: tuple[type[BaseException], ...] = (ValueError, KeyError, TypeError)

    def __init__(self, *, timeout_s: float = 5.0, retries: int = 1, unnorm_key: str | None = None,
                 backoff_s: float = 1.0, max_in_flight: int = 8, clock: Callable[[], float] = time.time):
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or max_in_flight < 1:
            raise ValueError("timeout_s must be > 0, retries and backoff_s >= 0, max_in_flight >= 1")
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), int(retries), float(backoff_s)
        self.unnorm_key = unnorm_key
        self._clock = clock
        self._local = threading.local()
        self._pool_name = "served-teacher"
        self._pool = ThreadPoolExecutor(max_workers=int(max_in_flight), thread_name_prefix=self._pool_name)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._failing = False
        self.stats = RemoteStats()

    # -- what a transport implements ------------------------------------------------------------

    def _exchange(self, request: TeacherRequest, t0: float) -> tuple[np.ndarray, list[str] | None, str, np.ndarray,
                                                                       np.ndarray]:
        """One query over the wire (``request`` already trimmed to what the backend reads).

        Returns:
            ``(actions (B, 7) float32 in the env convention, notes or None, model_id, latency_s (B,) seconds since
            t0, done (B,) perf_counter s when each row's answer arrived)``.

        Raises:
            TeacherServerError: the server refused the request (retrying cannot help; the caller sees it).
            one of ``_FAILURES``: the server failed (after :meth:`_retrying`'s attempts).
        """
        raise NotImplementedError

    def _retrying(self, attempt: Callable[[], object], transient: tuple[type[BaseException], ...]) -> object:
        """``attempt()`` up to ``retries + 1`` times while it raises one of ``transient`` (each try counts in
        ``stats.requests``); re-raises the last such error, and anything else at once.
        """
        last: BaseException | None = None
        for _ in range(self.retries + 1):
            self.stats.requests += 1
            try:
                return attempt()
            except transient as exc:
                last = exc
        raise last  # type: ignore[misc]

    def _per_row(self, n: int, one: Callable[[int], tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
        """``one(i)`` for each of ``n`` rows, concurrently on the query threads (inline when already on one, so
        the pool cannot deadlock).

        Returns:
            ``(rows (n, ...) stacked, done (n,) float64)`` from ``one``'s ``(row, done)`` pairs (empty for n = 0).
        """
        if threading.current_thread().name.startswith(self._pool_name):
            rows = [one(i) for i in range(n)]
        else:
            rows = list(self._pool.map(one, range(n)))
        if not rows:
            return np.zeros((0, ACTION_DIM), np.float64), np.zeros(0)
        return np.stack([a for a, _ in rows]), np.array([t for _, t in rows])

    # -- queries -------------------------------------------------------------------------------

    def _with_default_key(self, request: TeacherRequest) -> TeacherRequest:
        if request.unnorm_key is None and self.unnorm_key is not None:
            return dataclasses.replace(request, unnorm_key=self.unnorm_key)
        return request

    def check_request(self, request: TeacherRequest) -> None:
        """The server's spec checks and the protocol's ``scratchpads`` rule, locally (the server checks the rest).

        Raises:
            TeacherRequestError: what the server's spec needs is missing (e.g. images for an
                OpenVLA server), an ``unnorm_key`` the server does not have, or ``scratchpads`` that are not
                ``B`` strings of at most :data:`~robot_rl.teacher_protocol.MAX_SCRATCHPAD_CHARS` characters.
        """
        self._check(self._with_default_key(request))

    def _check(self, request: TeacherRequest) -> None:
        self.spec.check(request)
        try:
            check_scratchpads(request.scratchpads, len(request))
        except ValueError as exc:
            raise TeacherRequestError("scratchpads", str(exc).partition(": ")[2]) from None

    def act(self, request: TeacherRequest) -> TeacherResponse:
        """Answer ``request`` now (blocking). Rows are NaN when the server failed (see module docstring).

        Raises:
            TeacherRequestError: :meth:`check_request` refused it (nothing is sent).
            TeacherServerError: the server refused the request (a 4xx).
        """
        t0 = time.perf_counter()
        request = self._with_default_key(request)
        self._check(request)
        return self._query(request, t0, self._obs_times(request, None))

    def submit(self, request: TeacherRequest, obs_time: float | None = None) -> PendingAnswer:
        """Send ``request`` without waiting; collect the answer later with :meth:`PendingAnswer.result`.

        Args:
            request: the query (checked now: :class:`~robot_rl.teachers.base.TeacherRequestError`
                before anything is sent).
            obs_time: when its observation was taken, on the teacher's ``clock`` (s), for rows the
                request gives no ``obs_times_s``; default now. The caller can tell how stale each row's
                answer is when it arrives (:meth:`PendingAnswer.age_s`).
        """
        t0 = time.perf_counter()
        request = self._with_default_key(request)
        self._check(request)
        obs = self._obs_times(request, obs_time)
        return PendingAnswer(self._pool.submit(self._query, request, t0, obs), obs, self._clock)

    def _obs_times(self, request: TeacherRequest, obs_time: float | None) -> np.ndarray:
        if request.obs_times_s is not None:
            return request.obs_times_s.copy()
        return np.full(len(request), self._clock() if obs_time is None else float(obs_time))

    def _query(self, request: TeacherRequest, t0: float, obs_times_s: np.ndarray) -> TeacherResponse:
        """One query; ``t0`` (``perf_counter``) is when it left the caller."""
        if time.monotonic() < self._down_until:
            self.stats.skipped += 1
            return self._no_guidance(request, t0, obs_times_s, "server down: skipped during back-off")
        try:
            actions, notes, model_id, latency, done = self._exchange(self.spec.trim(request), t0)
            now_clock, now = self._clock(), time.perf_counter()
            response = TeacherResponse(actions, latency, model_id, notes=notes, obs_steps=request.obs_steps,
                                       obs_times_s=obs_times_s, answer_times_s=now_clock - (now - done))
        except TeacherServerError:
            raise
        except self._FAILURES as exc:
            with self._lock:
                self.stats.failures += 1
                self._failing = True
                self._down_until = time.monotonic() + self.backoff_s
            log.warning("teacher query failed (%s); no guidance for %d rows, next try in %.1f s",
                        exc, len(request), self.backoff_s)
            return self._no_guidance(request, t0, obs_times_s, str(exc))
        with self._lock:
            if self._failing:
                self._failing = False
                self.stats.reconnects += 1
                log.info("teacher server at %s is back", self.url)
        return response

    def _no_guidance(self, request: TeacherRequest, t0: float, obs_times_s: np.ndarray, error: str) -> TeacherResponse:
        actions = np.full((len(request), ACTION_DIM), np.nan, dtype=np.float32)
        return TeacherResponse(actions, time.perf_counter() - t0, self.spec.model_id, obs_steps=request.obs_steps,
                               obs_times_s=obs_times_s, answer_times_s=np.full(len(request), self._clock()),
                               extras={"error": error})

    def close(self) -> None:
        """Stop the query threads; queries not yet started are cancelled."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class RemoteTeacher(ServedTeacher):
    """A :class:`~robot_rl.teachers.base.Teacher` answered by a teacher server over HTTP.

    Args:
        url: server base URL, e.g. ``http://127.0.0.1:8000``.
        timeout_s: per-HTTP-request timeout (s); a slower answer counts as a failure.
        retries: extra attempts after a timeout, refused connection or 5xx.
        api_key: sent as ``X-API-Key`` (default: ``$ROBOT_RL_TEACHER_API_KEY``).
        unnorm_key: dataset-statistics key sent with every query that names none (OpenVLA backends).
        control_period_steps: ``D``; default the server's ``/metadata`` value (4 for an
            OpenVLA-only server, which does not report one).
        connect_timeout_s: how long the constructor waits for the server to come up (s).
        backoff_s: after a failed query, answer "no guidance" without trying for this long (s).
        max_in_flight: concurrent HTTP requests of :meth:`submit` (and of the per-row fallback).
        clock: the clock of ``request.obs_times_s`` and of the stamps this client adds, seconds
            (default ``time.time``, the wall clock; at deployment the ROS clock of the header stamps).

    Attributes:
        spec: the server's :class:`~robot_rl.teachers.base.TeacherSpec` (from ``GET /metadata``), with
            this client's ``control_period_steps``; for an OpenVLA-only server: needs images, no state,
            ``model_id`` ``"openvla-server"``.
        metadata: the server's ``/metadata`` (``None`` for an OpenVLA-only server).
        protocol_version: the server's ``/act/batch`` protocol (0: OpenVLA-only; 1: no per-row
            ``obs_steps`` / ``obs_times_s``, which are then not sent).

    Besides :class:`ServedTeacher`'s per-row fields, every response carries the server's ``notes`` (None from a
    server whose backend writes none, from an OpenVLA-only server, and in a "no guidance" answer: a lost answer
    loses its own notes). The request's ``scratchpads`` are sent with ``/act/batch`` (an OpenVLA-only server's
    ``/act`` has no field for them).

    Raises:
        ConnectionError: no server answered within ``connect_timeout_s``.
        TeacherServerError: the server refused the API key (401) or the metadata request.
        ValueError: ``unnorm_key`` is not one of the server's ``unnorm_keys``.
    """

    _FAILURES = (requests.RequestException, ValueError, KeyError, TypeError)

    def __init__(self, url: str = "http://127.0.0.1:8000", timeout_s: float = 5.0, retries: int = 1,
                 api_key: str | None = None, unnorm_key: str | None = None,
                 control_period_steps: int | None = None, connect_timeout_s: float = 30.0,
                 backoff_s: float = 1.0, max_in_flight: int = 8, clock: Callable[[], float] = time.time):
        super().__init__(timeout_s=timeout_s, retries=retries, unnorm_key=unnorm_key, backoff_s=backoff_s,
                         max_in_flight=max_in_flight, clock=clock)
        self.url = url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._headers = {"Content-Type": "application/json"} | ({API_KEY_HEADER: key} if key else {})

        self.metadata = self._probe(connect_timeout_s)
        self.openvla_only = self.metadata is None
        meta = self.metadata or {}
        self.protocol_version = 0 if self.openvla_only else int(meta.get("protocol_version", 1))
        d = served_period(control_period_steps, meta.get("control_period_steps"))
        if self.openvla_only:
            self.spec = TeacherSpec(model_id="openvla-server", control_period_steps=d, needs_image=True)
        else:
            self.spec = TeacherSpec.from_metadata(meta, control_period_steps=d)
        if unnorm_key is not None and self.spec.unnorm_keys and unnorm_key not in self.spec.unnorm_keys:
            raise ValueError(f"unnorm_key {unnorm_key!r} is not one of the server's: "
                             f"{', '.join(self.spec.unnorm_keys)}")

    # -- connection ----------------------------------------------------------------------------

    @property
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _probe(self, connect_timeout_s: float) -> dict | None:
        """``GET /metadata``; ``None`` for an OpenVLA-only server (404)."""
        deadline = time.monotonic() + connect_timeout_s
        while True:
            try:
                r = self._session.get(f"{self.url}{METADATA_ROUTE}", headers=self._headers, timeout=self.timeout_s)
            except requests.RequestException as exc:
                if time.monotonic() > deadline:
                    raise ConnectionError(
                        f"no teacher server answered at {self.url} within {connect_timeout_s:.0f} s ({exc}); "
                        "start one with `robot-rl teacher serve` or use teacher.kind=spawn"
                    ) from None
                time.sleep(0.2)
                continue
            if r.status_code == 404:
                log.info("%s has no /metadata: OpenVLA-only server, using per-row POST /act", self.url)
                return None
            if r.status_code == 401:
                raise TeacherServerError(f"{self.url} refused the API key (401): set ${API_KEY_ENV} (or pass api_key=)")
            if r.status_code != 200:
                raise TeacherServerError(f"GET {self.url}/metadata answered {r.status_code}: {r.text[:200]}")
            return r.json()

    def _post(self, route: str, body: dict) -> object:
        """POST a json-numpy body with retries; returns the decoded answer.

        Raises:
            TeacherServerError: a 4xx (the request is wrong; retrying cannot help).
            requests.RequestException: the server failed every attempt (timeout, refused, 5xx).
        """
        data = json_numpy.dumps(body)

        def attempt() -> object:
            r = self._session.post(f"{self.url}{route}", data=data, headers=self._headers, timeout=self.timeout_s)
            if 400 <= r.status_code < 500:
                raise TeacherServerError(f"POST {route} answered {r.status_code}: {r.text[:500]}")
            if r.status_code != 200:
                raise requests.HTTPError(f"POST {route} answered {r.status_code}: {r.text[:200]}")
            return json_numpy.loads(r.text)

        return self._retrying(attempt, (requests.RequestException,))

    # -- queries -------------------------------------------------------------------------------

    def _exchange(self, request: TeacherRequest, t0: float):
        if self.openvla_only:
            actions, done = self._act_per_row(request)
            return actions, None, self.spec.model_id, done - t0, done
        out = self._post(BATCH_ROUTE, encode_batch_request(request, stamps=self.protocol_version >= 2))
        done = np.full(len(request), time.perf_counter())
        answer = decode_batch_answer(out, len(request))  # ValueError: not (B, 7), no model_id
        latency = nested_latency(done[0] - t0, answer.latencies_s, len(request))
        return answer.actions, answer.notes, answer.model_id, latency, done

    def _act_per_row(self, request: TeacherRequest) -> tuple[np.ndarray, np.ndarray]:
        """OpenVLA's protocol: one ``POST /act`` per row, sent concurrently.

        Returns:
            ``(actions (B, 7) float32 in the env convention, done (B,) perf_counter s when each row's answer arrived)``.
        """

        def one(i: int) -> tuple[np.ndarray, float]:
            body = {"image": request.images[i], "instruction": request.instructions[i]}
            if request.unnorm_key is not None:
                body["unnorm_key"] = request.unnorm_key
            raw = self._post("/act", body)
            if isinstance(raw, str):  # the reference server answers errors with 200 "error"
                raise ValueError(f"server answered {raw!r}")
            return np.asarray(raw, dtype=np.float64).reshape(ACTION_DIM), time.perf_counter()

        raw, done = self._per_row(len(request), one)
        return openvla_to_env(raw), done


def served_period(configured: int | None, served: object) -> int:
    """``D`` of a served teacher: the client's ``control_period_steps`` (a warning when the server reports
    another), else the server's, else 4 (a 5 Hz VLA at 20 Hz control).
    """
    if configured is not None and served is not None and int(configured) != int(served):
        log.warning("teacher control_period_steps=%s differs from the server's %s; using %s",
                    configured, served, configured)
    return int(configured or served or 4)


# ----------------------------------------------------------------------------------------------
# kind: spawn


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout_s: float = 60.0, proc: subprocess.Popen | None = None,
                 log_path: str | None = None) -> None:
    """Wait until a teacher server answers ``GET url/healthz`` with 200, polling every 0.2 s.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
        timeout_s: how long to wait (s).
        proc: the server's process, if this process started it: its exit ends the wait.
        log_path: the server's log, whose last 2000 characters the error then quotes.

    Raises:
        RuntimeError: ``proc`` exited first (its exit code and log tail in the message), or ``timeout_s``
            passed without a 200.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = open(log_path).read()[-2000:] if log_path else "(no log)"
            raise RuntimeError(f"teacher server exited with code {proc.returncode}:\n{tail}")
        try:
            if requests.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"teacher server did not answer {url}/healthz within {timeout_s:.0f} s")


class SpawnedServer:
    """A ``robot-rl teacher serve`` subprocess owned by a training run (``teacher.kind: spawn``).

    It listens on loopback, exits on its own if this process dies (``--parent-pid``), and
    :meth:`stop` ends it with SIGTERM (uvicorn's graceful shutdown), then SIGKILL after
    ``stop_timeout_s``. Use it as a context manager.

    Args:
        backend: ``"scripted"`` or ``"openvla"``.
        model, unnorm_key, control_period_steps, task, max_batch, batch_wait_ms, latency_ms: passed to
            ``robot-rl teacher serve`` (``latency_ms``: every answer is held this long, ms).
        port: TCP port (default: a free one).
        startup_timeout_s: how long to wait for ``/healthz`` (s); a VLA checkpoint takes a while to load.

    Raises:
        RuntimeError: the server exited or did not answer within ``startup_timeout_s`` (its log tail is included).
    """

    def __init__(self, backend: str = "scripted", *, model: str | None = None, unnorm_key: str | None = None,
                 control_period_steps: int = 4, task: str | None = None, port: int | None = None,
                 max_batch: int = 16, batch_wait_ms: float = 5.0, startup_timeout_s: float = 300.0,
                 stop_timeout_s: float = 10.0, log_path: str | None = None, latency_ms: float = 0.0):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stop_timeout_s = stop_timeout_s
        cmd = [sys.executable, "-m", "robot_rl.cli", "teacher", "serve", "--backend", backend,
               "--host", "127.0.0.1", "--port", str(self.port), "--control-period-steps", str(control_period_steps),
               "--max-batch", str(max_batch), "--batch-wait-ms", str(batch_wait_ms), "--parent-pid", str(os.getpid())]
        for flag, value in (("--model", model), ("--unnorm-key", unnorm_key), ("--task", task),
                            ("--latency-ms", latency_ms or None)):
            if value is not None:
                cmd += [flag, str(value)]
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        # Own session: a Ctrl-C in the terminal reaches the trainer, which then stops the server itself.
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_healthy(startup_timeout_s, log_path)

    def _wait_healthy(self, timeout_s: float, log_path: str | None) -> None:
        try:
            wait_healthy(self.url, timeout_s, self.proc, log_path)
        except RuntimeError:
            if self.proc.poll() is None:  # timed out: the server is still starting, stop it
                self.stop()
            raise

    def stop(self) -> None:
        """End the server (idempotent)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()
            self._log = subprocess.DEVNULL

    def __enter__(self) -> "SpawnedServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
