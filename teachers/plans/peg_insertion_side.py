"""PegInsertionSide planner: grasp the peg behind its centre, line it up with the hole, push it in.

Stateless (:mod:`robot_rl.teachers.plans`): every row's phase is inferred from its privileged state
alone (TCP pose, peg pose, goal pose, grasp flag, gripper width), numpy-batched over rows, in the style
of :mod:`robot_rl.teachers.plans.pick_cube`.

Geometry (``envs.tasks.PegInsertionSideSparseEnv``): the peg is a box of half extents ``(L, r, r)``,
``L`` in [0.085, 0.125], ``r`` in [0.015, 0.025] m; its head is at ``+L`` along its own x. The goal
pose is the peg's pose with its head at the hole's centre; the hole axis is the goal's x axis and the
box's entrance face lies exactly at the goal position (the box is ``L`` deep on each side of the hole
centre), so in the goal frame the head is past the entrance when ``e_h[0] > 0`` and the episode
succeeds when ``e_h[0] >= L - 0.015`` with the head inside the square hole (half side ``r + 3 mm``).

Phases (per row; ``held`` = ``is_grasped`` or the TCP inside the peg's box with the gripper closed to
about the peg's width, so a contact-force flicker of ``is_grasped`` during insertion does not drop it):

* ``"hover"`` (free): gripper open, to a point ``HOVER_DZ`` above the grasp point, turning the hand so
  its x axis lies along the peg (fingers across the peg's width; of the two such yaws the one nearer
  the Panda's home yaw +pi/2, the peg's yaw is pi/2 +- pi/3). Low and off to the side: rise first.
* ``"descend"`` (free, above the grasp point within ``XY_TOL``, yaw within ``YAW_TOL``): down to it.
* ``"grasp"`` (free, at the grasp point, yaw within ``GRASP_YAW_TOL``): close, stand still.
* ``"reopen"`` (free, gripper not open): open while rising (a missed or lost grasp).
* ``"lift"`` (held, peg within ``LIFT_DZ`` of the table, far from the pre-insert pose): straight up.
* ``"transport"`` / ``"align"`` (held, outside the insertion zone): to the pre-insert pose, the peg's
  centre ``L + PRE_GAP`` before the goal along the hole axis with the goal's orientation; ``"align"``
  within 3 cm of it, at gain ``FINE_GAIN``.
* ``"funnel"`` / ``"insert"`` (held, in the insertion zone: peg within ``ZONE_LAT`` of the axis,
  ``ZONE_ANGLE`` of its direction, head at most ``PRE_GAP + ZONE_BACK`` before the entrance; or the
  head already in the hole): lateral error corrected at gain ``INSERT_GAIN`` while the head advances
  along the axis, at most ``AXIAL_STEP`` (``AXIAL_STEP_IN`` once in the hole) per step. While the
  head's or centre's lateral error or the axis angle exceed ``HEAD_TOL`` / ``CENTRE_TOL`` /
  ``ANGLE_TOL`` (``"funnel"``) the head may only come to ``FUNNEL_SLOPE * excess`` before the
  entrance (it backs off when it is closer); with them met, or the head in the hole (``"insert"``), it
  is pushed until the peg's centre is ``INSERT_PAST`` beyond the goal.

Alignment uses the *measured* peg-in-hand offset ``T_off = T_tcp^-1 T_peg`` (the peg slips and pivots
in the fingers when lifted and on contact): the desired TCP pose is ``T_peg_des T_off^-1``, with the
goal orientation taken modulo the square section's 90 degree roll symmetry.

Measured in the simulator (ManiSkill 3.0.1, CPU, ``pd_ee_delta_pose``, ``benchmarks/teacher_competence.py``,
50 episodes from seed 0 at the 100-step horizon): queried every step at D = 1, 50/50 successes, mean 43.8
steps (longest 69); as used (one answer per D steps, replayed open loop), 49/50 at D = 2 (mean 52.2) and
50/50 at D = 4 (mean 69.6, longest 97); 50 from seed 1000: 48/50 at each of D = 1, 2, 4. After 10 random
actions (seeds 100..109, D = 4, queried every step, 120-step horizon) 10/10 recover; a peg dropped
mid-transport is re-grasped (6/6). Most of the time goes into turning the hand (about 0.04 rad per step
at full command, up to ~60 degrees before the grasp and ~80 after it). Before the answers were planned
for their period (:meth:`~robot_rl.teachers.plans.common.Motion.position`), the precision phases
overshot when an answer was held: D = 4 solved 1/10. The gains below multiply the period gain. What
made the difference while tuning: (1) the held peg sags the arm below its target (about 6 mm per kg at
gain 1; the peg weighs 0.15..0.6 kg at density 1000), which a plain P-command leaves as a 1.5..3 mm
steady-state error, larger than the hole's tolerance, so the fine phases use a higher gain plus a z
feed-forward ``SAG_M_PER_KG * mass``; gains of 4 oscillate (the arm lags ~1 step); (2) a discrete
"aligned -> insert, else back to pre-insert" switch limit-cycles, because every axial step disturbs the
lateral error by 1..4 mm; the continuous funnel does not; (3) "in the hole" must mean the head's
*centre* within the 3 mm clearance of the axis, not within the hole's half width, or a peg pressed on
the rim counts as inserted and jams.
"""

from __future__ import annotations

import numpy as np

from robot_rl.geometry import ACTION_DIM, GRIPPER_INDEX, POS_SLICE, ROT_SLICE, quat_to_matrix
from robot_rl.teachers.plans.common import (
    GOAL_POS,
    GOAL_QUAT,
    GRIPPER_CLOSED,
    GRIPPER_OPEN,
    GRIPPER_WIDTH,
    IS_GRASPED,
    OBJ_HALF_EXTENTS,
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

# Geometry and gains (metres, radians). Tuned in the simulator (see the module docstring).
# -- grasp
GRASP_BACK_MIN = 0.05  # grasp at least this far behind the peg's centre (toward the tail): at success the
GRASP_BACK_FRAC = 0.5  # fingers stay ~back + 0.015 m outside the box face, clear of it with the hand;
GRASP_BACK_PAD = 0.01  # back = max(MIN, FRAC * L + PAD) (0.05..0.07 m), like ManiSkill's motion-planning demo
GRASP_Z_MIN = 0.012  # lowest TCP height for the grasp (the peg's centre is at z = r >= 0.015)
HOVER_DZ = 0.07  # hover this far above the grasp point: open fingertips clear the peg (top at 2r <= 0.05)
XY_TOL = 0.008  # xy error to start descending (the fingers open 0.08 around a 0.03..0.05 peg)
NEAR_XY = 0.02  # within this (xy) of the grasp point a low hand corrects xy in place instead of rising
Z_TOL = 0.008  # height error to close the gripper
YAW_TOL = 0.3  # rad, yaw error allowed while descending (the hand keeps turning on the way down)
GRASP_YAW_TOL = 0.08  # rad, yaw error allowed when closing (fingers across the peg)
OPEN_WIDTH = 0.07  # m, below this the free gripper counts as (partly) closed: re-open
# -- carry and line up
LIFT_DZ = 0.03  # peg centre lower than r + this above the table: lift straight up first
PRE_GAP = 0.015  # pre-insert: the head this far before the entrance, on the axis
FINE_GAIN = 2.5  # position gain near the pre-insert pose (1 leaves the payload sag; 4 oscillates)
SAG_M_PER_KG = 0.006  # steady-state sag of the TCP per kg of held peg at gain 1 (measured), fed forward in z
PEG_DENSITY = 1000.0  # kg/m^3, ManiSkill's default actor density (peg mass = 8 L r^2 * density, checked)
# -- insertion zone and funnel
ZONE_LAT = 0.012  # peg centre and head within this of the axis (per axis) ...
ZONE_ANGLE = 0.12  # rad, ... its axis within this of the hole axis ...
ZONE_BACK = 0.02  # ... and the head at most PRE_GAP + this before the entrance: funnel/insert
HEAD_TOL = 0.002  # per-axis lateral error of the head allowed to enter (hole clearance 3 mm)
CENTRE_TOL = 0.003  # per-axis lateral error of the peg's centre allowed to enter
ANGLE_TOL = 0.03  # rad, axis angle allowed to enter
FUNNEL_SLOPE = 4.0  # misaligned by e beyond the tolerances: the head stays 4 e before the entrance
HOLE_CLEARANCE = 0.003  # the hole's half side minus the peg's half width (upstream `_clearance`)
HEAD_IN_DEPTH = 0.003  # head this far past the entrance, centred within the clearance: in the hole
INSERT_GAIN = 2.0  # lateral position gain while funnelling/inserting
AXIAL_STEP = 0.02  # m, axial advance asked of one answer before the hole (period_gain of it over the period)
AXIAL_STEP_IN = 0.05  # m, the same once the head is in the hole (the hole guides it)
INSERT_PAST = 0.01  # push until the peg's centre is this far beyond the goal (success at -0.015)


def _rx(angle: np.ndarray) -> np.ndarray:
    """``(N,)`` angles (rad) -> ``(N, 3, 3)`` rotations about x."""
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros((len(angle), 3, 3))
    m[:, 0, 0] = 1.0
    m[:, 1, 1], m[:, 1, 2] = c, -s
    m[:, 2, 1], m[:, 2, 2] = s, c
    return m


def plan(motion: Motion, s: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Plan one action per row.

    Args:
        motion: the control period's :class:`~robot_rl.teachers.plans.common.Motion`.
        s: ``(N, 38)`` privileged states (:data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT`).

    Returns:
        ``(actions, phases)``: ``(N, 7) float64`` period deltas (per-step command times
        ``motion.period_steps``; gripper -1 closed / +1 open) and ``N`` phase names
        (``"hover"``, ``"descend"``, ``"grasp"``, ``"reopen"``, ``"lift"``, ``"transport"``,
        ``"align"``, ``"funnel"``, ``"insert"``).
    """
    s = np.asarray(s, dtype=np.float64)
    n = s.shape[0]
    tcp, peg, goal = s[:, TCP_POS], s[:, OBJ_POS], s[:, GOAL_POS]
    r_tcp = quat_to_matrix(quats(s, TCP_QUAT))
    r_peg = quat_to_matrix(quats(s, OBJ_QUAT))
    r_goal = quat_to_matrix(quats(s, GOAL_QUAT))
    half = s[:, OBJ_HALF_EXTENTS]
    length, radius = half[:, 0], half[:, 1]
    width = s[:, GRIPPER_WIDTH]
    grasped = s[:, IS_GRASPED] > 0.5

    x_peg = r_peg[:, :, 0]
    x_goal = r_goal[:, :, 0]

    # ---- peg in hand: measured offset -------------------------------------------------------
    rt = np.swapaxes(r_tcp, -1, -2)
    p_off = np.einsum("nij,nj->ni", rt, peg - tcp)
    r_off = rt @ r_peg
    # TCP inside the (inflated) peg box and gripper closed to about the peg width: held
    in_peg = np.einsum("nij,nj->ni", np.swapaxes(r_peg, -1, -2), tcp - peg)
    inside = (np.abs(in_peg[:, 0]) < length + 0.005) & (np.abs(in_peg[:, 1]) < radius + 0.012) & (
        np.abs(in_peg[:, 2]) < radius + 0.012
    )
    closed_on_peg = (width < 2 * radius + 0.008) & (width > 2 * radius - 0.006)
    held = grasped | (inside & closed_on_peg)

    # ---- target peg orientation: goal, modulo the square section's 90 deg roll symmetry -----
    best = None
    best_tr = np.full(n, -np.inf)
    for k in range(4):
        cand = r_goal @ _rx(np.full(n, k * np.pi / 2))
        tr = np.trace(np.swapaxes(cand, -1, -2) @ r_peg, axis1=-2, axis2=-1)
        if best is None:
            best = cand.copy()
        else:
            better = tr > best_tr
            best[better] = cand[better]
        best_tr = np.maximum(best_tr, tr)
    r_peg_des = best
    r_tcp_des_held = r_peg_des @ np.swapaxes(r_off, -1, -2)
    tcp_off_des = np.einsum("nij,nj->ni", r_tcp_des_held, p_off)  # peg centre - TCP at the desired rotation

    # ---- peg in goal frame ------------------------------------------------------------------
    rg_t = np.swapaxes(r_goal, -1, -2)
    e_c = np.einsum("nij,nj->ni", rg_t, peg - goal)
    head = peg + length[:, None] * x_peg
    e_h = np.einsum("nij,nj->ni", rg_t, head - goal)
    lat_c = np.max(np.abs(e_c[:, 1:]), -1)  # the hole is square: per-axis errors
    lat_h = np.max(np.abs(e_h[:, 1:]), -1)
    angle = np.arccos(np.clip(np.sum(x_peg * x_goal, -1), -1, 1))
    pre_s = -(length + PRE_GAP)

    # the head is in the hole: past the entrance plane with its centre within the clearance of the axis
    head_in = (e_h[:, 0] > HEAD_IN_DEPTH) & (np.max(np.abs(e_h[:, 1:]), -1) < HOLE_CLEARANCE + 0.001)
    zone = held & (
        head_in
        | ((lat_h < ZONE_LAT) & (lat_c < ZONE_LAT) & (angle < ZONE_ANGLE) & (e_h[:, 0] > -(PRE_GAP + ZONE_BACK)))
    )
    # funnel: how far the head may advance given its residual misalignment
    excess = np.maximum.reduce([lat_h - HEAD_TOL, lat_c - CENTRE_TOL, length * (angle - ANGLE_TOL), np.zeros(n)])
    clear = head_in | (excess <= 0)
    head_goal = np.where(clear, length + INSERT_PAST, -np.minimum(PRE_GAP, FUNNEL_SLOPE * excess))
    low = peg[:, 2] < radius + LIFT_DZ
    dist_pre = np.linalg.norm(peg - (goal + pre_s[:, None] * x_goal), axis=-1)
    sel_insert = zone
    sel_lift = held & ~zone & low & (dist_pre > 0.05)
    sel_align = held & ~zone & ~sel_lift

    # ---- before the grasp ------------------------------------------------------------------
    peg_yaw = np.arctan2(x_peg[:, 1], x_peg[:, 0])
    tcp_yaw = yaw_of(r_tcp)
    # hand x along the peg axis; of the two choices the one closest to +y (pi/2), the robot's home yaw
    yaw_des = np.pi / 2 + wrap_angle((peg_yaw - np.pi / 2) * 2.0) / 2.0
    yaw_err = wrap_angle(yaw_des - tcp_yaw)
    back = np.maximum(GRASP_BACK_MIN, GRASP_BACK_FRAC * length + GRASP_BACK_PAD)
    xh = x_peg.copy()
    xh[:, 2] = 0.0
    xh /= np.maximum(np.linalg.norm(xh, axis=-1, keepdims=True), 1e-9)
    grasp_pt = peg - back[:, None] * xh
    grasp_pt[:, 2] = np.maximum(peg[:, 2], GRASP_Z_MIN)
    hover = grasp_pt + np.array([0.0, 0.0, HOVER_DZ])
    rel = grasp_pt - tcp
    xy_err = np.linalg.norm(rel[:, :2], axis=-1)
    at_grasp = (xy_err < XY_TOL * 1.5) & (np.abs(rel[:, 2]) < Z_TOL)
    is_open = width > OPEN_WIDTH
    free = ~held
    sel_grasp = free & at_grasp & (np.abs(yaw_err) < GRASP_YAW_TOL) & (width > 2 * radius - 0.004)
    sel_reopen = free & ~sel_grasp & ~is_open
    sel_desc = free & ~sel_grasp & ~sel_reopen & (xy_err < XY_TOL) & (np.abs(yaw_err) < YAW_TOL) & (
        tcp[:, 2] > grasp_pt[:, 2] - 0.005
    )
    sel_hover = free & ~(sel_grasp | sel_reopen | sel_desc)

    target = tcp.copy()
    phases = np.empty(n, dtype=object)
    gripper = np.full(n, GRIPPER_OPEN)
    rot_des = down_orientation(tcp_yaw + yaw_err)

    target[sel_grasp] = grasp_pt[sel_grasp]
    gripper[sel_grasp] = GRIPPER_CLOSED
    phases[sel_grasp] = "grasp"
    up = np.concatenate([tcp[:, :2], np.maximum(tcp[:, 2:], hover[:, 2:])], -1)
    target[sel_reopen] = up[sel_reopen]
    phases[sel_reopen] = "reopen"
    target[sel_desc] = grasp_pt[sel_desc]
    phases[sel_desc] = "descend"
    # hover: to the hover point; near it in xy (an overshoot, a nudged peg) correct xy at the current height
    # instead of climbing back; low and off to the side, rise first (do not sweep the fingers through the peg)
    near_xy = xy_err < NEAR_XY
    low_side = tcp[:, 2] < peg[:, 2] + radius + 0.03
    hov_t = np.where(
        (near_xy & (tcp[:, 2] < hover[:, 2]))[:, None],
        np.concatenate([grasp_pt[:, :2], np.maximum(tcp[:, 2:], grasp_pt[:, 2:])], -1),
        np.where((low_side & ~near_xy)[:, None], np.concatenate([tcp[:, :2], hover[:, 2:]], -1), hover),
    )
    target[sel_hover] = hov_t[sel_hover]
    phases[sel_hover] = "hover"

    # held phases
    gripper[held] = GRIPPER_CLOSED
    rot_des[held] = r_tcp_des_held[held]
    lift_t = tcp + np.array([0.0, 0.0, LIFT_DZ + 0.02])
    target[sel_lift] = lift_t[sel_lift]
    phases[sel_lift] = "lift"
    pre_peg = goal + pre_s[:, None] * x_goal
    pre_tcp = pre_peg - tcp_off_des
    target[sel_align] = pre_tcp[sel_align]
    phases[sel_align] = np.where(dist_pre[sel_align] > 0.03, "transport", "align")

    fine = sel_align & (dist_pre <= 0.03)
    # payload sag feed-forward: the arm settles this much below its target per kg of peg (measured)
    sag = np.zeros((n, 3))
    sag[:, 2] = SAG_M_PER_KG * PEG_DENSITY * 8.0 * length * radius * radius
    target[fine] = (tcp + FINE_GAIN * (target - tcp) + sag)[fine]
    acts = np.zeros((n, ACTION_DIM))
    acts[:, POS_SLICE] = motion.position(tcp, target)
    # insert (funnel): lateral error corrected at a higher gain, the head advanced towards head_goal
    ins_peg = goal + (head_goal - length)[:, None] * x_goal
    ins_tcp = ins_peg - tcp_off_des
    err = ins_tcp - tcp
    ax = np.sum(err * x_goal, -1)
    lat = err - ax[:, None] * x_goal
    ax_lim = np.where(head_in, AXIAL_STEP_IN, AXIAL_STEP)
    step = INSERT_GAIN * lat + np.clip(ax, -ax_lim, ax_lim)[:, None] * x_goal + sag
    ins_cmd = motion.position(tcp, tcp + step)
    acts[sel_insert, POS_SLICE] = ins_cmd[sel_insert]
    phases[sel_insert] = np.where(clear[sel_insert], "insert", "funnel")
    acts[sel_grasp, POS_SLICE] = 0.0
    acts[:, ROT_SLICE] = motion.rotation(quats(s, TCP_QUAT), rot_des)
    acts[:, GRIPPER_INDEX] = gripper
    return acts, list(phases)
