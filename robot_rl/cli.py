r"""``robot-rl``: train, resume, evaluate and inspect guided PPO runs.

Examples::

    robot-rl train                                    # PushCube sparse, vlajs, scripted teacher
    robot-rl train --config configs/train/pushcube_sparse_vlajs.yaml --mode ppo --seed 1
    robot-rl train --config configs/train/pushcube_sparse_vlajs.yaml ppo.n_steps=128 teacher.direction_noise_deg=30
    robot-rl train --resume runs/RRL-PushCube-Sparse-v1-vlajs-s0-20261121-060000
    robot-rl eval runs/<run> --episodes 50 --video    # writes runs/<run>/eval.json (--out PATH) and eval.mp4
    robot-rl eval runs/<run> --stochastic --out runs/<run>/eval_stochastic.json
    robot-rl tasks
    robot-rl config                                   # training config keys (robot-rl config teacher: serving keys)
    robot-rl bench --tasks PushCube-v2 --modes ppo,rpd,vlajs --seeds 2 --steps 100000
    robot-rl bench configs/bench/cpu_pushcube.yaml        # a CPU-budget grid; resumes a partly done one
    robot-rl bench --tasks PushCube-v2 --modes vlajs --teacher-noise direction_noise_deg=15,30,60
    robot-rl teacher serve --config configs/teacher/scripted.yaml --port 8001
    robot-rl teacher serve --config configs/teacher/openvla.yaml \
        backend.model=/ckpt/openvla-7b backend.unnorm_key=bridge_orig
    robot-rl teacher serve --backend scripted --port 8000           # no file: the built-in defaults
    robot-rl export runs/<run>                        # policy.onnx + policy.json in runs/<run>/export
    robot-rl deploy sim-bridge --task RRL-PushCube-Sparse-v1 --config configs/deploy/sim.yaml
    robot-rl deploy ros2 --policy runs/<run>/export --config configs/deploy/fr3.yaml [--record run.mcap]
    robot-rl deploy replay run.mcap --policy runs/<run>/export --config configs/deploy/fr3.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from robot_rl import __version__
from robot_rl.config import ConfigError, describe
from robot_rl.teachers.wire import API_KEY_ENV

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "train" / "pushcube_sparse_vlajs.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robot-rl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                   help="print the installed robot_rl version and exit")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a policy (or resume a run)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train PPO in ManiSkill3 with teacher guidance. Config keys and their units: "
                                   "`robot-rl config`. The run directory and the resolved config (compact YAML; "
                                   "RUN_DIR/config.yaml holds it too) are printed first. Checkpoints: "
                                   "RUN_DIR/checkpoints/latest (what --resume reads) every "
                                   "run.checkpoint_every_steps env steps, plus the run.keep_checkpoints most recent "
                                   "as checkpoints/step_<env steps>.zip (+ _vecnormalize.pkl and .json). "
                                   "run.wandb=true also logs to Weights & Biases, syncing TensorBoard "
                                   "(pip install 'robot_rl[wandb]').")
    t.add_argument("--config", type=Path, default=None,
                   help=f"YAML config (default: {DEFAULT_CONFIG.relative_to(DEFAULT_CONFIG.parents[2])} when it "
                        "exists, else built-in defaults)")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    t.add_argument("--mode", choices=("ppo", "rpd", "vlajs"),
                   help="ppo: no teacher; rpd: MSE on every step; vlajs: sparse directional hints")
    t.add_argument("--seed", type=int, help="seed of envs, policy and query scheduler")
    t.add_argument("--total-steps", type=int, help="training budget in env steps")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="any config key, e.g. ppo.n_steps=128 env.num_envs=4")

    e = sub.add_parser("eval", help="evaluate a run's latest checkpoint (writes RUN_DIR/eval.json)",
                       description="Run the run's latest checkpoint (checkpoints/latest) for N episodes in one env, "
                                   "episode k reset with seed SEED + k, and write the results as JSON: the summary "
                                   "(success_rate, mean_return, mean_length, grasp_rate, ...), the seeds, whether "
                                   "actions were sampled (stochastic), and per_episode (seed, success, return, "
                                   "length, ...). The default path RUN_DIR/eval.json replaces the training's final "
                                   "evaluation, which robot-rl bench reads; give --out to keep it.")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--episodes", type=int, default=20, help="episodes to run (default 20)")
    e.add_argument("--out", type=Path, default=None, metavar="PATH.json",
                   help="where to write the results (default RUN_DIR/eval.json)")
    e.add_argument("--stochastic", action="store_true",
                   help="sample actions from the policy's Gaussian, as in training (seeded from --seed); "
                        "default: deterministic, the policy's mean action (SB3's evaluate_policy default)")
    e.add_argument("--video", nargs="?", const=True, default=None, metavar="PATH.mp4",
                   help="write an MP4 of the episodes, each frame labelled with its episode, seed, step, return "
                        "and outcome (default path RUN_DIR/eval.mp4)")
    e.add_argument("--seed", type=int, default=None, help="env seed (default: training seed + 10000)")
    e.add_argument("--delay-steps", type=int, default=None, metavar="K",
                   help="a policy with a teacher observation group: its teacher's answers arrive K env steps "
                        "(K x 0.05 s) late (default: the run's own delay model)")

    th = sub.add_parser("teacher", help="serve a teacher model over HTTP")
    tsub = th.add_subparsers(dest="teacher_command", required=True)
    s = tsub.add_parser(
        "serve", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="serve a teacher backend (OpenVLA-compatible POST /act, plus POST /act/batch, /healthz, /metadata, "
             "and openpi's WebSocket protocol on the same port)",
        description="Serve a teacher on HTTP. POST /act speaks OpenVLA's protocol (json-numpy image + instruction "
                    "-> 7 floats), POST /act/batch answers B rows in the env's pd_ee_delta_pose convention; "
                    "concurrent requests are batched. Point training at it with teacher.kind=remote "
                    "teacher.url=URL.\n\n"
                    "openpi: the same port also speaks openpi's policy-server protocol (a WebSocket on any path, "
                    "msgpack-numpy frames, metadata sent on connect), so openpi-client's "
                    "WebsocketClientPolicy(host, port).infer(obs) works unchanged. Observation keys as openpi's "
                    "LIBERO example: observation/image (H, W, 3) uint8, observation/state (the privileged state, "
                    "for the scripted backend), prompt, plus task_id (scripted, when no --task); the reply's "
                    "actions are (1, 7) in the env convention over D steps, with server_timing and policy_timing. "
                    "Requests of every connection share the batcher with /act; --api-key is also accepted as "
                    "openpi's 'Authorization: Api-Key <key>'; errors are a text frame then close 1011, a frame over "
                    "--openpi-max-frame-mb closes with 1009; plain HTTP on / gets 426.\n\n"
                    "Settings come from --config (configs/teacher/*.yaml; keys: `robot-rl config teacher`), then "
                    "KEY=VALUE overrides, then the flags below (a flag beats the file). Without --config: the "
                    "built-in defaults (scripted backend on 127.0.0.1:8000).")
    s.add_argument("--config", type=Path, default=None, help="teacher serving YAML (configs/teacher/*.yaml)")
    s.add_argument("--backend", choices=("scripted", "openvla"), default=None,
                   help="backend.kind: scripted (privileged-state planner, needs states) or openvla "
                        "(a local checkpoint)")
    s.add_argument("--model", metavar="PATH", help="backend.model: checkpoint directory (openvla)")
    s.add_argument("--unnorm-key", metavar="KEY", help="backend.unnorm_key: default dataset-statistics key (openvla)")
    s.add_argument("--control-period-steps", type=int, metavar="D",
                   help="backend.control_period_steps: env steps one answer spans, reported in /metadata (default 4)")
    s.add_argument("--task", help="backend.task: default task id for requests that carry none (scripted)")
    s.add_argument("--host", help="server.host: bind address (default 127.0.0.1: loopback only)")
    s.add_argument("--port", type=int, help="server.port: TCP port (default 8000, as OpenVLA's server)")
    s.add_argument("--max-batch", type=int, help="server.max_batch: most rows per backend call (default 16)")
    s.add_argument("--batch-wait-ms", type=float,
                   help="server.batch_wait_ms: longest a request waits for a batch to fill, ms (default 5)")
    s.add_argument("--latency-ms", type=float,
                   help="server.latency_ms: hold every answer this long before sending it, ms (a slow VLA for tests "
                        "and benchmarks; default 0)")
    s.add_argument("--max-body-mb", type=float,
                   help="server.max_body_mb: largest request body, MiB (default 64); larger gets 413")
    s.add_argument("--openpi-max-frame-mb", type=float,
                   help="server.openpi_max_frame_mb: largest openpi WebSocket frame, MiB (default 8); a larger one "
                        "closes the connection with code 1009")
    s.add_argument("--ray", action="store_true", default=None,
                   help="ray.enabled: serve with Ray Serve (scale-out over replicas) instead of uvicorn")
    s.add_argument("--replicas", type=int, help="ray.replicas: Ray Serve replicas (with --ray; default 1)")
    s.add_argument("--api-key", default=None,
                   help="require header X-API-Key with this value, or openpi's 'Authorization: Api-Key <key>' on "
                        "the WebSocket. Discouraged (warns): argv is readable by local users; prefer "
                        "$ROBOT_RL_TEACHER_API_KEY or --api-key-file (unset = no key; never a config key)")
    s.add_argument("--api-key-file", default=None,
                   help="read the API key from this file (surrounding whitespace stripped)")
    s.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="any serving config key, e.g. server.port=8001 backend.unnorm_key=bridge_orig")

    x = sub.add_parser("export", help="export a run's policy to ONNX + a JSON sidecar (for robot-rl deploy)",
                       description="Export a run's latest checkpoint: policy.onnx (observation normalization and the "
                                   "deterministic action head baked in) and policy.json (the observation schema, "
                                   "the task, the control period, the teacher group's settings, a checksum). Nothing "
                                   "in RUN_DIR is unpickled: the statistics come from vecnormalize.json and the "
                                   "weights from the SB3 zip's policy.pth (torch.load(weights_only=True)).")
    x.add_argument("run_dir", type=Path, help="a run directory (runs/<name>, or a bench cell)")
    x.add_argument("--out", type=Path, default=None, help="output directory (default RUN_DIR/export)")
    x.add_argument("--trust-pickle", action="store_true",
                   help="a run from before vecnormalize.json: unpickle its vecnormalize.pkl (which can run any code "
                        "in it: only for run directories you trust) and write vecnormalize.json beside it")

    d = sub.add_parser("deploy", help="run a policy on a robot (or the simulator) through ROS 2")
    dsub = d.add_subparsers(dest="deploy_command", required=True)
    r = dsub.add_parser("ros2", help="the policy as a ROS 2 lifecycle node (configure, activate, e-stop)")
    r.add_argument("--policy", type=Path, required=True, metavar="DIR", help="directory of policy.onnx + policy.json")
    r.add_argument("--config", type=Path, default=None,
                   help="deploy YAML (topics, frames, QoS, safety limits, teacher)")
    r.add_argument("--record", type=Path, default=None, metavar="FILE.mcap",
                   help="record every input and output to an MCAP rosbag2")
    r.add_argument("--no-autostart", action="store_true",
                   help="stay unconfigured; drive the lifecycle with `ros2 lifecycle set` or the ~/change_state "
                        "service")
    r.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="any deploy config key, e.g. safety.max_step_translation_m=0.005")
    b = dsub.add_parser("sim-bridge", help="a ManiSkill env behind the same ROS 2 topics as a real Franka")
    b.add_argument("--task", default="RRL-PushCube-Sparse-v1", help="task id (robot-rl tasks)")
    b.add_argument("--config", type=Path, default=None, help="deploy YAML whose topics and frames the bridge uses")
    b.add_argument("--seed", type=int, default=0, help="seed of episode 0; episode k uses seed + k")
    b.add_argument("--episodes", type=int, default=None, help="stop after N episodes (default: run forever)")
    b.add_argument("--camera-rate-hz", type=float, default=0.0,
                   help="publish the teacher camera (sensor_msgs/Image rgb8) on topics.image at this rate (0: off)")
    b.add_argument("--camera-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"),
                   help="camera image size in pixels (default 224 224)")
    rp = dsub.add_parser("replay", help="re-run a policy on a recorded bag's inputs and compare its commands")
    rp.add_argument("bag", type=Path)
    rp.add_argument("--policy", type=Path, required=True, metavar="DIR")
    rp.add_argument("--config", type=Path, default=None, help="the deploy YAML the bag was recorded with")

    bn = sub.add_parser(
        "bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run a task x mode x seed grid (resumable) and write its table, JSON and plots",
        description="Run the VLAJS paper's grid: every task x mode (x variant) x seed is a run directory under "
                    "OUT/<task>/<mode>-s<seed>. Re-running the same command resumes: finished cells are read, "
                    "interrupted ones resume from their checkpoint, failed ones are retried. Writes OUT/results.md "
                    "(success at budget, AUC, env steps to 50%%/90%%, queries, wall time), OUT/results.json and "
                    "OUT/<task>.png. Flags override the spec file's keys.")
    bn.add_argument("spec", nargs="?", type=Path,
                    help="bench spec YAML (configs/bench/*.yaml); flags override its keys")
    bn.add_argument("--tasks", help="comma-separated task ids or paper names (robot-rl tasks)")
    bn.add_argument("--modes", help="comma-separated modes: ppo, rpd, vlajs (default all three)")
    bn.add_argument("--seeds", type=int, help="seeds per cell, 0..N-1 (default 2)")
    bn.add_argument("--steps", type=int, help="env steps per run (default 100000, or the spec's per-task budgets)")
    bn.add_argument("--config", type=Path, help="train config every cell starts from (default: the main job's)")
    bn.add_argument("--sim-backend", choices=("physx_cpu", "physx_cuda"), help="ManiSkill backend (= env.sim_backend)")
    bn.add_argument("--num-envs", type=int, help="parallel envs per run (= env.num_envs)")
    bn.add_argument("--teacher-noise", action="append", metavar="KNOB=V1,V2",
                    help="sweep a scripted-teacher knob one at a time next to the clean teacher: direction_noise_deg, "
                         "bias_rotation_deg or wrong_fraction (repeatable)")
    bn.add_argument("--vary", action="append", metavar="KEY=V1,V2",
                    help="sweep any config key, full product (e.g. guidance.deactivate_threshold=0.9,null; repeatable)")
    bn.add_argument("--eval-delays", metavar="K1,K2",
                    help="also evaluate every finished cell with its teacher's answers K env steps late (0.05 s each)")
    bn.add_argument("--out", type=Path, help="grid directory (default bench_out/bench)")
    bn.add_argument("--report-only", action="store_true",
                    help="rewrite the table, JSON and plots from finished cells; run nothing")
    bn.add_argument("--no-progress", action="store_true", help="no per-run progress bar")
    bn.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every cell")

    sub.add_parser("tasks", help="list the task ids and their names in the VLAJS paper")
    c = sub.add_parser("config", help="list every config key with its default, unit and meaning")
    c.add_argument("which", nargs="?", choices=("train", "teacher"), default="train",
                   help="train: the training config (default); teacher: the teacher serving config "
                        "(configs/teacher/*.yaml)")
    return p


def _train(args) -> int:
    from robot_rl import trainer
    from robot_rl.config import load_config

    overrides = list(args.overrides)
    for key, value in (("mode", args.mode), ("seed", args.seed), ("total_steps", args.total_steps)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.resume is not None:
        if args.config is not None:
            raise ConfigError("--resume takes the run's own config.yaml; drop --config (use KEY=VALUE to change keys)")
        run = trainer.resume(args.resume, overrides, echo_config=True)
    else:
        path = args.config if args.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
        run = trainer.train(load_config(path, overrides), echo_config=True)
    print(f"run directory: {run.path}")
    if (run.path / "eval.json").exists():
        print((run.path / "eval.json").read_text())
    return 0


def _eval(args) -> int:
    from robot_rl.runs import RunDir
    from robot_rl.trainer import evaluate

    video = None
    if args.video is not None:
        video = args.run_dir / "eval.mp4" if args.video is True else Path(args.video)
    result = evaluate(args.run_dir, args.episodes, video=video, seed=args.seed, delay_steps=args.delay_steps,
                      stochastic=args.stochastic)
    out = RunDir(args.run_dir).write_eval(result, args.out)
    print(json.dumps({k: v for k, v in result.items() if k != "per_episode"}, indent=2))
    print(f"results ({args.episodes} episodes, per episode too): {out}")
    if video is not None:
        print(f"video: {video}")
    return 0


#: ``robot-rl teacher serve`` flags and the serving config keys they set (``robot_rl.teachers.config``).
SERVE_FLAGS = {
    "backend": "backend.kind", "model": "backend.model", "unnorm_key": "backend.unnorm_key",
    "control_period_steps": "backend.control_period_steps", "task": "backend.task",
    "host": "server.host", "port": "server.port", "max_batch": "server.max_batch",
    "batch_wait_ms": "server.batch_wait_ms", "max_body_mb": "server.max_body_mb", "latency_ms": "server.latency_ms",
    "openpi_max_frame_mb": "server.openpi_max_frame_mb",
    "ray": "ray.enabled", "replicas": "ray.replicas",
}


def serve_config_of(args):
    """The :class:`~robot_rl.teachers.config.TeacherServeConfig` of ``robot-rl teacher serve`` arguments: the
    ``--config`` file, then the ``KEY=VALUE`` overrides, then the flags (:data:`SERVE_FLAGS`) that were given.
    """
    from robot_rl.teachers.config import load_serve_config

    flags = {key: getattr(args, name) for name, key in SERVE_FLAGS.items() if getattr(args, name) is not None}
    return load_serve_config(args.config, args.overrides, flags)


def _serve_api_key(args) -> str | None:
    """``teacher serve``'s key: ``--api-key-file``, else ``--api-key`` (warned: argv is public), else
    ``$ROBOT_RL_TEACHER_API_KEY``, else none. An empty key is an error (SystemExit).
    """
    import logging

    if args.api_key_file is not None:
        key = Path(args.api_key_file).read_text().strip()
    elif args.api_key is not None:
        logging.getLogger("robot_rl.cli").warning(
            "--api-key puts the key in the process's argv, readable by local users; use $%s or --api-key-file",
            API_KEY_ENV)
        key = args.api_key
    else:
        key = os.environ.get(API_KEY_ENV)
        if key is None:
            return None
    if not key:
        raise SystemExit("teacher serve: the API key is empty")
    return key


def _teacher(args) -> int:
    import logging

    from robot_rl.teachers.server import serve_config

    cfg = serve_config_of(args)
    # server.log_level is the level of the whole process's log, not only uvicorn's: a server at "warning" must not
    # write an INFO line per hostile request (a log nobody drains blocks the event loop once its pipe is full)
    logging.basicConfig(level=cfg.server.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    serve_config(cfg, api_key=_serve_api_key(args), parent_pid=args.parent_pid)
    return 0


def _export(args) -> int:
    from robot_rl.deploy.export import export_policy

    out = export_policy(args.run_dir, args.out, trust_pickle=args.trust_pickle)
    print(f"exported to {out}")
    return 0


def _deploy(args) -> int:
    from robot_rl.deploy.config import load_deploy_config

    if args.deploy_command == "ros2":
        from robot_rl.deploy.ros_node import run_policy_node

        run_policy_node(args.policy, load_deploy_config(args.config, args.overrides), record=args.record,
                        autostart=not args.no_autostart)
    elif args.deploy_command == "sim-bridge":
        from robot_rl.deploy.sim_bridge import run_sim_bridge

        results = run_sim_bridge(args.task, load_deploy_config(args.config), args.seed, args.episodes,
                                 args.camera_rate_hz, tuple(args.camera_size))
        for result in results:
            print(json.dumps(result))
        if results:
            print(f"episodes: {len(results)}, success rate {sum(r['success'] for r in results) / len(results):.2f}")
    else:
        from robot_rl.deploy.record import replay_main

        return replay_main(args.bag, args.policy, args.config)
    return 0


def _bench(args) -> int:
    from robot_rl import bench

    overrides = list(args.overrides)
    if args.spec is not None and "=" in args.spec.name and not args.spec.exists():
        overrides.insert(0, str(args.spec))  # argparse gives the first KEY=VALUE to the optional positional
        args.spec = None
    if args.sim_backend:
        overrides.append(f"env.sim_backend={args.sim_backend}")
    if args.num_envs:
        overrides.append(f"env.num_envs={args.num_envs}")

    def split(v: str | None) -> list[str] | None:
        return [x.strip() for x in v.split(",") if x.strip()] if v else None

    noise = bench.parse_sweep(args.teacher_noise)
    if args.spec is None and args.tasks is None:
        raise ConfigError("give --tasks (robot-rl tasks lists them) or a spec file (configs/bench/*.yaml)")
    spec = bench.load_spec(
        args.spec, tasks=split(args.tasks), modes=split(args.modes), seeds=args.seeds, steps=args.steps,
        config=args.config, out=args.out, overrides=overrides or None,
        teacher_noise=None if noise is None else {k.removeprefix("teacher."): v for k, v in noise.items()},
        vary=bench.parse_sweep(args.vary),
        eval_delays=None if args.eval_delays is None else [int(k) for k in split(args.eval_delays)],
    )
    if args.report_only:
        records = [bench.run_cell(c, spec, train_fn=_not_run, resume_fn=_not_run, evaluate_delays=False)
                   for c in bench.grid_cells(spec) if (spec.out / c.task / c.name / "eval.json").exists()]
        bench.write_report(spec.out)
    else:
        records = bench.run_grid(spec, progress_bar=not args.no_progress)
    print((spec.out / "results.md").read_text())
    print(f"wrote {spec.out / 'results.md'}, {spec.out / 'results.json'} and one PNG per task in {spec.out}")
    failed = [r for r in records if r["status"] != "done"]
    if failed:
        print(f"{len(failed)} cell(s) failed: "
              + "; ".join(f"{r['task']} {r['label']}-s{r['seed']}: {r['error']}" for r in failed),
              file=sys.stderr)
    return 1 if failed else 0


def _not_run(*_args, **_kwargs):
    raise RuntimeError("--report-only runs nothing")


def _tasks() -> int:
    from robot_rl.envs import TASKS

    specs = list(TASKS.values())
    w_id, w_paper, w_up = (1 + max(len(getattr(s, a)) for s in specs) for a in ("env_id", "paper_name", "upstream_id"))
    print(f"{'task id':{w_id}} {'paper name':{w_paper}} {'upstream':{w_up}} horizon  instruction")
    for spec in specs:
        print(f"{spec.env_id:{w_id}} {spec.paper_name:{w_paper}} {spec.upstream_id:{w_up}} {spec.max_episode_steps:7}  "
              f"{spec.instruction}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a ``robot-rl`` command line; ``KEY=VALUE`` overrides may come anywhere after the subcommand (before,
    between or after its options), as in Hydra-style CLIs, and keep their order (a later one of a key wins).

    argparse gives a ``nargs="*"`` positional only one contiguous run of words, and its ``parse_intermixed_args``
    refuses a parser with subparsers (``TypeError: positional arg with nargs=A...``, Python 3.11). So the line is
    parsed with ``parse_known_args`` and the words it leaves over that are ``KEY=VALUE`` (not starting with ``-``)
    are appended to the subcommand's ``overrides``.

    Raises:
        SystemExit: argparse's usage error (status 2): a leftover word that is not ``KEY=VALUE``, or any leftover
            for a subcommand that takes no overrides.
    """
    parser = _parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        if not hasattr(args, "overrides") or any(w.startswith("-") or "=" not in w for w in extras):
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        args.overrides = [*args.overrides, *extras]
    return args


def main(argv: list[str] | None = None) -> int:
    """The ``robot-rl`` entry point: run one subcommand; returns the exit status (2: a config or input error)."""
    args = parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "teacher":
            return _teacher(args)
        if args.command == "export":
            return _export(args)
        if args.command == "deploy":
            return _deploy(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "tasks":
            return _tasks()
        if args.command == "config":
            if args.which == "teacher":
                from robot_rl.teachers.config import describe_serve_config

                print("\n".join(describe_serve_config()))
            else:
                print("\n".join(describe()))
            return 0
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"robot-rl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "train":
            print("\ninterrupted: resume with `robot-rl train --resume RUN_DIR` from the last checkpoint",
                  file=sys.stderr)
        if args.command == "bench":
            print("\ninterrupted: run the same command again to resume the grid", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
