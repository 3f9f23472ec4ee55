"""The teacher server's protocol pieces that both sides use: numpy and json-numpy only.

The teacher code (:mod:`robot_rl.teachers.wire`, the server and :class:`~robot_rl.teachers.remote.RemoteTeacher`)
and the ROS 2 node's teacher client (:mod:`robot_rl.deploy.teacher`) import this module, and nothing in it imports
either of them (``deploy/`` never imports ``teachers/``, DESIGN.md Style), so each piece of the protocol is written
once:

- the API-key header and the environment variable the key is read from;
- the ``/act/batch`` + ``/metadata`` protocol version (:data:`PROTOCOL_VERSION`), the ``/act/batch`` body fields
  (:func:`batch_body`), the answer's fields (:func:`decode_batch_answer`) and the spec keys ``/metadata``
  carries (:data:`METADATA_SPEC_KEYS`, read by :func:`read_metadata`);
- json-numpy payload checks (:func:`check_array`) and what a usable answer is (:func:`validate_teacher_actions`:
  the rule training and deployment both apply before an answer becomes a hint or a target).

Arrays travel as json-numpy objects ``{"__numpy__": base64, "dtype": str, "shape": list}``; no pickle anywhere
(object dtypes are refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import json_numpy
import numpy as np

__all__ = [
    "API_KEY_HEADER", "API_KEY_ENV", "PROTOCOL_VERSION", "BATCH_ROUTE", "METADATA_ROUTE", "HEALTH_ROUTE",
    "BATCH_FIELDS", "METADATA_SPEC_KEYS", "ACTION_DIM", "RANGE_TOL", "MAX_SCRATCHPAD_CHARS", "BatchAnswer",
    "ServedSpec", "batch_body", "check_array", "check_scratchpads", "decode_batch_answer", "dumps", "loads",
    "read_metadata", "validate_teacher_actions",
]

#: Header carrying the API key (``robot-rl teacher serve --api-key``), and the environment variable the server,
#: :class:`~robot_rl.teachers.remote.RemoteTeacher` and the ROS node's client read the key from by default.
API_KEY_HEADER = "X-API-Key"
API_KEY_ENV = "ROBOT_RL_TEACHER_API_KEY"
#: Version of the ``/act/batch`` + ``/metadata`` protocol, reported by ``/metadata``. 2: per-row ``obs_steps`` /
#: ``obs_times_s`` in, ``latencies_s`` and ``notes`` out, the spec's fields in ``/metadata``.
PROTOCOL_VERSION = 2
#: Routes of the teacher server (``robot-rl teacher serve``).
BATCH_ROUTE = "/act/batch"
METADATA_ROUTE = "/metadata"
HEALTH_ROUTE = "/healthz"
#: ``POST /act/batch`` body fields: ``instructions`` (B strings) is required, the others optional.
BATCH_FIELDS = ("instructions", "images", "states", "task_ids", "scratchpads", "unnorm_key", "obs_steps",
                "obs_times_s")
#: The backend's spec fields ``GET /metadata`` carries at its top level
#: (:meth:`robot_rl.teachers.base.TeacherSpec.to_metadata` writes exactly these).
METADATA_SPEC_KEYS = ("model_id", "control_period_steps", "needs_image", "needs_state", "state_dim", "image_size",
                      "unnorm_keys", "writes_notes")
#: ``pd_ee_delta_pose``: dx dy dz droll dpitch dyaw gripper (the same as :data:`robot_rl.geometry.ACTION_DIM`).
ACTION_DIM = 7
#: Tolerance on the range check of a teacher answer (float round-off from a server, say).
RANGE_TOL = 1e-4
#: Longest scratchpad text (characters) one ``/act/batch`` row may carry; the server answers a longer one with a 422
#: naming ``scratchpads``. A bounded scratchpad (:mod:`robot_rl.memory`: a plan line plus a few grounding and act
#: lines, each well under 100 characters) stays far below it; it bounds what a client can put into a VLA's prompt.
MAX_SCRATCHPAD_CHARS = 8192
#: dtype kinds accepted inside json-numpy payloads (no bool / object / void / string / complex arrays).
_NUMERIC_KINDS = set("iuf")


def dumps(obj: Any) -> str:
    """JSON text of ``obj`` with its numpy arrays as json-numpy objects."""
    return json_numpy.dumps(obj)


def loads(text: str | bytes) -> Any:
    """Inverse of :func:`dumps` (json-numpy objects become numpy arrays)."""
    return json_numpy.loads(text)


def check_wire_shape(shape: Any) -> tuple[int, ...]:
    """A json-numpy or msgpack-numpy array's declared shape, checked: a list of integers >= 0, given in full.

    numpy would infer a ``-1`` from the data's length, so a sender's shape such as ``(1, -1, 1, 3)`` would pass
    every later check of the decoded array; it is refused here, before decoding.

    Raises:
        ValueError: ``shape`` is not a list (or tuple) of integers >= 0.
    """
    if not isinstance(shape, (list, tuple)) or not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"shape must be a list of integers >= 0, got {str(shape)[:80]}")
    return tuple(shape)


def check_array(value: Any, field: str, *, dtype_kind: str | None = None, ndim: int | None = None) -> np.ndarray:
    """Validate one decoded json-numpy field.

    Raises:
        ValueError: naming ``field``, when ``value`` is not a numeric array, or has the wrong
            dtype kind (``"u"`` for uint8 images, ``"f"`` accepts any numeric) or rank.
    """
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{field}: expected a json-numpy array, got {type(value).__name__}")
    if value.dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(f"{field}: dtype {value.dtype} is not numeric")
    if dtype_kind == "u" and value.dtype != np.uint8:
        raise ValueError(f"{field}: expected dtype uint8, got {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{field}: expected {ndim} dimensions, got shape {tuple(value.shape)}")
    return value


def validate_teacher_actions(actions: object, batch_size: int, period_steps: int) -> np.ndarray:
    """Which rows of a teacher answer are usable (as a hint at deployment, as targets in training).

    A row is invalid when it holds a NaN or inf, when its position or rotation components exceed
    ``period_steps`` (``D`` per-step maxima of 1.0) in magnitude, or when its gripper command is
    outside [-1, 1]. An answer of the wrong shape or type invalidates every row.

    Args:
        actions: the teacher's ``(B, 7)`` answer (anything; it is checked, not trusted).
        batch_size: ``B``, the number of rows that were asked for.
        period_steps: ``D`` >= 1, the teacher's control period in env steps.

    Returns:
        ``(B,) bool``: True where the row may be used.
    """
    try:
        a = np.asarray(actions, dtype=np.float64)
    except (TypeError, ValueError):
        return np.zeros(batch_size, dtype=bool)
    if a.shape != (batch_size, ACTION_DIM):
        return np.zeros(batch_size, dtype=bool)
    finite = np.isfinite(a).all(axis=1)
    a = np.where(np.isfinite(a), a, 0.0)
    motion_ok = (np.abs(a[:, :ACTION_DIM - 1]) <= period_steps + RANGE_TOL).all(axis=1)
    gripper_ok = np.abs(a[:, ACTION_DIM - 1]) <= 1.0 + RANGE_TOL
    return finite & motion_ok & gripper_ok


def check_scratchpads(scratchpads: Any, rows: int) -> list[str] | None:
    """Validate the ``scratchpads`` of a request of ``rows`` rows: None, or ``rows`` strings of at most
    :data:`MAX_SCRATCHPAD_CHARS` characters each (``""``: an empty scratchpad).

    Returns:
        The texts as a list, or None.

    Raises:
        ValueError: starting with ``"scratchpads: "``, naming what is wrong (not a list of strings, the wrong
            number of rows, a non-string item and its index, a text over the limit and its index).
    """
    if scratchpads is None:
        return None
    if isinstance(scratchpads, (str, bytes)) or not isinstance(scratchpads, Sequence):
        raise ValueError(f"scratchpads: expected a list of {rows} strings, got {type(scratchpads).__name__}")
    if len(scratchpads) != rows:
        raise ValueError(f"scratchpads: has {len(scratchpads)} rows but instructions has {rows}")
    for i, text in enumerate(scratchpads):
        if not isinstance(text, str):
            raise ValueError(f"scratchpads: item {i} is {type(text).__name__}, not a string")
        if len(text) > MAX_SCRATCHPAD_CHARS:
            raise ValueError(f"scratchpads: item {i} has {len(text)} characters, more than {MAX_SCRATCHPAD_CHARS}")
    return list(scratchpads)


def batch_body(instructions: Sequence[str], *, images: np.ndarray | None = None, states: np.ndarray | None = None,
               task_ids: Sequence[str] | None = None, scratchpads: Sequence[str] | None = None,
               unnorm_key: str | None = None, obs_steps: np.ndarray | None = None,
               obs_times_s: np.ndarray | None = None) -> dict:
    """The ``POST /act/batch`` body of ``B = len(instructions)`` rows (arrays stay numpy until :func:`dumps`).

    Args:
        instructions: ``B`` language instructions.
        images: ``(B, H, W, 3) uint8`` RGB, or None.
        states: ``(B, S)`` privileged states (sent as float32), or None.
        task_ids: ``B`` env ids (the backend's task per row), or None.
        scratchpads: ``B`` scratchpad texts (each at most :data:`MAX_SCRATCHPAD_CHARS` characters; not checked
            here: :func:`check_scratchpads`), or None.
        unnorm_key: OpenVLA dataset-statistics key, or None.
        obs_steps: ``(B,)`` env steps of each row's observation within its episode (int64), or None; a
            protocol-1 server refuses them.
        obs_times_s: ``(B,)`` seconds on the client's clock of each row's observation (float64), or None.
    """
    body: dict[str, Any] = {"instructions": list(instructions)}
    if images is not None:
        body["images"] = np.ascontiguousarray(images, dtype=np.uint8)
    if states is not None:
        body["states"] = np.ascontiguousarray(states, dtype=np.float32)
    if task_ids is not None:
        body["task_ids"] = list(task_ids)
    if scratchpads is not None:
        body["scratchpads"] = list(scratchpads)
    if unnorm_key is not None:
        body["unnorm_key"] = unnorm_key
    if obs_steps is not None:
        body["obs_steps"] = np.ascontiguousarray(obs_steps, dtype=np.int64)
    if obs_times_s is not None:
        body["obs_times_s"] = np.ascontiguousarray(obs_times_s, dtype=np.float64)
    return body


@dataclass
class BatchAnswer:
    """A decoded ``POST /act/batch`` answer.

    Attributes:
        actions: ``(B, 7) float32`` in the env's normalized ``pd_ee_delta_pose`` convention over the teacher's
            period (not yet range-checked: :func:`validate_teacher_actions`).
        model_id: the model that answered.
        notes: ``B`` scratchpad notes (``""``: none for that row), or None from a backend that writes none.
        latency_s: the request's time in the server (s).
        latencies_s: ``(B,)`` server-side per-row latencies (s), or None from an older server.
        batch_rows: rows of the backend call that answered it (1 when not reported).
    """

    actions: np.ndarray
    model_id: str
    notes: list[str] | None = None
    latency_s: float | None = None
    latencies_s: np.ndarray | None = None
    batch_rows: int = 1


def decode_batch_answer(payload: Any, rows: int) -> BatchAnswer:
    """Read a ``POST /act/batch`` answer (the decoded json-numpy object, or its text).

    Args:
        payload: the answer.
        rows: ``B``, the rows that were asked for.

    Raises:
        ValueError: not an answer of this protocol (no ``actions``/``model_id``), ``actions`` not ``(B, 7)``
            numbers, or ``notes`` neither null nor ``B`` strings (the message names what is wrong).
    """
    if isinstance(payload, (str, bytes)):
        payload = loads(payload)
    if not isinstance(payload, Mapping):
        raise ValueError(f"the server answered {type(payload).__name__}, not a {BATCH_ROUTE} object")
    try:
        actions = np.asarray(payload["actions"], dtype=np.float32)
        model_id = str(payload["model_id"])
    except KeyError as exc:
        raise ValueError(f"the server's answer has no {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the server's actions are not numbers: {exc}") from None
    if actions.shape != (rows, ACTION_DIM):
        raise ValueError(f"the server answered actions of shape {actions.shape} for {rows} rows")
    notes = payload.get("notes")
    if notes is not None:
        if not isinstance(notes, list) or len(notes) != rows:
            got = f"{len(notes)} items" if isinstance(notes, list) else type(notes).__name__
            raise ValueError(f"the server's notes must be null or {rows} strings, got {got}")
        bad = next((i for i, note in enumerate(notes) if not isinstance(note, str)), None)
        if bad is not None:
            raise ValueError(f"the server's notes must be null or {rows} strings; item {bad} is "
                             f"{type(notes[bad]).__name__}")
    lat = payload.get("latencies_s")
    return BatchAnswer(actions, model_id, notes,
                       None if payload.get("latency_s") is None else float(payload["latency_s"]),
                       None if lat is None else np.asarray(lat, dtype=np.float64),
                       int(payload.get("batch_rows", rows)))


@dataclass(frozen=True)
class ServedSpec:
    """What a served teacher reads, as ``GET /metadata`` reports it (the client's view of the backend's spec).

    Attributes:
        model_id: the model that answers.
        control_period_steps: ``D`` the backend plans each answer for (env steps).
        needs_image: the backend reads images (send the camera image).
        needs_state: the backend reads the privileged state (send it).
        state_dim: widest privileged state it reads (columns), or None.
        image_size: ``(H, W)`` it resizes images to, or None.
        protocol_version: the server's protocol (1: no per-row stamps; 2: stamps in, per-row latencies out).
        backend: the server's backend kind (``"scripted"``, ``"openvla"``), or ``""``.
    """

    model_id: str
    control_period_steps: int
    needs_image: bool
    needs_state: bool
    state_dim: int | None = None
    image_size: tuple[int, int] | None = None
    protocol_version: int = PROTOCOL_VERSION
    backend: str = ""


def read_metadata(meta: Any) -> ServedSpec:
    """The :class:`ServedSpec` of a ``GET /metadata`` answer.

    A server that does not report ``needs_image`` is taken to need images (an OpenVLA server does), one without
    ``control_period_steps`` to plan for ``D = 4`` (a 5 Hz VLA), as :meth:`TeacherSpec.from_metadata
    <robot_rl.teachers.base.TeacherSpec.from_metadata>` does.

    Raises:
        ValueError: not a JSON object, or a field of the wrong type (named).
    """
    if not isinstance(meta, Mapping):
        raise ValueError(f"{METADATA_ROUTE}: expected a JSON object, got {type(meta).__name__}")
    size = meta.get("image_size")
    if size is not None and (not isinstance(size, (list, tuple)) or len(size) != 2):
        raise ValueError(f"{METADATA_ROUTE}: image_size must be [H, W] or null, got {size!r}")
    try:
        return ServedSpec(
            model_id=str(meta.get("model_id", "unknown")),
            control_period_steps=int(meta.get("control_period_steps") or 4),
            needs_image=bool(meta.get("needs_image", True)),
            needs_state=bool(meta.get("needs_state", False)),
            state_dim=None if meta.get("state_dim") is None else int(meta["state_dim"]),
            image_size=None if size is None else (int(size[0]), int(size[1])),
            protocol_version=int(meta.get("protocol_version", 1)),
            backend=str(meta.get("backend", "")),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{METADATA_ROUTE}: malformed field: {exc}") from None
