"""Check 2: one round of leverage-targeting sales equals Greenwood, Landier and Thesmar (2015).

Holders ``i`` with assets ``a_i`` (the notional of their long positions), debt over equity
``b_i`` (leverage ``1 + b_i``: equity is the collateral), portfolio weights ``M`` (rows sum to 1)
and asset shocks ``F`` (simple returns). A holder whose portfolio returns ``r = (M F)_i`` and
that keeps its leverage sells ``-b_i a_i r_i`` of assets, pro rata to its weights. Dollar sales
per asset are ``-M' B A M F`` and, with a linear price impact ``l_j`` per dollar sold, move asset
returns by ``L M' B A M F``; holders then lose ``A M L M' B A M F`` (second-round losses) and
the aggregate vulnerability is ``AV = -1' A M L M' B A M F / E`` with ``E`` total equity.

In the engine the shocks are scheduled fundamental jumps, the holders follow
:class:`LeverageTargeting` (written here against the Strategy interface), and their sales walk
the book with impact exponent 1, which is linear in the log price: selling ``v_j`` dollars at
price ``P_j`` moves ``log P_j`` by ``-0.01 v_j / (P_j d_j)``, so ``l_j = 0.01 / (P_j d_j)`` with
``d_j`` the 1% depth in units. The closed form is computed from the inputs alone; the measured
losses are the holders' positions (as valued in the closed form) times the log-price moves the
engine produced. Maintenance is 0 and shocks are small, so nobody is liquidated: one round.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from agents.strategies import Strategy
from experiments.validation import check_result, engine_config, make_population

__all__ = ["LeverageTargeting", "glt_closed_form", "run_greenwood"]

TOLERANCE = 1e-9


class LeverageTargeting(Strategy):
    """Sell (or buy) back to a target leverage, pro rata to fixed portfolio weights.

    A :class:`agents.strategies.Strategy`: ``orders(rows)`` returns signed quantities.

    Args:
        model: the model whose book and market the rule reads.
        rows: the book rows that follow the rule (in the order of ``target`` and ``weights``).
        target: (k,) leverage (gross notional over equity) each holder keeps.
        weights: (k, A) portfolio weights the holder trades in proportion to.
    """

    name = "glt_leverage_target"

    def __init__(self, model, rows, target, weights):
        super().__init__(model)
        self.rows = np.asarray(rows)
        self.target = np.asarray(target, dtype=float)
        self.weights = np.asarray(weights, dtype=float)
        self.seen_price = None  # the price the rule traded on, for the check

    def active(self) -> bool:
        return True

    def orders(self, rows) -> np.ndarray:
        assert np.array_equal(rows, self.rows)
        price = self.model.market.price.copy()
        book = self.model.book
        assets = (book.qty[rows] * price).sum(axis=1)
        equity = book.equity(price, rows)
        sale = assets - self.target * equity  # dollars to sell (negative: buy)
        self.seen_price = price
        return -sale[:, None] * self.weights / price[None, :]


def glt_closed_form(a, b, m, f, lam):
    """Second-round value changes ``A M L M' B A M F`` and ``AV`` (GLT 2015, eqs. 3-6)."""
    a, b, f, lam = (np.asarray(x, dtype=float) for x in (a, b, f, lam))
    m = np.asarray(m, dtype=float)
    big_a, big_b, big_l = np.diag(a), np.diag(b), np.diag(lam)
    second = big_a @ m @ big_l @ m.T @ big_b @ big_a @ m @ f
    equity = a / (1.0 + b)
    return second, float(-second.sum() / equity.sum())


def _instance(rng, n, k):
    prices = np.exp(rng.uniform(np.log(5.0), np.log(5000.0), k))
    depth = np.exp(rng.uniform(np.log(2e6), np.log(2e7), k))  # quote per 1% move
    a = np.exp(rng.normal(np.log(1e6), 1.0, n))
    b = rng.uniform(2.0, 20.0, n)
    held = rng.random((n, k)) < 0.3
    held[np.arange(n), rng.integers(0, k, n)] = True
    m = np.where(held, rng.gamma(1.0, 1.0, (n, k)), 0.0)
    m /= m.sum(axis=1, keepdims=True)
    f = np.where(rng.random(k) < 0.7, -rng.uniform(0.0, 0.03, k), 0.0)
    return prices, depth, a, b, m, f


def _run_instance(prices, depth, a, b, m, f):
    from model import ContagionModel

    k = prices.size
    symbols = [f"A{j}" for j in range(k)]
    cfg = engine_config(
        [
            {"symbol": s, "price": float(p), "depth": float(d), "max_leverage": 1000}
            for s, p, d in zip(symbols, prices, depth, strict=True)
        ],
        impact_exponent=1.0,
        maintenance=0.0,
        shocks=[
            {"step": 1, "asset": s, "return": float(x)}
            for s, x in zip(symbols, f, strict=True)
            if x != 0
        ],
        name="greenwood-landier-thesmar",
    )
    equity = a / (1.0 + b)
    qty = a[:, None] * m / prices[None, :]
    model = ContagionModel(
        cfg, population=make_population(equity, qty, prices), create_agents=False
    )
    rows = np.arange(a.size)
    rule = LeverageTargeting(model, rows, target=a / equity, weights=m)
    model.strategies = {rule.name: rule}
    model.strategy_rows = {rule.name: rows}
    p_before = np.asarray(model.market.price, dtype=float).copy()
    equity_before = float(model.book.equity(p_before).sum())
    model.step()
    p1 = rule.seen_price
    p2 = np.asarray(model.mark, dtype=float)
    log_move = np.log(p2 / p1)
    measured = a * (m @ log_move)
    # mark-to-market value change of the post-sale positions, for the notes
    mtm = (model.book.qty * (p2 - p1)).sum(axis=1)
    return {
        "measured": measured,
        "equity": equity_before,
        "liquidations": int(model.last.liquidations),
        "p0": p_before,
        "p1": p1,
        "mtm": mtm,
    }


def run_greenwood(quick: bool = False, out_dir=None, seed: int = 2015) -> dict:
    """Run random GLT instances through the engine; compare with the closed form."""
    n, k, instances = (30, 8, 3) if quick else (200, 40, 20)
    rng = np.random.default_rng(seed)
    rows = []
    for idx in range(instances):
        prices, depth, a, b, m, f = _instance(rng, n, k)
        run = _run_instance(prices, depth, a, b, m, f)
        p1_expected = prices * (1.0 + f)
        lam = 0.01 * prices / (depth * p1_expected)  # log return per dollar sold at P1
        second, av = glt_closed_form(a, b, m, f, lam)
        meas = run["measured"]
        av_meas = float(-meas.sum() / run["equity"])
        scale = np.abs(second).max()
        rows.append(
            {
                "instance": idx,
                "holders": n,
                "assets": k,
                "AV (engine)": av_meas,
                "AV (closed form)": av,
                "AV rel. error": abs(av_meas - av) / abs(av),
                "losses max rel. error": float(np.abs(meas - second).max() / scale),
                "liquidations": run["liquidations"],
                "mark-to-market vs first order": float(np.abs(run["mtm"] - second).max() / scale),
            }
        )
    table = pd.DataFrame(rows)
    passed = bool(
        (table["AV rel. error"] <= TOLERANCE).all()
        and (table["losses max rel. error"] <= TOLERANCE).all()
        and (table["liquidations"] == 0).all()
    )
    return check_result(
        "Greenwood-Landier-Thesmar (2015)",
        f"one round of leverage-targeting sales in the engine ({instances} random instances, "
        f"{n} holders x {k} assets, impact exponent 1) against the closed form: second-round "
        "losses A M L M' B A M F per holder and aggregate vulnerability AV",
        f"AV {table['AV (engine)'].min():.3%}-{table['AV (engine)'].max():.3%} of equity; "
        f"largest relative error: AV {table['AV rel. error'].max():.1e}, per-holder losses "
        f"{table['losses max rel. error'].max():.1e}; liquidations {int(table['liquidations'].sum())}",
        f"relative error <= {TOLERANCE:g}, no liquidations (one round)",
        passed,
        "Holders are cross accounts (assets = long notional, equity = collateral, leverage "
        "1 + b uniform on [3, 21]); shocks up to -3% are scheduled fundamental jumps. GLT's "
        "losses are first order (positions times returns); the engine's impact is exactly "
        "linear in the log price, so returns are log-price moves and l_j = 0.01 / (P_j d_j). "
        "GLT value second-round losses on the holdings before the sales (A M); the engine's "
        "exact mark-to-market change of the positions actually held after the sales (smaller "
        "by up to b |r| of the assets) differs from the formula by up to "
        f"{table['mark-to-market vs first order'].max():.0%} of the largest loss; that column "
        "is information, not part of the check.",
        table=table,
    )
