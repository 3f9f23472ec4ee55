"""LiftPegUpright planner: grasp the peg near one end, swing that end up over the other, stand it up.

The peg (a 0.24 x 0.05 x 0.05 m box, 0.6 kg, lying along world x) must end upright (its long axis
within 0.08 rad of vertical in the sense of the task's XYZ-Euler test) with its centre within 5 mm
of z = 0.12, i.e. standing on the table; it may stay in the hand. A firm grasp plus a 90 deg turn of
the hand would take ~40 env steps of rotation alone (the arm turns ~0.04 rad per step) and drives
the Panda's wrist into a singularity, so the plan lets the peg turn *in the hand*: a loose grip
(gripper command 0) holds it like a hinge about the closing axis; lifting the grasped end on an arc
around the far end, whose bottom edge stays on the table, swings the peg up, gravity and the table
doing most of the turning, while the hand pitches along by at most ``MAX_PITCH``.

Phases (per row, stateless, inferred from the state alone):

* ``"approach"``: gripper open, to ``HOVER_DZ`` above the grasp point (``GRASP_OFFSET`` from the
  peg's centre towards the end to lift), the hand pitched by ``PRE_PITCH`` towards that end (fingers
  away from the robot, which extends the reach: hand straight down the Panda cannot reach
  x > ~0.18 m at table height) and its fingers closing across the peg; first straight up when low
  and off to the side.
* ``"descend"``: above the grasp point, aligned and open: straight down onto it.
* ``"grasp"``: at the grasp point: close (gripper command ``GRIP_HOLD``), no motion.
* ``"lift"``: held (TCP on the peg's axis between the fingers, gripper on the peg) and the peg's
  elevation below ``STAND_ELEV``: move the TCP ``ARC_STEP`` rad ahead on the circle around the far
  end's face centre towards straight above it; turn the hand towards holding the peg vertical
  (capped at ``MAX_PITCH`` from straight down).
* ``"stand"``: held and nearly vertical: slide the TCP horizontally towards straight above the far
  end's face centre (gain ``STAND_GAIN``, in the hand's pitch plane, where the peg can turn in the
  grip) while pushing down (target: the peg's lowest corner ``STAND_PRESS`` below the table), so the
  bottom stays put and the geometry turns the peg vertical in the hand.
* ``"reopen"``: gripper closed but not holding the peg (missed or dropped): open while rising,
  then start again.

The end to lift is the one further from the robot (+x): the hand then pitches forward, fingers
away from the base, and ends above the near end. Pitching the other way, or much further forward
near the base, runs into joint limits, where the controller's IK fails and the arm freezes.

The task's upright test is ``|XYZ-Euler z| within 0.08 of pi/2``: with the spawn roll (the peg's own y
axis up), standing it up about the closing axis leaves its y axis along world x, and the test then
bounds only the lean along x (~0.08 rad) while a lean along y is free (the 5 mm height window allows
~0.5 rad). So the stand phase corrects the lean in the hand's pitch plane only.

Measured (ManiSkill 3.0.1, CPU sim, ``pd_ee_delta_pose``, 50-step horizon, ``benchmarks/teacher_competence.py``,
50 episodes from seed 0): queried every step at D = 1, 50/50 (mean episode length 18.8 steps); as used, one
answer per D steps replayed open loop, 50/50 at D = 2 (23.7) and D = 4 (34.5); from seed 1000, 49/50 at D = 4.
As a per-step P-controller it solved 49/50 queried every step (seeds 50-299: 250/250) and none held for D = 4.
Recovery: opening the gripper mid-lift (peg dropped) and a peg spawned at a random yaw were solved
10/10 each (150-step horizon). The failure is a peg at the back-centre of the spawn region
(x ~ -0.1, |y| < 0.05): standing it there puts the TCP within ~0.38 m (horizontally) of the base,
where the elbow (joint 4) reaches its limit.

Simulator behaviour this relies on (measured):

* With the gripper command 0 the fingers hold the 0.05 m peg (width 0.049) so that it turns about the
  closing axis under gravity and table contact: grasped 0.1 m from its centre and lifted 0.38 m
  straight up by the hand (pointing down), it hung ~40 deg above horizontal with -1 (hard), ~65 deg
  with -0.5 and swung up to ~85 deg with 0; with +0.3 it slipped out. The fingers' torsional
  friction (ManiSkill sets a 0.1 m patch radius and friction 2.0 on the Panda fingers) makes a hard
  grip effectively rigid.
* On the CPU sim the controller solves a full IK for ``current pose + delta``; when that target is
  unreachable (joint limits) the solve fails and the arm does not move *at all*, so a stateless
  planner repeating the command stays frozen. Near the base the arm also passes near singularities
  (joint 2 ~ 0: joints 1/3 swing; hand pitched forward beyond ~0.5 rad: joints 5/7 swing, joint 6
  at its limit), which rolls
  the hand and the peg in it. ``MAX_PITCH`` and the +x end keep the motion clear of both.
* Hand straight down, the TCP reaches x ~ 0.18 m (z 0.06-0.2); pitched 0.3 rad forward, ~0.23 m
  (the grasp point is at up to x = 0.2).
"""

from __future__ import annotations

import numpy as np

from robot_rl.geometry import ACTION_DIM, GRIPPER_INDEX, POS_SLICE, ROT_SLICE, quat_to_matrix, rotvec_to_matrix
from robot_rl.teachers.plans.common import (
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

# Geometry (metres / radians). The peg: half length 0.12, half width 0.025, lying at z = 0.025.
GRASP_OFFSET = 0.10  # grasp point from the peg's centre along its axis: near the end (0.12), fingers (~0.02 wide) on it
HOVER_DZ = 0.06  # approach this far above the grasp point: fingertips clear the peg's top (0.025 above its axis)
XY_TOL = 0.01  # xy error to start descending
YAW_TOL = 0.15  # rad; finger/peg misalignment allowed before descending
GRASP_XY_TOL = 0.015  # xy error to close the gripper
GRASP_Z_TOL = 0.012  # z error to close the gripper
OPEN_WIDTH = 0.07  # gripper width (m) above which the fingers are open (max 0.08, peg 0.05)
HOLD_WIDTH = (0.035, 0.056)  # width while the fingers are on the peg (0.049 at GRIP_HOLD, 0.046 closed hard)
AXIS_TOL = 0.03  # TCP this close to the peg's axis (and within its length): in the hand
GRIP_HOLD = 0.0  # gripper command while holding: finger target 0.015 (peg face at 0.025); the peg can
#   turn about the closing axis. -1 (hard) grips too firmly to turn; +0.3 lets the peg slip out (measured)
PRE_PITCH = 0.3  # rad; hand pitch towards the grasped end before the grasp (reach, and a head start)
MAX_PITCH = 0.45  # rad; cap on the hand's pitch from straight down: beyond ~0.5 near the base the wrist
#   (joints 5/7) goes singular or joint 6 hits its limit, the IK fails and the arm freezes (measured)
ARC_STEP = 0.4  # rad; lift target this far ahead on the arc around the far end (full-speed command)
STAND_ELEV = 1.3  # rad; peg elevation above which the "stand" phase takes over (vertical = pi/2)
STAND_GAIN = 2.0  # stand: commanded slide = this x the TCP's horizontal offset from the bottom centre
STAND_PRESS = 0.01  # stand: target the peg's lowest corner this far below the table (presses it down)

Z_UP = np.array([0.0, 0.0, 1.0])
X_AXIS = np.array([1.0, 0.0, 0.0])


def _unit(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Rows of ``v`` normalized; ``fallback`` where a row is (near) zero."""
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(norm > 1e-9, v / np.maximum(norm, 1e-9), fallback)


def _horizontal(v: np.ndarray) -> np.ndarray:
    return np.concatenate([v[:, :2], np.zeros((len(v), 1))], -1)


def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` smallest rotations taking unit vectors ``a`` ``(N, 3)`` to ``b``."""
    b = np.broadcast_to(b, a.shape)
    axis = np.cross(a, b)
    sin = np.linalg.norm(axis, axis=-1)
    angle = np.arctan2(sin, np.sum(a * b, -1))
    k = axis / np.maximum(sin, 1e-12)[:, None]
    return rotvec_to_matrix(np.where(sin[:, None] > 1e-9, k * angle[:, None], 0.0))


def _cap_pitch(mats: np.ndarray, max_pitch: float) -> np.ndarray:
    """Turn hand orientations ``(N, 3, 3)`` minimally so the approach axis (z) is within ``max_pitch`` (rad) of
    straight down.
    """
    app = mats[:, :, 2]
    pitch = np.arccos(np.clip(-app[:, 2], -1.0, 1.0))
    k = _unit(np.cross(app, np.broadcast_to(-Z_UP, app.shape)), X_AXIS)
    return rotvec_to_matrix(k * np.maximum(pitch - max_pitch, 0.0)[:, None]) @ mats


def plan(motion: Motion, states: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Plan one period action per row of ``states`` ``(N, 38)``; returns ``(actions (N, 7), phases)``."""
    s = np.asarray(states, dtype=np.float64)
    n = s.shape[0]
    tcp, c = s[:, TCP_POS], s[:, OBJ_POS]
    r_tcp = quat_to_matrix(quats(s, TCP_QUAT))
    r_peg = quat_to_matrix(quats(s, OBJ_QUAT))
    u = r_peg[:, :, 0]  # the peg's long axis
    half_len = s[:, OBJ_HALF_EXTENTS][:, 0]
    grasped = s[:, IS_GRASPED] > 0.5
    width = s[:, GRIPPER_WIDTH]

    # in the hand: TCP on the peg's axis, between centre and an end, fingers on the peg
    along = np.sum((tcp - c) * u, -1)
    radial = np.linalg.norm((tcp - c) - along[:, None] * u, axis=-1)
    on_peg = grasped | ((width > HOLD_WIDTH[0]) & (width < HOLD_WIDTH[1]))
    holding = (radial < AXIS_TOL) & (np.abs(along) > 0.04) & (np.abs(along) < half_len + 0.01) & on_peg

    # the end to lift: the held one; else the one further from the robot (+x); the TCP's side if the
    # peg lies across x
    tcp_side = np.where(along >= 0, 1.0, -1.0)
    pref = np.where(np.abs(u[:, 0]) > 0.3, np.sign(u[:, 0]), tcp_side)
    su = u * np.where(holding, tcp_side, pref)[:, None]  # axis towards the lifted end
    grasp_pt = c + su * GRASP_OFFSET
    bottom = c - su * half_len[:, None]  # centre of the face the peg will stand on

    # pitch plane: vertical, through the peg's axis; when held, perpendicular to the closing axis
    # (the hinge), signed towards the lifted end (the hand is pitched that way)
    h_peg = _unit(_horizontal(su), X_AXIS)
    h_hand = _unit(np.cross(r_tcp[:, :, 1], Z_UP), h_peg)
    h_hand *= np.where(np.sum(h_hand * _horizontal(r_tcp[:, :, 2] + su), -1) < 0, -1.0, 1.0)[:, None]
    h = np.where(holding[:, None], h_hand, h_peg)
    elev = np.arctan2(su[:, 2], np.sum(su * h, -1))

    # grasp alignment: fingers close across the peg (hand x along it; 180 deg symmetric)
    tcp_yaw = yaw_of(r_tcp)
    peg_yaw = np.arctan2(u[:, 1], u[:, 0])
    yaw_err = np.where(np.abs(u[:, 2]) < 0.9, wrap_angle((peg_yaw - tcp_yaw) * 2.0) / 2.0, 0.0)
    rel = grasp_pt - tcp
    xy_err = np.linalg.norm(rel[:, :2], axis=-1)
    at_grasp = (xy_err < GRASP_XY_TOL) & (np.abs(rel[:, 2]) < GRASP_Z_TOL) & (width > HOLD_WIDTH[0])
    is_open = width > OPEN_WIDTH

    sel_stand = holding & (elev > STAND_ELEV)
    sel_lift = holding & ~sel_stand
    sel_grasp = ~holding & at_grasp
    rest = ~(holding | sel_grasp)
    sel_reopen = rest & ~is_open
    sel_desc = rest & is_open & (xy_err < XY_TOL) & (np.abs(yaw_err) < YAW_TOL) & (rel[:, 2] < 0.0)
    sel_appr = rest & is_open & ~sel_desc

    target = tcp.copy()
    gripper = np.full(n, GRIPPER_OPEN)
    phases = np.empty(n, dtype=object)

    # before the grasp: pitched towards the lifted end, fingers across the peg
    pre = rotvec_to_matrix(np.cross(h_peg, Z_UP) * PRE_PITCH) @ down_orientation(tcp_yaw + yaw_err)
    # held: turn the hand as if the peg were rigid in it, towards the peg vertical, pitch capped
    upright = _cap_pitch(_align(su, Z_UP) @ r_tcp, MAX_PITCH)
    desired = np.where(holding[:, None, None], upright, pre)

    # lift: TCP ARC_STEP ahead on the circle around the bottom centre, towards straight above it
    rad = tcp - bottom
    dist = np.linalg.norm(rad, axis=-1)
    e_t = np.minimum(np.arctan2(rad[:, 2], np.sum(rad * h, -1)) + ARC_STEP, np.pi / 2)
    arc_t = bottom + dist[:, None] * (np.cos(e_t)[:, None] * h + np.sin(e_t)[:, None] * Z_UP)
    target[sel_lift] = arc_t[sel_lift]
    gripper[sel_lift] = GRIP_HOLD
    phases[sel_lift] = "lift"

    # stand: slide over the bottom centre in the pitch plane, pressing the lowest corner into the table
    lowest = c[:, 2] - np.sum(np.abs(r_peg[:, 2, :]) * s[:, OBJ_HALF_EXTENTS], -1)
    stand_t = tcp + STAND_GAIN * np.sum((bottom - tcp) * h, -1)[:, None] * h
    stand_t[:, 2] = tcp[:, 2] - lowest - STAND_PRESS
    target[sel_stand] = stand_t[sel_stand]
    gripper[sel_stand] = GRIP_HOLD
    phases[sel_stand] = "stand"

    target[sel_grasp] = tcp[sel_grasp]
    gripper[sel_grasp] = GRIP_HOLD
    phases[sel_grasp] = "grasp"

    hover = grasp_pt + np.array([0.0, 0.0, HOVER_DZ])
    target[sel_reopen] = np.concatenate([tcp[:, :2], np.maximum(tcp[:, 2:], hover[:, 2:])], -1)[sel_reopen]
    phases[sel_reopen] = "reopen"
    target[sel_desc] = grasp_pt[sel_desc]
    phases[sel_desc] = "descend"
    # approach: above the grasp point; when low and off to the side, straight up first
    low_side = (tcp[:, 2] < hover[:, 2] - 0.02) & (xy_err > 0.03)
    appr_t = np.where(low_side[:, None], np.concatenate([tcp[:, :2], hover[:, 2:]], -1), hover)
    target[sel_appr] = appr_t[sel_appr]
    phases[sel_appr] = "approach"

    acts = np.zeros((n, ACTION_DIM))
    acts[:, POS_SLICE] = motion.position(tcp, target)
    acts[sel_grasp, POS_SLICE] = 0.0  # do not drag the peg while the fingers close
    acts[:, ROT_SLICE] = motion.rotation(quats(s, TCP_QUAT), desired)
    acts[:, GRIPPER_INDEX] = gripper
    return acts, list(phases)
