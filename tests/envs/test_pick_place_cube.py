"""PickPlaceCube's success condition, pinned by placing the cube by hand in the real simulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mani_skill.utils.structs import Pose

from robot_rl.envs import make_env, privileged_state
from robot_rl.teachers import ScriptedTeacher
from robot_rl.teachers.base import TeacherRequest

HOLD_OPEN = np.array([0, 0, 0, 0, 0, 0, 1], np.float32)  # stay, gripper open


@pytest.fixture
def env():
    e = make_env("PickPlaceCube-v2", seed=0)
    e.reset(seed=0)
    yield e
    e.close()


def place_cube(base, xy, z=0.02):
    base.cube.set_pose(Pose.create_from_pq(p=torch.tensor([[xy[0], xy[1], z]]), q=torch.tensor([[1.0, 0, 0, 0]])))


def goal_xy(base):
    return base.goal_region.pose.p[0, :2].numpy()


def test_cube_inside_region_and_released_succeeds(env):
    base = env.unwrapped
    place_cube(base, goal_xy(base) + [0.03, -0.02])  # 3.6 cm from the centre, radius 5 cm
    _, r, terminated, _, info = env.step(HOLD_OPEN)
    assert info["success"] and terminated and r == 1.0
    assert info["is_obj_in_region"] and info["is_obj_resting"] and not info["is_grasped"]


@pytest.mark.parametrize("offset", [(0.06, 0.0), (0.0, -0.055), (0.045, 0.045)])
def test_cube_outside_region_fails(env, offset):
    base = env.unwrapped
    place_cube(base, goal_xy(base) + np.array(offset))
    _, r, terminated, _, info = env.step(HOLD_OPEN)
    assert not info["success"] and not info["is_obj_in_region"] and not terminated and r == 0.0


def test_cube_in_the_air_above_region_fails(env):
    base = env.unwrapped
    place_cube(base, goal_xy(base), z=0.15)  # falling: neither resting nor on the table
    _, _, _, _, info = env.step(HOLD_OPEN)
    assert info["is_obj_in_region"] and not info["is_obj_resting"] and not info["success"]


@pytest.mark.slow
def test_cube_in_region_but_grasped_fails_until_released(env):
    """Grasp the cube where it lies, then move the region under it: not success while held (resting, inside);
    success once the gripper opens.
    """
    base = env.unwrapped
    teacher = ScriptedTeacher(task="PickCube-v2")
    for _ in range(40):
        s = privileged_state(base)
        s[:, 14:17] = s[:, 7:10]  # PickCube's planner carries to goal_pos: keep the cube where it is
        act = teacher.act(TeacherRequest(instructions=[""], states=s)).actions[0]
        _, _, terminated, _, info = env.step(np.clip(act, -1, 1))
        assert not terminated
        if info["is_grasped"]:
            break
    assert info["is_grasped"], "the scripted grasp did not hold the cube"
    cube = base.cube.pose.p[0].numpy()
    base.goal_region.set_pose(Pose.create_from_pq(p=torch.tensor([[cube[0], cube[1], 1e-3]])))
    for _ in range(5):
        _, r, terminated, _, info = env.step(np.array([0, 0, 0, 0, 0, 0, -1], np.float32))  # hold it, closed
        assert info["is_grasped"] and info["is_obj_in_region"] and info["is_obj_resting"]
        assert not info["success"] and not terminated and r == 0.0
    for _ in range(15):
        _, r, terminated, _, info = env.step(np.array([0, 0, 0.3, 0, 0, 0, 1], np.float32))  # open, rise
        if terminated:
            break
    assert info["success"] and r == 1.0 and not info["is_grasped"] and info["is_obj_in_region"]
