"""Episode statistics that stay unbiased with many synchronized envs (issue 17, item 1).

SB3 averages ``rollout/ep_rew_mean`` and ``rollout/success_rate`` over a fixed window of the last 100 episodes
(``stats_window_size``, ``BaseAlgorithm._update_info_buffer``). With 1024 envs that start together, a rollout of
32 steps and a 50-step horizon, the only episodes that have ended when the first rollout ends are the ones that
succeeded early, so the first mean reads success 1.0. VLAJS then takes that as its reference return ``r̄₀`` and
``Δr̄`` can never be positive (``robot_rl/guidance/schedule.py``). Later windows of 100 episodes cover 2 to 4 env
steps of episode ends: whether they hold the synchronized time-outs depends on the step.

:class:`EpisodeWindow` counts an episode by the rollout it **started** in, and reports a rollout's episodes only
once all of them have ended: whether an episode succeeds does not depend on when it started, so the episodes that
started in a set of rollouts are a fair sample of the policy's episodes. Selecting by the rollout an episode
*ended* in is not: with synchronized envs the window holds the successes of episodes still running their
cohort's time-outs (measured on the fake env of ``tests/algos/test_episode_stats.py``, true rate 0.05: 0.10 in
the first window in which every env had ended an episode, then 0.028 to 0.073 depending on where the time-outs
fell). So:

- nothing is reported before every episode of the first rollout has ended (a full horizon of episodes, and one
  more rollout at most), and ``r̄₀`` is taken from that first window;
- a window is the most recent complete rollouts, back until it holds at least ``min_episodes`` episodes (all of
  their episodes, never a fixed count); its figures lag the run by at most one horizon and one rollout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class _Cohort:
    """The ended episodes that started in one rollout."""

    returns: list[float] = field(default_factory=list)  #: undiscounted episode returns
    lengths: list[int] = field(default_factory=list)  #: episode lengths, env steps
    successes: list[bool] = field(default_factory=list)  #: the ``is_success`` of episodes that report one


@dataclass(frozen=True)
class WindowStats:
    """Averages over the episodes of one window.

    Attributes:
        mean_return: mean undiscounted episode return.
        mean_length: mean episode length, env steps.
        success_rate: fraction of the episodes (that report ``is_success``) that succeeded; NaN if none does.
        episodes: number of episodes averaged.
        rollouts: number of rollouts (of the episodes' starts) the window spans.
        infos: the episodes as SB3's ``info["episode"]`` dicts ``{"r", "l"}``.
        successes: the episodes' ``is_success`` values.
    """

    mean_return: float
    mean_length: float
    success_rate: float
    episodes: int
    rollouts: int
    infos: list[dict]
    successes: list[bool]


class EpisodeWindow:
    """Ended episodes of ``num_envs`` envs by the rollout they started in; see the module docstring.

    Call :meth:`reset` when the vec env is reset (every env starts an episode), :meth:`begin_rollout` at each
    rollout's start, :meth:`add` after every env step with SB3's ``infos`` (``info["episode"]`` from
    ``VecMonitor``, ``info["is_success"]``) and ``dones``, and :meth:`end_rollout` at its end.

    Args:
        num_envs: envs ``N`` of the vec env.
        min_episodes: a window reaches back over complete rollouts until it holds this many episodes (None:
            ``num_envs``); GuidedPPO passes ``max(num_envs, stats_window_size)``, SB3's 100 episodes at the least.
    """

    def __init__(self, num_envs: int, min_episodes: int | None = None):
        self.num_envs = int(num_envs)
        self.min_episodes = max(1, int(min_episodes if min_episodes is not None else num_envs))
        self.stats: WindowStats | None = None
        self.reset()

    def reset(self) -> None:
        """Every env starts a new episode (in the coming rollout): nothing has ended, no statistics."""
        self._rollout = getattr(self, "_rollout", -1) + 1  # index of the coming rollout
        self._open = True  # begin_rollout of the coming rollout is still due
        self._start = np.full(self.num_envs, self._rollout, dtype=np.int64)  # rollout of each env's episode start
        self._cohorts: dict[int, _Cohort] = {}
        self.stats = None

    def begin_rollout(self) -> None:
        """Start a rollout (episodes that start from now on belong to it)."""
        if not self._open:
            self._rollout += 1
        self._open = False

    def add(self, infos: list[dict], dones: np.ndarray) -> None:
        """Record the episodes that ended at this env step (their envs start new ones in this rollout).

        Args:
            infos: SB3's per-env infos of the step; an ended episode's ``info["episode"]`` (``{"r", "l"}``,
                ``VecMonitor``) gives its return and length, ``info["is_success"]`` its success.
            dones: ``(N,) bool`` episode ends of the step.
        """
        idx = np.flatnonzero(dones)
        if not len(idx):
            return
        for i in idx:  # only the ended envs: O(episode ends), not O(N)
            cohort = self._cohorts.setdefault(int(self._start[i]), _Cohort())
            info = infos[i]
            ep = info.get("episode")
            if ep is not None:
                cohort.returns.append(float(ep["r"]))
                cohort.lengths.append(int(ep["l"]))
            success = info.get("is_success")
            if success is not None:
                cohort.successes.append(bool(success))
        self._start[idx] = self._rollout

    def end_rollout(self) -> WindowStats | None:
        """Close the rollout and average over the window (see the module docstring); cohorts older than the
        window are dropped.

        Returns:
            the window's :class:`WindowStats` (also kept in :attr:`stats`), or None while an episode that started
            in the first rollout since :meth:`reset` is still running.
        """
        first_open = int(self._start.min())  # rollouts before it have all their episodes ended
        complete = sorted((k for k in self._cohorts if k < first_open), reverse=True)
        window, count = [], 0
        for k in complete:
            window.append(k)
            c = self._cohorts[k]
            count += max(len(c.returns), len(c.successes))
            if count >= self.min_episodes:
                break
        if not window:
            self.stats = None
            return None
        for k in [k for k in self._cohorts if k < window[-1]]:
            del self._cohorts[k]
        cohorts = [self._cohorts[k] for k in reversed(window)]
        returns = [r for c in cohorts for r in c.returns]
        lengths = [n for c in cohorts for n in c.lengths]
        successes = [s for c in cohorts for s in c.successes]
        self.stats = WindowStats(
            mean_return=float(np.mean(returns)) if returns else float("nan"),
            mean_length=float(np.mean(lengths)) if lengths else float("nan"),
            success_rate=float(np.mean(successes)) if successes else float("nan"),
            episodes=max(len(returns), len(successes)),
            rollouts=len(window),
            infos=[{"r": r, "l": n} for r, n in zip(returns, lengths)],
            successes=successes,
        )
        return self.stats

    def state_dict(self) -> dict:
        """The JSON-able state a resume carries over: the last statistics and the episodes of the **complete**
        cohorts (rollouts whose episodes have all ended), keyed by their rollout index relative to the first open
        one (``"-1"``: the latest complete rollout). The cohorts of rollouts with episodes still running are left
        out: a resume resets every env, so they would never complete and would hold only their early-ending
        episodes (the bias this window exists to avoid).
        """
        first_open = int(self._start.min())
        cohorts = {k - first_open: asdict(c) for k, c in self._cohorts.items() if k < first_open}
        return {"cohorts": {str(k): c for k, c in sorted(cohorts.items())},
                "stats": None if self.stats is None else asdict(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        """Put :meth:`state_dict`'s cohorts and statistics into this window, made (or :meth:`reset`) at the start
        of a resumed ``learn`` with every env starting an episode in the coming rollout: the cohorts go before it,
        so the next windows reach back over them as an uninterrupted run's would.

        Raises:
            KeyError / TypeError: ``state`` is not a :meth:`state_dict`.
        """
        start = int(self._start.min())
        self._cohorts.update({start + int(k): _Cohort(**c) for k, c in state["cohorts"].items()})
        self.stats = None if state["stats"] is None else WindowStats(**state["stats"])

    @property
    def mean_return(self) -> float | None:
        """The last window's mean episode return, None before the first window (or without returns)."""
        if self.stats is None or not np.isfinite(self.stats.mean_return):
            return None
        return self.stats.mean_return
