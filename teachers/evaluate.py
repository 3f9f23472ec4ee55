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


class TeacherActor:
    """A teacher as a :class:`robot_rl.rollout.Actor`: queried on the view's privileged state (and image, if
    it needs one), its answers spread over ``D`` per-step targets by the trainer's own
    :func:`~robot_rl.guidance.targets.interpolate_targets` and played by a
    :class:`~robot_rl.guidance.targets.TargetTracker`.

    Args:
        teacher: any :class:`~robot_rl.teachers.base.Teacher`.
        hold: True: one query per ``D`` env steps, its targets replayed open loop (as ``vlajs`` uses it);
            False: a query every env step, of which the first per-step target is used.
        instruction: language instruction sent with each query (default: the view's, the task's own).

    Attributes:
        queries: queries sent. invalid: answers dropped as invalid (NaN, wrong shape, out of range); such
            an answer gives zero motion with the gripper open for its period.
        latencies_s: the teacher's reported latency of every query (s).
    """

    def __init__(self, teacher: Teacher, hold: bool, instruction: str | None = None):
        from robot_rl.guidance.targets import TargetTracker

        self.teacher, self.hold, self.instruction = teacher, bool(hold), instruction
        self.period = int(teacher.spec.control_period_steps)
        self.tracker = TargetTracker(1, self.period if hold else 1)
        self.idle = np.zeros(ACTION_DIM, dtype=np.float32)
        self.idle[GRIPPER_INDEX] = 1.0  # no usable answer: stand still, gripper open
        self.queries = self.invalid = 0
        self.latencies_s: list[float] = []
        self._started = False

    def reset(self) -> None:
        """A new episode: drop the queued targets, so the first step queries."""
        self.tracker.advance(np.ones(1, dtype=bool))  # a new episode: nothing queued
        self._started = False

    def act(self, obs: np.ndarray, view) -> np.ndarray:
        """The current per-step target ``(1, 7)``, querying the teacher when none is queued; ``obs`` is unused."""
        from robot_rl.guidance.targets import interpolate_targets, validate_teacher_actions

        if self._started:
            self.tracker.advance(np.zeros(1, dtype=bool))
        self._started = True
        if not self.tracker.active[0]:
            needs_image = self.teacher.spec.needs_image
            images = view.images if needs_image else None
            if images is None and needs_image:
                raise ValueError("the teacher needs an image: run the rollout with video=True")
            instruction = view.instructions[0] if self.instruction is None else self.instruction
            resp = self.teacher.act(TeacherRequest(instructions=[instruction], images=images, states=view.states,
                                                   task_ids=list(view.task_ids)))
            self.latencies_s.append(float(np.mean(resp.latency_s)))
            self.queries += 1
            valid = validate_teacher_actions(resp.actions, 1, self.period)
            self.invalid += int(not valid[0])
            answer = (np.nan_to_num(np.asarray(resp.actions, dtype=np.float32)) if valid[0]
                      else np.zeros((1, ACTION_DIM), np.float32))
            targets, mask = interpolate_targets(answer, self.period, valid)
            n = self.tracker.period_steps
            self.tracker.set(np.zeros(1, dtype=np.int64), targets[:, :n], mask[:, :n])
        target, ok = self.tracker.current()
        return (target[0] if ok[0] else self.idle)[None]


def run_teacher_as_policy(
    teacher: Teacher,
    task: str,
    episodes: int,
    seed: int = 0,
    *,
    instruction: str | None = None,
    max_episode_steps: int | None = None,
    hold: bool = False,
) -> dict:
    """Roll out ``teacher`` as the policy for ``episodes`` episodes of ``task`` (:func:`robot_rl.rollout.rollout`).

    The teacher is asked (``TeacherRequest`` with the privileged state, the image only if
    ``teacher.spec.needs_image``) on every env step, or with ``hold=True`` once every
    ``teacher.spec.control_period_steps`` (``D``) env steps (:class:`TeacherActor`). Episode ``i`` resets with
    seed ``seed + i``. An episode ends on success (ManiSkill terminates on ``info["success"]``) or at the
    task's horizon (``max_episode_steps`` overrides it).

    Args:
        teacher: any :class:`~robot_rl.teachers.base.Teacher`.
        task: env id or paper name, e.g. ``"RRL-PushCube-Sparse-v1"``.
        episodes: number of episodes (>= 1).
        seed: seed of the first episode's reset.
        instruction: language instruction sent with each query (default: the task's).
        max_episode_steps: horizon override in env steps.
        hold: False queries every env step; True queries once per ``D`` env steps and replays the
            answer open loop (the teacher as ``vlajs`` training uses it).

    Returns:
        ``{"success_rate": float in [0, 1], "mean_return": float (mean undiscounted episode return),
        "episode_lengths": list[int] (env steps), "successes": list[bool], "mean_teacher_latency_s": float,
        "queries": int, "invalid_answers": int, "grasp_rate", "mean_closest_approach_m"}``.

    Raises:
        ValueError: ``episodes < 1`` or an unknown task.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    from robot_rl.envs import make_vec_env
    from robot_rl.rollout import rollout

    actor = TeacherActor(teacher, hold, instruction)
    venv = make_vec_env(task, num_envs=1, max_episode_steps=max_episode_steps, seed=seed, in_process=True)
    try:
        result = rollout(venv, actor, episodes, seed, video=teacher.spec.needs_image)
    finally:
        venv.close()
    summary = result.summary()
    return {
        "success_rate": summary["success_rate"],
        "mean_return": summary["mean_return"],
        "episode_lengths": [e.length for e in result.episodes],
        "successes": [e.success for e in result.episodes],
        "mean_teacher_latency_s": float(np.mean(actor.latencies_s)) if actor.latencies_s else 0.0,
        "queries": actor.queries,
        "invalid_answers": actor.invalid,
        "grasp_rate": summary["grasp_rate"],
        "mean_closest_approach_m": summary["mean_closest_approach_m"],
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
    result = run_teacher_as_policy(teacher, spec.env_id, args.episodes, args.seed, hold=args.hold)
    result.update(task=args.task, episodes=args.episodes, seed=args.seed, kind=args.kind, teacher_args=kwargs,
                  hold=args.hold, wall_s=round(time.perf_counter() - t0, 2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
