"""Throughput benchmark: training env steps/s against raw env steps/s, in the same run (issue 2, item 7; issue 14).

    .venv/bin/python benchmarks/throughput.py [--steps 8192] [--num-envs 2] [--modes ppo,vlajs,vlajs_dp]
    .venv/bin/python benchmarks/throughput.py --sim-backend physx_cuda --num-envs 1024 --steps 327680  # NVIDIA GPU

On ``physx_cuda`` the envs are one batched sim in this process and the policy runs on ``--device`` (default
``cuda`` there): set ``--steps`` to a few rollouts (``n_steps * num_envs`` each; the config's n_steps, 32 with
``--n-steps``' default on the GPU); the vec env makes no renderer for the scripted teacher (it needs no image).

Raw: random actions through the same vec env (same number of worker processes), no policy.
Training: GuidedPPO.learn on the trainer's env stack (``build_env_stack``: ``TeacherGroupVecEnv`` with guidance,
``VecNormalize``), including the PPO updates, in ``ppo`` and ``vlajs`` mode (scripted teacher in-process);
``vlajs_dp`` is ``vlajs`` with the delayed interface's ``[hint, hint_valid, dt, dp]`` group, which reads every env's
privileged state at every env step. Targets: ratio >= 0.85 for ppo, >= 0.8 for vlajs (and vlajs_dp).

Every line carries the 1-minute load average before and after its measurement: on a shared machine the raw
throughput drifts by +-30% over minutes, so each mode's raw figure is measured right before its training figure
and the ratio compares that adjacent pair.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from robot_rl.config import build_config
from robot_rl.trainer import build_env, build_env_stack, build_guidance, build_model

#: ratio targets per mode (issue 14 item 4)
TARGETS = {"ppo": 0.85, "vlajs": 0.8, "vlajs_dp": 0.8}
#: config overrides per mode on top of the task and env count
MODES = {
    "ppo": {"mode": "ppo"},
    "vlajs": {"mode": "vlajs"},
    "vlajs_dp": {"mode": "vlajs", "interface": {"features": ["hint", "hint_valid", "dt", "dp"]}},
}


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def raw_steps_per_s(cfg, steps: int) -> float:
    venv = build_env(cfg, teacher_images=False)  # random actions: no teacher view
    venv.reset()
    rng = np.random.default_rng(0)
    n = venv.num_envs
    venv.step(rng.uniform(-1, 1, (n, 7)).astype(np.float32))  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps // n):
        venv.step(rng.uniform(-1, 1, (n, 7)).astype(np.float32))
    dt = time.perf_counter() - t0
    venv.close()
    return (steps // n) * n / dt


def train_steps_per_s(cfg, steps: int, state_stream: bool = True) -> tuple[float, int]:
    guidance = build_guidance(cfg, cfg.env.num_envs)
    venv, _ = build_env_stack(cfg, guidance=guidance)
    if not state_stream:  # every read of the privileged states a round trip to the workers (before issue 14)
        venv.stream_privileged_states(False)
    model = build_model(cfg, venv, guidance)
    model.learn(cfg.ppo.n_steps * venv.num_envs)  # warm-up rollout + update
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    dt = time.perf_counter() - t0
    venv.close()
    queries = guidance.stats.queries if guidance is not None else 0
    return steps / dt, queries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8192, help="env steps per measurement")
    p.add_argument("--num-envs", type=int, default=2)
    p.add_argument("--task", default="RRL-PushCube-Sparse-v1")
    p.add_argument("--sim-backend", default="physx_cpu", choices=("physx_cpu", "physx_cuda"),
                   help="physx_cuda: all envs batched in one GPU sim (an NVIDIA GPU; configs/train/paper_gpu.yaml's "
                        "setting)")
    p.add_argument("--device", default=None, help="torch device of the policy (default: cuda on physx_cuda, else cpu)")
    p.add_argument("--n-steps", type=int, default=None,
                   help="PPO rollout length per env (default: the config's; 32 on physx_cuda, as paper_gpu.yaml)")
    p.add_argument("--modes", default="ppo,vlajs", help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--no-state-stream", action="store_true",
                   help="read the privileged states by a round trip to the env workers (stream_privileged_states off: "
                        "what TeacherGroupVecEnv did before issue 14)")
    args = p.parse_args()
    modes = args.modes.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        p.error(f"unknown modes {unknown}; known: {', '.join(MODES)}")
    cuda = args.sim_backend == "physx_cuda"
    device = args.device or ("cuda" if cuda else "cpu")
    n_steps = args.n_steps or (32 if cuda else None)
    ppo = {"device": device, **({"n_steps": n_steps, "batch_size": min(4096, n_steps * args.num_envs)}
                                if n_steps else {})}
    print(f"{os.cpu_count()} cores, {args.num_envs} envs ({args.sim_backend}"
          + (", one batched sim" if cuda else ", one worker process each") + f"), policy on {device}, "
          f"{args.steps} env steps per measurement" + (", states by worker round trip" if args.no_state_stream else ""))
    for mode in modes:
        cfg = build_config({"task": args.task, "env": {"num_envs": args.num_envs, "sim_backend": args.sim_backend},
                            "ppo": ppo, **MODES[mode]})
        target = TARGETS[mode]
        load0 = _load()
        raw = raw_steps_per_s(cfg, args.steps)
        load1 = _load()
        print(f"{mode:8} raw env steps/s (random actions): {raw:.1f}  (load {load0} -> {load1})")
        sps, queries = train_steps_per_s(cfg, args.steps, state_stream=not args.no_state_stream)
        verdict = "met" if sps / raw >= target else "NOT met"
        print(f"{mode:8} training env steps/s: {sps:.1f}  ratio {sps / raw:.3f} (target >= {target}: {verdict})"
              + (f"  teacher queries {queries}" if mode != "ppo" else "") + f"  (load {load1} -> {_load()})",
              flush=True)


if __name__ == "__main__":
    main()
