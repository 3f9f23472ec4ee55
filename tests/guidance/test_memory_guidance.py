"""Guidance owns the scratchpad (issue 13): texts go out with queries, notes are written when their answer arrives,
a lost or invalid answer loses only its own note, an ended episode's scratchpad is cleared. Logic only: a fake
vec env and teacher (the real simulator runs in tests/teachers/test_memory_notes.py and the training smoke test).
"""

from __future__ import annotations

import logging

import numpy as np

from robot_rl.envs.common import TeacherView
from robot_rl.guidance import Guidance, QueryScheduler
from robot_rl.guidance.delay import DelayModel
from robot_rl.memory import MemorySpec
from robot_rl.teachers.base import TeacherResponse, TeacherSpec

SPEC = MemorySpec(("cube", "goal"), ("pick", "place"), grounding_slots=2, plan_slots=2, act_slots=2)


class _Venv:
    num_envs = 3

    def teacher_view(self, idx, with_image=False):
        k = len(idx)
        return TeacherView(None, ["t"] * k, np.zeros((k, 38), np.float32), ["RRL-PickPlaceCube-Restore-v1"] * k)


class _Teacher:
    """Notes ``seen cube at <env-ish> 0 0 step <obs step>``; a row whose step is in ``bad_steps`` answers NaN."""

    def __init__(self, writes_notes=True, bad_steps=()):
        self.spec = TeacherSpec(model_id="fake", control_period_steps=2, writes_notes=writes_notes)
        self.requests, self.bad_steps = [], set(bad_steps)

    def act(self, request):
        self.requests.append(request)
        n = len(request)
        actions = np.zeros((n, 7), np.float32)
        for i, s in enumerate(request.obs_steps):
            if int(s) in self.bad_steps:
                actions[i] = np.nan
        notes = [f"seen cube at 0.{i + 1} 0 0 step {int(s)}" for i, s in enumerate(request.obs_steps)]
        return TeacherResponse(actions, 0.0, "fake", notes=notes if self.spec.writes_notes else None)


def _guidance(teacher, delay_steps=0):
    scheduler = QueryScheduler(n_steps=10**6, num_envs=3, budget_fraction=1.0, anneal=False,
                               deactivate_threshold=None, seed=0)
    scheduler.begin_rollout(None)
    delay = DelayModel("fixed", steps=delay_steps) if delay_steps else DelayModel("none")
    return Guidance(teacher, scheduler, 3, delay=delay, memory=SPEC)


def test_notes_written_on_arrival_sent_back_and_cleared_per_episode():
    teacher, venv = _Teacher(), _Venv()
    g = _guidance(teacher, delay_steps=2)
    g.reset()
    g.prepare(venv)  # step 0: all three query, answers due at step 2
    assert teacher.requests[0].scratchpads == ["", "", ""]
    assert not g.memory_features().any()  # not arrived yet
    none = np.zeros(3, bool)
    g.advance(none)
    assert not g.memory_features().any()
    g.advance(none)  # step 2: delivered, the notes written now
    assert [t.startswith("seen cube at") for t in g.memory.texts([0, 1, 2])] == [True] * 3
    assert g.memory_features().shape == (3, SPEC.size) and g.memory_features()[:, 0].all()
    for _ in range(2):  # the answer plays out over its D = 2 steps, then the envs query again
        g.prepare(venv)
        g.advance(none)
    g.prepare(venv)
    assert len(teacher.requests) == 2
    assert teacher.requests[-1].scratchpads[0] == "seen cube at 0.100 0.000 0.000 step 0"
    g.advance(np.array([False, True, False]))  # env 1's episode ends: its scratchpad is cleared
    texts = g.memory.texts([0, 1, 2])
    assert texts[1] == "" and texts[0] and texts[2]
    assert not g.memory_features()[1].any()
    assert g.metrics()["memory/notes"] == 3.0


def test_a_lost_answer_loses_only_its_own_note():
    teacher, venv = _Teacher(bad_steps={0}), _Venv()
    g = _guidance(teacher)
    g.reset()
    g.prepare(venv)  # step 0: NaN answers: invalid, their notes are dropped with them
    assert g.stats.invalid == 3 and g.memory.texts([0]) == [""]
    for _ in range(3):
        g.advance(np.zeros(3, bool))
        g.prepare(venv)
    assert all("step" in t for t in g.memory.texts([0, 1, 2]))


def test_a_teacher_without_notes_warns_once_and_leaves_the_group_empty(caplog):
    with caplog.at_level(logging.WARNING):
        g = _guidance(_Teacher(writes_notes=False))
    assert sum("writes no notes" in r.getMessage() for r in caplog.records) == 1
    g.reset()
    g.prepare(_Venv())
    g.advance(np.zeros(3, bool))
    assert not g.memory_features().any() and g.metrics()["memory/notes"] == 0.0


def test_with_memory_every_episode_queries_at_its_first_step():
    """The cue of a memory task is shown at the episode's start: a memory run asks there even with no budget left."""
    teacher, venv = _Teacher(), _Venv()
    scheduler = QueryScheduler(n_steps=10**6, num_envs=3, budget_fraction=0.0, anneal=False,
                               deactivate_threshold=None, seed=0)
    scheduler.begin_rollout(None)
    g = Guidance(teacher, scheduler, 3, memory=SPEC)
    g.reset()
    g.prepare(venv)
    assert len(teacher.requests) == 1 and list(teacher.requests[0].obs_steps) == [0, 0, 0]
    for _ in range(3):  # no budget: no further queries
        g.advance(np.zeros(3, bool))
        g.prepare(venv)
    assert len(teacher.requests) == 1
    g.advance(np.array([False, True, False]))  # env 1 starts a new episode: it asks at its first step
    g.prepare(venv)
    assert len(teacher.requests) == 2 and list(teacher.requests[1].obs_steps) == [0]
    without = Guidance(_Teacher(), scheduler, 3)  # no memory: the budget alone decides
    without.reset()
    without.prepare(venv)
    assert without.teacher.requests == []
