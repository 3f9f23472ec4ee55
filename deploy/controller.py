"""The policy node's logic without ROS: messages in, safe commands out.

:class:`PolicyController` is what the ROS 2 lifecycle node (:mod:`robot_rl.deploy.ros_node`) and
the bag replay (:mod:`robot_rl.deploy.record`) both run, so a replay re-runs exactly the node's
decisions. One control step: assemble the observation from the latest valid messages
(:class:`~robot_rl.deploy.ros_io.ObservationAssembler`), run the ONNX policy, and pass the action
through the :class:`~robot_rl.deploy.safety.SafetyFilter`, the only path to a command.

A policy with a ``teacher`` observation group (the delayed semantic interface) gets it from a
:class:`~robot_rl.deploy.teacher.TeacherChannel`: at each step the answers that have arrived (from the node's
:class:`~robot_rl.deploy.teacher.TeacherClient`, or a recording's in a replay) are handled first, the group is
appended to the state, and when a query is due it is submitted (never waited for). The teacher group is optional:
it ages, it never trips the watchdog.

A policy with a ``memory`` observation group (the scratchpad, DESIGN.md "Scratchpad memory") gets it from the same
channel: its :class:`~robot_rl.memory.Scratchpad` is rebuilt from the sidecar's ``memory`` group alone
(:meth:`MemorySpec.from_group <robot_rl.memory.MemorySpec.from_group>`), filled with the notes of the answers as
they are delivered, sent as text with every query, and emptied at every new episode (:meth:`PolicyController.
new_episode`: activate, the episode topic, the node's ``~/reset_episode``). A memory-only policy (no ``teacher``
group) still queries the teacher, for its notes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_rl.deploy.config import DeployConfig
from robot_rl.deploy.policy import OnnxPolicy
from robot_rl.deploy.ros_io import ObservationAssembler, ObservationUnavailable
from robot_rl.deploy.safety import Decision, FilterState, SafetyFilter
from robot_rl.deploy.teacher import TeacherChannel


@dataclass
class StepResult:
    """One control step: the decision and what led to it (for status, recording and benchmarks)."""

    decision: Decision
    action: np.ndarray | None = None  #: ``(7,)`` raw policy action, ``None`` when no observation
    inference_s: float = 0.0  #: wall time of the ONNX call (s)
    obs_stamp_s: float | None = None  #: header stamp of the newest input used (s)
    #: teacher answers handled at this step: ``(TeacherAnswer, outcome, TeacherQuery or None)``, the outcome what
    #: became of it (``"delivered"``, ``"failed"``, ...), the query the one it answers
    teacher_answers: list = field(default_factory=list)
    query: object = None  #: the :class:`~robot_rl.deploy.teacher.TeacherQuery` submitted at this step, if any
    teacher: dict | None = None  #: the teacher channel's status after the step (None without a teacher group)
    obs: np.ndarray | None = None  #: ``(obs_dim,) float32`` the policy was given (None when no observation)
    #: age (s, the node's receive clock) of the latest valid message of each required input, as the watchdog saw it
    input_ages: dict = field(default_factory=dict)


class PolicyController:
    """Loads and validates a policy for a deployment config; steps it on ROS messages.

    Args:
        policy_dir: directory with ``policy.onnx`` and ``policy.json`` (``robot-rl export``).
        cfg: the deployment config (frames, joint names, safety limits, rate, teacher).
        teacher_link: where queries go and answers come from, for a policy with a ``teacher`` group: the node's
            :class:`~robot_rl.deploy.teacher.TeacherClient`, a replay's
            :class:`~robot_rl.deploy.teacher.RecordedAnswers`, or None (no queries: the hint never arrives).

    Attributes:
        teacher: the :class:`~robot_rl.deploy.teacher.TeacherChannel`, or None (a policy with neither a ``teacher``
            nor a ``memory`` group).

    Raises:
        ValueError: the sidecar does not match the ONNX file; its observation schema differs from the one this
            node builds for the configured task (:attr:`DeployConfig.task`, default the sidecar's): a
            :class:`~robot_rl.observation.SchemaMismatch` naming the group and the field; the schema has a
            group or a field the ROS inputs cannot provide (named); the task differs from the config's; a
            ``memory`` group that is not a scratchpad's layout (named); or the policy observes the ``teacher`` or
            ``memory`` group and ``teacher.url`` is not set (without a ``teacher_link``) or its period is known
            neither from the sidecar nor from ``teacher.period_steps``; a joint of the policy's arm missing from
            ``joint_map`` (named).
        FileNotFoundError: a file of the policy is missing.
    """

    def __init__(self, policy_dir: str | Path, cfg: DeployConfig, teacher_link=None):
        from robot_rl.interface.delayed import features_of_group, teacher_group
        from robot_rl.observation import ObservationSchema, state_group

        self.cfg = cfg
        self.policy = OnnxPolicy(policy_dir, expected_task=cfg.task)
        side = self.policy.sidecar
        self.task = side["task"]["id"]
        schema = self.policy.schema
        for g in schema.groups:
            if g.name not in ("state", "teacher", "memory"):
                raise ValueError(f"the policy observes the {g.name!r} group (first field {g.fields[0].name!r}), "
                                 "which this node does not assemble")
        features = features_of_group(schema.group("teacher")) if "teacher" in schema.group_names else None
        memory = None  #: the scratchpad's MemorySpec, rebuilt from the memory group alone
        if "memory" in schema.group_names:
            from robot_rl.memory import DEFAULT_MAX_NOTE_CHARS, MemorySpec

            chars = int(side.get("memory", {}).get("max_note_chars", DEFAULT_MAX_NOTE_CHARS))
            try:
                memory = MemorySpec.from_group(schema.group("memory"), max_note_chars=chars)
            except ValueError as exc:
                raise ValueError(f"the policy's sidecar ({self.policy.dir}): {exc}") from None
        # The node's own view of the task's observation: its state group from this version's layouts (with the
        # ROS source of every field), this version's teacher group and the scratchpad's memory group; a policy
        # that observes anything else is refused here, not at run time.
        groups = ((state_group(self.task),) + ((teacher_group(features),) if features else ())
                  + ((memory.group(),) if memory is not None else ()))
        expected = ObservationSchema(self.task, groups)
        theirs = ObservationSchema(self.task, tuple(schema.group(g.name) for g in groups))
        if side["format_version"] == 1 and expected.differences(theirs):
            strip = _without_sources(expected).differences(_without_sources(theirs))
            raise ValueError(f"the policy in {self.policy.dir} was exported before observation groups "
                             f"(sidecar format 1) and its layout is not this version's layout of {self.task} "
                             f"({strip[0] if strip else 'the fields have no ROS sources'}): re-export it with "
                             f"`robot-rl export {side.get('source', {}).get('run_dir', 'RUN_DIR')}`")
        expected.check_matches(theirs, f"the policy's sidecar ({self.policy.dir})")
        arm_joints = side.get("action", {}).get("controller", {}).get("arm", {}).get("joint_names", ())
        unmapped = [n for n in arm_joints if cfg.joint_map is not None and n not in cfg.joint_map]
        if unmapped:
            raise ValueError(f"the policy's arm joint {unmapped[0]!r} (sidecar action.controller.arm.joint_names) has "
                             "no robot joint in the deploy config's joint_map")
        base = side["observation"].get("robot_base_pose_world", {})
        privileged = None
        self.privileged_note = ""  #: why the node assembles no privileged state (empty when it does)
        queries = bool(features) or memory is not None  # the node queries a teacher (for hints, notes or both)
        if queries:
            if cfg.teacher.url is None and teacher_link is None:
                what = " and ".join(([f"the teacher group ({', '.join(features)})"] if features else [])
                                    + (["the memory group (the scratchpad, written from the teacher's notes)"]
                                       if memory is not None else []))
                raise ValueError(f"the policy in {self.policy.dir} observes {what} but teacher.url is not set in the "
                                 "deploy config (the teacher server, robot-rl teacher serve)")
            from robot_rl.envs.privileged import privileged_fields

            try:
                privileged = privileged_fields(self.task)
            except ValueError as exc:  # only a teacher that reads the privileged state needs it
                self.privileged_note = str(exc)
        self.assembler = ObservationAssembler(
            schema, cfg.joint_names, cfg.frames.base,
            (base.get("position_m", (0, 0, 0)), base.get("quaternion_wxyz", (1, 0, 0, 0))),
            privileged=privileged, history_s=cfg.teacher.history_s if queries else None,
            future_stamp_tolerance_s=cfg.future_stamp_tolerance_s,
        )
        missing = [k for k in self.assembler.required_inputs if getattr(cfg.topics, k, None) is None]
        if missing:
            raise ValueError(f"the observation of {self.task} reads {', '.join(missing)} but topics.{missing[0]} is "
                             "not set in the deploy config")
        self.rate_hz = float(cfg.rate_hz or side["control_rate_hz"])
        self.period_s = 1.0 / self.rate_hz
        self.safety = SafetyFilter(cfg.safety_limits(), self.period_s, required_inputs=self.assembler.required_inputs)
        self.teacher: TeacherChannel | None = None
        self.teacher_link = teacher_link
        self.image: tuple[float, np.ndarray] | None = None  #: latest camera image: (header stamp s, (H, W, 3) uint8)
        self.image_rejected = 0
        self.images_received = 0
        if queries:
            period = (cfg.teacher.period_steps or side.get("teacher", {}).get("control_period_steps")
                      or side.get("memory", {}).get("control_period_steps"))
            if period is None:
                raise ValueError(f"the policy's sidecar ({self.policy.dir}) has no teacher section (exported before "
                                 "it was written): set teacher.period_steps in the deploy config to the D it was "
                                 "trained with, or re-export it")
            t = cfg.teacher
            self.teacher = TeacherChannel(tuple(features or ()), int(period), self.period_s, self.policy.instruction,
                                          self.task, backoff_s=t.backoff_s, max_backoff_s=t.max_backoff_s,
                                          memory=memory)

    # -- episodes and inputs the teacher reads -------------------------------------------------------

    def activate(self) -> None:
        """Arm the safety filter with the current EE pose (bounded first command) and start a new teacher episode.

        Raises:
            ObservationUnavailable: no EE pose yet. RuntimeError / ValueError: the filter refuses (e-stopped).
        """
        self.safety.activate(self.assembler.ee_pose())
        self.new_episode()

    def new_episode(self) -> bool:
        """A new episode (activate, the episode topic, the node's ``~/reset_episode``): the teacher group's hint and
        the scratchpad are cleared, and the answers of queries in flight will be dropped (with their notes).

        Returns:
            True when there was episode state to reset (a teacher channel), False for a state-only policy.
        """
        if self.teacher is None:
            return False
        self.teacher.reset()
        return True

    def update_image(self, msg) -> bool:
        """Keep a camera image (``sensor_msgs/Image``, ``rgb8``/``bgr8``) for the teacher; False (counted in
        ``rejected.image``) for one that cannot be read.
        """
        from robot_rl.deploy.ros_io import image_from_msg, stamp_to_s

        try:
            self.image = (stamp_to_s(msg.header.stamp), image_from_msg(msg))
            self.images_received += 1
        except ValueError as exc:
            self.image_rejected += 1
            self.assembler.last_rejection = f"image: {exc}"
            return False
        return True

    def step(self, now_s: float) -> StepResult:
        """One control step at time ``now_s`` (the clock of the message stamps).

        With a teacher group: the answers that have arrived are handled first (they may become the hint), the
        group is appended to the state, and when a query is due (:meth:`TeacherChannel.query_due`) and the filter
        is active on fresh inputs, the step's query is submitted to ``teacher_link`` before the policy runs.
        """
        handled, query, teacher = [], None, self.teacher
        if teacher is not None:
            teacher.begin_step()
            if self.teacher_link is not None:
                for answer in self.teacher_link.poll(now_s):
                    outcome = teacher.receive(answer, now_s)
                    handled.append((answer, outcome, teacher.received_query))
        try:
            vec = mem = None
            if teacher is not None:
                vec = teacher.features_now(now_s, self._motion_now()) if teacher.features else None
                mem = teacher.memory_vector() if teacher.scratchpad is not None else None
            obs = self.assembler.observation(teacher=vec, memory=mem)
            pose = self.assembler.ee_pose()
        except ObservationUnavailable:
            # The filter holds (missing_input, or inactive) and counts it in its diagnostics.
            nan_pose = (np.full(3, np.nan), np.full(4, np.nan))
            received = self.assembler.receive_times()
            decision = self.safety.step(np.full(7, np.nan), nan_pose, now_s, received)
            return StepResult(decision, teacher_answers=handled,
                              teacher=None if teacher is None else teacher.status(now_s),
                              input_ages=_ages(received, now_s))
        if (teacher is not None and self.teacher_link is not None and self.safety.state is FilterState.ACTIVE
                and not self.inputs_stale(now_s) and teacher.query_due(now_s)):
            query = self._query(now_s)
            self.teacher_link.submit(query)
        t0 = time.perf_counter()
        try:
            action = self.policy(obs)
        except ValueError:  # a non-finite observation: the filter holds (nonfinite_action)
            action = np.full(7, np.nan, dtype=np.float32)
        inference_s = time.perf_counter() - t0
        received = self.assembler.receive_times()  # the watchdog's clock: the node's own
        decision = self.safety.step(action, pose, now_s, received)
        return StepResult(decision, action, inference_s, max(self.assembler.stamps().values()), handled, query,
                          None if teacher is None else teacher.status(now_s), obs, _ages(received, now_s))

    def _motion_now(self):
        try:
            return self.assembler.motion_now()
        except ObservationUnavailable:
            return None

    def _query(self, now_s: float):
        state = None
        if self.assembler.privileged is not None:
            try:
                state = self.assembler.privileged_state()
            except ObservationUnavailable:
                state = None
        return self.teacher.make_query(now_s, self.assembler.latest["ee_pose"].stamp_s, self.assembler.motion_at,
                                       image=self.image, state=state)

    def inputs_stale(self, now_s: float) -> bool:
        """True when the safety filter's watchdog would hold now: a required input missing, or received longer
        ago than its age limit (:meth:`SafetyLimits.max_input_age_for
        <robot_rl.deploy.safety.SafetyLimits.max_input_age_for>`, on the node's receive clock).
        """
        return self.safety.watchdog(self.assembler.receive_times(), now_s) is not None

    def diagnostics(self) -> dict:
        """Safety counters plus input counters (``rejected.<input: reason>``, ``ignored.<input>``) and, with a
        teacher group, the teacher's (``teacher.<counter>``, ``teacher.images`` received, ``rejected.image``).
        """
        out = {**self.safety.diagnostics(), **self.assembler.diagnostics()}
        if self.teacher is not None:
            out.update(self.teacher.diagnostics())
            out["rejected.image"] = self.image_rejected
            out["teacher.images"] = self.images_received
        return out


def _ages(received: dict[str, float], now_s: float) -> dict[str, float]:
    """Input name -> age (s) at ``now_s`` of its latest valid message, on the node's receive clock."""
    return {k: round(now_s - t, 6) for k, t in received.items()}


def _without_sources(schema):
    """``schema`` with every field's ``source`` emptied (to compare a format-1 layout, which had none)."""
    from dataclasses import replace

    return replace(schema, groups=tuple(replace(g, fields=tuple(replace(f, source="") for f in g.fields))
                                        for g in schema.groups))


__all__ = ["PolicyController", "StepResult"]
