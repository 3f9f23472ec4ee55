"""PickPlaceCube planner: pick the cube, carry it low over the region, set it down, let go.

``plan(motion, states)`` reuses :func:`robot_rl.teachers.plans.pick_cube.plan` for picking and carrying (with the
goal replaced by the current waypoint of the cube) and adds the placing part. Stateless: every phase is
inferred from the queried state alone (the trainer queries sparsely, at arbitrary steps).

Phases (per row; later ones override earlier ones):

* ``"hover"`` / ``"descend"`` / ``"grasp"`` / ``"reopen"``: the cube is neither held nor lying in the
  region: ``pick_cube.plan`` picks it (above it, open, fingers aligned to its faces; down; close). This is
  also the recovery when the cube was dropped outside the region (or lies tilted inside it).
* ``"carry"``: held, cube farther than ``LOWER_RADIUS`` from the aim point: move the cube to the aim
  point, its bottom ``CARRY_DZ`` above the table (``pick_cube.plan``'s carry towards that waypoint).
* ``"lower"``: held, cube within ``LOWER_RADIUS`` of the aim point: move it down onto the table (the
  waypoint is ``LOWER_UNDERSHOOT`` below its resting height, so the P-controller does not crawl over
  the last millimetres; the table stops the cube), xy still corrected.
* ``"release"``: held, cube centre within ``RELEASE_DZ`` of its resting height and within
  ``RELEASE_RADIUS`` of the region centre: open the gripper, no motion (geometry alone decides).
* ``"retreat"``: not held and the cube lies in the region (within ``PLACED_RADIUS`` of the centre,
  centre within ``PLACED_DZ`` of its resting height): gripper open, move straight up to ``RETREAT_DZ``
  above the cube once the fingers are open wider than ``OPEN_WIDTH`` (before that, stay still so they
  do not drag it), then hold. A cube lying in the region is never descended on or grasped again.

Aim point: the region centre, unless it lies farther than ``AIM_MAX_RADIAL`` from the Panda base
(``BASE_XY``); then it is pulled towards the base, by at most ``AIM_MAX_PULL``. Region centres are
clipped to ``|x|, |y| <= 0.2``, i.e. up to 0.815 m (0.839 m in a corner) from the base, while the arm,
pointing down with the cube a few centimetres above the table, reaches only about 0.78-0.80 m
(measured: moving outward at that height the TCP stops at 0.72-0.76 m with full per-step commands and
0.78-0.80 m with 0.25 commands). Past that the CPU controller's IK (pinocchio, from the current joints)
fails and ``pd_ee_delta_pose`` holds the *whole* arm still, so a target beyond reach freezes the carry for
the rest of the episode (the only failures, 5/50, before the aim point was pulled in). With the aim at
<= 0.765 m (<= 0.799 m in a corner) every P-controller target is within reach; the cube then lands
0.040-0.042 m from the centre, inside the 0.05 m success radius.

Measured (ManiSkill 3.0.1, CPU sim, run as the policy, 50-step horizon, ``benchmarks/teacher_competence.py``,
50 episodes from seed 0): queried every step at D = 1, 50/50 (mean 20.1 steps); as used, one answer per D
steps replayed open loop, 50/50 at D = 2 (23.0) and D = 4 (34.6, longest 46); from seed 1000, 50/50 at each
D. As a per-step P-controller (before answers were planned for their period): 200 episodes from seed 1000,
200/200 queried every step, and none held for D = 4; region centres put in all four far corners by hand:
solved in 18-22 steps. Recovery: after 10 random
actions, ``control_period_steps=4`` queried every step solves 20/20 (80-step horizon); opening the
gripper for 3 steps mid-carry, it re-picks the dropped cube and places it, 10/10 (100-step horizon).
"""

from __future__ import annotations

import numpy as np

from robot_rl.geometry import ACTION_DIM, GRIPPER_INDEX, POS_SLICE, ROT_SLICE, quat_to_matrix
from robot_rl.teachers.plans import pick_cube
from robot_rl.teachers.plans.common import (
    GOAL_POS,
    GRIPPER_OPEN,
    GRIPPER_WIDTH,
    IS_GRASPED,
    OBJ_HALF_SIZE,
    OBJ_POS,
    TCP_POS,
    TCP_QUAT,
    Motion,
    down_orientation,
    quats,
    yaw_of,
)

# Geometry (metres, world frame). Cube half size 0.02 (it rests with its centre at z = 0.02), region
# radius 0.05 (the success radius), region centre on the table (z = 0.001); the success test wants the
# cube within 5 mm of its resting height, slower than 0.05 m/s, and not grasped.
#: Carry the cube's bottom this far above the table: nothing to clear on the way, and a low carry keeps
#: the lowering short and the arm inside its (low) reach.
CARRY_DZ = 0.03
#: Cube xy this close to the aim point: lower it (the held cube lags the TCP by a few mm at most).
LOWER_RADIUS = 0.02
#: While lowering, aim the cube's centre this far below its resting height (the table stops it).
LOWER_UNDERSHOOT = 0.01
#: Held cube's centre within this of its resting height: open. Inside the success test's 5 mm band
#: (plus 1 mm slack, it settles), so the released cube drops at most ~6 mm and settles in a step or two.
RELEASE_DZ = 0.006
#: ... and within this of the region centre (success radius 0.05, 5 mm kept for settling).
RELEASE_RADIUS = 0.045
#: Panda base xy (world); its rotation is identity in these tasks (measured, tests/teachers).
BASE_XY = np.array([-0.615, 0.0])
#: Aim the cube no farther than this from the base: the low reach ends at ~0.78-0.80 m (measured).
AIM_MAX_RADIAL = 0.765
#: ... pulling the aim point towards the base by at most this (0.01 inside the 0.05 success radius).
AIM_MAX_PULL = 0.04
#: Not held, this close to the region centre and low: placed, never grasped again.
PLACED_RADIUS = 0.05
#: "Low" for a placed cube: its centre within this of its resting height (a tilted cube, resting on
#: an edge, is higher and is picked again).
PLACED_DZ = 0.01
#: After the release, rise until the TCP is this far above the cube's centre (clear of it), then hold.
RETREAT_DZ = 0.06
#: Gripper width (m, 0..0.08) above which the fingers are clear of the 0.04 m cube.
OPEN_WIDTH = 0.06


def plan(motion: Motion, states: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Plan one period action per row of ``states`` ``(N, 38)``; returns ``(actions (N, 7), phases)``."""
    s = np.asarray(states, dtype=np.float64)
    n = s.shape[0]
    tcp, obj, goal = s[:, TCP_POS], s[:, OBJ_POS], s[:, GOAL_POS]
    half = s[:, OBJ_HALF_SIZE]
    grasped = s[:, IS_GRASPED] > 0.5
    width = s[:, GRIPPER_WIDTH]
    goal_dist = np.linalg.norm(obj[:, :2] - goal[:, :2], axis=-1)
    # Aim point: the region centre, pulled towards the robot when it is at the edge of the low workspace.
    radial_vec = goal[:, :2] - BASE_XY
    radial = np.linalg.norm(radial_vec, axis=-1)
    aim_radial = np.minimum(radial, np.maximum(AIM_MAX_RADIAL, radial - AIM_MAX_PULL))
    aim_xy = BASE_XY + radial_vec * (aim_radial / np.maximum(radial, 1e-9))[:, None]
    aim_dist = np.linalg.norm(obj[:, :2] - aim_xy, axis=-1)
    rest_z = half  # the cube's centre height when it lies on the table (table top at z = 0)
    dz = obj[:, 2] - rest_z

    # Pick / carry / lower: pick_cube.plan with the goal replaced by the current waypoint of the cube.
    over = aim_dist < LOWER_RADIUS
    waypoint = goal.copy()
    waypoint[:, :2] = aim_xy
    waypoint[:, 2] = np.where(over, rest_z - LOWER_UNDERSHOOT, rest_z + CARRY_DZ)
    s_pick = s.copy()
    s_pick[:, GOAL_POS] = waypoint
    actions, ph = pick_cube.plan(motion, s_pick)
    actions = np.asarray(actions, dtype=np.float64).copy()
    phases = np.array(ph, dtype=object)
    phases[grasped & over] = "lower"

    # Release: held, low and inside the region -> open, stay.
    release = grasped & (dz < RELEASE_DZ) & (goal_dist < RELEASE_RADIUS)
    actions[release, POS_SLICE] = 0.0
    actions[release, GRIPPER_INDEX] = GRIPPER_OPEN
    phases[release] = "release"

    # Placed: not held, lying inside the region -> open, rise once the fingers are clear, hold.
    placed = ~grasped & (goal_dist < PLACED_RADIUS) & (dz < PLACED_DZ)
    if np.any(placed):
        up = tcp.copy()
        up[:, 2] = np.maximum(tcp[:, 2], obj[:, 2] + RETREAT_DZ)
        pos = motion.position(tcp, up)
        pos[width < OPEN_WIDTH] = 0.0
        r = quat_to_matrix(quats(s, TCP_QUAT))
        rot = motion.rotation(quats(s, TCP_QUAT), down_orientation(yaw_of(r)))
        actions[placed, POS_SLICE] = pos[placed]
        actions[placed, ROT_SLICE] = rot[placed]
        actions[placed, GRIPPER_INDEX] = GRIPPER_OPEN
        phases[placed] = "retreat"
    assert actions.shape == (n, ACTION_DIM)
    return actions, list(phases)
