"""Power-law fits of held-out loss against data size D and model size N (SPECS.md §3).

    fit_data_law(D, L)       L(D)    = L_inf + A * D^-alpha          (one model size)
    fit_joint_law(N, D, L)   L(N, D) = E + A * N^-alpha + B * D^-beta  (all runs)

Least squares by `scipy.optimize.curve_fit` (trust-region reflective, bounds keeping every
constant non-negative and exponents in (0, 5]), started from a small grid of exponents; the best
start is kept. Sizes are divided by their geometric mean while fitting (A and B otherwise span
many orders of magnitude) and the constants and their covariance are mapped back. Standard errors
are the square roots of the covariance's diagonal, scaled by the residual variance (curve_fit's
`absolute_sigma=False`); R^2 = 1 - SS_res / SS_tot on the points fitted.

A point whose loss is not finite (a diverged run) is left out and listed in `dropped`; a fit
needs more points than constants.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Callable

import numpy as np

DATA_LAW = "L(D) = L_inf + A*D^-alpha"
JOINT_LAW = "L(N, D) = E + A*N^-alpha + B*D^-beta"
_EXPONENT_STARTS = (0.1, 0.3, 0.7, 1.5)
_MAX_EXPONENT = 5.0


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
  """Fitted constants of one law, with standard errors, covariance and R^2."""

  law: str
  params: dict[str, float]
  stderr: dict[str, float]
  covariance: np.ndarray  # [k, k] over params in their order
  r2: float
  num_points: int
  dropped: tuple[int, ...]  # indices of input points left out (loss not finite)
  predict: Callable[..., np.ndarray] = dataclasses.field(repr=False, compare=False)

  def summary(self) -> str:
    consts = ", ".join(f"{k} = {v:.4g} ± {self.stderr[k]:.2g}" for k, v in self.params.items())
    dropped = f"; dropped points {list(self.dropped)} (loss not finite)" if self.dropped else ""
    return f"{self.law}: {consts}; R^2 = {self.r2:.4f} over {self.num_points} points{dropped}"


def _clean(loss: np.ndarray, sizes: dict[str, np.ndarray], k: int):
  loss = np.asarray(loss, np.float64)
  sizes = {name: np.asarray(v, np.float64) for name, v in sizes.items()}
  for name, v in sizes.items():
    if v.shape != loss.shape or loss.ndim != 1:
      raise ValueError(f"{name} and L must be 1-d arrays of one length, got shapes {v.shape} and "
                       f"{loss.shape}")
    bad = np.flatnonzero(~(np.isfinite(v) & (v > 0)))
    if len(bad):
      raise ValueError(f"{name} must be finite and > 0; points {bad.tolist()} are "
                       f"{v[bad].tolist()}")
  keep = np.isfinite(loss)
  dropped = tuple(int(i) for i in np.flatnonzero(~keep))
  if keep.sum() <= k:
    raise ValueError(f"a {k}-constant power law needs more than {k} points with a finite loss, "
                     f"got {int(keep.sum())} (dropped {list(dropped)})")
  return loss[keep], {name: v[keep] for name, v in sizes.items()}, dropped


def _r2(y: np.ndarray, yhat: np.ndarray) -> float:
  ss_tot = float(((y - y.mean()) ** 2).sum())
  ss_res = float(((y - yhat) ** 2).sum())
  return 1.0 - ss_res / ss_tot if ss_tot > 0 else float(ss_res == 0)


def _best_fit(f, x, y, starts, bounds):
  from scipy import optimize  # pylint: disable=g-import-not-at-top
  best = None
  for p0 in starts:
    try:
      popt, pcov = optimize.curve_fit(f, x, y, p0=p0, bounds=bounds, method="trf",
                                      maxfev=20000)
    except (RuntimeError, ValueError):
      continue  # this start did not converge; others may
    sse = float(((f(x, *popt) - y) ** 2).sum())
    if best is None or sse < best[0]:
      best = (sse, popt, pcov)
  if best is None:
    raise RuntimeError("power-law fit did not converge from any start")
  return best[1], best[2]


def fit_data_law(D, L) -> PowerLawFit:
  """Fits L(D) = L_inf + A*D^-alpha to losses `L` at data sizes `D` (tokens)."""
  y, sizes, dropped = _clean(L, {"D": D}, 3)
  d0 = float(np.exp(np.log(sizes["D"]).mean()))
  x = sizes["D"] / d0

  def f(x, l_inf, a, alpha):
    return l_inf + a * x ** -alpha

  floor = float(y.min())
  starts = [(floor - 0.5 * (np.ptp(y) + 1e-3), max(float(np.ptp(y)), 1e-3), e)
            for e in _EXPONENT_STARTS]
  starts = [(max(s[0], 0.0), s[1], s[2]) for s in starts]
  bounds = ([0.0, 0.0, 1e-6], [floor, np.inf, _MAX_EXPONENT])
  (l_inf, a, alpha), pcov = _best_fit(f, x, y, starts, bounds)
  # A = a * d0^alpha: map the covariance through the Jacobian of (l_inf, a, alpha) -> params.
  scale = d0 ** alpha
  jac = np.array([[1, 0, 0], [0, scale, a * scale * np.log(d0)], [0, 0, 1]])
  cov = jac @ pcov @ jac.T
  params = {"L_inf": float(l_inf), "A": float(a * scale), "alpha": float(alpha)}

  def predict(D):
    return params["L_inf"] + params["A"] * np.asarray(D, np.float64) ** -params["alpha"]

  return PowerLawFit(DATA_LAW, params, _stderr(params, cov), cov, _r2(y, f(x, l_inf, a, alpha)),
                     len(y), dropped, predict)


def fit_joint_law(N, D, L) -> PowerLawFit:
  """Fits L(N, D) = E + A*N^-alpha + B*D^-beta to losses `L` of models of size `N` (parameters)
  trained on `D` tokens."""
  y, sizes, dropped = _clean(L, {"N": N, "D": D}, 5)
  n0 = float(np.exp(np.log(sizes["N"]).mean()))
  d0 = float(np.exp(np.log(sizes["D"]).mean()))
  x = np.stack([sizes["N"] / n0, sizes["D"] / d0])

  def f(x, e, a, alpha, b, beta):
    return e + a * x[0] ** -alpha + b * x[1] ** -beta

  floor = float(y.min())
  span = max(float(np.ptp(y)), 1e-3)
  starts = [(max(floor - 0.5 * span, 0.0), span / 2, ea, span / 2, eb)
            for ea, eb in itertools.product(_EXPONENT_STARTS, repeat=2)]
  bounds = ([0.0, 0.0, 1e-6, 0.0, 1e-6], [floor, np.inf, _MAX_EXPONENT, np.inf, _MAX_EXPONENT])
  (e, a, alpha, b, beta), pcov = _best_fit(f, x, y, starts, bounds)
  sa, sb = n0 ** alpha, d0 ** beta
  jac = np.eye(5)
  jac[1, 1], jac[1, 2] = sa, a * sa * np.log(n0)
  jac[3, 3], jac[3, 4] = sb, b * sb * np.log(d0)
  cov = jac @ pcov @ jac.T
  params = {"E": float(e), "A": float(a * sa), "alpha": float(alpha), "B": float(b * sb),
            "beta": float(beta)}

  def predict(N, D):
    return (params["E"] + params["A"] * np.asarray(N, np.float64) ** -params["alpha"]
            + params["B"] * np.asarray(D, np.float64) ** -params["beta"])

  return PowerLawFit(JOINT_LAW, params, _stderr(params, cov), cov,
                     _r2(y, f(x, e, a, alpha, b, beta)), len(y), dropped, predict)


def _stderr(params: dict[str, float], cov: np.ndarray) -> dict[str, float]:
  diag = np.diag(cov)
  return {k: float(np.sqrt(v)) if v >= 0 else float("nan") for k, v in zip(params, diag)}
