"""A policy with a teacher observation group through ROS 2 with a served teacher, against direct evaluation.

Runs N episodes through the sim bridge, the policy node and ``robot-rl teacher serve`` (scripted backend, loopback
HTTP, every answer held ``--latency-ms``) as three processes on one DDS domain, then evaluates the same ONNX policy
directly in the simulator with the scripted teacher's answers delivered a fixed number of steps late, at each delay
the ROS run measured on at least 10% of its answers (the median first). Prints the ROS success, the direct success
at the matching delays, the measured delays (control steps from a query's observation to the step that showed the
answer, and seconds) and the hint's age over every step that showed one.

    .venv/bin/python benchmarks/deploy_teacher.py --policy runs/<run>/export --episodes 20 --latency-ms 150
    .venv/bin/python benchmarks/deploy_teacher.py --episodes 10      # no --policy: the tests' hint-following policy

The policy must observe the teacher group (a run with ``interface.features``, exported with ``robot-rl export``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def _pct(values, q) -> str:
    return f"{np.percentile(values, q):.3f}" if len(values) else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", type=Path, default=None,
                   help="export directory of a policy with a teacher group (default: build the hint-following one)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--latency-ms", type=float, default=0.0, help="the teacher server holds every answer this long")
    p.add_argument("--seed", type=int, default=0, help="seed of episode 0 (episode k: seed + k), both runs")
    p.add_argument("--domain", type=int, default=57, help="ROS_DOMAIN_ID of the three processes")
    p.add_argument("--out", type=Path, default=None, help="where the logs and the bag go (default: a temp dir)")
    args = p.parse_args()

    from robot_rl.deploy.policy import OnnxPolicy
    from robot_rl.deploy.sim_bridge import evaluate_direct
    from robot_rl.teachers.remote import free_port
    from robot_rl.testing.deploy_run import run_with_teacher

    out = args.out or Path(tempfile.mkdtemp(prefix="deploy_teacher_"))
    policy_dir = args.policy
    if policy_dir is None:
        from robot_rl.deploy.export import export_policy
        from robot_rl.testing.hint_policy import make_hint_following_run

        policy_dir = export_policy(make_hint_following_run(out / "runs", hold_steps=6.0).path)
    policy = OnnxPolicy(policy_dir)
    if "teacher" not in policy.schema.group_names:
        raise SystemExit(f"{policy_dir}: the policy observes {policy.schema.describe_sizes()}, no teacher group")
    task = policy.task_id
    period = int(policy.sidecar["teacher"]["control_period_steps"])
    print(f"policy {policy_dir} ({task}, {policy.schema.describe_sizes()}, D = {period}); server latency "
          f"{args.latency_ms:g} ms; {args.episodes} episodes from seed {args.seed}; logs in {out}")

    run = run_with_teacher(policy_dir, task, args.episodes, out / "ros", domain=args.domain, port=free_port(),
                           seed=args.seed, latency_ms=args.latency_ms, period_steps=period)
    steps = np.asarray(run.delay_steps, dtype=int)
    counts = np.bincount(steps) if steps.size else np.zeros(0, int)
    median = int(np.median(steps)) if steps.size else 0
    delays = [median] + [k for k, c in enumerate(counts) if c >= 0.1 * steps.size and k != median]
    direct = {}
    for k in delays:
        res = evaluate_direct(policy_dir, task, seed=args.seed, episodes=args.episodes, delay_steps=k)
        direct[k] = float(np.mean([r["success"] for r in res]))

    print()
    print("| figure | value |")
    print("|---|---|")
    print(f"| ROS 2 success ({len(run.episodes)} episodes) | {run.success_rate:.2f} |")
    for k in delays:
        tag = " (the median delay)" if k == median else ""
        print(f"| direct success, answers {k} steps late{tag} | {direct[k]:.2f} |")
    print(f"| answers by outcome | {json.dumps(run.outcomes())} |")
    hist = ", ".join(f"{k}: {c}" for k, c in enumerate(counts) if c)
    print(f"| delay, control steps (count) | {hist or '-'} |")
    print(f"| delay, s: p50 / p90 / max | {_pct(run.delay_s, 50)} / {_pct(run.delay_s, 90)} / "
          f"{max(run.delay_s) if run.delay_s else float('nan'):.3f} |")
    print(f"| hint age over the steps that showed one, s: p50 / p90 / max | {_pct(run.ages_s, 50)} / "
          f"{_pct(run.ages_s, 90)} / {max(run.ages_s) if run.ages_s else float('nan'):.3f} |")
    print(f"| ROS episode lengths | {[e['steps'] for e in run.episodes]} |")


if __name__ == "__main__":
    main()
