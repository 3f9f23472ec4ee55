"""PickPlaceCube-Restore planner: pick-and-place onto the region, then put the cube back where it started,
remembering the start only through its own scratchpad notes (issue 13, :mod:`robot_rl.memory`).

``plan(motion, states, notes, steps)`` (``READS_NOTES``: the contract in :mod:`robot_rl.teachers.scripted`) reuses
:func:`robot_rl.teachers.plans.pick_place_cube.plan` for both placements, with the goal replaced by the current
target: the region while ``place`` is not done, then the remembered start.

Notes it writes (only from the queried state, in :mod:`robot_rl.memory.scratchpad`'s line format, positions in the
robot base frame):

* the first answer of an episode: ``plan: pick, place, restore``;
* while the cube has not been picked and lies outside the region, and no grounding of it is held:
  ``seen cube at <its position> step <k>``: the start, seen at that step;
* the first answer that sees the cube held: ``done pick step <k>``;
* the first answer that sees it lying released in the region: ``done place step <k>`` (then the target is the
  start).

Without a scratchpad (``notes[i] is None``: a teacher without memory) it acts on its view alone: a cube lying in
the region has been placed, so it carries it to :data:`GUESS_XY` (the centre of the start area), the best guess
without memory; once it holds the cube again its view no longer says the cube was placed, so it takes it back to
the region. Its success is about the chance that the start lies within 0.05 m of the guess.

Measured: ``benchmarks/teacher_competence.py`` (README, competence table).
"""

from __future__ import annotations

import numpy as np

from robot_rl.envs.obs_layout import ROBOT_BASE_POS_WORLD
from robot_rl.memory import format_done, format_grounding, format_plan
from robot_rl.teachers.plans import pick_place_cube
from robot_rl.teachers.plans.common import GOAL_POS, IS_GRASPED, OBJ_HALF_SIZE, OBJ_POS, Motion

#: This planner reads the scratchpad (robot_rl.teachers.scripted's contract).
READS_NOTES = True
#: The subtasks, in order (robot_rl.memory.vocab).
SUBTASKS = ("pick", "place", "restore")
#: Where a teacher without memory puts the cube back: the centre of the start area (world xy, m).
GUESS_XY = np.array([0.0, 0.0])
_BASE = np.asarray(ROBOT_BASE_POS_WORLD, dtype=np.float64)


def plan(motion: Motion, states: np.ndarray, notes: list, steps: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
    """Plan one period action per row of ``states`` ``(N, 38)`` with each row's parsed scratchpad ``notes[i]``
    (:class:`robot_rl.memory.Notes` or None) and observation env step ``steps[i]``.

    Returns:
        ``(actions (N, 7), phases, notes)``: ``notes[i]`` the lines this answer adds (``""``: none).

    Raises:
        ValueError: ``notes`` or ``steps`` do not have one entry per row of ``states``.
    """
    s = np.asarray(states, dtype=np.float64)
    n = s.shape[0]
    if len(notes) != n or len(steps) != n:
        raise ValueError(f"pick_place_restore.plan: {n} states but {len(notes)} notes and {len(steps)} steps")
    obj, goal = s[:, OBJ_POS], s[:, GOAL_POS]
    grasped = s[:, IS_GRASPED] > 0.5
    in_region = np.linalg.norm(obj[:, :2] - goal[:, :2], axis=-1) < pick_place_cube.PLACED_RADIUS
    low = (obj[:, 2] - s[:, OBJ_HALF_SIZE]) < pick_place_cube.PLACED_DZ
    placed_view = ~grasped & in_region & low

    target = goal.copy()
    restoring = np.zeros(n, dtype=bool)
    written = [""] * n
    for i in range(n):
        pad, step = notes[i], int(steps[i])
        if pad is None:  # no memory: the view alone
            if placed_view[i]:
                restoring[i] = True
                target[i, :2] = GUESS_XY
            continue
        done = pad.done()
        start = pad.seen("cube")
        lines = [] if pad.plan else [format_plan(SUBTASKS)]
        if start is None and "place" not in done and not grasped[i] and not in_region[i]:
            start = tuple(obj[i] - _BASE)
            lines.append(format_grounding("cube", start, step))
        if grasped[i] and "pick" not in done:
            lines.append(format_done("pick", step))
        if placed_view[i] and "place" not in done:
            lines.append(format_done("place", step))
            done.add("place")
        if "place" in done and start is not None:
            restoring[i] = True
            target[i, :2] = (np.asarray(start) + _BASE)[:2]
        written[i] = "\n".join(lines)

    s_plan = s.copy()
    s_plan[:, GOAL_POS] = target
    actions, ph = pick_place_cube.plan(motion, s_plan)
    phases = np.array([("restore:" if r else "") + p for r, p in zip(restoring, ph)], dtype=object)
    return actions, list(phases), written
