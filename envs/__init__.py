"""ManiSkill task variants and vector-env construction (CPU and GPU) for robot_rl.

Importing this package registers the robot_rl tasks with ManiSkill and gymnasium
(``gym.make("RRL-PushCube-Sparse-v1")``).

- :class:`TaskSpec`, :data:`TASKS`, :func:`get_task`: the tasks (paper "-v2" = sparse reward).
- :func:`make_vec_env`: SB3 VecEnv for training (``physx_cpu``: one process per env;
  ``physx_cuda``: :class:`ManiSkillGPUVecEnv`), with ``teacher_view(indices, with_image)``.
- :func:`make_env`: one gymnasium env, wrapped like a CPU worker, for teachers/tests/evaluation.
- :data:`PRIVILEGED_STATE_LAYOUT`, :func:`privileged_state`: the 38-D state scripted teachers read.
"""

from .common import SIM_BACKENDS, TeacherView
from .obs_layout import ObsField, observation_dim, observation_layout, observation_slices
from .gpu_vec_env import ManiSkillGPUVecEnv
from .tasks import (
    PRIVILEGED_STATE_DIM,
    PRIVILEGED_STATE_LAYOUT,
    TASKS,
    PickCubeSparseEnv,
    PushCubeSparseEnv,
    RRLTaskMixin,
    TaskSpec,
    get_task,
    privileged_state,
    rrl_task,
)
from .vec_env import RRLEnvWrapper, make_env, make_vec_env

__all__ = [
    "ObsField",
    "observation_layout",
    "observation_dim",
    "observation_slices",
    "TaskSpec",
    "TASKS",
    "get_task",
    "rrl_task",
    "RRLTaskMixin",
    "PushCubeSparseEnv",
    "PickCubeSparseEnv",
    "make_vec_env",
    "make_env",
    "RRLEnvWrapper",
    "TeacherView",
    "PRIVILEGED_STATE_LAYOUT",
    "PRIVILEGED_STATE_DIM",
    "privileged_state",
    "ManiSkillGPUVecEnv",
    "SIM_BACKENDS",
]
