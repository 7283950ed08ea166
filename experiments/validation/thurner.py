"""Check 4: leverage causes fat tails and clustered volatility (Thurner, Farmer, Geanakoplos 2012).

One asset with fundamental value ``V = 1`` and ``N = 1000`` shares; a noise trader whose cash
demand follows ``log xi_t = rho log xi_{t-1} + sigma chi_t + (1 - rho) log(N V)``
(``rho = 0.99``, ``sigma = 0.035``); ten value funds with aggressiveness ``beta_h = 5, 10, ...,
50`` that, when the asset trades below ``V``, hold ``min(beta_h m, lambda_max) W_h`` in it
(``m = V - p`` the mispricing, ``W_h`` the fund's wealth at ``p``), borrowing up to the leverage
cap ``lambda_max``. The price clears the market, ``xi / p + sum_h D_h(p) = N``. A fund whose wealth
falls to 10% of ``W0 = 2`` is wound up and re-enters with ``W0`` after 100 steps; investors move
``max(-W, 0.15 (r_perf - 0.005) W)`` into each fund, with ``r_perf`` an exponential average
(weight 0.1) of its returns. Equations as in the public replication by L. Meisser
(davidrpugh/sfi-complexity-mooc, notebooks/leverage.ipynb), with the paper's investor
sensitivity 0.15.

This is the paper's own market (Walrasian clearing, not the engine's order-book impact), written
here in plain Python so that the check tests the paper's claim, not a translation of it: as the
leverage cap rises, excess kurtosis, negative skew and the autocorrelation of ``|r|`` rise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from experiments.validation import check_result, figure_path
from experiments.validation.stylized_facts import acf, excess_kurtosis, skewness

__all__ = ["run_thurner", "simulate_tfg"]

N_SHARES = 1000.0
V = 1.0
RHO = 0.99
SIGMA = 0.035
BETAS = tuple(5.0 * h for h in range(1, 11))
W0 = 2.0
DEFAULT_FLOOR = 0.1  # fraction of W0 at which a fund is wound up
REENTRY = 100
PERF_WEIGHT = 0.1
FLOW_SENSITIVITY = 0.15
BENCHMARK = 0.005
P_MIN = 0.01


def simulate_tfg(leverage_cap: float, steps: int, rng: np.random.Generator) -> np.ndarray:
    """Simulate the model; return the price path (``steps + 1`` prices, starting at ``V``)."""
    k = len(BETAS)
    cash = [W0] * k
    shares = [0.0] * k
    delay = [0] * k
    perf = [0.0] * k
    prev_inv = [0.0] * k
    prev_wealth = [W0] * k
    log_anchor = (1.0 - RHO) * math.log(N_SHARES * V)
    log_xi = math.log(N_SHARES * V)
    shocks = rng.standard_normal(steps)
    prices = np.empty(steps + 1)
    prices[0] = p_old = V
    lam = float(leverage_cap)

    def excess(p, xi):
        demand = xi / p
        m = V - p
        if m > 0:
            for h in range(k):
                if delay[h] == 0:
                    w = cash[h] + shares[h] * p
                    if w > 0:
                        demand += min(BETAS[h] * m, lam) * w / p
        return demand - N_SHARES

    for t in range(steps):
        log_xi = RHO * log_xi + SIGMA * shocks[t] + log_anchor
        xi = math.exp(log_xi)
        hi = max(5.0, 2.0 * xi / N_SHARES)
        p = brentq(excess, P_MIN, hi, args=(xi,), xtol=1e-14, rtol=1e-12)
        m = V - p
        for h in range(k):
            if delay[h] > 0:
                delay[h] -= 1
                if delay[h] == 0:  # re-enters with fresh capital and no track record
                    cash[h], shares[h] = W0, 0.0
                    perf[h], prev_inv[h], prev_wealth[h] = 0.0, 0.0, W0
                continue
            w = max(0.0, cash[h] + shares[h] * p)
            held = min(BETAS[h] * m, lam) * w / p if m > 0 else 0.0
            shares[h] = held
            cash[h] = w - held * p
            if w <= DEFAULT_FLOOR * W0:
                cash[h], shares[h], delay[h] = 0.0, 0.0, REENTRY
                continue
            ret = (p / p_old - 1.0) * prev_inv[h] / prev_wealth[h] if prev_wealth[h] > 0 else 0.0
            perf[h] = (1.0 - PERF_WEIGHT) * perf[h] + PERF_WEIGHT * ret
            prev_inv[h] = held * p
            prev_wealth[h] = w
            cash[h] += max(FLOW_SENSITIVITY * (perf[h] - BENCHMARK) * w, -w)
        prices[t + 1] = p_old = p
    return prices


def _stats(prices, burn_in, cap):
    r = np.diff(np.log(prices[burn_in:]))
    mispricing = V - prices[burn_in + 1 :]
    return {
        "excess kurtosis": excess_kurtosis(r),
        "skew": skewness(r),
        "ACF(|r|, 1)": acf(np.abs(r), 1),
        "sd": float(r.std()),
        # how often the most aggressive fund wants more leverage than the cap allows
        "cap binds": float(np.mean(max(BETAS) * mispricing > cap)),
    }


def _spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def run_thurner(quick: bool = False, out_dir=None, seed: int = 2012) -> dict:
    """Statistics of returns over the leverage cap, several seeds each."""
    if quick:
        caps, seeds, steps, burn_in = [1.0, 5.0, 20.0], 1, 20_000, 1_000
    else:
        caps, seeds, steps, burn_in = [1.0, 2.0, 5.0, 10.0, 15.0, 20.0], 3, 50_000, 2_000
    root = np.random.SeedSequence(seed)
    streams = root.spawn(seeds)
    rows, paths = [], {}
    for cap in caps:
        for s, stream in enumerate(streams):
            # common random numbers: seed s drives the same noise trader at every cap
            prices = simulate_tfg(cap, steps, np.random.default_rng(stream))
            rows.append({"leverage cap": cap, "seed": s, **_stats(prices, burn_in, cap)})
            if s == 0:
                paths[cap] = prices
    runs = pd.DataFrame(rows)
    table = runs.groupby("leverage cap")[
        ["excess kurtosis", "skew", "ACF(|r|, 1)", "sd", "cap binds"]
    ].agg(["mean", "min", "max"])
    mean = runs.groupby("leverage cap")[["excess kurtosis", "skew", "ACF(|r|, 1)"]].mean()
    rises = {
        "excess kurtosis": mean["excess kurtosis"].to_numpy(),
        "negative skew": -mean["skew"].to_numpy(),
        "ACF(|r|, 1)": mean["ACF(|r|, 1)"].to_numpy(),
    }
    verdict = {}
    for name, v in rises.items():
        rho = _spearman(caps, v)
        verdict[name] = {"spearman": rho, "ok": bool(v[-1] > v[0] and rho >= 0.8)}
    passed = all(x["ok"] for x in verdict.values())

    binds = runs.groupby("leverage cap")["cap binds"].mean().to_numpy()
    figures = []
    path = figure_path(out_dir, "thurner.png")
    if path is not None:
        _figure(path, runs, paths, caps, burn_in)
        figures.append(path.name)

    def series(col, sign=1.0):
        return ", ".join(f"{sign * x:.2f}" for x in mean[col].to_numpy())

    caps_text = ", ".join(f"{c:g}" for c in caps)
    return check_result(
        "Thurner-Farmer-Geanakoplos (2012), the paper's market (reference)",
        f"excess kurtosis, skew and ACF(|r|, 1) of returns over the leverage cap "
        f"({caps_text}; {seeds} seed(s) x {steps:,} steps each) in the paper's model: they "
        "must rise with the cap",
        f"means over seeds at caps {caps_text}: kurtosis {series('excess kurtosis')}; skew "
        f"{series('skew')}; ACF(|r|,1) {series('ACF(|r|, 1)')}; Spearman rho with the cap "
        + ", ".join(f"{k} {x['spearman']:.2f}" for k, x in verdict.items()),
        "each of kurtosis, -skew and ACF(|r|,1) higher at the top cap than at the bottom one, "
        "Spearman rho >= 0.8 (indicative re-implementation: kurtosis 0.2-0.3 at 1, 8-14 at "
        "10-20; ACF(|r|,1) 0.02-0.06 at 1, 0.19-0.24 at 10-20; skew -0.6 to -0.7 at high caps)",
        passed,
        "Standalone simulation of the paper's market (market clearing by root finding), the "
        "reference for check 4b, which runs the same market through the engine; the first "
        f"{burn_in:,} steps of each run are dropped. The same noise-trader "
        "shocks drive every cap (common random numbers). 'cap binds' is the share of steps in "
        "which the most aggressive fund (beta 50) wants more leverage than the cap: "
        + ", ".join(f"{b:.1%}" for b in binds)
        + f" at caps {caps_text}."
        + ("" if passed else _failure_note(verdict, mean, caps, binds)),
        figures=figures,
        table=table,
        data={"runs": runs, "verdict": verdict},
    )


def _failure_note(verdict, mean, caps, binds) -> str:
    """Why the statistics did not rise over the whole range of caps, from the measurements."""
    failing = [k for k, x in verdict.items() if not x["ok"]]
    note = f" FAIL: not rising over the whole range: {', '.join(failing)}."
    kurt = mean["excess kurtosis"].to_numpy()
    peak = int(np.argmax(kurt))
    if peak < len(caps) - 1:
        note += (
            f" The statistics rise up to cap {caps[peak]:g} and then level off (kurtosis "
            + ", ".join(f"{x:.2f}" for x in kurt[peak:])
            + f" at caps {', '.join(f'{c:g}' for c in caps[peak:])}; min-max over seeds in the "
            "table). Our explanation: above that cap the cap rarely binds (the "
            f"most aggressive fund is held back by it in {binds[peak]:.1%} of steps at cap "
            f"{caps[peak]:g} and {binds[-1]:.1%} at cap {caps[-1]:g}), because the funds' "
            "buying keeps the mispricing small, so raising it further changes little. The "
            "paper's claim holds over the range where the cap binds; the monotone rise over "
            "the whole range does not come out. Kurtosis at high caps is dominated by a few "
            "crashes per run and varies widely between seeds."
        )
    return note


def _figure(path, runs, paths, caps, burn_in) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 7))
    grid = fig.add_gridspec(2, 3)
    for i, (col, sign, label) in enumerate(
        (
            ("excess kurtosis", 1.0, "excess kurtosis"),
            ("skew", -1.0, "negative skew"),
            ("ACF(|r|, 1)", 1.0, "ACF(|r|, 1)"),
        )
    ):
        ax = fig.add_subplot(grid[0, i])
        ax.plot(runs["leverage cap"], sign * runs[col], "o", color="0.6", ms=4, label="seeds")
        mean = runs.groupby("leverage cap")[col].mean()
        ax.plot(mean.index, sign * mean.to_numpy(), "-o", color="C3", label="mean")
        ax.set_xlabel("leverage cap lambda_max")
        ax.set_title(label)
        ax.legend(fontsize=8)
    window = slice(burn_in, burn_in + 10_000)
    returns = {cap: np.diff(np.log(paths[cap][window])) for cap in (caps[0], caps[-1])}
    lim = 1.05 * max(np.abs(r).max() for r in returns.values())
    bottom = grid[1, :].subgridspec(1, 2)
    for i, (cap, r) in enumerate(returns.items()):
        ax = fig.add_subplot(bottom[0, i])
        ax.plot(r, color="C0" if i == 0 else "C3", lw=0.4)
        ax.set_ylim(-lim, lim)
        ax.set_title(f"log returns, leverage cap {cap:g} (10,000 steps after burn-in)")
        ax.set_xlabel("step")
    fig.suptitle("Thurner-Farmer-Geanakoplos: returns over the leverage cap")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
