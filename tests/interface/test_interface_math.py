"""The delayed interface's group and maths by hand (robot_rl.interface.delayed): fields, features, Δp, compensation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robot_rl.config import ConfigError, build_config
from robot_rl.envs.privileged import PRIVILEGED_STATE_DIM
from robot_rl.envs.privileged import PRIVILEGED_STATE_LAYOUT as L
from robot_rl.geometry import quat_from_rotvec
from robot_rl.interface import DelayedInterface, compensated_targets, motion_since, teacher_group
from robot_rl.observation import schema_from_config

DOWN = np.array([0.0, 1.0, 0.0, 0.0])  # TCP pointing down (the Panda's start)


def state(tcp=(0.0, 0.0, 0.2), quat=DOWN, width=0.08) -> np.ndarray:
    s = np.zeros(PRIVILEGED_STATE_DIM)
    s[L["tcp_pos"]] = tcp
    s[L["tcp_quat"]] = quat
    s[L["gripper_width"].start] = width
    return s


def test_group_fields_and_order():
    g = teacher_group(["dp", "hint", "dt"])  # vector order, not the config's
    assert [f.name for f in g.fields] == ["hint", "dt", "dp_pos", "dp_rot", "dp_width"] and g.size == 15
    assert not g.required and all(f.unit and f.source for f in g.fields)
    assert teacher_group(["hint", "hint_valid", "dt", "dp"]).size == 16
    with pytest.raises(ValueError, match="known: hint, hint_valid, dt, dp"):
        teacher_group(["hint", "speed"])


def test_config_gives_the_schema_and_refuses_naming_the_key():
    cfg = build_config({}, ["interface.features=[hint,hint_valid,dt,dp]", "interface.delay.kind=uniform"])
    s = schema_from_config(cfg)
    assert s.group_names == ("state", "teacher") and s.describe_sizes() == "state 35 + teacher 16 = 51"
    assert schema_from_config(build_config({})).group_names == ("state",)
    for overrides, key in ((["interface.features=[dp]"], "interface.features"),
                           (["interface.features=[hint,hint]"], "interface.features"),
                           (["interface.delay.kind=later"], "interface.delay.kind"),
                           (["interface.delay.kind=fixed", "interface.delay.max_steps=3"], "interface.delay.max_steps"),
                           (["mode=ppo", "interface.delay.kind=measured"], "interface.delay.kind"),
                           (["mode=rpd", "interface.delay.kind=fixed"], "interface.delay.kind")):
        with pytest.raises(ConfigError, match=key.replace(".", "\\.")):
            build_config({}, overrides)


def test_features_by_hand():
    it = DelayedInterface(2, ["hint", "hint_valid", "dt", "dp"])
    now = np.stack([state(), state()])
    np.testing.assert_array_equal(it.features_of(now), np.zeros((2, 16)))  # no answer yet: all zero
    for _ in range(3):
        it.tick(np.zeros(2, dtype=bool))  # env steps 1, 2, 3
    h = np.array([[0.4, -0.2, 0.0, 0.0, 0.0, 0.5, -1.0]])
    it.deliver(np.array([1]), h, np.array([1]), state(tcp=(0.0, 0.0, 0.2))[None])  # answer to step 1's obs
    turned = quat_from_rotvec(np.array([0.0, 0.0, 0.1]))  # 0.1 rad about world z, then down
    from robot_rl.geometry import quat_multiply

    q_now = quat_multiply(turned, DOWN)
    now = np.stack([state(), state(tcp=(0.01, 0.0, 0.19), quat=q_now, width=0.05)])
    f = it.features_of(now)
    np.testing.assert_array_equal(f[0], np.zeros(16))
    np.testing.assert_allclose(f[1, :7], h[0], atol=1e-7)
    assert f[1, 7] == 1.0 and f[1, 8] == pytest.approx(2 * 0.05)  # valid; dt = (3 - 1) steps * 0.05 s
    np.testing.assert_allclose(f[1, 9:12], [0.01, 0.0, -0.01], atol=1e-7)  # translation, base frame
    # rotvec(R_q^T R_t): a world-z turn seen from the down-pointing TCP frame is about its -z axis
    np.testing.assert_allclose(f[1, 12:15], [0.0, 0.0, -0.1], atol=1e-6)
    assert f[1, 15] == pytest.approx(-0.03)  # the gripper closed by 3 cm
    it.tick(np.array([False, True]))  # env 1's episode ends: its hint is gone
    assert not it.valid[1] and it.step[1] == 0 and it.step[0] == 4
    np.testing.assert_array_equal(it.features_of(now)[1], np.zeros(16))


def test_motion_since_is_in_the_tcp_frame_at_the_query():
    q = state(quat=DOWN)
    t = state(tcp=(0.1, 0.2, 0.0), quat=quat_multiply_rot(DOWN, np.array([0.3, 0.0, 0.0])))
    dp = motion_since(q[None], t[None])[0]
    np.testing.assert_allclose(dp[:3], [0.1, 0.2, -0.2], atol=1e-12)
    np.testing.assert_allclose(dp[3:6], [0.3, 0.0, 0.0], atol=1e-9)  # a turn about the TCP's own x


def quat_multiply_rot(q, body_rotvec):
    """``q`` turned by ``body_rotvec`` about its own axes: ``q ⊗ exp(body_rotvec)``."""
    from robot_rl.geometry import quat_multiply

    return quat_multiply(q, quat_from_rotvec(body_rotvec))


def test_compensated_targets_by_hand():
    """H asks for +0.2 m in x over D = 4 steps (2.0 units x 0.1 m). The arm has moved 0.05 m: 0.15 m remain,
    over the 2 steps left: 0.075 m per step = 0.75 units. Moved 0.3 m (an overshoot): the target flips.
    """
    h = np.array([[2.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]])
    q = state(tcp=(0.0, 0.0, 0.2))[None]
    t = state(tcp=(0.05, 0.0, 0.2))[None]
    out = compensated_targets(h, q, t, np.array([2]), 4)
    np.testing.assert_allclose(out[0], [0.75, 0, 0, 0, 0, 0, -1.0], atol=1e-6)
    over = compensated_targets(h, q, state(tcp=(0.3, 0.0, 0.2))[None], np.array([1]), 4)
    assert over[0, 0] == pytest.approx(-1.0)  # -0.1 m remain in one step: -1 unit (clipped at -1)
    # no motion yet, the whole period left: the answer's own per-step target, h / D
    same = compensated_targets(h, q, q, np.array([4]), 4)
    np.testing.assert_allclose(same[0, :3], [0.5, 0, 0], atol=1e-6)


def test_compensated_rotation_by_hand():
    """H turns by -0.1 rad per step x 4 about world z (command +1 per step, sign -1: 4 units). The TCP already
    turned -0.2 rad about world z: -0.2 rad remain; over 2 steps -0.1 rad per step: command +1 on z.
    """
    h = np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 4.0, 1.0]])
    q = state()[None]
    from robot_rl.geometry import quat_multiply

    t = state(quat=quat_multiply(quat_from_rotvec(np.array([0.0, 0.0, -0.2])), DOWN))[None]
    out = compensated_targets(h, q, t, np.array([2]), 4)
    np.testing.assert_allclose(out[0, 3:6], [0.0, 0.0, 1.0], atol=1e-6)
    done = compensated_targets(h, q, state(quat=quat_multiply(quat_from_rotvec(np.array([0, 0, -0.4])), DOWN))[None],
                               np.array([1]), 4)
    np.testing.assert_allclose(done[0, 3:6], [0.0, 0.0, 0.0], atol=1e-6)
    assert math.isclose(out[0, 6], 1.0)


def test_dt_on_a_clock_and_the_motion_state_for_deployment():
    """Deployment: dt = now - the answer's observation stamp (s), dp from motion states holding only what it reads."""
    from robot_rl.interface import features_of_group, motion_state

    it = DelayedInterface(1, ["hint", "dt", "dp"])
    q = motion_state([0.0, 0.0, 0.2], DOWN, 0.08)
    assert q.shape == (1, PRIVILEGED_STATE_DIM) and np.count_nonzero(q) == 3  # z, qx of DOWN, the width
    it.deliver(np.array([0]), np.ones((1, 7)) * 0.5, np.array([0]), q, query_times_s=np.array([100.25]))
    now = motion_state([0.02, 0.0, 0.2], DOWN, 0.06)
    f = it.features_of(now, now_s=100.40)[0]
    assert f[7] == pytest.approx(0.15)  # seconds on the clock, not env steps (the step count is still 0)
    np.testing.assert_allclose(f[8:11], [0.02, 0.0, 0.0], atol=1e-7)
    assert f[14] == pytest.approx(-0.02)
    assert it.features_of(now)[0][7] == 0.0  # without now_s: (step - query_step) * 0.05 = 0
    # an exported group back to its features; another version's group is refused naming the field
    assert features_of_group(teacher_group(["dt", "hint"])) == ("hint", "dt")
    from dataclasses import replace

    g = teacher_group(["hint", "dt"])
    bad = replace(g, fields=(replace(g.fields[0], unit="m"), g.fields[1]))
    with pytest.raises(ValueError, match=r"teacher\.hint \(field 0\): unit 'm'"):
        features_of_group(bad)
