"""TakeItBack planner (MIKASA-Robo ``RRL-TakeItBack-v0``, :mod:`robot_rl.envs.mikasa`): take the cube into the goal
region, then back to where it started, remembering the start only through its own scratchpad notes (issue 13).

``plan(motion, states, notes, steps)`` (``READS_NOTES``: the contract in :mod:`robot_rl.teachers.scripted`). The
cube is carried, not pushed: the goal region's centre lies 0.815-0.865 m from the Panda base and the arm's low
reach ends at about 0.80 m (measured here: the TCP stops at 0.79-0.81 m at z = 0.02-0.04 m with 0.1-0.3 commands),
so pushing it back towards the robot (the TCP beyond the cube) is out of reach, while a held cube can be brought
into the region's near edge and out again. Success only tests the cube's xy (it has been within 0.08 m of the goal
centre, and now is within 0.08 m of the start), so the cube never has to be set down.

* ``to_goal``: :func:`robot_rl.teachers.plans.pick_cube.plan` picks the cube and carries it (its bottom
  :data:`CARRY_DZ` above the table) to an aim point inside the region on the line from the base to its centre,
  :data:`AIM_INSIDE` inside the rim, no farther than :data:`AIM_MAX_RADIAL` from the base (and at most
  :data:`AIM_MAX_DEPTH` in from the rim).
* ``to_goal/rise``: a fix-up of ``pick_cube.plan``: when the open fingers straddle the cube with the TCP more
  than its ``Z_TOL`` below the cube's centre (the long descent from TakeItBack's raised home pose, held for
  ``D = 4`` steps, overshoots onto the table: measured in 3 of 50 episodes, all with the cube in the middle start
  area right below the home pose), ``pick_cube`` only corrects xy and never grasps; rise to the cube's centre.
* ``take_back``: once the view shows the goal reached (the purple region: privileged ``tool_pos`` on the table,
  z < 10 m, :mod:`robot_rl.envs.mikasa`), the same pick/carry takes the cube to the remembered start; the episode
  ends on success as the cube comes within 0.08 m of it.

Notes it writes (only from the queried state, :mod:`robot_rl.memory.scratchpad`'s line format, positions in the
robot base frame):

* the first answer of an episode: ``plan: to_goal, take_back``;
* while no grounding of the cube is held, the goal is not reached, and the cube lies on the table, not held
  (not grasped, or grasped according to a stale flag with the TCP away from it):
  ``seen cube at <its position> step <k>`` (the start: at step 0 the cube stands on it);
* the first answer that sees the goal reached: ``done to_goal step <k>``.

Without a scratchpad (``notes[i] is None``: a teacher without memory) it acts on its view alone: it takes the cube
to the goal, then to :data:`GUESS_XY`, the centre of the middle one of the three start areas; that succeeds
when the start lies in that area (one in three) and rarely otherwise.

Measured: ``benchmarks/teacher_competence.py --tasks TakeItBack-v0`` (README, competence table).
"""

from __future__ import annotations

import numpy as np

from robot_rl.envs.obs_layout import ROBOT_BASE_POS_WORLD
from robot_rl.memory import format_done, format_grounding, format_plan
from robot_rl.teachers.plans import pick_cube
from robot_rl.teachers.plans.common import (
    GOAL_POS,
    IS_GRASPED,
    OBJ_HALF_SIZE,
    OBJ_POS,
    TCP_POS,
    TOOL_POS,
    Motion,
)

__all__ = ["READS_NOTES", "SUBTASKS", "plan", "GUESS_XY", "GOAL_RADIUS", "CARRY_DZ", "AIM_INSIDE",
           "AIM_MAX_RADIAL", "AIM_MIN_INSIDE"]

#: This planner reads the scratchpad (robot_rl.teachers.scripted's contract).
READS_NOTES = True
#: The subtasks, in order (robot_rl.memory.vocab, "RRL-TakeItBack-v0").
SUBTASKS = ("to_goal", "take_back")
#: Where a teacher without memory takes the cube back (world xy, m): the middle start area's centre (upstream:
#: start x in [-0.05, 0.05], y in 0.1 k + [0, 0.05], k in {-1, 0, 1}).
GUESS_XY = np.array([0.0, 0.025])
#: The goal (and start) region's radius, m (upstream GOAL_RADIUS: the success radius).
GOAL_RADIUS = 0.08
#: Carry the cube's bottom this far above the table, m.
CARRY_DZ = 0.025
#: Aim this far inside the goal region's rim (m), on the line from the base to its centre ...
AIM_INSIDE = 0.03
#: ... but no farther than this from the Panda base (m; the low reach ends at ~0.80 m) ...
AIM_MAX_RADIAL = 0.775
#: ... and never less than this inside the rim (m): for the farthest goals the reach decides.
AIM_MIN_INSIDE = 0.008
#: A position above this z (m) is one MIKASA has hidden (it parks objects at z = 1000 m).
HIDDEN_ABOVE_Z = 10.0
_BASE = np.asarray(ROBOT_BASE_POS_WORLD, dtype=np.float64)
#: A cube whose centre is this close to its resting height (m) lies on the table.
ON_TABLE_DZ = 0.01


def _aim(goal_xy: np.ndarray) -> np.ndarray:
    """``(N, 2)`` aim points (world xy, m) inside the goal regions centred at ``goal_xy`` ``(N, 2)``."""
    radial_vec = goal_xy - _BASE[:2]
    radial = np.linalg.norm(radial_vec, axis=-1)
    rim = radial - GOAL_RADIUS  # the region's point nearest the base
    want = np.minimum(rim + AIM_INSIDE, AIM_MAX_RADIAL)
    want = np.maximum(want, rim + AIM_MIN_INSIDE)
    return _BASE[:2] + radial_vec * (want / np.maximum(radial, 1e-9))[:, None]


def plan(motion: Motion, states: np.ndarray, notes: list, steps: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
    """Plan one period action per row of ``states`` ``(N, 38)`` (privileged state, world frame, m) with each row's
    parsed scratchpad ``notes[i]`` (:class:`robot_rl.memory.Notes`, or None for a teacher without memory) and the
    env step ``steps[i]`` of its observation.

    Returns:
        ``(actions (N, 7), phases, notes)``: period deltas (``pd_ee_delta_pose``), ``N`` phase names
        (``"<subtask>/<pick_cube phase>"``) and the note lines this answer adds per row (``""``: none).

    Raises:
        ValueError: ``states`` is not ``(N, >=38)`` or ``notes`` / ``steps`` do not have ``N`` entries.
    """
    s = np.asarray(states, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < TOOL_POS.stop:
        raise ValueError(f"take_it_back.plan: states must be (N, >={TOOL_POS.stop}), got {s.shape}")
    n = s.shape[0]
    if len(notes) != n or len(steps) != n:
        raise ValueError(f"take_it_back.plan: {n} states but {len(notes)} notes and {len(steps)} steps")
    obj, goal = s[:, OBJ_POS], s[:, GOAL_POS]
    grasped = s[:, IS_GRASPED] > 0.5
    # held: grasped with the cube between the fingers. The grasp flag alone is stale in the first observation after
    # a reset that follows a held cube (ManiSkill's contact forces are the previous episode's last step: measured).
    held = grasped & (np.linalg.norm(s[:, TCP_POS] - obj, axis=-1) < pick_cube.HELD_DIST)
    on_table = (obj[:, 2] - s[:, OBJ_HALF_SIZE]) < ON_TABLE_DZ
    reached_view = s[:, TOOL_POS][:, 2] < HIDDEN_ABOVE_Z  # the purple "goal reached" region is on the table

    target_xy = _aim(goal[:, :2])
    back = np.zeros(n, dtype=bool)
    written = [""] * n
    for i in range(n):
        pad, step = notes[i], int(steps[i])
        if pad is None:  # no memory: the view alone
            if reached_view[i]:
                back[i] = True
                target_xy[i] = GUESS_XY
            continue
        done = pad.done()
        start = pad.seen("cube")
        lines = [] if pad.plan else [format_plan(SUBTASKS)]
        if start is None and not reached_view[i] and "to_goal" not in done and not held[i] and on_table[i]:
            start = tuple(obj[i] - _BASE)
            lines.append(format_grounding("cube", start, step))
        if reached_view[i] and "to_goal" not in done:
            lines.append(format_done("to_goal", step))
        if reached_view[i] or "to_goal" in done:
            back[i] = True
            if start is not None:
                target_xy[i] = np.asarray(start, dtype=np.float64)[:2] + _BASE[:2]
            else:  # never saw the start (queried first after the cube moved): the view alone
                target_xy[i] = GUESS_XY
        written[i] = "\n".join(lines)

    waypoint = goal.copy()
    waypoint[:, :2] = target_xy
    waypoint[:, 2] = s[:, OBJ_HALF_SIZE] + CARRY_DZ
    s_pick = s.copy()
    s_pick[:, GOAL_POS] = waypoint
    actions, ph = pick_cube.plan(motion, s_pick)
    actions = np.asarray(actions, dtype=np.float64).copy()
    phases = [f"{'take_back' if b else 'to_goal'}/{p}" for b, p in zip(back, ph)]
    return actions, phases, written
