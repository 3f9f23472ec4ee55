"""PushCube planner: behind the cube (opposite the goal) at a safe height, down, push it to the goal.

Phases (inferred per row from the state alone, numpy batched): ``"approach"`` (to the point behind the cube
at a safe height), ``"descend"`` (down to pushing height), ``"push"`` (along the cube->goal line, lateral
error corrected), ``"retreat"`` (up, when low but misaligned), ``"hold"`` (cube within
:data:`DONE_RADIUS` of the goal centre: stay). Gripper closed throughout. The push is fast (full speed until
near the goal): the cube slides on into the goal region.

Reads the first 20 privileged-state entries (:data:`~robot_rl.teachers.plans.common.CUBE_STATE_DIM`).
Measured: ``benchmarks/teacher_competence.py`` (README, Teachers).
"""

from __future__ import annotations

import numpy as np

from robot_rl.geometry import ACTION_DIM, GRIPPER_INDEX, POS_SLICE, ROT_SLICE, quat_to_matrix
from robot_rl.teachers.plans.common import (
    GOAL_POS,
    GRIPPER_CLOSED,
    OBJ_HALF_SIZE,
    OBJ_POS,
    TCP_POS,
    TCP_QUAT,
    Motion,
    down_orientation,
    quats,
    yaw_of,
)

# Geometry of the plan (metres). Measured/tuned in the simulator, see tests/teachers.
BEHIND_GAP = 0.025  # TCP distance behind the cube face before pushing
PUSH_Z = 0.018  # TCP height above the table (z = 0) while pushing; cube centre is at 0.02
SAFE_DZ = 0.06  # approach height above the cube top, so the fingers clear it
ALIGN_TOL = 0.012  # lateral/behind tolerance to descend / keep pushing
OVERSHOOT = 0.02  # push the cube this far past the goal centre (success radius is 0.1)
CONTACT_GAP = 0.01  # TCP-to-cube-face distance while in contact (closed finger half-depth)
DONE_RADIUS = 0.03  # cube this close to the goal centre: hold (success radius 0.1)


def plan(motion: Motion, s: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Plan one PushCube answer per state row.

    Args:
        motion: the control period's :class:`~robot_rl.teachers.plans.common.Motion`.
        s: ``(N, >=20) float64`` privileged states.

    Returns:
        ``(actions (N, 7), phases)``: period deltas (gripper closed) and ``N`` phase names.
    """
    n = s.shape[0]
    tcp, obj, goal, half = s[:, TCP_POS], s[:, OBJ_POS], s[:, GOAL_POS], s[:, OBJ_HALF_SIZE]
    dxy = goal[:, :2] - obj[:, :2]
    dist = np.linalg.norm(dxy, axis=-1)
    u = np.where(dist[:, None] > 1e-6, dxy / np.maximum(dist, 1e-6)[:, None], np.array([1.0, 0.0]))
    perp = np.stack([-u[:, 1], u[:, 0]], -1)
    rel = tcp[:, :2] - obj[:, :2]
    along = np.sum(rel * u, -1)  # negative = behind the cube
    lateral = np.sum(rel * perp, -1)
    behind_d = half + BEHIND_GAP
    safe_z = obj[:, 2] + half + SAFE_DZ
    push_z = np.full(n, PUSH_Z)
    behind_xy = obj[:, :2] - u * behind_d[:, None]

    low = tcp[:, 2] < obj[:, 2] + half + 0.01  # fingertips below the cube top
    is_behind = along < -(half + 0.003)
    pushing = low & is_behind & (np.abs(lateral) < ALIGN_TOL + 0.004) & (along > -(behind_d + 0.02))
    above_behind = np.linalg.norm(tcp[:, :2] - behind_xy, axis=-1) < ALIGN_TOL
    near_cube = np.linalg.norm(rel, axis=-1) < half * 1.5 + 0.04

    target = np.empty((n, 3))
    phases = np.empty(n, dtype=object)
    # push: TCP towards where it is when the cube sits past the goal centre; lateral error removed
    push_end = goal[:, :2] + u * (OVERSHOOT - half - CONTACT_GAP)[:, None]
    target_push = np.concatenate([push_end, push_z[:, None]], -1)
    # descend: down onto the pushing height behind the cube
    target_desc = np.concatenate([behind_xy, push_z[:, None]], -1)
    # approach: above the behind point
    target_appr = np.concatenate([behind_xy, safe_z[:, None]], -1)
    # retreat: straight up from where the TCP is (avoid sweeping through the cube)
    target_up = np.concatenate([tcp[:, :2], safe_z[:, None]], -1)

    sel_push = pushing
    sel_desc = ~sel_push & above_behind
    sel_up = ~sel_push & ~sel_desc & low & near_cube
    sel_appr = ~(sel_push | sel_desc | sel_up)
    for sel, tgt, name in (
        (sel_push, target_push, "push"),
        (sel_desc, target_desc, "descend"),
        (sel_up, target_up, "retreat"),
        (sel_appr, target_appr, "approach"),
    ):
        target[sel] = tgt[sel]
        phases[sel] = name

    # done: the cube is near the goal centre (well inside the 0.1 m success radius), where the cube->goal
    # direction becomes ill-defined: hold still instead of circling the cube
    sel_hold = dist < DONE_RADIUS
    target[sel_hold] = tcp[sel_hold]
    phases[sel_hold] = "hold"

    acts = np.zeros((n, ACTION_DIM))
    acts[:, POS_SLICE] = motion.position(tcp, target)
    r = quat_to_matrix(quats(s, TCP_QUAT))
    acts[:, ROT_SLICE] = motion.rotation(quats(s, TCP_QUAT), down_orientation(yaw_of(r)))
    acts[:, GRIPPER_INDEX] = GRIPPER_CLOSED
    return acts, list(phases)
