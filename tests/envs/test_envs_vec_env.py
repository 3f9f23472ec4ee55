"""make_vec_env on the CPU sim: SB3 VecEnv semantics, seeding, teacher views, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor, VecNormalize

from robot_rl.envs import TeacherView, get_task, make_env, make_vec_env, privileged_state
from robot_rl.envs.vec_env import PRIVILEGED_STATE_INFO_KEY, CPUSubprocVecEnv

PUSH = "RRL-PushCube-Sparse-v1"


def _random_actions(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(-1, 1, (n, 7)).astype(np.float32)


@pytest.fixture(scope="module")
def venv5():
    """2 in-process PushCube envs with a 5-step horizon and a small teacher camera."""
    venv = make_vec_env(PUSH, num_envs=2, max_episode_steps=5, seed=7, in_process=True, teacher_image_size=(64, 80))
    yield venv
    venv.close()


def test_in_process_vec_env_spaces_and_types(venv5):
    assert isinstance(venv5, DummyVecEnv)
    assert venv5.num_envs == 2
    assert venv5.observation_space.shape == (35,)
    assert venv5.action_space.shape == (7,)
    assert venv5.task == get_task("PushCube-v2")
    obs = venv5.reset()
    assert obs.shape == (2, 35) and obs.dtype == np.float32


def test_time_limit_truncation_terminal_observation_and_success_bool(venv5):
    venv5.seed(11)
    venv5.reset()
    rng = np.random.default_rng(0)
    for t in range(1, 11):
        obs, rew, dones, infos = venv5.step(_random_actions(rng, 2))
        assert obs.shape == (2, 35) and rew.shape == (2,)
        for info in infos:
            assert type(info["success"]) is bool
            assert "episode" not in info  # record_metrics=False: no clash with VecMonitor
        if t % 5 == 0:  # random actions never succeed in 5 steps here: pure time-limit ends
            assert dones.all()
            for i, info in enumerate(infos):
                assert info["TimeLimit.truncated"] is True
                term = info["terminal_observation"]
                assert term.shape == (35,) and term.dtype == np.float32
                assert not np.allclose(term, obs[i])  # obs is already the next episode's first
                assert info["elapsed_steps"] == 5
        else:
            assert not dones.any()
            for info in infos:
                assert info["TimeLimit.truncated"] is False and "terminal_observation" not in info
    assert rew.dtype.kind == "f" and set(np.unique(rew)) <= {0.0, 1.0}


def test_success_terminates_with_reward_one(scripted):
    """Success ends the episode (ManiSkill terminates on info["success"]), not a truncation."""
    venv = make_vec_env(PUSH, num_envs=1, seed=0)  # num_envs=1 -> in process
    try:
        venv.reset()
        for t in range(50):
            s = venv.teacher_view([0], with_image=False).states
            _, rew, dones, infos = venv.step(scripted.push_action(s[0])[None])
            if dones[0]:
                break
        assert infos[0]["success"] is True
        assert infos[0]["TimeLimit.truncated"] is False
        assert rew[0] == 1.0
        assert t + 1 < 50
        assert "terminal_observation" in infos[0]
    finally:
        venv.close()


def test_seeding_reproducible_and_envs_differ():
    """Same seed -> identical episodes, also after auto-resets (ManiSkill's unseeded resets use
    torch's global RNG, randomly seeded per process, unless enhanced_determinism is on); sub-envs
    get different episodes.
    """

    def rollout(seed: int) -> np.ndarray:
        venv = make_vec_env(PUSH, num_envs=2, max_episode_steps=3, seed=seed, in_process=True)
        rng = np.random.default_rng(1)
        obs = [venv.reset()]
        for _ in range(7):
            obs.append(venv.step(_random_actions(rng, 2))[0])
        venv.close()
        return np.stack(obs)

    a, b = rollout(5), rollout(5)
    np.testing.assert_array_equal(a, b)
    # cube xy (obs[28:30] is obj_pose p.xy): env 0 and env 1 differ in every episode.
    for step in (0, 3, 6):
        assert not np.allclose(a[step, 0, 28:30], a[step, 1, 28:30])
    c = rollout(6)
    assert not np.allclose(a[0], c[0])


@pytest.mark.slow
def test_teacher_view_images_only_for_requested_indices(venv5, warm_renderer):
    venv5.reset()
    view = venv5.teacher_view([1], with_image=True)
    assert isinstance(view, TeacherView)
    assert view.images.shape == (1, 64, 80, 3) and view.images.dtype == np.uint8
    assert view.images.std() > 0  # a real picture, not a blank frame
    assert view.states.shape == (1, 38) and view.states.dtype == np.float32
    assert view.instructions == [get_task(PUSH).instruction]
    assert view.task_ids == [PUSH]
    np.testing.assert_array_equal(view.states[0], privileged_state(venv5.envs[1].unwrapped)[0])

    view = venv5.teacher_view([1, 0], with_image=True)
    assert view.images.shape == (2, 64, 80, 3)
    np.testing.assert_array_equal(view.states[0], privileged_state(venv5.envs[1].unwrapped)[0])
    np.testing.assert_array_equal(view.states[1], privileged_state(venv5.envs[0].unwrapped)[0])

    view = venv5.teacher_view([0], with_image=False)
    assert view.images is None and view.states.shape == (1, 38)

    empty = venv5.teacher_view([], with_image=True)
    assert empty.images.shape == (0, 64, 80, 3) and empty.states.shape == (0, 38) and len(empty) == 0
    with pytest.raises(IndexError):
        venv5.teacher_view([2], with_image=False)


def test_teacher_view_renders_only_when_asked(venv5, monkeypatch):
    import robot_rl.envs.vec_env as vec_env_mod

    calls = []
    real = vec_env_mod.render_teacher_images
    monkeypatch.setattr(vec_env_mod, "render_teacher_images", lambda env, *a: calls.append(env) or real(env, *a))
    venv5.teacher_view([0, 1], with_image=False)
    assert calls == []


def test_vecnormalize_forwards_teacher_view(venv5):
    wrapped = VecNormalize(VecMonitor(venv5), norm_obs=True, norm_reward=False)
    wrapped.reset()
    view = wrapped.teacher_view([0], with_image=False)
    # Raw privileged state, not normalized observations.
    np.testing.assert_array_equal(view.states[0], privileged_state(venv5.envs[0].unwrapped)[0])
    assert wrapped.task.env_id == PUSH


def test_make_env_single_env_api():
    env = make_env("PushCube-v2", seed=4, max_episode_steps=4)
    try:
        obs, info = env.reset()
        assert obs.shape == (35,) and obs.dtype == np.float32 and info["success"] is False
        for t in range(4):
            obs, rew, terminated, truncated, info = env.step(env.action_space.sample())
            assert type(rew) is float and type(info["success"]) is bool
        assert truncated and not terminated
        env2 = make_env("PushCube-v2", seed=4)
        np.testing.assert_array_equal(env2.reset()[0], env.reset(seed=4)[0])
        env2.close()
    finally:
        env.close()


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="physx_cpu.*physx_cuda"):
        make_vec_env(PUSH, sim_backend="warp")
    with pytest.raises(ValueError, match="known tasks"):
        make_vec_env("NoSuchTask-v0")
    with pytest.raises(ValueError, match="reward_mode"):
        make_vec_env(PUSH, reward_mode="shaped", in_process=True)
    with pytest.raises(ValueError, match="num_envs"):
        make_vec_env(PUSH, num_envs=0)


@pytest.mark.slow
def test_subprocess_vec_env_end_to_end():
    """2 worker processes: time limit, terminal_observation, success bool, teacher view over env_method."""
    venv = make_vec_env(PUSH, num_envs=2, max_episode_steps=5, seed=3, teacher_image_size=(48, 64))
    try:
        assert isinstance(venv, SubprocVecEnv)
        wrapped = VecNormalize(venv)
        wrapped.reset()
        rng = np.random.default_rng(0)
        for t in range(1, 6):
            _, _, dones, infos = wrapped.step(_random_actions(rng, 2))
            assert all(type(i["success"]) is bool for i in infos)
        assert dones.all() and all(i["TimeLimit.truncated"] for i in infos)
        assert all(i["terminal_observation"].shape == (35,) for i in infos)
        view = wrapped.teacher_view([1], with_image=True)
        assert view.images.shape == (1, 48, 64, 3) and view.images.dtype == np.uint8
        assert view.states.shape == (1, 38) and view.task_ids == [PUSH]
        assert wrapped.teacher_view([0, 1], with_image=False).images is None
        # Each worker runs torch with one thread (FACTS.md: oversubscription made it >10x slower).
        infos = venv.env_method("process_info")
        assert [i["torch_num_threads"] for i in infos] == [1, 1]
        assert len({i["pid"] for i in infos} | {os.getpid()}) == 3
    finally:
        venv.close()


def _round_trip_states(venv) -> np.ndarray:
    """The states as the workers compute them now (the path teacher_view took before the stream)."""
    return np.stack([r[1] for r in venv.env_method("teacher_observation", False)]).astype(np.float32)


class _CountCalls:
    """Counts a vec env's env_method calls (a worker round trip each) while passing them on."""

    def __init__(self, venv):
        self.calls, self._real = [], venv.env_method
        venv.env_method = self

    def __call__(self, name, *args, **kwargs):
        self.calls.append(name)
        return self._real(name, *args, **kwargs)


@pytest.mark.slow
def test_streamed_states_equal_the_worker_round_trip_through_auto_resets():
    """2 worker processes, 4-step episodes: with the stream on, teacher_view(with_image=False) makes no worker call
    and its states equal a fresh env_method("teacher_observation") at every step, also right after each automatic
    reset (from SB3's reset_infos); the step info at an episode's end holds the terminal state.
    """
    venv = make_vec_env(PUSH, num_envs=2, max_episode_steps=4, seed=3, teacher_image_size=(32, 32))
    try:
        assert isinstance(venv, CPUSubprocVecEnv)
        venv.stream_privileged_states(True)
        calls = _CountCalls(venv)
        venv.reset()
        rng = np.random.default_rng(0)
        ends = 0
        for t in range(11):
            if t:
                _, _, dones, infos = venv.step(_random_actions(rng, 2))
            n_calls = len(calls.calls)
            view = venv.teacher_view([1, 0], with_image=False)
            assert len(calls.calls) == n_calls  # served from the stream
            truth = _round_trip_states(venv)
            np.testing.assert_array_equal(view.states, truth[[1, 0]])
            assert view.states.dtype == np.float32 and view.task_ids == [PUSH] * 2
            assert view.instructions == [get_task(PUSH).instruction] * 2
            if t and dones.any():
                ends += 1
                for i in np.flatnonzero(dones):
                    terminal = infos[i][PRIVILEGED_STATE_INFO_KEY]
                    assert not np.array_equal(terminal, truth[i])  # the episode before the reset
                    np.testing.assert_array_equal(venv.reset_infos[i][PRIVILEGED_STATE_INFO_KEY], truth[i])
            elif t:
                # A worker sends its last reset info again with every step: without the state after that reset.
                assert all(PRIVILEGED_STATE_INFO_KEY not in info for info in venv.reset_infos)
        assert ends == 2
        # With an image the workers are still asked (and their states are the same).
        view = venv.teacher_view([0], with_image=True)
        assert calls.calls[-1] == "teacher_observation" and view.images.shape == (1, 32, 32, 3)
        np.testing.assert_array_equal(view.states, _round_trip_states(venv)[[0]])
        # A method that may change the state makes the cache stale: the next view asks the workers.
        venv.env_method("process_info")
        n_calls = len(calls.calls)
        venv.teacher_view([0], with_image=False)
        assert len(calls.calls) == n_calls
        venv.env_method("reset")
        n_calls = len(calls.calls)
        np.testing.assert_array_equal(venv.teacher_view([0, 1], with_image=False).states, _round_trip_states(venv))
        assert calls.calls[n_calls] == "teacher_observation"
    finally:
        venv.close()


def test_stream_off_by_default_and_it_changes_no_episode():
    """In process: off, no state in the infos and every view is an env call; on, the same observations and states
    for the same seed and actions (reading the state changes nothing in the simulator), and VecMonitor's episode
    statistics stay without it.
    """

    def run(stream: bool):
        venv = VecMonitor(make_vec_env(PUSH, num_envs=2, max_episode_steps=3, seed=5, in_process=True))
        if stream:
            venv.stream_privileged_states(True)
        calls = _CountCalls(venv.venv)
        rng = np.random.default_rng(1)
        obs, states, infos = [venv.reset()], [venv.teacher_view([0, 1], with_image=False).states], []
        for _ in range(7):
            o, _, _, info = venv.step(_random_actions(rng, 2))
            obs.append(o)
            states.append(venv.teacher_view([0, 1], with_image=False).states)
            infos.extend(info)
        venv.close()
        return np.stack(obs), np.stack(states), infos, calls.calls

    obs_off, states_off, infos_off, calls_off = run(False)
    obs_on, states_on, infos_on, calls_on = run(True)
    np.testing.assert_array_equal(obs_on, obs_off)
    np.testing.assert_array_equal(states_on, states_off)
    assert calls_off == ["teacher_observation"] * 8 and calls_on == []
    assert not any(PRIVILEGED_STATE_INFO_KEY in i for i in infos_off)
    assert all(i[PRIVILEGED_STATE_INFO_KEY].shape == (38,) for i in infos_on)
    episodes = [i["episode"] for i in infos_on if "episode" in i]
    assert len(episodes) == 4 and all(set(e) == {"r", "l", "t"} for e in episodes)


@pytest.mark.slow
def test_missing_vulkan_driver_gives_setup_hint():
    """With no Vulkan ICD, env creation fails with a RuntimeError that points to scripts/setup.sh."""
    code = textwrap.dedent(
        """
        import robot_rl.envs as E
        for make in (lambda: E.make_env("PushCube-v2"), lambda: E.make_vec_env("PushCube-v2", num_envs=2)):
            try:
                make()
            except RuntimeError as exc:
                assert "scripts/setup.sh" in str(exc), str(exc)
                print("HINT-OK")
            else:
                raise SystemExit("no error")
        """
    )
    env = dict(os.environ, VK_ICD_FILENAMES="/nonexistent/robot_rl_test_icd.json")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.count("HINT-OK") == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stdout


def test_horizon_longer_than_registered_default():
    """ManiSkill's TimeLimitWrapper picks max_episode_steps out of gym.make's frame (a hack in
    mani_skill/utils/registration.py); pin that a longer horizon than the registered 50 holds.
    """
    env = make_env("PushCube-v2", seed=0, max_episode_steps=60)
    try:
        env.reset()
        zero = np.zeros(7, np.float32)
        for t in range(1, 61):
            _, _, terminated, truncated, _ = env.step(zero)
            if terminated or truncated:
                break
        assert (t, terminated, truncated) == (60, False, True)
    finally:
        env.close()
