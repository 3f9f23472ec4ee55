"""GuidedPPO: SB3 PPO plus a teacher-guidance term, ``L = L_PPO + λ_t · L_aux``.

* Teacher targets ``ã_t`` and their validity are named rollout-buffer fields
  (:class:`GuidedRolloutBuffer`, like rsl_rl's ``RolloutStorage.privileged_actions`` and
  sb3-contrib's ``action_masks``).
* Teacher queries happen at rollout time through a callback inside SB3's own
  ``collect_rollouts`` (no copy of it): before each env step the
  :class:`~robot_rl.guidance.collector.Guidance` queries, batched over the envs that the
  scheduler picked, and the step's target is written into the buffer row. Minibatches read it back;
  the teacher is never re-queried per minibatch.
* SB3 has no hook in the PPO loss (a local in ``PPO.train()``), so :meth:`GuidedPPO.train` is a copy of
  SB3 2.9.2's ``PPO.train`` with the changes marked ``# --- robot_rl``. SB3's minor version is pinned
  in pyproject.toml, and ``tests/algos/test_guided_ppo.py`` checks that with ``λ = 0`` GuidedPPO
  reproduces plain PPO's parameters exactly.
* :meth:`GuidedPPO.collect_rollouts` is likewise a copy of SB3 2.9.2's ``OnPolicyAlgorithm.collect_rollouts``
  with one marked change: the time-out bootstrap is one batched value forward for all the envs truncated at a
  step, where SB3 runs one forward per env (SB3 issue #633's bootstrap; with many synchronized envs about 1000
  time out in the same step, issue 17). Its values equal SB3's per-env ones to float32 rounding (a batched matmul
  sums in another order: <= 6e-7 measured) and exactly when one env is truncated.

Aux losses (``aux_loss``): ``"cosine"`` = VLAJS's masked directional loss (Moroncelli et al. 2026) on the
guided ``components`` (the paper's ``pos``, ``rot``; ``grip`` adds a gripper hinge), ``"mse"`` = the RPD baseline
(Jülg et al. 2025). See :mod:`robot_rl.guidance.losses`. Before each update, a guidance with a guard
(``robot_rl/guidance/guard.py``) is given the rollout's alignment scores and may switch itself off.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from functools import partial
from typing import NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from torch.nn import functional as F

from robot_rl.algos.episode_stats import EpisodeWindow
from robot_rl.guidance.collector import Guidance
from robot_rl.guidance.guard import alignment_scores
from robot_rl.guidance.losses import (
    COS_EPS,
    PAPER_COMPONENTS,
    check_components,
    component_cosines,
    directional_cosine_loss,
    grip_agreement,
    mse_loss,
)

AUX_LOSSES = {"cosine": directional_cosine_loss, "mse": mse_loss}


class GuidedRolloutBufferSamples(NamedTuple):
    """SB3's ``RolloutBufferSamples`` plus ``teacher_targets (B, 7)`` and ``teacher_valid (B,)``."""

    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    teacher_targets: th.Tensor
    teacher_valid: th.Tensor


class GuidedRolloutBuffer(RolloutBuffer):
    """A ``RolloutBuffer`` with two named fields per env step.

    * ``teacher_targets``: ``(n_steps, n_envs, action_dim) float32`` per-step teacher targets ``ã_t``;
    * ``teacher_valid``: ``(n_steps, n_envs) float32`` 1 where ``ã_t`` is valid.

    Minibatch order is SB3's (same ``np.random.permutation`` call), so with no valid targets the
    samples equal those of a plain ``RolloutBuffer``.
    """

    def reset(self) -> None:
        """SB3's reset, plus zeroed ``teacher_targets`` and ``teacher_valid`` (no valid target)."""
        super().reset()
        self.teacher_targets = np.zeros((self.buffer_size, self.n_envs, self.action_dim), dtype=np.float32)
        self.teacher_valid = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)

    def set_teacher_row(self, targets: np.ndarray, valid: np.ndarray) -> None:
        """Store the targets ``(n_envs, action_dim)`` and validity ``(n_envs,)`` of the row about to be added."""
        self.teacher_targets[self.pos] = targets
        self.teacher_valid[self.pos] = valid

    def get(self, batch_size: int | None = None) -> Generator[GuidedRolloutBufferSamples, None, None]:
        """SB3's minibatches (same permutation), each with its rows' teacher targets and validity."""
        if not self.generator_ready:
            self.teacher_targets = self.swap_and_flatten(self.teacher_targets)
            self.teacher_valid = self.swap_and_flatten(self.teacher_valid)
        yield from super().get(batch_size)  # type: ignore[misc]

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> GuidedRolloutBufferSamples:
        base = super()._get_samples(batch_inds, env)
        extra = (self.teacher_targets[batch_inds], self.teacher_valid[batch_inds].flatten())
        return GuidedRolloutBufferSamples(*base, *map(self.to_torch, extra))


class _GuidanceCallback(BaseCallback):
    """Runs the collector inside SB3's ``collect_rollouts``: query before each env step, store after."""

    def __init__(self, collector: Guidance, n_rollout_steps: int):
        super().__init__()
        self.collector = collector
        self.n_rollout_steps = n_rollout_steps

    def _on_rollout_start(self) -> None:
        # r̄ of the last full window of episodes (None before the first: no reference return r̄₀ yet, issue 17)
        self.collector.begin_rollout(self.model.episode_window.mean_return)
        self.collector.prepare(self.training_env)

    def _on_step(self) -> bool:
        # Called after env.step() and before rollout_buffer.add() of the same row. The env step itself moved
        # guidance on (TeacherGroupVecEnv.step_wait: deliveries due before the new observation); the row's
        # targets were fixed when the step's observation was prepared.
        targets, valid = self.collector.row()
        self.model.rollout_buffer.set_teacher_row(targets, valid)
        if self.locals["n_steps"] + 1 < self.n_rollout_steps:  # the next rollout's first query waits for its N_calls
            self.collector.prepare(self.training_env)
        return True


class _EpisodeStatsCallback(BaseCallback):
    """Opens and closes the model's :class:`~robot_rl.algos.episode_stats.EpisodeWindow` with each rollout, and
    puts the window's episodes where SB3 and the trainer read them (``ep_info_buffer``, ``ep_success_buffer``:
    ``rollout/ep_rew_mean``, ``rollout/success_rate``); both are empty before the first full window, so nothing
    is logged then. First in the callback list: the others see the closed window at their ``on_rollout_end``.
    """

    def _on_rollout_start(self) -> None:
        self.model.episode_window.begin_rollout()

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        stats = self.model.episode_window.end_rollout()
        self.model.ep_info_buffer = deque(stats.infos if stats is not None else ())
        self.model.ep_success_buffer = deque(stats.successes if stats is not None else ())
        self.logger.record("rollout/stats_episodes", 0 if stats is None else stats.episodes)
        self.logger.record("rollout/stats_rollouts", 0 if stats is None else stats.rollouts)


class GuidedPPO(PPO):
    """PPO with teacher guidance. All of SB3 ``PPO``'s arguments, plus the five below.

    Args:
        guidance: the rollout-time collector, or ``None`` for plain PPO (mode ``ppo``).
        aux_loss: ``"cosine"`` (VLAJS) or ``"mse"`` (RPD).
        cos_eps: ε of the directional loss.
        components: the guided components of the directional loss (``guidance.components``).
        magnitude_weight: weight of the directional loss's magnitude term (``guidance.magnitude_weight``).

    Raises:
        ValueError: an unknown ``aux_loss`` or component.

    Episode statistics (``rollout/ep_rew_mean``, ``rollout/success_rate``, and the ``r̄`` guidance anneals on) are
    over all episodes that started in the most recent rollouts whose episodes have all ended, at least
    ``max(num_envs, stats_window_size)`` of them (:class:`~robot_rl.algos.episode_stats.EpisodeWindow`, issue 17),
    not over the last 100 episodes to end (SB3); with them ``rollout/stats_episodes`` and ``rollout/stats_rollouts``
    (0 before the first window, when the two means are not logged).

    The current ``λ_t`` is ``guidance.lambda_t``. Logged keys: ``guidance/aux_loss``,
    ``guidance/lambda``, ``guidance/valid_fraction``, ``guidance/cos_pos``, ``guidance/cos_rot``,
    ``guidance/grip_agreement`` (whether or not ``grip`` is guided). ``guidance`` is not saved with the model (it may
    hold a network client); a run saves the scheduler's ``state_dict`` beside the checkpoint.
    """

    def __init__(self, *args, guidance: Guidance | None = None, aux_loss: str = "cosine",
                 cos_eps: float = COS_EPS, components: tuple[str, ...] = PAPER_COMPONENTS,
                 magnitude_weight: float = 0.0, **kwargs):
        if aux_loss not in AUX_LOSSES:
            raise ValueError(f"aux_loss must be one of {sorted(AUX_LOSSES)}, got {aux_loss!r}")
        self.cos_eps = cos_eps
        self.components = check_components(components)
        if magnitude_weight < 0:
            raise ValueError(f"magnitude_weight must be >= 0, got {magnitude_weight}")
        self.magnitude_weight = float(magnitude_weight)
        kwargs.setdefault("rollout_buffer_class", GuidedRolloutBuffer)
        self.guidance = guidance
        self.aux_loss = aux_loss
        super().__init__(*args, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "guidance", "episode_window"]

    def _setup_learn(self, total_timesteps, callback=None, reset_num_timesteps=True, tb_log_name="run",
                     progress_bar=False):
        # SB3 resets the vec env here unless it continues a learn() of this process: every env starts an episode,
        # and the episode window starts over with them.
        fresh = reset_num_timesteps or self._last_obs is None or getattr(self, "episode_window", None) is None
        if fresh:
            self.episode_window = EpisodeWindow(self.env.num_envs, max(self.env.num_envs, self._stats_window_size))
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)

    def _update_info_buffer(self, infos: list[dict], dones: np.ndarray | None = None) -> None:
        """Every ended episode goes to the rollout's episode window (SB3 puts them in its window of 100)."""
        if dones is None:
            dones = np.zeros(len(infos), dtype=bool)
        self.episode_window.add(infos, dones)

    def _init_callback(self, callback, progress_bar: bool = False):
        # The episode window's callback first (the others read the closed window at their on_rollout_end), then
        # guidance's, so each step's target is stored before other callbacks run.
        if self.guidance is not None:
            from stable_baselines3.common.vec_env import unwrap_vec_wrapper

            from robot_rl.interface.vec_env import TeacherGroupVecEnv

            wrapper = unwrap_vec_wrapper(self.env, TeacherGroupVecEnv)
            if wrapper is None or wrapper.guidance is not self.guidance:
                raise ValueError("GuidedPPO with guidance needs its env wrapped in TeacherGroupVecEnv(venv, guidance) "
                                 "with the same guidance (it moves guidance on at every env step; "
                                 "robot_rl.trainer.build_env_stack builds it)")
        others = callback if isinstance(callback, list) else [] if callback is None else [callback]
        guidance = [_GuidanceCallback(self.guidance, self.n_steps)] if self.guidance is not None else []
        return super()._init_callback([_EpisodeStatsCallback(), *guidance, *others], progress_bar)

    @property
    def lambda_t(self) -> float:
        """Weight of the auxiliary loss in the coming update (0 without guidance)."""
        return self.guidance.lambda_t if self.guidance is not None else 0.0

    def _review_guidance(self) -> None:
        """Give the guard this rollout's alignment scores (``robot_rl/guidance/guard.py``), computed with the
        collecting policy (no gradient step has been taken yet): ``ε = (a - μ) / σ`` of the stored samples.
        """
        if self.guidance is None or self.guidance.guard is None or self.guidance.scheduler.deactivated:
            return
        buf = self.rollout_buffer
        valid = buf.teacher_valid.reshape(-1)
        if not valid.any():
            self.guidance.review(np.zeros(0))
            return
        obs = buf.to_torch(buf.observations.reshape(-1, *buf.obs_shape))
        with th.no_grad():
            dist = self.policy.get_distribution(obs).distribution
            mean, std = dist.mean.cpu().numpy(), dist.stddev.cpu().numpy()
        noise = (buf.actions.reshape(mean.shape) - mean) / np.maximum(std, 1e-8)
        self.guidance.review(alignment_scores(buf.advantages.reshape(-1), noise,
                                              buf.teacher_targets.reshape(mean.shape), valid, self.components))

    def bootstrap_timeouts(self, rewards: np.ndarray, dones: np.ndarray, infos: list[dict]) -> np.ndarray:
        """Add ``γ V(terminal_observation)`` to the rewards of the envs whose episode hit its time limit at this
        step (``TimeLimit.truncated``; SB3 issue #633), in place, with one value forward for all of them.

        Args:
            rewards: ``(N,) float32`` rewards of the step.
            dones: ``(N,) bool`` episode ends of the step.
            infos: SB3's per-env infos (``terminal_observation`` ``(D,)`` where an episode ended).

        Returns:
            the indices of the bootstrapped envs, ``(k,) int``.
        """
        idx = np.array([i for i in np.flatnonzero(dones) if infos[i].get("terminal_observation") is not None
                        and infos[i].get("TimeLimit.truncated", False)], dtype=np.int64)
        if len(idx):
            terminal = [infos[i]["terminal_observation"] for i in idx]
            if isinstance(terminal[0], dict):
                batch = {key: np.stack([t[key] for t in terminal]) for key in terminal[0]}
            else:
                batch = np.stack(terminal)
            terminal_obs = self.policy.obs_to_tensor(batch)[0]
            with th.no_grad():
                terminal_values = self.policy.predict_values(terminal_obs).flatten()  # type: ignore[arg-type]
            rewards[idx] += (self.gamma * terminal_values).cpu().numpy()
        return idx

    def collect_rollouts(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer,
                         n_rollout_steps: int) -> bool:
        """Collect experiences using the current policy and fill a ``RolloutBuffer`` (copy of SB3 2.9.2
        ``OnPolicyAlgorithm.collect_rollouts``; the change is marked).
        """
        assert self._last_obs is not None, "No previous observation was provided"
        # Switch to eval mode (this affects batch norm / dropout)
        self.policy.set_training_mode(False)

        n_steps = 0
        rollout_buffer.reset()
        # Sample new weights for the state dependent exploration
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)

        callback.on_rollout_start()

        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                # Sample a new noise matrix
                self.policy.reset_noise(env.num_envs)

            with th.no_grad():
                # Convert to pytorch tensor or to TensorDict
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                actions, values, log_probs = self.policy(obs_tensor)
            actions = actions.cpu().numpy()

            # Rescale and perform action
            clipped_actions = actions

            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    # Unscale the actions to match env bounds
                    # if they were previously squashed (scaled in [-1, 1])
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    # Otherwise, clip the actions to avoid out of bound error
                    # as we are sampling from an unbounded Gaussian distribution
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)

            self.num_timesteps += env.num_envs

            # Give access to local variables
            callback.update_locals(locals())
            if not callback.on_step():
                return False

            self._update_info_buffer(infos, dones)
            n_steps += 1

            if isinstance(self.action_space, spaces.Discrete):
                # Reshape in case of discrete action
                actions = actions.reshape(-1, 1)

            # --- robot_rl: handle timeout by bootstrapping with the value function, one batched forward for every
            # truncated env (SB3: one forward per env; see GitHub issue #633)
            self.bootstrap_timeouts(rewards, dones, infos)
            # --- robot_rl end

            rollout_buffer.add(
                self._last_obs,  # type: ignore[arg-type]
                actions,
                rewards,
                self._last_episode_starts,  # type: ignore[arg-type]
                values,
                log_probs,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        with th.no_grad():
            # Compute value for the last timestep
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]

        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)

        callback.update_locals(locals())

        callback.on_rollout_end()

        return True

    def train(self) -> None:
        """Update policy using the currently gathered rollout buffer (copy of SB3 2.9.2 ``PPO.train``)."""
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)
        # Compute current clip range
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        # Optional: clip range for the value function
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        entropy_losses = []
        pg_losses, value_losses = [], []
        clip_fractions = []
        # --- robot_rl: the guard's review (it may switch guidance off), the guidance term's weight and logs
        self._review_guidance()
        lam = self.lambda_t
        aux_fn = (partial(directional_cosine_loss, eps=self.cos_eps, components=self.components,
                          magnitude_weight=self.magnitude_weight)
                  if self.aux_loss == "cosine" else mse_loss)
        aux_losses = []
        cosines: dict[str, list[float]] = {"pos": [], "rot": [], "grip": []}
        # --- robot_rl end

        continue_training = True
        # train for n_epochs epochs
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            # Do a complete pass on the rollout buffer
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    # Convert discrete action from float to long
                    actions = rollout_data.actions.long().flatten()

                values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, actions)
                values = values.flatten()
                # Normalize advantage
                advantages = rollout_data.advantages
                # Normalization does not make sense if mini batchsize == 1, see GH issue #325
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                # ratio between old and new policy, should be one at the first iteration
                ratio = th.exp(log_prob - rollout_data.old_log_prob)

                # clipped surrogate loss
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()

                # Logging
                pg_losses.append(policy_loss.item())
                clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
                clip_fractions.append(clip_fraction)

                if self.clip_range_vf is None:
                    # No clipping
                    values_pred = values
                else:
                    # Clip the difference between old and new value
                    # NOTE: this depends on the reward scaling
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                # Value loss using the TD(gae_lambda) target
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                value_losses.append(value_loss.item())

                # Entropy loss favor exploration
                if entropy is None:
                    # Approximate entropy when no analytical form
                    entropy_loss = -th.mean(-log_prob)
                else:
                    entropy_loss = -th.mean(entropy)

                entropy_losses.append(entropy_loss.item())

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                # --- robot_rl: auxiliary guidance term on the policy mean, masked by validity
                if self.guidance is not None:
                    mean = self.policy.get_distribution(rollout_data.observations).distribution.mean
                    aux = aux_fn(mean, rollout_data.teacher_targets, rollout_data.teacher_valid)
                    aux_losses.append(aux.item())
                    loss = loss + lam * aux
                    with th.no_grad():
                        for name, (cos, has_dir) in component_cosines(mean, rollout_data.teacher_targets).items():
                            w = rollout_data.teacher_valid * has_dir
                            if w.sum() > 0:
                                cosines[name].append(((cos * w).sum() / w.sum()).item())
                        agree = grip_agreement(mean, rollout_data.teacher_targets, rollout_data.teacher_valid)
                        if agree is not None:
                            cosines["grip"].append(agree)
                # --- robot_rl end

                # Calculate approximate form of reverse KL Divergence for early stopping
                # see issue #417: https://github.com/DLR-RM/stable-baselines3/issues/417
                # and discussion in PR #419: https://github.com/DLR-RM/stable-baselines3/pull/419
                # and Schulman blog: http://joschu.net/blog/kl-approx.html
                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                # Optimization step
                self.policy.optimizer.zero_grad()
                loss.backward()
                # Clip grad norm
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        # Logs
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
        # --- robot_rl: guidance logs
        if self.guidance is not None:
            self.logger.record("guidance/aux_loss", float(np.mean(aux_losses)) if aux_losses else 0.0)
            self.logger.record("guidance/lambda", lam)
            self.logger.record("guidance/valid_fraction", float(self.rollout_buffer.teacher_valid.mean()))
            for name, values in cosines.items():  # agreement of the policy mean with the teacher, per component
                if values:
                    key = "guidance/grip_agreement" if name == "grip" else f"guidance/cos_{name}"
                    self.logger.record(key, float(np.mean(values)))
        # --- robot_rl end
