"""The wrapped MIKASA-Robo env classes (imported by :func:`robot_rl.envs.mikasa.register`, needs
``mikasa_robo_suite``). What they change and why: :mod:`robot_rl.envs.mikasa`.
"""
# ManiSkill's task docstring form (as envs/tasks.py, which pyproject exempts): it opens on a new line with a
# **Task Description:** heading, then Randomizations and Success Conditions.
# ruff: noqa: D212

from __future__ import annotations

from typing import Any

import torch
from mani_skill.utils.structs import Pose
from mikasa_robo_suite.rl.memory_envs.remember_color import RememberColor3Env
from mikasa_robo_suite.rl.memory_envs.take_it_back import TakeItBackEnv

from .mikasa import CUE_STEPS, HIDDEN_ABOVE_Z, HIDDEN_Z, SHOW_STEP
from .tasks import RRLTaskMixin, TaskSpec, rrl_task

__all__ = ["TakeItBackRRLEnv", "RememberColor3RRLEnv"]

#: ``info`` keys upstream's ``evaluate`` returns that robot_rl drops: the answer (``oracle_info``) and two that are
#: ``None`` or per-step debugging dicts of tensors (``task_cue``, ``reward_dict``).
_DROPPED_INFO = ("oracle_info", "task_cue", "reward_dict")


def _hidden(p: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: positions ``(N, 3)`` MIKASA parked out of sight (z = 1000 m)."""
    return p[:, 2] > HIDDEN_ABOVE_Z


@rrl_task(
    TaskSpec(
        env_id="RRL-TakeItBack-v0",
        paper_name="TakeItBack-v0",
        upstream_id="TakeItBack-v0",
        instruction="push the cube to the red goal region, then push it back to where it started",
        max_episode_steps=180,
        reward_mode="sparse",
    )
)
class TakeItBackRRLEnv(RRLTaskMixin, TakeItBackEnv):
    """
    **Task Description:**
    MIKASA-Robo's TakeItBack-v0 (Panda, no wrist camera) with a sparse reward by default, like robot_rl's other
    tasks (1.0 on the success step, else 0.0; the episode terminates on success): push a green cube (edge
    0.04 m) into a red goal region (radius 0.08 m); once it is there the red region turns purple (upstream moves
    the red region to z = 1000 m and the purple one onto its place); then push the cube back to where it started.
    The start region (blue) is never rendered (upstream hides it from the sensor cameras; here it is invisible to
    every camera, the teacher camera included): where the cube started is seen only before it moves, so it must be
    remembered. The policy's ``state`` (36-D) is upstream's without
    ``oracle_info`` (the start position): qpos, qvel, tcp_pose, goal_pos, cube_pose, goal_reached_status.

    **Randomizations:**
    - the start region (and the cube on it, flat, identity orientation) at x uniform in [-0.05, 0.05] m and
      y = 0.1 k + U(0, 0.05) m with k drawn from {-1, 0, 1}: three start areas 0.1 m apart along y
    - the goal region at x in [0.2, 0.25] m, y in [-0.025, 0.025] m
    - the robot's initial joint positions (upstream's raised home pose) get Gaussian noise (std 0.02 rad)

    **Success Conditions:**
    - the cube has been in the goal region (xy within 0.08 m of its centre) at some step of the episode, and
    - the cube's xy is now within 0.08 m of the start region's centre

    Privileged state (the teacher's view, :func:`robot_rl.envs.privileged_state`; nothing in it holds the start
    position once the cube has moved): ``obj_*`` = the cube (half size 0.02 m); ``goal_pos`` = the goal region's
    centre as the policy's ``goal_pos`` reports it (red or, once reached, purple: same xy, z = 0.001);
    ``tool_pos`` / ``tool_quat`` = the purple "goal reached" region as the simulator reports it: z = 1000 m
    (hidden) until the cube has reached the goal, then z = 0.001 at the goal's xy (what a camera sees when the
    goal turns purple); ``tool_half_extents`` = (0.08, 0.08, 0) (its radius); ``tool_grasped`` 0.
    """

    privileged_obj_attr = "cube"

    def __init__(self, *args: Any, robot_uids: str = "panda", **kwargs: Any) -> None:
        super().__init__(*args, robot_uids=robot_uids, **kwargs)

    def _load_scene(self, options: dict) -> None:
        super()._load_scene(options)
        # Upstream hides the start region by listing it in _hidden_objects, which only the sensor cameras honour;
        # robot_rl's teacher camera (render_teacher_images) shows every hidden object, so the start would be in the
        # teacher's image. Make it invisible for every camera instead, at load time (before the renderer starts;
        # its pose, which the success test reads, is untouched).
        self._hidden_objects.remove(self.initial_region)
        import sapien

        for obj in self.initial_region._objs:
            obj.find_component_by_type(sapien.render.RenderBodyComponent).visibility = 0

    def evaluate(self) -> dict:
        info = super().evaluate()
        for key in _DROPPED_INFO:
            info.pop(key, None)
        return info

    def _get_obs_extra(self, info: dict) -> dict:
        obs = super()._get_obs_extra(info)
        obs.pop("oracle_info", None)
        return obs

    def _privileged_goal_pos(self) -> torch.Tensor:
        goal = self.goal_region.pose.p.clone()
        hidden = _hidden(goal)
        goal[hidden, 2] = self.changed_goal_region.pose.p[hidden, 2]
        return goal

    def _privileged_obj_half_size(self) -> torch.Tensor:
        return torch.full((self.num_envs,), float(self.CUBE_HALFSIZE), device=self.device)

    def _privileged_tool(self) -> tuple[Pose, torch.Tensor, torch.Tensor]:
        h = torch.tensor([self.GOAL_RADIUS, self.GOAL_RADIUS, 0.0], device=self.device).expand(self.num_envs, 3)
        return self.changed_goal_region.pose, torch.zeros(self.num_envs, dtype=torch.bool, device=self.device), h


@rrl_task(
    TaskSpec(
        env_id="RRL-RememberColor3-v0",
        paper_name="RememberColor3-v0",
        upstream_id="RememberColor3-v0",
        instruction="remember the colour of the cube shown first, then touch the cube of that colour",
        max_episode_steps=60,
        reward_mode="sparse",
    )
)
class RememberColor3RRLEnv(RRLTaskMixin, RememberColor3Env):
    """
    **Task Description:**
    MIKASA-Robo's RememberColor3-v0 (Panda, no wrist camera) with a sparse reward by default, like robot_rl's other
    tasks (1.0 on the success step, else 0.0; the episode terminates on success): one cube (red, lime or blue,
    edge 0.04 m) is shown at the table centre for env steps 0..4; then nothing is on the table for steps 5..9;
    from step 10 on the three cubes (red, lime, blue) stand on the table and the robot must touch the one of
    the colour it was shown, and stay still. The policy's ``state`` (37-D): qpos, qvel, tcp_pose, then per cube
    (red, lime, blue) its position while it is on the table (zeros while hidden) and a visible flag, so the
    colour cue is in the state only in steps 0..4. Upstream's ``oracle_info`` (the colour index) and
    ``goal_{k}_pose`` (the true cube's position times its mask) are gone.

    Visibility is repaired against upstream (:mod:`robot_rl.envs.mikasa`: upstream never brings the cubes back to
    the table on mani-skill 3.0.1): hidden cubes are parked at z = 1000 m as upstream does, and at step 10 all
    three are put on their shuffled table positions with zero velocity; from then on only the physics moves them.

    **Randomizations:**
    - the shown colour uniform over {red, lime, blue}
    - the three cubes' table positions: y = 0.1, 0, -0.1 m (x = 0) each with Gaussian noise (std 0.01 m, kept
      >= 0.06 m apart), shuffled among the colours
    - the robot's initial joint positions (upstream's raised home pose) get Gaussian noise (std 0.02 rad)

    **Success Conditions:**
    - the TCP is within 0.05 m of the centre of the cube of the shown colour, and
    - the robot is static (joint velocities < 0.2)

    Privileged state (the teacher's view): the three cubes in the object, goal and tool position slots, in
    colour order, as the simulator reports them (z = 1000 m while hidden; a hidden cube keeps the xy of its coming
    table place, the one shown at the centre the centre's): ``obj_pos``/``obj_quat`` = red,
    ``goal_pos``/``goal_quat`` = lime, ``tool_pos``/``tool_quat`` = blue; ``is_grasped`` / ``tool_grasped`` for the
    red / blue cube; half sizes 0.02 m. The cue is which slot is on the table in steps 0..4; from step 10 all
    three are, and nothing in the view says which is the answer.
    """

    privileged_obj_attr = "_red_cube"

    def __init__(self, *args: Any, robot_uids: str = "panda", **kwargs: Any) -> None:
        super().__init__(*args, robot_uids=robot_uids, **kwargs)

    @property
    def _red_cube(self):
        return self.cubes[0]

    def _load_scene(self, options: dict) -> None:
        super()._load_scene(options)
        self._table_pos = {k: torch.zeros((self.num_envs, 3), device=self.device) for k in self.cubes}

    def _initialize_episode(self, env_idx: torch.Tensor, options: dict) -> None:
        super()._initialize_episode(env_idx, options)
        for k in self.cubes:  # upstream's initial_poses hold only the envs being reset: keep all envs' here
            self._table_pos[k][env_idx] = self.initial_poses[k].to(self.device)[: len(env_idx)]

    def evaluate(self) -> dict:
        """The visibility schedule (class docstring), then upstream's success test, without ``oracle_info``."""
        t = torch.as_tensor(self.elapsed_steps, device=self.device).reshape(-1).expand(self.num_envs)
        before = t <= SHOW_STEP  # steps whose poses the schedule sets (from step 11 on: physics only)
        if bool(before.any()):
            for k, cube in self.cubes.items():
                pose = cube.pose.raw_pose.clone()
                true = self.true_color_indices.to(self.device) == k
                cue = true & (t < CUE_STEPS)
                pose[cue, :3] = self.center_pose.to(self.device).expand(self.num_envs, 3)[cue]
                hide = (t < SHOW_STEP) & ~cue
                pose[hide, :2] = self._table_pos[k][hide, :2]
                pose[hide, 2] = HIDDEN_Z
                show = t == SHOW_STEP
                pose[show, :3] = self._table_pos[k][show]
                pose[before, 3:] = torch.tensor([1.0, 0.0, 0.0, 0.0], device=self.device)
                cube.pose = pose
                zero = torch.zeros((self.num_envs, 3), device=self.device)
                cube.set_linear_velocity(torch.where(before[:, None], zero, cube.linear_velocity))
                cube.set_angular_velocity(torch.where(before[:, None], zero, cube.angular_velocity))
        self.masks = {k: (self.true_color_indices.to(self.device) == k).unsqueeze(-1) for k in self.cubes}
        self.obj_to_goal_pos = torch.zeros_like(self.agent.tcp.pose.p)
        for k, cube in self.cubes.items():
            self.obj_to_goal_pos += (cube.pose.p - self.agent.tcp.pose.p) * self.masks[k]
        is_obj_placed = torch.linalg.norm(self.obj_to_goal_pos, dim=1) <= self.GOAL_THRESH
        is_robot_static = self.agent.is_static(0.2)
        return {"obj_to_goal_pos": self.obj_to_goal_pos, "is_obj_placed": is_obj_placed,
                "is_robot_static": is_robot_static, "success": is_obj_placed & is_robot_static}

    def _get_obs_extra(self, info: dict) -> dict:
        from .mikasa import COLOR_NAMES

        obs = dict(tcp_pose=self.agent.tcp.pose.raw_pose)
        if self._obs_mode in ("state", "state_dict"):
            for k, cube in self.cubes.items():
                p = cube.pose.p
                visible = ~_hidden(p)
                obs[f"{COLOR_NAMES[k]}_cube_pos"] = p * visible[:, None]
                obs[f"{COLOR_NAMES[k]}_cube_visible"] = visible
        return obs

    def _privileged_goal_pos(self) -> torch.Tensor:
        return self.cubes[1].pose.p

    def _privileged_goal_quat(self) -> torch.Tensor:
        return self.cubes[1].pose.q

    def _privileged_obj_half_size(self) -> torch.Tensor:
        return torch.full((self.num_envs,), float(self.CUBE_HALFSIZE), device=self.device)

    def _privileged_tool(self) -> tuple[Pose, torch.Tensor, torch.Tensor]:
        h = torch.full((self.num_envs, 3), float(self.CUBE_HALFSIZE), device=self.device)
        return self.cubes[2].pose, self.agent.is_grasping(self.cubes[2]), h
