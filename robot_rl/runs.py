"""The run directory: layout, checkpoints, metrics and the success-curve plot (DESIGN.md, Runs).

::

    RUN_DIR/
      config.yaml            resolved config (what --resume reads)
      observation_schema.json  the observation's groups and fields (robot_rl.observation); the export copies it
      metrics.jsonl          one JSON object per PPO update (env steps, success rate, return, losses,
                             teacher queries, λ_t, steps/s)
      tb/                    TensorBoard events
      checkpoints/latest/    model.zip, vecnormalize.pkl and vecnormalize.json (the same statistics as JSON),
                             guidance.json, train_state.json (logger and episode statistics to carry over), written
                             atomically (what resume reads)
      checkpoints/step_000120000.zip  (+ step_000120000_vecnormalize.pkl and .json) the run.keep_checkpoints most
                             recent checkpoints, named by env step (SB3's CheckpointCallback keeps the same pair)
      eval.json              evaluation: summary (success rate, mean return, ...), per-episode results, seeds
      wandb/, wandb_id       with run.wandb: Weights & Biases' local files and the id of the W&B run (a resume
                             continues it)
      success_curve.png      success rate against env steps

Trust: ``vecnormalize.pkl`` is a pickle and SB3's ``model.zip`` holds cloudpickled objects (its ``data`` entry), so
resuming or evaluating a run directory made by someone else can run their code. ``robot-rl export`` reads neither
(``vecnormalize.json`` and the zip's ``policy.pth`` with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from robot_rl.config import TrainConfig, dump_config, load_config
from robot_rl.observation import SCHEMA_FILE, ObservationSchema

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
EVAL = "eval.json"
CURVE = "success_curve.png"
TB = "tb"
CKPT = "checkpoints/latest"
#: A step-numbered checkpoint's model, by env step (``checkpoints/step_000120000.zip``), and its normalization stats.
STEP_CKPT = "checkpoints/step_{:09d}.zip"
STEP_VECNORM = "checkpoints/step_{:09d}_vecnormalize.pkl"
STEP_VECNORM_JSON = "checkpoints/step_{:09d}_vecnormalize.json"
#: In a checkpoint: VecNormalize's statistics as JSON (:func:`vecnormalize_to_dict`), and the training state a
#: resume carries over (:class:`robot_rl.trainer.RunCallback`: logger values, clocks, episode statistics).
VECNORM_JSON = "vecnormalize.json"
TRAIN_STATE = "train_state.json"
#: ``format`` tag of :data:`VECNORM_JSON`.
VECNORM_FORMAT = "robot_rl.vecnormalize"
#: The W&B run id of a run with ``run.wandb`` (a resume continues that W&B run).
WANDB_ID = "wandb_id"
#: metrics.jsonl keys (SB3 logger names) of the env-step counter and the success rate.
STEP_KEY = "time/total_timesteps"
SUCCESS_KEY = "rollout/success_rate"


class RunDir:
    """Paths of one run directory. ``RunDir.create`` makes a new one; ``RunDir(path)`` opens one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, cfg: TrainConfig) -> RunDir:
        """Make ``cfg.run.out_dir/<name>`` and write the resolved config.

        A directory of that name that never reached its first checkpoint is started over.

        Raises:
            FileExistsError: a run directory of that name already holds a checkpoint (resume it instead).
        """
        name = cfg.run.name or f"{cfg.task}-{cfg.mode}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        run = cls(Path(cfg.run.out_dir) / name)
        run.recover_checkpoint()
        if run.has_checkpoint():
            raise FileExistsError(f"{run.path} already holds a run: resume it with "
                                  f"`robot-rl train --resume {run.path}`")
        run.path.mkdir(parents=True, exist_ok=True)
        run.metrics.unlink(missing_ok=True)
        dump_config(cfg, run.path / CONFIG)
        return run

    def config(self, overrides: list[str] | tuple = ()) -> TrainConfig:
        """The run's resolved config (with optional overrides, e.g. a larger ``total_steps``).

        Raises:
            FileNotFoundError: not a run directory.
        """
        if not (self.path / CONFIG).exists():
            raise FileNotFoundError(f"{self.path} is not a run directory (no {CONFIG})")
        return load_config(self.path / CONFIG, overrides)

    def save_schema(self, schema: ObservationSchema) -> None:
        """Write the run's observation schema (``observation_schema.json``)."""
        schema.save(self.path / SCHEMA_FILE)

    def schema(self) -> ObservationSchema | None:
        """The run's saved observation schema, or ``None`` for a run made before schemas were saved."""
        path = self.path / SCHEMA_FILE
        return ObservationSchema.load(path) if path.exists() else None

    def check_schema(self, schema: ObservationSchema) -> None:
        """Check that ``schema`` (built from the config now) is the run's saved one; a run made before
        schemas were saved (state only) gets it written.

        Raises:
            SchemaMismatch: they differ; the message names the first differing group and field.
        """
        saved = self.schema()
        if saved is None:
            self.save_schema(schema)
            return
        saved.check_matches(schema, f"the observation the config of {self.path} gives now")

    @property
    def metrics(self) -> Path:
        """The run's metrics, one JSON object per line (``metrics.jsonl``)."""
        return self.path / METRICS

    @property
    def tb(self) -> Path:
        """The run's TensorBoard log directory."""
        return self.path / TB

    @property
    def checkpoint(self) -> Path:
        """The latest checkpoint's directory (``model.zip``, ``vecnormalize.pkl``, ``guidance.json``)."""
        return self.path / CKPT

    def has_checkpoint(self) -> bool:
        """Whether the latest checkpoint has a saved model."""
        return (self.checkpoint / "model.zip").exists()

    def save_checkpoint(self, model, guidance_state: dict, keep: int = 0, train_state: dict | None = None) -> None:
        """Write model, observation-normalization stats (pickle and :data:`VECNORM_JSON`), guidance state and the
        training state; atomic (tmp dir + rename), so a kill mid-write leaves the previous checkpoint intact.

        Args:
            model: the SB3 model (its ``num_timesteps`` names the step checkpoint).
            guidance_state: :meth:`Guidance.state_dict`, or ``{}``.
            keep: also copy the model and its stats to the step-numbered pair (:data:`STEP_CKPT`) and keep only
                the ``keep`` most recent pairs (``run.keep_checkpoints``); 0: none (and none is removed).
            train_state: JSON-able state a resume carries over (:data:`TRAIN_STATE`), or None (not written).
        """
        tmp = self.checkpoint.with_name("latest.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save(tmp / "model.zip")
        venv = model.get_vec_normalize_env()
        if venv is not None:
            venv.save(str(tmp / "vecnormalize.pkl"))
            (tmp / VECNORM_JSON).write_text(json.dumps(vecnormalize_to_dict(venv)))
        if train_state is not None:
            (tmp / TRAIN_STATE).write_text(json.dumps(train_state))
        state = {"num_timesteps": int(model.num_timesteps), **guidance_state}
        (tmp / "guidance.json").write_text(json.dumps(state))
        old = self.checkpoint.with_name("latest.old")
        shutil.rmtree(old, ignore_errors=True)
        if self.checkpoint.exists():
            os.replace(self.checkpoint, old)
        os.replace(tmp, self.checkpoint)
        shutil.rmtree(old, ignore_errors=True)
        if keep > 0:
            self._save_step_checkpoint(int(model.num_timesteps), keep)

    def _save_step_checkpoint(self, step: int, keep: int) -> None:
        pairs = [(self.checkpoint / "model.zip", self.path / STEP_CKPT.format(step)),
                 (self.checkpoint / "vecnormalize.pkl", self.path / STEP_VECNORM.format(step)),
                 (self.checkpoint / VECNORM_JSON, self.path / STEP_VECNORM_JSON.format(step))]
        for src, dst in pairs:
            if src.exists():
                shutil.copyfile(src, dst.with_name(dst.name + ".tmp"))
                os.replace(dst.with_name(dst.name + ".tmp"), dst)
        for old_step in sorted(self.step_checkpoints())[:-keep]:
            for pattern in (STEP_CKPT, STEP_VECNORM, STEP_VECNORM_JSON):
                (self.path / pattern.format(old_step)).unlink(missing_ok=True)

    def step_checkpoints(self) -> dict[int, Path]:
        """The step-numbered checkpoints kept (``run.keep_checkpoints``): ``{env step: model .zip path}``; the
        normalization stats of step ``s`` are at ``RUN_DIR /`` :data:`STEP_VECNORM` ``.format(s)`` (pickle) and
        :data:`STEP_VECNORM_JSON` ``.format(s)`` (JSON), if it has any.
        """
        folder = self.path / Path(STEP_CKPT).parent
        out = {}
        for path in folder.glob("step_*.zip"):
            digits = path.stem.removeprefix("step_")
            if digits.isdigit():
                out[int(digits)] = path
        return dict(sorted(out.items()))

    def recover_checkpoint(self) -> None:
        """After a kill between the two renames of :meth:`save_checkpoint`, put the old one back."""
        old = self.checkpoint.with_name("latest.old")
        if not self.checkpoint.exists() and old.exists():
            os.replace(old, self.checkpoint)

    def checkpoint_state(self) -> dict:
        """The latest checkpoint's ``guidance.json``: ``num_timesteps`` and the guidance state."""
        return json.loads((self.checkpoint / "guidance.json").read_text())

    def train_state(self) -> dict:
        """The latest checkpoint's :data:`TRAIN_STATE` (``{}`` for a checkpoint written before it existed)."""
        path = self.checkpoint / TRAIN_STATE
        return json.loads(path.read_text()) if path.exists() else {}

    def read_metrics(self) -> list[dict]:
        """Rows of metrics.jsonl (a line cut short by a kill is skipped)."""
        if not self.metrics.exists():
            return []
        rows = []
        for line in self.metrics.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def truncate_metrics(self, max_step: int) -> None:
        """Drop metric rows past ``max_step`` env steps (a resumed run redoes them, so every step has one row);
        atomic (tmp file + rename).
        """
        rows = [r for r in self.read_metrics() if r.get(STEP_KEY, 0) <= max_step]
        tmp = self.metrics.with_name(METRICS + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, self.metrics)

    def write_eval(self, result: dict, path: str | Path | None = None) -> Path:
        """Write an evaluation's result (:func:`robot_rl.trainer.evaluate`) as JSON; returns where.

        Args:
            result: the result dict.
            path: the file (its parent is made); ``None``: the run's ``eval.json``.
        """
        out = self.path / EVAL if path is None else Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        return out

    def plot_success_curve(self) -> Path | None:
        """Success rate (last 100 episodes) against env steps, as ``success_curve.png``."""
        rows = [r for r in self.read_metrics() if SUCCESS_KEY in r]
        if not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cfg = self.config()
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r[STEP_KEY] for r in rows], [r[SUCCESS_KEY] for r in rows], label=cfg.mode)
        ax.set(xlabel="env steps", ylabel="success rate (last 100 episodes)", ylim=(-0.02, 1.02),
               title=f"{cfg.task} ({cfg.mode}, seed {cfg.seed})")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = self.path / CURVE
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out


def vecnormalize_to_dict(venv) -> dict:
    """A ``VecNormalize``'s statistics and settings as JSON-able data (SB3 2.9.2's attributes; float64 values, which
    ``json`` writes and reads back exactly).

    Returns:
        ``{"format", "version", "norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon",
        "obs_rms": {"mean" (D,), "var" (D,), "count"}, "ret_rms": {"mean" (), "var" (), "count"}}``.

    Raises:
        ValueError: a dict observation space (``obs_rms`` per key): the runs' observations are flat.
    """
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    if not isinstance(venv.obs_rms, RunningMeanStd):
        raise ValueError("vecnormalize_to_dict: only a flat (Box) observation's VecNormalize is supported")

    def rms(r: RunningMeanStd) -> dict:
        return {"mean": np.asarray(r.mean, dtype=np.float64).tolist(),
                "var": np.asarray(r.var, dtype=np.float64).tolist(), "count": float(r.count)}

    return {"format": VECNORM_FORMAT, "version": 1, "norm_obs": bool(venv.norm_obs),
            "norm_reward": bool(venv.norm_reward), "clip_obs": float(venv.clip_obs),
            "clip_reward": float(venv.clip_reward), "gamma": float(venv.gamma), "epsilon": float(venv.epsilon),
            "obs_rms": rms(venv.obs_rms), "ret_rms": rms(venv.ret_rms)}


def read_vecnormalize_json(path: str | Path) -> dict:
    """Read :data:`VECNORM_JSON` (written by :func:`vecnormalize_to_dict`); ``mean`` and ``var`` become float64
    arrays.

    Raises:
        ValueError: not such a file (its ``format`` tag), or a key missing (named).
    """
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("format") != VECNORM_FORMAT:
        raise ValueError(f"{path} is not a robot_rl VecNormalize statistics file (format != {VECNORM_FORMAT!r})")
    keys = ("norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon", "obs_rms", "ret_rms")
    missing = [k for k in keys if k not in data] + [f"{k}.{f}" for k in ("obs_rms", "ret_rms") if k in data
                                                   for f in ("mean", "var", "count") if f not in data[k]]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    for key in ("obs_rms", "ret_rms"):
        data[key] = {"mean": np.asarray(data[key]["mean"], dtype=np.float64),
                     "var": np.asarray(data[key]["var"], dtype=np.float64), "count": float(data[key]["count"])}
    return data


def vecnormalize_from_dict(stats: dict, venv, training: bool = True):
    """A ``VecNormalize`` around ``venv`` with the settings and statistics of :func:`read_vecnormalize_json`
    (what ``VecNormalize.load`` restores from the pickle, without unpickling).
    """
    from stable_baselines3.common.vec_env import VecNormalize

    out = VecNormalize(venv, training=training, norm_obs=stats["norm_obs"], norm_reward=stats["norm_reward"],
                       clip_obs=stats["clip_obs"], clip_reward=stats["clip_reward"], gamma=stats["gamma"],
                       epsilon=stats["epsilon"])
    for name in ("obs_rms", "ret_rms"):
        rms, saved = getattr(out, name), stats[name]
        if np.shape(rms.mean) != saved["mean"].shape:
            raise ValueError(f"VecNormalize statistics of shape {saved['mean'].shape} for an env observing "
                             f"{np.shape(rms.mean)}")
        rms.mean, rms.var, rms.count = saved["mean"].copy(), saved["var"].copy(), saved["count"]
    return out


def success_curve(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """``(env_steps (K,), success_rate (K,))`` from metrics rows that carry a success rate."""
    rows = [r for r in rows if SUCCESS_KEY in r]
    return np.array([r[STEP_KEY] for r in rows], dtype=float), np.array([r[SUCCESS_KEY] for r in rows], dtype=float)


def curve_summary(steps: np.ndarray, success: np.ndarray, budget: int, thresholds=(0.5, 0.9)) -> dict:
    """Area under the success curve and env steps to reach each threshold.

    Args:
        steps: ``(K,)`` env steps of the curve's points, increasing.
        success: ``(K,)`` success rate at each point; before the first point the success rate counts as 0.
        budget: env steps the run was given; the area is normalized by it (so 1.0 = always succeeding).
        thresholds: success rates in ``[0, 1]``; each gives a ``steps_to_<percent>`` key.

    Returns:
        ``{"auc": float in [0, 1], "final_success": float, "steps_to_50": int | None, ...}``
        (``None`` when a threshold is never reached).
    """
    out: dict = {"auc": 0.0, "final_success": float(success[-1]) if len(success) else 0.0}
    if len(steps):
        x = np.concatenate([[0.0], steps, [max(budget, steps[-1])]])
        y = np.concatenate([[0.0], success, [success[-1]]])
        out["auc"] = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / max(budget, steps[-1]))
    for thr in thresholds:
        hit = np.flatnonzero(success >= thr)
        out[f"steps_to_{int(round(thr * 100))}"] = int(steps[hit[0]]) if hit.size else None
    return out
