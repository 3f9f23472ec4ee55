"""The misleading-teacher guard (robot_rl/guidance/guard.py): its scores and decision rule by hand, on
synthetic rollouts, and inside a real GuidedPPO update.
"""

import math

import numpy as np
import pytest
import torch as th

from robot_rl.guidance import TeacherGuard, alignment_scores


def test_alignment_scores_by_hand():
    adv = np.array([2.0, -2.0, 2.0, 0.0])
    noise = np.zeros((4, 7))
    noise[0, :3] = [1.0, 0, 0]  # along the pos target
    noise[0, 3:6] = [0, 0, 3.0]  # rot target along z
    noise[1, :3] = [0, 2.0, 0]  # orthogonal to the pos target
    noise[2, 6] = -1.5  # gripper noise towards "close"
    targets = np.zeros((4, 7))
    targets[0, :3] = [0.5, 0, 0]
    targets[0, 3:6] = [0, 0, -0.2]
    targets[1, :3] = [0.1, 0, 0]
    targets[2, 6] = -1.0
    targets[3, :3] = [1.0, 0, 0]
    valid = np.array([1, 1, 1, 0])
    s = 1.0  # advantages are used as they are
    # row 0: pos proj 1, rot proj -3, two components -> (1 - 3) / sqrt 2, times 2/s
    # row 1: pos proj 0 -> 0
    # row 2: only grip commanded; pos/rot have no target. Without grip in the components it is not scored.
    z = alignment_scores(adv, noise, targets, valid, ("pos", "rot"))
    assert z == pytest.approx([(2 / s) * (1 - 3) / math.sqrt(2), 0.0])
    z = alignment_scores(adv, noise, targets, valid, ("pos", "rot", "grip"))
    assert z == pytest.approx([(2 / s) * (1 - 3) / math.sqrt(2), 0.0, (2 / s) * 1.5])
    # zero advantages carry no evidence
    assert not alignment_scores(np.zeros(4), noise, targets, valid).any()


def test_t_statistic_and_window_by_hand():
    g = TeacherGuard(z_threshold=2.0, min_rows=4, window_rollouts=2)
    assert not g.observe(np.array([-1.0, -2.0, -3.0]))  # 3 rows < min_rows
    # window: [-1, -2, -3, -1]: mean -1.75, sample std = sqrt(0.9167), t = -1.75 / (0.9574 / 2) = -3.656
    assert g.observe(np.array([-1.0]))
    assert g.t_statistic == pytest.approx(-1.75 / (math.sqrt(((0.75**2) * 2 + 0.25**2 + 1.25**2) / 3) / 2))
    assert g.fired and g.fired_at_update == 2
    assert not g.observe(np.array([-5.0]))  # fires once
    # the window keeps the last 2 updates only: [-1] and [-5]
    assert g.n == 2
    restored = TeacherGuard(z_threshold=2.0, min_rows=4, window_rollouts=2)
    restored.load_state_dict(g.state_dict())
    assert restored.state_dict() == g.state_dict() and restored.t_statistic == g.t_statistic


def _rollout(rng, effect: float, rows: int = 128):
    """Scores of one synthetic rollout: advantages = effect * (exploration along the teacher) + noise."""
    noise = rng.normal(size=(rows, 7))
    targets = np.zeros((rows, 7))
    targets[:, :3] = rng.normal(size=(rows, 3))
    unit = targets[:, :3] / np.linalg.norm(targets[:, :3], axis=1, keepdims=True)
    adv = effect * (noise[:, :3] * unit).sum(axis=1) + rng.normal(size=rows)
    return alignment_scores(adv, noise, targets, np.ones(rows), ("pos",))


def test_guard_fires_on_a_misleading_teacher_and_not_on_a_helpful_one():
    rng = np.random.default_rng(0)
    misleading, helpful = TeacherGuard(3.0, 256, 16), TeacherGuard(3.0, 256, 16)
    fired_at = None
    for k in range(16):
        if misleading.observe(_rollout(rng, effect=-0.5)) and fired_at is None:
            fired_at = k
        assert not helpful.observe(_rollout(rng, effect=+0.5))
    assert fired_at is not None and fired_at <= 3  # 256 rows needed: after the 2nd rollout at the earliest
    assert helpful.t_statistic > 3.0


def test_guard_false_alarm_rate_with_an_uninformative_teacher():
    rng = np.random.default_rng(1)
    runs, fired = 200, 0
    for _ in range(runs):
        g = TeacherGuard(3.0, 256, 16)
        fired += any(g.observe(_rollout(rng, effect=0.0)) for _ in range(32))
    # one-sided p = 0.0013 per look, 31 correlated looks: well under 5% of runs
    assert fired / runs < 0.05


def test_bad_guard_settings_are_refused():
    for args in ((0.0, 256, 16), (3.0, 1, 16), (3.0, 256, 0)):
        with pytest.raises(ValueError, match="TeacherGuard"):
            TeacherGuard(*args)


@pytest.mark.slow
def test_guard_inside_a_guided_ppo_update_switches_guidance_off():
    """A real GuidedPPO on ManiSkill PushCube: a rollout in which moving against the teacher paid makes the guard
    fire at the start of the update, so that update's λ is 0 and the next rollout has no queries.
    """
    from robot_rl.algos import GuidedPPO
    from robot_rl.config import build_config
    from robot_rl.interface import TeacherGroupVecEnv
    from robot_rl.trainer import build_env, build_guidance

    cfg = build_config({"mode": "vlajs", "seed": 0, "env": {"num_envs": 2}, "ppo": {"n_steps": 128, "batch_size": 64},
                        "guidance": {"budget_fraction": 0.5, "guard": {"min_rows": 64}}})
    guidance = build_guidance(cfg, 2)
    venv = TeacherGroupVecEnv(build_env(cfg, in_process=True), guidance)
    try:
        model = GuidedPPO("MlpPolicy", venv, guidance=guidance, n_steps=128, batch_size=64, n_epochs=1, seed=0,
                          device="cpu", policy_kwargs=dict(net_arch=[32]))
        model.learn(256)  # real rollouts fill the buffer with real observations and teacher targets
        assert guidance.guard.updates >= 1 and not guidance.guard.fired
        buf = model.rollout_buffer  # flattened by get(): rows (n_steps * n_envs, ...)
        buf.teacher_valid[:] = 1.0
        buf.teacher_targets[:, :3] = np.array([1.0, 0.0, 0.0])
        obs = th.as_tensor(buf.observations.reshape(256, -1))
        with th.no_grad():
            dist = model.policy.get_distribution(obs).distribution
        mean, std = dist.mean.numpy(), dist.stddev.numpy()
        eps = np.random.default_rng(0).normal(size=mean.shape)
        buf.actions = (mean + std * eps).reshape(buf.actions.shape).astype(np.float32)
        buf.advantages = (-eps[:, 0]).reshape(buf.advantages.shape).astype(np.float32)  # against the teacher paid
        guidance.guard.load_state_dict({"window": [], "fired": False, "updates": 0})
        buf.generator_ready = False  # let get() flatten again: restore the (n_steps, n_envs) layout first
        for name in ("observations", "actions", "advantages", "returns", "values", "log_probs", "teacher_valid",
                     "teacher_targets"):
            arr = getattr(buf, name)
            setattr(buf, name, arr.reshape(2, 128, *arr.shape[1:]).swapaxes(0, 1).copy())
        model.train()
        assert guidance.guard.fired and guidance.scheduler.deactivated
        assert model.logger.name_to_value["guidance/lambda"] == 0.0
        assert guidance.metrics()["guidance/guard_fired"] == 1
        guidance.begin_rollout(0.0)
        assert guidance.scheduler.n_calls == 0 and guidance.lambda_t == 0.0
    finally:
        venv.close()
