"""Fuzzing the config and population loaders: whatever the input, a valid result or a clean
one-line ConfigError, never another exception.

Accepted inputs are checked too: a config that loads is one the engine can run, a population
that loads has finite balances and margins within collateral.
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.config import Config, ConfigError, apply_overrides, build_config, describe, load_config
from model.population import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, read_population
from tests.helpers import small_config

EXAMPLES = int(os.environ.get("CONTAGION_HYPOTHESIS_EXAMPLES", "50"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("CONTAGION_HYPOTHESIS_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

KEYS = [row["key"].replace("[]", ".0") for row in describe()]


def clean_error(exc: ConfigError) -> None:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message
    assert len(message) < 600


# Values of every TOML type, plus the awkward ones.
scalars = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["BTC", "ETH", "cross", "isolated", "full", "partial", "hold", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node, prefix=()):
    """Every path into a TOML-shaped tree (dict keys and list indices)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated_configs(draw):
    data = small_config()
    data["margin"]["tiers"] = [{"cap": 1e6, "rate": 0.01}, {"cap": 1e7, "rate": 0.02}]
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        last = path[-1]
        if action == "replace":
            parent[last] = draw(values)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(values)
        else:
            parent.append(draw(values))
    return data


def check_build(data) -> Config | None:
    try:
        cfg = build_config(data)
    except ConfigError as exc:
        clean_error(exc)
        return None
    return cfg


@FUZZ_SETTINGS
@given(mutated_configs())
def test_mutated_configs_load_or_fail_cleanly(data):
    cfg = check_build(copy.deepcopy(data))
    if cfg is not None:
        # an accepted config runs: a couple of steps with finite prices
        from model import ContagionModel

        cfg.traders.count = min(cfg.traders.count, 50)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = ContagionModel(cfg, create_agents=False).run(2)
        assert np.all(np.isfinite(m.mark)) and np.all(m.mark > 0)


@FUZZ_SETTINGS
@given(st.dictionaries(st.text(max_size=10), values, max_size=6))
def test_arbitrary_tables_load_or_fail_cleanly(data):
    check_build(data)


@FUZZ_SETTINGS
@given(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=20)),
            st.one_of(
                st.text(max_size=20),
                st.sampled_from(["1e400", "-0", "nan", "inf", "[1,", "{a=1}", "none", "1_0"]),
            ),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_set_overrides_load_or_fail_cleanly(pairs):
    try:
        data = apply_overrides(small_config(), dict(pairs))
    except ConfigError as exc:
        clean_error(exc)
        return
    check_build(data)


@FUZZ_SETTINGS
@given(st.binary(max_size=300))
def test_toml_bytes_load_or_fail_cleanly(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("toml") / "c.toml"
    path.write_bytes(content)
    try:
        load_config(path)
    except ConfigError as exc:
        clean_error(exc)
        assert str(exc).startswith(str(path)) or ":" in str(exc)


@FUZZ_SETTINGS
@given(st.text(max_size=300))
def test_toml_text_load_or_fail_cleanly(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("toml") / "c.toml"
    try:
        path.write_text(text, encoding="utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates cannot be written to a file at all
    try:
        load_config(path)
    except ConfigError as exc:
        clean_error(exc)


# --------------------------------------------------------------------------------------------
# Population files
# --------------------------------------------------------------------------------------------

CFG = build_config(small_config())

cells = st.one_of(
    st.sampled_from(["", "BTC", "ETH", "XRP", "nan", "inf", "-inf", "1e400", "hold", "cross"]),
    st.sampled_from(["isolated", "0", "-1", "1e15", "1e16", "3.5", "True", '"q,uo"', "x"]),
    st.integers(-10, 10).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(1e-3, 1e6).map(repr),
    st.text(max_size=6),
)
columns = st.lists(
    st.sampled_from(REQUIRED_COLUMNS + OPTIONAL_COLUMNS + ["junk", ""]), min_size=1, max_size=9
)


@st.composite
def csv_texts(draw):
    header = draw(
        st.one_of(st.just(REQUIRED_COLUMNS), st.just(REQUIRED_COLUMNS + OPTIONAL_COLUMNS), columns)
    )
    rows = draw(
        st.lists(
            st.lists(cells, min_size=len(header) - 1, max_size=len(header) + 1),
            max_size=6,
        )
    )
    return "\n".join([",".join(header)] + [",".join(r) for r in rows]) + "\n"


def check_population(path):
    try:
        pop = read_population(path, CFG)
    except ConfigError as exc:
        clean_error(exc)
        assert str(exc).startswith(str(path))
        return None
    for arr in (pop.wallet, pop.qty, pop.entry, pop.margin):
        assert np.all(np.isfinite(arr))
    collateral = pop.collateral
    assert np.all(collateral >= 0)
    assert np.all(pop.margin >= 0)
    assert np.all(pop.wallet >= -1e-9 * np.maximum(collateral, 1.0))
    assert np.all(pop.entry[pop.qty != 0] > 0)
    assert len(np.unique(pop.ids)) == len(pop.ids)
    return pop


@FUZZ_SETTINGS
@given(csv_texts())
def test_population_csv_loads_or_fails_cleanly(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("pop") / "accounts.csv"
    path.write_text(text)
    check_population(path)


@FUZZ_SETTINGS
@given(st.binary(max_size=200))
def test_population_bytes_load_or_fail_cleanly(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("pop")
    for name in ("accounts.csv", "accounts.parquet"):
        (folder / name).write_bytes(content)
        check_population(folder / name)


column_values = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3, max_size=3),
    st.lists(st.integers(-(2**62), 2**62), min_size=3, max_size=3),
    st.lists(st.sampled_from(["BTC", "ETH", "x", ""]), min_size=3, max_size=3),
    st.lists(st.booleans(), min_size=3, max_size=3),
    st.just([pd.Timestamp("2024-01-01")] * 3),
    st.lists(st.none() | st.floats(0, 10), min_size=3, max_size=3),
)


@FUZZ_SETTINGS
@given(
    st.dictionaries(st.sampled_from(REQUIRED_COLUMNS + OPTIONAL_COLUMNS), column_values, min_size=4)
)
def test_population_parquet_loads_or_fails_cleanly(tmp_path_factory, table):
    path = tmp_path_factory.mktemp("pop") / "accounts.parquet"
    try:
        pd.DataFrame(table).to_parquet(path)
    except Exception:  # pyarrow refuses some mixed columns: not a population file at all
        return
    check_population(path)
