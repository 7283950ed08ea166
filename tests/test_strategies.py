"""Trading rules: their orders against closed forms, the initial-margin cap, isolated margin,
their direction in a shock, determinism, and money conservation with every rule trading."""

import math
import sys

import numpy as np
import pytest

from agents.strategies import STRATEGIES
from model import ContagionModel
from model.config import ConfigError, build_config
from model.orders import cap_to_initial_margin, split_order
from model.population import Population
from model.results import money_scale
from tests.helpers import small_config

DEEP = 1.0e15  # a book so deep that fills happen at the fundamental


def target_leverage(target, **params):
    """The traders section that sets the target_leverage rule's parameters."""
    return {"rules": {"target_leverage": {"target": target, **params}}}


def one_asset(*, shock=-0.10, steps=1, depth=DEEP, traders=None, market=None, margin=None):
    return build_config(
        {
            "seed": 11,
            "steps": steps,
            "market": {"volatility": 0.0, "resilience": 0.0, **(market or {})},
            "assets": [{"symbol": "X", "price": 100.0, "depth": depth, "max_leverage": 10}],
            "traders": {"count": 0, **(traders or {})},
            "margin": {"fee": 0.0, "insurance_fund": 1.0e9, **(margin or {})},
            "shocks": [{"step": 1, "asset": "X", "return": shock}] if shock else [],
        }
    )


def population(wallet, qty, strategy, entry=100.0, isolated=None, margin=None):
    n = len(wallet)
    qty = np.asarray(qty, float).reshape(n, -1)
    return Population(
        ids=np.arange(n, dtype=np.int64),
        wallet=np.asarray(wallet, float),
        qty=qty,
        entry=np.where(qty != 0, entry, 0.0),
        isolated=np.zeros(qty.shape, bool) if isolated is None else np.asarray(isolated),
        margin=np.zeros(qty.shape) if margin is None else np.asarray(margin, float),
        strategy=np.array(strategy, dtype=object),
    )


# ---- kernels ---------------------------------------------------------------------------------


def test_split_order_separates_reducing_and_opening():
    qty = np.array([[10.0, 10.0, 10.0, 0.0, -4.0]])
    dq = np.array([[5.0, -4.0, -15.0, 3.0, 4.0]])
    reduced, opened = split_order(qty, dq)
    np.testing.assert_array_equal(reduced, [[10.0, 6.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(opened, [[5.0, 0.0, -5.0, 3.0, 0.0]])
    np.testing.assert_array_equal(reduced + opened, qty + dq)


def test_initial_margin_cap_by_hand():
    price = np.array([100.0, 50.0])
    max_lev = np.array([10.0, 5.0])
    # account 0: equity 100, holds 5 units of asset 0 (IM 50), opens 10 of asset 1 (IM 100)
    #   -> free 50 covers half the cost
    # account 1: equity 1000, opens 10 of asset 0 at 2x (IM 500): fits
    # account 2: equity 10, holds 20 units of asset 0 (IM 200 > equity): opens nothing
    reduced = np.array([[5.0, 0.0], [0.0, 0.0], [20.0, 0.0]])
    opened = np.array([[0.0, 10.0], [10.0, 0.0], [0.0, 1.0]])
    factor = cap_to_initial_margin(
        np.array([100.0, 1000.0, 10.0]),
        reduced,
        opened,
        price,
        np.ones((3, 2), bool),
        max_lev,
        np.array([[10.0, 5.0], [2.0, 5.0], [10.0, 5.0]]),
    )
    np.testing.assert_allclose(factor, [0.5, 1.0, 0.0])


# ---- rules against closed forms ---------------------------------------------------------------


def test_target_leverage_sells_into_a_fall_by_the_closed_form():
    # 1000 collateral, 50 units at 100 (5x). After -10%: equity 1000 - 500 = 500, leverage 9;
    # the target 5 wants 5 x 500 / 90 units; rebalance 0.5 closes half the gap.
    cfg = one_asset(traders={"rules": {"target_leverage": {"rebalance": 0.5}}})
    m = ContagionModel(cfg, population=population([1000.0], [50.0], ["target_leverage"]))
    m.run()
    want = 5 * 500.0 / 90.0
    assert m.book.qty[0, 0] == pytest.approx(50.0 + 0.5 * (want - 50.0), rel=1e-6)
    assert m.book.qty[0, 0] < 50.0  # sold into the fall


def test_target_leverage_buys_into_a_rise_and_a_set_target_is_used():
    cfg = one_asset(shock=0.10, traders=target_leverage(4.0, rebalance=1.0))
    m = ContagionModel(cfg, population=population([1000.0], [20.0], ["target_leverage"]))
    m.run()
    equity = 1000.0 + 20 * 10.0
    assert m.book.qty[0, 0] == pytest.approx(4 * equity / 110.0, rel=1e-6)  # 2x -> 4x: buys


def test_value_overlay_by_the_closed_form():
    # The price sits 5% below the fundamental (an impact state left by earlier selling):
    # value traders want -E L tanh(log(P/F) / scale) / P on top of what they hold.
    cfg = one_asset(shock=None, traders={"rules": {"value": {"leverage": 2.0, "scale": 0.05}}})
    m = ContagionModel(cfg, population=population([1000.0], [1.0], ["value"]))
    m.market.impact[:] = np.log(0.95)
    rule, rows = m.strategies["value"], m.strategy_rows["value"]
    price = m.market.price
    equity = 1000.0 + 1.0 * (price[0] - 100.0)
    expected = -equity * 2.0 * np.tanh(np.log(0.95) / 0.05) / price[0]
    np.testing.assert_allclose(rule.orders(rows), [[expected]], rtol=1e-12)
    assert expected > 0  # buys below the fundamental


def test_momentum_overlay_by_the_closed_form():
    cfg = one_asset(shock=None, traders={"rules": {"momentum": {"lookback": 3, "leverage": 1.5}}})
    m = ContagionModel(cfg, population=population([1000.0], [1.0], ["momentum"]))
    rule, rows = m.strategies["momentum"], m.strategy_rows["momentum"]
    scale = max(m.market.volatility[0] * np.sqrt(3 * m.market.dt), 1e-3)
    m.market.log_fundamental[:] = np.log(95.0)  # a -5% move since the rule started watching
    equity = 1000.0 - 5.0
    expected = 1.5 * equity * np.tanh(np.log(0.95) / scale) / 95.0
    np.testing.assert_allclose(rule.orders(rows), [[expected]], rtol=1e-12)
    assert expected < 0  # sells after a fall


def test_noise_orders_come_from_model_rng_only():
    cfg = build_config(small_config(traders={"count": 300, "strategies": {"noise": 1.0}}))
    state = np.random.get_state()  # noqa: NPY002 - checking the legacy global stream
    a = ContagionModel(cfg, create_agents=False).run(5)
    assert np.array_equal(np.random.get_state()[1], state[1])  # noqa: NPY002
    b = ContagionModel(cfg, create_agents=False).run(5)
    c = ContagionModel(cfg, rng=cfg.seed + 1, create_agents=False).run(5)
    np.testing.assert_array_equal(a.book.qty, b.book.qty)
    assert not np.array_equal(a.book.qty, c.book.qty)
    assert not np.array_equal(a.book.qty, a.population.qty)  # they did trade


def test_flat_accounts_do_not_trade():
    cfg = one_asset(shock=None, traders=target_leverage(3.0))
    m = ContagionModel(cfg, population=population([1000.0], [0.0], ["target_leverage"]))
    m.run()
    assert m.book.qty[0, 0] == 0.0


# ---- the initial margin and isolated margin ---------------------------------------------------


def test_opened_positions_respect_the_initial_margin_cap():
    # the rule wants 30x, the venue allows 10x: it stops at collateral = N / 10
    cfg = one_asset(shock=None, traders=target_leverage(30.0, rebalance=1.0))
    m = ContagionModel(cfg, population=population([1000.0], [20.0], ["target_leverage"]))
    m.run()
    notional = abs(m.book.qty[0, 0]) * m.market.price[0]
    assert notional / 10.0 == pytest.approx(1000.0, rel=1e-6)


def test_isolated_positions_get_margin_from_the_wallet_and_release_it():
    # isolated account: 1000 collateral, 10 units at 100 with 500 of margin; the rule targets
    # 4x on equity 1000 (40 units) and margins what it opens at 4x: 25 a unit from the free
    # wallet of 500, so the cap lets it open 20
    cfg = one_asset(shock=None, traders=target_leverage(4.0, rebalance=1.0))
    pop = population([500.0], [10.0], ["target_leverage"], isolated=[[True]], margin=[[500.0]])
    m = ContagionModel(cfg, population=pop)
    equity0 = m.book.equity(m.mark)[0]
    m.run()
    # the cap is taken at the price before the batch (100: 20 units), then again at the price
    # those 20 would fill at, P1 = 100 exp(0.01 (20 / d) ** 0.5): 500 / (P1 / 4) units
    p1 = 100.0 * math.exp(0.01 * (20.0 / (DEEP / 100.0)) ** 0.5)
    opened = 500.0 / (p1 / 4.0)
    assert m.book.qty[0, 0] == pytest.approx(10.0 + opened, rel=1e-12)
    moved = opened * m.market.price[0] / 4.0
    assert moved == pytest.approx(500.0, rel=1e-6)
    assert moved <= 500.0 * (1 + 1e-12)  # the fill (after a smaller batch) is no dearer than P1
    assert m.book.margin[0, 0] == pytest.approx(500.0 + moved, rel=1e-12)
    assert m.book.wallet[0] == pytest.approx(500.0 - moved, abs=1e-9)
    # moving margin is not a gain or a loss: the collateral is where it was
    assert m.book.wallet[0] + m.book.margin[0, 0] == pytest.approx(equity0, rel=1e-12)
    # a lower target (1x: 10 units) sells two thirds; the margin left is a third
    m.strategies["target_leverage"].params.target = 1.0
    m.strategies["target_leverage"]._setup_rows = None  # re-read the target
    m.step()
    assert m.book.qty[0, 0] == pytest.approx(10.0, rel=1e-6)
    assert m.book.margin[0, 0] == pytest.approx(1000.0 / 3.0, rel=1e-6)


# ---- direction in a shock ---------------------------------------------------------------------


def shocked_drawdown(mix):
    """Price fall of a -8% shock on 400 low-leverage longs following the rules in ``mix``
    (name -> share); a thin book so that their trades move the price."""
    rng = np.random.default_rng(0)
    n = 400
    collateral = rng.lognormal(8, 0.5, n)
    qty = 3.0 * collateral / 100.0  # 3x: nobody is liquidated by -8%
    names = np.full(n, "hold", dtype=object)
    start = 0
    for name, share in mix.items():
        names[start : start + int(share * n)] = name
        start += int(share * n)
    cfg = one_asset(shock=-0.08, steps=3, depth=2.0e5)
    m = ContagionModel(cfg, population=population(collateral, qty, names))
    m.run()
    assert m.engine.liquidation_count.sum() == 0
    return 1.0 - m.market.price[0] / 100.0


def test_target_leverage_amplifies_and_value_damps_a_shock():
    hold = shocked_drawdown({"hold": 1.0})
    assert hold == pytest.approx(0.08, abs=1e-9)  # nobody trades: the fundamental move
    procyclical = shocked_drawdown({"target_leverage": 0.5})
    momentum = shocked_drawdown({"momentum": 0.5})
    assert procyclical > hold + 0.01
    assert momentum > hold + 0.01
    # value traders buy what the leveraged funds sell below the fundamental
    damped = shocked_drawdown({"target_leverage": 0.5, "value": 0.5})
    assert hold < damped < procyclical - 0.005


def test_target_leverage_population_deepens_a_liquidation_cascade():
    base = small_config(traders={"count": 600, "strategies": {"hold": 1.0}})
    tl = small_config(traders={"count": 600, "strategies": {"target_leverage": 1.0}})
    runs = [ContagionModel(build_config(d), create_agents=False).run() for d in (base, tl)]
    hold, lev = (r.summary() for r in runs)
    assert lev["max_drawdown"]["BTC"] > hold["max_drawdown"]["BTC"]


@pytest.mark.parametrize("mode", ["cross", "isolated"])
def test_money_conserved_every_step_with_every_rule_trading(mode):
    shares = {name: 1.0 for name in STRATEGIES}
    # the leverage cycle's investors chase the funds' returns; at this venue's cap of 50 and
    # 80% volatility their flows compound to 1e17 dollars within 20 steps (the paper's rule,
    # made for returns of a tenth of a percent), where float sums lose the 1e-9 checked here
    rules = {"leverage_cycle": {"flow_sensitivity": 0.0}}
    cfg = build_config(
        small_config(
            steps=40,
            traders={"count": 400, "strategies": shares, "rules": rules},
            margin={"mode": mode, "insurance_fund": 0.0},
            shocks=[{"step": 5, "asset": "BTC", "return": -0.15}],
        )
    )
    m = ContagionModel(cfg, create_agents=False)
    for _ in range(cfg.steps):
        m.step()
        # (the leverage cycle's funds take investors' money in and out: deposits)
        total = m.money()["total"] - m.deposits
        assert abs(total - m.initial_money) <= 1e-9 * abs(m.initial_money)
        assert abs(total - m.initial_money) <= 1e-12 * money_scale(m)
        assert np.isfinite(m.book.wallet).all() and np.isfinite(m.book.qty).all()
    assert m.engine.liquidation_count.sum() > 0


def test_population_file_strategy_column_assigns_rules(tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text(
        "trader_id,collateral,asset,quantity,entry_price,strategy\n"
        "1,1000,X,10,100,value\n2,1000,X,10,100,momentum\n3,1000,X,5,100,hold\n"
    )
    cfg = one_asset(shock=None, traders={"population": str(path)})
    m = ContagionModel(cfg)
    assert {k: list(v) for k, v in m.strategy_rows.items()} == {
        "hold": [2],
        "momentum": [1],
        "value": [0],
    }


def test_unknown_rule_is_a_one_line_error():
    from model.config import ConfigError

    with pytest.raises(ConfigError, match="traders.strategies.valu: unknown trading rule"):
        build_config(small_config(traders={"strategies": {"valu": 1.0}}))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))


@pytest.mark.filterwarnings("ignore:.*price held at its:RuntimeWarning")
def test_extreme_rules_on_a_tiny_book_stay_finite_and_conserve_money():
    # leveraged funds and momentum at 100x on a book of 100 quote per 1%: prices hit their
    # limits, yet every balance stays finite and money is conserved
    cfg = build_config(
        small_config(
            steps=25,
            assets=[{"symbol": "BTC", "price": 60000.0, "depth": 100.0, "max_leverage": 125}],
            traders={
                "count": 300,
                "assets_per_trader": 1,
                "strategies": {"target_leverage": 0.5, "momentum": 0.5},
                "rules": {"target_leverage": {"target": 100.0}, "momentum": {"leverage": 100.0}},
            },
            shocks=[{"step": 3, "asset": "BTC", "return": -0.3}],
            market={"volatility": 0.8, "depth_stress": 1.0, "funding_interval": 2},
        )
    )
    m = ContagionModel(cfg, create_agents=False)
    with np.errstate(all="ignore"):
        for _ in range(cfg.steps):
            m.step()
            for arr in (m.book.wallet, m.book.qty, m.book.margin, m.mark, m.market.cash):
                assert np.isfinite(arr).all()
            total = m.money()["total"]
            assert abs(total - m.initial_money) <= 1e-9 * money_scale(m)
    assert {"price_ceiling", "price_floor"} & set(m.warning_counts)  # and they were reported


def test_a_crowd_opening_at_once_stays_within_its_initial_margin_at_the_fill_price():
    """Many re-sized buyers on a thin book: sized at the pre-batch price alone, their own impact
    would carry them far past the cap; sized again at the quoted fill price, it cannot."""
    n = 200
    cfg = one_asset(shock=None, depth=1.0e4, traders=target_leverage(10.0, rebalance=1.0))
    pop = population([1000.0] * n, [1.0] * n, ["target_leverage"] * n)
    m = ContagionModel(cfg, population=pop)
    m.run()
    price = m.market.price[0]
    assert price > 110.0  # the batch really moved the price
    notional = np.abs(m.book.qty[:, 0]) * price
    equity = m.book.equity(m.mark)
    # every account's position fits its initial margin at the max leverage (10x) at the fill price
    assert (notional / 10.0 <= equity * (1 + 1e-9)).all()


# ---- a rule of one's own -----------------------------------------------------------------------


@pytest.fixture
def own_rule():
    """A rule registered the way a user registers one in their own file; removed afterwards."""
    from dataclasses import dataclass

    from agents.params import spec
    from agents.strategies import Strategy, register_rule

    @dataclass
    class SteadyBuyerParams:
        units: float = spec(1.0, doc="units bought every step", ge=0, le=1e6)

    @register_rule("steady_buyer")
    class SteadyBuyer(Strategy):
        Params = SteadyBuyerParams

        def orders(self, rows):
            dq = np.zeros((len(rows), self.model.book.n_assets))
            dq[:, 0] = self.params.units
            return dq

    yield SteadyBuyer
    del STRATEGIES["steady_buyer"]


def test_a_registered_rule_is_configured_validated_and_traded(own_rule):
    from model.config import apply_overrides, describe

    data = {
        "seed": 1,
        "steps": 3,
        "market": {"volatility": 0.0, "resilience": 0.0},
        "assets": [{"symbol": "X", "price": 100.0, "depth": DEEP, "max_leverage": 10}],
        "traders": {"count": 5, "leverage": 2.0, "strategies": {"steady_buyer": 1.0}},
        "margin": {"fee": 0.0},
    }
    cfg = build_config(apply_overrides(data, {"traders.rules.steady_buyer.units": "2.5"}))
    assert cfg.traders.rules["steady_buyer"].units == 2.5
    m = ContagionModel(cfg)
    assert type(m.strategies["steady_buyer"]) is own_rule
    start = m.book.qty[:, 0].copy()
    m.run()
    # a book so deep the price stays at 100, leverage 2 of 10: every order fits the margin
    np.testing.assert_allclose(m.book.qty[:, 0], start + 3 * 2.5, rtol=1e-12)
    assert "traders.rules.steady_buyer.units" in {row["key"] for row in describe()}
    with pytest.raises(ConfigError, match=r"^traders.rules.steady_buyer.units: must be >= 0"):
        build_config(apply_overrides(data, {"traders.rules.steady_buyer.units": -1}))


def test_register_rule_refuses_what_it_cannot_configure():
    from agents.strategies import Strategy, register_rule

    with pytest.raises(ValueError, match="already registered"):

        @register_rule("noise")
        class NotNoise(Strategy):
            pass

    with pytest.raises(TypeError, match="Params must be a dataclass"):

        @register_rule("bad_params")
        class BadParams(Strategy):
            Params = dict

    with pytest.raises(ValueError, match="use letters"):
        register_rule("with space")
    assert "bad_params" not in STRATEGIES and STRATEGIES["noise"].__name__ == "Noise"


def test_where_kept_is_numpys_where_bit_for_bit():
    # The masking of a rule's orders to the assets its traders hold: np.where(keep, x, 0.0),
    # signed zeros, NaN and infinities included, on random masks and shapes.
    from agents.strategies import _where_kept

    rng = np.random.default_rng(8)
    special = np.array([-0.0, 0.0, np.nan, -np.inf, np.inf, 5e-324, -1.5])
    for shape in ((0, 2), (1, 1), (7, 3), (1000, 2)):
        x = rng.normal(size=shape)
        x.flat[: min(x.size, special.size)] = special[: min(x.size, special.size)]
        for share in (0.0, 0.5, 0.97, 1.0):
            keep = rng.random(shape) < share
            got = _where_kept(keep, x)
            assert got.dtype == np.float64 and got.shape == shape
            assert got.tobytes() == np.where(keep, x, 0.0).tobytes()
    x = rng.normal(size=(50, 4))[:, ::2]  # a view that is not contiguous
    keep = rng.random((50, 2)) < 0.5
    assert _where_kept(keep, x).tobytes() == np.where(keep, x, 0.0).tobytes()
