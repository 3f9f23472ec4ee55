"""robot_rl: PPO in ManiSkill3 guided by sparse directional hints from a (served) VLA teacher.

Modules: :mod:`robot_rl.observation` (the observation schema: groups, fields, sizes, offsets),
:mod:`robot_rl.geometry` (rotations, frames, the ``pd_ee_delta_pose`` convention), :mod:`robot_rl.rollout`
(the one rollout loop). Subpackages: :mod:`robot_rl.guidance` (the Guidance component: query schedule,
targets, losses), :mod:`robot_rl.algos` (GuidedPPO), :mod:`robot_rl.envs` (the six tasks, vec envs),
:mod:`robot_rl.teachers` (Teacher protocol, scripted teacher and its planners, OpenVLA backend, server,
client), :mod:`robot_rl.deploy` (ONNX export, safety filter, ROS 2 node, sim bridge, recording). Entry point:
``robot-rl``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    #: The installed distribution's version (``pyproject.toml``), as ``robot-rl --version`` prints it.
    __version__ = version("robot_rl")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
