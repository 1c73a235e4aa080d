"""Power-law fits recover the constants that generated their points, with honest error bars."""
from __future__ import annotations

import numpy as np
import pytest

from recjax.scaling import fit

TRUE_D = {"L_inf": 1.7, "A": 400.0, "alpha": 0.3}
# Chinchilla's published constants (Hoffmann et al. 2022) as a realistic joint law.
TRUE_ND = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}
D = np.logspace(6, 10, 8)
N_GRID, D_GRID = (g.ravel() for g in np.meshgrid(np.logspace(6, 9, 5), np.logspace(7, 10, 5)))


def data_law(d, c=TRUE_D):
  return c["L_inf"] + c["A"] * d ** -c["alpha"]


def joint_law(n, d, c=TRUE_ND):
  return c["E"] + c["A"] * n ** -c["alpha"] + c["B"] * d ** -c["beta"]


def test_data_law_recovers_exact_constants():
  result = fit.fit_data_law(D, data_law(D))
  for k, v in TRUE_D.items():
    assert result.params[k] == pytest.approx(v, rel=1e-6), k
  assert result.r2 == pytest.approx(1.0, abs=1e-12)
  np.testing.assert_allclose(result.predict(D), data_law(D), rtol=1e-9)
  assert result.law == "L(D) = L_inf + A*D^-alpha" and result.num_points == 8


def test_joint_law_recovers_exact_constants():
  result = fit.fit_joint_law(N_GRID, D_GRID, joint_law(N_GRID, D_GRID))
  for k, v in TRUE_ND.items():
    assert result.params[k] == pytest.approx(v, rel=1e-5), k
  assert result.r2 == pytest.approx(1.0, abs=1e-12)
  np.testing.assert_allclose(result.predict(1e8, 1e9), joint_law(1e8, 1e9), rtol=1e-9)


def test_noisy_points_recovered_within_their_error_bars():
  rng = np.random.default_rng(0)
  y = data_law(D) * (1 + 0.003 * rng.normal(size=D.shape))
  result = fit.fit_data_law(D, y)
  for k, v in TRUE_D.items():
    assert abs(result.params[k] - v) < 4 * result.stderr[k] and result.stderr[k] > 0, k
    assert result.params[k] == pytest.approx(v, rel=0.05), k
  assert result.r2 > 0.999
  y = joint_law(N_GRID, D_GRID) * (1 + 0.003 * rng.normal(size=N_GRID.shape))
  result = fit.fit_joint_law(N_GRID, D_GRID, y)
  for k, v in TRUE_ND.items():
    assert abs(result.params[k] - v) < 4 * result.stderr[k], k
    assert result.params[k] == pytest.approx(v, rel=0.1), k
  assert result.r2 > 0.999
  assert "R^2 = " in result.summary() and "beta = " in result.summary()


def test_standard_errors_are_calibrated():
  # Over repeated noisy draws the truth lies within 2 standard errors about 95% of the time.
  rng = np.random.default_rng(1)
  hits = []
  for _ in range(60):
    y = data_law(D) + 0.002 * rng.normal(size=D.shape)
    result = fit.fit_data_law(D, y)
    hits.append(abs(result.params["alpha"] - TRUE_D["alpha"]) < 2 * result.stderr["alpha"])
  assert 0.8 <= np.mean(hits) <= 1.0, np.mean(hits)


def test_diverged_points_are_dropped_and_named():
  y = data_law(D)
  y[2], y[5] = np.nan, np.inf
  result = fit.fit_data_law(D, y)
  assert result.dropped == (2, 5) and result.num_points == 6
  assert result.params["alpha"] == pytest.approx(0.3, rel=1e-6)
  assert "dropped points [2, 5]" in result.summary()


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="needs more than 3 points with a finite loss, got 3"):
    fit.fit_data_law(D[:4], np.r_[data_law(D[:3]), np.nan])
  with pytest.raises(ValueError, match=r"D must be finite and > 0; points \[1\]"):
    fit.fit_data_law(np.r_[1e6, 0.0, 1e8, 1e9, 1e10], np.ones(5))
  with pytest.raises(ValueError, match="N and L must be 1-d arrays of one length"):
    fit.fit_joint_law(N_GRID[:3], D_GRID, np.ones(len(D_GRID)))
