"""The hidden-goal tasks (issue 12): the policy's observation has no goal, the teacher still sees it.

``RRL-PushCube-HiddenGoal-v1`` and ``RRL-PickPlaceCube-HiddenGoal-v1`` are the sparse tasks with the goal's keys
dropped from ``_get_obs_extra``. Shown here in the real simulator: two episodes whose goals differ (the same
cube placement, the goal moved by hand) give the policy identical observations where the sparse task's differ;
the teacher's image and the privileged state follow the goal; the scripted teacher solves the tasks exactly as
it solves the sparse ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.envs.obs_layout import observation_layout
from robot_rl.observation import schema_for

#: hidden-goal task -> (its sparse task, the sparse task's fields it does not observe, its observation size).
HIDDEN = {
    "RRL-PushCube-HiddenGoal-v1": ("RRL-PushCube-Sparse-v1", ("goal_pos",), 32),
    "RRL-PickPlaceCube-HiddenGoal-v1": ("RRL-PickPlaceCube-Sparse-v1", ("goal_pos", "obj_to_goal_pos"), 36),
}
#: Where the goal is moved by hand (world xy, m): on the table, in the teacher camera's view, away from the
#: seed-0 goals and cubes of both tasks.
MOVED_GOAL_XY = {"RRL-PushCube-HiddenGoal-v1": (-0.05, -0.2), "RRL-PickPlaceCube-HiddenGoal-v1": (0.1, -0.2)}
SEED = 0


def _move_goal(env, xy) -> None:
    """Put the task's goal region (a kinematic actor without collision) at world ``xy``, same height and orientation."""
    from mani_skill.utils.structs import Pose

    region = env.unwrapped.goal_region
    p = region.pose.p.clone()
    p[:, :2] = torch.as_tensor(xy, dtype=p.dtype)
    region.set_pose(Pose.create_from_pq(p=p, q=region.pose.q))


@pytest.mark.parametrize("task", HIDDEN)
def test_layout_is_the_sparse_layout_without_the_goal(task):
    sparse, hidden_fields, size = HIDDEN[task]
    want = [f for f in observation_layout(sparse) if f.name not in hidden_fields]
    assert observation_layout(task) == want
    assert schema_for(task).size == size == schema_for(sparse).size - sum(
        f.size for f in observation_layout(sparse) if f.name in hidden_fields)
    assert not any(f.source and "goal" in f.source for f in observation_layout(task))
    paper = task.removeprefix("RRL-").replace("-HiddenGoal-v1", "-v2-HiddenGoal")
    assert observation_layout(paper) == want  # the paper name resolves too


@pytest.mark.parametrize("task", HIDDEN)
def test_spec_is_the_sparse_task_but_its_names(task):
    from robot_rl.envs import TASKS, get_task
    from robot_rl.envs import tasks as T

    sparse = TASKS[HIDDEN[task][0]]
    spec = get_task(task)
    assert get_task(spec.paper_name) is spec and spec.paper_name == sparse.paper_name + "-HiddenGoal"
    for attr in ("upstream_id", "instruction", "max_episode_steps", "reward_mode"):
        assert getattr(spec, attr) == getattr(sparse, attr), attr
    cls = next(c for c in vars(T).values() if isinstance(c, type) and getattr(c, "task_spec", None) is spec)
    sparse_cls = next(c for c in vars(T).values() if isinstance(c, type) and getattr(c, "task_spec", None) is sparse)
    assert issubclass(cls, sparse_cls)  # same scene, randomization, reward, success
    for section in ("**Task Description:**", "**Randomizations:**", "**Success Conditions:**"):
        assert section in cls.__doc__
    # these two, no long-horizon variant of them
    assert {t for t in TASKS if "HiddenGoal" in t} == set(HIDDEN)


def test_scripted_teacher_lists_every_task_it_plans():
    """SUPPORTED_TASKS holds every robot_rl task id and paper name whose family has a planner."""
    from robot_rl.envs import TASKS
    from robot_rl.teachers.scripted import PLANNERS, SUPPORTED_TASKS, task_family

    for spec in TASKS.values():
        assert task_family(spec.env_id) == task_family(spec.paper_name) in PLANNERS
        assert {spec.env_id, spec.paper_name} <= set(SUPPORTED_TASKS), spec.env_id


@pytest.mark.slow
@pytest.mark.parametrize("task", HIDDEN)
def test_policy_observation_does_not_depend_on_the_goal(task, scripted):
    """Two episodes from the same seed, in the second the goal moved away by hand after the reset, played with
    the same actions (the scripted teacher's, planned in the first): the hidden-goal task's observations are
    identical at every step although one episode succeeds and the other does not; the sparse task's differ,
    in its goal fields only. The privileged state (the teacher's) follows the goal in both.
    """
    from robot_rl.envs import make_env, privileged_state

    sparse, hidden_fields, _ = HIDDEN[task]
    for tid in (task, sparse):
        envs = [make_env(tid, seed=SEED), make_env(tid, seed=SEED)]
        try:
            (a, _), (b, _) = envs[0].reset(seed=SEED), envs[1].reset(seed=SEED)
            goal_a = privileged_state(envs[0].unwrapped)[0, 14:17].copy()
            _move_goal(envs[1], MOVED_GOAL_XY[task])
            b = envs[1].unwrapped.get_obs()[0].numpy()
            steps = [(a, b)]
            for _ in range(50):
                pa, pb = privileged_state(envs[0].unwrapped)[0], privileged_state(envs[1].unwrapped)[0]
                np.testing.assert_array_equal(pa[14:17], goal_a)  # the teacher sees each episode's own goal
                np.testing.assert_allclose(pb[14:17], [*MOVED_GOAL_XY[task], goal_a[2]], atol=1e-7)
                np.testing.assert_array_equal(np.delete(pa, np.s_[14:17]), np.delete(pb, np.s_[14:17]))
                action = scripted.action(pa, tid)
                (a, _, term_a, trunc_a, info_a), (b, _, term_b, _, info_b) = (e.step(action) for e in envs)
                steps.append((a, b))
                if term_a or trunc_a or term_b:
                    break
            assert info_a["success"] and not info_b["success"], "the first episode reaches its goal, the other not"
        finally:
            for e in envs:
                e.close()
        if tid == task:
            assert all(np.array_equal(x, y) for x, y in steps), "the policy's observation depends on the goal"
        else:
            slices = schema_for(tid).field_slices("state")
            goal_cols = np.zeros(schema_for(tid).size, dtype=bool)
            for name in hidden_fields:
                goal_cols[slices[name]] = True
            assert all(not np.array_equal(x[goal_cols], y[goal_cols]) for x, y in steps)
            assert all(np.array_equal(x[~goal_cols], y[~goal_cols]) for x, y in steps)


@pytest.mark.slow
@pytest.mark.parametrize("task", HIDDEN)
def test_hidden_observation_is_the_sparse_one_without_the_goal_columns(task, scripted):
    """Same seed, same teacher actions: the hidden-goal task's observation is the sparse task's with the goal
    columns deleted, at every step, and the episodes end alike (same length, both successful). PushCube's hidden
    goal lies in a random direction (the sparse task's always along +x): its cube placement is the sparse task's,
    and with the sparse goal moved by hand onto the hidden one the two episodes are the same.
    """
    from robot_rl.envs import make_env, privileged_state

    sparse, hidden_fields, size = HIDDEN[task]
    slices = schema_for(sparse).field_slices("state")
    keep = np.ones(schema_for(sparse).size, dtype=bool)
    for name in hidden_fields:
        keep[slices[name]] = False
    envs = [make_env(task, seed=SEED), make_env(sparse, seed=SEED)]
    try:
        (h, _), (s, _) = (e.reset(seed=SEED) for e in envs)
        goal_h, goal_s = (privileged_state(e.unwrapped)[0, 14:17] for e in envs)
        if task == "RRL-PushCube-HiddenGoal-v1":
            assert np.linalg.norm(goal_h[:2] - goal_s[:2]) > 0.01, "the hidden goal's direction is random"
            _move_goal(envs[1], goal_h[:2])
            s = envs[1].unwrapped.get_obs()[0].numpy()
        for t in range(50):
            assert h.shape == (size,)
            np.testing.assert_array_equal(h, s[keep], err_msg=f"step {t}")
            ph, ps = (privileged_state(e.unwrapped)[0] for e in envs)
            np.testing.assert_array_equal(ph, ps)
            action = scripted.action(ph, task)
            (h, rh, th, uh, ih), (s, rs, ts, us, is_) = (e.step(action) for e in envs)
            assert (rh, th, uh, ih["success"]) == (rs, ts, us, is_["success"])
            if th or uh:
                break
        assert ih["success"]
    finally:
        for e in envs:
            e.close()


def _pixel(params: dict, p_world: np.ndarray) -> np.ndarray:
    """Column and row ``(2,)`` of world point ``p_world`` (m) in a ManiSkill camera (OpenCV convention)."""
    extrinsic, intrinsic = params["extrinsic_cv"][0].numpy(), params["intrinsic_cv"][0].numpy()
    uvw = intrinsic @ (extrinsic @ np.r_[p_world, 1.0])
    return uvw[:2] / uvw[2]


@pytest.mark.slow
@pytest.mark.parametrize("task", HIDDEN)
def test_teacher_image_shows_the_goal(task, warm_renderer):
    """The teacher camera renders the goal region: with the goal moved by hand (nothing else changes, no env
    step), the image changes, and only at the goal's old and new places (within the region's projected radius
    of the projected centres); both places hold pixels that changed.
    """
    from robot_rl.envs import make_env, privileged_state
    from robot_rl.envs.common import render_teacher_images

    env = make_env(task, seed=SEED, teacher_image_size=(224, 224))
    try:
        env.reset(seed=SEED)
        u = env.unwrapped
        params = u.scene.human_render_cameras["render_camera"].get_params()
        old = privileged_state(u)[0, 14:17].astype(np.float64)
        before = render_teacher_images(u)[0]
        obs_before = u.get_obs()[0].numpy()
        _move_goal(env, MOVED_GOAL_XY[task])
        new = privileged_state(u)[0, 14:17].astype(np.float64)
        after = render_teacher_images(u)[0]
        np.testing.assert_array_equal(u.get_obs()[0].numpy(), obs_before)  # the policy sees no change
    finally:
        env.close()
    changed = np.argwhere(np.any(before != after, axis=-1))[:, ::-1]  # (k, 2) column, row
    assert len(changed) > 50, "the teacher image does not show the goal"
    radius = u.goal_radius
    centres, radii = [], []
    for g in (old, new):
        c = _pixel(params, g)
        rim = [_pixel(params, g + d) for d in ([radius, 0, 0], [-radius, 0, 0], [0, radius, 0], [0, -radius, 0])]
        centres.append(c)
        radii.append(max(np.linalg.norm(r - c) for r in rim))
    dist = np.stack([np.linalg.norm(changed - c, axis=1) / r for c, r in zip(centres, radii)])  # (2, k)
    assert np.all(dist.min(axis=0) <= 1.2), "pixels changed away from the goal's two places"
    assert np.sum(dist[0] <= 1.0) > 10 and np.sum(dist[1] <= 1.0) > 10, "the goal left one place and appeared at one"


@pytest.mark.slow
@pytest.mark.parametrize("task", HIDDEN)
def test_scripted_teacher_solves_the_hidden_goal_task(task):
    """Teacher as the policy, a few episodes: every step (D = 1) and as vlajs uses it (D = 4, each answer held
    for 4 env steps); the same successes and episode lengths as on the sparse task with the same seeds, where
    the goal is the sparse task's (PickPlaceCube; PushCube's hidden goal lies in a random direction).
    """
    from robot_rl.teachers import ScriptedTeacher
    from robot_rl.teachers.evaluate import run_teacher_as_policy

    sparse = HIDDEN[task][0]
    for period, hold in ((1, False), (4, True)):
        got = run_teacher_as_policy(ScriptedTeacher(control_period_steps=period), task, 3, seed=SEED, hold=hold)
        ref = run_teacher_as_policy(ScriptedTeacher(control_period_steps=period), sparse, 3, seed=SEED, hold=hold)
        assert got["success_rate"] == 1.0, (period, got)
        assert got["invalid_answers"] == 0
        if task != "RRL-PushCube-HiddenGoal-v1":
            assert (got["successes"], got["episode_lengths"]) == (ref["successes"], ref["episode_lengths"])
