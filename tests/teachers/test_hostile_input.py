"""Hostile input to the teacher server over real HTTP on loopback (issue 16): a sample per class.

Every hostile request must get a 4xx naming the problem (never a 500, never a 200 carrying NaN), and a good
request afterwards still gets the reference answer. The classes: bad arrays (non-numbers, NaN / inf, empty or
wrong-channel shapes; on /act, /act/batch and the openpi WebSocket, read by the backend or not), JSON that cannot
be decoded (int digit limit, deep nesting, bad UTF-8), body names in errors, 422s that do not echo huge input,
keys on the docs routes, bounded resources (per-request rows, stalled bodies, mid-body disconnects, header size,
stalled headers).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import json_numpy
import msgpack
import numpy as np
import psutil
import pytest
import requests
from openpi_client import msgpack_numpy as upstream
from test_scripted_teacher import PUSH, random_states
from websockets.sync.client import connect

from robot_rl.teachers import ScriptedTeacher, TeacherRequest
from robot_rl.teachers.remote import free_port, wait_healthy
from robot_rl.teachers.server import MAX_ECHO_CHARS, ServerInfo, create_app
from robot_rl.testing.server import ServerThread

STATES = random_states(2, np.random.default_rng(7))
KEY = "s3cret"


def scripted():
    return ScriptedTeacher(control_period_steps=4, task=PUSH, seed=0)


class CountingTeacher(ScriptedTeacher):
    """Records the rows of every backend call."""

    calls: list[int] = []

    def act(self, request):
        CountingTeacher.calls.append(len(request))
        return super().act(request)


@pytest.fixture(scope="module")
def server():
    info = ServerInfo("scripted", CountingTeacher(control_period_steps=4, task=PUSH, seed=0), max_batch=8,
                      batch_wait_ms=5.0)
    with ServerThread(create_app(info, body_timeout_s=1.0)) as url:
        yield url


def expected(states):
    return scripted().act(TeacherRequest([""] * len(states), states=states, task_ids=[PUSH] * len(states))).actions


def good(url):
    """A good /act/batch request gets the reference answer."""
    r = requests.post(f"{url}/act/batch", data=json_numpy.dumps(
        {"instructions": ["push"] * 2, "states": STATES, "task_ids": [PUSH] * 2}), timeout=10)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(json_numpy.loads(r.text)["actions"], expected(STATES), atol=1e-6)


def batch(**fields):
    return {"instructions": ["push"], "task_ids": [PUSH], "states": STATES[:1].tolist()} | fields


def act(**fields):
    return {"instruction": "push", "task_id": PUSH, "state": STATES[0].tolist()} | fields


def img(shape, dtype=np.uint8):
    return json.loads(json_numpy.dumps(np.zeros(shape, dtype)))


HOSTILE = [  # (route, body as text, the field the error must name)
    ("/act", json.dumps(act(state=["a", "b"])), "state"),
    ("/act", json.dumps(act(state=[[1.0], [1.0, 2.0]])), "state"),
    ("/act", json.dumps(act(state=[{"x": 1}])), "state"),
    ("/act", json.dumps(act(state=[1e300] * 3)), "state"),  # finite in float64, inf in float32
    ("/act", json.dumps(act(image=img((4, 4, 4)))), "image"),  # wrong channel count (the backend reads no image)
    ("/act", json.dumps(act(image=img((0, 0, 3)))), "image"),
    ("/act", json.dumps(act(state=[])), "state"),
    ("/act", json.dumps(act(state=[True] * 20)), "state"),  # booleans are not numbers
    ("/act", json.dumps(act(state=[0.0] * 20)), "state"),  # zero quaternions: the planner's rotation fit failed (500)
    ("/act", json.dumps(act()).replace(str(STATES[0].tolist()[0]), "NaN", 1), "state"),
    ("/act", json.dumps(act()).replace(str(STATES[0].tolist()[0]), "Infinity", 1), "state"),
    ("/act/batch", json.dumps(batch()).replace(str(STATES[0].tolist()[0]), "NaN", 1), "states"),
    ("/act/batch", json.dumps(batch(images=img((1, 4, 4, 1)))), "images"),
    ("/act/batch", json.dumps(batch(obs_times_s=[float("inf")])).replace("inf", "Infinity"), "obs_times_s"),
    ("/act/batch", json.dumps(batch(obs_steps=["x"])), "obs_steps"),
    ("/act/batch", json.dumps(batch(states={"__numpy__": "AAAA", "dtype": "<f4", "shape": [-1, 1]})), "states"),
    # a -1 that numpy would infer, in a shape the rest of the checks accept: (1, 20) states, a (1, 1, 1, 3) image
    ("/act/batch", json.dumps(batch(states=json.loads(json_numpy.dumps(STATES[:1].astype(np.float32)))
                                    | {"shape": [-1, STATES.shape[1]]})), "states"),
    ("/act/batch", json.dumps(batch(images={"__numpy__": "AAAA", "dtype": "|u1", "shape": [1, -1, 1, 3]})), "images"),
    ("/act", json.dumps(act(unnorm_key="x")).replace('"x"', "1" * 5000), "body"),  # int digit limit
    ("/act/batch", "[" * 100_000 + "]" * 100_000, "body"),  # RecursionError
    ("/act", b'{"instruction": "\xff\xfe"}', "body"),  # bad UTF-8
    ("/act", json.dumps({"encoded": "[" * 100_000}), "encoded"),
]


@pytest.mark.parametrize("route, body, field", HOSTILE, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(HOSTILE)])
def test_bad_input_is_a_4xx_naming_the_field_then_good_requests_work(server, route, body, field):
    r = requests.post(f"{server}{route}", data=body, timeout=10)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    detail = r.json()["detail"]
    assert any(field in str(d.get("loc", ())) for d in detail), detail
    assert len(r.text) < 20 * MAX_ECHO_CHARS
    good(server)


class NaNTeacher(ScriptedTeacher):
    """A backend whose last row is NaN: in one component (a fault) or in all (its "no guidance" marker)."""

    def act(self, request):
        response = super().act(request)
        response.actions[-1, : 1 if request.instructions[-1] == "partial" else None] = np.nan
        return response


def test_a_backend_s_nan_is_a_500_except_a_no_guidance_row_of_act_batch(caplog):
    with ServerThread(create_app(ServerInfo("scripted", NaNTeacher(control_period_steps=4, task=PUSH, seed=0), 8,
                                            5.0))) as url, caplog.at_level(logging.ERROR):
        def post(route, **body):
            return requests.post(f"{url}{route}", data=json_numpy.dumps(body), timeout=10)

        r = post("/act/batch", instructions=["push", "partial"], states=STATES, task_ids=[PUSH] * 2)
        assert r.status_code == 500 and "NaN" in r.json()["detail"] and "[1]" in r.json()["detail"], r.text
        r = post("/act/batch", instructions=["push", "none"], states=STATES, task_ids=[PUSH] * 2)
        actions = json_numpy.loads(r.text)["actions"]
        assert r.status_code == 200 and np.isfinite(actions[0]).all() and np.isnan(actions[1]).all(), r.text
        r = post("/act", instruction="none", state=STATES[0], task_id=PUSH)  # OpenVLA's route has no such marker
        assert r.status_code == 500 and "NaN" in r.json()["detail"], r.text


def test_act_errors_name_the_act_fields(server):
    for body in (act(image=img((4, 4, 2))), act(state=[[1.0, 2.0]]), act(state=[0.1, 0.2, 0.3])):
        r = requests.post(f"{server}/act", json=body, timeout=10)
        assert r.status_code == 422, r.text
        assert "states" not in r.text and "images" not in r.text and "task_ids" not in r.text, r.text
        assert r.json()["detail"][0]["loc"][-1] in ("image", "state"), r.text


def test_a_422_does_not_echo_a_huge_field(server):
    r = requests.post(f"{server}/act/batch", json=batch(task_ids=["x" * 1_000_000], bogus="y" * 1_000_000),
                      timeout=10)
    assert r.status_code == 422 and len(r.content) < 10_000, len(r.content)
    good(server)


def test_rows_past_max_batch_are_split_into_backend_calls(server):
    states = random_states(20, np.random.default_rng(1))
    CountingTeacher.calls.clear()
    r = requests.post(f"{server}/act/batch", data=json_numpy.dumps(
        {"instructions": ["push"] * 20, "states": states, "task_ids": [PUSH] * 20}), timeout=10)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(json_numpy.loads(r.text)["actions"], expected(states), atol=1e-6)
    assert max(CountingTeacher.calls) <= 8 and sum(CountingTeacher.calls) == 20, CountingTeacher.calls


def test_a_stalled_body_gets_408_and_a_mid_body_disconnect_logs_no_error(server, caplog):
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        t0 = time.monotonic()
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert time.monotonic() - t0 < 5
    with caplog.at_level(logging.INFO):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"ins")
        time.sleep(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    good(server)


def _recv_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 10 s pass)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_headers_past_the_limit_get_431_while_they_stream_in():
    """The server bounds the header block and each header line (uvicorn's httptools parser bounds neither)."""
    with ServerThread(create_app(ServerInfo("scripted", scripted(), 8, 5.0)), max_header_bytes=16 * 1024) as url:
        host, port = url.removeprefix("http://").split(":")
        for headers in (b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(40)),  # many lines
                        b"X-Pad: " + b"a" * 200_000 + b"\r\n"):  # one line that never ends within the limit
            with socket.create_connection((host, int(port)), timeout=10) as s:
                try:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
                except OSError:  # the server may close before all was sent
                    pass
                reply = _recv_all(s)
            assert reply.startswith(b"HTTP/1.1 431") and b"server.max_header_kb" in reply, reply[:200]
        ok = requests.get(f"{url}/healthz", headers={"X-Pad": "a" * 8000}, timeout=10)
        assert ok.status_code == 200, ok.text


def test_a_connection_that_stalls_its_headers_gets_408_and_a_silent_one_is_closed():
    with ServerThread(create_app(ServerInfo("scripted", scripted(), 8, 5.0)), header_timeout_s=0.5) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as stalled, \
                socket.create_connection((host, int(port)), timeout=10) as silent:
            t0 = time.monotonic()
            stalled.sendall(b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Le")
            reply = _recv_all(stalled)
            assert reply.startswith(b"HTTP/1.1 408") and b"server.header_timeout_s" in reply, reply
            assert _recv_all(silent) == b""  # closed without an answer, as an idle keep-alive connection
            assert time.monotonic() - t0 < 5
        with requests.Session() as session:  # keep-alive: the deadline runs per request, not per connection
            for _ in range(3):
                assert session.get(f"{url}/healthz", timeout=10).status_code == 200
                time.sleep(0.3)


def _decode_workers(pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children() if "spawn_main" in " ".join(c.cmdline())
            and "resource_tracker" not in " ".join(c.cmdline())]


def test_a_big_body_is_decoded_in_a_worker_process_which_goes_when_idle():
    """JSON decoding holds the GIL: a body of 1 MiB or more is decoded in another process, not on the event loop."""
    app = create_app(ServerInfo("scripted", scripted(), 8, 5.0))
    app.state.decoder.idle_s = 1.0
    with ServerThread(app) as url:
        body = {"instructions": ["push " + "x" * (1 << 20)] * 2, "states": STATES, "task_ids": [PUSH] * 2}
        r = requests.post(f"{url}/act/batch", data=json_numpy.dumps(body), timeout=30)  # declared length
        assert r.status_code == 200, r.text[:300]
        np.testing.assert_allclose(json_numpy.loads(r.text)["actions"], expected(STATES), atol=1e-6)
        assert app.state.decoder.running and _decode_workers(os.getpid())

        def chunked():  # no declared length: collected, then copied to shared memory
            yield b'{"instructions": ["push"], "task_ids": ["' + PUSH.encode() + b'"], "states": "'
            for _ in range(20):
                yield b"a" * 65536
            yield b'"}'

        r = requests.post(f"{url}/act/batch", data=chunked(), timeout=30)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "states"], r.text[:300]
        deadline = time.monotonic() + 10
        while (app.state.decoder.running or app.state.decoder.free_bytes) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not app.state.decoder.running and app.state.decoder.free_bytes == 0
        good(url)


def test_serve_applies_the_header_limits_of_its_config():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "robot_rl.cli", "teacher", "serve", f"server.port={port}",
                               "server.log_level=warning", "server.max_header_kb=4", "server.header_timeout_s=0.5"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, 60, server)
        assert requests.get(f"{url}/healthz", headers={"X-Pad": "a" * 5000}, timeout=10).status_code == 431
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            assert _recv_all(s).startswith(b"HTTP/1.1 408")
    finally:
        server.terminate()
        server.wait(30)


def test_a_decode_worker_exits_when_its_server_is_killed():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "robot_rl.cli", "teacher", "serve", f"server.port={port}",
                               "server.log_level=warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", 60, server)
        r = requests.post(f"http://127.0.0.1:{port}/act/batch", data=b'{"x": "' + b"a" * (2 << 20) + b'"}',
                          timeout=30)
        assert r.status_code == 422, r.text[:300]
        workers = _decode_workers(server.pid)
        assert workers
    finally:
        server.send_signal(signal.SIGKILL)  # no shutdown: the workers are orphaned
        server.wait(10)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"decode workers outlived their server: {alive}"


def test_with_a_key_the_docs_need_it_too():
    with ServerThread(create_app(ServerInfo("scripted", scripted(), 8, 5.0), api_key=KEY)) as url:
        for route in ("/docs", "/redoc", "/openapi.json", "/metadata"):
            assert requests.get(f"{url}{route}", timeout=10).status_code in (401, 404), route
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("obs", [
    {"observation/state": np.array([np.nan] * 3, np.float32), "prompt": "push", "task_id": PUSH},
    {"observation/state": np.array(["a"]), "prompt": "push", "task_id": PUSH},
    {"observation/image": np.zeros((4, 4, 4), np.uint8), "observation/state": STATES[0], "prompt": "p",
     "task_id": PUSH},
    {"observation/image": np.zeros((0, 0, 3), np.uint8), "observation/state": STATES[0], "prompt": "p",
     "task_id": PUSH},
], ids=["nan", "strings", "channels", "empty"])
def test_openpi_bad_observation_names_the_key_then_good_requests_work(server, obs):
    key = next(k for k in ("observation/image", "observation/state") if k in obs and k != "observation/state"
               ) if "observation/image" in obs else "observation/state"
    with connect("ws://" + server.removeprefix("http://"), compression=None) as ws:
        ws.recv()
        ws.send(msgpack.packb(obs, default=upstream.pack_array))
        text = ws.recv()
        assert isinstance(text, str) and key in text and "Traceback" not in text, text
    good(server)


def test_openpi_array_shape_with_a_minus_one_is_refused_then_good_requests_work(server):
    state = {b"__ndarray__": True, b"data": np.zeros(20, np.float32).tobytes(), b"dtype": "<f4", b"shape": [-1]}
    with connect("ws://" + server.removeprefix("http://"), compression=None) as ws:
        ws.recv()
        ws.send(msgpack.packb({"observation/state": state, "prompt": "push", "task_id": PUSH}))
        text = ws.recv()
        assert isinstance(text, str) and "shape" in text and "Traceback" not in text, text
    good(server)


def test_serve_key_from_a_file_or_the_environment_and_argv_warns(tmp_path, monkeypatch, caplog):
    from robot_rl.cli import _parser, _serve_api_key
    from robot_rl.teachers.wire import API_KEY_ENV

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    (tmp_path / "key").write_text(KEY + "\n")
    parse = _parser().parse_args
    assert _serve_api_key(parse(["teacher", "serve", "--api-key-file", str(tmp_path / "key")])) == KEY
    assert _serve_api_key(parse(["teacher", "serve"])) is None
    monkeypatch.setenv(API_KEY_ENV, KEY)
    assert _serve_api_key(parse(["teacher", "serve"])) == KEY
    with caplog.at_level(logging.WARNING):
        assert _serve_api_key(parse(["teacher", "serve", "--api-key", "k2"])) == "k2"
    assert "argv" in caplog.text
