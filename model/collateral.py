"""Collateral assets: holdings counted at a haircut, and their sale when a wallet goes negative.

An ``[[assets]]`` entry with ``kind = "collateral"`` and ``haircut = h`` is held, not traded as a
perpetual: it has a market of its own (price, depth, impact, resilience, volatility, correlation
and shocks, like any asset: :class:`agents.market.Market`), no positions, no funding, no
maintenance tiers, no ADL. Account ``i`` holds ``H_ic >= 0`` units of collateral asset ``c``.
Notation as in :mod:`model.accounts`: wallet ``W``, quantity ``q``, entry ``e``, mark ``M``
(of every asset, collateral assets included: ``P_c = M_c``), isolated margin ``m``.

Margin. The holdings back the cross balance at their haircut value (Binance Multi-Assets mode,
Bybit's unified account, Portfolio Margin: docs/reference/venues.md §4)::

    cross margin equity  E^x_i = W_i + sum_c H_ic P_c (1 - h_c) + sum_a q_ia (M_a - e_a)

(cross positions only), and the cross book is liquidatable when ``E^x < sum_a mm(N_a)``.
Isolated positions take none of the holdings: their margin is ``m`` alone.

Money. What an account owns counts its holdings at full market value::

    E_i = W_i + sum_a m_ia + sum_c H_ic P_c + sum_a q_ia (M_a - e_a)

The haircut only reduces margin credit: it is nobody's money. The market agent starts short the
traders' holdings, as if it had sold them to the traders at the initial price ``P0_c``
(inventory ``-sum_i H_ic``, cash ``+sum_i H_ic P0_c``), as it starts with the opposite of their
positions. A fall of ``P_c`` then moves money from traders to the market agent, and traders +
insurance fund + market agent (+ vault - unfunded bad debt) stays the traders' initial cash, plus
their holdings at ``P0``, plus the fund: conserved exactly whatever the prices do.

Margin screen (:mod:`model.screen`). Holdings are long exposures: a rise of ``P_c`` never lowers
``E^x``, and a fall of ``u`` in log price lowers ``H_c P_c (1 - h_c)`` by at most
``(1 - h_c) H_c P0_c (1 - e^-u)``: the bound of a long position whose maintenance slope is
``h_c`` (a long loses ``(1 - r0) N0 (1 - e^-u)`` at most). The screen therefore counts each
holding in a cross book's slack with its haircut value and in its coefficient with the same
haircut value ``(1 - h_c) H_c P0_c``, and an account with holdings is never in the rise-only
lane. Its bound stays safe, and screened runs equal runs that check everyone
(tests/test_screen.py).

Liquidation and bankruptcy prices (:meth:`model.accounts.AccountBook.liquidation_price`) hold the
holdings, like every other price, at the current mark: a position's liquidation price is where
it alone would take the account under, with the collateral worth what it is worth now.

Auto-exchange: the sale when a wallet goes negative. Binance's Multi-Assets mode: "When users get
liquidated, auto exchange will be immediately triggered if the BUSD/USDT in the USDⓈ-M Futures
Wallet balance is not enough to cover the deficit ... If there are multiple assets ... they will
be automatically converted to negative assets according to the proportion of each asset"
(multi-asset-info page, docs/reference/venues.md §4.1). So, in every liquidation round, after the
round's positions are sold and its fees charged, each account whose cross book was liquidated and
whose wallet is below zero sells collateral to bring the wallet back to zero:

* pro rata: the deficit ``D_i`` is split over the account's collateral assets in proportion to
  their market value at the market price before the sale, ``D_ic = D_i H_ic P_c / sum_b H_ib P_b``
  (the page does not say which value; market value is this engine's reading);
* through each asset's own market, every seller of a round at one price, the price after the
  round's sales of that asset (the impact law and depth machinery of any asset,
  :meth:`agents.market.Market.execute`, as forced flow): account ``i`` sells
  ``s_ic = min(H_ic, D_ic / p_c)`` at ``p_c``, the price after ``S_c = sum_i s_ic``. Since
  ``p_c`` depends on ``S_c`` and ``S_c`` on ``p_c``, ``p_c`` solves ``p = Q_c(S_c(p))`` (``Q_c``
  the price after a sale, :meth:`agents.market.Market.quote`): the iteration ``p <- Q(S(p))``
  from the price before the sale falls monotonically to the largest solution, the smallest sale
  that covers the deficits, the book walked down until they are covered. When the sale covers
  more than the book can give (the spiral), the iteration ends with the holdings sold out;
* an account whose share of one asset exceeds its holding sells all of it, and what it still
  lacks is split over its other assets in a further pass of the same kind (at most one pass per
  collateral asset, and two more);
* the sale covers ``(1 + COVER_MARGIN) D_i``, a billionth more, so that rounding never leaves a
  covered wallet a hair below zero (which would be written off as bad debt);
* what the holdings cannot cover stays negative and is bad debt as before
  (:meth:`model.liquidation.LiquidationEngine._write_off`): paid by the insurance fund, then ADL.

Not modelled: Binance's other two triggers (a wallet below the -10,000 USD threshold, and the
loan-to-value of accounts without positions) and any conversion fee; Bybit's order of sale was
not found (venues.md §4.2). The sale's fills are kind ``collateral`` in liquidations.parquet
(quantity: units sold, positive; no fee, no bad debt); they are not liquidations and are left
out of liquidation counts and notionals.

Contagion. A round's collateral sales are forced flow of the collateral asset: the round's
:class:`model.liquidation.RoundRecord` carries them in ``closed`` (positive: sold) and the
holdings in ``exposure`` (long), so an account liquidated in the next round because a collateral
asset's price fell is attributed, like a loss on a perpetual, to that round's sellers of the
asset in proportion to what they sold (:mod:`model.contagion`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from agents.market import Market

__all__ = [
    "COVER_MARGIN",
    "CollateralAssets",
    "Sale",
    "auto_exchange",
    "exchange_needs",
    "sale_price",
]

# The share beyond a deficit a sale covers, so that rounding leaves no covered wallet below 0.
COVER_MARGIN = 1e-9
# The fixed-point iteration of a sale's price: its tolerance (relative) and its length.
_TOLERANCE = 1e-13
_ITERATIONS = 200


@dataclass(frozen=True)
class CollateralAssets:
    """Which asset columns are collateral, and their haircuts.

    Attributes:
        cols: (C,) column of each collateral asset among the config's assets.
        haircut: (C,) haircut ``h`` of each: a unit counts ``P (1 - h)`` toward the margin.
        symbols: their symbols.
    """

    cols: np.ndarray
    haircut: np.ndarray
    symbols: tuple[str, ...]

    @classmethod
    def from_assets(cls, assets) -> CollateralAssets | None:
        """From the ``[[assets]]`` entries (``kind``, ``haircut``); None when none is
        collateral, so that a run without collateral assets does no collateral work at all."""
        cols = [j for j, a in enumerate(assets) if getattr(a, "kind", "perpetual") == "collateral"]
        if not cols:
            return None
        return cls(
            np.array(cols, dtype=np.intp),
            np.array([float(assets[j].haircut) for j in cols]),
            tuple(assets[j].symbol for j in cols),
        )

    @property
    def size(self) -> int:
        return int(self.cols.size)

    def market_value(self, holdings, mark) -> np.ndarray:
        """(k,) ``sum_c H_c P_c``: the holdings at full market value (money)."""
        return np.asarray(holdings, dtype=float) @ np.asarray(mark, dtype=float)[self.cols]

    def margin_value(self, holdings, mark) -> np.ndarray:
        """(k,) ``sum_c H_c P_c (1 - h_c)``: what the holdings count toward the cross margin."""
        unit = np.asarray(mark, dtype=float)[self.cols] * (1.0 - self.haircut)
        return np.asarray(holdings, dtype=float) @ unit


@dataclass
class Sale:
    """One pass of a round's auto-exchange.

    Attributes:
        rows: (k,) book rows of the accounts that sold.
        sold: (k, C) units of each collateral asset each sold (>= 0).
        price: (C,) the price every sale of the pass filled at (after the pass's impact).
    """

    rows: np.ndarray
    sold: np.ndarray
    price: np.ndarray


def exchange_needs(deficit, holdings, price) -> np.ndarray:
    """(k, C) quote currency each account raises from each collateral asset: its deficit
    split in proportion to the market value of its holdings ("according to the proportion of
    each asset"). Rows without holdings raise nothing.

    Args:
        deficit: (k,) amount to raise.
        holdings: (k, C) units held.
        price: (C,) price of each asset.
    """
    value = np.asarray(holdings, dtype=float) * np.asarray(price, dtype=float)
    total = value.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, value / np.where(total > 0, total, 1.0), 0.0)
    return np.asarray(deficit, dtype=float)[:, None] * share


def sale_price(quote, n_assets: int, cols, holdings, need, price):
    """The price of one pass's sale: the largest ``p`` with ``p = Q(S(p))``, per asset.

    ``S(p) = sum_i min(H_i, n_i / p)`` is what the sellers must sell at ``p`` to raise their
    needs ``n_i``, ``Q(S)`` the price after a sale of ``S``. Both fall as their argument
    grows, so ``p <- Q(S(p))`` from ``p = price`` (where ``Q(S(p)) <= p``) is a falling
    sequence bounded below by ``Q(sum_i H_i)``: it converges to the largest fixed point.

    Args:
        quote: ``(A,) flow -> (A,) price`` after a further sale (sells positive), changing
            nothing (the market's quote for forced flow).
        n_assets: the market's number of assets ``A``.
        cols: (C,) columns of the collateral assets among them.
        holdings, need: (k, C) units held and quote currency to raise.
        price: (C,) price before the sale.

    Returns:
        ``(sold, price, converged)``: (k, C) units to sell, (C,) the price that sale walks
        to, and (C,) whether the iteration settled (to ``_TOLERANCE``): then selling
        ``min(H_i, n_i / p)`` at the returned ``p`` raises the needs.
    """
    holdings = np.asarray(holdings, dtype=float)
    need = np.asarray(need, dtype=float)
    p = np.asarray(price, dtype=float).copy()
    flow = np.zeros(n_assets)
    sold = np.zeros(holdings.shape)
    converged = np.zeros(p.shape, dtype=bool)
    for _ in range(_ITERATIONS):
        sold = np.minimum(holdings, need / p)
        flow[cols] = sold.sum(axis=0)
        after = np.asarray(quote(flow), dtype=float)[cols]
        converged = np.abs(after - p) <= _TOLERANCE * p
        p = after
        if converged.all():
            break
    return sold, p, converged


def auto_exchange(book, market: Market, rows) -> list[Sale]:
    """Sell collateral of ``rows`` whose wallet is below zero until it is covered, or their
    holdings are gone (module docstring: pro rata, at the price after each pass's own impact).

    Each pass: the accounts still short split what they lack over their holdings
    (:func:`exchange_needs`), the pass's price is solved (:func:`sale_price`), the sale walks
    each asset's book as forced flow, every seller fills at the price after it, and the market
    agent takes the other side. When the price settled, the fills are sized at the price the
    walk reached, so the needs are raised exactly (the walk's flow and the fills then differ
    by the iteration's tolerance); otherwise they are what the walk sold, and the next pass
    raises the rest.

    Args:
        book: the :class:`model.accounts.AccountBook` (its ``collateral`` is not None; not
            imported here: the book imports this module).
        market: the market agent.
        rows: (k,) candidate rows (the round's accounts whose cross book was liquidated).

    Returns:
        the passes, in order (empty when no account was short or none held collateral).
    """
    coll = book.collateral
    cols = coll.cols
    rows = np.asarray(rows)
    passes: list[Sale] = []
    for _ in range(coll.size + 2):
        short = (book.wallet[rows] < 0) & (book.holdings[rows] > 0).any(axis=1)
        if not short.any():
            break
        r = rows[short]
        held = book.holdings[r]
        before = market.price[cols]
        need = exchange_needs(-book.wallet[r] * (1.0 + COVER_MARGIN), held, before)
        sold, _, converged = sale_price(
            lambda f: market.quote(f, forced=True), market.n_assets, cols, held, need, before
        )
        flow = np.zeros(market.n_assets)
        flow[cols] = sold.sum(axis=0)
        price = market.execute(flow, forced=True)
        exact = np.minimum(held, need / price[cols])
        sold = np.where(converged, exact, sold)
        traded = np.zeros(market.n_assets)
        traded[cols] = -sold.sum(axis=0)  # the traders' side: sales are negative buys
        market.take_other_side(traded, price)
        book.sell_collateral(r, sold, price[cols])
        passes.append(Sale(r, sold, price[cols]))
    return passes
