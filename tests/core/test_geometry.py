"""robot_rl.geometry by hand: rotation conventions, frames, the pd_ee_delta_pose convention, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robot_rl import geometry as G

X90 = np.array([math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0, 0.0])  # +90 deg about x, wxyz


def test_quaternion_conventions_by_hand():
    np.testing.assert_allclose(G.quat_to_matrix(X90), [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)
    # Hamilton product: R(q1 q2) = R(q1) R(q2)
    qz = np.array([math.cos(0.3), 0.0, 0.0, math.sin(0.3)])
    np.testing.assert_allclose(G.quat_to_matrix(G.quat_multiply(X90, qz)),
                               G.quat_to_matrix(X90) @ G.quat_to_matrix(qz), atol=1e-12)
    np.testing.assert_allclose(G.quat_multiply(X90, G.quat_conjugate(X90)), [1, 0, 0, 0], atol=1e-12)
    assert G.quat_angle(X90) == pytest.approx(math.pi / 2) and G.quat_angle(-X90) == pytest.approx(math.pi / 2)
    # exact: the identity times q is q, bit for bit (the per-message path of the ROS node)
    q = np.array([0.1, 0.7, -0.1, 0.7]) / np.linalg.norm([0.1, 0.7, -0.1, 0.7])
    assert np.array_equal(G.quat_multiply(np.array([1.0, 0, 0, 0]), q), q)


def test_euler_xyz_is_intrinsic_rx_ry_rz():
    a, b, c = 0.3, -0.2, 0.5
    rx = G.rotvec_to_matrix(np.array([a, 0, 0]))
    ry = G.rotvec_to_matrix(np.array([0, b, 0]))
    rz = G.rotvec_to_matrix(np.array([0, 0, c]))
    np.testing.assert_allclose(G.euler_xyz_to_matrix(np.array([a, b, c])), rx @ ry @ rz, atol=1e-12)
    np.testing.assert_allclose(G.matrix_to_euler_xyz(rx @ ry @ rz), [a, b, c], atol=1e-12)
    np.testing.assert_allclose(G.quat_to_matrix(G.quat_from_euler_xyz(np.array([a, b, c]))), rx @ ry @ rz, atol=1e-12)


def test_rotvec_and_matrix_round_trips_batched():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 5, 3))
    v *= np.minimum(1.0, 3.0 / np.linalg.norm(v, axis=-1, keepdims=True))  # angles < pi
    m = G.rotvec_to_matrix(v)
    assert m.shape == (4, 5, 3, 3)
    np.testing.assert_allclose(G.matrix_to_rotvec(m), v, atol=1e-9)
    np.testing.assert_allclose(G.quat_to_rotvec(G.quat_from_rotvec(v)), v, atol=1e-9)
    np.testing.assert_allclose(G.quat_to_matrix(G.matrix_to_quat(m)), m, atol=1e-12)
    assert (G.matrix_to_quat(m)[..., 0] >= 0).all()
    np.testing.assert_allclose(G.quat_from_rotvec(np.zeros(3)), [1, 0, 0, 0])
    # rotate (1, 0, 0) by 90 deg about z: (0, 1, 0)
    np.testing.assert_allclose(G.rotate_about_axis(np.array([[1.0, 0, 0]]), np.array([[0, 0, 1.0]]),
                                                   np.array([math.pi / 2])), [[0, 1, 0]], atol=1e-12)


def test_frames_by_hand():
    """ManiSkill's world has the Panda base at (-0.615, 0, 0): a point at world x = 0.1 is 0.715 in front of
    the base; a base rotated by 90 deg about x sees world +z as its -y.
    """
    base_p, base_q = np.array([-0.615, 0.0, 0.0]), np.array([1.0, 0, 0, 0])
    p, q = G.pose_to_frame(np.array([0.1, 0.2, 0.3]), X90, base_p, base_q)
    np.testing.assert_allclose(p, [0.715, 0.2, 0.3], atol=1e-12)
    assert np.array_equal(q, X90)
    back = G.pose_from_frame(p, q, base_p, base_q)
    np.testing.assert_allclose(back[0], [0.1, 0.2, 0.3], atol=1e-12)
    p, _ = G.pose_to_frame(np.array([0.0, 0.0, 1.0]), np.array([1.0, 0, 0, 0]), np.zeros(3), X90)
    np.testing.assert_allclose(p, [0, 1, 0], atol=1e-12)


def test_action_convention_by_hand():
    """A +1 rotation command turns the TCP by -0.1 rad (ManiSkill issue #1469); 1.0 position unit is 0.1 m."""
    assert G.ACTION_DIM == 7 and G.POS_SCALE_M == 0.1 and G.CONTROLLER_ROT_SIGN == -1.0
    np.testing.assert_allclose(G.rotation_command_to_delta(np.array([1.0, 0, -0.5])), [-0.1, 0, 0.05])
    np.testing.assert_allclose(G.rotation_delta_to_command(np.array([0.1, 0, 0])), [-1.0, 0, 0])
    # a period command for 0.2 rad about z spread over 4 steps: 0.05 rad per step -> -0.5 per step, -2 per period
    np.testing.assert_allclose(G.physical_rotation_to_command(np.array([0, 0, 0.2]), 4), [0, 0, -2.0], atol=1e-12)
