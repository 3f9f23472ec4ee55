"""Guidance benchmark: PushCube sparse, ppo vs rpd vs vlajs (issue 2, item 7).

    .venv/bin/python benchmarks/guidance.py                         # 3 modes x 2 seeds x 100k env steps
    .venv/bin/python benchmarks/guidance.py --steps 20000 --seeds 1  # a quick look

Each cell is a normal run directory under --out (default bench_out/guidance); a finished cell is
skipped and an interrupted one resumes from its checkpoint, so re-running continues the grid.
Prints a table (success at budget, area under the success curve, env steps to 50% success) and
writes table.json and curves.png beside the runs. Target (issue 2): vlajs >= 0.8 success by
100k env steps while ppo stays below 0.2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from robot_rl.config import load_config
from robot_rl.runs import EVAL, RunDir, curve_summary, success_curve
from robot_rl.trainer import resume, train

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "train" / "pushcube_sparse_vlajs.yaml"


def run_cell(out: Path, mode: str, seed: int, steps: int, extra: list[str]) -> RunDir:
    name = f"{mode}-s{seed}"
    run = RunDir(out / name)
    if (run.path / EVAL).exists():
        return run
    if run.has_checkpoint():
        return resume(run.path)
    overrides = [f"mode={mode}", f"seed={seed}", f"total_steps={steps}", f"run.out_dir={out}", f"run.name={name}", *extra]
    return train(load_config(CONFIG, overrides))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="ppo,rpd,vlajs")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--out", type=Path, default=Path("bench_out/guidance"))
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every cell")
    args = p.parse_args()
    modes = args.modes.split(",")
    table, curves = {}, {}
    for mode in modes:
        cells = []
        for seed in range(args.seeds):
            run = run_cell(args.out, mode, seed, args.steps, args.overrides)
            steps, success = success_curve(run.read_metrics())
            summary = curve_summary(steps, success, args.steps)
            summary["eval_success"] = json.loads((run.path / EVAL).read_text())["success_rate"]
            cells.append(summary)
            curves.setdefault(mode, []).append((steps, success))
        table[mode] = {
            "final_success_mean": float(np.mean([c["final_success"] for c in cells])),
            "eval_success_mean": float(np.mean([c["eval_success"] for c in cells])),
            "auc_mean": float(np.mean([c["auc"] for c in cells])),
            "steps_to_50": [c["steps_to_50"] for c in cells],
            "seeds": cells,
        }
    (args.out / "table.json").write_text(json.dumps(table, indent=2))
    print(f"\nPushCube sparse, {args.steps} env steps, {args.seeds} seed(s)")
    print(f"{'mode':6} {'success@budget (train)':>23} {'success (eval)':>15} {'AUC':>6}  steps to 50%")
    for mode, row in table.items():
        print(f"{mode:6} {row['final_success_mean']:23.2f} {row['eval_success_mean']:15.2f} {row['auc_mean']:6.3f}  {row['steps_to_50']}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (mode, runs), color in zip(curves.items(), ("tab:gray", "tab:orange", "tab:blue")):
        for i, (steps, success) in enumerate(runs):
            ax.plot(steps, success, color=color, alpha=0.9, label=mode if i == 0 else None)
    ax.set(xlabel="env steps", ylabel="success rate (last 100 episodes)", ylim=(-0.02, 1.02),
           title="PushCube sparse: guidance modes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "curves.png", dpi=110)
    print(f"wrote {args.out / 'table.json'} and {args.out / 'curves.png'}")


if __name__ == "__main__":
    main()
