"""Trading rules, each vectorised over the traders that follow it, and the voluntary-trading phase.

A rule is a class with a ``name`` and an ``orders(rows)`` method that returns the signed
quantities (buys positive) the traders in ``rows`` want to trade this step, as a (k, A) array.
:func:`trade_voluntarily` sums every rule's orders (and the re-entry orders of
:mod:`model.reentry`), caps what they open at the initial margin, sends the net flow through the
market, and fills every order at the price after the batch. Rules see the model (prices, the
account book, the market's history) and draw randomness only from ``model.rng``.

The rules (parameters in ``[traders]``, DESIGN.md):

* ``hold``: keep the initial positions; trade only when liquidated.
* ``target_leverage``: rebalance toward a target leverage ``lambda`` each step, on the sides and
  asset weights of the initial positions: ``q* = side w lambda E / P``; the order closes the
  fraction ``rebalance`` of the gap. A rise lifts equity and lowers leverage, so the trader buys
  into rises and sells into falls: the procyclical leveraged fund of Thurner, Farmer and
  Geanakoplos (2012) and of Adrian and Shin (2010).
* ``momentum``: an overlay on the held position worth ``E L_m tanh(r_k / (sigma sqrt(k dt)))``
  of notional, ``r_k`` the log return over the last ``momentum_lookback`` steps: it sells into
  falls.
* ``value``: an overlay worth ``-E L_v tanh(log(P / F) / value_scale)``: it buys below the
  fundamental and sells above it, the stabilising side.
* ``noise``: an overlay that is an AR(1) random walk: each step it shrinks by the fraction
  ``rebalance`` and takes a normal order of ``noise_size x E`` notional.

The overlay rules trade the change of their overlay, so they start from their initial positions
without dumping them; a liquidation resets a trader's overlay (what is left is its new base).
Only the assets a trader held at the start are traded, and a flat account never trades (it was
liquidated; :mod:`model.reentry` may bring it back).

Initial margin: what a batch opens (the part of an order that increases a position's size) must
fit in the account's free collateral, ``cross equity - sum over cross positions of N / L_max``;
orders are scaled down until ``sum opened N / L_open`` fits (reductions always pass). Positions
of isolated-margin accounts get ``opened N / L_open`` moved from the wallet into their margin;
reductions release the closed share of the margin and the realised PnL to the wallet.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "STRATEGIES",
    "Hold",
    "Momentum",
    "Noise",
    "Strategy",
    "TargetLeverage",
    "Value",
    "cap_to_initial_margin",
    "settle_isolated_margin",
    "split_order",
    "trade_voluntarily",
]


# --------------------------------------------------------------------------------------------
# Pure kernels
# --------------------------------------------------------------------------------------------


def split_order(qty, dq):
    """Split orders into the part that reduces a position and the part that opens one.

    Args:
        qty: (k, A) positions before the order.
        dq: (k, A) signed orders (buys positive).

    Returns:
        ``(reduced, opened)``: the position once the reducing part is done (``qty`` when the
        order adds, ``qty + dq`` when it only reduces, 0 when it flips), and the signed quantity
        opened beyond it, so that ``reduced + opened == qty + dq``.
    """
    qty = np.asarray(qty, dtype=float)
    dq = np.asarray(dq, dtype=float)
    new = qty + dq
    opposite = qty * dq < 0
    flips = opposite & (np.abs(dq) > np.abs(qty))
    reduced = np.where(opposite, np.where(flips, 0.0, new), qty)
    return reduced, new - reduced


def cap_to_initial_margin(equity, reduced, opened, price, cross, max_leverage, open_leverage):
    """Scale the opening part of orders so that the account's initial margin fits.

    ``free = equity - sum_cross |reduced| P / L_max`` must cover
    ``cost = sum |opened| P / L_open``; the opening part is multiplied by
    ``clip(free / cost, 0, 1)``.

    Args:
        equity: (k,) cross equity (wallet plus cross unrealised PnL) of each account.
        reduced, opened: (k, A) from :func:`split_order`.
        price: (A,) the price the orders are sized at.
        cross: (k, A) whether each position is (or will be) a cross position.
        max_leverage: (A,) the venue's leverage cap per asset.
        open_leverage: (k, A) or scalar leverage at which opened positions are margined
            (at most the cap).

    Returns:
        (k,) the factor applied to each account's opened quantities.
    """
    lev = np.minimum(np.broadcast_to(open_leverage, np.shape(opened)), max_leverage)
    held = np.where(cross, np.abs(reduced) * price / max_leverage, 0.0).sum(axis=1)
    cost = (np.abs(opened) * price / lev).sum(axis=1)
    free = np.asarray(equity, dtype=float) - held
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(cost > 0, np.clip(free / np.where(cost > 0, cost, 1.0), 0.0, 1.0), 1.0)
    return factor


def settle_isolated_margin(book, rows, qty_before, margin_before, realized, price, open_leverage):
    """Move margin between wallet and isolated positions after voluntary fills.

    A reduced isolated position releases the closed share of its margin and the realised PnL
    (which :meth:`model.accounts.AccountBook.fill` put into the margin) to the wallet, so the
    margin left is proportional to the quantity left; an opened (or flipped) one gets
    ``|opened| P / L_open`` from the wallet. Money only moves inside each account.
    """
    iso = book.isolated[rows]
    if not iso.any():  # all cross: nothing to move (and scattered writes are what costs)
        return
    q_after = book.qty[rows]
    reduced, opened = split_order(qty_before, q_after - qty_before)
    with np.errstate(divide="ignore", invalid="ignore"):
        kept = np.where(qty_before != 0, np.abs(reduced) / np.abs(qty_before), 0.0)
    release = np.where(iso, (1.0 - kept) * margin_before + realized, 0.0)
    lev = np.minimum(np.broadcast_to(open_leverage, q_after.shape), book.max_leverage)
    post = np.where(iso, np.abs(opened) * price / lev, 0.0)
    book.move_to_margin(rows, post - release)


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


class Strategy:
    """Base class: a trading rule applied to a group of account-book rows."""

    name = "strategy"

    def __init__(self, model):
        self.model = model
        self._setup_rows = None  # the rows the per-trader state was prepared for

    def _setup(self, rows) -> None:
        """Prepare per-trader state once for this group of rows (see :meth:`_prepare`)."""
        if self._setup_rows is not rows:
            self._prepare(rows)
            self._setup_rows = rows

    def _prepare(self, rows) -> None:
        """Per-trader state of a rule that keeps some (rules without any need nothing)."""

    def orders(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), A) signed order quantities for this step (buys positive)."""
        raise NotImplementedError

    def active(self) -> bool:
        """Whether the rule can ever trade (lets the model skip passive groups)."""
        return True

    def open_leverage(self, rows: np.ndarray):
        """Leverage at which the positions it opens are margined (default: the venue's cap)."""
        return self.model.book.max_leverage[None, :]

    def filled(self, rows: np.ndarray, dq: np.ndarray) -> None:
        """Hook after execution: ``dq`` is what was actually traded (after the margin cap)."""

    # shared views ------------------------------------------------------------------------
    def _initial(self, rows):
        """Sides, asset weights and leverage of the initial positions of ``rows``."""
        pop = self.model.population
        q0 = pop.qty[rows]
        n0 = np.abs(q0) * pop.entry[rows]
        total = n0.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            weights = np.where(total > 0, n0 / np.where(total > 0, total, 1.0), 0.0)
            coll = pop.collateral[rows]
            lev0 = np.where(coll > 0, total[:, 0] / np.where(coll > 0, coll, 1.0), 0.0)
        return np.sign(q0), weights, lev0

    def _live(self, rows, equity):
        """Accounts that can trade: an open position and positive equity."""
        return (self.model.book.qty[rows] != 0).any(axis=1) & (equity > 0)


class Hold(Strategy):
    """Keep the initial positions; trade only when liquidated."""

    name = "hold"

    def orders(self, rows):
        return np.zeros((len(rows), self.model.book.n_assets))

    def active(self) -> bool:
        return False


class TargetLeverage(Strategy):
    """Rebalance toward a target leverage: buy into rises, sell into falls (procyclical)."""

    name = "target_leverage"

    def _prepare(self, rows):
        self.side, self.weights, lev0 = self._initial(rows)
        target = self.model.config.traders.target_leverage
        self.target = lev0 if target is None else np.full(len(rows), float(target))

    def orders(self, rows):
        self._setup(rows)
        book = self.model.book
        price = self.model.market.price
        equity = book.equity(price, rows)
        want = self.side * self.weights * (self.target * equity)[:, None] / price
        dq = self.model.config.traders.rebalance * (want - book.qty[rows])
        return np.where(self._live(rows, equity)[:, None], dq, 0.0)

    def open_leverage(self, rows):
        self._setup(rows)
        return np.maximum(self.target, 1.0)[:, None]


class _Overlay(Strategy):
    """A rule that holds an overlay on top of the held position and trades its changes."""

    def _prepare(self, rows):
        side, _, _ = self._initial(rows)
        self.universe = side != 0  # assets each trader held at the start
        self.overlay = np.zeros(side.shape)  # quantity the rule holds on top of its base
        self.seen = self.model.liquidation_count[rows].copy()

    def target(self, rows, equity, price) -> np.ndarray:
        """(k, A) the overlay quantity wanted now."""
        raise NotImplementedError

    def orders(self, rows):
        self._setup(rows)
        count = self.model.liquidation_count[rows]
        hit = count != self.seen
        if hit.any():  # a liquidation cut the position: what is left is the new base
            self.overlay[hit] = 0.0
            self.seen = count.copy()
        price = self.model.market.price
        equity = self.model.book.equity(price, rows)
        want = np.where(self.universe, self.target(rows, equity, price), 0.0)
        dq = want - self.overlay
        return np.where(self._live(rows, equity)[:, None], dq, 0.0)

    def filled(self, rows, dq):
        self.overlay += dq


class Momentum(_Overlay):
    """Trade on the recent return: buy after rises, sell after falls."""

    name = "momentum"

    def __init__(self, model):
        super().__init__(model)
        t = model.config.traders
        self.lookback = int(t.momentum_lookback)
        self.leverage = float(t.momentum_leverage)
        mk = model.market
        # return scale: one standard deviation of the lookback's return (floored)
        self.scale = np.maximum(mk.volatility * np.sqrt(self.lookback * mk.dt), 1e-3)
        self.history = [np.log(mk.price)]

    def signal(self) -> np.ndarray:
        """(A,) conviction in [-1, 1] from the log return over the lookback."""
        now = np.log(self.model.market.price)
        self.history.append(now)
        if len(self.history) > self.lookback + 1:
            del self.history[0]
        return np.tanh((now - self.history[0]) / self.scale)

    def target(self, rows, equity, price):
        return self.leverage * equity[:, None] * self.signal()[None, :] / price


class Value(_Overlay):
    """Buy below the fundamental, sell above it (the stabilising side)."""

    name = "value"

    def target(self, rows, equity, price):
        t = self.model.config.traders
        mispricing = np.log(price / self.model.market.fundamental)
        conviction = -np.tanh(mispricing / t.value_scale)
        return t.value_leverage * equity[:, None] * conviction[None, :] / price


class Noise(_Overlay):
    """Random orders: an AR(1) overlay with normal innovations of ``noise_size x E``."""

    name = "noise"

    def target(self, rows, equity, price):
        t = self.model.config.traders
        z = self.model.rng.standard_normal(self.overlay.shape)
        return (1.0 - t.rebalance) * self.overlay + t.noise_size * equity[:, None] * z / price


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Hold, TargetLeverage, Momentum, Value, Noise)
}


# --------------------------------------------------------------------------------------------
# The phase
# --------------------------------------------------------------------------------------------


def trade_voluntarily(model) -> None:
    """Phase 2 of a step: every rule's orders (and re-entries) as one batch through the market.

    Orders are capped at the initial margin, at the price before the batch and at the price the
    batch would fill at; every fill then happens at the price after it, and the market agent
    takes the other side.
    """
    book = model.book
    groups = []  # (owner, rows, dq, open_leverage, all the owner's rows, which were kept)
    reentry = model.reentry
    if reentry is not None:
        rows, dq, lev = reentry.orders(model.steps)
        if rows.size:
            groups.append((reentry, rows, dq, np.broadcast_to(lev, dq.shape), rows, None))
    for name, rule in model.strategies.items():
        if not rule.active():
            continue
        rows = model.strategy_rows[name]
        dq = rule.orders(rows)
        keep = (dq != 0).any(axis=1)
        if keep.any():
            lev = np.broadcast_to(rule.open_leverage(rows), dq.shape)[keep]
            groups.append((rule, rows[keep], dq[keep], lev, rows, keep))
    if not groups:
        return
    rows = np.concatenate([g[1] for g in groups])
    dq = np.concatenate([g[2] for g in groups])
    lev = np.concatenate([g[3] for g in groups])
    dq = np.where(np.isfinite(dq), dq, 0.0)  # a rule facing absurd prices sends nothing
    # one group's rows are distinct by construction; check only where groups meet
    if len(groups) > 1 and np.unique(rows).size != rows.size:  # pragma: no cover
        raise RuntimeError("a trader received orders from two rules in one step")

    price = model.market.price
    iso = book.isolated[rows] | model.isolated_accounts[rows][:, None]
    q_before = book.qty[rows].copy()
    reduced, opened = split_order(q_before, dq)
    # Size the opening part at the price before the batch, then again at the price the batch
    # would fill at: a crowd opening at once moves the price, and its own impact must not carry
    # an account past its initial margin. The second cap only shrinks the batch, so the final
    # fill price lies between the two and the cap holds there too.
    equity = book.cross_equity(price, rows)
    cross_qty = np.where(book.isolated[rows], 0.0, q_before)
    for sizing_price in (price, None):
        if sizing_price is None:
            sizing_price = model.market.quote(-(reduced - q_before + opened).sum(axis=0))
        factor = cap_to_initial_margin(
            equity + (cross_qty * (sizing_price - price)).sum(axis=1),  # cross equity there
            reduced,
            opened,
            sizing_price,
            ~iso,
            book.max_leverage,
            lev,
        )
        opened = np.where(factor[:, None] > 0, factor[:, None] * opened, 0.0)
    dq = reduced - q_before + opened
    dq = np.where(np.abs(dq) > 1e-12 * np.abs(q_before), dq, 0.0)

    book.set_isolated(rows, iso & (dq != 0))
    margin_before = book.margin[rows].copy()
    net_buy = dq.sum(axis=0)
    fill_price = model.market.execute(-net_buy, forced=False)
    realized, _ = book.fill(rows, dq, fill_price)
    settle_isolated_margin(book, rows, q_before, margin_before, realized, fill_price, lev)
    book.release_closed_isolated(rows)
    model.market.take_other_side(net_buy, fill_price)

    start = 0
    for owner, g_rows, _, _, all_rows, keep in groups:
        done = dq[start : start + g_rows.size]
        start += g_rows.size
        if keep is not None:
            full = np.zeros((all_rows.size, dq.shape[1]))
            full[keep] = done
            done = full
        owner.filled(all_rows, done)
