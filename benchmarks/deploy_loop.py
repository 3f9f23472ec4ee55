"""Deployment loop benchmark: the policy node and the sim bridge over loopback DDS at 20 Hz.

    .venv/bin/python benchmarks/deploy_loop.py [--seconds 30] [--out bench_out/deploy_loop.json]

Starts ``robot-rl deploy sim-bridge`` and ``robot-rl deploy ros2`` (the test policy in
``tests/data/pushcube_vlajs_policy``, ``configs/deploy/sim.yaml``) as separate processes on their
own ROS domain, listens to the node's status and commands, and prints:

- policy inference with onnxruntime (p50, p99), in this process on observations of the task;
  target p50 < 100 us;
- control period jitter: |interval between consecutive commands - 50 ms|, from the node's own step
  times (``status.t``) and from the arrival times of the commands here; target p99 < 2 ms;
- observation-to-command latency: command arrival here - header stamp of the newest input it was
  computed from (``status.obs_stamp``; the bridge stamps at publication); target p99 < 10 ms.

Both node trigger modes are measured. With ``trigger: input`` the node steps on each new EE pose,
so its commands inherit the bridge's tick jitter (printed too, from its EE pose stamps) but act on
fresh state; with ``trigger: timer`` the node keeps its own period but acts on state up to one
period old.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "tests" / "data" / "pushcube_vlajs_policy"
CONFIG = ROOT / "configs" / "deploy" / "sim.yaml"
DOMAIN_ID = 91


def pct(x, q) -> float:
    return float(np.percentile(np.asarray(x), q)) if len(x) else float("nan")


def inference_us(n: int = 5000) -> dict:
    from robot_rl.deploy.policy import OnnxPolicy
    from robot_rl.envs import make_env

    policy = OnnxPolicy(POLICY)
    env = make_env("RRL-PushCube-Sparse-v1", seed=0)
    obs, _ = env.reset(seed=0)
    samples = []
    for _ in range(200):
        samples.append(obs)
        obs, *_ = env.step(policy(obs))
    env.close()
    times = []
    for i in range(n):
        o = samples[i % len(samples)]
        t0 = time.perf_counter()
        policy(o)
        times.append((time.perf_counter() - t0) * 1e6)
    return {"p50_us": pct(times, 50), "p99_us": pct(times, 99)}


def run_loop(seconds: float, trigger: str) -> dict:
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from robot_rl.deploy.config import load_deploy_config
    from robot_rl.deploy.ros_io import stamp_to_s

    cfg = load_deploy_config(CONFIG)
    env = {**os.environ, "ROS_DOMAIN_ID": str(DOMAIN_ID)}
    logs = tempfile.mkdtemp(prefix="deploy_loop_")
    procs = [subprocess.Popen([sys.executable, "-m", "robot_rl.cli", "deploy", *args], env=env, start_new_session=True,
                              stdout=open(f"{logs}/{name}.log", "wb"), stderr=subprocess.STDOUT)
             for name, args in (("bridge", ["sim-bridge", "--config", str(CONFIG)]),
                                ("node", ["ros2", "--policy", str(POLICY), "--config", str(CONFIG),
                                          f"trigger={trigger}"]))]
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    node = rclpy.create_node("deploy_loop_bench", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    status, arrivals, ee_stamps = [], {}, []
    node.create_subscription(String, cfg.topics.status, lambda m: status.append(json.loads(m.data)), 100)
    node.create_subscription(PoseStamped, cfg.topics.equilibrium_pose,
                             lambda m: arrivals.setdefault(round(stamp_to_s(m.header.stamp), 6), time.time()), 100)
    node.create_subscription(PoseStamped, cfg.topics.ee_pose, lambda m: ee_stamps.append(stamp_to_s(m.header.stamp)),
                             cfg.qos.sensors.profile())
    try:
        deadline = time.monotonic() + 120
        while not any(s["published"] for s in status):  # wait for both processes to come up
            if time.monotonic() > deadline:
                raise RuntimeError(f"no commands within 120 s; logs in {logs}")
            ex.spin_once(timeout_sec=0.05)
        status.clear(), arrivals.clear(), ee_stamps.clear()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.01)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGINT)
        for p in procs:
            p.wait(15)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    period = 1.0 / 20
    pub = [s for s in status if s["published"]]
    node_t = np.array([s["t"] for s in pub])
    arr = np.array([arrivals[round(s["cmd_stamp"], 6)] for s in pub if round(s["cmd_stamp"], 6) in arrivals])
    lat = [arrivals[round(s["cmd_stamp"], 6)] - s["obs_stamp"] for s in pub if round(s["cmd_stamp"], 6) in arrivals]
    # an episode reset publishes a new state mid-period: only intervals of about one period count as jitter
    def jitter(t):
        d = np.diff(np.sort(t))
        d = d[(d > 0.5 * period) & (d < 1.5 * period)]
        return np.abs(d - period) * 1e3

    return {
        "commands": len(pub), "holds": len(status) - len(pub), "seconds": seconds,
        "node_jitter_ms": {"p50": pct(jitter(node_t), 50), "p99": pct(jitter(node_t), 99)},
        "received_jitter_ms": {"p50": pct(jitter(arr), 50), "p99": pct(jitter(arr), 99)},
        "bridge_jitter_ms": {"p50": pct(jitter(np.array(ee_stamps)), 50), "p99": pct(jitter(np.array(ee_stamps)), 99)},
        "obs_to_command_ms": {"p50": pct(np.array(lat) * 1e3, 50), "p99": pct(np.array(lat) * 1e3, 99)},
        "inference_in_node_ms_p50": pct([s["inference_ms"] for s in pub], 50),
        # where the latency goes: input stamp -> node step, node step -> command stamp, stamp -> arrival here
        "obs_to_step_ms": {"p50": pct([(s["t"] - s["obs_stamp"]) * 1e3 for s in pub], 50),
                           "p99": pct([(s["t"] - s["obs_stamp"]) * 1e3 for s in pub], 99)},
        "step_to_publish_ms": {"p50": pct([(s["cmd_stamp"] - s["t"]) * 1e3 for s in pub], 50),
                               "p99": pct([(s["cmd_stamp"] - s["t"]) * 1e3 for s in pub], 99)},
        "dds_delivery_ms": {"p50": pct([(arrivals[round(s["cmd_stamp"], 6)] - s["cmd_stamp"]) * 1e3 for s in pub
                                        if round(s["cmd_stamp"], 6) in arrivals], 50),
                            "p99": pct([(arrivals[round(s["cmd_stamp"], 6)] - s["cmd_stamp"]) * 1e3 for s in pub
                                        if round(s["cmd_stamp"], 6) in arrivals], 99)},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="how long to measure the running loop (default 30)")
    p.add_argument("--out", type=Path, default=Path("bench_out/deploy_loop.json"))
    p.add_argument("--triggers", default="input,timer", help="node trigger modes to measure (default input,timer)")
    args = p.parse_args(argv)
    inf = inference_us()
    print(f"policy inference (onnxruntime, 1 thread): p50 {inf['p50_us']:.1f} us  p99 {inf['p99_us']:.1f} us  "
          f"(target p50 < 100 us: {'met' if inf['p50_us'] < 100 else 'NOT met'})")
    results = {"inference": inf}
    for trigger in args.triggers.split(","):
        loop = results[f"trigger_{trigger}"] = run_loop(args.seconds, trigger)
        j, r, b = loop["node_jitter_ms"], loop["received_jitter_ms"], loop["bridge_jitter_ms"]
        lat = loop["obs_to_command_ms"]
        print(f"-- trigger: {trigger} -- {loop['commands']} commands, {loop['holds']} holds in {args.seconds:g} s")
        print(f"control period jitter, node step times: p50 {j['p50']:.2f} ms  p99 {j['p99']:.2f} ms  "
              f"(target p99 < 2 ms: {'met' if j['p99'] < 2 else 'NOT met'})")
        print(f"control period jitter, commands received: p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms")
        print(f"sim bridge tick jitter (its EE pose stamps): p50 {b['p50']:.2f} ms  p99 {b['p99']:.2f} ms")
        print(f"observation-to-command latency: p50 {lat['p50']:.2f} ms  p99 {lat['p99']:.2f} ms  "
              f"(target p99 < 10 ms: {'met' if lat['p99'] < 10 else 'NOT met'})")
        for key, label in (("obs_to_step_ms", "input stamp -> node step"),
                           ("step_to_publish_ms", "node step -> command"),
                           ("dds_delivery_ms", "command -> received here")):
            print(f"  {label}: p50 {loop[key]['p50']:.2f} ms  p99 {loop[key]['p99']:.2f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
