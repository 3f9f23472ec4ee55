"""``robot-rl bench``: grid construction, errors, and a tiny real grid that writes its outputs and resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robot_rl import bench
from robot_rl.bench import BenchSpec, grid_cells, load_spec, parse_sweep, run_grid
from robot_rl.cli import main
from robot_rl.config import ConfigError

SMALL = ["ppo.n_steps=64", "ppo.batch_size=64", "ppo.n_epochs=1", "run.eval_episodes=2", "env.num_envs=2",
         "run.checkpoint_every_steps=128"]


def spec(tmp_path, **kw) -> BenchSpec:
    return load_spec(None, **{"tasks": ["PushCube-v2"], "seeds": 1, "steps": 256, "out": tmp_path,
                              "overrides": SMALL, **kw})


# -- grid construction and bad input (no simulator) ------------------------------------------------


def test_unknown_task_or_mode_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown task 'Nope-v2'.*RRL-PokeCube-Sparse-v1"):
        spec(tmp_path, tasks=["Nope-v2"])
    with pytest.raises(ConfigError, match=r"unknown mode\(s\) \['dagger'\]; valid modes: ppo, rpd, vlajs"):
        spec(tmp_path, modes=["ppo", "dagger"])
    with pytest.raises(ConfigError,
                       match="teacher_noise.*valid: direction_noise_deg, bias_rotation_deg, wrong_fraction"):
        spec(tmp_path, teacher_noise={"noise": [1]})
    with pytest.raises(ConfigError, match=r"unknown key 'budgets' \(allowed: config, tasks, modes"):
        spec(tmp_path, budgets=3)
    assert main(["bench", "--tasks", "PushCube-v2", "--modes", "ppo,nope", "--out", str(tmp_path)]) == 2
    assert main(["bench", "--tasks", "PushCube-v99", "--out", str(tmp_path)]) == 2


def test_cells_labels_and_sweeps(tmp_path):
    s = spec(tmp_path, modes=["ppo", "rpd", "vlajs"], seeds=2, teacher_noise={"direction_noise_deg": [30, 60]},
             vary={"guidance.deactivate_threshold": [0.9, None]})
    cells = grid_cells(s)
    names = [c.name for c in cells]
    # seed-major; noise only for vlajs; guidance.* axes do not multiply ppo
    assert names[:2] == ["ppo-s0", "rpd+guidance.deactivate_threshold=0.9-s0"]
    assert "vlajs+direction_noise_deg=60+guidance.deactivate_threshold=null-s1" in names
    assert not any(n.startswith("rpd+direction") for n in names)
    assert len(cells) == 2 * (1 + 2 + 3 * 2)
    assert len(set(names)) == len(names)
    over = cells[-1].overrides(tmp_path, [])
    assert "teacher.direction_noise_deg=60.0" in over and "guidance.deactivate_threshold=null" in over
    assert f"run.out_dir={tmp_path / 'RRL-PushCube-Sparse-v1'}" in over


def test_per_task_budgets_and_sweep_parsing(tmp_path):
    s = spec(tmp_path, tasks=["PushCube-v2", "RRL-PickCube-Sparse-v1"], steps={"PushCube-v2": 100, "PickCube-v2": 200})
    assert [c.steps for c in grid_cells(s) if c.mode == "ppo"] == [100, 200]
    with pytest.raises(ConfigError, match="no budget for RRL-PickCube-Sparse-v1"):
        spec(tmp_path, tasks=["PickCube-v2"], steps={"PushCube-v2": 100}).steps_for("RRL-PickCube-Sparse-v1")
    assert parse_sweep(["teacher.wrong_fraction=0.25,0.5", "guidance.deactivate_threshold=null,0.9"]) == {
        "teacher.wrong_fraction": [0.25, 0.5], "guidance.deactivate_threshold": [None, 0.9]}
    with pytest.raises(ConfigError, match="KEY=V1,V2"):
        parse_sweep(["teacher.wrong_fraction"])


def test_bad_override_stops_the_grid_before_any_run(tmp_path):
    s = spec(tmp_path, overrides=[*SMALL, "ppo.n_stepz=3"])
    with pytest.raises(ConfigError, match="n_stepz"):
        run_grid(s, train_fn=pytest.fail)


def test_the_shipped_specs_load():
    from pathlib import Path

    root = Path(bench.__file__).resolve().parent.parent
    for path in sorted((root / "configs" / "bench").glob("*.yaml")):
        s = load_spec(path)
        assert grid_cells(s), path


# -- a tiny real grid -------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_grid_writes_table_json_plot_resumes_and_records_a_crash(tmp_path, capsys):
    s = spec(tmp_path, modes=["ppo", "vlajs"])
    from robot_rl import trainer

    calls = []

    def crashing_train(cfg):
        calls.append(cfg.mode)
        if cfg.mode == "ppo":
            raise RuntimeError("simulated crash in ppo")
        return trainer.train(cfg)

    records = run_grid(s, progress_bar=False, train_fn=crashing_train)
    assert calls == ["ppo", "vlajs"]
    assert [r["status"] for r in records] == ["failed", "done"]
    cell = json.loads((tmp_path / "RRL-PushCube-Sparse-v1" / "ppo-s0" / "bench_cell.json").read_text())
    assert cell["status"] == "failed" and "simulated crash in ppo" in cell["error"] and "Traceback" in cell["traceback"]

    # Re-running resumes: the finished vlajs cell is read, not retrained; the failed ppo cell is retried.
    calls.clear()
    records = run_grid(s, progress_bar=False, train_fn=lambda cfg: calls.append(cfg.mode) or trainer.train(cfg))
    assert calls == ["ppo"]
    assert [r["status"] for r in records] == ["done", "done"]

    out = json.loads((tmp_path / "results.json").read_text())
    rows = out["summary"]["RRL-PushCube-Sparse-v1"]
    assert set(rows) == {"ppo", "vlajs"}
    for label, row in rows.items():
        assert 0.0 <= row["success"][0] <= 1.0 and 0.0 <= row["auc"][0] <= 1.0 and row["wall_s"] > 0
        assert len(row["steps_to_50"]) == 1
    assert rows["ppo"]["queries"] == 0 and rows["vlajs"]["queries"] > 0
    table = (tmp_path / "results.md").read_text()
    assert "| vlajs | 1 |" in table and "steps to 90%" in table and "Paper" in table
    png = tmp_path / "RRL-PushCube-Sparse-v1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A finished cell run with another budget is not silently mixed in.
    with pytest.raises(ConfigError, match="total_steps: 256 vs 512"):
        run_grid(spec(tmp_path, modes=["ppo"], steps=512), train_fn=pytest.fail)

    # The CLI reads the finished grid (nothing to run) and prints the table.
    assert main(["bench", "--tasks", "PushCube-v2", "--modes", "ppo,vlajs", "--seeds", "1", "--steps", "256",
                 "--out", str(tmp_path), "--no-progress", *SMALL]) == 0
    assert "| ppo | 1 |" in capsys.readouterr().out


def test_arms_give_one_labelled_cell_each(tmp_path):
    s = spec(tmp_path, modes=["ppo", "vlajs"], arms={"b_hint": {"interface.features": ["hint"]},
                                                      "f_unaware": {"interface.delay.kind": "none"}})
    assert [c.name for c in grid_cells(s)] == ["ppo-s0", "vlajs+b_hint-s0", "vlajs+f_unaware-s0"]
    assert 'interface.features=["hint"]' in grid_cells(s)[1].overrides(tmp_path, [])
    with pytest.raises(ConfigError, match="eval_delays"):
        spec(tmp_path, eval_delays=[-1])


def test_arms_of_any_mode(tmp_path):
    """An arm sets its mode (the memory benchmark's ppo+lstm); a mode without arms keeps its plain cell; an arm of a
    mode that is not run is left out; an unknown mode is refused, naming the arm.
    """
    arms = {"lstm": {"mode": "ppo", "ppo.recurrent": True}, "scratchpad": {"memory.enabled": True}}
    s = spec(tmp_path, modes=["ppo", "rpd", "vlajs"], arms=arms)
    assert [c.name for c in grid_cells(s)] == ["ppo+lstm-s0", "rpd-s0", "vlajs+scratchpad-s0"]
    assert "ppo.recurrent=true" in grid_cells(s)[0].overrides(tmp_path, [])
    assert not any("mode=ppo" in o and "lstm" in o for o in grid_cells(s)[2].overrides(tmp_path, []))
    assert [c.name for c in grid_cells(spec(tmp_path, modes=["vlajs"], arms=arms))] == ["vlajs+scratchpad-s0"]
    with pytest.raises(ConfigError, match="arms.lstm.mode"):
        spec(tmp_path, arms={"lstm": {"mode": "lstm"}})


@pytest.mark.slow
def test_a_tiny_latency_grid_evaluates_at_every_delay_and_reports(tmp_path):
    """Two arms (no interface; hint + dt), evaluations at 0 and 5 env steps of delay, the scripted teacher's own
    success at each delay; the table gets a success-against-latency section and the task a latency plot.
    """
    s = spec(tmp_path, modes=["vlajs"], steps=128, eval_delays=[5, 0], teacher_competence=True,
             overrides=[*SMALL, "run.eval_episodes=1", "interface.delay.kind=uniform", "interface.delay.max_steps=6"],
             arms={"a_none": {"interface.features": []}, "c_hint_dt": {"interface.features": ["hint", "dt"]}})
    run_grid(s, progress_bar=False, log=lambda _: None)
    task_dir = tmp_path / "RRL-PushCube-Sparse-v1"
    for cell in ("vlajs+a_none-s0", "vlajs+c_hint_dt-s0"):
        for k in (0, 5):
            assert json.loads((task_dir / cell / f"eval_delay_{k}.json").read_text())["delay_steps"] == k
    assert json.loads((task_dir / "vlajs+a_none-s0" / "eval_delay_5.json").read_text())["no_teacher_group"]
    competence = json.loads((task_dir / "teacher_competence.json").read_text())
    assert set(competence) == {"0", "5"} and all(0.0 <= v <= 1.0 for v in competence.values())
    table = (tmp_path / "results.md").read_text()
    assert "Success against latency" in table and "| 0 steps (0 s) | 5 steps (0.25 s) |" in table
    assert "| vlajs+c_hint_dt | 1 |" in table and "scripted teacher as the policy" in table
    assert (tmp_path / "RRL-PushCube-Sparse-v1_latency.png").exists()
    summary = json.loads((tmp_path / "results.json").read_text())
    assert set(summary["summary"]["RRL-PushCube-Sparse-v1"]["vlajs+c_hint_dt"]["eval_by_delay"]) == {"0", "5"}


@pytest.mark.slow
def test_a_crashing_evaluation_at_a_delay_is_recorded_and_retried(tmp_path, monkeypatch):
    """An evaluation at a fixed delay that raises fails its cell (recorded with the error) and the grid goes on;
    a re-run retries only the evaluation, without retraining.
    """
    import robot_rl.trainer

    s = spec(tmp_path, modes=["vlajs"], steps=128, eval_delays=[0],
             overrides=[*SMALL, "run.eval_episodes=1", "interface.features=[hint]"])
    real = robot_rl.trainer.evaluate

    def broken(*args, delay_steps=None, **kwargs):  # the training's own final evaluation still works
        if delay_steps is not None:
            raise np.linalg.LinAlgError("SVD did not converge")
        return real(*args, **kwargs)

    monkeypatch.setattr(robot_rl.trainer, "evaluate", broken)
    (rec,) = run_grid(s, progress_bar=False, log=lambda _: None, isolate=False)  # the patch lives in this process
    assert rec["status"] == "failed" and "evaluation at fixed delays: LinAlgError" in rec["error"]
    monkeypatch.setattr(robot_rl.trainer, "evaluate", real)
    (rec,) = run_grid(s, progress_bar=False, log=lambda _: None, train_fn=lambda cfg: pytest.fail("retrained"))
    assert rec["status"] == "done" and set(rec["summary"]["eval_by_delay"]) == {"0"}


def _train_in_child(cfg):
    """A cell's train function for the isolated grid: records its process id, then crashes (ppo) or dies (rpd)."""
    import os
    from pathlib import Path

    Path(cfg.run.out_dir).mkdir(parents=True, exist_ok=True)
    Path(cfg.run.out_dir, f"{cfg.mode}.pid").write_text(str(os.getpid()))
    if cfg.mode == "rpd":
        os._exit(3)  # no record, no traceback: as a segfault or an out-of-memory kill
    raise RuntimeError(f"simulated crash in {cfg.mode}")


def test_isolated_cells_run_in_their_own_process_and_a_dead_one_is_recorded(tmp_path):
    """Issue 17, item 7: each cell in a fresh process (ManiSkill leaks Vulkan over many gym.make in one process,
    haosulab/ManiSkill#1474), and a process that dies is a failed cell, not a dead grid.
    """
    import os

    records = run_grid(spec(tmp_path, modes=["ppo", "rpd"]), progress_bar=False, train_fn=_train_in_child,
                       isolate=True, log=lambda _: None)
    assert [r["status"] for r in records] == ["failed", "failed"]
    assert "simulated crash in ppo" in records[0]["error"] and "Traceback" in records[0]["traceback"]
    assert records[1]["error"] == "the cell's process died without a record (exit code 3)"
    on_disk = json.loads((tmp_path / "RRL-PushCube-Sparse-v1" / "rpd-s0" / "bench_cell.json").read_text())
    assert on_disk["status"] == "failed" and "exit code 3" in on_disk["error"]
    pids = {int(p.read_text()) for p in tmp_path.rglob("*.pid")}
    assert len(pids) == 2 and os.getpid() not in pids
