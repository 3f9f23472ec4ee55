"""Our teacher server's openpi endpoint against the real ``openpi-client`` 0.1.2 (PyPI), over real uvicorn on loopback.

The scripted backend is deterministic, so every answer is compared with an in-process ScriptedTeacher's. Frames the
real client cannot send (malformed msgpack, a complex array, a text frame, an oversize frame) go through a plain
``websockets`` client.
"""

import threading

import msgpack
import numpy as np
import pytest
import requests
from openpi_client import msgpack_numpy as upstream
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from test_scripted_teacher import PUSH, random_states
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from robot_rl.teachers import ScriptedTeacher, TeacherRequest
from robot_rl.teachers.openpi_wire import ERROR_CLOSE_CODE, ERROR_CLOSE_REASON, TOO_BIG_CLOSE_CODE
from robot_rl.teachers.server import ServerInfo, create_app
from robot_rl.teachers.wire import ENV_CONVENTION
from robot_rl.testing.server import ServerThread

# openpi-client 0.1.2 keeps its connection without a `with` block, which websockets >= 17.1 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

RNG = np.random.default_rng(3)
#: The frame limit of the test server (bytes): small, so an oversize frame is cheap to send.
MAX_FRAME = 256 * 1024


def scripted():
    return ScriptedTeacher(control_period_steps=4, task=PUSH, seed=0)


def expected(states):
    return scripted().act(TeacherRequest([""] * len(states), states=states, task_ids=[PUSH] * len(states))).actions


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def server():
    """Scripted backend, a 50 ms batching window (concurrent connections meet in one batch), a 256 KiB frame limit."""
    app = create_app(ServerInfo("scripted", scripted(), max_batch=16, batch_wait_ms=50.0),
                     openpi_max_frame_bytes=MAX_FRAME)
    with ServerThread(app) as url:
        yield url, app


def obs_of(state, **extra):
    return {"observation/image": np.zeros((224, 224, 3), np.uint8), "observation/state": state,
            "prompt": "push the cube", **extra}


def test_real_openpi_client_gets_metadata_actions_and_timing(server):
    url, _ = server
    client = WebsocketClientPolicy("127.0.0.1", port_of(url))
    meta = client.get_server_metadata()
    assert meta["backend"] == "scripted" and meta["control_period_steps"] == 4 and meta["needs_state"] is True
    assert meta["openpi"]["action_steps"] == 4 and meta["openpi"]["action_convention"] == ENV_CONVENTION
    assert meta["openpi"]["max_frame_bytes"] == MAX_FRAME
    states = random_states(2, RNG)
    first = client.infer(obs_of(states[0]))
    second = client.infer(obs_of(states[1], task_id=PUSH))
    for out, st in ((first, states[0]), (second, states[1])):
        assert out["actions"].shape == (1, 7) and out["actions"].dtype == np.float32
        np.testing.assert_allclose(out["actions"], expected(st[None]), atol=1e-6)
        assert out["server_timing"]["infer_ms"] >= out["policy_timing"]["infer_ms"] > 0
    assert "prev_total_ms" not in first["server_timing"]  # as upstream: from the second reply on
    assert second["server_timing"]["prev_total_ms"] >= first["server_timing"]["infer_ms"]
    # the path is ignored, as openpi's server ignores it
    assert WebsocketClientPolicy(f"ws://127.0.0.1:{port_of(url)}/any/path").infer(obs_of(states[0]))["actions"].shape \
        == (1, 7)


def test_many_connections_share_the_dynamic_batcher(server):
    url, app = server
    n = 6
    states = random_states(n, RNG)
    clients = [WebsocketClientPolicy("127.0.0.1", port_of(url)) for _ in range(n)]
    barrier, out = threading.Barrier(n), [None] * n

    def one(i):
        barrier.wait()
        out[i] = clients[i].infer(obs_of(states[i]))["actions"]

    batcher = app.state.batcher
    calls0, served0 = batcher.backend_calls, batcher.requests_served
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert batcher.requests_served - served0 == n
    assert batcher.backend_calls - calls0 < n  # rows of different connections met in one backend call
    np.testing.assert_allclose(np.concatenate(out), expected(states), atol=1e-6)  # each got its own row


def test_api_key_on_the_handshake_openpi_header_or_ours():
    app = create_app(ServerInfo("scripted", scripted(), 8, 1.0), api_key="s3cret")
    with ServerThread(app) as url:
        port, st = port_of(url), random_states(1, RNG)[0]
        assert WebsocketClientPolicy("127.0.0.1", port, api_key="s3cret").infer(obs_of(st))["actions"].shape == (1, 7)
        with connect(f"ws://127.0.0.1:{port}", additional_headers={"X-API-Key": "s3cret"}) as ws:
            assert isinstance(upstream.unpackb(ws.recv(timeout=5)), dict)
        for key in ("wrong", None):
            with pytest.raises(InvalidStatus) as err:
                WebsocketClientPolicy("127.0.0.1", port, api_key=key)
            assert err.value.response.status_code == 401
            assert b"Authorization: Api-Key <key>" in err.value.response.body
        assert requests.get(f"{url}/healthz").status_code == 200  # /healthz stays open


def test_plain_http_on_the_openpi_endpoint_gets_a_426_that_says_why(server):
    url, _ = server
    for method in (requests.get, requests.post):
        r = method(f"{url}/")
        assert r.status_code == 426 and r.headers["upgrade"] == "websocket"
        assert "WebSocket" in r.json()["detail"] and "POST /act" in r.json()["detail"]


def _array(dtype: str, shape: list, data: bytes) -> dict:
    """A msgpack-numpy array map written by hand (the real client refuses to pack a bad one)."""
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


BAD_FRAMES = {
    "malformed_msgpack": (b"\xc1\x00\x01", "bad frame: malformed msgpack"),
    "trailing_bytes": (upstream.packb({"prompt": "x"}) + b"\x00", "bad frame: malformed msgpack"),
    "complex_dtype": (msgpack.packb({"observation/state": _array("<c16", [2], bytes(32)), "prompt": "x"}),
                      "unsupported dtype complex128"),
    "shape_not_data": (msgpack.packb({"observation/state": _array("<f4", [5], bytes(8)), "prompt": "x"}),
                       "not a valid msgpack-numpy array"),
    "not_a_map": (upstream.packb([1, 2, 3]), "observation: expected a msgpack map"),
    "float_image": (upstream.packb({"observation/image": np.zeros((8, 8, 3), np.float32), "prompt": "x",
                                    "observation/state": np.zeros(20, np.float32)}),
                    "observation/image: expected dtype uint8, got float32"),
    "state_2d": (upstream.packb({"observation/state": np.zeros((2, 20), np.float32), "prompt": "x"}),
                 "observation/state: expected 1 dimensions"),
    "string_state": (upstream.packb({"observation/state": np.array(["a", "b"]), "prompt": "x"}),
                     "observation/state: dtype <U1 is not numeric"),
    "missing_state": (upstream.packb({"prompt": "x"}), "observation/state: scripted plans from the privileged state"),
    "missing_prompt": (upstream.packb({"observation/state": np.zeros(20, np.float32)}), "prompt: Field required"),
    "short_state": (upstream.packb({"observation/state": np.zeros(3, np.float32), "prompt": "x"}),
                    "observation/state: must be (B, >=20), got (1, 3)"),
    "text_frame": ("{}", "expected a binary msgpack frame"),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_bad_frame_gets_openpi_error_frame_then_1011_and_the_server_stays_up(server, name):
    url, _ = server
    frame, message = BAD_FRAMES[name]
    port, st = port_of(url), random_states(1, RNG)
    bystander = WebsocketClientPolicy("127.0.0.1", port)  # a connection open while another one fails
    with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
        ws.recv(timeout=5)  # the metadata
        ws.send(frame)
        text = ws.recv(timeout=5)
        assert isinstance(text, str) and message in text, text
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == ERROR_CLOSE_CODE and closed.value.rcvd.reason == ERROR_CLOSE_REASON
    np.testing.assert_allclose(bystander.infer(obs_of(st[0]))["actions"], expected(st), atol=1e-6)
    with pytest.raises(RuntimeError, match="Error in inference server"):  # what the real client makes of it
        WebsocketClientPolicy("127.0.0.1", port).infer({"prompt": "x"})


def test_oversize_frame_is_refused_with_1009_naming_the_limit(server):
    url, _ = server
    port, st = port_of(url), random_states(1, RNG)
    big = upstream.packb(obs_of(st[0]) | {"observation/image": np.zeros((300, 300, 3), np.uint8)})
    assert len(big) > MAX_FRAME
    with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
        ws.recv(timeout=5)
        ws.send(big)
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == TOO_BIG_CLOSE_CODE
    assert str(MAX_FRAME) in closed.value.rcvd.reason, closed.value.rcvd.reason
    np.testing.assert_allclose(WebsocketClientPolicy("127.0.0.1", port).infer(obs_of(st[0]))["actions"], expected(st),
                               atol=1e-6)  # a 224x224 frame still fits
