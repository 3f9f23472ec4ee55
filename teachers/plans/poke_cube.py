"""PokeCube planner: grasp the peg, bring its head behind the cube, poke the cube into the goal, hold still.

Scene (ManiSkill ``PokeCube-v1``, :class:`robot_rl.envs.PokeCubeSparseEnv`): a peg (0.24 m long along
its own x, 0.05 m square section, head at +0.12 m along x) lies flat along world +x with its centre
in [-0.1, 0.1]^2; the cube (half size 0.02) is 0.22 m ahead of the peg centre in x (so 0.08 m from the
head face to the cube face) at a random y in [-0.1, 0.1] and yaw in [-30, 30] deg; the goal centre is
0.1 m beyond the cube in +x. Success: cube xy within 0.05 m of the goal centre *and* the robot static
(arm joint speeds <= 0.2 rad/s); the episode ends on the first successful step.

Phases (inferred per row from the state alone, numpy batched; privileged state ``tool_*`` = the peg):

* ``"approach"`` -- gripper open, TCP to the grasp point (on the peg axis, :data:`GRASP_BACK` behind
  its centre, at its centre height), hand yawed so the fingers close across the peg. A funnel keeps
  the TCP :data:`FUNNEL` x the lateral/along/yaw error above the grasp point (at most
  :data:`HOVER_DZ`), so the open fingers only come down beside the peg when they are aligned with it.
* ``"grasp"`` -- at the grasp point, gripper not closed past the peg's width: close (and keep
  converging on the point).
* ``"align"`` -- holding the peg: move it (the TCP target is the TCP plus the head's error, so the
  planner steers the *head*) to a point :data:`BEHIND_GAP` behind the cube's face on the cube->goal
  line, head at :data:`HEAD_Z`, peg yawed onto that line. The point is
  :data:`ALIGN_DEPTH_PER_LAT` x the lateral offset deeper, so a sideways move stays behind the cube.
* ``"poke"`` -- head behind the cube, on the line (within :data:`POKE_LAT_TOL`), peg aligned: drive the
  head to where it is when the cube's centre is :data:`POKE_OVERSHOOT` past the goal centre (a
  P-controller, so it slows down as it gets there); yaw held.
* ``"backoff"`` -- holding the peg, head neither on the line nor clear of the cube (beside it, or in
  contact but off the line): head straight back along the line (over the cube if it is in front).
* ``"reopen"`` -- gripper closed but not holding the peg (dropped / missed): open while rising.
* ``"hold"`` -- cube within :data:`DONE_RADIUS` of the goal centre: zero position and rotation command,
  gripper closed. The arm brakes to a stop within one env step, which the success test needs.

"Holding the peg" is geometric: the TCP is on the peg axis at the peg's height *and* ManiSkill reports
the peg grasped or the gripper width is that of fingers closed on the 0.05 m peg. The contact flag
alone is not trusted (see below).

Measured in the simulator (ManiSkill 3, CPU physx, ``pd_ee_delta_pose``; queried every step at D = 1,
50 episodes seed 0 at the 50-step horizon: success 1.0, mean episode length 21.0 steps, longest 29; with
the per-step planner this module started as, seeds 1000-1199 and 2000-2199: 400/400; peg dropped
mid-carry or cube moved 0.04 m sideways mid-task: recovered in 5/5 each at a 100-step horizon):

* The fingers closed on the peg read a gripper width of ~0.046 m (the 0.05 m peg is squeezed);
  closing takes ~1 env step.
* In the CPU sim the controller solves a full IK (pinocchio, 100 iterations) for "current pose +
  delta"; when it fails, the arm's target is its current joint position and the arm *freezes*, every
  step, as long as the command is the same. This happens for the 0.1 m target of a full position
  command when the arm is stretched low over the table (e.g. TCP at x 0.15, z 0.03: a 0.05 m step
  fails, 0.03 m passes). Holding the peg, the command is therefore capped at :data:`MAX_CMD` per step,
  falling to :data:`MIN_CMD` as the TCP's horizontal distance from the base goes from 0.70 to 0.80 m
  (:data:`STRETCH_R`), and the peg is grasped near its tail (:data:`GRASP_BACK`) so the TCP stays
  0.21 m behind the head (far goals: the cube must reach x ~0.37, the TCP only ~0.14).
* ``tool_grasped`` (``agent.is_grasping(peg)``) can read 1 on the first step after a reset, left over
  from the previous episode's contacts; hence the geometric test above.
* A full-speed poke flings the cube (~0.8 m/s; it slides several cm), and an IK freeze mid-poke can
  then make the robot static while the cube passes through the goal: a lucky success. The capped,
  P-controlled poke and the hold avoid relying on this.
* Each answer is planned for its control period (:meth:`~robot_rl.teachers.plans.common.Motion.position`):
  queried once per ``D`` env steps and replayed open loop, as ``vlajs`` training uses it, the plan solves 50/50 at
  D = 2 and 48/50 at D = 4 (mean 36.7 steps; ``benchmarks/teacher_competence.py``). As a per-step
  P-controller held for D = 4 it overshot its waypoints: 0.4 on 30 episodes.
"""

from __future__ import annotations

import numpy as np

from robot_rl.geometry import ACTION_DIM, GRIPPER_INDEX, POS_SLICE, ROT_SLICE, quat_to_matrix
from robot_rl.teachers.plans.common import (
    GOAL_POS,
    GRIPPER_CLOSED,
    GRIPPER_OPEN,
    GRIPPER_WIDTH,
    OBJ_HALF_SIZE,
    OBJ_POS,
    TCP_POS,
    TCP_QUAT,
    TOOL_GRASPED,
    TOOL_HALF_EXTENTS,
    TOOL_POS,
    TOOL_QUAT,
    Motion,
    down_orientation,
    quats,
    scale_clip,
    wrap_angle,
    yaw_of,
)

# Geometry (metres unless noted; tuned in the simulator, see the module docstring)
#: Grasp this far behind the peg centre along its axis (3 cm from the tail): keeps the TCP 0.21 m behind
#: the head, inside the arm's low reach when the cube has to go far (an IK freeze otherwise).
GRASP_BACK = 0.09
GRASP_DZ = 0.0  # TCP height above the peg centre when closing
HOVER_DZ = 0.06  # max height above the grasp point while approaching (funnel ceiling)
FUNNEL = 2.5  # approach funnel: height above the grasp point per metre of lateral error
GRASP_LAT_TOL = 0.008  # lateral (across the fingers) TCP error allowed to close
GRASP_ALONG_TOL = 0.03  # along-the-peg TCP error allowed to close
GRASP_Z_TOL = 0.01  # height error allowed to close
OPEN_WIDTH = 0.07  # gripper width above which the gripper counts as open
HELD_MIN_WIDTH = 0.040  # fingers closed on the peg: width between these (peg is 0.05 wide)
HELD_MAX_WIDTH = 0.056
HELD_LAT_TOL = 0.015  # TCP this close to the peg axis (across) and ...
HELD_Z_TOL = 0.02  # ... height: the peg is between the fingers
HEAD_Z = 0.035  # height of the peg head centre while carrying / poking (head spans 0.005..0.055)
BEHIND_GAP = 0.025  # head face to cube face distance before poking
ALIGN_DEPTH_PER_LAT = 0.5  # align target this much deeper behind the cube per metre of lateral offset
CUBE_REACH = 1.415  # a cube yawed by any angle reaches at most sqrt(2) * half along a line
CLEAR_MARGIN = 0.005  # head clear of the cube by this much
BACKOFF_EXTRA = 0.02  # backing off: head this much further behind than the poke start
CUBE_TOP_CLEAR_Z = 0.08  # head height to pass over the cube (top at 0.04, head half-width 0.025)
POKE_LAT_TOL = 0.015  # lateral head-to-line error allowed to keep poking
YAW_FREE_DIST = 0.06  # cube this close to the goal: the line direction is noisy, skip the yaw check
MAX_YAW_FIX = 0.3  # rad; largest yaw correction asked of the peg at once
POKE_OVERSHOOT = 0.01  # aim the cube this far past the goal centre
DONE_RADIUS = 0.025  # cube this close to the goal centre: hold still (success radius 0.05)
YAW_TOL = 0.15  # rad; peg/poke-line misalignment allowed to poke
MAX_CMD = 0.5  # per-step position command cap while holding the peg (IK fails on larger steps when stretched)
STRETCH_R = (0.70, 0.80)  # TCP horizontal distance from the robot base over which the cap falls to MIN_CMD
MIN_CMD = 0.2
BASE_XY = np.array([-0.615, 0.0])  # Panda base position (world)


def plan(motion: Motion, s: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Plan one PokeCube action per state row.

    Args:
        motion: the control period's :class:`~robot_rl.teachers.plans.common.Motion` (``D`` = ``period_steps``).
        s: ``(N, 38) float64`` privileged states (:data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT`):
            object = the cube, goal = the goal region centre, tool = the peg.

    Returns:
        ``actions`` ``(N, 7) float64``: period deltas (per-step command x ``D``; position components
        within ``[-D, D]``, at most ``MAX_CMD * D`` while holding the peg), gripper in [-1, 1]; and
        ``phases``, ``N`` names from the module docstring.
    """
    n = s.shape[0]
    tcp, cube, goal = s[:, TCP_POS], s[:, OBJ_POS], s[:, GOAL_POS]
    half = s[:, OBJ_HALF_SIZE]
    width = s[:, GRIPPER_WIDTH]
    peg = s[:, TOOL_POS]
    r_peg = quat_to_matrix(quats(s, TOOL_QUAT))
    peg_half = s[:, TOOL_HALF_EXTENTS]
    axis = r_peg[:, :, 0]  # peg +x: tail -> head
    head = peg + axis * peg_half[:, :1]
    r_tcp = quat_to_matrix(quats(s, TCP_QUAT))
    tcp_yaw = yaw_of(r_tcp)
    peg_yaw = np.arctan2(axis[:, 1], axis[:, 0])

    # TCP relative to the peg, in a horizontal frame along the peg (a square peg may lie rolled about
    # its axis, so its own y/z axes are not used): along the axis, across it (= across the fingers), up
    axis_h = axis[:, :2] / np.maximum(np.linalg.norm(axis[:, :2], axis=-1, keepdims=True), 1e-6)
    across_h = np.stack([-axis_h[:, 1], axis_h[:, 0]], -1)
    d_peg = tcp - peg
    rel_along = np.sum(d_peg[:, :2] * axis_h, -1)
    lat_err = np.abs(np.sum(d_peg[:, :2] * across_h, -1))
    along_err = np.abs(rel_along + GRASP_BACK)
    dz = d_peg[:, 2] - GRASP_DZ
    near_peg = (lat_err < HELD_LAT_TOL) & (np.abs(dz) < HELD_Z_TOL) & (np.abs(rel_along) < peg_half[:, 0] - 0.005)
    held = near_peg & ((s[:, TOOL_GRASPED] > 0.5) | ((width > HELD_MIN_WIDTH) & (width < HELD_MAX_WIDTH)))
    is_open = width > OPEN_WIDTH

    # poke line
    dxy = goal[:, :2] - cube[:, :2]
    dist = np.linalg.norm(dxy, axis=-1)
    u = np.where(dist[:, None] > 1e-6, dxy / np.maximum(dist, 1e-6)[:, None], np.array([1.0, 0.0]))
    perp = np.stack([-u[:, 1], u[:, 0]], -1)
    hrel = head[:, :2] - cube[:, :2]
    along_h = np.sum(hrel * u, -1)
    lat_h = np.sum(hrel * perp, -1)
    yaw_line_err = wrap_angle(np.arctan2(u[:, 1], u[:, 0]) - peg_yaw)

    # --- not holding the peg: grasp it ---------------------------------------------------
    grasp_pt = peg.copy()
    grasp_pt[:, :2] -= axis_h * GRASP_BACK
    grasp_pt[:, 2] += GRASP_DZ
    grasp_yaw = tcp_yaw + wrap_angle((peg_yaw - tcp_yaw) * 2.0) / 2.0
    yaw_grasp_err = np.abs(wrap_angle((peg_yaw - tcp_yaw) * 2.0) / 2.0)
    funnel_err = lat_err + 0.25 * along_err + 0.1 * yaw_grasp_err
    approach_t = grasp_pt.copy()
    approach_t[:, 2] += np.minimum(HOVER_DZ, FUNNEL * funnel_err)
    at_grasp = (lat_err < GRASP_LAT_TOL) & (along_err < GRASP_ALONG_TOL) & (np.abs(dz) < GRASP_Z_TOL)

    # --- holding the peg: move it so its head goes behind the cube, then poke -------------
    # a rotated cube reaches CUBE_REACH * half along any line; the head face is 2 * half-width wide
    corner = half * CUBE_REACH
    deep = half + BEHIND_GAP + ALIGN_DEPTH_PER_LAT * np.abs(lat_h)
    behind_xy = cube[:, :2] - u * deep[:, None]
    push_end_xy = goal[:, :2] + u * (POKE_OVERSHOOT - half)[:, None]
    clear_behind = along_h < -(corner + CLEAR_MARGIN)
    clear_side = np.abs(lat_h) > corner + peg_half[:, 1] + CLEAR_MARGIN
    yaw_ok = (np.abs(yaw_line_err) < YAW_TOL) | (dist < YAW_FREE_DIST)
    poking = (
        (along_h > -(half + BEHIND_GAP + 0.03))
        & (along_h < -half * 0.5)
        & (np.abs(lat_h) < POKE_LAT_TOL)
        & yaw_ok
        & (head[:, 2] < HEAD_Z + 0.015)
    )
    backoff_xy = cube[:, :2] - u * (half + BEHIND_GAP + BACKOFF_EXTRA)[:, None] + perp * lat_h[:, None]
    # head in front of the cube: retreating straight back would drag the cube, so go over it
    backoff_z = np.where(along_h > 0.0, CUBE_TOP_CLEAR_Z, HEAD_Z)

    head_t = np.empty((n, 3))
    head_t[:, 2] = HEAD_Z
    phases = np.empty(n, dtype=object)
    target = np.empty((n, 3))
    gripper = np.full(n, GRIPPER_OPEN)
    yaw_goal = grasp_yaw.copy()

    sel_hold = dist < DONE_RADIUS
    sel_poke = ~sel_hold & held & poking
    sel_align = ~sel_hold & held & ~poking & (clear_behind | clear_side)
    sel_back = ~sel_hold & held & ~poking & ~(clear_behind | clear_side)
    head_t[sel_poke, :2] = push_end_xy[sel_poke]
    head_t[sel_align, :2] = behind_xy[sel_align]
    head_t[sel_back, :2] = backoff_xy[sel_back]
    head_t[sel_back, 2] = backoff_z[sel_back]
    sel_held = sel_poke | sel_align | sel_back
    target[sel_held] = (tcp + (head_t - head))[sel_held]
    gripper[sel_held] = GRIPPER_CLOSED
    yaw_goal[sel_held] = (tcp_yaw + np.clip(yaw_line_err, -MAX_YAW_FIX, MAX_YAW_FIX))[sel_held]
    yaw_goal[sel_poke] = tcp_yaw[sel_poke]
    phases[sel_poke], phases[sel_align], phases[sel_back] = "poke", "align", "backoff"

    free = ~sel_hold & ~held
    # at the grasp point but closed past the peg's width: the peg is not between the fingers; re-open
    sel_grasp = free & at_grasp & (width > HELD_MIN_WIDTH)
    sel_reopen = free & ~sel_grasp & ~is_open
    sel_appr = free & ~sel_grasp & ~sel_reopen
    target[sel_grasp] = grasp_pt[sel_grasp]
    gripper[sel_grasp] = GRIPPER_CLOSED
    phases[sel_grasp] = "grasp"
    reopen_t = np.concatenate([tcp[:, :2], np.maximum(tcp[:, 2:], grasp_pt[:, 2:] + HOVER_DZ)], -1)
    target[sel_reopen] = reopen_t[sel_reopen]
    phases[sel_reopen] = "reopen"
    target[sel_appr] = approach_t[sel_appr]
    phases[sel_appr] = "approach"

    target[sel_hold] = tcp[sel_hold]
    gripper[sel_hold] = GRIPPER_CLOSED
    phases[sel_hold] = "hold"

    acts = np.zeros((n, ACTION_DIM))
    acts[:, POS_SLICE] = motion.position(tcp, target)
    acts[:, ROT_SLICE] = motion.rotation(quats(s, TCP_QUAT), down_orientation(yaw_goal))
    acts[sel_hold, ROT_SLICE] = 0.0
    d = motion.period_steps
    reach = np.linalg.norm(tcp[:, :2] - BASE_XY, axis=-1)
    frac = np.clip((reach - STRETCH_R[0]) / (STRETCH_R[1] - STRETCH_R[0]), 0.0, 1.0)
    cap = (MAX_CMD + (MIN_CMD - MAX_CMD) * frac)[:, None] * d
    acts[sel_held, POS_SLICE] = scale_clip(acts[sel_held, POS_SLICE], cap[sel_held])
    acts[:, GRIPPER_INDEX] = gripper
    return acts, list(phases)
