"""The bounded scratchpad (robot_rl.memory): both renderings of one state, eviction, bad notes, the round trip."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.memory import MemorySpec, Scratchpad, memory_spec, parse_notes, render_text
from robot_rl.memory.notes_to_self import (
    MalformedGeneration,
    forced_prefix,
    note_of,
    parse_generation,
    prompt_with_scratchpad,
)

SPEC = MemorySpec(("cube", "goal"), ("pick", "place", "restore"), grounding_slots=2, plan_slots=3, act_slots=2)
NOTE = "plan: pick, place, restore\nseen cube at 0.6154 -0.0344 0.02 step 0\ndone pick step 31"


def test_text_and_vector_render_one_state():
    pad = Scratchpad(SPEC, 2)
    parsed = pad.write(0, NOTE)
    assert parsed.dropped == 0 and parsed.truncated == 0
    assert pad.text(0) == "plan: pick, place, restore\nseen cube at 0.615 -0.034 0.020 step 0\ndone pick step 31"
    assert pad.text(1) == ""
    vec = pad.vector()
    assert vec.shape == (2, SPEC.size) and vec.dtype == np.float32
    assert not vec[1].any()
    group = SPEC.group()
    assert group.name == "memory" and group.size == SPEC.size
    sl = group.field_slices()
    v = vec[0]
    assert v[sl["ground0_present"]] == [1.0]
    np.testing.assert_array_equal(v[sl["ground0_object"]], [1.0, 0.0])
    np.testing.assert_allclose(v[sl["ground0_pos"]], [0.615, -0.034, 0.020], atol=1e-6)
    assert v[sl["ground0_time"]] == [0.0]
    assert not v[sl["ground1_present"]].any()
    np.testing.assert_array_equal(v[sl["plan0"]], [1, 0, 0])
    np.testing.assert_array_equal(v[sl["plan2"]], [0, 0, 1])
    assert v[sl["act0_present"]] == [1.0]
    np.testing.assert_array_equal(v[sl["act0_subtask"]], [1, 0, 0])
    assert v[sl["act0_time"]] == pytest.approx([31 * 0.05])
    # units and frames documented field by field
    by = {f.name: f for f in group.fields}
    assert by["ground0_pos"].unit == "m" and by["ground0_pos"].frame == "robot_base"
    assert by["act0_time"].unit == "s" and by["plan0"].components == SPEC.subtasks


def test_round_trip_text_to_notes_to_same_state():
    pad = Scratchpad(SPEC, 1)
    pad.write(0, NOTE)
    pad.write(0, "seen goal at 0.5 0.1 0.001 step 4\ndone place step 40")
    again = Scratchpad(SPEC, 1)
    again.load_text(0, pad.text(0))
    assert again.entries(0) == pad.entries(0)
    assert again.text(0) == pad.text(0)
    np.testing.assert_array_equal(again.vector(), pad.vector())
    assert render_text(parse_notes(pad.text(0), SPEC)) == pad.text(0)


def test_eviction_is_oldest_first_and_counted():
    pad = Scratchpad(SPEC, 1)
    pad.write(0, "done pick step 1\ndone place step 2")
    pad.write(0, "done restore step 3")  # 2 act slots: "pick" goes
    assert [a.name for a in pad.entries(0).act] == ["place", "restore"]
    assert pad.stats.evicted == 1
    pad.write(0, "seen cube at 0 0 0 step 1\nseen goal at 0 0 0 step 2")
    pad.write(0, "seen cube at 0.1 0 0 step 5")  # the same object again replaces its slot, no eviction
    assert [(g.name, g.step) for g in pad.entries(0).grounding] == [("goal", 2), ("cube", 5)]
    assert pad.stats.evicted == 1
    assert pad.metrics()["memory/evicted"] == 1.0


def test_bad_notes_are_dropped_or_truncated_and_counted_never_raised():
    pad = Scratchpad(SPEC, 1)
    parsed = pad.write(0, "plan: pick, fly, place, restore, pick\nseen dragon at 0 0 0 step 1\n"
                          "seen cube at nan 0 0 step 1\nseen cube at 9 9 9 step 1\ndone teleport step 3\n"
                          "hello world\n\n")
    assert parsed.dropped == 6  # fly, dragon, nan, far away, teleport, the free text
    assert parsed.truncated == 1  # a fourth plan name beyond 3 slots
    assert pad.entries(0).plan == ["pick", "place", "restore"]
    assert pad.entries(0).grounding == [] and pad.entries(0).act == []
    long = "done pick step 1\n" + "x" * 5000
    short = Scratchpad(MemorySpec(("cube",), ("pick",), max_note_chars=100), 1)
    p = short.write(0, long)
    assert p.truncated == 1 and [a.name for a in short.entries(0).act] == ["pick"]
    for bad in (None, "", "\x00\x01", "plan:", "seen cube at 1 2 step x"):
        pad.write(0, bad)  # no exception


def test_clear_starts_a_new_episode():
    pad = Scratchpad(SPEC, 3)
    for i in range(3):
        pad.write(i, NOTE)
    pad.clear(np.array([True, False, True]))
    assert pad.texts([0, 1, 2])[0] == "" and pad.texts([1])[0] != "" and pad.text(2) == ""
    assert not pad.vector()[[0, 2]].any() and pad.vector()[1].any()
    pad.clear()
    assert not pad.vector().any()
    with pytest.raises(IndexError):
        pad.texts([3])


def test_spec_from_group_and_errors():
    spec = memory_spec("RRL-PickPlaceCube-Restore-v1", 3, 2, 5)
    assert MemorySpec.from_group(spec.group()) == spec
    with pytest.raises(ValueError, match="grounding_slots"):
        MemorySpec(("cube",), ("pick",), grounding_slots=0)
    with pytest.raises(ValueError, match="lower-case"):
        MemorySpec(("Cube",), ("pick",))
    assert memory_spec("RRL-PushCube-Sparse-v1").objects == ("object", "goal", "tool")  # the default vocabulary


def test_notes_to_self_format():
    assert forced_prefix("") == "<plan>" and forced_prefix("plan: pick") == "<think>"
    p = "In: What action should the robot take to pick the cube?\nOut:"
    assert prompt_with_scratchpad(p, "") == p
    assert prompt_with_scratchpad(p, "plan: pick") == (
        "In: What action should the robot take to pick the cube?\n<plan>plan: pick</plan>\nOut:")
    gen = parse_generation("<plan>plan: pick, place</plan><think>done pick step 3</think><act><done>ABCDEFG")
    assert gen.plan == "plan: pick, place" and gen.think == "done pick step 3" and gen.done
    assert note_of(gen) == "plan: pick, place\ndone pick step 3"
    assert note_of(parse_generation("<think>moving</think><act>ABCDEFG")) == ""
    with pytest.raises(MalformedGeneration):
        parse_generation("<think>no act")
    with pytest.raises(MalformedGeneration):
        parse_generation("<think>never closed<act>ABC")
