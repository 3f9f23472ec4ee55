"""Tests of the deploy safety filter (robot_rl.deploy.safety): hand-computed cases and hypothesis properties.

No ROS, no simulator. The properties check exactly what the module docstring promises for every
Command: target inside the box (exact), ``|target - current| <= min(step, v * dt, first bound)``,
rotation angle likewise, twist within the velocity limits, gripper within its limits, all finite;
and a Hold ``outside_workspace`` exactly when the box is out of reach of that step.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from robot_rl.deploy.safety import (
    CLAMP_NAMES,
    HOLD_REASONS,
    NUMERIC_TOLERANCE,
    Command,
    FilterState,
    Hold,
    SafetyFilter,
    SafetyLimits,
    SafetyStateError,
)
from robot_rl.geometry import (
    euler_xyz_to_matrix,
    quat_angle,
    quat_conjugate,
    quat_from_euler_xyz,
    quat_from_rotvec,
    quat_multiply,
    quat_to_matrix,
    quat_to_rotvec,
    rotation_command_to_delta,
    rotvec_to_matrix,
)

PERIOD_S = 0.05  # 20 Hz, the env's control rate
IDENTITY = np.array([1.0, 0.0, 0.0, 0.0])
HOME = np.array([0.5, 0.0, 0.3])  # inside the box of LIMITS
STAMPS = {"ee_pose": 0.0}
TOL = NUMERIC_TOLERANCE

LIMITS = SafetyLimits(
    workspace_min=(0.2, -0.4, 0.0),
    workspace_max=(0.8, 0.4, 0.6),
    max_step_translation_m=0.08,  # > 0.05 so a 0.5 action passes, < 0.1 so a full one is clamped
    max_step_rotation_rad=0.15,  # > 0.1: a full rotation command passes
    max_linear_velocity_m_s=2.0,  # 0.1 m per period: not binding at dt = period
    max_angular_velocity_rad_s=4.0,  # 0.2 rad per period
    max_input_age_s=0.2,
    first_command_max_translation_m=0.1,  # not binding unless a test tightens it
    first_command_max_rotation_rad=0.2,
    gripper_min_width_m=0.0,
    gripper_max_width_m=0.08,
)


def act(pos=(0.0, 0.0, 0.0), rot=(0.0, 0.0, 0.0), grip=1.0):
    """A ``(7,)`` normalized action."""
    return np.array([*pos, *rot, grip], dtype=np.float64)


def active_filter(limits=LIMITS, pose=(HOME, IDENTITY), **kwargs):
    f = SafetyFilter(limits, PERIOD_S, **kwargs)
    f.activate(pose)
    return f


def stamps(now):
    return {"ee_pose": now}


def rot_x(angle):
    return np.array([math.cos(angle / 2), math.sin(angle / 2), 0.0, 0.0])


def rot_z(angle):
    return np.array([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)])


def relative_angle(q_target, q_current):
    """Rotation angle (rad) from ``q_current`` to ``q_target``, both ``wxyz``."""
    q_current = np.asarray(q_current) / np.linalg.norm(q_current)
    return float(quat_angle(quat_multiply(q_target, quat_conjugate(q_current))))


# -- quaternion helpers, consistent with teachers/scripted.py ------------------------------------


def test_quaternion_helpers_agree_with_scripted_matrix_helpers():
    rng = np.random.default_rng(0)
    euler = rng.uniform(-1.0, 1.0, (20, 3))
    np.testing.assert_allclose(quat_to_matrix(quat_from_euler_xyz(euler)), euler_xyz_to_matrix(euler), atol=1e-12)
    rotvec = rng.normal(size=(20, 3))
    rotvec *= (rng.uniform(0, 3.1, 20) / np.linalg.norm(rotvec, axis=-1))[:, None]
    q = quat_from_rotvec(rotvec)
    np.testing.assert_allclose(quat_to_matrix(q), rotvec_to_matrix(rotvec), atol=1e-12)
    np.testing.assert_allclose(quat_to_rotvec(q), rotvec, atol=1e-12)
    np.testing.assert_allclose(quat_to_rotvec(-q), rotvec, atol=1e-12)  # q and -q: same rotation
    np.testing.assert_allclose(quat_angle(q), np.linalg.norm(rotvec, axis=-1), atol=1e-12)
    q2 = quat_from_rotvec(rng.normal(size=(20, 3)))
    np.testing.assert_allclose(
        quat_to_matrix(quat_multiply(q, q2)), quat_to_matrix(q) @ quat_to_matrix(q2), atol=1e-12
    )
    np.testing.assert_array_equal(quat_from_rotvec(np.zeros(3)), IDENTITY)
    np.testing.assert_array_equal(quat_to_rotvec(IDENTITY), np.zeros(3))


# -- hand-computed commands ---------------------------------------------------------------------


def test_pure_x_action_moves_5cm_in_x():
    f = active_filter()
    c = f.step(act(pos=(0.5, 0, 0)), (HOME, IDENTITY), 0.0, STAMPS)
    assert isinstance(c, Command)
    np.testing.assert_allclose(c.target_pos, HOME + [0.05, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(c.target_quat, IDENTITY, atol=1e-15)
    np.testing.assert_allclose(c.twist, [0.05 / PERIOD_S, 0, 0, 0, 0, 0], atol=1e-12)
    assert c.gripper_width_m == pytest.approx(0.08)
    assert c.clamped == ()


def test_command_arrays_are_read_only():
    c = active_filter().step(act(pos=(0.5, 0, 0)), (HOME, IDENTITY), 0.0, STAMPS)
    with pytest.raises(ValueError):
        c.target_pos[0] = 10.0


def test_plus_one_roll_turns_minus_0p1_rad_about_base_x():
    """ManiSkill issue #1469: a +1 rotation command turns the EE by -0.1 rad."""
    c = active_filter().step(act(rot=(1.0, 0, 0)), (HOME, IDENTITY), 0.0, STAMPS)
    np.testing.assert_allclose(c.target_quat, rot_x(-0.1), atol=1e-12)
    np.testing.assert_allclose(quat_to_rotvec(c.target_quat), [-0.1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(c.twist[3:], [-0.1 / PERIOD_S, 0, 0], atol=1e-9)
    np.testing.assert_allclose(c.target_pos, HOME, atol=0)


def test_rotation_is_about_base_axes_premultiplied():
    """With the TCP yawed by 90 deg, a roll command still turns about the *base* x axis."""
    current = rot_z(math.pi / 2)
    c = active_filter(pose=(HOME, current)).step(act(rot=(1.0, 0, 0)), (HOME, current), 0.0, STAMPS)
    expected = quat_to_matrix(rot_x(-0.1)) @ quat_to_matrix(current)
    np.testing.assert_allclose(quat_to_matrix(c.target_quat), expected, atol=1e-12)


def test_combined_rotation_matches_scripted_convention():
    """Target = euler_xyz(rotation_command_to_delta(cmd)) pre-multiplied (teachers/scripted.py)."""
    cmd = np.array([0.3, -0.5, 0.7])  # norm < 1: no action-range clamp
    current = quat_from_rotvec([0.2, -0.4, 1.0])
    c = active_filter(pose=(HOME, current)).step(act(rot=cmd), (HOME, current), 0.0, STAMPS)
    assert c.clamped == ()
    expected = euler_xyz_to_matrix(rotation_command_to_delta(cmd)) @ quat_to_matrix(current)
    np.testing.assert_allclose(quat_to_matrix(c.target_quat), expected, atol=1e-12)


def test_scale_and_sign_are_constructor_parameters():
    f = active_filter(pos_scale_m=0.05, rot_scale_rad=0.2, rot_sign=1.0)
    c = f.step(act(pos=(0.5, 0, 0), rot=(0.5, 0, 0)), (HOME, IDENTITY), 0.0, STAMPS)
    np.testing.assert_allclose(c.target_pos, HOME + [0.025, 0, 0], atol=1e-15)
    np.testing.assert_allclose(c.target_quat, rot_x(+0.1), atol=1e-12)


@pytest.mark.parametrize("grip, width", [(-1.0, 0.0), (1.0, 0.08), (0.0, 0.04), (0.5, 0.06)])
def test_gripper_mapping(grip, width):
    limits = dataclasses.replace(LIMITS, gripper_min_width_m=0.0, gripper_max_width_m=0.08)
    c = active_filter(limits).step(act(grip=grip), (HOME, IDENTITY), 0.0, STAMPS)
    assert c.gripper_width_m == pytest.approx(width, abs=1e-15)
    assert c.clamped == ()


def test_gripper_mapping_with_nonzero_min():
    limits = dataclasses.replace(LIMITS, gripper_min_width_m=0.01, gripper_max_width_m=0.07)
    c = active_filter(limits).step(act(grip=0.0), (HOME, IDENTITY), 0.0, STAMPS)
    assert c.gripper_width_m == pytest.approx(0.04)


# -- clamps, one kind at a time ------------------------------------------------------------------


def test_clamp_step_translation():
    c = active_filter().step(act(pos=(0.6, 0.8, 0)), (HOME, IDENTITY), 0.0, STAMPS)  # 0.1 m requested
    np.testing.assert_allclose(c.target_pos - HOME, [0.048, 0.064, 0.0], atol=1e-15)  # 0.08 m, same direction
    assert c.clamped == ("step_translation",)


def test_clamp_step_rotation():
    limits = dataclasses.replace(LIMITS, max_step_rotation_rad=0.05)
    c = active_filter(limits).step(act(rot=(1.0, 0, 0)), (HOME, IDENTITY), 0.0, STAMPS)
    np.testing.assert_allclose(c.target_quat, rot_x(-0.05), atol=1e-12)  # axis and sign kept
    assert c.clamped == ("step_rotation",)


def test_clamp_linear_velocity_uses_elapsed_dt():
    f = active_filter()
    f.step(act(), (HOME, IDENTITY), 0.0, stamps(0.0))
    c = f.step(act(pos=(0.5, 0, 0)), (HOME, IDENTITY), 0.01, stamps(0.01))  # 0.05 m in 0.01 s > 2 m/s
    np.testing.assert_allclose(c.target_pos - HOME, [0.02, 0, 0], atol=1e-15)  # 2 m/s * 0.01 s
    assert c.clamped == ("linear_velocity",)


def test_clamp_angular_velocity_uses_elapsed_dt():
    f = active_filter()
    f.step(act(), (HOME, IDENTITY), 0.0, stamps(0.0))
    c = f.step(act(rot=(1.0, 0, 0)), (HOME, IDENTITY), 0.01, stamps(0.01))  # 0.1 rad in 0.01 s > 4 rad/s
    np.testing.assert_allclose(c.target_quat, rot_x(-0.04), atol=1e-12)
    assert c.clamped == ("angular_velocity",)


def test_late_tick_gives_no_larger_step():
    """The tick's ``dt`` is clamped to the nominal period: 1 s late still allows only one period's motion."""
    limits = dataclasses.replace(LIMITS, max_linear_velocity_m_s=0.4)  # 0.02 m per period
    f = active_filter(limits)
    f.step(act(), (HOME, IDENTITY), 0.0, stamps(0.0))
    c = f.step(act(pos=(0.5, 0, 0)), (HOME, IDENTITY), 1.0, stamps(1.0))
    np.testing.assert_allclose(c.target_pos - HOME, [0.02, 0, 0], atol=1e-15)
    assert c.clamped == ("linear_velocity",)


def test_zero_dt_allows_no_motion():
    f = active_filter()
    f.step(act(), (HOME, IDENTITY), 1.0, stamps(1.0))
    c = f.step(act(pos=(1, 0, 0), rot=(1, 0, 0)), (HOME, IDENTITY), 1.0, stamps(1.0))
    np.testing.assert_allclose(c.target_pos, HOME, atol=0)
    assert relative_angle(c.target_quat, IDENTITY) <= TOL
    assert "linear_velocity" in c.clamped and "angular_velocity" in c.clamped


def test_clamp_workspace():
    pos = np.array([0.78, 0.0, 0.3])
    c = active_filter(pose=(pos, IDENTITY)).step(act(pos=(0.5, 0, 0)), (pos, IDENTITY), 0.0, STAMPS)
    np.testing.assert_allclose(c.target_pos, [0.8, 0.0, 0.3], atol=0)
    assert c.clamped == ("workspace",)


def test_clamp_action_range_position_per_component_rotation_by_norm():
    c = active_filter().step(act(pos=(3.0, 0, 0), rot=(0, 1.2, 1.6)), (HOME, IDENTITY), 0.0, STAMPS)
    # position: 3 -> 1 -> 0.1 m -> step limit 0.08 m; rotation: norm 2 -> 1 -> (0, -0.06, -0.08) rad
    np.testing.assert_allclose(c.target_pos - HOME, [0.08, 0, 0], atol=1e-15)
    expected = euler_xyz_to_matrix(np.array([0.0, -0.06, -0.08]))
    np.testing.assert_allclose(quat_to_matrix(c.target_quat), expected, atol=1e-12)
    assert c.clamped == ("action_range", "step_translation")


def test_clamp_gripper_range():
    c = active_filter().step(act(grip=5.0), (HOME, IDENTITY), 0.0, STAMPS)
    assert c.gripper_width_m == 0.08
    assert c.clamped == ("gripper_range",)


def test_huge_action_is_clamped_not_overflowed():
    c = active_filter().step(act(pos=(1e308, -1e308, 0), rot=(1e308, 1e308, 0)), (HOME, IDENTITY), 0.0, STAMPS)
    assert isinstance(c, Command)
    step = c.target_pos - HOME
    np.testing.assert_allclose(step, [0.08 / math.sqrt(2), -0.08 / math.sqrt(2), 0], atol=1e-12)
    # rotation: norm clipped to 1 -> Euler triple -0.1 * (1, 1, 0) / sqrt(2) rad (an Euler norm, not the angle)
    expected = euler_xyz_to_matrix(-0.1 * np.array([1.0, 1.0, 0.0]) / math.sqrt(2))
    np.testing.assert_allclose(quat_to_matrix(c.target_quat), expected, atol=1e-12)
    assert c.clamped == ("action_range", "step_translation")


# -- first command ------------------------------------------------------------------------------


def test_first_command_is_bounded_then_released():
    limits = dataclasses.replace(LIMITS, first_command_max_translation_m=0.01, first_command_max_rotation_rad=0.02)
    f = active_filter(limits)
    c1 = f.step(act(pos=(0.5, 0, 0), rot=(1, 0, 0)), (HOME, IDENTITY), 0.0, stamps(0.0))
    np.testing.assert_allclose(c1.target_pos - HOME, [0.01, 0, 0], atol=1e-15)
    np.testing.assert_allclose(c1.target_quat, rot_x(-0.02), atol=1e-12)
    assert c1.clamped == ("first_command_translation", "first_command_rotation")
    c2 = f.step(act(pos=(0.5, 0, 0), rot=(1, 0, 0)), (HOME, IDENTITY), PERIOD_S, stamps(PERIOD_S))
    np.testing.assert_allclose(c2.target_pos - HOME, [0.05, 0, 0], atol=1e-15)
    np.testing.assert_allclose(c2.target_quat, rot_x(-0.1), atol=1e-12)
    assert c2.clamped == ()
    f.activate((HOME, IDENTITY))  # re-activation re-arms the bound
    c3 = f.step(act(pos=(0.5, 0, 0)), (HOME, IDENTITY), 2 * PERIOD_S, stamps(2 * PERIOD_S))
    assert c3.clamped == ("first_command_translation",)


# -- watchdog -----------------------------------------------------------------------------------


def test_watchdog_holds_on_stale_input_and_recovers_bounded_like_a_first_command():
    limits = dataclasses.replace(LIMITS, first_command_max_translation_m=0.01)
    f = active_filter(limits)
    a = act(pos=(0.5, 0, 0))
    assert isinstance(f.step(a, (HOME, IDENTITY), 0.0, stamps(0.0)), Command)
    c = f.step(a, (HOME, IDENTITY), 0.05, {"ee_pose": 0.05 - 0.19})  # 0.19 s old: still fresh
    assert isinstance(c, Command) and c.clamped == ()
    h = f.step(a, (HOME, IDENTITY), 0.10, {"ee_pose": 0.10 - 0.21})  # 0.21 s > 0.2 s
    assert h == Hold("stale_input", h.detail) and "ee_pose" in h.detail
    assert f.diagnostics()["first_command_pending"] is True
    c = f.step(a, (HOME, IDENTITY), 0.15, stamps(0.15))  # fresh again: recovers, bounded
    assert isinstance(c, Command)
    np.testing.assert_allclose(c.target_pos - HOME, [0.01, 0, 0], atol=1e-15)
    assert c.clamped == ("first_command_translation",)
    c = f.step(a, (HOME, IDENTITY), 0.20, stamps(0.20))
    assert c.clamped == ()
    assert f.diagnostics()["hold.stale_input"] == 1


def test_watchdog_stamp_from_the_future_or_nonfinite_is_stale():
    f = active_filter()
    assert f.step(act(), (HOME, IDENTITY), 0.0, {"ee_pose": 0.5}).reason == "stale_input"
    assert f.step(act(), (HOME, IDENTITY), 0.0, {"ee_pose": math.nan}).reason == "stale_input"
    assert f.step(act(), (HOME, IDENTITY), 0.0, {"ee_pose": "soon"}).reason == "stale_input"


def test_watchdog_checks_every_stamp_given():
    f = active_filter(required_inputs=("ee_pose",))
    h = f.step(act(), (HOME, IDENTITY), 1.0, {"ee_pose": 1.0, "object_pose": 0.0})
    assert h.reason == "stale_input" and "object_pose" in h.detail and "ee_pose" not in h.detail


def test_missing_input_holds():
    f = active_filter(required_inputs=("ee_pose", "object_pose"))
    h = f.step(act(), (HOME, IDENTITY), 0.0, {"ee_pose": 0.0})
    assert h.reason == "missing_input" and "object_pose" in h.detail
    assert isinstance(f.step(act(), (HOME, IDENTITY), 0.0, {"ee_pose": 0.0, "object_pose": 0.0}), Command)
    g = active_filter()  # nothing required: at least one stamp must be given
    assert g.step(act(), (HOME, IDENTITY), 0.0, {}).reason == "missing_input"
    assert g.step(act(), (HOME, IDENTITY), 0.0, None).reason == "missing_input"


# -- bad data -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("index", [0, 4, 6])
def test_nonfinite_action_holds(bad, index):
    a = act()
    a[index] = bad
    h = active_filter().step(a, (HOME, IDENTITY), 0.0, STAMPS)
    assert h.reason == "nonfinite_action" and str(index) in h.detail


@pytest.mark.parametrize("action", [np.zeros(6), np.zeros((1, 7)), "go", None, [1, 2, "x", 0, 0, 0, 0]])
def test_malformed_action_holds(action):
    assert active_filter().step(action, (HOME, IDENTITY), 0.0, STAMPS).reason == "invalid_action"


@pytest.mark.parametrize(
    "pose",
    [
        ([math.nan, 0, 0.3], IDENTITY),
        ([0.5, math.inf, 0.3], IDENTITY),
        (HOME, [math.nan, 0, 0, 0]),
        (HOME, [1.0, 0, 0, math.inf]),
        (HOME, [0.0, 0, 0, 0]),  # zero quaternion
        (HOME, [1.01, 0, 0, 0]),  # non-unit beyond the 1e-3 tolerance
        (HOME[:2], IDENTITY),  # wrong shape
        (HOME,),  # not a pair
        None,
    ],
)
def test_invalid_pose_holds(pose):
    assert active_filter().step(act(), pose, 0.0, STAMPS).reason == "invalid_pose"


def test_nearly_unit_quaternion_is_accepted_and_normalized():
    q = IDENTITY * (1 + 5e-4)
    c = active_filter().step(act(), (HOME, q), 0.0, STAMPS)
    np.testing.assert_allclose(c.target_quat, IDENTITY, atol=1e-15)


@pytest.mark.parametrize("now", [math.nan, math.inf, "t"])
def test_invalid_time_holds(now):
    assert active_filter().step(act(), (HOME, IDENTITY), now, STAMPS).reason == "invalid_time"


def test_time_going_backwards_holds():
    f = active_filter()
    f.step(act(), (HOME, IDENTITY), 1.0, stamps(1.0))
    assert f.step(act(), (HOME, IDENTITY), 0.9, stamps(0.9)).reason == "invalid_time"


# -- workspace vs step --------------------------------------------------------------------------


def test_far_outside_the_box_holds():
    pos = np.array([1.0, 0.0, 0.3])  # 0.2 m beyond x max, the step is 0.08 m
    f = active_filter(pose=(pos, IDENTITY))
    h = f.step(act(pos=(-1, 0, 0)), (pos, IDENTITY), 0.0, STAMPS)
    assert h.reason == "outside_workspace"


def test_slightly_outside_the_box_is_pulled_in_within_the_step():
    pos = np.array([0.83, 0.0, 0.3])  # 0.03 m beyond x max, within the 0.08 m step
    f = active_filter(pose=(pos, IDENTITY))
    c = f.step(act(pos=(0, 1, 0)), (pos, IDENTITY), 0.0, STAMPS)  # asks for +0.1 m in y
    assert c.target_pos[0] == 0.8
    assert np.linalg.norm(c.target_pos - pos) == pytest.approx(0.08, abs=1e-12)
    np.testing.assert_allclose(c.target_pos, [0.8, math.sqrt(0.08**2 - 0.03**2), 0.3], atol=1e-12)
    assert c.clamped == ("step_translation", "workspace")


# -- state machine ------------------------------------------------------------------------------


def test_inactive_until_activated_and_after_deactivate():
    f = SafetyFilter(LIMITS, PERIOD_S)
    assert f.state is FilterState.INACTIVE
    assert f.step(act(), (HOME, IDENTITY), 0.0, STAMPS).reason == "inactive"
    f.activate((HOME, IDENTITY))
    assert isinstance(f.step(act(), (HOME, IDENTITY), 0.0, STAMPS), Command)
    f.deactivate()
    assert f.state is FilterState.INACTIVE
    assert f.step(act(), (HOME, IDENTITY), 0.05, stamps(0.05)).reason == "inactive"


def test_activate_rejects_an_invalid_pose():
    f = SafetyFilter(LIMITS, PERIOD_S)
    with pytest.raises(ValueError, match="current_pose"):
        f.activate((HOME, [0, 0, 0, 0]))
    assert f.state is FilterState.INACTIVE


def test_estop_latches_until_reset_and_activate():
    f = active_filter()
    f.estop("operator button")
    assert f.state is FilterState.ESTOPPED
    h = f.step(act(), (HOME, IDENTITY), 0.0, STAMPS)
    assert h == Hold("estopped", "operator button")
    with pytest.raises(SafetyStateError):
        f.activate((HOME, IDENTITY))
    f.deactivate()  # no way out of the latch
    assert f.step(act(), (HOME, IDENTITY), 0.0, STAMPS).reason == "estopped"
    f.estop("second")
    assert f.diagnostics()["estop_reason"] == "operator button"
    f.reset_estop()
    assert f.state is FilterState.INACTIVE
    assert f.step(act(), (HOME, IDENTITY), 0.0, STAMPS).reason == "inactive"
    f.activate((HOME, IDENTITY))
    assert isinstance(f.step(act(), (HOME, IDENTITY), 0.0, STAMPS), Command)
    d = f.diagnostics()
    assert d["estop_count"] == 2 and d["hold.estopped"] == 2 and d["hold.inactive"] == 1
    assert d["state"] == "active" and d["estop_reason"] == ""


def test_diagnostics_count_holds_and_clamps():
    f = active_filter()
    f.step(act(pos=(math.nan, 0, 0)), (HOME, IDENTITY), 0.0, STAMPS)
    f.step(act(pos=(math.nan, 0, 0)), (HOME, IDENTITY), 0.0, STAMPS)
    f.step(act(), (HOME, IDENTITY), 0.0, {"ee_pose": -1.0})
    f.step(act(pos=(1, 0, 0)), (HOME, IDENTITY), 0.0, STAMPS)
    d = f.diagnostics()
    assert d["hold.nonfinite_action"] == 2 and d["hold.stale_input"] == 1 and d["holds_total"] == 3
    assert d["commands_total"] == 1 and d["clamp.step_translation"] == 1
    assert d["last_hold_reason"] == "stale_input"
    assert {f"hold.{r}" for r in HOLD_REASONS} | {f"clamp.{c}" for c in CLAMP_NAMES} <= set(d)
    assert all(isinstance(v, (str, int, float, bool)) for v in d.values())


# -- limits validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("workspace_min", (0.9, -0.4, 0.0)),  # above workspace_max in x
        ("workspace_min", (0.2, -0.4)),
        ("workspace_max", "high"),
        ("workspace_max", (0.8, math.nan, 0.6)),
        ("max_step_translation_m", 0.0),
        ("max_step_translation_m", -0.01),
        ("max_step_rotation_rad", 4.0),
        ("max_linear_velocity_m_s", math.inf),
        ("max_angular_velocity_rad_s", -1.0),
        ("max_input_age_s", 0.0),
        ("max_input_age_s", True),
        ("first_command_max_translation_m", -0.001),
        ("first_command_max_rotation_rad", math.nan),
        ("gripper_min_width_m", -0.01),
        ("gripper_max_width_m", -0.0),
        ("gripper_max_width_m", "0.08"),
    ],
)
def test_invalid_limits_raise_naming_the_field(field, value):
    base = dataclasses.replace(LIMITS, gripper_min_width_m=0.01) if field == "gripper_max_width_m" else LIMITS
    with pytest.raises(ValueError, match=f"^{field}"):
        dataclasses.replace(base, **{field: value})


def test_from_dict_round_trip_and_unknown_or_missing_keys():
    d = LIMITS.to_dict()
    assert SafetyLimits.from_dict(d) == LIMITS
    with pytest.raises(ValueError, match="max_step_translation"):
        SafetyLimits.from_dict({**d, "max_step_translation": 0.1})  # typo of ..._m
    missing = dict(d)
    del missing["max_input_age_s"]
    with pytest.raises(ValueError, match="missing.*max_input_age_s"):
        SafetyLimits.from_dict(missing)
    with pytest.raises(ValueError, match="^max_input_age_s"):
        SafetyLimits.from_dict({**d, "max_input_age_s": "0.2"})
    with pytest.raises(ValueError):
        SafetyLimits.from_dict([1, 2, 3])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"control_period_s": 0.0}, "control_period_s"),
        ({"control_period_s": math.nan}, "control_period_s"),
        ({"rot_sign": 0.5}, "rot_sign"),
        ({"pos_scale_m": -0.1}, "pos_scale_m"),
        ({"required_inputs": "ee_pose"}, "required_inputs"),
    ],
)
def test_invalid_filter_arguments_raise_naming_them(kwargs, name):
    args = {"control_period_s": PERIOD_S, **kwargs}
    with pytest.raises(ValueError, match=f"^{name}"):
        SafetyFilter(LIMITS, **args)


# -- properties ---------------------------------------------------------------------------------

finite_or_not = st.one_of(
    st.floats(-1.5, 1.5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, -1.0, 1e308, -1e308, 5e-324]),
)
actions = st.lists(finite_or_not, min_size=7, max_size=7).map(np.array)


@st.composite
def limits_strategy(draw):
    lo = np.array([draw(st.floats(-1.0, 1.0)) for _ in range(3)])
    size = np.array([draw(st.floats(0.01, 1.0)) for _ in range(3)])
    g_min = draw(st.floats(0.0, 0.05))
    return SafetyLimits(
        workspace_min=tuple(lo),
        workspace_max=tuple(lo + size),
        max_step_translation_m=draw(st.floats(1e-4, 0.2)),
        max_step_rotation_rad=draw(st.floats(1e-4, math.pi)),
        max_linear_velocity_m_s=draw(st.floats(1e-3, 5.0)),
        max_angular_velocity_rad_s=draw(st.floats(1e-3, 10.0)),
        max_input_age_s=0.5,
        first_command_max_translation_m=draw(st.floats(0.0, 0.2)),
        first_command_max_rotation_rad=draw(st.floats(0.0, math.pi)),
        gripper_min_width_m=g_min,
        gripper_max_width_m=g_min + draw(st.floats(0.0, 0.1)),
    )


@st.composite
def poses(draw, limits):
    lo, hi = np.array(limits.workspace_min), np.array(limits.workspace_max)
    where = draw(st.sampled_from(["inside", "near", "anywhere"]))
    u = np.array([draw(st.floats(0.0, 1.0)) for _ in range(3)])
    if where == "inside":
        pos = lo + u * (hi - lo)
    elif where == "near":  # within 0.03 m per axis of the box
        pos = lo - 0.03 + u * (hi - lo + 0.06)
    else:
        pos = np.array([draw(st.floats(-3.0, 3.0)) for _ in range(3)])
    q = np.array([draw(st.floats(-1.0, 1.0)) for _ in range(4)])
    if np.linalg.norm(q) < 0.1:
        q = IDENTITY.copy()
    q = q / np.linalg.norm(q) * (1.0 + draw(st.floats(-5e-4, 5e-4)))  # within the norm tolerance
    return pos, q


@st.composite
def scenarios(draw):
    limits = draw(limits_strategy())
    period = draw(st.sampled_from([0.01, 0.05, 0.1]))
    n = draw(st.integers(1, 8))
    steps = []
    for _ in range(n):
        dt = draw(st.one_of(st.just(0.0), st.floats(0.0, 2 * period), st.floats(0.0, 5.0)))
        stale = draw(st.integers(0, 9)) == 0  # now and then a stale input
        steps.append((draw(actions), draw(poses(limits)), dt, stale))
    return limits, period, steps


def distance_to_box(pos, limits):
    return float(np.linalg.norm(pos - np.clip(pos, limits.workspace_min, limits.workspace_max)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_property_every_command_is_within_the_limits(scenario):
    """For any actions, poses in or out of the box, and dt sequences: the documented invariants."""
    limits, period, steps = scenario
    lo, hi = np.array(limits.workspace_min), np.array(limits.workspace_max)
    f = SafetyFilter(limits, period)
    f.activate(steps[0][1])
    now, last_command, first = 100.0, None, True
    for action, (pos, quat), dt, stale in steps:
        now += dt
        stamp = now - 1.0 if stale else now
        d = f.step(action, (pos, quat), now, {"ee_pose": stamp})
        outside = distance_to_box(pos, limits) > 0
        event(d.reason if isinstance(d, Hold) else "command, TCP outside the box" if outside else "command")
        dt_eff = period if first else min(now - last_command, period)
        r_trans = min(limits.max_step_translation_m, limits.max_linear_velocity_m_s * dt_eff)
        r_rot = min(limits.max_step_rotation_rad, limits.max_angular_velocity_rad_s * dt_eff)
        if first:
            r_trans = min(r_trans, limits.first_command_max_translation_m)
            r_rot = min(r_rot, limits.first_command_max_rotation_rad)
        finite_action = bool(np.all(np.isfinite(action)))

        if stale:
            assert d == Hold("stale_input", d.detail)
        elif not finite_action:
            assert d.reason == "nonfinite_action"
        elif distance_to_box(pos, limits) > r_trans + TOL:
            assert d.reason == "outside_workspace"
        else:
            assert isinstance(d, Command), d
        if isinstance(d, Hold):
            if d.reason == "outside_workspace":
                assert distance_to_box(pos, limits) > r_trans - TOL
            first = True
            continue

        for x in (d.target_pos, d.target_quat, d.twist, d.gripper_width_m):
            assert np.all(np.isfinite(x))
        assert np.all(lo <= d.target_pos) and np.all(d.target_pos <= hi)  # exact: box always holds
        assert np.linalg.norm(d.target_pos - pos) <= r_trans + TOL  # step bound always holds
        assert abs(np.linalg.norm(d.target_quat) - 1.0) < 1e-12
        assert relative_angle(d.target_quat, quat) <= r_rot + TOL
        # implied velocity over the actual (clamped) dt, and the published twist
        assert np.linalg.norm(d.target_pos - pos) <= limits.max_linear_velocity_m_s * dt_eff + TOL
        assert relative_angle(d.target_quat, quat) <= limits.max_angular_velocity_rad_s * dt_eff + TOL
        assert np.linalg.norm(d.twist[:3]) <= limits.max_linear_velocity_m_s + TOL / period
        assert np.linalg.norm(d.twist[3:]) <= limits.max_angular_velocity_rad_s + TOL / period
        assert limits.gripper_min_width_m <= d.gripper_width_m <= limits.gripper_max_width_m
        assert set(d.clamped) <= set(CLAMP_NAMES)
        first, last_command = False, now
    assert f.diagnostics()["hold.internal_check_failed"] == 0


@settings(max_examples=200, deadline=None)
@given(
    action=st.lists(st.floats(-1.0, 1.0), min_size=7, max_size=7).map(np.array),
    pos=st.tuples(*[st.floats(-0.1, 0.1)] * 3).map(np.array),
)
def test_property_unclamped_commands_follow_the_action_exactly(action, pos):
    """With generous limits, a command inside [-1, 1] maps linearly: 0.1 m and -0.1 rad per unit."""
    limits = dataclasses.replace(
        LIMITS,
        workspace_min=(-1.0, -1.0, -1.0),
        workspace_max=(1.0, 1.0, 1.0),
        max_step_translation_m=1.0,
        max_step_rotation_rad=math.pi,
        max_linear_velocity_m_s=100.0,
        max_angular_velocity_rad_s=100.0,
        first_command_max_translation_m=1.0,
        first_command_max_rotation_rad=math.pi,
    )
    f = active_filter(limits, pose=(pos, IDENTITY))
    c = f.step(action, (pos, IDENTITY), 0.0, STAMPS)
    rot = action[3:6]
    if np.linalg.norm(rot) > 1.0:
        rot = rot / np.linalg.norm(rot)
    np.testing.assert_allclose(c.target_pos, pos + 0.1 * action[:3], atol=1e-15)
    np.testing.assert_allclose(quat_to_matrix(c.target_quat), euler_xyz_to_matrix(-0.1 * rot), atol=1e-12)
    assert c.gripper_width_m == pytest.approx((action[6] + 1) / 2 * 0.08, abs=1e-15)


@pytest.mark.parametrize(
    "broken",
    [
        lambda pos, delta, r: (pos + np.array([5.0, 0.0, 0.0]), None),  # target far outside the box
        lambda pos, delta, r: (pos + np.array([0.0, 0.0, r + 1e-3]), None),  # step above its bound
        lambda pos, delta, r: (np.full(3, np.nan), None),
    ],
)
def test_final_verification_turns_a_broken_clamp_into_a_hold(monkeypatch, broken):
    """The last-line re-check is independent of the clamping code: a bug there cannot publish."""
    f = active_filter()
    monkeypatch.setattr(f, "_clamp_into_box", broken)
    h = f.step(act(pos=(0.1, 0, 0)), (HOME, IDENTITY), 0.0, STAMPS)
    assert h.reason == "internal_check_failed"
    assert f.diagnostics()["hold.internal_check_failed"] == 1


def test_watchdog_limits_per_input_and_the_default_for_the_others():
    limits = dataclasses.replace(LIMITS, max_input_age_by_input_s={"ee_pose": 0.02, "object_pose": 0.5})
    assert limits.max_input_age_for("ee_pose") == 0.02 and limits.max_input_age_for("joint_states") == 0.2
    f = active_filter(limits)
    assert isinstance(f.step(act(), (HOME, IDENTITY), 1.0, {"ee_pose": 0.99, "object_pose": 0.6,
                                                             "joint_states": 0.85}), Command)
    h = f.step(act(), (HOME, IDENTITY), 1.05, {"ee_pose": 1.02, "object_pose": 0.6, "joint_states": 0.9})
    assert h.reason == "stale_input" and "ee_pose (age 0.030 s > 0.02 s)" in h.detail and "object" not in h.detail
    h = f.step(act(), (HOME, IDENTITY), 1.1, {"ee_pose": 1.1, "object_pose": 0.59, "joint_states": 1.1})
    assert h.reason == "stale_input" and "object_pose" in h.detail and "ee_pose" not in h.detail
    h = f.step(act(), (HOME, IDENTITY), 1.15, {"ee_pose": 1.15, "object_pose": 1.1, "joint_states": 0.9})
    assert h.reason == "stale_input" and "joint_states (age 0.250 s > 0.2 s)" in h.detail
    # the watchdog alone, uncounted, answers the same
    assert f.watchdog({"ee_pose": 1.15, "object_pose": 1.1, "joint_states": 0.9}, 1.15).reason == "stale_input"
    assert f.watchdog({"ee_pose": 1.2}, 1.2) is None and f.watchdog({"ee_pose": 1.2 + 0.03}, 1.2) is not None
    assert f.diagnostics()["hold.stale_input"] == 3


def test_per_input_ages_are_optional_and_validated_naming_the_input():
    d = LIMITS.to_dict()
    assert d["max_input_age_by_input_s"] == {} and SafetyLimits.from_dict(d) == LIMITS
    del d["max_input_age_by_input_s"]
    assert SafetyLimits.from_dict(d) == LIMITS
    with_ages = SafetyLimits.from_dict({**d, "max_input_age_by_input_s": {"ee_pose": 0.02}})
    assert SafetyLimits.from_dict(with_ages.to_dict()) == with_ages
    for bad, key in (({"ee_pose": 0.0}, "max_input_age_by_input_s.ee_pose"),
                     ({"ee_pose": "fast"}, "max_input_age_by_input_s.ee_pose"),
                     ([0.1], "max_input_age_by_input_s")):
        with pytest.raises(ValueError, match=f"^{key}"):
            SafetyLimits.from_dict({**d, "max_input_age_by_input_s": bad})
