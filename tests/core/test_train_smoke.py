"""Short real training runs in ManiSkill: every mode, the run directory, resume after SIGKILL, eval."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from robot_rl.algos import GuidedPPO
from robot_rl.cli import DEFAULT_CONFIG, main
from robot_rl.config import load_config
from robot_rl.runs import RunDir
from robot_rl.trainer import evaluate, train

pytestmark = pytest.mark.slow

SMALL = ["ppo.n_steps=64", "ppo.batch_size=64", "ppo.n_epochs=2", "run.eval_episodes=2", "run.progress_bar=false",
         "env.num_envs=2"]


@pytest.mark.parametrize("mode", ["ppo", "rpd", "vlajs"])
def test_smoke_run_each_mode(tmp_path, mode):
    cfg = load_config(DEFAULT_CONFIG, [*SMALL, f"mode={mode}", "total_steps=384", f"run.out_dir={tmp_path}",
                                       "run.name=r"])
    run = train(cfg)
    for name in ("config.yaml", "metrics.jsonl", "eval.json", "success_curve.png", "checkpoints/latest/model.zip",
                 "checkpoints/latest/vecnormalize.pkl", "checkpoints/latest/guidance.json"):
        assert (run.path / name).exists(), name
    assert list((run.path / "tb").glob("events.out.tfevents.*"))
    rows = run.read_metrics()
    assert rows and rows[-1]["time/total_timesteps"] == 384
    assert "rollout/success_rate" in rows[-1] and "time/steps_per_s" in rows[-1]
    if mode == "ppo":
        assert not any(k.startswith("guidance/") for k in rows[-1])
    else:
        assert rows[-1]["guidance/queries"] > 0
        # vlajs asks on at most 20% of env steps; rpd on every one
        budget = 0.2 if mode == "vlajs" else 1.0
        assert rows[-1]["guidance/queries"] <= budget * 384
        assert "guidance/lambda" in rows[-1] and "guidance/aux_loss" in rows[-1]
    result = json.loads((run.path / "eval.json").read_text())
    assert result["episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0
    assert 0.0 <= result["grasp_rate"] <= 1.0 and 0.0 < result["mean_closest_approach_m"] < 0.5


def test_smoke_run_with_gripper_and_magnitude_guidance(tmp_path):
    """A vlajs run with the gripper hinge and the magnitude term on PickCube (the grasping task): the logs carry the
    gripper agreement and the guard's statistic, and a checkpoint keeps the guard's state.
    """
    cfg = load_config(DEFAULT_CONFIG, [*SMALL, "task=RRL-PickCube-Sparse-v1", "total_steps=384",
                                       "guidance.components=[pos,rot,grip]", "guidance.magnitude_weight=1.0",
                                       "guidance.budget_fraction=0.5", "guidance.guard.min_rows=64",
                                       f"run.out_dir={tmp_path}", "run.name=g"])
    run = train(cfg)
    last = run.read_metrics()[-1]
    assert 0.0 <= last["guidance/grip_agreement"] <= 1.0
    assert last["guidance/guard_rows"] > 0 and math.isfinite(last["guidance/guard_t"])
    state = json.loads((run.path / "checkpoints/latest/guidance.json").read_text())
    assert state["guard"]["updates"] >= 1


def test_resume_after_sigkill(tmp_path):
    """A run killed with SIGKILL resumes from its last checkpoint and finishes its budget."""
    args = [sys.executable, "-m", "robot_rl.cli", "train", "--config", str(DEFAULT_CONFIG), *SMALL,
            "total_steps=1024", "run.checkpoint_every_steps=128", f"run.out_dir={tmp_path}", "run.name=r",
            "run.eval_episodes=1"]
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = RunDir(tmp_path / "r")
    deadline = time.time() + 240
    try:
        while time.time() < deadline and not (run.has_checkpoint() and run.checkpoint_state()["num_timesteps"] >= 256):
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its env workers
        proc.wait()
    saved = run.checkpoint_state()["num_timesteps"]
    assert 256 <= saved < 1024
    assert not (run.path / "eval.json").exists()
    assert main(["train", "--resume", str(run.path)]) == 0
    rows = run.read_metrics()
    steps = [r["time/total_timesteps"] for r in rows]
    assert steps == sorted(steps) and steps[-1] == 1024  # no duplicated or lost updates in metrics
    assert run.checkpoint_state()["num_timesteps"] == 1024
    assert json.loads((run.path / "eval.json").read_text())["num_timesteps"] == 1024


def test_eval_writes_video(tmp_path):
    cfg = load_config(DEFAULT_CONFIG, [*SMALL, "mode=ppo", "total_steps=128", f"run.out_dir={tmp_path}", "run.name=r",
                                       "run.eval_episodes=0", "env.max_episode_steps=10"])
    run = train(cfg)
    result = evaluate(run, episodes=2, video=tmp_path / "v.mp4")
    assert result["episodes"] == 2 and result["mean_length"] <= 10
    assert (tmp_path / "v.mp4").stat().st_size > 1000


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["train", "--config", str(DEFAULT_CONFIG), "ppo.n_step=3"]) == 2
    assert "unknown key 'ppo.n_step'" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2


@pytest.mark.parametrize("task, size", [("RRL-PushCube-HiddenGoal-v1", 32), ("RRL-PickPlaceCube-HiddenGoal-v1", 36)])
@pytest.mark.parametrize("mode", ["ppo", "vlajs"])
def test_smoke_run_hidden_goal_task(tmp_path, task, size, mode):
    """The hidden-goal tasks (issue 12) train through the real trainer: the policy's observation is the
    goal-free state, and in vlajs mode the scripted teacher answers for them (from the privileged state).
    """
    cfg = load_config(DEFAULT_CONFIG, [*SMALL, f"task={task}", f"mode={mode}", "total_steps=256",
                                       f"run.out_dir={tmp_path}", "run.name=r"])
    run = train(cfg)
    schema = run.schema()
    assert schema.task == task and schema.size == size
    assert not any("goal" in f.name for f in schema.group("state").fields)
    model = GuidedPPO.load(run.checkpoint / "model.zip", device="cpu", custom_objects={"guidance": None})
    assert model.observation_space.shape == (size,)
    rows = run.read_metrics()
    assert rows and rows[-1]["time/total_timesteps"] == 256
    if mode == "vlajs":
        assert rows[-1]["guidance/queries"] > 0 and rows[-1]["guidance/invalid_answers"] == 0
    assert json.loads((run.path / "eval.json").read_text())["episodes"] == 2


def test_smoke_run_with_memory(tmp_path):
    """memory.enabled on the Restore task: the run's schema has the memory group, the teacher's notes reach it (the
    scratchpad counters), and its evaluation queries the teacher for notes too.
    """
    cfg = load_config(DEFAULT_CONFIG, [*SMALL, "task=RRL-PickPlaceCube-Restore-v1", "memory.enabled=true",
                                       "total_steps=256", f"run.out_dir={tmp_path}", "run.name=m"])
    run = train(cfg)
    schema = run.schema()
    assert [g.name for g in schema.groups] == ["state", "memory"]
    assert schema.group("memory").size == cfg.memory.grounding_slots * 7 + cfg.memory.plan_slots * 3 + \
        cfg.memory.act_slots * 5
    rows = run.read_metrics()
    assert rows[-1]["memory/notes"] > 0 and rows[-1]["memory/entries"] > 0 and rows[-1]["memory/dropped"] == 0
    assert json.loads((run.path / "eval.json").read_text())["episodes"] == 2


def test_smoke_run_recurrent_ppo(tmp_path):
    """ppo.recurrent trains sb3-contrib's RecurrentPPO, checkpoints it and evaluates it with its LSTM state."""
    from sb3_contrib import RecurrentPPO

    cfg = load_config(DEFAULT_CONFIG, [*SMALL, "mode=ppo", "ppo.recurrent=true", "ppo.lstm_hidden_size=16",
                                       "total_steps=256", f"run.out_dir={tmp_path}", "run.name=l"])
    run = train(cfg)
    model = RecurrentPPO.load(run.checkpoint / "model.zip")
    assert model.policy.lstm_actor.hidden_size == 16
    assert json.loads((run.path / "eval.json").read_text())["episodes"] == 2
    from robot_rl.deploy.export import export_policy

    with pytest.raises(ValueError, match="ppo.recurrent"):  # the ROS node runs feed-forward policies only
        export_policy(run.path)
