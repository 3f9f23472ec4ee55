"""Teachers: the :class:`Teacher` protocol and its backends (``robot_rl.teachers``).

- :class:`Teacher`, :class:`TeacherSpec`, :class:`TeacherRequest`, :class:`TeacherResponse`,
  :class:`TeacherRequestError`: the interface the trainer talks to (:mod:`robot_rl.teachers.base`,
  action convention and timing there).
- :class:`ScriptedTeacher`: plans from privileged state (all six tasks of the suite, one planner per task in
  :mod:`robot_rl.teachers.plans`), with weakness knobs.
- ``OpenVLATeacher`` (:mod:`robot_rl.teachers.openvla`): a local VLA checkpoint via transformers.
- ``RemoteTeacher`` (:mod:`robot_rl.teachers.remote`): a client of a teacher server
  (:mod:`robot_rl.teachers.server`, ``robot-rl teacher serve``; its config: :mod:`robot_rl.teachers.config`).
- ``OpenpiTeacher`` (:mod:`robot_rl.teachers.openpi`): a client of any openpi policy server (WebSocket).
- :func:`make_teacher`: build a teacher by kind name (from configs / the CLI).
- :func:`robot_rl.teachers.evaluate.run_teacher_as_policy`: measure a teacher's own competence
  (imported lazily: it needs the simulator).

Importing this package is light (numpy only); no simulator or model is loaded.
"""

from __future__ import annotations

from typing import Any, Callable

from .base import Teacher, TeacherRequest, TeacherRequestError, TeacherResponse, TeacherSpec
from .scripted import ScriptedTeacher


def _openvla(**kwargs: Any) -> Teacher:
    from .openvla import OpenVLATeacher  # torch + transformers: imported only when asked for

    return OpenVLATeacher(**kwargs)


def _remote(**kwargs: Any) -> Teacher:
    from .remote import RemoteTeacher

    return RemoteTeacher(**kwargs)


def _openpi(**kwargs: Any) -> Teacher:
    from .openpi import OpenpiTeacher

    return OpenpiTeacher(**kwargs)


#: Teacher kinds :func:`make_teacher` knows, name -> factory.
TEACHER_KINDS: dict[str, Callable[..., Teacher]] = {
    "scripted": ScriptedTeacher,
    "openvla": _openvla,
    "remote": _remote,
    "openpi": _openpi,
}


def make_teacher(kind: str, **kwargs: Any) -> Teacher:
    """Build a teacher of ``kind`` with the backend's constructor keyword arguments.

    Example: ``make_teacher("scripted", control_period_steps=4, direction_noise_deg=20, seed=0)``.

    Raises:
        ValueError: unknown ``kind`` (the message lists the known kinds), or a bad argument value
            the backend rejects.
        TypeError: an argument the backend does not take.
    """
    try:
        factory = TEACHER_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown teacher kind {kind!r}; known kinds: {', '.join(sorted(TEACHER_KINDS))}") from None
    return factory(**kwargs)


__all__ = [
    "Teacher",
    "TeacherRequest",
    "TeacherRequestError",
    "TeacherResponse",
    "TeacherSpec",
    "ScriptedTeacher",
    "make_teacher",
    "TEACHER_KINDS",
]
