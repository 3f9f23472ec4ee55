"""A robot-side stand-in for a Franka arm under franka_ros2 Jazzy (v3.4.0) with crisp_controllers, over real DDS.

    python -m robot_rl.testing.franka_standin [--robot fr3|fer] [--rate-hz 1000] [--clock-offset-s 0]
                                             [--perception] [--duration-s S]

It is written from franka_ros2's and crisp_controllers' sources, not from robot_rl's deploy code (it imports
nothing of ``robot_rl.deploy``), so a test of the policy node against it checks our node against what the robot
side really publishes and subscribes:

- ``/franka_robot_state_broadcaster/current_pose`` (``geometry_msgs/PoseStamped``): best effort, depth 1
  (``rclcpp::QoS(1).best_effort()``, franka_robot_state_broadcaster.cpp since v3.3.0), ``frame_id`` the URDF root
  ``<robot>_link0`` (franka_robot_state.cpp), at ``--rate-hz`` (its ``convenience_publish_rate``, 1000 Hz);
- ``/joint_states`` (``sensor_msgs/JointState``): joint_state_publisher's merge of the arm and the gripper
  (franka.launch.py), reliable depth 10, 30 Hz (``joint_state_rate``), names ``<robot>_joint1..7``,
  ``<robot>_finger_joint1/2``, with position, velocity and effort, an empty ``frame_id``;
- it follows ``/target_pose`` (``PoseStamped``, reliable depth 1: crisp's ``CartesianController`` subscription,
  ``rclcpp::QoS(1)``; crisp ignores the ``frame_id``) with a first-order lag of ``--lag-s`` (the impedance and
  crisp's target filter), and the gripper width on ``/robot_rl/gripper_width`` (``std_msgs/Float64``, the relay to
  franka_gripper the README describes) with the gripper's ~0.1 m/s;
- with ``--perception``, a tabletop scene's ``/perception/object_pose`` and ``/perception/goal_pose`` at 10 Hz in
  the same frame (not franka_ros2's: what a perception stack would add for a PushCube policy).

``--clock-offset-s`` adds an offset to every header stamp (a robot PC whose clock is not synced with the node's).
At exit (SIGINT/SIGTERM or ``--duration-s``) it prints one JSON line: what it published and received, and the
targets' ``frame_id`` values.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time

import numpy as np

#: Topics, exactly as franka_ros2 Jazzy v3.4.0 and crisp_controllers name them (no namespace).
CURRENT_POSE = "/franka_robot_state_broadcaster/current_pose"
JOINT_STATES = "/joint_states"
TARGET_POSE = "/target_pose"
GRIPPER_WIDTH = "/robot_rl/gripper_width"
OBJECT_POSE = "/perception/object_pose"
GOAL_POSE = "/perception/goal_pose"
JOINT_STATE_RATE_HZ = 30.0
PERCEPTION_RATE_HZ = 10.0
GRIPPER_SPEED_M_S = 0.1
#: Where the arm starts: the TCP above the table in front of the robot, fingers down (base frame, m; wxyz).
HOME_POS = (0.5, 0.0, 0.2)
HOME_QUAT_WXYZ = (0.0, 1.0, 0.0, 0.0)
HOME_Q = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)


def _stamp(t_s: float):
    from builtin_interfaces.msg import Time

    sec = math.floor(t_s)
    return Time(sec=int(sec), nanosec=min(int(round((t_s - sec) * 1e9)), 999_999_999))


class FrankaStandIn:
    """The stand-in's state and ROS entities (see the module docstring).

    Args:
        robot: ``fr3`` or ``fer`` (franka_ros2's ``robot_type``: names ``<robot>_joint*``, ``<robot>_link0``).
        rate_hz: ``current_pose`` rate (Hz).
        clock_offset_s: added to every header stamp (s).
        lag_s: time constant with which the TCP follows the target (s).
        perception: also publish the object and goal poses.
    """

    def __init__(self, robot: str = "fr3", rate_hz: float = 1000.0, clock_offset_s: float = 0.0,
                 lag_s: float = 0.05, perception: bool = False):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64

        if robot not in ("fr3", "fer"):
            raise ValueError(f"robot must be fr3 or fer, got {robot!r}")
        self.robot, self.rate_hz, self.offset_s = robot, float(rate_hz), float(clock_offset_s)
        self.lag_s, self.perception = float(lag_s), bool(perception)
        self.base = f"{robot}_link0"
        self.joints = [f"{robot}_joint{i}" for i in range(1, 8)] + [f"{robot}_finger_joint{i}" for i in (1, 2)]
        rclpy.init()
        self.node = rclpy.create_node(f"{robot}_standin")
        best_effort = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.pub_pose = self.node.create_publisher(PoseStamped, CURRENT_POSE, best_effort)
        self.pub_joints = self.node.create_publisher(JointState, JOINT_STATES, 10)
        self.pub_object = self.node.create_publisher(PoseStamped, OBJECT_POSE, 10) if perception else None
        self.pub_goal = self.node.create_publisher(PoseStamped, GOAL_POSE, 10) if perception else None
        self.node.create_subscription(PoseStamped, TARGET_POSE, self._on_target, 1)
        self.node.create_subscription(Float64, GRIPPER_WIDTH, self._on_gripper, 10)
        self.pos = np.array(HOME_POS, dtype=np.float64)
        self.quat = np.array(HOME_QUAT_WXYZ, dtype=np.float64)
        self.width = 0.08
        self.target: tuple[np.ndarray, np.ndarray] | None = None
        self.target_width = self.width
        self.counts = {"current_pose": 0, "joint_states": 0, "perception": 0, "targets": 0, "gripper": 0}
        self.target_frames: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _on_target(self, msg) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        quat = np.array([q.w, q.x, q.y, q.z])
        if not np.isfinite(quat).all() or np.linalg.norm(quat) < 1e-6:  # crisp/franka discard a degenerate one
            return
        with self._lock:
            self.target = (np.array([p.x, p.y, p.z]), quat / np.linalg.norm(quat))
            self.counts["targets"] += 1
            self.target_frames.add(msg.header.frame_id)

    def _on_gripper(self, msg) -> None:
        with self._lock:
            self.target_width = float(np.clip(msg.data, 0.0, 0.08))
            self.counts["gripper"] += 1

    def _follow(self, dt: float) -> None:
        with self._lock:
            if self.target is not None:
                k = 1.0 - math.exp(-dt / self.lag_s)
                pos, quat = self.target
                self.pos = self.pos + k * (pos - self.pos)
                q = quat if float(np.dot(quat, self.quat)) >= 0 else -quat  # nlerp on the near hemisphere
                self.quat = self.quat + k * (q - self.quat)
                self.quat /= np.linalg.norm(self.quat)
            step = GRIPPER_SPEED_M_S * dt
            self.width += float(np.clip(self.target_width - self.width, -step, step))

    def _pose_msg(self, pos, quat, t_s: float):
        from geometry_msgs.msg import PoseStamped

        msg = PoseStamped()
        msg.header.frame_id = self.base
        msg.header.stamp = _stamp(t_s)
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in pos)
        o = msg.pose.orientation
        o.w, o.x, o.y, o.z = (float(v) for v in quat)
        return msg

    def _joint_msg(self, t_s: float):
        from sensor_msgs.msg import JointState

        msg = JointState()
        msg.header.stamp = _stamp(t_s)
        msg.name = list(self.joints)
        msg.position = [*HOME_Q, self.width / 2, self.width / 2]
        msg.velocity = [0.0] * len(self.joints)
        msg.effort = [0.0] * len(self.joints)
        return msg

    def run(self, duration_s: float | None = None) -> dict:
        """Publish until :meth:`stop` (or ``duration_s``); returns the counts (module docstring)."""
        from rclpy.executors import SingleThreadedExecutor

        executor = SingleThreadedExecutor()
        executor.add_node(self.node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        period = 1.0 / self.rate_hz
        t0 = time.monotonic()
        k, next_joints, next_perception = 0, t0, t0
        try:
            while not self._stop.is_set() and (duration_s is None or time.monotonic() - t0 < duration_s):
                k += 1
                now = time.monotonic()
                self._follow(period)
                stamp = time.time() + self.offset_s
                self.pub_pose.publish(self._pose_msg(self.pos, self.quat, stamp))
                self.counts["current_pose"] += 1
                if now >= next_joints:
                    next_joints += 1.0 / JOINT_STATE_RATE_HZ
                    self.pub_joints.publish(self._joint_msg(stamp))
                    self.counts["joint_states"] += 1
                if self.perception and now >= next_perception:
                    next_perception += 1.0 / PERCEPTION_RATE_HZ
                    self.pub_object.publish(self._pose_msg((0.6, 0.05, 0.02), (1.0, 0.0, 0.0, 0.0), stamp))
                    self.pub_goal.publish(self._pose_msg((0.75, -0.05, 0.001), (1.0, 0.0, 0.0, 0.0), stamp))
                    self.counts["perception"] += 1
                wait = t0 + k * period - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        finally:
            elapsed = time.monotonic() - t0
            executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
            import rclpy

            rclpy.try_shutdown()
        return {**self.counts, "seconds": round(elapsed, 3),
                "current_pose_hz": round(self.counts["current_pose"] / max(elapsed, 1e-9), 1),
                "target_frames": sorted(self.target_frames), "final_pos": [round(float(v), 5) for v in self.pos]}

    def stop(self, *_args) -> None:
        """End :meth:`run` (a signal handler)."""
        self._stop.set()


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", choices=("fr3", "fer"), default="fr3", help="franka_ros2 robot_type (names)")
    ap.add_argument("--rate-hz", type=float, default=1000.0, help="current_pose rate (Hz), franka_ros2's 1000")
    ap.add_argument("--clock-offset-s", type=float, default=0.0, help="added to every header stamp (s)")
    ap.add_argument("--lag-s", type=float, default=0.05, help="time constant of the target tracking (s)")
    ap.add_argument("--perception", action="store_true", help="also publish object and goal poses at 10 Hz")
    ap.add_argument("--duration-s", type=float, default=None, help="stop after this long (s); default: a signal")
    args = ap.parse_args(argv)
    standin = FrankaStandIn(args.robot, args.rate_hz, args.clock_offset_s, args.lag_s, args.perception)
    signal.signal(signal.SIGINT, standin.stop)
    signal.signal(signal.SIGTERM, standin.stop)
    print(json.dumps(standin.run(args.duration_s)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
