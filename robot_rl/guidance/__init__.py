"""Guidance maths of VLAJS: query schedule, λ_t, target interpolation, auxiliary losses."""

from robot_rl.guidance.collector import Guidance, GuidanceStats
from robot_rl.guidance.guard import TeacherGuard, alignment_scores
from robot_rl.guidance.losses import check_components, directional_cosine_loss, grip_agreement, mse_loss
from robot_rl.guidance.schedule import QueryScheduler, lambda_t, n_calls
from robot_rl.guidance.targets import TargetTracker, interpolate_targets, validate_teacher_actions

__all__ = [
    "Guidance", "GuidanceStats", "QueryScheduler", "TargetTracker", "TeacherGuard", "alignment_scores",
    "check_components", "directional_cosine_loss", "grip_agreement", "interpolate_targets", "lambda_t", "mse_loss",
    "n_calls", "validate_teacher_actions",
]
