"""Scratchpad memory (Notes-to-Self, bounded; DESIGN.md "Scratchpad memory"): per-env, per-episode notes written
from teacher answers, rendered as text for a VLA prompt and as the ``memory`` observation group for the policy.

- :mod:`.scratchpad`: :class:`Scratchpad`, :class:`MemorySpec`, the text format and both renderings;
- :mod:`.notes_to_self`: Notes-to-Self's prompt and generation format (``<plan>``, ``<think>``, ``<act>``, ``<done>``);
- :mod:`.vocab`: each task's object and subtask names.
"""

from robot_rl.memory.scratchpad import (
    DEFAULT_MAX_NOTE_CHARS,
    Act,
    Grounding,
    MemorySpec,
    MemoryStats,
    Notes,
    Scratchpad,
    format_done,
    format_grounding,
    format_plan,
    parse_notes,
    render_text,
    render_vector,
)
from robot_rl.memory.vocab import vocabulary

__all__ = ["Scratchpad", "MemorySpec", "MemoryStats", "Notes", "Grounding", "Act", "parse_notes", "render_text",
           "render_vector", "format_grounding", "format_done", "format_plan", "vocabulary", "memory_spec",
           "DEFAULT_MAX_NOTE_CHARS"]


def memory_spec(task_id: str, grounding_slots: int = 2, plan_slots: int = 4, act_slots: int = 4,
                max_note_chars: int = DEFAULT_MAX_NOTE_CHARS) -> MemorySpec:
    """The :class:`MemorySpec` of a run on ``task_id`` (its vocabulary, :mod:`.vocab`) with these slot counts."""
    objects, subtasks = vocabulary(task_id)
    return MemorySpec(objects, subtasks, grounding_slots, plan_slots, act_slots, max_note_chars)
