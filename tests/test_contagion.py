"""The contagion graph: attribution weights, rounds, bounding, merging, files.

The cascades here are recomputed by hand (or by brute force over a dense matrix), never taken
from an earlier run of the code.
"""

from __future__ import annotations

import itertools
import json
import math
import re

import networkx as nx
import numpy as np
import pyarrow as pa
import pytest

from model import ContagionModel, contagion
from model.config import build_config
from model.contagion import (
    ContagionRecorder,
    GraphArrays,
    attribution_factors,
    attribution_weights,
    full_attribution,
    full_edge_count,
    top_attribution,
)
from model.liquidation import RoundRecord
from model.population import Population

# --------------------------------------------------------------------------------------------
# A one-asset cascade through the whole model, recomputed by hand
# --------------------------------------------------------------------------------------------

# Longs entered at 100 with (quantity, wallet). Flat maintenance 5%, full liquidation, no fee:
# liquidatable when W + q (M - 100) < 0.05 q M, i.e. below M* = (100 - W / q) / 0.95.
# The fundamental falls 10% to 90 at step 1; linear impact with 100 units per 1%:
# M = 90 exp(-X / 10_000) after a cumulative forced sale X.
HAND_TRADERS = {
    1: (100.0, 800.0),  # M* = 96.84: round 1
    2: (50.0, 600.0),  # M* = 92.63: round 1          -> X = 150, M = 88.660
    3: (200.0, 3000.0),  # M* = 89.47: round 2
    4: (100.0, 1520.0),  # M* = 89.26: round 2        -> X = 450, M = 86.041
    5: (80.0, 1360.0),  # M* = 87.37: round 3         -> X = 530, M = 85.354
    6: (10.0, 185.0),  # M* = 85.79: round 4          -> X = 540, M = 85.269
    7: (100.0, 2500.0),  # M* = 78.95: never
    8: (-100.0, 1000.0),  # short: gains, never
}
HAND_ROUNDS = {1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 4}


def _hand_model():
    cfg = build_config(
        {
            "name": "hand",
            "seed": 1,
            "steps": 1,
            "market": {"volatility": 0.0, "impact_exponent": 1.0, "resilience": 0.0},
            "assets": [{"symbol": "X", "price": 100.0, "depth": 1.0e4, "max_leverage": 20}],
            "traders": {"count": len(HAND_TRADERS)},
            "margin": {
                "mode": "cross",
                "maintenance": 0.05,
                "liquidation": "full",
                "fee": 0.0,
                "insurance_fund": 1.0e6,
            },
            "shocks": [{"step": 1, "asset": "X", "return": -0.10}],
        }
    )
    ids = np.array(list(HAND_TRADERS))
    q = np.array([[v[0]] for v in HAND_TRADERS.values()])
    w = np.array([v[1] for v in HAND_TRADERS.values()])
    pop = Population(
        ids=ids,
        wallet=w,
        qty=q,
        entry=np.full_like(q, 100.0),
        isolated=np.zeros(q.shape, dtype=bool),
        margin=np.zeros(q.shape),
        strategy=np.array(["hold"] * len(ids), dtype=object),
    )
    return ContagionModel(cfg, population=pop, create_agents=False)


def _brute_force_cascade():
    """Rounds, prices and attribution of the hand cascade, by direct iteration of the rules."""
    q = {i: v[0] for i, v in HAND_TRADERS.items()}
    w = {i: v[1] for i, v in HAND_TRADERS.items()}
    flow, price, done = 0.0, 90.0, set()
    rounds, prices = [], []
    while True:
        hit = sorted(
            i
            for i in q
            if i not in done and w[i] + q[i] * (price - 100.0) < 0.05 * abs(q[i]) * price
        )
        if not hit:
            return rounds, prices
        done.update(hit)
        flow += sum(q[i] for i in hit)
        price = 90.0 * math.exp(-flow / 10_000.0)
        rounds.append(hit)
        prices.append(price)


def test_hand_cascade_rounds_and_weights():
    rounds, prices = _brute_force_cascade()
    assert {i: r + 1 for r, ids in enumerate(rounds) for i in ids} == HAND_ROUNDS
    q = {i: v[0] for i, v in HAND_TRADERS.items()}
    expected = {("step:1", i): 1.0 for i in rounds[0]}
    for r in range(1, len(rounds)):
        flow = sum(q[i] for i in rounds[r - 1])
        for j in rounds[r]:
            for i in rounds[r - 1]:
                expected[(i, j)] = q[i] / flow
    # by hand: 100/150, 50/150 into traders 3 and 4; 200/300, 100/300 into 5; 1 into 6
    assert expected[(1, 3)] == pytest.approx(2 / 3) and expected[(4, 5)] == pytest.approx(1 / 3)

    m = _hand_model().run()
    g = m.contagion_graph
    for node, rnd in HAND_ROUNDS.items():
        data = g.nodes[node]
        assert (data["first_step"], data["first_round"], data["events"]) == (1, rnd, 1)
        closed_price = prices[rnd - 1]
        assert data["liquidated_notional"] == pytest.approx(q[node] * closed_price, rel=1e-9)
        assert data["initial_leverage"] == pytest.approx(
            100.0 * q[node] / HAND_TRADERS[node][1], rel=1e-9
        )
    assert 7 not in g and 8 not in g
    assert set(g.edges) == set(expected)
    for (i, j), w in expected.items():
        e = g.edges[i, j]
        assert abs(e["weight"] - w) <= 1e-9
        assert (e["step"], e["round"], e["events"]) == (1, HAND_ROUNDS[j], 1)
    assert g.nodes["step:1"]["kind"] == "step"
    assert m.mark[0] == pytest.approx(prices[-1], rel=1e-12)


# --------------------------------------------------------------------------------------------
# Two assets: loss-weighted attribution, recomputed by hand
# --------------------------------------------------------------------------------------------


# Two assets through the whole model: X (100, 100 units per 1%) is shocked -10%; Y (50, 100
# units per 1%) only moves when liquidations sell it. Cross accounts (quantity X, quantity Y,
# wallet), entered at 100 and 50; flat maintenance 5%, full liquidation, no fee.
TWO_ASSET_TRADERS = {
    1: (100.0, 0.0, 800.0),  # A: X only; round 1
    2: (50.0, 100.0, 900.0),  # C: both; round 1 (sells X and Y)
    3: (100.0, 200.0, 2100.0),  # V: both; round 2, lost on X and on Y
    4: (0.0, 400.0, 1100.0),  # V2: Y only; round 2, hurt by C alone
    5: (60.0, 0.0, 900.0),  # V3: X only; round 2, hurt by A and C as X's sellers
    6: (10.0, 0.0, 1000.0),  # bystander
    7: (0.0, -100.0, 500.0),  # short Y: gains
}


def _two_asset_model():
    cfg = build_config(
        {
            "name": "two-asset-hand",
            "seed": 1,
            "steps": 1,
            "market": {"volatility": 0.0, "impact_exponent": 1.0, "resilience": 0.0},
            "assets": [
                {"symbol": "X", "price": 100.0, "depth": 1.0e4, "max_leverage": 20},
                {"symbol": "Y", "price": 50.0, "depth": 5.0e3, "max_leverage": 20},
            ],
            "traders": {"count": len(TWO_ASSET_TRADERS)},
            "margin": {
                "mode": "cross",
                "maintenance": 0.05,
                "liquidation": "full",
                "fee": 0.0,
                "insurance_fund": 1.0e6,
            },
            "shocks": [{"step": 1, "asset": "X", "return": -0.10}],
        }
    )
    v = np.array(list(TWO_ASSET_TRADERS.values()))
    q = v[:, :2]
    pop = Population(
        ids=np.array(list(TWO_ASSET_TRADERS)),
        wallet=v[:, 2],
        qty=q,
        entry=np.tile([100.0, 50.0], (len(v), 1)),
        isolated=np.zeros(q.shape, dtype=bool),
        margin=np.zeros(q.shape),
        strategy=np.array(["hold"] * len(v), dtype=object),
    )
    return ContagionModel(cfg, population=pop, create_agents=False)


def test_two_asset_cascade_through_the_model_is_loss_weighted():
    q = {i: np.array(v[:2]) for i, v in TWO_ASSET_TRADERS.items()}
    w = {i: v[2] for i, v in TWO_ASSET_TRADERS.items()}
    entry, price, flow = np.array([100.0, 50.0]), np.array([90.0, 50.0]), np.zeros(2)
    rounds, moves, done = [], [], set()
    while True:  # brute force: iterate the liquidation rule
        hit = sorted(
            i
            for i in q
            if i not in done and w[i] + q[i] @ (price - entry) < 0.05 * np.abs(q[i]) @ price
        )
        if not hit:
            break
        done.update(hit)
        flow = flow + sum(q[i] for i in hit)
        after = np.array([90.0, 50.0]) * np.exp(-flow / 10_000.0)
        rounds.append(hit)
        moves.append(after - price)
        price = after
    assert rounds == [[1, 2], [3, 4, 5]]

    # by hand: round 1 sold 150 X (A 100, C 50) and 100 Y (C alone)
    expected = {("step:1", 1): 1.0, ("step:1", 2): 1.0}
    share = {1: np.array([100 / 150, 0.0]), 2: np.array([50 / 150, 1.0])}
    for j in (3, 4, 5):
        loss = np.maximum(-q[j] * moves[0], 0.0)
        mix = loss / loss.sum()
        for i in (1, 2):
            if mix @ share[i] > 0:
                expected[(i, j)] = float(mix @ share[i])
    assert (4, 1) not in expected and expected[(2, 4)] == 1.0  # Y's only seller hurt V2
    assert expected[(1, 5)] == pytest.approx(2 / 3)  # V3 lost on X only
    lx, ly = 100 * -moves[0][0], 200 * -moves[0][1]
    assert expected[(1, 3)] == pytest.approx(lx / (lx + ly) * 2 / 3)

    m = _two_asset_model().run()
    g = m.contagion_graph
    assert set(g.edges) == set(expected)
    for (i, j), weight in expected.items():
        assert abs(g.edges[i, j]["weight"] - weight) <= 1e-9
    for r, ids in enumerate(rounds, start=1):
        for i in ids:
            assert g.nodes[i]["first_round"] == r and g.nodes[i]["events"] == 1
    np.testing.assert_allclose(m.mark, price, rtol=1e-12)


def _rr(step, rnd, rows, closed, exposure, before, after, price_for_notional=None):
    closed = np.asarray(closed, dtype=float)
    p = np.asarray(after if price_for_notional is None else price_for_notional, dtype=float)
    return RoundRecord(
        step,
        rnd,
        np.asarray(rows, dtype=np.int64),
        closed,
        np.asarray(exposure, dtype=float),
        np.asarray(before, dtype=float),
        np.asarray(after, dtype=float),
        (np.abs(closed) * p).sum(axis=1),
        full=np.zeros(len(rows), dtype=bool),  # the graph reads none of the accounting below
        fees=0.0,
        bad_debt=0.0,
        fund=0.0,
        adl_notional=0.0,
        socialized=0.0,
        unfunded=0.0,
    )


def test_two_asset_loss_weighted_attribution():
    """Round 1: L1 sells 10 A; L2 sells 5 A and 20 B (partially: 5 A stay open); L3 buys 4 B.
    A falls by 2, B by 1: A's sellers are L1 (2/3) and L2 (1/3); B's seller is L2 (1)."""
    ids = np.array([100, 200, 300, 400, 500, 600])  # rows: L1 L2 L3 V1 V2 V3
    rec = ContagionRecorder(ids, np.ones(6))
    rec.record(
        _rr(
            3,
            1,
            [0, 1, 2],
            [[10, 0], [5, 20], [0, -4]],
            [[10, 0], [10, 20], [0, -4]],
            [50, 20],
            [48, 19],
        )
    )
    # Round 2 victims, positions when round 2 began:
    #  V1 long 3 A, long 6 B: losses 6 and 6 -> mix 1/2, 1/2
    #  V2 long 1 A, short 10 B: loses 2 on A, gains on B -> mix A only
    #  V3 short 1 A, short 1 B: lost nothing -> shares of round 1's closed notional
    #  L2 again, 5 A left; during round 1's move it held 10 A and 20 B: losses 20, 20
    rec.record(
        _rr(
            3,
            2,
            [3, 4, 5, 1],
            [[3, 6], [1, 0], [-1, -1], [5, 0]],
            [[3, 6], [1, -10], [-1, -1], [5, 0]],
            [48, 19],
            [47, 18.5],
        )
    )
    g = rec.graph()
    notional = np.array([10 * 48, 5 * 48 + 20 * 19, 4 * 19])
    expected = {
        (100, 400): 0.5 * 2 / 3,
        (200, 400): 0.5 * 1 / 3 + 0.5 * 1.0,
        (100, 500): 2 / 3,
        (200, 500): 1 / 3,
        (100, 600): notional[0] / notional.sum(),
        (200, 600): notional[1] / notional.sum(),
        (300, 600): notional[2] / notional.sum(),
        (100, 200): 0.5 * 2 / 3,
        (200, 200): 0.5 * 1 / 3 + 0.5 * 1.0,  # its own sale hurt it: a self-loop
    }
    got = {(u, v): d["weight"] for u, v, d in g.edges(data=True) if not str(u).startswith("step")}
    assert got.keys() == expected.keys()
    for k, w in expected.items():
        assert abs(got[k] - w) <= 1e-9, k
    # incoming weight of each node = the rounds it was liquidated in
    for node in (400, 500, 600):
        assert g.in_degree(node, weight="weight") == pytest.approx(1.0, abs=1e-12)
    assert g.in_degree(200, weight="weight") == pytest.approx(2.0, abs=1e-12)
    assert g.nodes[200]["events"] == 2 and g.nodes[200]["first_round"] == 1
    # the same victims attributed through the dense matrix
    w = attribution_weights(
        [[3, 6], [1, -10], [-1, -1], [10, 20]],
        np.array([-2.0, -1.0]),
        [[10, 0], [5, 20], [0, -4]],
        notional,
    )
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert w[0, 0] == pytest.approx(expected[(100, 400)], abs=1e-12)
    assert w[3, 1] == pytest.approx(expected[(200, 200)], abs=1e-12)


def test_repeated_liquidations_add_to_existing_edges():
    ids = np.array([7, 8])
    rec = ContagionRecorder(ids, np.ones(2))
    for step, w_prev in ((4, 1.0), (9, 1.0)):
        rec.record(_rr(step, 1, [0], [[w_prev]], [[w_prev]], [10.0], [9.0]))
        rec.record(_rr(step, 2, [1], [[1.0]], [[1.0]], [9.0], [8.5]))
    g = rec.graph()
    assert sorted(g.nodes, key=str) == [7, 8, "step:4", "step:9"]
    e = g.edges[7, 8]
    assert (e["weight"], e["events"], e["step"], e["round"], e["last_step"]) == (2.0, 2, 4, 2, 9)
    assert g.nodes[8]["events"] == 2 and g.nodes[8]["first_step"] == 4
    assert g.in_degree(8, weight="weight") == pytest.approx(2.0)
    # the event table keeps both attributions
    table = rec.edges_table()
    assert len(table) == 4
    assert list(table["step"]) == [4, 4, 9, 9]
    assert list(table["source_kind"]) == ["step", "trader", "step", "trader"]
    assert table["source"].isna().tolist() == [True, False, True, False]


def test_new_step_starts_from_its_root_even_after_a_long_cascade():
    rec = ContagionRecorder(np.arange(3), np.ones(3))
    rec.record(_rr(1, 1, [0], [[1.0]], [[1.0]], [10.0], [9.0]))
    rec.record(_rr(1, 2, [1], [[1.0]], [[1.0]], [9.0], [8.0]))
    rec.record(_rr(2, 1, [2], [[1.0]], [[1.0]], [8.0], [7.0]))  # step 2 round 1: root
    g = rec.graph()
    assert set(g.edges) == {("step:1", 0), (0, 1), ("step:2", 2)}


# --------------------------------------------------------------------------------------------
# Kernels against brute force
# --------------------------------------------------------------------------------------------


def _random_factors(rng, k_v, k_l, a):
    exposure = rng.normal(size=(k_v, a)) * (rng.random((k_v, a)) < 0.7)
    closed = rng.normal(size=(k_l, a)) * (rng.random((k_l, a)) < 0.6)
    move = rng.normal(size=a)
    return attribution_factors(exposure, move, closed)


@pytest.mark.parametrize("seed", range(6))
def test_full_attribution_matches_dense(seed):
    rng = np.random.default_rng(seed)
    mix, share = _random_factors(rng, 40, 30, 1 + seed % 3)
    dense = mix @ share.T
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, atol=1e-12)
    v, li, w = full_attribution(mix, share)
    assert full_edge_count(mix, share) == v.size == int((dense > 0).sum())
    rebuilt = np.zeros_like(dense)
    rebuilt[v, li] = w
    np.testing.assert_allclose(rebuilt, dense, atol=1e-15)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [1, 3, 50])
def test_top_attribution_matches_sorting(seed, k):
    rng = np.random.default_rng(seed)
    mix, share = _random_factors(rng, 60, 45, 1 + seed % 4)
    if seed % 2:  # many near-ties across assets (a line of liquidators)
        t = rng.random(45)
        share[:, 0], share[:, 1 % share.shape[1]] = t / t.sum(), (1 - t) / (1 - t).sum()
    dense = mix @ share.T
    v, li, w, rest = top_attribution(mix, share, k)
    np.testing.assert_allclose(dense[v, li], w, atol=1e-15)
    for j in range(dense.shape[0]):
        kept = np.sort(w[v == j])[::-1]
        best = np.sort(dense[j])[::-1][: min(k, dense.shape[1])]
        best = best[best > 0]
        np.testing.assert_allclose(kept, best, atol=1e-15)
        assert rest[j] == pytest.approx(max(dense[j].sum() - kept.sum(), 0.0), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_top_set_is_the_head_of_a_stable_sort(seed):
    """The candidates of each depth are the rows in the first ``d`` of a stable descending
    sort (ties broken by index) of some column, in index order, on long and short columns
    with many exact ties and zeros (both the sort and the partition branch); brute force by
    Python's stable sort of (-value, row) per column."""
    from model.contagion import _top_set

    rng = np.random.default_rng(seed)
    for k_l, digits in ((5000, 2), (60, 2), (7, 2), (5000, None)):
        share = rng.random((k_l, 3))
        if digits is not None:  # (else distinct values: each column's cut ties only itself)
            share = np.round(share, digits) * (rng.random((k_l, 3)) < 0.5)
            share[: min(40, k_l), 1] = share[:, 1].max()  # a tie at the top, across the cut
        for d in (1, 2, 5, 20, k_l - 1, k_l, k_l + 5):
            if d < 1:
                continue
            want = set()
            for c in range(3):
                ranked = sorted(range(k_l), key=lambda i, c=c: -share[i, c])  # stable
                want.update(ranked[:d])
            got = _top_set(share, d)
            assert got.tolist() == sorted(want)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 5, 40])
def test_top_attribution_of_one_asset_rounds_equals_the_threshold_search(seed, k):
    """Victims that each lost on one column only (every victim of a one-asset round): the
    shortcut gives the threshold search's edges exactly, in the same order, ties included."""
    import model.contagion as mc

    rng = np.random.default_rng(seed)
    k_v, k_l, a = 300, 1 + 17 * seed, 1 + seed % 3
    exposure = np.zeros((k_v, a))
    exposure[np.arange(k_v), rng.integers(0, a, k_v)] = rng.normal(size=k_v)  # one asset each
    closed = np.round(rng.normal(size=(k_l, a)), 1)  # many exact ties between liquidators
    mix, share = attribution_factors(exposure, rng.normal(size=a), closed)
    assert ((mix > 0).sum(axis=1) == 1).all()
    total = mix @ share.sum(axis=0)
    kk = max(1, min(k, k_l))
    col = (mix > 0).argmax(axis=1)
    shortcut = mc._top_of_unit_rows(share, kk, col, share.sum(axis=0))
    want = mc._top_threshold(mix, share, kk, total)
    for got in (shortcut, mc.top_attribution(mix, share, k)):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    assert want[0].size > 0
    # labelled (the recorder's book rows): the same edges, each index replaced by its label
    dst, src = rng.permutation(10 * k_v)[:k_v], rng.permutation(10 * k_l)[:k_l]
    labelled = mc._top_of_unit_rows(share, kk, col, share.sum(axis=0), dst, src)
    np.testing.assert_array_equal(labelled[0], dst[want[0]])
    np.testing.assert_array_equal(labelled[1], src[want[1]])
    np.testing.assert_array_equal(labelled[2], want[2])
    np.testing.assert_array_equal(labelled[3], want[3])


@pytest.mark.parametrize("seed", range(8))
def test_one_asset_factors_equal_the_general_factors(seed):
    """The one-asset shortcut's shares and victim columns are the general factors' exactly:
    same shares bit for bit, and each victim's mix row the unit vector of its column, with
    rounds where nobody pushed the price (every mix row then the orphan column)."""
    from model.contagion import _one_asset_factors

    rng = np.random.default_rng(seed)
    k_v, k_l = 50, 1 + 13 * seed
    exposure = rng.normal(size=(k_v, 1)) * (rng.random((k_v, 1)) < 0.8)
    closed = rng.normal(size=(k_l, 1)) * (rng.random((k_l, 1)) < 0.7)
    if seed % 4 == 3:
        closed = -np.abs(closed)  # only buyers: nobody pushed a fall
    move = np.array([-0.5 if seed % 2 else 0.25])
    notional = np.abs(closed[:, 0]) * 100.0
    mix, share = attribution_factors(exposure, move, closed, notional)
    share1, col = _one_asset_factors(exposure, move, closed, notional)
    np.testing.assert_array_equal(share1, share)
    unit = np.zeros_like(mix)
    unit[np.arange(k_v), col] = 1.0
    np.testing.assert_array_equal(unit, mix)


@pytest.mark.parametrize("seed", range(3))
def test_support_groups_in_lexicographic_pattern_order(seed):
    """Victims are grouped by the columns their losses use, patterns in lexicographic order
    (column 0 first, unused before used), victims in index order; brute force in Python."""
    from model.contagion import _support_groups

    rng = np.random.default_rng(seed)
    mix = rng.random((200, 4)) * (rng.random((200, 4)) < 0.4)
    share = rng.random((30, 4)) * (rng.random((30, 4)) < 0.5)
    patterns = sorted({tuple(bool(x) for x in row) for row in mix > 0})
    groups = _support_groups(mix, share)
    assert len(groups) == len(patterns)
    for (victims, cols, liquidators), pattern in zip(groups, patterns, strict=True):
        expected = [j for j in range(200) if tuple(bool(x) for x in mix[j] > 0) == pattern]
        assert victims.tolist() == expected
        assert cols.tolist() == [c for c in range(4) if pattern[c]]
        used = [i for i in range(30) if any(share[i, c] > 0 for c in cols.tolist())]
        assert liquidators.tolist() == used


@pytest.mark.parametrize("seed", range(4))
def test_block_search_matches_sorting_on_anticorrelated_shares(seed, monkeypatch):
    """Liquidators on a line s_0 + s_1 = const defeat the per-column bound; the block search
    that takes over must still return the exact top contributors."""
    import model.contagion as mc

    rng = np.random.default_rng(seed)
    t = rng.random(300)
    share = np.column_stack([t / t.sum(), (1 - t) / (1 - t).sum(), np.full(300, 1 / 300)])
    mix = np.column_stack([rng.dirichlet([1, 1], 80), np.zeros(80)])
    mix[:5] = [0.0, 0.0, 1.0]  # victims that lost nothing
    monkeypatch.setattr(mc, "_TA_MAX_CANDIDATES", 16)
    dense = mix @ share.T
    v, li, w, rest = mc.top_attribution(mix, share, 4)
    bv, bl, bw, kept = mc._top_by_blocks(mix, share, 4, size=8)
    for got_v, got_l, got_w in ((v, li, w), (bv, bl, bw)):
        np.testing.assert_allclose(dense[got_v, got_l], got_w, atol=1e-15)
        for j in range(80):
            best = np.sort(dense[j])[::-1][:4]
            np.testing.assert_allclose(np.sort(got_w[got_v == j])[::-1], best, atol=1e-15)
    np.testing.assert_allclose(
        rest, 1.0 - np.sort(dense, axis=1)[:, ::-1][:, :4].sum(axis=1), atol=1e-12
    )


def test_bounded_graph_keeps_top_contributors_and_one_aggregate():
    rng = np.random.default_rng(3)
    n = 400
    rec = ContagionRecorder(np.arange(n) + 1000, np.ones(n), max_edges=500, top_contributors=3)
    q1 = rng.random((100, 2)) + 0.1
    rec.record(_rr(5, 1, np.arange(100), q1, q1, [10.0, 5.0], [9.0, 4.5]))
    q2 = rng.random((150, 2)) + 0.1
    rec.record(_rr(5, 2, np.arange(100, 250), q2, q2, [9.0, 4.5], [8.0, 4.4]))
    assert rec.truncated and rec.truncated_rounds == 1 and rec.first_truncated_step == 5
    g = rec.graph()
    assert g.graph["truncated"] is True
    # round 1 moved the prices that round 2 lost on
    dense = attribution_weights(q2, np.array([9.0, 4.5]) - np.array([10.0, 5.0]), q1)
    for j in range(150):
        node = 1100 + j
        preds = g.pred[node]
        assert len(preds) == 4
        assert g.in_degree(node, weight="weight") == pytest.approx(1.0, abs=1e-12)
        top = {u - 1000: d["weight"] for u, d in preds.items() if u != "others:5:2"}
        best = np.argsort(-dense[j])[:3]
        assert set(top) == set(best.tolist())
        assert preds["others:5:2"]["weight"] == pytest.approx(1 - dense[j][best].sum(), abs=1e-12)
    assert g.nodes["others:5:2"]["kind"] == "aggregate"


def test_untruncated_recorder_stays_within_budget():
    rec = ContagionRecorder(np.arange(20), np.ones(20), max_edges=10 + 10 * 10)
    q = np.ones((10, 1))
    rec.record(_rr(1, 1, np.arange(10), q, q, [10.0], [9.0]))
    rec.record(_rr(1, 2, np.arange(10, 20), q, q, [9.0], [8.0]))
    assert not rec.truncated and rec.edge_count == 110
    assert all(
        d["weight"] == pytest.approx(0.1)
        for _, _, d in rec.graph().edges(data=True)
        if d["round"] == 2
    )


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def test_graph_file_written_behind_its_making_has_the_bytes_of_plain_writes(tmp_path, monkeypatch):
    """The GraphML text is compressed in a thread while the next chunk is made: the same bytes
    as writing the chunks one after another, and a failed write is raised to the caller."""
    monkeypatch.setattr(contagion, "_EDGE_CHUNK", 2)  # several chunks
    write_behind = contagion._write_behind
    rec = _sample_recorder()
    rec.write_graphml(tmp_path / "behind.graphml.gz")
    monkeypatch.setattr(contagion, "_write_behind", lambda fh, texts: fh.writelines(texts))
    rec.write_graphml(tmp_path / "plain.graphml.gz")
    behind = (tmp_path / "behind.graphml.gz").read_bytes()
    assert behind == (tmp_path / "plain.graphml.gz").read_bytes()

    class Full:
        def write(self, text):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_behind(Full(), iter(["a", "b", "c"]))


def test_graphml_edge_lines_read_back_to_the_same_numbers():
    """Each <edge> line names its ends and holds the five attributes under their keys; the
    weights read back to the same doubles, however Arrow writes them."""
    weight = np.array([1.0, 1e-05, 5e-324, 0.30000000000000004, 1.5e15, 1 / 3, 2.5e-300])
    m = weight.size
    a = GraphArrays(
        node_names=np.array(["step:4", "others:4:2", 7, 12, 3], dtype=object),
        special=2,
        src=np.array([-1, -2, 0, 1, 2, 0, 1]),
        dst=np.array([0, 1, 2, 2, 0, 1, 2]),
        weight=weight,
        step=np.arange(m) + 4,
        round=np.arange(m) % 3 + 1,
        last_step=np.arange(m) + 10,
        events=np.arange(m) + 1,
    )
    names = pa.array(["step:4", "others:4:2", "7", "12", "3"])
    text = "".join(contagion._graphml_edges(names, a, ["e0", "e1", "e2", "e3", "e4"]))
    pattern = re.compile(
        r'    <edge source="([^"]*)" target="([^"]*)"><data key="e0">([^<]*)</data>'
        r'<data key="e1">(\d+)</data><data key="e2">(\d+)</data><data key="e3">(\d+)</data>'
        r'<data key="e4">(\d+)</data></edge>\n'
    )
    lines = pattern.findall(text)
    assert pattern.sub("", text) == "" and len(lines) == m
    for i, (src, dst, w, st, rd, ls, ev) in enumerate(lines):
        assert (src, dst) == (names[a.src[i] + 2].as_py(), names[a.dst[i] + 2].as_py())
        assert float(w) == weight[i] and (int(st), int(rd), int(ls), int(ev)) == (
            a.step[i],
            a.round[i],
            a.last_step[i],
            a.events[i],
        )


def _sample_recorder():
    rec = ContagionRecorder(
        np.array([11, 12, 13, 14]),
        np.array([2.0, np.inf, 4.0, 5.0]),
        max_edges=3,
        top_contributors=1,
    )
    rec.record(
        _rr(2, 1, [0, 1], [[1.0, 0.5], [2.0, 0.0]], [[1.0, 0.5], [2.0, 0.0]], [10, 3], [9, 2.5])
    )
    rec.record(
        _rr(2, 2, [2, 3], [[1.0, 1.0], [0.5, 0.0]], [[1.0, 1.0], [0.5, 0.0]], [9, 2.5], [8, 2.4])
    )
    return rec


@pytest.mark.parametrize("chunk", [1, 3, 1 << 16])
def test_graphml_and_node_link_round_trip(tmp_path, chunk, monkeypatch):
    monkeypatch.setattr(contagion, "_EDGE_CHUNK", chunk)  # edges written a few at a time
    rec = _sample_recorder()
    g = rec.graph()
    assert "initial_leverage" not in g.nodes[12]  # undefined for an underwater start
    rec.write_graphml(tmp_path / "g.graphml")
    back = nx.read_graphml(tmp_path / "g.graphml")
    assert back.is_directed() and back.graph["truncated"] is True
    assert back.number_of_edges() == g.number_of_edges() and back.number_of_nodes() == len(g)
    for u, v, d in g.edges(data=True):
        b = back.edges[str(u), str(v)]
        assert b == d
    for node, d in g.nodes(data=True):
        assert back.nodes[str(node)] == d

    rec.write_node_link(tmp_path / "g.json")
    data = json.loads((tmp_path / "g.json").read_text())
    back = nx.node_link_graph(data, directed=True, multigraph=False)
    assert nx.utils.graphs_equal(back, g)


def test_graph_matches_networkx_construction():
    rec = _sample_recorder()
    g = rec.graph()
    ref = nx.DiGraph()
    e = rec.edges()
    for s, d, w in zip(e["src"].tolist(), e["dst"].tolist(), e["weight"].tolist(), strict=True):
        u, v = rec.node_name(s), int(rec.ids[d])
        ref.add_edge(u, v, weight=ref.edges[u, v]["weight"] + w if ref.has_edge(u, v) else w)
    assert set(ref.edges) == set(g.edges)
    for u, v in ref.edges:
        assert g.edges[u, v]["weight"] == pytest.approx(ref.edges[u, v]["weight"], abs=1e-15)
        assert g.pred[v][u] is g.succ[u][v]
    assert rec.graph() is g  # cached until the next round


def test_info_counts_nodes_edges_and_truncation():
    rec = _sample_recorder()  # max_edges=3: round 2 needs more, so it was truncated
    info = rec.info()
    g = rec.graph()
    assert info["nodes"] == g.number_of_nodes() and info["edges"] == g.number_of_edges()
    assert info["edges_recorded"] == rec.edges()["src"].size
    assert info["truncated"] and info["truncated_rounds"] == 1
    assert info["first_truncated_step"] == 2 and info["top_contributors"] == 1


def test_run_folder_holds_the_graph_files_and_says_when_truncated(tmp_path):
    import gzip

    import pandas as pd

    from model.results import read_contagion_graph
    from tests.helpers import small_config

    base = small_config(steps=12, contagion={"max_edges": 50, "top_contributors": 2})
    cfg = build_config(base)
    m = ContagionModel(cfg, create_agents=False).run()
    out = m.write_results(tmp_path / "run")
    g = m.contagion_graph
    # by default one graph file, gzip-compressed GraphML, which networkx reads directly
    assert sorted(p.name for p in out.glob("contagion.*")) == ["contagion.graphml.gz"]
    back = nx.read_graphml(out / "contagion.graphml.gz")
    assert back.number_of_edges() == g.number_of_edges() > 0
    assert nx.utils.graphs_equal(read_contagion_graph(out), back)
    # every format on request: the compressed file holds the plain one byte for byte
    every = build_config({**base, "output": {"graph": ["graphml", "json", "graphml.gz"]}})
    out2 = ContagionModel(every, create_agents=False).run().write_results(tmp_path / "run2")
    plain = (out2 / "contagion.graphml").read_bytes()
    assert gzip.decompress((out2 / "contagion.graphml.gz").read_bytes()) == plain
    data = json.loads((out2 / "contagion.json").read_text())
    assert nx.utils.graphs_equal(nx.node_link_graph(data, directed=True, multigraph=False), g)
    # writing the folder again with fewer formats leaves no older graph file behind
    only_json = build_config({**base, "output": {"graph": ["json"]}})
    ContagionModel(only_json, create_agents=False).run().write_results(out2)
    assert sorted(p.name for p in out2.glob("contagion.*")) == ["contagion.json"]
    assert nx.utils.graphs_equal(
        read_contagion_graph(out2), nx.node_link_graph(data, directed=True, multigraph=False)
    )
    edges = pd.read_parquet(out / "contagion_edges.parquet")
    assert len(edges) == m.recorder.edge_count
    assert not (out / "cascade.png").exists()  # drawings are the experiments layer's
    summary = json.loads((out / "summary.json").read_text())
    assert summary["graph_truncated"] is True and summary["contagion_graph"]["truncated"] is True
    assert summary["contagion_graph"]["edges"] == g.number_of_edges()
    assert summary["contagion_graph"]["nodes"] == g.number_of_nodes()
    # rounds over the budget: every victim keeps at most 2 contributors and one aggregate
    bounded = edges.loc[edges["source_kind"] == "others", ["step", "round"]].drop_duplicates()
    assert len(bounded) > 0
    in_bounded = edges.merge(bounded, on=["step", "round"])
    assert in_bounded.groupby(["step", "round", "target"]).size().max() <= 3
    per_event = edges.groupby(["step", "round", "target"])["weight"].sum()
    np.testing.assert_allclose(per_event, 1.0, atol=1e-9)


def test_partial_liquidations_in_a_run_add_to_nodes_and_edges():
    """Accounts partially liquidated several times stay one node; each liquidation brings
    incoming weight 1, so a node's incoming weight is its number of liquidations."""
    from tests.helpers import small_config

    m = ContagionModel(build_config(small_config(steps=30)), create_agents=False).run()
    g = m.contagion_graph
    count = dict(zip(m.book.ids.tolist(), m.engine.liquidation_count.tolist(), strict=True))
    traders = [n for n, d in g.nodes(data=True) if d["kind"] == "trader"]
    assert len(traders) == sum(1 for c in count.values() if c > 0)
    assert max(g.nodes[t]["events"] for t in traders) >= 2  # some were liquidated again
    for t in traders:
        assert g.nodes[t]["events"] == count[t]
        assert g.in_degree(t, weight="weight") == pytest.approx(count[t], abs=1e-9)
    assert sum(d["events"] for _, _, d in g.edges(data=True)) == m.recorder.edge_count
    # the successor and predecessor views agree with a graph built through the public API
    ref = nx.DiGraph(**g.graph)
    ref.add_nodes_from(g.nodes(data=True))
    ref.add_edges_from(g.edges(data=True))
    assert nx.utils.graphs_equal(ref, g)
    assert {n: dict(p) for n, p in ref.pred.items()} == {n: dict(p) for n, p in g.pred.items()}
    assert all(g.pred[v][u] is d for u, v, d in g.edges(data=True))


def test_distinct_edges_counted_by_marks_and_by_sort_alike(monkeypatch):
    """info()'s distinct edges, counted with a mark per possible pair or by sorting the
    events' keys, equal the distinct (source, target) pairs of the edge events, counted by
    hand, for a run whose edges repeat (the same pair in several rounds and steps)."""
    import model.contagion as contagion
    from tests.helpers import small_config

    m = ContagionModel(build_config(small_config(steps=15)), create_agents=False).run()
    rec = m.recorder
    e = rec.edges()
    pairs = set(zip(e["src"].tolist(), e["dst"].tolist(), strict=True))
    assert len(pairs) < e["src"].size  # repeats to merge
    counts = []
    for per_edge in (0, 10**9):  # by sort, by marks
        monkeypatch.setattr(contagion, "_SEEN_PER_EDGE", per_edge)
        rec._cache.clear()
        counts.append(rec.info()["edges"])
    assert counts == [len(pairs), len(pairs)]
    assert rec.arrays().src.size == len(pairs)


def _one_asset_weights_by_hand(prev, rec):
    """Round ``rec``'s attribution weights to round ``prev``'s liquidators, one asset, from the
    rule in Python loops: (victim, {liquidator row: weight})."""
    move = float(prev.price_after[0] - prev.price_before[0])
    push = [max(0.0, float(x) * (1.0 if move < 0 else -1.0)) for x in prev.closed[:, 0]]
    pushed = sum(push)
    notional = [float(x) for x in prev.notional]
    out = []
    for j, row in enumerate(rec.rows.tolist()):
        held = float(rec.exposure[j, 0])
        for i, r in enumerate(prev.rows.tolist()):
            if r == row:  # liquidated in the previous round too: held its closed part
                held += float(prev.closed[i, 0])
        if max(0.0, -held * move) > 0 and pushed > 0:
            w = [p / pushed for p in push]
        elif sum(notional) > 0:
            w = [x / sum(notional) for x in notional]
        else:
            w = [1.0 / len(notional)] * len(notional)
        out.append((row, dict(zip(prev.rows.tolist(), w, strict=True))))
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_edges", [0, 10**9])
def test_one_asset_rounds_record_each_victims_top_contributors(seed, max_edges):
    """Chains of one-asset rounds (liquidators from 2 to 300, so both the sort and the
    partition search of the candidates run; closed quantities rounded so that many weights
    tie exactly; some victims liquidated in two rounds running; a rising round whose buyers
    pushed the price): every round's recorded edges against the weights computed by hand.
    Past the edge budget each victim keeps weights equal to its ``k`` largest, each the weight
    of the liquidator it names, and one aggregate edge for the rest; within it, every edge."""
    rng = np.random.default_rng(seed)
    k, n = 3, 2000
    rec = ContagionRecorder(np.arange(n), np.ones(n), max_edges=max_edges, top_contributors=k)
    price, rounds, rows = 100.0, [], rng.permutation(n)[:2]
    for r in range(1, 7):
        size = [2, 4, 40, 300, 120, 9][r - 1 if seed % 2 else 6 - r]
        again = rows[: min(3, rows.size)] if r % 2 else rows[:0]  # liquidated again
        rows = np.concatenate(
            [again, rng.choice(np.setdiff1d(np.arange(n), again), size, replace=False)]
        )
        closed = np.round(rng.normal(0.5, 1.0, (rows.size, 1)), 1)
        exposure = np.round(rng.normal(0.0, 1.0, (rows.size, 1)), 1)
        after = price * (1.02 if (seed + r) % 5 == 0 else 0.99)
        rounds.append(_rr(7, r, rows, closed, exposure, [price], [after]))
        rec.record(rounds[-1])
        price = after
    e = rec.edges()
    for prev, cur in itertools.pairwise(rounds):
        here = e["round"] == cur.round
        for row, weights in _one_asset_weights_by_hand(prev, cur):
            mine = here & (e["dst"] == row)
            src, w = e["src"][mine], e["weight"][mine]
            traders = src >= 0
            by_hand = np.array([weights[s] for s in src[traders].tolist()])
            np.testing.assert_allclose(w[traders], by_hand, rtol=1e-12)
            best = sorted((x for x in weights.values() if x > 0), reverse=True)
            if max_edges:
                assert traders.all()
                np.testing.assert_allclose(np.sort(w)[::-1], best, rtol=1e-12)
                continue
            np.testing.assert_allclose(np.sort(w[traders])[::-1], best[:k], rtol=1e-12)
            left = sum(best) - sum(best[:k])
            assert w[~traders].sum() == pytest.approx(left, abs=1e-12)
            assert (~traders).sum() == (left > 1e-12)
    assert rec.truncated == (max_edges == 0)


def _held_bytes(log) -> int:
    """Bytes of the arrays a ColumnLog keeps alive (each base array counted once)."""
    bases = {}
    for piece in log._pieces + ([log._open] if log._open is not None else []):
        for a in piece.values():
            while isinstance(a.base, np.ndarray):
                a = a.base
            bases[id(a)] = a.nbytes
    return sum(bases.values())


def test_edge_events_keep_step_and_round_once_per_batch():
    n = 6000
    rec = ContagionRecorder(np.arange(n), np.ones(n))
    rec.record(_rr(3, 1, np.arange(5000), np.ones((5000, 1)), np.ones((5000, 1)), [10.0], [9.0]))
    rec.record(_rr(7, 1, np.arange(5000, n), np.ones((1000, 1)), np.ones((1000, 1)), [9.0], [8.0]))
    e = rec.edges()
    # two step roots: every victim one edge of weight 1 from its step's root node
    assert e["src"].tolist() == [-1] * 5000 + [-2] * 1000
    assert e["dst"].tolist() == list(range(n))
    assert e["weight"].tolist() == [1.0] * n
    assert e["step"].tolist() == [3] * 5000 + [7] * 1000
    assert e["round"].tolist() == [1] * n
    assert e["step"].dtype == np.int64 and not e["step"].flags.writeable
    assert e["src"].dtype == e["dst"].dtype == np.int64 and not e["src"].flags.writeable
    # held: 4 bytes each of src and dst and 8 of weight per edge, and 3 int64 per batch
    # (step, round, size); not two more int64 columns of every edge
    assert _held_bytes(rec._edges) + _held_bytes(rec._batches) == n * (4 + 4 + 8) + 2 * 3 * 8


def test_a_large_books_row_codes_merge_without_overflow():
    """The log keeps sources and targets as 4-byte codes; the merged graph's keys (source
    times the book's size plus target, 10^10 here) and the distinct edge count widen them
    first: each edge's ends come back as written, counted by hand."""
    n = 100_000
    rec = ContagionRecorder(np.arange(n), np.ones(n))
    liquidators, victims = np.array([n - 3, n - 2, n - 1]), np.array([n - 60_000, n - 10])
    rec.record(_rr(4, 1, liquidators, np.ones((3, 1)), np.ones((3, 1)), [10.0], [9.0]))
    rec.record(_rr(4, 2, victims, np.ones((2, 1)), np.ones((2, 1)), [9.0], [8.0]))
    rec.record(_rr(5, 1, liquidators, np.ones((3, 1)), np.ones((3, 1)), [8.0], [7.0]))
    rec.record(_rr(5, 2, victims, np.ones((2, 1)), np.ones((2, 1)), [7.0], [6.0]))
    g = rec.arrays()
    traders = g.src >= 0
    pairs = sorted(zip(g.src[traders].tolist(), g.dst[traders].tolist(), strict=True))
    assert pairs == sorted((int(a), int(b)) for a in liquidators for b in victims)
    assert g.events[traders].tolist() == [2] * 6  # each pair once a step, two steps
    assert np.allclose(g.weight[traders], 2 / 3)  # a third of the loss each, twice
    rec._cache.clear()
    assert rec.info()["edges"] == g.src.size == 6 + 3 * 2  # and the steps' roots' edges


def test_edge_batches_are_the_logs_own_columns_and_each_batchs_step_and_round():
    """The batches the cascade metrics read hold the log's columns themselves (read-only, no
    copy of every edge) and each batch's step, round and size, which repeated give the
    step and round of every edge event."""
    n = 6000
    rec = ContagionRecorder(np.arange(n) + 100, np.ones(n))
    rec.record(_rr(3, 1, np.arange(5000), np.ones((5000, 1)), np.ones((5000, 1)), [10.0], [9.0]))
    rec.record(_rr(3, 2, [5000, 5001], np.ones((2, 1)), np.ones((2, 1)), [9.0], [8.0]))
    rec.record(_rr(7, 1, np.arange(5002, n), np.ones((998, 1)), np.ones((998, 1)), [9.0], [8.0]))
    b = rec.edge_batches()
    e = rec.edges()
    logged = rec._edges.columns()
    for name in ("src", "dst", "weight"):
        assert getattr(b, name) is logged[name] and not getattr(b, name).flags.writeable
        assert getattr(b, name).tolist() == e[name].tolist()
    assert b.step.tolist() == [3, 3, 7] and b.round.tolist() == [1, 2, 1]
    assert b.size.tolist() == [5000, 2 * 5000, 998]  # round 2: each victim from every liquidator
    assert np.repeat(b.step, b.size).tolist() == e["step"].tolist()
    assert np.repeat(b.round, b.size).tolist() == e["round"].tolist()
    assert b.ids is rec.ids


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 5])
def test_kept_edges_are_the_heads_of_a_stable_sort_in_liquidator_order(seed, k):
    """Each victim keeps the first ``k`` of a stable descending sort of its weights (a tie at
    the ``k``-th goes to the lower liquidator index), listed in liquidator order, zeros
    dropped: brute force by Python's stable sort of every victim's weights, on weights with
    many exact ties."""
    import model.contagion as mc

    rng = np.random.default_rng(seed)
    k_v, k_l, a = 50, (3, 12, 40, 200)[seed], 2
    share = np.round(rng.random((k_l, a)), 1) * (rng.random((k_l, a)) < 0.7)
    col = rng.integers(0, a, k_v)
    mix = np.zeros((k_v, a))
    mix[np.arange(k_v), col] = 1.0
    kk = max(1, min(k, k_l))
    for v, li, w, _ in (
        mc._top_of_unit_rows(share, kk, col, share.sum(axis=0)),
        mc._top_threshold(mix, share, kk, mix @ share.sum(axis=0)),
    ):
        got = list(zip(v.tolist(), li.tolist(), w.tolist(), strict=True))
        want = []
        for j in range(k_v):
            ranked = sorted(range(k_l), key=lambda i, j=j: -share[i, col[j]])[:kk]
            want += [(j, i, share[i, col[j]]) for i in sorted(ranked) if share[i, col[j]] > 0]
        assert got == want


# --------------------------------------------------------------------------------------------
# Merging and reading the edge log in parts
# --------------------------------------------------------------------------------------------


def _merged_by_hand(rec):
    """The merged edges of ``rec``'s events, by a Python loop over them in order: per
    (source, target) the weights added one by one from 0.0, the first event's step and round,
    the largest step, the count; sorted by (source, target) as the arrays are."""
    e = rec.edges()
    merged: dict = {}
    for s, d, w, st, rd in zip(
        *(e[k].tolist() for k in ("src", "dst", "weight", "step", "round")), strict=True
    ):
        if (s, d) not in merged:
            merged[(s, d)] = [0.0, st, rd, st, 0]
        m = merged[(s, d)]
        m[0] += w
        m[3] = max(m[3], st)
        m[4] += 1
    return sorted(merged.items())


@pytest.fixture(scope="module")
def run_recorders():
    """Recorders of real runs: one with repeated edges (the same pair in several rounds and
    steps), one bounded (step roots, aggregate nodes, kept top contributors)."""
    from tests.helpers import small_config

    out = []
    for contagion_keys in ({}, {"max_edges": 300, "top_contributors": 2}):
        cfg = build_config(small_config(steps=40, contagion=contagion_keys))
        out.append(ContagionModel(cfg, create_agents=False).run().recorder)
    assert not out[0].truncated and out[1].truncated and out[1].roots[-1].startswith("others:")
    return out


@pytest.mark.parametrize("which", [0, 1])
def test_merged_edges_equal_a_merge_by_hand(run_recorders, which):
    rec = run_recorders[which]
    rec._cache.clear()
    a = rec.arrays()
    expected = _merged_by_hand(rec)
    assert len(expected) < rec.edge_count  # repeats merged
    assert list(zip(a.src.tolist(), a.dst.tolist(), strict=True)) == [k for k, _ in expected]
    got = zip(
        *(x.tolist() for x in (a.weight, a.step, a.round, a.last_step, a.events)), strict=True
    )
    assert [list(g) for g in got] == [v for _, v in expected]  # weights to the bit
    for x in (a.step, a.round, a.last_step, a.events):
        assert x.dtype == np.int64


def test_writing_the_graph_keeps_no_merged_arrays(run_recorders, tmp_path):
    """A graph file is written from arrays merged for it and dropped after (a long run's are
    as large as its edge log); info() still counts the edges without merging again."""
    rec = run_recorders[1]
    rec._cache.clear()
    rec.write_graphml(tmp_path / "g.graphml.gz")
    assert "arrays" not in rec._cache
    assert rec.info()["edges"] == len(_merged_by_hand(rec))
    back = nx.read_graphml(tmp_path / "g.graphml.gz")
    assert back.number_of_edges() == rec.info()["edges"]


@pytest.mark.parametrize("rows", [1, 7, 512, 4096, 10**7])
def test_edge_tables_in_parts_join_to_the_whole_table(run_recorders, rows):
    import pandas as pd

    for rec in run_recorders:
        whole = rec.edges_table()
        parts = list(rec.edges_tables(rows))
        assert len(parts) == max(-(-len(whole) // rows), 1)
        joined = pd.concat(parts, ignore_index=True)
        pd.testing.assert_frame_equal(joined, whole, check_exact=True)


def test_edge_tables_in_parts_of_string_ids_and_of_no_edges():
    import pandas as pd

    ids = np.array(["0xa", "b&c", "d"], dtype=object)
    rec = ContagionRecorder(ids, np.ones(3), max_edges=1, top_contributors=1)
    (empty,) = rec.edges_tables(5)
    pd.testing.assert_frame_equal(empty, rec.edges_table())
    assert len(empty) == 0 and list(empty.columns)[0] == "step"
    rec.record(_rr(1, 1, [0, 1], [[1.0], [2.0]], [[1.0], [2.0]], [10.0], [9.0]))
    rec.record(_rr(1, 2, [2], [[1.0]], [[1.0]], [9.0], [8.0]))  # truncated: kept + aggregate
    whole = rec.edges_table()
    assert whole["source_kind"].tolist() == ["step", "step", "trader", "others"]
    joined = pd.concat(list(rec.edges_tables(1)), ignore_index=True)
    pd.testing.assert_frame_equal(joined, whole, check_exact=True)
    assert pd.api.types.is_string_dtype(joined["target"].dtype)


def _recorder_state(recorder: ContagionRecorder) -> list:
    """Everything the recorder keeps: edges, batches, special nodes, node attributes and
    counters."""
    return [
        *recorder.edges().values(),
        *recorder._batches.columns().values(),
        recorder.roots,
        recorder.events,
        recorder.first_step,
        recorder.first_round,
        recorder.notional,
        (recorder.truncated, recorder.truncated_rounds, recorder.first_truncated_step),
        (recorder.edge_count, recorder._version),
    ]


@pytest.mark.parametrize("candidates", [contagion._TA_MAX_CANDIDATES, 4])
def test_a_compiled_calls_rounds_recorded_at_once_as_round_by_round(candidates, monkeypatch):
    """The rounds of a compiled call (model.closing_rounds) handed to the recorder at once
    (ContagionRecorder.record_closed_rounds) leave it as the same rounds recorded one by one
    through ``record``: a one-asset book large enough for the kernels, traders re-entering
    after a liquidation (victims liquidated before: the numpy lines), an edge budget that
    the early rounds fit in and the later ones pass, and, with the compiled search's
    candidates capped below the kept edges, rounds whose top contributors numpy finds. Every
    way a round leaves the compiled call is taken."""
    from tests.helpers import small_config

    monkeypatch.setattr(contagion, "_TA_MAX_CANDIDATES", candidates)
    cfg = build_config(
        small_config(
            steps=60,
            market={"volatility": 0.9, "correlation": 0.0},
            assets=[{"symbol": "BTC", "price": 60000.0, "depth": 4.0e6, "max_leverage": 50}],
            traders={"count": 6000, "leverage": 20.0, "assets_per_trader": 1, "reentry_steps": 6},
            margin={"liquidation": "full", "insurance_fund": 1.0e6, "max_rounds": 12},
            contagion={"max_edges": 20_000},
            shocks=[{"step": s, "asset": "BTC", "return": -0.03} for s in range(5, 50, 10)],
        )
    )
    handed_back = []
    at_once = contagion.ContagionRecorder._whole_close_rounds

    def counted(self, step, rnd, rounds, start):
        stop, status = at_once(self, step, rnd, rounds, start)
        handed_back.append(status if stop < len(rounds.bounds) - 1 else None)
        return stop, status

    monkeypatch.setattr(contagion.ContagionRecorder, "_whole_close_rounds", counted)
    states = []
    for one_by_one in (False, True):
        model = ContagionModel(cfg, create_agents=False)
        if one_by_one:  # a listener without record_closed_rounds: told round by round
            model.engine.on_round = lambda rec, recorder=model.recorder: recorder.record(rec)
        model.run()
        states.append(_recorder_state(model.recorder))
    # handed back: a victim liquidated before (0), every edge in the budget (1), too many
    # candidates (3); None: the call recorded every round it was given
    assert set(handed_back) == {0, 1, None} | ({3} if candidates == 4 else set())
    assert handed_back.count(None) > 5 and states[0][-1][0] > 20_000
    for mine, theirs in zip(*states, strict=True):
        if isinstance(mine, np.ndarray):
            assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
        else:
            assert mine == theirs


@pytest.mark.parametrize("max_edges", [0, 10**9])
def test_rounds_recorded_at_once_hand_a_round_back_after_others_as_one_by_one(max_edges):
    """Rounds of one compiled call handed to the recorder at once, where the compiled call
    records some and hands back a later one (round 3 liquidates again accounts of round 1:
    victims liquidated before), leave the recorder as the same rounds recorded one by one:
    the handed-back round and those after it follow the round before them, not the step's
    root. Past the edge budget (0) and within it."""
    from model.closing_rounds import ClosedRounds

    rng = np.random.default_rng(3)
    n, sizes, prices = 6000, [30, 40, 25, 35], [100.0, 99.0, 97.5, 96.0, 95.2]
    fresh = iter(rng.permutation(np.arange(100, n)).tolist())
    rows = [np.array([next(fresh) for _ in range(k)]) for k in sizes]
    rows[2][:3] = rows[0][:3]  # liquidated in round 1 and again in round 3
    rows = [np.sort(r) for r in rows]
    qty = [np.round(rng.uniform(0.5, 2.0, (k, 1)), 2) for k in sizes]
    records = [
        _rr(5, i + 1, rows[i], qty[i], qty[i], [prices[i]], [prices[i + 1]]) for i in range(4)
    ]
    per_round = [[0.0] * 4 for _ in range(12)]
    rounds = ClosedRounds(
        np.concatenate(rows), np.cumsum([0, *sizes]).tolist(), np.concatenate(qty),
        np.concatenate([r.notional for r in records]),
        np.array([[[prices[i]], [prices[i + 1]], [1.0e6]] for i in range(4)]),
        np.zeros((4, 1)), *(np.zeros((sum(sizes), 1)) for _ in range(3)), *per_round,
    )  # fmt: skip
    recorders = []
    for at_once in (True, False):
        rec = ContagionRecorder(np.arange(n), np.ones(n), max_edges=max_edges, top_contributors=3)
        assert rec._compiled
        if at_once:
            rec.record_closed_rounds(5, 1, rounds, records.__getitem__)
        else:
            for r in records:
                rec.record(r)
        recorders.append(rec)
    assert recorders[1].roots[0] == "step:5" and "step:5" not in recorders[1].roots[1:]
    for mine, theirs in zip(*map(_recorder_state, recorders), strict=True):
        if isinstance(mine, np.ndarray):
            assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
        else:
            assert mine == theirs
