"""``teacher.kind=openpi`` (:class:`OpenpiTeacher`) against a stand-in openpi policy server written here from openpi's
documented protocol (FACTS.md, "openpi's policy-server protocol"): plain ``websockets`` and openpi-client's own
msgpack-numpy codec, not our server and not our codec.
"""

import subprocess
import sys
import threading
import time
import traceback

import numpy as np
import pytest
from openpi_client import msgpack_numpy as upstream
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

from robot_rl.cli import DEFAULT_CONFIG
from robot_rl.runs import RunDir
from robot_rl.teachers import TeacherRequest
from robot_rl.teachers.openpi import OpenpiTeacher, chunk_to_delta
from robot_rl.teachers.remote import TeacherServerError, free_port
from robot_rl.teachers.wire import openvla_to_env

H, D = 10, 4


def chunk(obs) -> np.ndarray:
    """An ``(H, 7)`` chunk whose rows tell apart: position grows with the row, the gripper is ``-1 + 0.2 j``."""
    j = np.arange(H, dtype=np.float64)[:, None]
    rows = np.hstack([0.01 * (j + 1), np.full((H, 1), -0.02), np.zeros((H, 1)), np.full((H, 1), 0.03),
                      np.zeros((H, 2)), -1.0 + 0.2 * j])
    return (rows + float(np.asarray(obs.get("observation/state", [0.0]))[0])).astype(np.float32)


class StandIn:
    """openpi's ``WebsocketPolicyServer`` as documented: metadata on connect, msgpack-numpy frames, errors as a text
    frame with the traceback then close 1011, ``server_timing`` with ``prev_total_ms`` from the second reply on.

    Args:
        policy: obs -> actions; raising is an error frame.
        metadata: sent on connect.
        api_key: when set, a handshake without ``Authorization: Api-Key <key>`` gets HTTP 401.
    """

    def __init__(self, policy=chunk, metadata=None, api_key=None):
        self.policy, self.metadata, self.api_key = policy, metadata or {}, api_key
        self.received, self.headers, self.connections = [], [], 0
        self.server = serve(self._handler, "127.0.0.1", 0, compression=None, max_size=None,
                            process_request=self._check_key)
        self.port = self.server.socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _check_key(self, connection, request):
        if self.api_key is not None and request.headers.get("Authorization") != f"Api-Key {self.api_key}":
            return connection.respond(401, "bad api key\n")
        return None

    def _handler(self, ws):
        self.connections += 1
        self.headers.append(ws.request.headers.get("Authorization"))
        ws.send(upstream.packb(self.metadata))
        prev_total = None
        while True:
            try:
                start = time.monotonic()
                obs = upstream.unpackb(ws.recv())
                self.received.append(obs)
                infer = time.monotonic()
                action = {"actions": self.policy(obs), "policy_timing": {"infer_ms": 0.1}}
                action["server_timing"] = {"infer_ms": 1000 * (time.monotonic() - infer)}
                if prev_total is not None:
                    action["server_timing"]["prev_total_ms"] = prev_total * 1000
                ws.send(upstream.packb(action))
                prev_total = time.monotonic() - start
            except ConnectionClosed:
                return
            except Exception:
                ws.send(traceback.format_exc())
                ws.close(1011, "Internal server error. Traceback included in previous frame.")
                return

    def close(self):
        self.server.shutdown()


@pytest.fixture
def stand_in():
    servers = []

    def make(**kw):
        servers.append(StandIn(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def request(n=2, image=True):
    rng = np.random.default_rng(0)
    return TeacherRequest([f"push {i}" for i in range(n)], states=rng.uniform(0, 0.001, (n, 20)).astype(np.float32),
                          images=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8) if image else None,
                          task_ids=["RRL-PushCube-Sparse-v1"] * n)


def test_libero_keys_sent_and_chunk_summed_over_d_steps(stand_in):
    server = stand_in(metadata={"model_id": "pi0-standin"})
    teacher = OpenpiTeacher(server.url, observation_keys={"task_id": "task_id"}, control_period_steps=D,
                            api_key="k3y", connect_timeout_s=5)
    req = request()
    out = teacher.act(req)
    assert teacher.spec.model_id == "pi0-standin" and teacher.spec.needs_image and teacher.spec.needs_state
    assert server.headers[0] == "Api-Key k3y"
    assert len(server.received) == 2
    received = sorted(server.received, key=lambda obs: obs["prompt"])  # the rows went out concurrently
    for i, obs in enumerate(received):
        assert set(obs) == {"observation/image", "observation/wrist_image", "observation/state", "prompt", "task_id"}
        np.testing.assert_array_equal(obs["observation/image"], req.images[i])
        assert obs["observation/wrist_image"].dtype == np.uint8 and not obs["observation/wrist_image"].any()
        assert obs["observation/state"].dtype == np.float32
        np.testing.assert_array_equal(obs["observation/state"], req.states[i])
        assert obs["prompt"] == f"push {i}" and obs["task_id"] == "RRL-PushCube-Sparse-v1"
    for i in range(2):
        rows = chunk(received[i]).astype(np.float64)
        want = rows[:D].sum(0)
        want[6] = rows[D - 1, 6]  # the gripper of the last row the period uses: -1 + 0.2 * 3
        np.testing.assert_allclose(out.actions[i], want, atol=1e-6)
    assert out.latency_s.shape == (2,) and (out.latency_s > 0).all() and out.answer_times_s is not None
    teacher.close()


def test_rows_spanning_several_env_steps_and_the_openvla_convention(stand_in):
    server = stand_in()
    teacher = OpenpiTeacher(server.url, convention="openvla", action_steps=3, control_period_steps=D,
                            observation_keys={"image": None, "wrist_image": None}, connect_timeout_s=5)
    out = teacher.act(request(1, image=False))
    assert set(server.received[0]) == {"observation/state", "prompt"} and not teacher.spec.needs_image
    rows = chunk(server.received[0]).astype(np.float64)
    raw = rows[0] + rows[1] / 3.0  # D = 4 env steps: row 0's 3 steps and 1 of row 1's
    raw[6] = rows[1, 6]
    np.testing.assert_allclose(out.actions[0], openvla_to_env(raw), atol=1e-5)
    np.testing.assert_allclose(chunk_to_delta(rows[:1], 4, 4), rows[0], atol=1e-6)  # H = 1, one row per period
    teacher.close()


def test_action_steps_from_metadata_and_submit(stand_in):
    server = stand_in(policy=lambda obs: np.array([[0.5, 0, 0, 0, 0, 0, 1.0]]),
                      metadata={"openpi": {"action_steps": D}, "control_period_steps": D})
    teacher = OpenpiTeacher(server.url, connect_timeout_s=5, observation_keys={"image": None})
    assert teacher.action_steps == D and teacher.spec.control_period_steps == D
    pending = teacher.submit(request(3, image=False))
    out = pending.result(10)
    np.testing.assert_allclose(out.actions, [[0.5, 0, 0, 0, 0, 0, 1.0]] * 3, atol=1e-6)
    assert pending.done() and (pending.age_s() > 0).all()
    teacher.close()


def test_short_chunk_is_no_guidance_then_back_off(stand_in):
    server = stand_in(policy=lambda obs: np.zeros((2, 7), np.float32))
    teacher = OpenpiTeacher(server.url, control_period_steps=D, backoff_s=30, connect_timeout_s=5,
                            observation_keys={"image": None})
    out = teacher.act(request(1, image=False))
    assert np.isnan(out.actions).all() and "the chunk has 2 rows" in out.extras["error"]
    assert teacher.stats.failures == 1
    assert np.isnan(teacher.act(request(1, image=False)).actions).all() and teacher.stats.skipped == 1
    teacher.close()


def test_error_frame_raises_on_the_first_query_then_counts_as_a_failure(stand_in):
    fail = {"now": True}

    def policy(obs):
        if fail["now"]:
            raise KeyError("observation/wrist_image")
        return chunk(obs)

    server = stand_in(policy=policy)
    teacher = OpenpiTeacher(server.url, control_period_steps=D, backoff_s=0, connect_timeout_s=5,
                            observation_keys={"image": None})
    with pytest.raises(TeacherServerError, match="KeyError: 'observation/wrist_image'"):
        teacher.act(request(1, image=False))
    fail["now"] = False
    assert np.isfinite(teacher.act(request(1, image=False)).actions).all()  # a fresh connection
    fail["now"] = True
    assert np.isnan(teacher.act(request(1, image=False)).actions).all() and teacher.stats.failures == 1
    fail["now"] = False
    assert np.isfinite(teacher.act(request(1, image=False)).actions).all() and teacher.stats.reconnects == 1
    assert server.connections == 4  # each error frame closed its connection; the client opened a new one
    teacher.close()


def test_refused_key_and_no_server(stand_in):
    server = stand_in(api_key="right")
    with pytest.raises(TeacherServerError, match="401"):
        OpenpiTeacher(server.url, api_key="wrong", connect_timeout_s=5)
    with pytest.raises(ConnectionError, match="no openpi server"):
        OpenpiTeacher(f"ws://127.0.0.1:{free_port()}", connect_timeout_s=0.5)
    with pytest.raises(ValueError, match="observation_keys: unknown field"):
        OpenpiTeacher(server.url, observation_keys={"depth": "x"})


@pytest.mark.slow
def test_training_smoke_run_against_the_stand_in(stand_in, tmp_path):
    """A real (short) training run with teacher.kind=openpi: guided, no failed query, the stand-in saw our state."""
    server = stand_in(policy=lambda obs: np.tile([[0.2, 0.0, 0.1, 0, 0, 0, 1.0]], (H, 1)).astype(np.float32))
    cmd = [sys.executable, "-m", "robot_rl.cli", "train", "--config", str(DEFAULT_CONFIG), "total_steps=256",
           "ppo.n_steps=64", "ppo.batch_size=64", "ppo.n_epochs=1", "run.eval_episodes=0", "run.progress_bar=false",
           "env.num_envs=2", "guidance.n_min=4", f"run.out_dir={tmp_path}", "run.name=r", "teacher.kind=openpi",
           f"teacher.url=http://127.0.0.1:{server.port}", "teacher.image_key=null",
           "teacher.wrist_image_key=null", "teacher.task_id_key=task_id", "teacher.action_steps=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    last = RunDir(tmp_path / "r").read_metrics()[-1]
    assert last["guidance/queries"] > 0 and last["guidance/guided_steps"] > 0
    assert last["guidance/invalid_answers"] == 0 and last["teacher/failures"] == 0
    assert server.received and set(server.received[0]) == {"observation/state", "prompt", "task_id"}
    assert server.received[0]["observation/state"].dtype == np.float32
