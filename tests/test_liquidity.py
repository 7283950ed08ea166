"""Liquidity: the book's depth in market.parquet, the [liquidity] section, market makers.

Values are computed independently of the engine: from the config and from other columns of
the run's own tables, by hand or in closed form.
"""

from __future__ import annotations

import numpy as np
import pytest

from model import ContagionModel
from model.config import ConfigError, build_config
from tests.helpers import small_config

MINUTES_PER_YEAR = 365.0 * 24.0 * 60.0


def test_static_depth_column_is_the_configured_depth_without_stress():
    m = ContagionModel(build_config(small_config(steps=15)), create_agents=False).run()
    market = m.tables()["market"]
    for a in m.config.assets:
        depth = market.loc[market["asset"] == a.symbol, "depth"].to_numpy()
        assert depth.size == 15
        np.testing.assert_array_equal(depth, a.depth)


def test_static_depth_column_follows_the_stress_recursion():
    """depth = D / (1 + k x load), load rebuilt from the fundamental and forced-flow columns."""
    stress, recovery = 0.1, 0.25
    cfg = build_config(
        small_config(steps=15, market={"depth_stress": stress, "depth_recovery": recovery})
    )
    m = ContagionModel(cfg, create_agents=False).run()
    market = m.tables()["market"]
    dt = cfg.market.step_minutes / MINUTES_PER_YEAR
    for a in cfg.assets:
        g = market[market["asset"] == a.symbol].sort_values("step")
        d = a.depth / a.price
        dlog = np.diff(np.log(np.concatenate([[a.price], g["fundamental"].to_numpy()])))
        vol = cfg.market.volatility if a.volatility is None else a.volatility
        move = np.maximum(np.abs(dlog) - 2 * vol * np.sqrt(dt), 0.0) / 0.01
        forced = (np.abs(g["forced_flow"].to_numpy()) / d) ** cfg.market.impact_exponent
        carried, expected = 0.0, []
        for t in range(len(g)):
            expected.append(a.depth / (1 + stress * (carried + move[t] + forced[t])))
            carried = (1 - recovery) * (carried + move[t] + forced[t])
        np.testing.assert_allclose(g["depth"].to_numpy(), expected, rtol=1e-12)
        assert (g["depth"] < a.depth).any()  # the shock thinned the book


def test_liquidity_section_defaults_to_static():
    cfg = build_config(small_config())
    assert cfg.liquidity.model == "static"
    assert cfg.liquidity.value_orders == "before_rounds"


@pytest.mark.parametrize(
    ("liquidity", "words"),
    [
        ({"model": "lob"}, "liquidity.model"),
        ({"capital": -1.0}, "liquidity.capital: must be > 0"),
        ({"inventory_limit": 0.0}, "liquidity.inventory_limit: must be > 0"),
        ({"backstop": 1.5}, "liquidity.backstop: must be <= 1"),
        ({"margin_pull": [0.5]}, "liquidity.margin_pull"),
    ],
)
def test_bad_liquidity_keys_name_the_key(liquidity, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        build_config(small_config(liquidity=liquidity))
