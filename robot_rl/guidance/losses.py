"""Auxiliary guidance losses on the policy mean.

* VLAJS directional loss (Moroncelli et al. 2026):
  ``L_dir = E_t[ 1[valid_t] * Σ_{c∈{pos,rot}} (1 - <μ^c, ã^c> / (‖μ^c‖‖ã^c‖ + ε)) ]``.
* RPD baseline (Jülg et al. 2025): ``L_mse = E_t[ 1[valid_t] * ‖μ - ã‖² ]`` on all 7 components.
* Gripper term (ours, ``guidance.components`` with ``grip``; the paper guides ``pos`` and ``rot`` only):
  ``L_grip = E_t[ 1[valid_t] * max(0, 1 - sign(ã^g) μ^g) ]``, a hinge on the gripper component, added to
  ``L_dir`` (so ``L = L_PPO + λ_t (L_dir + L_grip)``).

Why a hinge with margin 1 on the gripper, and not the other forms:

* ManiSkill's Panda gripper action is ``pd_joint_pos`` normalized to ``[-1 (closed), +1 (open)]`` and the env
  clips to that range; the teacher's command is binary (``teachers/base.py``: ``±1``). The hinge is 0
  exactly when the *clipped* action equals the command (``μ^g ≤ -1`` for close, ``≥ 1`` for open) and its
  gradient is a constant ``-sign(ã^g)`` until then: it never vanishes near the target and never asks for
  more than the bound.
* A cosine on the 1-D component is ``sign(μ^g) sign(ã^g)``: piecewise constant, no gradient except within
  ``ε`` of 0, so it cannot move a mean that has the wrong sign by more than ``ε``.
* A BCE on an open probability ``σ(μ^g / τ)`` never reaches 0: it pushes ``μ^g`` towards ``±∞`` for ever,
  far past the bound, and keeps fighting PPO's ratio clip on every agreeing row.
* An MSE ``(μ^g - ã^g)²`` (RPD's, on this component) penalizes ``μ^g = -1.5``, which is the same clipped
  action as ``-1``, and its gradient shrinks to 0 near the command.

Its agreement, the fraction of valid rows whose ``sign(μ^g)`` is the teacher's, is logged as
``guidance/grip_agreement`` whether or not the term is on (:func:`grip_agreement`).

* Magnitude term (ours, ``guidance.magnitude_weight`` ``w``, default 0 = the paper):
  ``w * Σ_{c∈{pos,rot}} (‖μ^c‖ - ‖ã^c‖)²`` on the guided cosine components, added per row. The cosine term
  only sets the mean's direction, and with ``ε = 0.1`` it keeps lengthening an aligned mean until the action
  saturates at ±1 (measured in issue 12: 99-100% of position actions at the bound). The teacher's per-step
  target also says how far to go (short near the cube, long far away); the magnitude term fits that, so the
  direction and the length are fitted separately and the cosine's scale invariance is kept for the direction.

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

from robot_rl.geometry import GRIPPER_INDEX, POS_SLICE, ROT_SLICE

#: ε in the cosine's denominator.
COS_EPS = 1e-8
#: A target component shorter than this carries no direction (e.g. a teacher that commands no
#: rotation): it contributes nothing, instead of a constant 1 with zero gradient.
MIN_TARGET_NORM = 1e-6
#: The guidance components ``guidance.components`` may hold; the paper's are ``pos`` and ``rot``.
COMPONENTS = ("pos", "rot", "grip")
#: The paper's components (the default).
PAPER_COMPONENTS = ("pos", "rot")


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


def grip_hinge(mean: th.Tensor, target: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """Per row: ``(max(0, 1 - sign(ã^g) μ^g) (N,), has_command (N,) bool)`` on the gripper component.

    ``has_command`` is False where ``|ã^g| <= MIN_TARGET_NORM`` (no open/close command): such a row adds nothing.
    """
    mu, tgt = mean[:, GRIPPER_INDEX], target[:, GRIPPER_INDEX]
    return th.relu(1.0 - th.sign(tgt) * mu), tgt.abs() > MIN_TARGET_NORM


def grip_agreement(mean: th.Tensor, target: th.Tensor, valid: th.Tensor) -> float | None:
    """Fraction of valid rows with a gripper command whose mean has the command's sign (``None``: no such row).

    Args:
        mean: ``(N, 7)`` policy mean.
        target: ``(N, 7)`` teacher targets.
        valid: ``(N,)`` bool or 0/1 mask.
    """
    _, has = grip_hinge(mean, target)
    w = (valid > 0) & has
    if not bool(w.any()):
        return None
    agree = th.sign(mean[:, GRIPPER_INDEX]) == th.sign(target[:, GRIPPER_INDEX])
    return float(agree[w].float().mean())


def check_components(components) -> tuple[str, ...]:
    """``components`` as a tuple, checked.

    Raises:
        ValueError: empty, a repeated name, or a name outside :data:`COMPONENTS` (the message lists them).
    """
    comps = tuple(components)
    unknown = [c for c in comps if c not in COMPONENTS]
    if unknown or not comps or len(set(comps)) != len(comps):
        raise ValueError(f"guidance components must be distinct names from {list(COMPONENTS)}, at least one; "
                         f"got {list(comps)}")
    return comps


def directional_cosine_loss(mean: th.Tensor, target: th.Tensor, valid: th.Tensor, eps: float = COS_EPS,
                            components: tuple[str, ...] = PAPER_COMPONENTS, magnitude_weight: float = 0.0) -> th.Tensor:
    """Masked directional loss: the cosine term of each of ``pos`` / ``rot`` in ``components`` (plus, with
    ``magnitude_weight`` ``w > 0``, ``w (‖μ^c‖ - ‖ã^c‖)²`` on it), plus the gripper hinge (:func:`grip_hinge`) when
    ``grip`` is in it.

    Args:
        mean: ``(N, 7)`` policy mean ``μ_θ(s_t)``.
        target: ``(N, 7)`` per-step teacher targets ``ã_t``.
        valid: ``(N,)`` bool or 0/1 validity mask.
        eps: ε in the denominator.
        components: which of :data:`COMPONENTS` are guided (default: the paper's ``pos``, ``rot``).
        magnitude_weight: ``w >= 0`` of the magnitude term (action units⁻²; 0: the paper's loss).

    Returns:
        scalar tensor, ``>= 0``: at most 2 per cosine component and ``1 + |μ^g|`` for ``grip``; 0 when the mean
        points along every guided target component (and, for ``grip``, the clipped gripper action equals the
        command).

    Raises:
        ValueError: ``components`` as :func:`check_components` refuses it, or ``magnitude_weight < 0``.
    """
    comps = check_components(components)
    if magnitude_weight < 0:
        raise ValueError(f"magnitude_weight must be >= 0, got {magnitude_weight}")
    per_row = mean.new_zeros(mean.shape[0])
    for name, (cos, has_direction) in component_cosines(mean, target, eps).items():
        if name in comps:
            term = 1.0 - cos
            if magnitude_weight:
                sl = POS_SLICE if name == "pos" else ROT_SLICE
                term = term + magnitude_weight * (mean[:, sl].norm(dim=1) - target[:, sl].norm(dim=1)) ** 2
            per_row = per_row + th.where(has_direction, term, th.zeros_like(cos))
    if "grip" in comps:
        hinge, has_command = grip_hinge(mean, target)
        per_row = per_row + th.where(has_command, hinge, th.zeros_like(hinge))
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
