"""A scripted teacher that plans from privileged simulator state (no images, no model).

:class:`ScriptedTeacher` implements :class:`robot_rl.teachers.base.Teacher` for the cube tasks
(PushCube, PickCube). It is *stateless*: every answer is computed from the privileged state of the
queried step alone (the current phase is inferred from geometry), so the trainer may query it
sparsely at arbitrary steps, for any subset of envs, in any order.

Privileged state layout (``request.states``, ``(B, 38) float32``, the cube planners read the first
20; world frame, metres, quaternions ``wxyz``; :data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT`)::

    tcp_pos[0:3] tcp_quat[3:7] obj_pos[7:10] obj_quat[10:14] goal_pos[14:17]
    is_grasped[17] (0/1) gripper_width[18] (m) obj_half_size[19] (m)
    goal_quat[20:24] obj_half_extents[24:27] tool_pos[27:30] tool_quat[30:34]
    tool_grasped[34] (0/1) tool_half_extents[35:38]

Planners for the other tasks of the paper's suite live in :mod:`robot_rl.teachers.plans`, one module
per task (:data:`PLANNERS`).

Action convention: see :mod:`robot_rl.teachers.base`. Every answer is planned for its whole control
period of ``D`` env steps, because that is how training uses it: in ``vlajs`` mode one answer is held
for ``D`` steps (spread by ``robot_rl.guidance.targets.interpolate_targets``), and a VLA served at 5 Hz
answers no more often either (issue 10). Positions go towards a waypoint: an answer asks for
:func:`period_gain` of the error over the period, at the per-step command that the arm's measured
tracking (:data:`TRACKING_FRACTION`) turns into that motion, so a held answer does not overshoot; the
phase logic reads only the state, so it switches (close, lift, release) at the first query whose state
calls for it. The Panda base sits at ``(-0.615, 0, 0)`` with identity rotation in these tasks
(measured), so world-frame deltas equal the base-frame deltas the controller expects. Rotations
are small corrections that keep the gripper pointing down (and, for PickCube, align the fingers
with the cube faces); they are mapped to commands through :func:`rotation_delta_to_command`
because the controller inverts the rotation sign (ManiSkill issue #1469).

Surprises found while building it (ManiSkill 3.0.1, ``pd_ee_delta_pose``, Panda):

* A +1 rotation command turns the end effector by **-0.1 rad** (the controller multiplies the
  normalized rotation by ``rot_lower = -0.1``); pinned by ``tests/teachers``.
* The controller clips the rotation command by its *norm* (to 1), but the position command
  per component (to [-1, 1]); this teacher respects both per env step.
* The controller's rotation delta is an intrinsic ``"XYZ"`` Euler triple (pytorch3d
  ``euler_angles_to_matrix``: ``R = Rx @ Ry @ Rz``) that is *pre*-multiplied onto the current
  orientation (``root_aligned_body_rotation``): it rotates the TCP about base-frame axes through
  the TCP point.
* The controller targets ``current EE pose + delta`` (not the previous target, ``use_target``
  is off) and the arm lags, so in closed loop a full command (1.0) moves the TCP only about
  0.04 m or 0.04 rad per 20 Hz env step (measured: 3 steps of a +1 rotation turn it by
  ~-0.118 rad, not -0.3); a single command whose target is held for 1 s of sim does settle at
  the full -0.1 rad. The "0.1 per step" scale is the controller's target, not the motion.
* Panda base: ``(-0.615, 0, 0)``, identity rotation in PushCube-v1 / PickCube-v1 (pinned by a test).
"""

from __future__ import annotations

import functools
import importlib
import math
import time

import numpy as np

from robot_rl.teachers.base import (
    ACTION_DIM,
    CONTROLLER_ROT_SIGN,
    GRIPPER_INDEX,
    POS_SCALE_M,
    POS_SLICE,
    ROT_SCALE_RAD,
    ROT_SLICE,
    TeacherRequest,
    TeacherResponse,
)

# ----------------------------------------------------------------------------------------------
# Privileged-state layout (mirrors robot_rl.envs.PRIVILEGED_STATE_LAYOUT; a test checks they agree)
TCP_POS = slice(0, 3)
TCP_QUAT = slice(3, 7)
OBJ_POS = slice(7, 10)
OBJ_QUAT = slice(10, 14)
GOAL_POS = slice(14, 17)
IS_GRASPED = 17
GRIPPER_WIDTH = 18
OBJ_HALF_SIZE = 19
GOAL_QUAT = slice(20, 24)
OBJ_HALF_EXTENTS = slice(24, 27)
TOOL_POS = slice(27, 30)
TOOL_QUAT = slice(30, 34)
TOOL_GRASPED = 34
TOOL_HALF_EXTENTS = slice(35, 38)
STATE_DIM = 38
#: The cube tasks' planners read only the first 20 entries (the original layout).
CUBE_STATE_DIM = 20

GRIPPER_OPEN = 1.0
GRIPPER_CLOSED = -1.0

#: Fraction of a held per-step command the arm covers in each env step. Measured on the CPU sim
#: (Panda, ``pd_ee_delta_pose``, PickCube-v1 home pose, commands 0.25 / 0.5 / 1 held 6-8 steps): the TCP
#: moves 0.040 x 0.1 m x c per step in x and z (z's first step about half of that) and turns
#: 0.039 x 0.1 rad x c about each axis; after a zero command it stops within one env step (residual
#: < 1 mm, < 0.003 rad). The controller targets "current pose + delta" every step, so a held command
#: is a velocity, not a displacement: 0.4 of the "0.1 m per step" scale.
TRACKING_FRACTION = 0.4
#: The arm lags a new command by about this many env steps (z's first step covers half; measured as above).
LAG_STEPS = 0.5


def period_gain(period_steps: int) -> float:
    """Fraction of a waypoint error an answer held for ``D`` env steps asks to close: ``1 - LAG_STEPS / D``.

    0.5 at ``D = 1``, 0.75 at 2, 0.875 at 4. The feedback comes once per period and the arm lags each
    new command by ~half a step, so a short period must ask for less: at ``D = 1`` a gain of 0.7 already
    sets up a hover/descend limit cycle over the cube (measured on PickCube), while at ``D = 4`` a gain of
    0.5 is too slow for the 50-step horizons.
    """
    if int(period_steps) < 1:
        raise ValueError(f"period_steps must be >= 1, got {period_steps}")
    return 1.0 - LAG_STEPS / int(period_steps)

#: Planner of each task family (the task name inside its id: ``"RRL-PokeCube-Sparse-LH-v1"``,
#: ``"PokeCube-v2"`` and ``"PokeCube-v1"`` are all ``"PokeCube"``): a :class:`ScriptedTeacher` method
#: name, or ``"module:function"`` with ``function(teacher, states (N, 38) float64) -> (actions (N, 7),
#: phases list[str])``, imported on first use. The second entry is the state width the planner reads.
PLANNERS: dict[str, tuple[str, int]] = {
    "PushCube": ("_plan_push", CUBE_STATE_DIM),
    "PickCube": ("_plan_pick", CUBE_STATE_DIM),
    "PickPlaceCube": ("robot_rl.teachers.plans.pick_place_cube:plan", STATE_DIM),
    "LiftPegUpright": ("robot_rl.teachers.plans.lift_peg_upright:plan", STATE_DIM),
    "PegInsertionSide": ("robot_rl.teachers.plans.peg_insertion_side:plan", STATE_DIM),
    "PokeCube": ("robot_rl.teachers.plans.poke_cube:plan", STATE_DIM),
}


@functools.cache
def _plan_function(name: str):
    """``"module:function"`` -> the function, imported once (the teacher is asked every few env steps)."""
    module, _, func = name.partition(":")
    return getattr(importlib.import_module(module), func)


def task_family(task_id: str) -> str:
    """The task name inside a task id: ``"RRL-PickCube-Sparse-LH-v1"``, ``"PickCube-v2"``, ``"PickCube-v1"``
    -> ``"PickCube"``; ``"PickPlaceCube-rrl-v1"`` -> ``"PickPlaceCube"``."""
    return str(task_id).removeprefix("RRL-").split("-")[0]


def _task_ids(family: str) -> tuple[str, ...]:
    return (f"RRL-{family}-Sparse-v1", f"RRL-{family}-Sparse-LH-v1", f"{family}-v2", f"{family}-v2-LH", f"{family}-v1")


#: Task ids each cube planner serves: the repo's sparse and long-horizon variants (env id and paper
#: name, see robot_rl.envs.TASKS) and the upstream ManiSkill tasks they subclass (same scene and state).
PUSH_TASKS = _task_ids("PushCube")
PICK_TASKS = _task_ids("PickCube")
#: Every task id the teacher accepts (any id whose :func:`task_family` is in :data:`PLANNERS` works).
SUPPORTED_TASKS = tuple(t for fam in PLANNERS for t in _task_ids(fam))


# ----------------------------------------------------------------------------------------------
# Rotation helpers (numpy, batched over leading dims)


def rotation_command_to_delta(command: np.ndarray) -> np.ndarray:
    """Map a normalized rotation command to the physical rotation the controller applies.

    Args:
        command: ``(..., 3)`` normalized ``pd_ee_delta_pose`` rotation command (the action's
            ``[3:6]``), per env step.

    Returns:
        ``(..., 3)`` intrinsic XYZ Euler angles in radians, in the robot-base frame, that the
        controller pre-multiplies onto the EE orientation: ``command * 0.1 rad * (-1)``. A +1
        command turns the EE by -0.1 rad (ManiSkill issue #1469). The controller first rescales
        a command whose norm exceeds 1 to norm 1; this function does not (it is the linear map).
    """
    return np.asarray(command, dtype=np.float64) * (ROT_SCALE_RAD * CONTROLLER_ROT_SIGN)


def rotation_delta_to_command(rpy_rad: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rotation_command_to_delta`.

    Args:
        rpy_rad: ``(..., 3)`` physical per-step rotation, intrinsic XYZ Euler angles in radians
            (robot-base frame).

    Returns:
        ``(..., 3)`` normalized rotation command, ``rpy_rad / (0.1 * -1)``; +0.1 rad -> -1.0.
    """
    return np.asarray(rpy_rad, dtype=np.float64) / (ROT_SCALE_RAD * CONTROLLER_ROT_SIGN)


def quat_to_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    """``(..., 4)`` unit quaternions ``wxyz`` -> ``(..., 3, 3)`` rotation matrices."""
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


def euler_xyz_to_matrix(angles: np.ndarray) -> np.ndarray:
    """``(..., 3)`` intrinsic XYZ Euler angles (rad) -> ``(..., 3, 3)``: ``Rx(a) @ Ry(b) @ Rz(c)``.

    Same convention as ``mani_skill.utils.geometry.rotation_conversions.euler_angles_to_matrix(.., "XYZ")``
    (from pytorch3d), which the ``pd_ee_delta_pose`` controller uses for its rotation delta.
    """
    a = np.asarray(angles, dtype=np.float64)
    ca, cb, cc = np.cos(a[..., 0]), np.cos(a[..., 1]), np.cos(a[..., 2])
    sa, sb, sc = np.sin(a[..., 0]), np.sin(a[..., 1]), np.sin(a[..., 2])
    one, zero = np.ones_like(ca), np.zeros_like(ca)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, ca, -sa], -1), np.stack([zero, sa, ca], -1)], -2)
    ry = np.stack([np.stack([cb, zero, sb], -1), np.stack([zero, one, zero], -1), np.stack([-sb, zero, cb], -1)], -2)
    rz = np.stack([np.stack([cc, -sc, zero], -1), np.stack([sc, cc, zero], -1), np.stack([zero, zero, one], -1)], -2)
    return rx @ ry @ rz


def matrix_to_euler_xyz(mat: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_xyz_to_matrix`: ``(..., 3, 3)`` -> ``(..., 3)`` radians.

    For ``R = Rx(a) Ry(b) Rz(c)``: ``R[0,2] = sin b``, ``R[1,2] = -sin a cos b``,
    ``R[2,2] = cos a cos b``, ``R[0,1] = -cos b sin c``, ``R[0,0] = cos b cos c``.
    """
    m = np.asarray(mat, dtype=np.float64)
    b = np.arcsin(np.clip(m[..., 0, 2], -1.0, 1.0))
    a = np.arctan2(-m[..., 1, 2], m[..., 2, 2])
    c = np.arctan2(-m[..., 0, 1], m[..., 0, 0])
    return np.stack([a, b, c], -1)


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """``(..., 3)`` axis-angle vectors (rad) -> ``(..., 3, 3)`` (Rodrigues)."""
    v = np.asarray(rotvec, dtype=np.float64)
    theta = np.linalg.norm(v, axis=-1, keepdims=True)
    axis = v / np.maximum(theta, 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)
    t = theta[..., None]
    eye = np.broadcast_to(np.eye(3), k.shape)
    return eye + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def matrix_to_rotvec(mat: np.ndarray) -> np.ndarray:
    """``(..., 3, 3)`` rotation matrices -> ``(..., 3)`` axis-angle vectors (rad, angle in [0, pi])."""
    m = np.asarray(mat, dtype=np.float64)
    cos = np.clip((np.trace(m, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    theta = np.arccos(cos)
    w = np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    sin = np.sin(theta)
    small = sin < 1e-6
    out = w / (2 * np.where(small, 1.0, sin))[..., None] * theta[..., None]
    # Near 0 the skew part is theta * axis already; near pi use the diagonal (rare here).
    out = np.where(small[..., None] & (theta[..., None] < 1.0), w / 2, out)
    near_pi = small & (theta >= 1.0)
    if np.any(near_pi):
        for idx in zip(*np.nonzero(near_pi)):
            mm = m[idx]
            axis = np.sqrt(np.clip((np.diag(mm) + 1) / 2, 0, None))
            i = int(np.argmax(axis))
            # fix signs relative to the largest component
            for j in range(3):
                if j != i:
                    axis[j] = math.copysign(axis[j], mm[i, j] + mm[j, i])
            out[idx] = axis / np.linalg.norm(axis) * np.pi
    return out


def physical_rotation_to_command(rotvec_rad: np.ndarray, period_steps: int) -> np.ndarray:
    """Command for a physical rotation spread over ``period_steps`` env steps.

    Args:
        rotvec_rad: ``(..., 3)`` desired rotation over the whole period, axis-angle in the
            robot-base (= world) frame, radians. Its norm should be ``<= 0.1 * period_steps``
            (the controller clips a per-step command to norm 1).
        period_steps: ``D``; the trainer applies ``command / D`` on each of ``D`` steps.

    Returns:
        ``(..., 3)`` period command: ``D * rotation_delta_to_command(euler_xyz(exp(rotvec / D)))``.
    """
    d = int(period_steps)
    per_step = matrix_to_euler_xyz(rotvec_to_matrix(np.asarray(rotvec_rad, dtype=np.float64) / d))
    return d * rotation_delta_to_command(per_step)


# ----------------------------------------------------------------------------------------------
# Direction perturbations (weakness knobs)


def rotate_about_axis(vectors: np.ndarray, axes: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotate ``(N, 3)`` vectors about unit ``(N, 3)`` axes by ``(N,)`` angles (rad), Rodrigues."""
    v, k, a = np.asarray(vectors, float), np.asarray(axes, float), np.asarray(angles, float)[:, None]
    return v * np.cos(a) + np.cross(k, v) * np.sin(a) + k * np.sum(k * v, -1, keepdims=True) * (1 - np.cos(a))


def _random_perpendicular_unit(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(N, 3)`` unit vectors perpendicular to each row of ``v`` (nonzero rows), uniform in angle."""
    g = rng.standard_normal(v.shape)
    u = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    g = g - np.sum(g * u, -1, keepdims=True) * u
    return g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-12)


def _scale_clip(vec: np.ndarray, limit: float) -> np.ndarray:
    """Scale each ``(N, 3)`` row down (keeping its direction) so every component is in ``[-limit, limit]``."""
    peak = np.max(np.abs(vec), axis=-1, keepdims=True)
    return vec * np.minimum(1.0, limit / np.maximum(peak, 1e-12))


def _norm_clip(vec: np.ndarray, limit: float) -> np.ndarray:
    """Scale each ``(N, 3)`` row down so its Euclidean norm is at most ``limit``."""
    n = np.linalg.norm(vec, axis=-1, keepdims=True)
    return vec * np.minimum(1.0, limit / np.maximum(n, 1e-12))


def _wrap_angle(a: np.ndarray) -> np.ndarray:
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def _down_orientation(yaw: np.ndarray) -> np.ndarray:
    """``(N,)`` yaw (rad) -> ``(N, 3, 3)`` gripper-pointing-down orientation: ``Rz(yaw) @ diag(1, -1, -1)``.

    At yaw 0 this is the Panda TCP's initial orientation in these tasks (quat ``wxyz ~ (0, 1, 0, 0)``):
    hand x along world +x, approach axis (hand z) along world -z, fingers opening along world y.
    """
    c, s = np.cos(yaw), np.sin(yaw)
    mats = np.zeros((len(yaw), 3, 3))
    mats[:, 0, 0], mats[:, 0, 1] = c, s
    mats[:, 1, 0], mats[:, 1, 1] = s, -c
    mats[:, 2, 2] = -1.0
    return mats


def _yaw_of(mats: np.ndarray) -> np.ndarray:
    """Yaw (rad) of each ``(N, 3, 3)`` frame's x axis projected on the horizontal plane."""
    return np.arctan2(mats[:, 1, 0], mats[:, 0, 0])


# ----------------------------------------------------------------------------------------------
# The teacher


class ScriptedTeacher:
    """Waypoint planner on privileged state for the task suite (Panda, ``pd_ee_delta_pose``): PushCube and PickCube here, the others in :mod:`robot_rl.teachers.plans`.

    Args:
        control_period_steps: ``D``, env steps one answer covers (>= 1). Position/rotation parts of
            an answer are the delta over the whole period, planned for it (:meth:`_position_command`):
            the per-step command (each component in [-1, 1], rotation norm <= 1) times ``D``; the
            trainer divides them by ``D`` for its per-step targets and holds them for ``D`` steps.
        direction_noise_deg: sigma (degrees) of a random tilt of the position direction: the
            direction is rotated by ``|N(0, sigma)|`` about a uniformly random axis perpendicular
            to it (magnitude kept). 0 = off.
        bias_rotation_deg: constant rotation (degrees, right-handed) of the position delta about
            the world z axis, applied before the noise. 0 = off.
        wrong_fraction: probability in [0, 1] that a row's position direction is replaced by a
            uniformly random unit direction (magnitude kept). 0 = off.
        latency_s: seconds to sleep in every :meth:`act` call (simulates a slow VLA). 0 = off.
        seed: seed of the teacher's own ``numpy.random.Generator`` (the global numpy / torch RNGs
            are never touched, so the trainer's reproducibility is unaffected).
        model_id: reported in :class:`TeacherResponse.model_id`.
        task: default task id used when a request carries no ``task_ids``.
        position_gain: multiplier on :func:`period_gain` (the fraction of a waypoint error one answer
            asks to close over its period); 1 = the tuned default.

    The knobs only affect the *position* part (``actions[:, 0:3]``); rotation and gripper stay clean.
    Rows whose clean position delta is zero are left unchanged by the knobs.

    Raises (from :meth:`act`): ``ValueError`` when ``request.states`` is ``None`` or narrower than
    the planner's width (20 for the cube tasks, 38 otherwise), when no task id is known, or for a task id
    whose family is not in :data:`PLANNERS`.
    """

    needs_image = False
    needs_state = True

    # Geometry of the plans (metres). Measured/tuned in the simulator, see tests/teachers.
    PUSH_BEHIND_GAP = 0.025  # TCP distance behind the cube face before pushing
    PUSH_Z = 0.018  # TCP height above the table (z = 0) while pushing; cube centre is at 0.02
    PUSH_SAFE_DZ = 0.06  # approach height above the cube top, so the fingers clear it
    PUSH_ALIGN_TOL = 0.012  # lateral/behind tolerance to descend / keep pushing
    PUSH_OVERSHOOT = 0.02  # push the cube this far past the goal centre (success radius is 0.1)
    PUSH_CONTACT_GAP = 0.01  # TCP-to-cube-face distance while in contact (closed finger half-depth)
    PUSH_DONE_RADIUS = 0.03  # cube this close to the goal centre: hold (success radius 0.1)
    PICK_HOVER_DZ = 0.07  # hover height above the cube centre before descending
    PICK_XY_TOL = 0.008  # xy tolerance to descend onto the cube
    PICK_Z_TOL = 0.008  # z tolerance to close the gripper
    PICK_YAW_TOL = 0.12  # rad; finger/face misalignment allowed before descending
    PICK_OPEN_WIDTH = 0.07  # m; below this the gripper counts as (partly) closed
    PICK_HELD_DIST = 0.03  # m; a held cube's centre is this close to the TCP (fingers on two faces)
    PICK_NEAR_XY = 0.02  # m; lowered and this close in xy: correct xy in place (the open fingers straddle the cube)

    def __init__(
        self,
        control_period_steps: int = 1,
        *,
        direction_noise_deg: float = 0.0,
        bias_rotation_deg: float = 0.0,
        wrong_fraction: float = 0.0,
        latency_s: float = 0.0,
        seed: int | None = None,
        model_id: str = "scripted",
        task: str | None = None,
        position_gain: float = 1.0,
    ) -> None:
        if int(control_period_steps) < 1:
            raise ValueError(f"control_period_steps must be >= 1, got {control_period_steps}")
        if not 0.0 <= wrong_fraction <= 1.0:
            raise ValueError(f"wrong_fraction must be in [0, 1], got {wrong_fraction}")
        if direction_noise_deg < 0 or latency_s < 0:
            raise ValueError("direction_noise_deg and latency_s must be >= 0")
        if task is not None and task_family(task) not in PLANNERS:
            raise ValueError(f"unknown task {task!r}; supported task families: {', '.join(PLANNERS)}")
        self.control_period_steps = int(control_period_steps)
        self.direction_noise_deg = float(direction_noise_deg)
        self.bias_rotation_deg = float(bias_rotation_deg)
        self.wrong_fraction = float(wrong_fraction)
        self.latency_s = float(latency_s)
        self.model_id = model_id
        self.task = task
        self.position_gain = float(position_gain)
        self._rng = np.random.default_rng(seed)

    # -- protocol ------------------------------------------------------------------------------

    def act(self, request: TeacherRequest) -> TeacherResponse:
        """Plan one action per row of ``request``.

        Args:
            request: needs ``states`` ``(B, 38)`` (``(B, >=20)`` for the cube tasks; privileged layout, see module docstring) and
                ``task_ids`` (or the constructor's ``task``). Images are ignored.

        Returns:
            ``TeacherResponse`` with ``actions`` ``(B, 7) float32`` (period deltas, see
            :mod:`robot_rl.teachers.base`), ``latency_s`` = measured wall time of this call
            (including the simulated latency), ``model_id``, and ``extras["phases"]`` (``B`` phase
            names, for debugging).
        """
        t0 = time.perf_counter()
        task_ids = self.check_request(request)
        states = np.asarray(request.states, dtype=np.float64)
        n = states.shape[0]

        actions = np.zeros((n, ACTION_DIM), dtype=np.float64)
        phases = [""] * n
        families = np.array([task_family(t) for t in task_ids])
        for family in dict.fromkeys(families):
            mask = families == family
            acts, ph = self._planner(family)(states[mask])
            actions[mask] = acts
            for i, p in zip(np.nonzero(mask)[0], ph):
                phases[i] = p
        actions[:, POS_SLICE] = self._perturb(actions[:, POS_SLICE])

        if self.latency_s > 0:
            time.sleep(self.latency_s)
        return TeacherResponse(
            actions=actions.astype(np.float32),
            latency_s=time.perf_counter() - t0,
            model_id=self.model_id,
            extras={"phases": phases},
        )

    def check_request(self, request: TeacherRequest) -> list[str]:
        """Validate ``request`` without planning; returns its per-row task ids.

        The teacher server calls this per HTTP request before batching, so one bad request gets a
        4xx of its own instead of failing the batch it would have joined.

        Raises:
            ValueError: ``states`` missing or narrower than the planner reads, no task id known, or a
                task id not in :data:`SUPPORTED_TASKS`.
        """
        if request.states is None:
            raise ValueError("states: ScriptedTeacher needs the privileged state, got None")
        task_ids = request.task_ids
        if task_ids is None:
            if self.task is None:
                raise ValueError(
                    "task_ids: none given and the teacher has no default task; "
                    f"supported task families: {', '.join(PLANNERS)}"
                )
            task_ids = [self.task] * len(request)
        unknown = sorted({t for t in task_ids if task_family(t) not in PLANNERS})
        if unknown:
            raise ValueError(
                f"task_ids: unknown task id(s) {unknown}; supported task families: {', '.join(PLANNERS)} "
                f"(e.g. {', '.join(SUPPORTED_TASKS[:5])})"
            )
        need = max(PLANNERS[task_family(t)][1] for t in task_ids) if task_ids else CUBE_STATE_DIM
        if request.states.ndim != 2 or request.states.shape[1] < need:
            raise ValueError(f"states: must be (B, >={need}), got {request.states.shape}")
        return list(task_ids)

    def _planner(self, family: str):
        """The planning function of a task family (:data:`PLANNERS`), bound to this teacher."""
        name = PLANNERS[family][0]
        if ":" not in name:
            return getattr(self, name)
        fn = _plan_function(name)
        return lambda states: fn(self, states)

    # -- knobs ---------------------------------------------------------------------------------

    def _perturb(self, pos: np.ndarray) -> np.ndarray:
        """Apply bias, noise and wrong answers to ``(N, 3)`` position deltas (magnitudes kept).

        The result is rescaled (direction kept) so per-step components stay within [-1, 1].
        """
        if self.bias_rotation_deg == 0 and self.direction_noise_deg == 0 and self.wrong_fraction == 0:
            return pos
        n = pos.shape[0]
        norm = np.linalg.norm(pos, axis=-1)
        live = norm > 1e-9
        out = pos.copy()
        if self.bias_rotation_deg != 0:
            z = np.tile([0.0, 0.0, 1.0], (n, 1))
            out = rotate_about_axis(out, z, np.full(n, math.radians(self.bias_rotation_deg)))
        if self.direction_noise_deg > 0:
            angles = np.abs(self._rng.normal(0.0, math.radians(self.direction_noise_deg), n))
            axes = _random_perpendicular_unit(out, self._rng)
            out = rotate_about_axis(out, axes, angles)
        if self.wrong_fraction > 0:
            wrong = self._rng.random(n) < self.wrong_fraction
            rand = self._rng.standard_normal((n, 3))
            rand /= np.linalg.norm(rand, axis=-1, keepdims=True)
            out = np.where(wrong[:, None], rand * norm[:, None], out)
        out = _scale_clip(out, float(self.control_period_steps))
        return np.where(live[:, None], out, pos)

    # -- helpers -------------------------------------------------------------------------------

    def _position_command(self, tcp: np.ndarray, target: np.ndarray, gain: float | np.ndarray | None = None) -> np.ndarray:
        """``(N, 3)`` period position command that takes the TCP towards ``target`` (world metres) over ``D`` steps.

        The answer is planned for its whole control period (issue 10): it is held for ``D`` env steps,
        so the motion it asks for over the period is ``gain`` times the error (``gain`` defaults to
        ``position_gain``; 1 closes the error in one period). The per-step command is that motion
        divided by ``D`` and by what one held unit of command moves the arm per env step
        (:data:`TRACKING_FRACTION` x 0.1 m), scaled down (direction kept) so each component is within
        [-1, 1]; the answer is that per-step command times ``D`` (the trainer divides by ``D`` again).
        Because the arm stops within one env step of a zero command, an answer held for its period
        does not overshoot a waypoint (``gain <= 1``), whatever ``D``.

        Args:
            tcp: ``(N, 3)`` TCP positions, m.
            target: ``(N, 3)`` waypoints, m.
            gain: scalar or ``(N, 1)``: fraction of the error to close over the period.
        """
        d = self.control_period_steps
        g = self.position_gain * period_gain(d) if gain is None else gain
        per_step = _scale_clip(g * (target - tcp) / (d * TRACKING_FRACTION * POS_SCALE_M), 1.0)
        return per_step * d

    def _rotation_command(self, tcp_quat: np.ndarray, desired: np.ndarray, gain: float | None = None) -> np.ndarray:
        """``(N, 3)`` period rotation command turning the TCP orientation towards ``desired`` ``(N, 3, 3)`` over ``D`` steps.

        The world-frame error ``log(R_des R^T)`` times ``gain`` is spread over the ``D`` steps of the
        period; each step's share is divided by :data:`TRACKING_FRACTION` (what the arm turns per held
        command), clipped to the controller's 0.1 rad per env step (it clips the command norm to 1),
        mapped through the controller's sign convention, and multiplied by ``D``.
        """
        r = quat_to_matrix(tcp_quat)
        err = matrix_to_rotvec(desired @ np.swapaxes(r, -1, -2))
        d = self.control_period_steps
        gain = period_gain(d) if gain is None else gain
        per_step = _norm_clip(gain * err / (d * TRACKING_FRACTION), ROT_SCALE_RAD * 0.999)
        return physical_rotation_to_command(per_step * d, d)

    # -- PushCube ------------------------------------------------------------------------------

    def _plan_push(self, s: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """PushCube: behind the cube (opposite the goal) at a safe height, down, push to the goal.

        Phases (inferred per row, stateless): ``"approach"`` (to the point behind the cube at a
        safe height), ``"descend"`` (down to pushing height), ``"push"`` (along the cube->goal line,
        lateral error corrected), ``"retreat"`` (up, when low but misaligned), ``"hold"`` (cube
        within 0.03 m of the goal centre: stay). Gripper closed throughout. The push is fast (full
        speed until near the goal): the cube slides on into the goal region.
        """
        n = s.shape[0]
        tcp, obj, goal, half = s[:, TCP_POS], s[:, OBJ_POS], s[:, GOAL_POS], s[:, OBJ_HALF_SIZE]
        dxy = goal[:, :2] - obj[:, :2]
        dist = np.linalg.norm(dxy, axis=-1)
        u = np.where(dist[:, None] > 1e-6, dxy / np.maximum(dist, 1e-6)[:, None], np.array([1.0, 0.0]))
        perp = np.stack([-u[:, 1], u[:, 0]], -1)
        rel = tcp[:, :2] - obj[:, :2]
        along = np.sum(rel * u, -1)  # negative = behind the cube
        lateral = np.sum(rel * perp, -1)
        behind_d = half + self.PUSH_BEHIND_GAP
        safe_z = obj[:, 2] + half + self.PUSH_SAFE_DZ
        push_z = np.full(n, self.PUSH_Z)
        behind_xy = obj[:, :2] - u * behind_d[:, None]

        tol = self.PUSH_ALIGN_TOL
        low = tcp[:, 2] < obj[:, 2] + half + 0.01  # fingertips below the cube top
        is_behind = along < -(half + 0.003)
        pushing = low & is_behind & (np.abs(lateral) < tol + 0.004) & (along > -(behind_d + 0.02))
        above_behind = np.linalg.norm(tcp[:, :2] - behind_xy, axis=-1) < tol
        near_cube = np.linalg.norm(rel, axis=-1) < half * 1.5 + 0.04

        target = np.empty((n, 3))
        phases = np.empty(n, dtype=object)
        # push: TCP towards where it is when the cube sits past the goal centre; lateral error removed
        push_end = goal[:, :2] + u * (self.PUSH_OVERSHOOT - half - self.PUSH_CONTACT_GAP)[:, None]
        target_push = np.concatenate([push_end, push_z[:, None]], -1)
        # descend: down onto the pushing height behind the cube
        target_desc = np.concatenate([behind_xy, push_z[:, None]], -1)
        # approach: above the behind point
        target_appr = np.concatenate([behind_xy, safe_z[:, None]], -1)
        # retreat: straight up from where the TCP is (avoid sweeping through the cube)
        target_up = np.concatenate([tcp[:, :2], safe_z[:, None]], -1)

        sel_push = pushing
        sel_desc = ~sel_push & above_behind
        sel_up = ~sel_push & ~sel_desc & low & near_cube
        sel_appr = ~(sel_push | sel_desc | sel_up)
        for sel, tgt, name in (
            (sel_push, target_push, "push"),
            (sel_desc, target_desc, "descend"),
            (sel_up, target_up, "retreat"),
            (sel_appr, target_appr, "approach"),
        ):
            target[sel] = tgt[sel]
            phases[sel] = name

        # done: the cube is near the goal centre (well inside the 0.1 m success radius), where the
        # cube->goal direction becomes ill-defined: hold still instead of circling the cube
        sel_hold = dist < self.PUSH_DONE_RADIUS
        target[sel_hold] = tcp[sel_hold]
        phases[sel_hold] = "hold"

        acts = np.zeros((n, ACTION_DIM))
        acts[:, POS_SLICE] = self._position_command(tcp, target)
        r = quat_to_matrix(s[:, TCP_QUAT])
        acts[:, ROT_SLICE] = self._rotation_command(s[:, TCP_QUAT], _down_orientation(_yaw_of(r)))
        acts[:, GRIPPER_INDEX] = GRIPPER_CLOSED
        return acts, list(phases)

    # -- PickCube ------------------------------------------------------------------------------

    def _plan_pick(self, s: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """PickCube: above the cube (open, fingers aligned with its faces), down, close, carry to goal.

        Phases (per row, stateless): ``"carry"`` (grasped: move so the cube reaches ``goal_pos``,
        closed, and hold there), ``"grasp"`` (TCP at the cube centre: close), ``"descend"`` (above
        the cube, open and aligned: go down), ``"reopen"`` (gripper closed but not holding the cube:
        open while rising), ``"hover"`` (to a point above the cube, open).
        """
        n = s.shape[0]
        tcp, obj, goal = s[:, TCP_POS], s[:, OBJ_POS], s[:, GOAL_POS]
        width = s[:, GRIPPER_WIDTH]
        # Held: ManiSkill's flag *and* the geometry of a grasp. The flag can read 1 on the first step after
        # a reset (left over from the previous episode's contacts): trusted alone, the answer to that
        # step is a closed-gripper carry that, held for D steps, grips nothing (README troubleshooting).
        grasped = (
            (s[:, IS_GRASPED] > 0.5)
            & (width < self.PICK_OPEN_WIDTH)
            & (np.linalg.norm(obj - tcp, axis=-1) < self.PICK_HELD_DIST)
        )
        r_tcp = quat_to_matrix(s[:, TCP_QUAT])
        tcp_yaw = _yaw_of(r_tcp)
        obj_yaw = _yaw_of(quat_to_matrix(s[:, OBJ_QUAT]))
        # closest yaw to the current one at which the fingers face two cube faces (90 deg symmetry)
        yaw_err = _wrap_angle((obj_yaw - tcp_yaw) * 4.0) / 4.0
        desired_yaw = tcp_yaw + yaw_err

        rel = obj - tcp
        xy_err = np.linalg.norm(rel[:, :2], axis=-1)
        hover = obj + np.array([0.0, 0.0, self.PICK_HOVER_DZ])

        at_grasp = (xy_err < self.PICK_XY_TOL * 1.5) & (np.abs(rel[:, 2]) < self.PICK_Z_TOL)
        # Once on the way down, a drift of a few mm (the arm's z motion couples into xy) keeps descending
        # while xy is corrected, instead of climbing back to the hover point.
        lowered = tcp[:, 2] < hover[:, 2] - 0.01
        aligned_xy = xy_err < self.PICK_XY_TOL * np.where(lowered, 1.5, 1.0)
        is_open = width > self.PICK_OPEN_WIDTH
        yaw_ok = np.abs(yaw_err) < self.PICK_YAW_TOL
        above = tcp[:, 2] > obj[:, 2] + 0.005

        sel_carry = grasped
        sel_grasp = ~sel_carry & at_grasp
        sel_reopen = ~sel_carry & ~sel_grasp & ~is_open
        sel_desc = ~sel_carry & ~sel_grasp & ~sel_reopen & aligned_xy & yaw_ok & above
        sel_hover = ~(sel_carry | sel_grasp | sel_reopen | sel_desc)

        target = np.empty((n, 3))
        gripper = np.full(n, GRIPPER_OPEN)
        phases = np.empty(n, dtype=object)
        # carry: the cube should end at the goal; the TCP holds it, so shift by the grasp offset
        target[sel_carry] = (tcp + (goal - obj))[sel_carry]
        gripper[sel_carry] = GRIPPER_CLOSED
        phases[sel_carry] = "carry"
        target[sel_grasp] = obj[sel_grasp]
        gripper[sel_grasp] = GRIPPER_CLOSED
        phases[sel_grasp] = "grasp"
        # re-open: rise a little while opening so the fingers do not push the cube around
        target[sel_reopen] = np.concatenate([tcp[:, :2], np.maximum(tcp[:, 2:], hover[:, 2:])], -1)[sel_reopen]
        phases[sel_reopen] = "reopen"
        target[sel_desc] = obj[sel_desc]
        phases[sel_desc] = "descend"
        # hover: above the cube; if low and off to the side, rise first (do not sweep through it)
        # near it in xy (fingers still straddle the cube), correct xy at the current height
        low_side = tcp[:, 2] < obj[:, 2] + 0.03
        near_xy = xy_err < self.PICK_NEAR_XY
        hov_t = np.where(low_side[:, None], np.concatenate([tcp[:, :2], hover[:, 2:]], -1), hover)
        hov_t = np.where((near_xy & lowered)[:, None], np.concatenate([obj[:, :2], tcp[:, 2:]], -1), hov_t)
        target[sel_hover] = hov_t[sel_hover]
        phases[sel_hover] = "hover"

        acts = np.zeros((n, ACTION_DIM))
        acts[:, POS_SLICE] = self._position_command(tcp, target)
        # stop moving while the fingers close, so the grasp is not dragged
        acts[sel_grasp, POS_SLICE] = 0.0
        # keep pointing down; align the yaw only before grasping (a held cube's yaw is irrelevant)
        yaw_goal = np.where(sel_carry | sel_grasp, tcp_yaw, desired_yaw)
        acts[:, ROT_SLICE] = self._rotation_command(s[:, TCP_QUAT], _down_orientation(yaw_goal))
        acts[:, GRIPPER_INDEX] = gripper
        return acts, list(phases)


__all__ = [
    "ScriptedTeacher",
    "SUPPORTED_TASKS",
    "PUSH_TASKS",
    "PICK_TASKS",
    "PLANNERS",
    "task_family",
    "CONTROLLER_ROT_SIGN",
    "rotation_command_to_delta",
    "rotation_delta_to_command",
    "physical_rotation_to_command",
    "quat_to_matrix",
    "euler_xyz_to_matrix",
    "matrix_to_euler_xyz",
    "rotvec_to_matrix",
    "matrix_to_rotvec",
    "rotate_about_axis",
]
