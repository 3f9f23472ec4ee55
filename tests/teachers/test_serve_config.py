"""The teacher serving config (configs/teacher/*.yaml): validation naming the key, the backend union, the
CLI's precedence (file < KEY=VALUE < flags), and `robot-rl teacher serve --config` as a real subprocess.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from robot_rl.cli import _parser, serve_config_of
from robot_rl.config import ConfigError
from robot_rl.teachers import ScriptedTeacher
from robot_rl.teachers.config import (
    OpenVLABackendConfig,
    ScriptedBackendConfig,
    TeacherServeConfig,
    backend_config,
    describe_serve_config,
    load_serve_config,
)
from robot_rl.teachers.remote import free_port
from robot_rl.teachers.server import build_backend

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "teacher"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_serve_config(path)
    assert isinstance(cfg, TeacherServeConfig) and cfg.backend.kind == path.stem


def test_scripted_and_openvla_files():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"scripted.yaml", "openvla.yaml"} <= names
    s = load_serve_config(CONFIGS / "scripted.yaml")
    assert s.backend == ScriptedBackendConfig(control_period_steps=4, task=None, seed=0)
    assert (s.server.host, s.server.port, s.server.max_batch, s.ray.enabled) == ("127.0.0.1", 8000, 16, False)
    assert load_serve_config(None) == s  # the file states the built-in defaults
    v = load_serve_config(CONFIGS / "openvla.yaml")
    assert isinstance(v.backend, OpenVLABackendConfig) and v.backend.unnorm_key == "bridge_orig"


@pytest.mark.parametrize("overrides, message", [
    (["server.prot=8001"], "unknown key 'server.prot' (allowed: host, port"),
    (["sever.port=8001"], "unknown key 'sever'"),
    (["server.port=0"], "'server.port'"),
    (["server.max_batch=0"], "'server.max_batch'"),
    (["backend.kind=tensorrt"], "'backend.kind'"),
    (["backend.model=/ckpt"], "unknown key 'backend.model' for backend.kind=scripted"),
    (["backend.kind=openvla"], "'backend.model'"),  # required
    (["backend.kind=openvla", "backend.model=/c", "backend.torch_dtype=fp8"], "'backend.torch_dtype'"),
    (["backend.kind=openvla", "backend.model=/c", "backend.task=PushCube-v2"], "it is a key of backend.kind=scripted"),
    (["ray.replicas=0"], "'ray.replicas'"),
])
def test_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_serve_config(CONFIGS / "scripted.yaml", overrides)
    assert message in str(e.value)


def test_switching_the_backend_kind_keeps_shared_keys_and_refuses_set_ones(tmp_path):
    # scripted.yaml's own keys hold their defaults (task null, seed 0) except what both kinds have
    cfg = load_serve_config(CONFIGS / "scripted.yaml", ["backend.kind=openvla", "backend.model=/ckpt"])
    assert cfg.backend == OpenVLABackendConfig(model="/ckpt", control_period_steps=4)
    with pytest.raises(ConfigError, match="backend.model.*it is a key of backend.kind=openvla"):
        load_serve_config(CONFIGS / "openvla.yaml", values={"backend.kind": "scripted"})


def _args(*argv):
    return _parser().parse_args(["teacher", "serve", *argv])


def test_cli_flags_override_the_file_and_key_value_pairs():
    cfg = serve_config_of(_args("--config", str(CONFIGS / "scripted.yaml")))
    assert cfg == load_serve_config(CONFIGS / "scripted.yaml")
    cfg = serve_config_of(_args("--config", str(CONFIGS / "scripted.yaml"), "--port", "8001", "server.port=9000",
                                "server.max_batch=4", "backend.task=PushCube-v2"))
    # flag > K=V > file
    assert cfg.server.port == 8001 and cfg.server.max_batch == 4 and cfg.backend.task == "PushCube-v2"
    cfg = serve_config_of(_args("--config", str(CONFIGS / "openvla.yaml"), "--model", "/mine", "--unnorm-key", "on",
                                "--ray", "--replicas", "3", "--control-period-steps", "2"))
    # a flag's value is typed by argparse, not parsed as YAML: "on" stays a string
    assert (cfg.backend.model, cfg.backend.unnorm_key, cfg.backend.control_period_steps) == ("/mine", "on", 2)
    assert cfg.ray.enabled and cfg.ray.replicas == 3
    cfg = serve_config_of(_args("--backend", "openvla", "--model", "/m"))  # no file: the defaults
    assert cfg.backend == OpenVLABackendConfig(model="/m") and cfg.server.port == 8000 and not cfg.ray.enabled
    with pytest.raises(ConfigError, match="server.port"):
        serve_config_of(_args("--port", "70000"))


def test_cli_reports_a_bad_key_as_an_error_naming_it(capsys):
    from robot_rl.cli import main

    assert main(["teacher", "serve", "--config", str(CONFIGS / "scripted.yaml"), "server.prot=1"]) == 2
    assert "unknown key 'server.prot'" in capsys.readouterr().err
    assert main(["config", "teacher"]) == 0
    out = capsys.readouterr().out
    assert "backend.model (required; kind openvla)" in out and "server.port (default 8000)" in out


def test_describe_lists_every_serving_key():
    keys = {line.split(" ", 1)[0] for line in describe_serve_config()}
    for section, model in (("server", TeacherServeConfig.model_fields["server"].annotation),
                           ("ray", TeacherServeConfig.model_fields["ray"].annotation),
                           ("backend", ScriptedBackendConfig), ("backend", OpenVLABackendConfig)):
        assert {f"{section}.{k}" for k in model.model_fields} <= keys


def test_build_backend_validates_through_the_config():
    teacher = build_backend("scripted", control_period_steps=3, task="PushCube-v2", model=None, unnorm_key=None)
    assert isinstance(teacher, ScriptedTeacher)
    assert teacher.spec.control_period_steps == 3 and teacher.task == "PushCube-v2"
    with pytest.raises(ConfigError, match="unknown key 'model'"):
        build_backend("scripted", model="/ckpt")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        backend_config("nope")
    with pytest.raises(ValueError, match="--model"):
        build_backend("openvla")


def test_openvla_backend_from_the_config_file(tmp_path):
    from robot_rl.teachers.openvla import OpenVLATeacher
    from robot_rl.teachers.server import backend_from_config
    from robot_rl.testing.tiny_vla import save_tiny_vla

    path = save_tiny_vla(tmp_path / "tiny", image_size=64)
    cfg = load_serve_config(CONFIGS / "openvla.yaml", [f"backend.model={path}", "backend.device=cpu",
                                                       "backend.torch_dtype=float32"])
    teacher = backend_from_config(cfg.backend)
    assert isinstance(teacher, OpenVLATeacher) and teacher.unnorm_key == "bridge_orig"
    assert teacher.spec.image_size == (64, 64) and teacher.spec.control_period_steps == 4


@pytest.mark.slow
def test_serve_subprocess_from_the_config_file(tmp_path):
    """`robot-rl teacher serve --config configs/teacher/scripted.yaml KEY=VALUE --port P`, stopped with SIGTERM."""
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    env = {k: v for k, v in os.environ.items() if k != "ROBOT_RL_TEACHER_API_KEY"}
    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli", "teacher", "serve", "--config",
                             str(CONFIGS / "scripted.yaml"), "backend.control_period_steps=6", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                meta = requests.get(f"http://127.0.0.1:{port}/metadata", timeout=1).json()
                break
            except requests.RequestException:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
        assert meta["backend"] == "scripted" and meta["control_period_steps"] == 6 and meta["needs_state"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        log.close()
    # uvicorn shuts down gracefully, then re-raises SIGTERM to exit with it
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()
