"""Scripted-teacher competence on the task suite: each teacher run as the policy (issue 5, item 2).

    .venv/bin/python benchmarks/teacher_competence.py                    # 50 episodes per task, seed 0
    .venv/bin/python benchmarks/teacher_competence.py --episodes 10 --tasks PokeCube-v2

The teacher is queried on every env step (``robot_rl.teachers.evaluate.run_teacher_as_policy``) at the
task's default horizon. Prints a table (success rate against the target, mean and max episode length,
wall time) and writes it as JSON to --out. Targets: >= 0.8 for PushCube, PickCube, PokeCube and
PickPlaceCube, >= 0.7 for LiftPegUpright, >= 0.4 for PegInsertionSide.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from robot_rl.envs import get_task
from robot_rl.teachers import ScriptedTeacher
from robot_rl.teachers.evaluate import run_teacher_as_policy

TARGETS = {
    "PushCube-v2": 0.8,
    "PickCube-v2": 0.8,
    "PickPlaceCube-v2": 0.8,
    "LiftPegUpright-v2": 0.7,
    "PegInsertionSide-v2": 0.4,
    "PokeCube-v2": 0.8,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TARGETS), help="comma-separated task ids or paper names")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench_out/teacher_competence.json"))
    args = p.parse_args()
    rows = []
    for name in args.tasks.split(","):
        spec = get_task(name)
        t0 = time.perf_counter()
        r = run_teacher_as_policy(ScriptedTeacher(), spec.env_id, args.episodes, args.seed, instruction=spec.instruction)
        lengths = np.array(r["episode_lengths"])[np.array(r["successes"], dtype=bool)]
        rows.append(dict(task=spec.env_id, paper_name=spec.paper_name, horizon=spec.max_episode_steps,
                         episodes=args.episodes, success_rate=r["success_rate"], target=TARGETS.get(spec.paper_name),
                         mean_steps_success=float(lengths.mean()) if lengths.size else None,
                         max_steps_success=int(lengths.max()) if lengths.size else None,
                         wall_s=round(time.perf_counter() - t0, 1)))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'task':22} {'success':>8} {'target':>7} {'met':>4} {'steps (mean/max, successes)':>28} {'wall':>7}")
    for r in rows:
        met = "-" if r["target"] is None else ("yes" if r["success_rate"] >= r["target"] else "NO")
        steps = "-" if r["mean_steps_success"] is None else f"{r['mean_steps_success']:.1f} / {r['max_steps_success']}"
        print(f"{r['paper_name']:22} {r['success_rate']:8.2f} {r['target'] or '-':>7} {met:>4} {steps:>28} {r['wall_s']:6.0f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
