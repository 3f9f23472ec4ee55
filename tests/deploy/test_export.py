"""ONNX export of a real (tiny) training run: parity with SB3's deterministic predict, the sidecar, and
OnnxPolicy's refusal of tampered or mismatched files.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from robot_rl.cli import DEFAULT_CONFIG
from robot_rl.config import load_config
from robot_rl.deploy.export import export_policy
from robot_rl.deploy.policy import OnnxPolicy
from robot_rl.envs import TASKS, make_env
from robot_rl.envs.obs_layout import observation_layout
from robot_rl.observation import schema_for
from robot_rl.runs import RunDir

pytestmark = pytest.mark.slow

TASK = "RRL-PushCube-Sparse-v1"
OBS_DIM = 35
STEPS = 256
PARITY_ATOL = 1e-5


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunDir:
    """A real PPO run of 256 env steps (one in-process env: no worker start-up), with VecNormalize."""
    from robot_rl.trainer import train

    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(DEFAULT_CONFIG, [f"task={TASK}", f"total_steps={STEPS}", "ppo.n_steps=64", "ppo.batch_size=64",
                                       "ppo.n_epochs=2", "env.num_envs=1", "mode=ppo", "run.eval_episodes=0",
                                       "run.progress_bar=false", f"run.out_dir={out}", "run.name=r"])
    return train(cfg)


@pytest.fixture(scope="module")
def exported(run):
    return export_policy(run.path)


def real_observations(task: str, n: int, seed: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, D) float32`` observations of ``task`` (env seed ``seed``) under random actions from ``rng``
    (episodes restart when they end).
    """
    env = make_env(task, seed=seed)
    real = [env.reset()[0]]
    while len(real) < n:
        obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        real.append(env.reset()[0] if terminated or truncated else obs)
    env.close()
    return np.stack(real).astype(np.float32)


@pytest.fixture(scope="module")
def observations() -> np.ndarray:
    """1000 observations ``(1000, 35) float32``: 300 from the env under random actions, and random ones,
    including huge values whose normalized value hits VecNormalize's clip.
    """
    rng = np.random.default_rng(0)
    real = real_observations(TASK, 300, 7, rng)
    spread = real.std(axis=0) + 0.05
    near = real[rng.integers(0, len(real), 300)] + rng.normal(0, 3, (300, OBS_DIM)) * spread
    wide = rng.uniform(-5, 5, (200, OBS_DIM))
    huge = rng.choice([-1, 1], (200, OBS_DIM)) * 10.0 ** rng.uniform(0, 6, (200, OBS_DIM))
    return np.concatenate([real, near, wide, huge]).astype(np.float32)


def _sb3_actions(run_path, obs: np.ndarray) -> np.ndarray:
    """The reference: SB3's VecNormalize.normalize_obs + policy.predict(deterministic=True)."""
    from robot_rl.algos import GuidedPPO

    ckpt = RunDir(run_path).checkpoint
    model = GuidedPPO.load(ckpt / "model.zip", device="cpu", custom_objects={"guidance": None})
    with open(ckpt / "vecnormalize.pkl", "rb") as f:
        vn = pickle.load(f)  # what VecNormalize.load does, without an env
    actions, _ = model.predict(vn.normalize_obs(obs), deterministic=True)
    return actions, vn


def test_onnx_matches_sb3_deterministic_predict(run, exported, observations):
    ref, vn = _sb3_actions(run.path, observations)
    # the random observations reach the normalization clip
    assert np.mean(np.abs(vn._normalize_obs(observations, vn.obs_rms)) >= vn.clip_obs) > 0.05
    policy = OnnxPolicy(exported)
    got = policy(observations)
    assert got.dtype == np.float32 and got.shape == (1000, 7)
    assert np.max(np.abs(got - ref)) < PARITY_ATOL
    # a single observation and a batch of one give the same rows
    np.testing.assert_array_equal(policy(observations[3]), got[3])
    np.testing.assert_array_equal(policy(observations[3:4].astype(np.float64)), got[3:4])


def test_parity_when_actions_hit_the_action_clip(run, observations, tmp_path):
    """SB3 clips the Gaussian mean to [-1, 1] (no tanh): a policy with large means must agree too."""
    import torch

    from robot_rl.algos import GuidedPPO

    hot = tmp_path / "hot"
    shutil.copytree(run.path, hot)
    ckpt = RunDir(hot).checkpoint
    model = GuidedPPO.load(ckpt / "model.zip", device="cpu", custom_objects={"guidance": None})
    with torch.no_grad():
        model.policy.action_net.weight.mul_(300.0)
        model.policy.action_net.bias.add_(0.5)
    model.save(ckpt / "model.zip")
    ref, _ = _sb3_actions(hot, observations)
    assert np.mean(np.abs(ref) == 1.0) > 0.2  # the clip is exercised
    got = OnnxPolicy(export_policy(hot, tmp_path / "hot_export"))(observations)
    assert np.max(np.abs(got - ref)) < PARITY_ATOL
    assert np.all(np.abs(got) <= 1.0)


def test_sidecar_content(run, exported):
    import onnx

    sc = json.loads((exported / "policy.json").read_text())
    assert sc["format"] == "robot_rl.policy" and sc["format_version"] == 2
    assert sc["obs_dim"] == OBS_DIM and sc["action_dim"] == 7
    # the run's observation schema, saved when it started, is the one in its export
    assert sc["observation"]["schema"] == run.schema().to_dict() == schema_for(TASK).to_dict()
    assert OnnxPolicy(exported).schema == run.schema()
    layout = sc["observation"]["layout"]
    assert sum(f["size"] for f in layout) == OBS_DIM
    assert [f["name"] for f in layout] == [f.name for f in observation_layout(TASK)]
    assert {f["group"] for f in layout} == {"state"} and all(f["source"] for f in layout)
    offsets = np.cumsum([0] + [f["size"] for f in layout])[:-1]
    assert [f["offset"] for f in layout] == offsets.tolist()
    assert all(f["frame"] and f["unit"] for f in layout)
    assert sc["observation"]["normalization"]["baked_in"] is True
    assert sc["observation"]["normalization"]["clip"] == 10.0 and sc["observation"]["normalization"]["epsilon"] == 1e-8
    assert sc["observation"]["robot_base_pose_world"]["position_m"] == [-0.615, 0.0, 0.0]
    assert sc["onnx"]["sha256"] == hashlib.sha256((exported / "policy.onnx").read_bytes()).hexdigest()
    assert sc["control_rate_hz"] == 20
    assert sc["task"]["id"] == TASK and sc["task"]["instruction"] == TASKS[TASK].instruction
    assert sc["source"]["num_timesteps"] == STEPS
    assert sc["source"]["run_dir"] == str(run.path.resolve()) and sc["source"]["checkpoint"] == "checkpoints/latest"
    act = {f["name"]: f for f in sc["action"]["fields"]}
    assert act["delta_pos"]["scale_per_unit"] == pytest.approx(0.1) and act["delta_pos"]["unit"] == "m"
    assert act["delta_rot"]["scale_per_unit"] == pytest.approx(0.1) and act["delta_rot"]["sign"] == -1.0
    assert act["gripper"]["finger_target_m"] == pytest.approx([-0.01, 0.04])
    assert act["gripper"]["width_limits_m"] == pytest.approx([0.0, 0.08])
    # the graph: one input "obs" (batch, 35), one output "actions" (batch, 7), dynamic batch
    g = onnx.load(str(exported / "policy.onnx")).graph
    assert [i.name for i in g.input] == ["obs"] and [o.name for o in g.output] == ["actions"]
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (g.input[0], g.output[0])]
    assert dims == [["batch", OBS_DIM], ["batch", 7]]


def _copy(exported, tmp_path):
    dst = tmp_path / "export"
    shutil.copytree(exported, dst)
    return dst


def _edit_sidecar(path, fn):
    sc = json.loads((path / "policy.json").read_text())
    fn(sc)
    (path / "policy.json").write_text(json.dumps(sc))


def test_tampered_onnx_is_refused(exported, tmp_path):
    d = _copy(exported, tmp_path)
    data = bytearray((d / "policy.onnx").read_bytes())
    data[-5] ^= 0xFF
    (d / "policy.onnx").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sidecar .* does not match the ONNX file"):
        OnnxPolicy(d)


def test_tampered_sidecar_obs_dim_is_refused(exported, tmp_path):
    d = _copy(exported, tmp_path)
    _edit_sidecar(d, lambda sc: sc.update(obs_dim=36))
    with pytest.raises(ValueError, match=r"observation schema has state 35 = 35 values, but obs_dim is 36"):
        OnnxPolicy(d)

    def grow(sc):  # a consistent sidecar for another observation size: the graph check catches it
        sc["obs_dim"] = 36
        schema = sc["observation"]["schema"]
        schema["size"] += 1
        schema["groups"][0]["size"] += 1
        last = schema["groups"][0]["fields"][-1]
        last["size"] += 1
        last["components"].append("extra")

    _edit_sidecar(d, grow)
    with pytest.raises(ValueError,
                       match=r"ONNX input 'obs' has shape \['batch', 35\], but the sidecar's obs_dim is 36"):
        OnnxPolicy(d)


def test_tampered_sidecar_names_are_refused(exported, tmp_path):
    d = _copy(exported, tmp_path)
    _edit_sidecar(d, lambda sc: sc["onnx"]["input"].update(name="observation"))
    with pytest.raises(ValueError, match=r"ONNX inputs \['obs'\] do not match the sidecar's input 'observation'"):
        OnnxPolicy(d)


def test_expected_task_and_obs_dim(exported):
    assert OnnxPolicy(exported, expected_task=TASK, expected_obs_dim=OBS_DIM).task_id == TASK
    assert OnnxPolicy(exported / "policy.json", expected_task="PushCube-v2").obs_dim == OBS_DIM  # paper name
    with pytest.raises(ValueError,
                       match="policy is for task 'RRL-PushCube-Sparse-v1', expected task 'RRL-PickCube-Sparse-v1'"):
        OnnxPolicy(exported, expected_task="RRL-PickCube-Sparse-v1")
    with pytest.raises(ValueError, match="size 35 .* expected obs size 42"):
        OnnxPolicy(exported, expected_obs_dim=42)


def test_bad_observations_are_refused(exported):
    policy = OnnxPolicy(exported)
    with pytest.raises(ValueError, match=r"obs must be \(35,\) or \(B, 35\)"):
        policy(np.zeros(42, np.float32))
    with pytest.raises(ValueError, match=r"obs must be"):
        policy(np.zeros((2, 3, 35), np.float32))
    obs = np.zeros(35, np.float32)
    obs[26] = np.nan  # goal_pos y
    with pytest.raises(ValueError, match=r"NaN or inf in field\(s\) \['state.goal_pos'\]"):
        policy(obs)


def test_missing_files(run, tmp_path):
    with pytest.raises(FileNotFoundError, match="policy.json"):
        OnnxPolicy(tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run.path / "config.yaml", bare / "config.yaml")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        export_policy(bare)
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        export_policy(tmp_path / "nowhere")


def test_a_malformed_schema_is_refused_naming_the_entry(exported, tmp_path):
    d = _copy(exported, tmp_path)
    _edit_sidecar(d, lambda sc: sc["observation"]["schema"]["groups"][0]["fields"][2].pop("size"))
    with pytest.raises(ValueError, match=r"bad observation schema: .*'size'"):
        OnnxPolicy(d)
    _edit_sidecar(d, lambda sc: sc["observation"]["schema"].update(version=99))
    with pytest.raises(ValueError, match="schema version 99 is not supported"):
        OnnxPolicy(d)


def test_a_policy_exported_before_observation_groups_still_loads():
    """tests/data's PushCube policy is a format-1 export (a flat state layout, no schema, no ROS sources): it is
    read as a state-only schema; its layout is exactly today's PushCube layout, so it gets today's fields,
    with their ROS sources, and the node can assemble its observation.
    """
    from robot_rl.deploy.controller import PolicyController

    old = OLD_POLICY
    assert json.loads((old / "policy.json").read_text())["format_version"] == 1
    policy = OnnxPolicy(old)
    assert policy.schema.group_names == ("state",) and policy.schema.size == OBS_DIM
    assert not policy.schema.differences(schema_for(TASK))
    assert all(f.source for f in policy.schema.group("state").fields)
    assert PolicyController(old, SIM_CONFIG()).assembler.required_inputs == (
        "joint_states", "ee_pose", "object_pose", "goal_pose")


def test_an_old_policy_with_another_layout_is_refused_with_how_to_re_export(tmp_path):
    from robot_rl.deploy.controller import PolicyController

    d = tmp_path / "old"
    shutil.copytree(OLD_POLICY, d)

    def swap(sc):  # a layout this version does not know (two fields swapped)
        lay = sc["observation"]["layout"]
        lay[3], lay[4] = lay[4], lay[3]

    _edit_sidecar(d, swap)
    with pytest.raises(ValueError, match=r"exported before observation groups .*state\.goal_pos: field 3 is 'goal_pos' "
                                         r"in the first schema, 'obj_pose' in the second\): "
                                         r"re-export it with `robot-rl export"):
        PolicyController(d, SIM_CONFIG())


def test_sidecar_schema_that_does_not_match_the_node_is_refused_naming_group_and_field(exported, tmp_path):
    from robot_rl.deploy.controller import PolicyController

    d = _copy(exported, tmp_path)
    _edit_sidecar(d, lambda sc: sc["observation"]["schema"]["groups"][0]["fields"][3].update(frame="robot_base"))
    with pytest.raises(ValueError, match=r"sidecar .* does not match the expected observation of "
                                         r"RRL-PushCube-Sparse-v1: state\.goal_pos: frame 'world' != 'robot_base'"):
        PolicyController(d, SIM_CONFIG())
    with pytest.raises(ValueError, match="policy is for task 'RRL-PushCube-Sparse-v1', expected task 'PickCube-v2'"):
        PolicyController(exported, SIM_CONFIG(["task=PickCube-v2"]))


OLD_POLICY = Path(__file__).resolve().parents[1] / "data" / "pushcube_vlajs_policy"


def SIM_CONFIG(overrides=()):  # noqa: N802 - reads like the config it loads
    from robot_rl.deploy.config import load_deploy_config

    return load_deploy_config(Path(__file__).resolve().parents[2] / "configs" / "deploy" / "sim.yaml", overrides)


@pytest.mark.parametrize("task, size", [("RRL-PokeCube-Sparse-v1", 54), ("RRL-PushCube-HiddenGoal-v1", 32),
                                        ("RRL-PickPlaceCube-HiddenGoal-v1", 36)])
def test_a_grasping_task_exports_with_parity(task, size, tmp_path):
    """A tiny real run of a task with a tool (PokeCube: cube, peg, goal), and of the hidden-goal tasks (no goal
    in the policy's observation): export, parity with SB3 on real observations, and the run's schema in the
    sidecar.
    """
    from robot_rl.trainer import train

    cfg = load_config(DEFAULT_CONFIG, [f"task={task}", "total_steps=128", "ppo.n_steps=64", "ppo.batch_size=64",
                                       "ppo.n_epochs=1", "env.num_envs=1", "mode=ppo", "run.eval_episodes=0",
                                       "run.progress_bar=false", f"run.out_dir={tmp_path}", "run.name=r"])
    run = train(cfg)
    out = export_policy(run.path)
    policy = OnnxPolicy(out, expected_task=task)
    assert policy.schema == run.schema() and policy.schema.size == size == policy.obs_dim
    if "HiddenGoal" in task:  # the node will read no goal for it
        assert not any("goal" in f.name or "goal" in f.source for f in policy.schema.group("state").fields)
    obs = real_observations(task, 200, 1, np.random.default_rng(1))
    ref, _ = _sb3_actions(run.path, obs)
    assert np.max(np.abs(policy(obs) - ref)) < PARITY_ATOL


class _Marker:
    """Unpickling this creates the file ``path`` (``builtins.open(path, "w")``): a stand-in for hostile code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_vecnormalize_json_round_trip_equals_vecnormalize(run):
    """checkpoints/latest/vecnormalize.json holds exactly the pickled VecNormalize's statistics and settings, and a
    VecNormalize rebuilt from it normalizes bit for bit as the unpickled one.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv

    from robot_rl.runs import read_vecnormalize_json, vecnormalize_from_dict

    with open(run.checkpoint / "vecnormalize.pkl", "rb") as f:
        vn = pickle.load(f)
    stats = read_vecnormalize_json(run.checkpoint / "vecnormalize.json")
    for name in ("obs_rms", "ret_rms"):
        rms = getattr(vn, name)
        np.testing.assert_array_equal(stats[name]["mean"], rms.mean)
        np.testing.assert_array_equal(stats[name]["var"], rms.var)
        assert stats[name]["count"] == rms.count
    for key in ("norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon"):
        assert stats[key] == getattr(vn, key), key
    env = make_env(TASK, seed=0)
    rebuilt = vecnormalize_from_dict(stats, DummyVecEnv([lambda: env]), training=False)
    obs = np.random.default_rng(1).normal(0, 2, (50, OBS_DIM)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.normalize_obs(obs), vn.normalize_obs(obs))
    assert rebuilt.training is False
    rebuilt.close()
    with pytest.raises(ValueError, match="not a robot_rl VecNormalize"):
        read_vecnormalize_json(run.checkpoint / "guidance.json")


def test_export_loads_no_pickle(run, observations, tmp_path):
    """With the pickle deleted the export still agrees with SB3; with a hostile vecnormalize.pkl and a hostile
    object in the SB3 zip's data, the export never unpickles either (their marker file is never made), while
    SB3's own load of the same zip does run it.
    """
    import base64
    import zipfile

    from robot_rl.algos import GuidedPPO

    ref, _ = _sb3_actions(run.path, observations)
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    ckpt = RunDir(copy).checkpoint
    (ckpt / "vecnormalize.pkl").unlink()
    got = OnnxPolicy(export_policy(copy, tmp_path / "e1"))(observations)
    assert np.max(np.abs(got - ref)) < PARITY_ATOL

    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Marker(marker))
    (ckpt / "vecnormalize.pkl").write_bytes(payload)
    with zipfile.ZipFile(ckpt / "model.zip") as z:
        entries = {name: z.read(name) for name in z.namelist()}
    data = json.loads(entries["data"])
    data["lr_schedule"][":serialized:"] = base64.b64encode(payload).decode()  # what SB3's json_to_data unpickles
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(ckpt / "model.zip", "w") as z:
        for name, blob in entries.items():
            z.writestr(name, blob)
    GuidedPPO.load(ckpt / "model.zip", device="cpu", custom_objects={"guidance": None})
    assert marker.exists()  # the payload works: SB3's load runs it
    marker.unlink()

    got = OnnxPolicy(export_policy(copy, tmp_path / "e2"))(observations)
    assert not marker.exists()
    assert np.max(np.abs(got - ref)) < PARITY_ATOL


def test_an_old_run_with_only_the_pickle_is_refused_unless_trusted(run, observations, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run.path, old)
    json_path = RunDir(old).checkpoint / "vecnormalize.json"
    json_path.unlink()
    with pytest.raises(FileNotFoundError, match="vecnormalize.pkl.*--trust-pickle"):
        export_policy(old, tmp_path / "refused")
    assert not (tmp_path / "refused" / "policy.onnx").exists()
    with pytest.warns(UserWarning, match="unpickling"):
        out = export_policy(old, tmp_path / "trusted", trust_pickle=True)
    assert json_path.exists()  # written once: the next export reads it
    ref, _ = _sb3_actions(run.path, observations)
    assert np.max(np.abs(OnnxPolicy(out)(observations) - ref)) < PARITY_ATOL
