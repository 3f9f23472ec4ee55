"""Typed, validated training configs (pydantic), loaded from YAML and overridable from the CLI.

Unknown keys and bad values are rejected with an error that names the key (``ConfigError``).
Every field carries a one-line description with its unit; ``robot-rl train --help`` shows the
sections, ``robot-rl config`` (or :func:`describe`) lists every key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MODES = ("ppo", "rpd", "vlajs")
SIM_BACKENDS = ("physx_cpu", "physx_cuda")


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvConfig(_Section):
    num_envs: int = Field(2, ge=1, description="parallel envs (CPU: one worker process each; GPU: one batched sim)")
    sim_backend: Literal["physx_cpu", "physx_cuda"] = Field("physx_cpu", description="ManiSkill sim backend")
    max_episode_steps: int | None = Field(None, ge=1, description="episode horizon in env steps (null: the task's default)")
    reward_mode: Literal["sparse", "dense", "normalized_dense"] | None = Field(
        None, description="ManiSkill reward mode (null: the task's default, sparse for the RRL-*-Sparse tasks)")


class PPOConfig(_Section):
    n_steps: int = Field(256, ge=1, description="env steps per env per rollout")
    batch_size: int = Field(256, ge=2, description="minibatch size (env steps)")
    n_epochs: int = Field(8, ge=1, description="passes over each rollout")
    learning_rate: float = Field(3e-4, gt=0, description="Adam learning rate")
    gamma: float = Field(0.95, gt=0, le=1, description="discount per env step (sparse reward: 0.95; FACTS.md's PPO runs used 0.8)")
    gae_lambda: float = Field(0.9, ge=0, le=1, description="GAE λ")
    clip_range: float = Field(0.2, gt=0, description="PPO ratio clip")
    ent_coef: float = Field(0.0, ge=0, description="entropy bonus coefficient")
    vf_coef: float = Field(0.5, ge=0, description="value loss coefficient")
    max_grad_norm: float = Field(0.5, gt=0, description="gradient norm clip")
    target_kl: float | None = Field(None, gt=0, description="early-stop an update past this approximate KL (null: never)")
    net_arch: list[int] = Field([256, 256], min_length=1, description="hidden layer sizes of the policy and value MLPs")
    log_std_init: float = Field(-0.5, description="initial log std of the Gaussian policy")
    normalize_obs: bool = Field(True, description="running mean/std observation normalization (baked into export)")
    device: str = Field("cpu", description="torch device for the policy (an MLP policy is fastest on cpu)")


class TeacherConfig(_Section):
    kind: Literal["scripted", "remote", "spawn"] = Field(
        "scripted", description="scripted: in-process privileged-state planner; remote: a teacher server at `url`; "
                                "spawn: start a local `robot-rl teacher serve` for the run and stop it at the end")
    control_period_steps: int = Field(4, ge=1, description="D: env steps one teacher answer spans (20 Hz env, 5 Hz teacher: 4)")
    direction_noise_deg: float = Field(0.0, ge=0, description="weak teacher (scripted): std of the direction noise (deg)")
    bias_rotation_deg: float = Field(0.0, description="weak teacher (scripted): constant rotation of the direction about world z (deg)")
    wrong_fraction: float = Field(0.0, ge=0, le=1, description="weak teacher (scripted): fraction of answers with a random direction")
    latency_s: float = Field(0.0, ge=0, description="weak teacher (scripted): added latency per query batch (s)")
    url: str = Field("http://127.0.0.1:8000", description="remote: teacher server base URL (API key from $ROBOT_RL_TEACHER_API_KEY)")
    timeout_s: float = Field(5.0, gt=0, description="remote/spawn: per-request timeout (s); a slower answer is 'no guidance'")
    retries: int = Field(1, ge=0, description="remote/spawn: extra attempts after a timeout, refused connection or 5xx")
    backoff_s: float = Field(1.0, ge=0, description="remote/spawn: after a failed query, skip queries for this long (s)")
    backend: Literal["scripted", "openvla"] = Field("scripted", description="spawn: the server's backend")
    model: str | None = Field(None, description="spawn with backend openvla: local checkpoint directory")
    unnorm_key: str | None = Field(None, description="remote/spawn: OpenVLA dataset-statistics key (null: the server's default)")

    @model_validator(mode="after")
    def _knobs_need_scripted(self) -> "TeacherConfig":
        if self.kind != "scripted":
            for key in ("direction_noise_deg", "bias_rotation_deg", "wrong_fraction", "latency_s"):
                if getattr(self, key) != 0:
                    raise ValueError(f"teacher.{key} applies to teacher.kind=scripted only (kind is {self.kind})")
        if self.kind == "spawn" and self.backend == "openvla" and not self.model:
            raise ValueError("teacher.model: kind=spawn with backend=openvla needs a checkpoint directory")
        return self


class GuidanceConfig(_Section):
    budget_fraction: float = Field(0.2, ge=0, le=1, description="query budget: max queries per env step (VLAJS: 0.2)")
    n_min: int = Field(0, ge=0, description="N_min: floor on queries per rollout while guidance is active")
    kappa: float = Field(2.0, ge=0, description="κ: annealing rate of N_calls and λ_t per unit of return improvement")
    deactivate_threshold: float | None = Field(
        0.9, description="Δr̄ (return over the run's start) that switches guidance off for good (null: never); "
                         "the paper's 3 is on a dense-reward scale, a sparse return is 0 or 1")
    lambda_0: float = Field(1.0, ge=0, description="λ_0: initial weight of the auxiliary loss")
    cos_eps: float = Field(0.1, gt=0, description="ε in the directional loss's denominator (action units²); ~0 only turns "
                                                   "the policy mean, 0.1 also lengthens a short one (losses.py)")
    image_size: tuple[int, int] = Field((224, 224), description="teacher view (H, W) in pixels, rendered only for querying envs")


class RunConfig(_Section):
    out_dir: str = Field("runs", description="parent directory of run directories")
    name: str | None = Field(None, description="run directory name (null: <task>-<mode>-s<seed>-<timestamp>)")
    checkpoint_every_steps: int = Field(10_000, ge=1, description="env steps between checkpoints")
    eval_episodes: int = Field(20, ge=0, description="episodes of the final evaluation (eval.json)")
    progress_bar: bool = Field(True, description="show a progress bar")


class TrainConfig(_Section):
    task: str = Field("RRL-PushCube-Sparse-v1", description="task id (robot-rl tasks lists them)")
    mode: Literal["ppo", "rpd", "vlajs"] = Field("vlajs", description="ppo: no teacher; rpd: MSE every step; vlajs: sparse directional, annealed")
    seed: int = Field(0, ge=0, description="seed of envs, policy and scheduler")
    total_steps: int = Field(100_000, ge=1, description="training budget in env steps")
    env: EnvConfig = Field(default_factory=EnvConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    guidance: GuidanceConfig = Field(default_factory=GuidanceConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        from robot_rl.envs import get_task  # registering tasks imports ManiSkill: only when validating

        get_task(task)  # raises ValueError listing the known ids
        return task

    @model_validator(mode="after")
    def _batch_fits_rollout(self) -> TrainConfig:
        if self.ppo.batch_size > self.ppo.n_steps * self.env.num_envs:
            raise ValueError(
                f"ppo.batch_size ({self.ppo.batch_size}) exceeds one rollout, ppo.n_steps * env.num_envs "
                f"= {self.ppo.n_steps * self.env.num_envs}")
        return self


def _format_error(err: ValidationError, model: type[BaseModel] = TrainConfig) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<config>"
        if e["type"] == "extra_forbidden":
            section = _section_of(e["loc"][:-1], model)
            lines.append(f"unknown key '{key}' (allowed: {', '.join(section.model_fields)})")
        else:
            lines.append(f"'{key}': {e['msg']} (got {e.get('input')!r})")
    return "invalid config:\n  " + "\n  ".join(lines)


def _section_of(loc: tuple, model: type[BaseModel] = TrainConfig) -> type[BaseModel]:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            break
        model = field.annotation
    return model


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"ppo.n_steps=128"`` -> ``(["ppo", "n_steps"], 128)``; the value is parsed as YAML.

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. ppo.n_steps=128)")
    return key.strip().split("."), yaml.safe_load(value)


def build_config(data: dict | None = None, overrides: list[str] | tuple = (), model: type[BaseModel] = TrainConfig):
    """Validate ``data`` (a config mapping) with ``KEY=VALUE`` overrides applied on top, as ``model``
    (default :class:`TrainConfig`; the deploy config uses the same machinery).

    Raises:
        ConfigError: an unknown key or a bad value; the message names the key and what is allowed.
    """
    data = dict(data or {})
    for text in overrides:
        path, value = parse_override(text)
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


def load_config(path: str | Path | None, overrides: list[str] | tuple = (), model: type[BaseModel] = TrainConfig):
    """Load a YAML config (``None``: all defaults) and apply overrides; validated as ``model``.

    Raises:
        ConfigError: unreadable YAML, a non-mapping top level, an unknown key or a bad value.
        FileNotFoundError: ``path`` does not exist.
    """
    return build_config({} if path is None else read_yaml_mapping(path), overrides, model)


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
    """One line per key: ``section.key (default): description``."""
    lines = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines += describe(ann, f"{prefix}{name}.")
        else:
            lines.append(f"{prefix}{name} (default {field.default!r}): {field.description}")
    return lines
