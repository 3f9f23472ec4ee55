"""Hand-computed checks of the guidance equations (DESIGN.md; VLAJS, Moroncelli et al. 2026)."""

import math

import numpy as np
import pytest
import torch as th

from robot_rl.guidance import (
    QueryScheduler,
    TargetTracker,
    check_components,
    directional_cosine_loss,
    grip_agreement,
    interpolate_targets,
    lambda_t,
    mse_loss,
    n_calls,
    validate_teacher_actions,
)

# --- N_calls = max(N_min, floor(N_max * exp(-κ Δr̄))) and λ_t --------------------------------------

def test_n_calls_by_hand():
    assert n_calls(100, 5, 1.0, 0.0) == 100
    assert n_calls(100, 5, 1.0, 1.0) == 36  # floor(100 * 0.3679)
    assert n_calls(100, 5, 2.0, 1.0) == 13  # floor(100 * 0.1353)
    assert n_calls(100, 5, 1.0, 5.0) == 5  # floor(0.67) = 0 -> N_min
    assert n_calls(100, 5, 1.0, -2.0) == 100  # worse than the start: never above the budget


def test_lambda_by_hand():
    assert lambda_t(0.5, 1.0, 0.0) == 0.5
    assert lambda_t(0.5, 1.0, math.log(2)) == pytest.approx(0.25)
    assert lambda_t(0.5, 1.0, 0.0, active=False) == 0.0


def test_scheduler_budget_anneal_and_permanent_deactivation():
    s = QueryScheduler(n_steps=50, num_envs=4, budget_fraction=0.2, n_min=2, kappa=1.0,
                       deactivate_threshold=3.0, lambda_0=0.1, seed=0)
    assert s.n_max == 40  # floor(0.2 * 200)
    s.begin_rollout(None)  # no episode finished yet: full budget
    assert s.n_calls == 40 and s.lambda_t == pytest.approx(0.1)
    s.begin_rollout(2.0)  # the run's start: r̄_0 = 2
    assert s.baseline_return == 2.0 and s.n_calls == 40
    s.begin_rollout(3.0)  # Δr̄ = 1
    assert s.n_calls == 14 and s.lambda_t == pytest.approx(0.1 * math.exp(-1))
    s.begin_rollout(5.5)  # Δr̄ = 3.5 > 3: off for good
    assert s.deactivated and s.n_calls == 0 and s.lambda_t == 0.0
    s.begin_rollout(2.0)  # reward falls back: stays off
    assert s.deactivated and s.n_calls == 0


def test_scheduler_never_exceeds_n_calls_and_spreads_queries():
    s = QueryScheduler(n_steps=100, num_envs=8, budget_fraction=0.2, seed=1)
    s.begin_rollout(None)
    per_step = [s.select(np.ones(8, dtype=bool)).sum() for _ in range(100)]
    assert sum(per_step) <= s.n_calls == 160
    assert sum(per_step) >= 150  # spread to use (almost) the whole budget
    assert sum(per_step[:50]) > 50  # not all at the end


def test_scheduler_respects_eligibility_and_full_budget_queries_every_step():
    s = QueryScheduler(n_steps=10, num_envs=3, budget_fraction=1.0, anneal=False)
    s.begin_rollout(123.0)
    assert s.n_calls == 30 and s.lambda_t == s.lambda_0
    m = s.select(np.array([True, False, True]))
    assert m.tolist() == [True, False, True]


def test_scheduler_state_roundtrip():
    a = QueryScheduler(n_steps=10, num_envs=2, seed=3)
    a.begin_rollout(1.0)
    a.begin_rollout(1.5)
    b = QueryScheduler(n_steps=10, num_envs=2, seed=99)
    b.load_state_dict(a.state_dict())
    assert (b.baseline_return, b.delta_r, b.deactivated) == (1.0, 0.5, False)
    assert np.array_equal(a.rng.random(5), b.rng.random(5))


@pytest.mark.parametrize("bad", [dict(budget_fraction=1.5), dict(kappa=-1.0), dict(n_min=-1)])
def test_scheduler_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        QueryScheduler(n_steps=10, num_envs=2, **bad)


# --- interpolation and validity -------------------------------------------------------------------

def test_interpolate_by_hand():
    delta = np.array([[0.4, -0.8, 0.0, 0.2, 0.0, 0.0, -1.0]], dtype=np.float32)
    targets, mask = interpolate_targets(delta, 4)
    assert targets.shape == (1, 4, 7) and mask.shape == (1, 4) and mask.all()
    np.testing.assert_allclose(targets[0, 2], [0.1, -0.2, 0.0, 0.05, 0.0, 0.0, -1.0])
    # The D per-step targets add up to the teacher's delta (linear interpolation of the displacement).
    np.testing.assert_allclose(targets[0, :, :6].sum(0), delta[0, :6], rtol=1e-6)


def test_interpolate_invalid_rows_are_masked():
    delta = np.ones((2, 7), dtype=np.float32)
    targets, mask = interpolate_targets(delta, 2, valid=np.array([True, False]))
    assert mask.tolist() == [[True, True], [False, False]]
    assert not targets[1].any()
    with pytest.raises(ValueError):
        interpolate_targets(delta, 0)


def test_validate_teacher_actions():
    good = np.zeros((3, 7))
    good[1, 0] = 2.0  # a period delta of 2 with D = 2: 1.0 per step, fine
    bad = good.copy()
    bad[0, 3] = np.nan
    bad[2, 6] = 1.5  # gripper out of range
    assert validate_teacher_actions(good, 3, 2).tolist() == [True, True, True]
    assert validate_teacher_actions(good, 3, 1).tolist() == [True, False, True]
    assert validate_teacher_actions(bad, 3, 2).tolist() == [False, True, False]
    assert not validate_teacher_actions(np.zeros((3, 6)), 3, 1).any()  # wrong shape
    assert not validate_teacher_actions("error", 3, 1).any()  # OpenVLA's reference server's error reply


def test_tracker_plays_targets_out_then_expires_and_episode_end_clears():
    tr = TargetTracker(num_envs=2, period_steps=3)
    targets = np.arange(2 * 3 * 7, dtype=np.float32).reshape(2, 3, 7)
    tr.set(np.array([0, 1]), targets, np.ones((2, 3), dtype=bool))
    t, v = tr.current()
    assert v.tolist() == [True, True] and np.array_equal(t, targets[:, 0])
    tr.advance(np.array([False, True]))  # env 1's episode ended
    t, v = tr.current()
    assert v.tolist() == [True, False] and np.array_equal(t[0], targets[0, 1]) and not t[1].any()
    tr.advance(np.zeros(2, dtype=bool))
    assert tr.current()[1].tolist() == [True, False]
    tr.advance(np.zeros(2, dtype=bool))  # D = 3 steps played out
    assert tr.current()[1].tolist() == [False, False] and not tr.active.any()


# --- losses ---------------------------------------------------------------------------------------

def test_directional_cosine_loss_by_hand():
    mean = th.tensor([[1.0, 0, 0, 0, 1, 0, 0.3], [0.0, 1, 0, 0, 0, 1, 0.0], [5.0, 5, 5, 5, 5, 5, 5]])
    target = th.tensor([[2.0, 0, 0, 0, -1, 0, 1.0], [1.0, 0, 0, 0, 0, 0, 0.0], [1.0, 0, 0, 1, 0, 0, 0.0]])
    # row 0: pos cos 1 -> 0, rot cos -1 -> 2      => 2
    # row 1: pos cos 0 -> 1, rot target zero -> 0 => 1
    # row 2: invalid
    valid = th.tensor([1.0, 1.0, 0.0])
    assert directional_cosine_loss(mean, target, valid).item() == pytest.approx(1.5, abs=1e-6)
    # Scale invariance: only the direction matters.
    assert directional_cosine_loss(3 * mean, 0.1 * target, valid).item() == pytest.approx(1.5, abs=1e-6)
    # No valid row: exactly 0, and no gradient.
    m = mean.clone().requires_grad_(True)
    loss = directional_cosine_loss(m, target, th.zeros(3))
    loss.backward()
    assert loss.item() == 0.0 and not m.grad.any()


def test_directional_loss_gradient_turns_mean_towards_target():
    m = th.tensor([[0.0, 1.0, 0.0, 0, 0, 0, 0]], requires_grad=True)
    target = th.tensor([[1.0, 0.0, 0.0, 0, 0, 0, 0]])
    directional_cosine_loss(m, target, th.ones(1)).backward()
    assert m.grad[0, 0] < 0  # gradient descent increases μ_x


def test_grip_hinge_by_hand():
    # gripper means 0.3, -0.5, -2.0, 0.7 against commands close, close, close, none
    mean = th.zeros(4, 7)
    mean[:, 6] = th.tensor([0.3, -0.5, -2.0, 0.7])
    target = th.zeros(4, 7)
    target[:, 6] = th.tensor([-1.0, -1.0, -1.0, 0.0])
    target[:, 0] = 1.0  # a position target, so pos has a direction (mean pos is 0: cos 0, term 1)
    valid = th.ones(4)
    # hinge: 1 + 0.3 = 1.3; 1 - 0.5 = 0.5; past the bound -> 0; no command -> nothing
    grip_only = directional_cosine_loss(mean, target, valid, components=("grip",))
    assert grip_only.item() == pytest.approx((1.3 + 0.5 + 0.0 + 0.0) / 4, abs=1e-6)
    with_pos = directional_cosine_loss(mean, target, valid, components=("pos", "rot", "grip"))
    assert with_pos.item() == pytest.approx((1.3 + 0.5 + 0.0 + 0.0) / 4 + 1.0, abs=1e-6)
    # the paper's default ignores the gripper entirely
    assert directional_cosine_loss(mean, target, valid).item() == pytest.approx(1.0, abs=1e-6)
    # an open command: mean 0.3 -> 0.7
    target[0, 6] = 1.0
    assert directional_cosine_loss(mean[:1], target[:1], valid[:1], components=("grip",)).item() == pytest.approx(0.7)
    # the gradient is a constant -sign(command) until the bound, then 0
    m = mean.clone().requires_grad_(True)
    directional_cosine_loss(m, target, valid, components=("grip",)).backward()
    assert m.grad[:, 6].tolist() == pytest.approx([-0.25, 0.25, 0.0, 0.0])
    # agreement: rows with a command whose mean sign matches: row0 (open, +0.3) yes, row1 (close, -0.5) yes,
    # row2 (close, -2) yes; row3 has no command
    assert grip_agreement(mean, target, valid) == pytest.approx(1.0)
    mean[1, 6] = 0.2
    assert grip_agreement(mean, target, valid) == pytest.approx(2 / 3)
    assert grip_agreement(mean, target, th.zeros(4)) is None


def test_magnitude_term_by_hand():
    mean = th.tensor([[2.0, 0, 0, 0, 0, 0, 0], [0.0, 0.3, 0.4, 0, 0, 0, 0]])
    target = th.tensor([[0.5, 0, 0, 0, 0, 0, 0], [0.0, 0.0, 0.1, 0, 0, 0, 0]])
    valid = th.ones(2)
    eps = 1e-12
    # row 0: aligned (cos 1 -> 0), |μ| 2 vs |ã| 0.5 -> (1.5)² = 2.25, w 2 -> 4.5; rot has no target -> nothing
    # row 1: cos = 0.4 / 0.5 = 0.8 -> 0.2, |μ| 0.5 vs 0.1 -> 0.16, w 2 -> 0.32
    loss = directional_cosine_loss(mean, target, valid, eps=eps, magnitude_weight=2.0)
    assert loss.item() == pytest.approx((4.5 + 0.2 + 0.32) / 2, abs=1e-5)
    assert directional_cosine_loss(mean, target, valid, eps=eps).item() == pytest.approx(0.1, abs=1e-5)
    # the gradient shortens a mean longer than the target along its own direction
    m = mean.clone().requires_grad_(True)
    directional_cosine_loss(m, target, valid, eps=eps, magnitude_weight=2.0).backward()
    assert m.grad[0, 0] > 0
    with pytest.raises(ValueError, match="magnitude_weight"):
        directional_cosine_loss(mean, target, valid, magnitude_weight=-1.0)


@pytest.mark.parametrize("bad", [(), ("pos", "pos"), ("pos", "gripper")])
def test_unknown_or_repeated_components_are_refused(bad):
    with pytest.raises(ValueError, match="pos.*rot.*grip"):
        check_components(bad)


def test_mse_loss_by_hand():
    mean = th.tensor([[1.0, 0, 0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0, 0, 0]])
    target = th.tensor([[0.0, 0, 0, 0, 0, 0, 1], [9.0, 9, 9, 9, 9, 9, 9]])
    assert mse_loss(mean, target, th.tensor([1.0, 0.0])).item() == pytest.approx(2.0)
