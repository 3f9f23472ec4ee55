"""Recording the policy node's inputs and outputs to an MCAP rosbag2, and replaying a recording.

:class:`BagRecorder` writes every message the node receives or publishes, with the time the node
saw it, to an MCAP rosbag2 (the ``rosbags`` library; no ROS installation or ``ros2 bag`` needed).
:func:`read_bag` reads one back as ``rclpy`` messages. :func:`replay` re-runs a
:class:`~robot_rl.deploy.controller.PolicyController` (the node's logic: observation assembly, ONNX
policy, safety filter) on the recorded inputs and compares its commands with the recorded ones, so a
run on the robot can be reproduced bit for bit on a laptop, or re-checked with another policy or
other safety limits.

Files. A path ending in ``.mcap`` is written as that single, self-contained MCAP file (it embeds the
rosbag2 metadata; ``ros2 bag info/play FILE.mcap`` and ``rosbags`` read it). Any other path is a
rosbag2 *directory* (``PATH/metadata.yaml`` + ``PATH/<name>.mcap``), as ``ros2 bag record -o PATH``
makes. :func:`read_bag` and :func:`replay` take either. The MCAP is written in chunks of about
1 MiB, and its index on :meth:`BagRecorder.close`: a process that dies without closing leaves a
truncated file (in ``.<name>.mcap.recording/`` for a single file) with up to the last MiB missing.

Serialization. Messages are stored as CDR produced by ``rosbags``' typestore (ROS 2 Jazzy message
definitions, rosbag2 format version 9). ``rclpy.serialization.serialize_message`` is not stored
as is: with the PyPI Kilted wheels (rmw_fastrtps) it returns some messages (``JointState``) with up
to 8 trailing bytes of uninitialised memory, which ``rosbags`` (and tools built on it) reject as
"CDR message size mismatch"; the recorder parses those bytes with the typestore and re-serializes
them, which gives exact, deterministic CDR that both ``rclpy`` and ``rosbags`` read.

Replay time base. A recording's timestamps are the node's clock (``get_clock().now()``) when it
received or published each message; message header stamps are kept as recorded. The replay feeds
each recorded input to the controller at its recorded time (``now_s = t_ns / 1e9``) and steps the
controller at the node's control steps: if the status topic was recorded (``{"t": now_s, "state":
..., ...}`` JSON, one per step, :mod:`robot_rl.deploy.ros_node`), at each status message with the
node's exact step time ``t``, so holds between commands (which re-arm the safety filter's
first-command bound) and the node's exact ``dt`` are reproduced; otherwise at each recorded command
(the ``equilibrium_pose`` topic, else ``twist``) at its recorded time.

Teacher. A policy with a ``teacher`` group is replayed without its server: the recorded teacher answers
(``topics.teacher_answers``, one JSON line per answer with the step ``step_s`` that handled it,
:meth:`robot_rl.deploy.teacher.TeacherAnswer.to_json`) are fed back at those steps
(:class:`~robot_rl.deploy.teacher.RecordedAnswers`), the episode topic's messages reset the group where they were
received and the camera images are fed as the node got them, so the replay's teacher channel makes the same
queries, shows the same hints and the commands come out the same; the report counts the answers fed and any whose
fate (delivered, dropped, ...) differs from the node's.

Scratchpad. The notes travel in the recorded answers (``note``, handled at ``step_s``), and episode resets
(``topics.reset_episode``: the node records its service calls there too, and the episode topic) are fed where the
node got them, so the replay's scratchpad gets the same notes at the same steps. Where the status recorded the
scratchpad text (``memory.text``) the replay's is compared with it at every step, and where ``topics.observation``
was recorded the whole observation the replay gives the policy is compared with the node's, bit for bit
(``n_obs_mismatched`` names the first differing field): the ``memory`` group is reproduced exactly or reported.
"""

from __future__ import annotations

import bisect
import importlib
import json
import os
import shutil
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.deploy.ros_io import INPUTS as _INPUT_KEYS
from robot_rl.deploy.ros_io import POSE_INPUTS as _POSE_KEYS

__all__ = ["ROSBAG2_VERSION", "TYPESTORE", "BagRecorder", "ReplayReport", "bag_topics", "message_class", "read_bag",
           "replay", "replay_main"]

#: rosbag2 metadata version written (9: ROS 2 Jazzy and later; QoS profiles as a YAML list).
ROSBAG2_VERSION = 9
#: The ``rosbags.typesys.Stores`` member whose message definitions are written to the bag
#: (franka_ros2 targets Jazzy; the definitions and RIHS01 hashes of the types the node uses are the
#: same in Kilted).
TYPESTORE = "ROS2_JAZZY"
#: Suffix of the hidden staging directory a single-file recording is written in until :meth:`BagRecorder.close`.
_STAGING_SUFFIX = ".recording"
#: Outputs recorded up to this much before the step time reported by a status message still belong
#: to that step (ns): the clock read as ``t_ns`` and the one the node steps with may differ by rounding.
_PAIRING_SLACK_NS = 1_000
#: A gap between two control steps longer than this many control periods means the node was
#: deactivated in between (its timer steps at least every ~2 periods while active): the replay
#: re-activates the safety filter there (first-command bound), as the node's ``on_activate`` did.
REACTIVATION_GAP_PERIODS = 3.0


# ------------------------------------------------------------------------------------------------
# Types


def _normalize_type(type_name: str) -> str:
    """``"pkg/Name"`` or ``"pkg/msg/Name"`` -> ``"pkg/msg/Name"``; ``ValueError`` otherwise."""
    parts = str(type_name).split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or parts[1] != "msg" or not all(parts):
        raise ValueError(f"message type {type_name!r} is not of the form 'pkg/msg/Name'")
    return "/".join(parts)


def message_class(type_name: str) -> type:
    """The ``rclpy`` message class of a ROS type name (``"geometry_msgs/msg/PoseStamped"``).

    Raises:
        ValueError: the name is malformed, or its package is not importable here (not installed in
            this Python environment) or has no such message.
    """
    type_name = _normalize_type(type_name)
    try:  # part of a full ROS install; not in the PyPI rclpy wheels
        from rosidl_runtime_py.utilities import get_message

        return get_message(type_name)
    except ImportError:
        pass
    except (AttributeError, ValueError, ModuleNotFoundError) as exc:
        raise ValueError(f"message type {type_name!r}: {exc}") from None
    pkg, _, name = type_name.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"message type {type_name!r} is not available in this Python environment: {exc}") from None


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(getattr(Stores, TYPESTORE))


def _clean_cdr(typestore, type_name: str, raw: bytes) -> bytes:
    """``rclpy`` CDR -> the same message as exact CDR from ``rosbags`` (no trailing garbage, zeroed padding)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] not in (0, 1):
        raise ValueError(f"{type_name}: not a CDR encapsulation header: {raw[:4]!r}")
    msgdef = typestore.get_msgdef(type_name)
    deserialize = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
    message, pos = deserialize(memoryview(raw)[4:], 0, msgdef.cls, typestore)
    if pos + 4 > len(raw):
        raise ValueError(f"{type_name}: CDR data ends early ({len(raw)} bytes, needs {pos + 4})")
    return bytes(typestore.serialize_cdr(message, type_name))


# ------------------------------------------------------------------------------------------------
# Recording


class BagRecorder:
    """Writes ``rclpy`` messages to a new MCAP rosbag2; thread-safe.

    Args:
        path: ``FILE.mcap`` (one self-contained MCAP file) or a rosbag2 directory to create (any other
            name; it gets ``metadata.yaml`` and ``<name>.mcap``). Parent directories are created.
        topics: topic -> ROS type name (``"geometry_msgs/msg/PoseStamped"``), every topic that
            :meth:`write` will be given.

    Raises:
        FileExistsError: ``path`` (or the staging directory of an interrupted recording to it) exists;
            a recording is never overwritten (the message names the path).
        ValueError: a malformed type name, a type that ``rclpy`` or the ``rosbags`` typestore here does
            not know (the message names it), or no topics.

    Use as a context manager, or call :meth:`close` (idempotent); a recording that is not closed has
    no MCAP index (see the module docstring).
    """

    def __init__(self, path: str | Path, topics: Mapping[str, str]):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(path)
        if not topics:
            raise ValueError("BagRecorder: no topics to record")
        self.topics = {str(t): _normalize_type(ty) for t, ty in topics.items()}
        self._typestore = _typestore()
        self._classes: dict[str, type] = {}
        for topic, type_name in self.topics.items():
            if type_name not in self._typestore.fielddefs:
                raise ValueError(f"topic {topic}: type {type_name} is not in the rosbags typestore {TYPESTORE}")
            self._classes[topic] = message_class(type_name)

        self.single_file = self.path.suffix == ".mcap"
        if self.path.exists() or self.path.is_symlink():
            raise FileExistsError(f"{self.path} exists already; not overwriting a recording (choose a new name)")
        if self.single_file:
            # rosbags writes a directory <dir>/<dir name>.mcap + metadata.yaml: stage it next to the
            # target, named so that the MCAP's embedded file name is the final one.
            self._staging_root = self.path.with_name(f".{self.path.name}{_STAGING_SUFFIX}")
            if self._staging_root.exists():
                raise FileExistsError(f"{self._staging_root} exists (an interrupted recording to {self.path}?); "
                                      f"move it away or choose a new name")
            bag_dir = self._staging_root / self.path.stem
            self.mcap_path = self.path
        else:
            self._staging_root = None
            bag_dir = self.path
            self.mcap_path = self.path / f"{self.path.name}.mcap"
        bag_dir.parent.mkdir(parents=True, exist_ok=True)
        self._bag_dir = bag_dir
        self._writer = Writer(bag_dir, version=ROSBAG2_VERSION, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections = {t: self._writer.add_connection(t, ty, typestore=self._typestore)
                             for t, ty in self.topics.items()}
        self._lock = threading.Lock()
        self._closed = False
        self.counts: Counter = Counter()  #: topic -> messages written

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (later writes are refused)."""
        return self._closed

    def write(self, topic: str, msg: Any, t_ns: int) -> None:
        """Record ``msg`` (an ``rclpy`` message of the topic's declared type) on ``topic`` at ``t_ns``.

        Args:
            topic: a topic declared at construction.
            msg: the ``rclpy`` message object.
            t_ns: the recording time, integer nanoseconds (the node's clock:
                ``node.get_clock().now().nanoseconds``); :func:`replay` uses it as ``now_s = t_ns / 1e9``.

        Raises:
            ValueError: ``topic`` was not declared (named), or ``t_ns`` is not a non-negative integer.
            TypeError: ``msg`` is not of the topic's declared type.
            RuntimeError: the recorder is closed.
        """
        from rclpy.serialization import serialize_message

        conn = self._connections.get(topic)
        if conn is None:
            raise ValueError(f"topic {topic!r} was not declared to the recorder of {self.path} "
                             f"(declared: {sorted(self.topics)})")
        cls = self._classes[topic]
        if type(msg) is not cls:
            raise TypeError(f"topic {topic}: expected a {self.topics[topic]} message, got {type(msg).__module__}."
                            f"{type(msg).__name__}")
        if isinstance(t_ns, bool) or not isinstance(t_ns, (int, np.integer)) or t_ns < 0:
            raise ValueError(f"t_ns must be a non-negative integer (ns), got {t_ns!r}")
        data = _clean_cdr(self._typestore, self.topics[topic], serialize_message(msg))
        with self._lock:
            if self._closed:
                raise RuntimeError(f"recorder of {self.path} is closed")
            self._writer.write(conn, int(t_ns), data)
            self.counts[topic] += 1

    def close(self) -> None:
        """Write the MCAP index and metadata and finish the file. Idempotent.

        Raises:
            FileExistsError: (single file) ``path`` appeared while recording; the recording is left in
                the staging directory named in the message.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
            if self.single_file:
                staged = self._bag_dir / f"{self._bag_dir.name}.mcap"
                if self.path.exists():
                    raise FileExistsError(f"{self.path} appeared while recording; the recording is in {staged}")
                os.replace(staged, self.path)
                shutil.rmtree(self._staging_root)

    def __enter__(self) -> BagRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also on an exception: what was recorded until then is worth keeping

    def __repr__(self) -> str:
        return f"BagRecorder({str(self.path)!r}, {len(self.topics)} topics, {sum(self.counts.values())} messages)"


# ------------------------------------------------------------------------------------------------
# Reading


def bag_topics(path: str | Path) -> dict[str, str]:
    """Topic -> ROS type name of the topics in a bag (``FILE.mcap`` or a rosbag2 directory)."""
    from rosbags.rosbag2 import Reader

    with Reader(Path(path)) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


def read_bag(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, Any]]:
    """Iterate over a bag's messages in recorded time order.

    Args:
        path: ``FILE.mcap`` or a rosbag2 directory (ours, or one from ``ros2 bag record -s mcap``).
        topics: only these topics (default: all).

    Yields:
        ``(topic, t_ns, msg)``: the topic, the recording time (int ns) and the ``rclpy`` message
        (deserialized with ``rclpy.serialization.deserialize_message``, so header stamps etc. are
        exactly as recorded).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a topic's type has no ``rclpy`` message class in this environment.
    """
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader

    wanted = None if topics is None else set(topics)
    with Reader(Path(path)) as reader:
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        classes = {c.id: message_class(c.msgtype) for c in conns}
        for conn, t_ns, raw in reader.messages(connections=conns):
            yield conn.topic, int(t_ns), deserialize_message(bytes(raw), classes[conn.id])


# ------------------------------------------------------------------------------------------------
# Replay


@dataclass
class ReplayReport:
    """What :func:`replay` found: recorded vs re-computed commands.

    Deltas are over the *compared* commands (recorded, and the replay commanded too); ``None`` when
    nothing was compared or the quantity was not recorded.

    Attributes:
        bag: the bag path.
        command_topic: the recorded command topic compared (``equilibrium_pose`` or ``twist``).
        step_clock: ``"status"`` (steps at the node's status messages, exact step times) or
            ``"commands"`` (steps at the recorded command times).
        n_inputs: input messages fed to the controller.
        n_steps: controller steps run.
        n_recorded: command messages recorded on ``command_topic``.
        n_compared: recorded commands the replay also commanded (and compared).
        n_held: recorded commands where the replay held instead (see ``replay_hold_reasons``).
        n_unpaired: recorded commands not from a control step (the node's hold-on-deactivate target,
            or, with the status clock, a step whose status message is missing).
        n_extra: steps where the node published no command but the replay commanded (status clock only).
        n_mismatched: compared commands with any difference above the tolerances.
        n_reactivations: times the replay (re-)activated its safety filter.
        n_teacher_recorded: teacher answers in the bag (a policy with a teacher group).
        n_teacher_fed: recorded teacher answers fed to the replay's controller.
        n_teacher_mismatched: fed answers whose fate in the replay (delivered, failed, invalid, dropped at a reset,
            unknown) differs from the recorded one.
        n_teacher_queries: queries the replay's teacher channel made.
        n_memory_compared: steps whose recorded status carried the scratchpad text, compared with the replay's.
        n_memory_mismatched: of those, steps where the texts differ.
        n_obs_compared: steps whose observation was recorded (``topics.observation``), compared with the replay's.
        n_obs_mismatched: of those, steps where any value differs (exact float32 comparison).
        replay_hold_reasons: hold reason -> count, over the ``n_held`` steps.
        max_pos_delta_m, mean_pos_delta_m: ``|p_replay - p_recorded|`` of the target position (m).
        max_angle_delta_rad: largest angle between the replayed and recorded target orientations (rad).
        max_twist_delta: largest ``|Δ|`` of a twist component (m/s, rad/s), if the twist was recorded.
        max_gripper_delta_m: largest ``|Δ|`` of the gripper width (m), if the gripper topic was recorded.
        n_gripper_compared: gripper commands compared.
        first_mismatch: ``"t=<s>: <what>"`` of the first mismatch, or ``""``.
        pos_deltas_m: ``(n_compared,)`` position deltas in step order (m), for plots.
        tolerances: the tolerances used (``pos_m``, ``angle_rad``, ``twist``, ``gripper_m``).
    """

    bag: str
    command_topic: str
    step_clock: str
    n_inputs: int = 0
    n_steps: int = 0
    n_recorded: int = 0
    n_compared: int = 0
    n_held: int = 0
    n_unpaired: int = 0
    n_extra: int = 0
    n_mismatched: int = 0
    n_reactivations: int = 0
    replay_hold_reasons: dict = field(default_factory=dict)
    max_pos_delta_m: float | None = None
    mean_pos_delta_m: float | None = None
    max_angle_delta_rad: float | None = None
    max_twist_delta: float | None = None
    max_gripper_delta_m: float | None = None
    n_gripper_compared: int = 0
    n_teacher_recorded: int = 0
    n_teacher_fed: int = 0
    n_teacher_mismatched: int = 0
    n_teacher_queries: int = 0
    n_memory_compared: int = 0
    n_memory_mismatched: int = 0
    n_obs_compared: int = 0
    n_obs_mismatched: int = 0
    first_mismatch: str = ""
    pos_deltas_m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tolerances: dict = field(default_factory=dict)

    def ok(self) -> bool:
        """Every recorded command reproduced within the tolerances, and no extra command."""
        return (self.n_recorded > 0 and self.n_compared == self.n_recorded - self.n_unpaired
                and self.n_held == 0 and self.n_extra == 0 and self.n_mismatched == 0
                and self.n_teacher_fed == self.n_teacher_recorded and self.n_teacher_mismatched == 0
                and self.n_memory_mismatched == 0 and self.n_obs_mismatched == 0)

    def summary(self) -> str:
        """A few human-readable lines."""
        def fmt(v, unit):
            return "-" if v is None else f"{v:.3g} {unit}"

        lines = [
            f"replay of {self.bag} ({self.step_clock} clock, commands on {self.command_topic})",
            (f"  {self.n_inputs} input messages, {self.n_steps} steps; {self.n_recorded} recorded commands: "
             f"{self.n_compared} reproduced, {self.n_held} held in the replay, {self.n_unpaired} not from a step; "
             f"{self.n_extra} extra replay commands"),
            (f"  target position |Δ|: max {fmt(self.max_pos_delta_m, 'm')}, mean {fmt(self.mean_pos_delta_m, 'm')}; "
             f"orientation: max {fmt(self.max_angle_delta_rad, 'rad')}; twist: max {fmt(self.max_twist_delta, '')}; "
             f"gripper: max {fmt(self.max_gripper_delta_m, 'm')} ({self.n_gripper_compared} compared)"),
        ]
        if self.replay_hold_reasons:
            lines.append(f"  replay holds: {dict(self.replay_hold_reasons)}")
        if self.n_teacher_recorded or self.n_teacher_queries:
            lines.append(f"  teacher: {self.n_teacher_recorded} recorded answers, {self.n_teacher_fed} fed, "
                         f"{self.n_teacher_mismatched} handled otherwise; {self.n_teacher_queries} queries replayed")
        if self.n_memory_compared or self.n_obs_compared:
            lines.append(f"  scratchpad text: {self.n_memory_compared} steps compared, {self.n_memory_mismatched} "
                         f"differ; observation: {self.n_obs_compared} compared, {self.n_obs_mismatched} differ")
        if self.n_reactivations > 1:
            lines.append(f"  safety filter (re-)activated {self.n_reactivations} times")
        verdict = "OK: every command reproduced" if self.ok() else (
            f"DIFFERENT: {self.n_mismatched} mismatched commands" + (f"; first at {self.first_mismatch}"
                                                                     if self.first_mismatch else ""))
        lines.append(f"  {verdict} (tolerances {self.tolerances})")
        return "\n".join(lines)


def _xyzw_to_wxyz(q) -> np.ndarray:
    return np.array([q.w, q.x, q.y, q.z], dtype=np.float64)


def quat_angle_between(q1: np.ndarray, q2: np.ndarray) -> float:
    """Angle (rad, in [0, π]) of the rotation between two ``wxyz`` quaternions; accurate near 0."""
    from robot_rl.geometry import quat_angle, quat_conjugate, quat_multiply

    q1 = np.asarray(q1, np.float64) / np.linalg.norm(q1)
    q2 = np.asarray(q2, np.float64) / np.linalg.norm(q2)
    return float(quat_angle(quat_multiply(quat_conjugate(q1), q2)))


@dataclass
class _Step:
    """One control step of the recording: when, and what the node published."""

    t_s: float
    state: str | None = None  #: the node's filter state from the status message (status clock)
    pose: Any = None  #: recorded PoseStamped command
    twist: Any = None  #: recorded TwistStamped
    gripper: Any = None  #: recorded Float64
    activations: int | None = None  #: the node's activation count from the status message (None: not recorded)
    observation: Any = None  #: recorded Float32MultiArray: the observation the node gave the policy
    memory_text: str | None = None  #: the scratchpad text the status reported (None: not recorded)


def replay(bag_path: str | Path, policy_dir: str | Path, cfg, *, pos_tol_m: float = 1e-6,
           angle_tol_rad: float = 1e-6, twist_tol: float = 1e-5, gripper_tol_m: float = 1e-6,
           use_status: bool = True) -> ReplayReport:
    """Re-run the policy node's logic on a bag's recorded inputs and compare its commands.

    A fresh :class:`~robot_rl.deploy.controller.PolicyController` ``(policy_dir, cfg)`` gets every
    recorded message of the four input topics (``cfg.topics.joint_states, ee_pose, object_pose,
    goal_pose``) in recorded order, with ``now_s = t_ns / 1e9`` and the header stamps as recorded.
    It is stepped at the node's control steps (module docstring: the status clock if ``use_status``
    and the status topic was recorded, else the recorded command times), and each new
    :class:`~robot_rl.deploy.safety.Command` is compared with the command recorded for that step:
    target position (m), orientation (rad), twist (m/s, rad/s) and gripper width (m), whichever
    were recorded.

    Activation mirrors the node: the safety filter is activated with the current EE pose at the
    first step that has a recorded command (status clock: the first step the node reports
    ``"state": "active"``), deactivated at a step the node reports inactive or e-stopped, and
    re-activated where the status's ``activations`` count changes (the node was deactivated and activated
    again), or, in a recording without it, after a gap of more than :data:`REACTIVATION_GAP_PERIODS` control
    periods between steps. Activation also starts a new teacher episode, as the node's does. Limits of the
    commands clock: a single hold between two commands is not seen (the replay's next command is then not bounded like a
    first command); record the status topic for an exact replay.

    Args:
        bag_path: ``FILE.mcap`` or rosbag2 directory (:class:`BagRecorder`, or ``ros2 bag record``:
            then the times are the recorder's reception times and the replay is approximate).
        policy_dir: the exported policy (``policy.onnx`` + ``policy.json``) to replay.
        cfg: the :class:`~robot_rl.deploy.config.DeployConfig` the bag was recorded with (topics,
            frames, safety limits; other limits replay "what would this config have done").
        pos_tol_m: largest target position difference counted as reproduced, m.
        angle_tol_rad: largest target orientation difference counted as reproduced, rad.
        twist_tol: largest twist component difference counted as reproduced, m/s or rad/s.
        gripper_tol_m: largest gripper width difference counted as reproduced, m.
        use_status: step on the recorded status messages when there are any.

    Returns:
        A :class:`ReplayReport`.

    Raises:
        ValueError: the bag has no messages on an input topic or no recorded command topic of
            ``cfg`` (recorded with another config?); the message lists the bag's topics.
    """
    from robot_rl.deploy.controller import PolicyController
    from robot_rl.deploy.ros_io import ObservationUnavailable
    from robot_rl.deploy.safety import Command, FilterState
    from robot_rl.deploy.teacher import RecordedAnswers, TeacherAnswer

    bag_path = Path(bag_path)
    t = cfg.topics
    in_bag = bag_topics(bag_path)
    controller = PolicyController(policy_dir, cfg, teacher_link=RecordedAnswers([]))
    recorded_fate: dict[int, str] = {}
    if controller.teacher is not None:
        deliveries = []
        if t.teacher_answers in in_bag:
            for _, _, msg in read_bag(bag_path, [t.teacher_answers]):
                answer, extra = TeacherAnswer.from_json(msg.data)
                deliveries.append((float(extra["step_s"]), answer))
                recorded_fate[answer.query_id] = extra.get("outcome", "")
        controller.teacher_link = RecordedAnswers(deliveries)
    teacher_inputs = {}
    if controller.teacher is not None:
        teacher_inputs = {getattr(t, k): k for k in ("image", "episode", "reset_episode")
                          if getattr(t, k) and getattr(t, k) in in_bag}
    else:
        teacher_inputs = {getattr(t, k): k for k in ("episode", "reset_episode")
                          if getattr(t, k) and getattr(t, k) in in_bag}
    # every configured input in the bag is fed (the node ignores the ones its observation does not read, as it
    # did when recording); the ones it reads must be there
    input_topics = {getattr(t, k): k for k in _INPUT_KEYS if getattr(t, k, None) and getattr(t, k) in in_bag}
    missing = [getattr(t, k) for k in controller.assembler.required_inputs if getattr(t, k) not in in_bag]
    if missing:
        raise ValueError(f"{bag_path}: no input topic(s) {missing} in the bag (recorded with another config?); "
                         f"its topics: {sorted(in_bag)}")
    if t.equilibrium_pose and t.equilibrium_pose in in_bag:
        command_topic, command_kind = t.equilibrium_pose, "pose"
    elif t.twist and t.twist in in_bag:
        command_topic, command_kind = t.twist, "twist"
    else:
        raise ValueError(f"{bag_path}: no recorded command topic ({t.equilibrium_pose!r} or {t.twist!r}) in the bag; "
                         f"its topics: {sorted(in_bag)}")
    outputs = {command_topic: command_kind}
    if command_kind == "pose" and t.twist and t.twist in in_bag:
        outputs[t.twist] = "twist"
    if t.gripper and t.gripper in in_bag:
        outputs[t.gripper] = "gripper"
    if t.observation and t.observation in in_bag:
        outputs[t.observation] = "observation"
    status_topic = t.status if (use_status and t.status in in_bag) else None
    input_topics.update(teacher_inputs)

    period_s = controller.period_s
    report = ReplayReport(bag=str(bag_path), command_topic=command_topic,
                          step_clock="status" if status_topic else "commands",
                          tolerances={"pos_m": pos_tol_m, "angle_rad": angle_tol_rad, "twist": twist_tol,
                                      "gripper_m": gripper_tol_m})

    # One pass over the bag: inputs, and the control steps with the outputs that belong to each.
    wanted = set(input_topics) | set(outputs) | ({status_topic} if status_topic else set())
    events: list[tuple[str, Any]] = []  # ("input", (key, msg, t_ns)) or ("step", _Step)
    if status_topic:
        pending: list[tuple[int, str, Any]] = []
        for topic, t_ns, msg in read_bag(bag_path, wanted):
            if topic in input_topics:
                events.append(("input", (input_topics[topic], msg, t_ns)))
            elif topic == status_topic:
                try:
                    status = json.loads(msg.data)
                    step_t = float(status["t"])
                except (ValueError, KeyError, TypeError):
                    continue  # not one of the node's step statuses
                step = _Step(step_t, status.get("state"), activations=status.get("activations"),
                             memory_text=(status.get("memory") or {}).get("text"))
                lo = round(step_t * 1e9) - _PAIRING_SLACK_NS
                for t_out, kind, out in pending:
                    if t_out >= lo:
                        if kind == command_kind and getattr(step, kind) is not None:
                            report.n_unpaired += 1  # two commands in one step: keep the last
                        setattr(step, kind, out)
                    elif kind == command_kind:
                        report.n_unpaired += 1  # published outside a step (hold on deactivate)
                pending = []
                events.append(("step", step))
            else:
                kind = outputs[topic]
                report.n_recorded += kind == command_kind
                pending.append((t_ns, kind, msg))
        report.n_unpaired += sum(kind == command_kind for _, kind, _ in pending)
        if not any(kind == "step" for kind, _ in events):  # no status of the node's format: commands clock
            return replay(bag_path, policy_dir, cfg, pos_tol_m=pos_tol_m, angle_tol_rad=angle_tol_rad,
                          twist_tol=twist_tol, gripper_tol_m=gripper_tol_m, use_status=False)
    else:
        others: list[tuple[int, str, Any]] = []
        for topic, t_ns, msg in read_bag(bag_path, wanted):
            if topic in input_topics:
                events.append(("input", (input_topics[topic], msg, t_ns)))
            elif outputs[topic] == command_kind:
                step = _Step(t_ns / 1e9)
                setattr(step, command_kind, msg)
                events.append(("step", step))
                report.n_recorded += 1
            else:
                others.append((t_ns, outputs[topic], msg))
        # twist / gripper of a step: the nearest command within half a period
        steps = [s for kind, s in events if kind == "step"]
        times = [round(s.t_s * 1e9) for s in steps]
        for t_ns, kind, msg in others:
            i = bisect.bisect_left(times, t_ns)
            near = [j for j in (i - 1, i) if 0 <= j < len(times)]
            if near:
                j = min(near, key=lambda j: abs(times[j] - t_ns))
                if abs(times[j] - t_ns) <= 0.5 * period_s * 1e9:
                    setattr(steps[j], kind, msg)

    pos_deltas: list[float] = []
    max_angle = max_twist = max_grip = None
    last_step_s: float | None = None
    last_activations: int | None = None
    safety = controller.safety
    for kind, item in events:
        if kind == "input":
            key, msg, t_ns = item
            now = t_ns / 1e9
            if key == "joint_states":
                controller.assembler.update_joint_state(msg, now)
            elif key in _POSE_KEYS:
                controller.assembler.update_pose(key, msg, now)
            elif key in ("episode", "reset_episode"):
                controller.new_episode()
            elif key == "image":
                controller.update_image(msg)
            else:
                controller.assembler.update_size(key, msg, now)
            report.n_inputs += 1
            continue
        step: _Step = item
        node_active = step.state == "active" if status_topic else True
        if step.activations is not None:  # the node says when it was activated: no guessing from gaps
            gap = last_activations is not None and step.activations != last_activations
            last_activations = step.activations
        else:
            gap = last_step_s is not None and step.t_s - last_step_s > REACTIVATION_GAP_PERIODS * period_s
        last_step_s = step.t_s
        if not node_active:
            if safety.state is FilterState.ACTIVE:
                safety.deactivate()
            continue
        if safety.state is not FilterState.ACTIVE or gap:
            try:
                controller.activate()  # as the node's on_activate: the filter, and a new teacher episode
                report.n_reactivations += 1
            except (ObservationUnavailable, ValueError, RuntimeError):
                pass  # the step below holds (inactive) and is counted
        result = controller.step(step.t_s)
        report.n_steps += 1
        if step.memory_text is not None and controller.teacher is not None:
            report.n_memory_compared += 1
            if controller.teacher.memory_text() != step.memory_text:
                report.n_memory_mismatched += 1
                report.first_mismatch = report.first_mismatch or (
                    f"t={step.t_s:.6f}: scratchpad {controller.teacher.memory_text()!r} in the replay, "
                    f"{step.memory_text!r} at the node")
        if step.observation is not None:
            report.n_obs_compared += 1
            rec = np.asarray(step.observation.data, dtype=np.float32)
            mine = None if result.obs is None else np.asarray(result.obs, dtype=np.float32)
            if mine is None or mine.shape != rec.shape or not np.array_equal(mine, rec):
                report.n_obs_mismatched += 1
                if mine is None or mine.shape != rec.shape:
                    what = "no observation" if mine is None else f"{mine.shape[0]} values vs {rec.shape[0]}"
                else:
                    i = int(np.flatnonzero(mine != rec)[0])
                    what = (f"{controller.policy.schema.field_at(i)} is {mine[i]!r} in the replay, {rec[i]!r} at the "
                            "node")
                report.first_mismatch = report.first_mismatch or f"t={step.t_s:.6f}: observation: {what}"
        for answer, outcome, _ in result.teacher_answers:
            if recorded_fate.get(answer.query_id) != outcome:
                report.n_teacher_mismatched += 1
                report.first_mismatch = report.first_mismatch or (
                    f"t={step.t_s:.6f}: teacher answer {answer.query_id} was {recorded_fate.get(answer.query_id)!r} "
                    f"at the node, {outcome!r} in the replay")
        d = result.decision
        recorded = getattr(step, command_kind)
        if recorded is None:
            if isinstance(d, Command):
                report.n_extra += 1
                report.first_mismatch = (report.first_mismatch
                                         or f"t={step.t_s:.6f}: the replay commanded, the node did not")
            continue
        if not isinstance(d, Command):
            report.n_held += 1
            report.replay_hold_reasons[d.reason] = report.replay_hold_reasons.get(d.reason, 0) + 1
            report.first_mismatch = (report.first_mismatch
                                     or f"t={step.t_s:.6f}: the replay held ({d.reason}: {d.detail})")
            continue
        report.n_compared += 1
        bad = []
        if step.pose is not None:
            p = step.pose.pose
            dp = float(np.linalg.norm(d.target_pos - np.array([p.position.x, p.position.y, p.position.z])))
            da = quat_angle_between(d.target_quat, _xyzw_to_wxyz(p.orientation))
            pos_deltas.append(dp)
            max_angle = da if max_angle is None else max(max_angle, da)
            if dp > pos_tol_m:
                bad.append(f"target position |Δ| {dp:.3g} m")
            if da > angle_tol_rad:
                bad.append(f"orientation Δ {da:.3g} rad")
        if step.twist is not None:
            tw = step.twist.twist
            rec = np.array([tw.linear.x, tw.linear.y, tw.linear.z, tw.angular.x, tw.angular.y, tw.angular.z])
            dt_ = float(np.max(np.abs(d.twist - rec)))
            max_twist = dt_ if max_twist is None else max(max_twist, dt_)
            if dt_ > twist_tol:
                bad.append(f"twist |Δ| {dt_:.3g}")
        if step.gripper is not None:
            dg = abs(d.gripper_width_m - float(step.gripper.data))
            max_grip = dg if max_grip is None else max(max_grip, dg)
            report.n_gripper_compared += 1
            if dg > gripper_tol_m:
                bad.append(f"gripper |Δ| {dg:.3g} m")
        if bad:
            report.n_mismatched += 1
            report.first_mismatch = report.first_mismatch or f"t={step.t_s:.6f}: {', '.join(bad)}"

    report.pos_deltas_m = np.asarray(pos_deltas, dtype=np.float64)
    if pos_deltas:
        report.max_pos_delta_m = float(report.pos_deltas_m.max())
        report.mean_pos_delta_m = float(report.pos_deltas_m.mean())
    report.max_angle_delta_rad, report.max_twist_delta, report.max_gripper_delta_m = max_angle, max_twist, max_grip
    if controller.teacher is not None:
        link = controller.teacher_link
        report.n_teacher_recorded = len(recorded_fate)
        report.n_teacher_fed = link.fed
        report.n_teacher_queries = len(link.queries)
    return report


def replay_main(bag: str | Path, policy_dir: str | Path, config_path: str | Path | None) -> int:
    """``robot-rl deploy replay BAG --policy DIR --config YAML``: print the :class:`ReplayReport`.

    Returns:
        0 when every recorded command was reproduced (:meth:`ReplayReport.ok`), else 1.
    """
    from robot_rl.deploy.config import load_deploy_config

    report = replay(bag, policy_dir, load_deploy_config(config_path))
    print(report.summary())
    return 0 if report.ok() else 1
