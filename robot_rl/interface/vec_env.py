"""The vec-env wrapper that moves guidance on at every env step and appends the ``teacher`` and ``memory``
observation groups.

:class:`TeacherGroupVecEnv` sits between the task's vec env (with its episode statistics) and the observation
normalization: ``VecNormalize(TeacherGroupVecEnv(VecMonitor(vec env)))``. At every ``step_wait`` it tells the
:class:`~robot_rl.guidance.Guidance` component that one env step has passed (episodes that ended, the
privileged states of the new observations when the ``dp`` feature or compensated targets need them; the vec env then
returns them with every step, ``stream_privileged_states``), so the answers due now are delivered *before* the
policy sees the new observation, and it appends the ``teacher`` group (:mod:`robot_rl.interface.delayed`) and the
``memory`` group (guidance's scratchpad, :mod:`robot_rl.memory`) to each observation in the run's schema order
(``state``, ``teacher``, ``memory``; :mod:`robot_rl.observation`).
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

__all__ = ["TeacherGroupVecEnv"]


class TeacherGroupVecEnv(VecEnvWrapper):
    """Appends the ``teacher`` group to a vec env's observations and drives guidance one env step at a time.

    Args:
        venv: the task's vec env (``teacher_view`` forwarded through wrappers).
        guidance: the run's :class:`~robot_rl.guidance.Guidance` (its ``teacher_group`` may be None: then the
            observations pass unchanged and only guidance is moved on).
        drive_queries: also ask guidance to query (:meth:`~robot_rl.guidance.Guidance.prepare`) for every new
            observation: for evaluation and teacher-as-policy runs, whose rollout loop resets an env itself when
            its episode ends (:func:`robot_rl.rollout.rollout`: the auto-reset observation is not queried). In
            training GuidedPPO's callback does it (it stores each step's targets first).

    The terminal observation of an episode (SB3's ``info["terminal_observation"]``) gets the ``teacher`` group of
    that episode's last step before it ended (its privileged state is gone once the env has reset: the ``dt`` and
    ``dp`` of that one observation are one step old).
    """

    def __init__(self, venv: VecEnv, guidance, drive_queries: bool = False):
        self.guidance = guidance
        self.drive_queries = bool(drive_queries)
        group = guidance.teacher_group
        self.teacher_size = group.size if group is not None else 0
        memory = getattr(guidance, "memory_group", None)
        self.extra = self.teacher_size + (memory.size if memory is not None else 0)
        self.needs_states = bool(group is not None and any(f.name.startswith("dp") for f in group.fields)) or bool(
            guidance.compensate)
        space = venv.observation_space
        if self.extra:
            low = np.concatenate([np.broadcast_to(space.low, space.shape), np.full(self.extra, -np.inf)])
            high = np.concatenate([np.broadcast_to(space.high, space.shape), np.full(self.extra, np.inf)])
            space = spaces.Box(low=low.astype(np.float32), high=high.astype(np.float32), dtype=np.float32)
        super().__init__(venv, observation_space=space)
        self._last = np.zeros((venv.num_envs, self.extra), dtype=np.float32)
        if self.needs_states:  # read at every env step: have them come with each step, not by a round trip
            venv.stream_privileged_states(True)
            # bound once: each lookup through the wrappers' __getattr__ walks the whole wrapper chain
            self._teacher_view = venv.teacher_view

    def _states(self) -> np.ndarray | None:
        if not self.needs_states:
            return None
        return self._teacher_view(range(self.num_envs), with_image=False).states

    def _with_group(self, obs: np.ndarray, states: np.ndarray | None) -> np.ndarray:
        if not self.extra:
            return obs
        parts = [self.guidance.teacher_features(states)] if self.teacher_size else []
        if self.extra > self.teacher_size:
            parts.append(self.guidance.memory_features())
        feats = np.concatenate(parts, axis=1).astype(np.float32)
        self._last = feats
        return np.concatenate([np.asarray(obs, dtype=np.float32), feats], axis=1)

    def reset(self):
        """Reset every env and guidance (no hints, nothing in flight); the first observations with their group."""
        obs = self.venv.reset()
        states = self._states()
        self.guidance.reset(states)
        out = self._with_group(obs, states)
        if self.drive_queries:
            self.guidance.prepare(self)
        return out

    def step_wait(self):
        """One env step: guidance moves on (deliveries due now), then the new observations get their group."""
        obs, rewards, dones, infos = self.venv.step_wait()
        last = self._last
        states = self._states()
        self.guidance.advance(dones, states)
        if self.extra:
            for i in np.flatnonzero(dones):
                term = infos[i].get("terminal_observation")
                if term is not None:
                    infos[i]["terminal_observation"] = np.concatenate([np.asarray(term, dtype=np.float32), last[i]])
        out = self._with_group(obs, states)
        if self.drive_queries:  # an env whose episode just ended is queried when the caller resets it
            self.guidance.prepare(self, skip=dones)
        return out, rewards, dones, infos

    def close(self) -> None:
        """Close guidance's worker thread (if any) and the vec env."""
        self.guidance.close()
        self.venv.close()
