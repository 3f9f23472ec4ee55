"""``robot-rl bench``: the task x mode x seed grid that reproduces the VLAJS paper's table.

Each cell is a normal run directory (``robot_rl.runs``) at ``OUT/<task id>/<label>-s<seed>``, where the
label is the mode, plus any variant (``vlajs+direction_noise_deg=30``). The grid is resumable: a
finished cell (``eval.json``) is read, not rerun; an interrupted one resumes from its checkpoint; a
cell that raises is recorded as failed (``bench_cell.json``: error and traceback) and the grid goes
on (a later run of the same command retries it). A finished cell whose config differs from what the
grid would run now (another budget, another base config) stops the grid with the keys that differ, so
results of two experiments are never mixed under one ``OUT``.

Outputs, in ``OUT``, over every cell recorded there (grids of several specs may share one ``OUT``):
``results.json`` (every cell and every aggregate), ``results.md`` (the table), and ``<task id>.png`` per
task (success curves, mean over seeds with a min-max band).

Per task and label the table gives: success at budget (train success rate over the last 100 episodes
at the end, mean ± std over seeds), eval success (deterministic policy, ``run.eval_episodes``
episodes), the area under the success curve (normalized by the budget: 1.0 = always succeeding),
env steps to 50% and 90% success (per seed; ``-`` = never), teacher queries used (mean per seed) and
wall time (summed over seeds).

Paper figures (DESIGN.md; Moroncelli et al. 2026, success at budget, VLAJS vs PPO) are in
:data:`PAPER_RESULTS`; ``results.md`` prints them beside ours where the budget matches.

Success against latency (the delayed interface, issue 12; ``configs/bench/latency.yaml``): named ``arms`` (each a
set of config keys, a ``vlajs+<arm>`` label) and ``eval_delays``: every finished cell is also evaluated with its
teacher's answers delivered ``k`` env steps late for each ``k`` (``robot-rl eval RUN --delay-steps k``;
``eval_delay_<k>.json`` in the cell, resumable). With ``teacher_competence`` the scripted teacher itself is run as
the policy at each delay (its answers held for ``D`` and ``k`` steps late; ``OUT/<task>/teacher_competence.json``).
``results.md`` then gains a success-against-latency table and ``<task>_latency.png`` a curve per arm.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from robot_rl.config import ConfigError, build_config, load_config, read_yaml_mapping
from robot_rl.runs import CONFIG, EVAL, STEP_KEY, RunDir, curve_summary, success_curve

__all__ = [
    "MODES",
    "NOISE_KEYS",
    "PAPER_RESULTS",
    "BenchSpec",
    "Cell",
    "grid_cells",
    "run_grid",
    "summarize",
    "write_report",
    "read_records",
    "load_spec",
]

#: Training modes a grid can hold (``robot_rl.config.TrainConfig.mode``).
MODES = ("ppo", "rpd", "vlajs")
#: Teacher-quality knobs ``--teacher-noise`` sweeps (``teacher.<key>``, scripted teacher).
NOISE_KEYS = ("direction_noise_deg", "bias_rotation_deg", "wrong_fraction")
#: Config sections that only matter when a teacher is used: ``ppo`` cells skip variants on them.
TEACHER_SECTIONS = ("teacher.", "guidance.")
#: Per-cell record next to the run directory's own files.
CELL_RECORD = "bench_cell.json"
#: Start method of the process each cell trains in (:func:`run_cell_in_process`): a fresh interpreter, so no
#: simulator, Vulkan or CUDA state of an earlier cell is inherited (ManiSkill leaks Vulkan resources over many
#: sequential ``gym.make`` calls in one process, upstream issue haosulab/ManiSkill#1474), and a crash (a segfault
#: in the simulator, an out-of-memory kill) ends only that cell.
CELL_START_METHOD = "spawn"

#: The paper's success at budget (Moroncelli et al. 2026, DESIGN.md): task -> (env steps, vlajs, ppo).
PAPER_RESULTS: dict[str, tuple[int, float, float]] = {
    "RRL-PickCube-Sparse-v1": (9_900_000, 0.951, 0.000),
    "RRL-PickPlaceCube-Sparse-v1": (37_700_000, 0.659, 0.000),
    "RRL-LiftPegUpright-Sparse-v1": (7_300_000, 0.915, 0.169),
    "RRL-PokeCube-Sparse-v1": (8_800_000, 0.814, 0.099),
    "RRL-PushCube-Sparse-v1": (1_900_000, 0.944, 0.491),
}

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "train" / "pushcube_sparse_vlajs.yaml"


class BenchSpec(BaseModel):
    """A grid, as ``configs/bench/*.yaml`` or the ``robot-rl bench`` flags give it.

    Attributes:
        config: the train config every cell starts from (default: the main job's).
        tasks: task ids or paper names (``robot-rl tasks``).
        modes: subset of :data:`MODES`.
        seeds: number of seeds; cells use seeds ``0 .. seeds-1``.
        steps: env steps per cell: one number, or per task (``{PickCube-v2: 200000, ...}``).
        overrides: ``KEY=VALUE`` config overrides for every cell (e.g. ``env.sim_backend=physx_cuda``).
        teacher_noise: one-at-a-time sweep of the scripted teacher's weakness knobs
            (:data:`NOISE_KEYS`): ``{direction_noise_deg: [15, 30]}`` adds a ``vlajs+direction_noise_deg=15``
            and a ``...=30`` variant of ``vlajs``, next to the clean teacher.
        vary: full-product sweep of any config keys (``{guidance.deactivate_threshold: [0.9, null]}``).
            Keys under ``teacher.`` / ``guidance.`` do not multiply ``ppo`` cells.
        arms: named variants, each a mapping of config keys (``{d_hint_dt_dp: {interface.features:
            [hint, dt, dp]}}``): a ``<mode>+<name>`` cell per arm instead of the plain cell of its mode. An arm is
            of mode ``vlajs`` unless it sets ``mode`` (``{lstm: {mode: ppo, ppo.recurrent: true}}``); a mode of
            ``modes`` without arms keeps its plain cell, and an arm of a mode not in ``modes`` does not run
            (``--modes vlajs`` runs the vlajs arms only).
        eval_delays: evaluate every finished cell at these fixed delays of its teacher's answers (env steps).
        teacher_competence: also run the scripted teacher as the policy at each of ``eval_delays``.
        out: the grid's directory.
    """

    model_config = ConfigDict(extra="forbid")

    config: Path = DEFAULT_CONFIG
    tasks: list[str]
    modes: list[str] = Field(default_factory=lambda: list(MODES))
    seeds: int = Field(2, ge=1)
    steps: int | dict[str, int] = 100_000
    overrides: list[str] = Field(default_factory=list)
    teacher_noise: dict[str, list[float]] = Field(default_factory=dict)
    vary: dict[str, list[Any]] = Field(default_factory=dict)
    arms: dict[str, dict[str, Any]] = Field(default_factory=dict)
    eval_delays: list[int] = Field(default_factory=list)
    teacher_competence: bool = False
    out: Path = Path("bench_out/bench")

    @model_validator(mode="after")
    def _arm_modes(self) -> "BenchSpec":
        for arm, keys in self.arms.items():
            mode = keys.get("mode", "vlajs")
            if mode not in MODES:
                raise ValueError(f"arms.{arm}.mode: unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        return self

    @field_validator("eval_delays")
    @classmethod
    def _delays(cls, delays: list[int]) -> list[int]:
        if any(d < 0 for d in delays):
            raise ValueError(f"eval_delays: env steps must be >= 0, got {delays}")
        return sorted(set(delays))

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str]) -> list[str]:
        from robot_rl.envs import get_task

        if not tasks:
            raise ValueError("tasks: give at least one task (robot-rl tasks lists them)")
        return [get_task(t).env_id for t in tasks]  # ValueError lists the known tasks

    @field_validator("modes")
    @classmethod
    def _known_modes(cls, modes: list[str]) -> list[str]:
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise ValueError(f"unknown mode(s) {bad}; valid modes: {', '.join(MODES)}")
        return modes

    @field_validator("teacher_noise")
    @classmethod
    def _known_knobs(cls, sweep: dict[str, list[float]]) -> dict[str, list[float]]:
        bad = [k for k in sweep if k not in NOISE_KEYS]
        if bad:
            raise ValueError(f"unknown teacher-noise knob(s) {bad}; valid: {', '.join(NOISE_KEYS)}")
        return sweep

    def steps_for(self, task: str) -> int:
        """The budget of ``task`` (an env id), env steps.

        Raises:
            ConfigError: ``steps`` is per task and names neither ``task`` nor its paper name.
        """
        if isinstance(self.steps, int):
            return self.steps
        from robot_rl.envs import get_task

        by_id = {get_task(k).env_id: v for k, v in self.steps.items()}
        if task not in by_id:
            raise ConfigError(f"steps: no budget for {task}; the spec gives {sorted(self.steps)}")
        return by_id[task]


def load_spec(path: str | Path | None, **fields: Any) -> BenchSpec:
    """A :class:`BenchSpec` from a YAML file with ``fields`` (CLI flags, ``None`` = keep) on top. A relative
    ``config`` path is tried from the working directory, then from the repository root; ``out`` is
    relative to the working directory.

    Raises:
        ConfigError: unreadable YAML, an unknown key, an unknown task or mode; the message names it
            (``robot_rl.config``'s messages, as for train configs).
        FileNotFoundError: ``path`` does not exist.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(path)
        if "config" in data and not Path(data["config"]).is_absolute() and not Path(data["config"]).exists():
            data["config"] = REPO_ROOT / data["config"]
    for key, value in fields.items():
        if value is None:
            continue
        if key in ("overrides",):
            data[key] = [*data.get(key, []), *value]
        elif key in ("teacher_noise", "vary"):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    return build_config(data, model=BenchSpec)


def parse_sweep(items: list[str] | None) -> dict[str, list[Any]] | None:
    """``["teacher.direction_noise_deg=0,30", ...]`` -> ``{"teacher.direction_noise_deg": [0, 30]}``
    (values parsed as YAML: ``null``, numbers, strings).

    Raises:
        ConfigError: an item without ``=`` or without values.
    """
    if not items:
        return None
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"sweep {item!r}: expected KEY=V1,V2,...")
        out[key.strip()] = [yaml.safe_load(v) for v in values.split(",")]
    return out


class Cell(BaseModel):
    """One run of the grid."""

    task: str
    mode: str
    seed: int
    steps: int
    variant: dict[str, Any] = Field(default_factory=dict)

    arm: str | None = None

    @property
    def label(self) -> str:
        """``mode``, ``mode+<arm>`` or ``mode+key=value+...`` (``teacher.`` dropped from keys)."""
        parts = [f"{k.removeprefix('teacher.')}={_fmt(v)}" for k, v in self.variant.items() if self.arm is None]
        return "+".join([self.mode, *([self.arm] if self.arm else []), *parts])

    @property
    def name(self) -> str:
        """The cell's run directory name under ``OUT/<task>``: ``<label>-s<seed>``."""
        return f"{self.label}-s{self.seed}"

    def overrides(self, out: Path, common: list[str]) -> list[str]:
        """Config overrides that make this cell's run from the grid's base config."""
        cell = [f"task={self.task}", f"mode={self.mode}", f"seed={self.seed}", f"total_steps={self.steps}"]
        cell += [f"{k}={json.dumps(v)}" for k, v in self.variant.items()]
        return [*common, *cell, f"run.out_dir={out / self.task}", f"run.name={self.name}"]


def _fmt(v: Any) -> str:
    return "null" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def grid_cells(spec: BenchSpec) -> list[Cell]:
    """Every cell of ``spec``: task-major, then seed, then mode and variant. Teacher-noise variants are made
    for ``vlajs`` only (the sweep asks where VLAJS guidance stops helping); ``vary`` applies to every mode.
    """
    noise = [{}] + [{f"teacher.{k}": v} for k, vs in spec.teacher_noise.items() for v in vs]
    axes = list(spec.vary.items())
    products = [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[vs for _, vs in axes])]
    cells: list[Cell] = []
    for task in spec.tasks:
        for seed in range(spec.seeds):  # seed-major: a grid cut short still has every label's first seed
            for mode in spec.modes:
                arms = {a: {k: v for k, v in keys.items() if k != "mode"}
                        for a, keys in spec.arms.items() if keys.get("mode", "vlajs") == mode}
                if arms:
                    for arm, keys in arms.items():
                        cells.append(Cell(task=task, mode=mode, seed=seed, steps=spec.steps_for(task),
                                          variant=keys, arm=arm))
                    continue
                variants: list[dict[str, Any]] = []
                for n, p in itertools.product(noise, products):
                    if n and mode != "vlajs":
                        continue  # the teacher-quality sweep is about VLAJS guidance
                    v = {**n, **p}
                    if mode == "ppo":
                        v = {k: x for k, x in v.items() if not k.startswith(TEACHER_SECTIONS)}
                    if v not in variants:
                        variants.append(v)
                for v in variants:
                    cells.append(Cell(task=task, mode=mode, seed=seed, steps=spec.steps_for(task), variant=v))
    return cells


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        if prefix == "" and k == "run":
            continue  # out_dir, name, progress bar, checkpoint cadence: not the experiment
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}: {va!r} vs {vb!r}")
    return keys


def _read_record(run: RunDir) -> dict:
    path = run.path / CELL_RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def _write_record(run: RunDir, record: dict) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    tmp = run.path / (CELL_RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(run.path / CELL_RECORD)


def _failed(run: RunDir, base: dict, wall_s: float, err: Exception, during: str = "") -> dict:
    """Record a cell that raised ``err`` (its message prefixed with ``during``) and return the record."""
    record = {**base, "status": "failed", "wall_s": wall_s, "error": f"{during}{type(err).__name__}: {err}",
              "traceback": traceback.format_exc(), "summary": None}
    _write_record(run, record)
    return record


def run_cell(cell: Cell, spec: BenchSpec, *, train_fn: Callable | None = None, resume_fn: Callable | None = None,
             progress_bar: bool = True, evaluate_delays: bool = True) -> dict:
    """Run (or resume, or read) one cell; returns its record.

    Record: ``{"status": "done" | "failed", "label", "task", "mode", "seed", "steps", "variant", "wall_s",
    "error", "traceback", "summary"}``; ``summary`` (done cells) holds :func:`cell_summary`.

    Raises:
        ConfigError: the cell's config is invalid, or a finished cell was run with another config.
        KeyboardInterrupt: passed on (the cell resumes next time).
    """
    from robot_rl import trainer

    train_fn = train_fn or trainer.train
    resume_fn = resume_fn or trainer.resume
    cfg = load_config(spec.config, [*cell.overrides(spec.out, spec.overrides), f"run.progress_bar={progress_bar}"])
    run = RunDir(spec.out / cell.task / cell.name)
    if (run.path / CONFIG).exists():
        # Resolved configs (defaults filled in), so keys added to the schema after a run do not count.
        diff = _config_diff(run.config().model_dump(mode="json"), cfg.model_dump(mode="json"))
        if diff:
            raise ConfigError(
                f"{run.path} was run with another config ({'; '.join(diff)}): use another --out, or delete the cell"
            )
    base = {**cell.model_dump(), "label": cell.label}
    wall = _read_record(run).get("wall_s") or 0.0  # seconds spent on this cell by earlier attempts
    if not (run.path / EVAL).exists():
        t0 = time.time()
        try:
            if run.has_checkpoint():
                resume_fn(run.path, [f"run.progress_bar={progress_bar}"])
            else:
                train_fn(cfg)
        except (KeyboardInterrupt, ConfigError):
            raise
        except Exception as err:  # noqa: BLE001 - a crashed cell is recorded and the grid goes on
            return _failed(run, base, wall + time.time() - t0, err)
        wall += time.time() - t0
    if evaluate_delays:
        try:
            evaluate_at_delays(run, spec.eval_delays)
        except (KeyboardInterrupt, ConfigError):
            raise
        except Exception as err:  # noqa: BLE001 - recorded like a crashed cell; a re-run retries the evaluation
            return _failed(run, base, wall, err, during="evaluation at fixed delays: ")
    summary = cell_summary(run, cell.steps, wall or None)
    record = {**base, "status": "done", "wall_s": summary["wall_s"], "error": None, "traceback": None,
              "summary": summary}
    _write_record(run, record)
    return record


def _cell_process(cell: dict, spec: dict, progress_bar: bool, train_fn, resume_fn, conn) -> None:
    """Body of a cell's own process: :func:`run_cell`, its record (or a ConfigError's message) sent back."""
    try:
        record = run_cell(Cell.model_validate(cell), BenchSpec.model_validate(spec), train_fn=train_fn,
                          resume_fn=resume_fn, progress_bar=progress_bar)
        conn.send(("record", record))
    except ConfigError as err:
        conn.send(("config_error", str(err)))
    finally:
        conn.close()


def run_cell_in_process(cell: Cell, spec: BenchSpec, *, progress_bar: bool = True, train_fn: Callable | None = None,
                        resume_fn: Callable | None = None) -> dict:
    """:func:`run_cell` in a process of its own (:data:`CELL_START_METHOD`); returns its record.

    A process that dies without a record (a signal, ``os._exit``, an out-of-memory kill) is recorded as a failed
    cell naming its exit code, and the grid goes on; the cell resumes from its last checkpoint next time.
    ``train_fn`` and ``resume_fn`` must be picklable (module-level functions).

    Raises:
        ConfigError: raised in the cell's process (its message).
        KeyboardInterrupt: passed on, after the cell's process is terminated.
    """
    ctx = multiprocessing.get_context(CELL_START_METHOD)
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_cell_process, name=f"bench-{cell.name}",
                       args=(cell.model_dump(mode="json"), spec.model_dump(mode="json"), progress_bar, train_fn,
                             resume_fn, send))
    run = RunDir(spec.out / cell.task / cell.name)
    wall0, t0 = _read_record(run).get("wall_s") or 0.0, time.time()
    proc.start()
    send.close()
    try:
        try:
            kind, payload = receive.recv()
        except EOFError:  # the process ended without a word
            kind, payload = None, None
        proc.join()
    except KeyboardInterrupt:
        proc.terminate()
        proc.join()
        raise
    if kind == "config_error":
        raise ConfigError(payload)
    if kind == "record":
        return payload
    base = {**cell.model_dump(), "label": cell.label}
    record = {**base, "status": "failed", "wall_s": wall0 + time.time() - t0,
              "error": f"the cell's process died without a record (exit code {proc.exitcode})",
              "traceback": None, "summary": None}
    _write_record(run, record)
    return record


def delay_eval_path(run: RunDir, delay_steps: int) -> Path:
    """Where a cell keeps its evaluation at a fixed delay of its teacher's answers."""
    return run.path / f"eval_delay_{int(delay_steps)}.json"


def evaluate_at_delays(run: RunDir, delays: list[int]) -> None:
    """Evaluate a finished run at each fixed delay (env steps) of its teacher's answers that it has not been
    evaluated at (``eval_delay_<k>.json``; resumable). A run whose policy observes no ``teacher`` group does not
    see its teacher at evaluation: its ``eval.json`` (same seeds) stands for every delay.
    """
    from robot_rl.trainer import evaluate

    if not delays:
        return
    cfg = run.config()
    for k in delays:
        path = delay_eval_path(run, k)
        if path.exists():
            continue
        if cfg.interface.features:
            result = evaluate(run.path, max(cfg.run.eval_episodes, 1), delay_steps=k)
        else:
            result = {**json.loads((run.path / EVAL).read_text()), "delay_steps": k, "no_teacher_group": True}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(path)


def teacher_competence_at_delays(task: str, spec: BenchSpec) -> dict[int, float]:
    """The scripted teacher run as the policy of ``task`` at each of ``spec.eval_delays``: its answers held for
    its period ``D`` (the base config's ``teacher.control_period_steps``) and delivered ``k`` env steps late;
    ``{k: success rate}`` over the run config's ``eval_episodes`` episodes from seed 10000. Cached in
    ``OUT/<task>/teacher_competence.json``.
    """
    from robot_rl.teachers import ScriptedTeacher
    from robot_rl.teachers.evaluate import run_teacher_as_policy
    from robot_rl.trainer import EVAL_SEED_OFFSET

    path = spec.out / task / "teacher_competence.json"
    have = {int(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else {}
    cfg = load_config(spec.config, [*spec.overrides, f"task={task}"])
    episodes = max(cfg.run.eval_episodes, 1)
    for k in spec.eval_delays:
        if k not in have:
            r = run_teacher_as_policy(ScriptedTeacher(control_period_steps=cfg.teacher.control_period_steps), task,
                                      episodes, EVAL_SEED_OFFSET, hold=True, delay_steps=k)
            have[k] = r["success_rate"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({str(d): v for d, v in sorted(have.items())}, indent=2))
    return have


def cell_summary(run: RunDir, budget: int, wall_s: float | None = None) -> dict:
    """Figures of a finished run: ``final_success``, ``eval_success``, ``eval_grasp_rate`` and
    ``eval_closest_m`` (``trainer.evaluate``'s grasp rate and mean closest TCP-object distance, m; None
    for an older eval.json), ``auc``, ``steps_to_50``,
    ``steps_to_90`` (env steps or None), ``queries`` (teacher queries, 0 for ppo), ``wall_s`` (s; from
    the metrics when the grid did not time it), and the curve (``curve_steps``, ``curve_success``).
    """
    rows = run.read_metrics()
    steps, success = success_curve(rows)
    out = curve_summary(steps, success, budget)
    ev = json.loads((run.path / EVAL).read_text())
    out["eval_success"] = float(ev["success_rate"])
    out["eval_grasp_rate"] = ev.get("grasp_rate")  # None for runs evaluated before it was measured
    out["eval_closest_m"] = ev.get("mean_closest_approach_m")
    queries = [r["guidance/queries"] for r in rows if "guidance/queries" in r]
    out["queries"] = int(queries[-1]) if queries else 0
    if wall_s is None:
        elapsed = [r.get("time/time_elapsed") for r in rows if "time/time_elapsed" in r]
        wall_s = float(elapsed[-1]) if elapsed else None
    out["wall_s"] = wall_s
    out["env_steps"] = int(steps[-1]) if len(steps) else int(max((r.get(STEP_KEY, 0) for r in rows), default=0))
    out["curve_steps"] = steps.tolist()
    out["curve_success"] = success.tolist()
    by_delay = {}
    for path in run.path.glob("eval_delay_*.json"):
        by_delay[int(path.stem.removeprefix("eval_delay_"))] = float(json.loads(path.read_text())["success_rate"])
    out["eval_by_delay"] = {str(k): by_delay[k] for k in sorted(by_delay)}
    return out


def run_grid(spec: BenchSpec, *, progress_bar: bool = True, log: Callable[[str], None] = print,
             train_fn: Callable | None = None, resume_fn: Callable | None = None,
             isolate: bool | None = None) -> list[dict]:
    """Run every cell of ``spec`` in order (see the module docstring), then :func:`write_report`.

    ``isolate``: train each unfinished cell in a process of its own (:func:`run_cell_in_process`, issue 17);
    ``None`` isolates when the real trainer runs the cells (no ``train_fn``/``resume_fn`` given: the CLI, the
    benchmarks) and runs injected ones (tests) in this process. Finished cells are read in this process.

    Returns:
        the cell records, grid order.

    Raises:
        ConfigError: a cell's config is invalid (checked for every cell before any runs).
    """
    cells = grid_cells(spec)
    for cell in cells:  # a bad key or value stops the grid before hours of runs, not in the middle
        load_config(spec.config, cell.overrides(spec.out, spec.overrides))
    records = []
    for i, cell in enumerate(cells):
        run_path = spec.out / cell.task / cell.name
        done = (run_path / EVAL).exists()
        log(f"[{i + 1}/{len(cells)}] {cell.task} {cell.name}: {'done, reading' if done else 'running'}")
        if not done and (isolate if isolate is not None else train_fn is None and resume_fn is None):
            rec = run_cell_in_process(cell, spec, train_fn=train_fn, resume_fn=resume_fn, progress_bar=progress_bar)
        else:
            rec = run_cell(cell, spec, train_fn=train_fn, resume_fn=resume_fn, progress_bar=progress_bar)
        if rec["status"] == "failed":
            log(f"  FAILED: {rec['error']} (traceback in {run_path / CELL_RECORD}); going on")
        records.append(rec)
        write_report(spec.out)
    if spec.teacher_competence and spec.eval_delays:
        for task in spec.tasks:
            log(f"{task}: the scripted teacher as the policy at delays {spec.eval_delays} env steps")
            teacher_competence_at_delays(task, spec)
        write_report(spec.out)
    return records


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def summarize(records: list[dict]) -> dict[str, dict[str, dict]]:
    """Aggregate cell records: ``{task: {label: {...}}}`` with mean/std of success at budget, eval success
    and AUC over the label's finished seeds, the per-seed steps to 50%/90%, mean queries, total wall time,
    and the failed seeds with their errors.
    """
    out: dict[str, dict[str, dict]] = {}
    for rec in records:
        row = out.setdefault(rec["task"], {}).setdefault(
            rec["label"],
            {"mode": rec["mode"], "variant": rec["variant"], "steps": rec["steps"], "seeds": [], "failed": []},
        )
        if rec["status"] != "done":
            row["failed"].append({"seed": rec["seed"], "error": rec["error"]})
            continue
        row["seeds"].append({"seed": rec["seed"],
                             **{k: v for k, v in rec["summary"].items() if not k.startswith("curve_")}})
    for labels in out.values():
        for row in labels.values():
            s = row["seeds"]
            if not s:
                continue
            row["success"] = _mean_std([x["final_success"] for x in s])
            row["eval_success"] = _mean_std([x["eval_success"] for x in s])
            for key in ("eval_grasp_rate", "eval_closest_m"):
                known = [x[key] for x in s if x.get(key) is not None]
                row[key] = float(np.mean(known)) if known else None
            row["auc"] = _mean_std([x["auc"] for x in s])
            delays = sorted({int(k) for x in s for k in x.get("eval_by_delay", {})})
            row["eval_by_delay"] = {str(k): _mean_std([x["eval_by_delay"][str(k)] for x in s
                                                       if str(k) in x.get("eval_by_delay", {})]) for k in delays}
            row["steps_to_50"] = [x["steps_to_50"] for x in s]
            row["steps_to_90"] = [x["steps_to_90"] for x in s]
            row["queries"] = float(np.mean([x["queries"] for x in s]))
            walls = [x["wall_s"] for x in s if x["wall_s"] is not None]
            row["wall_s"] = float(np.sum(walls)) if walls else None
    return out


def _k(steps: int | None) -> str:
    return "-" if steps is None else f"{steps / 1000:.1f}k"


def format_latency_table(task: str, labels: dict[str, dict], teacher: dict[int, float] | None) -> list[str]:
    """Markdown lines: eval success (mean ± std over seeds) of each label at each evaluated delay, and the
    scripted teacher's own success at that delay; empty when nothing was evaluated at a delay.
    """
    delays = sorted({int(k) for r in labels.values() for k in r.get("eval_by_delay", {})} | set(teacher or {}))
    if not delays:
        return []
    head = " | ".join(f"{k} steps ({k * 0.05:g} s)" for k in delays)
    lines = [f"Success against latency, {task} (deterministic policy, `robot-rl eval RUN --delay-steps K`):", "",
             f"| arm | seeds | {head} |", "|---|---|" + "---|" * len(delays)]
    for label, r in labels.items():
        by = r.get("eval_by_delay", {})
        if not by:
            continue
        cells = [f"{by[str(k)][0]:.2f} ± {by[str(k)][1]:.2f}" if str(k) in by else "-" for k in delays]
        lines.append(f"| {label} | {len(r['seeds'])} | {' | '.join(cells)} |")
    if teacher:
        cells = [f"{teacher[k]:.2f}" if k in teacher else "-" for k in delays]
        lines.append(f"| scripted teacher as the policy (held for D, answers K steps late) | - | "
                     f"{' | '.join(cells)} |")
    return [*lines, ""]


def plot_latency(task: str, labels: dict[str, dict], teacher: dict[int, float] | None, path: Path) -> Path | None:
    """Success against latency (s), one curve per label (mean over seeds, min-max band), and the scripted
    teacher's own success as a dashed line; ``None`` when nothing was evaluated at a delay.
    """
    rows = {label: r["eval_by_delay"] for label, r in labels.items() if r.get("eval_by_delay")}
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, by) in enumerate(rows.items()):
        ks = sorted(int(k) for k in by)
        mean = np.array([by[str(k)][0] for k in ks])
        std = np.array([by[str(k)][1] for k in ks])
        x = np.array(ks) * 0.05
        ax.plot(x, mean, marker="o", color=f"C{i % 10}", label=f"{label} ({len(labels[label]['seeds'])} seeds)")
        ax.fill_between(x, mean - std, mean + std, color=f"C{i % 10}", alpha=0.15)
    if teacher:
        ks = sorted(teacher)
        ax.plot(np.array(ks) * 0.05, [teacher[k] for k in ks], "k--", marker="x",
                label="scripted teacher as the policy")
    ax.set(xlabel="teacher latency (s)", ylabel="eval success rate", ylim=(-0.02, 1.02),
           title=f"{task}: success against latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _teacher_competence(out: Path, task: str) -> dict[int, float] | None:
    path = Path(out) / task / "teacher_competence.json"
    return {int(k): float(v) for k, v in json.loads(path.read_text()).items()} if path.exists() else None


def format_table(summary: dict[str, dict[str, dict]], teacher: dict[str, dict[int, float]] | None = None) -> str:
    """The results table as Markdown, one section per task (with its success-against-latency table, if any)."""
    lines = []
    for task, labels in summary.items():
        budget = max(r["steps"] for r in labels.values())
        lines += [f"### {task} ({budget:,} env steps)", ""]
        lines += ["| mode | seeds | success at budget | eval success | eval grasp rate, closest TCP-object | AUC | "
                  "steps to 50% | steps to 90% | queries | wall time (all seeds) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for label, r in labels.items():
            if "success" not in r:
                lines.append(f"| {label} | 0 | failed: {r['failed'][0]['error'][:80]} | | | | | | | |")
                continue
            n = len(r["seeds"])
            fail = f" ({len(r['failed'])} failed)" if r["failed"] else ""
            wall = "-" if r["wall_s"] is None else f"{r['wall_s'] / 60:.0f} min"
            grasp = "-" if r.get("eval_grasp_rate") is None else (
                f"{r['eval_grasp_rate']:.2f}, {100 * r['eval_closest_m']:.1f} cm")
            lines.append(
                f"| {label} | {n}{fail} | {r['success'][0]:.2f} ± {r['success'][1]:.2f} | "
                f"{r['eval_success'][0]:.2f} ± {r['eval_success'][1]:.2f} | {grasp} | "
                f"{r['auc'][0]:.3f} ± {r['auc'][1]:.3f} | "
                f"{', '.join(_k(x) for x in r['steps_to_50'])} | {', '.join(_k(x) for x in r['steps_to_90'])} | "
                f"{r['queries']:.0f} | {wall} |"
            )
        if task in PAPER_RESULTS:
            steps, vlajs, ppo = PAPER_RESULTS[task]
            lines += ["", f"Paper (Moroncelli et al. 2026) at {steps / 1e6:.1f}M env steps: "
                          f"vlajs {vlajs:.3f}, ppo {ppo:.3f}."]
        lines.append("")
        lines += format_latency_table(task, labels, (teacher or {}).get(task))
    return "\n".join(lines)


def plot_task(task: str, records: list[dict], path: Path) -> Path:
    """Success curves of one task: per label the mean over seeds, with a min-max band (seeds share the
    rollout grid), to ``path`` (PNG).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_label: dict[str, list[dict]] = {}
    for rec in records:
        if rec["task"] == task and rec["status"] == "done":
            by_label.setdefault(rec["label"], []).append(rec["summary"])
    for i, (label, runs) in enumerate(by_label.items()):
        color = f"C{i % 10}"
        # A run shorter than its first full window of episodes logs no success rate (issue 17): no curve.
        runs = [r for r in runs if len(r["curve_steps"])]
        if not runs:
            continue
        grid = np.array(runs[0]["curve_steps"])
        ys = [np.interp(grid, r["curve_steps"], r["curve_success"]) for r in runs]
        mean = np.mean(ys, axis=0)
        ax.plot(grid, mean, color=color, label=f"{label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        if len(runs) > 1:
            ax.fill_between(grid, np.min(ys, axis=0), np.max(ys, axis=0), color=color, alpha=0.2)
    ax.set(xlabel="env steps", ylabel="success rate (rollout window of episodes)", ylim=(-0.02, 1.02), title=task)
    ax.grid(alpha=0.3)
    if by_label:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def read_records(out: Path) -> list[dict]:
    """Every cell record under ``out`` (``OUT/<task>/<cell>/bench_cell.json``), whichever spec ran it."""
    records = [json.loads(p.read_text()) for p in Path(out).glob(f"*/*/{CELL_RECORD}")]
    # table order: per task, the modes in MODES order, each mode's plain cells before its variants
    return sorted(records, key=lambda r: (r["task"], MODES.index(r["mode"]), bool(r["variant"]), r["label"], r["seed"]))


def write_report(out: Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and one ``<task>.png`` per task to ``out``, over every cell
    recorded there (several specs may share one ``out``, e.g. the two CPU grids); returns the paths.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = read_records(out)
    summary = summarize(records)
    paths = {"json": out / "results.json", "table": out / "results.md"}
    teacher = {task: t for task in summary if (t := _teacher_competence(out, task)) is not None}
    payload = {"summary": summary, "cells": records, "paper": PAPER_RESULTS,
               "teacher_competence_by_delay": {k: {str(d): v for d, v in t.items()} for k, t in teacher.items()}}
    paths["json"].write_text(json.dumps(payload, indent=2))
    paths["table"].write_text(format_table(summary, teacher))
    for task in summary:
        paths[task] = plot_task(task, records, out / f"{task}.png")
        latency = plot_latency(task, summary[task], teacher.get(task), out / f"{task}_latency.png")
        if latency is not None:
            paths[f"{task}_latency"] = latency
    return paths
