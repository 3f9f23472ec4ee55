"""Vector envs for training: one process per env on the CPU sim, or the GPU adapter.

:func:`make_vec_env` is the one entry point the trainer uses; :func:`make_env` builds the same
single gymnasium env the CPU workers run, for teachers, tests and evaluation.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from .common import (
    SIM_BACKENDS,
    TeacherView,
    check_render_device,
    check_view_indices,
    empty_view,
    env_kwargs,
    make_maniskill_env,
    render_teacher_images,
)
from .tasks import PRIVILEGED_STATE_DIM, TaskSpec, get_task, privileged_state

__all__ = ["RRLEnvWrapper", "make_env", "make_vec_env", "CPUDummyVecEnv", "CPUSubprocVecEnv", "WORKER_START_METHOD",
           "PRIVILEGED_STATE_INFO_KEY"]

#: Start method of the SubprocVecEnv workers. "fork" is unsafe once the parent has started torch
#: or Vulkan threads; "forkserver" and "spawn" both work and measured the same here (2 workers
#: start in 3.3-6 s on 2 cores, mostly importing mani_skill; preloading robot_rl.envs into the
#: fork server did not help). Both re-run the parent's ``__main__`` module in every worker, so a
#: script that calls make_vec_env must guard it with ``if __name__ == "__main__":`` (otherwise
#: Python raises "An attempt has been made to start a new process before the current process has
#: finished its bootstrapping phase").
WORKER_START_METHOD = "forkserver"

#: Info key of the privileged state ``(38,) float32`` (:func:`~robot_rl.envs.privileged_state` of the env after
#: the step or reset) in the step and reset infos of an :class:`RRLEnvWrapper` whose ``stream_privileged_state``
#: is on (:meth:`CPUSubprocVecEnv.stream_privileged_states`). At an episode's end the step info's state is the
#: terminal one; the state after SB3's automatic reset is in the vec env's ``reset_infos[i]``.
PRIVILEGED_STATE_INFO_KEY = "rrl_privileged_state"


class RRLEnvWrapper(gym.Wrapper):
    """Outermost wrapper of a single (CPU sim, ``num_envs=1``) robot_rl env, around
    ManiSkill's ``CPUGymWrapper``.

    - reward as a python ``float`` (the sparse reward is ManiSkill's ``info["success"]``, a bool);
    - ``info["success"]`` always present as a python ``bool`` (False for tasks without one), and the
      same value as ``info["is_success"]``, the key SB3 reads at episode end for ``rollout/success_rate``;
    - the first ``reset()`` without a seed uses the ``seed`` given here, so an env is reproducible;
    - :meth:`teacher_observation` for :class:`TeacherView` (SB3's ``env_method`` finds it through
      ``get_wrapper_attr``);
    - with ``stream_privileged_state`` on (off by default: it costs ~0.8-1.1 ms a step on 2 cores, a fifth of a
      PushCube step, mostly ManiSkill's ``is_grasping``), the privileged state of every step's and reset's
      observation in ``info[PRIVILEGED_STATE_INFO_KEY]``, so a vec env reads it without another round trip to
      its worker. It stays in a reset's info only until the next step: SB3's ``SubprocVecEnv`` worker sends its
      last reset info again with every step.
    """

    #: add the privileged state to every step and reset info (:data:`PRIVILEGED_STATE_INFO_KEY`)
    stream_privileged_state: bool = False

    def __init__(self, env: gym.Env, task: TaskSpec, seed: int | None = None):
        super().__init__(env)
        self.task = task
        self._pending_seed = seed
        self._reset_info: dict | None = None  # the last reset info holding the state (taken out at the next step)
        if seed is not None:
            self.action_space.seed(seed)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Gymnasium ``reset``; the first call without a seed uses the construction ``seed``."""
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        obs, info = self.env.reset(seed=seed, options=options)
        info["success"] = bool(info.get("success", False))
        if self.stream_privileged_state:
            info[PRIVILEGED_STATE_INFO_KEY] = privileged_state(self.env.unwrapped)[0]
            self._reset_info = info
        return obs, info

    def step(self, action):
        """Gymnasium ``step`` with python scalars and ``info["success"]`` (and ``is_success``) a bool."""
        if self._reset_info is not None:  # not pickled again with every step's message (SubprocVecEnv)
            self._reset_info.pop(PRIVILEGED_STATE_INFO_KEY, None)
            self._reset_info = None
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["success"] = info["is_success"] = bool(info.get("success", False))
        if self.stream_privileged_state:
            info[PRIVILEGED_STATE_INFO_KEY] = privileged_state(self.env.unwrapped)[0]
        return obs, float(reward), bool(terminated), bool(truncated), info

    def process_info(self) -> dict[str, int]:
        """``{"pid": ..., "torch_num_threads": ...}`` of the process this env runs in (debugging)."""
        import torch

        return {"pid": os.getpid(), "torch_num_threads": torch.get_num_threads()}

    def teacher_observation(self, with_image: bool) -> tuple[np.ndarray | None, np.ndarray, str, str]:
        """``(image (H, W, 3) uint8 or None, privileged state (38,) float32 (envs/privileged.py), instruction, env id)``
        of the current state. The image is rendered only when ``with_image`` is True.
        """
        base = self.env.unwrapped
        image = render_teacher_images(base)[0] if with_image else None
        return image, privileged_state(base)[0], self.task.instruction, self.task.env_id


def make_env(
    task: str | TaskSpec,
    seed: int | None = 0,
    render: bool = False,
    reward_mode: str | None = None,
    max_episode_steps: int | None = None,
    teacher_image_size: tuple[int, int] = (224, 224),
) -> RRLEnvWrapper:
    """One robot_rl env on the CPU sim, wrapped exactly like a :func:`make_vec_env` CPU worker.

    Args:
        task: env id (``"RRL-PushCube-Sparse-v1"``), paper name (``"PushCube-v2"``) or TaskSpec.
        seed: seed of the first ``reset()`` that is called without one (later resets draw
            episode seeds from ManiSkill's main RNG, so a run is reproducible); None = unseeded.
        render: ``render_mode="rgb_array"``: ``env.render()`` returns ``(H, W, 3) uint8`` from the
            teacher camera. (``teacher_observation(True)`` renders either way.)
        reward_mode: one of :data:`~robot_rl.envs.tasks.REWARD_MODES`; None = the TaskSpec's default.
        max_episode_steps: episode length, env steps; None = the TaskSpec's default.
        teacher_image_size: ``(H, W)`` pixels of the teacher camera.

    Returns:
        ``RRLEnvWrapper(CPUGymWrapper(gym.make(...)))``: numpy observations ``(D,) float32``
        (PushCube 35, PickCube 42), 7-D actions in [-1, 1] (``pd_ee_delta_pose``: xyz 0.1 m per
        unit, rotation 0.1 rad per unit with the sign inverted by the controller, upstream issue
        haosulab/ManiSkill#1469; gripper -1 closed, +1 open), float reward, ``terminated`` on
        success, ``truncated`` at ``max_episode_steps``.

    Raises:
        ValueError: unknown task or reward mode.
        RuntimeError: no Vulkan device (message points to ``bash scripts/setup.sh``).
    """
    from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper

    spec = get_task(task)
    kwargs = env_kwargs(
        reward_mode=reward_mode or spec.reward_mode,
        max_episode_steps=max_episode_steps or spec.max_episode_steps,
        teacher_image_size=teacher_image_size,
        render_mode="rgb_array" if render else None,
    )
    # enhanced_determinism: each reset draws a fresh episode seed from the env's main RNG
    # (seeded by the first reset) and seeds torch from it. Without it, ManiSkill's unseeded resets
    # (every auto-reset) take the cube position from the process-global torch RNG, which torch
    # seeds randomly per process: episodes 2+ were not reproducible for a given seed (measured).
    # (Only right with num_envs=1: on the GPU sim ManiSkill seeds torch from env 0's episode seed
    # on partial resets, see ManiSkillGPUVecEnv.)
    env = make_maniskill_env(spec.env_id, enhanced_determinism=True, **kwargs)
    # record_metrics=False: its info["episode"] collides with SB3's VecMonitor (FACTS.md).
    env = CPUGymWrapper(env, ignore_terminations=False, record_metrics=False)
    return RRLEnvWrapper(env, spec, seed=seed)


def _worker_env(
    task: TaskSpec,
    reward_mode: str,
    max_episode_steps: int,
    teacher_image_size: tuple[int, int],
    single_thread: bool,
) -> gym.Env:
    """Env factory run inside a worker process (or in this process for ``DummyVecEnv``)."""
    if single_thread:
        import torch

        # FACTS.md: without one thread per worker, 2 SubprocVecEnv workers ran >10x slower than
        # one process (each worker's torch grabs every core for the EE controller's tiny ops).
        torch.set_num_threads(1)
    # The VecEnv seeds the first reset (SB3 VecEnv.seed), so no seed here.
    return make_env(
        task,
        seed=None,
        render=True,
        reward_mode=reward_mode,
        max_episode_steps=max_episode_steps,
        teacher_image_size=teacher_image_size,
    )


class _TeacherViewMixin:
    """``teacher_view`` for SB3 vec envs whose sub-envs are :class:`RRLEnvWrapper` s, and the privileged-state
    cache that serves it without a worker round trip once :meth:`stream_privileged_states` is on.
    """

    task: TaskSpec
    teacher_image_size: tuple[int, int]
    sim_backend = "physx_cpu"
    #: env methods that leave the simulator's state as it is (others make the cached states stale)
    _READ_ONLY_METHODS = frozenset({"teacher_observation", "process_info"})

    def _init_state_cache(self) -> None:
        self._streaming = False
        self._states = np.zeros((self.num_envs, PRIVILEGED_STATE_DIM), dtype=np.float32)
        self._fresh = np.zeros(self.num_envs, dtype=bool)  # _states[i] is env i's current privileged state

    def stream_privileged_states(self, on: bool = True) -> None:
        """Have every sub-env return its privileged state with each step and reset
        (``info[PRIVILEGED_STATE_INFO_KEY]``), and serve ``teacher_view(indices, with_image=False)`` from the
        states so kept, with no round trip to the worker processes.

        Worth it when the states are read at every env step (the delayed interface's ``dp`` group, compensated
        targets: :class:`~robot_rl.interface.TeacherGroupVecEnv` turns it on). Measured on 2 cores (PushCube): a
        state costs its worker ~0.8-1.1 ms to compute (mostly ManiSkill's ``is_grasping``), either way; the round
        trip adds a message each way per worker and ~0.1-0.2 ms of this process's CPU per step, which the stream
        saves. Streamed, every step pays the state, so for reads on a fraction of the steps (``vlajs`` queries)
        leave it off. Until the next step or reset, views still go to the workers.
        """
        self._streaming = bool(on)
        self._fresh[:] = False
        super().set_attr("stream_privileged_state", self._streaming)

    def _keep_states(self, infos: Sequence[dict], dones: np.ndarray | None) -> None:
        """Cache each env's state of its current observation: from the step info, or after an automatic reset
        (``dones[i]``; the step info then holds the terminal state) from ``reset_infos[i]``.
        """
        for i in range(self.num_envs):
            info = self.reset_infos[i] if dones is None or dones[i] else infos[i]
            state = info.get(PRIVILEGED_STATE_INFO_KEY)
            self._fresh[i] = state is not None
            if state is not None:
                self._states[i] = state

    def reset(self):
        """SB3's ``reset``, keeping the streamed states of the first observations."""
        obs = super().reset()
        if self._streaming:
            self._keep_states(self.reset_infos, None)
        return obs

    def step_wait(self):
        """SB3's ``step_wait``, keeping the streamed states of the new observations."""
        obs, rewards, dones, infos = super().step_wait()
        if self._streaming:
            self._keep_states(infos, dones)
        return obs, rewards, dones, infos

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs):
        """SB3's ``env_method``; a method that may change an env's state makes its cached state stale."""
        if method_name not in self._READ_ONLY_METHODS:
            self._fresh[list(self._get_indices(indices))] = False
        return super().env_method(method_name, *method_args, indices=indices, **method_kwargs)

    def set_attr(self, attr_name: str, value, indices=None) -> None:
        """SB3's ``set_attr``; the cached states of ``indices`` go stale."""
        self._fresh[list(self._get_indices(indices))] = False
        return super().set_attr(attr_name, value, indices=indices)

    def teacher_view(self, indices: Sequence[int], with_image: bool = True) -> TeacherView:
        """The teacher's view of sub-envs ``indices`` (in that order).

        Renders the teacher camera only for ``indices`` and only when ``with_image`` is True;
        with :class:`CPUSubprocVecEnv` the workers render in parallel. The first image a process
        renders costs 4-9 s on lavapipe (pipeline set-up in the first ``camera.capture()``;
        measured), and again after every env of that process was closed; later 224x224 views
        take ~0.05 s. Call ``teacher_view(range(num_envs), True)`` once after creation to pay
        that up front. Without an image and with :meth:`stream_privileged_states` on, the states
        come from the last step's (or reset's) infos, with no call to the workers. Works through SB3
        ``VecEnvWrapper`` s such as ``VecNormalize`` (they forward unknown attributes); the states
        are raw privileged state, never normalized.

        Returns:
            :class:`TeacherView`: images ``(k, H, W, 3) uint8`` or None, ``k`` instructions,
            states ``(k, 38) float32``, ``k`` task ids.

        Raises:
            IndexError: an index outside ``[0, num_envs)``.
        """
        idx = check_view_indices(indices, self.num_envs)
        if not idx:
            return empty_view(self.teacher_image_size, with_image)
        if not with_image and self._fresh[idx].all():
            k = len(idx)
            return TeacherView(images=None, instructions=[self.task.instruction] * k, states=self._states[idx],
                               task_ids=[self.task.env_id] * k)
        results = self.env_method("teacher_observation", bool(with_image), indices=idx)
        images = np.stack([r[0] for r in results]) if with_image else None
        return TeacherView(
            images=images,
            instructions=[r[2] for r in results],
            states=np.stack([r[1] for r in results]).astype(np.float32, copy=False),
            task_ids=[r[3] for r in results],
        )


class CPUDummyVecEnv(_TeacherViewMixin, DummyVecEnv):
    """SB3 ``DummyVecEnv`` of robot_rl envs, all in this process (tests, ``num_envs=1``)."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]], task: TaskSpec, teacher_image_size: tuple[int, int]):
        self.task = task
        self.teacher_image_size = tuple(teacher_image_size)
        super().__init__(env_fns)
        self._init_state_cache()


class CPUSubprocVecEnv(_TeacherViewMixin, SubprocVecEnv):
    """SB3 ``SubprocVecEnv`` of robot_rl envs, one worker process per env (CPU sim).

    SB3 converts the gymnasium step to its VecEnv API in the worker: ``done = terminated or
    truncated``, ``info["TimeLimit.truncated"] = truncated and not terminated``, and on done
    ``info["terminal_observation"]`` then an automatic reset.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], task: TaskSpec, teacher_image_size: tuple[int, int],
                 start_method: str):
        self.task = task
        self.teacher_image_size = tuple(teacher_image_size)
        try:
            super().__init__(env_fns, start_method=start_method)
        except (EOFError, ConnectionError) as exc:
            raise RuntimeError(
                f"an env worker process died while creating {task.env_id} ({type(exc).__name__}); "
                "its traceback is printed above (stderr of the worker). If it says 'bootstrapping "
                "phase', the calling script lacks an `if __name__ == \"__main__\":` guard (workers "
                f"are started with {start_method!r}, which re-runs the main module)"
            ) from None
        self._init_state_cache()


def make_vec_env(
    task: str | TaskSpec,
    num_envs: int = 2,
    sim_backend: str = "physx_cpu",
    reward_mode: str | None = None,
    max_episode_steps: int | None = None,
    seed: int = 0,
    teacher_image_size: tuple[int, int] = (224, 224),
    in_process: bool = False,
    teacher_images: bool = True,
) -> VecEnv:
    """Vector env of ``num_envs`` copies of a robot_rl task for SB3.

    Observations ``(num_envs, D) float32`` (flattened ``obs_mode="state"``), actions
    ``(num_envs, 7)`` in [-1, 1] (``pd_ee_delta_pose``), rewards ``(num_envs,) float32``, dones
    on success (ManiSkill terminates on ``info["success"]``) or at ``max_episode_steps``
    (``info["TimeLimit.truncated"]`` True only then), auto-reset with
    ``info["terminal_observation"]``, and ``info["success"]`` a python bool in every info. Sub-env
    ``i``'s first episode is seeded with ``seed + i``. On ``physx_cpu`` later episodes draw their seeds from
    that, per env; on ``physx_cuda`` the first reset is one batched ManiSkill reset with the ``N`` seeds
    (ManiSkill seeds torch's RNG once, from the first, and draws every env's initial state from it in one batch),
    and each partial reset draws from torch's RNG seeded by the adapter's generator of ``seed``
    (:class:`ManiSkillGPUVecEnv`): a run is reproducible for a given ``seed`` on either backend, but env ``i`` of
    a GPU run does not see the episodes it would see alone with seed ``seed + i``.

    Measured here (2 cores, lavapipe, PushCube, random actions): 2 subprocess workers step
    ~230-360 env steps/s in total (one in-process env ~190/s, FACTS.md); worker start-up 3-6 s;
    a 224x224 teacher view ~0.05 s, but the first one in each worker process 4-9 s.

    Scripts must call this under ``if __name__ == "__main__":`` on ``physx_cpu`` with
    ``num_envs > 1``: the forkserver workers re-run the main module (see
    :data:`WORKER_START_METHOD`).

    Args:
        task: env id, paper name or :class:`TaskSpec` (:func:`robot_rl.envs.get_task`).
        num_envs: number of parallel envs.
        sim_backend: ``"physx_cpu"``: one process per env (SB3 ``SubprocVecEnv``, forkserver,
            one torch thread each) or all in this process with ``in_process=True`` (or
            ``num_envs=1``). ``"physx_cuda"``: :class:`ManiSkillGPUVecEnv`, all envs batched in
            one GPU sim (needs an NVIDIA GPU).
        reward_mode: one of :data:`~robot_rl.envs.tasks.REWARD_MODES`; None = the TaskSpec's default (sparse).
        max_episode_steps: episode length, env steps; None = the TaskSpec's default (50 for most tasks).
        seed: base seed.
        teacher_image_size: ``(H, W)`` pixels of the teacher camera for ``teacher_view``.
        in_process: CPU only: ``DummyVecEnv`` in this process instead of worker processes.
        teacher_images: ``physx_cuda`` only: False when no teacher view will ask for an image, so the batched env
            is made with ``render_backend="none"`` (:class:`ManiSkillGPUVecEnv`). The CPU workers keep their
            renderer (the render camera costs nothing until it renders).

    Returns:
        a VecEnv with ``teacher_view(indices, with_image) -> TeacherView`` and ``task``.

    Raises:
        ValueError: unknown task, sim backend or reward mode, or ``num_envs < 1``.
        RuntimeError: no Vulkan device (message points to ``bash scripts/setup.sh``).
    """
    spec = get_task(task)
    if sim_backend not in SIM_BACKENDS:
        raise ValueError(f"unknown sim_backend {sim_backend!r}; allowed: {', '.join(SIM_BACKENDS)}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    reward_mode = reward_mode or spec.reward_mode
    max_episode_steps = max_episode_steps or spec.max_episode_steps
    from .tasks import REWARD_MODES

    if reward_mode not in REWARD_MODES:
        raise ValueError(f"unknown reward_mode {reward_mode!r}; allowed: {', '.join(REWARD_MODES)}")

    if sim_backend == "physx_cuda":
        from .gpu_vec_env import ManiSkillGPUVecEnv

        venv: VecEnv = ManiSkillGPUVecEnv(
            spec,
            num_envs=num_envs,
            sim_backend=sim_backend,
            reward_mode=reward_mode,
            max_episode_steps=max_episode_steps,
            teacher_image_size=teacher_image_size,
            teacher_images=teacher_images,
        )
    else:
        check_render_device()
        import functools

        in_process = in_process or num_envs == 1
        # In-process envs leave this process's torch threads alone (the trainer owns them).
        env_fn = functools.partial(
            _worker_env, spec, reward_mode, max_episode_steps, tuple(teacher_image_size), not in_process
        )
        fns = [env_fn] * num_envs
        if in_process:
            venv = CPUDummyVecEnv(fns, spec, teacher_image_size)
        else:
            venv = CPUSubprocVecEnv(fns, spec, teacher_image_size, start_method=WORKER_START_METHOD)
    venv.seed(seed)
    return venv
