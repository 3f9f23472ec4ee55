"""How far a goal-blind controller gets on the hidden-goal tasks (issue 12; research only).

    .venv/bin/python benchmarks/goal_blind.py [--episodes 20]

The hidden-goal tasks remove the goal from the policy's observation; whether that leaves the policy only
guesses depends on how the task draws its goal. This script plays the scripted teacher (``D = 1``, queried
every env step) with the privileged goal replaced by a guess made without it, and prints success and mean
episode length per guess, next to the real goal's:

- PushCube-HiddenGoal: the goal is 0.2 m from the cube's start in a random direction (within the arm's reach).
  ManiSkill's PushCube-v1 puts it always 0.2 m along +x: with that goal, "push along +x" (a memoryless rule an
  MLP policy can represent) solved 20 of 20 episodes goal-blind, which is why the hidden-goal task draws its
  direction.
- PickPlaceCube-HiddenGoal: the region is 0.12-0.2 m from the cube in a uniformly random direction; a fixed
  guess succeeds only when the region happens to lie there.

Measured 2026-12-01 (20 episodes, seeds 0-19): PushCube-HiddenGoal real goal 1.00 (9.6 steps), "start + (0.2, 0)"
0.00, "start + (0, 0.2)" 0.35, "start - (0.2, 0)" 0.15; PickPlaceCube-HiddenGoal real goal 1.00 (19.1),
"start + (0.16, 0)" 0.05, "table centre" 0.05.
"""

from __future__ import annotations

import argparse
from typing import Callable

import numpy as np

from robot_rl.envs.privileged import PRIVILEGED_STATE_LAYOUT

GOAL, OBJ = PRIVILEGED_STATE_LAYOUT["goal_pos"], PRIVILEGED_STATE_LAYOUT["obj_pos"]
#: Height of the goal regions' centres (on the table), m.
REGION_Z = 1e-3


def _on_table(xy) -> np.ndarray:
    return np.array([xy[0], xy[1], REGION_Z])


#: task -> guess name -> ``guess(state (38,), state at reset (38,)) -> goal (3,)``; None: the real goal.
GUESSES: dict[str, dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray] | None]] = {
    "RRL-PushCube-HiddenGoal-v1": {
        "real goal": None,
        "cube start + (0.2, 0): PushCube-v1's goal": lambda s, s0: _on_table(s0[OBJ][:2] + (0.2, 0.0)),
        "cube start + (0, 0.2)": lambda s, s0: _on_table(s0[OBJ][:2] + (0.0, 0.2)),
        "cube start - (0.2, 0): towards the robot": lambda s, s0: _on_table(s0[OBJ][:2] - (0.2, 0.0)),
    },
    "RRL-PickPlaceCube-HiddenGoal-v1": {
        "real goal": None,
        "cube start + (0.16, 0)": lambda s, s0: _on_table(s0[OBJ][:2] + (0.16, 0.0)),
        "table centre (0, 0)": lambda s, s0: _on_table((0.0, 0.0)),
    },
}


def play(task: str, guess, episodes: int, seed: int = 0) -> dict:
    """The scripted teacher (``D = 1``) as the policy with ``goal_pos`` replaced by ``guess``; episode ``i``
    resets with ``seed + i``. Returns ``{"success_rate", "mean_length"}`` (env steps).
    """
    from robot_rl.envs import make_env, privileged_state
    from robot_rl.teachers import ScriptedTeacher, TeacherRequest

    teacher = ScriptedTeacher(control_period_steps=1)
    env = make_env(task, seed=seed)
    successes, lengths = [], []
    try:
        for ep in range(episodes):
            env.reset(seed=seed + ep)
            start = privileged_state(env.unwrapped)[0].copy()
            done, steps, info = False, 0, {}
            while not done:
                s = privileged_state(env.unwrapped)[0].copy()
                if guess is not None:
                    s[GOAL] = guess(s, start)
                action = teacher.act(TeacherRequest([""], states=s[None], task_ids=[task])).actions[0]
                _, _, terminated, truncated, info = env.step(action)
                steps, done = steps + 1, terminated or truncated
            successes.append(bool(info["success"]))
            lengths.append(steps)
    finally:
        env.close()
    return {"success_rate": float(np.mean(successes)), "mean_length": float(np.mean(lengths))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = {}
    for task, guesses in GUESSES.items():
        for name, guess in guesses.items():
            r = out[(task, name)] = play(task, guess, args.episodes, args.seed)
            print(f"{task:32s} {name:46s} success {r['success_rate']:.2f}  mean length {r['mean_length']:.1f}")
    return out


if __name__ == "__main__":
    main()
