"""The privileged state vector's layout: what scripted teachers read (light: no simulator import).

:func:`robot_rl.envs.privileged_state` fills it from a ManiSkill env (``envs/tasks.py``); planners
(``robot_rl.teachers.plans``) index it by these names. Keep it exact: it is a contract between the
simulator side and every teacher that plans from privileged state.

At deployment the ROS node assembles the same vector from robot and perception messages for a served teacher
that reads it (``GET /metadata`` says ``needs_state``): :func:`privileged_fields` gives each column block a ROS
source in the language of :func:`robot_rl.deploy.ros_io.parse_source`, as the ``state`` fields of
:mod:`robot_rl.envs.obs_layout` have one. Sources exist for the cube tasks (PushCube, PickCube, PickPlaceCube and
their hidden-goal and long-horizon variants: the goal is a perceived pose there); LiftPegUpright's goal is computed
from the peg, PegInsertionSide's and PokeCube's need a tool and hole the node does not assemble into this vector
yet, so those tasks have none.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["PRIVILEGED_STATE_LAYOUT", "PRIVILEGED_STATE_DIM", "CUBE_STATE_DIM", "PRIVILEGED_SOURCES",
           "privileged_fields"]

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

#: Units and frames of each block (for the fields :func:`privileged_fields` builds).
_UNITS = {"tcp_pos": ("world", "m"), "tcp_quat": ("world", "quaternion wxyz"), "obj_pos": ("world", "m"),
          "obj_quat": ("world", "quaternion wxyz"), "goal_pos": ("world", "m"), "is_grasped": ("none", "0 or 1"),
          "gripper_width": ("none", "m"), "obj_half_size": ("none", "m"), "goal_quat": ("world", "quaternion wxyz"),
          "obj_half_extents": ("none", "m"), "tool_pos": ("world", "m"), "tool_quat": ("world", "quaternion wxyz"),
          "tool_grasped": ("none", "0 or 1"), "tool_half_extents": ("none", "m")}

#: The cube tasks' privileged state from ROS inputs: quaternions as perception reports them (no hemisphere: the
#: simulator's own sign, and planners read rotation matrices), the grasp flag the way the robot knows it
#: (``robot_rl.deploy.grasp``), the tool columns constant (no tool).
_CUBE_SOURCES = {
    "tcp_pos": "position(tcp)", "tcp_quat": "quat(tcp)", "obj_pos": "position(object)", "obj_quat": "quat(object)",
    "goal_pos": "position(goal)", "is_grasped": "grasp(object, 0.04)", "gripper_width": "gripper_width",
    "obj_half_size": "size(object)[0]", "goal_quat": "quat(goal)", "obj_half_extents": "size(object)",
    "tool_pos": "const(0, 0, 0)", "tool_quat": "const(1, 0, 0, 0)", "tool_grasped": "const(0)",
    "tool_half_extents": "const(0, 0, 0)",
}
#: ROS sources of the privileged state per task id (a long-horizon id uses its sparse task's).
PRIVILEGED_SOURCES: dict[str, dict[str, str]] = {
    task: _CUBE_SOURCES for task in (
        "RRL-PushCube-Sparse-v1", "RRL-PickCube-Sparse-v1", "RRL-PickPlaceCube-Sparse-v1",
        "RRL-PushCube-HiddenGoal-v1", "RRL-PickPlaceCube-HiddenGoal-v1", "RRL-PickPlaceCube-Restore-v1")
}


def privileged_fields(task_id: str):
    """The privileged state of ``task_id`` as :class:`~robot_rl.observation.ObsField` blocks in
    :data:`PRIVILEGED_STATE_LAYOUT` order (sizes sum to :data:`PRIVILEGED_STATE_DIM`), each with its ROS source.

    Args:
        task_id: an ``RRL-`` env id (a ``-Sparse-LH-v1`` id maps to its sparse task).

    Raises:
        ValueError: a task without sources (the message lists the tasks that have them).
    """
    from robot_rl.observation import ObsField

    key = str(task_id).replace("-Sparse-LH-v1", "-Sparse-v1")
    sources = PRIVILEGED_SOURCES.get(key)
    if sources is None:
        raise ValueError(f"no ROS sources of the privileged state for task {task_id!r} (a served teacher that reads "
                         f"it cannot be used there); tasks with sources: {', '.join(PRIVILEGED_SOURCES)}")
    return tuple(ObsField(name, sl.stop - sl.start, _UNITS[name][0], _UNITS[name][1],
                          f"privileged state {name} (robot_rl.envs.privileged)", source=sources[name])
                 for name, sl in PRIVILEGED_STATE_LAYOUT.items())
