"""Venue presets and the venue rules they switch on: applied, overridden, sourced, refused.

The rules themselves (takeover, tiered partial liquidation, Hyperliquid's chunks, dYdX's
per-round limits, the liquidator vault, funding on an 8-hour basis) are checked against books
worked by hand; the worked ADL table of docs/market-realism.md against the one the code makes.
"""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w

from experiments.cli import main
from model import ContagionModel
from model.adl import RANKINGS
from model.config import ConfigError, MarginConfig, build_config, load_config, read_toml, to_dict
from model.funding import funding_rate
from model.population import Population
from model.venues import CHOICES, OPEN_CAP, PRESETS, describe_presets, preset_settings
from tests.helpers import adl_worked_fills, adl_worked_table, small_config

DOCS = Path(__file__).resolve().parents[1] / "docs"


def tiers_of(cfg, symbol):
    asset = next(a for a in cfg.assets if a.symbol == symbol)
    return None if asset.tiers is None else [(t.cap, t.rate) for t in asset.tiers]


def three_assets(**margin):
    data = small_config(
        assets=[
            {"symbol": "BTC", "price": 60000.0, "depth": 2e6, "max_leverage": 50},
            {"symbol": "ETH", "price": 3000.0, "depth": 1e6, "max_leverage": 25},
            {"symbol": "DOGE", "price": 0.1, "depth": 1e5, "max_leverage": 20},
        ],
        margin=margin,
        shocks=[],
    )
    data["margin"] = margin  # only what the test gives
    return data


# --------------------------------------------------------------------------------------------
# The presets as data
# --------------------------------------------------------------------------------------------


def test_the_choices_of_the_config_are_the_presets_and_the_rankings():
    hints = typing.get_type_hints(MarginConfig)
    venue_choices = typing.get_args(typing.get_args(hints["venue"])[0])
    assert set(venue_choices) == set(PRESETS) == set(describe_presets())
    assert set(typing.get_args(hints["adl_ranking"])) == set(RANKINGS)
    assert CHOICES["margin.venue"] == describe_presets()
    assert CHOICES["margin.adl_ranking"] == RANKINGS
    for text in [*describe_presets().values(), *RANKINGS.values()]:
        assert text and "\n" not in text


def test_every_preset_value_names_its_source():
    fields = set(typing.get_type_hints(MarginConfig))
    for preset in PRESETS.values():
        sourced = [*preset.margin.values(), *preset.tiers.values(), preset.other_tiers]
        for rule in (preset.funding.interest, preset.funding.cap):
            if rule is not None:
                sourced.append(rule)
        for value in sourced:
            assert "venues.md §" in value.source or "project's choice" in value.source, value
            assert value.date, value
        assert "venues.md §" in preset.funding.source
        assert set(preset.margin) <= fields, preset.name


def test_every_preset_runs_with_money_conserved_every_step():
    for name in PRESETS:
        cfg = build_config(small_config(steps=12, margin={"venue": name}))
        m = ContagionModel(cfg)
        for _ in range(cfg.steps):
            m.step()
            scale = max(abs(m.initial_money), 1.0)
            assert abs(m.money()["total"] - m.initial_money) <= 1e-9 * scale, (name, m.steps)
        if name == "hyperliquid":  # the vault took units over and paid funding on them
            assert m.engine.vault.taken_notional > 0 and m.funding.settlements == 12
            assert m.money()["vault"] != 0.0


# --------------------------------------------------------------------------------------------
# Applied, and overridden by the file
# --------------------------------------------------------------------------------------------


def test_a_preset_sets_tiers_per_symbol_and_a_documented_default_for_the_others():
    cfg = build_config(three_assets(venue="binance"))
    btc = tiers_of(cfg, "BTC")
    assert btc[:3] == [(5e4, 0.004), (2.5e5, 0.005), (3e6, 0.01)] and len(btc) == 10
    assert tiers_of(cfg, "ETH")[0] == (1e4, 0.005)
    assert tiers_of(cfg, "DOGE") == PRESETS["binance"].other_tiers.value  # the 75x alt table
    assert (cfg.margin.fee, cfg.margin.takeover) == (0.005, True)
    assert cfg.margin.adl_ranking == "binance" and cfg.margin.liquidation == "partial"
    # Hyperliquid: two tiers for BTC, the engine's 1 / (2 x max leverage) for the others
    cfg = build_config(three_assets(venue="hyperliquid"))
    assert tiers_of(cfg, "BTC") == [(1.5e8, 0.0125), (OPEN_CAP, 0.025)]
    assert tiers_of(cfg, "DOGE") is None
    m = ContagionModel(cfg)
    np.testing.assert_allclose(m.book.tiers.rates[2], 1 / (2 * 20))  # DOGE at 20x: 2.5%
    assert cfg.margin.vault and cfg.margin.insurance_fund == 0.0
    assert (cfg.margin.chunk_notional, cfg.margin.chunk_share) == (100_000.0, 0.2)


def test_explicit_keys_override_the_preset():
    data = three_assets(venue="hyperliquid", fee=0.001, vault=False)
    data["assets"][0]["tiers"] = [{"cap": 1e6, "rate": 0.01}, {"cap": 2e6, "rate": 0.02}]
    cfg = build_config(data)
    assert cfg.margin.fee == 0.001 and cfg.margin.vault is False
    assert tiers_of(cfg, "BTC") == [(1e6, 0.01), (2e6, 0.02)]  # the asset's own
    assert tiers_of(cfg, "ETH") == [(1e8, 0.02), (OPEN_CAP, 1 / 30)]  # the preset's
    assert cfg.margin.adl_ranking == "hyperliquid"  # not set by the file
    # a flat rate or tiers for every asset in [margin] keep the preset's tiers out
    for key, value in (("maintenance", 0.02), ("tiers", [{"cap": 1e9, "rate": 0.03}])):
        cfg = build_config(three_assets(venue="binance", **{key: value}))
        assert all(a.tiers is None for a in cfg.assets), key


def test_set_overrides_win_over_the_preset(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(three_assets(venue="dydx")))
    cfg = load_config(path, {"margin.round_share": "0.5", "margin.adl_ranking": "pro_rata"})
    assert cfg.margin.round_share == 0.5 and cfg.margin.adl_ranking == "pro_rata"
    assert cfg.margin.round_max_notional == 100_000.0  # the preset's
    cfg = load_config(path, {"margin.venue": "none"})
    assert cfg.margin.venue is None and cfg.margin.round_share == 1.0


def test_funding_follows_the_step_length():
    # Hyperliquid: hourly payments of an 8-hour rate, capped at 4% an hour
    for minutes, steps in ((60.0, 1), (5.0, 12)):
        data = three_assets(venue="hyperliquid")
        data["market"]["step_minutes"] = minutes
        market = build_config(data).market
        assert market.funding_interval == steps
        assert market.funding_basis == pytest.approx(8.0)
        assert market.funding_cap == pytest.approx(0.04)
        assert market.funding_interest == 1e-4
    # Binance every 8 hours: with 60-minute steps, every 8 steps at the 8-hour rate itself
    market = build_config(three_assets(venue="binance")).market
    assert (market.funding_interval, market.funding_basis, market.funding_cap) == (8, 1.0, 0.004)
    # daily steps: dYdX's hourly cap of 1.5% becomes 36% a day, the 8-hour basis a third
    data = three_assets(venue="dydx")
    data["market"]["step_minutes"] = 1440.0
    market = build_config(data).market
    assert market.funding_interval == 1
    assert market.funding_basis == pytest.approx(8 / 24)
    assert market.funding_cap == pytest.approx(0.36)
    # the file's own interval: basis and cap follow it; 0 keeps funding off
    data = three_assets(venue="hyperliquid")
    data["market"]["funding_interval"] = 2  # every 2 hours
    market = build_config(data).market
    assert (market.funding_interval, market.funding_basis) == (2, 4.0)
    assert market.funding_cap == pytest.approx(0.08)
    data["market"]["funding_interval"] = 0
    assert build_config(data).market.funding_interval == 0


def test_the_resolved_config_holds_the_values_used_and_reruns_the_same(tmp_path):
    cfg = build_config(small_config(steps=15, margin={"venue": "bybit"}))
    m = ContagionModel(cfg).run()
    out = m.write_results(tmp_path / "run")
    written = read_toml(out / "config.toml")
    assert written["margin"]["venue"] == "bybit"
    assert written["margin"]["partial_from_tier"] == 2 and written["margin"]["takeover"] is True
    assert len(written["assets"][0]["tiers"]) == 20  # BTC: Bybit's 20 tiers
    assert written["assets"][1]["tiers"] == [{"cap": OPEN_CAP, "rate": 0.01}]  # ETH
    again = build_config(written)
    assert to_dict(again) == to_dict(cfg)
    rerun = ContagionModel(again).run()
    pd.testing.assert_frame_equal(rerun.tables()["liquidations"], m.tables()["liquidations"])


def test_preset_settings_lists_every_key_it_sets():
    keys = preset_settings("dydx", ["BTC", "XYZ"], step_minutes=60.0)
    assert keys["assets.BTC.tiers"] == [{"cap": OPEN_CAP, "rate": 0.03}]
    assert keys["assets.XYZ.tiers"] == [{"cap": OPEN_CAP, "rate": 0.10}]
    assert keys["margin.round_share"] == 0.1 and keys["margin.adl_ranking"] == "random"
    assert keys["market.funding_interval"] == 1 and keys["market.funding_interest"] == 0.0


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("venue", "binanse", ["margin.venue", "did you mean 'binance'"]),
        ("venue", "hyperliqiud", ["margin.venue", "did you mean 'hyperliquid'"]),
        ("adl_ranking", "pro-rata", ["margin.adl_ranking", "did you mean 'pro_rata'"]),
        ("adl_ranking", "bitmax", ["margin.adl_ranking", "did you mean 'bitmex'"]),
    ],
)
def test_an_unknown_venue_or_ranking_is_one_line_exit_2(capsys, tmp_path, key, value, words):
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(small_config(steps=2, margin={key: value})))
    for args in (["run", path], ["run", small_path(tmp_path), "--set", f"margin.{key}={value}"]):
        code = main([str(a) for a in args] + ["--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip("\n").splitlines()
        assert code == 2 and len(err) == 1, err
        for word in words:
            assert word in err[0], err[0]
    assert not (tmp_path / "out" / "summary.json").exists()


def small_path(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(tomli_w.dumps(small_config(steps=2)))
    return path


def test_preset_rule_values_are_checked_like_any_key():
    with pytest.raises(ConfigError, match=r"margin.chunk_share: must be <= 1"):
        build_config(small_config(margin={"venue": "hyperliquid", "chunk_share": 2.0}))
    with pytest.raises(ConfigError, match=r"margin.partial_from_tier: must be >= 1"):
        build_config(small_config(margin={"partial_from_tier": 0}))


# --------------------------------------------------------------------------------------------
# The venue rules, on books worked by hand
# --------------------------------------------------------------------------------------------


def one_asset(shock=-0.10, steps=1, price=100.0, **margin):
    """One asset at ``price``, volatility 0, a book so deep that fills happen at the
    fundamental, maintenance 1% unless ``margin`` says otherwise."""
    return build_config(
        {
            "seed": 5,
            "steps": steps,
            "market": {"volatility": 0.0, "resilience": 0.0},
            "assets": [{"symbol": "X", "price": price, "depth": 1.0e15, "max_leverage": 50}],
            "traders": {"count": 0},
            "margin": {"fee": 0.0, "insurance_fund": 0.0, **margin},
            "shocks": [{"step": 1, "asset": "X", "return": shock}],
        }
    )


def population(wallet, qty, entry, isolated=None, margin=None):
    n = len(wallet)
    return Population(
        ids=np.arange(n, dtype=np.int64),
        wallet=np.asarray(wallet, float),
        qty=np.asarray(qty, float)[:, None],
        entry=np.asarray(entry, float)[:, None],
        isolated=np.zeros((n, 1), bool) if isolated is None else np.asarray(isolated)[:, None],
        margin=np.zeros((n, 1)) if margin is None else np.asarray(margin, float)[:, None],
        strategy=np.array(["hold"] * n, dtype=object),
    )


def test_takeover_gives_the_fund_what_a_unit_closed_whole_has_left():
    # a long of 10 from 100 on 100 of collateral, 2% maintenance: at 91 equity 10 < 18.2.
    # Full liquidation: sold at 91 with 10 left, which the fund keeps under takeover.
    pop = population([100.0], [10.0], [100.0])
    kept = ContagionModel(one_asset(-0.09, liquidation="full", maintenance=0.02), population=pop)
    kept.run()
    taken = ContagionModel(
        one_asset(-0.09, liquidation="full", maintenance=0.02, takeover=True), population=pop
    ).run()
    assert kept.book.wallet[0] == pytest.approx(10.0, abs=1e-4)
    assert taken.book.wallet[0] == pytest.approx(0.0, abs=1e-9)
    assert taken.engine.insurance_fund == pytest.approx(10.0, abs=1e-4)
    assert taken.tables()["liquidations"]["fee"].sum() == pytest.approx(10.0, abs=1e-4)
    # a unit closed in part keeps its equity: takeover only applies to whole closes
    part = ContagionModel(
        one_asset(-0.09, liquidation="partial", maintenance=0.02, takeover=True, buffer=0.0),
        population=pop,
    ).run()
    assert part.book.qty[0, 0] > 0 and part.engine.insurance_fund == 0.0


def test_partial_only_from_a_tier_closes_smaller_units_whole():
    tiers = [{"cap": 500.0, "rate": 0.01}, {"cap": 1e9, "rate": 0.02}]
    # at 93 (a 7% fall): small, 5 units from 100 on 38: notional 465 (tier 1), equity 3 below
    # its maintenance 4.65; big, 50 units on 400: notional 4,650 (tier 2), equity 50 below
    # 0.02 x 4,650 - 5 = 88. Partial would restore both; from tier 2 only the big one. (A
    # buffer of 1% keeps each restored above maintenance after its own sale's impact.)
    pop = population([38.0, 400.0], [5.0, 50.0], [100.0, 100.0])
    cfg = one_asset(-0.07, liquidation="partial", tiers=tiers, partial_from_tier=2, buffer=0.01)
    m = ContagionModel(cfg, population=pop).run()
    fills = m.tables()["liquidations"]
    small = fills[fills["trader_id"] == 0]
    big = fills[fills["trader_id"] == 1]
    assert list(small["kind"].astype(str)) == ["full"]
    np.testing.assert_allclose(small["quantity"], [5.0])
    assert list(big["kind"].astype(str)) == ["partial"]
    # big keeps n of notional with 1.01 (0.02 n - 5) = 50, and sells the rest
    n = (50 / 1.01 + 5) / 0.02
    np.testing.assert_allclose(big["quantity"], [50 * (1 - n / 4650)], rtol=1e-6)
    # and without the rule the small one too is liquidated in part
    cfg = one_asset(-0.07, liquidation="partial", tiers=tiers, buffer=0.01)
    fills = ContagionModel(cfg, population=pop).run().tables()["liquidations"]
    assert list(fills["kind"].astype(str)) == ["partial", "partial"]


def test_hyperliquid_chunks_then_whole_within_the_step_then_chunks_again():
    # a long of 3,000 units from 100 on 31,000: at 90 (270,000 notional) its equity is 1,000,
    # below 2% maintenance: round 1 closes 20% (600), and as the rest is still below
    # maintenance, round 2 (in the cooldown) closes it whole
    pop = population([31000.0], [3000.0], [100.0])
    cfg = one_asset(liquidation="full", maintenance=0.02, chunk_notional=100_000.0, chunk_share=0.2)
    m = ContagionModel(cfg, population=pop).run()
    fills = m.tables()["liquidations"]
    np.testing.assert_allclose(fills["quantity"], [600.0, 2400.0], rtol=1e-12)
    assert list(fills["round"]) == [1, 2]
    assert list(fills["kind"].astype(str)) == ["partial", "full"]
    # below the chunk notional: whole at once
    small = ContagionModel(cfg, population=population([310.0], [30.0], [100.0])).run()
    np.testing.assert_allclose(small.tables()["liquidations"]["quantity"], [30.0])


def test_a_new_step_ends_the_cooldown():
    from model.limits import RoundLimits

    margin = MarginConfig(chunk_notional=100.0, chunk_share=0.2)
    tiers = ContagionModel(one_asset()).book.tiers
    limits = RoundLimits(margin, tiers, 3)
    rows = np.array([0, 2])
    frac = np.ones((2, 1))
    notional = np.array([[500.0], [50.0]])
    np.testing.assert_allclose(limits.bound(rows, frac, notional), [[0.2], [1.0]])
    np.testing.assert_allclose(limits.bound(rows, frac, notional), [[1.0], [1.0]])  # cooling
    limits.new_step()
    np.testing.assert_allclose(limits.bound(rows, frac, notional), [[0.2], [1.0]])


def test_dydx_per_round_limits_by_hand():
    from model.limits import RoundLimits

    margin = MarginConfig(round_share=0.1, round_min_notional=1000.0, round_max_notional=1e5)
    tiers = ContagionModel(one_asset()).book.tiers
    limits = RoundLimits(margin, tiers, 4)
    # positions of 50k (10%: 5k), 5k (10% is 500 < 1,000: 1,000 of it), 800 (whole), and an
    # account of 3M (10% = 300k, above the 100k per account: 100k)
    notional = np.array([[50_000.0], [5_000.0], [800.0], [3e6]])
    got = limits.bound(np.arange(4), np.ones((4, 1)), notional)
    np.testing.assert_allclose(got[:, 0], [0.1, 0.2, 1.0, 1e5 / 3e6], rtol=1e-12)
    # a fraction already smaller stays
    np.testing.assert_allclose(
        limits.bound(np.arange(1), np.full((1, 1), 0.05), notional[:1]), 0.05
    )


def test_dydx_liquidates_a_tenth_per_round_until_restored():
    # 200 units from 100 on 2,000, 5% maintenance: at 92 equity 400 < 920. Each round closes
    # what restores 1.01 x maintenance, but at most max(10%, 1,000 of notional) of what is left
    pop = population([2000.0], [200.0], [100.0])
    cfg = one_asset(
        -0.08,
        liquidation="partial",
        maintenance=0.05,
        buffer=0.01,
        round_share=0.1,
        round_min_notional=1000.0,
    )
    m = ContagionModel(cfg, population=pop).run()
    fills = m.tables()["liquidations"]
    # the rule, round by round (fills at 92 keep the equity at 400; the sales' own impact, a
    # few millionths of the price, moves the last round's need by 1e-5 of it)
    q, expected = 200.0, []
    while 1.01 * 0.05 * q * 92.0 > 400.0 * (1 + 1e-9):
        needed = 1 - 400.0 / (1.01 * 0.05 * q * 92.0)
        most = max(0.1 * q * 92.0, 1000.0) / (q * 92.0)
        expected.append(min(needed, most) * q)
        q -= expected[-1]
    assert len(expected) == 8  # 10% for 6 rounds, 1,000 of notional once, the rest
    np.testing.assert_allclose(fills["quantity"], expected, rtol=1e-4)
    assert list(fills["round"]) == list(range(1, 9))
    assert m.book.qty[0, 0] == pytest.approx(q, rel=1e-4)


def test_the_vault_takes_units_far_below_maintenance_at_the_mark():
    # A: long 10 from 100 on 20, 2% maintenance: at 90 equity 10 - ... 20 - 100 = -80 < 0
    #   (bankrupt: the vault takes the position, the -80 is bad debt for ADL);
    # B: long 10 from 100 on 110: equity 10 at 90, maintenance 18: 10 / 18 = 0.56 < 2/3: vault;
    # C: long 10 from 100 on 115: equity 15, 15 / 18 = 0.83: sold into the book;
    # D: short 30 from 100 on 3000: the ADL counterparty.
    pop = population([20.0, 110.0, 115.0, 3000.0], [10.0, 10.0, 10.0, -30.0], [100.0] * 4)
    cfg = one_asset(liquidation="full", maintenance=0.02, vault=True, vault_threshold=2 / 3)
    m = ContagionModel(cfg, population=pop)
    rounds = []
    m.engine.on_round = rounds.append
    m.run()
    fills = m.tables()["liquidations"]
    vault = fills[fills["kind"] == "vault"]
    assert list(vault["trader_id"]) == [0, 1]
    np.testing.assert_allclose(vault["price"], [90.0, 90.0], rtol=1e-12)  # at the mark
    sold = fills[fills["kind"] == "full"]
    assert list(sold["trader_id"]) == [2]
    # the vault paid 2 x 10 x 90 and received B's 10 of equity; it holds 20 units
    v = m.engine.vault
    np.testing.assert_allclose(v.inventory, [20.0])
    assert v.cash == pytest.approx(-1800.0 + 10.0, abs=1e-6)
    assert v.equity_taken == pytest.approx(10.0, abs=1e-6)
    assert v.taken_notional == pytest.approx(1800.0, rel=1e-12)
    # A's -80 went to ADL against D at A's bankruptcy price, 98
    adl = fills[fills["kind"] == "adl"]
    assert list(adl["trader_id"]) == [3]
    # the vault moved no price: the round's record shows only C's sale as book flow
    (rec,) = rounds
    np.testing.assert_allclose(rec.closed[:, 0], [0.0, 0.0, 10.0])
    np.testing.assert_allclose(rec.taken[:, 0], [10.0, 10.0, 0.0])
    # money, with the vault as a holder
    money = m.money()
    assert money["vault"] == pytest.approx(v.cash + 20.0 * m.mark[0], rel=1e-12)
    assert abs(money["total"] - m.initial_money) <= 1e-9 * abs(m.initial_money)
    steps = m.tables()["steps"]
    assert steps["vault_taken_notional"].iloc[0] == pytest.approx(1800.0, rel=1e-12)
    assert steps["vault_value"].iloc[0] == pytest.approx(money["vault"], rel=1e-12)
    summary = m.summary()
    assert summary["vault_taken_notional"] == pytest.approx(1800.0, rel=1e-12)
    assert summary["vault_value"] == pytest.approx(money["vault"], rel=1e-12)


def test_runs_without_a_vault_have_no_vault_columns():
    m = ContagionModel(one_asset(), population=population([100.0], [1.0], [100.0])).run()
    assert not any(c.startswith("vault") for c in m.tables()["steps"].columns)
    assert m.summary()["vault_value"] == 0.0 and m.money()["vault"] == 0.0


def test_funding_on_an_eight_hour_basis_pays_an_eighth_an_interval():
    # Hyperliquid's example: premium 1%, interest 0.01%: the 8-hour rate is 0.95%
    assert funding_rate([0.01], 1e-4, 1.0)[0] == pytest.approx(0.0095)
    assert funding_rate([0.01], 1e-4, 1.0, basis=8.0)[0] == pytest.approx(0.0095 / 8)
    assert funding_rate([0.5], 1e-4, 0.04, basis=8.0)[0] == pytest.approx(0.04)  # the cap


# --------------------------------------------------------------------------------------------
# The worked ADL table of docs/market-realism.md
# --------------------------------------------------------------------------------------------


def test_the_docs_table_is_the_one_the_code_makes():
    text = (DOCS / "market-realism.md").read_text()
    assert adl_worked_table() in text


@pytest.mark.parametrize(
    ("ranking", "traders", "quantity"),
    [
        # S1 (score 0.6) and S2 (0.26) by profit x leverage: 20 + 30 units at 98
        ("bitmex", [1, 2], [20, 30]),
        # S1, S3, S2 by LeveragePnL; S3 can give only its equity 60: 7.5 units
        ("binance", [1, 3, 2], [20, 7.5, 22.5]),
        # S3 (15.2), S4 (7.29), S1 (6.67) by the price ratio x notional / account value
        ("hyperliquid", [3, 4, 1], [7.5, 30, 12.5]),
        # everyone half of its position: 8 a unit on 50 of 100 units
        ("pro_rata", [1, 2, 3, 4], [10, 20, 5, 15]),
    ],
)
def test_worked_book_under_each_ranking_by_hand(ranking, traders, quantity):
    fills = adl_worked_fills(ranking)
    assert list(fills["trader_id"]) == traders
    np.testing.assert_allclose(-fills["quantity"], quantity, atol=1e-4)
    np.testing.assert_allclose(fills["price"], 98.0, atol=1e-6)
    assert fills["giveback"].sum() == pytest.approx(400.0, abs=1e-3)


def test_worked_book_random_walks_book_order_from_its_start():
    fills = adl_worked_fills("random")
    ids = list(fills["trader_id"])
    order = [(ids[0] - 1 + i) % 4 + 1 for i in range(4)]  # the shorts are traders 1..4
    assert ids == order[: len(ids)]
    assert fills["giveback"].sum() == pytest.approx(400.0, abs=1e-3)
