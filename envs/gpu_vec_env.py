"""SB3 ``VecEnv`` adapter over ManiSkill's batched (GPU-sim) env.

ManiSkill 3.0.1 ships ``mani_skill/vector/wrappers/sb3.py``, but it loses the time limit when
wrapped around ``env.unwrapped``, crashes on dict observations and emits an ``episode`` info dict
every step (FACTS.md, upstream issue haosulab/ManiSkill#1404). This adapter does the SB3 VecEnv
contract itself on top of the batched ``BaseEnv``: time limit, partial auto-reset of only the done
envs, per-env ``terminal_observation``, ``TimeLimit.truncated`` and ``success``, numpy out.

It is written for ``physx_cuda`` (tensors live on the GPU; everything returned goes through
``.cpu().numpy()``) and tested on ``physx_cpu`` with ``num_envs=1``, which the batched API supports.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from .common import (
    SIM_BACKENDS,
    TeacherView,
    check_view_indices,
    empty_view,
    env_kwargs,
    make_maniskill_env,
    render_teacher_images,
)
from .tasks import REWARD_MODES, TaskSpec, get_task, privileged_state

__all__ = ["ManiSkillGPUVecEnv"]


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class ManiSkillGPUVecEnv(VecEnv):
    """``num_envs`` robot_rl envs batched in one ManiSkill sim, as an SB3 ``VecEnv``.

    Step semantics match the CPU path (:func:`robot_rl.envs.make_vec_env` with ``physx_cpu``):
    ``done = terminated (success) or truncated (elapsed_steps >= max_episode_steps)``;
    ``info["TimeLimit.truncated"] = truncated and not terminated``; done envs (only those) are
    reset in the same step and their last observation is in ``info["terminal_observation"]``
    (``(D,) float32``); ``info["success"]`` is a python bool; rewards are ``(num_envs,) float32``
    (the sparse reward arrives as ``torch.bool``). ManiSkill's ``evaluate()`` extras (e.g.
    PickCube's ``is_grasped``) are copied into each info as python scalars.

    Seeding: ``seed(s)`` then ``reset()`` seeds sub-env ``i`` with ``s + i`` (the SB3 convention).
    Partial resets draw a fresh seed for torch's global RNG from a generator seeded by ``s``,
    inside ``torch.random.fork_rng`` so the trainer's RNG is untouched. We do not use ManiSkill's
    ``enhanced_determinism`` here: on a partial reset it seeds torch with env 0's episode seed
    (``BaseEnv.reset`` uses ``_episode_seed[0]``), which stays the same while env 0 runs on, so
    every partial reset of the other envs would replay the same cube positions.

    Args:
        task: env id, paper name or TaskSpec.
        num_envs: number of batched envs (``physx_cpu`` supports only 1).
        sim_backend: ``"physx_cuda"`` (NVIDIA GPU) or ``"physx_cpu"`` (tests, ``num_envs=1``).
        reward_mode, max_episode_steps: None = the TaskSpec's default.
        teacher_image_size: ``(H, W)`` of the teacher camera.

    Raises:
        ValueError: unknown task/backend/reward mode, or ``physx_cpu`` with ``num_envs != 1``.
        RuntimeError: ``physx_cuda`` without CUDA, or no Vulkan device (points to scripts/setup.sh).
    """

    def __init__(
        self,
        task: str | TaskSpec,
        num_envs: int,
        sim_backend: str = "physx_cuda",
        reward_mode: str | None = None,
        max_episode_steps: int | None = None,
        teacher_image_size: tuple[int, int] = (224, 224),
    ):
        spec = get_task(task)
        if sim_backend not in SIM_BACKENDS:
            raise ValueError(f"unknown sim_backend {sim_backend!r}; allowed: {', '.join(SIM_BACKENDS)}")
        if sim_backend == "physx_cpu" and num_envs != 1:
            raise ValueError("sim_backend 'physx_cpu' runs one env per process: use num_envs=1, or make_vec_env")
        if sim_backend == "physx_cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "sim_backend 'physx_cuda' needs an NVIDIA GPU with CUDA, and torch sees none; "
                "use sim_backend='physx_cpu' (one process per env)"
            )
        reward_mode = reward_mode or spec.reward_mode
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"unknown reward_mode {reward_mode!r}; allowed: {', '.join(REWARD_MODES)}")
        max_episode_steps = int(max_episode_steps or spec.max_episode_steps)
        env = make_maniskill_env(
            spec.env_id,
            **env_kwargs(
                reward_mode=reward_mode,
                max_episode_steps=max_episode_steps,
                teacher_image_size=teacher_image_size,
                sim_backend=sim_backend,
                num_envs=num_envs,
            ),
        )
        self._setup(env, spec, sim_backend, max_episode_steps, teacher_image_size)

    @classmethod
    def from_env(
        cls,
        env: Any,
        task: str | TaskSpec,
        max_episode_steps: int | None = None,
        teacher_image_size: tuple[int, int] = (224, 224),
    ) -> "ManiSkillGPUVecEnv":
        """Adapt an already made batched env (``gym.make(env_id, num_envs=N, obs_mode="state", ...)``)
        of ``task``; ``teacher_image_size`` must match the human-render camera it was made with.
        """
        self = cls.__new__(cls)
        spec = get_task(task)
        backend = getattr(getattr(env.unwrapped, "backend", None), "sim_backend", "physx_cuda")
        self._setup(env, spec, backend, int(max_episode_steps or spec.max_episode_steps), teacher_image_size)
        return self

    def _setup(self, env: Any, spec: TaskSpec, sim_backend: str, max_episode_steps: int, teacher_image_size) -> None:
        self.task = spec
        self.sim_backend = sim_backend
        self.max_episode_steps = max_episode_steps
        self.teacher_image_size = tuple(int(x) for x in teacher_image_size)
        self._env = env
        # The time limit is applied here on base.elapsed_steps, not by ManiSkill's TimeLimitWrapper
        # (issue #1404: it is lost when wrapping env.unwrapped).
        self._base = env.unwrapped
        self._device = torch.device(self._base.device)
        self._reset_rng = np.random.default_rng()
        self._actions: torch.Tensor | None = None
        super().__init__(self._base.num_envs, self._base.single_observation_space, self._base.single_action_space)

    # --------------------------------------------------------------------------------------- #
    # VecEnv API
    # --------------------------------------------------------------------------------------- #
    @property
    def unwrapped_env(self):
        """The batched ManiSkill ``BaseEnv``."""
        return self._base

    def _fork_rng_reset(self, **kwargs: Any):
        devices = [self._device] if self._device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(self._reset_rng.integers(2**31)))
            return self._base.reset(**kwargs)

    def reset(self) -> VecEnvObs:
        """Reset every env (seeded by ``seed()`` if it was called); ``(num_envs, D) float32``."""
        seeds = self._seeds
        if all(s is not None for s in seeds):
            self._reset_rng = np.random.default_rng([int(s) for s in seeds])
            # BaseEnv.reset seeds torch inside fork_rng itself when given seeds.
            obs, info = self._base.reset(seed=[int(s) for s in seeds])
        else:
            obs, info = self._fork_rng_reset()
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = self._split_info(info)
        return _to_numpy(obs).astype(np.float32, copy=False)

    def step_async(self, actions: np.ndarray) -> None:
        """Store ``(num_envs, 7)`` actions (numpy or torch) for :meth:`step_wait`."""
        if not isinstance(actions, torch.Tensor):
            actions = np.asarray(actions)
        act = torch.as_tensor(actions, dtype=torch.float32, device=self._device)
        self._actions = act.reshape(self.num_envs, -1)

    def step_wait(self) -> VecEnvStepReturn:
        """Step the batch; done envs are reset in place and their infos carry ``terminal_observation``."""
        assert self._actions is not None, "step_async must be called before step_wait"
        obs, reward, terminated, _, info = self._base.step(self._actions)
        self._actions = None
        n = self.num_envs
        terminated = torch.as_tensor(terminated, device=self._device).reshape(n).bool()
        truncated = self._base.elapsed_steps.reshape(n) >= self.max_episode_steps
        dones_t = terminated | truncated
        dones = _to_numpy(dones_t)
        term_np = _to_numpy(terminated)
        trunc_np = _to_numpy(truncated)
        rewards = _to_numpy(torch.as_tensor(reward).reshape(n).to(torch.float32))
        obs_np = _to_numpy(obs).astype(np.float32, copy=True)
        infos = self._split_info(info)
        for i in range(n):
            infos[i]["TimeLimit.truncated"] = bool(trunc_np[i] and not term_np[i])
        if dones.any():
            env_idx = torch.nonzero(dones_t).flatten()
            reset_obs, reset_info = self._fork_rng_reset(options=dict(env_idx=env_idx))
            reset_obs = _to_numpy(reset_obs).astype(np.float32, copy=False)
            reset_infos = self._split_info(reset_info)
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = obs_np[i].copy()
                self.reset_infos[i] = reset_infos[i]
            # reset() returns observations of all envs; keep the stepped ones for the others.
            obs_np = np.where(dones[:, None], reset_obs, obs_np)
        return obs_np, rewards, dones.astype(bool), infos

    def _split_info(self, info: dict) -> list[dict[str, Any]]:
        """Batched ManiSkill info -> one dict of python scalars / numpy arrays per env."""
        n = self.num_envs
        out: list[dict[str, Any]] = [{} for _ in range(n)]
        for key, value in info.items():
            arr = _to_numpy(value)
            if arr.ndim >= 1 and arr.shape[0] == n:
                for i in range(n):
                    out[i][key] = arr[i].item() if arr[i].ndim == 0 else arr[i]
            elif arr.ndim == 0:
                for i in range(n):
                    out[i][key] = arr.item()
        for i in range(n):
            out[i]["success"] = out[i]["is_success"] = bool(out[i].get("success", False))  # SB3 reads is_success
        return out

    def close(self) -> None:
        """Close the batched ManiSkill env."""
        self._env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute of the one batched env (or of this adapter), once per index."""
        value = getattr(self._base, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Sets the attribute on the one batched env (shared by all indices)."""
        setattr(self._base, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Calls the method ONCE on the batched env and returns its result once per index."""
        result = getattr(self._base, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """Always False: the one batched env has no per-env gymnasium wrappers."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Teacher-camera images of all envs, ``(H, W, 3) uint8`` each."""
        return list(render_teacher_images(self._base))

    # --------------------------------------------------------------------------------------- #
    # Teacher view
    # --------------------------------------------------------------------------------------- #
    def stream_privileged_states(self, on: bool = True) -> None:
        """Nothing to do here: :meth:`teacher_view` reads the states from the batched sim in this process, with no
        worker round trip to save (the CPU vec envs' method of this name streams them from their workers).
        """

    def teacher_view(self, indices: Sequence[int], with_image: bool = True) -> TeacherView:
        """The teacher's view of sub-envs ``indices`` (in that order).

        On ``physx_cuda`` ManiSkill's parallel renderer captures all sub-scenes in one call, so
        the render cost does not shrink with ``len(indices)``; nothing is rendered when
        ``with_image`` is False.

        Returns:
            :class:`TeacherView`: images ``(k, H, W, 3) uint8`` or None, states ``(k, 38) float32``.

        Raises:
            IndexError: an index outside ``[0, num_envs)``.
        """
        idx = check_view_indices(indices, self.num_envs)
        if not idx:
            return empty_view(self.teacher_image_size, with_image)
        k = len(idx)
        states = privileged_state(self._base)[idx]
        images = render_teacher_images(self._base, idx) if with_image else None
        return TeacherView(
            images=images,
            instructions=[self.task.instruction] * k,
            states=states,
            task_ids=[self.task.env_id] * k,
        )
