"""MIKASA-Robo memory tasks (``mikasa-robo-suite`` 1.0.0), wrapped as robot_rl tasks (issue 13).

MIKASA-Robo (Cherepanov et al. 2025, ``CognitiveAISystems/MIKASA-Robo``) is a published ManiSkill3 benchmark of
memory-intensive tasks. Two of them are wrapped here, each a subclass of the MIKASA env class with
:class:`~robot_rl.envs.tasks.RRLTaskMixin` and a :class:`~robot_rl.envs.tasks.TaskSpec`:

==========================  ======================  =====  =============================================
robot_rl id                 upstream id             steps  what must be remembered
==========================  ======================  =====  =============================================
``RRL-TakeItBack-v0``       ``TakeItBack-v0``       180    where the cube started (seen before it moved)
``RRL-RememberColor3-v0``   ``RememberColor3-v0``   60     which colour was shown in env steps 0..4
==========================  ======================  =====  =============================================

Both use ``robot_uids="panda"`` (upstream's default ``panda_wristcam`` adds a wrist camera robot_rl never reads)
and robot_rl's control mode (``pd_ee_delta_pose``, :func:`robot_rl.envs.common.env_kwargs`).

What the wrappers change, and why:

* The answer is removed from the policy's ``state``: upstream's ``obs_mode="state"`` is fully observed
  (``oracle_info`` is TakeItBack's initial position and RememberColor's true colour index, and RememberColor's
  ``goal_{k}_pose`` is the true cube's position times its mask). ``oracle_info`` is also dropped from ``info``.
* RememberColor3's policy state gets what a state-based policy may fairly see instead: each cube's position
  while it is visible (zeros while hidden) and a visible flag, so the colour cue is in the state only during its
  cue steps (0..4).
* The teacher's view (:func:`robot_rl.envs.privileged_state`, the 38-D layout) does not hold the answer once the
  cue is gone either: see each class's "Privileged state".
* RememberColor3's visibility schedule is repaired (upstream bug on this stack, measured on mani-skill 3.0.1,
  CPU sim): upstream's ``evaluate`` parks hidden cubes at z = 1000 m and, from step 10 on, writes every cube back
  to the pose it had at the start of the same call, so no cube ever comes back to the table (measured: all three
  at z ~ 999.8 m at step 10, falling ~0.25 m per step): nothing can be touched and the task cannot be solved.
  Here the cubes appear at their shuffled table positions at step 10 (zero velocity) and are left to the physics
  from then on, which is what upstream's schedule describes.

Import: :mod:`robot_rl.envs.tasks` calls :func:`register` on its last line, so every process that loads robot_rl's
tasks (SubprocVecEnv workers included) knows these ids too, and only when ``mikasa_robo_suite`` imports; without
it robot_rl works unchanged and these ids are unknown. ``scripts/setup.sh`` installs ``mikasa-robo-suite==1.0.0`` with
``--no-deps`` (its metadata pins ``mani_skill==3.0.0b15``, ``torch==2.2.1`` and ``numpy==1.23.5``; its RL
tasks run on robot_rl's mani-skill 3.0.1, ``../shared/FACTS.md``). Importing this module itself is light (no
simulator): the env classes are defined by :func:`register` once ``envs.tasks`` has loaded.

Its wheel ships a top-level package ``baselines`` (MIKASA's PPO scripts; its own ``vla`` utilities import it).
Nothing in robot_rl or its dependencies is named ``baselines``; it is left installed, and ``scripts/setup.sh``
skips the install (with a warning) where another distribution already provides a ``baselines`` package that
the wheel would overwrite.
"""

from __future__ import annotations

import importlib.util
import logging

__all__ = ["AVAILABLE", "MIKASA_TASK_IDS", "UPSTREAM_IDS", "register", "COLOR_NAMES", "CUE_STEPS",
           "SHOW_STEP", "HIDDEN_Z"]

_log = logging.getLogger(__name__)

#: ``mikasa_robo_suite`` can be imported (checked without importing it).
AVAILABLE: bool = importlib.util.find_spec("mikasa_robo_suite") is not None
#: robot_rl id -> MIKASA id.
UPSTREAM_IDS: dict[str, str] = {"RRL-TakeItBack-v0": "TakeItBack-v0", "RRL-RememberColor3-v0": "RememberColor3-v0"}
MIKASA_TASK_IDS: tuple[str, ...] = tuple(UPSTREAM_IDS)
#: RememberColor3's colours in upstream's cube order (``COLOR_MAPPING`` 0..2), as scratchpad object prefixes.
COLOR_NAMES: tuple[str, ...] = ("red", "lime", "blue")
#: RememberColor3: env steps (observations 0..4) in which the true cube is shown at the table centre.
CUE_STEPS: int = 5
#: RememberColor3: first env step at which all three cubes stand on the table (upstream TIME_OFFSET + DELTA_TIME).
SHOW_STEP: int = 10
#: z (m) at which MIKASA parks a hidden object; a position with z above :data:`HIDDEN_ABOVE_Z` is hidden.
HIDDEN_Z: float = 1000.0
HIDDEN_ABOVE_Z: float = 10.0

_registered = False


def register() -> bool:
    """Define and register the wrapped tasks (idempotent).

    Returns:
        True when the tasks are registered (now or before), False when ``mikasa_robo_suite`` is not installed or
        fails to import (logged as a warning: robot_rl works without it).
    """
    global _registered
    if _registered:
        return True
    if not AVAILABLE:
        return False
    try:
        from . import _mikasa_tasks  # noqa: F401  (defines and registers the classes)
    except Exception as exc:  # an optional extra: never break robot_rl's own tasks
        _log.warning("mikasa_robo_suite is installed but its tasks could not be registered (%s: %s); the "
                     "RRL-TakeItBack-v0 / RRL-RememberColor3-v0 ids are unavailable", type(exc).__name__, exc)
        return False
    _registered = True
    return True
