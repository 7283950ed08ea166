"""The cascade drawing: layout layered by round, and the PNG."""

from __future__ import annotations

import numpy as np

from experiments.cascade_drawing import cascade_layout, largest_cascade_step, write_cascade_png
from tests.helpers import hand_edges, hand_liquidations


def test_layout_is_layered_by_round():
    nodes, src, dst, w = cascade_layout(hand_edges(), 3)
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
    layer = nodes["round"].to_numpy()
    assert (layer[dst] == layer[src] + 1).all()  # every edge runs to the next layer
    assert len(src) == 11 and np.isclose(w.sum(), 2 + 3 + 1)  # weights into each event: 1
    for r in range(4):
        xs = nodes.loc[nodes["round"] == r, "x"].to_numpy()
        assert len(set(xs)) == len(xs) and ((xs > 0) & (xs < 1)).all()
    assert (nodes["y"] == -nodes["round"]).all()


def test_largest_cascade_and_png(tmp_path):
    assert largest_cascade_step(hand_edges()) == 3
    path = tmp_path / "cascade.png"
    write_cascade_png(path, hand_edges(), hand_liquidations())
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.png"
    write_cascade_png(empty, hand_edges().iloc[:0])
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
