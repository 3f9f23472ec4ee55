"""The privileged state vector's layout: what scripted teachers read (light: no simulator import).

:func:`robot_rl.envs.privileged_state` fills it from a ManiSkill env (``envs/tasks.py``); planners
(``robot_rl.teachers.plans``) index it by these names. Keep it exact: it is a contract between the
simulator side and every teacher that plans from privileged state.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["PRIVILEGED_STATE_LAYOUT", "PRIVILEGED_STATE_DIM", "CUBE_STATE_DIM"]

#: Layout of the privileged state vector: name -> slice. World frame (ManiSkill's scene frame), metres,
#: quaternions wxyz.
PRIVILEGED_STATE_LAYOUT: "OrderedDict[str, slice]" = OrderedDict(
    [
        ("tcp_pos", slice(0, 3)),  # tool centre point position, m
        ("tcp_quat", slice(3, 7)),  # TCP orientation, wxyz
        ("obj_pos", slice(7, 10)),  # manipulated object position, m
        ("obj_quat", slice(10, 14)),  # object orientation, wxyz
        ("goal_pos", slice(14, 17)),  # goal position, m (PushCube: goal region centre, z = 1e-3)
        ("is_grasped", slice(17, 18)),  # 1.0 if the gripper holds the object, else 0.0
        ("gripper_width", slice(18, 19)),  # sum of the two finger joint positions, m (0 .. 0.08)
        ("obj_half_size", slice(19, 20)),  # object half size, m (cube: half edge, 0.02; peg: half width)
        ("goal_quat", slice(20, 24)),  # goal orientation, wxyz (identity for position-only goals)
        ("obj_half_extents", slice(24, 27)),  # object half sizes along its own x, y, z, m
        ("tool_pos", slice(27, 30)),  # a tool the gripper uses on the object (PokeCube's peg), m; 0 if none
        ("tool_quat", slice(30, 34)),  # tool orientation, wxyz; (1, 0, 0, 0) if none
        ("tool_grasped", slice(34, 35)),  # 1.0 if the gripper holds the tool
        ("tool_half_extents", slice(35, 38)),  # tool half sizes along its own x, y, z, m; 0 if none
    ]
)
#: Length of the privileged state vector.
PRIVILEGED_STATE_DIM = 38
#: The first 20 entries are the cube tasks' original layout (PushCube and PickCube planners read only these).
CUBE_STATE_DIM = 20
