"""A drawing of one cascade, layered by round (a PNG for the run folder, or a notebook axes).

Layer 0 holds the root ``step:<t>``; layer ``r`` holds the liquidations of round ``r``. A
trader liquidated in two rounds of the step appears in both layers, so every edge runs from one
layer to the next and the picture is the cascade's tree of generations (a DAG when a
liquidation has several parents). Within a layer nodes are ordered by the weighted mean
position of their parents (the barycentre heuristic), which keeps the branches apart. Edge
opacity follows the attribution weight; node area follows the notional liquidated in that
round when the liquidations table is given.

Large cascades are drawn with line collections, keeping only the heaviest ``max_edges`` edges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["cascade_layout", "draw_cascade", "largest_cascade_step", "write_cascade_png"]


def largest_cascade_step(edges: pd.DataFrame) -> int | None:
    """The step whose cascade liquidated the most accounts (None when nothing was)."""
    if len(edges) == 0:
        return None
    sizes = edges.groupby("step")["target"].nunique()
    return int(sizes.idxmax())


def cascade_layout(edges: pd.DataFrame, step: int):
    """Positions of one step's cascade, layered by round.

    Returns:
        ``(nodes, src, dst, weight)``: a DataFrame of event nodes (label, round, kind,
        trader, x, y) and edge columns as indices into it.
    """
    e = edges[edges["step"] == step]
    kind = e["source_kind"].astype(str).to_numpy()
    rnd = e["round"].to_numpy(dtype=np.int64)
    target = e["target"].to_numpy(dtype=np.int64)
    source = np.where(kind == "trader", e["source"].fillna(-1).to_numpy(dtype=np.int64), -1)
    labels = {}
    rows = []

    def node(key, label, layer, node_kind, trader):
        idx = labels.get(key)
        if idx is None:
            idx = labels[key] = len(rows)
            rows.append((label, layer, node_kind, trader))
        return idx

    root = node(("step",), f"step:{step}", 0, "step", -1)
    # event nodes: (round, trader); aggregate nodes: one per round
    tgt_keys = list(zip(rnd.tolist(), target.tolist(), strict=True))
    dst = np.array([node(("t", r, t), str(t), r, "trader", t) for r, t in tgt_keys], dtype=int)
    src = np.empty(rnd.size, dtype=int)
    for i, (k, r, s) in enumerate(zip(kind.tolist(), rnd.tolist(), source.tolist(), strict=True)):
        if k == "step":
            src[i] = root
        elif k == "trader":
            src[i] = node(("t", r - 1, s), str(s), r - 1, "trader", s)
        else:
            src[i] = node(("o", r), "others", r - 1, "aggregate", -1)
    nodes = pd.DataFrame(rows, columns=["label", "round", "kind", "trader"])
    w = e["weight"].to_numpy(dtype=float)

    # Barycentre ordering, layer by layer from the root.
    x = np.zeros(len(nodes))
    layer = nodes["round"].to_numpy()
    for r in range(0, int(layer.max()) + 1):
        members = np.flatnonzero(layer == r)
        if r == 0:
            x[members] = 0.5
            continue
        into = np.isin(dst, members)
        num = np.bincount(dst[into], weights=w[into] * x[src[into]], minlength=len(nodes))
        den = np.bincount(dst[into], weights=w[into], minlength=len(nodes))
        bary = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.5)[members]
        # aggregates go to the right end of their layer
        bary = np.where(nodes["kind"].to_numpy()[members] == "aggregate", 2.0, bary)
        order = members[np.lexsort((nodes["trader"].to_numpy()[members], bary))]
        x[order] = (np.arange(order.size) + 0.5) / order.size
    nodes["x"] = x
    nodes["y"] = -layer.astype(float)
    return nodes, src, dst, w


def draw_cascade(
    edges: pd.DataFrame,
    step: int | None = None,
    liquidations: pd.DataFrame | None = None,
    *,
    ax=None,
    max_edges: int = 20_000,
    label_limit: int = 60,
):
    """Draw one step's cascade on ``ax`` (a new figure by default); returns the figure.

    Args:
        edges: contagion edge events (``ContagionRecorder.edges_table()`` or
            ``contagion_edges.parquet``).
        step: the cascade's step (default: the largest cascade).
        liquidations: the liquidations table, to size nodes by notional.
        max_edges: draw at most this many edges (the heaviest).
        label_limit: label nodes with trader ids when the cascade has at most this many.
    """
    import matplotlib
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    if step is None:
        step = largest_cascade_step(edges)
    if ax is None:  # a figure outside pyplot: no global state, nothing to close
        fig = Figure(figsize=(10, 6), dpi=120)
        ax = fig.subplots()
    else:
        fig = ax.figure
    if step is None or not (edges["step"] == step).any():
        ax.text(0.5, 0.5, "no liquidations", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    nodes, src, dst, w = cascade_layout(edges, step)
    depth = int(nodes["round"].max())

    if w.size > max_edges:
        keep = np.argpartition(-w, max_edges - 1)[:max_edges]
        src, dst, w = src[keep], dst[keep], w[keep]
    xy = nodes[["x", "y"]].to_numpy()
    segments = np.stack([xy[src], xy[dst]], axis=1)
    # crowded layers get thinner, fainter edges so that the structure stays visible
    layer_of_edge = nodes["round"].to_numpy()[dst]
    crowd = np.bincount(layer_of_edge)[layer_of_edge]
    fade = np.minimum(1.0, 10.0 / np.sqrt(crowd))
    wc = np.clip(w, 0.0, 1.0)
    colors = np.zeros((w.size, 4))
    colors[:, 3] = (0.15 + 0.75 * wc) * fade
    widths = 0.3 + (0.1 + 1.6 * wc) * fade
    ax.add_collection(LineCollection(segments, colors=colors, linewidths=widths, zorder=1))

    size = np.full(len(nodes), 30.0)
    if liquidations is not None:
        liq = liquidations[(liquidations["step"] == step)]
        if "kind" in liq.columns:
            liq = liq[liq["kind"] != "adl"]
        notional = liq.groupby(["round", "trader_id"])["notional"].sum()
        keys = pd.MultiIndex.from_arrays([nodes["round"], nodes["trader"]])
        v = notional.reindex(keys).to_numpy(dtype=float)
        v = np.where(np.isfinite(v), v, 0.0)
        if v.max() > 0:
            size = 10.0 + 290.0 * np.sqrt(v / v.max())
    cmap = matplotlib.colormaps["viridis"]
    colour = [cmap(r / max(depth, 1)) for r in nodes["round"]]
    special = nodes["kind"].to_numpy() != "trader"
    colour = [(0.8, 0.1, 0.1, 1.0) if s else c for s, c in zip(special, colour, strict=True)]
    size = np.where(special, 80.0, size)
    ax.scatter(nodes["x"], nodes["y"], s=size, c=colour, zorder=2, edgecolors="white", lw=0.5)
    if len(nodes) <= label_limit:
        for label, x, y in nodes[["label", "x", "y"]].itertuples(index=False):
            ax.annotate(
                label, (x, y), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=7
            )
    counts = nodes[nodes["kind"] == "trader"].groupby("round").size()
    ax.set_yticks(-np.arange(depth + 1))
    ax.set_yticklabels(["root"] + [f"round {r} ({counts.get(r, 0)})" for r in range(1, depth + 1)])
    ax.set_xticks([])
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-depth - 0.5, 0.5)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    accounts = nodes.loc[nodes["kind"] == "trader", "trader"].nunique()
    ax.set_title(f"Cascade of step {step}: {accounts} accounts, {depth} rounds")
    return fig


def write_cascade_png(path, edges: pd.DataFrame, liquidations=None, step=None) -> None:
    """Draw a cascade (default: the largest) and save it as a PNG at ``path``."""
    fig = draw_cascade(edges, step, liquidations)
    fig.savefig(Path(path), format="png", bbox_inches="tight")
