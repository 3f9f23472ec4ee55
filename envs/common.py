"""Pieces shared by the single env, the CPU vector envs and the GPU vector-env adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .tasks import PRIVILEGED_STATE_DIM

__all__ = [
    "TeacherView",
    "SIM_BACKENDS",
    "OBS_MODE",
    "CONTROL_MODE",
    "env_kwargs",
    "make_maniskill_env",
    "render_teacher_images",
    "check_render_device",
]

#: Simulation backends make_vec_env accepts: one process per env on the CPU, or many envs in one
#: process on an NVIDIA GPU.
SIM_BACKENDS = ("physx_cpu", "physx_cuda")
#: robot_rl trains on privileged state (flat float32 vector), never on pixels.
OBS_MODE = "state"
#: Panda end-effector delta pose control, 7-D in [-1, 1] (FACTS.md for the scaling and sign).
CONTROL_MODE = "pd_ee_delta_pose"

#: Messages SAPIEN 3.0.3 raises (as RuntimeError) when no usable Vulkan driver exists. The first
#: env of a process without any Vulkan ICD fails in ``vk::createInstanceUnique:
#: ErrorIncompatibleDriver``; later ones (and lavapipe < 24.3) with "failed to find a rendering
#: device" (measured here with VK_ICD_FILENAMES pointing to a missing file).
_NO_RENDER_DEVICE_MARKERS = (
    "failed to find a rendering device",
    "createInstanceUnique",
    "ErrorIncompatibleDriver",
    "ErrorInitializationFailed",
)
_NO_RENDER_DEVICE_HELP = (
    "SAPIEN (ManiSkill's simulator) found no Vulkan device: it needs one even for state-only "
    "observations (and with render_backend='none'). On a machine without an NVIDIA driver run `bash scripts/setup.sh`, "
    "which installs Mesa's lavapipe software Vulkan driver (>= 24.3) from bookworm-backports; the "
    "bookworm one (22.3) lacks VK_KHR_external_semaphore_fd (see FACTS.md)."
)
#: The same for the GPU sim: lavapipe is a CPU driver and cannot serve ``sapien_cuda`` (it renders into CUDA memory
#: through the NVIDIA Vulkan driver), so the message points to NVIDIA's Vulkan ICD instead (issue 17).
_NO_CUDA_RENDER_DEVICE_HELP = (
    "SAPIEN (ManiSkill's simulator) found no Vulkan device: it needs one to build a scene even with "
    "render_backend='none' (robot_rl's choice when the teacher needs no image). On an NVIDIA GPU that is the "
    "NVIDIA driver's own Vulkan ICD (nvidia_icd.json, from the driver's GL/Vulkan libraries, e.g. Debian's "
    "libnvidia-gl or a container started with NVIDIA_DRIVER_CAPABILITIES including 'graphics'); check it with "
    "`vulkaninfo --summary`. Mesa's lavapipe (scripts/setup.sh) cannot serve sim_backend 'physx_cuda' with "
    "render_backend 'sapien_cuda'."
)


@dataclass
class TeacherView:
    """What the teacher sees of ``k`` sub-envs, in the order of the requested indices.

    Attributes:
        images: ``(k, H, W, 3) uint8`` RGB from the teacher camera at ``teacher_image_size``,
            or ``None`` when not requested (``with_image=False``).
        instructions: ``k`` language instructions (``TaskSpec.instruction``).
        states: ``(k, 38) float32`` privileged state (:data:`robot_rl.envs.PRIVILEGED_STATE_LAYOUT`).
        task_ids: ``k`` env ids (``TaskSpec.env_id``).
    """

    images: np.ndarray | None
    instructions: list[str]
    states: np.ndarray
    task_ids: list[str]

    def __len__(self) -> int:
        return len(self.instructions)


def check_view_indices(indices: Sequence[int], num_envs: int) -> list[int]:
    """``indices`` as ints; raises ``IndexError`` for one outside ``[0, num_envs)``."""
    idx = [int(i) for i in indices]
    for i in idx:
        if not 0 <= i < num_envs:
            raise IndexError(f"teacher_view index {i} out of range for {num_envs} envs")
    return idx


def empty_view(teacher_image_size: tuple[int, int], with_image: bool) -> TeacherView:
    """The :class:`TeacherView` of no env (``k = 0``)."""
    h, w = teacher_image_size
    return TeacherView(np.zeros((0, h, w, 3), np.uint8) if with_image else None, [], empty_states(0), [])


def env_kwargs(
    reward_mode: str,
    max_episode_steps: int,
    teacher_image_size: tuple[int, int],
    sim_backend: str = "physx_cpu",
    num_envs: int = 1,
    render_mode: str | None = "rgb_array",
    render: bool = True,
) -> dict[str, Any]:
    """Keyword arguments for ``gym.make(env_id, **kwargs)`` of a robot_rl env.

    ``teacher_image_size`` is ``(H, W)`` in pixels; it resizes the task's human-render camera
    ("render_camera", the 512x512 view ManiSkill uses for videos), which is the teacher camera.
    It is only rendered on demand, so it costs nothing on steps without a teacher view.
    ``render=False`` (nothing will ever be rendered) asks for no render system at all:
    ``render_backend="none"`` and ``render_mode=None`` (ManiSkill 3.0.1 ``BaseEnv``: no ``RenderSystem`` per
    sub-scene, no GPU render memory; ``render_mode`` with no render device only logs a warning).

    Raises:
        ValueError: unknown reward mode or non-positive image size.
    """
    from .tasks import REWARD_MODES

    if reward_mode not in REWARD_MODES:
        raise ValueError(f"unknown reward_mode {reward_mode!r}; allowed: {', '.join(REWARD_MODES)}")
    h, w = (int(x) for x in teacher_image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"teacher_image_size must be positive (H, W), got {teacher_image_size}")
    return dict(
        num_envs=num_envs,
        obs_mode=OBS_MODE,
        control_mode=CONTROL_MODE,
        reward_mode=reward_mode,
        sim_backend=sim_backend,
        render_mode=render_mode if render else None,
        human_render_camera_configs=dict(width=w, height=h),
        max_episode_steps=max_episode_steps,
        render_backend=default_render_backend() if render else "none",
    )


def default_render_backend() -> str:
    """``"sapien_cuda"`` with a CUDA device, else ``"sapien_cpu"`` (lavapipe's Vulkan): asking for CUDA
    rendering without a GPU works too, but ManiSkill then warns once per env process.
    """
    import torch

    return "sapien_cuda" if torch.cuda.is_available() else "sapien_cpu"


def make_maniskill_env(env_id: str, **kwargs: Any):
    """``gym.make(env_id, **kwargs)`` with a clear error when no Vulkan device exists.

    Raises:
        RuntimeError: SAPIEN's "failed to find a rendering device", re-raised with a pointer to
            ``bash scripts/setup.sh`` (lavapipe) on the CPU sim, to NVIDIA's Vulkan ICD on ``physx_cuda``
            (the chained traceback is suppressed).
    """
    import gymnasium as gym

    from . import tasks  # noqa: F401  (registers the robot_rl ids)

    try:
        return gym.make(env_id, **kwargs)
    except RuntimeError as exc:
        if _is_no_render_device(exc):
            cuda = str(kwargs.get("sim_backend", "")).startswith("physx_cuda")
            raise RuntimeError(f"{exc}. {_NO_CUDA_RENDER_DEVICE_HELP if cuda else _NO_RENDER_DEVICE_HELP}") from None
        raise


def _is_no_render_device(exc: BaseException) -> bool:
    return any(m in str(exc) for m in _NO_RENDER_DEVICE_MARKERS)


def check_render_device() -> None:
    """Fail fast (about 50 ms) if SAPIEN has no Vulkan device, before starting env workers.

    Raises:
        RuntimeError: no rendering device; the message points to ``bash scripts/setup.sh``.
    """
    import sapien

    try:
        sapien.render.RenderSystem()
    except RuntimeError as exc:
        if _is_no_render_device(exc):
            raise RuntimeError(f"{exc}. {_NO_RENDER_DEVICE_HELP}") from None
        raise


def render_teacher_images(env: Any, indices: Sequence[int] | None = None) -> np.ndarray:
    """Render the teacher camera of an unwrapped ManiSkill env.

    Shows the task's hidden objects (e.g. PickCube's green goal sphere, which sensor cameras do not
    see) for the render and hides them again. ManiSkill 3.0.1's own ``render_rgb_array`` leaves
    them visible when the env has a single render camera (it returns before re-hiding), which
    would leak the goal into later sensor images.

    Cost on lavapipe (2 cores): ~0.05 s for 224x224, but the first capture in a process takes
    4-9 s (Vulkan pipeline set-up), and again once every env of the process has been closed.

    Args:
        env: unwrapped ManiSkill env.
        indices: sub-envs to return; all if None. On the GPU sim ManiSkill 3.0.1's parallel renderer captures
            every sub-scene in one call whatever ``indices`` is (``ManiSkillScene.get_human_render_camera_images``:
            one ``RenderCameraGroup`` for all sub-scenes, no per-scene capture): only the requested rows are
            selected on the device and copied to the host. On the CPU sim ``num_envs`` is 1.

    Returns:
        ``(k, H, W, 3) uint8`` numpy array.
    """
    cams = env.scene.human_render_cameras
    if not cams:
        raise RuntimeError(f"{type(env).__name__} has no human render camera to use as the teacher camera")
    name = "render_camera" if "render_camera" in cams else next(iter(cams))
    hidden = list(env._hidden_objects)
    for obj in hidden:
        obj.show_visual()
    try:
        env.scene.update_render(update_sensors=False, update_human_render_cameras=True)
        rgb = env.scene.get_human_render_camera_images(name)[name]  # (num_envs, H, W, 3)
    finally:
        for obj in hidden:
            obj.hide_visual()
    if indices is not None:
        rgb = rgb[torch.as_tensor(list(indices), dtype=torch.long, device=rgb.device)]
    out = rgb.cpu().numpy() if isinstance(rgb, torch.Tensor) else np.asarray(rgb)
    if out.dtype != np.uint8:
        out = np.clip(out * 255 if out.dtype.kind == "f" else out, 0, 255).astype(np.uint8)
    return out[..., :3]


def empty_states(k: int = 0) -> np.ndarray:
    return np.zeros((k, PRIVILEGED_STATE_DIM), dtype=np.float32)
