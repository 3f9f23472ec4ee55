"""A stand-in for ManiSkill 3.0.1's batched ``BaseEnv`` (``physx_cuda``, many envs) with scripted episodes.

No GPU is here, so the batched path (:class:`~robot_rl.envs.ManiSkillGPUVecEnv`, the episode statistics of
:class:`~robot_rl.algos.GuidedPPO`) is tested and benchmarked on this fake. It keeps the parts of the
``BaseEnv`` API the adapter uses, with ManiSkill's semantics (``mani_skill/envs/sapien_env.py``):

- ``reset(seed=None, options={"env_idx": idx})`` resets only the rows ``idx`` and returns the observations of
  all rows and ``info`` with ``elapsed_steps``, the ``evaluate()`` keys and ``reconfigure``;
- ``step(actions (N, 7))`` increments ``elapsed_steps`` of every row and returns ``(obs (N, D) float32,
  reward (N,) torch.bool (sparse: the success), terminated (N,) bool = success, truncated (N,) all False,
  info)``: ManiSkill applies no time limit in the base env, the adapter does;
- ``num_envs``, ``device``, ``elapsed_steps``, ``single_observation_space``, ``single_action_space``,
  ``unwrapped``, ``render_mode``.

Episodes are scripted: each episode of row ``i`` succeeds at elapsed step ``success_step`` with probability
``success_prob`` (drawn at the episode's reset from the fake's own generator), and otherwise runs until the
adapter's time limit. ``obs[:, 0]`` is the row's episode count, ``obs[:, 1]`` its elapsed steps, the rest 0.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces


class FakeBatchedEnv:
    """``num_envs`` scripted rows in torch tensors on ``device``, batched like ManiSkill's ``BaseEnv``.

    Args:
        num_envs: rows ``N``.
        success_prob: probability that an episode succeeds (at ``success_step``).
        success_step: elapsed step (>= 1) at which a succeeding episode ends, env steps: one for all rows, or
            ``(N,)`` one per row (spreads the episode ends over the steps).
        obs_dim: observation size ``D``.
        seed: seed of the fake's generator (which episodes succeed).
        device: torch device of every tensor it returns.

    Attributes:
        episodes: ``(N,)`` episodes started per row (1 after the first reset).
        will_succeed: ``(N,) bool``, whether each row's current episode succeeds.
        reset_calls: number of ``reset`` calls (full or partial).
    """

    render_mode = None

    def __init__(self, num_envs: int, success_prob: float = 0.0, success_step=10, obs_dim: int = 8,
                 seed: int = 0, device: str | torch.device = "cpu"):
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.success_prob = float(success_prob)
        self.success_step = torch.as_tensor(success_step, dtype=torch.int32).expand(self.num_envs).to(self.device)
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.single_action_space = spaces.Box(-1, 1, (7,), np.float32)
        self._gen = torch.Generator().manual_seed(seed)
        self.elapsed_steps = torch.zeros(self.num_envs, dtype=torch.int32, device=self.device)
        self.episodes = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self.will_succeed = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self._obs = torch.zeros(self.num_envs, obs_dim, dtype=torch.float32, device=self.device)
        self.reset_calls = 0
        self.unwrapped = self

    def _info(self, success: torch.Tensor) -> dict:
        return {"elapsed_steps": self.elapsed_steps.clone(), "success": success,
                "fail": torch.zeros_like(success), "is_grasped": success.clone()}

    def _observe(self) -> torch.Tensor:
        self._obs[:, 0] = self.episodes.to(torch.float32)
        self._obs[:, 1] = self.elapsed_steps.to(torch.float32)
        return self._obs.clone()

    def reset(self, seed=None, options: dict | None = None):
        """Reset rows ``options["env_idx"]`` (all rows without it); ``seed`` reseeds the generator."""
        if seed is not None:
            self._gen.manual_seed(int(np.asarray(seed).ravel()[0]))
        idx = (options or {}).get("env_idx")
        idx = torch.arange(self.num_envs, device=self.device) if idx is None else torch.as_tensor(idx).to(self.device)
        self.reset_calls += 1
        self.elapsed_steps[idx] = 0
        self.episodes[idx] += 1
        draw = torch.rand(len(idx), generator=self._gen).to(self.device) < self.success_prob
        self.will_succeed[idx] = draw
        info = self._info(torch.zeros(self.num_envs, dtype=torch.bool, device=self.device))
        info["reconfigure"] = False
        return self._observe(), info

    def step(self, actions: torch.Tensor):
        """One step of every row; ``actions`` must be ``(N, 7) float32`` on ``device``."""
        assert tuple(actions.shape) == (self.num_envs, 7) and actions.dtype == torch.float32
        assert actions.device.type == self.device.type
        self.elapsed_steps += 1
        success = self.will_succeed & (self.elapsed_steps == self.success_step)
        info = self._info(success)
        return (self._observe(), success.clone(), success.clone(),
                torch.zeros_like(success), info)

    def close(self) -> None:
        """Nothing to release."""
