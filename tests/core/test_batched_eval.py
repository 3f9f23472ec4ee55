"""The batched evaluation (:func:`robot_rl.rollout.rollout_batched`, issue 17 item 6) on the fake batched env
(``robot_rl.testing.batched_env``) under the real adapter (``ManiSkillGPUVecEnv.from_env``): rows whose first
episodes end at different steps with hand-made successes, returns, grasps, distances and placements; the
evaluation reports exactly those, first episode per row, in seed order, and the reset got one seed per row.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.envs import PRIVILEGED_STATE_LAYOUT, ManiSkillGPUVecEnv
from robot_rl.rollout import RolloutResult, rollout_batched
from robot_rl.testing.batched_env import FakeBatchedEnv

PUSH = "PushCube-v2"
HORIZON = 8
#: per row: success (at its end step), end step (the horizon for a failure), reward per step, placed from step.
SUCCEEDS = np.array([True, False, True, False, True])
END = np.array([3, HORIZON, 5, HORIZON, 1])
REWARD = np.array([0.5, 0.25, 1.0, 0.125, 2.0])
PLACED_FROM = np.array([2, 99, 1, 6, 99])  # elapsed step from which is_obj_placed is on (99: never)


class _Scripted(FakeBatchedEnv):
    """Rows with hand-made first episodes; later (auto-reset) episodes succeed at step 1 with reward 100, placed
    and static, so an evaluation that counts them is off. Records the seeds each reset got.
    """

    def __init__(self):
        n = len(SUCCEEDS)
        super().__init__(n, success_prob=0.0, success_step=torch.as_tensor(END, dtype=torch.int32))
        self.seeds: list = []

    def reset(self, seed=None, options=None):
        self.seeds.append(seed)
        obs, info = super().reset(seed=seed, options=options)
        first = self.episodes == 1
        self.will_succeed = torch.where(first, torch.as_tensor(SUCCEEDS), torch.ones_like(self.will_succeed))
        self.success_step = torch.where(first, torch.as_tensor(END, dtype=torch.int32),
                                        torch.ones_like(self.success_step))
        return obs, info

    def step(self, actions):
        obs, _, terminated, truncated, info = super().step(actions)
        first = self.episodes == 1
        reward = torch.where(first, torch.as_tensor(REWARD, dtype=torch.float32), torch.full((self.num_envs,), 100.0))
        placed = self.elapsed_steps >= torch.as_tensor(PLACED_FROM, dtype=torch.int32)
        info["is_obj_placed"] = placed | ~first  # later episodes: placed and static at every step
        info["is_robot_static"] = (placed & (self.elapsed_steps % 2 == 0)) | ~first
        return obs, reward, terminated, truncated, info


class _Adapter(ManiSkillGPUVecEnv):
    """The adapter over the scripted fake, with scripted privileged states: row ``i`` holds the object from
    elapsed step 2 if ``i`` is even (every row's reset state shows a grasp, ManiSkill's carried-over flag, which
    the evaluation skips) and its TCP is ``1 / (1 + i + elapsed)`` m from the object.
    """

    def teacher_view(self, indices, with_image=True):
        from robot_rl.envs import TeacherView

        idx = list(indices)
        steps = self._base.elapsed_steps.numpy()
        states = np.zeros((len(idx), 38), np.float32)
        for k, i in enumerate(idx):
            states[k, PRIVILEGED_STATE_LAYOUT["tcp_pos"].start] = 1.0 / (1 + i + steps[i])
            grasp = steps[i] == 0 or (i % 2 == 0 and steps[i] >= 2)
            states[k, PRIVILEGED_STATE_LAYOUT["is_grasped"].start] = float(grasp)
        return TeacherView(images=None, instructions=[""] * len(idx), states=states, task_ids=[PUSH] * len(idx))


class _Zero:
    def __init__(self):
        self.resets, self.shapes = 0, []

    def reset(self):
        self.resets += 1

    def act(self, obs, view):
        self.shapes.append(obs.shape)
        return np.zeros((len(obs), 7), np.float32)


def _expected(seed: int) -> list[dict]:
    out = []
    for i in range(len(SUCCEEDS)):
        length = int(END[i])
        placed = [t for t in range(1, length + 1) if t >= PLACED_FROM[i]]
        static = [t for t in placed if t % 2 == 0]
        # states are read before the steps 2..length (elapsed 1..length-1) for the closest approach
        seen = range(1, length)
        out.append({"seed": seed + i, "success": bool(SUCCEEDS[i]), "ret": float(REWARD[i]) * length, "length": length,
                    "grasped": i % 2 == 0 and any(t >= 2 for t in seen),
                    "closest_m": min((1.0 / (1 + i + t) for t in seen), default=float("inf")),
                    "placed": bool(placed), "static_when_placed": len(static) / len(placed) if placed else None})
    return out


def test_batched_eval_reports_each_rows_first_episode_in_seed_order():
    fake = _Scripted()
    venv = _Adapter.from_env(fake, PUSH, max_episode_steps=HORIZON)
    actor = _Zero()
    result = rollout_batched(venv, actor, len(SUCCEEDS), seed=40)
    assert fake.seeds[0] == [40, 41, 42, 43, 44]  # one seed per sub-scene, episode k: seed + k
    got = result.per_episode()
    want = _expected(40)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key in w:
            assert g[key] == pytest.approx(w[key]), (w["seed"], key, g[key], w[key])
    assert actor.resets == 1 and set(actor.shapes) == {(5, 8)}
    assert len(actor.shapes) == HORIZON  # stops when every row's first episode has ended
    summary = result.summary()
    assert summary == pytest.approx(RolloutResult([type(result.episodes[0])(**w) for w in want]).summary())
    assert summary["success_rate"] == pytest.approx(0.6)
    assert summary["mean_return"] == pytest.approx(np.mean(REWARD * END))


def test_batched_eval_needs_one_env_per_episode():
    venv = _Adapter.from_env(_Scripted(), PUSH, max_episode_steps=HORIZON)
    with pytest.raises(ValueError, match="need 4 envs, got 5"):
        rollout_batched(venv, _Zero(), 4, seed=0)
    with pytest.raises(ValueError, match=">= 1"):
        rollout_batched(venv, _Zero(), 0, seed=0)


class _Pilot:
    """A fixed, state-driven action (towards the object, gripper closing near it), for any number of rows."""

    def reset(self):
        pass

    def act(self, obs, view):
        s = np.asarray(view.states)
        delta = s[:, PRIVILEGED_STATE_LAYOUT["obj_pos"]] - s[:, PRIVILEGED_STATE_LAYOUT["tcp_pos"]]
        action = np.zeros((len(s), 7), np.float32)
        action[:, :3] = np.clip(delta * 20, -1, 1)
        action[:, 6] = np.where(np.linalg.norm(delta, axis=1) < 0.02, -1.0, 1.0)
        return action


@pytest.mark.slow
def test_batched_eval_of_one_env_is_the_sequential_loop():
    """On one real CPU env (PickCube: it reports ``is_obj_placed``) the batched loop gives the sequential loop's
    episode field for field.
    """
    from robot_rl.envs import make_vec_env
    from robot_rl.rollout import rollout

    venv = make_vec_env("PickCube-v2", num_envs=1, max_episode_steps=12, seed=0, in_process=True)
    try:
        sequential = rollout(venv, _Pilot(), 1, seed=7).per_episode()
        batched = rollout_batched(venv, _Pilot(), 1, seed=7).per_episode()
    finally:
        venv.close()
    assert batched == sequential
    assert sequential[0]["seed"] == 7 and sequential[0]["placed"] is not None and sequential[0]["length"] == 12


def test_evaluate_batches_on_physx_cuda_only(monkeypatch, tmp_path):
    """``trainer.evaluate`` asks for ``episodes`` envs on ``physx_cuda`` and one env on ``physx_cpu``, with a video
    and for a recurrent policy (checked on ``build_env_stack``'s arguments: no GPU here).
    """
    from robot_rl import trainer
    from robot_rl.config import TrainConfig
    from robot_rl.runs import RunDir

    class _Stop(Exception):
        pass

    asked = []

    def fake_stack(cfg, run=None, *, num_envs=None, **kwargs):
        asked.append(num_envs)
        raise _Stop

    def run_of(**overrides):
        cfg = TrainConfig(task=PUSH, mode="ppo", **overrides)

        class _Run(RunDir):
            def config(self, overrides=()):
                return cfg

            def recover_checkpoint(self):
                pass

            def has_checkpoint(self):
                return True

        return _Run(tmp_path)

    monkeypatch.setattr(trainer, "build_env_stack", fake_stack)
    cases = [({"env": {"sim_backend": "physx_cuda"}}, {}, 6),
             ({"env": {"sim_backend": "physx_cpu"}}, {}, 1),
             ({"env": {"sim_backend": "physx_cuda"}}, {"video": tmp_path / "v.mp4"}, 1),
             ({"env": {"sim_backend": "physx_cuda"}, "ppo": {"recurrent": True}}, {}, 1)]
    for overrides, kwargs, want in cases:
        with pytest.raises(_Stop):
            trainer.evaluate(run_of(**overrides), 6, **kwargs)
        assert asked[-1] == want, (overrides, kwargs)
