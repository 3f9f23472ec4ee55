"""ROS 2 messages <-> the simulator's state vector: conversions and the policy node's observation assembly.

Conventions: ROS quaternions are ``(x, y, z, w)``, ManiSkill's ``(w, x, y, z)``; all poses are in
the robot base frame (``FramesConfig.base``, ``panda_link0``), positions in m, joint positions in
rad (arm) and m (fingers), joint velocities in rad/s and m/s. ROS message fields are float64, so a
float32 simulator value survives ``sim -> msg -> obs`` exactly (tests/deploy pin this).

:class:`ObservationAssembler` rebuilds the policy's observation from the latest messages in the
exact layout of :func:`robot_rl.envs.obs_layout.observation_layout` (ordering, frames, units). A
message with NaN/inf, wrong joint names or count, or a wrong ``frame_id`` is rejected (counted by
reason) and the previous good one is kept, so its age grows and the safety filter's watchdog holds.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from robot_rl.geometry import pose_from_frame

#: Input names, each one ROS topic (``TopicsConfig``), with the stamp the watchdog checks.
INPUTS = ("joint_states", "ee_pose", "object_pose", "goal_pose")


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


def pose_from_msg(msg) -> tuple[np.ndarray, np.ndarray]:
    """``PoseStamped`` -> ``(pos (3,), quat_wxyz (4,))`` float64."""
    p, q = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.w, q.x, q.y, q.z])


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


class ObservationAssembler:
    """Keeps the latest valid input messages and builds the policy observation from them.

    Args:
        layout: the sidecar's observation layout: a sequence of ``{"name", "size", ...}`` dicts or
            objects with ``name``/``size`` (``robot_rl.envs.obs_layout.ObsField``).
        joint_names: JointState names in the policy's ``qpos``/``qvel`` order.
        base_frame: the ``frame_id`` every pose must carry.
        base_in_world: the robot base pose in the policy's (simulator's) world frame,
            ``(position (3,) m, quaternion wxyz (4,))`` (sidecar ``observation.robot_base_pose_world``;
            ManiSkill's tabletop tasks put the Panda base at ``(-0.615, 0, 0)``). Poses arrive in the
            base frame, as a real robot reports them, and are moved into the world frame here.

    Raises:
        ValueError: a layout field with no ROS source (the message names it).
    """

    def __init__(self, layout: Sequence[Any], joint_names: Sequence[str], base_frame: str,
                 base_in_world: tuple[Sequence[float], Sequence[float]] = ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0))):
        self.base_p = np.asarray(base_in_world[0], dtype=np.float64)
        self.base_q = np.asarray(base_in_world[1], dtype=np.float64)
        self.fields = [(_get(f, "name"), int(_get(f, "size"))) for f in layout]
        self.joint_names = list(joint_names)
        self.base_frame = base_frame
        self.obs_dim = sum(size for _, size in self.fields)
        self.latest: dict[str, _Latest] = {}
        self.world: dict[str, tuple[np.ndarray, np.ndarray]] = {}  #: poses moved into the world frame
        self.rejected: Counter = Counter()  #: ``"input: reason"`` -> count
        self.last_rejection = ""
        unknown = [name for name, _ in self.fields if name not in _SOURCES]
        if unknown:
            raise ValueError(f"observation fields {unknown} have no ROS source; known: {sorted(_SOURCES)}")
        for name, size in self.fields:
            want = _SOURCE_SIZES.get(name)
            if want is not None and size != want:
                raise ValueError(f"observation field {name!r} has size {size}, expected {want}")

    # -- inputs ----------------------------------------------------------------------------------

    def _reject(self, key: str, reason: str) -> bool:
        self.rejected[f"{key}: {reason}"] += 1
        self.last_rejection = f"{key}: {reason}"
        return False

    def update_joint_state(self, msg, now_s: float) -> bool:
        """Store a ``JointState``; returns False (and counts why) when it is rejected."""
        try:
            q, dq = joint_arrays(msg, self.joint_names)
        except ValueError as exc:
            return self._reject("joint_states", str(exc).split(": ", 1)[-1])
        if not (np.isfinite(q).all() and np.isfinite(dq).all()):
            return self._reject("joint_states", "NaN or inf")
        self.latest["joint_states"] = _Latest((q, dq), stamp_to_s(msg.header.stamp), now_s)
        return True

    def update_pose(self, key: str, msg, now_s: float) -> bool:
        """Store a ``PoseStamped`` for input ``key`` (``ee_pose``, ``object_pose``, ``goal_pose``)."""
        if msg.header.frame_id != self.base_frame:
            return self._reject(key, f"frame_id {msg.header.frame_id!r} is not {self.base_frame!r}")
        pos, quat = pose_from_msg(msg)
        if not (np.isfinite(pos).all() and np.isfinite(quat).all()):
            return self._reject(key, "NaN or inf")
        if abs(np.linalg.norm(quat) - 1.0) > 1e-3:
            return self._reject(key, f"quaternion norm {np.linalg.norm(quat):.4f} is not 1")
        self.latest[key] = _Latest((pos, quat), stamp_to_s(msg.header.stamp), now_s)
        self.world[key] = pose_from_frame(pos, quat, self.base_p, self.base_q)
        return True

    # -- output ----------------------------------------------------------------------------------

    def stamps(self) -> dict[str, float]:
        """Header stamp (s) of the latest valid message of each input received so far."""
        return {k: v.stamp_s for k, v in self.latest.items()}

    def observation(self) -> np.ndarray:
        """``(obs_dim,) float32`` in the layout's order.

        Raises:
            ObservationUnavailable: an input has not been received (valid) yet.
        """
        missing = [k for k in INPUTS if k not in self.latest]
        if missing:
            raise ObservationUnavailable(f"no valid message yet on {', '.join(missing)}")
        parts = [np.asarray(_SOURCES[name](self), dtype=np.float64).reshape(-1) for name, _ in self.fields]
        return np.concatenate(parts).astype(np.float32)

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Latest valid ``(pos (3,), quat_wxyz (4,))`` of the end effector (TCP), in the base frame."""
        if "ee_pose" not in self.latest:
            raise ObservationUnavailable("no valid message yet on ee_pose")
        return self.latest["ee_pose"].value


def _get(field: Any, key: str) -> Any:
    return field[key] if isinstance(field, dict) else getattr(field, key)


#: q and -q are the same rotation. ManiSkill does not canonicalize, but its TCP quaternion has
#: qx > 0 on 99.9% of steps and the cube's w >= 0 on ~97% (measured over 1500 random steps,
#: robot_rl.envs.obs_layout), so a pose from ROS is put into that hemisphere: index of the
#: component kept >= 0, per pose input.
QUAT_HEMISPHERE = {"ee_pose": 1, "object_pose": 0}


def canonical_quat(quat_wxyz: np.ndarray, key: str) -> np.ndarray:
    """``quat`` or ``-quat``, whichever has component :data:`QUAT_HEMISPHERE` ``[key]`` >= 0."""
    idx = QUAT_HEMISPHERE.get(key)
    return -quat_wxyz if idx is not None and quat_wxyz[idx] < 0 else quat_wxyz


def _pose7(a: ObservationAssembler, key: str) -> np.ndarray:
    pos, quat = a.world[key]
    return np.concatenate([pos, canonical_quat(quat, key)])


def _pos(a: ObservationAssembler, key: str) -> np.ndarray:
    return a.world[key][0]


#: Observation field name -> how to compute it from the latest messages, in the world frame
#: (ManiSkill ``_get_obs_agent`` / ``_get_obs_extra`` of PushCube and PickCube).
_SOURCES: dict[str, Callable[[ObservationAssembler], np.ndarray]] = {
    "qpos": lambda a: a.latest["joint_states"].value[0],
    "qvel": lambda a: a.latest["joint_states"].value[1],
    "tcp_pose": lambda a: _pose7(a, "ee_pose"),
    "obj_pose": lambda a: _pose7(a, "object_pose"),
    "goal_pos": lambda a: _pos(a, "goal_pose"),
    "tcp_to_obj_pos": lambda a: _pos(a, "object_pose") - _pos(a, "ee_pose"),
    "obj_to_goal_pos": lambda a: _pos(a, "goal_pose") - _pos(a, "object_pose"),
}
_SOURCE_SIZES = {"tcp_pose": 7, "obj_pose": 7, "goal_pos": 3, "tcp_to_obj_pos": 3, "obj_to_goal_pos": 3}
