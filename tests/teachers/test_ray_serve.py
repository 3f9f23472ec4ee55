"""The teacher server on Ray Serve over real HTTP on loopback (a local 2-CPU Ray instance).

Two replicas of the scripted backend answer 32 concurrent clients; every answer is compared with an
in-process ScriptedTeacher (deterministic with default knobs). The same 4xx behaviour as the
uvicorn server is checked through Ray's proxy, and the CLI (``robot-rl teacher serve --ray``) is run
as a subprocess and stopped with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import json_numpy
import numpy as np
import pytest
import requests
from test_scripted_teacher import PICK, PUSH, random_states

from robot_rl.teachers import TeacherRequest
from robot_rl.teachers.server import API_KEY_HEADER, build_backend
from robot_rl.teachers.wire import env_to_openvla

pytest.importorskip("ray")
pytest.importorskip("ray.serve")

import ray
from ray import serve

from robot_rl.teachers.ray_serve import (
    REPLICA_HEADER,
    TeacherDeployment,
    build_deployment,
    init_ray,
    start_app,
)

pytestmark = pytest.mark.slow

REPLICAS = 2
MAX_BATCH = 16
BATCH_WAIT_MS = 30.0
MAX_BODY_BYTES = 1024 * 1024
API_KEY = "test-key"
N_CLIENTS = 32
REQUESTS_PER_CLIENT = 3
MAX_ROWS_PER_REQUEST = 4
HTTP_TIMEOUT_S = 60.0
STARTUP_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 60.0
HEADERS = {API_KEY_HEADER: API_KEY}


BAD_TASK = "NoSuchTask-v0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference():
    """The in-process twin of each replica's backend (same defaults as ``build_backend``)."""
    return build_backend("scripted")


def batch_body(states: np.ndarray, tasks: list[str], **extra) -> str:
    return json_numpy.dumps({"instructions": ["do the task"] * len(states), "states": states, "task_ids": tasks}
                            | extra)


@pytest.fixture(scope="module")
def server():
    """``REPLICAS`` scripted replicas behind Serve's proxy on a free loopback port; Ray torn down afterwards."""
    port = free_port()
    try:
        init_ray(num_cpus=2)
        app = build_deployment("scripted", replicas=REPLICAS, max_batch=MAX_BATCH, batch_wait_ms=BATCH_WAIT_MS,
                               api_key=API_KEY, max_body_bytes=MAX_BODY_BYTES)
        start_app(app, host="127.0.0.1", port=port)
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()


def test_cli_serve_ray_answers_and_stops_on_sigterm(tmp_path):
    """``robot-rl teacher serve --ray`` as a subprocess with its own local Ray; SIGTERM shuts it down cleanly.

    Runs first (before the module fixture starts Ray in this process), so two Ray instances never share the 2 cores.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log_path = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "robot_rl.cli", "teacher", "serve", "--ray", "--replicas", "1",
           "--port", str(port), "--task", PUSH]
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow to answer while starting
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.5)
        states = random_states(2, np.random.default_rng(2))
        body = json_numpy.dumps({"instructions": ["push"] * 2, "states": states})  # task from --task
        r = requests.post(f"{url}/act/batch", data=body, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text
        want = reference().act(TeacherRequest([""] * 2, states=states, task_ids=[PUSH] * 2)).actions
        np.testing.assert_allclose(json_numpy.loads(r.text)["actions"], want, atol=1e-6)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(SHUTDOWN_TIMEOUT_S) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_concurrent_clients_are_batched_over_both_replicas(server):
    rng = np.random.default_rng(0)
    jobs = []  # per client: list of (states, tasks)
    for _ in range(N_CLIENTS):
        client = []
        for _ in range(REQUESTS_PER_CLIENT):
            n = int(rng.integers(1, MAX_ROWS_PER_REQUEST + 1))
            client.append((random_states(n, rng), [PUSH if rng.random() < 0.5 else PICK for _ in range(n)]))
        jobs.append(client)
    answers: list[list] = [[] for _ in range(N_CLIENTS)]
    start = threading.Barrier(N_CLIENTS)

    def run(i: int) -> None:
        with requests.Session() as session:
            start.wait()
            for states, tasks in jobs[i]:
                r = session.post(f"{server}/act/batch", data=batch_body(states, tasks), headers=HEADERS,
                                 timeout=HTTP_TIMEOUT_S)
                answers[i].append((r.status_code, r.text, r.headers.get(REPLICA_HEADER)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2 * HTTP_TIMEOUT_S)

    teacher = reference()
    batch_rows, replicas = [], set()
    for client, got in zip(jobs, answers):
        assert len(got) == REQUESTS_PER_CLIENT
        for (states, tasks), (status, text, replica) in zip(client, got):
            assert status == 200, text
            out = json_numpy.loads(text)
            actions = out["actions"]
            assert actions.shape == (len(states), 7) and np.all(np.isfinite(actions))
            want = teacher.act(TeacherRequest([""] * len(states), states=states, task_ids=tasks)).actions
            np.testing.assert_allclose(actions, want, atol=1e-6)
            assert out["batch_rows"] >= len(states) and out["model_id"] == "scripted"
            batch_rows.append(out["batch_rows"] - len(states))
            replicas.add(replica)
    assert max(batch_rows) > 0, "no backend call answered more than one request"
    assert None not in replicas and len(replicas) == REPLICAS, replicas


def test_routes_and_errors_match_the_uvicorn_server(server):
    states = random_states(3, np.random.default_rng(1))
    tasks = [PUSH] * 3
    # /healthz needs no key; everything else does
    assert requests.get(f"{server}/healthz", timeout=HTTP_TIMEOUT_S).json()["status"] == "ok"
    r = requests.post(f"{server}/act/batch", data=batch_body(states, tasks), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 401 and API_KEY_HEADER in r.json()["detail"]
    meta = requests.get(f"{server}/metadata", headers=HEADERS, timeout=HTTP_TIMEOUT_S).json()
    assert meta["backend"] == "scripted" and meta["needs_state"] is True and meta["max_batch"] == MAX_BATCH
    assert meta["server"] == "ray-serve" and meta["replica_id"]
    assert {k: meta[k] for k in reference().spec.to_metadata()} == reference().spec.to_metadata()

    # wrong image dtype: 422 naming the field
    bad = batch_body(states, tasks, images=np.zeros((3, 8, 8, 3), np.float32))
    r = requests.post(f"{server}/act/batch", data=bad, headers=HEADERS, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "images"], r.text
    assert "uint8" in r.json()["detail"][0]["msg"]
    # unknown field: 422 naming it
    r = requests.post(f"{server}/act/batch", data=batch_body(states, tasks, stat=[1.0]), headers=HEADERS,
                      timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "stat"], r.text
    # unsupported task (the backend's own check): 422, and the message lists the supported tasks
    r = requests.post(f"{server}/act/batch", data=batch_body(states, ["StackCube-v1"] * 3), headers=HEADERS,
                      timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 422 and PUSH in r.text, r.text
    # body over the limit: 413
    big = b"{" + b" " * (MAX_BODY_BYTES + 1) + b"}"
    r = requests.post(f"{server}/act/batch", data=big, headers=HEADERS, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 413, r.text

    # still serving: OpenVLA's /act (one row, OpenVLA convention) and /act/batch
    want = reference().act(TeacherRequest([""] * 3, states=states, task_ids=tasks)).actions
    body = json_numpy.dumps({"instruction": "push the cube", "state": states[0], "task_id": PUSH,
                             "image": np.zeros((8, 8, 3), np.uint8)})
    r = requests.post(f"{server}/act", data=body, headers=HEADERS, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(json_numpy.loads(r.text), env_to_openvla(want[0]), atol=1e-6)
    r = requests.post(f"{server}/act/batch", data=batch_body(states, tasks), headers=HEADERS, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(json_numpy.loads(r.text)["actions"], want, atol=1e-6)
    # a body of exactly the limit, 1 MiB, is past the decode workers' threshold: a process spawned by the replica
    body = batch_body(states, tasks)
    body = batch_body(states, tasks, unnorm_key="x" * (MAX_BODY_BYTES - len(body) - len(', "unnorm_key": ""')))
    assert len(body.encode()) == MAX_BODY_BYTES
    r = requests.post(f"{server}/act/batch", data=body, headers=HEADERS, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(json_numpy.loads(r.text)["actions"], want, atol=1e-6)


def test_bad_arguments_fail_early_and_replica_errors_are_reported(server):
    with pytest.raises(ValueError, match=BAD_TASK):  # checked in the driver, before any replica starts
        build_deployment("scripted", task=BAD_TASK)
    with pytest.raises(ValueError, match="--model"):
        build_deployment("openvla")
    # a replica whose constructor raises: start_app's error carries the replica's own message
    bad = serve.deployment(TeacherDeployment, name="Broken", ray_actor_options={"num_cpus": 0.1}).bind(
        "scripted", max_batch=4, batch_wait_ms=1.0, api_key=None, max_body_bytes=MAX_BODY_BYTES,
        backend_kwargs={"task": BAD_TASK})
    port = int(server.rsplit(":", 1)[1])
    try:
        with pytest.raises(RuntimeError, match=f"ValueError: unknown task '{BAD_TASK}'"):
            start_app(bad, port=port, name="broken", route_prefix="/broken")
    finally:
        serve.delete("broken")
    assert requests.get(f"{server}/healthz", timeout=HTTP_TIMEOUT_S).status_code == 200  # the good app is untouched
