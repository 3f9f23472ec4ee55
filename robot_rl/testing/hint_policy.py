"""A run directory whose policy follows the teacher's hint, for tests of the delayed interface's deployment.

The suite cannot train a policy that uses the ``teacher`` group (too slow on 2 cores), so
:func:`make_hint_following_run` writes a real SB3 run directory (config, observation schema, checkpoint) of a
*linear* policy (``ppo.net_arch: []``, no observation normalization) whose mean action is the last hint spread over
its period: ``a_pos,rot = hint_pos,rot / D``, ``a_gripper = hint_gripper`` (the per-step targets training
interpolates an answer into, :func:`robot_rl.guidance.targets.interpolate_targets`), held until the next hint
arrives (``hold_steps`` spreads it over more steps than ``D``). The real export path
(:func:`robot_rl.deploy.export.export_policy`) turns it into ONNX + sidecar, and direct evaluation, the ROS node and
the replay run it as any exported policy. With ``memory`` the run also observes the scratchpad (``memory.enabled``:
the ``memory`` group after the ``teacher`` group); the action does not read it (its weights there are zero), so the
policy moves as without it while the node must still assemble the group exactly (the ROS 2 memory round trip).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["HINT_TASK", "HINT_FEATURES", "make_hint_following_run"]

#: The hidden-goal task: without the hint the policy does not know where the goal is.
HINT_TASK = "RRL-PushCube-HiddenGoal-v1"
#: All features of the teacher group (the policy reads the hint only; the others are there to be deployed).
HINT_FEATURES = ("hint", "hint_valid", "dt", "dp")


def make_hint_following_run(out_dir: str | Path, *, task: str = HINT_TASK, features=HINT_FEATURES,
                            period_steps: int = 4, hold_steps: float | None = None, name: str = "hint-policy",
                            memory: dict | None = None):
    """Write a run directory ``out_dir/name`` with a checkpoint of the hint-following linear policy.

    Args:
        out_dir: parent directory (``run.out_dir``).
        task: task id.
        features: the teacher group's features (must include ``hint``); empty with ``memory``: a memory-only run
            (no teacher group) whose policy is all zeros (it observes the scratchpad and does not move).
        period_steps: ``D`` (``teacher.control_period_steps``): the hint covers ``D`` env steps.
        hold_steps: the position and rotation of the hint are spread over this many steps (default ``D``): a hint
            is held until the next one arrives, ``D + d`` steps with answers ``d`` steps late, so a hold of
            ``D + d`` moves as far as the teacher meant at that delay.
        name: the run directory's name.
        memory: ``memory.*`` keys of the run (e.g. ``{"enabled": True, "grounding_slots": 2}``), or None (no
            scratchpad).

    Returns:
        the :class:`~robot_rl.runs.RunDir`.

    Raises:
        ValueError: ``hint`` not in non-empty ``features``, no features and no ``memory`` (or what the training config
            refuses, named).
    """
    import gymnasium as gym
    import torch as th
    from stable_baselines3.common.vec_env import DummyVecEnv

    from robot_rl.algos import GuidedPPO
    from robot_rl.config import TrainConfig
    from robot_rl.observation import schema_from_config
    from robot_rl.runs import RunDir

    if (features or not (memory or {}).get("enabled")) and "hint" not in features:
        raise ValueError(f"features {list(features)}: a hint-following policy needs the hint")
    cfg = TrainConfig(task=task, mode="vlajs", total_steps=1,
                      ppo={"net_arch": [], "normalize_obs": False, "n_steps": 8, "batch_size": 8},
                      env={"num_envs": 1}, teacher={"kind": "scripted", "control_period_steps": int(period_steps)},
                      interface={"features": list(features)}, memory=dict(memory or {}),
                      run={"out_dir": str(out_dir), "name": name, "eval_episodes": 0, "progress_bar": False})
    run = RunDir.create(cfg)
    schema = schema_from_config(cfg)
    run.save_schema(schema)

    class _Spaces(gym.Env):  # only the spaces: SB3 builds the policy from them
        observation_space = gym.spaces.Box(-np.inf, np.inf, (schema.size,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)

    model = GuidedPPO("MlpPolicy", DummyVecEnv([_Spaces]), n_steps=8, batch_size=8,
                      policy_kwargs=dict(net_arch=[]), seed=0, device="cpu")
    w = th.zeros(7, schema.size)
    if features:
        hint = schema.field_slices("teacher")["hint"].start
        for i in range(6):
            w[i, hint + i] = 1.0 / float(hold_steps or period_steps)
        w[6, hint + 6] = 1.0
    with th.no_grad():
        model.policy.action_net.weight.copy_(w)
        model.policy.action_net.bias.zero_()
    run.save_checkpoint(model, {})
    return run
