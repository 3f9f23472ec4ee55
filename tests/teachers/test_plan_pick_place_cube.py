"""The PickPlaceCube planner (robot_rl.teachers.plans.pick_place_cube): phases on hand-made states, and
competence as the policy in the real simulator.
"""

import numpy as np
import pytest

from robot_rl.teachers import ScriptedTeacher, TeacherRequest
from robot_rl.teachers.plans import pick_cube
from robot_rl.teachers.plans import pick_place_cube as ppc
from robot_rl.teachers.plans.common import STATE_DIM

TASK = "RRL-PickPlaceCube-Sparse-v1"
DOWN_QUAT = (0.0, 1.0, 0.0, 0.0)  # TCP pointing down, hand x along world +x (initial Panda pose)
GOAL = (0.0, 0.1, 0.001)  # region centre on the table, well inside the reach
HELD_WIDTH = 0.037  # gripper width while holding the 0.04 m cube (measured)


def make_state(tcp, obj, goal=GOAL, grasped=0.0, width=0.08, obj_quat=(1, 0, 0, 0)):
    """One 38-D privileged state row (robot_rl.envs.PRIVILEGED_STATE_LAYOUT); no tool."""
    row = np.concatenate([
        tcp, DOWN_QUAT, obj, obj_quat, goal, [grasped, width, 0.02],
        [1, 0, 0, 0], [0.02, 0.02, 0.02], [0, 0, 0], [1, 0, 0, 0], [0], [0, 0, 0],
    ])
    assert row.shape == (STATE_DIM,)
    return row


def plan(*rows, teacher=None):
    return ppc.plan((teacher or ScriptedTeacher()).motion, np.stack(rows))


def held(cube):
    """A grasp: TCP ~3 mm above the cube centre (as measured), closed on it."""
    cube = np.asarray(cube, float)
    return make_state(cube + [0, 0, 0.003], cube, grasped=1.0, width=HELD_WIDTH)


def test_grasped_low_inside_region_opens_without_moving():
    acts, phases = plan(held((0.01, 0.11, 0.023)), held((-0.03, 0.09, 0.021)))
    assert phases == ["release", "release"]
    assert np.all(acts[:, 6] == 1.0)
    np.testing.assert_allclose(acts[:, :3], 0.0)


def test_grasped_far_from_region_carries_towards_it_low_and_closed():
    cube = np.array([0.0, -0.07, 0.02])  # on the table where it was picked, 0.17 m from the centre
    acts, phases = plan(held(cube))
    assert phases == ["carry"] and acts[0, 6] == -1.0
    to_goal = np.asarray(GOAL[:2]) - cube[:2]
    cos = acts[0, :2] @ to_goal / (np.linalg.norm(acts[0, :2]) * np.linalg.norm(to_goal))
    assert cos > 0.99 and np.abs(acts[0, :3]).max() == pytest.approx(1.0)  # full speed towards the region
    assert acts[0, 2] > 0  # lifts to the carry height
    # already at carry height over the way: no climbing beyond it
    acts, _ = plan(held((0.0, -0.02, 0.02 + ppc.CARRY_DZ)))
    assert abs(acts[0, 2]) < 0.05


def test_grasped_above_region_lowers_it_closed():
    acts, phases = plan(held((0.005, 0.1, 0.05)))
    assert phases == ["lower"] and acts[0, 6] == -1.0
    assert acts[0, 2] < -0.3 and np.abs(acts[0, :2]).max() < 0.1


def test_placed_cube_is_not_grasped_again():
    cube = (0.01, 0.09, 0.02)  # lying in the region, released
    rows = [
        make_state((0.01, 0.09, 0.08), cube),  # above it, open and aligned: pick_cube.plan would descend
        make_state((0.01, 0.09, 0.023), cube, width=0.05),  # fingers still opening around it
        make_state((0.01, 0.09, 0.023), cube, width=0.08),  # open, at the cube
        make_state((0.01, 0.09, 0.023), cube, width=0.0),  # closed but not holding: pick_cube.plan would grasp
    ]
    pick_acts, pick_phases = pick_cube.plan(ScriptedTeacher().motion, np.stack(rows))
    assert pick_phases[0] == "descend" and pick_acts[0, 2] < 0  # what the pick planner alone would do
    acts, phases = plan(*rows)
    assert phases == ["retreat"] * 4
    assert np.all(acts[:, 6] == 1.0)  # open
    assert np.all(acts[:, 2] >= 0.0)  # never down onto it
    np.testing.assert_allclose(acts[[1, 3], :3], 0.0)  # fingers not clear yet: stay until open
    assert acts[2, 2] > 0.3  # open: move up
    np.testing.assert_allclose(acts[2, :2], 0.0, atol=1e-9)  # straight up


def test_cube_dropped_outside_region_is_picked_again():
    cube = (0.05, -0.05, 0.02)
    acts, phases = plan(make_state((0.0, 0.05, 0.12), cube), make_state((0.05, -0.05, 0.021), cube, width=0.08))
    assert phases == ["hover", "grasp"]
    assert acts[0, 6] == 1.0 and acts[1, 6] == -1.0
    # a cube in the region but tilted on an edge (not lying flat) is picked again too
    acts, phases = plan(make_state((0.0, 0.1, 0.09), (0.0, 0.1, 0.035)))
    assert phases == ["descend"] and acts[0, 2] < 0


def test_far_region_aims_inside_the_reach():
    """A region at the edge of the low workspace: the cube is aimed 0.04 m closer to the robot (still
    inside the 0.05 m radius), so lowering starts there instead of pushing out of reach.
    """
    goal = (0.2, 0.0, 0.001)  # 0.815 m from the base
    aim = np.array([-0.615 + 0.815 - ppc.AIM_MAX_PULL, 0.0])  # pulled by the most allowed: 0.775 m, x = 0.16
    cube = np.r_[aim, 0.05]
    acts, phases = plan(make_state(cube + [0, 0, 0.003], cube, goal=goal, grasped=1.0, width=HELD_WIDTH))
    assert phases == ["lower"] and acts[0, 2] < 0
    # carrying from afar: the xy target is the aim point, not the centre
    cube = np.array([0.09, 0.0, 0.02 + ppc.CARRY_DZ])  # 0.07 m short of the aim, 0.11 m of the centre
    acts, phases = plan(make_state(cube + [0, 0, 0.003], cube, goal=goal, grasped=1.0, width=HELD_WIDTH))
    assert phases == ["carry"]
    # period plan at D = 1: half the 0.07 m error (period_gain) over the 0.04 m a unit command moves per
    # step: 0.875; 1.0 (clipped) if it aimed at the centre, 0.11 m away
    assert acts[0, 0] == pytest.approx(0.875, abs=1e-6)
    # released there, 0.04 m from the centre: placed
    cube = np.r_[aim, 0.02]
    _, phases = plan(make_state(cube + [0, 0, 0.03], cube, goal=goal))
    assert phases == ["retreat"]


def test_batch_is_rowwise_and_planned_over_the_period(period_plan_check):
    rows = [held((0.0, -0.07, 0.02)), held((0.01, 0.11, 0.023)), make_state((0.0, 0.05, 0.12), (0.05, -0.05, 0.02)),
            make_state((0.01, 0.09, 0.08), (0.01, 0.09, 0.02))]
    acts, phases = plan(*rows)
    assert acts.shape == (4, 7) and len(phases) == 4
    for i, row in enumerate(rows):
        a, p = plan(row)
        np.testing.assert_allclose(acts[i], a[0])
        assert phases[i] == p[0]
    acts4, phases4 = plan(*rows, teacher=ScriptedTeacher(control_period_steps=4))
    assert phases4 == phases
    period_plan_check(acts, acts4, 4)
    # through the teacher's protocol, by task id
    resp = ScriptedTeacher().act(TeacherRequest([""] * 4, states=np.stack(rows).astype(np.float32),
                                                task_ids=[TASK] * 4))
    assert resp.extras["phases"] == phases
    np.testing.assert_allclose(resp.actions, acts, atol=1e-5)


@pytest.mark.slow
def test_competence_as_policy():
    """Run as the policy (D=1, 50-step horizon) the teacher places the cube in 5 seeded episodes.

    Measured: 50/50 episodes from seed 0 (16-34 steps, mean 23), 200/200 from seed 1000.
    """
    pytest.importorskip("robot_rl.envs")
    from robot_rl.teachers.evaluate import run_teacher_as_policy

    result = run_teacher_as_policy(ScriptedTeacher(), TASK, episodes=5, seed=0)
    assert sum(result["successes"]) >= 4, result
    assert max(result["episode_lengths"]) <= 50
