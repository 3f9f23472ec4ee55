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
from robot_rl.deploy.ros_io import INPUTS, ObservationAssembler, ObservationUnavailable
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
        ValueError: the sidecar does not match the ONNX file, the observation layout has a field
            the ROS inputs cannot provide, or its size does not match the policy's input (the
            message says which).
        FileNotFoundError: a file of the policy is missing.
    """

    def __init__(self, policy_dir: str | Path, cfg: DeployConfig):
        self.cfg = cfg
        self.policy = OnnxPolicy(policy_dir)
        side = self.policy.sidecar
        base = side["observation"].get("robot_base_pose_world", {})
        self.assembler = ObservationAssembler(
            side["observation"]["layout"], cfg.joint_names, cfg.frames.base,
            (base.get("position_m", (0, 0, 0)), base.get("quaternion_wxyz", (1, 0, 0, 0))),
        )
        if self.assembler.obs_dim != int(side["obs_dim"]):
            raise ValueError(f"the sidecar's observation layout sums to {self.assembler.obs_dim} values but the "
                             f"policy takes obs_dim={side['obs_dim']}")
        self.rate_hz = float(cfg.rate_hz or side["control_rate_hz"])
        self.period_s = 1.0 / self.rate_hz
        self.safety = SafetyFilter(cfg.safety_limits(), self.period_s, required_inputs=INPUTS)
        self.task = side["task"]["id"]

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
        if any(k not in stamps for k in INPUTS):
            return True
        return any(now_s - t > self.safety.limits.max_input_age_s for t in stamps.values())

    def diagnostics(self) -> dict:
        """Safety counters plus rejected-message counters (``rejected.<input: reason>``)."""
        out = dict(self.safety.diagnostics())
        out.update({f"rejected.{k}": v for k, v in self.assembler.rejected.items()})
        out["rejected_total"] = sum(self.assembler.rejected.values())
        out["last_rejection"] = self.assembler.last_rejection
        return out


__all__ = ["PolicyController", "StepResult"]
