"""The ROS node's scratchpad, without ROS: notes from teacher answers into the ``memory`` group, the export that
carries the group, and what an episode reset clears.

- the channel writes a delivered answer's note at the step that delivers it; a failed, invalid or orphaned (episode
  reset) answer loses its own note and nothing else; every query carries the scratchpad text; a reset empties it;
- the group the controller gives the ONNX policy is :meth:`Scratchpad.vector` of the same notes, bit for bit;
- the HTTP client sends the scratchpad to a real teacher server and gets the note back (``NotesTeacher``-like
  :class:`~robot_rl.testing.deploy_run.NotingTeacher`, scripted actions);
- the export of a run with ``memory.enabled`` carries the ``memory`` group (the vocabularies in its components) and a
  ``memory`` section; a tampered group and a missing ``teacher.url`` are refused, naming what is wrong.
"""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from robot_rl.deploy.config import load_deploy_config
from robot_rl.deploy.teacher import (
    DELIVERED,
    DROPPED_RESET,
    FAILED,
    INVALID,
    TeacherAnswer,
    TeacherChannel,
    TeacherClient,
)
from robot_rl.memory import Scratchpad, memory_spec
from robot_rl.testing.deploy_run import ManualLink, sim_config_offline_teacher
from robot_rl.testing.hint_policy import HINT_FEATURES, HINT_TASK

SIM = Path(__file__).resolve().parents[2] / "configs" / "deploy" / "sim.yaml"
SPEC = memory_spec(HINT_TASK)  # the default vocabulary: object, goal, tool; reach, grasp, move, place, ...
HINT = np.array([0.4, -0.8, -1.2, 0.1, 0.0, -0.2, -1.0], np.float32)
NOTE_1 = "plan: reach, move, place\nseen object at 0.100 0.000 0.020 step 3"
NOTE_2 = "seen goal at 0.300 -0.100 0.001 step 7\ndone reach step 7"


def _motion(stamp):
    return np.array([0.0, 0.0, 0.1]), np.array([1.0, 0.0, 0.0, 0.0]), 0.04


def _channel(features=HINT_FEATURES) -> TeacherChannel:
    return TeacherChannel(features, 4, 0.05, "push the cube", HINT_TASK, memory=SPEC)


def _answer(query, t, note, actions=HINT, error=None):
    return TeacherAnswer(query.query_id, None if actions is None else np.asarray(actions, np.float32), error, t,
                         note=note)


def test_a_delivered_answer_writes_its_note_and_a_lost_one_loses_only_its_own():
    ch, ref = _channel(), Scratchpad(SPEC, 1)
    ch.begin_step()
    q0 = ch.make_query(1.0, 1.0, _motion)
    assert q0.scratchpad == ""  # the first query of an episode: an empty scratchpad, sent all the same
    ch.begin_step()
    assert ch.receive(_answer(q0, 1.01, NOTE_1), 1.05) == DELIVERED
    ref.write(0, NOTE_1)
    assert ch.memory_text() == ref.text(0) and np.array_equal(ch.memory_vector(), ref.vector()[0])
    q1 = ch.make_query(1.25, 1.2, _motion)
    assert q1.scratchpad == ref.text(0)  # every query carries the text
    assert ch.receive(_answer(q1, 1.26, "seen tool at 0.5 0.5 0.1 step 9", error="ReadTimeout"), 1.30) == FAILED
    q2 = ch.make_query(2.0, 2.0, _motion)
    assert ch.receive(_answer(q2, 2.01, "done place step 40", actions=np.full(7, np.nan)), 2.05) == INVALID
    np.testing.assert_array_equal(ch.memory_vector(), ref.vector()[0])  # neither note was written
    q3 = ch.make_query(3.0, 3.0, _motion)
    assert ch.receive(_answer(q3, 3.01, NOTE_2), 3.05) == DELIVERED
    ref.write(0, NOTE_2)
    np.testing.assert_array_equal(ch.memory_vector(), ref.vector()[0])  # the lost notes cost nothing else
    assert "done reach step 7" in ch.memory_text()
    m = ch.memory_status()
    assert (m["notes_written"], m["notes_lost"], m["text"]) == (2, 2, ref.text(0))
    # an episode reset: empty scratchpad and no hint; the answer in flight lands nowhere
    q4 = ch.make_query(3.5, 3.5, _motion)
    ch.reset()
    ch.begin_step()
    assert ch.memory_text() == "" and not ch.memory_vector().any() and not ch.hint_valid
    assert ch.receive(_answer(q4, 3.52, "done move step 60"), 3.55) == DROPPED_RESET
    assert ch.memory_text() == "" and not ch.memory_vector().any()
    assert ch.make_query(3.6, 3.6, _motion).scratchpad == ""
    m = ch.memory_status()
    assert (m["notes_written"], m["notes_lost"], m["episode"]) == (2, 3, 1)
    assert ch.diagnostics()["memory.notes_lost"] == 3


def test_a_memory_only_channel_and_notes_that_are_no_entries():
    ch = _channel(features=())
    assert ch.size == 0 and ch.features_now(0.0, None).shape == (0,)
    q = ch.make_query(0.0, 0.0, _motion)
    # bad lines are dropped and counted by the scratchpad, never raised; an answer without a note is counted
    bad = "seen unicorn at 1 2 3 step 4\nhello\nseen object at nan 0 0 step 1\n" + "x" * 3000
    assert ch.receive(_answer(q, 0.01, bad), 0.05) == DELIVERED
    assert ch.memory_text() == "" and ch.memory_status()["dropped"] >= 2
    q = ch.make_query(0.3, 0.3, _motion)
    assert ch.receive(_answer(q, 0.31, None), 0.35) == DELIVERED
    assert ch.memory_status()["silent_answers"] == 1
    with pytest.raises(ValueError, match="features or a memory spec"):
        TeacherChannel((), 4, 0.05, "push", HINT_TASK)
    with pytest.raises(ValueError, match="no scratchpad"):
        TeacherChannel(HINT_FEATURES, 4, 0.05, "push", HINT_TASK).memory_vector()


def test_the_note_round_trips_through_the_recorded_json_line():
    a = TeacherAnswer(5, HINT, None, 12.5, False, "noting", 0.002, NOTE_1)
    b, extra = TeacherAnswer.from_json(a.to_json(step_s=12.55, outcome="delivered", step_index=17))
    assert b.note == NOTE_1 and extra == {"step_s": 12.55, "outcome": "delivered", "step_index": 17}
    old = json.loads(a.to_json())
    del old["note"]  # a recording made before the scratchpad
    assert TeacherAnswer.from_json(json.dumps(old))[0].note is None


def _state() -> np.ndarray:
    from robot_rl.envs.privileged import PRIVILEGED_STATE_DIM
    from robot_rl.envs.privileged import PRIVILEGED_STATE_LAYOUT as L

    s = np.zeros(PRIVILEGED_STATE_DIM, np.float32)
    s[L["tcp_pos"]] = [0.0, 0.0, 0.1]
    s[L["tcp_quat"]] = [0.0, 1.0, 0.0, 0.0]
    s[L["obj_pos"]] = [0.02, -0.01, 0.02]
    s[L["obj_quat"]] = [1.0, 0.0, 0.0, 0.0]
    s[L["goal_pos"]] = [0.1, 0.1, 0.001]
    s[L["obj_half_size"]] = 0.02
    s[L["goal_quat"]] = [1.0, 0.0, 0.0, 0.0]
    return s


def test_the_client_sends_the_scratchpad_to_a_real_server_and_gets_the_note():
    from robot_rl.teachers.server import ServerInfo, create_app
    from robot_rl.testing.deploy_run import NotingTeacher
    from robot_rl.testing.server import ServerThread

    teacher = NotingTeacher()
    ch = _channel()
    with ServerThread(create_app(ServerInfo("noting", teacher, 16, 0.0))) as url:
        client = TeacherClient(url, timeout_s=10.0, connect_timeout_s=5.0)
        try:
            answers = []
            for k in range(2):
                ch.begin_step()
                q = ch.make_query(1.0 + k, 1.0 + k, _motion, state=_state())
                client.submit(q)
                end = time.monotonic() + 20
                got = []
                while not got and time.monotonic() < end:
                    got = client.poll()
                    time.sleep(0.01)
                assert got and got[0].error is None, got
                assert ch.receive(got[0], 1.05 + k) == DELIVERED
                answers.append(got[0])
            assert client.writes_notes is True
        finally:
            client.close()
    first, second = answers
    # positions in the robot base frame (world - (-0.615, 0, 0)); the plan only while the scratchpad was empty
    assert first.note.splitlines() == ["plan: reach, move, place", "seen goal at 0.715 0.100 0.001 step 0",
                                       "seen object at 0.635 -0.010 0.020 step 0"]
    assert second.note == "seen object at 0.635 -0.010 0.020 step 1"
    # the second note has no plan: the server got the scratchpad the first note wrote
    ref = Scratchpad(SPEC, 1)
    ref.write(0, first.note)
    ref.write(0, second.note)
    np.testing.assert_array_equal(ch.memory_vector(), ref.vector()[0])


# ------------------------------------------------------------------------------------------------
# The export and the controller (a real export of a hint-following run with memory.enabled)


@pytest.fixture(scope="module")
def memory_policy(tmp_path_factory):
    from robot_rl.deploy.export import export_policy
    from robot_rl.testing.hint_policy import make_hint_following_run

    return export_policy(make_hint_following_run(tmp_path_factory.mktemp("runs"), hold_steps=6.0,
                                                 memory={"enabled": True, "act_slots": 3}).path)



def _feed(c, t):
    """Fresh joint states, object and end-effector poses stamped ``t`` (s) into controller ``c``'s assembler."""
    from robot_rl.deploy.ros_io import ENTITY_POSE_INPUTS, joint_state_msg, pose_msg

    a = c.assembler
    a.update_joint_state(joint_state_msg(c.cfg.joint_names, [0.0, 0.2, 0.0, -2.0, 0.0, 2.2, 0.8, 0.02, 0.02],
                                         np.zeros(9), t), t)
    a.update_pose(ENTITY_POSE_INPUTS["object"], pose_msg([0.6, 0.0, 0.02], [1, 0, 0, 0], "panda_link0", t), t)
    a.update_pose("ee_pose", pose_msg([0.5, 0.0, 0.1], [0, 1, 0, 0], "panda_link0", t), t)




@pytest.mark.slow
def test_the_export_carries_the_memory_group_and_the_controller_feeds_the_scratchpad(memory_policy):
    from robot_rl.deploy.controller import PolicyController
    from robot_rl.deploy.policy import OnnxPolicy
    from robot_rl.memory import MemorySpec

    side = json.loads((memory_policy / "policy.json").read_text())
    spec = memory_spec(HINT_TASK, act_slots=3)
    policy = OnnxPolicy(memory_policy)
    assert policy.schema.group("memory") == spec.group()  # the schema alone rebuilds the scratchpad
    assert MemorySpec.from_group(policy.schema.group("memory")) == spec
    assert policy.schema.describe_sizes() == f"state 32 + teacher 16 + memory {spec.size} = {48 + spec.size}"
    m = side["memory"]
    assert (m["act_slots"], m["max_note_chars"], m["control_period_steps"]) == (3, 1024, 4)
    assert {r["group"] for r in side["observation"]["layout"]} == {"state", "teacher", "memory"}

    link = ManualLink()
    c = PolicyController(memory_policy, sim_config_offline_teacher(), teacher_link=link)
    sl = policy.schema.group_slices()["memory"]
    seen = {}

    def run(obs):  # the ONNX policy, watched: what it is given
        seen["obs"] = np.array(obs, copy=True)
        return real(obs)

    real, c.policy = c.policy, _Watched(c.policy, run)
    t = 50.0

    _feed(c, t)
    c.activate()
    r = c.step(t + 0.002)
    assert r.query is not None and r.query.scratchpad == "" and not seen["obs"][sl].any()
    ref = Scratchpad(spec, 1)
    link.answers = [TeacherAnswer(r.query.query_id, HINT, None, t + 0.03, note=NOTE_1)]
    _feed(c, t + 0.05)
    r = c.step(t + 0.052)
    ref.write(0, NOTE_1)
    assert r.teacher_answers[0][1] == DELIVERED
    np.testing.assert_array_equal(seen["obs"][sl], ref.vector()[0])  # bit for bit what training feeds
    np.testing.assert_array_equal(r.obs, seen["obs"])
    for k in range(2, 7):  # D = 4 periods later the next query carries the scratchpad text
        _feed(c, t + 0.05 * k)
        r = c.step(t + 0.05 * k + 0.002)
        if r.query is not None:
            break
    assert r.query is not None and r.query.scratchpad == ref.text(0)
    assert c.new_episode()  # ~/reset_episode: the scratchpad and the hint go, the answer in flight is dropped
    link.answers = [TeacherAnswer(r.query.query_id, HINT, None, t + 0.4, note=NOTE_2)]
    _feed(c, t + 0.45)
    r = c.step(t + 0.452)
    assert r.teacher_answers[0][1] == DROPPED_RESET and not seen["obs"][sl].any()
    assert not seen["obs"][policy.schema.group_slices()["teacher"]].any()  # no hint either
    assert c.diagnostics()["memory.notes_lost"] == 1


class _Watched:
    """An :class:`OnnxPolicy` whose calls go through ``fn`` (which calls the real one)."""

    def __init__(self, policy, fn):
        self._policy, self._fn = policy, fn

    def __call__(self, obs):
        return self._fn(obs)

    def __getattr__(self, name):
        return getattr(self._policy, name)


@pytest.mark.slow
def test_a_tampered_memory_group_or_no_teacher_url_is_refused(memory_policy, tmp_path):
    from robot_rl.deploy.controller import PolicyController

    with pytest.raises(ValueError, match=r"memory group \(the scratchpad.*teacher\.url is not set"):
        PolicyController(memory_policy, load_deploy_config(SIM, ["teacher.url=null"]))
    d = tmp_path / "tampered"
    shutil.copytree(memory_policy, d)
    side = json.loads((d / "policy.json").read_text())
    memory = next(g for g in side["observation"]["schema"]["groups"] if g["name"] == "memory")
    pos = next(f for f in memory["fields"] if f["name"] == "ground0_pos")
    pos["unit"] = "mm"  # same sizes, another meaning: not the layout its vocabularies give
    (d / "policy.json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match=r"sidecar .*memory group does not match the scratchpad layout"):
        PolicyController(d, sim_config_offline_teacher())


@pytest.mark.slow
def test_a_memory_only_policy_queries_for_notes_and_its_period_comes_from_the_memory_section(tmp_path):
    from robot_rl.deploy.controller import PolicyController
    from robot_rl.deploy.export import export_policy
    from robot_rl.testing.hint_policy import make_hint_following_run

    d = export_policy(make_hint_following_run(tmp_path, features=(), period_steps=3,
                                              memory={"enabled": True}).path)
    side = json.loads((d / "policy.json").read_text())
    assert "teacher" not in side and side["memory"]["control_period_steps"] == 3
    link = ManualLink()
    c = PolicyController(d, sim_config_offline_teacher(), teacher_link=link)
    assert c.teacher.period_steps == 3 and c.teacher.size == 0 and c.policy.schema.group_names == ("state", "memory")
    t = 10.0

    _feed(c, t)
    c.activate()
    r = c.step(t + 0.002)
    assert r.query is not None and r.query.scratchpad == ""
    link.answers = [TeacherAnswer(r.query.query_id, np.zeros(7, np.float32), None, t + 0.03, note=NOTE_1)]
    _feed(c, t + 0.05)
    r = c.step(t + 0.052)
    ref = Scratchpad(memory_spec(HINT_TASK), 1)
    ref.write(0, NOTE_1)
    np.testing.assert_array_equal(r.obs[c.policy.schema.group_slices()["memory"]], ref.vector()[0])
    assert r.teacher["answers"] == 1 and c.teacher.memory_text() == ref.text(0)


def test_direct_evaluation_of_a_memory_policy_fills_its_scratchpad(memory_policy):
    """The sim bridge's reference (evaluate_direct, no ROS) runs a memory policy with the scripted teacher's notes."""
    from robot_rl.deploy.sim_bridge import evaluate_direct

    details: dict = {}
    episodes = evaluate_direct(memory_policy, HINT_TASK, seed=0, episodes=1, delay_steps=0, details=details)
    assert len(episodes) == 1 and episodes[0]["steps"] > 0
    assert details["guidance/queries"] > 0 and "memory/notes" in details
