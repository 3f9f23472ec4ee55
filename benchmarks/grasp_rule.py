"""A grasp flag a real Franka setup can compute, checked against ManiSkill's ``is_grasped`` (research only).

    .venv/bin/python benchmarks/grasp_rule.py [--episodes 20] [--random-episodes 8] [--save data.npz]

PickCube and PickPlaceCube observe ManiSkill's ``is_grasped``: both fingers push on the cube with at least
0.5 N within 85 deg of their closing direction (``Panda.is_grasping``, a contact-force test). A real arm has
no such signal; :func:`grasp_flag` computes one from what it does know: the gripper width (the two finger
joint positions from ``JointState``, summed) and the object's position from perception relative to the TCP
pose (robot state). Nothing here is used by ``deploy/`` yet.

The rule (thresholds: the named constants below; the simulator numbers are from this script's default run):

1. **The gripper is closed on something of the object's width.** The Panda's finger joints read 0 .. 0.04 m
   each, so the width is 0.08 m open and ~0.007 m closed beside the cube. Held, the 0.04 m cube is squeezed to
   0.0365 - 0.0378 m (once 0.0416 m, on the step the fingers let go); on the step the pads first touch it the
   width reads 0.0408 - 0.0414 m while the simulator's flag is still 0 (under 0.5 N), and the next step is
   squeezed. So the band is ``[object_width - WIDTH_SQUEEZE_M, object_width - WIDTH_MARGIN_M]`` =
   0.032 .. 0.039 m for the cube: its top splits held from touching, its bottom leaves 4.5 mm under the
   simulated squeeze for a softer real object or a stronger grasp.
2. **The object is between the pads.** Its centre in the TCP frame, ``R_tcp^T (p_obj - p_tcp)``: the TCP's z
   axis points along the approach (out through the fingertips) and the fingers close along its y axis (the
   finger links sit at TCP y = +-width/2, z = -0.045 m; :func:`finger_axes_check` prints it); the contact pads
   span x +-0.0088 m, z -0.009 .. +0.0095 m around the TCP point. The centre must be within
   ``CENTRE_Y_TOL_M`` (0.02 m, half the edge: the closing midpoint lies inside the object) of the closing
   midpoint and within ``CENTRE_X_TOL_M`` / ``CENTRE_Z_TOL_M`` (0.025 m) of the pads' centre sideways and along
   the approach: the pads touch the cube's faces up to 0.0288 m off, and the closest in-band non-grasps seen
   had the cube 0.0288 and 0.0311 m sideways (fingers closed on its edge, width 0.037 and 0.034 m). Held
   cubes lie at |y| < 0.6 mm, x -0.003 .. +0.010 m, |z| < 0.005 m.

Both must hold. The rule is stateless and uses no force: it calls the first-touch step not held (as the
simulator does) only through the width band, and cannot see a slip that keeps the width.

Measured (``.venv/bin/python benchmarks/grasp_rule.py``: per task 20 episodes each of the scripted teacher
queried every env step, the teacher with 30 deg direction noise, with 60 deg and 20% random directions, and 8
random-action episodes; the reset observation of each episode skipped), rule against the simulator's
``is_grasped`` read from the same observation:

=========================  =====  ======  ======  =========  ========  =========
task                       steps  both 1  both 0  rule only  sim only  agreement
=========================  =====  ======  ======  =========  ========  =========
PickCube                    2217     495    1722          0         0    100.0%
PickPlaceCube               2244     474    1769          0         1    99.96%
=========================  =====  ======  ======  =========  ========  =========

Each half alone: width only 97.1% on both tasks (65 in-band steps with the cube elsewhere: fingers closing or
opening through the band, or closed on its edge), centre only 89.7% / 87.4%. Gaussian perception noise on the
object position (per axis): 5 mm 100% / 99.9%, 10 mm 97.8% / 98.5% (the misses are held steps pushed outside
the centre box). The simulator reported ``is_grasped = 1`` at the reset observation in 47 of 68 PickCube
episodes and 6 of 68 PickPlaceCube ones (each after an episode that ended with the cube held), and never
after the first env step, so only the reset observation is skipped. These are simulator numbers: the band
assumes the simulated squeeze, which a real Franka Hand at its grasp force must be re-measured for.
"""

from __future__ import annotations

import argparse

import numpy as np

#: Narrowest width still counted as closed on the object, below ``object_width`` (m). Held, the simulated
#: 0.04 m cube is squeezed to 0.0365 - 0.0378 m; 8 mm leaves room for a softer real object or grasp force,
#: and is far above the ~0.007 m the fingers reach when they close beside the cube.
WIDTH_SQUEEZE_M = 0.008
#: Widest width still counted as closed on the object, below ``object_width`` (m). Held, the widths read
#: 0.0365 - 0.0378 m; the step the pads first touch the cube reads 0.0408 - 0.0414 m with the simulator's flag
#: still 0 (under 0.5 N), the next one is squeezed; 0.039 m splits the two.
WIDTH_MARGIN_M = 0.001
#: Object centre off the fingers' closing midpoint, along TCP y (m): the midpoint must lie inside the object
#: (half the cube's edge), i.e. the two pads are on opposite sides of its centre. Both pads touching centre a
#: held cube to within 0.6 mm in the simulator, so the rest is room for perception error.
CENTRE_Y_TOL_M = 0.02
#: Object centre off the pads' centre, sideways along TCP x and along the approach axis TCP z (m). The pads
#: (the fingers' contact boxes) span x +-0.0088 m and z -0.009 .. +0.0095 m around the TCP point, so they touch
#: a 0.02 m half-edge cube's faces up to ~0.029 m off; 0.025 m keeps >= 4 mm of pad on the face (held in the
#: simulator: x -0.003 .. +0.010, z -0.005 .. +0.005).
CENTRE_X_TOL_M = 0.025
CENTRE_Z_TOL_M = 0.025

TASKS = ("RRL-PickCube-Sparse-v1", "RRL-PickPlaceCube-Sparse-v1")
#: Observations skipped at the start of each episode: the one ``reset()`` returns, where ManiSkill can still
#: report the previous episode's grasp (measured: only there, never after the first env step).
SKIP_STEPS = 1


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """``(..., 4)`` unit quaternions (w, x, y, z) to ``(..., 3, 3)`` rotation matrices (columns: the frame's axes)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def object_in_tcp_frame(tcp_pos: np.ndarray, tcp_quat_wxyz: np.ndarray, obj_pos: np.ndarray) -> np.ndarray:
    """``(N, 3)``: the object's centre in the TCP frame, ``R_tcp^T (p_obj - p_tcp)`` (any common frame in)."""
    rot = quat_wxyz_to_matrix(np.atleast_2d(tcp_quat_wxyz))
    d = np.atleast_2d(obj_pos) - np.atleast_2d(tcp_pos)
    return np.einsum("nji,nj->ni", rot, d)


def grasp_flag(
    width_m,
    tcp_pos,
    tcp_quat_wxyz,
    obj_pos,
    object_width_m=0.04,
    *,
    width_squeeze_m: float = WIDTH_SQUEEZE_M,
    width_margin_m: float = WIDTH_MARGIN_M,
    centre_y_tol_m: float = CENTRE_Y_TOL_M,
    centre_x_tol_m: float = CENTRE_X_TOL_M,
    centre_z_tol_m: float = CENTRE_Z_TOL_M,
) -> np.ndarray:
    """Whether the gripper holds the object, from gripper width and object/TCP poses (pure numpy).

    Args:
        width_m: ``(N,)`` gripper width, m: the sum of the two finger joint positions (0 closed .. 0.08 open).
        tcp_pos: ``(N, 3)`` TCP position, m.
        tcp_quat_wxyz: ``(N, 4)`` TCP orientation, quaternion (w, x, y, z), either sign.
        obj_pos: ``(N, 3)`` object centre, m, in the same frame as ``tcp_pos`` (robot base or world).
        object_width_m: scalar or ``(N,)``: the object's width across the fingers, m (cube edge 0.04).
        width_squeeze_m, width_margin_m, centre_*: the thresholds (module constants by default).

    Returns:
        ``(N,)`` bool.
    """
    width = np.atleast_1d(np.asarray(width_m, dtype=np.float64))
    ow = np.asarray(object_width_m, dtype=np.float64)
    closed_on_it = (width >= ow - width_squeeze_m) & (width <= ow - width_margin_m)
    c = object_in_tcp_frame(tcp_pos, tcp_quat_wxyz, obj_pos)
    between = (np.abs(c[:, 1]) <= centre_y_tol_m) & (np.abs(c[:, 0]) <= centre_x_tol_m) & (np.abs(c[:, 2]) <= centre_z_tol_m)
    return closed_on_it & between


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
    obj_pos, is_grasped, t`` (``t``: env steps since the reset)."""
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
    object position first, as a stand-in for perception error."""
    keep = data["t"] >= SKIP_STEPS
    obj = data["obj_pos"][keep]
    if obj_noise_m > 0:
        obj = obj + np.random.default_rng(seed).normal(0.0, obj_noise_m, obj.shape)
    rule = grasp_flag(data["width"][keep], data["tcp_pos"][keep], data["tcp_quat"][keep], obj, object_width_m, **thresholds)
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
              f"held widths {allk['width'][g & (t >= SKIP_STEPS)].min():.4f} .. {allk['width'][g & (t >= SKIP_STEPS)].max():.4f} m")
        for k, v in allk.items():
            saved[f"{task}/{k}"] = v
    if args.save:
        np.savez(args.save, **saved)
    return out


if __name__ == "__main__":
    main()
