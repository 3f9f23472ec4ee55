"""Each task's scratchpad vocabulary: the object names a grounding may name and the subtask names of plans and acts.

Keyed by env id like :mod:`robot_rl.envs.obs_layout` (no simulator import: the ROS node reads the vocabulary from
the ``memory`` group's components instead, :meth:`robot_rl.memory.MemorySpec.from_group`). A task without an entry
gets :data:`DEFAULT_VOCABULARY`. The scripted planners of the memory tasks (``robot_rl.teachers.plans``) write
exactly these names.
"""

from __future__ import annotations

__all__ = ["VOCABULARIES", "DEFAULT_VOCABULARY", "vocabulary"]

#: ``(objects, subtasks)`` of a task without its own entry.
DEFAULT_VOCABULARY: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("object", "goal", "tool"), ("reach", "grasp", "move", "place", "release", "return"))

#: env id -> ``(objects, subtasks)``.
VOCABULARIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "RRL-PickPlaceCube-Restore-v1": (("cube", "goal"), ("pick", "place", "restore")),
    "RRL-TakeItBack-v0": (("cube", "goal"), ("to_goal", "take_back")),
    "RRL-RememberColor3-v0": (("red_cube", "lime_cube", "blue_cube"), ("observe", "touch")),
}


def vocabulary(task_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(objects, subtasks)`` of ``task_id`` (an env id; :data:`DEFAULT_VOCABULARY` for others)."""
    return VOCABULARIES.get(str(task_id), DEFAULT_VOCABULARY)
