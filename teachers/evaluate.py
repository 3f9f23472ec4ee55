"""Run a teacher as the policy (no learning) to measure how competent it is.

Used by the teacher tests and benchmarks: a teacher that cannot solve a task itself gives PPO
little to learn from. One in-process env (``physx_cpu``), run by the project's one rollout loop
(:func:`robot_rl.rollout.rollout`), the teacher queried through the trainer's own guidance component
(:class:`robot_rl.guidance.Guidance`: validation, interpolation, target queue, delays). Two ways of querying it:

* ``hold=False``: the teacher is asked on every env step and only the first ``1/D`` of its period
  delta is executed (a 20 Hz teacher);
* ``hold=True`` ("as used"): the teacher is asked once per control period of ``D`` env steps and its
  answer is replayed open loop for those ``D`` steps, spread into per-step targets by
  :func:`robot_rl.guidance.targets.interpolate_targets`. This is exactly what the policy learns from in
  ``vlajs`` mode (issue 10).

``delay_steps`` delivers each answer that many env steps after the observation it was asked about (the delayed
interface's ``fixed`` delay model, issue 12): the teacher's competence when its answers are stale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_rl.geometry import ACTION_DIM, GRIPPER_INDEX
from robot_rl.teachers.base import Teacher


class TeacherActor:
    """A teacher as a :class:`robot_rl.rollout.Actor`: the action is guidance's per-step target of the current
    step (:meth:`robot_rl.guidance.Guidance.row`), or standing still with the gripper open when there is none
    (before the first answer, after an invalid one).
    """

    def __init__(self, guidance):
        self.guidance = guidance
        self.idle = np.zeros((1, ACTION_DIM), dtype=np.float32)
        self.idle[0, GRIPPER_INDEX] = 1.0

    def reset(self) -> None:
        """Nothing to reset: guidance resets with the env (its wrapper)."""

    def act(self, obs: np.ndarray, view) -> np.ndarray:
        """The current per-step target ``(1, 7)`` (``obs`` and ``view`` are unused: guidance queried already)."""
        targets, valid = self.guidance.row()
        return np.where(valid[:, None], targets, self.idle)


def teacher_guidance(teacher: Teacher, hold: bool, delay_steps: int = 0, seed: int = 0, memory=None):
    """The guidance component that runs a teacher as the policy of one env: no budget, no annealing; a query
    whenever nothing is in flight and (``hold``) the last answer has played out; answers ``delay_steps`` late;
    ``memory`` (a :class:`~robot_rl.memory.MemorySpec`) keeps the teacher's notes in a scratchpad sent back with
    every query, as training with ``memory.enabled`` does.
    """
    from robot_rl.guidance import Guidance, QueryScheduler
    from robot_rl.guidance.delay import DelayModel

    scheduler = QueryScheduler(n_steps=10**9, num_envs=1, budget_fraction=1.0, anneal=False,
                               deactivate_threshold=None, seed=seed)
    scheduler.begin_rollout(None)
    delay = DelayModel("fixed", steps=int(delay_steps)) if delay_steps else DelayModel("none")
    return Guidance(teacher, scheduler, 1, requery_active=not hold, delay=delay, memory=memory)


def run_teacher_as_policy(
    teacher: Teacher,
    task: str,
    episodes: int,
    seed: int = 0,
    *,
    max_episode_steps: int | None = None,
    hold: bool = False,
    delay_steps: int = 0,
    memory: bool = False,
    sim_backend: str = "physx_cpu",
) -> dict:
    """Roll out ``teacher`` as the policy for ``episodes`` episodes of ``task`` (:func:`robot_rl.rollout.rollout`).

    The teacher is asked (``TeacherRequest`` with the privileged state and the task's instruction, the image
    only if ``teacher.spec.needs_image``) on every env step, or with ``hold=True`` once every
    ``teacher.spec.control_period_steps`` (``D``) env steps; with ``delay_steps`` its answers arrive that many env
    steps late (and a new query waits for the one in flight). An invalid answer (NaN, wrong shape, out of range)
    gives zero motion with the gripper open for its period. Episode ``i`` resets with seed ``seed + i``. An
    episode ends on success (ManiSkill terminates on ``info["success"]``) or at the task's horizon
    (``max_episode_steps`` overrides it).

    Args:
        teacher: any :class:`~robot_rl.teachers.base.Teacher`.
        task: env id or paper name, e.g. ``"RRL-PushCube-Sparse-v1"``.
        episodes: number of episodes (>= 1).
        seed: seed of the first episode's reset.
        max_episode_steps: horizon override in env steps.
        hold: False queries every env step; True queries once per ``D`` env steps and replays the
            answer open loop (the teacher as ``vlajs`` training uses it).
        delay_steps: env steps from a query's observation to its answer (0: at once).
        memory: keep the teacher's notes in a scratchpad (the task's vocabulary, default slots) and send it with
            every query (issue 13); False sends none (a teacher without memory).
        sim_backend: ``"physx_cpu"`` or ``"physx_cuda"`` (one env of the GPU adapter, rendered only if the teacher
            needs images). Measure the teacher on the backend it will guide: on ``physx_cuda`` ManiSkill's
            ``pd_ee_delta_pose`` takes one damped least-squares IK step per control step and never fails or
            freezes as the CPU controller's IK does (issue 17), and every planner figure so far is the CPU one.

    Returns:
        ``{"success_rate": float in [0, 1], "mean_return": float (mean undiscounted episode return),
        "episode_lengths": list[int] (env steps), "successes": list[bool], "mean_teacher_latency_s": float,
        "queries": int, "invalid_answers": int, "grasp_rate", "mean_closest_approach_m"}``, plus
        ``"placed_rate", "static_when_placed"`` for a task that reports them (:meth:`RolloutResult.summary`).

    Raises:
        ValueError: ``episodes < 1``, ``delay_steps < 0``, an unknown task or sim backend.
        RuntimeError: ``physx_cuda`` without CUDA.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if delay_steps < 0:
        raise ValueError(f"delay_steps must be >= 0, got {delay_steps}")
    from robot_rl.envs import make_vec_env
    from robot_rl.interface import TeacherGroupVecEnv
    from robot_rl.rollout import rollout

    spec = None
    if memory:
        from robot_rl.envs.obs_layout import resolve_task
        from robot_rl.memory import memory_spec

        spec = memory_spec(resolve_task(task))
    guidance = teacher_guidance(teacher, hold, delay_steps, seed, memory=spec)
    venv = TeacherGroupVecEnv(make_vec_env(task, num_envs=1, sim_backend=sim_backend,
                                           max_episode_steps=max_episode_steps, seed=seed, in_process=True,
                                           teacher_images=bool(teacher.spec.needs_image)),
                              guidance, drive_queries=True)
    try:
        result = rollout(venv, TeacherActor(guidance), episodes, seed, video=teacher.spec.needs_image)
    finally:
        venv.close()
    summary, st = result.summary(), guidance.stats
    return {
        "success_rate": summary["success_rate"],
        "mean_return": summary["mean_return"],
        "episode_lengths": [e.length for e in result.episodes],
        "successes": [e.success for e in result.episodes],
        "mean_teacher_latency_s": st.teacher_time_s / max(st.teacher_calls, 1),
        "queries": st.queries,
        "invalid_answers": st.invalid,
        "grasp_rate": summary["grasp_rate"],
        "mean_closest_approach_m": summary["mean_closest_approach_m"],
        **{k: summary[k] for k in ("placed_rate", "static_when_placed") if k in summary},
        "memory_stats": None if guidance.memory is None else guidance.memory.metrics(),
    }


__all__ = ["TeacherActor", "run_teacher_as_policy"]


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
    p.add_argument("--delay-steps", type=int, default=0, help="answers arrive this many env steps late (0.05 s each)")
    p.add_argument("--memory", action="store_true",
                   help="keep the teacher's notes in a scratchpad sent with every query")
    p.add_argument("--sim-backend", default="physx_cpu", choices=("physx_cpu", "physx_cuda"),
                   help="the simulator (and so the EE controller) to measure the teacher on")
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
    result = run_teacher_as_policy(teacher, spec.env_id, args.episodes, args.seed, hold=args.hold,
                                   delay_steps=args.delay_steps, memory=args.memory, sim_backend=args.sim_backend)
    result.update(task=args.task, episodes=args.episodes, seed=args.seed, kind=args.kind, teacher_args=kwargs,
                  hold=args.hold, memory=args.memory, sim_backend=args.sim_backend,
                  wall_s=round(time.perf_counter() - t0, 2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
