"""Shared checks for the scripted-planner tests."""

from __future__ import annotations

import numpy as np
import pytest


def check_period_plan(a1: np.ndarray, ad: np.ndarray, period: int) -> None:
    """An answer planned for a period of ``D`` env steps against the same state's ``D = 1`` answer.

    The phase logic does not depend on ``D`` (the callers compare phases), so the answers agree on the
    gripper and on the *direction* of the position motion; a period answer never asks for a faster
    per-step motion than a per-step answer (it spreads ``period_gain(D)`` of the error over ``D`` steps,
    ``period_gain(1) = 0.5`` over one), and its per-step components stay inside the controller's range.
    """
    a1, ad = np.asarray(a1, dtype=np.float64), np.asarray(ad, dtype=np.float64)
    np.testing.assert_array_equal(ad[:, 6], a1[:, 6])
    p1, pd = a1[:, :3], ad[:, :3] / period
    n1, nd = np.linalg.norm(p1, axis=-1), np.linalg.norm(pd, axis=-1)
    moving = (n1 > 1e-9) & (nd > 1e-9)
    assert np.array_equal(n1 > 1e-9, nd > 1e-9), "one answer moves where the other stands still"
    cos = np.sum(p1[moving] * pd[moving], -1) / (n1[moving] * nd[moving])
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)
    assert np.all(nd <= n1 + 1e-9)
    assert np.abs(pd).max(initial=0) <= 1 + 1e-6
    assert np.linalg.norm(ad[:, 3:6] / period, axis=-1).max(initial=0) <= 1 + 1e-3


@pytest.fixture
def period_plan_check():
    """:func:`check_period_plan`, for tests that compare answers across control periods."""
    return check_period_plan
