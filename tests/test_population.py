"""Initial accounts: generated populations and population files, with their checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.config import ConfigError, build_config
from model.population import generate_population, read_population
from tests.helpers import small_config

HEADER = "trader_id,collateral,asset,quantity,entry_price"


@pytest.fixture
def cfg():
    return build_config(small_config())


def write(tmp_path, text, name="accounts.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path, cfg) -> str:
    with pytest.raises(ConfigError) as info:
        read_population(path, cfg)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    return message


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def test_file_rows_become_the_book_arrays(tmp_path, cfg):
    path = write(
        tmp_path,
        f"{HEADER},margin_mode\n"
        "7,1000,BTC,0.1,60000,cross\n"
        "7,1000,ETH,-1,3000,cross\n"
        "3,500,ETH,2,2500,isolated\n"
        "3,500,BTC,0.01,50000,isolated\n",
    )
    pop = read_population(path, cfg)
    assert pop.ids.tolist() == [3, 7]  # sorted ids
    np.testing.assert_array_equal(pop.qty, [[0.01, 2.0], [0.1, -1.0]])
    np.testing.assert_array_equal(pop.entry, [[50000.0, 2500.0], [60000.0, 3000.0]])
    np.testing.assert_array_equal(pop.isolated, [[True, True], [False, False]])
    # isolated margin by default: the collateral split in proportion to initial notional
    # trader 3: notionals 500 (BTC) and 5000 (ETH) -> 500 * 500/5500 and 500 * 5000/5500
    np.testing.assert_allclose(pop.margin[0], [500 * 500 / 5500, 500 * 5000 / 5500])
    np.testing.assert_allclose(pop.wallet, [0.0, 1000.0], atol=1e-12)
    np.testing.assert_allclose(pop.collateral, [500.0, 1000.0])
    assert pop.strategy.tolist() == ["hold", "hold"]


def test_explicit_isolated_margin_and_the_rest_in_the_wallet(tmp_path, cfg):
    path = write(
        tmp_path,
        f"{HEADER},margin,margin_mode\n1,1000,BTC,0.1,60000,150,isolated\n1,1000,ETH,1,3000,,cross\n",
    )
    pop = read_population(path, cfg)
    np.testing.assert_array_equal(pop.margin, [[150.0, 0.0]])
    np.testing.assert_array_equal(pop.wallet, [850.0])
    np.testing.assert_array_equal(pop.isolated, [[True, False]])


def test_parquet_reads_like_csv(tmp_path, cfg):
    df = pd.DataFrame(
        {
            "trader_id": [1, 1, 2],
            "collateral": [100.0, 100.0, 50.0],
            "asset": ["BTC", "ETH", "BTC"],
            "quantity": [0.01, -0.2, 0.001],
            "entry_price": [60000.0, 3000.0, 61000.0],
            "strategy": ["hold", "hold", "hold"],
        }
    )
    df.to_parquet(tmp_path / "a.parquet")
    df.to_csv(tmp_path / "a.csv", index=False)
    a = read_population(tmp_path / "a.parquet", cfg)
    b = read_population(tmp_path / "a.csv", cfg)
    for field in ("ids", "wallet", "qty", "entry", "isolated", "margin"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_file_ids_are_kept_as_written(tmp_path, cfg):
    body = "1000,BTC,0.1,60000\n"
    mixed = read_population(write(tmp_path, f"{HEADER}\n007,{body}42,{body}0x1f,{body}"), cfg)
    assert mixed.ids.tolist() == ["007", "0x1f", "42"]  # sorted as text; "42" stays a string
    assert all(type(i) is str for i in mixed.ids)
    ints = read_population(write(tmp_path, f"{HEADER}\n7,{body}-3,{body}", "b.csv"), cfg)
    assert ints.ids.dtype == np.int64 and ints.ids.tolist() == [-3, 7]
    # pandas reads "NA" as missing; as an id it is the two letters
    na = read_population(write(tmp_path, f"{HEADER}\nNA,{body}nan,{body}", "c.csv"), cfg)
    assert na.ids.tolist() == ["NA", "nan"]


def test_parquet_ids_must_be_integers_or_strings(tmp_path, cfg):
    df = pd.DataFrame(
        {"trader_id": [1.0], "collateral": [1.0], "asset": ["BTC"], "quantity": [1.0]}
    )
    df["entry_price"] = 5.0
    df.to_parquet(tmp_path / "floats.parquet")
    message = error_of(tmp_path / "floats.parquet", cfg)
    assert "column trader_id must hold integers or strings, not float64" in message
    df["trader_id"] = pd.array([None], dtype="string")  # a string column with a null
    df.to_parquet(tmp_path / "missing.parquet")
    assert "row 1: trader_id is empty" in error_of(tmp_path / "missing.parquet", cfg)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("trader_id,collateral,asset,quantity\n1,2,BTC,1\n", "missing column(s) entry_price"),
        (f"{HEADER},colour\n1,2,BTC,1,5,red\n", "unknown column(s) colour"),
        (f"{HEADER}\n1,lots,BTC,1,5\n", "row 2: collateral is not a number: 'lots'"),
        (f"{HEADER}\n1,100,BTC,1,5\n2,100,BTC,inf,5\n", "row 3: quantity must be finite"),
        (f"{HEADER}\n1,100,BTC,nan,5\n", "row 2: quantity is not a number"),
        (f"{HEADER}\n7,100,BTC,1,5\n,100,ETH,1,5\n", "row 3: trader_id is empty"),
        (f"{HEADER}\nstep:4,100,BTC,1,5\n", "row 2: trader_id 'step:4' would collide"),
        (f"{HEADER}\nothers:4:2,100,BTC,1,5\n", "trader_id 'others:4:2' would collide"),
        (f'{HEADER}\n"a\tb",100,BTC,1,5\n', "row 2: trader_id 'a\\tb' holds a control"),
        (f"{HEADER}\n0x1f,100,BTC,1,5\n0x1f,50,ETH,1,5\n", "two accounts cannot share an id"),
        (f"{HEADER}\n0x1f,100,BTC,1,5\n0x1f,100,BTC,1,5\n", "trader '0x1f' already has a row"),
        (HEADER + "\n", "no rows (a header only)"),
        (
            "trader_id, collateral,asset,quantity,entry_price\n1,100,BTC,1,5\n",
            "stray spaces in the column names (found 'trader_id', ' collateral', 'asset'",
        ),
        (f"{HEADER}\n1,100,XRP,1,5\n", "row 2: unknown asset 'XRP' (declared: BTC, ETH)"),
        (f"{HEADER}\n1,-1,BTC,1,5\n", "row 2: collateral must be >= 0"),
        (f"{HEADER}\n1,100,BTC,1,0\n", "row 2: entry_price must be > 0 for an open position"),
        (f"{HEADER}\n1,100,BTC,1,5\n1,100,BTC,2,5\n", "row 3: duplicate position: trader 1"),
        (f"{HEADER}\n1,100,BTC,1,5\n1,101,ETH,2,5\n", "trader 1: collateral differs between"),
        (f"{HEADER}\n1,1e16,BTC,1,5\n", "row 2: collateral must be <= 1e+15"),
        (f"{HEADER}\n1,100,BTC,1e300,60000\n", "row 2: quantity x entry_price must be <= 1e+15"),
        (f"{HEADER}\n1,100,BTC,1e-3,1e13\n", "row 2: entry_price must be <= 1e+12"),
        (f"{HEADER},margin_mode\n1,100,BTC,1,5,crossed\n", "row 2: margin_mode must be"),
        (f"{HEADER},strategy\n1,100,BTC,1,5,yolo\n", "row 2: unknown strategy 'yolo'"),
        (f"{HEADER},margin,margin_mode\n1,100,BTC,1,5,-3,isolated\n", "row 2: margin must be >= 0"),
        (f"{HEADER},margin\n1,100,BTC,1,5,30\n", "row 2: margin is for isolated positions"),
        (
            f"{HEADER},margin,margin_mode\n1,100,BTC,1,5,80,isolated\n1,100,ETH,1,5,30,isolated\n",
            "trader 1: isolated margins exceed its collateral",
        ),
        (f"{HEADER}\n1,100,BTC,1,5,9\n", "cannot read population file"),
        ("", "cannot read population file"),
        (f"{HEADER}\n1,True,BTC,1,5\n", "column collateral must hold real numbers, not bool"),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, cfg, text, words):
    message = error_of(write(tmp_path, text), cfg)
    assert words in message, message


def test_strategy_must_agree_across_a_traders_rows(tmp_path, cfg):
    from agents.strategies import STRATEGIES

    names = list(STRATEGIES)
    other = names[1] if len(names) > 1 else None
    if other is None:
        # with a single rule every row agrees; check the column is accepted as it is
        pop = read_population(write(tmp_path, f"{HEADER},strategy\n1,1,BTC,1,5,hold\n"), cfg)
        assert pop.strategy.tolist() == ["hold"]
    else:
        path = write(tmp_path, f"{HEADER},strategy\n1,1,BTC,1,5,hold\n1,1,ETH,1,5,{other}\n")
        assert "strategy differs between its rows" in error_of(path, cfg)


def test_file_level_errors(tmp_path, cfg):
    assert error_of(tmp_path / "nope.csv", cfg).endswith("file not found")
    path = write(tmp_path, "x", name="accounts.xlsx")
    assert error_of(path, cfg).endswith("population file must be .csv or .parquet")
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    assert "cannot read population file" in error_of(path, cfg)
    df = pd.DataFrame({"trader_id": [1], "collateral": [pd.Timestamp("2024-01-01")]})
    df["asset"], df["quantity"], df["entry_price"] = "BTC", 1.0, 5.0
    df.to_parquet(tmp_path / "dates.parquet")
    message = error_of(tmp_path / "dates.parquet", cfg)
    assert "column collateral must hold real numbers" in message


def test_population_file_through_the_config_and_model(tmp_path):
    from model import ContagionModel

    write(tmp_path, f"{HEADER}\n1,1000,BTC,0.1,60000\n2,1000,ETH,-2,3000\n")
    data = small_config(traders={"population": "accounts.csv"})
    cfg = build_config(data, base_dir=tmp_path)
    m = ContagionModel(cfg)
    assert m.book.n_traders == 2
    bad = small_config(traders={"population": "missing.csv"})
    with pytest.raises(ConfigError, match="missing.csv: file not found"):
        ContagionModel(build_config(bad, base_dir=tmp_path))


# --------------------------------------------------------------------------------------------
# Generating
# --------------------------------------------------------------------------------------------


def test_generated_population_matches_its_distributions():
    data = small_config(
        traders={
            "count": 40_000,
            "leverage": 8.0,
            "leverage_dispersion": 0.4,
            "collateral": 2000.0,
            "collateral_tail": 2.5,
            "long_fraction": 0.7,
            "assets_per_trader": 1,
        }
    )
    data["assets"][0]["max_leverage"] = 1000
    data["assets"][1]["max_leverage"] = 1000
    cfg = build_config(data)
    pop = generate_population(cfg, np.random.default_rng(5))
    prices = np.array([60000.0, 3000.0])
    notional = (np.abs(pop.qty) * prices).sum(axis=1)
    leverage = notional / pop.collateral
    # median of Pareto(alpha) scaled as documented is the configured collateral
    assert np.median(pop.collateral) == pytest.approx(2000.0, rel=0.03)
    # mean leverage 1 + (L - 1) E[X] with E[X] = 1; sd of X is sqrt(exp(s^2) - 1)
    sd = 7.0 * np.sqrt(np.exp(0.4**2) - 1.0) / np.sqrt(40_000)
    assert abs(leverage.mean() - 8.0) < 5 * sd
    assert leverage.min() >= 1.0
    longs = (pop.qty > 0).sum() / (pop.qty != 0).sum()
    assert abs(longs - 0.7) < 5 * np.sqrt(0.21 / 40_000)
    np.testing.assert_array_equal((pop.qty != 0).sum(axis=1), 1)
    np.testing.assert_array_equal(
        pop.entry[pop.qty != 0], np.broadcast_to(prices, pop.qty.shape)[pop.qty != 0]
    )


def test_generated_leverage_is_capped_by_the_assets_held():
    data = small_config(traders={"count": 5000, "leverage": 200.0, "assets_per_trader": 2})
    cfg = build_config(data)  # BTC max 50x, ETH max 25x
    pop = generate_population(cfg, np.random.default_rng(1))
    notional = np.abs(pop.qty) * np.array([60000.0, 3000.0])
    leverage = notional.sum(axis=1) / pop.collateral
    holds_eth = pop.qty[:, 1] != 0
    assert leverage[holds_eth].max() <= 25 * (1 + 1e-12)
    assert leverage[~holds_eth].max() <= 50 * (1 + 1e-12)


def test_isolated_generation_puts_the_collateral_into_position_margins():
    cfg = build_config(small_config(margin={"mode": "isolated"}))
    pop = generate_population(cfg, np.random.default_rng(2))
    held = pop.qty != 0
    np.testing.assert_array_equal(pop.isolated, held)
    np.testing.assert_allclose(pop.wallet, 0.0, atol=1e-9)
    k = held.sum(axis=1)
    np.testing.assert_allclose(pop.margin[held], np.repeat(pop.collateral / k, k))


def test_generation_depends_on_the_generator_only():
    cfg = build_config(small_config())
    a = generate_population(cfg, np.random.default_rng(9))
    b = generate_population(cfg, np.random.default_rng(9))
    for field in ("wallet", "qty", "entry", "margin"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    c = generate_population(cfg, np.random.default_rng(10))
    assert not np.array_equal(a.qty, c.qty)
