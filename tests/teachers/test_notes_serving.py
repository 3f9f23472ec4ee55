"""Scratchpads in and notes out through the teacher server, over real HTTP on loopback (issue 13, serving side).

Backends: :class:`~robot_rl.testing.teachers.NotesTeacher` (its note echoes the row's scratchpad), the scripted
teacher on a state-only task (writes notes, ``""`` there), and the OpenVLA backend on the tiny local checkpoint in
plain mode (writes none: ``notes`` is null) and in notes mode with forced generations.
"""

from __future__ import annotations

import json

import json_numpy
import numpy as np
import pytest
import requests
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from test_scripted_teacher import PUSH, random_states

from robot_rl.teacher_protocol import MAX_SCRATCHPAD_CHARS, check_scratchpads, decode_batch_answer
from robot_rl.teachers import ScriptedTeacher, TeacherRequest, TeacherRequestError
from robot_rl.teachers.remote import RemoteTeacher
from robot_rl.teachers.server import ServerInfo, create_app
from robot_rl.testing.server import ServerThread
from robot_rl.testing.teachers import NotesTeacher

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def notes_server():
    teacher = NotesTeacher()
    with ServerThread(create_app(ServerInfo("notes", teacher, 16, 1.0))) as url:
        yield url, teacher


def _post(url: str, body: dict) -> requests.Response:
    return requests.post(f"{url}/act/batch", data=json_numpy.dumps(body), timeout=30)


def _locs(r: requests.Response) -> list[str]:
    return [".".join(map(str, e["loc"])) for e in r.json()["detail"]]


def test_scratchpads_reach_the_backend_and_its_notes_come_back(notes_server):
    url, teacher = notes_server
    longest = "x" * MAX_SCRATCHPAD_CHARS  # at the limit: accepted
    r = _post(url, {"instructions": ["push", "quiet", "lift"], "scratchpads": ["plan: push", "", longest]})
    assert r.status_code == 200, r.text
    out = json_numpy.loads(r.text)
    assert teacher.requests[-1].scratchpads == ["plan: push", "", longest]
    assert out["notes"] == ["push | step=- t=- | plan: push", "", f"lift | step=- t=- | {longest}"]
    assert requests.get(f"{url}/metadata").json()["writes_notes"] is True


@pytest.mark.parametrize("scratchpads, loc", [
    ("plan: push", "body.scratchpads"),  # a string, not a list
    ({"0": "plan: push"}, "body.scratchpads"),
    (["plan: push"], "body.scratchpads"),  # 1 row for 2 instructions
    (["", "a", "b"], "body.scratchpads"),
    (["", 3], "body.scratchpads.1"),
    (["", None], "body.scratchpads.1"),
    (["", ["plan: push"]], "body.scratchpads.1"),
    (["", "x" * (MAX_SCRATCHPAD_CHARS + 1)], "body.scratchpads.1"),
])
def test_malformed_scratchpads_get_422_naming_the_field(notes_server, scratchpads, loc):
    url, teacher = notes_server
    before = len(teacher.requests)
    r = _post(url, {"instructions": ["push", "lift"], "scratchpads": scratchpads})
    assert r.status_code == 422, r.text
    assert _locs(r) == [loc], r.text
    assert len(teacher.requests) == before  # refused before the backend
    assert _post(url, {"instructions": ["push"], "scratchpads": [""]}).status_code == 200  # still serving


def test_remote_teacher_passes_scratchpads_in_and_notes_out(notes_server):
    url, teacher = notes_server
    remote = RemoteTeacher(url)
    assert remote.spec.writes_notes is True
    resp = remote.act(TeacherRequest(["push", "lift"], scratchpads=["plan: push", "done push step 3"]))
    assert resp.notes == ["push | step=- t=- | plan: push", "lift | step=- t=- | done push step 3"]
    assert teacher.requests[-1].scratchpads == ["plan: push", "done push step 3"]
    out = remote.submit(TeacherRequest(["lift"], scratchpads=["plan: lift"], obs_steps=[8])).result(timeout=10)
    assert out.notes == ["lift | step=8 t=- | plan: lift"]
    # Checked locally first, as the server would refuse it: nothing is sent.
    before = len(teacher.requests)
    for bad, why in ((["x" * (MAX_SCRATCHPAD_CHARS + 1)], "item 0 has 8193 characters"),
                     ([7], "item 0 is int, not a string")):
        with pytest.raises(TeacherRequestError, match=why) as err:
            remote.act(TeacherRequest(["push"], scratchpads=bad))
        assert err.value.field == "scratchpads"
        with pytest.raises(TeacherRequestError, match=why):
            remote.submit(TeacherRequest(["push"], scratchpads=bad))
    assert len(teacher.requests) == before and remote.stats.failures == 0
    remote.close()


def test_scripted_teacher_notes_pass_through_empty_on_a_state_only_task():
    teacher = ScriptedTeacher(control_period_steps=4, task=PUSH, seed=0)
    assert teacher.spec.writes_notes is True
    with ServerThread(create_app(ServerInfo("scripted", teacher, 16, 1.0))) as url:
        remote = RemoteTeacher(url)
        resp = remote.act(TeacherRequest(["push the cube"] * 2, states=random_states(2, RNG), task_ids=[PUSH] * 2,
                                         scratchpads=["", "plan: push"]))
        remote.close()
    assert resp.notes == ["", ""] and np.isfinite(resp.actions).all()


def test_check_scratchpads_and_decode_batch_answer_notes():
    assert check_scratchpads(None, 3) is None and check_scratchpads(("a", ""), 2) == ["a", ""]
    for bad, why in (("a", "expected a list of 1 strings, got str"), (["a", "b"], "has 2 rows but instructions has 1"),
                     ([b"a"], "item 0 is bytes"), (["y" * (MAX_SCRATCHPAD_CHARS + 1)], "more than 8192")):
        with pytest.raises(ValueError, match=f"scratchpads: .*{why}"):
            check_scratchpads(bad, 1)
    answer = {"actions": np.zeros((2, 7), np.float32), "model_id": "m"}
    assert decode_batch_answer(json_numpy.dumps(answer | {"notes": None}), 2).notes is None
    assert decode_batch_answer(json_numpy.dumps(answer | {"notes": ["a", ""]}), 2).notes == ["a", ""]
    for notes, why in ((["a"], "2 strings, got 1 items"), (["a", 3], "2 strings; item 1 is int"),
                       ("ab", "2 strings, got str")):
        with pytest.raises(ValueError, match=f"notes must be null or {why}"):
            decode_batch_answer(json_numpy.dumps(answer | {"notes": notes}), 2)


def test_a_server_answering_malformed_notes_gives_no_guidance():
    """A protocol violation in the answer is a failed query (NaN rows, counted), never a crash of the caller."""
    app = FastAPI()

    @app.get("/metadata")
    async def metadata():
        return {"protocol_version": 2, "model_id": "fake", "control_period_steps": 4, "needs_image": False,
                "writes_notes": True}

    @app.post("/act/batch")
    async def act_batch():
        return JSONResponse(json.loads(json_numpy.dumps({"actions": np.zeros((1, 7), np.float32), "model_id": "fake",
                                                          "notes": ["a", "b"]})))

    with ServerThread(app) as url:
        remote = RemoteTeacher(url, retries=0)
        resp = remote.act(TeacherRequest(["push"], scratchpads=[""]))
        remote.close()
    assert np.isnan(resp.actions).all() and resp.notes is None and remote.stats.failures == 1
    assert "notes must be null or 1 strings" in resp.extras["error"]


# ----------------------------------------------------------------------------------------------
# The OpenVLA backend behind the server: plain (no notes) and Notes-to-Self mode (forced generations)


@pytest.fixture(scope="module")
def vla_servers(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from robot_rl.teachers.openvla import OpenVLATeacher
    from robot_rl.testing.tiny_vla import save_tiny_vla

    path = save_tiny_vla(tmp_path_factory.mktemp("tiny_vla_notes"), image_size=64)
    plain = OpenVLATeacher(path, unnorm_key="bridge_orig")
    notes = OpenVLATeacher(path, unnorm_key="bridge_orig", notes=True, notes_max_new_tokens=32)
    with ServerThread(create_app(ServerInfo("openvla", plain, 8, 1.0))) as plain_url, \
            ServerThread(create_app(ServerInfo("openvla", notes, 8, 1.0))) as notes_url:
        yield (plain_url, plain), (notes_url, notes), path


def test_plain_openvla_backend_answers_null_notes(vla_servers):
    (url, _), _, _ = vla_servers
    images = np.zeros((2, 64, 64, 3), np.uint8)
    r = _post(url, {"instructions": ["push the cube"] * 2, "images": images, "scratchpads": ["plan: push", ""]})
    assert r.status_code == 200, r.text
    assert json_numpy.loads(r.text)["notes"] is None
    assert requests.get(f"{url}/metadata").json()["writes_notes"] is False
    remote = RemoteTeacher(url)
    assert remote.spec.writes_notes is False
    assert remote.act(TeacherRequest(["push the cube"], images=images[:1], scratchpads=[""])).notes is None
    remote.close()


def test_openvla_notes_backend_over_http_act_and_submit(vla_servers):
    from test_openvla import BINS, BRIDGE, _by_hand, _ids, _padded, forced_tokens

    from robot_rl.teachers.wire import env_to_openvla

    _, (url, teacher), _ = vla_servers
    assert requests.get(f"{url}/metadata").json()["writes_notes"] is True
    remote = RemoteTeacher(url)
    assert remote.spec.writes_notes is True
    images = np.full((3, 64, 64, 3), 60, np.uint8)
    forced = [
        _ids(teacher, "plan", "##:", "pick", "##,", "place", "</plan>", "<think>", "pick", "</think>", "<act>",
             *BINS[0].tolist()),
        _ids(teacher, "done", "pick", "step", "4", "</think>", "<act>", "<done>", *BINS[1].tolist()),
        _ids(teacher, "pick", "</think>", "<act>", 1, 2, "</s>"),  # malformed: 2 action tokens
    ]
    request = TeacherRequest(["pick the cube"] * 3, images=images, scratchpads=["", "plan: pick, place", "plan: pick"])
    with forced_tokens(teacher, _padded(teacher, forced)):
        resp = remote.act(request)
    assert resp.notes == ["plan: pick, place", "done pick step 4", ""]
    assert np.isfinite(resp.actions[:2]).all() and np.isnan(resp.actions[2]).all()  # the bad row only: no guidance
    np.testing.assert_allclose(env_to_openvla(resp.actions[:2]), _by_hand(BINS[:2], BRIDGE), atol=1e-6)
    with forced_tokens(teacher, _padded(teacher, forced[1:2])):
        out = remote.submit(TeacherRequest(["pick the cube"], images=images[:1], scratchpads=["plan: pick, place"]),
                            ).result(timeout=30)
    assert out.notes == ["done pick step 4"] and np.isfinite(out.actions).all()
    remote.close()


def test_notes_mode_from_the_serving_config(vla_servers):
    """``backend.notes`` (default off) reaches the backend; the plain protocol is the default."""
    from pathlib import Path

    from robot_rl.teachers.config import load_serve_config
    from robot_rl.teachers.server import backend_from_config

    *_, path = vla_servers
    config = Path(__file__).resolve().parents[2] / "configs" / "teacher" / "openvla.yaml"
    common = [f"backend.model={path}", "backend.device=cpu", "backend.torch_dtype=float32"]
    assert load_serve_config(config, common).backend.notes is False
    cfg = load_serve_config(config, common + ["backend.notes=true", "backend.notes_max_new_tokens=64"])
    teacher = backend_from_config(cfg.backend)
    assert teacher.notes is True and teacher.spec.writes_notes is True and teacher.notes_max_new_tokens == 64
