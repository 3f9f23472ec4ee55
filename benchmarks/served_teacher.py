"""Training against a served, asynchronous teacher (issue 12, item 6; research only, not in the test suite).

    .venv/bin/python benchmarks/served_teacher.py [--spec configs/bench/served.yaml] [--steps N] [--seeds S]

1. ``robot-rl bench`` of ``--spec`` (default ``configs/bench/served.yaml``): ``ppo`` (the speed reference) and
   ``vlajs`` with the delayed interface against ``robot-rl teacher serve`` (spawned per run, scripted backend)
   holding every answer ``250`` and ``1000`` ms (``teacher.latency_ms``), ``interface.delay.kind=measured``: the
   rollout never waits, each answer is delivered when it has arrived.
2. For each served run, the delay its answers actually had (env steps, mean over every answer delivered, from
   ``metrics.jsonl``), and a ``uniform`` run of the same mean (``[m - 5, m + 5]`` env steps, ``m`` rounded), so
   success can be compared with a simulated delay of the same size.
3. Every ``vlajs`` cell is evaluated with its answers exactly ``m`` env steps late (``robot-rl eval RUN
   --delay-steps m``, the scripted teacher of the run's own kind).

Prints, per arm: mean / p90 delay (env steps), answers dropped at episode ends, train success at budget, eval
success at ``m``, env steps/s, and the served runs' env steps/s as a fraction of ``ppo``'s (target >= 0.9: the
point of not blocking). All cells share one machine's load: run it alone for the speed figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from robot_rl.bench import CELL_RECORD, load_spec, run_grid
from robot_rl.runs import CONFIG

#: Half width of the uniform comparison's delay range, env steps.
UNIFORM_HALF_WIDTH = 5


def measured_delays(run: Path) -> dict:
    """The delays a run's answers had: ``{"mean", "p90_mean", "delivered", "dropped_at_reset"}`` (env steps;
    the mean weighted by the answers of each rollout; ``p90_mean``: the rollouts' 90th percentiles averaged).
    """
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "interface/delivered" in r]
    if not rows:
        raise ValueError(f"{run}: no interface metrics in metrics.jsonl")
    delivered = np.diff([0] + [r["interface/delivered"] for r in rows])
    means = np.array([r["interface/delay_steps_mean"] for r in rows], dtype=np.float64)
    ok = np.isfinite(means) & (delivered > 0)
    mean = float(np.average(means[ok], weights=delivered[ok])) if ok.any() else float("nan")
    p90 = [r["interface/delay_steps_p90"] for r in rows if np.isfinite(r["interface/delay_steps_p90"])]
    return {"mean": mean, "p90_mean": float(np.mean(p90)) if p90 else float("nan"),
            "delivered": int(rows[-1]["interface/delivered"]),
            "dropped_at_reset": int(rows[-1]["interface/dropped_at_reset"])}


def steps_per_s(run: Path) -> float:
    """Training env steps per wall-clock second of a finished run: its last logged ``time/steps_per_s``, the
    trainer's rate since the run (last) started. SB3's ``time/time_elapsed`` restarts at a resume while
    ``time/total_timesteps`` does not, so their ratio overstates a resumed run's speed.
    """
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float([r for r in rows if "time/steps_per_s" in r][-1]["time/steps_per_s"])


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=str(Path(__file__).resolve().parents[1] / "configs" / "bench" / "served.yaml"),
                   help="the served bench spec (default: configs/bench/served.yaml)")
    p.add_argument("--steps", type=int, default=None, help="env steps per run (default: the spec's)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: the spec's)")
    p.add_argument("--out", default=None, help="output directory (default: the spec's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    spec = load_spec(args.spec, steps=args.steps, seeds=args.seeds, out=args.out)
    served = dict(spec.arms)
    run_grid(spec, progress_bar=not args.no_progress)
    task = spec.tasks[0]
    runs = spec.out / task

    # 2. a uniform run per served arm, of the delay its answers had (seed 0's, rounded)
    delays: dict[str, dict] = {}
    arms = dict(served)
    for arm in served:
        d = measured_delays(runs / f"vlajs+{arm}-s0")
        delays[arm] = d
        if not np.isfinite(d["mean"]):
            print(f"{arm}: no answer was delivered (all {d['dropped_at_reset']} dropped at episode ends)")
            continue
        m = int(round(d["mean"]))
        keys = {k: v for k, v in served[arm].items() if not k.startswith("teacher.")}
        arms[f"uniform_{m}steps"] = {**keys, "interface.delay.kind": "uniform",
                                     "interface.delay.min_steps": max(m - UNIFORM_HALF_WIDTH, 0),
                                     "interface.delay.max_steps": m + UNIFORM_HALF_WIDTH}
        d["eval_delay"] = m
    eval_delays = sorted({d["eval_delay"] for d in delays.values() if "eval_delay" in d})
    spec2 = spec.model_copy(update={"arms": arms, "eval_delays": eval_delays})
    run_grid(spec2, progress_bar=not args.no_progress)

    # 3. the table
    ppo = [steps_per_s(r) for r in sorted(runs.glob("ppo-s*")) if (r / "eval.json").exists()]
    ppo_sps = float(np.mean(ppo)) if ppo else float("nan")
    out = {"ppo_steps_per_s": ppo_sps, "arms": {}}
    print(f"\n{task}, {spec.steps} env steps, {spec.seeds} seed(s); ppo {ppo_sps:.0f} env steps/s")
    print("| arm | delay mean (p90), env steps | dropped at reset | success at budget | eval at delay | "
          "env steps/s | / ppo |")
    print("|---|---|---|---|---|---|---|")
    for arm in arms:
        cells = sorted(runs.glob(f"vlajs+{arm}-s*"))
        done = [c for c in cells if (c / "eval.json").exists()]
        if not done:
            continue
        ds = [measured_delays(c) for c in done]
        train = [(_read(c / CELL_RECORD) or {}).get("summary", {}).get("final_success", float("nan")) for c in done]
        k = delays.get(arm, {}).get("eval_delay") or next(
            (d["eval_delay"] for a, d in delays.items() if arm == f"uniform_{d.get('eval_delay')}steps"), None)
        evals = [e["success_rate"] for c in done if k is not None and (e := _read(c / f"eval_delay_{k}.json"))]
        sps = float(np.mean([steps_per_s(c) for c in done]))
        row = {"delay_mean": float(np.mean([d["mean"] for d in ds])),
               "delay_p90": float(np.mean([d["p90_mean"] for d in ds])),
               "dropped_at_reset": int(np.mean([d["dropped_at_reset"] for d in ds])),
               "success_at_budget": float(np.nanmean(train)) if train else float("nan"),
               "eval_delay": k, "eval_success": float(np.mean(evals)) if evals else float("nan"),
               "steps_per_s": sps, "speed_vs_ppo": sps / ppo_sps}
        out["arms"][arm] = row
        print(f"| {arm} | {row['delay_mean']:.1f} ({row['delay_p90']:.1f}) | {row['dropped_at_reset']} | "
              f"{row['success_at_budget']:.2f} | {row['eval_success']:.2f} at {k} | {sps:.0f} | "
              f"{row['speed_vs_ppo']:.2f} |")
    (spec.out / "served_teacher.json").write_text(json.dumps(out, indent=2))
    print(f"\nwritten: {spec.out / 'served_teacher.json'}; configs of every run: <run>/{CONFIG}")
    return out


if __name__ == "__main__":
    main()
