"""The bounded scratchpad: per-env, per-episode notes, and its two renderings (text and the ``memory`` group).

Notes-to-Self (Haresh et al. 2026, ``Qualcomm-AI-research/scratchpad-vla``) gives a VLA a language scratchpad
that grows without bound. Ours is bounded (DESIGN.md, "Scratchpad memory") and holds three kinds of entries:

* **grounding** slots: an object's name, its position (m, robot base frame) and the env step it was seen at;
* **plan**: subtask names, in order (a new plan replaces the old one);
* **act**: completed subtasks, each with the env step it was done at.

Slot counts come from ``memory.*`` (:class:`MemorySpec`). When a kind is full, the oldest entry is evicted
(counted in :class:`MemoryStats`, logged at debug level). A grounding of an object already held replaces that
slot (the newest sighting wins) and a subtask done again moves to the newest act slot. The scratchpad is
cleared at every episode start.

**Text rendering** (what a VLA reads inside Notes-to-Self's ``<plan>…</plan>``, :mod:`.notes_to_self`, and what
notes are written in): one entry per line::

    plan: pick, place, restore
    seen cube at 0.615 -0.034 0.020 step 0
    done pick step 31

Positions have 3 decimals (mm) and are stored rounded, so text -> :func:`parse_notes` -> state -> text is
exact (the round trip the unit tests pin). A teacher's note is a few such lines; :meth:`Scratchpad.write` parses
it. A line that is not an entry, an unknown object or subtask name, a position that is not finite or farther than
:data:`MAX_POSITION_M` from the base, and a plan longer than its slots are dropped or truncated and counted, never
raised: a note is teacher output, not trusted input. A note longer than ``max_note_chars`` is cut there first.

**Vector rendering** (the ``memory`` observation group, :meth:`MemorySpec.group`), fixed size, in this order:

* per grounding slot ``g``: ``ground{g}_present`` (1, 0/1), ``ground{g}_object`` (one-hot over the task's
  objects), ``ground{g}_pos`` (3, m, robot base frame), ``ground{g}_time`` (1, s: env step seen × 0.05 s);
* per plan slot ``p``: ``plan{p}`` (one-hot over the task's subtasks; zeros when empty);
* per act slot ``a``: ``act{a}_present`` (1), ``act{a}_subtask`` (one-hot), ``act{a}_time`` (1, s).

The vocabularies are the fields' ``components``, so the group alone rebuilds its :class:`MemorySpec`
(:meth:`MemorySpec.from_group`): the export sidecar carries the schema and the ROS node needs nothing else.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np

from robot_rl.geometry import CONTROL_PERIOD_S

__all__ = ["MemorySpec", "MemoryStats", "Notes", "Grounding", "Act", "Scratchpad", "parse_notes", "render_text",
           "render_vector", "MAX_POSITION_M", "DEFAULT_MAX_NOTE_CHARS", "format_grounding", "format_done",
           "format_plan"]

_log = logging.getLogger(__name__)

#: A grounding farther than this from the robot base (m) is not a position on the table: dropped.
MAX_POSITION_M = 5.0
#: Default longest note (characters) a writer may send; longer ones are cut there (and counted).
DEFAULT_MAX_NOTE_CHARS = 1024
#: Names are lower-case tokens (``cube``, ``red_cube``, ``place``).
_NAME = r"[a-z][a-z0-9_]*"
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PLAN_RE = re.compile(r"^plan:\s*(.*)$")
_SEEN_RE = re.compile(rf"^seen\s+({_NAME})\s+at\s+({_NUM})\s+({_NUM})\s+({_NUM})\s+step\s+(\d+)$")
_DONE_RE = re.compile(rf"^done\s+({_NAME})\s+step\s+(\d+)$")


@dataclass(frozen=True)
class Grounding:
    """One grounding entry: ``name`` (an object of the vocabulary), ``pos`` (x, y, z m, robot base frame,
    rounded to mm), ``step`` (the env step, in its episode, of the observation it was seen in).
    """

    name: str
    pos: tuple[float, float, float]
    step: int


@dataclass(frozen=True)
class Act:
    """One act entry: ``name`` (a subtask of the vocabulary) done at env ``step`` (in its episode)."""

    name: str
    step: int


@dataclass
class Notes:
    """The entries parsed from one text, in text order (before slots are applied)."""

    grounding: list[Grounding] = field(default_factory=list)
    plan: list[str] | None = None  #: None: the text holds no plan line (the current plan stays)
    act: list[Act] = field(default_factory=list)
    dropped: int = 0  #: lines or names dropped (not an entry, unknown name, bad position)
    truncated: int = 0  #: characters or plan names cut (too long)

    def __bool__(self) -> bool:
        return bool(self.grounding or self.act or self.plan is not None)

    def done(self) -> set[str]:
        """The subtask names the act entries record as done."""
        return {a.name for a in self.act}

    def seen(self, name: str) -> tuple[float, float, float] | None:
        """The newest grounding position of object ``name`` (m, robot base frame), or None if it was never seen."""
        return next((g.pos for g in reversed(self.grounding) if g.name == name), None)


@dataclass
class MemoryStats:
    """Counters over a scratchpad's life (all envs): notes and entries written, and what was lost."""

    notes: int = 0  #: non-empty notes written
    entries: int = 0  #: entries written (grounding, plan and act)
    dropped: int = 0  #: note lines or names dropped
    truncated: int = 0  #: notes cut at ``max_note_chars`` plus plan names beyond the plan slots
    evicted: int = 0  #: entries evicted, oldest first, from a full kind


def _round_pos(p: Iterable[float]) -> tuple[float, float, float]:
    x, y, z = (round(float(v), 3) + 0.0 for v in p)  # + 0.0: no "-0.000"
    return (x, y, z)


def format_grounding(name: str, pos: Sequence[float], step: int) -> str:
    """The text line of a grounding entry (``pos`` m in the robot base frame, 3 decimals)."""
    x, y, z = _round_pos(pos)
    return f"seen {name} at {x:.3f} {y:.3f} {z:.3f} step {int(step)}"


def format_done(name: str, step: int) -> str:
    """The text line of an act entry: subtask ``name`` done at env ``step``."""
    return f"done {name} step {int(step)}"


def format_plan(names: Sequence[str]) -> str:
    """The text line of a plan (subtask names in order)."""
    return "plan: " + ", ".join(names)


@dataclass(frozen=True)
class MemorySpec:
    """What one run's scratchpad holds: the task's vocabularies and the slot counts (``memory.*``).

    Attributes:
        objects: object names a grounding may name (the one-hot of ``ground*_object``).
        subtasks: subtask names a plan or act entry may name.
        grounding_slots: ``G`` >= 1 grounding slots.
        plan_slots: ``P`` >= 1 plan slots.
        act_slots: ``A`` >= 1 act slots.
        max_note_chars: longest note accepted; longer ones are cut there (counted).

    Raises:
        ValueError: a count < 1, an empty vocabulary, a name that is not a lower-case token, or a name twice.
    """

    objects: tuple[str, ...]
    subtasks: tuple[str, ...]
    grounding_slots: int = 2
    plan_slots: int = 4
    act_slots: int = 4
    max_note_chars: int = DEFAULT_MAX_NOTE_CHARS

    def __post_init__(self) -> None:
        for name in ("grounding_slots", "plan_slots", "act_slots", "max_note_chars"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"memory.{name} must be >= 1, got {getattr(self, name)}")
        for kind in ("objects", "subtasks"):
            names = tuple(getattr(self, kind))
            object.__setattr__(self, kind, names)
            if not names:
                raise ValueError(f"memory vocabulary {kind} is empty")
            bad = [n for n in names if not re.fullmatch(_NAME, n)]
            if bad:
                raise ValueError(f"memory vocabulary {kind}: {bad} are not lower-case tokens ({_NAME})")
            if len(set(names)) != len(names):
                raise ValueError(f"memory vocabulary {kind} names one twice: {names}")

    @property
    def size(self) -> int:
        """Length of the ``memory`` group's vector."""
        k, s = len(self.objects), len(self.subtasks)
        return self.grounding_slots * (5 + k) + self.plan_slots * s + self.act_slots * (2 + s)

    def group(self):
        """The ``memory`` observation group (:class:`~robot_rl.observation.ObsGroup`), field by field with units."""
        from robot_rl.observation import ObsField, ObsGroup

        fields = []
        for g in range(self.grounding_slots):
            fields += [
                ObsField(f"ground{g}_present", 1, "none", "0 or 1", f"grounding slot {g} holds an entry"),
                ObsField(f"ground{g}_object", len(self.objects), "none", "one-hot",
                         f"the object grounding slot {g} names", self.objects),
                ObsField(f"ground{g}_pos", 3, "robot_base", "m",
                         "where that object was seen (robot base frame; 0 when empty)", ("x", "y", "z")),
                ObsField(f"ground{g}_time", 1, "none", "s",
                         f"env step it was seen at, times {CONTROL_PERIOD_S} s, from the episode start"),
            ]
        for p in range(self.plan_slots):
            fields.append(ObsField(f"plan{p}", len(self.subtasks), "none", "one-hot",
                                   f"subtask {p} of the plan (zeros when the plan is shorter)", self.subtasks))
        for a in range(self.act_slots):
            fields += [
                ObsField(f"act{a}_present", 1, "none", "0 or 1", f"act slot {a} holds a completed subtask"),
                ObsField(f"act{a}_subtask", len(self.subtasks), "none", "one-hot",
                         f"the subtask act slot {a} records as done", self.subtasks),
                ObsField(f"act{a}_time", 1, "none", "s",
                         f"env step it was done at, times {CONTROL_PERIOD_S} s, from the episode start"),
            ]
        return ObsGroup("memory", tuple(fields),
                        "the scratchpad (robot_rl.memory): grounding, plan and act slots written from teacher notes "
                        "(Notes-to-Self, bounded); cleared at every episode start")

    @classmethod
    def from_group(cls, group, max_note_chars: int = DEFAULT_MAX_NOTE_CHARS) -> MemorySpec:
        """The spec a ``memory`` group was built from (its one-hot components are the vocabularies).

        Raises:
            ValueError: not a group :meth:`group` builds (the message names the field).
        """
        by = {f.name: f for f in group.fields}
        try:
            objects = by["ground0_object"].components
            subtasks = by["plan0"].components
        except KeyError as exc:
            raise ValueError(f"memory group has no field {exc.args[0]!r}: not a scratchpad group") from None
        def count(prefix: str) -> int:
            return sum(n.startswith(prefix) and n.endswith("_present") for n in by)

        spec = cls(tuple(objects), tuple(subtasks), count("ground"), sum(n.startswith("plan") for n in by),
                   count("act"), max_note_chars)
        expected = spec.group()
        if expected != group:
            diff = next((f"field {i}: {a.name!r} ({a.size}) where the layout has {b.name!r} ({b.size})"
                         for i, (a, b) in enumerate(zip(group.fields, expected.fields)) if a != b),
                        f"{len(group.fields)} fields where the layout has {len(expected.fields)}")
            raise ValueError(f"memory group does not match the scratchpad layout it names: {diff}")
        return spec


def parse_notes(text: str, spec: MemorySpec) -> Notes:
    """Parse a note or a whole scratchpad text (:func:`render_text`'s format) into entries.

    Nothing raises: bad lines, unknown names and bad positions are dropped (``Notes.dropped``), a text longer
    than ``spec.max_note_chars`` is cut there and a plan longer than ``spec.plan_slots`` is cut
    (``Notes.truncated``).
    """
    out = Notes()
    text = "" if text is None else str(text)
    if len(text) > spec.max_note_chars:
        text = text[:spec.max_note_chars]
        out.truncated += 1
        if "\n" in text:  # the cut line is partial: drop it
            text = text[:text.rindex("\n")]
    objects, subtasks = set(spec.objects), set(spec.subtasks)
    for raw in text.splitlines():
        line = " ".join(raw.strip().lower().split())
        if not line:
            continue
        if m := _PLAN_RE.match(line):
            names = [n.strip() for n in m.group(1).split(",") if n.strip()]
            known = [n for n in names if n in subtasks]
            out.dropped += len(names) - len(known)
            if len(known) > spec.plan_slots:
                out.truncated += len(known) - spec.plan_slots
                known = known[:spec.plan_slots]
            out.plan = known
        elif m := _SEEN_RE.match(line):
            pos = [float(m.group(i)) for i in (2, 3, 4)]
            if m.group(1) not in objects or not all(math.isfinite(v) for v in pos) or math.hypot(*pos) > MAX_POSITION_M:
                out.dropped += 1
                continue
            out.grounding.append(Grounding(m.group(1), _round_pos(pos), int(m.group(5))))
        elif m := _DONE_RE.match(line):
            if m.group(1) not in subtasks:
                out.dropped += 1
                continue
            out.act.append(Act(m.group(1), int(m.group(2))))
        else:
            out.dropped += 1
    return out


@dataclass
class _EpisodeNotes:
    """One env's scratchpad in the current episode (slot order = age order, oldest first)."""

    grounding: list[Grounding] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)
    act: list[Act] = field(default_factory=list)


def render_text(notes: _EpisodeNotes | Notes) -> str:
    """The scratchpad text (plan line, then grounding lines, then act lines; ``""`` when empty)."""
    lines = [format_plan(notes.plan)] if notes.plan else []
    lines += [format_grounding(g.name, g.pos, g.step) for g in notes.grounding]
    lines += [format_done(a.name, a.step) for a in notes.act]
    return "\n".join(lines)


def render_vector(notes: _EpisodeNotes | Notes, spec: MemorySpec) -> np.ndarray:
    """The ``memory`` group vector ``(spec.size,) float32`` of one env's notes (layout: module docstring)."""
    out = np.zeros(spec.size, dtype=np.float32)
    k, s = len(spec.objects), len(spec.subtasks)
    o = 0
    for g in range(spec.grounding_slots):
        if g < len(notes.grounding):
            e = notes.grounding[g]
            out[o] = 1.0
            out[o + 1 + spec.objects.index(e.name)] = 1.0
            out[o + 1 + k:o + 4 + k] = e.pos
            out[o + 4 + k] = e.step * CONTROL_PERIOD_S
        o += 5 + k
    plan = notes.plan or []
    for p in range(spec.plan_slots):
        if p < len(plan):
            out[o + spec.subtasks.index(plan[p])] = 1.0
        o += s
    for a in range(spec.act_slots):
        if a < len(notes.act):
            e = notes.act[a]
            out[o] = 1.0
            out[o + 1 + spec.subtasks.index(e.name)] = 1.0
            out[o + 1 + s] = e.step * CONTROL_PERIOD_S
        o += 2 + s
    return out


class Scratchpad:
    """The bounded scratchpads of ``num_envs`` envs (one owner: the run's guidance in training, the ROS node at
    deployment).

    Args:
        spec: vocabularies and slot counts.
        num_envs: ``N`` >= 1.

    Attributes:
        stats: :class:`MemoryStats` over all envs since construction.
    """

    def __init__(self, spec: MemorySpec, num_envs: int):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.spec = spec
        self.num_envs = int(num_envs)
        self.stats = MemoryStats()
        self._pads = [_EpisodeNotes() for _ in range(self.num_envs)]
        self._vec = np.zeros((self.num_envs, spec.size), dtype=np.float32)

    def clear(self, envs: Iterable[int] | np.ndarray | None = None) -> None:
        """Empty the scratchpads of ``envs`` (all when None; a bool mask or indices): a new episode starts."""
        idx = range(self.num_envs) if envs is None else _indices(envs, self.num_envs)
        for i in idx:
            self._pads[i] = _EpisodeNotes()
            self._vec[i] = 0.0

    def write(self, env: int, note: str | None) -> Notes:
        """Parse ``note`` (a teacher's, :func:`parse_notes`) and add its entries to env ``env``'s scratchpad.

        Returns:
            The parsed :class:`Notes` (empty for ``None`` or ``""``). Never raises on a bad note.
        """
        if not note:
            return Notes()
        parsed = parse_notes(note, self.spec)
        st, pad = self.stats, self._pads[int(env)]
        st.notes += 1
        st.dropped += parsed.dropped
        st.truncated += parsed.truncated
        for g in parsed.grounding:
            pad.grounding = [e for e in pad.grounding if e.name != g.name] + [g]
            self._evict(pad.grounding, self.spec.grounding_slots, "grounding", env)
        if parsed.plan is not None:
            pad.plan = list(parsed.plan)
            st.entries += 1
        for a in parsed.act:
            pad.act = [e for e in pad.act if e.name != a.name] + [a]
            self._evict(pad.act, self.spec.act_slots, "act", env)
        st.entries += len(parsed.grounding) + len(parsed.act)
        self._vec[int(env)] = render_vector(pad, self.spec)
        return parsed

    def _evict(self, entries: list, slots: int, kind: str, env: int) -> None:
        while len(entries) > slots:
            old = entries.pop(0)
            self.stats.evicted += 1
            _log.debug("scratchpad env %d: %s full (%d slots), evicted the oldest %s", env, kind, slots, old)

    def text(self, env: int) -> str:
        """Env ``env``'s scratchpad as text (:func:`render_text`)."""
        return render_text(self._pads[int(env)])

    def texts(self, envs: Iterable[int] | np.ndarray) -> list[str]:
        """The texts of ``envs`` (indices), e.g. the ``scratchpads`` of a teacher request."""
        return [self.text(i) for i in _indices(envs, self.num_envs)]

    def vector(self) -> np.ndarray:
        """The ``memory`` group of every env, ``(N, spec.size) float32`` (a copy)."""
        return self._vec.copy()

    def entries(self, env: int) -> _EpisodeNotes:
        """A copy of env ``env``'s entries (grounding, plan, act; oldest first)."""
        p = self._pads[int(env)]
        return _EpisodeNotes(list(p.grounding), list(p.plan), list(p.act))

    def load_text(self, env: int, text: str) -> None:
        """Replace env ``env``'s scratchpad by the one ``text`` renders (the round trip of :meth:`text`)."""
        self.clear([int(env)])
        self.write(env, text)

    def metrics(self) -> dict[str, float]:
        """SB3 logger keys ``memory/*``: the :class:`MemoryStats` counters."""
        return {f"memory/{k}": float(v) for k, v in asdict(self.stats).items()}


def _indices(envs, n: int) -> list[int]:
    a = np.asarray(list(envs) if not isinstance(envs, np.ndarray) else envs)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ValueError(f"env mask of shape {a.shape} for {n} envs")
        return np.flatnonzero(a).tolist()
    out = [int(i) for i in a.reshape(-1)]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise IndexError(f"env indices {bad} out of range for {n} envs")
    return out
