"""Task variants of ManiSkill 3.0.1 tabletop tasks used by robot_rl, and their privileged state.

The paper (Moroncelli et al. 2026, DESIGN.md) trains on "-v2" tasks: the upstream ManiSkill task with
a *sparse* reward (1 on success, 0 otherwise). ManiSkill's ``"-v2"`` ids do not exist upstream and
could be taken by a future ManiSkill release, so ours live under an ``RRL-`` prefix
(``RRL-PushCube-Sparse-v1`` is the paper's ``PushCube-v2``); :func:`get_task` accepts both names.

Adding a task is a few lines: subclass the upstream env class together with :class:`RRLTaskMixin`,
name the manipulated object and the goal attributes, and decorate the class with
:func:`rrl_task` and a :class:`TaskSpec` (see :class:`PushCubeSparseEnv`). A variant of an existing
task only needs a subclass and a new spec, e.g. the paper's long-horizon (10x longer episodes)::

    @rrl_task(TaskSpec("RRL-PushCube-Sparse-LH-v1", "PushCube-v2-LH", "PushCube-v1",
                       "push the cube to the goal region", max_episode_steps=500))
    class PushCubeSparseLongEnv(PushCubeSparseEnv):
        '''Task Description / Randomizations / Success Conditions, as ManiSkill.'''

The hidden-goal variants (``RRL-PushCube-HiddenGoal-v1``, ``RRL-PickPlaceCube-HiddenGoal-v1``, issue 12) are
the sparse tasks with the goal removed from the policy's observation (``_get_obs_extra``); the teacher still
sees it, in its image and in the privileged state.

Privileged state (:data:`PRIVILEGED_STATE_LAYOUT`, :func:`privileged_state`) is a fixed 38-D vector
that scripted teachers (``robot_rl.teachers``) consume; its layout is a contract, keep it exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import numpy as np
import torch
from mani_skill.envs.tasks.tabletop.lift_peg_upright import LiftPegUprightEnv
from mani_skill.envs.tasks.tabletop.peg_insertion_side import PegInsertionSideEnv
from mani_skill.envs.tasks.tabletop.pick_cube import PickCubeEnv
from mani_skill.envs.tasks.tabletop.poke_cube import PokeCubeEnv
from mani_skill.envs.tasks.tabletop.push_cube import PushCubeEnv
from mani_skill.utils.registration import register_env
from mani_skill.utils.structs import Pose
from transforms3d.euler import euler2quat

from .pick_place_cube import UPSTREAM_ID as PICK_PLACE_UPSTREAM_ID
from .pick_place_cube import PickPlaceCubeEnv
from .privileged import PRIVILEGED_STATE_DIM, PRIVILEGED_STATE_LAYOUT

__all__ = [
    "TaskSpec",
    "TASKS",
    "get_task",
    "rrl_task",
    "RRLTaskMixin",
    "PushCubeSparseEnv",
    "PickCubeSparseEnv",
    "PickPlaceCubeSparseEnv",
    "LiftPegUprightSparseEnv",
    "PegInsertionSideSparseEnv",
    "PokeCubeSparseEnv",
    "PushCubeHiddenGoalEnv",
    "PickPlaceCubeHiddenGoalEnv",
    "PickPlaceCubeRestoreEnv",
    "LONG_HORIZON_FACTOR",
    "PRIVILEGED_STATE_LAYOUT",
    "PRIVILEGED_STATE_DIM",
    "privileged_state",
]

#: Reward modes ManiSkill 3.0.1 tasks accept (``BaseEnv.SUPPORTED_REWARD_MODES``).
REWARD_MODES = ("sparse", "dense", "normalized_dense", "none")


#: ``Panda.is_grasping``'s default ``min_force`` (N): below it on either finger there is no grasp.
_GRASP_MIN_FORCE_N = 0.5


@dataclass(frozen=True)
class TaskSpec:
    """What robot_rl needs to know about one task.

    Attributes:
        env_id: our ManiSkill/gymnasium id, e.g. ``"RRL-PushCube-Sparse-v1"`` (``gym.make(env_id)``).
        paper_name: the name the paper uses, e.g. ``"PushCube-v2"`` ("-v2" = sparse reward).
        upstream_id: the ManiSkill task it derives from, e.g. ``"PushCube-v1"``.
        instruction: language instruction given to the VLA teacher with every image.
        max_episode_steps: episode horizon in env (control) steps; 20 Hz control, so 50 = 2.5 s.
        reward_mode: default reward mode: ``"sparse"`` (1.0 on success, else 0.0),
            ``"dense"``, ``"normalized_dense"`` or ``"none"``.
    """

    env_id: str
    paper_name: str
    upstream_id: str
    instruction: str
    max_episode_steps: int = 50
    reward_mode: str = "sparse"

    def __post_init__(self) -> None:
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"TaskSpec {self.env_id}: reward_mode {self.reward_mode!r} not in {REWARD_MODES}")
        if self.max_episode_steps <= 0:
            raise ValueError(f"TaskSpec {self.env_id}: max_episode_steps must be > 0, got {self.max_episode_steps}")


#: All robot_rl tasks, keyed by ``TaskSpec.env_id``. Filled by :func:`rrl_task` at import time.
TASKS: dict[str, TaskSpec] = {}


def get_task(task_id: str | TaskSpec) -> TaskSpec:
    """Look up a task by its env id (``"RRL-PushCube-Sparse-v1"``) or paper name (``"PushCube-v2"``).

    A :class:`TaskSpec` is returned unchanged.

    Raises:
        ValueError: unknown id; the message lists the known env ids and paper names.
    """
    if isinstance(task_id, TaskSpec):
        return task_id
    if task_id in TASKS:
        return TASKS[task_id]
    for spec in TASKS.values():
        if spec.paper_name == task_id:
            return spec
    known = ", ".join(f"{s.env_id} ({s.paper_name})" for s in TASKS.values())
    raise ValueError(f"unknown task {task_id!r}; known tasks: {known}")


_EnvCls = TypeVar("_EnvCls", bound=type)


def rrl_task(spec: TaskSpec) -> Callable[[_EnvCls], _EnvCls]:
    """Class decorator: register an :class:`RRLTaskMixin` env with ManiSkill (``@register_env``)
    under ``spec.env_id`` with ``spec.max_episode_steps``, attach ``spec`` as ``cls.task_spec``,
    and add it to :data:`TASKS`.

    Raises:
        ValueError: ``spec.env_id`` is already a robot_rl task.
        TypeError: the class does not derive from :class:`RRLTaskMixin`.
    """

    def decorate(cls: _EnvCls) -> _EnvCls:
        if not issubclass(cls, RRLTaskMixin):
            raise TypeError(f"{cls.__name__} must derive from RRLTaskMixin")
        if spec.env_id in TASKS:
            raise ValueError(f"task {spec.env_id} is already registered")
        cls.task_spec = spec
        cls.instruction = spec.instruction
        # ManiSkill registers the id with gymnasium too and wraps gym.make's result in its
        # TimeLimitWrapper (truncation at elapsed_steps >= max_episode_steps).
        register_env(spec.env_id, max_episode_steps=spec.max_episode_steps)(cls)
        TASKS[spec.env_id] = spec
        return cls

    return decorate


class RRLTaskMixin:
    """Mixin for robot_rl task variants: default reward mode from the :class:`TaskSpec`, the
    language instruction, and the accessors :func:`privileged_state` reads.

    A subclass names its manipulated object and goal attributes (``privileged_obj_attr``,
    ``privileged_goal_attr``) or overrides the three ``_privileged_*`` methods.
    """

    task_spec: TaskSpec
    instruction: str
    #: Attribute of the env holding the manipulated ``Actor``.
    privileged_obj_attr: str = "obj"
    #: Attribute of the env holding the goal ``Actor``; its pose position is the goal.
    privileged_goal_attr: str = "goal_region"

    def __init__(self, *args: Any, reward_mode: str | None = None, **kwargs: Any) -> None:
        # BaseEnv would default to SUPPORTED_REWARD_MODES[0] ("normalized_dense"); ours default
        # to the spec's (sparse for the paper's "-v2" tasks).
        if reward_mode is None:
            reward_mode = self.task_spec.reward_mode
        super().__init__(*args, reward_mode=reward_mode, **kwargs)

    def _privileged_obj_pose(self) -> Pose:
        """Pose of the manipulated object, batched ``(num_envs,)``, world frame."""
        return getattr(self, self.privileged_obj_attr).pose

    def _privileged_goal_pos(self) -> torch.Tensor:
        """Goal position ``(num_envs, 3)``, world frame, metres."""
        return getattr(self, self.privileged_goal_attr).pose.p

    def _privileged_obj_half_size(self) -> torch.Tensor:
        """Half the object's size ``(num_envs,)`` in metres (the cube's half edge length)."""
        half = torch.as_tensor(self.cube_half_size, dtype=torch.float32, device=self.device)
        return half.reshape(-1).expand(self.num_envs)

    def _privileged_is_grasped(self) -> torch.Tensor:
        """``(num_envs,)`` bool: the gripper holds the object (ManiSkill's contact-force test).

        ``Panda.is_grasping`` needs both fingers to push on the object with at least its ``min_force`` (0.5 N)
        *and* within 85° of the closing direction. When no env has both forces, the answer is False everywhere
        without the angle test, which is ~70% of its cost on the CPU sim (0.8 ms a call, measured in issue 14):
        the same result, computed only when a grasp is possible.
        """
        obj = getattr(self, self.privileged_obj_attr)
        fingers = (getattr(self.agent, "finger1_link", None), getattr(self.agent, "finger2_link", None))
        if None not in fingers:
            forces = [torch.linalg.norm(self.scene.get_pairwise_contact_forces(f, obj), axis=1) for f in fingers]
            if not bool(((forces[0] >= _GRASP_MIN_FORCE_N) & (forces[1] >= _GRASP_MIN_FORCE_N)).any()):
                return torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return self.agent.is_grasping(obj)

    def _privileged_goal_quat(self) -> torch.Tensor:
        """Goal orientation ``(num_envs, 4)`` wxyz, world frame; identity for position-only goals."""
        q = torch.tensor([1.0, 0.0, 0.0, 0.0], device=self.device)
        return q.expand(self.num_envs, 4)

    def _privileged_obj_half_extents(self) -> torch.Tensor:
        """Half sizes ``(num_envs, 3)`` of the object along its own x, y, z axes, metres (a cube: all equal)."""
        return self._privileged_obj_half_size()[:, None].expand(self.num_envs, 3)

    def _privileged_tool(self) -> tuple[Pose, torch.Tensor, torch.Tensor] | None:
        """A second object the gripper uses on the first (PokeCube's peg): its pose ``(num_envs,)``,
        whether it is grasped ``(num_envs,)`` bool, its half extents ``(num_envs, 3)`` m; ``None`` if none.
        """
        return None

    def perceived_scene(self) -> dict[str, dict[str, np.ndarray]]:
        """What the robot's state and a perception stack report of sub-env 0, world frame, float32.

        Returns:
            ``{"poses": {entity: (7,) position m + quaternion wxyz}, "sizes": {entity: (3,) half extents m}}``
            with entities ``tcp``, ``object``, ``goal`` (position, and the orientation where the task has one)
            and, where the task has them, ``tool`` and ``hole``; sizes for ``object`` and ``tool`` (and
            ``hole``). Read from the very simulator objects the task's state observation reads
            (:mod:`robot_rl.envs.obs_layout`), so the sim bridge, which publishes this, gives the ROS node the
            simulator's own float32 numbers (``tests/deploy/test_ros_io.py`` pins the round trip).
        """
        def pose7(pose: Pose) -> np.ndarray:
            return pose.raw_pose[0].detach().cpu().numpy().astype(np.float32)

        goal = np.concatenate([self._privileged_goal_pos()[0].detach().cpu().numpy(),
                               self._privileged_goal_quat()[0].detach().cpu().numpy()]).astype(np.float32)
        poses = {"tcp": pose7(self.agent.tcp.pose), "object": pose7(self._privileged_obj_pose()), "goal": goal}
        sizes = {"object": self._privileged_obj_half_extents()[0].detach().cpu().numpy().astype(np.float32)}
        tool = self._privileged_tool()
        if tool is not None:
            poses["tool"] = pose7(tool[0])
            sizes["tool"] = tool[2][0].detach().cpu().numpy().astype(np.float32)
        return {"poses": poses, "sizes": sizes}


@rrl_task(
    TaskSpec(
        env_id="RRL-PushCube-Sparse-v1",
        paper_name="PushCube-v2",
        upstream_id="PushCube-v1",
        instruction="push the cube to the goal region",
        max_episode_steps=50,
    )
)
class PushCubeSparseEnv(RRLTaskMixin, PushCubeEnv):
    """
    **Task Description:**
    ManiSkill's PushCube-v1 with a sparse reward by default (the paper's PushCube-v2): push a cube
    to a goal region in front of it with the Panda arm. Reward is 1.0 on the step the cube is in
    the goal region and 0.0 otherwise; the episode terminates on success.

    **Randomizations:**
    - the cube's xy position is randomized on top of a table in the region [0.1, 0.1] x [-0.1, -0.1]. It is
      placed flat on the table
    - the goal region (red/white target) is fixed at the cube's xy position + [0.1 + goal_radius, 0]
    - the robot's initial joint positions get Gaussian noise (std 0.02 rad)

    **Success Conditions:**
    - the cube's xy position is within goal_radius (0.1 m) of the target's xy position by euclidean distance
      and the cube is still on the table.
    """

    privileged_obj_attr = "obj"
    privileged_goal_attr = "goal_region"


@rrl_task(
    TaskSpec(
        env_id="RRL-PickCube-Sparse-v1",
        paper_name="PickCube-v2",
        upstream_id="PickCube-v1",
        instruction="pick up the cube and move it to the goal position",
        max_episode_steps=50,
    )
)
class PickCubeSparseEnv(RRLTaskMixin, PickCubeEnv):
    """
    **Task Description:**
    ManiSkill's PickCube-v1 (Panda) with a sparse reward by default (the paper's PickCube-v2): grasp
    a red cube and move it to a goal position in the air. Reward is 1.0 on success, else 0.0; the
    episode terminates on success.

    **Randomizations:**
    - the cube's xy position is randomized on top of a table in the region [0.1, 0.1] x [-0.1, -0.1]. It is
      placed flat on the table
    - the cube's z-axis rotation is randomized to a random angle
    - the goal position (green sphere, hidden from sensor cameras but shown in teacher views) has its xy
      position randomized in the region [0.1, 0.1] x [-0.1, -0.1] and z randomized in [0, 0.3] above the
      cube's resting height

    **Success Conditions:**
    - the cube position is within `goal_thresh` (0.025 m) euclidean distance of the goal position
    - the robot is static (joint velocity < 0.2)
    """

    privileged_obj_attr = "cube"
    privileged_goal_attr = "goal_site"


class _PegMixin:
    """Privileged accessors for a ManiSkill peg (``build_twocolor_peg``: a box, long along its own x)."""

    peg_half_length: float
    peg_half_width: float

    def _privileged_obj_half_size(self) -> torch.Tensor:
        """The peg's half width (its square cross-section's half side), metres."""
        return torch.full((self.num_envs,), float(self.peg_half_width), device=self.device)

    def _privileged_obj_half_extents(self) -> torch.Tensor:
        h = torch.tensor([self.peg_half_length, self.peg_half_width, self.peg_half_width], device=self.device)
        return h.expand(self.num_envs, 3)


@rrl_task(
    TaskSpec(
        env_id="RRL-PickPlaceCube-Sparse-v1",
        paper_name="PickPlaceCube-v2",
        upstream_id=PICK_PLACE_UPSTREAM_ID,
        instruction="pick up the cube and place it on the target region",
        max_episode_steps=50,
    )
)
class PickPlaceCubeSparseEnv(RRLTaskMixin, PickPlaceCubeEnv):
    """
    **Task Description:**
    robot_rl's PickPlaceCube (:class:`envs.pick_place_cube.PickPlaceCubeEnv`, not in ManiSkill 3.0.1) with
    a sparse reward by default (the paper's PickPlaceCube-v2): pick up a red cube and place it on a
    red/white target region on the table, then let go. Reward 1.0 on success, else 0.0; the episode
    terminates on success.

    **Randomizations:**
    - the cube's xy position is randomized on top of a table in the region [0.1, 0.1] x [-0.1, -0.1]; its z
      rotation is random
    - the target region (radius 0.05 m) lies 0.12..0.2 m from the cube in a random direction, centre clipped
      to [-0.2, 0.2]^2

    **Success Conditions:**
    - the cube's xy position is within 0.05 m of the region's centre, it rests on the table (z within 5 mm of
      0.02, speed < 0.05 m/s), and it is not grasped
    """

    privileged_obj_attr = "cube"
    privileged_goal_attr = "goal_region"


@rrl_task(
    TaskSpec(
        env_id="RRL-LiftPegUpright-Sparse-v1",
        paper_name="LiftPegUpright-v2",
        upstream_id="LiftPegUpright-v1",
        instruction="lift the peg and stand it upright on the table",
        max_episode_steps=50,
    )
)
class LiftPegUprightSparseEnv(_PegMixin, RRLTaskMixin, LiftPegUprightEnv):
    """
    **Task Description:**
    ManiSkill's LiftPegUpright-v1 (Panda) with a sparse reward by default (the paper's LiftPegUpright-v2):
    move a peg lying on the table (0.24 m long, 0.05 m square section) to an upright position on the
    table. Reward 1.0 on success, else 0.0; the episode terminates on success.

    **Randomizations:**
    - the peg's xy position is randomized on top of a table in the region [0.1, 0.1] x [-0.1, -0.1]. It lies
      flat, along world x

    **Success Conditions:**
    - the absolute value of the peg's z Euler angle (XYZ) is within 0.08 rad of pi/2 and its centre's z is
      within 5 mm of its half length (0.12 m)

    Privileged state: the object is the peg; ``goal_pos`` is where its centre is when it stands upright on
    its current xy, ``goal_quat`` an upright orientation (its long axis along world z).
    """

    privileged_obj_attr = "peg"

    def _privileged_goal_pos(self) -> torch.Tensor:
        goal = self.peg.pose.p.clone()
        goal[:, 2] = self.peg_half_length
        return goal

    def _privileged_goal_quat(self) -> torch.Tensor:
        # Rotation about world y by -pi/2: the peg's long axis (its x) to world +z.
        q = torch.tensor([np.cos(-np.pi / 4), 0.0, np.sin(-np.pi / 4), 0.0], device=self.device, dtype=torch.float32)
        return q.expand(self.num_envs, 4)


@rrl_task(
    TaskSpec(
        env_id="RRL-PegInsertionSide-Sparse-v1",
        paper_name="PegInsertionSide-v2",
        upstream_id="PegInsertionSide-v1",
        instruction="pick up the peg and insert it into the hole in the box",
        max_episode_steps=100,
    )
)
class PegInsertionSideSparseEnv(RRLTaskMixin, PegInsertionSideEnv):
    """
    **Task Description:**
    ManiSkill's PegInsertionSide-v1 (Panda with wrist camera) with a sparse reward by default (the
    paper's PegInsertionSide-v2): pick up a peg and insert its orange end sideways into the hole of a box.
    Reward 1.0 on success, else 0.0; the episode terminates on success.

    **Randomizations:**
    - peg half length in [0.085, 0.125] m (the box's too), peg half width in [0.015, 0.025] m, hole clearance
      3 mm (at reconfiguration; with one env per process every reset reconfigures)
    - the peg lies flat with its xy position in [-0.1, 0.1] x [-0.3, 0] and its z rotation in pi/2 +- pi/3
    - the box lies with its xy position in [-0.05, 0.05] x [0.2, 0.4] and its z rotation in pi/2 +- pi/8

    **Success Conditions:**
    - the peg's head (orange end) is within 0.015 m of the hole's centre along the hole axis and inside its
      radius (inserted mid way)

    Privileged state: the object is the peg (``obj_half_size`` its half width, ``obj_half_extents``
    (half length, half width, half width)); ``goal_pos``/``goal_quat`` is the peg pose with its head at
    the hole's centre (ManiSkill's ``goal_pose``).
    """

    privileged_obj_attr = "peg"

    def _privileged_goal_pos(self) -> torch.Tensor:
        return self.goal_pose.p

    def _privileged_goal_quat(self) -> torch.Tensor:
        return self.goal_pose.q

    def _privileged_obj_half_size(self) -> torch.Tensor:
        return self.peg_half_sizes[:, 1]

    def _privileged_obj_half_extents(self) -> torch.Tensor:
        return self.peg_half_sizes

    def perceived_scene(self) -> dict[str, dict[str, np.ndarray]]:
        """:meth:`RRLTaskMixin.perceived_scene` plus the box's hole: its pose (``box_hole_pose``: the centre of
        the square hole, mid-depth, the box's orientation) and half extents (the box's half depth along the
        hole's x, then the hole's half side ``box_hole_radii`` twice).
        """
        scene = super().perceived_scene()
        scene["poses"]["hole"] = self.box_hole_pose.raw_pose[0].detach().cpu().numpy().astype(np.float32)
        r = self.box_hole_radii[0]
        scene["sizes"]["hole"] = (torch.stack([self.peg_half_sizes[0, 0], r, r])
                                  .detach().cpu().numpy().astype(np.float32))
        return scene


@rrl_task(
    TaskSpec(
        env_id="RRL-PokeCube-Sparse-v1",
        paper_name="PokeCube-v2",
        upstream_id="PokeCube-v1",
        instruction="use the peg to push the cube to the goal region",
        max_episode_steps=50,
    )
)
class PokeCubeSparseEnv(RRLTaskMixin, PokeCubeEnv):
    """
    **Task Description:**
    ManiSkill's PokeCube-v1 (Panda) with a sparse reward by default (the paper's PokeCube-v2): grasp a
    peg and poke a red cube with it into a goal region. Reward 1.0 on success, else 0.0; the episode
    terminates on success.

    **Randomizations:**
    - the peg's xy position is randomized on top of a table in the region [0.1, 0.1] x [-0.1, -0.1]; it lies
      flat along world x
    - the cube's x is the peg's x + 0.22 m, its y is random in [-0.1, 0.1], its z rotation in [-pi/6, pi/6]
    - the goal region (radius 0.05 m) is at the cube's xy + [0.1, 0]

    **Success Conditions:**
    - the cube's xy position is within 0.05 m of the goal's xy position and the robot is static

    Privileged state: the object is the cube, the tool is the peg (``tool_*``; its head is at
    +0.12 m along its own x).
    """

    privileged_obj_attr = "cube"
    privileged_goal_attr = "goal_region"

    def _privileged_tool(self) -> tuple[Pose, torch.Tensor, torch.Tensor]:
        h = torch.tensor([self.peg_half_length, self.peg_half_width, self.peg_half_width], device=self.device)
        return self.peg.pose, self.agent.is_grasping(self.peg), h.expand(self.num_envs, 3)


#: A long-horizon variant's episode length, in multiples of the task's default (the paper: 10x).
LONG_HORIZON_FACTOR = 10


def _register_long_horizon(cls: type) -> type:
    """Register ``cls``'s long-horizon variant: same task, ``LONG_HORIZON_FACTOR`` x the episode length,
    id ``RRL-<Name>-Sparse-LH-v1``, paper name ``<Name>-v2-LH``.
    """
    spec = cls.task_spec
    lh = TaskSpec(
        env_id=spec.env_id.replace("-Sparse-v1", "-Sparse-LH-v1"),
        paper_name=f"{spec.paper_name}-LH",
        upstream_id=spec.upstream_id,
        instruction=spec.instruction,
        max_episode_steps=spec.max_episode_steps * LONG_HORIZON_FACTOR,
        reward_mode=spec.reward_mode,
    )
    name = cls.__name__.replace("SparseEnv", "SparseLongEnv")
    doc = (
        f"Long-horizon variant of :class:`{cls.__name__}` (the paper's {lh.paper_name}): the same task and "
        f"sparse reward with {LONG_HORIZON_FACTOR}x longer episodes ({lh.max_episode_steps} env steps).\n"
        + (cls.__doc__ or "")
    )
    sub = type(name, (cls,), {"__doc__": doc, "__module__": __name__})
    globals()[name] = sub  # importable by name (pickling, docs)
    return rrl_task(lh)(sub)


for _cls in (
    PushCubeSparseEnv,
    PickCubeSparseEnv,
    PickPlaceCubeSparseEnv,
    LiftPegUprightSparseEnv,
    PegInsertionSideSparseEnv,
    PokeCubeSparseEnv,
):
    _register_long_horizon(_cls)


# ----------------------------------------------------------------------------------------------
# Hidden-goal variants (issue 12: the delayed semantic interface)
# ----------------------------------------------------------------------------------------------


class _HiddenGoalMixin:
    """Remove the goal from the policy's ``state`` observation through ManiSkill's ``_get_obs_extra`` hook: the
    keys in :attr:`hidden_obs_keys` are dropped from the task's extras.

    Only the observation changes. The scene (the goal region is still drawn, so the teacher camera shows it),
    the randomization, reward, success and horizon are the sparse task's, and so is the privileged state
    (:func:`privileged_state` still carries ``goal_pos``: the scripted teachers plan with it). These tasks have
    no long-horizon variant.
    """

    #: ``_get_obs_extra`` keys that carry the goal (its position, or a vector computed from it).
    hidden_obs_keys: tuple[str, ...] = ()

    def _get_obs_extra(self, info: dict) -> dict:
        obs = super()._get_obs_extra(info)
        for key in self.hidden_obs_keys:
            obs.pop(key, None)  # absent in ManiSkill's non-state obs modes
        return obs


@rrl_task(
    TaskSpec(
        env_id="RRL-PushCube-HiddenGoal-v1",
        paper_name="PushCube-v2-HiddenGoal",
        upstream_id="PushCube-v1",
        instruction=PushCubeSparseEnv.task_spec.instruction,
        max_episode_steps=PushCubeSparseEnv.task_spec.max_episode_steps,
    )
)
class PushCubeHiddenGoalEnv(_HiddenGoalMixin, PushCubeSparseEnv):
    """
    **Task Description:**
    :class:`PushCubeSparseEnv` (the paper's PushCube-v2, sparse reward) with the goal hidden from the policy:
    push the cube to the goal region. The policy's ``state`` observation has no ``goal_pos`` (32-D: qpos, qvel,
    tcp_pose, obj_pose); the goal region is still in the scene, so the teacher camera shows it, and the
    privileged state still carries ``goal_pos`` for scripted teachers. Without the teacher's hints (the delayed
    semantic interface, issue 12) the policy does not see where the goal is.

    **Randomizations:**
    - as PushCube-v2: the cube's xy position is randomized on top of a table in the region [0.1, 0.1] x
      [-0.1, -0.1], placed flat on the table
    - unlike PushCube-v2, the goal region's *direction* is random: it lies :attr:`GOAL_DISTANCE` (0.2 m, PushCube's
      0.1 + goal_radius) from the cube's start in a uniformly random direction, among those that keep the goal
      and the point behind the cube a push starts from within :attr:`MAX_RADIAL` of the Panda base (a low push
      beyond that is out of the arm's reach). PushCube-v2's goal is always 0.2 m along +x: hiding only its
      position hid nothing (a goal-blind "push +x" solved 20/20 episodes, ``benchmarks/goal_blind.py``)
    - the robot's initial joint positions get Gaussian noise (std 0.02 rad)

    **Success Conditions:**
    - as PushCube-v2: the cube's xy position is within goal_radius (0.1 m) of the target's xy position and the
      cube is still on the table
    """

    hidden_obs_keys = ("goal_pos",)
    #: The goal's distance from the cube's start, m (PushCube-v1: 0.1 + goal_radius).
    GOAL_DISTANCE = 0.2
    #: Largest horizontal distance of the goal, and of the point a push starts from, to the Panda base, m.
    MAX_RADIAL = 0.72
    #: Candidate directions drawn per reset; the first within reach is taken (else: towards the robot, -x).
    CANDIDATES = 16

    def _initialize_episode(self, env_idx: torch.Tensor, options: dict) -> None:
        super()._initialize_episode(env_idx, options)
        with torch.device(self.device):
            b = len(env_idx)
            cube = self.obj.pose.p[env_idx, :2] if self.num_envs > 1 else self.obj.pose.p[:, :2]
            angle = torch.rand((b, self.CANDIDATES)) * (2 * np.pi)
            u = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)  # (b, K, 2)
            goal = cube[:, None, :] + self.GOAL_DISTANCE * u
            start = cube[:, None, :] - 0.045 * u  # behind the cube, where the push starts
            base = torch.tensor([-0.615, 0.0])
            ok = (torch.linalg.norm(goal - base, dim=-1) <= self.MAX_RADIAL) & (
                torch.linalg.norm(start - base, dim=-1) <= self.MAX_RADIAL)
            first = torch.where(ok.any(dim=1), ok.float().argmax(dim=1), torch.full((b,), -1, dtype=torch.long))
            pick = torch.where(first[:, None] >= 0, goal[torch.arange(b), first.clamp(min=0)],
                               cube + torch.tensor([-self.GOAL_DISTANCE, 0.0]))
            xyz = torch.zeros((b, 3))
            xyz[:, :2] = pick
            xyz[:, 2] = 1e-3
            self.goal_region.set_pose(Pose.create_from_pq(p=xyz, q=euler2quat(0, np.pi / 2, 0)))


@rrl_task(
    TaskSpec(
        env_id="RRL-PickPlaceCube-HiddenGoal-v1",
        paper_name="PickPlaceCube-v2-HiddenGoal",
        upstream_id=PICK_PLACE_UPSTREAM_ID,
        instruction=PickPlaceCubeSparseEnv.task_spec.instruction,
        max_episode_steps=PickPlaceCubeSparseEnv.task_spec.max_episode_steps,
    )
)
class PickPlaceCubeHiddenGoalEnv(_HiddenGoalMixin, PickPlaceCubeSparseEnv):
    """
    **Task Description:**
    :class:`PickPlaceCubeSparseEnv` (the paper's PickPlaceCube-v2, sparse reward) with the goal hidden from the
    policy: pick up the cube, place it on the target region and let go. The policy's ``state`` observation has
    neither ``goal_pos`` (the region's centre) nor ``obj_to_goal_pos`` (computed from it) (36-D: qpos, qvel,
    is_grasped, tcp_pose, obj_pose, tcp_to_obj_pos); the region's red/white marker is still on the table, so
    the teacher camera shows it, and the privileged state still carries ``goal_pos`` for scripted teachers.
    Without the teacher's hints (the delayed semantic interface, issue 12) the policy can only guess where
    to place the cube.

    **Randomizations:**
    - as PickPlaceCube-v2: the cube's xy position is randomized on top of a table in the region [0.1, 0.1] x
      [-0.1, -0.1]; its z rotation is random
    - the target region (radius 0.05 m) lies 0.12..0.2 m from the cube in a uniformly random direction, centre
      clipped to [-0.2, 0.2]^2: neither its distance nor its direction can be read from the policy's state

    **Success Conditions:**
    - as PickPlaceCube-v2: the cube's xy position is within 0.05 m of the region's centre, it rests on the table
      (z within 5 mm of 0.02, speed < 0.05 m/s), and it is not grasped
    """

    hidden_obs_keys = ("goal_pos", "obj_to_goal_pos")


# ----------------------------------------------------------------------------------------------
# Memory-dependent tasks (issue 13: the scratchpad)
# ----------------------------------------------------------------------------------------------


@rrl_task(
    TaskSpec(
        env_id="RRL-PickPlaceCube-Restore-v1",
        paper_name="PickPlaceCube-v2-Restore",
        upstream_id=PICK_PLACE_UPSTREAM_ID,
        instruction="pick up the cube, place it on the target region, then put it back where it started",
        max_episode_steps=120,
    )
)
class PickPlaceCubeRestoreEnv(PickPlaceCubeSparseEnv):
    """
    **Task Description:**
    A memory task after Notes-to-Self's Place-Next-to-Restore and MemoryBench's Put-Block-Back, on robot_rl's
    PickPlaceCube scene: pick up the cube, place it on the red/white target region and let go, then pick it up
    again and put it back where it started. The start position is in the policy's state only while the cube has
    not moved (``obj_pose`` is the cube's current pose; nothing else holds the start): once it has, only a memory
    of it (the scratchpad's grounding, or a recurrent policy's state) says where to put it back. The teacher's
    privileged state holds no start position either. Sparse reward (1.0 on success, else 0.0); the episode
    terminates on success. 120 env steps (6 s): the scripted teacher held for D = 4 needs about 75.

    **Randomizations:**
    - as PickPlaceCube-v2: the cube's xy position is randomized on top of a table in the region [0.1, 0.1] x
      [-0.1, -0.1]; its z rotation is random
    - the target region (radius 0.05 m) lies 0.12..0.2 m from the cube in a random direction, centre clipped
      to [-0.2, 0.2]^2

    **Success Conditions:**
    - the cube was placed: at some env step of the episode it lay in the target region as PickPlaceCube-v2's
      success test says (xy within 0.05 m of the centre, resting on the table, released); and now
    - the cube's xy position is within :attr:`restore_radius` (0.05 m) of its start, it rests on the table (z
      within 5 mm of 0.02, speed < 0.05 m/s), and it is not grasped
    """

    #: Success radius (m) around the cube's start xy.
    restore_radius = 0.05

    def _load_scene(self, options: dict) -> None:
        super()._load_scene(options)
        self.start_pos = torch.zeros((self.num_envs, 3), device=self.device)  #: cube start, world m (hidden)
        self.was_placed = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def _initialize_episode(self, env_idx: torch.Tensor, options: dict) -> None:
        super()._initialize_episode(env_idx, options)
        self.start_pos = self.start_pos.to(self.device)
        self.was_placed = self.was_placed.to(self.device)
        self.start_pos[env_idx] = self.cube.pose.p[env_idx].clone()
        self.was_placed[env_idx] = False

    def evaluate(self):
        """``success``: placed earlier in the episode, now back at its start, resting and released."""
        info = super().evaluate()
        placed_now = info["success"]  # PickPlaceCube-v2's test: in the region, resting, released
        self.was_placed = self.was_placed | placed_now
        start_dist = torch.linalg.norm(self.cube.pose.p[:, :2] - self.start_pos[:, :2], dim=1)
        is_obj_at_start = start_dist < self.restore_radius
        info.update(
            is_placed_now=placed_now,
            was_placed=self.was_placed.clone(),
            is_obj_at_start=is_obj_at_start,
            obj_to_start_dist=start_dist,
            success=self.was_placed & is_obj_at_start & info["is_obj_resting"] & ~info["is_grasped"],
        )
        return info

    def compute_dense_reward(self, obs: Any, action: Any, info: dict):
        """Two stages of PickPlaceCube's staged reward: placing on the region (0..5), then, once placed, 5 plus
        placing back on the start (0..5); 10 on success.
        """
        place = self.staged_place_reward(self.goal_region.pose.p, info["is_obj_in_region"], info)
        restore = 5 + self.staged_place_reward(self.start_pos, info["is_obj_at_start"], info)
        reward = torch.where(info["was_placed"], restore, place)
        reward[info["success"]] = 10
        return reward

    def compute_normalized_dense_reward(self, obs: Any, action: Any, info: dict):
        """:meth:`compute_dense_reward` scaled to [0, 1] (its maximum, on success, is 10)."""
        return self.compute_dense_reward(obs=obs, action=action, info=info) / 10.0


# ----------------------------------------------------------------------------------------------
# Privileged state
# ----------------------------------------------------------------------------------------------

# PRIVILEGED_STATE_LAYOUT and PRIVILEGED_STATE_DIM live in envs/privileged.py (no simulator import).


#: Upstream ManiSkill classes privileged_state also reads (same scenes as our variants):
#: class -> (object attribute, goal attribute).
_UPSTREAM_PRIVILEGED_ATTRS: dict[type, tuple[str, str]] = {
    PushCubeEnv: ("obj", "goal_region"),
    PickCubeEnv: ("cube", "goal_site"),
}


class _UpstreamAccessor:
    """RRLTaskMixin's privileged accessors for an upstream env (e.g. ``PushCube-v1``)."""

    def __init__(self, env: Any, obj_attr: str, goal_attr: str):
        self.env, self.privileged_obj_attr, self.privileged_goal_attr = env, obj_attr, goal_attr

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    _privileged_obj_pose = RRLTaskMixin._privileged_obj_pose
    _privileged_goal_pos = RRLTaskMixin._privileged_goal_pos
    _privileged_obj_half_size = RRLTaskMixin._privileged_obj_half_size
    _privileged_is_grasped = RRLTaskMixin._privileged_is_grasped
    _privileged_goal_quat = RRLTaskMixin._privileged_goal_quat
    _privileged_obj_half_extents = RRLTaskMixin._privileged_obj_half_extents
    _privileged_tool = RRLTaskMixin._privileged_tool


def _finger_joint_indices(env: Any) -> list[int]:
    names = [j.name for j in env.agent.robot.get_active_joints()]
    idx = [i for i, n in enumerate(names) if "finger_joint" in n]
    return idx if idx else [len(names) - 2, len(names) - 1]


def privileged_state(env: Any) -> np.ndarray:
    """Privileged simulator state of every sub-env, in :data:`PRIVILEGED_STATE_LAYOUT`.

    Args:
        env: the *unwrapped* ManiSkill env (``gym_env.unwrapped``) of a robot_rl task
            (an :class:`RRLTaskMixin`) or of the upstream ``PushCube-v1`` / ``PickCube-v1``;
            CPU (``num_envs=1``) or GPU sim.

    Returns:
        ``(num_envs, 38) float32`` numpy array: ``tcp_pos[0:3]`` m, ``tcp_quat[3:7]`` wxyz,
        ``obj_pos[7:10]`` m, ``obj_quat[10:14]`` wxyz, ``goal_pos[14:17]`` m, ``is_grasped[17]``
        0/1, ``gripper_width[18]`` m (sum of the two Panda finger joint positions),
        ``obj_half_size[19]`` m, ``goal_quat[20:24]`` wxyz, ``obj_half_extents[24:27]`` m,
        ``tool_pos[27:30]`` m, ``tool_quat[30:34]`` wxyz, ``tool_grasped[34]`` 0/1,
        ``tool_half_extents[35:38]`` m. World frame.

    Raises:
        TypeError: ``env`` is neither (e.g. a wrapper instead of ``.unwrapped``).
    """
    if isinstance(env, RRLTaskMixin):
        acc = env
    else:
        attrs = next((a for cls, a in _UPSTREAM_PRIVILEGED_ATTRS.items() if isinstance(env, cls)), None)
        if attrs is None:
            raise TypeError(
                f"privileged_state needs the unwrapped env of a robot_rl task (one of {sorted(TASKS)}) "
                f"or of {', '.join(c.__name__ for c in _UPSTREAM_PRIVILEGED_ATTRS)}, got "
                f"{type(env).__name__}; pass gym_env.unwrapped"
            )
        acc = _UpstreamAccessor(env, *attrs)
    with torch.no_grad():
        tcp = env.agent.tcp.pose.raw_pose  # (N, 7): p xyz, q wxyz
        obj = acc._privileged_obj_pose().raw_pose
        goal = acc._privileged_goal_pos()
        grasped = acc._privileged_is_grasped().to(torch.float32)
        qpos = env.agent.robot.get_qpos()
        width = qpos[:, _finger_joint_indices(env)].sum(dim=1)
        half = acc._privileged_obj_half_size().to(tcp.device)
        n = tcp.shape[0]
        tool = acc._privileged_tool()
        if tool is None:
            tool_pose = torch.tensor([0.0, 0, 0, 1, 0, 0, 0], device=tcp.device).expand(n, 7)
            tool_grasped = torch.zeros(n, device=tcp.device)
            tool_half = torch.zeros(n, 3, device=tcp.device)
        else:
            tool_pose, tool_grasped, tool_half = tool[0].raw_pose, tool[1], tool[2]
        parts = [
            tcp,
            obj,
            goal,
            grasped[:, None],
            width[:, None],
            half[:, None],
            acc._privileged_goal_quat(),
            acc._privileged_obj_half_extents(),
            tool_pose,
            tool_grasped[:, None],
            tool_half,
        ]
        state = torch.cat([p.to(device=tcp.device, dtype=torch.float32) for p in parts], dim=1)
    out = state.cpu().numpy().astype(np.float32, copy=False)
    assert out.shape[1] == PRIVILEGED_STATE_DIM
    return out


# The MIKASA-Robo memory tasks (issue 13, envs/mikasa.py): an optional install, registered with ours when it imports.
from . import mikasa as _mikasa  # noqa: E402

_mikasa.register()
