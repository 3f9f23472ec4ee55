"""A grasp flag a real Franka setup can compute, checked against ManiSkill's ``is_grasped`` (research only).

    .venv/bin/python benchmarks/grasp_rule.py [--episodes 20] [--random-episodes 8] [--save data.npz]

PickCube and PickPlaceCube observe ManiSkill's ``is_grasped``: both fingers push on the cube with at least
0.5 N within 85 deg of their closing direction (``Panda.is_grasping``, a contact-force test). A real arm has
no such signal; :func:`grasp_flag` computes one from what it does know: the gripper width (the two finger
joint positions from ``JointState``, summed) and the object's position from perception relative to the TCP
pose (robot state). The ROS node computes the observation's ``is_grasped`` with it.

The rule and its thresholds live in :mod:`robot_rl.deploy.grasp` (with the figures this script measured).

"""

from __future__ import annotations

import argparse

import numpy as np

from robot_rl.deploy.grasp import grasp_flag, object_in_tcp_frame

TASKS = ("RRL-PickCube-Sparse-v1", "RRL-PickPlaceCube-Sparse-v1")
#: Observations skipped at the start of each episode: the one ``reset()`` returns, where ManiSkill can still
#: report the previous episode's grasp (measured: only there, never after the first env step).
SKIP_STEPS = 1


def finger_axes_check(task: str = "RRL-PickCube-Sparse-v1") -> np.ndarray:
    """The two finger links' positions in the TCP frame at reset, ``(2, 3)`` m (expected: +-width/2 along y)."""
    from robot_rl.envs import make_env

    env = make_env(task, seed=0)
    try:
        env.reset(seed=0)
        u = env.unwrapped
        tcp = u.agent.tcp.pose
        out = [
            object_in_tcp_frame(tcp.p.numpy(), tcp.q.numpy(), link.pose.p.numpy())[0]
            for link in (u.agent.finger1_link, u.agent.finger2_link)
        ]
    finally:
        env.close()
    return np.stack(out)


#: The policies the rule is checked on: the scripted teacher queried every env step, with its knobs, or
#: ``None`` for uniformly random actions.
POLICIES: dict[str, dict | None] = {
    "scripted": {},
    "noisy30": {"direction_noise_deg": 30.0},
    "noisy60": {"direction_noise_deg": 60.0, "wrong_fraction": 0.2},  # more missed and slipped grasps
    "random": None,
}


def collect(task: str, policy: str, episodes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Roll out ``policy`` (a key of :data:`POLICIES`) and return per observation: ``width, tcp_pos, tcp_quat,
    obj_pos, is_grasped, t`` (``t``: env steps since the reset).
    """
    from robot_rl.envs import make_env, observation_slices, privileged_state
    from robot_rl.teachers import ScriptedTeacher, TeacherRequest

    sl = observation_slices(task)
    knobs = POLICIES[policy]
    teacher = ScriptedTeacher(control_period_steps=1, seed=seed, **(knobs or {}))
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = []
    ts: list[int] = []
    env = make_env(task, seed=seed)
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            rows.append(obs)
            ts.append(0)
            done, t = False, 0
            while not done:
                if knobs is None:
                    action = rng.uniform(-1, 1, 7).astype(np.float32)
                else:
                    req = TeacherRequest(instructions=[""], states=privileged_state(env.unwrapped), task_ids=[task])
                    action = teacher.act(req).actions[0]
                obs, _, terminated, truncated, _ = env.step(np.clip(action, -1, 1))
                t += 1
                rows.append(obs)
                ts.append(t)
                done = terminated or truncated
    finally:
        env.close()
    o = np.stack(rows).astype(np.float64)
    qpos, tcp, obj = o[:, sl["qpos"]], o[:, sl["tcp_pose"]], o[:, sl["obj_pose"]]
    return {
        "width": qpos[:, 7] + qpos[:, 8],
        "tcp_pos": tcp[:, :3],
        "tcp_quat": tcp[:, 3:],
        "obj_pos": obj[:, :3],
        "is_grasped": o[:, sl["is_grasped"]][:, 0] > 0.5,
        "t": np.asarray(ts),
    }


def confusion(rule: np.ndarray, sim: np.ndarray) -> dict[str, int]:
    return {
        "both_1": int(np.sum(rule & sim)),
        "both_0": int(np.sum(~rule & ~sim)),
        "rule_only": int(np.sum(rule & ~sim)),
        "sim_only": int(np.sum(~rule & sim)),
    }


def evaluate(data: dict[str, np.ndarray], object_width_m: float = 0.04, obj_noise_m: float = 0.0, seed: int = 0,
             **thresholds) -> dict[str, int]:
    """Confusion matrix of :func:`grasp_flag` against the simulator's flag, skipping the first
    :data:`SKIP_STEPS` observations of each episode; ``obj_noise_m``: Gaussian noise (per axis, m) added to the
    object position first, as a stand-in for perception error.
    """
    keep = data["t"] >= SKIP_STEPS
    obj = data["obj_pos"][keep]
    if obj_noise_m > 0:
        obj = obj + np.random.default_rng(seed).normal(0.0, obj_noise_m, obj.shape)
    rule = grasp_flag(data["width"][keep], data["tcp_pos"][keep], data["tcp_quat"][keep], obj, object_width_m,
                      **thresholds)
    return confusion(rule, data["is_grasped"][keep])


def _fmt(c: dict[str, int]) -> str:
    n = sum(c.values())
    agree = (c["both_1"] + c["both_0"]) / max(n, 1)
    return (f"n={n:4d} both1={c['both_1']:4d} both0={c['both_0']:4d} rule_only={c['rule_only']:3d} "
            f"sim_only={c['sim_only']:3d} agreement={100 * agree:.1f}%")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=20, help="episodes of each teacher policy per task")
    p.add_argument("--random-episodes", type=int, default=8, help="random-action episodes per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default="", help="write the collected data to this .npz")
    args = p.parse_args(argv)
    print("finger links in the TCP frame at reset (m):", np.round(finger_axes_check(), 4).tolist())
    out: dict = {}
    saved: dict[str, np.ndarray] = {}
    for task in TASKS:
        per = {
            name: collect(task, name, args.random_episodes if knobs is None else args.episodes, args.seed + 1000 * i)
            for i, (name, knobs) in enumerate(POLICIES.items())
        }
        allk = {k: np.concatenate([per[s][k] for s in per]) for k in per["scripted"]}
        for name, d in [*per.items(), ("all", allk)]:
            c = evaluate(d)
            out[(task, name)] = c
            print(f"{task:28s} {name:8s} {_fmt(c)}")
        # what each half of the rule contributes, and robustness to perception error
        far = {"centre_y_tol_m": np.inf, "centre_x_tol_m": np.inf, "centre_z_tol_m": np.inf}
        variants = {
            "width only (no centre test)": evaluate(allk, **far),
            "centre only (any width)": evaluate(allk, width_squeeze_m=np.inf, width_margin_m=-np.inf),
            "object position + 5 mm noise": evaluate(allk, obj_noise_m=0.005),
            "object position + 10 mm noise": evaluate(allk, obj_noise_m=0.010),
        }
        for name, c in variants.items():
            out[(task, name)] = c
            print(f"{task:28s} all, {name:30s} {_fmt(c)}")
        g, t = allk["is_grasped"], allk["t"]
        print(f"{task:28s} sim is_grasped = 1 at the reset observation in {int(g[t == 0].sum())} of "
              f"{int((t == 0).sum())} episodes, after the first step in {int(g[t == 1].sum())}; "
              f"held widths {allk['width'][g & (t >= SKIP_STEPS)].min():.4f} .. "
              f"{allk['width'][g & (t >= SKIP_STEPS)].max():.4f} m")
        for k, v in allk.items():
            saved[f"{task}/{k}"] = v
    if args.save:
        np.savez(args.save, **saved)
    return out


if __name__ == "__main__":
    main()
