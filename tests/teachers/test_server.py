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

from robot_rl.teachers import ScriptedTeacher, TeacherRequest, TeacherResponse
from robot_rl.teachers.remote import PendingAnswer, RemoteTeacher, SpawnedServer, TeacherServerError, free_port
from robot_rl.teachers.server import DynamicBatcher, ServerInfo, create_app, run_batched
from robot_rl.teachers.wire import env_to_openvla, openvla_to_env
from robot_rl.testing.server import ServerThread

RNG = np.random.default_rng(0)


def scripted(**kw):
    return ScriptedTeacher(control_period_steps=4, task=PUSH, seed=0, **kw)


def batch_body(states, **extra):
    return json_numpy.dumps({"instructions": ["push the cube"] * len(states), "states": states,
                             "task_ids": [PUSH] * len(states)} | extra)


def expected(states):
    return scripted().act(TeacherRequest(instructions=[""] * len(states), states=states, task_ids=[PUSH] * len(states))).actions


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
    states = random_states(5, RNG)
    r = requests.post(f"{url}/act/batch", data=batch_body(states))
    assert r.status_code == 200
    out = json_numpy.loads(r.text)
    assert out["actions"].shape == (5, 7) and out["model_id"] == "scripted" and out["latency_s"] > 0
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
    ("/act/batch", {"instructions": ["a"], "states": np.zeros((1, 5), np.float32), "task_ids": [PUSH]}, 422, "body.states"),
    ("/act/batch", {"instructions": ["a"], "states": np.zeros((1, 20), np.float32), "task_ids": ["Nope-v0"]}, 422, "body.task_ids"),
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
    assert remote.needs_image and not remote.openvla_only
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
    assert teacher.control_period_steps == 4 and teacher.needs_image is False and not teacher.openvla_only
    req = _request(6)
    np.testing.assert_allclose(teacher.act(req).actions, expected(req.states), atol=1e-6)
    t_obs = time.monotonic()
    pending = teacher.submit(req, obs_time=t_obs)
    assert isinstance(pending, PendingAnswer) and pending.obs_time == t_obs
    response = pending.result(timeout=10)
    assert pending.done() and pending.answer_time >= t_obs and pending.age_s() > 0
    np.testing.assert_allclose(response.actions, expected(req.states), atol=1e-6)


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
        assert teacher.openvla_only and teacher.needs_image
        images = np.stack([np.full((16, 16, 3), v, np.uint8) for v in (0, 255, 51)])
        out = teacher.act(TeacherRequest(["push"] * 3, images=images))
        levels = np.array([0.0, 1.0, 0.2])
        raw = np.stack([[0.01 * v, -0.02, 0, 0, 0, 0.05, v] for v in levels])
        np.testing.assert_allclose(out.actions, openvla_to_env(raw), atol=1e-6)
        with pytest.raises(TeacherServerError, match="needs images"):
            teacher.act(TeacherRequest(["push"]))


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
        assert teacher.control_period_steps == 4
        req = _request(2)
        np.testing.assert_allclose(teacher.act(req).actions, expected(req.states), atol=1e-6)
        proc = server.proc
    assert proc.poll() is not None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/healthz", timeout=1)
