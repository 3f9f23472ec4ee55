"""The teacher server's wire format and OpenVLA's action convention (numpy + json-numpy only).

Shared by the server (:mod:`robot_rl.teachers.server`), the client
(:mod:`robot_rl.teachers.remote`) and the OpenVLA backend, so each conversion lives in one place. The pieces the
ROS node's teacher client uses too (the API key header, the ``/act/batch`` body and answer, json-numpy checks,
the protocol version) are in :mod:`robot_rl.teacher_protocol`, which ``deploy/`` imports instead of this package.

Two routes, two action conventions:

- ``POST /act`` is OpenVLA's reference protocol (``vla-scripts/deploy.py``): a json-numpy body
  ``{"image": uint8 (H, W, 3), "instruction": str, "unnorm_key": str | None}`` and a json-numpy
  array of 7 floats back, in **OpenVLA's convention**: ``[dx, dy, dz]`` in metres,
  ``[droll, dpitch, dyaw]`` in radians (robot-base frame), gripper in ``[0 (closed), 1 (open)]``.
- ``POST /act/batch`` is ours: ``B`` rows in (with optional per-row ``obs_steps`` / ``obs_times_s`` and
  ``scratchpads``, each text at most :data:`~robot_rl.teacher_protocol.MAX_SCRATCHPAD_CHARS` characters),
  ``(B, 7)`` actions back in the **env convention** of :mod:`robot_rl.teachers.base` (normalized
  ``pd_ee_delta_pose`` over the teacher period, gripper ``[-1 (closed), +1 (open)]``), plus the
  server-side latency (per request and per row), the per-row notes and the model id.

Arrays travel as json-numpy objects ``{"__numpy__": base64, "dtype": str, "shape": list}``;
no pickle anywhere (object dtypes are refused).
"""

from __future__ import annotations

import json_numpy
import numpy as np

from robot_rl.geometry import CONTROLLER_ROT_SIGN, GRIPPER_INDEX, POS_SCALE_M, POS_SLICE, ROT_SCALE_RAD, ROT_SLICE
from robot_rl.teacher_protocol import API_KEY_ENV, API_KEY_HEADER, batch_body, check_array

from .base import TeacherRequest

#: Action convention names reported by ``GET /metadata``.
ENV_CONVENTION = (
    "pd_ee_delta_pose normalized over the teacher period: [dx,dy,dz] x 0.1 m, [droll,dpitch,dyaw] x 0.1 rad "
    "(controller sign -1, ManiSkill #1469), gripper -1 closed .. +1 open"
)
OPENVLA_CONVENTION = "OpenVLA: [dx,dy,dz] m, [droll,dpitch,dyaw] rad (robot-base frame), gripper 0 closed .. 1 open"

__all__ = ["API_KEY_ENV", "API_KEY_HEADER", "ENV_CONVENTION", "OPENVLA_CONVENTION", "check_array",
           "encode_batch_request", "env_to_openvla", "nested_latency", "openvla_json", "openvla_prompt",
           "openvla_to_env"]


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


def openvla_json(content: object) -> bytes:
    """``content`` as OpenVLA's reference server sends it: Starlette's ``JSONResponse.render`` (compact separators
    ``(",", ":")``, ``ensure_ascii=False``, ``allow_nan=False``, UTF-8) with ``json_numpy.patch()`` active, as in
    ``vla-scripts/deploy.py``; numpy arrays become json-numpy objects.

    Raises:
        ValueError: a NaN or inf outside an array (``allow_nan=False``, as Starlette).
    """
    return json_numpy.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                            separators=(",", ":")).encode("utf-8")


def openvla_prompt(instruction: str) -> str:
    """OpenVLA's prompt template (``vla-scripts/deploy.py``, ``get_openvla_prompt`` for v0.1+ models)."""
    return f"In: What action should the robot take to {instruction.lower()}?\nOut:"


# ----------------------------------------------------------------------------------------------
# json-numpy payloads (the shared pieces: robot_rl.teacher_protocol)


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
    return batch_body(request.instructions, images=request.images, states=request.states, task_ids=request.task_ids,
                      scratchpads=request.scratchpads, unnorm_key=request.unnorm_key,
                      obs_steps=request.obs_steps if stamps else None,
                      obs_times_s=request.obs_times_s if stamps else None)
