"""What every scripted planner shares: the privileged-state fields, the gripper commands, and motion planned
for an answer's control period (:class:`Motion`).

A planner is ``plan(motion, states) -> (actions, phases)``: ``states`` is ``(N, S) float64`` privileged state
(:data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT`; the field slices below come from it), ``actions`` ``(N, 7)``
period deltas in the env's ``pd_ee_delta_pose`` convention (:mod:`robot_rl.geometry`) and ``phases`` ``N``
phase names. Planners are stateless: the phase is inferred from the state alone, so a teacher can be queried
sparsely, for any subset of envs, in any order.

Why answers are planned for their period (issue 10): in ``vlajs`` training one answer is held for its
control period of ``D`` env steps (``robot_rl.guidance.targets.interpolate_targets``), and a VLA served at
5 Hz answers no more often either. With ``pd_ee_delta_pose`` a held command is a velocity: the controller
targets "current pose + delta" every step and the arm covers :data:`TRACKING_FRACTION` of that target per
env step, so a per-step P-controller held for ``D`` steps moves ``D`` times too far. :class:`Motion` asks
for :func:`period_gain` of a waypoint error over the period instead, which a held answer does not overshoot.
"""

from __future__ import annotations

import numpy as np

from robot_rl.envs.privileged import CUBE_STATE_DIM, PRIVILEGED_STATE_DIM, PRIVILEGED_STATE_LAYOUT
from robot_rl.geometry import (
    POS_SCALE_M,
    ROT_SCALE_RAD,
    matrix_to_rotvec,
    physical_rotation_to_command,
    quat_to_matrix,
)

__all__ = [
    "TCP_POS", "TCP_QUAT", "OBJ_POS", "OBJ_QUAT", "GOAL_POS", "IS_GRASPED", "GRIPPER_WIDTH", "OBJ_HALF_SIZE",
    "GOAL_QUAT", "OBJ_HALF_EXTENTS", "TOOL_POS", "TOOL_QUAT", "TOOL_GRASPED", "TOOL_HALF_EXTENTS",
    "STATE_DIM", "CUBE_STATE_DIM", "GRIPPER_OPEN", "GRIPPER_CLOSED", "TRACKING_FRACTION", "LAG_STEPS",
    "period_gain", "Motion", "scale_clip", "norm_clip", "wrap_angle", "down_orientation", "yaw_of", "quats",
    "QUAT_NORM_TOLERANCE",
]

# ----------------------------------------------------------------------------------------------
# Privileged-state fields (from robot_rl.envs.privileged: the one definition)

_L = PRIVILEGED_STATE_LAYOUT
TCP_POS, TCP_QUAT = _L["tcp_pos"], _L["tcp_quat"]
OBJ_POS, OBJ_QUAT = _L["obj_pos"], _L["obj_quat"]
GOAL_POS, GOAL_QUAT = _L["goal_pos"], _L["goal_quat"]
IS_GRASPED = _L["is_grasped"].start  #: 0/1 column
GRIPPER_WIDTH = _L["gripper_width"].start  #: m, sum of the finger joints
OBJ_HALF_SIZE = _L["obj_half_size"].start  #: m
OBJ_HALF_EXTENTS = _L["obj_half_extents"]
TOOL_POS, TOOL_QUAT = _L["tool_pos"], _L["tool_quat"]
TOOL_GRASPED = _L["tool_grasped"].start  #: 0/1 column
TOOL_HALF_EXTENTS = _L["tool_half_extents"]
STATE_DIM = PRIVILEGED_STATE_DIM

#: Largest deviation from 1 of the norm of a quaternion a planner reads.
QUAT_NORM_TOLERANCE = 0.05
_NAMES = {(sl.start, sl.stop): name for name, sl in _L.items()}


def quats(s: np.ndarray, block: slice) -> np.ndarray:
    """The ``(N, 4)`` wxyz quaternions in columns ``block`` (e.g. :data:`OBJ_QUAT`) of planner states ``s``, checked.

    Planners read their quaternions through this, so only the ones a planner reads must be unit: a cube task's
    position-only perception may leave an object quaternion it does not read at zero. A zero or tiny quaternion
    that a planner reads made its rotation fit fail (a 500 where a 422 is due).

    Raises:
        TeacherRequestError: naming ``states``, the block and its columns, when a row's norm is not 1 within
            :data:`QUAT_NORM_TOLERANCE` (or is NaN).
    """
    from robot_rl.teachers.base import TeacherRequestError

    q = s[:, block]
    norms = np.linalg.norm(np.asarray(q, dtype=np.float64), axis=1)
    bad = ~(np.abs(norms - 1.0) <= QUAT_NORM_TOLERANCE)
    if bad.any():
        name = _NAMES.get((block.start, block.stop), "quaternion")
        raise TeacherRequestError(
            "states", f"{name} (columns {block.start}:{block.stop}) must be a unit quaternion wxyz (norm 1 +- "
                      f"{QUAT_NORM_TOLERANCE}) for this task's planner; {int(bad.sum())} row(s) are not, e.g. norm "
                      f"{norms[bad][0]:.3g}")
    return q


#: Absolute gripper commands (the action's last component).
GRIPPER_OPEN = 1.0
GRIPPER_CLOSED = -1.0

# ----------------------------------------------------------------------------------------------
# Motion over a control period

#: Fraction of a held per-step command the arm covers in each env step. Measured on the CPU sim (Panda,
#: ``pd_ee_delta_pose``, PickCube-v1 home pose, commands 0.25 / 0.5 / 1 held 6-8 steps): the TCP moves
#: 0.040 x 0.1 m x c per step in x and z (z's first step about half of that) and turns 0.039 x 0.1 rad x c
#: about each axis; after a zero command it stops within one env step (residual < 1 mm, < 0.003 rad).
TRACKING_FRACTION = 0.4
#: The arm lags a new command by about this many env steps (z's first step covers half; measured as above).
LAG_STEPS = 0.5


def period_gain(period_steps: int) -> float:
    """Fraction of a waypoint error an answer held for ``D`` env steps asks to close: ``1 - LAG_STEPS / D``.

    0.5 at ``D = 1``, 0.75 at 2, 0.875 at 4. The feedback comes once per period and the arm lags each new
    command by ~half a step, so a short period must ask for less: at ``D = 1`` a gain of 0.7 already sets up
    a hover/descend limit cycle over the cube (measured on PickCube), while at ``D = 4`` a gain of 0.5 is too
    slow for the 50-step horizons.

    Raises:
        ValueError: ``period_steps < 1``.
    """
    if int(period_steps) < 1:
        raise ValueError(f"period_steps must be >= 1, got {period_steps}")
    return 1.0 - LAG_STEPS / int(period_steps)


def scale_clip(vec: np.ndarray, limit: float | np.ndarray) -> np.ndarray:
    """Scale each ``(N, 3)`` row down (keeping its direction) so every component is in ``[-limit, limit]``."""
    peak = np.max(np.abs(vec), axis=-1, keepdims=True)
    return vec * np.minimum(1.0, limit / np.maximum(peak, 1e-12))


def norm_clip(vec: np.ndarray, limit: float) -> np.ndarray:
    """Scale each ``(N, 3)`` row down so its Euclidean norm is at most ``limit``."""
    n = np.linalg.norm(vec, axis=-1, keepdims=True)
    return vec * np.minimum(1.0, limit / np.maximum(n, 1e-12))


class Motion:
    """Period commands for one control period of ``D`` env steps: a planner's only motion API.

    Args:
        period_steps: ``D`` >= 1, env steps one answer is held for.
        position_gain: multiplier on :func:`period_gain` for positions (1 = the tuned default).

    Raises:
        ValueError: ``period_steps < 1`` or ``position_gain <= 0``.
    """

    def __init__(self, period_steps: int, position_gain: float = 1.0):
        if int(period_steps) < 1:
            raise ValueError(f"period_steps must be >= 1, got {period_steps}")
        if not position_gain > 0:
            raise ValueError(f"position_gain must be > 0, got {position_gain}")
        self.period_steps = int(period_steps)
        self.position_gain = float(position_gain)

    def position(self, tcp: np.ndarray, target: np.ndarray, gain: float | np.ndarray | None = None) -> np.ndarray:
        """``(N, 3)`` period position command that takes the TCP towards ``target`` over the period.

        The motion asked for over the period is ``gain`` times the error (default ``position_gain *
        period_gain(D)``). The per-step command is that motion divided by ``D`` and by what one held unit
        of command moves the arm per env step (:data:`TRACKING_FRACTION` x 0.1 m), scaled down (direction
        kept) so each component is within [-1, 1]; the answer is the per-step command times ``D`` (the
        trainer divides by ``D`` again). So ``answer * TRACKING_FRACTION * 0.1 m`` is the displacement the
        answer predicts over its period.

        Args:
            tcp: ``(N, 3)`` TCP positions, m (world = robot-base axes in these tasks).
            target: ``(N, 3)`` waypoints, m.
            gain: scalar or ``(N, 1)``: fraction of the error to close over the period.
        """
        d = self.period_steps
        g = self.position_gain * period_gain(d) if gain is None else gain
        per_step = scale_clip(g * (target - tcp) / (d * TRACKING_FRACTION * POS_SCALE_M), 1.0)
        return per_step * d

    def rotation(self, tcp_quat: np.ndarray, desired: np.ndarray, gain: float | None = None) -> np.ndarray:
        """``(N, 3)`` period rotation command turning the TCP orientation ``(N, 4)`` wxyz towards ``desired``
        ``(N, 3, 3)`` over the period.

        The world-frame error ``log(R_des R^T)`` times ``gain`` (default :func:`period_gain`) is spread over
        the ``D`` steps; each step's share is divided by :data:`TRACKING_FRACTION`, clipped to the
        controller's 0.1 rad per env step (it clips the command norm to 1), mapped through the controller's
        sign convention (ManiSkill issue #1469) and multiplied by ``D``.
        """
        r = quat_to_matrix(tcp_quat)
        err = matrix_to_rotvec(desired @ np.swapaxes(r, -1, -2))
        d = self.period_steps
        g = period_gain(d) if gain is None else gain
        per_step = norm_clip(g * err / (d * TRACKING_FRACTION), ROT_SCALE_RAD * 0.999)
        return physical_rotation_to_command(per_step * d, d)


# ----------------------------------------------------------------------------------------------
# Gripper orientation helpers (the Panda hand pointing down)


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles (rad) wrapped into [-π, π)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def down_orientation(yaw: np.ndarray) -> np.ndarray:
    """``(N,)`` yaw (rad) -> ``(N, 3, 3)`` gripper-pointing-down orientation: ``Rz(yaw) @ diag(1, -1, -1)``.

    At yaw 0 this is the Panda TCP's initial orientation in these tasks (quat ``wxyz ~ (0, 1, 0, 0)``): hand
    x along world +x, approach axis (hand z) along world -z, fingers opening along world y.
    """
    c, s = np.cos(yaw), np.sin(yaw)
    mats = np.zeros((len(yaw), 3, 3))
    mats[:, 0, 0], mats[:, 0, 1] = c, s
    mats[:, 1, 0], mats[:, 1, 1] = s, -c
    mats[:, 2, 2] = -1.0
    return mats


def yaw_of(mats: np.ndarray) -> np.ndarray:
    """Yaw (rad) of each ``(N, 3, 3)`` frame's x axis projected on the horizontal plane."""
    return np.arctan2(mats[:, 1, 0], mats[:, 0, 0])

