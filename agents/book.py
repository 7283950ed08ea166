"""The order book as a sum of quotes: the walk through it, resting orders, and its refill.

A *source* j (a market maker, or the market agent's backstop) quotes ``d_j`` on each side: the
quantity it absorbs when the log price moves 1% from where the step started. Moving the log
price by ``y`` (negative: the price fell) it absorbs

    V_j(y) = d_j,bid (-y / 0.01) ** (1 / beta)     (y <= 0: it buys what the walk sells)
    V_j(y) = -d_j,ask (y / 0.01) ** (1 / beta)     (y >= 0: it sells what the walk buys)

which is the engine's impact law ``y = -0.01 sign(X) (|X| / d) ** beta`` read the other way.
Books of the same shape add, so the walk through every source is the walk through one book of
depth ``d = sum_j d_j``, and each source fills ``d_j / d`` of what its side absorbs. With
``beta = 1/2`` each source's book is a locally linear latent book (the LLOB of Donier,
Bonart, Mastromatteo and Bouchaud 2015; docs/reference/literature.md), whose sweep law is the
square root.

Within a step the state of an asset's book is the walk's displacement ``y`` from the step's
start and the *equivalent flow* ``X_eq(y)``: the net sells the current quotes absorb between 0
and ``y`` (:func:`equivalent_flow`). A batch of net sells ``x`` moves it to ``X_eq + x``, the
price to ``displacement(X_eq + x)``. When quotes change between batches (makers withdraw),
``y`` stays and ``X_eq`` is re-read from the new quotes: a withdrawal does not move the price by
itself, the next flow walks a thinner book.

Resting orders (:class:`RestingOrders`: value traders' ladders, an elastic demand curve) trade
in the walk too: the walk then ends at the price where the quotes and the resting orders
together absorb the batch (:func:`solve_walk`, one monotone equation per asset).

Between steps the book refills: the step's displacement joins ``K`` layers that decay at their
own rates, ``s_t = sum_k y_k G(t - k)`` with ``G(tau) = sum_i w_i a_i ** tau``. With weights and
rates from :func:`fit_power_kernel`, ``G(tau) = (1 + tau / tau0) ** -1/2`` to within a fraction
of a percent: the diffusive refill of a latent book (the propagator ``~ t ** -1/2`` of the LLOB
in its linear regime; Benzaquen and Bouchaud 2018 obtain the square-root law from such a
spectrum of rates), which makes a metaorder's impact grow as ``sqrt(Q)`` whatever its duration
and decay as ``sqrt(1 + x) - sqrt(x)`` after it (``x`` the time since its end over its
duration). One layer with ``a = 1 - resilience`` is the static model's exponential decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = [
    "PCT",
    "LayeredBook",
    "RestingOrders",
    "Walk",
    "displacement",
    "equivalent_flow",
    "exponential_kernel",
    "fit_power_kernel",
    "side_split",
    "solve_walk",
]

PCT = 0.01  # depth is quoted per 1% move of the price


def equivalent_flow(y, d_bid, d_ask, beta: float) -> np.ndarray:
    """(A,) net sells (quantity) a book of 1% depths ``d_bid``, ``d_ask`` absorbs while the
    log price moves by ``y`` from the step's start (negative: bought by the bids)."""
    y = np.asarray(y, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        walked = (np.abs(y) / PCT) ** (1.0 / beta)
        x = np.where(y <= 0, d_bid * walked, -(d_ask * walked))
    return np.where(np.isnan(x), 0.0, x)  # an empty side (0 x inf) absorbs nothing


def displacement(x, d_bid, d_ask, beta: float) -> np.ndarray:
    """(A,) log-price move from the step's start at which the book has absorbed net sells
    ``x`` (the inverse of :func:`equivalent_flow`; infinite when a side is empty)."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        down = -PCT * (np.maximum(x, 0.0) / np.asarray(d_bid)) ** beta
        up = PCT * (np.maximum(-x, 0.0) / np.asarray(d_ask)) ** beta
    return np.where(x > 0, down, np.where(x < 0, up, 0.0))


def side_split(x0, x1) -> tuple[np.ndarray, np.ndarray]:
    """What the bids and the asks absorbed (quantity they bought; the asks' is negative when
    they sold) when the equivalent flow went from ``x0`` to ``x1``; the two add to
    ``x1 - x0`` (a walk crossing the start is split there)."""
    bid = np.maximum(x1, 0.0) - np.maximum(x0, 0.0)
    ask = np.minimum(x1, 0.0) - np.minimum(x0, 0.0)
    return bid, ask


@lru_cache(maxsize=32)
def fit_power_kernel(tau0: float, terms: int, horizon: int, gamma: float = 0.5):
    """Weights ``w`` and per-step retentions ``a`` of ``terms`` exponentials whose sum
    ``G(tau) = sum_i w_i a_i ** tau`` follows ``(1 + tau / tau0) ** -gamma`` over
    ``0 <= tau <= horizon``.

    Retentions ``exp(-1 / T_i)`` with time scales ``T_i`` log-spaced from ``tau0 / 2`` to
    ``4 x horizon``; weights by non-negative least squares on the relative error at about 200
    log-spaced lags, then scaled to sum to 1. Deterministic (no randomness); cached.
    """
    from scipy.optimize import nnls

    scales = np.geomspace(tau0 / 2.0, 4.0 * horizon, terms)
    a = np.exp(-1.0 / scales)
    lags = np.unique(np.round(np.geomspace(1, horizon, 200))).astype(int)
    t = np.concatenate([[0], lags])
    target = (1.0 + t / tau0) ** -gamma
    w, _ = nnls(a[None, :] ** t[:, None] / target[:, None], np.ones(t.size))
    w = w / w.sum()
    w.flags.writeable = False
    a.flags.writeable = False
    return w, a


def exponential_kernel(resilience: float):
    """One layer that keeps ``1 - resilience`` of the impact a step (the static model's)."""
    return np.ones(1), np.array([1.0 - resilience])


class RestingOrders:
    """Orders resting in the book, filled when a walk reaches their prices.

    A subclass says, per asset, what its orders would have bought (quantity, buys positive)
    if the walk ended at ``price``, beyond what they have already filled this step, and how
    that quantity changes with the price (never increasing in it: a lower price fills more
    bids and fewer asks). Evaluated on scalars, one asset at a time: the walk solves one
    monotone equation per asset.
    """

    def active(self, a: int) -> bool:
        """Whether the orders have any interest in asset ``a`` now (else they are skipped)."""
        return True

    def absorbed(self, a: int, price: float) -> tuple[float, float]:
        """``(quantity, d quantity / d price)`` for asset ``a`` at ``price``."""
        raise NotImplementedError

    def cancel(self, rows) -> None:
        """The accounts ``rows`` are being liquidated: withdraw their orders (venues cancel
        the open orders of an account under liquidation). Default: nothing rests for them."""


@dataclass
class Walk:
    """What one batch's walk did, per asset.

    Attributes:
        bid, ask: (A,) quantity the bids and the asks of the book bought (the asks' negative
            when they sold), to be shared among the quoting sources pro rata to their quotes.
        resting: one (A,) array per :class:`RestingOrders` source: what its orders bought.
        limit: (A,) what nobody absorbed because the price reached its log limit (the market
            agent takes it).
    """

    bid: np.ndarray
    ask: np.ndarray
    resting: list = field(default_factory=list)
    limit: np.ndarray | None = None


def _book_flow(y: float, d_bid: float, d_ask: float, beta: float) -> tuple[float, float]:
    """Scalar ``X_eq(y)`` and its derivative in ``y``."""
    if y < 0:
        if d_bid <= 0:
            return 0.0, 0.0
        x = d_bid * (-y / PCT) ** (1.0 / beta)
        return x, x / (beta * y)
    if y > 0:
        if d_ask <= 0:
            return 0.0, 0.0
        x = -d_ask * (y / PCT) ** (1.0 / beta)
        return x, x / (beta * y)
    return 0.0, 0.0


def _excess(y, x, x0, d_bid, d_ask, beta, log_base, a, sources):
    """Absorbed-minus-sent at displacement ``y`` for asset ``a``, its derivative, and each
    source's absorbed quantity."""
    book, dbook = _book_flow(y, d_bid, d_ask, beta)
    price = math.exp(log_base + y)
    total, slope, parts = book - x0 - x, dbook, []
    for s in sources:
        q, dq = s.absorbed(a, price)
        total += q
        slope += dq * price
        parts.append(q)
    return total, slope, book, parts


def solve_walk(x, x0, d_bid, d_ask, beta, log_base, y0, lo, hi, sources, a):
    """Scalar walk of asset ``a`` with resting orders: the displacement ``y`` in ``[lo, hi]``
    at which the book (from ``x0``, at ``y0``) and ``sources`` absorb net sells ``x``.

    The absorbed quantity falls strictly as ``y`` rises, so the root is unique: it is
    bracketed by stepping out from ``y0`` and found by Newton's method safeguarded by
    bisection. At a log limit with no root the walk stops there.

    Returns:
        ``(y, x_book, parts)``: the displacement, the book's equivalent flow there and each
        source's absorbed quantity.
    """
    f0, _, b0, p0 = _excess(y0, x, x0, d_bid, d_ask, beta, log_base, a, sources)
    if f0 == 0.0:
        return y0, b0, p0
    direction = 1.0 if f0 > 0 else -1.0  # too much absorbed at y0: the price must rise
    guess = float(displacement(x0 + x, d_bid, d_ask, beta)) - y0
    step = min(max(abs(guess) if math.isfinite(guess) else 0.0, 1e-4), 1.0)
    near, far = y0, y0
    while True:
        far = min(max(near + direction * step, lo), hi)
        f, _, b, p = _excess(far, x, x0, d_bid, d_ask, beta, log_base, a, sources)
        if f == 0.0:
            return far, b, p
        if (f > 0) != (f0 > 0):
            break
        if far in (lo, hi):
            return far, b, p  # no root inside the limits: the walk stops at the limit
        near, step = far, 2.0 * step
    left, right = (near, far) if near < far else (far, near)  # f(left) > 0 > f(right)
    y = 0.5 * (left + right)
    for _ in range(200):
        f, df, b, p = _excess(y, x, x0, d_bid, d_ask, beta, log_base, a, sources)
        if f > 0:
            left = y
        else:
            right = y
        if f == 0.0 or right - left <= 1e-14 * max(1.0, abs(y)):
            break
        newton = y - f / df if df < 0 else math.nan
        y = newton if left < newton < right else 0.5 * (left + right)
    return y, b, p


class LayeredBook:
    """Per-asset state of a book of quotes within and between steps.

    Args:
        n_assets: number of assets.
        beta: the impact exponent (the shape of every source's book).
        weights, retention: the refill kernel's layers (:func:`fit_power_kernel` or
            :func:`exponential_kernel`).

    Attributes:
        d_bid, d_ask: (A,) the book's 1% depths (quantity), the sum of every source's quotes.
        y: (A,) the walk's displacement of the log price since the step started.
        x_eq: (A,) the equivalent flow at ``y`` (net sells the current quotes absorbed).
        layers: (K, A) impact of earlier steps, each layer decaying at its own rate.
    """

    def __init__(self, n_assets: int, beta: float, weights, retention):
        self.beta = float(beta)
        self.w = np.asarray(weights, dtype=float)
        self.a = np.asarray(retention, dtype=float)
        self.layers = np.zeros((self.w.size, n_assets))
        self.y = np.zeros(n_assets)
        self.x_eq = np.zeros(n_assets)
        self.d_bid = np.zeros(n_assets)
        self.d_ask = np.zeros(n_assets)

    def start_step(self) -> np.ndarray:
        """Book the last step's walk into the layers, let them decay one step, and start a
        new walk; return the impact carried into the step (the layers' sum)."""
        if self.y.any():
            self.layers = self.layers + np.multiply.outer(self.w, self.y)
            self.y = np.zeros_like(self.y)
            self.x_eq = np.zeros_like(self.x_eq)
        self.layers = self.a[:, None] * self.layers
        return self.layers.sum(axis=0)

    def set_depth(self, d_bid, d_ask) -> None:
        """New quotes: keep the displacement, re-read the equivalent flow from them."""
        self.d_bid = np.asarray(d_bid, dtype=float).copy()
        self.d_ask = np.asarray(d_ask, dtype=float).copy()
        if self.y.any():  # at the step's start (y = 0) the equivalent flow is 0
            self.x_eq = equivalent_flow(self.y, self.d_bid, self.d_ask, self.beta)

    def walk(self, x, lo, hi, sources=(), log_base=None, commit: bool = True):
        """Walk net sells ``x`` (A,) through the book and the resting ``sources``.

        Args:
            x: (A,) net sells of the batch.
            lo, hi: (A,) bounds on the displacement (the log-price limits).
            sources: :class:`RestingOrders` trading in the walk.
            log_base: (A,) log price at ``y = 0`` (needed when ``sources`` is not empty).
            commit: False previews the walk without changing the state.

        Returns:
            ``(y, walk)``: the new displacement (A,) and the :class:`Walk`.
        """
        x = np.asarray(x, dtype=float)
        x0 = self.x_eq
        target = x0 + x
        y = displacement(target, self.d_bid, self.d_ask, self.beta)
        held = np.isnan(y) | (y < lo) | (y > hi)  # at a log limit the book absorbs less
        x1 = target
        if held.any():
            y = np.clip(np.where(np.isnan(y), 0.0, y), lo, hi)
            x1 = np.where(held, equivalent_flow(y, self.d_bid, self.d_ask, self.beta), target)
        parts = [np.zeros_like(x) for _ in sources]
        for a in range(x.size):  # a loop over assets: one scalar equation each
            live = [s for s in sources if s.active(a)]
            if not live:
                continue
            args = (self.d_bid[a], self.d_ask[a], self.beta, log_base[a], self.y[a])
            ya, xa, pa = solve_walk(x[a], x0[a], *args, lo[a], hi[a], live, a)
            y[a], x1[a] = ya, xa
            for s, q in zip(live, pa, strict=True):
                parts[list(sources).index(s)][a] = q
        bid, ask = side_split(x0, x1)
        limit = x - (bid + ask) - (sum(parts) if parts else 0.0)
        if commit:
            self.y, self.x_eq = y, x1
        return y, Walk(bid, ask, parts, limit)
