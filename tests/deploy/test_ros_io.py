"""Observation assembly from ROS messages reproduces the simulator's state vector (real ManiSkill, no DDS)."""

import numpy as np
import pytest

from robot_rl.deploy.config import DeployConfig
from robot_rl.deploy.ros_io import (
    QUAT_HEMISPHERE,
    ObservationAssembler,
    ObservationUnavailable,
    joint_state_msg,
    pose_msg,
    stamp_to_s,
)
from robot_rl.deploy.sim_bridge import pose_target_to_action, state_in_base, twist_to_action, width_to_gripper_action
from robot_rl.envs import make_env, observation_layout, observation_slices
from robot_rl.envs.obs_layout import ROBOT_BASE_POS_WORLD, ROBOT_BASE_QUAT_WORLD

TASK = "RRL-PushCube-Sparse-v1"
BASE = "panda_link0"
JOINTS = DeployConfig().joint_names


def _assembler():
    return ObservationAssembler(observation_layout(TASK), JOINTS, BASE, (ROBOT_BASE_POS_WORLD, ROBOT_BASE_QUAT_WORLD))


def _feed(a: ObservationAssembler, st: dict, t: float) -> None:
    assert a.update_joint_state(joint_state_msg(JOINTS, st["qpos"], st["qvel"], t), t)
    assert a.update_pose("object_pose", pose_msg(*st["obj"], BASE, t), t)
    assert a.update_pose("goal_pose", pose_msg(*st["goal"], BASE, t), t)
    assert a.update_pose("ee_pose", pose_msg(*st["tcp"], BASE, t), t)


def _canonical(obs: np.ndarray) -> np.ndarray:
    """The env observation with its quaternions in the hemisphere the assembler uses."""
    out = obs.copy()
    sl = observation_slices(TASK)
    for field, key in (("tcp_pose", "ee_pose"), ("obj_pose", "object_pose")):
        q = out[sl[field]][3:7]
        if q[QUAT_HEMISPHERE[key]] < 0:
            out[sl[field].start + 3:sl[field].stop] = -q
    return out


@pytest.mark.slow
def test_state_to_messages_and_back_reproduces_the_observation_exactly():
    env = make_env(TASK, seed=None)
    a = _assembler()
    rng = np.random.default_rng(0)
    flips = 0
    try:
        obs, _ = env.reset(seed=3)
        for step in range(60):
            st = state_in_base(env.unwrapped)
            _feed(a, st, 100.0 + step * 0.05)
            got = a.observation()
            want = _canonical(obs)
            flips += int(not np.array_equal(want, obs))
            assert got.dtype == np.float32 and got.shape == obs.shape
            np.testing.assert_array_equal(got, want)  # exact: same ordering, frames and units
            obs, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
            if term or trunc:
                obs, _ = env.reset(seed=100 + step)
        # the base frame really is not the world frame: the TCP x differs by the base offset
        st = state_in_base(env.unwrapped)
        assert np.isclose(st["tcp"][0][0] - obs[18], 0.615, atol=1e-6)
    finally:
        env.close()


@pytest.mark.slow
def test_pose_target_round_trip_reproduces_the_action():
    """Safety filter target (current + delta) -> bridge -> the same pd_ee_delta_pose action."""
    from robot_rl.deploy.safety import SafetyFilter, SafetyLimits

    limits = SafetyLimits.from_dict(DeployConfig(safety=_LOOSE).safety)
    env = make_env(TASK, seed=None)
    try:
        env.reset(seed=0)
        tcp = state_in_base(env.unwrapped)["tcp"]
        f = SafetyFilter(limits, 0.05)
        f.activate(tcp)
        rng = np.random.default_rng(1)
        for i in range(20):
            action = np.r_[rng.uniform(-1, 1, 3), rng.uniform(-0.5, 0.5, 3) / np.sqrt(3), rng.uniform(-1, 1)]
            cmd = f.step(action, tcp, 1.0 + 0.05 * i, {"x": 1.0 + 0.05 * i})
            assert not cmd.clamped, cmd.clamped
            back = pose_target_to_action(cmd.target_pos, cmd.target_quat, *tcp)
            np.testing.assert_allclose(back, action[:6], atol=1e-9)
            np.testing.assert_allclose(twist_to_action(cmd.twist, 0.05), action[:6], atol=1e-9)  # MoveIt Servo path
            assert np.isclose(width_to_gripper_action(cmd.gripper_width_m), np.clip(action[6], -1, 1))
        # gripper width (both fingers) -> command: 0 m closed (-1) .. 0.08 m open (+1)
        for width, command in ((0.08, 1.0), (0.0, -1.0), (0.04, 0.0), (-0.01, -1.0), (0.2, 1.0)):
            assert np.isclose(width_to_gripper_action(width), command)
    finally:
        env.close()


_LOOSE = dict(workspace_min=[-2, -2, -2], workspace_max=[2, 2, 2], max_step_translation_m=1.0, max_step_rotation_rad=1.0,
              max_linear_velocity_m_s=100.0, max_angular_velocity_rad_s=100.0, max_input_age_s=10.0,
              first_command_max_translation_m=1.0, first_command_max_rotation_rad=1.0,
              gripper_min_width_m=0.0, gripper_max_width_m=0.08)


def _msgs(t=1.0):
    st = {"qpos": np.arange(9) * 0.1, "qvel": np.zeros(9), "tcp": (np.array([0.5, 0, 0.2]), np.array([0, 1.0, 0, 0])),
          "obj": (np.array([0.6, 0, 0.02]), np.array([1.0, 0, 0, 0])), "goal": (np.array([0.75, 0, 0.001]), np.array([1.0, 0, 0, 0]))}
    return st


def test_bad_messages_are_rejected_counted_and_the_last_good_one_kept():
    a = _assembler()
    with pytest.raises(ObservationUnavailable, match="joint_states"):
        a.observation()
    _feed(a, _msgs(), 1.0)
    good = a.observation()
    bad_frame = pose_msg([0.5, 0, 0.2], [0, 1, 0, 0], "world", 2.0)
    assert not a.update_pose("ee_pose", bad_frame, 2.0)
    assert not a.update_pose("object_pose", pose_msg([np.nan, 0, 0], [1, 0, 0, 0], BASE, 2.0), 2.0)
    assert not a.update_pose("goal_pose", pose_msg([0, 0, 0], [2, 0, 0, 0], BASE, 2.0), 2.0)
    assert not a.update_joint_state(joint_state_msg(JOINTS[:8], np.zeros(8), np.zeros(8), 2.0), 2.0)
    renamed = joint_state_msg(["j%d" % i for i in range(9)], np.zeros(9), np.zeros(9), 2.0)
    assert not a.update_joint_state(renamed, 2.0)
    assert not a.update_joint_state(joint_state_msg(JOINTS, [np.inf] * 9, np.zeros(9), 2.0), 2.0)
    np.testing.assert_array_equal(a.observation(), good)
    assert sum(a.rejected.values()) == 6 and all(stamp == 1.0 for stamp in a.stamps().values())
    assert any("frame_id 'world'" in k for k in a.rejected)
    assert any("missing joints" in k for k in a.rejected)
    # extra joints (a real robot may publish more) are ignored
    extra = joint_state_msg(["extra", *JOINTS], np.r_[9.0, np.arange(9) * 0.1], np.zeros(10), 3.0)
    assert a.update_joint_state(extra, 3.0) and stamp_to_s(extra.header.stamp) == 3.0


def test_layout_without_a_ros_source_is_refused():
    with pytest.raises(ValueError, match="is_grasped"):
        ObservationAssembler(observation_layout("RRL-PickCube-Sparse-v1"), JOINTS, BASE)
