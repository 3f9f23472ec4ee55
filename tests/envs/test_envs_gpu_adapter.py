"""ManiSkillGPUVecEnv: its VecEnv logic, run on the batched API with physx_cpu and num_envs=1.

No GPU here: physx_cpu supports the batched API with one env, which exercises the same code
(time limit on elapsed_steps, partial auto-reset, terminal_observation, success, numpy out).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

from robot_rl.envs import ManiSkillGPUVecEnv, get_task, make_vec_env, privileged_state

PUSH = "RRL-PushCube-Sparse-v1"


@pytest.fixture(scope="module")
def gpu5():
    venv = ManiSkillGPUVecEnv(PUSH, num_envs=1, sim_backend="physx_cpu", max_episode_steps=5,
                              teacher_image_size=(40, 56))
    yield venv
    venv.close()


def test_adapter_matches_cpu_path_through_truncation(gpu5):
    """Same seed and actions: identical first episode, truncation, terminal_observation and infos."""
    cpu = make_vec_env(PUSH, num_envs=1, max_episode_steps=5, seed=3, in_process=True)
    try:
        gpu5.seed(3)
        og, oc = gpu5.reset(), cpu.reset()
        assert og.dtype == np.float32 and og.shape == (1, 35)
        np.testing.assert_array_equal(og, oc)
        rng = np.random.default_rng(0)
        for t in range(1, 8):
            a = rng.uniform(-1, 1, (1, 7)).astype(np.float32)
            og, rg, dg, ig = gpu5.step(a)
            oc, rc, dc, ic = cpu.step(a)
            assert rg.dtype == np.float32 and rg.shape == (1,)
            np.testing.assert_array_equal(dg, dc)
            np.testing.assert_array_equal(rg, rc)
            assert type(ig[0]["success"]) is bool
            assert ig[0]["TimeLimit.truncated"] is ic[0]["TimeLimit.truncated"]
            assert ig[0]["elapsed_steps"] == ic[0]["elapsed_steps"]
            assert ("terminal_observation" in ig[0]) == ("terminal_observation" in ic[0])
            if t < 5:
                np.testing.assert_array_equal(og, oc)
            if t == 5:
                assert dg[0] and ig[0]["TimeLimit.truncated"] is True
                np.testing.assert_array_equal(ig[0]["terminal_observation"], ic[0]["terminal_observation"])
                assert ig[0]["terminal_observation"].dtype == np.float32
                # auto-reset: the returned obs starts a new episode
                assert not np.allclose(og[0], ig[0]["terminal_observation"])
                assert gpu5.unwrapped_env.elapsed_steps[0].item() == 0
            # (later episodes use different, equally reproducible, reset seeds than the CPU path)
    finally:
        cpu.close()


def test_adapter_success_terminates(scripted):
    venv = ManiSkillGPUVecEnv(PUSH, num_envs=1, sim_backend="physx_cpu")
    try:
        venv.seed(0)
        venv.reset()
        for t in range(50):
            s = venv.teacher_view([0], with_image=False).states
            _, rew, dones, infos = venv.step(scripted.push_action(s[0])[None])
            if dones[0]:
                break
        assert t + 1 < 50
        assert infos[0]["success"] is True and infos[0]["TimeLimit.truncated"] is False
        assert rew[0] == 1.0 and "terminal_observation" in infos[0]
        assert venv.reset_infos[0]["success"] is False  # the auto-reset's info
    finally:
        venv.close()


def test_adapter_reproducible_across_auto_resets():
    def rollout() -> np.ndarray:
        venv = ManiSkillGPUVecEnv(PUSH, num_envs=1, sim_backend="physx_cpu", max_episode_steps=2)
        venv.seed(9)
        obs = [venv.reset()]
        rng = np.random.default_rng(2)
        for _ in range(6):
            obs.append(venv.step(rng.uniform(-1, 1, (1, 7)).astype(np.float32))[0])
        venv.close()
        return np.stack(obs)

    torch.manual_seed(0)
    a = rollout()
    torch.manual_seed(123)  # the adapter must not depend on (or disturb) torch's global RNG
    state = torch.get_rng_state()
    b = rollout()
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0, 0, 28:30], a[2, 0, 28:30])  # new cube position after auto-reset


@pytest.mark.slow
def test_adapter_teacher_view_and_vecnormalize(gpu5, warm_renderer):
    gpu5.reset()
    wrapped = VecNormalize(VecMonitor(gpu5))
    view = wrapped.teacher_view([0], with_image=True)
    assert view.images.shape == (1, 40, 56, 3) and view.images.dtype == np.uint8
    np.testing.assert_array_equal(view.states, privileged_state(gpu5.unwrapped_env))
    assert view.instructions == [get_task(PUSH).instruction] and view.task_ids == [PUSH]
    assert wrapped.teacher_view([0], with_image=False).images is None
    with pytest.raises(IndexError):
        gpu5.teacher_view([1], with_image=False)
    assert gpu5.get_images()[0].shape == (40, 56, 3)


def test_adapter_errors():
    with pytest.raises(ValueError, match="num_envs=1"):
        ManiSkillGPUVecEnv(PUSH, num_envs=2, sim_backend="physx_cpu")
    with pytest.raises(ValueError, match="physx_cpu.*physx_cuda"):
        ManiSkillGPUVecEnv(PUSH, num_envs=1, sim_backend="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="NVIDIA GPU"):
            make_vec_env(PUSH, num_envs=4, sim_backend="physx_cuda")


def test_adapter_vecenv_helpers(gpu5):
    assert gpu5.get_attr("render_mode") == ["rgb_array"]
    assert gpu5.env_is_wrapped(object) == [False]
    assert gpu5.observation_space.shape == (35,) and gpu5.action_space.shape == (7,)


class _FakeBatchedEnv:
    """A 3-env stand-in for ManiSkill's batched BaseEnv with hand-known dynamics.

    obs = [env index, episode number, elapsed steps]. Env 1 succeeds at step 2 of its first
    episode; env 2 succeeds at step 4 (the same step its time limit hits).
    """

    def __init__(self, n: int = 3):
        from gymnasium import spaces

        self.num_envs = n
        self.device = torch.device("cpu")
        self.render_mode = None
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.single_action_space = spaces.Box(-1, 1, (7,), np.float32)
        self.elapsed_steps = torch.zeros(n, dtype=torch.int32)
        self.episode = torch.zeros(n)
        self.reset_calls: list[list[int]] = []
        self.unwrapped = self

    def _obs(self) -> torch.Tensor:
        return torch.stack([torch.arange(self.num_envs).float(), self.episode, self.elapsed_steps.float()], 1)

    def reset(self, seed=None, options=None):
        idx = (options or {}).get("env_idx", torch.arange(self.num_envs))
        self.reset_calls.append([int(i) for i in idx])
        self.elapsed_steps[idx] = 0
        self.episode[idx] += 1
        return self._obs(), {"elapsed_steps": self.elapsed_steps.clone(),
                             "success": torch.zeros(self.num_envs, dtype=torch.bool)}

    def step(self, actions):
        assert tuple(actions.shape) == (self.num_envs, 7) and actions.dtype == torch.float32
        self.elapsed_steps += 1
        i = torch.arange(self.num_envs)
        success = ((i == 1) & (self.elapsed_steps == 2) & (self.episode == 1)) | ((i == 2) & (self.elapsed_steps == 4))
        info = {"elapsed_steps": self.elapsed_steps.clone(), "success": success, "is_grasped": success.clone()}
        return self._obs(), success, success.clone(), torch.zeros_like(success), info


def test_adapter_partial_reset_of_only_done_envs_hand_computed():
    fake = _FakeBatchedEnv()
    venv = ManiSkillGPUVecEnv.from_env(fake, PUSH, max_episode_steps=4)
    venv.seed(0)
    obs = venv.reset()
    assert fake.reset_calls == [[0, 1, 2]]
    np.testing.assert_array_equal(obs, [[0, 1, 0], [1, 1, 0], [2, 1, 0]])
    act = np.zeros((3, 7), np.float32)

    obs, rew, dones, infos = venv.step(act)  # step 1: nothing ends
    assert not dones.any() and rew.dtype == np.float32 and len(fake.reset_calls) == 1

    obs, rew, dones, infos = venv.step(act)  # step 2: env 1 succeeds -> only env 1 resets
    np.testing.assert_array_equal(dones, [False, True, False])
    np.testing.assert_array_equal(rew, [0.0, 1.0, 0.0])
    assert fake.reset_calls[-1] == [1]
    np.testing.assert_array_equal(infos[1]["terminal_observation"], [1, 1, 2])
    np.testing.assert_array_equal(obs, [[0, 1, 2], [1, 2, 0], [2, 1, 2]])  # others keep stepping
    assert infos[1]["success"] is True and infos[1]["TimeLimit.truncated"] is False
    assert infos[1]["is_grasped"] is True and infos[1]["elapsed_steps"] == 2  # an ended episode: all its values
    assert infos[0] == {"success": False, "is_success": False, "TimeLimit.truncated": False}  # running: SB3's keys
    assert infos[0] is not infos[2]
    assert venv.reset_infos[1]["success"] is False

    venv.step(act)  # step 3
    obs, rew, dones, infos = venv.step(act)  # step 4: time limit for envs 0 and 2; env 2 also succeeds
    np.testing.assert_array_equal(dones, [True, False, True])
    assert fake.reset_calls[-1] == [0, 2]
    assert infos[0]["TimeLimit.truncated"] is True  # pure time-limit end
    assert infos[2]["TimeLimit.truncated"] is False  # terminated on success at the limit
    assert infos[2]["success"] is True and rew[2] == 1.0
    assert infos[1]["TimeLimit.truncated"] is False and "elapsed_steps" not in infos[1]
    assert infos[0]["elapsed_steps"] == 4 and type(infos[0]["elapsed_steps"]) is int
    np.testing.assert_array_equal(infos[0]["terminal_observation"], [0, 1, 4])
    np.testing.assert_array_equal(infos[2]["terminal_observation"], [2, 1, 4])
    np.testing.assert_array_equal(obs, [[0, 2, 0], [1, 2, 2], [2, 2, 0]])
    assert all(type(i["success"]) is bool for i in infos)


def test_adapter_full_infos_and_one_copy_a_step_at_1024_envs(monkeypatch):
    """1024 scripted rows (robot_rl.testing.batched_env), about 2% ending at each step: every info has SB3's keys,
    ended ones all the step's values; the step, with its partial reset, crosses to the host in one ``.cpu()``.
    """
    from robot_rl.testing.batched_env import FakeBatchedEnv

    n = 1024
    fake = FakeBatchedEnv(n, success_prob=1.0, success_step=np.arange(n) % 50 + 1)
    venv = ManiSkillGPUVecEnv.from_env(fake, PUSH, max_episode_steps=100)
    venv.seed(0)
    venv.reset()
    assert not venv.full_infos and len(venv.reset_infos) == n and venv.reset_infos[5]["reconfigure"] is False
    calls = []
    real_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: calls.append(tuple(self.shape)) or
                        real_cpu(self, *a, **k))
    act = np.zeros((n, 7), np.float32)
    length = np.arange(n) % 50 + 1  # row i's episodes all succeed at this step
    for t in range(1, 4):
        calls.clear()
        obs, rew, dones, infos = venv.step(act)
        assert len(calls) == 1  # one device-to-host copy
        ended = np.flatnonzero(dones)
        np.testing.assert_array_equal(ended, np.flatnonzero(t % length == 0))
        assert all(infos[i]["success"] is True and infos[i]["elapsed_steps"] == length[i] for i in ended)
        assert all(infos[i]["terminal_observation"][1] == length[i] for i in ended)  # its last elapsed step
        np.testing.assert_array_equal(obs[ended, 1], 0)  # reset in place
        assert all(venv.reset_infos[i]["elapsed_steps"] == 0 for i in ended)
        assert sum(len(i) for i in infos) == 3 * n + 4 * len(ended)  # + elapsed_steps, fail, is_grasped, terminal
    venv.full_infos = True
    _, _, dones, infos = venv.step(act)
    assert all(infos[i]["elapsed_steps"] == 4 % length[i] for i in np.flatnonzero(~dones))


class _Made(Exception):
    """Raised by the stand-in of make_maniskill_env once it has the arguments."""


@pytest.mark.parametrize("needs_image, backend, render_mode", [(False, "none", None),
                                                                (True, "sapien_cuda", "rgb_array")])
def test_gpu_env_asks_for_a_renderer_only_for_a_teacher_that_needs_images(monkeypatch, needs_image, backend,
                                                                          render_mode):
    """The trainer's env stack on physx_cuda (issue 17, item 4), checked on gym.make's arguments (no GPU here)."""
    import robot_rl.envs.gpu_vec_env as gpu_module
    from robot_rl.config import build_config
    from robot_rl.testing.teachers import NotesTeacher
    from robot_rl.trainer import build_env_stack, build_guidance

    made = {}

    def fake_make(env_id, **kwargs):
        made.update(kwargs)
        raise _Made

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_module, "make_maniskill_env", fake_make)
    cfg = build_config({"mode": "vlajs", "env": {"num_envs": 1024, "sim_backend": "physx_cuda"}})
    guidance = build_guidance(cfg, 1024, teacher=NotesTeacher(needs_image=needs_image))
    with pytest.raises(_Made):
        build_env_stack(cfg, guidance=guidance)
    assert made["render_backend"] == backend and made["render_mode"] == render_mode
    assert made["sim_backend"] == "physx_cuda" and made["num_envs"] == 1024
    made.clear()
    with pytest.raises(_Made):  # plain PPO: no teacher, no renderer
        build_env_stack(build_config({"mode": "ppo", "env": {"num_envs": 1024, "sim_backend": "physx_cuda"}}))
    assert made["render_backend"] == "none"


def test_no_vulkan_message_names_the_driver_of_the_backend(monkeypatch):
    """The CPU sim: lavapipe (scripts/setup.sh); on physx_cuda: NVIDIA's Vulkan ICD, where lavapipe cannot serve."""
    import gymnasium as gym

    from robot_rl.envs.common import make_maniskill_env

    def no_device(env_id, **kwargs):
        raise RuntimeError("failed to find a rendering device")

    monkeypatch.setattr(gym, "make", no_device)
    with pytest.raises(RuntimeError, match="nvidia_icd.json") as cuda:
        make_maniskill_env(PUSH, sim_backend="physx_cuda", render_backend="none")
    assert "lavapipe (scripts/setup.sh) cannot serve" in str(cuda.value)
    with pytest.raises(RuntimeError, match="run `bash scripts/setup.sh`") as cpu:
        make_maniskill_env(PUSH, sim_backend="physx_cpu")
    assert "nvidia_icd" not in str(cpu.value)


def test_teacher_competence_runs_on_the_gpu_adapter(monkeypatch):
    """Issue 17, item 5: the teacher-as-policy benchmark reaches the GPU adapter (asking for no renderer for a
    teacher that needs no image); checked on gym.make's arguments, since no GPU is here.
    """
    import robot_rl.envs.gpu_vec_env as gpu_module
    from robot_rl.teachers import ScriptedTeacher
    from robot_rl.teachers.evaluate import run_teacher_as_policy

    made = {}

    def fake_make(env_id, **kwargs):
        made.update(kwargs, env_id=env_id)
        raise _Made

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_module, "make_maniskill_env", fake_make)
    with pytest.raises(_Made):
        run_teacher_as_policy(ScriptedTeacher(), PUSH, episodes=2, sim_backend="physx_cuda")
    assert made["sim_backend"] == "physx_cuda" and made["num_envs"] == 1 and made["render_backend"] == "none"
