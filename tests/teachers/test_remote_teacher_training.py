"""Training against a served teacher: real ManiSkill, real HTTP, real server processes.

- the server is killed mid-training and restarted on the same port: training goes on without
  guidance while it is down, and guidance resumes when it is back;
- a ``teacher.kind=spawn`` server is stopped when the trainer gets Ctrl-C.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robot_rl.cli import DEFAULT_CONFIG
from robot_rl.runs import RunDir
from robot_rl.teachers.remote import SpawnedServer, free_port

pytestmark = pytest.mark.slow

SMALL = ["ppo.n_steps=64", "ppo.batch_size=64", "ppo.n_epochs=1", "run.eval_episodes=0", "run.progress_bar=false",
         "env.num_envs=2", "guidance.n_min=4"]


def _train_cmd(tmp_path: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "robot_rl.cli", "train", "--config", str(DEFAULT_CONFIG), *SMALL,
            f"run.out_dir={tmp_path}", "run.name=r", *overrides]


def _wait(predicate, proc, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited ({proc.returncode}) before {what}:\n"
                                 f"{proc.stderr.read().decode()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _last(run: RunDir) -> dict:
    rows = run.read_metrics() if run.metrics.exists() else []
    return rows[-1] if rows else {}


#: The delayed interface with answers delivered when the served teacher's asynchronous query returns.
ASYNC = ("interface.delay.kind=measured", "interface.features=[hint,hint_valid,dt,dp]")


@pytest.mark.parametrize("interface", [(), ASYNC], ids=["blocking", "async_interface"])
def test_server_killed_mid_training_then_restarted(tmp_path, interface):
    """Blocking queries, and asynchronous ones feeding the teacher observation group: while the server is down
    the queries fail (no guidance), training goes on; once it is back on the same port guidance (and, with the
    interface, delivered hints) resume.
    """
    port = free_port()
    server = SpawnedServer("scripted", port=port, control_period_steps=4)
    proc = subprocess.Popen(_train_cmd(tmp_path, "total_steps=100000", "teacher.kind=remote",
                                       f"teacher.url=http://127.0.0.1:{port}", "teacher.timeout_s=1",
                                       "teacher.backoff_s=0.2", *interface),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = RunDir(tmp_path / "r")
    try:
        before = _wait(lambda: (r := _last(run)).get("guidance/guided_steps", 0) > 0 and r, proc, 240, "guided steps")
        assert before["teacher/failures"] == 0
        server.proc.kill()  # the teacher machine dies
        server.proc.wait()
        down = _wait(lambda: (r := _last(run)).get("teacher/failures", 0) > 0
                     and r["time/total_timesteps"] > before["time/total_timesteps"] and r, proc, 120, "failed queries")
        assert down["guidance/invalid_answers"] > 0  # queries without an answer count as no guidance
        server = SpawnedServer("scripted", port=port, control_period_steps=4)  # back on the same port
        restarted = _last(run)
        after = _wait(lambda: (r := _last(run)).get("teacher/reconnects", 0) >= 1
                      and r["guidance/guided_steps"] > restarted["guidance/guided_steps"] and r,
                      proc, 120, "guidance again")
        assert after["time/total_timesteps"] > down["time/total_timesteps"]  # training never stopped
        if interface:
            assert before["interface/delivered"] > 0 and after["interface/delivered"] > down["interface/delivered"]
            assert after["interface/hint_fraction"] > 0
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        server.stop()


def _server_pids_of(parent: int) -> list[int]:
    """Pids of `robot-rl teacher serve` processes spawned by ``parent`` (their --parent-pid)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (b"serve" in argv and b"--parent-pid" in argv
                    and argv[argv.index(b"--parent-pid") + 1] == str(parent).encode()):
                pids.append(int(entry.name))
    return pids


def test_spawned_teacher_is_stopped_on_ctrl_c(tmp_path):
    # SIGINT handled as in a terminal, even when pytest itself runs as a background job (`cmd &` in a
    # non-interactive shell starts with SIGINT ignored, and a child would inherit that).
    proc = subprocess.Popen(_train_cmd(tmp_path, "total_steps=100000", "teacher.kind=spawn"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run = RunDir(tmp_path / "r")
    try:
        _wait(lambda: _last(run).get("guidance/guided_steps", 0) > 0, proc, 240, "guided steps from the spawned server")
        pids = _server_pids_of(proc.pid)
        assert len(pids) == 1, pids
        assert (run.path / "teacher_server.log").exists()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 130
        assert _server_pids_of(proc.pid) == []
        with pytest.raises(ProcessLookupError):
            os.kill(pids[0], 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
