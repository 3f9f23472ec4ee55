"""Overhead of the GPU vec-env adapter per env step, at many envs (issue 17, item 2).

    .venv/bin/python benchmarks/gpu_adapter_overhead.py [--num-envs 1024] [--steps 300] [--device cpu]

Runs :class:`~robot_rl.envs.ManiSkillGPUVecEnv` (under SB3's ``VecMonitor``, as the trainer does) over the fake
batched env of ``robot_rl.testing.batched_env`` (no GPU and no simulator here) and times the adapter's
``step`` minus the time spent inside the fake's own ``step`` and ``reset``: what the adapter adds to the sim
(info dicts, time limit, partial resets, device-to-host copies); then the same under SB3's ``VecMonitor``, as the
trainer stacks it (VecMonitor loops over every env in Python at every step: SB3's cost, not the adapter's).
Three cases:

- ``no resets``: no episode ends during the timed steps;
- ``resets``: every row succeeds at its own step of 1..50 (about 2% of the rows reset at every step);
- ``all reset``: every row times out together (``max_episode_steps = 1``: 1024 resets a step, the synchronized
  time-out).

Target: <= 0.5 ms a step at 1024 envs with resets (issue 17). On a GPU run it with ``--device cuda`` (the copies
then are real device-to-host transfers).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from robot_rl.envs import ManiSkillGPUVecEnv
from robot_rl.testing.batched_env import FakeBatchedEnv

#: issue 17's target for the adapter's overhead at 1024 envs with resets, ms per env step
TARGET_MS = 0.5


class _Timed(FakeBatchedEnv):
    """The fake, with the time spent in its own step and reset summed (s)."""

    sim_s = 0.0

    def step(self, actions):
        t0 = time.perf_counter()
        out = super().step(actions)
        _sync(self.device)
        self.sim_s += time.perf_counter() - t0
        return out

    def reset(self, seed=None, options=None):
        t0 = time.perf_counter()
        out = super().reset(seed, options)
        _sync(self.device)
        self.sim_s += time.perf_counter() - t0
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def overhead_ms(num_envs: int, steps: int, case: str, device: str = "cpu",
                monitor: bool = False) -> tuple[float, float]:
    """``(min, median)`` over 7 repeats of the adapter's overhead per env step (ms), for ``case`` (see the
    docstring); ``monitor``: under ``VecMonitor``, whose time then counts too. On a shared machine the minimum is
    the figure: the others' load only adds to it.
    """
    from stable_baselines3.common.vec_env import VecMonitor

    if case == "no resets":
        fake, horizon = _Timed(num_envs, 0.0, device=device, obs_dim=42), 10**9
    elif case == "resets":
        fake, horizon = _Timed(num_envs, 1.0, np.arange(num_envs) % 50 + 1, device=device, obs_dim=42), 100
    else:
        fake, horizon = _Timed(num_envs, 0.0, device=device, obs_dim=42), 1
    venv = ManiSkillGPUVecEnv.from_env(fake, "PickCube-v2", max_episode_steps=horizon)
    venv = VecMonitor(venv) if monitor else venv
    venv.seed(0)
    venv.reset()
    actions = np.zeros((num_envs, 7), np.float32)
    for _ in range(20):  # warm-up
        venv.step(actions)
    runs = []
    for _ in range(7):
        fake.sim_s = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            venv.step(actions)
        runs.append((time.perf_counter() - t0 - fake.sim_s) / steps * 1e3)
    venv.close()
    return float(np.min(runs)), float(np.median(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-envs", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"adapter overhead, {args.num_envs} envs, device {args.device}, load {os.getloadavg()[0]:.2f}")
    for monitor in (False, True):
        print("  under VecMonitor:" if monitor else "  the adapter:")
        for case in ("no resets", "resets", "all reset"):
            ms, med = overhead_ms(args.num_envs, args.steps, case, args.device, monitor)
            mark = (" (target <= %.1f ms: %s)" % (TARGET_MS, "met" if ms <= TARGET_MS else "missed")
                    if case == "resets" and not monitor else "")
            print(f"    {case:10s} {ms:6.3f} ms/step (median {med:.3f}){mark}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
