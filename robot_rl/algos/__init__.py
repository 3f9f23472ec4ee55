"""Algorithms: GuidedPPO (SB3 PPO + teacher buffer fields + auxiliary loss)."""

from robot_rl.algos.guided_ppo import AUX_LOSSES, GuidedPPO, GuidedRolloutBuffer

__all__ = ["AUX_LOSSES", "GuidedPPO", "GuidedRolloutBuffer"]
