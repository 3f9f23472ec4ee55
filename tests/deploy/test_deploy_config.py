"""The shipped deploy configs and the joint map (no ROS).

- ``configs/deploy/fr3.yaml`` and ``fer.yaml`` carry franka_ros2 Jazzy v3.4.0's names (its URDF's joints and root
  frame, the state broadcaster's topic and QoS) and crisp_controllers' target topic, and validate;
- ``joint_map`` maps every simulator joint; one that misses a joint, names an unknown one or maps two onto one robot
  joint is refused naming it, at load, and a policy whose arm joints the map does not cover is refused at configure.
"""

import json
import shutil
from pathlib import Path

import pytest

from robot_rl.config import ConfigError
from robot_rl.deploy.config import PANDA_JOINT_NAMES, DeployConfig, load_deploy_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "deploy"
POLICY = ROOT / "tests" / "data" / "pushcube_vlajs_policy"


@pytest.mark.parametrize("robot", ["fr3", "fer"])
def test_franka_ros2_configs_carry_franka_ros2_s_names(robot):
    cfg = load_deploy_config(CONFIGS / f"{robot}.yaml")
    assert cfg.joint_names == [f"{robot}_joint{i}" for i in range(1, 8)] + [f"{robot}_finger_joint1",
                                                                            f"{robot}_finger_joint2"]
    assert cfg.joint_map == dict(zip(PANDA_JOINT_NAMES, cfg.joint_names))
    assert cfg.frames.base == f"{robot}_link0"
    t = cfg.topics
    assert (t.ee_pose, t.joint_states, t.equilibrium_pose) == (
        "/franka_robot_state_broadcaster/current_pose", "/joint_states", "/target_pose")
    assert t.twist is None and cfg.trigger == "poll"
    assert (cfg.qos.sensors.reliability, cfg.qos.sensors.depth) == ("best_effort", 1)
    assert (cfg.qos.commands.reliability, cfg.qos.commands.depth) == ("reliable", 1)
    limits = cfg.safety_limits()
    assert limits.max_input_age_for("ee_pose") < limits.max_input_age_for("joint_states") < limits.max_input_age_for(
        "object_pose")


def _map(**changes):
    m = {n: n.replace("panda_", "fr3_") for n in PANDA_JOINT_NAMES}
    m.update(changes)
    return {k: v for k, v in m.items() if v is not None}


def test_a_joint_map_that_misses_a_joint_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match="no robot joint for the simulator's panda_finger_joint2"):
        DeployConfig(joint_map=_map(panda_finger_joint2=None))
    with pytest.raises(ValueError, match="'panda_joint8' is not a joint of the simulator's robot"):
        DeployConfig(joint_map={**_map(), "panda_joint8": "fr3_joint8"})
    with pytest.raises(ValueError, match="the robot's 'fr3_joint1' is mapped from two simulator joints"):
        DeployConfig(joint_map=_map(panda_joint2="fr3_joint1"))
    with pytest.raises(ValueError, match="joint_map or joint_names, not both"):
        DeployConfig(joint_map=_map(), joint_names=["a"] * 9)
    text = (CONFIGS / "fr3.yaml").read_text().replace("  panda_joint4: fr3_joint4\n", "")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match="joint_map.*panda_joint4"):
        load_deploy_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match=r"safety\.max_input_age_by_input_s\.ee_pos\b"):
        load_deploy_config(CONFIGS / "fr3.yaml", ["safety.max_input_age_by_input_s.ee_pos=0.1"])


def test_configure_refuses_a_policy_arm_joint_the_map_does_not_cover(tmp_path):
    from robot_rl.deploy.controller import PolicyController

    cfg = load_deploy_config(CONFIGS / "fr3.yaml")
    assert PolicyController(POLICY, cfg).assembler.joint_names[0] == "fr3_joint1"
    other = tmp_path / "policy"
    shutil.copytree(POLICY, other)
    side = json.loads((other / "policy.json").read_text())
    side["action"]["controller"]["arm"]["joint_names"][2] = "xarm_joint3"
    (other / "policy.json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match="arm joint 'xarm_joint3'.*joint_map"):
        PolicyController(other, cfg)


def _feed_all(c, t_stamp: float, t_received: float) -> None:
    from robot_rl.deploy.ros_io import joint_state_msg, pose_msg

    a, base = c.assembler, c.cfg.frames.base
    a.update_joint_state(joint_state_msg(c.cfg.joint_names, [0.0] * 9, [0.0] * 9, t_stamp), t_received)
    for key in ("object_pose", "goal_pose"):
        a.update_pose(key, pose_msg([0.6, 0.0, 0.02], [1, 0, 0, 0], base, t_stamp), t_received)
    a.update_pose("ee_pose", pose_msg([0.5, 0.0, 0.2], [0, 1, 0, 0], base, t_stamp), t_received)


def test_the_controller_s_staleness_uses_the_receive_clock_and_the_per_input_limits():
    """Issue 16 item 9: a stamp from the future made ``inputs_stale`` say "fresh" for as long as the offset (no
    ``abs()``), so the node, after a future-stamped message and silence, stepped (and published a status) once in
    1.5 s. Ages are now the receive clock's, checked by the safety filter's own watchdog, each input on its limit.
    """
    from robot_rl.deploy.controller import PolicyController

    c = PolicyController(POLICY, load_deploy_config(CONFIGS / "fr3.yaml"))
    _feed_all(c, t_stamp=101.5, t_received=100.0)  # the robot's clock 1.5 s ahead
    c.activate()
    assert not c.inputs_stale(100.01)
    r = c.step(100.01)
    assert r.decision.__class__.__name__ == "Command" and r.input_ages["ee_pose"] == pytest.approx(0.01)
    assert c.diagnostics()["future_stamps.ee_pose"] == 1
    # silence: stale once the EE pose's own limit has passed (not after the 1.5 s offset, nor the default limit)
    ee = c.safety.limits.max_input_age_for("ee_pose")
    assert ee < c.safety.limits.max_input_age_s
    assert not c.inputs_stale(100.0 + ee - 0.001) and c.inputs_stale(100.0 + ee + 0.001)
    assert c.step(100.0 + ee + 0.01).decision.reason == "stale_input"
    t = 100.0 + ee + 0.01
    _feed_all(c, t_stamp=t + 1.5, t_received=t)  # fresh again
    assert not c.inputs_stale(t + 0.01)
