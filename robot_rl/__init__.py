"""robot_rl: PPO in ManiSkill3 guided by sparse directional hints from a (served) VLA teacher.

Subpackages: :mod:`robot_rl.guidance` (query schedule, targets, losses), :mod:`robot_rl.algos`
(GuidedPPO), :mod:`robot_rl.envs` (tasks, vec envs), :mod:`robot_rl.teachers` (Teacher protocol,
scripted teacher), :mod:`robot_rl.deploy` (export and ROS 2, later). Entry point: ``robot-rl``.
"""

__version__ = "0.1.0"
