"""The latency-aware delayed semantic interface (TIC-VLA, Huang et al. 2026): the ``teacher`` observation group.

- :mod:`robot_rl.interface.delayed`: the group's fields (:func:`teacher_group`), the per-env state
  (:class:`DelayedInterface`: the last answer, its age, the motion since) and compensated targets.
- :mod:`robot_rl.interface.vec_env`: :class:`TeacherGroupVecEnv`, which appends the group to the observations
  and moves guidance on at every env step.

The delay models are in :mod:`robot_rl.guidance.delay`, the queries in flight in :class:`robot_rl.guidance.Guidance`.
"""

from robot_rl.interface.delayed import (
    FEATURE_FIELDS,
    DelayedInterface,
    compensated_targets,
    features_of_group,
    motion_since,
    motion_state,
    teacher_group,
)

__all__ = ["FEATURE_FIELDS", "DelayedInterface", "compensated_targets", "features_of_group", "motion_since",
           "motion_state", "teacher_group", "TeacherGroupVecEnv"]


def __getattr__(name: str):
    if name == "TeacherGroupVecEnv":  # SB3 is imported only when the wrapper is asked for
        from robot_rl.interface.vec_env import TeacherGroupVecEnv

        return TeacherGroupVecEnv
    raise AttributeError(f"module 'robot_rl.interface' has no attribute {name!r}")
