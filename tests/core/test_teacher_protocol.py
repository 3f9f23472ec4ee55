"""The neutral teacher-protocol module: one definition of each piece both the teacher code and the ROS node use."""

import ast
from pathlib import Path

import numpy as np
import pytest

from robot_rl.teacher_protocol import (
    METADATA_SPEC_KEYS,
    PROTOCOL_VERSION,
    batch_body,
    decode_batch_answer,
    dumps,
    loads,
    read_metadata,
    validate_teacher_actions,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_spec_keys_metadata_carries_are_the_protocol_s():
    from robot_rl.teachers.base import TeacherSpec
    from robot_rl.teachers.scripted import ScriptedTeacher
    from robot_rl.teachers.server import ServerInfo

    spec = TeacherSpec(model_id="m", control_period_steps=3, needs_state=True, image_size=(64, 48))
    assert tuple(spec.to_metadata()) == METADATA_SPEC_KEYS
    meta = ServerInfo("scripted", ScriptedTeacher(control_period_steps=4), 16, 5.0).metadata()
    served = read_metadata(loads(dumps(meta)))
    assert (served.control_period_steps, served.needs_image, served.needs_state) == (4, False, True)
    assert served.protocol_version == PROTOCOL_VERSION and served.backend == "scripted"
    assert read_metadata({}).needs_image  # a server that does not say is taken to need images (OpenVLA)
    with pytest.raises(ValueError, match="image_size"):
        read_metadata({"image_size": 5})
    with pytest.raises(ValueError, match="JSON object"):
        read_metadata([1, 2])


def test_batch_body_and_answer_round_trip_and_refusals():
    body = loads(dumps(batch_body(["push"], states=np.ones((1, 38)), task_ids=["t"], obs_steps=np.array([3]),
                                  obs_times_s=np.array([1.5]))))
    assert body["states"].dtype == np.float32 and body["obs_steps"].dtype == np.int64 and "images" not in body
    ans = decode_batch_answer(dumps({"actions": np.zeros((2, 7)), "model_id": "m", "latencies_s": [0.1, 0.2]}), 2)
    assert ans.actions.shape == (2, 7) and ans.latencies_s.tolist() == [0.1, 0.2]
    with pytest.raises(ValueError, match=r"shape \(1, 7\) for 2 rows"):
        decode_batch_answer({"actions": np.zeros((1, 7)), "model_id": "m"}, 2)
    with pytest.raises(ValueError, match="no 'model_id'"):
        decode_batch_answer({"actions": np.zeros((1, 7))}, 1)


def test_answer_validation_by_hand():
    d = 4
    rows = np.array([[4.0, 0, 0, 0, 0, 0, 1], [4.01, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1.01],
                     [np.nan, 0, 0, 0, 0, 0, 0], [0, 0, 0, -4, 0, 0, -1]])
    assert validate_teacher_actions(rows, 5, d).tolist() == [True, False, False, False, True]
    assert not validate_teacher_actions(np.zeros((1, 6)), 1, d).any()
    assert not validate_teacher_actions("nonsense", 1, d).any()


def test_deploy_imports_nothing_from_teachers():
    """DESIGN.md: deploy/ never imports teachers/ (nor robot_rl.teachers), not even inside a function."""
    offenders = []
    for path in sorted((ROOT / "deploy").glob("*.py")) + [ROOT / "robot_rl" / "teacher_protocol.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names if "teachers" in n]
    assert offenders == []
