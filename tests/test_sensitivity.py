"""Sobol indices: the Saltelli design plus SALib recover the Ishigami function's closed form."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.sweep import unit_samples

pytest.importorskip("SALib")

from experiments.sensitivity import sobol_indices  # noqa: E402


def ishigami(x, a=7.0, b=0.1):
    return np.sin(x[:, 0]) + a * np.sin(x[:, 1]) ** 2 + b * x[:, 2] ** 4 * np.sin(x[:, 0])


def test_ishigami_indices_match_the_closed_form():
    # closed form (Ishigami and Homma 1990), a = 7, b = 0.1, inputs uniform on [-pi, pi]
    a, b = 7.0, 0.1
    v1 = 0.5 * (1 + b * np.pi**4 / 5) ** 2
    v2 = a**2 / 8
    v13 = b**2 * np.pi**8 * (1 / 18 - 1 / 50)
    var = v1 + v2 + v13
    s1 = np.array([v1, v2, 0.0]) / var
    st = np.array([v1 + v13, v2, v13]) / var

    u = unit_samples("saltelli", 4096, 3, seed=1)
    y = ishigami(-np.pi + 2 * np.pi * u)
    got = sobol_indices(y, ["x1", "x2", "x3"])
    assert np.allclose(got["S1"], s1, atol=0.03)
    assert np.allclose(got["ST"], st, atol=0.03)
    assert (got["S1_conf"] > 0).all()


def test_a_knob_that_does_nothing_has_zero_indices():
    u = unit_samples("saltelli", 256, 2, seed=2)
    y = 3.0 * u[:, 0] + 1.0  # x2 never enters
    got = sobol_indices(y, ["x1", "x2"])
    assert got["S1"].iloc[0] == pytest.approx(1.0, abs=0.05)
    assert got["ST"].iloc[1] == pytest.approx(0.0, abs=1e-12)
