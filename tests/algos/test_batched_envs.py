"""GuidedPPO with many batched envs (issue 17, items 1 and 3), on a fake batched env of scripted episodes.

The fake (``robot_rl.testing.batched_env``) runs under the real adapter (``ManiSkillGPUVecEnv.from_env``) and
SB3's ``VecMonitor``; its episodes succeed early (step ``s``) with a known probability ``q`` and otherwise time
out, so the true per-episode success rate (and mean sparse return) is ``q``. SB3's fixed window of 100 episodes
is shown to read 1.0 at the first rollout, and far from ``q`` later; the episode window is not.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecMonitor

from robot_rl.algos import GuidedPPO
from robot_rl.algos.episode_stats import EpisodeWindow
from robot_rl.envs import ManiSkillGPUVecEnv, TeacherView
from robot_rl.guidance import Guidance, QueryScheduler
from robot_rl.interface import TeacherGroupVecEnv
from robot_rl.testing.batched_env import FakeBatchedEnv
from robot_rl.testing.teachers import NotesTeacher

PUSH = "RRL-PushCube-Sparse-v1"


def _venv(n: int, q: float, success_step: int, horizon: int, cls=ManiSkillGPUVecEnv) -> VecMonitor:
    fake = FakeBatchedEnv(n, success_prob=q, success_step=success_step, seed=1)
    venv = cls.from_env(fake, PUSH, max_episode_steps=horizon)
    venv.seed(0)
    return VecMonitor(venv)


def test_window_is_unbiased_where_sb3s_100_episodes_are_not():
    """1024 envs, n_steps 32, horizon 50, q = 0.05 at step 10 (the issue's PushCube numbers)."""
    n, n_steps, q = 1024, 32, 0.05
    venv = _venv(n, q, success_step=10, horizon=50)
    venv.reset()
    window, sb3 = EpisodeWindow(n), deque(maxlen=100)  # SB3's ep_success_buffer (stats_window_size = 100)
    act = np.zeros((n, 7), np.float32)
    old, new = [], []
    for _ in range(10):
        window.begin_rollout()
        for _ in range(n_steps):
            _, rew, dones, infos = venv.step(act)
            window.add(infos, dones)
            sb3.extend(infos[i]["is_success"] for i in np.flatnonzero(dones))  # SB3's _update_info_buffer
        stats = window.end_rollout()
        old.append(float(np.mean(sb3)) if sb3 else None)
        new.append(None if stats is None else stats.success_rate)
        if stats is not None:  # the sparse return is the success
            assert stats.mean_return == pytest.approx(stats.success_rate)
            assert stats.rollouts <= 2 and stats.episodes >= n
    venv.close()
    # The old bias: the first rollout's 100 episodes are all early successes; later windows miss the time-outs.
    assert old[0] == 1.0
    assert max(abs(o - q) for o in old if o is not None) > 0.5
    # Gone: nothing until every episode that started in rollout 0 has ended (its last start, at step 31, times
    # out at step 81, in rollout 2), then within 3 sd of binomial noise (sd ~0.007 over >= 1024 episodes) of q.
    assert new[:2] == [None, None] and all(v is not None for v in new[2:])
    assert max(abs(v - q) for v in new[2:]) < 0.021


def test_window_counts_episodes_by_their_start_and_waits_for_them_all():
    """Hand-made ends over 3 envs: a rollout's episodes are reported only once all of them have ended."""
    w = EpisodeWindow(3, min_episodes=2)
    win = {"episode": {"r": 1.0, "l": 2}, "is_success": True}
    fail = {"episode": {"r": 0.0, "l": 5}, "is_success": False}
    w.begin_rollout()  # rollout 0: env 1 succeeds, its next episode also starts in rollout 0
    w.add([{}, win, {}], np.array([False, True, False]))
    assert w.end_rollout() is None and w.mean_return is None
    w.begin_rollout()  # rollout 1: envs 0 and 2 time out; env 1's second episode still runs
    w.add([fail, {}, fail], np.array([True, False, True]))
    assert w.end_rollout() is None
    w.begin_rollout()  # rollout 2: env 1's second episode (started in rollout 0) succeeds: rollout 0 is complete
    w.add([{}, win, {}], np.array([False, True, False]))
    s = w.end_rollout()
    assert (s.episodes, s.rollouts, s.success_rate, s.mean_length) == (4, 1, 0.5, 3.5)
    assert s.infos[0] == {"r": 1.0, "l": 2} and w.mean_return == 0.5
    w.begin_rollout()  # rollout 3: all end; rollouts 1 (envs 0, 2) and 2 (env 1) are complete, newest first
    w.add([win, win, fail], np.array([True, True, True]))
    s = w.end_rollout()
    assert (s.episodes, s.rollouts, s.success_rate) == (3, 2, pytest.approx(2 / 3))
    assert sorted(w._cohorts) == [1, 2]  # rollout 0's cohort is older than the window: dropped
    w.reset()
    w.begin_rollout()
    assert w.end_rollout() is None


class _Recorder(BaseCallback):
    """The success and return buffers the trainer and SB3's logger read at each rollout's end."""

    def __init__(self):
        super().__init__()
        self.success: list[float | None] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buf = self.model.ep_success_buffer
        self.success.append(float(np.mean(buf)) if buf else None)


class _ViewAdapter(ManiSkillGPUVecEnv):
    """The adapter over the fake, with zero privileged states for the teacher (the fake has no ManiSkill scene)."""

    def teacher_view(self, indices, with_image=True):
        k = len(indices)
        return TeacherView(images=None, instructions=["push"] * k, states=np.zeros((k, 38), np.float32),
                           task_ids=[PUSH] * k)


PPO_KW = dict(n_steps=8, batch_size=1024, n_epochs=1, seed=0, device="cpu", policy_kwargs=dict(net_arch=[8]))


def test_guided_ppo_logs_the_window_and_takes_r0_from_the_first_full_one():
    """256 envs, n_steps 8, horizon 12, q = 0.1 at step 3: SB3's PPO reads 1.0 first, GuidedPPO nothing, then ~q;
    the scheduler's reference return r̄₀ is ~q (it was 1.0: Δr̄ could never be positive).
    """
    n, q = 256, 0.1
    plain, rec_plain = PPO("MlpPolicy", _venv(n, q, 3, 12), **PPO_KW), _Recorder()
    plain.learn(6 * 8 * n, callback=rec_plain)
    assert rec_plain.success[0] == 1.0  # the old bias, in SB3 itself

    scheduler = QueryScheduler(n_steps=8, num_envs=n, budget_fraction=0.05, lambda_0=0.0)
    guidance = Guidance(NotesTeacher(), scheduler, n)
    venv = TeacherGroupVecEnv(_venv(n, q, 3, 12, cls=_ViewAdapter), guidance)
    guided, rec = GuidedPPO("MlpPolicy", venv, guidance=guidance, **PPO_KW), _Recorder()
    guided.learn(6 * 8 * n, callback=rec)
    assert guidance.stats.queries > 0
    # Rollout 0's last episodes start at step 7 and time out at step 19, in rollout 2.
    assert rec.success[:2] == [None, None] and all(abs(s - q) < 0.06 for s in rec.success[2:])
    assert scheduler.baseline_return == pytest.approx(rec.success[2], abs=1e-9)


def test_timeout_bootstrap_is_one_batched_forward_with_sb3s_values():
    """1024 envs that time out in the same step (issue 17, item 3): one value forward, SB3's values (SB3 2.9.2
    ``collect_rollouts``: one forward per env) to float32 rounding, and exactly for a single truncated env.
    """
    n = 1024
    venv = _venv(n, 0.0, success_step=1, horizon=3)
    model = GuidedPPO("MlpPolicy", venv, n_steps=4, batch_size=n, seed=0, device="cpu",
                      policy_kwargs=dict(net_arch=[32, 32]))
    venv.reset()
    act = np.zeros((n, 7), np.float32)
    for _ in range(3):
        _, rewards, dones, infos = venv.step(act)
    assert dones.all() and all(i["TimeLimit.truncated"] for i in infos)
    rng = np.random.default_rng(0)
    for i in infos:  # distinct terminal observations
        i["terminal_observation"] = rng.normal(size=i["terminal_observation"].shape).astype(np.float32)
    rewards = rng.normal(size=n).astype(np.float32)
    sb3 = rewards.copy()
    for idx in range(n):  # SB3's loop, as copied in GuidedPPO.collect_rollouts' marked change
        terminal_obs = model.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
        with th.no_grad():
            sb3[idx] += model.gamma * model.policy.predict_values(terminal_obs)[0]
    forwards = []
    predict = model.policy.predict_values
    model.policy.predict_values = lambda obs: forwards.append(len(obs)) or predict(obs)
    batched = rewards.copy()
    np.testing.assert_array_equal(model.bootstrap_timeouts(batched, dones, infos), np.arange(n))
    assert forwards == [n]
    np.testing.assert_allclose(batched, sb3, rtol=0, atol=2e-6)
    assert not np.array_equal(batched, rewards)
    one = np.zeros(n, dtype=bool)
    one[7] = True
    single = rewards.copy()
    model.bootstrap_timeouts(single, one, infos)
    assert single[7] == sb3[7] and np.array_equal(np.delete(single, 7), np.delete(rewards, 7))
    infos[3]["TimeLimit.truncated"] = False  # a success at the time limit is not bootstrapped
    assert 3 not in model.bootstrap_timeouts(rewards.copy(), dones, infos)
    venv.close()
