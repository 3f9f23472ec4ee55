"""The wrapped MIKASA-Robo tasks (robot_rl.envs.mikasa, issue 13) in the real simulator: they reset, step and
report success; the answer (``oracle_info``, RememberColor's masked ``goal_{k}_pose``) is in neither the policy's
state nor the teacher's view once the cue is gone; the state matches its layout field by field.

Skipped when ``mikasa_robo_suite`` is not installed (``scripts/setup.sh`` installs it, optionally).
"""

from __future__ import annotations

import pytest

pytest.importorskip("mikasa_robo_suite")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from robot_rl.envs import TASKS, make_env, privileged_state  # noqa: E402
from robot_rl.envs.mikasa import COLOR_NAMES, CUE_STEPS, SHOW_STEP, UPSTREAM_IDS  # noqa: E402
from robot_rl.envs.obs_layout import observation_layout  # noqa: E402
from robot_rl.observation import schema_for  # noqa: E402

pytestmark = pytest.mark.slow
SIZES = {"RRL-TakeItBack-v0": 36, "RRL-RememberColor3-v0": 37}
HORIZONS = {"RRL-TakeItBack-v0": 180, "RRL-RememberColor3-v0": 60}
_L = {"obj": slice(7, 10), "goal": slice(14, 17), "tool": slice(27, 30)}


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy().reshape(-1).astype(np.float32)


def _set_xyz(actor, xyz) -> None:
    from mani_skill.utils.structs import Pose

    actor.set_pose(Pose.create_from_pq(p=torch.tensor([xyz], dtype=torch.float32), q=actor.pose.q))


@pytest.mark.parametrize("task", SIZES)
def test_spec_layout_and_state(task):
    spec = TASKS[task]
    assert spec.upstream_id == UPSTREAM_IDS[task] and spec.max_episode_steps == HORIZONS[task]
    assert spec.reward_mode == "sparse"
    fields = observation_layout(task)
    assert sum(f.size for f in fields) == schema_for(task).size == SIZES[task]
    env = make_env(task, seed=0)
    try:
        u = env.unwrapped
        assert u.robot_uids == "panda" and u.control_mode == "pd_ee_delta_pose"
        obs, info = env.reset(seed=0)
        assert obs.shape == env.observation_space.shape == (SIZES[task],)
        raw = u.get_obs(unflattened=True)
        assert [*raw["agent"], *raw["extra"]] == [f.name for f in fields]
        assert "oracle_info" not in raw["extra"] and not any(k.startswith("goal_") and k.endswith("_pose")
                                                             for k in raw["extra"])
        for _ in range(12):
            obs, reward, term, trunc, info = env.step(np.zeros(7, np.float32))
            assert "oracle_info" not in info and reward == 0.0 and not term
            sl = schema_for(task).field_slices("state")
            np.testing.assert_allclose(obs[sl["tcp_pose"]], _np(u.agent.tcp.pose.raw_pose), atol=1e-6)
            np.testing.assert_allclose(obs[sl["qpos"]], _np(u.agent.robot.get_qpos()), atol=1e-6)
            if task == "RRL-TakeItBack-v0":
                np.testing.assert_allclose(obs[sl["cube_pose"]], _np(u.cube.pose.raw_pose), atol=1e-6)
                np.testing.assert_allclose(obs[sl["goal_pos"]][:2], _np(u.goal_region.pose.p)[:2], atol=1e-6)
            else:
                for k, name in enumerate(COLOR_NAMES):
                    p = _np(u.cubes[k].pose.p)
                    vis = float(p[2] < 10)
                    assert obs[sl[f"{name}_cube_visible"]][0] == vis
                    np.testing.assert_allclose(obs[sl[f"{name}_cube_pos"]], p * vis, atol=1e-6)
    finally:
        env.close()


def test_take_it_back_success_and_no_start_in_view():
    """Moving the cube by hand: into the goal region (the purple region appears: privileged tool z on the table),
    then back onto its start (success, reward 1, terminated). Neither the state nor the privileged state holds the
    start once the cube has moved: two episodes whose starts differ, with the cube moved to the same place, give
    the same policy state and view (up to the robot's own joint noise, which is reset-seeded).
    """
    env = make_env("RRL-TakeItBack-v0", seed=0)
    try:
        u = env.unwrapped
        env.reset(seed=0)
        start = _np(u.cube.pose.p).copy()
        goal = _np(u.goal_region.pose.p).copy()
        ps = privileged_state(u)[0]
        np.testing.assert_allclose(ps[_L["obj"]], start, atol=1e-6)
        np.testing.assert_allclose(ps[_L["goal"]], goal, atol=1e-6)
        assert ps[_L["tool"]][2] > 10  # the purple region: hidden until the goal is reached
        zero = np.zeros(7, np.float32)
        _set_xyz(u.cube, [goal[0] - 0.05, goal[1], 0.02])
        _, r, term, _, info = env.step(zero)
        assert info["goal_achieved"] and not info["success"] and r == 0.0 and not term
        _, r, term, _, info = env.step(zero)
        ps = privileged_state(u)[0]
        assert ps[_L["tool"]][2] < 0.01 and ps[_L["goal"]][2] < 0.01  # purple on the table, goal xy kept
        np.testing.assert_allclose(ps[_L["goal"]][:2], goal[:2], atol=1e-6)
        _set_xyz(u.cube, [start[0] + 0.05, start[1], 0.02])  # 0.05 m from the start: inside its 0.08 m radius
        _, r, term, _, info = env.step(zero)
        assert info["success"] and r == 1.0 and term
    finally:
        env.close()

    # the start is nowhere in the state or view once the cube moved
    views = []
    for seed in (0, 1):
        env = make_env("RRL-TakeItBack-v0", seed=seed)
        try:
            u = env.unwrapped
            env.reset(seed=seed)
            views.append(_np(u.cube.pose.p).copy())
            _set_xyz(u.cube, [0.1, 0.0, 0.02])
            obs, *_ = env.step(np.zeros(7, np.float32))
            views.append((obs.copy(), privileged_state(u)[0].copy(), _np(u.goal_region.pose.p)))
        finally:
            env.close()
    s0, s1 = views[0::2]
    (o0, p0, _), (o1, p1, _) = views[1::2]
    assert np.linalg.norm(s0[:2] - s1[:2]) > 0.05  # different starts
    for v in (o0, o1, p0, p1):  # no start coordinate pair anywhere in them
        for s in (s0, s1):
            pairs = np.stack([v[:-1], v[1:]], 1)
            assert not np.any(np.all(np.abs(pairs - s[:2]) < 1e-4, axis=1))


def test_remember_color_schedule_and_success():
    """The cue (one cube, at the centre) in steps 0..4, nothing in 5..9, all three on the table from step 10 (the
    repaired schedule); the view's slots follow; the teacher's view holds no colour index; touching the true cube
    (TCP 0.03 m above it, robot still) succeeds, touching another does not.
    """
    env = make_env("RRL-RememberColor3-v0", seed=0)
    try:
        u = env.unwrapped
        env.reset(seed=0)
        true = int(u.true_color_indices[0])
        zero = np.zeros(7, np.float32)
        for t in range(SHOW_STEP + 2):
            ps = privileged_state(u)[0]
            on_table = [bool(ps[sl][2] < 10) for sl in (_L["obj"], _L["goal"], _L["tool"])]
            if t < CUE_STEPS:
                assert on_table == [k == true for k in range(3)], t
                np.testing.assert_allclose(ps[(_L["obj"], _L["goal"], _L["tool"])[true]], [0, 0, 0.02], atol=1e-4)
            elif t < SHOW_STEP:
                assert on_table == [False] * 3, t
            else:
                assert on_table == [True] * 3, t
                zs = [ps[sl][2] for sl in (_L["obj"], _L["goal"], _L["tool"])]
                np.testing.assert_allclose(zs, 0.02, atol=2e-3)
            _, _, term, _, info = env.step(zero)
            assert not info["success"] and not term
        # after the cue nothing in the view depends on which colour was shown
        before = privileged_state(u).copy()
        u.true_color_indices[:] = (true + 1) % 3
        np.testing.assert_array_equal(privileged_state(u), before)
    finally:
        env.close()


@pytest.mark.parametrize("which", ["true", "other"])
def test_remember_color_touch(which):
    from robot_rl.teachers.plans.common import Motion
    from robot_rl.teachers.plans.remember_color import TOUCH_DZ

    motion = Motion(1)
    env = make_env("RRL-RememberColor3-v0", seed=2)
    try:
        u = env.unwrapped
        env.reset(seed=2)
        true = int(u.true_color_indices[0])
        k = true if which == "true" else (true + 1) % 3
        success = False
        for t in range(59):
            ps = privileged_state(u)[0].astype(np.float64)
            a = np.zeros(7)
            if t >= SHOW_STEP:
                target = ps[(_L["obj"], _L["goal"], _L["tool"])[k]] + [0, 0, TOUCH_DZ]
                a[:3] = motion.position(ps[None, :3], target[None])[0]
            a[6] = -1
            _, r, term, trunc, info = env.step(a.astype(np.float32))
            success |= info["success"]
            if term or trunc:
                break
        assert success == (which == "true")
        if which == "true":
            assert r == 1.0 and term
    finally:
        env.close()


def test_baselines_package_is_mikasas():
    """The wheel's top-level ``baselines`` package is MIKASA's own, and nothing of robot_rl is named so."""
    import importlib.util
    import pathlib

    spec = importlib.util.find_spec("baselines")
    if spec is not None:
        root = pathlib.Path(spec.origin).parent
        assert (root / "ppo" / "ppo_memtasks.py").exists(), f"another 'baselines' package at {root}"
    import robot_rl

    assert importlib.util.find_spec("robot_rl.baselines") is None
    assert not (pathlib.Path(robot_rl.__file__).parent / "baselines").exists()


def test_take_it_back_start_is_not_in_the_teacher_image(warm_renderer):
    """Upstream hides the start region from the sensor cameras only; robot_rl's teacher camera shows hidden objects,
    so the wrapper makes the start region invisible to every camera: moving it changes no pixel of the teacher
    image, moving the goal region does.
    """
    from mani_skill.utils.structs import Pose

    from robot_rl.envs.common import render_teacher_images

    env = make_env("RRL-TakeItBack-v0", seed=0, teacher_image_size=(96, 96))
    try:
        env.reset(seed=0)
        u = env.unwrapped
        images = [render_teacher_images(u)[0]]
        for actor in (u.initial_region, u.goal_region):
            p = actor.pose.p.clone()
            p[:, 1] -= 0.15
            actor.set_pose(Pose.create_from_pq(p=p, q=actor.pose.q))
            images.append(render_teacher_images(u)[0])
    finally:
        env.close()
    assert np.array_equal(images[0], images[1]), "the start region shows in the teacher image"
    assert np.any(images[1] != images[2]), "the goal region does not show"
