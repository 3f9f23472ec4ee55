"""SB3 ``VecEnv`` adapter over ManiSkill's batched (GPU-sim) env.

ManiSkill 3.0.1 ships ``mani_skill/vector/wrappers/sb3.py``, but it loses the time limit when
wrapped around ``env.unwrapped``, crashes on dict observations and emits an ``episode`` info dict
every step (FACTS.md, upstream issue haosulab/ManiSkill#1404). This adapter does the SB3 VecEnv
contract itself on top of the batched ``BaseEnv``: time limit, partial auto-reset of only the done
envs, per-env ``terminal_observation``, ``TimeLimit.truncated`` and ``success``, numpy out.

It is written for ``physx_cuda`` (tensors live on the GPU; everything returned goes through
``.cpu().numpy()``) and tested on ``physx_cpu`` with ``num_envs=1``, which the batched API supports.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from .common import (
    SIM_BACKENDS,
    TeacherView,
    check_view_indices,
    empty_view,
    env_kwargs,
    make_maniskill_env,
    render_teacher_images,
)
from .tasks import REWARD_MODES, TaskSpec, get_task, privileged_state

__all__ = ["ManiSkillGPUVecEnv", "SB3_INFO_KEYS"]


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


#: info keys every env's info carries at every step: what SB3 reads (``is_success``, ``TimeLimit.truncated``;
#: ``terminal_observation`` is added where an episode ended) and the project's ``success`` (a python bool).
SB3_INFO_KEYS = ("success", "is_success", "TimeLimit.truncated")
#: the info of an env whose episode goes on (its values of :data:`SB3_INFO_KEYS`), copied for each such env
_RUNNING_INFO = dict.fromkeys(SB3_INFO_KEYS, False)
#: numpy dtype of each torch dtype an info column has had
_NUMPY_DTYPES: dict[torch.dtype, np.dtype] = {}


class _Columns:
    """Per-env columns of tensors packed into one ``(N, C) float32`` tensor on the device, so that the whole step
    crosses to the host in one copy (``torch.cat`` then one ``.cpu()``), and read back per column on the host.

    A column is ``(N,)`` or ``(N, ...)`` (flattened into several float32 columns and reshaped back) in its own
    dtype (bool, int32 elapsed steps, float32; float32 holds every int up to 2**24 exactly). Values that are not
    per-env (a python scalar, a 0-d tensor: ManiSkill's ``reconfigure``) stay as they are, one for every env.
    """

    def __init__(self, n: int, device: torch.device):
        self.n, self.device = n, device
        self._parts: list[torch.Tensor] = []
        self._layout: dict[str, tuple[int, int, tuple[int, ...], np.dtype]] = {}
        self.scalars: dict[str, Any] = {}
        self._width = 0

    def add(self, key: str, value: Any) -> None:
        """Add ``value`` under ``key``: an ``(N, ...)`` tensor or array becomes a column, anything else a scalar."""
        if not isinstance(value, torch.Tensor):
            arr = np.asarray(value)
            if arr.ndim == 0 or arr.shape[0] != self.n:
                self.scalars[key] = arr.item() if arr.ndim == 0 else arr
                return
            value = torch.as_tensor(arr)
        if value.ndim == 0 or value.shape[0] != self.n:
            self.scalars[key] = value.item() if value.ndim == 0 else _to_numpy(value)
            return
        flat = value.reshape(self.n, -1)
        dtype = _NUMPY_DTYPES.get(value.dtype)
        if dtype is None:
            dtype = _NUMPY_DTYPES[value.dtype] = torch.empty(0, dtype=value.dtype).numpy().dtype
        self._layout[key] = (self._width, flat.shape[1], tuple(value.shape[1:]), dtype)
        self._width += flat.shape[1]
        self._parts.append(flat if flat.device == self.device else flat.to(self.device))

    def tensor(self) -> torch.Tensor:
        """The packed ``(N, C) float32`` tensor on the device (a new tensor: later sim calls cannot change it).

        One ``torch.cat`` of the columns in their own dtypes: it promotes bool and int32 to float32 itself, so no
        cast runs per column (each torch op costs a few microseconds of dispatch or a kernel launch).
        """
        if not self._parts:
            return torch.zeros(self.n, 0, device=self.device)
        out = torch.cat(self._parts, 1)
        return out if out.dtype == torch.float32 else out.to(torch.float32)

    def read(self, host: np.ndarray) -> dict[str, np.ndarray]:
        """The columns of ``host`` (the packed tensor on the host), each ``(N, ...)`` in its own dtype."""
        return {key: host[:, o:o + w].reshape(self.n, *shape).astype(dtype, copy=False)
                for key, (o, w, shape, dtype) in self._layout.items()}

    @property
    def width(self) -> int:
        """Number of float32 columns ``C``."""
        return self._width


def _info_dicts(cols: dict[str, np.ndarray], scalars: dict[str, Any], rows: np.ndarray) -> list[dict[str, Any]]:
    """One info dict per row in ``rows``: python scalars of the ``(N,)`` columns, arrays of wider ones."""
    keys = list(cols)
    values = [cols[k][rows].tolist() if cols[k].ndim == 1 else list(cols[k][rows]) for k in keys]
    if not values:
        return [dict(scalars) for _ in rows]
    if not scalars:
        return [dict(zip(keys, row)) for row in zip(*values)]
    return [{**scalars, **dict(zip(keys, row))} for row in zip(*values)]


class ManiSkillGPUVecEnv(VecEnv):
    """``num_envs`` robot_rl envs batched in one ManiSkill sim, as an SB3 ``VecEnv``.

    Step semantics match the CPU path (:func:`robot_rl.envs.make_vec_env` with ``physx_cpu``):
    ``done = terminated (success) or truncated (elapsed_steps >= max_episode_steps)``;
    ``info["TimeLimit.truncated"] = truncated and not terminated``; done envs (only those) are
    reset in the same step and their last observation is in ``info["terminal_observation"]``
    (``(D,) float32``); ``info["success"]`` is a python bool; rewards are ``(num_envs,) float32``
    (the sparse reward arrives as ``torch.bool``). ManiSkill's ``evaluate()`` values (e.g.
    PickCube's ``is_grasped``) and ``elapsed_steps`` are copied as python scalars into the infos of envs whose
    episode ended, and into every env's info when :attr:`full_infos` is on (by default with one env); the infos
    of running envs hold only :data:`SB3_INFO_KEYS` (all False), which is what SB3 reads (issue 17: building
    every env's full info cost ~2 ms a step at 1024 envs). The step's tensors, and those of the partial reset,
    cross to the host in one copy (:class:`_Columns`).

    Seeding: ``seed(s)`` then ``reset()`` seeds sub-env ``i`` with ``s + i`` (the SB3 convention).
    Partial resets draw a fresh seed for torch's global RNG from a generator seeded by ``s``,
    inside ``torch.random.fork_rng`` so the trainer's RNG is untouched. We do not use ManiSkill's
    ``enhanced_determinism`` here: on a partial reset it seeds torch with env 0's episode seed
    (``BaseEnv.reset`` uses ``_episode_seed[0]``), which stays the same while env 0 runs on, so
    every partial reset of the other envs would replay the same cube positions.

    Args:
        task: env id, paper name or TaskSpec.
        num_envs: number of batched envs (``physx_cpu`` supports only 1).
        sim_backend: ``"physx_cuda"`` (NVIDIA GPU) or ``"physx_cpu"`` (tests, ``num_envs=1``).
        reward_mode, max_episode_steps: None = the TaskSpec's default.
        teacher_image_size: ``(H, W)`` of the teacher camera.
        teacher_images: whether teacher views will ever need images. False makes the ManiSkill env with
            ``render_backend="none"`` (no render system for the 1024 sub-scenes, no GPU render memory; issue 17)
            and ``teacher_view(..., with_image=True)`` then raises.

    Raises:
        ValueError: unknown task/backend/reward mode, or ``physx_cpu`` with ``num_envs != 1``.
        RuntimeError: ``physx_cuda`` without CUDA, or no Vulkan device (the message says which driver:
            NVIDIA's Vulkan ICD on ``physx_cuda``, lavapipe via scripts/setup.sh on ``physx_cpu``).
    """

    def __init__(
        self,
        task: str | TaskSpec,
        num_envs: int,
        sim_backend: str = "physx_cuda",
        reward_mode: str | None = None,
        max_episode_steps: int | None = None,
        teacher_image_size: tuple[int, int] = (224, 224),
        teacher_images: bool = True,
    ):
        spec = get_task(task)
        if sim_backend not in SIM_BACKENDS:
            raise ValueError(f"unknown sim_backend {sim_backend!r}; allowed: {', '.join(SIM_BACKENDS)}")
        if sim_backend == "physx_cpu" and num_envs != 1:
            raise ValueError("sim_backend 'physx_cpu' runs one env per process: use num_envs=1, or make_vec_env")
        if sim_backend == "physx_cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "sim_backend 'physx_cuda' needs an NVIDIA GPU with CUDA, and torch sees none; "
                "use sim_backend='physx_cpu' (one process per env)"
            )
        reward_mode = reward_mode or spec.reward_mode
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"unknown reward_mode {reward_mode!r}; allowed: {', '.join(REWARD_MODES)}")
        max_episode_steps = int(max_episode_steps or spec.max_episode_steps)
        env = make_maniskill_env(
            spec.env_id,
            **env_kwargs(
                reward_mode=reward_mode,
                max_episode_steps=max_episode_steps,
                teacher_image_size=teacher_image_size,
                sim_backend=sim_backend,
                num_envs=num_envs,
                render=teacher_images,
            ),
        )
        self._setup(env, spec, sim_backend, max_episode_steps, teacher_image_size, teacher_images)

    @classmethod
    def from_env(
        cls,
        env: Any,
        task: str | TaskSpec,
        max_episode_steps: int | None = None,
        teacher_image_size: tuple[int, int] = (224, 224),
    ) -> "ManiSkillGPUVecEnv":
        """Adapt an already made batched env (``gym.make(env_id, num_envs=N, obs_mode="state", ...)``)
        of ``task``; ``teacher_image_size`` must match the human-render camera it was made with.
        """
        self = cls.__new__(cls)
        spec = get_task(task)
        backend = getattr(getattr(env.unwrapped, "backend", None), "sim_backend", "physx_cuda")
        self._setup(env, spec, backend, int(max_episode_steps or spec.max_episode_steps), teacher_image_size)
        return self

    def _setup(self, env: Any, spec: TaskSpec, sim_backend: str, max_episode_steps: int, teacher_image_size,
               teacher_images: bool = True) -> None:
        self.task = spec
        self.teacher_images = bool(teacher_images)
        self.sim_backend = sim_backend
        self.max_episode_steps = max_episode_steps
        self.teacher_image_size = tuple(int(x) for x in teacher_image_size)
        self._env = env
        # The time limit is applied here on base.elapsed_steps, not by ManiSkill's TimeLimitWrapper
        # (issue #1404: it is lost when wrapping env.unwrapped).
        self._base = env.unwrapped
        self._device = torch.device(self._base.device)
        self._reset_rng = np.random.default_rng()
        self._actions: torch.Tensor | None = None
        #: copy the step's evaluate() values into every env's info at every step (as one-env evaluation reads
        #: ``is_obj_placed`` at each step), not only into the infos of episodes that ended: on by default for one
        #: env. At 1024 envs those dicts cost ~0.4 ms a step (benchmarks/gpu_adapter_overhead.py).
        self.full_infos = self._base.num_envs == 1
        super().__init__(self._base.num_envs, self._base.single_observation_space, self._base.single_action_space)

    # --------------------------------------------------------------------------------------- #
    # VecEnv API
    # --------------------------------------------------------------------------------------- #
    @property
    def unwrapped_env(self):
        """The batched ManiSkill ``BaseEnv``."""
        return self._base

    def _fork_rng_reset(self, **kwargs: Any):
        devices = [self._device] if self._device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            # The generators ManiSkill's reset draws from (torch's default ones on the CPU and on the sim's device).
            # Not torch.manual_seed: with CUDA not initialized it queues a lazy CUDA/XPU/MTIA seeding with a
            # formatted stack trace, ~0.5 ms a reset (measured, benchmarks/gpu_adapter_overhead.py).
            seed = int(self._reset_rng.integers(2**31))
            torch.default_generator.manual_seed(seed)
            if self._device.type == "cuda":
                index = self._device.index if self._device.index is not None else torch.cuda.current_device()
                torch.cuda.default_generators[index].manual_seed(seed)
            return self._base.reset(**kwargs)

    def reset(self) -> VecEnvObs:
        """Reset every env (seeded by ``seed()`` if it was called); ``(num_envs, D) float32``."""
        seeds = self._seeds
        if all(s is not None for s in seeds):
            self._reset_rng = np.random.default_rng([int(s) for s in seeds])
            # BaseEnv.reset seeds torch inside fork_rng itself when given seeds.
            obs, info = self._base.reset(seed=[int(s) for s in seeds])
        else:
            obs, info = self._fork_rng_reset()
        self._reset_seeds()
        self._reset_options()
        cols = self._info_columns(info)
        d = self.observation_space.shape[0]
        cols.add("__obs", torch.as_tensor(obs).reshape(self.num_envs, d))
        host = cols.read(cols.tensor().cpu().numpy())
        self.reset_infos = _info_dicts(self._with_success(host), cols.scalars, np.arange(self.num_envs))
        return host["__obs"].astype(np.float32)

    def step_async(self, actions: np.ndarray) -> None:
        """Store ``(num_envs, 7)`` actions (numpy or torch) for :meth:`step_wait`."""
        if not isinstance(actions, torch.Tensor):
            actions = np.asarray(actions)
        act = torch.as_tensor(actions, dtype=torch.float32, device=self._device)
        self._actions = act.reshape(self.num_envs, -1)

    def step_wait(self) -> VecEnvStepReturn:
        """Step the batch; done envs are reset in place and their infos carry ``terminal_observation``.

        Every env's info has :data:`SB3_INFO_KEYS`; the infos of envs whose episode ended also have the step's
        ``evaluate()`` values (python scalars; every env's info has them with :attr:`full_infos`) and
        ``terminal_observation`` ``(D,) float32``, and ``reset_infos[i]`` their reset's info. The only Python
        loops over envs build the info dicts from host columns (one dict literal per env; full dicts for the
        ended ones), and the step, with its partial reset, crosses from the device in one copy.
        """
        assert self._actions is not None, "step_async must be called before step_wait"
        obs, reward, terminated, _, info = self._base.step(self._actions)
        self._actions = None
        n, d = self.num_envs, self.observation_space.shape[0]
        terminated = torch.as_tensor(terminated, device=self._device).reshape(n).bool()
        truncated = self._base.elapsed_steps.reshape(n) >= self.max_episode_steps
        dones_t = terminated | truncated
        step = self._info_columns(info)
        step.add("__obs", torch.as_tensor(obs).reshape(n, d))
        step.add("__reward", torch.as_tensor(reward).reshape(n))
        step.add("__done", dones_t)
        step.add("TimeLimit.truncated", truncated & ~terminated)
        packed = step.tensor()  # a copy on the device, before the reset below changes the sim's tensors
        reset = None
        if bool(dones_t.any()):  # one flag crosses here (the partial reset needs it)
            reset_obs, reset_info = self._fork_rng_reset(options=dict(env_idx=torch.nonzero(dones_t).flatten()))
            reset = self._info_columns(reset_info)
            reset.add("__obs", torch.as_tensor(reset_obs).reshape(n, d))
            packed = torch.cat([packed, reset.tensor()], 1)
        host = packed.cpu().numpy()  # the one device-to-host copy of the step
        cols = self._with_success(step.read(host[:, :step.width]))
        obs_np = cols.pop("__obs").astype(np.float32)
        rewards = cols.pop("__reward").astype(np.float32)
        dones = cols.pop("__done")
        if self.full_infos:
            infos = _info_dicts(cols, step.scalars, np.arange(n))
        else:  # an env whose episode goes on has not succeeded (success terminates) nor hit its time limit
            infos = list(map(dict.copy, itertools.repeat(_RUNNING_INFO, n)))  # a fresh dict each, copied in C
        if reset is not None:
            done_idx = np.flatnonzero(dones)
            if not self.full_infos:  # an ended episode's info has all of its last step's values
                for i, full in zip(done_idx, _info_dicts(cols, step.scalars, done_idx)):
                    infos[i] = full
            rcols = reset.read(host[:, step.width:])
            new_obs = rcols.pop("__obs").astype(np.float32)
            terminal = obs_np[done_idx]  # one copy; each info holds a row of it
            for i, term, reset_info in zip(done_idx, terminal,
                                           _info_dicts(self._with_success(rcols), reset.scalars, done_idx)):
                infos[i]["terminal_observation"] = term
                self.reset_infos[i] = reset_info
            # reset() returns observations of all envs; keep the stepped ones for the others.
            obs_np[done_idx] = new_obs[done_idx]
        return obs_np, rewards, dones, infos

    def _info_columns(self, info: dict) -> _Columns:
        """The batched ManiSkill ``info`` as :class:`_Columns` (``success`` always there, False without one)."""
        cols = _Columns(self.num_envs, self._device)
        for key, value in info.items():
            cols.add(key, value)
        if "success" not in info:
            cols.add("success", torch.zeros(self.num_envs, dtype=torch.bool, device=self._device))
        return cols

    @staticmethod
    def _with_success(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``cols`` with ``success`` as bools and the same column as SB3's ``is_success``."""
        cols["success"] = cols["success"].astype(bool).reshape(-1)
        cols["is_success"] = cols["success"]
        return cols

    def close(self) -> None:
        """Close the batched ManiSkill env."""
        self._env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute of the one batched env (or of this adapter), once per index."""
        value = getattr(self._base, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Sets the attribute on the one batched env (shared by all indices)."""
        setattr(self._base, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Calls the method ONCE on the batched env and returns its result once per index."""
        result = getattr(self._base, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """Always False: the one batched env has no per-env gymnasium wrappers."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Teacher-camera images of all envs, ``(H, W, 3) uint8`` each.

        Raises:
            RuntimeError: made with ``teacher_images=False`` (no renderer).
        """
        self._check_images()
        return list(render_teacher_images(self._base))

    def _check_images(self) -> None:
        if not self.teacher_images:
            raise RuntimeError("this ManiSkillGPUVecEnv was made with teacher_images=False (render_backend='none'): "
                               "it renders no image; make it with teacher_images=True for a teacher that needs one")

    # --------------------------------------------------------------------------------------- #
    # Teacher view
    # --------------------------------------------------------------------------------------- #
    def stream_privileged_states(self, on: bool = True) -> None:
        """Nothing to do here: :meth:`teacher_view` reads the states from the batched sim in this process, with no
        worker round trip to save (the CPU vec envs' method of this name streams them from their workers).
        """

    def teacher_view(self, indices: Sequence[int], with_image: bool = True) -> TeacherView:
        """The teacher's view of sub-envs ``indices`` (in that order).

        On ``physx_cuda`` ManiSkill 3.0.1's parallel renderer captures all sub-scenes in one call (it has no
        per-scene capture), so the render cost does not shrink with ``len(indices)``; only the requested rows are
        copied to the host. Nothing is rendered when ``with_image`` is False.

        Returns:
            :class:`TeacherView`: images ``(k, H, W, 3) uint8`` or None, states ``(k, 38) float32``.

        Raises:
            IndexError: an index outside ``[0, num_envs)``.
            RuntimeError: ``with_image`` on an adapter made with ``teacher_images=False``.
        """
        if with_image:
            self._check_images()
        idx = check_view_indices(indices, self.num_envs)
        if not idx:
            return empty_view(self.teacher_image_size, with_image)
        k = len(idx)
        states = privileged_state(self._base)[idx]
        images = render_teacher_images(self._base, idx) if with_image else None
        return TeacherView(
            images=images,
            instructions=[self.task.instruction] * k,
            states=states,
            task_ids=[self.task.env_id] * k,
        )
