"""Rollout-time glue between the vec env, the query scheduler and the teacher.

:class:`Guidance` is the one component that owns guidance's state: the query scheduler (budget,
``N_calls``, ``λ_t``, deactivation), the per-env target queue, and the run-long counters. The trainer saves
it (:meth:`Guidance.state_dict`), restores it (:meth:`Guidance.load_state_dict`) and logs it
(:meth:`Guidance.metrics`) without reaching into its parts.

At each env step the trainer asks :meth:`Guidance.prepare` for the current observation:
the scheduler picks the envs that query, their teacher views are fetched from the vec env (the RGB
image only if the teacher needs one), the teacher answers once for the whole batch, invalid rows
are dropped and counted, and the valid answers are interpolated over ``D`` steps into the
:class:`~robot_rl.guidance.targets.TargetTracker`. The target for the current step is then stored
in the rollout buffer: the teacher is never re-queried per minibatch.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from robot_rl.guidance.schedule import QueryScheduler
from robot_rl.guidance.targets import TargetTracker, interpolate_targets, validate_teacher_actions
from robot_rl.teachers.base import Teacher, TeacherRequest


@dataclass
class GuidanceStats:
    """Counters over the whole run (env steps, queries and answers)."""

    queries: int = 0  #: teacher queries sent (one per env per query)
    invalid: int = 0  #: answers dropped: NaN, wrong shape or out of range
    guided_steps: int = 0  #: env steps that got a valid target
    teacher_time_s: float = 0.0  #: wall time spent in Teacher.act (s)
    teacher_calls: int = 0  #: batched Teacher.act calls


class Guidance:
    """Queries the teacher during rollouts and yields per-step targets; owns the scheduler, the target queue
    and the counters.

    Args:
        teacher: any :class:`~robot_rl.teachers.base.Teacher`.
        scheduler: decides which envs query (budget, annealing, deactivation).
        num_envs: number of envs in the vec env.
        requery_active: True queries even envs that still have queued targets (RPD: every step);
            False (VLAJS) lets an answer play out over its ``D`` steps first.
    """

    def __init__(self, teacher: Teacher, scheduler: QueryScheduler, num_envs: int, requery_active: bool = False):
        self.teacher = teacher
        self.scheduler = scheduler
        self.period = int(teacher.spec.control_period_steps)
        self.tracker = TargetTracker(num_envs, self.period)
        self.requery_active = requery_active
        self.stats = GuidanceStats()
        self._prepared = False

    def begin_rollout(self, mean_return: float | None) -> None:
        """Set this rollout's query count and ``λ_t`` from the recent mean episodic return."""
        self.scheduler.begin_rollout(mean_return)

    def prepare(self, venv) -> None:
        """Query the teacher, where the scheduler says so, for the vec env's current observation.

        Idempotent until :meth:`advance`: calling it twice for one observation queries once.
        ``venv`` must provide ``teacher_view(indices, with_image)`` (``robot_rl.envs``).
        """
        if self._prepared:
            return
        self._prepared = True
        eligible = np.ones(self.tracker.num_envs, dtype=bool) if self.requery_active else ~self.tracker.active
        mask = self.scheduler.select(eligible)
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        view = venv.teacher_view(idx.tolist(), with_image=bool(self.teacher.spec.needs_image))
        request = TeacherRequest(
            instructions=view.instructions, images=view.images, states=view.states, task_ids=view.task_ids
        )
        start = time.perf_counter()
        response = self.teacher.act(request)
        self.stats.teacher_time_s += time.perf_counter() - start
        self.stats.teacher_calls += 1
        self.stats.queries += idx.size
        valid = validate_teacher_actions(response.actions, idx.size, self.period)
        self.stats.invalid += int((~valid).sum())
        actions = np.asarray(response.actions, dtype=np.float32) if valid.any() else np.zeros((idx.size, 7), np.float32)
        targets, tmask = interpolate_targets(np.nan_to_num(actions), self.period, valid)
        self.tracker.set(idx, targets, tmask)

    def current(self) -> tuple[np.ndarray, np.ndarray]:
        """``(targets (N, 7) float32, valid (N,) bool)`` for the current env step."""
        targets, valid = self.tracker.current()
        return targets, valid

    def advance(self, dones: np.ndarray) -> None:
        """Count the step's guided envs and move on one env step (``dones (N,) bool``)."""
        self.stats.guided_steps += int(self.tracker.current()[1].sum())
        self.tracker.advance(dones)
        self._prepared = False

    @property
    def lambda_t(self) -> float:
        """``λ_t``, the weight of the auxiliary loss in the coming PPO update."""
        return self.scheduler.lambda_t

    # -- the component's state ---------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the scheduler's state and the run-long counters (JSON-ready).

        The per-env target queue is not kept: a checkpoint is written between rollouts, and a resumed run
        starts its first rollout from fresh episodes.
        """
        return {"scheduler": self.scheduler.state_dict(), "stats": asdict(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (a checkpoint's ``guidance.json``).

        Raises:
            ValueError: a counter this version does not know (the message names it).
        """
        self.scheduler.load_state_dict(state["scheduler"])
        known = {f.name for f in fields(GuidanceStats)}
        unknown = sorted(set(state.get("stats", {})) - known)
        if unknown:
            raise ValueError(f"guidance state has unknown counters {unknown} (known: {sorted(known)})")
        self.stats = GuidanceStats(**{**asdict(self.stats), **state.get("stats", {})})

    def metrics(self) -> dict[str, float]:
        """Metrics to log after each rollout, SB3 logger keys: ``guidance/*`` (queries, invalid answers,
        guided env steps, ``N_calls``, ``Δr̄``, deactivation, next ``λ``, mean teacher latency in s) and,
        for a teacher that counts its faults (``RemoteTeacher.stats``), ``teacher/*``.
        """
        s, st = self.scheduler, self.stats
        out = {
            "guidance/queries": st.queries,
            "guidance/invalid_answers": st.invalid,
            "guidance/guided_steps": st.guided_steps,
            "guidance/n_calls": s.n_calls,
            "guidance/delta_return": s.delta_r,
            "guidance/deactivated": int(s.deactivated),
            "guidance/lambda_next": s.lambda_t,
            "guidance/teacher_latency_s": st.teacher_time_s / max(st.teacher_calls, 1),
        }
        remote = getattr(self.teacher, "stats", None)  # RemoteTeacher: server faults
        if remote is not None:
            for key in ("failures", "skipped", "reconnects"):
                out[f"teacher/{key}"] = getattr(remote, key)
        return out
