"""A1111 1.10's schedule types on diffusers schedulers (kd_server.samplers).

The expected noise levels are computed here from A1111's published definitions
(k-diffusion's Karras/exponential formulas, the KL-optimal arctan spacing, NVIDIA's
Align Your Steps table, the Beta(0.6, 0.6) quantiles), independently of the product's
code, and compared with what the built scheduler will actually run.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kd_server.families import Family
from kd_server.samplers import (
    Schedule,
    UnknownSampler,
    build_scheduler,
    canonical_name,
    parse_schedule,
    realized,
    resolve,
)

STEPS = 10
CONFIG = json.loads(
    (Family.SD15.info.config_dir / "scheduler" / "scheduler_config.json").read_text()
)


def model_sigmas() -> np.ndarray:
    """The SD 1.5 training noise levels, sigma(t) for t = 0..999."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    alphas = np.cumprod(1.0 - betas)
    return np.asarray(((1 - alphas) / alphas) ** 0.5)


SIGMA_MIN, SIGMA_MAX = float(model_sigmas()[0]), float(model_sigmas()[-1])


def run_sigmas(name: str, schedule: str, steps: int = STEPS, family: Family | None = None):
    scheduler = build_scheduler(name, CONFIG, schedule, family)
    scheduler.set_timesteps(steps)
    return np.asarray(scheduler.sigmas, dtype=np.float64), np.asarray(scheduler.timesteps)


# --------------------------------------------------------------------- spellings


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("Automatic", Schedule.AUTOMATIC),
        ("uniform", Schedule.UNIFORM),
        ("KARRAS", Schedule.KARRAS),
        ("exponential", Schedule.EXPONENTIAL),
        ("Polyexponential", Schedule.POLYEXPONENTIAL),
        ("SGM Uniform", Schedule.SGM_UNIFORM),
        ("sgm_uniform", Schedule.SGM_UNIFORM),
        ("SGMUniform", Schedule.SGM_UNIFORM),
        ("sgm-uniform", Schedule.SGM_UNIFORM),
        ("KL Optimal", Schedule.KL_OPTIMAL),
        ("kl_optimal", Schedule.KL_OPTIMAL),
        ("Align Your Steps", Schedule.ALIGN_YOUR_STEPS),
        ("align_your_steps", Schedule.ALIGN_YOUR_STEPS),
        ("AYS", Schedule.ALIGN_YOUR_STEPS),
        ("simple", Schedule.SIMPLE),
        ("normal", Schedule.NORMAL),
        ("Normal", Schedule.NORMAL),
        ("ddim", Schedule.DDIM),
        ("Beta", Schedule.BETA),
        (" beta ", Schedule.BETA),
    ],
)
def test_schedule_spellings(spelling: str, expected: Schedule) -> None:
    assert parse_schedule(spelling) is expected


def test_every_a1111_1_10_schedule_is_known() -> None:
    labels = [
        "Automatic",
        "Uniform",
        "Karras",
        "Exponential",
        "Polyexponential",
        "SGM Uniform",
        "KL Optimal",
        "Align Your Steps",
        "Simple",
        "Normal",
        "DDIM",
        "Beta",
    ]
    assert [schedule.value for schedule in Schedule] == labels


def test_combined_names() -> None:
    assert resolve("DPM++ 2M SGM Uniform")[1] is Schedule.SGM_UNIFORM
    assert resolve("Euler Uniform")[1] is Schedule.UNIFORM  # not "SGM" + sampler "Euler"
    assert resolve("DPM++ 2M SDE Karras")[0].name == "DPM++ 2M SDE"
    assert resolve("euler a")[0].name == "Euler a"
    # A schedule inside the name wins over a separate one, as in A1111.
    assert resolve("DPM++ 2M Karras", "exponential")[1] is Schedule.KARRAS
    assert canonical_name("DPM++ 2M", "karras") == "DPM++ 2M Karras"


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(UnknownSampler, match=r"Unknown schedule type 'turbo'.*Beta"):
        resolve("Euler", "turbo")
    with pytest.raises(UnknownSampler, match="Unknown sampler 'Nope'"):
        resolve("Nope")


# ------------------------------------------------- the levels that actually run


def test_karras_is_k_diffusions_formula() -> None:
    ramp = np.linspace(0, 1, STEPS)
    rho = 7.0
    low, high = SIGMA_MIN ** (1 / rho), SIGMA_MAX ** (1 / rho)
    expected = (high + ramp * (low - high)) ** rho
    sigmas, _ = run_sigmas("Euler", "karras")
    np.testing.assert_allclose(sigmas[:-1], expected, rtol=1e-4)
    assert sigmas[-1] == 0


@pytest.mark.parametrize("spelling", ["exponential", "polyexponential"])
def test_exponential_and_polyexponential_with_rho_1(spelling: str) -> None:
    expected = np.exp(np.linspace(math.log(SIGMA_MAX), math.log(SIGMA_MIN), STEPS))
    sigmas, _ = run_sigmas("DPM++ 2M", spelling)
    np.testing.assert_allclose(sigmas[:-1], expected, rtol=1e-3)


def test_kl_optimal_is_evenly_spaced_in_arctan() -> None:
    sigmas, _ = run_sigmas("Euler", "kl_optimal")
    angles = np.arctan(sigmas)
    assert sigmas[0] == pytest.approx(SIGMA_MAX, rel=1e-4)
    assert sigmas[-1] == pytest.approx(SIGMA_MIN, rel=1e-3)  # A1111 ends at sigma_min
    np.testing.assert_allclose(np.diff(angles), np.diff(angles)[0], rtol=1e-3)


@pytest.mark.parametrize(
    ("family", "table"),
    [
        (None, [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]),
        (
            Family.SDXL,
            [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
        ),
    ],
)
def test_align_your_steps_follows_nvidias_table(family: Family | None, table: list[float]) -> None:
    # A1111: the 11 published levels as they are for 11 steps, else resampled in log space.
    exact, _ = run_sigmas("Euler", "Align Your Steps", steps=11, family=family)
    np.testing.assert_allclose(exact, [*table, 0.0], rtol=1e-5)
    resampled, _ = run_sigmas("Euler", "Align Your Steps", steps=6, family=family)
    positions = np.linspace(0, 1, 6) * (len(table) - 1)
    lower = np.floor(positions).astype(int).clip(max=len(table) - 2)
    weight = positions - lower
    logs = np.log(table)
    expected = np.exp(logs[lower] * (1 - weight) + logs[lower + 1] * weight)
    np.testing.assert_allclose(resampled, [*expected, 0.0], rtol=1e-5)


def beta_cdf_by_integration(x: float, a: float = 0.6, b: float = 0.6) -> float:
    """CDF of Beta(a, b) by quadrature after u = x**a (removes the singularity at 0)."""
    u = np.linspace(0, x**a, 200001)[1:]
    t = u ** (1 / a)
    integrand = (1 - t) ** (b - 1) / a  # x^(a-1) dx = du / a
    total = math.gamma(a + b) / (math.gamma(a) * math.gamma(b))
    return float(total * np.trapezoid(integrand, u))


def test_beta_uses_the_quantiles_of_beta_0_6() -> None:
    sigmas, _ = run_sigmas("Euler", "beta")
    assert sigmas[-1] == 0 and sigmas[0] == pytest.approx(SIGMA_MAX, rel=1e-4)
    quantiles = (sigmas[:-1] - SIGMA_MIN) / (SIGMA_MAX - SIGMA_MIN)
    wanted = 1 - np.linspace(0, 1, STEPS)
    for q, x in zip(wanted[1:-1], quantiles[1:-1], strict=True):
        assert beta_cdf_by_integration(float(x)) == pytest.approx(q, abs=2e-3)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("uniform", np.linspace(999, 0, STEPS)),
        ("normal", np.linspace(999, 0, STEPS)),
        ("sgm_uniform", np.linspace(999, 0, STEPS + 1)[:-1]),
        ("simple", 999 - np.floor(np.arange(STEPS) * 1000 / STEPS)),
        ("ddim", (1 + np.arange(STEPS) * (1000 // STEPS))[::-1]),
    ],
)
def test_timestep_spacings(schedule: str, expected: np.ndarray) -> None:
    """Uniform and Normal: the model's levels at evenly spaced timesteps from 999 to 0;
    SGM Uniform and Simple: without the last; DDIM: from 1, every 1000 // steps."""
    _, timesteps = run_sigmas("Euler", schedule)
    np.testing.assert_allclose(timesteps, expected, atol=1.0)


def test_every_schedule_runs_as_asked_with_euler() -> None:
    for schedule in Schedule:
        assert realized("Euler", schedule.value).used is schedule
        assert realized("Euler", schedule.value).note is None


def test_the_nearest_schedule_is_used_with_a_note() -> None:
    ays = realized("DPM++ 2M", "align_your_steps")
    assert ays.used is Schedule.KARRAS and ays.name == "DPM++ 2M Karras"
    assert ays.note == "Align Your Steps is not available with DPM++ 2M here; Karras was used"
    ancestral = realized("Euler a", "Karras")
    assert ancestral.used is Schedule.AUTOMATIC and "Karras" in (ancestral.note or "")
    assert realized("LCM", "sgm_uniform").used is Schedule.AUTOMATIC  # LCM picks its own
    # What the note claims is what is built.
    sigmas, _ = run_sigmas("DPM++ 2M", "align_your_steps")
    karras, _ = run_sigmas("DPM++ 2M", "karras")
    np.testing.assert_allclose(sigmas, karras)


def test_a_config_with_a_sigma_switch_on_gets_only_the_asked_one() -> None:
    config = {**CONFIG, "use_karras_sigmas": True}
    scheduler = build_scheduler("DPM++ 2M", config, "exponential")
    assert scheduler.config.use_exponential_sigmas and not scheduler.config.use_karras_sigmas
