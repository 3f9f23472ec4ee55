"""Rollout-time glue between the vec env, the query scheduler, the teacher and the delayed interface.

:class:`Guidance` is the one component that owns guidance's state: the query scheduler (budget,
``N_calls``, ``λ_t``, deactivation), the delay model and the queries in flight, the per-env target queue,
the delayed interface's per-env state (the ``teacher`` observation group, :mod:`robot_rl.interface`), and the
run-long counters. The trainer saves it (:meth:`Guidance.state_dict`), restores it
(:meth:`Guidance.load_state_dict`) and logs it (:meth:`Guidance.metrics`) without reaching into its parts.

One env step (the order :class:`~robot_rl.interface.TeacherGroupVecEnv` and GuidedPPO's callback keep):

1. the vec env steps; :meth:`Guidance.advance` moves every env one step on: episodes that ended drop their
   queued targets, their hint and their query in flight (counted), and answers that are due now are
   delivered: they become the env's hint, and their targets apply from this step (a stale answer's targets
   start at its arrival);
2. the ``teacher`` group of the new observation is read from the interface (:meth:`Guidance.teacher_features`);
3. :meth:`Guidance.prepare` picks the envs that query now (the scheduler; an env with a query in flight is
   skipped, the budget is counted at submission), fetches their teacher views (the image only if the teacher
   needs one) and submits the query: with a delay model of ``none``/``fixed``/``uniform`` the teacher answers at
   once and the answer waits ``d`` env steps (``d = 0``: it is delivered at once, the behaviour before the
   interface); with ``measured`` the query runs asynchronously (a served teacher's ``submit``, or an in-process
   one in a worker thread) and its answer is delivered once it has arrived and ``ceil(latency / 0.05 s)`` env
   steps have passed. The rollout never waits for it;
4. :meth:`Guidance.row` is the target of this step, stored in the rollout buffer: the teacher is never
   re-queried per minibatch.

Invalid answers (NaN, wrong shape, out of range) are dropped and counted; they never reach the hint.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields

import numpy as np

from robot_rl.envs.privileged import PRIVILEGED_STATE_DIM
from robot_rl.geometry import ACTION_DIM
from robot_rl.guidance.delay import DelayModel, steps_of_latency
from robot_rl.guidance.guard import TeacherGuard
from robot_rl.guidance.schedule import QueryScheduler
from robot_rl.guidance.targets import TargetTracker, interpolate_targets, validate_teacher_actions
from robot_rl.interface.delayed import DelayedInterface, compensated_targets
from robot_rl.memory import MemorySpec, Scratchpad
from robot_rl.teachers.base import Teacher, TeacherRequest

_log = logging.getLogger(__name__)


@dataclass
class GuidanceStats:
    """Counters over the whole run (env steps, queries and answers)."""

    queries: int = 0  #: teacher queries sent (one per env per query)
    invalid: int = 0  #: answers dropped: NaN, wrong shape or out of range
    guided_steps: int = 0  #: env steps that got a valid target
    teacher_time_s: float = 0.0  #: wall time spent in Teacher.act (s)
    teacher_calls: int = 0  #: batched Teacher.act calls
    delivered: int = 0  #: answers delivered into an episode
    dropped_at_reset: int = 0  #: answers whose episode ended before they arrived (never delivered)
    delay_steps_sum: int = 0  #: sum of the delivered answers' delays, env steps
    hint_steps: int = 0  #: env steps whose observation carried a hint (hint_valid)
    env_steps: int = 0  #: env steps seen (over all envs)


@dataclass
class _Batch:
    """One submitted query batch: its envs, their episodes' ids, the observation step and states, the answer."""

    env_idx: np.ndarray  #: (k,) env indices
    episode: np.ndarray  #: (k,) episode ids at submission
    obs_step: np.ndarray  #: (k,) env step of the observation, in its episode
    states: np.ndarray  #: (k, 38) privileged states of the observation
    due: np.ndarray | None = None  #: (k,) env step (in the episode) at which each answer is delivered
    answers: np.ndarray | None = None  #: (k, 7) the answer, once known
    valid: np.ndarray | None = None  #: (k,) bool
    handle: object = None  #: a pending asynchronous answer (``done()``, ``result()``), measured delay only
    notes: list | None = None  #: (k,) the answer's scratchpad notes, once known (None: the teacher wrote none)


class Guidance:
    """Queries the teacher during rollouts and yields per-step targets and the ``teacher`` observation group;
    owns the scheduler, the delay model and the queries in flight, the target queue, the interface state and
    the counters.

    Args:
        teacher: any :class:`~robot_rl.teachers.base.Teacher`.
        scheduler: decides which envs query (budget, annealing, deactivation).
        num_envs: number of envs in the vec env.
        requery_active: True queries even envs that still have queued targets (RPD: every step);
            False (VLAJS) lets an answer play out over its ``D`` steps first.
        delay: the delay model of answers (default: none, ``d = 0``).
        features: ``interface.features`` (the ``teacher`` group; empty: none).
        compensate_targets: targets of a late answer are the displacement still remaining
            (:func:`~robot_rl.interface.delayed.compensated_targets`).
        memory: the scratchpad's spec (``memory.enabled``, :mod:`robot_rl.memory`), or None. With one, guidance
            owns the envs' :class:`~robot_rl.memory.Scratchpad`: every query sends its env's scratchpad text, an
            answer's note is written when the answer is delivered (a lost or invalid answer loses only its own
            note), and an episode's scratchpad is cleared when it ends. Every env also queries at its episode's
            first env step (beyond the scheduler's budget: one query per episode), since what a memory task asks
            to remember is shown there (MIKASA's RememberColor shows its colour for 5 env steps only) and the
            ROS node, which queries at the teacher's period from the start, sees it too. A teacher whose spec
            writes no notes leaves it empty (a warning, once).
        guard: the misleading-teacher guard (``guidance.guard``, :class:`~robot_rl.guidance.guard.TeacherGuard`),
            or None. GuidedPPO gives it each update's scores through :meth:`review`; when it fires, guidance is
            off for good.
    """

    def __init__(self, teacher: Teacher, scheduler: QueryScheduler, num_envs: int, requery_active: bool = False,
                 delay: DelayModel | None = None, features: tuple[str, ...] | list[str] = (),
                 compensate_targets: bool = False, memory: MemorySpec | None = None,
                 guard: TeacherGuard | None = None):
        self.teacher = teacher
        self.guard = guard
        self.scheduler = scheduler
        self.num_envs = int(num_envs)
        self.period = int(teacher.spec.control_period_steps)
        self.tracker = TargetTracker(num_envs, self.period)
        self.requery_active = requery_active
        self.delay = delay or DelayModel("none")
        self.interface = DelayedInterface(num_envs, features)
        self.compensate = bool(compensate_targets)
        self.stats = GuidanceStats()
        self.episode = np.zeros(self.num_envs, dtype=np.int64)  #: per-env episode ids (for answers in flight)
        self.in_flight = np.zeros(self.num_envs, dtype=bool)
        self._batches: list[_Batch] = []
        self._arrival = np.zeros(self.num_envs, dtype=np.int64)  #: step its current targets started at
        self._row: tuple[np.ndarray, np.ndarray] | None = None
        self._states = np.zeros((self.num_envs, PRIVILEGED_STATE_DIM))  #: latest privileged states seen
        self._pool: ThreadPoolExecutor | None = None
        self._rollout_delays: list[int] = []
        self._rollout_hint_steps = self._rollout_env_steps = 0
        self.memory = None if memory is None else Scratchpad(memory, self.num_envs)
        if self.memory is not None and not teacher.spec.writes_notes:
            _log.warning("memory.enabled, but the teacher %r writes no notes: the scratchpad (and the memory "
                         "observation group) stays empty", teacher.spec.model_id)

    @property
    def memory_group(self):
        """The ``memory`` observation group (:class:`~robot_rl.observation.ObsGroup`), or None without memory."""
        return None if self.memory is None else self.memory.spec.group()

    def memory_features(self) -> np.ndarray:
        """The ``memory`` group ``(N, size) float32`` of the current observations (``(N, 0)`` without memory)."""
        if self.memory is None:
            return np.zeros((self.num_envs, 0), dtype=np.float32)
        return self.memory.vector()

    @property
    def teacher_group(self):
        """The ``teacher`` observation group (:class:`~robot_rl.observation.ObsGroup`), or None."""
        return self.interface.group

    def begin_rollout(self, mean_return: float | None) -> None:
        """Set this rollout's query count and ``λ_t`` from the recent mean episodic return."""
        self.scheduler.begin_rollout(mean_return)
        self._rollout_delays = []
        self._rollout_hint_steps = self._rollout_env_steps = 0

    # -- one env step ------------------------------------------------------------------------------

    def reset(self, states: np.ndarray | None = None) -> None:
        """Every env starts a new episode (the vec env was reset): nothing queued, no hint, nothing in flight.

        Args:
            states: ``(N, 38)`` privileged states of the reset's observations, when the caller has them (the
                ``dp`` feature and compensated targets need them: an answer delivered at once, ``d = 0``, is
                compensated against this pose, not against the previous episode's last one).
        """
        if states is not None:
            self._states = np.asarray(states, dtype=np.float64)
        dropped = int(self.in_flight.sum())
        self.stats.dropped_at_reset += dropped
        self.episode += 1
        self.in_flight[:] = False
        self._batches = []
        self.tracker.advance(np.ones(self.num_envs, dtype=bool))
        self.interface.reset(np.arange(self.num_envs))
        if self.memory is not None:
            self.memory.clear()
        self._row = None

    def advance(self, dones: np.ndarray, states: np.ndarray | None = None) -> None:
        """Move every env one step on (``dones (N,) bool``: episodes that ended) and deliver the answers due.

        Args:
            dones: ``(N,) bool``.
            states: ``(N, 38)`` privileged states of the new observations, when the caller has them (the
                ``dp`` feature and compensated targets need them).
        """
        dones = np.asarray(dones, dtype=bool)
        if self._row is not None:
            self.stats.guided_steps += int(self._row[1].sum())
        hinted = int(self.interface.valid.sum())
        self.stats.hint_steps += hinted
        self.stats.env_steps += self.num_envs
        self._rollout_hint_steps += hinted
        self._rollout_env_steps += self.num_envs
        self.tracker.advance(dones)
        self.interface.tick(dones)
        if dones.any():
            self.episode[dones] += 1
            self.stats.dropped_at_reset += int((self.in_flight & dones).sum())
            self.in_flight[dones] = False
            if self.memory is not None:
                self.memory.clear(dones)
        if states is not None:
            self._states = np.asarray(states, dtype=np.float64)
        self._deliver_due()
        self._row = None

    def teacher_features(self, states: np.ndarray) -> np.ndarray:
        """The ``teacher`` group ``(N, size) float32`` of the current observations (privileged states ``(N, 38)``)."""
        return self.interface.features_of(states)

    def prepare(self, venv, skip: np.ndarray | None = None) -> None:
        """Query the teacher, where the scheduler says so, for the vec env's current observation; then fix this
        step's targets (:meth:`row`).

        Idempotent until :meth:`advance`: calling it twice for one observation queries once.
        ``venv`` must provide ``teacher_view(indices, with_image)`` (``robot_rl.envs``); ``skip`` ``(N,) bool``
        marks envs not to query now (an episode that just ended, whose env the caller resets itself).
        """
        if self._row is not None:
            return
        free = np.ones(self.num_envs, dtype=bool) if self.requery_active else ~self.tracker.active
        eligible = ~self.in_flight & free
        if skip is not None:
            eligible &= ~np.asarray(skip, dtype=bool)
        first = np.zeros(self.num_envs, dtype=bool)
        if self.memory is not None:  # the scratchpad's grounding is seen at the episode's start: always ask there
            first = eligible & (self.interface.step == 0)
        idx = np.flatnonzero(self.scheduler.select(eligible & ~first) | first)
        if idx.size:
            view = venv.teacher_view(idx.tolist(), with_image=bool(self.teacher.spec.needs_image))
            self._submit(idx, view)
            self._deliver_due()  # d = 0: the answer is there for this very step
        self._row = self._current()

    def row(self) -> tuple[np.ndarray, np.ndarray]:
        """``(targets (N, 7) float32, valid (N,) bool)`` of the current env step (fixed by :meth:`prepare`)."""
        return self._row if self._row is not None else self._current()

    current = row  #: the name the targets' callers used before the interface

    # -- queries -----------------------------------------------------------------------------------

    def _submit(self, idx: np.ndarray, view) -> None:
        states = np.asarray(view.states, dtype=np.float64)
        request = TeacherRequest(instructions=view.instructions, images=view.images, states=view.states,
                                 task_ids=view.task_ids, obs_steps=self.interface.step[idx].copy(),
                                 obs_times_s=np.full(idx.size, time.time()),
                                 scratchpads=None if self.memory is None else self.memory.texts(idx))
        batch = _Batch(idx, self.episode[idx].copy(), self.interface.step[idx].copy(), states)
        self.stats.queries += idx.size
        self.in_flight[idx] = True
        if self.delay.measured:
            batch.handle = self._submit_async(request)
        else:
            self._answer(batch, self._act(request))
            batch.due = batch.obs_step + self.delay.sample(idx.size)
        self._batches.append(batch)

    def _act(self, request: TeacherRequest):
        start = time.perf_counter()
        try:
            return self.teacher.act(request)
        finally:
            self.stats.teacher_time_s += time.perf_counter() - start
            self.stats.teacher_calls += 1

    def _submit_async(self, request: TeacherRequest):
        """A pending answer with ``done()`` and ``result()``: a served teacher's own ``submit``; an in-process
        teacher in a one-worker thread (as TIC-VLA's deployment polls a ``ThreadPoolExecutor(max_workers=1)``).
        """
        from robot_rl.teachers.remote import ServedTeacher

        if isinstance(self.teacher, ServedTeacher):
            self.stats.teacher_calls += 1
            return self.teacher.submit(request)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher")
        return self._pool.submit(self._act, request)

    def _answer(self, batch: _Batch, response) -> None:
        valid = validate_teacher_actions(response.actions, batch.env_idx.size, self.period)
        self.stats.invalid += int((~valid).sum())
        batch.valid = valid
        batch.answers = (np.nan_to_num(np.asarray(response.actions, dtype=np.float64)) if valid.any()
                         else np.zeros((batch.env_idx.size, ACTION_DIM)))
        notes = getattr(response, "notes", None)
        batch.notes = list(notes) if notes is not None and len(notes) == batch.env_idx.size else None
        if self.delay.measured:
            batch.due = batch.obs_step + steps_of_latency(response.latency_s)

    def _deliver_due(self) -> None:
        keep = []
        for batch in self._batches:
            if batch.handle is not None and batch.answers is None:
                if not batch.handle.done():
                    keep.append(batch)
                    continue
                try:
                    self._answer(batch, batch.handle.result())
                except Exception:  # noqa: BLE001 -- a refused or failed query is "no guidance", training goes on
                    batch.answers = np.zeros((batch.env_idx.size, ACTION_DIM))
                    batch.valid = np.zeros(batch.env_idx.size, dtype=bool)
                    batch.due = batch.obs_step
            live = self.episode[batch.env_idx] == batch.episode  # an ended episode's answer: dropped at its reset
            now = self.interface.step[batch.env_idx]
            due = live & (now >= batch.due)
            if due.any():
                self._deliver(batch, due)
            pending = live & ~due
            if pending.any():
                keep.append(_Batch(batch.env_idx[pending], batch.episode[pending], batch.obs_step[pending],
                                   batch.states[pending], batch.due[pending], batch.answers[pending],
                                   batch.valid[pending], batch.handle,
                                   None if batch.notes is None else [n for n, p in zip(batch.notes, pending) if p]))
        self._batches = keep

    def _deliver(self, batch: _Batch, due: np.ndarray) -> None:
        env = batch.env_idx[due]
        self.in_flight[env] = False
        ok = batch.valid[due]
        if self.memory is not None and batch.notes is not None:
            for i, note, good in zip(env, (n for n, d in zip(batch.notes, due) if d), ok):
                if good:
                    self.memory.write(int(i), note)
        if ok.any():
            e = env[ok]
            self.interface.deliver(e, batch.answers[due][ok], batch.obs_step[due][ok], batch.states[due][ok])
            targets, mask = interpolate_targets(batch.answers[due][ok].astype(np.float32), self.period)
            self.tracker.set(e, targets, mask)
            self._arrival[e] = self.interface.step[e]
            delays = (self.interface.step[e] - batch.obs_step[due][ok]).tolist()
            self.stats.delivered += len(delays)
            self.stats.delay_steps_sum += int(sum(delays))
            self._rollout_delays += delays

    def _current(self) -> tuple[np.ndarray, np.ndarray]:
        targets, valid = self.tracker.current()
        valid = valid & self.interface.valid  # a target belongs to the hint it came with
        if self.compensate and valid.any():
            e = np.flatnonzero(valid)
            age = self.interface.step[e] - self.interface.query_step[e]
            targets = targets.copy()
            targets[e] = compensated_targets(self.interface.hint[e], self.interface.states_q[e], self._states[e],
                                             np.maximum(self.period - age, 1), self.period)
        return targets, valid

    def close(self) -> None:
        """Stop the worker thread of an in-process asynchronous teacher (if any)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    @property
    def lambda_t(self) -> float:
        """``λ_t``, the weight of the auxiliary loss in the coming PPO update."""
        return self.scheduler.lambda_t

    # -- the component's state ---------------------------------------------------------------------

    def review(self, scores: np.ndarray) -> bool:
        """Give the misleading-teacher guard one update's alignment scores (``robot_rl/guidance/guard.py``,
        :func:`~robot_rl.guidance.guard.alignment_scores`); when it fires, guidance is switched off for good
        (``N_calls = 0`` from the next rollout, ``λ = 0`` from this update). Returns True when it fired now;
        False without a guard or once guidance is off.
        """
        if self.guard is None or self.scheduler.deactivated:
            return False
        fired = self.guard.observe(scores)
        if fired:
            self.scheduler.deactivated = True
            _log.warning("guidance.guard: PPO's advantages disfavour the teacher's direction (t = %.2f over %d "
                         "guided env steps, below -%.1f): guidance switched off for good",
                         self.guard.t_statistic, self.guard.n, self.guard.z_threshold)
        return fired

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the scheduler's and the delay model's states and the run-long counters
        (JSON-ready).

        The per-env target queue, the hints and the queries in flight are not kept: a checkpoint is written
        between rollouts, and a resumed run starts its first rollout from fresh episodes.
        """
        out = {"scheduler": self.scheduler.state_dict(), "delay": self.delay.state_dict(), "stats": asdict(self.stats)}
        if self.guard is not None:
            out["guard"] = self.guard.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (a checkpoint's ``guidance.json``).

        Raises:
            ValueError: a counter this version does not know (the message names it).
        """
        self.scheduler.load_state_dict(state["scheduler"])
        if "delay" in state:  # checkpoints from before the delayed interface have none
            self.delay.load_state_dict(state["delay"])
        if self.guard is not None and "guard" in state:  # checkpoints from before the guard have none
            self.guard.load_state_dict(state["guard"])
        known = {f.name for f in fields(GuidanceStats)}
        unknown = sorted(set(state.get("stats", {})) - known)
        if unknown:
            raise ValueError(f"guidance state has unknown counters {unknown} (known: {sorted(known)})")
        self.stats = GuidanceStats(**{**asdict(self.stats), **state.get("stats", {})})

    def metrics(self) -> dict[str, float]:
        """Metrics to log after each rollout, SB3 logger keys: ``guidance/*`` (queries, invalid answers,
        guided env steps, ``N_calls``, ``Δr̄``, deactivation, next ``λ``, mean teacher latency in s),
        ``interface/*`` (this rollout's delivered delays in env steps: mean, p50, p90, max; the fraction of env
        steps whose observation carried a hint; run-long answers delivered and dropped at reset) and, for a
        teacher that counts its faults (``RemoteTeacher.stats``), ``teacher/*``.
        """
        s, st = self.scheduler, self.stats
        d = np.asarray(self._rollout_delays, dtype=np.float64)
        interface = {
            "interface/delay_steps_mean": float(d.mean()) if d.size else float("nan"),
            "interface/delay_steps_p50": float(np.percentile(d, 50)) if d.size else float("nan"),
            "interface/delay_steps_p90": float(np.percentile(d, 90)) if d.size else float("nan"),
            "interface/delay_steps_max": float(d.max()) if d.size else float("nan"),
            "interface/hint_fraction": self._rollout_hint_steps / max(self._rollout_env_steps, 1),
            "interface/delivered": st.delivered,
            "interface/dropped_at_reset": st.dropped_at_reset,
        }
        out = {
            "guidance/queries": st.queries,
            "guidance/invalid_answers": st.invalid,
            "guidance/guided_steps": st.guided_steps,
            "guidance/n_calls": s.n_calls,
            "guidance/delta_return": s.delta_r,
            "guidance/deactivated": int(s.deactivated),
            "guidance/lambda_next": s.lambda_t,
            "guidance/teacher_latency_s": st.teacher_time_s / max(st.teacher_calls, 1),
            **interface,
        }
        if self.guard is not None:
            out.update({"guidance/guard_t": self.guard.t_statistic, "guidance/guard_rows": self.guard.n,
                        "guidance/guard_fired": int(self.guard.fired)})
        if self.memory is not None:
            out.update(self.memory.metrics())
        remote = getattr(self.teacher, "stats", None)  # RemoteTeacher: server faults
        if remote is not None:
            for key in ("failures", "skipped", "reconnects"):
                out[f"teacher/{key}"] = getattr(remote, key)
        return out
