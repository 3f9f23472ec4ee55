"""Run-directory helpers: curve summary by hand, atomic checkpoint recovery, metrics truncation."""

import json

import numpy as np
import pytest

from robot_rl.runs import RunDir, curve_summary


def test_curve_summary_by_hand():
    steps = np.array([100.0, 200.0, 300.0])
    success = np.array([0.2, 0.6, 1.0])
    s = curve_summary(steps, success, budget=400)
    # trapezoids: (0,0)-(100,.2): 10; (100,.2)-(200,.6): 40; (200,.6)-(300,1): 80; (300,1)-(400,1): 100 -> 230 / 400
    assert s["auc"] == pytest.approx(230 / 400)
    assert s["final_success"] == 1.0 and s["steps_to_50"] == 200 and s["steps_to_90"] == 300
    assert curve_summary(steps, np.zeros(3), budget=400)["steps_to_50"] is None
    assert curve_summary(np.array([]), np.array([]), budget=400)["auc"] == 0.0


def test_truncate_metrics_and_skip_torn_line(tmp_path):
    run = RunDir(tmp_path)
    rows = [{"time/total_timesteps": s} for s in (100, 200, 300)]
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"time/total_ti')  # torn by a kill
    assert len(run.read_metrics()) == 3
    run.truncate_metrics(200)
    assert [r["time/total_timesteps"] for r in run.read_metrics()] == [100, 200]


def test_recover_checkpoint_after_kill_between_renames(tmp_path):
    run = RunDir(tmp_path)
    old = run.checkpoint.with_name("latest.old")
    old.mkdir(parents=True)
    (old / "model.zip").write_text("x")
    assert not run.has_checkpoint()
    run.recover_checkpoint()
    assert run.has_checkpoint()
