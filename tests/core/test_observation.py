"""The observation schema (robot_rl.observation) by hand: offsets, split/join, comparison, serialization, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robot_rl.observation import (
    GROUP_ORDER,
    ObservationSchema,
    ObsField,
    ObsGroup,
    SchemaMismatch,
    schema_for,
    state_group,
)

A = ObsField("a", 3, "world", "m", "a vector", ("x", "y", "z"), source="position(tcp)")
B = ObsField("b", 1, "none", "0 or 1", "a flag")
HINT = ObsField("hint", 7, "none", "action units", "the teacher's last answer")
DT = ObsField("dt", 1, "none", "s", "its age")


def schema(*groups: ObsGroup) -> ObservationSchema:
    return ObservationSchema("RRL-PushCube-Sparse-v1", groups)


def test_offsets_and_slices_by_hand():
    s = schema(ObsGroup("state", (A, B), required=True), ObsGroup("teacher", (HINT, DT)))
    assert s.size == 12 and s.group_names == ("state", "teacher")
    assert s.group_slices() == {"state": slice(0, 4), "teacher": slice(4, 12)}
    assert s.field_slices("state") == {"a": slice(0, 3), "b": slice(3, 4)}
    assert s.field_slices("teacher") == {"hint": slice(4, 11), "dt": slice(11, 12)}
    assert [(r["group"], r["name"], r["offset"]) for r in s.rows()] == [
        ("state", "a", 0), ("state", "b", 3), ("teacher", "hint", 4), ("teacher", "dt", 11)]
    assert s.field_at(3) == "state.b" and s.field_at(11) == "teacher.dt"
    assert s.describe_sizes() == "state 4 + teacher 8 = 12"
    with pytest.raises(IndexError):
        s.field_at(12)


def test_split_and_join_round_trip():
    s = schema(ObsGroup("state", (A, B)), ObsGroup("teacher", (HINT, DT)))
    x = np.arange(24, dtype=np.float32).reshape(2, 12)
    parts = s.split(x)
    np.testing.assert_array_equal(parts["teacher"], x[:, 4:])
    np.testing.assert_array_equal(s.join(parts), x)
    with pytest.raises(SchemaMismatch, match="size 12"):
        s.split(np.zeros((2, 11)))
    with pytest.raises(SchemaMismatch, match="group 'teacher' missing \\(first field 'hint'\\)"):
        s.join({"state": x[:, :4]})
    with pytest.raises(SchemaMismatch, match="'teacher' has \\(7,\\) values, expected 8"):
        s.join({"state": x[:, :4], "teacher": x[:, 4:11]})
    with pytest.raises(SchemaMismatch, match="\\['memory'\\] are not in the schema"):
        s.join({**parts, "memory": x[:, :1]})


def test_groups_are_validated():
    with pytest.raises(ValueError, match="needs a 'state' group"):
        schema(ObsGroup("teacher", (HINT,)))
    with pytest.raises(ValueError, match="not in the order"):
        schema(ObsGroup("teacher", (HINT,)), ObsGroup("state", (A,)))
    with pytest.raises(ValueError, match="unknown observation group 'vision'"):
        ObsGroup("vision", (A,))
    with pytest.raises(ValueError, match="fields \\['a'\\] appear twice"):
        ObsGroup("state", (A, A))
    with pytest.raises(ValueError, match="2 components for size 3"):
        ObsField("c", 3, "world", "m", "", ("x", "y"))
    assert GROUP_ORDER == ("state", "teacher", "memory")


def test_differences_name_group_and_field():
    base = schema(ObsGroup("state", (A, B)))
    assert base.differences(base) == []
    wider = schema(ObsGroup("state", (A, ObsField("b", 2, "none", "0 or 1", "a flag"))))
    assert base.differences(wider) == ["state.b: size 1 != 2"]
    moved = schema(ObsGroup("state", (ObsField("a", 3, "robot_base", "m", "", ("x", "y", "z"), "position(tcp)"), B)))
    assert base.differences(moved) == ["state.a: frame 'world' != 'robot_base'"]
    swapped = schema(ObsGroup("state", (B, A)))
    assert base.differences(swapped)[0] == "state.a: field 0 is 'a' in the first schema, 'b' in the second"
    with_teacher = schema(ObsGroup("state", (A, B)), ObsGroup("teacher", (HINT,)))
    assert base.differences(with_teacher) == ["teacher: group only in the second schema (first field 'hint')"]
    with pytest.raises(SchemaMismatch, match="the policy's sidecar does not match .*state.b: size 1 != 2"):
        base.check_matches(wider, "the policy's sidecar")
    # descriptions are documentation, not layout
    assert not base.differences(schema(ObsGroup("state", (ObsField("a", 3, "world", "m", "other words", ("x", "y", "z"),
                                                                    "position(tcp)"), B))))


def test_serialization_round_trip_and_errors(tmp_path):
    s = schema(ObsGroup("state", (A, B), "the state", required=True), ObsGroup("teacher", (HINT, DT)))
    d = json.loads(json.dumps(s.to_dict()))
    assert d["size"] == 12 and d["groups"][0]["required"] is True and d["groups"][0]["fields"][0]["source"]
    assert ObservationSchema.from_dict(d) == s
    s.save(tmp_path / "schema.json")
    assert ObservationSchema.load(tmp_path / "schema.json") == s
    bad = dict(d, size=13)
    with pytest.raises(ValueError, match="says size 13 but its fields sum to 12"):
        ObservationSchema.from_dict(bad)
    with pytest.raises(ValueError, match="version 2 is not supported"):
        ObservationSchema.from_dict(dict(d, version=2))
    broken = json.loads(json.dumps(d))
    del broken["groups"][1]["fields"][0]["name"]
    with pytest.raises(ValueError, match="malformed observation schema"):
        ObservationSchema.from_dict(broken)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ObservationSchema.load(tmp_path / "bad.json")


def test_schema_of_a_task_is_its_state_group():
    s = schema_for("PickCube-v2")  # a paper name resolves to the env id
    assert s.task == "RRL-PickCube-Sparse-v1" and s.group_names == ("state",) and s.size == 42
    assert s.group("state").required and s.group("state") == state_group("RRL-PickCube-Sparse-v1")
    assert schema_for("RRL-PickCube-Sparse-LH-v1").task == "RRL-PickCube-Sparse-LH-v1"
    assert not schema_for("RRL-PickCube-Sparse-LH-v1").differences(s)
    with pytest.raises(KeyError, match="'teacher' is not in this schema \\(groups: state\\)"):
        s.group("teacher")
    with pytest.raises(ValueError, match="no observation layout for task 'RRL-Nope-Sparse-v1'"):
        schema_for("RRL-Nope-Sparse-v1")
