"""The teacher server: any :class:`~robot_rl.teachers.base.Teacher` behind HTTP (FastAPI + uvicorn).

``robot-rl teacher serve --config configs/teacher/*.yaml`` runs :func:`serve_config` (the config:
:mod:`robot_rl.teachers.config`), which runs :func:`serve` (or Ray Serve's). Routes (wire format and
action conventions in :mod:`robot_rl.teachers.wire`):

- ``POST /act``: OpenVLA's reference protocol, so a client written for OpenVLA's
  ``vla-scripts/deploy.py`` works unchanged (including its ``{"encoded": ...}`` double-encoded
  variant). Our additions, ignored by OpenVLA clients: optional ``state`` ``(S,)`` and ``task_id``
  for backends that plan from privileged state. It has no scratchpad field: a backend in Notes-to-Self mode answers
  it as an episode's first query (empty scratchpad), and its notes are not returned.
- ``POST /act/batch``: ``B`` rows in one request, with optional per-row ``obs_steps`` ``(B,) int``,
  ``obs_times_s`` ``(B,) float`` and ``scratchpads`` (``B`` strings of at most
  :data:`~robot_rl.teacher_protocol.MAX_SCRATCHPAD_CHARS` characters; passed to the backend); answers
  ``{"actions": (B, 7), "latency_s", "latencies_s": (B,), "backend_latency_s", "notes": B strings or null,
  "model_id", "batch_rows"}`` in the env convention. ``notes`` are the backend's, passed through (``""``: no note
  for that row; null: the backend writes none, ``writes_notes`` false in ``/metadata``).
- ``GET /healthz`` and ``GET /metadata`` (the backend's :class:`~robot_rl.teachers.base.TeacherSpec`
  fields at the top level, plus the server's).
- openpi's policy-server protocol on the same port: a WebSocket on any path (openpi's clients connect to
  ``ws://host:port``, path ``/``), so ``openpi_client.websocket_client_policy.WebsocketClientPolicy(host,
  port).infer(obs)`` works unchanged (:func:`openpi_body`, :func:`openpi_reply`; codec:
  :mod:`robot_rl.teachers.openpi_wire`). The same port rather than a second one: one process, one
  batcher, one API key and one ``/healthz`` for both protocols, as openpi's own server serves ``/healthz``
  beside its WebSocket. A plain HTTP request on ``/`` gets a 426 saying so.

The backend is asked only through its :class:`~robot_rl.teachers.base.Teacher` protocol: what it
reads comes from ``teacher.spec`` (a backend that needs no image or state is never passed one, whatever
the client sent), and every request goes through ``teacher.check_request`` before batching.

Unlike the reference server, which handles one request at a time and answers errors with HTTP 200
and the string ``"error"``:

- concurrent requests are gathered by :class:`DynamicBatcher` into one backend call of up to
  ``max_batch`` rows, waiting at most ``batch_wait_ms`` for more;
- bad input is a 4xx whose JSON body names the field (FastAPI's ``{"detail": [{"loc": [...],
  "msg": ...}]}``), a backend exception is a 500 with its message, and the server keeps serving;
- a client that disconnects does not disturb the other requests of its batch;
- it binds 127.0.0.1 unless told otherwise, and with an API key every route but ``/healthz``
  needs the ``X-API-Key`` header (401 otherwise; the openpi WebSocket also accepts openpi's
  ``Authorization: Api-Key <key>``).

The openpi endpoint, unlike openpi's ``serving/websocket_policy_server.py``: requests from every connection
join the same :class:`DynamicBatcher` as ``/act`` (upstream answers one connection at a time), observations
are validated by the same layer as ``/act`` (:class:`ActBody`, ``check_request``) and a refused one gets an
error frame naming the observation key, and frames over ``server.openpi_max_frame_mb`` are refused with close
code 1009 (upstream has no limit).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import re
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, Awaitable, Callable

import json_numpy
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from robot_rl.teacher_protocol import MAX_SCRATCHPAD_CHARS, PROTOCOL_VERSION, check_wire_shape

from . import openpi_wire
from .base import Teacher, TeacherRequest, TeacherRequestError, TeacherResponse
from .http_protocol import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_HEADER_BYTES, limited_httptools_protocol
from .wire import (
    API_KEY_HEADER,
    ENV_CONVENTION,
    OPENVLA_CONVENTION,
    check_array,
    env_to_openvla,
    nested_latency,
    openvla_json,
)

log = logging.getLogger("robot_rl.teachers.server")

#: Default request body limit: 32 images of 224x224x3 as base64 are ~6.4 MB.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
#: Default openpi frame limit: two 224x224x3 uint8 images are 0.3 MB of msgpack; 8 MiB leaves a wide margin
#: (three 480x640 cameras still fit). ``server.openpi_max_frame_mb`` / ``--openpi-max-frame-mb``.
DEFAULT_OPENPI_MAX_FRAME_BYTES = 8 * 1024 * 1024
#: Default longest time a request body may take to arrive (s); a slower one gets 408. ``server.body_timeout_s``.
DEFAULT_BODY_TIMEOUT_S = 30.0
#: Default most request-body bytes buffered at once over all requests; beyond it a request gets 503.
#: ``server.max_inflight_body_mb``.
DEFAULT_MAX_INFLIGHT_BODY_BYTES = 256 * 1024 * 1024
#: Longest text of an echoed input or message in a 422 (characters); the rest is cut with "...".
MAX_ECHO_CHARS = 300
#: The protocol version ``/metadata`` reports is :data:`robot_rl.teacher_protocol.PROTOCOL_VERSION` (re-exported here).


# ----------------------------------------------------------------------------------------------
# Request bodies (pydantic: FastAPI turns a ValidationError into a 422 naming the field)


def _decode_numpy(value: Any) -> Any:
    """json-numpy object -> ndarray (no pickle: object dtypes cannot be built from a buffer; the shape must be
    given in full, no -1).
    """
    if isinstance(value, np.ndarray):  # already decoded (json_numpy.patch() active in this process)
        return value
    if isinstance(value, dict) and "__numpy__" in value:
        try:
            check_wire_shape(value.get("shape"))
            return json_numpy.object_hook(value)
        except Exception as exc:  # bad base64, dtype or shape
            raise ValueError(f"not a valid json-numpy array: {exc}") from None
    raise ValueError("expected a json-numpy array {'__numpy__': base64, 'dtype': ..., 'shape': [...]}")


def checked_array(value: Any, field: str, *, ndim: int, dtype_kind: str | None = None,
                  channels: int | None = None) -> np.ndarray:
    """The server's one check of an array field, whichever route or backend it is for.

    Args:
        value: the decoded field (anything: it is checked, not trusted).
        field: the name the client sent it under (for the message).
        ndim: the rank it must have.
        dtype_kind: ``"u"`` for uint8 images, else any numeric dtype.
        channels: the size its last dimension must have (3: RGB images), or ``None``.

    Returns:
        ``value``, a numeric array of rank ``ndim`` with every dimension >= 1 and only finite numbers.

    Raises:
        ValueError: naming ``field``: not a numeric array, wrong dtype or rank (as
            :func:`robot_rl.teacher_protocol.check_array`), a dimension < 1, a wrong channel count, NaN or inf.
    """
    value = check_array(value, field, dtype_kind=dtype_kind, ndim=ndim)
    if min(value.shape, default=1) < 1:
        raise ValueError(f"{field}: every dimension must be >= 1, got shape {tuple(value.shape)}")
    if channels is not None and value.shape[-1] != channels:
        raise ValueError(f"{field}: expected {channels} channels (last dimension), got shape {tuple(value.shape)}")
    if value.dtype.kind in "fc" and not np.isfinite(value).all():
        raise ValueError(f"{field}: holds NaN or inf")
    return value


def _as_array(value: Any, field: str, dtype: Any = None) -> Any:
    """A plain JSON list -> ndarray (``dtype``: numpy's inference); other values are json-numpy objects."""
    if not isinstance(value, list):
        return _decode_numpy(value)
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:  # strings, ragged rows, objects, ints past float range
        raise ValueError(f"{field}: not a rectangular array of numbers ({type(exc).__name__})") from None


def _image(value: Any) -> np.ndarray:
    return checked_array(_decode_numpy(value), "image", dtype_kind="u", ndim=3, channels=3)


def _images(value: Any) -> np.ndarray:
    return checked_array(_decode_numpy(value), "images", dtype_kind="u", ndim=4, channels=3)


def _numeric(value: Any, field: str, ndim: int) -> np.ndarray:
    """A json-numpy array or a plain JSON list of numbers -> ``float32`` array of rank ``ndim``."""
    value = checked_array(_as_array(value, field, np.float64), field, ndim=ndim)
    with np.errstate(over="ignore"):
        out = value.astype(np.float32)
    return checked_array(out, field, ndim=ndim)  # finite in float64 but past float32's range: inf


def _vector(value: Any) -> np.ndarray:
    return _numeric(value, "state", 1)


def _matrix(value: Any) -> np.ndarray:
    return _numeric(value, "states", 2)


def _row_values(value: Any, field: str) -> np.ndarray:
    """A json-numpy array or a plain JSON list -> a rank-1 numeric array (dtype kept: steps stay integers)."""
    return checked_array(_as_array(value, field), field, ndim=1)


def _steps(value: Any) -> np.ndarray:
    return _row_values(value, "obs_steps")


def _times(value: Any) -> np.ndarray:
    return _row_values(value, "obs_times_s")


Image = Annotated[np.ndarray, BeforeValidator(_image)]
Images = Annotated[np.ndarray, BeforeValidator(_images)]
Vector = Annotated[np.ndarray, BeforeValidator(_vector)]
Matrix = Annotated[np.ndarray, BeforeValidator(_matrix)]
Steps = Annotated[np.ndarray, BeforeValidator(_steps)]
Times = Annotated[np.ndarray, BeforeValidator(_times)]
Text = Annotated[str, Field(min_length=1)]
#: One row's scratchpad text: a string of at most MAX_SCRATCHPAD_CHARS characters ("" is an empty scratchpad).
ScratchpadText = Annotated[str, Field(max_length=MAX_SCRATCHPAD_CHARS)]


class ActBody(BaseModel):
    """``POST /act`` body: OpenVLA's fields plus optional privileged state (extra keys ignored, as OpenVLA does)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="ignore")

    image: Image | None = None
    instruction: Text
    unnorm_key: str | None = None
    state: Vector | None = None
    task_id: str | None = None

    def to_request(self) -> TeacherRequest:
        """The body as a one-row :class:`TeacherRequest` (``B = 1``).

        Raises:
            RequestValidationError: a 422 naming the body field (``image``, ``state``, ...) the request refused.
        """
        try:
            return TeacherRequest(
                instructions=[self.instruction],
                images=None if self.image is None else self.image[None],
                states=None if self.state is None else self.state[None],
                task_ids=None if self.task_id is None else [self.task_id],
                unnorm_key=self.unnorm_key,
            )
        except ValueError as exc:
            raise _request_error(exc, ACT_FIELDS) from None


class BatchBody(BaseModel):
    """``POST /act/batch`` body: ``B`` rows (unknown keys are refused, naming the key).

    ``obs_steps`` (env steps, integers >= 0) and ``obs_times_s`` (seconds on the client's clock) are
    json-numpy arrays or JSON lists of ``B`` numbers; ``scratchpads`` is a JSON list of ``B`` strings of at most
    :data:`~robot_rl.teacher_protocol.MAX_SCRATCHPAD_CHARS` characters. They reach the backend in the request.
    A field with another number of rows than ``instructions`` is a 422 naming that field.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    instructions: list[Text] = Field(min_length=1)
    images: Images | None = None
    states: Matrix | None = None
    task_ids: list[str] | None = None
    scratchpads: list[ScratchpadText] | None = None
    unnorm_key: str | None = None
    obs_steps: Steps | None = None
    obs_times_s: Times | None = None

    def to_request(self) -> TeacherRequest:
        """The :class:`TeacherRequest`.

        Raises:
            RequestValidationError: a 422 naming the field: a per-row field whose row count differs from
                ``instructions``'s, a bad ``obs_steps`` / ``obs_times_s``.
        """
        n = len(self.instructions)
        for name in ("images", "states", "task_ids", "scratchpads", "obs_steps", "obs_times_s"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise _field_error(name, f"{name}: has {len(value)} rows but instructions has {n}")
        try:
            return TeacherRequest(
                instructions=list(self.instructions), images=self.images, states=self.states,
                task_ids=self.task_ids, scratchpads=self.scratchpads, unnorm_key=self.unnorm_key,
                obs_steps=self.obs_steps, obs_times_s=self.obs_times_s,
            )
        except ValueError as exc:
            raise _request_error(exc) from None


# ----------------------------------------------------------------------------------------------
# Backend calls shared by the uvicorn server and the Ray Serve deployment


def _signature(req: TeacherRequest) -> tuple:
    """Requests with equal signatures can be stacked into one backend call."""
    img = None if req.images is None else req.images.shape[1:]
    st = None if req.states is None else req.states.shape[1]
    optional = tuple(getattr(req, name) is None for name in ("task_ids", "scratchpads", "obs_steps", "obs_times_s"))
    return (img, st, *optional, req.unnorm_key)


def _concat(reqs: list[TeacherRequest]) -> TeacherRequest:
    def cat_list(name):
        lists = [getattr(r, name) for r in reqs]
        return None if lists[0] is None else [x for lst in lists for x in lst]

    def cat_array(name):
        return None if getattr(reqs[0], name) is None else np.concatenate([getattr(r, name) for r in reqs])

    return TeacherRequest(
        instructions=cat_list("instructions"),
        images=cat_array("images"),
        states=cat_array("states"),
        task_ids=cat_list("task_ids"),
        scratchpads=cat_list("scratchpads"),
        unnorm_key=reqs[0].unnorm_key,
        obs_steps=cat_array("obs_steps"),
        obs_times_s=cat_array("obs_times_s"),
    )


def run_batched(teacher: Teacher, requests: list[TeacherRequest],
                max_batch: int) -> tuple[list[TeacherResponse | Exception], int]:
    """Answer several requests with as few backend calls as possible.

    Compatible requests (same image size, state width, optional fields and ``unnorm_key``) are
    concatenated and answered in chunks of at most ``max_batch`` rows; the answers are split back
    per request. When a combined call raises, each of its requests is retried alone, so one bad
    request cannot fail its neighbours.

    Returns:
        ``(results, calls)``: one item per request, a :class:`TeacherResponse` holding that request's
        ``B_i`` rows of every per-row field (actions, latencies, notes, stamps) and
        ``extras["batch_rows"]`` the rows of the backend call that answered it, or the ``Exception``
        the backend raised for it (a backend answering the wrong number of rows is one); and the
        number of backend calls made.
    """
    out: list[TeacherResponse | Exception | None] = [None] * len(requests)
    calls = [0]
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(_signature(r), []).append(i)
    for members in groups.values():
        chunk: list[int] = []
        rows = 0
        for i in members + [None]:
            if i is not None and (not chunk or rows + len(requests[i]) <= max_batch):
                chunk.append(i)
                rows += len(requests[i])
                continue
            _answer(teacher, requests, chunk, out, calls)
            chunk, rows = ([i], len(requests[i])) if i is not None else ([], 0)
    return out, calls[0]  # type: ignore[return-value]


def _answer(teacher: Teacher, requests: list[TeacherRequest], chunk: list[int], out: list, calls: list[int]) -> None:
    reqs = [requests[i] for i in chunk]
    calls[0] += 1
    rows = sum(len(r) for r in reqs)
    try:
        response = teacher.act(_concat(reqs) if len(reqs) > 1 else reqs[0])
        if len(response) != rows:
            raise RuntimeError(f"the backend answered {len(response)} rows for {rows}")
    except Exception as exc:
        if len(chunk) > 1:
            for i in chunk:
                _answer(teacher, requests, [i], out, calls)
        else:
            out[chunk[0]] = exc
        return
    raw = response.extras.get("raw_actions")
    start = 0
    for i, r in zip(chunk, reqs):
        stop = start + len(r)
        extras: dict[str, Any] = {"batch_rows": rows}
        if raw is not None:
            extras["raw_actions"] = np.asarray(raw)[start:stop]
        out[i] = response.rows(start, stop, **extras)
        start = stop


class DynamicBatcher:
    """Gathers concurrent requests into backend calls (the uvicorn server's batching).

    The first waiting request opens a batch; more requests join until it holds ``max_batch``
    rows or ``wait_s`` has passed since it opened. The backend runs in one worker thread, so the
    event loop keeps accepting requests (which queue for the next batch) while a batch computes.

    Args:
        teacher: the backend.
        max_batch: most rows per backend call (``--max-batch``).
        wait_s: longest a request waits for company (``--batch-wait-ms`` / 1000).
    """

    def __init__(self, teacher: Teacher, max_batch: int = 16, wait_s: float = 0.005):
        if max_batch < 1 or wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and wait_s >= 0, got {max_batch}, {wait_s}")
        self.teacher, self.max_batch, self.wait_s = teacher, int(max_batch), float(wait_s)
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher-backend")
        self.backend_calls = 0  #: backend calls so far (batching is visible as calls < requests)
        self.requests_served = 0

    def start(self) -> None:
        """Start the gathering task on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Cancel the gathering task and shut the backend's thread down (pending calls are cancelled)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, request: TeacherRequest) -> TeacherResponse:
        """Queue ``request`` and wait for its answer; re-raises the backend's exception for it."""
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.start() was not called")
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((request, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            rows = len(items[0][0])
            deadline = loop.time() + self.wait_s
            while rows < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                items.append(item)
                rows += len(item[0])
            items = [(r, f) for r, f in items if not f.done()]  # clients that went away
            if not items:
                continue
            results, calls = await loop.run_in_executor(
                self._executor, run_batched, self.teacher, [r for r, _ in items], self.max_batch
            )
            self.backend_calls += calls
            for (_, fut), res in zip(items, results):
                self.requests_served += 1
                if fut.done():
                    continue
                if isinstance(res, Exception):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)


# ----------------------------------------------------------------------------------------------
# The FastAPI app


@dataclass
class ServerInfo:
    """What ``GET /metadata`` reports about the backend."""

    backend: str
    teacher: Teacher
    max_batch: int
    batch_wait_ms: float

    def metadata(self) -> dict:
        """``{"protocol_version", "backend", "action_convention", "max_batch", "batch_wait_ms"}`` plus the
        backend's spec (:meth:`TeacherSpec.to_metadata <robot_rl.teachers.base.TeacherSpec.to_metadata>`:
        ``model_id``, ``control_period_steps``, ``needs_image``, ``needs_state``, ``state_dim``,
        ``image_size``, ``unnorm_keys``, ``writes_notes``).
        """
        return {
            "protocol_version": PROTOCOL_VERSION,
            "backend": self.backend,
            **self.teacher.spec.to_metadata(),
            "action_convention": {"/act": OPENVLA_CONVENTION, "/act/batch": ENV_CONVENTION, "openpi": ENV_CONVENTION},
            "max_batch": self.max_batch,
            "batch_wait_ms": self.batch_wait_ms,
        }


Dispatch = Callable[[TeacherRequest], Awaitable[TeacherResponse]]


def _body_errors(exc: ValidationError) -> RequestValidationError:
    """Pydantic errors as FastAPI's 422 body: ``loc`` starts with ``"body"``, inputs are not echoed back."""
    return RequestValidationError(
        [{"type": e["type"], "loc": ("body", *e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)]
    )


def _field_error(field: str, msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": msg}])


#: ``POST /act`` body names of :class:`TeacherRequest` fields (one row: singular names).
ACT_FIELDS = {"images": "image", "states": "state", "task_ids": "task_id", "instructions": "instruction"}


def _request_error(exc: ValueError, fields: dict[str, str] | None = None) -> RequestValidationError:
    """A 422 naming the body field of a refused request (``fields`` maps request fields to body names)."""
    text = str(exc)
    if isinstance(exc, TeacherRequestError):
        field, msg = exc.field, exc.message
    else:  # "field: message" by convention, or TeacherRequest's "field must be ..."
        head = re.match(r"([A-Za-z_]+)(?::| must )", text)
        field = head.group(1) if head else "body"
        msg = text[len(field):].lstrip(": ") if head else text
    name = (fields or {}).get(field, field)
    return _field_error(name, f"{name}: {msg}" if name != "body" else msg)


def check_against_backend(info: ServerInfo, request: TeacherRequest,
                          fields: dict[str, str] | None = None) -> TeacherRequest:
    """The request the backend is given: without what its spec does not read, checked by its
    :meth:`~robot_rl.teachers.base.Teacher.check_request`.

    Raises:
        RequestValidationError: a 422 naming the body field (``fields`` maps request field names to
            the route's body names, e.g. :data:`ACT_FIELDS`).
    """
    request = info.teacher.spec.trim(request)
    try:
        info.teacher.check_request(request)
    except ValueError as exc:
        raise _request_error(exc, fields) from None
    return request


# ----------------------------------------------------------------------------------------------
# openpi's protocol (the WebSocket endpoint)

#: openpi observation keys (openpi's LIBERO example, ``examples/libero/main.py``) -> the ``POST /act`` body
#: fields they fill, so an observation is validated by :class:`ActBody` as an ``/act`` body is. ``task_id`` and
#: ``unnorm_key`` are ours, as on ``/act``; other keys (``observation/wrist_image``, ...) are ignored.
OPENPI_KEYS = {"observation/image": "image", "observation/state": "state", "prompt": "instruction",
               "task_id": "task_id", "unnorm_key": "unnorm_key"}
#: The openpi key of each ``/act`` body field and :class:`TeacherRequest` field, for error messages.
OPENPI_NAMES = {body: key for key, body in OPENPI_KEYS.items()} | {
    "images": "observation/image", "states": "observation/state", "instructions": "prompt", "task_ids": "task_id"}
#: Text of the 426 a plain HTTP request on ``/`` gets (the openpi endpoint is a WebSocket).
OPENPI_HTTP_HINT = ("this is the teacher server's openpi endpoint: a WebSocket (ws://host:port, openpi-client's "
                    "WebsocketClientPolicy(host, port)); plain HTTP clients use POST /act, POST /act/batch, "
                    "GET /metadata, GET /healthz")


def openpi_body(obs: Any) -> ActBody:
    """The ``/act`` body an openpi observation stands for (one row; validated by :class:`ActBody`).

    Args:
        obs: the decoded frame: ``{"observation/image": (H, W, 3) uint8, "observation/state": (S,) numbers,
            "prompt": str, "task_id": str, "unnorm_key": str}``, each optional here (what the backend needs is
            checked after, by :func:`check_against_backend`); the scripted backend reads the privileged state
            in the layout of :data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT` from ``observation/state`` and the
            task from ``task_id`` (or the server's default task).

    Raises:
        RequestValidationError: ``obs`` is not a map, or a value fails :class:`ActBody`'s checks (its ``loc``
            is the body field; :func:`openpi_error_text` names the openpi key).
    """
    if not isinstance(obs, dict):
        raise _field_error("observation", f"expected a msgpack map of observation keys, got {type(obs).__name__}")
    try:
        return ActBody.model_validate({body: obs[key] for key, body in OPENPI_KEYS.items() if key in obs})
    except ValidationError as exc:
        raise _body_errors(exc) from None


def openpi_reply(response: TeacherResponse, prev_total_ms: float | None) -> dict:
    """The openpi action frame of a one-row answer.

    Returns:
        ``{"actions": (1, 7) float32, "server_timing": {"infer_ms"[, "prev_total_ms"]}, "policy_timing":
        {"infer_ms"}}``: the actions in the env convention (:data:`~robot_rl.teachers.wire.ENV_CONVENTION`; the
        one row spans the backend's ``control_period_steps`` env steps: ``H = 1``); ``server_timing.infer_ms``
        the request's time in the server (validation, batching, backend; ms), ``prev_total_ms`` the previous
        request's time from its frame's arrival to its reply sent (ms; upstream's also counts the wait for the
        frame), ``policy_timing.infer_ms`` the backend's time for the row (ms).
    """
    timing = {"infer_ms": 1000.0 * float(response.extras["server_latency_s"])}
    if prev_total_ms is not None:
        timing["prev_total_ms"] = prev_total_ms
    return {"actions": np.asarray(response.actions, dtype=np.float32), "server_timing": timing,
            "policy_timing": {"infer_ms": 1000.0 * float(response.latency_s[0])}}


def openpi_error_text(exc: Exception) -> str:
    """The text of an openpi error frame: each refused field as ``"<openpi key>: <message>"``, a backend
    failure's message, or else the traceback (openpi's server sends ``traceback.format_exc()``).
    """
    if isinstance(exc, RequestValidationError):
        lines = []
        for err in exc.errors():
            name = str(err["loc"][-1]) if err.get("loc") else "observation"
            msg = str(err["msg"]).removeprefix("Value error, ").removeprefix(f"{name}: ")
            lines.append(f"{OPENPI_NAMES.get(name, name)}: {msg}")
        return "bad observation: " + "; ".join(lines)
    if isinstance(exc, HTTPException):
        return str(exc.detail)
    if isinstance(exc, openpi_wire.OpenpiWireError):
        return f"bad frame: {exc}"
    return "".join(traceback.format_exception(exc))


def _key_ok(expected: str | None, *given: str | None) -> bool:
    """Whether one of the ``given`` keys is ``expected`` (constant-time comparison); True without a key."""
    if expected is None:
        return True
    return any(g is not None and hmac.compare_digest(g.encode(), expected.encode()) for g in given)


def create_app(info: ServerInfo, dispatch: Dispatch | None = None, *, api_key: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, added_latency_ms: float = 0.0,
               openpi_max_frame_bytes: int = DEFAULT_OPENPI_MAX_FRAME_BYTES,
               body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
               max_inflight_body_bytes: int = DEFAULT_MAX_INFLIGHT_BODY_BYTES, decode_workers: int = 1) -> FastAPI:
    """Build the FastAPI app.

    Bad input is a 4xx naming the field on every route (the openpi WebSocket sends the same text and closes
    1011): arrays are checked by :func:`checked_array`, JSON that cannot be decoded (malformed, an integer past
    Python's digit limit, nesting past the recursion limit, bad UTF-8) is a 422, a 422 echoes at most
    :data:`MAX_ECHO_CHARS` characters of an input or message. A request of more rows than ``info.max_batch``
    is split into backend calls of at most ``max_batch`` rows. Anything else raised in a route is a JSON 500,
    logged once.

    Args:
        info: the backend and what ``/metadata`` reports.
        dispatch: coroutine answering one validated :class:`TeacherRequest`. Default: a
            :class:`DynamicBatcher` over ``info.teacher`` started with the app (the Ray Serve
            deployment passes its ``@serve.batch`` method instead).
        api_key: when set, every route but ``/healthz`` requires header ``X-API-Key: <key>`` (the openpi
            WebSocket also accepts ``Authorization: Api-Key <key>``; a refused handshake gets HTTP 401), compared
            with :func:`hmac.compare_digest`; ``/docs``, ``/redoc`` and ``/openapi.json`` are then disabled (404).
        max_body_bytes: larger request bodies get 413 (before they are read, when their length is declared).
        added_latency_ms: every answer is held this long after the backend answered (ms), without blocking other
            requests (``asyncio.sleep``): a slow VLA for tests and benchmarks of the delayed interface.
        openpi_max_frame_bytes: largest openpi frame (bytes); a larger one closes its connection with code 1009
            and a reason naming the limit. Kept in ``app.state.openpi_max_frame_bytes``, which
            :func:`uvicorn_config` also gives uvicorn (``ws_max_size``), so the frame is refused before it is
            buffered.
        body_timeout_s: longest a request body may take to arrive (s); a slower one gets 408.
        max_inflight_body_bytes: most body bytes buffered at once over all HTTP requests; a request that would
            pass it gets 503 (``Retry-After: 1``).
        decode_workers: processes that decode bodies of :data:`_INLINE_DECODE_BYTES` or more
            (:class:`DecodeWorkers`, started on demand); 0 decodes them in a thread of this process, which holds
            the GIL, and so the event loop, as long as the decode takes.

    Raises:
        ValueError: ``added_latency_ms < 0``, ``openpi_max_frame_bytes < 1`` or ``decode_workers < 0``.
    """
    if added_latency_ms < 0:
        raise ValueError(f"server.latency_ms: must be >= 0, got {added_latency_ms}")
    if openpi_max_frame_bytes < 1:
        raise ValueError(f"server.openpi_max_frame_mb: must be > 0, got {openpi_max_frame_bytes} bytes")
    if decode_workers < 0:
        raise ValueError(f"server.decode_workers: must be >= 0, got {decode_workers}")
    decoder = DecodeWorkers(decode_workers) if decode_workers else None
    batcher = None
    if dispatch is None:
        batcher = DynamicBatcher(info.teacher, info.max_batch, info.batch_wait_ms / 1000.0)
        dispatch = batcher.submit

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        if batcher is not None:
            batcher.start()
        yield
        if decoder is not None:
            decoder.close()
        if batcher is not None:
            await batcher.stop()

    docs = {} if api_key is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    # Starlette's body limit (FastAPI >= 0.164) counts every route's body as it streams in: 413 past it
    app = FastAPI(title="robot_rl teacher server", version=str(PROTOCOL_VERSION), lifespan=lifespan,
                  max_body_size=int(max_body_bytes), **docs)
    app.add_exception_handler(RequestValidationError, _short_422)
    inflight = _BodyBudget(max_inflight_body_bytes)
    app.state.batcher = batcher
    app.state.decoder = decoder
    app.state.info = info
    app.state.openpi_max_frame_bytes = int(openpi_max_frame_bytes)

    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    async def require_key(key: str | None = Depends(header)) -> None:
        if not _key_ok(api_key, key):
            raise HTTPException(status_code=401, detail=f"missing or wrong {API_KEY_HEADER} header")

    async def split_dispatch(request: TeacherRequest) -> TeacherResponse:
        n, step = len(request), info.max_batch
        if n <= step:
            return await dispatch(request)
        parts = await asyncio.gather(*(dispatch(request_rows(request, i, min(i + step, n)))
                                       for i in range(0, n, step)))
        return merge_responses(list(parts))

    async def answer(request: TeacherRequest, fields: dict[str, str] | None = None, *,
                     no_guidance_rows: bool = False) -> TeacherResponse:
        t0 = time.perf_counter()
        request = check_against_backend(info, request, fields)
        try:
            response = await split_dispatch(request)
        except TeacherRequestError as exc:  # refused by act although check_request passed it
            raise _request_error(exc, fields) from None
        except Exception as exc:
            log.exception("backend failed")
            raise HTTPException(status_code=500, detail=f"backend error: {type(exc).__name__}: {exc}") from None
        # never a 200 carrying NaN or inf, whichever backend produced it, except /act/batch's all-NaN row: the
        # protocol's "no guidance for this row" (a malformed model output), which clients drop
        marked = np.isnan(response.actions).all(axis=1) if no_guidance_rows else False
        bad = np.flatnonzero(~np.isfinite(response.actions).all(axis=1) & ~marked)
        if bad.size:
            log.error("backend returned NaN or inf actions for %d of %d rows", bad.size, len(response))
            raise HTTPException(status_code=500, detail=f"backend error: NaN or inf actions for rows "
                                                        f"{bad[:10].tolist()}")
        if added_latency_ms:
            await asyncio.sleep(added_latency_ms / 1000.0)
        response.extras["server_latency_s"] = time.perf_counter() - t0
        return response

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "backend": info.backend}

    @app.get("/metadata", dependencies=[Depends(require_key)])
    async def metadata() -> dict:
        return info.metadata()

    async def read_request(request: Request, route: str) -> tuple[TeacherRequest, bool]:
        length = request.headers.get("content-length", "")
        sink = _BodySink(decoder, int(length) if length.isdigit() else -1)
        try:
            size = await _read_body(request, sink, max_body_bytes, body_timeout_s, inflight)
            try:
                return await sink.parse(route)
            finally:
                inflight.used -= size
        finally:
            sink.close()

    @app.post("/act", dependencies=[Depends(require_key)])
    @_guarded
    async def act(request: Request) -> Response:
        parsed, encoded = await read_request(request, "act")
        response = await answer(parsed, ACT_FIELDS)
        raw = response.extras.get("raw_actions")
        action = np.asarray(raw if raw is not None else env_to_openvla(response.actions), dtype=np.float64)[0]
        # OpenVLA's deploy.py answers JSONResponse(json_numpy.dumps(action)) for "encoded", else JSONResponse(action)
        return Response(openvla_json(json_numpy.dumps(action)) if encoded else openvla_json(action),
                        media_type="application/json")

    @app.post("/act/batch", dependencies=[Depends(require_key)])
    @_guarded
    async def act_batch(request: Request) -> Response:
        parsed, _ = await read_request(request, "batch")
        response = await answer(parsed, no_guidance_rows=True)
        server_s = float(response.extras["server_latency_s"])
        out = {
            "actions": np.asarray(response.actions, dtype=np.float32),
            "latency_s": server_s,
            "latencies_s": nested_latency(server_s, response.latency_s, len(response)),
            "backend_latency_s": float(response.latency_s.max(initial=0.0)),
            "notes": response.notes,
            "model_id": response.model_id,
            "batch_rows": int(response.extras.get("batch_rows", len(parsed))),
        }
        return Response(json_numpy.dumps(out), media_type="application/json")

    openpi_metadata = {**info.metadata(), "openpi": {
        "observation_keys": {"observation/image": "(H, W, 3) uint8 RGB (needs_image)",
                             "observation/state": "(S,) privileged state (needs_state)",
                             "prompt": "instruction", "task_id": "env id (scripted backend, if no default task)"},
        "action_convention": ENV_CONVENTION, "action_steps": info.teacher.spec.control_period_steps,
        "max_frame_bytes": int(openpi_max_frame_bytes)}}

    @app.api_route("/", methods=["GET", "POST", "HEAD"], include_in_schema=False)
    async def openpi_over_http() -> Response:
        raise HTTPException(status_code=426, detail=OPENPI_HTTP_HINT, headers={"Upgrade": "websocket"})

    @app.websocket("/{path:path}")
    async def openpi(ws: WebSocket) -> None:
        if not _key_ok(api_key, ws.headers.get(API_KEY_HEADER), openpi_wire.api_key_of(ws.headers)):
            detail = f"missing or wrong API key: send {openpi_wire.AUTHORIZATION_HEADER}: " \
                     f"{openpi_wire.API_KEY_SCHEME} <key> (openpi-client's api_key=) or {API_KEY_HEADER}: <key>"
            await ws.send_denial_response(JSONResponse({"detail": detail}, status_code=401))
            return
        await ws.accept()
        prev_total_ms = None
        try:
            await ws.send_bytes(openpi_wire.packb(openpi_metadata))
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                start = time.perf_counter()
                data = message.get("bytes")
                if data is not None and len(data) > openpi_max_frame_bytes:  # an ASGI server without ws_max_size
                    await ws.close(openpi_wire.TOO_BIG_CLOSE_CODE,
                                   f"frame of {len(data)} bytes exceeds the limit of {openpi_max_frame_bytes} bytes")
                    return
                try:
                    if data is None:
                        raise openpi_wire.OpenpiWireError("expected a binary msgpack frame, got a text frame")
                    response = await answer(openpi_body(openpi_wire.unpackb(data)).to_request())
                    reply = openpi_wire.packb(openpi_reply(response, prev_total_ms))
                except Exception as exc:  # openpi's convention: the text, then close 1011; other connections go on
                    if not isinstance(exc, (RequestValidationError, HTTPException, openpi_wire.OpenpiWireError)):
                        log.exception("openpi request failed")
                    await ws.send_text(openpi_error_text(exc))
                    await ws.close(openpi_wire.ERROR_CLOSE_CODE, openpi_wire.ERROR_CLOSE_REASON)
                    return
                await ws.send_bytes(reply)
                prev_total_ms = 1000.0 * (time.perf_counter() - start)
        except (WebSocketDisconnect, OSError):  # the client went away mid-answer
            return

    return app


#: uvicorn's own limits the server sets (``uvicorn.Config`` keywords; ``server.*`` in the serving config):
#: idle keep-alive connections close after 5 s, at most 256 connections and tasks at once (then 503).
DEFAULT_UVICORN_LIMITS = {"timeout_keep_alive": 5, "limit_concurrency": 256}


def uvicorn_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", *,
                   max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES, header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
                   **limits: Any):
    """The ``uvicorn.Config`` the teacher server runs ``app`` with (:func:`serve`, the test server thread).

    HTTP/1.1 is uvicorn's httptools protocol with a header-size limit and a header deadline
    (:class:`~robot_rl.teachers.http_protocol.LimitedHttpToolsProtocol`: 431 past ``max_header_bytes``, 408
    past ``header_timeout_s`` s), which uvicorn does not bound itself.
    WebSocket frames are limited to ``app.state.openpi_max_frame_bytes`` (:func:`create_app`) by uvicorn's
    websockets layer, which closes a connection whose frame is larger with code 1009 and the reason
    ``"frame with N bytes exceeds limit of M bytes"`` before buffering it; per-message compression is off
    (openpi's client and server use ``compression=None``: images do not compress and deflate costs CPU).
    ``limits`` override :data:`DEFAULT_UVICORN_LIMITS` (``timeout_keep_alive`` s, ``limit_concurrency``).

    Raises:
        ValueError: a limit that is not positive (naming its ``server.*`` key).
    """
    import uvicorn

    max_frame = getattr(app.state, "openpi_max_frame_bytes", DEFAULT_OPENPI_MAX_FRAME_BYTES)
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          http=limited_httptools_protocol(max_header_bytes, header_timeout_s),
                          ws_max_size=int(max_frame), ws_per_message_deflate=False,
                          **{**DEFAULT_UVICORN_LIMITS, **limits})


class _BodyBudget:
    """Body bytes buffered at once over all requests (one event loop: no lock needed)."""

    def __init__(self, limit: int):
        self.limit, self.used = int(limit), 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise HTTPException(status_code=503, headers={"Retry-After": "1"},
                                detail=f"server busy: request bodies in flight would exceed {self.limit} bytes "
                                       f"(server.max_inflight_body_mb)")
        self.used += n


class _Summarized:
    """A log line for an event a client can cause at will: at INFO at most once per ``period_s``, with the count
    of the ones in between (each is at DEBUG), so that a flood of them cannot flood the log.
    """

    def __init__(self, period_s: float = 10.0):
        self.period_s, self.last, self.skipped = period_s, -float("inf"), 0

    def log(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last < self.period_s:
            self.skipped += 1
            log.debug(msg, *args)
            return
        more = f" (and {self.skipped} more in the last {now - self.last:.0f} s)" if self.skipped else ""
        log.info(msg + more, *args)
        self.last, self.skipped = now, 0


_DISCONNECTS = _Summarized()

#: Bodies at least this big (bytes) are decoded by :class:`DecodeWorkers` (or, without workers, in a thread).
_INLINE_DECODE_BYTES = 1 << 20


async def _read_body(request: Request, sink: Callable[[bytes], Any], max_body_bytes: int,
                     timeout_s: float = DEFAULT_BODY_TIMEOUT_S, budget: _BodyBudget | None = None) -> int:
    """Read a body of at most ``max_body_bytes`` (also when sent chunked) within ``timeout_s`` into ``sink``.

    ``sink`` (a :class:`_BodySink`) gets each chunk as it arrives. A declared
    ``Content-Length`` over the limit is refused here, naming the limit, before anything is read; a chunked body
    that grows past it is refused by Starlette's body limit (``FastAPI(max_body_size=...)``, :func:`create_app`).
    The body's bytes stay taken from ``budget`` when this returns: the caller gives them back
    (``budget.used -= size``) once it is done with the body; when this raises, they are given back.

    Returns:
        The body's size (bytes).

    Raises:
        HTTPException: 413 over the size limit; 408 when the body takes longer than ``timeout_s`` (a stalled
            or half-sent request); 503 when ``budget`` (bytes in flight over all requests) would be passed;
            400 when the client disconnects mid-body (logged at INFO at most every 10 s, nobody reads the answer).
    """
    from starlette.requests import ClientDisconnect

    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_body_bytes:
        raise HTTPException(status_code=413, detail=f"body of {length} bytes exceeds the limit of {max_body_bytes}")
    size = 0
    try:
        try:
            async with asyncio.timeout(timeout_s):
                async for chunk in request.stream():
                    if budget is not None:
                        budget.take(len(chunk))
                    size += len(chunk)
                    sink(chunk)
        except TimeoutError:
            raise HTTPException(status_code=408, detail=f"body not received within {timeout_s} s "
                                                        f"(server.body_timeout_s)") from None
        except ClientDisconnect:
            _DISCONNECTS.log("client %s disconnected mid-body after %d bytes", request.client, size)
            raise HTTPException(status_code=400, detail="client disconnected mid-body") from None
    except BaseException:
        if budget is not None:  # whatever ended the read, the bytes it took are given back
            budget.used -= size
        raise
    return size


class _BlockWriter:
    """A body sink writing the chunks one after another into a shared memory block (bytes past its end refused)."""

    def __init__(self, block):
        self.block, self.offset = block, 0

    def __call__(self, chunk: bytes) -> None:
        end = self.offset + len(chunk)
        if end > self.block.size:
            raise HTTPException(status_code=400, detail="body longer than its Content-Length")
        self.block.buf[self.offset:end] = chunk
        self.offset = end


class _BodySink:
    """A request body as it arrives: a list of chunks while it is small; once it reaches
    :data:`_INLINE_DECODE_BYTES` and its length was declared, a :class:`DecodeWorkers` shared memory block that
    the rest streams into (a body that stops short, as a client that disconnects, never takes a block).

    Args:
        decoder: the decode workers, or None (big bodies are then decoded in a thread).
        declared: the body's declared ``Content-Length`` (bytes; -1 when it was sent chunked).
    """

    def __init__(self, decoder: DecodeWorkers | None, declared: int):
        self.decoder, self.declared = decoder, declared
        self.chunks: list[bytes] = []
        self.size, self.block, self._write = 0, None, None

    def __call__(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._write is not None:
            self._write(chunk)
            return
        self.chunks.append(chunk)
        if self.decoder is not None and _INLINE_DECODE_BYTES <= self.size <= self.declared:
            self.block = self.decoder.block(self.declared)
            self._write = _BlockWriter(self.block)
            for c in self.chunks:
                self._write(c)
            self.chunks = []

    async def parse(self, route: str) -> tuple[TeacherRequest, bool]:
        """:func:`parse_body` of the whole body: here when small, else in a decode worker (or a thread)."""
        if self.block is not None:
            return await self.decoder.parse(route, self.block, self.size)
        if self.size < _INLINE_DECODE_BYTES:
            return parse_body(route, b"".join(self.chunks))
        if self.decoder is not None:  # a big chunked body
            return await self.decoder.parse_chunks(route, self.chunks, self.size)
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(parse_body, route, b"".join(self.chunks))

    def close(self) -> None:
        """Give the shared memory block back, if one was taken."""
        if self.block is not None:
            self.decoder.release(self.block)
            self.block = None


def _json(body: bytes) -> Any:
    """``body`` decoded as JSON.

    Raises:
        RequestValidationError: a 422 when the body is not JSON: malformed, bad UTF-8, an integer past
            Python's digit limit (``ValueError``), nesting past the recursion limit (``RecursionError``).
    """
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": f"malformed JSON: {type(exc).__name__}: {exc}"}]
        ) from None


def parse_body(route: str, body: bytes) -> tuple[TeacherRequest, bool]:
    """A ``POST /act`` (``route="act"``) or ``POST /act/batch`` (``"batch"``) body as a validated request.

    ``/act`` also takes OpenVLA's ``{"encoded": "<JSON text>"}`` variant (for clients without json-numpy).

    Returns:
        The :class:`TeacherRequest` (``B = 1`` for ``/act``) and whether the body was the ``encoded`` variant.

    Raises:
        RequestValidationError: a 422 naming the body field (``image``, ``state``, ``states``, ...) or saying
            the body is not JSON.
    """
    payload = _json(body)
    if route == "batch":
        try:
            return BatchBody.model_validate(payload).to_request(), False
        except ValidationError as exc:
            raise _body_errors(exc) from None
    encoded = isinstance(payload, dict) and "encoded" in payload
    if encoded:  # OpenVLA's variant for clients without json-numpy: a JSON string inside JSON
        if len(payload) != 1 or not isinstance(payload["encoded"], str):
            raise _field_error("encoded", "must be the only key and hold a JSON string")
        try:
            payload = json.loads(payload["encoded"])
        except (ValueError, RecursionError) as exc:
            raise _field_error("encoded", f"malformed JSON: {type(exc).__name__}: {exc}") from None
    try:
        return ActBody.model_validate(payload).to_request(), encoded
    except ValidationError as exc:
        raise _body_errors(exc) from None


def _unlink(block) -> None:
    block.close()
    block.unlink()


def _decode_worker_init(server_pid: int) -> None:
    """A decode worker exits when the server is gone (else it would wait for work for ever)."""
    import os

    watch_parent(server_pid, lambda: os._exit(0))


def _parse_shared(route: str, name: str, size: int) -> tuple[str, Any]:
    """:func:`parse_body` of the body in shared memory block ``name`` (a decode worker process's job).

    Returns ``("ok", (request, encoded))`` or ``("422", errors)`` (a RequestValidationError does not pickle).
    """
    from multiprocessing.shared_memory import SharedMemory

    block = SharedMemory(name=name)
    try:
        body = bytes(block.buf[:size])
    finally:
        block.close()
    try:
        return "ok", parse_body(route, body)
    except RequestValidationError as exc:
        return "422", [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]


class DecodeWorkers:
    """Processes that decode and validate big request bodies, so that the event loop keeps serving the others.

    JSON decoding holds the GIL for its whole length (about 0.1 s for a 48 MiB string, 0.65 s for 57 MiB of
    numbers on this project's CPU machines), so a thread does not help: the event loop would wait for it.
    Here the body streams into a shared memory block as it arrives (a chunked upload, whose length is not
    declared, is copied in a MiB at a time, yielding to the event loop in between), a worker process runs
    :func:`parse_body` on it and returns the validated :class:`TeacherRequest` (numpy arrays: a copy to
    unpickle, not a parse). Blocks are reused, so their pages are not faulted in again for every body (page
    faults were most of the cost of moving big bodies). The workers (``spawn``: the main module must be safe to
    import, ``if __name__ == "__main__":``) start on the first big body; they and the free blocks go after
    ``idle_s`` without a big body, so an idle server holds no extra process or memory. A worker exits when the
    server is gone.

    Args:
        workers: worker processes (``server.decode_workers``); bodies beyond them wait their turn (their bytes
            count against ``server.max_inflight_body_mb``).
        idle_s: stop the workers after this long without a big body (s).
    """

    def __init__(self, workers: int = 1, idle_s: float = 10.0):
        self.workers, self.idle_s = int(workers), float(idle_s)
        self._pool = None
        self._free: list = []  # shared memory blocks to reuse (their pages are already mapped: no page faults)
        self._busy, self._last_use, self._idle_timer = 0, 0.0, None

    @property
    def running(self) -> bool:
        """Whether the worker processes are up (they stop after ``idle_s`` without a big body)."""
        return self._pool is not None

    @property
    def free_bytes(self) -> int:
        """Bytes of shared memory held for reuse (0 once the workers stopped for idleness)."""
        return sum(b.size for b in self._free)

    def _ensure_pool(self):
        if self._pool is None:
            import multiprocessing
            import os
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_decode_worker_init, initargs=(os.getpid(),))
        return self._pool

    def block(self, size: int):
        """A shared memory block of at least ``size`` bytes for a body: a free one reused, or a new one (sized
        up to a whole MiB). Give it back with :meth:`release`.
        """
        from multiprocessing.shared_memory import SharedMemory

        self._busy += 1
        fits = [b for b in self._free if b.size >= size]
        if fits:
            block = min(fits, key=lambda b: b.size)
            self._free.remove(block)
            return block
        return SharedMemory(create=True, size=max(-(-size // (1 << 20)), 1) << 20)

    def release(self, block) -> None:
        """Give back a block of :meth:`block`: kept for reuse (at most ``workers + 3`` of them), else freed."""
        self._busy -= 1
        self._last_use = time.monotonic()
        self._free.append(block)
        if len(self._free) > self.workers + 3:
            self._free.sort(key=lambda b: b.size)
            _unlink(self._free.pop(0))
        self._schedule_stop()

    async def parse(self, route: str, block, size: int) -> tuple[TeacherRequest, bool]:
        """:func:`parse_body` of the body in the first ``size`` bytes of ``block``, in a worker process.

        Raises:
            RequestValidationError: as :func:`parse_body`.
            HTTPException: 503 when the worker died (it is restarted for the next body).
        """
        from concurrent.futures.process import BrokenProcessPool

        try:
            status, value = await asyncio.wrap_future(self._ensure_pool().submit(_parse_shared, route, block.name,
                                                                                 size))
        except BrokenProcessPool:
            log.error("a decode worker died (decoding a %d-byte body); restarting it", size)
            self._pool = None
            raise HTTPException(status_code=503, headers={"Retry-After": "1"},
                                detail="server busy: the body decoder restarted") from None
        if status == "422":
            raise RequestValidationError(value)
        return value

    async def parse_chunks(self, route: str, chunks: list[bytes], size: int) -> tuple[TeacherRequest, bool]:
        """:meth:`parse` of a body received as ``chunks`` (a chunked upload: its size was not declared)."""
        block = self.block(size)
        try:
            write = _BlockWriter(block)
            for i, chunk in enumerate(chunks):
                write(chunk)
                chunks[i] = b""
                if i % 16 == 15:
                    await asyncio.sleep(0)  # about a MiB at a time: the others are served in between
            return await self.parse(route, block, size)
        finally:
            self.release(block)

    def _schedule_stop(self, delay_s: float | None = None) -> None:
        if self._idle_timer is None:
            self._idle_timer = asyncio.get_running_loop().call_later(
                self.idle_s if delay_s is None else delay_s, self._stop_if_idle)

    def _stop_if_idle(self) -> None:
        self._idle_timer = None
        idle_for = time.monotonic() - self._last_use
        if self._busy or idle_for < self.idle_s:
            if self._pool is not None or self._free:
                self._schedule_stop(self.idle_s if self._busy else max(self.idle_s - idle_for, 0.01))
            return
        self.close(wait=False)

    def close(self, wait: bool = True) -> None:
        """Stop the workers and free the idle shared memory (both come back on the next big body)."""
        for block in self._free:
            _unlink(block)
        self._free.clear()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None


def _cut(text: Any) -> Any:
    """``text`` (a string) cut to :data:`MAX_ECHO_CHARS` characters; other values as they are."""
    if not isinstance(text, str):
        text = repr(text) if not isinstance(text, (int, float, bool, type(None))) else text
    if isinstance(text, str) and len(text) > MAX_ECHO_CHARS:
        return text[:MAX_ECHO_CHARS] + f"... ({len(text)} characters)"
    return text


async def _short_422(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body (``{"detail": [{"type", "loc", "msg"[, "input"]}]}``) with echoed text cut short."""
    detail = []
    for err in exc.errors():
        err = {k: v for k, v in err.items() if k in ("type", "loc", "msg", "input")}
        err["msg"] = _cut(str(err.get("msg", "")))
        if "input" in err:
            err["input"] = _cut(err["input"])
        detail.append(err)
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)


def _guarded(route: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """A route whose unexpected exceptions are a JSON 500, logged once (HTTP errors and 422s pass through)."""

    @functools.wraps(route)
    async def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return await route(*args, **kwargs)
        except (StarletteHTTPException, RequestValidationError):  # FastAPI's and Starlette's (its body limit)
            raise
        except Exception as exc:
            log.exception("request failed")
            return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    return wrapper


def request_rows(request: TeacherRequest, start: int, stop: int) -> TeacherRequest:
    """Rows ``start:stop`` of ``request`` (every per-row field sliced)."""

    def cut(value):
        return None if value is None else value[start:stop]

    return TeacherRequest(
        instructions=request.instructions[start:stop], images=cut(request.images), states=cut(request.states),
        task_ids=cut(request.task_ids), scratchpads=cut(request.scratchpads), unnorm_key=request.unnorm_key,
        obs_steps=cut(request.obs_steps), obs_times_s=cut(request.obs_times_s))


def merge_responses(parts: list[TeacherResponse]) -> TeacherResponse:
    """The answers to consecutive row slices of one request as one response (``batch_rows``: the largest call)."""

    def cat(name):
        values = [getattr(p, name) for p in parts]
        if values[0] is None:
            return None
        return sum(values, []) if isinstance(values[0], list) else np.concatenate(values)

    return TeacherResponse(
        actions=cat("actions"), latency_s=cat("latency_s"), model_id=parts[0].model_id, notes=cat("notes"),
        obs_steps=cat("obs_steps"), obs_times_s=cat("obs_times_s"), answer_times_s=cat("answer_times_s"),
        extras={**{k: v for k, v in parts[0].extras.items() if k != "raw_actions"},
                "batch_rows": max(int(p.extras.get("batch_rows", len(p))) for p in parts)})


# ----------------------------------------------------------------------------------------------
# Running it

#: Backends ``robot-rl teacher serve --backend`` knows (the kinds of :data:`robot_rl.teachers.config.BACKEND_CONFIGS`).
SERVE_BACKENDS = ("scripted", "openvla")


def build_backend(backend: str = "scripted", **kwargs: Any) -> Teacher:
    """The teacher a server wraps.

    Args:
        backend: ``"scripted"`` (privileged-state planner) or ``"openvla"`` (a local checkpoint).
        kwargs: the keys of the kind's backend section (:mod:`robot_rl.teachers.config`):
            ``scripted``: ``control_period_steps`` (4), ``task`` (default task id), ``seed`` (0);
            ``openvla``: ``model`` (checkpoint directory, required), ``unnorm_key``,
            ``control_period_steps`` (4), ``device`` (``"cpu"``), ``torch_dtype`` (``"auto"``), ``notes``
            (False: Notes-to-Self mode off), ``notes_max_new_tokens`` (250).
            A ``None`` for a key the kind does not have is ignored.

    Raises:
        ValueError: an unknown backend, ``openvla`` without ``model``, an unknown task; a
            :class:`~robot_rl.config.ConfigError` (a ``ValueError``) naming a key the kind does not have.
    """
    from .config import backend_config

    check_backend_args(backend, kwargs.get("model"))
    return backend_from_config(backend_config(backend, **kwargs))


def backend_from_config(cfg) -> Teacher:
    """The teacher of a validated backend section (:data:`robot_rl.teachers.config.BackendConfig`)."""
    from . import make_teacher

    if cfg.kind == "scripted":
        return make_teacher("scripted", control_period_steps=cfg.control_period_steps, task=cfg.task, seed=cfg.seed)
    return make_teacher("openvla", model_path=cfg.model, unnorm_key=cfg.unnorm_key,
                        control_period_steps=cfg.control_period_steps, device=cfg.device, torch_dtype=cfg.torch_dtype,
                        notes=cfg.notes, notes_max_new_tokens=cfg.notes_max_new_tokens)


def check_backend_args(backend: str, model: str | None = None) -> None:
    """Cheap checks of a backend choice (nothing is loaded).

    Raises:
        ValueError: an unknown backend (lists the known ones), or ``openvla`` without ``model``.
    """
    if backend not in SERVE_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(SERVE_BACKENDS)}")
    if backend == "openvla" and not model:
        raise ValueError("the openvla backend needs --model PATH (a local checkpoint directory)")


def watch_parent(parent_pid: int, on_gone: Callable[[], Any], period_s: float = 0.5,
                 watching: Callable[[], bool] = lambda: True) -> None:
    """Call ``on_gone()`` (once, from a daemon thread) when process ``parent_pid`` is gone; check every
    ``period_s`` s while ``watching()``. A spawned server must not outlive its trainer, nor a decode worker its
    server.
    """
    import os
    import threading

    def watch():
        while watching():
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                on_gone()
                return
            time.sleep(period_s)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _exit_with_parent(server, parent_pid: int, period_s: float = 0.5) -> None:
    """Ask uvicorn to shut down once ``parent_pid`` is gone (a spawned server must not outlive its trainer)."""

    def gone():
        log.warning("parent process %d is gone; shutting down", parent_pid)
        server.should_exit = True

    watch_parent(parent_pid, gone, period_s, lambda: not server.should_exit)


def serve(backend: str = "scripted", *, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 16,
          batch_wait_ms: float = 5.0, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          parent_pid: int | None = None, log_level: str = "info", latency_ms: float = 0.0,
          openpi_max_frame_bytes: int = DEFAULT_OPENPI_MAX_FRAME_BYTES, body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
          max_inflight_body_bytes: int = DEFAULT_MAX_INFLIGHT_BODY_BYTES, uvicorn_limits: dict | None = None,
          decode_workers: int = 1, **backend_kwargs: Any) -> None:
    """Serve ``backend`` with uvicorn until interrupted (blocks). Arguments as ``robot-rl teacher serve``;
    ``backend_kwargs`` as :func:`build_backend`.
    """
    import uvicorn

    teacher = build_backend(backend, **backend_kwargs)
    info = ServerInfo(backend, teacher, max_batch, batch_wait_ms)
    app = create_app(info, api_key=api_key, max_body_bytes=max_body_bytes, added_latency_ms=latency_ms,
                     openpi_max_frame_bytes=openpi_max_frame_bytes, body_timeout_s=body_timeout_s,
                     max_inflight_body_bytes=max_inflight_body_bytes, decode_workers=decode_workers)
    server = uvicorn.Server(uvicorn_config(app, host, port, log_level, **(uvicorn_limits or {})))
    if parent_pid is not None:
        _exit_with_parent(server, parent_pid)
    log.info("serving %s (%s) on http://%s:%d (openpi: ws://%s:%d)", backend, teacher.spec.model_id, host, port,
             host, port)
    server.run()


def serve_config(cfg, *, api_key: str | None = None, parent_pid: int | None = None) -> None:
    """Serve a :class:`~robot_rl.teachers.config.TeacherServeConfig` (``robot-rl teacher serve --config``):
    with uvicorn (:func:`serve`), or on Ray Serve when ``cfg.ray.enabled``
    (:func:`robot_rl.teachers.ray_serve.serve_ray`; ``parent_pid`` is not watched there). Blocks.
    """
    backend_kwargs = cfg.backend.model_dump(exclude={"kind"})
    common = dict(host=cfg.server.host, port=cfg.server.port, max_batch=cfg.server.max_batch,
                  batch_wait_ms=cfg.server.batch_wait_ms, api_key=api_key,
                  max_body_bytes=int(cfg.server.max_body_mb * 1024 * 1024))
    if cfg.ray.enabled:
        from .ray_serve import serve_ray

        serve_ray(cfg.backend.kind, replicas=cfg.ray.replicas, address=cfg.ray.address, num_cpus=cfg.ray.num_cpus,
                  num_gpus=cfg.ray.num_gpus, **common, **backend_kwargs)
    else:
        sv = cfg.server
        serve(cfg.backend.kind, parent_pid=parent_pid, log_level=sv.log_level, latency_ms=sv.latency_ms,
              openpi_max_frame_bytes=int(sv.openpi_max_frame_mb * 1024 * 1024), body_timeout_s=sv.body_timeout_s,
              max_inflight_body_bytes=int(sv.max_inflight_body_mb * 1024 * 1024), decode_workers=sv.decode_workers,
              uvicorn_limits={"timeout_keep_alive": sv.timeout_keep_alive_s, "limit_concurrency": sv.limit_concurrency,
                              "max_header_bytes": sv.max_header_kb * 1024, "header_timeout_s": sv.header_timeout_s},
              **common, **backend_kwargs)
