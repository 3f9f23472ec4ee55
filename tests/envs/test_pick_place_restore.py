"""RRL-PickPlaceCube-Restore-v1 (issue 13): resets, steps, and its success condition pinned by moving the cube by
hand in the real simulator; the start position is in no observation once the cube has moved.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mani_skill.utils.structs import Pose

from robot_rl.envs import make_env, privileged_state
from robot_rl.observation import schema_for

TASK = "RRL-PickPlaceCube-Restore-v1"
HOLD_OPEN = np.array([0, 0, 0, 0, 0, 0, 1], np.float32)  # stay, gripper open
pytestmark = pytest.mark.slow


@pytest.fixture
def env():
    e = make_env(TASK, seed=3)
    e.reset(seed=3)
    yield e
    e.close()


def place_cube(base, xy, z=0.02):
    base.cube.set_pose(Pose.create_from_pq(p=torch.tensor([[xy[0], xy[1], z]]), q=torch.tensor([[1.0, 0, 0, 0]])))


def settle(env, steps=3):
    info = {}
    for _ in range(steps):
        _, r, terminated, _, info = env.step(HOLD_OPEN)
        if terminated:
            return r, terminated, info
    return r, terminated, info


def test_placed_then_put_back_succeeds(env):
    base = env.unwrapped
    start = base.cube.pose.p[0, :2].numpy().copy()
    goal = base.goal_region.pose.p[0, :2].numpy()
    r, terminated, info = settle(env)
    assert not info["success"] and not info["was_placed"]  # at the start, never placed: not done
    place_cube(base, goal + [0.01, 0.0])
    r, terminated, info = settle(env)
    assert info["is_placed_now"] and info["was_placed"] and not info["success"] and not terminated
    place_cube(base, start + [0.03, 0.0])  # back within 0.05 m of the start
    r, terminated, info = settle(env)
    assert info["success"] and terminated and r == 1.0


def test_put_back_elsewhere_or_lifted_fails(env):
    base = env.unwrapped
    start = base.cube.pose.p[0, :2].numpy().copy()
    goal = base.goal_region.pose.p[0, :2].numpy()
    place_cube(base, goal)
    settle(env)
    away = start + 0.06 * (start - goal) / np.linalg.norm(start - goal)  # 6 cm past the start, away from the goal
    place_cube(base, away)
    _, _, info = settle(env)
    assert info["was_placed"] and not info["is_obj_at_start"] and not info["success"]
    place_cube(base, start, z=0.08)  # above the start, not resting
    _, r, terminated, _, info = env.step(HOLD_OPEN)
    assert not info["success"] and r == 0.0


def _holds_xy(values: np.ndarray, xy: np.ndarray) -> bool:
    pairs = np.stack([values[:-1], values[1:]], axis=1)
    return bool(np.any(np.all(np.abs(pairs - xy) < 1e-4, axis=1)))


def test_start_is_in_no_observation_once_the_cube_moved(env):
    base = env.unwrapped
    obs0, _ = env.reset(seed=3)
    start = base.cube.pose.p[0].numpy().copy()
    assert _holds_xy(np.asarray(obs0).reshape(-1), start[:2])  # before it moves, the cube's pose is the start
    place_cube(base, base.goal_region.pose.p[0, :2].numpy())
    obs, *_ = env.step(HOLD_OPEN)
    obs = np.asarray(obs.cpu() if hasattr(obs, "cpu") else obs).reshape(-1)
    assert obs.shape == (schema_for(TASK).size,) == (42,)
    view = privileged_state(base)[0]
    for values in (obs, view):  # neither the policy's state nor the teacher's view holds the start's (x, y)
        assert not _holds_xy(values, start[:2])


def test_dense_reward_stages(env):
    base = env.unwrapped
    e2 = make_env(TASK, seed=3, reward_mode="normalized_dense")
    try:
        e2.reset(seed=3)
        _, r0, *_ = e2.step(HOLD_OPEN)
        assert 0.0 <= float(r0) < 0.5  # placing stage: at most 5 of 10
        b2 = e2.unwrapped
        place_cube(b2, b2.goal_region.pose.p[0, :2].numpy())
        settle(e2)
        _, r1, *_ = e2.step(HOLD_OPEN)
        assert float(r1) >= 0.5  # placed: the restoring stage starts at 5 of 10
    finally:
        e2.close()
    assert base.task_spec.max_episode_steps == 120
