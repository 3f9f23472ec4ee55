"""Training, resuming and evaluating runs: builds env, teacher, guidance and GuidedPPO from a config.

Train, resume and evaluate build their env stack (vec env, episode statistics, observation normalization) with
one function, :func:`build_env_stack`, which also checks the env against the run's observation schema
(:mod:`robot_rl.observation`).
"""

from __future__ import annotations

import os
import time
from collections import deque
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import JSONOutputFormat, Logger, TensorBoardOutputFormat
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize

from robot_rl.algos import GuidedPPO
from robot_rl.config import ConfigError, TrainConfig, guard_min_rows
from robot_rl.geometry import CONTROL_PERIOD_S
from robot_rl.guidance import Guidance, QueryScheduler
from robot_rl.observation import ObservationSchema, SchemaMismatch, memory_spec_from_config, schema_from_config
from robot_rl.runs import VECNORM_JSON, WANDB_ID, RunDir, read_vecnormalize_json, vecnormalize_from_dict

#: Offset of evaluation seeds from the training seed, so evaluation episodes are unseen ones.
EVAL_SEED_OFFSET = 10_000


def build_env(cfg: TrainConfig, num_envs: int | None = None, seed: int | None = None,
              in_process: bool = False, teacher_images: bool = True) -> VecEnv:
    """The task's vec env with episode statistics (``VecMonitor``); normalization is added by the caller.
    ``teacher_images=False``: no teacher view will ask for an image (``physx_cuda``: no renderer, issue 17).

    With ``physx_cpu`` worker processes, the trainer's own torch threads are cut to the cores the
    workers leave free (at least 1), so the trainer does not oversubscribe the cores the workers run on
    (FACTS.md, thread oversubscription). On 2 cores with 2 workers, `benchmarks/throughput.py` gave a
    training/raw ratio of 0.63 with torch's default 2 threads and 0.64-0.83 with 1 (noisy machine).
    """
    from robot_rl.envs import make_vec_env

    n = num_envs or cfg.env.num_envs
    if cfg.env.sim_backend == "physx_cpu" and not in_process and n > 1:
        th.set_num_threads(max(1, (os.cpu_count() or 1) - n))

    venv = make_vec_env(
        cfg.task,
        num_envs=n,
        sim_backend=cfg.env.sim_backend,
        reward_mode=cfg.env.reward_mode,
        max_episode_steps=cfg.env.max_episode_steps,
        seed=cfg.seed if seed is None else seed,
        teacher_image_size=tuple(cfg.guidance.image_size),
        in_process=in_process,
        teacher_images=teacher_images,
    )
    return VecMonitor(venv)


def build_env_stack(cfg: TrainConfig, run: RunDir | None = None, *, num_envs: int | None = None,
                    seed: int | None = None, in_process: bool = False, training: bool = True,
                    guidance: Guidance | None = None, drive_queries: bool = False,
                    teacher_images: bool | None = None) -> tuple[VecEnv, ObservationSchema]:
    """The env stack of a run: the task's vec env with episode statistics, guidance moved on at every env step
    and the ``teacher`` observation group appended (:class:`~robot_rl.interface.TeacherGroupVecEnv`, when there is
    guidance), checked against the run's observation schema, inside observation normalization.

    Normalization: a run that has a checkpoint restores its ``VecNormalize`` statistics (resume, evaluate) from its
    ``vecnormalize.json`` (no unpickling), or from ``vecnormalize.pkl`` for a checkpoint written before the JSON;
    a new run starts them when ``ppo.normalize_obs`` is on. ``training=False`` freezes them (evaluation).

    Args:
        cfg: the run's config.
        run: the run directory (its checkpoint's normalization statistics, if any, are loaded).
        num_envs: parallel envs (``None``: ``cfg.env.num_envs``).
        seed: seed of the envs (``None``: ``cfg.seed``).
        in_process: CPU only: all envs in this process instead of worker processes.
        training: whether the normalization statistics keep updating.
        guidance: the run's guidance (``None`` for ``ppo``): the wrapper delivers its answers and appends its
            ``teacher`` group.
        drive_queries: the wrapper also asks guidance to query at every step (evaluation: no GuidedPPO callback).
        teacher_images: whether teacher views will ask for images (``None``: when guidance's teacher needs them);
            without, a ``physx_cuda`` env is made with no renderer (issue 17).

    Returns:
        ``(venv, schema)``.

    Raises:
        SchemaMismatch: the env's observation size differs from the schema's (the message gives the groups).
    """
    schema = schema_from_config(cfg)
    if teacher_images is None:
        teacher_images = guidance is not None and bool(guidance.teacher.spec.needs_image)
    venv = build_env(cfg, num_envs=num_envs, seed=seed, in_process=in_process, teacher_images=teacher_images)
    if guidance is not None:
        from robot_rl.interface import TeacherGroupVecEnv

        venv = TeacherGroupVecEnv(venv, guidance, drive_queries=drive_queries)
    size = int(np.prod(venv.observation_space.shape))
    if size != schema.size:
        venv.close()
        raise SchemaMismatch(f"{cfg.task}'s env observes {size} values but its observation schema has "
                             f"{schema.describe_sizes()}")
    stats = run.checkpoint / VECNORM_JSON if run is not None else None
    if stats is not None and stats.exists():
        venv = vecnormalize_from_dict(read_vecnormalize_json(stats), venv, training=training)
    elif stats is not None and (run.checkpoint / "vecnormalize.pkl").exists():
        venv = VecNormalize.load(str(run.checkpoint / "vecnormalize.pkl"), venv)
        venv.training = training
    elif cfg.ppo.normalize_obs:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=False, training=training)
    return venv, schema


def build_teacher(cfg: TrainConfig, stack: ExitStack | None = None, log_dir: Path | None = None):
    """The configured teacher (``cfg.teacher``, one section per ``teacher.kind``).

    * ``scripted`` (:class:`~robot_rl.config.ScriptedTeacherConfig`): in process, with its weakness
      knobs; its RNG is seeded from ``cfg.seed``.
    * ``remote`` (:class:`~robot_rl.config.RemoteTeacherConfig`): a
      :class:`~robot_rl.teachers.remote.RemoteTeacher` of the server at ``url``.
    * ``spawn`` (:class:`~robot_rl.config.SpawnTeacherConfig`): starts ``robot-rl teacher serve`` on a
      free loopback port (log in ``log_dir/teacher_server.log``), registers its shutdown on ``stack``
      (which must be given), and returns a ``RemoteTeacher`` of it. The server also exits if the trainer dies.
    * ``openpi`` (:class:`~robot_rl.config.OpenpiTeacherConfig`): an
      :class:`~robot_rl.teachers.openpi.OpenpiTeacher` of the openpi policy server at ``url``.
    """
    from robot_rl.teachers import make_teacher

    t = cfg.teacher
    if t.kind == "scripted":
        return make_teacher(
            "scripted",
            control_period_steps=t.control_period_steps,
            direction_noise_deg=t.direction_noise_deg,
            bias_rotation_deg=t.bias_rotation_deg,
            wrong_fraction=t.wrong_fraction,
            latency_s=t.latency_s,
            seed=cfg.seed + 1,
        )
    if t.kind == "openpi":
        keys = {"image": t.image_key, "wrist_image": t.wrist_image_key, "state": t.state_key,
                "instruction": t.instruction_key, "task_id": t.task_id_key}
        teacher = make_teacher("openpi", url=t.url, observation_keys=keys,
                               convention=t.convention, action_steps=t.action_steps,
                               control_period_steps=t.control_period_steps, timeout_s=t.timeout_s, retries=t.retries,
                               backoff_s=t.backoff_s, unnorm_key=t.unnorm_key,
                               max_frame_bytes=int(t.max_frame_mb * 1024 * 1024))
        if stack is not None:
            stack.callback(teacher.close)
        return teacher
    if t.kind == "spawn":
        from robot_rl.teachers.remote import SpawnedServer

        if stack is None:
            raise ValueError("teacher.kind=spawn needs an ExitStack that owns the server")
        log_path = str(log_dir / "teacher_server.log") if log_dir is not None else None
        server = stack.enter_context(SpawnedServer(t.backend, model=t.model, unnorm_key=t.unnorm_key,
                                                   control_period_steps=t.control_period_steps, log_path=log_path,
                                                   latency_ms=t.latency_ms))
        url = server.url
    else:
        url = t.url
    teacher = make_teacher("remote", url=url, timeout_s=t.timeout_s, retries=t.retries, backoff_s=t.backoff_s,
                           unnorm_key=t.unnorm_key, control_period_steps=t.control_period_steps)
    if stack is not None:
        stack.callback(teacher.close)
    return teacher


def build_guidance(cfg: TrainConfig, num_envs: int, teacher=None, stack: ExitStack | None = None,
                   log_dir: Path | None = None, *, evaluation: bool = False,
                   delay_steps: int | None = None) -> Guidance | None:
    """The rollout-time guidance component for ``cfg.mode`` (``None`` for ``ppo``); ``teacher`` defaults to
    :func:`build_teacher` (``stack`` and ``log_dir`` are passed on to it).

    * ``rpd``: the teacher answers at every env step (budget 1.0), constant ``λ = λ_0``, MSE loss.
    * ``vlajs``: the configured query budget, annealed ``N_calls`` and ``λ_t``, deactivation, and the
      misleading-teacher guard (``guidance.guard``).
    * with ``cfg.interface``: answers delayed by the configured delay model (seeded from ``cfg.seed``), the
      ``teacher`` observation group of ``interface.features``, compensated targets if asked.
    * with ``memory.enabled``: the scratchpad (:mod:`robot_rl.memory`, the ``memory`` group), kept by guidance.
    * ``evaluation=True`` (a policy that observes the ``teacher`` or ``memory`` group, run without learning;
      ``None`` for a run without either): every env queries whenever nothing is in flight and its last answer has
      played out over the teacher's period, no budget, no annealing; ``delay_steps`` (env steps) replaces the
      delay model by a fixed delay.
    """
    from robot_rl.guidance.delay import DelayModel, make_delay_model
    from robot_rl.guidance.guard import TeacherGuard

    if cfg.mode == "ppo" or (evaluation and not (cfg.interface.features or cfg.memory.enabled)):
        return None
    g, i = cfg.guidance, cfg.interface
    rpd = cfg.mode == "rpd"
    if evaluation:
        scheduler = QueryScheduler(n_steps=10**9, num_envs=num_envs, budget_fraction=1.0, anneal=False,
                                   deactivate_threshold=None, seed=cfg.seed + 1)
        scheduler.begin_rollout(None)
    else:
        scheduler = QueryScheduler(
            n_steps=cfg.ppo.n_steps,
            num_envs=num_envs,
            budget_fraction=1.0 if rpd else g.budget_fraction,
            n_min=g.n_min,
            kappa=g.kappa,
            deactivate_threshold=g.deactivate_threshold,
            lambda_0=g.lambda_0,
            anneal=not rpd,
            seed=cfg.seed,
        )
    delay = (DelayModel("fixed", steps=int(delay_steps)) if delay_steps is not None
             else make_delay_model(i.delay, seed=cfg.seed + 2))
    memory = memory_spec_from_config(cfg) if cfg.memory.enabled else None
    min_rows = guard_min_rows(cfg)
    guard = (TeacherGuard(g.guard.z_threshold, min_rows, g.guard.window_rollouts)
             if min_rows is not None and not evaluation else None)
    return Guidance(teacher or build_teacher(cfg, stack, log_dir), scheduler, num_envs, requery_active=rpd,
                    delay=delay, features=i.features, compensate_targets=i.compensate_targets, memory=memory,
                    guard=guard)


def algo_class(cfg: TrainConfig):
    """The SB3 algorithm class of a run: sb3-contrib's ``RecurrentPPO`` for ``ppo.recurrent``, else GuidedPPO."""
    if cfg.ppo.recurrent:
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO
    return GuidedPPO


def build_model(cfg: TrainConfig, venv: VecEnv, guidance: Guidance | None) -> GuidedPPO:
    """GuidedPPO with ``cfg.ppo``'s hyperparameters on ``venv``; ``aux_loss`` is MSE for ``rpd``, else the
    directional loss on ``cfg.guidance.components`` with ``ε = cfg.guidance.cos_eps``. With ``ppo.recurrent``:
    sb3-contrib's ``RecurrentPPO`` (``MlpLstmPolicy``: an LSTM of ``ppo.lstm_hidden_size`` units shared by actor
    and critic, then the ``net_arch`` MLPs) with the same hyperparameters and no guidance. Seeds torch, numpy and
    the action space from ``cfg.seed`` (SB3).
    """
    p = cfg.ppo
    if p.recurrent:
        kwargs = dict(policy_kwargs=dict(net_arch=list(p.net_arch), log_std_init=p.log_std_init,
                                         lstm_hidden_size=p.lstm_hidden_size))
        cls, policy = algo_class(cfg), "MlpLstmPolicy"
    else:
        kwargs = dict(guidance=guidance, aux_loss="mse" if cfg.mode == "rpd" else "cosine",
                      cos_eps=cfg.guidance.cos_eps, components=tuple(cfg.guidance.components),
                      magnitude_weight=cfg.guidance.magnitude_weight,
                      policy_kwargs=dict(net_arch=list(p.net_arch), log_std_init=p.log_std_init))
        cls, policy = GuidedPPO, "MlpPolicy"
    return cls(
        policy,
        venv,
        **kwargs,
        n_steps=p.n_steps,
        batch_size=p.batch_size,
        n_epochs=p.n_epochs,
        learning_rate=p.learning_rate,
        gamma=p.gamma,
        gae_lambda=p.gae_lambda,
        clip_range=p.clip_range,
        ent_coef=p.ent_coef,
        vf_coef=p.vf_coef,
        max_grad_norm=p.max_grad_norm,
        target_kl=p.target_kl,
        seed=cfg.seed,
        device=p.device,
        verbose=0,
    )


def _scalar(value):
    """A logger value as a JSON scalar (numpy's as Python's), or None for anything else (a video, a figure)."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, (bool, int, float, str)) else None


class RunCallback(BaseCallback):
    """Logs guidance metrics, drives the progress bar and writes checkpoints after PPO updates.

    Each checkpoint also holds the training state a resume carries over (:data:`robot_rl.runs.TRAIN_STATE`), so a
    resumed run's metrics continue where the checkpoint left them:

    * ``logger``: the values recorded since the last dump, i.e. the ``train/*`` and ``guidance/*`` losses of the
      update that preceded the checkpoint, which SB3 dumps with the next rollout's row (``learn`` dumps before
      ``train()``); re-recorded at the resume's start;
    * ``iterations``: PPO iterations done (``time/iterations`` continues from it: :class:`_RunLogger`);
    * ``time_elapsed_s``: training wall time so far; SB3's ``start_time`` is moved back by it and its
      ``_num_timesteps_at_start`` set to 0, so ``time/time_elapsed``, ``time/fps`` and ``time/steps_per_s`` are
      over the whole run (the time between the checkpoint and the kill is not counted);
    * ``ep_info_buffer``, ``ep_success_buffer``: SB3's episode buffers, and ``episode_window``: GuidedPPO's episode
      window (its ``state_dict``), so ``rollout/success_rate`` does not start from an empty buffer.

    Args:
        run: the run directory.
        cfg: the resolved config.
        guidance: the run's guidance, or None.
        resume_state: a resumed run's :meth:`RunDir.train_state` (``{}``: a new run, or a checkpoint without one).
    """

    def __init__(self, run: RunDir, cfg: TrainConfig, guidance: Guidance | None, resume_state: dict | None = None):
        super().__init__()
        self.run, self.cfg, self.guidance = run, cfg, guidance
        self.resume_state = resume_state or {}
        self.bar = None
        self.steps0 = 0
        self.next_ckpt = 0
        self.iterations = int(self.resume_state.get("iterations", 0))

    def _on_training_start(self) -> None:
        self.steps0 = self.model.num_timesteps
        state = self.resume_state
        if "time_elapsed_s" in state:
            self.model.start_time -= int(state["time_elapsed_s"] * 1e9)
            self.model._num_timesteps_at_start = 0
        for key, (value, excluded) in state.get("logger", {}).items():
            self.logger.record(key, value, None if excluded is None else tuple(excluded))
        for name in ("ep_info_buffer", "ep_success_buffer"):
            if name in state:
                setattr(self.model, name, deque(state[name], maxlen=getattr(self.model, name).maxlen))
        if state.get("episode_window") is not None and getattr(self.model, "episode_window", None) is not None:
            self.model.episode_window.load_state_dict(state["episode_window"])
        every = self.cfg.run.checkpoint_every_steps
        self.next_ckpt = (self.steps0 // every + 1) * every
        if self.cfg.run.progress_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.cfg.total_steps, initial=self.steps0, unit="step", dynamic_ncols=True,
                            desc=f"{self.cfg.mode} {self.cfg.task}")

    def _on_rollout_start(self) -> None:
        # Runs after the previous rollout's PPO update: a checkpoint here holds that update.
        if self.model.num_timesteps >= self.next_ckpt:
            self.save()
            every = self.cfg.run.checkpoint_every_steps
            self.next_ckpt = (self.model.num_timesteps // every + 1) * every

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(self.training_env.num_envs)
        return True

    def _elapsed_s(self) -> float:
        """Training wall time, s, over the whole run (SB3's ``start_time``, moved back at a resume)."""
        return max((time.time_ns() - self.model.start_time) / 1e9, 1e-9)

    def _on_rollout_end(self) -> None:
        self.iterations += 1
        sps = (self.model.num_timesteps - self.model._num_timesteps_at_start) / self._elapsed_s()
        self.logger.record("time/steps_per_s", sps)
        success = float(np.mean(self.model.ep_success_buffer)) if self.model.ep_success_buffer else float("nan")
        postfix = {"sps": f"{sps:.0f}", "success": f"{success:.2f}"}
        if self.guidance is not None:
            metrics = self.guidance.metrics()
            for key, value in metrics.items():
                self.logger.record(key, value)
            postfix.update(queries=metrics["guidance/queries"], lam=f"{metrics['guidance/lambda_next']:.3f}")
            if metrics.get("teacher/failures"):
                postfix.update(teacher_failures=metrics["teacher/failures"])
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)

    def _on_training_end(self) -> None:
        self.save()
        if self.bar is not None:
            self.bar.close()

    def save(self) -> None:
        """Checkpoint the model, its normalization statistics and the guidance state into the run (and the
        step-numbered copy that ``run.keep_checkpoints`` asks for).
        """
        self.run.save_checkpoint(self.model, self.guidance.state_dict() if self.guidance is not None else {},
                                 keep=self.cfg.run.keep_checkpoints, train_state=self.train_state())

    def train_state(self) -> dict:
        """What a resume carries over (see the class docstring); JSON-able."""
        lg = self.model.logger
        pending = {k: [_scalar(v), None if lg.name_to_excluded.get(k) is None else list(lg.name_to_excluded[k])]
                   for k, v in lg.name_to_value.items() if _scalar(v) is not None}
        window = getattr(self.model, "episode_window", None)
        return {"iterations": self.iterations, "time_elapsed_s": self._elapsed_s(), "logger": pending,
                "ep_info_buffer": [{k: _scalar(v) for k, v in ep.items()} for ep in self.model.ep_info_buffer],
                "ep_success_buffer": [_scalar(v) for v in self.model.ep_success_buffer],
                "episode_window": None if window is None else window.state_dict()}


class _AppendJSONOutputFormat(JSONOutputFormat):
    """SB3's JSON-lines writer, appending: a resumed run keeps the metrics of its first part."""

    def __init__(self, filename: str):  # noqa: D107 - SB3 opens with "w"
        self.file = open(filename, "a")


class _TensorBoardOutputFormat(TensorBoardOutputFormat):
    """SB3's TensorBoard writer with torch's ``SummaryWriter(purge_step=...)``: a resumed run's event file starts
    with a ``SessionLog.START`` at ``purge_step``, on which TensorBoard drops the events of earlier files at that
    step and after (the steps redone after a kill), so each step is shown once. SB3 2.9.2's ``__init__`` opens the
    writer without it: this one opens it itself.
    """

    def __init__(self, folder: str, purge_step: int | None = None):  # noqa: D107 - SB3's, with purge_step
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=folder, purge_step=purge_step)
        self._is_closed = False


class _RunLogger(Logger):
    """SB3's Logger whose ``time/iterations`` counts the iterations before a resume too (SB3's ``learn`` counts
    from 0 in each call).
    """

    def __init__(self, folder, output_formats, iterations_before: int = 0):  # noqa: D107
        super().__init__(folder, output_formats)
        self.iterations_before = int(iterations_before)

    def record(self, key, value, exclude=None) -> None:  # noqa: D102 - SB3's
        if key == "time/iterations":
            value = value + self.iterations_before
        super().record(key, value, exclude)


def _logger(run: RunDir, purge_step: int | None = None, iterations_before: int = 0) -> Logger:
    """The run's logger: metrics.jsonl (appended) and TensorBoard (``purge_step``: the first env step a resume
    redoes; None for a new run).
    """
    run.tb.mkdir(parents=True, exist_ok=True)
    return _RunLogger(str(run.path), [_AppendJSONOutputFormat(str(run.metrics)),
                                      _TensorBoardOutputFormat(str(run.tb), purge_step)], iterations_before)


def format_config(cfg: TrainConfig, width: int = 100) -> str:
    """The resolved config as compact YAML: one line per top-level key, each section a flow mapping (wrapped near
    ``width`` characters); ``yaml.safe_load`` of it gives ``cfg.model_dump(mode="json")`` back.
    """
    import yaml

    lines = []
    for key, value in cfg.model_dump(mode="json").items():
        if isinstance(value, dict):
            lines.append(f"{key}: " + yaml.safe_dump(value, default_flow_style=True, width=width - len(key) - 2,
                                                     sort_keys=False))
        else:
            lines.append(yaml.safe_dump({key: value}, sort_keys=False))
    return "".join(lines).rstrip("\n")


def _import_wandb():
    """The ``wandb`` module for ``run.wandb: true``.

    Raises:
        ConfigError: wandb is not installed (the message names ``run.wandb`` and the install command).
    """
    try:
        import wandb
    except ImportError:
        raise ConfigError("run.wandb is true but wandb is not installed: pip install 'robot_rl[wandb]' "
                          "(or set run.wandb=false)") from None
    return wandb


def _start_wandb(run: RunDir, cfg: TrainConfig, stack: ExitStack) -> None:
    """With ``run.wandb``: a W&B run that syncs the run's TensorBoard events (``sync_tensorboard``: started before
    SB3 opens its ``SummaryWriter``), with the resolved config as its config; finished when ``stack`` closes
    (exit code 1 after an error). Its id is kept in ``RUN_DIR/wandb_id``, so a resume continues the same W&B run.
    """
    if not cfg.run.wandb:
        return
    wandb = _import_wandb()
    id_file = run.path / WANDB_ID
    run_id = id_file.read_text().strip() if id_file.exists() else None
    folder = Path(cfg.run.wandb_dir) if cfg.run.wandb_dir is not None else run.path
    folder.mkdir(parents=True, exist_ok=True)
    w = wandb.init(project=cfg.run.wandb_project, entity=cfg.run.wandb_entity, name=cfg.run.wandb_name or run.path.name,
                   dir=str(folder), config=cfg.model_dump(mode="json"), sync_tensorboard=True, id=run_id,
                   resume="allow" if run_id else None, job_type="train")
    stack.push(lambda exc_type, *_: w.finish(exit_code=0 if exc_type is None else 1))
    id_file.write_text(w.id + "\n")


def _fit(run: RunDir, cfg: TrainConfig, model: GuidedPPO, guidance, resumed: bool) -> None:
    state = run.train_state() if resumed else {}
    purge_step = model.num_timesteps + 1 if resumed else None  # the checkpoint's own row stays, later ones go
    model.set_logger(_logger(run, purge_step, state.get("iterations", 0)))
    remaining = cfg.total_steps - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=RunCallback(run, cfg, guidance, state), reset_num_timesteps=not resumed)
    model.logger.close()  # flushes the TensorBoard events (W&B's sync reads them before its run finishes)
    model.get_env().close()
    run.plot_success_curve()
    if cfg.run.eval_episodes > 0:
        run.write_eval(evaluate(run, cfg.run.eval_episodes))


def _announce(run: RunDir, cfg: TrainConfig, what: str) -> None:
    print(f"{what} {run.path}\n{format_config(cfg)}", flush=True)


def train(cfg: TrainConfig, *, echo_config: bool = False) -> RunDir:
    """Train a new run from ``cfg``; returns its run directory (with eval.json and the plot).

    Args:
        cfg: the resolved config.
        echo_config: print the run directory and the resolved config (:func:`format_config`) to stdout before
            training (``robot-rl train`` does; ``config.yaml`` in the run holds it too).

    Raises:
        FileExistsError: the run directory already holds a checkpoint.
        ConfigError: ``run.wandb`` without wandb installed (before the run directory is made).
    """
    if cfg.run.wandb:
        _import_wandb()
    run = RunDir.create(cfg)
    if echo_config:
        _announce(run, cfg, "run directory:")
    with ExitStack() as stack:  # owns a spawned teacher server: stopped on return, error or Ctrl-C
        _start_wandb(run, cfg, stack)
        guidance = build_guidance(cfg, cfg.env.num_envs, stack=stack, log_dir=run.path)
        venv, schema = build_env_stack(cfg, guidance=guidance)
        run.save_schema(schema)
        model = build_model(cfg, venv, guidance)
        _fit(run, cfg, model, guidance, resumed=False)
    return run


def resume(path: str | Path, overrides: list[str] | tuple = (), *, echo_config: bool = False) -> RunDir:
    """Continue a run from its last checkpoint (``checkpoints/latest``, e.g. after SIGKILL); overrides such as
    ``total_steps=200000`` extend it. Metrics past the checkpoint are dropped from metrics.jsonl and redone, and
    hidden in TensorBoard (``purge_step``); the first rows carry on the checkpoint's logger values, iteration count,
    wall time and episode statistics (:class:`RunCallback`). With ``run.wandb`` the
    same W&B run continues (its id is in the run directory). ``echo_config`` prints the run directory and the
    resolved config (with the overrides) first, as :func:`train`.

    Raises:
        FileNotFoundError: not a run directory, or no checkpoint written yet.
        ConfigError: an override that does not validate, or ``run.wandb`` without wandb installed.
        SchemaMismatch: the observation the config gives now differs from the run's saved schema (an
            override that adds a group, say); the message names the group and the field.
    """
    run = RunDir(path)
    cfg = run.config(overrides)
    run.recover_checkpoint()
    if not run.has_checkpoint():
        raise FileNotFoundError(f"{run.path} has no checkpoint yet: start it again with `robot-rl train`")
    if cfg.run.wandb:
        _import_wandb()
    state = run.checkpoint_state()
    run.truncate_metrics(state["num_timesteps"])
    if echo_config:
        _announce(run, cfg, f"resuming at env step {state['num_timesteps']}:")
    with ExitStack() as stack:
        _start_wandb(run, cfg, stack)
        guidance = build_guidance(cfg, cfg.env.num_envs, stack=stack, log_dir=run.path)
        venv, schema = build_env_stack(cfg, run, guidance=guidance)
        run.check_schema(schema)
        if guidance is not None and "scheduler" in state:
            guidance.load_state_dict(state)
        model = algo_class(cfg).load(run.checkpoint / "model.zip", env=venv, device=cfg.ppo.device,
                                     custom_objects={"guidance": guidance})
        if not cfg.ppo.recurrent:
            model.guidance = guidance
        if cfg.total_steps != run.config().total_steps:
            from robot_rl.config import dump_config

            dump_config(cfg, run.path / "config.yaml")
        _fit(run, cfg, model, guidance, resumed=True)
    return run


class PolicyActor:
    """A trained SB3 policy as a :class:`robot_rl.rollout.Actor`: deterministic (the Gaussian mean) unless
    ``deterministic=False`` (a sample of the policy's Gaussian, as in training); a recurrent one (``RecurrentPPO``)
    carries its LSTM state from step to step and starts it afresh at each episode.
    """

    def __init__(self, model: GuidedPPO, deterministic: bool = True):
        self.model = model
        self.deterministic = deterministic
        self.recurrent = hasattr(model.policy, "lstm_actor")
        self._state = None
        self._start = np.ones(1, dtype=bool)

    def reset(self) -> None:
        """A new episode: a recurrent policy's LSTM state starts from zeros (the MLP policy is stateless)."""
        self._state, self._start = None, np.ones(1, dtype=bool)

    def act(self, obs: np.ndarray, view) -> np.ndarray:
        """The policy's action ``(1, 7)`` (its mean, or a sample) for a normalized observation ``(1, D)``; ``view``
        is unused.
        """
        if not self.recurrent:
            action, _ = self.model.predict(obs, deterministic=self.deterministic)
            return action
        action, self._state = self.model.predict(obs, state=self._state, episode_start=self._start,
                                                 deterministic=self.deterministic)
        self._start = np.zeros(1, dtype=bool)
        return action


def evaluate_with_teacher(actor, task: str, features, period_steps: int, delay_steps: int, episodes: int,
                          seed: int = 0, *, max_episode_steps: int | None = None, memory=None) -> tuple:
    """Run an actor whose observation carries the ``teacher`` group (raw, not normalized: an exported ONNX policy)
    in one in-process env, with the scripted teacher's answers delivered ``delay_steps`` env steps late, through the
    evaluation guidance of :func:`build_guidance` (``evaluation=True``: a query whenever none is in flight and the
    last answer has played out over ``D`` steps) and the one rollout loop (:func:`robot_rl.rollout.rollout`:
    episode ``k`` resets with seed ``seed + k``). The sim bridge's direct evaluation of such a policy
    (:func:`robot_rl.deploy.sim_bridge.evaluate_direct`) is this.

    Args:
        actor: a :class:`robot_rl.rollout.Actor` of observations ``(1, state + teacher)``.
        task: the task id.
        features: the teacher group's ``interface.features``.
        period_steps: ``D``, env steps one answer covers (the scripted teacher plans for it).
        delay_steps: env steps from a query's observation to its answer's delivery (>= 0).
        episodes: number of episodes (>= 1).
        seed: seed of episode 0.
        max_episode_steps: the horizon (None: the task's).
        memory: the :class:`~robot_rl.memory.MemorySpec` of an actor that observes the ``memory`` group (after
            ``teacher``; the teacher's notes fill it), or None.

    Returns:
        ``(RolloutResult, guidance metrics)`` (:meth:`Guidance.metrics`: queries, delivered delays, ...).

    Raises:
        ValueError: ``delay_steps < 0``, neither features nor memory, or a config value the training config refuses
            (named).
    """
    from robot_rl.rollout import rollout

    if delay_steps < 0:
        raise ValueError(f"delay_steps must be >= 0, got {delay_steps}")
    if not features and memory is None:
        raise ValueError("evaluate_with_teacher: the actor observes neither a teacher group (no features) nor memory")
    mem = {} if memory is None else {"enabled": True, "grounding_slots": memory.grounding_slots,
                                     "plan_slots": memory.plan_slots, "act_slots": memory.act_slots,
                                     "max_note_chars": memory.max_note_chars}
    cfg = TrainConfig(task=task, mode="vlajs", seed=int(seed), teacher={"kind": "scripted",
                                                                        "control_period_steps": int(period_steps)},
                      interface={"features": list(features)}, memory=mem, ppo={"normalize_obs": False},
                      env={"max_episode_steps": max_episode_steps, "num_envs": 1},
                      run={"eval_episodes": 0, "progress_bar": False})
    with ExitStack() as stack:
        guidance = build_guidance(cfg, 1, stack=stack, evaluation=True, delay_steps=int(delay_steps))
        venv, _ = build_env_stack(cfg, None, num_envs=1, seed=seed, in_process=True, training=False,
                                  guidance=guidance, drive_queries=True)
        try:
            result = rollout(venv, actor, episodes, seed)
            metrics = guidance.metrics()
        finally:
            venv.close()
    return result, metrics


def evaluate(run: RunDir | str | Path, episodes: int, video: str | Path | None = None, seed: int | None = None,
             delay_steps: int | None = None, stochastic: bool = False) -> dict:
    """Run the run's latest policy for ``episodes`` episodes in one in-process env
    (:func:`robot_rl.rollout.rollout`: episode ``k`` resets with seed ``seed + k``); deterministic (the policy's
    mean action, SB3's ``evaluate_policy`` default) unless ``stochastic``.

    On ``physx_cuda`` the episodes run at once in one batched env of ``episodes`` envs, env ``k`` from seed
    ``seed + k`` (:func:`robot_rl.rollout.rollout_batched`, issue 17: one scene build instead of one per episode for
    PegInsertionSide), with the same per-episode results and summary, each env's first episode only. The sequential
    one-env loop stays for ``physx_cpu``, a video, a policy with a ``teacher`` or ``memory`` group (its guidance
    runs one env, with delayed answers) and a recurrent policy (one LSTM state per episode). A stochastic batched
    evaluation draws its actions in one batch: the same seed gives the same episodes, not those of the sequential
    loop.

    A policy that observes the ``teacher`` group is run with its teacher: queried whenever nothing is in flight
    and its last answer has played out, its answers delivered ``delay_steps`` env steps late (default: the
    run's own delay model), as at deployment. With the ``measured`` delay model (and no ``delay_steps``) the env
    steps at its control rate in wall-clock time (20 Hz), so the teacher's real latency is as many env steps
    late as on the robot; as fast as it goes, one env would see a 1 s answer ~100 env steps late.

    Args:
        run: the run directory.
        episodes: number of episodes (>= 1).
        video: optional ``.mp4`` path; frames are the teacher camera's RGB view, each labelled with its episode,
            seed, step, return and outcome (:meth:`~robot_rl.rollout.RolloutResult.save_video`).
        seed: env seed (default: training seed + 10000, episodes unseen in training).
        delay_steps: a fixed delay of the teacher's answers, env steps (0.05 s each); only for a run with a
            ``teacher`` group.
        stochastic: sample the actions from the policy's Gaussian (torch seeded from ``seed``, so a rerun gives the
            same episodes) instead of taking its mean.

    Returns:
        ``{"success_rate", "mean_return", "mean_length", "episodes", "num_timesteps", "seed",
        "grasp_rate", "mean_closest_approach_m", "delay_steps", "stochastic", "seeds", "per_episode"}`` (what
        ``eval.json`` holds): ``seeds`` are the episodes' reset seeds, ``per_episode`` one dict per episode
        (:class:`~robot_rl.rollout.EpisodeResult`'s fields: seed, success, ret, length, ...). Besides success, two
        diagnostics of a grasping task
        from the privileged state (``envs.PRIVILEGED_STATE_LAYOUT``) at every step but an episode's first:
        the fraction of episodes in which the gripper held the task's object (``is_grasped``; the
        first step is skipped because ManiSkill can carry the flag over from the previous episode), and
        the mean over episodes of the closest TCP-object distance (m).

    Raises:
        FileNotFoundError: no checkpoint. ValueError: ``episodes < 1``, or ``delay_steps`` for a run without a
        ``teacher`` group. SchemaMismatch: the run's saved observation schema differs from what its config
        gives now.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if delay_steps is not None and delay_steps < 0:
        raise ValueError(f"delay_steps must be >= 0, got {delay_steps}")
    run = run if isinstance(run, RunDir) else RunDir(run)
    cfg = run.config()
    run.recover_checkpoint()
    if not run.has_checkpoint():
        raise FileNotFoundError(f"{run.path} has no checkpoint to evaluate")
    if delay_steps is not None and not cfg.interface.features:
        raise ValueError(f"--delay-steps: {run.path} observes no teacher group (interface.features is empty); "
                         "its teacher is not part of its evaluation")
    seed = cfg.seed + EVAL_SEED_OFFSET if seed is None else seed
    from robot_rl.rollout import rollout, rollout_batched

    with ExitStack() as stack:  # a spawned teacher server of a policy with a teacher group
        guidance = build_guidance(cfg, 1, stack=stack, log_dir=run.path, evaluation=True, delay_steps=delay_steps)
        batched = (cfg.env.sim_backend == "physx_cuda" and episodes > 1 and video is None and guidance is None
                   and not cfg.ppo.recurrent)
        venv, schema = build_env_stack(cfg, run, num_envs=episodes if batched else 1, seed=seed, in_process=True,
                                       training=False, guidance=guidance, drive_queries=True,
                                       teacher_images=video is not None or None)
        run.check_schema(schema)
        model = algo_class(cfg).load(run.checkpoint / "model.zip", device=cfg.ppo.device,
                                     custom_objects={"guidance": None})
        actor = PolicyActor(model, deterministic=not stochastic)
        if stochastic:
            model.set_random_seed(seed)
        try:
            realtime = delay_steps is None and guidance is not None and guidance.delay.measured
            if batched:
                result = rollout_batched(venv, actor, episodes, seed)
            else:
                result = rollout(venv, actor, episodes, seed, video=video is not None,
                                 realtime_period_s=CONTROL_PERIOD_S if realtime else None)
        finally:
            venv.close()
    if video is not None:
        result.save_video(video, fps=round(1 / CONTROL_PERIOD_S))
    used_delay = delay_steps if delay_steps is not None else (None if guidance is None else guidance.delay.mean_steps)
    return {**result.summary(), "episodes": episodes, "num_timesteps": int(model.num_timesteps), "seed": seed,
            "delay_steps": used_delay, "stochastic": stochastic, "seeds": [e.seed for e in result.episodes],
            "per_episode": result.per_episode()}
