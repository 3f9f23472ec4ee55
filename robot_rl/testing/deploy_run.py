"""Run a policy through ROS 2 against the sim bridge with a served teacher: three processes on one DDS domain.

Used by ``tests/deploy/test_ros2_teacher_e2e.py`` and ``benchmarks/deploy_teacher.py``: ``robot-rl teacher serve``
(the scripted backend on a loopback port), ``robot-rl deploy ros2`` (the policy node, recording to an MCAP) and
``robot-rl deploy sim-bridge`` (``episodes`` episodes from ``seed``), each its own process group with its own log.
:func:`teacher_delays` reads the teacher's answers and the status back from the bag.

:class:`NotingTeacher` is the scripted teacher plus scratchpad notes in :mod:`robot_rl.memory`'s line format, written
from the queried view only (the privileged state and the scratchpad the request carries), for the ROS 2 memory
round trip on a task whose planner writes none; ``python -m robot_rl.testing.deploy_run --port P`` serves it
(:func:`serve_noting_teacher`).

:class:`ManualLink` and :func:`sim_config_offline_teacher` are for the node's controller without ROS: a teacher link
that answers only when a test says so, and the sim deploy config with a teacher URL nothing listens on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_rl.teachers.remote import wait_healthy

__all__ = ["ROOT", "SIM_CONFIG", "spawn", "stop", "serve_teacher", "serve_noting_teacher", "wait_healthy",
           "TeacherRun", "run_with_teacher", "teacher_delays", "NotingTeacher", "NOTING_PLAN", "REACHED_M",
           "ManualLink", "sim_config_offline_teacher"]

ROOT = Path(__file__).resolve().parents[2]
SIM_CONFIG = ROOT / "configs" / "deploy" / "sim.yaml"


class ManualLink:
    """A teacher link for :class:`robot_rl.deploy.controller.PolicyController` that takes queries and answers only
    when told to (a dead teacher, by default): ``queries`` holds what was submitted, and the answers a test puts in
    ``answers`` are returned by the next :meth:`poll`.
    """

    def __init__(self):
        self.queries, self.answers = [], []

    def submit(self, query) -> None:
        """Record a query (it is never sent anywhere)."""
        self.queries.append(query)

    def poll(self, now_s: float) -> list:
        """The answers put in ``answers`` since the last poll (``now_s`` is unused)."""
        out, self.answers = self.answers, []
        return out


def sim_config_offline_teacher(*overrides: str):
    """``configs/deploy/sim.yaml`` with a teacher URL on a loopback port nothing listens on, then ``overrides``."""
    from robot_rl.deploy.config import load_deploy_config

    return load_deploy_config(SIM_CONFIG, ["teacher.url=http://127.0.0.1:9", *overrides])


def spawn(args: list[str], domain: int, log: Path, module: str = "robot_rl.cli") -> subprocess.Popen:
    """``python -m MODULE ARGS`` (default the CLI) on ROS domain ``domain``, output to ``log``, in its own process
    group.
    """
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT))


def stop(*procs: subprocess.Popen, sig: int = signal.SIGINT, timeout_s: float = 15.0) -> None:
    """Stop each process group (``sig``, then SIGKILL after ``timeout_s``)."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, sig)
    for p in procs:
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def serve_teacher(port: int, log: Path, *, latency_ms: float = 0.0, period_steps: int = 4) -> subprocess.Popen:
    """``robot-rl teacher serve --backend scripted`` on ``127.0.0.1:port`` (no batching window: one client)."""
    return spawn(["teacher", "serve", "--backend", "scripted", "--port", str(port), "--latency-ms", str(latency_ms),
                  "--batch-wait-ms", "0", "--control-period-steps", str(period_steps)], 0, log)


def serve_noting_teacher(port: int, log: Path, *, latency_ms: float = 0.0, period_steps: int = 4) -> subprocess.Popen:
    """:class:`NotingTeacher` behind the real teacher server (:func:`robot_rl.teachers.server.create_app`) on
    ``127.0.0.1:port``, in its own process (``python -m robot_rl.testing.deploy_run``).
    """
    return spawn(["--port", str(port), "--latency-ms", str(latency_ms), "--control-period-steps", str(period_steps)],
                 0, log, module="robot_rl.testing.deploy_run")


#: The plan the noting teacher writes on an episode's first answer (subtasks of the default vocabulary).
NOTING_PLAN = ("reach", "move", "place")
#: TCP-to-object distance (m) under which the noting teacher notes ``done reach``.
REACHED_M = 0.05


class NotingTeacher:
    """The scripted teacher's answers, plus a scratchpad note per row from what the request shows.

    Row ``i`` (privileged state ``states[i]``, world frame; its scratchpad ``scratchpads[i]``; its observation's
    episode step ``obs_steps[i]``) gets, in :mod:`robot_rl.memory`'s line format with positions in the robot base
    frame (m):

    * while its scratchpad is empty: ``plan: reach, move, place`` and ``seen goal at X Y Z step N``;
    * always: ``seen object at X Y Z step N`` (the newest sighting replaces the slot);
    * once the TCP is within :data:`REACHED_M` of the object and the scratchpad holds no ``done reach``:
      ``done reach step N``.

    Nothing comes from hidden state: the positions are the request's, the history is the scratchpad's.

    Args:
        control_period_steps: ``D`` of the scripted teacher.
    """

    def __init__(self, control_period_steps: int = 4):
        from robot_rl.teachers.base import TeacherSpec
        from robot_rl.teachers.scripted import ScriptedTeacher

        self._scripted = ScriptedTeacher(control_period_steps=control_period_steps)
        s = self._scripted.spec
        self.spec = TeacherSpec(model_id="noting-scripted", control_period_steps=s.control_period_steps,
                                needs_image=False, needs_state=True, state_dim=s.state_dim, writes_notes=True)

    def check_request(self, request) -> None:
        """The scripted teacher's checks (privileged states, a known task)."""
        self._scripted.check_request(request)

    def act(self, request):
        """The scripted answer with :meth:`notes_for` as its notes."""
        from dataclasses import replace

        response = self._scripted.act(request)
        return replace(response, notes=self.notes_for(request), model_id=self.spec.model_id)

    @staticmethod
    def notes_for(request) -> list[str]:
        """The rows' notes (class docstring)."""
        from robot_rl.envs.obs_layout import ROBOT_BASE_POS_WORLD
        from robot_rl.envs.privileged import PRIVILEGED_STATE_LAYOUT as L
        from robot_rl.memory import format_done, format_grounding, format_plan

        base = np.asarray(ROBOT_BASE_POS_WORLD, dtype=np.float64)
        states = np.asarray(request.states, dtype=np.float64)
        notes = []
        for i in range(len(request)):
            step = 0 if request.obs_steps is None else int(request.obs_steps[i])
            pad = "" if request.scratchpads is None else str(request.scratchpads[i])
            tcp, obj, goal = (states[i, L[k]] - base for k in ("tcp_pos", "obj_pos", "goal_pos"))
            lines = [] if pad else [format_plan(NOTING_PLAN), format_grounding("goal", goal, step)]
            lines.append(format_grounding("object", obj, step))
            if np.linalg.norm(tcp - obj) < REACHED_M and "done reach" not in pad:
                lines.append(format_done("reach", step))
            notes.append("\n".join(lines))
        return notes


@dataclass
class TeacherRun:
    """What :func:`run_with_teacher` measured.

    Attributes:
        episodes: the bridge's per-episode results (``{"episode", "seed", "success", "steps"}``).
        bag: the node's recording.
        answers: every teacher answer the node handled (its recorded JSON objects).
        delay_steps: control steps from each delivered answer's query to the step that showed it.
        delay_s: seconds from each delivered answer's observation stamp to that step.
        ages_s: the hint's age (s) at every step that showed one (the status's ``teacher.age_s``).
        logs: the three processes' log files.
    """

    episodes: list[dict]
    bag: Path
    answers: list[dict] = field(default_factory=list)
    delay_steps: list[int] = field(default_factory=list)
    delay_s: list[float] = field(default_factory=list)
    ages_s: list[float] = field(default_factory=list)
    logs: dict = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        """Fraction of the bridge's episodes that succeeded."""
        return float(np.mean([e["success"] for e in self.episodes])) if self.episodes else float("nan")

    def outcomes(self) -> dict[str, int]:
        """Answers by outcome (``delivered``, ``failed``, ``invalid``, ``dropped_reset``, ``unknown``)."""
        out: dict[str, int] = {}
        for a in self.answers:
            out[a["outcome"]] = out.get(a["outcome"], 0) + 1
        return out


def teacher_delays(bag: Path, cfg) -> tuple[list[dict], list[int], list[float], list[float]]:
    """``(answers, delay_steps, delay_s, ages_s)`` from a node's recording (:class:`TeacherRun`'s fields)."""
    from robot_rl.deploy.record import read_bag

    answers, ages = [], []
    for topic, _, msg in read_bag(bag, [cfg.topics.teacher_answers, cfg.topics.status]):
        d = json.loads(msg.data)
        if topic == cfg.topics.teacher_answers:
            answers.append(d)
        elif d.get("teacher") and d["teacher"].get("age_s") is not None:
            ages.append(float(d["teacher"]["age_s"]))
    delivered = [a for a in answers if a["outcome"] == "delivered"]
    steps = [int(a["step_index"]) - int(a["episode_step"]) for a in delivered]
    seconds = [float(a["step_s"]) - float(a["image_stamp_s"] if a["used_image"] else a["state_stamp_s"])
               for a in delivered]
    return answers, steps, seconds, ages


def run_with_teacher(policy: Path, task: str, episodes: int, out_dir: Path, *, domain: int, port: int,
                     seed: int = 0, latency_ms: float = 0.0, period_steps: int = 4, timeout_s: float = 600.0,
                     node_args: tuple[str, ...] = ()) -> TeacherRun:
    """Serve the scripted teacher, start the policy node (recording) and the sim bridge for ``episodes`` episodes
    from ``seed``; stop everything when the bridge is done and read the recording.

    Raises:
        RuntimeError: the server did not come up, or the bridge did not finish within ``timeout_s`` (the logs'
            tails are in the message).
    """
    from robot_rl.deploy.config import load_deploy_config

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    logs = {k: out_dir / f"{k}.log" for k in ("server", "node", "bridge")}
    bag = out_dir / "run.mcap"
    url = f"http://127.0.0.1:{port}"
    server = serve_teacher(port, logs["server"], latency_ms=latency_ms, period_steps=period_steps)
    procs = [server]
    try:
        wait_healthy(url, proc=server)
        node = spawn(["deploy", "ros2", "--policy", str(policy), "--config", str(SIM_CONFIG), "--record", str(bag),
                      f"teacher.url={url}", *node_args], domain, logs["node"])
        procs.append(node)
        bridge = spawn(["deploy", "sim-bridge", "--task", task, "--config", str(SIM_CONFIG), "--seed", str(seed),
                        "--episodes", str(episodes)], domain, logs["bridge"])
        procs.append(bridge)
        try:
            bridge.wait(timeout_s)
        except subprocess.TimeoutExpired:
            tails = {k: v.read_text()[-1500:] for k, v in logs.items() if v.exists()}
            raise RuntimeError(f"the bridge did not finish {episodes} episodes in {timeout_s} s: {tails}") from None
    finally:
        stop(*reversed(procs))
    results = [json.loads(line) for line in logs["bridge"].read_text().splitlines() if line.startswith("{")]
    cfg = load_deploy_config(SIM_CONFIG, [f"teacher.url={url}"])
    answers, steps, seconds, ages = teacher_delays(bag, cfg)
    return TeacherRun(results, bag, answers, steps, seconds, ages, logs)


def _serve_noting_main(argv: list[str] | None = None) -> None:
    """``python -m robot_rl.testing.deploy_run --port P [--latency-ms L] [--control-period-steps D]``."""
    import argparse

    import uvicorn

    from robot_rl.teachers.server import ServerInfo, create_app

    ap = argparse.ArgumentParser(description="serve the NotingTeacher (tests of the ROS 2 scratchpad)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--control-period-steps", type=int, default=4)
    args = ap.parse_args(argv)
    teacher = NotingTeacher(args.control_period_steps)
    app = create_app(ServerInfo("noting", teacher, 16, 0.0), added_latency_ms=args.latency_ms)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    _serve_noting_main()
