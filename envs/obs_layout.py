"""Layout of each robot_rl task's flat ManiSkill ``state`` observation: field order, sizes, frames, units.

The ROS 2 node rebuilds the policy's observation from robot and perception messages with this
layout (it ships in the exported policy's JSON sidecar, :mod:`robot_rl.deploy.export`), so it must
match the simulator exactly; ``tests/envs/test_obs_layout.py`` pins every field against the
simulator's internals.

How ManiSkill 3.0.1 builds the vector (``BaseEnv.get_obs`` with ``obs_mode="state"``):
``dict(agent=self._get_obs_agent(), extra=self._get_obs_extra(info))`` flattened depth-first in
insertion order by ``common.flatten_state_dict`` (each value ``(N, k)``, a bool/``(N,)`` value as one
column, all concatenated with ``torch.hstack``, so booleans become 0.0 / 1.0).

- ``agent`` = ``BaseAgent.get_proprioception()``: ``qpos`` then ``qvel`` of the 9 active Panda joints
  (``panda_joint1..7``, ``panda_finger_joint1..2``); the controller state is empty for
  ``pd_ee_delta_pose`` (``use_target=False``), so nothing else.
- ``extra``: ``PushCubeEnv._get_obs_extra``: ``tcp_pose, goal_pos, obj_pose``;
  ``PickCubeEnv._get_obs_extra``: ``is_grasped, tcp_pose, goal_pos, obj_pose, tcp_to_obj_pos,
  obj_to_goal_pos``; ``PickPlaceCubeEnv`` (``envs/pick_place_cube.py``): PickCube's six with the goal on
  the table; ``LiftPegUprightEnv``: ``tcp_pose, obj_pose`` (the peg); ``PegInsertionSideEnv``:
  ``tcp_pose, peg_pose, peg_half_size, box_hole_pose, box_hole_radius``; ``PokeCubeEnv``: ``tcp_pose,
  cube_pose, peg_pose, goal_pos, tcp_to_peg_pos, peg_to_cube_pos, cube_to_goal_pos, peghead_to_cube_pos``.
  Sizes: PushCube 35, PickCube 42, PickPlaceCube 42, LiftPegUpright 32, PegInsertionSide 43, PokeCube 54;
  a long-horizon (``-LH-``) variant observes exactly what its sparse task does. The hidden-goal variants
  (``envs/tasks.py``, issue 12) drop the goal's keys in ``_get_obs_extra``: PushCube-HiddenGoal has no
  ``goal_pos`` (32), PickPlaceCube-HiddenGoal neither ``goal_pos`` nor ``obj_to_goal_pos`` (36).

Upstream quirks a deployment must reproduce (each field's description says more):

- PokeCube's ``goal_pos`` is ``peg.pose.p``, the peg's centre (a copy of ``peg_pose[:3]``), not the
  goal region; the region's centre is ``cube_pose[:3] + cube_to_goal_pos``.
- PokeCube's ``peghead_to_cube_pos`` is head *minus* cube (the other ``a_to_b`` fields are ``b - a``), and
  its "head" is the peg centre + 0.12 m along *world* x, not rotated with the peg:
  ``peghead_to_cube_pos == (0.12, 0, 0) - peg_to_cube_pos`` always.
- PegInsertionSide's ``peg_half_size``, ``box_hole_pose`` and ``box_hole_radius`` are per-episode constants
  (sizes drawn at every reset, the box is kinematic); the "radius" is the half side of a square hole, and
  ``box_hole_pose`` is a ManiSkill ``Pose`` product, whose quaternion ManiSkill standardizes to ``w >= 0``.
  Sizes (``peg_half_size``, ``box_hole_radius``) have frame ``none``: nothing to transform.

Frames. ``world`` is ManiSkill's scene frame: origin on the table top (z = 0 is the table surface),
z up, x pointing away from the robot. The robot base (``panda_link0``) sits at
:data:`ROBOT_BASE_POS_WORLD` = (-0.615, 0, 0) m with identity orientation (``TableSceneBuilder``
sets it on every reset), so a position in the robot base frame, as a real Franka reports it, is
``p_world = p_base + ROBOT_BASE_POS_WORLD`` and orientations are the same in both frames.
Quaternions are ``(w, x, y, z)``; their sign is whatever the simulator reports (not canonicalized):
over 1500 random-action steps the TCP quaternion had ``x > 0`` on 99.9% of steps and the cube's
``w >= 0`` on ~97%, so a deployment should give the policy the sign in that hemisphere.

Hemispheres per pose field, re-measured with ``benchmarks/quat_hemispheres.py --episodes 20`` (per task 20
random-action episodes and 20 of the scripted teacher queried every env step, seeds 0-19; the quaternion of
the observation after every env step). "min" is the smallest magnitude of that component seen (how far the
poses stay from the hemisphere's edge):

================  ==================  =========  ======  ======  ====================================
task              field               component  >= 0    min     steps (random + scripted)
================  ==================  =========  ======  ======  ====================================
PickPlaceCube     tcp_pose            x          100%    0.961   1382 (1000 + 382)
PickPlaceCube     obj_pose (cube)     w          100%    0.041   1382
LiftPegUpright    tcp_pose            x          100%    0.967   1372 (1000 + 372)
LiftPegUpright    obj_pose (peg)      w          100%    0.502   1372 (x too: 100%)
PegInsertionSide  tcp_pose            x          100%    0.298   2927 (2000 + 927) (y too: 100%)
PegInsertionSide  peg_pose            w          100%    0.279   2927 (z too: 100%)
PegInsertionSide  box_hole_pose       w          100%    0.557   2927 (w >= 0 by construction; z too)
PokeCube          tcp_pose            x          100%    0.967   1428 (1000 + 428)
PokeCube          cube_pose           w          100%    0.678   1428
PokeCube          peg_pose            w          100%    0.952   1428
PushCube          tcp_pose            x          100%    0.969   1187 (991 + 196)
PushCube          obj_pose (cube)     w          100%    0.834   1187
PickCube          tcp_pose            x          100%    0.957   1343 (967 + 376)
PickCube          obj_pose (cube)     w          100%    0.041   1343
================  ==================  =========  ======  ======  ====================================

So every TCP pose is in the ``x >= 0`` hemisphere and every object pose (cube, peg, box hole) in ``w >= 0``,
as ``deploy/ros_io.py`` ``QUAT_HEMISPHERE`` assumes for ``ee_pose`` and ``object_pose``; no task observes a
goal orientation. The 97% above was not reproduced: the cube had ``w >= 0`` on every step here too. Why
``w``: the reset orientations have ``w >= 0`` (``randomization.random_quaternions`` ends in
``matrix_to_quaternion``, which standardizes; the fixed ones, ``euler2quat(pi/2, 0, 0)`` and the identity,
have ``w > 0``), and PhysX integrates the quaternion continuously without re-canonicalizing (a pose set
with ``w < 0`` reads back and steps on with ``w < 0``), so an object's ``w`` turns negative only when its
rotation angle from the identity passes 180 deg. A cube whose random reset yaw is near 180 deg (PickCube,
PickPlaceCube: yaw uniform in [0, 2 pi)) starts at that edge (``|w| = 0.041`` seen): turned a few degrees
the right way in the hand it would cross it, and there canonicalizing to ``w >= 0`` picks the other sign
than the simulator. No step measured here crossed it.
``box_hole_pose`` is a ManiSkill ``Pose`` product, whose quaternion is standardized to ``w >= 0``.
"""

from __future__ import annotations

from robot_rl.observation import ObsField

__all__ = [
    "ObsField",
    "resolve_task",
    "ROBOT_BASE_POS_WORLD",
    "ROBOT_BASE_QUAT_WORLD",
    "PANDA_JOINT_NAMES",
    "OBS_LAYOUTS",
    "observation_layout",
]

#: Position of the Panda base link in the world frame, m (ManiSkill 3.0.1 ``TableSceneBuilder``:
#: ``robot.set_pose(sapien.Pose([-0.615, 0, 0]))`` for the Panda, on every reset).
ROBOT_BASE_POS_WORLD: tuple[float, float, float] = (-0.615, 0.0, 0.0)
#: Orientation of the Panda base in the world frame, quaternion wxyz (identity: axes aligned).
ROBOT_BASE_QUAT_WORLD: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
#: Active joints of ManiSkill's Panda, in qpos/qvel order: 7 revolute arm joints, 2 prismatic fingers.
PANDA_JOINT_NAMES: tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8)) + (
    "panda_finger_joint1",
    "panda_finger_joint2",
)

#: Frame names used in :attr:`ObsField.frame`.
JOINT = "joint"  # joint space, ordered as PANDA_JOINT_NAMES
WORLD = "world"  # ManiSkill scene frame; robot base at ROBOT_BASE_POS_WORLD, axes aligned
NONE = "none"  # a flag, no frame

_POSE_COMPONENTS = ("x", "y", "z", "qw", "qx", "qy", "qz")
_XYZ = ("x", "y", "z")


_QPOS = ObsField(
    "qpos", 9, JOINT, "rad (7 arm joints), m (2 finger joints)",
    "joint positions, robot.get_qpos(); each finger joint is one finger's opening (0 closed .. 0.04 open), "
    "so the gripper width is their sum",
    PANDA_JOINT_NAMES,
    source="joints.position",
)
_QVEL = ObsField(
    "qvel", 9, JOINT, "rad/s (7 arm joints), m/s (2 finger joints)",
    "joint velocities, robot.get_qvel()",
    PANDA_JOINT_NAMES,
    source="joints.velocity",
)
_TCP_POSE = ObsField(
    "tcp_pose", 7, WORLD, "m, quaternion wxyz",
    "pose of the tool centre point (link panda_hand_tcp, between the fingertips), agent.tcp.pose.raw_pose; "
    "in the robot base frame the position is p - ROBOT_BASE_POS_WORLD",
    _POSE_COMPONENTS,
    source="pose(tcp, +x)",
)
_IS_GRASPED = ObsField(
    "is_grasped", 1, NONE, "0 or 1",
    "1.0 if the gripper holds the cube (agent.is_grasping: both fingers push on it, contact force >= 0.5 N "
    "within 85 deg of the closing direction)",
    ("is_grasped",),
    source="grasp(object, 0.04)",
)
_PUSH_GOAL = ObsField(
    "goal_pos", 3, WORLD, "m",
    "centre of the goal region (red/white target disc on the table, z = 0.001), goal_region.pose.p",
    _XYZ,
    source="position(goal)",
)
_PICK_GOAL = ObsField(
    "goal_pos", 3, WORLD, "m",
    "goal position for the cube's centre (green sphere in the air), goal_site.pose.p",
    _XYZ,
    source="position(goal)",
)
_PUSH_OBJ = ObsField(
    "obj_pose", 7, WORLD, "m, quaternion wxyz",
    "pose of the cube's centre (edge 0.04 m), obj.pose.raw_pose",
    _POSE_COMPONENTS,
    source="pose(object, +w)",
)
_PICK_OBJ = ObsField(
    "obj_pose", 7, WORLD, "m, quaternion wxyz",
    "pose of the cube's centre (edge 0.04 m), cube.pose.raw_pose",
    _POSE_COMPONENTS,
    source="pose(object, +w)",
)
_TCP_TO_OBJ = ObsField(
    "tcp_to_obj_pos", 3, WORLD, "m",
    "cube position minus TCP position (world axes), cube.pose.p - agent.tcp_pose.p",
    _XYZ,
    source="position(object) - position(tcp)",
)
_OBJ_TO_GOAL = ObsField(
    "obj_to_goal_pos", 3, WORLD, "m",
    "goal position minus cube position (world axes), goal_site.pose.p - cube.pose.p",
    _XYZ,
    source="position(goal) - position(object)",
)

_PLACE_OBJ_TO_GOAL = ObsField(
    "obj_to_goal_pos", 3, WORLD, "m",
    "goal region centre minus cube position (world axes), goal_region.pose.p - cube.pose.p; the region lies on "
    "the table (z = 0.001), so z is 0.001 - cube z (-0.019 for a cube resting on the table)",
    _XYZ,
    source="position(goal) - position(object)",
)
_LIFT_PEG_OBJ = ObsField(
    "obj_pose", 7, WORLD, "m, quaternion wxyz",
    "pose of the peg's centre, peg.pose.raw_pose: a box 0.24 m long along its own x axis with a 0.05 m square "
    "section (red half at -x, blue half at +x); at reset it lies on the table along world x (centre z = 0.025); "
    "upright (success) means its x axis along world +-z with the centre at z = 0.12",
    _POSE_COMPONENTS,
    source="pose(object, +w)",
)
_INSERT_PEG = ObsField(
    "peg_pose", 7, WORLD, "m, quaternion wxyz",
    "pose of the peg's centre, peg.pose.raw_pose: a box long along its own x axis (sizes in peg_half_size), "
    "its orange head at +x (the end that goes into the hole), white tail at -x; at reset it lies on the table",
    _POSE_COMPONENTS,
    source="pose(object, +w)",
)
_PEG_HALF_SIZE = ObsField(
    "peg_half_size", 3, NONE, "m",
    "per-episode constant: the peg's half extents along its own x, y, z axes (peg_half_sizes): half length in "
    "[0.085, 0.125], half width (= half height) in [0.015, 0.025]; the head is at +half length along the peg's x. "
    "Redrawn at every reset (one env per process reconfigures each episode), fixed within an episode. A size, "
    "not a vector: nothing to transform (frame none)",
    ("half_length", "half_width", "half_height"),
    source="size(object)",
)
_BOX_HOLE_POSE = ObsField(
    "box_hole_pose", 7, WORLD, "m, quaternion wxyz",
    "per-episode constant (the box is kinematic): pose of the centre of the box's square hole, box.pose * "
    "box_hole_offsets, with the box's orientation. The box is a cube of half edge = the peg's half length; the "
    "hole runs along this frame's x axis through the whole box and its centre is mid-depth. Insertion moves the "
    "peg along +x: the goal is the peg head at this point with the peg's x along the hole's x; success is the head "
    "at x >= -0.015 m and within box_hole_radius in y and z, in this frame",
    _POSE_COMPONENTS,
    source="pose(hole, +w)",
)
_BOX_HOLE_RADIUS = ObsField(
    "box_hole_radius", 1, NONE, "m",
    "per-episode constant: half side of the hole (box_hole_radii); the hole is square, not round: the peg's half "
    "width + 0.003 m clearance. A size (frame none)",
    ("box_hole_radius",),
    source="size(hole)[1]",
)
_POKE_CUBE = ObsField(
    "cube_pose", 7, WORLD, "m, quaternion wxyz",
    "pose of the cube's centre (edge 0.04 m), cube.pose.raw_pose",
    _POSE_COMPONENTS,
    source="pose(object, +w)",
)
_POKE_PEG = ObsField(
    "peg_pose", 7, WORLD, "m, quaternion wxyz",
    "pose of the peg's centre (the tool), peg.pose.raw_pose: a box 0.24 m long along its own x axis, 0.05 m "
    "square section, both halves blue; its head (the end that pokes) is 0.12 m along its own +x; at reset it lies "
    "on the table along world +x with identity orientation",
    _POSE_COMPONENTS,
    source="pose(tool, +w)",
)
_POKE_GOAL = ObsField(
    "goal_pos", 3, WORLD, "m",
    "upstream quirk: NOT the goal region. PokeCube-v1 sets goal_pos = peg.pose.p, the peg's centre (a copy of "
    "peg_pose[:3]); the goal region's centre (table, z = 0.001) is cube_pose[:3] + cube_to_goal_pos",
    _XYZ,
    source="position(tool)",
)
_TCP_TO_PEG = ObsField(
    "tcp_to_peg_pos", 3, WORLD, "m",
    "peg centre minus TCP position (world axes), peg.pose.p - agent.tcp.pose.p",
    _XYZ,
    source="position(tool) - position(tcp)",
)
_PEG_TO_CUBE = ObsField(
    "peg_to_cube_pos", 3, WORLD, "m",
    "cube position minus peg centre (world axes), cube.pose.p - peg.pose.p",
    _XYZ,
    source="position(object) - position(tool)",
)
_CUBE_TO_GOAL = ObsField(
    "cube_to_goal_pos", 3, WORLD, "m",
    "goal region centre minus cube position (world axes), goal_region.pose.p - cube.pose.p; the region lies on "
    "the table (z = 0.001), 0.1 m along world +x from the cube's start",
    _XYZ,
    source="position(goal) - position(object)",
)
_PEGHEAD_TO_CUBE = ObsField(
    "peghead_to_cube_pos", 3, WORLD, "m",
    "upstream quirks: peg_head_pos - cube.pose.p with peg_head_pos = peg.pose.p + (0.12, 0, 0). (1) The sign is "
    "head minus cube (the vector from the cube to the head), the reverse of the other a_to_b = b - a fields. "
    "(2) The 0.12 m offset is added along world x, not rotated with the peg: this is the peg's head only while "
    "the peg points along world +x (as at reset); compute it as peg centre + (0.12, 0, 0) - cube centre, not "
    "from a perceived head",
    _XYZ,
    source="position(tool) + const(0.12, 0, 0) - position(object)",
)

#: Observation layout per robot_rl task id, in vector order.
OBS_LAYOUTS: dict[str, tuple[ObsField, ...]] = {
    # ManiSkill 3.0.1 tabletop/push_cube.py: _get_obs_extra = tcp_pose, goal_pos, obj_pose (35-D).
    "RRL-PushCube-Sparse-v1": (_QPOS, _QVEL, _TCP_POSE, _PUSH_GOAL, _PUSH_OBJ),
    # tabletop/pick_cube.py: is_grasped, tcp_pose, goal_pos, then obj_pose, tcp_to_obj_pos,
    # obj_to_goal_pos (state modes only) (42-D).
    "RRL-PickCube-Sparse-v1": (_QPOS, _QVEL, _IS_GRASPED, _TCP_POSE, _PICK_GOAL, _PICK_OBJ, _TCP_TO_OBJ, _OBJ_TO_GOAL),
    # envs/pick_place_cube.py: PickCube's fields, the goal being the region on the table (42-D).
    "RRL-PickPlaceCube-Sparse-v1": (
        _QPOS, _QVEL, _IS_GRASPED, _TCP_POSE, _PUSH_GOAL, _PICK_OBJ, _TCP_TO_OBJ, _PLACE_OBJ_TO_GOAL,
    ),
    # tabletop/lift_peg_upright.py: tcp_pose, then obj_pose (the peg) (32-D).
    "RRL-LiftPegUpright-Sparse-v1": (_QPOS, _QVEL, _TCP_POSE, _LIFT_PEG_OBJ),
    # tabletop/peg_insertion_side.py: tcp_pose, then peg_pose, peg_half_size, box_hole_pose, box_hole_radius (43-D).
    "RRL-PegInsertionSide-Sparse-v1": (
        _QPOS, _QVEL, _TCP_POSE, _INSERT_PEG, _PEG_HALF_SIZE, _BOX_HOLE_POSE, _BOX_HOLE_RADIUS,
    ),
    # tabletop/poke_cube.py: tcp_pose, then cube_pose, peg_pose, goal_pos (the peg's centre), tcp_to_peg_pos,
    # peg_to_cube_pos, cube_to_goal_pos, peghead_to_cube_pos (54-D).
    "RRL-PokeCube-Sparse-v1": (
        _QPOS, _QVEL, _TCP_POSE, _POKE_CUBE, _POKE_PEG, _POKE_GOAL, _TCP_TO_PEG, _PEG_TO_CUBE, _CUBE_TO_GOAL,
        _PEGHEAD_TO_CUBE,
    ),
    # The hidden-goal variants (envs/tasks.py, issue 12): the sparse task's fields without the goal's.
    # PushCube without goal_pos (32-D).
    "RRL-PushCube-HiddenGoal-v1": (_QPOS, _QVEL, _TCP_POSE, _PUSH_OBJ),
    # PickPlaceCube without goal_pos and obj_to_goal_pos (36-D).
    "RRL-PickPlaceCube-HiddenGoal-v1": (_QPOS, _QVEL, _IS_GRASPED, _TCP_POSE, _PICK_OBJ, _TCP_TO_OBJ),
    # memory task (issue 13): PickPlaceCube's observation; the cube's start is in it only until the cube moves
    "RRL-PickPlaceCube-Restore-v1": (
        _QPOS, _QVEL, _IS_GRASPED, _TCP_POSE, _PUSH_GOAL, _PICK_OBJ, _TCP_TO_OBJ, _PLACE_OBJ_TO_GOAL),
}


# MIKASA-Robo memory tasks (envs/mikasa.py, issue 13; registered only when mikasa_robo_suite is installed). Their
# extras come from the MIKASA env classes (mikasa_robo_suite/rl/memory_envs), the answer removed.
_TIB_GOAL = ObsField(
    "goal_pos", 3, WORLD, "m",
    "centre of the goal region (radius 0.08 m) on the table, z = 0.001: upstream TakeItBack's goal_pos (the red "
    "region, or the purple one that replaces it at the same place once the cube has reached it)",
    _XYZ,
    source="position(goal)",
)
_TIB_CUBE = ObsField(
    "cube_pose", 7, WORLD, "m, quaternion wxyz",
    "pose of the green cube's centre (edge 0.04 m), cube.pose.raw_pose; at reset it stands on the (never rendered) "
    "start region, so the start is in the state only until the cube moves",
    _POSE_COMPONENTS,
    source="pose(object, +w)",
)
_TIB_REACHED = ObsField(
    "goal_reached_status", 1, NONE, "0 or 1",
    "1.0 once the cube has been within 0.08 m (xy) of the goal centre in this episode (upstream's latch; the goal "
    "region turns from red to purple then)",
    ("goal_reached_status",),
    source="",
)


def _color_fields(color: str) -> tuple[ObsField, ObsField]:
    pos = ObsField(
        f"{color}_cube_pos", 3, WORLD, "m",
        f"centre of the {color} cube (edge 0.04 m) while it is on the table, zeros while MIKASA hides it (it parks "
        f"hidden cubes at z = 1000 m): the shown cube at the table centre in env steps 0..4 if {color} is the cue, "
        "nothing in 5..9, its table position from step 10",
        _XYZ,
        source="",
    )
    vis = ObsField(
        f"{color}_cube_visible", 1, NONE, "0 or 1",
        f"1.0 while the {color} cube is on the table (not hidden)",
        (f"{color}_cube_visible",),
        source="",
    )
    return pos, vis


OBS_LAYOUTS.update({
    # TakeItBack-v0: tcp_pose, goal_pos, cube_pose, goal_reached_status; upstream's oracle_info (the start
    # position) removed (36-D).
    "RRL-TakeItBack-v0": (_QPOS, _QVEL, _TCP_POSE, _TIB_GOAL, _TIB_CUBE, _TIB_REACHED),
    # RememberColor3-v0: tcp_pose, then per cube (red, lime, blue) its position while visible and a visible flag;
    # upstream's oracle_info (the colour index) and goal_{k}_pose (the true cube's position times its mask)
    # removed (37-D).
    "RRL-RememberColor3-v0": (_QPOS, _QVEL, _TCP_POSE, *(f for c in ("red", "lime", "blue") for f in _color_fields(c))),
})


def resolve_task(task_id: str) -> str:
    """The env id of ``task_id``: an ``RRL-`` env id as it is (no simulator import, for the ROS node), a paper
    name (``"PushCube-v2"``) looked up with :func:`robot_rl.envs.tasks.get_task` (imports ManiSkill).

    Raises:
        ValueError: an unknown paper name (the message lists the known tasks).
    """
    if str(task_id).startswith("RRL-"):
        return str(task_id)
    from .tasks import get_task

    return get_task(task_id).env_id


def _resolve(task_id: str) -> str:
    """The env id of ``task_id`` (env id or paper name), via :func:`robot_rl.envs.tasks.get_task`
    when the name is not a key of :data:`OBS_LAYOUTS` itself; a long-horizon id maps to its sparse task's.
    """
    if task_id in OBS_LAYOUTS:
        return task_id
    try:
        from .tasks import get_task

        env_id = get_task(task_id).env_id
    except (ValueError, ImportError):
        env_id = task_id
    if env_id not in OBS_LAYOUTS:  # a long-horizon variant observes exactly what its sparse task does
        env_id = env_id.replace("-Sparse-LH-v1", "-Sparse-v1")
    if env_id not in OBS_LAYOUTS:
        raise ValueError(
            f"no observation layout for task {task_id!r}; known tasks: {', '.join(OBS_LAYOUTS)} "
            "(add the task's layout to robot_rl.envs.obs_layout.OBS_LAYOUTS)"
        )
    return env_id


def observation_layout(task_id: str) -> list[ObsField]:
    """The fields of ``task_id``'s ``state`` observation, in vector order.

    Args:
        task_id: env id (``"RRL-PushCube-Sparse-v1"``) or paper name (``"PushCube-v2"``).

    Returns:
        list of :class:`ObsField`; sizes sum to the observation size (PushCube 35, PickCube 42,
        PickPlaceCube 42, LiftPegUpright 32, PegInsertionSide 43, PokeCube 54; PushCube-HiddenGoal 32,
        PickPlaceCube-HiddenGoal 36).

    Raises:
        ValueError: unknown task; the message lists the tasks that have a layout.
    """
    return list(OBS_LAYOUTS[_resolve(task_id)])
