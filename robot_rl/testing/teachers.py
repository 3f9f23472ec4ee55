"""Tiny teacher backends for tests: they implement the :class:`~robot_rl.teachers.base.Teacher` protocol
with no model and no simulator, and record what they are sent.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from robot_rl.geometry import ACTION_DIM, GRIPPER_INDEX
from robot_rl.teachers.base import TeacherRequest, TeacherRequestError, TeacherResponse, TeacherSpec


class NotesTeacher:
    """Answers every row with a fixed action and a note that says what the row carried.

    Row ``i``'s action is zero motion with the gripper open, its position ``x`` set to ``i / 10`` of
    the batch (so rows are told apart); its note is
    ``"<instruction> | step=<obs_steps[i]> t=<obs_times_s[i]> | <scratchpad[i]>"`` (``-`` for what
    the row lacks), and ``""`` for a row whose instruction is ``"quiet"`` (no note).

    Args:
        needs_image: the spec's ``needs_image`` (the backend then refuses requests without images).
        needs_state: the spec's ``needs_state``.
        control_period_steps: ``D`` of the spec.
        latency_s: seconds to sleep in each :meth:`act` call.
        row_latency_s: when given, row ``i`` reports a latency of ``row_latency_s * (i + 1)`` seconds
            instead of the measured time (for tests of per-row latency), and the call sleeps as long as
            its slowest row, so no row claims more time than the call took.

    Attributes:
        requests: every request :meth:`act` was given (thread-safe list).
    """

    def __init__(self, *, needs_image: bool = False, needs_state: bool = False, control_period_steps: int = 4,
                 latency_s: float = 0.0, row_latency_s: float | None = None):
        self.spec = TeacherSpec(model_id="notes", control_period_steps=control_period_steps, needs_image=needs_image,
                                needs_state=needs_state, writes_notes=True)
        self.latency_s = float(latency_s)
        self.row_latency_s = row_latency_s
        self.requests: list[TeacherRequest] = []
        self._lock = threading.Lock()

    def check_request(self, request: TeacherRequest) -> None:
        """The spec's checks, and no instruction may be ``"refuse"`` (field ``instructions``)."""
        self.spec.check(request)
        if "refuse" in request.instructions:
            raise TeacherRequestError("instructions", "NotesTeacher refuses the instruction 'refuse'")

    def act(self, request: TeacherRequest) -> TeacherResponse:
        """Zero actions but ``x = row / 10`` and an open gripper, with one note per row (class docstring)."""
        t0 = time.perf_counter()
        self.check_request(request)
        with self._lock:
            self.requests.append(request)
        n = len(request)
        sleep_s = self.latency_s + (0.0 if self.row_latency_s is None else self.row_latency_s * n)
        if sleep_s > 0:
            time.sleep(sleep_s)
        actions = np.zeros((n, ACTION_DIM), np.float32)
        actions[:, 0] = np.arange(n) / 10.0
        actions[:, GRIPPER_INDEX] = 1.0
        notes = []
        for i in range(n):
            if request.instructions[i] == "quiet":
                notes.append("")
                continue
            step = "-" if request.obs_steps is None else str(int(request.obs_steps[i]))
            t = "-" if request.obs_times_s is None else repr(float(request.obs_times_s[i]))
            pad = "-" if request.scratchpads is None else request.scratchpads[i]
            notes.append(f"{request.instructions[i]} | step={step} t={t} | {pad}")
        latency = time.perf_counter() - t0
        if self.row_latency_s is not None:
            latency = self.row_latency_s * (np.arange(n) + 1.0)
        return TeacherResponse(actions, latency, self.spec.model_id, notes=notes)


__all__ = ["NotesTeacher"]
