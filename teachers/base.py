"""The `Teacher` protocol: every teacher backend (scripted, OpenVLA, remote) implements it.

The trainer never knows which backend it has (DESIGN.md, Interfaces). A request is a batch over
the envs that query at one env step; the response carries one action per request row.

Action convention of a response (``TeacherResponse.actions``, shape ``(B, 7)``): the env's
``pd_ee_delta_pose`` layout ``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` in *normalized* units,
where 1.0 on a position component is 0.1 m and 1.0 on a rotation component is 0.1 rad of
commanded motion *in the controller's sign convention* (FACTS.md: a +1 rotation command turns the
end effector by -0.1 rad, ManiSkill issue #1469; :mod:`robot_rl.geometry`). The position and rotation parts are the teacher's
delta over its whole control period of ``control_period_steps`` (``D``) env steps, so each may reach
``D`` in magnitude; :func:`robot_rl.guidance.targets.interpolate_targets` spreads it linearly into
``D`` per-step targets in [-1, 1]. The gripper is an absolute command in [-1 (closed), +1 (open)].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

#: The action layout and scaling (``ACTION_DIM``, ``POS_SLICE``, ``POS_SCALE_M``, ``CONTROLLER_ROT_SIGN``, ...)
#: live in :mod:`robot_rl.geometry`, the one home of the ``pd_ee_delta_pose`` convention.


@dataclass
class TeacherRequest:
    """A batch of teacher queries, one row per querying env.

    Attributes:
        instructions: ``B`` language instructions.
        images: ``(B, H, W, 3) uint8`` RGB teacher views, or ``None`` when the teacher declared
            ``needs_image = False`` (scripted teachers plan from privileged state, so the trainer
            skips the costly render).
        states: ``(B, S) float32`` privileged simulator state in the layout of
            :data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT`, or ``None``.
        task_ids: ``B`` env ids (e.g. ``"RRL-PushCube-Sparse-v1"``), so one teacher can serve many tasks.
        scratchpads: ``B`` scratchpad texts (scratchpad memory), or ``None``.
        unnorm_key: OpenVLA dataset-statistics key for the whole batch (``None``: the backend's
            default); backends without statistics ignore it.
    """

    instructions: list[str]
    images: np.ndarray | None = None
    states: np.ndarray | None = None
    task_ids: list[str] | None = None
    scratchpads: list[str] | None = None
    unnorm_key: str | None = None

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


@dataclass
class TeacherResponse:
    """The teacher's answer to a :class:`TeacherRequest`.

    Attributes:
        actions: ``(B, 7) float32`` delta actions in the convention of this module's docstring.
        latency_s: wall time the teacher took for the whole batch, in seconds.
        model_id: which model answered (e.g. ``"scripted-pushcube"``).
    """

    actions: np.ndarray
    latency_s: float = 0.0
    model_id: str = "unknown"
    extras: dict = field(default_factory=dict)


@runtime_checkable
class Teacher(Protocol):
    """A batched teacher.

    Attributes:
        needs_image: whether :meth:`act` reads ``request.images`` (if not, the trainer does not render).
        control_period_steps: the teacher's control period ``D`` in env steps (env control at
            20 Hz and a 5 Hz VLA give ``D = 4``); one answer is spread over ``D`` steps.
    """

    needs_image: bool
    control_period_steps: int

    def act(self, request: TeacherRequest) -> TeacherResponse:
        """Answer every row of ``request``; raises ``ValueError`` for a request it cannot serve."""
        ...
