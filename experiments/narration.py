"""The narration of a cascade: each liquidation round told as it happens.

:class:`CascadeNarrator` chains itself onto the liquidation engine's ``on_round`` hook (the
contagion recorder keeps getting every round first), keeps a :class:`RoundStory` per round (who
was liquidated, what their liquidations sold or bought back, how far each price moved after
those orders, where the insurance fund stands and who covered what it could not: auto-
deleveraging, socialised losses, unpaid bad debt) and writes one paragraph per round.
``contagion demo`` prints it in the terminal; the dashboard keeps the stories without printing
and draws them (:func:`experiments.cascade_drawing.draw_rounds`).

Words, used the same way everywhere: an *account* is liquidated in a round when one of its
liquidation units is; one account can be liquidated in several rounds of a step (*again*), so
a step's liquidations (account-rounds) can outnumber its accounts. A *position* is an account's
holding of one asset: *closed out* when a round closes all of it, *cut back* when part.

The formatting helpers (``_pct``, ``_price``, ``_money``, ``_qty``) are the narration's number
style; the demo's summary lines use them too, so every number reads the same. docs/tutorial.md
quotes the narration word for word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CascadeNarrator", "RoundStory"]


# --------------------------------------------------------------------------------------------
# Listening to the engine
# --------------------------------------------------------------------------------------------


@dataclass
class RoundStory:
    """What one liquidation round did, in the terms the narration uses.

    The narration's words: an *account* is liquidated in a round when at least one of its
    liquidation units (its cross book, or one isolated position) is; a *position* (an account's
    holding of one asset) is *closed out* when the round closed all of it and *cut back* when it
    closed part of it. An account can be liquidated in several rounds of one step.

    Attributes:
        step, round: when (round numbers are the cascade's generations).
        rows: (k,) book rows of the accounts liquidated in the round.
        again: how many of them were liquidated in an earlier round of the same step.
        positions_closed, positions_cut: positions closed out and cut back.
        sold, bought: (A,) quantity sold (closing longs) and bought back (closing shorts).
        notional: (A,) notional closed per asset, at the round's price.
        price_before, price_after: (A,) prices around the round's execution.
        fees, bad_debt: paid into the insurance fund / left by the round's closed units.
        fund_paid: the part of that bad debt the insurance fund paid.
        fund: the insurance fund after the round.
        adl_notional: notional of profitable positions auto-deleveraged to cover the rest.
        socialized: loss taken pro rata from paper profits when ADL could not cover it.
        unfunded: bad debt nobody paid.
        depth: (A,) the book's 1% depth the round's forced flow walked (quote notional at the
            initial price), or None.
        makers: (A,) what market makers bought of the round's forced flow (sold: negative),
            or None without market makers.
        resting: (A,) what resting orders (value traders' ladders) bought, or None.
    """

    step: int
    round: int
    rows: np.ndarray
    again: int
    positions_closed: int
    positions_cut: int
    sold: np.ndarray
    bought: np.ndarray
    notional: np.ndarray
    price_before: np.ndarray
    price_after: np.ndarray
    fees: float
    bad_debt: float
    fund_paid: float
    fund: float
    adl_notional: float = 0.0
    socialized: float = 0.0
    unfunded: float = 0.0
    depth: np.ndarray | None = None
    makers: np.ndarray | None = None
    resting: np.ndarray | None = None

    @property
    def accounts(self) -> int:
        return int(self.rows.size)

    @property
    def move(self) -> np.ndarray:
        """(A,) relative price move of the round."""
        return self.price_after / self.price_before - 1.0


class CascadeNarrator:
    """Tells a model's liquidation rounds as they happen.

    It chains itself onto the engine's ``on_round`` hook (the contagion recorder keeps getting
    every round first), keeps a :class:`RoundStory` per round, and writes one paragraph per
    round through ``write``.

    Args:
        model: a :class:`model.ContagionModel` before its first step.
        write: where the text goes (default: print and flush, so it appears as it happens).
        label: a short name for the run, used in headers.
    """

    def __init__(self, model, write=None, label: str = ""):
        self.model = model
        self.write = write or _print_now
        self.label = label
        self.stories: list[RoundStory] = []
        self.step_open: dict[int, np.ndarray] = {}  # step -> prices before its first round
        self.quiet_from: int | None = None  # first step of the current stretch without liquidations
        self._fund = float(model.engine.insurance_fund)  # the fund before the next round
        self._hit: list[np.ndarray] = []  # rows liquidated in the current step's rounds so far
        self._chained = model.engine.on_round
        model.engine.on_round = self._on_round

    @property
    def symbols(self) -> list[str]:
        return self.model.symbols

    def _on_round(self, rec) -> None:
        if self._chained is not None:
            self._chained(rec)
        if rec.round == 1:
            self._hit = []
        story = self._story(rec)
        self._hit.append(np.asarray(rec.rows))
        if story.round == 1:
            self.flush_quiet(story.step - 1)
            self.step_open[story.step] = story.price_before
            self.write(self._step_header(story))
        self.stories.append(story)
        self.write(self.describe_round(story))

    def _story(self, rec) -> RoundStory:
        """The round's :class:`RoundStory`, from the engine's record."""
        closed = np.asarray(rec.closed, dtype=float)
        exposure = np.asarray(rec.exposure, dtype=float)
        hit = closed != 0
        out = hit & (closed == exposure)  # a position closed in full: fraction 1 of it
        seen = np.concatenate(self._hit) if self._hit else np.zeros(0, np.int64)
        paid = self._fund + rec.fees - rec.fund
        self._fund = float(rec.fund)
        return RoundStory(
            step=int(rec.step),
            round=int(rec.round),
            rows=np.asarray(rec.rows),
            again=int(np.isin(rec.rows, seen).sum()),
            positions_closed=int(out.sum()),
            positions_cut=int((hit & ~out).sum()),
            sold=np.clip(closed, 0.0, None).sum(axis=0),
            bought=np.clip(-closed, 0.0, None).sum(axis=0),
            notional=(np.abs(closed) * rec.price_after[None, :]).sum(axis=0),
            price_before=np.asarray(rec.price_before, dtype=float).copy(),
            price_after=np.asarray(rec.price_after, dtype=float).copy(),
            fees=float(rec.fees),
            bad_debt=float(rec.bad_debt),
            fund_paid=float(max(paid, 0.0)),
            fund=float(rec.fund),
            adl_notional=float(rec.adl_notional),
            socialized=float(rec.socialized),
            unfunded=float(rec.unfunded),
            depth=None if rec.depth is None else np.asarray(rec.depth, dtype=float).copy(),
            makers=None if rec.absorbed is None else np.asarray(rec.absorbed.makers).copy(),
            resting=None if rec.absorbed is None else np.asarray(rec.absorbed.resting).copy(),
        )

    def flush_quiet(self, last: int) -> None:
        """Report the stretch of steps without liquidations that ends at step ``last``."""
        first, self.quiet_from = self.quiet_from, None
        if first is None or last < first:
            return
        past = self.model.market_history
        price, fundamental = past.price[last - 1], past.fundamental[last - 1]
        prices = ", ".join(
            f"{s} {_price(price[j])} (fundamental {_price(fundamental[j])})"
            for j, s in enumerate(self.symbols)
        )
        span = f"step {first}" if first == last else f"steps {first}-{last}"
        self.write(f"{span}: no liquidations; at the end {prices}.")

    def _step_header(self, story: RoundStory) -> str:
        t = story.step
        before = self.model.market.step_open
        fundamental = self.model.market.fundamental
        lines = [f"step {t}:"]
        shocks = {s.asset: s.return_ for s in self.model.config.shocks if s.step == t}
        for j, s in enumerate(self.symbols):
            prev = self.previous_price(t)[j]
            if s in shocks:
                verb = "falls" if shocks[s] < 0 else "jumps"
                what = f"SHOCK: {s}'s fundamental {verb} {abs(100 * shocks[s]):.1f}% (news, not trading)"
            else:
                what = f"{s}'s fundamental drifts {_pct(fundamental[j] / self.previous_fundamental(t)[j] - 1)}"
            lines.append(
                f"  {what}; {s} opens the liquidation rounds at {_price(before[j])} "
                f"({_pct(before[j] / prev - 1)} since step {t - 1})"
            )
        return "\n".join(lines)

    def previous_price(self, t: int) -> np.ndarray:
        """(A,) market prices at the end of step ``t - 1`` (initial prices for step 1)."""
        past = self.model.market_history
        return self.model.market.initial_price if t <= 1 else past.price[t - 2]

    def previous_fundamental(self, t: int) -> np.ndarray:
        past = self.model.market_history
        return self.model.market.initial_price if t <= 1 else past.fundamental[t - 2]

    def describe_round(self, s: RoundStory) -> str:
        """One round as four lines: who was liquidated, what their liquidations traded, the
        prices after those orders, and what happened to the insurance fund (and beyond it)."""
        pad = " " * 11
        return (
            f"  round {s.round}: {_who(s)}\n"
            f"{pad}{_trades(s, self.symbols)}\n"
            f"{pad}prices after their orders: {_moves(s, self.symbols)}\n"
            f"{pad}{_fund(s)}" + _book_line(s, self.symbols, self.model.market.depth)
        )

    def describe_step(self, t: int) -> str:
        """The end of step ``t``'s cascade: why it stopped, and the step in all."""
        stories = [s for s in self.stories if s.step == t]
        rows = np.concatenate([s.rows for s in stories])
        accounts = np.unique(rows).size
        times = rows.size
        repeated = int((np.unique(rows, return_counts=True)[1] > 1).sum())
        closed = sum(float(s.notional.sum()) for s in stories)
        last = stories[-1]
        model = self.model
        moves = ", ".join(
            f"{sym} {_pct(last.price_after[j] / self.previous_price(t)[j] - 1)} "
            f"(fundamental {_pct(model.market.fundamental[j] / self.previous_fundamental(t)[j] - 1)})"
            for j, sym in enumerate(self.symbols)
        )
        stop = (
            "the round limit stopped it"
            if model.last.round_limit_hit
            else "nobody else is below maintenance"
        )
        again = f", {repeated:,} of them in more than one round" if repeated else ""
        return (
            f"  the cascade stops after round {last.round}: {stop}.\n"
            f"  step {t} in all: {_count(accounts, 'account')} liquidated "
            f"{_count(times, 'time')}{again}; {_money(closed)} closed; over the step {moves}."
        )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _who(s: RoundStory) -> str:
    """``213 accounts liquidated, 97 of them again: 143 positions closed out, 70 cut back``."""
    who = f"{_count(s.accounts, 'account')} liquidated"
    if s.again:
        who += f", {s.again:,} of them again"
    parts = []
    if s.positions_closed:
        parts.append(f"{_count(s.positions_closed, 'position')} closed out")
    if s.positions_cut:
        noun = (
            "cut back"
            if parts
            else f"{'position' if s.positions_cut == 1 else 'positions'} cut back"
        )
        parts.append(f"{s.positions_cut:,} {noun}")
    return f"{who}: {', '.join(parts)}"


def _trades(s: RoundStory, symbols) -> str:
    """``sold 81.49 BTC and 315 ETH, bought back 44.21 ETH (closed BTC $4.44M, ETH $1.06M)``."""
    sold = [f"{_qty(s.sold[j])} {sym}" for j, sym in enumerate(symbols) if s.sold[j] > 0]
    bought = [f"{_qty(s.bought[j])} {sym}" for j, sym in enumerate(symbols) if s.bought[j] > 0]
    parts = []
    if sold:
        parts.append("sold " + " and ".join(sold))
    if bought:
        parts.append("bought back " + " and ".join(bought))
    closed = ", ".join(
        f"{sym} {_money(s.notional[j])}" for j, sym in enumerate(symbols) if s.notional[j]
    )
    return f"{', '.join(parts) or 'traded nothing'} (closed {closed or 'nothing'})"


def _moves(s: RoundStory, symbols) -> str:
    return ", ".join(
        f"{sym} {_pct(s.move[j])} to {_price(s.price_after[j])}" for j, sym in enumerate(symbols)
    )


def _fund(s: RoundStory) -> str:
    """Where the fund stands, and who paid the bad debt the fund could not."""
    text = f"insurance fund {_money(s.fund)} (+{_money(s.fees)} fees"
    if s.bad_debt < 0.5:
        return text + ")"
    if s.fund_paid >= s.bad_debt - 0.5:
        return text + f", -{_money(s.bad_debt)} bad debt)"
    text += f", paid {_money(s.fund_paid)} of {_money(s.bad_debt)} bad debt: the fund is empty)"
    if s.adl_notional > 0:
        text += (
            f"; auto-deleveraging closed {_money(s.adl_notional)} of profitable opposite "
            "positions at the bankruptcy price"
        )
    if s.socialized >= 0.5:
        text += f"; {_money(s.socialized)} socialised (taken pro rata from paper profits)"
    if s.unfunded >= 0.5:
        text += f"; {_money(s.unfunded)} left unpaid"
    return text


def _book_line(s: RoundStory, symbols, calm) -> str:
    """The book the round walked, when it is not the calm book: each thinned asset's 1%
    depth, and who bought the forced sales (market makers, resting orders). Nothing on a
    static book that never thins."""
    if s.depth is None or not (s.depth < 0.99 * calm).any():
        if s.resting is None or not np.any(s.resting > 0):
            return ""
    parts = []
    for j, sym in enumerate(symbols):
        text = f"{sym} 1% depth {_money(s.depth[j])} ({100 * s.depth[j] / calm[j]:.0f}% of calm)"
        sold = s.sold[j] - s.bought[j]
        if sold > 0 and s.makers is not None and np.any(s.makers):
            text += f", makers bought {100 * s.makers[j] / sold:.0f}% of the sales"
        if sold > 0 and s.resting is not None and s.resting[j] > 0:
            text += f", resting orders {100 * s.resting[j] / sold:.0f}%"
        parts.append(text)
    return "\n           book: " + " | ".join(parts)


def _print_now(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    """A signed percentage: one decimal, two for moves under 0.05%, never "-0.0%"."""
    v = 100 * x
    if abs(v) < 0.05:
        v = round(v, 2)
        return "+0.0%" if v == 0 else f"{v:+.2f}%"
    return f"{v:+.1f}%"


def _price(x: float) -> str:
    return f"${x:,.0f}" if x >= 100 else f"${x:,.2f}"


def _money(x: float) -> str:
    ax = abs(x)
    if ax < 0.5:  # rounding noise of a sum that is zero: never "$-0"
        return "$0"
    if ax >= 1e9:
        return f"${x / 1e9:.2f}B"
    if ax >= 1e6:
        return f"${x / 1e6:.2f}M"
    if ax >= 1e3:
        return f"${x / 1e3:.1f}k"
    return f"${x:,.0f}"


def _qty(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"
