"""Check 4b: Thurner, Farmer and Geanakoplos (2012) through the engine.

The paper's market (:mod:`experiments.validation.thurner`, the numpy reference) expressed in
the engine's own concepts, so that the claim is tested on the machinery every other run uses:

* one asset ``X`` of value ``V = 1`` (the fundamental; volatility 0), ``N = 1000`` units held
  at the start by the noise trader; the market agent holds the other side and never trades
  (no market makers; a backstop of 1e-9 of the book);
* the noise trader is one account whose cash demand ``xi_t`` follows the paper's AR(1) in log
  (``rho = 0.99``, ``sigma = 0.035``, its shocks drawn from ``model.rng``). Its demand
  ``xi / p`` rests in the book as an elastic curve (the ``noise_demand`` rule of
  :mod:`agents.leverage_cycle`): it buys
  ``xi / p - q`` if a walk ends at ``p``. It is the book: every walk, the voluntary batch's and
  every liquidation round's, clears against it, which is the paper's clearing
  ``xi / p + sum_h D_h = N``;
* ten value funds are cross accounts following the ``leverage_cycle`` rule: when the asset
  trades below ``V`` each holds ``min(beta_h m, lambda) E / p`` (``m = V - p``), sized at the
  step's opening price and sent as a market order (the engine's one-step lag: the paper
  solves demand at the clearing price itself); a fund whose equity falls to 10% of
  ``W0 = 2`` sells out, withdraws what is left and re-enters with ``W0`` after 100 steps;
  investors move ``max(-W, 0.15 (r_perf - 0.005) W)`` a step, ``r_perf`` an EWMA (0.1) of its
  returns. Every inflow and outflow is a deposit the model counts (money stays conserved);
* value funds buy below the value only: their buys are scaled so that the batch does not fill
  above ``V`` (sized at the opening price, several funds re-entering at once could otherwise bid
  for more than the noise trader holds);
* the leverage cap is the venue's: initial margin ``1 / lambda`` (``assets.max_leverage =
  lambda``) and a flat maintenance rate of ``1 / lambda``, partial liquidation with no buffer
  and no fee: a fund whose leverage a price move pushes above the cap is margin-called back to
  it by the engine, and its forced sale walks the noise trader's curve and can call the
  others (synchronised deleveraging; Poledna, Thurner, Farmer and Geanakoplos 2014).

Aggressiveness ``beta_h = 50, 100, ..., 500``: the paper's ten times. With the paper's
``5, ..., 50`` the most aggressive fund reaches a cap of 10 only when ``m > 0.2``, by when the
aggressive funds have defaulted, so above 10 the cap does not bind and raising it changes
nothing (docs/validation.md, check 4); the claim under test is about a binding cap. The check
reports how often the cap binds (some active fund held back by it or margin-called) and the
paper-parameter run beside it, for information.

Pass (as check 4, never loosened): excess kurtosis, negative skew and ACF(|r|, 1) of the
per-step log returns, means over seeds, each higher at the top cap than at the bottom one, with
a Spearman rank correlation with the cap of at least 0.8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.validation import check_result, figure_path, single_threaded_blas
from experiments.validation.stylized_facts import acf, excess_kurtosis, skewness

__all__ = [
    "CONFIG",
    "TFGMarket",
    "run_thurner_engine",
    "tfg_engine_prices",
]

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "leverage-cycle.toml"
# (the market's quantities, V, N, W0, the funds' floor and re-entry, the margin buffer: the file)
PAPER_BETAS = tuple(5.0 * h for h in range(1, 11))
BETAS = tuple(10.0 * b for b in PAPER_BETAS)
# check 4b's book: no makers, the noise trader's curve alone (a backstop of 1e-9 of it)
NO_MAKERS = {"liquidity.makers": 0, "liquidity.backstop": 1e-9, "assets.X.depth": 1.0}


class TFGMarket:
    """The engine set up as the paper's market at one leverage cap:
    experiments/configs/leverage-cycle.toml with the cap, the funds' aggressiveness and the
    seed set, and without its market makers unless ``makers``.

    Args:
        cap: the leverage cap lambda (``assets.max_leverage``; maintenance ``1 / lambda``, at
            most 0.999).
        seed: the model's seed (the noise trader's shocks come from ``model.rng``).
        betas: the funds' aggressiveness, evenly spaced (``leverage_cycle``'s
            ``aggressiveness_first`` and ``aggressiveness_last`` are its ends).
        makers: keep the file's market makers (check 6d); without them the noise trader's
            curve is the book (check 4b).
        liquidity, margin: keys of ``[liquidity]`` and ``[margin]`` set over these.
    """

    def __init__(
        self, cap: float, seed: int, betas=BETAS, *, makers=False, liquidity=None, margin=None
    ):
        from model import ContagionModel, load_config

        spacing = np.diff(betas)
        if len(betas) > 1 and not np.allclose(spacing, spacing[0]):
            raise ValueError("the funds' aggressiveness must be evenly spaced (leverage_cycle)")
        over = {
            "name": f"tfg-cap-{cap:g}",
            "seed": seed,
            "steps": 1,
            "assets.X.max_leverage": cap,
            "margin.maintenance": min(1.0 / cap, 0.999),
            "traders.rules.leverage_cycle.aggressiveness_first": float(betas[0]),
            "traders.rules.leverage_cycle.aggressiveness_last": float(betas[-1]),
            "traders.population": str(CONFIG.parent / "leverage-cycle-population.csv"),
            **({} if makers else NO_MAKERS),
            **{f"liquidity.{k}": v for k, v in (liquidity or {}).items()},
            **{f"margin.{k}": v for k, v in (margin or {}).items()},
        }
        self.model = m = ContagionModel(
            load_config(CONFIG, overrides=over), create_agents=False, screen=False
        )
        self.fund_rows = m.strategy_rows["leverage_cycle"]
        if self.fund_rows.size != len(betas):
            raise ValueError(f"{len(betas)} funds asked, the population file has others")
        self.funds = m.strategies["leverage_cycle"]
        self.noise = m.strategies["noise_demand"]
        self.margin_calls = 0  # steps with a margin call

    def step(self) -> float:
        """One day: one engine step (the noise trader's new cash demand first); the price."""
        m = self.model
        m.step()
        self.margin_calls += int(m.last.liquidations > 0)
        return float(m.market.price[0])


def tfg_engine_prices(cap: float, steps: int, seed: int, betas=BETAS, **options):
    """Prices (``steps + 1``, from ``V``) of the engine's TFG market, and the market
    (``options``: :class:`TFGMarket`'s keywords)."""
    market = TFGMarket(cap, seed, betas, **options)
    prices = np.empty(steps + 1)
    prices[0] = market.model.market.initial_price[0]  # the value V
    for t in range(steps):
        prices[t + 1] = market.step()
    return prices, market


def _stats(prices, burn_in, market, steps) -> dict:
    r = np.diff(np.log(prices[burn_in:]))
    return {
        "excess kurtosis": excess_kurtosis(r),
        "skew": skewness(r),
        "ACF(|r|, 1)": acf(np.abs(r), 1),
        "sd": float(r.std()),
        "capped or called": (market.funds.capped + market.margin_calls) / steps,
        "margin calls": market.margin_calls / steps,
    }


def _spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def _sweep(caps, seeds, steps, burn_in, betas, seed0) -> pd.DataFrame:
    rows = []
    with single_threaded_blas():
        for cap in caps:
            for s in range(seeds):  # common random numbers: seed s drives every cap
                prices, market = tfg_engine_prices(cap, steps, seed0 + s, betas)
                rows.append(
                    {"leverage cap": cap, "seed": s, **_stats(prices, burn_in, market, steps)}
                )
    return pd.DataFrame(rows)


def run_thurner_engine(quick: bool = False, out_dir=None, seed: int = 2012) -> dict:
    """The leverage-cycle check through the engine (module docstring)."""
    if quick:
        caps, seeds, steps, burn_in = [1.0, 5.0, 20.0], 1, 3_000, 300
    else:
        caps, seeds, steps, burn_in = [1.0, 2.0, 5.0, 10.0, 15.0, 20.0], 2, 15_000, 1_000
    runs = _sweep(caps, seeds, steps, burn_in, BETAS, seed)
    paper = pd.DataFrame(columns=runs.columns)
    if not quick:  # the paper's aggressiveness, for information
        paper = _sweep([caps[0], caps[-1]], 1, steps, burn_in, PAPER_BETAS, seed)
    cols = ["excess kurtosis", "skew", "ACF(|r|, 1)", "sd", "capped or called", "margin calls"]
    table = runs.groupby("leverage cap")[cols].mean()
    verdict = {}
    for name, sign, col in (
        ("excess kurtosis", 1.0, "excess kurtosis"),
        ("negative skew", -1.0, "skew"),
        ("ACF(|r|, 1)", 1.0, "ACF(|r|, 1)"),
    ):
        v = sign * table[col].to_numpy()
        rho = _spearman(caps, v)
        verdict[name] = {"spearman": rho, "ok": bool(v[-1] > v[0] and rho >= 0.8)}
    binding = table["capped or called"].to_numpy()
    binds = bool((binding >= 0.10).all())  # reported (docs/validation.md, check 4b)
    passed = all(x["ok"] for x in verdict.values())
    figures = []
    path = figure_path(out_dir, "thurner_engine.png")
    if path is not None:
        _figure(path, runs)
        figures.append(path.name)
    caps_text = ", ".join(f"{c:g}" for c in caps)

    def series(col, sign=1.0):
        return ", ".join(f"{sign * x:.2f}" for x in table[col].to_numpy())

    paper_text = (
        "not run in the quick variant"
        if quick
        else "; ".join(
            f"cap {r['leverage cap']:g}: kurtosis {r['excess kurtosis']:.2f}, skew {r['skew']:.2f}, "
            f"ACF(|r|,1) {r['ACF(|r|, 1)']:.3f}, capped or called {r['capped or called']:.1%}"
            for _, r in paper.iterrows()
        )
    )
    notes = (
        "The engine's own market: the noise trader's elastic demand rests in the book and every "
        "walk clears against it; funds are cross accounts margin-called back to the cap by the "
        f"liquidation engine. Aggressiveness 50-500 (the paper's x10); {seeds} seed(s) x "
        f"{steps:,} steps, the first {burn_in:,} dropped; common random numbers across caps. "
        "Share of steps in which some active fund is held back by the cap or margin-called "
        f"(reported, not part of the verdict): {series('capped or called')}"
        f"{'' if binds else ' (below 10% at the top caps)'}. "
        f"Paper's aggressiveness 5-50, for information: {paper_text}."
    )
    if not passed:
        failing = [k for k, x in verdict.items() if not x["ok"]]
        notes += f" FAIL: not rising over the caps: {', '.join(failing)}."
    return check_result(
        "Thurner-Farmer-Geanakoplos through the engine",
        f"excess kurtosis, skew and ACF(|r|, 1) of returns over the leverage cap ({caps_text}) "
        "with leveraged value funds as margin accounts, margin calls by the liquidation engine "
        "and the noise trader's demand as the book",
        f"means over seeds at caps {caps_text}: kurtosis {series('excess kurtosis')}; skew "
        f"{series('skew')}; ACF(|r|,1) {series('ACF(|r|, 1)')}; Spearman rho with the cap "
        + ", ".join(f"{k} {x['spearman']:.2f}" for k, x in verdict.items()),
        "each of kurtosis, -skew and ACF(|r|,1) higher at the top cap than at the bottom one, "
        "Spearman rho >= 0.8",
        passed,
        notes,
        figures=figures,
        table=table,
        data={"runs": runs, "paper": paper, "verdict": verdict, "binds": binds},
    )


def _figure(path, runs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
    for ax, (col, sign, label) in zip(
        axes,
        (
            ("excess kurtosis", 1.0, "excess kurtosis"),
            ("skew", -1.0, "negative skew"),
            ("ACF(|r|, 1)", 1.0, "ACF(|r|, 1)"),
            ("capped or called", 1.0, "share of steps capped or margin-called"),
        ),
        strict=True,
    ):
        ax.plot(runs["leverage cap"], sign * runs[col], "o", color="0.6", ms=4, label="seeds")
        mean = runs.groupby("leverage cap")[col].mean()
        ax.plot(mean.index, sign * mean.to_numpy(), "-o", color="C3", label="mean")
        ax.set_xlabel("leverage cap lambda")
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("Thurner-Farmer-Geanakoplos through the engine: returns over the leverage cap")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
