"""The inference methods of ``contagion calibrate``: ABC-SMC (pyabc) and a Gaussian-process
emulator (scikit-learn). Both ask for model runs in batches through a
:class:`experiments.calibrate.RunStore`, which runs them on the sweep executors, records them
durably and reads them back on ``--resume``; both are deterministic functions of the seed and
of the runs' results (docs/calibration.md).

ABC-SMC (default). pyabc's :class:`pyabc.ABCSMC` (Toni et al. 2009; Beaumont et al. 2009)
with its defaults where they suit: uniform priors on the unit cube (log priors uniform in the
log), a multivariate normal perturbation kernel fitted to each generation, the median epsilon
schedule, and an adaptive weighted Euclidean distance (:class:`pyabc.AdaptivePNormDistance`,
Prangle 2017) whose per-target scales are refitted every generation from the spread of that
generation's simulations: at the start the prior-predictive spread. A band target enters as
its excess (0 inside the band, the distance to the nearer edge outside) with observed 0.
pyabc's own parallel samplers draw parameters in worker processes from the global NumPy
stream; ``BatchSampler`` (built on pyabc's Sampler when pyabc is imported) instead draws each batch of parameters in this process, from a
stream seeded by (seed, generation, batch), runs the batch on our executors, and replays the
draws with the results: same seed, same posterior, with any number of workers.

Emulator. A space-filling design (scrambled Sobol points over the prior) is run once; a
Gaussian process per target (a constant times an anisotropic RBF kernel plus white noise, the
noise standing for the run-to-run spread) emulates the metric; the likelihood of the observed
value (or of landing in the band) under the emulator's predictive normal, including its own
uncertainty, weights prior draws (importance sampling in two stages: the prior, then a normal
fitted to the first stage). It spends the budget on one design instead of zooming in, so it
reads the whole prior box but is only as good as a stationary GP with homoscedastic noise.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.calibrate import (
    CalibrationSpec,
    RunStore,
    resample,
    run_seed,
    target_matrix,
)

__all__ = ["abc_smc", "emulator", "gp_fit"]

_GEN_OFFSET = 1  # pyabc's calibration sample is generation -1: stage numbers start at 0


# --------------------------------------------------------------------------------------------
# ABC-SMC with pyabc
# --------------------------------------------------------------------------------------------


def _pyabc():
    try:
        import pyabc
    except ImportError:
        from model.errors import UsageError

        raise UsageError(
            "calibrate.method: abc-smc needs the optional package pyabc "
            "(pip install 'margin-contagion[calibration]')"
        ) from None
    for name in (
        "ABC",
        "Sampler",
        "Epsilon",
        "Distance",
        "Acceptor",
        "History",
        "Population",
        "Transition",
        "pyabc",
    ):
        logging.getLogger(name if name == "pyabc" else f"ABC.{name}").setLevel(logging.WARNING)
    logging.getLogger("ABC").setLevel(logging.WARNING)
    return pyabc


class _Replay:
    """The model pyabc calls. In ``collect`` mode it only notes the parameters asked for (and
    answers the observed statistics, so nothing downstream sees a hole); in ``replay`` mode it
    answers the batch's results in order."""

    def __init__(self, observed: dict):
        self.observed = observed
        self.mode = "collect"
        self.asked: list[dict] = []
        self.answers: list[dict] = []

    def __call__(self, par) -> dict:
        if self.mode == "collect":
            self.asked.append(dict(par))
            return dict(self.observed)
        return self.answers.pop(0)


def _make_sampler_class(pyabc):
    class BatchSampler(pyabc.sampler.Sampler):
        """A pyabc sampler that runs each batch through a :class:`RunStore`: parameters are
        drawn in this process (stream seeded by seed, generation and batch), the batch is run
        on the executor, then the same draws are replayed with the results. Batches never
        exceed the calibration's budget; when it runs out mid-generation the generation is
        reported incomplete and pyabc stops with the last complete one."""

        def __init__(self, spec: CalibrationSpec, store: RunStore, replay: _Replay, stats):
            super().__init__()
            self.spec, self.store, self.replay, self.stats = spec, store, replay, stats
            self.used = 0
            self.rate = 0.5  # acceptance rate guess for sizing the first batch
            self.generations = []

        def sample_until_n_accepted(
            self, n, simulate_one, t, *, max_eval=np.inf, all_accepted=False, ana_vars=None
        ):
            sample = self._create_empty_sample()
            g, b, evaluated = t + _GEN_OFFSET, 0, 0
            while sample.n_accepted < n:
                left = self.spec.budget - self.used
                need = n - sample.n_accepted
                size = need if all_accepted else math.ceil(1.1 * need / max(self.rate, 0.02))
                size = min(max(size, min(8, n)), 4 * n, left)
                if size <= 0 or evaluated >= max_eval:
                    sample.ok = False
                    break
                accepted = self._batch(sample, simulate_one, g, b, size, need)
                self.used += size
                evaluated += size
                b += 1
                if not all_accepted:
                    self.rate = max(accepted / size, 0.01)
            self.nr_evaluations_ = max(evaluated, 1)
            self.generations.append(
                {"generation": t, "runs": evaluated, "accepted": int(sample.n_accepted)}
            )
            return sample

        def _batch(self, sample, simulate_one, g, b, size, need) -> int:
            np.random.seed(np.random.SeedSequence([self.spec.seed, 5, g, b]).generate_state(1))  # noqa: NPY002 (pyabc draws from the global stream)
            state = np.random.get_state()  # noqa: NPY002
            self.replay.mode, self.replay.asked = "collect", []
            for _ in range(size):
                simulate_one()
            asked = self.replay.asked
            u = np.array([[a[f"u{j}"] for j in range(len(self.spec.priors))] for a in asked])
            points = [self.spec.point(row) for row in u]
            seeds = [run_seed(self.spec.seed, g, b, i) for i in range(size)]
            results = self.store.evaluate(f"g{g:03d}-b{b:03d}", points, seeds)
            np.random.set_state(state)  # noqa: NPY002
            self.replay.mode = "replay"
            self.replay.answers = [self.stats(r) for r in results]
            accepted = 0
            for i in range(size):
                particle = simulate_one()
                if particle.parameter != asked[i]:  # pragma: no cover - a pyabc change
                    raise RuntimeError("pyabc drew different parameters on replay")
                if accepted < need:
                    sample.append(particle)
                    accepted += bool(particle.accepted)
            self.replay.answers = []
            return accepted

    return BatchSampler


def _scale(*, samples: np.ndarray, **kwargs) -> np.ndarray:
    """Per-target scale of a distance: 1.4826 x MAD of the simulations (a standard deviation
    for normal data, robust to a few wild runs); their standard deviation where the MAD is 0
    (over half the runs on one value, e.g. inside a band); 1 when both are 0. NaN (failed
    runs) are left out."""
    samples = np.asarray(samples, dtype=float)
    with np.errstate(all="ignore"):
        med = np.nanmedian(samples, axis=0)
        mad = 1.4826 * np.nanmedian(np.abs(samples - med), axis=0)
        std = np.nanstd(samples, axis=0)
    scale = np.where(np.isfinite(mad) & (mad > 0), mad, std)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


def abc_smc(spec: CalibrationSpec, store: RunStore, out: Path) -> tuple[pd.DataFrame, dict]:
    """ABC-SMC with pyabc through our executors; returns (posterior, account)."""
    pyabc = _pyabc()
    sampler_class = _make_sampler_class(pyabc)
    names = [f"t{j}" for j in range(len(spec.targets))]
    observed = dict.fromkeys(names, 0.0)
    for j, t in enumerate(spec.targets):
        observed[names[j]] = 0.0 if t.is_band else t.low

    def stats(result: dict | None) -> dict:
        row = target_matrix(spec, [result])[0]
        return {
            names[j]: float(t.excess(row[j]) if t.is_band else row[j])
            for j, t in enumerate(spec.targets)
        }

    replay = _Replay(observed)
    sampler = sampler_class(spec, store, replay, stats)
    prior = pyabc.Distribution(
        **{f"u{j}": pyabc.RV("uniform", 0.0, 1.0) for j in range(len(spec.priors))}
    )
    abc = pyabc.ABCSMC(
        replay,
        prior,
        pyabc.AdaptivePNormDistance(p=2, scale_function=_scale),
        population_size=spec.population,
        sampler=sampler,
    )
    db = out / "pyabc.db"
    db.unlink(missing_ok=True)  # derived: rebuilt by the replay on --resume
    np.random.seed(np.random.SeedSequence([spec.seed, 6]).generate_state(1))  # noqa: NPY002 (pyabc draws from the global stream)
    abc.new(f"sqlite:///{db}", observed)
    # a run whose prices hit their limits can report astronomical amounts: its distance
    # overflows to inf and it is rejected, which is right; numpy need not say so each time
    with np.errstate(over="ignore", invalid="ignore"):
        history = abc.run(max_nr_populations=spec.generations, max_total_nr_simulations=spec.budget)
    frame, w = history.get_distribution(m=0, t=history.max_t)
    post = pd.DataFrame(
        {p.key: p.value(frame[f"u{j}"].to_numpy()) for j, p in enumerate(spec.priors)}
    )
    for p in spec.priors:
        if p.integer:
            post[p.key] = np.round(post[p.key]).astype(np.int64)
    post["weight"] = np.asarray(w, dtype=float) / np.sum(w)
    pops = history.get_all_populations()
    eps = pops[pops["t"] >= 0]["epsilon"].tolist()
    info = {
        "method": "abc-smc (pyabc ABCSMC, adaptive p=2 distance, median epsilon)",
        "runs": store.done,
        "generations": int(history.max_t + 1),
        "epsilons": [float(e) for e in eps],
        "population": spec.population,
        "per_generation": sampler.generations,
        "ess": float(1.0 / np.sum(post["weight"].to_numpy() ** 2)),
    }
    return post.reset_index(drop=True), info


# --------------------------------------------------------------------------------------------
# Gaussian-process emulator
# --------------------------------------------------------------------------------------------


def gp_fit(x: np.ndarray, y: np.ndarray, seed: int, fit_points: int = 400):
    """A GP of ``y`` over unit-cube ``x``: hyperparameters fitted by marginal likelihood on at
    most ``fit_points`` of the runs, then conditioned on all of them (the fit is cubic in the
    number of points; the conditioning is done once)."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    d = x.shape[1]
    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.full(d, 0.3), (1e-2, 1e2)) + WhiteKernel(
        0.1, (1e-6, 1e1)
    )
    rng = np.random.default_rng(seed)
    sub = rng.permutation(len(x))[: min(fit_points, len(x))]
    gp = GaussianProcessRegressor(
        kernel, normalize_y=True, n_restarts_optimizer=2, random_state=seed
    )
    gp.fit(x[sub], y[sub])
    final = GaussianProcessRegressor(gp.kernel_, normalize_y=True, optimizer=None)
    return final.fit(x, y)


def _loglik(spec: CalibrationSpec, gps: list, u: np.ndarray) -> np.ndarray:
    """Log likelihood of the targets at unit points ``u`` under the emulators."""
    from scipy.stats import norm

    total = np.zeros(len(u))
    for t, gp in zip(spec.targets, gps, strict=True):
        for lo in range(0, len(u), 4096):
            mu, sd = gp.predict(u[lo : lo + 4096], return_std=True)
            sd = np.maximum(sd, 1e-12)
            if t.is_band:
                p = norm.cdf((t.high - mu) / sd) - norm.cdf((t.low - mu) / sd)
                total[lo : lo + 4096] += np.log(np.maximum(p, 1e-300))
            else:
                total[lo : lo + 4096] += norm.logpdf(t.low, mu, sd)
    return total


def emulator(spec: CalibrationSpec, store: RunStore, out: Path) -> tuple[pd.DataFrame, dict]:
    """The GP-emulator posterior; returns (posterior, account)."""
    from scipy.stats import qmc

    d = len(spec.priors)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 7]))
    with warnings.catch_warnings():  # any budget: Sobol's balance needs a power of 2
        warnings.simplefilter("ignore", UserWarning)
        u = qmc.Sobol(d, scramble=True, rng=rng).random(spec.budget)
    seeds = [run_seed(spec.seed, 0, 0, i) for i in range(spec.budget)]
    results = store.evaluate("design", [spec.point(row) for row in u], seeds)
    y = target_matrix(spec, results)
    ok = np.all(np.isfinite(y), axis=1)
    if ok.sum() < 10:
        raise RuntimeError(f"only {int(ok.sum())} design runs succeeded; cannot fit emulators")
    gps = [gp_fit(u[ok], y[ok, j], spec.seed + j) for j in range(len(spec.targets))]
    n = 8192
    # stage 1: the prior
    u1 = qmc.Sobol(d, scramble=True, rng=rng).random_base2(13)  # n = 8192
    l1 = _loglik(spec, gps, u1)
    w1 = np.exp(l1 - l1.max())
    # stage 2: a normal fitted to stage 1 (covariance doubled), truncated to the unit cube
    mean = np.average(u1, axis=0, weights=w1)
    cov = 2.0 * np.atleast_2d(np.cov(u1.T, aweights=w1)) + 1e-6 * np.eye(d)
    u2 = rng.multivariate_normal(mean, cov, size=4 * n)
    u2 = u2[np.all((u2 >= 0) & (u2 <= 1), axis=1)][:n]
    from scipy.stats import multivariate_normal

    l2 = _loglik(spec, gps, u2) - multivariate_normal(mean, cov).logpdf(u2)
    w2 = np.exp(l2 - l2.max())
    ess = float(w2.sum() ** 2 / np.sum(w2**2)) if len(u2) else 0.0
    idx = resample(w2, spec.draws, spec.seed, 7)
    post = pd.DataFrame({p.key: p.value(u2[idx, j]) for j, p in enumerate(spec.priors)})
    for p in spec.priors:
        if p.integer:
            post[p.key] = np.round(post[p.key]).astype(np.int64)
    info = {
        "method": "emulator (scikit-learn GP per target, importance sampling)",
        "runs": store.done,
        "design_failed": int((~ok).sum()),
        "ess": ess,
        "kernels": [str(gp.kernel_) for gp in gps],
    }
    return post, info
