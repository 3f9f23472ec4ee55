"""Auxiliary guidance losses on the policy mean.

* VLAJS directional loss (Moroncelli et al. 2026):
  ``L_dir = E_t[ 1[valid_t] * Σ_{c∈{pos,rot}} (1 - <μ^c, ã^c> / (‖μ^c‖‖ã^c‖ + ε)) ]``.
* RPD baseline (Jülg et al. 2025): ``L_mse = E_t[ 1[valid_t] * ‖μ - ã‖² ]`` on all 7 components.

Masked means divide by ``mask.sum().clamp_min(1)`` (DESIGN.md, Style), so an update with no
valid target gives exactly 0 and no gradient.

On ε (``guidance.cos_eps``): with a tiny ε the directional loss is scale-invariant, its gradient is
orthogonal to ``μ^c`` and grows as ``1/‖μ^c‖``. It turns the policy mean towards the teacher but never
lengthens it, and SB3 initializes the mean near zero (action-head gain 0.01), so a policy can point the
right way and still barely move (measured here on PushCube: mean ``|μ_pos|`` ~0.05 after 20k env steps)
while the gradient for short means is large enough to drive big policy changes (approx. KL 0.1-0.3
per update). A larger ε (action units², e.g. 0.1) keeps the equation's form: for ``‖μ‖‖ã‖ ≲ ε`` the loss
falls with the projection of ``μ`` on ``ã``, so a short mean also grows along the teacher's direction.
"""

from __future__ import annotations

import torch as th

from robot_rl.geometry import POS_SLICE, ROT_SLICE

#: ε in the cosine's denominator.
COS_EPS = 1e-8
#: A target component shorter than this carries no direction (e.g. a teacher that commands no
#: rotation): it contributes nothing, instead of a constant 1 with zero gradient.
MIN_TARGET_NORM = 1e-6


def _masked_mean(per_row: th.Tensor, valid: th.Tensor) -> th.Tensor:
    valid = valid.to(per_row.dtype)
    return (per_row * valid).sum() / valid.sum().clamp_min(1.0)


def component_cosines(mean: th.Tensor, target: th.Tensor,
                      eps: float = COS_EPS) -> dict[str, tuple[th.Tensor, th.Tensor]]:
    """Per component ``c`` in {pos, rot}: ``(cos (N,), has_direction (N,) bool)`` between ``μ^c`` and ``ã^c``."""
    out = {}
    for name, sl in (("pos", POS_SLICE), ("rot", ROT_SLICE)):
        mu, tgt = mean[:, sl], target[:, sl]
        tgt_norm = tgt.norm(dim=1)
        out[name] = ((mu * tgt).sum(dim=1) / (mu.norm(dim=1) * tgt_norm + eps), tgt_norm > MIN_TARGET_NORM)
    return out


def directional_cosine_loss(mean: th.Tensor, target: th.Tensor, valid: th.Tensor, eps: float = COS_EPS) -> th.Tensor:
    """Masked directional cosine loss over the position and rotation components.

    Args:
        mean: ``(N, 7)`` policy mean ``μ_θ(s_t)``.
        target: ``(N, 7)`` per-step teacher targets ``ã_t``.
        valid: ``(N,)`` bool or 0/1 validity mask.
        eps: ε in the denominator.

    Returns:
        scalar tensor in ``[0, 4]``; 0 when the mean points along every target component.
    """
    per_row = mean.new_zeros(mean.shape[0])
    for cos, has_direction in component_cosines(mean, target, eps).values():
        per_row = per_row + th.where(has_direction, 1.0 - cos, th.zeros_like(cos))
    return _masked_mean(per_row, valid)


def mse_loss(mean: th.Tensor, target: th.Tensor, valid: th.Tensor) -> th.Tensor:
    """Masked MSE of the RPD baseline: mean over valid rows of ``‖μ - ã‖²`` (sum over 7 components).

    Args:
        mean: ``(N, 7)`` policy mean ``μ_θ(s_t)``.
        target: ``(N, 7)`` per-step teacher targets ``ã_t``.
        valid: ``(N,)`` bool or 0/1 validity mask.

    Returns:
        scalar tensor; 0 when no row is valid.
    """
    return _masked_mean(((mean - target) ** 2).sum(dim=1), valid)
