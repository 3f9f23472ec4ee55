"""The delayed interface in real ManiSkill: Δp's frames and signs against the simulator's own TCP poses, answers
in flight across episode ends, the measured delay of an asynchronous teacher, and a smoke run of every arm.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import transforms3d.quaternions as t3q

from robot_rl.config import build_config
from robot_rl.guidance.targets import interpolate_targets
from robot_rl.interface import TeacherGroupVecEnv, motion_since
from robot_rl.trainer import build_env, build_guidance

pytestmark = pytest.mark.slow

TASK = "RRL-PushCube-Sparse-v1"


def test_dp_frames_and_signs_against_the_simulator():
    """Command known motions (+x, then a turn about the base z), then compare Δp with the TCP poses read from
    ManiSkill itself: translation in the robot base frame, rotation rotvec(R_q^T R_t) in the TCP frame at q.
    """
    from robot_rl.envs import make_env, privileged_state

    env = make_env(TASK, seed=0)
    try:
        env.reset(seed=0)
        u = env.unwrapped
        base = u.agent.robot.pose.raw_pose[0].cpu().numpy().astype(np.float64)
        pose_q = u.agent.tcp.pose.raw_pose[0].cpu().numpy().astype(np.float64)
        s_q = privileged_state(u)
        for _ in range(4):
            env.step(np.array([0.5, 0, 0, 0, 0, 0, 1.0], dtype=np.float32))  # +x
        for _ in range(3):
            env.step(np.array([0, 0, 0, 0, 0, 1.0, 1.0], dtype=np.float32))  # +1 on z: -0.1 rad target (#1469)
        pose_t = u.agent.tcp.pose.raw_pose[0].cpu().numpy().astype(np.float64)
        dp = motion_since(s_q, privileged_state(u))[0]
    finally:
        env.close()
    r_base = t3q.quat2mat(base[3:])
    np.testing.assert_allclose(dp[:3], r_base.T @ (pose_t[:3] - pose_q[:3]), atol=1e-6)
    assert dp[0] > 0.03  # it moved along +x
    rel = t3q.qmult(t3q.qinverse(pose_q[3:]), pose_t[3:])  # R_q^T R_t
    axis, angle = t3q.quat2axangle(rel)
    np.testing.assert_allclose(dp[3:6], axis * angle if angle <= np.pi else -axis * (2 * np.pi - angle), atol=1e-5)
    # the hand points down, so a negative turn about the base z is a positive turn about the TCP's own z
    assert dp[5] > 0.05 and abs(dp[3]) < 0.02 and abs(dp[4]) < 0.02


def _guided_env(overrides, episode_steps):
    cfg = build_config({"mode": "vlajs", "seed": 1, "env": {"num_envs": 2, "max_episode_steps": episode_steps},
                        "ppo": {"n_steps": 64, "batch_size": 64}, "guidance": {"budget_fraction": 1.0}}, overrides)
    guidance = build_guidance(cfg, 2)
    venv = TeacherGroupVecEnv(build_env(cfg, in_process=True), guidance)
    guidance.begin_rollout(None)
    return venv, guidance


def _run(venv, guidance, steps):
    obs = venv.reset()
    seen = []
    for _ in range(steps):
        guidance.prepare(venv)
        obs, _, dones, _ = venv.step(np.zeros((2, 7), dtype=np.float32))
        seen.append((obs.copy(), dones.copy()))
    return seen


def test_an_answer_never_reaches_the_next_episode():
    """Episodes of 6 steps, answers 10 steps late: every answer's episode ends first, so none is delivered,
    every one is dropped at the reset (counted) and no hint ever shows in an observation.
    """
    venv, g = _guided_env(["interface.delay.kind=fixed", "interface.delay.steps=10",
                           "interface.features=[hint,hint_valid,dt]"], episode_steps=6)
    try:
        seen = _run(venv, g, 30)
    finally:
        venv.close()
    assert g.stats.queries > 0 and g.stats.delivered == 0 and g.stats.dropped_at_reset >= g.stats.queries - 2
    assert all(not obs[:, 35 + 7].any() for obs, _ in seen)  # hint_valid
    assert all(not obs[:, 35:35 + 9].any() for obs, _ in seen)


def test_answers_arrive_d_steps_late_and_age():
    """D = 3: an answer to the observation of step q is in the observation of step q + 3 with dt = 0.15 s, and
    its dt grows by 0.05 s a step; after an episode's end the hint is gone until the next answer.
    """
    venv, g = _guided_env(["interface.delay.kind=fixed", "interface.delay.steps=3",
                           "interface.features=[hint,hint_valid,dt]"], episode_steps=20)
    try:
        seen = _run(venv, g, 45)
    finally:
        venv.close()
    dts = np.array([obs[:, 35 + 8] for obs, _ in seen], dtype=np.float64)
    valid = np.array([obs[:, 35 + 7] for obs, _ in seen])
    assert g.stats.delivered > 4 and g.stats.delay_steps_sum == 3 * g.stats.delivered
    assert set(np.round(dts[valid == 1], 3)) >= {0.15, 0.2}  # delivered at 3 steps, then older
    assert np.all(dts[valid == 1] >= 0.15 - 1e-6) and np.all(dts[valid == 0] == 0.0)
    for t, (_, dones) in enumerate(seen):
        if dones.any():
            assert not valid[t][dones].any()  # the new episode's first observation carries no hint


def test_measured_delay_of_an_in_process_teacher_in_a_worker_thread():
    """The scripted teacher sleeping 0.12 s per query (its latency_s knob) runs in a worker thread: the rollout
    does not wait, and each answer is delivered no sooner than ceil(0.12 / 0.05) = 3 env steps after its query.
    """
    import time

    venv, g = _guided_env(["interface.delay.kind=measured", "teacher.latency_s=0.12",
                           "interface.features=[hint,hint_valid,dt]"], episode_steps=50)
    try:
        t0 = time.perf_counter()
        _run(venv, g, 40)
        wall = time.perf_counter() - t0
    finally:
        venv.close()
    assert g.stats.delivered >= 2 and g.stats.delay_steps_sum >= 3 * g.stats.delivered
    # 40 blocking queries would take >= 40 x 0.12 s; at most one query per env is in flight
    assert wall < 40 * 0.12


def test_compensated_targets_of_an_answer_delivered_at_the_reset():
    """``d = 0``: the first answer of an episode arrives at the reset itself, and its compensated targets are taken
    against the reset's own TCP pose (Δp = 0: the answer's own first target), in the first episode (where no step
    has shown a pose yet) and after a reset that follows other motion.
    """
    venv, g = _guided_env(["interface.delay.kind=none", "interface.compensate_targets=true",
                           "interface.features=[hint,hint_valid,dt,dp]"], episode_steps=20)
    try:
        for episode in range(2):
            venv.reset()
            g.prepare(venv)
            targets, valid = g.row()
            assert valid.all() and np.isfinite(targets).all()
            first = interpolate_targets(g.interface.hint.astype(np.float32), g.period)[0][:, 0]
            np.testing.assert_allclose(targets, first, atol=1e-5)
            for _ in range(5):  # move, so a stale pose would differ from the next reset's
                g.prepare(venv)
                venv.step(np.tile(np.array([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0], dtype=np.float32), (2, 1)))
    finally:
        venv.close()


ARMS = {
    "a_no_interface": [],
    "b_hint": ["interface.features=[hint]"],
    "c_hint_dt": ["interface.features=[hint,dt]"],
    "d_hint_dt_dp": ["interface.features=[hint,hint_valid,dt,dp]"],
    "e_compensated": ["interface.features=[hint,hint_valid,dt,dp]", "interface.compensate_targets=true"],
    "f_unaware": ["interface.features=[hint,hint_valid,dt,dp]", "interface.delay.kind=none"],
}


@pytest.mark.parametrize("arm", ARMS)
def test_every_arm_trains_and_evaluates(arm, tmp_path):
    from robot_rl.cli import DEFAULT_CONFIG
    from robot_rl.config import load_config
    from robot_rl.trainer import evaluate, train

    delay = [] if arm == "f_unaware" else ["interface.delay.kind=uniform", "interface.delay.max_steps=20"]
    cfg = load_config(DEFAULT_CONFIG, [f"task={TASK}", "total_steps=256", "ppo.n_steps=64", "ppo.batch_size=64",
                                       "ppo.n_epochs=1", "env.num_envs=2", "run.eval_episodes=1",
                                       "run.progress_bar=false",
                                       f"run.out_dir={tmp_path}", "run.name=r", *delay, *ARMS[arm]])
    run = train(cfg)
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    size = run.schema().size
    assert size == 35 + {"a_no_interface": 0, "b_hint": 7, "c_hint_dt": 8}.get(arm, 16)
    assert rows[-1]["guidance/queries"] > 0 and 0.0 <= rows[-1]["interface/hint_fraction"] <= 1.0
    if cfg.interface.features:
        for k in (0, 10):  # at 0 an answer arrives at the reset itself
            result = evaluate(run.path, 1, delay_steps=k)
            assert result["delay_steps"] == k and result["episodes"] == 1
    else:
        with pytest.raises(ValueError, match="observes no teacher group"):
            evaluate(run.path, 1, delay_steps=10)


def test_a_run_with_the_interface_resumes(tmp_path):
    """The delay model's generator and the interface counters are saved with the checkpoint and restored."""
    from robot_rl.cli import DEFAULT_CONFIG
    from robot_rl.config import load_config
    from robot_rl.trainer import resume, train

    cfg = load_config(DEFAULT_CONFIG, [f"task={TASK}", "total_steps=128", "ppo.n_steps=64", "ppo.batch_size=64",
                                       "ppo.n_epochs=1", "env.num_envs=2", "run.eval_episodes=0",
                                       "run.progress_bar=false",
                                       "run.checkpoint_every_steps=64", f"run.out_dir={tmp_path}", "run.name=r",
                                       "interface.delay.kind=uniform", "interface.features=[hint,dt]"])
    run = train(cfg)
    state = run.checkpoint_state()
    assert state["delay"]["kind"] == "uniform" and state["stats"]["delivered"] > 0
    resume(run.path, ["total_steps=256"])
    after = run.checkpoint_state()
    assert after["num_timesteps"] == 256 and after["stats"]["queries"] > state["stats"]["queries"]
