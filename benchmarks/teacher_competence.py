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

Memory tasks (issue 13: ``--memory-tasks``, TakeItBack-v0, RememberColor3-v0 and PickPlaceCube-v2-Restore by
default; a MIKASA-Robo task is skipped, with a note, when ``mikasa_robo_suite`` is not installed) get a table of
their own, with and without notes (``run_teacher_as_policy(memory=...)``):

* **notes**: the teacher's own notes are kept in a scratchpad (``robot_rl.memory.Scratchpad``, the task's
  vocabulary, default slots) across the episode and sent back with every query, as training with
  ``memory.enabled`` does; columns every env step (``D = 1``) and as used (``D``, held);
* **no notes**: no scratchpad is sent (a teacher without memory), as used; it acts on its current view alone.

Target with notes: >= 0.8 (every column); without notes the success should drop to about chance (the ``chance``
column: 1/3 for both MIKASA tasks, from their randomization).

    .venv/bin/python benchmarks/teacher_competence.py --tasks "" --memory-tasks TakeItBack-v0 --episodes 20
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
#: Memory tasks (issue 13): target with notes, and the success a teacher without memory can expect (None: not
#: worked out).
MEMORY_TARGETS = {
    "TakeItBack-v0": 0.8,
    "RememberColor3-v0": 0.8,
    "PickPlaceCube-v2-Restore": 0.8,
}
#: Chance of a teacher without memory: TakeItBack's start lies in one of three areas 0.1 m apart (guessing the
#: middle one succeeds in ~1/3); RememberColor3 shows one of three colours.
CHANCE = {"TakeItBack-v0": 1 / 3, "RememberColor3-v0": 1 / 3}


def measure(task: str, period: int, hold: bool, episodes: int, seed: int, memory: bool | None = None,
            sim_backend: str = "physx_cpu") -> dict:
    """One cell: the scripted teacher with control period ``period`` run as the policy on ``task``; ``memory``
    (memory tasks only): True keeps its notes in a scratchpad sent with every query, False sends none, None is a
    task without memory (no scratchpad either). ``sim_backend``: ``physx_cpu`` (its ``pd_ee_delta_pose`` solves IK and
    can fail) or ``physx_cuda`` (one damped least-squares step per control step: measure the planners there before a
    GPU grid, issue 17).
    """
    spec = get_task(task)
    t0 = time.perf_counter()
    r = run_teacher_as_policy(ScriptedTeacher(control_period_steps=period), spec.env_id, episodes, seed, hold=hold,
                              memory=bool(memory), sim_backend=sim_backend)
    lengths = np.array(r["episode_lengths"])[np.array(r["successes"], dtype=bool)]
    target = TARGETS.get(spec.paper_name) if memory is None else (MEMORY_TARGETS.get(spec.paper_name) if memory
                                                                  else None)
    return dict(task=spec.env_id, paper_name=spec.paper_name, horizon=spec.max_episode_steps, sim_backend=sim_backend,
                period=period,
                hold=hold, memory=memory, episodes=episodes, seed=seed, success_rate=r["success_rate"],
                target=target, chance=CHANCE.get(spec.paper_name) if memory is not None else None,
                queries=r["queries"], memory_stats=r.get("memory_stats"),
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
    p.add_argument("--memory-tasks", default=",".join(MEMORY_TARGETS),
                   help="comma-separated memory tasks, measured with and without notes ('' for none)")
    p.add_argument("--periods", default="4",
                   help="comma-separated control periods D (env steps) for the as-used columns")
    p.add_argument("--episodes", type=int, default=50, help="seeded episodes per cell (seeds SEED..SEED+N-1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    p.add_argument("--sim-backend", choices=("physx_cpu", "physx_cuda"), default="physx_cpu",
                   help="the simulator (and so the arm controller) the teachers are measured on; physx_cuda needs an "
                        "NVIDIA GPU")
    p.add_argument("--out", type=Path, default=Path("bench_out/teacher_competence.json"), help="JSON rows")
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    memory_tasks = []
    for t in (t for t in args.memory_tasks.split(",") if t):
        try:
            get_task(t)
            memory_tasks.append(t)
        except ValueError:  # a MIKASA-Robo task without mikasa_robo_suite installed
            print(f"skipping memory task {t}: not registered (MIKASA-Robo tasks need mikasa_robo_suite, setup.sh)")
    periods = [int(d) for d in args.periods.split(",") if d]
    cells = [(t, 1, False, None) for t in tasks] + [(t, d, True, None) for t in tasks for d in periods]
    cells += [(t, 1, False, True) for t in memory_tasks]
    cells += [(t, d, True, m) for t in memory_tasks for d in periods for m in (True, False)]
    rows = []
    for task, period, hold, memory in tqdm(cells, desc="teacher competence", unit="cell"):
        rows.append(measure(task, period, hold, args.episodes, args.seed, memory, args.sim_backend))
        tqdm.write(json.dumps(rows[-1]))
    header = (f"\nsuccess rate over {args.episodes} episodes from seed {args.seed} "
              "(✓/✗: target met; mean/max env steps of the successes)")
    if tasks:
        columns = ["every env step"] + [f"as used, D = {d}" for d in periods]
        print(header)
        print(f"{'task':22} {'target':>6}  " + "  ".join(f"{c:>22}" for c in columns))
        for task in tasks:
            mine = [r for r in rows if r["task"] == get_task(task).env_id and r["memory"] is None]
            name, target = mine[0]["paper_name"], mine[0]["target"]
            print(f"{name:22} {target or '-':>6}  " + "  ".join(f"{_cell(r):>22}" for r in mine))
    if memory_tasks:
        columns = ["notes, every env step"] + [f"{m}, as used, D = {d}" for d in periods
                                               for m in ("notes", "no notes")]
        print(header.replace("success rate", "memory tasks: success rate"))
        print(f"{'task':26} {'target':>6} {'chance':>6}  " + "  ".join(f"{c:>24}" for c in columns))
        for task in memory_tasks:
            mine = [r for r in rows if r["task"] == get_task(task).env_id and r["memory"] is not None]
            name, target, chance = mine[0]["paper_name"], mine[0]["target"], mine[0]["chance"]
            print(f"{name:26} {target or '-':>6} {'-' if chance is None else f'{chance:.2f}':>6}  "
                  + "  ".join(f"{_cell(r):>24}" for r in mine))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
