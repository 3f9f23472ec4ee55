"""One rollout loop for every job that runs something as the policy, episode by episode, without learning.

Three jobs use it (DESIGN.md, "One owner per piece of state"):

* evaluating a trained policy (:func:`robot_rl.trainer.evaluate`, ``robot-rl eval``);
* running a teacher as the policy to measure its competence (:func:`robot_rl.teachers.evaluate.run_teacher_as_policy`);
* the sim bridge's direct evaluation of an exported ONNX policy, the reference for a ROS run
  (:func:`robot_rl.deploy.sim_bridge.evaluate_direct`).

The loop runs a one-env SB3 ``VecEnv`` of a robot_rl task (``robot_rl.envs.make_vec_env(..., num_envs=1)``,
possibly inside ``VecNormalize``), resets episode ``k`` with seed ``seed + k`` (so every job sees the same
scenes for the same seed), and asks an :class:`Actor` for each action. Per episode it records success, return
and length, and two diagnostics of grasping tasks read from the privileged state
(:data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT`): whether the gripper held the task's object, and the closest
TCP-object distance; and, for tasks whose ManiSkill ``evaluate()`` reports ``is_obj_placed`` and
``is_robot_static`` (PickCube, PickPlaceCube), whether the object reached the goal and how often the arm was
static while it was there (PickCube's success needs both).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from robot_rl.envs.privileged import PRIVILEGED_STATE_LAYOUT as _LAYOUT

__all__ = ["Actor", "EpisodeResult", "RolloutResult", "rollout", "rollout_batched"]

#: Video labels (:meth:`RolloutResult.labelled_frames`): the font is a frame's height over this many lines (a
#: 224 px teacher frame gets 14 px text), never under ``_MIN_LABEL_PX``; text and its box sit this far in, px.
_LABEL_LINES_PER_FRAME = 16
_MIN_LABEL_PX = 9
_LABEL_MARGIN_PX = 3


class Actor(Protocol):
    """What the loop asks for actions.

    ``reset()`` is called at the start of every episode; ``act(obs, view)`` gets the vec env's observation
    ``(1, D) float32`` (normalized if the vec env normalizes) and the teacher view of the current step
    (:class:`robot_rl.envs.TeacherView`: privileged state ``(1, 38)``, instruction, task id, and the image
    when the loop renders one) and returns a ``(1, 7)`` action in ``[-1, 1]``.
    """

    def reset(self) -> None:
        """Called at the start of every episode."""

    def act(self, obs: np.ndarray, view) -> np.ndarray:
        """``(1, D) float32`` observation and the step's teacher view -> ``(1, 7)`` action in ``[-1, 1]``."""


@dataclass
class EpisodeResult:
    """One episode of a rollout.

    Attributes:
        seed: the episode's reset seed.
        success: the task's success at the last step (ManiSkill ends an episode on success).
        ret: undiscounted return.
        length: env steps.
        grasped: the gripper held the task's object (``is_grasped``) at some step but the first (ManiSkill
            can carry the flag over from the previous episode for one step).
        closest_m: the closest TCP-object distance over the episode's steps but the first, m.
        placed: the object was at the goal (``info["is_obj_placed"]``) at some step; None for a task that does
            not report it.
        static_when_placed: fraction of the placed steps at which the arm was static (``is_robot_static``);
            None when never placed or not reported.
    """

    seed: int
    success: bool
    ret: float
    length: int
    grasped: bool
    closest_m: float
    placed: bool | None = None
    static_when_placed: float | None = None


@dataclass
class RolloutResult:
    """All episodes of a rollout, and the frames if a video was asked for."""

    episodes: list[EpisodeResult]
    frames: list[np.ndarray] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        """Fraction of the episodes that ended in success."""
        return float(np.mean([e.success for e in self.episodes]))

    def summary(self) -> dict:
        """``{"success_rate", "mean_return", "mean_length", "grasp_rate", "mean_closest_approach_m"}``, plus
        ``"placed_rate"`` and ``"static_when_placed"`` (mean over the placed episodes) for a task that reports them.
        """
        eps = self.episodes
        closest = [e.closest_m for e in eps if np.isfinite(e.closest_m)]
        out = {
            "success_rate": self.success_rate,
            "mean_return": float(np.mean([e.ret for e in eps])),
            "mean_length": float(np.mean([e.length for e in eps])),
            "grasp_rate": float(np.mean([e.grasped for e in eps])),
            "mean_closest_approach_m": float(np.mean(closest)) if closest else float("nan"),
        }
        if any(e.placed is not None for e in eps):
            static = [e.static_when_placed for e in eps if e.static_when_placed is not None]
            out["placed_rate"] = float(np.mean([bool(e.placed) for e in eps]))
            out["static_when_placed"] = float(np.mean(static)) if static else float("nan")
        return out

    def per_episode(self) -> list[dict]:
        """One dict of :class:`EpisodeResult`'s fields per episode."""
        return [asdict(e) for e in self.episodes]

    def labelled_frames(self) -> list[np.ndarray]:
        """:attr:`frames`, each with its episode written in its top-left corner (PIL ``ImageDraw``, Pillow's
        default scalable font): episode index and reset seed, the step in the episode, and the episode's return and
        outcome (success or failure: known at its end, shown on all of its frames).

        Returns:
            New ``(H, W, 3) uint8`` frames, one per frame of :attr:`frames` (the rollout keeps one per env step, so
            episode ``k``'s are the ``episodes[k].length`` frames after those of the episodes before it).

        Raises:
            ValueError: the frames do not add up to the episodes' lengths (no video was recorded).
        """
        from PIL import Image, ImageDraw, ImageFont

        lengths = [e.length for e in self.episodes]
        if len(self.frames) != sum(lengths):
            raise ValueError(f"{len(self.frames)} frames for episodes of {sum(lengths)} env steps in all: "
                             "record the rollout with video=True")
        height = self.frames[0].shape[0] if self.frames else 0
        font = ImageFont.load_default(size=max(_MIN_LABEL_PX, height // _LABEL_LINES_PER_FRAME))
        out, i = [], 0
        for k, episode in enumerate(self.episodes):
            outcome = "success" if episode.success else "failure"
            for t in range(episode.length):
                image = Image.fromarray(np.ascontiguousarray(self.frames[i], dtype=np.uint8))
                text = (f"episode {k + 1}/{len(self.episodes)}  seed {episode.seed}\n"
                        f"step {t + 1}/{episode.length}\nreturn {episode.ret:.2f}  {outcome}")
                draw = ImageDraw.Draw(image)
                box = draw.multiline_textbbox((_LABEL_MARGIN_PX, _LABEL_MARGIN_PX), text, font=font)
                draw.rectangle((0, 0, box[2] + _LABEL_MARGIN_PX, box[3] + _LABEL_MARGIN_PX), fill=(0, 0, 0))
                draw.multiline_text((_LABEL_MARGIN_PX, _LABEL_MARGIN_PX), text, font=font,
                                    fill=(80, 220, 80) if episode.success else (255, 255, 255))
                out.append(np.asarray(image))
                i += 1
        return out

    def save_video(self, path: str | Path, fps: int = 20) -> None:
        """Write :meth:`labelled_frames` as an MP4 (imageio's ffmpeg writer) at ``fps`` frames per second (the
        control rate, 20 Hz, plays the episodes in real time); makes the parent directory.

        Raises:
            ValueError: no frames were recorded (see :meth:`labelled_frames`).
        """
        import imageio

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        imageio.mimsave(str(path), self.labelled_frames(), fps=fps)


def rollout(venv, actor: Actor, episodes: int, seed: int, *, video: bool = False,
            on_episode: Callable[[EpisodeResult], None] | None = None,
            realtime_period_s: float | None = None) -> RolloutResult:
    """Run ``actor`` for ``episodes`` episodes in a one-env vec env.

    Args:
        venv: an SB3 ``VecEnv`` with one robot_rl env and ``teacher_view`` (wrappers such as ``VecNormalize``
            forward it).
        actor: gives the actions (:class:`Actor`).
        episodes: number of episodes (>= 1).
        seed: episode ``k`` is reset with seed ``seed + k``.
        video: keep the teacher camera's RGB frame of every step (``RolloutResult.frames``).
        on_episode: called with each finished episode (a progress bar, a log line).
        realtime_period_s: step no faster than one env step per this many wall-clock seconds (the control
            period, 0.05 s), so an asynchronous teacher's wall-clock latency is as many env steps as on the robot;
            ``None``: as fast as the simulator goes.

    Returns:
        :class:`RolloutResult`.

    Raises:
        ValueError: ``episodes < 1`` or a vec env of more than one env.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if venv.num_envs != 1:
        raise ValueError(f"rollout runs a vec env of 1 env, got {venv.num_envs}")
    grasp_col, tcp, obj = _LAYOUT["is_grasped"].start, _LAYOUT["tcp_pos"], _LAYOUT["obj_pos"]
    out = RolloutResult([])
    next_step_s = time.monotonic()
    for k in range(episodes):
        venv.seed(seed + k)
        obs = venv.reset()
        actor.reset()
        done, ret, length, grasped, closest, info = False, 0.0, 0, False, np.inf, {}
        placed_steps = static_steps = 0
        reports_placed = False
        while not done:
            view = venv.teacher_view([0], with_image=video)
            if video:
                out.frames.append(view.images[0])
            if length > 0:
                state = view.states[0]
                grasped = grasped or bool(state[grasp_col] > 0.5)
                closest = min(closest, float(np.linalg.norm(state[tcp] - state[obj])))
            action = np.asarray(actor.act(obs, view), dtype=np.float32).reshape(1, -1)
            if realtime_period_s is not None:
                next_step_s = max(next_step_s + realtime_period_s, time.monotonic())
                time.sleep(max(next_step_s - time.monotonic(), 0.0))
            obs, reward, dones, infos = venv.step(action)
            ret += float(reward[0])
            length += 1
            done, info = bool(dones[0]), infos[0]
            if "is_obj_placed" in info:
                reports_placed = True
                if info["is_obj_placed"]:
                    placed_steps += 1
                    static_steps += bool(info.get("is_robot_static", False))
        result = EpisodeResult(seed + k, bool(info.get("success", False)), ret, length, grasped, closest,
                               placed=(placed_steps > 0) if reports_placed else None,
                               static_when_placed=static_steps / placed_steps if placed_steps else None)
        out.episodes.append(result)
        if on_episode is not None:
            on_episode(result)
    return out


def rollout_batched(venv, actor: Actor, episodes: int, seed: int) -> RolloutResult:
    """Run ``actor`` for ``episodes`` episodes at once, one per env of a batched vec env (issue 17, item 6).

    The batched counterpart of :func:`rollout` for ``physx_cuda`` (where a one-env PegInsertionSide rebuilds its
    scene at every reset): env ``i`` of ``venv`` (``num_envs == episodes``) runs episode ``i`` from reset seed
    ``seed + i`` (``venv.seed(seed)`` then ``venv.reset()``: :class:`~robot_rl.envs.ManiSkillGPUVecEnv` passes
    ``seed=[seed + i for i in range(N)]`` to ManiSkill's ``BaseEnv.reset``, one seed per sub-scene,
    ``mani_skill/envs/sapien_env.py``), so the episodes have the seeds of the sequential loop. Each env's first
    episode is recorded, with the same per-episode results as :func:`rollout` (the step's ``is_grasped`` and
    TCP-object distance at every step but the first, ``is_obj_placed`` / ``is_robot_static`` from every step's
    info, success from the info of its last step); the episodes SB3's auto-reset starts after it are stepped but
    ignored. The loop ends when every env's first episode has ended (at most the horizon).

    What it does not do, so callers keep :func:`rollout` for it: video (one frame per step of one env), a
    wall-clock step rate, and actors that keep per-episode state (a recurrent policy's LSTM, a teacher group with
    delayed answers, memory): :meth:`Actor.reset` is called once, for all envs, before the first step.

    Args:
        venv: an SB3 ``VecEnv`` of ``episodes`` robot_rl envs with ``teacher_view`` (wrappers such as
            ``VecNormalize`` forward it). An adapter's ``full_infos`` (``venv.unwrapped``) is turned on, so the
            infos of running envs carry ``is_obj_placed``.
        actor: gives the actions: ``act(obs (N, D) float32, view of all N envs)`` -> ``(N, 7)`` in ``[-1, 1]``.
        episodes: ``N``, number of episodes (>= 1).
        seed: env ``i`` is reset with seed ``seed + i``.

    Returns:
        :class:`RolloutResult` of ``N`` episodes in seed order, no frames.

    Raises:
        ValueError: ``episodes < 1`` or ``venv.num_envs != episodes``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    n = int(venv.num_envs)
    if n != episodes:
        raise ValueError(f"rollout_batched runs one episode per env: {episodes} episodes need {episodes} envs, "
                         f"got {n}")
    base = getattr(venv, "unwrapped", venv)
    if hasattr(base, "full_infos"):
        base.full_infos = True
    grasp_col, tcp, obj = _LAYOUT["is_grasped"].start, _LAYOUT["tcp_pos"], _LAYOUT["obj_pos"]
    rows = list(range(n))
    venv.seed(seed)
    obs = venv.reset()
    actor.reset()
    running = np.ones(n, dtype=bool)  # still in its first episode
    ret = np.zeros(n, dtype=np.float64)
    length = np.zeros(n, dtype=np.int64)
    grasped = np.zeros(n, dtype=bool)
    closest = np.full(n, np.inf)
    placed_steps = np.zeros(n, dtype=np.int64)
    static_steps = np.zeros(n, dtype=np.int64)
    reports_placed = np.zeros(n, dtype=bool)
    success = np.zeros(n, dtype=bool)
    while running.any():
        view = venv.teacher_view(rows, with_image=False)
        seen = running & (length > 0)
        states = np.asarray(view.states)
        grasped |= seen & (states[:, grasp_col] > 0.5)
        dist = np.linalg.norm(states[:, tcp] - states[:, obj], axis=1)
        closest = np.where(seen, np.minimum(closest, dist), closest)
        action = np.asarray(actor.act(obs, view), dtype=np.float32).reshape(n, -1)
        obs, reward, dones, infos = venv.step(action)
        ret += np.where(running, np.asarray(reward, dtype=np.float64).reshape(n), 0.0)
        length += running
        for i in np.flatnonzero(running):  # the envs' infos are dicts (SB3's VecEnv contract)
            info = infos[i]
            if "is_obj_placed" in info:
                reports_placed[i] = True
                if info["is_obj_placed"]:
                    placed_steps[i] += 1
                    static_steps[i] += bool(info.get("is_robot_static", False))
            if dones[i]:
                success[i] = bool(info.get("success", False))
        running &= ~np.asarray(dones, dtype=bool).reshape(n)
    return RolloutResult([
        EpisodeResult(seed + i, bool(success[i]), float(ret[i]), int(length[i]), bool(grasped[i]), float(closest[i]),
                      placed=bool(placed_steps[i] > 0) if reports_placed[i] else None,
                      static_when_placed=float(static_steps[i] / placed_steps[i]) if placed_steps[i] else None)
        for i in rows])
