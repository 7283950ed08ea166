"""Drawings of one cascade: its tree of who liquidated whom, and its rounds.

One layout and one drawing serve the run folder's ``cascade.png``, the demo's
``cascade_tree.png`` and the dashboard's network panel.

The tree (:func:`cascade_layout`, :func:`draw_cascade`). Column 0 holds the step's root (the
move of the step before any liquidation); column ``r`` holds the liquidations of round ``r``,
one node per (round, trader), so a trader liquidated in two rounds of the step appears twice
and every edge runs from one column to the next: the picture is the cascade's tree of
generations (a DAG when a liquidation has several causes). When the contagion graph was
bounded, the rest of a round's weight comes from one aggregate node ``others`` at the end of
the column before. Within a column, nodes are ordered by a group key first (the assets the
account held, in the demo), then by the weighted mean position of their causes (the barycentre
heuristic), which keeps groups in bands and branches apart. Faint lines are the attribution
edges (the heaviest ``max_edges``); dark lines join each liquidation to its main cause, the
heaviest edge into it. Nodes are coloured by round, or by a label per trader (with a legend),
and sized by the notional liquidated in that round when the liquidations table is given.

The rounds (:func:`draw_rounds`): the price moves of each round of a step, and how many
accounts each round liquidated, stacked by label.

Lines are drawn as one broken path per set (segments separated by NaN), far cheaper to build
and draw than thousands of separate segments: the dashboard redraws after every step.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from model.fills import liquidation_fills
from model.sorting import run_starts

__all__ = [
    "PALETTE",
    "CascadeLayout",
    "cascade_layout",
    "draw_cascade",
    "draw_rounds",
    "holding_labels",
    "holding_order",
    "largest_cascade_step",
    "round_prices",
    "write_cascade_png",
]

# Colours of labelled groups, in category order (the demo: the shocked asset alone first).
PALETTE = ["#d62728", "#1f77b4", "#9467bd", "#2ca02c", "#ff7f0e", "#8c564b", "#e377c2"]
_ROOT, _TRADER, _AGGREGATE = 0, 1, 2
_KIND_NAMES = np.array(["step", "trader", "aggregate"], dtype=object)
_KIND_CODES = {"step": _ROOT, "trader": _TRADER, "others": _AGGREGATE}  # edges' source_kind


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def holding_labels(qty: np.ndarray, symbols: list[str]) -> np.ndarray:
    """(n,) label of the assets each account holds, e.g. ``"BTC only"`` or ``"BTC+ETH"``."""
    held = np.asarray(qty) != 0
    names = np.array(symbols, dtype=object)
    labels = []
    # one label per distinct holding pattern, not per trader
    patterns, inverse = np.unique(held, axis=0, return_inverse=True)
    for p in patterns:
        hs = list(names[p])
        labels.append("none" if not hs else hs[0] + " only" if len(hs) == 1 else "+".join(hs))
    return np.array(labels, dtype=object)[inverse.ravel()]


def holding_order(symbols: list[str]) -> list[str]:
    """Every holding label in a fixed order (each asset alone, then all together): the colour
    order of every figure."""
    return [f"{s} only" for s in symbols] + (["+".join(symbols)] if len(symbols) > 1 else [])


def _colour(label: str, cats: list[str]) -> str:
    return PALETTE[cats.index(label) % len(PALETTE)]


# --------------------------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------------------------


def largest_cascade_step(edges: pd.DataFrame) -> int | None:
    """The step whose cascade liquidated the most accounts (None when nothing was)."""
    if len(edges) == 0:
        return None
    sizes = edges.groupby("step")["target"].nunique()
    return int(sizes.idxmax())


def largest_cascade_step_of_parts(parts) -> int | None:
    """:func:`largest_cascade_step` of edge events given in parts (DataFrames with ``step``
    and ``target`` columns, one after another: a large file read a row group at a time).

    While the steps come in order, as a run writes them, only the rows of the step at the end
    of the part at hand are held beyond it (a step may go on in the next part); parts out of
    step order are joined and counted whole. Ties go to the earlier step, as there.
    """
    parts = iter(parts)
    best_size, best_step, held = 0, None, None
    for part in parts:
        edges = part if held is None else pd.concat([held, part], ignore_index=True)
        steps = edges["step"].to_numpy()
        if steps.size > 1 and (steps[1:] < steps[:-1]).any():
            return largest_cascade_step(pd.concat([edges, *parts], ignore_index=True))
        if not steps.size:
            continue
        done = steps < steps[-1]  # (the steps before the last: complete)
        for step, size in edges[done].groupby("step")["target"].nunique().items():
            if size > best_size:
                best_size, best_step = size, int(step)
        held = edges[~done]
    if held is not None and held["target"].nunique() > best_size:
        best_step = int(held["step"].iloc[0])
    return best_step


@dataclass
class CascadeLayout:
    """Positions of one step's cascade.

    Attributes:
        nodes: one row per node: ``label`` (trader id as text, ``step:<t>`` or ``others``),
            ``round`` (its column), ``kind`` (``step``, ``trader`` or ``aggregate``),
            ``trader`` (its id, an integer or a string; -1 for the others), ``x`` (= round), ``y`` (position in the
            column, in (0, 1)) and ``parent`` (the node of its heaviest cause; -1: none).
        src, dst: (m,) node of each edge's source and target, in the edges' order.
        weight: (m,) edge weights.
    """

    nodes: pd.DataFrame
    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray


def cascade_layout(edges: pd.DataFrame, step: int, key: pd.Series | None = None):
    """Lay out one step's cascade in columns by round (a tidy tree, no physics).

    Args:
        edges: contagion edge events (``ContagionRecorder.edges_table()`` or
            ``contagion_edges.parquet``).
        step: the cascade's step.
        key: optional number per trader id (the index): a column's nodes are ordered by it
            first, so that groups form bands.

    Returns:
        a :class:`CascadeLayout`.
    """
    e = edges[edges["step"] == step]
    rnd = e["round"].to_numpy(dtype=np.int64)
    weight = e["weight"].to_numpy(dtype=float)
    src_kind = _source_kinds(e["source_kind"])
    is_trader = src_kind == _TRADER
    # traders by code: their rank among the ids (integers or strings), -1 for other nodes
    traders, target, source = _trader_codes(e["target"], e["source"], is_trader)
    # a node is (column, kind, trader); sorting them puts the root first
    column = np.concatenate([rnd, np.where(src_kind == _ROOT, 0, rnd - 1)])
    node_kind = np.concatenate([np.full_like(rnd, _TRADER), src_kind])
    uniq, inverse = _unique_nodes(column, node_kind, np.concatenate([target, source]), traders.size)
    dst, src = inverse[: rnd.size], inverse[rnd.size :]
    is_node_trader = uniq[:, 1] == _TRADER
    trader = np.where(is_node_trader, traders[np.where(is_node_trader, uniq[:, 2], 0)], -1)
    nodes = pd.DataFrame(
        {
            "label": _node_labels(uniq, step, traders),
            "round": uniq[:, 0],
            "kind": _KIND_NAMES[uniq[:, 1]],
            "trader": trader,
        }
    )
    group = np.zeros(len(nodes))
    if key is not None:
        traders = nodes["trader"].to_numpy()
        mapped = key.reindex(traders).to_numpy(dtype=float)
        group = np.where(np.isnan(mapped), np.inf, mapped)
    group = np.where(uniq[:, 1] == _AGGREGATE, np.inf, group)  # aggregates end their column
    nodes["x"] = nodes["round"].astype(float)
    nodes["y"] = _column_positions(nodes, src, dst, weight, group, uniq[:, 2])
    nodes["parent"] = _main_causes(len(nodes), src, dst, weight, src_kind == _AGGREGATE)
    return CascadeLayout(nodes, src, dst, weight)


def _unique_nodes(column, kind, trader, n_traders: int):
    """The distinct (column, kind, trader) triples, sorted, as rows of a (u, 3) array, and
    each triple's row: ``np.unique`` of the (m, 3) table by rows, computed on one integer key
    per triple (ordered as the rows are: each part within its range) because numpy's rows
    path sorts them as raw bytes, seconds for the million edges of a large cascade.

    Args:
        column: (m,) round columns (0 and up).
        kind: (m,) node kinds (``_ROOT``, ``_TRADER``, ``_AGGREGATE``).
        trader: (m,) trader codes, from -1 (not a trader) to ``n_traders - 1``.
        n_traders: the number of trader codes.
    """
    span = n_traders + 1
    key = (column * 3 + kind) * span + (trader + 1)
    uniq, inverse = np.unique(key, return_inverse=True)
    rest, code = np.divmod(uniq, span)
    return np.stack([rest // 3, rest % 3, code - 1], 1), inverse.ravel()


def _source_kinds(kind: pd.Series) -> np.ndarray:
    """Each edge's source kind (``trader``, ``step``, ``others``) as ``_TRADER``, ``_ROOT`` or
    ``_AGGREGATE``: looked up by category code when the column is categorical (as the edges
    table and its parquet file give it), without a string per edge."""
    if isinstance(kind.dtype, pd.CategoricalDtype):
        names = kind.cat.categories.astype(str)
        codes = kind.cat.codes.to_numpy()
    else:
        names, codes = np.unique(kind.astype(str).to_numpy(), return_inverse=True)
    lookup = np.array([_KIND_CODES.get(name, _AGGREGATE) for name in names], dtype=np.int64)
    return lookup[codes]


def _trader_codes(target: pd.Series, source: pd.Series, is_trader: np.ndarray):
    """The step's trader ids sorted (integers or strings), and each edge's target and source
    as its rank among them (-1 for a source that is not a trader): sorting nodes by code sorts
    them by id."""
    dst = target.to_numpy(dtype=np.int64 if pd.api.types.is_integer_dtype(target) else object)
    src = source[is_trader].to_numpy(dtype=dst.dtype)  # (the traders' sources: no missing id)
    traders = np.unique(np.concatenate([dst, src]))
    codes = np.full(len(source), -1, dtype=np.int64)
    codes[is_trader] = np.searchsorted(traders, src)
    return traders, np.searchsorted(traders, dst).astype(np.int64), codes


def _node_labels(uniq: np.ndarray, step: int, traders: np.ndarray) -> np.ndarray:
    labels = np.empty(len(uniq), dtype=object)
    is_trader = uniq[:, 1] == _TRADER
    labels[is_trader] = [str(t) for t in traders[uniq[is_trader, 2]].tolist()]
    labels[uniq[:, 1] == _ROOT] = f"step:{step}"
    labels[uniq[:, 1] == _AGGREGATE] = "others"
    return labels


def _column_positions(nodes, src, dst, weight, group, trader) -> np.ndarray:
    """Position of every node in its column: by group, then by the weighted mean position of
    its causes (placed one column earlier), then by trader id (``trader``: each node's rank
    among the ids); spread evenly over (0, 1)."""
    y = np.full(len(nodes), 0.5)
    column = nodes["round"].to_numpy()
    for r in range(int(column.max()) + 1):
        members = np.flatnonzero(column == r)
        into = np.isin(dst, members)
        num = np.bincount(dst[into], weights=weight[into] * y[src[into]], minlength=len(nodes))
        den = np.bincount(dst[into], weights=weight[into], minlength=len(nodes))
        bary = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.5)
        order = members[np.lexsort((trader[members], bary[members], group[members]))]
        y[order] = (np.arange(order.size) + 0.5) / order.size
    return y


def _main_causes(n: int, src, dst, weight, from_aggregate) -> np.ndarray:
    """Each node's heaviest incoming edge's source, preferring a trader (or the root) to an
    aggregate; -1 for nodes without causes."""
    parent = np.full(n, -1, dtype=np.int64)
    if dst.size == 0:
        return parent
    order = np.lexsort((-weight, from_aggregate, dst))
    first = order[np.unique(dst[order], return_index=True)[1]]
    parent[dst[first]] = src[first]
    return parent


def draw_cascade(
    edges: pd.DataFrame,
    step: int | None = None,
    liquidations: pd.DataFrame | None = None,
    *,
    ax=None,
    labels: pd.Series | None = None,
    categories: list[str] | None = None,
    max_edges: int = 20_000,
    label_limit: int = 60,
):
    """Draw one step's cascade on ``ax`` (a new figure by default); returns the figure.

    Args:
        edges: contagion edge events (``ContagionRecorder.edges_table()`` or
            ``contagion_edges.parquet``).
        step: the cascade's step (default: the largest cascade).
        liquidations: the liquidations table, to size nodes by the notional of each
            liquidation.
        labels: a label per trader id (the index) to colour nodes by, with a legend titled by
            the Series' name (the demo: the assets each account held); default: by round.
        categories: every label in colour order (default: those present, sorted), so that
            colours agree between figures.
        max_edges: draw at most this many faint edges (the heaviest), and the main-cause
            edges of at most this many nodes (an equal share per round, evenly spaced within
            it): one line of more would overflow the renderer's buffers, and a few tens of
            thousands already fill the figure.
        label_limit: write trader ids beside the nodes when the cascade has at most this many.
    """
    if step is None:
        step = largest_cascade_step(edges)
    if ax is None:  # a figure outside pyplot: no global state, nothing to close
        from matplotlib.figure import Figure

        fig = Figure(figsize=(11, 6), dpi=120, layout="constrained")
        ax = fig.subplots()
    fig = ax.figure
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_yticks([])
    if step is None or not (edges["step"] == step).any():
        ax.text(0.5, 0.5, "no liquidations", ha="center", va="center", transform=ax.transAxes)
        return fig
    cats = None
    key = None
    if labels is not None:
        present = labels.reindex(edges.loc[edges["step"] == step, "target"].unique())
        cats = _categories(present.dropna().unique().tolist(), categories)
        key = labels.map({c: i for i, c in enumerate(cats)})
    lay = cascade_layout(edges, step, key)
    _draw_edges(ax, lay, max_edges)
    _draw_nodes(ax, lay, _node_sizes(lay, step, liquidations), labels, cats)
    _annotate(ax, lay, step, label_limit)
    return fig


def _categories(present: list[str], categories: list[str] | None) -> list[str]:
    if categories is None:
        return sorted(present, key=str)
    return list(categories) + sorted((c for c in present if c not in categories), key=str)


def _polyline(x0, y0, x1, y1):
    """Segments (x0, y0) -> (x1, y1) as one broken line: x and y with NaN between segments."""
    n = len(x0)
    xs, ys = np.full(3 * n, np.nan), np.full(3 * n, np.nan)
    xs[0::3], xs[1::3] = x0, x1
    ys[0::3], ys[1::3] = y0, y1
    return xs, ys


def _draw_edges(ax, lay: CascadeLayout, max_edges: int) -> None:
    x, y = lay.nodes["x"].to_numpy(), lay.nodes["y"].to_numpy()
    keep = np.arange(lay.weight.size)
    if keep.size > max_edges:
        keep = np.argsort(-lay.weight, kind="stable")[:max_edges]
    s, d = lay.src[keep], lay.dst[keep]
    ax.plot(*_polyline(x[s], y[s], x[d], y[d]), color="0.75", lw=0.3, alpha=0.35)
    parent = lay.nodes["parent"].to_numpy()
    child = np.flatnonzero(parent >= 0)
    if child.size > max_edges:  # (a million-trader cascade) a sample of the nodes' causes
        child = _even_sample(child, lay.nodes["round"].to_numpy()[child], max_edges)
    p = parent[child]
    ax.plot(*_polyline(x[p], y[p], x[child], y[child]), color="0.3", lw=0.6, alpha=0.6)


def _even_sample(nodes, column, limit: int) -> np.ndarray:
    """At most ``limit`` of ``nodes`` (sorted by ``column``), an equal share per column, evenly
    spaced within it: a column of fewer nodes than its share keeps them all, so the last rounds
    of a deep cascade keep their few edges."""
    starts = run_starts(column)
    stops = np.append(starts[1:], nodes.size)
    share = max(limit // starts.size, 1)
    kept = []
    for lo, hi in zip(starts.tolist(), stops.tolist(), strict=True):  # (columns, not traders)
        n = hi - lo
        kept.append(
            nodes[lo:hi]
            if n <= share
            else nodes[lo + np.linspace(0, n - 1, share).astype(np.int64)]
        )
    return np.concatenate(kept)


def _node_sizes(lay: CascadeLayout, step: int, liquidations: pd.DataFrame | None) -> np.ndarray:
    """Dot area: the notional each liquidation closed (square-root scale), else uniform."""
    size = np.full(len(lay.nodes), 14.0)
    if liquidations is None:
        return size
    liq = liquidations[liquidations["step"] == step]
    if "kind" in liq.columns:
        liq = liq[liquidation_fills(liq["kind"])]
    notional = liq.groupby(["round", "trader_id"])["notional"].sum()
    keys = pd.MultiIndex.from_arrays([lay.nodes["round"], lay.nodes["trader"]])
    v = notional.reindex(keys).to_numpy(dtype=float)
    v = np.where(np.isfinite(v), v, 0.0)
    if v.max() > 0:
        size = 6.0 + 80.0 * np.sqrt(v / v.max())
    return size


def _draw_nodes(ax, lay: CascadeLayout, size, labels, cats) -> None:
    import matplotlib

    nodes = lay.nodes
    x, y = nodes["x"].to_numpy(), nodes["y"].to_numpy()
    kind = nodes["kind"].to_numpy()
    trader = kind == "trader"
    if labels is None:
        depth = max(int(nodes["round"].max()), 1)
        colour = matplotlib.colormaps["viridis"](nodes["round"].to_numpy()[trader] / depth)
        ax.scatter(x[trader], y[trader], s=size[trader], c=colour, zorder=3, edgecolors="none")
    else:
        node_labels = labels.reindex(nodes["trader"]).to_numpy()
        for c in cats:
            m = trader & (node_labels == c)
            if m.any():
                ax.scatter(x[m], y[m], s=size[m], color=_colour(c, cats), zorder=3,
                           edgecolors="none", label=f"{c} ({int(m.sum()):,})")  # fmt: skip
    root = kind == "step"
    ax.scatter(x[root], y[root], s=120, color="k", marker="*", zorder=4, label="start of the step")
    agg = kind == "aggregate"
    if agg.any():
        ax.scatter(x[agg], y[agg], s=40, color="0.45", marker="s", zorder=4,
                   label="others (the rest of the weight)")  # fmt: skip
    if labels is not None:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title=labels.name)


def _annotate(ax, lay: CascadeLayout, step: int, label_limit: int) -> None:
    """Column ticks with the accounts of each round, trader ids on small cascades, a title."""
    nodes = lay.nodes
    trader = nodes[nodes["kind"] == "trader"]
    depth = int(nodes["round"].max())
    counts = trader.groupby("round").size()
    ax.set_xticks(np.arange(depth + 1))
    ax.set_xticklabels(
        [f"step {step}"] + [f"{r}\n({counts.get(r, 0):,})" for r in range(1, depth + 1)]
    )
    ax.set_xlabel("liquidation round (generation), accounts liquidated")
    ax.set_xlim(-0.4, depth + 0.6)
    ax.set_ylim(-0.03, 1.03)
    if len(trader) <= label_limit:
        for label, x, y in trader[["label", "x", "y"]].itertuples(index=False):
            ax.annotate(label, (x, y), xytext=(0, 5), textcoords="offset points", ha="center",
                        fontsize=7)  # fmt: skip
    accounts = trader["trader"].nunique()
    ax.set_title(
        f"Cascade of step {step}: {len(trader):,} liquidations of {accounts:,} accounts, "
        f"{depth} rounds"
    )


def write_cascade_png(path, edges: pd.DataFrame, liquidations=None, step=None) -> None:
    """Draw a cascade (default: the largest) and save it as a PNG at ``path``.

    Trader ids a font cannot show (a population file's ids may be in any script) are drawn as
    boxes without a warning: the ids themselves are in the run's tables."""
    fig = draw_cascade(edges, step, liquidations)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(Path(path), format="png")


# --------------------------------------------------------------------------------------------
# The rounds
# --------------------------------------------------------------------------------------------


def round_prices(stories, step: int) -> np.ndarray:
    """(R + 1, A) prices before round 1 and after each round of ``step``, from the narrator's
    round stories (:class:`experiments.narration.RoundStory`)."""
    ss = [s for s in stories if s.step == step]
    if not ss:
        return np.zeros((0, 0))
    return np.vstack([ss[0].price_before] + [s.price_after for s in ss])


def draw_rounds(ax_price, ax_bars, stories, step, prev_price, labels, symbols, rmax=None, title=""):
    """One cascade round by round: price moves per asset (top axes) and liquidations per round,
    stacked by what the accounts held (bottom axes).

    Args:
        ax_price, ax_bars: matplotlib Axes.
        stories: the narrator's round stories.
        step: which step's cascade.
        prev_price: (A,) prices at the end of the step before (the moves are relative to it).
        labels: (n_rows,) holding label per book row.
        symbols: asset names.
        rmax: rounds to make room for (default: this cascade's).
        title: a prefix for the titles (e.g. "cross margin").
    """
    cats = holding_order(symbols)
    ss = [s for s in stories if s.step == step]
    rmax = max([s.round for s in ss] + [1]) if rmax is None else rmax
    rp = round_prices(stories, step)
    ax = ax_price
    if rp.size:
        r = np.arange(rp.shape[0])
        for j, sym in enumerate(symbols):
            ax.plot(r, 100 * (rp[:, j] / prev_price[j] - 1), marker="o", label=sym,
                    color=PALETTE[j % len(PALETTE)])  # fmt: skip
        ax.legend(loc="lower left", fontsize=8)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlim(-0.3, rmax + 0.3)
    ax.set_xticks(range(rmax + 1))
    ax.set_xticklabels([f"step {step}" if step else "start"] + [str(i) for i in range(1, rmax + 1)])
    ax.set_title(
        f"{title}: price vs before step {step}" if title else f"price vs before step {step}"
    )
    ax.set_ylabel("price move (%)")
    ax.grid(alpha=0.3)

    ax = ax_bars
    labels = np.asarray(labels, dtype=object)
    bottom = np.zeros(rmax)
    for c in cats:
        counts = np.zeros(rmax)
        for s in ss:
            counts[s.round - 1] = int((labels[s.rows] == c).sum())
        ax.bar(np.arange(1, rmax + 1), counts, bottom=bottom, label=c, color=_colour(c, cats))
        bottom += counts
    ax.set_xlim(-0.3, rmax + 0.3)
    ax.set_xticks(range(1, rmax + 1))
    ax.set_xlabel("liquidation round")
    ax.set_ylabel("accounts liquidated")
    n_acc = len({int(r) for s in ss for r in s.rows})
    what = f"{int(bottom.sum()):,} liquidations of {n_acc:,} accounts"
    ax.set_title(f"{title}: {what}" if title else what)
    ax.legend(loc="upper right", fontsize=8, title="holding")
    ax.grid(alpha=0.3, axis="y")
