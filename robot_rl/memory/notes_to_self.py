r"""Notes-to-Self's prompt and generation format (Haresh et al. 2026, ``Qualcomm-AI-research/scratchpad-vla``,
read from its evaluation code: ``../shared/FACTS.md``), for a VLA backend that reads and writes the scratchpad.

* Prompt: the backend's own prompt (OpenVLA: ``"In: What action should the robot take to {instr}?\\nOut:"``) with
  ``"\\n<plan>{scratchpad}</plan>"`` after the question when the scratchpad is not empty
  (:func:`prompt_with_scratchpad`).
* Generation is forced to start with ``<plan>`` while the scratchpad is empty (the first query of an episode:
  the model writes its plan), else with ``<think>`` (:func:`forced_prefix`).
* The model's answer is ``[<plan>…</plan>]<think>…</think><act>`` then the 7 action tokens; the act clause may
  hold ``<done>`` (the subtask just ended). :func:`parse_generation` splits the text before the action tokens.
* The note the answer carries (:func:`note_of`): the plan text (first answer) and, when the act clause holds
  ``<done>``, the think text, as Notes-to-Self appends that step's think text to its scratchpad. Ours are in
  :mod:`robot_rl.memory.scratchpad`'s line format, so the bounded scratchpad parses them (what does not parse is
  dropped and counted, never raised).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PLAN_OPEN", "PLAN_CLOSE", "THINK_OPEN", "THINK_CLOSE", "ACT", "DONE", "Generation", "forced_prefix",
           "prompt_with_scratchpad", "parse_generation", "note_of", "MalformedGeneration"]

PLAN_OPEN, PLAN_CLOSE = "<plan>", "</plan>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ACT, DONE = "<act>", "<done>"


class MalformedGeneration(ValueError):
    """A generation without the ``<act>`` marker (or with an unclosed ``<plan>``/``<think>``): no action in it."""


@dataclass(frozen=True)
class Generation:
    """The text parts of one Notes-to-Self generation.

    Attributes:
        plan: the ``<plan>`` text (first answer of an episode), or None.
        think: the ``<think>`` text, or None.
        done: the act clause holds ``<done>``.
        act_text: what follows ``<act>`` (the action tokens' text, ``<done>`` removed).
    """

    plan: str | None
    think: str | None
    done: bool
    act_text: str


def forced_prefix(scratchpad: str | None) -> str:
    """``<plan>`` for an empty scratchpad (the episode's first query), else ``<think>``."""
    return PLAN_OPEN if not scratchpad else THINK_OPEN


def prompt_with_scratchpad(prompt: str, scratchpad: str | None, question_end: str = "?") -> str:
    r"""``prompt`` with ``"\\n<plan>{scratchpad}</plan>"`` right after its question, as Notes-to-Self builds it;
    ``prompt`` unchanged for an empty scratchpad.

    The question ends at the *last* ``question_end`` of ``prompt`` (an instruction may hold a ``?`` of its own; the
    template's comes after it: OpenVLA's ``"...take to {instr}?\\nOut:"``, Notes-to-Self's ``"...take to {instr}?"``);
    the scratchpad goes at the end when there is none. Notes-to-Self (``paligemma_runner.py``) appends it at the end of
    its prompt, which ends with the question.
    """
    if not scratchpad:
        return prompt
    cut = prompt.rfind(question_end)
    cut = len(prompt) if cut < 0 else cut + len(question_end)
    return f"{prompt[:cut]}\n{PLAN_OPEN}{scratchpad}{PLAN_CLOSE}{prompt[cut:]}"


def _between(text: str, open_: str, close: str) -> tuple[str | None, str]:
    start = text.find(open_)
    if start < 0:
        return None, text
    end = text.find(close, start + len(open_))
    if end < 0:
        raise MalformedGeneration(f"{open_} is never closed by {close}")
    return text[start + len(open_):end], text[:start] + text[end + len(close):]


def parse_generation(text: str) -> Generation:
    """Split a generated text (its forced prefix included) into plan, think, done and the act clause.

    Raises:
        MalformedGeneration: no ``<act>``, or an unclosed ``<plan>`` / ``<think>`` (the message says which).
    """
    act = text.find(ACT)
    if act < 0:
        raise MalformedGeneration(f"no {ACT} in the generation {text[:80]!r}")
    head, tail = text[:act], text[act + len(ACT):]
    plan, head = _between(head, PLAN_OPEN, PLAN_CLOSE)
    think, _ = _between(head, THINK_OPEN, THINK_CLOSE)
    done = DONE in tail
    return Generation(None if plan is None else plan.strip(), None if think is None else think.strip(), done,
                      re.sub(re.escape(DONE), "", tail))


def note_of(gen: Generation) -> str:
    """The note a generation writes (module docstring): plan text, plus the think text when ``done``."""
    parts = [gen.plan] if gen.plan else []
    if gen.done and gen.think:
        parts.append(gen.think)
    return "\n".join(parts)
