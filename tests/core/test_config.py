"""Config validation: unknown keys and bad values are rejected with the key named."""

from pathlib import Path

import pytest
import yaml

from robot_rl.cli import DEFAULT_CONFIG
from robot_rl.config import (
    TEACHER_CONFIGS,
    ConfigError,
    RemoteTeacherConfig,
    ScriptedTeacherConfig,
    SpawnTeacherConfig,
    build_config,
    describe,
    dump_config,
    load_config,
    parse_override,
)

DATA = Path(__file__).resolve().parents[1] / "data"


def test_default_config_file_is_the_main_job():
    cfg = load_config(DEFAULT_CONFIG)
    assert (cfg.task, cfg.mode, cfg.teacher.kind) == ("RRL-PushCube-Sparse-v1", "vlajs", "scripted")
    assert cfg.guidance.budget_fraction <= 0.2
    # Built-in defaults are the main job too (an install without configs/ trains the same thing).
    assert load_config(None) == cfg


def test_overrides_are_typed():
    cfg = build_config({}, ["ppo.n_steps=128", "teacher.direction_noise_deg=30", "mode=rpd",
                            "guidance.deactivate_threshold=null"])
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


def test_unknown_guidance_component_names_the_key_and_the_allowed_values():
    with pytest.raises(ConfigError, match=r"'guidance\.components\.1'.*'pos', 'rot' or 'grip'"):
        build_config({}, ["guidance.components=[pos,gripper]"])
    with pytest.raises(ConfigError, match="guidance.components.*at most once"):
        build_config({}, ["guidance.components=[pos,pos]"])
    assert build_config({}, ["guidance.components=[pos,rot,grip]"]).guidance.components == ["pos", "rot", "grip"]
    assert build_config({}).guidance.components == ["pos", "rot"]  # the paper's


def test_a_guard_that_could_never_decide_is_refused():
    from robot_rl.config import guard_min_rows, guard_window_rows

    # 2 envs x 256 steps x 0.05 budget = 25 queries x D 4 = 100 guided env steps per update, x 2 updates < 256
    bad = ["guidance.budget_fraction=0.05", "guidance.guard.window_rollouts=2", "guidance.guard.min_rows=256"]
    with pytest.raises(ConfigError, match="guidance.guard.min_rows.*guidance.guard.window_rollouts"):
        build_config({}, bad)
    build_config({}, [*bad, "guidance.guard.enabled=false"])  # off: nothing to decide
    build_config({}, [*bad, "mode=ppo"])  # no teacher, no guard
    # the default (null) asks for 256 guided env steps, or all a small window holds: a small run is not refused
    small = build_config({}, bad[:2])
    assert guard_window_rows(small) == 200 and guard_min_rows(small) == 200
    default = build_config({})
    assert default.guidance.guard.enabled and guard_min_rows(default) == 256  # on by default in vlajs
    assert guard_min_rows(build_config({}, ["guidance.budget_fraction=0"])) is None  # nothing guided, nothing to judge
    assert guard_min_rows(build_config({}, ["mode=rpd"])) is None


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


# ----------------------------------------------------------------------------------------------
# teacher.kind: a union of kinds, each with only its own keys


def test_teacher_kinds_by_override_and_default():
    assert isinstance(build_config({}).teacher, ScriptedTeacherConfig)
    cfg = load_config(DEFAULT_CONFIG, ["teacher.kind=remote", "teacher.url=http://h:8000"])
    assert isinstance(cfg.teacher, RemoteTeacherConfig) and cfg.teacher.url == "http://h:8000"
    assert cfg.teacher.control_period_steps == 4  # the file's key every kind has is kept
    cfg = build_config({"teacher": {"control_period_steps": 2}})  # no kind: scripted
    assert cfg.teacher.kind == "scripted" and cfg.teacher.control_period_steps == 2
    cfg = build_config({}, ["teacher.kind=spawn", "teacher.backend=openvla", "teacher.model=/ckpt"])
    assert isinstance(cfg.teacher, SpawnTeacherConfig) and cfg.teacher.model == "/ckpt"


@pytest.mark.parametrize("overrides, key, kind, owner", [
    (["teacher.kind=remote", "teacher.direction_noise_deg=30"], "teacher.direction_noise_deg", "remote", "scripted"),
    (["teacher.kind=spawn", "teacher.wrong_fraction=0.5"], "teacher.wrong_fraction", "spawn", "scripted"),
    (["teacher.kind=remote", "teacher.latency_s=0.2"], "teacher.latency_s", "remote", "scripted"),
    (["teacher.kind=remote", "teacher.model=/ckpt"], "teacher.model", "remote", "spawn"),
    (["teacher.url=http://h:8000"], "teacher.url", "scripted", "remote"),
    (["teacher.timeout_s=2"], "teacher.timeout_s", "scripted", "remote / spawn"),
])
def test_a_key_of_another_kind_is_refused_and_named(overrides, key, kind, owner):
    with pytest.raises(ConfigError) as e:
        build_config({}, overrides)
    msg = str(e.value)
    assert f"unknown key '{key}' for teacher.kind={kind}" in msg and f"it is a key of teacher.kind={owner}" in msg


def test_teacher_bad_values_and_kinds_name_the_key():
    with pytest.raises(ConfigError, match="'teacher.kind'.*'scripted', 'remote', 'spawn'"):
        build_config({}, ["teacher.kind=openvla"])
    with pytest.raises(ConfigError, match="'teacher.timeout_s'"):
        build_config({}, ["teacher.kind=remote", "teacher.timeout_s=0"])
    with pytest.raises(ConfigError, match="teacher.model"):
        build_config({}, ["teacher.kind=spawn", "teacher.backend=openvla"])
    with pytest.raises(ConfigError, match="unknown key 'teacher.nope'"):
        build_config({}, ["teacher.kind=remote", "teacher.nope=1"])


def test_a_key_of_another_kind_at_its_default_is_dropped():
    """What lets a file's kind be switched by an override: the other kind's keys at their defaults do not count."""
    cfg = build_config({"teacher": {"kind": "scripted", "direction_noise_deg": 0.0, "latency_s": 0}},
                       ["teacher.kind=remote"])
    assert cfg.teacher.kind == "remote" and "direction_noise_deg" not in cfg.teacher.model_dump()
    with pytest.raises(ConfigError, match="teacher.direction_noise_deg"):  # a knob that is on is not dropped
        build_config({"teacher": {"direction_noise_deg": 30.0}}, ["teacher.kind=remote"])


def test_run_configs_from_before_the_union_still_load(tmp_path):
    legacy = yaml.safe_load((DATA / "legacy_run_config.yaml").read_text())
    assert set(legacy["teacher"]) == {"kind", "control_period_steps", "direction_noise_deg", "bias_rotation_deg",
                                      "wrong_fraction", "latency_s", "url", "timeout_s", "retries", "backoff_s",
                                      "backend", "model", "unnorm_key"}
    cfg = load_config(DATA / "legacy_run_config.yaml")
    assert cfg.teacher == ScriptedTeacherConfig(control_period_steps=4) and cfg.task == "RRL-PickCube-Sparse-v1"
    remote = load_config(DATA / "legacy_run_config.yaml", ["teacher.kind=remote"])  # resume against a server
    assert isinstance(remote.teacher, RemoteTeacherConfig) and remote.teacher.timeout_s == 5.0
    # the flat section ignored the keys of other kinds whatever their value: so does loading it
    legacy["teacher"]["url"] = "http://ignored:1"
    assert build_config(legacy).teacher == cfg.teacher
    # a resolved config now holds its kind's keys only, and loads back equal
    dump_config(cfg, tmp_path / "c.yaml")
    assert set(yaml.safe_load((tmp_path / "c.yaml").read_text())["teacher"]) == set(ScriptedTeacherConfig.model_fields)
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("kind", sorted(TEACHER_CONFIGS))
def test_every_kind_round_trips(tmp_path, kind):
    extra = ["teacher.backend=openvla", "teacher.model=/ckpt"] if kind == "spawn" else []
    cfg = build_config({}, [f"teacher.kind={kind}", *extra])
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg and type(cfg.teacher) is TEACHER_CONFIGS[kind]


def test_describe_lists_every_key_of_every_kind():
    lines = describe()
    keys = {line.split(" ", 1)[0] for line in lines}
    for model in TEACHER_CONFIGS.values():
        assert {f"teacher.{k}" for k in model.model_fields} <= keys
    kind_line = next(line for line in lines if line.startswith("teacher.kind "))
    assert "scripted | remote | spawn" in kind_line
    assert any(line.startswith("teacher.url (default 'http://127.0.0.1:8000'; kind remote | openpi)") for line in lines)
    assert len(keys) == len(lines)  # each key once


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "configs" / "train").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_train_config_loads(path):
    cfg = load_config(path)
    assert cfg.total_steps > 0
    if path.name == "pickcube_sparse_vlajs.yaml":  # issue 14's settings
        assert cfg.guidance.components == ["pos", "rot", "grip"] and cfg.guidance.guard.enabled
