"""Typed, validated training configs (pydantic), loaded from YAML and overridable from the CLI.

Unknown keys and bad values are rejected with an error that names the key (``ConfigError``).
Every field carries a one-line description with its unit; ``robot-rl train --help`` shows the
sections, ``robot-rl config`` (or :func:`describe`) lists every key.

A section may be a union of kinds tagged by its ``kind`` key (``teacher``: :data:`TeacherConfig`;
the teacher serving config's ``backend``): each kind has only its own keys, so a key of another kind
is refused and named (:func:`tagged_section` says how configs written before the union still load).
"""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

MODES = ("ppo", "rpd", "vlajs")
SIM_BACKENDS = ("physx_cpu", "physx_cuda")


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvConfig(_Section):
    """``env``: how many envs, on which ManiSkill backend, and the episode's horizon and reward."""

    num_envs: int = Field(2, ge=1, description="parallel envs (CPU: one worker process each; GPU: one batched sim)")
    sim_backend: Literal["physx_cpu", "physx_cuda"] = Field("physx_cpu", description="ManiSkill sim backend")
    max_episode_steps: int | None = Field(None, ge=1,
                                          description="episode horizon in env steps (null: the task's default)")
    reward_mode: Literal["sparse", "dense", "normalized_dense"] | None = Field(
        None, description="ManiSkill reward mode (null: the task's default, sparse for the RRL-*-Sparse tasks)")


class PPOConfig(_Section):
    """``ppo``: SB3 PPO's hyperparameters, the policy network and observation normalization."""

    n_steps: int = Field(256, ge=1, description="env steps per env per rollout")
    batch_size: int = Field(256, ge=2, description="minibatch size (env steps)")
    n_epochs: int = Field(8, ge=1, description="passes over each rollout")
    learning_rate: float = Field(3e-4, gt=0, description="Adam learning rate")
    gamma: float = Field(0.95, gt=0, le=1,
                         description="discount per env step (sparse reward: 0.95; FACTS.md's PPO runs used 0.8)")
    gae_lambda: float = Field(0.9, ge=0, le=1, description="GAE λ")
    clip_range: float = Field(0.2, gt=0, description="PPO ratio clip")
    ent_coef: float = Field(0.0, ge=0, description="entropy bonus coefficient")
    vf_coef: float = Field(0.5, ge=0, description="value loss coefficient")
    max_grad_norm: float = Field(0.5, gt=0, description="gradient norm clip")
    target_kl: float | None = Field(None, gt=0,
                                    description="early-stop an update past this approximate KL (null: never)")
    net_arch: list[int] = Field([256, 256],
                                description="hidden layer sizes of the policy and value MLPs ([]: linear)")
    log_std_init: float = Field(-0.5, description="initial log std of the Gaussian policy")
    normalize_obs: bool = Field(True, description="running mean/std observation normalization (baked into export)")
    device: str = Field("cpu", description="torch device for the policy (an MLP policy is fastest on cpu)")
    recurrent: bool = Field(False, description="sb3-contrib's RecurrentPPO (an LSTM before the MLP heads): the "
                                               "inherent-memory baseline Notes-to-Self compares against; mode ppo only")
    lstm_hidden_size: int = Field(128, ge=1, description="LSTM hidden units (ppo.recurrent)")


# ----------------------------------------------------------------------------------------------
# Sections that are a union of kinds


def tagged_section(value: Any, members: dict[str, type[BaseModel]], *, default: str, tag: str = "kind",
                   legacy_keys: frozenset[str] = frozenset()) -> Any:
    """Prepare a mapping for validation as the member of ``members`` its ``tag`` names (a ``mode="before"``
    field validator of a section typed ``Annotated[A | B | ..., Field(discriminator=tag)]``).

    * A missing ``tag`` is ``default``.
    * A key of *another* kind that holds that kind's default value is dropped: a section written
      with every key of every kind at its default (each ``config.yaml`` before the union, a file whose
      kind a ``KEY=VALUE`` override switches) still loads. Any other value of a key the kind does not
      have is left for the kind's ``extra="forbid"`` to refuse, naming the key (:func:`_format_error`
      adds which kinds have it).
    * A section that holds every key in ``legacy_keys`` was written before the union (the flat
      section carried them all): every key of another kind is dropped whatever its value, since the
      flat section ignored the keys of other kinds.

    Anything that is not a mapping is returned unchanged (pydantic names the error).
    """
    if not isinstance(value, dict):
        return value
    data = dict(value)
    kind = data.setdefault(tag, default)
    member = members.get(kind) if isinstance(kind, str) else None
    if member is None:
        return data  # an unknown kind: pydantic's union_tag_invalid error lists the kinds
    legacy = bool(legacy_keys) and legacy_keys <= set(data)
    for key in [k for k in data if k not in member.model_fields]:
        others = [m for m in members.values() if key in m.model_fields]
        if others and (legacy or all(_holds_default(m.model_fields[key], data[key]) for m in others)):
            del data[key]
    return data


def _holds_default(field: FieldInfo, value: Any) -> bool:
    try:
        return value == field.get_default(call_default_factory=True)
    except Exception:  # noqa: BLE001 -- a default that cannot be built or compared is not this value
        return False


def _members(field: FieldInfo | None) -> dict[str, type[BaseModel]]:
    """The sections a field holds: ``{"": Model}`` for a plain section, ``{kind: Model, ...}`` for a tagged
    union (``Field(discriminator=...)``), ``{}`` for a value.
    """
    if field is None:
        return {}
    ann = field.annotation
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return {"": ann}
    tag = field.discriminator
    if isinstance(tag, str) and typing.get_origin(ann) in (Union, types.UnionType):
        out = {}
        for m in typing.get_args(ann):
            if isinstance(m, type) and issubclass(m, BaseModel):
                for kind in typing.get_args(m.model_fields[tag].annotation):
                    out[str(kind)] = m
        return out
    return {}


class _TeacherBase(_Section):
    kind: str = Field(description="the teacher's kind")
    control_period_steps: int = Field(4, ge=1,
                                      description="D: env steps one teacher answer spans (20 Hz env, 5 Hz teacher: 4)")


class ScriptedTeacherConfig(_TeacherBase):
    """``teacher.kind: scripted``: the in-process privileged-state planner, with its weakness knobs."""

    kind: Literal["scripted"] = Field("scripted", description="scripted: the in-process privileged-state planner")
    direction_noise_deg: float = Field(0.0, ge=0, description="weak teacher: std of the direction noise (deg)")
    bias_rotation_deg: float = Field(0.0,
                                     description="weak teacher: constant rotation of the direction about world z (deg)")
    wrong_fraction: float = Field(0.0, ge=0, le=1,
                                  description="weak teacher: fraction of answers with a random direction")
    latency_s: float = Field(0.0, ge=0, description="weak teacher: added latency per query batch (s)")


class _ServedTeacherBase(_TeacherBase):
    timeout_s: float = Field(5.0, gt=0, description="per-request timeout (s); a slower answer is 'no guidance'")
    retries: int = Field(1, ge=0, description="extra attempts after a timeout, refused connection or 5xx")
    backoff_s: float = Field(1.0, ge=0, description="after a failed query, skip queries for this long (s)")
    unnorm_key: str | None = Field(None, description="OpenVLA dataset-statistics key (null: the server's default)")


class RemoteTeacherConfig(_ServedTeacherBase):
    """``teacher.kind: remote``: a teacher server at ``url`` (``robot-rl teacher serve`` or OpenVLA's own)."""

    kind: Literal["remote"] = Field("remote", description="remote: a teacher server at `url`")
    url: str = Field("http://127.0.0.1:8000",
                     description="teacher server base URL (kind openpi: ws://host:port, http:// read as ws://; API "
                                 "key from $ROBOT_RL_TEACHER_API_KEY, sent by openpi as 'Authorization: Api-Key')")


class SpawnTeacherConfig(_ServedTeacherBase):
    """``teacher.kind: spawn``: the run starts a local ``robot-rl teacher serve`` and stops it at the end."""

    kind: Literal["spawn"] = Field("spawn", description="spawn: start a local `robot-rl teacher serve` for the run")
    backend: Literal["scripted", "openvla"] = Field("scripted", description="the server's backend")
    model: str | None = Field(None, description="backend openvla: local checkpoint directory")
    latency_ms: float = Field(0.0, ge=0, description="the server holds every answer this long (ms; `teacher serve "
                                                     "--latency-ms`): a slow VLA for benchmarks of the interface")

    @model_validator(mode="after")
    def _openvla_needs_model(self) -> "SpawnTeacherConfig":
        if self.backend == "openvla" and not self.model:
            raise ValueError("teacher.model: kind=spawn with backend=openvla needs a checkpoint directory")
        return self


class OpenpiTeacherConfig(_ServedTeacherBase):
    """``teacher.kind: openpi``: any openpi policy server (openpi's ``serve_policy.py``, or ``robot-rl teacher
    serve``) over its WebSocket (:class:`~robot_rl.teachers.openpi.OpenpiTeacher`).

    The ``*_key`` fields map our teacher view to the server's observation keys (null: not sent); the defaults
    are openpi's LIBERO example (:data:`robot_rl.teachers.openpi.LIBERO_KEYS`).

    Its reply's ``actions`` ``(H, dim)`` become one ``pd_ee_delta_pose`` delta over ``D`` =
    ``control_period_steps`` env steps: the first 7 columns of the rows covering the first ``D`` env steps
    (``action_steps`` env steps per row, the last row weighted by its part) are summed for position and
    rotation, the last of those rows gives the gripper, and ``convention`` maps the units.
    """

    kind: Literal["openpi"] = Field("openpi", description="openpi: an openpi policy server's WebSocket at `url`")
    url: str = Field("http://127.0.0.1:8000", description="the server's ws://host:port (http:// is read as ws://, "
                                                          "https:// as wss://)")
    image_key: str | None = Field("observation/image", description="observation key of the RGB teacher view, "
                                                                   "(H, W, 3) uint8 (null: not sent, none rendered)")
    wrist_image_key: str | None = Field(
        "observation/wrist_image", description="observation key of a wrist camera: robot_rl renders one camera, so "
                                               "this carries a zero image of the view's size (null: not sent)")
    state_key: str | None = Field("observation/state", description="observation key of the privileged state (S,) "
                                                                   "float32 (a LIBERO VLA expects its own 8-D proprio)")
    instruction_key: str | None = Field("prompt", description="observation key of the language instruction")
    task_id_key: str | None = Field(None, description="observation key of the env id (our scripted server reads "
                                                      "`task_id`; null: not sent)")
    convention: Literal["env", "openvla"] = Field(
        "env", description="units of the server's action rows: env (normalized pd_ee_delta_pose, 1.0 = 0.1 m / "
                           "0.1 rad in the controller's sign, gripper -1 closed..+1 open; our server's) or openvla "
                           "(m, rad in the robot-base frame, gripper 0 closed..1 open)")
    action_steps: int | None = Field(
        None, ge=1, description="env steps one row of the server's chunk spans (null: the server's metadata "
                                "openpi.action_steps, which ours reports as D, else 1: openpi's one row per step)")
    max_frame_mb: float = Field(8.0, gt=0, description="largest frame accepted from the server (MiB)")


#: The teacher kinds of a training config, ``teacher.kind`` -> its section.
TEACHER_CONFIGS: dict[str, type[_TeacherBase]] = {
    "scripted": ScriptedTeacherConfig, "remote": RemoteTeacherConfig, "spawn": SpawnTeacherConfig,
    "openpi": OpenpiTeacherConfig,
}
#: The ``teacher`` section: one of :data:`TEACHER_CONFIGS`, chosen by ``teacher.kind`` (default scripted).
TeacherConfig = Annotated[
    Union[ScriptedTeacherConfig, RemoteTeacherConfig, SpawnTeacherConfig, OpenpiTeacherConfig],
    Field(discriminator="kind"),
]
#: The keys of the flat ``teacher`` section every ``config.yaml`` carried before the union.
LEGACY_TEACHER_KEYS = frozenset({
    "kind", "control_period_steps", "direction_noise_deg", "bias_rotation_deg", "wrong_fraction", "latency_s",
    "url", "timeout_s", "retries", "backoff_s", "backend", "model", "unnorm_key",
})


class GuardConfig(_Section):
    """``guidance.guard``: the misleading-teacher guard (``robot_rl/guidance/guard.py``), vlajs only.

    A one-sided t-test, over the last ``window_rollouts`` updates, of whether PPO's own advantages favour
    exploring along the teacher's direction; guidance is switched off for good when they significantly
    disfavour it. It needs rewarded episodes for evidence, and leaves guidance on without them.
    """

    enabled: bool = Field(True, description="switch guidance off when PPO's advantages significantly disfavour "
                                            "the teacher's direction (vlajs)")
    z_threshold: float = Field(3.0, gt=0, description="fire below t = -z_threshold (one-sided; 3.0: p ~ 0.0013)")
    min_rows: int | None = Field(None, ge=2, description="guided env steps (rows with a valid target) needed before "
                                                       "deciding (null: 256, or all the window can hold if fewer)")
    window_rollouts: int = Field(16, ge=1, description="updates whose rows the test pools")


class GuidanceConfig(_Section):
    """``guidance``: the query budget and its annealing, and the auxiliary loss's weight (VLAJS)."""

    budget_fraction: float = Field(0.2, ge=0, le=1, description="query budget: max queries per env step (VLAJS: 0.2)")
    n_min: int = Field(0, ge=0, description="N_min: floor on queries per rollout while guidance is active")
    kappa: float = Field(2.0, ge=0, description="κ: annealing rate of N_calls and λ_t per unit of return improvement")
    deactivate_threshold: float | None = Field(
        0.9, description="Δr̄ (return over the run's start) that switches guidance off for good (null: never); "
                         "the paper's 3 is on a dense-reward scale, a sparse return is 0 or 1")
    lambda_0: float = Field(1.0, ge=0, description="λ_0: initial weight of the auxiliary loss")
    cos_eps: float = Field(0.1, gt=0, description="ε in the directional loss's denominator (action units²); ~0 only "
                                                   "turns the policy mean, 0.1 also lengthens a short one (losses.py)")
    image_size: tuple[int, int] = Field((224, 224),
                                        description="teacher view (H, W) in pixels, rendered only for querying envs")
    components: list[Literal["pos", "rot", "grip"]] = Field(
        ["pos", "rot"], min_length=1,
        description="guided action components of vlajs's loss: the paper's pos, rot (cosine each); grip adds a "
                    "hinge on the gripper against the teacher's open/close (losses.py)")
    magnitude_weight: float = Field(0.0, ge=0, description="w of the term w (|μ^c| - |ã^c|)² on each guided pos/rot "
                                                           "component: fits the hint's length, not only its "
                                                           "direction (0: the paper's loss; losses.py)")
    guard: GuardConfig = Field(default_factory=GuardConfig)

    @field_validator("components")
    @classmethod
    def _distinct(cls, components: list[str]) -> list[str]:
        if len(set(components)) != len(components):
            raise ValueError(f"each component at most once (allowed: pos, rot, grip), got {components}")
        return components


# ----------------------------------------------------------------------------------------------
# The delayed semantic interface (TIC-VLA, Huang et al. 2026; DESIGN.md "Delayed semantic interface")


class _DelayBase(_Section):
    kind: str = Field(description="the delay model")


class NoDelayConfig(_DelayBase):
    """``interface.delay.kind: none``: an answer is delivered at the step it was asked for (d = 0)."""

    kind: Literal["none"] = Field("none", description="none: answers arrive at once (d = 0)")


class FixedDelayConfig(_DelayBase):
    """``interface.delay.kind: fixed``: every answer arrives ``steps`` env steps after its query."""

    kind: Literal["fixed"] = Field("fixed", description="fixed: every answer d = steps env steps late")
    steps: int = Field(10, ge=0, description="d, env steps (0.05 s each)")


class UniformDelayConfig(_DelayBase):
    """``interface.delay.kind: uniform``: each answer ``d ~ U{min_steps, ..., max_steps}`` env steps late."""

    kind: Literal["uniform"] = Field("uniform", description="uniform: d drawn per query from min_steps..max_steps")
    min_steps: int = Field(0, ge=0, description="smallest d, env steps")
    max_steps: int = Field(20, ge=0, description="largest d, env steps (20 = 1 s)")

    @model_validator(mode="after")
    def _ordered(self) -> "UniformDelayConfig":
        if self.max_steps < self.min_steps:
            raise ValueError(f"interface.delay.max_steps ({self.max_steps}) < min_steps ({self.min_steps})")
        return self


class MeasuredDelayConfig(_DelayBase):
    """``interface.delay.kind: measured``: the real wall-clock latency of an asynchronous teacher (a served one,
    or the scripted teacher in a worker thread), rounded up to env steps of 0.05 s.
    """

    kind: Literal["measured"] = Field("measured", description="measured: the asynchronous teacher's own latency")


#: The delay models, ``interface.delay.kind`` -> its section.
DELAY_CONFIGS: dict[str, type[_DelayBase]] = {
    "none": NoDelayConfig, "fixed": FixedDelayConfig, "uniform": UniformDelayConfig, "measured": MeasuredDelayConfig,
}
DelayConfig = Annotated[
    Union[NoDelayConfig, FixedDelayConfig, UniformDelayConfig, MeasuredDelayConfig], Field(discriminator="kind")
]
#: Features of the ``teacher`` observation group, in vector order (robot_rl/interface).
INTERFACE_FEATURES = ("hint", "hint_valid", "dt", "dp")


class InterfaceConfig(_Section):
    """``interface``: the delayed semantic interface, stale teacher answers as policy inputs (issue 12)."""

    delay: DelayConfig = Field(default_factory=NoDelayConfig, description="delay model of teacher answers, by kind")
    features: list[Literal["hint", "hint_valid", "dt", "dp"]] = Field(
        [], description="the teacher observation group: hint (7, the last answer), hint_valid (1), dt (1, s), "
                        "dp (7: TCP translation m, rotation rad, gripper width m since the answer's observation); "
                        "[] = no teacher group")
    compensate_targets: bool = Field(
        False, description="guidance targets of a late answer are the displacement still remaining (ego-motion "
                           "compensated) instead of the answer as it was")

    @field_validator("delay", mode="before")
    @classmethod
    def _delay_kind(cls, value: Any) -> Any:
        return tagged_section(value, DELAY_CONFIGS, default="none")

    @field_validator("features")
    @classmethod
    def _features(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"features appear twice: {value}")
        if "dp" in value and "hint" not in value:
            raise ValueError("dp (the motion since the answer's observation) needs hint: add hint to the features")
        if any(f in value for f in ("hint_valid", "dt")) and "hint" not in value:
            raise ValueError(f"{[f for f in value if f != 'hint']} describe the hint: add hint to the features")
        return [f for f in INTERFACE_FEATURES if f in value]  # vector order


class MemoryConfig(_Section):
    """``memory``: the bounded scratchpad (Notes-to-Self; DESIGN.md "Scratchpad memory", issue 13): notes from the
    teacher's answers, sent back with every query (as text) and given to the policy (the ``memory`` group).
    """

    enabled: bool = Field(False, description="keep a scratchpad per env and episode: add the memory observation "
                                             "group and send the scratchpad text with every teacher query")
    grounding_slots: int = Field(2, ge=1, description="grounding slots (object, position m, env step seen)")
    plan_slots: int = Field(4, ge=1, description="plan slots (subtask names)")
    act_slots: int = Field(4, ge=1, description="act slots (completed subtasks, env step done)")
    max_note_chars: int = Field(1024, ge=1, description="longest teacher note kept; longer ones are cut (counted)")


class RunConfig(_Section):
    """``run``: where the run directory goes, checkpoints, the final evaluation and the progress bar."""

    out_dir: str = Field("runs", description="parent directory of run directories")
    name: str | None = Field(None, description="run directory name (null: <task>-<mode>-s<seed>-<timestamp>)")
    checkpoint_every_steps: int = Field(10_000, ge=1, description="env steps between checkpoints")
    keep_checkpoints: int = Field(
        5, ge=0, description="step-numbered checkpoints kept beside checkpoints/latest (the one resume reads): the N "
                             "most recent as checkpoints/step_<env steps>.zip + step_<env steps>_vecnormalize.pkl "
                             "(0: keep none)")
    eval_episodes: int = Field(20, ge=0, description="episodes of the final evaluation (eval.json)")
    progress_bar: bool = Field(True, description="show a progress bar")
    wandb: bool = Field(False, description="also log to Weights & Biases, syncing the TensorBoard events "
                                           "(needs `pip install robot_rl[wandb]`; offline: WANDB_MODE=offline)")
    wandb_project: str = Field("robot_rl", description="W&B project (with run.wandb)")
    wandb_entity: str | None = Field(None, description="W&B entity, a user or team (null: the account's default)")
    wandb_name: str | None = Field(None, description="W&B run name (null: the run directory's name)")
    wandb_dir: str | None = Field(None, description="parent directory of W&B's local files (null: the run directory)")


class TrainConfig(_Section):
    """A training run's whole config (``configs/train/*.yaml``): task, mode, seed, budget and the sections."""

    task: str = Field("RRL-PushCube-Sparse-v1", description="task id (robot-rl tasks lists them)")
    mode: Literal["ppo", "rpd", "vlajs"] = Field(
        "vlajs", description="ppo: no teacher; rpd: MSE every step; vlajs: sparse directional, annealed")
    seed: int = Field(0, ge=0, description="seed of envs, policy and scheduler")
    total_steps: int = Field(100_000, ge=1, description="training budget in env steps")
    env: EnvConfig = Field(default_factory=EnvConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    teacher: TeacherConfig = Field(default_factory=ScriptedTeacherConfig, description="the teacher, by kind")
    guidance: GuidanceConfig = Field(default_factory=GuidanceConfig)
    interface: InterfaceConfig = Field(default_factory=InterfaceConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_kind(cls, value: Any) -> Any:
        return tagged_section(value, TEACHER_CONFIGS, default="scripted", legacy_keys=LEGACY_TEACHER_KEYS)

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        from robot_rl.envs import get_task  # registering tasks imports ManiSkill: only when validating

        get_task(task)  # raises ValueError listing the known ids
        return task

    @model_validator(mode="after")
    def _interface_needs_a_teacher(self) -> TrainConfig:
        i = self.interface
        if self.mode == "ppo" and (i.features or i.delay.kind != "none"):
            key = "interface.features" if i.features else "interface.delay.kind"
            raise ValueError(f"{key}: mode ppo has no teacher; the delayed interface needs mode vlajs or rpd")
        if self.ppo.recurrent and self.mode != "ppo":
            raise ValueError(f"ppo.recurrent: RecurrentPPO runs without guidance here (mode ppo), got mode "
                             f"{self.mode}")
        if self.mode == "ppo" and self.memory.enabled:
            raise ValueError("memory.enabled: mode ppo has no teacher to write notes; the scratchpad needs vlajs or "
                             "rpd (ppo.recurrent is the inherent-memory baseline)")
        if self.mode == "rpd" and i.delay.kind != "none":
            raise ValueError("interface.delay.kind: rpd asks the teacher at every env step; delays are for vlajs")
        return self

    @model_validator(mode="after")
    def _guard_can_decide(self) -> TrainConfig:
        g = self.guidance
        if self.mode != "vlajs" or not g.guard.enabled or g.guard.min_rows is None:
            return self
        capacity = guard_window_rows(self)
        if capacity < g.guard.min_rows:
            raise ValueError(
                f"guidance.guard.min_rows ({g.guard.min_rows}) exceeds the guided env steps its window can hold, "
                f"guidance.guard.window_rollouts ({g.guard.window_rollouts}) x floor(guidance.budget_fraction x "
                f"ppo.n_steps x env.num_envs) x teacher.control_period_steps = {capacity}: the guard could never "
                f"decide. Lower guidance.guard.min_rows (or null), raise guidance.guard.window_rollouts, or set "
                f"guidance.guard.enabled=false")
        return self

    @model_validator(mode="after")
    def _batch_fits_rollout(self) -> TrainConfig:
        if self.ppo.batch_size > self.ppo.n_steps * self.env.num_envs:
            raise ValueError(
                f"ppo.batch_size ({self.ppo.batch_size}) exceeds one rollout, ppo.n_steps * env.num_envs "
                f"= {self.ppo.n_steps * self.env.num_envs}")
        return self


#: ``guidance.guard.min_rows: null`` means this many guided env steps, or all the window can hold if fewer.
DEFAULT_GUARD_MIN_ROWS = 256


def guard_window_rows(cfg: TrainConfig) -> int:
    """Guided env steps (rows with a valid target) the guard's window can hold at most: ``window_rollouts x
    floor(budget_fraction x n_steps x num_envs) x D``.
    """
    g = cfg.guidance
    per_update = math.floor(g.budget_fraction * cfg.ppo.n_steps * cfg.env.num_envs) * cfg.teacher.control_period_steps
    return per_update * g.guard.window_rollouts


def guard_min_rows(cfg: TrainConfig) -> int | None:
    """The guard's ``min_rows`` for this run: ``guidance.guard.min_rows``, or for ``null``
    ``min(DEFAULT_GUARD_MIN_ROWS, guard_window_rows(cfg))``; ``None`` when no guard runs (mode not ``vlajs``, the
    guard disabled, or a window that can hold fewer than 2 guided env steps: a budget of 0 guides nothing).
    """
    g = cfg.guidance.guard
    if cfg.mode != "vlajs" or not g.enabled:
        return None
    if g.min_rows is not None:
        return g.min_rows
    rows = min(DEFAULT_GUARD_MIN_ROWS, guard_window_rows(cfg))
    return rows if rows >= 2 else None


def _format_error(err: ValidationError, model: type[BaseModel] = TrainConfig) -> str:
    lines = []
    for e in err.errors():
        parts, section, kinds = _walk(e["loc"], model)
        key = ".".join(parts) or "<config>"
        if e["type"] == "extra_forbidden" and section is not None:
            name, where = parts[-1], ".".join(parts[:-1])
            kind = f" for {where}.kind={section.model_fields['kind'].default}" if where in kinds else ""
            others = [k for k, m in kinds.get(where, {}).items() if name in m.model_fields]
            elsewhere = f"; it is a key of {where}.kind={' / '.join(others)}" if others else ""
            lines.append(f"unknown key '{key}'{kind} (allowed: {', '.join(section.model_fields)}){elsewhere}")
        elif e["type"] == "union_tag_invalid":
            lines.append(f"'{key}.{e['ctx']['discriminator'].strip(chr(39))}': {e['msg']}")
        else:
            lines.append(f"'{key}': {e['msg']} (got {e.get('input')!r})")
    return "invalid config:\n  " + "\n  ".join(lines)


def _walk(loc: tuple, model: type[BaseModel]) -> tuple[list[str], type[BaseModel] | None, dict]:
    """An error location as config key parts (union tags dropped), the section model holding its last
    key (``None`` if the path leaves the models), and ``{tagged section path: {kind: model}}`` on the way.
    """
    parts: list[str] = []
    section: type[BaseModel] | None = model
    kinds: dict[str, dict[str, type[BaseModel]]] = {}
    items = [str(p) for p in loc]
    i = 0
    while i < len(items):
        part = items[i]
        i += 1
        if section is None:
            parts.append(part)
            continue
        members = _members(section.model_fields.get(part))
        parts.append(part)
        if i == len(items):
            break  # the last part is the key itself
        if "" in members:
            section = members[""]
        elif members and items[i] in members:  # a tagged union: the next part is the kind
            kinds[".".join(parts)] = members
            section = members[items[i]]
            i += 1
        else:
            section = None
    return parts, section, kinds


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"ppo.n_steps=128"`` -> ``(["ppo", "n_steps"], 128)``; the value is parsed as YAML.

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. ppo.n_steps=128)")
    return key.strip().split("."), yaml.safe_load(value)


def build_config(data: dict | None = None, overrides: list[str] | tuple = (), model: type[BaseModel] = TrainConfig,
                 *, values: dict[str, Any] | None = None):
    """Validate ``data`` (a config mapping) with ``KEY=VALUE`` overrides applied on top, then ``values``
    (``{"server.port": 8001}``: typed values, not YAML text, set last: a CLI's flags), as ``model``
    (default :class:`TrainConfig`; the deploy and teacher serving configs use the same machinery).

    Raises:
        ConfigError: an unknown key or a bad value; the message names the key and what is allowed.
    """
    data = dict(data or {})
    settings = [(*parse_override(text), text) for text in overrides]
    settings += [(key.split("."), value, f"{key}={value!r}") for key, value in (values or {}).items()]
    for path, value, text in settings:
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{part}' is not a section")
            else:
                child = node[part] = dict(child)
            node = child
        node[path[-1]] = value
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, model)) from None


def load_config(path: str | Path | None, overrides: list[str] | tuple = (), model: type[BaseModel] = TrainConfig,
                *, values: dict[str, Any] | None = None):
    """Load a YAML config (``None``: all defaults) and apply overrides, then ``values``; validated as ``model``.

    Raises:
        ConfigError: unreadable YAML, a non-mapping top level, an unknown key or a bad value.
        FileNotFoundError: ``path`` does not exist.
    """
    return build_config({} if path is None else read_yaml_mapping(path), overrides, model, values=values)


def read_yaml_mapping(path: str | Path) -> dict:
    """The top-level mapping of a YAML file (an empty file is ``{}``).

    Raises:
        ConfigError: unreadable YAML or a top level that is not a mapping; the message names the file.
        FileNotFoundError: ``path`` does not exist.
    """
    text = Path(path).read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (what ``--resume`` reads back)."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def describe(model: type[BaseModel] = TrainConfig, prefix: str = "") -> list[str]:
    """One line per key: ``section.key (default): description``. A section that is a union of kinds lists
    ``kind`` (with every kind) and then every key of every kind, each once, saying which kinds have it.
    """
    lines = []
    for name, field in model.model_fields.items():
        members = _members(field)
        if "" in members:
            lines += describe(members[""], f"{prefix}{name}.")
        elif members:
            lines += _describe_kinds(members, f"{prefix}{name}.", field.discriminator)
        else:
            lines.append(f"{prefix}{name} ({_default(field)}): {field.description}")
    return lines


def _default(field: FieldInfo) -> str:
    return "required" if field.is_required() else f"default {field.get_default(call_default_factory=True)!r}"


def _describe_kinds(members: dict[str, type[BaseModel]], prefix: str, tag: str) -> list[str]:
    first = next(iter(members.values()))
    default = first.model_fields[tag].default
    kinds = "; ".join(m.model_fields[tag].description for m in dict.fromkeys(members.values()))
    lines = [f"{prefix}{tag} (default {default!r}; one of {' | '.join(members)}): {kinds}"]
    seen: set[str] = {tag}
    for m in dict.fromkeys(members.values()):
        for key in m.model_fields:
            if key in seen:
                continue
            seen.add(key)
            having = [k for k, mm in members.items() if key in mm.model_fields]
            sub = "" if len(having) == len(members) else f"; kind {' | '.join(having)}"
            lines.append(f"{prefix}{key} ({_default(m.model_fields[key])}{sub}): {m.model_fields[key].description}")
    return lines
