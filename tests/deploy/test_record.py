"""Recording to MCAP rosbag2 and replaying a recording through the policy controller (no ROS graph)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("rosbags")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, String

from robot_rl.deploy.config import PANDA_JOINT_NAMES, DeployConfig
from robot_rl.deploy.record import BagRecorder, _typestore, bag_topics, read_bag, replay, replay_main
from robot_rl.deploy.ros_io import joint_state_msg, pose_msg, s_to_stamp

TYPES = {
    "/joint_states": "sensor_msgs/msg/JointState",
    "/ee": "geometry_msgs/msg/PoseStamped",
    "/twist": "geometry_msgs/msg/TwistStamped",
    "/gripper": "std_msgs/msg/Float64",
    "/status": "std_msgs/msg/String",
    "/estop": "std_msgs/msg/Bool",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}


def _twist(values, stamp_s):
    m = TwistStamped()
    m.header.stamp, m.header.frame_id = s_to_stamp(stamp_s), "panda_link0"
    (m.twist.linear.x, m.twist.linear.y, m.twist.linear.z,
     m.twist.angular.x, m.twist.angular.y, m.twist.angular.z) = (float(v) for v in values)
    return m


def _messages():
    """(topic, t_ns, msg) with every type the node records, awkward values included."""
    rng = np.random.default_rng(3)
    diag = DiagnosticArray(status=[DiagnosticStatus(level=DiagnosticStatus.WARN, name="robot_rl: safety", message="ä ✓",
                                                    hardware_id="robot_rl",
                                                    values=[KeyValue(key="hold.stale_input", value="3")])])
    diag.header.stamp = s_to_stamp(1700000000.123456789)
    out = [
        ("/joint_states", 1_000,
         joint_state_msg(PANDA_JOINT_NAMES, rng.normal(size=9), rng.normal(size=9), 1700000000.000001)),
        ("/joint_states", 2_000, joint_state_msg(["a"], [np.pi], [-1e-300], 0.0)),
        ("/joint_states", 2_500, JointState()),  # empty arrays: the case rclpy pads with garbage bytes
        ("/ee", 3_000, pose_msg([0.55, -1e-17, 0.2], [0.0, 1.0, 0.0, 0.0], "panda_link0", 1700000000.987654321)),
        ("/twist", 4_000, _twist(rng.normal(size=6), 12.5)),
        ("/gripper", 5_000, Float64(data=0.0399999999999)),
        ("/status", 6_000, String(data=json.dumps({"t": 1700000000.05, "state": "active", "hold": None}))),
        ("/status", 6_500, String(data="")),
        ("/estop", 7_000, Bool(data=True)),
        ("/diagnostics", 8_000, diag),
        ("/ee", 2**62, pose_msg([1, 2, 3], [1, 0, 0, 0], "", 0.5)),
    ]
    return out


@pytest.mark.parametrize("name", ["rec.mcap", "rec_dir"])
def test_roundtrip_every_type(tmp_path, name):
    path = tmp_path / "sub" / name
    written = _messages()
    with BagRecorder(path, TYPES) as rec:
        for topic, t_ns, msg in written:
            rec.write(topic, msg, t_ns)
    if name.endswith(".mcap"):
        assert path.is_file() and path.read_bytes()[:8] == b"\x89MCAP0\r\n"
        assert [p.name for p in path.parent.iterdir()] == ["rec.mcap"]  # the staging directory is gone
    else:
        assert sorted(p.name for p in path.iterdir()) == ["metadata.yaml", "rec_dir.mcap"]
        assert rec.mcap_path.read_bytes()[:8] == b"\x89MCAP0\r\n"
    assert bag_topics(path) == TYPES
    got = list(read_bag(path))
    assert [(tp, t) for tp, t, _ in got] == [(tp, t) for tp, t, _ in written]  # already in time order
    for (_, _, want), (_, _, msg) in zip(written, got):
        assert type(msg) is type(want) and msg == want
    js = got[0][2]
    assert list(js.name) == list(PANDA_JOINT_NAMES)
    np.testing.assert_array_equal(js.position, written[0][2].position)  # float64, bit-exact
    assert ((js.header.stamp.sec, js.header.stamp.nanosec)
            == (written[0][2].header.stamp.sec, written[0][2].header.stamp.nanosec))
    pose = got[3][2].pose
    assert ((pose.position.x, pose.position.y, pose.position.z, pose.orientation.w, pose.orientation.x)
            == (0.55, -1e-17, 0.2, 0.0, 1.0))
    assert got[3][2].header.frame_id == "panda_link0" and got[3][2].header.stamp == written[3][2].header.stamp
    assert got[9][2].status[0].message == "ä ✓"
    # rosbags itself (strict about CDR sizes) reads every message back too
    store = _typestore()
    with Reader(path) as reader:
        for conn, t_ns, raw in reader.messages():
            obj = store.deserialize_cdr(raw, conn.msgtype)
            assert obj.__msgtype__ == TYPES[conn.topic]
    assert list(read_bag(path, topics=["/gripper"])) == [("/gripper", 5_000, Float64(data=0.0399999999999))]


def test_refuses_to_overwrite(tmp_path):
    f = tmp_path / "x.mcap"
    f.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=str(f)):
        BagRecorder(f, {"/s": "std_msgs/msg/String"})
    assert f.read_bytes() == b"precious"
    d = tmp_path / "bagdir"
    d.mkdir()
    with pytest.raises(FileExistsError, match=str(d)):
        BagRecorder(d, {"/s": "std_msgs/msg/String"})
    # an interrupted recording's staging directory is not overwritten either
    rec = BagRecorder(tmp_path / "y.mcap", {"/s": "std_msgs/msg/String"})
    with pytest.raises(FileExistsError, match=r"\.y\.mcap\.recording"):
        BagRecorder(tmp_path / "y.mcap", {"/s": "std_msgs/msg/String"})
    rec.close()
    with pytest.raises(FileExistsError, match="y.mcap"):
        BagRecorder(tmp_path / "y.mcap", {"/s": "std_msgs/msg/String"})


def test_bad_topics_types_and_use(tmp_path):
    with pytest.raises(ValueError, match="no topics"):
        BagRecorder(tmp_path / "a.mcap", {})
    with pytest.raises(ValueError, match="type std_msgs/msg/Nope is not in the rosbags typestore"):
        BagRecorder(tmp_path / "a.mcap", {"/s": "std_msgs/msg/Nope"})
    with pytest.raises(ValueError, match="'nav_msgs/msg/Odometry' is not available in this Python environment"):
        BagRecorder(tmp_path / "a.mcap", {"/odom": "nav_msgs/msg/Odometry"})  # rosbags knows it, rclpy here not
    with pytest.raises(ValueError, match="'bogus' is not of the form"):
        BagRecorder(tmp_path / "a.mcap", {"/s": "bogus"})
    rec = BagRecorder(tmp_path / "a.mcap", {"/s": "std_msgs/String"})  # short form accepted
    with pytest.raises(ValueError, match="topic '/not_declared' was not declared"):
        rec.write("/not_declared", String(data="x"), 1)
    with pytest.raises(TypeError, match="/s: expected a std_msgs/msg/String message, got std_msgs.msg.*Float64"):
        rec.write("/s", Float64(data=1.0), 1)
    with pytest.raises(ValueError, match="t_ns"):
        rec.write("/s", String(data="x"), 1.5)
    with pytest.raises(ValueError, match="t_ns"):
        rec.write("/s", String(data="x"), -1)
    rec.write("/s", String(data="x"), np.int64(7))
    rec.close()
    rec.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        rec.write("/s", String(data="y"), 8)
    assert list(read_bag(tmp_path / "a.mcap")) == [("/s", 7, String(data="x"))]
    with pytest.raises(FileNotFoundError):
        list(read_bag(tmp_path / "missing.mcap"))


def test_concurrent_writers(tmp_path):
    path = tmp_path / "threads.mcap"
    n_threads, n = 6, 300
    with BagRecorder(path, {"/s": "std_msgs/msg/String", "/f": "std_msgs/msg/Float64"}) as rec:
        def work(k):
            for i in range(n):
                rec.write("/s", String(data=f"{k}:{i}"), 1_000_000 + i * n_threads + k)
                rec.write("/f", Float64(data=k + i / n), 1_000_000 + i * n_threads + k)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    got = list(read_bag(path))
    assert len(got) == 2 * n_threads * n
    assert (sorted(m.data for tp, _, m in got if tp == "/s")
            == sorted(f"{k}:{i}" for k in range(n_threads) for i in range(n)))
    assert [t for _, t, _ in got] == sorted(t for _, t, _ in got)


# ------------------------------------------------------------------------------------------------
# Replay

TASK = "RRL-PushCube-Sparse-v1"
RATE_HZ = 20.0
LOOSE = {
    "workspace_min": [0.2, -0.6, -0.05], "workspace_max": [1.1, 0.6, 0.8],
    "max_step_translation_m": 0.18, "max_step_rotation_rad": 0.18,
    "max_linear_velocity_m_s": 4.0, "max_angular_velocity_rad_s": 4.0,
    # 190 ms: the watchdog measures ages on the receive clock, and a multiple of the 25 ms input period would put
    # the first step of the pause on the limit (within the 0.3 ms jitter), where the replay on command times,
    # 0.15 ms after the node's steps, could decide the other way
    "max_input_age_s": 0.19,
    # binding, so that the replay must reproduce which commands were "first" (after activation or a hold)
    "first_command_max_translation_m": 0.0005, "first_command_max_rotation_rad": 0.002,
    "gripper_min_width_m": 0.0, "gripper_max_width_m": 0.08,
}


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    """A real exported policy from a tiny PPO run (64 env steps, one in-process env)."""
    from robot_rl.cli import DEFAULT_CONFIG
    from robot_rl.config import load_config
    from robot_rl.deploy.export import export_policy
    from robot_rl.trainer import train

    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(DEFAULT_CONFIG, [f"task={TASK}", "total_steps=64", "ppo.n_steps=64", "ppo.batch_size=64",
                                       "ppo.n_epochs=1", "env.num_envs=1", "mode=ppo", "run.eval_episodes=0",
                                       "run.progress_bar=false", f"run.out_dir={out}", "run.name=r"])
    return export_policy(train(cfg).path)


@pytest.fixture(scope="module")
def cfg() -> DeployConfig:
    return DeployConfig(safety=LOOSE, rate_hz=RATE_HZ, topics={"twist": "/servo_node/delta_twist_cmds"})


def _record_session(policy_dir, cfg, path, *, duration_s=3.0, stale=(1.2, 1.5), status=True, seed=0):
    """Drive a PolicyController as the node does and record inputs and outputs to ``path``.

    Inputs every 25 ms (ee_pose, joint_states, object_pose, goal_pose; object_pose pauses during
    ``stale`` so the watchdog holds), steps at 20 Hz on the node's clock, a crude arm that moves
    80 % of the way to the last commanded target per input period. Returns the step log.
    """
    from robot_rl.deploy.controller import PolicyController
    from robot_rl.deploy.safety import Command

    rng = np.random.default_rng(seed)
    tp = cfg.topics
    node = PolicyController(policy_dir, cfg)
    topics = {tp.joint_states: "sensor_msgs/msg/JointState", tp.ee_pose: "geometry_msgs/msg/PoseStamped",
              tp.object_pose: "geometry_msgs/msg/PoseStamped", tp.goal_pose: "geometry_msgs/msg/PoseStamped",
              tp.equilibrium_pose: "geometry_msgs/msg/PoseStamped", tp.twist: "geometry_msgs/msg/TwistStamped",
              tp.gripper: "std_msgs/msg/Float64"}
    if status:
        topics[tp.status] = "std_msgs/msg/String"
    base = cfg.frames.base
    ee_p, ee_q = np.array([0.55, 0.0, 0.2]), np.array([0.0, 1.0, 0.0, 0.0])
    cube = np.array([0.6, 0.0, 0.02])
    width = 0.08
    q0 = np.array([0.0, 0.2, 0.0, -2.2, 0.0, 2.4, 0.785])
    log = []
    t0_ns = 1_700_000_000 * 10**9
    with BagRecorder(path, topics) as rec:
        for k in range(int(duration_s / 0.025)):
            t_ns = t0_ns + k * 25_000_000 + int(rng.integers(0, 300_000))  # input jitter < 0.3 ms
            stamp = t_ns / 1e9 - 0.004  # measured 4 ms before reception
            ee = pose_msg(ee_p, ee_q, base, stamp)
            qpos = np.concatenate([q0 + 0.05 * np.sin(0.3 * k + np.arange(7)), [width / 2, width / 2]])
            qvel = np.concatenate([0.1 * np.cos(0.3 * k + np.arange(7)), [0.0, 0.0]])
            inputs = [(tp.ee_pose, "ee_pose", ee),
                      (tp.joint_states, None, joint_state_msg(PANDA_JOINT_NAMES, qpos, qvel, stamp)),
                      (tp.goal_pose, "goal_pose", pose_msg([0.75, 0.0, 0.001], [1, 0, 0, 0], base, stamp))]
            if not (stale[0] <= k * 0.025 < stale[1]):
                cube_p = cube + rng.normal(0, 0.001, 3)
                inputs.append((tp.object_pose, "object_pose", pose_msg(cube_p, [1, 0, 0, 0], base, stamp)))
            for i, (topic, key, msg) in enumerate(inputs):
                rec.write(topic, msg, t_ns + i)
                if key is None:
                    node.assembler.update_joint_state(msg, (t_ns + i) / 1e9)
                else:
                    node.assembler.update_pose(key, msg, (t_ns + i) / 1e9)
            if k % 2 == 1:  # a control step, 0.2 ms after the last input, like the node's clock reads
                step_ns = t_ns + 200_000
                now = step_ns / 1e9
                if k == 1:
                    node.safety.activate(node.assembler.ee_pose())
                d = node.step(now).decision
                published = isinstance(d, Command)
                if published:
                    out_ns = step_ns + 150_000  # published after the inference
                    rec.write(tp.equilibrium_pose, pose_msg(d.target_pos, d.target_quat, base, out_ns / 1e9), out_ns)
                    rec.write(tp.twist, _twist(d.twist, out_ns / 1e9), out_ns + 1_000)
                    rec.write(tp.gripper, Float64(data=float(d.gripper_width_m)), out_ns + 2_000)
                    ee_p = ee_p + 0.8 * (d.target_pos - ee_p)
                    ee_q = d.target_quat.copy()
                    width = d.gripper_width_m
                if status:
                    rec.write(tp.status, String(data=json.dumps({"t": now, "state": node.safety.state.value,
                                                                 "published": published,
                                                                 "hold": None if published else d.reason})),
                              step_ns + 400_000)
                log.append((now, d))
    return log


@pytest.fixture(scope="module")
def session(policy_dir, cfg, tmp_path_factory):
    path = tmp_path_factory.mktemp("bags") / "session.mcap"
    log = _record_session(policy_dir, cfg, path)
    return path, log


@pytest.mark.slow
def test_replay_reproduces_every_command(policy_dir, cfg, session):
    from robot_rl.deploy.safety import Command

    path, log = session
    commands = [d for _, d in log if isinstance(d, Command)]
    holds = [d for _, d in log if not isinstance(d, Command)]
    # the session exercises what the replay must reproduce: holds on the stale object pose, and
    # first-command bounds after activation and after the holds
    assert len(commands) >= 40 and {h.reason for h in holds} == {"stale_input"}
    assert sum("first_command_translation" in c.clamped for c in commands) >= 2
    report = replay(path, policy_dir, cfg)
    assert report.step_clock == "status" and report.command_topic == cfg.topics.equilibrium_pose
    assert report.n_recorded == len(commands) == report.n_compared
    assert (report.n_held, report.n_extra, report.n_unpaired, report.n_mismatched) == (0, 0, 0, 0)
    input_topics = {cfg.topics.joint_states, cfg.topics.ee_pose, cfg.topics.object_pose, cfg.topics.goal_pose}
    assert report.n_steps == len(log) and report.n_inputs == sum(1 for tp, _, _ in read_bag(path) if tp in input_topics)
    assert report.max_pos_delta_m < 1e-6 and report.mean_pos_delta_m < 1e-6
    assert report.max_angle_delta_rad < 1e-6
    assert report.max_twist_delta < 1e-5 and report.max_gripper_delta_m < 1e-6
    assert report.n_gripper_compared == len(commands) and report.ok()
    assert "OK: every command reproduced" in report.summary()


@pytest.mark.slow
def test_replay_on_command_times_without_status(policy_dir, cfg, session, tmp_path):
    """Without the status topic the replay steps at the recorded command times (the commands clock)."""
    path, _ = session
    bare = tmp_path / "bare.mcap"
    topics = {k: v for k, v in bag_topics(path).items() if k != cfg.topics.status}
    with BagRecorder(bare, topics) as rec:
        for tp, t_ns, msg in read_bag(path, topics):
            rec.write(tp, msg, t_ns)
    report = replay(bare, policy_dir, cfg)
    assert report.step_clock == "commands"
    assert report.n_compared == report.n_recorded > 40 and report.n_held == 0
    # the stale-input holds leave a gap of > 3 periods between commands: re-activated there
    assert report.n_reactivations == 2
    assert report.max_pos_delta_m < 1e-6 and report.max_angle_delta_rad < 1e-6 and report.max_gripper_delta_m < 1e-6
    assert report.ok()


@pytest.mark.slow
def test_replay_reports_a_tampered_command(policy_dir, cfg, session, tmp_path, capsys):
    path, _ = session
    tampered = tmp_path / "tampered.mcap"
    eq, grip = cfg.topics.equilibrium_pose, cfg.topics.gripper
    n_eq = n_grip = 0
    with BagRecorder(tampered, bag_topics(path)) as rec:
        for tp, t_ns, msg in read_bag(path):
            if tp == eq:
                n_eq += 1
                if n_eq == 10:
                    msg.pose.position.y += 0.01  # 1 cm off
                if n_eq == 20:  # rotated by 0.05 rad about z
                    q = msg.pose.orientation
                    c, s = np.cos(0.025), np.sin(0.025)
                    q.w, q.x, q.y, q.z = c * q.w - s * q.z, c * q.x - s * q.y, c * q.y + s * q.x, c * q.z + s * q.w
            if tp == grip:
                n_grip += 1
                if n_grip == 30:
                    msg.data += 0.005
            rec.write(tp, msg, t_ns)
    report = replay(tampered, policy_dir, cfg)
    assert report.n_compared == report.n_recorded and report.n_mismatched == 3 and not report.ok()
    assert report.max_pos_delta_m == pytest.approx(0.01, abs=1e-9)
    assert report.mean_pos_delta_m == pytest.approx(0.01 / report.n_compared, abs=1e-9)
    assert report.max_angle_delta_rad == pytest.approx(0.05, abs=1e-9)
    assert report.max_gripper_delta_m == pytest.approx(0.005, abs=1e-12)
    assert np.sum(report.pos_deltas_m > 1e-6) == 1
    assert "target position |Δ| 0.01 m" in report.first_mismatch
    assert "DIFFERENT: 3 mismatched commands" in report.summary()
    # the CLI entry: prints the report, exit status 1
    import yaml

    cfg_path = tmp_path / "deploy.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert replay_main(tampered, policy_dir, cfg_path) == 1
    assert "DIFFERENT: 3 mismatched commands" in capsys.readouterr().out
    assert replay_main(path, policy_dir, cfg_path) == 0
    assert "OK: every command reproduced" in capsys.readouterr().out


@pytest.mark.slow
def test_replay_with_other_limits_and_wrong_config(policy_dir, cfg, session):
    path, _ = session
    # a tighter step limit: the replay answers "what would these limits have done" (differences, no crash)
    tight = DeployConfig(safety={**LOOSE, "max_step_translation_m": 0.001}, rate_hz=RATE_HZ,
                         topics=cfg.topics.model_dump())
    report = replay(path, policy_dir, tight)
    assert report.n_compared == report.n_recorded and report.n_mismatched > 0 and not report.ok()
    # MoveIt Servo only: the twist is the compared command
    servo = DeployConfig(safety=LOOSE, rate_hz=RATE_HZ, topics={**cfg.topics.model_dump(), "equilibrium_pose": None})
    report = replay(path, policy_dir, servo)
    assert report.command_topic == cfg.topics.twist and report.max_pos_delta_m is None
    assert report.n_compared == report.n_recorded > 40 and report.max_twist_delta < 1e-5 and report.ok()
    # a config whose topics are not in the bag
    other = DeployConfig(safety=LOOSE, topics={"object_pose": "/elsewhere/object_pose"})
    with pytest.raises(ValueError, match=r"no input topic\(s\) \['/elsewhere/object_pose'\]"):
        replay(path, policy_dir, other)
    no_cmd = DeployConfig(safety=LOOSE, topics={"equilibrium_pose": "/other/eq", "twist": None})
    with pytest.raises(ValueError, match="no recorded command topic"):
        replay(path, policy_dir, no_cmd)
