"""Account ids as given: a population file's ids, strings or integers, in every output.

The check is a twin run. The same accounts are run twice, once named by strings (hex
addresses, ids that look like numbers, unicode, XML's special characters) and once by integers
(each string's rank among them, so the book's rows, and with them the whole run, are the same).
Every output of the string run must then be the integer run's with each integer replaced by its
string: the tables, the contagion graph in all three files, the summary, the cascade drawing's
layout and ``model.trader``.
"""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import tomli_w

from experiments.cascade_drawing import cascade_layout
from experiments.cli import main
from experiments.narration import CascadeNarrator
from model import ContagionModel, load_config
from model.ids import find_row, id_problem, ids_from_text

DEMO = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "demo.toml"

# Ids a population file may hold: kept exactly, none of them a number.
NAMED = [
    "007",
    "42",
    "0x1f",
    "0x3f5c9a7e21b04d8f6a1c2e3b4d5f60718293a4b5",
    "trader é",
    "交易者-1",
    "Ωmega",
    "a&b<c>\"q'",
    "NA",
    "1.5",
    "-0",
    "  spaced id ",
]


def population(ids) -> pd.DataFrame:
    """40 leveraged longs (every third also long ETH), enough for a cascade of several
    rounds after a 4% BTC shock on a thin book."""
    rng = np.random.default_rng(1)
    rows = []
    for k, tid in enumerate(ids):
        lev = 8 + 30 * rng.random()
        coll = 1000 * (1 + rng.random())
        if k % 3 == 0:
            rows.append((tid, coll, "BTC", lev * coll / 2 / 60000, 60000.0))
            rows.append((tid, coll, "ETH", lev * coll / 2 / 3000, 3000.0))
        else:
            rows.append((tid, coll, "BTC", lev * coll / 60000, 60000.0))
    return pd.DataFrame(
        rows, columns=["trader_id", "collateral", "asset", "quantity", "entry_price"]
    )


def string_ids() -> list[str]:
    rng = np.random.default_rng(2)
    return NAMED + [f"0x{int(x):040x}" for x in rng.integers(1, 2**62, 28)]


CONFIG = {
    "name": "ids",
    "seed": 3,
    "steps": 4,
    "market": {"volatility": 0.0, "correlation": 0.0},
    "assets": [
        {"symbol": "BTC", "price": 60000.0, "depth": 1.0e5, "max_leverage": 50},
        {"symbol": "ETH", "price": 3000.0, "depth": 5.0e4, "max_leverage": 50},
    ],
    "margin": {"insurance_fund": 1.0e5},
    "shocks": [{"step": 2, "asset": "BTC", "return": -0.04}],
    "output": {"graph": ["graphml.gz", "graphml", "json"]},  # every graph file format
}


def run(folder, accounts: pd.DataFrame, fmt: str = "csv"):
    """Write the accounts and a config naming them, run ``contagion run``; return the folder."""
    folder.mkdir()
    name = f"accounts.{fmt}"
    if fmt == "csv":
        accounts.to_csv(folder / name, index=False)
    else:
        accounts.to_parquet(folder / name)
    config = folder / "c.toml"
    config.write_text(tomli_w.dumps({**CONFIG, "traders": {"population": name}}))
    assert main(["run", str(config), "--out", str(folder / "run")]) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """(string run, integer run, string -> integer): the same accounts under both names."""
    ids = string_ids()
    as_int = {s: i for i, s in enumerate(sorted(ids))}  # rank: the book's row order
    base = tmp_path_factory.mktemp("twins")
    text = run(base / "text", population(ids))
    numbers = run(base / "numbers", population([as_int[s] for s in ids]))
    return text, numbers, as_int


def renamed(df: pd.DataFrame, columns, to_text: dict) -> pd.DataFrame:
    """The integer run's table with ids in ``columns`` replaced by their strings."""
    out = df.copy()
    for c in columns:
        out[c] = pd.array([None if pd.isna(x) else to_text[int(x)] for x in df[c]], "string")
    return out


@pytest.mark.slow
def test_the_cascade_is_real(twins):
    text, _, _ = twins
    edges = pd.read_parquet(text / "contagion_edges.parquet")
    # liquidations caused by liquidations, three rounds deep or more
    assert (edges.loc[edges["source_kind"] == "trader", "round"] >= 3).any()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("table", "columns"),
    [
        ("accounts", ["trader_id"]),
        ("liquidations", ["trader_id"]),
        ("contagion_edges", ["source", "target"]),
    ],
)
def test_tables_carry_the_ids_as_given(twins, table, columns):
    text, numbers, as_int = twins
    to_text = {i: s for s, i in as_int.items()}
    got = pd.read_parquet(text / f"{table}.parquet")
    ints = pd.read_parquet(numbers / f"{table}.parquet")
    for c in columns:
        assert pd.api.types.is_string_dtype(got[c].dtype)
        assert pd.api.types.is_integer_dtype(ints[c].dtype)
    assert set(got[columns[-1]].dropna()) <= set(as_int)
    pd.testing.assert_frame_equal(got, renamed(ints, columns, to_text), check_dtype=False)
    if table == "accounts":
        assert sorted(got["trader_id"]) == sorted(as_int)  # every account, exactly as written


@pytest.mark.slow
def test_the_graph_files_carry_the_ids_and_join_the_accounts(twins):
    text, numbers, as_int = twins
    to_text = {i: s for s, i in as_int.items()}
    g = nx.read_graphml(text / "contagion.graphml.gz")
    h = nx.read_graphml(numbers / "contagion.graphml.gz")
    traders = {n for n, d in g.nodes(data=True) if d["kind"] == "trader"}
    # GraphML names nodes by text: the integer run's trader nodes read back as digits
    back = {n: to_text[int(n)] for n, d in h.nodes(data=True) if d["kind"] == "trader"}
    assert traders == set(back.values()) and traders <= set(as_int)
    assert set(g.edges) == set(nx.relabel_nodes(h, back).edges)
    assert {"NA", "007", "a&b<c>\"q'", "  spaced id "} & traders  # the awkward ones arrived
    # the join of docs/contagion.md: string ids as they are, integer ids through their text
    accounts = pd.read_parquet(text / "accounts.parquet")
    nodes = pd.DataFrame([{"trader_id": n, **d} for n, d in g.nodes(data=True)])
    joined = nodes[nodes["kind"] == "trader"].merge(accounts, on="trader_id")
    assert len(joined) == len(traders)
    np.testing.assert_array_equal(joined["events"], joined["liquidations"])
    accounts_int = pd.read_parquet(numbers / "accounts.parquet")
    nodes_int = pd.DataFrame([{"trader_id": n, **d} for n, d in h.nodes(data=True)])
    nodes_int = nodes_int[nodes_int["kind"] == "trader"].astype({"trader_id": "int64"})
    assert len(nodes_int.merge(accounts_int, on="trader_id")) == len(traders)
    for folder in (text, numbers):
        link = nx.node_link_graph(
            json.loads((folder / "contagion.json").read_text()), edges="edges"
        )
        graphml = nx.read_graphml(folder / "contagion.graphml")
        assert {str(n) for n in link.nodes} == set(graphml.nodes)
        assert nx.utils.graphs_equal(graphml, nx.read_graphml(folder / "contagion.graphml.gz"))
    link = nx.node_link_graph(json.loads((text / "contagion.json").read_text()), edges="edges")
    assert {n for n, d in link.nodes(data=True) if d["kind"] == "trader"} == traders


@pytest.mark.slow
def test_the_summary_names_the_ids(twins):
    text, numbers, as_int = twins
    got = json.loads((text / "summary.json").read_text())
    ints = json.loads((numbers / "summary.json").read_text())
    to_text = {i: s for s, i in as_int.items()}
    for row in ints["most_systemic"]:
        row["trader_id"] = to_text[row["trader_id"]]
    # the provenance block says when and from which config each ran: not a result
    assert got.pop("provenance")["seed"] == ints.pop("provenance")["seed"]
    assert got == {**ints, "name": got["name"]}
    assert all(isinstance(r["trader_id"], str) for r in got["most_systemic"])
    assert (text / "cascade.png").stat().st_size > 0


@pytest.mark.slow
def test_the_model_and_its_drawing_use_the_ids(twins):
    text, numbers, as_int = twins
    to_text = {i: s for s, i in as_int.items()}
    m = ContagionModel(load_config(text.parent / "c.toml"))
    stories = CascadeNarrator(m, write=lambda line: None).stories  # the narration listens too
    m.run()
    assert stories and m.book.ids.dtype == object
    assert m.trader("007").trader_id == "007" and m.trader("NA").trader_id == "NA"
    with pytest.raises(KeyError, match="no trader with id 7"):
        m.trader(7)  # "007" is a string: the integer 7 names no account
    agent = m.trader("0x1f")
    assert agent.liquidated == bool(m.liquidation_count[find_row(m.book.ids, "0x1f")])
    edges = pd.read_parquet(text / "contagion_edges.parquet")
    edges_int = pd.read_parquet(numbers / "contagion_edges.parquet")
    lay = cascade_layout(edges, 2)
    lay_int = cascade_layout(edges_int, 2)
    trader = lay_int.nodes["kind"] == "trader"
    expected = lay_int.nodes["trader"].where(~trader, lay_int.nodes["trader"].map(to_text))
    assert lay.nodes["trader"].tolist() == expected.tolist()
    assert lay.nodes.loc[trader, "label"].tolist() == expected[trader].tolist()
    np.testing.assert_array_equal(lay.nodes["y"], lay_int.nodes["y"])


@pytest.mark.slow
def test_parquet_keeps_string_and_integer_columns(tmp_path):
    ids = string_ids()
    text = run(tmp_path / "text", population(ids), fmt="parquet")
    assert sorted(pd.read_parquet(text / "accounts.parquet")["trader_id"]) == sorted(ids)
    big = [2**62 + k for k in range(len(ids))]  # beyond 2**53: floats would merge them
    numbers = run(tmp_path / "numbers", population(big), fmt="parquet")
    back = pd.read_parquet(numbers / "accounts.parquet")["trader_id"]
    assert back.dtype == np.int64 and back.tolist() == big


def test_integer_ids_of_a_file_stay_integers(tmp_path):
    ids = [-5, 0, 17, 2**63 - 1] + list(range(100, 136))
    out = run(tmp_path / "ints", population(ids))
    accounts = pd.read_parquet(out / "accounts.parquet")
    assert accounts["trader_id"].dtype == np.int64
    assert accounts["trader_id"].tolist() == sorted(ids)
    fills = pd.read_parquet(out / "liquidations.parquet")
    assert fills["trader_id"].dtype == np.int64 and set(fills["trader_id"]) <= set(ids)


def test_generated_ids_are_int64_row_numbers():
    cfg = load_config(DEMO, overrides={"traders.count": 300, "steps": 3, "shocks": []})
    m = ContagionModel(cfg, create_agents=False).run()
    assert m.book.ids.dtype == np.int64  # no Python object per account
    np.testing.assert_array_equal(m.book.ids, np.arange(300))
    assert m.tables()["accounts"]["trader_id"].dtype == np.int64
    assert m.trader(299).trader_id == 299


def test_an_explicit_population_with_a_shared_id_is_refused():
    from model.config import ConfigError, build_config
    from model.population import Population

    cfg = build_config({**CONFIG, "assets": CONFIG["assets"][:1]})
    one = np.ones((2, 1))
    pop = Population(np.array(["0xa", "0xa"], dtype=object), np.ones(2), one, one * 60000.0,
                     one == 0, one * 0, np.array(["hold", "hold"], dtype=object))  # fmt: skip
    with pytest.raises(ConfigError, match="population: trader id '0xa' names two accounts"):
        ContagionModel(cfg, population=pop)


# --------------------------------------------------------------------------------------------
# The rules of model.ids, one by one
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (["1", "-7", "0", "9223372036854775807"], [1, -7, 0, 2**63 - 1]),
        (["-9223372036854775808", "3"], [-(2**63), 3]),
        (["007", "42"], ["007", "42"]),  # one leading zero: every id stays text
        (["-0", "1"], ["-0", "1"]),
        (["+5", "1"], ["+5", "1"]),
        (["1.0", "2"], ["1.0", "2"]),
        (["1e3", "2"], ["1e3", "2"]),
        (["9223372036854775808", "1"], ["9223372036854775808", "1"]),  # beyond int64
        ([" 4", "5"], [" 4", "5"]),
    ],
)
def test_text_ids_are_integers_only_when_every_one_prints_back_the_same(text, expected):
    ids = ids_from_text(pd.Series(text, dtype=object))
    assert ids.tolist() == expected
    assert ids.dtype == (np.int64 if isinstance(expected[0], int) else object)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("step:3", "collide with the contagion graph's node names"),
        ("others:12:4", "collide"),
        ("tab\there", "control character"),
        ("line\nbreak", "control character"),
    ],
)
def test_ids_that_cannot_be_kept(value, words):
    assert words in id_problem(value)


@pytest.mark.parametrize("value", ["step:", "steps:3", "step:3x", "others:1", "Step:3", 42])
def test_ids_near_the_reserved_names_are_fine(value):
    assert id_problem(value) is None
