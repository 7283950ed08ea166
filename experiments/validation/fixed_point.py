"""Check 1: a full-liquidation cascade ends at the fixed point of the price map.

One asset, long cross accounts with a flat maintenance rate ``r``, full liquidation, no
fundamental noise. After a shock the fundamental is ``F``. An account with wallet ``W``,
quantity ``q`` and entry ``e`` is below maintenance at price ``P`` when
``W + q (P - e) < r q P``, i.e. when ``P`` is below its liquidation price
``LP = (q e - W) / (q (1 - r))``. Liquidating a set ``S`` of accounts sells ``Q(S) = sum q``
and, by the impact law of docs/design.md, leaves the price at
``G(S) = F exp(-0.01 (Q(S) / d) ** beta)`` with ``d`` the 1% depth in units.

Prices only fall, so the liquidated set is always the accounts with the highest liquidation
prices. Sorting them by ``LP`` (descending), the cascade stops at the first ``k`` for which the
price after selling the top ``k`` is not below the ``(k + 1)``-th liquidation price: the least
fixed point of the map. This module computes that ``k`` by a sorted scan, which shares nothing
with the engine's round loop, and also iterates the map round by round (every account below
the current price goes at once), which gives the price after each of the engine's rounds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.validation import check_result, engine_config, figure_path, make_population

__all__ = ["expected_cascade", "price_map_rounds", "run_fixed_point"]

P0 = 100.0
RATE = 0.01  # flat maintenance rate


def liquidation_prices(wallet, qty, entry, rate):
    """Liquidation price of each long cross account with one position (closed form)."""
    return (qty * entry - wallet) / (qty * (1.0 - rate))


def expected_cascade(lp, qty, fundamental, depth_qty, beta):
    """The least fixed point by a sorted scan.

    Returns:
        ``(liquidated, price)``: a boolean mask of the accounts liquidated and the final price.
    """
    order = np.argsort(-lp, kind="stable")
    sold = np.concatenate([[0.0], np.cumsum(qty[order])])
    price_after = fundamental * np.exp(-0.01 * (sold / depth_qty) ** beta)  # after top k
    stops = price_after[:-1] >= lp[order]  # the (k+1)-th account survives the price after k
    k = int(np.argmax(stops)) if stops.any() else lp.size
    liquidated = np.zeros(lp.size, dtype=bool)
    liquidated[order[:k]] = True
    return liquidated, float(price_after[k])


def price_map_rounds(lp, qty, fundamental, depth_qty, beta):
    """Iterate the price map: each round liquidates everyone whose LP is above the price.

    Returns:
        The price after each round (empty if nobody is liquidated at ``fundamental``).
    """
    order = np.argsort(-lp, kind="stable")
    lp_desc = lp[order]
    sold = np.concatenate([[0.0], np.cumsum(qty[order])])
    prices, k, price = [], 0, fundamental
    while True:
        k_new = int(np.searchsorted(-lp_desc, -price, side="left"))  # count of lp > price
        if k_new == k:
            return np.array(prices)
        k = k_new
        price = fundamental * np.exp(-0.01 * (sold[k] / depth_qty) ** beta)
        prices.append(price)


def _population(rng, n):
    leverage = np.clip(1.0 + 9.0 * rng.lognormal(0.0, 0.7, n), 1.2, 90.0)
    wallet = 1000.0 * rng.lognormal(0.0, 1.0, n)
    qty = leverage * wallet / P0
    return wallet, qty


def _one_case(wallet, qty, beta, shock, depth):
    from model import ContagionModel

    cfg = engine_config(
        [{"symbol": "X", "price": P0, "depth": depth, "max_leverage": 1000}],
        impact_exponent=beta,
        maintenance=RATE,
        shocks=[{"step": 1, "asset": "X", "return": shock}],
        fee=0.005,
        insurance_fund=1.0e9,
        name="fixed-point",
    )
    model = ContagionModel(cfg, population=make_population(wallet, qty, P0), create_agents=False)
    model.step()
    fills = model.tables()["liquidations"]
    round_prices = fills.groupby("round")["price"].first().to_numpy()
    engine_set = model.liquidation_count > 0
    return float(model.mark[0]), engine_set, round_prices


def run_fixed_point(quick: bool = False, out_dir=None, seed: int = 11) -> dict:
    """Run the engine on cascades of several sizes for beta 1 and 0.5; compare with the scan."""
    n = 2_000 if quick else 50_000
    shocks = [-0.01, -0.03, -0.06] if quick else [-0.005, -0.01, -0.03, -0.06, -0.10]
    rng = np.random.default_rng(seed)
    wallet, qty = _population(rng, n)
    lp = liquidation_prices(wallet, qty, P0, RATE)
    total_notional = float((qty * P0).sum())
    # Depth such that selling every position moves the log price by -6% either way: cascades
    # from a few accounts to most of them over the range of shocks.
    depth_for = {1.0: total_notional / 6.0, 0.5: total_notional / 36.0}

    rows, cobwebs = [], {}
    for beta, depth in depth_for.items():
        for shock in shocks:
            fundamental = P0 * (1.0 + shock)
            d = depth / P0
            exp_set, exp_price = expected_cascade(lp, qty, fundamental, d, beta)
            exp_rounds = price_map_rounds(lp, qty, fundamental, d, beta)
            price, engine_set, round_prices = _one_case(wallet, qty, beta, shock, depth)
            same_rounds = round_prices.size == exp_rounds.size and np.allclose(
                round_prices, exp_rounds, rtol=1e-12, atol=0.0
            )
            rows.append(
                {
                    "beta": beta,
                    "shock": shock,
                    "liquidated (engine)": int(engine_set.sum()),
                    "liquidated (fixed point)": int(exp_set.sum()),
                    "same set": bool(np.array_equal(engine_set, exp_set)),
                    "price (engine)": price,
                    "price (fixed point)": exp_price,
                    "rel. error": abs(price - exp_price) / exp_price,
                    "rounds (engine)": int(round_prices.size),
                    "rounds (map)": int(exp_rounds.size),
                    "round prices equal": bool(same_rounds),
                    "closest LP gap": float(np.min(np.abs(lp - exp_price)) / exp_price),
                }
            )
            if beta not in cobwebs or exp_rounds.size > cobwebs[beta]["rounds"].size:
                cobwebs[beta] = {
                    "shock": shock,
                    "fundamental": fundamental,
                    "d": d,
                    "rounds": round_prices,
                    "price": exp_price,
                }
    table = pd.DataFrame(rows)
    passed = bool(
        table["same set"].all()
        and (table["rel. error"] <= 1e-12).all()
        and table["round prices equal"].all()
        and (table["liquidated (fixed point)"] > 0).all()
    )
    figures = []
    path = figure_path(out_dir, "fixed_point.png")
    if path is not None:
        _figure(path, lp, qty, cobwebs)
        figures.append(path.name)
    worst = table["rel. error"].max()
    return check_result(
        "Fixed point of the price map",
        "final price, liquidated set and per-round prices of full-liquidation cascades "
        f"(one asset, {n:,} long accounts, impact exponents 1 and 0.5, {len(shocks)} shocks "
        "each) against the least fixed point found by a sorted scan",
        f"same liquidated set in {int(table['same set'].sum())}/{len(table)} cases; largest "
        f"price error {worst:.1e}; per-round prices equal in "
        f"{int(table['round prices equal'].sum())}/{len(table)}; cascades of "
        f"{table['liquidated (fixed point)'].min()}-{table['liquidated (fixed point)'].max()} "
        f"accounts over {table['rounds (map)'].min()}-{table['rounds (map)'].max()} rounds",
        "identical sets, relative price error <= 1e-12, identical round prices",
        passed,
        "Liquidation prices are the closed form (q e - W) / (q (1 - r)) with r = 1%; fees (0.5%) "
        "and bad debt do not move prices, ADL is off. 'closest LP gap' in the table is the "
        "smallest relative distance between the final price and any liquidation price: cases "
        "are not decided by rounding.",
        figures=figures,
        table=table,
    )


def _figure(path, lp, qty, cobwebs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cobwebs), figsize=(11, 4.5))
    order = np.argsort(-lp)
    lp_desc = lp[order]
    sold = np.concatenate([[0.0], np.cumsum(qty[order])])
    for ax, (beta, c) in zip(
        np.atleast_1d(axes), sorted(cobwebs.items(), reverse=True), strict=True
    ):
        f, d = c["fundamental"], c["d"]
        lo = c["price"] - 0.3 * (f - c["price"]) - 1e-3 * f
        grid = np.linspace(lo, f, 2000)
        k = np.searchsorted(-lp_desc, -grid, side="left")
        g = f * np.exp(-0.01 * (sold[k] / d) ** beta)
        ax.plot(grid, g, color="C0", lw=1.5, label="price map G(p)")
        ax.plot(grid, grid, color="0.5", lw=1, ls="--", label="G(p) = p")
        xs, ys = [f], [f]
        for p in c["rounds"]:
            xs += [xs[-1], p]
            ys += [p, p]
        ax.plot(xs[:-1], ys[:-1], color="C3", lw=1, marker=".", ms=4, label="engine rounds")
        ax.plot([c["price"]], [c["price"]], "k*", ms=12, label="fixed point (scan)")
        ax.set_title(f"impact exponent {beta:g}, shock {100 * c['shock']:g}%")
        ax.set_xlabel("price p at the start of a round")
        ax.set_ylabel("price after liquidating every LP > p")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Full-liquidation cascade: engine rounds walk the price map to its fixed point")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
