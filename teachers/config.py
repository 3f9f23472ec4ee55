"""Teacher serving config (``configs/teacher/*.yaml``), validated like the training configs.

``robot-rl teacher serve --config configs/teacher/scripted.yaml [KEY=VALUE ...] [flags]`` loads a
:class:`TeacherServeConfig` with :mod:`robot_rl.config`'s machinery (one YAML reader, one error format:
an unknown key or a bad value is a :class:`~robot_rl.config.ConfigError` naming the key). Precedence,
as for ``robot-rl train``: the file, then ``KEY=VALUE`` overrides, then the flags (``--port 8001``
beats ``server.port`` in the file).

Sections:

- ``backend``: what answers, tagged by ``backend.kind``: ``scripted`` (:class:`ScriptedBackendConfig`)
  or ``openvla`` (:class:`OpenVLABackendConfig`); a key of the other kind is refused, naming it.
- ``server``: where and how it listens and batches (:class:`ServerConfig`), for HTTP and openpi's WebSocket
  protocol on the same port.
- ``ray``: Ray Serve scale-out (:class:`RayConfig`; ``ray.enabled: true`` is ``--ray``).

The API key is not a config key (a file is easy to commit): it comes from ``--api-key`` or
``$ROBOT_RL_TEACHER_API_KEY``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from robot_rl.config import ConfigError, build_config, describe, load_config, tagged_section

#: CPUs one Ray Serve replica reserves by default: small, so several replicas fit on a laptop (the
#: backend runs in one thread per replica; a GPU backend is bound by its GPU, not by this reservation).
REPLICA_NUM_CPUS = 0.5


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ScriptedBackendConfig(_Section):
    """``backend.kind: scripted``: the privileged-state planner (:class:`~robot_rl.teachers.ScriptedTeacher`)."""

    kind: Literal["scripted"] = Field("scripted",
                                      description="scripted: the privileged-state planner (requests carry states)")
    control_period_steps: int = Field(4, ge=1, description="D: env steps one answer spans, reported in /metadata")
    task: str | None = Field(
        None, description="default task id for requests that carry none (null: requests must name theirs)")
    seed: int | None = Field(0, description="seed of the planner's own RNG (null: fresh entropy)")


class OpenVLABackendConfig(_Section):
    """``backend.kind: openvla``: a local transformers-native checkpoint.

    :class:`~robot_rl.teachers.openvla.OpenVLATeacher` loads it.
    """

    kind: Literal["openvla"] = Field("openvla", description="openvla: a local VLA checkpoint (requests carry images)")
    model: str = Field(
        description="checkpoint directory (AutoModelForImageTextToText + AutoProcessor layout, norm_stats)")
    unnorm_key: str | None = Field(None, description="default dataset-statistics key (null: the checkpoint's only one)")
    control_period_steps: int = Field(4, ge=1, description="D: env steps one answer spans, reported in /metadata")
    device: str = Field("cpu", description="torch device of the model (cpu, cuda, cuda:0, ...)")
    torch_dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="weights' dtype (auto: the checkpoint's)")
    notes: bool = Field(
        False, description="Notes-to-Self mode: the scratchpad goes into the prompt, the model writes <plan>/<think>"
                           " text before <act> and its 7 action tokens, answers carry notes (writes_notes); off: "
                           "OpenVLA's plain 7-token protocol")
    notes_max_new_tokens: int = Field(
        250, ge=8, description="notes mode: most tokens one row may generate (text, <act>, 7 action tokens); a row "
                               "without its 7 action tokens by then is invalid (250: Notes-to-Self's budget)")


#: The serving backends, ``backend.kind`` -> its section (``robot-rl teacher serve --backend``).
BACKEND_CONFIGS: dict[str, type[_Section]] = {"scripted": ScriptedBackendConfig, "openvla": OpenVLABackendConfig}
#: The ``backend`` section: one of :data:`BACKEND_CONFIGS`, chosen by ``backend.kind`` (default scripted).
BackendConfig = Annotated[Union[ScriptedBackendConfig, OpenVLABackendConfig], Field(discriminator="kind")]


class ServerConfig(_Section):
    """``server``: the HTTP side (uvicorn, or Ray Serve's proxy with ``ray.enabled``)."""

    host: str = Field("127.0.0.1", description="bind address (127.0.0.1: loopback only; 0.0.0.0: every interface)")
    port: int = Field(8000, ge=1, le=65535, description="TCP port (8000, as OpenVLA's server)")
    max_batch: int = Field(16, ge=1, description="most rows per backend call")
    batch_wait_ms: float = Field(5.0, ge=0, description="longest a request waits for a batch to fill (ms)")
    max_body_mb: float = Field(64.0, gt=0, description="largest request body (MiB); larger gets 413")
    openpi_max_frame_mb: float = Field(
        8.0, gt=0, description="largest frame on the openpi WebSocket (ws://host:port, any path; MiB): a larger one "
                               "closes its connection with code 1009, the reason naming the limit (two 224x224x3 "
                               "images are 0.3 MB; openpi itself has no limit; uvicorn only)")
    body_timeout_s: float = Field(30.0, gt=0, description="longest a request body may take to arrive (s): a stalled "
                                                          "or half-sent body gets 408 (uvicorn only)")
    max_inflight_body_mb: float = Field(256.0, gt=0, description="most request-body bytes buffered at once over "
                                                                 "all requests (MiB); beyond it 503 (uvicorn only)")
    decode_workers: int = Field(1, ge=0, description="processes that decode request bodies of 1 MiB or more, "
                                                     "started on demand and stopped after 10 s idle, so that a big "
                                                     "body does not hold the event loop; 0: a thread of the server "
                                                     "(uvicorn only)")
    timeout_keep_alive_s: int = Field(5, ge=1, description="uvicorn timeout_keep_alive: an idle keep-alive "
                                                           "connection closes after this long (s)")
    limit_concurrency: int = Field(256, ge=1, description="uvicorn limit_concurrency: most connections and tasks "
                                                          "at once; beyond it 503")
    max_header_kb: int = Field(64, ge=1, description="largest request line plus headers (KiB); beyond it 431 "
                                                     "(uvicorn only: uvicorn's httptools parser has no such limit)")
    header_timeout_s: float = Field(10.0, gt=0, description="longest a connection may take to send a request's "
                                                            "headers (s), from its open or the next request's first "
                                                            "byte; then 408 and closed (uvicorn only)")
    latency_ms: float = Field(0.0, ge=0, description="hold every answer this long (ms) before sending it: a slow VLA "
                                                     "for tests and benchmarks (uvicorn only)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level of the server process (uvicorn's records and robot_rl's)")


class RayConfig(_Section):
    """``ray``: serve on Ray Serve replicas instead of one uvicorn process."""

    enabled: bool = Field(False, description="serve with Ray Serve (scale-out over replicas) instead of uvicorn")
    replicas: int = Field(1, ge=1, description="Ray Serve replicas, each with its own backend")
    num_cpus: float = Field(REPLICA_NUM_CPUS, gt=0, description="CPUs each replica reserves in Ray")
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs each replica reserves (null: 1 for openvla when the cluster has one, else 0)")
    address: str | None = Field(
        None, description="Ray cluster to join (null: $RAY_ADDRESS, else a private local instance)")


class TeacherServeConfig(_Section):
    """A teacher server: ``backend``, ``server`` and ``ray`` sections (``configs/teacher/*.yaml``)."""

    backend: BackendConfig = Field(default_factory=ScriptedBackendConfig, description="what answers, by kind")
    server: ServerConfig = Field(default_factory=ServerConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("backend", mode="before")
    @classmethod
    def _backend_kind(cls, value: Any) -> Any:
        return tagged_section(value, BACKEND_CONFIGS, default="scripted")


def load_serve_config(path: str | Path | None, overrides: list[str] | tuple = (),
                      values: dict[str, Any] | None = None) -> TeacherServeConfig:
    """A serving config from YAML (``None``: all defaults), ``KEY=VALUE`` overrides, then ``values``
    (``{"server.port": 8001}``: typed values set last, as the CLI's flags).

    Raises:
        ConfigError: unreadable YAML, an unknown key or a bad value; the message names the key.
        FileNotFoundError: ``path`` does not exist.
    """
    return load_config(path, overrides, model=TeacherServeConfig, values=values)


def backend_config(kind: str, **kwargs: Any) -> ScriptedBackendConfig | OpenVLABackendConfig:
    """The validated backend section of ``kind`` with ``kwargs`` (keyword arguments of
    :func:`robot_rl.teachers.server.build_backend`; a ``None`` for a key the kind does not have is dropped).

    Raises:
        ValueError: an unknown ``kind`` (lists the known ones).
        ConfigError: a key the kind does not have, or a bad value (names the key).
    """
    member = BACKEND_CONFIGS.get(kind)
    if member is None:
        raise ValueError(f"unknown backend {kind!r}; known: {', '.join(BACKEND_CONFIGS)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k in member.model_fields}
    return build_config({"kind": kind, **kwargs}, model=member)


def describe_serve_config() -> list[str]:
    """One line per serving config key (``backend.*`` for every kind), as ``robot-rl config`` does for training."""
    return describe(TeacherServeConfig)


__all__ = [
    "BACKEND_CONFIGS",
    "BackendConfig",
    "ConfigError",
    "OpenVLABackendConfig",
    "RayConfig",
    "ScriptedBackendConfig",
    "ServerConfig",
    "TeacherServeConfig",
    "backend_config",
    "describe_serve_config",
    "load_serve_config",
]
