"""When to ask the teacher, and how strongly to listen (VLAJS, Moroncelli et al. 2026).

Per rollout of ``S = n_steps * num_envs`` env steps the teacher gets at most ``N_max`` queries,
``N_max = floor(budget_fraction * S)`` (the paper's budget: at most 20% of env steps). As the
policy's reward improves over the run's start, ``Δr̄ = r̄ - r̄_0``, the number of queries and the
loss weight anneal:

* ``N_calls = max(N_min, floor(N_max * exp(-κ Δr̄)))``
* ``λ_t = λ_0 * exp(-κ Δr̄)``

and once ``Δr̄`` exceeds ``deactivate_threshold`` (3 in the paper, on its dense-reward scale)
guidance is switched off for good: ``N_calls = 0``, ``λ_t = 0``. ``r̄`` is the mean episodic
return over the recent episodes of :class:`~robot_rl.algos.episode_stats.EpisodeWindow` (the episodes that
started in the latest rollouts whose episodes have all ended); ``r̄_0`` is the first such mean of the run, so it is
taken only once a full horizon of episodes has ended: with many synchronized envs SB3's last 100 episodes are the
early successes alone, and a ``r̄_0`` of 1.0 would keep ``Δr̄ <= 0`` for good (issue 17). A negative ``Δr̄``
(the policy got worse than at the start) is clipped to 0, so the budget is never exceeded.
"""

from __future__ import annotations

import math

import numpy as np


def n_calls(n_max: int, n_min: int, kappa: float, delta_r: float) -> int:
    """``max(N_min, floor(N_max * exp(-κ max(Δr̄, 0))))``, never above ``N_max``."""
    n = math.floor(n_max * math.exp(-kappa * max(delta_r, 0.0)))
    return int(min(n_max, max(n_min, n)))


def lambda_t(lambda_0: float, kappa: float, delta_r: float, active: bool = True) -> float:
    """``λ_0 * exp(-κ max(Δr̄, 0))`` while guidance is active, else 0."""
    return float(lambda_0 * math.exp(-kappa * max(delta_r, 0.0))) if active else 0.0


class QueryScheduler:
    """Decides, at each env step of a rollout, which envs query the teacher.

    Call :meth:`begin_rollout` with the recent mean episodic return before each rollout, then
    :meth:`select` once per env step. Queries are spread evenly: at each step an eligible env
    queries with probability ``remaining budget / remaining env steps``, and the rollout's count
    never exceeds ``N_calls``. Randomness comes from the scheduler's own generator, never from the
    global numpy or torch RNG (so ``λ = 0`` training reproduces plain PPO exactly).

    Args:
        n_steps: env steps per env per rollout (PPO's ``n_steps``).
        num_envs: number of envs.
        budget_fraction: queries per env step, at most; ``N_max = floor(budget_fraction * n_steps * num_envs)``.
        n_min: floor on ``N_calls`` while active (env steps).
        kappa: ``κ``, annealing rate per unit of return improvement.
        deactivate_threshold: ``Δr̄`` above which guidance stops for good; ``None`` never stops.
        lambda_0: initial weight of the auxiliary loss.
        anneal: False keeps ``N_calls = N_max`` and ``λ_t = λ_0`` (the RPD baseline).
        seed: seed of the scheduler's own generator.

    Raises:
        ValueError: a fraction outside [0, 1], negative ``n_min`` / ``kappa`` / ``lambda_0``.
    """

    def __init__(
        self,
        n_steps: int,
        num_envs: int,
        budget_fraction: float = 0.2,
        n_min: int = 0,
        kappa: float = 1.0,
        deactivate_threshold: float | None = 3.0,
        lambda_0: float = 0.1,
        anneal: bool = True,
        seed: int = 0,
    ):
        if not 0.0 <= budget_fraction <= 1.0:
            raise ValueError(f"budget_fraction must be in [0, 1], got {budget_fraction}")
        for name, value in (("n_min", n_min), ("kappa", kappa), ("lambda_0", lambda_0)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.n_steps, self.num_envs = n_steps, num_envs
        self.n_max = math.floor(budget_fraction * n_steps * num_envs)
        self.n_min = min(n_min, self.n_max)
        self.kappa, self.lambda_0 = kappa, lambda_0
        self.deactivate_threshold = deactivate_threshold
        self.anneal = anneal
        self.rng = np.random.default_rng(seed)
        # State that survives a resume (state_dict).
        self.baseline_return: float | None = None
        self.delta_r = 0.0
        self.deactivated = False
        # Per-rollout state.
        self.n_calls = self.n_max
        self.used = 0
        self.step = 0

    @property
    def lambda_t(self) -> float:
        """The auxiliary-loss weight for the current rollout's update."""
        if not self.anneal:
            return self.lambda_0
        return lambda_t(self.lambda_0, self.kappa, self.delta_r, active=not self.deactivated)

    def begin_rollout(self, mean_return: float | None) -> None:
        """Update ``Δr̄`` from the recent mean episodic return (``None``/NaN: no full window of episodes yet, so
        no ``r̄_0`` either) and set this rollout's ``N_calls``.
        """
        if mean_return is not None and math.isfinite(mean_return):
            if self.baseline_return is None:
                self.baseline_return = float(mean_return)
            self.delta_r = float(mean_return) - self.baseline_return
        if self.anneal and self.deactivate_threshold is not None and self.delta_r > self.deactivate_threshold:
            self.deactivated = True
        if self.deactivated:
            self.n_calls = 0
        elif self.anneal:
            self.n_calls = n_calls(self.n_max, self.n_min, self.kappa, self.delta_r)
        else:
            self.n_calls = self.n_max
        self.used = 0
        self.step = 0

    def select(self, eligible: np.ndarray) -> np.ndarray:
        """Which envs query at this env step.

        Args:
            eligible: ``(num_envs,) bool``, envs allowed to query now.

        Returns:
            ``(num_envs,) bool`` query mask; its total over the rollout is at most ``N_calls``.
        """
        eligible = np.asarray(eligible, dtype=bool)
        remaining = self.n_calls - self.used
        steps_left = max(1, (self.n_steps - self.step) * self.num_envs)
        self.step += 1
        mask = np.zeros(self.num_envs, dtype=bool)
        if remaining <= 0 or not eligible.any():
            return mask
        p = min(1.0, remaining / steps_left)
        mask = eligible & (self.rng.random(self.num_envs) < p)
        if mask.sum() > remaining:  # never exceed the budget
            keep = self.rng.choice(np.flatnonzero(mask), size=remaining, replace=False)
            mask[:] = False
            mask[keep] = True
        self.used += int(mask.sum())
        return mask

    def state_dict(self) -> dict:
        """What a resumed run needs: the baseline, ``Δr̄``, deactivation and the RNG state."""
        return {
            "baseline_return": self.baseline_return,
            "delta_r": self.delta_r,
            "deactivated": self.deactivated,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.baseline_return = state["baseline_return"]
        self.delta_r = state["delta_r"]
        self.deactivated = state["deactivated"]
        self.rng.bit_generator.state = state["rng"]
