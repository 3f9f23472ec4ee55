"""RememberColor3 planner (MIKASA-Robo ``RRL-RememberColor3-v0``, :mod:`robot_rl.envs.mikasa`): note the colour of
the cube shown first, then touch the cube of that colour, remembering the colour only through its own scratchpad
notes (issue 13).

``plan(motion, states, notes, steps)`` (``READS_NOTES``: the contract in :mod:`robot_rl.teachers.scripted`). The
privileged state holds the three cubes in colour order (red: ``obj_pos``, lime: ``goal_pos``, blue: ``tool_pos``),
each as the simulator reports it, z = 1000 m while hidden. The colour cue is which one stands on the table while
only one does (env steps 0..4, at the table centre); from step 10 all three do and nothing in the view says which
is meant.

* ``observe`` (fewer than three cubes on the table): wait with the TCP at :data:`WAIT_POS`, above the middle of
  where the cubes will appear (clear of them), gripper closed.
* ``touch`` (all three on the table): bring the TCP to :data:`TOUCH_DZ` above the chosen cube's centre
  (success: TCP within 0.05 m of it, robot static) and stay there.

Notes it writes (only from the queried state, positions in the robot base frame):

* the first answer of an episode: ``plan: observe, touch``;
* an answer that sees exactly one cube on the table and holds no grounding yet: ``seen <colour>_cube at <its
  position> step <k>`` and ``done observe step <k>``.

The cube touched is the one the newest grounding names. Without a scratchpad (``notes[i] is None``: a teacher
without memory), or without a grounding, it acts on its view alone and touches the first cube on the table in
colour order (red): right one time in three, as upstream shuffles which colour is shown.

Measured: ``benchmarks/teacher_competence.py --tasks RememberColor3-v0`` (README, competence table).
"""

from __future__ import annotations

import numpy as np

from robot_rl.envs.obs_layout import ROBOT_BASE_POS_WORLD
from robot_rl.geometry import GRIPPER_INDEX, POS_SLICE, ROT_SLICE, quat_to_matrix
from robot_rl.memory import format_done, format_grounding, format_plan
from robot_rl.teachers.plans.common import (
    GOAL_POS,
    GRIPPER_CLOSED,
    OBJ_POS,
    TCP_POS,
    TCP_QUAT,
    TOOL_POS,
    Motion,
    down_orientation,
    quats,
    yaw_of,
)

__all__ = ["READS_NOTES", "SUBTASKS", "COLORS", "CUBE_SLOTS", "WAIT_POS", "TOUCH_DZ", "plan"]

#: This planner reads the scratchpad (robot_rl.teachers.scripted's contract).
READS_NOTES = True
#: The subtasks, in order (robot_rl.memory.vocab, "RRL-RememberColor3-v0").
SUBTASKS = ("observe", "touch")
#: Colour names in the privileged-state slot order (upstream cube order 0..2), as scratchpad object prefixes.
COLORS = ("red", "lime", "blue")
#: Privileged-state slot of each colour's position.
CUBE_SLOTS = (OBJ_POS, GOAL_POS, TOOL_POS)
#: Where the TCP waits while the cubes are not all on the table (world, m): above the middle cube's place,
#: 0.06 m above the cubes' tops.
WAIT_POS = np.array([0.0, 0.0, 0.10])
#: The TCP this far above the touched cube's centre (m): 0.01 m above its top, within the 0.05 m success radius.
TOUCH_DZ = 0.03
#: A position above this z (m) is one MIKASA has hidden (it parks objects at z = 1000 m).
HIDDEN_ABOVE_Z = 10.0
_BASE = np.asarray(ROBOT_BASE_POS_WORLD, dtype=np.float64)


def plan(motion: Motion, states: np.ndarray, notes: list, steps: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
    """Plan one period action per row of ``states`` ``(N, 38)`` (privileged state, world frame, m) with each row's
    parsed scratchpad ``notes[i]`` (:class:`robot_rl.memory.Notes`, or None for a teacher without memory) and the
    env step ``steps[i]`` of its observation.

    Returns:
        ``(actions (N, 7), phases, notes)``: period deltas (``pd_ee_delta_pose``, gripper closed), ``N`` phase names
        (``"observe"``, ``"touch/<colour>"``) and the note lines this answer adds per row (``""``: none).

    Raises:
        ValueError: ``states`` is not ``(N, >=38)`` or ``notes`` / ``steps`` do not have ``N`` entries.
    """
    s = np.asarray(states, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < TOOL_POS.stop:
        raise ValueError(f"remember_color.plan: states must be (N, >={TOOL_POS.stop}), got {s.shape}")
    n = s.shape[0]
    if len(notes) != n or len(steps) != n:
        raise ValueError(f"remember_color.plan: {n} states but {len(notes)} notes and {len(steps)} steps")
    tcp = s[:, TCP_POS]
    cubes = np.stack([s[:, sl] for sl in CUBE_SLOTS], axis=1)  # (N, 3 colours, 3)
    visible = cubes[:, :, 2] < HIDDEN_ABOVE_Z  # (N, 3)
    count = visible.sum(axis=1)

    target = np.tile(WAIT_POS, (n, 1))
    phases = ["observe"] * n
    written = [""] * n
    for i in range(n):
        pad, step = notes[i], int(steps[i])
        chosen = None
        if pad is not None:
            lines = [] if pad.plan else [format_plan(SUBTASKS)]
            names = [g.name for g in pad.grounding if g.name.endswith("_cube")]
            if not names and count[i] == 1:  # the cue: the one cube on the table
                k = int(np.flatnonzero(visible[i])[0])
                name = f"{COLORS[k]}_cube"
                lines += [format_grounding(name, cubes[i, k] - _BASE, step), format_done("observe", step)]
                names = [name]
            if names and names[-1].removesuffix("_cube") in COLORS:
                chosen = COLORS.index(names[-1].removesuffix("_cube"))
            written[i] = "\n".join(lines)
        if count[i] == len(COLORS):
            if chosen is None:  # no memory (or no grounding): the view alone, the first cube on the table
                chosen = int(np.flatnonzero(visible[i])[0])
            target[i] = cubes[i, chosen] + np.array([0.0, 0.0, TOUCH_DZ])
            phases[i] = f"touch/{COLORS[chosen]}"

    acts = np.zeros((n, 7))
    acts[:, POS_SLICE] = motion.position(tcp, target)
    r = quat_to_matrix(quats(s, TCP_QUAT))
    acts[:, ROT_SLICE] = motion.rotation(quats(s, TCP_QUAT), down_orientation(yaw_of(r)))
    acts[:, GRIPPER_INDEX] = GRIPPER_CLOSED
    return acts, phases, written
