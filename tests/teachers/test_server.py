"""Teacher server and client over real HTTP on loopback (uvicorn in a thread, or a real subprocess).

The scripted backend is deterministic with default knobs, so every HTTP answer is compared with
what an in-process ScriptedTeacher says for the same rows.
"""

import json
import socket
import threading
import time

import json_numpy
import numpy as np
import pytest
import requests
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from test_scripted_teacher import PUSH, random_states

from robot_rl.teachers import ScriptedTeacher, TeacherRequest, TeacherRequestError, TeacherResponse
from robot_rl.teachers.remote import PendingAnswer, RemoteTeacher, SpawnedServer, TeacherServerError, free_port
from robot_rl.teachers.server import PROTOCOL_VERSION, DynamicBatcher, ServerInfo, create_app, run_batched
from robot_rl.teachers.wire import env_to_openvla, openvla_to_env
from robot_rl.testing.server import ServerThread
from robot_rl.testing.teachers import NotesTeacher

RNG = np.random.default_rng(0)


def scripted(**kw):
    return ScriptedTeacher(control_period_steps=4, task=PUSH, seed=0, **kw)


def batch_body(states, **extra):
    return json_numpy.dumps({"instructions": ["push the cube"] * len(states), "states": states,
                             "task_ids": [PUSH] * len(states)} | extra)


def expected(states):
    request = TeacherRequest(instructions=[""] * len(states), states=states, task_ids=[PUSH] * len(states))
    return scripted().act(request).actions


@pytest.fixture(scope="module")
def server():
    """A scripted-backend server with a 30 ms batching window and a 1 MiB body limit."""
    info = ServerInfo("scripted", scripted(), max_batch=16, batch_wait_ms=30.0)
    app = create_app(info, max_body_bytes=1024 * 1024)
    with ServerThread(app) as url:
        yield url, app


# ----------------------------------------------------------------------------------------------
# wire conventions


def test_openvla_convention_round_trip_and_hand_values():
    raw = np.array([[0.01, -0.02, 0.005, 0.1, -0.05, 0.0, 1.0], [0, 0, 0, 0, 0, 0.2, 0.0]])
    env = openvla_to_env(raw)
    np.testing.assert_allclose(env[0], [0.1, -0.2, 0.05, -1.0, 0.5, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(env[1], [0, 0, 0, 0, 0, -2.0, -1.0], atol=1e-6)  # gripper 0 (closed) -> -1
    np.testing.assert_allclose(env_to_openvla(env), raw, atol=1e-7)


def test_run_batched_groups_compatible_requests_and_isolates_failures():
    states = random_states(7, RNG)

    class Counting(ScriptedTeacher):
        calls = []

        def act(self, request):
            self.calls.append(len(request))
            if request.task_ids and "boom" in request.instructions:
                raise RuntimeError("boom")
            return super().act(request)

    teacher = Counting(control_period_steps=4, task=PUSH, seed=0)
    reqs = [TeacherRequest([""] * n, states=states[a:a + n], task_ids=[PUSH] * n) for a, n in ((0, 3), (3, 2), (5, 2))]
    out, calls = run_batched(teacher, reqs, max_batch=5)
    assert calls == 2 and teacher.calls == [5, 2]  # 3+2 rows fit one call of 5, the last 2 rows go alone
    np.testing.assert_allclose(np.concatenate([r.actions for r in out]), expected(states), atol=1e-6)
    assert [r.extras["batch_rows"] for r in out] == [5, 5, 2]

    bad = TeacherRequest(["boom"], states=states[:1], task_ids=[PUSH])
    teacher.calls.clear()
    out, calls = run_batched(teacher, [reqs[0], bad], max_batch=16)
    assert isinstance(out[1], RuntimeError) and isinstance(out[0], TeacherResponse)
    assert teacher.calls == [4, 3, 1]  # the combined call failed; each request was retried alone


# ----------------------------------------------------------------------------------------------
# routes


def test_healthz_metadata_and_batch_route(server):
    url, _ = server
    assert requests.get(f"{url}/healthz").json()["status"] == "ok"
    meta = requests.get(f"{url}/metadata").json()
    assert meta["backend"] == "scripted" and meta["control_period_steps"] == 4 and meta["needs_image"] is False
    assert meta["needs_state"] is True and "/act" in meta["action_convention"]
    assert meta["protocol_version"] == PROTOCOL_VERSION == 2
    spec = scripted().spec
    assert {k: meta[k] for k in spec.to_metadata()} == spec.to_metadata()  # /metadata is built from the spec
    states = random_states(5, RNG)
    r = requests.post(f"{url}/act/batch", data=batch_body(states))
    assert r.status_code == 200
    out = json_numpy.loads(r.text)
    assert out["actions"].shape == (5, 7) and out["model_id"] == "scripted" and out["latency_s"] > 0
    assert out["latencies_s"].shape == (5,) and out["latencies_s"].dtype == np.float64 and out["notes"] == [""] * 5
    np.testing.assert_allclose(out["latencies_s"], out["latency_s"])  # one backend call: every row waited as long
    assert 0 < out["backend_latency_s"] <= out["latency_s"]
    np.testing.assert_allclose(out["actions"], expected(states), atol=1e-6)


def test_act_route_speaks_openvla_convention_and_its_encoded_variant(server):
    url, _ = server
    st = random_states(1, RNG)
    want = env_to_openvla(expected(st))[0]
    body = {"image": np.zeros((64, 64, 3), np.uint8), "instruction": "Push the cube", "state": st[0], "task_id": PUSH}
    r = requests.post(f"{url}/act", data=json_numpy.dumps(body))
    assert r.status_code == 200
    np.testing.assert_allclose(json_numpy.loads(r.text), want, atol=1e-6)
    r = requests.post(f"{url}/act", json={"encoded": json_numpy.dumps(body)})  # for clients without json-numpy
    assert r.status_code == 200
    np.testing.assert_allclose(json_numpy.loads(r.json()), want, atol=1e-6)


def test_act_reply_is_byte_identical_to_openvlas_server(server, monkeypatch):
    """OpenVLA's deploy.py answers ``JSONResponse(action)`` with ``json_numpy.patch()`` active (Starlette renders with
    compact separators), and ``JSONResponse(json_numpy.dumps(action))`` for the "encoded" variant: same bytes here.
    """
    from starlette.responses import JSONResponse

    url, _ = server
    st = random_states(1, RNG)
    action = env_to_openvla(expected(st))[0]  # float64, as OpenVLA's un-normalized action
    body = {"instruction": "push", "state": st[0], "task_id": PUSH}
    plain = requests.post(f"{url}/act", data=json_numpy.dumps(body)).content
    encoded = requests.post(f"{url}/act", json={"encoded": json_numpy.dumps(body)}).content
    with monkeypatch.context() as m:
        m.setattr(json, "dumps", json_numpy.dumps)  # json_numpy.patch(), undone after
        want_plain, want_encoded = JSONResponse(action).body, JSONResponse(json_numpy.dumps(action)).body
    assert plain == want_plain and encoded == want_encoded
    assert plain.startswith(b'{"__numpy__":"') and plain.endswith(b'","dtype":"<f8","shape":[7]}')  # no spaces
    assert encoded.startswith(b'"{\\"__numpy__\\": \\"')  # the inner text keeps json_numpy's default separators


def test_concurrent_clients_are_batched(server):
    url, app = server
    batcher: DynamicBatcher = app.state.batcher
    calls0, served0 = batcher.backend_calls, batcher.requests_served
    states = random_states(12, RNG)
    results = [None] * 12

    def client(i):
        r = requests.post(f"{url}/act/batch", data=batch_body(states[i:i + 1]))
        results[i] = (r.status_code, json_numpy.loads(r.text))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(code == 200 for code, _ in results)
    np.testing.assert_allclose(np.concatenate([out["actions"] for _, out in results]), expected(states), atol=1e-6)
    assert max(out["batch_rows"] for _, out in results) > 1
    assert batcher.requests_served - served0 == 12 and batcher.backend_calls - calls0 < 12


# ----------------------------------------------------------------------------------------------
# bad input: a 4xx that names the field, never a 200, and the server keeps serving


def _field(r):
    return [".".join(map(str, e["loc"])) for e in r.json()["detail"]]


@pytest.mark.parametrize("route, body, status, field", [
    ("/act", {"image": np.zeros((8, 8), np.uint8), "instruction": "x"}, 422, "body.image"),
    ("/act", {"image": np.zeros((8, 8, 3), np.float32), "instruction": "x"}, 422, "body.image"),
    ("/act", {"image": np.zeros((8, 8, 3), np.uint8)}, 422, "body.instruction"),
    ("/act", {"image": {"__numpy__": "!!", "dtype": "|u1", "shape": [1]}, "instruction": "x"}, 422, "body.image"),
    ("/act", {"image": {"__numpy__": "AA==", "dtype": "|O", "shape": [1]}, "instruction": "x"}, 422, "body.image"),
    ("/act", {"image": np.zeros((8, 8, 3), np.uint8), "instruction": "x"}, 422, "body.state"),  # scripted needs it
    ("/act/batch", {"instructions": ["a", "b"], "states": np.zeros((3, 20), np.float32)}, 422, "body"),
    ("/act/batch", {"instructions": ["a"], "states": np.zeros((1, 20), np.float32), "extra": 1}, 422, "body.extra"),
    ("/act/batch", {"instructions": [], "states": np.zeros((0, 20), np.float32)}, 422, "body.instructions"),
    ("/act/batch", {"instructions": ["a"], "states": np.zeros((1, 5), np.float32), "task_ids": [PUSH]},
     422, "body.states"),
    ("/act/batch", {"instructions": ["a"], "states": np.zeros((1, 20), np.float32), "task_ids": ["Nope-v0"]},
     422, "body.task_ids"),
])
def test_bad_input_gets_4xx_naming_the_field(server, route, body, status, field):
    url, _ = server
    r = requests.post(f"{url}{route}", data=json_numpy.dumps(body))
    assert r.status_code == status, r.text
    assert any(f.startswith(field) for f in _field(r)), r.text
    assert requests.post(f"{url}/act/batch", data=batch_body(random_states(1, RNG))).status_code == 200


def test_malformed_json_and_oversized_bodies(server):
    url, _ = server
    r = requests.post(f"{url}/act", data=b"{not json")
    assert r.status_code == 422 and _field(r) == ["body"] and "malformed JSON" in r.text
    big = json_numpy.dumps({"image": np.zeros((700, 700, 3), np.uint8), "instruction": "x"})  # ~2 MB > 1 MiB
    assert requests.post(f"{url}/act", data=big).status_code == 413
    chunks = (big[i:i + 65536].encode() for i in range(0, len(big), 65536))  # chunked: no Content-Length
    assert requests.post(f"{url}/act", data=chunks).status_code == 413
    assert requests.get(f"{url}/healthz").status_code == 200


def test_backend_exception_is_a_500_and_the_server_stays_up():
    class Flaky(ScriptedTeacher):
        def act(self, request):
            if request.instructions[0] == "explode":
                raise RuntimeError("CUDA out of memory (simulated)")
            return super().act(request)

    app = create_app(ServerInfo("scripted", Flaky(control_period_steps=4, task=PUSH), 8, 1.0))
    with ServerThread(app) as url:
        st = random_states(1, RNG)
        r = requests.post(f"{url}/act/batch", data=json_numpy.dumps({"instructions": ["explode"], "states": st}))
        assert r.status_code == 500 and "CUDA out of memory" in r.json()["detail"]
        assert requests.post(f"{url}/act/batch", data=batch_body(st)).status_code == 200


def test_api_key():
    app = create_app(ServerInfo("scripted", scripted(), 8, 1.0), api_key="s3cret")
    with ServerThread(app) as url:
        assert requests.get(f"{url}/healthz").status_code == 200  # liveness probes need no key
        assert requests.get(f"{url}/metadata").status_code == 401
        body = batch_body(random_states(1, RNG))
        assert requests.post(f"{url}/act/batch", data=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert requests.post(f"{url}/act/batch", data=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        with pytest.raises(TeacherServerError, match="API key"):
            RemoteTeacher(url, api_key="wrong", connect_timeout_s=2)
        assert RemoteTeacher(url, api_key="s3cret").act(_request(1)).actions.shape == (1, 7)


def test_client_disconnect_mid_batch_does_not_break_the_batch():
    app = create_app(ServerInfo("scripted", scripted(), 16, 300.0))  # a 300 ms window gathers everyone
    with ServerThread(app) as url:
        states = random_states(4, RNG)
        results = {}

        def client(i):
            results[i] = requests.post(f"{url}/act/batch", data=batch_body(states[i:i + 1]), timeout=10)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads[:2]:
            t.start()
        payload = batch_body(states[:1]).encode()  # a client that sends a request and hangs up at once
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
            sock.sendall(b"POST /act/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        for t in threads[2:]:
            t.start()
        for t in threads:
            t.join()
        assert all(r.status_code == 200 for r in results.values())
        got = np.concatenate([json_numpy.loads(results[i].text)["actions"] for i in range(4)])
        np.testing.assert_allclose(got, expected(states), atol=1e-6)
        assert app.state.batcher.backend_calls <= 2


@pytest.fixture(scope="module")
def vla_server(tmp_path_factory):
    """The openvla backend on the tiny random-weight checkpoint (two statistics keys)."""
    from robot_rl.teachers.openvla import OpenVLATeacher
    from robot_rl.testing.tiny_vla import save_tiny_vla

    path = save_tiny_vla(tmp_path_factory.mktemp("tiny_vla"), image_size=64)
    teacher = OpenVLATeacher(path)
    with ServerThread(create_app(ServerInfo("openvla", teacher, 8, 5.0))) as url:
        yield url, teacher


def test_readme_client_of_openvla_unchanged_against_our_server(vla_server, tmp_path):
    """The client exactly as OpenVLA's README shows it (requests + json_numpy.patch()), in its own process."""
    import subprocess
    import sys

    url, teacher = vla_server
    script = tmp_path / "client.py"
    script.write_text(
        "import requests\n"
        "import json_numpy\n"
        "json_numpy.patch()\n"
        "import numpy as np\n"
        "\n"
        "action = requests.post(\n"
        f"    '{url}/act',\n"
        "    json={'image': np.full((256, 256, 3), 90, dtype=np.uint8), 'instruction': 'Push the cube to the goal',\n"
        "          'unnorm_key': 'bridge_orig'}\n"
        ").json()\n"
        "print(repr(action.tolist()))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True)
    got = np.array(eval(out.stdout.strip()))
    want = teacher.predict_raw(np.full((1, 256, 256, 3), 90, np.uint8), ["Push the cube to the goal"], "bridge_orig")[0]
    assert got.shape == (7,) and 0.0 <= got[6] <= 1.0
    np.testing.assert_allclose(got, want, atol=1e-9)


@pytest.mark.parametrize("body, field", [
    ({"instruction": "push"}, "body.image"),  # the VLA needs an image
    ({"image": np.zeros((32, 32, 3), np.uint8), "instruction": "push", "unnorm_key": "nope"}, "body.unnorm_key"),
    ({"image": np.zeros((32, 32, 3), np.uint8), "instruction": "push"}, "body.unnorm_key"),  # two keys: ambiguous
])
def test_openvla_backend_bad_input(vla_server, body, field):
    url, _ = vla_server
    r = requests.post(f"{url}/act", data=json_numpy.dumps(body))
    assert r.status_code == 422 and _field(r) == [field], r.text


def test_remote_teacher_against_openvla_backend_batches(vla_server):
    url, teacher = vla_server
    remote = RemoteTeacher(url, unnorm_key="fractal20220817_data")
    assert remote.spec.needs_image and not remote.openvla_only and remote.spec == teacher.spec
    assert requests.get(f"{url}/metadata").json()["unnorm_keys"] == ["bridge_orig", "fractal20220817_data"]
    images = RNG.integers(0, 255, (3, 48, 48, 3), dtype=np.uint8)
    req = TeacherRequest(["push the cube", "pick up the cube", "push"], images=images)
    want = teacher.act(TeacherRequest(req.instructions, images=images, unnorm_key="fractal20220817_data")).actions
    np.testing.assert_allclose(remote.act(req).actions, want, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# the client


def _request(n, images=False):
    st = random_states(n, RNG)
    imgs = np.zeros((n, 32, 32, 3), np.uint8) if images else None
    return TeacherRequest(["push the cube"] * n, images=imgs, states=st, task_ids=[PUSH] * n)


def test_remote_teacher_matches_in_process_and_submits_async(server):
    url, _ = server
    teacher = RemoteTeacher(url)
    assert teacher.spec.control_period_steps == 4 and teacher.spec.needs_image is False and not teacher.openvla_only
    assert teacher.spec == scripted().spec and teacher.protocol_version == 2
    req = _request(6)
    np.testing.assert_allclose(teacher.act(req).actions, expected(req.states), atol=1e-6)
    t_obs = time.time() - 0.25  # the observation is a quarter second old when the query leaves
    pending = teacher.submit(req, obs_time=t_obs)
    assert isinstance(pending, PendingAnswer) and (pending.obs_times_s == t_obs).all()
    response = pending.result(timeout=10)
    assert pending.done() and (pending.answer_times_s >= t_obs + 0.25).all() and (pending.age_s() >= 0.25).all()
    np.testing.assert_allclose(response.actions, expected(req.states), atol=1e-6)
    np.testing.assert_array_equal(response.obs_times_s, pending.obs_times_s)
    np.testing.assert_array_equal(response.answer_times_s, pending.answer_times_s)
    assert (response.latency_s > 0).all() and (response.latency_s < pending.age_s()).all()


def test_remote_teacher_against_an_openvla_only_reference_server():
    """A minimal stand-in for OpenVLA's vla-scripts/deploy.py: POST /act only, 200 "error" on failure."""
    app = FastAPI()

    @app.post("/act")
    async def act(request: Request):
        try:
            payload = json_numpy.loads(await request.body())
            image = payload["image"]
            assert payload["instruction"] == "push" and payload.get("unnorm_key") == "bridge_orig"
            level = float(image.mean()) / 255.0  # a deterministic "model": the action encodes the image
            action = np.array([0.01 * level, -0.02, 0.0, 0.0, 0.0, 0.05, level])
            return JSONResponse(json.loads(json_numpy.dumps(action)))
        except Exception:
            return "error"

    with ServerThread(app) as url:
        teacher = RemoteTeacher(url, unnorm_key="bridge_orig", control_period_steps=4)
        assert teacher.openvla_only and teacher.spec.needs_image and teacher.protocol_version == 0
        images = np.stack([np.full((16, 16, 3), v, np.uint8) for v in (0, 255, 51)])
        out = teacher.act(TeacherRequest(["push"] * 3, images=images))
        levels = np.array([0.0, 1.0, 0.2])
        raw = np.stack([[0.01 * v, -0.02, 0, 0, 0, 0.05, v] for v in levels])
        np.testing.assert_allclose(out.actions, openvla_to_env(raw), atol=1e-6)
        assert out.latency_s.shape == (3,) and (out.latency_s > 0).all() and out.notes is None
        assert out.answer_times_s.shape == (3,) and (out.answer_times_s >= out.obs_times_s).all()
        with pytest.raises(TeacherRequestError, match="needs images") as e:  # refused before anything is sent
            teacher.act(TeacherRequest(["push"]))
        assert e.value.field == "images"


def test_dead_server_gives_no_guidance_then_reconnects():
    port = free_port()
    info = ServerInfo("scripted", scripted(), 8, 1.0)
    first = ServerThread(create_app(info), port=port)
    url = first.start()
    teacher = RemoteTeacher(url, timeout_s=1.0, retries=1, backoff_s=0.5)
    req = _request(3)
    assert np.isfinite(teacher.act(req).actions).all()
    first.stop()

    t0 = time.perf_counter()
    down = teacher.act(req)
    assert np.isnan(down.actions).all() and "error" in down.extras and teacher.stats.failures == 1
    assert down.latency_s.shape == (3,) and (down.answer_times_s >= down.obs_times_s).all()  # stamped all the same
    assert np.isnan(teacher.act(req).actions).all() and teacher.stats.skipped == 1  # back-off: not even tried
    assert time.perf_counter() - t0 < 1.9  # refused at once: waiting out the timeout (1 s x 2 tries) takes >= 2 s

    with ServerThread(create_app(info), port=port):
        time.sleep(0.6)  # past the back-off
        back = teacher.act(req)
        assert np.isfinite(back.actions).all() and teacher.stats.reconnects == 1
        np.testing.assert_allclose(back.actions, expected(req.states), atol=1e-6)


def test_no_server_at_start_is_a_clear_error():
    with pytest.raises(ConnectionError, match="robot-rl teacher serve"):
        RemoteTeacher(f"http://127.0.0.1:{free_port()}", connect_timeout_s=0.5)


@pytest.mark.slow
def test_spawned_server_subprocess_serves_and_stops(tmp_path):
    log = tmp_path / "server.log"
    with SpawnedServer("scripted", control_period_steps=4, task=PUSH, log_path=str(log)) as server:
        teacher = RemoteTeacher(server.url)
        assert teacher.spec.control_period_steps == 4
        req = _request(2)
        np.testing.assert_allclose(teacher.act(req).actions, expected(req.states), atol=1e-6)
        proc = server.proc
    assert proc.poll() is not None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/healthz", timeout=1)


# ----------------------------------------------------------------------------------------------
# the timed protocol over HTTP: stamps in, notes and per-row latencies out


@pytest.fixture(scope="module")
def notes_server():
    """A NotesTeacher (no image, no state) behind a server; rows report 10/20/30... ms of their own."""
    teacher = NotesTeacher(row_latency_s=0.01)
    with ServerThread(create_app(ServerInfo("notes", teacher, 16, 1.0))) as url:
        yield url, teacher


def test_batch_route_round_trips_stamps_notes_and_per_row_latency(notes_server):
    url, teacher = notes_server
    body = {"instructions": ["push", "quiet", "lift"], "scratchpads": ["p0", "p1", "p2"],
            # a JSON list and a json-numpy array
            "obs_steps": [0, 4, 12], "obs_times_s": np.array([100.0, 100.2, 100.6])}
    r = requests.post(f"{url}/act/batch", data=json_numpy.dumps(body))
    assert r.status_code == 200, r.text
    out = json_numpy.loads(r.text)
    assert out["notes"] == ["push | step=0 t=100.0 | p0", "", "lift | step=12 t=100.6 | p2"]
    got = teacher.requests[-1]
    assert got.obs_steps.tolist() == [0, 4, 12] and got.obs_steps.dtype == np.int64
    assert got.obs_times_s.tolist() == [100.0, 100.2, 100.6]
    lat = out["latencies_s"]
    assert lat.shape == (3,) and lat.dtype == np.float64
    np.testing.assert_allclose(np.diff(lat), [0.01, 0.01])  # each row's own time, plus the shared server time
    assert lat.max() == pytest.approx(out["latency_s"]) and out["backend_latency_s"] == pytest.approx(0.03)
    meta = requests.get(f"{url}/metadata").json()
    assert meta["writes_notes"] is True and meta["model_id"] == "notes" and meta["needs_image"] is False


@pytest.mark.parametrize("extra, field", [
    ({"obs_steps": [1, 2]}, "body"),  # 2 rows for 1 instruction
    ({"obs_steps": [1.5]}, "body.obs_steps"),
    ({"obs_steps": [-1]}, "body.obs_steps"),
    ({"obs_steps": "now"}, "body.obs_steps"),
    ({"obs_times_s": [float("nan")]}, "body.obs_times_s"),
    ({"obs_times_s": np.zeros((1, 1))}, "body.obs_times_s"),
])
def test_bad_stamps_get_422_naming_the_field(notes_server, extra, field):
    url, _ = notes_server
    body = json_numpy.dumps({"instructions": ["push"], **extra})
    r = requests.post(f"{url}/act/batch", data=body)
    assert r.status_code == 422, r.text
    assert any(f.startswith(field) for f in _field(r)), r.text


def test_remote_teacher_returns_notes_stamps_and_per_row_latencies(notes_server):
    url, _ = notes_server
    teacher = RemoteTeacher(url)
    assert teacher.spec.writes_notes and teacher.protocol_version == 2
    t = time.time()
    req = TeacherRequest(["push", "lift"], obs_steps=[3, 7], obs_times_s=[t - 0.5, t - 0.25])
    t0 = time.perf_counter()
    resp = teacher.act(req)
    wall = time.perf_counter() - t0
    assert resp.notes == [f"push | step=3 t={t - 0.5!r} | -", f"lift | step=7 t={t - 0.25!r} | -"]
    assert resp.obs_steps.tolist() == [3, 7] and resp.obs_times_s.tolist() == [t - 0.5, t - 0.25]
    assert (resp.answer_times_s >= t).all() and (resp.answer_times_s <= time.time()).all()
    assert resp.latency_s[1] - resp.latency_s[0] == pytest.approx(0.01, abs=1e-6)  # the server's per-row split
    assert (resp.latency_s >= [0.01, 0.02]).all() and resp.latency_s.max() <= wall and resp.model_id == "notes"
    pending = teacher.submit(TeacherRequest(["push"]), obs_time=t)  # no obs_times_s in the request: obs_time is used
    out = pending.result(timeout=10)
    assert out.obs_times_s.tolist() == [t] and out.obs_steps is None and out.notes == ["push | step=- t=- | -"]
    np.testing.assert_array_equal(pending.answer_times_s, out.answer_times_s)


def test_a_backend_that_needs_no_image_is_never_sent_one(notes_server):
    url, teacher = notes_server
    image = np.full((16, 16, 3), 7, np.uint8)
    states = random_states(2, RNG)
    r = requests.post(f"{url}/act/batch", data=json_numpy.dumps({"instructions": ["a", "b"],
                                                                   "images": np.stack([image] * 2),
                                                                   "states": states}))
    assert r.status_code == 200, r.text
    assert teacher.requests[-1].images is None and teacher.requests[-1].states is None  # the server dropped both
    # OpenVLA's route too
    r = requests.post(f"{url}/act", data=json_numpy.dumps({"image": image, "instruction": "push"}))
    assert r.status_code == 200 and len(json_numpy.loads(r.text)) == 7
    assert teacher.requests[-1].images is None
    # and the client does not send them: what reaches the wire, recorded by a stand-in server
    seen = []
    with ServerThread(_recording_app(seen, protocol_version=2, needs_image=False)) as fake:
        RemoteTeacher(fake).act(TeacherRequest(["a"], images=image[None], states=states[:1], obs_steps=[5]))
    assert "images" not in seen[-1] and "states" not in seen[-1] and seen[-1]["obs_steps"] == [5]


def test_requests_refused_by_the_backends_check_get_422_naming_the_field(notes_server):
    url, _ = notes_server
    r = requests.post(f"{url}/act/batch", data=json_numpy.dumps({"instructions": ["push", "refuse"]}))
    assert r.status_code == 422 and _field(r) == ["body.instructions"], r.text
    r = requests.post(f"{url}/act", data=json_numpy.dumps({"instruction": "refuse"}))  # /act's singular name
    assert r.status_code == 422 and _field(r) == ["body.instruction"], r.text


def test_client_of_a_protocol_1_server_sends_no_stamps():
    seen = []
    with ServerThread(_recording_app(seen, protocol_version=1, needs_image=True)) as fake:
        teacher = RemoteTeacher(fake)
        out = teacher.act(TeacherRequest(["a"], images=np.zeros((1, 4, 4, 3), np.uint8), obs_steps=[5],
                                         obs_times_s=[1.0]))
    assert teacher.protocol_version == 1 and "obs_steps" not in seen[-1] and "obs_times_s" not in seen[-1]
    assert "images" in seen[-1] and out.obs_steps.tolist() == [5] and out.notes is None  # stamps kept client-side


def _recording_app(seen: list, *, protocol_version: int, needs_image: bool) -> FastAPI:
    """A stand-in teacher server: ``/metadata`` as given, ``/act/batch`` records its body's keys and answers zeros."""
    app = FastAPI()

    @app.get("/metadata")
    async def metadata():
        return {"protocol_version": protocol_version, "model_id": "fake", "control_period_steps": 4,
                "needs_image": needs_image, "needs_state": False}

    @app.post("/act/batch")
    async def act_batch(request: Request):
        payload = json_numpy.loads(await request.body())
        seen.append({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in payload.items()})
        n = len(payload["instructions"])
        return JSONResponse(json.loads(json_numpy.dumps({"actions": np.zeros((n, 7), np.float32), "model_id": "fake",
                                                          "latency_s": 0.0})))

    return app


def test_run_batched_splits_notes_stamps_and_latencies_per_request():
    teacher = NotesTeacher(row_latency_s=0.1)
    reqs = [TeacherRequest(["a", "b"], obs_steps=[1, 2]), TeacherRequest(["c"], obs_steps=[9]),
            TeacherRequest(["d"])]  # no stamps: another signature, another call
    out, calls = run_batched(teacher, reqs, max_batch=16)
    assert calls == 2 and [len(r) for r in teacher.requests] == [3, 1]
    assert out[0].notes == ["a | step=1 t=- | -", "b | step=2 t=- | -"] and out[1].notes == ["c | step=9 t=- | -"]
    np.testing.assert_allclose(out[0].latency_s, [0.1, 0.2])
    np.testing.assert_allclose(out[1].latency_s, [0.3])  # its row was the third of the shared call
    assert [r.extras["batch_rows"] for r in out] == [3, 3, 1]


def test_remote_client_checks_the_servers_spec_locally(vla_server):
    url, _ = vla_server
    with pytest.raises(ValueError, match="unnorm_key 'nope' is not one of the server's"):
        RemoteTeacher(url, unnorm_key="nope")
    teacher = RemoteTeacher(url)
    with pytest.raises(TeacherRequestError) as e:
        teacher.act(TeacherRequest(["push"], images=np.zeros((1, 8, 8, 3), np.uint8), unnorm_key="nope"))
    assert e.value.field == "unnorm_key" and teacher.stats.requests == 0  # nothing was sent


def test_build_teacher_builds_a_remote_teacher_from_the_training_config(server):
    from robot_rl.config import build_config
    from robot_rl.trainer import build_teacher

    url, _ = server
    cfg = build_config({}, ["teacher.kind=remote", f"teacher.url={url}", "teacher.timeout_s=2",
                            "teacher.backoff_s=0.5"])
    teacher = build_teacher(cfg)
    assert isinstance(teacher, RemoteTeacher) and teacher.url == url and teacher.timeout_s == 2.0
    assert teacher.backoff_s == 0.5 and teacher.spec.control_period_steps == 4
    assert isinstance(build_teacher(build_config({})), ScriptedTeacher)


def test_added_latency_holds_each_answer_without_blocking_others():
    """``--latency-ms 300``: each answer comes >= 0.3 s after its request, and 4 concurrent requests still take
    about 0.3 s in all (asyncio.sleep), not 1.2 s: a slow VLA that the trainer's queries in flight overlap.
    """
    from concurrent.futures import ThreadPoolExecutor

    teacher = ScriptedTeacher(task=PUSH)
    with ServerThread(create_app(ServerInfo("scripted", teacher, 16, 1.0), added_latency_ms=300)) as url:
        client = RemoteTeacher(url, timeout_s=5.0)
        states = random_states(1, RNG)
        req = TeacherRequest(["push the cube"], states=states, task_ids=[PUSH])
        t0 = time.perf_counter()
        r = client.act(req)
        one = time.perf_counter() - t0
        assert one >= 0.3 and r.latency_s[0] >= 0.3 and np.isfinite(r.actions).all()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: client.act(req), range(4)))
        assert time.perf_counter() - t0 < 0.3 * 3 and all(np.isfinite(x.actions).all() for x in results)
        client.close()
    with pytest.raises(ValueError, match="server.latency_ms"):
        create_app(ServerInfo("scripted", teacher, 16, 1.0), added_latency_ms=-1)
