"""The one rollout loop (robot_rl.rollout) in real ManiSkill: seeds per episode, results, the actor contract."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.rollout import EpisodeResult, RolloutResult, rollout

pytestmark = pytest.mark.slow


class StandStill:
    """Zero motion, gripper open; counts its calls."""

    def __init__(self):
        self.resets = self.calls = 0
        self.states = []

    def reset(self):
        self.resets += 1

    def act(self, obs, view):
        self.calls += 1
        self.states.append(view.states[0].copy())
        assert obs.shape == (1, 35) and view.task_ids == ["RRL-PushCube-Sparse-v1"]
        return np.array([[0, 0, 0, 0, 0, 0, 1.0]], dtype=np.float32)


def test_episodes_are_seeded_one_by_one_and_reported():
    from robot_rl.envs import make_vec_env

    venv = make_vec_env("PushCube-v2", num_envs=1, max_episode_steps=5, seed=0, in_process=True)
    try:
        actor = StandStill()
        first = rollout(venv, actor, 3, seed=40)
        other = StandStill()
        rollout(venv, other, 1, seed=41)
        with pytest.raises(ValueError, match="episodes must be >= 1"):
            rollout(venv, actor, 0, seed=0)
    finally:
        venv.close()
    assert [e.seed for e in first.episodes] == [40, 41, 42] and [e.length for e in first.episodes] == [5, 5, 5]
    assert actor.resets == 3 and actor.calls == 15
    assert first.success_rate == 0.0 and not any(e.grasped for e in first.episodes)
    # episode 41 is the same scene whichever rollout runs it (its cube where the other one's was)
    np.testing.assert_array_equal(actor.states[5][7:10], other.states[0][7:10])
    s = first.summary()
    assert s["grasp_rate"] == 0.0 and 0.0 < s["mean_closest_approach_m"] < 0.5 and s["mean_length"] == 5
    assert "placed_rate" not in s  # PushCube's evaluate() reports no is_obj_placed


def test_pickcube_reports_placement_and_the_arm_static_at_the_goal():
    """The scripted teacher, held for D = 4 as training uses it, solves PickCube seed 0: the cube was at the goal,
    and the arm was static there at the end (success needs both).
    """
    from robot_rl.teachers import ScriptedTeacher
    from robot_rl.teachers.evaluate import run_teacher_as_policy

    result = run_teacher_as_policy(ScriptedTeacher(control_period_steps=4), "PickCube-v2", 1, seed=0, hold=True)
    assert result["successes"] == [True] and result["grasp_rate"] == 1.0
    assert result["placed_rate"] == 1.0 and 0.0 < result["static_when_placed"] <= 1.0


def test_a_vec_env_of_two_envs_is_refused():
    class Two:
        num_envs = 2

    with pytest.raises(ValueError, match="vec env of 1 env, got 2"):
        rollout(Two(), StandStill(), 1, seed=0)


def test_video_frames_are_labelled_per_episode():
    """Each frame gets its episode's label (PIL text in a box at the top left) and nothing else changes; identical
    frames of two episodes, or two steps of one, get different labels.
    """
    grey = np.full((224, 224, 3), 128, dtype=np.uint8)
    result = RolloutResult([EpisodeResult(10, True, 1.0, 2, False, 0.1), EpisodeResult(11, False, 0.25, 1, False, 0.2)],
                           [grey.copy() for _ in range(3)])
    frames = result.labelled_frames()
    assert len(frames) == 3 and all(f.shape == grey.shape and f.dtype == np.uint8 for f in frames)
    changed = np.argwhere((frames[0] != grey).any(-1))
    assert len(changed) > 100 and changed[:, 0].max() < 224 // 3 and changed[:, 1].max() < 224 - 20
    assert np.array_equal(frames[0][100:], grey[100:])
    assert not np.array_equal(frames[0], frames[1])  # step 1/2 and 2/2 of episode 1
    assert not np.array_equal(frames[1], frames[2])  # episode 1 (success) and episode 2 (failure)
    np.testing.assert_array_equal(result.frames[0], grey)  # the recorded frames are left as they were
    with pytest.raises(ValueError, match="3 frames for episodes of 4 env steps"):
        RolloutResult(result.episodes + [EpisodeResult(12, False, 0.0, 1, False, 0.2)], result.frames).labelled_frames()
