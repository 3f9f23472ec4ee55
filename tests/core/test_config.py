"""Config validation: unknown keys and bad values are rejected with the key named."""

import pytest

from robot_rl.cli import DEFAULT_CONFIG
from robot_rl.config import ConfigError, build_config, describe, dump_config, load_config, parse_override


def test_default_config_file_is_the_main_job():
    cfg = load_config(DEFAULT_CONFIG)
    assert (cfg.task, cfg.mode, cfg.teacher.kind) == ("RRL-PushCube-Sparse-v1", "vlajs", "scripted")
    assert cfg.guidance.budget_fraction <= 0.2
    # Built-in defaults are the main job too (an install without configs/ trains the same thing).
    assert load_config(None) == cfg


def test_overrides_are_typed():
    cfg = build_config({}, ["ppo.n_steps=128", "teacher.direction_noise_deg=30", "mode=rpd", "guidance.deactivate_threshold=null"])
    assert cfg.ppo.n_steps == 128 and cfg.teacher.direction_noise_deg == 30.0 and cfg.mode == "rpd"
    assert cfg.guidance.deactivate_threshold is None


def test_unknown_key_names_key_and_allowed_keys():
    with pytest.raises(ConfigError) as e:
        build_config({"ppo": {"n_step": 10}})
    assert "ppo.n_step" in str(e.value) and "n_steps" in str(e.value)
    with pytest.raises(ConfigError, match="unknown key 'foo'"):
        build_config({}, ["foo=1"])


@pytest.mark.parametrize("override, key", [
    ("mode=imitation", "mode"),
    ("ppo.gamma=1.5", "ppo.gamma"),
    ("env.sim_backend=physx_gpu", "env.sim_backend"),
    ("guidance.budget_fraction=-0.1", "guidance.budget_fraction"),
    ("env.num_envs=two", "env.num_envs"),
])
def test_bad_value_names_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        build_config({}, [override])


def test_bad_mode_lists_allowed_values():
    with pytest.raises(ConfigError, match="ppo.*rpd.*vlajs"):
        build_config({}, ["mode=imitation"])


def test_unknown_task_lists_known_ids():
    with pytest.raises(ConfigError, match="RRL-PushCube-Sparse-v1"):
        build_config({}, ["task=PushCube-v9"])


def test_batch_larger_than_rollout_is_rejected():
    with pytest.raises(ConfigError, match="batch_size"):
        build_config({}, ["ppo.n_steps=8", "env.num_envs=2", "ppo.batch_size=64"])


def test_malformed_override_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("ppo.n_steps")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_roundtrip_and_describe(tmp_path):
    cfg = build_config({}, ["seed=7"])
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    lines = describe()
    assert any(line.startswith("ppo.n_steps") for line in lines)
    assert all(": " in line and not line.endswith(": None") for line in lines)
