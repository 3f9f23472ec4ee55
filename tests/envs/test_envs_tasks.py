"""Task registration, TaskSpec lookup and the privileged state layout (real ManiSkill, CPU sim)."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

import robot_rl.envs as E
from robot_rl.envs import PRIVILEGED_STATE_LAYOUT, TASKS, TaskSpec, get_task, make_env, privileged_state


def test_tasks_registered_with_maniskill_and_gymnasium():
    from mani_skill.utils.registration import REGISTERED_ENVS

    assert set(TASKS) >= {"RRL-PushCube-Sparse-v1", "RRL-PickCube-Sparse-v1"}
    from robot_rl.envs.mikasa import AVAILABLE as MIKASA_AVAILABLE

    # six tasks, sparse and long-horizon, two hidden-goal variants (issue 12), the Restore memory task and, with
    # mikasa-robo-suite installed, its two wrapped memory tasks (issue 13)
    assert len(TASKS) == 15 + (2 if MIKASA_AVAILABLE else 0)
    for env_id, spec in TASKS.items():
        assert spec.env_id == env_id
        assert env_id in REGISTERED_ENVS
        assert env_id in gym.registry
        assert REGISTERED_ENVS[env_id].max_episode_steps == spec.max_episode_steps
        if env_id.endswith("-LH-v1"):  # the long-horizon variant: 10x the sparse task's horizon
            short = TASKS[env_id.replace("-LH-v1", "-v1")]
            assert spec.max_episode_steps == 10 * short.max_episode_steps
            assert spec.paper_name == short.paper_name + "-LH" and spec.instruction == short.instruction
        assert spec.upstream_id in REGISTERED_ENVS  # derives from a real upstream task
        assert spec.reward_mode == "sparse"
        assert spec.instruction
    # Our ids cannot collide with upstream ones.
    assert not any(i.startswith("RRL-") for i in REGISTERED_ENVS if i not in TASKS)


def test_get_task_by_id_paper_name_and_spec():
    push = get_task("RRL-PushCube-Sparse-v1")
    assert push.paper_name == "PushCube-v2" and push.upstream_id == "PushCube-v1"
    assert push.max_episode_steps == 50
    assert get_task("PushCube-v2") is push
    assert get_task(push) is push
    assert get_task("PickCube-v2").env_id == "RRL-PickCube-Sparse-v1"


def test_unknown_task_lists_known_ids():
    with pytest.raises(ValueError) as err:
        get_task("PushCube-v9")
    msg = str(err.value)
    assert "PushCube-v9" in msg
    for env_id in TASKS:
        assert env_id in msg


def test_task_spec_is_frozen_and_validated():
    spec = get_task("PushCube-v2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.max_episode_steps = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="reward_mode"):
        TaskSpec("X-v1", "X-v2", "X-v0", "do x", reward_mode="sparse_ish")
    with pytest.raises(ValueError, match="max_episode_steps"):
        TaskSpec("X-v1", "X-v2", "X-v0", "do x", max_episode_steps=0)


def test_privileged_state_layout_is_exact():
    # The scripted teachers (robot_rl.teachers) index by these names: pin the contract.
    expected = [
        ("tcp_pos", 0, 3),
        ("tcp_quat", 3, 7),
        ("obj_pos", 7, 10),
        ("obj_quat", 10, 14),
        ("goal_pos", 14, 17),
        ("is_grasped", 17, 18),
        ("gripper_width", 18, 19),
        ("obj_half_size", 19, 20),
        ("goal_quat", 20, 24),
        ("obj_half_extents", 24, 27),
        ("tool_pos", 27, 30),
        ("tool_quat", 30, 34),
        ("tool_grasped", 34, 35),
        ("tool_half_extents", 35, 38),
    ]
    assert [(k, s.start, s.stop) for k, s in PRIVILEGED_STATE_LAYOUT.items()] == expected
    assert E.PRIVILEGED_STATE_DIM == 38


@pytest.mark.parametrize(
    "task, obj_attr, goal_attr",
    [("PushCube-v2", "obj", "goal_region"), ("PickCube-v2", "cube", "goal_site")],
)
def test_privileged_state_matches_env_poses(task, obj_attr, goal_attr):
    env = make_env(task, seed=3)
    try:
        base = env.unwrapped
        assert base.reward_mode == "sparse"  # the variant's default
        env.reset()
        rng = np.random.default_rng(0)
        for _ in range(3):
            env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        s = privileged_state(base)
        assert s.shape == (1, 38) and s.dtype == np.float32
        L = PRIVILEGED_STATE_LAYOUT
        tcp = base.agent.tcp.pose.raw_pose[0].numpy()
        obj = getattr(base, obj_attr).pose.raw_pose[0].numpy()
        goal = getattr(base, goal_attr).pose.p[0].numpy()
        np.testing.assert_allclose(s[0, L["tcp_pos"]], tcp[:3], atol=1e-6)
        np.testing.assert_allclose(s[0, L["tcp_quat"]], tcp[3:], atol=1e-6)  # wxyz, as sapien
        np.testing.assert_allclose(s[0, L["obj_pos"]], obj[:3], atol=1e-6)
        np.testing.assert_allclose(s[0, L["obj_quat"]], obj[3:], atol=1e-6)
        np.testing.assert_allclose(s[0, L["goal_pos"]], goal, atol=1e-6)
        qpos = base.agent.robot.get_qpos()[0].numpy()
        np.testing.assert_allclose(s[0, 18], qpos[-2:].sum(), atol=1e-6)  # Panda finger joints
        assert s[0, 19] == pytest.approx(base.cube_half_size)
        assert s[0, 17] in (0.0, 1.0)
        np.testing.assert_array_equal(s[0, 20:24], [1, 0, 0, 0])  # position-only goal
        np.testing.assert_allclose(s[0, 24:27], [base.cube_half_size] * 3)
        np.testing.assert_array_equal(s[0, 27:38], [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])  # no tool
        if task == "PushCube-v2":
            assert s[0, 16] == pytest.approx(1e-3)  # goal region's own pose z
        # The state obs carries the same poses (PushCube: qpos 9, qvel 9, tcp_pose 7, goal_pos 3, obj_pose 7).
        if task == "PushCube-v2":
            obs = base.get_obs()[0].numpy()
            np.testing.assert_allclose(obs[18:25], s[0, 0:7], atol=1e-6)
            np.testing.assert_allclose(obs[25:28], s[0, 14:17], atol=1e-6)
            np.testing.assert_allclose(obs[28:35], s[0, 7:14], atol=1e-6)
    finally:
        env.close()


def test_privileged_state_rejects_non_rrl_env():
    with pytest.raises(TypeError, match="unwrapped"):
        privileged_state(object())


def test_pickcube_scripted_grasp_sets_is_grasped_and_succeeds(scripted):
    """is_grasped/gripper_width follow a real grasp; success terminates with reward 1.0."""
    env = make_env("PickCube-v2", seed=5)
    try:
        env.reset()
        grasped, widths = [], []
        for t in range(50):
            s = privileged_state(env.unwrapped)[0]
            grasped.append(s[17])
            widths.append(s[18])
            _, r, terminated, truncated, info = env.step(scripted.pick_action(s, t))
            assert isinstance(info["success"], bool) and isinstance(r, float)
            if terminated or truncated:
                break
        assert terminated and not truncated and info["success"] and r == 1.0
        assert grasped[0] == 0.0 and grasped[-1] == 1.0
        assert widths[0] == pytest.approx(0.08, abs=1e-3)  # open: 2 x 0.04 m
        assert 0.035 < widths[-1] < 0.06  # closed on the 4 cm cube
    finally:
        env.close()


def test_is_grasped_shortcut_equals_maniskill_is_grasping(scripted):
    """The privileged is_grasped skips is_grasping's angle test when a finger pushes with < 0.5 N: at every step
    of a real grasp and carry, and of the contacts before it, it equals ManiSkill's own answer.
    """
    env = make_env("PickCube-v2", seed=5)
    try:
        env.reset()
        base = env.unwrapped
        ours, theirs = [], []
        for t in range(50):
            ours.append(bool(base._privileged_is_grasped()[0]))
            theirs.append(bool(base.agent.is_grasping(base.cube)[0]))
            _, _, terminated, truncated, _ = env.step(scripted.pick_action(privileged_state(base)[0], t))
            if terminated or truncated:
                break
        assert ours == theirs and any(ours) and not all(ours)
    finally:
        env.close()


def test_privileged_state_of_upstream_pushcube_matches_variant():
    """The upstream PushCube-v1 (same scene) gives the same state as our variant, same seed."""
    from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper

    up = CPUGymWrapper(gym.make("PushCube-v1", obs_mode="state", control_mode="pd_ee_delta_pose"))
    ours = make_env("PushCube-v2")
    try:
        up.reset(seed=2)
        ours.reset(seed=2)
        np.testing.assert_array_equal(privileged_state(up.unwrapped), privileged_state(ours.unwrapped))
    finally:
        up.close()
        ours.close()


# -- the paper's task suite ------------------------------------------------------------------------

SUITE = ["PushCube", "PickCube", "PickPlaceCube", "LiftPegUpright", "PegInsertionSide", "PokeCube"]
PAPER_HORIZON = {"PegInsertionSide": 100}  # ManiSkill's default horizons; 50 for the others


@pytest.mark.slow
@pytest.mark.parametrize("name", SUITE)
@pytest.mark.parametrize("variant", ["Sparse", "Sparse-LH"])
def test_suite_task_resets_steps_and_reports_success(name, variant):
    """Every task of the suite, both variants: resets, steps, reports a bool ``success``, sparse reward."""
    spec = get_task(f"RRL-{name}-{variant}-v1")
    assert get_task(spec.paper_name) is spec
    horizon = PAPER_HORIZON.get(name, 50) * (10 if variant == "Sparse-LH" else 1)
    assert spec.max_episode_steps == horizon
    env = make_env(spec.env_id, seed=1)
    try:
        obs, _ = env.reset(seed=1)
        assert obs.dtype == np.float32 and obs.ndim == 1
        assert env.unwrapped.reward_mode == "sparse"
        s = privileged_state(env.unwrapped)
        assert s.shape == (1, 38) and np.isfinite(s).all()
        rng = np.random.default_rng(0)
        for _ in range(3):
            obs, r, terminated, truncated, info = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
            assert isinstance(info["success"], bool) and r == float(info["success"])
    finally:
        env.close()


def test_peg_and_tool_privileged_state():
    """Peg tasks: the object is the peg with its half extents; PokeCube: the peg is the tool."""
    env = make_env("PegInsertionSide-v2", seed=0)
    try:
        env.reset(seed=0)
        base, s = env.unwrapped, privileged_state(env.unwrapped)[0]
        np.testing.assert_allclose(s[7:14], base.peg.pose.raw_pose[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(s[14:17], base.goal_pose.p[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(s[20:24], base.goal_pose.q[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(s[24:27], base.peg_half_sizes[0].numpy(), atol=1e-6)
        assert s[19] == pytest.approx(float(base.peg_half_sizes[0, 1]))
    finally:
        env.close()
    env = make_env("PokeCube-v2", seed=0)
    try:
        env.reset(seed=0)
        base, s = env.unwrapped, privileged_state(env.unwrapped)[0]
        np.testing.assert_allclose(s[7:10], base.cube.pose.p[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(s[27:34], base.peg.pose.raw_pose[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(s[35:38], [0.12, 0.025, 0.025], atol=1e-6)
        assert s[34] == 0.0
    finally:
        env.close()
    env = make_env("LiftPegUpright-v2", seed=0)
    try:
        env.reset(seed=0)
        s = privileged_state(env.unwrapped)[0]
        np.testing.assert_allclose(s[24:27], [0.12, 0.025, 0.025], atol=1e-6)
        assert s[16] == pytest.approx(0.12)  # upright: centre at half length
        # goal_quat turns the peg's long axis (its x) to world +z
        from robot_rl.geometry import quat_to_matrix

        np.testing.assert_allclose(quat_to_matrix(s[20:24])[:, 0], [0, 0, 1], atol=1e-6)
    finally:
        env.close()
