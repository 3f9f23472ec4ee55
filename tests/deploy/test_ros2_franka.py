"""The policy node with ``configs/deploy/fr3.yaml`` against a franka_ros2-faithful robot stand-in over real DDS.

The stand-in (:mod:`robot_rl.testing.franka_standin`, a separate process written from franka_ros2's and
crisp_controllers' sources) publishes ``current_pose`` at 500 Hz best effort in ``fr3_link0``, ``/joint_states``
with ``fr3_*`` names at 30 Hz, perception at 10 Hz, and follows ``/target_pose``. Pinned here:

- lifecycle transitions (configure, activate, deactivate, cleanup) answered over ``~/change_state``;
- commands at the policy's 20 Hz, inside fr3.yaml's workspace box, in ``fr3_link0``; every required input's age in
  the status;
- when the stand-in stops, the node holds (``stale_input``) within one control period past ``ee_pose``'s own age
  limit (``safety.max_input_age_by_input_s.ee_pose``) and commands nothing more;
- a robot clock 0.2 s ahead of the node's neither holds the arm nor goes unnoticed: the node keeps commanding and
  reports the offset in its status and as a WARN in its diagnostics.
"""

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.msg import State, Transition
from std_msgs.msg import String

from robot_rl.deploy.config import load_deploy_config
from robot_rl.testing.deploy_run import spawn, stop
from robot_rl.testing.ros_probe import RosProbe

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "tests" / "data" / "pushcube_vlajs_policy"
FR3 = ROOT / "configs" / "deploy" / "fr3.yaml"
CFG = load_deploy_config(FR3)
NODE = CFG.node_name
PERIOD_S = 1 / 20


def _standin(domain: int, log: Path, *extra: str) -> subprocess.Popen:
    # 500 Hz (the issue's floor; the benchmark runs franka_ros2's 1 kHz): a Python publisher at 1 kHz takes ~40% of a
    # core, and on 2 loaded cores its gaps then exceed the EE pose's age limit now and then
    return spawn(["--robot", "fr3", "--perception", "--rate-hz", "500", *extra], domain, log,
                 module="robot_rl.testing.franka_standin")


def _node(domain: int, log: Path, *extra: str) -> subprocess.Popen:
    return spawn(["deploy", "ros2", "--policy", str(POLICY), "--config", str(FR3), *extra], domain, log)


class Probe(RosProbe):
    def __init__(self, domain: int):
        super().__init__(domain, "fr3_probe", spin_step_s=0.005)
        self.status: list[tuple[float, dict]] = []
        self.targets: list[tuple[float, PoseStamped]] = []
        self.diagnostics: list[DiagnosticStatus] = []
        self.node.create_subscription(String, CFG.topics.status,
                                      lambda m: self.status.append((time.monotonic(), json.loads(m.data))), 50)
        self.node.create_subscription(PoseStamped, CFG.topics.equilibrium_pose,
                                      lambda m: self.targets.append((time.monotonic(), m)), 50)
        self.node.create_subscription(DiagnosticArray, CFG.topics.diagnostics,
                                      lambda m: self.diagnostics.append(m.status[0]), 10)

    def state(self) -> int:
        return super().lifecycle_state(NODE)

    def transition(self, transition_id: int) -> bool:
        return super().transition(NODE, transition_id)

    def timeout_detail(self) -> str:
        return f"last status {self.status[-1][1]}" if self.status else "no status yet"


def test_fr3_node_against_the_franka_ros2_standin(tmp_path):
    standin = _standin(64, tmp_path / "standin.log")
    node = _node(64, tmp_path / "node.log", "--no-autostart")
    p = Probe(64)
    try:
        assert p.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert p.transition(Transition.TRANSITION_CONFIGURE), (tmp_path / "node.log").read_text()[-2000:]
        assert p.state() == State.PRIMARY_STATE_INACTIVE
        p.wait_for(lambda: p.transition(Transition.TRANSITION_ACTIVATE), 10, "activation (needs an EE pose)")
        assert p.state() == State.PRIMARY_STATE_ACTIVE
        p.wait_for(lambda: len(p.targets) >= 60, 30, "60 commands on /target_pose")

        # 20 Hz, inside the box, in fr3_link0
        times = np.array([t for t, _ in p.targets[10:]])
        rate = (len(times) - 1) / (times[-1] - times[0])
        assert 18.0 <= rate <= 22.0, rate
        lo, hi = np.array(CFG.safety["workspace_min"]), np.array(CFG.safety["workspace_max"])
        for _, m in p.targets:
            pos = np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z])
            assert m.header.frame_id == "fr3_link0" and np.all(pos >= lo - 1e-9) and np.all(pos <= hi + 1e-9), pos
        published = [s for _, s in p.status if s["published"]]
        assert published and set(published[-1]["input_age_s"]) == {"joint_states", "ee_pose", "object_pose",
                                                                    "goal_pose"}
        # polled at the control tick: the 1 kHz EE pose is a few ms old at most
        assert np.median([s["input_age_s"]["ee_pose"] for s in published]) < 0.005
        assert all(s["hold"] != "stale_input" for _, s in p.status[5:])

        # the robot goes silent: a hold within one period past ee_pose's own limit, and no command after it
        stop(standin, sig=signal.SIGKILL)
        stopped = time.monotonic()
        p.spin_for(1.0)
        limit = CFG.safety["max_input_age_by_input_s"]["ee_pose"]
        stale = [t for t, s in p.status if t > stopped and s["hold"] == "stale_input"]
        assert stale, "no stale_input hold after the stand-in stopped"
        assert stale[0] - stopped <= limit + PERIOD_S + 0.03, stale[0] - stopped
        assert [t for t, _ in p.targets if t > stale[0]] == []

        assert p.transition(Transition.TRANSITION_DEACTIVATE)
        assert p.state() == State.PRIMARY_STATE_INACTIVE
        assert p.transition(Transition.TRANSITION_CLEANUP)
        assert p.state() == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        p.close()
        stop(node, standin)


def test_fr3_robot_clock_ahead_is_reported_and_does_not_hold(tmp_path):
    standin = _standin(65, tmp_path / "standin.log", "--clock-offset-s", "0.2")
    node = _node(65, tmp_path / "node.log")  # autostart: configure and activate
    p = Probe(65)
    try:
        p.wait_for(lambda: sum(s["published"] for _, s in p.status) >= 30, 40, "30 commands")
        recent = [s for _, s in p.status[-20:]]
        assert all(s["published"] for s in recent), [s["hold"] for s in recent]
        offset = recent[-1]["clock_offset_s"]
        assert set(offset) >= {"ee_pose", "joint_states"} and all(0.18 < v < 0.22 for v in offset.values()), offset
        p.wait_for(lambda: any("clock offset" in d.message for d in p.diagnostics), 5, "a clock-offset diagnostic")
        warn = [d for d in p.diagnostics if "clock offset" in d.message][-1]
        assert warn.level == DiagnosticStatus.WARN and "chrony" in warn.message
        values = {kv.key: kv.value for kv in warn.values}
        # every step took a future-stamped EE pose (the diagnostics come at 1 Hz: this one may be an early one)
        assert int(values["future_stamps.ee_pose"]) >= int(values["commands_total"]) > 0, values
        assert int(values["hold.stale_input"]) == 0
    finally:
        p.close()
        stop(node, standin)
