"""The cascade drawing: the layout in columns by round, checked on cases worked out by hand,
and the drawing's colours, sizes and PNG."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.cascade_drawing import (
    PALETTE,
    _even_sample,
    _unique_nodes,
    cascade_layout,
    draw_cascade,
    largest_cascade_step,
    largest_cascade_step_of_parts,
    write_cascade_png,
)
from tests.helpers import hand_edges, hand_liquidations


def _by_round(lay):
    """Node index by (trader, round) for trader nodes."""
    traders = lay.nodes[lay.nodes["kind"] == "trader"]
    return {(int(t), int(r)): i for i, t, r in traders[["trader", "round"]].itertuples()}


def test_layout_is_layered_by_round():
    lay = cascade_layout(hand_edges(), 3)
    nodes = lay.nodes
    # event nodes: root; round 1: traders 1, 2; round 2: 3, 4, 1; round 3: 5
    assert sorted(zip(nodes["round"], nodes["label"], strict=True)) == [
        (0, "step:3"),
        (1, "1"),
        (1, "2"),
        (2, "1"),
        (2, "3"),
        (2, "4"),
        (3, "5"),
    ]
    column = nodes["round"].to_numpy()
    assert (column[lay.dst] == column[lay.src] + 1).all()  # every edge runs to the next column
    assert len(lay.src) == 11 and np.isclose(lay.weight.sum(), 2 + 3 + 1)  # 1 into each event
    for r in range(4):
        ys = nodes.loc[nodes["round"] == r, "y"].to_numpy()
        assert len(set(ys)) == len(ys) and ((ys > 0) & (ys < 1)).all()
    assert (nodes["x"] == nodes["round"]).all()
    # barycentres by hand. Round 1: both hang from the root, trader id breaks the tie: 1, 2 at
    # 1/4, 3/4. Round 2: trader 1 at 0.7/4 + 0.3 * 3/4 = 0.4, trader 3 at 0.6/4 + 0.4 * 3/4 =
    # 0.45, trader 4 at 0.5: in that order at 1/6, 3/6, 5/6.
    at = _by_round(lay)
    y = nodes["y"].to_numpy()
    assert [y[at[(1, 1)]], y[at[(2, 1)]]] == pytest.approx([0.25, 0.75])
    assert [y[at[(1, 2)]], y[at[(3, 2)]], y[at[(4, 2)]]] == pytest.approx([1 / 6, 3 / 6, 5 / 6])
    # main causes: the heaviest edge in
    parent = nodes["parent"].to_numpy()
    assert parent[at[(3, 2)]] == at[(1, 1)] and parent[at[(1, 2)]] == at[(1, 1)]
    assert parent[at[(5, 3)]] == at[(1, 2)]
    assert parent[at[(1, 1)]] == parent[at[(2, 1)]] == 0 and parent[0] == -1  # the root


@pytest.mark.parametrize("seed", range(3))
def test_nodes_found_by_integer_keys_are_numpys_unique_rows(seed):
    """The layout's distinct (column, kind, trader) nodes, found on one integer key a triple,
    are np.unique's rows (axis 0) and its inverse, in the same order."""
    rng = np.random.default_rng(seed)
    m, n_traders = 5000, int(rng.integers(1, 400))
    column = rng.integers(0, 12, m)
    kind = rng.integers(0, 3, m)
    trader = np.where(kind == 1, rng.integers(0, n_traders, m), -1)
    trader[rng.random(m) < 0.1] = n_traders - 1  # the largest code, next to the key's span
    table = np.stack([column, kind, trader], 1)
    want, want_inverse = np.unique(table, axis=0, return_inverse=True)
    got, inverse = _unique_nodes(column, kind, trader, n_traders)
    assert np.array_equal(got, want) and np.array_equal(inverse, want_inverse.ravel())


def test_layout_reads_source_kinds_as_categories_or_as_strings():
    """The edges table gives source_kind as a categorical; a table built by hand may give
    strings: the same layout."""
    edges = hand_edges()
    plain = edges.assign(source_kind=edges["source_kind"].astype(str))
    a, b = cascade_layout(edges, 3), cascade_layout(plain, 3)
    assert a.nodes.equals(b.nodes) and np.array_equal(a.src, b.src)
    assert np.array_equal(a.dst, b.dst) and np.array_equal(a.weight, b.weight)


def test_layout_by_hand_with_groups_and_an_aggregate():
    # Round 1: traders 5 and 7 hang from the root. Round 2: trader 9 was hurt 0.3 by 5 and 0.7
    # by 7; trader 8 0.4 by 5 and 0.6 by the rest of a bounded round (an aggregate node).
    # Round 3: trader 5 again (a second, partial liquidation), hurt by 9 alone.
    edges = pd.DataFrame(
        {
            "step": 2,
            "round": [1, 1, 2, 2, 2, 2, 3],
            "source": pd.array([None, None, 5, 7, 5, None, 9], dtype="Int64"),
            "source_kind": pd.Categorical(
                ["step", "step", "trader", "trader", "trader", "others", "trader"],
                ["trader", "step", "others"],
            ),
            "target": [5, 7, 9, 9, 8, 8, 5],
            "weight": [1.0, 1.0, 0.3, 0.7, 0.4, 0.6, 1.0],
        }
    )
    key = pd.Series({5: 0.0, 7: -1.0, 8: 0.0, 9: 0.0})  # trader 7 first in its column
    lay = cascade_layout(edges, 2, key)
    nodes = lay.nodes
    at = _by_round(lay)
    assert sorted(at) == [(5, 1), (5, 3), (7, 1), (8, 2), (9, 2)]
    (agg,) = np.flatnonzero(nodes["kind"] == "aggregate")
    assert nodes.loc[agg, "round"] == 1 and nodes.loc[agg, "label"] == "others"
    y = nodes["y"].to_numpy()
    # column 1: trader 7 (by key), trader 5, then the aggregate at the end
    assert [y[at[(7, 1)]], y[at[(5, 1)]], y[agg]] == pytest.approx([1 / 6, 3 / 6, 5 / 6])
    # column 2: trader 9 (0.3 * 3/6 + 0.7 * 1/6 = 0.27) before trader 8 (0.4 * 3/6 + 0.6 * 5/6)
    assert [y[at[(9, 2)]], y[at[(8, 2)]]] == pytest.approx([0.25, 0.75])
    assert y[at[(5, 3)]] == pytest.approx(0.5)
    # main causes: trader 8's is trader 5, not the heavier aggregate (it is nobody)
    parent = nodes["parent"].to_numpy()
    assert parent[at[(9, 2)]] == at[(7, 1)] and parent[at[(8, 2)]] == at[(5, 1)]
    assert parent[at[(5, 3)]] == at[(9, 2)]
    # every edge's ends, in the edges' order
    root = 0
    assert lay.src.tolist() == [root, root, at[(5, 1)], at[(7, 1)], at[(5, 1)], agg, at[(9, 2)]]
    assert lay.dst.tolist() == [
        at[(5, 1)],
        at[(7, 1)],
        at[(9, 2)],
        at[(9, 2)],
        at[(8, 2)],
        at[(8, 2)],
        at[(5, 3)],
    ]


def test_nodes_coloured_by_label_and_sized_by_the_notional_of_each_liquidation():
    labels = pd.Series({1: "a", 2: "b", 3: "a", 4: "b", 5: "a"}, name="group")
    fig = draw_cascade(hand_edges(), 3, hand_liquidations(), labels=labels, categories=["b", "a"])
    ax = fig.axes[0]
    legend = ax.get_legend()
    # liquidations of step 3: label a: (1, 1), (2, 1), (2, 3), (3, 5); label b: (1, 2), (2, 4)
    assert [t.get_text() for t in legend.get_texts()] == ["b (2)", "a (4)", "start of the step"]
    assert legend.get_title().get_text() == "group"
    b, a = ax.collections[:2]
    assert tuple(b.get_facecolor()[0][:3]) == pytest.approx(_rgb(PALETTE[0]))  # categories order
    # notional of each liquidation (ADL left out): (1, 1) 150 is the largest
    closed = np.array([150.0, 30.0, 40.0, 10.0])
    np.testing.assert_allclose(a.get_sizes(), 6 + 80 * np.sqrt(closed / 150.0))
    assert ax.get_xticklabels()[0].get_text() == "step 3"


def test_main_cause_edges_sampled_evenly_per_round_beyond_max_edges():
    """Beyond ``max_edges`` nodes, each round draws an equal share of its nodes' main-cause
    edges, evenly spaced; a round with fewer nodes than its share keeps them all."""
    nodes = np.arange(100, 114)
    column = np.array([1] * 10 + [2] * 3 + [3])
    # share 6 // 3 = 2: round 1 its first and last, round 2 its first and last, round 3 its one
    assert _even_sample(nodes, column, 6).tolist() == [100, 109, 110, 112, 113]
    assert _even_sample(nodes, column, 30).tolist() == nodes.tolist()  # share 10: all

    def drawn_causes(max_edges):
        ax = draw_cascade(hand_edges(), 3, max_edges=max_edges).axes[0]
        return np.count_nonzero(~np.isnan(ax.lines[1].get_xdata())) // 2  # two ends a line

    # step 3: six trader nodes with a main cause, in rounds 1 (2), 2 (3) and 3 (1)
    assert drawn_causes(20_000) == 6
    assert drawn_causes(3) == 3  # one a round


def _rgb(hex_colour: str) -> tuple[float, float, float]:
    return tuple(int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5))


def test_largest_cascade_and_png(tmp_path):
    assert largest_cascade_step(hand_edges()) == 3
    path = tmp_path / "cascade.png"
    write_cascade_png(path, hand_edges(), hand_liquidations())
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.png"
    write_cascade_png(empty, hand_edges().iloc[:0])
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _largest_by_hand(steps, targets):
    """The step with the most distinct targets, the earliest of a tie (None: no rows)."""
    seen: dict = {}
    for step, target in zip(steps, targets, strict=True):
        seen.setdefault(step, set()).add(target)
    return min(seen, key=lambda s: (-len(seen[s]), s)) if seen else None


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rows", [1, 3, 17, 1000])
def test_largest_cascade_step_of_parts_is_the_whole_tables(seed, rows):
    """Edge events in step order cut into parts of every size (steps running on from one part
    into the next, ties between steps, targets repeated within a step, integer or string
    ids), and out of order: the step of the most distinct targets, the earliest of a tie."""
    rng = np.random.default_rng(seed)
    steps = np.sort(rng.integers(1, 12, 200))
    targets = rng.integers(0, 9, 200)  # few targets: repeats and ties
    if seed % 2:
        targets = np.array([f"0x{t}" for t in targets], dtype=object)
    edges = pd.DataFrame({"step": steps, "target": targets})
    if seed >= 4:  # a table out of step order: counted whole
        edges = edges.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    parts = [edges.iloc[lo : lo + rows] for lo in range(0, len(edges), rows)]
    expected = _largest_by_hand(edges["step"].tolist(), edges["target"].tolist())
    assert largest_cascade_step_of_parts(parts) == expected == largest_cascade_step(edges)
    assert largest_cascade_step_of_parts([edges.iloc[:0]]) is None
    assert largest_cascade_step_of_parts([edges.iloc[:0], edges, edges.iloc[:0]]) == expected
