"""Shared helpers for the robot_rl.envs tests: the scripted teacher as a controller, a warm renderer."""

from __future__ import annotations

import numpy as np
import pytest


class _Scripted:
    """The project's :class:`~robot_rl.teachers.ScriptedTeacher` (``D = 1``) as a controller that reads
    one privileged state (``(38,)``, ``privileged_state``) and returns one ``pd_ee_delta_pose`` action ``(7,) float32``.
    """

    def __init__(self):
        from robot_rl.teachers import ScriptedTeacher, TeacherRequest

        self._teacher, self._request = ScriptedTeacher(control_period_steps=1), TeacherRequest

    def _act(self, state: np.ndarray, task: str) -> np.ndarray:
        req = self._request(instructions=[""], states=state[None].astype(np.float32), task_ids=[task])
        return self._teacher.act(req).actions[0]

    def action(self, state: np.ndarray, task: str) -> np.ndarray:
        """The teacher's action for ``task`` (env id or paper name; a 38-D state for the peg tasks)."""
        return self._act(state, task)

    def push_action(self, state: np.ndarray) -> np.ndarray:
        return self._act(state, "PushCube-v2")

    def pick_action(self, state: np.ndarray, t: int | None = None) -> np.ndarray:
        """``t`` is unused: the teacher infers its phase from the state."""
        return self._act(state, "PickCube-v2")


@pytest.fixture
def scripted():
    """Scripted controllers: ``scripted.push_action(state)`` / ``scripted.pick_action(state, t)``."""
    return _Scripted()


@pytest.fixture(scope="session")
def warm_renderer():
    """Keep one rendered env alive for the session: the first teacher image of a process costs
    4-9 s on lavapipe, and that is paid again whenever every env of the process was closed.
    """
    from robot_rl.envs import make_env

    env = make_env("PushCube-v2", seed=0, teacher_image_size=(32, 32))
    env.reset()
    env.teacher_observation(True)
    yield env
    env.close()
