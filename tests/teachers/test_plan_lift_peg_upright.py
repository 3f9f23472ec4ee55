"""The LiftPegUpright planner (robot_rl.teachers.plans.lift_peg_upright): phases and action directions on
hand-made states, and competence as the policy in the real simulator.
"""

import math

import numpy as np
import pytest

from robot_rl.geometry import rotation_command_to_delta
from robot_rl.teachers import ScriptedTeacher, TeacherRequest
from robot_rl.teachers.plans import lift_peg_upright as P
from robot_rl.teachers.plans.common import STATE_DIM

TASK = "RRL-LiftPegUpright-Sparse-v1"
DOWN_QUAT = (0.0, 1.0, 0.0, 0.0)  # TCP pointing down, hand x along world +x (initial Panda pose)
HALF_LEN, HALF_W = 0.12, 0.025
HELD_WIDTH = 0.049  # gripper width on the 0.05 m peg at the planner's holding command (measured)


def qmul(a, b):
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return (w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2)


#: The peg as the task spawns it: lying along world x (its own y axis up).
FLAT = (math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0, 0.0)


def peg_quat(elev):
    """The peg turned about world y so its +x end is ``elev`` rad above horizontal (its +x axis in x-z)."""
    return qmul((math.cos(-elev / 2), 0.0, math.sin(-elev / 2), 0.0), FLAT)


def make_state(tcp, peg, peg_q=FLAT, grasped=0.0, width=0.08, tcp_quat=DOWN_QUAT):
    """One 38-D privileged state row (robot_rl.envs.PRIVILEGED_STATE_LAYOUT) of the task; no tool."""
    peg = np.asarray(peg, float)
    row = np.concatenate([
        tcp, tcp_quat, peg, peg_q, [peg[0], peg[1], HALF_LEN], [grasped, width, HALF_W],
        [math.cos(-math.pi / 4), 0, math.sin(-math.pi / 4), 0], [HALF_LEN, HALF_W, HALF_W],
        [0, 0, 0], [1, 0, 0, 0], [0], [0, 0, 0],
    ])
    assert row.shape == (STATE_DIM,)
    return row


def plan(*rows, teacher=None):
    return P.plan((teacher or ScriptedTeacher()).motion, np.stack(rows))


PEG = np.array([0.0, 0.05, HALF_W])  # lying on the table
GRASP = PEG + [P.GRASP_OFFSET, 0.0, 0.0]  # on its axis, near the +x end


def test_before_the_grasp_goes_to_the_far_end_of_the_peg_open():
    rows = [
        make_state((0.01, 0.04, 0.18), PEG),  # start pose, high: over the grasp point, down
        make_state((-0.15, 0.05, 0.1), PEG),  # on the -x side: still the +x end (away from the robot)
        make_state(GRASP + [0, 0, 0.06], PEG),  # above it, open, aligned: straight down
        make_state(GRASP, PEG),  # at it: close, no motion
        make_state((0.3, -0.2, 0.05), PEG, width=0.0),  # closed on nothing: open, rise
    ]
    acts, phases = plan(*rows)
    assert phases == ["approach", "approach", "descend", "grasp", "reopen"]
    assert acts[0, 0] > 0.5 and acts[0, 2] < -0.5 and acts[1, 0] > 0.5
    assert acts[2, 2] < -0.3 and np.abs(acts[2, :2]).max() < 0.05
    np.testing.assert_allclose(acts[3, :3], 0.0)
    assert acts[4, 2] > 0.3
    np.testing.assert_allclose(acts[:, 6], [1, 1, 1, P.GRIP_HOLD, 1])
    # the hand pitches towards the +x end (fingers away from the robot): a physical turn about world -y,
    # which the controller's inverted sign (ManiSkill #1469) makes a positive command
    for a in acts[:4]:
        assert rotation_command_to_delta(a[3:6])[1] < -0.02


def test_held_flat_peg_is_lifted_on_an_arc_over_its_far_end():
    acts, phases = plan(make_state(GRASP, PEG, grasped=1.0, width=HELD_WIDTH))
    assert phases == ["lift"] and acts[0, 6] == P.GRIP_HOLD
    # up, and back towards the far (-x) end the peg will stand on, not sideways
    assert acts[0, 2] > 0.7 and -0.5 < acts[0, 0] < -0.05 and abs(acts[0, 1]) < 1e-6
    # the hand turns with the peg at full rate (0.1 rad/step): fingers tilt towards +x
    np.testing.assert_allclose(rotation_command_to_delta(acts[0, 3:6]), [0, -0.1, 0], atol=2e-3)


def leaning(elev, x=-0.05):
    """A held peg leaning with its +x end up at ``elev`` (rad above horizontal), its bottom edge on the table."""
    axis = np.array([math.cos(elev), 0.0, math.sin(elev)])
    centre = np.array([x, 0.05, HALF_LEN * abs(math.sin(elev)) + HALF_W * abs(math.cos(elev))])
    return make_state(centre + P.GRASP_OFFSET * axis, centre, peg_quat(elev), grasped=1.0, width=HELD_WIDTH)


def test_nearly_upright_peg_is_slid_vertical_and_pressed_down():
    acts, phases = plan(leaning(math.pi / 2 - 0.2), leaning(math.pi / 2 + 0.2), leaning(1.0))
    assert phases == ["stand", "stand", "lift"]
    np.testing.assert_allclose(acts[:, 6], P.GRIP_HOLD)
    # leaning towards +x: the TCP moves over the bottom (-x) in the hand's pitch plane, pressing down
    assert acts[0, 0] < -0.5 and abs(acts[0, 1]) < 1e-6 and acts[0, 2] < -0.05
    # leaning past vertical (towards -x): slide the other way
    assert acts[1, 0] > 0.5 and acts[1, 2] < -0.05
    # 1 rad up: still lifting, up and back on the arc
    assert acts[2, 2] > 0.1 and acts[2, 0] < -0.5


def test_teacher_dispatches_the_task_and_plans_over_the_period(period_plan_check):
    rows = np.stack([make_state((0.01, 0.04, 0.18), PEG), make_state(GRASP, PEG, grasped=1.0, width=HELD_WIDTH)])
    req = TeacherRequest(instructions=[""] * 2, states=rows.astype(np.float32), task_ids=[TASK] * 2)
    r1 = ScriptedTeacher().act(req)
    r3 = ScriptedTeacher(control_period_steps=3).act(req)
    assert r1.extras["phases"] == ["approach", "lift"] == r3.extras["phases"] and r1.actions.shape == (2, 7)
    period_plan_check(r1.actions, r3.actions, 3)
    assert np.abs(r1.actions[:, :3]).max() <= 1 + 1e-6 and np.linalg.norm(r1.actions[:, 3:6], axis=1).max() <= 1 + 1e-3


@pytest.mark.slow
def test_competence_as_policy():
    """Run as the policy, the planner stands the peg up in 5 seeded episodes at the 50-step horizon.

    Measured (seed 0, D=1): 5/5 in 21-24 steps; 49/50 on seeds 0-49 (mean 23 steps). A planner that
    turned the wrong way or held the peg rigidly would solve none.
    """
    pytest.importorskip("robot_rl.envs")
    from robot_rl.teachers.evaluate import run_teacher_as_policy

    result = run_teacher_as_policy(ScriptedTeacher(), TASK, episodes=5, seed=0)
    assert sum(result["successes"]) >= 4, result
    done = [n for n, ok in zip(result["episode_lengths"], result["successes"]) if ok]
    assert max(done) <= 35, result
