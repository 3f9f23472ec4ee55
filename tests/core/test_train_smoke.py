"""Short real training runs in ManiSkill: every mode, the run directory, resume after SIGKILL, eval; what an SB3 user
reaches for (--version, the printed config, step-numbered checkpoints, eval.json, the labelled video, W&B).
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
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
    import imageio.v3 as iio

    frames = iio.imread(tmp_path / "v.mp4")  # one labelled frame per env step of both episodes
    assert frames.shape[0] == sum(e["length"] for e in result["per_episode"])
    assert frames[0, 2:12, 2:60].mean() < frames[0, -20:].mean()  # the label's dark box over the scene


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


def test_version_is_the_installed_distributions(capsys):
    import importlib.metadata

    import robot_rl

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"robot-rl {importlib.metadata.version('robot_rl')}"
    assert robot_rl.__version__ == importlib.metadata.version("robot_rl")


def test_format_config_is_compact_yaml_of_the_resolved_config():
    import yaml

    from robot_rl.trainer import format_config

    cfg = load_config(DEFAULT_CONFIG, ["ppo.n_steps=192", "run.keep_checkpoints=3"])
    text = format_config(cfg)
    assert yaml.safe_load(text) == cfg.model_dump(mode="json")
    starts = [line.split(":")[0] for line in text.splitlines() if not line.startswith(" ")]
    assert starts == list(cfg.model_dump())  # one entry per top-level key, each section one flow mapping
    assert max(len(line) for line in text.splitlines()) <= 130  # PyYAML wraps after the item that passes width


def test_train_prints_config_keeps_step_checkpoints_and_resumes_from_latest(tmp_path, capsys):
    """``robot-rl train`` prints the resolved config once; run.keep_checkpoints keeps the N most recent
    step-numbered checkpoints (model + normalization stats) beside checkpoints/latest, which resume continues.
    """
    args = ["train", "--config", str(DEFAULT_CONFIG), *SMALL, "mode=ppo", "total_steps=384",
            "run.checkpoint_every_steps=128", "run.keep_checkpoints=2", "run.eval_episodes=0",
            f"run.out_dir={tmp_path}", "run.name=k"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("\nrun: {") == 1 and "keep_checkpoints: 2" in out and "total_steps: 384" in out
    assert out.startswith(f"run directory: {tmp_path / 'k'}\n")
    run = RunDir(tmp_path / "k")
    assert list(run.step_checkpoints()) == [256, 384]
    assert run.step_checkpoints()[256].name == "step_000000256.zip"
    assert (run.path / "checkpoints" / "step_000000256_vecnormalize.pkl").exists()
    assert not (run.path / "checkpoints" / "step_000000128_vecnormalize.pkl").exists()
    assert (run.path / "checkpoints" / "step_000000256_vecnormalize.json").exists()  # the stats without a pickle
    assert not (run.path / "checkpoints" / "step_000000128_vecnormalize.json").exists()
    assert GuidedPPO.load(run.step_checkpoints()[256], device="cpu",
                          custom_objects={"guidance": None}).num_timesteps == 256

    assert main(["train", "--resume", str(run.path), "total_steps=512"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"resuming at env step 384: {run.path}\n") and "total_steps: 512" in out
    assert run.checkpoint_state()["num_timesteps"] == 512
    assert list(run.step_checkpoints()) == [384, 512]
    steps = [r["time/total_timesteps"] for r in run.read_metrics()]
    assert steps == [128, 256, 384, 512]


def test_eval_cli_writes_results_stochastic_or_not(tmp_path, capsys):
    """``robot-rl eval`` writes RUN_DIR/eval.json (or --out) with the summary, the seeds, per-episode results and
    whether actions were sampled; --stochastic samples (seeded: a rerun gives the same episodes).
    """
    from robot_rl.trainer import PolicyActor

    cfg = load_config(DEFAULT_CONFIG, [*SMALL, "mode=ppo", "total_steps=128", f"run.out_dir={tmp_path}", "run.name=r",
                                       "run.eval_episodes=0", "env.max_episode_steps=8", "ppo.log_std_init=0.0"])
    run = train(cfg)
    assert main(["eval", str(run.path), "--episodes", "2", "--seed", "7"]) == 0
    assert str(run.path / "eval.json") in capsys.readouterr().out
    det = json.loads((run.path / "eval.json").read_text())
    assert det["stochastic"] is False and det["seeds"] == [7, 8] and det["episodes"] == 2
    assert [e["seed"] for e in det["per_episode"]] == [7, 8]
    assert det["mean_length"] == pytest.approx(sum(e["length"] for e in det["per_episode"]) / 2)
    assert det["success_rate"] == sum(e["success"] for e in det["per_episode"]) / 2

    paths = [tmp_path / "s1.json", tmp_path / "s2.json"]
    for path in paths:
        assert main(["eval", str(run.path), "--episodes", "2", "--seed", "7", "--stochastic", "--out", str(path)]) == 0
    s1, s2 = (json.loads(p.read_text()) for p in paths)
    assert s1["stochastic"] is True and s1["per_episode"] == s2["per_episode"]
    assert json.loads((run.path / "eval.json").read_text()) == det  # --out leaves eval.json alone

    model = GuidedPPO.load(run.checkpoint / "model.zip", device="cpu", custom_objects={"guidance": None})
    obs = np.zeros((1, model.observation_space.shape[0]), dtype=np.float32)
    mean, sampled = PolicyActor(model), PolicyActor(model, deterministic=False)
    np.testing.assert_array_equal(mean.act(obs, None), mean.act(obs, None))
    assert not np.array_equal(sampled.act(obs, None), sampled.act(obs, None))


def _wandb_records(path):
    """The protobuf records of a W&B transaction log (``run-<id>.wandb``): LevelDB's log format (32 KiB blocks of
    chunks with a 7-byte header: CRC, length, type) after W&B's 7-byte header; wandb 0.31 ships no reader of it.
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    pos, chunk = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or LAST of FIRST/MIDDLE/LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def _history_row(record) -> dict:
    """A W&B history record as ``{key: value}`` (a key with ``/`` is stored as its parts, ``nested_key``)."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}


def _records_once_synced(path, step: int, timeout_s: float = 20.0) -> list:
    """The records of a W&B log once its history holds TensorBoard step ``step`` (or when ``timeout_s`` has passed):
    wandb-core tails the event files in its own process and may write the last rows just after ``finish()``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        records = list(_wandb_records(path))
        steps = {_history_row(r).get("global_step") for r in records if r.HasField("history")}
        if step in steps or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def test_wandb_offline_syncs_tensorboard_and_resume_continues_the_run(tmp_path, monkeypatch):
    """run.wandb in offline mode (no network): the W&B run's history holds the TensorBoard scalars SB3 wrote, its
    config is the resolved config, and a resume continues the same W&B run id.
    """
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    cfg = load_config(DEFAULT_CONFIG, [*SMALL, "ppo.n_steps=32", "mode=ppo", "total_steps=128", "run.eval_episodes=0",
                                       "run.wandb=true",
                                       f"run.wandb_dir={tmp_path / 'wb'}", "run.wandb_project=rrl-test",
                                       f"run.out_dir={tmp_path}", "run.name=w"])
    run = train(cfg)
    run_id = (run.path / "wandb_id").read_text().strip()
    logs = list((tmp_path / "wb" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(logs) == 1
    records = _records_once_synced(logs[0], 128)
    rows = [_history_row(r) for r in records if r.HasField("history")]
    # SB3's TensorBoard scalars, at the env step of each rollout's dump (the losses from the second on)
    assert {row["global_step"] for row in rows if "time/steps_per_s" in row} == {64, 128}
    assert any("train/loss" in row for row in rows)
    header = next(r.run for r in records if r.HasField("run"))
    assert header.project == "rrl-test" and header.display_name == "w" and header.run_id == run_id
    config = {i.key: json.loads(i.value_json) for i in header.config.update}
    assert config["total_steps"] == 128 and config["ppo"]["n_steps"] == 32 and config["run"]["wandb"] is True

    from robot_rl.trainer import resume

    resume(run.path, ["total_steps=192"])
    logs = sorted((tmp_path / "wb" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert (run.path / "wandb_id").read_text().strip() == run_id
    assert len(logs) == 2, logs  # offline, each part of the run is its own directory of the same run id
    resumed = _records_once_synced(logs[-1], 192)
    assert {_history_row(r).get("global_step") for r in resumed if r.HasField("history")} == {192}


def test_wandb_missing_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    args = ["train", "--config", str(DEFAULT_CONFIG), *SMALL, "run.wandb=true", f"run.out_dir={tmp_path}",
            "run.name=n"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "run.wandb" in err and "pip install 'robot_rl[wandb]'" in err
    assert not (tmp_path / "n").exists()  # refused before the run directory is made


def _tb_scalars(folder, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a scalar as TensorBoard shows it: every event file of ``folder`` in order, orphaned
    events purged at a ``SessionLog.START`` (``purge_orphaned_data``, TensorBoard's default).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_resume_leaves_no_seams(tmp_path, monkeypatch):
    """A vlajs run dies after the dump of its last row (env step 512) with its latest checkpoint at 256, before it
    closes anything (its logger is flushed, as a kill after TensorBoard's flush leaves it). Its metrics up to the
    kill are an uninterrupted run's. The resumed rows 384 and 512 carry the same keys as those, the losses of the
    checkpoint's update exactly (SB3 logs them with the next row), the iteration count and the wall clock (set to
    1000 s in the checkpoint here) where they stood, and the episode window of the checkpoint; TensorBoard shows
    each step once (issue 16, item 8).
    """
    from robot_rl.trainer import RunCallback, resume

    def killed(self):
        self.logger.close()  # flushes metrics.jsonl and the TensorBoard events of rows 384 and 512
        self.training_env.close()
        raise RuntimeError("killed")

    cfg = load_config(DEFAULT_CONFIG, [*SMALL, "mode=vlajs", "total_steps=512", "run.checkpoint_every_steps=256",
                                       "run.eval_episodes=0", "env.max_episode_steps=30", f"run.out_dir={tmp_path}",
                                       "run.name=s"])
    with monkeypatch.context() as m:
        m.setattr(RunCallback, "_on_training_end", killed)
        with pytest.raises(RuntimeError, match="killed"):
            train(cfg)
    run = RunDir(tmp_path / "s")
    assert run.checkpoint_state()["num_timesteps"] == 256
    ref = {r["time/total_timesteps"]: r for r in run.read_metrics()}
    assert list(ref) == [128, 256, 384, 512]
    tb_ref = dict(_tb_scalars(run.tb, "train/loss"))
    assert list(tb_ref) == [256, 384, 512]

    state_file = run.checkpoint / "train_state.json"
    state = json.loads(state_file.read_text())
    assert state["iterations"] == 2 and 0 < state["time_elapsed_s"] < 1000
    state["time_elapsed_s"] = 1000.0  # a clock the resumed rows must visibly continue from
    state_file.write_text(json.dumps(state))

    resume(run.path)
    rows = run.read_metrics()
    got = {r["time/total_timesteps"]: r for r in rows}
    assert [r["time/total_timesteps"] for r in rows] == [128, 256, 384, 512]  # the redone rows superseded
    for step in (384, 512):
        assert set(got[step]) == set(ref[step]), (step, set(ref[step]) ^ set(got[step]))
        assert got[step]["time/iterations"] == ref[step]["time/iterations"] == step // 128
    first = got[384]
    for key in [k for k in ref[384] if k.startswith("train/")] + ["guidance/aux_loss", "guidance/lambda",
                                                                   "guidance/cos_pos"]:
        assert first[key] == ref[384][key], key  # the checkpoint's update, logged with the next row
    assert 1000 <= first["time/time_elapsed"] < 1200 and first["time/fps"] == 0  # 384 steps over > 1000 s
    # the checkpoint's episode window: until the resumed rollouts' episodes have all ended, its statistics
    assert first["rollout/success_rate"] == got[256]["rollout/success_rate"]
    assert first["rollout/stats_episodes"] == got[256]["rollout/stats_episodes"] > 0
    assert first["rollout/ep_rew_mean"] == got[256]["rollout/ep_rew_mean"]

    shown = _tb_scalars(run.tb, "train/loss")
    assert [s for s, _ in shown] == [256, 384, 512]  # once each: the first part's 384 and 512 purged
    assert dict(shown)[256] == tb_ref[256] and dict(shown)[384] == pytest.approx(first["train/loss"])
    assert len(list(run.tb.glob("events.out.tfevents.*"))) == 2
