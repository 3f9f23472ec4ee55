"""The ROS node's teacher, without ROS: which answers become the hint, when to query, Δt and Δp from stamps.

- answers that are NaN, of the wrong shape or out of range are dropped and counted, never shown;
- an answer to a query made before an episode reset is dropped and counted; the group resets;
- Δt is the time from the query's stamp (the image's, else the EE pose's) to the step, Δp the motion the robot
  reported between them (by hand, against scipy);
- the query schedule: none in flight, the last answer played out over D periods, back-off doubling on failures;
- the HTTP client against a real teacher server on loopback (a backend that reads images; one that plans from the
  privileged state), and against a server that is down;
- the controller with an exported hint-following policy: a dead teacher never trips the watchdog; a policy with a
  teacher group and no ``teacher.url`` is refused, naming the key.
"""

import time
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robot_rl.deploy.teacher import (
    DELIVERED,
    DROPPED_RESET,
    FAILED,
    INVALID,
    UNKNOWN,
    RecordedAnswers,
    TeacherAnswer,
    TeacherChannel,
    TeacherClient,
)
from robot_rl.interface.delayed import teacher_group

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "deploy"
FEATURES = ("hint", "hint_valid", "dt", "dp")
PERIOD = 0.05
D = 4
GROUP = teacher_group(FEATURES)
S = {f.name: s for f, s in zip(GROUP.fields, GROUP.field_slices().values())}


def _channel(**kw) -> TeacherChannel:
    return TeacherChannel(FEATURES, D, PERIOD, "push the cube to the goal region", "RRL-PushCube-HiddenGoal-v1", **kw)


class _History:
    """A robot that reports a TCP pose and gripper width per stamp (what ObservationAssembler.motion_at gives)."""

    def __init__(self):
        self.poses = {}

    def add(self, stamp, pos, rotvec, width):
        q = Rotation.from_rotvec(rotvec).as_quat()  # xyzw
        self.poses[stamp] = (np.asarray(pos, float), np.array([q[3], q[0], q[1], q[2]]), float(width))

    def __call__(self, stamp):
        return self.poses[max(t for t in self.poses if t <= stamp + 1e-9)]


def _answer(query, actions, t, **kw):
    actions = None if actions is None else np.asarray(actions, np.float32)
    return TeacherAnswer(query.query_id, actions, kw.pop("error", None), t, **kw)


HINT = [0.4, -0.8, -1.2, 0.1, 0.0, -0.2, -1.0]


def _step(ch, now, motion):
    ch.begin_step()
    return ch.features_now(now, motion)


def test_dt_and_dp_are_measured_from_the_query_stamp_by_hand():
    h = _History()
    h.add(10.00, [0.10, 0.00, 0.20], [0, 0, 0], 0.08)
    h.add(10.05, [0.12, 0.01, 0.19], [0.0, 0.0, 0.1], 0.07)
    h.add(10.10, [0.15, 0.03, 0.17], [0.05, 0.0, 0.3], 0.05)
    ch = _channel()
    f = _step(ch, 10.002, h(10.00))
    assert not f.any()  # before the first answer every feature is 0
    assert ch.query_due(10.002)
    q = ch.make_query(10.002, 10.00, h)
    assert ch.in_flight and not ch.query_due(10.002)
    _step(ch, 10.052, h(10.05))
    assert ch.receive(_answer(q, HINT, 10.03), 10.052) == DELIVERED
    f = ch.features_now(10.052, h(10.05))
    np.testing.assert_allclose(f[S["hint"]], HINT, atol=1e-6)
    assert f[S["hint_valid"]][0] == 1.0
    np.testing.assert_allclose(f[S["dt"]], [0.052], atol=1e-6)
    # a step later: the same hint, older, and the motion since the query's stamp
    f = _step(ch, 10.103, h(10.10))
    np.testing.assert_allclose(f[S["dt"]], [0.103], atol=1e-6)
    np.testing.assert_allclose(f[S["dp_pos"]], [0.05, 0.03, -0.03], atol=1e-6)
    r_q, r_t = Rotation.from_rotvec([0, 0, 0]), Rotation.from_rotvec([0.05, 0.0, 0.3])
    np.testing.assert_allclose(f[S["dp_rot"]], (r_q.inv() * r_t).as_rotvec(), atol=1e-6)
    np.testing.assert_allclose(f[S["dp_width"]], [-0.03], atol=1e-6)
    st = ch.status(10.103)
    assert st["answers"] == 1 and st["valid"] and not st["in_flight"] and abs(st["age_s"] - 0.103) < 1e-9
    assert abs(st["last_delay_s"] - 0.052) < 1e-9


def test_with_an_image_dt_and_dp_count_from_the_image_stamp():
    h = _History()
    h.add(5.00, [0.0, 0.0, 0.1], [0, 0, 0], 0.04)
    h.add(5.05, [0.0, 0.02, 0.1], [0, 0, 0], 0.04)
    ch = _channel()
    _step(ch, 5.051, h(5.05))
    q = ch.make_query(5.051, 5.05, h, image=(5.00, np.zeros((8, 8, 3), np.uint8)))
    assert q.image_stamp_s == 5.00 and q.state_stamp_s == 5.05
    f = _step(ch, 5.101, h(5.05))
    assert ch.receive(_answer(q, HINT, 5.09, used_image=True), 5.101) == DELIVERED
    f = ch.features_now(5.101, h(5.05))
    np.testing.assert_allclose(f[S["dt"]], [0.101], atol=1e-6)  # from the image, 50 ms older than the state
    np.testing.assert_allclose(f[S["dp_pos"]], [0.0, 0.02, 0.0], atol=1e-6)


@pytest.mark.parametrize("actions", [[np.nan, 0, 0, 0, 0, 0, 1], [0.0] * 6, [0.0] * 8, [D + 0.5, 0, 0, 0, 0, 0, 1],
                                     [0, 0, 0, 0, 0, 0, 1.5], [np.inf, 0, 0, 0, 0, 0, -1], []])
def test_nan_wrong_shape_or_out_of_range_answers_are_dropped_and_counted(actions):
    h = _History()
    h.add(1.0, [0, 0, 0.1], [0, 0, 0], 0.0)
    ch = _channel()
    _step(ch, 1.0, h(1.0))
    q = ch.make_query(1.0, 1.0, h)
    _step(ch, 1.05, h(1.0))
    assert ch.receive(_answer(q, actions, 1.04), 1.05) == INVALID
    f = ch.features_now(1.05, h(1.0))
    assert not f.any()  # never placed in the observation
    assert ch.stats.invalid == 1 and ch.stats.answers == 0 and not ch.in_flight
    assert not ch.query_due(1.10) and ch.query_due(1.05 + 0.5)  # back-off before the next query


def test_an_answer_to_a_query_before_an_episode_reset_is_dropped_and_the_group_resets():
    h = _History()
    h.add(1.0, [0, 0, 0.1], [0, 0, 0], 0.0)
    ch = _channel()
    _step(ch, 1.0, h(1.0))
    q0 = ch.make_query(1.0, 1.0, h)
    _step(ch, 1.05, h(1.0))
    assert ch.receive(_answer(q0, HINT, 1.01), 1.05) == DELIVERED
    _step(ch, 1.25, h(1.0))
    q1 = ch.make_query(1.25, 1.0, h)  # in flight when the episode ends
    ch.reset()
    f = _step(ch, 1.30, h(1.0))
    assert not f.any() and not ch.hint_valid and ch.status(1.30)["age_s"] is None
    assert not ch.in_flight and ch.query_due(1.30)  # the orphan does not block the new episode's first query
    q2 = ch.make_query(1.30, 1.0, h)
    assert q2.episode == q1.episode + 1 and q2.episode_step == 0
    assert ch.receive(_answer(q1, HINT, 1.31), 1.35) == DROPPED_RESET
    assert not ch.features_now(1.35, h(1.0)).any()
    assert ch.receive(_answer(q2, HINT, 1.36), 1.40) == DELIVERED
    assert ch.receive(_answer(q2, HINT, 1.36), 1.40) == UNKNOWN  # answered twice: the second is unknown
    s = ch.stats
    assert (s.queries, s.answers, s.dropped_reset, s.unknown, s.resets) == (3, 2, 1, 1, 1)


def test_query_schedule_plays_out_D_periods_and_backs_off_on_failures():
    h = _History()
    h.add(0.0, [0, 0, 0.1], [0, 0, 0], 0.0)
    ch = _channel(backoff_s=0.2, max_backoff_s=0.5)
    q = ch.make_query(0.0, 0.0, h)
    assert ch.receive(_answer(q, HINT, 0.01), 0.05) == DELIVERED
    # delivered at step 0.05: due D = 4 periods later (0.25), not at 0.20 (3 periods)
    assert not ch.query_due(0.20) and ch.query_due(0.25)
    fails, t = [], 0.25
    for _ in range(4):
        q = ch.make_query(t, 0.0, h)
        assert ch.receive(_answer(q, None, t + 0.01, error="ConnectionError: refused"), t + 0.05) == FAILED
        wait = next(k * 0.05 for k in range(1, 100) if ch.query_due(t + 0.05 + k * 0.05 + 1e-9))
        fails.append(round(wait, 2))
        t = t + 0.05 + wait
    assert fails == [0.2, 0.4, 0.5, 0.5]  # doubling, capped
    assert ch.stats.failures == 4 and ch.hint_valid  # the old hint stays: it ages
    q = ch.make_query(t, 0.0, h)
    assert ch.receive(_answer(q, HINT, t + 0.01), t + 0.05) == DELIVERED
    assert not ch.failing


def test_recorded_answers_feed_at_their_steps_and_json_round_trip():
    a = TeacherAnswer(3, np.array(HINT, np.float32), None, 12.5, True, "scripted", 0.004)
    b, extra = TeacherAnswer.from_json(a.to_json(step_s=12.55, outcome="delivered"))
    assert extra == {"step_s": 12.55, "outcome": "delivered"}
    assert (b.query_id, b.used_image, b.model_id) == (3, True, "scripted") and np.array_equal(b.actions, a.actions)
    link = RecordedAnswers([(12.55, b), (12.45, a)])
    assert link.poll(12.40) == [] and link.poll(12.45) == [a] and link.poll(12.60) == [b]
    assert link.late == 1 and link.fed == 2 and link.left == 0
    with pytest.raises(ValueError, match="no 'query_id'"):
        TeacherAnswer.from_json('{"actions": null}')


# ------------------------------------------------------------------------------------------------
# The HTTP client against real servers on loopback


def _wait(client, n=1, timeout_s=10.0):
    out, end = [], time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < end:
        out += client.poll()
        time.sleep(0.005)
    return out


def test_client_sends_the_image_and_stamps_to_a_backend_that_reads_images():
    from robot_rl.teachers.server import ServerInfo, create_app
    from robot_rl.testing.server import ServerThread
    from robot_rl.testing.teachers import NotesTeacher

    backend = NotesTeacher(needs_image=True)
    h = _History()
    h.add(1.9, [0, 0, 0.1], [0, 0, 0], 0.0)
    h.add(2.0, [0, 0, 0.1], [0, 0, 0], 0.0)
    with ServerThread(create_app(ServerInfo("notes", backend, 16, 0.0))) as url:
        client = TeacherClient(url)
        try:
            ch = _channel()
            ch.begin_step()
            image = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
            q = ch.make_query(2.03, 2.0, h, image=(1.95, image))
            client.submit(q)
            (answer,) = _wait(client)
            assert answer.error is None and answer.used_image and answer.model_id == "notes"
            assert client.spec.needs_image and not client.spec.needs_state
            (req,) = backend.requests
            np.testing.assert_array_equal(req.images[0], image)
            assert req.obs_times_s.tolist() == [1.95] and req.obs_steps.tolist() == [0]  # the image's stamp
            assert req.task_ids == ["RRL-PushCube-HiddenGoal-v1"]
            # no image: the backend needs one, the query fails without a request
            q = ch.make_query(2.05, 2.0, h)
            client.submit(q)
            (failed,) = _wait(client)
            assert failed.actions is None and "reads images" in failed.error and len(backend.requests) == 1
        finally:
            client.close()


def test_client_against_the_scripted_backend_and_a_server_that_is_down():
    from robot_rl.teachers.remote import free_port
    from robot_rl.teachers.scripted import ScriptedTeacher
    from robot_rl.teachers.server import ServerInfo, create_app
    from robot_rl.testing.server import ServerThread

    h = _History()
    h.add(2.0, [0, 0, 0.1], [0, 0, 0], 0.0)
    state = np.zeros(38, np.float32)
    state[0:3], state[3:7] = [-0.5, 0.0, 0.1], [0, 1, 0, 0]
    state[7:10], state[14:17], state[19] = [0.0, 0.0, 0.02], [0.2, 0.0, 0.001], 0.02
    with ServerThread(create_app(ServerInfo("scripted", ScriptedTeacher(control_period_steps=D), 16, 0.0))) as url:
        client = TeacherClient(url)
        try:
            ch = _channel()
            q = ch.make_query(2.0, 2.0, h, state=state)
            client.submit(q)
            (answer,) = _wait(client)
            assert answer.error is None and not answer.used_image and client.spec.needs_state
            assert ch.receive(answer, 2.05) == DELIVERED
            q = ch.make_query(2.3, 2.0, h)  # no privileged state: this backend cannot answer
            client.submit(q)
            (failed,) = _wait(client)
            assert "privileged state" in failed.error
        finally:
            client.close()
    down = TeacherClient(f"http://127.0.0.1:{free_port()}", timeout_s=0.5, connect_timeout_s=0.5)
    try:
        t0 = time.monotonic()
        down.submit(_channel().make_query(2.0, 2.0, h))
        (failed,) = _wait(down)
        assert failed.actions is None and "Connection" in failed.error and time.monotonic() - t0 < 2.0
    finally:
        down.close()


def test_the_teacher_config_refuses_naming_the_key():
    from robot_rl.config import ConfigError
    from robot_rl.deploy.config import load_deploy_config

    for override, key in (("teacher.timeout_s=0", "teacher.timeout_s"), ("teacher.urll=x", "teacher.urll"),
                          ("teacher.url=gpu-box:8000", "teacher.url"), ("teacher.max_backoff_s=0.1", "max_backoff_s"),
                          ("teacher.period_steps=0", "teacher.period_steps"), ("topics.imag=/cam", "topics.imag")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_deploy_config(CONFIGS / "sim.yaml", [override])
    cfg = load_deploy_config(CONFIGS / "fr3.yaml")
    assert cfg.teacher.url is None and cfg.topics.episode is None and cfg.topics.image is None
