"""Teacher answers -> per-step targets ``ã_t`` and a validity mask (VLAJS, Moroncelli et al. 2026).

A teacher answers at a lower rate than the env is controlled: one answer is the end-effector delta
over the teacher's control period of ``D`` env steps (``teachers/base.py`` gives the convention).
The paper spreads it over those ``D`` steps by linear interpolation: the commanded displacement
grows linearly from 0 to the full delta, so each of the ``D`` per-step targets is ``delta / D`` on
the position and rotation components. The gripper is an absolute command and is held.
"""

from __future__ import annotations

import numpy as np

from robot_rl.geometry import ACTION_DIM, POS_SLICE, ROT_SLICE

# What a usable answer is, is part of the teacher protocol (the ROS node applies the same rule to a hint):
# ``validate_teacher_actions`` and ``RANGE_TOL`` live in robot_rl.teacher_protocol and are re-exported here.
from robot_rl.teacher_protocol import RANGE_TOL, validate_teacher_actions

__all__ = ["RANGE_TOL", "TargetTracker", "interpolate_targets", "validate_teacher_actions"]


def interpolate_targets(deltas: np.ndarray, period_steps: int, valid: np.ndarray | None = None):
    """Spread each teacher delta linearly over ``D`` control steps.

    Args:
        deltas: ``(B, 7)`` teacher deltas over one control period (normalized ``pd_ee_delta_pose``
            units, so position/rotation may reach ``D``).
        period_steps: ``D`` >= 1.
        valid: optional ``(B,) bool``; invalid rows get all-False validity (and zero targets).

    Returns:
        ``(targets, mask)``: ``targets (B, D, 7) float32`` with ``targets[:, k, :6] = deltas[:, :6] / D``
        and ``targets[:, k, 6] = deltas[:, 6]`` for every ``k``; ``mask (B, D) bool``.

    Raises:
        ValueError: ``D < 1`` or ``deltas`` not ``(B, 7)``.
    """
    if period_steps < 1:
        raise ValueError(f"period_steps (D) must be >= 1, got {period_steps}")
    deltas = np.asarray(deltas, dtype=np.float32)
    if deltas.ndim != 2 or deltas.shape[1] != ACTION_DIM:
        raise ValueError(f"deltas must be (B, {ACTION_DIM}), got {deltas.shape}")
    b = deltas.shape[0]
    valid = np.ones(b, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    per_step = deltas.copy()
    per_step[:, POS_SLICE] /= period_steps
    per_step[:, ROT_SLICE] /= period_steps
    per_step[~valid] = 0.0
    targets = np.repeat(per_step[:, None, :], period_steps, axis=1)
    mask = np.repeat(valid[:, None], period_steps, axis=1)
    return targets, mask


class TargetTracker:
    """Per-env queue of interpolated targets: which target applies at the current env step.

    After a query, env ``i`` has ``D`` per-step targets; each env step consumes one. An episode end
    drops the rest (a target planned in one episode says nothing about the next), and a newer
    answer replaces an older one.

    Args:
        num_envs: number of envs ``N``.
        period_steps: ``D``.
    """

    def __init__(self, num_envs: int, period_steps: int):
        if period_steps < 1:
            raise ValueError(f"period_steps (D) must be >= 1, got {period_steps}")
        self.num_envs = num_envs
        self.period_steps = period_steps
        self.targets = np.zeros((num_envs, period_steps, ACTION_DIM), dtype=np.float32)
        self.mask = np.zeros((num_envs, period_steps), dtype=bool)
        self.age = np.full(num_envs, period_steps, dtype=np.int64)  # age >= D: nothing queued

    @property
    def active(self) -> np.ndarray:
        """``(N,) bool``: envs that still have a queued target for the current step."""
        return self.age < self.period_steps

    def set(self, env_indices: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> None:
        """Queue ``targets (k, D, 7)`` and ``mask (k, D)`` for ``env_indices (k,)``, starting now."""
        env_indices = np.asarray(env_indices, dtype=np.int64)
        self.targets[env_indices] = targets
        self.mask[env_indices] = mask
        self.age[env_indices] = 0

    def current(self) -> tuple[np.ndarray, np.ndarray]:
        """The target for the current env step: ``(targets (N, 7), valid (N,) bool)``."""
        idx = np.minimum(self.age, self.period_steps - 1)
        rows = np.arange(self.num_envs)
        valid = self.active & self.mask[rows, idx]
        targets = np.where(valid[:, None], self.targets[rows, idx], 0.0).astype(np.float32)
        return targets, valid

    def advance(self, dones: np.ndarray) -> None:
        """Move every env one step on; ``dones (N,) bool`` ends the queue of envs whose episode ended."""
        self.age = np.minimum(self.age + 1, self.period_steps)
        self.age[np.asarray(dones, dtype=bool)] = self.period_steps
