"""The ROS 2 policy node's configuration (``configs/deploy/*.yaml``), validated by pydantic.

Topic names, frames, QoS and safety limits all come from YAML; an unknown key or a bad value is a
:class:`~robot_rl.config.ConfigError` that names the key (the training config's machinery).
The defaults are the simulator's names (the Panda's ``panda_*`` joints and ``panda_link0``, as the sim bridge
publishes them) on franka_ros2's topic for the EE pose. A real arm's names come from its config:
``configs/deploy/fr3.yaml`` (an FR3) and ``configs/deploy/fer.yaml`` (a Panda as franka_ros2's ``fer``), checked
against franka_ros2 Jazzy v3.4.0, map the simulator's joints to the robot's (``joint_map``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: The simulator's joints in the policy's ``qpos``/``qvel`` order (ManiSkill 3.0.1's Panda: its active joints).
PANDA_JOINT_NAMES = tuple(f"panda_joint{i}" for i in range(1, 8)) + ("panda_finger_joint1", "panda_finger_joint2")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QoSConfig(_Section):
    """One DDS QoS profile (KEEP_LAST history of ``depth`` messages)."""

    reliability: Literal["reliable", "best_effort"] = Field("reliable", description="DDS reliability")
    durability: Literal["volatile", "transient_local"] = Field("volatile", description="DDS durability")
    depth: int = Field(1, ge=1, description="history depth (keep last N)")

    def profile(self):
        """The ``rclpy.qos.QoSProfile`` (imports rclpy)."""
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=self.depth,
            reliability=(ReliabilityPolicy.RELIABLE if self.reliability == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT),
            durability=(DurabilityPolicy.VOLATILE if self.durability == "volatile"
                        else DurabilityPolicy.TRANSIENT_LOCAL),
        )


class TopicsConfig(_Section):
    """The node's ROS topic names; ``in:`` topics are subscribed, ``out:`` ones published (null: off)."""

    joint_states: str = Field("/joint_states", description="in: sensor_msgs/JointState")
    ee_pose: str = Field("/franka_robot_state_broadcaster/current_pose",
                         description="in: geometry_msgs/PoseStamped, TCP in the base frame")
    object_pose: str | None = Field("/perception/object_pose",
                                    description="in: geometry_msgs/PoseStamped of the manipulated object")
    goal_pose: str | None = Field("/perception/goal_pose",
                                  description="in: geometry_msgs/PoseStamped of the goal (position; "
                                              "orientation where the task has one)")
    tool_pose: str | None = Field("/perception/tool_pose",
                                  description="in: geometry_msgs/PoseStamped of a tool the gripper uses "
                                              "on the object (PokeCube's peg)")
    hole_pose: str | None = Field("/perception/hole_pose",
                                  description="in: geometry_msgs/PoseStamped of a hole (PegInsertionSide's box hole)")
    object_size: str | None = Field("/perception/object_size",
                                    description="in: geometry_msgs/Vector3Stamped, the object's half "
                                                "extents along its own axes (m)")
    tool_size: str | None = Field("/perception/tool_size",
                                  description="in: geometry_msgs/Vector3Stamped, the tool's half extents (m)")
    hole_size: str | None = Field("/perception/hole_size",
                                  description="in: geometry_msgs/Vector3Stamped, the hole's half extents (m)")
    equilibrium_pose: str | None = Field("/cartesian_impedance_controller/equilibrium_pose",
                                         description="out: geometry_msgs/PoseStamped EE target (null: do not publish)")
    twist: str | None = Field(None, description="out: geometry_msgs/TwistStamped for MoveIt Servo, "
                                                "e.g. /servo_node/delta_twist_cmds (null: off)")
    gripper: str | None = Field("/robot_rl/gripper_width",
                                description="out: std_msgs/Float64 gripper width (m), relayed to franka_gripper")
    status: str = Field("/robot_rl/status", description="out: std_msgs/String, JSON status every control period")
    diagnostics: str = Field("/diagnostics", description="out: diagnostic_msgs/DiagnosticArray (1 Hz)")
    estop: str = Field("/robot_rl/estop",
                       description="in: std_msgs/Bool, true = e-stop (also the ~/estop Trigger service)")
    image: str | None = Field(None, description="in: sensor_msgs/Image rgb8, the teacher's camera (sent to a served "
                                                "teacher that reads images; null: no camera)")
    episode: str | None = Field(None, description="in: std_msgs/String, any message = a new episode starts (the "
                                                  "sim bridge's /robot_rl/sim/episode): the teacher group is reset; "
                                                  "null on a real robot, where activate starts an episode")
    teacher_answers: str = Field("/robot_rl/teacher_answers",
                                 description="out: std_msgs/String, one JSON line per teacher answer the node got, "
                                             "with its scratchpad note (recorded with --record; replay feeds them "
                                             "back)")
    reset_episode: str | None = Field("/robot_rl/reset_episode",
                                      description="in: std_msgs/Empty, a new episode or task starts: the scratchpad "
                                                  "and the teacher's hint are cleared, answers in flight dropped "
                                                  "(also the ~/reset_episode Trigger service; null: service only)")
    observation: str | None = Field(None, description="out: std_msgs/Float32MultiArray, the observation the policy "
                                                      "was given at each step (the sidecar's schema order; for "
                                                      "debugging and recordings; null: off)")


class FramesConfig(_Section):
    """TF frame names the node checks its inputs and outputs against."""

    base: str = Field("panda_link0", description="frame_id every input pose and output target must carry (robot base)")


class QoSSection(_Section):
    """QoS of the node's inputs (sensors) and outputs (commands)."""

    sensors: QoSConfig = Field(default_factory=lambda: QoSConfig(reliability="best_effort", depth=1),
                               description="QoS of the inputs (franka_ros2 publishes current_pose best effort)")
    commands: QoSConfig = Field(default_factory=QoSConfig, description="QoS of the outputs")


class TeacherConfig(_Section):
    """``teacher``: the served teacher a policy with a ``teacher`` observation group is given hints by
    (``robot-rl teacher serve``; the node queries it asynchronously, :mod:`robot_rl.deploy.teacher`).
    """

    url: str | None = Field(None, description="teacher server base URL, e.g. http://gpu-box:8000 (null: none; a "
                                              "policy that observes the teacher group then refuses to configure)")
    api_key_env: str = Field("ROBOT_RL_TEACHER_API_KEY",
                             description="environment variable holding the server's API key (sent as X-API-Key "
                                         "when set; the key itself is never a config value)")
    timeout_s: float = Field(2.0, gt=0, description="HTTP timeout of one query (s); a slower answer is a failure")
    connect_timeout_s: float = Field(1.0, gt=0, description="HTTP timeout of GET /metadata (s)")
    period_steps: int | None = Field(None, ge=1, description="D, control periods one answer covers: a query is made "
                                                             "when none is in flight and the last answer has played "
                                                             "out over D periods (null: the policy sidecar's "
                                                             "teacher.control_period_steps)")
    backoff_s: float = Field(0.5, ge=0, description="after a failed query wait this long before the next (s); "
                                                    "doubles on each further failure")
    max_backoff_s: float = Field(5.0, ge=0, description="longest wait between queries to a failing server (s)")
    history_s: float = Field(2.0, gt=0, description="EE poses and gripper widths kept to measure dp from a "
                                                    "query's stamp (s of header stamps)")

    @model_validator(mode="after")
    def _backoff_order(self) -> "TeacherConfig":
        if self.max_backoff_s < self.backoff_s:
            raise ValueError(f"teacher.max_backoff_s ({self.max_backoff_s}) < teacher.backoff_s ({self.backoff_s})")
        return self

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"teacher.url must start with http:// or https://, got {value!r}")
        return value.rstrip("/") if value else value


class DeployConfig(_Section):
    """Everything ``robot-rl deploy ros2`` reads besides the policy directory."""

    node_name: str = Field("robot_rl_policy", description="ROS node name")
    task: str | None = Field(None, description="task the node expects the policy to be for (env id or paper name); "
                                               "null: the policy's own")
    rate_hz: float | None = Field(None, gt=0, description="control rate (Hz); null: the policy sidecar's rate")
    trigger: Literal["input", "timer", "poll"] = Field(
        "input", description="input: step when a new EE pose arrives, at most at rate_hz (freshest state; for "
                             "inputs at the control rate, like the sim bridge's); timer: step on the control timer "
                             "only; poll: on the control timer, take the newest message of every input (DDS keeps "
                             "only the latest, no callback per message): for a robot that publishes its state at "
                             "1 kHz (franka_ros2), the cheapest and still the freshest (< 1 ms old)")
    input_gather_s: float = Field(
        0.005, ge=0, description="trigger input: longest a step waits for the other inputs to be as new as the EE "
                                 "pose (s); 0 for inputs on their own clocks (a camera), so the step never waits")
    joint_names: list[str] = Field(
        list(PANDA_JOINT_NAMES), min_length=1,
        description="the robot's JointState names in the policy's qpos/qvel order (extra joints in a message are "
                    "ignored); derived from joint_map when that is set")
    joint_map: dict[str, str] | None = Field(
        None, description="the simulator's joint -> the robot's JointState name, for every joint of the policy's "
                          f"qpos ({', '.join(PANDA_JOINT_NAMES)}); e.g. panda_joint1: fr3_joint1 (null: joint_names "
                          "as given)")
    future_stamp_tolerance_s: float = Field(
        0.01, gt=0, description="a header stamp more than this ahead of the node's clock at reception is counted as "
                                "a clock offset (diagnostics future_stamps.<input>, status clock_offset_s): sync the "
                                "machines' clocks (chrony or PTP). The watchdog measures ages on the node's receive "
                                "clock, so an offset never holds the arm by itself (s)")
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    frames: FramesConfig = Field(default_factory=FramesConfig)
    qos: QoSSection = Field(default_factory=QoSSection)
    safety: dict[str, Any] = Field(default_factory=dict,
                                   description="robot_rl.deploy.safety.SafetyLimits keys (m, rad, s)")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig,
                                   description="the served teacher of a policy with a teacher observation group")
    diagnostics_period_s: float = Field(1.0, gt=0, description="diagnostics publishing period (s)")

    @field_validator("safety")
    @classmethod
    def _safety_limits(cls, value: dict) -> dict:
        from robot_rl.deploy.safety import SafetyLimits

        SafetyLimits.from_dict(value)  # raises ValueError naming the bad key
        return value

    @field_validator("joint_map")
    @classmethod
    def _complete_joint_map(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        missing = [n for n in PANDA_JOINT_NAMES if n not in value]
        if missing:
            raise ValueError(f"joint_map has no robot joint for the simulator's {missing[0]}"
                             f"{' (and ' + ', '.join(missing[1:]) + ')' if missing[1:] else ''}: map every joint of "
                             f"the policy's qpos ({', '.join(PANDA_JOINT_NAMES)})")
        unknown = [n for n in value if n not in PANDA_JOINT_NAMES]
        if unknown:
            raise ValueError(f"joint_map: {unknown[0]!r} is not a joint of the simulator's robot (its joints: "
                             f"{', '.join(PANDA_JOINT_NAMES)})")
        robot = list(value.values())
        twice = sorted({n for n in robot if robot.count(n) > 1})
        if twice:
            raise ValueError(f"joint_map: the robot's {twice[0]!r} is mapped from two simulator joints")
        return value

    @model_validator(mode="after")
    def _joint_names_from_map(self) -> "DeployConfig":
        if self.joint_map is None:
            return self
        mapped = [self.joint_map[n] for n in PANDA_JOINT_NAMES]
        if "joint_names" in self.model_fields_set and list(self.joint_names) != mapped:
            raise ValueError("set joint_map or joint_names, not both (joint_names is derived from joint_map)")
        self.joint_names = mapped
        return self

    @model_validator(mode="after")
    def _input_age_keys(self) -> "DeployConfig":
        from robot_rl.deploy.ros_io import INPUTS

        unknown = [k for k in self.safety.get("max_input_age_by_input_s") or {} if k not in INPUTS]
        if unknown:
            raise ValueError(f"safety.max_input_age_by_input_s.{unknown[0]}: not an input of the node (known: "
                             f"{', '.join(INPUTS)})")
        return self

    @model_validator(mode="after")
    def _some_output(self) -> "DeployConfig":
        if self.topics.equilibrium_pose is None and self.topics.twist is None:
            raise ValueError("topics: set equilibrium_pose or twist (or both); the node must command something")
        return self

    def safety_limits(self):
        """The ``safety`` section as :class:`~robot_rl.deploy.safety.SafetyLimits` (all its keys are required)."""
        from robot_rl.deploy.safety import SafetyLimits

        return SafetyLimits.from_dict(self.safety)


def load_deploy_config(path: str | Path | None, overrides: list[str] | tuple = ()) -> DeployConfig:
    """Load ``configs/deploy/*.yaml`` (``None``: defaults) with ``KEY=VALUE`` overrides.

    Raises:
        robot_rl.config.ConfigError: unknown key or bad value, naming the key.
        FileNotFoundError: ``path`` does not exist.
    """
    from robot_rl.config import load_config

    return load_config(path, overrides, model=DeployConfig)
