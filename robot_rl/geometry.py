"""Rotations, frames and the ``pd_ee_delta_pose`` action convention: the one home of robot_rl's geometry.

Planners (:mod:`robot_rl.teachers.plans`), the safety filter and the ROS 2 I/O (:mod:`robot_rl.deploy`),
the sim bridge and the recorder import it; nothing else writes rotation maths.

Conventions:

* Quaternions are ``wxyz`` (ManiSkill's order; ROS messages are ``xyzw``: convert at the message),
  Hamilton product, active rotations: ``R(quat_multiply(q1, q2)) = R(q1) @ R(q2)``, so
  ``quat_multiply(q_delta, q)`` applies ``q_delta`` about the *fixed* (base) axes after ``q``.
* Euler angles are *intrinsic* XYZ: ``R = Rx(a) @ Ry(b) @ Rz(c)``, the convention of pytorch3d's
  ``euler_angles_to_matrix(.., "XYZ")`` that ManiSkill's ``pd_ee_delta_pose`` controller uses.
* Every function is batched over leading dimensions: ``(..., 4)`` quaternions, ``(..., 3, 3)``
  matrices, ``(..., 3)`` vectors; float64 out.

The conversions lean on :class:`scipy.spatial.transform.Rotation`. Three small functions stay in plain
numpy on purpose: :func:`quat_multiply`, :func:`quat_conjugate` and :func:`quat_to_matrix` run on every
ROS message the policy node receives (up to ~1 kHz of ``current_pose``), and their results must be
bit-exact for the sim -> ROS -> observation round trip (scipy normalizes every quaternion it is given,
which changes the last bits of an already unit quaternion).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    # rotations
    "quat_multiply", "quat_conjugate", "quat_to_matrix", "quat_angle", "matrix_to_quat",
    "quat_from_rotvec", "quat_to_rotvec", "quat_from_euler_xyz", "euler_xyz_to_matrix", "matrix_to_euler_xyz",
    "rotvec_to_matrix", "matrix_to_rotvec", "rotate_about_axis",
    # frames
    "pose_to_frame", "pose_from_frame",
    # the pd_ee_delta_pose action
    "CONTROL_PERIOD_S", "ACTION_DIM", "POS_SLICE", "ROT_SLICE", "GRIPPER_INDEX", "POS_SCALE_M", "ROT_SCALE_RAD",
    "CONTROLLER_ROT_SIGN",
    "rotation_command_to_delta", "rotation_delta_to_command", "physical_rotation_to_command",
]


def _flat(x: np.ndarray, k: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """``(..., k)`` -> ``((N, k), leading shape)`` for scipy, which takes one batch dimension."""
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(-1, k), a.shape[:-1]


def _flat_mat(m: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    a = np.asarray(m, dtype=np.float64)
    return a.reshape(-1, 3, 3), a.shape[:-2]


# ----------------------------------------------------------------------------------------------
# Hot path: plain numpy, exact


def quat_multiply(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Hamilton product ``q1 ⊗ q2`` of ``(..., 4)`` ``wxyz`` quaternions -> ``(..., 4)``.

    As rotations: first ``q2``, then ``q1`` about the fixed frame (``R(q1) @ R(q2)``). No
    normalization: the identity times ``q`` is ``q`` bit for bit.
    """
    a = np.asarray(q1, dtype=np.float64)
    b = np.asarray(q2, dtype=np.float64)
    w1, x1, y1, z1 = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    w2, x2, y2, z2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        -1,
    )


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """``(..., 4)`` ``wxyz`` -> its conjugate (the inverse rotation of a unit quaternion)."""
    return np.asarray(q, dtype=np.float64) * np.array([1.0, -1.0, -1.0, -1.0])


def quat_to_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    """``(..., 4)`` quaternions ``wxyz`` (normalized here) -> ``(..., 3, 3)`` rotation matrices."""
    q = np.asarray(quat_wxyz, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def quat_angle(q: np.ndarray) -> np.ndarray:
    """``(..., 4)`` unit ``wxyz`` -> ``(...)`` rotation angle in [0, π] rad (``q`` and ``-q`` alike)."""
    q = np.asarray(q, dtype=np.float64)
    return 2.0 * np.arctan2(np.linalg.norm(q[..., 1:], axis=-1), np.abs(q[..., 0]))


# ----------------------------------------------------------------------------------------------
# Conversions (scipy)


def matrix_to_quat(mat: np.ndarray) -> np.ndarray:
    """``(..., 3, 3)`` rotation matrices -> ``(..., 4)`` unit ``wxyz`` quaternions with ``w >= 0``."""
    m, lead = _flat_mat(mat)
    return Rotation.from_matrix(m).as_quat(canonical=True, scalar_first=True).reshape(*lead, 4)


def quat_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    """``(..., 3)`` axis-angle vectors (rad; direction = axis, norm = angle) -> ``(..., 4)`` unit ``wxyz``,
    ``w >= 0`` for angles up to π; the zero vector gives the identity exactly.
    """
    v, lead = _flat(rotvec, 3)
    return Rotation.from_rotvec(v).as_quat(scalar_first=True).reshape(*lead, 4)


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """``(..., 4)`` unit ``wxyz`` -> ``(..., 3)`` axis-angle vectors, angle in [0, π] rad (the short way:
    ``q`` and ``-q`` give the same vector).
    """
    a, lead = _flat(q, 4)
    return Rotation.from_quat(a, scalar_first=True).as_rotvec().reshape(*lead, 3)


def quat_from_euler_xyz(angles: np.ndarray) -> np.ndarray:
    """``(..., 3)`` intrinsic XYZ Euler angles (rad) -> ``(..., 4)`` unit ``wxyz`` (``R = Rx Ry Rz``)."""
    e, lead = _flat(angles, 3)
    return Rotation.from_euler("XYZ", e).as_quat(scalar_first=True).reshape(*lead, 4)


def euler_xyz_to_matrix(angles: np.ndarray) -> np.ndarray:
    """``(..., 3)`` intrinsic XYZ Euler angles (rad) -> ``(..., 3, 3)``: ``Rx(a) @ Ry(b) @ Rz(c)``.

    Same convention as ``mani_skill.utils.geometry.rotation_conversions.euler_angles_to_matrix(.., "XYZ")``
    (from pytorch3d), which the ``pd_ee_delta_pose`` controller uses for its rotation delta.
    """
    e, lead = _flat(angles, 3)
    return Rotation.from_euler("XYZ", e).as_matrix().reshape(*lead, 3, 3)


def matrix_to_euler_xyz(mat: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_xyz_to_matrix`: ``(..., 3, 3)`` -> ``(..., 3)`` rad, the middle angle in
    [-π/2, π/2] and the outer two in [-π, π].
    """
    m, lead = _flat_mat(mat)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # gimbal lock: scipy sets the third angle to 0, warns
        return Rotation.from_matrix(m).as_euler("XYZ").reshape(*lead, 3)


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """``(..., 3)`` axis-angle vectors (rad) -> ``(..., 3, 3)`` rotation matrices."""
    v, lead = _flat(rotvec, 3)
    return Rotation.from_rotvec(v).as_matrix().reshape(*lead, 3, 3)


def matrix_to_rotvec(mat: np.ndarray) -> np.ndarray:
    """``(..., 3, 3)`` rotation matrices -> ``(..., 3)`` axis-angle vectors (rad, angle in [0, π])."""
    m, lead = _flat_mat(mat)
    return Rotation.from_matrix(m).as_rotvec().reshape(*lead, 3)


def rotate_about_axis(vectors: np.ndarray, axes: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotate ``(N, 3)`` vectors about unit ``(N, 3)`` axes by ``(N,)`` angles (rad, right-handed)."""
    k = np.asarray(axes, dtype=np.float64)
    a = np.asarray(angles, dtype=np.float64).reshape(-1, 1)
    return Rotation.from_rotvec(k * a).apply(np.asarray(vectors, dtype=np.float64)).reshape(np.shape(vectors))


# ----------------------------------------------------------------------------------------------
# Frames


def pose_to_frame(pos: np.ndarray, quat: np.ndarray, frame_pos: np.ndarray, frame_quat: np.ndarray):
    """A pose given in the parent frame, expressed in a child frame whose pose in the parent is
    ``(frame_pos (3,) m, frame_quat (4,) wxyz)``: ``(R_f^T (p - p_f), q_f^* ⊗ q)``.

    ManiSkill world -> robot base: ``pose_to_frame(p_w, q_w, base_pos_world, base_quat_world)``.
    """
    p = quat_to_matrix(frame_quat).T @ (np.asarray(pos, dtype=np.float64) - np.asarray(frame_pos, dtype=np.float64))
    return p, quat_multiply(quat_conjugate(frame_quat), quat)


def pose_from_frame(pos: np.ndarray, quat: np.ndarray, frame_pos: np.ndarray, frame_quat: np.ndarray):
    """Inverse of :func:`pose_to_frame`: ``(R_f p + p_f, q_f ⊗ q)``; with the identity frame rotation the
    quaternion is returned unchanged, bit for bit (robot base -> ManiSkill world at the ROS node).
    """
    p = quat_to_matrix(frame_quat) @ np.asarray(pos, dtype=np.float64) + np.asarray(frame_pos, dtype=np.float64)
    return p, quat_multiply(frame_quat, quat)


# ----------------------------------------------------------------------------------------------
# The pd_ee_delta_pose action (ManiSkill 3.0.1, Panda; FACTS.md)

#: One action per env step, at ManiSkill's tabletop control rate of 20 Hz (s).
CONTROL_PERIOD_S = 0.05
#: Layout of one ``pd_ee_delta_pose`` action: ``[dx, dy, dz, droll, dpitch, dyaw, gripper]``.
ACTION_DIM = 7
POS_SLICE = slice(0, 3)
ROT_SLICE = slice(3, 6)
GRIPPER_INDEX = 6
#: Physical size of 1.0 normalized action unit per env step: the controller's target, not the motion
#: (the arm lags: a held unit command moves the TCP ~0.04 m per step, teachers/plans/common.py).
POS_SCALE_M = 0.1
ROT_SCALE_RAD = 0.1
#: Sign the controller applies to a rotation command: physical delta = command * 0.1 rad * SIGN
#: (``PDEEPoseController._clip_and_scale_action`` multiplies by ``rot_lower = -0.1``; ManiSkill
#: issue #1469, FACTS.md).
CONTROLLER_ROT_SIGN = -1.0


def rotation_command_to_delta(command: np.ndarray) -> np.ndarray:
    """Map a normalized rotation command to the physical rotation the controller applies.

    Args:
        command: ``(..., 3)`` normalized ``pd_ee_delta_pose`` rotation command (the action's ``[3:6]``),
            per env step.

    Returns:
        ``(..., 3)`` intrinsic XYZ Euler angles in radians, in the robot-base frame, that the controller
        pre-multiplies onto the EE orientation: ``command * 0.1 rad * (-1)``. A +1 command turns the EE by
        -0.1 rad (ManiSkill issue #1469). The controller first rescales a command whose norm exceeds 1 to
        norm 1; this function does not (it is the linear map).
    """
    return np.asarray(command, dtype=np.float64) * (ROT_SCALE_RAD * CONTROLLER_ROT_SIGN)


def rotation_delta_to_command(rpy_rad: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rotation_command_to_delta`: ``(..., 3)`` per-step rotation (intrinsic XYZ Euler,
    rad, robot-base frame) -> ``(..., 3)`` normalized command, ``rpy / (0.1 * -1)``; +0.1 rad -> -1.0.
    """
    return np.asarray(rpy_rad, dtype=np.float64) / (ROT_SCALE_RAD * CONTROLLER_ROT_SIGN)


def physical_rotation_to_command(rotvec_rad: np.ndarray, period_steps: int) -> np.ndarray:
    """Command for a physical rotation spread over ``period_steps`` env steps.

    Args:
        rotvec_rad: ``(..., 3)`` desired rotation over the whole period, axis-angle in the robot-base
            (= world) frame, radians. Its norm should be ``<= 0.1 * period_steps`` (the controller clips
            a per-step command to norm 1).
        period_steps: ``D``; the trainer applies ``command / D`` on each of ``D`` steps.

    Returns:
        ``(..., 3)`` period command: ``D * rotation_delta_to_command(euler_xyz(exp(rotvec / D)))``.
    """
    d = int(period_steps)
    per_step = matrix_to_euler_xyz(rotvec_to_matrix(np.asarray(rotvec_rad, dtype=np.float64) / d))
    return d * rotation_delta_to_command(per_step)
