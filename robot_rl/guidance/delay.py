"""Delay models of teacher answers, in env steps (TIC-VLA, Huang et al. 2026; DESIGN.md "Delayed semantic interface").

A query made from the observation of env step ``q`` is answered at step ``q + d``. In training ``d`` comes
from a delay model (``interface.delay`` in the config):

* ``none``: ``d = 0``, the answer is there for the step it was asked for (the behaviour before the interface);
* ``fixed``: ``d = steps``;
* ``uniform``: ``d ~ U{min_steps, ..., max_steps}``, drawn per query from the run's seed, so a run is
  reproducible;
* ``measured``: the real wall-clock latency ``L`` of an asynchronous teacher, ``d = ceil(L / 0.05 s)`` (the
  control period); the answer is delivered once it has arrived *and* ``d`` env steps have passed. Training
  steps the simulator faster or slower than real time, so an answer that takes longer in wall time than the
  rollout needs for ``d`` steps arrives later in env steps than ``d`` (the rollout never waits for it).
"""

from __future__ import annotations

import math

import numpy as np

from robot_rl.geometry import CONTROL_PERIOD_S

__all__ = ["CONTROL_PERIOD_S", "DelayModel", "make_delay_model", "steps_of_latency"]


def steps_of_latency(latency_s: float | np.ndarray, period_s: float = CONTROL_PERIOD_S) -> np.ndarray:
    """Latencies (s) rounded up to whole env steps: ``ceil(L / period)`` (``(...,) int64``; 0 s -> 0 steps).

    A tolerance of 1 µs keeps a latency of exactly ``k`` periods at ``k`` steps despite float round-off.
    """
    lat = np.maximum(np.asarray(latency_s, dtype=np.float64), 0.0)
    return np.ceil(lat / period_s - 1e-6 / period_s).astype(np.int64)


class DelayModel:
    """Sample per-query delays in env steps.

    Args:
        kind: ``"none"``, ``"fixed"``, ``"uniform"`` or ``"measured"``.
        steps: ``fixed``'s ``d``.
        min_steps, max_steps: ``uniform``'s bounds (inclusive).
        seed: seed of the model's own generator (the run's seed; no global RNG is touched).

    Raises:
        ValueError: an unknown kind, a negative delay or ``max_steps < min_steps`` (the message names it).
    """

    KINDS = ("none", "fixed", "uniform", "measured")

    def __init__(self, kind: str = "none", *, steps: int = 0, min_steps: int = 0, max_steps: int = 0,
                 seed: int | None = None):
        if kind not in self.KINDS:
            raise ValueError(f"interface.delay.kind: unknown delay model {kind!r} (known: {', '.join(self.KINDS)})")
        if min(steps, min_steps, max_steps) < 0:
            raise ValueError("interface.delay: delays must be >= 0 env steps")
        if kind == "uniform" and max_steps < min_steps:
            raise ValueError(f"interface.delay.max_steps ({max_steps}) < min_steps ({min_steps})")
        self.kind = kind
        self.steps, self.min_steps, self.max_steps = int(steps), int(min_steps), int(max_steps)
        self.rng = np.random.default_rng(seed)

    @property
    def measured(self) -> bool:
        """True when the delay is the teacher's own latency (the teacher runs asynchronously)."""
        return self.kind == "measured"

    @property
    def mean_steps(self) -> float:
        """Expected delay in env steps (``nan`` for ``measured``: it is whatever the teacher takes)."""
        return {"none": 0.0, "fixed": float(self.steps), "uniform": (self.min_steps + self.max_steps) / 2,
                "measured": math.nan}[self.kind]

    def sample(self, n: int) -> np.ndarray:
        """``(n,) int64`` delays in env steps for ``n`` queries submitted now; ``measured`` gives zeros (its
        delay is known when the answer arrives: :func:`steps_of_latency`).
        """
        if self.kind == "fixed":
            return np.full(n, self.steps, dtype=np.int64)
        if self.kind == "uniform":
            return self.rng.integers(self.min_steps, self.max_steps + 1, size=n, dtype=np.int64)
        return np.zeros(n, dtype=np.int64)

    def state_dict(self) -> dict:
        """The generator's state (JSON-ready): a resumed run draws the delays it would have drawn."""
        return {"kind": self.kind, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output.

        Raises:
            ValueError: the saved state belongs to another delay model.
        """
        if state.get("kind") != self.kind:
            raise ValueError(f"saved delay state is for kind {state.get('kind')!r}, this run's is {self.kind!r}")
        self.rng.bit_generator.state = state["rng"]

    def __repr__(self) -> str:
        args = {"fixed": f", steps={self.steps}", "uniform": f", {self.min_steps}..{self.max_steps}"}.get(self.kind, "")
        return f"DelayModel({self.kind}{args})"


def make_delay_model(cfg, seed: int | None) -> DelayModel:
    """The delay model of an ``interface.delay`` config section (:mod:`robot_rl.config`)."""
    return DelayModel(cfg.kind, **cfg.model_dump(exclude={"kind"}), seed=seed)
