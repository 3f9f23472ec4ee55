"""Delay models (robot_rl.guidance.delay) by hand: seeded, reproducible, bounds, latency rounding, state."""

from __future__ import annotations

import numpy as np
import pytest

from robot_rl.guidance.delay import DelayModel, steps_of_latency


def test_kinds_by_hand():
    assert DelayModel("none").sample(3).tolist() == [0, 0, 0]
    assert DelayModel("fixed", steps=7).sample(2).tolist() == [7, 7]
    u = DelayModel("uniform", min_steps=2, max_steps=4, seed=0).sample(2000)
    assert set(u.tolist()) == {2, 3, 4} and abs(u.mean() - 3.0) < 0.1  # inclusive bounds, uniform
    assert DelayModel("measured").measured and DelayModel("measured").sample(2).tolist() == [0, 0]
    assert DelayModel("uniform", min_steps=0, max_steps=20).mean_steps == 10.0


def test_seeded_and_resumable():
    a, b = DelayModel("uniform", max_steps=20, seed=5), DelayModel("uniform", max_steps=20, seed=5)
    np.testing.assert_array_equal(a.sample(50), b.sample(50))
    state = a.state_dict()
    first = a.sample(10)
    c = DelayModel("uniform", max_steps=20, seed=99)
    c.load_state_dict(state)
    np.testing.assert_array_equal(c.sample(10), first)  # a resumed run draws what it would have drawn
    with pytest.raises(ValueError, match="for kind 'uniform'"):
        DelayModel("fixed", steps=3).load_state_dict(state)


def test_bad_models_name_the_key():
    with pytest.raises(ValueError, match="interface.delay.kind: unknown delay model 'soon'"):
        DelayModel("soon")
    with pytest.raises(ValueError, match="max_steps \\(2\\) < min_steps \\(5\\)"):
        DelayModel("uniform", min_steps=5, max_steps=2)
    with pytest.raises(ValueError, match=">= 0"):
        DelayModel("fixed", steps=-1)


def test_latency_rounds_up_to_env_steps():
    """ceil(L / 0.05 s): 0 s -> 0, 10 ms -> 1, exactly 0.25 s -> 5 (not 6 by round-off), 0.251 s -> 6."""
    assert steps_of_latency(np.array([0.0, 0.01, 0.05, 0.25, 0.251, 1.0])).tolist() == [0, 1, 1, 5, 6, 20]
    assert steps_of_latency(-0.1).tolist() == 0
