"""Cascade metrics: pure functions of a run's tables and its contagion graph.

Everything here works on what a run folder holds, so it serves notebooks as well as
``summary.json``:

* ``liquidations``: the liquidations table (one row per fill: step, round, trader_id, asset,
  notional, kind ...). Auto-deleveraging fills (``kind == "adl"``) and collateral sales
  (``kind == "collateral"``) are not liquidations and are left out of every cascade count.
* ``edges``: the contagion edge events (one row per attribution: step, round, source,
  source_kind, target, weight), :meth:`model.contagion.ContagionRecorder.edges_table` or
  ``contagion_edges.parquet`` (or, for :func:`cascade_metrics`, a finished model's events
  in the recorder's batches, :meth:`model.contagion.ContagionRecorder.edge_batches`).
  Unlike the merged graph, it keeps which step each attribution belongs to, which the
  per-cascade measures need.
* ``market``: the market table (step, asset, price, fundamental, ...).
* ``accounts``: the accounts table (initial and final quantities per asset).

Trader ids are whatever the tables hold: integers, or the strings a population file gave
(:mod:`model.ids`); graphs here name trader nodes by them, as the contagion graph does.

A *cascade* is everything hanging from one root ``step:<t>``: the accounts liquidated in step
``t``. Its *generations* are the liquidation rounds; generation sizes count accounts (an
account liquidated in two rounds of one step counts in both generations, once in the size).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from model.fills import liquidation_fills
from model.ids import plain_id
from model.sorting import run_labels, run_starts

__all__ = [
    "amplification",
    "branching_by_generation",
    "cascade_metrics",
    "cascade_size_distribution",
    "cascade_sizes",
    "cascade_subgraph",
    "cascades",
    "exposure_network",
    "generation_sizes",
    "largest_cascade",
    "mean_branching",
    "overlap_projection",
    "path_amplification",
    "systemic_importance",
]


# --------------------------------------------------------------------------------------------
# Events as arrays
# --------------------------------------------------------------------------------------------
# The tables are small (a run has hundreds to millions of fills) and summary.json needs a dozen
# figures from them: pandas' groupby costs about a millisecond a call whatever the size, which
# in a sweep of thousands of small runs weighed more than the runs. So the cascade measures
# work on numpy arrays, in one sorted pass, and sum floats the way pandas' groupby does
# (:func:`_group_sums`), so the tables and figures are the ones the groupby formulation gives,
# to the bit.


def _group_sums(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum of ``values`` by ``group`` (codes 0..n_groups-1, in the order of the table's rows)
    exactly as pandas' ``groupby(...).sum()`` computes it: ``np.add.reduceat`` over the runs
    when the codes never decrease (and no value is NaN), else each group's values added in
    their order with Kahan's compensation (pandas' Cython kernel). The Kahan loop runs over
    the place within a group, vectorised over the groups: as many iterations as the largest
    group has members.

    ``values`` may be (k,) or (k, m): ``m`` columns summed by the same groups, each exactly as
    a call of its own sums it. Unsorted codes take one Kahan loop for all the columns (its
    steps are elementwise), which saves the loop's fixed cost when several columns share
    their groups; sorted ones a call per column (each column NaN or not on its own)."""
    total = np.zeros((n_groups, *values.shape[1:]))
    if group.size == 0:
        return total
    if (group[1:] >= group[:-1]).all():
        if values.ndim == 2:  # each column takes its own way (NaN or not): a call each
            columns = [np.ascontiguousarray(values[:, j]) for j in range(values.shape[1])]
            return np.column_stack([_group_sums(group, c, n_groups) for c in columns])
        if not np.isnan(values).any():
            starts = run_starts(group)
            total[group[starts]] = np.add.reduceat(values, starts)
            return total
    comp = np.zeros_like(total)
    order = np.argsort(group, kind="stable")
    sizes = np.bincount(group, minlength=n_groups)
    starts = np.cumsum(sizes) - sizes
    pos = np.empty(group.size, dtype=np.int64)
    pos[order] = np.arange(group.size) - starts[group[order]]  # place within its group
    # first members of every group, then second, ... (places below 2 ** 16 as 16-bit keys,
    # which numpy's stable sort orders by radix: the same order, without comparisons)
    by_pos = np.argsort(pos.astype(np.uint16) if sizes.max() <= 1 << 16 else pos, kind="stable")
    groups, ordered = group[by_pos], values[by_pos]
    nan = bool(np.isnan(ordered).any())
    bounds = [0, *np.cumsum(np.bincount(pos)).tolist()]
    with np.errstate(invalid="ignore"):  # inf - inf: the NaN put right below
        for lo, hi in itertools.pairwise(bounds):
            g = groups[lo:hi]  # distinct groups: one member each at this place
            value = ordered[lo:hi]
            before, carried = total[g], comp[g]
            y = value - carried
            t = before + y
            c = (t - before) - y
            c[c != c] = 0.0  # an infinite value: no compensation (pandas GH#53606)
            if nan:  # pandas skips NaN
                keep = value == value
                c, t = np.where(keep, c, carried), np.where(keep, t, before)
            comp[g] = c
            total[g] = t
    return total


def _liquidation_rows(liquidations):
    """``(step, round, trader, notional)`` of the liquidation fills (ADL fills and collateral
    sales left out) of the table or the fill log's columns, as numpy arrays."""
    liq = liquidations
    step = np.asarray(liq["step"], dtype=np.int64)
    rnd = np.asarray(liq["round"], dtype=np.int64)
    trader = _trader_values(liq["trader_id"])
    notional = np.asarray(liq["notional"], dtype=float)
    if "kind" in liq:
        keep = liquidation_fills(liq["kind"])
        if not keep.all():
            step, rnd, trader, notional = step[keep], rnd[keep], trader[keep], notional[keep]
    return step, rnd, trader, notional


def _accounts_by_step(step, trader_code, n_traders: int) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, accounts)``: the distinct accounts liquidated in each step with liquidations
    (the size of its cascade), in step order, from liquidations' steps and trader codes
    (``0 .. n_traders - 1``): one sort of the (step, trader) pairs."""
    span = max(int(n_traders), 1)
    pairs = np.sort(step * span + trader_code)  # (np.unique's values: hashing them is slower)
    steps = pairs[run_starts(pairs)] // span
    first = run_starts(steps)
    return steps[first], np.diff(np.append(first, steps.size))


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` (the inverse flat): for small non-negative
    integers (a generated population's ids) from a table of which values occur, without
    sorting the values."""
    if values.dtype.kind == "i" and values.size:
        low, high = int(values.min()), int(values.max())
        if low >= 0 and high < max(_DENSE, 2 * values.size):
            seen = np.zeros(high + 1, dtype=bool)
            seen[values] = True
            code = np.cumsum(seen, dtype=np.int64) - 1
            return np.flatnonzero(seen).astype(values.dtype, copy=False), code.take(values)
    distinct, code = np.unique(values, return_inverse=True)
    return distinct, code.ravel()


def _in_order(*keys: np.ndarray) -> bool:
    """Whether the entries are sorted by ``keys`` (the first the most significant)."""
    if keys[0].size < 2:
        return True
    settled = np.zeros(keys[0].size - 1, dtype=bool)  # an earlier key went up already
    for k in keys:
        if ((k[1:] < k[:-1]) & ~settled).any():
            return False
        settled |= k[1:] > k[:-1]
    return True


class _Events:
    """One entry per (step, round, trader) liquidated, sorted by step, round and trader, with
    the notional closed (ADL fills and collateral sales left out): the unit every cascade
    measure counts.

    Attributes:
        step, round: (k,) int64.
        traders: the traders liquidated (ids, sorted), and ``trader_code`` (k,) each event's
            trader as a place among them.
        notional: (k,) notional closed in the event.
        id_dtype: the dtype of the table's trader_id column.
    """

    def __init__(self, liquidations):
        self.id_dtype = liquidations["trader_id"].dtype
        step, rnd, trader, notional = _liquidation_rows(liquidations)
        self.traders, code = _distinct(trader)
        del trader
        n = step.size
        if _in_order(step, rnd, code):  # (the fill log, often: no sort, no reordered copies)
            first = run_starts(step, rnd, code)
            self.step, self.round, self.trader_code = step[first], rnd[first], code[first]
            del step, rnd, code  # (the fills' columns given up before the labels are made)
            event = run_labels(first, n)
        else:
            order = np.lexsort((code, rnd, step))
            first = run_starts(step[order], rnd[order], code[order])
            event = np.empty(n, dtype=np.int64)  # each fill's event, in table order
            event[order] = run_labels(first, n)
            first = order[first]
            self.step, self.round, self.trader_code = step[first], rnd[first], code[first]
        self.notional = _group_sums(event, notional, first.size)

    def __len__(self) -> int:
        return self.step.size

    def generations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(step, round, accounts)`` of every (step, round) with liquidations, sorted."""
        first = run_starts(self.step, self.round)
        accounts = np.diff(np.append(first, len(self)))
        return self.step[first], self.round[first], accounts


def generation_sizes(liquidations: pd.DataFrame) -> pd.DataFrame:
    """Accounts liquidated in each round of each step: columns step, round, accounts."""
    step, rnd, accounts = _Events(liquidations).generations()
    return pd.DataFrame({"step": step, "round": rnd, "accounts": accounts.astype(np.int64)})


def cascades(liquidations: pd.DataFrame) -> pd.DataFrame:
    """One row per cascade (root ``step:<t>``).

    Columns: step, root, accounts (distinct accounts liquidated: the cascade's size), events
    (account-rounds), first_generation (accounts of round 1), depth (rounds), notional
    (liquidated), branching (the cascade's offspring mean: ``(events - first_generation) /
    events``, see :func:`mean_branching`).
    """
    return _cascade_table(_Events(liquidations))


def cascade_sizes(liquidations) -> np.ndarray:
    """(k, 2) int64: the step and the size (accounts) of every cascade, in step order: the
    ``step`` and ``accounts`` columns of :func:`cascades`, without the rest of the table
    (``liquidations`` the table or the fill log's columns, as :func:`cascade_metrics`)."""
    step, _, trader, _ = _liquidation_rows(liquidations)
    if step.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    traders, code = _distinct(trader)
    steps, accounts = _accounts_by_step(step, code, traders.size)
    return np.column_stack([steps, accounts]).astype(np.int64)


def _cascade_table(ev: _Events) -> pd.DataFrame:
    if len(ev) == 0:
        return pd.DataFrame(
            {
                "step": np.zeros(0, np.int64),
                "root": pd.Series([], dtype=object),
                "accounts": np.zeros(0, np.int64),
                "events": np.zeros(0, np.int64),
                "first_generation": np.zeros(0, np.int64),
                "depth": np.zeros(0, np.int64),
                "notional": np.zeros(0),
                "branching": np.zeros(0),
            }
        )
    out = pd.DataFrame(_cascade_columns(ev))
    out.insert(1, "root", ["step:" + str(int(t)) for t in out["step"]])
    return out


def _cascade_columns(ev: _Events) -> dict[str, np.ndarray]:
    """The columns of :func:`cascades` but the root, from events (at least one)."""
    first = run_starts(ev.step)
    cascade = run_labels(first, len(ev))  # each event's cascade
    n = first.size
    events = np.bincount(cascade, minlength=n).astype(np.int64)
    accounts = _accounts_by_step(ev.step, ev.trader_code, ev.traders.size)[1].astype(np.int64)
    first_generation = np.bincount(cascade[ev.round == 1], minlength=n).astype(np.int64)
    return {
        "step": ev.step[first],
        "accounts": accounts,
        "events": events,
        "first_generation": first_generation,
        "depth": np.maximum.reduceat(ev.round, first),
        "notional": _group_sums(cascade, ev.notional, n),
        "branching": (events - first_generation) / events,
    }


def cascade_size_distribution(cascade_table: pd.DataFrame, column: str = "accounts"):
    """Distribution of cascade sizes: columns size, count, ccdf (fraction of cascades >= size)."""
    sizes = np.asarray(cascade_table[column], dtype=np.int64)
    if sizes.size == 0:
        return pd.DataFrame(
            {"size": np.zeros(0, np.int64), "count": np.zeros(0, np.int64), "ccdf": np.zeros(0)}
        )
    values, counts = np.unique(sizes, return_counts=True)
    ccdf = counts[::-1].cumsum()[::-1] / sizes.size
    return pd.DataFrame({"size": values, "count": counts, "ccdf": ccdf})


def largest_cascade(cascade_table: pd.DataFrame, column: str = "accounts") -> int:
    """Size of the largest cascade (0 when nothing was liquidated)."""
    return int(cascade_table[column].max()) if len(cascade_table) else 0


def branching_by_generation(liquidations: pd.DataFrame) -> pd.DataFrame:
    """Branching ratio per generation, pooled over cascades.

    Columns: generation ``r``, cascades (that reached it), parents (accounts of generation
    ``r``), children (accounts of generation ``r + 1``), ratio (children / parents). Each
    liquidation of round ``r + 1`` carries incoming weight 1 from round ``r``, so this is also
    the mean weighted out-degree of generation ``r`` in the contagion graph.
    """
    return _branching_table(*_Events(liquidations).generations())


def _branching_table(step, rnd, accounts) -> pd.DataFrame:
    columns = ["generation", "cascades", "parents", "children", "ratio"]
    return pd.DataFrame(dict(zip(columns, _branching_ratios(step, rnd, accounts), strict=True)))


def _branching_ratios(step, rnd, accounts) -> list[np.ndarray]:
    """The columns of :func:`branching_by_generation` from the generations' sizes."""
    if step.size == 0:
        return [np.zeros(0, np.int64)] * 4 + [np.zeros(0)]
    depth = int(rnd.max())
    steps, row = np.unique(step, return_inverse=True)
    wide = np.zeros((steps.size, depth + 1), dtype=np.int64)  # rounds 1 .. depth + 1
    wide[row.ravel(), rnd - 1] = accounts
    parents = wide[:, :depth].sum(axis=0)
    children = wide[:, 1 : depth + 1].sum(axis=0)
    return [
        np.arange(1, depth + 1),
        (wide[:, :depth] > 0).sum(axis=0),
        parents,
        children,
        children / np.maximum(parents, 1),
    ]


def mean_branching(liquidations: pd.DataFrame) -> float:
    """Offspring mean of the cascades, Harris's estimator: children over parents, pooled.

    ``sum_r>=2 n_r / sum_r>=1 n_r`` over all cascades (``n_r`` accounts of generation ``r``;
    the last generation counts as parents with no children). For a branching process with
    offspring mean ``m < 1`` the expected total is ``n_1 / (1 - m)``, which this inverts.
    """
    _, rnd, accounts = _Events(liquidations).generations()
    return _mean_branching(rnd, accounts)


def _mean_branching(rnd, accounts) -> float:
    total = int(accounts.sum())
    if total == 0:
        return 0.0
    return float(accounts[rnd >= 2].sum() / total)


def amplification(market: pd.DataFrame, initial_price=None) -> dict[str, float]:
    """Endogenous over exogenous price move, per asset and the worst.

    Ratio of the market price's largest log drawdown (fundamental plus the impact of every
    flow, forced included) to the fundamental's: 1 when liquidations added nothing, 2 when the
    price fell twice as far (in log terms) as the exogenous moves alone would have taken it.

    Args:
        market: the market table.
        initial_price: {asset: price} at the start, so a shock at step 1 counts; default: the
            paths start at step 1.
    """
    out = {}
    names, first, code = np.unique(
        np.asarray(market["asset"], dtype=object).astype(str),
        return_index=True,
        return_inverse=True,
    )
    steps = market["step"].to_numpy()
    prices = market["price"].to_numpy(dtype=float)
    funds = market["fundamental"].to_numpy(dtype=float)
    for j in np.argsort(first, kind="stable"):  # the assets in the table's order
        asset = names[j]
        rows = np.flatnonzero(code.ravel() == j)
        rows = rows[np.argsort(steps[rows], kind="stable")]
        p0 = None if initial_price is None else float(initial_price[str(asset)])
        out[str(asset)] = path_amplification(prices[rows], funds[rows], p0)
    out["worst"] = max(out.values()) if out else 1.0
    return out


def path_amplification(price, fundamental, initial_price=None) -> float:
    """:func:`amplification` of one asset from its paths (price and fundamental, step by
    step; ``initial_price`` put before both when given)."""
    price = np.asarray(price, dtype=float)
    fund = np.asarray(fundamental, dtype=float)
    if initial_price is not None:
        price = np.concatenate([[initial_price], price])
        fund = np.concatenate([[initial_price], fund])
    lp, lf = _max_log_drawdown(price), _max_log_drawdown(fund)
    ratio = lp / lf if lf > 1e-12 else 1.0
    return float(ratio) if math.isfinite(ratio) else 1.0


def _max_log_drawdown(path: np.ndarray) -> float:
    if path.size == 0:
        return 0.0
    logp = np.log(np.maximum(path, np.finfo(float).tiny))
    return float(np.max(np.maximum.accumulate(logp) - logp))


def systemic_importance(edges: pd.DataFrame, liquidations: pd.DataFrame) -> pd.DataFrame:
    """Weighted downstream reach of every liquidated trader (DebtRank on the cascade DAG).

    Within a step, liquidation events ``(round r, trader i)`` form a DAG layered by round: an
    edge ``i -> j`` of weight ``w`` runs from ``(r - 1, i)`` to ``(r, j)``. The downstream
    notional of an event is ``D_e = sum_{e -> f} w (v_f + D_f)``, with ``v_f`` the notional
    liquidated at ``f``: the liquidations attributable to ``e`` along every path, each path
    weighted by the product of its shares. On a layered DAG every path from ``e`` to ``f`` has
    the same length, and weights into each event sum to 1, so this is exactly DebtRank
    (Battiston et al. 2012) seeded by ``e`` alone, with relative economic value ``v / V``.

    Aggregate ``others`` edges of a bounded graph carry weight no trader is credited with, so
    reach is then a lower bound.

    Returns:
        One row per liquidated trader, sorted by importance: trader_id, events (liquidations),
        liquidated_notional, downstream_events (expected liquidations caused downstream),
        downstream_notional, debtrank (downstream_notional / all liquidated notional).
    """
    return _systemic_table(_Events(liquidations), edges)


_SYSTEMIC_COLUMNS = [
    "trader_id",
    "events",
    "liquidated_notional",
    "downstream_events",
    "downstream_notional",
    "debtrank",
]


def _systemic_table(ev: _Events, edges: pd.DataFrame) -> pd.DataFrame:
    if len(ev) == 0:
        return pd.DataFrame({c: np.zeros(0) for c in _SYSTEMIC_COLUMNS}).astype(
            {"trader_id": ev.id_dtype, "events": np.int64}
        )
    # trader_id from the raw ids: pandas infers the column's type, as it did before
    return pd.DataFrame(dict(zip(_SYSTEMIC_COLUMNS, _systemic_columns(ev, edges), strict=True)))


def _systemic_columns(ev: _Events, edges: pd.DataFrame) -> list[np.ndarray]:
    """The columns of :func:`systemic_importance`, most important trader first (at least one
    event)."""
    value = ev.notional
    down_n, down_c = _downstream(ev, edges, counts=True)
    # per trader (in id order), each sum over its events in the events' order
    n = ev.traders.size
    code = ev.trader_code
    downstream_n, liquidated, downstream_c = _group_sums(
        code, np.column_stack([down_n, value, down_c]), n
    ).T
    debtrank, order = _ranked(downstream_n, value)
    return [
        ev.traders[order],
        np.bincount(code, minlength=n).astype(np.int64)[order],
        liquidated[order],
        downstream_c[order],
        downstream_n[order],
        debtrank[order],
    ]


def _most_systemic(ev: _Events, edges, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` traders of :func:`_systemic_columns` and their DebtRank, without the
    columns the ranking does not need (the downstream events, each trader's events and
    notional): the same figures, each trader's sum taken alone as the table takes it."""
    down_n, _ = _downstream(ev, edges, counts=False)
    downstream_n = _group_sums(ev.trader_code, down_n, ev.traders.size)
    debtrank, order = _ranked(downstream_n, ev.notional)
    return ev.traders[order[:k]], debtrank[order[:k]]


def _ranked(downstream_n, value) -> tuple[np.ndarray, np.ndarray]:
    """Each trader's DebtRank (its downstream notional over all liquidated notional) and the
    traders' order, most important first, then by id."""
    n = downstream_n.size
    total = float(value.sum())
    debtrank = downstream_n / total if total > 0 else np.zeros(n)
    return debtrank, np.lexsort((np.arange(n), -debtrank))


def _downstream(ev: _Events, edges, *, counts: bool):
    """Each event's downstream notional ``D_e`` (:func:`systemic_importance`) and, with
    ``counts``, its downstream events (None without).

    Generation by generation, deepest round first: a generation's targets are one round
    deeper than its sources, so their totals are final when it is reached. A source event's
    sum gathers only the edges of the generation after its own, in the order they were
    recorded, so each sum is the same additions in the same order as one ``bincount`` over
    every edge sorted stably by depth, to the bit, whatever order the generations come in."""
    value = ev.notional
    down_n = np.zeros(len(ev))
    down_c = np.zeros(len(ev)) if counts else None
    for (lo, hi), (plo, phi), s, d, w in _EdgeLog(ev, edges).generations(ev):
        # (each target's total made once, then gathered: the same additions as per edge)
        reach_n = value[lo:hi] + down_n[lo:hi]
        down_n[plo:phi] += np.bincount(s, weights=w * reach_n.take(d), minlength=phi - plo)
        if counts:
            reach_c = 1.0 + down_c[lo:hi]
            down_c[plo:phi] += np.bincount(s, weights=w * reach_c.take(d), minlength=phi - plo)
    return down_n, down_c


class _EdgeLog:
    """The edges between traders' events, found generation by generation.

    An edge of generation ``(step, round)`` runs from the event ``(step, round - 1, source)``
    to the event ``(step, round, target)``. Edges come in batches that share their step and
    round (the recorder keeps them so, :meth:`model.contagion.ContagionRecorder.edge_batches`;
    a table's rows are grouped into runs of equal step and round), so a generation is looked
    up once a batch, and an end by two ``take`` from small dense tables: its node's trader
    code (``node_code``), then that trader's event in the generation at hand (a table filled
    from the generation's events and emptied after). The recorder's columns are read in
    place: no array of every edge is made, only each generation's ends in turn.

    Attributes:
        step, round, start, stop: (b,) each batch's generation and its slice of the edges.
        src, dst, weight: (m,) each edge's nodes (book rows, or trader codes for a table;
            negative: no trader) and weight.
        node_code: (N + 1,) trader code of each node among the traders liquidated, -1 for
            none; the last slot (-1) answers for node -1, to which sources below it (special
            nodes) are raised. Targets are never below -1.
    """

    def __init__(self, ev: _Events, edges):
        traders = _Lookup(ev.traders)
        if isinstance(edges, pd.DataFrame | Mapping):
            self._from_table(edges, traders)
            self.node_code = np.append(np.arange(ev.traders.size), -1)
            return
        self.src, self.dst, self.weight = edges.src, edges.dst, edges.weight
        self.step, self.round = edges.step, edges.round
        self.stop = np.cumsum(edges.size)
        self.start = self.stop - edges.size
        self.node_code = np.append(traders.find(edges.ids), -1)

    def _from_table(self, edges, traders: _Lookup) -> None:
        """The table's edges as batches: the ends as trader codes, the rows sorted stably by
        step and round when they are not (each generation's edges kept in their order)."""
        step = np.asarray(edges["step"], dtype=np.int64)
        rnd = np.asarray(edges["round"], dtype=np.int64)
        w = np.asarray(edges["weight"], dtype=float)
        source = _trader_values(edges["source"])
        src = np.full(step.size, -1, dtype=np.int64)
        if "source_kind" in edges:
            keep = np.asarray(edges["source_kind"] == "trader", dtype=bool)
            src[keep] = traders.find(source[keep])
        else:
            src[:] = traders.find(source)
        dst = traders.find(_trader_values(edges["target"]))
        if not _in_order(step, rnd):
            order = np.lexsort((rnd, step))
            step, rnd, w, src, dst = step[order], rnd[order], w[order], src[order], dst[order]
        self.src, self.dst, self.weight = src, dst, w
        self.start = run_starts(step, rnd)
        self.stop = np.append(self.start, step.size)[1:]
        self.step, self.round = step[self.start], rnd[self.start]

    def generations(self, ev: _Events):
        """``((lo, hi), (plo, phi), source, target, weight)`` of each generation with edges
        between events, deepest round first: the rows of its events and of the events of the
        round before, each edge's source and target as places among those (from 0), and the
        weights, in the edges' order; edges whose ends are not events left out."""
        if not self.step.size:
            return
        gstep, grnd, accounts = ev.generations()
        bounds = np.append(0, np.cumsum(accounts)).tolist()
        # rounds 0 .. the last a batch names fit below one step's span: no batch's key is
        # another step's generation
        span = max(int(grnd.max()), int(self.round.max())) + 1
        keys = gstep * span + grnd
        gen = _Lookup(keys).find(self.step * span + self.round)
        # a generation's sources are the one just before it in the sorted keys, if any
        before = np.append(np.r_[False, keys[1:] - 1 == keys[:-1]], False)  # gen -1: none
        batches = np.flatnonzero(before.take(gen))
        batches = batches[np.lexsort((gen[batches], -self.round[batches]))]
        gens = gen[batches]
        firsts = run_starts(gens).tolist()
        starts, stops = self.start[batches].tolist(), self.stop[batches].tolist()
        at_target = np.full(ev.traders.size + 1, -1, dtype=np.int64)
        at_source = np.full(ev.traders.size + 1, -1, dtype=np.int64)
        for i, j in itertools.pairwise([*firsts, len(starts)]):
            g = int(gens[i])
            lo, hi, plo, phi = bounds[g], bounds[g + 1], bounds[g - 1], bounds[g]
            target_codes, source_codes = ev.trader_code[lo:hi], ev.trader_code[plo:phi]
            at_target[target_codes] = np.arange(hi - lo)
            at_source[source_codes] = np.arange(phi - plo)
            s, d, w = self._ends(_merged_slices(starts[i:j], stops[i:j]), at_source, at_target)
            at_target[target_codes] = -1
            at_source[source_codes] = -1
            if s.size:
                yield (lo, hi), (plo, phi), s, d, w

    def _ends(self, slices, at_source, at_target):
        """Sources and targets (places in their generations, from the tables ``at_source``
        and ``at_target`` of trader codes) and weights of the edges of ``slices``, joined in
        order; edges with an end that is not an event left out."""
        code = self.node_code
        parts = [
            (
                at_source.take(code.take(np.maximum(self.src[a:b], -1))),
                at_target.take(code.take(self.dst[a:b])),
                self.weight[a:b],
            )
            for a, b in slices
        ]
        s, d, w = (p[0] if len(p) == 1 else np.concatenate(p) for p in zip(*parts, strict=True))
        known = (s >= 0) & (d >= 0)
        if known.all():
            return s, d, w
        return s[known], d[known], w[known]


def _merged_slices(starts: list[int], stops: list[int]) -> list[tuple[int, int]]:
    """The slices ``starts[k]:stops[k]`` in order, neighbours that meet made one."""
    out = [[starts[0], stops[0]]]
    for a, b in zip(starts[1:], stops[1:], strict=True):
        if a == out[-1][1]:
            out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _trader_values(col) -> np.ndarray:
    """A column of trader ids as a numpy array: ``int64`` for integers, ``str`` objects for
    strings (the two never compare with each other); missing ids (the sources of edges from a
    step root) as -1 or None. A numpy array (the fill log's ids) is that already."""
    if isinstance(col, np.ndarray):
        return col
    if pd.api.types.is_integer_dtype(col.dtype):
        return col.to_numpy(dtype=np.int64, na_value=-1)
    return col.to_numpy(dtype=object, na_value=None)


# Largest table (entries) of a dense lookup: below it, keys are looked up by position instead
# of by binary search (a sweep's run has tens of thousands of edge ends)
_DENSE = 1 << 21


class _Lookup:
    """Position of each query among distinct sorted keys, -1 where absent: by position in a
    dense table when the keys are small non-negative integers, else by binary search.

    The dense table has one slot past the largest key holding -1, and queries are clipped to
    it from both sides (a query of -1 reads that last slot too), so a lookup is a clip and a
    ``take`` with no mask to build."""

    def __init__(self, keys: np.ndarray):
        self.keys = keys
        self.table = None
        if keys.size and keys.dtype.kind == "i" and keys[0] >= 0 and keys[-1] < _DENSE:
            self.table = np.full(int(keys[-1]) + 2, -1, dtype=np.int64)
            self.table[keys] = np.arange(keys.size)

    def find(self, values: np.ndarray) -> np.ndarray:
        """(k,) int64: the position of each value among the keys, or -1."""
        if self.table is not None and values.dtype.kind == "i":
            return self.table.take(np.clip(values, -1, self.table.size - 1))
        if not self.keys.size:
            return np.full(len(values), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.keys, values), self.keys.size - 1)
        return np.where(self.keys[pos] == values, pos, -1)


def cascade_subgraph(edges: pd.DataFrame, step: int):
    """The cascade of one step as a DiGraph: its root, its traders and that step's edges.

    Trader nodes carry ``round`` (the first round of the step that liquidated them) and
    ``rounds`` (how many); edges carry ``weight`` and ``round`` (summed weights, last round,
    when a pair repeats within the step).
    """
    import networkx as nx

    e = edges[edges["step"] == step]
    g = nx.DiGraph(step=int(step))
    root = f"step:{int(step)}"
    g.add_node(root, kind="step", round=0)
    if len(e) == 0:
        return g
    first = e.groupby("target")["round"].min()
    count = e.groupby("target")["round"].nunique()
    for tid, rnd in first.items():
        g.add_node(plain_id(tid), kind="trader", round=int(rnd), rounds=int(count[tid]))
    kinds = e["source_kind"].astype(str).to_numpy()
    sources = e["source"].to_numpy(dtype=object)
    for kind, src, dst, w, rnd in zip(
        kinds,
        sources,
        _trader_values(e["target"]).tolist(),
        e["weight"].to_numpy().tolist(),
        e["round"].to_numpy().tolist(),
        strict=True,
    ):
        if kind == "trader":
            u = plain_id(src)
        elif kind == "step":
            u = root
        else:
            u = f"others:{int(step)}:{rnd}"
            if u not in g:
                g.add_node(u, kind="aggregate", round=rnd - 1)
        if g.has_edge(u, dst):
            g.edges[u, dst]["weight"] += w
            g.edges[u, dst]["round"] = rnd
        else:
            g.add_edge(u, dst, weight=w, round=rnd)
    return g


# --------------------------------------------------------------------------------------------
# Exposure network
# --------------------------------------------------------------------------------------------


def _notional_matrix(accounts: pd.DataFrame, symbols, prices, which: str):
    prefix = "initial_quantity_" if which == "initial" else "quantity_"
    q = np.column_stack([accounts[f"{prefix}{s}"].to_numpy(dtype=float) for s in symbols])
    if prices is None:
        p = np.column_stack([accounts[f"entry_price_{s}"].to_numpy(dtype=float) for s in symbols])
    else:
        p = np.asarray([float(prices[s]) for s in symbols])[None, :]
    return q, np.abs(q) * p


def exposure_network(accounts: pd.DataFrame, symbols=None, prices=None, which: str = "initial"):
    """The bipartite trader-asset exposure network (the overlapping portfolios of Caccioli et
    al. 2014).

    Args:
        accounts: the accounts table.
        symbols: assets (default: every ``quantity_<symbol>`` column).
        prices: {symbol: price} to value positions at; default each position's entry price.
        which: ``"initial"`` positions or ``"final"`` ones.

    Returns:
        ``networkx.Graph``: trader nodes (their ids, ``bipartite=0``) and asset nodes
        (``asset:<symbol>``, ``bipartite=1``); an edge per open position with ``notional``,
        ``quantity`` (signed) and ``side``.
    """
    import networkx as nx

    if symbols is None:
        symbols = [c[len("quantity_") :] for c in accounts.columns if c.startswith("quantity_")]
    q, notional = _notional_matrix(accounts, symbols, prices, which)
    g = nx.Graph(which=which)
    ids = _trader_values(accounts["trader_id"]).tolist()
    clash = {f"asset:{s}" for s in symbols}.intersection(ids)
    if clash:
        raise ValueError(f"exposure_network: trader id {sorted(clash)[0]!r} names an asset node")
    g.add_nodes_from((t, {"bipartite": 0, "kind": "trader"}) for t in ids)
    g.add_nodes_from((f"asset:{s}", {"bipartite": 1, "kind": "asset"}) for s in symbols)
    r, a = np.nonzero(q)
    g.add_edges_from(
        (
            ids[i],
            f"asset:{symbols[j]}",
            {"notional": float(notional[i, j]), "quantity": float(q[i, j]), "side": side},
        )
        for i, j, side in zip(
            r.tolist(), a.tolist(), np.where(q[r, a] > 0, "long", "short").tolist(), strict=True
        )
    )
    return g


def overlap_projection(exposure, onto: str = "assets", nodes=None, max_nodes: int = 5000):
    """Project the exposure network: who shares exposure with whom.

    Two assets are linked by the traders that hold both: ``holders`` (how many) and
    ``weight`` = ``sum_i min(N_ia, N_ib)``, the notional exposed to both at once. Two traders
    are linked by the assets they both hold: ``common`` (how many) and ``weight`` =
    ``sum_a min(N_ia, N_ja)``.

    Args:
        exposure: the graph of :func:`exposure_network`.
        onto: ``"assets"`` or ``"traders"``.
        nodes: trader nodes to project onto (default: every trader with a position).
        max_nodes: refuse trader projections larger than this (they grow as its square).
    """
    import networkx as nx

    assets = [n for n, d in exposure.nodes(data=True) if d.get("bipartite") == 1]
    traders = [n for n, d in exposure.nodes(data=True) if d.get("bipartite") == 0]
    if nodes is not None:
        keep = set(nodes)
        traders = [t for t in traders if t in keep]
    if onto == "traders":
        traders = [t for t in traders if exposure.degree(t) > 0]
        if len(traders) > max_nodes:
            raise ValueError(
                f"overlap_projection: {len(traders)} traders exceed max_nodes={max_nodes}; "
                "pass nodes= to choose some"
            )
    elif onto != "assets":
        raise ValueError(f"overlap_projection: onto must be 'assets' or 'traders', not {onto!r}")
    t_index = {t: i for i, t in enumerate(traders)}
    a_index = {a: j for j, a in enumerate(assets)}
    n_mat = np.zeros((len(traders), len(assets)))
    for t in traders:
        for a, d in exposure[t].items():
            n_mat[t_index[t], a_index[a]] = d["notional"]
    held = n_mat > 0
    g = nx.Graph(onto=onto)
    if onto == "assets":
        g.add_nodes_from(assets)
        for x in range(len(assets)):
            for y in range(x + 1, len(assets)):
                both = held[:, x] & held[:, y]
                if both.any():
                    w = np.minimum(n_mat[both, x], n_mat[both, y]).sum()
                    g.add_edge(assets[x], assets[y], holders=int(both.sum()), weight=float(w))
        return g
    g.add_nodes_from(traders)
    for i in range(len(traders) - 1):
        common = held[i + 1 :] & held[i]
        w = (np.minimum(n_mat[i + 1 :], n_mat[i]) * common).sum(axis=1)
        k = common.sum(axis=1)
        for off in np.flatnonzero(k > 0).tolist():
            g.add_edge(traders[i], traders[i + 1 + off], common=int(k[off]), weight=float(w[off]))
    return g


# --------------------------------------------------------------------------------------------
# Headline numbers
# --------------------------------------------------------------------------------------------


def cascade_metrics(liquidations, edges=None) -> dict:
    """The cascade part of ``summary.json`` (plain numbers and short lists).

    Keys: cascades, largest_cascade, largest_cascade_step, mean_cascade_size,
    max_rounds (deepest cascade), mean_branching, branching_by_generation (ratios of
    generations 1, 2, ...), and with ``edges`` the five most systemically important traders.
    The figures of :func:`cascades`, :func:`mean_branching`, :func:`branching_by_generation`
    and :func:`systemic_importance`, from one pass over the table.

    Args:
        liquidations: the liquidations table, or its columns as numpy arrays (a finished
            model's fill log: :meth:`model.fills.FillLog.columns`).
        edges: the edge events table (or a mapping of its columns, without ``source_kind``
            when every source is a trader), or a finished model's edges in the batches the
            recorder keeps (:meth:`model.contagion.ContagionRecorder.edge_batches`): the
            same figures from either.
    """
    ev = _Events(liquidations)
    generations = ev.generations()
    out = {
        "cascades": 0,
        "largest_cascade": 0,
        "largest_cascade_step": 0,
        "mean_cascade_size": 0.0,
        "max_rounds": 0,
        "mean_branching": _mean_branching(*generations[1:]),
        "branching_by_generation": [float(x) for x in _branching_ratios(*generations)[-1]],
    }
    if len(ev):
        table = _cascade_columns(ev)
        accounts = table["accounts"]
        out["cascades"] = int(accounts.size)
        out["largest_cascade"] = int(accounts.max())
        out["largest_cascade_step"] = int(table["step"][np.argmax(accounts)])
        out["mean_cascade_size"] = float(np.sum(accounts, dtype=np.float64) / accounts.size)
        out["max_rounds"] = int(table["depth"].max())
    if edges is not None:
        out["most_systemic"] = []
        if len(ev):
            out["most_systemic"] = [
                {"trader_id": plain_id(t), "debtrank": float(d)}
                for t, d in zip(*_most_systemic(ev, edges, 5), strict=True)
            ]
    return out
