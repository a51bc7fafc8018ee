"""Noise schedules of A1111 that diffusers has no switch for, as plain sigma lists.

A1111 1.10 offers schedules (KL Optimal, Align Your Steps, Beta) that are defined
directly as a list of noise levels. Diffusers' Euler sampler can run any such list
(`set_timesteps(sigmas=...)`), so `samplers.py` hands these lists to it. Each
function returns the sigmas of `steps` steps, from the first (noisiest) level to the
final one, i.e. `steps + 1` values, as A1111 defines them. Pure numpy, no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

#: sigmas(steps, sigma_min, sigma_max) -> steps + 1 values, descending.
SigmaFunction = Callable[[int, float, float], list[float]]

#: NVIDIA's "Align Your Steps" noise levels for 10 steps (11 values), as published in
#: their how-to for SD 1.5 and SDXL; other step counts interpolate them in log space.
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)

#: A1111's defaults for the Beta schedule (options beta_dist_alpha / beta_dist_beta).
BETA_ALPHA = 0.6
BETA_BETA = 0.6


def kl_optimal(steps: int, sigma_min: float, sigma_max: float) -> list[float]:
    """Evenly spaced in arctan(sigma), from sigma_max down to sigma_min (not 0)."""
    fraction = np.arange(steps + 1) / steps
    angles = fraction * math.atan(sigma_min) + (1.0 - fraction) * math.atan(sigma_max)
    return [float(value) for value in np.tan(angles)]


def align_your_steps(table: tuple[float, ...]) -> SigmaFunction:
    """The published levels, resampled log-linearly to the step count, then 0.

    A1111 uses the table as it is when the step count equals its length (11 steps) and
    otherwise resamples it to `steps` levels; both end with a final 0.
    """

    def sigmas(steps: int, sigma_min: float, sigma_max: float) -> list[float]:
        if steps == len(table):
            levels = np.array(table)
        else:
            known = np.linspace(0.0, 1.0, len(table))
            wanted = np.linspace(0.0, 1.0, steps)
            levels = np.exp(np.interp(wanted, known, np.log(np.array(table))))
        return [float(value) for value in levels] + [0.0]

    return sigmas


def beta(steps: int, sigma_min: float, sigma_max: float) -> list[float]:
    """Lee et al. 2024, "Beta Sampling is All You Need": the sigma range mapped through
    the inverse CDF of Beta(0.6, 0.6), which spends more steps at both ends, then 0."""
    quantiles = beta_ppf(1.0 - np.linspace(0.0, 1.0, steps), BETA_ALPHA, BETA_BETA)
    levels = sigma_min + quantiles * (sigma_max - sigma_min)
    return [float(value) for value in levels] + [0.0]


# ------------------------------------------------------------------ Beta distribution


def _continued_fraction(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The continued fraction of the incomplete beta function (modified Lentz method);
    it converges quickly for x < (a + 1) / (a + b + 2), which the caller ensures."""
    tiny = 1e-300
    c = np.ones_like(x)
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
    result = d.copy()
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
            c = 1.0 + numerator / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            result *= c * d
        if np.all(np.abs(c * d - 1.0) < 1e-14):
            break
    return result


def beta_cdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """The regularized incomplete beta function I_x(a, b): the CDF of Beta(a, b)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    flip = x > (a + 1.0) / (a + b + 2.0)  # use I_x(a, b) = 1 - I_(1-x)(b, a) there
    xs = np.where(flip, 1.0 - x, x)
    first = np.where(flip, b, a)
    second = np.where(flip, a, b)
    inner = np.clip(xs, 1e-300, 1.0 - 1e-16)
    log_front = (
        first * np.log(inner)
        + second * np.log1p(-inner)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
        - np.log(first)
    )
    value = np.exp(log_front) * _continued_fraction(first, second, inner)
    value = np.where(xs <= 0.0, 0.0, value)
    return np.where(flip, 1.0 - value, value)


def beta_ppf(q: np.ndarray, a: float, b: float) -> np.ndarray:
    """The inverse CDF of Beta(a, b), by bisection (the CDF is monotonic on [0, 1])."""
    q = np.asarray(q, dtype=np.float64)
    low = np.zeros_like(q)
    high = np.ones_like(q)
    for _ in range(64):
        middle = (low + high) / 2.0
        below = beta_cdf(middle, a, b) < q
        low = np.where(below, middle, low)
        high = np.where(below, high, middle)
    return np.where(q <= 0.0, 0.0, np.where(q >= 1.0, 1.0, (low + high) / 2.0))
