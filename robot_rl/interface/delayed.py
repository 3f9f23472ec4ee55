"""The delayed semantic interface: the teacher's last, stale answer, its age and the motion since, as policy inputs.

After TIC-VLA (Huang et al. 2026; its released code is planar: ``(dx, dy)``, a yaw rate and ``Δt``; FACTS.md),
adapted to a 6-DoF arm (DESIGN.md, "Delayed semantic interface"). A query made from the observation of env step
``q`` is answered at step ``q + d``; from then on, at every step ``t`` of the same episode, with ``h`` the last
delivered answer:

* ``hint = h`` (7): the answer in the env's normalized ``pd_ee_delta_pose`` units over the teacher's period ``D``
  (:mod:`robot_rl.geometry`; position and rotation may reach ``D``, the gripper is absolute);
* ``hint_valid`` (1): 1 once an answer has arrived this episode;
* ``dt = (t - q) · 0.05 s`` (1): the age of the observation the answer was computed from;
* ``dp`` (7): the TCP's translation ``p_t - p_q`` in the robot base frame (3, m; the Panda base has the world's
  axes in these tasks), its rotation ``rotvec(R_q^T R_t)`` (3, rad: the turn since ``q``, in the TCP frame of
  step ``q``) and the gripper width change ``w_t - w_q`` (1, m).

Before the first answer of an episode every feature is 0. :class:`DelayedInterface` keeps that state per env;
the ``teacher`` observation group (:func:`teacher_group`) is its vector, and :func:`compensated_targets` turns a
late answer into the displacement still remaining (``interface.compensate_targets``).

At deployment (the ROS node, :mod:`robot_rl.deploy.teacher`) the same :class:`DelayedInterface` holds the group:
``dt`` is then measured on a clock (``now - t_q``, seconds, from the stamp of the observation the answer was
computed from: :meth:`DelayedInterface.features_of` with ``now_s``), and ``dp`` comes from the TCP pose and gripper
width the robot reported at ``t_q`` and now, put into the privileged-state columns ``dp`` reads
(:func:`motion_state`).
"""

from __future__ import annotations

import numpy as np

from robot_rl.envs.privileged import PRIVILEGED_STATE_DIM
from robot_rl.envs.privileged import PRIVILEGED_STATE_LAYOUT as _L
from robot_rl.geometry import (
    ACTION_DIM,
    CONTROL_PERIOD_S,
    GRIPPER_INDEX,
    POS_SCALE_M,
    POS_SLICE,
    ROT_SLICE,
    euler_xyz_to_matrix,
    matrix_to_rotvec,
    physical_rotation_to_command,
    quat_to_matrix,
    rotation_command_to_delta,
)
from robot_rl.observation import ObsField, ObsGroup

__all__ = ["FEATURE_FIELDS", "DelayedInterface", "teacher_group", "compensated_targets", "motion_since",
           "motion_state", "features_of_group"]

_HINT_COMPONENTS = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")

#: Fields of each ``interface.features`` entry, in vector order.
FEATURE_FIELDS: dict[str, tuple[ObsField, ...]] = {
    "hint": (ObsField(
        "hint", 7, "robot_base", "pd_ee_delta_pose units over the teacher's period: 1 = 0.1 m / 0.1 rad commanded "
        "(rotation sign -1, ManiSkill #1469); gripper -1 closed .. 1 open",
        "the last teacher answer delivered this episode (0 before the first)", _HINT_COMPONENTS,
        source="teacher(hint)"),),
    "hint_valid": (ObsField("hint_valid", 1, "none", "0 or 1", "1 once an answer has arrived this episode",
                            ("hint_valid",), source="teacher(hint_valid)"),),
    "dt": (ObsField("dt", 1, "none", "s", "age of the observation the hint was computed from: (t - q) * 0.05 s; "
                    "0 before the first answer", ("dt",), source="teacher(dt)"),),
    "dp": (
        ObsField("dp_pos", 3, "robot_base", "m", "TCP translation p_t - p_q since the hint's observation",
                 ("x", "y", "z"), source="teacher(dp_pos)"),
        ObsField("dp_rot", 3, "tcp_at_query", "rad", "TCP rotation since the hint's observation, rotvec(R_q^T R_t), "
                 "in the TCP frame of step q", ("rx", "ry", "rz"), source="teacher(dp_rot)"),
        ObsField("dp_width", 1, "none", "m", "gripper width change w_t - w_q since the hint's observation",
                 ("dwidth",), source="teacher(dp_width)"),
    ),
}


def teacher_group(features: list[str] | tuple[str, ...]) -> ObsGroup:
    """The ``teacher`` observation group of ``interface.features`` (in :data:`FEATURE_FIELDS` order).

    Raises:
        ValueError: an unknown feature, or none.
    """
    unknown = [f for f in features if f not in FEATURE_FIELDS]
    if unknown or not features:
        raise ValueError(f"interface.features: {unknown or 'none given'} (known: {', '.join(FEATURE_FIELDS)})")
    fields = tuple(f for name in FEATURE_FIELDS if name in features for f in FEATURE_FIELDS[name])
    return ObsGroup("teacher", fields, "the delayed semantic interface: the teacher's last answer, its age and the "
                                       "end effector's motion since (robot_rl/interface)", required=False)


def features_of_group(group: ObsGroup) -> tuple[str, ...]:
    """The ``interface.features`` whose :func:`teacher_group` is ``group`` (an exported policy's ``teacher`` group).

    Raises:
        ValueError: ``group`` is not the teacher group of any feature list (a field unknown, out of order or of
            another size; the message names the first difference).
    """
    names = [f.name for f in group.fields]
    features = tuple(k for k, fields in FEATURE_FIELDS.items() if fields[0].name in names)
    try:
        expected = teacher_group(features)
    except ValueError:
        raise ValueError(f"observation group {group.name!r}: fields {names} are no teacher features "
                         f"(known: {', '.join(FEATURE_FIELDS)})") from None
    for i, (a, b) in enumerate(zip(expected.fields, group.fields)):
        for attr in ("name", "size", "frame", "unit", "components", "source"):
            if getattr(a, attr) != getattr(b, attr):
                raise ValueError(f"observation field teacher.{b.name} (field {i}): {attr} {getattr(b, attr)!r}, "
                                 f"this version's is {getattr(a, attr)!r}")
    if len(expected.fields) != len(group.fields):
        raise ValueError(f"observation group teacher: fields {names}, the features {list(features)} give "
                         f"{[f.name for f in expected.fields]}")
    return features


def motion_state(tcp_pos: np.ndarray, tcp_quat: np.ndarray, gripper_width: np.ndarray) -> np.ndarray:
    """Privileged states ``(N, 38)`` that hold only what ``dp`` reads (:func:`motion_since`): the TCP position
    ``(N, 3)`` (m, world or robot-base frame: the axes are the same), its quaternion ``(N, 4)`` wxyz and the gripper
    width ``(N,)`` (m, sum of the finger joints); every other column 0.
    """
    p = np.atleast_2d(np.asarray(tcp_pos, dtype=np.float64))
    out = np.zeros((len(p), PRIVILEGED_STATE_DIM))
    out[:, _L["tcp_pos"]] = p
    out[:, _L["tcp_quat"]] = np.atleast_2d(np.asarray(tcp_quat, dtype=np.float64))
    out[:, _L["gripper_width"].start] = np.asarray(gripper_width, dtype=np.float64).reshape(-1)
    return out


def motion_since(states_q: np.ndarray, states_t: np.ndarray) -> np.ndarray:
    """``dp`` ``(N, 7)``: translation (m), rotation ``rotvec(R_q^T R_t)`` (rad) and gripper width change (m)
    of the TCP from privileged states ``(N, 38)`` at step ``q`` to step ``t`` (world axes = robot-base axes).
    """
    sq, st = np.asarray(states_q, dtype=np.float64), np.asarray(states_t, dtype=np.float64)
    out = np.zeros((len(sq), 7))
    out[:, 0:3] = st[:, _L["tcp_pos"]] - sq[:, _L["tcp_pos"]]
    rq, rt = quat_to_matrix(sq[:, _L["tcp_quat"]]), quat_to_matrix(st[:, _L["tcp_quat"]])
    out[:, 3:6] = matrix_to_rotvec(np.swapaxes(rq, -1, -2) @ rt)
    w = _L["gripper_width"].start
    out[:, 6] = st[:, w] - sq[:, w]
    return out


def compensated_targets(hints: np.ndarray, states_q: np.ndarray, states_t: np.ndarray, steps_left: np.ndarray,
                        period_steps: int) -> np.ndarray:
    """Per-step targets ``(N, 7)`` of late answers: the displacement the teacher asked for, minus what the arm has
    moved since the answer's observation, spread over the period's remaining steps.

    Position: the answer asked for ``h_pos · 0.1 m`` over its period (the protocol's unit, ``teachers/base.py``);
    the remaining displacement is ``h_pos · 0.1 m − Δp_pos``, in action units ``/ 0.1 m``, per step
    ``/ steps_left``. Rotation: the answer's turn over the period ``R_h`` (its per-step command through the
    controller's sign, pre-multiplied ``D`` times about the base axes) composed with the inverse of the turn since
    ``R_Δ = R_t R_q^T``: ``R_rem = R_h R_Δ⁻¹``, per step its ``1 / steps_left`` fraction, back through the sign.
    The gripper is the answer's (absolute). An overshoot flips the position target.

    Args:
        hints: ``(N, 7)`` answers (period deltas).
        states_q: ``(N, 38)`` privileged states at the answer's observation.
        states_t: ``(N, 38)`` privileged states now.
        steps_left: ``(N,)`` steps of the answer's period still ahead (>= 1; a late answer's is 1).
        period_steps: ``D``.

    Returns:
        ``(N, 7) float32`` per-step targets, position and rotation clipped to the controller's range.
    """
    h = np.asarray(hints, dtype=np.float64)
    k = np.maximum(np.asarray(steps_left, dtype=np.float64), 1.0)[:, None]
    sq, st = np.asarray(states_q, dtype=np.float64), np.asarray(states_t, dtype=np.float64)
    out = np.zeros((len(h), ACTION_DIM))
    moved = st[:, _L["tcp_pos"]] - sq[:, _L["tcp_pos"]]
    out[:, POS_SLICE] = (h[:, POS_SLICE] * POS_SCALE_M - moved) / POS_SCALE_M / k
    step_rot = euler_xyz_to_matrix(rotation_command_to_delta(h[:, ROT_SLICE] / period_steps))
    r_h = np.broadcast_to(np.eye(3), step_rot.shape).copy()
    for _ in range(int(period_steps)):
        r_h = step_rot @ r_h
    rq, rt = quat_to_matrix(sq[:, _L["tcp_quat"]]), quat_to_matrix(st[:, _L["tcp_quat"]])
    r_delta = rt @ np.swapaxes(rq, -1, -2)
    remaining = matrix_to_rotvec(r_h @ np.swapaxes(r_delta, -1, -2))
    out[:, ROT_SLICE] = physical_rotation_to_command(remaining / k, 1)
    out[:, GRIPPER_INDEX] = h[:, GRIPPER_INDEX]
    out[:, POS_SLICE] = np.clip(out[:, POS_SLICE], -1.0, 1.0)
    norm = np.linalg.norm(out[:, ROT_SLICE], axis=-1, keepdims=True)
    out[:, ROT_SLICE] *= np.minimum(1.0, 1.0 / np.maximum(norm, 1e-12))
    return out.astype(np.float32)


class DelayedInterface:
    """Per-env state of the delayed interface: the last delivered answer, the step and the privileged state
    of the observation it was computed from, and the env's step in its episode.

    Args:
        num_envs: ``N``.
        features: ``interface.features`` (the ``teacher`` group's features; may be empty: the state is kept
            for the guidance targets all the same).
        period_s: env control period (s).

    Attributes:
        hint ``(N, 7)``, valid ``(N,) bool``, query_step ``(N,)`` (env step of the answer's observation),
        states_q ``(N, 38)`` (privileged state then), step ``(N,)`` (env step of the current observation in its
        episode), query_time_s ``(N,)`` (the answer's observation on a clock, s: deployment's ``dt``).
    """

    def __init__(self, num_envs: int, features: list[str] | tuple[str, ...] = (), period_s: float = CONTROL_PERIOD_S):
        self.num_envs = int(num_envs)
        self.features = tuple(features)
        self.group = teacher_group(self.features) if self.features else None
        self.period_s = float(period_s)
        self.hint = np.zeros((self.num_envs, ACTION_DIM))
        self.valid = np.zeros(self.num_envs, dtype=bool)
        self.query_step = np.zeros(self.num_envs, dtype=np.int64)
        self.states_q = np.zeros((self.num_envs, PRIVILEGED_STATE_DIM))
        self.step = np.zeros(self.num_envs, dtype=np.int64)
        self.query_time_s = np.zeros(self.num_envs)

    @property
    def size(self) -> int:
        """Length of the ``teacher`` group's vector (0 without features)."""
        return self.group.size if self.group is not None else 0

    def reset(self, env_indices: np.ndarray) -> None:
        """Episode start for ``env_indices``: no hint, step 0."""
        idx = np.asarray(env_indices, dtype=np.int64)
        self.hint[idx] = 0.0
        self.valid[idx] = False
        self.query_step[idx] = 0
        self.step[idx] = 0
        self.query_time_s[idx] = 0.0

    def tick(self, dones: np.ndarray) -> None:
        """One env step on: every env's step grows; envs whose episode ended (``dones (N,) bool``) start anew."""
        self.step += 1
        self.reset(np.flatnonzero(np.asarray(dones, dtype=bool)))

    def deliver(self, env_indices: np.ndarray, answers: np.ndarray, query_steps: np.ndarray,
                states_q: np.ndarray, query_times_s: np.ndarray | None = None) -> None:
        """Answers ``(k, 7)`` arrive for ``env_indices (k,)``; they were computed from the observations of
        episode steps ``query_steps (k,)`` whose privileged states were ``states_q (k, 38)`` (only the columns of
        :func:`motion_state` are read) and, at deployment, stamped ``query_times_s (k,)`` (s, a clock's).
        """
        idx = np.asarray(env_indices, dtype=np.int64)
        self.hint[idx] = answers
        self.valid[idx] = True
        self.query_step[idx] = query_steps
        self.states_q[idx] = states_q
        if query_times_s is not None:
            self.query_time_s[idx] = query_times_s

    def features_of(self, states: np.ndarray | None, now_s: float | None = None) -> np.ndarray:
        """The ``teacher`` group ``(N, size) float32`` for the current privileged states ``(N, 38)`` (needed
        by ``dp`` only; ``None`` otherwise).

        ``dt`` is ``(step - query_step) * period_s`` (env steps, training and evaluation), or, when ``now_s`` is
        given, ``now_s - query_time_s`` (seconds on the clock of :meth:`deliver`'s ``query_times_s``: deployment).

        Raises:
            ValueError: no features were configured.
        """
        if self.group is None:
            raise ValueError("interface.features is empty: there is no teacher group")
        v = self.valid[:, None]
        parts = []
        if "hint" in self.features:
            parts.append(np.where(v, self.hint, 0.0))
        if "hint_valid" in self.features:
            parts.append(v.astype(np.float64))
        if "dt" in self.features:
            age = (self.step - self.query_step) * self.period_s if now_s is None else float(now_s) - self.query_time_s
            parts.append(np.where(v, age[:, None], 0.0))
        if "dp" in self.features:
            dp = np.zeros((self.num_envs, 7))
            if self.valid.any():  # before an episode's first answer there is no observation to measure from
                dp[self.valid] = motion_since(self.states_q[self.valid], np.asarray(states)[self.valid])
            parts.append(dp)
        return np.concatenate(parts, axis=1).astype(np.float32)
