"""The policy node's teacher: asynchronous queries to a served teacher, and the ``teacher`` observation group.

A policy trained with the delayed semantic interface (DESIGN.md; :mod:`robot_rl.interface.delayed`) observes the
teacher's last answer, its age and the motion since. At deployment that answer comes from a teacher server
(``robot-rl teacher serve``, ``POST /act/batch``: :mod:`robot_rl.teacher_protocol`), which may be slow or down;
the control loop never waits for it:

* :class:`TeacherChannel` (no I/O, no ROS): when to query, which answers become the hint, and the group's vector.
  The hint and its validity live in a :class:`~robot_rl.interface.delayed.DelayedInterface` of one env, as in
  training; ``dt`` is measured on the node's clock from the stamp of the observation the answer was computed from
  (the camera image's, or without one the EE pose's) to the control step, and ``dp`` from the TCP pose and
  gripper width the robot reported at that stamp to now (:meth:`ObservationAssembler.motion_at
  <robot_rl.deploy.ros_io.ObservationAssembler.motion_at>`, :func:`~robot_rl.interface.delayed.motion_state`).
* :class:`TeacherClient`: the HTTP side (``requests`` + json-numpy) in a worker thread pool; a control step only
  submits a query and polls for answers that have arrived.
* :class:`RecordedAnswers`: the same interface fed from a recording, for the bag replay (:mod:`robot_rl.deploy.record`).

Query semantics (those of evaluation in training, :func:`robot_rl.trainer.build_guidance` with
``evaluation=True``): a query is made whenever none is in flight and the last answer has played out over ``D``
control periods (the teacher's period, ``teacher.control_period_steps`` of the policy's sidecar). A failed or
invalid answer is dropped and counted, and the next query waits ``backoff_s``, doubling up to ``max_backoff_s``
while the server keeps failing, so a dead server costs one request per back-off and no log spam; the hint ages
meanwhile. ``hint_valid`` is 1 once an answer has arrived in the current episode. An episode starts at
:meth:`TeacherChannel.reset` (the node's activate, and each message on the episode topic); an answer to a query made
before it is dropped and counted (``dropped_reset``), never shown.

Scratchpad memory (a policy with a ``memory`` observation group, DESIGN.md "Scratchpad memory"): the channel keeps
one :class:`~robot_rl.memory.Scratchpad` for the episode. Every query carries its text (``scratchpads`` of
``/act/batch``); the note of an answer (``BatchAnswer.notes``) is written into it at the control step that
delivers the answer, as in training (a note is written when its answer arrives), so a lost, failed, invalid or
orphaned answer loses its own note and nothing else (``memory.notes_lost``). The ``memory`` group is
:meth:`Scratchpad.vector() <robot_rl.memory.Scratchpad.vector>` of that scratchpad; :meth:`TeacherChannel.reset`
empties it with the hint. A policy may observe the memory without the teacher group (no features): the channel then
queries on the same schedule for the notes alone.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from robot_rl.interface.delayed import DelayedInterface, motion_state
from robot_rl.teacher_protocol import (
    API_KEY_HEADER,
    BATCH_ROUTE,
    METADATA_ROUTE,
    ServedSpec,
    batch_body,
    decode_batch_answer,
    dumps,
    read_metadata,
    validate_teacher_actions,
)

__all__ = ["MAX_PENDING", "DELIVERED", "FAILED", "INVALID", "DROPPED_RESET", "UNKNOWN", "TeacherQuery",
           "TeacherAnswer", "TeacherStats", "MemoryStatus", "TeacherChannel", "TeacherClient", "RecordedAnswers"]

log = logging.getLogger("robot_rl.deploy.teacher")

#: Most queries in flight at once: the live one and one orphan of an episode that ended (whose answer is dropped).
MAX_PENDING = 2
#: What became of an answer (:meth:`TeacherChannel.receive`).
DELIVERED, FAILED, INVALID, DROPPED_RESET, UNKNOWN = "delivered", "failed", "invalid", "dropped_reset", "unknown"
#: A query is due once this fraction of a control period before the last answer has played out over ``D``
#: periods: the node's steps jitter around the period (the sim bridge's by ~10 ms), the schedule must not slip a step.
PLAYED_OUT_SLACK_PERIODS = 0.5


@dataclass
class TeacherQuery:
    """One query, as a control step makes it.

    Attributes:
        query_id: sequential per node (answers name it).
        episode: the channel's episode count when it was made.
        episode_step: control steps of the episode before this one (the request's ``obs_steps``).
        made_s: node clock when it was made (s).
        state_stamp_s: header stamp of the EE pose of the step's observation (s).
        image_stamp_s: header stamp of the latest camera image (s), or None without one.
        instruction: the task's language instruction.
        task_id: the policy's task id (the request's ``task_ids``: a scripted backend plans for it).
        image: ``(H, W, 3) uint8`` RGB of the latest camera image, or None.
        state: ``(38,) float32`` privileged state from the latest inputs, or None (no sources for the task, or
            an input missing).
        scratchpad: the episode's scratchpad text when the query was made (a policy with a ``memory`` group;
            ``""`` while empty), or None (no memory: the request carries no ``scratchpads``).
    """

    query_id: int
    episode: int
    episode_step: int
    made_s: float
    state_stamp_s: float
    image_stamp_s: float | None
    instruction: str
    task_id: str
    image: np.ndarray | None = None
    state: np.ndarray | None = None
    scratchpad: str | None = None

    def body(self, spec: ServedSpec) -> tuple[dict, bool]:
        """The ``/act/batch`` body for a backend that reads what ``spec`` says, and whether it carries the image
        (then the answer was computed from the image's stamp, else from the EE pose's).

        Raises:
            ValueError: the backend needs an image and no camera image has arrived (``topics.image``), or the
                privileged state and the node cannot assemble it for this task or an input is missing.
        """
        if spec.needs_image and self.image is None:
            raise ValueError(f"the teacher ({spec.model_id}) reads images and no camera image has arrived "
                             "(topics.image)")
        if spec.needs_state and self.state is None:
            raise ValueError(f"the teacher ({spec.model_id}) reads the privileged state, which the node cannot "
                             f"assemble for {self.task_id} (robot_rl.envs.privileged) or whose inputs are missing")
        stamp = self.image_stamp_s if spec.needs_image else self.state_stamp_s
        stamps = spec.protocol_version >= 2
        return batch_body([self.instruction], images=self.image[None] if spec.needs_image else None,
                          states=self.state[None] if spec.needs_state else None, task_ids=[self.task_id],
                          scratchpads=None if self.scratchpad is None else [self.scratchpad],
                          obs_steps=np.array([self.episode_step]) if stamps else None,
                          obs_times_s=np.array([stamp]) if stamps else None), bool(spec.needs_image)


@dataclass
class TeacherAnswer:
    """What came back for a query (recorded to the bag as one JSON line, :meth:`to_json`).

    Attributes:
        query_id: the query it answers.
        actions: ``(7,) float32`` as the server answered them (not yet checked), or None when the query failed.
        error: why it failed (timeout, refused, 5xx, ...), or None.
        arrived_s: node clock when it arrived (s).
        used_image: the query carried the camera image (the answer is from the image's stamp).
        model_id: the model that answered, or None.
        server_latency_s: the request's time in the server (s), or None.
        note: the scratchpad note the answer carries (``BatchAnswer.notes``; ``""`` or None: none).
    """

    query_id: int
    actions: np.ndarray | None
    error: str | None
    arrived_s: float
    used_image: bool = False
    model_id: str | None = None
    server_latency_s: float | None = None
    note: str | None = None

    def to_json(self, **extra) -> str:
        """One JSON object: the fields (``actions`` as a list of floats or null) and ``extra``."""
        d = asdict(self)
        d["actions"] = None if self.actions is None else [float(v) for v in np.asarray(self.actions).reshape(-1)]
        return json.dumps({**d, **extra})

    @classmethod
    def from_json(cls, text: str) -> tuple[TeacherAnswer, dict]:
        """Inverse of :meth:`to_json`: the answer and the extra keys.

        Raises:
            ValueError: not such a JSON object (the message names the missing key).
        """
        d = json.loads(text)
        try:
            actions = None if d["actions"] is None else np.asarray(d["actions"], dtype=np.float32)
            answer = cls(int(d["query_id"]), actions, d["error"], float(d["arrived_s"]), bool(d["used_image"]),
                         d.get("model_id"), d.get("server_latency_s"), d.get("note"))
        except KeyError as exc:
            raise ValueError(f"not a teacher answer: no {exc.args[0]!r}") from None
        names = {"query_id", "actions", "error", "arrived_s", "used_image", "model_id", "server_latency_s", "note"}
        return answer, {k: v for k, v in d.items() if k not in names}


@dataclass
class TeacherStats:
    """The channel's counters (since the node was configured)."""

    queries: int = 0  #: queries made
    answers: int = 0  #: answers delivered into an episode (they became the hint)
    failures: int = 0  #: queries that failed (timeout, refused, 5xx, a backend that needs what the node lacks)
    invalid: int = 0  #: answers dropped: NaN, wrong shape or out of range
    dropped_reset: int = 0  #: answers to a query made before an episode reset, dropped
    unknown: int = 0  #: answers to no query this channel made (a replay that diverged)
    resets: int = 0  #: episode resets (activate, episode topic, ``~/reset_episode``)


@dataclass
class MemoryStatus:
    """The scratchpad's counters at the node (a policy with a ``memory`` group), besides
    :class:`~robot_rl.memory.MemoryStats` (entries written, dropped, truncated, evicted).
    """

    notes_written: int = 0  #: delivered answers whose non-empty note was written
    notes_lost: int = 0  #: non-empty notes of answers that were not delivered (failed, invalid, orphaned)
    silent_answers: int = 0  #: delivered answers without a note (a teacher that writes none: the group stays empty)


@dataclass
class _Pending:
    query: TeacherQuery
    motion_at_state: np.ndarray  #: (38,) motion state at the EE pose stamp
    motion_at_image: np.ndarray | None  #: (38,) at the image stamp


@dataclass
class TeacherChannel:
    """When to query and what the ``teacher`` group shows, at the node's control steps (no I/O).

    Args:
        features: the policy's ``interface.features`` (its ``teacher`` group).
        period_steps: ``D``, control periods one answer covers.
        control_period_s: the node's control period (s).
        instruction: the task's language instruction.
        task_id: the policy's task id.
        backoff_s: wait after a failed or invalid answer before the next query (s), doubled per further failure.
        max_backoff_s: the longest such wait (s).
        memory: the :class:`~robot_rl.memory.MemorySpec` of the policy's ``memory`` group, or None (no scratchpad).

    Attributes:
        scratchpad: the episode's :class:`~robot_rl.memory.Scratchpad` (one env), or None without ``memory``.

    Raises:
        ValueError: neither features nor ``memory``, ``period_steps < 1`` or a non-positive period.
    """

    features: tuple[str, ...]
    period_steps: int
    control_period_s: float
    instruction: str
    task_id: str
    backoff_s: float = 0.5
    max_backoff_s: float = 5.0
    memory: object = None  #: MemorySpec | None (robot_rl.memory; typed loosely: a dataclass field default)
    stats: TeacherStats = field(default_factory=TeacherStats)

    def __post_init__(self) -> None:
        if not self.features and self.memory is None:
            raise ValueError("a teacher channel needs the teacher group's features or a memory spec")
        if int(self.period_steps) < 1 or not self.control_period_s > 0:
            raise ValueError(f"teacher period_steps must be >= 1 and the control period > 0, got "
                             f"{self.period_steps}, {self.control_period_s}")
        self.features = tuple(self.features)
        self.period_steps = int(self.period_steps)
        self.interface = DelayedInterface(1, self.features, period_s=self.control_period_s)
        self.episode = 0
        self.step_index = 0  #: control steps of the episode before the current one
        self._steps = 0
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._delivered_at = -math.inf
        self._retry_at = -math.inf
        self._backoff = float(self.backoff_s)
        self.failing = False  #: the last query failed (cleared by the next delivered answer)
        self.last_error = ""
        self.last_delay_s: float | None = None  #: age of the last delivered answer when it was delivered (s)
        self.received_query: TeacherQuery | None = None  #: the query the last :meth:`receive`d answer answers
        self.scratchpad = None
        self.memory_stats = MemoryStatus()
        if self.memory is not None:
            from robot_rl.memory import Scratchpad

            self.scratchpad = Scratchpad(self.memory, 1)

    @property
    def size(self) -> int:
        """Length of the ``teacher`` group's vector (0 for a memory-only channel)."""
        return self.interface.size

    # -- episodes ----------------------------------------------------------------------------------

    def reset(self) -> None:
        """A new episode: no hint, an empty scratchpad, and any query in flight becomes an orphan whose answer
        (and note) will be dropped.
        """
        self.episode += 1
        self.stats.resets += 1
        self.interface.reset(np.array([0]))
        if self.scratchpad is not None:
            self.scratchpad.clear()
        self._steps = 0
        self._delivered_at = -math.inf

    def begin_step(self) -> None:
        """A control step starts (call once per step, before :meth:`receive` and :meth:`features`)."""
        self.step_index = self._steps
        self._steps += 1

    # -- answers -----------------------------------------------------------------------------------

    def receive(self, answer: TeacherAnswer, now_s: float) -> str:
        """Handle an answer at the control step of time ``now_s`` (node clock, s).

        Returns:
            :data:`DELIVERED` (it is the hint from now on), :data:`FAILED`, :data:`INVALID` (NaN, wrong shape or
            out of range: dropped), :data:`DROPPED_RESET` (its query was made before the episode began) or
            :data:`UNKNOWN` (no such query); all but the first are counted and never shown to the policy. With a
            scratchpad, a delivered answer's note is written into it now; any other answer's note is lost
            (``memory_stats.notes_lost``), never written.
        """
        outcome = self._receive(answer, now_s)
        if self.scratchpad is not None:
            m = self.memory_stats
            if outcome == DELIVERED:
                if answer.note:
                    self.scratchpad.write(0, answer.note)
                    m.notes_written += 1
                else:
                    m.silent_answers += 1
            elif answer.note:
                m.notes_lost += 1
        return outcome

    def _receive(self, answer: TeacherAnswer, now_s: float) -> str:
        pending = self._pending.pop(answer.query_id, None)
        self.received_query = None if pending is None else pending.query
        if pending is None:
            self.stats.unknown += 1
            return UNKNOWN
        if pending.query.episode != self.episode:
            self.stats.dropped_reset += 1
            return DROPPED_RESET
        if answer.error is not None or answer.actions is None:
            self.stats.failures += 1
            self.last_error = answer.error or "no actions"
            self._back_off(now_s)
            return FAILED
        actions = np.asarray(answer.actions, dtype=np.float64).reshape(1, -1) if np.size(answer.actions) else None
        if actions is None or not validate_teacher_actions(actions, 1, self.period_steps)[0]:
            self.stats.invalid += 1
            self.last_error = f"invalid answer {np.asarray(answer.actions).tolist()}"
            self._back_off(now_s)
            return INVALID
        use_image = answer.used_image and pending.motion_at_image is not None
        stamp = pending.query.image_stamp_s if use_image else pending.query.state_stamp_s
        motion_q = pending.motion_at_image if use_image else pending.motion_at_state
        self.interface.deliver(np.array([0]), actions, np.array([pending.query.episode_step]), motion_q[None],
                               query_times_s=np.array([stamp]))
        self._delivered_at = now_s
        self._backoff = float(self.backoff_s)
        self.failing = False
        self.last_delay_s = float(now_s - stamp)
        self.stats.answers += 1
        return DELIVERED

    def _back_off(self, now_s: float) -> None:
        self._retry_at = now_s + self._backoff
        self._backoff = min(2.0 * self._backoff, float(self.max_backoff_s))
        self.failing = True

    # -- the group ---------------------------------------------------------------------------------

    def features_now(self, now_s: float, motion_now: tuple[np.ndarray, np.ndarray, float] | None) -> np.ndarray:
        """The ``teacher`` group ``(size,) float32`` at time ``now_s``: ``dt = now_s - t_q`` (s) and ``dp`` from the
        motion at ``t_q`` to ``motion_now`` (``(tcp position (3,) m, quaternion wxyz (4,), gripper width m)``; None
        only before any EE pose, when no hint can be valid either). ``(0,)`` for a memory-only channel.
        """
        if not self.features:
            return np.zeros(0, dtype=np.float32)
        states = None if motion_now is None else motion_state(motion_now[0], motion_now[1], motion_now[2])
        if states is None and self.interface.valid.any():
            raise ValueError("a hint is valid but no current TCP pose was given for dp")
        return self.interface.features_of(states, now_s=now_s)[0]

    def memory_vector(self) -> np.ndarray:
        """The ``memory`` group ``(spec.size,) float32``: the scratchpad's vector (:meth:`Scratchpad.vector()
        <robot_rl.memory.Scratchpad.vector>`).

        Raises:
            ValueError: the channel has no scratchpad.
        """
        if self.scratchpad is None:
            raise ValueError("this teacher channel keeps no scratchpad (the policy has no memory group)")
        return self.scratchpad.vector()[0]

    def memory_text(self) -> str | None:
        """The scratchpad's text (``""`` while empty), or None without a scratchpad."""
        return None if self.scratchpad is None else self.scratchpad.text(0)

    @property
    def hint_valid(self) -> bool:
        """Whether an answer has arrived in this episode."""
        return bool(self.interface.valid[0])

    def age_s(self, now_s: float) -> float | None:
        """Age of the current hint's observation at ``now_s`` (s), or None without a hint this episode."""
        return float(now_s - self.interface.query_time_s[0]) if self.hint_valid else None

    # -- queries -----------------------------------------------------------------------------------

    @property
    def in_flight(self) -> bool:
        """Whether a query of this episode is in flight."""
        return any(p.query.episode == self.episode for p in self._pending.values())

    def query_due(self, now_s: float) -> bool:
        """Whether to query at ``now_s``: none in flight (and at most :data:`MAX_PENDING` - 1 orphans), no back-off
        running, and the last answer of this episode has played out over ``D`` control periods.
        """
        if self.in_flight or len(self._pending) >= MAX_PENDING or now_s < self._retry_at:
            return False
        played = (self.period_steps - PLAYED_OUT_SLACK_PERIODS) * self.control_period_s
        return now_s >= self._delivered_at + played

    def make_query(self, now_s: float, state_stamp_s: float, motion_at: Callable[[float], tuple],
                   image: tuple[float, np.ndarray] | None = None, state: np.ndarray | None = None) -> TeacherQuery:
        """Make the query of this step (its answer is then expected: :meth:`in_flight`).

        Args:
            now_s: the step's time (node clock, s).
            state_stamp_s: header stamp of the step's EE pose (s).
            motion_at: stamp -> ``(tcp position, quaternion, gripper width)`` the robot reported then
                (:meth:`~robot_rl.deploy.ros_io.ObservationAssembler.motion_at`).
            image: ``(stamp s, (H, W, 3) uint8)`` of the latest camera image, or None.
            state: ``(38,)`` privileged state, or None.
        """
        q = TeacherQuery(self._next_id, self.episode, self.step_index, float(now_s), float(state_stamp_s),
                         None if image is None else float(image[0]), self.instruction, self.task_id,
                         None if image is None else image[1], state, self.memory_text())
        self._next_id += 1
        at_state = motion_state(*_motion_args(motion_at(q.state_stamp_s)))[0]
        at_image = None if image is None else motion_state(*_motion_args(motion_at(q.image_stamp_s)))[0]
        self._pending[q.query_id] = _Pending(q, at_state, at_image)
        self.stats.queries += 1
        return q

    # -- reporting ---------------------------------------------------------------------------------

    def status(self, now_s: float) -> dict:
        """The status topic's ``teacher`` object: ``age_s`` (s, null without a hint this episode), ``valid``,
        ``in_flight``, ``last_delay_s`` (age of the last answer when it was delivered, s), ``episode`` and the
        counters of :class:`TeacherStats`.
        """
        return {"age_s": self.age_s(now_s), "valid": self.hint_valid, "in_flight": self.in_flight,
                "last_delay_s": self.last_delay_s, "episode": self.episode, **asdict(self.stats)}

    def memory_status(self) -> dict | None:
        """The status topic's ``memory`` object (None without a scratchpad): ``text`` (the scratchpad, ``""`` when
        empty), ``episode``, and the counters of :class:`MemoryStatus` and
        :class:`~robot_rl.memory.MemoryStats` (``notes``, ``entries``, ``dropped``, ``truncated``, ``evicted``).
        """
        if self.scratchpad is None:
            return None
        return {"text": self.scratchpad.text(0), "episode": self.episode, **asdict(self.memory_stats),
                **asdict(self.scratchpad.stats)}

    def diagnostics(self) -> dict:
        """Counters for the diagnostics array: ``teacher.<counter>``, ``teacher.last_error`` and, with a scratchpad,
        ``memory.<counter>``.
        """
        out = {**{f"teacher.{k}": v for k, v in asdict(self.stats).items()}, "teacher.last_error": self.last_error}
        if self.scratchpad is not None:
            out.update({f"memory.{k}": v for k, v in {**asdict(self.memory_stats),
                                                       **asdict(self.scratchpad.stats)}.items()})
        return out


def _motion_args(m: tuple) -> tuple:
    pos, quat, width = m
    return np.asarray(pos)[None], np.asarray(quat)[None], np.array([width])


class TeacherClient:
    """Queries a teacher server (``robot-rl teacher serve``) in worker threads; :meth:`poll` collects the answers.

    Args:
        url: the server's base URL.
        timeout_s: HTTP timeout of a query (s).
        connect_timeout_s: HTTP timeout of ``GET /metadata`` (s).
        api_key_env: environment variable holding the API key (sent as ``X-API-Key`` when set).
        clock: the node's clock (s): stamps each answer's arrival.
        workers: concurrent HTTP requests (a live query and an orphan of an ended episode).

    Attributes:
        spec: the server's :class:`~robot_rl.teacher_protocol.ServedSpec` once ``GET /metadata`` answered, else
            None (fetched again after a failure: the server may have been restarted with another backend).

    The first query (or :meth:`start`) fetches the metadata; nothing here blocks the caller.
    """

    def __init__(self, url: str, *, timeout_s: float = 2.0, connect_timeout_s: float = 1.0,
                 api_key_env: str = "ROBOT_RL_TEACHER_API_KEY", clock: Callable[[], float] = time.time,
                 workers: int = MAX_PENDING, on_spec: Callable[[ServedSpec], None] | None = None):
        import requests  # noqa: F401  -- fail at construction, not in a worker thread

        self.url = url.rstrip("/")
        self.timeout_s, self.connect_timeout_s = float(timeout_s), float(connect_timeout_s)
        key = os.environ.get(api_key_env)
        self._headers = {"Content-Type": "application/json"} | ({API_KEY_HEADER: key} if key else {})
        self._clock = clock
        self._on_spec = on_spec
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(max_workers=int(workers), thread_name_prefix="teacher-query")
        self._local = threading.local()
        self._lock = threading.Lock()
        self.spec: ServedSpec | None = None
        #: ``writes_notes`` of the server's ``/metadata`` (None: not fetched yet, or not reported)
        self.writes_notes: bool | None = None

    def _session(self):
        import requests

        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def start(self) -> None:
        """Fetch the server's metadata in the background (a failure is left for the first query to retry)."""
        self._pool.submit(self._try_fetch)

    def _try_fetch(self) -> None:
        try:
            self._fetch()
        except Exception as exc:  # noqa: BLE001 -- reported with the first query
            log.info("teacher server %s not reachable yet: %s", self.url, exc)

    def _fetch(self) -> ServedSpec:
        r = self._session().get(f"{self.url}{METADATA_ROUTE}", headers=self._headers, timeout=self.connect_timeout_s)
        if r.status_code == 404:
            raise ValueError(f"{self.url} has no {METADATA_ROUTE}: not a robot_rl teacher server (an OpenVLA "
                             "reference server: serve the model with `robot-rl teacher serve --backend openvla`)")
        if r.status_code != 200:
            raise ValueError(f"GET {METADATA_ROUTE} answered {r.status_code}: {r.text[:200]}")
        meta = r.json()
        spec = read_metadata(meta)
        with self._lock:
            fresh = self.spec != spec
            self.spec = spec
            self.writes_notes = None if not isinstance(meta, dict) or "writes_notes" not in meta else bool(
                meta["writes_notes"])
        if fresh and self._on_spec is not None:
            self._on_spec(spec)
        return spec

    def submit(self, query: TeacherQuery) -> None:
        """Send ``query`` in a worker thread; its :class:`TeacherAnswer` comes out of :meth:`poll`."""
        self._pool.submit(self._run, query)

    def _run(self, query: TeacherQuery) -> None:
        try:
            spec = self.spec or self._fetch()
            body, used_image = query.body(spec)
            r = self._session().post(f"{self.url}{BATCH_ROUTE}", data=dumps(body), headers=self._headers,
                                     timeout=self.timeout_s)
            if r.status_code != 200:
                raise ValueError(f"POST {BATCH_ROUTE} answered {r.status_code}: {r.text[:200]}")
            ans = decode_batch_answer(r.text, 1)
            note = ans.notes[0] if isinstance(ans.notes, list) and ans.notes else None
            answer = TeacherAnswer(query.query_id, ans.actions[0], None, self._clock(), used_image, ans.model_id,
                                   ans.latency_s, note if isinstance(note, str) else None)
        except Exception as exc:  # noqa: BLE001 -- any failure is "no answer", counted by the channel
            with self._lock:
                self.spec = None  # ask again: the server may come back with another backend
            answer = TeacherAnswer(query.query_id, None, f"{type(exc).__name__}: {exc}"[:300], self._clock())
        self._done.put(answer)

    def poll(self, now_s: float | None = None) -> list[TeacherAnswer]:
        """The answers that have arrived since the last call (``now_s`` unused: the replay's
        :meth:`RecordedAnswers.poll` needs it).
        """
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """Stop the worker threads (a request in flight finishes in the background and is discarded)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class RecordedAnswers:
    """A recording's teacher answers in place of :class:`TeacherClient`, for the replay.

    Args:
        deliveries: ``(step time s, answer)`` pairs: the control step at which the node handled each answer (the
            ``"step_s"`` its recorded JSON line carries) and the answer.

    :meth:`poll` at a step returns the answers the node handled at that step (and any from earlier steps the replay
    did not step at, counted in ``late``); :meth:`submit` keeps the queries the replay makes (``queries``).
    """

    def __init__(self, deliveries: list[tuple[float, TeacherAnswer]]):
        self._queue = sorted(deliveries, key=lambda d: d[0])
        self.queries: list[TeacherQuery] = []
        self.fed = 0
        self.late = 0

    def submit(self, query: TeacherQuery) -> None:
        """Keep the query (nothing is sent)."""
        self.queries.append(query)

    def poll(self, now_s: float) -> list[TeacherAnswer]:
        """The recorded answers handled at or before the step of time ``now_s``."""
        out = []
        while self._queue and self._queue[0][0] <= now_s + 1e-9:
            t, answer = self._queue.pop(0)
            self.late += int(t < now_s - 1e-9)
            out.append(answer)
        self.fed += len(out)
        return out

    @property
    def left(self) -> int:
        """Recorded answers not fed yet."""
        return len(self._queue)

    def close(self) -> None:
        """Nothing to close."""
