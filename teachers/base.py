"""The `Teacher` protocol: every teacher backend (scripted, OpenVLA, remote) implements it.

The trainer never knows which backend it has (DESIGN.md, Interfaces). A request is a batch over
the envs that query at one env step; the response carries one action per request row. A backend
declares what it reads in one :class:`TeacherSpec` (``teacher.spec``), and refuses a request it
cannot answer with :meth:`Teacher.check_request` (a :class:`TeacherRequestError` naming the field).

Action convention of a response (``TeacherResponse.actions``, shape ``(B, 7)``): the env's
``pd_ee_delta_pose`` layout ``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` in *normalized* units,
where 1.0 on a position component is 0.1 m and 1.0 on a rotation component is 0.1 rad of
commanded motion *in the controller's sign convention* (FACTS.md: a +1 rotation command turns the
end effector by -0.1 rad, ManiSkill issue #1469; :mod:`robot_rl.geometry`). The position and rotation
parts are the teacher's delta over its whole control period of ``control_period_steps`` (``D``) env
steps, so each may reach
``D`` in magnitude; :func:`robot_rl.guidance.targets.interpolate_targets` spreads it linearly into
``D`` per-step targets in [-1, 1]. The gripper is an absolute command in [-1 (closed), +1 (open)].

Timing (the latency-aware interface, DESIGN.md "Delayed semantic interface"): each request row may
say from which observation it was made, as the env step within the episode (``obs_steps``) and the
time on the caller's clock (``obs_times_s``: the trainer's wall clock, a ROS header stamp at
deployment). Each response row says how long its answer took (``latency_s``, seconds) and may carry
the stamps back (``obs_steps``, ``obs_times_s``, ``answer_times_s``: :class:`RemoteTeacher
<robot_rl.teachers.remote.RemoteTeacher>` fills them) and notes for the scratchpad (``notes``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from robot_rl.geometry import ACTION_DIM

#: The action layout and scaling (``ACTION_DIM``, ``POS_SLICE``, ``POS_SCALE_M``, ``CONTROLLER_ROT_SIGN``, ...)
#: live in :mod:`robot_rl.geometry`, the one home of the ``pd_ee_delta_pose`` convention.


class TeacherRequestError(ValueError):
    """A request a backend cannot answer (raised by :meth:`Teacher.check_request` and ``act``).

    Attributes:
        field: the :class:`TeacherRequest` field at fault (``"images"``, ``"states"``, ``"task_ids"``,
            ``"unnorm_key"``, ...); the teacher server reports it as the 422's ``loc``.
        message: what is wrong, without the field name.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def _rows(value: Any, name: str, n: int, *, integer: bool) -> np.ndarray | None:
    """A per-row ``(n,)`` stamp array as ``int64`` (``integer``) or ``float64``; ``None`` stays ``None``.

    Raises:
        ValueError: naming ``name``, for a wrong shape, a non-numeric (or, for ``integer``, non-integer)
            dtype, a negative env step or a non-finite time.
    """
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.shape != (n,):
        raise ValueError(f"{name} must be (B={n},), got shape {arr.shape}")
    if integer:
        if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
            raise ValueError(f"{name} must hold integer env steps, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if (arr < 0).any():
            raise ValueError(f"{name} must be >= 0 (env steps within the episode), got {arr.min()}")
        return arr
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold seconds (numbers), got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite seconds, got {arr[~np.isfinite(arr)][0]}")
    return arr


def _texts(value: Any, name: str, n: int) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or len(value) != n:
        got = "a string" if isinstance(value, str) else f"{len(value)} entries"
        raise ValueError(f"{name} must have B={n} entries, got {got}")
    if not all(isinstance(s, str) for s in value):
        raise ValueError(f"{name} must be strings")
    return list(value)


@dataclass
class TeacherRequest:
    """A batch of teacher queries, one row per querying env.

    Attributes:
        instructions: ``B`` language instructions.
        images: ``(B, H, W, 3) uint8`` RGB teacher views, or ``None`` (a backend whose spec says
            ``needs_image=False`` is never sent one: the trainer skips the costly render).
        states: ``(B, S) float32`` privileged simulator state in the layout of
            :data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT`, or ``None``.
        task_ids: ``B`` env ids (e.g. ``"RRL-PushCube-Sparse-v1"``), so one teacher can serve many tasks.
        scratchpads: ``B`` scratchpad texts (scratchpad memory), or ``None``.
        unnorm_key: OpenVLA dataset-statistics key for the whole batch (``None``: the backend's
            default); backends without statistics ignore it.
        obs_steps: ``(B,) int64`` env step within the episode of the observation each row was made
            from (``q`` in DESIGN.md; >= 0), or ``None``.
        obs_times_s: ``(B,) float64`` time of that observation in seconds on the caller's clock (the
            trainer's wall clock, ``time.time()``; a ROS header stamp at deployment), or ``None``.

    Raises (from the constructor): ``ValueError`` naming the field for a shape, dtype or length that
    does not match ``B = len(instructions)``. ``obs_steps`` and ``obs_times_s`` are stored as
    ``int64`` / ``float64`` arrays (lists are accepted).
    """

    instructions: list[str]
    images: np.ndarray | None = None
    states: np.ndarray | None = None
    task_ids: list[str] | None = None
    scratchpads: list[str] | None = None
    unnorm_key: str | None = None
    obs_steps: np.ndarray | None = None
    obs_times_s: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.instructions)

    def __post_init__(self) -> None:
        n = len(self.instructions)
        if self.images is not None:
            if self.images.ndim != 4 or self.images.shape[0] != n or self.images.shape[-1] != 3:
                raise ValueError(f"images must be (B={n}, H, W, 3), got {self.images.shape}")
            if self.images.dtype != np.uint8:
                raise ValueError(f"images must be uint8, got {self.images.dtype}")
        if self.states is not None and (self.states.ndim != 2 or self.states.shape[0] != n):
            raise ValueError(f"states must be (B={n}, S), got {self.states.shape}")
        for name in ("task_ids", "scratchpads"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} must have B={n} entries, got {len(value)}")
        self.obs_steps = _rows(self.obs_steps, "obs_steps", n, integer=True)
        self.obs_times_s = _rows(self.obs_times_s, "obs_times_s", n, integer=False)


@dataclass
class TeacherResponse:
    """The teacher's answer to a :class:`TeacherRequest`, one entry per request row.

    Attributes:
        actions: ``(B, 7) float32`` delta actions in the convention of this module's docstring (NaN
            rows: no guidance for that row).
        latency_s: ``(B,) float64`` seconds each row's answer took, as measured by whoever made the
            response (a backend: its compute time for the call; :class:`RemoteTeacher
            <robot_rl.teachers.remote.RemoteTeacher>`: from the query leaving the caller to the answer
            arriving). A scalar is accepted and broadcast to every row.
        model_id: which model answered (e.g. ``"scripted"``, ``"openvla:<checkpoint>"``).
        notes: ``B`` texts for the scratchpad memory (``""``: no note for that row), or ``None``
            when the backend writes none (``spec.writes_notes`` is False).
        obs_steps: ``(B,) int64`` the request's ``obs_steps`` carried back, or ``None``.
        obs_times_s: ``(B,) float64`` when each row's observation was taken (caller's clock: the
            request's ``obs_times_s``, else the time the query was made), or ``None``.
        answer_times_s: ``(B,) float64`` when each row's answer arrived, on the same clock as
            ``obs_times_s``, or ``None``. ``answer_times_s - obs_times_s`` is the answer's age on arrival.
        extras: backend-specific additions (``"raw_actions"``, ``"phases"``, ``"error"``, ...).

    Raises (from the constructor): ``ValueError`` naming the field when ``actions`` is not ``(B, 7)``
    or a per-row field does not have ``B`` entries, a latency is negative or not finite.
    """

    actions: np.ndarray
    latency_s: np.ndarray | float = 0.0
    model_id: str = "unknown"
    notes: list[str] | None = None
    obs_steps: np.ndarray | None = None
    obs_times_s: np.ndarray | None = None
    answer_times_s: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def __post_init__(self) -> None:
        try:
            actions = np.asarray(self.actions, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"actions must be a (B, {ACTION_DIM}) float array, "
                             f"got {type(self.actions).__name__}") from None
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
            raise ValueError(f"actions must be (B, {ACTION_DIM}), got shape {actions.shape}")
        self.actions = actions
        n = actions.shape[0]
        latency = np.asarray(self.latency_s, dtype=np.float64)
        if latency.ndim == 0:
            latency = np.full(n, float(latency))
        if latency.shape != (n,):
            raise ValueError(f"latency_s must be a scalar or (B={n},), got shape {latency.shape}")
        if not (np.isfinite(latency).all() and (latency >= 0).all()):
            raise ValueError(f"latency_s must be finite seconds >= 0, got {latency}")
        self.latency_s = latency
        self.notes = _texts(self.notes, "notes", n)
        self.obs_steps = _rows(self.obs_steps, "obs_steps", n, integer=True)
        self.obs_times_s = _rows(self.obs_times_s, "obs_times_s", n, integer=False)
        self.answer_times_s = _rows(self.answer_times_s, "answer_times_s", n, integer=False)

    def rows(self, start: int, stop: int, **extras: Any) -> TeacherResponse:
        """The response of rows ``start:stop`` (every per-row field sliced; ``extras`` replaces the extras)."""

        def cut(value):
            return None if value is None else value[start:stop]

        return TeacherResponse(
            actions=self.actions[start:stop], latency_s=self.latency_s[start:stop], model_id=self.model_id,
            notes=cut(self.notes), obs_steps=cut(self.obs_steps), obs_times_s=cut(self.obs_times_s),
            answer_times_s=cut(self.answer_times_s), extras=extras,
        )


@dataclass(frozen=True, kw_only=True)
class TeacherSpec:
    """What a backend reads and answers: the one place a caller (trainer, server, client) asks.

    Attributes:
        model_id: the model that answers (``TeacherResponse.model_id``).
        control_period_steps: ``D``, env steps one answer covers (>= 1; 20 Hz env control and a
            5 Hz VLA give ``D = 4``); the trainer spreads each answer over ``D`` steps.
        needs_image: the backend reads ``request.images`` and refuses a request without them. When
            False it is never sent one: the trainer does not render, the client does not send, the
            server drops any it receives.
        needs_state: the backend reads ``request.states`` and refuses a request without them. When
            False it is never sent them (as for images).
        state_dim: the widest privileged state it reads, in columns of
            :data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT` (``None``: it reads none). Informational:
            some tasks need fewer columns, and :meth:`Teacher.check_request` checks the width each needs.
        image_size: ``(H, W)`` pixels the backend resizes images to (``None``: no fixed size); other
            sizes are accepted, sending this one saves bandwidth and a resize.
        unnorm_keys: the dataset-statistics keys ``request.unnorm_key`` may name (empty: the backend
            has no statistics and ignores the key).
        writes_notes: whether responses carry ``notes`` for the scratchpad.

    Raises (from the constructor): ``ValueError`` naming the field for ``control_period_steps < 1``,
    ``state_dim < 1``, or an ``image_size`` that is not two positive integers.
    """

    model_id: str
    control_period_steps: int
    needs_image: bool = False
    needs_state: bool = False
    state_dim: int | None = None
    image_size: tuple[int, int] | None = None
    unnorm_keys: tuple[str, ...] = ()
    writes_notes: bool = False

    def __post_init__(self) -> None:
        d = self.control_period_steps
        if isinstance(d, bool) or int(d) != d or int(d) < 1:
            raise ValueError(f"control_period_steps must be an integer >= 1, got {d!r}")
        object.__setattr__(self, "control_period_steps", int(d))
        if self.state_dim is not None:
            if int(self.state_dim) < 1:
                raise ValueError(f"state_dim must be >= 1 or None, got {self.state_dim!r}")
            object.__setattr__(self, "state_dim", int(self.state_dim))
        if self.image_size is not None:
            size = tuple(int(x) for x in self.image_size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"image_size must be (H, W) positive pixels or None, got {self.image_size!r}")
            object.__setattr__(self, "image_size", size)
        object.__setattr__(self, "unnorm_keys", tuple(str(k) for k in self.unnorm_keys))
        for name in ("needs_image", "needs_state", "writes_notes"):
            object.__setattr__(self, name, bool(getattr(self, name)))

    def check(self, request: TeacherRequest) -> None:
        """The checks every backend shares: what the spec says it needs is there.

        Raises:
            TeacherRequestError: ``images`` or ``states`` missing where ``needs_image`` /
                ``needs_state``; an ``unnorm_key`` not in ``unnorm_keys`` (when there are any).
        """
        if self.needs_image and request.images is None:
            raise TeacherRequestError("images", f"{self.model_id} needs images (RGB; needs_image=True)")
        if self.needs_state and request.states is None:
            raise TeacherRequestError("states", f"{self.model_id} plans from the privileged state (needs_state=True)")
        if request.unnorm_key is not None and self.unnorm_keys and request.unnorm_key not in self.unnorm_keys:
            raise TeacherRequestError(
                "unnorm_key", f"unknown unnorm_key {request.unnorm_key!r}; available: {', '.join(self.unnorm_keys)}")

    def trim(self, request: TeacherRequest) -> TeacherRequest:
        """``request`` without what the backend does not read (images unless ``needs_image``, states
        unless ``needs_state``); the same object when there is nothing to drop.
        """
        drop = {}
        if request.images is not None and not self.needs_image:
            drop["images"] = None
        if request.states is not None and not self.needs_state:
            drop["states"] = None
        return dataclasses.replace(request, **drop) if drop else request

    def to_metadata(self) -> dict:
        """The spec as JSON-ready fields (``GET /metadata`` carries them at its top level): exactly
        :data:`robot_rl.teacher_protocol.METADATA_SPEC_KEYS`, which clients read with
        :func:`robot_rl.teacher_protocol.read_metadata`.
        """
        return {
            "model_id": self.model_id,
            "control_period_steps": self.control_period_steps,
            "needs_image": self.needs_image,
            "needs_state": self.needs_state,
            "state_dim": self.state_dim,
            "image_size": None if self.image_size is None else list(self.image_size),
            "unnorm_keys": list(self.unnorm_keys),
            "writes_notes": self.writes_notes,
        }

    @classmethod
    def from_metadata(cls, meta: dict, **override: Any) -> TeacherSpec:
        """The spec a server's ``GET /metadata`` reports (other keys ignored); ``override`` replaces fields.

        A server that does not report a field gets its default here, except ``needs_image`` (True:
        an OpenVLA server needs images) and ``control_period_steps`` (4: a 5 Hz VLA).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {"model_id": "unknown", "control_period_steps": 4, "needs_image": True}
        fields.update({k: v for k, v in meta.items() if k in names and v is not None})
        fields.update(override)
        return cls(**fields)


@runtime_checkable
class Teacher(Protocol):
    """A batched teacher: a :class:`TeacherSpec`, a request check and ``act``.

    Contract:

    * ``spec`` is fixed for the teacher's life; callers read what to send from it (and only from it).
    * :meth:`check_request` raises :class:`TeacherRequestError` (a ``ValueError`` whose ``field`` names
      the request field) for any request :meth:`act` could not answer, and returns ``None`` otherwise.
      It starts with ``self.spec.check(request)``, is cheap (no model call, no I/O), has no side
      effects and is safe to call from any thread: the teacher server calls it for every HTTP request
      before batching, so a bad request gets its own 422 instead of failing the batch it would join.
    * :meth:`act` answers every row of a request that passes the check (it refuses the others with the
      same error); any other exception is a failure of the backend (the server answers it with a 500).
    """

    spec: TeacherSpec

    def check_request(self, request: TeacherRequest) -> None:
        """Raise :class:`TeacherRequestError` naming the field if ``request`` cannot be answered."""
        ...

    def act(self, request: TeacherRequest) -> TeacherResponse:
        """Answer every row of ``request``; raises :class:`TeacherRequestError` for a request it cannot serve."""
        ...


__all__ = ["Teacher", "TeacherRequest", "TeacherRequestError", "TeacherResponse", "TeacherSpec"]
