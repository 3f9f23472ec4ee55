"""Run a teacher as the policy (no learning) to measure how competent it is.

Used by the teacher tests and benchmarks: a teacher that cannot solve a task itself gives PPO
little to learn from. One in-process env (``physx_cpu``). Two ways of querying it:

* ``hold=False``: the teacher is asked on every env step and only the first ``1/D`` of its period
  delta is executed (a 20 Hz teacher);
* ``hold=True`` ("as used"): the teacher is asked once per control period of ``D`` env steps and its
  answer is replayed open loop for those ``D`` steps, spread into per-step targets by the trainer's
  own :func:`robot_rl.guidance.targets.interpolate_targets` and :class:`~robot_rl.guidance.targets.TargetTracker`.
  This is exactly what the policy learns from in ``vlajs`` mode (issue 10).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_rl.geometry import ACTION_DIM, GRIPPER_INDEX
from robot_rl.teachers.base import Teacher, TeacherRequest


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
    hold: bool = False,
) -> dict:
    """Roll out ``teacher`` as the policy for ``episodes`` episodes of ``task``.

    The teacher is asked (``TeacherRequest`` with the privileged state, no image unless
    ``teacher.spec.needs_image``) on every env step, or with ``hold=True`` once every
    ``teacher.spec.control_period_steps`` (``D``) env steps. Its period delta is spread over ``D`` per-step
    targets by :func:`~robot_rl.guidance.targets.interpolate_targets` (the trainer's code: position
    and rotation ``/ D``, the gripper held), and the target of the current step is the action. An
    invalid answer (NaN, wrong shape, out of range) gives zero motion with the gripper open for its
    period, and is counted in ``invalid_answers``. Episode ``i`` resets with
    seed ``seed + i``. An episode ends on success (ManiSkill terminates on ``info["success"]``) or
    at the task's horizon (50 env steps for PushCube/PickCube unless ``max_episode_steps``).

    Args:
        teacher: any :class:`~robot_rl.teachers.base.Teacher`.
        task: env id known to :func:`robot_rl.envs.make_env`, e.g. ``"RRL-PushCube-Sparse-v1"``.
        episodes: number of episodes (>= 1).
        seed: seed of the first episode's reset.
        instruction: language instruction sent with each query.
        max_episode_steps: horizon override in env steps.
        hold: False queries every env step; True queries once per ``D`` env steps and replays the
            answer open loop (the teacher as ``vlajs`` training uses it).

    Returns:
        ``{"success_rate": float in [0, 1] (fraction of episodes with success at any step),
        "mean_return": float (mean undiscounted episode return),
        "episode_lengths": list[int] (env steps), "successes": list[bool],
        "mean_teacher_latency_s": float, "queries": int, "invalid_answers": int}``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    from robot_rl.guidance.targets import TargetTracker, interpolate_targets, validate_teacher_actions

    env, state_fn = _make_env(task, seed, max_episode_steps)
    period = int(teacher.spec.control_period_steps)
    # Queried every step, only the first per-step target of each answer is used.
    tracker = TargetTracker(1, period if hold else 1)
    idle = np.zeros(ACTION_DIM, dtype=np.float32)
    idle[GRIPPER_INDEX] = 1.0  # no usable answer: stand still, gripper open
    successes: list[bool] = []
    returns: list[float] = []
    lengths: list[int] = []
    latencies: list[float] = []
    queries = invalid = 0
    try:
        for ep in range(episodes):
            env.reset(seed=seed + ep)
            done, success, ret, length = False, False, 0.0, 0
            tracker.advance(np.ones(1, dtype=bool))  # a new episode: nothing queued
            while not done:
                if not tracker.active[0]:
                    state = np.asarray(state_fn(env.unwrapped), dtype=np.float32).reshape(1, -1)
                    images = None
                    if teacher.spec.needs_image:
                        frame = np.asarray(env.render())
                        images = frame.reshape(1, *frame.shape[-3:]).astype(np.uint8)
                    resp = teacher.act(
                        TeacherRequest(instructions=[instruction], images=images, states=state, task_ids=[task])
                    )
                    latencies.append(float(np.mean(resp.latency_s)))
                    queries += 1
                    valid = validate_teacher_actions(resp.actions, 1, period)
                    invalid += int(not valid[0])
                    actions = np.nan_to_num(np.asarray(resp.actions, dtype=np.float32)) if valid[0] else np.zeros((1, ACTION_DIM), np.float32)
                    targets, mask = interpolate_targets(actions, period, valid)
                    tracker.set(np.zeros(1, dtype=np.int64), targets[:, : tracker.period_steps], mask[:, : tracker.period_steps])
                target, ok = tracker.current()
                a = target[0] if ok[0] else idle
                _, reward, terminated, truncated, info = env.step(np.clip(a, -1.0, 1.0))
                ret += float(np.asarray(reward).reshape(-1)[0])
                length += 1
                success = success or bool(np.asarray(info.get("success", False)).reshape(-1)[0])
                done = bool(np.asarray(terminated).any() or np.asarray(truncated).any())
                tracker.advance(np.array([done]))
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
        "queries": queries,
        "invalid_answers": invalid,
    }


__all__ = ["run_teacher_as_policy"]


def main(argv: list[str] | None = None) -> dict:
    """CLI: ``python -m robot_rl.teachers.evaluate --task PickCube-v2 --episodes 20 [--hold]``.

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
    p.add_argument("--hold", action="store_true", help="query once per control period and replay the answer (as used)")
    args = p.parse_args(argv)
    kwargs: dict[str, Any] = {}
    for item in args.arg:
        key, _, value = item.partition("=")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    from robot_rl.envs import get_task

    spec = get_task(args.task)  # a paper name works too; a VLA needs the task's instruction
    teacher = make_teacher(args.kind, **kwargs)
    t0 = time.perf_counter()
    result = run_teacher_as_policy(teacher, spec.env_id, args.episodes, args.seed, instruction=spec.instruction,
                                   hold=args.hold)
    result.update(task=args.task, episodes=args.episodes, seed=args.seed, kind=args.kind, teacher_args=kwargs, hold=args.hold,
                  wall_s=round(time.perf_counter() - t0, 2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
