"""Shared helpers for the robot_rl.envs tests: scripted controllers that read privileged state."""

from __future__ import annotations

import numpy as np
import pytest

#: pd_ee_delta_pose: 1.0 normalized position action = 0.1 m per step (FACTS.md).
POS_SCALE_M = 0.1


def _pos_action(delta_m, gripper: float) -> np.ndarray:
    a = np.zeros(7, np.float32)
    a[:3] = np.clip(np.asarray(delta_m, dtype=np.float64) / POS_SCALE_M, -1.0, 1.0)
    a[6] = gripper
    return a


def push_action(state: np.ndarray) -> np.ndarray:
    """PushCube: go over the cube to 5 cm behind it (-x), drop to 2.5 cm, push along +x.
    Succeeds within ~15 steps for seeds 0-7."""
    tcp, obj = state[0:3], state[7:10]
    behind = np.array([obj[0] - 0.05, obj[1], 0.025])
    if tcp[0] > obj[0] - 0.035:  # not behind the cube yet: pass over it
        d = behind - tcp
        d[2] = 0.08 - tcp[2]
    elif abs(tcp[1] - obj[1]) > 0.01 or tcp[2] > 0.035:
        d = behind - tcp
    else:
        d = np.array([0.1, obj[1] - tcp[1], 0.025 - tcp[2]])
    return _pos_action(d, -1.0)


def pick_action(state: np.ndarray, t: int) -> np.ndarray:
    """PickCube, open-loop phases by step t: above the cube (0-5), down (6-11), close (12-15),
    carry to the goal (16+)."""
    tcp, obj, goal = state[0:3], state[7:10], state[14:17]
    if t < 6:
        return _pos_action(obj + np.array([0, 0, 0.05]) - tcp, 1.0)
    if t < 12:
        return _pos_action(obj - tcp, 1.0)
    if t < 16:
        return _pos_action(obj - tcp, -1.0)
    return _pos_action(goal - tcp, -1.0)


@pytest.fixture
def scripted():
    """The scripted controllers, as ``scripted.push_action(state)`` / ``scripted.pick_action(state, t)``."""

    class _S:
        pass

    s = _S()
    s.push_action = push_action
    s.pick_action = pick_action
    return s


@pytest.fixture(scope="session")
def warm_renderer():
    """Keep one rendered env alive for the session: the first teacher image of a process costs
    4-9 s on lavapipe, and that is paid again whenever every env of the process was closed."""
    from robot_rl.envs import make_env

    env = make_env("PushCube-v2", seed=0, teacher_image_size=(32, 32))
    env.reset()
    env.teacher_observation(True)
    yield env
    env.close()
