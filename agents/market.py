"""The market agent: fundamental prices, price impact, and the counterparty of every fill.

Price of asset ``a``: ``M_a = F_a exp(s_a)``, with ``F_a`` the fundamental and ``s_a`` the
impact state. Within a step the impact depends on the step's cumulative net flow ``X_a``
(quantity, sells positive, voluntary and forced together), as if walking one order book that
does not refill until the step ends::

    s_a = s_a(step start) - 0.01 sign(X_a) (|X_a| / d_a) ** beta

``d_a = depth_a / P0_a`` is the quantity whose sale moves the price by 1%. Between steps the
impact decays: ``s_a <- (1 - resilience) s_a``.

The market agent is the counterparty of every fill and of the positions traders start with:
it keeps per-asset inventory and cash, so traders + insurance fund + market agent is constant.

Where the book's depth comes from is the ``[liquidity]`` section (docs/market-realism.md,
"Liquidity"). Under ``static`` (the default) the walk is the formula above. Under
``market_makers`` the book is the sum of the makers' quotes and a small backstop of the market
agent (:mod:`agents.book`, :mod:`agents.market_maker`): a batch walks it from where the last one
left it, the model books each quoting source's share of the walk (the :attr:`Market.counterparty`
hook), and between steps the impact fades through the layers of the book's refill kernel
instead of by ``resilience``. Resting orders (:attr:`Market.resting`: value traders' ladders
inside the liquidation rounds, an elastic demand curve) trade in the walk under either model.

Two venue effects, off by default (docs/market-realism.md): liquidity that thins under stress
(``depth_stress``: the walk uses ``d / (1 + depth_stress x load)``, ``load`` the recent forced
flow and outsized moves in percent of price, fading by ``depth_recovery`` a step) and a mark
that follows the market price with a lag (``mark_lag``; margin checks use :attr:`Market.mark`).

Stochastic volatility of the fundamental, off by default: with ``garch_alpha > 0`` each asset's
per-step variance follows a GARCH(1,1) process (Bollerslev 1986),
``h_{t+1} = omega + garch_alpha eps_t^2 + garch_beta h_t`` with ``eps_t = sqrt(h_t) z_t`` the
step's diffusion innovation and ``omega = (1 - alpha - beta) sigma^2 dt``, so the unconditional
variance is the constant-volatility one and ``volatility`` keeps its meaning. Jumps and
scheduled shocks do not feed the variance. With ``innovation_dof = nu > 2`` the innovations
``z`` are Student-t with ``nu`` degrees of freedom scaled to unit variance (multivariate t: one
chi-square draw per step shared by the assets, so the correlation is kept), instead of normal.
"""

from __future__ import annotations

import math

import mesa
import numpy as np

from agents.book import LayeredBook, Walk, exponential_kernel, fit_power_kernel

__all__ = ["Market", "correlated_normals_factor", "impact_state"]

MINUTES_PER_YEAR = 365.0 * 24.0 * 60.0
# Bound on |log price| (prices stay within about 1e-100 and 1e100), so that extreme settings
# stay finite; a price held at a bound is reported through ``limit_hit``.
_MAX_LOG = 230.0


def impact_state(start, flow, depth_qty, beta):
    """Impact state after a cumulative signed flow (sells positive); pure and vectorised.

    The power goes through the C library (:func:`libm_power`), as a compiled walk computes it.
    """
    flow = np.asarray(flow, dtype=float)
    return start - 0.01 * np.sign(flow) * libm_power(np.abs(flow) / depth_qty, beta)


def libm_exp(x) -> np.ndarray:
    """``exp`` of each element through the C library (:func:`math.exp`): the bits a compiled
    loop computes, where numpy's vectorised ``exp`` differs in the last bit for a few percent
    of arguments. For the market's (A,) arrays; an overflow gives inf, as numpy's does."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 1:
        return libm_exp(x.ravel()).reshape(x.shape)
    try:  # (prices are read several times a round: the overflow's check only when it comes)
        return np.array([math.exp(v) for v in x.tolist()])
    except OverflowError:
        return np.array([_exp(v) for v in x.tolist()])


def libm_power(x, y: float) -> np.ndarray:
    """``x ** y`` of each element through the C library (:func:`math.pow`); see
    :func:`libm_exp`. An overflow gives inf, as numpy's does."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 1:
        return libm_power(x.ravel(), y).reshape(x.shape)
    try:
        return np.array([math.pow(v, y) for v in x.tolist()])
    except OverflowError:
        return np.array([_pow(v, y) for v in x.tolist()])


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _pow(x: float, y: float) -> float:
    try:
        return math.pow(x, y)
    except OverflowError:
        return math.inf


def _strictly_within(offset: np.ndarray, base) -> bool:
    """Whether every ``base + offset`` is strictly within the log-price limits, compared as
    the clip compares them (``-_MAX_LOG - base < offset < _MAX_LOG - base``): then clipping
    ``offset`` leaves it as it is, to the bit. ``base``: (A,) or one number."""
    bases = base.tolist() if isinstance(base, np.ndarray) else [base] * offset.size
    return all(
        -_MAX_LOG - b < x < _MAX_LOG - b for b, x in zip(bases, offset.tolist(), strict=True)
    )


def correlated_normals_factor(corr: np.ndarray) -> np.ndarray:
    """A matrix ``L`` with ``L L' = corr`` that also works for positive semi-definite input."""
    try:
        return np.linalg.cholesky(corr)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(corr)
        return v * np.sqrt(np.clip(w, 0.0, None))


class Market(mesa.Agent):
    """Per-asset fundamental price process, impact state and counterparty book.

    Args:
        model: the Mesa model (its ``rng`` drives the fundamentals).
        market: the ``[market]`` section of the config (``model.config.MarketConfig``): the
            price process, the impact law, the venue effects; ``market.correlation_matrix(A)``
            gives the assets' (checked) correlation matrix.
        assets: the ``[[assets]]`` (symbol, price, depth, optional volatility of each).
        shocks: scheduled jumps of the fundamentals (``[[shocks]]``: step, asset, return).

    Attributes:
        symbols: asset names.
        fundamental: (A,) fundamental prices ``F``.
        impact: (A,) impact state ``s`` (log price offset).
        flow: (A,) cumulative net flow of the current step (quantity, sells positive).
        forced_flow: (A,) the part of ``flow`` that came from liquidations.
        inventory: (A,) the market agent's position in each asset.
        cash: (A,) the market agent's cash, per asset it traded.
    """

    def __init__(self, model, market, assets, *, shocks=(), liquidity=None):
        super().__init__(model)
        self.symbols = [x.symbol for x in assets]
        a = len(self.symbols)
        self.initial_price = np.array([x.price for x in assets], dtype=float)
        self.depth = np.array([x.depth for x in assets], dtype=float)  # quote notional per 1%
        self.depth_qty = self.depth / self.initial_price
        self.volatility = np.array(
            [market.volatility if x.volatility is None else x.volatility for x in assets],
            dtype=float,
        )
        self.beta = float(market.impact_exponent)
        self.resilience = float(market.resilience)
        self.dt = float(market.step_minutes) / MINUTES_PER_YEAR
        # a step's log return without GARCH is drift + diffusion x z (zero drift in price)
        self._drift = -0.5 * self.volatility**2 * self.dt
        self._diffusion = self.volatility * np.sqrt(self.dt)
        self.jump_rate = float(market.jump_intensity) * self.dt
        self.jump_mean = float(market.jump_mean)
        self.jump_volatility = float(market.jump_volatility)
        self.chol = correlated_normals_factor(np.asarray(market.correlation_matrix(a), dtype=float))
        factors = {}  # step -> (A,) multiplicative factor
        for shock in shocks:
            f = factors.setdefault(shock.step, np.ones(a))
            f[self.symbols.index(shock.asset)] *= 1.0 + shock.return_
        self.log_shocks = {step: np.log(f) for step, f in factors.items()}  # (added to d log F)

        self.log_fundamental = np.log(self.initial_price)
        self.impact = np.zeros(a)
        self.impact_start = np.zeros(a)
        self.flow = np.zeros(a)
        self.forced_flow = np.zeros(a)
        self.inventory = np.zeros(a)
        self.cash = np.zeros(a)
        self._log_open = np.log(self.initial_price)  # log market price when the step began
        # Liquidity stress: depth thins with forced flow and outsized moves, and recovers.
        self.depth_stress = float(market.depth_stress)
        self.depth_recovery = float(market.depth_recovery)
        self.stress = np.zeros(a)  # stress carried over from earlier steps
        self.move_stress = np.zeros(a)  # this step's outsized fundamental move
        # The mark follows the market price with a lag (0: the mark is the price).
        self.mark_lag = float(market.mark_lag)
        self.log_mark = np.log(self.initial_price)
        # per asset, this step: -1 if the price was held at its floor, +1 at its ceiling
        self.limit_hit = np.zeros(a, dtype=np.int8)
        # GARCH(1,1) variance of the next step's diffusion (garch_alpha = 0: constant)
        self.garch_alpha = float(market.garch_alpha)
        self.garch_beta = float(market.garch_beta)
        self.unconditional_variance = self.volatility**2 * self.dt
        self.variance = self.unconditional_variance.copy()  # h of the next step
        self.step_variance = self.variance.copy()  # h of the step last drawn
        dof = market.innovation_dof  # None: normal innovations
        self.innovation_dof = None if dof is None else float(dof)
        self._init_book(liquidity)

    def _init_book(self, liquidity) -> None:
        """The book of quotes under ``liquidity.model = "market_makers"`` (None: static)."""
        a = self.n_assets
        # Resting orders that trade inside the walk (any liquidity model), and who takes the
        # quoting sources' side of a walk (the model's liquidity wiring; None: the market agent).
        self.resting: list = []
        self.counterparty = None
        self.layered: LayeredBook | None = None
        self._scratch = None  # the static book as a layered one, for walks with resting orders
        self.book_flow = np.zeros(a)  # static: net sells the book itself absorbed this step
        if liquidity is None or liquidity.model != "market_makers":
            return
        if liquidity.kernel == "power":
            w, r = fit_power_kernel(
                float(liquidity.refill_time),
                int(liquidity.kernel_terms),
                int(liquidity.kernel_horizon),
            )
        else:
            w, r = exponential_kernel(self.resilience)
        self.layered = LayeredBook(a, self.beta, w, r)
        self.layered.set_depth(self.depth_qty, self.depth_qty)

    # ---- prices -------------------------------------------------------------------------
    @property
    def n_assets(self) -> int:
        return len(self.symbols)

    @property
    def fundamental(self) -> np.ndarray:
        return libm_exp(self.log_fundamental)

    @property
    def price(self) -> np.ndarray:
        """(A,) market price ``F exp(s)``: every fill happens at it; margin checks use ``mark``."""
        return libm_exp(self.log_fundamental + self.impact)

    @property
    def mark(self) -> np.ndarray:
        """(A,) mark price of margin checks: the market price, or its lagged follower."""
        return self.price if self.mark_lag == 0 else libm_exp(self.log_mark)

    def observe_mark(self) -> np.ndarray:
        """Move the mark the fraction ``1 - mark_lag`` of the way to the market price (in log
        price) and return it. The liquidation engine calls this once per round, so after a
        jump the mark has covered ``1 - mark_lag ** k`` of it after ``k`` rounds."""
        log_price = self.log_fundamental + self.impact
        if self.mark_lag == 0:  # the mark is the price (called every round: no more to do)
            self.log_mark = log_price
            return libm_exp(log_price)
        self.log_mark = self.mark_lag * self.log_mark + (1.0 - self.mark_lag) * log_price
        return libm_exp(self.log_mark)

    def effective_depth_qty(self) -> np.ndarray:
        """(A,) depth in quantity per 1% move, thinned by liquidity stress.

        ``d / (1 + depth_stress x load)``; ``load``, in percent of price, is the stress carried
        from earlier steps + this step's outsized move + the move this step's forced flow so
        far would make on the unstressed book, ``(|forced| / d) ** beta``. The within-step
        part makes the book walk steeper as forced selling goes on.
        """
        if self.depth_stress == 0:
            return self.depth_qty
        load = self.stress + self.move_stress + self._forced_move()
        return self.depth_qty / (1.0 + self.depth_stress * load)

    @property
    def depth_now(self) -> np.ndarray:
        """(A,) the book's 1% depth now: the quote notional, at the initial price, whose sale
        would move the price 1% (``assets.depth`` in a calm market; the thinner side of the
        makers' book). The ``depth`` column of market.parquet, read at each step's close."""
        if self.layered is not None:
            return np.minimum(self.layered.d_bid, self.layered.d_ask) * self.initial_price
        if self.depth_stress == 0:
            return self.depth.copy()
        load = self.stress + self.move_stress + self._forced_move()
        return self.depth / (1.0 + self.depth_stress * load)

    def _forced_move(self) -> np.ndarray:
        """(A,) percent move the step's forced flow would make on the unstressed book."""
        return libm_power(np.abs(self.forced_flow) / self.depth_qty, self.beta)

    def _carry_stress(self, dlog) -> None:
        """Fold the ending step's stress into the carried stress, which fades by
        ``depth_recovery`` per step; measure the new step's outsized move.

        The move term is the part of ``|d log F|`` beyond two standard deviations of a normal
        step, in percent, so ordinary noise never thins the book.
        """
        ended = self.move_stress + self._forced_move()
        self.stress = (1.0 - self.depth_recovery) * (self.stress + ended)
        if self.garch_alpha > 0:  # a normal step at the step's own (conditional) volatility
            normal = 2.0 * np.sqrt(self.step_variance)
        else:
            normal = 2.0 * self.volatility * np.sqrt(self.dt)
        self.move_stress = np.maximum(np.abs(dlog) - normal, 0.0) / 0.01

    # ---- phase 1: the fundamental moves ---------------------------------------------------
    def move_fundamentals(self, step: int) -> None:
        """Correlated GBM (zero drift in price; GARCH(1,1) variance when ``garch_alpha > 0``),
        optional Poisson jumps, scheduled shocks; the impact left from earlier steps decays by
        the resilience factor."""
        rng = self.model.rng
        a = self.n_assets
        z = self.chol @ rng.standard_normal(a)
        if self.innovation_dof is not None:  # multivariate Student t with unit variance
            z = z * np.sqrt((self.innovation_dof - 2.0) / rng.chisquare(self.innovation_dof))
        if self.garch_alpha > 0:
            h = self.variance
            dlog = -0.5 * h + np.sqrt(h) * z
            self.step_variance = h
            self.variance = (
                (1.0 - self.garch_alpha - self.garch_beta) * self.unconditional_variance
                + self.garch_alpha * h * z**2
                + self.garch_beta * h
            )
        else:
            dlog = self._drift + self._diffusion * z
        if self.jump_rate > 0:
            n_jumps = rng.poisson(self.jump_rate, a)
            dlog += n_jumps * self.jump_mean + np.sqrt(
                n_jumps
            ) * self.jump_volatility * rng.standard_normal(a)
        if step in self.log_shocks:
            dlog += self.log_shocks[step]
        raw = self.log_fundamental + dlog
        self.limit_hit = np.zeros(a, dtype=np.int8)
        if _strictly_within(raw, 0.0):
            self.log_fundamental = raw
        else:  # a limit bit (or a NaN reached it)
            self.log_fundamental = np.minimum(np.maximum(raw, -_MAX_LOG), _MAX_LOG)
            self.limit_hit = np.sign(raw - self.log_fundamental).astype(np.int8)
        if self.layered is None:
            self.impact = self._within_limits((1.0 - self.resilience) * self.impact)
        else:  # the makers' book refills through its kernel's layers
            self.impact = self._within_limits(self.layered.start_step())
        if self.depth_stress > 0:
            self._carry_stress(dlog)
        self.impact_start = self.impact.copy()
        self.flow = np.zeros(a)
        self.forced_flow = np.zeros(a)
        self.book_flow = np.zeros(a)
        self._log_open = self.log_fundamental + self.impact

    @property
    def step_open(self) -> np.ndarray:
        """(A,) the market price when the step began (after its fundamental move)."""
        return libm_exp(self._log_open)

    # ---- execution ----------------------------------------------------------------------
    def execute(self, net_flow, *, forced: bool) -> np.ndarray:
        """Add a batch's net flow (quantity, sells positive) to the step's book walk.

        Returns:
            (A,) the price after the batch: every fill of the batch happens at it.
        """
        net_flow = np.asarray(net_flow, dtype=float)
        self.flow = self.flow + net_flow
        if forced:
            self.forced_flow = self.forced_flow + net_flow
        if self.layered is None and not self.resting:
            s = impact_state(self.impact_start, self.flow, self.effective_depth_qty(), self.beta)
            # keep log prices finite under absurd flows (a sale of many times the market)
            self.impact = self._within_limits(s)
            return self.price
        y, walk = self._walk(net_flow, commit=True)
        self.impact = self._within_limits(self.impact_start + y)
        price = self.price
        if self.counterparty is not None:  # the quoting sources' and resting orders' fills
            self.counterparty.settle(walk, price)
        return price

    def walks_static_book(self) -> bool:
        """Whether :meth:`execute` walks the static book by the formula alone: no book of
        quotes, no resting order, nobody else taking the walk's other side. Then a compiled
        walk (:meth:`walk_state`) computes the same prices."""
        return self.layered is None and not self.resting and self.counterparty is None

    def walk_state(self) -> tuple:
        """The market's part of a compiled walk of forced flow (``model.kernels.static_walk``)
        when :meth:`walks_static_book`: the step's flows, impact start, depth, exponent, log
        fundamental and log-price limit, the stress load, then the arrays the walk writes
        (impact, limits hit, the market agent's inventory and cash). Those it writes are fresh
        copies made the market's own first, as :meth:`execute` replaces them."""
        self.flow, self.forced_flow = self.flow.copy(), self.forced_flow.copy()
        self.impact, self.limit_hit = self.impact.copy(), self.limit_hit.copy()
        self.inventory, self.cash = self.inventory.copy(), self.cash.copy()
        return (
            self.flow, self.forced_flow, self.impact_start, self.depth_qty, self.beta,
            self.log_fundamental, _MAX_LOG, self.stress + self.move_stress, self.depth_stress,
            self.impact, self.limit_hit, self.inventory, self.cash,
        )  # fmt: skip

    def quote(self, net_flow, *, forced: bool = False) -> np.ndarray:
        """(A,) the price a further batch of ``net_flow`` would execute at; changes nothing.

        ``forced``: the batch is forced flow, which thins a stressed book as it walks it, as in
        :meth:`execute` (the same price, to the bit).
        """
        net_flow = np.asarray(net_flow, dtype=float)
        low, high = -_MAX_LOG - self.log_fundamental, _MAX_LOG - self.log_fundamental
        saved = self.forced_flow
        if forced:
            self.forced_flow = saved + net_flow
        try:
            if self.layered is None and not self.resting:
                flow = self.flow + net_flow
                s = impact_state(self.impact_start, flow, self.effective_depth_qty(), self.beta)
                return libm_exp(self.log_fundamental + np.clip(s, low, high))
            y, _ = self._walk(net_flow, commit=False)
            return libm_exp(self.log_fundamental + np.clip(self.impact_start + y, low, high))
        finally:
            self.forced_flow = saved

    def _walk(self, net_flow, *, commit: bool) -> tuple[np.ndarray, Walk]:
        """Walk a batch through the book of quotes (or the static book) and the resting orders.

        The static book is walked as a layered one whose equivalent flow is the net flow the
        book itself absorbed this step and whose depth is today's effective depth: the same
        prices as the static formula when no resting order trades.
        """
        book = self.layered
        if book is None:
            if self._scratch is None:
                self._scratch = LayeredBook(self.n_assets, self.beta, *exponential_kernel(0.0))
            book = self._scratch
            d = self.effective_depth_qty()
            book.d_bid, book.d_ask = d, d
            book.x_eq = self.book_flow
            book.y = impact_state(0.0, self.book_flow, d, self.beta)
        lo = -_MAX_LOG - self.log_fundamental - self.impact_start
        hi = _MAX_LOG - self.log_fundamental - self.impact_start
        base = self.log_fundamental + self.impact_start
        y, walk = book.walk(net_flow, lo, hi, self.resting, base, commit=commit)
        if commit and self.layered is None:
            self.book_flow = book.x_eq
        return y, walk

    def _within_limits(self, impact) -> np.ndarray:
        """``impact`` clipped so that ``|log price| <= _MAX_LOG``; notes which limit bit.

        Called every step and round: ``impact`` itself when it is strictly within its limits,
        told with Python's floats (the market's few values: a fraction of numpy's calls on
        them); else ``np.minimum(np.maximum(...))``, the same clip at a third of ``np.clip``'s
        call overhead, and the limits noted only when one bit.
        """
        if _strictly_within(impact, self.log_fundamental):
            return impact
        low, high = -_MAX_LOG - self.log_fundamental, _MAX_LOG - self.log_fundamental
        clipped = np.minimum(np.maximum(impact, low), high)
        if not (clipped == impact).all():  # a limit bit (or a NaN reached it)
            bit = np.sign(impact - clipped).astype(np.int8)
            self.limit_hit = np.where(bit != 0, bit, self.limit_hit)
        return clipped

    def take_other_side(self, trader_dq_by_asset, price) -> None:
        """Book the counterparty side of the traders' fills (their buys are our sales)."""
        trader_dq_by_asset = np.asarray(trader_dq_by_asset, dtype=float)
        self.inventory = self.inventory - trader_dq_by_asset
        self.cash = self.cash + trader_dq_by_asset * price

    def value(self, mark=None) -> float:
        """Cash plus inventory marked at ``mark`` (the current price by default)."""
        mark = self.price if mark is None else mark
        return float(self.cash.sum() + (self.inventory * mark).sum())
