"""The policy node's logic without ROS: messages in, safe commands out.

:class:`PolicyController` is what the ROS 2 lifecycle node (:mod:`robot_rl.deploy.ros_node`) and
the bag replay (:mod:`robot_rl.deploy.record`) both run, so a replay re-runs exactly the node's
decisions. One control step: assemble the observation from the latest valid messages
(:class:`~robot_rl.deploy.ros_io.ObservationAssembler`), run the ONNX policy, and pass the action
through the :class:`~robot_rl.deploy.safety.SafetyFilter`, the only path to a command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_rl.deploy.config import DeployConfig
from robot_rl.deploy.policy import OnnxPolicy
from robot_rl.deploy.ros_io import ObservationAssembler, ObservationUnavailable
from robot_rl.deploy.safety import Decision, SafetyFilter


@dataclass
class StepResult:
    """One control step: the decision and what led to it (for status, recording and benchmarks)."""

    decision: Decision
    action: np.ndarray | None = None  #: ``(7,)`` raw policy action, ``None`` when no observation
    inference_s: float = 0.0  #: wall time of the ONNX call (s)
    obs_stamp_s: float | None = None  #: header stamp of the newest input used (s)


class PolicyController:
    """Loads and validates a policy for a deployment config; steps it on ROS messages.

    Args:
        policy_dir: directory with ``policy.onnx`` and ``policy.json`` (``robot-rl export``).
        cfg: the deployment config (frames, joint names, safety limits, rate).

    Raises:
        ValueError: the sidecar does not match the ONNX file; its observation schema differs from the one this
            node builds for the configured task (:attr:`DeployConfig.task`, default the sidecar's): a
            :class:`~robot_rl.observation.SchemaMismatch` naming the group and the field; the schema has a
            group or a field the ROS inputs cannot provide (named); or the task differs from the config's.
        FileNotFoundError: a file of the policy is missing.
    """

    def __init__(self, policy_dir: str | Path, cfg: DeployConfig):
        from robot_rl.observation import ObservationSchema, state_group

        self.cfg = cfg
        self.policy = OnnxPolicy(policy_dir, expected_task=cfg.task)
        side = self.policy.sidecar
        self.task = side["task"]["id"]
        schema = self.policy.schema
        # The node's own view of the task's observation: its state group from this version's layouts (with the
        # ROS source of every field); a policy that observes anything else is refused here, not at run time.
        expected = ObservationSchema(self.task, (state_group(self.task),))
        theirs = ObservationSchema(self.task, (schema.group("state"),))
        if side["format_version"] == 1 and expected.differences(theirs):
            strip = _without_sources(expected).differences(_without_sources(theirs))
            raise ValueError(f"the policy in {self.policy.dir} was exported before observation groups "
                             f"(sidecar format 1) and its layout is not this version's layout of {self.task} "
                             f"({strip[0] if strip else 'the fields have no ROS sources'}): re-export it with "
                             f"`robot-rl export {side.get('source', {}).get('run_dir', 'RUN_DIR')}`")
        expected.check_matches(theirs, f"the policy's sidecar ({self.policy.dir})")
        base = side["observation"].get("robot_base_pose_world", {})
        self.assembler = ObservationAssembler(
            schema, cfg.joint_names, cfg.frames.base,
            (base.get("position_m", (0, 0, 0)), base.get("quaternion_wxyz", (1, 0, 0, 0))),
        )
        missing = [k for k in self.assembler.required_inputs if getattr(cfg.topics, k, None) is None]
        if missing:
            raise ValueError(f"the observation of {self.task} reads {', '.join(missing)} but topics.{missing[0]} is "
                             "not set in the deploy config")
        self.rate_hz = float(cfg.rate_hz or side["control_rate_hz"])
        self.period_s = 1.0 / self.rate_hz
        self.safety = SafetyFilter(cfg.safety_limits(), self.period_s, required_inputs=self.assembler.required_inputs)

    def step(self, now_s: float) -> StepResult:
        """One control step at time ``now_s`` (the clock of the message stamps)."""
        try:
            obs = self.assembler.observation()
            pose = self.assembler.ee_pose()
        except ObservationUnavailable:
            # The filter holds (missing_input, or inactive) and counts it in its diagnostics.
            nan_pose = (np.full(3, np.nan), np.full(4, np.nan))
            return StepResult(self.safety.step(np.full(7, np.nan), nan_pose, now_s, self.assembler.stamps()))
        t0 = time.perf_counter()
        try:
            action = self.policy(obs)
        except ValueError:  # a non-finite observation: the filter holds (nonfinite_action)
            action = np.full(7, np.nan, dtype=np.float32)
        inference_s = time.perf_counter() - t0
        stamps = self.assembler.stamps()
        decision = self.safety.step(action, pose, now_s, stamps)
        return StepResult(decision, action, inference_s, max(stamps.values()))

    def inputs_stale(self, now_s: float) -> bool:
        """True when an input is missing or older than the safety limits' ``max_input_age_s``."""
        stamps = self.assembler.stamps()
        if any(k not in stamps for k in self.assembler.required_inputs):
            return True
        return any(now_s - t > self.safety.limits.max_input_age_s for t in stamps.values())

    def diagnostics(self) -> dict:
        """Safety counters plus input counters (``rejected.<input: reason>``, ``ignored.<input>``)."""
        return {**self.safety.diagnostics(), **self.assembler.diagnostics()}


def _without_sources(schema):
    """``schema`` with every field's ``source`` emptied (to compare a format-1 layout, which had none)."""
    from dataclasses import replace

    return replace(schema, groups=tuple(replace(g, fields=tuple(replace(f, source="") for f in g.fields))
                                        for g in schema.groups))


__all__ = ["PolicyController", "StepResult"]
