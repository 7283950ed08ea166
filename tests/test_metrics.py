"""Cascade metrics on hand-made tables, checked against hand arithmetic and brute force."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from model import ContagionModel
from model.config import build_config
from model.ids import plain_id
from model.metrics import (
    amplification,
    branching_by_generation,
    cascade_metrics,
    cascade_size_distribution,
    cascade_sizes,
    cascade_subgraph,
    cascades,
    exposure_network,
    generation_sizes,
    largest_cascade,
    mean_branching,
    overlap_projection,
    systemic_importance,
)
from tests.helpers import HAND_EDGES, hand_edges, hand_liquidations, small_config


def test_cascades_by_hand():
    t = cascades(hand_liquidations()).set_index("step")
    assert list(t.index) == [3, 7, 9]
    assert t.loc[3, ["accounts", "events", "first_generation", "depth"]].tolist() == [5, 6, 2, 3]
    assert t.loc[7, ["accounts", "events", "first_generation", "depth"]].tolist() == [1, 1, 1, 1]
    assert t.loc[9, ["accounts", "events", "first_generation", "depth"]].tolist() == [4, 4, 3, 2]
    assert t.loc[3, "notional"] == pytest.approx(370.0)  # the ADL fill left out
    assert t.loc[3, "branching"] == pytest.approx(4 / 6)
    assert t.loc[3, "root"] == "step:3"
    assert largest_cascade(t) == 5

    g = generation_sizes(hand_liquidations())
    assert g.values.tolist() == [[3, 1, 2], [3, 2, 3], [3, 3, 1], [7, 1, 1], [9, 1, 3], [9, 2, 1]]

    d = cascade_size_distribution(t)
    assert d["size"].tolist() == [1, 4, 5] and d["count"].tolist() == [1, 1, 1]
    np.testing.assert_allclose(d["ccdf"], [1.0, 2 / 3, 1 / 3])


def test_branching_by_hand():
    # generations: step 3: 2, 3, 1; step 7: 1; step 9: 3, 1
    b = branching_by_generation(hand_liquidations())
    assert b["generation"].tolist() == [1, 2, 3]
    assert b["parents"].tolist() == [6, 4, 1]
    assert b["children"].tolist() == [4, 1, 0]
    assert b["cascades"].tolist() == [3, 2, 1]
    np.testing.assert_allclose(b["ratio"], [4 / 6, 1 / 4, 0.0])
    assert mean_branching(hand_liquidations()) == pytest.approx(5 / 11)


def _paths_downstream(event, edges, value):
    """Brute force: sum over every path from ``event`` of (product of weights) x value."""
    step, rnd, trader = event
    total_n, total_c = 0.0, 0.0
    for s, r, src, dst, w in edges:
        if s == step and r == rnd + 1 and src == trader:
            n, c = _paths_downstream((s, r, dst), edges, value)
            total_n += w * (value[(s, r, dst)] + n)
            total_c += w * (1.0 + c)
    return total_n, total_c


def _debtrank(seed, edges, value):
    """DebtRank (Battiston et al. 2012) on the event DAG, seeded by one fully distressed event:
    states undistressed / distressed / inactive, h capped at 1, each node propagating once."""
    nodes = set(value)
    h = {e: 0.0 for e in nodes}
    state = {e: "U" for e in nodes}
    h[seed], state[seed] = 1.0, "D"
    while any(s == "D" for s in state.values()):
        active = [e for e in nodes if state[e] == "D"]
        new_h = dict(h)
        for s, r, src, dst, w in edges:
            u, v = (s, r - 1, src), (s, r, dst)
            if u in active and state.get(v) != "I":
                new_h[v] = min(1.0, new_h[v] + w * h[u])
        for e in nodes:
            if state[e] == "D":
                state[e] = "I"
            elif new_h[e] > 0 and state[e] == "U":
                state[e] = "D"
        h = new_h
    total = sum(value.values())
    return sum(h[e] * value[e] for e in nodes) / total - value[seed] / total


def test_systemic_importance_matches_path_enumeration_and_debtrank():
    liq = hand_liquidations()
    value = {}
    for r in liq[liq["kind"] != "adl"].itertuples():
        key = (r.step, r.round, r.trader_id)
        value[key] = value.get(key, 0.0) + r.notional
    trader_edges = [e for e in HAND_EDGES if e[2] is not None]
    si = systemic_importance(hand_edges(), liq).set_index("trader_id")

    # by hand: D(3,2,3) = .2 x 10; D(3,2,4) = .3 x 10; D(3,2,1) = .5 x 10;
    # D(3,1,1) = .6 (40 + 2) + .5 (60 + 3) + .7 (30 + 5) = 81.2, trader 1 in all: 86.2
    assert si.loc[1, "downstream_notional"] == pytest.approx(86.2)
    assert si.loc[2, "downstream_notional"] == pytest.approx(0.4 * 42 + 0.5 * 63 + 0.3 * 35)
    assert si.loc[1, "events"] == 2 and si.loc[1, "liquidated_notional"] == pytest.approx(180.0)
    total = sum(value.values())
    for trader in si.index:
        mine = [e for e in value if e[2] == trader]
        n = sum(_paths_downstream(e, trader_edges, value)[0] for e in mine)
        c = sum(_paths_downstream(e, trader_edges, value)[1] for e in mine)
        assert si.loc[trader, "downstream_notional"] == pytest.approx(n, abs=1e-12)
        assert si.loc[trader, "downstream_events"] == pytest.approx(c, abs=1e-12)
        assert si.loc[trader, "debtrank"] == pytest.approx(n / total, abs=1e-12)
    for seed in value:
        expected = _debtrank(seed, trader_edges, value)
        got = _paths_downstream(seed, trader_edges, value)[0] / total
        assert got == pytest.approx(expected, abs=1e-12)
    assert si.index[0] == 1  # sorted by importance
    assert 99 not in si.index


def test_cascade_metrics_headline():
    m = cascade_metrics(hand_liquidations(), hand_edges())
    assert m["cascades"] == 3 and m["largest_cascade"] == 5 and m["largest_cascade_step"] == 3
    assert m["max_rounds"] == 3 and m["mean_cascade_size"] == pytest.approx(10 / 3)
    assert m["mean_branching"] == pytest.approx(5 / 11)
    assert m["most_systemic"][0]["trader_id"] == 1
    assert m["most_systemic"][0]["debtrank"] == pytest.approx(86.2 / 385.0)
    empty = cascade_metrics(hand_liquidations().iloc[:0], hand_edges().iloc[:0])
    assert empty["cascades"] == 0 and empty["largest_cascade"] == 0
    assert empty["mean_branching"] == 0.0 and empty["most_systemic"] == []


def test_cascade_subgraph():
    g = cascade_subgraph(hand_edges(), 3)
    assert set(g.nodes) == {"step:3", 1, 2, 3, 4, 5}
    assert g.nodes[1]["round"] == 1 and g.nodes[1]["rounds"] == 2 and g.nodes[5]["round"] == 3
    assert g.edges[1, 1]["weight"] == pytest.approx(0.7)
    assert g.edges["step:3", 2]["weight"] == 1.0
    assert set(cascade_subgraph(hand_edges(), 7).nodes) == {"step:7", 6}


def test_amplification_by_hand():
    market = pd.DataFrame(
        {
            "step": [1, 2, 3, 1, 2, 3],
            "asset": ["BTC"] * 3 + ["ETH"] * 3,
            "price": [95.0, 81.0, 85.0, 10.0, 10.0, 10.0],
            "fundamental": [95.0, 90.0, 92.0, 10.0, 10.0, 10.0],
        }
    )
    a = amplification(market, initial_price={"BTC": 100.0, "ETH": 10.0})
    # price 100 -> 81 = (0.9)^2 of the way the fundamental went (100 -> 90)
    assert a["BTC"] == pytest.approx(math.log(100 / 81) / math.log(100 / 90))
    assert a["BTC"] == pytest.approx(2.0)
    assert a["ETH"] == 1.0 and a["worst"] == pytest.approx(2.0)
    # without the start, the paths begin at step 1
    assert amplification(market)["BTC"] == pytest.approx(math.log(95 / 81) / math.log(95 / 90))


def _accounts():
    return pd.DataFrame(
        {
            "trader_id": [1, 2, 3],
            "initial_quantity_BTC": [1.0, -2.0, 0.0],
            "initial_quantity_ETH": [10.0, 5.0, -4.0],
            "quantity_BTC": [0.0, -2.0, 0.0],
            "quantity_ETH": [0.0, 5.0, -4.0],
            "entry_price_BTC": [100.0, 100.0, 0.0],
            "entry_price_ETH": [10.0, 10.0, 10.0],
        }
    )


def test_exposure_network_and_projections():
    b = exposure_network(_accounts(), prices={"BTC": 100.0, "ETH": 10.0})
    assert b.number_of_edges() == 5
    assert b.edges[1, "asset:BTC"]["notional"] == 100.0
    assert b.edges[2, "asset:BTC"]["side"] == "short"
    assert b.edges[3, "asset:ETH"]["quantity"] == -4.0
    assets = overlap_projection(b, "assets")
    # traders 1 and 2 hold both: min(100, 100) + min(200, 50)
    assert assets.edges["asset:BTC", "asset:ETH"]["holders"] == 2
    assert assets.edges["asset:BTC", "asset:ETH"]["weight"] == pytest.approx(150.0)
    traders = overlap_projection(b, "traders")
    assert traders.edges[1, 2]["common"] == 2
    assert traders.edges[1, 2]["weight"] == pytest.approx(100.0 + 50.0)
    assert traders.edges[1, 3]["weight"] == pytest.approx(40.0)
    assert traders.edges[2, 3]["common"] == 1
    final = exposure_network(_accounts(), which="final")
    assert final.degree(1) == 0 and final.number_of_edges() == 3
    with pytest.raises(ValueError, match="max_nodes"):
        overlap_projection(b, "traders", max_nodes=2)


def test_metrics_agree_with_the_graph_of_a_run():
    """Independent routes to the same numbers: the fills table and the recorded graph."""
    cfg = build_config(small_config(steps=15))
    m = ContagionModel(cfg, create_agents=False).run()
    liq = m.tables()["liquidations"]
    edges = m.recorder.edges_table()
    table = cascades(liq)
    assert len(table) > 0 and table["depth"].max() >= 2  # a real multi-round cascade
    # every step root's targets in the edge table are that step's liquidated accounts
    for row in table.itertuples():
        targets = edges.loc[edges["step"] == row.step, ["round", "target"]].drop_duplicates()
        assert len(targets) == row.events
        assert targets["target"].nunique() == row.accounts
    # branching ratio of generation r = weight flowing from generation r to r + 1 / n_r
    b = branching_by_generation(liq).set_index("generation")
    gs = generation_sizes(liq)
    for r in b.index:
        flow = edges.loc[(edges["round"] == r + 1) & (edges["source_kind"] != "step"), "weight"]
        n_r = gs.loc[gs["round"] == r, "accounts"].sum()
        assert b.loc[r, "ratio"] == pytest.approx(flow.sum() / n_r, abs=1e-9)
    g = m.contagion_graph
    si = systemic_importance(edges, liq)
    assert set(si["trader_id"]) == {n for n, d in g.nodes(data=True) if d["kind"] == "trader"}
    assert (si["debtrank"] >= 0).all() and si["debtrank"].max() < 1


@pytest.mark.parametrize("string_ids", [False, True])
def test_summary_from_arrays_equals_the_measures_of_the_tables(string_ids):
    """summary.json's cascade figures and amplification come from the model's arrays (the fill
    log, the recorder's edges, the market history); the same functions given the run's tables
    give the same values, to the bit, with integer and with string ids."""
    import dataclasses

    from model.population import generate_population

    cfg = build_config(small_config(steps=15))
    population = None
    if string_ids:
        population = generate_population(cfg, np.random.default_rng(cfg.seed))
        ids = np.array([f"acct-{i:04d}" for i in population.ids[::-1]], dtype=object)
        population = dataclasses.replace(population, ids=ids)
    m = ContagionModel(cfg, population=population, create_agents=False).run()
    tables = m.tables()
    summary = m.summary()
    figures = cascade_metrics(tables["liquidations"], m.recorder.edges_table())
    assert summary["cascades"] > 0 and figures["most_systemic"]
    for key in ("cascades", "largest_cascade", "largest_cascade_step", "mean_cascade_size"):
        assert summary[key] == figures[key]
    assert summary["mean_branching"] == figures["mean_branching"]
    assert summary["branching_by_generation"] == figures["branching_by_generation"]
    assert summary["most_systemic"] == figures["most_systemic"]
    assert summary["max_debtrank"] == figures["most_systemic"][0]["debtrank"]
    assert summary["max_rounds"] == int(tables["steps"]["rounds"].max())
    assert summary["adl_notional"] == float(tables["steps"]["adl_notional"].sum())
    p0 = dict(zip(m.symbols, m.market.initial_price.tolist(), strict=True))
    amp = amplification(tables["market"], p0)
    for symbol in m.symbols:  # ("worst" is the asset of the worst drawdown's, not the largest)
        assert summary["amplification"][symbol] == amp[symbol]


# Runs whose cascade figures the model's arrays and its tables must give alike: name ->
# (config overrides of small_config, string ids). small_config has two assets, cross margin
# and partial liquidations.
_SHOCKS = [
    {"step": 10, "asset": "BTC", "return": -0.08},
    {"step": 20, "asset": "ETH", "return": -0.1},
    {"step": 30, "asset": "BTC", "return": -0.08},
]
_RUNS = {
    "two assets, partial": ({"steps": 30}, False),
    "string ids": ({"steps": 30}, True),
    "truncated graph": ({"steps": 30, "contagion": {"max_edges": 40}}, False),
    "reentry": ({"steps": 40, "traders": {"reentry_steps": 2}, "shocks": _SHOCKS}, False),
    "one asset, full, ADL": (
        {
            "steps": 30,
            "assets": [{"symbol": "BTC", "price": 60000.0, "depth": 2.0e6, "max_leverage": 50}],
            "traders": {"assets_per_trader": 1},
            "margin": {"mode": "isolated", "liquidation": "full"},
        },
        False,
    ),
    "nothing liquidated": ({"steps": 10, "shocks": [], "traders": {"leverage": 1.5}}, False),
}


def _finished_run(name: str):
    """The model of ``_RUNS[name]``, run."""
    import dataclasses

    from model.population import generate_population

    overrides, string_ids = _RUNS[name]
    data = small_config(**{k: v for k, v in overrides.items() if k != "traders"})
    data["traders"] = {**data["traders"], **overrides.get("traders", {})}
    cfg = build_config(data)
    population = None
    if string_ids:
        population = generate_population(cfg, np.random.default_rng(cfg.seed))
        ids = np.array([f"acct-{i:04d}" for i in population.ids[::-1]], dtype=object)
        population = dataclasses.replace(population, ids=ids)
    return ContagionModel(cfg, population=population, create_agents=False).run()


def _reach_by_levels(ev, edges: pd.DataFrame):
    """Each event's downstream notional and events (:func:`systemic_importance`) as they
    were first computed: every trader edge's ends found in a dict of the events, then one
    ``np.bincount`` per round over the edges sorted stably by depth, deepest first."""
    ids = ev.traders[ev.trader_code].tolist()
    index = {
        key: i for i, key in enumerate(zip(ev.step.tolist(), ev.round.tolist(), ids, strict=True))
    }
    t = edges[(edges["source_kind"] == "trader").to_numpy(dtype=bool)]
    keys = zip(
        t["step"].tolist(),
        t["round"].tolist(),
        t["source"].to_numpy(dtype=object).tolist(),
        t["target"].to_numpy(dtype=object).tolist(),
        strict=True,
    )
    ends = [(index.get((s, r - 1, a), -1), index.get((s, r, b), -1)) for s, r, a, b in keys]
    src, dst = np.array(ends, dtype=np.int64).reshape(-1, 2).T
    known = (src >= 0) & (dst >= 0)
    src, dst = src[known], dst[known]
    w, rnd = t["weight"].to_numpy()[known], t["round"].to_numpy()[known]
    down_n, down_c = np.zeros(len(ev)), np.zeros(len(ev))
    if rnd.size:
        depth = rnd.max() - rnd
        order = np.argsort(depth, kind="stable")
        src, dst, w, depth = src[order], dst[order], w[order], depth[order]
        for level in np.unique(depth).tolist():
            s, d, ww = src[depth == level], dst[depth == level], w[depth == level]
            reach_n, reach_c = ev.notional + down_n, 1.0 + down_c
            down_n += np.bincount(s, weights=ww * reach_n[d], minlength=len(ev))
            down_c += np.bincount(s, weights=ww * reach_c[d], minlength=len(ev))
    return down_n, down_c


@pytest.mark.parametrize("name", list(_RUNS))
def test_cascade_metrics_of_the_recorders_batches_equal_those_of_the_tables(name):
    """summary.json's cascade figures from the fill log and the recorder's edge batches equal
    those of the liquidations and edges tables, every float to the bit, and DebtRank equals
    the reach computed edge by edge as it first was (a dict of the events, one bincount per
    round), on runs with a truncated graph, string ids, accounts liquidated again after
    re-entering, one or two assets, partial or full liquidations with ADL, and none."""
    from model.metrics import _Events, _group_sums

    m = _finished_run(name)
    liq, edges = m.engine.fills.table(m.symbols), m.recorder.edges_table()
    from_arrays = cascade_metrics(m.engine.fills.columns(), m.recorder.edge_batches())
    assert from_arrays == cascade_metrics(liq, edges)
    assert m.recorder.truncated == (name == "truncated graph")
    liquidated = liq[~liq["kind"].isin(["adl", "collateral"])]
    assert from_arrays["cascades"] == liquidated["step"].nunique()
    if name == "nothing liquidated":
        assert len(liq) == 0 and from_arrays["most_systemic"] == []
        return
    steps_per_trader = liquidated.groupby("trader_id", observed=True)["step"].nunique()
    assert steps_per_trader.max() >= (6 if name == "reentry" else 1)
    kinds = set(liq["kind"].astype(str))
    if name == "two assets, partial":
        assert len(m.symbols) == 2 and "partial" in kinds
    if name == "one asset, full, ADL":
        assert len(m.symbols) == 1 and "adl" in kinds and "partial" not in kinds
    ev = _Events(liq)
    down_n, down_c = _reach_by_levels(ev, edges)
    assert down_n.max() > 0
    per_trader = _group_sums(ev.trader_code, down_n, ev.traders.size)
    debtrank = per_trader / float(ev.notional.sum())
    top = np.lexsort((np.arange(debtrank.size), -debtrank))[:5]
    assert from_arrays["most_systemic"] == [
        {"trader_id": plain_id(ev.traders[i]), "debtrank": float(debtrank[i])} for i in top
    ]
    table = systemic_importance(edges, liq).set_index("trader_id")
    table = table.loc[pd.Index(ev.traders, dtype=table.index.dtype)]
    np.testing.assert_array_equal(table["downstream_notional"], per_trader)
    counts = _group_sums(ev.trader_code, down_c, ev.traders.size)
    np.testing.assert_array_equal(table["downstream_events"], counts)


def _interleaved(generation: np.ndarray, rng) -> np.ndarray:
    """A permutation of the entries that interleaves generations at random and keeps each
    generation's entries in their order."""
    n = generation.size
    slots = np.argsort(generation[rng.permutation(n)], kind="stable")
    order = np.empty(n, dtype=np.int64)
    order[slots] = np.argsort(generation, kind="stable")
    return order


def test_cascade_metrics_of_rows_and_batches_out_of_order_are_the_same():
    """Fills and edges out of step order (each generation's edges in their order), and the
    recorder's batches out of order (a generation's batches apart from one another), give
    the figures of the ordered ones to the bit: each source's sum adds the same weights in
    the same order."""
    from model.contagion import EdgeBatches

    rng = np.random.default_rng(5)
    m = _finished_run("reentry")
    liq, edges = m.engine.fills.table(m.symbols), m.recorder.edges_table()
    expected = cascade_metrics(liq, edges)
    shuffled_liq = liq.iloc[rng.permutation(len(liq))].reset_index(drop=True)
    key = edges["step"].to_numpy() * 100 + edges["round"].to_numpy()
    shuffled_edges = edges.iloc[_interleaved(key, rng)].reset_index(drop=True)
    assert not shuffled_edges["step"].is_monotonic_increasing
    assert cascade_metrics(shuffled_liq, shuffled_edges) == expected

    b = m.recorder.edge_batches()
    # split each batch in two, then interleave the halves of different generations
    stop = np.cumsum(b.size)
    start = stop - b.size
    half = b.size // 2
    lo = np.column_stack([start, start + half]).ravel()
    hi = np.column_stack([start + half, stop]).ravel()
    order = _interleaved(np.repeat(b.step * 100 + b.round, 2), rng)
    take = np.concatenate([np.arange(lo[k], hi[k]) for k in order.tolist()])
    moved = EdgeBatches(
        step=np.repeat(b.step, 2)[order],
        round=np.repeat(b.round, 2)[order],
        size=(hi - lo)[order],
        src=b.src[take],
        dst=b.dst[take],
        weight=b.weight[take],
        ids=b.ids,
    )
    assert cascade_metrics(m.engine.fills.columns(), moved) == expected


def test_distinct_values_and_order_checks_equal_numpy_unique_and_lexsort():
    """Trader codes from a table of the ids present equal ``np.unique``'s (ids small or
    large, negative, strings, none), and the order check says whether ``np.lexsort`` would
    leave the entries where they are."""
    from model.metrics import _distinct, _in_order

    rng = np.random.default_rng(2)
    cases = [
        rng.integers(0, 50, 200),
        rng.integers(0, 10**12, 200),
        rng.integers(-5, 50, 200),
        np.array([f"t{i}" for i in rng.integers(0, 30, 100)], dtype=object),
        np.zeros(0, dtype=np.int64),
    ]
    for values in cases:
        distinct, code = _distinct(values)
        want, inverse = np.unique(values, return_inverse=True)
        assert distinct.dtype == want.dtype
        np.testing.assert_array_equal(distinct, want)
        np.testing.assert_array_equal(code, inverse.ravel())
    for _ in range(200):
        keys = [np.sort(rng.integers(0, 3, 6)), rng.integers(0, 3, 6), rng.integers(0, 3, 6)]
        unmoved = (np.lexsort(keys[::-1]) == np.arange(6)).all()
        assert _in_order(*keys) == unmoved


def test_events_found_by_table_and_by_binary_search_alike(monkeypatch):
    """The edges' events are looked up in a dense table when it is small enough, else by
    binary search: both give the same DebtRank to the bit (integer and string ids)."""
    import model.metrics as metrics

    cfg = build_config(small_config(steps=15))
    m = ContagionModel(cfg, create_agents=False).run()
    liq, edges = m.tables()["liquidations"], m.recorder.edges_table()
    named_liq, named_edges = liq.copy(), edges.copy()
    named_liq["trader_id"] = pd.array([f"t{i}" for i in liq["trader_id"]], dtype="string")
    named_edges["target"] = pd.array([f"t{i}" for i in edges["target"]], dtype="string")
    named_edges["source"] = pd.array(
        [None if pd.isna(i) else f"t{i}" for i in edges["source"]], dtype="string"
    )
    for e, lq in ((edges, liq), (named_edges, named_liq)):
        dense = systemic_importance(e, lq)
        monkeypatch.setattr(metrics, "_DENSE", 0)
        searched = systemic_importance(e, lq)
        monkeypatch.undo()
        pd.testing.assert_frame_equal(dense, searched, check_exact=True)
        assert dense["downstream_events"].gt(0).any()


def _groupby_reference(liq: pd.DataFrame) -> dict:
    """The cascade measures written with pandas' groupby (brute force for the array code)."""
    ev = (
        liq[liq["kind"] != "adl"]
        .groupby(["step", "round", "trader_id"], sort=True, observed=True)["notional"]
        .sum()
        .reset_index()
    )
    by_step = ev.groupby("step", sort=True)
    firsts = ev[ev["round"] == 1].groupby("step").size()
    gens = ev.groupby(["step", "round"]).size()
    return {
        "event_notional": ev["notional"].to_numpy(),
        "accounts": by_step["trader_id"].nunique().to_numpy(),
        "events": by_step.size().to_numpy(),
        "first": firsts.reindex(by_step.size().index, fill_value=0).to_numpy(),
        "depth": by_step["round"].max().to_numpy(),
        "notional": by_step["notional"].sum().to_numpy(),
        "generations": gens.reset_index().to_numpy().tolist(),
        "per_trader": ev.groupby("trader_id", sort=True)["notional"].sum(),
    }


@pytest.mark.parametrize("seed", range(6))
def test_cascade_measures_equal_a_groupby_formulation(seed):
    # shuffled fills (the sums then run over unsorted groups), many fills per event, ADL
    # fills, integer and string ids
    rng = np.random.default_rng(seed)
    n = 400
    liq = pd.DataFrame(
        {
            "step": rng.integers(1, 7, n),
            "round": rng.integers(1, 4, n),
            "trader_id": rng.integers(0, 9, n),
            "notional": rng.random(n) * 10.0 ** rng.integers(-3, 9, n),
            "kind": pd.Categorical.from_codes(rng.integers(0, 3, n), ["full", "partial", "adl"]),
        }
    )
    if seed % 2:
        liq = liq.sort_values(["step", "round", "trader_id"], kind="stable", ignore_index=True)
    if seed >= 3:
        liq["trader_id"] = pd.array([f"t{i}" for i in liq["trader_id"]], dtype=pd.StringDtype())
    ref = _groupby_reference(liq)
    table = cascades(liq)
    steps = sorted(liq.loc[liq["kind"] != "adl", "step"].unique().tolist())
    assert cascade_sizes(liq).tolist() == [
        [s, a] for s, a in zip(steps, ref["accounts"].tolist(), strict=True)
    ]
    for column, key in [("accounts", "accounts"), ("events", "events"), ("depth", "depth")]:
        assert table[column].tolist() == ref[key].tolist()
    assert table["first_generation"].tolist() == ref["first"].tolist()
    np.testing.assert_allclose(table["notional"], ref["notional"], rtol=1e-12)
    assert generation_sizes(liq).to_numpy().tolist() == ref["generations"]
    no_edges = hand_edges().iloc[:0]
    si = systemic_importance(no_edges, liq)
    per = si.set_index("trader_id")["liquidated_notional"].sort_index()
    assert per.index.tolist() == ref["per_trader"].index.tolist()
    np.testing.assert_allclose(per.to_numpy(), ref["per_trader"].to_numpy(), rtol=1e-12)
    assert (si["events"] > 0).all() and si["downstream_events"].eq(0).all()


def _random_layered_cascades(rng, string_ids: bool):
    """Liquidations of a few steps (rounds 1-4, traders 0-7, some accounts liquidated in
    several rounds) and edges from each round's events to the next round's, plus edges whose
    ends are no events of the table (a source not liquidated the round before, a step or a
    round with no liquidations, an unknown or negative id): those carry no reach."""
    rows, events = [], []
    for step in (2, 5, 6):
        for rnd in range(1, int(rng.integers(2, 5)) + 1):
            for trader in sorted(rng.choice(8, size=int(rng.integers(1, 5)), replace=False)):
                events.append((step, rnd, int(trader)))
                for _ in range(int(rng.integers(1, 3))):  # one event, one or two fills
                    rows.append((step, rnd, int(trader), float(rng.random() * 100), "full"))
    valid = []
    for step, rnd, target in events:
        sources = [e[2] for e in events if e[0] == step and e[1] == rnd - 1]
        for source in sources:
            if rng.random() < 0.7:
                valid.append((step, rnd, source, target, float(rng.random())))
    liquidated = {e[2] for e in events}
    stray = [
        (2, 2, next(t for t in range(8) if (2, 1, t) not in events), events[0][2], 0.5),
        (9, 2, events[0][2], events[0][2], 0.5),  # a step with no liquidations
        (5, 9, events[0][2], events[0][2], 0.5),  # a round beyond every cascade
        (5, 2, 40, events[0][2], 0.5),  # an id never liquidated
        (5, 2, -3, events[0][2], 0.5),
    ]
    assert not liquidated & {40, -3}
    name = (lambda t: f"t{t}") if string_ids else (lambda t: t)
    liq = pd.DataFrame(rows, columns=["step", "round", "trader_id", "notional", "kind"])
    liq["trader_id"] = [name(t) for t in liq["trader_id"]]
    edges = pd.DataFrame(valid + stray, columns=["step", "round", "source", "target", "weight"])
    edges["source_kind"] = pd.Categorical(["trader"] * len(edges), ["trader", "step", "others"])
    for column in ("source", "target"):
        edges[column] = [name(t) for t in edges[column]]
    value = liq.groupby(["step", "round", "trader_id"])["notional"].sum().to_dict()
    named = [(s, r, name(a), name(b), w) for s, r, a, b, w in valid]
    return liq, edges, value, named


@pytest.mark.parametrize("seed", range(8))
def test_debtrank_of_random_cascades_equals_path_enumeration(seed, monkeypatch):
    """DebtRank on random layered cascades (several rounds per step, traders liquidated in
    several rounds, stray edges) equals the sum over every path, found by brute force, and
    the events are found alike by dense tables and by binary search, to the bit."""
    import model.metrics as metrics

    liq, edges, value, valid = _random_layered_cascades(
        np.random.default_rng(seed), string_ids=seed % 2 == 1
    )
    si = systemic_importance(edges, liq)
    total = sum(value.values())
    assert si["downstream_events"].gt(0).any()
    for row in si.itertuples():
        mine = [e for e in value if e[2] == row.trader_id]
        reach = [_paths_downstream(e, valid, value) for e in mine]
        assert row.downstream_notional == pytest.approx(sum(r[0] for r in reach), rel=1e-12)
        assert row.downstream_events == pytest.approx(sum(r[1] for r in reach), rel=1e-12)
        assert row.debtrank == pytest.approx(sum(r[0] for r in reach) / total, rel=1e-12)
    # summary.json's five (cascade_metrics ranks without the other columns): the table's head
    head = si.head(5)
    top = [(t["trader_id"], t["debtrank"]) for t in cascade_metrics(liq, edges)["most_systemic"]]
    assert top == [
        (plain_id(t), d) for t, d in zip(head["trader_id"], head["debtrank"], strict=True)
    ]
    monkeypatch.setattr(metrics, "_DENSE", 0)
    pd.testing.assert_frame_equal(systemic_importance(edges, liq), si, check_exact=True)


@pytest.mark.parametrize("sorted_groups", [False, True])
def test_group_sums_of_several_columns_equal_one_call_per_column(sorted_groups):
    """Columns summed together are summed as each would be alone, to the bit: NaN skipped,
    an infinite value without compensation, groups in table order or sorted."""
    from model.metrics import _group_sums

    rng = np.random.default_rng(3)
    group = rng.integers(0, 7, 300)
    if sorted_groups:
        group = np.sort(group)
    values = rng.random((300, 3)) * 10.0 ** rng.integers(-8, 9, (300, 3))
    values[5, 1], values[9, 2] = np.nan, np.inf
    both = _group_sums(group, values, 8)
    assert both.shape == (8, 3) and both[7].tolist() == [0.0, 0.0, 0.0]  # group 7 is empty
    for j in range(3):
        alone = _group_sums(group, np.ascontiguousarray(values[:, j]), 8)
        np.testing.assert_array_equal(both[:, j], alone)
        # and against the sum in each group's order with Kahan's compensation, by hand
        for g in range(8):
            total = comp = 0.0
            for x in values[group == g, j].tolist():
                if x != x:
                    continue
                y = x - comp
                t = total + y
                comp = (t - total) - y if math.isfinite(t - total) else 0.0
                total = t
            if not sorted_groups:
                assert alone[g] == total or (math.isnan(alone[g]) and math.isnan(total))
