"""The timed teacher protocol by hand: TeacherRequest / TeacherResponse fields and their validation,
TeacherSpec (checks, trimming, metadata), and the Teacher protocol's check_request contract.
"""

import dataclasses

import numpy as np
import pytest
from test_scripted_teacher import PUSH, random_states

from robot_rl.teachers import (
    ScriptedTeacher,
    Teacher,
    TeacherRequest,
    TeacherRequestError,
    TeacherResponse,
    TeacherSpec,
)
from robot_rl.teachers.wire import encode_batch_request, nested_latency
from robot_rl.testing.teachers import NotesTeacher

# ----------------------------------------------------------------------------------------------
# TeacherRequest: per-row env step and time of the observation


def test_request_stamps_are_stored_as_int64_and_float64():
    req = TeacherRequest(["a", "b", "c"], obs_steps=[0, 7, 49], obs_times_s=[1.5, 2, 1e9])
    assert req.obs_steps.dtype == np.int64 and req.obs_steps.tolist() == [0, 7, 49]
    assert req.obs_times_s.dtype == np.float64 and req.obs_times_s.tolist() == [1.5, 2.0, 1e9]
    req = TeacherRequest(["a"], obs_steps=np.array([3], np.uint8), obs_times_s=np.array([0.25], np.float32))
    assert req.obs_steps.dtype == np.int64 and req.obs_times_s.dtype == np.float64
    assert TeacherRequest(["a"]).obs_steps is None and TeacherRequest(["a"]).obs_times_s is None
    empty = TeacherRequest([], obs_steps=[], obs_times_s=[])
    assert len(empty) == 0 and empty.obs_steps.shape == (0,)


@pytest.mark.parametrize("kwargs, match", [
    ({"obs_steps": [1]}, r"obs_steps must be \(B=2,\)"),
    ({"obs_steps": [[1, 2]]}, r"obs_steps must be \(B=2,\)"),
    ({"obs_steps": [1.0, 2.5]}, "obs_steps must hold integer env steps"),
    ({"obs_steps": [True, False]}, "obs_steps must hold integer env steps"),
    ({"obs_steps": [3, -1]}, "obs_steps must be >= 0"),
    ({"obs_times_s": [0.0, 1.0, 2.0]}, r"obs_times_s must be \(B=2,\)"),
    ({"obs_times_s": [0.0, np.nan]}, "obs_times_s must be finite"),
    ({"obs_times_s": ["now", "later"]}, "obs_times_s must hold seconds"),
])
def test_request_stamp_errors_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TeacherRequest(["a", "b"], **kwargs)


# ----------------------------------------------------------------------------------------------
# TeacherResponse: per-row latency, notes and stamps


def test_response_scalar_latency_is_broadcast_and_rows_are_kept():
    r = TeacherResponse(np.zeros((3, 7)), 0.125, "m")
    assert r.actions.dtype == np.float32 and len(r) == 3
    assert r.latency_s.dtype == np.float64 and r.latency_s.tolist() == [0.125] * 3
    assert r.notes is None and r.obs_steps is None and r.obs_times_s is None and r.answer_times_s is None
    r = TeacherResponse(np.zeros((2, 7), np.float32), latency_s=[0.1, 0.3], notes=["cube at (0.1, 0.0)", ""],
                        obs_steps=[4, 9], obs_times_s=[10.0, 10.5], answer_times_s=[10.2, 10.8])
    assert r.latency_s.tolist() == [0.1, 0.3] and r.notes == ["cube at (0.1, 0.0)", ""]
    assert r.obs_steps.dtype == np.int64 and r.answer_times_s.dtype == np.float64
    assert TeacherResponse(np.zeros((0, 7))).latency_s.shape == (0,)


def test_response_rows_slices_every_per_row_field():
    r = TeacherResponse(np.arange(21, dtype=np.float32).reshape(3, 7), [0.1, 0.2, 0.3], "m", notes=["a", "b", "c"],
                        obs_steps=[1, 2, 3], obs_times_s=[5.0, 6.0, 7.0], answer_times_s=[8.0, 9.0, 10.0],
                        extras={"phases": ["x"] * 3})
    part = r.rows(1, 3, batch_rows=3)
    assert part.actions.shape == (2, 7) and part.actions[0, 0] == 7 and part.latency_s.tolist() == [0.2, 0.3]
    assert part.notes == ["b", "c"] and part.obs_steps.tolist() == [2, 3] and part.obs_times_s.tolist() == [6.0, 7.0]
    assert part.answer_times_s.tolist() == [9.0, 10.0] and part.model_id == "m" and part.extras == {"batch_rows": 3}


@pytest.mark.parametrize("kwargs, match", [
    ({"actions": np.zeros((2, 6))}, r"actions must be \(B, 7\)"),
    ({"actions": np.zeros(7)}, r"actions must be \(B, 7\)"),
    ({"actions": [["x"] * 7] * 2}, r"actions must be a \(B, 7\) float array"),
    ({"latency_s": [0.1, 0.2, 0.3]}, r"latency_s must be a scalar or \(B=2,\)"),
    ({"latency_s": -0.1}, "latency_s must be finite seconds >= 0"),
    ({"latency_s": [0.1, np.inf]}, "latency_s must be finite seconds >= 0"),
    ({"notes": ["only one"]}, "notes must have B=2 entries, got 1 entries"),
    ({"notes": "a string"}, "notes must have B=2 entries, got a string"),
    ({"notes": ["a", None]}, "notes must be strings"),
    ({"obs_steps": [1]}, r"obs_steps must be \(B=2,\)"),
    ({"answer_times_s": [1.0, np.nan]}, "answer_times_s must be finite"),
])
def test_response_errors_name_the_field(kwargs, match):
    fields = {"actions": np.zeros((2, 7))} | kwargs
    with pytest.raises(ValueError, match=match):
        TeacherResponse(**fields)


# ----------------------------------------------------------------------------------------------
# TeacherSpec


def test_spec_is_frozen_and_validated():
    spec = TeacherSpec(model_id="m", control_period_steps=4, image_size=[224, 256], unnorm_keys=["a", "b"])
    assert spec.image_size == (224, 256) and spec.unnorm_keys == ("a", "b")
    assert (spec.needs_image, spec.needs_state, spec.state_dim, spec.writes_notes) == (False, False, None, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.needs_image = True
    for kwargs, match in [({"control_period_steps": 0}, "control_period_steps"),
                          ({"control_period_steps": 2.5}, "control_period_steps"), ({"state_dim": 0}, "state_dim"),
                          ({"image_size": (224,)}, "image_size"), ({"image_size": (0, 10)}, "image_size")]:
        with pytest.raises(ValueError, match=match):
            TeacherSpec(**({"model_id": "m", "control_period_steps": 4} | kwargs))
    with pytest.raises(TypeError):
        TeacherSpec("m", 4)  # keyword-only: a spec reads by name


def test_spec_check_names_the_field():
    vla = TeacherSpec(model_id="vla", control_period_steps=4, needs_image=True, unnorm_keys=("bridge_orig",))
    planner = TeacherSpec(model_id="planner", control_period_steps=4, needs_state=True)
    images = np.zeros((1, 8, 8, 3), np.uint8)
    for spec, req, field in [
        (vla, TeacherRequest(["x"]), "images"),
        (vla, TeacherRequest(["x"], images=images, unnorm_key="nope"), "unnorm_key"),
        (planner, TeacherRequest(["x"], images=images), "states"),
    ]:
        with pytest.raises(TeacherRequestError) as e:
            spec.check(req)
        assert e.value.field == field and str(e.value).startswith(f"{field}: ") and isinstance(e.value, ValueError)
    vla.check(TeacherRequest(["x"], images=images, unnorm_key="bridge_orig"))
    # no statistics: ignored
    planner.check(TeacherRequest(["x"], states=np.zeros((1, 20), np.float32), unnorm_key="anything"))


def test_spec_trim_drops_what_the_backend_does_not_read():
    req = TeacherRequest(["x"], images=np.zeros((1, 8, 8, 3), np.uint8), states=np.zeros((1, 20), np.float32),
                         obs_steps=[3], scratchpads=["<plan>push</plan>"])
    planner = TeacherSpec(model_id="p", control_period_steps=4, needs_state=True)
    vla = TeacherSpec(model_id="v", control_period_steps=4, needs_image=True)
    both = TeacherSpec(model_id="b", control_period_steps=4, needs_image=True, needs_state=True)
    trimmed = planner.trim(req)
    assert trimmed.images is None and trimmed.states is req.states and trimmed.obs_steps.tolist() == [3]
    assert trimmed.scratchpads == req.scratchpads and req.images is not None  # the caller's request is untouched
    assert vla.trim(req).states is None and vla.trim(req).images is req.images
    assert both.trim(req) is req


def test_spec_metadata_round_trip():
    spec = TeacherSpec(model_id="openvla:x", control_period_steps=3, needs_image=True, image_size=(224, 224),
                       unnorm_keys=("a", "b"), writes_notes=True)
    meta = spec.to_metadata()
    assert meta == {"model_id": "openvla:x", "control_period_steps": 3, "needs_image": True, "needs_state": False,
                    "state_dim": None, "image_size": [224, 224], "unnorm_keys": ["a", "b"], "writes_notes": True}
    assert TeacherSpec.from_metadata({**meta, "backend": "openvla", "max_batch": 16}) == spec  # other keys ignored
    assert TeacherSpec.from_metadata(meta, control_period_steps=8).control_period_steps == 8
    old = TeacherSpec.from_metadata({"model_id": "m"})  # a server that reports few fields
    assert old.needs_image is True and old.control_period_steps == 4 and old.unnorm_keys == ()


# ----------------------------------------------------------------------------------------------
# The Teacher protocol


def test_backends_implement_the_protocol_and_its_check_contract():
    scripted = ScriptedTeacher(control_period_steps=4, task=PUSH)
    notes = NotesTeacher()
    for teacher in (scripted, notes):
        assert isinstance(teacher, Teacher) and isinstance(teacher.spec, TeacherSpec)
    ok = TeacherRequest(["push"], states=random_states(1, np.random.default_rng(0)), task_ids=[PUSH])
    assert scripted.check_request(ok) is None
    for req, field in [
        (TeacherRequest(["push"], task_ids=[PUSH]), "states"),
        (TeacherRequest(["push"], states=np.zeros((1, 7), np.float32), task_ids=[PUSH]), "states"),
        (TeacherRequest(["push"], states=np.zeros((1, 20), np.float32), task_ids=["StackCube-v1"]), "task_ids"),
    ]:
        for call in (scripted.check_request, scripted.act):  # act refuses what the check refuses, with the same error
            with pytest.raises(TeacherRequestError) as e:
                call(req)
            assert e.value.field == field
    with pytest.raises(TeacherRequestError) as e:
        notes.check_request(TeacherRequest(["refuse"]))
    assert e.value.field == "instructions"


def test_notes_teacher_writes_what_each_row_carried():
    teacher = NotesTeacher()
    resp = teacher.act(TeacherRequest(["push", "quiet", "lift"], scratchpads=["p0", "p1", "p2"], obs_steps=[0, 4, 8],
                                      obs_times_s=[1.0, 1.2, 1.4]))
    assert resp.notes == ["push | step=0 t=1.0 | p0", "", "lift | step=8 t=1.4 | p2"] and teacher.spec.writes_notes
    assert teacher.act(TeacherRequest(["push"])).notes == ["push | step=- t=- | -"]


# ----------------------------------------------------------------------------------------------
# wire helpers


def test_nested_latency_by_hand():
    # 0.5 s outside, rows took 0.1 / 0.2 / 0.4 inside: the 0.1 s the span spent outside its slowest row is added to each
    np.testing.assert_allclose(nested_latency(0.5, np.array([0.1, 0.2, 0.4]), 3), [0.2, 0.3, 0.5])
    np.testing.assert_allclose(nested_latency(0.5, None, 2), [0.5, 0.5])
    np.testing.assert_allclose(nested_latency(0.1, np.array([0.2, 0.3]), 2), [0.2, 0.3])  # never below the inner time
    assert nested_latency(0.5, np.array([0.1]), 2).tolist() == [0.5, 0.5]  # a wrong row count is not trusted


def test_batch_body_carries_stamps_unless_told_not_to():
    req = TeacherRequest(["a", "b"], obs_steps=[1, 2], obs_times_s=[0.5, 0.75])
    body = encode_batch_request(req)
    assert body["obs_steps"].dtype == np.int64 and body["obs_times_s"].tolist() == [0.5, 0.75]
    assert "obs_steps" not in encode_batch_request(req, stamps=False)
    assert "obs_times_s" not in encode_batch_request(req, stamps=False)
    assert "obs_steps" not in encode_batch_request(TeacherRequest(["a"]))
