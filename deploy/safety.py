"""Safety filter between a policy's action and the command a ROS 2 node publishes to a Franka Panda.

Plain Python + numpy (no ROS imports), so it is unit- and property-tested without ROS. It is meant to
be the *only* path from a policy action to a published command: :meth:`SafetyFilter.step` returns
either a :class:`Command`, whose every field has been clamped into :class:`SafetyLimits` and then
re-verified, or a :class:`Hold` (publish nothing new; the node keeps the last safe target, which is
the current pose). It never raises on bad data.

Action convention (the policy's, = ManiSkill ``pd_ee_delta_pose``, :mod:`robot_rl.geometry`):
``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` normalized to [-1, 1] per control period.

* Position: ``delta_pos = clip(a[0:3], -1, 1) * pos_scale_m`` (0.1 m per unit), in the robot-base
  frame, added to the *current measured* TCP position (ManiSkill's ``use_target = False``).
* Rotation: ``a[3:6]`` is first rescaled to norm <= 1 (the ManiSkill controller clips the rotation
  command by its norm, the position per component), then ``euler = a[3:6] * rot_scale_rad * rot_sign``
  (0.1 rad per unit, sign -1: a +1 command turns the TCP by -0.1 rad, ManiSkill issue #1469) is an
  *intrinsic XYZ* Euler triple (``R = Rx(roll) @ Ry(pitch) @ Rz(yaw)``, pytorch3d
  ``euler_angles_to_matrix(.., "XYZ")``) about *base-aligned* axes through the TCP, *pre*-multiplied
  onto the current orientation: ``q_target = q_delta ⊗ q_current`` (ManiSkill's
  ``root_translation:root_aligned_body_rotation`` frame). Same convention as
  :func:`robot_rl.geometry.rotation_command_to_delta` / ``euler_xyz_to_matrix``.
* Gripper: ``clip(a[6], -1, 1)`` mapped linearly from [-1 (closed), +1 (open)] to
  ``[gripper_min_width_m, gripper_max_width_m]``.

Clamping order (each clamp that changes the command appends its name to ``Command.clamped``):

1. ``action_range`` (position per component to [-1, 1], rotation norm to 1, as the sim controller
   does), ``gripper_range`` (gripper to [-1, 1]);
2. translation norm: ``step_translation`` (``max_step_translation_m``), ``linear_velocity``
   (``max_linear_velocity_m_s * dt``), ``first_command_translation`` (first command only);
3. rotation angle (the rotation vector is scaled, its axis kept): ``step_rotation``,
   ``angular_velocity`` (``max_angular_velocity_rad_s * dt``), ``first_command_rotation``;
4. ``workspace``: the target position is clamped into the box.

``dt`` is the time since the last :class:`Command`, clamped to at most ``control_period_s`` (a late
tick cannot buy a large jump); for the first command ``dt = control_period_s``. ``dt = 0`` allows no
motion. All step and velocity limits are measured from the *current measured* pose to the new target
(the motion the low-level controller is asked to make in one period).

Box vs step limit (documented choice: **neither wins, both always hold**). Every Command satisfies,
with ``r = min(max_step_translation_m, max_linear_velocity_m_s * dt, first-command bound if first)``:
``workspace_min <= target_pos <= workspace_max`` exactly, and ``|target_pos - current_pos| <= r``
(up to :data:`NUMERIC_TOLERANCE`). If the current position lies inside the box this is the plain
clamp (clamping into the box only shortens the step). If it lies outside but within ``r`` of the box,
the target is the point of the box inside the ``r``-ball that is furthest along the segment from the
box point nearest the TCP towards the clamped target. If the box is farther than ``r`` from the TCP,
no command can satisfy both and the filter holds (reason ``outside_workspace``): an arm found
outside the box is never yanked back; an operator moves it (tracking overshoot of a few mm at a wall
is within ``r`` and is pulled back in).

Recovery after a hold (documented choice): the watchdog (and every other hold reason while active)
recovers by itself as soon as the inputs are good again, but *any* hold re-arms the first-command
bound, so the first command after a hold (stale input, missing input, NaN, bad pose, ...) is bounded
like the first command after :meth:`SafetyFilter.activate`: the node held the current pose, the arm
has come to rest, and it restarts gently.

State machine::

    INACTIVE --activate(pose)--> ACTIVE --deactivate()--> INACTIVE
    any --estop(reason)--> ESTOPPED --reset_estop()--> INACTIVE   (activate() raises while ESTOPPED)

Example limits (YAML, loaded with :meth:`SafetyLimits.from_dict`)::

    workspace_min: [0.25, -0.35, 0.02]      # m, robot base frame
    workspace_max: [0.75, 0.35, 0.60]
    max_step_translation_m: 0.02            # per control period
    max_step_rotation_rad: 0.05
    max_linear_velocity_m_s: 0.25
    max_angular_velocity_rad_s: 0.6
    max_input_age_s: 0.2
    first_command_max_translation_m: 0.005
    first_command_max_rotation_rad: 0.01
    gripper_min_width_m: 0.0
    gripper_max_width_m: 0.08
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from robot_rl.geometry import (
    ACTION_DIM,
    CONTROLLER_ROT_SIGN,
    GRIPPER_INDEX,
    POS_SCALE_M,
    POS_SLICE,
    ROT_SCALE_RAD,
    ROT_SLICE,
    quat_angle,
    quat_conjugate,
    quat_from_euler_xyz,
    quat_from_rotvec,
    quat_multiply,
    quat_to_rotvec,
)

#: Accepted deviation of the current pose quaternion's norm from 1 (ROS messages carry float32-ish
#: quaternions; a zero or garbage quaternion is far outside).
DEFAULT_QUAT_NORM_TOLERANCE = 1e-3
#: Floating-point slack (m, rad) of the final re-verification of a command's step and angle limits
#: (a vector scaled to norm ``r`` has norm ``r`` only to a few ulp). The box and gripper range are exact.
NUMERIC_TOLERANCE = 1e-9
#: Range of the normalized action, as the simulated controller clips it.
ACTION_LIMIT = 1.0

#: Hold reasons (stable keys for the diagnostics counters), in the order :meth:`SafetyFilter.step`
#: checks them.
HOLD_INACTIVE = "inactive"
HOLD_ESTOPPED = "estopped"
HOLD_INVALID_TIME = "invalid_time"
HOLD_MISSING_INPUT = "missing_input"
HOLD_STALE_INPUT = "stale_input"
HOLD_INVALID_POSE = "invalid_pose"
HOLD_INVALID_ACTION = "invalid_action"
HOLD_NONFINITE_ACTION = "nonfinite_action"
HOLD_OUTSIDE_WORKSPACE = "outside_workspace"
HOLD_INTERNAL_CHECK = "internal_check_failed"
HOLD_REASONS = (
    HOLD_INACTIVE,
    HOLD_ESTOPPED,
    HOLD_INVALID_TIME,
    HOLD_MISSING_INPUT,
    HOLD_STALE_INPUT,
    HOLD_INVALID_POSE,
    HOLD_INVALID_ACTION,
    HOLD_NONFINITE_ACTION,
    HOLD_OUTSIDE_WORKSPACE,
    HOLD_INTERNAL_CHECK,
)

#: Clamp names that can appear in ``Command.clamped``, in the order they are applied.
CLAMP_ACTION_RANGE = "action_range"
CLAMP_GRIPPER_RANGE = "gripper_range"
CLAMP_STEP_TRANSLATION = "step_translation"
CLAMP_LINEAR_VELOCITY = "linear_velocity"
CLAMP_FIRST_TRANSLATION = "first_command_translation"
CLAMP_STEP_ROTATION = "step_rotation"
CLAMP_ANGULAR_VELOCITY = "angular_velocity"
CLAMP_FIRST_ROTATION = "first_command_rotation"
CLAMP_WORKSPACE = "workspace"
CLAMP_NAMES = (
    CLAMP_ACTION_RANGE,
    CLAMP_GRIPPER_RANGE,
    CLAMP_STEP_TRANSLATION,
    CLAMP_LINEAR_VELOCITY,
    CLAMP_FIRST_TRANSLATION,
    CLAMP_STEP_ROTATION,
    CLAMP_ANGULAR_VELOCITY,
    CLAMP_FIRST_ROTATION,
    CLAMP_WORKSPACE,
)


# ----------------------------------------------------------------------------------------------
# Limits


@dataclass(frozen=True)
class SafetyLimits:
    """Hard limits of the commands the :class:`SafetyFilter` lets through.

    Every field is required (safety limits are chosen for a cell, not defaulted) and validated in
    ``__post_init__``: a bad value raises ``ValueError`` whose message starts with the field name.

    Attributes:
        workspace_min: ``(3,)`` lower corner of the box the target TCP position must stay in, metres,
            robot base frame; strictly below ``workspace_max`` per axis.
        workspace_max: ``(3,)`` upper corner of that box, metres, robot base frame.
        max_step_translation_m: largest distance from the current TCP position to a target, per
            control period, metres (> 0).
        max_step_rotation_rad: largest rotation angle from the current orientation to a target, per
            control period, radians (in (0, π]).
        max_linear_velocity_m_s: largest target distance / elapsed time since the last command, m/s (> 0).
        max_angular_velocity_rad_s: largest target rotation angle / elapsed time, rad/s (> 0).
        max_input_age_s: watchdog: an input stamp older than this (or this far in the future) makes
            the filter hold, seconds (> 0); the limit of every input not in ``max_input_age_by_input_s``.
        first_command_max_translation_m: translation bound of the first command after activation or
            after a hold, metres (>= 0).
        first_command_max_rotation_rad: rotation bound of that first command, radians (in [0, π]).
        gripper_min_width_m: commanded finger width for a fully closed action (-1), metres (>= 0).
        gripper_max_width_m: commanded finger width for a fully open action (+1), metres
            (>= ``gripper_min_width_m``).
        max_input_age_by_input_s: the watchdog's limit per input name, seconds (> 0 each), for inputs
            at different rates: robot state at 1 kHz (a few ms) next to a 5 Hz perception (0.5 s).
            The one optional key: ``{}`` (the default) uses ``max_input_age_s`` for every input.
    """

    workspace_min: tuple[float, float, float]
    workspace_max: tuple[float, float, float]
    max_step_translation_m: float
    max_step_rotation_rad: float
    max_linear_velocity_m_s: float
    max_angular_velocity_rad_s: float
    max_input_age_s: float
    first_command_max_translation_m: float
    first_command_max_rotation_rad: float
    gripper_min_width_m: float
    gripper_max_width_m: float
    max_input_age_by_input_s: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("workspace_min", "workspace_max"):
            object.__setattr__(self, name, _as_vec3(name, getattr(self, name)))
        by_input = self.max_input_age_by_input_s
        if not isinstance(by_input, Mapping) or not all(isinstance(k, str) for k in by_input):
            raise ValueError(f"max_input_age_by_input_s: must map input names to seconds, got {by_input!r}")
        ages = {k: _as_finite_float(f"max_input_age_by_input_s.{k}", v) for k, v in by_input.items()}
        bad = [k for k, v in ages.items() if v <= 0.0]
        if bad:
            raise ValueError(f"max_input_age_by_input_s.{bad[0]}: must be > 0, got {ages[bad[0]]}")
        object.__setattr__(self, "max_input_age_by_input_s", dict(ages))
        scalars = [f.name for f in dataclasses.fields(self)
                   if f.name not in ("workspace_min", "workspace_max", "max_input_age_by_input_s")]
        for name in scalars:
            object.__setattr__(self, name, _as_finite_float(name, getattr(self, name)))
        lo, hi = np.array(self.workspace_min), np.array(self.workspace_max)
        if not np.all(lo < hi):
            raise ValueError(
                f"workspace_min: must be < workspace_max on every axis, "
                f"got {self.workspace_min} vs {self.workspace_max}"
            )
        positive = (
            "max_step_translation_m",
            "max_linear_velocity_m_s",
            "max_angular_velocity_rad_s",
            "max_input_age_s",
        )
        for name in positive:
            if getattr(self, name) <= 0.0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.max_step_rotation_rad <= math.pi:
            raise ValueError(f"max_step_rotation_rad: must be in (0, pi], got {self.max_step_rotation_rad}")
        if self.first_command_max_translation_m < 0.0:
            raise ValueError(
                f"first_command_max_translation_m: must be >= 0, got {self.first_command_max_translation_m}"
            )
        if not 0.0 <= self.first_command_max_rotation_rad <= math.pi:
            raise ValueError(
                f"first_command_max_rotation_rad: must be in [0, pi], got {self.first_command_max_rotation_rad}"
            )
        if self.gripper_min_width_m < 0.0:
            raise ValueError(f"gripper_min_width_m: must be >= 0, got {self.gripper_min_width_m}")
        if self.gripper_max_width_m < self.gripper_min_width_m:
            raise ValueError(
                f"gripper_max_width_m: must be >= gripper_min_width_m ({self.gripper_min_width_m}), "
                f"got {self.gripper_max_width_m}"
            )

    #: Keys :meth:`from_dict` does not require (they have a default).
    OPTIONAL = ("max_input_age_by_input_s",)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The keys :meth:`from_dict` accepts (all required but :attr:`OPTIONAL`)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def max_input_age_for(self, name: str) -> float:
        """The watchdog's age limit of input ``name`` (s): its own, else ``max_input_age_s``."""
        return self.max_input_age_by_input_s.get(name, self.max_input_age_s)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SafetyLimits:
        """Build from a mapping (e.g. parsed YAML) with exactly the keys of :meth:`field_names`.

        Raises:
            ValueError: ``d`` is not a mapping; unknown keys (named, with the allowed keys); missing
                keys (named); or a bad value (message starts with the field name).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"safety limits: expected a mapping, got {type(d).__name__}")
        allowed = cls.field_names()
        unknown = sorted(str(k) for k in d if k not in allowed)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(allowed)}")
        missing = [k for k in allowed if k not in d and k not in cls.OPTIONAL]
        if missing:
            raise ValueError(f"missing key(s) {', '.join(missing)}")
        return cls(**{k: d[k] for k in allowed if k in d})

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python mapping (lists for the box corners) that :meth:`from_dict` reads back."""
        return {k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v)
                for k, v in dataclasses.asdict(self).items()}


def _as_finite_float(name: str, value: Any) -> float:
    """``value`` as a finite float; ``bool``, strings and non-finite numbers raise ``ValueError`` naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return out


def _as_vec3(name: str, value: Any) -> tuple[float, float, float]:
    """``value`` as a tuple of 3 finite floats; otherwise ``ValueError`` naming ``name``."""
    if isinstance(value, (str, bytes, Mapping)):
        raise ValueError(f"{name}: must be 3 numbers, got {value!r}")
    try:
        items = list(value)
    except TypeError:
        raise ValueError(f"{name}: must be 3 numbers, got {value!r}") from None
    if len(items) != 3:
        raise ValueError(f"{name}: must be 3 numbers, got {len(items)}")
    return tuple(_as_finite_float(f"{name}[{i}]", v) for i, v in enumerate(items))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# Decisions


@dataclass(frozen=True)
class Command:
    """A command that passed the filter (every field within the limits, all finite).

    Attributes:
        target_pos: ``(3,)`` target TCP position, metres, robot base frame (read-only array).
        target_quat: ``(4,)`` target TCP orientation, unit quaternion ``wxyz``, base frame (read-only).
        twist: ``(6,)`` ``[vx, vy, vz, wx, wy, wz]``: the velocity that reaches the target from the
            current pose in one nominal control period, m/s and rad/s, base frame (angular part =
            rotation vector of ``target ⊗ current⁻¹`` / period); within the velocity limits.
        gripper_width_m: commanded finger width, metres, within the gripper limits.
        clamped: names of the clamps that changed this command (see :data:`CLAMP_NAMES`), in order.
    """

    target_pos: np.ndarray
    target_quat: np.ndarray
    twist: np.ndarray
    gripper_width_m: float
    clamped: tuple[str, ...]


@dataclass(frozen=True)
class Hold:
    """Publish nothing new; the node keeps the last safe target (the current pose).

    Attributes:
        reason: one of :data:`HOLD_REASONS` (a stable key, counted in the diagnostics).
        detail: human-readable specifics (which input is stale, which field is bad, ...).
    """

    reason: str
    detail: str = ""


#: What :meth:`SafetyFilter.step` returns.
Decision = Command | Hold
#: A TCP pose: ``(pos (3,) metres, quat (4,) wxyz)`` in the robot base frame.
Pose = tuple[np.ndarray, np.ndarray]


class FilterState(str, Enum):
    """States of :class:`SafetyFilter` (see the module docstring's state machine)."""

    INACTIVE = "inactive"
    ACTIVE = "active"
    ESTOPPED = "estopped"


class SafetyStateError(RuntimeError):
    """An operation the current filter state forbids (e.g. :meth:`SafetyFilter.activate` while e-stopped)."""


# ----------------------------------------------------------------------------------------------
# Filter


class SafetyFilter:
    """Turns normalized ``pd_ee_delta_pose`` actions into limited pose targets, or holds.

    Args:
        limits: the hard limits.
        control_period_s: nominal control period, seconds (> 0); the ``dt`` of the velocity limits
            is clamped to it.
        required_inputs: names that must appear in ``input_stamps`` at every step (e.g.
            ``("ee_pose", "joint_states", "object_pose")``). Every stamp given, required or not,
            is checked by the watchdog. With none required, at least one stamp must be given.
        pos_scale_m: metres per normalized position unit (0.1, ManiSkill Panda ``pd_ee_delta_pose``).
        rot_scale_rad: radians per normalized rotation unit (0.1).
        rot_sign: sign the controller applies to a rotation command (-1, ManiSkill issue #1469).
        quat_norm_tolerance: largest accepted ``| |q| - 1 |`` of the current pose's quaternion.

    Raises:
        ValueError: a bad argument (message names it).

    Thread safety: every public method takes one lock, so a node may call :meth:`estop` from
    another executor thread; a :meth:`step` that finished before the e-stop may still return a
    command, so the node must check :attr:`state` before publishing it.
    """

    def __init__(
        self,
        limits: SafetyLimits,
        control_period_s: float,
        *,
        required_inputs: Sequence[str] = (),
        pos_scale_m: float = POS_SCALE_M,
        rot_scale_rad: float = ROT_SCALE_RAD,
        rot_sign: float = CONTROLLER_ROT_SIGN,
        quat_norm_tolerance: float = DEFAULT_QUAT_NORM_TOLERANCE,
    ) -> None:
        if not isinstance(limits, SafetyLimits):
            raise ValueError(f"limits: must be a SafetyLimits, got {type(limits).__name__}")
        self.limits = limits
        self.control_period_s = _positive("control_period_s", control_period_s)
        self.pos_scale_m = _positive("pos_scale_m", pos_scale_m)
        self.rot_scale_rad = _positive("rot_scale_rad", rot_scale_rad)
        if rot_sign not in (-1, 1):
            raise ValueError(f"rot_sign: must be -1 or +1, got {rot_sign!r}")
        self.rot_sign = float(rot_sign)
        self.quat_norm_tolerance = _positive("quat_norm_tolerance", quat_norm_tolerance)
        if isinstance(required_inputs, str) or not all(isinstance(n, str) for n in required_inputs):
            raise ValueError(f"required_inputs: must be a sequence of names, got {required_inputs!r}")
        self.required_inputs = tuple(required_inputs)

        self._box_min = np.array(limits.workspace_min)
        self._box_max = np.array(limits.workspace_max)
        self._lock = threading.RLock()
        self._state = FilterState.INACTIVE
        self._estop_reason = ""
        self._first_pending = True
        self._last_command_s: float | None = None
        self._activation_pose: Pose | None = None
        self._holds: Counter[str] = Counter({r: 0 for r in HOLD_REASONS})
        self._clamps: Counter[str] = Counter({c: 0 for c in CLAMP_NAMES})
        self._n_commands = 0
        self._n_estops = 0
        self._last_hold: Hold | None = None

    # -- state machine -------------------------------------------------------------------------

    @property
    def state(self) -> FilterState:
        """The current :class:`FilterState`."""
        return self._state

    def activate(self, current_pose: Pose) -> None:
        """INACTIVE/ACTIVE -> ACTIVE; the next command is bounded like a first command.

        Args:
            current_pose: ``(pos (3,) m, quat (4,) wxyz)`` measured at activation (kept for diagnostics).

        Raises:
            SafetyStateError: while e-stopped (call :meth:`reset_estop` first).
            ValueError: ``current_pose`` is malformed, non-finite or has a non-unit quaternion.
        """
        with self._lock:
            if self._state is FilterState.ESTOPPED:
                raise SafetyStateError(
                    f"e-stopped ({self._estop_reason}): call reset_estop() before activate()"
                )
            pose, problem = self._parse_pose(current_pose)
            if pose is None:
                raise ValueError(f"current_pose: {problem}")
            self._activation_pose = pose
            self._state = FilterState.ACTIVE
            self._first_pending = True
            self._last_command_s = None

    def deactivate(self) -> None:
        """ACTIVE -> INACTIVE (every step holds). No effect while e-stopped or inactive."""
        with self._lock:
            if self._state is FilterState.ACTIVE:
                self._state = FilterState.INACTIVE

    def estop(self, reason: str) -> None:
        """Any state -> ESTOPPED (latched): every step holds until :meth:`reset_estop` + :meth:`activate`.

        Args:
            reason: why (kept for the diagnostics; a repeated e-stop keeps the first reason).
        """
        with self._lock:
            self._n_estops += 1
            if self._state is not FilterState.ESTOPPED:
                self._estop_reason = str(reason)
            self._state = FilterState.ESTOPPED

    def reset_estop(self) -> None:
        """ESTOPPED -> INACTIVE (still no command until :meth:`activate`). No effect otherwise."""
        with self._lock:
            if self._state is FilterState.ESTOPPED:
                self._state = FilterState.INACTIVE
                self._estop_reason = ""

    # -- the filter ----------------------------------------------------------------------------

    def step(
        self,
        action: Any,
        current_pose: Pose,
        now_s: float,
        input_stamps: Mapping[str, float],
    ) -> Decision:
        """Filter one policy action into a :class:`Command`, or :class:`Hold`.

        Args:
            action: ``(7,)`` normalized ``pd_ee_delta_pose`` action (module docstring); any values,
                NaN and inf included.
            current_pose: ``(pos (3,) m, quat (4,) wxyz)``, the measured TCP pose, robot base frame.
            now_s: current time, seconds (the clock of the stamps).
            input_stamps: name -> time (seconds, same clock) of the newest message of each input the
                action was computed from; checked by the watchdog.

        Returns:
            A :class:`Command` within the limits, or a :class:`Hold` whose reason is the first that
            applies of: ``inactive``, ``estopped``, ``invalid_time`` (``now_s`` non-finite or before
            the last command), ``missing_input``, ``stale_input`` (a stamp non-finite or more than
            ``max_input_age_s`` old or in the future), ``invalid_pose`` (malformed, non-finite,
            ``| |q| - 1 | > quat_norm_tolerance``), ``invalid_action`` (not 7 numbers),
            ``nonfinite_action``, ``outside_workspace`` (box farther than the allowed step),
            ``internal_check_failed`` (the final re-verification; should never happen). Never raises
            on bad data. Any hold while active re-arms the first-command bound.
        """
        with self._lock:
            decision = self._step(action, current_pose, now_s, input_stamps)
            if isinstance(decision, Hold):
                self._holds[decision.reason] += 1
                self._last_hold = decision
                if self._state is FilterState.ACTIVE:
                    self._first_pending = True
            else:
                self._n_commands += 1
                self._clamps.update(decision.clamped)
                self._first_pending = False
                self._last_command_s = float(now_s)
            return decision

    def diagnostics(self) -> dict[str, Any]:
        """Flat ``str -> str | int | float | bool`` snapshot for a diagnostics topic (KeyValue pairs).

        Keys: ``state``, ``estop_reason``, ``estop_count``, ``first_command_pending``,
        ``commands_total``, ``holds_total``, ``last_hold_reason``, ``last_hold_detail``,
        ``hold.<reason>`` for every reason in :data:`HOLD_REASONS` and ``clamp.<name>`` for every
        name in :data:`CLAMP_NAMES` (counts since construction), ``control_period_s``.
        """
        with self._lock:
            out: dict[str, Any] = {
                "state": self._state.value,
                "estop_reason": self._estop_reason,
                "estop_count": self._n_estops,
                "first_command_pending": self._first_pending,
                "commands_total": self._n_commands,
                "holds_total": sum(self._holds.values()),
                "last_hold_reason": self._last_hold.reason if self._last_hold else "",
                "last_hold_detail": self._last_hold.detail if self._last_hold else "",
                "control_period_s": self.control_period_s,
            }
            out.update({f"hold.{r}": self._holds[r] for r in HOLD_REASONS})
            out.update({f"clamp.{c}": self._clamps[c] for c in CLAMP_NAMES})
            return out

    # -- internals -----------------------------------------------------------------------------

    def _step(self, action: Any, current_pose: Pose, now_s: Any, input_stamps: Any) -> Decision:
        """:meth:`step` without the bookkeeping."""
        lim = self.limits
        if self._state is FilterState.ESTOPPED:
            return Hold(HOLD_ESTOPPED, self._estop_reason)
        if self._state is not FilterState.ACTIVE:
            return Hold(HOLD_INACTIVE, "activate() first")

        # time
        try:
            now = float(now_s)
        except (TypeError, ValueError):
            return Hold(HOLD_INVALID_TIME, f"now_s is not a number: {now_s!r}")
        if not math.isfinite(now):
            return Hold(HOLD_INVALID_TIME, f"now_s is not finite: {now}")
        if self._last_command_s is not None and now < self._last_command_s:
            return Hold(HOLD_INVALID_TIME, f"now_s {now} is before the last command at {self._last_command_s}")

        # watchdog
        hold = self._check_inputs(input_stamps, now)
        if hold is not None:
            return hold

        # pose
        pose, problem = self._parse_pose(current_pose)
        if pose is None:
            return Hold(HOLD_INVALID_POSE, problem)
        pos, quat = pose

        # action
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            return Hold(HOLD_INVALID_ACTION, "action is not numeric")
        if a.shape != (ACTION_DIM,):
            return Hold(HOLD_INVALID_ACTION, f"action must have shape ({ACTION_DIM},), got {a.shape}")
        if not np.all(np.isfinite(a)):
            bad = [int(i) for i in np.nonzero(~np.isfinite(a))[0]]
            return Hold(HOLD_NONFINITE_ACTION, f"non-finite action entries at {bad}")

        clamped: list[str] = []
        first = self._first_pending or self._last_command_s is None
        dt = self.control_period_s if first else min(now - self._last_command_s, self.control_period_s)

        # 1. the controller's action range
        pos_cmd = np.clip(a[POS_SLICE], -ACTION_LIMIT, ACTION_LIMIT)
        rot_cmd = _clip_norm(a[ROT_SLICE], ACTION_LIMIT)
        if np.any(pos_cmd != a[POS_SLICE]) or np.any(rot_cmd != a[ROT_SLICE]):
            clamped.append(CLAMP_ACTION_RANGE)
        grip = float(np.clip(a[GRIPPER_INDEX], -ACTION_LIMIT, ACTION_LIMIT))
        if grip != a[GRIPPER_INDEX]:
            clamped.append(CLAMP_GRIPPER_RANGE)

        # 2. translation norm
        delta = pos_cmd * self.pos_scale_m
        trans_limits = [
            (CLAMP_STEP_TRANSLATION, lim.max_step_translation_m),
            (CLAMP_LINEAR_VELOCITY, lim.max_linear_velocity_m_s * dt),
        ]
        if first:
            trans_limits.append((CLAMP_FIRST_TRANSLATION, lim.first_command_max_translation_m))
        for name, bound in trans_limits:
            if np.linalg.norm(delta) > bound:
                delta = _clip_norm(delta, bound)
                clamped.append(name)
        r_trans = min(b for _, b in trans_limits)

        # 3. rotation angle (scale the rotation vector, keep its axis)
        euler = rot_cmd * (self.rot_scale_rad * self.rot_sign)
        rotvec = quat_to_rotvec(quat_from_euler_xyz(euler))
        rot_limits = [
            (CLAMP_STEP_ROTATION, lim.max_step_rotation_rad),
            (CLAMP_ANGULAR_VELOCITY, lim.max_angular_velocity_rad_s * dt),
        ]
        if first:
            rot_limits.append((CLAMP_FIRST_ROTATION, lim.first_command_max_rotation_rad))
        for name, bound in rot_limits:
            if np.linalg.norm(rotvec) > bound:
                rotvec = _clip_norm(rotvec, bound)
                clamped.append(name)
        r_rot = min(b for _, b in rot_limits)

        # 4. workspace box on the target, without breaking the step bound r_trans
        target_pos, hold = self._clamp_into_box(pos, delta, r_trans)
        if hold is not None:
            return hold
        if np.any(np.clip(pos + delta, self._box_min, self._box_max) != pos + delta):
            clamped.append(CLAMP_WORKSPACE)

        target_quat = quat_multiply(quat_from_rotvec(rotvec), quat)
        target_quat = target_quat / np.linalg.norm(target_quat)
        lin = (target_pos - pos) / self.control_period_s
        ang = quat_to_rotvec(quat_multiply(target_quat, quat_conjugate(quat))) / self.control_period_s
        width = lim.gripper_min_width_m + (grip + 1.0) / 2.0 * (lim.gripper_max_width_m - lim.gripper_min_width_m)
        width = float(min(max(width, lim.gripper_min_width_m), lim.gripper_max_width_m))

        command = Command(
            target_pos=_readonly(target_pos),
            target_quat=_readonly(target_quat),
            twist=_readonly(np.concatenate([lin, ang])),
            gripper_width_m=width,
            clamped=tuple(clamped),
        )
        problem = self._verify(command, pos, quat, r_trans, r_rot)
        if problem:
            return Hold(HOLD_INTERNAL_CHECK, problem)
        return command

    def watchdog(self, input_stamps: Any, now_s: float) -> Hold | None:
        """The watchdog alone: the ``stale_input`` / ``missing_input`` :class:`Hold` :meth:`step` would answer for
        these ``input_stamps`` (name -> s, the clock of ``now_s``) at ``now_s``, or None when they are all fresh.
        Counts nothing (for a caller that asks whether a step is worth taking).
        """
        try:
            now = float(now_s)
        except (TypeError, ValueError):
            return Hold(HOLD_INVALID_TIME, f"now_s is not a number: {now_s!r}")
        return self._check_inputs(input_stamps, now)

    def _check_inputs(self, input_stamps: Any, now: float) -> Hold | None:
        """Watchdog: a :class:`Hold` if an input is missing or its stamp is non-finite / too old / from the future
        (each input against :meth:`SafetyLimits.max_input_age_for`).
        """
        if not isinstance(input_stamps, Mapping):
            return Hold(HOLD_MISSING_INPUT, f"input_stamps must be a mapping, got {type(input_stamps).__name__}")
        missing = [n for n in self.required_inputs if n not in input_stamps]
        if missing:
            return Hold(HOLD_MISSING_INPUT, f"no stamp for {', '.join(missing)}")
        if not input_stamps:
            return Hold(HOLD_MISSING_INPUT, "no input stamps given")
        stale = []
        for name, stamp in input_stamps.items():
            try:
                age = now - float(stamp)
            except (TypeError, ValueError):
                stale.append(f"{name} (stamp {stamp!r})")
                continue
            # `not <=` so a NaN age counts as stale
            limit = self.limits.max_input_age_for(name)
            if not abs(age) <= limit:
                stale.append(f"{name} (age {age:.3f} s > {limit:g} s)")
        if stale:
            return Hold(HOLD_STALE_INPUT, f"max input age exceeded: {', '.join(stale)}")
        return None

    def _parse_pose(self, current_pose: Any) -> tuple[Pose | None, str]:
        """``(pos (3,), unit quat (4,))`` as float64 copies, or ``(None, why)``."""
        try:
            raw_pos, raw_quat = current_pose
            pos = np.array(raw_pos, dtype=np.float64)
            quat = np.array(raw_quat, dtype=np.float64)
        except (TypeError, ValueError):
            return None, "current_pose must be (pos (3,), quat (4,))"
        if pos.shape != (3,) or quat.shape != (4,):
            return None, f"current_pose shapes must be (3,), (4,), got {pos.shape}, {quat.shape}"
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(quat))):
            return None, "current_pose is not finite"
        norm = float(np.linalg.norm(quat))
        if not abs(norm - 1.0) <= self.quat_norm_tolerance:
            return None, f"current_pose quaternion norm {norm} is not 1 (tolerance {self.quat_norm_tolerance})"
        return (pos, quat / norm), ""

    def _clamp_into_box(self, pos: np.ndarray, delta: np.ndarray, r: float) -> tuple[np.ndarray, Hold | None]:
        """Target ``clip(pos + delta)`` into the box while keeping ``|target - pos| <= r``.

        ``|delta| <= r`` on entry. Inside the box a plain clamp suffices (it only shortens the step).
        Outside, with ``p0`` the box point nearest ``pos`` (``|p0 - pos| <= r`` or hold) and ``t``
        the clamped target: the furthest point of the segment ``p0 -> t`` (inside the box, which is
        convex) within ``r`` of ``pos`` (the ball is convex and holds ``p0``, so it is one root of a
        quadratic).
        """
        target = np.clip(pos + delta, self._box_min, self._box_max)
        p0 = np.clip(pos, self._box_min, self._box_max)
        if np.all(p0 == pos) or np.linalg.norm(target - pos) <= r:
            # inside the box, clamping moves each coordinate towards pos: |target - pos| <= |delta|
            return target, None
        a = p0 - pos
        d0 = float(np.linalg.norm(a))
        if d0 > r:
            return target, Hold(
                HOLD_OUTSIDE_WORKSPACE,
                f"TCP {np.round(pos, 4).tolist()} is {d0:.4f} m from the workspace box, "
                f"more than the allowed step {r:.4f} m",
            )
        b = target - p0
        bb = float(b @ b)
        if bb == 0.0:
            return p0, None
        ab = float(a @ b)
        disc = max(ab * ab - bb * (d0 * d0 - r * r), 0.0)
        s = min(max((-ab + math.sqrt(disc)) / bb, 0.0), 1.0)
        return np.clip(p0 + s * b, self._box_min, self._box_max), None

    def _verify(self, c: Command, pos: np.ndarray, quat: np.ndarray, r_trans: float, r_rot: float) -> str:
        """Independent re-check of a built command against the limits; ``""`` if it passes, else why."""
        lim = self.limits
        arrays = (c.target_pos, c.target_quat, c.twist)
        if not all(np.all(np.isfinite(x)) for x in arrays) or not math.isfinite(c.gripper_width_m):
            return "non-finite command"
        if np.any(c.target_pos < self._box_min) or np.any(c.target_pos > self._box_max):
            return "target outside the workspace box"
        if np.linalg.norm(c.target_pos - pos) > r_trans + NUMERIC_TOLERANCE:
            return "translation step above its bound"
        if quat_angle(quat_multiply(c.target_quat, quat_conjugate(quat))) > r_rot + NUMERIC_TOLERANCE:
            return "rotation step above its bound"
        if np.linalg.norm(c.twist[:3]) > lim.max_linear_velocity_m_s + NUMERIC_TOLERANCE / self.control_period_s:
            return "linear velocity above its limit"
        if np.linalg.norm(c.twist[3:]) > lim.max_angular_velocity_rad_s + NUMERIC_TOLERANCE / self.control_period_s:
            return "angular velocity above its limit"
        if not lim.gripper_min_width_m <= c.gripper_width_m <= lim.gripper_max_width_m:
            return "gripper width outside its limits"
        return ""


def _clip_norm(v: np.ndarray, max_norm: float) -> np.ndarray:
    """``(n,)`` ``v`` rescaled (direction kept) to norm ``max_norm`` if longer; overflow-safe for huge entries."""
    v = np.asarray(v, dtype=np.float64)
    m = float(np.max(np.abs(v))) if v.size else 0.0
    if m == 0.0:
        return v
    u = v / m  # entries in [-1, 1]: no overflow in the norm
    n = float(np.linalg.norm(u))
    if n * m <= max_norm:
        return v
    return u * (max_norm / n)


def _positive(name: str, value: Any) -> float:
    """``value`` as a finite float > 0, else ``ValueError`` naming ``name``."""
    out = _as_finite_float(name, value)
    if out <= 0.0:
        raise ValueError(f"{name}: must be > 0, got {value!r}")
    return out


def _readonly(x: np.ndarray) -> np.ndarray:
    """A read-only float64 copy of ``x`` (a checked command cannot be altered downstream)."""
    out = np.array(x, dtype=np.float64)
    out.setflags(write=False)
    return out


__all__ = [
    "SafetyLimits",
    "SafetyFilter",
    "Command",
    "Hold",
    "Decision",
    "Pose",
    "FilterState",
    "SafetyStateError",
    "HOLD_REASONS",
    "CLAMP_NAMES",
    "NUMERIC_TOLERANCE",
    "DEFAULT_QUAT_NORM_TOLERANCE",
]
