"""PickCube planner: over the cube and down a funnel (open, fingers turning to its faces), close, carry it to the goal.

Phases (per row, stateless): ``"carry"`` (held: move so the cube reaches ``goal_pos``, closed, and hold
there), ``"grasp"`` (TCP at the cube centre: close, no motion), ``"descend"`` and ``"hover"`` (open: towards the
funnel's point above the cube's centre, at a height that grows with the xy error, :data:`FUNNEL_SLOPE`, up to
:data:`HOVER_DZ`; ``"descend"`` once that point is under the hover height; low and off to the side, rise first),
``"reopen"`` (gripper closed but not holding the cube: open while rising) and ``"rise"``
(open, within :data:`NEAR_XY` and more than :data:`Z_TOL` below the cube's centre, where hovering would correct xy
forever and never grasp: a held descent that overshot onto the table, or the TCP just after a placement: move up
to the centre, then grasp).
:mod:`robot_rl.teachers.plans.pick_place_cube` reuses it with the goal replaced by its waypoints.

Reads the first 20 privileged-state entries (:data:`~robot_rl.teachers.plans.common.CUBE_STATE_DIM`).
Measured: ``benchmarks/teacher_competence.py`` (README, Teachers).
"""

from __future__ import annotations

import numpy as np

from robot_rl.geometry import ACTION_DIM, GRIPPER_INDEX, POS_SLICE, ROT_SLICE, quat_to_matrix
from robot_rl.teachers.plans.common import (
    GOAL_POS,
    GRIPPER_CLOSED,
    GRIPPER_OPEN,
    GRIPPER_WIDTH,
    IS_GRASPED,
    OBJ_POS,
    OBJ_QUAT,
    TCP_POS,
    TCP_QUAT,
    Motion,
    down_orientation,
    quats,
    wrap_angle,
    yaw_of,
)

# Geometry of the plan (metres unless noted). Measured/tuned in the simulator, see tests/teachers.
# The approach is a funnel, continuous in the state, so a student that imitates the plan is not held at a gate:
# the target is above the cube's centre at a height that grows with the xy error (FUNNEL_SLOPE, capped at
# HOVER_DZ), so the TCP comes down as it comes over the cube, and the yaw target is the face alignment nearest
# the TCP's rest yaw (0), which depends on the cube alone; the height also grows with the yaw error (YAW_FUNNEL), so
# the fingers reach the cube aligned with two faces. Gated versions (hover until within 8 mm and 0.12 rad,
# then descend; the yaw face nearest the *current* yaw) cost the teacher nothing (50/50 held for D = 4) but
# stalled a guided policy at the hover point: across a gate the targets jump (up vs down, and the yaw target
# flips sign at 45 deg), and a policy fitting both sides there averages them to no motion (issue 14).
HOVER_DZ = 0.07  # hover height above the cube centre, far from it in xy
FUNNEL_SLOPE = 3.0  # m of height above the cube's centre per m of xy error on the approach
YAW_FUNNEL = 0.1  # m of height per rad of finger/face yaw error: the fingers close on two faces, not a corner
XY_TOL = 0.008  # xy tolerance (x 1.5) to close the gripper at the cube
Z_TOL = 0.008  # z tolerance to close the gripper
OPEN_WIDTH = 0.07  # below this gripper width the gripper counts as (partly) closed
HELD_DIST = 0.03  # a held cube's centre is this close to the TCP (fingers on two faces)
NEAR_XY = 0.02  # this close in xy, the open fingers straddle the cube


def plan(motion: Motion, s: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Plan one PickCube answer per state row.

    Args:
        motion: the control period's :class:`~robot_rl.teachers.plans.common.Motion`.
        s: ``(N, >=20) float64`` privileged states.

    Returns:
        ``(actions (N, 7), phases)``: period deltas (gripper -1 closed / +1 open) and ``N`` phase names.
    """
    n = s.shape[0]
    tcp, obj, goal = s[:, TCP_POS], s[:, OBJ_POS], s[:, GOAL_POS]
    width = s[:, GRIPPER_WIDTH]
    # Held: ManiSkill's flag *and* the geometry of a grasp. The flag can read 1 on the first step after a
    # reset (left over from the previous episode's contacts): trusted alone, the answer to that step is a
    # closed-gripper carry that, held for D steps, grips nothing (README troubleshooting).
    grasped = (s[:, IS_GRASPED] > 0.5) & (width < OPEN_WIDTH) & (np.linalg.norm(obj - tcp, axis=-1) < HELD_DIST)
    r_tcp = quat_to_matrix(quats(s, TCP_QUAT))
    tcp_yaw = yaw_of(r_tcp)
    obj_yaw = yaw_of(quat_to_matrix(quats(s, OBJ_QUAT)))
    # the yaw at which the fingers face two cube faces (90 deg symmetry) nearest the rest yaw 0: a function of the
    # cube alone, so the target does not flip as the hand turns
    desired_yaw = wrap_angle(obj_yaw * 4.0) / 4.0
    yaw_err = np.abs(wrap_angle(desired_yaw - tcp_yaw))

    rel = obj - tcp
    xy_err = np.linalg.norm(rel[:, :2], axis=-1)
    hover = obj + np.array([0.0, 0.0, HOVER_DZ])

    at_grasp = (xy_err < XY_TOL * 1.5) & (np.abs(rel[:, 2]) < Z_TOL)
    is_open = width > OPEN_WIDTH
    above = tcp[:, 2] > obj[:, 2] + 0.005
    height = np.minimum(HOVER_DZ, FUNNEL_SLOPE * xy_err + YAW_FUNNEL * yaw_err)
    funnel = np.concatenate([obj[:, :2], obj[:, 2:] + height[:, None]], -1)

    sel_carry = grasped
    sel_grasp = ~sel_carry & at_grasp
    sel_reopen = ~sel_carry & ~sel_grasp & ~is_open
    sel_desc = ~sel_carry & ~sel_grasp & ~sel_reopen & (height < HOVER_DZ) & above
    sel_hover = ~(sel_carry | sel_grasp | sel_reopen | sel_desc)

    target = np.empty((n, 3))
    gripper = np.full(n, GRIPPER_OPEN)
    phases = np.empty(n, dtype=object)
    # carry: the cube should end at the goal; the TCP holds it, so shift by the grasp offset
    target[sel_carry] = (tcp + (goal - obj))[sel_carry]
    gripper[sel_carry] = GRIPPER_CLOSED
    phases[sel_carry] = "carry"
    target[sel_grasp] = obj[sel_grasp]
    gripper[sel_grasp] = GRIPPER_CLOSED
    phases[sel_grasp] = "grasp"
    # re-open: rise a little while opening so the fingers do not push the cube around
    target[sel_reopen] = np.concatenate([tcp[:, :2], np.maximum(tcp[:, 2:], hover[:, 2:])], -1)[sel_reopen]
    phases[sel_reopen] = "reopen"
    # descend and hover: the funnel's point ("descend" once its height is under the hover height);
    # low and off to the side (outside the open fingers' reach), rise first: do not sweep through the cube
    target[sel_desc] = funnel[sel_desc]
    phases[sel_desc] = "descend"
    low_side = tcp[:, 2] < obj[:, 2] + 0.03
    near_xy = xy_err < NEAR_XY
    hov_t = np.where((low_side & ~near_xy)[:, None], np.concatenate([tcp[:, :2], hover[:, 2:]], -1), funnel)
    target[sel_hover] = hov_t[sel_hover]
    phases[sel_hover] = "hover"

    # sunk: the open fingers straddle the cube with the TCP more than Z_TOL below its centre (a held descent that
    # overshot onto the table, or the TCP right after a placement's undershooting lowering). Hover alone would
    # correct xy at that height and never grasp: rise to the cube's centre instead, then it grasps.
    sunk = sel_hover & near_xy & is_open & (rel[:, 2] > Z_TOL)
    target[sunk] = obj[sunk]
    phases[sunk] = "rise"
    acts = np.zeros((n, ACTION_DIM))
    acts[:, POS_SLICE] = motion.position(tcp, target)
    # stop moving while the fingers close, so the grasp is not dragged
    acts[sel_grasp, POS_SLICE] = 0.0
    # keep pointing down; align the yaw only before grasping (a held cube's yaw is irrelevant)
    yaw_goal = np.where(sel_carry | sel_grasp, tcp_yaw, desired_yaw)
    acts[:, ROT_SLICE] = motion.rotation(quats(s, TCP_QUAT), down_orientation(yaw_goal))
    acts[:, GRIPPER_INDEX] = gripper
    return acts, list(phases)
