"""How a trained teacher-group policy follows the hint it observes (issue 12 diagnostic; research only).

Rolls out a run's deterministic policy (its latest checkpoint) on one env, the teacher queried as in
``robot-rl eval RUN --delay-steps K``, and prints, per action scale: the success rate, the mean over steps of
``max |a_pos|`` (the position action before scaling, in action units, bound 1), the fraction of steps with it at
the bound (> 0.99), and the mean cosine between the position action and the position part of the hint in the
policy's observation (steps that show a hint). ``--scales 1,0.5`` multiplies the position and rotation actions
before they are sent, to test whether a saturated policy would succeed if it moved less.

    .venv/bin/python benchmarks/hint_following.py bench_out/latency/RRL-PushCube-HiddenGoal-v1/vlajs+d_hint_dt_dp-s0 \
        --delay-steps 0 --episodes 10 --scales 1,0.5
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from pathlib import Path

import numpy as np

#: A position action component at or beyond this (action units) counts as saturated.
SATURATED = 0.99


class _ScaledActor:
    """The run's deterministic policy (:class:`robot_rl.trainer.PolicyActor`) as a rollout actor that records
    ``max |a_pos|`` and the cosine to the observed hint before scaling the position and rotation actions.
    """

    def __init__(self, policy, venv, hint_pos: slice, scale: float):
        self.policy, self.venv, self.hint_pos, self.scale = policy, venv, hint_pos, scale
        self.peaks: list[float] = []
        self.cosines: list[float] = []

    def reset(self) -> None:
        """Nothing to reset: the MLP policy is stateless."""

    def act(self, obs: np.ndarray, view) -> np.ndarray:
        """The policy's action ``(1, 7)`` with its position and rotation multiplied by the scale."""
        action = self.policy.act(obs, view).copy()
        hint, a_pos = self.venv.get_original_obs()[0, self.hint_pos], action[0, :3]
        self.peaks.append(float(np.abs(a_pos).max()))
        if np.linalg.norm(hint) > 1e-3 and np.linalg.norm(a_pos) > 1e-6:
            self.cosines.append(float(a_pos @ hint / np.linalg.norm(a_pos) / np.linalg.norm(hint)))
        action[0, :6] *= self.scale
        return action


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run directory whose policy observes the teacher group")
    p.add_argument("--delay-steps", type=int, default=0, help="the teacher's answers this many env steps late")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=1000, help="seed of episode 0 (episode k: seed + k)")
    p.add_argument("--scales", default="1", help="comma-separated factors on the position and rotation actions")
    args = p.parse_args(argv)

    from robot_rl.algos import GuidedPPO
    from robot_rl.rollout import rollout
    from robot_rl.runs import RunDir
    from robot_rl.trainer import PolicyActor, build_env_stack, build_guidance

    run = RunDir(args.run)
    cfg = run.config()
    policy = PolicyActor(GuidedPPO.load(run.checkpoint / "model.zip", device="cpu", custom_objects={"guidance": None}))
    rows = []
    for scale in (float(s) for s in args.scales.split(",")):
        with ExitStack() as stack:
            guidance = build_guidance(cfg, 1, stack=stack, log_dir=run.path, evaluation=True,
                                      delay_steps=args.delay_steps)
            venv, schema = build_env_stack(cfg, run, num_envs=1, seed=args.seed, in_process=True, training=False,
                                           guidance=guidance, drive_queries=True)
            if "teacher" not in schema.group_names:
                raise SystemExit(f"{args.run}: the policy does not observe the teacher group (interface.features)")
            hint = schema.field_slices("teacher")["hint"]
            actor = _ScaledActor(policy, venv, slice(hint.start, hint.start + 3), scale)
            try:
                result = rollout(venv, actor, args.episodes, args.seed)
            finally:
                venv.close()
        row = {"scale": scale, "success_rate": result.summary()["success_rate"],
               "mean_max_abs_a_pos": float(np.mean(actor.peaks)),
               "saturated_fraction": float(np.mean(np.array(actor.peaks) > SATURATED)),
               "cos_action_hint": float(np.mean(actor.cosines)) if actor.cosines else float("nan")}
        rows.append(row)
        print(f"scale {scale}: success {row['success_rate']:.2f}, mean max|a_pos| {row['mean_max_abs_a_pos']:.2f}, "
              f"saturated {row['saturated_fraction']:.2f}, cos(a_pos, hint_pos) {row['cos_action_hint']:.2f}",
              flush=True)
    return rows


if __name__ == "__main__":
    main()
