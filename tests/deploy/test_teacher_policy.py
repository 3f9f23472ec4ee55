"""A policy that observes the teacher group, exported by the real export path and run without ROS.

- the sidecar's ``teacher`` section (period, features, delay model, semantics), format still 2;
- direct evaluation with the scripted teacher's answers a fixed number of steps late (the trainer's evaluation
  guidance), where the hint is what solves the hidden-goal task: it fails without answers in time;
- the controller: the privileged state it sends is the simulator's, a dead teacher never trips the watchdog (nor does
  the goal pose, which only the teacher reads, going stale), the hint reaches the policy once an answer arrives;
- refusals that name the key: no ``teacher.url``, no period for an old sidecar, ``delay_steps`` misuse.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from robot_rl.deploy.config import load_deploy_config
from robot_rl.deploy.ros_io import ENTITY_POSE_INPUTS, ENTITY_SIZE_INPUTS, joint_state_msg, pose_msg, size_msg
from robot_rl.deploy.safety import Command
from robot_rl.deploy.teacher import TeacherAnswer
from robot_rl.testing.deploy_run import ManualLink, sim_config_offline_teacher
from robot_rl.testing.hint_policy import HINT_FEATURES, HINT_TASK

pytestmark = pytest.mark.slow

SIM = Path(__file__).resolve().parents[2] / "configs" / "deploy" / "sim.yaml"
HOLD = 6.0


@pytest.fixture(scope="module")
def hint_policy(tmp_path_factory):
    from robot_rl.deploy.export import export_policy
    from robot_rl.testing.hint_policy import make_hint_following_run

    return export_policy(make_hint_following_run(tmp_path_factory.mktemp("runs"), hold_steps=HOLD).path)





def _feed(c, st, t, *, goal=True):
    a = c.assembler
    a.update_joint_state(joint_state_msg(c.cfg.joint_names, st["qpos"], st["qvel"], t), t)
    for entity, size in st["sizes"].items():
        a.update_size(ENTITY_SIZE_INPUTS[entity], size_msg(size, entity, t), t)
    for entity, pose in st["poses"].items():
        if entity != "tcp" and (goal or entity != "goal"):
            a.update_pose(ENTITY_POSE_INPUTS[entity], pose_msg(*pose, "panda_link0", t), t)
    a.update_pose("ee_pose", pose_msg(*st["poses"]["tcp"], "panda_link0", t), t)


def test_the_sidecar_carries_the_teacher_section(hint_policy):
    from robot_rl.deploy.policy import OnnxPolicy

    side = json.loads((hint_policy / "policy.json").read_text())
    assert side["format_version"] == 2
    t = side["teacher"]
    assert t["control_period_steps"] == 4 and abs(t["control_period_s"] - 0.2) < 1e-12
    assert t["features"] == list(HINT_FEATURES) and t["task_id"] == HINT_TASK
    assert t["training_delay"] == {"kind": "none"} and t["training_teacher"] == {"kind": "scripted"}
    for key in ("query", "hint_valid", "dt", "dp", "instruction"):
        assert t[key]
    policy = OnnxPolicy(hint_policy)
    assert policy.schema.describe_sizes() == "state 32 + teacher 16 = 48"


def test_direct_evaluation_with_the_scripted_teacher_late_by_fixed_steps(hint_policy):
    from robot_rl.deploy.sim_bridge import evaluate_direct

    details = {}
    on_time = evaluate_direct(hint_policy, HINT_TASK, seed=0, episodes=4, delay_steps=1, details=details)
    assert [r["seed"] for r in on_time] == [0, 1, 2, 3]
    assert sum(r["success"] for r in on_time) >= 3
    assert details["interface/delivered"] > 0 and details["interface/delay_steps_max"] == 1
    late = evaluate_direct(hint_policy, HINT_TASK, seed=0, episodes=4, delay_steps=8)
    assert sum(r["success"] for r in late) <= 1  # the hint is what solves it: held too long it misleads
    with pytest.raises(ValueError, match="give delay_steps"):
        evaluate_direct(hint_policy, HINT_TASK, episodes=1)


def test_controller_sends_the_privileged_state_and_a_dead_teacher_never_trips_the_watchdog(hint_policy):
    from robot_rl.deploy.controller import PolicyController
    from robot_rl.deploy.sim_bridge import state_in_base
    from robot_rl.envs import make_env, privileged_state

    link = ManualLink()
    c = PolicyController(hint_policy, sim_config_offline_teacher(), teacher_link=link)
    a = c.assembler
    assert a.required_inputs == ("joint_states", "ee_pose", "object_pose")  # the policy's state: no goal
    assert set(a.teacher_inputs) == {"goal_pose", "object_size"}  # what only the teacher's state reads
    env = make_env(HINT_TASK, seed=None)
    try:
        env.reset(seed=2)
        st = state_in_base(env.unwrapped)
        want = privileged_state(env.unwrapped)[0]
    finally:
        env.close()
    t = 100.0
    _feed(c, st, t)
    c.activate()
    r = c.step(t + 0.002)
    assert isinstance(r.decision, Command) and r.query is not None and link.queries == [r.query]
    exact = np.ones(38, bool)
    exact[17] = False  # the grasp flag, computed the robot's way
    np.testing.assert_array_equal(r.query.state[exact], want[exact])
    assert r.query.state_stamp_s == t and r.query.image_stamp_s is None and r.query.episode_step == 0
    assert r.teacher["in_flight"] and not r.teacher["valid"]
    # One second of steps: the teacher never answers, the goal pose (read only by the teacher) is never re-sent.
    for k in range(1, 21):
        _feed(c, st, t + 0.05 * k, goal=False)
        r = c.step(t + 0.05 * k + 0.002)
        assert isinstance(r.decision, Command), r.decision  # never a stale_input hold
        assert r.query is None  # one query in flight at a time
    assert r.teacher["in_flight"] and r.teacher["age_s"] is None
    diag = c.diagnostics()
    assert diag["holds_total"] == 0 and diag["hold.stale_input"] == 0 and diag["commands_total"] == 21
    # the answer arrives: the policy follows the hint from this step on
    hint = np.array([0.6, -1.2, -0.3, 0.0, 0.3, 0.0, -1.0], np.float32)
    link.answers = [TeacherAnswer(link.queries[0].query_id, hint, None, t + 1.03)]
    _feed(c, st, t + 1.05, goal=False)
    r = c.step(t + 1.052)
    assert r.teacher_answers[0][1] == "delivered" and r.teacher["valid"]
    assert abs(r.teacher["age_s"] - 1.052) < 1e-9  # from the query's EE pose stamp
    np.testing.assert_allclose(r.action[:6], hint[:6] / HOLD, atol=1e-6)
    assert r.action[6] == pytest.approx(-1.0)
    # an answer that is not (7,) finite numbers in range is never shown
    c.new_episode()
    r = c.step(t + 1.10)
    link.answers = [TeacherAnswer(r.query.query_id, np.full(7, np.nan, np.float32), None, t + 1.11)]
    r = c.step(t + 1.15)
    assert r.teacher_answers[0][1] == "invalid" and not r.teacher["valid"] and np.allclose(r.action[:6], 0)
    assert c.diagnostics()["teacher.invalid"] == 1


def test_refusals_name_what_is_wrong(hint_policy, tmp_path):
    from robot_rl.deploy.controller import PolicyController

    with pytest.raises(ValueError, match=r"teacher group \(hint, hint_valid, dt, dp\) but teacher\.url is not set"):
        PolicyController(hint_policy, load_deploy_config(SIM, ["teacher.url=null"]))
    old = tmp_path / "old"
    shutil.copytree(hint_policy, old)
    side = json.loads((old / "policy.json").read_text())
    del side["teacher"]
    (old / "policy.json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match=r"no teacher section.*teacher\.period_steps"):
        PolicyController(old, sim_config_offline_teacher())
    assert PolicyController(old, sim_config_offline_teacher("teacher.period_steps=4")).teacher.period_steps == 4
