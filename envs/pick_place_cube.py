"""PickPlaceCube: pick a cube up and place it on a marked region of the table (not in ManiSkill 3.0.1).

The VLAJS paper (Moroncelli et al. 2026) evaluates a "PickPlaceCube-v2"; ManiSkill 3.0.1 has no such
task (FACTS.md), so this module writes it as a ManiSkill task, following ManiSkill's conventions
(``tabletop/push_cube.py``, ``tabletop/pick_cube.py``): ``_load_scene``, ``_initialize_episode``,
``evaluate()``, ``_get_obs_extra``, dense and normalized dense rewards. It is registered upstream-style
as ``PickPlaceCube-rrl-v1`` (an id ManiSkill does not use) so that ``robot_rl.envs.tasks`` can derive
its sparse and long-horizon variants from it like from any upstream task.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sapien
import torch
from mani_skill.agents.robots import Panda
from mani_skill.envs.sapien_env import BaseEnv
from mani_skill.envs.utils import randomization
from mani_skill.sensors.camera import CameraConfig
from mani_skill.utils import sapien_utils
from mani_skill.utils.building import actors
from mani_skill.utils.registration import register_env
from mani_skill.utils.scene_builder.table import TableSceneBuilder
from mani_skill.utils.structs import Pose
from mani_skill.utils.structs.types import Array
from transforms3d.euler import euler2quat

__all__ = ["PickPlaceCubeEnv", "UPSTREAM_ID"]

#: The id this module registers the (dense-reward) task under; robot_rl's variants derive from it.
UPSTREAM_ID = "PickPlaceCube-rrl-v1"


@register_env(UPSTREAM_ID, max_episode_steps=50)
class PickPlaceCubeEnv(BaseEnv):
    """
    **Task Description:**
    Pick up a red cube and place it on a red/white target region marked on the table, then let go.

    **Randomizations:**
    - the cube's xy position is randomized on top of a table in the region [0.1, 0.1] x [-0.1, -0.1]. It is
      placed flat on the table
    - the cube's z-axis rotation is randomized to a random angle
    - the target region (radius `goal_radius` = 0.05 m) is placed on the table at a distance uniform in
      [0.12, 0.2] m from the cube in a uniformly random direction; its centre is clipped to [-0.2, 0.2] x
      [-0.2, 0.2]
    - the robot's initial joint positions get Gaussian noise (std 0.02 rad)

    **Success Conditions:**
    - the cube's xy position is within `goal_radius` (0.05 m) of the region's centre by euclidean distance
    - the cube rests on the table: its z is within 5 mm of its half size and its speed is below 0.05 m/s
    - the cube is released: the gripper does not grasp it (``agent.is_grasping``)
    """

    SUPPORTED_ROBOTS = ["panda"]
    agent: Panda
    cube_half_size = 0.02
    goal_radius = 0.05
    #: Distance range (m) between the cube's start and the region's centre.
    goal_distance = (0.12, 0.2)
    #: Bound (m) on the region centre's |x| and |y| (reachable, on the table).
    goal_xy_bound = 0.2
    #: Tolerances of the success test: cube z above its resting height (m) and cube speed (m/s).
    rest_z_tol = 5e-3
    rest_speed = 0.05

    def __init__(self, *args, robot_uids="panda", robot_init_qpos_noise=0.02, **kwargs):
        self.robot_init_qpos_noise = robot_init_qpos_noise
        super().__init__(*args, robot_uids=robot_uids, **kwargs)

    @property
    def _default_sensor_configs(self):
        pose = sapien_utils.look_at(eye=[0.3, 0, 0.6], target=[-0.1, 0, 0.1])
        return [CameraConfig("base_camera", pose, 128, 128, np.pi / 2, 0.01, 100)]

    @property
    def _default_human_render_camera_configs(self):
        pose = sapien_utils.look_at([0.6, 0.7, 0.6], [0.0, 0.0, 0.35])
        return CameraConfig("render_camera", pose, 512, 512, 1, 0.01, 100)

    def _load_agent(self, options: dict):
        super()._load_agent(options, sapien.Pose(p=[-0.615, 0, 0]))

    def _load_scene(self, options: dict):
        self.table_scene = TableSceneBuilder(self, robot_init_qpos_noise=self.robot_init_qpos_noise)
        self.table_scene.build()
        self.cube = actors.build_cube(
            self.scene,
            half_size=self.cube_half_size,
            color=[1, 0, 0, 1],
            name="cube",
            initial_pose=sapien.Pose(p=[0, 0, self.cube_half_size]),
        )
        self.goal_region = actors.build_red_white_target(
            self.scene,
            radius=self.goal_radius,
            thickness=1e-5,
            name="goal_region",
            add_collision=False,
            body_type="kinematic",
            initial_pose=sapien.Pose(p=[0, 0, 1e-3]),
        )

    def _initialize_episode(self, env_idx: torch.Tensor, options: dict):
        with torch.device(self.device):
            b = len(env_idx)
            self.table_scene.initialize(env_idx)
            xyz = torch.zeros((b, 3))
            xyz[:, :2] = torch.rand((b, 2)) * 0.2 - 0.1
            xyz[:, 2] = self.cube_half_size
            qs = randomization.random_quaternions(b, lock_x=True, lock_y=True)
            self.cube.set_pose(Pose.create_from_pq(xyz, qs))

            lo, hi = self.goal_distance
            dist = torch.rand(b) * (hi - lo) + lo
            angle = torch.rand(b) * (2 * np.pi)
            goal = torch.zeros((b, 3))
            goal[:, 0] = xyz[:, 0] + dist * torch.cos(angle)
            goal[:, 1] = xyz[:, 1] + dist * torch.sin(angle)
            goal[:, :2] = goal[:, :2].clamp(-self.goal_xy_bound, self.goal_xy_bound)
            goal[:, 2] = 1e-3
            self.goal_region.set_pose(Pose.create_from_pq(p=goal, q=euler2quat(0, np.pi / 2, 0)))

    def evaluate(self):
        """``success`` = cube inside the region, resting on the table, and released (see class docstring)."""
        cube_p = self.cube.pose.p
        obj_to_goal_dist = torch.linalg.norm(cube_p[:, :2] - self.goal_region.pose.p[:, :2], dim=1)
        is_obj_in_region = obj_to_goal_dist < self.goal_radius
        is_obj_resting = (torch.abs(cube_p[:, 2] - self.cube_half_size) < self.rest_z_tol) & (
            torch.linalg.norm(self.cube.linear_velocity, dim=1) < self.rest_speed
        )
        is_grasped = self.agent.is_grasping(self.cube)
        return {
            "success": is_obj_in_region & is_obj_resting & ~is_grasped,
            "is_obj_in_region": is_obj_in_region,
            "is_obj_resting": is_obj_resting,
            "is_grasped": is_grasped,
            "obj_to_goal_dist": obj_to_goal_dist,
        }

    def _get_obs_extra(self, info: dict):
        obs = dict(is_grasped=info["is_grasped"], tcp_pose=self.agent.tcp.pose.raw_pose,
                   goal_pos=self.goal_region.pose.p)
        if self.obs_mode_struct.use_state:
            obs.update(
                obj_pose=self.cube.pose.raw_pose,
                tcp_to_obj_pos=self.cube.pose.p - self.agent.tcp.pose.p,
                obj_to_goal_pos=self.goal_region.pose.p - self.cube.pose.p,
            )
        return obs

    def compute_dense_reward(self, obs: Any, action: Array, info: dict):
        """Staged: reach the cube (0..1), grasp (+1), carry it above the region (0..1), lower it into the
        region (0..1), release it there with the arm still (0..1); 5 on success.
        """
        reward = self.staged_place_reward(self.goal_region.pose.p, info["is_obj_in_region"], info)
        reward[info["success"]] = 5
        return reward

    def staged_place_reward(self, target: torch.Tensor, in_region: torch.Tensor, info: dict) -> torch.Tensor:
        """The staged pick-and-place reward (0..5, without the success bonus) for placing the cube on ``target``
        ``(N, 3)`` m (world; its xy is the centre), ``in_region`` ``(N,) bool`` the cube is within the radius of it.
        """
        tcp_to_obj_dist = torch.linalg.norm(self.cube.pose.p - self.agent.tcp.pose.p, dim=1)
        reward = 1 - torch.tanh(5 * tcp_to_obj_dist)
        is_grasped = info["is_grasped"]
        reward += is_grasped

        above_goal = target.clone()
        above_goal[:, 2] = self.cube_half_size + 0.05
        carry_dist = torch.linalg.norm(above_goal - self.cube.pose.p, dim=1)
        reward += (1 - torch.tanh(5 * carry_dist)) * is_grasped

        z_above = torch.abs(self.cube.pose.p[:, 2] - self.cube_half_size)
        reward += (1 - torch.tanh(10 * z_above)) * in_region
        released = in_region & info["is_obj_resting"] & ~is_grasped
        static = 1 - torch.tanh(5 * torch.linalg.norm(self.agent.robot.get_qvel()[:, :-2], dim=1))
        reward += static * released
        return reward

    def compute_normalized_dense_reward(self, obs: Any, action: Array, info: dict):
        """:meth:`compute_dense_reward` scaled to [0, 1] (its maximum, on success, is 5)."""
        return self.compute_dense_reward(obs=obs, action=action, info=info) / 5.0
