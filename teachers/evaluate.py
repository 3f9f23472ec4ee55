"""Run a teacher as the policy (no learning) to measure how competent it is.

Used by the teacher tests and benchmarks: a teacher that cannot solve a task itself gives PPO
little to learn from. One in-process env (``physx_cpu``), the teacher queried on every step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_rl.teachers.base import GRIPPER_INDEX, POS_SLICE, ROT_SLICE, Teacher, TeacherRequest


def _make_env(task: str, seed: int, max_episode_steps: int | None):
    """``(env, state_fn)``: a single CPU gymnasium env for ``task`` and ``state_fn(unwrapped) -> (1, 38)``."""
    from robot_rl.envs import make_env, privileged_state

    kwargs: dict[str, Any] = {}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    env = make_env(task, seed=seed, **kwargs)
    return env, privileged_state


def run_teacher_as_policy(
    teacher: Teacher,
    task: str,
    episodes: int,
    seed: int = 0,
    *,
    instruction: str = "",
    max_episode_steps: int | None = None,
) -> dict:
    """Roll out ``teacher`` as the policy for ``episodes`` episodes of ``task``.

    Every env step the teacher is asked once (``TeacherRequest`` with the privileged state, no
    image unless ``teacher.needs_image``); its period delta is divided by
    ``teacher.control_period_steps`` (``D``) for the per-step position/rotation command, exactly as
    the trainer does for its targets; the gripper command is used as is. Episode ``i`` resets with
    seed ``seed + i``. An episode ends on success (ManiSkill terminates on ``info["success"]``) or
    at the task's horizon (50 env steps for PushCube/PickCube unless ``max_episode_steps``).

    Args:
        teacher: any :class:`~robot_rl.teachers.base.Teacher`.
        task: env id known to :func:`robot_rl.envs.make_env`, e.g. ``"RRL-PushCube-Sparse-v1"``.
        episodes: number of episodes (>= 1).
        seed: seed of the first episode's reset.
        instruction: language instruction sent with each query.
        max_episode_steps: horizon override in env steps.

    Returns:
        ``{"success_rate": float in [0, 1] (fraction of episodes with success at any step),
        "mean_return": float (mean undiscounted episode return),
        "episode_lengths": list[int] (env steps), "successes": list[bool],
        "mean_teacher_latency_s": float}``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env, state_fn = _make_env(task, seed, max_episode_steps)
    d = float(teacher.control_period_steps)
    successes: list[bool] = []
    returns: list[float] = []
    lengths: list[int] = []
    latencies: list[float] = []
    try:
        for ep in range(episodes):
            env.reset(seed=seed + ep)
            done, success, ret, length = False, False, 0.0, 0
            while not done:
                state = np.asarray(state_fn(env.unwrapped), dtype=np.float32).reshape(1, -1)
                images = None
                if getattr(teacher, "needs_image", False):
                    frame = np.asarray(env.render())
                    images = frame.reshape(1, *frame.shape[-3:]).astype(np.uint8)
                resp = teacher.act(
                    TeacherRequest(instructions=[instruction], images=images, states=state, task_ids=[task])
                )
                latencies.append(float(resp.latency_s))
                a = np.asarray(resp.actions, dtype=np.float32)[0].copy()
                a[POS_SLICE] /= d
                a[ROT_SLICE] /= d
                a[GRIPPER_INDEX] = np.clip(a[GRIPPER_INDEX], -1.0, 1.0)
                _, reward, terminated, truncated, info = env.step(np.clip(a, -1.0, 1.0))
                ret += float(np.asarray(reward).reshape(-1)[0])
                length += 1
                success = success or bool(np.asarray(info.get("success", False)).reshape(-1)[0])
                done = bool(np.asarray(terminated).any() or np.asarray(truncated).any())
            successes.append(success)
            returns.append(ret)
            lengths.append(length)
    finally:
        env.close()
    return {
        "success_rate": float(np.mean(successes)),
        "mean_return": float(np.mean(returns)),
        "episode_lengths": lengths,
        "successes": successes,
        "mean_teacher_latency_s": float(np.mean(latencies)) if latencies else 0.0,
    }


__all__ = ["run_teacher_as_policy"]


def main(argv: list[str] | None = None) -> dict:
    """CLI: ``python -m robot_rl.teachers.evaluate --task RRL-PickCube-Sparse-v1 --episodes 20``.

    Builds the teacher with :func:`robot_rl.teachers.make_teacher` (``--kind``, default
    ``scripted``; ``--arg key=value`` passes constructor arguments, values parsed as JSON when
    possible) and prints the result of :func:`run_teacher_as_policy` as JSON.
    """
    import argparse
    import json
    import time

    from robot_rl.teachers import make_teacher

    p = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    p.add_argument("--task", default="RRL-PushCube-Sparse-v1")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", default="scripted")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    kwargs: dict[str, Any] = {}
    for item in args.arg:
        key, _, value = item.partition("=")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    teacher = make_teacher(args.kind, **kwargs)
    t0 = time.perf_counter()
    result = run_teacher_as_policy(teacher, args.task, args.episodes, args.seed)
    result.update(task=args.task, episodes=args.episodes, seed=args.seed, kind=args.kind, teacher_args=kwargs,
                  wall_s=round(time.perf_counter() - t0, 2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
