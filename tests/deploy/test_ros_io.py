"""Observation assembly from ROS messages reproduces the simulator's state vector (real ManiSkill, no DDS)."""

import numpy as np
import pytest

from robot_rl.deploy.config import DeployConfig
from robot_rl.deploy.ros_io import (
    ACCEPTED,
    ENTITY_POSE_INPUTS,
    ENTITY_SIZE_INPUTS,
    IGNORED,
    REJECTED,
    ObservationAssembler,
    ObservationUnavailable,
    canonical_quat,
    joint_state_msg,
    parse_source,
    pose_msg,
    size_msg,
    stamp_to_s,
)
from robot_rl.deploy.sim_bridge import pose_target_to_action, state_in_base, twist_to_action, width_to_gripper_action
from robot_rl.envs import make_env, privileged_state
from robot_rl.envs.obs_layout import ROBOT_BASE_POS_WORLD, ROBOT_BASE_QUAT_WORLD
from robot_rl.interface.delayed import FEATURE_FIELDS
from robot_rl.observation import ObservationSchema, ObsField, ObsGroup, schema_for

TASK = "RRL-PushCube-Sparse-v1"
BASE = "panda_link0"
JOINTS = DeployConfig().joint_names
#: Every registered task: the sparse and the long-horizon variant of the six, and the two hidden-goal tasks.
ALL_TASKS = [f"RRL-{name}-Sparse{lh}-v1" for name in ("PushCube", "PickCube", "PickPlaceCube", "LiftPegUpright",
                                                     "PegInsertionSide", "PokeCube") for lh in ("", "-LH")] + [
    "RRL-PushCube-HiddenGoal-v1", "RRL-PickPlaceCube-HiddenGoal-v1"]


def _assembler(task=TASK):
    return ObservationAssembler(schema_for(task), JOINTS, BASE, (ROBOT_BASE_POS_WORLD, ROBOT_BASE_QUAT_WORLD))


def _feed(a: ObservationAssembler, st: dict, t: float) -> None:
    """Every message the sim bridge would publish for state ``st`` (EE pose last, as the bridge does)."""
    assert a.update_joint_state(joint_state_msg(JOINTS, st["qpos"], st["qvel"], t), t) == ACCEPTED
    for entity, size in st["sizes"].items():
        key = ENTITY_SIZE_INPUTS[entity]
        kept = key in a.required_inputs or key in a.teacher_inputs
        assert a.update_size(key, size_msg(size, entity, t), t) == (ACCEPTED if kept else IGNORED)
    for entity, pose in st["poses"].items():
        key = ENTITY_POSE_INPUTS[entity]
        if entity != "tcp":
            kept = key in a.required_inputs or key in a.teacher_inputs
            assert a.update_pose(key, pose_msg(*pose, BASE, t), t) == (ACCEPTED if kept else IGNORED)
    assert a.update_pose("ee_pose", pose_msg(*st["poses"]["tcp"], BASE, t), t) == ACCEPTED


def _canonical(obs: np.ndarray, task: str) -> np.ndarray:
    """The env observation with each pose's quaternion in the hemisphere its field's source names."""
    out = obs.copy()
    schema = schema_for(task)
    for f, sl in zip(schema.group("state").fields, schema.field_slices("state").values()):
        if f.source.startswith("pose("):
            out[sl.start + 3:sl.stop] = canonical_quat(out[sl.start + 3:sl.stop], f.source.split(",")[1].strip(" )"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("task", ALL_TASKS)
def test_state_to_messages_and_back_reproduces_the_observation(task):
    """Sim state -> the messages the bridge publishes -> the node's assembler -> the simulator's own observation,
    bit for bit, for every field but the grasp flag, which a real robot computes from the gripper width and the
    object pose (robot_rl.deploy.grasp) and which must agree with ManiSkill's contact test on all but one step.
    The scripted teacher drives the episodes (it grasps, lifts, pokes and inserts) after 3 random actions each.
    """
    from robot_rl.teachers import ScriptedTeacher, TeacherRequest

    env = make_env(task, seed=None)
    a = _assembler(task)
    schema = schema_for(task)
    grasp = [sl for f, sl in zip(schema.group("state").fields, schema.field_slices("state").values())
             if f.source.startswith("grasp(")]
    exact = np.ones(schema.size, dtype=bool)
    for sl in grasp:
        exact[sl] = False
    teacher = ScriptedTeacher()
    rng = np.random.default_rng(0)
    steps = grasp_disagree = grasped = 0
    since_reset = 0
    try:
        obs, _ = env.reset(seed=3)
        for step in range(60):
            st = state_in_base(env.unwrapped)
            _feed(a, st, 100.0 + step * 0.05)
            got = a.observation()
            want = _canonical(obs, task)
            assert got.dtype == np.float32 and got.shape == obs.shape == (schema.size,)
            np.testing.assert_array_equal(got[exact], want[exact], err_msg=f"{task} step {step}")
            if step > 0:  # ManiSkill's flag can carry over from the previous episode at a reset observation
                grasp_disagree += sum(int(not np.array_equal(got[sl], want[sl])) for sl in grasp)
                grasped += sum(int(want[sl][0] == 1.0) for sl in grasp)
            steps += 1
            since_reset += 1
            if since_reset <= 3:  # a few random actions at the start of each episode, then the teacher
                action = rng.uniform(-1, 1, 7).astype(np.float32)
            else:
                state = privileged_state(env.unwrapped)
                action = teacher.act(TeacherRequest([""], states=state, task_ids=[task])).actions[0]
            obs, _, term, trunc, _ = env.step(action)
            if term or trunc:
                obs, _ = env.reset(seed=100 + step)
                since_reset = 0
        assert grasp_disagree <= 1, (grasp_disagree, steps)
        if grasp:
            assert grasped > 5, "the episodes must include grasps for the grasp flag to be tested"
        # the base frame really is not the world frame: the TCP x differs by the base offset
        st = state_in_base(env.unwrapped)
        tcp = schema.field_slices("state")["tcp_pose"]
        assert np.isclose(st["poses"]["tcp"][0][0] - obs[tcp][0], 0.615, atol=1e-6)
    finally:
        env.close()


#: The tasks whose privileged state the node can assemble (robot_rl.envs.privileged.PRIVILEGED_SOURCES).
PRIVILEGED_TASKS = ["RRL-PushCube-HiddenGoal-v1", "RRL-PickPlaceCube-HiddenGoal-v1", "RRL-PickCube-Sparse-v1"]


@pytest.mark.slow
@pytest.mark.parametrize("task", PRIVILEGED_TASKS)
def test_privileged_state_from_messages_is_the_simulator_s(task):
    """Sim state -> the bridge's messages -> the same assembler's privileged fields -> the 38-D privileged state the
    scripted teacher plans from (robot_rl.envs.privileged_state), bit for bit but the grasp flag; the goal pose,
    which a hidden-goal task's policy does not read, is a teacher input (accepted), not a required one.
    """
    from robot_rl.envs.privileged import PRIVILEGED_STATE_LAYOUT, privileged_fields
    from robot_rl.teachers import ScriptedTeacher, TeacherRequest

    env = make_env(task, seed=None)
    a = ObservationAssembler(schema_for(task), JOINTS, BASE, (ROBOT_BASE_POS_WORLD, ROBOT_BASE_QUAT_WORLD),
                             privileged=privileged_fields(task), history_s=1.0)
    if "HiddenGoal" in task:
        assert "goal_pose" in a.teacher_inputs and "goal_pose" not in a.required_inputs
    grasp = PRIVILEGED_STATE_LAYOUT["is_grasped"]
    exact = np.ones(38, dtype=bool)
    exact[grasp] = False
    teacher = ScriptedTeacher()
    try:
        env.reset(seed=5)
        for step in range(25):
            st = state_in_base(env.unwrapped)
            _feed(a, st, 50.0 + step * 0.05)
            want = privileged_state(env.unwrapped)[0]
            got = a.privileged_state()
            assert got.dtype == np.float32 and got.shape == (38,)
            np.testing.assert_array_equal(got[exact], want[exact], err_msg=f"{task} step {step}")
            action = teacher.act(TeacherRequest([""], states=want[None], task_ids=[task])).actions[0]
            env.step(action)
        # the motion history: where the TCP was at an earlier stamp, from the poses fed then
        pos, quat, width = a.motion_at(50.0 + 20 * 0.05)
        assert a.history_misses == 0 and np.isfinite(width)
        pos_old, _, _ = a.motion_at(0.0)  # older than the history kept: the oldest, counted
        assert a.history_misses == 1 and not np.array_equal(pos_old, pos)
    finally:
        env.close()


@pytest.mark.slow
def test_pose_target_round_trip_reproduces_the_action():
    """Safety filter target (current + delta) -> bridge -> the same pd_ee_delta_pose action."""
    from robot_rl.deploy.safety import SafetyFilter, SafetyLimits

    limits = SafetyLimits.from_dict(DeployConfig(safety=_LOOSE).safety)
    env = make_env(TASK, seed=None)
    try:
        env.reset(seed=0)
        tcp = state_in_base(env.unwrapped)["poses"]["tcp"]
        f = SafetyFilter(limits, 0.05)
        f.activate(tcp)
        rng = np.random.default_rng(1)
        for i in range(20):
            action = np.r_[rng.uniform(-1, 1, 3), rng.uniform(-0.5, 0.5, 3) / np.sqrt(3), rng.uniform(-1, 1)]
            cmd = f.step(action, tcp, 1.0 + 0.05 * i, {"x": 1.0 + 0.05 * i})
            assert not cmd.clamped, cmd.clamped
            back = pose_target_to_action(cmd.target_pos, cmd.target_quat, *tcp)
            np.testing.assert_allclose(back, action[:6], atol=1e-9)
            np.testing.assert_allclose(twist_to_action(cmd.twist, 0.05), action[:6], atol=1e-9)  # MoveIt Servo path
            assert np.isclose(width_to_gripper_action(cmd.gripper_width_m), np.clip(action[6], -1, 1))
        # gripper width (both fingers) -> command: 0 m closed (-1) .. 0.08 m open (+1)
        for width, command in ((0.08, 1.0), (0.0, -1.0), (0.04, 0.0), (-0.01, -1.0), (0.2, 1.0)):
            assert np.isclose(width_to_gripper_action(width), command)
    finally:
        env.close()


_LOOSE = dict(workspace_min=[-2, -2, -2], workspace_max=[2, 2, 2], max_step_translation_m=1.0,
              max_step_rotation_rad=1.0, max_linear_velocity_m_s=100.0, max_angular_velocity_rad_s=100.0,
              max_input_age_s=10.0,
              first_command_max_translation_m=1.0, first_command_max_rotation_rad=1.0,
              gripper_min_width_m=0.0, gripper_max_width_m=0.08)


def _msgs(t=1.0):
    st = {"qpos": np.arange(9) * 0.1, "qvel": np.zeros(9),
          "poses": {"tcp": (np.array([0.5, 0, 0.2]), np.array([0, 1.0, 0, 0])),
                    "object": (np.array([0.6, 0, 0.02]), np.array([1.0, 0, 0, 0])),
                    "goal": (np.array([0.75, 0, 0.001]), np.array([1.0, 0, 0, 0])),
                    "tool": (np.array([0.3, 0, 0.02]), np.array([1.0, 0, 0, 0]))},
          "sizes": {"object": np.array([0.02, 0.02, 0.02])}}
    return st


def test_bad_messages_are_rejected_counted_and_the_last_good_one_kept():
    a = _assembler()
    with pytest.raises(ObservationUnavailable, match="joint_states"):
        a.observation()
    _feed(a, _msgs(), 1.0)
    good = a.observation()
    bad_frame = pose_msg([0.5, 0, 0.2], [0, 1, 0, 0], "world", 2.0)
    assert a.update_pose("ee_pose", bad_frame, 2.0) == REJECTED
    assert a.update_pose("object_pose", pose_msg([np.nan, 0, 0], [1, 0, 0, 0], BASE, 2.0), 2.0) == REJECTED
    assert a.update_pose("goal_pose", pose_msg([0, 0, 0], [2, 0, 0, 0], BASE, 2.0), 2.0) == REJECTED
    assert a.update_joint_state(joint_state_msg(JOINTS[:8], np.zeros(8), np.zeros(8), 2.0), 2.0) == REJECTED
    renamed = joint_state_msg(["j%d" % i for i in range(9)], np.zeros(9), np.zeros(9), 2.0)
    assert a.update_joint_state(renamed, 2.0) == REJECTED
    assert a.update_joint_state(joint_state_msg(JOINTS, [np.inf] * 9, np.zeros(9), 2.0), 2.0) == REJECTED
    np.testing.assert_array_equal(a.observation(), good)
    assert sum(a.rejected.values()) == 6 and all(stamp == 1.0 for stamp in a.stamps().values())
    assert any("frame_id 'world'" in k for k in a.rejected)
    assert any("missing joints" in k for k in a.rejected)
    # extra joints (a real robot may publish more) are ignored
    extra = joint_state_msg(["extra", *JOINTS], np.r_[9.0, np.arange(9) * 0.1], np.zeros(10), 3.0)
    assert a.update_joint_state(extra, 3.0) == ACCEPTED and stamp_to_s(extra.header.stamp) == 3.0


def test_a_message_for_a_field_the_task_does_not_use_is_ignored_and_counted():
    """PushCube reads no tool: a tool pose or an object size from perception is not an error."""
    a = _assembler()
    assert a.required_inputs == ("joint_states", "ee_pose", "object_pose", "goal_pose")
    assert a.update_pose("tool_pose", pose_msg([0.3, 0, 0.02], [1, 0, 0, 0], BASE, 1.0), 1.0) == IGNORED
    assert a.update_size("object_size", size_msg([0.02] * 3, "object", 1.0), 1.0) == IGNORED
    assert a.ignored == {"tool_pose": 1, "object_size": 1} and not a.rejected
    assert a.diagnostics()["ignored_total"] == 2 and "tool_pose" not in a.stamps()
    # PokeCube reads the peg (the tool): there it is stored
    poke = _assembler("RRL-PokeCube-Sparse-v1")
    assert "tool_pose" in poke.required_inputs
    assert poke.update_pose("tool_pose", pose_msg([0.3, 0, 0.02], [1, 0, 0, 0], BASE, 1.0), 1.0) == ACCEPTED


def test_bad_sizes_are_rejected():
    a = _assembler("RRL-PegInsertionSide-Sparse-v1")
    assert a.update_size("object_size", size_msg([0.1, np.nan, 0.02], "object", 1.0), 1.0) == REJECTED
    assert a.update_size("hole_size", size_msg([0.1, 0.0, 0.02], "hole", 1.0), 1.0) == REJECTED
    assert sum(a.rejected.values()) == 2 and any("must be > 0" in k for k in a.rejected)


def test_a_field_or_group_without_a_ros_source_is_refused_naming_it():
    state = schema_for(TASK).group("state")
    no_source = ObsField("obj_pose", 7, "world", "m, quaternion wxyz", "the cube")
    bad = ObservationSchema(TASK, (ObsGroup("state", (*state.fields[:-1], no_source), required=True),))
    with pytest.raises(ValueError, match=r"state\.obj_pose has no ROS source.*re-export"):
        ObservationAssembler(bad, JOINTS, BASE)
    # a teacher group that is not this version's (here: a hint without its source) is refused, naming the field
    teacher = ObsGroup("teacher", (ObsField("hint", 7, "robot_base", FEATURE_FIELDS["hint"][0].unit, "the hint",
                                            FEATURE_FIELDS["hint"][0].components),))
    with pytest.raises(ValueError, match=r"teacher\.hint \(field 0\): source '', this version's is 'teacher\(hint\)'"):
        ObservationAssembler(ObservationSchema(TASK, (state, teacher)), JOINTS, BASE)
    # a memory group that is not a scratchpad's layout (robot_rl.memory.MemorySpec.group) is refused, naming why
    memory = ObsGroup("memory", (ObsField("slots", 4, "none", "1", "scratchpad"),))
    with pytest.raises(ValueError, match=r"memory group has no field 'ground0_object': not a scratchpad group"):
        ObservationAssembler(ObservationSchema(TASK, (state, memory)), JOINTS, BASE)
    wrong_size = ObsField("goal_pos", 2, "world", "m", "goal", source="position(goal)")
    with pytest.raises(ValueError, match=r"state\.goal_pos has size 2 but its source"):
        ObservationAssembler(ObservationSchema(TASK, (ObsGroup("state", (*state.fields[:3], wrong_size)),)),
                             JOINTS, BASE)


def test_source_language_by_hand():
    terms = parse_source("position(tool) + const(0.12, 0, 0) - position(object)")
    assert [(t.sign, t.func, t.entity) for t in terms] == [(1.0, "position", "tool"), (1.0, "const", None),
                                                           (-1.0, "position", "object")]
    assert parse_source("size(hole)[1]")[0].index == 1
    for bad, match in (("pose(robot, +w)", "unknown entity 'robot'"), ("velocity(tcp)", "unknown term"),
                       ("joints.effort", "joints.position or joints.velocity"), ("const()", "1 or more numbers"),
                       ("const(x)", "1 or more numbers"), ("gripper_width(tcp)", "unknown term"),
                       ("quat(robot)", "unknown entity 'robot'")):
        with pytest.raises(ValueError, match=match):
            parse_source(bad)
    # the terms the privileged state adds: a quaternion (4), the gripper width (1), constants of any length
    assert [(t.func, t.entity, t.args) for t in parse_source("quat(goal)")] == [("quat", "goal", ())]
    assert parse_source("quat(tcp, +x)")[0].args == ("+x",)
    assert parse_source("gripper_width")[0].inputs() == {"joint_states"}
    assert parse_source("const(1, 0, 0, 0)")[0].args == ("1", "0", "0", "0")
    # quaternion signs: -q is the same rotation, the source names the component kept >= 0
    np.testing.assert_array_equal(canonical_quat(np.array([-0.5, 0.5, -0.5, 0.5]), "+w"), [0.5, -0.5, 0.5, -0.5])
    np.testing.assert_array_equal(canonical_quat(np.array([0.1, 0.9, 0.0, 0.0]), "+x"), [0.1, 0.9, 0.0, 0.0])


def test_receive_clock_ages_and_stamps_from_the_future_are_counted():
    """The watchdog's clock is the node's (reception); a sender's clock ahead by more than the tolerance is a clock
    offset, reported per input, and the message is still used (an offset must not hold the arm for good).
    """
    a = ObservationAssembler(schema_for(TASK), JOINTS, BASE, (ROBOT_BASE_POS_WORLD, ROBOT_BASE_QUAT_WORLD),
                             future_stamp_tolerance_s=0.01)
    q = np.zeros(9)
    pose = ([0.5, 0.0, 0.2], [0.0, 1.0, 0.0, 0.0])
    # the robot's clock 0.2 s ahead; perception's 0.3 s behind (or slow): both received now
    assert a.update_joint_state(joint_state_msg(JOINTS, q, q, 100.2), 100.0) == ACCEPTED
    assert a.update_pose("ee_pose", pose_msg(*pose, BASE, 100.2), 100.0) == ACCEPTED
    assert a.update_pose("object_pose", pose_msg(*pose, BASE, 99.7), 100.001) == ACCEPTED
    assert a.update_pose("goal_pose", pose_msg(*pose, BASE, 100.005), 100.0) == ACCEPTED  # within the tolerance
    assert a.receive_times() == {"joint_states": 100.0, "ee_pose": 100.0, "object_pose": 100.001, "goal_pose": 100.0}
    assert a.stamps()["ee_pose"] == pytest.approx(100.2)  # header stamps kept as sent
    delays = a.stamp_delays()
    assert delays["ee_pose"] == pytest.approx(-0.2) and delays["object_pose"] == pytest.approx(0.301)
    d = a.diagnostics()
    assert d["future_stamps.ee_pose"] == 1 and d["future_stamps.joint_states"] == 1 and d["future_stamps_total"] == 2
    assert "future_stamps.goal_pose" not in d and "future_stamps.object_pose" not in d
    assert d["clock_offset_s.ee_pose"] == pytest.approx(0.2) and d["stamp_delay_s.object_pose"] == pytest.approx(0.301)
    assert a.observation().shape == (a.obs_dim,)  # the observation is built all the same
