"""``teacher.kind=openpi``: train against any openpi policy server (openpi's ``serve_policy.py``, or ours).

:class:`OpenpiTeacher` is a :class:`~robot_rl.teachers.remote.ServedTeacher` (timeouts, retries, back-off,
fault counters, asynchronous ``submit`` and latency stamps are shared with the HTTP client) over openpi's
WebSocket protocol, as ``openpi-client`` 0.1.2's ``websocket_client_policy.py`` speaks it (codec:
:mod:`robot_rl.teachers.openpi_wire`): connect to ``ws://host:port`` with ``compression=None``, read the
server's msgpack metadata, then one msgpack observation frame per row and one action frame back. It imports
only numpy, msgpack and websockets.

Observation (our teacher view -> the server's keys, :data:`LIBERO_KEYS` by default, each configurable and
``None`` for "not sent"): ``image`` ``(H, W, 3) uint8`` -> ``observation/image``; ``wrist_image`` ->
``observation/wrist_image`` (robot_rl renders one camera: this key carries a zero image of the same size, as
openpi fills a camera a robot lacks with zeros); ``state`` ``(S,) float32`` (the privileged state of
:data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT`; a VLA trained on LIBERO expects its own 8-D proprio instead) ->
``observation/state``; ``instruction`` -> ``prompt``; ``task_id`` (the env id; our scripted server reads it) ->
not sent by default.

Action (the server's chunk -> our ``pd_ee_delta_pose`` delta over ``D`` env steps), :func:`chunk_to_delta`:

- ``actions`` ``(H, dim)``, ``dim >= 7``: the first 7 columns are ``[dx, dy, dz, droll, dpitch, dyaw,
  gripper]`` (openpi's LIBERO and DROID outputs slice the model's padded actions to the robot's);
- each row spans ``action_steps`` (``k``) env steps (openpi: one row per control step, ``k = 1``; our server's
  openpi endpoint: one row per teacher period, ``k = D``, reported in its metadata as ``openpi.action_steps``);
- the delta over ``D`` env steps is the sum of the rows over the first ``D`` env steps, each weighted by the
  part of its ``k`` steps that falls in them (``ceil(D / k)`` rows; the last one partly when ``k`` does not
  divide ``D``), so position and rotation add up as the controller integrates them; the gripper is the last
  of those rows' (an absolute command);
- ``convention`` says the units of a row: ``"env"`` is ours (normalized ``pd_ee_delta_pose``: 1.0 = 0.1 m /
  0.1 rad in the controller's sign, gripper -1 closed .. +1 open; our server answers in it), ``"openvla"`` is
  physical (m, rad in the robot-base frame, gripper 0 closed .. 1 open), mapped by
  :func:`~robot_rl.teachers.wire.openvla_to_env` after the sum (it is linear in position and rotation).

A chunk with fewer rows than ``ceil(D / k)`` or fewer than 7 columns is a failed answer ("no guidance").
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import threading
import time
from typing import Callable, Literal, Mapping

import numpy as np
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from robot_rl.geometry import ACTION_DIM, GRIPPER_INDEX

from . import openpi_wire
from .base import TeacherRequest, TeacherSpec
from .remote import ServedTeacher, TeacherServerError, served_period
from .wire import API_KEY_ENV, openvla_to_env

log = logging.getLogger("robot_rl.teachers.openpi")

#: Our teacher view's fields -> openpi's LIBERO observation keys (openpi ``examples/libero/main.py``).
LIBERO_KEYS: dict[str, str | None] = {"image": "observation/image", "wrist_image": "observation/wrist_image",
                                      "state": "observation/state", "instruction": "prompt", "task_id": None}
#: Action conventions a server's rows may be in (see the module docstring).
CONVENTIONS = ("env", "openvla")
#: Default largest frame the client accepts from a server (bytes): a chunk of actions is small.
DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024
#: websockets >= 17.1 warns when a connection outlives no ``with`` block unless ``legacy=True`` says it is meant to
#: (this client keeps one connection per query thread); older releases have no such flag.
_LONG_LIVED = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}


def chunk_to_delta(actions: object, control_period_steps: int, action_steps: int,
                   convention: Literal["env", "openvla"] = "env") -> np.ndarray:
    """One row of the env convention from a server's action chunk (the module docstring's mapping).

    Args:
        actions: the reply's ``actions``, ``(H, dim)`` numbers with ``dim >= 7`` (a ``(dim,)`` row is ``H = 1``).
        control_period_steps: ``D``, env steps the teacher's answer spans.
        action_steps: ``k``, env steps one row spans.
        convention: ``"env"`` or ``"openvla"``, the units of a row.

    Returns:
        ``(7,) float32``: the position and rotation summed over the first ``D`` env steps, in normalized units
        (may reach ``D`` in magnitude), and the gripper of the last row used, in ``[-1, 1]``.

    Raises:
        ValueError: ``actions`` not numbers of rank 1 or 2, fewer than 7 columns, fewer than ``ceil(D / k)``
            rows, or an unknown ``convention``.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: expected one of {', '.join(CONVENTIONS)}, got {convention!r}")
    a = np.asarray(actions, dtype=np.float64)
    a = a[None] if a.ndim == 1 else a
    if a.ndim != 2 or a.shape[1] < ACTION_DIM:
        raise ValueError(f"actions: expected (H, >= {ACTION_DIM}) numbers, got shape {a.shape}")
    d, k = int(control_period_steps), int(action_steps)
    rows = math.ceil(d / k)
    if a.shape[0] < rows:
        raise ValueError(f"actions: the chunk has {a.shape[0]} rows; D = {d} env steps at {k} per row need {rows}")
    weights = np.array([(min((j + 1) * k, d) - j * k) / k for j in range(rows)])
    delta = (weights[:, None] * a[:rows, :ACTION_DIM]).sum(axis=0)
    delta[GRIPPER_INDEX] = a[rows - 1, GRIPPER_INDEX]
    return openvla_to_env(delta) if convention == "openvla" else delta.astype(np.float32)


def observation_of(request: TeacherRequest, row: int, keys: Mapping[str, str | None]) -> dict:
    """Row ``row`` of ``request`` as an openpi observation map under ``keys`` (:data:`LIBERO_KEYS`' fields).

    A field whose key is ``None``, or that the request does not carry, is not sent; ``wrist_image`` carries a
    zero image the size of ``image``; the request's ``unnorm_key`` goes under ``"unnorm_key"``.
    """
    obs: dict = {}
    if keys.get("image") and request.images is not None:
        obs[keys["image"]] = np.ascontiguousarray(request.images[row], dtype=np.uint8)
    if keys.get("wrist_image") and request.images is not None:
        obs[keys["wrist_image"]] = np.zeros_like(request.images[row], dtype=np.uint8)
    if keys.get("state") and request.states is not None:
        obs[keys["state"]] = np.ascontiguousarray(request.states[row], dtype=np.float32)
    if keys.get("instruction"):
        obs[keys["instruction"]] = request.instructions[row]
    if keys.get("task_id") and request.task_ids is not None:
        obs[keys["task_id"]] = request.task_ids[row]
    if request.unnorm_key is not None:
        obs["unnorm_key"] = request.unnorm_key
    return obs


class OpenpiTeacher(ServedTeacher):
    """A :class:`~robot_rl.teachers.base.Teacher` answered by an openpi policy server over its WebSocket.

    Args:
        url: ``ws://host:port`` (or ``wss://``; ``http://`` / ``https://`` are read as those; a path is sent as
            given, openpi's server ignores it).
        observation_keys: our view's fields (``image``, ``wrist_image``, ``state``, ``instruction``,
            ``task_id``) -> the server's observation keys (``None``: not sent); missing fields keep
            :data:`LIBERO_KEYS`' key. ``image`` / ``state`` mapped make the spec need images / states.
        convention: ``"env"`` or ``"openvla"``: the units of the server's action rows.
        action_steps: ``k``, env steps one row of the server's chunk spans (``None``: the server's metadata
            ``openpi.action_steps``, which our server reports, else 1, openpi's one row per control step).
        control_period_steps: ``D`` (``None``: the metadata's ``control_period_steps``, else 4).
        api_key: sent as ``Authorization: Api-Key <key>`` (openpi's header; default:
            ``$ROBOT_RL_TEACHER_API_KEY``).
        timeout_s: per-row timeout for the answer (s), also the connection's open timeout.
        retries: extra attempts after a refused connection, a timeout or a dropped connection.
        connect_timeout_s: how long the constructor waits for the server to come up (s).
        backoff_s: after a failed query, answer "no guidance" without trying for this long (s).
        max_in_flight: concurrent connections (rows of a query are sent concurrently, one connection per query
            thread, as openpi's server answers one request at a time per connection).
        max_frame_bytes: largest frame accepted from the server (bytes).
        unnorm_key: sent as the observation's ``unnorm_key`` when set (our server's openvla backend reads it;
            openpi's input transforms drop keys they do not know).
        clock: as :class:`~robot_rl.teachers.remote.ServedTeacher`'s.

    Attributes:
        metadata: the map the server sent on connect (openpi's default is ``{}``).
        spec: ``model_id`` (the metadata's, else ``"openpi:<url>"``), ``D``, needs_image / needs_state from the
            mapping.

    An error frame (openpi's text frame then close 1011) for the first query this client makes raises
    :class:`~robot_rl.teachers.remote.TeacherServerError` with the server's text (the mapping or the
    configuration is wrong: a missing key, say); once a query has succeeded, one counts as a failed query
    ("no guidance") like a dropped connection, so a transient server fault never stops training.

    Raises:
        ConnectionError: no server accepted the WebSocket within ``connect_timeout_s``.
        TeacherServerError: the server refused the handshake (e.g. 401, the API key).
        ValueError: an unknown field in ``observation_keys``, an unknown ``convention``, ``action_steps < 1``, a
            URL that is not ``ws(s)://`` or ``http(s)://``, and :class:`ServedTeacher`'s.
    """

    _FAILURES = (OSError, WebSocketException, TimeoutError, ValueError, KeyError, TypeError)
    #: Exceptions of one attempt that a retry may cure (a fresh connection is opened for it).
    _TRANSIENT = (OSError, WebSocketException, TimeoutError)

    def __init__(self, url: str = "ws://127.0.0.1:8000", *, observation_keys: Mapping[str, str | None] | None = None,
                 convention: Literal["env", "openvla"] = "env", action_steps: int | None = None,
                 control_period_steps: int | None = None, api_key: str | None = None, timeout_s: float = 5.0,
                 retries: int = 1, connect_timeout_s: float = 30.0, backoff_s: float = 1.0, max_in_flight: int = 8,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, unnorm_key: str | None = None,
                 clock: Callable[[], float] = time.time):
        super().__init__(timeout_s=timeout_s, retries=retries, unnorm_key=unnorm_key, backoff_s=backoff_s,
                         max_in_flight=max_in_flight, clock=clock)
        url = "ws" + url[4:] if url.startswith(("http://", "https://")) else url  # one teacher.url for both kinds
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"url: an openpi server is ws://host:port (or wss://), got {url!r}")
        unknown = set(observation_keys or {}) - set(LIBERO_KEYS)
        if unknown:
            raise ValueError(f"observation_keys: unknown field(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(LIBERO_KEYS)}")
        if convention not in CONVENTIONS:
            raise ValueError(f"convention: expected one of {', '.join(CONVENTIONS)}, got {convention!r}")
        if action_steps is not None and int(action_steps) < 1:
            raise ValueError(f"action_steps: must be >= 1, got {action_steps}")
        self.url = url.rstrip("/")
        self.keys = {**LIBERO_KEYS, **(observation_keys or {})}
        self.convention = convention
        self.max_frame_bytes = int(max_frame_bytes)
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._headers = {openpi_wire.AUTHORIZATION_HEADER: f"{openpi_wire.API_KEY_SCHEME} {key}"} if key else None
        self._connections: list[ClientConnection] = []
        self._connections_lock = threading.Lock()
        self._answered = False

        self.metadata = self._wait_for_server(connect_timeout_s)
        served = self.metadata.get("openpi") if isinstance(self.metadata.get("openpi"), dict) else {}
        self.action_steps = int(action_steps or served.get("action_steps") or 1)
        d = served_period(control_period_steps, self.metadata.get("control_period_steps"))
        self.spec = TeacherSpec(model_id=str(self.metadata.get("model_id") or f"openpi:{self.url}"),
                                control_period_steps=d, needs_image=bool(self.keys["image"]),
                                needs_state=bool(self.keys["state"]))

    # -- connections (one per query thread) ------------------------------------------------------

    def _open(self) -> tuple[ClientConnection, dict]:
        """A new connection and the metadata the server sent on it (``InvalidStatus``: the handshake's refusal)."""
        ws = connect(self.url, compression=None, max_size=self.max_frame_bytes, open_timeout=self.timeout_s,
                     additional_headers=self._headers, **_LONG_LIVED)
        try:
            meta = openpi_wire.unpackb(ws.recv(timeout=self.timeout_s))
        except BaseException:
            ws.close()
            raise
        with self._connections_lock:
            self._connections.append(ws)
        return ws, meta if isinstance(meta, dict) else {}

    def _wait_for_server(self, connect_timeout_s: float) -> dict:
        deadline = time.monotonic() + connect_timeout_s
        while True:
            try:
                ws, meta = self._open()
            except InvalidStatus as exc:
                body = exc.response.body.decode(errors="replace")[:300] if exc.response.body else ""
                raise TeacherServerError(f"{self.url} refused the WebSocket ({exc.response.status_code}): {body} "
                                         f"(API key: ${API_KEY_ENV} or api_key=)") from None
            except (OSError, WebSocketException, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"no openpi server accepted a WebSocket at {self.url} within "
                                          f"{connect_timeout_s:.0f} s ({exc})") from None
                time.sleep(0.2)
                continue
            self._local.ws = ws
            return meta

    def _connection(self) -> ClientConnection:
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws, _ = self._open()
            self._local.ws = ws
        return ws

    def _drop(self) -> None:
        """Close this thread's connection (after a failure: a late reply must not answer the next request)."""
        ws = getattr(self._local, "ws", None)
        self._local.ws = None
        if ws is not None:
            ws.close()
            with self._connections_lock:
                if ws in self._connections:
                    self._connections.remove(ws)

    # -- queries -------------------------------------------------------------------------------

    def _infer(self, obs: dict) -> dict:
        """One observation frame out, one action frame back, on this thread's connection (retried)."""
        frame = openpi_wire.packb(obs)

        def attempt() -> object:
            try:
                ws = self._connection()
                ws.send(frame)
                return ws.recv(timeout=self.timeout_s)
            except BaseException:
                self._drop()
                raise

        reply = self._retrying(attempt, self._TRANSIENT)
        if isinstance(reply, str):  # openpi's error frame: the text, then close 1011
            self._drop()
            if not self._answered:
                raise TeacherServerError(f"the openpi server at {self.url} refused the first query:\n{reply[:2000]}")
            raise ValueError(f"the openpi server answered an error: {reply[:500]}")
        out = openpi_wire.unpackb(reply)
        if not isinstance(out, dict) or "actions" not in out:
            raise ValueError(f"the openpi server's reply has no 'actions' (got {type(out).__name__})")
        return out

    def _exchange(self, request: TeacherRequest, t0: float):
        def one(i: int) -> tuple[np.ndarray, float]:
            out = self._infer(observation_of(request, i, self.keys))
            row = chunk_to_delta(out["actions"], self.spec.control_period_steps, self.action_steps, self.convention)
            return row, time.perf_counter()

        actions, done = self._per_row(len(request), one)
        self._answered = True
        return actions.astype(np.float32), None, self.spec.model_id, done - t0, done

    def close(self) -> None:
        """Stop the query threads and close every connection."""
        super().close()
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for ws in connections:
            ws.close()


__all__ = ["CONVENTIONS", "LIBERO_KEYS", "OpenpiTeacher", "chunk_to_delta", "observation_of"]
