"""The scripted teacher on the MIKASA-Robo memory tasks (teachers/plans/take_it_back.py, remember_color.py; issue
13): with its own notes kept in a scratchpad and sent back with every query it solves each task as training uses
it (answers held for D = 4 env steps), and every note it writes holds only what that query's view held.

The simulator tests skip when ``mikasa_robo_suite`` is not installed; the planner unit tests do not need it.
"""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.envs.obs_layout import ROBOT_BASE_POS_WORLD
from robot_rl.memory import format_grounding, memory_spec, parse_notes
from robot_rl.teachers import ScriptedTeacher
from robot_rl.teachers.plans import remember_color, take_it_back
from robot_rl.teachers.plans.common import GOAL_POS, OBJ_POS, TCP_POS, TOOL_POS, Motion

_BASE = np.asarray(ROBOT_BASE_POS_WORLD)
_POSITIONS = (TCP_POS, OBJ_POS, GOAL_POS, TOOL_POS)
SEEDS = 3


class _Recording:
    """A teacher that records each request's states, scratchpads, observation steps and the notes answered."""

    def __init__(self, teacher):
        self.teacher, self.spec, self.log = teacher, teacher.spec, []

    def check_request(self, request):
        self.teacher.check_request(request)

    def act(self, request):
        response = self.teacher.act(request)
        self.log.append((np.array(request.states, dtype=np.float64), request.scratchpads,
                         None if request.obs_steps is None else np.array(request.obs_steps), list(response.notes)))
        return response


def _run(task: str, memory: bool):
    pytest.importorskip("mikasa_robo_suite")
    from robot_rl.teachers.evaluate import run_teacher_as_policy

    teacher = _Recording(ScriptedTeacher(control_period_steps=4))
    result = run_teacher_as_policy(teacher, task, SEEDS, seed=0, hold=True, memory=memory)
    return result, teacher.log


def _order(line: str) -> int:
    """Rendering order of a scratchpad line (plan, groundings, acts)."""
    return 0 if line.startswith("plan:") else 1 if line.startswith("seen ") else 2


def _check_notes_from_view(task: str, log) -> int:
    """Every grounding a note holds names a position of its own request row (within 1 mm, base frame); on
    RememberColor3 it names the colour of the one cube on the table in that row. Returns the groundings seen.
    """
    spec = memory_spec(task)
    seen = 0
    for states, pads, steps, notes in log:
        for i, note in enumerate(notes):
            parsed = parse_notes(note, spec)
            assert parsed.dropped == 0 and parsed.truncated == 0, note
            for g in parsed.grounding:
                world = np.asarray(g.pos) + _BASE
                dists = [np.linalg.norm(states[i, sl] - world) for sl in _POSITIONS]
                assert min(dists) < 1e-3, f"{task}: note {g} is not a position of its request's view"
                assert steps is not None and g.step == int(steps[i])
                if task == "RRL-RememberColor3-v0":
                    visible = [states[i, sl][2] < 10 for sl in remember_color.CUBE_SLOTS]
                    assert sum(visible) == 1, "a colour was noted while more than the cue was on the table"
                    k = remember_color.COLORS.index(g.name.removesuffix("_cube"))
                    assert visible[k] and np.linalg.norm(states[i, remember_color.CUBE_SLOTS[k]] - world) < 1e-3
                seen += 1
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("task", ["RRL-TakeItBack-v0", "RRL-RememberColor3-v0"])
def test_solves_with_its_notes_written_from_its_view(task):
    result, log = _run(task, memory=True)
    assert result["success_rate"] == 1.0, result
    assert result["invalid_answers"] == 0
    assert result["memory_stats"]["memory/dropped"] == 0
    assert all(pads is not None for _, pads, _, _ in log), "memory=True sends the scratchpad with every query"
    assert _check_notes_from_view(task, log) >= SEEDS  # at least one grounding per episode
    # each episode's first query sends an empty scratchpad and writes the plan; every later one sends back what the
    # teacher wrote earlier in the episode; a subtask end is noted
    done = {"RRL-TakeItBack-v0": "done to_goal step", "RRL-RememberColor3-v0": "done observe step"}[task]
    written = []
    for _, pads, steps, notes in log:
        if int(steps[0]) == 0:
            assert pads == [""] and notes[0].startswith("plan: ") and "\nseen " in notes[0], notes  # the cue is seen
            written = []
        else:
            assert pads[0].splitlines() == sorted("\n".join(written).splitlines(), key=_order), (pads, written)
        written += [notes[0]] if notes[0] else []
    assert sum(done in n[0] for *_, n in log) == SEEDS


@pytest.mark.slow
def test_without_a_scratchpad_it_acts_on_its_view():
    """A teacher without memory (no scratchpad in the requests) still runs the task to its end; the notes it writes
    are never sent back. Its success is measured in benchmarks/teacher_competence.py (about chance).
    """
    result, log = _run("RRL-RememberColor3-v0", memory=False)
    assert all(pads is None for _, pads, _, _ in log)
    assert result["invalid_answers"] == 0 and len(result["successes"]) == SEEDS


def _rc_state(visible: tuple[bool, bool, bool]) -> np.ndarray:
    s = np.zeros((1, 38))
    s[0, TCP_POS] = [0.0, 0.0, 0.3]
    s[0, 3:7] = [0.0, 1.0, 0.0, 0.0]
    for k, sl in enumerate(remember_color.CUBE_SLOTS):
        s[0, sl] = [0.0, 0.1 * (1 - k), 0.02 if visible[k] else 1000.0]
    return s


def test_remember_color_notes_and_choice():
    """The cue (only the blue cube on the table) is noted; with the note, the blue cube is touched later; without
    a scratchpad the first cube on the table (red) is.
    """
    spec = memory_spec("RRL-RememberColor3-v0")
    motion = Motion(4)
    _, ph, notes = remember_color.plan(motion, _rc_state((False, False, True)), [parse_notes("", spec)],
                                       np.array([0]))
    assert ph == ["observe"]
    pad = parse_notes(notes[0], spec)
    assert pad.plan == ["observe", "touch"] and [g.name for g in pad.grounding] == ["blue_cube"]
    np.testing.assert_allclose(np.asarray(pad.grounding[0].pos) + _BASE, [0.0, -0.1, 0.02], atol=1e-6)
    all_on = _rc_state((True, True, True))
    _, ph, notes = remember_color.plan(motion, all_on, [pad], np.array([12]))
    assert ph == ["touch/blue"] and notes == [""]
    _, ph, notes = remember_color.plan(motion, all_on, [None], np.array([12]))
    assert ph == ["touch/red"] and notes == [""]
    _, ph, _ = remember_color.plan(motion, _rc_state((False, False, False)), [None], np.array([6]))
    assert ph == ["observe"]


def test_take_it_back_targets():
    """Before the goal is reached the cube goes to the goal region; after, with the start noted, back to it;
    without a scratchpad, to the middle start area's centre.
    """
    spec = memory_spec("RRL-TakeItBack-v0")
    s = np.zeros((1, 38))
    s[0, TCP_POS] = [0.0, 0.1, 0.3]
    s[0, 3:7] = [0.0, 1.0, 0.0, 0.0]
    s[0, OBJ_POS] = [0.01, 0.12, 0.02]
    s[0, 10:14] = [1.0, 0.0, 0.0, 0.0]  # obj_quat
    s[0, GOAL_POS] = [0.22, 0.0, 0.001]
    s[0, TOOL_POS] = [0.22, 0.0, 1000.0]
    s[0, 19] = 0.02
    _, ph, notes = take_it_back.plan(Motion(4), s, [parse_notes("", spec)], np.array([0]))
    assert ph[0].startswith("to_goal/")
    assert notes[0].splitlines() == ["plan: to_goal, take_back", format_grounding("cube", s[0, OBJ_POS] - _BASE, 0)]
    pad = parse_notes(notes[0], spec)
    s[0, OBJ_POS] = [0.16, 0.0, 0.045]  # carried into the region; the purple region is on the table
    s[0, TOOL_POS] = [0.22, 0.0, 0.001]
    _, ph, notes = take_it_back.plan(Motion(4), s, [pad], np.array([20]))
    assert ph[0].startswith("take_back/") and notes == ["done to_goal step 20"]
    _, ph, notes = take_it_back.plan(Motion(4), s, [None], np.array([20]))
    assert ph[0].startswith("take_back/") and notes == [""]
    # the aim point lies inside the region (0.08 m radius) and within the arm's low reach (~0.80 m, measured)
    goals = np.array([[0.25, 0.025], [0.25, 0.0], [0.2, -0.025]])  # the farthest and a near goal centre
    aim = take_it_back._aim(goals)
    assert np.all(np.linalg.norm(aim - goals, axis=1) <= take_it_back.GOAL_RADIUS - take_it_back.AIM_MIN_INSIDE + 1e-9)
    assert np.all(np.linalg.norm(aim - _BASE[:2], axis=1) < 0.795)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="states must be"):
        take_it_back.plan(Motion(4), np.zeros((1, 20)), [None], np.array([0]))
    with pytest.raises(ValueError, match="1 states but 2 notes"):
        remember_color.plan(Motion(4), np.zeros((1, 38)), [None, None], np.array([0]))
