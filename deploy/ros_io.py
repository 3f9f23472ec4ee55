"""ROS 2 messages <-> the simulator's state vector: conversions and the policy node's observation assembly.

Conventions: ROS quaternions are ``(x, y, z, w)``, ManiSkill's ``(w, x, y, z)``; all poses are in
the robot base frame (``FramesConfig.base``, ``panda_link0``), positions in m, joint positions in
rad (arm) and m (fingers), joint velocities in rad/s and m/s. ROS message fields are float64, so a
float32 simulator value survives ``sim -> msg -> obs`` exactly (tests/deploy pin this).

:class:`ObservationAssembler` rebuilds the policy's observation from the latest messages with the policy's
observation schema (:mod:`robot_rl.observation`): each ``state`` field names its ROS source
(:func:`parse_source`), so every task's layout, pinned against the simulator, is also its recipe at the
robot. A message with NaN/inf, wrong joint names or count, or a wrong ``frame_id`` is rejected (counted by
reason) and the previous good one is kept, so its age grows and the safety filter's watchdog holds; a
message on an input the observation does not read is ignored and counted.

With the delayed interface the assembler also builds, with the same sources and machinery, the privileged state a
served teacher may read (:func:`robot_rl.envs.privileged.privileged_fields`; its inputs are the *teacher inputs*,
which never trip the watchdog), and keeps a short history of EE poses and gripper widths, so the node can tell
where the TCP was at the stamp of the observation a teacher answer was computed from (``dp``).
"""

from __future__ import annotations

import math
import re
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from robot_rl.deploy.grasp import grasp_flag
from robot_rl.geometry import pose_from_frame


def stamp_to_s(stamp: Any) -> float:
    """``builtin_interfaces/Time`` -> seconds (float)."""
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(t_s: float):
    """Seconds -> ``builtin_interfaces/Time``."""
    from builtin_interfaces.msg import Time

    sec = math.floor(t_s)
    return Time(sec=int(sec), nanosec=int(round((t_s - sec) * 1e9)) % 1_000_000_000)


def pose_msg(pos: Sequence[float], quat_wxyz: Sequence[float], frame_id: str, stamp_s: float):
    """``geometry_msgs/PoseStamped`` from a position (3,) m and a wxyz quaternion (4,)."""
    from geometry_msgs.msg import PoseStamped

    msg = PoseStamped()
    msg.header.frame_id = frame_id
    msg.header.stamp = s_to_stamp(stamp_s)
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in pos[:3])
    q.w, q.x, q.y, q.z = (float(v) for v in quat_wxyz[:4])
    return msg


def size_msg(half_extents: Sequence[float], frame_id: str, stamp_s: float):
    """``geometry_msgs/Vector3Stamped`` of an entity's half extents along its own axes (m); ``frame_id`` names
    the entity's frame (the node checks only that the sizes are finite and positive).
    """
    from geometry_msgs.msg import Vector3Stamped

    msg = Vector3Stamped()
    msg.header.frame_id = frame_id
    msg.header.stamp = s_to_stamp(stamp_s)
    msg.vector.x, msg.vector.y, msg.vector.z = (float(v) for v in half_extents[:3])
    return msg


def pose_from_msg(msg) -> tuple[np.ndarray, np.ndarray]:
    """``PoseStamped`` -> ``(pos (3,), quat_wxyz (4,))`` float64."""
    p, q = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.w, q.x, q.y, q.z])


def image_msg(rgb: np.ndarray, frame_id: str, stamp_s: float):
    """``sensor_msgs/Image`` (``rgb8``) of an ``(H, W, 3) uint8`` RGB array."""
    from sensor_msgs.msg import Image

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {rgb.shape}")
    msg = Image()
    msg.header.frame_id = frame_id
    msg.header.stamp = s_to_stamp(stamp_s)
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    msg.data = rgb.tobytes()
    return msg


def image_from_msg(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``(H, W, 3) uint8`` RGB (``rgb8``, or ``bgr8`` with the channels swapped).

    Raises:
        ValueError: another encoding, or a ``step``/``data`` size that does not match ``height x width``.
    """
    if msg.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"encoding {msg.encoding!r} (rgb8 or bgr8)")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if step < 3 * w or data.size != h * step or h < 1 or w < 1:
        raise ValueError(f"{h}x{w} image with step {step} but {data.size} bytes")
    rgb = data.reshape(h, step)[:, :3 * w].reshape(h, w, 3)
    return np.ascontiguousarray(rgb[..., ::-1] if msg.encoding == "bgr8" else rgb)


def joint_state_msg(names: Sequence[str], position: Sequence[float], velocity: Sequence[float], stamp_s: float):
    """``sensor_msgs/JointState`` (rad / m, rad/s / m/s)."""
    from sensor_msgs.msg import JointState

    msg = JointState()
    msg.header.stamp = s_to_stamp(stamp_s)
    msg.name = list(names)
    msg.position = [float(v) for v in position]
    msg.velocity = [float(v) for v in velocity]
    return msg


def joint_arrays(msg, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities of ``names`` (in that order) from a ``JointState``.

    Extra joints in the message are ignored (a real robot may publish more).

    Raises:
        ValueError: a joint of ``names`` is missing, or position/velocity lengths do not match ``name``.
    """
    if len(msg.position) != len(msg.name) or len(msg.velocity) != len(msg.name):
        raise ValueError(f"joint_states: {len(msg.name)} names but {len(msg.position)} positions and "
                         f"{len(msg.velocity)} velocities")
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"joint_states: missing joints {missing} (got {list(msg.name)})")
    idx = [index[n] for n in names]
    return np.asarray(msg.position, dtype=np.float64)[idx], np.asarray(msg.velocity, dtype=np.float64)[idx]


@dataclass
class _Latest:
    value: Any
    stamp_s: float  #: header stamp (s)
    received_s: float  #: node clock at reception (s)


class ObservationUnavailable(RuntimeError):
    """No complete, valid observation yet (the message says which input is missing)."""


# ----------------------------------------------------------------------------------------------
# Field sources: what a real robot and its perception provide for each observation field

#: Entities a field's source can name, and the input (topic) that carries each one's pose.
ENTITY_POSE_INPUTS = {"tcp": "ee_pose", "object": "object_pose", "goal": "goal_pose", "tool": "tool_pose",
                      "hole": "hole_pose"}
#: Entities with a size, and the input that carries it (``geometry_msgs/Vector3Stamped``: half extents, m).
ENTITY_SIZE_INPUTS = {"object": "object_size", "tool": "tool_size", "hole": "hole_size"}
#: Every input the node knows: one topic each (``TopicsConfig``), with the header stamp the watchdog checks.
INPUTS = ("joint_states", *ENTITY_POSE_INPUTS.values(), *ENTITY_SIZE_INPUTS.values())
POSE_INPUTS = tuple(ENTITY_POSE_INPUTS.values())
SIZE_INPUTS = tuple(ENTITY_SIZE_INPUTS.values())

#: Statuses of an incoming message.
ACCEPTED, REJECTED, IGNORED = "accepted", "rejected", "ignored"

_TERM = re.compile(r"^(?P<func>[a-z_]+)(?:\((?P<args>[^)]*)\))?(?:\.(?P<attr>[a-z]+))?(?:\[(?P<index>\d+)\])?$")


@dataclass(frozen=True)
class _Term:
    sign: float  #: +1 or -1
    func: str
    entity: str | None
    args: tuple[str, ...]
    index: int | None

    def inputs(self) -> set[str]:
        if self.func in ("joints", "gripper_width"):
            return {"joint_states"}
        if self.func == "const":
            return set()
        if self.func == "size":
            return {ENTITY_SIZE_INPUTS[self.entity]}
        if self.func == "grasp":
            return {"joint_states", "ee_pose", ENTITY_POSE_INPUTS[self.entity]}
        return {ENTITY_POSE_INPUTS[self.entity]}


def parse_source(source: str) -> list[_Term]:
    """Parse an :class:`~robot_rl.observation.ObsField` ``source``: terms joined by ``" + "`` and ``" - "``.

    Terms (positions in ManiSkill's world frame, m; the node moves poses there from the robot base frame):

    * ``joints.position`` / ``joints.velocity``: the configured joints of ``JointState`` (rad, m / rad/s, m/s);
    * ``pose(E, +c)``: entity ``E``'s position and ``wxyz`` quaternion (7), the quaternion's sign chosen so
      its component ``c`` (``w``, ``x``, ``y`` or ``z``) is >= 0, the hemisphere the simulator keeps it in;
    * ``position(E)``: ``E``'s position (3);
    * ``quat(E)`` / ``quat(E, +c)``: ``E``'s ``wxyz`` quaternion (4), as the message carries it or in a hemisphere;
    * ``size(E)``: ``E``'s half extents along its own axes, m (3); ``size(E)[i]`` one of them;
    * ``grasp(E, W)``: 1.0 when the gripper holds ``E``, an object ``W`` m wide across the fingers, else 0.0
      (:func:`robot_rl.deploy.grasp.grasp_flag`);
    * ``gripper_width``: the sum of the finger joints' positions (1, m; float32, as ManiSkill sums them);
    * ``const(a, ...)``: a constant vector of any length >= 1.

    Entities: :data:`ENTITY_POSE_INPUTS` (``tcp``, ``object``, ``goal``, ``tool``, ``hole``). A field's value is
    evaluated left to right in float32 from the float32 values the messages carry, as the simulator computes
    it, so ``position(object) - position(tcp)`` is the simulator's own number bit for bit.

    Raises:
        ValueError: a term, function or entity it does not know (the message names it).
    """
    tokens = re.split(r"\s+([+-])\s+", str(source).strip())
    terms = []
    for k in range(0, len(tokens), 2):
        text, sign = tokens[k].strip(), (1.0 if k == 0 or tokens[k - 1] == "+" else -1.0)
        m = _TERM.match(text)
        if m is None:
            raise ValueError(f"observation source {source!r}: cannot parse {text!r}")
        func, args = m["func"], tuple(a.strip() for a in (m["args"] or "").split(",") if a.strip())
        index = int(m["index"]) if m["index"] is not None else None
        if func == "joints":
            if m["attr"] not in ("position", "velocity"):
                raise ValueError(f"observation source {source!r}: joints.position or joints.velocity, got {text!r}")
            terms.append(_Term(sign, "joints", None, (m["attr"],), index))
            continue
        if func == "const":
            try:
                [float(a) for a in args]
            except ValueError:
                args = ()
            if not args:
                raise ValueError(f"observation source {source!r}: const takes 1 or more numbers, got {text!r}")
            terms.append(_Term(sign, "const", None, args, index))
            continue
        if func == "gripper_width" and m["args"] is None:
            terms.append(_Term(sign, "gripper_width", None, (), index))
            continue
        if func not in ("pose", "position", "quat", "size", "grasp") or not args:
            raise ValueError(f"observation source {source!r}: unknown term {text!r} (known: joints.position, "
                             "joints.velocity, pose(E, +c), position(E), quat(E), size(E), grasp(E, W), "
                             "gripper_width, const(a, ...))")
        entity = args[0]
        table = ENTITY_SIZE_INPUTS if func == "size" else ENTITY_POSE_INPUTS
        if entity not in table:
            raise ValueError(f"observation source {source!r}: {func}() of unknown entity {entity!r} "
                             f"(known: {', '.join(table)})")
        terms.append(_Term(sign, func, entity, args[1:], index))
    return terms


class ObservationAssembler:
    """Keeps the latest valid input messages and builds the policy observation from them, group by group.

    Each ``state`` field names its ROS source (:attr:`robot_rl.observation.ObsField.source`,
    :func:`parse_source`); the inputs those sources read are the node's *required* inputs (the watchdog
    guards them). The ``teacher`` group's fields name ``teacher(...)`` sources: the node's teacher channel
    (:mod:`robot_rl.deploy.teacher`) computes that vector and :meth:`observation` joins it. ``privileged``
    fields (a served teacher's privileged state) are assembled from their sources by :meth:`privileged_state`;
    the inputs they read besides the required ones are *teacher inputs*: accepted and kept, never guarded by
    the watchdog. A message on another input is ignored and counted (:attr:`ignored`).

    Args:
        schema: the policy's :class:`~robot_rl.observation.ObservationSchema` (from its sidecar).
        joint_names: JointState names in the policy's ``qpos``/``qvel`` order.
        base_frame: the ``frame_id`` every pose must carry.
        base_in_world: the robot base pose in the policy's (simulator's) world frame,
            ``(position (3,) m, quaternion wxyz (4,))`` (sidecar ``observation.robot_base_pose_world``;
            ManiSkill's tabletop tasks put the Panda base at ``(-0.615, 0, 0)``). Poses arrive in the
            base frame, as a real robot reports them, and are moved into the world frame here.

        privileged: fields of a served teacher's privileged state, each with a ROS source
            (:func:`robot_rl.envs.privileged.privileged_fields`), or None.
        history_s: keep the EE poses and gripper widths of the last ``history_s`` seconds (header stamps) for
            :meth:`motion_at`; None keeps none.
        future_stamp_tolerance_s: a message whose header stamp is more than this ahead of the node's clock at
            reception comes from a clock that runs ahead of this machine's (a clock offset between two machines):
            it is accepted (the watchdog measures age on the node's receive clock, so an offset cannot hold the
            arm for good) and counted per input in :meth:`diagnostics` (``future_stamps.<input>``, the offset in
            ``clock_offset_s.<input>``), which the node reports in its diagnostics and status.

    Clocks: every input keeps its header stamp (the sender's clock: it dates the observation a teacher answer is
    for, and the EE pose history) and its reception time on the node's clock (``now_s`` of the ``update_*`` call):
    :meth:`receive_times` is what the watchdog checks, :meth:`stamp_delays` what the transport and the sender's
    clock add (``reception - stamp``; negative when the sender's clock is ahead).

    Raises:
        ValueError: a group the node has no source for, a ``state`` or ``privileged`` field without a (valid) ROS
            source, a source whose size differs from its field's, or a ``teacher`` group that is not this
            version's (:func:`robot_rl.interface.delayed.features_of_group`); the message names the group and the
            field.
    """

    #: Groups this node assembles: ``state`` from its sources, ``teacher`` (issue 12) and ``memory`` (the
    #: scratchpad, issue 13) from the teacher channel.
    GROUPS = ("state", "teacher", "memory")

    def __init__(self, schema, joint_names: Sequence[str], base_frame: str,
                 base_in_world: tuple[Sequence[float], Sequence[float]] = ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0)),
                 privileged: Sequence[Any] | None = None, history_s: float | None = None,
                 future_stamp_tolerance_s: float = 0.01):
        from robot_rl.interface.delayed import features_of_group

        self.schema = schema
        for g in schema.groups:
            if g.name not in self.GROUPS:
                raise ValueError(f"observation group {g.name!r} (first field {g.fields[0].name!r}) has no source in "
                                 f"this node (it assembles: {', '.join(self.GROUPS)})")
        #: The ``teacher`` group's features (``interface.features``), or None without the group.
        self.teacher_features: tuple[str, ...] | None = None
        if "teacher" in schema.group_names:
            self.teacher_features = features_of_group(schema.group("teacher"))
        #: The ``memory`` group's :class:`~robot_rl.memory.MemorySpec`, or None without the group.
        self.memory_spec = None
        if "memory" in schema.group_names:
            from robot_rl.memory import MemorySpec

            self.memory_spec = MemorySpec.from_group(schema.group("memory"))
        self.base_p = np.asarray(base_in_world[0], dtype=np.float64)
        self.base_q = np.asarray(base_in_world[1], dtype=np.float64)
        self.joint_names = list(joint_names)
        self.base_frame = base_frame
        self.obs_dim = schema.size
        self.fields, needed = self._compile(schema.group("state").fields, "state")
        #: Inputs the observation reads, in :data:`INPUTS` order: the watchdog guards exactly these.
        self.required_inputs: tuple[str, ...] = tuple(k for k in INPUTS if k in needed)
        self.privileged: list[tuple[str, int, list[_Term]]] | None = None
        teacher_needed: set[str] = set()
        if privileged is not None:
            self.privileged, teacher_needed = self._compile(privileged, "privileged")
        #: Inputs only the privileged state reads (a served teacher's): kept, never guarded by the watchdog.
        self.teacher_inputs: tuple[str, ...] = tuple(k for k in INPUTS
                                                     if k in teacher_needed and k not in self.required_inputs)
        self.latest: dict[str, _Latest] = {}
        self.world: dict[str, tuple[np.ndarray, np.ndarray]] = {}  #: poses moved into the world frame
        self.rejected: Counter = Counter()  #: ``"input: reason"`` -> count
        self.ignored: Counter = Counter()  #: input -> messages on an input the observation does not read
        self.last_rejection = ""
        self.future_stamp_tolerance_s = float(future_stamp_tolerance_s)
        self.future_stamps: Counter = Counter()  #: input -> messages stamped ahead of the node's clock
        self.clock_offset_s: dict[str, float] = {}  #: input -> how far ahead its latest future stamp was (s)
        self.history_s = None if history_s is None else float(history_s)
        self._poses: deque = deque()  #: (stamp s, world position (3,), quaternion wxyz (4,)) of ee_pose
        self._widths: deque = deque()  #: (stamp s, gripper width m) of joint_states
        self.history_misses = 0  #: :meth:`motion_at` asked for a stamp older than the history

    def _compile(self, fields: Sequence[Any], group: str) -> tuple[list[tuple[str, int, list[_Term]]], set[str]]:
        """``[(name, size, terms)]`` of ``fields`` and the inputs they read."""
        out, needed = [], set()
        for f in fields:
            if not f.source:
                raise ValueError(f"observation field {group}.{f.name} has no ROS source (re-export the policy with "
                                 "this version of robot_rl, whose layouts name one for every field)")
            try:
                terms = parse_source(f.source)
            except ValueError as exc:
                raise ValueError(f"observation field {group}.{f.name}: {exc}") from None
            size = _source_size(terms, len(self.joint_names))
            if size != f.size:
                raise ValueError(f"observation field {group}.{f.name} has size {f.size} but its source {f.source!r} "
                                 f"gives {size} values")
            out.append((f.name, f.size, terms))
            for t in terms:
                needed |= t.inputs()
        return out, needed

    # -- inputs ----------------------------------------------------------------------------------

    def _store(self, key: str, value: Any, stamp_s: float, now_s: float) -> None:
        """Keep ``value`` as input ``key``'s latest, received at ``now_s`` (node clock); note a future stamp."""
        self.latest[key] = _Latest(value, stamp_s, now_s)
        if stamp_s - now_s > self.future_stamp_tolerance_s:
            self.future_stamps[key] += 1
            self.clock_offset_s[key] = stamp_s - now_s

    def _reject(self, key: str, reason: str) -> str:
        self.rejected[f"{key}: {reason}"] += 1
        self.last_rejection = f"{key}: {reason}"
        return REJECTED

    def _unused(self, key: str) -> bool:
        if key in self.required_inputs or key in self.teacher_inputs:
            return False
        self.ignored[key] += 1
        return True

    def update_joint_state(self, msg, now_s: float) -> str:
        """Store a ``JointState``; returns :data:`ACCEPTED`, :data:`REJECTED` (counted with its reason) or
        :data:`IGNORED` (the observation reads no joints; counted).
        """
        if self._unused("joint_states"):
            return IGNORED
        try:
            q, dq = joint_arrays(msg, self.joint_names)
        except ValueError as exc:
            return self._reject("joint_states", str(exc).split(": ", 1)[-1])
        if not (np.isfinite(q).all() and np.isfinite(dq).all()):
            return self._reject("joint_states", "NaN or inf")
        stamp = stamp_to_s(msg.header.stamp)
        self._store("joint_states", (q, dq), stamp, now_s)
        if self.history_s is not None:
            self._remember(self._widths, (stamp, self._width(q)))
        return ACCEPTED

    def update_pose(self, key: str, msg, now_s: float) -> str:
        """Store a ``PoseStamped`` for pose input ``key`` (:data:`POSE_INPUTS`); see :meth:`update_joint_state`."""
        if key not in POSE_INPUTS:
            raise ValueError(f"unknown pose input {key!r} (known: {', '.join(POSE_INPUTS)})")
        if self._unused(key):
            return IGNORED
        if msg.header.frame_id != self.base_frame:
            return self._reject(key, f"frame_id {msg.header.frame_id!r} is not {self.base_frame!r}")
        pos, quat = pose_from_msg(msg)
        if not (np.isfinite(pos).all() and np.isfinite(quat).all()):
            return self._reject(key, "NaN or inf")
        if abs(np.linalg.norm(quat) - 1.0) > 1e-3:
            return self._reject(key, f"quaternion norm {np.linalg.norm(quat):.4f} is not 1")
        stamp = stamp_to_s(msg.header.stamp)
        self._store(key, (pos, quat), stamp, now_s)
        self.world[key] = pose_from_frame(pos, quat, self.base_p, self.base_q)
        if key == "ee_pose" and self.history_s is not None:
            self._remember(self._poses, (stamp, *self.world[key]))
        return ACCEPTED

    def _remember(self, history: deque, entry: tuple) -> None:
        """Append ``entry`` (stamp first) and drop the entries older than ``history_s`` before the newest."""
        if history and entry[0] < history[-1][0]:  # out of order (a replayed or reordered message): keep sorted
            items = sorted([*history, entry], key=lambda e: e[0])
            history.clear()
            history.extend(items)
        else:
            history.append(entry)
        while len(history) > 1 and history[0][0] < history[-1][0] - self.history_s:
            history.popleft()

    def update_size(self, key: str, msg, now_s: float) -> str:
        """Store a ``Vector3Stamped`` of half extents (m, the entity's own axes) for size input ``key``
        (:data:`SIZE_INPUTS`); see :meth:`update_joint_state`. Sizes must be finite and > 0.
        """
        if key not in SIZE_INPUTS:
            raise ValueError(f"unknown size input {key!r} (known: {', '.join(SIZE_INPUTS)})")
        if self._unused(key):
            return IGNORED
        v = np.array([msg.vector.x, msg.vector.y, msg.vector.z], dtype=np.float64)
        if not np.isfinite(v).all():
            return self._reject(key, "NaN or inf")
        if not (v > 0).all():
            return self._reject(key, f"half extents {v.tolist()} must be > 0")
        self._store(key, v, stamp_to_s(msg.header.stamp), now_s)
        return ACCEPTED

    # -- output ----------------------------------------------------------------------------------

    def stamps(self) -> dict[str, float]:
        """Header stamp (s) of the latest valid message of each required input received so far (what the
        watchdog checks: the teacher inputs are not in it).
        """
        return {k: v.stamp_s for k, v in self.latest.items() if k in self.required_inputs}

    def receive_times(self) -> dict[str, float]:
        """When (node clock, s) the latest valid message of each required input was received: what the watchdog
        checks, so a sender whose clock is offset from this machine's cannot make the arm hold for good.
        """
        return {k: v.received_s for k, v in self.latest.items() if k in self.required_inputs}

    def stamp_delays(self) -> dict[str, float]:
        """``reception - header stamp`` (s) of the latest valid message of every input: the transport delay plus
        the offset of the sender's clock from the node's (negative: the sender's clock is ahead).
        """
        return {k: v.received_s - v.stamp_s for k, v in self.latest.items()}

    def teacher_stamps(self) -> dict[str, float]:
        """Header stamp (s) of the latest valid message of each teacher input received so far."""
        return {k: v.stamp_s for k, v in self.latest.items() if k in self.teacher_inputs}

    @property
    def gather_inputs(self) -> tuple[str, ...]:
        """The inputs a step waits for (``input_gather_s``): the required ones and the teacher inputs."""
        return self.required_inputs + self.teacher_inputs

    def observation(self, teacher: np.ndarray | None = None, memory: np.ndarray | None = None) -> np.ndarray:
        """``(obs_dim,) float32`` in the schema's order.

        Args:
            teacher: the ``teacher`` group's vector ``(size,)`` (:mod:`robot_rl.deploy.teacher`), when the schema
                has the group.
            memory: the ``memory`` group's vector ``(spec.size,)`` (the scratchpad's,
                :meth:`TeacherChannel.memory_vector <robot_rl.deploy.teacher.TeacherChannel.memory_vector>`), when
                the schema has the group.

        Raises:
            ObservationUnavailable: a required input has not been received (valid) yet.
            ValueError: the schema has a ``teacher`` (``memory``) group and ``teacher`` (``memory``) is missing or of
                the wrong size.
        """
        missing = [k for k in self.required_inputs if k not in self.latest]
        if missing:
            raise ObservationUnavailable(f"no valid message yet on {', '.join(missing)}")
        parts = {"state": np.concatenate([self._evaluate(terms).reshape(-1) for _, _, terms in self.fields])}
        if self.teacher_features is not None:
            if teacher is None:
                raise ValueError("the observation has a teacher group: pass its vector (teacher=)")
            parts["teacher"] = np.asarray(teacher, dtype=np.float32).reshape(-1)
        if self.memory_spec is not None:
            if memory is None:
                raise ValueError("the observation has a memory group: pass the scratchpad's vector (memory=)")
            parts["memory"] = np.asarray(memory, dtype=np.float32).reshape(-1)
        return self.schema.join(parts)

    def privileged_state(self) -> np.ndarray:
        """``(S,) float32``: the privileged fields (``privileged``) from the latest valid messages.

        Raises:
            ObservationUnavailable: no privileged fields were given, or an input they read has not arrived.
        """
        if self.privileged is None:
            raise ObservationUnavailable("this node assembles no privileged state for its task")
        missing = [k for k in self.gather_inputs if k not in self.latest]
        if missing:
            raise ObservationUnavailable(f"no valid message yet on {', '.join(missing)}")
        return np.concatenate([self._evaluate(terms).reshape(-1) for _, _, terms in self.privileged]).astype(
            np.float32)

    def motion_now(self) -> tuple[np.ndarray, np.ndarray, float]:
        """``(tcp position (3,) m, world frame; quaternion wxyz (4,); gripper width m)`` of the latest valid
        EE pose and joint state (the current observation's).

        Raises:
            ObservationUnavailable: no EE pose or joint state yet.
        """
        if "ee_pose" not in self.world or "joint_states" not in self.latest:
            raise ObservationUnavailable("no valid EE pose and joint state yet")
        pos, quat = self.world["ee_pose"]
        return pos, quat, self._width(self.latest["joint_states"].value[0])

    def motion_at(self, stamp_s: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Like :meth:`motion_now`, as the robot reported it at header stamp ``stamp_s``: the newest EE pose and
        joint state stamped at or before it (the oldest kept, counted in ``history_misses``, when the history
        does not reach back so far).

        Raises:
            ObservationUnavailable: no history (``history_s`` None) or nothing in it yet.
        """
        if not self._poses or not self._widths:
            raise ObservationUnavailable("no EE pose and joint state history yet")
        pose, missed = _at(self._poses, stamp_s)
        width, missed_w = _at(self._widths, stamp_s)
        self.history_misses += int(missed or missed_w)
        return pose[1], pose[2], width[1]

    def _width(self, q: np.ndarray) -> float:
        return float(_finger_sum(q, self.joint_names))

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Latest valid ``(pos (3,), quat_wxyz (4,))`` of the end effector (TCP), in the base frame."""
        if "ee_pose" not in self.latest:
            raise ObservationUnavailable("no valid message yet on ee_pose")
        return self.latest["ee_pose"].value

    def diagnostics(self) -> dict:
        """Input counters: ``rejected.<input: reason>``, ``ignored.<input>``, ``stamp_delay_s.<input>``
        (:meth:`stamp_delays`), ``future_stamps.<input>`` and ``clock_offset_s.<input>`` (stamps ahead of the node's
        clock by more than ``future_stamp_tolerance_s``), totals and the last rejection.
        """
        out = {f"rejected.{k}": v for k, v in self.rejected.items()}
        out.update({f"ignored.{k}": v for k, v in self.ignored.items()})
        out["rejected_total"] = sum(self.rejected.values())
        out["ignored_total"] = sum(self.ignored.values())
        out.update({f"stamp_delay_s.{k}": round(v, 6) for k, v in self.stamp_delays().items()})
        out.update({f"future_stamps.{k}": v for k, v in self.future_stamps.items()})
        out.update({f"clock_offset_s.{k}": round(v, 6) for k, v in self.clock_offset_s.items()})
        out["future_stamps_total"] = sum(self.future_stamps.values())
        if self.history_s is not None:
            out["history_misses"] = self.history_misses
        out["last_rejection"] = self.last_rejection
        return out

    def _evaluate(self, terms: list[_Term]) -> np.ndarray:
        # float32, left to right: the simulator's own arithmetic on the same float32 values
        value = None
        for t in terms:
            v = self._term(t).astype(np.float32)
            value = (v if t.sign > 0 else -v) if value is None else (value + v if t.sign > 0 else value - v)
        return value

    def _term(self, t: _Term) -> np.ndarray:
        if t.func == "joints":
            q, dq = self.latest["joint_states"].value
            v = q if t.args[0] == "position" else dq
        elif t.func == "const":
            v = np.array([float(a) for a in t.args], dtype=np.float32)
        elif t.func == "gripper_width":
            v = np.array([_finger_sum(self.latest["joint_states"].value[0], self.joint_names)], dtype=np.float32)
        elif t.func == "size":
            v = self.latest[ENTITY_SIZE_INPUTS[t.entity]].value
        elif t.func == "grasp":
            q = self.latest["joint_states"].value[0]
            width = float(sum(q[i] for i, n in enumerate(self.joint_names) if _is_finger(n)))
            tcp_p, tcp_q = self.world["ee_pose"]
            obj = self.world[ENTITY_POSE_INPUTS[t.entity]][0]
            v = grasp_flag(width, tcp_p, tcp_q, obj, float(t.args[0])).astype(np.float64)
        else:
            pos, quat = self.world[ENTITY_POSE_INPUTS[t.entity]]
            if t.func == "position":
                v = pos
            else:
                q = canonical_quat(quat, t.args[0] if t.args else "")
                v = np.concatenate([pos, q]) if t.func == "pose" else q
        v = np.asarray(v).reshape(-1)
        return v[t.index:t.index + 1] if t.index is not None else v


def _is_finger(name: str) -> bool:
    return "finger" in name


def _finger_sum(q: np.ndarray, names: Sequence[str]) -> np.float32:
    """The gripper width (m): the finger joints' positions summed in float32, left to right (as ManiSkill's
    ``qpos[:, fingers].sum(dim=1)`` on float32 does).
    """
    total = np.float32(0.0)
    for i, n in enumerate(names):
        if _is_finger(n):
            total = np.float32(total + np.float32(q[i]))
    return total


def _at(history: deque, stamp_s: float) -> tuple[tuple, bool]:
    """The newest entry of a stamp-sorted history stamped at or before ``stamp_s`` (1 ns of slack), and whether
    the history did not reach back so far (then its oldest entry).
    """
    for entry in reversed(history):  # the stamps asked for are recent: search from the newest
        if entry[0] <= stamp_s + 1e-9:
            return entry, False
    return history[0], True


def _source_size(terms: list[_Term], n_joints: int) -> int:
    sizes = set()
    for t in terms:
        base = {"joints": n_joints, "pose": 7, "position": 3, "quat": 4, "const": len(t.args), "size": 3, "grasp": 1,
                "gripper_width": 1}[t.func]
        sizes.add(1 if t.index is not None else base)
    if len(sizes) != 1:
        raise ValueError(f"terms of different sizes {sorted(sizes)} cannot be added")
    return sizes.pop()


def canonical_quat(quat_wxyz: np.ndarray, sign: str) -> np.ndarray:
    """``quat`` or ``-quat`` (the same rotation), whichever has component ``sign`` >= 0 (``"+w"``, ``"+x"``, ...;
    ``""`` keeps it as it is). ManiSkill does not canonicalize, but each pose of a task stays in one hemisphere
    almost always (measured per field, :mod:`robot_rl.envs.obs_layout`), and the policy learned that sign.
    """
    if not sign:
        return quat_wxyz
    idx = "wxyz".index(sign.lstrip("+"))
    return -quat_wxyz if quat_wxyz[idx] < 0 else quat_wxyz
