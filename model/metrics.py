"""Cascade metrics: pure functions of a run's tables and its contagion graph.

Everything here works on what a run folder holds, so it serves notebooks as well as
``summary.json``:

* ``liquidations``: the liquidations table (one row per fill: step, round, trader_id, asset,
  notional, kind ...). Auto-deleveraging fills (``kind == "adl"``) are not liquidations and are
  left out of every cascade count.
* ``edges``: the contagion edge events (one row per attribution: step, round, source,
  source_kind, target, weight), :meth:`model.contagion.ContagionRecorder.edges_table` or
  ``contagion_edges.parquet``. Unlike the merged graph, it keeps which step each attribution
  belongs to, which the per-cascade measures need.
* ``market``: the market table (step, asset, price, fundamental, ...).
* ``accounts``: the accounts table (initial and final quantities per asset).

Trader ids are whatever the tables hold: integers, or the strings a population file gave
(:mod:`model.ids`); graphs here name trader nodes by them, as the contagion graph does.

A *cascade* is everything hanging from one root ``step:<t>``: the accounts liquidated in step
``t``. Its *generations* are the liquidation rounds; generation sizes count accounts (an
account liquidated in two rounds of one step counts in both generations, once in the size).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from model.ids import plain_id

__all__ = [
    "amplification",
    "branching_by_generation",
    "cascade_metrics",
    "cascade_size_distribution",
    "cascade_subgraph",
    "cascades",
    "exposure_network",
    "generation_sizes",
    "largest_cascade",
    "mean_branching",
    "overlap_projection",
    "systemic_importance",
]


def _liquidation_events(liquidations: pd.DataFrame) -> pd.DataFrame:
    """One row per (step, round, trader) liquidated, with the notional closed."""
    liq = liquidations
    if "kind" in liq.columns:
        liq = liq[liq["kind"] != "adl"]
    if len(liq) == 0:
        return pd.DataFrame(
            {
                "step": np.zeros(0, np.int64),
                "round": np.zeros(0, np.int64),
                "trader_id": np.zeros(0, np.int64),
                "notional": np.zeros(0),
            }
        )
    return (
        liq.groupby(["step", "round", "trader_id"], sort=True, observed=True)["notional"]
        .sum()
        .reset_index()
    )


def generation_sizes(liquidations: pd.DataFrame) -> pd.DataFrame:
    """Accounts liquidated in each round of each step: columns step, round, accounts."""
    ev = _liquidation_events(liquidations)
    out = ev.groupby(["step", "round"], sort=True).size().rename("accounts").reset_index()
    return out.astype({"step": np.int64, "round": np.int64, "accounts": np.int64})


def cascades(liquidations: pd.DataFrame) -> pd.DataFrame:
    """One row per cascade (root ``step:<t>``).

    Columns: step, root, accounts (distinct accounts liquidated: the cascade's size), events
    (account-rounds), first_generation (accounts of round 1), depth (rounds), notional
    (liquidated), branching (the cascade's offspring mean: ``(events - first_generation) /
    events``, see :func:`mean_branching`).
    """
    ev = _liquidation_events(liquidations)
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
    by_step = ev.groupby("step", sort=True)
    out = pd.DataFrame(
        {
            "accounts": by_step["trader_id"].nunique(),
            "events": by_step.size(),
            "first_generation": ev[ev["round"] == 1].groupby("step").size(),
            "depth": by_step["round"].max(),
            "notional": by_step["notional"].sum(),
        }
    )
    out["first_generation"] = out["first_generation"].fillna(0).astype(np.int64)
    out["branching"] = (out["events"] - out["first_generation"]) / out["events"]
    out = out.reset_index()
    out.insert(1, "root", ["step:" + str(int(t)) for t in out["step"]])
    return out


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
    gs = generation_sizes(liquidations)
    if len(gs) == 0:
        return pd.DataFrame(
            {
                "generation": np.zeros(0, np.int64),
                "cascades": np.zeros(0, np.int64),
                "parents": np.zeros(0, np.int64),
                "children": np.zeros(0, np.int64),
                "ratio": np.zeros(0),
            }
        )
    wide = gs.pivot(index="step", columns="round", values="accounts").fillna(0)
    depth = int(gs["round"].max())
    wide = wide.reindex(columns=range(1, depth + 2), fill_value=0).to_numpy(dtype=np.int64)
    parents = wide[:, :depth].sum(axis=0)
    children = wide[:, 1 : depth + 1].sum(axis=0)
    return pd.DataFrame(
        {
            "generation": np.arange(1, depth + 1),
            "cascades": (wide[:, :depth] > 0).sum(axis=0),
            "parents": parents,
            "children": children,
            "ratio": children / np.maximum(parents, 1),
        }
    )


def mean_branching(liquidations: pd.DataFrame) -> float:
    """Offspring mean of the cascades, Harris's estimator: children over parents, pooled.

    ``sum_r>=2 n_r / sum_r>=1 n_r`` over all cascades (``n_r`` accounts of generation ``r``;
    the last generation counts as parents with no children). For a branching process with
    offspring mean ``m < 1`` the expected total is ``n_1 / (1 - m)``, which this inverts.
    """
    gs = generation_sizes(liquidations)
    total = int(gs["accounts"].sum())
    if total == 0:
        return 0.0
    return float(gs.loc[gs["round"] >= 2, "accounts"].sum() / total)


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
    for asset, grp in market.groupby("asset", sort=False, observed=True):
        grp = grp.sort_values("step")
        price = grp["price"].to_numpy(dtype=float)
        fund = grp["fundamental"].to_numpy(dtype=float)
        if initial_price is not None:
            p0 = float(initial_price[str(asset)])
            price, fund = np.concatenate([[p0], price]), np.concatenate([[p0], fund])
        lp, lf = _max_log_drawdown(price), _max_log_drawdown(fund)
        ratio = lp / lf if lf > 1e-12 else 1.0
        out[str(asset)] = float(ratio) if math.isfinite(ratio) else 1.0
    out["worst"] = max(out.values()) if out else 1.0
    return out


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
    ev = _liquidation_events(liquidations)
    cols = [
        "trader_id",
        "events",
        "liquidated_notional",
        "downstream_events",
        "downstream_notional",
        "debtrank",
    ]
    if len(ev) == 0:
        return pd.DataFrame({c: np.zeros(0) for c in cols}).astype(
            {"trader_id": liquidations["trader_id"].dtype, "events": np.int64}
        )
    lookup = _EventIndex(ev)
    value = ev["notional"].to_numpy(dtype=float)
    down_n = np.zeros(len(ev))
    down_c = np.zeros(len(ev))
    e = edges
    if "source_kind" in e.columns:
        e = e[e["source_kind"] == "trader"]
    if len(e):
        step = e["step"].to_numpy(dtype=np.int64)
        rnd = e["round"].to_numpy(dtype=np.int64)
        src = lookup.find(step, rnd - 1, _trader_values(e["source"]))
        dst = lookup.find(step, rnd, _trader_values(e["target"]))
        w = e["weight"].to_numpy(dtype=float)
        known = (src >= 0) & (dst >= 0)
        src, dst, w, rnd = src[known], dst[known], w[known], rnd[known]
        order = np.argsort(-rnd, kind="stable")  # deepest generation first
        src, dst, w, rnd = src[order], dst[order], w[order], rnd[order]
        bounds = np.flatnonzero(np.diff(rnd)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, rnd.size], strict=True):
            s, d, ww = src[lo:hi], dst[lo:hi], w[lo:hi]
            # targets are one generation deeper than sources: their totals are final
            down_n += np.bincount(s, weights=ww * (value[d] + down_n[d]), minlength=len(ev))
            down_c += np.bincount(s, weights=ww * (1.0 + down_c[d]), minlength=len(ev))
    per = pd.DataFrame(
        {
            "trader_id": ev["trader_id"].to_numpy(),
            "events": 1,
            "liquidated_notional": value,
            "downstream_events": down_c,
            "downstream_notional": down_n,
        }
    )
    out = per.groupby("trader_id", sort=True).sum().reset_index()
    total = float(value.sum())
    out["debtrank"] = out["downstream_notional"] / total if total > 0 else 0.0
    return out.sort_values(["debtrank", "trader_id"], ascending=[False, True], ignore_index=True)[
        cols
    ]


def _trader_values(col: pd.Series) -> np.ndarray:
    """A column of trader ids as a numpy array: ``int64`` for integers, ``str`` objects for
    strings (the two never compare with each other)."""
    if pd.api.types.is_integer_dtype(col.dtype):
        return col.to_numpy(dtype=np.int64)
    return col.to_numpy(dtype=object)


class _EventIndex:
    """Row of each (step, round, trader) event, found by binary search on one integer key."""

    def __init__(self, ev: pd.DataFrame):
        # ``ev`` is not empty; (step, round) pairs and traders get dense codes
        self.pairs = np.unique(ev[["step", "round"]].to_numpy(dtype=np.int64), axis=0)
        traders = _trader_values(ev["trader_id"])
        self.traders = np.unique(traders)
        key = self._key(
            ev["step"].to_numpy(dtype=np.int64),
            ev["round"].to_numpy(dtype=np.int64),
            traders,
        )
        self.order = np.argsort(key, kind="stable")
        self.sorted = key[self.order]

    def _code(self, table, values):
        pos = np.minimum(np.searchsorted(table, values), max(len(table) - 1, 0))
        return pos, table[pos] == values if len(table) else np.zeros(len(values), bool)

    def _key(self, step, rnd, trader):
        span = int(self.pairs[:, 1].max()) + 2  # rounds fit below one step's span
        p, p_ok = self._code(self.pairs[:, 0] * span + self.pairs[:, 1], step * span + rnd)
        t, t_ok = self._code(self.traders, trader)
        key = p.astype(np.int64) * max(len(self.traders), 1) + t
        return np.where(p_ok & t_ok, key, -1)

    def find(self, step, rnd, trader) -> np.ndarray:
        """Rows of the given events in the table (-1 where absent)."""
        key = self._key(step, rnd, trader)
        pos = np.minimum(np.searchsorted(self.sorted, key), max(len(self.sorted) - 1, 0))
        hit = (key >= 0) & (self.sorted[pos] == key)
        return np.where(hit, self.order[pos], -1)


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


def cascade_metrics(liquidations: pd.DataFrame, edges: pd.DataFrame | None = None) -> dict:
    """The cascade part of ``summary.json`` (plain numbers and short lists).

    Keys: cascades, largest_cascade, largest_cascade_step, mean_cascade_size,
    max_rounds (deepest cascade), mean_branching, branching_by_generation (ratios of
    generations 1, 2, ...), and with ``edges`` the five most systemically important traders.
    """
    table = cascades(liquidations)
    out = {
        "cascades": int(len(table)),
        "largest_cascade": largest_cascade(table),
        "largest_cascade_step": int(table.loc[table["accounts"].idxmax(), "step"])
        if len(table)
        else 0,
        "mean_cascade_size": float(table["accounts"].mean()) if len(table) else 0.0,
        "max_rounds": int(table["depth"].max()) if len(table) else 0,
        "mean_branching": mean_branching(liquidations),
        "branching_by_generation": [
            float(x) for x in branching_by_generation(liquidations)["ratio"].to_numpy()
        ],
    }
    if edges is not None:
        si = systemic_importance(edges, liquidations).head(5)
        out["most_systemic"] = [
            {"trader_id": plain_id(t), "debtrank": float(d)}
            for t, d in zip(si["trader_id"], si["debtrank"], strict=True)
        ]
    return out
