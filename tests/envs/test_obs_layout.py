"""The observation layout (robot_rl.envs.obs_layout) against real ManiSkill observations and simulator internals.

Each field's slice of a real observation must equal the value read from the simulator after some steps:
this pins the field order, the frames and the units the ROS 2 node rebuilds observations with.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.envs import make_env, privileged_state
from robot_rl.envs.obs_layout import (
    OBS_LAYOUTS,
    PANDA_JOINT_NAMES,
    ROBOT_BASE_POS_WORLD,
    ROBOT_BASE_QUAT_WORLD,
    layout_as_dicts,
    observation_dim,
    observation_layout,
    observation_slices,
)

pytestmark = pytest.mark.slow

TASK_IDS = ["RRL-PushCube-Sparse-v1", "RRL-PickCube-Sparse-v1"]
EXPECTED_DIM = {"RRL-PushCube-Sparse-v1": 35, "RRL-PickCube-Sparse-v1": 42}
ATOL = 1e-6  # obs is float32 of the same float32 simulator values: equal up to the cast


def _np(x) -> np.ndarray:
    return (x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).reshape(-1).astype(np.float32)


def _internals(env) -> dict[str, np.ndarray]:
    """Every field's value read from the simulator itself (not from the observation code)."""
    u = env.unwrapped
    tcp = u.agent.tcp.pose
    obj = getattr(u, u.privileged_obj_attr).pose
    goal = getattr(u, u.privileged_goal_attr).pose.p
    return {
        "qpos": _np(u.agent.robot.get_qpos()),
        "qvel": _np(u.agent.robot.get_qvel()),
        "tcp_pose": _np(tcp.raw_pose),
        "goal_pos": _np(goal),
        "obj_pose": _np(obj.raw_pose),
        "is_grasped": _np(u.agent.is_grasping(getattr(u, u.privileged_obj_attr)).float()),
        "tcp_to_obj_pos": _np(obj.p - tcp.p),
        "obj_to_goal_pos": _np(goal - obj.p),
    }


def test_layout_table_is_consistent():
    for task_id, fields in OBS_LAYOUTS.items():
        assert observation_dim(task_id) == EXPECTED_DIM[task_id] == sum(f.size for f in fields)
        names = [f.name for f in fields]
        assert len(names) == len(set(names))
        assert names[:2] == ["qpos", "qvel"]
        for f in fields:
            assert f.frame in ("joint", "world", "none") and f.unit and f.description
            assert len(f.components) == f.size
        rows = layout_as_dicts(task_id)
        assert [r["offset"] for r in rows] == [s.start for s in observation_slices(task_id).values()]
        assert rows[-1]["offset"] + rows[-1]["size"] == EXPECTED_DIM[task_id]
    # paper names resolve too
    assert observation_layout("PushCube-v2") == observation_layout("RRL-PushCube-Sparse-v1")
    # long-horizon variants observe exactly what their sparse task does
    assert observation_layout("PickCube-v2-LH") == observation_layout("RRL-PickCube-Sparse-LH-v1") == observation_layout("PickCube-v2")


def test_long_horizon_observation_has_the_sparse_layout():
    from robot_rl.envs import make_env

    env = make_env("RRL-PushCube-Sparse-LH-v1", seed=0)
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (observation_dim("RRL-PushCube-Sparse-LH-v1"),)
    finally:
        env.close()


def test_unknown_task_lists_known_ones():
    with pytest.raises(ValueError, match="RRL-PushCube-Sparse-v1.*RRL-PickCube-Sparse-v1"):
        observation_layout("NoSuchTask-v0")


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_layout_matches_simulator(task_id, scripted):
    env = make_env(task_id, seed=3)
    try:
        u = env.unwrapped
        assert env.observation_space.shape == (observation_dim(task_id),)
        assert [j.name for j in u.agent.robot.get_active_joints()] == list(PANDA_JOINT_NAMES)
        # the robot base: where the layout says, axes aligned with the world frame
        np.testing.assert_allclose(_np(u.agent.robot.pose.p), ROBOT_BASE_POS_WORLD, atol=1e-6)
        np.testing.assert_allclose(np.abs(_np(u.agent.robot.pose.q)), np.abs(ROBOT_BASE_QUAT_WORLD), atol=1e-6)
        # ManiSkill's own unflattened observation has exactly our fields, in our order
        raw = u.get_obs(unflattened=True)
        assert [*raw["agent"], *raw["extra"]] == [f.name for f in observation_layout(task_id)]

        obs, _ = env.reset(seed=3)
        rng = np.random.default_rng(0)
        checked, grasped_seen = 0, False
        slices = observation_slices(task_id)
        for t in range(40):
            if "Pick" in task_id:  # grasp the cube, so is_grasped and the relative vectors see real values
                action = scripted.pick_action(privileged_state(u)[0], t)
            else:
                action = rng.uniform(-1, 1, 7).astype(np.float32)
            obs, _, terminated, truncated, _ = env.step(action)
            assert obs.dtype == np.float32 and obs.shape == (observation_dim(task_id),)
            sim = _internals(env)
            for name, sl in slices.items():
                np.testing.assert_allclose(obs[sl], sim[name], atol=ATOL, err_msg=f"{task_id} field {name} step {t}")
            checked += 1
            grasped_seen |= "is_grasped" in slices and obs[slices["is_grasped"]][0] == 1.0
            if terminated or truncated:
                break
        assert checked >= 10
        if "Pick" in task_id:
            assert grasped_seen, "the scripted pick never grasped: is_grasped was not checked at 1"

        # frames: tcp_pose is the world frame; the arm controller's EE pose in the robot base frame is
        # the same pose shifted by the base position (what a real Franka reports as O_T_EE)
        tcp = obs[slices["tcp_pose"]]
        ee_base = _np(u.agent.controller.controllers["arm"].ee_pose_at_base.raw_pose)
        np.testing.assert_allclose(tcp[:3] - np.asarray(ROBOT_BASE_POS_WORLD), ee_base[:3], atol=1e-5)
        # same rotation (a quaternion and its negative are the same rotation)
        assert abs(float(np.dot(tcp[3:], ee_base[3:]))) == pytest.approx(1.0, abs=1e-5)
        # units: fingers are prismatic joints in metres (0..0.04 each), arm joints radians
        fingers = obs[slices["qpos"]][7:9]
        assert np.all(fingers > -1e-3) and np.all(fingers < 0.041)
        # the goal of PushCube lies on the table (z = 1e-3 m); PickCube's cube rests at its half size
        if "Push" in task_id:
            assert obs[slices["goal_pos"]][2] == pytest.approx(1e-3, abs=1e-6)
    finally:
        env.close()
