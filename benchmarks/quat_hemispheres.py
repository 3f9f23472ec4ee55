"""Which hemisphere ManiSkill reports each observed quaternion in (q and -q are the same rotation).

    .venv/bin/python benchmarks/quat_hemispheres.py [--episodes 6] [--tasks PickPlaceCube-v2,...]

ManiSkill does not canonicalize quaternion signs, so a deployment has to hand the policy the sign the
simulator would have reported (``deploy/ros_io.py`` ``QUAT_HEMISPHERE``). For every pose field of each
task's ``state`` observation (:mod:`robot_rl.envs.obs_layout`) this runs ``--episodes`` episodes with
uniformly random actions and ``--episodes`` with the scripted teacher queried at every env step
(``ScriptedTeacher(control_period_steps=1)``), reads the field's quaternion from the real observation
after every env step, and prints per component (w, x, y, z) the fraction of steps with the component
``>= 0`` and ``> 0``, the component that is most often non-negative, and the fraction of steps where
that component is within 0.05 of 0 and its smallest magnitude (how far the observed rotations stay from the
hemisphere's boundary, where canonicalizing by that component would flip the sign between nearby rotations).
Episode ``i`` of each kind resets with seed ``i``.
"""

from __future__ import annotations

import argparse

import numpy as np

from robot_rl.envs import make_env, observation_slices, privileged_state
from robot_rl.envs.tasks import get_task

DEFAULT_TASKS = ("PickPlaceCube-v2", "LiftPegUpright-v2", "PegInsertionSide-v2", "PokeCube-v2")
COMPONENTS = ("w", "x", "y", "z")
NEAR_ZERO = 0.05


def pose_fields(task_id: str) -> list[str]:
    """Names of the 7-float pose fields (position + wxyz quaternion) of ``task_id``'s observation."""
    from robot_rl.envs import observation_layout

    return [f.name for f in observation_layout(task_id) if f.size == 7 and f.components[3:] == ("qw", "qx", "qy", "qz")]


def collect(task_id: str, episodes: int, policy: str) -> dict[str, np.ndarray]:
    """``{pose field: (steps, 4) quaternions}`` observed after every env step of ``episodes`` episodes."""
    from robot_rl.teachers import ScriptedTeacher, TeacherRequest

    env_id = get_task(task_id).env_id
    slices = observation_slices(env_id)
    fields = pose_fields(env_id)
    teacher = ScriptedTeacher(control_period_steps=1, seed=0)
    rng = np.random.default_rng(0)
    out: dict[str, list[np.ndarray]] = {f: [] for f in fields}
    env = make_env(env_id, seed=0)
    try:
        for ep in range(episodes):
            env.reset(seed=ep)
            done = False
            while not done:
                if policy == "random":
                    action = rng.uniform(-1, 1, 7).astype(np.float32)
                else:
                    state = privileged_state(env.unwrapped)
                    req = TeacherRequest(instructions=[""], states=state, task_ids=[env_id])
                    action = teacher.act(req).actions[0]
                obs, _, terminated, truncated, _ = env.step(np.clip(action, -1, 1))
                for f in fields:
                    out[f].append(np.asarray(obs[slices[f]][3:7], dtype=np.float64))
                done = bool(terminated or truncated)
    finally:
        env.close()
    return {f: np.stack(v) for f, v in out.items()}


def summarize(quats: np.ndarray) -> dict:
    ge = (quats >= 0).mean(axis=0)
    gt = (quats > 0).mean(axis=0)
    best = int(np.argmax(ge))
    return {
        "steps": len(quats),
        "ge0": ge,
        "gt0": gt,
        "best": COMPONENTS[best],
        "best_ge0": float(ge[best]),
        "best_near0": float((np.abs(quats[:, best]) < NEAR_ZERO).mean()),
        "best_min_abs": float(np.abs(quats[:, best]).min()),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=6, help="episodes per policy kind and task")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    args = p.parse_args(argv)
    results: dict = {}
    for task in args.tasks.split(","):
        per_policy = {kind: collect(task, args.episodes, kind) for kind in ("random", "scripted")}
        for field in per_policy["random"]:
            both = np.concatenate([per_policy[k][field] for k in per_policy])
            for kind, q in [*((k, per_policy[k][field]) for k in per_policy), ("both", both)]:
                s = summarize(q)
                results[(task, field, kind)] = s
                comps = " ".join(f"{c}>=0 {100 * s['ge0'][i]:5.1f}% (>0 {100 * s['gt0'][i]:5.1f}%)"
                                 for i, c in enumerate(COMPONENTS))
                print(f"{task:20s} {field:14s} {kind:8s} n={s['steps']:4d}  {comps}  -> {s['best']} >= 0 on "
                      f"{100 * s['best_ge0']:.1f}%, |{s['best']}| < {NEAR_ZERO} on {100 * s['best_near0']:.1f}%, "
                      f"min |{s['best']}| {s['best_min_abs']:.3f}")
    return results


if __name__ == "__main__":
    main()
