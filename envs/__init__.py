"""ManiSkill task variants and vector-env construction (CPU and GPU) for robot_rl.

Importing this package is light: the layouts (:data:`PRIVILEGED_STATE_LAYOUT`, the state fields of every task
in :mod:`robot_rl.envs.obs_layout`, which :mod:`robot_rl.observation` makes the ``state`` group of a run's
observation schema) load without the simulator. Everything else is imported from its
module on first use (PEP 562), which also registers the robot_rl tasks with ManiSkill and gymnasium
(``gym.make("RRL-PushCube-Sparse-v1")`` works once ``robot_rl.envs.tasks`` or any of these names has been
touched; :func:`make_env` and :func:`make_vec_env` do it themselves):

- :class:`TaskSpec`, :data:`TASKS`, :func:`get_task`: the tasks (paper "-v2" = sparse reward).
- :func:`make_vec_env`: SB3 VecEnv for training (``physx_cpu``: one process per env;
  ``physx_cuda``: :class:`ManiSkillGPUVecEnv`), with ``teacher_view(indices, with_image)``.
- :func:`make_env`: one gymnasium env, wrapped like a CPU worker, for teachers/tests/evaluation.
- :data:`PRIVILEGED_STATE_LAYOUT`, :func:`privileged_state`: the 38-D state scripted teachers read.
"""

from __future__ import annotations

import importlib
from typing import Any

from .obs_layout import ObsField, observation_layout
from .privileged import PRIVILEGED_STATE_DIM, PRIVILEGED_STATE_LAYOUT

#: Names imported on first use, and the module (of this package) that defines each.
_LAZY = {
    "SIM_BACKENDS": "common",
    "TeacherView": "common",
    "ManiSkillGPUVecEnv": "gpu_vec_env",
    "TASKS": "tasks",
    "PickCubeSparseEnv": "tasks",
    "PushCubeSparseEnv": "tasks",
    "RRLTaskMixin": "tasks",
    "TaskSpec": "tasks",
    "get_task": "tasks",
    "privileged_state": "tasks",
    "rrl_task": "tasks",
    "RRLEnvWrapper": "vec_env",
    "make_env": "vec_env",
    "make_vec_env": "vec_env",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'robot_rl.envs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ObsField",
    "observation_layout",
    "PRIVILEGED_STATE_LAYOUT",
    "PRIVILEGED_STATE_DIM",
    *_LAZY,
]
