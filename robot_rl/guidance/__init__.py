"""Guidance maths of VLAJS: query schedule, λ_t, target interpolation, auxiliary losses."""

from robot_rl.guidance.collector import Guidance, GuidanceStats
from robot_rl.guidance.losses import directional_cosine_loss, mse_loss
from robot_rl.guidance.schedule import QueryScheduler, lambda_t, n_calls
from robot_rl.guidance.targets import TargetTracker, interpolate_targets, validate_teacher_actions

__all__ = [
    "Guidance", "GuidanceStats", "QueryScheduler", "TargetTracker", "directional_cosine_loss",
    "interpolate_targets", "lambda_t", "mse_loss", "n_calls", "validate_teacher_actions",
]
