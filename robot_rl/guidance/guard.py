"""The misleading-teacher guard: does PPO's own critic favour the teacher's direction?

VLAJS switches guidance off once the return has risen (``guidance.deactivate_threshold``); a teacher that
points the wrong way keeps the return from ever rising, so that switch never fires (measured here: a teacher
turned 180° gives 0.00 on PushCube-v2 where ``ppo`` reaches 0.90). The guard asks the question the return
cannot answer: *where the policy's exploration happened to go along the teacher's direction, did that pay?*

At the start of every PPO update, over the rollout's rows with a valid teacher target (``teacher_valid``):

* ``ε_t = (a_t - μ_t) / σ_t`` (7,): the standardized exploration noise of the sampled action (SB3 stores the
  unclipped sample ``a_t``; ``μ, σ`` are the collecting policy's, recomputed before any gradient step);
* ``p_t = Σ_{c ∈ C} <ε_t^c, u_t^c> / sqrt(|C|)``: its projection on the teacher's direction, with
  ``u^c = ã^c / ‖ã^c‖`` for ``pos`` and ``rot`` and ``u^g = sign(ã^g)`` for ``grip`` (``C`` = the components
  the teacher commands on that row, of ``guidance.components``); ``p_t ~ N(0, 1)`` under the policy;
* ``z_t = A_t p_t`` with ``A`` the rollout's GAE advantages as PPO computed them (before its per-minibatch
  normalization). They are not rescaled per rollout: with a sparse reward, a rollout without a rewarded
  episode has advantages near 0 (the critic's noise) and adds rows near 0, while rescaling would blow that
  noise up to the size of the rare rows that carry the evidence.

PPO's policy gradient with respect to the mean at row ``t`` is ``A_t ε_t / σ_t``, so ``mean(z)`` is that
gradient projected on the teacher's direction: positive where moving towards the teacher beat the critic's
expectation, negative where moving against it did. If the teacher's direction carries no information about
the advantage, ``E[z_t] = 0``, because ``ε_t`` is drawn independently of the state and has mean 0; the
``z_t`` are then approximately uncorrelated (a later row's noise is independent of an earlier row's
advantage under that null), so a one-sided t-test applies: over the last ``window_rollouts`` updates,
``t = mean(z) / (std(z) / sqrt(n))``, and the guard fires when ``n >= min_rows`` and ``t < -z_threshold``.
Firing switches guidance off for good, as the paper's deactivation does (``N_calls = 0``, ``λ = 0``).

What it builds on:

* the Q-filter of Nair et al., "Overcoming Exploration in Reinforcement Learning with Demonstrations"
  (ICRA 2018): apply the behaviour-cloning loss only where the critic rates the demonstrator's action above
  the policy's. PPO learns ``V``, not ``Q``, and a per-row advantage is noise, so the guard takes the same
  question to the run level, as a test over many rows;
* Du et al., "Adapting Auxiliary Losses Using Gradient Similarity" (2018): use an auxiliary loss only while
  its gradient agrees with the main task's; ``z`` is that agreement in action space, for the policy mean.

Its limit: the evidence is the advantage. A run in which no episode ever earns reward (and so no advantage
departs from the critic's noise) gives ``t ≈ 0``: the guard can neither condemn nor clear a teacher before the
first successes, and it leaves guidance on.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from robot_rl.geometry import GRIPPER_INDEX, POS_SLICE, ROT_SLICE
from robot_rl.guidance.losses import MIN_TARGET_NORM as _MIN_NORM  # a shorter target component commands nothing


def alignment_scores(advantages: np.ndarray, noise: np.ndarray, targets: np.ndarray, valid: np.ndarray,
                     components: tuple[str, ...] = ("pos", "rot")) -> np.ndarray:
    """``z_t = A_t p_t`` for the valid rows that command at least one guided component.

    Args:
        advantages: ``(N,)`` GAE advantages of the rollout's rows (units of return).
        noise: ``(N, 7)`` standardized exploration noise ``(a - μ) / σ``.
        targets: ``(N, 7)`` teacher targets ``ã``.
        valid: ``(N,)`` bool or 0/1.
        components: the guided components (``guidance.components``).

    Returns:
        ``(M,) float64``, one score per valid row with a command (``M <= N``); all zeros when the advantages
        are all 0 (no evidence).
    """
    adv = np.asarray(advantages, dtype=np.float64).reshape(-1)
    noise = np.asarray(noise, dtype=np.float64).reshape(adv.size, -1)
    targets = np.asarray(targets, dtype=np.float64).reshape(adv.size, -1)
    valid = np.asarray(valid).reshape(-1) > 0
    proj = np.zeros(adv.size)
    count = np.zeros(adv.size)
    for name, sl in (("pos", POS_SLICE), ("rot", ROT_SLICE)):
        if name in components:
            norm = np.linalg.norm(targets[:, sl], axis=1)
            has = norm > _MIN_NORM
            proj += np.where(has, (noise[:, sl] * targets[:, sl]).sum(axis=1) / np.maximum(norm, _MIN_NORM), 0.0)
            count += has
    if "grip" in components:
        has = np.abs(targets[:, GRIPPER_INDEX]) > _MIN_NORM
        proj += np.where(has, noise[:, GRIPPER_INDEX] * np.sign(targets[:, GRIPPER_INDEX]), 0.0)
        count += has
    rows = valid & (count > 0)
    return adv[rows] * proj[rows] / np.sqrt(count[rows])


class TeacherGuard:
    """The guard's decision rule over a window of updates (module docstring).

    Args:
        z_threshold: fire when the t-statistic is below ``-z_threshold`` (one-sided; 3.0 is p ≈ 0.0013).
        min_rows: scored rows needed in the window before any decision.
        window_rollouts: how many of the latest updates' scores the test pools.

    Raises:
        ValueError: ``z_threshold <= 0``, ``min_rows < 2`` or ``window_rollouts < 1``.
    """

    def __init__(self, z_threshold: float = 3.0, min_rows: int = 256, window_rollouts: int = 16):
        if not z_threshold > 0 or min_rows < 2 or window_rollouts < 1:
            raise ValueError(f"TeacherGuard needs z_threshold > 0, min_rows >= 2, window_rollouts >= 1; got "
                             f"{z_threshold}, {min_rows}, {window_rollouts}")
        self.z_threshold, self.min_rows = float(z_threshold), int(min_rows)
        self._window: deque[tuple[int, float, float]] = deque(maxlen=int(window_rollouts))  # (n, Σz, Σz²)
        self.fired = False
        self.updates = 0  #: updates observed
        self.fired_at_update: int | None = None

    @property
    def n(self) -> int:
        """Scored rows in the window."""
        return sum(w[0] for w in self._window)

    @property
    def t_statistic(self) -> float:
        """``mean(z) / (std(z) / sqrt(n))`` over the window (0 with fewer than 2 rows or no spread)."""
        n = self.n
        if n < 2:
            return 0.0
        s1 = sum(w[1] for w in self._window)
        s2 = sum(w[2] for w in self._window)
        mean = s1 / n
        var = max(s2 / n - mean * mean, 0.0) * n / (n - 1)
        return mean / math.sqrt(var / n) if var > 0 else 0.0

    def observe(self, scores: np.ndarray) -> bool:
        """Add one update's scores (:func:`alignment_scores`); True when this call makes the guard fire."""
        z = np.asarray(scores, dtype=np.float64).reshape(-1)
        z = z[np.isfinite(z)]
        self._window.append((int(z.size), float(z.sum()), float((z * z).sum())))
        self.updates += 1
        if self.fired or self.n < self.min_rows or self.t_statistic >= -self.z_threshold:
            return False
        self.fired, self.fired_at_update = True, self.updates
        return True

    def state_dict(self) -> dict:
        """The window, the decision and the counters (JSON-ready)."""
        return {"window": [list(w) for w in self._window], "fired": self.fired, "updates": self.updates,
                "fired_at_update": self.fired_at_update}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        self._window.clear()
        self._window.extend((int(n), float(s1), float(s2)) for n, s1, s2 in state["window"])
        self.fired, self.updates = bool(state["fired"]), int(state["updates"])
        self.fired_at_update = state.get("fired_at_update")
