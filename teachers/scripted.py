"""A scripted teacher that plans from privileged simulator state (no images, no model).

:class:`ScriptedTeacher` implements :class:`robot_rl.teachers.base.Teacher` for the task suite: it is the
protocol glue (request checks, per-task dispatch, the response) and the weakness knobs. The planning
itself lives in :mod:`robot_rl.teachers.plans`, one module per task on a public helper API
(:mod:`robot_rl.teachers.plans.common`: privileged-state fields from :mod:`robot_rl.envs.privileged`, and
:class:`~robot_rl.teachers.plans.common.Motion`, which plans each answer for its control period).

It is *stateless*: every answer is computed from the privileged state of the queried step alone (the
current phase is inferred from geometry), so the trainer may query it sparsely at arbitrary steps, for
any subset of envs, in any order. On the memory tasks (issue 13) an answer also reads the row's scratchpad
(``request.scratchpads``, the notes its own earlier answers wrote) and writes a note on a subtask transition
(``TeacherResponse.notes``, :mod:`robot_rl.memory`): still no state inside the teacher, the memory travels with
the request. A planner module that reads notes sets ``READS_NOTES = True`` and has the signature
``plan(motion, states (N, S) float64, notes: list[Notes | None], steps (N,) int64) -> (actions (N, 7), phases,
notes: list[str])``: ``notes[i]`` is row ``i``'s parsed scratchpad (``None`` when the request sent none: a
teacher without memory), ``steps[i]`` the env step of its observation (``request.obs_steps``, 0 when absent),
and it returns one note per row (``""``: none). Notes are written from the queried state alone, never from
hidden simulator state (``tests/teachers/test_memory_notes.py``).

Privileged state (``request.states``, ``(B, 38) float32``; the PushCube and PickCube planners read the first
20; world frame, metres, quaternions ``wxyz``): :data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT`.

Action convention: :mod:`robot_rl.geometry` (``pd_ee_delta_pose``, normalized, the rotation sign flipped by
the controller, ManiSkill issue #1469). Every answer is planned for its whole control period of ``D`` env
steps, because that is how training uses it: in ``vlajs`` mode one answer is held for ``D`` steps (spread
by ``robot_rl.guidance.targets.interpolate_targets``), and a VLA served at 5 Hz answers no more often
either (issue 10). The Panda base sits at ``(-0.615, 0, 0)`` with identity rotation in these tasks
(measured), so world-frame deltas equal the base-frame deltas the controller expects.

Surprises found while building it (ManiSkill 3.0.1, ``pd_ee_delta_pose``, Panda):

* A +1 rotation command turns the end effector by **-0.1 rad** (the controller multiplies the
  normalized rotation by ``rot_lower = -0.1``); pinned by ``tests/teachers``.
* The controller clips the rotation command by its *norm* (to 1), but the position command
  per component (to [-1, 1]); the planners respect both per env step.
* The controller's rotation delta is an intrinsic ``"XYZ"`` Euler triple (pytorch3d
  ``euler_angles_to_matrix``: ``R = Rx @ Ry @ Rz``) that is *pre*-multiplied onto the current
  orientation (``root_aligned_body_rotation``): it rotates the TCP about base-frame axes through
  the TCP point.
* The controller targets ``current EE pose + delta`` (not the previous target, ``use_target``
  is off) and the arm lags, so in closed loop a full command (1.0) moves the TCP only about
  0.04 m or 0.04 rad per 20 Hz env step (measured: 3 steps of a +1 rotation turn it by
  ~-0.118 rad, not -0.3); a single command whose target is held for 1 s of sim does settle at
  the full -0.1 rad. The "0.1 per step" scale is the controller's target, not the motion: a held
  command is a velocity (:data:`robot_rl.teachers.plans.common.TRACKING_FRACTION`).
* Going down, the arm's z motion couples 5-10 mm into xy.
* Panda base: ``(-0.615, 0, 0)``, identity rotation in PushCube-v1 / PickCube-v1 (pinned by a test).
"""

from __future__ import annotations

import functools
import importlib
import math
import time

import numpy as np

from robot_rl.envs.privileged import CUBE_STATE_DIM, PRIVILEGED_STATE_DIM
from robot_rl.geometry import ACTION_DIM, POS_SLICE, rotate_about_axis
from robot_rl.memory import memory_spec, parse_notes
from robot_rl.teachers.base import TeacherRequest, TeacherRequestError, TeacherResponse, TeacherSpec
from robot_rl.teachers.plans.common import Motion, scale_clip

#: Planner of each task family (the task name inside its id: ``"RRL-PokeCube-Sparse-LH-v1"``,
#: ``"PokeCube-v2"`` and ``"PokeCube-v1"`` are all ``"PokeCube"``, ``"RRL-PushCube-HiddenGoal-v1"`` is
#: ``"PushCube"``): the module in :mod:`robot_rl.teachers.plans` whose
#: ``plan(motion, states (N, S) float64) -> (actions (N, 7), phases)`` answers it (imported on first use), and
#: the privileged-state width it reads.
PLANNERS: dict[str, tuple[str, int]] = {
    "PushCube": ("robot_rl.teachers.plans.push_cube", CUBE_STATE_DIM),
    "PickCube": ("robot_rl.teachers.plans.pick_cube", CUBE_STATE_DIM),
    "PickPlaceCube": ("robot_rl.teachers.plans.pick_place_cube", PRIVILEGED_STATE_DIM),
    "LiftPegUpright": ("robot_rl.teachers.plans.lift_peg_upright", PRIVILEGED_STATE_DIM),
    "PegInsertionSide": ("robot_rl.teachers.plans.peg_insertion_side", PRIVILEGED_STATE_DIM),
    "PokeCube": ("robot_rl.teachers.plans.poke_cube", PRIVILEGED_STATE_DIM),
    # memory tasks (issue 13): their planners read and write the scratchpad (READS_NOTES)
    "PickPlaceCubeRestore": ("robot_rl.teachers.plans.pick_place_restore", PRIVILEGED_STATE_DIM),
    "TakeItBack": ("robot_rl.teachers.plans.take_it_back", PRIVILEGED_STATE_DIM),
    "RememberColor3": ("robot_rl.teachers.plans.remember_color", PRIVILEGED_STATE_DIM),
}
#: Variant names that make a family of their own (a different task, not the same scene with less observed).
MEMORY_VARIANTS = ("Restore",)
#: Task ids of the memory families (env id, paper name: robot_rl.envs.TASKS), which have no sparse / LH variants.
MEMORY_TASK_IDS: dict[str, tuple[str, ...]] = {
    "PickPlaceCubeRestore": ("RRL-PickPlaceCube-Restore-v1", "PickPlaceCube-v2-Restore"),
    "TakeItBack": ("RRL-TakeItBack-v0", "TakeItBack-v0"),
    "RememberColor3": ("RRL-RememberColor3-v0", "RememberColor3-v0"),
}


@functools.cache
def _planner_module(module: str):
    """A planner module, imported once (the teacher is asked every few env steps)."""
    return importlib.import_module(module)


@functools.cache
def _reading_spec(task_id: str):
    """The vocabulary the teacher reads a row's scratchpad with (generous slots: reading never evicts)."""
    from robot_rl.envs.obs_layout import resolve_task

    return memory_spec(resolve_task(task_id), grounding_slots=16, plan_slots=16, act_slots=16)


def task_family(task_id: str) -> str:
    """The task name inside a task id: ``"RRL-PickCube-Sparse-LH-v1"``, ``"PickCube-v2"``, ``"PickCube-v1"``
    -> ``"PickCube"``; ``"PickPlaceCube-rrl-v1"`` -> ``"PickPlaceCube"``; a memory variant is a family of its
    own: ``"RRL-PickPlaceCube-Restore-v1"`` -> ``"PickPlaceCubeRestore"`` (:data:`MEMORY_VARIANTS`).
    """
    parts = str(task_id).removeprefix("RRL-").split("-")
    variant = next((p for p in parts[1:] if p in MEMORY_VARIANTS), "")
    return parts[0] + variant


#: Families with a hidden-goal variant (``RRL-<family>-HiddenGoal-v1``, ``<family>-v2-HiddenGoal``; issue 12):
#: the goal is gone from the policy's observation only, the privileged state still carries it, so the
#: family's planner serves the variant unchanged.
HIDDEN_GOAL_FAMILIES = ("PushCube", "PickPlaceCube")


def _task_ids(family: str) -> tuple[str, ...]:
    if family in MEMORY_TASK_IDS:
        return MEMORY_TASK_IDS[family]
    ids = (f"RRL-{family}-Sparse-v1", f"RRL-{family}-Sparse-LH-v1", f"{family}-v2", f"{family}-v2-LH", f"{family}-v1")
    if family in HIDDEN_GOAL_FAMILIES:
        ids += (f"RRL-{family}-HiddenGoal-v1", f"{family}-v2-HiddenGoal")
    return ids


#: Task ids each cube planner serves: the repo's sparse, long-horizon and hidden-goal variants (env id and
#: paper name, see robot_rl.envs.TASKS) and the upstream ManiSkill tasks they subclass (same scene and state).
PUSH_TASKS = _task_ids("PushCube")
PICK_TASKS = _task_ids("PickCube")
#: Every task id the teacher accepts (any id whose :func:`task_family` is in :data:`PLANNERS` works).
SUPPORTED_TASKS = tuple(t for fam in PLANNERS for t in _task_ids(fam))


# ----------------------------------------------------------------------------------------------
# Direction perturbations (weakness knobs)


def _random_perpendicular_unit(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(N, 3)`` unit vectors perpendicular to each row of ``v`` (nonzero rows), uniform in angle."""
    g = rng.standard_normal(v.shape)
    u = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    g = g - np.sum(g * u, -1, keepdims=True) * u
    return g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-12)


class ScriptedTeacher:
    """Waypoint planner on privileged state for the task suite (Panda, ``pd_ee_delta_pose``), one planner per
    task in :mod:`robot_rl.teachers.plans`.

    Args:
        control_period_steps: ``D``, env steps one answer covers (>= 1). Position/rotation parts of
            an answer are the delta over the whole period, planned for it
            (:class:`~robot_rl.teachers.plans.common.Motion`): the per-step command (each component in
            [-1, 1], rotation norm <= 1) times ``D``; the trainer divides them by ``D`` for its per-step
            targets and holds them for ``D`` steps.
        direction_noise_deg: sigma (degrees) of a random tilt of the position direction: the
            direction is rotated by ``|N(0, sigma)|`` about a uniformly random axis perpendicular
            to it (magnitude kept). 0 = off.
        bias_rotation_deg: constant rotation (degrees, right-handed) of the position delta about
            the world z axis, applied before the noise. 0 = off.
        wrong_fraction: probability in [0, 1] that a row's position direction is replaced by a
            uniformly random unit direction (magnitude kept). 0 = off.
        latency_s: seconds to sleep in every :meth:`act` call (simulates a slow VLA). 0 = off.
        seed: seed of the teacher's own ``numpy.random.Generator`` (the global numpy / torch RNGs
            are never touched, so the trainer's reproducibility is unaffected).
        model_id: reported in :class:`TeacherResponse.model_id`.
        task: default task id used when a request carries no ``task_ids``.
        position_gain: multiplier on :func:`~robot_rl.teachers.plans.common.period_gain` (the fraction of a
            waypoint error one answer asks to close over its period); 1 = the tuned default.

    The knobs only affect the *position* part (``actions[:, 0:3]``); rotation and gripper stay clean.
    Rows whose clean position delta is zero are left unchanged by the knobs.

    Attributes:
        spec: needs the privileged state (up to 38 columns), no image, no statistics, writes notes (on the
            memory tasks; ``""`` elsewhere); ``control_period_steps`` and ``model_id`` as given.

    Raises (from the constructor): ``ValueError`` for ``control_period_steps < 1``, a ``wrong_fraction``
    outside [0, 1], a negative noise or latency, ``position_gain <= 0`` or an unknown ``task``. From
    :meth:`check_request` and :meth:`act`: :class:`~robot_rl.teachers.base.TeacherRequestError` when
    ``request.states`` is ``None`` or narrower than the planner's width (20 for the cube tasks, 38
    otherwise), when no task id is known, or for a task id whose family is not in :data:`PLANNERS`.
    """

    def __init__(
        self,
        control_period_steps: int = 1,
        *,
        direction_noise_deg: float = 0.0,
        bias_rotation_deg: float = 0.0,
        wrong_fraction: float = 0.0,
        latency_s: float = 0.0,
        seed: int | None = None,
        model_id: str = "scripted",
        task: str | None = None,
        position_gain: float = 1.0,
    ) -> None:
        if int(control_period_steps) < 1:
            raise ValueError(f"control_period_steps must be >= 1, got {control_period_steps}")
        if not 0.0 <= wrong_fraction <= 1.0:
            raise ValueError(f"wrong_fraction must be in [0, 1], got {wrong_fraction}")
        if direction_noise_deg < 0 or latency_s < 0:
            raise ValueError("direction_noise_deg and latency_s must be >= 0")
        if task is not None and task_family(task) not in PLANNERS:
            raise ValueError(f"unknown task {task!r}; supported task families: {', '.join(PLANNERS)}")
        self.motion = Motion(control_period_steps, position_gain)  # ValueError for D < 1 or a gain <= 0
        self.spec = TeacherSpec(model_id=model_id, control_period_steps=self.motion.period_steps, needs_image=False,
                                needs_state=True, state_dim=PRIVILEGED_STATE_DIM, writes_notes=True)
        self.direction_noise_deg = float(direction_noise_deg)
        self.bias_rotation_deg = float(bias_rotation_deg)
        self.wrong_fraction = float(wrong_fraction)
        self.latency_s = float(latency_s)
        self.task = task
        self._rng = np.random.default_rng(seed)

    # -- protocol ------------------------------------------------------------------------------

    def act(self, request: TeacherRequest) -> TeacherResponse:
        """Plan one action per row of ``request``.

        Args:
            request: needs ``states`` ``(B, 38)`` (``(B, >=20)`` for the cube tasks; privileged layout, see
                module docstring) and ``task_ids`` (or the constructor's ``task``). Images are ignored.

        Returns:
            ``TeacherResponse`` with ``actions`` ``(B, 7) float32`` (period deltas, see
            :mod:`robot_rl.teachers.base`), ``latency_s`` = measured wall time of this call for every
            row (including the simulated latency), ``model_id``, ``notes`` (``B`` texts, ``""`` for a row without
            a note: every row of a task whose planner reads no notes) and ``extras["phases"]`` (``B`` phase
            names, for debugging).
        """
        t0 = time.perf_counter()
        task_ids = self._task_ids(request)
        states = np.asarray(request.states, dtype=np.float64)
        n = states.shape[0]

        actions = np.zeros((n, ACTION_DIM), dtype=np.float64)
        phases = [""] * n
        notes = [""] * n
        steps = (np.zeros(n, dtype=np.int64) if request.obs_steps is None
                 else np.asarray(request.obs_steps, dtype=np.int64))
        families = np.array([task_family(t) for t in task_ids])
        for family in dict.fromkeys(families):
            mask = families == family
            rows = np.nonzero(mask)[0]
            module = _planner_module(PLANNERS[family][0])
            if getattr(module, "READS_NOTES", False):
                pads = [None if request.scratchpads is None
                        else parse_notes(request.scratchpads[i], _reading_spec(task_ids[i])) for i in rows]
                acts, ph, written = module.plan(self.motion, states[mask], pads, steps[mask])
                for i, note in zip(rows, written):
                    notes[i] = note
            else:
                acts, ph = module.plan(self.motion, states[mask])
            actions[mask] = acts
            for i, p in zip(rows, ph):
                phases[i] = p
        actions[:, POS_SLICE] = self._perturb(actions[:, POS_SLICE])

        if self.latency_s > 0:
            time.sleep(self.latency_s)
        return TeacherResponse(
            actions=actions.astype(np.float32),
            latency_s=time.perf_counter() - t0,
            model_id=self.spec.model_id,
            notes=notes,
            extras={"phases": phases},
        )

    def check_request(self, request: TeacherRequest) -> None:
        """Validate ``request`` without planning (the :class:`~robot_rl.teachers.base.Teacher` contract).

        Raises:
            TeacherRequestError: ``states`` missing or narrower than the planner reads, no task id
                known, or a task id not in :data:`SUPPORTED_TASKS`.
        """
        self._task_ids(request)

    def _task_ids(self, request: TeacherRequest) -> list[str]:
        """:meth:`check_request`, returning the per-row task ids."""
        self.spec.check(request)
        task_ids = request.task_ids
        if task_ids is None:
            if self.task is None:
                raise TeacherRequestError(
                    "task_ids", f"none given and the teacher has no default task; supported task families: "
                                f"{', '.join(PLANNERS)}")
            task_ids = [self.task] * len(request)
        unknown = sorted({t for t in task_ids if task_family(t) not in PLANNERS})
        if unknown:
            raise TeacherRequestError(
                "task_ids", f"unknown task id(s) {unknown}; supported task families: {', '.join(PLANNERS)} "
                            f"(e.g. {', '.join(SUPPORTED_TASKS[:5])})")
        need = max(PLANNERS[task_family(t)][1] for t in task_ids) if task_ids else CUBE_STATE_DIM
        if request.states.shape[1] < need:
            raise TeacherRequestError("states", f"must be (B, >={need}), got {request.states.shape}")
        return list(task_ids)

    # -- knobs ---------------------------------------------------------------------------------

    def _perturb(self, pos: np.ndarray) -> np.ndarray:
        """Apply bias, noise and wrong answers to ``(N, 3)`` position deltas (magnitudes kept).

        The result is rescaled (direction kept) so per-step components stay within [-1, 1].
        """
        if self.bias_rotation_deg == 0 and self.direction_noise_deg == 0 and self.wrong_fraction == 0:
            return pos
        n = pos.shape[0]
        norm = np.linalg.norm(pos, axis=-1)
        live = norm > 1e-9
        out = pos.copy()
        if self.bias_rotation_deg != 0:
            z = np.tile([0.0, 0.0, 1.0], (n, 1))
            out = rotate_about_axis(out, z, np.full(n, math.radians(self.bias_rotation_deg)))
        if self.direction_noise_deg > 0:
            angles = np.abs(self._rng.normal(0.0, math.radians(self.direction_noise_deg), n))
            axes = _random_perpendicular_unit(out, self._rng)
            out = rotate_about_axis(out, axes, angles)
        if self.wrong_fraction > 0:
            wrong = self._rng.random(n) < self.wrong_fraction
            rand = self._rng.standard_normal((n, 3))
            rand /= np.linalg.norm(rand, axis=-1, keepdims=True)
            out = np.where(wrong[:, None], rand * norm[:, None], out)
        out = scale_clip(out, float(self.spec.control_period_steps))
        return np.where(live[:, None], out, pos)


__all__ = ["ScriptedTeacher", "SUPPORTED_TASKS", "PUSH_TASKS", "PICK_TASKS", "PLANNERS", "HIDDEN_GOAL_FAMILIES",
           "task_family"]
