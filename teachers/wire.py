"""The teacher server's wire format and OpenVLA's action convention (numpy + json-numpy only).

Shared by the server (:mod:`robot_rl.teachers.server`), the client
(:mod:`robot_rl.teachers.remote`) and the OpenVLA backend, so each conversion lives in one place.

Two routes, two action conventions:

- ``POST /act`` is OpenVLA's reference protocol (``vla-scripts/deploy.py``): a json-numpy body
  ``{"image": uint8 (H, W, 3), "instruction": str, "unnorm_key": str | None}`` and a json-numpy
  array of 7 floats back, in **OpenVLA's convention**: ``[dx, dy, dz]`` in metres,
  ``[droll, dpitch, dyaw]`` in radians (robot-base frame), gripper in ``[0 (closed), 1 (open)]``.
- ``POST /act/batch`` is ours: ``B`` rows in (with optional per-row ``obs_steps`` / ``obs_times_s``),
  ``(B, 7)`` actions back in the **env convention** of :mod:`robot_rl.teachers.base` (normalized
  ``pd_ee_delta_pose`` over the teacher period, gripper ``[-1 (closed), +1 (open)]``), plus the
  server-side latency (per request and per row), the per-row notes and the model id.

Arrays travel as json-numpy objects ``{"__numpy__": base64, "dtype": str, "shape": list}``;
no pickle anywhere (object dtypes are refused).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_rl.geometry import CONTROLLER_ROT_SIGN, GRIPPER_INDEX, POS_SCALE_M, POS_SLICE, ROT_SCALE_RAD, ROT_SLICE

from .base import TeacherRequest

#: Action convention names reported by ``GET /metadata``.
ENV_CONVENTION = (
    "pd_ee_delta_pose normalized over the teacher period: [dx,dy,dz] x 0.1 m, [droll,dpitch,dyaw] x 0.1 rad "
    "(controller sign -1, ManiSkill #1469), gripper -1 closed .. +1 open"
)
OPENVLA_CONVENTION = "OpenVLA: [dx,dy,dz] m, [droll,dpitch,dyaw] rad (robot-base frame), gripper 0 closed .. 1 open"

#: Header carrying the API key (``robot-rl teacher serve --api-key``), and the environment variable
#: the server and :class:`~robot_rl.teachers.remote.RemoteTeacher` read the key from.
API_KEY_HEADER = "X-API-Key"
API_KEY_ENV = "ROBOT_RL_TEACHER_API_KEY"

#: dtype kinds accepted inside json-numpy payloads (no object / void / string arrays).
_NUMERIC_KINDS = set("biuf")


def openvla_to_env(raw: np.ndarray) -> np.ndarray:
    """Map OpenVLA-convention actions to the env convention.

    Args:
        raw: ``(B, 7)`` or ``(7,)``: ``[dx, dy, dz]`` m, ``[droll, dpitch, dyaw]`` rad over the
            teacher's control period, in the robot-base frame (ManiSkill's ``pd_ee_delta_pose``
            translates in the root frame and rotates about root-aligned axes, so no frame change
            is needed), gripper in ``[0, 1]``.

    Returns:
        ``float32`` array of the same shape: position / 0.1 m, rotation / (0.1 rad x -1), gripper
        ``2 g - 1``. NaN rows stay NaN (the trainer drops them as invalid).
    """
    raw = np.asarray(raw, dtype=np.float64)
    out = np.empty_like(raw)
    out[..., POS_SLICE] = raw[..., POS_SLICE] / POS_SCALE_M
    out[..., ROT_SLICE] = raw[..., ROT_SLICE] / (ROT_SCALE_RAD * CONTROLLER_ROT_SIGN)
    out[..., GRIPPER_INDEX] = 2.0 * raw[..., GRIPPER_INDEX] - 1.0
    return out.astype(np.float32)


def env_to_openvla(actions: np.ndarray) -> np.ndarray:
    """Inverse of :func:`openvla_to_env`: ``(B, 7)`` env-convention -> OpenVLA-convention ``float64``."""
    a = np.asarray(actions, dtype=np.float64)
    out = np.empty_like(a)
    out[..., POS_SLICE] = a[..., POS_SLICE] * POS_SCALE_M
    out[..., ROT_SLICE] = a[..., ROT_SLICE] * (ROT_SCALE_RAD * CONTROLLER_ROT_SIGN)
    out[..., GRIPPER_INDEX] = 0.5 * (a[..., GRIPPER_INDEX] + 1.0)
    return out


def openvla_prompt(instruction: str) -> str:
    """OpenVLA's prompt template (``vla-scripts/deploy.py``, ``get_openvla_prompt`` for v0.1+ models)."""
    return f"In: What action should the robot take to {instruction.lower()}?\nOut:"


# ----------------------------------------------------------------------------------------------
# json-numpy payloads


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


def nested_latency(total_s: float, inner_s: np.ndarray | None, n: int) -> np.ndarray:
    """Per-row latency of ``n`` rows answered inside one span of ``total_s`` seconds.

    ``inner_s`` ``(n,)`` are the rows' own latencies as the inner layer measured them (the backend's
    for the server, the server's for the client); the time of the span not spent inside
    (``total_s - max(inner_s)``, at least 0: queueing, batching, network) is added to each. Without
    ``inner_s`` every row took ``total_s``. Returns ``(n,) float64``.
    """
    if inner_s is None or len(inner_s) != n or n == 0:
        return np.full(n, float(total_s))
    inner = np.asarray(inner_s, dtype=np.float64)
    return inner + max(float(total_s) - float(inner.max()), 0.0)


def encode_batch_request(request: TeacherRequest, stamps: bool = True) -> dict:
    """The ``POST /act/batch`` body for ``request`` (json-numpy arrays stay numpy until dumped).

    ``stamps=False`` leaves out ``obs_steps`` and ``obs_times_s`` (a protocol-1 server refuses them).
    """
    body: dict[str, Any] = {"instructions": list(request.instructions)}
    if request.images is not None:
        body["images"] = np.ascontiguousarray(request.images, dtype=np.uint8)
    if request.states is not None:
        body["states"] = np.ascontiguousarray(request.states, dtype=np.float32)
    if request.task_ids is not None:
        body["task_ids"] = list(request.task_ids)
    if request.scratchpads is not None:
        body["scratchpads"] = list(request.scratchpads)
    if request.unnorm_key is not None:
        body["unnorm_key"] = request.unnorm_key
    if stamps and request.obs_steps is not None:
        body["obs_steps"] = np.ascontiguousarray(request.obs_steps, dtype=np.int64)
    if stamps and request.obs_times_s is not None:
        body["obs_times_s"] = np.ascontiguousarray(request.obs_times_s, dtype=np.float64)
    return body
