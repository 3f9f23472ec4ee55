"""A policy that follows the teacher's hint, through ROS 2 with a served teacher: bridge, node and
``robot-rl teacher serve`` (scripted backend, loopback HTTP) as separate processes over real DDS, own domain ids.

- PushCube-HiddenGoal (the goal is not in the policy's state: only the hint leads there) succeeds through ROS 2
  within 10 points of direct evaluation of the same ONNX policy with the scripted teacher's answers delivered as
  late as they were measured over ROS (the median of the recorded delays, in control steps); the bag replays to
  the same commands, the teacher answers fed back at the steps that handled them;
- the teacher server is killed mid-run: the node keeps commanding (the watchdog guards the state only), the status
  shows the hint ageing and the failures counted, the log says so once; restarted, the answers resume. The bridge
  publishes its teacher camera meanwhile, each image stamped as the poses of its tick.

The policy is a linear hint follower exported by the real export path (``robot_rl.testing.hint_policy``): the suite
cannot train one.
"""

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image
from std_msgs.msg import String

from robot_rl.deploy.config import load_deploy_config
from robot_rl.testing.deploy_run import SIM_CONFIG, run_with_teacher, serve_teacher, spawn, stop, wait_healthy
from robot_rl.testing.hint_policy import HINT_TASK
from robot_rl.testing.ros_probe import RosProbe

pytestmark = pytest.mark.slow

CFG = load_deploy_config(SIM_CONFIG)
#: The hint is spread over 6 steps (D = 4 plus the 1-2 steps an answer takes over loopback): direct evaluation
#: succeeds 20/20 at delays 0, 1 and 2 (it degrades beyond: 9/20 at 3), so the comparison is not at a cliff.
HOLD_STEPS = 6.0


def _free_port() -> int:
    from robot_rl.teachers.remote import free_port

    return free_port()


@pytest.fixture(scope="module")
def hint_policy(tmp_path_factory) -> Path:
    from robot_rl.deploy.export import export_policy
    from robot_rl.testing.hint_policy import make_hint_following_run

    return export_policy(make_hint_following_run(tmp_path_factory.mktemp("runs"), hold_steps=HOLD_STEPS).path)


def test_hidden_goal_through_ros2_with_a_served_teacher_matches_direct_evaluation_and_replays(hint_policy, tmp_path):
    from robot_rl.deploy.record import replay
    from robot_rl.deploy.sim_bridge import evaluate_direct

    episodes = 10
    run = run_with_teacher(hint_policy, HINT_TASK, episodes, tmp_path, domain=65, port=_free_port(), latency_ms=0)
    assert len(run.episodes) == episodes, run.logs["bridge"].read_text()[-2000:]
    outcomes = run.outcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("invalid", 0) == 0, outcomes
    assert outcomes["delivered"] >= 3 * episodes, outcomes  # a fresh hint every D + delay steps
    assert outcomes.get("dropped_reset", 0) <= episodes  # at most the query in flight when an episode ends
    delays = np.asarray(run.delay_steps)
    median = int(np.median(delays))
    direct = evaluate_direct(hint_policy, HINT_TASK, seed=0, episodes=episodes, delay_steps=median)
    direct_success = float(np.mean([r["success"] for r in direct]))
    print(f"success through ROS 2: {run.success_rate:.2f}, direct at {median} steps: {direct_success:.2f}; "
          f"delays (steps) {np.bincount(delays).tolist()}, delay p50/p90/max {np.percentile(run.delay_s, 50):.3f}/"
          f"{np.percentile(run.delay_s, 90):.3f}/{max(run.delay_s):.3f} s; hint age p50/p90/max "
          f"{np.percentile(run.ages_s, 50):.3f}/{np.percentile(run.ages_s, 90):.3f}/{max(run.ages_s):.3f} s; "
          f"{outcomes}")
    assert 1 <= median <= 2  # loopback with no added latency: the next step or the one after
    assert direct_success >= 0.8  # the policy solves the hidden-goal task with hints in time: the comparison means it
    assert abs(run.success_rate - direct_success) <= 0.10

    cfg = load_deploy_config(SIM_CONFIG, ["teacher.url=http://127.0.0.1:9"])  # replay: no server needed
    report = replay(run.bag, hint_policy, cfg)
    print(report.summary())
    assert report.n_teacher_recorded == len(run.answers) and report.n_compared > 5 * episodes
    assert report.ok(), report.summary()


class _Probe(RosProbe):
    def __init__(self, domain: int):
        super().__init__(domain, "teacher_probe")
        self.status: list[tuple[float, dict]] = []
        self.images: list[tuple[float, str, int, int]] = []
        self.pose_stamps: set[float] = set()
        qos = CFG.qos.sensors.profile()
        self.node.create_subscription(String, CFG.topics.status,
                                      lambda m: self.status.append((time.monotonic(), json.loads(m.data))), 50)
        self.node.create_subscription(Image, CFG.topics.image, self._on_image, qos)
        self.node.create_subscription(PoseStamped, CFG.topics.ee_pose, self._on_pose, qos)
        self.diagnostics: list[dict] = []
        self.node.create_subscription(DiagnosticArray, CFG.topics.diagnostics, lambda m: self.diagnostics.append(
            {kv.key: kv.value for kv in m.status[0].values}), 10)

    def _on_image(self, m):
        self.images.append((m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, m.encoding, m.height, m.width))

    def _on_pose(self, m):
        self.pose_stamps.add(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)

    def teacher(self, after: float = -np.inf) -> list[dict]:
        return [s["teacher"] for t, s in self.status if t > after and s.get("teacher")]



def test_the_teacher_dies_mid_run_the_node_keeps_commanding_and_answers_resume(hint_policy, tmp_path):
    domain, port = 66, _free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve_teacher(port, tmp_path / "server.log")
    node = bridge = None
    probe = _Probe(domain)
    try:
        wait_healthy(url, proc=server)
        node = spawn(["deploy", "ros2", "--policy", str(hint_policy), "--config", str(SIM_CONFIG),
                      f"teacher.url={url}"], domain, tmp_path / "node.log")
        bridge = spawn(["deploy", "sim-bridge", "--task", HINT_TASK, "--config", str(SIM_CONFIG), "--seed", "0",
                        "--camera-rate-hz", "4", "--camera-size", "48", "64"], domain, tmp_path / "bridge.log")
        p = probe
        p.wait_for(lambda: (t := p.teacher()) and t[-1]["answers"] >= 3, 120, "three teacher answers")
        answers_before = p.teacher()[-1]["answers"]
        stop(server, sig=signal.SIGKILL)
        killed = time.monotonic()
        p.spin_for(3.0)
        after = [(t, s) for t, s in p.status if t > killed]
        assert len(after) > 30  # the node steps on: ~20 Hz
        assert all(s["hold"] != "stale_input" for _, s in after)  # the dead teacher never trips the watchdog
        assert sum(s["published"] for _, s in after) >= 0.9 * len(after)  # it keeps commanding (hint or none)
        teach = [s["teacher"] for _, s in after]
        assert teach[-1]["failures"] >= 1 and teach[-1]["answers"] == answers_before
        ages = [t["age_s"] for t in teach if t["age_s"] is not None]
        # the hint ages while the teacher is away (until the episode ends and the group resets)
        assert ages and max(ages) > 0.6, ages[-5:]
        failures_3s = teach[-1]["failures"]
        assert failures_3s <= 6  # back-off 0.5, 1, 2, 2 s: a handful of attempts, not one per step

        restarted = time.monotonic()
        server = serve_teacher(port, tmp_path / "server2.log")
        wait_healthy(url, proc=server)
        back = time.monotonic()
        p.wait_for(lambda: (t := p.teacher(after=back)) and t[-1]["answers"] > answers_before + 1, 30,
                   "answers after the teacher server came back")
        resumed = next(t for t, s in p.status
                       if t > restarted and s.get("teacher", {}).get("answers", 0) > answers_before)
        print(f"teacher killed: {len(after)} steps in 3 s, {sum(s['published'] for _, s in after)} commands, "
              f"{failures_3s} failed queries, hint age up to {max(ages):.2f} s; restarted: up after "
              f"{back - restarted:.1f} s, answers again after {resumed - restarted:.1f} s; {len(p.images)} images")
        # the camera: rgb8 images of the configured size, stamped as the EE pose of their tick
        assert len(p.images) >= 3
        assert {(e, h, w) for _, e, h, w in p.images} == {("rgb8", 48, 64)}
        # (the probe's best-effort, depth-1 subscription may miss a pose on a loaded machine: most must match)
        assert sum(s in p.pose_stamps for s, *_ in p.images) >= 0.8 * len(p.images)
        # the node keeps the images for a teacher that reads them; its diagnostics count the teacher's faults
        diag = p.wait_for(lambda: p.diagnostics and p.diagnostics[-1], 5, "diagnostics")
        assert int(diag["teacher.images"]) >= 3 and diag["rejected.image"] == "0", diag
        assert int(diag["teacher.failures"]) >= failures_3s and int(diag["hold.stale_input"]) == 0, diag
    finally:
        probe.close()
        stop(*[x for x in (bridge, node, server) if x is not None])
    log = (tmp_path / "node.log").read_text()
    assert log.count("teacher: ") - log.count("teacher: http") - log.count("teacher server:") <= 4, log[-3000:]
    assert "answering again" in log
