"""Market makers: their quotes are the book (``liquidity.model = "market_makers"``).

``M`` makers quote every asset on both sides. Their state lives in arrays on a
:class:`MakerDesk` (the desk's rows of the account book hold their venue positions and
collateral, like any margin account's); :class:`MarketMaker` Mesa agents are views onto one
maker each. A maker's quote on a side is its calm quote times five factors:

    d_side[m, a] = d0[m, a] x C_m x V_a x I_side[m, a] x Mg_m x H_m     (0 when cancelled)

* capital ``C = clip(E / E0, 0, 1)``: quotes scale with the maker's equity (venue plus
  off-venue), as funding liquidity sets market liquidity (Brunnermeier and Pedersen 2009);
* volatility ``V = min(1, tolerance x sqrt(var_long / var_short)) ** exponent``: a short-run
  realised variance above the long-run one spreads the quotes (Avellaneda and Stoikov 2008;
  Gueant, Lehalle and Fernandez-Tapia 2013: quote distances grow with sigma), and a book
  stretched by ``w`` holds ``1 / w**2`` of its volume within 1% (exponent 2);
* inventory ``I_bid = clip(1 - u, 0, 2)``, ``I_ask = clip(1 + u, 0, 2)`` with ``u`` the net
  inventory (venue position plus hedge) over its limit: a long maker thins its bids and
  deepens its asks, and stops bidding at the limit (the linear skew of those models);
* margin ``Mg = clip((mu_2 - mu) / (mu_2 - mu_1), 0, 1)`` with ``mu`` its venue margin ratio
  (maintenance over equity): it pulls quotes as its own account nears liquidation;
* auto-deleveraging ``H = 1 / (1 + sensitivity x memory)``: the memory of venue positions
  closed by ADL (which leaves their hedges naked), relative to equity, fading with a
  half-life.

Makers hedge their venue position off-venue at the fundamental (a fraction ``hedge_speed`` of
the gap to ``-hedge_ratio x position`` each step), with the market agent's outside book as the
counterparty, and pay ``hedge_cost`` per notional. The desk draws nothing from the random
stream: the makers are deterministic.
"""

from __future__ import annotations

import mesa
import numpy as np

__all__ = ["MakerDesk", "MarketMaker", "maker_shares"]


def maker_shares(n: int) -> np.ndarray:
    """(n,) share of the calm maker depth each maker quotes: Zipf, ``1/k`` normalised (a few
    large makers and a tail of smaller ones)."""
    if n <= 0:
        return np.zeros(0)
    w = 1.0 / np.arange(1, n + 1)
    return w / w.sum()


def _half_life_weight(half_life: float) -> float:
    """EWMA weight whose memory halves every ``half_life`` steps."""
    return 1.0 - 0.5 ** (1.0 / half_life)


class MakerDesk:
    """The makers' state and quoting rule, as arrays over makers and assets.

    Args:
        cfg: the ``[liquidity]`` section (makers, backstop, capital, inventory_limit, hedge_*,
            vol_*, margin_pull, adl_*).
        depth_qty: (A,) ``assets.depth`` in quantity per 1% at the initial prices.
        price0: (A,) initial prices.
        variance0: (A,) the fundamental's variance per step (the volatility estimates start
            there).

    Attributes:
        d0: (M, A) calm quotes per side (quantity per 1%).
        backstop: (A,) the market agent's quote per side, whatever happens.
        capital: (M,) each maker's initial collateral.
        qlimit: (M, A) net inventory limits (quantity).
        hedge, hedge_cash: (M, A) off-venue positions, (M,) off-venue cash.
        outside_inventory, outside_cash: the market agent's off-venue book (the other side
            of every hedge trade).
        expected: (M, A) venue positions the desk knows of (its own fills and liquidations):
            a difference from the book is auto-deleveraging.
        adl_memory: (M,) decaying deleveraged notional over equity.
        var_short, var_long: (A,) short- and long-run EWMAs of squared venue log returns.
        quoting: (M,) False for a maker whose account is being liquidated this step.
        factors: the last factors of the quoting rule, by name (for records and views).
        dbid, dask: (M, A) current quotes.
        absorbed_step: (M, A) what each maker bought in the step so far (sold: negative).
    """

    def __init__(self, cfg, depth_qty, price0, variance0):
        m = int(cfg.makers)
        depth_qty = np.asarray(depth_qty, dtype=float)
        self.n = m
        self.share = maker_shares(m)
        b = float(cfg.backstop)
        self.backstop = b * depth_qty
        self.d0 = self.share[:, None] * (1.0 - b) * depth_qty[None, :]
        self.price0 = np.asarray(price0, dtype=float)
        self.capital = float(cfg.capital) * (self.d0 * self.price0).sum(axis=1)
        self.qlimit = float(cfg.inventory_limit) * self.d0
        self.basis_share = float(cfg.basis_share)
        self.hedge_ratio = float(cfg.hedge_ratio)
        self.hedge_speed = float(cfg.hedge_speed)
        self.hedge_cost = float(cfg.hedge_cost)
        self.tolerance = float(cfg.vol_tolerance)
        self.vol_exponent = float(cfg.vol_exponent)
        self.lam_short = _half_life_weight(float(cfg.vol_halflife))
        self.lam_long = _half_life_weight(float(cfg.vol_memory))
        self.mu1, self.mu2 = (float(x) for x in cfg.margin_pull)
        self.adl_sensitivity = float(cfg.adl_sensitivity)
        self.adl_decay = 0.5 ** (1.0 / float(cfg.adl_halflife))
        a = depth_qty.size
        self.hedge = np.zeros((m, a))
        self.hedge_cash = np.zeros(m)
        self.outside_inventory = np.zeros(a)
        self.outside_cash = 0.0
        self.expected = np.zeros((m, a))
        self.adl_memory = np.zeros(m)
        self.var_short = np.asarray(variance0, dtype=float).copy()
        self.var_long = self.var_short.copy()
        self.observed = 0
        self.quoting = np.ones(m, dtype=bool)
        self.set_initial_equity(self.capital)
        with np.errstate(divide="ignore"):
            self._per_limit = np.where(self.qlimit > 0, 1.0 / self.qlimit, 0.0)
        self._vol = np.ones(a)  # the volatility factor, set when a return is observed
        self._adl = np.ones(m)  # the ADL factor, set when the memory changes
        self.factors = {
            "capital": np.ones(m),
            "volatility": np.ones(a),
            "margin": np.ones(m),
            "adl": np.ones(m),
            "inventory": np.zeros((m, a)),
        }
        self.dbid = self.d0.copy()
        self.dask = self.d0.copy()
        self.absorbed_step = np.zeros((m, a))

    # ---- the book ---------------------------------------------------------------------------
    def depth(self) -> tuple[np.ndarray, np.ndarray]:
        """(A,) 1% depth of the bids and of the asks: the makers' quotes plus the backstop."""
        return self.dbid.sum(axis=0) + self.backstop, self.dask.sum(axis=0) + self.backstop

    def fill_shares(self, bid, ask) -> np.ndarray:
        """(M, A) what each maker buys of a walk whose bids bought ``bid`` and asks ``ask``
        (A,): pro rata to its quote on each side."""
        d_bid, d_ask = self.depth()
        with np.errstate(divide="ignore", invalid="ignore"):
            sb = np.where(d_bid > 0, self.dbid / np.where(d_bid > 0, d_bid, 1.0), 0.0)
            sa = np.where(d_ask > 0, self.dask / np.where(d_ask > 0, d_ask, 1.0), 0.0)
        return np.asarray(bid)[None, :] * sb + np.asarray(ask)[None, :] * sa

    def note_fills(self, dq) -> None:
        """Remember the makers' own fills (a walk's share, or their liquidation)."""
        self.expected = self.expected + dq
        self.absorbed_step = self.absorbed_step + dq

    # ---- between steps ----------------------------------------------------------------------
    def set_initial_equity(self, equity) -> None:
        """The equity the capital factor is measured against (> 0)."""
        self.initial_equity = np.asarray(equity, dtype=float).copy()
        self._per_initial = 1.0 / self.initial_equity

    def observe_return(self, r) -> None:
        """Fold a step's venue log returns (A,) into the volatility estimates and set the
        volatility factor. Each EWMA is a running mean until its weight falls below ``1 / n``,
        so the long-run estimate reaches the venue's own calm volatility within dozens of
        steps."""
        self.observed += 1
        r2 = np.square(np.asarray(r, dtype=float))
        ws = max(1.0 / self.observed, self.lam_short)
        wl = max(1.0 / self.observed, self.lam_long)
        self.var_short = (1.0 - ws) * self.var_short + ws * r2
        self.var_long = (1.0 - wl) * self.var_long + wl * r2
        self._set_vol()

    def _set_vol(self) -> None:
        """``V = min(1, tolerance x sqrt(long / short)) ** exponent`` (1 when short is 0)."""
        short = self.var_short
        ratio = np.divide(self.var_long, short, out=np.ones_like(short), where=short > 0)
        vol = np.minimum(1.0, self.tolerance * np.sqrt(ratio))
        self._vol = np.where(short > 0, vol, 1.0) ** self.vol_exponent

    def _set_adl(self) -> None:
        self._adl = 1.0 / (1.0 + self.adl_sensitivity * self.adl_memory)

    def hedge_orders(self, venue_qty) -> np.ndarray:
        """(M, A) off-venue trades toward ``-hedge_ratio x venue position``."""
        target = -self.hedge_ratio * np.asarray(venue_qty, dtype=float)
        return self.hedge_speed * (target - self.hedge)

    def trade_hedges(self, dh, fundamental, *, cost: bool = True) -> None:
        """Trade ``dh`` off-venue at the fundamental; the market agent's outside book takes
        the other side and the cost. Money moves between the two at one price: their sum is
        unchanged. ``cost=False`` for the hedges the makers start with."""
        fundamental = np.asarray(fundamental, dtype=float)
        paid = (dh * fundamental).sum(axis=1)
        if cost:
            paid = paid + self.hedge_cost * (np.abs(dh) * fundamental).sum(axis=1)
        self.hedge = self.hedge + dh
        self.hedge_cash = self.hedge_cash - paid
        self.outside_inventory = self.outside_inventory - dh.sum(axis=0)
        self.outside_cash = self.outside_cash + float(paid.sum())

    def off_venue_equity(self, fundamental) -> np.ndarray:
        """(M,) hedge cash plus hedges marked at the fundamental."""
        return self.hedge_cash + self.hedge @ np.asarray(fundamental, dtype=float)

    def outside_value(self, fundamental) -> float:
        """The market agent's outside book marked at the fundamental."""
        return float(self.outside_cash + self.outside_inventory @ np.asarray(fundamental))

    def note_deleveraging(self, venue_qty, price, equity, synced) -> np.ndarray:
        """Compare the book's venue positions with those the desk knows of: a difference is
        auto-deleveraging (a liquidation of the maker, ``synced``, is not). Add its notional
        over equity to the ADL memory; return the (M, A) difference."""
        if np.array_equal(venue_qty, self.expected):  # the usual case: nothing to note
            return np.zeros_like(self.expected)
        diff = np.where(np.asarray(synced)[:, None], 0.0, venue_qty - self.expected)
        notional = (np.abs(diff) * np.asarray(price)).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            hit = np.where(notional > 0, notional / np.maximum(equity, 1e-300), 0.0)
        self.adl_memory = self.adl_memory + np.where(np.isfinite(hit), hit, 0.0)
        self.expected = np.asarray(venue_qty, dtype=float).copy()
        self._set_adl()
        return diff

    def clear_deleveraging(self, makers) -> None:
        """Forget the deleveraging of ``makers`` (mask or indices): fresh capital took over."""
        self.adl_memory[makers] = 0.0
        self._set_adl()

    def new_step(self, equity) -> None:
        """Start a step: ADL memory fades; makers with equity quote again; records reset."""
        if self.adl_memory.any():
            self.adl_memory = self.adl_memory * self.adl_decay
            self._set_adl()
        self.quoting = np.asarray(equity) > 0
        self.absorbed_step = np.zeros_like(self.absorbed_step)

    # ---- the quoting rule -------------------------------------------------------------------
    def cancel(self, makers) -> None:
        """Cancel the quotes of ``makers`` (indices) for the rest of the step: venues cancel the
        open orders of an account under liquidation."""
        self.quoting[makers] = False

    def requote(self, venue_qty, equity, margin_ratio) -> None:
        """Set every quote from the makers' state (the rule in the module docstring).

        Args:
            venue_qty: (M, A) venue positions.
            equity: (M,) total equity (venue at the mark plus off-venue at the fundamental).
            margin_ratio: (M,) venue maintenance over equity (inf when equity <= 0).
        """
        cap = np.minimum(np.maximum(equity * self._per_initial, 0.0), 1.0)
        u = (venue_qty + self.hedge) * self._per_limit
        margin = np.minimum(np.maximum((self.mu2 - margin_ratio) / (self.mu2 - self.mu1), 0.0), 1.0)
        margin = np.where(np.isnan(margin), 0.0, margin)  # an account with nothing left
        scale = cap * margin * self._adl * self.quoting
        base = self.d0 * np.multiply.outer(scale, self._vol)
        self.dbid = base * np.minimum(np.maximum(1.0 - u, 0.0), 2.0)
        self.dask = base * np.minimum(np.maximum(1.0 + u, 0.0), 2.0)
        self.factors = {"capital": cap, "volatility": self._vol, "margin": margin}
        self.factors["adl"], self.factors["inventory"] = self._adl, u

    def quoting_share(self) -> tuple[float, float]:
        """Share of the makers' calm quotes quoted now on the bid side and on the ask side
        (every asset together). Inventory moves depth from one side to the other; the other
        factors thin both."""
        calm = self.d0.sum()
        if calm <= 0:
            return 0.0, 0.0
        return float(self.dbid.sum() / calm), float(self.dask.sum() / calm)


class MarketMaker(mesa.Agent):
    """One market maker: a view onto its index in the desk and its row in the account book.

    Attributes:
        index: the maker's index in the desk's arrays.
        row: its row in ``model.book``.
        trader_id: its account id in the output tables.
    """

    def __init__(self, model, index: int, row: int, trader_id):
        super().__init__(model)
        self.index = index
        self.row = row
        self.trader_id = trader_id

    @property
    def inventory(self) -> dict[str, float]:
        """Venue position per asset symbol."""
        q = self.model.book.qty[self.row]
        return {s: float(v) for s, v in zip(self.model.symbols, q, strict=True)}

    @property
    def hedge(self) -> dict[str, float]:
        """Off-venue position per asset symbol."""
        h = self.model.desk.hedge[self.index]
        return {s: float(v) for s, v in zip(self.model.symbols, h, strict=True)}

    @property
    def equity(self) -> float:
        """Venue equity at the mark plus off-venue equity at the fundamental."""
        m = self.model
        venue = float(m.book.equity(m.mark, np.array([self.row]))[0])
        return venue + float(m.desk.off_venue_equity(m.market.fundamental)[self.index])

    @property
    def quotes(self) -> dict[str, tuple[float, float]]:
        """(bid, ask) 1% quotes per asset symbol, in quantity."""
        d = self.model.desk
        return {
            s: (float(d.dbid[self.index, j]), float(d.dask[self.index, j]))
            for j, s in enumerate(self.model.symbols)
        }

    def step(self) -> None:  # the desk moves every maker at once
        pass

    def __repr__(self) -> str:
        return f"MarketMaker(id={self.trader_id}, equity={self.equity:.2f})"
