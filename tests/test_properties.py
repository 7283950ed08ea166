"""Invariants of the engine, checked by hypothesis over random configs and populations.

Every step of every generated run must satisfy:

* money is conserved (traders + insurance fund + market agent + unfunded bad debt), to
  rounding at the scale of the balances involved;
* after the step's rounds no account is below maintenance, unless the round limit was hit and
  a warning says so;
* an isolated position's margin changes only when that position itself trades;
* a liquidation never grows or flips a position;
* prices stay positive and finite, and so does every balance.

And the same seed gives byte-identical run folders.

Sizes are small so the suite stays quick; ``CONTAGION_HYPOTHESIS_EXAMPLES`` raises the number
of examples (and ``CONTAGION_HYPOTHESIS_RANDOM=1`` explores beyond the fixed derandomized set).
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model import ContagionModel
from model.config import build_config, describe
from model.fills import Kind
from model.model import DivergenceError
from model.population import Population
from model.results import money_scale
from model.venues import PRESETS
from tests.helpers import comparable_bytes

EXAMPLES = int(os.environ.get("CONTAGION_HYPOTHESIS_EXAMPLES", "30"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("CONTAGION_HYPOTHESIS_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

SYMBOLS = ["AAA", "BBB", "CCC"]


def log_uniform(lo: float, hi: float):
    return st.floats(np.log10(lo), np.log10(hi)).map(lambda x: float(10.0**x))


@st.composite
def configs(draw, max_traders: int = 40, max_steps: int = 25):
    """A TOML-shaped config with every parameter drawn from (a wide part of) its range."""
    n_assets = draw(st.integers(1, 3))
    assets = []
    for sym in SYMBOLS[:n_assets]:
        asset = {
            "symbol": sym,
            "price": draw(log_uniform(1e-3, 1e6)),
            "depth": draw(log_uniform(1.0, 1e9)),
            "max_leverage": draw(st.floats(1.0, 1000.0)),
        }
        if draw(st.booleans()):
            asset["volatility"] = draw(st.floats(0.0, 10.0))
        assets.append(asset)
    # a constant correlation c among A assets is PSD iff c >= -1 / (A - 1)
    low = -1.0 / (n_assets - 1) if n_assets > 1 else -1.0
    market = {
        "volatility": draw(st.floats(0.0, 10.0)),
        "correlation": draw(st.floats(low, 1.0)),
        "impact_exponent": draw(st.floats(0.05, 2.0)),
        "resilience": draw(st.floats(0.0, 1.0)),
        "step_minutes": draw(st.floats(1.0, 1440.0)),
    }
    if draw(st.booleans()):
        market["jump_intensity"] = draw(st.floats(0.0, 1000.0))
        market["jump_mean"] = draw(st.floats(-1.0, 1.0))
        market["jump_volatility"] = draw(st.floats(0.0, 1.0))
    margin = {
        "mode": draw(st.sampled_from(["cross", "isolated"])),
        "liquidation": draw(st.sampled_from(["full", "partial"])),
        "fee": draw(st.floats(0.0, 0.05)),
        "buffer": draw(st.floats(0.0, 1.0)),
        "insurance_fund": draw(st.sampled_from([0.0, 1e3, 1e6])),
        "max_rounds": draw(st.integers(1, 40)),
        "adl": draw(st.booleans()),
    }
    if draw(st.booleans()):
        margin["maintenance"] = draw(st.floats(0.0, 0.2))
    elif draw(st.booleans()):
        caps = sorted(draw(st.lists(log_uniform(1e2, 1e8), min_size=1, max_size=4, unique=True)))
        rates = sorted(
            draw(st.lists(st.floats(0.001, 0.3), min_size=len(caps), max_size=len(caps)))
        )
        margin["tiers"] = [{"cap": c, "rate": r} for c, r in zip(caps, rates, strict=True)]
    steps = draw(st.integers(1, max_steps))
    shocks = [
        {
            "step": draw(st.integers(1, steps)),
            "asset": draw(st.sampled_from(SYMBOLS[:n_assets])),
            "return": draw(st.floats(-0.95, 2.0)),
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    traders = {
        "count": draw(st.integers(1, max_traders)),
        "leverage": draw(st.floats(1.0, 1000.0)),
        "leverage_dispersion": draw(st.floats(0.0, 2.0)),
        "collateral": draw(log_uniform(1.0, 1e7)),
        "collateral_tail": draw(st.floats(0.5, 5.0)),
        "long_fraction": draw(st.floats(0.0, 1.0)),
        "assets_per_trader": draw(st.integers(1, n_assets)),
    }
    data = {
        "name": "prop",
        "seed": draw(st.integers(0, 2**32)),
        "steps": steps,
        "market": market,
        "assets": assets,
        "traders": traders,
        "margin": margin,
        "shocks": shocks,
    }
    if draw(st.booleans()):
        data["liquidity"] = draw(liquidity_sections())
        market["mark_lag"] = draw(st.sampled_from([0.0, 0.5]))  # the mark away from the price
    return data


@st.composite
def liquidity_sections(draw):
    """Market makers (hedged, margined, withdrawing, re-entering) and value ladders inside the
    rounds or resting all step."""
    return {
        "model": draw(st.sampled_from(["static", "market_makers"])),
        "value_orders": draw(st.sampled_from(["before_rounds", "in_rounds", "resting"])),
        "maker_reentry_steps": draw(st.integers(0, 3)),
        "kernel": draw(st.sampled_from(["power", "exponential"])),
        "refill_time": draw(log_uniform(0.01, 10.0)),
        "makers": draw(st.integers(0, 4)),
        "backstop": draw(st.floats(0.01, 1.0)),
        "capital": draw(log_uniform(0.01, 100.0)),
        "inventory_limit": draw(log_uniform(0.1, 1e3)),
        "basis_share": draw(st.floats(0.0, 1.0)),
        "hedge_speed": draw(st.floats(0.0, 1.0)),
        "vol_halflife": draw(log_uniform(1.0, 100.0)),
        "vol_exponent": draw(st.floats(0.0, 4.0)),
    }


@st.composite
def populations(draw, cfg):
    """Explicit accounts as a file would give them: any mix of cross and isolated positions,
    entries away from the price, some accounts already under water."""
    n = draw(st.integers(1, 30))
    a = len(cfg.assets)
    prices = np.array([x.price for x in cfg.assets])
    seed = draw(st.integers(0, 2**32))
    rng = np.random.default_rng(seed)
    held = rng.random((n, a)) < 0.7
    collateral = 10.0 ** rng.uniform(0, 6, n)
    leverage = 10.0 ** rng.uniform(0, 3, n)
    side = np.where(rng.random((n, a)) < 0.5, 1.0, -1.0)
    entry = np.where(held, prices * np.exp(rng.normal(0, 0.2, (n, a))), 0.0)
    k = np.maximum(held.sum(axis=1), 1)
    qty = np.where(held, side * (leverage * collateral / k)[:, None] / np.where(held, entry, 1), 0)
    isolated = held & (rng.random((n, a)) < draw(st.floats(0.0, 1.0)))
    share = rng.random((n, a)) * isolated
    scale = np.where(
        share.sum(axis=1) > 0, rng.random(n) / np.maximum(share.sum(axis=1), 1e-300), 0
    )
    margin = share * (collateral * scale)[:, None]
    wallet = collateral - margin.sum(axis=1)
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    strategy = np.array(["hold"] * n, dtype=object)
    return Population(ids, wallet, qty, entry, isolated, margin, strategy)


# --------------------------------------------------------------------------------------------
# The per-step invariants
# --------------------------------------------------------------------------------------------


def watch_funding(m: ContagionModel) -> dict:
    """Note what each funding settlement takes from isolated margins (``paid["margin"]``, (n, A),
    reset by the caller each step): the one other way an isolated margin moves without a trade
    of its position."""
    paid = {}
    if m.funding is None:
        return paid
    settle = m.funding.step

    def step(book, market, t, vault=None):
        before = m.funding.settlements
        qty, mark = book.qty.copy(), market.mark.copy()
        settle(book, market, t, vault)
        if m.funding.settlements > before:
            paid["margin"] = np.where(book.isolated, qty * mark * m.funding.last_rate, 0.0)

    m.funding.step = step
    return paid


def check_run_step_by_step(m: ContagionModel) -> None:
    book = m.book
    initial = m.initial_money
    n_fills = 0
    scale = money_scale(m)  # largest balances so far: rounding made then stays in the sum
    paid = watch_funding(m)
    for _ in range(m.config.steps):
        t = m.steps + 1
        paid.clear()
        qty_before = book.qty.copy()
        holdings_before = book.holdings.copy()
        margin_before = book.margin.copy()
        isolated_before = book.isolated.copy()
        warned_before = m.warning_counts.get("round_limit", 0)
        socialized_before = getattr(m.engine, "socialized_loss", 0.0)
        m.step()
        scale = max(scale, money_scale(m))

        # prices and balances finite; prices positive
        price = m.market.price
        assert np.all(np.isfinite(price)) and np.all(price > 0), price
        assert np.all(np.isfinite(m.mark)) and np.all(m.mark > 0)
        for arr in (book.wallet, book.qty, book.entry, book.margin, book.holdings):
            assert np.all(np.isfinite(arr))
        assert np.isfinite(m.engine.insurance_fund) and m.engine.insurance_fund >= 0
        assert np.isfinite(m.engine.unfunded_bad_debt)
        assert m.engine.unfunded_bad_debt >= -1e-9 * scale  # zero up to rounding

        # money conserved to rounding at the scale of the largest balances so far (plus the
        # fresh capital of re-entering makers: the only deposits these configs make)
        total = m.money()["total"]
        assert abs(total - initial - m.deposits) <= 1e-9 * scale, (total, initial, t)

        # nobody left below maintenance unless the round limit was hit and reported
        below = book.cross_liquidatable(m.mark).any() or book.isolated_liquidatable(m.mark).any()
        if m.last.round_limit_hit:
            assert m.warning_counts.get("round_limit", 0) == warned_before + 1
        else:
            assert not below, f"step {t}: accounts below maintenance after the rounds"

        # this step's fills
        new = {k: v[n_fills:] for k, v in m.engine.fills.columns().items()}
        n_fills = len(m.engine.fills)
        row_of = {int(i): r for r, i in enumerate(book.ids)}
        assert np.all(new["step"] == t)
        new = check_collateral_sales(m, new, holdings_before, row_of)
        traded = np.zeros(book.qty.shape, dtype=bool)
        rows = np.array([row_of[int(i)] for i in new["trader_id"]], dtype=np.intp)
        traded[rows, new["asset"]] = True
        # a fill closes part of the position as it was: signed as the position, no larger
        # (a trader's; a market maker's position changes within the step as it absorbs)
        mine = rows < m.n_traders
        before = qty_before[rows, new["asset"]][mine]
        assert np.all(np.sign(new["quantity"][mine]) == np.sign(before))
        assert np.all(np.abs(new["quantity"][mine]) <= np.abs(before) * (1 + 1e-12))

        # a liquidation never grows or flips a position (every trader holds here; market
        # makers, the rows after the traders, take the other side of the walks)
        n = m.n_traders
        after = book.qty[:n]
        assert np.all(np.abs(after) <= np.abs(qty_before[:n]) * (1 + 1e-12) + 0.0)
        assert np.all(after * qty_before[:n] >= 0)
        assert not np.any(traded[:n] & (qty_before[:n] == 0))
        # isolated margin moves only with its own position's trades; the one exception is the
        # venue-wide haircut on paper profits when ADL cannot cover a loss (model.adl), which
        # only takes, and never more than was socialised in the step
        untouched = isolated_before & ~traded
        change = book.margin[untouched] - margin_before[untouched]
        if "margin" in paid:  # and funding, when it was paid this step (from the margin)
            funding = paid["margin"][untouched]
            tolerance = 1e-12 * (np.abs(margin_before[untouched]) + np.abs(funding))
            np.testing.assert_array_less(np.abs(change + funding), tolerance + 1e-300)
            change = np.zeros_like(change)
        socialized = getattr(m.engine, "socialized_loss", 0.0) - socialized_before
        if socialized > 0:
            assert np.all(change <= 0)
            assert -change.sum() <= socialized * (1 + 1e-9) + 1e-9 * scale
        else:
            np.testing.assert_array_equal(change, 0.0)


def check_collateral_sales(m, new, holdings_before, row_of) -> dict:
    """Collateral sales of a step sell holdings the account had (positive, at most what it
    held, only the accounts liquidated in the step), and holdings only ever fall and stay
    >= 0; return the step's other fills."""
    book = m.book
    sale = new["kind"] == Kind.COLLATERAL
    assert np.all(book.holdings >= 0)
    assert np.all(book.holdings <= holdings_before)
    if not sale.any():
        return new
    coll = book.collateral
    rows = np.array([row_of[int(i)] for i in new["trader_id"][sale]], dtype=np.intp)
    which = np.searchsorted(coll.cols, new["asset"][sale])
    assert np.all(coll.cols[which] == new["asset"][sale])
    assert np.all(new["quantity"][sale] > 0)
    sold = np.zeros(book.holdings.shape)
    np.add.at(sold, (rows, which), new["quantity"][sale])
    # to rounding at the scale of what was held (a sale in several passes sums in another order)
    assert np.all(np.abs(book.holdings - (holdings_before - sold)) <= 1e-12 * holdings_before)
    assert np.all(new["fee"][sale] == 0) and np.all(new["bad_debt"][sale] == 0)
    # only accounts liquidated in the step sell (the auto-exchange follows a liquidation)
    liquidated = {int(i) for i in new["trader_id"][~sale & (new["kind"] != Kind.ADL)]}
    assert {int(i) for i in new["trader_id"][sale]} <= liquidated
    return {k: v[~sale] for k, v in new.items()}


@PROPERTY_SETTINGS
@given(configs())
def test_invariants_hold_over_random_configs(data):
    cfg = build_config(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = ContagionModel(cfg, create_agents=False)
        check_run_step_by_step(m)


@PROPERTY_SETTINGS
@given(st.data())
def test_invariants_hold_over_random_populations(data):
    cfg = build_config(data.draw(configs(max_steps=15)))
    pop = data.draw(populations(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = ContagionModel(cfg, population=pop, create_agents=False)
        check_run_step_by_step(m)


def with_venue(data: dict, venue: str) -> dict:
    """``data`` under the venue preset ``venue``: the drawn margin rules and tiers give way to
    the preset's (mode, fund, round limit and ADL switch stay drawn), and the assets are named
    BTC, ETH, SOL so that the preset's own tiers apply."""
    names = dict(zip(SYMBOLS, ["BTC", "ETH", "SOL"], strict=True))
    for asset in data["assets"]:
        asset["symbol"] = names[asset["symbol"]]
    for shock in data["shocks"]:
        shock["asset"] = names[shock["asset"]]
    keep = ("mode", "insurance_fund", "max_rounds", "adl")
    data["margin"] = {"venue": venue, **{k: data["margin"][k] for k in keep}}
    return data


@pytest.mark.slow
@pytest.mark.parametrize("venue", sorted(PRESETS))
@settings(PROPERTY_SETTINGS, max_examples=max(5, EXAMPLES // 3))
@given(st.data())
def test_invariants_hold_with_every_venue_preset(venue, data):
    """Money conserved every step (the liquidator vault a holder with the others), nobody left
    below maintenance, margins and positions as above, under every preset's rules."""
    cfg = build_config(with_venue(data.draw(configs(max_steps=15)), venue))
    assert cfg.margin.venue == venue
    pop = data.draw(populations(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = ContagionModel(cfg, population=pop, create_agents=False)
        check_run_step_by_step(m)


COLLATERAL = ["CA", "CB"]


@st.composite
def collateral_configs(draw, max_traders: int = 40, max_steps: int = 15):
    """configs() with one or two collateral assets (any price, depth, haircut, volatility,
    shocks of their own) and, for cross accounts, generated collateral mixes."""
    data = draw(configs(max_traders=max_traders, max_steps=max_steps))
    for sym in COLLATERAL[: draw(st.integers(1, 2))]:
        data["assets"].append(
            {
                "symbol": sym,
                "price": draw(log_uniform(1e-3, 1e5)),
                "depth": draw(log_uniform(1.0, 1e9)),
                "kind": "collateral",
                "haircut": draw(st.one_of(st.just(0.0), st.floats(0.0, 0.99))),
                "volatility": draw(st.floats(0.0, 5.0)),
            }
        )
        if draw(st.booleans()):
            data["shocks"].append(
                {
                    "step": draw(st.integers(1, data["steps"])),
                    "asset": sym,
                    "return": draw(st.floats(-0.95, 1.0)),
                }
            )
    a = len(data["assets"])
    data["market"]["correlation"] = max(data["market"]["correlation"], -1.0 / (a - 1))
    data["market"]["funding_interval"] = draw(st.integers(0, 3))  # none on collateral assets
    if data["margin"]["mode"] == "cross":
        held = [x["symbol"] for x in data["assets"] if x.get("kind") == "collateral"]
        shares = [draw(st.floats(0.0, 1.0)) for _ in held]
        total = max(sum(shares), 1.0)
        data["traders"]["collateral_assets"] = {
            s: x / total for s, x in zip(held, shares, strict=True)
        }
        data["traders"]["collateral_concentration"] = draw(log_uniform(1e-2, 1e3))
    return data


@st.composite
def populations_with_holdings(draw, cfg):
    """populations(cfg) with the collateral assets' columns as holdings: any units, some zero,
    worth up to a hundred times the account's cash."""
    pop = draw(populations(cfg))
    kinds = np.array([a.kind for a in cfg.assets])
    coll = kinds == "collateral"
    for arr in (pop.qty, pop.entry, pop.margin):
        arr[:, coll] = 0.0
    pop.isolated[:, coll] = False
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    prices = np.array([a.price for a in cfg.assets])[coll]
    n = pop.qty.shape[0]
    worth = (pop.collateral + 1.0)[:, None] * 10.0 ** rng.uniform(-3, 2, (n, coll.sum()))
    pop.holdings = np.where(rng.random((n, coll.sum())) < 0.7, worth / prices, 0.0)
    return pop


@PROPERTY_SETTINGS
@given(collateral_configs())
def test_invariants_hold_with_collateral_assets(data):
    """Money conserved to 1e-9 every step with collateral holdings counted at full value, the
    market agent short them, and their sales; nobody left below maintenance; collateral sales
    sell what the liquidated accounts held; positions as above."""
    cfg = build_config(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = ContagionModel(cfg, create_agents=False)
        check_run_step_by_step(m)


@PROPERTY_SETTINGS
@given(st.data())
def test_invariants_hold_over_random_populations_with_holdings(data):
    cfg = build_config(data.draw(collateral_configs(max_steps=12)))
    pop = data.draw(populations_with_holdings(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = ContagionModel(cfg, population=pop, create_agents=False)
        check_run_step_by_step(m)


@pytest.mark.slow
@pytest.mark.parametrize("venue", sorted(PRESETS))
@settings(PROPERTY_SETTINGS, max_examples=max(5, EXAMPLES // 3))
@given(st.data())
def test_invariants_hold_with_collateral_under_every_venue_preset(venue, data):
    """The collateral invariants under every preset's rules (takeover, chunks, per-round
    limits, the liquidator vault, hourly funding)."""
    drawn = data.draw(collateral_configs(max_steps=12))
    held = [a for a in drawn["assets"] if a.get("kind") == "collateral"]
    own = [x for x in drawn["shocks"] if x["asset"] in COLLATERAL]
    drawn["assets"] = [a for a in drawn["assets"] if a.get("kind") != "collateral"]
    drawn["shocks"] = [x for x in drawn["shocks"] if x["asset"] not in COLLATERAL]
    drawn = with_venue(drawn, venue)
    drawn["assets"] += held
    drawn["shocks"] += own
    cfg = build_config(drawn)
    pop = data.draw(populations_with_holdings(cfg)) if data.draw(st.booleans()) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = ContagionModel(cfg, population=pop, create_agents=False)
        check_run_step_by_step(m)


@settings(PROPERTY_SETTINGS, max_examples=max(5, EXAMPLES // 5))
@given(configs(max_traders=30, max_steps=12))
def test_same_seed_gives_identical_run_folders(tmp_path_factory, data):
    cfg = build_config(data)
    folders = []
    for k in range(2):
        out = tmp_path_factory.mktemp(f"run{k}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ContagionModel(cfg).run().write_results(out)
        folders.append(out)
    names = sorted(p.name for p in folders[0].iterdir())
    assert names == sorted(p.name for p in folders[1].iterdir())
    assert "summary.json" in names
    for name in names:  # summary.json up to its provenance block (start time, versions)
        a = comparable_bytes(folders[0] / name)
        b = comparable_bytes(folders[1] / name)
        assert a == b, f"{name} differs between two runs with the same seed"


# --------------------------------------------------------------------------------------------
# Every parameter over its whole declared range, every feature on
# --------------------------------------------------------------------------------------------


def _bounded_floats():
    """Float fields of the market, assets and traders with both bounds: key -> (lo, hi)."""
    out = {}
    for row in describe():
        c = row["checks"]
        lo = c.get("ge", c.get("gt"))
        hi = c.get("le", c.get("lt"))
        if row["type"] != "a number" or lo is None or hi is None:
            continue
        if not row["key"].startswith(("market.", "assets[].", "traders.")):
            continue
        if row["key"].count("[]") > 1 or row["key"].endswith("[].rate"):
            continue  # tiers: drawn as a whole elsewhere
        if row["key"] == "assets[].haircut":
            continue  # collateral assets' only: drawn by the collateral properties below
        # strict bounds: step inside by a relative hair
        lo = lo + max(abs(lo), 1.0) * 1e-9 if "gt" in c else lo
        hi = hi - max(abs(hi), 1.0) * 1e-9 if "lt" in c else hi
        out[row["key"]] = (float(lo), float(hi))
    return out


FULL_RANGES = _bounded_floats()


def _in_range(lo, hi):
    """Uniform, or log-uniform for ranges spanning decades (so small values get drawn too)."""
    if lo > 0 and hi / lo > 1e3:
        return st.one_of(st.sampled_from([lo, hi]), log_uniform(lo, hi))
    return st.one_of(st.sampled_from([lo, hi]), st.floats(lo, hi))


@st.composite
def full_range_configs(draw):
    data = {
        "name": "full",
        "seed": draw(st.integers(0, 2**32)),
        "steps": draw(st.integers(1, 12)),
        "market": {"correlation": draw(st.floats(-1.0, 1.0))},
        "assets": [{"symbol": "AAA"}, {"symbol": "BBB"}],
        "traders": {
            "count": draw(st.integers(1, 30)),
            "assets_per_trader": draw(st.integers(1, 2)),
        },
        "margin": {
            "mode": draw(st.sampled_from(["cross", "isolated"])),
            "liquidation": draw(st.sampled_from(["full", "partial"])),
            "fee": draw(st.floats(0.0, 0.999)),
            "buffer": draw(st.floats(0.0, 10.0)),
            "insurance_fund": draw(_in_range(0.0, 1e15)),
            "max_rounds": draw(st.integers(1, 30)),
            "adl": draw(st.booleans()),
        },
    }
    for key, (lo, hi) in FULL_RANGES.items():
        section, name = key.split(".", 1)
        if section == "assets[]":
            for asset in data["assets"]:
                asset[name] = draw(_in_range(lo, hi))
        else:  # a key of the section, or of a table inside it (traders.rules.noise.size)
            *tables, leaf = name.split(".")
            node = data[section]
            for table in tables:
                node = node.setdefault(table, {})
            node[leaf] = draw(_in_range(lo, hi))
    # GARCH(1,1) needs alpha + beta < 1: beta drawn below 1 - alpha
    alpha = data["market"]["garch_alpha"]
    data["market"]["garch_beta"] = draw(st.floats(0.0, 1.0 - alpha, exclude_max=True))
    data["market"]["funding_interval"] = draw(st.integers(0, 3))
    data["traders"]["reentry_steps"] = draw(st.integers(0, 3))
    data["traders"]["rules"]["momentum"]["lookback"] = draw(st.integers(1, 5))
    from agents.strategies import STRATEGIES

    names = draw(st.lists(st.sampled_from(list(STRATEGIES)), min_size=1, max_size=3, unique=True))
    data["traders"]["strategies"] = {n: draw(st.floats(0.1, 1.0)) for n in names}
    data["shocks"] = [
        {
            "step": draw(st.integers(1, data["steps"])),
            "asset": draw(st.sampled_from(["AAA", "BBB"])),
            "return": draw(st.one_of(st.sampled_from([-0.999999, 100.0]), st.floats(-0.99, 5.0))),
        }
        for _ in range(draw(st.integers(0, 2)))
    ]
    return data


@PROPERTY_SETTINGS
@given(full_range_configs())
def test_prices_and_money_over_full_ranges_with_every_feature(data):
    cfg = build_config(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = ContagionModel(cfg, create_agents=False)
        rounds = []
        record = m.engine.on_round

        def check_round(r):
            # a liquidation closes part of each position as it was when the round began
            assert np.all((r.closed == 0) | (np.sign(r.closed) == np.sign(r.exposure)))
            assert np.all(np.abs(r.closed) <= np.abs(r.exposure) * (1 + 1e-12))
            after = m.book.qty[r.rows]
            assert np.all(np.abs(after) <= np.abs(r.exposure) * (1 + 1e-12))
            assert np.all(after * r.exposure >= 0)
            rounds.append(r.round)
            if record is not None:
                record(r)

        m.engine.on_round = check_round
        scale = money_scale(m)
        for _ in range(cfg.steps):
            warned = m.warning_counts.get("round_limit", 0)
            try:
                m.step()
            except DivergenceError as exc:
                # allowed only where prices were driven to their limits (degenerate markets),
                # and as a clean one-line error
                limits = m.warning_counts.get("price_floor", 0)
                limits += m.warning_counts.get("price_ceiling", 0)
                limits += int(np.any(m.market.limit_hit))
                assert limits > 0, str(exc)
                assert "\n" not in str(exc)
                return
            scale = max(scale, money_scale(m))
            assert np.all(np.isfinite(m.market.price)) and np.all(m.market.price > 0)
            assert np.all(np.isfinite(m.mark)) and np.all(m.mark > 0)
            for arr in (m.book.wallet, m.book.qty, m.book.entry, m.book.margin):
                assert np.all(np.isfinite(arr))
            expected = m.initial_money + getattr(m, "deposits", 0.0)
            assert abs(m.money()["total"] - expected) <= 1e-9 * scale
            below = m.book.cross_liquidatable(m.mark).any()
            below = below or m.book.isolated_liquidatable(m.mark).any()
            if m.last.round_limit_hit:
                assert m.warning_counts["round_limit"] == warned + 1
            else:
                assert not below
        summary = m.summary()
    json.dumps(summary, allow_nan=False)
