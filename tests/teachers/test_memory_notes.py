"""The scripted teacher's scratchpad on RRL-PickPlaceCube-Restore-v1 (issue 13), in the real simulator: it solves the
task with its notes and not without them, and its notes hold nothing its view did not (no hidden simulator state).
"""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.envs.obs_layout import ROBOT_BASE_POS_WORLD
from robot_rl.envs.privileged import PRIVILEGED_STATE_LAYOUT
from robot_rl.memory import format_grounding, memory_spec, parse_notes
from robot_rl.teachers import ScriptedTeacher
from robot_rl.teachers.base import TeacherRequest
from robot_rl.teachers.evaluate import run_teacher_as_policy

TASK = "RRL-PickPlaceCube-Restore-v1"
pytestmark = pytest.mark.slow
_POSITIONS = [PRIVILEGED_STATE_LAYOUT[k] for k in ("tcp_pos", "obj_pos", "goal_pos", "tool_pos")]


class Recording:
    """A teacher that records every (request, response) of the teacher it wraps."""

    def __init__(self, teacher):
        self.teacher, self.spec, self.log = teacher, teacher.spec, []

    def act(self, request):
        response = self.teacher.act(request)
        self.log.append((request, response))
        return response


def notes_beyond_view(log, task: str = TASK) -> list[str]:
    """The notes of ``log`` that hold information the writer's view did not: a grounding position that is none of
    the positions in that row's request state, or a note the teacher does not write again for the same request
    (so it came from somewhere else than the request). Empty when every note is the view's.
    """
    spec = memory_spec(task, 16, 16, 16)
    base = np.asarray(ROBOT_BASE_POS_WORLD)
    bad = []
    for request, response in log:
        for i, note in enumerate(response.notes or []):
            if not note:
                continue
            state = np.asarray(request.states[i], dtype=np.float64)
            seen = [state[sl] - base for sl in _POSITIONS]
            for g in parse_notes(note, spec).grounding:
                if not any(np.all(np.abs(np.asarray(g.pos) - p) <= 1e-3 + 1e-9) for p in seen):
                    bad.append(note)
    return bad


def test_solves_with_its_notes_and_not_without():
    with_notes = run_teacher_as_policy(ScriptedTeacher(4), TASK, 3, seed=0, hold=True, memory=True)
    without = run_teacher_as_policy(ScriptedTeacher(4), TASK, 3, seed=0, hold=True, memory=False)
    assert with_notes["success_rate"] == 1.0, with_notes["episode_lengths"]
    assert with_notes["memory_stats"]["memory/notes"] > 0 and with_notes["memory_stats"]["memory/dropped"] == 0
    assert without["success_rate"] == 0.0 and without["memory_stats"] is None


def test_notes_hold_only_what_the_view_held():
    rec = Recording(ScriptedTeacher(4))
    run_teacher_as_policy(rec, TASK, 2, seed=5, hold=True, memory=True)
    notes = [n for _, r in rec.log for n in r.notes if n]
    assert any("seen cube" in n for n in notes) and any("done place" in n for n in notes)
    assert notes_beyond_view(rec.log) == []
    # the same request gets the same note: nothing but the request went into it
    for request, response in rec.log[:10]:
        assert ScriptedTeacher(4).act(request).notes == response.notes
    # the check can fail: an oracle that writes the hidden start once the cube has moved is caught
    first_req = rec.log[0][0]
    start = np.asarray(first_req.states[0][PRIVILEGED_STATE_LAYOUT["obj_pos"]], dtype=np.float64)
    later_req, later_resp = next((q, r) for q, r in rec.log if any("done place" in n for n in r.notes))
    oracle = type(later_resp)(later_resp.actions, 0.0, "oracle",
                              notes=[format_grounding("cube", start - np.asarray(ROBOT_BASE_POS_WORLD), 40)])
    assert notes_beyond_view([(later_req, oracle)]) != []


def test_reads_only_the_scratchpad_it_is_sent():
    """Two requests that differ only in their scratchpad get different answers: the memory is in the request."""
    rec = Recording(ScriptedTeacher(4))
    run_teacher_as_policy(rec, TASK, 1, seed=1, hold=True, memory=True)
    req, resp = next((q, r) for q, r in rec.log if any("done place" in n for n in r.notes))
    later = next(q for q, r in rec.log if q.obs_steps[0] > req.obs_steps[0] + 8)
    blank = TeacherRequest(instructions=later.instructions, states=later.states, task_ids=later.task_ids,
                           obs_steps=later.obs_steps, scratchpads=[""])
    a_mem = ScriptedTeacher(4).act(later)
    a_blank = ScriptedTeacher(4).act(blank)
    assert not np.allclose(a_mem.actions, a_blank.actions)  # with "done place" it restores; blank: places again
