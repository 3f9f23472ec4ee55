"""Scripted-teacher competence on the task suite, queried every env step and as training uses it (issue 10).

    .venv/bin/python benchmarks/teacher_competence.py                         # 50 episodes per task, seed 0, D = 4
    .venv/bin/python benchmarks/teacher_competence.py --periods 1,2,4         # as used at several control periods
    .venv/bin/python benchmarks/teacher_competence.py --episodes 10 --tasks PokeCube-v2

Two ways of running each teacher as the policy (``robot_rl.teachers.evaluate.run_teacher_as_policy``), each
at the task's default horizon from the same seeded episodes:

* **every env step**: a ``D = 1`` teacher asked at every env step (a 20 Hz teacher);
* **as used**: a ``D``-step teacher (``teacher.control_period_steps``, 4 by default: a 5 Hz teacher at 20 Hz
  control) asked once per ``D`` env steps, its answer replayed open loop through the trainer's own
  interpolation (``robot_rl.guidance.targets``). This is what the policy learns from in ``vlajs`` mode.

Prints a table (success rate against the target, mean and max episode length of the successes, wall time) and
writes every row as JSON to ``--out``. Targets (for every column): >= 0.8 for PushCube, PickCube, PokeCube and
PickPlaceCube, >= 0.7 for LiftPegUpright, >= 0.4 for PegInsertionSide.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

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


def measure(task: str, period: int, hold: bool, episodes: int, seed: int) -> dict:
    """One cell: the scripted teacher with control period ``period`` run as the policy on ``task``."""
    spec = get_task(task)
    t0 = time.perf_counter()
    r = run_teacher_as_policy(ScriptedTeacher(control_period_steps=period), spec.env_id, episodes, seed, hold=hold)
    lengths = np.array(r["episode_lengths"])[np.array(r["successes"], dtype=bool)]
    return dict(task=spec.env_id, paper_name=spec.paper_name, horizon=spec.max_episode_steps, period=period,
                hold=hold, episodes=episodes, seed=seed, success_rate=r["success_rate"],
                target=TARGETS.get(spec.paper_name), queries=r["queries"],
                mean_steps_success=float(lengths.mean()) if lengths.size else None,
                max_steps_success=int(lengths.max()) if lengths.size else None,
                wall_s=round(time.perf_counter() - t0, 1))


def _cell(r: dict) -> str:
    met = "" if r["target"] is None else (" ✓" if r["success_rate"] >= r["target"] else " ✗")
    steps = "-" if r["mean_steps_success"] is None else f"{r['mean_steps_success']:.1f}/{r['max_steps_success']}"
    return f"{r['success_rate']:.2f}{met} ({steps})"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TARGETS), help="comma-separated task ids or paper names")
    p.add_argument("--periods", default="4",
                   help="comma-separated control periods D (env steps) for the as-used columns")
    p.add_argument("--episodes", type=int, default=50, help="seeded episodes per cell (seeds SEED..SEED+N-1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    p.add_argument("--out", type=Path, default=Path("bench_out/teacher_competence.json"), help="JSON rows")
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    periods = [int(d) for d in args.periods.split(",") if d]
    cells = [(t, 1, False) for t in tasks] + [(t, d, True) for t in tasks for d in periods]
    rows = []
    for task, period, hold in tqdm(cells, desc="teacher competence", unit="cell"):
        rows.append(measure(task, period, hold, args.episodes, args.seed))
        tqdm.write(json.dumps(rows[-1]))
    columns = ["every env step"] + [f"as used, D = {d}" for d in periods]
    print(f"\nsuccess rate over {args.episodes} episodes from seed {args.seed} "
          "(✓/✗: target met; mean/max env steps of the successes)")
    print(f"{'task':22} {'target':>6}  " + "  ".join(f"{c:>22}" for c in columns))
    for task in tasks:
        mine = [r for r in rows if r["task"] == get_task(task).env_id]
        name, target = mine[0]["paper_name"], mine[0]["target"]
        print(f"{name:22} {target or '-':>6}  " + "  ".join(f"{_cell(r):>22}" for r in mine))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
