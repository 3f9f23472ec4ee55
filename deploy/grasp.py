"""A grasp flag a real Franka setup can compute: what the ROS node gives a policy that observed ManiSkill's
``is_grasped`` (PickCube, PickPlaceCube; ``grasp(object, W)`` in a field's source, ``deploy/ros_io.py``).

ManiSkill's ``is_grasped`` is a contact-force test (both fingers push on the cube with at least 0.5 N within
85 deg of their closing direction, ``Panda.is_grasping``). A real arm has no such signal; :func:`grasp_flag`
computes one from what it does know: the gripper width (the two finger joint positions from ``JointState``,
summed) and the object's position from perception relative to the TCP pose (robot state). franka_gripper's
``grasp`` action reports success by a width test too (its ``epsilon``).

The rule (thresholds: the named constants below; the simulator numbers are from
``benchmarks/grasp_rule.py``'s default run):

1. **The gripper is closed on something of the object's width.** The Panda's finger joints read 0 .. 0.04 m
   each, so the width is 0.08 m open and ~0.007 m closed beside the cube. Held, the 0.04 m cube is squeezed to
   0.0365 - 0.0378 m (once 0.0416 m, on the step the fingers let go); on the step the pads first touch it the
   width reads 0.0408 - 0.0414 m while the simulator's flag is still 0 (under 0.5 N), and the next step is
   squeezed. So the band is ``[object_width - WIDTH_SQUEEZE_M, object_width - WIDTH_MARGIN_M]`` =
   0.032 .. 0.039 m for the cube: its top splits held from touching, its bottom leaves 4.5 mm under the
   simulated squeeze for a softer real object or a stronger grasp.
2. **The object is between the pads.** Its centre in the TCP frame, ``R_tcp^T (p_obj - p_tcp)``: the TCP's z
   axis points along the approach (out through the fingertips) and the fingers close along its y axis (the
   finger links sit at TCP y = +-width/2, z = -0.045 m; :func:`finger_axes_check` prints it); the contact pads
   span x +-0.0088 m, z -0.009 .. +0.0095 m around the TCP point. The centre must be within
   ``CENTRE_Y_TOL_M`` (0.02 m, half the edge: the closing midpoint lies inside the object) of the closing
   midpoint and within ``CENTRE_X_TOL_M`` / ``CENTRE_Z_TOL_M`` (0.025 m) of the pads' centre sideways and along
   the approach: the pads touch the cube's faces up to 0.0288 m off, and the closest in-band non-grasps seen
   had the cube 0.0288 and 0.0311 m sideways (fingers closed on its edge, width 0.037 and 0.034 m). Held
   cubes lie at |y| < 0.6 mm, x -0.003 .. +0.010 m, |z| < 0.005 m.

Both must hold. The rule is stateless and uses no force: it calls the first-touch step not held (as the
simulator does) only through the width band, and cannot see a slip that keeps the width.

Measured (``.venv/bin/python benchmarks/grasp_rule.py``: per task 20 episodes each of the scripted teacher
queried every env step, the teacher with 30 deg direction noise, with 60 deg and 20% random directions, and 8
random-action episodes; the reset observation of each episode skipped), rule against the simulator's
``is_grasped`` read from the same observation:

=========================  =====  ======  ======  =========  ========  =========
task                       steps  both 1  both 0  rule only  sim only  agreement
=========================  =====  ======  ======  =========  ========  =========
PickCube                    2217     495    1722          0         0    100.0%
PickPlaceCube               2244     474    1769          0         1    99.96%
=========================  =====  ======  ======  =========  ========  =========

Each half alone: width only 97.1% on both tasks (65 in-band steps with the cube elsewhere: fingers closing or
opening through the band, or closed on its edge), centre only 89.7% / 87.4%. Gaussian perception noise on the
object position (per axis): 5 mm 100% / 99.9%, 10 mm 97.8% / 98.5% (the misses are held steps pushed outside
the centre box). The simulator reported ``is_grasped = 1`` at the reset observation in 47 of 68 PickCube
episodes and 6 of 68 PickPlaceCube ones (each after an episode that ended with the cube held), and never
after the first env step, so only the reset observation is skipped. These are simulator numbers: the band
assumes the simulated squeeze, which a real Franka Hand at its grasp force must be re-measured for.
"""

from __future__ import annotations

import numpy as np

from robot_rl.geometry import quat_to_matrix

__all__ = ["grasp_flag", "object_in_tcp_frame", "WIDTH_SQUEEZE_M", "WIDTH_MARGIN_M", "CENTRE_X_TOL_M",
           "CENTRE_Y_TOL_M", "CENTRE_Z_TOL_M"]

#: Narrowest width still counted as closed on the object, below ``object_width`` (m). Held, the simulated
#: 0.04 m cube is squeezed to 0.0365 - 0.0378 m; 8 mm leaves room for a softer real object or grasp force,
#: and is far above the ~0.007 m the fingers reach when they close beside the cube.
WIDTH_SQUEEZE_M = 0.008
#: Widest width still counted as closed on the object, below ``object_width`` (m). Held, the widths read
#: 0.0365 - 0.0378 m; the step the pads first touch the cube reads 0.0408 - 0.0414 m with the simulator's flag
#: still 0 (under 0.5 N), the next one is squeezed; 0.039 m splits the two.
WIDTH_MARGIN_M = 0.001
#: Object centre off the fingers' closing midpoint, along TCP y (m): the midpoint must lie inside the object
#: (half the cube's edge), i.e. the two pads are on opposite sides of its centre. Both pads touching centre a
#: held cube to within 0.6 mm in the simulator, so the rest is room for perception error.
CENTRE_Y_TOL_M = 0.02
#: Object centre off the pads' centre, sideways along TCP x and along the approach axis TCP z (m). The pads
#: (the fingers' contact boxes) span x +-0.0088 m and z -0.009 .. +0.0095 m around the TCP point, so they touch
#: a 0.02 m half-edge cube's faces up to ~0.029 m off; 0.025 m keeps >= 4 mm of pad on the face (held in the
#: simulator: x -0.003 .. +0.010, z -0.005 .. +0.005).
CENTRE_X_TOL_M = 0.025
CENTRE_Z_TOL_M = 0.025


def object_in_tcp_frame(tcp_pos: np.ndarray, tcp_quat_wxyz: np.ndarray, obj_pos: np.ndarray) -> np.ndarray:
    """``(N, 3)``: the object's centre in the TCP frame, ``R_tcp^T (p_obj - p_tcp)`` (any common frame in)."""
    rot = quat_to_matrix(np.atleast_2d(tcp_quat_wxyz))
    d = np.atleast_2d(obj_pos) - np.atleast_2d(tcp_pos)
    return np.einsum("nji,nj->ni", rot, d)


def grasp_flag(
    width_m,
    tcp_pos,
    tcp_quat_wxyz,
    obj_pos,
    object_width_m=0.04,
    *,
    width_squeeze_m: float = WIDTH_SQUEEZE_M,
    width_margin_m: float = WIDTH_MARGIN_M,
    centre_y_tol_m: float = CENTRE_Y_TOL_M,
    centre_x_tol_m: float = CENTRE_X_TOL_M,
    centre_z_tol_m: float = CENTRE_Z_TOL_M,
) -> np.ndarray:
    """Whether the gripper holds the object, from gripper width and object/TCP poses (pure numpy).

    Args:
        width_m: ``(N,)`` gripper width, m: the sum of the two finger joint positions (0 closed .. 0.08 open).
        tcp_pos: ``(N, 3)`` TCP position, m.
        tcp_quat_wxyz: ``(N, 4)`` TCP orientation, quaternion (w, x, y, z), either sign.
        obj_pos: ``(N, 3)`` object centre, m, in the same frame as ``tcp_pos`` (robot base or world).
        object_width_m: scalar or ``(N,)``: the object's width across the fingers, m (cube edge 0.04).
        width_squeeze_m: narrowest width counted as closed on the object, below ``object_width_m``, m.
        width_margin_m: widest width counted as closed on the object, below ``object_width_m``, m.
        centre_y_tol_m: largest offset of the object centre from the closing midpoint along TCP y, m.
        centre_x_tol_m: largest offset of the object centre from the pads' centre along TCP x, m.
        centre_z_tol_m: largest offset of the object centre from the pads' centre along TCP z, m.

    Returns:
        ``(N,)`` bool.
    """
    width = np.atleast_1d(np.asarray(width_m, dtype=np.float64))
    ow = np.asarray(object_width_m, dtype=np.float64)
    closed_on_it = (width >= ow - width_squeeze_m) & (width <= ow - width_margin_m)
    c = object_in_tcp_frame(tcp_pos, tcp_quat_wxyz, obj_pos)
    between = ((np.abs(c[:, 1]) <= centre_y_tol_m) & (np.abs(c[:, 0]) <= centre_x_tol_m)
               & (np.abs(c[:, 2]) <= centre_z_tol_m))
    return closed_on_it & between
