"""``robot-rl deploy sim-bridge``: a ManiSkill env behind the same ROS 2 topics as a real Franka.

The bridge steps one CPU ManiSkill env at the task's control rate (20 Hz) in wall-clock time. Each
tick it turns the latest command into a ``pd_ee_delta_pose`` action, steps, and publishes what
franka_ros2 and a perception stack would:

- ``sensor_msgs/JointState`` (7 arm joints in rad, 2 finger joints in m, velocities);
- the TCP pose and, as a perception stack would, the poses of the task's object, goal, tool and hole
  (those it has) as ``geometry_msgs/PoseStamped`` in the robot base frame (``panda_link0``; ManiSkill's
  world has the Panda base at ``(-0.615, 0, 0)``, so every pose is moved into the base frame here, as a real
  robot reports it), and their sizes as ``geometry_msgs/Vector3Stamped`` half extents (m);
- one ``std_msgs/String`` JSON line per finished episode on ``/robot_rl/sim/episode``
  (``{"episode", "seed", "success", "steps"}``), for tests and benchmarks and as the policy node's episode-reset
  input (``topics.episode``); the next episode's first state is published one tick later, so the node has reset
  its teacher group before it steps on it;
- with ``camera_rate_hz > 0`` (``--camera-rate-hz``), the teacher camera (the view training's teacher gets,
  :func:`robot_rl.envs.common.render_teacher_images`, goal region shown) as ``sensor_msgs/Image`` ``rgb8`` on
  ``topics.image`` at about that rate (every ``round(20 / rate)``-th tick), stamped with the sim time of the
  rendered state, the same stamp as that tick's poses.

Commands: an EE target ``PoseStamped`` (``equilibrium_pose``) becomes the delta from the current
TCP pose over one step (position / 0.1 m, rotation ``log(R_target R^T)`` through the controller's
sign), a ``TwistStamped`` becomes ``twist * period``; a gripper width (m) maps linearly from
[0, 0.08] m onto the gripper command [-1, 1] (:data:`GRIPPER_WIDTH_RANGE_M`). A command is used for
one tick; with none, the last pose target is held (as an impedance controller does). The first
episode starts when the first command arrives (until then the bridge only publishes the initial
state), so a policy node that starts later does not lose it. ``~/pause`` (``std_srvs/SetBool``)
stops stepping and publishing, which looks like a dead robot driver to the policy node (its
watchdog must hold).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from robot_rl.deploy.config import DeployConfig
from robot_rl.deploy.ros_io import (
    ENTITY_POSE_INPUTS,
    ENTITY_SIZE_INPUTS,
    joint_state_msg,
    pose_from_msg,
    pose_msg,
    size_msg,
)
from robot_rl.geometry import (
    POS_SCALE_M,
    POS_SLICE,
    ROT_SLICE,
    matrix_to_euler_xyz,
    pose_to_frame,
    quat_to_matrix,
    rotation_delta_to_command,
    rotvec_to_matrix,
)

EPISODE_TOPIC = "/robot_rl/sim/episode"


def state_in_base(env) -> dict[str, Any]:
    """What a real robot and perception would report, from the simulator (single CPU env).

    Args:
        env: the unwrapped ManiSkill env of a robot_rl task (``make_env(...).unwrapped``).

    Returns:
        ``{"poses": {entity: (pos (3,) m, quat wxyz (4,))}, "sizes": {entity: (3,) half extents m},
        "qpos": (9,), "qvel": (9,)}``, float64, poses in the robot base frame; the entities of the task's
        :meth:`robot_rl.envs.RRLTaskMixin.perceived_scene` (``tcp``, ``object``, ``goal`` and, where the task
        has them, ``tool`` and ``hole``).
    """
    from robot_rl.envs.obs_layout import ROBOT_BASE_POS_WORLD, ROBOT_BASE_QUAT_WORLD

    scene = env.perceived_scene()
    # The nominal base pose (the sidecar's), not the simulated one: PhysX leaves the fixed base
    # ~1e-8 m off (-0.615, 0, 0), and the policy node moves poses back with the nominal one.
    base_p = np.asarray(ROBOT_BASE_POS_WORLD, dtype=np.float64)
    base_q = np.asarray(ROBOT_BASE_QUAT_WORLD, dtype=np.float64)
    poses = {k: pose_to_frame(v[:3].astype(np.float64), v[3:].astype(np.float64), base_p, base_q)
             for k, v in scene["poses"].items()}
    return {
        "poses": poses,
        "sizes": {k: v.astype(np.float64) for k, v in scene["sizes"].items()},
        "qpos": env.agent.robot.get_qpos()[0].cpu().numpy().astype(np.float64),
        "qvel": env.agent.robot.get_qvel()[0].cpu().numpy().astype(np.float64),
    }


def pose_target_to_action(target_pos: np.ndarray, target_quat: np.ndarray, tcp_pos: np.ndarray,
                          tcp_quat: np.ndarray) -> np.ndarray:
    """``(6,)`` normalized pos/rot command moving the TCP to a target in one step (base frame).

    Position: ``(target - tcp) / 0.1 m``; rotation: the base-frame error ``R_target R_tcp^T`` as
    intrinsic XYZ Euler angles, through the controller's sign (a +1 command turns by -0.1 rad,
    ManiSkill issue #1469). Clipped to [-1, 1] as the controller would.
    """
    out = np.zeros(6)
    out[0:3] = (np.asarray(target_pos) - np.asarray(tcp_pos)) / POS_SCALE_M
    err = quat_to_matrix(np.asarray(target_quat)) @ quat_to_matrix(np.asarray(tcp_quat)).T
    out[3:6] = rotation_delta_to_command(matrix_to_euler_xyz(err))
    return np.clip(out, -1.0, 1.0)


def twist_to_action(twist: np.ndarray, period_s: float) -> np.ndarray:
    """``(6,)`` normalized pos/rot command applying a twist for one period.

    Args:
        twist: ``[vx, vy, vz, wx, wy, wz]`` in m/s and rad/s, base frame (MoveIt Servo's
            ``delta_twist_cmds`` convention; the angular part is a rotation vector rate).
        period_s: the control period (s).

    Returns:
        position ``v * period / 0.1 m``; rotation: ``exp(w * period)`` as intrinsic XYZ Euler
        angles through the controller's sign. Clipped to [-1, 1].
    """
    twist = np.asarray(twist, dtype=np.float64)
    out = np.zeros(6)
    out[POS_SLICE] = twist[0:3] * period_s / POS_SCALE_M
    out[ROT_SLICE] = rotation_delta_to_command(matrix_to_euler_xyz(rotvec_to_matrix(twist[3:6] * period_s)))
    return np.clip(out, -1.0, 1.0)


#: Gripper width (m, both fingers) of a fully closed and a fully open command, as on a real Panda
#: hand (franka_gripper: 0 .. 0.08 m). The safety filter maps [-1, 1] onto its own width limits;
#: with the sim config's [0, 0.08] the round trip is exact, and width 0 is the sim's "close" (-1).
GRIPPER_WIDTH_RANGE_M = (0.0, 0.08)


def width_to_gripper_action(width_m: float, width_range: tuple[float, float] = GRIPPER_WIDTH_RANGE_M) -> float:
    """Gripper width (m, both fingers) -> normalized gripper command in [-1 (closed), 1 (open)]."""
    lo, hi = width_range
    return float(np.clip(2.0 * (width_m - lo) / (hi - lo) - 1.0, -1.0, 1.0))


class SimBridge:
    """The bridge node. Build it inside an initialized rclpy context, then spin it.

    Args:
        task: task id (``robot-rl tasks``).
        cfg: topics, frames, QoS and joint names (the policy node's config).
        seed: seed of the first episode; episode ``k`` uses ``seed + k`` (as
            :func:`robot_rl.deploy.evaluate_direct` does), so ROS and direct runs see the same scenes.
        episodes: stop stepping after this many episodes (``None``: forever).
        camera_rate_hz: publish the teacher camera on ``topics.image`` at about this rate (Hz; 0: off).
        camera_size: ``(H, W)`` pixels of the camera image.

    Raises:
        ValueError: a negative camera rate, or a camera rate with ``topics.image`` not set.
    """

    def __init__(self, task: str, cfg: DeployConfig, seed: int = 0, episodes: int | None = None,
                 camera_rate_hz: float = 0.0, camera_size: tuple[int, int] = (224, 224)):
        from geometry_msgs.msg import PoseStamped, TwistStamped, Vector3Stamped
        from rclpy.node import Node
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64, String
        from std_srvs.srv import SetBool

        from robot_rl.envs import make_env

        if camera_rate_hz < 0:
            raise ValueError(f"camera_rate_hz must be >= 0, got {camera_rate_hz}")
        if camera_rate_hz > 0 and not cfg.topics.image:
            raise ValueError("a camera rate needs topics.image (the image topic) in the deploy config")
        self.cfg, self.seed, self.episodes = cfg, int(seed), episodes
        self.env = make_env(task, seed=None, teacher_image_size=tuple(int(v) for v in camera_size))
        u = self.env.unwrapped
        self.period_s = 1.0 / float(u.control_freq)
        self.camera_every = max(1, round(float(u.control_freq) / camera_rate_hz)) if camera_rate_hz > 0 else 0
        self._published = 0  # states published so far (the camera renders every camera_every-th)
        self.node = Node("robot_rl_sim_bridge")
        sensors, commands = cfg.qos.sensors.profile(), cfg.qos.commands.profile()
        t = cfg.topics
        self.pub_joints = self.node.create_publisher(JointState, t.joint_states, sensors)
        # one publisher per entity the task has and the config names a topic for
        scene = state_in_base(u)
        self.pub_poses = {k: self.node.create_publisher(PoseStamped, getattr(t, ENTITY_POSE_INPUTS[k]), sensors)
                          for k in scene["poses"] if getattr(t, ENTITY_POSE_INPUTS[k], None)}
        self.pub_sizes = {k: self.node.create_publisher(Vector3Stamped, getattr(t, ENTITY_SIZE_INPUTS[k]), sensors)
                          for k in scene["sizes"] if getattr(t, ENTITY_SIZE_INPUTS.get(k, ""), None)}
        self.pub_episode = self.node.create_publisher(String, EPISODE_TOPIC, 10)
        self.pub_image = self.node.create_publisher(Image, t.image, sensors) if self.camera_every else None
        self.images_published = 0
        if t.equilibrium_pose:
            self.node.create_subscription(PoseStamped, t.equilibrium_pose, self._on_pose_target, commands)
        if t.twist:
            self.node.create_subscription(TwistStamped, t.twist, self._on_twist, commands)
        if t.gripper:
            self.node.create_subscription(Float64, t.gripper, self._on_gripper, commands)
        self.node.create_service(SetBool, "~/pause", self._on_pause)

        self.paused = False
        self.pose_target: tuple[np.ndarray, np.ndarray] | None = None
        self.twist: np.ndarray | None = None
        self.gripper = 1.0  # open
        self.episode = 0
        self.steps = 0
        self.commands_received = 0
        self.results: list[dict] = []
        self._publish_next = False  # an episode has just started: publish its first state at the next tick
        self._reset()
        self._publish()
        self.timer = self.node.create_timer(self.period_s, self._tick)

    # -- commands --------------------------------------------------------------------------------

    def _on_pose_target(self, msg) -> None:
        if msg.header.frame_id != self.cfg.frames.base:
            self.node.get_logger().warning(f"ignoring a target in frame {msg.header.frame_id!r}")
            return
        self.pose_target = pose_from_msg(msg)
        self.commands_received += 1

    def _on_twist(self, msg) -> None:
        lin, ang = msg.twist.linear, msg.twist.angular
        self.twist = np.array([lin.x, lin.y, lin.z, ang.x, ang.y, ang.z])
        self.commands_received += 1

    def _on_gripper(self, msg) -> None:
        self.gripper = width_to_gripper_action(msg.data)

    def _on_pause(self, request, response):
        self.paused = bool(request.data)
        response.success, response.message = True, "paused" if self.paused else "running"
        return response

    # -- stepping --------------------------------------------------------------------------------

    def _action(self, tcp: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        action = np.zeros(7, dtype=np.float32)
        if self.twist is not None:
            action[0:6] = twist_to_action(self.twist, self.period_s)
            self.twist = None
        elif self.pose_target is not None:
            action[0:6] = pose_target_to_action(*self.pose_target, *tcp)
        action[6] = self.gripper
        return np.clip(action, -1.0, 1.0)

    def _reset(self) -> None:
        self.env.reset(seed=self.seed + self.episode)
        self.steps = 0
        self.pose_target = None  # a new episode: hold until the policy commands
        self.twist = None
        self.gripper = 1.0

    def _publish(self) -> None:
        st = state_in_base(self.env.unwrapped)
        now = self.node.get_clock().now().nanoseconds * 1e-9  # measurement time: the state has just been read
        base = self.cfg.frames.base
        # The EE pose goes last: a policy node with `trigger: input` steps when it arrives, and by
        # then the joint states, objects and sizes of the same sim step are in.
        self.pub_joints.publish(joint_state_msg(self.cfg.joint_names, st["qpos"], st["qvel"], now))
        for k, pub in self.pub_sizes.items():
            pub.publish(size_msg(st["sizes"][k], k, now))
        for k, pub in self.pub_poses.items():
            if k != "tcp":
                pub.publish(pose_msg(*st["poses"][k], base, now))
        self.pub_poses["tcp"].publish(pose_msg(*st["poses"]["tcp"], base, now))
        if self.pub_image is not None and self._published % self.camera_every == 0:
            # after the poses, like a camera's latency; stamped with the state's time (the same stamp)
            from robot_rl.deploy.ros_io import image_msg
            from robot_rl.envs.common import render_teacher_images

            rgb = render_teacher_images(self.env.unwrapped)[0]
            self.pub_image.publish(image_msg(rgb, "teacher_camera", now))
            self.images_published += 1
        self._published += 1

    def done(self) -> bool:
        """Whether the requested number of ``episodes`` has finished (never, when it is ``None``)."""
        return self.episodes is not None and self.episode >= self.episodes

    def _tick(self) -> None:
        if self.paused or self.done():
            return
        if self.commands_received == 0 or self._publish_next:  # wait for the policy / a new episode's first state
            self._publish_next = False
            self._publish()
            return
        st = state_in_base(self.env.unwrapped)
        _, _, terminated, truncated, info = self.env.step(self._action(st["poses"]["tcp"]))
        self.steps += 1
        if terminated or truncated:
            from std_msgs.msg import String

            result = {"episode": self.episode, "seed": self.seed + self.episode,
                      "success": bool(info.get("success", False)), "steps": self.steps}
            self.results.append(result)
            self.pub_episode.publish(String(data=json.dumps(result)))
            self.episode += 1
            if self.done():
                return
            self._reset()
            self._publish_next = True  # published next tick: the node handles the episode message first
        else:
            self._publish()

    def destroy(self) -> None:
        """Stop the control timer, destroy the ROS node and close the env."""
        self.timer.cancel()
        self.node.destroy_node()
        self.env.close()


def run_sim_bridge(task: str, cfg: DeployConfig, seed: int = 0, episodes: int | None = None,
                   camera_rate_hz: float = 0.0, camera_size: tuple[int, int] = (224, 224)) -> list[dict]:
    """Run the bridge until interrupted or ``episodes`` are done; returns the episode results (arguments as
    :class:`SimBridge`).
    """
    import rclpy

    rclpy.init()
    bridge = SimBridge(task, cfg, seed, episodes, camera_rate_hz, camera_size)
    try:
        while rclpy.ok() and not bridge.done():
            rclpy.spin_once(bridge.node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        bridge.destroy()
        rclpy.try_shutdown()
    return bridge.results


class OnnxActor:
    """An exported ONNX policy as a :class:`robot_rl.rollout.Actor` (raw observation in: it normalizes itself)."""

    def __init__(self, policy):
        self.policy = policy

    def reset(self) -> None:
        """Nothing to reset: the exported policy is stateless."""

    def act(self, obs: np.ndarray, view) -> np.ndarray:
        """``(1, D)`` raw observation -> ``(1, 7)`` deterministic action in ``[-1, 1]``; ``view`` is unused."""
        return self.policy(obs)


def evaluate_direct(policy_dir, task: str, seed: int = 0, episodes: int = 10, delay_steps: int | None = None,
                    details: dict | None = None) -> list[dict]:
    """Run an exported policy on the simulator's own observations, no ROS: the reference for the bridge.

    The project's one rollout loop (:func:`robot_rl.rollout.rollout`): episode ``k`` is reset with seed
    ``seed + k``, as :class:`SimBridge` does. A policy whose observation has the ``teacher`` group (the delayed
    interface) or the ``memory`` group (the scratchpad, filled from the teacher's notes) is run with the scripted
    teacher, its answers delivered ``delay_steps`` env steps after the
    observation they were computed from, queried whenever none is in flight and the last answer has played out
    over the period ``D`` of the sidecar's ``teacher`` section: the trainer's evaluation guidance
    (:func:`robot_rl.trainer.evaluate_with_teacher`), which is where the scripted teacher is built (this package
    imports no teacher code).

    Args:
        policy_dir: the export directory.
        task: the task id (the policy's).
        seed: seed of episode 0.
        episodes: number of episodes.
        delay_steps: env steps of teacher delay (required for, and only for, a policy with a teacher or memory
            group).
        details: if given, filled with the guidance metrics of a teacher-group run (``interface/*``, ...).

    Returns:
        one ``{"episode", "seed", "success", "steps"}`` per episode.

    Raises:
        ValueError: the policy is for another task; ``delay_steps`` missing for a teacher- or memory-group policy
            (or given for a state-only one); such a sidecar without its ``teacher`` (or ``memory``) section.
    """
    from robot_rl.deploy.policy import OnnxPolicy
    from robot_rl.rollout import rollout

    policy = OnnxPolicy(policy_dir, expected_task=task)
    groups = policy.schema.group_names
    if groups == ("state",):
        if delay_steps is not None:
            raise ValueError("delay_steps is for a policy with a teacher group; this one observes the state only")
        from robot_rl.envs import make_vec_env

        venv = make_vec_env(task, num_envs=1, seed=seed, in_process=True)
        try:
            result = rollout(venv, OnnxActor(policy), episodes, seed)
        finally:
            venv.close()
    elif groups in (("state", "teacher"), ("state", "memory"), ("state", "teacher", "memory")):
        from robot_rl.interface.delayed import features_of_group
        from robot_rl.memory import MemorySpec
        from robot_rl.trainer import evaluate_with_teacher

        if delay_steps is None:
            raise ValueError(f"the policy observes {policy.schema.describe_sizes()}: give delay_steps, the teacher's "
                             "delay in env steps")
        section = "teacher" if "teacher" in groups else "memory"
        side = policy.sidecar.get(section)
        if side is None:
            raise ValueError(f"{policy.dir}/policy.json has no {section} section (exported before it was written): "
                             "re-export the run")
        memory = None
        if "memory" in groups:
            memory = MemorySpec.from_group(policy.schema.group("memory"),
                                           int(policy.sidecar.get("memory", {}).get("max_note_chars", 1024)))
        features = features_of_group(policy.schema.group("teacher")) if "teacher" in groups else []
        result, metrics = evaluate_with_teacher(
            OnnxActor(policy), task, features, int(side["control_period_steps"]), int(delay_steps), episodes, seed,
            max_episode_steps=policy.sidecar["task"].get("max_episode_steps"), memory=memory)
        if details is not None:
            details.update(metrics)
    else:
        raise ValueError(f"evaluate_direct feeds the simulator's state and the teacher and memory groups only; the "
                         f"policy observes {policy.schema.describe_sizes()}")
    return [{"episode": k, "seed": e.seed, "success": e.success, "steps": e.length}
            for k, e in enumerate(result.episodes)]
