"""The guidance pipeline end to end in real ManiSkill: scheduler -> teacher view -> scripted teacher ->
validation -> interpolation -> tracker. Following the collector's targets must solve PushCube,
so a misaligned env index, a stale view or a wrong interpolation shows up as failures.
"""

import numpy as np
import pytest

from robot_rl.config import build_config
from robot_rl.interface import TeacherGroupVecEnv
from robot_rl.teachers import TeacherSpec
from robot_rl.trainer import build_env, build_guidance

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode, period", [("rpd", 1), ("rpd", 4), ("vlajs", 1)])
def test_following_the_targets_solves_pushcube(mode, period):
    cfg = build_config({"mode": mode, "seed": 5, "env": {"num_envs": 2}, "ppo": {"n_steps": 150, "batch_size": 64},
                        "teacher": {"control_period_steps": period}, "guidance": {"budget_fraction": 1.0}})
    guidance = build_guidance(cfg, cfg.env.num_envs)
    venv = TeacherGroupVecEnv(build_env(cfg, in_process=True), guidance)  # each env step moves guidance on
    guidance.begin_rollout(None)
    venv.reset()
    successes = []
    for _ in range(150):
        guidance.prepare(venv)
        targets, valid = guidance.row()
        _, _, dones, infos = venv.step(np.where(valid[:, None], targets, 0.0))
        successes += [infos[i]["success"] for i in np.flatnonzero(dones)]
    venv.close()
    assert len(successes) >= 6 and np.mean(successes) >= 0.9
    assert guidance.stats.invalid == 0 and guidance.stats.queries > 0


def test_invalid_answers_are_dropped_and_counted():
    class NaNTeacher:
        spec = TeacherSpec(model_id="nan", control_period_steps=2)

        def check_request(self, request):
            pass

        def act(self, request):
            from robot_rl.teachers import TeacherResponse

            actions = np.zeros((len(request), 7), dtype=np.float32)
            actions[0] = np.nan  # one bad row per batch; the rest are fine
            return TeacherResponse(actions=actions)

    cfg = build_config({"mode": "rpd", "env": {"num_envs": 2}, "ppo": {"n_steps": 10, "batch_size": 10}})
    guidance = build_guidance(cfg, cfg.env.num_envs, teacher=NaNTeacher())
    venv = TeacherGroupVecEnv(build_env(cfg, in_process=True), guidance)
    guidance.begin_rollout(None)
    venv.reset()
    for _ in range(10):
        guidance.prepare(venv)
        _, valid = guidance.row()
        assert valid.tolist() == [False, True]
        venv.step(np.zeros((2, 7), dtype=np.float32))
    venv.close()
    assert guidance.stats.queries == 20 and guidance.stats.invalid == 10
